//! Screen capture on Wayland: the xdg-desktop-portal ScreenCast interface (D-Bus, through
//! `ashpd`) hands out a PipeWire remote and a node id; a PipeWire stream on that remote
//! delivers the frames (feature `wayland`).
//!
//! The flow is `CreateSession → SelectSources → Start` (the compositor shows its picker dialog)
//! `→ OpenPipeWireRemote`, then a PipeWire stream negotiates a packed 32-bit RGB format
//! ([`PREFERRED_FORMATS`]) in shared memory and converts each buffer to I420 on the PipeWire
//! thread. Everything that decides something (error classification, session steps, format
//! choice, buffer geometry, backend selection) is a plain function below so it can be tested
//! without a compositor.
//!
//! Compositors only send a buffer when the screen changes, so [`PortalScreenSource`] keeps the
//! newest frame and repeats it at the configured rate.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ashpd::desktop::PersistMode;
use ashpd::desktop::screencast::{CursorMode, Screencast, SelectSourcesOptions, SourceType};
use pipewire as pw;
use pw::spa;
use pw::spa::param::video::VideoFormat;
use tracing::{debug, info, warn};

use crate::capture::screen::{ScreenConfig, ScreenSource};
use crate::convert::{bgra_to_i420, rgb_to_i420, rgba_to_i420};
use crate::error::{MediaError, Result};
use crate::frame::{I420Frame, valid_fps};
use crate::source::{VideoSource, sleep_until};

/// Settings of a [`PortalScreenSource`].
#[derive(Clone, Debug, PartialEq)]
pub struct PortalConfig {
    /// Output rate (the newest frame is repeated when the screen does not change).
    pub fps: f32,
    /// Pace `next_frame` to `fps` (live) or return the newest frame at once.
    pub paced: bool,
    /// Draw the cursor into the frames (when the portal supports it).
    pub cursor: bool,
    /// Limit for reaching the bus and creating the session (no portal → fails fast).
    pub connect_timeout: Duration,
    /// Limit for the user to answer the portal's picker dialog.
    pub dialog_timeout: Duration,
    /// Limit for the first PipeWire frame after the stream connected.
    pub frame_timeout: Duration,
    /// D-Bus address of the session bus; `None` uses `$DBUS_SESSION_BUS_ADDRESS` (tests point
    /// this at a private bus instead of changing the process environment).
    pub bus_address: Option<String>,
}

