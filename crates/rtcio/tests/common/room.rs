//! A signaling server and rooms of Rust peers for integration tests.

use std::time::Duration;

use rtcio::{Event, Options, Socket};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

/// Failure guard for one awaited event (never a synchronisation device).
pub const WAIT: Duration = Duration::from_secs(20);

/// Our signaling server on 127.0.0.1 with relay rate limiting off.
pub async fn server() -> rtcio_server::RunningServer {
    // RUST_LOG=rtcio=debug shows the library's decisions when a test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    rtcio_server::start(rtcio_server::ServerConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        policy: rtcio_server::Policy {
            relay_per_second: 0.0,
            ..rtcio_server::Policy::default()
        },
        ..Default::default()
    })
    .await
    .expect("server")
}

/// The next event, or a panic naming what did not come.
pub async fn next(rx: &mut UnboundedReceiver<Event>, what: &str) -> Event {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("{what}: stream closed"),
        Err(_) => panic!("{what}: nothing within {WAIT:?}"),
    }
}

/// A joined socket and its peer-connect events.
pub struct Member {
    pub socket: Socket,
    pub connects: UnboundedReceiver<Event>,
}

/// Connects on loopback and joins `room` (waits for `join-ok`).
pub async fn join(url: &str, room: &str, name: &str) -> Member {
    join_with(url, room, name, Options::loopback()).await
}

/// [`join`] with options.
pub async fn join_with(url: &str, room: &str, name: &str, opts: Options) -> Member {
    let socket = Socket::connect(url, opts).await.expect("connect");
    let connects = socket.subscribe("peer-connect");
    let mut ok = socket.subscribe("join-ok");
    socket
        .server()
        .emit("join-room", vec![json!({"roomId": room, "name": name})])
        .expect("emit");
    next(&mut ok, "join-ok").await;
    Member { socket, connects }
}

/// Alice and Bob join `room` and are connected to each other.
pub async fn pair(url: &str, room: &str) -> (Member, Member) {
    let mut a = join(url, room, "alice").await;
    let mut b = join(url, room, "bob").await;
    connected_to(&mut a, &[b.socket.id()]).await;
    connected_to(&mut b, &[a.socket.id()]).await;
    (a, b)
}

/// Stops `srv` and starts a new server on the same address without connection-state recovery
/// (so every socket comes back with a new id); returns once each of `sockets` has reconnected.
pub async fn restart_server(
    srv: rtcio_server::RunningServer,
    sockets: &[&Socket],
) -> rtcio_server::RunningServer {
    let addr = srv.local_addr();
    let mut back: Vec<_> = sockets.iter().map(|s| s.subscribe("connect")).collect();
    srv.shutdown().await.expect("shutdown");
    let srv = rtcio_server::start(rtcio_server::ServerConfig {
        bind: addr,
        ..Default::default()
    })
    .await
    .expect("server again");
    for rx in &mut back {
        next(rx, "reconnected").await;
    }
    srv
}

/// Waits for peer-connect from each of `ids`.
pub async fn connected_to(m: &mut Member, ids: &[String]) {
    let mut want: Vec<String> = ids.to_vec();
    while !want.is_empty() {
        let ev = next(&mut m.connects, "peer-connect").await;
        let id = ev.arg()["id"].as_str().unwrap_or_default().to_string();
        want.retain(|w| *w != id);
    }
}
