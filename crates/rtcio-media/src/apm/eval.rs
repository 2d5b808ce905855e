//! Measuring echo cancellation and noise suppression without recordings: a speech-like
//! synthesizer, a simulated room between the loudspeaker and the microphone, fan-like noise,
//! and the metrics (ERLE and its convergence time, near-end attenuation in double talk,
//! segmental SNR, SNR after noise suppression, processing cost per 10 ms frame).
//!
//! Everything is deterministic (seeded), mono, 48 kHz, processed in 10 ms frames, so a test can
//! assert on the numbers and a bench can print them for several processors
//! (`tests/echo.rs`, `benches/echo.rs`). Any processor plugs in through [`CaptureProcessor`].

use std::f32::consts::PI;
use std::time::{Duration, Instant};

use realfft::RealFftPlanner;
use realfft::num_complex::Complex;

use crate::error::Result;

/// Sample rate of every signal here.
pub const RATE: u32 = 48_000;
/// Samples in one 10 ms frame.
pub const FRAME: usize = 480;
/// Length of the segments the segmental metrics use (20 ms).
const SEGMENT: usize = 960;

/// What is measured: something that takes the far end (what the speaker plays) and cleans the
/// microphone signal in place, 10 ms mono at 48 kHz at a time.
pub trait CaptureProcessor {
    /// The far-end frame about to be played (10 ms, mono).
    fn render(&mut self, far: &[f32]) -> Result<()>;
    /// The microphone frame (10 ms, mono), processed in place.
    fn capture(&mut self, mic: &mut [f32]) -> Result<()>;
}

/// A processor that changes nothing (the "no processing" row, and the bypass check).
#[derive(Clone, Copy, Debug, Default)]
pub struct Passthrough;

impl CaptureProcessor for Passthrough {
    fn render(&mut self, _far: &[f32]) -> Result<()> {
        Ok(())
    }
    fn capture(&mut self, _mic: &mut [f32]) -> Result<()> {
        Ok(())
    }
}

/// Deterministic pseudo-random numbers (xorshift64*): the same seed gives the same signals.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from any seed.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }

    /// Approximately standard normal (sum of four uniforms, rescaled).
    pub fn gauss(&mut self) -> f32 {
        let s: f32 = (0..4).map(|_| self.uniform()).sum();
        (s - 2.0) * (3.0f32).sqrt()
    }
}

/// Klatt's cascade resonator (unity gain at DC), for formants.
#[derive(Clone, Copy, Debug, Default)]
struct Resonator {
    a: f32,
    b: f32,
    c: f32,
    y1: f32,
    y2: f32,
}

impl Resonator {
    fn set(&mut self, freq: f32, bandwidth: f32) {
        let r = (-PI * bandwidth / RATE as f32).exp();
        self.c = -r * r;
        self.b = 2.0 * r * (2.0 * PI * freq / RATE as f32).cos();
        self.a = 1.0 - self.b - self.c;
    }

    fn run(&mut self, x: f32) -> f32 {
        let y = self.a * x + self.b * self.y1 + self.c * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// First three formants (Hz) of a few vowels (adult male values; scaled for higher voices).
const VOWELS: [[f32; 3]; 6] = [
    [730.0, 1090.0, 2440.0], // a
    [270.0, 2290.0, 3010.0], // i
    [300.0, 870.0, 2240.0],  // u
    [530.0, 1840.0, 2480.0], // e
    [570.0, 840.0, 2410.0],  // o
    [660.0, 1720.0, 2410.0], // ae
];

/// A synthetic talker: pitch and the seed of its phrasing.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Voice {
    /// Mean fundamental frequency in Hz (≈110 male, ≈210 female).
    pub pitch: f32,
    /// Formant scale (1.0 male, ≈1.17 female).
    pub formant_scale: f32,
    /// Seed of the syllables, pauses and intonation.
    pub seed: u64,
    /// Active speech level in dBFS (RMS over the samples where the voice is speaking).
    pub level_dbfs: f32,
}

impl Voice {
    /// A low voice.
    pub fn male(seed: u64) -> Self {
        Self {
            pitch: 115.0,
            formant_scale: 1.0,
            seed,
            level_dbfs: -24.0,
        }
    }

