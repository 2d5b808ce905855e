//! The rtc.io socket: signaling connection, the peer table, broadcast channel definitions and the
//! public API (`emit`, `on`, `peer(id)`, `create_channel`, `server()`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};
use webrtc::peer_connection::RTCIceServer;

use crate::channel::{BroadcastChannel, Channel, ChannelError, ChannelOptions};
use crate::listeners::{Event, ListenerId, Origin, Registry};
use crate::peer::{self, PeerCmd, PeerHandle, PeerStart};
use crate::proto::envelope::{
    self, INIT_OFFER_EVENT, MESSAGE_EVENT, PEER_LEFT_EVENT, SdpKind, Signal,
};
use crate::proto::handover::{self, Handover, Retire};
use crate::proto::stream_meta::{self, StreamRegistry};
use crate::proto::watchdog::WatchdogConfig;
use crate::sio::client::{SioClient, SioError, SioEvent, SioOptions};
use crate::stream::LocalStream;

/// Errors of socket operations.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The signaling connection failed.
    #[error(transparent)]
    Signaling(#[from] SioError),
    /// A channel operation failed.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The socket was closed.
    #[error("socket closed")]
    Closed,
    /// An emitted event holds the token of a stream this socket did not create.
    #[error("unknown stream {0:?}: create streams with Socket::create_stream")]
    UnknownStream(String),
}

/// One STUN/TURN server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceServer {
    /// `stun:` / `turn:` URLs.
    pub urls: Vec<String>,
    /// TURN user name.
    pub username: Option<String>,
    /// TURN credential.
    pub credential: Option<String>,
}

/// Which ICE servers peer connections use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IceServers {
    /// rtc.io's default: two public STUN servers (what the JS uses when given none).
    #[default]
    RtcioDefault,
    /// No ICE servers at all: host candidates only (loopback, LAN, tests).
    None,
    /// These servers.
    Custom(Vec<IceServer>),
}

impl IceServers {
    /// The servers as a list (rtc.io's default STUN servers for [`IceServers::RtcioDefault`]).
    pub fn to_list(&self) -> Vec<IceServer> {
        match self {
            IceServers::RtcioDefault => vec![IceServer {
                urls: vec![
                    "stun:stun1.l.google.com:19302".into(),
                    "stun:stun2.l.google.com:19302".into(),
                ],
                username: None,
                credential: None,
            }],
            IceServers::None => Vec::new(),
            IceServers::Custom(list) => list.clone(),
        }
    }

    /// These servers followed by `extra` (e.g. what the signaling server hands out).
    pub fn merged(&self, extra: Vec<IceServer>) -> IceServers {
        if extra.is_empty() {
            return self.clone();
        }
        let mut list = self.to_list();
        list.extend(extra);
        IceServers::Custom(list)
    }

    pub(crate) fn resolve(&self) -> Vec<RTCIceServer> {
        match self {
            IceServers::None => Vec::new(),
            other => other
                .to_list()
                .iter()
                .map(|s| RTCIceServer {
                    urls: s.urls.clone(),
                    username: s.username.clone().unwrap_or_default(),
                    credential: s.credential.clone().unwrap_or_default(),
                })
                .collect(),
        }
    }
}

/// Connection options.
#[derive(Debug, Clone)]
pub struct Options {
    /// ICE servers (rtc.io's default STUN unless told otherwise).
    pub ice_servers: IceServers,
    /// Liveness watchdog timing (rtc.io defaults: 12 000 / 2 500 / 30 000 ms).
    pub watchdog: WatchdogConfig,
    /// socket.io `auth` payload (e.g. `{"token": "…"}`).
    pub auth: Option<Value>,
    /// Reconnect the signaling connection when it drops.
    pub reconnection: bool,
    /// Local addresses for ICE host candidates; `None` = every non-loopback IPv4 interface
    /// (loopback when there is none).
    pub bind_addrs: Option<Vec<IpAddr>>,
    /// How long an impolite peer waits for the answer to its offer during glare before yielding.
    pub glare_break: Duration,
    /// Limit for connecting to the signaling server.
    pub connect_timeout: Duration,
    /// Act impolite toward every peer, like JS peers behind a recovery-enabled server
    /// (PROTOCOL.md §3.1). For tests of the glare deadlock breaker.
    #[doc(hidden)]
    pub force_impolite: bool,
    /// Send-side congestion control (GCC over transport-wide CC feedback, with a pacer); its
    /// estimate is readable per track ([`crate::LocalTrack::min_estimated_bitrate`]) and per
    /// peer ([`crate::PeerStats::send_estimate_bps`]).
    pub congestion: crate::bwe::CongestionConfig,
    /// Use relayed (TURN) candidates only (`iceTransportPolicy: "relay"`): peers never learn
    /// this machine's addresses; calls need a TURN server.
    pub relay_only: bool,
    /// Ask the signaling server for TURN credentials (`GET /ice-servers`) when connecting and
    /// add them to [`Options::ice_servers`]; a server without TURN answers 404 and nothing
    /// changes.
    pub server_ice_servers: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ice_servers: IceServers::default(),
            watchdog: WatchdogConfig::default(),
            auth: None,
            reconnection: true,
            bind_addrs: None,
            glare_break: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(20),
            force_impolite: false,
            congestion: crate::bwe::CongestionConfig::default(),
            relay_only: false,
            server_ice_servers: true,
        }
    }
}

