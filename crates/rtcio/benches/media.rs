//! Join → peer-connect → first remote media frame, per pair of peer kinds, under three network
//! and CPU conditions, in one run (not a test; prints tables). A "camera" peer is already in the
//! room sending H.264 + Opus (Rust: the synthetic pattern through OpenH264 at 320×240,
//! Chromium: its fake camera at 640×480); the clock starts when the other peer starts joining
//! and stops at its `peer-connect` and at the first remote video frame it can decode (Rust:
//! first access unit OpenH264 decodes; Chromium: `framesDecoded ≥ 1`). The camera → joiner rows
//! cover both join orders of Rust ↔ Chromium.
//!
//! Conditions: `loopback` (host candidates on 127.0.0.1); `delay50` (every end relay-only
//! through the server's own TURN relay, which delays every relayed packet by 50 ms, so 50 ms one
//! way); `lossy` (as `delay50`, and the relay loses 3 % of the packets at random, each way);
//! `load` (loopback with `stress-ng --cpu 2` saturating the CPU).
//!
//! `cargo bench -p rtcio --bench media` (Chromium and `npm ci` in tests/browser needed, and
//! stress-ng for `load`; as root run it inside `unshare -n sh -c 'ip link set lo up && …'` to
//! keep traffic on loopback). `MEDIA_BENCH_RUNS` (default 10) sets the repetitions per pair,
//! `MEDIA_BENCH_CONDITIONS` (default `loopback,delay50,lossy,load`) which conditions run.
//!
//! `MEDIA_BENCH_CHROMIUM_CODEC` (e.g. `H264`) makes every page put that video codec first in
//! its offers and answers (setCodecPreferences), so the Chromium ↔ Chromium anchor can run
//! with the codec the Rust peers send: Chromium takes ~40–60 ms longer to answer an offer that
//! leads with H.264 than one that leads with VP8 (loopback traces).
//!
//! `MEDIA_BENCH_TRACE=1` instead runs one Rust camera → Chromium join, one Chromium →
//! Chromium join and one Chromium camera → Rust join per condition and prints the pages'
//! timelines (rtc.io events, signaling and connection states, and when getStats first showed
//! each step: checks, DTLS, RTP, PLI, frames) in ms after the joiner started, and for the Rust
//! joiner its own steps (stream announced, first frame assembled, keyframe requests and
//! arrival, peer-connect); with `RUST_LOG` set our own tracing lines go to stderr with
//! wall-clock timestamps, aligned through the printed `t0` (epoch ms).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::browser::Browser;
use rtcio::{MediaKind, Options, Socket};
use rtcio_media::H264Decoder;
use rtcio_media::codec::annexb;
use serde_json::{Value, json};

/// Longest a joiner may take to its first decoded frame before the join counts as failed.
const JOIN_LIMIT: Duration = Duration::from_secs(20);

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Waits in the page until video from `peer` (any peer if null) decoded a frame; returns the
/// page's wall clock then (comparable with ours: same machine).
const FIRST_DECODED: &str = "async (o) => {
  const end = Date.now() + 30000;
  while (Date.now() < end) {
    const all = await rtcio.mediaStats({socket: o.socket});
    for (const [id, s] of Object.entries(all)) {
      if (s && (!o.peer || id === o.peer) && s.video.framesDecoded >= 1) return Date.now();
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  return null;
}";

/// What a bench condition changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    /// Host candidates on 127.0.0.1.
    Loopback,
    /// Relay-only through the server's TURN relay, 50 ms added to every relayed packet.
    Delay50,
    /// As `Delay50`, and 3 % of the relayed packets lost at random (each way): handshake
    /// flights, checks and the first keyframe's packets lost, as on a poor Wi-Fi link.
    Lossy,
    /// Loopback with `stress-ng --cpu 2`.
    Load,
}

