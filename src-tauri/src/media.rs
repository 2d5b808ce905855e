//! Media for one call, without Tauri: our camera / microphone (or the synthetic sources),
//! encoded once and written to one rtc.io stream; remote streams decoded, scaled to the size of
//! their tile and handed out as binary frames; remote audio mixed and played.
//!
//! Encoding, track writing, keyframe requests, congestion control and decoding are
//! `rtcio-glue`'s, shared with the `rtcio` command line; what is here is the app's own part:
//! device choices, the self preview, binary frames for the tiles, the audio output.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle as ThreadHandle;
use std::time::{Duration, Instant};

use rtcio::{LocalStream, MediaKind, RemoteStream, RemoteTrack, Socket};
use rtcio_glue::{RatePolicy, Replacement, SendOptions, SourceFailure, next_frame};
use rtcio_media::{
    AudioMixer, AudioOutput, AudioSource, H264Config, MediaError, OpusConfig, OutputDevice,
    PlugHandle, RgbaFrame, Scaler, Unpluggable, VideoSource,
};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Environment variable that swaps every real device for the synthetic sources (CI has no
/// camera or microphone).
pub const FAKE_MEDIA_ENV: &str = "RTCIO_FAKE_MEDIA";
/// Device id the pickers use for the synthetic video source.
pub const TEST_PATTERN_ID: &str = "synthetic:test-pattern";
/// Device id the pickers use for the synthetic audio source.
pub const TONE_ID: &str = "synthetic:tone";

/// Device id of the second synthetic camera: the test pattern on flat green (switching to it
/// mid-call visibly changes the picture).
pub const TEST_PATTERN_GREEN_ID: &str = "synthetic:test-pattern-green";

/// The speaker picker's "Silent": remote audio is mixed but not played.
pub const SILENT_ID: &str = "synthetic:silent";

/// The output a speaker picker id names (`None`: the system default, or none under
/// `RTCIO_FAKE_MEDIA=1`).
pub fn output_device(speaker: Option<&str>, fake: bool) -> OutputDevice {
    match speaker {
        None | Some("") if fake => OutputDevice::Null,
        None | Some("") => OutputDevice::Default,
        Some(SILENT_ID) => OutputDevice::Null,
        Some(id) => OutputDevice::Id(id.to_string()),
    }
}
/// Tile size used until the UI reports one.
pub const DEFAULT_TILE: (u32, u32) = (640, 360);
/// Largest tile size accepted from the UI (a 4K screen).
pub const MAX_TILE: (u32, u32) = (3840, 2160);
/// Version byte at the start of every binary frame.
pub const FRAME_VERSION: u8 = 1;
/// Bytes before the key in a binary frame.
pub const FRAME_HEADER_LEN: usize = 20;

/// Where binary video frames go (a Tauri channel in the app, a queue in tests).
pub type FrameSink = Arc<dyn Fn(Vec<u8>) + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the data is still usable for media.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What to send as video.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoChoice {
    /// Nothing.
    Off,
    /// The synthetic moving test pattern.
    TestPattern,
    /// A camera by id (`None`: the first one).
    Camera(Option<String>),
}

/// What to send as audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioChoice {
    /// Nothing.
    Off,
    /// The synthetic tone.
    Tone,
    /// A microphone by id (`None`: the default input).
    Microphone(Option<String>),
}

/// Media settings of a call.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaConfig {
    /// Video source.
    pub video: VideoChoice,
    /// Audio source.
    pub audio: AudioChoice,
    /// Capture size asked of the camera / test pattern.
    pub capture_size: (u32, u32),
    /// Capture frame rate.
    pub fps: f32,
    /// Where remote audio plays (`Null` for tests and machines without sound).
    pub speaker: OutputDevice,
    /// Processing of the microphone (echo cancellation, noise suppression, gain); not applied
    /// to the synthetic tone.
    pub audio_processing: rtcio_media::ApmConfig,
}

impl Default for MediaConfig {
    /// No media at all (what the signaling-only tests use).
    fn default() -> Self {
        MediaConfig {
            video: VideoChoice::Off,
            audio: AudioChoice::Off,
            capture_size: (1280, 720),
            fps: 30.0,
            speaker: OutputDevice::Null,
            audio_processing: rtcio_media::ApmConfig::VOICE,
        }
    }
}

impl MediaConfig {
    /// Test pattern and tone at 640×360, remote audio discarded.
    pub fn synthetic() -> Self {
        MediaConfig {
            video: VideoChoice::TestPattern,
            audio: AudioChoice::Tone,
            capture_size: (640, 360),
            ..MediaConfig::default()
        }
    }

    /// From the start screen's pickers (`None` = no device chosen). With
    /// `RTCIO_FAKE_MEDIA=1`, or the synthetic ids, chosen devices become synthetic sources.
    pub fn from_choices(camera: Option<&str>, microphone: Option<&str>, fake: bool) -> Self {
        let video = match camera {
            None => VideoChoice::Off,
            Some(TEST_PATTERN_GREEN_ID) => VideoChoice::Camera(Some(TEST_PATTERN_GREEN_ID.into())),
            Some(_) if fake => VideoChoice::TestPattern,
            Some(TEST_PATTERN_ID) => VideoChoice::TestPattern,
            Some(id) => VideoChoice::Camera(Some(id.to_string())),
        };
        let audio = match microphone {
            None => AudioChoice::Off,
            Some(_) if fake => AudioChoice::Tone,
            Some(TONE_ID) => AudioChoice::Tone,
            Some(id) => AudioChoice::Microphone(Some(id.to_string())),
        };
        let synthetic_video = video == VideoChoice::TestPattern
            || video == VideoChoice::Camera(Some(TEST_PATTERN_GREEN_ID.into()));
        MediaConfig {
            video,
            audio,
            capture_size: if synthetic_video {
                (640, 360)
            } else {
                (1280, 720)
            },
            speaker: if fake {
                OutputDevice::Null
            } else {
                OutputDevice::Default
            },
            ..MediaConfig::default()
        }
    }
}

impl MediaConfig {
    /// Asks a real camera for `size` (the user's resolution setting). The test pattern keeps
    /// its 640×360: it stands in for a camera in tests and headless runs, where a bigger
    /// picture only costs CPU.
    pub fn with_camera_size(mut self, size: (u32, u32)) -> Self {
        if matches!(self.video, VideoChoice::Camera(_)) {
            self.capture_size = size;
        }
        self
    }
}

/// True when `RTCIO_FAKE_MEDIA` asks for synthetic sources (`1`, `true`, `yes`).
pub fn fake_media_from_env() -> bool {
    std::env::var(FAKE_MEDIA_ENV)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

/// Human wording for a device that could not be opened (shown in the UI as is).
pub fn device_message(what: &str, e: &MediaError) -> String {
    match e {
        MediaError::DeviceNotFound { .. } => format!("No {what} found ({e}). Joined without it."),
        MediaError::DeviceBusy { .. } => format!(
            "The {what} is in use by another program ({e}). Close it and rejoin to send {what}."
        ),
        _ => format!("Could not open the {what}: {e}. Joined without it."),
    }
}

// ---------------------------------------------------------------- binary frames

/// Pixel layout of a binary frame, byte 1 of its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFormat {
    /// `width × height × 4` bytes of RGBA (tag 0): what a 2D canvas paints as it is.
    Rgba = 0,
    /// I420 (tag 1): the Y plane (`width × height`), then U and V (`⌈width/2⌉ × ⌈height/2⌉`
    /// each), rows tightly packed, BT.601 limited range. 1.5 bytes per pixel instead of 4; the
    /// page converts it to RGB in a WebGL fragment shader.
    I420 = 1,
}

impl FrameFormat {
    /// The format a header's tag byte names.
    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0 => Some(FrameFormat::Rgba),
            1 => Some(FrameFormat::I420),
            _ => None,
        }
    }

    /// Pixel bytes of a `width × height` frame in this format (`None` on overflow).
    pub fn payload_len(self, width: u32, height: u32) -> Option<usize> {
        let (w, h) = (width as usize, height as usize);
        match self {
            FrameFormat::Rgba => w.checked_mul(h)?.checked_mul(4),
            FrameFormat::I420 => {
                let chroma = w.div_ceil(2).checked_mul(h.div_ceil(2))?;
                w.checked_mul(h)?.checked_add(chroma.checked_mul(2)?)
            }
        }
    }
}

/// The header every binary frame starts with (see [`encode_frame`]), key included.
fn frame_header(
    format: FrameFormat,
    key: &str,
    width: u32,
    height: u32,
    payload: usize,
) -> Vec<u8> {
    let key = &key.as_bytes()[..key.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + key.len() + payload);
    out.push(FRAME_VERSION);
    out.push(format as u8);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&rtcio_media::synthetic::video::unix_micros().to_le_bytes());
    out.extend_from_slice(key);
    out
}

/// One RGBA frame for a tile, as bytes: `[0]` version (1), `[1]` pixel format
/// ([`FrameFormat`]: 0 here), `[2..4]` key length (u16 LE), `[4..8]` width (u32 LE),
/// `[8..12]` height (u32 LE), `[12..20]` when it was handed to the IPC (µs since the Unix
/// epoch, u64 LE: the UI measures the IPC time per frame with it), the key (UTF-8), then
/// `width × height × 4` bytes of RGBA. The UI wraps the pixels in an `ImageData` without
/// copying them out of a JSON array.
pub fn encode_frame(key: &str, frame: &RgbaFrame) -> Vec<u8> {
    let mut out = frame_header(
        FrameFormat::Rgba,
        key,
        frame.width,
        frame.height,
        frame.data.len(),
    );
    out.extend_from_slice(&frame.data);
    out
}

/// One I420 frame for a tile: the header of [`encode_frame`] with format 1, then the Y, U and V
/// planes without their row padding (a decoder's strides are wider than the picture). `None`
/// when the frame's planes are shorter than its size and strides say.
pub fn encode_i420_frame(key: &str, frame: &rtcio_media::I420Frame) -> Option<Vec<u8>> {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let len = FrameFormat::I420.payload_len(frame.width, frame.height)?;
    let mut out = frame_header(FrameFormat::I420, key, frame.width, frame.height, len);
    for (plane, stride, pw, ph) in [
        (&frame.y, frame.stride_y, w, h),
        (&frame.u, frame.stride_u, cw, ch),
        (&frame.v, frame.stride_v, cw, ch),
    ] {
        if ph == 0 {
            continue;
        }
        if stride < pw || plane.len() < stride.checked_mul(ph - 1)?.checked_add(pw)? {
            return None;
        }
        if stride == pw {
            out.extend_from_slice(&plane[..pw * ph]);
        } else {
            for row in plane.chunks(stride).take(ph) {
                out.extend_from_slice(&row[..pw]);
            }
        }
    }
    Some(out)
}

/// A decoded binary frame header: key, format, width, height and where the pixels start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHeader {
    /// Tile key (see [`stream_key`]).
    pub key: String,
    /// Pixel layout of what follows the header.
    pub format: FrameFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// When the frame was encoded for the IPC, µs since the Unix epoch.
    pub sent_at_us: u64,
    /// Offset of the pixel bytes.
    pub offset: usize,
}

/// Reads the header of [`encode_frame`]'s or [`encode_i420_frame`]'s output; `None` when it is
/// malformed or truncated.
pub fn decode_frame_header(buf: &[u8]) -> Option<FrameHeader> {
    if buf.len() < FRAME_HEADER_LEN || buf[0] != FRAME_VERSION {
        return None;
    }
    let format = FrameFormat::from_tag(buf[1])?;
    let key_len = u16::from_le_bytes([buf[2], buf[3]]) as usize;
    let width = u32::from_le_bytes(buf[4..8].try_into().ok()?);
    let height = u32::from_le_bytes(buf[8..12].try_into().ok()?);
    let sent_at_us = u64::from_le_bytes(buf[12..20].try_into().ok()?);
    let offset = FRAME_HEADER_LEN + key_len;
    let key = std::str::from_utf8(buf.get(FRAME_HEADER_LEN..offset)?).ok()?;
    let pixels = format.payload_len(width, height)?;
    (buf.len() == offset.checked_add(pixels)?).then(|| FrameHeader {
        key: key.to_string(),
        format,
        width,
        height,
        sent_at_us,
        offset,
    })
}

/// Environment variable forcing the remote tiles' frame format: `rgba` sends RGBA even to a
/// page that takes I420 (the IPC bench's "before"); unset, the page's choice
/// ([`set_page_takes_i420`]) decides.
pub const FRAME_FORMAT_ENV: &str = "RTCIO_FRAME_FORMAT";

/// Whether the page (the app has one) said it paints I420 frames: set when it registers its
/// video channel. A process-wide flag because every frame sink of the app writes to that one
/// page; without a page saying so, frames are RGBA (what every consumer reads).
static PAGE_TAKES_I420: AtomicBool = AtomicBool::new(false);

/// Records whether the page paints I420 frames (WebGL 2 there), unless [`FRAME_FORMAT_ENV`]
/// is `rgba`.
pub fn set_page_takes_i420(i420: bool) {
    let forced_rgba = std::env::var(FRAME_FORMAT_ENV).is_ok_and(|v| v.trim() == "rgba");
    PAGE_TAKES_I420.store(i420 && !forced_rgba, Ordering::Relaxed);
}

