//! `rtcio mesh --peers N`: an embedded room server on loopback and N `rtcio join` processes
//! sending media to each other (a full mesh: each encodes once and sends to N-1 peers, and
//! decodes N-1 streams). Once every peer is connected to every other, it measures for
//! `--duration`: CPU per process (from /proc) and, from the peers' own JSON lines, encodes/s
//! and decoded frames/s.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::args::{MeshArgs, secs};
use crate::exit::{CliError, code};
use crate::output::Output;
use crate::send::round2;

/// What one peer process told us so far.
#[derive(Debug, Default, Clone)]
struct PeerState {
    id: Option<String>,
    connected: BTreeSet<String>,
    /// Latest `send-stats` line per kind.
    send: BTreeMap<String, Value>,
    /// Latest `video-stats` line per remote peer.
    video: BTreeMap<String, Value>,
    /// While measuring: the first line per kind / remote peer of the window.
    send_first: BTreeMap<String, Value>,
    video_first: BTreeMap<String, Value>,
    measuring: bool,
    exited: bool,
}

struct PeerProc {
    name: String,
    child: Child,
    pid: u32,
    state: PeerState,
}

/// user + system CPU time of a process, in seconds (Linux /proc).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ...`: comm may contain spaces, so split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) are utime and stime; `rest` starts at field 3.
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Some(ticks as f64 / hz)
}

fn num(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

/// Rate of counter `k` between two stats lines (by their `ts`).
fn rate(a: Option<&Value>, b: Option<&Value>, k: &str) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) => {
            let dt = (num(b, "ts") - num(a, "ts")) / 1000.0;
            if dt > 0.0 {
                round2((num(b, k) - num(a, k)) / dt)
            } else {
                0.0
            }
        }
        _ => 0.0,
    }
}

pub async fn run(a: MeshArgs, out: Output) -> Result<(), CliError> {
    if a.peers < 2 {
        return Err(CliError::new(
            code::USAGE,
            "usage",
            "--peers must be at least 2",
        ));
    }
    let server = rtcio_server::start(rtcio_server::ServerConfig {
        bind: "127.0.0.1:0".parse().map_err(CliError::other)?,
        policy: rtcio_server::Policy {
            relay_per_second: 0.0,
            ..rtcio_server::Policy::default()
        },
        ..Default::default()
    })
    .await
    .map_err(|e| {
        CliError::new(
            code::HOST,
            "host",
            format!("cannot start the room server: {e}"),
        )
    })?;
    let url = server.url();
    let result = run_mesh(&a, &url, out).await;
    if let Err(e) = server.shutdown().await {
        warn!("stopping the room server: {e}");
    }
    result
}

