#[path = "../../../crates/rtcio/src/sio/packet.rs"]
pub mod packet;