impl Options {
    /// Everything on 127.0.0.1 with no ICE servers: for tests and same-machine peers.
    pub fn loopback() -> Self {
        Options {
            ice_servers: IceServers::None,
            bind_addrs: Some(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
            ..Options::default()
        }
    }
}

fn default_bind_addrs() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|list| {
            list.into_iter()
                .filter(|i| !i.is_loopback())
                .map(|i| i.ip())
                .filter(|ip| ip.is_ipv4())
                .collect()
        })
        .unwrap_or_default();
    if ips.is_empty() {
        ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    ips
}

/// State shared by the socket handle, its loop and the peer tasks.
pub(crate) struct Shared {
    id: RwLock<String>,
    pub sio: SioClient,
    pub listeners: Registry,
    peer_listeners: Mutex<HashMap<String, Arc<Registry>>>,
    pub opts: Options,
    pub bind_addrs: Vec<IpAddr>,
    last_join: Mutex<Option<(String, Vec<Value>)>>,
    streams: Mutex<StreamTable>,
}

/// Local streams and the events they were emitted with (`streamEvents` in the JS).
#[derive(Default)]
pub(crate) struct StreamTable {
    pub registry: StreamRegistry,
    pub local: HashMap<String, LocalStream>,
}

impl StreamTable {
    /// Registered streams, for replay to a new peer.
    pub fn registered(&self) -> Vec<LocalStream> {
        self.registry
            .streams()
            .iter()
            .filter_map(|id| self.local.get(id).cloned())
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub fn id(&self) -> String {
        self.id
            .read()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set_id(&self, id: &str) {
        match self.id.write() {
            Ok(mut g) => *g = id.to_string(),
            Err(p) => *p.into_inner() = id.to_string(),
        }
    }

    pub fn dispatch_local(&self, name: &str, args: Vec<Value>) {
        self.listeners
            .dispatch(&Event::new(name, args, Origin::Local));
    }

    pub fn peer_registry(&self, peer: &str, create: bool) -> Option<Arc<Registry>> {
        let mut map = lock(&self.peer_listeners);
        if create {
            Some(map.entry(peer.to_string()).or_default().clone())
        } else {
            map.get(peer).cloned()
        }
    }

    pub fn drop_peer_registry(&self, peer: &str) {
        lock(&self.peer_listeners).remove(peer);
    }

    pub fn streams(&self) -> MutexGuard<'_, StreamTable> {
        lock(&self.streams)
    }
}

/// Commands for the socket loop.
pub(crate) enum SocketCmd {
    Ctrl {
        text: String,
    },
    PeerCtrl {
        peer: String,
        text: String,
    },
    CreateBroadcast {
        name: String,
        opts: ChannelOptions,
        reply: oneshot::Sender<Result<BroadcastChannel, ChannelError>>,
    },
    PeerChannel {
        peer: String,
        name: String,
        opts: ChannelOptions,
        reply: oneshot::Sender<Result<Channel, ChannelError>>,
    },
    PeerGone {
        id: String,
        generation: u64,
    },
    /// A peer's ctrl channel opened (`media: false`) or its first media arrived (`media: true`).
    PeerProgress {
        id: String,
        generation: u64,
        media: bool,
    },
    /// An rtcio peer said on its ctrl channel that its socket id is now `new`.
    Rekey {
        old: String,
        generation: u64,
        new: String,
    },
    Peers(oneshot::Sender<Vec<String>>),
    /// A stream was emitted: attach it to every peer (or refresh its metadata there).
    AttachStream(LocalStream),
    /// A stream's tracks changed: peers that have it renegotiate.
    StreamChanged(LocalStream),
    ToPeer {
        peer: String,
        cmd: PeerCmd,
    },
    /// Close everything; `None` when the last handle was dropped.
    Close(Option<oneshot::Sender<()>>),
}

/// Shared by every clone of one [`Socket`]: when the last clone goes, the loop closes the
/// socket (the loop, peer tasks and streams hold command senders of their own, so the channel
/// alone never tells).
struct HandleGuard {
    cmd: mpsc::UnboundedSender<SocketCmd>,
}

impl Drop for HandleGuard {
    fn drop(&mut self) {
        // Already gone after an explicit close: nothing to stop.
        let _ = self.cmd.send(SocketCmd::Close(None));
    }
}

/// An rtc.io socket: signaling plus a full mesh of peer connections.
///
/// Clones are handles to the same socket. Dropping the last one closes it like
/// [`Socket::close`] (in the background); a listener closure that captures a clone keeps the
/// socket alive, so prefer [`Socket::subscribe`] in tasks you abort.
#[derive(Clone)]
pub struct Socket {
    shared: Arc<Shared>,
    cmd: mpsc::UnboundedSender<SocketCmd>,
    _guard: Arc<HandleGuard>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket").field("id", &self.id()).finish()
    }
}

