//! The parsers under fuzz, compiled from the project's own source files (`#[path]`), with the
//! module layout their `crate::` paths expect. Nothing here is a copy: a change to a parser is
//! fuzzed as soon as it is made.
#![allow(dead_code, unused_imports, missing_docs, clippy::all)]

/// rtcio client: Engine.IO / Socket.IO text frames.
pub mod sio;

/// rtcio client: the sans-IO protocol rules (`crates/rtcio/src/proto`).
pub mod proto;

/// rtcio-server: inbound event parsing and validation (pure functions only).
#[path = "../../crates/rtcio-server/src/protocol.rs"]
pub mod server_protocol;

/// The desktop app: what other apps send, turned into UI shapes.
pub mod app;

// rtcio-media: the file sources and the Annex-B splitter, with the small modules they name.
#[path = "../../crates/rtcio-media/src/error.rs"]
pub mod error;
#[path = "../../crates/rtcio-media/src/frame.rs"]
pub mod frame;
#[path = "../../crates/rtcio-media/src/source.rs"]
pub mod source;

/// rtcio-media codecs: only the bitstream helpers.
pub mod codec;

/// rtcio-media file sources.
pub mod file;

pub mod util;
