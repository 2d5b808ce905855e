#[path = "../../../crates/rtcio-media/src/codec/annexb.rs"]
pub mod annexb;
