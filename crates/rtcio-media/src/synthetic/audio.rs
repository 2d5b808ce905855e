//! A sine tone with timing marks: every `mark_interval` the tone is replaced, for
//! `mark_duration`, by a burst at `mark_frequency`. [`detect_marks`] finds the bursts again after
//! resampling, encoding and decoding, so audio latency and drift can be measured.

use std::f64::consts::TAU;
use std::time::{Duration, Instant};

use crate::error::{MediaError, Result};
use crate::frame::AudioFrame;
use crate::source::{AudioSource, sleep_until};

/// Settings of a [`ToneSource`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ToneConfig {
    /// Output sample rate.
    pub sample_rate: u32,
    /// Output channels (the same signal on each).
    pub channels: u16,
    /// Frequency of the continuous tone in Hz.
    pub frequency: f32,
    /// Peak amplitude of the tone (0..1).
    pub amplitude: f32,
    /// Time between the starts of two marks (zero disables marks).
    pub mark_interval: Duration,
    /// Frequency of the mark burst in Hz.
    pub mark_frequency: f32,
    /// Length of one mark.
    pub mark_duration: Duration,
    /// Wait for each frame's due time (live) or return at once.
    pub paced: bool,
}

impl Default for ToneConfig {
    fn default() -> Self {
        Self {
            sample_rate: 48_000,
            channels: 1,
            frequency: 440.0,
            amplitude: 0.25,
            mark_interval: Duration::from_secs(1),
            mark_frequency: 3_000.0,
            mark_duration: Duration::from_millis(20),
            paced: true,
        }
    }
}

/// Generates [`ToneConfig`] audio in 20 ms frames.
pub struct ToneSource {
    config: ToneConfig,
    position: u64,
    /// Samples of the mark cycle already gone at position 0: when paced, marks fall on whole
    /// multiples of `mark_interval` of the Unix clock, so a receiver knows when each was
    /// captured (like the test pattern's frame marks) and can measure lip sync.
    phase: u64,
    start: Option<Instant>,
    stopped: bool,
}

impl ToneSource {
    /// Creates the source; errors on a zero rate or channel count.
    pub fn new(config: ToneConfig) -> Result<Self> {
        if config.sample_rate < 8_000 || config.sample_rate > 192_000 || config.channels == 0 {
            return Err(MediaError::InvalidInput(format!(
                "tone needs 8-192 kHz and at least one channel, got {} Hz x {}",
                config.sample_rate, config.channels
            )));
        }
        Ok(Self {
            config,
            position: 0,
            phase: 0,
            start: None,
            stopped: false,
        })
    }

    /// Sample indices (per channel) at which marks start, up to `until` samples.
    pub fn mark_positions(&self, until: u64) -> Vec<u64> {
        let interval = self.interval_samples();
        if interval == 0 {
            return Vec::new();
        }
        let first = (interval - self.phase % interval) % interval;
        (0..)
            .map(|k| first + k * interval)
            .take_while(|&p| p < until)
            .collect()
    }

    fn interval_samples(&self) -> u64 {
        (self.config.mark_interval.as_secs_f64() * f64::from(self.config.sample_rate)).round()
            as u64
    }

    /// Renders `frames` samples per channel starting at sample `position`.
    pub fn render(&self, position: u64, frames: usize) -> Vec<f32> {
        let c = &self.config;
        let rate = f64::from(c.sample_rate);
        let interval = self.interval_samples();
        let mark_len = (c.mark_duration.as_secs_f64() * rate).round() as u64;
        let channels = c.channels as usize;
        let mut out = Vec::with_capacity(frames * channels);
        for i in 0..frames as u64 {
            let n = position + i + self.phase;
            let t = n as f64 / rate;
            let in_mark = interval > 0 && n % interval < mark_len;
            let value = if in_mark {
                0.5 * (TAU * f64::from(c.mark_frequency) * t).sin()
            } else {
                f64::from(c.amplitude) * (TAU * f64::from(c.frequency) * t).sin()
            } as f32;
            for _ in 0..channels {
                out.push(value);
            }
        }
        out
    }
}