impl Socket {
    /// Connects to an rtc.io signaling server (`http(s)://host:port[/namespace]`).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), rtcio::Error> {
    /// let socket = rtcio::Socket::connect("http://127.0.0.1:3001", rtcio::Options::default()).await?;
    /// socket.server().emit("join-room", vec![serde_json::json!({"roomId": "r1", "name": "bot"})])?;
    /// socket.on("chat", |ev| println!("{} says {:?}", ev.peer().unwrap_or("?"), ev.args));
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str, mut opts: Options) -> Result<Socket, Error> {
        let token = opts
            .auth
            .as_ref()
            .and_then(|a| a.get("token"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let fetch_limit = opts.connect_timeout.min(Duration::from_secs(5));
        let fetch_ice = opts.server_ice_servers;
        let sio_opts = SioOptions {
            auth: opts.auth.clone(),
            reconnection: opts.reconnection,
            timeout: opts.connect_timeout,
            ..SioOptions::default()
        };
        // Asked alongside the socket.io handshake, so a server without TURN costs no time.
        let fetch = async {
            if !fetch_ice {
                return Ok(None);
            }
            crate::ice_fetch::fetch_ice_servers(url, token.as_deref(), fetch_limit).await
        };
        let (fetched, connected) = tokio::join!(fetch, SioClient::connect(url, sio_opts));
        let (sio, sio_rx, id) = connected?;
        match fetched {
            Ok(Some(list)) => {
                info!(
                    servers = list.len(),
                    "using the signaling server's TURN credentials"
                );
                opts.ice_servers = opts.ice_servers.merged(list);
            }
            Ok(None) => {}
            // The call may still work on direct paths: say so and go on.
            Err(e) => warn!(%e, "no TURN credentials from the signaling server"),
        }
        let bind_addrs = opts.bind_addrs.clone().unwrap_or_else(default_bind_addrs);
        let shared = Arc::new(Shared {
            id: RwLock::new(id.clone()),
            sio,
            listeners: Registry::default(),
            peer_listeners: Mutex::new(HashMap::new()),
            opts,
            bind_addrs,
            last_join: Mutex::new(None),
            streams: Mutex::new(StreamTable::default()),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(socket_loop(shared.clone(), sio_rx, rx, tx.clone()));
        info!(%id, "rtc.io socket connected");
        Ok(Socket {
            shared,
            _guard: Arc::new(HandleGuard { cmd: tx.clone() }),
            cmd: tx,
        })
    }

    /// The congestion control settings its peer connections are made with.
    pub fn congestion(&self) -> crate::bwe::CongestionConfig {
        self.shared.opts.congestion
    }

    /// This socket's id (the `source` peers see). Changes after a reconnect without recovery.
    pub fn id(&self) -> String {
        self.shared.id()
    }

    /// The signaling server side: events that travel through socket.io.
    pub fn server(&self) -> Server<'_> {
        Server { socket: self }
    }

    /// Emits an event to every peer over its ctrl channel (`#rtcio:*` names go to the server,
    /// as in rtc.io).
    ///
    /// If the arguments hold a stream's [token](LocalStream::token) (the first one, depth first),
    /// the event is not sent: it becomes the stream's metadata, the stream is attached to every
    /// peer and replayed to later ones, and receivers' handlers of `event` get the stream
    /// (PROTOCOL.md §5.1). Emitting again with the same name replaces the arguments (and peers
    /// that already have the stream get the update).
    ///
    /// Write [`SELF_ID`](crate::SELF_ID) where the arguments name this socket (the tutorial's
    /// `{"id": …}`): it becomes the id current when the event leaves, which for a stream
    /// announcement may be long after a reconnect changed it.
    pub fn emit(&self, event: &str, args: Vec<Value>) -> Result<(), Error> {
        if event.starts_with("#rtcio:") {
            return self.server().emit(event, args);
        }
        if let Some(id) = stream_meta::first_token(&args) {
            let stream = {
                let mut t = self.shared.streams();
                let stream = t
                    .local
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| Error::UnknownStream(id.clone()))?;
                t.registry.register(&id, event, args);
                stream
            };
            return self
                .cmd
                .send(SocketCmd::AttachStream(stream))
                .map_err(|_| Error::Closed);
        }
        let args = stream_meta::resolve_self_id(&args, &self.id());
        let text = envelope::encode_event(event, &args);
        self.cmd
            .send(SocketCmd::Ctrl { text })
            .map_err(|_| Error::Closed)
    }

    /// Listens to `event` — from the server and from any peer's ctrl channel (rtc.io shares one
    /// listener namespace); [`Event::origin`] tells which. Library events: `peer-connect`,
    /// `peer-disconnect`, `connect`, `disconnect`.
    pub fn on(&self, event: &str, f: impl Fn(&Event) + Send + Sync + 'static) -> ListenerId {
        self.shared.listeners.on(event, f)
    }

    /// Listens to the next `event` only.
    pub fn once(&self, event: &str, f: impl Fn(&Event) + Send + Sync + 'static) -> ListenerId {
        self.shared.listeners.once(event, f)
    }

    /// Every `event`, as a stream (dropping the receiver removes the listener).
    pub fn subscribe(&self, event: &str) -> mpsc::UnboundedReceiver<Event> {
        self.shared.listeners.subscribe(event)
    }

    /// Removes a listener.
    pub fn off(&self, id: ListenerId) {
        self.shared.listeners.off(id)
    }

    /// Addresses one peer.
    pub fn peer(&self, id: &str) -> PeerRef<'_> {
        PeerRef {
            socket: self,
            id: id.to_string(),
        }
    }

    /// Socket ids of the current peers.
    pub async fn peers(&self) -> Vec<String> {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(SocketCmd::Peers(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// A channel with this name to every peer, now and later. Calling it again with the same
    /// name returns the same channel. A hash collision with a channel on a connected peer is
    /// returned as an error (the definition stays registered, as in rtc.io).
    pub async fn create_channel(
        &self,
        name: &str,
        opts: ChannelOptions,
    ) -> Result<BroadcastChannel, Error> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(SocketCmd::CreateBroadcast {
                name: name.to_string(),
                opts,
                reply: tx,
            })
            .map_err(|_| Error::Closed)?;
        Ok(rx.await.map_err(|_| Error::Closed)??)
    }

    /// A new local stream with a random UUID id and no tracks yet.
    pub fn create_stream(&self) -> LocalStream {
        self.create_stream_with_id(&crate::stream::uuid())
    }

    /// A new local stream with the caller's id (rtc.io allows a caller-chosen id). An id already
    /// in use returns that stream.
    pub fn create_stream_with_id(&self, id: &str) -> LocalStream {
        let mut t = self.shared.streams();
        t.local
            .entry(id.to_string())
            .or_insert_with(|| LocalStream::new(id.to_string(), self.cmd.clone()))
            .clone()
    }

    /// Stops replaying a stream to new peers and answering metadata requests for it; peers that
    /// have it keep receiving what its tracks produce (rtc.io's `untrackStream`; apps announce
    /// the end themselves, e.g. with `stopScreenShare`). True if it was registered.
    pub fn untrack_stream(&self, stream: &LocalStream) -> bool {
        self.shared.streams().registry.untrack(stream.id())
    }

    /// Restarts ICE with a peer (a renegotiation; rtc.io does this itself when a connection fails).
    pub fn restart_ice(&self, peer: &str) -> Result<(), Error> {
        self.cmd
            .send(SocketCmd::ToPeer {
                peer: peer.to_string(),
                cmd: PeerCmd::RestartIce,
            })
            .map_err(|_| Error::Closed)
    }

    /// Statistics of the connection to `peer` (`None` if unknown). Bit rates are measured since
    /// the previous call for the same peer.
    pub async fn stats(&self, peer: &str) -> Option<crate::stats::PeerStats> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(SocketCmd::ToPeer {
                peer: peer.to_string(),
                cmd: PeerCmd::Stats(tx),
            })
            .ok()?;
        rx.await.ok()
    }

    /// Closes every peer connection (remote peers notice at once) and disconnects.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(SocketCmd::Close(Some(tx))).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Server-side operations (`socket.server` in rtc.io).
pub struct Server<'a> {
    socket: &'a Socket,
}

impl Server<'_> {
    /// Emits a socket.io event through the server. A `join-room` is remembered and re-sent after
    /// a reconnect that changed our id.
    pub fn emit(&self, event: &str, args: Vec<Value>) -> Result<(), Error> {
        if event == "join-room" {
            *lock(&self.socket.shared.last_join) = Some((event.to_string(), args.clone()));
        }
        Ok(self.socket.shared.sio.emit(event, &args)?)
    }

    /// Listens to a server event (same namespace as [`Socket::on`]).
    pub fn on(&self, event: &str, f: impl Fn(&Event) + Send + Sync + 'static) -> ListenerId {
        self.socket.on(event, f)
    }

    /// Every `event`, as a stream.
    pub fn subscribe(&self, event: &str) -> mpsc::UnboundedReceiver<Event> {
        self.socket.subscribe(event)
    }
}

