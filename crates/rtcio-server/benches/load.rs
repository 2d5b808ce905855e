//! Load generator: rtcio-server vs the Node reference server (socket.io 4.8), side by side.
//!
//! Run with `cargo bench -p rtcio-server --bench load`; see `benches/README.md` for the method and
//! the meaning of every metric. Progress goes to stderr, the Markdown table to stdout.
//!
//! The client is a minimal Engine.IO v4 / Socket.IO v5 speaker over raw WebSockets (PROTOCOL.md
//! §1.2–1.3): read the `0{…}` open packet, send `40`, read `40{"sid":…}`, answer `2` with `3`,
//! exchange `42[…]` events. One tokio task per socket, 4 KiB read buffer each.
//!
//! Environment knobs (all optional): `LOAD_ONLY=ours|node` runs one server only; `LOAD_RSS=1000,10000`
//! overrides the socket counts of the RSS phase (empty: skip it); `LOAD_OURS_LOG=<filter>` replaces
//! `--log warn` for our server (diagnosis; its stderr lines are counted and grouped in the notes);
//! `LOAD_SERVER_LOG_DIR=<dir>` saves every server's stderr as `<dir>/<ours|node>-<pid>.log`.

use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::{Semaphore, watch};
use tokio::time::{sleep, sleep_until, timeout};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

/// The exact join phase (fan-out and leave counts), shared with `tests/many_sockets.rs`.
#[path = "../tests/exact_joins/mod.rs"]
mod exact_joins;

// ---- parameters -------------------------------------------------------------------------------

/// Sockets per joins round.
const JOIN_SOCKETS: usize = 1_000;
/// Members per room in the joins and RSS phases.
const ROOM_SIZE: usize = 4;
/// Measured joins rounds per server (the median is reported); one unmeasured warm-up round first.
const JOIN_ROUNDS: usize = 5;
const JOIN_WARMUP_SOCKETS: usize = 1_000;
/// Connect + join handshakes in flight at once (keeps SYN bursts below the listen backlogs).
const HANDSHAKE_CONCURRENCY: usize = 128;
/// Sender/receiver pairs in the relay phase, each in its own 2-member room.
const RELAY_PAIRS: usize = 100;
/// Relayed messages in flight per pair (sent, not yet received).
const RELAY_WINDOW: usize = 32;
/// Messages per relay run (split evenly over the pairs) and its time cap.
const RELAY_TOTAL: u64 = 200_000;
const RELAY_MAX: Duration = Duration::from_secs(10);
/// Low-load latency run: few pairs, one message in flight per pair (no queueing).
const LOWLOAD_PAIRS: usize = 10;
const LOWLOAD_WINDOW: usize = 1;
const LOWLOAD_TOTAL: u64 = 10_000;
const LOWLOAD_MAX: Duration = Duration::from_secs(5);
/// Unmeasured warm-up run before the relay measurement (JIT, allocator pools).
const RELAY_WARMUP_TOTAL: u64 = 10_000;
const RELAY_WARMUP_MAX: Duration = Duration::from_secs(5);
/// How long receivers keep waiting for stragglers after the senders stopped.
const RELAY_GRACE: Duration = Duration::from_secs(2);
/// Idle sockets per fresh server in the RSS phase.
const RSS_SIZES: [usize; 2] = [1_000, 10_000];
/// Pause before reading VmRSS (server idle, allocator settled).
const RSS_SETTLE: Duration = Duration::from_secs(2);
/// Bound on connecting all sockets of one RSS step.
const RSS_CONNECT_MAX: Duration = Duration::from_secs(90);
/// Client sockets bind to 127.0.0.1 … 127.0.0.N round-robin (spreads ephemeral ports / TIME_WAIT).
const SOURCE_ADDRS: usize = 8;
/// Connect + handshake + join of one socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(20);
/// Server start-up (until the ready line).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Whole bench; it normally needs well under half of this.
const OVERALL_LIMIT: Duration = Duration::from_secs(420);
/// File-descriptor limit requested for the bench and (inherited) the server children.
const NOFILE: u64 = 65_536;

/// A realistic trickled ICE candidate, the bulk of signaling traffic.
const CANDIDATE: &str = "candidate:842163049 1 udp 1677729535 198.51.100.23 51234 typ srflx raddr 10.0.0.7 rport 51234 generation 0 ufrag x9Tq network-cost 999";

// ---- small helpers ----------------------------------------------------------------------------

type R<T> = Result<T, String>;

trait Ctx<T> {
    fn ctx(self, what: &str) -> R<T>;
}

impl<T, E: Display> Ctx<T> for Result<T, E> {
    fn ctx(self, what: &str) -> R<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds on the process-wide monotonic clock (send and receive stamps share it).
fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Set when a count was not exact (an event missing or duplicated): the bench then exits 1.
static INEXACT: AtomicBool = AtomicBool::new(false);

/// A count that was not exact: noted under the table, and the run fails.
fn inexact(s: String) {
    INEXACT.store(true, Ordering::Relaxed);
    note(format!("NOT EXACT: {s}"));
}

/// Something worth reporting under the table (errors, drops, crashes).
fn note(s: String) {
    eprintln!("NOTE: {s}");
    NOTES.lock().unwrap().push(s);
}

fn src_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % SOURCE_ADDRS) as u8))
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    Some(sorted[idx.min(sorted.len() - 1)])
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

// ---- server processes -------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Ours,
    Node,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Node => "node",
        }
    }
}

#[derive(Default)]
struct StderrLog {
    lines: AtomicUsize,
    /// Line "kinds" (timestamp and ids stripped) with their counts, in order of first appearance.
    kinds: Mutex<Vec<(String, usize)>>,
}

/// A log line without its timestamp and `key=value` fields, so repeats of one message group.
fn line_kind(line: &str) -> String {
    let mut words = line.split_whitespace().peekable();
    // tracing's fmt output starts with an RFC 3339 timestamp.
    if words
        .peek()
        .is_some_and(|w| w.len() > 20 && w.as_bytes()[4] == b'-' && w.contains('T'))
    {
        words.next();
    }
    words
        .filter(|w| !w.contains('='))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A running server child. Dropping it kills the process (also on panic or interruption).
struct Server {
    kind: Kind,
    child: Child,
    pid: u32,
    addr: SocketAddr,
    stderr: Arc<StderrLog>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn parse_ready(kind: Kind, line: &str) -> Option<u16> {
    let port = match kind {
        Kind::Ours => line
            .trim()
            .strip_prefix("rtcio-server listening on http://")?
            .trim_end_matches('/')
            .rsplit(':')
            .next()?,
        Kind::Node => line.trim().strip_prefix("LISTENING ")?,
    };
    port.trim().parse().ok()
}

impl Server {
    async fn start(kind: Kind, root: &Path) -> R<Server> {
        Self::start_with(kind, root, &[]).await
    }

    /// Starts a server with extra arguments (ours only, e.g. `--redis URL`).
    async fn start_with(kind: Kind, root: &Path, extra: &[String]) -> R<Server> {
        let mut cmd = match kind {
            Kind::Ours => {
                let log_level = std::env::var("LOAD_OURS_LOG").unwrap_or_else(|_| "warn".into());
                // LOAD_OURS_BIN: another build of the server (e.g. the previous commit's) to
                // compare against, with the same client and machine state.
                let bin = std::env::var_os("LOAD_OURS_BIN")
                    .unwrap_or_else(|| env!("CARGO_BIN_EXE_rtcio-server").into());
                let mut c = Command::new(bin);
                c.args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--log",
                    &log_level,
                    "--relay-rate",
                    "0",
                    "--join-rate",
                    "0",
                ]);
                c.args(extra);
                for v in ["PORT", "RTCIO_LOG", "RTCIO_AUTH_TOKEN", "RTCIO_REDIS_URL"] {
                    c.env_remove(v);
                }
                c
            }
            Kind::Node => {
                let mut c = Command::new("node");
                c.arg(root.join("tests/node/reference-server.mjs"))
                    .env("PORT", "0")
                    .env_remove("RECOVERY");
                c
            }
        };
        cmd.current_dir(root)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().ctx(&format!("spawn {} server", kind.label()))?;
        let pid = child.id().ok_or("server exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let stderr_pipe = child.stderr.take().ok_or("no stderr pipe")?;

        let log = Arc::new(StderrLog::default());
        let log2 = log.clone();
        let label = kind.label();
        // Diagnosis: keep every stderr line of every server in `<dir>/<label>-<pid>.log`.
        let mut copy = std::env::var_os("LOAD_SERVER_LOG_DIR").and_then(|d| {
            std::fs::File::create(Path::new(&d).join(format!("{label}-{pid}.log"))).ok()
        });
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr_pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(f) = copy.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                let n = log2.lines.fetch_add(1, Ordering::Relaxed);
                if n < 5 {
                    eprintln!("  [{label} stderr] {line}");
                }
                let kind = line_kind(&line);
                let mut kinds = log2.kinds.lock().unwrap();
                if let Some((_, c)) = kinds.iter_mut().find(|(k, _)| *k == kind) {
                    *c += 1;
                } else if kinds.len() < 50 {
                    kinds.push((kind, 1));
                }
            }
        });

        let mut lines = BufReader::new(stdout).lines();
        let port = timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.ctx("server stdout")? {
                if let Some(p) = parse_ready(kind, &line) {
                    return Ok(p);
                }
            }
            Err("server exited before printing its ready line".to_string())
        })
        .await
        .map_err(|_| "server did not become ready in time".to_string())??;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Server {
            kind,
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            stderr: log,
        })
    }

    fn rss_kib(&self) -> R<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ctx("read /proc status")?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| "no VmRSS".to_string())
    }

    /// utime + stime in clock ticks.
    fn cpu_ticks(&self) -> Option<u64> {
        proc_cpu_ticks(self.pid)
    }

    /// Reports an early exit and stderr output, then kills the process and reaps it.
    async fn stop(mut self, phase: &str) {
        let who = self.kind.label();
        if let Ok(Some(status)) = self.child.try_wait() {
            note(format!(
                "{who} server exited on its own during {phase}: {status}"
            ));
        }
        let _ = self.child.start_kill();
        let _ = timeout(Duration::from_secs(5), self.child.wait()).await;
        sleep(Duration::from_millis(50)).await; // let the stderr reader finish
        let n = self.stderr.lines.load(Ordering::Relaxed);
        if n > 0 {
            let mut kinds = self.stderr.kinds.lock().unwrap().clone();
            kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
            let top: Vec<String> = kinds
                .iter()
                .take(10)
                .map(|(k, c)| format!("{c}× `{k}`"))
                .collect();
            note(format!(
                "{who} server wrote {n} stderr line(s) during {phase}: {}",
                top.join("; ")
            ));
        }
    }
}

