//! The ws transport module is responsible for handling websocket connections
//! The only public function is [`new_req`] which is used to upgrade a http request to a websocket connection
//!
//! Other functions are used internally to handle the websocket connection (one task per session,
//! reading the websocket and writing the socket's channels) and to handle upgrade from polling to ws

use std::{
    future::{Future, poll_fn},
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, request::Parts};
use smallvec::smallvec;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        self, Message,
        handshake::derive_accept_key,
        protocol::{Role, WebSocketConfig},
    },
};
use tokio_util::future::FutureExt as _;

use engineioxide_core::{Packet, ProtocolVersion, Sid, Str, TransportType};

use crate::{
    DisconnectReason, Socket,
    body::ResponseBody,
    config::EngineIoConfig,
    engine::EngineIo,
    errors::Error,
    handler::EngineIoHandler,
    socket::{InternalRx, Queued},
    transport::{idle_read::IdleReadBuf, make_open_packet},
};

/// Create a response for websocket upgrade
fn ws_response<B>(ws_key: &HeaderValue) -> Response<ResponseBody<B>> {
    let derived = derive_accept_key(ws_key.as_bytes());
    let sec = derived.parse::<HeaderValue>().unwrap();
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, HeaderValue::from_static("websocket"))
        .header(
            http::header::CONNECTION,
            HeaderValue::from_static("Upgrade"),
        )
        .header(http::header::SEC_WEBSOCKET_ACCEPT, sec)
        .body(ResponseBody::empty_response())
        .unwrap() // we are only using constants
}

/// Upgrade a websocket request to create a websocket connection.
///
/// If a sid is provided in the query it means that is is upgraded from an existing HTTP polling request.
/// In this case the http polling request is closed and the SID is kept for the websocket
pub fn new_req<R: Send + 'static, B, H: EngineIoHandler>(
    engine: Arc<EngineIo<H>>,
    protocol: ProtocolVersion,
    sid: Option<Sid>,
    req: Request<R>,
) -> Result<Response<ResponseBody<B>>, Error> {
    let (mut parts, _body) = req.into_parts();

    // The head is kept with the socket (its `req_parts`) for the socket's lifetime. It keeps
    // neither the handshake key, used once here, nor hyper's upgrade handle, which is taken out
    // instead of cloning the whole head: the header map the key alone filled and the upgrade's
    // shared state were ~0.3 KiB of every socket.
    let ws_key = parts
        .headers
        .remove(http::header::SEC_WEBSOCKET_KEY)
        .ok_or(Error::InvalidWebSocketKey)?;
    if parts.headers.is_empty() {
        parts.headers = http::HeaderMap::new();
    }
    let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();

    // The upgrade and the handshakes run boxed: a task's allocation is as large as its future's
    // largest state, and an idle session should not carry the handshakes' state (see `Session`).
    let accept = Box::pin(async move {
        let Some(on_upgrade) = on_upgrade else {
            #[cfg(feature = "tracing")]
            tracing::debug!("ws upgrade error: the connection cannot be upgraded");
            return None;
        };
        let conn = match on_upgrade.await {
            // Reads go through a buffer that is freed while the socket is idle (`idle_read`).
            Ok(conn) => IdleReadBuf::new(hyper_util::rt::TokioIo::new(conn)),
            Err(_e) => {
                #[cfg(feature = "tracing")]
                tracing::debug!("ws upgrade error: {}", _e);
                return None;
            }
        };
        match init(engine.clone(), conn, protocol, sid, parts).await {
            Ok(session) => Some(session),
            Err(Error::MultipleWebsocketRequests) => None,
            Err(_e) => {
                #[cfg(feature = "tracing")]
                tracing::debug!(?sid, "ws closed with error: {_e}");
                if let Some(sid) = sid {
                    engine.close_session(sid, DisconnectReason::TransportError);
                }
                None
            }
        }
    });
    tokio::spawn(async move {
        if let Some(session) = accept.await {
            session.run().await;
        }
    });

    Ok(ws_response(&ws_key))
}