/// One peer (`socket.peer(id)` in rtc.io).
pub struct PeerRef<'a> {
    socket: &'a Socket,
    id: String,
}

impl PeerRef<'_> {
    /// Emits an event to this peer only (no-op if unknown). [`SELF_ID`](crate::SELF_ID) in the
    /// arguments becomes our socket id.
    pub fn emit(&self, event: &str, args: Vec<Value>) -> Result<(), Error> {
        let args = stream_meta::resolve_self_id(&args, &self.socket.id());
        let text = envelope::encode_event(event, &args);
        self.socket
            .cmd
            .send(SocketCmd::PeerCtrl {
                peer: self.id.clone(),
                text,
            })
            .map_err(|_| Error::Closed)
    }

    /// Listens to ctrl events from this peer only; dropped when the peer is cleaned up.
    pub fn on(&self, event: &str, f: impl Fn(&Event) + Send + Sync + 'static) -> ListenerId {
        match self.socket.shared.peer_registry(&self.id, true) {
            Some(r) => r.on(event, f),
            None => self.socket.on(event, f),
        }
    }

    /// Removes a listener added with [`PeerRef::on`].
    pub fn off(&self, id: ListenerId) {
        if let Some(r) = self.socket.shared.peer_registry(&self.id, false) {
            r.off(id);
        }
    }

    /// Every `event` from this peer, as a stream.
    pub fn subscribe(&self, event: &str) -> mpsc::UnboundedReceiver<Event> {
        match self.socket.shared.peer_registry(&self.id, true) {
            Some(r) => r.subscribe(event),
            None => self.socket.subscribe(event),
        }
    }

    /// A channel to this peer only. With the name of a broadcast channel it is that broadcast's
    /// per-peer channel.
    pub async fn create_channel(&self, name: &str, opts: ChannelOptions) -> Result<Channel, Error> {
        let (tx, rx) = oneshot::channel();
        self.socket
            .cmd
            .send(SocketCmd::PeerChannel {
                peer: self.id.clone(),
                name: name.to_string(),
                opts,
                reply: tx,
            })
            .map_err(|_| Error::Closed)?;
        Ok(rx.await.map_err(|_| Error::Closed)??)
    }
}

