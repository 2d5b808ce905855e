//! File transfer to and from one peer over the per-peer channel `file` (PROTOCOL.md §8 "File
//! transfer"), wire-compatible with the rtc.io tutorial:
//!
//! - both ends create the per-peer channel `file` (`ordered: true`) on `peer-connect`;
//! - the sender emits `meta {tid, name, size, mime}`, then the file's bytes as binary messages of
//!   [`CHUNK_SIZE`] bytes (`send`, waiting for `drain` whenever it returns false), then
//!   `eof {tid}`;
//! - the receiver drops binary messages that come before a `meta` and accepts `eof` only for the
//!   transfer it is receiving.
//!
//! Additions a tutorial peer ignores without harm: our `eof` also carries `sha256` (hex, checked
//! when present), and either side may emit `cancel {tid, reason}` to stop a transfer (a tutorial
//! receiver keeps a partial buffer until its next `meta`; a tutorial sender keeps sending and we
//! drop what follows).
//!
//! The protocol decisions (message parsing, the receiver's state machine, safe file names,
//! collisions, progress throttling) are plain functions and types in `transfer/wire.rs`
//! (re-exported here), unit tested without I/O. [`Transfers`] below does the I/O: it reads files from disk, writes
//! received ones to a temporary file in the downloads directory and renames it on `eof`, and
//! reports to the UI through a [`UiSink`]: `file-progress {tid, peerId, direction, name, size,
//! bytes}` (at most every [`PROGRESS_INTERVAL`], plus the final one), `file-done {tid, peerId,
//! direction, name, path?}` and `file-error {tid, peerId, direction, message}`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtcio::{Channel, ChannelOptions, Event, ListenerId, ReadyState, Socket};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::session::UiSink;

/// The per-peer channel's name (SCTP id 139).
pub const CHANNEL: &str = "file";
/// Size of every binary message but the last one of a file.
pub const CHUNK_SIZE: usize = 16 * 1024;
/// At most one `file-progress` per transfer within this interval (the final one always goes).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);
/// How long a sender waits for `drain` before giving up on a stuck connection.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The `file` channel's options: reliable and ordered (the wire part), and local watermarks
/// lower than rtc.io's 16 MiB / 1 MiB so the sender's progress stays within 1 MiB of what
/// the transport really delivered (watermarks never reach the wire).
pub fn channel_options() -> ChannelOptions {
    ChannelOptions {
        ordered: Some(true),
        high_watermark: Some(1024 * 1024),
        low_watermark: Some(256 * 1024),
        ..ChannelOptions::reliable()
    }
}

// The wire messages, the receiver's state machine and safe names: no I/O, in a file of their
// own so the fuzz build (fuzz/) compiles them without Tauri or the rtcio client.
mod wire;
pub use wire::*;

// ─── I/O ────────────────────────────────────────────────────────────────────────────────────────

/// Direction of a transfer, as the UI events spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We send.
    Send,
    /// We receive.
    Receive,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Send => "send",
            Direction::Receive => "receive",
        }
    }
}

