//! The start screen's preview without a window: the synthetic sources (what
//! `RTCIO_FAKE_MEDIA=1` selects) deliver `preview/camera` binary frames to a frame sink and
//! `mic-level` events with a nonzero level for the tone; switching devices changes what
//! arrives; a device that does not exist gives a message, not a failure.

use std::sync::Arc;
use std::time::Duration;

use rtcio_desktop::media::{self, FrameSink, TEST_PATTERN_ID, TONE_ID};
use rtcio_desktop::preview::{MIC_LEVEL_EVENT, PREVIEW_KEY, PREVIEW_SIZE, Preview};
use rtcio_desktop::session::UiSink;
use serde_json::Value;
use std::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

type Frames = mpsc::Receiver<(String, u32, u32)>;
type Events = mpsc::Receiver<(String, Value)>;

fn sinks() -> (FrameSink, Frames, UiSink, Events) {
    let (ftx, frx) = mpsc::channel();
    let frames: FrameSink = Arc::new(move |bytes: Vec<u8>| {
        let h = media::decode_frame_header(&bytes).expect("well-formed binary frame");
        let _ = ftx.send((h.key, h.width, h.height));
    });
    let (tx, rx) = mpsc::channel();
    let ui: UiSink = Arc::new(move |name: &str, payload: Value| {
        let _ = tx.send((name.to_string(), payload));
    });
    (frames, frx, ui, rx)
}

fn next_frame(rx: &Frames) -> (String, u32, u32) {
    rx.recv_timeout(WAIT).expect("a preview frame")
}

fn next_level(rx: &Events) -> (f64, f64) {
    let (name, v) = rx.recv_timeout(WAIT).expect("a mic-level event");
    assert_eq!(name, MIC_LEVEL_EVENT);
    (
        v["rms"].as_f64().expect("rms"),
        v["peak"].as_f64().expect("peak"),
    )
}

fn drain<T>(rx: &mpsc::Receiver<T>) {
    while rx.try_recv().is_ok() {}
}

#[test]
fn synthetic_sources_give_frames_and_levels() {
    let (frames, frx, ui, erx) = sinks();
    let (preview, info) = Preview::start(Some(TEST_PATTERN_ID), Some(TONE_ID), false, frames, ui);
    assert!(
        info.video && info.audio && info.errors.is_empty(),
        "{info:?}"
    );

    for _ in 0..3 {
        let (key, w, h) = next_frame(&frx);
        assert_eq!(key, PREVIEW_KEY);
        assert!(w <= PREVIEW_SIZE.0 && h <= PREVIEW_SIZE.1 && w > 0 && h > 0);
    }
    // The tone is 0.25 peak: its RMS is about 0.18, far from silence, never above full scale.
    for _ in 0..3 {
        let (rms, peak) = next_level(&erx);
        assert!(rms > 0.05 && rms <= 1.0, "rms {rms}");
        assert!(peak >= rms && peak <= 1.0, "peak {peak}");
    }

    preview.stop();
    // Stopped means stopped: the sinks' senders are gone with the threads.
    drain(&frx);
    drain(&erx);
    assert!(frx.recv_timeout(Duration::from_millis(300)).is_err());
    assert!(erx.recv_timeout(Duration::from_millis(300)).is_err());
}

#[test]
fn fake_media_replaces_any_chosen_device() {
    let (frames, frx, ui, erx) = sinks();
    let (preview, info) = Preview::start(
        Some("/dev/video-that-does-not-exist"),
        Some("no-such-microphone"),
        true,
        frames,
        ui,
    );
    assert!(
        info.video && info.audio && info.errors.is_empty(),
        "{info:?}"
    );
    assert_eq!(next_frame(&frx).0, PREVIEW_KEY);
    assert!(next_level(&erx).0 > 0.05);
    preview.stop();
}

#[test]
fn switching_devices_changes_what_arrives() {
    // Camera only: frames, no levels.
    let (frames, frx, ui, erx) = sinks();
    let (preview, info) = Preview::start(Some(TEST_PATTERN_ID), None, false, frames, ui);
    assert!(info.video && !info.audio, "{info:?}");
    assert_eq!(next_frame(&frx).0, PREVIEW_KEY);
    preview.stop();
    // The sinks were moved into the stopped preview's threads: their senders are gone.
    drain(&frx);
    assert!(frx.recv().is_err(), "frames after stop");
    assert!(erx.recv().is_err(), "no mic was chosen, yet levels arrived");

    // Mic only: levels, no frames.
    let (frames, frx, ui, erx) = sinks();
    let (preview, info) = Preview::start(None, Some(TONE_ID), false, frames, ui);
    assert!(!info.video && info.audio, "{info:?}");
    assert!(next_level(&erx).0 > 0.05);
    assert!(
        frx.recv_timeout(Duration::from_millis(300)).is_err(),
        "no camera was chosen, yet frames arrived"
    );
    preview.stop();
}

#[test]
fn missing_devices_are_reported_not_fatal() {
    let (frames, frx, ui, erx) = sinks();
    let (preview, info) = Preview::start(
        Some("/dev/video-that-does-not-exist"),
        Some("no-such-microphone"),
        false,
        frames,
        ui,
    );
    assert!(!info.video && !info.audio, "{info:?}");
    assert_eq!(info.errors.len(), 2, "{info:?}");
    assert!(info.errors[0].contains("camera"), "{:?}", info.errors);
    assert!(info.errors[1].contains("microphone"), "{:?}", info.errors);
    preview.stop();
    assert!(frx.recv().is_err());
    assert!(erx.recv().is_err());

    // A working microphone next to a missing camera still gets its meter.
    let (frames, _frx, ui, erx) = sinks();
    let (preview, info) = Preview::start(
        Some("/dev/video-that-does-not-exist"),
        Some(TONE_ID),
        false,
        frames,
        ui,
    );
    assert!(
        !info.video && info.audio && info.errors.len() == 1,
        "{info:?}"
    );
    assert!(next_level(&erx).0 > 0.05);
    preview.stop();
}
