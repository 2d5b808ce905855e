//! Starting, serving and stopping the server: socket.io (long-polling + WebSocket) on axum, the
//! handshake token check, origin policy, `/healthz`, and the optional Redis adapter.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide_core::adapter::DefinedAdapter;
use socketioxide_redis::{CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr};

use crate::redis_driver::TimedRedisDriver;

/// Pub/sub messages a process may have waiting (socketioxide-redis's default is 1 024). Every
/// process receives every broadcast of the cluster: at 1 024 a process behind by a second of a
/// join burst dropped relayed messages and leave announcements ("channel full").
const PUBSUB_BUFFER: usize = 1 << 16;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_layer::Layer as _;
use tracing::{info, warn};

use crate::config::{CorsPolicy, ServerConfig};
use crate::session::{self, Shared};
use crate::store::{Store, StoreError};
use crate::turn_relay::{RelayError, RelayStats, TurnRelay};
use crate::web::WebRoot;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The requested address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The Redis URL was malformed or Redis was unreachable.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The shared store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The socket.io adapter failed to initialise.
    #[error("socket.io adapter: {0}")]
    Adapter(String),
    /// A configured CORS origin is not a valid header value.
    #[error("invalid CORS origin {0:?}")]
    BadOrigin(String),
    /// The HTTP server stopped with an error.
    #[error("http server: {0}")]
    Serve(#[from] std::io::Error),
    /// The TURN configuration was refused or the relay did not start.
    #[error(transparent)]
    Turn(#[from] RelayError),
}

/// Initial WebSocket read buffer of each socket, in bytes.
const WS_READ_BUFFER: usize = 256;

/// Handshake rejection carried to the client as `connect_error {message}`.
#[derive(Debug, thiserror::Error)]
#[error("unauthorized")]
struct Unauthorized;

type CloseFn = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// A server running inside the caller's tokio runtime.
pub struct RunningServer {
    addr: SocketAddr,
    stop_tx: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), std::io::Error>>,
    close_io: Option<CloseFn>,
    disconnects: watch::Receiver<u64>,
    turn: Option<Arc<TurnRelay>>,
}

