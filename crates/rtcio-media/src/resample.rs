//! Sample-rate conversion with rubato (FFT resampler), plus a re-framer that cuts any stream of
//! PCM into 20 ms frames.

use std::time::Duration;

use rubato::{FftFixedIn, Resampler as _};

use crate::error::{MediaError, Result};
use crate::frame::AudioFrame;

fn rs_err(e: impl std::fmt::Display) -> MediaError {
    MediaError::Resample(e.to_string())
}

/// Converts interleaved PCM from one rate to another, any input length per call.
///
/// Input is consumed in 10 ms chunks; output lags input by the resampler's delay
/// ([`AudioResampler::delay_frames`]). When the rates are equal it passes audio through.
pub struct AudioResampler {
    input_rate: u32,
    output_rate: u32,
    channels: u16,
    inner: Option<FftFixedIn<f32>>,
    pending: Vec<f32>,
    planar_in: Vec<Vec<f32>>,
}

impl std::fmt::Debug for AudioResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioResampler")
            .field("input_rate", &self.input_rate)
            .field("output_rate", &self.output_rate)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

impl AudioResampler {
    /// A resampler from `input_rate` to `output_rate` for `channels` interleaved channels.
    pub fn new(input_rate: u32, output_rate: u32, channels: u16) -> Result<Self> {
        if channels == 0 || input_rate == 0 || output_rate == 0 {
            return Err(MediaError::InvalidInput(format!(
                "resampler {input_rate} -> {output_rate} Hz x {channels}"
            )));
        }
        let inner = if input_rate == output_rate {
            None
        } else {
            let chunk = (input_rate / 100).max(1) as usize;
            Some(
                FftFixedIn::<f32>::new(
                    input_rate as usize,
                    output_rate as usize,
                    chunk,
                    1,
                    channels as usize,
                )
                .map_err(rs_err)?,
            )
        };
        Ok(Self {
            input_rate,
            output_rate,
            channels,
            inner,
            pending: Vec::new(),
            planar_in: vec![Vec::new(); channels as usize],
        })
    }

    /// Input rate.
    pub fn input_rate(&self) -> u32 {
        self.input_rate
    }

    /// Output rate.
    pub fn output_rate(&self) -> u32 {
        self.output_rate
    }

    /// Output delay in output frames.
    pub fn delay_frames(&self) -> usize {
        self.inner.as_ref().map_or(0, |r| r.output_delay())
    }

    /// Resamples interleaved input, returning whatever output is complete.
    pub fn process(&mut self, interleaved: &[f32]) -> Result<Vec<f32>> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(interleaved.to_vec());
        };
        let c = self.channels as usize;
        self.pending.extend_from_slice(interleaved);
        let mut out = Vec::new();
        loop {
            let need = inner.input_frames_next();
            if self.pending.len() < need * c {
                break;
            }
            for (ch, plane) in self.planar_in.iter_mut().enumerate() {
                plane.clear();
                plane.extend(self.pending[..need * c].iter().skip(ch).step_by(c));
            }
            self.pending.drain(..need * c);
            let planar_out = inner.process(&self.planar_in, None).map_err(rs_err)?;
            let frames = planar_out.first().map_or(0, Vec::len);
            out.reserve(frames * c);
            for i in 0..frames {
                for plane in &planar_out {
                    out.push(plane[i]);
                }
            }
        }
        Ok(out)
    }
}

/// Cuts a PCM stream into frames of exactly 20 ms at a fixed rate and channel count.
#[derive(Debug)]
pub struct Reframer {
    sample_rate: u32,
    channels: u16,
    pending: Vec<f32>,
    emitted: u64,
}

impl Reframer {
    /// A reframer for `sample_rate` × `channels`.
    pub fn new(sample_rate: u32, channels: u16) -> Self {
        Self {
            sample_rate,
            channels,
            pending: Vec::new(),
            emitted: 0,
        }
    }

    /// Appends samples.
    pub fn push(&mut self, interleaved: &[f32]) {
        self.pending.extend_from_slice(interleaved);
    }

    /// Takes the next complete 20 ms frame, if any.
    pub fn pop(&mut self) -> Option<AudioFrame> {
        let frames = (self.sample_rate / 50) as usize;
        let len = frames * self.channels as usize;
        if self.pending.len() < len {
            return None;
        }
        let samples: Vec<f32> = self.pending.drain(..len).collect();
        let timestamp =
            Duration::from_nanos(self.emitted * 1_000_000_000 / u64::from(self.sample_rate));
        self.emitted += frames as u64;
        Some(AudioFrame {
            samples,
            channels: self.channels,
            sample_rate: self.sample_rate,
            timestamp,
        })
    }

    /// Samples waiting (interleaved count).
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }
}

/// Converts interleaved PCM from `from` channels to `to` channels (downmix by averaging,
/// upmix by copying mono or the first two channels).
pub fn remix_channels(samples: &[f32], from: u16, to: u16) -> Vec<f32> {
    if from == to || from == 0 || to == 0 {
        return samples.to_vec();
    }
    let (from, to) = (from as usize, to as usize);
    let mut out = Vec::with_capacity(samples.len() / from * to);
    for frame in samples.chunks_exact(from) {
        if to == 1 {
            out.push(frame.iter().sum::<f32>() / from as f32);
        } else if from == 1 {
            out.extend(std::iter::repeat_n(frame[0], to));
        } else {
            let copied = from.min(to);
            out.extend_from_slice(&frame[..copied]);
            out.extend(std::iter::repeat_n(0.0, to - copied));
        }
    }
    out
}
