//! Streams between a Rust peer and the rtc.io browser peer in headless Chromium, both join
//! orders: our H.264 + Opus stream is decoded by Chromium and shown with our id and name, the
//! browser's fake camera reaches us as access units that decode to its size, a late browser
//! joiner gets our stream by replay (and, receiving only, measures its round trip to us through
//! RTCP XR), and a browser screen share and its stop-share reach us.

mod common;

use std::collections::HashMap;

use common::browser::Browser;
use common::room::next;
use rtcio::{Event, MediaKind, MediaSample, Options, Origin, RemoteTrack, RtpCodec, Socket};
use rtcio_media::H264Decoder;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

/// Waits in the page until `peer`'s inbound video has decoded `frames` frames; returns its stats.
const WAIT_DECODED: &str = "async (o) => {
  for (;;) {
    const s = (await rtcio.mediaStats({peer: o.peer, socket: o.socket}))[o.peer];
    if (s && s.video.framesDecoded >= o.frames) return s;
    await new Promise((r) => setTimeout(r, 100));
  }
}";

/// Waits in the page (at most `ms`) until `peer`'s video has a round trip measured on the
/// receiver's side (RTCP XR reference times answered by the sender); returns the last stats.
const WAIT_RECEIVER_RTT: &str = "async (o) => {
  const end = Date.now() + o.ms;
  for (;;) {
    const s = (await rtcio.mediaStats({peer: o.peer, socket: o.socket}))[o.peer];
    const v = s?.remoteOutbound.find((x) => x.kind === 'video');
    if ((v && v.roundTripTimeMeasurements > 0) || Date.now() > end) return s;
    await new Promise((r) => setTimeout(r, 100));
  }
}";

/// Waits in the page (at most `ms`) until it has sent a PLI about `peer`'s video; returns
/// how many it sent (its inbound-rtp `pliCount`).
const WAIT_PLIS_SENT: &str = "async (o) => {
  const end = Date.now() + o.ms;
  for (;;) {
    const pc = rtcio.socket.rtcpeers[o.peer]?.connection;
    if (!pc) return null;
    let n = 0;
    (await pc.getStats()).forEach((x) => {
      if (x.type === 'inbound-rtp' && x.kind === 'video') n += x.pliCount ?? 0;
    });
    if (n > 0 || Date.now() > end) return n;
    await new Promise((r) => setTimeout(r, 100));
  }
}";

/// One H.264 access unit: an IDR slice header (first_mb 0, slice_type 7, pic_parameter_set_id
/// 5) and filler. Our encoder's parameter sets have id 0, so a receiver has no PPS 5.
const IDR_WITH_UNKNOWN_PPS: &[u8] = &[0, 0, 0, 1, 0x65, 0x88, 0x34, 0xaa, 0xbb, 0xcc, 0xdd];

/// Asserts that `page` measured a round trip for `peer`'s video on the receiver's side (RTCP XR
/// reference times that we answered), waiting for it at most 10 s (Chromium reports every ~1 s).
async fn receiver_rtt_measured(br: &mut Browser, page: u64, peer: &str, what: &str) {
    let stats = br
        .eval(page, WAIT_RECEIVER_RTT, json!({"peer": peer, "ms": 10_000}))
        .await;
    let rtt = stats["remoteOutbound"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["kind"] == json!("video")))
        .cloned()
        .unwrap_or(Value::Null);
    assert!(
        rtt["roundTripTimeMeasurements"].as_u64().unwrap_or(0) >= 1,
        "{what} measured no round trip to us: {stats}"
    );
}

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

/// Decodes access units until one decodes; returns its size.
async fn decoded_size(track: &RemoteTrack, what: &str) -> (u32, u32) {
    decoded_size_reaching(track, what, None).await
}

/// Decodes access units until one decodes at `want` (or, with `None`, at any size); returns
/// that size, or the last one decoded when 600 frames pass without `want`. Chromium may start
/// below its capture size while its bandwidth estimate ramps up or its CPU is busy, then steps
/// up: the first picture's size is not the camera's.
async fn decoded_size_reaching(
    track: &RemoteTrack,
    what: &str,
    want: Option<(u32, u32)>,
) -> (u32, u32) {
    let mut dec = H264Decoder::new().expect("decoder");
    let mut last = None;
    for _ in 0..600 {
        let f = tokio::time::timeout(common::room::WAIT, track.recv())
            .await
            .unwrap_or_else(|_| panic!("{what}: no frame"))
            .unwrap_or_else(|| panic!("{what}: track ended"));
        assert_eq!(
            f.codec,
            RtpCodec::H264,
            "{what}: the browser sends what we prefer"
        );
        if dec.needs_keyframe() && !f.keyframe {
            track.request_keyframe();
            continue;
        }
        if let Ok(Some(frame)) = dec.decode(&f.data, f.rtp_timestamp) {
            let size = (frame.width, frame.height);
            if want.is_none_or(|w| w == size) {
                return size;
            }
            last = Some(size);
        }
    }
    last.unwrap_or_else(|| panic!("{what}: nothing decodable in 600 frames"))
}