    /// A high voice.
    pub fn female(seed: u64) -> Self {
        Self {
            pitch: 205.0,
            formant_scale: 1.17,
            seed,
            level_dbfs: -24.0,
        }
    }
}

/// Speech-like audio: phrases of 1–2.5 s with 0.2–0.6 s pauses; each phrase a run of syllables
/// (a vowel from a glottal pulse train through three formant resonators, sometimes preceded by
/// a fricative noise burst) with a falling, wavering pitch. `speaking_from`..`speaking_until`
/// (seconds) bounds where the talker speaks; silence elsewhere.
pub fn speech(voice: Voice, seconds: f32, speaking_from: f32, speaking_until: f32) -> Vec<f32> {
    let total = (seconds * RATE as f32) as usize;
    let mut out = vec![0.0f32; total];
    let mut rng = Rng::new(voice.seed);
    let start = (speaking_from * RATE as f32) as usize;
    let end = ((speaking_until * RATE as f32) as usize).min(total);
    let mut t = start;
    let mut formants = [Resonator::default(); 3];
    let mut fric = Resonator::default();
    fric.set(4500.0, 2000.0);
    let mut glottal_lp = 0.0f32;
    let mut radiation_prev = 0.0f32;
    let mut phase = 0.0f32;
    let mut prev_noise = 0.0f32;
    while t < end {
        let phrase_len = (rng.range(1.0, 2.5) * RATE as f32) as usize;
        let phrase_end = (t + phrase_len).min(end);
        let phrase_start = t;
        let mut current = VOWELS[0];
        while t < phrase_end {
            let syllable = (rng.range(0.12, 0.28) * RATE as f32) as usize;
            let syl_end = (t + syllable).min(phrase_end);
            let target = VOWELS[(rng.uniform() * VOWELS.len() as f32) as usize % VOWELS.len()];
            let fricative = rng.uniform() < 0.3;
            let fric_len = if fricative {
                (rng.range(0.04, 0.09) * RATE as f32) as usize
            } else {
                0
            };
            let loudness = rng.range(0.6, 1.0);
            let from = current;
            let len = (syl_end - t).max(1);
            for (i, slot) in out[t..syl_end].iter_mut().enumerate() {
                let n = t + i;
                let x = i as f32 / len as f32;
                if i.is_multiple_of(48) {
                    // Formants glide from the last vowel during the first third.
                    let k = (x * 3.0).min(1.0);
                    for (j, res) in formants.iter_mut().enumerate() {
                        let f = (from[j] + (target[j] - from[j]) * k) * voice.formant_scale;
                        res.set(f, 60.0 + 0.06 * f);
                    }
                }
                let noise = rng.gauss();
                let sample = if i < fric_len {
                    // Fricative: high-passed noise through a wide high resonance.
                    let hp = noise - prev_noise;
                    let e = (PI * i as f32 / fric_len as f32).sin();
                    0.15 * e * fric.run(hp)
                } else {
                    let v = (i - fric_len) as f32 / (len - fric_len).max(1) as f32;
                    let env = (PI * v).sin().powf(0.6) * loudness;
                    // Declining pitch over the phrase, vibrato, a little jitter.
                    let p = (n - phrase_start) as f32 / phrase_len as f32;
                    let f0 = voice.pitch
                        * (1.15 - 0.3 * p)
                        * (1.0 + 0.03 * (2.0 * PI * 5.0 * n as f32 / RATE as f32).sin())
                        * (1.0 + 0.005 * noise);
                    phase += f0 / RATE as f32;
                    let pulse = if phase >= 1.0 {
                        phase -= 1.0;
                        1.0
                    } else {
                        0.0
                    };
                    // Glottal roll-off, lip radiation (+6 dB/oct), then the vocal tract.
                    glottal_lp += 0.08 * (pulse - glottal_lp);
                    let rad = glottal_lp - radiation_prev;
                    radiation_prev = glottal_lp;
                    let mut y = rad * env + 0.002 * noise * env;
                    for res in &mut formants {
                        y = res.run(y);
                    }
                    y
                };
                prev_noise = noise;
                *slot = sample;
            }
            current = target;
            t = syl_end;
        }
        t = phrase_end + (rng.range(0.2, 0.6) * RATE as f32) as usize;
    }
    scale_to_active_level(&mut out, voice.level_dbfs);
    out
}

/// Scales `x` so that its RMS over active 20 ms segments (within 40 dB of the loudest) is
/// `dbfs`.
fn scale_to_active_level(x: &mut [f32], dbfs: f32) {
    let energies: Vec<f64> = x.chunks(SEGMENT).map(energy).collect();
    let max = energies.iter().cloned().fold(0.0f64, f64::max);
    if max <= 0.0 {
        return;
    }
    let active: Vec<(f64, usize)> = x
        .chunks(SEGMENT)
        .zip(&energies)
        .filter(|(_, e)| **e > max * 1e-4)
        .map(|(c, e)| (*e, c.len()))
        .collect();
    let (sum, n) = active
        .iter()
        .fold((0.0, 0usize), |(s, n), (e, l)| (s + e, n + l));
    let rms = (sum / n.max(1) as f64).sqrt();
    let gain = (10f64.powf(f64::from(dbfs) / 20.0) / rms) as f32;
    for s in x {
        *s *= gain;
    }
}

fn energy(x: &[f32]) -> f64 {
    x.iter().map(|&s| f64::from(s) * f64::from(s)).sum()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

fn db(ratio: f64) -> f64 {
    10.0 * ratio.max(1e-12).log10()
}

/// White Gaussian noise at `dbfs` RMS.
pub fn white_noise(samples: usize, dbfs: f32, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let a = 10f32.powf(dbfs / 20.0);
    (0..samples).map(|_| a * rng.gauss()).collect()
}

/// Fan-like noise at `dbfs` RMS: low-passed (brownish) broadband noise plus a slowly beating
/// blade-pass hum at 120 Hz with three harmonics.
pub fn fan_noise(samples: usize, dbfs: f32, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let (mut lp1, mut lp2) = (0.0f32, 0.0f32);
    let mut x: Vec<f32> = (0..samples)
        .map(|n| {
            let t = n as f32 / RATE as f32;
            let w = rng.gauss();
            lp1 += 0.05 * (w - lp1);
            lp2 += 0.3 * (w - lp2);
            let broadband = 3.0 * lp1 + 0.3 * lp2;
            let beat = 1.0 + 0.2 * (2.0 * PI * 0.7 * t).sin();
            let hum: f32 = (1..=4)
                .map(|k| (2.0 * PI * 120.0 * k as f32 * t).sin() / k as f32)
                .sum();
            broadband + 0.4 * beat * hum
        })
        .collect();
    let rms = (energy(&x) / samples.max(1) as f64).sqrt();
    let gain = (10f64.powf(f64::from(dbfs) / 20.0) / rms.max(1e-12)) as f32;
    for s in &mut x {
        *s *= gain;
    }
    x
}

/// A simulated loudspeaker → microphone path: a direct tap after `delay_ms`, then reflections
/// at random positions over `tail_ms` decaying with `rt60_ms`, scaled so the echo is `erl_db`
/// below the far end (echo return loss, white-signal energy gain).
#[derive(Clone, Debug, PartialEq)]
pub struct Room {
    /// Sparse taps: (delay in samples, gain).
    pub taps: Vec<(usize, f32)>,
}

impl Room {
    /// Builds the impulse response.
    pub fn new(delay_ms: f32, erl_db: f32, rt60_ms: f32, tail_ms: f32, seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x5EED);
        let d = (delay_ms * RATE as f32 / 1000.0) as usize;
        let tail = (tail_ms * RATE as f32 / 1000.0) as usize;
        let mut taps = vec![(d, 1.0f32)];
        // Dense early part (first 2.5 ms: speaker body, desk), then sparser reflections (few
        // enough taps that a debug-build test convolves seconds of audio quickly).
        for k in 1..120usize {
            taps.push((d + k, 0.25 * rng.gauss() * (-(k as f32) / 60.0).exp()));
        }
        for _ in 0..240 {
            let k = 120 + (rng.uniform() * tail.saturating_sub(120) as f32) as usize;
            let t_ms = k as f32 * 1000.0 / RATE as f32;
            // 60 dB of amplitude decay over rt60.
            let a = 0.5 * 10f32.powf(-3.0 * t_ms / rt60_ms);
            taps.push((d + k, a * rng.gauss()));
        }
        let e: f32 = taps.iter().map(|(_, g)| g * g).sum();
        let scale = (10f32.powf(-erl_db / 10.0) / e).sqrt();
        for (_, g) in &mut taps {
            *g *= scale;
        }
        Self { taps }
    }

    /// The echo of `far` (same length).
    pub fn echo(&self, far: &[f32]) -> Vec<f32> {
        let len = self.taps.iter().map(|&(d, _)| d + 1).max().unwrap_or(0);
        let mut h = vec![0.0f32; len];
        for &(d, g) in &self.taps {
            h[d] += g;
        }
        convolve(far, &h, far.len())
    }
}

/// Length of the simulated room's reverberant tail after the direct path.
const TAIL_MS: f32 = 150.0;

/// The echo test: far-end speech alone (the canceller converges), then double talk (far and
/// near end at once), through a simulated room into a microphone with a little noise.
#[derive(Clone, Debug, PartialEq)]
pub struct EchoScenario {
    /// Seconds with the far end talking alone.
    pub far_only_s: f32,
    /// Seconds of double talk after that.
    pub double_talk_s: f32,
    /// Loudspeaker → microphone delay.
    pub delay_ms: f32,
    /// Echo return loss of the room (echo this many dB below the far end).
    pub erl_db: f32,
    /// Reverberation time of the room.
    pub rt60_ms: f32,
    /// Microphone noise floor (white), dBFS.
    pub noise_dbfs: f32,
    /// Loudspeaker distortion: the far end is played as `tanh(d·x)/d` (0 = a linear speaker;
    /// 4 compresses speech peaks like a small laptop speaker turned up).
    pub speaker_drive: f32,
    /// Seed of the voices, the room and the noise.
    pub seed: u64,
}

impl Default for EchoScenario {
    fn default() -> Self {
        Self {
            far_only_s: 8.0,
            double_talk_s: 6.0,
            delay_ms: 120.0,
            erl_db: 10.0,
            rt60_ms: 250.0,
            noise_dbfs: -70.0,
            speaker_drive: 0.0,
            seed: 1,
        }
    }
}

/// The signals of one scenario run.
#[derive(Clone, Debug)]
pub struct EchoSignals {
    /// What the far end says (the render reference).
    pub far: Vec<f32>,
    /// What the near end says (only in the double-talk part).
    pub near: Vec<f32>,
    /// The far end's echo at the microphone.
    pub echo: Vec<f32>,
    /// Microphone noise.
    pub noise: Vec<f32>,
    /// The microphone signal: near + echo + noise.
    pub mic: Vec<f32>,
}

impl EchoScenario {
    /// Total length in seconds.
    pub fn seconds(&self) -> f32 {
        self.far_only_s + self.double_talk_s
    }

