//! Faults with real processes on loopback: the signaling server SIGKILLed mid-call and restarted
//! on the same port 2 s later (video keeps flowing, one peer each at the end, a third peer joins
//! after), a peer SIGKILLed mid-call (the others get `peer-disconnect`), and a forged room member
//! relaying junk `#rtcio:message`s (the call goes on: video decodes, chat works).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// rtcio-server's binary: built next to ours by `cargo test --workspace`.
fn server_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_rtcio"))
        .parent()
        .expect("target dir")
        .join("rtcio-server");
    assert!(
        bin.is_file(),
        "{} is missing: build it (`cargo build -p rtcio-server`, or run `cargo test --workspace`)",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The server as its own process (killed on drop).
struct ServerProc {
    child: Child,
}

impl ServerProc {
    /// Starts rtcio-server on 127.0.0.1:`port` (relay rate limit off: the forged member's junk
    /// must reach the peers) and returns once it accepts connections.
    async fn start(port: u16) -> ServerProc {
        let child = Command::new(server_bin())
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--relay-rate",
                "0",
            ])
            .env("RTCIO_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn rtcio-server");
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "rtcio-server did not listen");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        ServerProc { child }
    }

    fn kill9(&mut self) {
        let pid = self.child.id().expect("running");
        kill(pid, "-KILL");
    }

    async fn reap(&mut self) {
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }
}

fn kill(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pid} failed");
}

fn media_args<'a>(url: &'a str, room: &'a str, name: &'a str) -> Vec<&'a str> {
    let mut v = small_media_args(url, room, name);
    v.push("--chat-stdin");
    v
}

/// Waits until `p` decodes video from the participant called `from`.
async fn decodes_from(p: &mut Rtcio, from: &str) {
    p.wait_for("decoded video", |v| {
        v["type"] == "video-stats"
            && v["name"] == from
            && v["frames_decoded"].as_u64().unwrap_or(0) >= 5
    })
    .await;
}

/// The new signaling id after a reconnect.
async fn reconnected(p: &mut Rtcio, old: &str) -> String {
    let v = p
        .wait_for("signaling connected with a new id", |v| {
            v["type"] == "signaling" && v["state"] == "connected" && v["id"] != old
        })
        .await;
    v["id"].as_str().expect("id").to_string()
}

/// Video from `name` as `p` saw it after `since_ms` (epoch ms): per stats tick (the CLI prints
/// every second, all tracks at once), frames decoded across every connection to `name`; and
/// the freezes (gaps above max(3 × mean, mean + 150 ms)) any of those tracks reported.
struct Flow {
    /// (tick ts, frames decoded in that tick).
    ticks: Vec<(u64, u64)>,
    freezes: u64,
    /// Peer ids that carried video from `name`.
    connections: HashSet<String>,
}

fn flow(p: &Rtcio, name: &str, since_ms: u64) -> Flow {
    let mut last: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut ticks: BTreeMap<u64, u64> = BTreeMap::new();
    let mut connections = HashSet::new();
    for v in p.seen_type("video-stats") {
        if v["name"] != name {
            continue;
        }
        let key = (
            v["peer"].as_str().unwrap_or("").to_string(),
            v["mid"].as_str().unwrap_or("").to_string(),
        );
        let n = v["frames_decoded"].as_u64().unwrap_or(0);
        let before = last.insert(key.clone(), n).unwrap_or(0);
        let ts = v["ts"].as_u64().unwrap_or(0);
        if ts < since_ms {
            continue;
        }
        // Lines of one tick are printed together: bucket by 500 ms.
        *ticks.entry(ts / 500).or_default() += n.saturating_sub(before);
        if n > before {
            connections.insert(key.0);
        }
    }
    // Freezes are cumulative per track: the last line of each, less what it had counted
    // before `since_ms` (freezes from before the fault are not the fault's).
    let mut per_track: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for v in p.seen_type("video-stats") {
        if v["name"] != name {
            continue;
        }
        let key = (
            v["peer"].as_str().unwrap_or("").to_string(),
            v["mid"].as_str().unwrap_or("").to_string(),
        );
        let n = v["freeze_count"].as_u64().unwrap_or(0);
        let e = per_track.entry(key).or_default();
        if v["ts"].as_u64().unwrap_or(0) < since_ms {
            e.0 = n;
        }
        e.1 = n;
    }
    Flow {
        ticks: ticks.into_iter().map(|(k, n)| (k * 500, n)).collect(),
        freezes: per_track
            .values()
            .map(|(before, last)| last.saturating_sub(*before))
            .sum(),
        connections,
    }
}