/// Handle a websocket connection upgrade
///
/// Sends an open packet if it is not an upgrade from a polling request
///
/// Read packets from the websocket and handle them, it will block until the connection is closed
pub fn on_init<H: EngineIoHandler, S>(
    engine: Arc<EngineIo<H>>,
    conn: S,
    protocol: ProtocolVersion,
    sid: Option<Sid>,
    req_data: Parts,
) -> impl Future<Output = Result<(), Error>> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Boxed for the reason given in `new_req`; the connection is wrapped as there (tungstenite
    // writes every frame through at once and leaves the batching to `IdleReadBuf`).
    let init = Box::pin(init(
        engine,
        IdleReadBuf::new(conn),
        protocol,
        sid,
        req_data,
    ));
    async move {
        init.await?.run().await;
        Ok(())
    }
}

/// Opens the session: the Engine.IO open packet for a new session, the probe exchange for an
/// upgrade from polling.
#[cfg_attr(
    feature = "tracing",
    tracing::instrument(level = "trace", name = "init_websocket", skip(engine, conn, req_data))
)]
async fn init<H: EngineIoHandler, S>(
    engine: Arc<EngineIo<H>>,
    conn: S,
    protocol: ProtocolVersion,
    sid: Option<Sid>,
    req_data: Parts,
) -> Result<Session<H, S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Frames are written through at once to the connection's `IdleReadBuf`, which batches them
    // until the flush in a buffer it gives back after it (tungstenite's own write buffer would
    // keep its largest batch for the socket's life).
    let ws_config = WebSocketConfig::default()
        .write_buffer_size(0)
        .read_buffer_size(engine.config.ws_read_buffer_size)
        .max_message_size(Some(engine.config.ws_max_message_size))
        .max_frame_size(Some(engine.config.ws_max_frame_size));

    let ws_init = move || WebSocketStream::from_raw_socket(conn, Role::Server, Some(ws_config));
    if let Some(sid) = sid {
        match engine.get_socket(sid) {
            None => Err(Error::UnknownSessionID(sid)),
            Some(socket) if socket.is_ws() => Err(Error::MultipleWebsocketRequests),
            Some(socket) => {
                let mut ws = ws_init().await;

                let upgrade_fut = upgrade_handshake::<H, S>(&socket, &mut ws);
                match tokio::time::timeout(engine.config.upgrade_timeout, upgrade_fut)
                    .with_cancellation_token(&socket.cancellation_token)
                    .await
                {
                    Some(Ok(res)) => res?,
                    Some(Err(_)) => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(?sid, "ws upgrade timed out, closing session");
                        engine.close_session(socket.id, DisconnectReason::TransportError);
                        return Err(Error::Upgrade);
                    }
                    None => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(?sid, "socket is being closed");
                        return Err(Error::Upgrade);
                    }
                }
                // An upgraded session keeps the heartbeat task it had while polling.
                Ok(Session {
                    engine,
                    socket,
                    ws,
                    own_heartbeat: false,
                    first_ping: None,
                })
            }
        }
    } else {
        let socket = engine.create_session(protocol, TransportType::Websocket, req_data, false);

        #[cfg(feature = "tracing")]
        tracing::debug!("new websocket connection");

        let mut ws = ws_init().await;
        // A new v4 session runs its heartbeat in its own task (`Session::run`): one task less per
        // socket. The v3 heartbeat (the client pings) keeps a task of its own.
        let own_heartbeat = socket.protocol == ProtocolVersion::V4;
        let first_ping = init_handshake(socket.id, &mut ws, &engine.config, own_heartbeat).await?;
        if !own_heartbeat {
            socket
                .clone()
                .spawn_heartbeat(engine.config.ping_interval, engine.config.ping_timeout);
        }
        Ok(Session {
            engine,
            socket,
            ws,
            own_heartbeat,
            first_ping,
        })
    }
}

/// An open WebSocket session.
///
/// One task both reads the WebSocket and writes what the socket's channels carry (and, for a
/// session opened on WebSocket, runs the heartbeat). Engine.IO used to split the stream between a
/// reader task and a writer task: two task allocations, two futures, and the split stream's shared
/// allocation per socket, about 5 KiB of an idle socket's memory.
struct Session<H: EngineIoHandler, S> {
    engine: Arc<EngineIo<H>>,
    socket: Arc<Socket<H::Data>>,
    ws: WebSocketStream<S>,
    /// Whether this session sends the pings itself (a v4 session opened on WebSocket); otherwise
    /// a heartbeat task does, and the session only signals the pongs to it.
    own_heartbeat: bool,
    /// When the first ping of the own heartbeat went out with the open packet (`init_handshake`);
    /// `None`: the session sends it as soon as it runs.
    first_ping: Option<tokio::time::Instant>,
}