    /// Renders the signals.
    pub fn signals(&self) -> EchoSignals {
        let secs = self.seconds();
        let far = speech(Voice::male(self.seed), secs, 0.0, secs);
        let near = speech(
            Voice::female(self.seed.wrapping_add(7)),
            secs,
            self.far_only_s,
            secs,
        );
        let room = Room::new(self.delay_ms, self.erl_db, self.rt60_ms, TAIL_MS, self.seed);
        let echo = if self.speaker_drive > 0.0 {
            let d = self.speaker_drive;
            let played: Vec<f32> = far.iter().map(|&x| (d * x).tanh() / d).collect();
            room.echo(&played)
        } else {
            room.echo(&far)
        };
        let noise = white_noise(far.len(), self.noise_dbfs, self.seed.wrapping_add(3));
        let mic = near
            .iter()
            .zip(&echo)
            .zip(&noise)
            .map(|((n, e), w)| n + e + w)
            .collect();
        EchoSignals {
            far,
            near,
            echo,
            noise,
            mic,
        }
    }
}

/// Runs `p` over the scenario frame by frame (render, then capture, as a device would) and
/// returns the processed microphone signal and the time spent per 10 ms frame.
pub fn process(
    p: &mut dyn CaptureProcessor,
    far: &[f32],
    mic: &[f32],
) -> Result<(Vec<f32>, FrameCost)> {
    let mut out = mic.to_vec();
    let mut times = Vec::with_capacity(mic.len() / FRAME);
    let silence = [0.0f32; FRAME];
    for (i, frame) in out.chunks_exact_mut(FRAME).enumerate() {
        let r = far.get(i * FRAME..(i + 1) * FRAME).unwrap_or(&silence);
        let start = Instant::now();
        p.render(r)?;
        p.capture(frame)?;
        times.push(start.elapsed());
    }
    Ok((out, FrameCost::from_times(&mut times)))
}

/// Processing time per 10 ms frame (render + capture).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FrameCost {
    /// Mean.
    pub mean: Duration,
    /// Median (less disturbed by other processes on a busy machine).
    pub median: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl FrameCost {
    fn from_times(times: &mut [Duration]) -> Self {
        if times.is_empty() {
            return Self::default();
        }
        let sum: Duration = times.iter().sum();
        times.sort_unstable();
        let idx = ((times.len() as f64 * 0.99) as usize).min(times.len() - 1);
        Self {
            mean: sum / times.len() as u32,
            median: times[times.len() / 2],
            p99: times[idx],
        }
    }
}

/// The lag (0..=max_lag samples) by which `out` best follows `reference` (the processor's
/// own delay), by cross-correlation.
pub fn lag_of(reference: &[f32], out: &[f32], max_lag: usize) -> usize {
    xcorr(reference, out, max_lag)
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(lag, _)| lag)
}

