//! The echo-path measurement as a test: far-end speech through a simulated room into the
//! microphone, our capture processing with the far end as reference. Thresholds are well
//! below the goals (ERLE ≥ 25 dB within 2 s, near end attenuated ≤ 3 dB; the bench measures
//! 43–46 dB within 0.5 s and ~1.5 dB), and the same measurement must fail when the canceller is
//! bypassed.

use std::sync::OnceLock;
use std::time::Duration;

use rtcio_media::apm::eval::{
    EchoReport, EchoScenario, EchoSignals, measure_echo_on, measure_noise,
};
use rtcio_media::{ApmConfig, AudioProcessor, MediaError};

/// Echo cancellation (and the high-pass filter it works with), no level changes from NS/AGC.
const AEC: ApmConfig = ApmConfig {
    echo_cancellation: true,
    high_pass: true,
    noise_suppression: false,
    auto_gain: false,
};

/// Short enough for a debug build: 6 s far end alone (ERLE measured over 3–6 s), 3 s of
/// double talk.
fn scenario() -> EchoScenario {
    EchoScenario {
        far_only_s: 6.0,
        double_talk_s: 3.0,
        delay_ms: 150.0,
        ..EchoScenario::default()
    }
}

/// Rendered once per test binary (the tests run one after another in one process).
fn signals() -> &'static EchoSignals {
    static SIGNALS: OnceLock<EchoSignals> = OnceLock::new();
    SIGNALS.get_or_init(|| scenario().signals())
}

fn run(p: &mut AudioProcessor) -> EchoReport {
    let r = measure_echo_on(p, &scenario(), signals()).unwrap();
    eprintln!(
        "ERLE {:.1} dB, converged {:?} s, near-end attenuation {:.1} dB, segSNR {:.1} -> {:.1} dB",
        r.erle_db,
        r.convergence_s,
        r.near_attenuation_db,
        r.near_seg_snr_in_db,
        r.near_seg_snr_out_db
    );
    r
}

#[test]
fn the_echo_is_cancelled_and_the_near_end_kept() {
    let mut p = AudioProcessor::new(AEC, 48_000, 1, 1).unwrap();
    let r = run(&mut p);
    assert!(r.erle_db >= 15.0, "ERLE {:.1} dB", r.erle_db);
    assert!(
        r.convergence_s.is_some_and(|c| c <= 3.0),
        "converged at {:?}",
        r.convergence_s
    );
    assert!(
        r.near_attenuation_db <= 6.0,
        "near end attenuated {:.1} dB",
        r.near_attenuation_db
    );
}

/// The same measurement without the canceller (switched off, or no output device) must fail
/// the thresholds above: the test cannot pass on a bypass.
#[test]
fn without_the_canceller_the_measurement_fails() {
    let off = ApmConfig {
        echo_cancellation: false,
        ..AEC
    };
    let mut p = AudioProcessor::new(off, 48_000, 1, 1).unwrap();
    let r = run(&mut p);
    assert!(r.erle_db < 3.0, "ERLE {:.1} dB", r.erle_db);
    assert_eq!(r.convergence_s, None);

    let mut p = AudioProcessor::new(AEC, 48_000, 1, 1).unwrap();
    p.set_output_present(false);
    assert!(!p.echo_cancelling());
    let r = run(&mut p);
    assert!(r.erle_db < 3.0, "ERLE {:.1} dB", r.erle_db);
}

/// The far end handed over through a `RenderTap` (as the output callback would) works like
/// direct `process_render`, and the delay hint is accepted.
#[test]
fn the_render_tap_feeds_the_canceller() {
    use rtcio_media::Result;
    use rtcio_media::apm::eval::CaptureProcessor;

    struct Tapped {
        p: AudioProcessor,
        tap: rtcio_media::RenderTap,
    }
    impl CaptureProcessor for Tapped {
        fn render(&mut self, far: &[f32]) -> Result<()> {
            assert!(self.tap.push(far));
            Ok(())
        }
        fn capture(&mut self, mic: &mut [f32]) -> Result<()> {
            self.p.process_capture(mic)
        }
    }
    let mut p = AudioProcessor::new(AEC, 48_000, 1, 1).unwrap();
    p.set_delay_hint(Duration::from_millis(150));
    let tap = p.render_tap();
    let mut t = Tapped { p, tap };
    let r = measure_echo_on(&mut t, &scenario(), signals()).unwrap();
    assert!(r.erle_db >= 15.0, "ERLE {:.1} dB", r.erle_db);
    assert!(t.p.stats().erle_db.is_some());
}

