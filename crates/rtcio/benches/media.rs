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
//! way); `load` (loopback with `stress-ng --cpu 2` saturating the CPU).
//!
//! `cargo bench -p rtcio --bench media` (Chromium and `npm ci` in tests/browser needed, and
//! stress-ng for `load`; as root run it inside `unshare -n sh -c 'ip link set lo up && …'` to
//! keep traffic on loopback). `MEDIA_BENCH_RUNS` (default 10) sets the repetitions per pair,
//! `MEDIA_BENCH_CONDITIONS` (default `loopback,delay50,load`) which conditions run.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::browser::Browser;
use rtcio::{MediaKind, Options, Socket};
use rtcio_media::H264Decoder;
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
    /// Loopback with `stress-ng --cpu 2`.
    Load,
}

impl Condition {
    fn parse(name: &str) -> Option<Condition> {
        match name.trim() {
            "loopback" => Some(Condition::Loopback),
            "delay50" => Some(Condition::Delay50),
            "load" => Some(Condition::Load),
            _ => None,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Condition::Loopback => "loopback",
            Condition::Delay50 => "50 ms one way (relay-only through the impairing TURN relay)",
            Condition::Load => "loopback, CPU saturated by stress-ng --cpu 2",
        }
    }

    fn relay(self) -> bool {
        self == Condition::Delay50
    }
}

/// The signaling server; with `relay` also a TURN relay on 127.0.0.1 that delays every packet
/// it relays by 50 ms (its `/ice-servers` hands out credentials for it).
async fn start_server(relay: bool) -> rtcio_server::RunningServer {
    let turn = relay.then(|| rtcio_server::TurnConfig {
        relay: Some(rtcio_server::RelayConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            allow_loopback: true,
            impairment: rtcio_server::impair::Schedule::parse(&["delay=50ms".to_string()])
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
        });
    }
    let mut cams = s.subscribe("camera");
    s.server()
        .emit("join-room", vec![json!({"roomId": room, "name": "late"})])
        .expect("join");
    let first_frame = async {
        let ev = cams.recv().await?;
        let track = ev.stream.and_then(|st| st.track(MediaKind::Video))?;
        let mut dec = H264Decoder::new().expect("decoder");
        let mut last_pli: Option<Instant> = None;
        loop {
            let f = track.recv().await?;
            if !f.keyframe && dec.needs_keyframe() {
                // What a real receiver does (Chromium too): ask the sender for an IDR, at most
                // every 200 ms; the synthetic camera only sends one when asked.
                if last_pli.is_none_or(|t: Instant| t.elapsed() >= Duration::from_millis(200)) {
                    track.request_keyframe();
                    last_pli = Some(Instant::now());
                }
                continue;
            }
            if let Ok(Some(_)) = dec.decode(&f.data, f.rtp_timestamp) {
                return Some(Instant::now());
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
    let srv = start_server(relay).await;
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
    println!(
        "\n{}: join → peer-connect → first decoded frame, {runs} runs (ms)\n",
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
        .unwrap_or_else(|_| "loopback,delay50,load".to_string())
        .split(',')
        .filter_map(Condition::parse)
        .collect();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let mut br = Browser::start().await;
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