impl AudioSource for ToneSource {
    fn next_frame(&mut self) -> Result<AudioFrame> {
        if self.stopped {
            return Err(MediaError::Stopped);
        }
        let rate = u64::from(self.config.sample_rate);
        let frames = (rate / 50) as usize;
        let timestamp = Duration::from_nanos(self.position * 1_000_000_000 / rate);
        if self.config.paced {
            if self.start.is_none() {
                let interval = u128::from(self.interval_samples());
                let now_samples = u128::from(crate::synthetic::video::unix_micros())
                    * u128::from(self.config.sample_rate)
                    / 1_000_000;
                self.phase = now_samples.checked_rem(interval).unwrap_or(0) as u64;
            }
            let start = *self.start.get_or_insert_with(Instant::now);
            sleep_until(start + timestamp);
        }
        let samples = self.render(self.position, frames);
        self.position += frames as u64;
        Ok(AudioFrame {
            samples,
            channels: self.config.channels,
            sample_rate: self.config.sample_rate,
            timestamp,
        })
    }

    fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    fn channels(&self) -> u16 {
        self.config.channels
    }

    fn stop(&mut self) {
        self.stopped = true;
    }
}

/// Goertzel power of `freq` in `window`, normalised so a full-scale-matched sinusoid gives ~1
/// relative to the window's energy.
fn tone_ratio(window: &[f32], freq: f32, sample_rate: u32) -> (f64, f64) {
    let n = window.len() as f64;
    let w = TAU * f64::from(freq) / f64::from(sample_rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2, mut energy) = (0.0f64, 0.0f64, 0.0f64);
    for &x in window {
        let x = f64::from(x);
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
        energy += x * x;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let rms = (energy / n).sqrt();
    if energy <= f64::EPSILON {
        return (0.0, 0.0);
    }
    (power / (n / 2.0 * energy), rms)
}

/// Finds the start (sample index, ±1.25 ms) of every mark burst at `mark_frequency` in a mono
/// signal. Marks must start at least 50 ms apart (a codec dip inside one burst does not count
/// as a new mark).
pub fn detect_marks(samples: &[f32], sample_rate: u32, mark_frequency: f32) -> Vec<usize> {
    let win = (sample_rate / 400).max(16) as usize; // 2.5 ms
    let hop = win / 2;
    let min_gap = (sample_rate / 20) as usize; // 50 ms
    let mut marks = Vec::new();
    let mut inside = false;
    let mut start = 0;
    while start + win <= samples.len() {
        let (ratio, rms) = tone_ratio(&samples[start..start + win], mark_frequency, sample_rate);
        let on = ratio > 0.5 && rms > 0.05;
        if on && !inside && marks.last().is_none_or(|&m| start >= m + min_gap) {
            marks.push(start);
        }
        inside = on;
        start += hop;
    }
    marks
}

/// Mixes interleaved samples down to mono (used before [`detect_marks`]).
pub fn to_mono(samples: &[f32], channels: u16) -> Vec<f32> {
    let c = channels.max(1) as usize;
    samples
        .chunks_exact(c)
        .map(|f| f.iter().sum::<f32>() / c as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_found_where_they_were_put() {
        let mut src = ToneSource::new(ToneConfig {
            mark_interval: Duration::from_millis(200),
            paced: false,
            ..ToneConfig::default()
        })
        .unwrap();
        let mut all = Vec::new();
        for _ in 0..50 {
            all.extend(src.next_frame().unwrap().samples);
        }
        let marks = detect_marks(&all, 48_000, 3_000.0);
        let expected = src.mark_positions(all.len() as u64);
        assert_eq!(marks.len(), expected.len());
        for (m, e) in marks.iter().zip(expected) {
            assert!((*m as i64 - e as i64).abs() <= 120, "{m} vs {e}");
        }
    }
}
