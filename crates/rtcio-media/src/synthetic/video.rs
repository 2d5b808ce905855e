//! A moving test pattern that carries a machine-readable frame number and capture time.
//!
//! The top-left corner holds a 16 × 8 grid of black/white blocks (128 bits): a 16-bit magic, the
//! 32-bit frame number, the 64-bit capture time in microseconds since the Unix epoch and a
//! CRC-16. Blocks are at least 8 × 8 pixels (aligned to macroblocks), so the code survives H.264
//! at ordinary bitrates; [`read_marker`] reads it back from a decoded frame, which is how latency
//! is measured glass to glass.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{MediaError, Result};
use crate::frame::{I420Frame, check_dimensions, valid_fps};
use crate::source::{VideoSource, sleep_until};

const MAGIC: [u8; 2] = [0xA5, 0x5A];
/// Columns of the marker grid.
pub const MARKER_COLUMNS: u32 = 16;
/// Rows of the marker grid.
pub const MARKER_ROWS: u32 = 8;
const BLACK: u8 = 16;
const WHITE: u8 = 235;

/// What the pattern carries in its picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameMarker {
    /// Frame counter of the source, starting at 0.
    pub frame_number: u32,
    /// Wall-clock capture time, microseconds since the Unix epoch.
    pub capture_time_us: u64,
}

impl FrameMarker {
    /// Time from capture to now (zero if the clocks disagree).
    pub fn age(&self) -> Duration {
        let now = unix_micros();
        Duration::from_micros(now.saturating_sub(self.capture_time_us))
    }
}

/// Microseconds since the Unix epoch, from the system clock.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Side of one marker block for a frame of this width (a multiple of 8, at least 8).
pub fn marker_block_size(width: u32) -> u32 {
    (width / 80 / 8 * 8).max(8)
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn marker_bytes(marker: FrameMarker) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..2].copy_from_slice(&MAGIC);
    bytes[2..6].copy_from_slice(&marker.frame_number.to_be_bytes());
    bytes[6..14].copy_from_slice(&marker.capture_time_us.to_be_bytes());
    let crc = crc16(&bytes[..14]);
    bytes[14..].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// Draws the marker into the frame's top-left corner. Returns false (and draws nothing) when
/// the frame is too small to hold it or its planes are inconsistent.
pub fn write_marker(frame: &mut I420Frame, marker: FrameMarker) -> bool {
    if frame.validate().is_err() {
        return false;
    }
    let b = marker_block_size(frame.width);
    if MARKER_COLUMNS * b > frame.width || MARKER_ROWS * b > frame.height {
        return false;
    }
    let bytes = marker_bytes(marker);
    let b = b as usize;
    for bit in 0..(MARKER_COLUMNS * MARKER_ROWS) as usize {
        let on = bytes[bit / 8] & (0x80 >> (bit % 8)) != 0;
        let value = if on { WHITE } else { BLACK };
        let col = bit % MARKER_COLUMNS as usize;
        let row = bit / MARKER_COLUMNS as usize;
        for line in row * b..(row + 1) * b {
            let start = line * frame.stride_y + col * b;
            frame.y[start..start + b].fill(value);
        }
    }
    // Neutral chroma under the code.
    let (cw, ch) = (
        MARKER_COLUMNS as usize * b / 2,
        MARKER_ROWS as usize * b / 2,
    );
    for line in 0..ch {
        frame.u[line * frame.stride_u..line * frame.stride_u + cw].fill(128);
        frame.v[line * frame.stride_v..line * frame.stride_v + cw].fill(128);
    }
    true
}

/// Reads the marker back from a (decoded) frame of the size it was drawn at.
/// Returns `None` when it is absent or its checksum fails.
pub fn read_marker(frame: &I420Frame) -> Option<FrameMarker> {
    let b = marker_block_size(frame.width);
    if MARKER_COLUMNS * b > frame.width || MARKER_ROWS * b > frame.height {
        return None;
    }
    let b = b as usize;
    let mut bytes = [0u8; 16];
    for bit in 0..(MARKER_COLUMNS * MARKER_ROWS) as usize {
        let col = bit % MARKER_COLUMNS as usize;
        let row = bit / MARKER_COLUMNS as usize;
        // Average the inner half of the block, away from edges the codec blurs.
        let (mut sum, mut n) = (0u32, 0u32);
        for line in row * b + b / 4..row * b + 3 * b / 4 {
            let start = line * frame.stride_y + col * b + b / 4;
            for &px in frame.y.get(start..start + b / 2)? {
                sum += u32::from(px);
                n += 1;
            }
        }
        if n > 0 && sum / n > 125 {
            bytes[bit / 8] |= 0x80 >> (bit % 8);
        }
    }
    if bytes[..2] != MAGIC {
        return None;
    }
    let crc = u16::from_be_bytes([bytes[14], bytes[15]]);
    if crc != crc16(&bytes[..14]) {
        return None;
    }
    let frame_number = u32::from_be_bytes(bytes[2..6].try_into().ok()?);
    let capture_time_us = u64::from_be_bytes(bytes[6..14].try_into().ok()?);
    Some(FrameMarker {
        frame_number,
        capture_time_us,
    })
}

/// Settings of a [`TestPatternSource`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TestPatternConfig {
    /// Width in pixels (even).
    pub width: u32,
    /// Height in pixels (even).
    pub height: u32,
    /// Frames per second.
    pub fps: f32,
    /// When true `next_frame` waits for each frame's due time (a live source); when false it
    /// returns at once (tests, benchmarks, bots that encode faster than real time).
    pub paced: bool,
}

