//! Microphone capture through cpal, resampled to 48 kHz with rubato and cut into 20 ms frames.
//! The device's buffers are paced to real time and drops are logged in summaries (the
//! `pacing` module).

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, StreamTrait};
use cpal::{FromSample, SizedSample};
use tracing::{info, warn};

use crate::audio_device::{cpal_err, find_device, pick_config};
use crate::capture::pacing::{CaptureCallback, DEFAULT_SLACK};
use crate::error::{MediaError, Result};
use crate::frame::{AUDIO_SAMPLE_RATE, AudioFrame};
use crate::resample::{AudioResampler, Reframer, remix_channels};
use crate::source::{AudioSource, DeviceKind};

/// Settings of a [`MicrophoneSource`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MicrophoneConfig {
    /// Device id or name from [`crate::list_microphones`]; `None` is the default input.
    pub device: Option<String>,
    /// Output channels (1 for voice, 2 for stereo sources).
    pub channels: u16,
}

impl Default for MicrophoneConfig {
    fn default() -> Self {
        Self {
            device: None,
            channels: 1,
        }
    }
}

/// A running microphone: 20 ms frames at 48 kHz.
pub struct MicrophoneSource {
    stream: Option<cpal::Stream>,
    rx: Receiver<Vec<f32>>,
    device_channels: u16,
    channels: u16,
    resampler: AudioResampler,
    reframer: Reframer,
    name: String,
}

impl std::fmt::Debug for MicrophoneSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MicrophoneSource")
            .field("device", &self.name)
            .finish_non_exhaustive()
    }
}

fn build<T>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    tx: SyncSender<Vec<f32>>,
) -> std::result::Result<cpal::Stream, cpal::Error>
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let mut callback = CaptureCallback::new(tx, config.sample_rate, config.channels, DEFAULT_SLACK);
    device.build_input_stream(
        config,
        move |data: &[T], _| callback.deliver(Instant::now(), data),
        |e| warn!(error = %e, "microphone stream error"),
        Some(Duration::from_secs(2)),
    )
}

impl MicrophoneSource {
    /// Opens and starts the microphone. A missing device is [`MediaError::DeviceNotFound`].
    pub fn open(config: MicrophoneConfig) -> Result<Self> {
        if !(1..=2).contains(&config.channels) {
            return Err(MediaError::InvalidInput(format!(
                "{} channels",
                config.channels
            )));
        }
        let label = config.device.clone().unwrap_or_else(|| "default".into());
        let device = find_device(DeviceKind::Microphone, config.device.as_deref())?;
        let (stream_config, format) =
            pick_config(&device, DeviceKind::Microphone, config.channels)?;
        let (tx, rx) = sync_channel(64);
        let stream = match format {
            cpal::SampleFormat::F32 => build::<f32>(&device, stream_config, tx),
            cpal::SampleFormat::I16 => build::<i16>(&device, stream_config, tx),
            cpal::SampleFormat::I32 => build::<i32>(&device, stream_config, tx),
            cpal::SampleFormat::U16 => build::<u16>(&device, stream_config, tx),
            other => {
                return Err(MediaError::Unsupported(format!(
                    "input sample format {other:?}"
                )));
            }
        }
        .map_err(|e| cpal_err("microphone", &label, &e))?;
        stream
            .play()
            .map_err(|e| cpal_err("microphone", &label, &e))?;
        let name = device
            .description()
            .map(|d| d.name().to_owned())
            .unwrap_or(label);
        info!(device = %name, rate = stream_config.sample_rate, channels = stream_config.channels, "microphone started");
        Ok(Self {
            stream: Some(stream),
            rx,
            device_channels: stream_config.channels,
            channels: config.channels,
            resampler: AudioResampler::new(
                stream_config.sample_rate,
                AUDIO_SAMPLE_RATE,
                config.channels,
            )?,
            reframer: Reframer::new(AUDIO_SAMPLE_RATE, config.channels),
            name,
        })
    }

    /// Name of the device.
    pub fn device_name(&self) -> &str {
        &self.name
    }
}

impl AudioSource for MicrophoneSource {
    fn next_frame(&mut self) -> Result<AudioFrame> {
        loop {
            if let Some(frame) = self.reframer.pop() {
                return Ok(frame);
            }
            if self.stream.is_none() {
                return Err(MediaError::Stopped);
            }
            let chunk = match self.rx.recv_timeout(Duration::from_secs(2)) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(MediaError::Device {
                        kind: "microphone",
                        message: "no audio for 2 s".into(),
                    });
                }
                Err(RecvTimeoutError::Disconnected) => return Err(MediaError::Stopped),
            };
            let remixed = remix_channels(&chunk, self.device_channels, self.channels);
            let resampled = self.resampler.process(&remixed)?;
            self.reframer.push(&resampled);
        }
    }

    fn sample_rate(&self) -> u32 {
        AUDIO_SAMPLE_RATE
    }

    fn channels(&self) -> u16 {
        self.channels
    }

    fn stop(&mut self) {
        self.stream = None;
    }
}
