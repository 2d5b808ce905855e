//! The TURN side of rtcio-server: `GET /ice-servers` (credentials, token, 404 without TURN) and
//! the embedded relay (`--turn`) driven by webrtc-rs's TURN client: good credentials allocate,
//! wrong or expired ones are refused, the allocation cap holds, and loopback peers are relayed
//! only when allowed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rtcio_server::{RelayConfig, RunningServer, ServerConfig, TurnConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use turn::client::{Client, ClientConfig};
use util::Conn;

const WAIT: Duration = Duration::from_secs(20);
const SECRET: &str = "test-secret";

async fn server(turn: Option<TurnConfig>, token: Option<&str>) -> RunningServer {
    rtcio_server::start(ServerConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        auth_token: token.map(str::to_owned),
        turn,
        ..Default::default()
    })
    .await
    .expect("server starts")
}

fn relay(allow_loopback: bool, max_allocations: usize) -> TurnConfig {
    TurnConfig {
        secret: Some(SECRET.into()),
        relay: Some(RelayConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            ports: 43000..=43999,
            allow_loopback,
            max_allocations,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A raw HTTP/1.1 GET; returns (status, headers lower-cased, body).
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_lowercase(), body.to_string())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[tokio::test]
async fn ice_servers_is_404_without_turn() {
    let srv = server(None, None).await;
    let (status, _, _) = get(srv.local_addr(), "/ice-servers", &[]).await;
    assert_eq!(status, 404);
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn ice_servers_hands_out_working_credentials_behind_the_token() {
    let srv = server(Some(relay(true, 10)), Some("tok")).await;
    let addr = srv.local_addr();
    let turn = srv.turn_addr().expect("relay runs");
    let (status, _, _) = get(addr, "/ice-servers", &[]).await;
    assert_eq!(status, 401, "no token");
    let (status, _, _) = get(addr, "/ice-servers", &[("Authorization", "Bearer nope")]).await;
    assert_eq!(status, 401, "wrong token");
    let (status, head, body) = get(
        addr,
        "/ice-servers",
        &[
            ("Authorization", "Bearer tok"),
            ("Origin", "http://guest.example"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("access-control-allow-origin"), "{head}");
    let v: Value = serde_json::from_str(&body).expect("json");
    let entry = &v["iceServers"][0];
    let urls: Vec<&str> = entry["urls"]
        .as_array()
        .expect("urls")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        urls.contains(&format!("turn:127.0.0.1:{}?transport=udp", turn.port()).as_str()),
        "{urls:?}"
    );
    let username = entry["username"].as_str().expect("username");
    let expiry: u64 = username
        .split(':')
        .next()
        .unwrap_or("")
        .parse()
        .expect("expiry");
    assert!(expiry > now() + 3600, "ttl too short: {username}");
    // What was handed out allocates on the relay.
    let client = turn_client(turn, username, entry["credential"].as_str().expect("cred")).await;
    client
        .allocate()
        .await
        .expect("allocation with vended credentials");
    client.close().await.expect("close");
    srv.shutdown().await.expect("shutdown");
}

async fn turn_client(turn: SocketAddr, username: &str, password: &str) -> Client {
    let conn = UdpSocket::bind("127.0.0.1:0").await.expect("udp");
    let client = Client::new(ClientConfig {
        stun_serv_addr: turn.to_string(),
        turn_serv_addr: turn.to_string(),
        username: username.into(),
        password: password.into(),
        realm: "rtcio".into(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(conn),
        vnet: None,
    })
    .await
    .expect("client");
    client.listen().await.expect("listen");
    client
}

async fn allocate_with(turn: SocketAddr, username: &str, password: &str) -> Result<(), String> {
    let client = turn_client(turn, username, password).await;
    let r = tokio::time::timeout(WAIT, client.allocate())
        .await
        .map_err(|_| "no answer".to_string())
        .and_then(|r| r.map(|_| ()).map_err(|e| e.to_string()));
    let _ = client.close().await;
    r
}

#[tokio::test]
async fn wrong_or_expired_credentials_are_refused() {
    let srv = server(Some(relay(true, 10)), None).await;
    let turn = srv.turn_addr().expect("relay runs");
    let user = format!("{}:alice", now() + 600);
    let good = rtcio_server::ice::password(SECRET, &user);
    allocate_with(turn, &user, &good)
        .await
        .expect("good credentials allocate");
    assert!(
        allocate_with(turn, &user, "d3Jvbmc=").await.is_err(),
        "wrong password allocated"
    );
    let other = rtcio_server::ice::password("another-secret", &user);
    assert!(
        allocate_with(turn, &user, &other).await.is_err(),
        "another server's credentials allocated"
    );
    let expired = format!("{}:alice", now() - 5);
    let pw = rtcio_server::ice::password(SECRET, &expired);
    assert!(
        allocate_with(turn, &expired, &pw).await.is_err(),
        "expired credentials allocated"
    );
    assert!(
        allocate_with(turn, "alice", &rtcio_server::ice::password(SECRET, "alice"))
            .await
            .is_err(),
        "a username without expiry allocated"
    );
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn allocations_are_capped() {
    let srv = server(Some(relay(true, 1)), None).await;
    let turn = srv.turn_addr().expect("relay runs");
    let user = format!("{}:a", now() + 600);
    let pw = rtcio_server::ice::password(SECRET, &user);
    let first = turn_client(turn, &user, &pw).await;
    let _relayed = first.allocate().await.expect("first allocation");
    assert_eq!(srv.turn_stats().expect("stats").allocations, 1);
    assert!(
        allocate_with(turn, &user, &pw).await.is_err(),
        "a second allocation went past the cap of 1"
    );
    assert_eq!(srv.turn_stats().expect("stats").refused_allocations, 1);
    first.close().await.expect("close");
    srv.shutdown().await.expect("shutdown");
}

/// Sends through a fresh allocation to a UDP socket on loopback; returns what the peer got.
async fn relay_to_loopback_peer(srv: &RunningServer) -> Option<Vec<u8>> {
    let turn = srv.turn_addr().expect("relay runs");
    let user = format!("{}:a", now() + 600);
    let pw = rtcio_server::ice::password(SECRET, &user);
    let client = turn_client(turn, &user, &pw).await;
    let relayed = client.allocate().await.expect("allocation");
    let peer = UdpSocket::bind("127.0.0.1:0").await.expect("peer");
    let peer_addr = peer.local_addr().expect("addr");
    let mut buf = [0u8; 64];
    let mut got = None;
    // UDP: a few tries, each waiting briefly for the datagram (or for the block to be counted).
    for _ in 0..10 {
        relayed.send_to(b"hello", peer_addr).await.expect("send");
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(300), peer.recv_from(&mut buf)).await
        {
            got = Some(buf[..n].to_vec());
            break;
        }
        if srv.turn_stats().expect("stats").blocked_packets > 0 {
            break;
        }
    }
    client.close().await.expect("close");
    got
}

#[tokio::test]
async fn loopback_peers_are_relayed_only_when_allowed() {
    let strict = server(Some(relay(false, 10)), None).await;
    assert_eq!(relay_to_loopback_peer(&strict).await, None);
    assert!(strict.turn_stats().expect("stats").blocked_packets > 0);
    strict.shutdown().await.expect("shutdown");

    let open = server(Some(relay(true, 10)), None).await;
    assert_eq!(
        relay_to_loopback_peer(&open).await.as_deref(),
        Some(&b"hello"[..])
    );
    assert!(open.turn_stats().expect("stats").bytes_relayed >= 5);
    open.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn turn_urls_without_a_secret_are_refused_at_start() {
    let r = rtcio_server::start(ServerConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        turn: Some(TurnConfig {
            urls: vec!["turn:turn.example:3478".into()],
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;
    let err = r.err().expect("refused").to_string();
    assert!(err.contains("secret"), "{err}");
}

#[tokio::test]
async fn allocations_are_capped_per_credential() {
    let mut turn = relay(true, 10);
    if let Some(r) = turn.relay.as_mut() {
        r.max_allocations_per_user = 1;
    }
    let srv = server(Some(turn), None).await;
    let addr = srv.turn_addr().expect("relay runs");
    let alice = format!("{}:alice", now() + 600);
    let bob = format!("{}:bob", now() + 600);
    let pw = |u: &str| rtcio_server::ice::password(SECRET, u);
    let first = turn_client(addr, &alice, &pw(&alice)).await;
    let _held = first.allocate().await.expect("alice's first allocation");
    assert!(
        allocate_with(addr, &alice, &pw(&alice)).await.is_err(),
        "alice's second allocation went past her quota of 1"
    );
    allocate_with(addr, &bob, &pw(&bob))
        .await
        .expect("bob has his own quota");
    first.close().await.expect("close");
    srv.shutdown().await.expect("shutdown");
}
