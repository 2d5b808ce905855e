//! WAV files as an audio source for bots (any rate, 1 or 2 channels, int or float samples),
//! resampled to 48 kHz.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{MediaError, Result};
use crate::frame::{AUDIO_SAMPLE_RATE, AudioFrame};
use crate::resample::{AudioResampler, remix_channels};
use crate::source::{AudioSource, sleep_until};

use super::wav_pcm::{read_pcm, wav_err};

/// Reads a whole WAV file and plays it as 20 ms, 48 kHz frames.
#[derive(Debug)]
pub struct WavSource {
    pcm: Vec<f32>,
    channels: u16,
    position: usize,
    looping: bool,
    paced: bool,
    emitted: u64,
    start: Option<Instant>,
}

impl WavSource {
    /// Opens `path`, converting to `channels` (1 or 2) at 48 kHz.
    pub fn open(path: impl AsRef<Path>, channels: u16, looping: bool, paced: bool) -> Result<Self> {
        if !(1..=2).contains(&channels) {
            return Err(MediaError::InvalidInput(format!("{channels} channels")));
        }
        let (spec, samples) = read_pcm(hound::WavReader::open(path).map_err(wav_err)?)?;
        let remixed = remix_channels(&samples, spec.channels, channels);
        let mut resampler = AudioResampler::new(spec.sample_rate, AUDIO_SAMPLE_RATE, channels)?;
        let mut pcm = resampler.process(&remixed)?;
        // Flush the resampler's tail with silence.
        let tail = vec![0.0; spec.sample_rate as usize / 10 * channels as usize];
        pcm.extend(resampler.process(&tail)?);
        Ok(Self {
            pcm,
            channels,
            position: 0,
            looping,
            paced,
            emitted: 0,
            start: None,
        })
    }

    /// Duration of the (resampled) file.
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(
            self.pcm.len() as f64 / f64::from(self.channels) / f64::from(AUDIO_SAMPLE_RATE),
        )
    }
}

impl AudioSource for WavSource {
    fn next_frame(&mut self) -> Result<AudioFrame> {
        let len = 960 * self.channels as usize;
        if self.position >= self.pcm.len() {
            if !self.looping || self.pcm.is_empty() {
                return Err(MediaError::EndOfStream);
            }
            self.position = 0;
        }
        let end = (self.position + len).min(self.pcm.len());
        let mut samples = self.pcm[self.position..end].to_vec();
        samples.resize(len, 0.0);
        self.position = end;
        let timestamp = Duration::from_millis(self.emitted * 20);
        self.emitted += 1;
        if self.paced {
            let start = *self.start.get_or_insert_with(Instant::now);
            sleep_until(start + timestamp);
        }
        Ok(AudioFrame {
            samples,
            channels: self.channels,
            sample_rate: AUDIO_SAMPLE_RATE,
            timestamp,
        })
    }

    fn sample_rate(&self) -> u32 {
        AUDIO_SAMPLE_RATE
    }

    fn channels(&self) -> u16 {
        self.channels
    }
}