impl Condition {
    fn parse(name: &str) -> Option<Condition> {
        match name.trim() {
            "loopback" => Some(Condition::Loopback),
            "delay50" => Some(Condition::Delay50),
            "lossy" => Some(Condition::Lossy),
            "load" => Some(Condition::Load),
            _ => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Condition::Loopback => "loopback",
            Condition::Delay50 => "50 ms one way (relay-only through the impairing TURN relay)",
            Condition::Lossy => "50 ms one way and 3 % random loss (relay-only, impairing relay)",
            Condition::Load => "loopback, CPU saturated by stress-ng --cpu 2",
        }
    }

    fn relay(self) -> bool {
        matches!(self, Condition::Delay50 | Condition::Lossy)
    }

    /// What the TURN relay does to what it relays (`--turn-impair` syntax).
    fn impairment(self) -> Option<&'static str> {
        match self {
            Condition::Delay50 => Some("delay=50ms"),
            Condition::Lossy => Some("delay=50ms,loss=3"),
            Condition::Loopback | Condition::Load => None,
        }
    }
}

/// The signaling server; with an impairment also a TURN relay on 127.0.0.1 that impairs every
/// packet it relays (its `/ice-servers` hands out credentials for it).
async fn start_server(impairment: Option<&str>) -> rtcio_server::RunningServer {
    let turn = impairment.map(|spec| rtcio_server::TurnConfig {
        relay: Some(rtcio_server::RelayConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            allow_loopback: true,
            impairment: rtcio_server::impair::Schedule::parse(&[spec.to_string()])
                .expect("impairment"),
            ..Default::default()
        }),
        ..Default::default()
    });
    rtcio_server::start(rtcio_server::ServerConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        policy: rtcio_server::Policy {
            relay_per_second: 0.0,
            joins_per_second: 0.0,
            ..rtcio_server::Policy::default()
        },
        turn,
        ..Default::default()
    })
    .await
    .expect("server")
}

fn rust_options(relay: bool) -> Options {
    // The TURN credentials come from the server's /ice-servers (fetched while connecting).
    Options {
        relay_only: relay,
        ..Options::loopback()
    }
}

/// Joins a page: with `relay` it fetches the server's TURN credentials first and goes
/// relay-only, like the Rust ends.
const PAGE_JOIN: &str = "async (o) => {
  if (o.relay) {
    const r = await fetch(o.url + '/ice-servers');
    o.iceServers = (await r.json()).iceServers;
    o.iceTransportPolicy = 'relay';
  }
  delete o.relay;
  return rtcio.join(o.url, o);
}";

/// The page's first `peer-connect` (its wall clock), or null after 30 s. Media can arrive
/// before it: SRTP flows once DTLS is up, the ctrl channel needs the SCTP handshake too.
const FIRST_CONNECT: &str = "async (o) => {
  const end = Date.now() + 30000;
  while (Date.now() < end) {
    const e = rtcio.log(0).find((e) => e.kind === 'peer-connect');
    if (e) return e.t;
    await new Promise((r) => setTimeout(r, 5));
  }
  return null;
}";

/// A Rust peer in `room`; with `camera` it sends the synthetic camera.
async fn rust_peer(
    url: &str,
    room: &str,
    camera: bool,
    relay: bool,
) -> (Socket, Option<common::media::SyntheticFeed>) {
    let s = Socket::connect(url, rust_options(relay))
        .await
        .expect("connect");
    let mut ok = s.subscribe("join-ok");
    s.server()
        .emit("join-room", vec![json!({"roomId": room, "name": "rusty"})])
        .expect("join");
    common::room::next(&mut ok, "join-ok").await;
    let feed = camera.then(|| {
        let stream = s.create_stream();
        let feed = common::media::start(
            Some(stream.add_track(MediaKind::Video)),
            Some(stream.add_track(MediaKind::Audio)),
            320,
            240,
        );
        s.emit(
            "camera",
            vec![json!({"id": s.id(), "name": "rusty", "camera": stream.token()})],
        )
        .expect("camera");
        feed
    });
    (s, feed)
}