/// What woke a [`Session`].
enum Event {
    Cancelled,
    Heartbeat,
    /// The pending flush ended (the WebSocket had nothing to read).
    Flushed,
    Incoming(Option<Result<Message, tungstenite::Error>>),
    Outgoing(Option<Queued>),
    Volatile(Queued),
}

/// What the session does after an incoming message.
enum Next {
    Continue,
    Pong,
    /// The session ends: `Ok` for a close from the client, `Err` for a protocol error.
    End(Result<(), Error>),
}

impl<H: EngineIoHandler, S> Session<H, S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Runs the session until the client leaves, the heartbeat fails or the socket is closed.
    async fn run(mut self) {
        // Fields are used in place: moving them out of `self` would hold them twice in the
        // future (an async fn's arguments keep their own slots).
        let engine = &self.engine;
        let socket = &self.socket;
        let ws = &mut self.ws;
        let own_heartbeat = self.own_heartbeat;
        let first_ping = self.first_ping;

        // A polling request that was in progress during the upgrade may still hold the lock.
        let Some(mut internal_rx) = socket
            .internal_rx
            .lock()
            .with_cancellation_token(&socket.cancellation_token)
            .await
        else {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = %socket.id, "session closed before the ws session started");
            return;
        };
        let InternalRx { buffered_rx, .. } = &mut *internal_rx;

        // `None`: the session was closed from our side (the socket was closed or the heartbeat
        // failed); `Some`: the client ended it.
        let res: Option<Result<(), Error>> = {
            let cancelled = socket.cancellation_token.cancelled();
            tokio::pin!(cancelled);
            // The v4 heartbeat: a ping now (as the interval of the heartbeat task ticked at once;
            // or with the open packet, then it awaits its pong) and every `ping_interval` after,
            // each answered within `ping_timeout`.
            let ping_interval = engine.config.ping_interval;
            let ping_timeout = engine.config.ping_timeout;
            let (mut next_ping, mut awaiting_pong, first_wake) = match first_ping {
                Some(sent) => (sent + ping_interval, true, sent + ping_timeout),
                None => {
                    let now = tokio::time::Instant::now();
                    (now, false, now)
                }
            };
            let heartbeat = tokio::time::sleep_until(first_wake);
            tokio::pin!(heartbeat);
            // Fed frames not flushed yet: the channels are not read meanwhile (backpressure, as
            // the writer task waited for its flush), the WebSocket still is.
            let mut flushing = false;

            loop {
                let can_send = !flushing;
                let event = tokio::select! {
                    _ = &mut cancelled => Event::Cancelled,
                    _ = &mut heartbeat, if own_heartbeat => Event::Heartbeat,
                    event = poll_fn(|cx| poll_ws(ws, &mut flushing, cx)) => event,
                    items = buffered_rx.recv(), if can_send => Event::Outgoing(items),
                    packets = socket.volatile.next(), if can_send => Event::Volatile(packets),
                };
                match event {
                    Event::Cancelled => break None,
                    Event::Flushed => {}
                    Event::Heartbeat if awaiting_pong => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(sid = ?socket.id, "heartbeat error: heartbeat timeout");
                        socket.close(DisconnectReason::HeartbeatTimeout);
                        break None;
                    }
                    Event::Heartbeat => {
                        #[cfg(feature = "tracing")]
                        tracing::trace!(sid = ?socket.id, "emitting ping");
                        if socket
                            .internal_tx
                            .try_send(Box::new(smallvec![Packet::Ping]))
                            .is_err()
                        {
                            #[cfg(feature = "tracing")]
                            tracing::debug!(sid = ?socket.id, "heartbeat error: channel full");
                            socket.close(DisconnectReason::HeartbeatTimeout);
                            break None;
                        }
                        awaiting_pong = true;
                        next_ping += ping_interval;
                        heartbeat
                            .as_mut()
                            .reset(tokio::time::Instant::now() + ping_timeout);
                    }
                    Event::Incoming(None) => break Some(Ok(())),
                    Event::Incoming(Some(Err(e))) => break Some(Err(e.into())),
                    Event::Incoming(Some(Ok(msg))) => {
                        match on_message(engine, socket, msg) {
                            Next::Continue => {}
                            Next::Pong if own_heartbeat => {
                                // A pong before the first ping is ignored, as before.
                                if awaiting_pong {
                                    awaiting_pong = false;
                                    heartbeat.as_mut().reset(next_ping);
                                }
                            }
                            Next::Pong => socket.heartbeat.notify_one(),
                            Next::End(res) => break Some(res),
                        }
                    }
                    Event::Outgoing(None) => break None,
                    Event::Outgoing(Some(packets)) => {
                        feed(socket, ws, packets).await;
                        while let Ok(packets) = buffered_rx.try_recv() {
                            feed(socket, ws, packets).await;
                        }
                        flushing = true;
                    }
                    Event::Volatile(packets) => {
                        #[cfg(feature = "tracing")]
                        tracing::debug!(sid = ?socket.id, "ws volatile flush: {} packets", packets.len());
                        feed(socket, ws, packets).await;
                        flushing = true;
                    }
                }
            }
        };

        match res {
            Some(Err(ref e)) => {
                let reason =
                    Option::<DisconnectReason>::from(e).unwrap_or(DisconnectReason::TransportError);

                #[cfg(feature = "tracing")]
                tracing::debug!("error when handling packet: {:?}", e);
                engine.close_session(socket.id, reason);
            }
            Some(Ok(())) => {
                #[cfg(feature = "tracing")]
                tracing::debug!(sid = %socket.id, "ws transport was closed");
                engine.close_session(socket.id, DisconnectReason::TransportClose);
            }
            None => {
                #[cfg(feature = "tracing")]
                tracing::debug!(sid = %socket.id, "socket is closing");
            }
        }

        // What was queued before the end (a close packet among it) still goes out, as the writer
        // task drained the channel before it stopped. The lock is held until then, so the
        // handler hears of the disconnect after it, as before.
        while let Ok(packets) = buffered_rx.try_recv() {
            feed(socket, ws, packets).await;
        }
        #[cfg(feature = "tracing")]
        tracing::trace!(sid = %socket.id, "ws closing flush");
        ws.flush().await.ok();
        SinkExt::close(ws).await.ok();
    }
}