impl Default for PortalConfig {
    fn default() -> Self {
        Self {
            fps: 15.0,
            paced: true,
            cursor: true,
            connect_timeout: Duration::from_secs(5),
            dialog_timeout: Duration::from_secs(120),
            frame_timeout: Duration::from_secs(5),
            bus_address: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Session state machine (pure).

/// The steps of a portal screen-cast session, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortalStep {
    /// Connecting to the session bus and finding the ScreenCast portal.
    Connect,
    /// `CreateSession`.
    CreateSession,
    /// `SelectSources` (one monitor).
    SelectSources,
    /// `Start`: the compositor's picker dialog.
    Start,
    /// `OpenPipeWireRemote`: the fd of the PipeWire connection.
    OpenRemote,
    /// The stream is negotiated; frames flow.
    Streaming,
}

impl PortalStep {
    /// The step after this one (`Streaming` stays).
    pub fn next(self) -> Self {
        match self {
            Self::Connect => Self::CreateSession,
            Self::CreateSession => Self::SelectSources,
            Self::SelectSources => Self::Start,
            Self::Start => Self::OpenRemote,
            Self::OpenRemote | Self::Streaming => Self::Streaming,
        }
    }

    /// Whether this step waits for a person (the picker dialog) rather than for a service.
    pub fn is_interactive(self) -> bool {
        self == Self::Start
    }

    /// The time limit of this step.
    pub fn timeout(self, config: &PortalConfig) -> Duration {
        if self.is_interactive() {
            config.dialog_timeout
        } else {
            config.connect_timeout
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Connect => "connecting to the portal",
            Self::CreateSession => "CreateSession",
            Self::SelectSources => "SelectSources",
            Self::Start => "Start (picker dialog)",
            Self::OpenRemote => "OpenPipeWireRemote",
            Self::Streaming => "streaming",
        }
    }
}

/// What went wrong in a portal call, stripped of the library types (so it can be classified
/// by a pure function).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortalFailure {
    /// The portal answered "cancelled" (the user closed the dialog).
    Cancelled,
    /// The request ended with another non-success response.
    Refused,
    /// The bus could not be reached (no `$DBUS_SESSION_BUS_ADDRESS`, socket gone...).
    NoBus(String),
    /// A D-Bus error with its name (`org.freedesktop.DBus.Error.ServiceUnknown`...).
    DBus {
        /// The D-Bus error name.
        name: String,
        /// Its message.
        message: String,
    },
    /// The interface is missing or too old.
    NotFound(String),
    /// Anything else.
    Other(String),
}

/// Maps a failed portal step to the crate's error.
pub fn classify_failure(step: PortalStep, failure: PortalFailure) -> MediaError {
    let at = step.name();
    match failure {
        PortalFailure::Cancelled => {
            MediaError::Cancelled(format!("screen sharing was declined at {at}"))
        }
        PortalFailure::Refused => MediaError::Device {
            kind: "screen portal",
            message: format!("the portal refused {at}"),
        },
        PortalFailure::NoBus(m) => {
            MediaError::PortalUnavailable(format!("no D-Bus session bus ({m}) while {at}"))
        }
        PortalFailure::NotFound(m) => MediaError::PortalUnavailable(format!(
            "no xdg-desktop-portal ScreenCast service ({m}); install xdg-desktop-portal and a \
             backend for your compositor"
        )),
        PortalFailure::DBus { name, message } => {
            let unavailable = matches!(
                name.as_str(),
                "org.freedesktop.DBus.Error.ServiceUnknown"
                    | "org.freedesktop.DBus.Error.NameHasNoOwner"
                    | "org.freedesktop.DBus.Error.UnknownMethod"
                    | "org.freedesktop.DBus.Error.UnknownInterface"
                    | "org.freedesktop.DBus.Error.UnknownObject"
                    | "org.freedesktop.DBus.Error.Spawn.ServiceNotFound"
                    | "org.freedesktop.DBus.Error.NoServer"
                    | "org.freedesktop.DBus.Error.Disconnected"
            );
            if unavailable {
                MediaError::PortalUnavailable(format!(
                    "no xdg-desktop-portal ScreenCast service on the session bus ({name}: \
                     {message})"
                ))
            } else if name == "org.freedesktop.portal.Error.Cancelled" {
                MediaError::Cancelled(format!("screen sharing was declined at {at}"))
            } else if name == "org.freedesktop.DBus.Error.NoReply"
                || name == "org.freedesktop.DBus.Error.Timeout"
            {
                MediaError::Timeout(format!("the portal did not answer {at} ({message})"))
            } else {
                MediaError::Device {
                    kind: "screen portal",
                    message: format!("{at}: {name}: {message}"),
                }
            }
        }
        // Before the bus answered anything, every failure means "no usable bus".
        PortalFailure::Other(m) if step == PortalStep::Connect => {
            MediaError::PortalUnavailable(format!("cannot reach the D-Bus session bus: {m}"))
        }
        PortalFailure::Other(m) => MediaError::Device {
            kind: "screen portal",
            message: format!("{at}: {m}"),
        },
    }
}

/// The error for a step that ran out of time.
pub fn step_timeout(step: PortalStep, limit: Duration) -> MediaError {
    if step.is_interactive() {
        MediaError::Timeout(format!(
            "no answer to the screen-sharing dialog within {limit:?}"
        ))
    } else {
        MediaError::Timeout(format!(
            "the desktop portal did not answer {} within {limit:?} (is xdg-desktop-portal \
             running?)",
            step.name()
        ))
    }
}

fn failure_of(err: &ashpd::Error) -> PortalFailure {
    use ashpd::desktop::ResponseError;
    match err {
        ashpd::Error::Response(ResponseError::Cancelled) => PortalFailure::Cancelled,
        ashpd::Error::Response(ResponseError::Other) => PortalFailure::Refused,
        ashpd::Error::Portal(ashpd::PortalError::Cancelled(_)) => PortalFailure::Cancelled,
        // Errors outside the portal's own namespace (ServiceUnknown...) arrive wrapped here.
        ashpd::Error::Portal(ashpd::PortalError::ZBus(e)) | ashpd::Error::Zbus(e) => {
            zbus_failure(e)
        }
        ashpd::Error::PortalNotFound(name) => PortalFailure::NotFound(name.to_string()),
        ashpd::Error::RequiresVersion(need, have) => {
            PortalFailure::NotFound(format!("version {have}, need {need}"))
        }
        other => PortalFailure::Other(other.to_string()),
    }
}

fn zbus_failure(e: &ashpd::zbus::Error) -> PortalFailure {
    use ashpd::zbus;
    match e {
        zbus::Error::MethodError(name, message, _) => PortalFailure::DBus {
            name: name.to_string(),
            message: message.clone().unwrap_or_default(),
        },
        zbus::Error::FDO(fdo) => {
            use zbus::DBusError as _;
            PortalFailure::DBus {
                name: fdo.name().to_string(),
                message: fdo.description().unwrap_or_default().to_owned(),
            }
        }
        zbus::Error::Address(m) | zbus::Error::Handshake(m) => PortalFailure::NoBus(m.clone()),
        zbus::Error::InputOutput(io) => PortalFailure::NoBus(io.to_string()),
        other => PortalFailure::Other(other.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Format negotiation and buffer geometry (pure).

/// Byte order of a negotiated 32-bit pixel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelLayout {
    /// B, G, R, X/A in memory (`BGRx`, `BGRA`): converted with the X11 path's SIMD routine.
    Bgrx,
    /// R, G, B, X/A in memory (`RGBx`, `RGBA`).
    Rgbx,
    /// Packed 24-bit R, G, B (test sources and some virtual cameras; never a compositor's first
    /// choice).
    Rgb,
}

impl PixelLayout {
    /// Bytes per pixel.
    pub fn bytes_per_pixel(self) -> usize {
        match self {
            Self::Bgrx | Self::Rgbx => 4,
            Self::Rgb => 3,
        }
    }
}

/// The formats offered to the compositor, best first: the 32-bit ones every compositor
/// produces in shared memory, then packed RGB (PipeWire's own test source).
pub const PREFERRED_FORMATS: [VideoFormat; 5] = [
    VideoFormat::BGRx,
    VideoFormat::BGRA,
    VideoFormat::RGBx,
    VideoFormat::RGBA,
    VideoFormat::RGB,
];

/// How a negotiated PipeWire format is converted (`None`: not one this source can convert).
pub fn pixel_layout(format: VideoFormat) -> Option<PixelLayout> {
    if format == VideoFormat::BGRx || format == VideoFormat::BGRA {
        Some(PixelLayout::Bgrx)
    } else if format == VideoFormat::RGBx || format == VideoFormat::RGBA {
        Some(PixelLayout::Rgbx)
    } else if format == VideoFormat::RGB {
        Some(PixelLayout::Rgb)
    } else {
        None
    }
}

/// What one buffer holds and where the picture is in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameGeometry {
    /// First byte of the picture in the mapped data.
    pub offset: usize,
    /// Bytes per row (≥ `width` × bytes per pixel).
    pub stride: usize,
    /// Output width (even: the I420 frame's width).
    pub width: u32,
    /// Output height (even).
    pub height: u32,
}

/// Checks a buffer against the negotiated size and returns where to read the picture.
///
/// `stride` 0 means "packed" (some producers leave it unset); `chunk_size` 0 likewise means
/// "the whole mapping". Odd sizes are cropped to even ones, as on X11.
pub fn frame_geometry(
    layout: PixelLayout,
    width: u32,
    height: u32,
    chunk_offset: u32,
    chunk_size: u32,
    chunk_stride: i32,
    mapped_len: usize,
) -> Result<FrameGeometry> {
    let out_w = width & !1;
    let out_h = height & !1;
    if out_w == 0 || out_h == 0 {
        return Err(MediaError::Format(format!(
            "screen-cast frame of {width}x{height}"
        )));
    }
    let bpp = layout.bytes_per_pixel();
    let packed = width as usize * bpp;
    let stride = match usize::try_from(chunk_stride) {
        Ok(0) => packed,
        Ok(s) if s >= out_w as usize * bpp => s,
        _ => {
            return Err(MediaError::Format(format!(
                "screen-cast stride {chunk_stride} for width {width}"
            )));
        }
    };
    let offset = chunk_offset as usize;
    // The last row only needs its pixels, not a full stride.
    let needed = stride * (out_h as usize - 1) + out_w as usize * bpp;
    let available = if chunk_size == 0 {
        mapped_len.saturating_sub(offset)
    } else {
        (chunk_size as usize).min(mapped_len.saturating_sub(offset))
    };
    if available < needed {
        return Err(MediaError::Format(format!(
            "screen-cast buffer holds {available} bytes, a {out_w}x{out_h} picture with stride \
             {stride} needs {needed}"
        )));
    }
    Ok(FrameGeometry {
        offset,
        stride,
        width: out_w,
        height: out_h,
    })
}

/// Converts one mapped buffer (already checked by [`frame_geometry`]) to I420.
pub fn convert_buffer(
    layout: PixelLayout,
    data: &[u8],
    geometry: FrameGeometry,
    timestamp: Duration,
) -> Result<I420Frame> {
    let FrameGeometry {
        offset,
        stride,
        width,
        height,
    } = geometry;
    let picture = data
        .get(offset..)
        .ok_or_else(|| MediaError::Format("screen-cast offset past the buffer".into()))?;
    if layout == PixelLayout::Bgrx {
        return bgra_to_i420(picture, stride as u32, width, height, timestamp);
    }
    // The RGBA / RGB converters take packed rows only: repack (one memcpy per row) when padded.
    let row = width as usize * layout.bytes_per_pixel();
    let packed: std::borrow::Cow<'_, [u8]> = if stride == row {
        std::borrow::Cow::Borrowed(&picture[..row * height as usize])
    } else {
        let mut packed = Vec::with_capacity(row * height as usize);
        for y in 0..height as usize {
            packed.extend_from_slice(&picture[y * stride..y * stride + row]);
        }
        std::borrow::Cow::Owned(packed)
    };
    if layout == PixelLayout::Rgb {
        rgb_to_i420(&packed, width, height, timestamp)
    } else {
        rgba_to_i420(&packed, width, height, timestamp)
    }
}

// ---------------------------------------------------------------------------------------------
// Backend selection (pure).

/// Which screen-capture backend to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScreenBackend {
    /// X11 MIT-SHM ([`ScreenSource`]).
    X11,
    /// xdg-desktop-portal + PipeWire ([`PortalScreenSource`]).
    Portal,
}