#[test]
fn noise_suppression_raises_the_snr() {
    let hpf = ApmConfig {
        high_pass: true,
        ..ApmConfig::MUSIC
    };
    let ns = ApmConfig {
        noise_suppression: true,
        ..hpf
    };
    let mut p = AudioProcessor::new(hpf, 48_000, 1, 1).unwrap();
    let before = measure_noise(&mut p, 5.0, 10.0, 5).unwrap();
    let mut p = AudioProcessor::new(ns, 48_000, 1, 1).unwrap();
    let after = measure_noise(&mut p, 5.0, 10.0, 5).unwrap();
    eprintln!("HPF only {before:?}\nNS+HPF {after:?}");
    assert!(
        after.snr_out_db >= before.snr_out_db + 6.0,
        "SNR {:.1} dB with NS, {:.1} dB without",
        after.snr_out_db,
        before.snr_out_db
    );
    assert!(after.speech_attenuation_db <= 4.0);
}

#[test]
fn music_mode_passes_audio_bit_for_bit() {
    let mut p = AudioProcessor::new(ApmConfig::MUSIC, 48_000, 2, 2).unwrap();
    assert!(p.config().is_bypass());
    let far: Vec<f32> = (0..1920).map(|i| (i as f32 * 0.01).sin() * 0.5).collect();
    let near: Vec<f32> = (0..1920).map(|i| (i as f32 * 0.02).cos() * 0.3).collect();
    let mut out = near.clone();
    p.process_render(&far).unwrap(); // 20 ms stereo
    p.process_capture(&mut out).unwrap();
    assert_eq!(out, near);
}

#[test]
fn voice_mode_handles_the_pipeline_formats() {
    // Mic mono or stereo, mixer mono or stereo, 20 ms frames at 48 kHz.
    for (capture, render) in [(1u16, 1u16), (1, 2), (2, 1), (2, 2)] {
        let mut p = AudioProcessor::new(ApmConfig::VOICE, 48_000, capture, render).unwrap();
        let far = vec![0.1f32; 960 * usize::from(render)];
        let mut near = vec![0.05f32; 960 * usize::from(capture)];
        near[7] = f32::NAN; // a broken driver sample must not poison the filters
        for _ in 0..50 {
            p.process_render(&far).unwrap();
            p.process_capture(&mut near).unwrap();
            assert!(near.iter().all(|s| s.is_finite()));
        }
    }
}

#[test]
fn other_rates_work_too() {
    for rate in [8_000u32, 16_000, 32_000, 44_100] {
        let mut p = AudioProcessor::new(ApmConfig::VOICE, rate, 1, 2).unwrap();
        let far = vec![0.1f32; p.render_frame_len() * 2];
        let mut near = vec![0.05f32; p.capture_frame_len() * 2];
        for _ in 0..20 {
            p.process_render(&far).unwrap();
            p.process_capture(&mut near).unwrap();
        }
        assert_eq!(p.sample_rate(), rate);
    }
}

/// The send pipeline owns the processor on its thread; the output callback holds the tap.
#[test]
fn the_processor_moves_to_a_thread_and_the_tap_is_shared() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<AudioProcessor>();
    send_sync::<rtcio_media::RenderTap>();
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    assert!(matches!(
        AudioProcessor::new(ApmConfig::VOICE, 44_123, 1, 1),
        Err(MediaError::Unsupported(_))
    ));
    assert!(matches!(
        AudioProcessor::new(ApmConfig::VOICE, 96_000, 1, 1),
        Err(MediaError::Unsupported(_))
    ));
    assert!(matches!(
        AudioProcessor::new(ApmConfig::VOICE, 48_000, 3, 1),
        Err(MediaError::InvalidInput(_))
    ));
    let mut p = AudioProcessor::new(ApmConfig::VOICE, 48_000, 1, 2).unwrap();
    let mut odd = vec![0.0f32; 500];
    assert!(matches!(
        p.process_capture(&mut odd),
        Err(MediaError::InvalidInput(_))
    ));
    assert!(matches!(
        p.process_render(&[0.0; 480]), // mono frame for a stereo far end
        Err(MediaError::InvalidInput(_))
    ));
    assert!(!p.render_tap().push(&[0.0; 100]));
    assert!(p.process_capture(&mut []).is_err());
}

#[test]
fn switches_change_at_run_time() {
    let mut p = AudioProcessor::new(ApmConfig::VOICE, 48_000, 1, 1).unwrap();
    assert!(p.echo_cancelling());
    p.set_config(ApmConfig::MUSIC);
    assert!(!p.echo_cancelling());
    let mut x = vec![0.25f32; 480];
    p.process_capture(&mut x).unwrap();
    assert!(x.iter().all(|&s| s == 0.25));
    p.set_config(ApmConfig::default());
    assert_eq!(p.config(), ApmConfig::VOICE);
    p.set_output_present(false);
    assert!(!p.echo_cancelling());
    p.set_output_present(true);
    assert!(p.echo_cancelling());
}