impl RunningServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port` for clients on this machine.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The embedded TURN relay's UDP address, when it runs.
    pub fn turn_addr(&self) -> Option<SocketAddr> {
        self.turn.as_ref().map(|t| t.addr())
    }

    /// The embedded TURN relay's counters, when it runs.
    pub fn turn_stats(&self) -> Option<RelayStats> {
        self.turn.as_ref().map(|t| t.stats())
    }

    /// Disconnects every socket (peers get their leave events), then stops serving.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(close) = self.close_io.take() {
            close().await;
        }
        if let Some(turn) = self.turn.take() {
            turn.close().await;
        }
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r.map_err(ServerError::Serve),
            Err(e) => Err(ServerError::Serve(std::io::Error::other(e))),
        }
    }

    /// How many sockets' disconnects have been fully handled (the room told with
    /// `user-disconnected`). An app that hosts the server and is itself a client reads it before
    /// closing its socket and waits for it to grow before [`RunningServer::shutdown`], so the
    /// others hear that it left instead of only losing the server.
    pub fn handled_disconnects(&self) -> watch::Receiver<u64> {
        self.disconnects.clone()
    }

    /// A watch for a process that hosts this server and is also one of its clients (see
    /// [`DisconnectWatch::after_own_disconnect`]).
    pub fn disconnect_watch(&self) -> DisconnectWatch {
        DisconnectWatch(self.disconnects.clone())
    }

    /// Serves until the process gets Ctrl-C or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> Result<(), ServerError> {
        shutdown_signal().await;
        info!("shutting down");
        self.shutdown().await
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            warn!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Starts the server described by `config` and returns once it is listening.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    let listener = TcpListener::bind(config.bind)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.bind,
            source,
        })?;
    let addr = listener.local_addr()?;
    // tungstenite keeps its WebSocket read buffer for the socket's life: 256 bytes instead of
    // engineioxide's 4 KiB. Below 1 KiB it also stops re-growing it to the initial size (`bytes`
    // only remembers capacities from 1 KiB up), so an idle socket keeps about its last frame.
    // The syscalls still read 8 KiB at a time, through the vendored engineioxide's buffer that
    // exists only while data arrives (`transport/idle_read.rs`).
    let builder = SocketIo::builder()
        .max_payload(config.max_payload)
        .ws_read_buffer_size(WS_READ_BUFFER);

    let turn = start_turn(&config).await?;
    let http = Arc::new(HttpState {
        web: config.web.clone(),
        auth_token: config.auth_token.clone(),
        ice: turn.as_ref().map(|(ice, _)| ice.clone()),
    });
    let turn = turn.and_then(|(_, relay)| relay);
    let (disconnects_tx, disconnects) = watch::channel(0u64);
    let (router, close_io): (Router, CloseFn) = match &config.redis_url {
        None => {
            let (layer, io) = builder.build_layer();
            let shared = Arc::new(Shared {
                io: io.clone(),
                store: Store::memory(),
                policy: config.policy.clone(),
                disconnects: disconnects_tx.clone(),
                rooms: Default::default(),
            });
            install(&io, shared, config.auth_token.clone());
            (http_router(layer, &config, http.clone())?, closer(io))
        }
        Some(url) => {
            let client = redis::Client::open(with_resp3(url).as_str())?;
            let ctr = RedisAdapterCtr::new_with_driver(
                TimedRedisDriver::new(&client).await?,
                RedisAdapterConfig::new()
                    .with_prefix(format!("{}-sio", config.redis_prefix))
                    .with_stream_buffer(PUBSUB_BUFFER)
                    .with_request_timeout(crate::redis_driver::ADAPTER_REQUEST_TIMEOUT),
            );
            let store = Store::redis(client, &config.redis_prefix, config.redis_key_ttl).await?;
            let (layer, io) = builder
                .with_adapter::<CustomRedisAdapter<_, TimedRedisDriver>>(ctr)
                .build_layer();
            let shared = Arc::new(Shared {
                io: io.clone(),
                store,
                policy: config.policy.clone(),
                disconnects: disconnects_tx.clone(),
                rooms: Default::default(),
            });
            install(&io, shared, config.auth_token.clone())
                .await
                .map_err(|e| ServerError::Adapter(e.to_string()))?;
            (http_router(layer, &config, http.clone())?, closer(io))
        }
    };

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        // HTTP/1 without `axum::serve`'s protocol sniffing (`src/http.rs`). `with_state` once
        // first turns the handlers into routes, so a connection's clone of the router clones
        // only an `Arc` (`axum::serve(listener, router)` deep-cloned the route table per
        // connection, ~15 allocations per socket).
        crate::http::serve(listener, router.with_state::<()>(()), stop_rx).await
    });
    info!(%addr, redis = config.redis_url.is_some(), "rtcio-server listening");
    Ok(RunningServer {
        addr,
        stop_tx: Some(stop_tx),
        task,
        close_io: Some(close_io),
        disconnects,
        turn,
    })
}

/// What `/ice-servers` hands out.
#[derive(Clone)]
struct IceVending {
    secret: String,
    urls: Vec<String>,
    ttl: Duration,
    /// The embedded relay's port and whether it listens on every address (then URLs name the
    /// host the client used for HTTP) or on one (then they name that address).
    relay: Option<(u16, Option<IpAddr>)>,
}

struct HttpState {
    web: WebRoot,
    auth_token: Option<String>,
    ice: Option<IceVending>,
}

async fn start_turn(
    config: &ServerConfig,
) -> Result<Option<(IceVending, Option<Arc<TurnRelay>>)>, ServerError> {
    let Some(turn) = &config.turn else {
        return Ok(None);
    };
    let secret = match (&turn.secret, &turn.relay) {
        (Some(s), _) if !s.is_empty() => s.clone(),
        (_, Some(_)) => random_secret(),
        (_, None) => {
            return Err(RelayError::Config(
                "TURN URLs without a relay here need the relay's shared secret".into(),
            )
            .into());
        }
    };
    if turn.urls.is_empty() && turn.relay.is_none() {
        return Err(RelayError::Config("no TURN URLs and no relay to hand out".into()).into());
    }
    let relay = match &turn.relay {
        Some(rc) => Some(Arc::new(TurnRelay::start(rc, &secret).await?)),
        None => None,
    };
    let vending = IceVending {
        secret,
        urls: turn.urls.clone(),
        ttl: turn.ttl,
        relay: relay.as_ref().map(|r| {
            let ip = r.addr().ip();
            (
                r.addr().port(),
                (!ip.is_unspecified()).then_some(r.relay_ip()),
            )
        }),
    };
    Ok(Some((vending, relay)))
}

fn random_secret() -> String {
    (0..4)
        .map(|_| format!("{:016x}", rand::random::<u64>()))
        .collect()
}

fn bearer_ok(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), expected.as_bytes()))
}

/// `GET /ice-servers`: short-lived TURN credentials for whoever may use this server.
async fn ice_servers(state: Arc<HttpState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.auth_token
        && !bearer_ok(&headers, token)
    {
        return (StatusCode::UNAUTHORIZED, "unauthorized").into_response();
    }
    let Some(ice) = &state.ice else {
        return (
            StatusCode::NOT_FOUND,
            "this server hands out no TURN credentials",
        )
            .into_response();
    };
    let mut urls = ice.urls.clone();
    if let Some((port, fixed_ip)) = ice.relay {
        let host = match fixed_ip {
            Some(IpAddr::V6(v6)) => Some(format!("[{v6}]")),
            Some(ip) => Some(ip.to_string()),
            None => headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(crate::ice::host_of)
                .map(str::to_owned),
        };
        if let Some(host) = host {
            urls.push(format!("stun:{host}:{port}"));
            urls.push(format!("turn:{host}:{port}?transport=udp"));
        }
    }
    if urls.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "no Host header to name the relay by",
        )
            .into_response();
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // Each answer its own user name, so the relay's per-user quota is per credential.
    let tag = format!("{:016x}", rand::random::<u64>());
    let body = crate::ice::grant(&ice.secret, urls, ice.ttl, now, &tag);
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn closer<A: Adapter>(io: SocketIo<A>) -> CloseFn {
    Box::new(move || Box::pin(async move { io.close().await }))
}

/// The socketioxide Redis driver needs RESP3 push messages.
fn with_resp3(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

/// Registers the `/` namespace: the token check as connect middleware, then [`session::attach`].
fn install<A: Adapter + DefinedAdapter>(
    io: &SocketIo<A>,
    shared: Arc<Shared<A>>,
    token: Option<String>,
) -> A::InitRes {
    // Everything happens in the connect middleware, which runs before socketioxide sends the
    // CONNECT ack: a client that emits `join-room` the moment it is connected (every rtc.io
    // client does) must find its handlers in place. The connect handler itself runs only after
    // the ack and would race that first event; it only tells the socket's worker that replies can
    // now be sent.
    let token: Arc<Option<String>> = Arc::new(token);
    let on_connect = |s: SocketRef<A>| {
        session::connected(&s);
        std::future::ready(())
    };
    let handler = on_connect.with(
        move |socket: SocketRef<A>, TryData(auth): TryData<serde_json::Value>| {
            let token = token.clone();
            let shared = shared.clone();
            async move {
                if let Some(expected) = token.as_deref() {
                    let given = auth
                        .ok()
                        .and_then(|a| a.get("token").and_then(|t| t.as_str()).map(str::to_owned));
                    if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes())) {
                        return Err(Unauthorized);
                    }
                }
                session::attach(shared, socket);
                Ok(())
            }
        },
    );
    io.ns("/", handler)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn http_router<A: Adapter>(
    layer: SocketIoLayer<A>,
    config: &ServerConfig,
    http: Arc<HttpState>,
) -> Result<Router, ServerError> {
    let cors = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(Any);
    let pages = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/ice-servers",
            get({
                let http = http.clone();
                move |headers: HeaderMap| ice_servers(http.clone(), headers)
            }),
        )
        .fallback(move |method: Method, uri: Uri| {
            let http = http.clone();
            async move { crate::web::serve(&http.web, &method, &uri).await }
        });
    // One socket.io service in front of everything: `Router::layer` would call the layer once
    // per route and fallback, and socketioxide makes a new engine per call, so a long-polling
    // handshake and its WebSocket upgrade would land in different engines ("unknown sid").
    let router = Router::new()
        .fallback_service(layer.layer(pages))
        .layer(middleware::map_request(owned_head));
    Ok(match &config.cors {
        CorsPolicy::Any => router.layer(cors.allow_origin(Any)),
        CorsPolicy::List(origins) => {
            let values = origins
                .iter()
                .map(|o| HeaderValue::from_str(o).map_err(|_| ServerError::BadOrigin(o.clone())))
                .collect::<Result<Vec<_>, _>>()?;
            let allowed: Arc<Vec<HeaderValue>> = Arc::new(values.clone());
            router
                // Browsers do not apply CORS to WebSocket upgrades: refuse foreign origins ourselves.
                .layer(middleware::from_fn(move |req: Request, next: Next| {
                    let allowed = allowed.clone();
                    async move {
                        match req.headers().get(axum::http::header::ORIGIN) {
                            Some(origin) if !allowed.contains(origin) => {
                                (StatusCode::FORBIDDEN, "origin not allowed").into_response()
                            }
                            _ => next.run(req).await,
                        }
                    }
                }))
                .layer(cors.allow_origin(AllowOrigin::list(values)))
        }
    })
}

/// Gives a request owned copies of its URI and headers. socketioxide keeps every socket's request
/// head for the socket's lifetime, and hyper parses the URI and header values as slices of the
/// connection's read buffer (8–16 KiB): keeping them kept that whole buffer per idle socket, about
/// half its memory. The copies are a few hundred bytes. A socket.io request keeps only the headers
/// engineioxide reads ([`SOCKET_IO_HEADERS`]; the origin and CORS checks have run by then): a
/// browser's cookies, user agent and language would otherwise stay with every idle socket.
async fn owned_head(mut req: Request) -> Request {
    let socket_io = req.uri().path().starts_with(SOCKET_IO_PATH);
    let headers = std::mem::take(req.headers_mut());
    let mut owned = HeaderMap::with_capacity(if socket_io { 2 } else { headers.len() });
    let mut name: Option<header::HeaderName> = None;
    for (n, v) in headers {
        if let Some(n) = n {
            name = (!socket_io || SOCKET_IO_HEADERS.contains(&n))
                .then(|| header::HeaderName::from_bytes(n.as_str().as_bytes()).ok())
                .flatten();
        }
        if let (Some(n), Ok(mut copy)) = (&name, HeaderValue::from_bytes(v.as_bytes())) {
            copy.set_sensitive(v.is_sensitive());
            owned.append(n.clone(), copy);
        }
    }
    *req.headers_mut() = owned;
    if let Ok(uri) = Uri::try_from(req.uri().to_string()) {
        *req.uri_mut() = uri;
    }
    req
}

/// socketioxide's default path.
const SOCKET_IO_PATH: &str = "/socket.io/";
/// What engineioxide reads from a socket.io request: the WebSocket key it answers the upgrade
/// with, and the content type of a long-polling POST.
const SOCKET_IO_HEADERS: [header::HeaderName; 2] =
    [header::SEC_WEBSOCKET_KEY, header::CONTENT_TYPE];

/// Follows how many disconnects a [`RunningServer`] has fully handled.
#[derive(Clone, Debug)]
pub struct DisconnectWatch(watch::Receiver<u64>);

impl DisconnectWatch {
    /// Runs `close` (this process's own client closing its socket), then waits up to `limit`
    /// for the server to have handled that disconnect, so the room hears `user-disconnected`
    /// and `#rtcio:peer-left` before the server stops. False when it did not within `limit` (a
    /// stuck server must not block leaving).
    pub async fn after_own_disconnect<F: Future<Output = ()>>(
        &mut self,
        close: F,
        limit: std::time::Duration,
    ) -> bool {
        let before = *self.0.borrow_and_update();
        close.await;
        matches!(
            tokio::time::timeout(limit, self.0.wait_for(|n| *n > before)).await,
            Ok(Ok(_))
        )
    }
}