/// The format remote video frames are handed to the page in.
pub fn remote_frame_format() -> FrameFormat {
    if PAGE_TAKES_I420.load(Ordering::Relaxed) {
        FrameFormat::I420
    } else {
        FrameFormat::Rgba
    }
}

/// How far a tile's fitted size may be from an exact half or quarter of the picture, as a
/// fraction of each dimension, and still get that exact size (see [`i420_scale_target`]).
pub const NEAR_EXACT: f64 = 0.08;

/// The size to scale an I420 picture to before the IPC for a `tile`-sized tile (device
/// pixels), or `None` to send it as decoded: scaled whenever the tile is smaller than the
/// picture, so the IPC, the page's texture upload and its sampler handle only the pixels shown;
/// never up. A tile within [`NEAR_EXACT`] of exactly half or a quarter of the picture (a cell
/// of a gapped grid is a few pixels off: 5 tiles in a 1920 × 1200 window with the chat open
/// make 626 × 352 cells for 1280 × 720 pictures) gets that exact size instead, which
/// [`encode_i420_scaled`] makes with a plain block average (~0.07× the general resizer's
/// cost): up to 8 % more pixels per dimension below it, a slight upscale above it; the page
/// draws the frame at its own size and the canvas's CSS size scales it to the tile for free. The exact sizes apply when they are whole and even (the picture's sides divisible
/// by 4, or 8 for the quarter); the aspect ratio is the picture's either way.
pub fn i420_scale_target(picture: (u32, u32), tile: (u32, u32)) -> Option<(u32, u32)> {
    let (w, h) = i420_tile_target(picture, tile)?;
    let near = |got: u32, exact: u32| {
        (f64::from(got) - f64::from(exact)).abs() <= f64::from(exact) * NEAR_EXACT
    };
    for divisor in [2, 4] {
        if !picture.0.is_multiple_of(2 * divisor) || !picture.1.is_multiple_of(2 * divisor) {
            continue;
        }
        let exact = (picture.0 / divisor, picture.1 / divisor);
        if near(w, exact.0) && near(h, exact.1) {
            return Some(exact);
        }
    }
    Some((w, h))
}

/// The tile's own size for an I420 picture ([`i420_scale_target`] without the exact sizes):
/// the largest even size of the picture's aspect within the tile, `None` when that is not
/// smaller than the picture.
fn i420_tile_target(picture: (u32, u32), tile: (u32, u32)) -> Option<(u32, u32)> {
    let (w, h) = rtcio_media::convert::fit_within(picture.0, picture.1, tile.0, tile.1);
    (w < picture.0 || h < picture.1).then_some((w, h))
}

/// The size to scale our own RGBA preview `picture` to for a `tile`-sized tile, or `None` to
/// send it as it is: when the tile is at least as big, or within [`NEAR_EXACT`] under it in
/// both dimensions (e.g. a 640 × 360 preview in a 626 × 352 grid cell), where scaling the RGBA
/// (a convolution with alpha premultiplied and divided again, ~3 % of the app's samples with
/// four remotes) would save 4 % of the bytes and the page's canvas scales for free.
pub fn preview_target(picture: (u32, u32), tile: (u32, u32)) -> Option<(u32, u32)> {
    let (w, h) = rtcio_media::convert::fit_within(picture.0, picture.1, tile.0, tile.1);
    let near = |got: u32, full: u32| f64::from(got) >= f64::from(full) * (1.0 - NEAR_EXACT);
    (!(near(w, picture.0) && near(h, picture.1))).then_some((w, h))
}

/// What a remote video thread scales with: RGBA pictures (pages without WebGL) through
/// rtcio-media's [`Scaler`], I420 pictures straight into the frame buffer handed to the IPC.
#[derive(Default)]
pub struct RemoteScaler {
    rgba: Scaler,
    i420: fast_image_resize::Resizer,
}

/// One I420 frame for a tile ([`encode_i420_frame`]'s layout) of `width × height` (even, at
/// most the picture's size), each plane resized from the decoder's (padded) rows straight into
/// the buffer that goes to the IPC: no intermediate picture, no copy. Exactly half or a
/// quarter of the picture in both dimensions (a 2 × 2 grid cell, or a strip thumbnail, of a
/// 720p picture; [`i420_scale_target`] picks those sizes for tiles near them) averages 2 × 2
/// or 4 × 4 blocks in plain Rust ([`halve_plane`], [`quarter_plane`]), cheaper than the
/// general convolution; every other size goes through [`encode_i420_resized`].
pub fn encode_i420_scaled(
    key: &str,
    pic: &rtcio_media::I420Frame,
    (width, height): (u32, u32),
    resizer: &mut fast_image_resize::Resizer,
) -> Result<Vec<u8>, MediaError> {
    // Widened: a target near u32::MAX is an error of the resizer's checks, not an overflow.
    let (even_w, even_h) = (u64::from(width & !1), u64::from(height & !1));
    let exact = |d: u64| even_w * d == u64::from(pic.width) && even_h * d == u64::from(pic.height);
    // The output's sides are even, so an exact picture's are multiples of 4 (or 8): its
    // chroma planes divide by the same factor.
    let divisor = if width < 2 || height < 2 {
        None
    } else if exact(2) {
        Some(2)
    } else if exact(4) {
        Some(4)
    } else {
        None
    };
    let Some(divisor) = divisor else {
        return encode_i420_resized(key, pic, (width, height), resizer);
    };
    let (mut out, start) = scaled_frame_buffer(key, pic, (width, height))?;
    let (dw, dh) = (even_w as usize, even_h as usize);
    let (sw, sh) = (pic.width as usize, pic.height as usize);
    let (y, uv) = out[start..].split_at_mut(dw * dh);
    let (u, v) = uv.split_at_mut(dw / 2 * (dh / 2));
    for (src, stride, (pw, ph), dst) in [
        (&pic.y, pic.stride_y, (sw, sh), y),
        (&pic.u, pic.stride_u, (sw / 2, sh / 2), u),
        (&pic.v, pic.stride_v, (sw / 2, sh / 2), v),
    ] {
        let done = if divisor == 2 {
            halve_plane(src, stride, (pw, ph), dst)
        } else {
            quarter_plane(src, stride, (pw, ph), dst)
        };
        if !done {
            return Err(scale_error("planes shorter than their size"));
        }
    }
    Ok(out)
}

fn scale_error(what: &str) -> MediaError {
    MediaError::InvalidInput(format!("scaling a remote frame: {what}"))
}

/// The frame buffer for a scaled picture of `width & !1 × height & !1`: header written,
/// pixels zeroed; with the offset of the pixels. Errors on a target of less than 2 × 2 or
/// above the picture.
fn scaled_frame_buffer(
    key: &str,
    pic: &rtcio_media::I420Frame,
    (width, height): (u32, u32),
) -> Result<(Vec<u8>, usize), MediaError> {
    if width < 2 || height < 2 || width > pic.width || height > pic.height {
        return Err(scale_error("target size"));
    }
    let (width, height) = (width & !1, height & !1);
    let len = FrameFormat::I420
        .payload_len(width, height)
        .ok_or_else(|| scale_error("size"))?;
    let mut out = frame_header(FrameFormat::I420, key, width, height, len);
    let start = out.len();
    out.resize(start + len, 0);
    Ok((out, start))
}

/// The `pw / k × ph / k` size a `pw × ph` plane (rows `stride` bytes apart, the last one
/// possibly cut at the picture's edge) averages down to in `k × k` blocks; `None` when a side
/// is not a multiple of `k` or `src` / `dst` is too short.
fn reduced_size(
    src: &[u8],
    stride: usize,
    (pw, ph): (usize, usize),
    k: usize,
    dst: &[u8],
) -> Option<(usize, usize)> {
    let (qw, qh) = (pw / k, ph / k);
    let src_needed = match ph.checked_sub(1) {
        Some(rows) => rows.checked_mul(stride).and_then(|n| n.checked_add(pw)),
        None => Some(0),
    };
    let fits = pw % k == 0
        && ph % k == 0
        && stride >= pw
        && src_needed.is_some_and(|n| src.len() >= n)
        && dst.len() >= qw * qh;
    fits.then_some((qw, qh))
}

/// Averages each 2 × 2 block of a `pw × ph` plane whose rows are `stride` bytes apart (the
/// last row may stop at the picture's edge) into `dst`, `pw / 2 × ph / 2` packed bytes,
/// rounding half up: `(a + b + c + d + 2) / 4`. False (nothing written) when `src` or `dst`
/// is too short or a size is odd.
pub fn halve_plane(src: &[u8], stride: usize, (pw, ph): (usize, usize), dst: &mut [u8]) -> bool {
    let Some((qw, qh)) = reduced_size(src, stride, (pw, ph), 2, dst) else {
        return false;
    };
    if qw == 0 || qh == 0 {
        return true;
    }
    // Rows cut to their exact lengths and split into fixed-size blocks (16 outputs from 2 × 32
    // inputs), so the inner loop has no bounds checks and compiles to vector code: plain
    // zips over byte pairs did not vectorise (~5× slower); the blocks' tail goes pair by pair.
    for (r, out) in dst[..qw * qh].chunks_exact_mut(qw).enumerate() {
        let top = &src[2 * r * stride..][..pw];
        let bottom = &src[(2 * r + 1) * stride..][..pw];
        let (out_blocks, out_tail) = out.as_chunks_mut::<16>();
        let (top_blocks, top_tail) = top.as_chunks::<32>();
        let (bottom_blocks, bottom_tail) = bottom.as_chunks::<32>();
        for ((o, t), b) in out_blocks.iter_mut().zip(top_blocks).zip(bottom_blocks) {
            for (i, o) in o.iter_mut().enumerate() {
                *o = average4(t[2 * i], t[2 * i + 1], b[2 * i], b[2 * i + 1]);
            }
        }
        for ((o, t), b) in out_tail
            .iter_mut()
            .zip(top_tail.chunks_exact(2))
            .zip(bottom_tail.chunks_exact(2))
        {
            *o = average4(t[0], t[1], b[0], b[1]);
        }
    }
    true
}

/// Averages each 4 × 4 block of a `pw × ph` plane whose rows are `stride` bytes apart (the
/// last row may stop at the picture's edge) into `dst`, `pw / 4 × ph / 4` packed bytes,
/// rounding half up: `(sum of 16 + 8) / 16`. False (nothing written) when `src` or `dst` is
/// too short or a size is not a multiple of 4.
pub fn quarter_plane(src: &[u8], stride: usize, (pw, ph): (usize, usize), dst: &mut [u8]) -> bool {
    let Some((qw, qh)) = reduced_size(src, stride, (pw, ph), 4, dst) else {
        return false;
    };
    if qw == 0 || qh == 0 {
        return true;
    }
    // As in `halve_plane`: fixed-size blocks (8 outputs from 4 × 32 inputs) so the inner loops
    // have no bounds checks; the four rows are summed column by column first, then neighbours
    // pairwise twice (each step a plain loop over a fixed array, which vectorises: summing each
    // 4 × 4 block on its own was 2-4× slower in a standalone check); the tail goes block by
    // block.
    for (r, out) in dst[..qw * qh].chunks_exact_mut(qw).enumerate() {
        let rows: [&[u8]; 4] = std::array::from_fn(|i| &src[(4 * r + i) * stride..][..pw]);
        let [a, b, c, d] = rows.map(|row| row.as_chunks::<32>());
        let (out_blocks, out_tail) = out.as_chunks_mut::<8>();
        let blocks = out_blocks
            .iter_mut()
            .zip(a.0.iter().zip(b.0))
            .zip(c.0.iter().zip(d.0));
        for ((o, (a, b)), (c, d)) in blocks {
            let mut columns = [0u16; 32];
            for (j, s) in columns.iter_mut().enumerate() {
                *s = u16::from(a[j]) + u16::from(b[j]) + u16::from(c[j]) + u16::from(d[j]);
            }
            let mut pairs = [0u16; 16];
            for (k, p) in pairs.iter_mut().enumerate() {
                *p = columns[2 * k] + columns[2 * k + 1];
            }
            for (i, o) in o.iter_mut().enumerate() {
                *o = ((pairs[2 * i] + pairs[2 * i + 1] + 8) >> 4) as u8;
            }
        }
        let tails = (a.1.chunks_exact(4).zip(b.1.chunks_exact(4)))
            .zip(c.1.chunks_exact(4).zip(d.1.chunks_exact(4)));
        for (o, ((a, b), (c, d))) in out_tail.iter_mut().zip(tails) {
            let sum: u16 = [a, b, c, d]
                .iter()
                .flat_map(|row| row.iter())
                .map(|&x| u16::from(x))
                .sum();
            *o = ((sum + 8) >> 4) as u8;
        }
    }
    true
}

/// The average of four bytes, rounded half up.
#[inline(always)]
fn average4(a: u8, b: u8, c: u8, d: u8) -> u8 {
    ((u16::from(a) + u16::from(b) + u16::from(c) + u16::from(d) + 2) >> 2) as u8
}