/// The session variables that decide the backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionEnv {
    /// `$DISPLAY` (or an explicit display from the config).
    pub display: Option<String>,
    /// `$WAYLAND_DISPLAY`.
    pub wayland_display: Option<String>,
    /// `$XDG_SESSION_TYPE`.
    pub session_type: Option<String>,
}

impl SessionEnv {
    /// Reads the process environment (empty variables count as unset).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            display: var("DISPLAY"),
            wayland_display: var("WAYLAND_DISPLAY"),
            session_type: var("XDG_SESSION_TYPE"),
        }
    }
}

/// The backends to try, in order.
///
/// On a Wayland session the portal comes first even when XWayland sets `$DISPLAY`, because
/// XWayland only shows X11 windows; X11 stays as the fallback when the portal is missing. An
/// X11 session (or Xvfb) uses X11 only.
pub fn backend_order(env: &SessionEnv) -> Vec<ScreenBackend> {
    let wayland = env.wayland_display.is_some()
        || env
            .session_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("wayland"));
    let mut order = Vec::new();
    if wayland {
        order.push(ScreenBackend::Portal);
    }
    if env.display.is_some() {
        order.push(ScreenBackend::X11);
    }
    order
}

/// Whether a failure of one backend lets the next one be tried: a user's "no" or a timeout
/// must not silently turn into capturing something else.
pub fn may_fall_back(err: &MediaError) -> bool {
    matches!(
        err,
        MediaError::PortalUnavailable(_) | MediaError::Display(_) | MediaError::Unsupported(_)
    )
}

