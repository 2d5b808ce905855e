//! Server configuration: where to listen and how strict to be. Every hardening has a switch that
//! restores rtc.io-server + example-server behaviour; [`Policy::anchor`] turns them all off.

use std::net::SocketAddr;

pub use crate::turn_relay::RelayConfig;
pub use crate::web::WebRoot;

/// Behaviour switches. Defaults are the hardened ones.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Relay `#rtcio:message` only when sender and target share a joined room and `source` equals the
    /// sender's id. Off = rtc.io-server: relay to any `target` room.
    pub relay_requires_shared_room: bool,
    /// Echo `media-state` / `stopScreenShare` / `chat-message` only to rooms the sender has joined.
    /// Off = example server: echo to any `roomId`.
    pub echo_requires_membership: bool,
    /// A repeated `join-room` for a room the socket is already in answers `join-ok` only (no self
    /// backfill, no second `#rtcio:init-offer`). Off = example server: the full join sequence again.
    pub dedupe_rejoin: bool,
    /// Refuse room ids equal to a connected socket id (joining one would receive that socket's
    /// relays). Off = example server.
    pub reject_socket_id_rooms: bool,
    /// Largest accepted event payload in bytes (JSON text of the whole event). 0 = only the
    /// Engine.IO `max_payload` applies, as in the anchor.
    pub max_event_bytes: usize,
    /// Longest accepted room id in bytes. 0 = unlimited.
    pub max_room_id_len: usize,
    /// `join-room` display names are trimmed and may have at most this many Unicode scalar values
    /// and no control characters, else `join-error {reason: "invalid-name"}`
    /// ([`crate::protocol::validate_name`]). 0 = any string, passed on as given (the anchor).
    pub max_name_chars: usize,
    /// Relayed messages per second per socket (burst = 2×). 0 = unlimited.
    pub relay_per_second: f64,
    /// `join-room` + `check-room` per second per socket (burst 20). 0 = unlimited.
    pub joins_per_second: f64,
    /// Answer our clients' `#rtcio:previous-id {id}` (sent after a reconnect with a new id) with
    /// `#rtcio:peer-left {id}` to the sender's rooms when `id` is no connected socket
    /// ([`crate::previous_id`]). Off = the anchor, which has no handler for it.
    pub previous_id_hint: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            relay_requires_shared_room: true,
            echo_requires_membership: true,
            dedupe_rejoin: true,
            reject_socket_id_rooms: true,
            max_event_bytes: 128 * 1024,
            max_room_id_len: 256,
            max_name_chars: 64,
            relay_per_second: 200.0,
            joins_per_second: 2.0,
            previous_id_hint: true,
        }
    }
}

impl Policy {
    /// Exactly the anchor's behaviour (rtc.io-server + example room server).
    pub fn anchor() -> Self {
        Policy {
            relay_requires_shared_room: false,
            echo_requires_membership: false,
            dedupe_rejoin: false,
            reject_socket_id_rooms: false,
            max_event_bytes: 0,
            max_room_id_len: 0,
            max_name_chars: 0,
            relay_per_second: 0.0,
            joins_per_second: 0.0,
            previous_id_hint: false,
        }
    }
}

/// Which origins may connect.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum CorsPolicy {
    /// `Access-Control-Allow-Origin: *` (the anchor's `cors: {origin: "*"}`).
    #[default]
    Any,
    /// Only these exact origins (e.g. `https://app.example`); others get 403 on HTTP and WebSocket.
    List(Vec<String>),
}

/// Everything needed to start a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind; port 0 picks a free one.
    pub bind: SocketAddr,
    /// CORS / origin policy.
    pub cors: CorsPolicy,
    /// When set, clients must pass `auth: {token: "<this>"}` in the socket.io handshake.
    pub auth_token: Option<String>,
    /// `redis://…` URL: share rooms with other server processes through Redis.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key and channel we use.
    pub redis_prefix: String,
    /// TTL of the Redis keys this process writes; a heartbeat refreshes them every third of it,
    /// so a crashed process's sockets and passwords vanish from Redis within this time.
    pub redis_key_ttl: std::time::Duration,
    /// Hardening switches.
    pub policy: Policy,
    /// Engine.IO `maxPayload` (socket.io `maxHttpBufferSize`), 1 MB like the anchor.
    pub max_payload: u64,
    /// The page served at `/` (the browser guest page by default).
    pub web: WebRoot,
    /// TURN for this server's clients: `/ice-servers` credentials, optionally a relay in this
    /// process.
    pub turn: Option<TurnConfig>,
}

/// TURN for a server's clients.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnConfig {
    /// Shared secret of the short-lived credentials (coturn's `static-auth-secret`). `None`:
    /// a random one per process — enough when the relay is this process's own.
    pub secret: Option<String>,
    /// URLs handed out by `/ice-servers` (e.g. `turn:turn.example:3478`). Empty: the embedded
    /// relay's `stun:`/`turn:` URLs on the host the client reached this server by.
    pub urls: Vec<String>,
    /// How long handed-out credentials stay valid (an allocation ends at its first refresh
    /// after that).
    pub ttl: std::time::Duration,
    /// Run a TURN relay in this process.
    pub relay: Option<RelayConfig>,
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            secret: None,
            urls: Vec::new(),
            ttl: std::time::Duration::from_secs(24 * 3600),
            relay: None,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 3001)),
            cors: CorsPolicy::Any,
            auth_token: None,
            redis_url: None,
            redis_prefix: "rtcio".to_string(),
            redis_key_ttl: crate::store::DEFAULT_KEY_TTL,
            policy: Policy::default(),
            max_payload: 1_000_000,
            web: WebRoot::default(),
            turn: None,
        }
    }
}