/// The downloads directory: the platform's (`dirs::download_dir`), else `~/Downloads`, else a
/// `Downloads` folder in the temporary directory.
pub fn default_downloads_dir() -> PathBuf {
    dirs::download_dir()
        .or_else(|| dirs::home_dir().map(|h| h.join("Downloads")))
        .unwrap_or_else(|| std::env::temp_dir().join("Downloads"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the maps are still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sends the three UI events.
#[derive(Clone)]
struct Reporter {
    ui: UiSink,
    peer: String,
    dir: Direction,
}

impl Reporter {
    fn progress(&self, tid: &str, name: &str, size: u64, bytes: u64) {
        (self.ui)(
            "file-progress",
            json!({"tid": tid, "peerId": self.peer, "direction": self.dir.as_str(),
                   "name": name, "size": size, "bytes": bytes}),
        );
    }
    fn done(&self, tid: &str, name: &str, path: Option<&Path>) {
        let mut v = json!({"tid": tid, "peerId": self.peer, "direction": self.dir.as_str(),
                           "name": name});
        if let Some(p) = path {
            v["path"] = json!(p.to_string_lossy());
        }
        (self.ui)("file-done", v);
    }
    fn error(&self, tid: &str, error: &TransferError) {
        warn!(tid, peer = %self.peer, direction = self.dir.as_str(), "file transfer failed: {error}");
        (self.ui)(
            "file-error",
            json!({"tid": tid, "peerId": self.peer, "direction": self.dir.as_str(),
                   "message": error.to_string()}),
        );
    }
}

/// What a peer's receive task is fed, in channel order.
enum Input {
    Meta(Value),
    Data(Bytes),
    Eof(Value),
    Cancel(Value),
    CancelLocal(String),
    /// The channel closed: the current file is lost; the link stays for a re-attached channel.
    Closed,
    /// The peer is forgotten (it left, or we leave): end the current file with this, then stop.
    Shutdown(TransferError),
}

struct PeerLink {
    channel: Channel,
    listeners: Vec<ListenerId>,
    tx: mpsc::UnboundedSender<Input>,
    task: JoinHandle<()>,
}

struct Outgoing {
    peer: String,
    stop: watch::Sender<Option<TransferError>>,
}

struct Inner {
    socket: Socket,
    dir: PathBuf,
    ui: UiSink,
    peers: Mutex<HashMap<String, PeerLink>>,
    outgoing: Mutex<HashMap<String, Outgoing>>,
    /// UI tid of each file being received → its peer.
    incoming: Mutex<HashMap<String, String>>,
    senders: Mutex<Vec<JoinHandle<()>>>,
    next: AtomicU64,
}

/// File transfers of one call: the `file` channel to every peer, running sends and receives.
pub struct Transfers {
    inner: Arc<Inner>,
    watcher: JoinHandle<()>,
}

impl Transfers {
    /// Creates the `file` channel to every peer that connects from now on and receives files
    /// into `dir` (created when the first file arrives).
    pub fn start(socket: Socket, dir: PathBuf, ui: UiSink) -> Transfers {
        let inner = Arc::new(Inner {
            socket: socket.clone(),
            dir,
            ui,
            peers: Mutex::new(HashMap::new()),
            outgoing: Mutex::new(HashMap::new()),
            incoming: Mutex::new(HashMap::new()),
            senders: Mutex::new(Vec::new()),
            next: AtomicU64::new(1),
        });
        let mut connects = socket.subscribe("peer-connect");
        let mut disconnects = socket.subscribe("peer-disconnect");
        let weak = Arc::downgrade(&inner);
        let watcher = tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(ev) = connects.recv() => {
                        let Some(inner) = weak.upgrade() else { break };
                        if let Some(id) = crate::inbound::peer_id(&ev) {
                            inner.link(&id).await;
                        }
                    }
                    Some(ev) = disconnects.recv() => {
                        let Some(inner) = weak.upgrade() else { break };
                        if let Some(id) = crate::inbound::peer_id(&ev) {
                            inner.unlink(&id, TransferError::PeerGone);
                        }
                    }
                    else => break,
                }
            }
        });
        info!(dir = %inner.dir.display(), "file transfers ready");
        Transfers { inner, watcher }
    }

    /// Where received files go.
    pub fn downloads_dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Starts sending the file at `path` to `peer`; returns the transfer id. Progress, the end
    /// and errors arrive as UI events.
    pub async fn send_file(&self, peer: &str, path: &Path) -> Result<String, TransferError> {
        let existing = lock(&self.inner.peers).get(peer).map(|l| l.channel.clone());
        let channel = match existing {
            Some(c) => c,
            // Connected, but its peer-connect is still being handled here: link it now.
            None if self.inner.socket.peers().await.iter().any(|p| p == peer) => self
                .inner
                .link(peer)
                .await
                .ok_or_else(|| TransferError::NoPeer(peer.to_string()))?,
            None => return Err(TransferError::NoPeer(peer.to_string())),
        };
        let source = |why: String| TransferError::Source {
            path: path.display().to_string(),
            why,
        };
        let meta = std::fs::metadata(path).map_err(|e| source(e.to_string()))?;
        if !meta.is_file() {
            return Err(source("not a regular file".into()));
        }
        let file = std::fs::File::open(path).map_err(|e| source(e.to_string()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let tid = new_tid(self.inner.next.fetch_add(1, Ordering::Relaxed));
        let (stop, stopped) = watch::channel(None);
        lock(&self.inner.outgoing).insert(
            tid.clone(),
            Outgoing {
                peer: peer.to_string(),
                stop,
            },
        );
        let job = SendJob {
            reporter: Reporter {
                ui: self.inner.ui.clone(),
                peer: peer.to_string(),
                dir: Direction::Send,
            },
            channel,
            tid: tid.clone(),
            mime: mime_for(&name).to_string(),
            name,
            size: meta.len(),
        };
        info!(tid, peer, path = %path.display(), size = job.size, "sending a file");
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            let tid = job.tid.clone();
            job.run(tokio::fs::File::from_std(file), stopped).await;
            lock(&inner.outgoing).remove(&tid);
        });
        let mut senders = lock(&self.inner.senders);
        senders.retain(|t| !t.is_finished());
        senders.push(task);
        Ok(tid)
    }

    /// True once our `file` channel to `peer` exists and is open, i.e. data the peer sends
    /// from now on reaches us. (Data for a negotiated channel that is not created yet is lost:
    /// see the crate README.)
    pub fn ready(&self, peer: &str) -> bool {
        lock(&self.inner.peers)
            .get(peer)
            .is_some_and(|l| l.channel.ready_state() == ReadyState::Open)
    }

    /// Cancels a running transfer (either direction); both sides get `file-error`.
    pub fn cancel(&self, tid: &str) -> Result<(), TransferError> {
        if let Some(o) = lock(&self.inner.outgoing).get(tid) {
            o.stop.send_replace(Some(TransferError::Cancelled));
            return Ok(());
        }
        let peer = lock(&self.inner.incoming).get(tid).cloned();
        if let Some(peer) = peer
            && let Some(link) = lock(&self.inner.peers).get(&peer)
        {
            let _ = link.tx.send(Input::CancelLocal(tid.to_string()));
            return Ok(());
        }
        Err(TransferError::UnknownTransfer(tid.to_string()))
    }

    /// Stops everything (we leave): running transfers end with `file-error`, partial files are
    /// removed. Waits at most 2 s.
    pub async fn stop(self) {
        self.watcher.abort();
        for o in lock(&self.inner.outgoing).values() {
            o.stop.send_replace(Some(TransferError::Left));
        }
        let peers: Vec<String> = lock(&self.inner.peers).keys().cloned().collect();
        let mut tasks = Vec::new();
        for p in peers {
            if let Some(t) = self.inner.unlink(&p, TransferError::Left) {
                tasks.push(t);
            }
        }
        tasks.append(&mut lock(&self.inner.senders));
        let all = futures_join(tasks);
        if tokio::time::timeout(Duration::from_secs(2), all)
            .await
            .is_err()
        {
            warn!("file transfers did not stop within 2 s");
        }
    }
}

