//! Devices switched mid-call (issue 13): two sessions on the embedded server (loopback) send
//! the synthetic test pattern; one switches its camera to the green pattern — the other keeps
//! decoding the same stream (same tile key, no new stream announced, no renegotiation) and the
//! picture turns green. Then the green "camera" is unplugged: the failure is reported, the peer
//! stays in the call without frames, and a fallback device brings the frames back. The same
//! switch with the rtc.io browser peer (headless Chromium): it keeps decoding the same stream,
//! its picture turns green, no new stream is announced.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::browser::Browser;
use rtcio::MediaKind;
use rtcio_desktop::media::{self, FrameSink, MediaConfig};
use rtcio_desktop::session::{JoinConfig, ServerChoice, Session, UiSink};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use common::session::Events;
/// `(key, greenness)` of each binary frame: mean G minus the mean of R and B.
type Frames = mpsc::UnboundedReceiver<(String, f64)>;

fn greenness(rgba: &[u8]) -> f64 {
    let (mut r, mut g, mut b, mut n) = (0u64, 0u64, 0u64, 0u64);
    for px in rgba.chunks_exact(4).step_by(7) {
        r += u64::from(px[0]);
        g += u64::from(px[1]);
        b += u64::from(px[2]);
        n += 1;
    }
    let n = n.max(1) as f64;
    g as f64 / n - (r + b) as f64 / 2.0 / n
}

fn sinks() -> (UiSink, Events, FrameSink, Frames) {
    let (tx, rx) = mpsc::unbounded_channel();
    let ui: UiSink = Arc::new(move |name: &str, payload: Value| {
        let _ = tx.send((name.to_string(), payload));
    });
    let (ftx, frx) = mpsc::unbounded_channel();
    let frames: FrameSink = Arc::new(move |bytes: Vec<u8>| {
        let h = media::decode_frame_header(&bytes).expect("well-formed binary frame");
        let _ = ftx.send((h.key, greenness(&bytes[h.offset..])));
    });
    (ui, rx, frames, frx)
}

fn config(name: &str, server: ServerChoice) -> JoinConfig {
    let mut cfg = common::session::config(name, "devices-room", server);
    cfg.media = MediaConfig::synthetic();
    cfg
}

const WAIT: Duration = Duration::from_secs(20);

async fn expect(rx: &mut Events, what: &str, pred: impl Fn(&str, &Value) -> bool) -> Value {
    common::session::expect(rx, WAIT, what, pred).await
}

/// Waits for a frame of `key` whose greenness passes `pred`; returns how many frames of `key`
/// came before it.
async fn expect_frame(rx: &mut Frames, key: &str, what: &str, pred: impl Fn(f64) -> bool) -> usize {
    let deadline = Instant::now() + WAIT;
    let mut before = 0;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((k, g))) if k == key && pred(g) => return before,
            Ok(Some((k, _))) => before += usize::from(k == key),
            Ok(None) => panic!("frame sink closed while waiting for {what}"),
            Err(_) => panic!("no frame of {key} ({what}) within {WAIT:?}"),
        }
    }
}

/// Frames of `key` within `window`.
async fn frames_within(rx: &mut Frames, key: &str, window: Duration) -> usize {
    let end = Instant::now() + window;
    let mut n = 0;
    while let Ok(Some((k, _))) = tokio::time::timeout_at(end, rx.recv()).await {
        n += usize::from(k == key);
    }
    n
}

/// The device lists with only the synthetic devices (what `list_devices` gives on a machine
/// without hardware).
fn synthetic_list() -> rtcio_desktop::devices::DeviceList {
    let dev = |id: &str, name: &str| rtcio_desktop::devices::Device {
        id: id.into(),
        name: name.into(),
        is_default: false,
        synthetic: true,
    };
    rtcio_desktop::devices::DeviceList {
        cameras: vec![
            dev(media::TEST_PATTERN_ID, "Test pattern"),
            dev(media::TEST_PATTERN_GREEN_ID, "Test pattern (green)"),
        ],
        microphones: vec![dev(media::TONE_ID, "Tone")],
        ..Default::default()
    }
}

