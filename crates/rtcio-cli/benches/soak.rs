//! Soak (issue 17): `cargo bench -p rtcio-cli --bench soak` runs 6 `rtcio join` processes in
//! one room of an in-process rtcio-server on loopback, each sending the synthetic test pattern
//! (320×180, 15 fps, 300 kbit/s) and tone, for 10 minutes, and samples every process's RSS
//! (`/proc/PID/status` VmRSS), open file descriptors (`/proc/PID/fd`) and decoded video frame
//! rate (its `video-stats` lines) every 10 s. Prints one markdown table; the goal is < 5 % RSS
//! growth from the first sample after the warm-up to the last.
//!
//! Environment: `RTCIO_SOAK_SECS` (600), `RTCIO_SOAK_PEERS` (6), `RTCIO_SOAK_WARMUP_SECS` (30),
//! `RTCIO_SOAK_SAMPLE_SECS` (10). Not a test: without `--bench` it only says so. Every child is
//! killed at the end (and when this process dies: kill_on_drop); the run is bounded by its
//! duration plus 3 minutes.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one peer's stdout told so far.
#[derive(Default)]
struct Seen {
    peer_connects: usize,
    peer_disconnects: usize,
    /// Latest `fps` of each remote video track, by (peer, mid).
    fps: HashMap<(String, String), f64>,
    /// Latest freeze count of each remote video track.
    freezes: HashMap<(String, String), u64>,
}

struct Peer {
    name: String,
    child: Child,
    pid: u32,
    seen: Arc<Mutex<Seen>>,
}

#[derive(Clone, Copy)]
struct Sample {
    rss_kb: u64,
    fds: usize,
    fps: f64,
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn spawn(url: &str, room: &str, name: &str) -> Peer {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rtcio"))
        .args([
            "join",
            "--json",
            "--loopback",
            "--server",
            url,
            "--room",
            room,
            "--name",
            name,
            "--video",
            "testsrc",
            "--audio",
            "tone",
            "--video-size",
            "320x180",
            "--fps",
            "15",
            "--video-bitrate",
            "300",
        ])
        .env("RTCIO_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn rtcio");
    let pid = child.id().expect("pid");
    let out = child.stdout.take().expect("stdout");
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(out).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
            match v["type"].as_str() {
                Some("peer-connect") => s.peer_connects += 1,
                Some("peer-disconnect") => s.peer_disconnects += 1,
                Some("video-stats") => {
                    let key = (
                        v["peer"].as_str().unwrap_or("").to_string(),
                        v["mid"].as_str().unwrap_or("").to_string(),
                    );
                    if v["ended"] == true {
                        s.fps.remove(&key);
                    } else {
                        s.fps.insert(key.clone(), v["fps"].as_f64().unwrap_or(0.0));
                    }
                    s.freezes
                        .insert(key, v["freeze_count"].as_u64().unwrap_or(0));
                }
                _ => {}
            }
        }
    });
    Peer {
        name: name.to_string(),
        child,
        pid,
        seen,
    }
}

