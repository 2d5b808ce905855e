//! # rtcio-glue
//!
//! The media glue between [`rtcio`] (tracks of encoded media, per-peer bandwidth estimates) and
//! [`rtcio_media`] (sources, encoders, decoders), in one place for the desktop app and the
//! `rtcio` command line:
//!
//! * [`send`]: a source's encoder output written to a stream's [`rtcio::LocalTrack`]; keyframe
//!   requests (PLI/FIR) from any peer become one IDR; the encoder's target bitrate follows the
//!   weakest peer's send-side estimate (GCC) under the user's cap ([`rate`]).
//! * [`recv`]: a remote track's frames decoded on a thread, a keyframe request when the picture
//!   cannot be decoded, and freeze counters like Chromium's.
//! * [`playout`]: decoded pictures shown at capture time + a jitter-adaptive delay, in step
//!   with the same stream's audio (lip sync); a picture later than the maximum is shown at once.
//! * [`avsync`]: the lip sync policy: RTCP sender reports put a peer's audio and video on one
//!   time line; video waits for later audio, audio (bounded) for later video.
//!
//! The policies ([`rate`], [`recv::FreezeDetector`]) are plain functions of their inputs and an
//! injected clock; the rest is threads and tasks around them.

pub mod avsync;
pub mod playout;
pub mod rate;
pub mod recv;
pub mod send;

pub use playout::{
    LipSync, Recv, RemoteVideoPath, SharedAudioClock, SyncStatus, VideoPlayoutQueue,
    VideoPlayoutStats, VideoSync, note_audio_playout, recv_until,
};
pub use rate::{RatePolicy, video_target_bps};
pub use recv::{
    FreezeDetector, FreezeStats, VideoRecvStats, VideoTrackDecoder, feed_echo_canceller, next_frame,
};
pub use send::{Opened, Replacement, SendOptions, SendStream, SourceFailure, TrackSendStats};