/// [`encode_i420_scaled`] through fast_image_resize for any size: box filter (the 2 × 2
/// average) for reductions of 2× or more, bilinear below.
pub fn encode_i420_resized(
    key: &str,
    pic: &rtcio_media::I420Frame,
    (width, height): (u32, u32),
    resizer: &mut fast_image_resize::Resizer,
) -> Result<Vec<u8>, MediaError> {
    use fast_image_resize::images::{Image, ImageRef};
    use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions};
    let bad = |what: &str| scale_error(what);
    let (mut out, start) = scaled_frame_buffer(key, pic, (width, height))?;
    let (dw, dh) = ((width & !1) as usize, (height & !1) as usize);
    let filter = if dw * 2 <= pic.width as usize && dh * 2 <= pic.height as usize {
        FilterType::Box
    } else {
        FilterType::Bilinear
    };
    let (sw, sh) = (pic.width as usize, pic.height as usize);
    let (y, uv) = out[start..].split_at_mut(dw * dh);
    let (u, v) = uv.split_at_mut(dw.div_ceil(2) * dh.div_ceil(2));
    for (src, stride, (pw, ph), dst, (qw, qh)) in [
        (&pic.y, pic.stride_y, (sw, sh), y, (dw, dh)),
        (&pic.u, pic.stride_u, (sw / 2, sh / 2), u, (dw / 2, dh / 2)),
        (&pic.v, pic.stride_v, (sw / 2, sh / 2), v, (dw / 2, dh / 2)),
    ] {
        // The decoder's rows are `stride` wide: the source is that wide, cropped to the
        // picture (a plane whose last row stops at the picture's edge is packed first).
        let packed;
        let (src, stride) = if src.len() >= stride * ph {
            (&src[..], stride)
        } else if stride >= pw && src.len() >= stride * (ph - 1) + pw {
            packed = src
                .chunks(stride)
                .take(ph)
                .flat_map(|r| &r[..pw])
                .copied()
                .collect::<Vec<u8>>();
            (&packed[..], pw)
        } else {
            return Err(bad("planes shorter than their size"));
        };
        let src = ImageRef::new(stride as u32, ph as u32, src, PixelType::U8)
            .map_err(|e| bad(&e.to_string()))?;
        let mut dst = Image::from_slice_u8(qw as u32, qh as u32, dst, PixelType::U8)
            .map_err(|e| bad(&e.to_string()))?;
        let options = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(filter))
            .crop(0.0, 0.0, pw as f64, ph as f64);
        resizer
            .resize(&src, &mut dst, &options)
            .map_err(|e| bad(&e.to_string()))?;
    }
    Ok(out)
}

/// Environment variable choosing how I420 remote pictures are scaled (read once; for
/// before / after measurements): `resizer` scales every one to its tile's own size with
/// fast_image_resize ([`encode_i420_resized`]: the exact-half path off), `tile` to its tile's
/// own size with the exact-half and -quarter paths only when the tile is exactly that size;
/// unset (or anything else), tiles near those sizes get them ([`i420_scale_target`]).
pub const I420_SCALER_ENV: &str = "RTCIO_I420_SCALER";

/// How I420 remote pictures are scaled (see [`I420_SCALER_ENV`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum I420Scaling {
    Resizer,
    TileSize,
    NearExact,
}

fn i420_scaling() -> I420Scaling {
    static SCALING: std::sync::OnceLock<I420Scaling> = std::sync::OnceLock::new();
    *SCALING.get_or_init(
        || match std::env::var(I420_SCALER_ENV).as_deref().map(str::trim) {
            Ok("resizer") => I420Scaling::Resizer,
            Ok("tile") => I420Scaling::TileSize,
            _ => I420Scaling::NearExact,
        },
    )
}

/// One picture for a remote tile in `format`, scaled for a `tile`-sized tile (RGBA: never
/// larger than the picture, the canvas upscales for free; I420: see [`i420_scale_target`]).
pub fn remote_frame(
    key: &str,
    pic: &rtcio_media::I420Frame,
    tile: (u32, u32),
    format: FrameFormat,
    scaler: &mut RemoteScaler,
) -> Result<Vec<u8>, MediaError> {
    match format {
        FrameFormat::Rgba => {
            let (w, h) = (tile.0.min(pic.width), tile.1.min(pic.height));
            Ok(encode_frame(key, &scaler.rgba.preview(pic, w, h)?))
        }
        FrameFormat::I420 => {
            let picture = (pic.width, pic.height);
            let scaling = i420_scaling();
            let target = match scaling {
                I420Scaling::NearExact => i420_scale_target(picture, tile),
                I420Scaling::Resizer | I420Scaling::TileSize => i420_tile_target(picture, tile),
            };
            match target {
                Some(size) if scaling == I420Scaling::Resizer => {
                    encode_i420_resized(key, pic, size, &mut scaler.i420)
                }
                Some(size) => encode_i420_scaled(key, pic, size, &mut scaler.i420),
                None => encode_i420_frame(key, pic).ok_or_else(|| {
                    MediaError::InvalidInput("I420 planes shorter than their size".into())
                }),
            }
        }
    }
}

/// The tile key of a remote stream: `<peer socket id>/<msid>`.
pub fn stream_key(peer: &str, msid: &str) -> String {
    format!("{peer}/{msid}")
}

/// The tile key of our own camera preview.
pub const SELF_PREVIEW_KEY: &str = "self/camera";

/// The size each tile is shown at, as the UI reports it.
#[derive(Clone, Default)]
pub struct TileSizes(Arc<Mutex<HashMap<String, (u32, u32)>>>);

impl TileSizes {
    /// Sets a tile's displayed size (clamped to 2×2 … 3840×2160).
    pub fn set(&self, key: &str, width: u32, height: u32) {
        let w = width.clamp(2, MAX_TILE.0);
        let h = height.clamp(2, MAX_TILE.1);
        lock(&self.0).insert(key.to_string(), (w, h));
    }

    /// A tile's size ([`DEFAULT_TILE`] until the UI said otherwise).
    pub fn get(&self, key: &str) -> (u32, u32) {
        lock(&self.0).get(key).copied().unwrap_or(DEFAULT_TILE)
    }

    fn forget(&self, key: &str) {
        lock(&self.0).remove(key);
    }
}

// ---------------------------------------------------------------- flow control to the page

/// How long a pull of the page ([`FrameGate::pull`]) waits for a frame before it is answered
/// with an empty batch (the page pulls again): a request left open for minutes (a call
/// without video) is not at the mercy of the webview's request timeouts.
pub const PULL_WAIT: Duration = Duration::from_secs(10);

/// The tile key of a binary frame (see [`encode_frame`]) without checking its pixels.
pub fn frame_key(buf: &[u8]) -> Option<&str> {
    if buf.len() < FRAME_HEADER_LEN || buf[0] != FRAME_VERSION {
        return None;
    }
    let key_len = u16::from_le_bytes([buf[2], buf[3]]) as usize;
    std::str::from_utf8(buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + key_len)?).ok()
}

/// Counters of [`FrameFlow`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Frames handed to the page.
    pub sent: u64,
    /// Frames the page acknowledged (painted or dropped).
    pub acked: u64,
    /// Frames never sent: a newer one of the same tile took their place while they waited.
    pub replaced: u64,
    /// Frames of batches the page never acknowledged (its next pull named another batch: a
    /// reloaded page, or a batch it could not read).
    pub lost: u64,
    /// Batches (non-empty replies to pulls) handed to the page.
    pub batches: u64,
    /// Bytes of those batches.
    pub bytes: u64,
    /// Batches the page acknowledged.
    pub batch_acks: u64,
    /// Pulls of the page (one IPC request and its reply each: the whole IPC of the video).
    pub pulls: u64,
    /// Pulls answered with an empty batch (no frame within [`PULL_WAIT`], or a newer pull).
    pub empty: u64,
}

/// Version byte of a batch message (the frames of several tiles in one IPC reply).
pub const BATCH_VERSION: u8 = 2;
/// Bytes before the first frame of a batch.
pub const BATCH_HEADER_LEN: usize = 8;
/// Sequence number of an empty batch: names nothing to acknowledge.
pub const EMPTY_BATCH_SEQ: u32 = u32::MAX;

/// The batch the page holds: replied to its last pull, not acknowledged yet.
struct Held {
    seq: u32,
    keys: Vec<String>,
}

/// Flow control of frames to the page, which pulls them: its one request (`next_frames
/// {ack}`) gets as reply one batch with the newest frame of every tile that has one waiting,
/// and its next request, made once it has painted (or dropped) that batch, acknowledges it.
/// So the page holds at most one batch, each with at most one frame per tile; frames that come
/// while it paints wait here, and a newer frame of a tile replaces the waiting one (latest
/// wins: late frames are dropped, never queued). A pull with nothing waiting waits for the
/// next frame, which is answered at once. Two cross-process messages per batch (the request,
/// the reply), where pushing a batch on a channel cost five (an eval to the page, the page's
/// fetch of the bytes and its reply, an acknowledgement call and its reply). No timeout is
/// needed: a page that stops pulling simply gets nothing, and a reloaded one starts with a
/// pull of its own. Plain logic; the app wraps it in [`FrameGate`].
#[derive(Default)]
pub struct FrameFlow {
    /// The newest frame of each tile not handed over yet, in the order tiles first waited.
    waiting: Vec<(String, Vec<u8>)>,
    held: Option<Held>,
    /// A pull is waiting for frames: the next offered frame answers it.
    wanted: bool,
    next_seq: u32,
    stats: FlowStats,
}

impl FrameFlow {
    /// Nothing waiting, nothing held, no pull yet.
    pub fn new() -> Self {
        FrameFlow::default()
    }

    /// A new frame for `key`: returns a batch (with this frame) to answer the waiting pull
    /// with, or keeps the frame as its tile's waiting one (replacing an older one).
    pub fn offer(&mut self, key: &str, frame: Vec<u8>) -> Option<Vec<u8>> {
        match self.waiting.iter_mut().find(|(k, _)| k == key) {
            Some((_, old)) => {
                *old = frame;
                self.stats.replaced += 1;
            }
            None => self.waiting.push((key.to_string(), frame)),
        }
        if !self.wanted {
            return None;
        }
        self.wanted = false;
        Some(self.take_batch())
    }

    /// The page asks for frames, having painted (or dropped) batch `ack` (`None`: it holds
    /// none, e.g. it just loaded). Returns the batch to reply with now, or `None`: nothing
    /// waits, and the next offered frame answers this pull.
    pub fn pull(&mut self, ack: Option<u32>) -> Option<Vec<u8>> {
        self.stats.pulls += 1;
        // The page pulls only when it holds nothing: whatever it held is done with.
        if let Some(held) = self.held.take() {
            if Some(held.seq) == ack {
                self.stats.acked += held.keys.len() as u64;
                self.stats.batch_acks += 1;
            } else {
                self.stats.lost += held.keys.len() as u64;
            }
        }
        if self.waiting.is_empty() {
            self.wanted = true;
            return None;
        }
        self.wanted = false;
        Some(self.take_batch())
    }

    /// The waiting pull was answered empty (it waited [`PULL_WAIT`], or a newer pull came):
    /// frames wait for the next pull.
    pub fn withdraw(&mut self) {
        self.wanted = false;
        self.stats.empty += 1;
    }

    /// Frames of `key` the page holds (0 or 1).
    pub fn in_flight(&self, key: &str) -> usize {
        self.held
            .as_ref()
            .map_or(0, |h| h.keys.iter().filter(|k| *k == key).count())
    }

    /// Frames waiting for the next pull (one per tile at most).
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The sequence number of the batch the page holds, if any.
    pub fn held(&self) -> Option<u32> {
        self.held.as_ref().map(|h| h.seq)
    }

    /// The counters so far.
    pub fn stats(&self) -> FlowStats {
        self.stats
    }

    fn take_batch(&mut self) -> Vec<u8> {
        let seq = self.next_seq;
        // Never the empty batch's number.
        self.next_seq = self.next_seq.wrapping_add(1) % EMPTY_BATCH_SEQ;
        let frames = std::mem::take(&mut self.waiting);
        let (bytes, keys) = encode_batch(seq, frames);
        self.stats.sent += keys.len() as u64;
        self.stats.batches += 1;
        self.stats.bytes += bytes.len() as u64;
        self.held = Some(Held { seq, keys });
        bytes
    }
}