/// One join: ms to peer-connect and to the first decoded frame (`None`: failed in time).
type Sample = Option<(f64, f64)>;

/// Joins `room` as a Rust peer (clock starts before connecting); returns the ms until its
/// peer-connect and until the first decodable remote video frame.
async fn rust_joins(url: &str, room: &str, relay: bool) -> (Sample, Socket) {
    let t0 = Instant::now();
    let s = Socket::connect(url, rust_options(relay))
        .await
        .expect("connect");
    let connected = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    {
        let connected = connected.clone();
        s.on("peer-connect", move |_| {
            if let Ok(mut c) = connected.lock() {
                c.get_or_insert_with(Instant::now);
            }
            rust_mark("peer-connect");
        });
    }
    let mut cams = s.subscribe("camera");
    s.server()
        .emit("join-room", vec![json!({"roomId": room, "name": "late"})])
        .expect("join");
    rust_mark("join-room sent");
    let first_frame = async {
        let ev = cams.recv().await?;
        rust_mark("camera event (stream announced)");
        let track = ev.stream.and_then(|st| st.track(MediaKind::Video))?;
        let mut dec = H264Decoder::new().expect("decoder");
        let mut last_pli: Option<Instant> = None;
        let mut frames = 0u32;
        loop {
            let f = track.recv().await?;
            frames += 1;
            if frames == 1 {
                rust_mark(format!(
                    "first video frame assembled (keyframe: {})",
                    f.keyframe
                ));
            }
            if f.keyframe {
                rust_mark(format!("keyframe assembled (frame {frames})"));
            }
            if !f.keyframe && dec.needs_keyframe() {
                // What a real receiver does (Chromium too): ask the sender for an IDR, at most
                // every 200 ms; the synthetic camera only sends one when asked.
                if last_pli.is_none_or(|t: Instant| t.elapsed() >= Duration::from_millis(200)) {
                    rust_mark("keyframe requested (PLI)");
                    track.request_keyframe();
                    last_pli = Some(Instant::now());
                }
                continue;
            }
            match dec.decode(&f.data, f.rtp_timestamp) {
                Ok(Some(_)) => return Some(Instant::now()),
                Ok(None) => rust_mark(format!(
                    "frame {frames} ({} bytes, NAL types {:?}) decoded to no picture",
                    f.data.len(),
                    nal_types(&f.data)
                )),
                Err(e) => rust_mark(format!(
                    "frame {frames} ({} bytes, NAL types {:?}) failed to decode: {e}",
                    f.data.len(),
                    nal_types(&f.data)
                )),
            }
        }
    };
    let sample = match tokio::time::timeout(JOIN_LIMIT, first_frame).await {
        Ok(Some(at)) => {
            let conn = connected.lock().ok().and_then(|c| *c).unwrap_or(at);
            let ms = |t: Instant| t.duration_since(t0).as_secs_f64() * 1000.0;
            Some((ms(conn), ms(at)))
        }
        _ => {
            eprintln!("rust joiner in {room}: no decoded frame within {JOIN_LIMIT:?}");
            None
        }
    };
    (sample, s)
}

async fn page_joins(
    br: &mut Browser,
    url: &str,
    room: &str,
    label: &str,
    camera: bool,
    relay: bool,
) -> (Sample, u64) {
    let page = br.open(label).await;
    if let Ok(mime) = std::env::var("MEDIA_BENCH_CHROMIUM_CODEC") {
        br.eval(page, PAGE_PREFER, json!({ "mime": mime })).await;
    }
    let t0 = now_ms();
    br.eval(
        page,
        PAGE_JOIN,
        json!({"url": url, "roomId": room, "name": label, "camera": camera, "relay": relay}),
    )
    .await;
    if camera {
        return (None, page);
    }
    let t1 = br
        .eval(page, FIRST_DECODED, json!({"peer": Value::Null}))
        .await;
    let tc = br.eval(page, FIRST_CONNECT, json!({})).await;
    match (tc.as_f64(), t1.as_f64()) {
        (Some(c), Some(f)) => (Some((c - t0, f - t0)), page),
        _ => {
            eprintln!(
                "{label} in {room}: no remote video decoded within 30 s (peer-connect at {tc}, first frame at {t1}, joined at {t0})"
            );
            (None, page)
        }
    }
}

