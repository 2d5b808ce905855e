//! Echo cancellation and noise suppression, measured and printed as tables (see
//! `rtcio_media::apm::eval` for the signals and metrics):
//!
//! ```text
//! cargo bench -p rtcio-media --bench echo                          # our AudioProcessor (sonora)
//! cargo bench -p rtcio-media --bench echo --features apm-compare   # + aec3 and nnnoiseless
//! ```

use rtcio_media::apm::eval::{
    CaptureProcessor, EchoReport, EchoScenario, FRAME, Passthrough, measure_echo, measure_noise,
};
use rtcio_media::{ApmConfig, AudioProcessor, Result};

/// Echo path delays measured (loudspeaker → microphone, including device buffering).
const DELAYS_MS: [f32; 3] = [40.0, 120.0, 250.0];

type Factory = Box<dyn Fn() -> Result<Box<dyn CaptureProcessor>>>;

fn ours(config: ApmConfig) -> Factory {
    Box::new(move || Ok(Box::new(AudioProcessor::new(config, 48_000, 1, 1)?) as _))
}

/// sonora processing the full 48 kHz band (we keep its default 32 kHz internal rate).
struct SonoraFullBand {
    apm: sonora::AudioProcessing,
    out: Vec<f32>,
}

impl SonoraFullBand {
    fn new() -> Self {
        let config = sonora::Config {
            pipeline: sonora::config::Pipeline {
                maximum_internal_processing_rate: sonora::config::MaxProcessingRate::Rate48kHz,
                ..Default::default()
            },
            echo_canceller: Some(sonora::config::EchoCanceller::default()),
            high_pass_filter: Some(sonora::config::HighPassFilter::default()),
            ..Default::default()
        };
        let stream = sonora::StreamConfig::new(48_000, 1);
        Self {
            apm: sonora::AudioProcessing::builder()
                .config(config)
                .capture_config(stream)
                .render_config(stream)
                .build(),
            out: vec![0.0; FRAME],
        }
    }
}

impl CaptureProcessor for SonoraFullBand {
    fn render(&mut self, far: &[f32]) -> Result<()> {
        let _ = self.apm.process_render_f32(&[far], &mut [&mut self.out]);
        Ok(())
    }

    fn capture(&mut self, mic: &mut [f32]) -> Result<()> {
        let _ = self.apm.process_capture_f32(&[mic], &mut [&mut self.out]);
        mic.copy_from_slice(&self.out);
        Ok(())
    }
}

#[cfg(feature = "apm-compare")]
mod others {
    use rtcio_media::apm::eval::{CaptureProcessor, FRAME};
    use rtcio_media::{MediaError, Result};

    fn err(e: impl std::fmt::Display) -> MediaError {
        MediaError::InvalidInput(e.to_string())
    }

    /// `aec3` 0.4's standard chain (HPF → AEC3 → NS → post filter; AGC2 off like ours).
    pub struct Aec3 {
        p: aec3::pipelines::linear::LinearPipeline,
        out: Vec<f32>,
    }

    impl Aec3 {
        pub fn new(ns: bool) -> Result<Self> {
            let f = aec3::nodes::audio::AudioFormat::ten_ms(48_000, 1);
            let p = aec3::pipelines::linear::builder(f, f)
                .enable_noise_suppression(ns)
                .enable_gain_controller2(false)
                .build()
                .map_err(err)?;
            Ok(Self {
                p,
                out: vec![0.0; FRAME],
            })
        }
    }

    impl CaptureProcessor for Aec3 {
        fn render(&mut self, far: &[f32]) -> Result<()> {
            self.p.handle_render_frame(far).map_err(err)
        }

        fn capture(&mut self, mic: &mut [f32]) -> Result<()> {
            self.p
                .process_capture_frame(mic, &mut self.out)
                .map_err(err)?;
            mic.copy_from_slice(&self.out);
            Ok(())
        }
    }

