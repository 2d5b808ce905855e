//! Raw H.264 Annex-B files (`.h264`, `.264`): an encoded source for bots that sends a
//! pre-encoded clip without spending CPU on encoding.
//!
//! The stream is split into access units: a new one starts at an access unit delimiter, at
//! parameter sets / SEI following a picture, or at a slice whose `first_mb_in_slice` is 0.
//! Timestamps come from the configured frame rate.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::annexb::{self, NAL_AUD, NAL_IDR, NAL_PPS, NAL_SPS};
use crate::error::{MediaError, Result};
use crate::frame::{EncodedFrame, MediaKind, valid_fps};
use crate::source::{EncodedSource, sleep_until};

/// Files larger than this are refused (the file is read into memory).
pub const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;

/// Splits an Annex-B stream into access units (each with 4-byte start codes).
pub fn split_access_units(stream: &[u8]) -> Vec<Bytes> {
    let mut units = Vec::new();
    let mut current = BytesMut::new();
    let mut has_picture = false;
    for nal in annexb::nal_units(stream) {
        let t = annexb::nal_type(nal).unwrap_or(0);
        let starts_new = has_picture
            && (t == NAL_AUD
                || t == NAL_SPS
                || t == NAL_PPS
                || t == 6
                || annexb::starts_picture(nal));
        if starts_new {
            units.push(current.split().freeze());
            has_picture = false;
        }
        current.put_slice(&[0, 0, 0, 1]);
        current.put_slice(nal);
        if matches!(t, 1 | NAL_IDR) {
            has_picture = true;
        }
    }
    if has_picture {
        units.push(current.freeze());
    }
    units
}

/// Plays a raw H.264 file as encoded frames.
#[derive(Debug)]
pub struct H264FileSource {
    units: Vec<Bytes>,
    fps: f32,
    looping: bool,
    paced: bool,
    next: usize,
    emitted: u64,
    start: Option<Instant>,
}

impl H264FileSource {
    /// Reads and splits the file. `fps` sets the timestamps.
    pub fn open(path: impl AsRef<Path>, fps: f32, looping: bool, paced: bool) -> Result<Self> {
        let path = path.as_ref();
        let len = std::fs::metadata(path)?.len();
        if len > MAX_FILE_BYTES {
            return Err(MediaError::Format(format!("{len} bytes is too large")));
        }
        let data = std::fs::read(path)?;
        Self::from_bytes(&data, fps, looping, paced)
    }

    /// Splits an in-memory stream.
    pub fn from_bytes(data: &[u8], fps: f32, looping: bool, paced: bool) -> Result<Self> {
        if !valid_fps(fps, 240.0) {
            return Err(MediaError::InvalidInput(format!("fps {fps}")));
        }
        let units = split_access_units(data);
        if units.is_empty() {
            return Err(MediaError::Format("no H.264 pictures found".into()));
        }
        if !annexb::contains_idr(&units[0]) {
            return Err(MediaError::Format(
                "H.264 stream does not start with an IDR".into(),
            ));
        }
        Ok(Self {
            units,
            fps,
            looping,
            paced,
            next: 0,
            emitted: 0,
            start: None,
        })
    }

    /// Access units in the file.
    pub fn len(&self) -> usize {
        self.units.len()
    }

    /// True when the file has no access units (never after a successful open).
    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }
}

impl EncodedSource for H264FileSource {
    fn next_frame(&mut self) -> Result<EncodedFrame> {
        if self.next >= self.units.len() {
            if !self.looping {
                return Err(MediaError::EndOfStream);
            }
            self.next = 0;
        }
        let data = self.units[self.next].clone();
        self.next += 1;
        let duration = Duration::from_secs_f64(1.0 / f64::from(self.fps));
        let timestamp = duration.mul_f64(self.emitted as f64);
        if self.paced {
            let start = *self.start.get_or_insert_with(Instant::now);
            sleep_until(start + timestamp);
        }
        let keyframe = annexb::contains_idr(&data);
        let frame = EncodedFrame {
            kind: MediaKind::Video,
            data,
            timestamp,
            duration,
            keyframe,
            sequence: self.emitted,
        };
        self.emitted += 1;
        Ok(frame)
    }
}