// Convolutions and correlations go through realfft: a dependency, so optimised even in debug
// builds, where this crate's own loops are not — it keeps the debug-build tests quick.

fn spectrum(planner: &mut RealFftPlanner<f64>, x: &[f32], len: usize) -> Vec<Complex<f64>> {
    let fft = planner.plan_fft_forward(len);
    let mut input = fft.make_input_vec();
    for (d, &v) in input.iter_mut().zip(x) {
        *d = f64::from(v);
    }
    let mut out = fft.make_output_vec();
    // Buffers come from the plan itself: the lengths always match.
    let _ = fft.process(&mut input, &mut out);
    out
}

fn inverse(planner: &mut RealFftPlanner<f64>, mut spec: Vec<Complex<f64>>, len: usize) -> Vec<f64> {
    let fft = planner.plan_fft_inverse(len);
    // A product of real signals' spectra: DC and Nyquist are real up to rounding.
    if let Some(first) = spec.first_mut() {
        first.im = 0.0;
    }
    if let Some(last) = spec.last_mut() {
        last.im = 0.0;
    }
    let mut out = fft.make_output_vec();
    let _ = fft.process(&mut spec, &mut out);
    let scale = 1.0 / len as f64;
    for v in &mut out {
        *v *= scale;
    }
    out
}