struct Loop {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<SocketCmd>,
    peers: HashMap<String, PeerHandle>,
    /// Connections from before our socket id changed, kept until replaced (make-before-break).
    stale: HashMap<String, PeerHandle>,
    /// Old connections told to close, until their task reports them gone: remote id →
    /// generation.
    retiring: HashMap<String, u64>,
    handover: Handover,
    broadcasts: Vec<BroadcastChannel>,
    generation: u64,
}

async fn socket_loop(
    shared: Arc<Shared>,
    mut sio_rx: mpsc::UnboundedReceiver<SioEvent>,
    mut rx: mpsc::UnboundedReceiver<SocketCmd>,
    tx: mpsc::UnboundedSender<SocketCmd>,
) {
    let mut l = Loop {
        shared,
        tx,
        peers: HashMap::new(),
        stale: HashMap::new(),
        retiring: HashMap::new(),
        handover: Handover::default(),
        broadcasts: Vec::new(),
        generation: 0,
    };
    loop {
        let retire_at = l
            .handover
            .next_deadline()
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = crate::peer::sleep_opt(retire_at) => l.on_handover_deadline(),
            ev = sio_rx.recv() => match ev {
                Some(ev) => l.on_sio(ev).await,
                None => {
                    debug!("signaling task ended");
                    break;
                }
            },
            cmd = rx.recv() => match cmd {
                Some(SocketCmd::Close(done)) => {
                    if done.is_none() {
                        info!("every socket handle dropped: closing");
                    }
                    l.close_all_peers().await;
                    l.shared.sio.close().await;
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                    break;
                }
                Some(cmd) => l.on_cmd(cmd),
                None => break,
            }
        }
    }
}

