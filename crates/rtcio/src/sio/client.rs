//! A socket.io v4 client over WebSocket, just big enough for rtc.io signaling.
//!
//! Why not rust_socketio: rtc.io addresses peers by the namespace socket id from the CONNECT ack
//! (`source`/`target` of every envelope), and rust_socketio 0.6 does not expose it; it also drops
//! emits made before `open` and does not reconnect after a server-side disconnect. This client
//! reports the id on every (re)connect, buffers emits while disconnected like socket.io-client, and
//! reconnects forever with socket.io-client's backoff (1 s → 5 s, jitter 0.5).

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

use super::packet::{self, EioPacket, SioPacket};

/// Errors of the signaling connection.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SioError {
    /// The URL is not http(s)/ws(s).
    #[error("invalid signaling URL {0:?}: {1}")]
    BadUrl(String, String),
    /// The server could not be reached or the WebSocket failed.
    #[error("cannot reach the signaling server: {0}")]
    Unreachable(String),
    /// The server refused the socket.io connection (e.g. a wrong auth token).
    #[error("signaling server refused the connection: {0}")]
    Refused(String),
    /// The server spoke something that is not Engine.IO v4 / Socket.IO v5.
    #[error("signaling protocol error: {0}")]
    Protocol(String),
    /// No answer within the connect timeout.
    #[error("signaling connect timed out after {0:?}")]
    Timeout(Duration),
    /// The client was closed.
    #[error("signaling connection closed")]
    Closed,
}

/// Connection options.
#[derive(Debug, Clone)]
pub struct SioOptions {
    /// socket.io `auth` payload sent with CONNECT.
    pub auth: Option<Value>,
    /// Reconnect after the connection is lost.
    pub reconnection: bool,
    /// First reconnect delay.
    pub reconnection_delay: Duration,
    /// Largest reconnect delay.
    pub reconnection_delay_max: Duration,
    /// Jitter factor (0..1) applied to each delay.
    pub randomization_factor: f64,
    /// Limit for one connection attempt.
    pub timeout: Duration,
}

impl Default for SioOptions {
    fn default() -> Self {
        SioOptions {
            auth: None,
            reconnection: true,
            reconnection_delay: Duration::from_millis(1000),
            reconnection_delay_max: Duration::from_millis(5000),
            randomization_factor: 0.5,
            timeout: Duration::from_millis(20_000),
        }
    }
}

/// What the connection reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SioEvent {
    /// Connected (again): the namespace socket id.
    Connected {
        /// Socket id for `source`/`target`.
        id: String,
    },
    /// The connection dropped; reconnecting unless closed.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// A reconnect attempt failed.
    ConnectError(String),
    /// A server event with all its arguments (trailing offsets included).
    Event {
        /// Event name.
        name: String,
        /// Arguments.
        args: Vec<Value>,
    },
}

enum Cmd {
    Emit(String),
    Close(oneshot::Sender<()>),
}

/// Handle to the connection task. Cheap to clone.
#[derive(Clone)]
pub struct SioClient {
    cmd: mpsc::UnboundedSender<Cmd>,
    nsp: String,
}

/// Resolved endpoint: WebSocket URL and namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `ws(s)://host:port/socket.io/?EIO=4&transport=websocket`.
    pub ws_url: String,
    /// Namespace (the URL path, `/` by default).
    pub nsp: String,
}

/// Maps an `io(url)`-style URL to the WebSocket endpoint and namespace.
pub fn endpoint(url: &str) -> Result<Endpoint, SioError> {
    let parsed = url::Url::parse(url).map_err(|e| SioError::BadUrl(url.into(), e.to_string()))?;
    let scheme = match parsed.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => {
            return Err(SioError::BadUrl(
                url.into(),
                format!("unsupported scheme {other}"),
            ));
        }
    };
    let host = parsed
        .host_str()
        .ok_or_else(|| SioError::BadUrl(url.into(), "no host".into()))?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
    let path = parsed.path().trim_end_matches('/');
    let nsp = if path.is_empty() || path == "/socket.io" {
        "/".to_string()
    } else {
        path.to_string()
    };
    Ok(Endpoint {
        ws_url: format!("{scheme}://{host}{port}/socket.io/?EIO=4&transport=websocket"),
        nsp,
    })
}

