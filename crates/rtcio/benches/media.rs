//! Join → first remote media frame, per pair of peer kinds, in one run (not a test; prints a
//! table). A "camera" peer is already in the room sending H.264 + Opus (Rust: the synthetic
//! pattern through OpenH264 at 320×240, Chromium: its fake camera at 640×480); the clock starts
//! when the other peer starts joining and stops at the first remote video frame it can decode
//! (Rust: first access unit OpenH264 decodes; Chromium: `framesDecoded ≥ 1`).
//!
//! `cargo bench -p rtcio --bench media` (Chromium and `npm ci` in tests/browser needed; as root
//! run it inside `unshare -n sh -c 'ip link set lo up && …'` to keep traffic on loopback).
//! `MEDIA_BENCH_RUNS` (default 5) sets the repetitions per pair.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::browser::Browser;
use rtcio::{MediaKind, Options, Socket};
use rtcio_media::H264Decoder;
use serde_json::{Value, json};

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

/// A Rust peer in `room`; with `camera` it sends the synthetic camera.
async fn rust_peer(
    url: &str,
    room: &str,
    camera: bool,
) -> (Socket, Option<common::media::SyntheticFeed>) {
    let s = Socket::connect(url, Options::loopback())
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

/// Joins `room` as a Rust peer (clock starts before connecting) and returns the ms until the
/// first decodable remote video frame.
async fn rust_joins(url: &str, room: &str) -> (f64, Socket) {
    let t0 = Instant::now();
    let s = Socket::connect(url, Options::loopback())
        .await
        .expect("connect");
    let mut cams = s.subscribe("camera");
    s.server()
        .emit("join-room", vec![json!({"roomId": room, "name": "late"})])
        .expect("join");
    let ev = common::room::next(&mut cams, "camera").await;
    let track = ev
        .stream
        .and_then(|st| st.track(MediaKind::Video))
        .expect("video track");
    let mut dec = H264Decoder::new().expect("decoder");
    let mut last_pli: Option<Instant> = None;
    loop {
        let f = tokio::time::timeout(common::room::WAIT, track.recv())
            .await
            .expect("frame in time")
            .expect("track open");
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
            return (t0.elapsed().as_secs_f64() * 1000.0, s);
        }
    }
}

async fn page_joins(
    br: &mut Browser,
    url: &str,
    room: &str,
    label: &str,
    camera: bool,
) -> (f64, u64) {
    let page = br.open(label).await;
    let t0 = now_ms();
    br.eval(
        page,
        "(o) => rtcio.join(o.url, o)",
        json!({"url": url, "roomId": room, "name": label, "camera": camera}),
    )
    .await;
    let t1 = br
        .eval(page, FIRST_DECODED, json!({"peer": Value::Null}))
        .await;
    if t1.is_null() {
        eprintln!("{label} in {room}: no remote video decoded within 30 s");
    }
    (t1.as_f64().unwrap_or(f64::NAN) - t0, page)
}

fn stats(xs: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::var("MEDIA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .clamp(1, 50);
    let srv = common::room::server().await;
    let url = srv.url();
    let mut br = Browser::start().await;
    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("Rust camera → Rust joins", vec![]),
        ("Rust camera → Chromium joins", vec![]),
        ("Chromium camera → Rust joins", vec![]),
        ("Chromium camera → Chromium joins", vec![]),
    ];
    let started = Instant::now();
    for i in 0..runs {
        // Rust ↔ Rust.
        let room = format!("rr{i}");
        let (a, feed) = rust_peer(&url, &room, true).await;
        let (ms, b) = rust_joins(&url, &room).await;
        rows[0].1.push(ms);
        b.close().await;
        // Chromium joins the same Rust camera in a fresh room.
        let room = format!("rc{i}");
        let (c, feed2) = rust_peer(&url, &room, true).await;
        let (ms, p) = page_joins(&mut br, &url, &room, "late", false).await;
        rows[1].1.push(ms);
        br.close_page(p).await;
        drop((feed, feed2));
        a.close().await;
        c.close().await;
        // Chromium camera; Rust joins, then Chromium joins.
        let room = format!("cr{i}");
        let cam = br.open("cam").await;
        br.eval(
            cam,
            "(o) => rtcio.join(o.url, o)",
            json!({"url": url, "roomId": room, "name": "cam", "camera": true}),
        )
        .await;
        let (ms, r) = rust_joins(&url, &room).await;
        rows[2].1.push(ms);
        r.close().await;
        let (ms, p) = page_joins(&mut br, &url, &room, "late", false).await;
        rows[3].1.push(ms);
        br.close_page(p).await;
        br.close_page(cam).await;
        eprintln!(
            "run {}/{runs} done ({:.0} s)",
            i + 1,
            started.elapsed().as_secs_f64()
        );
    }
    let base = stats(&rows[3].1).0;
    println!("\njoin → first decodable remote video frame, {runs} runs (ms)\n");
    println!("| pair | median | min | max | median / Chromium↔Chromium |");
    println!("|---|---:|---:|---:|---:|");
    for (name, xs) in &rows {
        let (med, min, max) = stats(xs);
        println!(
            "| {name} | {med:.0} | {min:.0} | {max:.0} | {:.2}× |",
            med / base
        );
    }
    br.quit().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), srv.shutdown()).await;
}