/// Flushes what was fed (when `flushing`), then reads the next message.
fn poll_ws<S>(ws: &mut WebSocketStream<S>, flushing: &mut bool, cx: &mut Context<'_>) -> Poll<Event>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut flushed = false;
    if *flushing {
        if let Poll::Ready(_res) = ws.poll_flush_unpin(cx) {
            #[cfg(feature = "tracing")]
            if let Err(e) = _res {
                tracing::debug!("ws flush error: {e}");
            }
            *flushing = false;
            flushed = true;
        }
    }
    match ws.poll_next_unpin(cx) {
        Poll::Ready(msg) => Poll::Ready(Event::Incoming(msg)),
        Poll::Pending if flushed => Poll::Ready(Event::Flushed),
        Poll::Pending => Poll::Pending,
    }
}

/// Hands one incoming WebSocket message to the handler.
fn on_message<H: EngineIoHandler>(
    engine: &Arc<EngineIo<H>>,
    socket: &Arc<Socket<H::Data>>,
    msg: Message,
) -> Next {
    match msg {
        Message::Text(msg) => match Packet::parse(socket.protocol, ws_bytes_to_str(msg)) {
            Ok(Packet::Close) => {
                #[cfg(feature = "tracing")]
                tracing::debug!("[sid={}] closing session", socket.id);
                engine.close_session(socket.id, DisconnectReason::TransportClose);
                Next::End(Ok(()))
            }
            Ok(Packet::Pong | Packet::Ping) => Next::Pong,
            Ok(Packet::Message(msg)) => {
                engine.handler.on_message(msg, socket.clone());
                Next::Continue
            }
            Ok(p) => Next::End(Err(Error::BadPacket(p))),
            Err(e) => Next::End(Err(e.into())),
        },
        Message::Binary(mut data) => {
            if socket.protocol == ProtocolVersion::V3 && !data.is_empty() {
                // The first byte is the message type, which we don't need.
                data = data.split_off(1);
            }
            engine.handler.on_binary(data, socket.clone());
            Next::Continue
        }
        Message::Close(_) => {
            #[cfg(feature = "tracing")]
            tracing::debug!("websocket closed, closing session");
            engine.close_session(socket.id, DisconnectReason::TransportClose);
            Next::End(Ok(()))
        }
        _ => {
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = ?socket.id, "unexpected ws message");
            Next::Continue
        }
    }
}