/// utime + stime of a process in clock ticks.
fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The syscalls counted with `LOAD_SYSCALLS=1`, as `perf` tracepoints (`raw_syscalls` = all).
const SYSCALLS: &[&str] = &[
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_read",
    "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_epoll_pwait",
    "syscalls:sys_enter_futex",
    "syscalls:sys_enter_accept4",
];

type BoxErr = Box<dyn std::error::Error + Send + Sync>;

/// Counts per counted interval, in the order of [`SYSCALLS`].
type SyscallCounts = Vec<u64>;

/// `LOAD_SYSCALLS=1`: counts a server's syscalls over a measured interval with `perf stat`
/// (attached with its events disabled, then switched on and off through its control fifo, so the
/// interval is exactly the bench's). Off by default: every counted syscall costs the server a
/// little CPU, so the CPU rows of a counting run are not comparable with those of other runs.
struct SyscallCounter {
    child: std::process::Child,
    ctl: std::fs::File,
    ack: std::fs::File,
    out: PathBuf,
    dir: PathBuf,
}

fn count_syscalls() -> bool {
    std::env::var("LOAD_SYSCALLS").is_ok_and(|v| v.trim() == "1")
}

impl SyscallCounter {
    /// Starts counting `pid`'s syscalls (`None` when counting is off or `perf` failed; the
    /// latter is a note).
    async fn start(pid: u32) -> Option<SyscallCounter> {
        if !count_syscalls() {
            return None;
        }
        match tokio::task::spawn_blocking(move || Self::start_blocking(pid)).await {
            Ok(Ok(c)) => Some(c),
            Ok(Err(e)) => {
                note(format!("syscall count: {e}"));
                None
            }
            Err(e) => {
                note(format!("syscall count: {e}"));
                None
            }
        }
    }

    fn start_blocking(pid: u32) -> Result<SyscallCounter, BoxErr> {
        use std::io::{BufRead, Write};
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rtcio-load-perf-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let (ctl, ack, out) = (dir.join("ctl"), dir.join("ack"), dir.join("out"));
        for f in [&ctl, &ack] {
            let st = std::process::Command::new("mkfifo").arg(f).status()?;
            if !st.success() {
                return Err(format!("mkfifo {}: {st}", f.display()).into());
            }
        }
        let child = std::process::Command::new("perf")
            .args(["stat", "-x,", "-D", "-1", "-e", &SYSCALLS.join(",")])
            .arg("-p")
            .arg(pid.to_string())
            .arg("--control")
            .arg(format!("fifo:{},{}", ctl.display(), ack.display()))
            .arg("-o")
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        // Opening a fifo waits for its other end: perf opens both once it is attached.
        let mut ctl = std::fs::OpenOptions::new().write(true).open(&ctl)?;
        let ack = std::fs::File::open(&ack)?;
        ctl.write_all(b"enable\n")?;
        let mut line = String::new();
        std::io::BufReader::new(&ack).read_line(&mut line)?;
        Ok(SyscallCounter {
            child,
            ctl,
            ack,
            out,
            dir,
        })
    }

    /// Stops counting and returns the counts (`None` with a note if perf gave none).
    async fn stop(self) -> Option<SyscallCounts> {
        match tokio::task::spawn_blocking(move || self.stop_blocking()).await {
            Ok(Ok(c)) => Some(c),
            Ok(Err(e)) => {
                note(format!("syscall count: {e}"));
                None
            }
            Err(e) => {
                note(format!("syscall count: {e}"));
                None
            }
        }
    }

    fn stop_blocking(mut self) -> Result<SyscallCounts, BoxErr> {
        use std::io::{BufRead, Write};
        self.ctl.write_all(b"disable\n")?;
        let mut line = String::new();
        std::io::BufReader::new(&self.ack).read_line(&mut line)?;
        let st = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()?;
        if !st.success() {
            let _ = self.child.kill();
        }
        self.child.wait()?;
        let text = std::fs::read_to_string(&self.out)?;
        let _ = std::fs::remove_dir_all(&self.dir);
        // CSV lines: count,unit,event,…
        SYSCALLS
            .iter()
            .map(|ev| {
                text.lines()
                    .map(|l| l.split(',').collect::<Vec<_>>())
                    .find(|f| f.get(2) == Some(ev))
                    .and_then(|f| f[0].parse::<u64>().ok())
                    .ok_or_else(|| format!("no count of {ev} in perf's output").into())
            })
            .collect()
    }
}

/// A private `redis-server` on a free loopback port (no persistence). Dropping it kills it.
struct Redis {
    child: Child,
    pid: u32,
    url: String,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Redis {
    async fn start() -> R<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ctx("free port for redis")?
            .port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--maxclients", "1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ctx("spawn redis-server (Debian package redis-server)")?;
        let pid = child.id().ok_or("redis-server exited at once")?;
        let stdout = child.stdout.take().ok_or("no redis stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.ctx("redis stdout")? {
                if line.contains("Ready to accept connections") {
                    return Ok(());
                }
            }
            Err("redis-server exited before it was ready".to_string())
        })
        .await
        .map_err(|_| "redis-server not ready in time".to_string())??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Redis {
            child,
            pid,
            url: format!("redis://127.0.0.1:{port}"),
        })
    }
}

/// One server, or several server processes sharing rooms through one Redis.
struct Cluster {
    servers: Vec<Server>,
    redis: Option<Redis>,
}

impl Cluster {
    fn single(server: Server) -> Cluster {
        Cluster {
            servers: vec![server],
            redis: None,
        }
    }

    /// `n` processes of ours behind a fresh Redis (plain single server for `n == 1` unless
    /// `force_redis`).
    async fn ours(root: &Path, n: usize, force_redis: bool) -> R<Cluster> {
        if n <= 1 && !force_redis {
            return Ok(Cluster::single(Server::start(Kind::Ours, root).await?));
        }
        let redis = Redis::start().await?;
        let mut servers = Vec::with_capacity(n);
        for _ in 0..n {
            servers.push(
                Server::start_with(Kind::Ours, root, &["--redis".into(), redis.url.clone()])
                    .await?,
            );
        }
        Ok(Cluster {
            servers,
            redis: Some(redis),
        })
    }

    /// The address member/socket `i` connects to (round-robin over the processes).
    fn addr(&self, i: usize) -> SocketAddr {
        self.servers[i % self.servers.len()].addr
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|s| s.addr).collect()
    }

    /// CPU of every server process and of Redis, in clock ticks.
    fn cpu_ticks(&self) -> Option<u64> {
        let mut sum = 0;
        for s in &self.servers {
            sum += s.cpu_ticks()?;
        }
        if let Some(r) = &self.redis {
            sum += proc_cpu_ticks(r.pid)?;
        }
        Some(sum)
    }

    async fn stop(self, phase: &str) {
        for s in self.servers {
            s.stop(phase).await;
        }
        if let Some(mut r) = self.redis {
            let _ = r.child.start_kill();
            let _ = timeout(Duration::from_secs(5), r.child.wait()).await;
        }
    }
}

// ---- raw Engine.IO v4 / Socket.IO v5 client ---------------------------------------------------

type Ws = WebSocketStream<TcpStream>;

struct Client {
    ws: Ws,
    /// The namespace socket id from the CONNECT ack (what `source`/`target`/`id` carry).
    sid: String,
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(8192)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Handles one incoming frame: answers Engine.IO pings, returns Socket.IO event frames
/// (`42…`), errors when the connection ends.
async fn on_frame(
    ws: &mut Ws,
    frame: Option<Result<Message, tungstenite::Error>>,
) -> R<Option<Utf8Bytes>> {
    match frame {
        None => Err("connection closed".into()),
        Some(Err(e)) => Err(format!("websocket: {e}")),
        Some(Ok(Message::Text(t))) => {
            if t.as_str() == "2" {
                ws.send(Message::text("3")).await.ctx("pong")?;
                Ok(None)
            } else if t.starts_with("42") {
                Ok(Some(t))
            } else if t.starts_with("41") || t.as_str() == "1" {
                Err(format!("server closed the session: {}", t.as_str()))
            } else {
                Ok(None)
            }
        }
        Some(Ok(Message::Close(f))) => Err(format!("websocket close {f:?}")),
        Some(Ok(_)) => Ok(None),
    }
}

/// Splits `42[<name>,<args>…]` (an ack id may follow `42`) into the name and raw arguments.
fn parse_event(t: &str) -> Option<(String, Vec<&RawValue>)> {
    let body = t
        .strip_prefix("42")?
        .trim_start_matches(|c: char| c.is_ascii_digit());
    let mut parts: Vec<&RawValue> = serde_json::from_str(body).ok()?;
    if parts.is_empty() {
        return None;
    }
    let name: String = serde_json::from_str(parts.remove(0).get()).ok()?;
    Some((name, parts))
}

#[derive(Deserialize)]
struct IdArg {
    id: String,
}

/// `id` (user-connected, …) or `source` (#rtcio:init-offer) of an event's first argument.
fn event_id(args: &[&RawValue]) -> String {
    #[derive(Deserialize)]
    struct Ids {
        id: Option<String>,
        source: Option<String>,
    }
    args.first()
        .and_then(|a| serde_json::from_str::<Ids>(a.get()).ok())
        .and_then(|i| i.id.or(i.source))
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct RelayEnv {
    data: RelayData,
}

#[derive(Deserialize)]
struct RelayData {
    t: u64,
}

/// Send stamp of a relayed `#rtcio:message`, or `None` for any other frame.
fn relay_stamp(t: &str) -> Option<u64> {
    let body = t.strip_prefix("42")?;
    let parts: Vec<&RawValue> = serde_json::from_str(body).ok()?;
    if parts.first()?.get() != "\"#rtcio:message\"" {
        return None;
    }
    serde_json::from_str::<RelayEnv>(parts.get(1)?.get())
        .ok()
        .map(|e| e.data.t)
}

impl Client {
    async fn connect(server: SocketAddr, src: IpAddr) -> R<Client> {
        let sock = TcpSocket::new_v4().ctx("socket")?;
        sock.set_reuseaddr(true).ctx("SO_REUSEADDR")?;
        sock.bind(SocketAddr::new(src, 0)).ctx("bind")?;
        let stream = sock.connect(server).await.ctx("connect")?;
        stream.set_nodelay(true).ctx("TCP_NODELAY")?;
        let url = format!("ws://{server}/socket.io/?EIO=4&transport=websocket");
        let (mut ws, _) = client_async_with_config(url, stream, Some(ws_config()))
            .await
            .ctx("websocket handshake")?;
        // Engine.IO open packet.
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.starts_with('0') => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("before open: {e}")),
                None => return Err("closed before open".into()),
            }
        }
        ws.send(Message::text("40")).await.ctx("send CONNECT")?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.starts_with("40") => {
                    #[derive(Deserialize)]
                    struct Ack {
                        sid: String,
                    }
                    let ack: Ack = serde_json::from_str(&t[2..]).ctx("CONNECT ack")?;
                    return Ok(Client { ws, sid: ack.sid });
                }
                Some(Ok(Message::Text(t))) if t.starts_with("44") => {
                    return Err(format!("connect_error {}", t.as_str()));
                }
                Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                    ws.send(Message::text("3")).await.ctx("pong")?;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("before CONNECT ack: {e}")),
                None => return Err("closed before CONNECT ack".into()),
            }
        }
    }

    async fn next_event(&mut self) -> R<Utf8Bytes> {
        loop {
            let frame = self.ws.next().await;
            if let Some(t) = on_frame(&mut self.ws, frame).await? {
                return Ok(t);
            }
        }
    }

    /// `join-room`, then waits for `join-ok`; returns every event before it as (name, `id` or
    /// `source`): the `user-connected` backfill of the members already in the room, and anything
    /// else the fan-out check then reports.
    async fn join(&mut self, room: &str, name: &str) -> R<Vec<(String, String)>> {
        let ev = serde_json::json!(["join-room", {"roomId": room, "name": name}]);
        self.ws
            .send(Message::text(format!("42{ev}")))
            .await
            .ctx("send join-room")?;
        let mut seen = Vec::new();
        loop {
            let t = self.next_event().await?;
            let Some((name, args)) = parse_event(&t) else {
                continue;
            };
            match name.as_str() {
                "join-ok" => return Ok(seen),
                "join-error" => return Err(format!("join-error {}", t.as_str())),
                _ => {
                    let id = event_id(&args);
                    seen.push((name, id));
                }
            }
        }
    }

    /// Sends `check-room` and logs every event until its `room-check-ok`. Our server handles a
    /// socket's events in order and so does Node: the reply proves this socket's earlier events
    /// (its own join fan-out) were handled.
    async fn marker(&mut self, room: &str, log: &mut Vec<(String, String)>) -> R<()> {
        let ev = serde_json::json!(["check-room", {"roomId": room}]);
        self.ws
            .send(Message::text(format!("42{ev}")))
            .await
            .ctx("send check-room")?;
        loop {
            let t = self.next_event().await?;
            let Some((name, args)) = parse_event(&t) else {
                continue;
            };
            if name == "room-check-ok" {
                return Ok(());
            }
            let id = event_id(&args);
            log.push((name, id));
        }
    }

    /// Waits for a `user-connected` announcing a new member and returns its id.
    async fn next_user_connected(&mut self) -> R<String> {
        loop {
            let t = self.next_event().await?;
            if let Some((name, args)) = parse_event(&t)
                && name == "user-connected"
                && let Some(a) = args
                    .first()
                    .and_then(|a| serde_json::from_str::<IdArg>(a.get()).ok())
            {
                return Ok(a.id);
            }
        }
    }
}

