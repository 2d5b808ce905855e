//! Video frames to the page over a loopback WebSocket instead of the Tauri IPC.
//!
//! Why: a `next_frames` reply (a custom-scheme response) reaches the web process in ~8 KiB
//! pieces, each an IPC message with a fresh shared-memory region (~98 per 2.2 MB batch, see
//! the README's rendering section), and every piece passes the app's main thread. A WebSocket
//! message goes from the network process to the page as one message, and the app side is a
//! tokio task: the main thread is out of the path.
//!
//! The protocol is the pull of [`crate::media::FrameGate`] unchanged: the page sends a text
//! message naming the batch it painted (its sequence number in decimal, or `-` when it holds
//! none) and gets the next batch as one binary message ([`crate::media::decode_batch`]'s
//! layout, the same bytes as `next_frames`' reply). So the page holds at most one batch and
//! Rust keeps only the newest frame per tile meanwhile (late frames replaced and counted in
//! [`crate::media::FlowStats::replaced`]): a slow page cannot make frames queue in the socket.
//!
//! The listener is bound to 127.0.0.1 on an ephemeral port, once per run; a connection must
//! carry the run's random token (`/?token=…`), else its handshake is refused with 403.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::media::{FrameGate, PULL_WAIT};

/// Environment variable: `ipc` keeps the frames on the Tauri IPC (`next_frames`), no socket.
pub const FRAME_TRANSPORT_ENV: &str = "RTCIO_FRAME_TRANSPORT";

/// How long a connection may take to complete its handshake.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(5);

/// What the page's messages may weigh (a sequence number): anything larger closes it.
const MAX_PAGE_MESSAGE: usize = 64;

/// The running listener: where the page connects and the token it must show.
pub struct FrameSocket {
    addr: SocketAddr,
    token: Arc<str>,
    accept: tokio::task::JoinHandle<()>,
}

/// What the page needs to connect (`frame_socket`'s reply).
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct FrameSocketInfo {
    /// The loopback port.
    pub port: u16,
    /// The per-run token, for the `token` query parameter.
    pub token: String,
}

impl FrameSocket {
    /// Binds 127.0.0.1 on an ephemeral port and serves `gate`'s batches to every connection
    /// that shows the token (a tokio task per connection; needs a tokio runtime).
    pub async fn start(gate: FrameGate) -> std::io::Result<FrameSocket> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let token: Arc<str> = new_token().into();
        let accept = tokio::spawn(accept_loop(listener, gate, token.clone()));
        tracing::info!(%addr, "video frames go to the page over a loopback WebSocket");
        Ok(FrameSocket {
            addr,
            token,
            accept,
        })
    }

    /// The bound address (always 127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token a connection must carry.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Port and token, as the page gets them.
    pub fn info(&self) -> FrameSocketInfo {
        FrameSocketInfo {
            port: self.addr.port(),
            token: self.token.to_string(),
        }
    }

    /// The URL the page connects to.
    pub fn url(&self) -> String {
        format!("ws://{}/?token={}", self.addr, self.token)
    }
}