impl SioClient {
    /// Connects and waits for the first CONNECT ack. Returns the handle, the event stream and the
    /// socket id. Later disconnects are reported as events and retried in the background.
    pub async fn connect(
        url: &str,
        opts: SioOptions,
    ) -> Result<(SioClient, mpsc::UnboundedReceiver<SioEvent>, String), SioError> {
        let ep = endpoint(url)?;
        let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let mut pending = VecDeque::new();
        let conn = tokio::time::timeout(opts.timeout, open_session(&ep, &opts))
            .await
            .map_err(|_| SioError::Timeout(opts.timeout))??;
        let id = conn.id.clone();
        let client = SioClient {
            cmd: cmd_tx,
            nsp: ep.nsp.clone(),
        };
        tokio::spawn(async move {
            let mut conn = Some(conn);
            let mut attempt: u32 = 0;
            loop {
                let session = match conn.take() {
                    Some(s) => s,
                    None => {
                        let delay = backoff(&opts, attempt);
                        attempt = attempt.saturating_add(1);
                        // Keep buffering emits while waiting; a close ends everything.
                        let wake = Instant::now() + delay;
                        loop {
                            tokio::select! {
                                _ = tokio::time::sleep_until(wake) => break,
                                cmd = cmd_rx.recv() => match cmd {
                                    Some(Cmd::Emit(f)) => pending.push_back(f),
                                    Some(Cmd::Close(done)) => { let _ = done.send(()); return; }
                                    None => return,
                                }
                            }
                        }
                        match tokio::time::timeout(opts.timeout, open_session(&ep, &opts)).await {
                            Ok(Ok(s)) => {
                                let _ = ev_tx.send(SioEvent::Connected { id: s.id.clone() });
                                s
                            }
                            Ok(Err(e)) => {
                                let refused = matches!(e, SioError::Refused(_));
                                let _ = ev_tx.send(SioEvent::ConnectError(e.to_string()));
                                if refused {
                                    // socket.io-client does not retry a server-side refusal.
                                    return;
                                }
                                continue;
                            }
                            Err(_) => {
                                let _ = ev_tx.send(SioEvent::ConnectError(
                                    SioError::Timeout(opts.timeout).to_string(),
                                ));
                                continue;
                            }
                        }
                    }
                };
                attempt = 0;
                match run_session(session, &mut cmd_rx, &ev_tx, &mut pending).await {
                    SessionEnd::Closed => return,
                    SessionEnd::Lost(reason) => {
                        info!(%reason, "signaling connection lost");
                        let _ = ev_tx.send(SioEvent::Disconnected { reason });
                        if !opts.reconnection {
                            return;
                        }
                    }
                }
            }
        });
        Ok((client, ev_rx, id))
    }

    /// Emits a socket.io event. While disconnected it is buffered and sent after reconnecting.
    pub fn emit(&self, name: &str, args: &[Value]) -> Result<(), SioError> {
        if packet::is_reserved_sio_event(name) {
            return Err(SioError::Protocol(format!(
                "`{name}` is a reserved socket.io event name"
            )));
        }
        self.cmd
            .send(Cmd::Emit(packet::encode_event(&self.nsp, name, args)))
            .map_err(|_| SioError::Closed)
    }

    /// Disconnects (sends socket.io DISCONNECT) and stops reconnecting.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

fn backoff(opts: &SioOptions, attempt: u32) -> Duration {
    let base = opts.reconnection_delay.as_secs_f64() * 2f64.powi(attempt.min(16) as i32);
    let jitter = opts.randomization_factor.clamp(0.0, 1.0);
    let factor = 1.0 + jitter * (rand::random::<f64>() * 2.0 - 1.0);
    Duration::from_secs_f64((base * factor).min(opts.reconnection_delay_max.as_secs_f64()))
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Session {
    ws: Ws,
    id: String,
    nsp: String,
    ping_window: Duration,
}

enum SessionEnd {
    Closed,
    Lost(String),
}

async fn next_text(ws: &mut Ws) -> Result<String, SioError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(Message::Close(_))) | None => {
                return Err(SioError::Unreachable("connection closed".into()));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(SioError::Unreachable(e.to_string())),
        }
    }
}