/// Writes packets into the WebSocket's buffer (sent by the next flush). Only a reference and
/// the sink's readiness wait are held across its awaits, not the packets: the session's future,
/// so every idle socket's task, is as large as its largest await (a version holding the packet
/// buffer made it ~0.7 KiB larger).
async fn feed<D, S>(socket: &Socket<D>, ws: &mut WebSocketStream<S>, mut packets: Queued)
where
    D: Default + Send + Sync + 'static,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut packets = packets.drain(..);
    loop {
        // Pending only while an earlier write is blocked (a full socket buffer).
        let ready = poll_fn(|cx| ws.poll_ready_unpin(cx)).await;
        let Some(packet) = packets.next() else {
            break;
        };
        let res = ready.and_then(|()| match to_message(socket.protocol, packet) {
            Some(msg) => ws.start_send_unpin(msg),
            None => Ok(()),
        });
        if let Err(_e) = res {
            #[cfg(feature = "tracing")]
            tracing::debug!("[sid={}] error sending packet: {}", socket.id, _e);
        }
    }
}

/// The WebSocket message of a packet; `None` for a packet not sent on WebSocket.
fn to_message(protocol: ProtocolVersion, packet: Packet) -> Option<Message> {
    match packet {
        Packet::Binary(bin) | Packet::BinaryV3(bin) => {
            if protocol == ProtocolVersion::V3 {
                // v3 protocol requires packet type as the first byte.
                // This requires a new buffer. This is OK as it is only for the V3 protocol.
                let mut buff = Vec::with_capacity(bin.len() + 1);
                buff.push(0x04);
                buff.extend(bin);
                Some(Message::Binary(buff.into()))
            } else {
                Some(Message::Binary(bin))
            }
        }
        // A Noop Packet maybe sent by the server to upgrade from a polling connection
        // In the case that the packet was not poll in time it will remain in the buffer and therefore
        // it should be discarded here
        Packet::Noop => None,
        packet => Some(Message::Text(String::from(packet).into())),
    }
}

/// Send a Engine.IO [`OpenPacket`] to initiate a websocket connection; with `first_ping` the
/// heartbeat's first ping follows it in the same write (one syscall per socket instead of two:
/// the session would send it as soon as it runs anyway). Returns when that ping was sent.
async fn init_handshake<S>(
    sid: Sid,
    ws: &mut WebSocketStream<S>,
    config: &EngineIoConfig,
    first_ping: bool,
) -> Result<Option<tokio::time::Instant>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let packet = Packet::Open(make_open_packet(TransportType::Websocket, sid, config));
    let packet: String = packet.into();
    ws.feed(Message::Text(packet.into())).await?;
    let sent = if first_ping {
        ws.feed(Message::Text(String::from(Packet::Ping).into()))
            .await?;
        Some(tokio::time::Instant::now())
    } else {
        None
    };
    ws.flush().await?;
    Ok(sent)
}