async fn close_all(clients: Vec<Client>) {
    let handles: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let _ = timeout(Duration::from_secs(2), c.ws.close(None)).await;
            })
        })
        .collect();
    for h in handles {
        let _ = h.await;
    }
}

/// Connect + join; returns the client and what it was told before its `join-ok`.
async fn connect_and_join(
    addr: SocketAddr,
    i: usize,
    room: String,
) -> R<(Client, Vec<(String, String)>)> {
    timeout(SOCKET_TIMEOUT, async {
        let mut c = Client::connect(addr, src_ip(i)).await?;
        let before = c.join(&room, &format!("u{i}")).await?;
        Ok((c, before))
    })
    .await
    .unwrap_or_else(|_| Err("connect+join timed out".into()))
}

// ---- phase 1: joins/s -------------------------------------------------------------------------

struct JoinRound {
    /// Server CPU time from the first connect until the last `join-ok` (disconnects excluded).
    cpu_s: Option<f64>,
    /// `LOAD_SYSCALLS=1`: the server's syscalls over the same interval.
    syscalls: Option<SyscallCounts>,
    ok: usize,
    failed: usize,
    secs: f64,
    first_err: Option<String>,
    fanout: FanOut,
}

/// The exact fan-out check of a joins round: each member one `user-connected` and one
/// `#rtcio:init-offer` per later joiner (the server's join order read from each joiner's
/// backfill), every pair of room mates agreeing on who came first, nothing else.
#[derive(Default)]
struct FanOut {
    init_offers: usize,
    due: usize,
    problems: Vec<String>,
}

impl FanOut {
    fn exact(&self) -> bool {
        self.problems.is_empty() && self.init_offers == self.due
    }
}

/// A joined socket of a joins round and what it was told, before and after its `join-ok`.
struct Member {
    c: Client,
    room: String,
    before: Vec<(String, String)>,
    after: Vec<(String, String)>,
}

async fn joins_round(server: &Server, k: usize, tag: &str) -> JoinRound {
    let addr = server.addr;
    let sem = Arc::new(Semaphore::new(HANDSHAKE_CONCURRENCY));
    let counter = SyscallCounter::start(server.pid).await;
    let cpu0 = server.cpu_ticks();
    let start = Instant::now();
    let handles: Vec<_> = (0..k)
        .map(|i| {
            let sem = sem.clone();
            let room = format!("{tag}-{}", i / ROOM_SIZE);
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                let r = connect_and_join(addr, i, room.clone()).await;
                (r.map(|(c, before)| (c, room, before)), Instant::now())
            })
        })
        .collect();
    let mut members = Vec::with_capacity(k);
    let (mut failed, mut first_err, mut last) = (0, None, start);
    for h in handles {
        match h.await {
            Ok((Ok((c, room, before)), t)) => {
                members.push(Member {
                    c,
                    room,
                    before,
                    after: Vec::new(),
                });
                last = last.max(t);
            }
            Ok((Err(e), _)) => {
                failed += 1;
                first_err.get_or_insert(e);
            }
            Err(e) => {
                failed += 1;
                first_err.get_or_insert(format!("task: {e}"));
            }
        }
    }
    let cpu1 = server.cpu_ticks();
    let syscalls = match counter {
        Some(c) => c.stop().await,
        None => None,
    };
    let ok = members.len();
    let (members, mut fanout) = collect_fanout(members).await;
    if failed > 0 {
        fanout
            .problems
            .push(format!("{failed} of {k} sockets not joined"));
    }
    verify_fanout(&members, &mut fanout);
    let round = JoinRound {
        cpu_s: cpu0
            .zip(cpu1)
            .map(|(a, b)| (b - a) as f64 / clock_ticks() as f64),
        syscalls,
        ok,
        failed,
        secs: (last - start).as_secs_f64(),
        first_err,
        fanout,
    };
    close_all(members.into_iter().map(|m| m.c).collect()).await;
    // Let the server process the disconnects before the next round.
    sleep(Duration::from_millis(300)).await;
    round
}

/// Two markers per socket (outside the measured interval): once every socket has its first
/// reply, every join's fan-out has been handled; whatever it sent a socket is in that socket's
/// stream before the reply to its second marker.
async fn collect_fanout(members: Vec<Member>) -> (Vec<Member>, FanOut) {
    let n = members.len();
    let (go_tx, go_rx) = watch::channel(false);
    let (marked_tx, mut marked_rx) = tokio::sync::mpsc::channel::<()>(n.max(1));
    let handles: Vec<_> = members
        .into_iter()
        .map(|mut m| {
            let mut go = go_rx.clone();
            let marked_tx = marked_tx.clone();
            tokio::spawn(async move {
                let r = timeout(SOCKET_TIMEOUT, async {
                    m.c.marker(&m.room, &mut m.after).await?;
                    let _ = marked_tx.send(()).await;
                    loop {
                        tokio::select! {
                            r = go.wait_for(|g| *g) => { r.ctx("go")?; break; }
                            t = m.c.next_event() => {
                                let t = t?;
                                if let Some((name, args)) = parse_event(&t) {
                                    let id = event_id(&args);
                                    m.after.push((name, id));
                                }
                            }
                        }
                    }
                    m.c.marker(&m.room, &mut m.after).await
                })
                .await
                .unwrap_or_else(|_| Err("fan-out markers timed out".into()));
                (m, r)
            })
        })
        .collect();
    drop(marked_tx);
    // Bounded by the per-socket timeouts above: every task ends (and drops its sender).
    let mut reached = 0;
    while reached < n && marked_rx.recv().await.is_some() {
        reached += 1;
    }
    let _ = go_tx.send(true);
    let mut fanout = FanOut::default();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        match h.await {
            Ok((m, Ok(()))) => out.push(m),
            Ok((m, Err(e))) => {
                fanout
                    .problems
                    .push(format!("{}: fan-out check failed: {e}", m.c.sid));
                out.push(m);
            }
            Err(e) => fanout.problems.push(format!("fan-out task: {e}")),
        }
    }
    (out, fanout)
}

fn verify_fanout(members: &[Member], f: &mut FanOut) {
    let mut rooms: std::collections::HashMap<&str, Vec<&Member>> = Default::default();
    for m in members {
        rooms.entry(&m.room).or_default().push(m);
    }
    let ids = |evs: &[(String, String)], name: &str| -> Vec<String> {
        let mut v: Vec<String> = evs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, id)| id.clone())
            .collect();
        v.sort();
        v
    };
    for (room, ms) in rooms {
        let backfill: std::collections::HashMap<&str, Vec<String>> = ms
            .iter()
            .map(|m| (m.c.sid.as_str(), ids(&m.before, "user-connected")))
            .collect();
        for (i, x) in ms.iter().enumerate() {
            if x.before.iter().any(|(n, _)| n != "user-connected") {
                f.problems.push(format!(
                    "{room}: {} got {:?} before join-ok",
                    x.c.sid, x.before
                ));
            }
            for y in &ms[i + 1..] {
                let a = backfill[y.c.sid.as_str()]
                    .iter()
                    .filter(|id| **id == x.c.sid)
                    .count();
                let b = backfill[x.c.sid.as_str()]
                    .iter()
                    .filter(|id| **id == y.c.sid)
                    .count();
                if a + b != 1 {
                    f.problems.push(format!(
                        "{room}: {} and {} listed each other {a}/{b} times in their backfills",
                        x.c.sid, y.c.sid
                    ));
                }
            }
            let mut due: Vec<String> = ms
                .iter()
                .filter(|y| backfill[y.c.sid.as_str()].contains(&x.c.sid))
                .map(|y| y.c.sid.clone())
                .collect();
            due.sort();
            f.due += due.len();
            for name in ["user-connected", "#rtcio:init-offer"] {
                let got = ids(&x.after, name);
                if name == "#rtcio:init-offer" {
                    f.init_offers += got.len();
                }
                if got != due {
                    f.problems.push(format!(
                        "{room}: {} got {name} from {got:?}, due {due:?}",
                        x.c.sid
                    ));
                }
            }
            if let Some(other) = x
                .after
                .iter()
                .find(|(n, _)| n != "user-connected" && n != "#rtcio:init-offer")
            {
                f.problems
                    .push(format!("{room}: {} also got {other:?}", x.c.sid));
            }
        }
    }
    // Whole rooms of ROOM_SIZE: the count every correct run has.
    let full = members.len() / ROOM_SIZE * (ROOM_SIZE * (ROOM_SIZE - 1) / 2);
    if f.due != full {
        f.problems.push(format!(
            "{} init-offers due by the backfills, {full} for full rooms",
            f.due
        ));
    }
}

