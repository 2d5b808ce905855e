//! The exact join phase of issue 15, shared by `tests/many_sockets.rs` and `benches/load.rs`
//! (included there with `#[path]`): `n` raw Engine.IO v4 / Socket.IO v5 WebSocket clients (one
//! tokio task each) join rooms of [`ROOM_SIZE`] with a bounded number of handshakes in flight;
//! every member must get `join-ok`, and each existing member exactly one `user-connected` and one
//! `#rtcio:init-offer` per newcomer, room mates agreeing on who came first. Then the last joiner of
//! every room closes its socket (at most [`Limits::leave_rooms_in_flight`] rooms at a time, or all
//! at once), and each remaining member must get exactly one
//! `#rtcio:peer-left` and one `user-disconnected` naming it, in that order, and nothing else.
//!
//! Room members are spread round-robin over the given server addresses (processes sharing rooms
//! through Redis), so rooms span processes.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

/// Members per room, as in the generator.
pub const ROOM_SIZE: usize = 4;
/// Connect + join handshakes in flight at once, as in the generator.
pub const IN_FLIGHT: usize = 64;
/// Client sockets bind to 127.0.0.1 … 127.0.0.N in turn (spreads ephemeral ports).
const SOURCE_ADDRS: usize = 8;
/// Guard for one socket's connect + join; a failure, never a synchronisation device.
const SOCKET_GUARD: Duration = Duration::from_secs(20);

type Ws = WebSocketStream<TcpStream>;

/// Limits of one run of clients.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connect + join handshakes in flight at once.
    pub in_flight: usize,
    /// Guard for each stage (all sockets joined, all checked, all left).
    pub phase_guard: Duration,
    /// Rooms whose last member leaves at the same time: the next room's leave starts when a
    /// previous one's remaining members have both leave events and a marker answered. 0: all
    /// rooms at once (a burst of disconnects).
    pub leave_rooms_in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            in_flight: IN_FLIGHT,
            phase_guard: Duration::from_secs(60),
            leave_rooms_in_flight: IN_FLIGHT,
        }
    }
}

/// This process's (soft, hard) open-file limits (`u64::MAX`: unlimited; 1024 if unreadable).
pub fn nofile_limits() -> (u64, u64) {
    let parse = |s: Option<&str>| match s {
        Some("unlimited") => u64::MAX,
        Some(v) => v.parse().unwrap_or(1024),
        None => 1024,
    };
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .map(|l| {
                    let mut f = l.split_whitespace().skip(3);
                    (parse(f.next()), parse(f.next()))
                })
        })
        .unwrap_or((1024, 1024))
}

/// Raises this process's open-file limit to `want` (processes started later inherit it): soft
/// and hard when allowed, else the soft limit up to the hard one (no privilege needed). Returns
/// the soft limit now in force.
pub fn raise_nofile(want: u64) -> u64 {
    // prlimit(1) rather than a libc dependency.
    let prlimit = |soft: u64, hard: u64| {
        let _ = std::process::Command::new("prlimit")
            .args([
                "--pid",
                &std::process::id().to_string(),
                &format!("--nofile={soft}:{hard}"),
            ])
            .stderr(std::process::Stdio::null())
            .status();
    };
    let (soft, _) = nofile_limits();
    if soft < want {
        prlimit(want, want);
        let (soft, hard) = nofile_limits();
        if soft < want && soft < hard {
            prlimit(want.min(hard), hard);
        }
    }
    nofile_limits().0
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

/// Waits for an in-flight slot while still reading the socket (events go to `log`, pings are
/// answered: a socket that stops reading for pingInterval + pingTimeout is dropped by the server).
async fn permit<'a>(
    sem: &'a Semaphore,
    ws: &mut Ws,
    log: &mut Vec<Ev>,
) -> Result<tokio::sync::SemaphorePermit<'a>, String> {
    let acquire = sem.acquire();
    tokio::pin!(acquire);
    loop {
        tokio::select! {
            p = &mut acquire => return p.map_err(|e| e.to_string()),
            ev = next_event(ws) => log.push(ev?),
        }
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
    /// Rooms `0 .. value` may leave.
    leave: watch::Receiver<usize>,
}

