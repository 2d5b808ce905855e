//! One participant: connect, join the room the demo's way, print what happens, chat from stdin,
//! leave after `--duration` or on a signal.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use rtcio::{ChannelOptions, Event, Origin, Socket};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::args::{SessionArgs, secs};
use crate::control::Control;
use crate::exit::{CliError, code};
use crate::output::{Output, epoch_ms};
use crate::receive::{LatencyReport, Receiver};
use crate::send::{self, Producers, Sender};

/// Server and ctrl events printed without `--listen`: the rtc.io example server's replies and
/// the app conventions of PROTOCOL.md §8. Server events and ctrl events share one namespace (as
/// in the browser); the line type says where one came from.
pub const DEFAULT_EVENTS: &[&str] = &[
    // example room server
    "join-ok",
    "join-error",
    "room-check-ok",
    "user-connected",
    "user-disconnected",
    "chat-message",
    // both (server echo or ctrl)
    "media-state",
    "stopScreenShare",
    // ctrl conventions
    "camera",
    "screenshare",
    "screen",
    "stream",
    "stop-share",
    "screen-stopped",
    "chat",
    "msg",
    "hello",
    "ping",
    "pong",
];

/// Library events with `Origin::Local`.
const LOCAL_EVENTS: &[&str] = &[
    "peer-connect",
    "peer-disconnect",
    "track-added",
    "track-removed",
    "connect",
    "disconnect",
    "connect_error",
];

/// The broadcast channel the demo chats on, and its message event.
pub const CHAT_CHANNEL: &str = "chat";
pub const CHAT_EVENT: &str = "msg";

/// Where and as whom to join.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub server: String,
    pub room: String,
    pub args: SessionArgs,
    /// The server this process hosts (`rtcio host`): on leaving, the room hears it from that
    /// server before it stops.
    pub hosted: Option<rtcio_server::DisconnectWatch>,
}

enum Incoming {
    Socket(Event),
    Channel(&'static str, Event),
    Stdin(Option<String>),
}

/// Why the session ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Duration,
    Signal,
    StdinEof,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Duration => "duration",
            End::Signal => "signal",
            End::StdinEof => "stdin-eof",
        }
    }
}

/// Connects with the options of `args`; errors carry the documented exit codes.
pub async fn connect(server: &str, opts: rtcio::Options) -> Result<Socket, CliError> {
    info!("connecting to {server}");
    Socket::connect(server, opts)
        .await
        .map_err(|e| CliError::connect(server, &e))
}

/// What a finished session measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Glass-to-glass latency per remote video that carried frame marks.
    pub latency: Vec<LatencyReport>,
}

/// Runs one participant until it leaves. `Ok` means a normal end.
pub async fn run(cfg: SessionConfig, out: Output) -> Result<(), CliError> {
    run_with_outcome(cfg, out).await.map(|_| ())
}

/// [`run`], returning the measurements.
pub async fn run_with_outcome(cfg: SessionConfig, out: Output) -> Result<Outcome, CliError> {
    // Sources first: a missing camera or file fails before we show up in the room.
    let producers = send::open(&cfg.args)?;
    let socket = connect(&cfg.server, cfg.args.net.options()).await?;
    let hosted = cfg.hosted.clone();
    let mut session = Session::new(cfg, out, socket.clone(), producers);
    let result = session.run().await;
    let outcome = Outcome {
        latency: session.receiver.latency_reports(),
    };
    // Leave cleanly in every case: peers notice at once instead of through their watchdog.
    let close = async {
        if tokio::time::timeout(Duration::from_secs(5), socket.close())
            .await
            .is_err()
        {
            warn!("closing the connections took longer than 5 s");
        }
    };
    match hosted {
        Some(mut watch) => {
            if !watch
                .after_own_disconnect(close, Duration::from_secs(1))
                .await
            {
                warn!("our own server did not see us leave within 1 s; stopping it anyway");
            }
        }
        None => close.await,
    }
    let sender = session.sender.take();
    let mut receiver = std::mem::replace(&mut session.receiver, Receiver::new(out, None));
    tokio::task::block_in_place(|| {
        // Recordings are finished here (the tracks ended with the connections).
        receiver.stop(send::STOP_WAIT);
        if let Some(s) = sender {
            s.stop(&socket);
        }
    });
    if let Ok(end) = &result {
        out.line("left", json!({"reason": end.as_str()}));
    }
    result.map(|_| outcome)
}

