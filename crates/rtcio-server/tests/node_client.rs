//! The server scenario suite driven by Node's socket.io-client (`tests/node/scenarios.test.mjs`):
//! long-polling then upgrade, WebSocket only, and two processes sharing rooms through Redis.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{start_redis, start_server_process};
use rtcio_server::ServerConfig;

fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/node")
}

/// Runs the Node suite against `urls`; panics with its whole output when it fails.
fn run_suite(urls: &[String], transport: &str, extra_env: &[(&str, &str)]) {
    let dir = node_dir();
    assert!(
        dir.join("node_modules").is_dir(),
        "tests/node/node_modules is missing: run ./scripts/setup.sh (npm ci in tests/node)"
    );
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir)
        .args(["--test", "--test-concurrency=1", "scenarios.test.mjs"])
        .env("SERVER_URLS", urls.join(","))
        .env("SUITE_MODE", "rtcio")
        .env("TRANSPORT", transport);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .expect("node must be installed (scripts/setup.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Show the runner's summary lines in the cargo test log either way.
    for line in stdout.lines().filter(|l| {
        let l = l.trim_start_matches(['#', ' ', 'ℹ']);
        ["tests ", "pass ", "fail ", "skipped "]
            .iter()
            .any(|p| l.starts_with(p))
    }) {
        println!("node suite ({transport}): {}", line.trim());
    }
    assert!(
        out.status.success(),
        "node suite failed ({transport}, {urls:?}):\n{stdout}\n{stderr}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("pass ") && !l.contains("pass 0")),
        "node suite ran no test:\n{stdout}"
    );
}

async fn with_local_server(config: ServerConfig, f: impl FnOnce(String)) {
    let server = rtcio_server::start(ServerConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        ..config
    })
    .await
    .expect("server starts");
    let url = server.url();
    // The suite blocks; keep the server's runtime threads free while it runs.
    tokio::task::block_in_place(|| f(url));
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_suite_over_polling_then_websocket() {
    with_local_server(ServerConfig::default(), |url| {
        run_suite(&[url], "polling", &[])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_suite_over_websocket_only() {
    with_local_server(ServerConfig::default(), |url| {
        run_suite(&[url], "websocket", &[])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_suite_with_handshake_token() {
    let config = ServerConfig {
        auth_token: Some("node-secret".into()),
        ..ServerConfig::default()
    };
    with_local_server(config, |url| {
        run_suite(&[url], "polling", &[("AUTH_TOKEN", "node-secret")])
    })
    .await;
}

#[test]
fn node_suite_across_two_processes_through_redis() {
    let (_redis, redis_url) = start_redis();
    let (_s1, u1) = start_server_process(&["--redis", &redis_url]);
    let (_s2, u2) = start_server_process(&["--redis", &redis_url]);
    run_suite(&[u1, u2], "polling", &[]);
}