async fn run_mesh(a: &MeshArgs, url: &str, out: Output) -> Result<(), CliError> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::other(format!("cannot find the rtcio executable: {e}")))?;
    let room = format!("mesh-{}", std::process::id());
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Option<Value>)>();
    let mut peers = Vec::new();
    let started = Instant::now();
    info!(peers = a.peers, %url, %room, "starting the mesh");
    for i in 0..a.peers {
        let name = format!("peer-{}", i + 1);
        let mut child = Command::new(&exe)
            .args(["join", "--json", "--loopback", "--log", "error"])
            .args(["--server", url, "--room", &room, "--name", &name])
            .args(["--video", &a.video.to_arg(), "--audio", &a.audio.to_arg()])
            .args(["--video-size", &a.video_size.to_string()])
            .args(["--fps", &a.fps.to_string()])
            .args(["--video-bitrate", &a.video_bitrate.to_string()])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| CliError::other(format!("cannot start {}: {e}", exe.display())))?;
        let pid = child.id().unwrap_or(0);
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| CliError::other("no stdout"))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send((i, Some(v))).is_err()
                {
                    return;
                }
            }
            let _ = tx.send((i, None));
        });
        peers.push(PeerProc {
            name,
            child,
            pid,
            state: PeerState::default(),
        });
    }
    drop(tx);

    let want = a.peers - 1;
    let connect_deadline = started + secs(a.connect_timeout);
    // Phase 1: until every peer is connected to every other.
    while peers.iter().any(|p| p.state.connected.len() < want) {
        match tokio::time::timeout_at(connect_deadline, rx.recv()).await {
            Ok(Some((i, line))) => apply(&mut peers[i].state, line)?,
            Ok(None) => break,
            Err(_) => {
                let status: Vec<String> = peers
                    .iter()
                    .map(|p| format!("{} {}/{}", p.name, p.state.connected.len(), want))
                    .collect();
                stop_all(&mut peers).await;
                return Err(CliError::new(
                    code::NOTHING_MEASURED,
                    "mesh-incomplete",
                    format!(
                        "the mesh did not connect within {} s (peers connected: {})",
                        a.connect_timeout,
                        status.join(", ")
                    ),
                ));
            }
        }
        if let Some(p) = peers.iter().find(|p| p.state.exited) {
            let name = p.name.clone();
            stop_all(&mut peers).await;
            return Err(CliError::other(format!("{name} exited early")));
        }
    }
    let setup_ms = started.elapsed().as_millis() as u64;
    info!(setup_ms, "mesh connected; measuring for {} s", a.duration);
    out.line(
        "mesh-connected",
        json!({"peers": a.peers, "setup_ms": setup_ms, "room": room}),
    );

    // Phase 2: measure. Rates come from the first and last stats line of each kind (and each
    // remote video) inside the window, by the lines' own timestamps.
    for p in peers.iter_mut() {
        p.state.measuring = true;
    }
    let cpu0: Vec<Option<f64>> = peers.iter().map(|p| cpu_seconds(p.pid)).collect();
    let t0 = Instant::now();
    let measure_end = Instant::now() + secs(a.duration);
    while let Ok(Some((i, line))) = tokio::time::timeout_at(measure_end, rx.recv()).await {
        apply(&mut peers[i].state, line)?;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1: Vec<Option<f64>> = peers.iter().map(|p| cpu_seconds(p.pid)).collect();

    let mut total_cpu = 0.0;
    let mut encodes = Vec::new();
    let mut decoded = Vec::new();
    for (i, p) in peers.iter().enumerate() {
        let cpu = match (cpu0[i], cpu1[i]) {
            (Some(a), Some(b)) if elapsed > 0.0 => round2((b - a) / elapsed * 100.0),
            _ => 0.0,
        };
        total_cpu += cpu;
        let e = &p.state;
        let enc = rate(e.send_first.get("video"), e.send.get("video"), "encoded");
        let audio = rate(e.send_first.get("audio"), e.send.get("audio"), "encoded");
        let mut per_remote = serde_json::Map::new();
        let mut fps_total = 0.0;
        for (remote, line) in &e.video {
            let fps = rate(e.video_first.get(remote), Some(line), "frames_decoded");
            fps_total += fps;
            let label = line
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(remote)
                .to_string();
            per_remote.insert(label, json!(fps));
        }
        encodes.push(enc);
        decoded.push(fps_total);
        let video = e.send.get("video");
        out.line(
            "mesh-peer",
            json!({
                "name": p.name,
                "peer": e.id,
                "pid": p.pid,
                "cpu_percent": cpu,
                "encodes_per_s": enc,
                "audio_packets_per_s": audio,
                "decoded_fps": per_remote,
                "decoded_fps_total": round2(fps_total),
                "peers_connected": e.connected.len(),
                "width": video.map(|v| v["width"].clone()),
                "height": video.map(|v| v["height"].clone()),
                "send_kbps": video.map(|v| v["kbps"].clone()),
            }),
        );
    }
    let n = peers.len() as f64;
    out.line(
        "mesh",
        json!({
            "peers": peers.len(),
            "duration_s": round2(elapsed),
            "setup_ms": setup_ms,
            "cpu_percent_total": round2(total_cpu),
            "cpu_percent_mean": round2(total_cpu / n),
            "encodes_per_s_mean": round2(encodes.iter().sum::<f64>() / n),
            "decoded_fps_mean": round2(decoded.iter().sum::<f64>() / n),
            "cores": std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1),
        }),
    );
    stop_all(&mut peers).await;
    Ok(())
}

fn apply(st: &mut PeerState, line: Option<Value>) -> Result<(), CliError> {
    let Some(v) = line else {
        st.exited = true;
        return Ok(());
    };
    let kind = v["type"].as_str().unwrap_or("");
    let peer = v["peer"].as_str().unwrap_or("").to_string();
    match kind {
        "joined" => st.id = v["id"].as_str().map(str::to_string),
        "peer-connect" => {
            st.connected.insert(peer);
        }
        "peer-disconnect" => {
            st.connected.remove(&peer);
        }
        "send-stats" => {
            let k = v["kind"].as_str().unwrap_or("").to_string();
            if st.measuring {
                st.send_first.entry(k.clone()).or_insert_with(|| v.clone());
            }
            st.send.insert(k, v);
        }
        "video-stats" => {
            if st.measuring {
                st.video_first
                    .entry(peer.clone())
                    .or_insert_with(|| v.clone());
            }
            st.video.insert(peer, v);
        }
        "error" => {
            return Err(CliError::other(format!(
                "a mesh peer failed: {}",
                v["message"].as_str().unwrap_or("?")
            )));
        }
        _ => {}
    }
    Ok(())
}

/// SIGTERM every peer (they leave cleanly), then wait; kill what is left after 10 s.
async fn stop_all(peers: &mut [PeerProc]) {
    for p in peers.iter() {
        if p.pid != 0 {
            // SAFETY: plain kill(2) on our own child.
            unsafe {
                libc::kill(p.pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    for p in peers.iter_mut() {
        match tokio::time::timeout(Duration::from_secs(10), p.child.wait()).await {
            Ok(Ok(s)) if !s.success() => warn!(peer = %p.name, "exited with {s}"),
            Ok(_) => {}
            Err(_) => {
                warn!(peer = %p.name, "did not stop: killing it");
                let _ = p.child.kill().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_readable() {
        let t = cpu_seconds(std::process::id()).expect("/proc/self/stat");
        assert!(t >= 0.0);
    }

    #[test]
    fn rates_use_line_timestamps() {
        let a = json!({"ts": 1000, "encoded": 10});
        let b = json!({"ts": 3000, "encoded": 70});
        assert_eq!(rate(Some(&a), Some(&b), "encoded"), 30.0);
        assert_eq!(rate(None, Some(&b), "encoded"), 0.0);
    }
}
