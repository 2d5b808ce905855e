//! Raw and encoded frame types shared by every stage of the engine.

use std::time::Duration;

use bytes::Bytes;

use crate::error::{MediaError, Result};

/// RTP clock rate of video (H.264) timestamps.
pub const VIDEO_CLOCK_RATE: u32 = 90_000;
/// Sample rate of everything after capture: Opus, the mixer and playout run at 48 kHz.
pub const AUDIO_SAMPLE_RATE: u32 = 48_000;
/// Samples per channel in one 20 ms audio frame at 48 kHz.
pub const AUDIO_FRAME_SAMPLES: usize = 960;
/// Duration of one audio frame (Opus packet) on the wire.
pub const AUDIO_FRAME_DURATION: Duration = Duration::from_millis(20);

/// A planar YUV 4:2:0 (I420) picture, BT.601 limited range.
///
/// Width and height are even. Planes are row-major with the given strides (bytes per row); frames
/// made by this crate are tightly packed (`stride_y == width`, `stride_u == stride_v == width / 2`).
#[derive(Clone, PartialEq, Eq)]
pub struct I420Frame {
    /// Picture width in pixels (even).
    pub width: u32,
    /// Picture height in pixels (even).
    pub height: u32,
    /// Luma plane, `stride_y * height` bytes.
    pub y: Vec<u8>,
    /// Cb plane, `stride_u * height / 2` bytes.
    pub u: Vec<u8>,
    /// Cr plane, `stride_v * height / 2` bytes.
    pub v: Vec<u8>,
    /// Bytes per luma row.
    pub stride_y: usize,
    /// Bytes per Cb row.
    pub stride_u: usize,
    /// Bytes per Cr row.
    pub stride_v: usize,
    /// Media time of the picture, from the start of its source (capture side) or from the first
    /// received RTP timestamp (receive side).
    pub timestamp: Duration,
}

impl std::fmt::Debug for I420Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I420Frame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

impl I420Frame {
    /// A black, tightly packed frame. Errors on zero or odd dimensions.
    pub fn black(width: u32, height: u32) -> Result<Self> {
        check_dimensions(width, height)?;
        let (w, h) = (width as usize, height as usize);
        Ok(Self {
            width,
            height,
            y: vec![16; w * h],
            u: vec![128; w / 2 * (h / 2)],
            v: vec![128; w / 2 * (h / 2)],
            stride_y: w,
            stride_u: w / 2,
            stride_v: w / 2,
            timestamp: Duration::ZERO,
        })
    }

    /// Builds a frame from planes and strides, checking that every plane is large enough.
    #[allow(clippy::too_many_arguments)]
    pub fn from_planes(
        width: u32,
        height: u32,
        y: Vec<u8>,
        u: Vec<u8>,
        v: Vec<u8>,
        strides: (usize, usize, usize),
        timestamp: Duration,
    ) -> Result<Self> {
        check_dimensions(width, height)?;
        let frame = Self {
            width,
            height,
            y,
            u,
            v,
            stride_y: strides.0,
            stride_u: strides.1,
            stride_v: strides.2,
            timestamp,
        };
        frame.validate()?;
        Ok(frame)
    }

    /// Width and height of the chroma planes.
    pub fn chroma_size(&self) -> (u32, u32) {
        (self.width / 2, self.height / 2)
    }

    /// True when every plane's stride equals its width.
    pub fn is_packed(&self) -> bool {
        let cw = (self.width / 2) as usize;
        self.stride_y == self.width as usize && self.stride_u == cw && self.stride_v == cw
    }

    /// Checks dimensions, strides and plane lengths.
    pub fn validate(&self) -> Result<()> {
        check_dimensions(self.width, self.height)?;
        let (w, h) = (self.width as usize, self.height as usize);
        let plane_ok = |len: usize, stride: usize, pw: usize, ph: usize| {
            stride >= pw && len >= stride * (ph - 1) + pw
        };
        if !plane_ok(self.y.len(), self.stride_y, w, h)
            || !plane_ok(self.u.len(), self.stride_u, w / 2, h / 2)
            || !plane_ok(self.v.len(), self.stride_v, w / 2, h / 2)
        {
            return Err(MediaError::InvalidInput(format!(
                "I420 planes too small for {}x{} (strides {}/{}/{})",
                self.width, self.height, self.stride_y, self.stride_u, self.stride_v
            )));
        }
        Ok(())
    }

    /// Returns a tightly packed copy (or `self` unchanged when already packed).
    pub fn into_packed(self) -> Self {
        if self.is_packed() {
            return self;
        }
        let (w, h) = (self.width as usize, self.height as usize);
        Self {
            y: pack_plane(&self.y, self.stride_y, w, h),
            u: pack_plane(&self.u, self.stride_u, w / 2, h / 2),
            v: pack_plane(&self.v, self.stride_v, w / 2, h / 2),
            stride_y: w,
            stride_u: w / 2,
            stride_v: w / 2,
            ..self
        }
    }
}

/// Copies `rows` rows of `width` bytes out of a strided plane into a packed buffer.
pub(crate) fn pack_plane(src: &[u8], stride: usize, width: usize, rows: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(width * rows);
    for row in src.chunks(stride).take(rows) {
        out.extend_from_slice(&row[..width.min(row.len())]);
    }
    out
}