struct Session {
    cfg: SessionConfig,
    out: Output,
    socket: Socket,
    /// Display names by socket id (roster, camera announcements).
    names: HashMap<String, String>,
    /// Members announced before `join-ok` (the server's backfill).
    backfill: Vec<Value>,
    joined: bool,
    /// Sources waiting for the stream to exist.
    producers: Option<Producers>,
    /// What we send (after `run` started).
    sender: Option<Sender>,
    /// What we receive.
    receiver: Receiver,
    /// `mic` / `cam` of our media-state.
    mic: bool,
    cam: bool,
    /// Connected peers whose network path (selected candidate pair) is not printed yet.
    paths_pending: HashSet<String>,
}

impl Session {
    fn new(cfg: SessionConfig, out: Output, socket: Socket, producers: Producers) -> Self {
        let mut receiver = Receiver::new(out, cfg.args.record.clone());
        if let Some(device) = &cfg.args.play {
            receiver.play(crate::args::output_device(device));
        }
        let (tap, control) = producers.echo_canceller();
        receiver.feed_echo_canceller(tap, control);
        Session {
            mic: producers.has(rtcio::MediaKind::Audio),
            cam: producers.has(rtcio::MediaKind::Video),
            cfg,
            out,
            socket,
            names: HashMap::new(),
            backfill: Vec::new(),
            joined: false,
            producers: Some(producers),
            sender: None,
            receiver,
            paths_pending: HashSet::new(),
        }
    }

    async fn run(&mut self) -> Result<End, CliError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Incoming>();

        // Listeners first, so nothing the server sends in reply to join-room is missed.
        let mut names: BTreeSet<&str> = DEFAULT_EVENTS.iter().copied().collect();
        names.extend(LOCAL_EVENTS.iter().copied());
        names.extend(self.cfg.args.listen.iter().map(String::as_str));
        names.insert(self.cfg.args.stream_event.as_str());
        for name in names {
            let tx = tx.clone();
            self.socket.on(name, move |ev| {
                let _ = tx.send(Incoming::Socket(ev.clone()));
            });
        }

        // The demo's broadcast chat channel exists before any peer does, so every peer
        // connection is created with it (late negotiated channels are fragile, PROTOCOL §12.2).
        let chat = self
            .socket
            .create_channel(
                CHAT_CHANNEL,
                ChannelOptions {
                    ordered: Some(true),
                    ..ChannelOptions::reliable()
                },
            )
            .await
            .map_err(CliError::other)?;
        for event in [CHAT_EVENT, "data"] {
            let tx = tx.clone();
            chat.on(event, move |ev| {
                if ev.peer().is_some() {
                    let _ = tx.send(Incoming::Channel(CHAT_CHANNEL, ev.clone()));
                }
            });
        }

        if self.cfg.args.chat_stdin || self.cfg.args.control_stdin {
            spawn_stdin_reader(tx.clone());
        }
        drop(tx);

        // Our stream, announced the demo's way before joining: the library attaches it to each
        // peer as it comes and replays the event with it.
        if let Some(sender) = self.producers.take().and_then(|p| p.attach(&self.socket)) {
            let event = self.cfg.args.stream_event.clone();
            let payload = send::announcement(&event, &self.cfg.args.name, sender.stream());
            self.socket
                .emit(&event, vec![payload])
                .map_err(CliError::other)?;
            info!(event = %event, stream = %sender.stream().id(), "stream announced");
            self.sender = Some(sender);
        }

        let mut join = json!({"roomId": self.cfg.room, "name": self.cfg.args.name});
        if let Some(pw) = &self.cfg.args.password {
            join["password"] = Value::String(pw.clone());
        }
        self.socket
            .server()
            .emit("join-room", vec![join])
            .map_err(CliError::other)?;
        info!(room = %self.cfg.room, name = %self.cfg.args.name, "join-room sent");