impl Drop for FrameSocket {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Whether the environment asks for the IPC path instead of the socket.
pub fn disabled_by_env() -> bool {
    std::env::var(FRAME_TRANSPORT_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("ipc"))
}

/// 128 random bits as hex: the page got it through the IPC, other local processes did not.
fn new_token() -> String {
    let bits: u128 = rand::random();
    format!("{bits:032x}")
}

/// Whether a request's query carries `token=<expected>` (compared in constant time: the
/// listener is reachable by every local user).
fn token_ok(query: Option<&str>, expected: &str) -> bool {
    let Some(query) = query else {
        return false;
    };
    query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("token="))
        .any(|given| {
            given.len() == expected.len()
                && given
                    .bytes()
                    .zip(expected.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        })
}

async fn accept_loop(listener: TcpListener, gate: FrameGate, token: Arc<str>) {
    let mut failures = 0u32;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                failures = 0;
                // Bound to 127.0.0.1, so only loopback can connect; checked anyway.
                if !peer.ip().is_loopback() {
                    continue;
                }
                tokio::spawn(serve(stream, gate.clone(), token.clone()));
            }
            Err(e) => {
                // E.g. out of file descriptors: wait instead of spinning; log the first few.
                failures += 1;
                if failures <= 3 {
                    tracing::warn!("frame socket: accept failed: {e}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// One page connection: handshake with the token check, then pull → batch until it closes.
async fn serve(stream: TcpStream, gate: FrameGate, token: Arc<str>) {
    // Frames are sent whole and at once: no Nagle delay on the last segment.
    let _ = stream.set_nodelay(true);
    // The error type is tungstenite's handshake callback's (an HTTP response), not ours.
    #[allow(clippy::result_large_err)]
    let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if token_ok(req.uri().query(), &token) {
            Ok(resp)
        } else {
            let mut refused = ErrorResponse::new(Some("wrong or missing token".into()));
            *refused.status_mut() = StatusCode::FORBIDDEN;
            Err(refused)
        }
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_PAGE_MESSAGE))
        .max_frame_size(Some(MAX_PAGE_MESSAGE));
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(stream, check, Some(config));
    let mut ws = match tokio::time::timeout(HANDSHAKE_WAIT, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!("frame socket: a connection was refused: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("frame socket: a connection did not complete its handshake");
            return;
        }
    };
    let mut next = ws.next().await;
    loop {
        let ack = match next {
            Some(Ok(Message::Text(text))) => parse_ack(&text),
            // Pings are answered by tungstenite while reading; anything else is ignored.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Binary(_))) => {
                next = ws.next().await;
                continue;
            }
            Some(Ok(Message::Frame(_))) => {
                next = ws.next().await;
                continue;
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
        };
        // The page may close (or, against the protocol, pull again) while its pull waits.
        tokio::select! {
            batch = gate.pull(ack, PULL_WAIT) => {
                if ws.send(Message::Binary(batch.into())).await.is_err() {
                    return;
                }
                next = ws.next().await;
            }
            msg = ws.next() => next = msg,
        }
    }
}

/// The page's pull: the sequence number of the batch it painted, `-` (or anything else) for
/// none.
fn parse_ack(text: &str) -> Option<u32> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{EMPTY_BATCH_SEQ, decode_batch, frame_key};
    use rtcio_media::RgbaFrame;
    use tokio_tungstenite::tungstenite::Error as WsError;

    fn frame(key: &str, fill: u8) -> Vec<u8> {
        let f = RgbaFrame {
            width: 2,
            height: 2,
            data: vec![fill; 16],
            timestamp: Duration::ZERO,
        };
        crate::media::encode_frame(key, &f)
    }

    /// The fill byte of a `frame`.
    fn fill(f: &[u8]) -> u8 {
        f[f.len() - 1]
    }

    /// Until the gate has seen `n` pulls (the server task read the page's message).
    async fn pulls(gate: &FrameGate, n: u64) {
        let seen = async {
            while gate.stats().pulls < n {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), seen)
            .await
            .expect("the socket's pull reached the gate");
    }

    async fn connect(
        url: &str,
    ) -> Result<
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
        WsError,
    > {
        tokio_tungstenite::connect_async(url)
            .await
            .map(|(ws, _)| ws)
    }

    fn refused_with(result: Result<impl Sized, WsError>, status: StatusCode) -> bool {
        matches!(result, Err(WsError::Http(resp)) if resp.status() == status)
    }

    async fn next_batch(
        ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    ) -> Vec<u8> {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => return b.to_vec(),
                Some(Ok(_)) => continue,
                other => panic!("no batch: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn binds_loopback_and_refuses_a_wrong_or_missing_token() {
        let socket = FrameSocket::start(FrameGate::new()).await.unwrap();
        assert!(socket.addr().ip().is_loopback());
        assert_eq!(socket.token().len(), 32);
        let base = format!("ws://{}/", socket.addr());
        assert!(refused_with(connect(&base).await, StatusCode::FORBIDDEN));
        assert!(refused_with(
            connect(&format!("{base}?token=")).await,
            StatusCode::FORBIDDEN
        ));
        let mut wrong = socket.token().to_string();
        wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
        assert!(refused_with(
            connect(&format!("{base}?token={wrong}")).await,
            StatusCode::FORBIDDEN
        ));
        // A token of another length, and the right one as a prefix, are refused too.
        assert!(refused_with(
            connect(&format!("{base}?token={}0", socket.token())).await,
            StatusCode::FORBIDDEN
        ));
        assert!(connect(&socket.url()).await.is_ok());
        // Another run's listener has another token.
        let other = FrameSocket::start(FrameGate::new()).await.unwrap();
        assert_ne!(other.token(), socket.token());
    }

    #[tokio::test]
    async fn the_page_pulls_batches_in_the_ipc_layout_and_late_frames_are_replaced() {
        let gate = FrameGate::new();
        let sink = gate.sink();
        let socket = FrameSocket::start(gate.clone()).await.unwrap();
        let mut ws = connect(&socket.url()).await.unwrap();

        // A pull with nothing waiting is answered by the next frame.
        ws.send(Message::text("-")).await.unwrap();
        pulls(&gate, 1).await;
        sink(frame("a/v", 1));
        let batch = next_batch(&mut ws).await;
        let (seq, frames) = decode_batch(&batch).unwrap();
        assert_ne!(seq, EMPTY_BATCH_SEQ);
        assert_eq!(frames.len(), 1);
        assert_eq!(frame_key(frames[0]), Some("a/v"));

        // A slow page: while it holds that batch, ten frames of one tile and one of another
        // come; its next pull gets one batch with the newest of each, nothing queued.
        for i in 0..10 {
            sink(frame("a/v", 10 + i));
        }
        sink(frame("b/v", 50));
        ws.send(Message::text(seq.to_string())).await.unwrap();
        let batch = next_batch(&mut ws).await;
        let (seq2, frames) = decode_batch(&batch).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frame_key(frames[0]), Some("a/v"));
        assert_eq!(fill(frames[0]), 19);
        assert_eq!(frame_key(frames[1]), Some("b/v"));
        assert_eq!(fill(frames[1]), 50);
        let stats = gate.stats();
        assert_eq!(stats.replaced, 9);
        assert_eq!(stats.acked, 1);
        assert_eq!(stats.batch_acks, 1);

        // Closing while a pull waits leaves the gate usable for the next page (a reload).
        ws.send(Message::text(seq2.to_string())).await.unwrap();
        pulls(&gate, 3).await;
        ws.close(None).await.unwrap();
        let mut again = connect(&socket.url()).await.unwrap();
        again.send(Message::text("-")).await.unwrap();
        pulls(&gate, 4).await;
        sink(frame("a/v", 99));
        let batch = next_batch(&mut again).await;
        let (_, frames) = decode_batch(&batch).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(fill(frames[0]), 99);
    }

    #[test]
    fn token_check_reads_the_query() {
        assert!(token_ok(Some("token=abc"), "abc"));
        assert!(token_ok(Some("x=1&token=abc"), "abc"));
        assert!(!token_ok(Some("token=abd"), "abc"));
        assert!(!token_ok(Some("token=ab"), "abc"));
        assert!(!token_ok(Some("tokens=abc"), "abc"));
        assert!(!token_ok(None, "abc"));
        assert_eq!(parse_ack("17"), Some(17));
        assert_eq!(parse_ack("-"), None);
    }
}
