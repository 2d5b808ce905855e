//! Plays an [`AudioMixer`] on a cpal output device, or on a null sink (a 20 ms clock that
//! discards the audio) when there is no device: bots, CI, headless machines.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, StreamTrait};
use cpal::{FromSample, SizedSample};
use tracing::{info, warn};

use crate::audio_device::{cpal_err, find_device, pick_config};
use crate::error::{MediaError, Result};
use crate::frame::{AUDIO_FRAME_DURATION, AUDIO_SAMPLE_RATE};
use crate::playout::mixer::AudioMixer;
use crate::resample::{AudioResampler, remix_channels};
use crate::source::{DeviceKind, sleep_until};

/// Where to play.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum OutputDevice {
    /// The system's default output.
    #[default]
    Default,
    /// A device by id (from [`crate::list_speakers`]) or name.
    Id(String),
    /// No device: pull the mixer every 20 ms and discard.
    Null,
}

/// A running output. Stops when dropped.
pub struct AudioOutput {
    stop: Arc<AtomicBool>,
    frames: Arc<FrameCounter>,
    thread: Option<JoinHandle<()>>,
    stream: Option<cpal::Stream>,
    device_name: String,
}

impl std::fmt::Debug for AudioOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioOutput")
            .field("device", &self.device_name)
            .field("null", &self.is_null())
            .finish_non_exhaustive()
    }
}

/// Counts frames pulled from the mixer and wakes waiters.
#[derive(Debug, Default)]
struct FrameCounter {
    count: AtomicU64,
    lock: Mutex<()>,
    changed: Condvar,
}

impl FrameCounter {
    fn add(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        // Taking the lock orders the increment with a waiter's check; never blocks for long.
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.changed.notify_all();
    }

    fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn wait_for(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while self.get() < n {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = match self.changed.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        true
    }
}

fn lock(mixer: &Mutex<AudioMixer>) -> std::sync::MutexGuard<'_, AudioMixer> {
    mixer.lock().unwrap_or_else(|e| e.into_inner())
}

impl AudioOutput {
    /// Starts playing the mixer on `device`. Errors when the device is missing or busy.
    pub fn start(mixer: Arc<Mutex<AudioMixer>>, device: OutputDevice) -> Result<Self> {
        match device {
            OutputDevice::Null => Ok(Self::null(mixer)),
            OutputDevice::Default => Self::cpal(mixer, None),
            OutputDevice::Id(id) => Self::cpal(mixer, Some(&id)),
        }
    }

    /// Like [`AudioOutput::start`], but falls back to the null sink (with a warning) when the
    /// device cannot be opened.
    pub fn start_or_null(mixer: Arc<Mutex<AudioMixer>>, device: OutputDevice) -> Self {
        match Self::start(Arc::clone(&mixer), device) {
            Ok(out) => out,
            Err(e) => {
                warn!(error = %e, "no audio output, using the null sink");
                Self::null(mixer)
            }
        }
    }

    /// True for the null sink.
    pub fn is_null(&self) -> bool {
        self.stream.is_none()
    }

    /// Name of the device playing.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// 20 ms frames pulled from the mixer so far.
    pub fn frames_played(&self) -> u64 {
        self.frames.get()
    }

    /// Blocks until `n` frames have been pulled from the mixer in total, or `timeout` passes.
    /// Returns whether the count was reached.
    pub fn wait_for_frames(&self, n: u64, timeout: Duration) -> bool {
        self.frames.wait_for(n, timeout)
    }

    /// The null sink: a thread that pulls one frame per 20 ms of wall-clock time.
    pub fn null(mixer: Arc<Mutex<AudioMixer>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(FrameCounter::default());
        let (stop2, frames2) = (Arc::clone(&stop), Arc::clone(&frames));
        let thread = std::thread::Builder::new()
            .name("rtcio-null-sink".into())
            .spawn(move || {
                let start = Instant::now();
                let mut n: u32 = 0;
                while !stop2.load(Ordering::Relaxed) {
                    let _ = lock(&mixer).mix_next();
                    frames2.add();
                    n = n.wrapping_add(1);
                    sleep_until(start + AUDIO_FRAME_DURATION * n);
                }
            })
            .ok();
        Self {
            stop,
            frames,
            thread,
            stream: None,
            device_name: "null".into(),
        }
    }