impl Loop {
    fn spawn_peer(&mut self, remote: &str, polite: bool, first: Option<Signal>) {
        self.generation += 1;
        if let Some(old) = self.peers.remove(remote) {
            // A second init-offer for a known peer: replace it (the JS leaks the old one).
            let _ = old.tx.send(PeerCmd::Close(None));
        }
        let handle = peer::spawn(PeerStart {
            remote: remote.to_string(),
            polite,
            generation: self.generation,
            shared: self.shared.clone(),
            socket_tx: self.tx.clone(),
            broadcasts: self
                .broadcasts
                .iter()
                .filter(|b| !b.is_closed())
                .cloned()
                .collect(),
            first,
        });
        self.peers.insert(remote.to_string(), handle);
    }

    async fn close_all_peers(&mut self) {
        let mut waits = Vec::new();
        self.handover.clear();
        self.retiring.clear();
        for (_, h) in self.stale.drain() {
            let (tx, rx) = oneshot::channel();
            if h.tx.send(PeerCmd::Close(Some(tx))).is_ok() {
                waits.push(rx);
            }
        }
        for (_, h) in self.peers.drain() {
            let (tx, rx) = oneshot::channel();
            if h.tx.send(PeerCmd::Close(Some(tx))).is_ok() {
                waits.push(rx);
            }
        }
        for w in waits {
            let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
        }
    }

    async fn on_sio(&mut self, ev: SioEvent) {
        match ev {
            SioEvent::Event { name, args } => self.on_server_event(name, args),
            SioEvent::Connected { id } => {
                let old = self.shared.id();
                if id != old {
                    info!(%old, new = %id, peers = self.peers.len(), "reconnected with a new socket id: keeping the old connections until replaced");
                    // The old connections still carry media: keep them (never signaled again:
                    // JS peers know us by the old id, and the server forgot it) while the
                    // re-join forms new ones, and close each once replaced (proto::handover).
                    self.shared.set_id(&id);
                    let now = std::time::Instant::now();
                    self.handover
                        .on_new_id(self.peers.keys().cloned(), &old, now);
                    for (rid, h) in self.peers.drain() {
                        let _ = h.tx.send(PeerCmd::Stale {
                            rekey: Some(id.clone()),
                        });
                        if let Some(older) = self.stale.insert(rid, h) {
                            // Two reconnects in a row: the older connection goes.
                            let _ = older.tx.send(PeerCmd::Close(None));
                        }
                    }
                    let rejoin = lock(&self.shared.last_join).clone();
                    if let Some((event, args)) = rejoin
                        && let Err(e) = self.shared.sio.emit(&event, &args)
                    {
                        warn!("re-join failed: {e}");
                    }
                } else {
                    for h in self.peers.values() {
                        let _ = h.tx.send(PeerCmd::SignalingReconnected);
                    }
                }
                self.shared
                    .dispatch_local("connect", vec![Value::String(id)]);
            }
            SioEvent::Disconnected { reason } => {
                self.shared
                    .dispatch_local("disconnect", vec![Value::String(reason)]);
            }
            SioEvent::ConnectError(e) => {
                self.shared
                    .dispatch_local("connect_error", vec![Value::String(e)]);
            }
        }
    }

