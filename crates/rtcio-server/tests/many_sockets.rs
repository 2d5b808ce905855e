//! Many sockets joining rooms at once (issue 15): every join answered, and the fan-out exact —
//! each member gets one `user-connected` and one `#rtcio:init-offer` per later joiner, none missing,
//! none duplicated, and every pair of room mates agrees on who came first. Then the last joiner of
//! every room leaves at once, and every remaining member gets exactly one `#rtcio:peer-left` and
//! one `user-disconnected` for it.
//!
//! The clients speak raw Engine.IO v4 / Socket.IO v5 over WebSocket (one tokio task each, like
//! `benches/load.rs`); the server is the real binary in its own process.

mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::start_server_process;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

/// Members per room, as in the generator.
const ROOM_SIZE: usize = 4;
/// Connect + join handshakes in flight at once, as in the generator.
const IN_FLIGHT: usize = 64;
/// Client sockets bind to 127.0.0.1 … 127.0.0.N in turn (spreads ephemeral ports).
const SOURCE_ADDRS: usize = 8;
/// Guard for one socket's connect + join; a failure, never a synchronisation device.
const SOCKET_GUARD: Duration = Duration::from_secs(20);
/// Guard for a whole phase (all sockets).
const PHASE_GUARD: Duration = Duration::from_secs(60);

type Ws = WebSocketStream<TcpStream>;

/// Raises this process's open-file limit (servers started later inherit it); returns the soft
/// limit now in force.
fn raise_nofile(want: u64) -> u64 {
    let read = || -> u64 {
        std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
            })
            .unwrap_or(1024)
    };
    if read() < want {
        // prlimit(1) rather than a libc dependency; raising the soft limit up to the hard one
        // needs no privilege.
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={want}:{want}")])
            .stderr(std::process::Stdio::null())
            .status();
        if read() < want {
            let _ = std::process::Command::new("prlimit")
                .args(["--pid", &pid, &format!("--nofile={want}")])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
    read()
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096)
}

/// One received Socket.IO event: name and first argument.
#[derive(Debug, Clone)]
struct Ev {
    name: String,
    arg: Value,
}

fn parse_event(t: &str) -> Option<Ev> {
    let body = t
        .strip_prefix("42")?
        .trim_start_matches(|c: char| c.is_ascii_digit());
    let mut parts: Vec<Value> = serde_json::from_str(body).ok()?;
    if parts.is_empty() {
        return None;
    }
    let name = parts.remove(0).as_str()?.to_string();
    let arg = parts.into_iter().next().unwrap_or(Value::Null);
    Some(Ev { name, arg })
}

/// Reads frames until a Socket.IO event arrives, answering Engine.IO pings on the way.
async fn next_event(ws: &mut Ws) -> Result<Ev, String> {
    loop {
        match ws.next().await {
            None => return Err("connection closed".into()),
            Some(Err(e)) => return Err(format!("websocket: {e}")),
            Some(Ok(Message::Text(t))) => {
                if t.as_str() == "2" {
                    ws.send(Message::text("3"))
                        .await
                        .map_err(|e| format!("pong: {e}"))?;
                } else if let Some(ev) = parse_event(&t) {
                    return Ok(ev);
                } else if t.starts_with("41") || t.as_str() == "1" {
                    return Err(format!("server closed the session: {}", t.as_str()));
                }
            }
            Some(Ok(Message::Close(f))) => return Err(format!("websocket close {f:?}")),
            Some(Ok(_)) => {}
        }
    }
}

async fn send_event(ws: &mut Ws, name: &str, arg: Value) -> Result<(), String> {
    let frame = format!("42{}", serde_json::json!([name, arg]));
    ws.send(Message::Text(Utf8Bytes::from(frame)))
        .await
        .map_err(|e| format!("send {name}: {e}"))
}