/// Upgrade a session from a polling request to a websocket request.
///
/// Before upgrading the session the server should send a NOOP packet to any pending polling request.
///
/// ## Handshake :
/// ```text
/// CLIENT                                                 SERVER
///│                                                      │
///│   GET /engine.io/?EIO=4&transport=websocket&sid=...  │
///│ ───────────────────────────────────────────────────► │
///│  ◄─────────────────────────────────────────────────┘ │
///│            HTTP 101 (WebSocket handshake)            │
///│                                                      │
///│            -----  WebSocket frames -----             │
///│  ─────────────────────────────────────────────────►  │
///│                         2probe                       │ (ping packet)
///│  ◄─────────────────────────────────────────────────  │
///│                         3probe                       │ (pong packet)
///│  ─────────────────────────────────────────────────►  │
///│                         5                            │ (upgrade packet)
///│                                                      │
///│            -----  WebSocket frames -----             │
/// ```
#[cfg_attr(
    feature = "tracing",
    tracing::instrument(level = "trace", skip(socket, ws))
)]
async fn upgrade_handshake<H: EngineIoHandler, S>(
    socket: &Arc<Socket<H::Data>>,
    ws: &mut WebSocketStream<S>,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    #[cfg(feature = "tracing")]
    tracing::debug!("starting websocket connection upgrade");

    // The socket is upgrading, from now on all polling
    // request will return a `Packet::Noop`
    socket.start_upgrade();

    // We send a last Noop request to close a potential waiting polling request.
    socket
        .internal_tx
        .send(Box::new(smallvec![Packet::Noop]))
        .await
        .map_err(|_| Error::Upgrade)?;

    // wait for any current polling connection to finish by waiting for the socket to be unlocked
    // All other polling connection will be immediately closed with a NOOP packet.
    let _lock = socket.internal_rx.lock().await;

    // Fetch the next packet from the ws stream, it should be a PingUpgrade packet
    let msg = match ws.next().await {
        Some(Ok(Message::Text(d))) => d,
        _ => Err(Error::Upgrade)?,
    };
    match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
        Packet::PingUpgrade => {
            #[cfg(feature = "tracing")]
            tracing::debug!("received first ping upgrade");
            // Respond with a PongUpgrade packet
            ws.send(Message::Text(String::from(Packet::PongUpgrade).into()))
                .await?;
        }
        p => Err(Error::BadPacket(p))?,
    };

    // Fetch the next packet from the ws stream, it should be an Upgrade packet
    let msg = match ws.next().await {
        Some(Ok(Message::Text(d))) => d,
        Some(Ok(Message::Close(_))) => {
            #[cfg(feature = "tracing")]
            tracing::debug!("ws stream closed before upgrade");
            Err(Error::Upgrade)?
        }
        _ => {
            #[cfg(feature = "tracing")]
            tracing::debug!("unexpected ws message before upgrade");
            Err(Error::Upgrade)?
        }
    };
    match Packet::parse(socket.protocol, ws_bytes_to_str(msg))? {
        Packet::Upgrade => {
            #[cfg(feature = "tracing")]
            tracing::debug!("ws upgraded successfully")
        }
        p => Err(Error::BadPacket(p))?,
    };

    socket.upgrade_to_websocket();
    Ok(())
}

fn ws_bytes_to_str(bytes: tungstenite::Utf8Bytes) -> Str {
    // SAFETY: the bytes are guaranteed to be valid UTF-8 by the tungstenite parser
    unsafe { Str::from_bytes_unchecked(bytes.into()) }
}

#[cfg(test)]
mod tests {
    use std::{sync::Mutex, time::Duration};

    use bytes::Bytes;
    use futures_util::{FutureExt, StreamExt};
    use http::Request;
    use tokio::io::DuplexStream;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[derive(Debug)]
    struct StubHandler;
    impl EngineIoHandler for StubHandler {
        type Data = ();
        fn on_connect(self: Arc<Self>, _: Arc<Socket<()>>) {}
        fn on_disconnect(&self, _: Arc<Socket<()>>, _: DisconnectReason) {}
        fn on_message(self: &Arc<Self>, _: Str, _: Arc<Socket<()>>) {}
        fn on_binary(self: &Arc<Self>, _: Bytes, _: Arc<Socket<()>>) {}
    }

    type Closed = Arc<Mutex<Vec<DisconnectReason>>>;

    /// A session on one end of an in-memory pipe, the client's WebSocket on the other, and the
    /// reasons the socket was closed with.
    async fn session(
        config: EngineIoConfig,
        own_heartbeat: bool,
    ) -> (
        Session<StubHandler, DuplexStream>,
        WebSocketStream<DuplexStream>,
        Closed,
    ) {
        let closed = Closed::default();
        let reasons = closed.clone();
        let socket = Arc::new(Socket::new(
            ProtocolVersion::V4,
            TransportType::Websocket,
            &config,
            Request::<()>::default().into_parts().0,
            Box::new(move |_, reason| reasons.lock().unwrap().push(reason)),
            false,
        ));
        let engine = Arc::new(EngineIo::new(Arc::new(StubHandler), config));
        let (server, client) = tokio::io::duplex(1024);
        let session = Session {
            engine,
            socket,
            ws: WebSocketStream::from_raw_socket(server, Role::Server, None).await,
            own_heartbeat,
            first_ping: None,
        };
        let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        (session, client, closed)
    }

