//! WAV decoding to interleaved `f32` samples: the container parsing of [`super::wav`], apart from
//! resampling so it can be fuzzed alone (`fuzz/`).

use std::io::Read;

use crate::error::{MediaError, Result};

/// hound's errors as ours: I/O stays I/O, anything else is a format error.
pub fn wav_err(e: hound::Error) -> MediaError {
    match e {
        hound::Error::IoError(io) => MediaError::Io(io),
        other => MediaError::Format(other.to_string()),
    }
}

/// Reads every sample of a WAV stream as `f32` in [-1, 1] (integers scaled by their bit depth),
/// interleaved as stored, with the stream's spec.
pub fn read_pcm<R: Read>(mut reader: hound::WavReader<R>) -> Result<(hound::WavSpec, Vec<f32>)> {
    let spec = reader.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(MediaError::Format("WAV with no channels or rate".into()));
    }
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .collect::<std::result::Result<_, _>>()
            .map_err(wav_err)?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1i64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<std::result::Result<_, _>>()
                .map_err(wav_err)?
        }
    };
    Ok((spec, samples))
}