/// What the app's `switch_camera` command does with a picker id.
async fn switch_camera(s: &Session, id: &str) {
    let owned = id.to_string();
    let (source, label) = tokio::task::spawn_blocking(move || {
        media::open_replacement(MediaKind::Video, &owned, false)
    })
    .await
    .expect("opening ran")
    .expect("the synthetic camera opens");
    s.with_camera(|c| c.replace_source(source, label, id))
        .expect("a camera stream")
        .expect("switched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_switched_and_unplugged_mid_call_keeps_the_stream() {
    let (ui_a, mut ev_a, fr_a, mut frames_a) = sinks();
    let (a, info_a) = Session::join_with_frames(config("Ann", ServerChoice::Host), ui_a, fr_a)
        .await
        .expect("host joins");
    let url = info_a.share_urls[0].clone();
    let (ui_b, _ev_b, fr_b, _frames_b) = sinks();
    let (mut b, info_b) =
        Session::join_with_frames(config("Bob", ServerChoice::Url(url)), ui_b, fr_b)
            .await
            .expect("guest joins");
    let added = expect(&mut ev_a, "Bob's camera at A", |n, v| {
        n == "stream-added" && v["peerId"] == info_b.self_id && v["kind"] == "camera"
    })
    .await;
    let key_b = added["key"].as_str().expect("key").to_string();
    let stream_id = b
        .with_camera(|c| c.stream().id().to_string())
        .expect("stream");
    assert_eq!(
        b.with_camera(|c| c.device(MediaKind::Video).map(str::to_owned))
            .flatten()
            .as_deref(),
        Some(media::TEST_PATTERN_ID)
    );

    // The colour bars: not green.
    expect_frame(&mut frames_a, &key_b, "the bars", |g| g < 40.0).await;

    // Switch to the green pattern: same stream, A keeps decoding it and sees green.
    switch_camera(&b, media::TEST_PATTERN_GREEN_ID).await;
    expect_frame(&mut frames_a, &key_b, "the green pattern", |g| g > 100.0).await;
    for _ in 0..10 {
        expect_frame(&mut frames_a, &key_b, "more green frames", |g| g > 100.0).await;
    }
    assert_eq!(
        b.with_camera(|c| c.stream().id().to_string()).as_deref(),
        Some(stream_id.as_str())
    );
    assert_eq!(
        b.with_camera(|c| c.device(MediaKind::Video).map(str::to_owned))
            .flatten()
            .as_deref(),
        Some(media::TEST_PATTERN_GREEN_ID)
    );
    // Nothing new was announced to A: no second stream, no track removed.
    while let Ok((name, v)) = ev_a.try_recv() {
        assert!(
            !(matches!(name.as_str(), "stream-added" | "stream-removed")
                && v["peerId"] == info_b.self_id),
            "{name} {v}"
        );
    }

    // Unplug the green camera (the synthetic camera opened last): B's stream reports it, A gets
    // no frames but both stay in the call.
    let mut failures = b
        .with_camera(|c| c.source_failures(MediaKind::Video))
        .flatten()
        .expect("watch");
    assert!(media::unplug_synthetic(MediaKind::Video));
    let failure = tokio::time::timeout(WAIT, failures.wait_for(Option::is_some))
        .await
        .expect("failure reported in time")
        .expect("watch open")
        .clone()
        .expect("some");
    assert!(failure.error.contains("unplugged"), "{failure:?}");
    let _ = frames_within(&mut frames_a, &key_b, Duration::from_millis(500)).await;
    assert_eq!(
        frames_within(&mut frames_a, &key_b, Duration::from_millis(1000)).await,
        0
    );

    // What the app does next (devices::recover, as on `device-lost`): the green camera is
    // still listed but broken, so the other synthetic camera is picked; frames resume on the
    // same stream and the message says so.
    let lost =
        rtcio_desktop::devices::recover(&mut b, MediaKind::Video, &failure, &synthetic_list())
            .await;
    assert_eq!(
        lost.fallback.as_ref().map(|d| d.id.as_str()),
        Some(media::TEST_PATTERN_ID)
    );
    assert_eq!(
        lost.message,
        "Your camera (Test pattern (green)) stopped working: camera error: the device was \
         unplugged. Switched to Test pattern."
    );
    assert_eq!(lost.payload()["fallback"]["id"], media::TEST_PATTERN_ID);
    expect_frame(&mut frames_a, &key_b, "the bars again", |g| g < 40.0).await;
    while let Ok((name, v)) = ev_a.try_recv() {
        assert!(
            !(matches!(
                name.as_str(),
                "stream-added" | "stream-removed" | "user-left" | "peer-left"
            ) && v["peerId"] == info_b.self_id),
            "{name} {v}"
        );
    }
    b.leave().await;
    a.leave().await;
}

/// In the page: plays `peer`'s (first) remote stream in a video element, and once it shows
/// frames returns the stream's msid, the peer's decoded frame count and the picture's greenness
/// (mean G minus the mean of R and B); with `o.green`, waits until greenness > o.green.
const LOOK: &str = "async (o) => {
  const p = rtcio.socket.rtcpeers[o.peer];
  const [msid, w] = Object.entries(p.streams)[0];
  if (!window.__v) {
    window.__v = document.createElement('video');
    __v.muted = true; __v.srcObject = w.mediaStream; document.body.append(__v); await __v.play();
  }
  const c = document.createElement('canvas'); c.width = 64; c.height = 36;
  const g = c.getContext('2d', {willReadFrequently: true});
  const end = Date.now() + 20000;
  for (;;) {
    let green = null;
    if (__v.videoWidth > 0) {
      g.drawImage(__v, 0, 0, 64, 36);
      const d = g.getImageData(0, 0, 64, 36).data; let r = 0, gg = 0, b = 0;
      for (let i = 0; i < d.length; i += 4) { r += d[i]; gg += d[i + 1]; b += d[i + 2]; }
      const n = d.length / 4; green = gg / n - (r + b) / 2 / n;
    }
    if (green !== null && (o.green === undefined || green > o.green) || Date.now() > end) {
      const s = (await rtcio.mediaStats({peer: o.peer}))[o.peer];
      return {msid, streams: Object.keys(p.streams).length, green, decoded: s.video.framesDecoded};
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_switch_mid_call_keeps_the_browser_peer_decoding() {
    let (ui, _ev, frames, _fr) = sinks();
    let (ann, info) = Session::join_with_frames(config("Ann", ServerChoice::Host), ui, frames)
        .await
        .expect("join");
    let aid = info.self_id.clone();
    let mut br = Browser::start().await;
    let page = br.open("web").await;
    br.eval(
        page,
        "(o) => rtcio.join(o.url, o)",
        json!({"url": info.share_urls[0], "roomId": "devices-room", "name": "web"}),
    )
    .await;
    br.wait_log(
        page,
        json!({"kind": "event", "via": "stream", "name": "camera", "peer": aid}),
        0,
        30_000,
    )
    .await;
    let before = br.eval(page, LOOK, json!({"peer": aid})).await;
    let green0 = before["green"]
        .as_f64()
        .expect("the browser shows our video");
    assert!(green0 < 40.0, "the colour bars: {before}");
    let since = br.log_len(page).await;

    switch_camera(&ann, media::TEST_PATTERN_GREEN_ID).await;
    let after = br
        .eval(page, LOOK, json!({"peer": aid, "green": 100}))
        .await;
    assert!(
        after["green"].as_f64() > Some(100.0),
        "the picture turned green: {after}"
    );
    assert_eq!(after["msid"], before["msid"], "same stream");
    assert_eq!(after["streams"], json!(1), "no second stream: {after}");
    let decoded = |v: &Value| v["decoded"].as_u64().unwrap_or(0);
    assert!(decoded(&after) > decoded(&before), "{before} → {after}");
    // Chromium keeps decoding after the switch: 30 more frames (≈1 s).
    let more = br
        .eval(
            page,
            "async (o) => { for (let i = 0; i < 200; i++) { const s = (await rtcio.mediaStats({peer: o.peer}))[o.peer]; if (s.video.framesDecoded >= o.n) return s.video.framesDecoded; await new Promise((r) => setTimeout(r, 100)); } return null; }",
            json!({"peer": aid, "n": decoded(&after) + 30}),
        )
        .await;
    assert!(more.as_u64().is_some(), "decoding stalled after the switch");
    // Nothing was re-announced or renegotiated for it.
    let again = br
        .eval(
            page,
            "(o) => rtcio.findLog({kind: 'event', via: 'stream', name: 'camera'}, o.since)",
            json!({"since": since}),
        )
        .await;
    assert!(again.is_null(), "camera announced again: {again}");
    br.quit().await;
    ann.leave().await;
}