/// TCP + WebSocket + Engine.IO open + Socket.IO CONNECT; returns the socket and its namespace id.
async fn connect(server: SocketAddr, i: usize) -> Result<(Ws, String), String> {
    let src = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % SOURCE_ADDRS) as u8));
    let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    sock.bind(SocketAddr::new(src, 0))
        .map_err(|e| format!("bind: {e}"))?;
    let stream = sock
        .connect(server)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    let url = format!("ws://{server}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = client_async_with_config(url, stream, Some(ws_config()))
        .await
        .map_err(|e| format!("websocket handshake: {e}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.starts_with('0') => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("before open: {e}")),
            None => return Err("closed before open".into()),
        }
    }
    ws.send(Message::text("40"))
        .await
        .map_err(|e| format!("send CONNECT: {e}"))?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.starts_with("40") => {
                let ack: Value =
                    serde_json::from_str(&t[2..]).map_err(|e| format!("CONNECT ack: {e}"))?;
                let sid = ack["sid"].as_str().ok_or("CONNECT ack without sid")?;
                return Ok((ws, sid.to_string()));
            }
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                ws.send(Message::text("3"))
                    .await
                    .map_err(|e| format!("pong: {e}"))?;
            }
            Some(Ok(Message::Text(t))) if t.starts_with("44") => {
                return Err(format!("connect_error {}", t.as_str()));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("before CONNECT ack: {e}")),
            None => return Err("closed before CONNECT ack".into()),
        }
    }
}

/// Sends `check-room` and collects everything that arrives before its `room-check-ok`. The server
/// handles one socket's events in order, so the reply also proves that socket's earlier events
/// (its own join fan-out) were fully handled.
async fn marker(ws: &mut Ws, room: &str, log: &mut Vec<Ev>) -> Result<(), String> {
    send_event(ws, "check-room", serde_json::json!({"roomId": room})).await?;
    loop {
        let ev = next_event(ws).await?;
        if ev.name == "room-check-ok" {
            return Ok(());
        }
        log.push(ev);
    }
}

/// What one socket saw.
#[derive(Debug, Default, Clone)]
struct Seen {
    sid: String,
    room: String,
    /// Events before `join-ok` (the backfill).
    before_ok: Vec<Ev>,
    /// Events after `join-ok`, markers excluded.
    after_ok: Vec<Ev>,
}

enum Report {
    Joined,
    Marked,
    Done(Box<Seen>),
    Left(Box<LeavePhase>),
    Failed(String),
}

/// What one socket did or saw in the leave phase.
#[derive(Debug)]
struct LeavePhase {
    sid: String,
    room: String,
    /// It was the room's last joiner and closed its socket.
    leaver: bool,
    /// Everything a remaining member received from the go of the leave phase up to its marker.
    events: Vec<Ev>,
}

/// Signals that move every client to its next phase.
struct Go {
    verify: watch::Receiver<bool>,
    leave: watch::Receiver<bool>,
}