/// The first `out_len` samples of `a` convolved with `b`.
fn convolve(a: &[f32], b: &[f32], out_len: usize) -> Vec<f32> {
    if a.is_empty() || b.is_empty() {
        return vec![0.0; out_len];
    }
    let len = (a.len() + b.len()).next_power_of_two();
    let mut planner = RealFftPlanner::new();
    let mut sa = spectrum(&mut planner, a, len);
    let sb = spectrum(&mut planner, b, len);
    for (x, y) in sa.iter_mut().zip(&sb) {
        *x *= y;
    }
    let full = inverse(&mut planner, sa, len);
    let mut out: Vec<f32> = full.iter().take(out_len).map(|&v| v as f32).collect();
    out.resize(out_len, 0.0);
    out
}

/// `c[l] = Σ x[n]·y[n + l]` for `l` in `0..=max_lag`.
fn xcorr(x: &[f32], y: &[f32], max_lag: usize) -> Vec<f64> {
    // Long enough that no lag up to max_lag wraps around.
    let len = (x.len() + max_lag).max(y.len()).next_power_of_two().max(2);
    let mut planner = RealFftPlanner::new();
    let mut sx = spectrum(&mut planner, x, len);
    let sy = spectrum(&mut planner, y, len);
    for (a, b) in sx.iter_mut().zip(&sy) {
        *a = a.conj() * b;
    }
    let mut c = inverse(&mut planner, sx, len);
    c.truncate(max_lag + 1);
    c
}

