//! Receive side: jitter buffer, per-peer decoding and mixing, audio output, video pacing and
//! A/V sync.

pub mod jitter;
pub mod mixer;
pub mod output;
pub mod video;
