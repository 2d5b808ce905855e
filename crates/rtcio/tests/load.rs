//! Calls form on a saturated CPU: `stress-ng` keeps both cores busy while pairs of peers join a
//! room one after another; every pair must connect (ctrl channel open, a message across).
//! People's laptops are busy (a build running): a handshake that never completes there leaves
//! a call without video for good.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::room::{connected_to, join, next, server};
use serde_json::json;
use tokio::process::{Child, Command};

/// Pairs formed one after another (the "20 joins under load").
const RUST_PAIRS: usize = 20;
/// Rust ↔ Chromium pairs after those (both join orders alternate).
const BROWSER_PAIRS: usize = 4;

/// Two CPU hogs for the whole test, bounded by `--timeout` should the test die.
fn stress() -> Child {
    Command::new("stress-ng")
        .args(["--cpu", "2", "--timeout", "120s", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("stress-ng must be installed (scripts/setup.sh)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_form_one_after_another_under_cpu_load() {
    let srv = server().await;
    let url = srv.url();
    let mut hog = stress();
    let mut times = Vec::new();
    for i in 0..RUST_PAIRS {
        let room = format!("load-{i}");
        let started = Instant::now();
        let mut a = join(&url, &room, "a").await;
        let mut b = join(&url, &room, "b").await;
        let mut pings = b.socket.subscribe("ping");
        connected_to(&mut a, &[b.socket.id()]).await;
        connected_to(&mut b, &[a.socket.id()]).await;
        a.socket.emit("ping", vec![json!(i)]).expect("emit");
        let ev = next(&mut pings, &format!("pair {i}: ping over ctrl")).await;
        assert_eq!(ev.arg(), &json!(i));
        times.push(started.elapsed());
        a.socket.close().await;
        b.socket.close().await;
    }
    let mut br = Browser::start().await;
    for i in 0..BROWSER_PAIRS {
        let room = format!("load-web-{i}");
        let page = br.open(&format!("web{i}")).await;
        let join_arg = json!({"url": url, "roomId": room, "name": "web", "chat": true});
        let started = Instant::now();
        let browser_first = i % 2 == 0;
        let (mut m, web) = if browser_first {
            let web = br.eval(page, "(o) => rtcio.join(o.url, o)", join_arg).await;
            (join(&url, &room, "rusty").await, web)
        } else {
            let m = join(&url, &room, "rusty").await;
            (
                m,
                br.eval(page, "(o) => rtcio.join(o.url, o)", join_arg).await,
            )
        };
        let web_id = web["id"].as_str().expect("browser socket id").to_string();
        connected_to(&mut m, &[web_id]).await;
        let rid = m.socket.id();
        br.wait_log(
            page,
            json!({"kind": "peer-connect", "peer": rid}),
            0,
            30_000,
        )
        .await;
        m.socket
            .emit("chat", vec![json!({"text": i})])
            .expect("emit");
        br.wait_log(
            page,
            json!({"kind": "event", "via": "ctrl", "name": "chat", "args": [{"text": i}]}),
            0,
            30_000,
        )
        .await;
        times.push(started.elapsed());
        m.socket.close().await;
        br.close_page(page).await;
    }
    let still_loaded = hog.try_wait().map(|s| s.is_none()).unwrap_or(false);
    let _ = hog.kill().await;
    br.quit().await;
    srv.shutdown().await.expect("shutdown");
    let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
    println!("join → connected + first message, ms: {ms:?}");
    assert!(
        still_loaded,
        "stress-ng ended before the last pair: the load did not cover the test"
    );
}
