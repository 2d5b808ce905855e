//! Redis mode, a crashed process (issue 15): the keys a server process writes carry a TTL that its
//! heartbeat refreshes, so when the process is SIGKILLed its sockets and room passwords vanish
//! from Redis within the TTL, while the survivor's stay, its rooms keep working and a new join
//! sees only live members.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{connect, join, start_redis, start_server_process};
use redis::AsyncCommands;
use serde_json::json;

/// The short key TTL the servers run with here (seconds).
const TTL_SECS: u64 = 2;
/// Guard for something that must happen within the TTL; a failure, never a synchronisation device.
const GUARD: Duration = Duration::from_secs(5 * TTL_SECS);
/// Interval between two looks at Redis while waiting.
const POLL: Duration = Duration::from_millis(50);

async fn sock_keys(c: &mut redis::aio::MultiplexedConnection) -> HashSet<String> {
    let keys: Vec<String> = c.keys("rtcio:sock:*").await.expect("KEYS");
    keys.into_iter().collect()
}

async fn exists(c: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    c.exists(key).await.expect("EXISTS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_process_keys_expire_and_survivor_rooms_stay() {
    let (_redis, redis_url) = start_redis();
    let ttl = TTL_SECS.to_string();
    let args = ["--redis", &redis_url, "--redis-key-ttl", &ttl];
    let (_survivor, url_a) = start_server_process(&args);
    let (mut doomed, url_b) = start_server_process(&args);
    let mut rc = redis::Client::open(redis_url.as_str())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");

    // a1 (survivor) and b1 (doomed) share a password room; b2 (doomed) is alone in another one
    // and has a cached media state.
    let mut a1 = connect(&url_a, "a1").await;
    let mut b1 = connect(&url_b, "b1").await;
    let mut b2 = connect(&url_b, "b2").await;
    assert!(
        join(&mut a1, "shared", "A1", Some("s3cret"))
            .await
            .is_empty()
    );
    let backfill = join(&mut b1, "shared", "B1", Some("s3cret")).await;
    assert_eq!(backfill.len(), 1, "b1's backfill: {backfill:?}");
    let a1_id = backfill[0].clone();
    let b1_id = a1.wait_for("user-connected").await["id"]
        .as_str()
        .expect("user-connected id")
        .to_string();
    a1.wait_for("#rtcio:init-offer").await;
    assert!(join(&mut b2, "bonly", "B2", Some("x")).await.is_empty());
    b2.emit(
        "media-state",
        json!({"roomId": "bonly", "mic": true, "cam": false}),
    )
    .await;
    // Handled in order: once check-room is answered, the media state is stored.
    b2.emit("check-room", json!({"roomId": "bonly", "password": "x"}))
        .await;
    b2.wait_for("room-check-ok").await;

    let all = sock_keys(&mut rc).await;
    assert_eq!(all.len(), 3, "one hash per socket: {all:?}");
    let a1_key = format!("rtcio:sock:{a1_id}");
    assert!(all.contains(&a1_key) && all.contains(&format!("rtcio:sock:{b1_id}")));
    let doomed_keys: Vec<String> = all
        .iter()
        .filter(|k| **k != a1_key)
        .cloned()
        .chain(["rtcio:pw:bonly".to_string()])
        .collect();
    for k in &doomed_keys {
        assert!(exists(&mut rc, k).await, "{k} written");
    }
    let b1_key = format!("rtcio:sock:{b1_id}");
    let b2_key = doomed_keys
        .iter()
        .find(|k| k.starts_with("rtcio:sock:") && **k != b1_key)
        .expect("b2's hash");
    let media: Option<String> = rc.hget(b2_key, "media").await.expect("HGET");
    assert!(media.is_some(), "b2's media state cached");

    // SIGKILL: no leave handling, nothing deleted by the process itself.
    doomed.0.kill().expect("kill the second server");
    let _ = doomed.0.wait();
    let killed_at = Instant::now();
    loop {
        let mut left = Vec::new();
        for k in &doomed_keys {
            if exists(&mut rc, k).await {
                left.push(k.clone());
            }
        }
        if left.is_empty() {
            break;
        }
        assert!(
            killed_at.elapsed() < GUARD,
            "keys of the killed process still there after {GUARD:?}: {left:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    eprintln!(
        "killed process's keys gone {:.1?} after the kill",
        killed_at.elapsed()
    );

    // The survivor's keys outlive their TTL: its heartbeat renews them (seen as a PTTL that
    // goes up again).
    let mut last: i64 = rc.pttl(&a1_key).await.expect("PTTL");
    let renewed_at = Instant::now();
    loop {
        let now: i64 = rc.pttl(&a1_key).await.expect("PTTL");
        assert!(
            now > 0,
            "survivor's socket key lost its TTL or vanished ({now})"
        );
        if now > last {
            break;
        }
        last = now;
        assert!(
            renewed_at.elapsed() < GUARD,
            "survivor's key not renewed within {GUARD:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    assert!(
        exists(&mut rc, "rtcio:pw:shared").await,
        "live room's password"
    );
    assert_eq!(sock_keys(&mut rc).await, HashSet::from([a1_key.clone()]));

    // The survivor's room works: a newcomer needs its password and sees only a1.
    let mut c1 = connect(&url_a, "c1").await;
    c1.emit("join-room", json!({"roomId": "shared", "name": "C1"}))
        .await;
    let err = c1.expect("join-error").await;
    assert_eq!(err["reason"], "password-required", "{err}");
    let backfill = join(&mut c1, "shared", "C1", Some("s3cret")).await;
    assert_eq!(backfill, vec![a1_id.clone()], "only the live member");
    let uc = a1.wait_for("user-connected").await;
    assert_ne!(uc["id"], json!(b1_id));
    a1.wait_for("#rtcio:init-offer").await;
    // The killed process's room is free again.
    let mut c2 = connect(&url_a, "c2").await;
    assert!(join(&mut c2, "bonly", "C2", None).await.is_empty());
    for c in [a1, b1, b2, c1, c2] {
        c.close().await;
    }
}