async fn futures_join(tasks: Vec<JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

impl Inner {
    /// Creates the `file` channel to a peer and starts its receive task; returns the channel.
    /// Idempotent: a peer already linked keeps its link (a reconnected peer was unlinked by its
    /// `peer-disconnect`).
    async fn link(self: &Arc<Self>, peer: &str) -> Option<Channel> {
        if let Some(l) = lock(&self.peers).get(peer) {
            return Some(l.channel.clone());
        }
        let channel = match self
            .socket
            .peer(peer)
            .create_channel(CHANNEL, channel_options())
            .await
        {
            Ok(c) => c,
            Err(e) => {
                warn!(peer, "cannot create the file channel: {e}");
                return None;
            }
        };
        let mut peers = lock(&self.peers);
        if let Some(l) = peers.get(peer) {
            return Some(l.channel.clone());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut listeners = Vec::new();
        type Wrap = fn(&Event) -> Option<Input>;
        let forwards: [(&str, Wrap); 5] = [
            ("meta", |ev| Some(Input::Meta(ev.arg().clone()))),
            ("eof", |ev| Some(Input::Eof(ev.arg().clone()))),
            ("cancel", |ev| Some(Input::Cancel(ev.arg().clone()))),
            ("data", |ev| ev.data.clone().map(Input::Data)),
            ("close", |_| Some(Input::Closed)),
        ];
        for (event, wrap) in forwards {
            let tx = tx.clone();
            listeners.push(channel.on(event, move |ev| {
                if let Some(input) = wrap(ev) {
                    let _ = tx.send(input);
                }
            }));
        }
        let task = tokio::spawn(receive_loop(
            self.clone(),
            peer.to_string(),
            channel.clone(),
            rx,
        ));
        debug!(peer, "file channel created");
        peers.insert(
            peer.to_string(),
            PeerLink {
                channel: channel.clone(),
                listeners,
                tx,
                task,
            },
        );
        Some(channel)
    }

    /// Forgets a peer: its receive task ends the current file with `why`; sends to it stop.
    fn unlink(&self, peer: &str, why: TransferError) -> Option<JoinHandle<()>> {
        for o in lock(&self.outgoing).values().filter(|o| o.peer == peer) {
            o.stop.send_if_modified(|s| {
                let first = s.is_none();
                if first {
                    *s = Some(why.clone());
                }
                first
            });
        }
        let link = lock(&self.peers).remove(peer)?;
        for id in link.listeners {
            link.channel.off(id);
        }
        let _ = link.tx.send(Input::Shutdown(why));
        Some(link.task)
    }

    /// A UI tid for a peer's transfer: its own tid unless that is in use here.
    fn ui_tid(&self, wire: Option<&str>) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(t) = wire else {
            return format!("r{}-{n}", crate::inbound::now_ms());
        };
        let in_use = lock(&self.incoming).contains_key(t);
        let in_use = in_use || lock(&self.outgoing).contains_key(t);
        if in_use {
            format!("{t}~{n}")
        } else {
            t.to_string()
        }
    }
}

/// The file being written.
struct Sink {
    tid: String,
    name: String,
    size: u64,
    temp: PathBuf,
    file: tokio::io::BufWriter<tokio::fs::File>,
    hash: Sha256,
    throttle: Throttle,
    started: Instant,
}

async fn receive_loop(
    inner: Arc<Inner>,
    peer: String,
    channel: Channel,
    mut rx: mpsc::UnboundedReceiver<Input>,
) {
    let rep = Reporter {
        ui: inner.ui.clone(),
        peer: peer.clone(),
        dir: Direction::Receive,
    };
    let mut state = Receiver::default();
    let mut sink: Option<Sink> = None;
    while let Some(input) = rx.recv().await {
        let mut chunk = None;
        let mut end = false;
        let actions: Vec<Action> = match input {
            Input::Meta(v) => {
                let tid = inner.ui_tid(parse_tid(&v).as_deref());
                state.on_meta(&v, tid)
            }
            Input::Data(b) => {
                let a = state.on_chunk(b.len());
                chunk = Some(b);
                a.into_iter().collect()
            }
            Input::Eof(v) => state.on_eof(&v).into_iter().collect(),
            Input::Cancel(v) => {
                // A cancel for something we send goes to that send.
                let tid = parse_tid(&v);
                let reason = v.get("reason").and_then(Value::as_str).map(clip);
                let ours = tid.as_deref().and_then(|t| {
                    lock(&inner.outgoing)
                        .get(t)
                        .filter(|o| o.peer == peer)
                        .map(|o| {
                            o.stop
                                .send_replace(Some(TransferError::CancelledByPeer(reason.clone())))
                        })
                });
                if ours.is_some() {
                    Vec::new()
                } else {
                    state.on_cancel(&v).into_iter().collect()
                }
            }
            Input::CancelLocal(tid) => state.cancel_local(&tid).into_iter().collect(),
            Input::Closed => {
                // Sends to this peer cannot go on either.
                for o in lock(&inner.outgoing).values().filter(|o| o.peer == peer) {
                    o.stop.send_if_modified(|s| {
                        let first = s.is_none();
                        if first {
                            *s = Some(TransferError::PeerGone);
                        }
                        first
                    });
                }
                state.closed(TransferError::PeerGone).into_iter().collect()
            }
            Input::Shutdown(why) => {
                end = true;
                state.closed(why).into_iter().collect()
            }
        };
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            let failed = perform(&inner, &rep, &channel, &mut sink, action, &mut chunk).await;
            if let Some(e) = failed {
                queue.extend(state.fail(e));
            }
        }
        if end {
            break;
        }
    }
    // Whatever is left (the channel's listeners are gone): never leave a partial file.
    if let Some(s) = sink.take() {
        discard(&inner, s).await;
    }
}