/// One batch message: `[0]` version ([`BATCH_VERSION`]), `[1]` 0, `[2..4]` frame count (u16
/// LE), `[4..8]` sequence number (u32 LE: what the page acknowledges with its next pull;
/// [`EMPTY_BATCH_SEQ`] for an empty batch), then per frame its length (u32 LE) and the frame
/// ([`encode_frame`] / [`encode_i420_frame`]). Returns the bytes and the frames' keys. At most
/// `u16::MAX` frames (one per tile).
fn encode_batch(seq: u32, frames: Vec<(String, Vec<u8>)>) -> (Vec<u8>, Vec<String>) {
    let frames = &frames[..frames.len().min(u16::MAX as usize)];
    let len = BATCH_HEADER_LEN + frames.iter().map(|(_, f)| 4 + f.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(BATCH_VERSION);
    out.push(0);
    out.extend_from_slice(&(frames.len() as u16).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let mut keys = Vec::with_capacity(frames.len());
    for (key, f) in frames {
        out.extend_from_slice(&(f.len().min(u32::MAX as usize) as u32).to_le_bytes());
        out.extend_from_slice(f);
        keys.push(key.clone());
    }
    (out, keys)
}

/// The reply to a pull that got no frame: a batch of none.
pub fn empty_batch() -> Vec<u8> {
    encode_batch(EMPTY_BATCH_SEQ, Vec::new()).0
}

/// Splits a batch message ([`FrameFlow`]'s) into its sequence number and frames; `None` when
/// it is malformed or truncated.
pub fn decode_batch(buf: &[u8]) -> Option<(u32, Vec<&[u8]>)> {
    if buf.len() < BATCH_HEADER_LEN || buf[0] != BATCH_VERSION {
        return None;
    }
    let count = u16::from_le_bytes([buf[2], buf[3]]) as usize;
    let seq = u32::from_le_bytes(buf[4..8].try_into().ok()?);
    let mut frames = Vec::with_capacity(count);
    let mut at = BATCH_HEADER_LEN;
    for _ in 0..count {
        let len = u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?) as usize;
        at += 4;
        frames.push(buf.get(at..at.checked_add(len)?)?);
        at += len;
    }
    (at == buf.len()).then_some((seq, frames))
}

/// The pull waiting for a frame: its number and where its reply goes.
type Parked = (u64, tokio::sync::oneshot::Sender<Vec<u8>>);

struct GateState {
    flow: FrameFlow,
    parked: Option<Parked>,
    next_pull: u64,
}

/// [`FrameFlow`] between the media code and the page's pulls (the app's `next_frames`
/// command): [`FrameGate::sink`] is the [`FrameSink`] every frame source writes to,
/// [`FrameGate::pull`] answers the page.
#[derive(Clone)]
pub struct FrameGate {
    state: Arc<Mutex<GateState>>,
}

impl Default for FrameGate {
    fn default() -> Self {
        FrameGate {
            state: Arc::new(Mutex::new(GateState {
                flow: FrameFlow::new(),
                parked: None,
                next_pull: 0,
            })),
        }
    }
}

impl FrameGate {
    /// A gate with nothing waiting.
    pub fn new() -> Self {
        FrameGate::default()
    }

    /// The sink frames are offered to (a frame without a readable key is dropped: the page
    /// could not place it). A frame that answers a waiting pull is handed to it here.
    pub fn sink(&self) -> FrameSink {
        let gate = self.clone();
        Arc::new(move |bytes: Vec<u8>| {
            let Some(key) = frame_key(&bytes).map(str::to_owned) else {
                return;
            };
            let mut st = lock(&gate.state);
            if let Some(batch) = st.flow.offer(&key, bytes) {
                // The flow wants a frame only while a pull is parked; the pull's task takes
                // it from there (a send fails only when that task is gone: its batch then
                // counts as lost on the next pull).
                if let Some((_, reply)) = st.parked.take() {
                    let _ = reply.send(batch);
                }
            }
        })
    }

    /// The page's pull, acknowledging batch `ack` (see [`FrameFlow::pull`]): the next batch,
    /// at once when frames wait, else when the next frame comes, or an empty batch after
    /// `wait`. A pull made while another waits (a reloaded page) answers that one empty.
    pub async fn pull(&self, ack: Option<u32>, wait: Duration) -> Vec<u8> {
        let (id, mut rx) = {
            let mut st = lock(&self.state);
            if let Some((_, old)) = st.parked.take() {
                st.flow.withdraw();
                let _ = old.send(empty_batch());
            }
            if let Some(batch) = st.flow.pull(ack) {
                return batch;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            st.next_pull += 1;
            let id = st.next_pull;
            st.parked = Some((id, tx));
            (id, rx)
        };
        if let Ok(Ok(batch)) = tokio::time::timeout(wait, &mut rx).await {
            return batch;
        }
        // Timed out (or replaced). Still parked: withdraw it; else a reply was sent meanwhile
        // and is in the channel.
        let mut st = lock(&self.state);
        if st.parked.as_ref().is_some_and(|(p, _)| *p == id) {
            st.parked = None;
            st.flow.withdraw();
            return empty_batch();
        }
        drop(st);
        rx.try_recv().unwrap_or_else(|_| empty_batch())
    }

    /// The counters so far.
    pub fn stats(&self) -> FlowStats {
        lock(&self.state).flow.stats()
    }
}

// ---------------------------------------------------------------- sending

pub use rtcio_glue::Opened;

fn h264(fps: f32, screen: bool) -> H264Config {
    H264Config {
        max_fps: fps.clamp(1.0, 60.0),
        content: if screen {
            rtcio_media::ContentHint::Screen
        } else {
            rtcio_media::ContentHint::Camera
        },
        ..H264Config::default()
    }
}

/// The plugs of the synthetic camera and microphone opened last, for tests that pull them out
/// mid-call ([`unplug_synthetic`]).
static SYNTHETIC_PLUGS: Mutex<(Option<PlugHandle>, Option<PlugHandle>)> = Mutex::new((None, None));

/// "Unplugs" the synthetic camera (video) or microphone (audio, the tone) opened last: its next
/// frame fails like a vanished device's. False when none was opened. For tests and demos.
pub fn unplug_synthetic(kind: MediaKind) -> bool {
    let plugs = lock(&SYNTHETIC_PLUGS);
    let plug = match kind {
        MediaKind::Video => plugs.0.as_ref(),
        MediaKind::Audio => plugs.1.as_ref(),
    };
    plug.inspect(|p| p.unplug()).is_some()
}

/// A synthetic source that can be unplugged ([`unplug_synthetic`]).
fn pluggable<S>(source: S, kind: MediaKind) -> Unpluggable<S> {
    let what = match kind {
        MediaKind::Video => "camera",
        MediaKind::Audio => "microphone",
    };
    let (source, plug) = Unpluggable::new(source, what);
    let mut plugs = lock(&SYNTHETIC_PLUGS);
    match kind {
        MediaKind::Video => plugs.0 = Some(plug),
        MediaKind::Audio => plugs.1 = Some(plug),
    }
    source
}

/// A source and its label (for logs and stats).
type Labelled<S> = (Box<S>, &'static str);

/// Opens a video source (a camera by id; [`TEST_PATTERN_GREEN_ID`] is the green pattern).
/// Blocking (V4L2).
fn video_source(
    choice: &VideoChoice,
    (width, height): (u32, u32),
    fps: f32,
) -> Result<Option<Labelled<dyn VideoSource>>, MediaError> {
    let pattern = |green: bool| -> Result<Box<dyn VideoSource>, MediaError> {
        let p = rtcio_media::TestPatternSource::new(rtcio_media::TestPatternConfig {
            width,
            height,
            fps,
            paced: true,
        })?;
        let p = if green { p.tinted(54, 34) } else { p };
        Ok(Box::new(pluggable(p, MediaKind::Video)))
    };
    Ok(Some(match choice {
        VideoChoice::Off => return Ok(None),
        VideoChoice::TestPattern => (pattern(false)?, "test pattern"),
        VideoChoice::Camera(Some(id)) if id == TEST_PATTERN_GREEN_ID => {
            (pattern(true)?, "test pattern (green)")
        }
        VideoChoice::Camera(device) => (
            Box::new(rtcio_media::CameraSource::open(
                rtcio_media::CameraConfig {
                    device: device.clone(),
                    width,
                    height,
                    fps: fps.round() as u32,
                },
            )?),
            "camera",
        ),
    }))
}

/// Opens an audio source. Blocking (ALSA).
fn audio_source(choice: &AudioChoice) -> Result<Option<Labelled<dyn AudioSource>>, MediaError> {
    Ok(Some(match choice {
        AudioChoice::Off => return Ok(None),
        AudioChoice::Tone => (
            Box::new(pluggable(
                rtcio_media::ToneSource::new(rtcio_media::ToneConfig::default())?,
                MediaKind::Audio,
            )),
            "tone",
        ),
        AudioChoice::Microphone(device) => (
            Box::new(rtcio_media::MicrophoneSource::open(
                rtcio_media::MicrophoneConfig {
                    device: device.clone(),
                    channels: 1,
                },
            )?),
            "microphone",
        ),
    }))
}

/// Opens the video source of `cfg` and starts encoding. Blocking (V4L2): call it off the
/// async runtime.
pub fn open_video(cfg: &MediaConfig) -> Result<Option<Opened>, MediaError> {
    let Some((source, label)) = video_source(&cfg.video, cfg.capture_size, cfg.fps)? else {
        return Ok(None);
    };
    Opened::video(source, h264(cfg.fps, false), Some(DEFAULT_TILE), label).map(Some)
}

/// Opens the device a picker id names as a replacement for a running track
/// ([`SendStream::replace_source`]): `kind` video = a camera id, audio = a microphone id, the
/// synthetic ids included (with `fake`, every id is a synthetic source). Blocking: off the
/// runtime. Returns the source and its label.
pub fn open_replacement(
    kind: MediaKind,
    id: &str,
    fake: bool,
) -> Result<(Replacement, &'static str), MediaError> {
    let cfg = match kind {
        MediaKind::Video => MediaConfig::from_choices(Some(id), None, fake),
        MediaKind::Audio => MediaConfig::from_choices(None, Some(id), fake),
    };
    let missing = || MediaError::InvalidInput(format!("no device {id:?}"));
    match kind {
        MediaKind::Video => {
            let (s, label) =
                video_source(&cfg.video, cfg.capture_size, cfg.fps)?.ok_or_else(missing)?;
            Ok((Replacement::Video(s), label))
        }
        MediaKind::Audio => {
            let (s, label) = audio_source(&cfg.audio)?.ok_or_else(missing)?;
            Ok((Replacement::Audio(s), label))
        }
    }
}

/// The picker ids of the camera and microphone `cfg` opens (`None`: off or the default).
pub fn device_ids(cfg: &MediaConfig) -> (Option<String>, Option<String>) {
    let video = match &cfg.video {
        VideoChoice::Off => None,
        VideoChoice::TestPattern => Some(TEST_PATTERN_ID.to_string()),
        VideoChoice::Camera(id) => id.clone(),
    };
    let audio = match &cfg.audio {
        AudioChoice::Off => None,
        AudioChoice::Tone => Some(TONE_ID.to_string()),
        AudioChoice::Microphone(id) => id.clone(),
    };
    (video, audio)
}

/// Opens the audio source of `cfg` and starts encoding. Blocking (ALSA): off the runtime.
pub fn open_audio(cfg: &MediaConfig) -> Result<Option<Opened>, MediaError> {
    let Some((source, label)) = audio_source(&cfg.audio)? else {
        return Ok(None);
    };
    // A microphone is cleaned (the far end comes from the playout mixer: see
    // `Receivers::feed_echo_canceller`); the synthetic tone is sent as it is.
    let processing = (matches!(cfg.audio, AudioChoice::Microphone(_))
        && !cfg.audio_processing.is_bypass())
    .then_some(rtcio_media::AudioProcessingConfig {
        apm: cfg.audio_processing,
        render_channels: MIXER_CHANNELS,
    });
    Opened::audio(source, OpusConfig::default(), processing, label).map(Some)
}

/// Opens a monitor for screen sharing. Blocking (on Wayland it waits for the user's choice in
/// the desktop portal's dialog). `display`: an X display (always X11); `None` picks by session:
/// X11 through `$DISPLAY`, on Wayland the desktop portal / PipeWire, where the portal's dialog
/// chooses the monitor.
pub fn open_screen(
    display: Option<String>,
    monitor: Option<String>,
    fps: f32,
) -> Result<Opened, MediaError> {
    let source = rtcio_media::open_screen_source(
        rtcio_media::ScreenConfig {
            display,
            monitor,
            fps,
            ..rtcio_media::ScreenConfig::default()
        },
        rtcio_media::PortalConfig {
            fps,
            ..rtcio_media::PortalConfig::default()
        },
    )?;
    Opened::video(source, h264(fps, true), None, "screen")
}

/// How the app sends: the encoder follows the weakest peer's bandwidth estimate up to the
/// encoder's default (1.5 Mbit/s).
fn send_options() -> SendOptions {
    SendOptions {
        rate: RatePolicy {
            max_bps: H264Config::default().bitrate_bps,
            ..RatePolicy::default()
        },
        follow_estimate: true,
    }
}

/// A stream we send (camera + mic, or a screen), with our camera's self preview and our mic's
/// level for the UI.
pub struct SendStream {
    inner: rtcio_glue::SendStream,
    preview: Option<JoinHandle<()>>,
    level: Option<JoinHandle<()>>,
    /// The picker ids of the camera and microphone sent now (`None`: unknown / the default).
    devices: (Option<String>, Option<String>),
}

/// How often the call's `mic-level` event goes out (the UI's speaking ring follows it).
const MIC_LEVEL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

impl SendStream {
    /// Creates a stream with one track per opened source and starts writing to it. The caller
    /// announces it (an event carrying [`LocalStream::token`]).
    pub fn attach(socket: &Socket, opened: Vec<Opened>) -> SendStream {
        SendStream {
            inner: rtcio_glue::SendStream::attach(socket, opened, send_options()),
            preview: None,
            level: None,
            devices: (None, None),
        }
    }

    /// Emits `mic-level {rms, peak}` (linear 0..1, the start screen's meter event) ten times a
    /// second while the call runs: the UI lights our tile while we speak. Zero while the mic is
    /// off.
    pub fn start_mic_level(&mut self, ui: crate::session::UiSink) {
        let (Some(mut rx), Some(on)) = (
            self.inner.audio_level(),
            self.inner.enabled_flag(MediaKind::Audio),
        ) else {
            return;
        };
        self.level = Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(MIC_LEVEL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let l = if on.load(Ordering::Relaxed) {
                    *rx.borrow_and_update()
                } else {
                    rtcio_media::AudioLevel::default()
                };
                ui(
                    crate::preview::MIC_LEVEL_EVENT,
                    serde_json::json!({"rms": l.rms, "peak": l.peak}),
                );
            }
        }));
    }

    /// The stream (its token goes into the announcing event).
    pub fn stream(&self) -> &LocalStream {
        self.inner.stream()
    }

    /// True when a track of this kind is sent.
    pub fn has(&self, kind: MediaKind) -> bool {
        self.inner.has(kind)
    }

    /// Starts or stops sending one kind (see [`rtcio_glue::SendStream::set_enabled`]).
    pub fn set_enabled(&self, kind: MediaKind, on: bool) {
        self.inner.set_enabled(kind, on)
    }

    /// Whether a kind is being sent.
    pub fn enabled(&self, kind: MediaKind) -> bool {
        self.inner.enabled(kind)
    }

    /// Samples of one kind written to the stream so far (what the toggles stop).
    pub fn samples_written(&self, kind: MediaKind) -> u64 {
        self.inner.samples_written(kind)
    }

    /// A new peer needs an IDR to start decoding: ask now rather than waiting for its PLI.
    pub fn request_keyframe(&self) {
        self.inner.request_keyframe()
    }

    /// Swaps the camera or microphone under the running track (see
    /// [`rtcio_glue::SendStream::replace_source`]) and remembers its picker id.
    pub fn replace_source(
        &mut self,
        source: Replacement,
        label: &str,
        device: &str,
    ) -> Result<(), MediaError> {
        let kind = match source {
            Replacement::Video(_) => MediaKind::Video,
            Replacement::Audio(_) => MediaKind::Audio,
        };
        self.inner.replace_source(source, label)?;
        self.set_device(kind, Some(device.to_string()));
        Ok(())
    }

    /// Failures of the camera / microphone (see [`rtcio_glue::SendStream::source_failures`]).
    pub fn source_failures(
        &self,
        kind: MediaKind,
    ) -> Option<tokio::sync::watch::Receiver<Option<SourceFailure>>> {
        self.inner.source_failures(kind)
    }

    /// The picker id of the device a kind is sent from (`None`: not known, the default).
    pub fn device(&self, kind: MediaKind) -> Option<&str> {
        match kind {
            MediaKind::Video => self.devices.0.as_deref(),
            MediaKind::Audio => self.devices.1.as_deref(),
        }
    }

    /// Records the picker id of the device a kind is sent from.
    pub fn set_device(&mut self, kind: MediaKind, id: Option<String>) {
        match kind {
            MediaKind::Video => self.devices.0 = id,
            MediaKind::Audio => self.devices.1 = id,
        }
    }

    /// Per-track send counters and the encoder's target vs the link's estimate.
    pub fn stats(&mut self) -> Vec<rtcio_glue::TrackSendStats> {
        self.inner.stats()
    }

    /// Sends our video's preview frames to `frames` under `key`, scaled to the tile's size,
    /// while video is enabled.
    fn start_preview(
        &mut self,
        mut rx: tokio::sync::watch::Receiver<Option<Arc<RgbaFrame>>>,
        key: &'static str,
        sizes: TileSizes,
        frames: FrameSink,
    ) {
        let Some(enabled) = self.inner.enabled_flag(MediaKind::Video) else {
            return;
        };
        self.preview = Some(tokio::spawn(async move {
            let mut scaler = Scaler::default();
            while rx.changed().await.is_ok() {
                let Some(frame) = rx.borrow_and_update().clone() else {
                    continue;
                };
                if !enabled.load(Ordering::Relaxed) {
                    continue;
                }
                let bytes = match preview_target((frame.width, frame.height), sizes.get(key)) {
                    None => encode_frame(key, &frame),
                    Some((w, h)) => match scaler.scale_rgba(&frame, w, h) {
                        Ok(scaled) => encode_frame(key, &scaled),
                        Err(e) => {
                            debug!("preview scaling: {e}");
                            continue;
                        }
                    },
                };
                frames(bytes);
            }
        }));
    }

    /// Removes the tracks (receivers see `track-removed`), stops announcing the stream to new
    /// peers, and stops the sources and writers.
    pub fn stop(self, socket: &Socket, remove_tracks: bool) {
        for t in [self.preview, self.level].into_iter().flatten() {
            t.abort();
        }
        self.inner.stop(socket, remove_tracks);
    }
}