/// Opens the screen the session offers: X11 ([`ScreenSource`]) on X11 or Xvfb, the desktop
/// portal ([`PortalScreenSource`]) on Wayland. An explicit `screen.display` forces X11.
///
/// `screen.monitor` only applies to X11 (on Wayland the user picks in the portal dialog).
pub fn open_screen_source(
    screen: ScreenConfig,
    portal: PortalConfig,
) -> Result<Box<dyn VideoSource>> {
    open_screen_source_in(&SessionEnv::from_env(), screen, portal)
}

/// [`open_screen_source`] for the given session variables instead of the process environment.
pub fn open_screen_source_in(
    env: &SessionEnv,
    mut screen: ScreenConfig,
    portal: PortalConfig,
) -> Result<Box<dyn VideoSource>> {
    let order = if screen.display.is_some() {
        vec![ScreenBackend::X11]
    } else {
        screen.display.clone_from(&env.display);
        backend_order(env)
    };
    if order.is_empty() {
        return Err(MediaError::Display(
            "neither $DISPLAY nor $WAYLAND_DISPLAY is set: no screen to capture".into(),
        ));
    }
    let mut last = None;
    for backend in order {
        let opened: Result<Box<dyn VideoSource>> = match backend {
            ScreenBackend::X11 => ScreenSource::open(screen.clone()).map(|s| Box::new(s) as _),
            ScreenBackend::Portal => {
                let portal = PortalConfig {
                    fps: screen.fps,
                    paced: screen.paced,
                    ..portal.clone()
                };
                PortalScreenSource::open(portal).map(|s| Box::new(s) as _)
            }
        };
        match opened {
            Ok(s) => {
                info!(?backend, "screen source opened");
                return Ok(s);
            }
            Err(e) if may_fall_back(&e) => {
                warn!(?backend, error = %e, "screen backend unavailable, trying the next");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(MediaError::Stopped))
}

// ---------------------------------------------------------------------------------------------
// The portal conversation.

/// What the portal handed out.
struct PortalGrant {
    node_id: u32,
    size: Option<(i32, i32)>,
    fd: OwnedFd,
}

/// The open portal session: closing it (or dropping the bus connection) ends the cast, so it
/// lives as long as the source, on a runtime whose worker keeps the bus connection serviced.
struct PortalSession {
    rt: tokio::runtime::Runtime,
    session: Option<ashpd::desktop::Session<Screencast>>,
    _proxy: Screencast,
}

impl PortalSession {
    fn close(&mut self) {
        if let Some(session) = self.session.take() {
            // Bounded: a vanished portal must not block stop().
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(1), session.close()).await
            });
        }
    }
}

async fn run_step<T>(
    step: PortalStep,
    config: &PortalConfig,
    fut: impl std::future::Future<Output = ashpd::Result<T>>,
) -> Result<T> {
    let limit = step.timeout(config);
    debug!(step = step.name(), "portal step");
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify_failure(step, failure_of(&e))),
        Err(_) => Err(step_timeout(step, limit)),
    }
}

async fn negotiate(
    config: &PortalConfig,
) -> Result<(PortalGrant, Screencast, ashpd::desktop::Session<Screencast>)> {
    let mut step = PortalStep::Connect;
    // A connection of our own per source rather than `Screencast::new()`: ashpd caches that one
    // process-wide, and its reader task would die with this source's runtime, leaving the next
    // open() talking to a dead connection.
    let proxy = run_step(step, config, async {
        let conn = match &config.bus_address {
            None => ashpd::zbus::Connection::session().await?,
            Some(address) => {
                ashpd::zbus::connection::Builder::address(address.as_str())?
                    .build()
                    .await?
            }
        };
        Screencast::with_connection(conn).await
    })
    .await?;
    step = step.next();
    let session = run_step(step, config, proxy.create_session(Default::default())).await?;
    step = step.next();
    let cursor = if config.cursor {
        CursorMode::Embedded
    } else {
        CursorMode::Hidden
    };
    let request = run_step(
        step,
        config,
        proxy.select_sources(
            &session,
            SelectSourcesOptions::default()
                .set_cursor_mode(cursor)
                .set_sources(ashpd::enumflags2::BitFlags::from_flag(SourceType::Monitor))
                .set_multiple(false)
                .set_persist_mode(PersistMode::DoNot),
        ),
    )
    .await?;
    request
        .response()
        .map_err(|e| classify_failure(step, failure_of(&e)))?;
    step = step.next();
    let streams = run_step(step, config, async {
        proxy
            .start(&session, None, Default::default())
            .await?
            .response()
    })
    .await?;
    let Some(stream) = streams.streams().first() else {
        return Err(MediaError::DeviceNotFound {
            kind: "monitor",
            id: "portal selection (no stream)".into(),
        });
    };
    let (node_id, size) = (stream.pipe_wire_node_id(), stream.size());
    step = step.next();
    let fd = run_step(
        step,
        config,
        proxy.open_pipe_wire_remote(&session, Default::default()),
    )
    .await?;
    Ok((PortalGrant { node_id, size, fd }, proxy, session))
}