// ---- phase 2: relay throughput and latency ----------------------------------------------------

#[derive(Default)]
struct RelayStats {
    pairs: usize,
    sent: u64,
    received: u64,
    secs: f64,
    lat_sorted: Vec<u64>,
    server_cpu_s: Option<f64>,
    /// `LOAD_SYSCALLS=1`, single-process runs: the server's syscalls over the measured interval.
    syscalls: Option<SyscallCounts>,
    first_err: Option<String>,
    /// Pairs that lost messages: "a → b: got of sent received".
    short_pairs: Vec<String>,
}

struct Pair {
    a: Client,
    b: Client,
    /// a's peer (learned from `user-connected`): the target of a's messages.
    a_peer: String,
}

/// Bounds one step of a setup sequence and names it in the error.
async fn step<T>(what: String, fut: impl std::future::Future<Output = R<T>>) -> R<T> {
    timeout(SOCKET_TIMEOUT / 2, fut)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
        .map_err(|e| format!("{what}: {e}"))
}

async fn setup_pair((a_addr, b_addr): (SocketAddr, SocketAddr), i: usize, tag: &str) -> R<Pair> {
    let room = format!("{tag}-{i}");
    let mut a = step(
        format!("pair {i}: connect a"),
        Client::connect(a_addr, src_ip(2 * i)),
    )
    .await?;
    let mut b = step(
        format!("pair {i}: connect b"),
        Client::connect(b_addr, src_ip(2 * i + 1)),
    )
    .await?;
    let ids = format!("a = {}, b = {}, room {room}", a.sid, b.sid);
    step(format!("pair {i}: a joins ({ids})"), a.join(&room, "a")).await?;
    let b_seen: Vec<String> = step(format!("pair {i}: b joins ({ids})"), b.join(&room, "b"))
        .await?
        .into_iter()
        .filter(|(name, _)| name == "user-connected")
        .map(|(_, id)| id)
        .collect();
    if b_seen != [a.sid.clone()] {
        return Err(format!(
            "pair {i}: b's backfill {b_seen:?} is not [a] ({ids})"
        ));
    }
    let a_peer = step(
        format!("pair {i}: a waits for user-connected of b ({ids})"),
        a.next_user_connected(),
    )
    .await?;
    if a_peer != b.sid {
        return Err(format!("pair {i}: a saw user-connected {a_peer} ({ids})"));
    }
    Ok(Pair { a, b, a_peer })
}

struct PairState {
    sem: Semaphore,
    sent: AtomicU64,
    sender_done: AtomicBool,
}

/// Sends `quota` messages from `c` to `target`, at most the pair's window unacknowledged.
async fn run_sender(
    mut c: Client,
    target: String,
    st: Arc<PairState>,
    quota: u64,
    deadline: tokio::time::Instant,
) -> R<Client> {
    let prefix = format!(
        "42[\"#rtcio:message\",{{\"source\":\"{}\",\"target\":\"{}\",\"data\":{{\"candidate\":{{\"candidate\":\"{CANDIDATE}\",\"sdpMid\":\"0\",\"sdpMLineIndex\":0}},\"t\":",
        c.sid, target
    );
    let mut sent = 0u64;
    let result = async {
        loop {
            if sent >= quota || tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            let mut batch = 0;
            while sent < quota {
                let Ok(p) = st.sem.try_acquire() else { break };
                p.forget();
                c.ws.feed(Message::text(format!("{prefix}{}}}}}]", now_ns())))
                    .await
                    .ctx("send")?;
                sent += 1;
                batch += 1;
            }
            if batch > 0 {
                c.ws.flush().await.ctx("flush")?;
                st.sent.store(sent, Ordering::Release);
            }
            tokio::select! {
                p = st.sem.acquire(), if sent < quota => drop(p),
                frame = c.ws.next() => { on_frame(&mut c.ws, frame).await?; }
                _ = sleep_until(deadline) => return Ok(()),
            }
        }
    }
    .await;
    st.sent.store(sent, Ordering::Release);
    st.sender_done.store(true, Ordering::Release);
    result.map(|()| c)
}

struct RecvOut {
    client: R<Client>,
    got: u64,
    last_ns: u64,
    lat: Vec<u64>,
}

async fn run_receiver(
    mut c: Client,
    st: Arc<PairState>,
    quota: u64,
    hard: tokio::time::Instant,
) -> RecvOut {
    let mut lat = Vec::with_capacity(quota as usize);
    let (mut got, mut last_ns) = (0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let r = async {
        loop {
            if got >= quota {
                return Ok(());
            }
            tokio::select! {
                frame = c.ws.next() => {
                    if let Some(t) = on_frame(&mut c.ws, frame).await?
                        && let Some(stamp) = relay_stamp(&t)
                    {
                        let now = now_ns();
                        lat.push(now.saturating_sub(stamp));
                        last_ns = now;
                        got += 1;
                        st.sem.add_permits(1);
                    }
                }
                _ = tick.tick() => {
                    if st.sender_done.load(Ordering::Acquire) && got >= st.sent.load(Ordering::Acquire) {
                        return Ok(());
                    }
                }
                _ = sleep_until(hard) => return Ok(()),
            }
        }
    }
    .await;
    RecvOut {
        client: r.map(|()| c),
        got,
        last_ns,
        lat,
    }
}

/// Where the two sockets of a relay pair connect.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Both on process `i mod P` (pair `i`).
    Same,
    /// On processes `i mod P` and `i + 1 mod P`.
    Cross,
}

#[allow(clippy::too_many_arguments)]
async fn relay_run(
    cluster: &Cluster,
    placement: Placement,
    tag: &str,
    n_pairs: usize,
    window: usize,
    total: u64,
    max: Duration,
) -> RelayStats {
    let mut stats = RelayStats::default();
    // Set up the pairs, a bounded number at a time.
    let sem = Arc::new(Semaphore::new(HANDSHAKE_CONCURRENCY / 2));
    let handles: Vec<_> = (0..n_pairs)
        .map(|i| {
            let sem = sem.clone();
            let tag = tag.to_string();
            let a_addr = cluster.addr(i);
            let b_addr = cluster.addr(i + usize::from(placement == Placement::Cross));
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                timeout(SOCKET_TIMEOUT, setup_pair((a_addr, b_addr), i, &tag))
                    .await
                    .unwrap_or_else(|_| Err("pair setup timed out".into()))
            })
        })
        .collect();
    let mut pairs = Vec::new();
    for h in handles {
        match h.await {
            Ok(Ok(p)) => pairs.push(p),
            Ok(Err(e)) => {
                stats.first_err.get_or_insert(e);
            }
            Err(e) => {
                stats.first_err.get_or_insert(format!("task: {e}"));
            }
        }
    }
    stats.pairs = pairs.len();
    if pairs.is_empty() {
        return stats;
    }
    let quota = total / pairs.len() as u64;
    let counter = match &cluster.servers[..] {
        [one] => SyscallCounter::start(one.pid).await,
        _ => None,
    };
    let cpu0 = cluster.cpu_ticks();
    let start = tokio::time::Instant::now();
    let start_ns = now_ns();
    let deadline = start + max;
    let hard = deadline + RELAY_GRACE;
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut states = Vec::new();
    for p in pairs {
        let st = Arc::new(PairState {
            sem: Semaphore::new(window),
            sent: AtomicU64::new(0),
            sender_done: AtomicBool::new(false),
        });
        states.push((st.clone(), format!("{} → {}", p.a.sid, p.b.sid)));
        receivers.push(tokio::spawn(run_receiver(p.b, st.clone(), quota, hard)));
        senders.push(tokio::spawn(run_sender(p.a, p.a_peer, st, quota, deadline)));
    }
    let mut clients = Vec::new();
    for h in senders {
        match h.await {
            Ok(Ok(c)) => clients.push(c),
            Ok(Err(e)) => {
                stats.first_err.get_or_insert(format!("sender: {e}"));
            }
            Err(e) => {
                stats.first_err.get_or_insert(format!("sender task: {e}"));
            }
        }
    }
    let mut last_ns = start_ns;
    for (h, (st, ids)) in receivers.into_iter().zip(&states) {
        match h.await {
            Ok(out) => {
                let sent = st.sent.load(Ordering::Acquire);
                if out.got < sent {
                    stats
                        .short_pairs
                        .push(format!("{ids}: {} of {sent} received", out.got));
                }
                stats.received += out.got;
                last_ns = last_ns.max(out.last_ns);
                stats.lat_sorted.extend_from_slice(&out.lat);
                match out.client {
                    Ok(c) => clients.push(c),
                    Err(e) => {
                        stats.first_err.get_or_insert(format!("receiver: {e}"));
                    }
                }
            }
            Err(e) => {
                stats.first_err.get_or_insert(format!("receiver task: {e}"));
            }
        }
    }
    let cpu1 = cluster.cpu_ticks();
    if let Some(c) = counter {
        stats.syscalls = c.stop().await;
    }
    stats.sent = states
        .iter()
        .map(|(s, _)| s.sent.load(Ordering::Acquire))
        .sum();
    stats.secs = (last_ns - start_ns) as f64 / 1e9;
    stats.lat_sorted.sort_unstable();
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        stats.server_cpu_s = Some((b - a) as f64 / clock_ticks() as f64);
    }
    close_all(clients).await;
    sleep(Duration::from_millis(300)).await;
    stats
}

fn clock_ticks() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

// ---- phase 3: RSS per idle socket -------------------------------------------------------------

struct RssStep {
    n: usize,
    connected: usize,
    before_kib: u64,
    after_kib: u64,
}

impl RssStep {
    fn per_socket_kib(&self) -> Option<f64> {
        (self.connected > 0)
            .then(|| (self.after_kib as f64 - self.before_kib as f64) / self.connected as f64)
    }
}

