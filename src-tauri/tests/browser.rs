//! The app's call logic against the rtc.io browser peer (`tests/browser/`, headless Chromium
//! with a fake camera): the browser shows our camera stream with our id and name and decodes
//! it; the browser's camera and screen share reach our frame sink as binary tile frames; our
//! screen share and its stop reach the browser the demo's way.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::browser::Browser;
use rtcio_desktop::media::{self, FrameSink, MediaConfig};
use rtcio_desktop::session::{JoinConfig, ServerChoice, Session, UiSink};
use rtcio_media::capture::xvfb::VirtualDisplay;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

type Events = mpsc::UnboundedReceiver<(String, Value)>;
type Frames = mpsc::UnboundedReceiver<(String, u32, u32)>;

const WAIT: Duration = Duration::from_secs(30);

/// Waits in the page until `peer`'s inbound video has decoded `frames` frames; returns its stats.
const WAIT_DECODED: &str = "async (o) => {
  for (;;) {
    const s = (await rtcio.mediaStats({peer: o.peer}))[o.peer];
    if (s && s.video.framesDecoded >= o.frames) return s;
    await new Promise((r) => setTimeout(r, 100));
  }
}";

/// A canvas stream (what getDisplayMedia would give) emitted the streams guide's way.
const SHARE: &str = "(o) => {
  const c = document.createElement('canvas'); c.width = 800; c.height = 600;
  const g = c.getContext('2d'); let n = 0;
  window.__shareTimer = setInterval(() => { g.fillStyle = `hsl(${n++ % 360},80%,50%)`; g.fillRect(0, 0, 800, 600); }, 50);
  const s = new rtcio.RTCIOStream(c.captureStream(15));
  rtcio.local.screen = s;
  rtcio.socket.emit('screenshare', {id: rtcio.socket.id, name: 'web', stream: s});
  return s.id;
}";

const STOP_SHARE: &str = "(o) => {
  const s = rtcio.local.screen;
  clearInterval(window.__shareTimer);
  rtcio.socket.untrackStream(s);
  s.mediaStream.getTracks().forEach((t) => t.stop());
  rtcio.socket.emit('stopScreenShare', {id: rtcio.socket.id});
  return true;
}";

fn sinks() -> (UiSink, Events, FrameSink, Frames) {
    let (tx, rx) = mpsc::unbounded_channel();
    let ui: UiSink = Arc::new(move |name: &str, payload: Value| {
        let _ = tx.send((name.to_string(), payload));
    });
    let (ftx, frx) = mpsc::unbounded_channel();
    let frames: FrameSink = Arc::new(move |bytes: Vec<u8>| {
        let h = media::decode_frame_header(&bytes).expect("well-formed binary frame");
        let _ = ftx.send((h.key, h.width, h.height));
    });
    (ui, rx, frames, frx)
}

async fn expect(rx: &mut Events, what: &str, pred: impl Fn(&str, &Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((name, payload))) if pred(&name, &payload) => return payload,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("sink closed while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

async fn expect_frame(rx: &mut Frames, key: &str, size: (u32, u32)) {
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((k, w, h))) if k == key && (w, h) == size => return,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("frame sink closed while waiting for {key}"),
            Err(_) => panic!("no {size:?} frame of {key} within {WAIT:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_peer_sees_our_camera_and_we_see_its_camera_and_share() {
    let (ui, mut ev, frames, mut fr) = sinks();
    let mut cfg = JoinConfig::new("Ann", "browser-room", ServerChoice::Host);
    cfg.socket = rtcio::Options::loopback();
    cfg.host_bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    cfg.media = MediaConfig::synthetic();
    let (mut ann, info) = Session::join_with_frames(cfg, ui, frames)
        .await
        .expect("join");
    let url = info.share_urls[0].clone();
    let aid = info.self_id.clone();

    let mut br = Browser::start().await;
    let page = br.open("web").await;
    let web = br
        .eval(
            page,
            "(o) => rtcio.join(o.url, o)",
            json!({"url": url, "roomId": "browser-room", "name": "web", "camera": true}),
        )
        .await;
    let web_id = web["id"].as_str().expect("browser id").to_string();

    // The demo's camera handler fires with our id and name, and Chromium decodes our H.264.
    let entry = br
        .wait_log(
            page,
            json!({"kind": "event", "via": "stream", "name": "camera", "peer": aid}),
            0,
            30_000,
        )
        .await;
    let args = &entry["entry"]["args"][0];
    assert_eq!(args["id"], json!(aid), "{args}");
    assert_eq!(args["name"], json!("Ann"), "{args}");
    let stats = br
        .eval(page, WAIT_DECODED, json!({"peer": aid, "frames": 15}))
        .await;
    assert_eq!(stats["video"]["frameWidth"], json!(640), "{stats}");
    assert_eq!(stats["video"]["frameHeight"], json!(360), "{stats}");

    // The browser's fake camera (640×480) in our 640×360 tile: 480×360.
    let cam = expect(&mut ev, "browser camera", |n, v| {
        n == "stream-added" && v["peerId"] == web_id.as_str() && v["kind"] == "camera"
    })
    .await;
    assert_eq!(cam["name"], "web");
    let cam_key = cam["key"].as_str().expect("key").to_string();
    expect_frame(&mut fr, &cam_key, (480, 360)).await;

    // The browser shares a canvas (streams guide's form), then stops.
    br.eval(page, SHARE, json!({})).await;
    let share = expect(&mut ev, "browser share", |n, v| {
        n == "stream-added" && v["peerId"] == web_id.as_str() && v["kind"] == "screen"
    })
    .await;
    let share_key = share["key"].as_str().expect("key").to_string();
    expect_frame(&mut fr, &share_key, (480, 360)).await;
    br.eval(page, STOP_SHARE, json!({})).await;
    expect(&mut ev, "browser share removed", |n, v| {
        n == "stream-removed" && v["key"] == share_key.as_str()
    })
    .await;

    // Our screen share reaches the browser as `screenshare {id, name, stream}`, and our stop as
    // `stopScreenShare` (the server's echo of `{id, roomId}` and the ctrl `{id}`).
    let display = VirtualDisplay::start(640, 360).expect("Xvfb");
    ann.start_screen_share(Some(display.display().to_string()), None)
        .await
        .expect("share");
    let entry = br
        .wait_log(
            page,
            json!({"kind": "event", "via": "stream", "name": "screenshare", "peer": aid}),
            0,
            30_000,
        )
        .await;
    let args = &entry["entry"]["args"][0];
    assert_eq!(args["name"], json!("Ann"), "{args}");
    assert_eq!(args["id"], json!(aid), "{args}");
    let since = br.log_len(page).await;
    ann.stop_screen_share().expect("stop");
    br.wait_log(
        page,
        json!({"kind": "event", "name": "stopScreenShare"}),
        since,
        30_000,
    )
    .await;

    br.quit().await;
    ann.leave().await;
}
