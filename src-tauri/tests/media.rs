//! Media end to end without a window: two sessions on the embedded server (loopback) send the
//! synthetic test pattern + tone (what `RTCIO_FAKE_MEDIA=1` selects in the app) and each
//! side's frame sink gets the other's video as binary frames of the tile's size; turning the
//! camera off stops the frames; a screen share under a private Xvfb appears on the other side
//! and goes away after stop.

mod common;

use std::sync::Arc;
use std::time::Duration;

use rtcio::MediaKind;
use rtcio_desktop::media::{self, FrameSink, MediaConfig};
use rtcio_desktop::session::{JoinConfig, ServerChoice, Session, UiSink};
use rtcio_media::capture::xvfb::VirtualDisplay;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use common::session::Events;
/// `(key, width, height, format)` of each binary frame.
type Frames = mpsc::UnboundedReceiver<(String, u32, u32, media::FrameFormat)>;

fn sinks() -> (UiSink, Events, FrameSink, Frames) {
    let (tx, rx) = mpsc::unbounded_channel();
    let ui: UiSink = Arc::new(move |name: &str, payload: Value| {
        let _ = tx.send((name.to_string(), payload));
    });
    let (ftx, frx) = mpsc::unbounded_channel();
    let frames: FrameSink = Arc::new(move |bytes: Vec<u8>| {
        let h = media::decode_frame_header(&bytes).expect("well-formed binary frame");
        let _ = ftx.send((h.key, h.width, h.height, h.format));
    });
    (ui, rx, frames, frx)
}

fn config(name: &str, server: ServerChoice) -> JoinConfig {
    let mut cfg = common::session::config(name, "media-room", server);
    cfg.media = MediaConfig::synthetic();
    cfg
}

const WAIT: Duration = Duration::from_secs(30);

async fn expect(rx: &mut Events, what: &str, pred: impl Fn(&str, &Value) -> bool) -> Value {
    common::session::expect(rx, WAIT, what, pred).await
}

/// Waits for a frame of `key` of exactly `size`.
async fn expect_frame(rx: &mut Frames, key: &str, size: (u32, u32)) {
    expect_frame_as(rx, key, size, None).await
}

/// Waits for a frame of `key` of exactly `size` (and `format`, if given).
async fn expect_frame_as(
    rx: &mut Frames,
    key: &str,
    size: (u32, u32),
    format: Option<media::FrameFormat>,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((k, w, h, f)))
                if k == key && (w, h) == size && format.is_none_or(|x| x == f) =>
            {
                return;
            }
            Ok(Some(_)) => continue,
            Ok(None) => panic!("frame sink closed while waiting for {key}"),
            Err(_) => panic!("no {size:?} frame of {key} within {WAIT:?}"),
        }
    }
}

/// Counts frames of `key` arriving within `window`.
async fn frames_within(rx: &mut Frames, key: &str, window: Duration) -> usize {
    let end = Instant::now() + window;
    let mut n = 0;
    while let Ok(Some((k, ..))) = tokio::time::timeout_at(end, rx.recv()).await {
        n += usize::from(k == key);
    }
    n
}

