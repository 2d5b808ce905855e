//! ALSA's `null` capture device (what a machine without a sound card has) hands cpal buffers as
//! fast as they are asked for. The microphone must pace that to real time and log a few lines,
//! not one warning per dropped buffer (it used to log ~40 000 a second). Alone in its own test
//! binary because it installs a global tracing subscriber.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rtcio_media::{AudioSource, MicrophoneConfig, MicrophoneSource, list_microphones};

/// Counts every event at WARN or above, from any thread.
struct CountWarnings(Arc<AtomicUsize>);

impl tracing::Subscriber for CountWarnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn the_null_device_microphone_runs_in_real_time_and_logs_a_few_lines() {
    let null_id = "alsa:null";
    let listed = list_microphones()
        .map(|l| l.iter().any(|d| d.id == null_id))
        .unwrap_or(false);
    if !listed {
        eprintln!("skipped: no {null_id} device");
        return;
    }
    let warnings = Arc::new(AtomicUsize::new(0));
    tracing::subscriber::set_global_default(CountWarnings(Arc::clone(&warnings))).unwrap();
    let mut mic = MicrophoneSource::open(MicrophoneConfig {
        device: Some(null_id.into()),
        channels: 1,
    })
    .unwrap();
    let start = Instant::now();
    let mut audio = Duration::ZERO;
    // Read as fast as frames come for two seconds of wall-clock time.
    while start.elapsed() < Duration::from_secs(2) {
        let frame = mic.next_frame().unwrap();
        audio += Duration::from_secs_f64(frame.frames() as f64 / 48_000.0);
    }
    let wall = start.elapsed();
    mic.stop();
    let n = warnings.load(Ordering::Relaxed);
    eprintln!("{audio:?} of audio in {wall:?}, {n} warnings");
    // Real time plus the pacing slack (0.5 s) and a little resampler / reframer buffering.
    assert!(
        audio <= wall + Duration::from_millis(700),
        "{audio:?} of audio in {wall:?}"
    );
    assert!(n <= 3, "{n} warnings in {wall:?}");
}
