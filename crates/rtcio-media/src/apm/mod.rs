//! Capture-side audio processing: acoustic echo cancellation (WebRTC's AEC3), noise
//! suppression, automatic gain (AGC2, adaptive digital) and a high-pass filter, through
//! `sonora`, a pure-Rust port of WebRTC's audio processing module. Why this one and how it
//! measures: the crate README ("Audio processing") and [`eval`].
//!
//! [`AudioProcessor`] is plain and clock-free: the caller hands it the far end (what the mixer
//! gives the output device, [`AudioProcessor::process_render`] or a [`RenderTap`] from the
//! output callback's thread) and cleans microphone audio in place with
//! [`AudioProcessor::process_capture`], both at 48 kHz in multiples of 10 ms. Without an output
//! device there is no echo to cancel: [`AudioProcessor::set_output_present`]`(false)` turns the
//! canceller off and ignores the far end.

pub mod eval;

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use sonora::config::{
    AdaptiveDigital, EchoCanceller, GainController2, HighPassFilter, NoiseSuppression,
};
use sonora::{AudioProcessing, Config, StreamConfig};

use crate::error::{MediaError, Result};

/// Which processing runs on the microphone signal. Every switch can be turned off on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApmConfig {
    /// Remove the far end's voice picked up from the speakers (needs the far end, see
    /// [`AudioProcessor::process_render`]).
    pub echo_cancellation: bool,
    /// Attenuate stationary background noise (fans, hum, hiss).
    pub noise_suppression: bool,
    /// Bring speech to a steady level (digital gain with a limiter; the OS mic volume is left
    /// alone).
    pub auto_gain: bool,
    /// Remove rumble and DC below ~80 Hz.
    pub high_pass: bool,
}

impl ApmConfig {
    /// Voice calls: everything on (the default).
    pub const VOICE: Self = Self {
        echo_cancellation: true,
        noise_suppression: true,
        auto_gain: true,
        high_pass: true,
    };

    /// Music mode: everything off, the microphone signal passes untouched.
    pub const MUSIC: Self = Self {
        echo_cancellation: false,
        noise_suppression: false,
        auto_gain: false,
        high_pass: false,
    };

    /// True when nothing is switched on (audio passes bit for bit).
    pub fn is_bypass(&self) -> bool {
        !(self.echo_cancellation || self.noise_suppression || self.auto_gain || self.high_pass)
    }
}

impl Default for ApmConfig {
    fn default() -> Self {
        Self::VOICE
    }
}

/// Numbers the echo canceller reports (for logs and a debug overlay).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ApmStats {
    /// Echo return loss enhancement, dB.
    pub erle_db: Option<f64>,
    /// Echo return loss (far end → microphone), dB.
    pub erl_db: Option<f64>,
    /// The canceller's own render → capture delay estimate, ms.
    pub delay_ms: Option<i32>,
}

/// Far-end frames queued by a [`RenderTap`] before the capture side takes them: 1 s of 20 ms
/// frames. More means the capture side is not running; older frames are useless then.
const RENDER_QUEUE: usize = 50;

/// Hands far-end audio to an [`AudioProcessor`] from another thread (the output device's
/// callback) without blocking: frames are queued and processed at the next
/// [`AudioProcessor::process_capture`]. Cloneable.
#[derive(Clone, Debug)]
pub struct RenderTap {
    tx: SyncSender<Vec<f32>>,
    frame_len: usize,
}

impl RenderTap {
    /// Queues interleaved far-end audio (the processor's rate and render channels, a whole
    /// number of 10 ms frames). Returns false, dropping it, when the length is wrong, the
    /// queue is full (capture not running) or the processor is gone. Never blocks.
    pub fn push(&self, far: &[f32]) -> bool {
        if far.is_empty() || !far.len().is_multiple_of(self.frame_len) {
            return false;
        }
        match self.tx.try_send(far.to_vec()) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// Echo cancellation, noise suppression, automatic gain and high-pass filtering of microphone
/// audio. See the module docs.
pub struct AudioProcessor {
    config: ApmConfig,
    sample_rate: u32,
    capture_channels: u16,
    render_channels: u16,
    output_present: bool,
    delay_hint: Option<Duration>,
    apm: AudioProcessing,
    render_tx: SyncSender<Vec<f32>>,
    render_rx: Receiver<Vec<f32>>,
    planar_in: Vec<Vec<f32>>,
    planar_out: Vec<Vec<f32>>,
}

impl std::fmt::Debug for AudioProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioProcessor")
            .field("config", &self.config)
            .field("sample_rate", &self.sample_rate)
            .field("capture_channels", &self.capture_channels)
            .field("render_channels", &self.render_channels)
            .field("output_present", &self.output_present)
            .field("delay_hint", &self.delay_hint)
            .finish_non_exhaustive()
    }
}