async fn rss_step(kind: Kind, root: &Path, n: usize) -> R<RssStep> {
    let server = Server::start(kind, root).await?;
    let addr = server.addr;
    sleep(Duration::from_millis(500)).await;
    let before_kib = server.rss_kib()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let joined = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new(AtomicUsize::new(0));
    let first_err: Arc<Mutex<Option<String>>> = Arc::default();
    let sem = Arc::new(Semaphore::new(HANDSHAKE_CONCURRENCY));
    let tag = format!("rss-{}-{n}", kind.label());
    let started = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (sem, joined, failed, lost, first_err) =
                (sem.clone(), joined.clone(), failed.clone(), lost.clone(), first_err.clone());
            let mut stop = stop_rx.clone();
            let room = format!("{tag}-{}", i / ROOM_SIZE);
            tokio::spawn(async move {
                let permit = sem.acquire_owned().await;
                let r = tokio::select! {
                    r = connect_and_join(addr, i, room) => r,
                    _ = stop.changed() => return,
                };
                drop(permit);
                let mut c = match r {
                    Ok((c, _)) => c,
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_err.lock().unwrap().get_or_insert(e);
                        return;
                    }
                };
                joined.fetch_add(1, Ordering::Relaxed);
                // Idle: only answer pings (and swallow later members' announcements).
                loop {
                    tokio::select! {
                        _ = stop.changed() => break,
                        frame = c.ws.next() => {
                            if let Err(e) = on_frame(&mut c.ws, frame).await {
                                lost.fetch_add(1, Ordering::Relaxed);
                                first_err.lock().unwrap().get_or_insert(format!("idle socket lost: {e}"));
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let connect_deadline = Instant::now() + RSS_CONNECT_MAX;
    let mut last_report = Instant::now();
    while joined.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < n
        && Instant::now() < connect_deadline
    {
        sleep(Duration::from_millis(50)).await;
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!("    … {} / {n} joined", joined.load(Ordering::Relaxed));
            last_report = Instant::now();
        }
    }
    let connect_secs = started.elapsed().as_secs_f64();
    sleep(RSS_SETTLE).await;
    let after_kib = server.rss_kib();
    let connected = joined.load(Ordering::Relaxed) - lost.load(Ordering::Relaxed);
    let failed_n = failed.load(Ordering::Relaxed);
    let lost_n = lost.load(Ordering::Relaxed);
    eprintln!(
        "    {} sockets joined in {connect_secs:.1} s ({failed_n} failed, {lost_n} lost while idle)",
        joined.load(Ordering::Relaxed)
    );
    if failed_n + lost_n > 0 || connected < n {
        note(format!(
            "{} RSS@{n}: {connected}/{n} idle sockets connected ({failed_n} failed, {lost_n} lost); first error: {}",
            kind.label(),
            first_err.lock().unwrap().clone().unwrap_or_default()
        ));
    }
    let _ = stop_tx.send(true);
    for h in handles {
        let _ = timeout(Duration::from_secs(5), h).await;
    }
    server.stop(&format!("RSS@{n}")).await;
    Ok(RssStep {
        n,
        connected,
        before_kib,
        after_kib: after_kib?,
    })
}

// ---- phase 5: the exact join phase at 1 k / 10 k / 50 k sockets, two clients, repeats ---------

/// Sockets one process holds at most, server or generator: the hard descriptor limit is 20 000
/// per process on the dev box and cannot be raised there (no `CAP_SYS_RESOURCE`).
const PER_PROCESS: usize = 16_000;
/// Default socket counts of the scale phase (`LOAD_SIZES`).
const SIZES: [usize; 3] = [1_000, 10_000, 50_000];
/// The size `LOAD_REPEAT` repeats.
const REPEAT_SIZE: usize = 10_000;

/// Bound on one scale run (generators are killed after it): start-up, joins, checks, leaves.
fn scale_run_limit(n: usize) -> Duration {
    Duration::from_secs(60 + n as u64 / 250)
}

/// The load generator of the scale phase.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ClientKind {
    /// `tests/exact_joins/mod.rs`: raw Engine.IO over tokio-tungstenite (this bench re-run as a
    /// generator process).
    Rust,
    /// `tests/node/load-joins.mjs`: socket.io-client 4.8, what browsers run.
    Node,
}

impl ClientKind {
    fn label(self) -> &'static str {
        match self {
            ClientKind::Rust => "Rust (raw Engine.IO)",
            ClientKind::Node => "Node socket.io-client",
        }
    }
}

/// One scale run: `n` sockets of one client kind against one server kind.
struct ScaleRun {
    n: usize,
    client: ClientKind,
    server: Kind,
    /// Why it did not run (then nothing else is set).
    skipped: Option<String>,
    servers: usize,
    redis: bool,
    generators: usize,
    /// The generators' outcomes, summed.
    outcome: Option<exact_joins::Outcome>,
    /// Generator processes that gave no result (timed out, crashed), or a set-up failure.
    errors: Vec<String>,
    /// CPU of every server process (and Redis) over the whole run.
    cpu_s: Option<f64>,
}

impl ScaleRun {
    fn exact(&self) -> bool {
        self.skipped.is_none()
            && self.errors.is_empty()
            && self
                .outcome
                .as_ref()
                .is_some_and(|o| o.sockets == self.n && o.exact())
    }

    fn what(&self) -> String {
        format!(
            "{} sockets, {} → {}",
            fmt_num(self.n as f64),
            self.client.label(),
            server_name(self.server)
        )
    }

    fn processes(&self) -> String {
        if self.skipped.is_some() {
            return "—".into();
        }
        format!(
            "{} server{} / {} generator{}",
            self.servers,
            if self.redis { " + Redis" } else { "" },
            self.generators,
            if self.generators == 1 { "" } else { "s" }
        )
    }

    /// The verdict cell: exact, FAILURE (with the counts), or why it did not run.
    fn verdict(&self) -> String {
        if let Some(why) = &self.skipped {
            return why.clone();
        }
        let counts = self
            .outcome
            .as_ref()
            .map_or_else(|| "no counts".to_string(), |o| o.counts());
        if self.exact() {
            "exact".into()
        } else if self.errors.is_empty() {
            format!("**FAILURE**: {counts}")
        } else {
            format!(
                "**FAILURE**: {counts}; {} generator error(s)",
                self.errors.len()
            )
        }
    }
}

fn server_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Ours => "ours",
        Kind::Node => "Node (socket.io 4.8)",
    }
}

/// The generator processes of a run: `gens` processes with whole rooms each, the 64
/// handshakes in flight split among them.
fn generator_split(n: usize, gens: usize) -> Vec<usize> {
    let rooms = n.div_ceil(exact_joins::ROOM_SIZE);
    let per = rooms.div_ceil(gens) * exact_joins::ROOM_SIZE;
    (0..gens)
        .map(|k| n.saturating_sub(k * per).min(per))
        .filter(|&c| c > 0)
        .collect()
}

/// Starts one generator process for `n` sockets; its stdout's last line is its outcome.
fn spawn_generator(
    client: ClientKind,
    root: &Path,
    addrs: &[SocketAddr],
    n: usize,
    tag: &str,
    in_flight: usize,
    limit: Duration,
) -> R<Child> {
    // The generator stops itself a little before the bench kills it, so its counts arrive.
    let own = limit
        .saturating_sub(Duration::from_secs(10))
        .max(Duration::from_secs(10));
    let addr_list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    let mut cmd = match client {
        ClientKind::Rust => {
            let mut c = Command::new(std::env::current_exe().ctx("bench path")?);
            c.arg("--bench").env(
                "LOAD_GENERATOR",
                format!(
                    "{};{n};{tag};{in_flight};{};{}",
                    addr_list.join(","),
                    own.as_secs(),
                    u8::from(leave_burst())
                ),
            );
            c
        }
        ClientKind::Node => {
            let urls: Vec<String> = addr_list.iter().map(|a| format!("http://{a}")).collect();
            let mut c = Command::new("node");
            c.arg(root.join("tests/node/load-joins.mjs")).args([
                urls.join(","),
                n.to_string(),
                own.as_secs().to_string(),
                in_flight.to_string(),
                tag.to_string(),
                u8::from(leave_burst()).to_string(),
            ]);
            c
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .ctx("spawn generator")
}

async fn scale_run(root: &Path, client: ClientKind, server: Kind, n: usize, tag: &str) -> ScaleRun {
    let servers = n.div_ceil(PER_PROCESS);
    let mut run = ScaleRun {
        n,
        client,
        server,
        skipped: None,
        servers,
        redis: servers > 1,
        generators: 0,
        outcome: None,
        errors: Vec::new(),
        cpu_s: None,
    };
    if server == Kind::Node && servers > 1 {
        run.skipped = Some(format!(
            "n/a (fd limit, single process: {} sockets need {servers} processes; the reference room \
             logic reads membership from socket.io's local adapter)",
            fmt_num(n as f64)
        ));
        return run;
    }
    let cluster = match server {
        Kind::Ours => Cluster::ours(root, servers, false).await,
        Kind::Node => Server::start(Kind::Node, root).await.map(Cluster::single),
    };
    let cluster = match cluster {
        Ok(c) => c,
        Err(e) => {
            run.errors.push(format!("server start: {e}"));
            return run;
        }
    };
    let limit = scale_run_limit(n);
    let split = generator_split(n, n.div_ceil(PER_PROCESS));
    run.generators = split.len();
    let in_flight = (exact_joins::IN_FLIGHT / split.len()).max(1);
    let addrs = cluster.addrs();
    let cpu0 = cluster.cpu_ticks();
    let deadline = tokio::time::Instant::now() + limit;
    let mut children = Vec::new();
    for (k, &count) in split.iter().enumerate() {
        match spawn_generator(
            client,
            root,
            &addrs,
            count,
            &format!("{tag}g{k}"),
            in_flight,
            limit,
        ) {
            Ok(c) => children.push((k, c)),
            Err(e) => run.errors.push(format!("generator {k}: {e}")),
        }
    }
    let waits: Vec<_> = children
        .into_iter()
        .map(|(k, child)| {
            tokio::spawn(async move {
                (
                    k,
                    tokio::time::timeout_at(deadline, child.wait_with_output()).await,
                )
            })
        })
        .collect();
    let mut parts = Vec::new();
    for w in waits {
        let Ok((k, out)) = w.await else {
            run.errors.push("generator task panicked".into());
            continue;
        };
        match out {
            Err(_) => run.errors.push(format!(
                "generator {k}: no result within {} s (killed)",
                limit.as_secs()
            )),
            Ok(Err(e)) => run.errors.push(format!("generator {k}: {e}")),
            Ok(Ok(out)) => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                match stdout
                    .lines()
                    .rev()
                    .find_map(exact_joins::Outcome::from_json)
                {
                    Some(o) => parts.push(o),
                    None => {
                        let stderr = String::from_utf8_lossy(&out.stderr);
                        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
                        run.errors.push(format!(
                            "generator {k} ({}): no counts; stderr ends {tail:?}",
                            out.status
                        ));
                    }
                }
            }
        }
    }
    let cpu1 = cluster.cpu_ticks();
    run.cpu_s = cpu0
        .zip(cpu1)
        .map(|(a, b)| (b - a) as f64 / clock_ticks() as f64);
    if !parts.is_empty() {
        run.outcome = Some(exact_joins::Outcome::merge(&parts));
    }
    cluster
        .stop(&format!(
            "{} sockets ({} client)",
            fmt_num(n as f64),
            client.label()
        ))
        .await;
    // Let TIME_WAIT and the kernel's socket memory settle a little between big runs.
    sleep(Duration::from_millis(500)).await;
    run
}

/// Progress line and notes for one scale run; a run that is not exact fails the bench.
fn check_scale(run: &ScaleRun) {
    let what = run.what();
    if let Some(why) = &run.skipped {
        eprintln!("   {what}: {why}");
        return;
    }
    let secs = run.outcome.as_ref().map_or(0.0, |o| o.secs);
    eprintln!(
        "   {what}: {} in {secs:.1} s ({})",
        run.verdict(),
        run.processes()
    );
    if !run.exact() {
        let mut detail: Vec<String> = run.errors.clone();
        if let Some(o) = &run.outcome {
            detail.extend(o.problems.iter().take(3).cloned());
        }
        inexact(format!("{what}: {}; {}", run.verdict(), detail.join("; ")));
    }
}

/// `n` sockets in `runs` runs for each client and server: (client, server, exact runs, runs).
type RepeatResult = (ClientKind, Kind, usize, usize);

fn print_scale_table(runs: &[ScaleRun], repeats: &[RepeatResult], repeat_n: usize) {
    if runs.is_empty() && repeats.is_empty() {
        return;
    }
    println!();
    println!(
        "Join phase at scale: rooms of {}, at most {} connect + join handshakes in flight over all \
         generator processes; every join-ok, user-connected, #rtcio:init-offer, then (the last \
         member of each room leaves) #rtcio:peer-left and user-disconnected counted exactly.",
        exact_joins::ROOM_SIZE,
        exact_joins::IN_FLIGHT
    );
    println!();
    println!(
        "| sockets | client | server | processes | verdict | join-ok | user-connected | init-offer | peer-left | user-disconnected | joins/s ↑ | server CPU per socket, whole run (µs) ↓ | run (s) |"
    );
    println!("|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let o = r.outcome.as_ref();
        let jd = exact_joins::Outcome::join_due(r.n);
        let ld = exact_joins::Outcome::leave_due(r.n);
        let c = |f: &dyn Fn(&exact_joins::Outcome) -> usize, due: usize| {
            o.map_or_else(|| "—".into(), |o| format!("{} / {}", f(o), due))
        };
        let rate = o
            .filter(|o| o.join_secs > 0.0)
            .map_or_else(|| "—".into(), |o| fmt_num(o.joined as f64 / o.join_secs));
        let cpu = r
            .cpu_s
            .filter(|_| r.n > 0 && o.is_some())
            .map_or_else(|| "—".into(), |c| fmt_num(c * 1e6 / r.n as f64));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {rate} | {cpu} | {} |",
            fmt_num(r.n as f64),
            r.client.label(),
            server_name(r.server),
            r.processes(),
            r.verdict(),
            c(&|o| o.joined, r.n),
            c(&|o| o.user_connected, jd),
            c(&|o| o.init_offers, jd),
            c(&|o| o.peer_left, ld),
            c(&|o| o.user_disconnected, ld),
            o.map_or_else(|| "—".into(), |o| format!("{:.1}", o.secs)),
        );
    }
    if !repeats.is_empty() {
        println!();
        println!(
            "Repeats (`LOAD_REPEAT={repeat_n}`), {} sockets each, fresh server per run:",
            fmt_num(REPEAT_SIZE as f64)
        );
        println!();
        println!("| client | server | verdict |");
        println!("|---|---|---|");
        for (client, server, exact, runs) in repeats {
            println!(
                "| {} | {} | exact {exact}/{runs} |",
                client.label(),
                server_name(*server)
            );
        }
    }
}

