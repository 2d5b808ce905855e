//! Stands in for the `rtcio` crate in the fuzz build: the app's inbound rules only need
//! `Event` and `Origin`, compiled here from the client's own `listeners.rs`.
#![allow(dead_code)]

#[path = "../../../../crates/rtcio/src/listeners.rs"]
mod listeners;

/// `listeners.rs` names the remote stream type in `Event`; inbound rules never look at it.
pub mod stream {
    /// Placeholder for the client's `RemoteStream` (always `None` in the fuzz build).
    #[derive(Debug, Clone, PartialEq)]
    pub struct RemoteStream;
}

pub use listeners::{Event, Origin};
