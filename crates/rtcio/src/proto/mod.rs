//! The rtc.io rules without I/O: each module takes inputs and returns decisions.

pub mod backpressure;
pub mod channel_id;
pub mod channel_sync;
pub mod codec_order;
pub mod envelope;
pub mod handover;
pub mod negotiation;
pub mod rtp_assembler;
pub mod sdp_streams;
pub mod stream_meta;
pub mod watchdog;