async fn stream_event(rx: &mut UnboundedReceiver<Event>, from: &str, what: &str) -> Event {
    let ev = next(rx, what).await;
    assert_eq!(ev.origin, Origin::Peer(from.to_string()), "{what}");
    assert!(ev.stream.is_some(), "{what}: the event carries the stream");
    ev
}

async fn rust_join(
    url: &str,
    room: &str,
) -> (Socket, UnboundedReceiver<Event>, UnboundedReceiver<Event>) {
    let s = Socket::connect(url, Options::loopback())
        .await
        .expect("connect");
    let cams = s.subscribe("camera");
    let connects = s.subscribe("peer-connect");
    let mut ok = s.subscribe("join-ok");
    s.server()
        .emit("join-room", vec![json!({"roomId": room, "name": "rusty"})])
        .expect("join");
    next(&mut ok, "join-ok").await;
    (s, cams, connects)
}

async fn interop(browser_first: bool) {
    let srv = common::room::server().await;
    let url = srv.url();
    let room = format!("media-{browser_first}");
    let mut br = Browser::start().await;
    let page = br.open("web").await;
    let join_arg = json!({"url": url, "roomId": room, "name": "web", "camera": true});

    // Browser first: a second page that only watches is there before us too, so its
    // connection to us is offered by the browser (the late joiner's below is offered by us).
    let mut watcher = None;
    let (socket, mut cams, mut connects, web) = if browser_first {
        let web = br
            .eval(page, "(o) => rtcio.join(o.url, o)", join_arg.clone())
            .await;
        let w = br.open("watcher").await;
        br.eval(
            w,
            "(o) => rtcio.join(o.url, o)",
            json!({"url": url, "roomId": room, "name": "watcher"}),
        )
        .await;
        watcher = Some(w);
        let (s, c, p) = rust_join(&url, &room).await;
        (s, c, p, web)
    } else {
        let (s, c, p) = rust_join(&url, &room).await;
        let web = br
            .eval(page, "(o) => rtcio.join(o.url, o)", join_arg.clone())
            .await;
        (s, c, p, web)
    };
    let web_id = web["id"].as_str().expect("browser id").to_string();
    let rid = socket.id();

    // Our camera: real H.264 + Opus from the synthetic sources, emitted the tutorial's way.
    let stream = socket.create_stream();
    let video_track = stream.add_track(MediaKind::Video);
    // Keyframe requests per peer, counted from before anything connects.
    let (requests_tx, mut requests_rx) = tokio::sync::watch::channel(HashMap::<String, u64>::new());
    let mut keyframe_requests = video_track.keyframe_requests();
    tokio::spawn(async move {
        while let Ok(req) = keyframe_requests.recv().await {
            requests_tx.send_modify(|m| *m.entry(req.peer).or_default() += 1);
        }
    });
    let feed = common::media::start(
        Some(video_track.clone()),
        Some(stream.add_track(MediaKind::Audio)),
        320,
        240,
    );
    socket
        .emit(
            "camera",
            vec![json!({"id": rid, "name": "rusty", "camera": stream.token()})],
        )
        .expect("emit camera");
    next(&mut connects, "peer-connect").await;

    // The browser's camera handler fires with our id and name; Chromium decodes our video.
    let ev = br
        .wait_log(
            page,
            json!({"kind": "event", "via": "stream", "name": "camera", "peer": rid}),
            0,
            30_000,
        )
        .await;
    let args = &ev["entry"]["args"][0];
    assert_eq!(args["id"], json!(rid));
    assert_eq!(args["name"], json!("rusty"));
    assert_eq!(
        args["camera"]["$stream"]["id"],
        json!(stream.id()),
        "{args}"
    );
    let stats = br
        .eval(page, WAIT_DECODED, json!({"peer": rid, "frames": 15}))
        .await;
    assert_eq!(stats["video"]["frameWidth"], json!(320), "{stats}");
    assert_eq!(stats["video"]["frameHeight"], json!(240), "{stats}");
    let codecs: Vec<&str> = stats["inbound"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["codec"].as_str()).collect())
        .unwrap_or_default();
    assert!(codecs.contains(&"video/H264"), "{stats}");
    assert!(codecs.contains(&"audio/opus"), "{stats}");
    // Chromium's PLI reached us. Our own keyframe request when the connection comes up
    // (peer.rs, `request_local_keyframes`) gives Chromium a keyframe before it needs to ask
    // (its pliCount stays 0 here), so make it ask: an IDR slice that names a picture parameter
    // set it never got is one Chromium cannot decode, and it requests a keyframe at once
    // (WebRTC's H264SpsPpsTracker). Then we must see that many requests from the page
    // besides the one at connect.
    let sent = video_track
        .write(&MediaSample {
            data: bytes::Bytes::from_static(IDR_WITH_UNKNOWN_PPS),
            duration: std::time::Duration::from_millis(33),
        })
        .await;
    // (Browser first, the watcher page receives it too.)
    assert!(sent >= 1, "the undecodable IDR went out");
    let plis = br
        .eval(page, WAIT_PLIS_SENT, json!({"peer": rid, "ms": 10_000}))
        .await
        .as_u64()
        .expect("the page's pliCount");
    assert!(
        plis >= 1,
        "Chromium sent no PLI for an IDR it could not decode"
    );
    let want = 1 + plis;
    let counted = tokio::time::timeout(
        common::room::WAIT,
        requests_rx.wait_for(|m| m.get(&web_id).copied().unwrap_or(0) >= want),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    let seen = requests_rx.borrow().get(&web_id).copied().unwrap_or(0);
    assert!(
        counted,
        "Chromium's PLI reached us: {seen} keyframe requests from the page, expected \
         1 at connect + the {plis} PLIs it sent"
    );
    println!("keyframe requests from the page: {seen} (Chromium sent {plis} PLIs)");

    // The browser's fake camera reaches us and decodes to its size.
    if tokio::time::timeout(common::room::WAIT, async {
        while cams.is_empty() {
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .is_err()
    {
        let log = br
            .cmd(json!({"cmd": "log", "page": page, "since": 0}))
            .await;
        panic!("no browser camera; page log: {log:?}");
    }
    let ev = stream_event(&mut cams, &web_id, "browser camera").await;
    assert_eq!(ev.arg()["id"], json!(web_id));
    assert_eq!(ev.arg()["name"], json!("web"));
    let remote = ev.stream.clone().expect("stream");
    assert_eq!(
        ev.arg()["camera"],
        json!(format!("[RTCIOStream] {}", remote.id()))
    );
    let video = remote.track(MediaKind::Video).expect("browser video");
    assert_eq!(
        decoded_size_reaching(&video, "browser camera", Some((640, 480))).await,
        (640, 480)
    );
    let audio = remote.track(MediaKind::Audio).expect("browser audio");
    let a = tokio::time::timeout(common::room::WAIT, audio.recv())
        .await
        .expect("audio within WAIT")
        .expect("audio frame");
    assert_eq!(a.codec, RtpCodec::Opus);

    // A late browser joiner gets our stream by replay.
    let late = br.open("late").await;
    let late_arg = json!({"url": url, "roomId": room, "name": "late"});
    br.eval(late, "(o) => rtcio.join(o.url, o)", late_arg).await;
    br.wait_log(
        late,
        json!({"kind": "event", "via": "stream", "name": "camera", "peer": rid}),
        0,
        30_000,
    )
    .await;
    let stats = br
        .eval(late, WAIT_DECODED, json!({"peer": rid, "frames": 10}))
        .await;
    assert_eq!(stats["video"]["frameWidth"], json!(320), "{stats}");
    // It sends nothing, so only our answers to its XR reference times give it a round trip
    // (without one it re-asks for lost packets and sizes its jitter buffer on a default). A
    // browser that sends has one from its own reports and does not ask.
    receiver_rtt_measured(&mut br, late, &rid, "a receive-only browser (our offer)").await;
    if let Some(w) = watcher {
        receiver_rtt_measured(&mut br, w, &rid, "a receive-only browser (its offer)").await;
    }

    // A browser screen share and its stop-share reach us.
    let mut shares = socket.subscribe("screenshare");
    let mut stops = socket.subscribe("stopScreenShare");
    let share_id = br.eval(page, SHARE, Value::Null).await;
    let ev = stream_event(&mut shares, &web_id, "screenshare").await;
    assert_eq!(ev.arg()["id"], json!(web_id));
    let share = ev.stream.clone().expect("share stream");
    assert_eq!(json!(share.id()), share_id);
    let sv = share.track(MediaKind::Video).expect("share video");
    // Chromium scales a canvas capture down when the CPU is busy (seen: 600x450, 300x224).
    let (w, h) = decoded_size(&sv, "screen share").await;
    assert!(
        (1..=800).contains(&w) && (1..=600).contains(&h) && w > h,
        "screen share decoded at {w}x{h}"
    );
    br.eval(page, STOP_SHARE, Value::Null).await;
    let ev = next(&mut stops, "stopScreenShare").await;
    assert_eq!(ev.arg()["id"], json!(web_id));

    drop(feed);
    socket.close().await;
    br.quit().await;
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_first_then_rust() {
    interop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_first_then_browser() {
    interop(false).await;
}