async fn discard(inner: &Inner, s: Sink) {
    lock(&inner.incoming).remove(&s.tid);
    drop(s.file);
    if let Err(e) = tokio::fs::remove_file(&s.temp).await {
        warn!(path = %s.temp.display(), "cannot remove a partial file: {e}");
    }
}

/// Carries out one action; returns an error that must stop the current file.
async fn perform(
    inner: &Inner,
    rep: &Reporter,
    channel: &Channel,
    sink: &mut Option<Sink>,
    action: Action,
    chunk: &mut Option<Bytes>,
) -> Option<TransferError> {
    match action {
        Action::Begin(inc) => {
            lock(&inner.incoming).insert(inc.tid.clone(), rep.peer.clone());
            info!(tid = %inc.tid, peer = %rep.peer, name = %inc.name, size = inc.size, "receiving a file");
            rep.progress(&inc.tid, &inc.name, inc.size, 0);
            match create_temp(&inner.dir, &inc.tid).await {
                Ok((temp, file)) => {
                    let mut throttle = Throttle::new(PROGRESS_INTERVAL);
                    throttle.ready(Instant::now());
                    *sink = Some(Sink {
                        tid: inc.tid,
                        name: inc.name,
                        size: inc.size,
                        temp,
                        file: tokio::io::BufWriter::with_capacity(256 * 1024, file),
                        hash: Sha256::new(),
                        throttle,
                        started: Instant::now(),
                    });
                    None
                }
                Err(e) => Some(TransferError::Io(format!(
                    "cannot create a file in {}: {e}",
                    inner.dir.display()
                ))),
            }
        }
        Action::Write { tid, got } => {
            let (Some(s), Some(bytes)) = (sink.as_mut(), chunk.take()) else {
                return None;
            };
            if s.tid != tid {
                return None;
            }
            s.hash.update(&bytes);
            if let Err(e) = s.file.write_all(&bytes).await {
                return Some(TransferError::Io(format!("cannot write the file: {e}")));
            }
            if s.throttle.ready(Instant::now()) && got < s.size {
                rep.progress(&s.tid, &s.name, s.size, got);
            }
            None
        }
        Action::Finish { tid, sha256 } => {
            let Some(mut s) = sink.take().filter(|s| s.tid == tid) else {
                // An empty file's Begin failed already; nothing to finish.
                return None;
            };
            if let Err(e) = s.file.flush().await {
                let err = TransferError::Io(format!("cannot write the file: {e}"));
                rep.error(&s.tid, &err);
                discard(inner, s).await;
                return None;
            }
            let digest = hex(&std::mem::take(&mut s.hash).finalize());
            if sha256.is_some_and(|h| h != digest) {
                rep.error(&s.tid, &TransferError::Checksum);
                discard(inner, s).await;
                return None;
            }
            match place(&inner.dir, &s.temp, &s.name).await {
                Ok(path) => {
                    lock(&inner.incoming).remove(&s.tid);
                    let secs = s.started.elapsed().as_secs_f64();
                    info!(tid = %s.tid, path = %path.display(), bytes = s.size,
                          mb_per_s = s.size as f64 / 1_048_576.0 / secs.max(1e-6), "file received");
                    rep.progress(&s.tid, &s.name, s.size, s.size);
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or(s.name);
                    rep.done(&s.tid, &name, Some(&path));
                }
                Err(e) => {
                    rep.error(&s.tid, &TransferError::Io(e));
                    discard(inner, s).await;
                }
            }
            None
        }
        Action::Abort {
            tid,
            wire_tid,
            error,
            notify,
        } => {
            if let Some(s) = sink.take() {
                discard(inner, s).await;
            }
            lock(&inner.incoming).remove(&tid);
            rep.error(&tid, &error);
            if notify {
                channel.emit(
                    "cancel",
                    vec![json!({"tid": wire_tid, "reason": error.to_string()})],
                );
            }
            None
        }
        Action::Report { tid, error } => {
            rep.error(&tid, &error);
            None
        }
        Action::Refuse { wire_tid, error } => {
            channel.emit(
                "cancel",
                vec![json!({"tid": wire_tid, "reason": error.to_string()})],
            );
            None
        }
    }
}

