//! The HTTP/1.1 accept loop (what `axum::serve` did, minus its protocol sniffing).
//!
//! `axum::serve` serves every connection through hyper-util's `auto` builder, which first reads
//! 24 bytes to tell an HTTP/2 preface from HTTP/1 — even with axum's `http2` feature off — and
//! then replays them through a rewind wrapper: one `recvfrom` more per connection, i.e. per
//! socket.io socket, since each WebSocket is its own connection. This server speaks HTTP/1.1
//! only (browsers and socket.io clients upgrade to WebSocket over it), so it serves hyper's
//! HTTP/1 connection directly.

use std::io;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tracing::{debug, warn};

/// Serves `router` on `listener` until `stop` fires (or its sender is dropped), then lets every
/// connection finish its request in flight (hyper's graceful shutdown) and returns once all have
/// closed. Upgraded connections (WebSockets) leave hyper when they upgrade and are not waited for,
/// as with `axum::serve(…).with_graceful_shutdown(…)`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    stop: oneshot::Receiver<()>,
) -> io::Result<()> {
    // Every connection task holds a receiver: `closed()` on the sender then waits for them all.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::pin!(stop);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    // Nagle off, as Node's HTTP server has it: signaling is small messages that
                    // must go at once (on, a relayed offer or candidate waited 8–40 ms for the
                    // previous one's acknowledgement: loopback Rust -> Chromium peer-connect
                    // 246–272 -> 142–193 ms). One syscall per connection.
                    if let Err(e) = tcp.set_nodelay(true) {
                        debug!("TCP_NODELAY: {e}");
                    }
                    tcp
                }
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let mut shutdown = shutdown_rx.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::pin!(conn);
            let mut draining = false;
            loop {
                tokio::select! {
                    res = conn.as_mut() => {
                        if let Err(e) = res {
                            debug!("connection ended with an error: {e}");
                        }
                        break;
                    }
                    changed = shutdown.changed(), if !draining => {
                        // Stopping (or the server is gone): finish the request in flight.
                        let _ = changed;
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            drop(shutdown);
        });
    }
    drop(listener);
    let _ = shutdown_tx.send(true);
    drop(shutdown_rx);
    shutdown_tx.closed().await;
    Ok(())
}

/// As `axum::serve`: errors of one connection (reset or aborted before it was accepted) are
/// skipped; others (e.g. out of file descriptors) are logged and retried after a second, which
/// also bounds the log to one line a second.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    warn!("accept error: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
