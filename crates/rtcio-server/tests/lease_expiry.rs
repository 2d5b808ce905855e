//! Redis mode, issue 15: a join that outlives its room lease (a slow Redis or adapter round trip
//! under load) must still answer its own `join-ok` before any member event of the next joiner.
//! A 50 000-socket run saw one socket get `#rtcio:init-offer` before its `join-ok`: the next joiner
//! took the expired lease, found the first one already in the room and told it. Reproduced here
//! with two embedded servers behind a real Redis, a short test-only lease and the first join
//! stalled (test hook) for longer than that lease while it holds it.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Received, connect, start_redis};
use rtcio_server::store::test_hooks;
use serde_json::json;

/// The lease the servers run with here.
const LEASE_MS: u64 = 300;
/// How long the first join stalls while holding the lease: well past it.
const STALL_MS: u64 = 1500;

async fn server(redis_url: &str) -> rtcio_server::RunningServer {
    rtcio_server::start(rtcio_server::ServerConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        redis_url: Some(redis_url.to_string()),
        ..Default::default()
    })
    .await
    .expect("server starts")
}

/// Events up to and including `join-ok`.
async fn events(c: &mut common::TestClient) -> Vec<Received> {
    let mut seen = Vec::new();
    loop {
        let r = c.next().await;
        let done = r.name == "join-ok";
        seen.push(r);
        if done {
            break;
        }
    }
    seen
}

fn names(ev: &[Received]) -> Vec<&str> {
    ev.iter().map(|r| r.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_outliving_its_lease_answers_join_ok_first() {
    let (_redis, redis_url) = start_redis();
    test_hooks::ROOM_LEASE_MS.store(LEASE_MS, Ordering::Relaxed);
    let s1 = server(&redis_url).await;
    let s2 = server(&redis_url).await;
    let mut a = connect(&s1.url(), "a").await;
    let mut b = connect(&s2.url(), "b").await;

    test_hooks::BACKFILL_STALL_MS.store(STALL_MS, Ordering::Relaxed);
    a.emit("join-room", json!({"roomId": "r", "name": "a"}))
        .await;
    // B asks while A holds the lease (stalled inside its join).
    tokio::time::timeout(Duration::from_secs(10), test_hooks::STALLED.notified())
        .await
        .expect("a's join reached the stall");
    b.emit("join-room", json!({"roomId": "r", "name": "b"}))
        .await;

    // Whoever ends up first gets nothing but its join-ok, then the other's user-connected and
    // init-offer; the second gets the first in its backfill, then join-ok. Nothing else, once.
    let ea = events(&mut a).await;
    let eb = events(&mut b).await;
    for (who, ev) in [("a", &ea), ("b", &eb)] {
        assert!(
            !names(ev).contains(&"#rtcio:init-offer"),
            "{who} got an init-offer before its own join-ok: {ev:?}"
        );
    }
    let (first, second, fa, fb) = if ea.len() == 1 {
        (&ea, &eb, &mut a, "a")
    } else {
        (&eb, &ea, &mut b, "b")
    };
    assert_eq!(
        names(first),
        ["join-ok"],
        "{fb}, the first member: {first:?} (other: {second:?})"
    );
    assert_eq!(
        names(second),
        ["user-connected", "join-ok"],
        "the second member: {second:?} (first {fb}: {first:?})"
    );
    let fan_out = [fa.next().await, fa.next().await];
    assert_eq!(
        fan_out.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["user-connected", "#rtcio:init-offer"],
        "{fb}'s fan-out"
    );
    // Nothing else already arrived (a duplicate fan-out would have come with the first).
    let extra_a = a.drain();
    let extra_b = b.drain();
    assert!(
        extra_a.is_empty() && extra_b.is_empty(),
        "extra: {extra_a:?} {extra_b:?}"
    );
    a.close().await;
    b.close().await;
    s1.shutdown().await.expect("shutdown");
    s2.shutdown().await.expect("shutdown");
}
