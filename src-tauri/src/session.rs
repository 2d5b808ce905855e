//! One call: the embedded server (when hosting), the rtc.io socket, the `chat` broadcast
//! channel, and the listeners that forward room events to the UI.
//!
//! It knows nothing about Tauri: events leave through a [`UiSink`], so the same code runs in
//! the integration tests without a window.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rtcio::{BroadcastChannel, ChannelOptions, Event, ListenerId, MediaKind, Origin, Socket};
use rtcio_server::{RunningServer, ServerConfig};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::error::AppError;
use crate::inbound::{self, ChatMessage, RoomEvent};
use crate::media::{self, FrameSink, MediaConfig, Receivers, SendStream, StreamKind, TileSizes};
use crate::transfer::{self, Transfers};

/// Where the UI's events go: `(event name, payload)`.
pub type UiSink = Arc<dyn Fn(&str, Value) + Send + Sync>;

/// Turns one library event into one UI event (or nothing, for malformed input).
type Translate = Box<dyn Fn(&Event) -> Option<(&'static str, Value)> + Send + Sync>;

/// Which signaling server to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerChoice {
    /// Start the embedded rtcio-server on all interfaces, on a free port.
    Host,
    /// An rtc.io server somewhere else.
    Url(String),
}

/// Everything needed to join.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    /// Display name.
    pub name: String,
    /// Room id.
    pub room_id: String,
    /// Signaling server.
    pub server: ServerChoice,
    /// Room password (example-server convention), `None` for an open room.
    pub password: Option<String>,
    /// Initial microphone state announced to the room.
    pub mic: bool,
    /// Initial camera state announced to the room.
    pub cam: bool,
    /// Socket options (ICE servers, bind addresses, timeouts).
    pub socket: rtcio::Options,
    /// Where the embedded server listens when hosting (port 0 = any free port).
    pub host_bind: SocketAddr,
    /// When hosting, also run a TURN relay (UDP 3478, or any free port when that is taken).
    pub host_turn: bool,
    /// How long to wait for `join-ok` / `join-error`. Servers that send neither (the docs'
    /// tutorial server) are treated as having accepted us after this.
    pub join_timeout: Duration,
    /// What to send and where remote audio plays (default: no media).
    pub media: MediaConfig,
    /// Where received files go (`None`: the user's Downloads folder).
    pub downloads: Option<PathBuf>,
}

impl JoinConfig {
    /// Defaults for the app: all interfaces when hosting, 8 s to connect, 2.5 s for a verdict.
    pub fn new(name: &str, room_id: &str, server: ServerChoice) -> Self {
        JoinConfig {
            name: name.to_string(),
            room_id: room_id.to_string(),
            server,
            password: None,
            mic: true,
            cam: true,
            socket: rtcio::Options {
                connect_timeout: Duration::from_secs(8),
                ..rtcio::Options::default()
            },
            host_bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            host_turn: false,
            join_timeout: Duration::from_millis(2500),
            media: MediaConfig::default(),
            downloads: None,
        }
    }
}

/// What the UI needs to show the call.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinInfo {
    /// Our socket id (the key of our own tile; others see it in `user-connected`).
    pub self_id: String,
    /// Room id.
    pub room_id: String,
    /// Our display name.
    pub name: String,
    /// The URL we connected to.
    pub server_url: String,
    /// Whether we host the server.
    pub hosting: bool,
    /// Addresses others on the network can use to reach our server (hosting only).
    pub share_urls: Vec<String>,
    /// Our microphone state.
    pub mic: bool,
    /// Our camera state.
    pub cam: bool,
    /// The server sent `join-ok` (false: it sent nothing within the timeout).
    pub join_confirmed: bool,
    /// Devices that could not be opened, worded for people (joining went on without them).
    pub media_errors: Vec<String>,
    /// Tile key of our camera preview frames (none when no video is sent).
    pub preview_key: Option<String>,
}

#[derive(Debug, Clone, Copy)]
struct Flags {
    mic: bool,
    cam: bool,
}

/// A joined call. Drop it only through [`Session::leave`] so peers notice at once.
pub struct Session {
    socket: Socket,
    chat: Option<BroadcastChannel>,
    server: Option<RunningServer>,
    listeners: Vec<ListenerId>,
    chat_listeners: Vec<ListenerId>,
    tasks: Vec<JoinHandle<()>>,
    name: String,
    room_id: String,
    flags: Arc<Mutex<Flags>>,
    /// Our camera (+ mic) stream and our screen share.
    outgoing: Arc<Mutex<Outgoing>>,
    /// Remote streams being played.
    receivers: Arc<Mutex<Receivers>>,
    sizes: TileSizes,
    frames: FrameSink,
    screen_fps: f32,
    /// File transfers over the per-peer `file` channel.
    transfers: Option<Transfers>,
    /// Events to the UI.
    ui: UiSink,
}

