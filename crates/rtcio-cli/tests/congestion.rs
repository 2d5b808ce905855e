//! Congestion control through the `rtcio` binary: a 720p sender behind a 600 kbit/s bottleneck
//! (a `tbf` qdisc with a bounded queue on `lo`, in a network namespace of the test's own) must
//! bring its encoder's target below the cap within 5 s of connecting, whether the receiver is
//! another `rtcio` (our TWCC feedback) or the rtc.io page in headless Chromium (Chromium's).
//!
//! `capped_links_keep_decoding` runs the same scenarios the way a real call starts (the
//! default 300 kbit/s start estimate) and asserts the receivers' side: each keeps decoding at
//! ≥ 15 fps behind the cap. It was ignored while one run in six started at 0 fps for seconds
//! and the Rust receiver got 20 fps at best: the encoder waited for a peer at the cap (a 720p
//! IDR that flooded the link, and every loss asked for another) and a keyframe skipped the
//! frames after it in a row. With the encoder waiting at the start estimate and keyframes
//! charged over the next frames, 4 of 4 runs kept 24–30 fps at load 4–27. From a start far
//! above the cap (the first three tests) the flood of the first second still costs the
//! receiver several seconds of video (issue 12's note).

//! Needs root (`unshare -n`, `tc`): `scripts/test.sh` runs the suite as root. The outer test
//! re-runs this binary's `#[ignore]`d inner test inside a fresh namespace, so the cap never
//! touches the loopback other tests use.

mod common;

use std::process::Command;

use common::browser::Browser;
use common::*;
use serde_json::Value;

