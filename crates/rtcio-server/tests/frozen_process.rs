//! Redis mode, a process that stops answering without dying (issue 15): a join's membership
//! read asks every process through the adapter, and one that is frozen (SIGSTOP: a stalled VM,
//! a machine swapping) answers nothing. The join must still complete — after the adapter's
//! request timeout, read again under a fresh lease, then go on with what it has — and nothing
//! may hang once the frozen process runs again.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{connect, join, start_redis, start_server_process};
use serde_json::json;

/// Three membership reads of up to the adapter's 5 s request timeout, plus margin: a failure
/// guard, never a synchronisation device.
const JOIN_GUARD: Duration = Duration::from_secs(40);

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_completes_while_another_process_is_frozen() {
    let (_redis, redis_url) = start_redis();
    let args = ["--redis", &redis_url];
    let (_a, url_a) = start_server_process(&args);
    let (frozen, url_b) = start_server_process(&args);

    let mut b1 = connect(&url_b, "b1").await;
    assert!(join(&mut b1, "r", "B1", None).await.is_empty());

    signal(frozen.0.id(), "-STOP");
    let mut a1 = connect(&url_a, "a1").await;
    let asked = Instant::now();
    a1.emit("join-room", json!({"roomId": "r", "name": "A1"}))
        .await;
    let ok = a1.wait_for_within("join-ok", JOIN_GUARD).await;
    assert_eq!(ok, json!({"roomId": "r"}));
    // The frozen process answered nothing, so the backfill could not name its member.
    let before: Vec<String> = a1.drain().into_iter().map(|r| r.name).collect();
    assert!(
        !before.iter().any(|n| n == "user-connected"),
        "no member announced: {before:?}"
    );
    eprintln!(
        "join-ok after {:.1?} (three membership reads)",
        asked.elapsed()
    );

    // The frozen process runs again: its member hears of the joiner and is told to offer, and
    // its offer reaches the joiner (the room works although the backfill missed it).
    signal(frozen.0.id(), "-CONT");
    let uc = b1.wait_for_within("user-connected", JOIN_GUARD).await;
    let a1_id = uc["id"].as_str().expect("user-connected id").to_string();
    assert_eq!(
        b1.wait_for("#rtcio:init-offer").await,
        json!({"source": a1_id})
    );
    let mut rc = redis::Client::open(redis_url.as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let keys: Vec<String> = redis::AsyncCommands::keys(&mut rc, "rtcio:sock:*")
        .await
        .expect("KEYS");
    let b1_id = keys
        .iter()
        .filter_map(|k| k.strip_prefix("rtcio:sock:"))
        .find(|id| *id != a1_id)
        .expect("b1's socket key")
        .to_string();
    let env = json!({"target": a1_id, "source": b1_id, "data": {"description": {"type": "offer", "sdp": "v=0\r\n"}}});
    b1.emit("#rtcio:message", env.clone()).await;
    assert_eq!(a1.wait_for("#rtcio:message").await, env);
    for c in [a1, b1] {
        c.close().await;
    }
}
