//! Calls that go through a TURN relay only (`--relay-only`): through the relay embedded in
//! `rtcio host --turn`, and through coturn (Debian's reference server, started here) with the
//! credentials rtcio-server hands out at `/ice-servers`. Video flows both ways and both ends
//! report a relayed candidate pair.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Rtcio, WAIT, join_args, room};
use serde_json::Value;

/// Waits for this process's `path` line and checks both candidates are relayed.
async fn relayed_path(p: &mut Rtcio) {
    let path = p.seen_or_wait("path", |v| v["type"] == "path").await;
    assert_eq!(path["local"]["type"], "relay", "{}: {path}", p.label);
    assert_eq!(path["remote"]["type"], "relay", "{}: {path}", p.label);
}

/// Waits until this process has decoded video from its peer.
async fn decodes_video(p: &mut Rtcio) {
    p.seen_or_wait("decoded video", |v| {
        v["type"] == "video-stats" && v["frames_decoded"].as_u64().unwrap_or(0) >= 10
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_call_through_the_embedded_turn() {
    let r = room("turn-embedded");
    let mut host = Rtcio::spawn(
        "host",
        &[
            "host",
            "--json",
            "--loopback",
            "--relay-only",
            "--addr",
            "127.0.0.1",
            "--port",
            "0",
            "--turn",
            "--turn-port",
            "0",
            "--room",
            &r,
            "--name",
            "alice",
            "--video",
            "testsrc",
        ],
    );
    let hosting = host.wait_type("hosting").await;
    assert!(hosting["turn"].is_string(), "no relay announced: {hosting}");
    let url = hosting["urls"][0].as_str().expect("url").to_string();
    let mut args = join_args(&url, &r, "bob");
    args.extend(["--relay-only", "--video", "testsrc"]);
    let mut guest = Rtcio::spawn("guest", &args);
    for p in [&mut host, &mut guest] {
        relayed_path(p).await;
        decodes_video(p).await;
    }
}

/// coturn on loopback with the shared-secret scheme; killed on drop.
struct Coturn(std::process::Child);

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

fn start_coturn(secret: &str, port: u16, dir: &std::path::Path) -> Coturn {
    let child = std::process::Command::new("turnserver")
        .args([
            "-n", // no configuration file
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            &format!("--listening-port={port}"),
            "--min-port=42000",
            "--max-port=42999",
            "--use-auth-secret",
            &format!("--static-auth-secret={secret}"),
            "--realm=rtcio.test",
            "--allow-loopback-peers",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--no-tcp-relay",
            &format!("--pidfile={}", dir.join("turnserver.pid").display()),
            &format!("--log-file={}", dir.join("turnserver.log").display()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnserver (Debian package coturn; scripts/setup.sh installs it) starts");
    Coturn(child)
}

/// Waits until coturn answers a STUN binding request (it takes a moment to open its port).
async fn wait_stun(port: u16) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp");
    // Binding request, magic cookie, fixed transaction id.
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(&[7u8; 12]);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut buf = [0u8; 512];
    loop {
        sock.send_to(&req, ("127.0.0.1", port)).await.expect("send");
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf)).await
            && n >= 20
            && buf[0] == 0x01
            && buf[1] == 0x01
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "coturn did not answer STUN on {port}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_call_through_coturn_with_server_vended_credentials() {
    let dir = std::env::temp_dir().join(format!("rtcio-coturn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let secret = "coturn-test-secret";
    let port = free_udp_port();
    let _coturn = start_coturn(secret, port, &dir);
    wait_stun(port).await;

    let server = rtcio_server::start(rtcio_server::ServerConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        turn: Some(rtcio_server::TurnConfig {
            secret: Some(secret.into()),
            urls: vec![format!("turn:127.0.0.1:{port}?transport=udp")],
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("server");
    let url = server.url();
    let r = room("turn-coturn");
    let mut a = join_args(&url, &r, "alice");
    a.extend(["--relay-only", "--video", "testsrc"]);
    let mut b = join_args(&url, &r, "bob");
    b.extend(["--relay-only", "--video", "testsrc"]);
    let mut alice = Rtcio::spawn("alice", &a);
    let mut bob = Rtcio::spawn("bob", &b);
    for p in [&mut alice, &mut bob] {
        relayed_path(p).await;
        decodes_video(p).await;
    }
    // The relayed ports are coturn's, not a direct path in disguise.
    let path: &Value = alice
        .seen
        .iter()
        .find(|v| v["type"] == "path")
        .expect("path line");
    let relay_port = path["local"]["port"].as_u64().unwrap_or(0);
    assert!(
        (42000..=42999).contains(&relay_port),
        "alice's relayed port {relay_port} is not in coturn's range: {path}"
    );
    drop(alice);
    drop(bob);
    server.shutdown().await.expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