/// Opens the sources of `cfg` (off the runtime), each failure reported as a message for the UI
/// instead of an error: joining works without media.
pub async fn open_sources(cfg: &MediaConfig) -> (Vec<Opened>, Vec<String>) {
    let c = cfg.clone();
    let opened = tokio::task::spawn_blocking(move || (open_video(&c), open_audio(&c))).await;
    let mut out = Vec::new();
    let mut problems = Vec::new();
    match opened {
        Ok((video, audio)) => {
            for (what, r) in [("camera", video), ("microphone", audio)] {
                match r {
                    Ok(Some(o)) => out.push(o),
                    Ok(None) => {}
                    Err(e) => {
                        warn!("{what}: {e}");
                        problems.push(device_message(what, &e));
                    }
                }
            }
        }
        Err(e) => problems.push(format!("Opening the devices stopped: {e}")),
    }
    (out, problems)
}

/// Attaches our camera stream and starts its self-preview.
pub fn attach_camera(
    socket: &Socket,
    opened: Vec<Opened>,
    sizes: TileSizes,
    frames: FrameSink,
) -> SendStream {
    let preview = opened.iter().find_map(Opened::preview);
    let mut s = SendStream::attach(socket, opened);
    if let Some(rx) = preview {
        s.start_preview(rx, SELF_PREVIEW_KEY, sizes, frames);
    }
    s
}

// ---------------------------------------------------------------- receiving

/// Whether a remote stream is someone's camera or a screen share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// Camera (+ microphone).
    Camera,
    /// Screen share.
    Screen,
}

impl StreamKind {
    /// `camera` / `screen`, as the UI gets it.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Camera => "camera",
            StreamKind::Screen => "screen",
        }
    }
}

struct Consumer {
    kind: MediaKind,
    thread: Option<ThreadHandle<()>>,
}

struct Incoming {
    peer: String,
    kind: StreamKind,
    stop: Arc<AtomicBool>,
    consumers: HashMap<String, Consumer>,
    /// The stream's lip sync ([`SYNC_KEY`]): its audio thread keeps the audio playout clock
    /// and waits for later video, its video waits for later audio (RTCP sender reports).
    sync: rtcio_glue::LipSync,
}

/// The key of a stream's one entry in its own [`rtcio_glue::LipSync`].
const SYNC_KEY: &str = "av";

/// Output channels of the playout mixer (and so of the echo canceller's far end).
const MIXER_CHANNELS: u16 = 1;

/// Every remote stream being played.
pub struct Receivers {
    sizes: TileSizes,
    frames: FrameSink,
    mixer: Arc<Mutex<AudioMixer>>,
    output: Option<AudioOutput>,
    streams: HashMap<String, Incoming>,
    /// Our microphone's echo canceller input, kept for a speaker switch.
    echo: (
        Option<rtcio_media::RenderTap>,
        Option<rtcio_media::ApmControl>,
    ),
}

impl Receivers {
    /// Starts the audio output (`speaker`; the null sink when it cannot be opened).
    pub fn new(sizes: TileSizes, frames: FrameSink, speaker: OutputDevice) -> Self {
        let mixer = Arc::new(Mutex::new(AudioMixer::new(MIXER_CHANNELS)));
        let output = AudioOutput::start_or_null(mixer.clone(), speaker);
        info!(device = %output.device_name(), null = output.is_null(), "audio output");
        Receivers {
            sizes,
            frames,
            mixer,
            output: Some(output),
            streams: HashMap::new(),
            echo: (None, None),
        }
    }

    /// Gives our microphone's echo canceller what the speaker plays (every mixed frame, as
    /// the output takes it) and tells it whether a speaker exists at all (the null sink has no
    /// echo).
    pub fn feed_echo_canceller(
        &mut self,
        tap: Option<rtcio_media::RenderTap>,
        control: Option<rtcio_media::ApmControl>,
    ) {
        let speaker = self.output.as_ref().is_some_and(|o| !o.is_null());
        self.echo = (tap.clone(), control.clone());
        rtcio_glue::feed_echo_canceller(&self.mixer, speaker, tap, control);
    }

    /// Plays the mixed room audio on another output from now on (the null sink when it cannot
    /// be opened); the streams and the mixer stay. Returns the output's name.
    pub fn set_speaker(&mut self, speaker: OutputDevice) -> String {
        if let Some(mut old) = self.output.take() {
            old.stop();
        }
        let output = AudioOutput::start_or_null(self.mixer.clone(), speaker);
        info!(device = %output.device_name(), null = output.is_null(), "audio output switched");
        let name = output.device_name().to_string();
        self.output = Some(output);
        let (tap, control) = self.echo.clone();
        self.feed_echo_canceller(tap, control);
        name
    }

    /// Each remote person's audio level: the loudest of their tracks' last 20 ms played, in
    /// dBFS (−100 for silence), keyed by their socket id.
    pub fn audio_levels(&self) -> Vec<(String, f64)> {
        let mut out: HashMap<String, f64> = HashMap::new();
        let mut mixer = lock(&self.mixer);
        let ids: Vec<String> = mixer.peers().map(str::to_owned).collect();
        for id in ids {
            // Mixer ids are `<stream key>/<mid>`; the stream knows whose it is.
            let Some((key, _mid)) = id.rsplit_once('/') else {
                continue;
            };
            let Some(person) = self.streams.get(key).map(|s| s.peer.clone()) else {
                continue;
            };
            let Some(remote) = mixer.peer(&id) else {
                continue;
            };
            // rtcio-media's dBFS (−100 for silence): finite, so JSON can carry it.
            let db = f64::from(remote.level().rms_dbfs());
            let e = out.entry(person).or_insert(f64::NEG_INFINITY);
            *e = e.max(db);
        }
        out.into_iter().collect()
    }

    /// True when the stream is already played.
    pub fn has(&self, key: &str) -> bool {
        self.streams.contains_key(key)
    }

    /// Starts playing a remote stream; false if it was already played.
    pub fn add_stream(&mut self, stream: &RemoteStream, kind: StreamKind) -> bool {
        let key = stream_key(stream.peer(), stream.msid());
        if self.streams.contains_key(&key) {
            self.add_tracks(stream);
            return false;
        }
        info!(peer = %stream.peer(), %key, kind = kind.as_str(), "remote stream");
        self.streams.insert(
            key,
            Incoming {
                peer: stream.peer().to_string(),
                kind,
                stop: Arc::new(AtomicBool::new(false)),
                consumers: HashMap::new(),
                sync: Default::default(),
            },
        );
        self.add_tracks(stream);
        true
    }

    /// Starts consumers for tracks of a known stream that have none running (a track added or
    /// re-enabled later).
    pub fn add_tracks(&mut self, stream: &RemoteStream) {
        let key = stream_key(stream.peer(), stream.msid());
        let Some(inc) = self.streams.get_mut(&key) else {
            return;
        };
        for track in stream.tracks() {
            let running = inc
                .consumers
                .get(track.mid())
                .is_some_and(|c| c.thread.as_ref().is_some_and(|t| !t.is_finished()));
            if running {
                continue;
            }
            let mid = track.mid().to_string();
            let kind = track.kind();
            let stop = inc.stop.clone();
            let sync = inc.sync.clone();
            let spawned = match kind {
                MediaKind::Video => {
                    let (k, sizes, frames) = (key.clone(), self.sizes.clone(), self.frames.clone());
                    std::thread::Builder::new()
                        .name("rtcio-recv-video".into())
                        .spawn(move || play_video(track, k, sizes, frames, stop, sync))
                }
                MediaKind::Audio => {
                    let (peer, mixer) = (format!("{key}/{mid}"), self.mixer.clone());
                    std::thread::Builder::new()
                        .name("rtcio-recv-audio".into())
                        .spawn(move || play_audio(track, peer, mixer, stop, sync))
                }
            };
            let thread = spawned
                .map_err(|e| warn!("cannot start a receive thread: {e}"))
                .ok();
            inc.consumers.insert(mid, Consumer { kind, thread });
        }
    }

    /// A track of a stream went away; true when the stream has no video left (its tile's video
    /// ends).
    pub fn track_removed(&mut self, key: &str, mid: &str) -> bool {
        let Some(inc) = self.streams.get_mut(key) else {
            return false;
        };
        // The thread sees the end of its track by itself (recv gives None).
        inc.consumers.remove(mid);
        !inc.consumers.values().any(|c| c.kind == MediaKind::Video)
    }