impl AudioProcessor {
    /// A processor for microphone audio of `capture_channels` and a far end of
    /// `render_channels` (1 or 2 each) at `sample_rate` (8–48 kHz; the pipeline uses 48 kHz).
    pub fn new(
        config: ApmConfig,
        sample_rate: u32,
        capture_channels: u16,
        render_channels: u16,
    ) -> Result<Self> {
        if !(8_000..=48_000).contains(&sample_rate) || !sample_rate.is_multiple_of(100) {
            return Err(MediaError::Unsupported(format!(
                "audio processing at {sample_rate} Hz (8-48 kHz, whole 10 ms frames)"
            )));
        }
        for ch in [capture_channels, render_channels] {
            if !(1..=2).contains(&ch) {
                return Err(MediaError::InvalidInput(format!(
                    "audio processing with {ch} channels"
                )));
            }
        }
        let apm = AudioProcessing::builder()
            .config(sonora_config(config, true))
            .capture_config(StreamConfig::new(sample_rate, capture_channels))
            .render_config(StreamConfig::new(sample_rate, render_channels))
            .build();
        let frame = (sample_rate / 100) as usize;
        let (render_tx, render_rx) = sync_channel(RENDER_QUEUE);
        Ok(Self {
            config,
            sample_rate,
            capture_channels,
            render_channels,
            output_present: true,
            delay_hint: None,
            apm,
            render_tx,
            render_rx,
            planar_in: vec![vec![0.0; frame]; usize::from(capture_channels.max(render_channels))],
            planar_out: vec![vec![0.0; frame]; usize::from(capture_channels.max(render_channels))],
        })
    }

    /// The switches in force.
    pub fn config(&self) -> ApmConfig {
        self.config
    }

    /// Changes the switches (e.g. music mode on a settings change). Components switched on
    /// start fresh: the echo canceller needs a moment to converge again.
    pub fn set_config(&mut self, config: ApmConfig) {
        if config != self.config {
            self.config = config;
            self.apply();
        }
    }

    /// Whether an output device plays the far end. Without one (the null sink) there is no
    /// echo: the canceller is off and far-end audio is ignored; the other switches still apply.
    pub fn set_output_present(&mut self, present: bool) {
        if present != self.output_present {
            self.output_present = present;
            self.apply();
            // Far end queued for a device that is gone would be mistaken for echo later.
            while self.render_rx.try_recv().is_ok() {}
        }
    }

    /// Whether echo cancellation is running (switched on and an output device present).
    pub fn echo_cancelling(&self) -> bool {
        self.config.echo_cancellation && self.output_present
    }

    /// Hint of the render → capture delay: from the far end being handed over
    /// ([`process_render`](Self::process_render) / [`RenderTap::push`]) to its sound reaching
    /// [`process_capture`](Self::process_capture) — output buffering + device latency on both
    /// sides. The canceller finds the delay itself (up to ~0.5 s); a good hint makes it
    /// converge sooner. Clamped to 0–500 ms.
    pub fn set_delay_hint(&mut self, delay: Duration) {
        let delay = delay.min(Duration::from_millis(500));
        self.delay_hint = Some(delay);
        // Within 0..=500 ms by construction: the clamp error cannot happen.
        let _ = self.apm.set_stream_delay_ms(delay.as_millis() as i32);
    }

    /// A handle that queues far-end audio from another thread (the output callback).
    pub fn render_tap(&self) -> RenderTap {
        RenderTap {
            tx: self.render_tx.clone(),
            frame_len: self.render_frame_len(),
        }
    }

    /// The echo canceller's statistics.
    pub fn stats(&self) -> ApmStats {
        let s = self.apm.statistics();
        ApmStats {
            erle_db: s.echo_return_loss_enhancement,
            erl_db: s.echo_return_loss,
            delay_ms: s.delay_ms,
        }
    }

    /// Sample rate of both streams.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Interleaved samples in one 10 ms far-end frame.
    pub fn render_frame_len(&self) -> usize {
        (self.sample_rate / 100) as usize * usize::from(self.render_channels)
    }

    /// Interleaved samples in one 10 ms microphone frame.
    pub fn capture_frame_len(&self) -> usize {
        (self.sample_rate / 100) as usize * usize::from(self.capture_channels)
    }

    /// Feeds far-end audio: what the mixer hands the output device, when it hands it over,
    /// interleaved, a whole number of 10 ms frames (a 20 ms mixer frame is two). Ignored when
    /// echo cancellation is off or there is no output device.
    pub fn process_render(&mut self, far: &[f32]) -> Result<()> {
        let len = self.render_frame_len();
        check_len("far-end", far.len(), len)?;
        if !self.echo_cancelling() {
            return Ok(());
        }
        for chunk in far.chunks_exact(len) {
            self.render_chunk(chunk)?;
        }
        Ok(())
    }