    /// `nnnoiseless` (RNNoise): noise suppression only, 16-bit-scaled floats.
    pub struct Rnnoise {
        state: Box<nnnoiseless::DenoiseState<'static>>,
        input: Vec<f32>,
        out: Vec<f32>,
    }

    impl Rnnoise {
        pub fn new() -> Self {
            Self {
                state: nnnoiseless::DenoiseState::new(),
                input: vec![0.0; FRAME],
                out: vec![0.0; FRAME],
            }
        }
    }

    impl CaptureProcessor for Rnnoise {
        fn render(&mut self, _far: &[f32]) -> Result<()> {
            Ok(())
        }

        fn capture(&mut self, mic: &mut [f32]) -> Result<()> {
            for (d, s) in self.input.iter_mut().zip(mic.iter()) {
                *d = s * 32768.0;
            }
            self.state.process_frame(&mut self.out, &self.input);
            for (d, s) in mic.iter_mut().zip(&self.out) {
                *d = s / 32768.0;
            }
            Ok(())
        }
    }
}

fn echo_candidates() -> Vec<(&'static str, Factory)> {
    let aec = ApmConfig {
        echo_cancellation: true,
        high_pass: true,
        ..ApmConfig::MUSIC
    };
    let aec_ns = ApmConfig {
        noise_suppression: true,
        ..aec
    };
    #[allow(unused_mut)] // extended with the feature
    let mut v: Vec<(&'static str, Factory)> = vec![
        ("no processing", Box::new(|| Ok(Box::new(Passthrough) as _))),
        ("sonora AEC3+HPF (ours)", ours(aec)),
        ("sonora AEC3+NS+HPF (ours)", ours(aec_ns)),
        (
            "sonora AEC3+HPF, 48 kHz internal",
            Box::new(|| Ok(Box::new(SonoraFullBand::new()) as _)),
        ),
    ];
    #[cfg(feature = "apm-compare")]
    {
        v.push((
            "aec3 0.4 AEC3+HPF",
            Box::new(|| Ok(Box::new(others::Aec3::new(false)?) as _)),
        ));
        v.push((
            "aec3 0.4 AEC3+NS+HPF",
            Box::new(|| Ok(Box::new(others::Aec3::new(true)?) as _)),
        ));
    }
    v
}

fn noise_candidates() -> Vec<(&'static str, Factory)> {
    let ns = ApmConfig {
        noise_suppression: true,
        high_pass: true,
        ..ApmConfig::MUSIC
    };
    let hpf = ApmConfig {
        high_pass: true,
        ..ApmConfig::MUSIC
    };
    #[allow(unused_mut)] // extended with the feature
    let mut v: Vec<(&'static str, Factory)> = vec![
        ("no processing", Box::new(|| Ok(Box::new(Passthrough) as _))),
        ("sonora HPF only (ours)", ours(hpf)),
        ("sonora NS+HPF (ours)", ours(ns)),
    ];
    #[cfg(feature = "apm-compare")]
    {
        v.push((
            "aec3 0.4 NS+HPF",
            Box::new(|| Ok(Box::new(others::Aec3::new(true)?) as _)),
        ));
        v.push((
            "nnnoiseless 0.5 (RNNoise)",
            Box::new(|| Ok(Box::new(others::Rnnoise::new()) as _)),
        ));
    }
    v
}

