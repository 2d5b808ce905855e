//! Stands in for the `rtc` crate (webrtc-rs's sans-IO stack) in the fuzz build: the RTP
//! assembler only uses `rtc::rtp`, which is the `rtc-rtp` crate re-exported.
pub use rtc_rtp as rtp;