/// True for a finite frame rate in `(0, max]`.
pub(crate) fn valid_fps(fps: f32, max: f32) -> bool {
    fps.is_finite() && fps > 0.0 && fps <= max
}

pub(crate) fn check_dimensions(width: u32, height: u32) -> Result<()> {
    if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
        return Err(MediaError::InvalidInput(format!(
            "frame size must be non-zero and even, got {width}x{height}"
        )));
    }
    if width > 8192 || height > 8192 {
        return Err(MediaError::InvalidInput(format!(
            "frame size {width}x{height} is larger than 8192x8192"
        )));
    }
    Ok(())
}

/// An RGBA picture (8 bits per channel, `width * 4` bytes per row), what the UI paints.
#[derive(Clone, PartialEq, Eq)]
pub struct RgbaFrame {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 4` bytes, row-major, R G B A.
    pub data: Vec<u8>,
    /// Media time of the picture it was made from.
    pub timestamp: Duration,
}

impl std::fmt::Debug for RgbaFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RgbaFrame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

impl RgbaFrame {
    /// An all-black, opaque frame.
    pub fn new(width: u32, height: u32) -> Self {
        let mut data = vec![0; width as usize * height as usize * 4];
        for px in data.chunks_exact_mut(4) {
            px[3] = 255;
        }
        Self {
            width,
            height,
            data,
            timestamp: Duration::ZERO,
        }
    }
}

/// Interleaved 32-bit float PCM, nominally in `[-1.0, 1.0]`.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioFrame {
    /// Interleaved samples: `frames() * channels` values.
    pub samples: Vec<f32>,
    /// Channel count (1 or 2 in this crate).
    pub channels: u16,
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// Media time of the first sample, from the start of its source.
    pub timestamp: Duration,
}

impl AudioFrame {
    /// A silent frame of `frames` samples per channel.
    pub fn silence(frames: usize, channels: u16, sample_rate: u32, timestamp: Duration) -> Self {
        Self {
            samples: vec![0.0; frames * channels as usize],
            channels,
            sample_rate,
            timestamp,
        }
    }

    /// Samples per channel.
    pub fn frames(&self) -> usize {
        if self.channels == 0 {
            0
        } else {
            self.samples.len() / self.channels as usize
        }
    }

    /// Duration of the frame.
    pub fn duration(&self) -> Duration {
        if self.sample_rate == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.frames() as u64 * 1_000_000_000 / u64::from(self.sample_rate))
    }
}

/// What an encoded frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// H.264 video.
    Video,
    /// Opus audio.
    Audio,
}

impl MediaKind {
    /// RTP clock rate for this kind (90 kHz video, 48 kHz Opus).
    pub fn clock_rate(self) -> u32 {
        match self {
            MediaKind::Video => VIDEO_CLOCK_RATE,
            MediaKind::Audio => AUDIO_SAMPLE_RATE,
        }
    }
}

/// One encoded unit ready to be written to an RTP track: an H.264 Annex-B access unit (with start
/// codes; SPS and PPS precede every IDR) or one 20 ms Opus packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Video or audio.
    pub kind: MediaKind,
    /// The access unit or packet.
    pub data: Bytes,
    /// Media time from the start of the source.
    pub timestamp: Duration,
    /// How long the frame lasts (what a sample writer advances the RTP clock by).
    pub duration: Duration,
    /// True for an IDR access unit; always true for audio (every Opus packet is decodable).
    pub keyframe: bool,
    /// Counter assigned by the encoder, starting at 0.
    pub sequence: u64,
}

impl EncodedFrame {
    /// The timestamp in RTP clock units (90 kHz or 48 kHz), wrapping like RTP does.
    /// Add the track's random initial offset on the sending side.
    pub fn rtp_timestamp(&self) -> u32 {
        duration_to_rtp(self.timestamp, self.kind.clock_rate())
    }
}

/// Converts a media time to RTP clock ticks, rounded to the nearest tick (wrapping at 2^32).
pub fn duration_to_rtp(time: Duration, clock_rate: u32) -> u32 {
    ((time.as_nanos() * u128::from(clock_rate) + 500_000_000) / 1_000_000_000) as u64 as u32
}

/// Turns wrapping 32-bit RTP timestamps into a monotonic 64-bit count.
///
/// Values up to 2^31 ticks before the highest one seen are taken as reordered, not as a wrap.
#[derive(Clone, Debug, Default)]
pub struct RtpUnwrapper {
    last: Option<u64>,
}

impl RtpUnwrapper {
    /// A fresh unwrapper; the first timestamp maps to itself plus 2^32 (so reordered packets just
    /// before the first one stay positive).
    pub fn new() -> Self {
        Self::default()
    }

    /// Extends a 32-bit timestamp to 64 bits relative to those seen before.
    pub fn unwrap(&mut self, ts: u32) -> u64 {
        let ext = match self.last {
            None => (1u64 << 32) + u64::from(ts),
            Some(last) => {
                let last32 = last as u32;
                let diff = ts.wrapping_sub(last32) as i32;
                (last as i64 + i64::from(diff)) as u64
            }
        };
        if self.last.is_none_or(|l| ext > l) {
            self.last = Some(ext);
        }
        ext
    }
}