/// One client: connect and join (under the in-flight limit), first marker, then wait for `go`
/// and send the second marker; then, on the leave go, the room's last joiner (the one whose
/// backfill listed all `room_members - 1` others) closes its socket and the others collect the
/// leave events up to a third marker. Reports each step.
async fn client(
    server: SocketAddr,
    i: usize,
    (room, room_index, room_members): (String, usize, usize),
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
        // Markers are requests too: the same bound on how many are in flight (in Redis mode each
        // is a cross-process membership query, and a burst of thousands at once is a different
        // load than the issue's).
        {
            let _p = permit(&sem, &mut ws, &mut seen.after_ok).await?;
            marker(&mut ws, &room, &mut seen.after_ok).await?;
        }
        let _ = tx.send(Report::Marked);
        // Every socket's fan-out is complete once all first markers are back; anything for us is
        // queued before the reply to the second one.
        loop {
            tokio::select! {
                r = go.verify.wait_for(|g| *g) => { r.map_err(|e| e.to_string())?; break; }
                ev = next_event(&mut ws) => seen.after_ok.push(ev?),
            }
        }
        {
            let _p = permit(&sem, &mut ws, &mut seen.after_ok).await?;
            marker(&mut ws, &room, &mut seen.after_ok).await?;
        }
        let _ = tx.send(Report::Done(Box::new(seen.clone())));
        let mut events = Vec::new();
        loop {
            tokio::select! {
                r = go.leave.wait_for(|&released| room_index < released) => {
                    r.map_err(|e| e.to_string())?;
                    break;
                }
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
            let _p = permit(&sem, &mut ws, &mut events).await?;
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

/// Progress of the clients of one run, gathered from their reports.
#[derive(Default)]
struct Progress {
    counts: HashMap<&'static str, usize>,
    done: Vec<Seen>,
    left: Vec<LeavePhase>,
    failures: Vec<String>,
}

/// Counts reports until `want` sockets reached `stage` or failed, or the guard expires.
async fn await_stage(
    rx: &mut mpsc::UnboundedReceiver<Report>,
    want: usize,
    stage: &str,
    guard: Duration,
    p: &mut Progress,
) {
    let deadline = tokio::time::Instant::now() + guard;
    loop {
        let reached = p.counts.get(stage).copied().unwrap_or(0) + p.failures.len();
        if reached >= want {
            return;
        }
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Report::Joined)) => *p.counts.entry("joined").or_default() += 1,
            Ok(Some(Report::Marked)) => *p.counts.entry("marked").or_default() += 1,
            Ok(Some(Report::Done(s))) => {
                *p.counts.entry("done").or_default() += 1;
                p.done.push(*s);
            }
            Ok(Some(Report::Left(l))) => {
                *p.counts.entry("left").or_default() += 1;
                p.left.push(*l);
            }
            Ok(Some(Report::Failed(e))) => p.failures.push(e),
            Ok(None) => return,
            Err(_) => {
                p.failures.push(format!(
                    "{} of {want} sockets reached `{stage}` within {guard:?}",
                    p.counts.get(stage).copied().unwrap_or(0)
                ));
                return;
            }
        }
    }
}

/// Counts of the join fan-out check.
#[derive(Default)]
struct JoinCounts {
    user_connected: usize,
    init_offers: usize,
    /// Announcements due by the backfills (per kind).
    due: usize,
}