/// Trace mode: polls getStats of every peer of the page's socket and records, in the page's
/// wall clock, when each step was first seen (the stats' own timestamps are not per step).
const PAGE_TRACE: &str = "async (o) => {
  const T = window.__trace = { firsts: {}, stop: false };
  const mark = (k) => { if (!(k in T.firsts)) T.firsts[k] = performance.timeOrigin + performance.now(); };
  (async () => {
    const end = Date.now() + 20000;
    while (!T.stop && Date.now() < end) {
      const s = rtcio.sockets[rtcio.sockets.length - 1];
      for (const peer of Object.values(s?.rtcpeers ?? {})) {
        const st = await peer.connection.getStats();
        st.forEach((x) => {
          if (x.type === 'candidate-pair') {
            if (x.requestsSent > 0) mark('ice: first check sent');
            if (x.requestsReceived > 0) mark('ice: first check received');
            if (x.responsesReceived > 0) mark('ice: first check answered');
            if (x.nominated) mark('ice: pair nominated');
          } else if (x.type === 'transport') {
            if (x.selectedCandidatePairId) mark('ice: pair selected');
            mark('dtls: ' + x.dtlsState + (x.dtlsRole ? ' (' + x.dtlsRole + ')' : '') + (x.tlsVersion ? ' ' + x.tlsVersion : ''));
          } else if (x.type === 'inbound-rtp' && x.kind === 'video') {
            if (x.packetsReceived > 0) mark('video in: first RTP');
            if (x.pliCount > 0) mark('video in: first PLI sent');
            if (x.firCount > 0) mark('video in: first FIR sent');
            if (x.framesReceived > 0) mark('video in: first frame assembled');
            if (x.keyFramesDecoded > 0) mark('video in: first keyframe decoded');
            if (x.framesDecoded > 0) mark('video in: first frame decoded');
          } else if (x.type === 'inbound-rtp' && x.kind === 'audio') {
            if (x.packetsReceived > 0) mark('audio in: first RTP');
          } else if (x.type === 'outbound-rtp' && x.kind === 'video') {
            if (x.packetsSent > 0) mark('video out: first RTP');
            if (x.framesEncoded > 0) mark('video out: first frame encoded');
            if (x.keyFramesEncoded > 0) mark('video out: first keyframe encoded');
            if (x.pliCount > 0) mark('video out: first PLI received');
          }
        });
      }
      await new Promise((r) => setTimeout(r, 2));
    }
  })();
  return true;
}";

/// Trace mode: stops the poller and returns the page's rtc.io log, the firsts and the
/// descriptions of its peer connections.
const PAGE_TRACE_END: &str = "async (o) => {
  const T = window.__trace ?? { firsts: {} };
  T.stop = true;
  const s = rtcio.sockets[rtcio.sockets.length - 1];
  const sdp = Object.values(s?.rtcpeers ?? {}).map((p) => ({
    local: p.connection.localDescription?.sdp ?? null,
    remote: p.connection.remoteDescription?.sdp ?? null,
  }));
  return { log: rtcio.log(0), firsts: T.firsts, sdp };
}";

