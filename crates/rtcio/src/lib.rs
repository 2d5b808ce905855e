//! # rtcio
//!
//! The rtc.io client in Rust: socket.io signaling, a perfect-negotiation WebRTC mesh on
//! webrtc-rs, the `rtcio:ctrl` event channel and named data channels with rtc.io's backpressure —
//! wire-compatible with the rtc.io browser library (see `PROTOCOL.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), rtcio::Error> {
//! use serde_json::json;
//! let socket = rtcio::Socket::connect("http://127.0.0.1:3001", rtcio::Options::default()).await?;
//! socket.on("peer-connect", |ev| println!("peer up: {}", ev.arg()["id"]));
//! socket.on("chat", |ev| println!("{:?} says {}", ev.peer(), ev.arg()));
//! socket.server().emit("join-room", vec![json!({"roomId": "demo", "name": "rusty"})])?;
//! socket.emit("chat", vec![json!("hello everyone")])?;
//! let chat = socket.create_channel("chat", rtcio::ChannelOptions::reliable()).await?;
//! chat.emit("msg", vec![json!({"name": "rusty", "text": "hi", "at": 0})]);
//! # Ok(()) }
//! ```
//!
//! Layout: `proto` holds the protocol rules as plain, testable code (envelopes, channel ids,
//! negotiation decisions, watchdog, send queues); `sio` is the socket.io client; `peer` drives one
//! RTCPeerConnection per remote peer; `socket` ties them together behind the public API.

pub mod bwe;
mod capture_sr;
pub mod channel;
pub mod ice_fetch;
mod interceptor_util;
pub mod listeners;
mod nack_limit;
mod nack_pace;
mod pacer;
mod peer;
mod peer_media;
mod probe;
pub mod proto;
pub mod sio;
mod socket;
pub mod stats;
pub mod stream;
mod xr_rtt;

pub use bwe::{BandwidthEstimate, CongestionConfig};
pub use channel::{
    BroadcastChannel, Channel, ChannelError, ChannelOptions, ReadyState, SendOutcome,
};
pub use listeners::{Event, ListenerId, Origin};
pub use proto::backpressure::Payload;
pub use proto::stream_meta::SELF_ID;
pub use proto::watchdog::WatchdogConfig;
pub use socket::{Error, IceServer, IceServers, Options, PeerRef, Server, Socket};
pub use stats::PeerStats;
pub use stream::{
    KeyframeRequest, LocalStream, LocalTrack, MediaFrame, MediaKind, MediaSample, RemoteStream,
    RemoteTrack, RtpCodec, SenderReport, TimedRecv,
};
