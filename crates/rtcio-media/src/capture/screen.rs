//! Screen capture: X11 through the MIT-SHM extension (x11rb), one chosen monitor.
//!
//! The server writes each grab straight into a shared-memory segment (`ShmGetImage`), which is
//! converted BGRX → I420 with SIMD. Without MIT-SHM (a remote display) it falls back to plain
//! `GetImage`. Monitors come from RandR 1.5 (`GetMonitors`); without RandR the whole root window
//! is one monitor. Works under Xvfb.
//!
//! Wayland: a session without an X server needs the desktop portal + PipeWire path
//! (`capture::portal`, feature `wayland`; `open_screen_source` picks the backend):
//! [`ScreenSource::open`] returns [`MediaError::Unsupported`] there.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::randr::ConnectionExt as _;
use x11rb::protocol::shm::{self, ConnectionExt as _};
use x11rb::protocol::xproto::{self, ConnectionExt as _, ImageFormat};
use x11rb::rust_connection::RustConnection;

use crate::convert::bgra_to_i420;
use crate::error::{MediaError, Result};
use crate::frame::{I420Frame, valid_fps};
use crate::source::{DeviceInfo, DeviceKind, VideoSource, sleep_until};

/// Id of the whole-screen pseudo monitor used when RandR is missing.
pub const ROOT_MONITOR_ID: &str = "root";

/// Settings of a [`ScreenSource`].
#[derive(Clone, Debug, PartialEq)]
pub struct ScreenConfig {
    /// X display (`":1"`); `None` uses `$DISPLAY`.
    pub display: Option<String>,
    /// Monitor id from [`list_monitors`]; `None` takes the primary (or first) monitor.
    pub monitor: Option<String>,
    /// Capture rate.
    pub fps: f32,
    /// Pace grabs to `fps` (live) or grab as fast as asked.
    pub paced: bool,
}

impl Default for ScreenConfig {
    fn default() -> Self {
        Self {
            display: None,
            monitor: None,
            fps: 15.0,
            paced: true,
        }
    }
}

fn display_err(e: impl std::fmt::Display) -> MediaError {
    MediaError::Display(e.to_string())
}

fn connect(display: Option<&str>) -> Result<(RustConnection, usize)> {
    if display.is_none()
        && std::env::var_os("DISPLAY").is_none()
        && std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        return Err(MediaError::Unsupported(
            "X11 screen capture on a Wayland session without $DISPLAY; use the desktop portal \
             source (feature `wayland`, `open_screen_source`)"
                .into(),
        ));
    }
    x11rb::connect(display).map_err(display_err)
}

#[derive(Clone, Debug)]
struct Monitor {
    id: String,
    primary: bool,
    x: i16,
    y: i16,
    width: u16,
    height: u16,
}

fn monitors(conn: &RustConnection, screen: usize) -> Result<Vec<Monitor>> {
    let root = &conn.setup().roots[screen];
    let whole = Monitor {
        id: ROOT_MONITOR_ID.into(),
        primary: true,
        x: 0,
        y: 0,
        width: root.width_in_pixels,
        height: root.height_in_pixels,
    };
    let has_randr = conn
        .extension_information(x11rb::protocol::randr::X11_EXTENSION_NAME)
        .map_err(display_err)?
        .is_some();
    if !has_randr {
        return Ok(vec![whole]);
    }
    let reply = match conn
        .randr_get_monitors(root.root, true)
        .map_err(display_err)?
        .reply()
    {
        Ok(r) => r,
        Err(e) => {
            debug!(error = %e, "RandR GetMonitors failed, using the root window");
            return Ok(vec![whole]);
        }
    };
    let mut out = Vec::new();
    for m in reply.monitors {
        let name = conn
            .get_atom_name(m.name)
            .map_err(display_err)?
            .reply()
            .map(|r| String::from_utf8_lossy(&r.name).into_owned())
            .unwrap_or_else(|_| format!("monitor-{}", m.name));
        out.push(Monitor {
            id: name,
            primary: m.primary,
            x: m.x,
            y: m.y,
            width: m.width,
            height: m.height,
        });
    }
    if out.is_empty() {
        out.push(whole);
    }
    if !out.iter().any(|m| m.primary) {
        out[0].primary = true;
    }
    Ok(out)
}

/// Lists the monitors of an X display (`None`: `$DISPLAY`).
pub fn list_monitors(display: Option<&str>) -> Result<Vec<DeviceInfo>> {
    let (conn, screen) = connect(display)?;
    Ok(monitors(&conn, screen)?
        .into_iter()
        .map(|m| DeviceInfo {
            name: format!("{} ({}x{})", m.id, m.width, m.height),
            id: m.id,
            kind: DeviceKind::Monitor,
            is_default: m.primary,
            size: Some((u32::from(m.width), u32::from(m.height))),
        })
        .collect())
}