fn us(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() -> Result<()> {
    println!("# Echo: far end alone 8 s, then double talk 6 s; room ERL 10 dB, RT60 250 ms,");
    println!("# mic noise -70 dBFS; ERLE over 4-8 s; convergence = ERLE >= 20 dB from then on");
    println!();
    println!(
        "| candidate | delay ms | ERLE dB | converged s | double-talk near-end attenuation dB | near-end segSNR in → out dB | µs / 10 ms (mean / median) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut summary: Vec<(&str, Vec<EchoReport>)> = Vec::new();
    for (name, make) in echo_candidates() {
        let mut reports = Vec::new();
        for delay_ms in DELAYS_MS {
            let scenario = EchoScenario {
                delay_ms,
                ..EchoScenario::default()
            };
            let mut p = make()?;
            let r = measure_echo(&mut *p, &scenario)?;
            println!(
                "| {name} | {delay_ms:.0} | {:.1} | {} | {:.1} | {:.1} → {:.1} | {:.0} / {:.0} |",
                r.erle_db,
                r.convergence_s
                    .map_or_else(|| "never".to_owned(), |c| format!("{c:.2}")),
                r.near_attenuation_db,
                r.near_seg_snr_in_db,
                r.near_seg_snr_out_db,
                us(r.cost.mean),
                us(r.cost.median),
            );
            reports.push(r);
        }
        summary.push((name, reports));
    }
    println!();
    println!("# Hard rooms (120 ms): loud = echo as loud as the far end (ERL 0 dB), RT60 400 ms;");
    println!("# distorting = a small speaker turned up (tanh, drive 4) in the default room");
    println!();
    println!(
        "| candidate | room | ERLE dB | converged s | double-talk near-end attenuation dB | near-end segSNR in → out dB |"
    );
    println!("|---|---|---|---|---|---|");
    let hard = [
        (
            "loud",
            EchoScenario {
                erl_db: 0.0,
                rt60_ms: 400.0,
                ..EchoScenario::default()
            },
        ),
        (
            "distorting",
            EchoScenario {
                speaker_drive: 4.0,
                ..EchoScenario::default()
            },
        ),
    ];
    for (name, make) in echo_candidates() {
        for (room, scenario) in &hard {
            let mut p = make()?;
            let r = measure_echo(&mut *p, scenario)?;
            println!(
                "| {name} | {room} | {:.1} | {} | {:.1} | {:.1} → {:.1} |",
                r.erle_db,
                r.convergence_s
                    .map_or_else(|| "never".to_owned(), |c| format!("{c:.2}")),
                r.near_attenuation_db,
                r.near_seg_snr_in_db,
                r.near_seg_snr_out_db,
            );
        }
    }
    println!();
    println!(
        "# Noise: speech + fan noise at 10 dB SNR, 10 s; SNR = (speaking - pause) / pause power"
    );
    println!();
    println!(
        "| candidate | SNR in dB | SNR out dB | gain dB | speech attenuation dB | µs / 10 ms (mean / median) |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, make) in noise_candidates() {
        let mut p = make()?;
        let r = measure_noise(&mut *p, 10.0, 10.0, 5)?;
        println!(
            "| {name} | {:.1} | {:.1} | {:+.1} | {:.1} | {:.0} / {:.0} |",
            r.snr_in_db,
            r.snr_out_db,
            r.snr_out_db - r.snr_in_db,
            r.speech_attenuation_db,
            us(r.cost.mean),
            us(r.cost.median),
        );
    }
    println!();
    println!("# Summary (worst case over the delays)");
    println!();
    println!(
        "| candidate | min ERLE dB | max convergence s | max double-talk attenuation dB | mean µs / 10 ms |"
    );
    println!("|---|---|---|---|---|");
    for (name, reports) in &summary {
        let min_erle = reports.iter().map(|r| r.erle_db).fold(f64::MAX, f64::min);
        let conv = reports
            .iter()
            .map(|r| r.convergence_s)
            .try_fold(0.0f32, |m, c| c.map(|c| m.max(c)));
        let att = reports
            .iter()
            .map(|r| r.near_attenuation_db)
            .fold(f64::MIN, f64::max);
        let cost = reports.iter().map(|r| us(r.cost.mean)).sum::<f64>() / reports.len() as f64;
        println!(
            "| {name} | {min_erle:.1} | {} | {att:.1} | {cost:.0} |",
            conv.map_or_else(|| "never".to_owned(), |c| format!("{c:.2}"))
        );
    }
    Ok(())
}