/// `MEDIA_BENCH_CHROMIUM_CODEC` (and `MEDIA_BENCH_TRACE_CODEC` for the trace's camera page),
/// e.g. `H264`: the page puts that video codec first in its offers and answers, as an app would
/// with setCodecPreferences (tests/browser/harness.mjs).
const PAGE_PREFER: &str = "async (o) => {
  const prefer = (pc) => {
    const caps = RTCRtpReceiver.getCapabilities('video')?.codecs ?? [];
    const first = caps.filter((c) => c.mimeType.toLowerCase() === `video/${o.mime.toLowerCase()}`);
    if (!first.length) return;
    const order = [...first, ...caps.filter((c) => !first.includes(c))];
    for (const t of pc.getTransceivers()) {
      if (t.receiver.track?.kind === 'video' && !t.stopped) {
        try { t.setCodecPreferences(order); } catch { }
      }
    }
  };
  for (const name of ['createOffer', 'createAnswer', 'setLocalDescription']) {
    const orig = RTCPeerConnection.prototype[name];
    RTCPeerConnection.prototype[name] = function (...args) { prefer(this); return orig.apply(this, args); };
  }
  return true;
}";

/// Prints one page's timeline in ms after `t0` (epoch ms).
fn print_page_timeline(label: &str, t0: f64, v: &Value) {
    let mut rows: Vec<(f64, String)> = Vec::new();
    for e in v["log"].as_array().into_iter().flatten() {
        let t = e["t"].as_f64().unwrap_or(f64::NAN);
        let kind = e["kind"].as_str().unwrap_or("?");
        let detail = match kind {
            "signal" | "signal-out" => format!(
                "{} {}",
                e["name"].as_str().unwrap_or(""),
                e["what"].as_str().unwrap_or("")
            ),
            "pc-state" | "ice-state" | "signaling-state" => {
                e["state"].as_str().unwrap_or("").to_string()
            }
            "ontrack" => e["trackKind"].as_str().unwrap_or("").to_string(),
            "event" => e["name"].as_str().unwrap_or("").to_string(),
            "lib" => e["msg"].as_str().unwrap_or("").chars().take(60).collect(),
            _ => String::new(),
        };
        rows.push((t, format!("{kind} {detail}")));
    }
    if let Some(f) = v["firsts"].as_object() {
        for (k, t) in f {
            rows.push((t.as_f64().unwrap_or(f64::NAN), format!("stats: {k}")));
        }
    }
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!("\n{label} (t0 = {t0:.1} epoch ms)");
    for (t, what) in rows {
        println!("{:8.1}  {what}", t - t0);
    }
    if std::env::var("MEDIA_BENCH_TRACE_SDP").is_ok_and(|v| v == "1") {
        for d in v["sdp"].as_array().into_iter().flatten() {
            for side in ["remote", "local"] {
                println!(
                    "--- {label}: {side} description\n{}",
                    d[side].as_str().unwrap_or("")
                );
            }
        }
    }
}