/// Checks the exact fan-out; returns human-readable problems and the counts.
fn verify(seen: &[Seen]) -> (Vec<String>, JoinCounts) {
    let mut problems = Vec::new();
    let mut rooms: HashMap<&str, Vec<&Seen>> = HashMap::new();
    for s in seen {
        rooms.entry(&s.room).or_default().push(s);
    }
    let mut c = JoinCounts::default();
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
            c.due += due.len();
            for (name, key) in [("user-connected", "id"), ("#rtcio:init-offer", "source")] {
                let mut got = ids_of(&x.after_ok, name, key);
                got.sort();
                if name == "#rtcio:init-offer" {
                    c.init_offers += got.len();
                } else {
                    c.user_connected += got.len();
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
    (problems, c)
}

/// Counts of the leave check.
#[derive(Default)]
struct LeaveCounts {
    peer_left: usize,
    user_disconnected: usize,
    /// Rooms whose leave was exact.
    exact: usize,
}

/// Checks the leave phase: in every room of more than one member exactly one socket left, and each
/// other member got exactly one `#rtcio:peer-left` and one `user-disconnected` naming it, then
/// nothing else. Returns problems and the counts.
fn verify_leaves(left: &[LeavePhase]) -> (Vec<String>, LeaveCounts) {
    let mut problems = Vec::new();
    let mut rooms: HashMap<&str, Vec<&LeavePhase>> = HashMap::new();
    for l in left {
        rooms.entry(&l.room).or_default().push(l);
    }
    let mut c = LeaveCounts::default();
    for (room, members) in &rooms {
        for m in members.iter().filter(|m| !m.leaver) {
            for e in &m.events {
                match e.name.as_str() {
                    "#rtcio:peer-left" => c.peer_left += 1,
                    "user-disconnected" => c.user_disconnected += 1,
                    _ => {}
                }
            }
        }
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
        c.exact += usize::from(ok);
    }
    (problems, c)
}

/// What a run of clients found (the same fields as `tests/node/load-joins.mjs` prints).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    pub sockets: usize,
    /// Sockets that got their `join-ok`.
    pub joined: usize,
    /// From the first connect to the last `join-ok`.
    pub join_secs: f64,
    /// The whole run: joins, checks and the leave phase.
    pub secs: f64,
    /// Sockets whose fan-out was checked (second marker answered).
    pub verified: usize,
    pub user_connected: usize,
    pub init_offers: usize,
    /// `user-connected` (and `#rtcio:init-offer`) due by the backfills.
    pub due: usize,
    pub peer_left: usize,
    pub user_disconnected: usize,
    pub rooms: usize,
    /// Rooms whose leave phase was exact.
    pub leaves_exact: usize,
    /// Sockets that failed (connect, join, a check, a guard), then fan-out/leave problems: first
    /// few of each, and how many in all.
    pub problems: Vec<String>,
    pub problem_count: usize,
}

impl Outcome {
    /// Announcements of each kind due when every room of [`ROOM_SIZE`] is full.
    pub fn join_due(sockets: usize) -> usize {
        let full = sockets / ROOM_SIZE;
        let rest = sockets % ROOM_SIZE;
        full * (ROOM_SIZE * (ROOM_SIZE - 1) / 2) + rest * rest.saturating_sub(1) / 2
    }

    /// Leave announcements of each kind due: one per remaining member of every room.
    pub fn leave_due(sockets: usize) -> usize {
        sockets - sockets.div_ceil(ROOM_SIZE)
    }

    /// Every count as it must be, nothing missing, duplicated or unexpected.
    pub fn exact(&self) -> bool {
        let jd = Self::join_due(self.sockets);
        let ld = Self::leave_due(self.sockets);
        self.problem_count == 0
            && self.joined == self.sockets
            && self.verified == self.sockets
            && self.user_connected == jd
            && self.init_offers == jd
            && self.due == jd
            && self.peer_left == ld
            && self.user_disconnected == ld
            && self.rooms == self.sockets.div_ceil(ROOM_SIZE)
            && self.leaves_exact == self.rooms
    }

    /// Sums the outcomes of clients that ran side by side (different rooms).
    pub fn merge(parts: &[Outcome]) -> Outcome {
        let mut o = Outcome::default();
        for p in parts {
            o.sockets += p.sockets;
            o.joined += p.joined;
            o.join_secs = o.join_secs.max(p.join_secs);
            o.secs = o.secs.max(p.secs);
            o.verified += p.verified;
            o.user_connected += p.user_connected;
            o.init_offers += p.init_offers;
            o.due += p.due;
            o.peer_left += p.peer_left;
            o.user_disconnected += p.user_disconnected;
            o.rooms += p.rooms;
            o.leaves_exact += p.leaves_exact;
            o.problem_count += p.problem_count;
            o.problems.extend(
                p.problems
                    .iter()
                    .take(10_usize.saturating_sub(o.problems.len()))
                    .cloned(),
            );
        }
        o
    }

    /// The counts as `got/due`, for a table cell or a failure message.
    pub fn counts(&self) -> String {
        let jd = Self::join_due(self.sockets);
        let ld = Self::leave_due(self.sockets);
        format!(
            "join-ok {}/{}, user-connected {}/{jd}, init-offer {}/{jd}, peer-left {}/{ld}, \
             user-disconnected {}/{ld}, {} problem(s)",
            self.joined,
            self.sockets,
            self.user_connected,
            self.init_offers,
            self.peer_left,
            self.user_disconnected,
            self.problem_count
        )
    }

    pub fn summary(&self) -> String {
        format!(
            "{} sockets: {} joined in {:.1} s, {} verified, whole run {:.1} s; {}; {} of {} rooms' \
             leaves exact",
            self.sockets,
            self.joined,
            self.join_secs,
            self.verified,
            self.secs,
            self.counts(),
            self.leaves_exact,
            self.rooms
        )
    }

    /// One JSON line (what a generator process prints on stdout).
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "sockets": self.sockets,
            "joined": self.joined,
            "joinSecs": self.join_secs,
            "secs": self.secs,
            "verified": self.verified,
            "userConnected": self.user_connected,
            "initOffers": self.init_offers,
            "due": self.due,
            "peerLeft": self.peer_left,
            "userDisconnected": self.user_disconnected,
            "rooms": self.rooms,
            "leavesExact": self.leaves_exact,
            "problems": self.problems,
            "problemCount": self.problem_count,
        })
        .to_string()
    }

    /// Parses [`Outcome::to_json`]'s line (or `load-joins.mjs`'s).
    pub fn from_json(line: &str) -> Option<Outcome> {
        let v: Value = serde_json::from_str(line.trim()).ok()?;
        let n = |k: &str| v[k].as_u64().map(|x| x as usize);
        Some(Outcome {
            sockets: n("sockets")?,
            joined: n("joined")?,
            join_secs: v["joinSecs"].as_f64()?,
            secs: v["secs"].as_f64()?,
            verified: n("verified")?,
            user_connected: n("userConnected")?,
            init_offers: n("initOffers")?,
            due: n("due")?,
            peer_left: n("peerLeft")?,
            user_disconnected: n("userDisconnected")?,
            rooms: n("rooms")?,
            leaves_exact: n("leavesExact")?,
            problems: v["problems"]
                .as_array()?
                .iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect(),
            problem_count: n("problemCount")?,
        })
    }

    /// Panics with the summary and the first failures and problems unless the run was exact.
    pub fn assert_exact(&self) {
        assert!(
            self.exact(),
            "{}\n{}",
            self.summary(),
            self.problems.join("\n")
        );
    }
}