impl Default for TestPatternConfig {
    fn default() -> Self {
        Self {
            width: 640,
            height: 360,
            fps: 30.0,
            paced: true,
        }
    }
}

/// Moving diagonal stripes, colour bars and a bouncing box, with a [`FrameMarker`] in the corner.
pub struct TestPatternSource {
    config: TestPatternConfig,
    frame_index: u64,
    ramp: Vec<u8>,
    bars_u: Vec<u8>,
    bars_v: Vec<u8>,
    start: Option<Instant>,
    stopped: bool,
}

impl TestPatternSource {
    /// Creates the source. Errors on odd or zero sizes and non-positive frame rates.
    pub fn new(config: TestPatternConfig) -> Result<Self> {
        check_dimensions(config.width, config.height)?;
        if !valid_fps(config.fps, 240.0) {
            return Err(MediaError::InvalidInput(format!(
                "frame rate {} out of range",
                config.fps
            )));
        }
        let (w, h) = (config.width as usize, config.height as usize);
        let ramp: Vec<u8> = (0..2 * w + h)
            .map(|i| 16 + ((i * 3) % 440).abs_diff(220) as u8)
            .collect();
        // Eight colour bars across the chroma row (U, V pairs of the classic bars).
        const BARS: [(u8, u8); 8] = [
            (128, 128),
            (16, 146),
            (166, 16),
            (54, 34),
            (202, 222),
            (90, 240),
            (240, 110),
            (128, 128),
        ];
        let cw = w / 2;
        let bars_u = (0..cw).map(|x| BARS[x * 8 / cw].0).collect();
        let bars_v = (0..cw).map(|x| BARS[x * 8 / cw].1).collect();
        Ok(Self {
            config,
            frame_index: 0,
            ramp,
            bars_u,
            bars_v,
            start: None,
            stopped: false,
        })
    }

    /// The same pattern on one flat colour instead of the colour bars (`u`, `v`: its chroma),
    /// so a second synthetic camera looks different from the first.
    pub fn tinted(mut self, u: u8, v: u8) -> Self {
        self.bars_u.fill(u);
        self.bars_v.fill(v);
        self
    }

    /// The settings it was made with.
    pub fn config(&self) -> TestPatternConfig {
        self.config
    }

    /// Number of frames produced so far.
    pub fn frames_produced(&self) -> u64 {
        self.frame_index
    }

    /// Renders frame `index` (without pacing) into a new frame.
    pub fn render(&self, index: u64, timestamp: Duration, capture_time_us: u64) -> I420Frame {
        let (w, h) = (self.config.width as usize, self.config.height as usize);
        let (cw, ch) = (w / 2, h / 2);
        let mut y = vec![0u8; w * h];
        let shift = (index as usize * 6) % w;
        for (row, line) in y.chunks_exact_mut(w).enumerate() {
            line.copy_from_slice(&self.ramp[shift + row..shift + row + w]);
        }
        let mut u = vec![0u8; cw * ch];
        let mut v = vec![0u8; cw * ch];
        for line in u.chunks_exact_mut(cw) {
            line.copy_from_slice(&self.bars_u);
        }
        for line in v.chunks_exact_mut(cw) {
            line.copy_from_slice(&self.bars_v);
        }
        // Bouncing box.
        let (bw, bh) = ((w / 6) & !1, (h / 6) & !1);
        let travel = (w - bw).max(1);
        let pos = (index as usize * 8) % (2 * travel);
        let bx = (if pos < travel { pos } else { 2 * travel - pos }) & !1;
        let by = (h / 2 - bh / 2) & !1;
        for row in by..by + bh {
            y[row * w + bx..row * w + bx + bw].fill(WHITE);
        }
        for row in by / 2..(by + bh) / 2 {
            u[row * cw + bx / 2..row * cw + (bx + bw) / 2].fill(90);
            v[row * cw + bx / 2..row * cw + (bx + bw) / 2].fill(240);
        }
        let mut frame = I420Frame {
            width: self.config.width,
            height: self.config.height,
            y,
            u,
            v,
            stride_y: w,
            stride_u: cw,
            stride_v: cw,
            timestamp,
        };
        write_marker(
            &mut frame,
            FrameMarker {
                frame_number: index as u32,
                capture_time_us,
            },
        );
        frame
    }
}

impl VideoSource for TestPatternSource {
    fn next_frame(&mut self) -> Result<I420Frame> {
        if self.stopped {
            return Err(MediaError::Stopped);
        }
        let timestamp = Duration::from_nanos(
            (self.frame_index as f64 * 1e9 / f64::from(self.config.fps)).round() as u64,
        );
        if self.config.paced {
            let start = *self.start.get_or_insert_with(Instant::now);
            sleep_until(start + timestamp);
        }
        let frame = self.render(self.frame_index, timestamp, unix_micros());
        self.frame_index += 1;
        Ok(frame)
    }

    fn size(&self) -> (u32, u32) {
        (self.config.width, self.config.height)
    }

    fn frame_rate(&self) -> f32 {
        self.config.fps
    }

    fn stop(&mut self) {
        self.stopped = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips_without_codec() {
        let mut src = TestPatternSource::new(TestPatternConfig {
            width: 320,
            height: 180,
            fps: 30.0,
            paced: false,
        })
        .unwrap();
        for n in 0..3 {
            let frame = src.next_frame().unwrap();
            let marker = read_marker(&frame).unwrap();
            assert_eq!(marker.frame_number, n);
        }
    }

    #[test]
    fn too_small_frame_has_no_marker() {
        let frame = I420Frame::black(64, 64).unwrap();
        assert_eq!(read_marker(&frame), None);
    }
}