    fn on_server_event(&mut self, name: String, args: Vec<Value>) {
        let first = args.first().cloned().unwrap_or(Value::Null);
        match name.as_str() {
            MESSAGE_EVENT => {
                let Some(inbound) = envelope::parse_signal(&first) else {
                    debug!("signaling message without usable source/data dropped");
                    return;
                };
                if inbound.source == self.shared.id() {
                    return;
                }
                match self.peers.get(&inbound.source) {
                    Some(h) => {
                        let _ = h.tx.send(PeerCmd::Signal(inbound.signal));
                    }
                    None => {
                        // Only an offer creates a peer (newcomer side, impolite).
                        if matches!(&inbound.signal, Signal::Description(d) if d.kind == SdpKind::Offer)
                        {
                            self.spawn_peer(&inbound.source, false, Some(inbound.signal));
                        } else {
                            debug!(source = %inbound.source, "signal from an unknown peer ignored");
                        }
                    }
                }
            }
            INIT_OFFER_EVENT => match first.get("source").and_then(Value::as_str) {
                Some(src) if !src.is_empty() && src != self.shared.id() => {
                    let src = src.to_string();
                    self.spawn_peer(&src, true, None);
                }
                _ => debug!("init-offer without a usable source"),
            },
            PEER_LEFT_EVENT => {
                if let Some(id) = first.get("id").and_then(Value::as_str) {
                    for h in [self.peers.get(id), self.stale.get(id)]
                        .into_iter()
                        .flatten()
                    {
                        let _ = h.tx.send(PeerCmd::Hint);
                    }
                }
            }
            _ => {
                if name == "user-connected"
                    && let (Some(id), Some(n)) = (
                        first.get("id").and_then(Value::as_str),
                        first.get("name").and_then(Value::as_str),
                    )
                {
                    self.handover.on_name(id, n);
                }
                self.shared
                    .listeners
                    .dispatch(&Event::new(&name, args, Origin::Server));
            }
        }
    }