// ---- phase 6: relay throughput with 1, 2 and 4 processes behind Redis ------------------------

/// Processes behind Redis and pair placement of the scale-out runs.
const SCALEOUT: [(usize, Placement); 5] = [
    (1, Placement::Same),
    (2, Placement::Same),
    (2, Placement::Cross),
    (4, Placement::Same),
    (4, Placement::Cross),
];

struct ScaleoutRow {
    processes: usize,
    placement: Placement,
    stats: RelayStats,
}

async fn scaleout(root: &Path) -> Vec<ScaleoutRow> {
    let mut rows = Vec::new();
    for (processes, placement) in SCALEOUT {
        let what = format!(
            "ours, {processes} process(es) behind Redis, pairs {}",
            match placement {
                Placement::Same => "on one process",
                Placement::Cross => "across processes",
            }
        );
        eprintln!("== relay scale-out: {what}");
        let cluster = match Cluster::ours(root, processes, true).await {
            Ok(c) => c,
            Err(e) => {
                note(format!("relay scale-out, {what}: start failed: {e}"));
                continue;
            }
        };
        let tag = format!("so{processes}{}", placement == Placement::Cross);
        let w = relay_run(
            &cluster,
            placement,
            &format!("{tag}w"),
            RELAY_PAIRS,
            RELAY_WINDOW,
            RELAY_WARMUP_TOTAL,
            RELAY_WARMUP_MAX,
        )
        .await;
        check_relay(
            "ours",
            &format!("relay scale-out warm-up, {what}"),
            RELAY_PAIRS,
            &w,
        );
        let s = relay_run(
            &cluster,
            placement,
            &tag,
            RELAY_PAIRS,
            RELAY_WINDOW,
            RELAY_TOTAL,
            RELAY_MAX,
        )
        .await;
        check_relay("ours", &format!("relay scale-out, {what}"), RELAY_PAIRS, &s);
        cluster.stop(&format!("relay scale-out, {what}")).await;
        rows.push(ScaleoutRow {
            processes,
            placement,
            stats: s,
        });
    }
    rows
}

fn print_scaleout_table(rows: &[ScaleoutRow]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "Relay scale-out (ours): {RELAY_PAIRS} pairs, window {RELAY_WINDOW}, {} messages or {} s, every \
         process started with `--redis` (the 1-process row too); CPU = all server processes + \
         redis-server.",
        fmt_num(RELAY_TOTAL as f64),
        RELAY_MAX.as_secs()
    );
    println!();
    println!(
        "| processes behind Redis | pair sockets | delivered / sent | relayed #rtcio:message/s ↑ | CPU per message (µs) ↓ | p50 (ms) ↓ | p99 (ms) ↓ |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|");
    let base = rows
        .iter()
        .find(|r| r.processes == 1)
        .filter(|r| r.stats.received > 0)
        .map(|r| r.stats.received as f64 / r.stats.secs.max(1e-9));
    for r in rows {
        let s = &r.stats;
        let rate = (s.received > 0).then(|| s.received as f64 / s.secs.max(1e-9));
        let rate_cell = match (rate, base) {
            (Some(v), Some(b)) if r.processes > 1 => format!("{} ({:.2}×)", fmt_num(v), v / b),
            (Some(v), _) => fmt_num(v),
            _ => "n/a".into(),
        };
        let f2 = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |v| format!("{v:.2}"));
        println!(
            "| {} | {} | {} / {} | {rate_cell} | {} | {} | {} |",
            r.processes,
            match r.placement {
                Placement::Same => "same process",
                Placement::Cross => "different processes",
            },
            s.received,
            s.sent,
            s.server_cpu_s.filter(|_| s.received > 0).map_or_else(
                || "n/a".into(),
                |c| format!("{:.1}", c * 1e6 / s.received as f64)
            ),
            f2(ms(percentile(&s.lat_sorted, 50.0))),
            f2(ms(percentile(&s.lat_sorted, 99.0))),
        );
    }
}

/// `LOAD_LEAVE_BURST=1`: the last members of all rooms leave at once instead of at most as many
/// rooms at a time as joins are in flight.
fn leave_burst() -> bool {
    std::env::var("LOAD_LEAVE_BURST").is_ok_and(|v| v.trim() == "1")
}

/// Generator-process mode (`LOAD_GENERATOR=addrs;n;tag;in_flight;limit_s;burst`): runs the exact join
/// phase and prints its outcome as one JSON line.
fn generator_main(spec: &str) -> i32 {
    let f: Vec<&str> = spec.split(';').collect();
    let parsed = (|| {
        let addrs: Vec<SocketAddr> = f
            .first()?
            .split(',')
            .map(|a| a.parse().ok())
            .collect::<Option<_>>()?;
        Some((
            addrs,
            f.get(1)?.parse::<usize>().ok()?,
            f.get(2)?.to_string(),
            f.get(3)?.parse::<usize>().ok()?,
            f.get(4)?.parse::<u64>().ok()?,
            f.get(5)? == &"1",
        ))
    })();
    let Some((addrs, n, tag, in_flight, limit_s, burst)) = parsed else {
        eprintln!("load generator: bad LOAD_GENERATOR {spec:?}");
        return 2;
    };
    if addrs.is_empty() {
        return 2;
    }
    exact_joins::raise_nofile((n + 512) as u64);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("load generator: runtime: {e}");
            return 2;
        }
    };
    let limits = exact_joins::Limits {
        in_flight,
        phase_guard: Duration::from_secs(limit_s / 2),
        leave_rooms_in_flight: if burst { 0 } else { in_flight },
    };
    let outcome = rt.block_on(async {
        timeout(
            Duration::from_secs(limit_s),
            exact_joins::run_clients(&addrs, n, &tag, limits),
        )
        .await
    });
    let code = match outcome {
        Ok(o) => {
            println!("{}", o.to_json());
            i32::from(!o.exact())
        }
        Err(_) => {
            eprintln!("load generator: no outcome within {limit_s} s");
            1
        }
    };
    rt.shutdown_timeout(Duration::from_secs(2));
    code
}

// ---- driver -----------------------------------------------------------------------------------

#[derive(Default)]
struct Results {
    joins_per_s: Option<f64>,
    join_cpu_us: Option<f64>,
    relay_per_s: Option<f64>,
    relay_p50_ms: Option<f64>,
    relay_p99_ms: Option<f64>,
    relay_max_ms: Option<f64>,
    relay_delivered: Option<(u64, u64)>,
    /// Over every joins round (warm-up included): exact rounds, rounds, init-offers got, due.
    join_fanout: Option<(usize, usize, usize, usize)>,
    relay_cpu_us_per_msg: Option<f64>,
    /// `LOAD_SYSCALLS=1`: syscalls over the measured joins rounds, and the sockets joined.
    join_syscalls: Option<(SyscallCounts, usize)>,
    /// `LOAD_SYSCALLS=1`: syscalls over the measured relay run, and the messages received.
    relay_syscalls: Option<(SyscallCounts, u64)>,
    low_p50_ms: Option<f64>,
    low_p99_ms: Option<f64>,
    rss: Vec<RssStep>,
}

fn ms(ns: Option<u64>) -> Option<f64> {
    ns.map(|v| v as f64 / 1e6)
}

