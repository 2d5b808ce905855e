//! The one error type every command returns. It reaches the UI as `{kind, message, reason?}`,
//! so the UI can pick its own wording per kind instead of parsing messages.

use std::time::Duration;

use rtcio::sio::client::SioError;
use serde::ser::SerializeStruct;

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request itself is wrong (empty name, missing room id…).
    #[error("{0}")]
    Invalid(String),
    /// The server address cannot be used.
    #[error("{0}")]
    BadUrl(String),
    /// The server could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The server refused the socket.io connection.
    #[error("{0}")]
    Refused(String),
    /// No answer in time.
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    /// The room server answered `join-error {reason}`.
    #[error("the server refused to join the room: {reason}")]
    Join {
        /// `wrong-password`, `password-required`, `invalid-room` or whatever the server said.
        reason: String,
    },
    /// The embedded server could not start.
    #[error("could not host on this computer: {0}")]
    Host(String),
    /// A call-only command while not in a call.
    #[error("not in a room")]
    NotJoined,
    /// The signaling connection or a channel failed.
    #[error("{0}")]
    Connection(String),
    /// Settings could not be read or written.
    #[error("{0}")]
    Settings(String),
    /// Device enumeration failed as a whole.
    #[error("{0}")]
    Devices(String),
    /// A media source (screen capture, devices during a call) failed.
    #[error("{0}")]
    Media(String),
    /// A file transfer could not start or be cancelled.
    #[error("{0}")]
    File(#[from] crate::transfer::TransferError),
}

impl AppError {
    /// The stable name the UI switches on.
    pub fn kind(&self) -> &'static str {
        match self {
            AppError::Invalid(_) => "invalid",
            AppError::BadUrl(_) => "badUrl",
            AppError::Unreachable(_) => "unreachable",
            AppError::Refused(_) => "refused",
            AppError::Timeout(_) => "timeout",
            AppError::Join { .. } => "join",
            AppError::Host(_) => "host",
            AppError::NotJoined => "notJoined",
            AppError::Connection(_) => "connection",
            AppError::Settings(_) => "settings",
            AppError::Devices(_) => "devices",
            AppError::Media(_) => "media",
            AppError::File(_) => "file",
        }
    }
}

impl serde::Serialize for AppError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let reason = match self {
            AppError::Join { reason } => Some(reason.as_str()),
            _ => None,
        };
        let mut st = s.serialize_struct("AppError", 3)?;
        st.serialize_field("kind", self.kind())?;
        st.serialize_field("message", &self.to_string())?;
        st.serialize_field("reason", &reason)?;
        st.end()
    }
}

impl From<rtcio::Error> for AppError {
    fn from(e: rtcio::Error) -> Self {
        match e {
            rtcio::Error::Signaling(SioError::BadUrl(url, why)) => {
                AppError::BadUrl(format!("{url}: {why}"))
            }
            rtcio::Error::Signaling(SioError::Unreachable(why)) => AppError::Unreachable(why),
            rtcio::Error::Signaling(SioError::Refused(why)) => AppError::Refused(why),
            rtcio::Error::Signaling(SioError::Timeout(d)) => AppError::Timeout(d),
            other => AppError::Connection(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_kind_message_and_reason() {
        let v = serde_json::to_value(AppError::Join {
            reason: "wrong-password".into(),
        })
        .unwrap();
        assert_eq!(v["kind"], "join");
        assert_eq!(v["reason"], "wrong-password");
        assert!(v["message"].as_str().unwrap().contains("wrong-password"));

        let v = serde_json::to_value(AppError::NotJoined).unwrap();
        assert_eq!(v["kind"], "notJoined");
        assert!(v["reason"].is_null());
    }

    #[test]
    fn maps_signaling_errors() {
        let e: AppError = rtcio::Error::Signaling(SioError::Unreachable("refused".into())).into();
        assert_eq!(e.kind(), "unreachable");
        let e: AppError =
            rtcio::Error::Signaling(SioError::BadUrl("x".into(), "no scheme".into())).into();
        assert_eq!(e.kind(), "badUrl");
    }
}