/// Set in the inner test's environment.
const INNER_ENV: &str = "RTCIO_CC_INNER";
/// Set (to anything) when the inner test must also assert the receivers' frame rates.
const FPS_ENV: &str = "RTCIO_CC_CHECK_FPS";
/// The frame rate a receiver must keep behind the cap (when [`FPS_ENV`] is set).
const MIN_FPS: f64 = 15.0;
/// The bottleneck.
const CAP_KBIT: u32 = 600;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs the inner test `name` of this binary in a new network namespace; fails with its output.
fn run_in_netns(name: &str, check_fps: bool) {
    if !root() {
        eprintln!("skipped: needs root for a private network namespace and tc (scripts/test.sh)");
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new("unshare")
        .arg("-n")
        .arg(&exe)
        .args([
            "--exact",
            name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER_ENV, "1")
        .env(FPS_ENV, if check_fps { "1" } else { "" })
        .output()
        .expect("unshare runs");
    let text = format!(
        "--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "inner test {name} failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "inner test {name} did not run:\n{text}"
    );
    eprintln!("{text}");
}

/// Whether [`FPS_ENV`] asks for the frame-rate assertion.
fn check_fps_enabled() -> bool {
    std::env::var(FPS_ENV).is_ok_and(|v| !v.is_empty())
}

/// Asserts a receiver's frame rate when [`FPS_ENV`] asks for it; prints it always.
fn check_fps(what: &str, fps: f64, context: &str) {
    eprintln!("{what}: {fps:.1} fps behind a {CAP_KBIT} kbit/s cap; {context}");
    if check_fps_enabled() {
        assert!(
            fps >= MIN_FPS,
            "{what} decodes {fps:.1} fps behind a {CAP_KBIT} kbit/s cap; {context}"
        );
    }
}

fn sh(cmd: &str) {
    let st = Command::new("sh")
        .args(["-c", cmd])
        .status()
        .expect("sh runs");
    assert!(st.success(), "`{cmd}` failed");
}

/// The namespace's `lo` up, with an Ethernet-sized MTU (set before any connection exists) so
/// the token bucket's burst covers a packet.
fn loopback_up() {
    sh("ip link set lo up");
    sh("ip link set lo mtu 1500");
}

/// A `kbit` token bucket with at most 200 ms of queue in front of `lo`.
fn cap_loopback(kbit: u32) {
    sh(&format!(
        "tc qdisc replace dev lo root tbf rate {kbit}kbit burst 6kb latency 200ms"
    ));
}

/// Caps only the traffic to `dst` (an address on `lo`) at `kbit` with a 20-packet queue; the
/// rest of `lo` stays unlimited.
fn cap_destination(dst: &str, kbit: u32) {
    sh("tc qdisc replace dev lo root handle 1: htb default 20");
    sh("tc class add dev lo parent 1: classid 1:20 htb rate 10gbit");
    sh(&format!(
        "tc class add dev lo parent 1: classid 1:10 htb rate {kbit}kbit ceil {kbit}kbit"
    ));
    sh("tc qdisc add dev lo parent 1:10 handle 10: pfifo limit 20");
    sh(&format!(
        "tc filter add dev lo parent 1: protocol ip u32 match ip dst {dst}/32 flowid 1:10"
    ));
}

/// The median `fps` of `n` consecutive `video-stats` lines from `peer` at or after `from` (ms).
async fn median_fps(p: &mut Rtcio, peer: &str, from: u64, n: usize) -> (f64, Vec<f64>) {
    let mut fps = Vec::new();
    while fps.len() < n {
        let v = p
            .wait_for("video-stats", |v| {
                v["type"] == "video-stats" && v["peer"] == peer
            })
            .await;
        if v["ts"].as_u64().unwrap_or(0) >= from {
            fps.push(num(&v, "fps"));
        }
    }
    fps.sort_by(f64::total_cmp);
    (fps[fps.len() / 2], fps)
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or(f64::NAN)
}

/// Starts the 720p sender and waits until its target is below the cap; returns the sender and
/// the `ts` of its `peer-connect`.
async fn capped_sender(url: &str, room: &str) -> (Rtcio, u64) {
    // Without the fps check the start is well above the cap (the default start, 300 kbit/s, is
    // below it): the test is that the estimate comes down. With it, the call starts the way a
    // real one does (the default start), and the test is that the receiver keeps decoding.
    let from_above = !check_fps_enabled();
    let mut args = vec![
        "--video",
        "testsrc",
        "--video-size",
        "1280x720",
        "--fps",
        "30",
        "--video-bitrate",
        "2500",
        "--duration",
        "40",
    ];
    if from_above {
        args.extend(["--cc-start-kbps", "1500"]);
    }
    let mut send = Rtcio::spawn("sender", &[join_args(url, room, "sender"), args].concat());
    let connected = send.wait_type("peer-connect").await;
    let t0 = connected["ts"].as_u64().expect("ts");
    let below = send
        .wait_for("send-stats with the target below the cap", |v| {
            v["type"] == "send-stats"
                && v["kind"] == "video"
                && num(v, "target_kbps") < f64::from(CAP_KBIT)
        })
        .await;
    let settle_ms = below["ts"].as_u64().expect("ts").saturating_sub(t0);
    eprintln!(
        "target {} kbit/s (estimate {} kbit/s) {settle_ms} ms after peer-connect",
        below["target_kbps"], below["estimate_kbps"]
    );
    assert!(
        settle_ms <= 5_000,
        "target fell below {CAP_KBIT} kbit/s only {settle_ms} ms after connecting: {below}"
    );
    (send, t0)
}

/// Waits for the sender's next `n` video `send-stats` lines (one a second).
async fn video_stats_lines(send: &mut Rtcio, n: usize) {
    for _ in 0..n {
        send.wait_for("send-stats", |v| {
            v["type"] == "send-stats" && v["kind"] == "video"
        })
        .await;
    }
}

/// The sender's video `send-stats` so far, one line each (what a failure needs to be read).
fn video_lines(send: &Rtcio) -> String {
    send.seen_type("send-stats")
        .iter()
        .filter(|v| v["kind"] == "video")
        .map(|v| {
            format!(
                "\n  ts {} fps {} kbps {} target {} estimate {} {}x{} q{} keyframes {}/{} req",
                v["ts"],
                v["fps"],
                v["kbps"],
                v["target_kbps"],
                v["estimate_kbps"],
                v["width"],
                v["height"],
                v["quality_level"],
                v["keyframes"],
                v["keyframe_requests"]
            )
        })
        .collect()
}

/// The sender's own socket id.
async fn sender_id(send: &mut Rtcio) -> String {
    let joined = send.seen_or_wait("joined", |v| v["type"] == "joined").await;
    joined["id"].as_str().expect("own id").to_string()
}

/// The sender's video rate over its next 8 video `send-stats` lines (8 s from where the test
/// has read to): the median must stay below the cap, so the link is not overfilled. The target
/// itself may not: an encoder that sends less than its target (easy content) leaves the link
/// below capacity, the estimate then climbs to 1.5x what was delivered (libwebrtc's limit too)
/// until the queue's delay rise brings it back, a sawtooth around the capacity. Returns the
/// last line.
async fn sends_below_cap(send: &mut Rtcio) -> Value {
    let mut sent = Vec::new();
    let mut targets = Vec::new();
    let mut last = Value::Null;
    while sent.len() < 8 {
        last = send
            .wait_for("send-stats", |v| {
                v["type"] == "send-stats" && v["kind"] == "video"
            })
            .await;
        sent.push(num(&last, "kbps"));
        targets.push(num(&last, "target_kbps"));
    }
    sent.sort_by(f64::total_cmp);
    let median = sent[sent.len() / 2];
    assert!(
        median < f64::from(CAP_KBIT),
        "median video rate {median} kbit/s above the cap ({sent:?}; targets {targets:?}): {}",
        video_lines(send)
    );
    last
}

#[test]
fn capped_link_rust_to_rust() {
    run_in_netns("inner_capped_rust", false);
}

#[test]
fn one_fanout_two_peers_one_capped() {
    run_in_netns("inner_fanout_one_capped", false);
}

#[test]
fn capped_link_rust_to_chromium() {
    run_in_netns("inner_capped_chromium", false);
}

#[test]
fn capped_links_keep_decoding() {
    for name in [
        "inner_capped_rust",
        "inner_fanout_one_capped",
        "inner_capped_chromium",
    ] {
        run_in_netns(name, true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside its own network namespace, started by capped_link_rust_to_rust"]
async fn inner_capped_rust() {
    assert!(
        std::env::var_os(INNER_ENV).is_some(),
        "run through capped_link_rust_to_rust"
    );
    loopback_up();
    let server = server().await;
    let url = server.url();
    let room = room("cc");
    let mut recv = Rtcio::spawn(
        "receiver",
        &[join_args(&url, &room, "receiver"), vec!["--duration", "40"]].concat(),
    );
    recv.wait_type("joined").await;
    cap_loopback(CAP_KBIT);
    let (mut send, t0) = capped_sender(&url, &room).await;
    // The receiver keeps decoding: the median fps of 8 consecutive seconds from 6 s on.
    let sender_id = sender_id(&mut send).await;
    let (median, fps) = median_fps(&mut recv, &sender_id, t0 + 6_000, 8).await;
    let last = sends_below_cap(&mut send).await;
    let got = recv.seen_type("video-stats").last().map(|v| v.to_string());
    check_fps(
        "the Rust receiver",
        median,
        &format!("of {fps:?}; sender: {last}; receiver: {got:?}"),
    );
}

/// Frames the page decoded from `peer` so far.
async fn page_decoded(br: &mut Browser, page: u64, peer: &str) -> f64 {
    let v = br
        .eval(
            page,
            "async (o) => (await rtcio.mediaStats({peer: o.peer}))[o.peer]?.video?.framesDecoded ?? 0",
            serde_json::json!({"peer": peer}),
        )
        .await;
    v.as_f64().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside its own network namespace, started by capped_link_rust_to_chromium"]
async fn inner_capped_chromium() {
    assert!(
        std::env::var_os(INNER_ENV).is_some(),
        "run through capped_link_rust_to_chromium"
    );
    loopback_up();
    let server = server().await;
    let url = server.url();
    let room = room("ccweb");
    let mut br = Browser::start().await;
    let page = br.open("web").await;
    br.eval(
        page,
        "(o) => rtcio.join(o.url, o)",
        serde_json::json!({"url": url, "roomId": room, "name": "web"}),
    )
    .await;
    cap_loopback(CAP_KBIT);
    let (mut send, _t0) = capped_sender(&url, &room).await;
    let sender_id = sender_id(&mut send).await;
    // Let it settle, then measure Chromium's decode rate over 8 s, timed by the sender's
    // once-a-second stats lines (kept: they are what a failure is read from).
    video_stats_lines(&mut send, 4).await;
    let a = page_decoded(&mut br, page, &sender_id).await;
    let start = std::time::Instant::now();
    video_stats_lines(&mut send, 8).await;
    let b = page_decoded(&mut br, page, &sender_id).await;
    let fps = (b - a) / start.elapsed().as_secs_f64();
    let last = sends_below_cap(&mut send).await;
    check_fps(
        "Chromium",
        fps,
        &format!(
            "sender: {last}\nsender's video lines: {}",
            video_lines(&send)
        ),
    );
    br.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside its own network namespace, started by one_fanout_two_peers_one_capped"]
async fn inner_fanout_one_capped() {
    assert!(
        std::env::var_os(INNER_ENV).is_some(),
        "run through one_fanout_two_peers_one_capped"
    );
    loopback_up();
    let server = server().await;
    let url = server.url();
    let room = room("ccfan");
    // Each receiver's media arrives on its own address; only the slow one's is capped.
    let receiver = |name: &'static str, ip: &'static str| {
        Rtcio::spawn(
            name,
            &[
                join_args(&url, &room, name),
                vec!["--bind", ip, "--duration", "40"],
            ]
            .concat(),
        )
    };
    let mut slow = receiver("slow", "127.0.0.2");
    slow.wait_type("joined").await;
    let mut fast = receiver("fast", "127.0.0.3");
    fast.wait_type("joined").await;
    cap_destination("127.0.0.2", CAP_KBIT);
    let (mut send, t0) = capped_sender(&url, &room).await;
    let id = sender_id(&mut send).await;
    let (fast_fps, fast_all) = median_fps(&mut fast, &id, t0 + 6_000, 6).await;
    let (slow_fps, slow_all) = median_fps(&mut slow, &id, t0 + 6_000, 6).await;
    let last = sends_below_cap(&mut send).await;
    let context = format!("fast {fast_all:?}, slow {slow_all:?}; sender: {last}");
    // Nothing deadlocks: the uncapped peer keeps decoding what the one encoder sends.
    let decoded: Vec<f64> = fast
        .seen_type("video-stats")
        .iter()
        .filter(|v| v["ts"].as_u64().unwrap_or(0) >= t0 + 6_000)
        .map(|v| num(v, "frames_decoded"))
        .collect();
    assert!(
        decoded.last() > decoded.first(),
        "the uncapped peer decoded nothing in the measured window; {context}"
    );
    check_fps("the uncapped peer", fast_fps, &context);
    check_fps("the capped peer", slow_fps, &context);
}