/// Runs `n` clients in rooms of [`ROOM_SIZE`] (room ids `<tag>-<k>`), member `i` on
/// `addrs[i % addrs.len()]`; keeps them connected until all are verified, then runs the leave
/// phase and closes them.
pub async fn run_clients(addrs: &[SocketAddr], n: usize, tag: &str, limits: Limits) -> Outcome {
    let started = Instant::now();
    let sem = Arc::new(Semaphore::new(limits.in_flight.max(1)));
    let (go_tx, go_rx) = watch::channel(false);
    let (leave_tx, leave_rx) = watch::channel(0usize);
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Finished clients park their sockets here so no one leaves before everyone is verified.
    let (keep_tx, mut keep_rx) = mpsc::channel::<Ws>(n.max(1));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(client(
                addrs[i % addrs.len()],
                i,
                (
                    format!("{tag}-{}", i / ROOM_SIZE),
                    i / ROOM_SIZE,
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
    let mut p = Progress::default();
    let guard = limits.phase_guard;
    await_stage(&mut rx, n, "joined", guard, &mut p).await;
    let join_secs = started.elapsed().as_secs_f64();
    await_stage(&mut rx, n, "marked", guard, &mut p).await;
    let _ = go_tx.send(true);
    await_stage(&mut rx, n, "done", guard, &mut p).await;
    let rooms = n.div_ceil(ROOM_SIZE);
    let step = match limits.leave_rooms_in_flight {
        0 => rooms.max(1),
        k => k,
    };
    let leave_deadline = tokio::time::Instant::now() + guard;
    let mut released = 0;
    while released < rooms {
        // A sliding window would keep exactly `step` rooms leaving; batches are simpler and
        // never exceed it.
        released = (released + step).min(rooms);
        let _ = leave_tx.send(released);
        let left_guard = leave_deadline.saturating_duration_since(tokio::time::Instant::now());
        await_stage(
            &mut rx,
            n.min(released * ROOM_SIZE),
            "left",
            left_guard,
            &mut p,
        )
        .await;
        if tokio::time::Instant::now() >= leave_deadline || p.failures.len() > n / 10 {
            break;
        }
    }
    let _ = leave_tx.send(usize::MAX);
    for t in &tasks {
        t.abort();
    }
    let (mut problems, jc) = verify(&p.done);
    let (leave_problems, lc) = verify_leaves(&p.left);
    problems.extend(leave_problems);
    let problem_count = p.failures.len() + problems.len();
    let mut shown: Vec<String> = p.failures.iter().take(5).cloned().collect();
    shown.extend(problems.iter().take(10 - shown.len()).cloned());
    let outcome = Outcome {
        sockets: n,
        joined: p.counts.get("joined").copied().unwrap_or(0),
        join_secs,
        secs: started.elapsed().as_secs_f64(),
        verified: p.done.len(),
        user_connected: jc.user_connected,
        init_offers: jc.init_offers,
        due: jc.due,
        peer_left: lc.peer_left,
        user_disconnected: lc.user_disconnected,
        rooms: n.div_ceil(ROOM_SIZE),
        leaves_exact: lc.exact,
        problems: shown,
        problem_count,
    };
    keep_rx.close();
    while keep_rx.recv().await.is_some() {}
    outcome
}