/// When each of `name`'s video tracks at `p` counted a freeze after `since_ms`: (connection,
/// ms after `since_ms`, freezes added, their ms, keyframes received on it so far, keyframes
/// received by each connection in that tick).
type FreezeAt = (String, u64, u64, u64, u64, Vec<(String, u64)>);

fn freeze_times(p: &Rtcio, name: &str, since_ms: u64) -> Vec<FreezeAt> {
    let mut keyframes: BTreeMap<String, u64> = BTreeMap::new();
    let mut kf_at: BTreeMap<u64, Vec<(String, u64)>> = BTreeMap::new();
    for v in p.seen_type("video-stats") {
        if v["name"] != name {
            continue;
        }
        let peer = v["peer"].as_str().unwrap_or("").to_string();
        let k = v["keyframes"].as_u64().unwrap_or(0);
        let before = keyframes.insert(peer.clone(), k).unwrap_or(0);
        if k > before {
            let tick = v["ts"].as_u64().unwrap_or(0) / 500;
            kf_at.entry(tick).or_default().push((peer, k - before));
        }
    }
    let mut last: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    let mut out = Vec::new();
    for v in p.seen_type("video-stats") {
        if v["name"] != name {
            continue;
        }
        let peer = v["peer"].as_str().unwrap_or("").to_string();
        let key = (peer.clone(), v["mid"].as_str().unwrap_or("").to_string());
        let n = v["freeze_count"].as_u64().unwrap_or(0);
        let ms = v["total_freezes_ms"].as_u64().unwrap_or(0);
        let (before, ms_before) = last.insert(key, (n, ms)).unwrap_or((0, 0));
        let ts = v["ts"].as_u64().unwrap_or(0);
        if ts >= since_ms && n > before {
            out.push((
                peer,
                ts - since_ms,
                n - before,
                ms.saturating_sub(ms_before),
                v["keyframes"].as_u64().unwrap_or(0),
                kf_at.get(&(ts / 500)).cloned().unwrap_or_default(),
            ));
        }
    }
    out
}