    fn cpal(mixer: Arc<Mutex<AudioMixer>>, id: Option<&str>) -> Result<Self> {
        let label = id.unwrap_or("default");
        let device = find_device(DeviceKind::Speaker, id)?;
        let channels = lock(&mixer).channels();
        let (config, format) = pick_config(&device, DeviceKind::Speaker, channels)?;
        let frames = Arc::new(FrameCounter::default());
        let stream = match format {
            cpal::SampleFormat::F32 => build::<f32>(&device, config, mixer, Arc::clone(&frames)),
            cpal::SampleFormat::I16 => build::<i16>(&device, config, mixer, Arc::clone(&frames)),
            cpal::SampleFormat::I32 => build::<i32>(&device, config, mixer, Arc::clone(&frames)),
            other => {
                return Err(MediaError::Unsupported(format!(
                    "output sample format {other:?}"
                )));
            }
        }
        .map_err(|e| cpal_err("speaker", label, &e))?;
        stream.play().map_err(|e| cpal_err("speaker", label, &e))?;
        let device_name = device
            .description()
            .map(|d| d.name().to_owned())
            .unwrap_or_else(|_| label.to_owned());
        info!(device = %device_name, rate = config.sample_rate, channels = config.channels, "audio output started");
        Ok(Self {
            stop: Arc::new(AtomicBool::new(false)),
            frames,
            thread: None,
            stream: Some(stream),
            device_name,
        })
    }

    /// Stops playback.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.stream = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AudioOutput {
    fn drop(&mut self) {
        self.stop();
    }
}

fn build<T>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    mixer: Arc<Mutex<AudioMixer>>,
    frames: Arc<FrameCounter>,
) -> std::result::Result<cpal::Stream, cpal::Error>
where
    T: SizedSample + FromSample<f32>,
{
    let dev_channels = config.channels;
    let mut resampler = if config.sample_rate != AUDIO_SAMPLE_RATE {
        AudioResampler::new(AUDIO_SAMPLE_RATE, config.sample_rate, dev_channels).ok()
    } else {
        None
    };
    let mut fifo: std::collections::VecDeque<f32> = std::collections::VecDeque::new();
    device.build_output_stream(
        config,
        move |out: &mut [T], _| {
            while fifo.len() < out.len() {
                let frame = lock(&mixer).mix_next();
                frames.add();
                let remixed = remix_channels(&frame.samples, frame.channels, dev_channels);
                match resampler.as_mut() {
                    Some(r) => match r.process(&remixed) {
                        Ok(s) => fifo.extend(s),
                        Err(_) => fifo.extend(std::iter::repeat_n(0.0, out.len())),
                    },
                    None => fifo.extend(remixed),
                }
            }
            let n = out.len();
            for (o, s) in out.iter_mut().zip(fifo.drain(..n)) {
                *o = T::from_sample(s);
            }
        },
        |e| warn!(error = %e, "audio output stream error"),
        Some(Duration::from_secs(2)),
    )
}

/// What [`play_test_sound`] played.
#[derive(Debug, Clone, PartialEq)]
pub struct TestSound {
    /// The output device's name (`null` for the null sink).
    pub device: String,
    /// Loudest 20 ms the mixer handed the output, dBFS.
    pub peak_dbfs: f32,
}

/// Plays a short test sound (a 440 Hz tone, fading in and out) on `device` through the same
/// mixer → output path as a call, and returns once it has been played. Blocking: run it off
/// an async runtime.
pub fn play_test_sound(device: OutputDevice, length: Duration) -> Result<TestSound> {
    use crate::codec::opus::{OpusConfig, OpusEncoder};
    use crate::source::AudioSource;
    use crate::synthetic::audio::{ToneConfig, ToneSource};

    let frames = (length.as_millis() / 20).clamp(5, 250) as u64;
    let mut tone = ToneSource::new(ToneConfig {
        amplitude: 0.3,
        mark_interval: Duration::ZERO,
        paced: false,
        ..ToneConfig::default()
    })?;
    let mut encoder = OpusEncoder::new(OpusConfig {
        dtx: false,
        ..OpusConfig::default()
    })?;
    let mixer = Arc::new(Mutex::new(AudioMixer::new(1)));
    let now = Instant::now();
    let mut rtp = 0u32;
    for i in 0..frames {
        let mut f = tone.next_frame()?;
        // 100 ms ramps: no click at either end.
        let n = f.samples.len();
        for (k, s) in f.samples.iter_mut().enumerate() {
            let t = (i as f32 * n as f32 + k as f32) / (frames as f32 * n as f32);
            *s *= (t / 0.1).min((1.0 - t) / 0.1).clamp(0.0, 1.0);
        }
        for packet in encoder.push(&f)? {
            lock(&mixer).push("test", rtp, packet.data, now)?;
            rtp = rtp.wrapping_add(960);
        }
    }
    let mut out = AudioOutput::start(Arc::clone(&mixer), device)?;
    let device = out.device_name().to_owned();
    // The jitter buffer's delay plus the tone, with room for a slow device.
    let want = frames + 20;
    let deadline = Instant::now() + length * 2 + Duration::from_secs(2);
    let mut peak = f32::NEG_INFINITY;
    while out.frames_played() < want && Instant::now() < deadline {
        out.wait_for_frames(out.frames_played() + 1, AUDIO_FRAME_DURATION * 5);
        if let Some(p) = lock(&mixer).peer("test") {
            peak = peak.max(p.level().rms_dbfs());
        }
    }
    let played = out.frames_played() >= want;
    out.stop();
    if played {
        Ok(TestSound {
            device,
            peak_dbfs: peak,
        })
    } else {
        Err(MediaError::Stopped)
    }
}