fn drain(rx: &mut Frames) {
    while rx.try_recv().is_ok() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_exchange_video_toggle_camera_and_share_a_screen() {
    let (ui_a, mut ev_a, fr_a, mut frames_a) = sinks();
    let (a, info_a) = Session::join_with_frames(config("Ann", ServerChoice::Host), ui_a, fr_a)
        .await
        .expect("host joins");
    assert!(info_a.media_errors.is_empty(), "{:?}", info_a.media_errors);
    assert_eq!(info_a.preview_key.as_deref(), Some(media::SELF_PREVIEW_KEY));
    assert!(info_a.mic && info_a.cam);
    let url = info_a.share_urls[0].clone();

    let (ui_b, mut ev_b, fr_b, mut frames_b) = sinks();
    let (mut b, info_b) =
        Session::join_with_frames(config("Bob", ServerChoice::Url(url)), ui_b, fr_b)
            .await
            .expect("guest joins");

    // Our own preview, at the default tile size.
    expect_frame(&mut frames_a, media::SELF_PREVIEW_KEY, media::DEFAULT_TILE).await;

    // Each side sees the other's camera stream, announced the demo's way, with the name.
    let added = expect(&mut ev_b, "Ann's camera at B", |n, v| {
        n == "stream-added" && v["peerId"] == info_a.self_id && v["kind"] == "camera"
    })
    .await;
    assert_eq!(added["name"], "Ann");
    let key_a = added["key"].as_str().expect("key").to_string();
    let added = expect(&mut ev_a, "Bob's camera at A", |n, v| {
        n == "stream-added" && v["peerId"] == info_b.self_id && v["kind"] == "camera"
    })
    .await;
    assert_eq!(added["name"], "Bob");
    let key_b = added["key"].as_str().expect("key").to_string();

    // Who is talking: Ann's tone is heard at B as her audio level (the speaking ring's input),
    // well above the UI's "speaking" threshold (−45 dBFS).
    let level = expect(&mut ev_b, "Ann's audio level at B", |n, v| {
        n == "audio-level" && v["peerId"] == info_a.self_id && v["dbfs"].as_f64() > Some(-45.0)
    })
    .await;
    assert!(level["dbfs"].as_f64() <= Some(0.0), "{level}");

    // Decoded frames scaled to the default tile, then to the size the UI reports.
    expect_frame(&mut frames_b, &key_a, media::DEFAULT_TILE).await;
    expect_frame(&mut frames_a, &key_b, media::DEFAULT_TILE).await;
    b.set_tile_size(&key_a, 320, 180);
    expect_frame(&mut frames_b, &key_a, (320, 180)).await;
    a.set_tile_size(&key_b, 200, 200); // a square tile: 16:9 fits as 200×112
    expect_frame(&mut frames_a, &key_b, (200, 112)).await;
    // A page painting I420 (WebGL 2): a tile smaller than the 640×360 picture (here half of
    // it) gets frames of its own size, scaled in the decoder thread into the IPC buffer.
    media::set_page_takes_i420(true);
    drain(&mut frames_b);
    expect_frame_as(
        &mut frames_b,
        &key_a,
        (320, 180),
        Some(media::FrameFormat::I420),
    )
    .await;
    media::set_page_takes_i420(false);

    // Camera off: the room is told, and no more frames come.
    a.set_media_state(true, false).expect("camera off");
    expect(&mut ev_b, "Ann's camera off", |n, v| {
        n == "media-state" && v["id"] == info_a.self_id && v["cam"] == false && v["mic"] == true
    })
    .await;
    // Frames already on the wire or in the decoder may still land just after the state.
    let _ = frames_within(&mut frames_b, &key_a, Duration::from_millis(500)).await;
    let n = frames_within(&mut frames_b, &key_a, Duration::from_millis(1500)).await;
    assert_eq!(n, 0, "frames kept coming with the camera off");

    // Back on: frames resume (it starts with a keyframe).
    a.set_media_state(true, true).expect("camera on");
    expect(&mut ev_b, "Ann's camera on", |n, v| {
        n == "media-state" && v["id"] == info_a.self_id && v["cam"] == true
    })
    .await;
    drain(&mut frames_b);
    expect_frame(&mut frames_b, &key_a, (320, 180)).await;

    // Mic off: no more audio samples while the video goes on (15 frames ≈ 0.5 s, counted at
    // the receiver); a write already under way may still finish.
    a.set_media_state(false, true).expect("mic off");
    expect(&mut ev_b, "Ann muted", |n, v| {
        n == "media-state" && v["id"] == info_a.self_id && v["mic"] == false
    })
    .await;
    let audio0 = a.samples_sent(MediaKind::Audio);
    assert!(audio0 > 0, "audio was sent before");
    for _ in 0..15 {
        expect_frame(&mut frames_b, &key_a, (320, 180)).await;
    }
    assert!(
        a.samples_sent(MediaKind::Audio) <= audio0 + 1,
        "audio kept going"
    );
    a.set_media_state(true, true).expect("mic on");
    for _ in 0..15 {
        expect_frame(&mut frames_b, &key_a, (320, 180)).await;
    }
    assert!(
        a.samples_sent(MediaKind::Audio) > audio0 + 5,
        "audio resumed"
    );

    // Screen share from B's private X display, seen at A as a second stream, gone after stop.
    let display = VirtualDisplay::start(640, 360).expect("Xvfb");
    b.start_screen_share(Some(display.display().to_string()), None)
        .await
        .expect("share");
    assert!(b.sharing_screen());
    let share = expect(&mut ev_a, "Bob's screen at A", |n, v| {
        n == "stream-added" && v["peerId"] == info_b.self_id && v["kind"] == "screen"
    })
    .await;
    let key_share = share["key"].as_str().expect("key").to_string();
    assert_ne!(key_share, key_b);
    expect_frame(&mut frames_a, &key_share, media::DEFAULT_TILE).await;
    assert!(b.stop_screen_share().expect("stop"));
    assert!(!b.stop_screen_share().expect("stop twice"));
    let gone = expect(&mut ev_a, "Bob's screen removed", |n, v| {
        n == "stream-removed" && v["key"] == key_share.as_str()
    })
    .await;
    assert_eq!(gone["kind"], "screen");
    // Bob's camera keeps playing.
    drain(&mut frames_a);
    expect_frame(&mut frames_a, &key_b, (200, 112)).await;

    // Leaving removes the stream at the other side.
    b.leave().await;
    expect(&mut ev_a, "Bob's camera removed", |n, v| {
        n == "stream-removed" && v["key"] == key_b.as_str()
    })
    .await;
    a.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_camera_is_reported_and_joining_still_works() {
    let (ui, _ev, frames, _fr) = sinks();
    let mut cfg = config("Cam", ServerChoice::Host);
    cfg.media.video = media::VideoChoice::Camera(Some("/dev/no-such-camera".into()));
    let (s, info) = Session::join_with_frames(cfg, ui, frames)
        .await
        .expect("joins without the camera");
    assert!(!info.cam, "a camera that did not open is announced as off");
    assert!(info.mic, "the tone still works");
    assert_eq!(info.preview_key, None);
    assert_eq!(info.media_errors.len(), 1, "{:?}", info.media_errors);
    assert!(info.media_errors[0].contains("camera"));
    s.leave().await;
}