    /// The kind of a known stream.
    pub fn kind_of(&self, key: &str) -> Option<StreamKind> {
        self.streams.get(key).map(|s| s.kind)
    }

    /// Stops one stream; true if it was played.
    pub fn remove(&mut self, key: &str) -> bool {
        match self.streams.remove(key) {
            Some(inc) => {
                inc.stop.store(true, Ordering::Relaxed);
                self.sizes.forget(key);
                let mut mixer = lock(&self.mixer);
                for mid in inc.consumers.keys() {
                    mixer.remove_peer(&format!("{key}/{mid}"));
                }
                true
            }
            None => false,
        }
    }

    /// Stops every stream of `peer` (of one kind, or all); returns their keys.
    pub fn remove_peer(&mut self, peer: &str, kind: Option<StreamKind>) -> Vec<String> {
        let keys: Vec<String> = self
            .streams
            .iter()
            .filter(|(_, s)| s.peer == peer && kind.is_none_or(|k| s.kind == k))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &keys {
            self.remove(k);
        }
        keys
    }

    /// Stops everything, including the audio output.
    pub fn stop(&mut self) {
        let keys: Vec<String> = self.streams.keys().cloned().collect();
        for k in keys {
            self.remove(&k);
        }
        if let Some(mut out) = self.output.take() {
            out.stop();
        }
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One remote video track: decode, wait for the picture's playout time (jitter smoothing and
/// lip sync with the stream's audio, see `rtcio_glue::playout`), scale to the tile, hand out as
/// a binary frame. Pictures are scaled only when shown: a late or stale one costs nothing more.
fn play_video(
    track: RemoteTrack,
    key: String,
    sizes: TileSizes,
    frames: FrameSink,
    stop: Arc<AtomicBool>,
    sync: rtcio_glue::LipSync,
) {
    let mut video = match rtcio_glue::RemoteVideoPath::new(Default::default()) {
        Ok(v) => v,
        Err(e) => {
            warn!("H.264 decoder: {e}");
            return;
        }
    };
    let mut scaler = RemoteScaler::default();
    let mut show = |pic: rtcio_media::I420Frame| match remote_frame(
        &key,
        &pic,
        sizes.get(&key),
        remote_frame_format(),
        &mut scaler,
    ) {
        Ok(bytes) => frames(bytes),
        Err(e) => debug!("preparing a remote frame: {e}"),
    };
    loop {
        let pic = match rtcio_glue::recv_until(&track, &stop, video.next_due()) {
            rtcio_glue::Recv::Frame(frame) => {
                let sync = rtcio_glue::VideoSync {
                    lipsync: &sync,
                    key: SYNC_KEY,
                    sender_report: track.sender_report(),
                };
                video.on_frame(&frame, &track, Instant::now(), Some(sync))
            }
            rtcio_glue::Recv::Due => video.on_due(Instant::now()),
            rtcio_glue::Recv::Ended => break,
        };
        if let Some(pic) = pic {
            show(pic);
        }
    }
    let st = video.decoder_stats();
    let p = video.playout_stats();
    debug!(%key, mid = %track.mid(), decoded = st.decoded, shown = p.shown,
        shown_late = p.shown_late, freezes = p.freezes.count, "remote video ended");
}

/// One remote audio track into the mixer.
fn play_audio(
    track: RemoteTrack,
    peer: String,
    mixer: Arc<Mutex<AudioMixer>>,
    stop: Arc<AtomicBool>,
    sync: rtcio_glue::LipSync,
) {
    let clock = sync.clock(SYNC_KEY);
    while let Some(frame) = next_frame(&track, &stop) {
        if frame.codec != rtcio::RtpCodec::Opus {
            continue;
        }
        if let Err(e) = lock(&mixer).push(&peer, frame.rtp_timestamp, frame.data, frame.received) {
            warn!("remote audio: {e}");
            break;
        }
        // Where this stream's audio is in time: its video is shown in step with it, and it
        // waits for its video when that is the later one.
        rtcio_glue::note_audio_playout(&clock, &mixer, &peer, frame.rtp_timestamp, frame.received);
        sync.sync_audio(SYNC_KEY, &mixer, &peer, track.sender_report());
    }
    lock(&mixer).remove_peer(&peer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn camera_size_applies_to_cameras_only() {
        let cam = MediaConfig::from_choices(Some("/dev/video0"), None, false)
            .with_camera_size((1920, 1080));
        assert_eq!(cam.capture_size, (1920, 1080));
        let pattern = MediaConfig::from_choices(Some(TEST_PATTERN_ID), None, false)
            .with_camera_size((1920, 1080));
        assert_eq!(pattern.capture_size, (640, 360));
        let faked = MediaConfig::from_choices(Some("/dev/video0"), None, true)
            .with_camera_size((1920, 1080));
        assert_eq!(
            faked.capture_size,
            (640, 360),
            "RTCIO_FAKE_MEDIA swaps in the pattern"
        );
    }

    fn frame(key: &str, n: u8) -> Vec<u8> {
        let f = RgbaFrame {
            width: 2,
            height: 2,
            data: vec![n; 16],
            timestamp: Duration::ZERO,
        };
        encode_frame(key, &f)
    }

    /// The frames of a batch message as `(seq, frames)`.
    fn batch(bytes: &[u8]) -> (u32, Vec<Vec<u8>>) {
        let (seq, frames) = decode_batch(bytes).expect("a well-formed batch");
        (seq, frames.into_iter().map(<[u8]>::to_vec).collect())
    }

    /// The first pixel byte of each frame of a batch (the test frames' `n`).
    fn values(bytes: &[u8]) -> (u32, Vec<u8>) {
        let (seq, frames) = batch(bytes);
        let v = frames
            .iter()
            .map(|f| f[decode_frame_header(f).expect("a frame").offset])
            .collect();
        (seq, v)
    }

    #[test]
    fn a_pull_gets_the_newest_frame_of_each_tile_and_the_next_pull_acknowledges_it() {
        let mut flow = FrameFlow::new();
        // The page asks before any frame exists: the first frame answers it, alone.
        assert!(flow.pull(None).is_none());
        let b0 = flow
            .offer("a", frame("a", 1))
            .expect("answers the waiting pull");
        assert_eq!(values(&b0), (0, vec![1]));
        assert_eq!((flow.held(), flow.in_flight("a")), (Some(0), 1));
        // While the page paints, frames wait here, the newest of each tile only.
        assert!(flow.offer("a", frame("a", 2)).is_none());
        assert!(flow.offer("a", frame("a", 3)).is_none());
        assert!(flow.offer("b", frame("b", 9)).is_none());
        assert_eq!(flow.waiting(), 2, "one frame per tile waits, never a queue");
        // The next pull acknowledges batch 0 and gets everything waiting in one reply.
        let b1 = flow.pull(Some(0)).expect("frames wait");
        assert_eq!(values(&b1), (1, vec![3, 9]));
        assert_eq!(flow.waiting(), 0);
        // Nothing waits: the pull waits for the next frame.
        assert!(flow.pull(Some(1)).is_none());
        assert_eq!(flow.held(), None);
        let b2 = flow
            .offer("c", frame("c", 5))
            .expect("answers the waiting pull");
        assert_eq!(values(&b2), (2, vec![5]));
        // A pull naming another batch (a reloaded page): the held one counts as lost.
        assert!(flow.offer("c", frame("c", 6)).is_none());
        assert_eq!(
            values(&flow.pull(None).expect("a frame waits")),
            (3, vec![6])
        );
        // An empty reply (the pull timed out) is not held and not acknowledged.
        assert!(flow.pull(Some(3)).is_none());
        flow.withdraw();
        assert!(
            flow.offer("a", frame("a", 7)).is_none(),
            "no pull waits now"
        );
        assert_eq!(
            values(&flow.pull(Some(EMPTY_BATCH_SEQ)).unwrap()),
            (4, vec![7])
        );
        let s = flow.stats();
        assert_eq!(
            (s.sent, s.acked, s.replaced, s.lost, s.batches, s.batch_acks),
            (6, 4, 1, 1, 5, 3)
        );
        assert_eq!((s.pulls, s.empty), (6, 1));
        // A malformed or truncated batch is not read; the empty one is.
        assert!(decode_batch(&b1[..b1.len() - 1]).is_none());
        assert!(decode_batch(&[BATCH_VERSION, 0, 9, 0, 0, 0, 0, 0]).is_none());
        assert!(decode_batch(&[1; 20]).is_none());
        assert_eq!(batch(&empty_batch()), (EMPTY_BATCH_SEQ, vec![]));
    }

    /// Four tiles at 30 fps each for 3 s, staggered, and a page that pulls, paints for
    /// `rtt_ms` (IPC both ways included) and pulls again: (pulls, frames painted per tile, the
    /// last value painted per tile). Asserts on the way that a batch goes only to a page that
    /// waits for one (it never holds two) and that at most one frame per tile waits.
    fn simulate(rtt_ms: u64) -> (u64, HashMap<&'static str, u32>, HashMap<&'static str, u8>) {
        let mut flow = FrameFlow::new();
        let keys = ["p1/a", "p2/a", "p3/a", "p4/a"];
        let mut painted: HashMap<&'static str, u32> = HashMap::new();
        let mut last: HashMap<&'static str, u8> = HashMap::new();
        // (when the page is done with it, the batch) it holds; None: its pull waits.
        let mut holding: Option<(u64, Vec<u8>)> = None;
        assert!(flow.pull(None).is_none());
        // 1 ms steps: tile i offers frame n at n × 33 ms + i × 8 ms; then 300 ms without.
        for now in 0..3300u64 {
            if let Some((_, b)) = holding.take_if(|(done, _)| *done <= now) {
                let (seq, frames) = decode_batch(&b).expect("a batch");
                for f in frames {
                    let k = frame_key(f).expect("a key");
                    let key = keys.iter().find(|x| **x == k).expect("a tile");
                    *painted.entry(*key).or_default() += 1;
                    last.insert(*key, f[decode_frame_header(f).expect("a frame").offset]);
                }
                holding = flow.pull(Some(seq)).map(|b| (now + rtt_ms, b));
            }
            for (i, key) in keys.iter().enumerate() {
                let t = now.wrapping_sub(i as u64 * 8);
                if now >= i as u64 * 8
                    && t.is_multiple_of(33)
                    && t / 33 <= 90
                    && let Some(b) = flow.offer(key, frame(key, (t / 33) as u8))
                {
                    assert!(holding.is_none(), "a second batch to a page holding one");
                    holding = Some((now + rtt_ms, b));
                }
            }
            assert!(flow.waiting() <= keys.len());
            assert!(keys.iter().all(|k| flow.in_flight(k) <= 1));
        }
        (flow.stats().pulls, painted, last)
    }

    /// A slow page (50 ms per batch, as with four remotes on the loaded 2-core machine) gets
    /// several tiles per reply, so fewer IPC messages (2 per pull) than frames painted, every
    /// tile gets frames and paints the newest in the end (late ones replaced, not queued); a
    /// quick one (5 ms) paints nearly every frame.
    #[test]
    fn a_slow_page_gets_several_tiles_per_pull_and_the_newest_frames() {
        // 5 ms: one pull per frame, plus the last one still waiting.
        for (rtt, max_ipc_per_frame, min_painted) in [(50, 0.6, 50), (5, 2.05, 88)] {
            let (pulls, painted, last) = simulate(rtt);
            let frames: u32 = painted.values().sum();
            let ipc = 2.0 * pulls as f64 / f64::from(frames);
            eprintln!("{rtt} ms: {pulls} pulls, {painted:?}, {ipc:.2} IPC messages per frame");
            assert!(ipc <= max_ipc_per_frame, "{rtt} ms: {ipc:.2} per frame");
            assert_eq!(painted.len(), 4);
            for (key, n) in &painted {
                assert!(*n >= min_painted, "{rtt} ms, {key}: {n} of 91 frames");
                assert_eq!(last[key], 90, "{key}: the newest frame is painted last");
            }
        }
    }

    /// Lets spawned tasks run until `done` holds (bounded).
    async fn until(done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("never happened");
    }

    #[tokio::test]
    async fn the_gate_answers_a_waiting_pull_with_the_next_frame() {
        let gate = FrameGate::new();
        let sink = gate.sink();
        let parked = |g: &FrameGate| lock(&g.state).parked.is_some();
        // A pull with nothing waiting waits for the next frame.
        let g = gate.clone();
        let first = tokio::spawn(async move { g.pull(None, PULL_WAIT).await });
        until(|| parked(&gate)).await;
        sink(frame("a", 1));
        assert_eq!(values(&first.await.expect("the pull")), (0, vec![1]));
        // A frame without a readable key is dropped.
        sink(vec![1, 2, 3]);
        // Frames that came first are the reply at once.
        sink(frame("a", 2));
        sink(frame("b", 3));
        assert_eq!(
            values(&gate.pull(Some(0), PULL_WAIT).await),
            (1, vec![2, 3])
        );
        // Nothing within the wait: an empty reply, and the next frame waits for a pull.
        let empty = gate.pull(Some(1), Duration::from_millis(20)).await;
        assert_eq!(batch(&empty), (EMPTY_BATCH_SEQ, vec![]));
        assert!(!parked(&gate));
        sink(frame("a", 4));
        assert_eq!(values(&gate.pull(None, PULL_WAIT).await), (2, vec![4]));
        // A second pull while one waits (a reloaded page) answers the first one empty.
        let g = gate.clone();
        let old = tokio::spawn(async move { g.pull(Some(2), PULL_WAIT).await });
        until(|| parked(&gate)).await;
        let g = gate.clone();
        let new = tokio::spawn(async move { g.pull(None, PULL_WAIT).await });
        let old = old.await.expect("the old pull");
        assert_eq!(batch(&old).1.len(), 0);
        until(|| parked(&gate)).await;
        sink(frame("c", 5));
        assert_eq!(values(&new.await.expect("the new pull")), (3, vec![5]));
        let s = gate.stats();
        assert_eq!(
            (s.pulls, s.batches, s.empty, s.acked, s.lost),
            (6, 4, 2, 4, 0)
        );
    }

    #[test]
    fn frame_header_round_trip() {
        let frame = RgbaFrame {
            width: 4,
            height: 2,
            data: vec![7; 32],
            timestamp: Duration::ZERO,
        };
        let bytes = encode_frame("peer/ms1", &frame);
        let h = decode_frame_header(&bytes).expect("valid");
        assert_eq!(h.key, "peer/ms1");
        assert_eq!(h.format, FrameFormat::Rgba);
        assert_eq!((h.width, h.height), (4, 2));
        assert_eq!(&bytes[h.offset..], &frame.data[..]);
        assert!(decode_frame_header(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode_frame_header(&[2; 20]).is_none());
        assert!(decode_frame_header(&[1, 0, 200, 0]).is_none());
    }

    /// A 6×10 picture (chroma 3×5: odd rows of odd length) with padded strides, as a decoder
    /// hands it out: the frame carries each plane's rows without the padding, in order.
    #[test]
    fn i420_frame_packs_planes_without_stride_padding() {
        let (w, h) = (6usize, 10usize);
        let (sy, sc) = (16usize, 8usize);
        // Every byte says where it is: plane base + row × 16 + column; 0xEE is padding.
        let plane = |base: u8, stride: usize, pw: usize, ph: usize| -> Vec<u8> {
            (0..stride * ph)
                .map(|i| {
                    let (r, c) = (i / stride, i % stride);
                    if c < pw {
                        base + (r * 16 + c) as u8
                    } else {
                        0xEE
                    }
                })
                .collect()
        };
        let frame = rtcio_media::I420Frame::from_planes(
            w as u32,
            h as u32,
            plane(0, sy, w, h),
            plane(0x40, sc, 3, 5),
            plane(0x80, sc, 3, 5),
            (sy, sc, sc),
            Duration::ZERO,
        )
        .expect("a valid frame");
        let bytes = encode_i420_frame("p/m", &frame).expect("packed");
        let hd = decode_frame_header(&bytes).expect("a readable header");
        assert_eq!(hd.format, FrameFormat::I420);
        assert_eq!((hd.key.as_str(), hd.width, hd.height), ("p/m", 6, 10));
        let px = &bytes[hd.offset..];
        assert_eq!(px.len(), 6 * 10 + 2 * 3 * 5, "1.5 bytes per pixel");
        assert!(!px.contains(&0xEE), "no stride padding sent");
        let (y, rest) = px.split_at(60);
        let (u, v) = rest.split_at(15);
        assert_eq!(&y[..6], &[0, 1, 2, 3, 4, 5]);
        assert_eq!(&y[6..12], &[16, 17, 18, 19, 20, 21]);
        assert_eq!(y[59], 9 * 16 + 5);
        assert_eq!(
            u,
            &[
                0x40, 0x41, 0x42, 0x50, 0x51, 0x52, 0x60, 0x61, 0x62, 0x70, 0x71, 0x72, 0x80, 0x81,
                0x82
            ]
        );
        assert_eq!(v[0], 0x80);
        assert_eq!(v[14], 0x80 + 4 * 16 + 2);
        // Planes shorter than their strides say: refused, not a panic.
        let mut short = frame.clone();
        short.v.truncate(10);
        assert!(encode_i420_frame("p/m", &short).is_none());
        // A truncated or longer buffer, or an unknown format tag, is not a frame.
        assert!(decode_frame_header(&bytes[..bytes.len() - 1]).is_none());
        let mut odd = bytes.clone();
        odd[1] = 7;
        assert!(decode_frame_header(&odd).is_none());
        // Odd sizes (another sender's) round the chroma planes up.
        assert_eq!(FrameFormat::I420.payload_len(5, 3), Some(15 + 2 * 3 * 2));
        assert_eq!(FrameFormat::Rgba.payload_len(5, 3), Some(60));
    }

    #[test]
    fn remote_frames_follow_the_page_format_and_come_at_the_tile_size() {
        let pic = rtcio_media::I420Frame::black(1280, 720).expect("frame");
        let mut scaler = RemoteScaler::default();
        let size = |b: &[u8]| {
            let h = decode_frame_header(b).expect("frame");
            (h.format, h.width, h.height, b.len() - h.offset)
        };
        // A 2 × 2 grid cell of a 1280 × 720 window: a quarter of the pixels, 1.5 bytes each.
        let f = remote_frame("k", &pic, (640, 360), FrameFormat::I420, &mut scaler).unwrap();
        assert_eq!(size(&f), (FrameFormat::I420, 640, 360, 640 * 360 * 3 / 2));
        let f = remote_frame("k", &pic, (400, 250), FrameFormat::I420, &mut scaler).unwrap();
        assert_eq!(size(&f), (FrameFormat::I420, 400, 224, 400 * 224 * 3 / 2));
        // Any tile smaller than the picture gets its own size; a bigger one the picture.
        let f = remote_frame("k", &pic, (960, 540), FrameFormat::I420, &mut scaler).unwrap();
        assert_eq!(size(&f), (FrameFormat::I420, 960, 540, 960 * 540 * 3 / 2));
        let f = remote_frame("k", &pic, (1280, 720), FrameFormat::I420, &mut scaler).unwrap();
        assert_eq!(size(&f), (FrameFormat::I420, 1280, 720, 1280 * 720 * 3 / 2));
        assert_eq!(i420_scale_target((1280, 720), (3840, 2160)), None);
        assert_eq!(i420_scale_target((1280, 720), (1280, 720)), None);
        // RGBA: scaled to the tile, never above the picture.
        let f = remote_frame("k", &pic, (960, 540), FrameFormat::Rgba, &mut scaler).unwrap();
        assert_eq!(size(&f), (FrameFormat::Rgba, 960, 540, 960 * 540 * 4));
        let f = remote_frame("k", &pic, (3840, 2160), FrameFormat::Rgba, &mut scaler).unwrap();
        assert_eq!(size(&f), (FrameFormat::Rgba, 1280, 720, 1280 * 720 * 4));
    }

    /// A decoder's picture (rows padded to a wider stride, the padding 0xEE) scaled into the
    /// frame buffer: the padding never shows, flat planes stay flat, a horizontal ramp halves
    /// as the 2 × 2 average; a too short plane is an error, not a panic.
    #[test]
    fn i420_scaled_into_the_frame_reads_padded_rows() {
        let (w, h, sy, sc) = (64usize, 32usize, 80usize, 48usize);
        let y: Vec<u8> = (0..sy * h)
            .map(|i| if i % sy < w { (i % sy) as u8 * 2 } else { 0xEE })
            .collect();
        let flat = |v: u8| -> Vec<u8> {
            (0..sc * h / 2)
                .map(|i| if i % sc < w / 2 { v } else { 0xEE })
                .collect()
        };
        let pic = rtcio_media::I420Frame::from_planes(
            w as u32,
            h as u32,
            y,
            flat(60),
            flat(200),
            (sy, sc, sc),
            Duration::ZERO,
        )
        .expect("a valid frame");
        let mut r = fast_image_resize::Resizer::new();
        let bytes = encode_i420_scaled("p/m", &pic, (32, 16), &mut r).expect("scaled");
        let hd = decode_frame_header(&bytes).expect("a readable frame");
        assert_eq!(
            (hd.format, hd.width, hd.height),
            (FrameFormat::I420, 32, 16)
        );
        let px = &bytes[hd.offset..];
        let (yp, uv) = px.split_at(32 * 16);
        assert!(uv[..16 * 8].iter().all(|&b| b == 60), "U stays flat");
        assert!(uv[16 * 8..].iter().all(|&b| b == 200), "V stays flat");
        for row in yp.chunks(32) {
            for (j, &b) in row.iter().enumerate() {
                // Source columns 2j and 2j+1 hold 4j and 4j+2: their average is 4j+1.
                assert!(
                    (i32::from(b) - (4 * j as i32 + 1)).abs() <= 1,
                    "col {j}: {b}"
                );
            }
        }
        // Not quite 2×: bilinear, still no padding.
        let bytes = encode_i420_scaled("p/m", &pic, (50, 24), &mut r).expect("scaled");
        let hd = decode_frame_header(&bytes).expect("a readable frame");
        assert!(!bytes[hd.offset..].contains(&0xEE));
        let mut short = pic.clone();
        short.v.truncate(10);
        assert!(encode_i420_scaled("p/m", &short, (32, 16), &mut r).is_err());
        assert!(
            encode_i420_scaled("p/m", &pic, (128, 64), &mut r).is_err(),
            "never up"
        );
    }

    /// A picture with odd strides, each row padded with 0xEE and each plane's last row cut at
    /// the picture's edge (as a decoder may hand it), filled with pseudo-random bytes.
    fn padded_picture(w: usize, h: usize, (sy, sc): (usize, usize)) -> rtcio_media::I420Frame {
        let mut seed = 0x2545_f491_u32;
        let mut plane = |pw: usize, ph: usize, stride: usize| -> Vec<u8> {
            (0..stride * (ph - 1) + pw)
                .map(|i| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    if i % stride < pw {
                        (seed >> 24) as u8
                    } else {
                        0xEE
                    }
                })
                .collect()
        };
        rtcio_media::I420Frame {
            width: w as u32,
            height: h as u32,
            y: plane(w, h, sy),
            u: plane(w / 2, h / 2, sc),
            v: plane(w / 2, h / 2, sc),
            stride_y: sy,
            stride_u: sc,
            stride_v: sc,
            timestamp: Duration::ZERO,
        }
    }

    /// The 2 × 2 average, rounded half up, of a `pw × ph` plane with rows `stride` apart.
    fn reference_half(src: &[u8], stride: usize, pw: usize, ph: usize) -> Vec<u8> {
        let at = |x: usize, y: usize| u32::from(src[y * stride + x]);
        let mut out = Vec::new();
        for y in (0..ph).step_by(2) {
            for x in (0..pw).step_by(2) {
                let sum = at(x, y) + at(x + 1, y) + at(x, y + 1) + at(x + 1, y + 1);
                out.push(((sum + 2) / 4) as u8);
            }
        }
        out
    }

    /// Exactly half the picture: every plane is the 2 × 2 average rounded half up, read from
    /// odd strides with padding and a cut last row; fast_image_resize's box filter (the other
    /// path) agrees within 1. Any other size goes through the resizer, byte for byte; bad
    /// input is an error, never a panic.
    #[test]
    fn i420_exact_half_is_the_2x2_average() {
        let mut r = fast_image_resize::Resizer::new();
        for (w, h, strides) in [
            (64, 32, (71, 37)),
            (68, 36, (68, 34)),
            (1280, 720, (1344, 673)),
        ] {
            let pic = padded_picture(w, h, strides);
            let bytes = encode_i420_scaled("p/m", &pic, (w as u32 / 2, h as u32 / 2), &mut r)
                .expect("halved");
            let hd = decode_frame_header(&bytes).expect("a frame");
            assert_eq!((hd.width, hd.height), (w as u32 / 2, h as u32 / 2));
            let mut want = reference_half(&pic.y, pic.stride_y, w, h);
            want.extend(reference_half(&pic.u, pic.stride_u, w / 2, h / 2));
            want.extend(reference_half(&pic.v, pic.stride_v, w / 2, h / 2));
            assert_eq!(&bytes[hd.offset..], &want[..], "{w}x{h}");
            let resized =
                encode_i420_resized("p/m", &pic, (w as u32 / 2, h as u32 / 2), &mut r).unwrap();
            assert_eq!(resized.len(), bytes.len());
            let worst = resized[hd.offset..]
                .iter()
                .zip(&bytes[hd.offset..])
                .map(|(&a, &b)| (i16::from(a) - i16::from(b)).abs())
                .max();
            assert!(worst <= Some(1), "box filter vs 2x2 average: {worst:?}");
        }
        let pic = padded_picture(64, 32, (71, 37));
        // The pixels of a frame (its header holds the time it was made).
        let pixels = |b: Vec<u8>| {
            let offset = decode_frame_header(&b).expect("a frame").offset;
            b[offset..].to_vec()
        };
        // Not exactly half or a quarter (one dimension only, or another ratio): the resizer's.
        for size in [(32, 20), (40, 16), (24, 12), (50, 24)] {
            assert_eq!(
                pixels(encode_i420_scaled("p/m", &pic, size, &mut r).unwrap()),
                pixels(encode_i420_resized("p/m", &pic, size, &mut r).unwrap()),
                "{size:?}"
            );
        }
        // An odd target rounds down to even as before: 33 × 17 is 32 × 16, the half.
        assert_eq!(
            pixels(encode_i420_scaled("p/m", &pic, (33, 17), &mut r).unwrap()),
            pixels(encode_i420_scaled("p/m", &pic, (32, 16), &mut r).unwrap())
        );
        // Short planes, a stride narrower than the picture, a target too small or too large.
        for cut in [0, 1, 2] {
            let mut short = pic.clone();
            match cut {
                0 => short.y.truncate(71 * 31 + 63),
                1 => short.u.truncate(37 * 15),
                _ => short.v.clear(),
            }
            assert!(encode_i420_scaled("p/m", &short, (32, 16), &mut r).is_err());
        }
        let mut narrow = pic.clone();
        narrow.stride_y = 63;
        assert!(encode_i420_scaled("p/m", &narrow, (32, 16), &mut r).is_err());
        assert!(encode_i420_scaled("p/m", &pic, (1, 1), &mut r).is_err());
        assert!(encode_i420_scaled("p/m", &pic, (128, 64), &mut r).is_err());
        // The plane halver alone: odd sizes and short buffers are refused.
        let mut dst = [0u8; 4];
        assert!(!halve_plane(&[0; 12], 3, (3, 4), &mut dst));
        assert!(!halve_plane(&[0; 12], 4, (4, 3), &mut dst));
        assert!(!halve_plane(&[0; 7], 4, (4, 2), &mut dst));
        assert!(!halve_plane(&[0; 16], 4, (4, 4), &mut dst[..3]));
        assert!(halve_plane(&[8; 16], 4, (4, 4), &mut dst));
        assert_eq!(dst, [8; 4]);
    }

    /// Tiles within 8 % of exactly half or a quarter of the picture get that exact size (the
    /// cheap block average, the picture's aspect); others their own fitted size; a tile at
    /// least as big as the picture gets the picture.
    #[test]
    fn tiles_near_an_exact_half_or_quarter_get_it() {
        let fit =
            |p: (u32, u32), t: (u32, u32)| rtcio_media::convert::fit_within(p.0, p.1, t.0, t.1);
        // (picture, tile, the exact size it gets, or None: the tile's own fitted size).
        for (picture, tile, exact) in [
            // A gapped grid's cells a few pixels off the half, either side, up to 8 %.
            ((1280, 720), (626, 352), Some((640, 360))),
            ((1280, 720), (630, 354), Some((640, 360))),
            ((1280, 720), (640, 360), Some((640, 360))),
            ((1280, 720), (660, 372), Some((640, 360))),
            ((1280, 720), (600, 338), Some((640, 360))),
            ((1280, 720), (690, 388), Some((640, 360))),
            // Strip thumbnails near a quarter.
            ((1280, 720), (320, 180), Some((320, 180))),
            ((1280, 720), (300, 170), Some((320, 180))),
            ((1280, 720), (340, 190), Some((320, 180))),
            ((640, 480), (312, 236), Some((320, 240))),
            // Far from both: 590 × 330 fits (8.3 % under 360), a 1280 × 720 window's 2 × 2
            // cells, the IPC bench's 3 + 2 cells, a large tile, a small one.
            ((1280, 720), (590, 400), None),
            ((1280, 720), (560, 315), None),
            ((1280, 720), (413, 232), None),
            ((1280, 720), (700, 394), None),
            ((1280, 720), (960, 540), None),
            ((1280, 720), (280, 158), None),
            // A tile of another aspect: what counts is the picture fitted in it (630 × 354).
            ((1280, 720), (630, 1000), Some((640, 360))),
            ((1280, 720), (1000, 354), Some((640, 360))),
            // The exact sizes only when whole and even: sides divisible by 4 for the half...
            ((1278, 718), (636, 358), None),
            ((641, 361), (316, 178), None),
            ((1276, 716), (636, 356), Some((638, 358))),
            // ... and by 8 for the quarter.
            ((1276, 716), (318, 178), None),
            ((1272, 712), (318, 178), Some((318, 178))),
            ((1272, 712), (310, 174), Some((318, 178))),
        ] {
            let got = i420_scale_target(picture, tile);
            match exact {
                Some(size) => {
                    assert_eq!(got, Some(size), "{picture:?} in {tile:?}");
                    let d = picture.0 / size.0;
                    assert_eq!((size.0 * d, size.1 * d), picture, "the picture's aspect");
                }
                None => assert_eq!(got, Some(fit(picture, tile)), "{picture:?} in {tile:?}"),
            }
        }
        // Not smaller than the picture: sent as decoded.
        assert_eq!(i420_scale_target((1280, 720), (1280, 720)), None);
        assert_eq!(i420_scale_target((1280, 720), (3840, 2160)), None);
        // A tiny tile of a tiny picture stays at least 2 × 2.
        assert_eq!(i420_scale_target((8, 8), (1, 1)), Some((2, 2)));
        // What the rule picks is what the page gets, made by the exact path.
        let pic = padded_picture(1280, 720, (1344, 673));
        let mut r = fast_image_resize::Resizer::new();
        let mut scaler = RemoteScaler::default();
        for (tile, size) in [((630, 354), (640, 360)), ((330, 186), (320, 180))] {
            let f = remote_frame("k", &pic, tile, FrameFormat::I420, &mut scaler).unwrap();
            let h = decode_frame_header(&f).expect("frame");
            assert_eq!((h.width, h.height), size);
            let exact = encode_i420_scaled("k", &pic, size, &mut r).unwrap();
            assert_eq!(f[h.offset..], exact[h.offset..]);
        }
    }

    /// Our preview goes unscaled into tiles at least as big or a few % smaller; smaller
    /// tiles get it scaled to their own size.
    #[test]
    fn preview_is_scaled_only_for_tiles_well_under_it() {
        let p = (640, 360);
        assert_eq!(preview_target(p, (640, 360)), None);
        assert_eq!(preview_target(p, (1920, 1080)), None);
        assert_eq!(preview_target(p, (626, 352)), None);
        assert_eq!(preview_target(p, (596, 336)), None);
        assert_eq!(preview_target(p, (560, 400)), Some((560, 314)));
        assert_eq!(preview_target(p, (376, 212)), Some((376, 210)));
        // Near in one dimension only (a tall tile): scaled.
        assert_eq!(preview_target(p, (400, 1000)), Some((400, 224)));
    }

    /// Exactly a quarter: every plane is the 4 × 4 average rounded half up (odd strides,
    /// padding, cut last rows, widths with and without a block tail); the resizer's box filter
    /// agrees within 1; bad input is refused.
    #[test]
    fn i420_exact_quarter_is_the_4x4_average() {
        let reference = |src: &[u8], stride: usize, pw: usize, ph: usize| -> Vec<u8> {
            let mut out = Vec::new();
            for y in (0..ph).step_by(4) {
                for x in (0..pw).step_by(4) {
                    let mut sum = 8u32;
                    for dy in 0..4 {
                        for dx in 0..4 {
                            sum += u32::from(src[(y + dy) * stride + x + dx]);
                        }
                    }
                    out.push((sum / 16) as u8);
                }
            }
            out
        };
        let mut r = fast_image_resize::Resizer::new();
        for (w, h, strides) in [
            (64, 32, (71, 37)),
            (136, 72, (136, 68)),
            (1280, 720, (1344, 673)),
        ] {
            let pic = padded_picture(w, h, strides);
            let size = (w as u32 / 4, h as u32 / 4);
            let bytes = encode_i420_scaled("p/m", &pic, size, &mut r).expect("quartered");
            let hd = decode_frame_header(&bytes).expect("a frame");
            assert_eq!((hd.width, hd.height), size);
            let mut want = reference(&pic.y, pic.stride_y, w, h);
            want.extend(reference(&pic.u, pic.stride_u, w / 2, h / 2));
            want.extend(reference(&pic.v, pic.stride_v, w / 2, h / 2));
            assert_eq!(&bytes[hd.offset..], &want[..], "{w}x{h}");
            let resized = encode_i420_resized("p/m", &pic, size, &mut r).unwrap();
            let worst = resized[hd.offset..]
                .iter()
                .zip(&bytes[hd.offset..])
                .map(|(&a, &b)| (i16::from(a) - i16::from(b)).abs())
                .max();
            assert!(worst <= Some(1), "box filter vs 4x4 average: {worst:?}");
        }
        let mut dst = [0u8; 4];
        assert!(
            !quarter_plane(&[0; 32], 6, (6, 4), &mut dst),
            "width not a multiple of 4"
        );
        assert!(
            !quarter_plane(&[0; 48], 8, (8, 6), &mut dst),
            "height not a multiple of 4"
        );
        assert!(
            !quarter_plane(&[0; 31], 8, (8, 4), &mut dst[..2]),
            "short source"
        );
        assert!(
            !quarter_plane(&[0; 64], 8, (8, 8), &mut dst[..3]),
            "short destination"
        );
        assert!(
            !quarter_plane(&[0; 64], 7, (8, 8), &mut dst),
            "stride under the width"
        );
        let ramp: Vec<u8> = (0..64).map(|i| (i % 8) as u8 * 16).collect();
        assert!(quarter_plane(&ramp, 8, (8, 8), &mut dst));
        // Columns 0-3 hold 0, 16, 32, 48 (mean 24); columns 4-7 64..112 (mean 88).
        assert_eq!(dst, [24, 88, 24, 88]);
    }

    #[test]
    fn choices_and_fake_media() {
        let c = MediaConfig::from_choices(Some("/dev/video0"), Some("hw:0"), false);
        assert_eq!(c.video, VideoChoice::Camera(Some("/dev/video0".into())));
        assert_eq!(c.audio, AudioChoice::Microphone(Some("hw:0".into())));
        let c = MediaConfig::from_choices(Some("/dev/video0"), Some("hw:0"), true);
        assert_eq!(c.video, VideoChoice::TestPattern);
        assert_eq!(c.audio, AudioChoice::Tone);
        assert_eq!(c.speaker, OutputDevice::Null);
        let c = MediaConfig::from_choices(Some(TEST_PATTERN_ID), None, false);
        assert_eq!(c.video, VideoChoice::TestPattern);
        assert_eq!(c.audio, AudioChoice::Off);
        let c = MediaConfig::from_choices(None, Some(TONE_ID), false);
        assert_eq!(c.video, VideoChoice::Off);
        assert_eq!(c.audio, AudioChoice::Tone);
    }

    #[test]
    fn tile_sizes_default_and_clamp() {
        let s = TileSizes::default();
        assert_eq!(s.get("x"), DEFAULT_TILE);
        s.set("x", 0, 100_000);
        assert_eq!(s.get("x"), (2, MAX_TILE.1));
    }

    #[test]
    fn speaker_ids_name_outputs() {
        assert_eq!(output_device(None, false), OutputDevice::Default);
        assert_eq!(output_device(Some(""), false), OutputDevice::Default);
        assert_eq!(output_device(None, true), OutputDevice::Null);
        assert_eq!(output_device(Some(SILENT_ID), false), OutputDevice::Null);
        assert_eq!(
            output_device(Some("hw:1,0"), true),
            OutputDevice::Id("hw:1,0".into())
        );
    }

    #[test]
    fn missing_camera_gives_a_message_not_a_panic() {
        let cfg = MediaConfig {
            video: VideoChoice::Camera(Some("/dev/no-such-camera".into())),
            ..MediaConfig::default()
        };
        let e = open_video(&cfg).err().expect("no such camera");
        let msg = device_message("camera", &e);
        assert!(msg.contains("camera"), "{msg}");
    }

    #[test]
    fn speaker_switch_plays_the_same_mixer_on_the_new_output() {
        let mut rx = Receivers::new(TileSizes::default(), Arc::new(|_| {}), OutputDevice::Null);
        let mixer = rx.mixer.clone();
        let name = rx.set_speaker(OutputDevice::Id("no-such-speaker".into()));
        assert!(!name.is_empty());
        let out = rx.output.as_ref().expect("an output");
        assert!(
            out.is_null(),
            "an unknown speaker falls back to the null sink"
        );
        assert!(
            out.wait_for_frames(5, Duration::from_secs(2)),
            "the new output pulls from the mixer"
        );
        assert!(
            Arc::ptr_eq(&mixer, &rx.mixer),
            "same mixer, same remote streams"
        );
    }

    #[test]
    fn synthetic_ids_open_as_replacements_and_unplug() {
        let (r, label) = open_replacement(MediaKind::Video, TEST_PATTERN_GREEN_ID, false)
            .expect("green pattern");
        assert_eq!(label, "test pattern (green)");
        let Replacement::Video(mut v) = r else {
            panic!("a video source")
        };
        assert!(v.next_frame().is_ok());
        assert!(unplug_synthetic(MediaKind::Video));
        assert!(matches!(v.next_frame(), Err(MediaError::Device { .. })));
        let (r, _) = open_replacement(MediaKind::Audio, TONE_ID, false).expect("tone");
        assert!(matches!(r, Replacement::Audio(_)));
        assert_eq!(
            device_ids(&MediaConfig::from_choices(
                Some(TEST_PATTERN_GREEN_ID),
                Some(TONE_ID),
                false
            )),
            (Some(TEST_PATTERN_GREEN_ID.into()), Some(TONE_ID.into()))
        );
    }
}