/// Runs the portal conversation on a private one-worker runtime (the crate is otherwise
/// synchronous) with an overall bound so a wedged bus can never hang the caller.
fn negotiate_blocking(config: &PortalConfig) -> Result<(PortalGrant, PortalSession)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("rtcio-portal")
        .enable_all()
        .build()
        .map_err(MediaError::Io)?;
    let overall = config.connect_timeout * 4 + config.dialog_timeout;
    let (grant, proxy, session) = rt.block_on(async {
        match tokio::time::timeout(overall, negotiate(config)).await {
            Ok(r) => r,
            Err(_) => Err(MediaError::Timeout(format!(
                "screen-cast portal negotiation took over {overall:?}"
            ))),
        }
    })?;
    Ok((
        grant,
        PortalSession {
            rt,
            session: Some(session),
            _proxy: proxy,
        },
    ))
}

// ---------------------------------------------------------------------------------------------
// The PipeWire side.

/// What the PipeWire thread shares with the consumer.
#[derive(Default)]
struct Shared {
    frame: Option<I420Frame>,
    error: Option<MediaError>,
    ended: bool,
    received: u64,
}

type SharedSlot = Arc<(Mutex<Shared>, Condvar)>;

fn publish(slot: &SharedSlot, f: impl FnOnce(&mut Shared)) {
    let (lock, cv) = &**slot;
    // A poisoned lock only means the other side panicked; the data is still a frame.
    let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut g);
    cv.notify_all();
}

fn pw_err(e: impl std::fmt::Display) -> MediaError {
    MediaError::Device {
        kind: "pipewire",
        message: e.to_string(),
    }
}

fn format_pod(fps: f32) -> Result<Vec<u8>> {
    use spa::param::ParamType;
    use spa::param::format::{FormatProperties, MediaSubtype, MediaType};
    use spa::pod::{Value, property};
    use spa::utils::{Fraction, Rectangle, SpaTypes};
    let f = PREFERRED_FORMATS;
    let obj = spa::pod::object!(
        SpaTypes::ObjectParamFormat,
        ParamType::EnumFormat,
        property!(FormatProperties::MediaType, Id, MediaType::Video),
        property!(FormatProperties::MediaSubtype, Id, MediaSubtype::Raw),
        property!(
            FormatProperties::VideoFormat,
            Choice,
            Enum,
            Id,
            f[0],
            f[0],
            f[1],
            f[2],
            f[3],
            f[4]
        ),
        property!(
            FormatProperties::VideoSize,
            Choice,
            Range,
            Rectangle,
            Rectangle {
                width: 1920,
                height: 1080
            },
            Rectangle {
                width: 2,
                height: 2
            },
            Rectangle {
                width: 8192,
                height: 8192
            }
        ),
        property!(
            FormatProperties::VideoFramerate,
            Choice,
            Range,
            Fraction,
            Fraction {
                num: fps.round().max(1.0) as u32,
                denom: 1
            },
            Fraction { num: 0, denom: 1 },
            Fraction { num: 240, denom: 1 }
        ),
    );
    let bytes = spa::pod::serialize::PodSerializer::serialize(
        std::io::Cursor::new(Vec::new()),
        &Value::Object(obj),
    )
    .map_err(|e| MediaError::Format(format!("format pod: {e:?}")))?
    .0
    .into_inner();
    Ok(bytes)
}

#[derive(Default)]
struct StreamState {
    layout: Option<PixelLayout>,
    width: u32,
    height: u32,
}