/// What we send.
#[derive(Default)]
struct Outgoing {
    camera: Option<SendStream>,
    screen: Option<SendStream>,
}

fn lock_any<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; media state is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks a server address the way a person types it.
pub fn parse_server_url(text: &str) -> Result<String, AppError> {
    let text = text.trim();
    let url = url::Url::parse(text).map_err(|e| AppError::BadUrl(format!("{text:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https" | "ws" | "wss") {
        return Err(AppError::BadUrl(format!(
            "{text:?}: use an http:// or https:// address"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(AppError::BadUrl(format!(
            "{text:?}: the address has no host"
        )));
    }
    Ok(text.to_string())
}

/// How often `audio-level` goes out per remote person (the UI's speaking ring follows it).
const AUDIO_LEVEL_INTERVAL: Duration = Duration::from_millis(100);

/// Emits `audio-level {peerId, dbfs}` for every remote person whose audio plays, ten times a
/// second, so the UI can show who is talking.
fn spawn_audio_levels(receivers: Arc<Mutex<Receivers>>, ui: UiSink) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(AUDIO_LEVEL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let levels = lock_any(&receivers).audio_levels();
            for (peer, dbfs) in levels {
                ui("audio-level", json!({"peerId": peer, "dbfs": dbfs}));
            }
        }
    })
}

/// The room server for "host on this computer", with a TURN relay for the LAN when asked
/// (on UDP 3478, or any free port when another relay holds that one).
async fn start_host_server(
    bind: SocketAddr,
    turn: bool,
) -> Result<RunningServer, rtcio_server::ServerError> {
    let config = |turn_port: Option<u16>| ServerConfig {
        bind,
        turn: turn_port.map(|port| rtcio_server::TurnConfig {
            relay: Some(rtcio_server::RelayConfig {
                listen: SocketAddr::new(bind.ip(), port),
                allow_private: true,
                allow_loopback: bind.ip().is_loopback(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..ServerConfig::default()
    };
    if !turn {
        return rtcio_server::start(config(None)).await;
    }
    match rtcio_server::start(config(Some(3478))).await {
        Err(rtcio_server::ServerError::Turn(e)) => {
            warn!("TURN relay on 3478: {e}; using another port");
            rtcio_server::start(config(Some(0))).await
        }
        other => other,
    }
}

/// `http://<ip>:<port>` for every non-loopback IPv4 interface: what others on the LAN can use.
pub fn share_urls(port: u16) -> Vec<String> {
    let mut urls: Vec<String> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !i.is_loopback())
        .filter_map(|i| match i.ip() {
            IpAddr::V4(ip) if !ip.is_link_local() => Some(format!("http://{ip}:{port}")),
            _ => None,
        })
        .collect();
    urls.sort();
    urls.dedup();
    urls
}

fn lock(flags: &Mutex<Flags>) -> Flags {
    // A poisoned lock only means a panic elsewhere; the two booleans are still meaningful.
    *flags.lock().unwrap_or_else(|p| p.into_inner())
}

fn media_payload(id: &str, flags: Flags, room_id: &str) -> Value {
    json!({"id": id, "mic": flags.mic, "cam": flags.cam, "roomId": room_id})
}

/// Announces our state both ways rtc.io apps expect it (PROTOCOL.md §8): through the server
/// (example servers cache and backfill it) and over ctrl (the tutorial's P2P form).
fn announce(socket: &Socket, flags: Flags, room_id: &str) -> Result<(), rtcio::Error> {
    let payload = media_payload(&socket.id(), flags, room_id);
    socket.server().emit("media-state", vec![payload.clone()])?;
    socket.emit("media-state", vec![payload])
}

impl Session {
    /// Connects (starting the embedded server when hosting), joins the room and waits for the
    /// server's verdict. On any failure everything started so far is stopped again.
    pub async fn join(cfg: JoinConfig, ui: UiSink) -> Result<(Session, JoinInfo), AppError> {
        Session::join_with_frames(cfg, ui, Arc::new(|_| {})).await
    }

    /// [`Session::join`], with video frames (ours and the remote ones, see
    /// [`media::encode_frame`]) going to `frames`.
    pub async fn join_with_frames(
        cfg: JoinConfig,
        ui: UiSink,
        frames: FrameSink,
    ) -> Result<(Session, JoinInfo), AppError> {
        let name = cfg.name.trim().to_string();
        let room_id = cfg.room_id.trim().to_string();
        if name.is_empty() {
            return Err(AppError::Invalid("Enter a display name.".into()));
        }
        if name.chars().count() > inbound::MAX_NAME_CHARS {
            return Err(AppError::Invalid(format!(
                "The display name is longer than {} characters.",
                inbound::MAX_NAME_CHARS
            )));
        }
        if room_id.is_empty() {
            return Err(AppError::Invalid("Enter a room id.".into()));
        }

        let (url, server, share) = match &cfg.server {
            ServerChoice::Url(text) => (parse_server_url(text)?, None, Vec::new()),
            ServerChoice::Host => {
                let server = start_host_server(cfg.host_bind, cfg.host_turn)
                    .await
                    .map_err(|e| AppError::Host(e.to_string()))?;
                let port = server.local_addr().port();
                info!(addr = %server.local_addr(), "hosting the room server");
                let share = if server.local_addr().ip().is_unspecified() {
                    share_urls(port)
                } else {
                    vec![server.url()]
                };
                // We reach our own server over loopback: always there, whatever the LAN does.
                let own = format!("http://127.0.0.1:{port}");
                (own, Some(server), share)
            }
        };

        let socket = match Socket::connect(&url, cfg.socket.clone()).await {
            Ok(s) => s,
            Err(e) => {
                if let Some(server) = server {
                    let _ = server.shutdown().await;
                }
                return Err(e.into());
            }
        };

        let flags = Arc::new(Mutex::new(Flags {
            mic: cfg.mic,
            cam: cfg.cam,
        }));
        let sizes = TileSizes::default();
        let receivers = Arc::new(Mutex::new(Receivers::new(
            sizes.clone(),
            frames.clone(),
            cfg.media.speaker.clone(),
        )));
        let mut session = Session {
            socket: socket.clone(),
            chat: None,
            server,
            listeners: Vec::new(),
            chat_listeners: Vec::new(),
            tasks: Vec::new(),
            name: name.clone(),
            room_id: room_id.clone(),
            flags: flags.clone(),
            outgoing: Arc::new(Mutex::new(Outgoing::default())),
            receivers,
            sizes,
            frames,
            screen_fps: 15.0,
            // Before join-room: every peer-connect must create the `file` channel.
            transfers: Some(Transfers::start(
                socket.clone(),
                cfg.downloads
                    .clone()
                    .unwrap_or_else(transfer::default_downloads_dir),
                ui.clone(),
            )),
            ui: ui.clone(),
        };
        // Listeners first: the server backfills the roster right after `join-room`.
        session.install_forwarders(&ui);
        session.install_media_listeners(&ui);
        session
            .tasks
            .push(crate::quality::spawn(socket.clone(), ui.clone()));
        session
            .tasks
            .push(spawn_audio_levels(session.receivers.clone(), ui.clone()));
        // Our camera stream exists before join-room, so every peer connection made for the
        // room carries it from its first offer (the demo emits `camera` on connect, too).
        let media_errors = session.start_camera(&cfg.media).await;
        match session.finish_join(&cfg, &ui).await {
            Ok(confirmed) => {
                let preview_key = lock_any(&session.outgoing)
                    .camera
                    .as_ref()
                    .filter(|c| c.has(MediaKind::Video))
                    .map(|_| media::SELF_PREVIEW_KEY.to_string());
                let f = lock(&flags);
                let info = JoinInfo {
                    self_id: socket.id(),
                    room_id,
                    name,
                    server_url: url,
                    hosting: session.server.is_some(),
                    share_urls: share,
                    mic: f.mic,
                    cam: f.cam,
                    join_confirmed: confirmed,
                    media_errors,
                    preview_key,
                };
                info!(room = %info.room_id, id = %info.self_id, "joined");
                Ok((session, info))
            }
            Err(e) => {
                session.leave().await;
                Err(e)
            }
        }
    }

    fn install_forwarders(&mut self, ui: &UiSink) {
        let socket = &self.socket;
        let room = self.room_id.clone();

        let mut on = |event: &str, f: Translate| {
            let ui = ui.clone();
            self.listeners.push(socket.on(event, move |ev| {
                if let Some((name, payload)) = f(ev) {
                    ui(name, payload);
                }
            }));
        };
        fn room_event(e: Option<RoomEvent>) -> Option<(&'static str, Value)> {
            e.and_then(|e| serde_json::to_value(e).ok())
                .map(|v| ("room-event", v))
        }
        on(
            "user-connected",
            Box::new(|ev| room_event(inbound::user_connected(ev))),
        );
        on(
            "user-disconnected",
            Box::new(|ev| room_event(inbound::user_disconnected(ev))),
        );
        on("join-ok", Box::new(|ev| room_event(inbound::join_ok(ev))));
        on(
            "join-error",
            Box::new(|ev| room_event(inbound::join_error(ev))),
        );
        let r = room.clone();
        on(
            "media-state",
            Box::new(move |ev| {
                inbound::media_state(ev, &r)
                    .and_then(|m| serde_json::to_value(m).ok())
                    .map(|v| ("media-state", v))
            }),
        );
        // Other chat conventions (ctrl `chat`, the example server's `chat-message`) land in the
        // same panel; our own sends use the broadcast channel only.
        for event in ["chat", "chat-message"] {
            let r = room.clone();
            on(
                event,
                Box::new(move |ev| {
                    inbound::chat(ev, &r)
                        .and_then(|m| serde_json::to_value(m).ok())
                        .map(|v| ("chat", v))
                }),
            );
        }
        on(
            "peer-connect",
            Box::new(|ev| inbound::peer_id(ev).map(|id| ("peer-connect", json!({"id": id})))),
        );
        on(
            "peer-disconnect",
            Box::new(|ev| inbound::peer_id(ev).map(|id| ("peer-disconnect", json!({"id": id})))),
        );
        on(
            "disconnect",
            Box::new(|ev| {
                (ev.origin == rtcio::Origin::Local).then(|| {
                    room_event(Some(RoomEvent::Connection {
                        state: "reconnecting",
                        id: None,
                    }))
                })?
            }),
        );

        // Tasks that need the socket itself: kept as handles (aborted on leave) rather than
        // closures inside the socket's own registry, which would keep it alive forever.
        let mut connects = socket.subscribe("connect");
        let s = socket.clone();
        let flags = self.flags.clone();
        let r = room.clone();
        let ui2 = ui.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Some(ev) = connects.recv().await {
                if ev.origin != rtcio::Origin::Local {
                    continue;
                }
                // Stream announcements need nothing here: their `id` is rtcio::SELF_ID, which
                // the library fills in with the id current when the metadata leaves.
                // After a reconnect the library has re-sent join-room; the server's media
                // cache was keyed by our old id, so announce the state again.
                if let Err(e) = announce(&s, lock(&flags), &r) {
                    warn!("re-announcing media state failed: {e}");
                }
                let id = ev.arg().as_str().map(str::to_string);
                if let Some(v) = room_event(Some(RoomEvent::Connection {
                    state: "connected",
                    id,
                })) {
                    ui2(v.0, v.1);
                }
            }
        }));
        // After a server restart nobody sends `user-disconnected` for the ids of the old session:
        // the UI would keep a ghost of everyone (the library keeps the old connections until
        // the re-joined ones carry the call). When the library closes such an old connection,
        // its person has left as far as the UI goes.
        let mut signaling = socket.subscribe("disconnect");
        let mut connected = socket.subscribe("connect");
        let mut closed = socket.subscribe("peer-disconnect");
        let s = socket.clone();
        let ui3 = ui.clone();
        self.tasks.push(tokio::spawn(async move {
            let mut our_id = s.id();
            // Peers when signaling dropped (every one of the old session), then the old ones.
            let mut before: Vec<String> = Vec::new();
            let mut old: std::collections::HashSet<String> = Default::default();
            loop {
                tokio::select! {
                    Some(ev) = signaling.recv() => {
                        if ev.origin == Origin::Local {
                            before = s.peers().await;
                        }
                    }
                    Some(ev) = connected.recv() => {
                        let id = ev.arg().as_str().unwrap_or_default().to_string();
                        if ev.origin != Origin::Local {
                            continue;
                        }
                        // Same id: the server kept us, and everyone keeps their ids.
                        let prev = std::mem::take(&mut before);
                        if !id.is_empty() && id != our_id {
                            old.extend(prev);
                            our_id = id;
                        }
                    }
                    Some(ev) = closed.recv() => {
                        if ev.origin != Origin::Local {
                            continue;
                        }
                        if let Some(id) = inbound::peer_id(&ev)
                            && old.remove(&id)
                            && let Ok(v) = serde_json::to_value(RoomEvent::UserDisconnected { id })
                        {
                            ui3("room-event", v);
                        }
                    }
                    else => break,
                }
            }
        }));
        // A newly connected peer may sit behind a server that neither caches nor relays
        // media-state (the tutorial's): tell it directly.
        let mut peers = socket.subscribe("peer-connect");
        let s = socket.clone();
        let flags = self.flags.clone();
        let outgoing = self.outgoing.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Some(ev) = peers.recv().await {
                if let Some(id) = inbound::peer_id(&ev) {
                    // Its decoders need an IDR: do not wait for their PLI.
                    let out = lock_any(&outgoing);
                    for stream in [&out.camera, &out.screen].into_iter().flatten() {
                        stream.request_keyframe();
                    }
                    drop(out);
                    let payload = media_payload(&s.id(), lock(&flags), &room);
                    if let Err(e) = s.peer(&id).emit("media-state", vec![payload]) {
                        warn!(peer = %id, "sending media state failed: {e}");
                    }
                }
            }
        }));
    }

    /// Listens for remote streams (every §8 announcement form), their tracks, stop-share
    /// echoes and departures, and plays / stops them.
    fn install_media_listeners(&mut self, ui: &UiSink) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
        for name in MEDIA_EVENTS {
            let tx = tx.clone();
            self.listeners.push(self.socket.on(name, move |ev| {
                let _ = tx.send(ev.clone());
            }));
        }
        let receivers = self.receivers.clone();
        let ui = ui.clone();
        let socket = self.socket.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                on_media_event(&ev, &receivers, &ui, &socket.id());
            }
        }));
    }

    /// Opens our camera and microphone and announces the stream the demo's way
    /// (`camera {id, name, camera: <stream>}`). Returns what could not be opened, for the UI.
    async fn start_camera(&mut self, cfg: &MediaConfig) -> Vec<String> {
        let (opened, mut problems) = media::open_sources(cfg).await;
        let has = |k: MediaKind| opened.iter().any(|o| o.kind() == k);
        let flags = {
            let mut f = self.flags.lock().unwrap_or_else(|p| p.into_inner());
            // A device that was asked for but could not be opened is honestly "off".
            if cfg.video != media::VideoChoice::Off && !has(MediaKind::Video) {
                f.cam = false;
            }
            if cfg.audio != media::AudioChoice::Off && !has(MediaKind::Audio) {
                f.mic = false;
            }
            *f
        };
        if opened.is_empty() {
            return problems;
        }
        if let Some(mic) = opened.iter().find(|o| o.kind() == MediaKind::Audio) {
            lock_any(&self.receivers).feed_echo_canceller(mic.render_tap(), mic.apm_control());
        }
        let mut stream = media::attach_camera(
            &self.socket,
            opened,
            self.sizes.clone(),
            self.frames.clone(),
        );
        stream.start_mic_level(self.ui.clone());
        let (camera_id, mic_id) = media::device_ids(cfg);
        stream.set_device(MediaKind::Video, camera_id);
        stream.set_device(MediaKind::Audio, mic_id);
        stream.set_enabled(MediaKind::Video, flags.cam);
        stream.set_enabled(MediaKind::Audio, flags.mic);
        // SELF_ID: receivers key our tile by the id that sends it, also after a reconnect.
        let payload =
            json!({"id": rtcio::SELF_ID, "name": self.name, "camera": stream.stream().token()});
        if let Err(e) = self.socket.emit("camera", vec![payload]) {
            warn!("announcing the camera stream failed: {e}");
            problems.push(format!("Could not announce your camera: {e}"));
        }
        info!(stream = %stream.stream().id(), "camera stream announced");
        lock_any(&self.outgoing).camera = Some(stream);
        problems
    }

    /// Shares a monitor (`display`: X display, `None` = `$DISPLAY`; `monitor`: id from
    /// `list_monitors`, `None` = primary) as a second stream, announced the demo's way:
    /// `screenshare {id, name, stream}`. Takes `&mut self` because a session is not `Sync`
    /// (the embedded server's shutdown hook), so a shared borrow cannot cross the await.
    pub async fn start_screen_share(
        &mut self,
        display: Option<String>,
        monitor: Option<String>,
    ) -> Result<(), AppError> {
        if lock_any(&self.outgoing).screen.is_some() {
            return Err(AppError::Invalid(
                "You are already sharing your screen.".into(),
            ));
        }
        let fps = self.screen_fps;
        let opened = tokio::task::spawn_blocking(move || media::open_screen(display, monitor, fps))
            .await
            .map_err(|e| AppError::Media(format!("screen capture stopped: {e}")))?
            .map_err(|e| AppError::Media(format!("Cannot capture the screen: {e}")))?;
        let stream = SendStream::attach(&self.socket, vec![opened]);
        let payload =
            json!({"id": rtcio::SELF_ID, "name": self.name, "stream": stream.stream().token()});
        if let Err(e) = self.socket.emit("screenshare", vec![payload]) {
            stream.stop(&self.socket, true);
            return Err(e.into());
        }
        info!(stream = %stream.stream().id(), "screen share announced");
        lock_any(&self.outgoing).screen = Some(stream);
        Ok(())
    }

    /// Stops sharing: the stream is untracked and its tracks removed (peers see
    /// `track-removed`), then `stopScreenShare` goes out through the server (the demo's echo,
    /// `{id, roomId}`) and over ctrl (`{id}`, the streams guide's form). False when not sharing.
    pub fn stop_screen_share(&self) -> Result<bool, AppError> {
        let Some(stream) = lock_any(&self.outgoing).screen.take() else {
            return Ok(false);
        };
        stream.stop(&self.socket, true);
        let id = self.socket.id();
        self.socket.server().emit(
            "stopScreenShare",
            vec![json!({"id": id, "roomId": self.room_id})],
        )?;
        self.socket
            .emit("stopScreenShare", vec![json!({"id": id})])?;
        info!("screen share stopped");
        Ok(true)
    }

    /// Samples of one kind our camera stream has sent so far (0 without one): the toggles stop
    /// it from growing.
    pub fn samples_sent(&self, kind: MediaKind) -> u64 {
        lock_any(&self.outgoing)
            .camera
            .as_ref()
            .map_or(0, |c| c.samples_written(kind))
    }

    /// True while we share a screen.
    pub fn sharing_screen(&self) -> bool {
        lock_any(&self.outgoing).screen.is_some()
    }

    /// The size a tile is displayed at: its frames are scaled to fit it.
    pub fn set_tile_size(&self, key: &str, width: u32, height: u32) {
        self.sizes.set(key, width, height);
    }

    /// Creates the chat channel, sends `join-room` and waits for the verdict.
    /// `Ok(true)`: join-ok; `Ok(false)`: no verdict in time (servers without join-ok).
    async fn finish_join(&mut self, cfg: &JoinConfig, ui: &UiSink) -> Result<bool, AppError> {
        let chat = self
            .socket
            .create_channel("chat", ChannelOptions::reliable())
            .await?;
        let r = self.room_id.clone();
        let sink = ui.clone();
        self.chat_listeners.push(chat.on("msg", move |ev| {
            if let Some(v) = inbound::chat(ev, &r).and_then(|m| serde_json::to_value(m).ok()) {
                sink("chat", v);
            }
        }));
        self.chat = Some(chat);

        let mut ok = self.socket.server().subscribe("join-ok");
        let mut err = self.socket.server().subscribe("join-error");
        let mut req = json!({"roomId": self.room_id, "name": self.name});
        if let Some(pw) = cfg.password.as_deref().filter(|p| !p.is_empty()) {
            req["password"] = json!(pw);
        }
        self.socket.server().emit("join-room", vec![req])?;

        let verdict = async {
            loop {
                tokio::select! {
                    Some(ev) = ok.recv() => {
                        if let Some(RoomEvent::JoinOk { room_id }) = inbound::join_ok(&ev)
                            && room_id.as_deref().is_none_or(|r| r == self.room_id)
                        {
                            return Ok(true);
                        }
                    }
                    Some(ev) = err.recv() => {
                        if let Some(RoomEvent::JoinError { reason, .. }) = inbound::join_error(&ev) {
                            return Err(AppError::Join { reason });
                        }
                    }
                    else => return Err(AppError::Connection("the connection closed while joining".into())),
                }
            }
        };
        let confirmed = match tokio::time::timeout(cfg.join_timeout, verdict).await {
            Ok(result) => result?,
            Err(_) => {
                info!("no join-ok/join-error from the server: assuming it accepted us");
                false
            }
        };
        announce(&self.socket, lock(&self.flags), &self.room_id)?;
        Ok(confirmed)
    }

    /// Sends a chat message on the `chat` broadcast channel (tutorial form `msg {name, text,
    /// at}`) and returns it for the local echo: the channel never sends it back to us.
    pub fn send_chat(&self, text: &str) -> Result<ChatMessage, AppError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(AppError::Invalid("The message is empty.".into()));
        }
        if text.chars().count() > inbound::MAX_CHAT_CHARS {
            return Err(AppError::Invalid(format!(
                "The message is longer than {} characters.",
                inbound::MAX_CHAT_CHARS
            )));
        }
        let chat = self.chat.as_ref().ok_or(AppError::NotJoined)?;
        let msg = ChatMessage {
            from: None,
            name: self.name.clone(),
            text: text.to_string(),
            at: inbound::now_ms(),
        };
        chat.emit(
            "msg",
            vec![json!({"name": msg.name, "text": msg.text, "at": msg.at})],
        );
        Ok(msg)
    }

    /// Changes our microphone / camera state and tells the room.
    pub fn set_media_state(&self, mic: bool, cam: bool) -> Result<(), AppError> {
        let flags = {
            let mut f = self.flags.lock().unwrap_or_else(|p| p.into_inner());
            f.mic = mic;
            f.cam = cam;
            *f
        };
        if let Some(c) = &lock_any(&self.outgoing).camera {
            c.set_enabled(MediaKind::Audio, mic);
            c.set_enabled(MediaKind::Video, cam);
        }
        announce(&self.socket, flags, &self.room_id)?;
        Ok(())
    }

    /// Runs `f` on our camera (+ microphone) stream, e.g. to switch its devices mid-call;
    /// `None` when we send none.
    pub fn with_camera<T>(&self, f: impl FnOnce(&mut SendStream) -> T) -> Option<T> {
        lock_any(&self.outgoing).camera.as_mut().map(f)
    }

    /// Plays the room's audio on another output from now on; returns its name.
    pub fn set_speaker(&self, speaker: rtcio_media::OutputDevice) -> String {
        lock_any(&self.receivers).set_speaker(speaker)
    }

    /// Sends the file at `path` to `peer`; returns the transfer id. `&mut self` for the same
    /// reason as [`Session::start_screen_share`].
    pub async fn send_file(&mut self, peer: &str, path: &Path) -> Result<String, AppError> {
        let t = self.transfers.as_ref().ok_or(AppError::NotJoined)?;
        Ok(t.send_file(peer, path).await?)
    }

    /// True once our `file` channel to `peer` is open (files it sends reach us).
    pub fn file_channel_ready(&self, peer: &str) -> bool {
        self.transfers.as_ref().is_some_and(|t| t.ready(peer))
    }

    /// Cancels a running file transfer (either direction).
    pub fn cancel_transfer(&self, tid: &str) -> Result<(), AppError> {
        let t = self.transfers.as_ref().ok_or(AppError::NotJoined)?;
        Ok(t.cancel(tid)?)
    }

    /// Our current socket id.
    pub fn id(&self) -> String {
        self.socket.id()
    }

    /// The socket, for callers that need more than this type offers (tests, stats).
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Leaves: stops forwarding, closes every peer connection (peers notice at once), and stops
    /// the embedded server when hosting (which ends the room for everyone on it).
    pub async fn leave(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        for id in self.listeners.drain(..) {
            self.socket.off(id);
        }
        if let Some(chat) = self.chat.take() {
            for id in self.chat_listeners.drain(..) {
                chat.off(id);
            }
            chat.close();
        }
        if let Some(t) = self.transfers.take() {
            // Running transfers end with file-error; partial files are removed.
            t.stop().await;
        }
        let out = std::mem::take(&mut *lock_any(&self.outgoing));
        for stream in [out.camera, out.screen].into_iter().flatten() {
            // The peer connections close right after: no renegotiation needed.
            stream.stop(&self.socket, false);
        }
        lock_any(&self.receivers).stop();
        // When we host, the room hears `user-disconnected` from our own server: let it handle
        // our disconnect before it stops (bounded, a stuck server must not block leaving).
        match self.server.as_ref().map(|s| s.disconnect_watch()) {
            Some(mut watch) => {
                let close = self.socket.close();
                if !watch
                    .after_own_disconnect(close, Duration::from_secs(1))
                    .await
                {
                    warn!(
                        "the embedded server did not see us leave within 1 s; stopping it anyway"
                    );
                }
            }
            None => self.socket.close().await,
        }
        if let Some(server) = self.server.take()
            && let Err(e) = server.shutdown().await
        {
            warn!("stopping the embedded server failed: {e}");
        }
        info!(room = %self.room_id, "left");
    }
}