async fn open_session(ep: &Endpoint, opts: &SioOptions) -> Result<Session, SioError> {
    // Nagle off, as browsers have it: signaling is small messages that must go at once (with
    // it on, an offer or candidate waited 8–40 ms for the previous one's acknowledgement).
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(ep.ws_url.as_str(), None, true)
        .await
        .map_err(|e| SioError::Unreachable(e.to_string()))?;
    let open = match packet::decode_eio(&next_text(&mut ws).await?) {
        Ok(EioPacket::Open(o)) => o,
        Ok(other) => {
            return Err(SioError::Protocol(format!(
                "expected open packet, got {other:?}"
            )));
        }
        Err(e) => return Err(SioError::Protocol(e.to_string())),
    };
    ws.send(Message::text(packet::encode_connect(
        &ep.nsp,
        opts.auth.as_ref(),
    )))
    .await
    .map_err(|e| SioError::Unreachable(e.to_string()))?;
    loop {
        match packet::decode_eio(&next_text(&mut ws).await?) {
            Ok(EioPacket::Ping) => {
                let _ = ws.send(Message::text("3")).await;
            }
            Ok(EioPacket::Message(m)) => match packet::decode_sio(&m) {
                Ok(SioPacket::Connect { nsp, sid: Some(id) }) if nsp == ep.nsp => {
                    debug!(%id, "socket.io connected");
                    return Ok(Session {
                        ws,
                        id,
                        nsp: ep.nsp.clone(),
                        ping_window: Duration::from_millis(open.ping_interval + open.ping_timeout),
                    });
                }
                Ok(SioPacket::Connect { sid: None, .. }) => {
                    return Err(SioError::Protocol("CONNECT ack without sid".into()));
                }
                Ok(SioPacket::ConnectError { message, .. }) => {
                    return Err(SioError::Refused(message));
                }
                Ok(other) => debug!(?other, "ignored before CONNECT ack"),
                Err(e) => return Err(SioError::Protocol(e.to_string())),
            },
            Ok(EioPacket::Close) => {
                return Err(SioError::Unreachable("server closed the session".into()));
            }
            Ok(_) => {}
            Err(e) => return Err(SioError::Protocol(e.to_string())),
        }
    }
}

async fn run_session(
    mut s: Session,
    cmd_rx: &mut mpsc::UnboundedReceiver<Cmd>,
    ev_tx: &mpsc::UnboundedSender<SioEvent>,
    pending: &mut VecDeque<String>,
) -> SessionEnd {
    while let Some(frame) = pending.pop_front() {
        if let Err(e) = s.ws.send(Message::text(frame.clone())).await {
            pending.push_front(frame);
            return SessionEnd::Lost(e.to_string());
        }
    }
    let mut deadline = Instant::now() + s.ping_window;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return SessionEnd::Lost("ping timeout".into()),
            cmd = cmd_rx.recv() => match cmd {
                Some(Cmd::Emit(frame)) => {
                    if let Err(e) = s.ws.send(Message::text(frame.clone())).await {
                        // Not lost: re-sent after reconnecting.
                        pending.push_back(frame);
                        return SessionEnd::Lost(e.to_string());
                    }
                }
                Some(Cmd::Close(done)) => {
                    let _ = s.ws.send(Message::text(packet::encode_disconnect(&s.nsp))).await;
                    let _ = s.ws.close(None).await;
                    let _ = done.send(());
                    return SessionEnd::Closed;
                }
                None => {
                    let _ = s.ws.close(None).await;
                    return SessionEnd::Closed;
                }
            },
            msg = s.ws.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) | None => return SessionEnd::Lost("transport close".into()),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return SessionEnd::Lost(e.to_string()),
                };
                match packet::decode_eio(&text) {
                    Ok(EioPacket::Ping) => {
                        deadline = Instant::now() + s.ping_window;
                        if let Err(e) = s.ws.send(Message::text("3")).await {
                            return SessionEnd::Lost(e.to_string());
                        }
                    }
                    Ok(EioPacket::Message(m)) => match packet::decode_sio(&m) {
                        Ok(SioPacket::Event { nsp, name, args }) if nsp == s.nsp => {
                            let _ = ev_tx.send(SioEvent::Event { name, args });
                        }
                        Ok(SioPacket::Disconnect { nsp }) if nsp == s.nsp => {
                            return SessionEnd::Lost("io server disconnect".into());
                        }
                        Ok(_) => {}
                        Err(e) => warn!("dropping malformed socket.io packet: {e}"),
                    },
                    Ok(EioPacket::Close) => return SessionEnd::Lost("server closed the session".into()),
                    Ok(_) => {}
                    Err(e) => warn!("dropping malformed engine.io frame: {e}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = endpoint("http://127.0.0.1:3001").unwrap();
        assert_eq!(
            e.ws_url,
            "ws://127.0.0.1:3001/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(e.nsp, "/");
        let e = endpoint("https://example.org/calls").unwrap();
        assert_eq!(
            e.ws_url,
            "wss://example.org/socket.io/?EIO=4&transport=websocket"
        );
        assert_eq!(e.nsp, "/calls");
        assert!(endpoint("ftp://x").is_err());
        assert!(endpoint("not a url").is_err());
    }

    #[test]
    fn backoff_grows_to_the_cap() {
        let opts = SioOptions {
            randomization_factor: 0.0,
            ..SioOptions::default()
        };
        assert_eq!(backoff(&opts, 0), Duration::from_millis(1000));
        assert_eq!(backoff(&opts, 1), Duration::from_millis(2000));
        assert_eq!(backoff(&opts, 10), Duration::from_millis(5000));
        let jittery = SioOptions::default();
        for a in 0..5 {
            let d = backoff(&jittery, a);
            assert!(
                d >= Duration::from_millis(500) && d <= Duration::from_millis(5000),
                "{d:?}"
            );
        }
    }
}