/// Runs the PipeWire loop until stopped; reports setup success or failure on `ready`.
fn pipewire_thread(
    grant: PortalGrant,
    fps: f32,
    slot: SharedSlot,
    ready: std::sync::mpsc::SyncSender<Result<pw::channel::Sender<()>>>,
) {
    let start = Instant::now();
    let setup = || -> Result<_> {
        pw::init();
        let mainloop = pw::main_loop::MainLoopRc::new(None).map_err(pw_err)?;
        let context = pw::context::ContextRc::new(&mainloop, None).map_err(pw_err)?;
        let core = context.connect_fd_rc(grant.fd, None).map_err(pw_err)?;
        Ok((mainloop, context, core))
    };
    let (mainloop, _context, core) = match setup() {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let stream = match pw::stream::StreamBox::new(
        &core,
        "rtcio-screen",
        pw::properties::properties! {
            *pw::keys::MEDIA_TYPE => "Video",
            *pw::keys::MEDIA_CATEGORY => "Capture",
            *pw::keys::MEDIA_ROLE => "Screen",
            *pw::keys::NODE_NAME => "rtcio-screen",
        },
    ) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(pw_err(e)));
            return;
        }
    };
    let slot_state = slot.clone();
    let slot_param = slot.clone();
    let slot_frame = slot.clone();
    let listener = stream
        .add_local_listener_with_user_data(StreamState::default())
        .state_changed(move |_, _, old, new| {
            debug!(?old, ?new, "pipewire stream state");
            match new {
                pw::stream::StreamState::Error(m) => publish(&slot_state, |s| {
                    s.error = Some(pw_err(format!("screen-cast stream failed: {m}")));
                }),
                pw::stream::StreamState::Unconnected => publish(&slot_state, |s| s.ended = true),
                _ => {}
            }
        })
        .param_changed(move |_, state, id, param| {
            let Some(param) = param else { return };
            if id != spa::param::ParamType::Format.as_raw() {
                return;
            }
            let mut info = spa::param::video::VideoInfoRaw::default();
            if info.parse(param).is_err() {
                warn!("unparsable screen-cast format");
                return;
            }
            state.layout = pixel_layout(info.format());
            state.width = info.size().width;
            state.height = info.size().height;
            info!(format = ?info.format(), width = state.width, height = state.height, "screen-cast format");
            if state.layout.is_none() {
                publish(&slot_param, |s| {
                    s.error = Some(MediaError::Unsupported(format!(
                        "screen-cast pixel format {:?}",
                        info.format()
                    )));
                });
            }
        })
        .process(move |stream, state| {
            let Some(mut buffer) = stream.dequeue_buffer() else {
                return;
            };
            let Some(layout) = state.layout else { return };
            let datas = buffer.datas_mut();
            let Some(data) = datas.first_mut() else { return };
            let (offset, size, stride) = {
                let c = data.chunk();
                (c.offset(), c.size(), c.stride())
            };
            // DMA-BUF buffers are not mapped (we never offer modifiers, so this is rare).
            let Some(bytes) = data.data() else { return };
            let converted = frame_geometry(
                layout,
                state.width,
                state.height,
                offset,
                size,
                stride,
                bytes.len(),
            )
            .and_then(|g| convert_buffer(layout, bytes, g, start.elapsed()));
            match converted {
                Ok(frame) => publish(&slot_frame, |s| {
                    s.frame = Some(frame);
                    s.received += 1;
                }),
                // A damaged or empty buffer (e.g. a cursor-only update) is skipped, not fatal.
                Err(e) => debug!(error = %e, "skipped screen-cast buffer"),
            }
        })
        .register();
    let _listener = match listener {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(pw_err(e)));
            return;
        }
    };
    let pod = match format_pod(fps) {
        Ok(p) => p,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let Some(pod) = spa::pod::Pod::from_bytes(&pod) else {
        let _ = ready.send(Err(MediaError::Format("format pod".into())));
        return;
    };
    let mut params = [pod];
    if let Err(e) = stream.connect(
        spa::utils::Direction::Input,
        Some(grant.node_id),
        pw::stream::StreamFlags::AUTOCONNECT | pw::stream::StreamFlags::MAP_BUFFERS,
        &mut params,
    ) {
        let _ = ready.send(Err(pw_err(e)));
        return;
    }
    let (stop_tx, stop_rx) = pw::channel::channel::<()>();
    let ml = mainloop.clone();
    let _stop = stop_rx.attach(mainloop.loop_(), move |()| ml.quit());
    if ready.send(Ok(stop_tx)).is_err() {
        return;
    }
    mainloop.run();
    let _ = stream.disconnect();
    publish(&slot, |s| s.ended = true);
}

/// Captures the monitor the user picks in the desktop portal's dialog, as I420 frames.
pub struct PortalScreenSource {
    portal: Option<PortalSession>,
    slot: SharedSlot,
    stop: Option<pw::channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    size: (u32, u32),
    fps: f32,
    paced: bool,
    frame_timeout: Duration,
    start: Option<Instant>,
    frames: u64,
    stopped: bool,
}

impl std::fmt::Debug for PortalScreenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalScreenSource")
            .field("size", &self.size)
            .field("fps", &self.fps)
            .finish_non_exhaustive()
    }
}

impl PortalScreenSource {
    /// Asks the portal for a monitor (showing the compositor's picker) and connects to its
    /// PipeWire stream. Fails with [`MediaError::PortalUnavailable`] without a session bus or
    /// portal, [`MediaError::Cancelled`] when the user declines, [`MediaError::Timeout`] when a
    /// step exceeds its limit.
    pub fn open(config: PortalConfig) -> Result<Self> {
        if !valid_fps(config.fps, 120.0) {
            return Err(MediaError::InvalidInput(format!("fps {}", config.fps)));
        }
        let (grant, portal) = negotiate_blocking(&config)?;
        Self::start_stream(grant, Some(portal), &config)
    }

    /// Receives a PipeWire node directly, without the portal: `fd` is a connection to a
    /// PipeWire daemon (what `OpenPipeWireRemote` returns, or a connected socket) and `node_id`
    /// the video node. For apps that run the portal conversation themselves, and for tests.
    pub fn from_pipewire(fd: OwnedFd, node_id: u32, config: PortalConfig) -> Result<Self> {
        if !valid_fps(config.fps, 120.0) {
            return Err(MediaError::InvalidInput(format!("fps {}", config.fps)));
        }
        let grant = PortalGrant {
            node_id,
            size: None,
            fd,
        };
        Self::start_stream(grant, None, &config)
    }