/// Trace mode: one Rust camera → Chromium join and one Chromium → Chromium join under `cond`.
async fn trace(br: &mut Browser, cond: Condition) {
    let relay = cond.relay();
    let srv = start_server(cond.impairment()).await;
    let url = srv.url();
    // Rust camera → Chromium.
    let room = format!("{cond:?}-trace-rc");
    let (c, feed) = rust_peer(&url, &room, true, relay).await;
    // Let the camera's encoder settle so the join is what is measured.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let page = br.open("late").await;
    br.eval(page, PAGE_TRACE, json!({})).await;
    let t0 = now_ms();
    println!("\nTRACE rust-camera join t0 = {t0:.1}");
    br.eval(
        page,
        PAGE_JOIN,
        json!({"url": url, "roomId": room, "name": "late", "camera": false, "relay": relay}),
    )
    .await;
    br.eval(page, FIRST_DECODED, json!({"peer": Value::Null}))
        .await;
    let v = br.eval(page, PAGE_TRACE_END, json!({})).await;
    print_page_timeline("Rust camera → Chromium joiner: joiner page", t0, &v);
    br.close_page(page).await;
    drop(feed);
    c.close().await;
    // Chromium camera → Chromium.
    let room = format!("{cond:?}-trace-cc");
    let cam = br.open("cam").await;
    if let Ok(mime) = std::env::var("MEDIA_BENCH_TRACE_CODEC") {
        br.eval(cam, PAGE_PREFER, json!({ "mime": mime })).await;
    }
    br.eval(
        cam,
        PAGE_JOIN,
        json!({"url": url, "roomId": room, "name": "cam", "camera": true, "relay": relay}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    br.eval(cam, PAGE_TRACE, json!({})).await;
    let page = br.open("late").await;
    br.eval(page, PAGE_TRACE, json!({})).await;
    let t0 = now_ms();
    println!("\nTRACE chromium-camera join t0 = {t0:.1}");
    br.eval(
        page,
        PAGE_JOIN,
        json!({"url": url, "roomId": room, "name": "late", "camera": false, "relay": relay}),
    )
    .await;
    br.eval(page, FIRST_DECODED, json!({"peer": Value::Null}))
        .await;
    let v = br.eval(page, PAGE_TRACE_END, json!({})).await;
    let vc = br.eval(cam, PAGE_TRACE_END, json!({})).await;
    print_page_timeline("Chromium camera → Chromium joiner: joiner page", t0, &v);
    print_page_timeline("Chromium camera → Chromium joiner: camera page", t0, &vc);
    br.close_page(page).await;
    br.close_page(cam).await;
    // Chromium camera → Rust joiner: the camera page's timeline; ours is the `TRACE rust`
    // lines of `rust_joins` and, with `RUST_LOG`, the tracing lines on stderr.
    let room = format!("{cond:?}-trace-cr");
    let cam = br.open("cam").await;
    br.eval(
        cam,
        PAGE_JOIN,
        json!({"url": url, "roomId": room, "name": "cam", "camera": true, "relay": relay}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    br.eval(cam, PAGE_TRACE, json!({})).await;
    let t0 = now_ms();
    println!("\nTRACE chromium-camera rust-joiner t0 = {t0:.1}");
    let (sample, r) = rust_joins(&url, &room, relay).await;
    let vc = br.eval(cam, PAGE_TRACE_END, json!({})).await;
    println!("\nChromium camera → Rust joiner: Rust joiner (t0 = {t0:.1} epoch ms)");
    print_rust_trace(t0);
    if let Some((_, f)) = sample {
        println!("{f:8.1}  first frame decoded");
    }
    print_page_timeline("Chromium camera → Rust joiner: camera page", t0, &vc);
    r.close().await;
    br.close_page(cam).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), srv.shutdown()).await;
}

/// The NAL unit types of an Annex B access unit, for the trace.
fn nal_types(au: &[u8]) -> Vec<u8> {
    annexb::nal_units(au).filter_map(annexb::nal_type).collect()
}

/// Trace mode: what `rust_joins` saw (epoch ms, step), printed by `print_rust_trace`.
static RUST_TRACE: std::sync::Mutex<Vec<(f64, String)>> = std::sync::Mutex::new(Vec::new());

fn rust_mark(what: impl Into<String>) {
    if std::env::var("MEDIA_BENCH_TRACE").is_ok_and(|v| v == "1")
        && let Ok(mut t) = RUST_TRACE.lock()
    {
        t.push((now_ms(), what.into()));
    }
}

fn print_rust_trace(t0: f64) {
    if let Ok(mut t) = RUST_TRACE.lock() {
        for (at, what) in t.drain(..) {
            println!("{:8.1}  {what}", at - t0);
        }
    }
}

fn stats(xs: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

const ROWS: [&str; 4] = [
    "Rust camera → Rust joins",
    "Rust camera → Chromium joins",
    "Chromium camera → Rust joins",
    "Chromium camera → Chromium joins",
];

/// Runs `runs` rounds of the four pairs under `cond`; returns each row's samples.
async fn measure(br: &mut Browser, cond: Condition, runs: usize) -> Vec<Vec<Sample>> {
    let relay = cond.relay();
    let srv = start_server(cond.impairment()).await;
    let url = srv.url();
    let mut hog = (cond == Condition::Load).then(|| {
        std::process::Command::new("stress-ng")
            .args(["--cpu", "2", "--timeout", "900s", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stress-ng (scripts/setup.sh)")
    });
    let mut rows: Vec<Vec<Sample>> = vec![Vec::new(); ROWS.len()];
    let started = Instant::now();
    for i in 0..runs {
        // Rust ↔ Rust.
        let room = format!("{cond:?}-rr{i}");
        let (a, feed) = rust_peer(&url, &room, true, relay).await;
        let (sample, b) = rust_joins(&url, &room, relay).await;
        rows[0].push(sample);
        b.close().await;
        // Chromium joins a Rust camera in a fresh room.
        let room = format!("{cond:?}-rc{i}");
        let (c, feed2) = rust_peer(&url, &room, true, relay).await;
        let (sample, p) = page_joins(br, &url, &room, "late", false, relay).await;
        rows[1].push(sample);
        br.close_page(p).await;
        drop((feed, feed2));
        a.close().await;
        c.close().await;
        // Chromium camera; Rust joins, then Chromium joins.
        let room = format!("{cond:?}-cr{i}");
        let (_, cam) = page_joins(br, &url, &room, "cam", true, relay).await;
        let (sample, r) = rust_joins(&url, &room, relay).await;
        rows[2].push(sample);
        r.close().await;
        let (sample, p) = page_joins(br, &url, &room, "late", false, relay).await;
        rows[3].push(sample);
        br.close_page(p).await;
        br.close_page(cam).await;
        eprintln!(
            "{cond:?}: run {}/{runs} done ({:.0} s)",
            i + 1,
            started.elapsed().as_secs_f64()
        );
    }
    if let Some(h) = hog.as_mut() {
        let _ = h.kill();
        let _ = h.wait();
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), srv.shutdown()).await;
    rows
}

fn print_table(cond: Condition, runs: usize, rows: &[Vec<Sample>]) {
    let col = |row: &[Sample], pick: fn(&(f64, f64)) -> f64| -> Vec<f64> {
        row.iter().flatten().map(pick).collect()
    };
    let base_conn = stats(&col(&rows[3], |s| s.0)).0;
    let base_frame = stats(&col(&rows[3], |s| s.1)).0;
    let codec = std::env::var("MEDIA_BENCH_CHROMIUM_CODEC")
        .map(|c| format!(", pages prefer {c}"))
        .unwrap_or_default();
    println!(
        "\n{}: join → peer-connect → first decoded frame, {runs} runs (ms){codec}\n",
        cond.describe()
    );
    println!(
        "| camera → joiner | peer-connect median (min–max) | / Chromium↔Chromium | first frame median (min–max) | / Chromium↔Chromium | failed |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, row) in ROWS.iter().zip(rows) {
        let (cm, cmin, cmax) = stats(&col(row, |s| s.0));
        let (fm, fmin, fmax) = stats(&col(row, |s| s.1));
        let failed = row.iter().filter(|s| s.is_none()).count();
        println!(
            "| {name} | {cm:.0} ({cmin:.0}–{cmax:.0}) | {:.2}× | {fm:.0} ({fmin:.0}–{fmax:.0}) | {:.2}× | {failed}/{} |",
            cm / base_conn,
            fm / base_frame,
            row.len()
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::var("MEDIA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .clamp(1, 50);
    let conditions: Vec<Condition> = std::env::var("MEDIA_BENCH_CONDITIONS")
        .unwrap_or_else(|_| "loopback,delay50,lossy,load".to_string())
        .split(',')
        .filter_map(Condition::parse)
        .collect();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let mut br = Browser::start().await;
    if std::env::var("MEDIA_BENCH_TRACE").is_ok_and(|v| v == "1") {
        for cond in conditions {
            trace(&mut br, cond).await;
        }
        br.quit().await;
        return;
    }
    let mut results = Vec::new();
    for cond in conditions {
        let rows = measure(&mut br, cond, runs).await;
        print_table(cond, runs, &rows);
        results.push((cond, rows));
    }
    println!("\n---- summary ----");
    for (cond, rows) in &results {
        print_table(*cond, runs, rows);
    }
    br.quit().await;
}
