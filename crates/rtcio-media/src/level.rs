//! Audio level metering (RMS and peak per frame), for the microphone meter and speaking
//! indicators.

use crate::frame::AudioFrame;

/// Level of one frame (all channels together).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AudioLevel {
    /// Root mean square, linear 0..1.
    pub rms: f32,
    /// Largest absolute sample, linear 0..1.
    pub peak: f32,
}

impl AudioLevel {
    /// Measures a frame.
    pub fn measure(frame: &AudioFrame) -> Self {
        Self::of_samples(&frame.samples)
    }

    /// Measures interleaved samples.
    pub fn of_samples(samples: &[f32]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let (sum, peak) = samples.iter().fold((0.0f64, 0.0f32), |(s, p), &x| {
            (s + f64::from(x) * f64::from(x), p.max(x.abs()))
        });
        Self {
            rms: (sum / samples.len() as f64).sqrt() as f32,
            peak: peak.min(1.0),
        }
    }

    /// RMS in dBFS (-100 for silence).
    pub fn rms_dbfs(&self) -> f32 {
        to_dbfs(self.rms)
    }

    /// Peak in dBFS (-100 for silence).
    pub fn peak_dbfs(&self) -> f32 {
        to_dbfs(self.peak)
    }
}

fn to_dbfs(linear: f32) -> f32 {
    if linear <= 1e-5 {
        -100.0
    } else {
        20.0 * linear.log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_scale_square_is_zero_dbfs() {
        let l = AudioLevel::of_samples(&[1.0, -1.0, 1.0, -1.0]);
        assert!((l.rms_dbfs()).abs() < 0.01);
        assert_eq!(AudioLevel::of_samples(&[0.0; 8]).rms_dbfs(), -100.0);
    }
}