/// Taps of the least-squares filter in [`linear_part`].
const FIT_TAPS: usize = 256;

/// The part of `out` that is a fixed linear filtering of `s` (the processor's delay, high-pass
/// and filter banks), as a signal aligned with `out`: `s` through the least-squares FIR of
/// [`FIT_TAPS`] taps around the cross-correlation lag. What the processor does to `s` beyond
/// that (time-varying suppression) shows up as a smaller projection per segment.
fn linear_part(s: &[f32], out: &[f32]) -> Vec<f32> {
    let n = s.len().min(out.len());
    let (s, out) = (&s[..n], &out[..n]);
    let max_lag = 4 * FRAME + FIT_TAPS;
    // One pair of spectra serves the lag search, both correlations and the filtering: FFTs
    // dominate the debug-build test time.
    let len = (n + max_lag).next_power_of_two();
    let mut planner = RealFftPlanner::new();
    let ss = spectrum(&mut planner, s, len);
    let so = spectrum(&mut planner, out, len);
    let cross: Vec<Complex<f64>> = ss.iter().zip(&so).map(|(a, b)| a.conj() * b).collect();
    let power: Vec<Complex<f64>> = ss.iter().map(|a| a.conj() * a).collect();
    let xcf = inverse(&mut planner, cross, len);
    let acf = inverse(&mut planner, power, len);
    let lag = (0..=4 * FRAME)
        .max_by(|&a, &b| xcf[a].total_cmp(&xcf[b]))
        .unwrap_or(0);
    let first = lag.saturating_sub(FIT_TAPS / 8);
    // Normal equations R h = r, R Toeplitz from the autocorrelation of s.
    let mut a: Vec<Vec<f64>> = (0..FIT_TAPS)
        .map(|i| {
            let mut row: Vec<f64> = (0..FIT_TAPS).map(|k| acf[i.abs_diff(k)]).collect();
            row[i] += acf[0] * 1e-6; // diagonal loading: speech is not white
            row.push(xcf[first + i]);
            row
        })
        .collect();
    let h = solve(&mut a);
    let mut filter = vec![0.0f32; first];
    filter.extend(h.iter().map(|&v| v as f32));
    let mut y = ss;
    let sh = spectrum(&mut planner, &filter, len);
    for (x, f) in y.iter_mut().zip(&sh) {
        *x *= f;
    }
    let full = inverse(&mut planner, y, len);
    full.iter().take(n).map(|&v| v as f32).collect()
}

/// Gaussian elimination with partial pivoting on an augmented matrix; zeros if singular.
fn solve(a: &mut [Vec<f64>]) -> Vec<f64> {
    let n = a.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        let p = a[col][col];
        if p.abs() < 1e-30 {
            return vec![0.0; n];
        }
        let (upper, lower) = a.split_at_mut(col + 1);
        let pivot_row = &upper[col];
        for row in lower {
            let f = row[col] / p;
            if f != 0.0 {
                for (x, &y) in row[col..].iter_mut().zip(&pivot_row[col..]) {
                    *x -= f * y;
                }
            }
        }
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| a[i][k] * x[k]).sum();
        x[i] = (a[i][n] - s) / a[i][i];
    }
    x
}