    fn start_stream(
        grant: PortalGrant,
        mut portal: Option<PortalSession>,
        config: &PortalConfig,
    ) -> Result<Self> {
        let size = grant
            .size
            .and_then(|(w, h)| Some((u32::try_from(w).ok()? & !1, u32::try_from(h).ok()? & !1)))
            .unwrap_or((0, 0));
        info!(
            node = grant.node_id,
            ?size,
            "portal granted a screen-cast stream"
        );
        let slot: SharedSlot = Arc::default();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let thread_slot = slot.clone();
        let fps = config.fps;
        let thread = std::thread::Builder::new()
            .name("rtcio-pipewire".into())
            .spawn(move || pipewire_thread(grant, fps, thread_slot, ready_tx))
            .map_err(MediaError::Io)?;
        let stop = match ready_rx.recv_timeout(config.frame_timeout) {
            Ok(Ok(stop)) => stop,
            Ok(Err(e)) => {
                let _ = thread.join();
                portal.as_mut().map(PortalSession::close);
                return Err(e);
            }
            Err(_) => {
                portal.as_mut().map(PortalSession::close);
                return Err(MediaError::Timeout(
                    "PipeWire did not accept the screen-cast connection".into(),
                ));
            }
        };
        Ok(Self {
            portal,
            slot,
            stop: Some(stop),
            thread: Some(thread),
            size,
            fps: config.fps,
            paced: config.paced,
            frame_timeout: config.frame_timeout,
            start: None,
            frames: 0,
            stopped: false,
        })
    }

    /// Frames PipeWire delivered so far (the compositor sends one per screen change).
    pub fn frames_received(&self) -> u64 {
        let (lock, _) = &*self.slot;
        lock.lock().unwrap_or_else(|p| p.into_inner()).received
    }