/// One client: connect and join (under the in-flight limit), first marker, then wait for `go`
/// and send the second marker; then, on the leave go, the room's last joiner (the one whose
/// backfill listed all `room_members - 1` others) closes its socket and the others collect the
/// leave events up to a third marker. Reports each step.
async fn client(
    server: SocketAddr,
    i: usize,
    (room, room_members): (String, usize),
    sem: Arc<Semaphore>,
    mut go: Go,
    tx: mpsc::UnboundedSender<Report>,
    keep: mpsc::Sender<Ws>,
) {
    let run = async {
        let mut seen = Seen {
            room: room.clone(),
            ..Seen::default()
        };
        let mut ws = {
            let _permit = sem.acquire().await.map_err(|e| e.to_string())?;
            let (mut ws, sid) = timeout(SOCKET_GUARD, connect(server, i))
                .await
                .map_err(|_| "connect timed out".to_string())??;
            seen.sid = sid;
            send_event(
                &mut ws,
                "join-room",
                serde_json::json!({"roomId": room, "name": format!("u{i}")}),
            )
            .await?;
            timeout(SOCKET_GUARD, async {
                loop {
                    let ev = next_event(&mut ws).await?;
                    match ev.name.as_str() {
                        "join-ok" => return Ok::<_, String>(()),
                        "join-error" => return Err(format!("join-error {}", ev.arg)),
                        _ => seen.before_ok.push(ev),
                    }
                }
            })
            .await
            .map_err(|_| format!("no join-ok within {SOCKET_GUARD:?} (sid {})", seen.sid))??;
            ws
        };
        let _ = tx.send(Report::Joined);
        marker(&mut ws, &room, &mut seen.after_ok).await?;
        let _ = tx.send(Report::Marked);
        // Every socket's fan-out is complete once all first markers are back; anything for us is
        // queued before the reply to the second one.
        loop {
            tokio::select! {
                r = go.verify.wait_for(|g| *g) => { r.map_err(|e| e.to_string())?; break; }
                ev = next_event(&mut ws) => seen.after_ok.push(ev?),
            }
        }
        marker(&mut ws, &room, &mut seen.after_ok).await?;
        let _ = tx.send(Report::Done(Box::new(seen.clone())));
        let mut events = Vec::new();
        loop {
            tokio::select! {
                r = go.leave.wait_for(|g| *g) => { r.map_err(|e| e.to_string())?; break; }
                ev = next_event(&mut ws) => events.push(ev?),
            }
        }
        let backfilled = seen
            .before_ok
            .iter()
            .filter(|e| e.name == "user-connected")
            .count();
        let leaver = backfilled + 1 == room_members;
        if leaver {
            // A plain close, as a closing tab does (no namespace DISCONNECT first).
            drop(ws);
        } else {
            // Wait for both leave events (a missing one fails here), then a marker: anything
            // the leave sent this socket twice arrives before the marker's reply.
            let has = |evs: &[Ev], name: &str| evs.iter().any(|e| e.name == name);
            timeout(SOCKET_GUARD, async {
                while !(has(&events, "user-disconnected") && has(&events, "#rtcio:peer-left")) {
                    events.push(next_event(&mut ws).await?);
                }
                Ok::<_, String>(())
            })
            .await
            .map_err(|_| format!("leave events incomplete after {SOCKET_GUARD:?}: {events:?}"))??;
            marker(&mut ws, &room, &mut events).await?;
            let _ = keep.send(ws).await;
        }
        Ok::<_, String>(LeavePhase {
            sid: seen.sid,
            room,
            leaver,
            events,
        })
    };
    let _ = tx.send(match run.await {
        Ok(left) => Report::Left(Box::new(left)),
        Err(e) => Report::Failed(format!("socket {i}: {e}")),
    });
}

/// Counts `Joined`/`Marked`/`Done`/`Failed` reports until `want` sockets reached `stage` or failed.
async fn await_stage(
    rx: &mut mpsc::UnboundedReceiver<Report>,
    want: usize,
    stage: &str,
    counts: &mut HashMap<&'static str, usize>,
    done: &mut Vec<Seen>,
    left: &mut Vec<LeavePhase>,
    failures: &mut Vec<String>,
) {
    let deadline = tokio::time::Instant::now() + PHASE_GUARD;
    loop {
        let reached = counts.get(stage).copied().unwrap_or(0) + failures.len();
        if reached >= want {
            return;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Report::Joined)) => *counts.entry("joined").or_default() += 1,
            Ok(Some(Report::Marked)) => *counts.entry("marked").or_default() += 1,
            Ok(Some(Report::Done(s))) => {
                *counts.entry("done").or_default() += 1;
                done.push(*s);
            }
            Ok(Some(Report::Left(l))) => {
                *counts.entry("left").or_default() += 1;
                left.push(*l);
            }
            Ok(Some(Report::Failed(e))) => failures.push(e),
            Ok(None) => return,
            Err(_) => {
                failures.push(format!(
                    "{} of {want} sockets reached `{stage}` within {PHASE_GUARD:?}",
                    counts.get(stage).copied().unwrap_or(0)
                ));
                return;
            }
        }
    }
}