    /// Processes microphone audio in place: interleaved, a whole number of 10 ms frames.
    /// Far end queued by a [`RenderTap`] is taken first. With every switch off the samples are
    /// left untouched.
    pub fn process_capture(&mut self, near: &mut [f32]) -> Result<()> {
        let len = self.capture_frame_len();
        check_len("microphone", near.len(), len)?;
        while let Ok(far) = self.render_rx.try_recv() {
            // The tap checked the length; a far end that fails is dropped, not the capture.
            let _ = self.process_render(&far);
        }
        if self.config.is_bypass() {
            return Ok(());
        }
        for chunk in near.chunks_exact_mut(len) {
            self.capture_chunk(chunk)?;
        }
        Ok(())
    }

    fn render_chunk(&mut self, chunk: &[f32]) -> Result<()> {
        let ch = usize::from(self.render_channels);
        deinterleave(chunk, ch, &mut self.planar_in);
        let apm = &mut self.apm;
        with_planes(&self.planar_in, &mut self.planar_out, ch, |src, dst| {
            apm.process_render_f32(src, dst).map_err(apm_err)
        })
    }

    fn capture_chunk(&mut self, chunk: &mut [f32]) -> Result<()> {
        let ch = usize::from(self.capture_channels);
        deinterleave(chunk, ch, &mut self.planar_in);
        let apm = &mut self.apm;
        with_planes(&self.planar_in, &mut self.planar_out, ch, |src, dst| {
            apm.process_capture_f32(src, dst).map_err(apm_err)
        })?;
        for (i, frame) in chunk.chunks_exact_mut(ch).enumerate() {
            for (c, s) in frame.iter_mut().enumerate() {
                *s = self.planar_out[c][i];
            }
        }
        Ok(())
    }

    fn apply(&mut self) {
        self.apm
            .apply_config(sonora_config(self.config, self.output_present));
    }
}

/// Calls `f` with the first `ch` (1 or 2, checked at construction) planes of `inp` and `out`
/// as slices, without allocating: this runs every 10 ms on the audio threads.
fn with_planes<R>(
    inp: &[Vec<f32>],
    out: &mut [Vec<f32>],
    ch: usize,
    f: impl FnOnce(&[&[f32]], &mut [&mut [f32]]) -> R,
) -> R {
    let (first, second) = out.split_at_mut(1);
    let src = [inp[0].as_slice(), inp.get(1).map_or(&[][..], Vec::as_slice)];
    let mut dst = [
        first[0].as_mut_slice(),
        second.first_mut().map_or(&mut [][..], Vec::as_mut_slice),
    ];
    f(&src[..ch], &mut dst[..ch])
}

/// The sonora configuration for our switches.
fn sonora_config(c: ApmConfig, output_present: bool) -> Config {
    Config {
        high_pass_filter: c.high_pass.then(HighPassFilter::default),
        echo_canceller: (c.echo_cancellation && output_present).then(|| EchoCanceller {
            // Our high-pass switch decides; AEC3 would otherwise force the filter on.
            enforce_high_pass_filtering: c.high_pass,
            ..Default::default()
        }),
        noise_suppression: c.noise_suppression.then(NoiseSuppression::default),
        gain_controller2: c.auto_gain.then(|| GainController2 {
            // We never change the OS microphone volume: digital gain only.
            input_volume_controller: false,
            adaptive_digital: Some(AdaptiveDigital::default()),
            ..Default::default()
        }),
        // The pipeline keeps sonora's 32 kHz internal rate: the 16-24 kHz band (no speech to
        // speak of) is dropped, and the echo up there with it. Measured against the full
        // 48 kHz band: the same ERLE and double-talk attenuation, better near-end SNR, ~30 %
        // less CPU (README, "Audio processing").
        ..Default::default()
    }
}

fn check_len(what: &str, len: usize, frame: usize) -> Result<()> {
    if len == 0 || !len.is_multiple_of(frame) {
        return Err(MediaError::InvalidInput(format!(
            "{what} audio of {len} samples is not a whole number of 10 ms frames ({frame})"
        )));
    }
    Ok(())
}

/// Splits interleaved samples into planes; non-finite samples become silence (one NaN would
/// otherwise poison the adaptive filters for good).
fn deinterleave(chunk: &[f32], channels: usize, planes: &mut [Vec<f32>]) {
    for (i, frame) in chunk.chunks_exact(channels).enumerate() {
        for (c, &s) in frame.iter().enumerate() {
            planes[c][i] = if s.is_finite() { s } else { 0.0 };
        }
    }
}

fn apm_err(e: sonora::Error) -> MediaError {
    MediaError::InvalidInput(format!("audio processing: {e}"))
}
