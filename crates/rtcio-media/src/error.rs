//! The crate's error type.

/// Everything that can go wrong in the media engine.
///
/// Devices, files and codecs are outside the process: every failure they can produce is one of
/// these variants, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The requested device (camera, microphone, speaker, monitor) does not exist.
    #[error("{kind} not found: {id}")]
    DeviceNotFound {
        /// What kind of device was asked for ("camera", "microphone", ...).
        kind: &'static str,
        /// The id or name that was asked for (or "default").
        id: String,
    },
    /// The device exists but another process holds it.
    #[error("{kind} busy: {id}")]
    DeviceBusy {
        /// What kind of device.
        kind: &'static str,
        /// The id or name of the device.
        id: String,
    },
    /// The device or its backend failed.
    #[error("{kind} error: {message}")]
    Device {
        /// What kind of device.
        kind: &'static str,
        /// The backend's description.
        message: String,
    },
    /// No X11 display (or Wayland portal) could be reached.
    #[error("display unavailable: {0}")]
    Display(String),
    /// The requested feature or format is not supported (yet) on this system.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A caller passed arguments the engine cannot use (odd frame size, wrong sample count...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A codec (OpenH264 or libopus) reported an error.
    #[error("{codec} error: {message}")]
    Codec {
        /// "h264 encoder", "h264 decoder", "opus encoder", "opus decoder".
        codec: &'static str,
        /// The codec's description.
        message: String,
    },
    /// Pixel format conversion or scaling failed.
    #[error("conversion error: {0}")]
    Convert(String),
    /// Audio resampling failed.
    #[error("resampler error: {0}")]
    Resample(String),
    /// A media file is malformed or of an unsupported kind.
    #[error("file format error: {0}")]
    Format(String),
    /// An I/O error (files, shared memory).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A file or finite source has no more frames.
    #[error("end of stream")]
    EndOfStream,
    /// The source was stopped or its capture thread ended.
    #[error("source stopped")]
    Stopped,
    /// The user dismissed a permission dialog (the desktop portal's screen-sharing picker).
    #[error("cancelled by the user: {0}")]
    Cancelled(String),
    /// A device or service did not answer in time (portal request, first frame).
    #[error("timed out: {0}")]
    Timeout(String),
    /// No D-Bus session bus, or no xdg-desktop-portal ScreenCast service on it.
    #[error("desktop portal unavailable: {0}")]
    PortalUnavailable(String),
}

/// Shorthand for `Result<T, MediaError>`.
pub type Result<T, E = MediaError> = std::result::Result<T, E>;

impl MediaError {
    pub(crate) fn codec(codec: &'static str, err: impl std::fmt::Display) -> Self {
        Self::Codec {
            codec,
            message: err.to_string(),
        }
    }
}