/// Peer ids of `name` that `p` saw connect and not disconnect.
fn live_peers(p: &Rtcio, name: &str) -> HashSet<String> {
    let mut live = HashSet::new();
    for v in &p.seen {
        let id = v["peer"].as_str().unwrap_or("").to_string();
        if v["type"] == "peer-connect" && v["name"] == name {
            live.insert(id);
        } else if v["type"] == "peer-disconnect" {
            live.remove(&id);
        }
    }
    live
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Make-before-break, from `p`'s output order: video from the new connection `new` was
/// decoded before the old connection `old` closed (closing first is the gap this guards).
fn replaced_before_closing(p: &Rtcio, old: &str, new: &str) {
    let first_new = p.seen.iter().position(|v| {
        v["type"] == "video-stats"
            && v["peer"] == new
            && v["frames_decoded"].as_u64().unwrap_or(0) > 0
    });
    let closed = p
        .seen
        .iter()
        .position(|v| v["type"] == "peer-disconnect" && v["peer"] == old);
    match (first_new, closed) {
        (Some(n), Some(c)) => assert!(
            n < c,
            "{}: the old connection {old} closed before video came over the new one {new}",
            p.label
        ),
        other => panic!("{}: new video / old close at {other:?}", p.label),
    }
}

/// Waits for `peer-disconnect` of `id`.
async fn disconnect_of(p: &mut Rtcio, id: &str) -> Value {
    p.seen_or_wait("peer-disconnect of the old connection", |v| {
        v["type"] == "peer-disconnect" && v["peer"] == id
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sigkill_and_restart_keeps_video_flowing_between_cli_peers() {
    let port = free_port();
    let mut srv = ServerProc::start(port).await;
    let url = format!("http://127.0.0.1:{port}");
    let r = room("srv-kill");
    let mut a = Rtcio::spawn("alice", &media_args(&url, &r, "alice"));
    let old_a = a.wait_type("joined").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut b = Rtcio::spawn("bob", &media_args(&url, &r, "bob"));
    let old_b = b.wait_type("joined").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    decodes_from(&mut a, "bob").await;
    decodes_from(&mut b, "alice").await;

    // The server dies without a word and comes back on the same port 2 s later.
    let killed = epoch_ms();
    srv.kill9();
    srv.reap().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut srv = ServerProc::start(port).await;
    let back = epoch_ms();
    let new_a = reconnected(&mut a, &old_a).await;
    let new_b = reconnected(&mut b, &old_b).await;
    // The room re-forms under the new ids; the old connections close only after that.
    a.seen_or_wait("peer-connect to bob's new id", |v| {
        v["type"] == "peer-connect" && v["peer"] == new_b.as_str()
    })
    .await;
    b.seen_or_wait("peer-connect to alice's new id", |v| {
        v["type"] == "peer-connect" && v["peer"] == new_a.as_str()
    })
    .await;
    let a_closed = disconnect_of(&mut a, &old_b).await["ts"]
        .as_u64()
        .unwrap_or(0);
    let b_closed = disconnect_of(&mut b, &old_a).await["ts"]
        .as_u64()
        .unwrap_or(0);
    // Two more stats ticks on the new connections alone.
    for p in [&mut a, &mut b] {
        let after = epoch_ms();
        for _ in 0..2 {
            p.wait_for("a stats tick", |v| {
                v["type"] == "video-stats" && v["ts"].as_u64().unwrap_or(0) > after
            })
            .await;
        }
    }
    for (p, from, old, new, closed) in [
        (&a, "bob", &old_b, &new_b, a_closed),
        (&b, "alice", &old_a, &new_a, b_closed),
    ] {
        let f = flow(p, from, killed);
        // The handover starts when the server is back. While it is down the peers' connection
        // does not touch it, so a freeze then is the CPU's (seen in a loaded run: one 215 ms
        // freeze at 13-15 fps, 1.7 s after the kill); a stop of the video there still fails
        // the empty-tick check below.
        let handover = flow(p, from, back);
        let empty: Vec<u64> = f
            .ticks
            .iter()
            .filter(|(_, n)| *n == 0)
            .map(|(t, _)| t.saturating_sub(killed))
            .collect();
        println!(
            "{}: video from {from} per second after the kill: {:?}; freezes: {} ({} since the server was back); old connection closed {} ms after the kill ({} ms after the server was back)",
            p.label,
            f.ticks.iter().map(|(_, n)| n).collect::<Vec<_>>(),
            f.freezes,
            handover.freezes,
            closed.saturating_sub(killed),
            closed.saturating_sub(back)
        );
        assert!(
            empty.is_empty(),
            "{}: no video from {from} in the ticks at {empty:?} ms after the kill",
            p.label
        );
        assert_eq!(
            handover.freezes,
            0,
            "{}: video from {from} froze in the handover: (connection, ms after the server was back, freezes, their ms, its keyframes, keyframes per connection in that tick) {:?}; old {old}, new {new}",
            p.label,
            freeze_times(p, from, back)
        );
        replaced_before_closing(p, old, new);
        assert!(
            f.connections.contains(old.as_str()) && f.connections.contains(new.as_str()),
            "{}: video came over {:?}, not over both the old and the new connection",
            p.label,
            f.connections
        );
        assert_eq!(
            live_peers(p, from),
            HashSet::from([new.clone()]),
            "{}: exactly one peer for {from} at the end",
            p.label
        );
    }

    // A third peer joins the restarted server and gets everyone's video.
    let mut c = Rtcio::spawn("carol", &media_args(&url, &r, "carol"));
    c.wait_type("joined").await;
    decodes_from(&mut c, "alice").await;
    decodes_from(&mut c, "bob").await;
    decodes_from(&mut a, "carol").await;
    drop((a, b, c));
    srv.kill9();
    srv.reap().await;
}

/// Time until `p` prints `peer-disconnect` for `id`, from `since`.
async fn noticed(p: &mut Rtcio, id: &str, since: Instant) -> Duration {
    p.wait_for("peer-disconnect of the killed peer", |v| {
        v["type"] == "peer-disconnect" && v["peer"] == id
    })
    .await;
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_peer_is_noticed_with_and_without_the_hint() {
    let port = free_port();
    let mut srv = ServerProc::start(port).await;
    let url = format!("http://127.0.0.1:{port}");
    let r = room("peer-kill");
    let mut a = Rtcio::spawn("alice", &media_args(&url, &r, "alice"));
    a.wait_type("joined").await;
    let mut b = Rtcio::spawn("bob", &media_args(&url, &r, "bob"));
    let b_id = b.wait_type("joined").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    decodes_from(&mut a, "bob").await;

    // With the hint: the server sees bob's socket die (TCP reset) and says peer-left.
    let t = Instant::now();
    kill(b.pid(), "-KILL");
    let with_hint = noticed(&mut a, &b_id, t).await;
    let hint = a
        .seen
        .iter()
        .any(|v| v["type"] == "server-event" && v["event"] == "user-disconnected");
    println!("killed peer noticed after {with_hint:?} (server's user-disconnected seen: {hint})");
    drop(b);

    // Without it: the server is gone first, so only the media path can tell.
    let mut c = Rtcio::spawn("carol", &media_args(&url, &r, "carol"));
    let c_id = c.wait_type("joined").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    decodes_from(&mut a, "carol").await;
    srv.kill9();
    srv.reap().await;
    a.wait_for("signaling lost", |v| {
        v["type"] == "signaling" && v["state"] != "connected"
    })
    .await;
    let t = Instant::now();
    kill(c.pid(), "-KILL");
    let without = noticed(&mut a, &c_id, t).await;
    println!("killed peer noticed after {without:?} without a hint (signaling down)");
    drop(c);
    drop(a);
}

/// A raw socket.io client (Node's socket.io-client, installed for the browser tests) that joins
/// `room` and relays junk `#rtcio:message`s to every member for `secs` seconds.
fn forger(url: &str, room: &str, secs: u32) -> Child {
    const SCRIPT: &str = r##"
const { io } = require("socket.io-client");
const [url, room, secs] = process.argv.slice(1);
const s = io(url, { transports: ["websocket"], reconnection: false });
const members = new Set();
let sent = 0;
s.on("connect", () => s.emit("join-room", { roomId: room, name: "mallory" }));
s.on("user-connected", (u) => { if (u && typeof u.id === "string") members.add(u.id); });
const big = "x".repeat(200000);
const junk = (t) => [
  null, 1, "str", [], {}, { target: t }, { target: t, source: t, data: null },
  { target: t, data: { sdp: { type: "offer", sdp: "v=0\r\nbogus" } } },
  { target: t, data: { sdp: { type: "answer", sdp: big } } },
  { target: t, data: { sdp: { type: "pranswer", sdp: 5 } } },
  { target: t, data: { candidate: { candidate: "candidate:1 1 UDP 1 1.2.3.4 9 typ host", sdpMid: "9", sdpMLineIndex: 99 } } },
  { target: t, data: { candidate: { candidate: 42 } } },
  { target: t, data: { candidate: "garbage" } },
  { target: t, data: { mid: "0", events: { "peer-connect": [{ id: "x" }], "camera": [{ id: "mallory" }] } } },
  { target: t, data: { mid: 7, events: "nope" } },
  { target: t, data: { events: { a: [big] } } },
  { target: t, data: { "#rtcio:rekey": 1, sdp: [] } },
  { target: t, data: JSON.parse('{"a":'.repeat(50) + '1' + '}'.repeat(50)) },
];
const end = Date.now() + Number(secs) * 1000;
const timer = setInterval(() => {
  if (Date.now() > end) { clearInterval(timer); console.log(JSON.stringify({ sent })); s.close(); process.exit(0); }
  for (const t of members) for (const j of junk(t)) { s.emit("#rtcio:message", j); sent++; }
  s.emit("#rtcio:message", { target: "nobody", data: { sdp: { type: "offer", sdp: "" } } });
  s.emit("#rtcio:init-offer", { source: "forged" });
}, 50);
"##;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser");
    assert!(
        dir.join("node_modules/socket.io-client").is_dir(),
        "tests/browser/node_modules is missing: run ./scripts/setup.sh"
    );
    Command::new("node")
        .current_dir(dir)
        .args(["-e", SCRIPT, "--", url, room, &secs.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (scripts/setup.sh)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_member_relaying_junk_does_not_stop_the_call() {
    let port = free_port();
    let mut srv = ServerProc::start(port).await;
    let url = format!("http://127.0.0.1:{port}");
    let r = room("forged");
    let mut a = Rtcio::spawn("alice", &media_args(&url, &r, "alice"));
    a.wait_type("joined").await;
    let mut b = Rtcio::spawn("bob", &media_args(&url, &r, "bob"));
    b.wait_type("joined").await;
    decodes_from(&mut a, "bob").await;
    decodes_from(&mut b, "alice").await;

    let m = forger(&url, &r, 8);
    let started = epoch_ms();
    let out = tokio::time::timeout(WAIT, m.wait_with_output())
        .await
        .expect("the forger ends")
        .expect("forger output");
    assert!(out.status.success(), "the forger failed");
    let sent: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let sent = sent["sent"].as_u64().unwrap_or(0);
    assert!(sent > 100, "the forger relayed only {sent} messages");
    // Two more ticks after the junk: video from each side still decodes through all of it.
    for p in [&mut a, &mut b] {
        let after = epoch_ms();
        for _ in 0..2 {
            p.wait_for("a stats tick", |v| {
                v["type"] == "video-stats" && v["ts"].as_u64().unwrap_or(0) > after
            })
            .await;
        }
    }
    for (p, from) in [(&a, "bob"), (&b, "alice")] {
        let f = flow(p, from, started);
        let empty = f.ticks.iter().filter(|(_, n)| *n == 0).count();
        println!(
            "{}: {sent} junk messages; video from {from} per second meanwhile: {:?}",
            p.label,
            f.ticks.iter().map(|(_, n)| n).collect::<Vec<_>>()
        );
        assert_eq!(empty, 0, "{}: a second without video from {from}", p.label);
        assert!(
            !p.seen.iter().any(|v| v["name"] == "mallory"
                && (v["type"] == "stream" || v["type"] == "peer-connect")),
            "{}: the forger's junk became a stream or a peer",
            p.label
        );
    }
    // Chat still works both ways.
    a.send_line("still here").await;
    let msg = b.wait_for("chat", |v| v["type"] == "channel-message").await;
    assert_eq!(msg["args"][0]["text"], "still here");
    b.send_line("me too").await;
    let msg = a.wait_for("chat", |v| v["type"] == "channel-message").await;
    assert_eq!(msg["args"][0]["text"], "me too");
    drop((a, b));
    srv.kill9();
    srv.reap().await;
}

/// Starts sampling, in the page, the frames Chromium decoded from every peer connection (every
/// 50 ms): the largest pause between two samples in which any of them grew, the pauses over
/// 120 ms (when, how long, which connections grew after it), when each connection first and last
/// decoded, Chromium's own freeze counters per connection (`freezeCount`, `totalFreezesDuration`
/// of inbound video: its render-side rule, immune to this sampler's own stalls), and (from a
/// MutationObserver) every change of the tile set with its time. `__gap.reset()` returns the
/// pauses so far and starts a new period.
const GAP_SAMPLER: &str = r#"() => {
  const g = (window.__gap = { max: 0, maxAt: 0, last: 0, per: {}, first: {}, lastGrow: {}, long: [], tiles: [], fz: {}, fzLog: [] });
  const key = () => [...document.querySelectorAll('#tiles video')].map((v) => v.dataset.peer).sort().join(",");
  g.tiles.push([Date.now(), key()]);
  new MutationObserver(() => {
    const k = key();
    if (k !== g.tiles[g.tiles.length - 1][1] && g.tiles.length < 200) g.tiles.push([Date.now(), k]);
  }).observe(document.getElementById("tiles"), { childList: true, subtree: true, attributes: true });
  const fzSum = () => Object.values(g.fz).reduce((a, f) => [a[0] + f[0], a[1] + f[1]], [0, 0]);
  g.reset = () => {
    const r = { max: g.max, maxAt: g.maxAt, long: g.long, fz: fzSum(), fzLog: g.fzLog };
    g.max = 0; g.maxAt = 0; g.long = []; g.fz0 = r.fz; g.fzLog = [];
    return r;
  };
  g.freezes = () => { const [n, d] = fzSum(), [n0, d0] = g.fz0 ?? [0, 0]; return [n - n0, Math.round((d - d0) * 1000)]; };
  g.timer = setInterval(async () => {
    const peers = rtcio.sockets[0]?.rtcpeers ?? {};
    const s = {};
    await Promise.all(Object.entries(peers).map(async ([id, p]) => {
      let n = 0, fc = 0, fd = 0;
      (await p.connection.getStats()).forEach((x) => {
        if (x.type === "inbound-rtp" && x.kind === "video") { n += x.framesDecoded ?? 0; fc += x.freezeCount ?? 0; fd += x.totalFreezesDuration ?? 0; }
      });
      s[id] = n;
      const [fc0, fd0] = g.fz[id] ?? [0, 0];
      if (fc > fc0 && g.fzLog.length < 100) g.fzLog.push([Date.now(), Math.round((fd - fd0) * 1000), [id]]);
      g.fz[id] = [fc, fd];
    }));
    const wall = Date.now();
    const grew = [];
    for (const [id, n] of Object.entries(s)) {
      if (n > (g.per[id] ?? 0)) { g.per[id] = n; grew.push(id); g.first[id] ??= wall; g.lastGrow[id] = wall; }
    }
    const now = performance.now();
    if (grew.length) {
      const gap = g.last ? now - g.last : 0;
      if (gap > g.max) { g.max = gap; g.maxAt = wall; }
      if (gap > 120 && g.long.length < 100) g.long.push([wall, Math.round(gap), grew]);
      g.last = now;
    }
  }, 50);
  return true;
}"#;

/// How long the page's decoding is sampled without a restart, for comparison.
const CONTROL: Duration = Duration::from_secs(8);

/// From alice closing her old connection to the page showing her new tile alone. rtc.io alone
/// takes 12 s (its watchdog: the restarted server never knew the old id); the previous-id hint
/// makes it the hint's delay (250 ms) plus delivery.
const ONE_TILE_AFTER_CLOSE_MS: u64 = 1_000;

/// The pauses of one sampling period, as `(ms after the kill, length ms, connections that grew)`.
fn long_pauses(v: &Value, killed: u64) -> Vec<(i64, u64, Vec<String>)> {
    v["long"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x[0].as_i64().unwrap_or(0) - killed as i64,
                        x[1].as_u64().unwrap_or(0),
                        x[2].as_array()
                            .map(|ids| {
                                ids.iter()
                                    .filter_map(|i| i.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Peer ids of the page's video tiles.
async fn tiles(br: &mut common::browser::Browser, page: u64) -> Vec<String> {
    let v = br
        .eval(
            page,
            "() => [...document.querySelectorAll('#tiles video')].map((v) => v.dataset.peer)",
            Value::Null,
        )
        .await;
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The page's id for its socket.
async fn page_id(br: &mut common::browser::Browser, page: u64) -> String {
    let v = br
        .eval(page, "() => rtcio.sockets[0]?.id ?? null", Value::Null)
        .await;
    v.as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sigkill_and_restart_keeps_video_flowing_between_cli_and_chromium() {
    let port = free_port();
    let mut srv = ServerProc::start(port).await;
    let url = format!("http://127.0.0.1:{port}");
    let r = room("srv-kill-web");
    let mut br = common::browser::Browser::start().await;
    let page = br.open("web").await;
    br.eval(
        page,
        "(o) => rtcio.join(o.url, o)",
        serde_json::json!({"url": url, "roomId": r, "name": "web", "camera": true}),
    )
    .await;
    let mut a = Rtcio::spawn("alice", &media_args(&url, &r, "alice"));
    let old_a = a.wait_type("joined").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let old_web = a
        .wait_for("peer-connect from the page", |v| {
            v["type"] == "peer-connect" && v["name"] == "web"
        })
        .await["peer"]
        .as_str()
        .expect("peer")
        .to_string();
    decodes_from(&mut a, "web").await;
    let deadline = Instant::now() + WAIT;
    while tiles(&mut br, page).await != vec![old_a.clone()] {
        assert!(
            Instant::now() < deadline,
            "the page shows no tile for alice"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    br.eval(page, GAP_SAMPLER, Value::Null).await;
    // A control period: the same sampling with nothing happening (a measurement window).
    tokio::time::sleep(CONTROL).await;
    let control = br
        .eval(page, "() => window.__gap.reset()", Value::Null)
        .await;
    let control_freezes = &control["fz"];

    let killed = epoch_ms();
    let t_kill = Instant::now();
    srv.kill9();
    srv.reap().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut srv = ServerProc::start(port).await;
    let new_a = reconnected(&mut a, &old_a).await;
    let new_web = a
        .seen_or_wait("peer-connect from the page's new id", |v| {
            v["type"] == "peer-connect" && v["name"] == "web" && v["peer"] != old_web.as_str()
        })
        .await["peer"]
        .as_str()
        .expect("peer")
        .to_string();
    assert_eq!(page_id(&mut br, page).await, new_web);
    let closed = disconnect_of(&mut a, &old_web).await["ts"]
        .as_u64()
        .unwrap_or(0);
    // The page drops its old connection (and tile) on the previous-id hint after our close.
    let deadline = Instant::now() + WAIT;
    let mut two_tiles = false;
    loop {
        let t = tiles(&mut br, page).await;
        two_tiles |= t.len() > 1;
        if t == vec![new_a.clone()] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the page's tiles are {t:?}, not just alice's new id {new_a}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let one_tile = t_kill.elapsed();
    // Two whole stats ticks of the new connection: the first tick after the close also carries
    // the old track's last (`ended`) line, and reading stopped inside it would leave a bucket
    // with that line alone.
    let mut after = epoch_ms();
    for _ in 0..2 {
        let line = a
            .wait_for("a stats tick of the new connection", |v| {
                v["type"] == "video-stats"
                    && v["peer"] == new_web.as_str()
                    && v["ts"].as_u64().unwrap_or(0) > after
            })
            .await;
        after = line["ts"].as_u64().unwrap_or(after) + 500;
    }
    let gap = br
        .eval(
            page,
            "() => ({ max: window.__gap.max, maxAt: window.__gap.maxAt ?? 0, sinceLast: performance.now() - window.__gap.last, long: window.__gap.long, first: window.__gap.first, lastGrow: window.__gap.lastGrow, tiles: window.__gap.tiles, fz: window.__gap.freezes(), fzLog: window.__gap.fzLog })",
            Value::Null,
        )
        .await;
    let f = flow(&a, "web", killed);
    let rel = |v: &Value| v.as_i64().map_or(i64::MIN, |t| t - killed as i64);
    // The tile log: (ms after the kill, tiles). The last entry must be the new id alone.
    let tile_log: Vec<(i64, String)> = gap["tiles"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| (rel(&x[0]), x[1].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    let closed_rel = closed as i64 - killed as i64;
    let one_tile_at = tile_log.last().map_or(i64::MAX, |(t, _)| *t);
    println!(
        "chromium: control ({CONTROL:?}, no restart): largest gap between decoded frames from alice {:.0} ms, pauses > 120 ms {:?}; Chromium's freezes (count, total s) {control_freezes}",
        control["max"].as_f64().unwrap_or(-1.0),
        long_pauses(&control, killed),
    );
    println!(
        "chromium: Chromium's freezes of alice's video from the kill to now (count, total ms): {}, as (ms after the kill, ms, connection) {:?}; in the control period {:?}",
        gap["fz"],
        long_pauses(&json!({"long": gap["fzLog"]}), killed),
        long_pauses(&json!({"long": control["fzLog"]}), killed),
    );
    println!(
        "chromium: restart: largest gap {:.0} ms (50 ms sampling, ending {} ms after the kill), pauses > 120 ms (ms after kill, ms, grew) {:?}; page decoded the new connection from {} ms after the kill, the old one until {} ms; alice closed the old connection {closed_rel} ms after the kill",
        gap["max"].as_f64().unwrap_or(-1.0),
        rel(&gap["maxAt"]),
        long_pauses(&gap, killed),
        rel(&gap["first"][new_a.as_str()]),
        rel(&gap["lastGrow"][old_a.as_str()]),
    );
    println!(
        "chromium: tiles (ms after kill): {tile_log:?}; two tiles seen: {two_tiles}; one tile again {} ms after alice closed the old connection ({:.1} s after the kill by polling)",
        one_tile_at - closed_rel,
        one_tile.as_secs_f64(),
    );
    println!(
        "alice: video from the page per second after the kill: {:?}; freezes: {}",
        f.ticks.iter().map(|(_, n)| n).collect::<Vec<_>>(),
        f.freezes
    );
    // The page kept decoding through the outage: no pause near a second (the old behaviour
    // lost several seconds), and it is decoding now.
    let max = gap["max"].as_f64().unwrap_or(f64::MAX);
    assert!(
        gap["sinceLast"].as_f64().unwrap_or(f64::MAX) < 1000.0,
        "the page stopped decoding alice: {gap}"
    );
    assert!(
        max < 1000.0,
        "the page went {max:.0} ms without a decoded frame from alice"
    );
    let empty: Vec<u64> = f
        .ticks
        .iter()
        .filter(|(_, n)| *n == 0)
        .map(|(t, _)| t.saturating_sub(killed))
        .collect();
    assert!(
        empty.is_empty(),
        "alice: no video from the page in the ticks at {empty:?} ms after the kill"
    );
    replaced_before_closing(&a, &old_web, &new_web);
    assert_eq!(live_peers(&a, "web"), HashSet::from([new_web.clone()]));
    assert_eq!(
        tile_log.last().map(|(_, k)| k.as_str()),
        Some(new_a.as_str()),
        "the page's last tiles are not alice's new id alone: {tile_log:?}"
    );
    assert!(
        one_tile_at - closed_rel <= ONE_TILE_AFTER_CLOSE_MS as i64,
        "the page showed a second tile for alice until {} ms after she closed the old connection (bound {ONE_TILE_AFTER_CLOSE_MS} ms): {tile_log:?}",
        one_tile_at - closed_rel
    );

    // A third peer joins after the restart and sees both.
    let mut c = Rtcio::spawn("carol", &media_args(&url, &r, "carol"));
    c.wait_type("joined").await;
    decodes_from(&mut c, "web").await;
    decodes_from(&mut c, "alice").await;
    drop((a, c));
    br.quit().await;
    srv.kill9();
    srv.reap().await;
}