/// Checks the exact fan-out; returns human-readable problems and (init-offers received, due).
fn verify(seen: &[Seen]) -> (Vec<String>, usize, usize) {
    let mut problems = Vec::new();
    let mut rooms: HashMap<&str, Vec<&Seen>> = HashMap::new();
    for s in seen {
        rooms.entry(&s.room).or_default().push(s);
    }
    let (mut got_total, mut due_total) = (0, 0);
    for (room, members) in &rooms {
        let ids_of = |evs: &[Ev], name: &str, key: &str| -> Vec<String> {
            evs.iter()
                .filter(|e| e.name == name)
                .map(|e| e.arg[key].as_str().unwrap_or("?").to_string())
                .collect()
        };
        // Who each member was told about before its join-ok: the members already there.
        let backfill: HashMap<&str, Vec<String>> = members
            .iter()
            .map(|m| (m.sid.as_str(), ids_of(&m.before_ok, "user-connected", "id")))
            .collect();
        for m in members {
            let odd: Vec<&Ev> = m
                .before_ok
                .iter()
                .filter(|e| e.name != "user-connected")
                .collect();
            if !odd.is_empty() {
                problems.push(format!(
                    "room {room}: {} got {odd:?} before its join-ok",
                    m.sid
                ));
            }
        }
        for (i, x) in members.iter().enumerate() {
            for y in &members[i + 1..] {
                let x_first = backfill[y.sid.as_str()]
                    .iter()
                    .filter(|id| **id == x.sid)
                    .count();
                let y_first = backfill[x.sid.as_str()]
                    .iter()
                    .filter(|id| **id == y.sid)
                    .count();
                if x_first + y_first != 1 {
                    problems.push(format!(
                        "room {room}: {} and {} backfilled each other {x_first}/{y_first} times \
                         (exactly one must have been there first)",
                        x.sid, y.sid
                    ));
                }
            }
        }
        for x in members {
            // x must hear, once each, of every member whose backfill listed x.
            let mut due: Vec<String> = members
                .iter()
                .filter(|y| backfill[y.sid.as_str()].contains(&x.sid))
                .map(|y| y.sid.clone())
                .collect();
            due.sort();
            for (name, key) in [("user-connected", "id"), ("#rtcio:init-offer", "source")] {
                let mut got = ids_of(&x.after_ok, name, key);
                got.sort();
                if name == "#rtcio:init-offer" {
                    got_total += got.len();
                    due_total += due.len();
                }
                if got != due {
                    problems.push(format!(
                        "room {room}: {} got {name} from {got:?}, due {due:?}",
                        x.sid
                    ));
                }
            }
            let other: Vec<&Ev> = x
                .after_ok
                .iter()
                .filter(|e| !["user-connected", "#rtcio:init-offer"].contains(&e.name.as_str()))
                .collect();
            if !other.is_empty() {
                problems.push(format!("room {room}: {} also got {other:?}", x.sid));
            }
        }
    }
    (problems, got_total, due_total)
}

/// Checks the leave phase: in every room of more than one member exactly one socket left, and each
/// other member got exactly one `#rtcio:peer-left` and one `user-disconnected` naming it, then
/// nothing else. Returns problems and the number of rooms that saw an exact leave.
fn verify_leaves(left: &[LeavePhase]) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let mut rooms: HashMap<&str, Vec<&LeavePhase>> = HashMap::new();
    for l in left {
        rooms.entry(&l.room).or_default().push(l);
    }
    let mut exact = 0;
    for (room, members) in &rooms {
        let leavers: Vec<&str> = members
            .iter()
            .filter(|m| m.leaver)
            .map(|m| m.sid.as_str())
            .collect();
        let [leaver] = leavers[..] else {
            problems.push(format!("room {room}: leavers {leavers:?}, not exactly one"));
            continue;
        };
        let mut ok = true;
        for m in members.iter().filter(|m| !m.leaver) {
            let named: Vec<(&str, &str)> = m
                .events
                .iter()
                .map(|e| (e.name.as_str(), e.arg["id"].as_str().unwrap_or("?")))
                .collect();
            if named != [("#rtcio:peer-left", leaver), ("user-disconnected", leaver)] {
                ok = false;
                problems.push(format!(
                    "room {room}: {} got {named:?} when {leaver} left",
                    m.sid
                ));
            }
        }
        exact += usize::from(ok);
    }
    (problems, exact)
}

/// What a run of clients found.
struct Outcome {
    n: usize,
    joined: usize,
    joined_in: Duration,
    verified_in: Duration,
    verified: usize,
    init_offers: usize,
    due: usize,
    /// Rooms whose leave phase was exact.
    leaves_exact: usize,
    failures: Vec<String>,
    problems: Vec<String>,
}

impl Outcome {
    fn summary(&self) -> String {
        format!(
            "{} sockets: {} joined in {:.1?}, {} verified in {:.1?}; init-offers {} of {} due; \
             {} of {} rooms' leaves exact; {} failure(s), {} fan-out/leave problem(s)",
            self.n,
            self.joined,
            self.joined_in,
            self.verified,
            self.verified_in,
            self.init_offers,
            self.due,
            self.leaves_exact,
            self.n.div_ceil(ROOM_SIZE),
            self.failures.len(),
            self.problems.len()
        )
    }