fn sample(p: &Peer) -> Sample {
    let fps = p
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .fps
        .values()
        .sum();
    Sample {
        rss_kb: rss_kb(p.pid),
        fds: fd_count(p.pid),
        fps,
    }
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn pct(from: u64, to: u64) -> f64 {
    if from == 0 {
        return 0.0;
    }
    (to as f64 - from as f64) * 100.0 / from as f64
}

async fn run() -> Result<(), String> {
    let secs = env_secs("RTCIO_SOAK_SECS", 600);
    let n = env_secs("RTCIO_SOAK_PEERS", 6) as usize;
    let warmup = Duration::from_secs(env_secs("RTCIO_SOAK_WARMUP_SECS", 30));
    let every = Duration::from_secs(env_secs("RTCIO_SOAK_SAMPLE_SECS", 10).max(1));
    let srv = rtcio_server::start(rtcio_server::ServerConfig {
        bind: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
        policy: rtcio_server::Policy {
            relay_per_second: 0.0,
            ..rtcio_server::Policy::default()
        },
        ..Default::default()
    })
    .await
    .map_err(|e| format!("server: {e}"))?;
    let url = srv.url();
    let room = format!("soak-{}", std::process::id());
    let mut peers: Vec<Peer> = (0..n)
        .map(|i| spawn(&url, &room, &format!("p{i}")))
        .collect();

    // The full mesh first (bounded).
    let t0 = Instant::now();
    let limit = Duration::from_secs(120);
    loop {
        let connected = peers.iter().all(|p| {
            p.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .peer_connects
                >= n - 1
        });
        if connected {
            break;
        }
        if t0.elapsed() > limit {
            return Err(format!("the {n}-peer mesh did not form within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mesh_at = t0.elapsed();
    eprintln!(
        "soak: {n} peers connected in {:.1} s; warm-up {warmup:?}, then {secs} s sampled every {every:?}",
        mesh_at.as_secs_f64()
    );
    tokio::time::sleep(warmup).await;

    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut series: Vec<Vec<Sample>> = vec![Vec::new(); n];
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        for (i, p) in peers.iter().enumerate() {
            series[i].push(sample(p));
        }
        let s: Vec<String> = series
            .iter()
            .map(|v| {
                let x = v[v.len() - 1];
                format!("{:.1}MB/{}fd/{:.0}fps", mb(x.rss_kb), x.fds, x.fps)
            })
            .collect();
        eprintln!("soak {:>4} s: {}", start.elapsed().as_secs(), s.join("  "));
        if Instant::now() >= end {
            break;
        }
        for p in &mut peers {
            if let Ok(Some(st)) = p.child.try_wait() {
                return Err(format!("{} exited early: {st}", p.name));
            }
        }
    }

    println!(
        "\n{n} peers, {secs} s after a {} s warm-up (mesh formed in {:.1} s), samples every {} s; each peer sends 320×180 15 fps + Opus and decodes {} remote videos\n",
        warmup.as_secs(),
        mesh_at.as_secs_f64(),
        every.as_secs(),
        n - 1
    );
    println!(
        "| peer | RSS start MB | RSS end MB | growth % | growth % 2nd half | RSS max MB | fds start → end (max) | decoded fps mean (min) | freezes | peer-disconnects |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut worst = f64::MIN;
    for (i, p) in peers.iter().enumerate() {
        let v = &series[i];
        let (first, last) = (v[0], v[v.len() - 1]);
        let mid = v[v.len() / 2];
        let max_rss = v.iter().map(|s| s.rss_kb).max().unwrap_or(0);
        let max_fd = v.iter().map(|s| s.fds).max().unwrap_or(0);
        let mean_fps = v.iter().map(|s| s.fps).sum::<f64>() / v.len() as f64;
        let min_fps = v.iter().map(|s| s.fps).fold(f64::MAX, f64::min);
        let seen = p.seen.lock().unwrap_or_else(|e| e.into_inner());
        let freezes: u64 = seen.freezes.values().sum();
        let growth = pct(first.rss_kb, last.rss_kb);
        worst = worst.max(growth);
        println!(
            "| {} | {:.1} | {:.1} | {:+.1} | {:+.1} | {:.1} | {} → {} ({}) | {:.1} ({:.1}) | {} | {} |",
            p.name,
            mb(first.rss_kb),
            mb(last.rss_kb),
            growth,
            pct(mid.rss_kb, last.rss_kb),
            mb(max_rss),
            first.fds,
            last.fds,
            max_fd,
            mean_fps,
            min_fps,
            freezes,
            seen.peer_disconnects
        );
    }
    println!(
        "\nworst RSS growth {worst:+.1} % (goal < 5 %); decoded fps is the sum over the {} remote videos (15 each).",
        n - 1
    );
    for p in &mut peers {
        let _ = p.child.start_kill();
    }
    for p in &mut peers {
        let _ = tokio::time::timeout(Duration::from_secs(10), p.child.wait()).await;
    }
    let _ = srv.shutdown().await;
    Ok(())
}

fn main() -> std::process::ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!("soak bench: skipped (run it with `cargo bench -p rtcio-cli --bench soak`)");
        return std::process::ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("soak: runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let secs = env_secs("RTCIO_SOAK_SECS", 600);
    let bound = Duration::from_secs(secs + env_secs("RTCIO_SOAK_WARMUP_SECS", 30) + 180);
    match rt.block_on(async { tokio::time::timeout(bound, run()).await }) {
        Ok(Ok(())) => std::process::ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("soak failed: {e}");
            std::process::ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("soak: did not finish within {bound:?}");
            std::process::ExitCode::FAILURE
        }
    }
}