/// Creates `dir` if needed and a new hidden temporary file in it.
async fn create_temp(dir: &Path, tid: &str) -> std::io::Result<(PathBuf, tokio::fs::File)> {
    tokio::fs::create_dir_all(dir).await?;
    let tag: String = tid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(40)
        .collect();
    for n in 0u32..1000 {
        let temp = dir.join(format!(".rtcio-{tag}-{n}.part"));
        match tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .await
        {
            Ok(f) => return Ok((temp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "no free temporary file name",
    ))
}

/// Moves a complete temporary file to `dir/<name>` or the first free `name (n)`; never replaces
/// an existing file (hard link, then unlink the temporary name).
async fn place(dir: &Path, temp: &Path, name: &str) -> Result<PathBuf, String> {
    let dir = dir.to_path_buf();
    let temp = temp.to_path_buf();
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        for _ in 0..100 {
            let chosen = unique_name(&name, |c| dir.join(c).symlink_metadata().is_ok());
            let path = dir.join(&chosen);
            // `chosen` is one safe path component, so `path` is directly inside `dir`.
            if path.parent() != Some(dir.as_path()) {
                return Err(format!("refusing to write outside {}", dir.display()));
            }
            match std::fs::hard_link(&temp, &path) {
                Ok(()) => {
                    let _ = std::fs::remove_file(&temp);
                    return Ok(path);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(_) => {
                    // File systems without hard links: a rename (the name was free a moment ago).
                    return std::fs::rename(&temp, &path)
                        .map(|()| path)
                        .map_err(|e| format!("cannot save the file: {e}"));
                }
            }
        }
        Err("cannot find a free file name".to_string())
    })
    .await
    .map_err(|e| format!("saving stopped: {e}"))?
}

/// A transfer id unique across peers: time, a random part (std's per-process random hash keys)
/// and a counter.
fn new_tid(n: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{:x}-{:08x}-{n}", crate::inbound::now_ms(), random as u32)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One file going out.
struct SendJob {
    reporter: Reporter,
    channel: Channel,
    tid: String,
    name: String,
    mime: String,
    size: u64,
}

impl SendJob {
    async fn run(self, file: tokio::fs::File, mut stop: watch::Receiver<Option<TransferError>>) {
        let started = Instant::now();
        let rep = self.reporter.clone();
        rep.progress(&self.tid, &self.name, self.size, 0);
        let result = tokio::select! {
            r = self.stream(file) => r,
            why = stopped(&mut stop) => Err(why),
        };
        match result {
            Ok(()) => {
                let secs = started.elapsed().as_secs_f64();
                info!(tid = %self.tid, bytes = self.size,
                      mb_per_s = self.size as f64 / 1_048_576.0 / secs.max(1e-6), "file sent");
                rep.progress(&self.tid, &self.name, self.size, self.size);
                rep.done(&self.tid, &self.name, None);
            }
            Err(e) => {
                // The receiver must not wait for the rest (unless it is the one that stopped us
                // or it is gone).
                if !matches!(
                    e,
                    TransferError::CancelledByPeer(_) | TransferError::PeerGone
                ) {
                    let reason = match &e {
                        TransferError::Left => "the sender left the room".to_string(),
                        other => other.to_string(),
                    };
                    self.channel
                        .emit("cancel", vec![json!({"tid": self.tid, "reason": reason})]);
                }
                rep.error(&self.tid, &e);
            }
        }
    }

    /// `meta`, the chunks with backpressure, `eof`.
    async fn stream(&self, mut file: tokio::fs::File) -> Result<(), TransferError> {
        let ch = &self.channel;
        let mut drains = ch.subscribe("drain");
        let mut errors = ch.subscribe("error");
        let mut opens = ch.subscribe("open");
        if ch.ready_state() != ReadyState::Open {
            tokio::time::timeout(STALL_TIMEOUT, opens.recv())
                .await
                .map_err(|_| TransferError::Channel("the file channel did not open".into()))?;
        }
        let meta = vec![meta_payload(&self.tid, &self.name, self.size, &self.mime)];
        emit_wait(ch, "meta", meta).await?;
        let mut hash = Sha256::new();
        let mut sent = 0u64;
        let mut throttle = Throttle::new(PROGRESS_INTERVAL);
        throttle.ready(Instant::now());
        let mut buf = vec![0u8; CHUNK_SIZE];
        while sent < self.size {
            let want = (self.size - sent).min(CHUNK_SIZE as u64) as usize;
            let mut filled = 0;
            while filled < want {
                let n = file
                    .read(&mut buf[filled..want])
                    .await
                    .map_err(|e| TransferError::Io(format!("cannot read the file: {e}")))?;
                if n == 0 {
                    return Err(TransferError::Io(
                        "the file got shorter while it was being sent".into(),
                    ));
                }
                filled += n;
            }
            let chunk = Bytes::copy_from_slice(&buf[..want]);
            hash.update(&chunk);
            self.send_chunk(chunk, &mut drains, &mut errors).await?;
            sent += want as u64;
            if throttle.ready(Instant::now()) && sent < self.size {
                self.reporter
                    .progress(&self.tid, &self.name, self.size, sent);
            }
        }
        let digest = hex(&hash.finalize());
        emit_wait(ch, "eof", vec![eof_payload(&self.tid, &digest)]).await
    }

    /// rtc.io's `send`; whenever it returns false, waits for `drain`. A chunk the channel
    /// refused (an `error` during the send) is sent again after the drain, so nothing is lost.
    async fn send_chunk(
        &self,
        chunk: Bytes,
        drains: &mut mpsc::UnboundedReceiver<Event>,
        errors: &mut mpsc::UnboundedReceiver<Event>,
    ) -> Result<(), TransferError> {
        let ch = &self.channel;
        loop {
            while drains.try_recv().is_ok() {}
            while errors.try_recv().is_ok() {}
            if ch.send(chunk.clone()).await {
                return Ok(());
            }
            // The channel dispatches a refusal's `error` before `send` returns.
            let mut refused = false;
            while let Ok(ev) = errors.try_recv() {
                let msg = ev.arg().as_str().unwrap_or_default();
                refused |= !msg.contains("invalid JSON envelope");
            }
            if ch.ready_state() != ReadyState::Open {
                return Err(TransferError::PeerGone);
            }
            match tokio::time::timeout(STALL_TIMEOUT, drains.recv()).await {
                Ok(Some(_)) => {}
                Ok(None) => return Err(TransferError::PeerGone),
                Err(_) => {
                    return Err(TransferError::Channel(
                        "the peer stopped taking data for 60 s".into(),
                    ));
                }
            }
            if !refused {
                return Ok(());
            }
            debug!(tid = %self.tid, "a refused chunk is sent again");
        }
    }
}

/// [`Channel::emit_wait`] (never refused, waits for room) with the stall limit.
async fn emit_wait(ch: &Channel, event: &str, args: Vec<Value>) -> Result<(), TransferError> {
    match tokio::time::timeout(STALL_TIMEOUT, ch.emit_wait(event, args)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(TransferError::PeerGone),
        Err(_) => Err(TransferError::Channel(format!(
            "the peer did not take `{event}` for 60 s"
        ))),
    }
}

/// Resolves with the reason once a transfer is told to stop.
async fn stopped(stop: &mut watch::Receiver<Option<TransferError>>) -> TransferError {
    loop {
        if let Some(e) = stop.borrow_and_update().clone() {
            return e;
        }
        if stop.changed().await.is_err() {
            // The sender side is gone only when the whole call is: treat as leaving.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_parsing() {
        let m = parse_meta(&json!({"tid": "t1", "name": "a.txt", "size": 5, "mime": "text/plain"}))
            .unwrap();
        assert_eq!(m.tid.as_deref(), Some("t1"));
        assert_eq!(
            (m.name.as_str(), m.size, m.mime.as_str()),
            ("a.txt", 5, "text/plain")
        );
        // AGENTS form: no tid; no mime → the tutorial's default; numeric tid; float size.
        let m = parse_meta(&json!({"name": "b", "size": 1e3})).unwrap();
        assert_eq!((m.tid, m.size, m.mime.as_str()), (None, 1000, DEFAULT_MIME));
        assert_eq!(
            parse_meta(&json!({"tid": 1712345678901u64, "size": 0}))
                .unwrap()
                .tid
                .as_deref(),
            Some("1712345678901")
        );
        assert_eq!(parse_meta(&json!({"size": 0})).unwrap().name, "file");
        for bad in [
            json!(null),
            json!("x"),
            json!({"name": "a"}),
            json!({"size": -1}),
            json!({"size": 1.5}),
            json!({"size": "10"}),
            json!({"size": 1e300}),
        ] {
            assert!(
                matches!(parse_meta(&bad), Err(TransferError::BadMeta(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_meta(&json!({"size": MAX_FILE_SIZE + 1})),
            Err(TransferError::TooLarge { .. })
        ));
        let huge = "n".repeat(10_000);
        assert_eq!(
            parse_meta(&json!({"size": 1, "name": huge}))
                .unwrap()
                .name
                .len(),
            MAX_FIELD_CHARS
        );
    }

    #[test]
    fn eof_parsing() {
        let h = "AB".repeat(32);
        let e = parse_eof(&json!({"tid": "t", "sha256": h}));
        assert_eq!(e.tid.as_deref(), Some("t"));
        assert_eq!(e.sha256, Some("ab".repeat(32)));
        assert_eq!(parse_eof(&json!({"sha256": "zz"})).sha256, None);
        assert_eq!(
            parse_eof(&json!({})),
            Eof {
                tid: None,
                sha256: None
            }
        );
        assert_eq!(parse_eof(&Value::Null).tid, None);
    }

    #[test]
    fn hostile_names_become_one_safe_component() {
        for (raw, want) in [
            ("a.txt", "a.txt"),
            ("../../x", "x"),
            ("..\\..\\evil.exe", "evil.exe"),
            ("/etc/passwd", "passwd"),
            ("dir/", "dir"),
            ("..", "file"),
            ("...", "file"),
            ("", "file"),
            ("   ", "file"),
            (".bashrc", "bashrc"),
            ("a\u{0}b\nc.txt", "a_b_c.txt"),
            ("what?.txt", "what_.txt"),
            ("C:\\Users\\x\\report.pdf", "report.pdf"),
            ("con.txt", "_con.txt"),
            ("LPT1", "_LPT1"),
            ("trailing. ", "trailing"),
            ("résumé ✓.pdf", "résumé ✓.pdf"),
        ] {
            assert_eq!(safe_file_name(raw), want, "{raw:?}");
        }
        let long = format!("{}.tar.gz", "é".repeat(300));
        let s = safe_file_name(&long);
        assert!(s.len() <= MAX_NAME_BYTES, "{}", s.len());
        assert!(s.ends_with(".gz"));
        for raw in ["../../x", "a/../../b", "\\\\server\\share\\f"] {
            let s = safe_file_name(raw);
            assert!(!s.contains(['/', '\\']) && s != ".." && !s.starts_with('.'));
            let p = Path::new("/dl").join(&s);
            assert_eq!(p.parent(), Some(Path::new("/dl")));
        }
    }

    #[test]
    fn collisions_get_a_number() {
        let taken = ["a.txt", "a (1).txt", "notes", ".hidden"];
        let t = |c: &str| taken.contains(&c);
        assert_eq!(unique_name("b.txt", t), "b.txt");
        assert_eq!(unique_name("a.txt", t), "a (2).txt");
        assert_eq!(unique_name("notes", t), "notes (1)");
        assert_eq!(unique_name("x.tar.gz", |c| c == "x.tar.gz"), "x.tar (1).gz");
    }

    #[test]
    fn throttle_lets_one_through_per_interval() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_millis(100));
        assert!(t.ready(t0));
        assert!(!t.ready(t0 + Duration::from_millis(50)));
        assert!(t.ready(t0 + Duration::from_millis(100)));
        assert!(!t.ready(t0 + Duration::from_millis(199)));
        assert!(t.ready(t0 + Duration::from_millis(250)));
        // 10 s of chunks every millisecond: about 100 reports, never more than one per 100 ms.
        let mut t = Throttle::new(PROGRESS_INTERVAL);
        let n = (0..10_000)
            .filter(|ms| t.ready(t0 + Duration::from_millis(*ms)))
            .count();
        assert_eq!(n, 100);
    }

    fn begin(r: &mut Receiver, v: Value) -> Incoming {
        match r
            .on_meta(&v, parse_tid(&v).unwrap_or("local".into()))
            .as_slice()
        {
            [Action::Begin(i)] => i.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn receiver_happy_path_and_chunks_before_meta() {
        let mut r = Receiver::default();
        assert_eq!(r.on_chunk(100), None, "chunks before meta are dropped");
        let inc = begin(
            &mut r,
            json!({"tid": "t", "name": "../a.txt", "size": 20000}),
        );
        assert_eq!(inc.name, "a.txt");
        assert_eq!(inc.mime, DEFAULT_MIME);
        assert_eq!(
            r.on_chunk(CHUNK_SIZE),
            Some(Action::Write {
                tid: "t".into(),
                got: 16384
            })
        );
        assert_eq!(
            r.on_chunk(20000 - CHUNK_SIZE),
            Some(Action::Write {
                tid: "t".into(),
                got: 20000
            })
        );
        let sha = "0".repeat(64);
        assert_eq!(
            r.on_eof(&json!({"tid": "t", "sha256": sha})),
            Some(Action::Finish {
                tid: "t".into(),
                sha256: Some(sha)
            })
        );
        assert_eq!(r.current(), None);
        assert_eq!(r.on_chunk(1), None, "after eof: dropped again");
    }

    #[test]
    fn receiver_eof_rules() {
        let mut r = Receiver::default();
        // eof for an unknown tid: a clear error, no file touched.
        assert_eq!(
            r.on_eof(&json!({"tid": "nope"})),
            Some(Action::Report {
                tid: "nope".into(),
                error: TransferError::UnknownTid("nope".into())
            })
        );
        assert_eq!(r.on_eof(&json!({})), None);
        begin(&mut r, json!({"tid": "t", "size": 3}));
        r.on_chunk(3);
        // Another transfer's eof does not end this one.
        assert!(matches!(
            r.on_eof(&json!({"tid": "other"})),
            Some(Action::Report { .. })
        ));
        assert!(r.current().is_some());
        // eof {} (AGENTS form) ends the current one.
        assert!(matches!(r.on_eof(&json!({})), Some(Action::Finish { .. })));

        // Early eof: incomplete, removed.
        begin(&mut r, json!({"tid": "u", "size": 10}));
        r.on_chunk(4);
        assert_eq!(
            r.on_eof(&json!({"tid": "u"})),
            Some(Action::Abort {
                tid: "u".into(),
                wire_tid: Some("u".into()),
                error: TransferError::Incomplete { got: 4, size: 10 },
                notify: false
            })
        );
    }

    #[test]
    fn receiver_overflow_cancel_and_close() {
        let mut r = Receiver::default();
        begin(&mut r, json!({"tid": "t", "size": 10}));
        r.on_chunk(8);
        assert_eq!(
            r.on_chunk(8),
            Some(Action::Abort {
                tid: "t".into(),
                wire_tid: Some("t".into()),
                error: TransferError::Overflow { size: 10 },
                notify: true
            })
        );
        // The rest of that transfer is dropped quietly, its eof too.
        assert_eq!(r.on_chunk(8), None);
        assert_eq!(r.on_eof(&json!({"tid": "t"})), None);
        assert_eq!(r.on_chunk(8), None);

        begin(&mut r, json!({"tid": "c", "size": 10}));
        assert_eq!(r.on_cancel(&json!({"tid": "zzz"})), None);
        assert!(matches!(
            r.on_cancel(&json!({"tid": "c", "reason": "changed my mind"})),
            Some(Action::Abort {
                error: TransferError::CancelledByPeer(Some(_)),
                notify: false,
                ..
            })
        ));

        begin(&mut r, json!({"tid": "l", "size": 10}));
        assert_eq!(r.cancel_local("other"), None);
        assert!(matches!(
            r.cancel_local("l"),
            Some(Action::Abort {
                error: TransferError::Cancelled,
                notify: true,
                ..
            })
        ));

        begin(&mut r, json!({"tid": "g", "size": 10}));
        assert!(matches!(
            r.closed(TransferError::PeerGone),
            Some(Action::Abort {
                error: TransferError::PeerGone,
                notify: false,
                ..
            })
        ));
        assert_eq!(r.closed(TransferError::PeerGone), None);
    }

    #[test]
    fn receiver_new_meta_supersedes_and_bad_meta_is_refused() {
        let mut r = Receiver::default();
        begin(&mut r, json!({"tid": "a", "size": 10}));
        let acts = r.on_meta(&json!({"tid": "b", "size": 5}), "b".into());
        assert!(matches!(
            &acts[..],
            [Action::Abort { error: TransferError::Superseded, .. }, Action::Begin(i)] if i.tid == "b"
        ));
        let acts = r.on_meta(&json!({"tid": "h", "size": 1u64 << 50}), "h".into());
        assert!(matches!(
            &acts[..],
            [
                Action::Abort { .. },
                Action::Report {
                    error: TransferError::TooLarge { .. },
                    ..
                },
                Action::Refuse { .. }
            ]
        ));
        // Its chunks are dropped.
        assert_eq!(r.on_chunk(10), None);
    }

    #[test]
    fn payloads_and_mime() {
        assert_eq!(
            meta_payload("t", "a.png", 3, "image/png"),
            json!({"tid": "t", "name": "a.png", "size": 3, "mime": "image/png"})
        );
        assert_eq!(mime_for("A.PNG"), "image/png");
        assert_eq!(mime_for("noext"), DEFAULT_MIME);
        assert_eq!(eof_payload("t", "ab")["tid"], "t");
    }
}