    /// Waits for a frame (the first one may take a while) and returns a copy of the newest.
    fn latest(&mut self) -> Result<I420Frame> {
        let (lock, cv) = &*self.slot;
        let deadline = Instant::now() + self.frame_timeout;
        let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(e) = g.error.take() {
                return Err(e);
            }
            if let Some(f) = &g.frame {
                let mut f = f.clone();
                self.size = (f.width, f.height);
                f.timestamp = self.start.map(|s| s.elapsed()).unwrap_or_default();
                return Ok(f);
            }
            if g.ended {
                return Err(MediaError::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(MediaError::Timeout(format!(
                    "no screen-cast frame within {:?}",
                    self.frame_timeout
                )));
            }
            g = cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl VideoSource for PortalScreenSource {
    fn next_frame(&mut self) -> Result<I420Frame> {
        if self.stopped {
            return Err(MediaError::Stopped);
        }
        let start = *self.start.get_or_insert_with(Instant::now);
        if self.paced {
            let due = Duration::from_secs_f64(self.frames as f64 / f64::from(self.fps));
            let now = start.elapsed();
            if now > due + Duration::from_secs_f64(2.0 / f64::from(self.fps)) {
                self.frames = (now.as_secs_f64() * f64::from(self.fps)) as u64;
            } else {
                sleep_until(start + due);
            }
        }
        self.frames += 1;
        self.latest()
    }

    /// The size the portal announced (0×0 when it did not); the frames' size once they flow.
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn frame_rate(&self) -> f32 {
        self.fps
    }

    fn stop(&mut self) {
        self.stopped = true;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(p) = self.portal.as_mut() {
            p.close();
        }
    }
}

impl Drop for PortalScreenSource {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(display: Option<&str>, wayland: Option<&str>, kind: Option<&str>) -> SessionEnv {
        SessionEnv {
            display: display.map(Into::into),
            wayland_display: wayland.map(Into::into),
            session_type: kind.map(Into::into),
        }
    }

    #[test]
    fn backend_order_follows_the_session() {
        use ScreenBackend::*;
        assert_eq!(backend_order(&env(Some(":1"), None, None)), vec![X11]);
        assert_eq!(
            backend_order(&env(Some(":0"), None, Some("x11"))),
            vec![X11]
        );
        assert_eq!(
            backend_order(&env(None, Some("wayland-0"), None)),
            vec![Portal]
        );
        assert_eq!(
            backend_order(&env(None, None, Some("wayland"))),
            vec![Portal]
        );
        // XWayland: the portal first (it sees native windows), X11 as fallback.
        assert_eq!(
            backend_order(&env(Some(":0"), Some("wayland-0"), Some("wayland"))),
            vec![Portal, X11]
        );
        assert!(backend_order(&env(None, None, Some("tty"))).is_empty());
    }

    #[test]
    fn only_unavailability_falls_back() {
        assert!(may_fall_back(&MediaError::PortalUnavailable("x".into())));
        assert!(may_fall_back(&MediaError::Display("x".into())));
        assert!(!may_fall_back(&MediaError::Cancelled("x".into())));
        assert!(!may_fall_back(&MediaError::Timeout("x".into())));
    }

    #[test]
    fn steps_run_in_order_and_only_start_waits_for_a_person() {
        let mut s = PortalStep::Connect;
        let mut seen = vec![s];
        while s != PortalStep::Streaming {
            s = s.next();
            seen.push(s);
        }
        assert_eq!(seen.len(), 6);
        assert_eq!(seen[4], PortalStep::OpenRemote);
        let c = PortalConfig::default();
        assert_eq!(PortalStep::Start.timeout(&c), c.dialog_timeout);
        assert_eq!(PortalStep::CreateSession.timeout(&c), c.connect_timeout);
        assert!(matches!(
            step_timeout(PortalStep::Start, c.dialog_timeout),
            MediaError::Timeout(m) if m.contains("dialog")
        ));
    }

    #[test]
    fn failures_map_to_typed_errors() {
        let c = |f| classify_failure(PortalStep::CreateSession, f);
        assert!(matches!(
            c(PortalFailure::Cancelled),
            MediaError::Cancelled(_)
        ));
        assert!(matches!(
            c(PortalFailure::NoBus("no address".into())),
            MediaError::PortalUnavailable(_)
        ));
        assert!(matches!(
            c(PortalFailure::DBus {
                name: "org.freedesktop.DBus.Error.ServiceUnknown".into(),
                message: "The name is not activatable".into()
            }),
            MediaError::PortalUnavailable(m) if m.contains("ScreenCast")
        ));
        assert!(matches!(
            c(PortalFailure::DBus {
                name: "org.freedesktop.DBus.Error.NoReply".into(),
                message: String::new()
            }),
            MediaError::Timeout(_)
        ));
        assert!(matches!(
            c(PortalFailure::DBus {
                name: "org.freedesktop.portal.Error.Failed".into(),
                message: "nope".into()
            }),
            MediaError::Device { .. }
        ));
        assert!(matches!(
            c(PortalFailure::NotFound(
                "org.freedesktop.portal.ScreenCast".into()
            )),
            MediaError::PortalUnavailable(_)
        ));
    }

    #[test]
    fn formats_map_to_converters() {
        assert_eq!(pixel_layout(VideoFormat::BGRx), Some(PixelLayout::Bgrx));
        assert_eq!(pixel_layout(VideoFormat::BGRA), Some(PixelLayout::Bgrx));
        assert_eq!(pixel_layout(VideoFormat::RGBx), Some(PixelLayout::Rgbx));
        assert_eq!(pixel_layout(VideoFormat::RGBA), Some(PixelLayout::Rgbx));
        assert_eq!(pixel_layout(VideoFormat::RGB), Some(PixelLayout::Rgb));
        assert_eq!(pixel_layout(VideoFormat::NV12), None);
        assert!(PREFERRED_FORMATS.iter().all(|&f| pixel_layout(f).is_some()));
        assert_eq!(PREFERRED_FORMATS[0], VideoFormat::BGRx);
        assert!(format_pod(30.0).is_ok_and(|p| !p.is_empty()));
    }

    #[test]
    fn geometry_checks_stride_size_and_crops_to_even() {
        // Packed 1920×1080, stride unset.
        let g = frame_geometry(PixelLayout::Bgrx, 1920, 1080, 0, 0, 0, 1920 * 1080 * 4).unwrap();
        assert_eq!(
            (g.stride, g.width, g.height, g.offset),
            (7680, 1920, 1080, 0)
        );
        // Padded rows, odd size cropped.
        let g = frame_geometry(PixelLayout::Bgrx, 1279, 721, 64, 0, 5120, 64 + 5120 * 721).unwrap();
        assert_eq!(
            (g.stride, g.width, g.height, g.offset),
            (5120, 1278, 720, 64)
        );
        // Too small a buffer, too small a stride, empty picture, negative stride.
        assert!(frame_geometry(PixelLayout::Bgrx, 640, 480, 0, 1000, 2560, 640 * 480 * 4).is_err());
        assert!(frame_geometry(PixelLayout::Bgrx, 640, 480, 0, 0, 100, 640 * 480 * 4).is_err());
        assert!(frame_geometry(PixelLayout::Bgrx, 1, 1, 0, 0, 0, 4).is_err());
        assert!(frame_geometry(PixelLayout::Bgrx, 640, 480, 0, 0, -2560, 640 * 480 * 4).is_err());
    }

    #[test]
    fn buffers_convert_to_i420_for_both_byte_orders() {
        // A red picture, 4×2, with 8 bytes of row padding.
        let (w, h, stride) = (4u32, 2u32, 24usize);
        let mut bgrx = vec![0u8; stride * h as usize];
        let mut rgbx = bgrx.clone();
        for y in 0..h as usize {
            for x in 0..w as usize {
                let i = y * stride + x * 4;
                bgrx[i..i + 4].copy_from_slice(&[0, 0, 255, 255]);
                rgbx[i..i + 4].copy_from_slice(&[255, 0, 0, 255]);
            }
        }
        let g = frame_geometry(PixelLayout::Bgrx, w, h, 0, 0, stride as i32, bgrx.len()).unwrap();
        let a = convert_buffer(PixelLayout::Bgrx, &bgrx, g, Duration::ZERO).unwrap();
        let b = convert_buffer(PixelLayout::Rgbx, &rgbx, g, Duration::ZERO).unwrap();
        assert_eq!((a.width, a.height), (4, 2));
        assert_eq!(a.y, b.y);
        assert_eq!(a.v, b.v);
        // Packed 24-bit RGB with padding gives the same picture.
        let rgb_stride = 16usize;
        let mut rgb = vec![0u8; rgb_stride * h as usize];
        for y in 0..h as usize {
            for x in 0..w as usize {
                rgb[y * rgb_stride + x * 3] = 255;
            }
        }
        let g3 =
            frame_geometry(PixelLayout::Rgb, w, h, 0, 0, rgb_stride as i32, rgb.len()).unwrap();
        let c = convert_buffer(PixelLayout::Rgb, &rgb, g3, Duration::ZERO).unwrap();
        assert_eq!(a.y, c.y);
        assert_eq!(a.v, c.v);
        // BT.601 limited red: Y ≈ 81, V ≈ 240.
        assert!((75..=90).contains(&a.y[0]), "{}", a.y[0]);
        assert!(a.v[0] > 220, "{}", a.v[0]);
    }
}
