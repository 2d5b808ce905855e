//! Failures that end the program, each with a documented exit code and a message that says what
//! went wrong.

use std::fmt;

/// Documented exit codes (README "Exit codes").
pub mod code {
    /// Normal end (duration elapsed, Ctrl-C / SIGTERM, stdin EOF with `--chat-stdin`).
    pub const OK: i32 = 0;
    /// Anything not listed below.
    pub const OTHER: i32 = 1;
    /// Bad command line (clap's own code).
    pub const USAGE: i32 = 2;
    /// The signaling server could not be reached, refused us, or did not answer in time.
    pub const UNREACHABLE: i32 = 3;
    /// The room has a password and ours was wrong or missing (`join-error` wrong-password /
    /// password-required).
    pub const PASSWORD: i32 = 4;
    /// The server rejected the room id (`join-error` invalid-room).
    pub const INVALID_ROOM: i32 = 5;
    /// Any other join failure: no `join-ok` in time, rate limited, an unknown `join-error`.
    pub const JOIN_FAILED: i32 = 6;
    /// A media source or encoder could not be opened (checked before connecting).
    pub const MEDIA: i32 = 7;
    /// `rtcio host` could not start its server (e.g. the port is in use).
    pub const HOST: i32 = 8;
    /// `latency` / `mesh` had nothing to measure: no remote video with frame marks, or the
    /// mesh did not connect in time.
    pub const NOTHING_MEASURED: i32 = 9;
}

/// An error with its exit code and a short machine-readable kind.
#[derive(Debug)]
pub struct CliError {
    /// Process exit code.
    pub code: i32,
    /// Stable identifier, e.g. `unreachable`, `wrong-password` (the JSON `error` line's `reason`).
    pub reason: String,
    /// Human explanation.
    pub message: String,
}

impl CliError {
    pub fn new(code: i32, reason: &str, message: impl Into<String>) -> Self {
        CliError {
            code,
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    pub fn other(e: impl fmt::Display) -> Self {
        CliError::new(code::OTHER, "error", e.to_string())
    }

    /// A failed `Socket::connect`.
    pub fn connect(url: &str, e: &rtcio::Error) -> Self {
        use rtcio::sio::client::SioError;
        match e {
            rtcio::Error::Signaling(SioError::BadUrl(..)) => {
                CliError::new(code::USAGE, "bad-url", e.to_string())
            }
            rtcio::Error::Signaling(SioError::Refused(why)) => CliError::new(
                code::UNREACHABLE,
                "refused",
                format!("the signaling server at {url} refused the connection: {why}"),
            ),
            rtcio::Error::Signaling(SioError::Timeout(t)) => CliError::new(
                code::UNREACHABLE,
                "unreachable",
                format!("no answer from the signaling server at {url} within {t:?}"),
            ),
            _ => CliError::new(
                code::UNREACHABLE,
                "unreachable",
                format!("cannot reach the signaling server at {url}: {e}"),
            ),
        }
    }

    /// A `join-error {reason, roomId}` from the server.
    pub fn join_error(room: &str, payload: &serde_json::Value) -> Self {
        let reason = payload
            .get("reason")
            .and_then(|r| r.as_str())
            .unwrap_or("unknown");
        match reason {
            "wrong-password" => CliError::new(
                code::PASSWORD,
                reason,
                format!("wrong password for room {room:?}"),
            ),
            "password-required" => CliError::new(
                code::PASSWORD,
                reason,
                format!("room {room:?} requires a password (--password)"),
            ),
            "invalid-room" => CliError::new(
                code::INVALID_ROOM,
                reason,
                format!("the server rejected the room id {room:?} (invalid-room)"),
            ),
            "rate-limited" => CliError::new(
                code::JOIN_FAILED,
                reason,
                format!("joining room {room:?}: too many join requests (rate-limited)"),
            ),
            other => CliError::new(
                code::JOIN_FAILED,
                "join-error",
                format!("joining room {room:?} failed: {other} ({payload})"),
            ),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<CliError>() {
            Ok(c) => c,
            Err(e) => CliError::new(code::OTHER, "error", format!("{e:#}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn join_errors_map_to_codes() {
        let e = CliError::join_error("r", &json!({"reason": "wrong-password", "roomId": "r"}));
        assert_eq!(
            (e.code, e.reason.as_str()),
            (code::PASSWORD, "wrong-password")
        );
        let e = CliError::join_error("r", &json!({"reason": "password-required"}));
        assert_eq!(e.code, code::PASSWORD);
        assert!(e.message.contains("--password"));
        let e = CliError::join_error("", &json!({"reason": "invalid-room"}));
        assert_eq!(e.code, code::INVALID_ROOM);
        let e = CliError::join_error("r", &json!({"reason": "rate-limited"}));
        assert_eq!(e.code, code::JOIN_FAILED);
        let e = CliError::join_error("r", &json!("nonsense"));
        assert_eq!(
            (e.code, e.reason.as_str()),
            (code::JOIN_FAILED, "join-error")
        );
    }

    #[test]
    fn anyhow_keeps_cli_errors() {
        let e: anyhow::Error = CliError::new(code::MEDIA, "media", "no camera").into();
        let c = CliError::from(e.context("opening the camera"));
        // Context wraps it; the downcast still finds the CliError.
        assert_eq!(c.code, code::MEDIA);
    }
}