/// A shared-memory segment mapped into this process.
struct ShmMapping {
    seg: shm::Seg,
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this struct; it is only read through `&self`
// while the X server is not writing (after the ShmGetImage reply).
unsafe impl Send for ShmMapping {}

impl ShmMapping {
    fn create(conn: &RustConnection, len: usize) -> Result<Self> {
        let seg = conn.generate_id().map_err(display_err)?;
        let reply = conn
            .shm_create_segment(seg, len as u32, false)
            .map_err(display_err)?
            .reply()
            .map_err(display_err)?;
        // SAFETY: mapping a fresh fd the server created for exactly `len` bytes; the result is
        // checked against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                reply.shm_fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let _ = conn.shm_detach(seg);
            return Err(MediaError::Io(std::io::Error::last_os_error()));
        }
        Ok(Self { seg, ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for the lifetime of `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for ShmMapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `create` mapped.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

/// Captures one monitor of an X display as I420 frames (even-cropped to the monitor size).
pub struct ScreenSource {
    conn: RustConnection,
    root: xproto::Window,
    monitor: Monitor,
    width: u32,
    height: u32,
    shm: Option<ShmMapping>,
    fps: f32,
    paced: bool,
    start: Option<Instant>,
    frames: u64,
    stopped: bool,
}

impl std::fmt::Debug for ScreenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScreenSource")
            .field("monitor", &self.monitor.id)
            .field("size", &(self.width, self.height))
            .field("shm", &self.shm.is_some())
            .finish_non_exhaustive()
    }
}

impl ScreenSource {
    /// Connects to the display and prepares capture of the chosen monitor.
    pub fn open(config: ScreenConfig) -> Result<Self> {
        if !valid_fps(config.fps, 120.0) {
            return Err(MediaError::InvalidInput(format!("fps {}", config.fps)));
        }
        let (conn, screen) = connect(config.display.as_deref())?;
        let all = monitors(&conn, screen)?;
        let monitor =
            match &config.monitor {
                Some(id) => all.into_iter().find(|m| &m.id == id).ok_or_else(|| {
                    MediaError::DeviceNotFound {
                        kind: "monitor",
                        id: id.clone(),
                    }
                })?,
                None => all
                    .iter()
                    .find(|m| m.primary)
                    .or(all.first())
                    .cloned()
                    .ok_or_else(|| MediaError::DeviceNotFound {
                        kind: "monitor",
                        id: "primary".into(),
                    })?,
            };
        let root_screen = &conn.setup().roots[screen];
        let root = root_screen.root;
        let depth = root_screen.root_depth;
        let bpp = conn
            .setup()
            .pixmap_formats
            .iter()
            .find(|f| f.depth == depth)
            .map(|f| f.bits_per_pixel);
        if !matches!(depth, 24 | 32) || bpp != Some(32) {
            return Err(MediaError::Unsupported(format!(
                "X screen depth {depth} / {bpp:?} bpp (need 24 or 32 bits in 32-bit pixels)"
            )));
        }
        let width = u32::from(monitor.width) & !1;
        let height = u32::from(monitor.height) & !1;
        if width == 0 || height == 0 {
            return Err(MediaError::Display(format!(
                "monitor {} is empty",
                monitor.id
            )));
        }
        let has_shm = conn
            .extension_information(shm::X11_EXTENSION_NAME)
            .map_err(display_err)?
            .is_some();
        let shm = if has_shm {
            match ShmMapping::create(&conn, width as usize * height as usize * 4) {
                Ok(m) => Some(m),
                Err(e) => {
                    warn!(error = %e, "MIT-SHM unusable, falling back to GetImage");
                    None
                }
            }
        } else {
            None
        };
        info!(monitor = %monitor.id, width, height, shm = shm.is_some(), "screen capture opened");
        Ok(Self {
            conn,
            root,
            monitor,
            width,
            height,
            shm,
            fps: config.fps,
            paced: config.paced,
            start: None,
            frames: 0,
            stopped: false,
        })
    }

    /// True when grabs go through shared memory.
    pub fn uses_shm(&self) -> bool {
        self.shm.is_some()
    }

    /// Id of the monitor captured.
    pub fn monitor_id(&self) -> &str {
        &self.monitor.id
    }

    /// Grabs the monitor now (no pacing).
    pub fn grab(&mut self, timestamp: Duration) -> Result<I420Frame> {
        let (x, y) = (self.monitor.x, self.monitor.y);
        let (w, h) = (self.width as u16, self.height as u16);
        if let Some(shm) = &self.shm {
            let reply = self
                .conn
                .shm_get_image(
                    self.root,
                    x,
                    y,
                    w,
                    h,
                    !0,
                    ImageFormat::Z_PIXMAP.into(),
                    shm.seg,
                    0,
                )
                .map_err(display_err)?
                .reply()
                .map_err(display_err)?;
            let needed = self.width as usize * self.height as usize * 4;
            if (reply.size as usize) < needed {
                return Err(MediaError::Display(format!(
                    "ShmGetImage returned {} bytes, expected {needed}",
                    reply.size
                )));
            }
            return bgra_to_i420(
                shm.bytes(),
                self.width * 4,
                self.width,
                self.height,
                timestamp,
            );
        }
        let reply = self
            .conn
            .get_image(ImageFormat::Z_PIXMAP, self.root, x, y, w, h, !0)
            .map_err(display_err)?
            .reply()
            .map_err(display_err)?;
        bgra_to_i420(
            &reply.data,
            self.width * 4,
            self.width,
            self.height,
            timestamp,
        )
    }
}

impl VideoSource for ScreenSource {
    fn next_frame(&mut self) -> Result<I420Frame> {
        if self.stopped {
            return Err(MediaError::Stopped);
        }
        let start = *self.start.get_or_insert_with(Instant::now);
        let due = Duration::from_secs_f64(self.frames as f64 / f64::from(self.fps));
        if self.paced {
            let now = start.elapsed();
            if now > due + Duration::from_secs_f64(2.0 / f64::from(self.fps)) {
                // Fell behind (slow grab): skip ahead instead of bursting.
                self.frames = (now.as_secs_f64() * f64::from(self.fps)) as u64;
            } else {
                sleep_until(start + due);
            }
        }
        self.frames += 1;
        let timestamp = start.elapsed();
        self.grab(timestamp)
    }

    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn frame_rate(&self) -> f32 {
        self.fps
    }

    fn stop(&mut self) {
        self.stopped = true;
        if let Some(shm) = self.shm.take() {
            let _ = self.conn.shm_detach(shm.seg);
            let _ = self.conn.flush();
        }
    }
}

impl Drop for ScreenSource {
    fn drop(&mut self) {
        self.stop();
    }
}