/// Events that carry remote streams or end them (PROTOCOL.md §8, every form).
const MEDIA_EVENTS: [&str; 11] = [
    "camera",
    "screenshare",
    "screen",
    "stream",
    "track-added",
    "track-removed",
    "stopScreenShare",
    "stop-share",
    "screen-stopped",
    "peer-disconnect",
    "user-disconnected",
];

/// Which kind of stream an announcing event carries.
fn stream_kind(event: &str, arg: &Value) -> StreamKind {
    match event {
        "screenshare" | "screen" => StreamKind::Screen,
        "stream" if arg["metadata"]["kind"] == "screen" || arg.get("screen").is_some() => {
            StreamKind::Screen
        }
        _ => StreamKind::Camera,
    }
}

fn removed(ui: &UiSink, key: &str, peer: &str, kind: StreamKind) {
    ui(
        "stream-removed",
        json!({"key": key, "peerId": peer, "kind": kind.as_str()}),
    );
}

/// One media event: start or stop playing remote streams and tell the UI.
fn on_media_event(ev: &Event, receivers: &Mutex<Receivers>, ui: &UiSink, self_id: &str) {
    let arg = ev.arg();
    let mut rx = lock_any(receivers);
    match ev.name.as_str() {
        "camera" | "screenshare" | "screen" | "stream" => {
            let (Some(rs), Origin::Peer(peer)) = (&ev.stream, &ev.origin) else {
                return;
            };
            let kind = stream_kind(&ev.name, arg);
            if rx.add_stream(rs, kind) {
                let name = arg
                    .get("name")
                    .or_else(|| arg["metadata"].get("displayName"))
                    .and_then(Value::as_str)
                    .map(|n| n.chars().take(inbound::MAX_NAME_CHARS).collect::<String>());
                ui(
                    "stream-added",
                    json!({"key": media::stream_key(peer, rs.msid()), "peerId": peer,
                           "kind": kind.as_str(), "name": name}),
                );
            }
        }
        "track-added" => {
            if let Some(rs) = &ev.stream {
                rx.add_tracks(rs);
            }
        }
        "track-removed" => {
            let (Some(rs), Some(mid)) = (&ev.stream, arg["track"]["mid"].as_str()) else {
                return;
            };
            let key = media::stream_key(rs.peer(), rs.msid());
            let kind = rx.kind_of(&key);
            if let Some(kind) = kind
                && rx.track_removed(&key, mid)
            {
                rx.remove(&key);
                removed(ui, &key, rs.peer(), kind);
            }
        }
        "stopScreenShare" | "stop-share" | "screen-stopped" => {
            // Over ctrl the sender is the peer itself; through the server the payload says.
            let peer = match &ev.origin {
                Origin::Peer(p) => Some(p.as_str()),
                _ => arg.get("id").and_then(Value::as_str),
            };
            let Some(peer) = peer.filter(|p| *p != self_id) else {
                return;
            };
            for key in rx.remove_peer(peer, Some(StreamKind::Screen)) {
                removed(ui, &key, peer, StreamKind::Screen);
            }
        }
        "peer-disconnect" | "user-disconnected" => {
            let peer = match (ev.name.as_str(), &ev.origin) {
                ("peer-disconnect", _) => inbound::peer_id(ev),
                (_, Origin::Server) => arg.get("id").and_then(Value::as_str).map(str::to_string),
                _ => None,
            };
            if let Some(peer) = peer {
                for kind in [StreamKind::Camera, StreamKind::Screen] {
                    for key in rx.remove_peer(&peer, Some(kind)) {
                        removed(ui, &key, &peer, kind);
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        assert!(parse_server_url("http://192.168.1.2:3001").is_ok());
        assert!(parse_server_url(" https://rooms.example ").is_ok());
        assert_eq!(
            parse_server_url("192.168.1.2:3001").unwrap_err().kind(),
            "badUrl"
        );
        assert_eq!(parse_server_url("ftp://x").unwrap_err().kind(), "badUrl");
        assert_eq!(parse_server_url("not a url").unwrap_err().kind(), "badUrl");
    }
}