        let join_deadline = Instant::now() + secs(self.cfg.args.join_timeout);
        let mut leave_at: Option<Instant> = None;
        let mut rx_open = true;
        let signal = shutdown_signal();
        tokio::pin!(signal);
        let mut stats_tick = tokio::time::interval_at(
            Instant::now() + Duration::from_secs(1),
            Duration::from_secs(1),
        );

        loop {
            let deadline = if self.joined {
                leave_at
            } else {
                Some(join_deadline)
            };
            let timer = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = rx.recv(), if rx_open => match msg {
                    Some(Incoming::Socket(ev)) => {
                        let was_joined = self.joined;
                        self.on_event(ev)?;
                        if self.joined && !was_joined {
                            leave_at = self.cfg.args.duration.map(|d| Instant::now() + secs(d));
                        }
                    }
                    Some(Incoming::Channel(channel, ev)) => self.on_channel(channel, ev),
                    Some(Incoming::Stdin(Some(line))) => {
                        if self.cfg.args.control_stdin {
                            self.control(&chat, &line);
                        } else {
                            self.send_chat(&chat, &line);
                        }
                    }
                    Some(Incoming::Stdin(None)) => {
                        if self.cfg.args.duration.is_none() {
                            info!("stdin closed: leaving");
                            return Ok(End::StdinEof);
                        }
                    }
                    // Every sender is gone: only the timer or a signal can end us now.
                    None => rx_open = false,
                },
                _ = timer => {
                    if !self.joined {
                        return Err(CliError::new(
                            code::JOIN_FAILED,
                            "join-timeout",
                            format!(
                                "no join-ok for room {:?} within {} s — is {} an rtc.io room server?",
                                self.cfg.room, self.cfg.args.join_timeout, self.cfg.server
                            ),
                        ));
                    }
                    info!("duration elapsed: leaving");
                    return Ok(End::Duration);
                }
                _ = &mut signal => {
                    info!("signal: leaving");
                    return Ok(End::Signal);
                }
                _ = stats_tick.tick() => {
                    self.print_stats();
                    self.print_paths().await;
                }
            }
        }
    }

    fn name_of(&self, id: &str) -> Value {
        self.names
            .get(id)
            .map(|n| Value::String(n.clone()))
            .unwrap_or(Value::Null)
    }

    fn on_event(&mut self, ev: Event) -> Result<(), CliError> {
        match &ev.origin {
            Origin::Local => self.on_local(&ev),
            Origin::Server => self.on_server(&ev)?,
            Origin::Peer(peer) => {
                let peer = peer.clone();
                // The demo's camera / screenshare payloads carry the sender's id and name.
                let a = ev.arg();
                if let (Some(id), Some(name)) = (
                    a.get("id").and_then(Value::as_str),
                    a.get("name").and_then(Value::as_str),
                ) && id == peer
                {
                    self.names.insert(peer.clone(), name.to_string());
                }
                match &ev.stream {
                    Some(rs) => {
                        let tracks: Vec<Value> = rs
                            .tracks()
                            .iter()
                            .map(|t| json!({"kind": send::kind_str(t.kind()), "mid": t.mid()}))
                            .collect();
                        self.out.line(
                            "stream",
                            json!({"peer": peer, "name": self.name_of(&peer), "event": ev.name,
                                   "args": ev.args, "stream": rs.id(), "msid": rs.msid(),
                                   "tracks": tracks}),
                        );
                        // `--no-receive`: never read, so its frames are dropped undecoded.
                        if !self.cfg.args.no_receive {
                            let name = self.names.get(&peer).cloned();
                            self.receiver.add_stream(rs, name);
                        }
                    }
                    None => self.out.line(
                        "event",
                        json!({"peer": peer, "name": self.name_of(&peer), "event": ev.name, "args": ev.args}),
                    ),
                }
            }
        }
        Ok(())
    }

    fn on_local(&mut self, ev: &Event) {
        let id = ev.arg().get("id").and_then(Value::as_str).unwrap_or("");
        match ev.name.as_str() {
            "peer-connect" => {
                info!(peer = id, "peer connected");
                self.paths_pending.insert(id.to_string());
                self.out.line(
                    "peer-connect",
                    json!({"peer": id, "name": self.name_of(id)}),
                );
                // The lifecycle docs' per-peer media state; the tutorial's ctrl form has the same
                // fields plus id and roomId, so send that one.
                let state = json!({"id": self.socket.id(), "mic": self.mic, "cam": self.cam, "roomId": self.cfg.room});
                // Its decoder will need an IDR: do not wait for its PLI.
                if let Some(s) = &self.sender {
                    s.request_keyframe();
                }
                if let Err(e) = self.socket.peer(id).emit("media-state", vec![state]) {
                    warn!("media-state to {id}: {e}");
                }
            }
            "peer-disconnect" => {
                info!(peer = id, "peer disconnected");
                self.paths_pending.remove(id);
                self.out.line(
                    "peer-disconnect",
                    json!({"peer": id, "name": self.name_of(id)}),
                );
            }
            "track-added" | "track-removed" => {
                let a = ev.arg();
                let peer = a.get("peerId").and_then(Value::as_str).unwrap_or("");
                let mid = a["track"].get("mid").and_then(Value::as_str).unwrap_or("");
                self.out.line(
                    &ev.name,
                    json!({"peer": peer, "name": self.name_of(peer), "stream": a.get("stream"),
                           "kind": a["track"].get("kind"), "mid": mid}),
                );
                if ev.name == "track-added"
                    && !self.cfg.args.no_receive
                    && let Some(rs) = &ev.stream
                {
                    let name = self.names.get(peer).cloned();
                    self.receiver.add_track(rs, mid, name);
                }
            }
            "connect" => {
                let id = ev.arg().as_str().unwrap_or("");
                info!(id, "signaling connected");
                self.out
                    .line("signaling", json!({"state": "connected", "id": id}));
            }
            "disconnect" => {
                warn!("signaling disconnected: {}", ev.arg());
                self.out.line(
                    "signaling",
                    json!({"state": "disconnected", "reason": ev.arg()}),
                );
            }
            "connect_error" => {
                warn!("signaling reconnect failed: {}", ev.arg());
                self.out
                    .line("signaling", json!({"state": "error", "message": ev.arg()}));
            }
            _ => {}
        }
    }

    fn on_server(&mut self, ev: &Event) -> Result<(), CliError> {
        let a = ev.arg();
        match ev.name.as_str() {
            "user-connected" => {
                if let (Some(id), Some(name)) = (
                    a.get("id").and_then(Value::as_str),
                    a.get("name").and_then(Value::as_str),
                ) {
                    self.names.insert(id.to_string(), name.to_string());
                    if !self.joined {
                        self.backfill.push(json!({"id": id, "name": name}));
                    }
                }
            }
            "join-error" if !self.joined => {
                self.print_server(ev);
                return Err(CliError::join_error(&self.cfg.room, a));
            }
            _ => {}
        }
        self.print_server(ev);
        if ev.name == "join-ok" && !self.joined {
            self.joined = true;
            info!(room = %self.cfg.room, id = %self.socket.id(), "joined");
            self.out.line(
                "joined",
                json!({
                    "room": self.cfg.room,
                    "id": self.socket.id(),
                    "name": self.cfg.args.name,
                    "server": self.cfg.server,
                    "members": self.backfill,
                }),
            );
        }
        Ok(())
    }

    /// One `path` line per connected peer once its candidate pair is selected: whether the
    /// call goes direct or through a TURN relay.
    async fn print_paths(&mut self) {
        let pending: Vec<String> = self.paths_pending.iter().cloned().collect();
        for peer in pending {
            let Some(stats) = self.socket.stats(peer.as_str()).await else {
                continue;
            };
            let (Some(local), Some(remote)) = (&stats.local, &stats.remote) else {
                continue;
            };
            let side = |c: &rtcio::stats::CandidateInfo| {
                json!({"type": c.candidate_type, "address": c.address, "port": c.port,
                       "protocol": c.protocol})
            };
            self.out.line(
                "path",
                json!({"peer": peer, "name": self.name_of(&peer), "local": side(local),
                       "remote": side(remote)}),
            );
            self.paths_pending.remove(&peer);
        }
    }

    fn print_stats(&mut self) {
        if let Some(s) = &mut self.sender {
            for line in s.stats() {
                self.out.line("send-stats", line);
            }
        }
        for (kind, line) in self.receiver.stats() {
            self.out.line(kind, line);
        }
    }

    fn print_server(&self, ev: &Event) {
        self.out
            .line("server-event", json!({"event": ev.name, "args": ev.args}));
    }

    fn on_channel(&self, channel: &str, ev: Event) {
        let peer = ev.peer().unwrap_or("").to_string();
        let mut line = json!({
            "peer": peer,
            "name": self.name_of(&peer),
            "channel": channel,
            "event": ev.name,
            "args": ev.args,
        });
        if let Some(data) = &ev.data {
            line["bytes"] = json!(data.len());
        }
        self.out.line("channel-message", line);
    }

    /// One `--control-stdin` line: a device switch (a `device` line when done, a
    /// `control-error` line, and the call goes on, when not) or a chat message.
    fn control(&mut self, chat: &rtcio::BroadcastChannel, line: &str) {
        let cmd = match Control::parse(line) {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                warn!("control: {e}");
                self.out
                    .line("control-error", json!({"command": line.trim(), "error": e}));
                return;
            }
        };
        let (kind, result) = match &cmd {
            Control::Chat(text) => return self.send_chat(chat, text),
            Control::Speaker(device) => (
                "speaker",
                self.receiver
                    .set_speaker(crate::args::output_device(device)),
            ),
            Control::Camera(choice) => (
                "camera",
                self.switch_source(|s, args| s.switch_video(args, choice)),
            ),
            Control::Mic(choice) => ("mic", self.switch_source(|s, _| s.switch_audio(choice))),
        };
        match result {
            Ok(source) => {
                info!(kind, %source, "device switched");
                let stream = self.sender.as_ref().map(|s| s.stream().id().to_string());
                self.out.line(
                    "device",
                    json!({"kind": kind, "source": source, "stream": stream}),
                );
                if matches!(cmd, Control::Camera(_) | Control::Mic(_)) {
                    self.media_state_changed(kind, source != "off");
                }
            }
            Err(e) => {
                warn!("control: {e}");
                self.out
                    .line("control-error", json!({"command": line.trim(), "error": e}));
            }
        }
    }

    /// Runs a source switch of the sender (opening a device blocks: off the async workers).
    fn switch_source(
        &mut self,
        f: impl FnOnce(&mut Sender, &crate::args::SessionArgs) -> Result<String, CliError>,
    ) -> Result<String, String> {
        let args = &self.cfg.args;
        let Some(sender) = self.sender.as_mut() else {
            return Err("nothing is sent: start with --video / --audio to switch them".into());
        };
        tokio::task::block_in_place(|| f(sender, args)).map_err(|e| e.to_string())
    }

    /// Our camera or microphone went on or off: the peers hear it as `media-state` (new peers
    /// get it on connect).
    fn media_state_changed(&mut self, kind: &str, on: bool) {
        if kind == "camera" {
            self.cam = on;
        } else {
            self.mic = on;
        }
        let state = json!({"id": self.socket.id(), "mic": self.mic, "cam": self.cam, "roomId": self.cfg.room});
        if let Err(e) = self.socket.emit("media-state", vec![state]) {
            warn!("media-state: {e}");
        }
    }

    fn send_chat(&self, chat: &rtcio::BroadcastChannel, line: &str) {
        let text = line.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            return;
        }
        let at = epoch_ms();
        chat.emit(
            CHAT_EVENT,
            vec![json!({"name": self.cfg.args.name, "text": text, "at": at})],
        );
        let mut peers = chat.peers();
        peers.sort();
        self.out.line(
            "chat-sent",
            json!({"channel": CHAT_CHANNEL, "event": CHAT_EVENT, "text": text, "at": at, "peers": peers}),
        );
    }
}

/// Reads stdin lines on a plain thread (a blocked read must not hold up runtime shutdown).
fn spawn_stdin_reader(tx: mpsc::UnboundedSender<Incoming>) {
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            use std::io::BufRead;
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                match line {
                    Ok(l) => {
                        if tx.send(Incoming::Stdin(Some(l))).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        warn!("reading stdin: {e}");
                        break;
                    }
                }
            }
            let _ = tx.send(Incoming::Stdin(None));
        });
    if let Err(e) = spawned {
        warn!("cannot read stdin: {e}");
    }
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
