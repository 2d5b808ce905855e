#[path = "../../../crates/rtcio-media/src/file/h264.rs"]
pub mod h264;
#[path = "../../../crates/rtcio-media/src/file/ogg_opus.rs"]
pub mod ogg_opus;
#[path = "../../../crates/rtcio-media/src/file/wav_pcm.rs"]
pub mod wav_pcm;
#[path = "../../../crates/rtcio-media/src/file/y4m.rs"]
pub mod y4m;