    /// Panics with the summary and the first failures and problems unless the run was exact.
    fn assert_exact(&self) {
        let mut report = String::new();
        for line in self
            .failures
            .iter()
            .take(10)
            .chain(self.problems.iter().take(20))
        {
            report.push_str(line);
            report.push('\n');
        }
        let all_due = self.n / ROOM_SIZE * (ROOM_SIZE * (ROOM_SIZE - 1) / 2);
        assert!(
            self.failures.is_empty()
                && self.problems.is_empty()
                && self.verified == self.n
                && self.init_offers == all_due
                && self.leaves_exact == self.n.div_ceil(ROOM_SIZE),
            "{}\n{report}",
            self.summary()
        );
    }
}

/// Runs `n` clients in rooms of [`ROOM_SIZE`] (room ids `<tag>-<k>`) against `addr`, keeps them
/// connected until all are verified, then closes them.
async fn run_clients(addrs: &[SocketAddr], n: usize, tag: &str) -> Outcome {
    let started = Instant::now();
    let sem = Arc::new(Semaphore::new(IN_FLIGHT));
    let (go_tx, go_rx) = watch::channel(false);
    let (leave_tx, leave_rx) = watch::channel(false);
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Finished clients park their sockets here so no one leaves before everyone is verified.
    let (keep_tx, mut keep_rx) = mpsc::channel::<Ws>(n);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(client(
                addrs[i % addrs.len()],
                i,
                (
                    format!("{tag}-{}", i / ROOM_SIZE),
                    ROOM_SIZE.min(n - i / ROOM_SIZE * ROOM_SIZE),
                ),
                sem.clone(),
                Go {
                    verify: go_rx.clone(),
                    leave: leave_rx.clone(),
                },
                tx.clone(),
                keep_tx.clone(),
            ))
        })
        .collect();
    drop(tx);
    let (mut counts, mut done, mut left, mut failures) =
        (HashMap::new(), Vec::new(), Vec::new(), Vec::new());
    macro_rules! stage {
        ($name:literal) => {
            await_stage(
                &mut rx,
                n,
                $name,
                &mut counts,
                &mut done,
                &mut left,
                &mut failures,
            )
        };
    }
    stage!("joined").await;
    let joined_in = started.elapsed();
    stage!("marked").await;
    let _ = go_tx.send(true);
    stage!("done").await;
    let verified_in = started.elapsed();
    let _ = leave_tx.send(true);
    stage!("left").await;
    for t in &tasks {
        t.abort();
    }
    let (mut problems, init_offers, due) = verify(&done);
    let (leave_problems, leaves_exact) = verify_leaves(&left);
    problems.extend(leave_problems);
    let outcome = Outcome {
        n,
        joined: counts.get("joined").copied().unwrap_or(0),
        joined_in,
        verified_in,
        verified: done.len(),
        init_offers,
        due,
        leaves_exact,
        failures,
        problems,
    };
    eprintln!("{}", outcome.summary());
    keep_rx.close();
    while keep_rx.recv().await.is_some() {}
    outcome
}

/// Runs `n` sockets in rooms of [`ROOM_SIZE`] against a fresh server process; panics with a
/// summary of every failure.
async fn many_join_exactly(n: usize, server_args: &[&str]) {
    // Client and server are separate processes: each needs about one descriptor per socket.
    let limit = raise_nofile((n + 512) as u64);
    assert!(
        limit >= (n + 256) as u64,
        "open-file limit {limit} too small for {n} sockets"
    );
    let (_server, url) = start_server_process(server_args);
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .parse()
        .expect("server address");
    run_clients(&[addr], n, "load").await.assert_exact();
}

/// Issue 15: 2 000 sockets, rooms of 4, 64 joins in flight, default server flags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_sockets_join_rooms_of_four_exactly() {
    many_join_exactly(2_000, &[]).await;
}