/// Progress line and notes (errors, missing pairs, undelivered messages) for one relay run.
fn check_relay(who: &str, what: &str, pairs: usize, s: &RelayStats) {
    eprintln!(
        "   {} pairs, sent {}, received {} in {:.2} s; p50 {:.2?} ms, p99 {:.2?} ms; server CPU {:.2?} s",
        s.pairs,
        s.sent,
        s.received,
        s.secs,
        ms(percentile(&s.lat_sorted, 50.0)),
        ms(percentile(&s.lat_sorted, 99.0)),
        s.server_cpu_s
    );
    if let Some(e) = &s.first_err {
        note(format!("{who} {what}: {e}"));
    }
    if s.pairs < pairs {
        note(format!(
            "{who} {what}: only {}/{pairs} pairs set up",
            s.pairs
        ));
    }
    if s.received > s.sent {
        inexact(format!(
            "{who} {what}: {} messages received for {} sent (duplicates)",
            s.received, s.sent
        ));
    }
    if s.received < s.sent {
        inexact(format!(
            "{who} {what}: {} of {} messages never arrived (dropped, or later than {} s after the senders stopped) in {} pair(s), e.g. {}",
            s.sent - s.received,
            s.sent,
            RELAY_GRACE.as_secs(),
            s.short_pairs.len(),
            s.short_pairs
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
}

/// Records a joins round's fan-out verdict; anything but exact is a failure of the run.
fn check_fanout(who: &str, what: &str, round: &JoinRound, res: &mut Results) {
    let f = &round.fanout;
    let (mut exact, mut rounds, mut got, mut due) = res.join_fanout.unwrap_or_default();
    rounds += 1;
    exact += usize::from(f.exact());
    got += f.init_offers;
    due += f.due;
    res.join_fanout = Some((exact, rounds, got, due));
    eprintln!(
        "   fan-out: {} init-offers of {} due, {} problem(s)",
        f.init_offers,
        f.due,
        f.problems.len()
    );
    if !f.exact() {
        inexact(format!(
            "{who} {what}: {} init-offers for {} due, {} problem(s), e.g. {}",
            f.init_offers,
            f.due,
            f.problems.len(),
            f.problems
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
}

async fn bench_server(kind: Kind, root: &Path, res: &mut Results) -> R<()> {
    let who = kind.label();
    eprintln!("== {who}: starting server");
    let cluster = Cluster::single(Server::start(kind, root).await?);
    let server = &cluster.servers[0];
    eprintln!("   listening on {} (pid {})", server.addr, server.pid);

    eprintln!("== {who}: joins warm-up ({JOIN_WARMUP_SOCKETS} sockets)");
    let w = joins_round(server, JOIN_WARMUP_SOCKETS, &format!("jw-{who}")).await;
    check_fanout(who, "joins warm-up", &w, res);
    if w.failed > 0 {
        note(format!(
            "{who} joins warm-up: {} failed; first error: {}",
            w.failed,
            w.first_err.unwrap_or_default()
        ));
    }
    let mut rates = Vec::new();
    let (mut cpu_s, mut joined) = (Some(0.0), 0usize);
    for r in 0..JOIN_ROUNDS {
        let round = joins_round(server, JOIN_SOCKETS, &format!("j{r}-{who}")).await;
        check_fanout(who, &format!("joins round {}", r + 1), &round, res);
        cpu_s = cpu_s.zip(round.cpu_s).map(|(a, b)| a + b);
        joined += round.ok;
        if let Some(c) = &round.syscalls {
            let (sum, n) = res
                .join_syscalls
                .get_or_insert_with(|| (vec![0; SYSCALLS.len()], 0));
            sum.iter_mut().zip(c).for_each(|(a, b)| *a += b);
            *n += round.ok;
        }
        let rate = round.ok as f64 / round.secs.max(1e-9);
        eprintln!(
            "== {who}: joins round {}: {} ok, {} failed in {:.3} s → {rate:.0} joins/s",
            r + 1,
            round.ok,
            round.failed,
            round.secs
        );
        if round.failed > 0 {
            note(format!(
                "{who} joins round {}: {} of {JOIN_SOCKETS} failed; first error: {}",
                r + 1,
                round.failed,
                round.first_err.unwrap_or_default()
            ));
        }
        if round.ok > 0 {
            rates.push(rate);
        }
    }
    res.joins_per_s = median(&mut rates);
    res.join_cpu_us = cpu_s
        .filter(|_| joined > 0)
        .map(|c| c * 1e6 / joined as f64);

    eprintln!("== {who}: relay warm-up ({RELAY_WARMUP_TOTAL} messages)");
    let w = relay_run(
        &cluster,
        Placement::Same,
        &format!("rw-{who}"),
        RELAY_PAIRS,
        RELAY_WINDOW,
        RELAY_WARMUP_TOTAL,
        RELAY_WARMUP_MAX,
    )
    .await;
    check_relay(who, "relay warm-up", RELAY_PAIRS, &w);

    eprintln!(
        "== {who}: relay ({RELAY_PAIRS} pairs, window {RELAY_WINDOW}, {RELAY_TOTAL} messages or {} s)",
        RELAY_MAX.as_secs()
    );
    let s = relay_run(
        &cluster,
        Placement::Same,
        &format!("r-{who}"),
        RELAY_PAIRS,
        RELAY_WINDOW,
        RELAY_TOTAL,
        RELAY_MAX,
    )
    .await;
    check_relay(who, "relay", RELAY_PAIRS, &s);
    if s.received > 0 {
        res.relay_per_s = Some(s.received as f64 / s.secs.max(1e-9));
        res.relay_p50_ms = ms(percentile(&s.lat_sorted, 50.0));
        res.relay_p99_ms = ms(percentile(&s.lat_sorted, 99.0));
        res.relay_max_ms = ms(s.lat_sorted.last().copied());
        res.relay_cpu_us_per_msg = s.server_cpu_s.map(|c| c * 1e6 / s.received as f64);
        res.relay_syscalls = s.syscalls.clone().map(|c| (c, s.received));
    }
    res.relay_delivered = Some((s.received, s.sent));

    eprintln!(
        "== {who}: low-load relay latency ({LOWLOAD_PAIRS} pairs, window {LOWLOAD_WINDOW}, {LOWLOAD_TOTAL} messages)"
    );
    let l = relay_run(
        &cluster,
        Placement::Same,
        &format!("rl-{who}"),
        LOWLOAD_PAIRS,
        LOWLOAD_WINDOW,
        LOWLOAD_TOTAL,
        LOWLOAD_MAX,
    )
    .await;
    check_relay(who, "low-load relay", LOWLOAD_PAIRS, &l);
    if l.received > 0 {
        res.low_p50_ms = ms(percentile(&l.lat_sorted, 50.0));
        res.low_p99_ms = ms(percentile(&l.lat_sorted, 99.0));
    }
    cluster.stop("joins+relay").await;
    Ok(())
}

/// Raises the open-file limit for this bench and the servers it starts (they inherit it).
fn raise_nofile() {
    let before = exact_joins::nofile_limits().0;
    let now = exact_joins::raise_nofile(NOFILE);
    if now != before {
        eprintln!("open-file limit: {before} → {now} (soft; children inherit it)");
    }
    if now < NOFILE {
        eprintln!("open-file limit: {NOFILE} wanted, {now} allowed (the hard limit)");
    }
}

fn cmd_line(prog: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(prog).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn machine_facts() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = cmd_line("date", &["-u", "+%Y-%m-%d %H:%M:%SZ"]).unwrap_or_default();
    let node = cmd_line("node", &["--version"]).unwrap_or_else(|| "not found".into());
    format!(
        "Machine: {cores} cores ({model}), {mem_gib:.1} GiB RAM, Linux {}; node {node}; {date}",
        kernel.trim()
    )
}

/// Checks node, the reference server script and its node_modules (running `npm ci` if needed).
async fn prepare_node(root: &Path) -> R<()> {
    cmd_line("node", &["--version"]).ok_or("`node` is not on PATH")?;
    let dir = root.join("tests/node");
    if !dir.join("reference-server.mjs").is_file() {
        return Err(format!(
            "{} is missing",
            dir.join("reference-server.mjs").display()
        ));
    }
    if !dir.join("node_modules/socket.io").is_dir() {
        eprintln!("== node: running `npm ci` in {}", dir.display());
        let mut child = Command::new("npm")
            .arg("ci")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(std::io::stderr())
            .kill_on_drop(true)
            .spawn()
            .ctx("spawn npm")?;
        let status = timeout(Duration::from_secs(180), child.wait())
            .await
            .map_err(|_| "npm ci timed out".to_string())?
            .ctx("npm ci")?;
        if !status.success() {
            return Err(format!("npm ci failed: {status}"));
        }
    }
    Ok(())
}

fn fmt_num(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(ch);
    }
    out
}

fn print_table(facts: &str, kinds: &[Kind], ours: &Results, node: &Results, rss_sizes: &[usize]) {
    let has_node = kinds.contains(&Kind::Node);
    let cell = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or_else(|| "n/a".to_string(), f);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}×", a / b),
        _ => "n/a".into(),
    };
    println!();
    println!("{facts}");
    println!();
    println!("| metric | ours (rtcio-server) | Node (socket.io 4.8) | ours/Node |");
    println!("|---|---:|---:|---:|");
    let row = |name: &str, a: Option<f64>, b: Option<f64>, f: &dyn Fn(f64) -> String| {
        let b = if has_node { b } else { None };
        println!(
            "| {name} | {} | {} | {} |",
            cell(a, f),
            cell(b, f),
            ratio(a, b)
        );
    };
    let int = |v: f64| fmt_num(v);
    let ms2 = |v: f64| format!("{v:.2}");
    let one = |v: f64| format!("{v:.1}");
    row(
        &format!(
            "joins/s, connect + join-room → join-ok ({JOIN_SOCKETS} sockets, rooms of {ROOM_SIZE}, median of {JOIN_ROUNDS}) ↑"
        ),
        ours.joins_per_s,
        node.joins_per_s,
        &int,
    );
    row(
        "server CPU per connect + join (µs) ↓",
        ours.join_cpu_us,
        node.join_cpu_us,
        &int,
    );
    row(
        &format!("relayed #rtcio:message/s ({RELAY_PAIRS} pairs, window {RELAY_WINDOW}) ↑"),
        ours.relay_per_s,
        node.relay_per_s,
        &int,
    );
    row(
        "relay latency p50 under full load (ms) ↓",
        ours.relay_p50_ms,
        node.relay_p50_ms,
        &ms2,
    );
    row(
        "relay latency p99 under full load (ms) ↓",
        ours.relay_p99_ms,
        node.relay_p99_ms,
        &ms2,
    );
    row(
        "relay latency max under full load (ms) ↓",
        ours.relay_max_ms,
        node.relay_max_ms,
        &ms2,
    );
    row(
        &format!(
            "relay latency p50 at low load ({LOWLOAD_PAIRS} pairs, window {LOWLOAD_WINDOW}) (ms) ↓"
        ),
        ours.low_p50_ms,
        node.low_p50_ms,
        &ms2,
    );
    row(
        &format!(
            "relay latency p99 at low load ({LOWLOAD_PAIRS} pairs, window {LOWLOAD_WINDOW}) (ms) ↓"
        ),
        ours.low_p99_ms,
        node.low_p99_ms,
        &ms2,
    );
    row(
        "server CPU per relayed message (µs) ↓",
        ours.relay_cpu_us_per_msg,
        node.relay_cpu_us_per_msg,
        &one,
    );
    let per = |c: &Option<(SyscallCounts, f64)>, i: usize| c.as_ref().map(|(v, n)| v[i] as f64 / n);
    let joins = |r: &Results| r.join_syscalls.clone().map(|(v, n)| (v, n as f64));
    let relays = |r: &Results| r.relay_syscalls.clone().map(|(v, n)| (v, n as f64));
    for (what, o, n) in [
        ("connect + join", joins(ours), joins(node)),
        ("relayed message", relays(ours), relays(node)),
    ] {
        if o.is_none() && n.is_none() {
            continue;
        }
        for (i, ev) in SYSCALLS.iter().enumerate() {
            let name = ev.strip_prefix("syscalls:sys_enter_").unwrap_or("all");
            row(
                &format!("syscalls per {what}: {name} (perf, `LOAD_SYSCALLS=1`)"),
                per(&o, i),
                per(&n, i),
                &ms2,
            );
        }
    }
    for &n in rss_sizes {
        let get = |r: &Results| {
            r.rss
                .iter()
                .find(|s| s.n == n)
                .and_then(RssStep::per_socket_kib)
        };
        row(
            &format!(
                "RSS per idle joined socket @ {} sockets (KiB) ↓",
                fmt_num(n as f64)
            ),
            get(ours),
            get(node),
            &one,
        );
    }
    for &n in rss_sizes {
        let get = |r: &Results| {
            r.rss
                .iter()
                .find(|s| s.n == n)
                .map(|s| s.before_kib as f64 / 1024.0)
        };
        row(
            &format!(
                "server RSS before connecting, RSS@{} run (MiB) ↓",
                fmt_num(n as f64)
            ),
            get(ours),
            get(node),
            &one,
        );
    }
    let delivered = |r: &Results| {
        r.relay_delivered
            .map_or_else(|| "n/a".into(), |(got, sent)| format!("{got} / {sent}"))
    };
    let fanout = |r: &Results| {
        r.join_fanout.map_or_else(
            || "n/a".into(),
            |(exact, rounds, got, due)| {
                let verdict = if exact == rounds {
                    "exact"
                } else {
                    "NOT EXACT"
                };
                format!("{verdict}: {exact}/{rounds} rounds, {got} / {due} init-offers")
            },
        )
    };
    println!(
        "| join fan-out (every round: join-ok, one user-connected + one init-offer per later joiner) | {} | {} | |",
        fanout(ours),
        if has_node { fanout(node) } else { "n/a".into() }
    );
    println!(
        "| relay delivered / sent | {} | {} | |",
        delivered(ours),
        if has_node {
            delivered(node)
        } else {
            "n/a".into()
        }
    );
    println!();
    println!(
        "↑ higher is better, ↓ lower is better. Client and servers share the machine (loopback)."
    );
}

fn print_notes() {
    let notes = NOTES.lock().unwrap();
    if notes.is_empty() {
        println!("No errors, drops or server stderr output were observed.");
    } else {
        println!();
        println!("Notes:");
        for n in notes.iter() {
            println!("- {n}");
        }
    }
}

/// `LOAD_SIZES` (default 1 000, 10 000, 50 000; empty: skip the scale phase).
fn scale_sizes() -> Vec<usize> {
    std::env::var("LOAD_SIZES").ok().map_or_else(
        || SIZES.to_vec(),
        |v| {
            v.split(',')
                .filter_map(|s| s.trim().parse().ok())
                .filter(|&n| n > 0)
                .collect()
        },
    )
}

/// `LOAD_CLIENT=rust|node|both` (default both); the Node client needs node and its modules.
fn client_kinds(kinds: &[Kind]) -> Vec<ClientKind> {
    let want = std::env::var("LOAD_CLIENT").unwrap_or_default();
    let mut out = Vec::new();
    if want.is_empty() || want == "both" || want == "rust" {
        out.push(ClientKind::Rust);
    }
    if want.is_empty() || want == "both" || want == "node" {
        // prepare_node ran (and was noted) when Node is among the servers; else check here.
        if kinds.contains(&Kind::Node) || cmd_line("node", &["--version"]).is_some() {
            out.push(ClientKind::Node);
        } else {
            note("Node socket.io-client generator skipped: `node` is not on PATH".into());
        }
    }
    out
}

/// The whole bench's bound: the fixed phases plus every planned scale run's own bound.
fn overall_limit() -> Duration {
    let sizes = scale_sizes();
    let repeat: u64 = std::env::var("LOAD_REPEAT")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    // Two clients × two servers per size at most, plus five scale-out relay runs.
    let scale: Duration = sizes.iter().map(|&n| scale_run_limit(n) * 4).sum();
    OVERALL_LIMIT
        + scale
        + scale_run_limit(REPEAT_SIZE) * (4 * repeat as u32)
        + Duration::from_secs(300)
}

async fn run() -> i32 {
    let t0 = Instant::now();
    now_ns();
    let root: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."));
    raise_nofile();
    let facts = machine_facts();
    eprintln!("{facts}");

    let only = std::env::var("LOAD_ONLY").unwrap_or_default();
    let mut kinds = Vec::new();
    if only.is_empty() || only == "ours" {
        kinds.push(Kind::Ours);
    }
    if only.is_empty() || only == "node" {
        match prepare_node(&root).await {
            Ok(()) => kinds.push(Kind::Node),
            Err(e) => note(format!("Node reference server unavailable, skipped: {e}")),
        }
    }
    let mut rss_sizes: Vec<usize> = std::env::var("LOAD_RSS")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| RSS_SIZES.to_vec());
    // Each idle socket costs one descriptor on each side; stay within the limit.
    let fd_budget = exact_joins::nofile_limits().0.saturating_sub(1024) as usize;
    for n in rss_sizes.iter_mut() {
        if *n > fd_budget {
            note(format!(
                "RSS@{n} reduced to {fd_budget} sockets: open-file limit"
            ));
            *n = fd_budget;
        }
    }

    let sizes = scale_sizes();
    let clients = client_kinds(&kinds);
    let repeat: usize = std::env::var("LOAD_REPEAT")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let run_scaleout = kinds.contains(&Kind::Ours)
        && std::env::var("LOAD_SCALEOUT").map_or(true, |v| v.trim() != "0");

    // LOAD_BASIC=0 skips the joins rounds and relay runs of phases 1–3 (e.g. for repeats).
    let basic = std::env::var("LOAD_BASIC").map_or(true, |v| v.trim() != "0");
    let (mut ours, mut node) = (Results::default(), Results::default());
    for &kind in &kinds {
        let res = if kind == Kind::Ours {
            &mut ours
        } else {
            &mut node
        };
        if !basic {
            continue;
        }
        if let Err(e) = bench_server(kind, &root, res).await {
            note(format!("{} joins/relay phase aborted: {e}", kind.label()));
        }
    }
    for &n in &rss_sizes {
        for &kind in &kinds {
            eprintln!(
                "== {}: RSS with {n} idle sockets (fresh server)",
                kind.label()
            );
            match rss_step(kind, &root, n).await {
                Ok(step) => {
                    eprintln!(
                        "   RSS {} KiB → {} KiB: {:.1} KiB per socket",
                        step.before_kib,
                        step.after_kib,
                        step.per_socket_kib().unwrap_or(f64::NAN)
                    );
                    let res = if kind == Kind::Ours {
                        &mut ours
                    } else {
                        &mut node
                    };
                    res.rss.push(step);
                }
                Err(e) => note(format!("{} RSS@{n} aborted: {e}", kind.label())),
            }
        }
    }
    let mut scale_runs = Vec::new();
    for &n in &sizes {
        for &client in &clients {
            for &kind in &kinds {
                eprintln!(
                    "== scale: {} sockets, {} → {}",
                    fmt_num(n as f64),
                    client.label(),
                    server_name(kind)
                );
                let run = scale_run(&root, client, kind, n, &format!("s{n}{}", kind.label())).await;
                check_scale(&run);
                scale_runs.push(run);
            }
        }
    }
    let mut repeats = Vec::new();
    if repeat > 0 {
        for &client in &clients {
            for &kind in &kinds {
                let mut exact = 0;
                for r in 0..repeat {
                    eprintln!(
                        "== repeat {}/{repeat}: {} sockets, {} → {}",
                        r + 1,
                        fmt_num(REPEAT_SIZE as f64),
                        client.label(),
                        server_name(kind)
                    );
                    let run = scale_run(&root, client, kind, REPEAT_SIZE, &format!("rep{r}")).await;
                    check_scale(&run);
                    if run.skipped.is_some() {
                        break;
                    }
                    exact += usize::from(run.exact());
                }
                repeats.push((client, kind, exact, repeat));
            }
        }
    }
    let scaleout_rows = if run_scaleout {
        scaleout(&root).await
    } else {
        Vec::new()
    };
    if basic || !rss_sizes.is_empty() {
        print_table(&facts, &kinds, &ours, &node, &rss_sizes);
    } else {
        println!();
        println!("{facts}");
    }
    print_scale_table(&scale_runs, &repeats, repeat);
    print_scaleout_table(&scaleout_rows);
    print_notes();
    eprintln!("total bench time {:.1} s", t0.elapsed().as_secs_f64());
    if INEXACT.load(Ordering::Relaxed) {
        eprintln!("load bench: FAILED, a count was not exact (see the notes)");
        1
    } else {
        0
    }
}

fn main() {
    // A generator process of the scale phase (this bench re-run by itself).
    if let Ok(spec) = std::env::var("LOAD_GENERATOR") {
        std::process::exit(generator_main(&spec));
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: don't load the machine then.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("load bench: skipped (run it with `cargo bench -p rtcio-server --bench load`)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(async {
        tokio::select! {
            r = timeout(overall_limit(), run()) => r.unwrap_or_else(|_| {
                eprintln!("load bench: exceeded {} s, giving up", overall_limit().as_secs());
                1
            }),
            _ = tokio::signal::ctrl_c() => {
                eprintln!("load bench: interrupted");
                130
            }
        }
    });
    // Server children were killed when their guards dropped with `run()`.
    rt.shutdown_timeout(Duration::from_secs(2));
    std::process::exit(code);
}
