//! `cargo bench -p rtcio --bench mesh`: join → peer-connect latency and per-peer channel
//! throughput for three pairs — Rust ↔ Rust, Rust ↔ Chromium (both join orders) and
//! Chromium ↔ Chromium (the anchor: the rtc.io browser page) — all through one in-process
//! `rtcio-server` on loopback. Prints a Markdown table; see `benches/README.md`.
//!
//! As root it re-executes itself inside a fresh network namespace that has only `lo`
//! (`unshare -n`), unless `RTCIO_BENCH_NO_NETNS=1`. Knobs: `RTCIO_BENCH_JOINS` (7),
//! `RTCIO_BENCH_RUNS` (3), `RTCIO_BENCH_MIB` (64), `RTCIO_BENCH_PAIRS` (comma list of
//! `rr,rc,cr,cc`), `RUST_LOG`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rtcio::{Channel, ChannelOptions, Event, Options, ReadyState, Socket};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio::time::timeout;

type R<T> = Result<T, String>;

const MIB: usize = 1024 * 1024;
const CHUNK: usize = 16 * 1024;
/// ByteGen seed of every transfer (the page's deterministic stream).
const SEED: u32 = 7;
/// Limit for each awaited signaling step (connect, peer-connect, channel open).
const JOIN_WAIT: Duration = Duration::from_secs(15);
/// How long the existing member waits for `join-ok` before re-sending `join-room` (the server
/// can lose a socket's first replies, see README "Problems seen").
const JOIN_OK_WAIT: Duration = Duration::from_secs(3);
/// Limit for one transfer (64 MiB at ≥ 1 MB/s).
const TRANSFER_WAIT: Duration = Duration::from_secs(90);
/// Limit for one `drain` after `send()` returned false.
const DRAIN_WAIT: Duration = Duration::from_secs(30);
/// Limit for the whole measurement part of the run.
const TOTAL_WAIT: Duration = Duration::from_secs(15 * 60);
/// Env var set on the re-executed child inside the namespace.
const IN_NETNS: &str = "RTCIO_BENCH_IN_NETNS";

// ─── small helpers ──────────────────────────────────────────────────────────────────────────────

/// Wall clock in ms since the epoch (the page's `__log` clock, after offset correction).
fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn env_usize(name: &str, default: usize, min: usize, max: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(default)
        .clamp(min, max)
}

fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn min_max(xs: &[f64]) -> (f64, f64) {
    xs.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// The page's deterministic byte stream (`ByteGen(seed)` in rtcio-peer.js): xorshift32 words,
/// little-endian.
fn byte_gen(seed: u32, n: usize) -> Vec<u8> {
    let mut x = if seed == 0 { 0x9e37_79b9 } else { seed };
    let mut out = Vec::with_capacity(n + 4);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// `YYYY-MM-DD HH:MM UTC` without a date crate (days → civil date, H. Hinnant's algorithm).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// 1-minute load average (other work on the machine skews every number here).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

// ─── network namespace ──────────────────────────────────────────────────────────────────────────

/// Interface names of this process's network namespace (`/proc/self/net/dev` is per namespace;
/// `/sys/class/net` would show the namespace sysfs was mounted in).
fn interfaces() -> Vec<String> {
    std::fs::read_to_string("/proc/self/net/dev")
        .map(|s| {
            s.lines()
                .skip(2)
                .filter_map(|l| l.split(':').next().map(|n| n.trim().to_string()))
                .filter(|n| !n.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Decides where to run; re-executes under `unshare -n` (and exits with the child's status) when
/// that is possible and wanted. Returns the mode line to print.
fn prepare_network() -> String {
    let ifs = interfaces();
    let only_lo = ifs == ["lo"];
    if std::env::var(IN_NETNS).as_deref() == Ok("1") {
        return if only_lo {
            "network namespace with only `lo` (re-executed under `unshare -n`)".into()
        } else {
            format!("re-executed under `unshare -n` but interfaces are {ifs:?}")
        };
    }
    if only_lo {
        return "already in a network namespace with only `lo`".into();
    }
    if std::env::var("RTCIO_BENCH_NO_NETNS").as_deref() == Ok("1") {
        return "host network namespace, loopback addresses only (RTCIO_BENCH_NO_NETNS=1)".into();
    }
    if !is_root() {
        return "host network namespace, loopback addresses only (not root: no `unshare -n`)"
            .into();
    }
    let probe = std::process::Command::new("unshare")
        .args(["-n", "sh", "-c", "ip link set lo up"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match probe {
        Ok(s) if s.success() => {}
        Ok(s) => {
            return format!(
                "host network namespace, loopback addresses only (`unshare -n` probe failed: {s})"
            );
        }
        Err(e) => {
            return format!("host network namespace, loopback addresses only (no `unshare`: {e})");
        }
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            return format!("host network namespace, loopback addresses only (current_exe: {e})");
        }
    };
    eprintln!("mesh bench: re-executing inside a fresh network namespace (unshare -n)");
    let status = std::process::Command::new("unshare")
        .args([
            "-n",
            "sh",
            "-c",
            "ip link set lo up || { echo 'mesh bench: ip link set lo up failed' >&2; exit 1; }; \
             exec \"$0\" \"$@\"",
        ])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(IN_NETNS, "1")
        .status();
    match status {
        Ok(s) => std::process::exit(s.code().unwrap_or(1)),
        Err(e) => {
            eprintln!("mesh bench: unshare failed to start: {e}");
            std::process::exit(1)
        }
    }
}

// ─── browser driver client ──────────────────────────────────────────────────────────────────────

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One headless Chromium (tests/browser/driver.mjs) with any number of pages.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    chromium: String,
}

impl Browser {
    async fn start() -> R<Browser> {
        let dir = repo_root().join("tests/browser");
        if !dir.join("node_modules").is_dir() {
            return Err(format!(
                "{}/node_modules missing: run `npm ci --prefix tests/browser`",
                dir.display()
            ));
        }
        let mut child = Command::new("node")
            .arg(dir.join("driver.mjs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start `node tests/browser/driver.mjs`: {e}"))?;
        let stdin = child.stdin.take().ok_or("driver stdin")?;
        let stdout = child.stdout.take().ok_or("driver stdout")?;
        let mut b = Browser {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            next_id: 1,
            chromium: String::new(),
        };
        b.cmd(json!({"cmd": "ping"}), Duration::from_secs(60))
            .await
            .map_err(|e| format!("browser driver did not answer ping: {e}"))?;
        let info = b
            .cmd(json!({"cmd": "info"}), Duration::from_secs(10))
            .await?;
        b.chromium = info["chromium"].as_str().unwrap_or("?").to_string();
        Ok(b)
    }

    /// One command, one reply (commands are issued one at a time); `limit` bounds the wait.
    async fn cmd(&mut self, mut c: Value, limit: Duration) -> R<Value> {
        let id = self.next_id;
        self.next_id += 1;
        c["id"] = json!(id);
        let what = c["cmd"].as_str().unwrap_or("?").to_string();
        let mut line = c.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| format!("driver stdin ({what}): {e}"))?;
        let lines = &mut self.lines;
        let reply = async move {
            // Bounded: replies to earlier, timed-out commands are skipped; at most a few.
            for _ in 0..10_000 {
                let Some(reply) = lines
                    .next_line()
                    .await
                    .map_err(|e| format!("driver stdout: {e}"))?
                else {
                    return Err("the browser driver exited".to_string());
                };
                let v: Value = serde_json::from_str(&reply)
                    .map_err(|e| format!("bad driver line {reply}: {e}"))?;
                if v["id"] != json!(id) {
                    continue;
                }
                return if v["ok"] == json!(true) {
                    Ok(v["result"].clone())
                } else {
                    Err(v["error"]
                        .as_str()
                        .unwrap_or("unknown driver error")
                        .to_string())
                };
            }
            Err("too many stray driver replies".to_string())
        };
        match timeout(limit, reply).await {
            Ok(r) => r.map_err(|e| format!("driver `{what}`: {e}")),
            Err(_) => Err(format!("driver `{what}`: no reply within {limit:?}")),
        }
    }

    async fn open(&mut self, label: &str) -> R<u64> {
        let v = self
            .cmd(
                json!({"cmd": "open", "label": label, "timeoutMs": 30_000}),
                Duration::from_secs(45),
            )
            .await?;
        v.as_u64()
            .ok_or_else(|| format!("open: bad page index {v}"))
    }

    async fn eval(&mut self, page: u64, expr: &str, arg: Value, timeout_ms: u64) -> R<Value> {
        self.cmd(
            json!({"cmd": "eval", "page": page, "expr": expr, "arg": arg, "timeoutMs": timeout_ms}),
            Duration::from_millis(timeout_ms) + Duration::from_secs(15),
        )
        .await
    }

    async fn wait_log(&mut self, page: u64, m: Value, timeout_ms: u64) -> R<Value> {
        self.cmd(
            json!({"cmd": "waitLog", "page": page, "match": m, "since": 0, "timeoutMs": timeout_ms}),
            Duration::from_millis(timeout_ms) + Duration::from_secs(15),
        )
        .await
    }

    async fn wait_fn(&mut self, page: u64, expr: &str, arg: Value, timeout_ms: u64) -> R<Value> {
        self.cmd(
            json!({"cmd": "waitFn", "page": page, "expr": expr, "arg": arg,
                   "timeoutMs": timeout_ms, "pollMs": 20}),
            Duration::from_millis(timeout_ms) + Duration::from_secs(15),
        )
        .await
    }

    async fn close(&mut self, page: u64) {
        if let Err(e) = self
            .cmd(
                json!({"cmd": "close", "page": page}),
                Duration::from_secs(20),
            )
            .await
        {
            eprintln!("  (closing page {page}: {e})");
        }
    }

    async fn quit(mut self) {
        let _ = self
            .cmd(json!({"cmd": "quit"}), Duration::from_secs(25))
            .await;
        if timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    /// Offset of the page's `__log` clock from ours (page − rust, ms): the sample with the
    /// shortest round trip out of a few.
    async fn clock_offset(&mut self, page: u64) -> R<f64> {
        let mut best: Option<(f64, f64)> = None;
        for _ in 0..5 {
            let t0 = now_ms();
            let v = self
                .eval(
                    page,
                    "performance.timeOrigin + performance.now()",
                    Value::Null,
                    5_000,
                )
                .await?;
            let t1 = now_ms();
            let p = v.as_f64().ok_or_else(|| format!("page clock: {v}"))?;
            let (rtt, off) = (t1 - t0, p - (t0 + t1) / 2.0);
            if best.is_none_or(|(r, _)| rtt < r) {
                best = Some((rtt, off));
            }
        }
        let (rtt, off) = best.ok_or("no clock sample")?;
        if rtt > 50.0 {
            eprintln!(
                "  (page {page}: clock offset {off:.1} ms is ±{:.1} ms)",
                rtt / 2.0
            );
        }
        Ok(off)
    }
}

// ─── peers ──────────────────────────────────────────────────────────────────────────────────────

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Rust,
    Chromium,
}

enum Peer {
    Rust {
        socket: Socket,
        /// `(peer id, wall-clock ms)` of every peer-connect, stamped inside the listener.
        connects: UnboundedReceiver<(String, f64)>,
        join_ok: UnboundedReceiver<Event>,
    },
    Page {
        page: u64,
        id: String,
        /// page clock − our clock, ms.
        offset: f64,
    },
}

impl Peer {
    fn id(&self) -> String {
        match self {
            Peer::Rust { socket, .. } => socket.id(),
            Peer::Page { id, .. } => id.clone(),
        }
    }
}

struct Ctx {
    url: String,
    browser: Option<Browser>,
}

impl Ctx {
    fn browser(&mut self) -> R<&mut Browser> {
        self.browser
            .as_mut()
            .ok_or_else(|| "no browser (it failed to start)".to_string())
    }
}

type RustParts = (
    Socket,
    UnboundedReceiver<(String, f64)>,
    UnboundedReceiver<Event>,
);

async fn rust_connect(url: &str) -> R<RustParts> {
    let socket = timeout(JOIN_WAIT, Socket::connect(url, Options::loopback()))
        .await
        .map_err(|_| format!("rust socket: no connection to {url} within {JOIN_WAIT:?}"))?
        .map_err(|e| format!("rust socket connect: {e}"))?;
    let (tx, rx) = mpsc::unbounded_channel();
    socket.on("peer-connect", move |ev: &Event| {
        let t = now_ms();
        let id = ev.arg()["id"].as_str().unwrap_or_default().to_string();
        let _ = tx.send((id, t));
    });
    let join_ok = socket.subscribe("join-ok");
    Ok((socket, rx, join_ok))
}

fn join_room(socket: &Socket, room: &str, name: &str) -> R<()> {
    socket
        .server()
        .emit("join-room", vec![json!({"roomId": room, "name": name})])
        .map_err(|e| format!("emit join-room: {e}"))
}

const PAGE_SETUP: &str = "() => { rtcio.config.hashEachMessage = false; \
    rtcio.config.recvMode = 'retain'; rtcio.config.attachRemoteVideo = false; return true; }";

/// Opens a page ready to join (setup + clock calibration are not part of any measurement).
async fn open_page(ctx: &mut Ctx, label: &str) -> R<(u64, f64)> {
    let b = ctx.browser()?;
    let page = b.open(label).await?;
    b.eval(page, PAGE_SETUP, Value::Null, 10_000).await?;
    let offset = b.clock_offset(page).await?;
    Ok((page, offset))
}

/// The existing member: joins and waits for `join-ok` (re-sending `join-room` once if it was
/// lost; counted in `lost`).
async fn join_existing(ctx: &mut Ctx, kind: Kind, room: &str, lost: &mut u32) -> R<Peer> {
    match kind {
        Kind::Rust => {
            let (socket, connects, mut join_ok) = rust_connect(&ctx.url).await?;
            join_room(&socket, room, "existing")?;
            if timeout(JOIN_OK_WAIT, join_ok.recv()).await.is_err() {
                *lost += 1;
                eprintln!(
                    "  existing rust {}: no join-ok within {JOIN_OK_WAIT:?}; re-sending join-room",
                    socket.id()
                );
                join_room(&socket, room, "existing")?;
                if timeout(JOIN_WAIT, join_ok.recv()).await.is_err() {
                    let _ = timeout(Duration::from_secs(10), socket.close()).await;
                    return Err(format!(
                        "existing rust: no join-ok within {JOIN_WAIT:?}, even after re-sending join-room"
                    ));
                }
            }
            Ok(Peer::Rust {
                socket,
                connects,
                join_ok,
            })
        }
        Kind::Chromium => {
            let (page, offset) = open_page(ctx, "existing").await?;
            let url = ctx.url.clone();
            let b = ctx.browser()?;
            match page_join_existing(b, page, &url, room, lost).await {
                Ok(id) => Ok(Peer::Page { page, id, offset }),
                Err(e) => {
                    b.close(page).await;
                    Err(e)
                }
            }
        }
    }
}

async fn page_join_existing(
    b: &mut Browser,
    page: u64,
    url: &str,
    room: &str,
    lost: &mut u32,
) -> R<String> {
    let r = b
        .eval(
            page,
            "(o) => rtcio.join(o.url, o)",
            json!({"url": url, "roomId": room, "name": "existing"}),
            30_000,
        )
        .await?;
    let id = r["id"].as_str().ok_or("page join: no id")?.to_string();
    let ok = json!({"kind": "event", "via": "server", "name": "join-ok"});
    if b.wait_log(page, ok.clone(), JOIN_OK_WAIT.as_millis() as u64)
        .await
        .is_err()
    {
        *lost += 1;
        eprintln!("  existing page {id}: no join-ok within {JOIN_OK_WAIT:?}; re-sending join-room");
        b.eval(
            page,
            "(o) => { rtcio.socket.server.emit('join-room', {roomId: o.roomId, name: 'existing'}); return true; }",
            json!({"roomId": room}),
            10_000,
        )
        .await?;
        b.wait_log(page, ok, JOIN_WAIT.as_millis() as u64)
            .await
            .map_err(|e| format!("existing page join-ok, after re-sending join-room: {e}"))?;
    }
    Ok(id)
}

/// The newcomer: everything up to the join emit is setup; returns the peer and the emit time.
async fn join_newcomer(ctx: &mut Ctx, kind: Kind, room: &str) -> R<(Peer, f64)> {
    match kind {
        Kind::Rust => {
            let (socket, connects, join_ok) = rust_connect(&ctx.url).await?;
            let t = now_ms();
            join_room(&socket, room, "newcomer")?;
            Ok((
                Peer::Rust {
                    socket,
                    connects,
                    join_ok,
                },
                t,
            ))
        }
        Kind::Chromium => {
            let (page, offset) = open_page(ctx, "newcomer").await?;
            let url = ctx.url.clone();
            let b = ctx.browser()?;
            match page_join_newcomer(b, page, &url, room).await {
                Ok((id, t)) => Ok((Peer::Page { page, id, offset }, t - offset)),
                Err(e) => {
                    b.close(page).await;
                    Err(e)
                }
            }
        }
    }
}

/// Returns the page's socket id and its `join` time (page clock).
async fn page_join_newcomer(b: &mut Browser, page: u64, url: &str, room: &str) -> R<(String, f64)> {
    let r = b
        .eval(
            page,
            "(o) => rtcio.join(o.url, o)",
            json!({"url": url, "roomId": room, "name": "newcomer"}),
            30_000,
        )
        .await?;
    let id = r["id"].as_str().ok_or("page join: no id")?.to_string();
    // `join` is logged right before the page emits join-room on connect.
    let j = b.wait_log(page, json!({"kind": "join"}), 10_000).await?;
    let t = j["entry"]["t"].as_f64().ok_or("join entry: no t")?;
    Ok((id, t))
}

/// Waits until `me` fired peer-connect for `other`; returns the wall-clock time (our clock).
async fn peer_connect_time(ctx: &mut Ctx, me: &mut Peer, other: &str, who: &str) -> R<f64> {
    match me {
        Peer::Rust { connects, .. } => {
            let deadline = Instant::now() + JOIN_WAIT;
            for _ in 0..1000 {
                let left = deadline.saturating_duration_since(Instant::now());
                match timeout(left, connects.recv()).await {
                    Ok(Some((id, t))) if id == other => return Ok(t),
                    Ok(Some(_)) => continue,
                    Ok(None) => return Err(format!("{who}: peer-connect stream closed")),
                    Err(_) => {
                        return Err(format!(
                            "{who} (rust): no peer-connect for {other} within {JOIN_WAIT:?}"
                        ));
                    }
                }
            }
            Err(format!("{who}: too many unrelated peer-connects"))
        }
        Peer::Page { page, offset, .. } => {
            let (page, offset) = (*page, *offset);
            let e = ctx
                .browser()?
                .wait_log(
                    page,
                    json!({"kind": "peer-connect", "peer": other}),
                    JOIN_WAIT.as_millis() as u64,
                )
                .await
                .map_err(|e| format!("{who} (page): {e}"))?;
            Ok(e["entry"]["t"].as_f64().ok_or("peer-connect entry: no t")? - offset)
        }
    }
}

async fn got_join_ok(ctx: &mut Ctx, p: &mut Peer) -> bool {
    match p {
        Peer::Rust { join_ok, .. } => join_ok.try_recv().is_ok(),
        Peer::Page { page, .. } => {
            let page = *page;
            match ctx.browser() {
                Ok(b) => b
                    .eval(
                        page,
                        "() => rtcio.findLog({kind: 'event', via: 'server', name: 'join-ok'}) !== null",
                        Value::Null,
                        5_000,
                    )
                    .await
                    .map(|v| v == json!(true))
                    .unwrap_or(false),
                Err(_) => false,
            }
        }
    }
}

async fn leave(ctx: &mut Ctx, p: Peer) {
    match p {
        Peer::Rust { socket, .. } => {
            if timeout(Duration::from_secs(10), socket.close())
                .await
                .is_err()
            {
                eprintln!("  (rust socket close took more than 10 s)");
            }
        }
        Peer::Page { page, .. } => {
            if let Ok(b) = ctx.browser() {
                b.close(page).await;
            }
        }
    }
}

/// One join measurement in a fresh room; returns the pair (kept for the transfer) and the ms.
async fn join_once(
    ctx: &mut Ctx,
    existing: Kind,
    newcomer: Kind,
    room: &str,
    lost: &mut u32,
) -> R<(Peer, Peer, f64, f64)> {
    let mut a = join_existing(ctx, existing, room, lost).await?;
    let (mut b, t_join) = match join_newcomer(ctx, newcomer, room).await {
        Ok(x) => x,
        Err(e) => {
            leave(ctx, a).await;
            return Err(e);
        }
    };
    let (ia, ib) = (a.id(), b.id());
    let ta = peer_connect_time(ctx, &mut a, &ib, "existing").await;
    let tb = peer_connect_time(ctx, &mut b, &ia, "newcomer").await;
    match (ta, tb) {
        (Ok(ta), Ok(tb)) => {
            // The newcomer does not wait for its join-ok; only note whether it came.
            if !got_join_ok(ctx, &mut b).await {
                *lost += 1;
                eprintln!("  newcomer {ib}: its join-ok never arrived (peers connected anyway)");
            }
            Ok((a, b, ta.max(tb) - t_join, tb - t_join))
        }
        (Err(e), _) | (_, Err(e)) => {
            leave(ctx, b).await;
            leave(ctx, a).await;
            Err(e)
        }
    }
}

// ─── transfers ──────────────────────────────────────────────────────────────────────────────────

/// The `bulk` channel of one side.
enum Bulk {
    Rust(Channel),
    Page {
        page: u64,
        peer: String,
        offset: f64,
    },
}

async fn open_bulk(ctx: &mut Ctx, me: &Peer, other: &str) -> R<Bulk> {
    match me {
        Peer::Rust { socket, .. } => {
            let ch = timeout(
                JOIN_WAIT,
                socket
                    .peer(other)
                    .create_channel("bulk", ChannelOptions::reliable()),
            )
            .await
            .map_err(|_| "create_channel(bulk) hung".to_string())?
            .map_err(|e| format!("create_channel(bulk): {e}"))?;
            Ok(Bulk::Rust(ch))
        }
        Peer::Page { page, offset, .. } => {
            ctx.browser()?
                .eval(
                    *page,
                    "(o) => { rtcio.socket.peer(o.peer).createChannel('bulk', {}); return true; }",
                    json!({"peer": other}),
                    10_000,
                )
                .await?;
            Ok(Bulk::Page {
                page: *page,
                peer: other.to_string(),
                offset: *offset,
            })
        }
    }
}

async fn wait_open(ctx: &mut Ctx, b: &Bulk) -> R<()> {
    match b {
        Bulk::Rust(ch) => {
            let mut open = ch.subscribe("open");
            if ch.ready_state() == ReadyState::Open {
                return Ok(());
            }
            timeout(JOIN_WAIT, open.recv())
                .await
                .map_err(|_| format!("rust bulk channel not open within {JOIN_WAIT:?}"))?
                .ok_or("rust bulk channel: open stream closed")?;
            Ok(())
        }
        Bulk::Page { page, peer, .. } => ctx
            .browser()?
            .wait_log(
                *page,
                json!({"kind": "channel-open", "peer": peer, "channel": "bulk"}),
                JOIN_WAIT.as_millis() as u64,
            )
            .await
            .map(|_| ()),
    }
}

#[derive(Default)]
struct SendStats {
    false_returns: u64,
    drains: u64,
    refused: u64,
}

/// rtc.io style: `send()`; when it returns false, wait for `drain`. A refused chunk (false plus
/// an `error` event) is re-sent, as the page's `sendBytes` does. Returns the first-send time.
async fn rust_send(ch: &Channel, data: &Bytes, deadline: Instant) -> R<(f64, SendStats)> {
    let mut drains = ch.subscribe("drain");
    let mut errors = ch.subscribe("error");
    let mut st = SendStats::default();
    let mut off = 0;
    let start = now_ms();
    let max_chunks = 4 * data.len() / CHUNK + 1000;
    for _ in 0..max_chunks {
        if off >= data.len() {
            return Ok((start, st));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "rust send: only {off} of {} bytes handed over before the deadline",
                data.len()
            ));
        }
        let end = (off + CHUNK).min(data.len());
        // Like JS `once('drain')` after a false return: drains from before this send don't count.
        while drains.try_recv().is_ok() {}
        if ch.send(data.slice(off..end)).await {
            off = end;
            continue;
        }
        st.false_returns += 1;
        let mut refused = None;
        while let Ok(ev) = errors.try_recv() {
            refused = Some(ev.arg().to_string());
        }
        if refused.is_some() {
            st.refused += 1;
        } else {
            off = end; // queued, not lost
        }
        if ch.ready_state() != ReadyState::Open {
            return Err(format!("rust bulk channel closed after {off} bytes"));
        }
        // After a transport refusal with nothing queued no drain may come: retry after 1 s.
        let limit = if refused.is_some() {
            Duration::from_secs(1)
        } else {
            DRAIN_WAIT
        };
        match timeout(limit, drains.recv()).await {
            Ok(Some(_)) => st.drains += 1,
            Ok(None) => return Err("rust bulk channel: drain stream closed".into()),
            Err(_) if refused.is_some() => {}
            Err(_) => {
                return Err(format!(
                    "rust send: no `drain` within {DRAIN_WAIT:?} after send() returned false \
                     at {off} of {} bytes",
                    data.len()
                ));
            }
        }
    }
    Err(format!(
        "rust send: gave up after {max_chunks} send() calls ({} refused)",
        st.refused
    ))
}

type RecvResult = R<(String, f64, usize)>;

/// Collects `n` bytes of `data` events (kept, hashed at the end like the page's `retain` mode);
/// returns (sha256, wall-clock ms of the last byte, messages).
fn spawn_rust_receiver(
    ch: &Channel,
    n: usize,
    deadline: Instant,
    progress: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<RecvResult> {
    let mut rx = ch.subscribe("data");
    tokio::spawn(async move {
        let mut chunks: Vec<Bytes> = Vec::with_capacity(n / CHUNK + 16);
        let mut got = 0usize;
        while got < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, rx.recv()).await {
                Ok(Some(ev)) => {
                    let b = ev
                        .data
                        .ok_or("rust receiver: a non-binary message on bulk")?;
                    got += b.len();
                    progress.store(got, Ordering::Relaxed);
                    chunks.push(b);
                }
                Ok(None) => return Err(format!("rust receiver: stream closed at {got} of {n}")),
                Err(_) => {
                    return Err(format!(
                        "rust receiver: only {got} of {n} bytes within {TRANSFER_WAIT:?}"
                    ));
                }
            }
        }
        let last = now_ms();
        if got != n {
            return Err(format!("rust receiver: got {got} bytes, expected {n}"));
        }
        let mut h = Sha256::new();
        for c in &chunks {
            h.update(c);
        }
        Ok((hex(&h.finalize()), last, chunks.len()))
    })
}

/// Bytes the receiving side has so far (diagnostics only).
async fn received(ctx: &mut Ctx, rx: &Bulk, progress: &AtomicUsize) -> String {
    match rx {
        Bulk::Rust(_) => progress.load(Ordering::Relaxed).to_string(),
        Bulk::Page { page, peer, .. } => match ctx.browser() {
            Ok(b) => b
                .eval(
                    *page,
                    "(o) => rtcio.recvStats({peer: o.peer, channel: 'bulk', hash: false})",
                    json!({"peer": peer}),
                    5_000,
                )
                .await
                .map(|r| r["bytes"].to_string())
                .unwrap_or_else(|e| format!("? ({e})")),
            Err(e) => format!("? ({e})"),
        },
    }
}

/// One transfer of `data` from `tx` to `rx`; returns MB/s (MiB/s).
async fn transfer(
    ctx: &mut Ctx,
    tx: &Bulk,
    rx: &Bulk,
    data: &Bytes,
    expected: &str,
) -> R<(f64, String)> {
    let n = data.len();
    let deadline = Instant::now() + TRANSFER_WAIT;
    // Receiver ready first.
    let progress = Arc::new(AtomicUsize::new(0));
    let rust_rx = match rx {
        Bulk::Rust(ch) => Some(spawn_rust_receiver(ch, n, deadline, progress.clone())),
        Bulk::Page { page, peer, .. } => {
            ctx.browser()?
                .eval(
                    *page,
                    "(o) => rtcio.resetRecv({peer: o.peer, channel: 'bulk'})",
                    json!({"peer": peer}),
                    10_000,
                )
                .await?;
            None
        }
    };
    let (start, note) = match tx {
        Bulk::Rust(ch) => {
            let (t, st) = match rust_send(ch, data, deadline).await {
                Ok(x) => x,
                Err(e) => {
                    // Evidence: did the bytes stop flowing, or only the drain event?
                    let a = received(ctx, rx, &progress).await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let b = received(ctx, rx, &progress).await;
                    return Err(format!("{e}; receiver had {a} bytes, 2 s later {b} bytes"));
                }
            };
            (
                t,
                format!(
                    "rust send: {} false returns, {} drains, {} refused",
                    st.false_returns, st.drains, st.refused
                ),
            )
        }
        Bulk::Page { page, peer, offset } => {
            let r = ctx
                .browser()?
                .eval(
                    *page,
                    "(o) => rtcio.sendBytes(o)",
                    json!({"peer": peer, "channel": "bulk", "bytes": n, "chunkSize": CHUNK,
                           "seed": SEED, "hash": false,
                           "timeoutMs": TRANSFER_WAIT.as_millis() as u64}),
                    TRANSFER_WAIT.as_millis() as u64 + 5_000,
                )
                .await
                .map_err(|e| format!("page sendBytes: {e}"))?;
            if r["bytes"].as_u64() != Some(n as u64) {
                return Err(format!(
                    "page sendBytes accepted {} of {n} bytes",
                    r["bytes"]
                ));
            }
            let t = r["startedAt"].as_f64().ok_or("sendBytes: no startedAt")? - offset;
            (
                t,
                format!(
                    "page send: {} false returns, {} drains, {} refused (re-sent)",
                    r["falseReturns"], r["drains"], r["refused"]
                ),
            )
        }
    };
    let (sha, last) = match (rx, rust_rx) {
        (Bulk::Rust(_), Some(h)) => {
            let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(10);
            let (sha, last, _) = timeout(left, h)
                .await
                .map_err(|_| "rust receiver task hung".to_string())?
                .map_err(|e| format!("rust receiver task: {e}"))??;
            (sha, last)
        }
        (Bulk::Page { page, peer, offset }, _) => {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .as_millis() as u64;
            let b = ctx.browser()?;
            b.wait_fn(
                *page,
                "(o) => rtcio.recvStats({peer: o.peer, channel: 'bulk', hash: false})\
                 .then((r) => r.bytes >= o.bytes && r)",
                json!({"peer": peer, "bytes": n}),
                left.max(1_000),
            )
            .await
            .map_err(|e| format!("page receiver: {e}"))?;
            let r = b
                .eval(
                    *page,
                    "(o) => rtcio.recvStats({peer: o.peer, channel: 'bulk'})",
                    json!({"peer": peer}),
                    30_000,
                )
                .await?;
            if r["bytes"].as_u64() != Some(n as u64) {
                return Err(format!("page received {} bytes, expected {n}", r["bytes"]));
            }
            let sha = r["sha256"]
                .as_str()
                .ok_or("recvStats: no sha256")?
                .to_string();
            let last = r["lastAt"].as_f64().ok_or("recvStats: no lastAt")? - offset;
            let _ = b
                .eval(
                    *page,
                    "(o) => rtcio.resetRecv({peer: o.peer, channel: 'bulk'})",
                    json!({"peer": peer}),
                    10_000,
                )
                .await;
            (sha, last)
        }
        (Bulk::Rust(_), None) => return Err("internal: no rust receiver".into()),
    };
    if sha != expected {
        return Err(format!(
            "transfer corrupted: SHA-256 {sha}, expected {expected} ({note})"
        ));
    }
    let secs = (last - start) / 1000.0;
    if secs <= 0.0 {
        return Err(format!(
            "non-positive duration {secs} s (clock offset problem?)"
        ));
    }
    Ok((n as f64 / MIB as f64 / secs, note))
}

// ─── one pair ───────────────────────────────────────────────────────────────────────────────────

struct PairResult {
    label: &'static str,
    joins: Vec<f64>,
    newcomer_joins: Vec<f64>,
    join_err: Option<String>,
    /// Join attempts that failed (the pair is retried with a fresh room, a few times at most).
    join_failures: u32,
    /// `join-ok` replies the server lost (see README).
    lost_join_ok: u32,
    mbps: Vec<f64>,
    tput_err: Option<String>,
    secs: f64,
}

struct Plan {
    joins: usize,
    runs: usize,
    data: Bytes,
    expected: String,
}

async fn run_pair(
    ctx: &mut Ctx,
    plan: &Plan,
    label: &'static str,
    existing: Kind,
    newcomer: Kind,
) -> PairResult {
    let started = Instant::now();
    let mut res = PairResult {
        label,
        joins: Vec::new(),
        newcomer_joins: Vec::new(),
        join_err: None,
        join_failures: 0,
        lost_join_ok: 0,
        mbps: Vec::new(),
        tput_err: None,
        secs: 0.0,
    };
    eprintln!("== {label}: {} joins", plan.joins);
    let mut kept: Option<(Peer, Peer)> = None;
    let nonce = now_ms() as u64;
    const MAX_FAILURES: u32 = 3;
    for i in 0..plan.joins + MAX_FAILURES as usize {
        if res.joins.len() == plan.joins {
            break;
        }
        let room = format!("bench-{existing:?}-{newcomer:?}-{nonce}-{i}");
        match join_once(ctx, existing, newcomer, &room, &mut res.lost_join_ok).await {
            Ok((a, b, ms, newcomer_ms)) => {
                eprintln!(
                    "  join {i}: {ms:.1} ms (newcomer's own peer-connect {newcomer_ms:.1} ms)"
                );
                res.joins.push(ms);
                res.newcomer_joins.push(newcomer_ms);
                if res.joins.len() == plan.joins {
                    kept = Some((a, b));
                } else {
                    // Nothing idles in the background of the next join.
                    leave(ctx, b).await;
                    leave(ctx, a).await;
                }
            }
            Err(e) => {
                eprintln!("  join {i} FAILED: {e}");
                res.join_failures += 1;
                res.join_err = Some(e);
                if res.join_failures >= MAX_FAILURES {
                    break;
                }
            }
        }
    }
    // Throughput on the last join's (fresh) connection: newcomer → existing.
    if let Some((a, b)) = kept.take() {
        if plan.runs > 0 {
            eprintln!(
                "== {label}: {} × {} MiB newcomer → existing",
                plan.runs,
                plan.data.len() / MIB
            );
            if let Err(e) = throughput(ctx, plan, &a, &b, &mut res.mbps).await {
                eprintln!("  transfer FAILED: {e}");
                res.tput_err = Some(e);
            }
        }
        leave(ctx, b).await;
        leave(ctx, a).await;
    } else if res.join_err.is_some() {
        res.tput_err = Some("no connected pair".into());
    }
    if res.joins.len() == plan.joins && res.join_failures > 0 {
        // Enough good joins: the failures are reported as a count, not as a failed cell.
        res.join_err = None;
    }
    res.secs = started.elapsed().as_secs_f64();
    res
}

async fn throughput(
    ctx: &mut Ctx,
    plan: &Plan,
    existing: &Peer,
    newcomer: &Peer,
    out: &mut Vec<f64>,
) -> R<()> {
    let (ia, ib) = (existing.id(), newcomer.id());
    let rx = open_bulk(ctx, existing, &ib).await?;
    let tx = open_bulk(ctx, newcomer, &ia).await?;
    wait_open(ctx, &tx).await?;
    wait_open(ctx, &rx).await?;
    for i in 0..plan.runs {
        let (mbps, note) = transfer(ctx, &tx, &rx, &plan.data, &plan.expected).await?;
        eprintln!("  run {i}: {mbps:.1} MB/s, SHA-256 ok ({note})");
        out.push(mbps);
    }
    Ok(())
}

// ─── report ─────────────────────────────────────────────────────────────────────────────────────

fn join_cell(r: &PairResult) -> String {
    match (median(&r.joins), &r.join_err) {
        (Some(m), err) => {
            let (lo, hi) = min_max(&r.joins);
            let nm = median(&r.newcomer_joins).unwrap_or(f64::NAN);
            let mut extra = String::new();
            if err.is_some() || r.join_failures > 0 {
                extra.push_str(&format!("; {} failed", r.join_failures));
            }
            if r.lost_join_ok > 0 {
                extra.push_str(&format!("; join-ok lost {}×", r.lost_join_ok));
            }
            format!(
                "{m:.0} ms ({lo:.0}–{hi:.0}, n={}; newcomer side {nm:.0} ms{extra})",
                r.joins.len()
            )
        }
        (None, Some(e)) => format!("failed: {}", short(e)),
        (None, None) => "—".into(),
    }
}

fn tput_cell(r: &PairResult) -> String {
    match (median(&r.mbps), &r.tput_err) {
        (Some(m), err) => {
            let runs: Vec<String> = r.mbps.iter().map(|x| format!("{x:.1}")).collect();
            let fail = if err.is_some() {
                "; then a failure"
            } else {
                ""
            };
            format!("{m:.1} MB/s (runs {}{fail})", runs.join(", "))
        }
        (None, Some(e)) => format!("failed: {}", short(e)),
        (None, None) => "—".into(),
    }
}

fn short(e: &str) -> String {
    let e = e.replace('|', "/").replace('\n', " ");
    if e.chars().count() > 160 {
        format!("{}…", e.chars().take(160).collect::<String>())
    } else {
        e
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "n/a".into(),
    }
}

// ─── main ───────────────────────────────────────────────────────────────────────────────────────

fn main() {
    let mode = prepare_network();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mesh bench: tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async {
        match timeout(TOTAL_WAIT, run(&mode)).await {
            Ok(code) => code,
            Err(_) => {
                eprintln!("mesh bench: the whole run exceeded {TOTAL_WAIT:?}; aborting");
                1
            }
        }
    });
    // Chromium and the driver are killed on drop; don't wait for stray tasks.
    rt.shutdown_timeout(Duration::from_secs(2));
    std::process::exit(code);
}

async fn run(mode: &str) -> i32 {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let t0 = Instant::now();
    let load_start = loadavg();
    let joins = env_usize("RTCIO_BENCH_JOINS", 7, 1, 50);
    let runs = env_usize("RTCIO_BENCH_RUNS", 3, 0, 10);
    let mib = env_usize("RTCIO_BENCH_MIB", 64, 1, 512);
    let pairs_env = std::env::var("RTCIO_BENCH_PAIRS").unwrap_or_else(|_| "rr,rc,cr,cc".into());
    let want: Vec<&str> = pairs_env.split(',').map(str::trim).collect();
    eprintln!("mesh bench: {mode}");

    let data = Bytes::from(byte_gen(SEED, mib * MIB));
    let expected = hex(&Sha256::digest(&data));
    let plan = Plan {
        joins,
        runs,
        data,
        expected,
    };

    let srv = match rtcio_server::start(rtcio_server::ServerConfig {
        bind: "127.0.0.1:0".parse().expect("literal address"),
        policy: rtcio_server::Policy {
            relay_per_second: 0.0,
            joins_per_second: 0.0,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mesh bench: rtcio-server failed to start: {e}");
            return 1;
        }
    };
    let mut ctx = Ctx {
        url: srv.url(),
        browser: None,
    };
    let mut results = Vec::new();
    // Rust ↔ Rust first, before Chromium is even running.
    if want.contains(&"rr") {
        results.push(run_pair(&mut ctx, &plan, "Rust ↔ Rust", Kind::Rust, Kind::Rust).await);
    }
    let need_browser = want.iter().any(|p| ["rc", "cr", "cc"].contains(p));
    let mut browser_err = None;
    if need_browser {
        eprintln!("== starting Chromium (tests/browser/driver.mjs)");
        match Browser::start().await {
            Ok(b) => ctx.browser = Some(b),
            Err(e) => {
                eprintln!("mesh bench: no browser: {e}");
                browser_err = Some(e);
            }
        }
    }
    let chromium = ctx
        .browser
        .as_ref()
        .map(|b| b.chromium.clone())
        .unwrap_or_else(|| "n/a".into());
    let browser_pairs: [(&str, &'static str, Kind, Kind); 3] = [
        (
            "rc",
            "Rust ↔ Chromium (Rust joins, Rust → Chromium)",
            Kind::Chromium,
            Kind::Rust,
        ),
        (
            "cr",
            "Chromium ↔ Rust (page joins, Chromium → Rust)",
            Kind::Rust,
            Kind::Chromium,
        ),
        (
            "cc",
            "Chromium ↔ Chromium (anchor)",
            Kind::Chromium,
            Kind::Chromium,
        ),
    ];
    for (key, label, existing, newcomer) in browser_pairs {
        if !want.contains(&key) {
            continue;
        }
        if let Some(e) = &browser_err {
            results.push(PairResult {
                label,
                joins: vec![],
                newcomer_joins: vec![],
                join_err: Some(e.clone()),
                join_failures: 0,
                lost_join_ok: 0,
                mbps: vec![],
                tput_err: Some(e.clone()),
                secs: 0.0,
            });
            continue;
        }
        results.push(run_pair(&mut ctx, &plan, label, existing, newcomer).await);
    }
    if let Some(b) = ctx.browser.take() {
        b.quit().await;
    }
    if let Err(e) = timeout(Duration::from_secs(10), srv.shutdown()).await {
        eprintln!("mesh bench: server shutdown hung: {e}");
    }

    // ── the report (stdout) ──
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!();
    println!(
        "machine: {cores} cores ({}), Linux {}, Chromium {chromium}, {}",
        cpu_model(),
        kernel(),
        utc_now()
    );
    println!("network: {mode}");
    println!(
        "1-min load average: {load_start} at start, {} at end",
        loadavg()
    );
    println!(
        "server: in-process rtcio-server on 127.0.0.1 (relay and join rate limits off); \
         {joins} joins per pair, {runs} × {mib} MiB per pair in {} KiB chunks",
        CHUNK / 1024
    );
    println!();
    println!(
        "| pair | join → peer-connect, median (min–max) | per-peer channel MB/s, median (runs) | time |"
    );
    println!("|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {} | {} | {:.0} s |",
            r.label,
            join_cell(r),
            tput_cell(r),
            r.secs
        );
    }
    println!();
    let anchor = results
        .iter()
        .find(|r| r.label.starts_with("Chromium ↔ Chromium"));
    if let Some(c) = anchor {
        let (cj, ct) = (median(&c.joins), median(&c.mbps));
        for r in results.iter().filter(|r| !std::ptr::eq(*r, c)) {
            println!(
                "{} / Chromium ↔ Chromium: join time {} (below 1 = faster), throughput {} (above 1 = faster)",
                r.label,
                ratio(median(&r.joins), cj),
                ratio(median(&r.mbps), ct)
            );
        }
    }
    println!(
        "Join = newcomer's join-room emit → the later of both peer-connects (fresh room and peers \
         each time). MB/s = MiB/s from the first send() to the last byte received, 16 KiB chunks, \
         default watermarks (16 MiB high, 1 MiB low, 1 MiB budget), run 1 on a fresh connection, \
         every transfer SHA-256 checked."
    );
    println!("total run time: {:.0} s", t0.elapsed().as_secs_f64());
    let lost: u32 = results.iter().map(|r| r.lost_join_ok).sum();
    if lost > 0 {
        println!(
            "join-ok lost {lost}× in this run: rtcio-server handled a socket's first join-room before \
             socketioxide marked it connected, so its replies to that socket were dropped (see \
             benches/README.md); the existing member re-sent join-room, the newcomer's join still \
             connected."
        );
    }
    let failed = results
        .iter()
        .any(|r| r.join_err.is_some() || r.tput_err.is_some());
    if failed {
        eprintln!("mesh bench: some measurements failed (see the table)");
        1
    } else {
        0
    }
}