    async fn next_text(client: &mut WebSocketStream<DuplexStream>) -> Option<String> {
        match tokio::time::timeout(TIMEOUT, client.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => Some(text.to_string()),
            _ => None,
        }
    }

    /// Lets the spawned session run until it waits.
    async fn settle() {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
    }

    /// A polling request can still hold the lock at the end of an upgrade.
    #[tokio::test]
    async fn session_waits_for_the_lock_of_a_polling_request() {
        let (session, mut client, _) = session(EngineIoConfig::default(), false).await;
        let socket = session.socket.clone();

        let polling = socket.internal_rx.lock().await;
        socket.emit(Str::from("hello")).unwrap();
        let task = tokio::spawn(session.run());
        settle().await;
        assert!(!task.is_finished(), "the session should wait for the lock");
        assert!(
            client.next().now_or_never().is_none(),
            "nothing may be written while a polling request holds the lock"
        );

        drop(polling);
        assert_eq!(next_text(&mut client).await.as_deref(), Some("4hello"));
    }

    #[tokio::test]
    async fn session_waiting_for_the_lock_stops_with_the_session() {
        let (session, _client, _) = session(EngineIoConfig::default(), false).await;
        let socket = session.socket.clone();

        let _polling = socket.internal_rx.lock().await;
        let task = tokio::spawn(session.run());
        settle().await;

        socket.cancellation_token.cancel();
        tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("the session should stop")
            .unwrap();
    }

    /// Reading and writing share one task: messages flow both ways, and what was queued before a
    /// close still goes out, the close packet last.
    #[tokio::test]
    async fn session_reads_and_writes_and_drains_on_close() {
        let (session, mut client, closed) = session(EngineIoConfig::default(), false).await;
        let socket = session.socket.clone();
        let task = tokio::spawn(session.run());

        socket.emit(Str::from("a")).unwrap();
        assert_eq!(next_text(&mut client).await.as_deref(), Some("4a"));
        // A pong from the client is passed to the heartbeat task.
        client.send(Message::text("3")).await.unwrap();
        tokio::time::timeout(TIMEOUT, socket.heartbeat.notified())
            .await
            .expect("the pong should reach the heartbeat task");

        socket.emit(Str::from("b")).unwrap();
        socket.emit(Str::from("c")).unwrap();
        socket.close(DisconnectReason::ClosingServer);
        socket.cancellation_token.cancel();
        assert_eq!(next_text(&mut client).await.as_deref(), Some("4b"));
        assert_eq!(next_text(&mut client).await.as_deref(), Some("4c"));
        assert_eq!(next_text(&mut client).await.as_deref(), Some("1"));
        tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("the session should end")
            .unwrap();
        assert_eq!(*closed.lock().unwrap(), [DisconnectReason::ClosingServer]);
    }

    /// Volatile packets reach the client; of two sent before the session reads them, only the
    /// newer one does.
    #[tokio::test]
    async fn session_sends_the_latest_volatile_packet() {
        let (session, mut client, _) = session(EngineIoConfig::default(), false).await;
        let socket = session.socket.clone();
        assert!(socket.emit_volatile("old"));
        assert!(socket.emit_volatile("new"));
        let _task = tokio::spawn(session.run());
        assert_eq!(next_text(&mut client).await.as_deref(), Some("4new"));
        assert!(socket.emit_volatile("next"));
        assert_eq!(next_text(&mut client).await.as_deref(), Some("4next"));
    }

    /// Counts the writes that reach the connection.
    struct CountWrites {
        io: DuplexStream,
        writes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AsyncRead for CountWrites {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for CountWrites {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            let this = self.get_mut();
            let res = std::pin::Pin::new(&mut this.io).poll_write(cx, buf);
            if res.is_ready() {
                this.writes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            res
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.get_mut().io).poll_flush(cx)
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
        }
    }