/// Two server processes sharing rooms through Redis; room mates alternate between them, so every
/// join races joins on the other process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_through_redis_join_rooms_exactly() {
    let n = 1_000;
    raise_nofile((n + 512) as u64);
    let (_redis, redis_url) = common::start_redis();
    let servers: Vec<_> = (0..2)
        .map(|_| start_server_process(&["--redis", &redis_url]))
        .collect();
    let addrs: Vec<SocketAddr> = servers
        .iter()
        .map(|(_, url)| {
            url.trim_start_matches("http://")
                .parse()
                .expect("server address")
        })
        .collect();
    run_clients(&addrs, n, "redis").await.assert_exact();
}

/// Diagnosis at other sizes: `MANY_SOCKETS=10000 cargo test -p rtcio-server --test many_sockets
/// -- --ignored sized_by_env`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "sized by MANY_SOCKETS, for diagnosis"]
async fn sized_by_env() {
    let n = std::env::var("MANY_SOCKETS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000);
    many_join_exactly(n, &[]).await;
}

/// Sockets of the scale test, and the client processes they are spread over (one process cannot
/// hold them all under a 20 000 descriptor limit, which is what this box allows).
const SCALE_SOCKETS: usize = 20_000;
const SCALE_SHARDS: usize = 2;
/// The whole scale test, server start to the last verification.
const SCALE_GUARD: Duration = Duration::from_secs(90);

/// One client process of the scale test (started by it; does nothing when run on its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
#[ignore = "started by twenty_thousand_sockets_connect_and_join"]
async fn scale_shard() {
    let (Ok(addr), Ok(n), Ok(tag)) = (
        std::env::var("SHARD_ADDR"),
        std::env::var("SHARD_SOCKETS"),
        std::env::var("SHARD_TAG"),
    ) else {
        return;
    };
    let addr: SocketAddr = addr.parse().expect("SHARD_ADDR");
    let n: usize = n.parse().expect("SHARD_SOCKETS");
    run_clients(&[addr], n, &tag).await.assert_exact();
}

/// Issue 15's scale test: 20 000 sockets connected to one server and joined in rooms of 4, every
/// count exact, in bounded time. The server process needs a descriptor per socket: where the
/// hard limit is lower than that, the largest count it allows is used (and said).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn twenty_thousand_sockets_connect_and_join() {
    let limit = raise_nofile((SCALE_SOCKETS + 512) as u64) as usize;
    // Whole rooms per shard, and room for the server's own descriptors under the limit.
    let n = SCALE_SOCKETS.min(limit.saturating_sub(256)) / (ROOM_SIZE * SCALE_SHARDS)
        * (ROOM_SIZE * SCALE_SHARDS);
    assert!(
        n >= SCALE_SOCKETS / 2,
        "open-file limit {limit} too small for the scale test"
    );
    if n < SCALE_SOCKETS {
        eprintln!("open-file limit {limit}: running {n} sockets instead of {SCALE_SOCKETS}");
    }
    let started = Instant::now();
    let (_server, url) = start_server_process(&[]);
    let addr = url.trim_start_matches("http://").to_string();
    let exe = std::env::current_exe().expect("test binary path");
    let shards: Vec<_> = (0..SCALE_SHARDS)
        .map(|k| {
            let child = tokio::process::Command::new(&exe)
                .args(["--exact", "scale_shard", "--ignored", "--nocapture"])
                .env("SHARD_ADDR", &addr)
                .env("SHARD_SOCKETS", (n / SCALE_SHARDS).to_string())
                .env("SHARD_TAG", format!("scale{k}"))
                .kill_on_drop(true)
                .output();
            tokio::spawn(child)
        })
        .collect();
    let mut failed = Vec::new();
    for (k, s) in shards.into_iter().enumerate() {
        let out = timeout(SCALE_GUARD, s)
            .await
            .unwrap_or_else(|_| panic!("shard {k} still running after {SCALE_GUARD:?}"))
            .expect("shard task")
            .expect("shard process");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        for line in stderr.lines().filter(|l| l.contains(" sockets: ")) {
            eprintln!("shard {k}: {line}");
        }
        if !out.status.success() || !stdout.contains("1 passed") {
            failed.push(format!("shard {k}: {}\n{stdout}\n{stderr}", out.status));
        }
    }
    eprintln!(
        "{n} sockets over {SCALE_SHARDS} client processes: {:.1?} in all",
        started.elapsed()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