/// Echo cancellation results.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EchoReport {
    /// Echo return loss enhancement once converged (second half of the far-only part), dB.
    pub erle_db: f64,
    /// ERLE of each 250 ms window with far-end activity in the far-only part: (start s, dB).
    pub erle_track: Vec<(f32, f64)>,
    /// Time from the start until ERLE stays ≥ 20 dB (every later window); `None` if never.
    pub convergence_s: Option<f32>,
    /// Near-end speech attenuation during double talk, dB (0 = kept whole).
    pub near_attenuation_db: f64,
    /// Segmental SNR of the near end in the microphone signal during double talk, dB.
    pub near_seg_snr_in_db: f64,
    /// Segmental SNR of the near end in the processed signal during double talk, dB.
    pub near_seg_snr_out_db: f64,
    /// Processing time per frame.
    pub cost: FrameCost,
}

/// ERLE windows.
const ERLE_WINDOW: usize = RATE as usize / 4;

/// Runs the scenario through `p` and measures it.
pub fn measure_echo(p: &mut dyn CaptureProcessor, scenario: &EchoScenario) -> Result<EchoReport> {
    measure_echo_on(p, scenario, &scenario.signals())
}

/// Like [`measure_echo`] with the scenario's signals rendered beforehand (tests running
/// several processors over one scenario render it once).
pub fn measure_echo_on(
    p: &mut dyn CaptureProcessor,
    scenario: &EchoScenario,
    sig: &EchoSignals,
) -> Result<EchoReport> {
    let (out, cost) = process(p, &sig.far, &sig.mic)?;
    let split = (scenario.far_only_s * RATE as f32) as usize;
    let split = split - split % SEGMENT;

    // Far-only part: ERLE = microphone energy / output energy over windows where the echo is
    // well above the noise floor.
    let noise_e = energy(&sig.noise) / sig.noise.len().max(1) as f64;
    let mut track = Vec::new();
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for start in (0..split).step_by(ERLE_WINDOW) {
        let end = (start + ERLE_WINDOW).min(split);
        let e_echo = energy(&sig.echo[start..end]);
        if e_echo < noise_e * (end - start) as f64 * 100.0 {
            continue; // a pause: nothing to cancel
        }
        let e_mic = energy(&sig.mic[start..end]);
        let e_out = energy(&out[start..end]);
        track.push((start as f32 / RATE as f32, db(e_mic / e_out.max(1e-20))));
        if start >= split / 2 {
            num += e_mic;
            den += e_out;
        }
    }
    let erle_db = db(num / den.max(1e-20));
    let convergence_s = track
        .iter()
        .rposition(|&(_, e)| e < 20.0)
        .map_or(track.first().map(|t| t.0), |i| {
            track.get(i + 1).map(|t| t.0)
        });

    // Double talk: how much of the near end's speech survives. The processor may delay its
    // output a little; align first. Per 20 ms segment where the near end speaks, the part of
    // the output along the near-end signal is the near end kept; the rest is residual echo,
    // noise and distortion.
    let near = &sig.near[split..];
    let near_out = linear_part(near, &out[split..]);
    let (mut kept, mut spoken) = (0.0f64, 0.0f64);
    let (mut snr_in, mut snr_out, mut segs) = (0.0f64, 0.0f64, 0usize);
    let near_active = active_threshold(near);
    for (i, ((s, l), o)) in near
        .chunks_exact(SEGMENT)
        .zip(near_out.chunks_exact(SEGMENT))
        .zip(out[split..].chunks_exact(SEGMENT))
        .enumerate()
    {
        let at = split + i * SEGMENT;
        let m = &sig.mic[at..at + SEGMENT];
        let (es, el) = (energy(s), energy(l));
        // Least-squares gain of the (linearly filtered) near end in this segment of output.
        let g = if el > 0.0 { dot(o, l) / el } else { 0.0 };
        let rest = (energy(o) - g * g * el).max(0.0);
        if es > near_active {
            kept += g * g * el;
            spoken += es;
            let interference_in = energy(m) - 2.0 * dot(m, s) + es;
            snr_in += db(es / interference_in.max(1e-20)).clamp(-10.0, 35.0);
            snr_out += db(g * g * el / rest.max(1e-20)).clamp(-10.0, 35.0);
            segs += 1;
        }
    }
    Ok(EchoReport {
        erle_db,
        erle_track: track,
        convergence_s,
        near_attenuation_db: db(spoken / kept.max(1e-20)),
        near_seg_snr_in_db: snr_in / segs.max(1) as f64,
        near_seg_snr_out_db: snr_out / segs.max(1) as f64,
        cost,
    })
}