    /// A v4 session opened on WebSocket sends its first ping with the open packet, in one write.
    #[tokio::test]
    async fn open_packet_and_first_ping_go_in_one_write() {
        let config = EngineIoConfig::default();
        let writes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (server, client) = tokio::io::duplex(4096);
        let server = CountWrites {
            io: server,
            writes: writes.clone(),
        };
        let mut ws = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let sid = Sid::new();
        let sent = init_handshake(sid, &mut ws, &config, true).await.unwrap();
        assert!(sent.is_some());
        assert_eq!(writes.load(std::sync::atomic::Ordering::Relaxed), 1);
        let open = next_text(&mut client).await.unwrap();
        assert!(
            open.starts_with("0{") && open.contains(&sid.to_string()),
            "{open}"
        );
        assert_eq!(next_text(&mut client).await.as_deref(), Some("2"));

        // Without the ping (v3, or an upgrade), the open packet alone.
        let sent = init_handshake(sid, &mut ws, &config, false).await.unwrap();
        assert!(sent.is_none());
        assert_eq!(writes.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert!(next_text(&mut client).await.unwrap().starts_with("0{"));
    }

    /// A session whose first ping went out with the open packet awaits its pong: answered, the
    /// next ping comes an interval later; a silent client is closed after the timeout without a
    /// second ping first.
    #[tokio::test]
    async fn first_ping_sent_with_the_open_packet_awaits_its_pong() {
        let mut config = EngineIoConfig::default();
        config.ping_interval = Duration::from_millis(20);
        config.ping_timeout = Duration::from_millis(200);
        let (mut answering, mut client, closed) = session(config, true).await;
        answering.first_ping = Some(tokio::time::Instant::now());
        let task = tokio::spawn(answering.run());

        // The pong of the ping sent with the open packet keeps the session; the next ping follows.
        client.send(Message::text("3")).await.unwrap();
        assert_eq!(next_text(&mut client).await.as_deref(), Some("2"));
        client.send(Message::text("3")).await.unwrap();
        assert_eq!(next_text(&mut client).await.as_deref(), Some("2"));
        assert!(closed.lock().unwrap().is_empty());
        // Silence: closed after the timeout.
        assert_eq!(next_text(&mut client).await.as_deref(), Some("1"));
        tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("the session should end")
            .unwrap();
        assert_eq!(
            *closed.lock().unwrap(),
            [DisconnectReason::HeartbeatTimeout]
        );

        // Never answered at all: closed without a ping of its own.
        let mut config = EngineIoConfig::default();
        config.ping_interval = Duration::from_millis(20);
        config.ping_timeout = Duration::from_millis(100);
        let (mut silent, mut client, closed) = session(config, true).await;
        silent.first_ping = Some(tokio::time::Instant::now());
        let task = tokio::spawn(silent.run());
        assert_eq!(next_text(&mut client).await.as_deref(), Some("1"));
        tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("the session should end")
            .unwrap();
        assert_eq!(
            *closed.lock().unwrap(),
            [DisconnectReason::HeartbeatTimeout]
        );
    }

    /// The session's own heartbeat: a client that answers every ping stays; once it stops
    /// answering, the socket is closed for a heartbeat timeout after the unanswered ping.
    #[tokio::test]
    async fn own_heartbeat_keeps_an_answering_client_and_closes_a_silent_one() {
        let mut config = EngineIoConfig::default();
        config.ping_interval = Duration::from_millis(20);
        config.ping_timeout = Duration::from_millis(200);
        let (session, mut client, closed) = session(config, true).await;
        let task = tokio::spawn(session.run());

        // Ten pings answered: ten intervals, each far shorter than the timeout would allow
        // without answers, so the session must have seen the pongs.
        for _ in 0..10 {
            assert_eq!(next_text(&mut client).await.as_deref(), Some("2"));
            client.send(Message::text("3")).await.unwrap();
        }
        assert!(closed.lock().unwrap().is_empty());

        // Silence: the next ping goes unanswered and the close packet follows it.
        assert_eq!(next_text(&mut client).await.as_deref(), Some("2"));
        assert_eq!(next_text(&mut client).await.as_deref(), Some("1"));
        tokio::time::timeout(TIMEOUT, task)
            .await
            .expect("the session should end")
            .unwrap();
        assert_eq!(
            *closed.lock().unwrap(),
            [DisconnectReason::HeartbeatTimeout]
        );
    }
}