    fn on_cmd(&mut self, cmd: SocketCmd) {
        match cmd {
            SocketCmd::Ctrl { text } => {
                for h in self.peers.values() {
                    let _ = h.tx.send(PeerCmd::Ctrl(text.clone()));
                }
                // An old connection still stands in for a participant not reconnected yet.
                for (id, h) in &self.stale {
                    if self.handover.still_needed(id) {
                        let _ = h.tx.send(PeerCmd::Ctrl(text.clone()));
                    }
                }
            }
            SocketCmd::PeerCtrl { peer, text } => {
                if let Some(h) = self.peers.get(&peer).or_else(|| self.stale.get(&peer)) {
                    let _ = h.tx.send(PeerCmd::Ctrl(text));
                }
            }
            SocketCmd::CreateBroadcast { name, opts, reply } => {
                if let Some(b) = self.broadcasts.iter().find(|b| b.name() == name) {
                    let _ = reply.send(Ok(b.clone()));
                    return;
                }
                let b = BroadcastChannel::new(&name, opts.clone());
                self.broadcasts.push(b.clone());
                let mut waits = Vec::new();
                for h in self.peers.values() {
                    let (tx, rx) = oneshot::channel();
                    let _ = h.tx.send(PeerCmd::Attach {
                        name: name.clone(),
                        opts: opts.clone(),
                        parent: Some(b.clone()),
                        reply: Some(tx),
                    });
                    waits.push(rx);
                }
                tokio::spawn(async move {
                    let mut first_err = None;
                    for w in waits {
                        if let Ok(Err(e @ ChannelError::Collision(_))) = w.await {
                            first_err.get_or_insert(e);
                        }
                    }
                    let _ = reply.send(match first_err {
                        Some(e) => Err(e),
                        None => Ok(b),
                    });
                });
            }
            SocketCmd::PeerChannel {
                peer,
                name,
                opts,
                reply,
            } => match self.peers.get(&peer) {
                Some(h) => {
                    let parent = self.broadcasts.iter().find(|b| b.name() == name).cloned();
                    let _ = h.tx.send(PeerCmd::Attach {
                        name,
                        opts,
                        parent,
                        reply: Some(reply),
                    });
                }
                None => {
                    let _ = reply.send(Err(ChannelError::NoPeer(peer)));
                }
            },
            SocketCmd::PeerGone { id, generation } => {
                if self
                    .peers
                    .get(&id)
                    .is_some_and(|h| h.generation == generation)
                {
                    self.peers.remove(&id);
                    self.handover.current_gone(&id);
                } else if self
                    .stale
                    .get(&id)
                    .is_some_and(|h| h.generation == generation)
                {
                    self.stale.remove(&id);
                    self.handover.stale_gone(&id, std::time::Instant::now());
                } else if self.retiring.get(&id) == Some(&generation) {
                    self.retiring.remove(&id);
                    self.handover.stale_gone(&id, std::time::Instant::now());
                }
            }
            SocketCmd::PeerProgress {
                id,
                generation,
                media,
            } => {
                if self
                    .peers
                    .get(&id)
                    .is_some_and(|h| h.generation == generation)
                {
                    let now = std::time::Instant::now();
                    if media {
                        self.handover.on_media(&id, now);
                    } else {
                        self.handover.on_connected(&id, now);
                    }
                }
            }
            SocketCmd::Rekey {
                old,
                generation,
                new,
            } => {
                let from_current = self
                    .peers
                    .get(&old)
                    .is_some_and(|h| h.generation == generation);
                let from_stale = self
                    .stale
                    .get(&old)
                    .is_some_and(|h| h.generation == generation);
                if !(from_current || from_stale) || new == self.shared.id() {
                    return;
                }
                info!(%old, %new, "peer re-keyed: its new connection will replace the old one");
                self.handover.on_rekey(&old, &new);
                if from_current && let Some(h) = self.peers.remove(&old) {
                    // Only the remote reconnected: its old id is dead on the server.
                    self.handover
                        .make_stale(old.clone(), std::time::Instant::now());
                    let _ = h.tx.send(PeerCmd::Stale { rekey: None });
                    if let Some(older) = self.stale.insert(old, h) {
                        let _ = older.tx.send(PeerCmd::Close(None));
                    }
                }
            }
            SocketCmd::ToPeer { peer, cmd } => {
                if let Some(h) = self.peers.get(&peer).or_else(|| self.stale.get(&peer)) {
                    let _ = h.tx.send(cmd);
                }
            }
            SocketCmd::Peers(reply) => {
                let mut ids: Vec<String> = self.peers.keys().cloned().collect();
                for id in self.stale.keys() {
                    if !self.peers.contains_key(id) {
                        ids.push(id.clone());
                    }
                }
                let _ = reply.send(ids);
            }
            SocketCmd::AttachStream(stream) => {
                for h in self.peers.values() {
                    let _ = h.tx.send(PeerCmd::AttachStream(stream.clone()));
                }
            }
            SocketCmd::StreamChanged(stream) => {
                for h in self.peers.values() {
                    let _ = h.tx.send(PeerCmd::StreamChanged(stream.clone()));
                }
            }
            SocketCmd::Close(_) => {}
        }
    }

    fn on_handover_deadline(&mut self) {
        self.retire_due();
        self.send_hints();
    }

    /// Asks the server for `#rtcio:peer-left` of our old ids whose connections are all closed
    /// (proto::handover: browser peers clean up at once instead of after 12 s).
    fn send_hints(&mut self) {
        for old in self.handover.hints_due(std::time::Instant::now()) {
            info!(%old, "old connections closed: asking the server to hint peer-left for our old id");
            if let Err(e) = self.shared.sio.emit(
                handover::PREVIOUS_ID_EVENT,
                &handover::previous_id_message(&old),
            ) {
                // Browser peers then fall back on their watchdog.
                debug!(%old, "previous-id hint not sent: {e}");
            }
        }
    }

    /// Closes the old connections whose replacement took over or whose grace period ended.
    fn retire_due(&mut self) {
        for (old, why) in self.handover.due(std::time::Instant::now()) {
            let Some(h) = self.stale.remove(&old) else {
                continue;
            };
            let quiet = match &why {
                Retire::Replaced { successor, quiet } => {
                    info!(%old, %successor, "old connection replaced: closing it");
                    *quiet
                }
                Retire::GraceOver => {
                    info!(%old, "old connection not replaced in time: closing it");
                    false
                }
            };
            if h.tx.send(PeerCmd::Retire { quiet }).is_ok() {
                // Its PeerGone (after the close) schedules the peer-left hint.
                self.retiring.insert(old, h.generation);
            }
        }
    }
}