/// Energy above which a 20 ms segment counts as speaking (30 dB below the loudest segment).
fn active_threshold(x: &[f32]) -> f64 {
    let max = x.chunks(SEGMENT).map(energy).fold(0.0f64, f64::max);
    max * 1e-3
}

/// Noise suppression results.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NoiseReport {
    /// SNR of the input (speech active level over noise), dB.
    pub snr_in_db: f64,
    /// SNR of the output, measured the same way, dB.
    pub snr_out_db: f64,
    /// Speech attenuation (the part of the output along the clean speech), dB.
    pub speech_attenuation_db: f64,
    /// Processing time per frame.
    pub cost: FrameCost,
}

/// Speech plus fan noise at `snr_db` through `p` (no far end): the SNR before and after.
/// SNR = (power while speaking − power in pauses) / power in pauses; the first second is left
/// for the suppressor to learn the noise.
pub fn measure_noise(
    p: &mut dyn CaptureProcessor,
    seconds: f32,
    snr_db: f32,
    seed: u64,
) -> Result<NoiseReport> {
    let voice = Voice::female(seed);
    let clean = speech(voice, seconds, 0.5, seconds);
    let noise = fan_noise(
        clean.len(),
        voice.level_dbfs - snr_db,
        seed.wrapping_add(11),
    );
    let mic: Vec<f32> = clean.iter().zip(&noise).map(|(s, n)| s + n).collect();
    let silence = vec![0.0f32; mic.len()];
    let (out, cost) = process(p, &silence, &mic)?;
    let skip = RATE as usize;
    let clean_out = linear_part(&clean[skip..], &out[skip..]);
    let active = active_threshold(&clean);
    let (mut in_act, mut in_pause, mut out_act, mut out_pause) = (0.0, 0.0, 0.0, 0.0);
    let (mut n_act, mut n_pause) = (0usize, 0usize);
    let (mut kept, mut spoken) = (0.0f64, 0.0f64);
    for (((s, l), o), m) in clean[skip..]
        .chunks_exact(SEGMENT)
        .zip(clean_out.chunks_exact(SEGMENT))
        .zip(out[skip..].chunks_exact(SEGMENT))
        .zip(mic[skip..].chunks_exact(SEGMENT))
    {
        let (es, el) = (energy(s), energy(l));
        if es > active {
            in_act += energy(m);
            out_act += energy(o);
            n_act += 1;
            let g = if el > 0.0 { dot(o, l) / el } else { 0.0 };
            kept += g * g * el;
            spoken += es;
        } else if es < active * 1e-3 {
            in_pause += energy(m);
            out_pause += energy(o);
            n_pause += 1;
        }
    }
    let snr = |act: f64, pause: f64| {
        let a = act / n_act.max(1) as f64;
        let p = pause / n_pause.max(1) as f64;
        db((a - p).max(1e-20) / p.max(1e-20))
    };
    Ok(NoiseReport {
        snr_in_db: snr(in_act, in_pause),
        snr_out_db: snr(out_act, out_pause),
        speech_attenuation_db: db(spoken / kept.max(1e-20)),
        cost,
    })
}

/// The processor under test in mono at 48 kHz (the measurement's format).
impl CaptureProcessor for super::AudioProcessor {
    fn render(&mut self, far: &[f32]) -> Result<()> {
        self.process_render(far)
    }

    fn capture(&mut self, mic: &mut [f32]) -> Result<()> {
        self.process_capture(mic)
    }
}
