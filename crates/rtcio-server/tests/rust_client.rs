//! The server scenario suite driven by rust_socketio clients: one in-process server, and two
//! server processes sharing rooms through a real Redis.

mod common;

use common::*;
use rtcio_server::{Policy, ServerConfig};
use serde_json::{Value, json};

async fn local_server(policy: Policy) -> rtcio_server::RunningServer {
    rtcio_server::start(ServerConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        policy,
        ..ServerConfig::default()
    })
    .await
    .expect("server starts")
}

/// Picks the server for the i-th client (round-robin over processes).
fn url(urls: &[String], i: usize) -> &str {
    &urls[i % urls.len()]
}

fn room(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

/// Join order, backfill, cached media-state, join-ok, init-offer, relay, peer-left.
async fn join_relay_leave(urls: &[String]) {
    let r = room("flow");
    let mut a = connect(url(urls, 0), "A").await;
    assert!(join(&mut a, &r, "alice", None).await.is_empty());
    a.emit(
        "media-state",
        json!({"id": "?", "mic": true, "cam": false, "roomId": r}),
    )
    .await;

    let mut b = connect(url(urls, 1), "B").await;
    b.emit("join-room", json!({"roomId": r, "name": "bob"}))
        .await;
    let uc = b.expect("user-connected").await;
    let a_id = uc["id"].as_str().expect("id").to_string();
    assert_eq!(uc, json!({"name": "alice", "id": a_id}));
    // Key order is checked on the raw wire by the Node suite; here the values.
    assert_eq!(
        b.expect("media-state").await,
        json!({"id": a_id, "roomId": r, "mic": true, "cam": false})
    );
    assert_eq!(b.expect("join-ok").await, json!({"roomId": r}));
    let uc = a.expect("user-connected").await;
    let b_id = uc["id"].as_str().expect("id").to_string();
    assert_eq!(uc, json!({"name": "bob", "id": b_id}));
    assert_eq!(a.expect("#rtcio:init-offer").await, json!({"source": b_id}));

    let mut c = connect(url(urls, 2), "C").await;
    let backfilled = join(&mut c, &r, "carol", None).await;
    assert_eq!(backfilled.len(), 2);
    assert!(backfilled.contains(&a_id) && backfilled.contains(&b_id));
    for x in [&mut a, &mut b] {
        let uc = x.expect("user-connected").await;
        assert_eq!(uc["name"], "carol");
        let c_id = uc["id"].clone();
        assert_eq!(x.expect("#rtcio:init-offer").await, json!({"source": c_id}));
    }

    // Relay: verbatim to the target only.
    let env = json!({"target": b_id, "source": a_id, "data": {"description": {"type": "offer", "sdp": "v=0\r\n"}}});
    a.emit("#rtcio:message", env.clone()).await;
    assert_eq!(b.expect("#rtcio:message").await, env);

    // B leaves: A and C get the P2P hint first, then presence.
    b.close().await;
    for x in [&mut a, &mut c] {
        assert_eq!(x.expect("#rtcio:peer-left").await, json!({"id": b_id}));
        assert_eq!(x.expect("user-disconnected").await, json!({"id": b_id}));
    }
    // A never saw its own relay come back, C never saw A's relay to B.
    assert!(a.drain().is_empty());
    assert!(c.drain().is_empty());
    a.close().await;
    c.close().await;
}

/// check-room and the password registry, including its reset when the room empties.
async fn passwords(urls: &[String]) {
    let r = room("pw");
    let mut a = connect(url(urls, 0), "A").await;
    a.emit("check-room", json!({"roomId": r})).await;
    assert_eq!(
        a.expect("room-check-ok").await,
        json!({"roomId": r, "passwordRequired": false})
    );
    assert!(
        join(&mut a, &r, "alice", Some("  s3cret "))
            .await
            .is_empty()
    );

    let mut b = connect(url(urls, 1), "B").await;
    b.emit("check-room", json!({"roomId": r})).await;
    assert_eq!(
        b.expect("join-error").await,
        json!({"reason": "password-required", "roomId": r})
    );
    b.emit("check-room", json!({"roomId": r, "password": "s3cret"}))
        .await;
    assert_eq!(
        b.expect("room-check-ok").await,
        json!({"roomId": r, "passwordRequired": true})
    );
    b.emit("join-room", json!({"roomId": r, "name": "bob"}))
        .await;
    assert_eq!(
        b.expect("join-error").await,
        json!({"reason": "password-required", "roomId": r})
    );
    b.emit(
        "join-room",
        json!({"roomId": r, "name": "bob", "password": "nope"}),
    )
    .await;
    assert_eq!(
        b.expect("join-error").await,
        json!({"reason": "wrong-password", "roomId": r})
    );
    b.emit(
        "join-room",
        json!({"roomId": r, "name": "bob", "password": 42}),
    )
    .await;
    assert_eq!(
        b.expect("join-error").await,
        json!({"reason": "password-required", "roomId": r})
    );
    assert_eq!(join(&mut b, &r, "bob", Some(" s3cret")).await.len(), 1);

    // Room empties: the password goes with it.
    a.close().await;
    b.wait_for("user-disconnected").await;
    b.close().await;
    let mut c = connect(url(urls, 2), "C").await;
    // The leave is processed before C's check (B's disconnect raced C's connect): retry on the
    // server's word, not on time.
    let mut tries = 0;
    loop {
        c.emit("check-room", json!({"roomId": r})).await;
        let reply = c.next().await;
        if reply.name == "room-check-ok" {
            assert_eq!(
                reply.args[0],
                json!({"roomId": r, "passwordRequired": false})
            );
            break;
        }
        tries += 1;
        assert!(tries < 50, "password never dropped: {reply:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(join(&mut c, &r, "carol", None).await.is_empty());
    c.close().await;
}

/// Invalid shapes: join-error for room requests, silence elsewhere; the socket keeps working.
async fn bad_payloads(urls: &[String]) {
    let mut a = connect(url(urls, 0), "A").await;
    for bad in [
        json!(null),
        json!(5),
        json!("room"),
        json!([1, 2]),
        json!({}),
        json!({"roomId": 7}),
        json!({"roomId": ""}),
    ] {
        a.emit("join-room", bad.clone()).await;
        let err = a.expect("join-error").await;
        assert_eq!(err["reason"], "invalid-room", "{bad}");
        match bad.get("roomId") {
            Some(given) => assert_eq!(&err["roomId"], given),
            None => assert!(err.get("roomId").is_none(), "{err}"),
        }
        a.emit("check-room", bad).await;
        assert_eq!(a.expect("join-error").await["reason"], "invalid-room");
    }
    for ev in [
        "media-state",
        "stopScreenShare",
        "chat-message",
        "#rtcio:message",
    ] {
        for bad in [
            json!(null),
            json!(1),
            json!("x"),
            json!([]),
            json!({"roomId": 3}),
            json!({"target": 9}),
        ] {
            a.emit(ev, bad).await;
        }
    }
    // Too long for a room id: refused with the reason.
    a.emit("join-room", json!({"roomId": "x".repeat(1000)}))
        .await;
    assert_eq!(a.expect("join-error").await["reason"], "invalid-room");
    // Over the event size cap: dropped without an answer.
    a.emit("join-room", json!({"roomId": "x".repeat(200_000)}))
        .await;
    a.emit("no-such-event", json!({"a": 1})).await;
    // Still answering, in order, and nothing else was sent back.
    a.emit("check-room", json!({"roomId": room("bad")})).await;
    let seen = a.until_marker("room-check-ok").await;
    assert!(
        seen.is_empty(),
        "{} unexpected replies, first: {:.200}",
        seen.len(),
        format!("{:?}", seen.first())
    );
    // And the server still takes new sockets.
    let b = connect(url(urls, 1), "B").await;
    b.close().await;
    a.close().await;
}

/// Hardened relay: only between room mates, only with our own id as source.
async fn relay_hardening(urls: &[String]) {
    let r = room("hard");
    let mut a = connect(url(urls, 0), "A").await;
    join(&mut a, &r, "alice", None).await;
    let mut b = connect(url(urls, 1), "B").await;
    let ids = join(&mut b, &r, "bob", None).await;
    let a_id = ids[0].clone();
    let b_id = a.expect("user-connected").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    a.expect("#rtcio:init-offer").await;

    // X is in no room: its relay to A is dropped. Then X joins and a good relay gets through;
    // per-socket ordering means the bad one would have arrived first.
    let mut x = connect(url(urls, 2), "X").await;
    x.emit(
        "#rtcio:message",
        json!({"source": "whoever", "target": a_id, "data": {"mid": "bad"}}),
    )
    .await;
    let ids = join(&mut x, &r, "xavier", None).await;
    assert_eq!(ids.len(), 2);
    let x_id = a.expect("user-connected").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    a.expect("#rtcio:init-offer").await;
    // Foreign source: dropped.
    x.emit(
        "#rtcio:message",
        json!({"source": b_id, "target": a_id, "data": {"mid": "spoof"}}),
    )
    .await;
    let good = json!({"source": x_id, "target": a_id, "data": {"mid": "good"}});
    x.emit("#rtcio:message", good.clone()).await;
    let before = a.until_marker("#rtcio:message").await;
    assert!(before.is_empty(), "{before:?}");
    let after = a.drain();
    assert!(after.is_empty(), "{after:?}");

    // Echo to a room X never joined: dropped; to its own room: delivered to others.
    x.emit("chat-message", json!({"roomId": "elsewhere", "text": "no"}))
        .await;
    x.emit("chat-message", json!({"roomId": r, "text": "hi"}))
        .await;
    assert_eq!(
        a.expect("chat-message").await,
        json!({"roomId": r, "text": "hi"})
    );
    assert_eq!(
        b.wait_for("chat-message").await,
        json!({"roomId": r, "text": "hi"})
    );

    // A room id equal to a socket id is refused.
    x.emit("join-room", json!({"roomId": a_id, "name": "eve"}))
        .await;
    assert_eq!(
        x.expect("join-error").await,
        json!({"reason": "invalid-room", "roomId": a_id})
    );
    for c in [a, b, x] {
        c.close().await;
    }
}

/// Eight sockets join one room, then leave one by one.
async fn eight_clients(urls: &[String]) {
    let r = room("eight");
    let mut clients: Vec<TestClient> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for i in 0..8 {
        let mut c = connect(url(urls, i), &format!("c{i}")).await;
        let backfill = join(&mut c, &r, &format!("n{i}"), None).await;
        assert_eq!(backfill.len(), i, "c{i} backfill");
        for (j, other) in clients.iter_mut().enumerate() {
            let uc = other.expect("user-connected").await;
            assert_eq!(uc["name"], format!("n{i}"), "c{j}");
            let id = uc["id"].as_str().unwrap().to_string();
            assert_eq!(
                other.expect("#rtcio:init-offer").await,
                json!({"source": id})
            );
            if j == 0 {
                ids.push(id);
            }
        }
        if i == 0 {
            ids.push(String::new()); // c0 learns nobody's id for itself
        }
        clients.push(c);
    }
    // ids[i] for i ≥ 1 came from c0's view.
    while clients.len() > 1 {
        let leaver = clients.pop().expect("non-empty");
        let id = ids.pop().expect("id");
        leaver.close().await;
        for c in clients.iter_mut() {
            assert_eq!(c.expect("#rtcio:peer-left").await, json!({"id": id}));
            assert_eq!(c.expect("user-disconnected").await, json!({"id": id}));
        }
    }
    for c in clients {
        c.close().await;
    }
}

/// Display names: too long or with control characters refused with `invalid-name`; trimmed,
/// blank and non-string names as documented; the socket stays usable after a refusal.
async fn names(urls: &[String]) {
    let r = room("names");
    let mut a = connect(url(urls, 0), "A").await;
    for bad in [
        json!("x".repeat(65)),
        json!("a\u{0007}b"),
        json!("evil\u{202E}txt"),
    ] {
        a.emit("join-room", json!({"roomId": r, "name": bad})).await;
        assert_eq!(
            a.expect("join-error").await,
            json!({"reason": "invalid-name", "roomId": r}),
            "{bad}"
        );
    }
    let long_ok = "é".repeat(64);
    assert!(
        join(&mut a, &r, &format!("  {long_ok} "), None)
            .await
            .is_empty()
    );
    let mut b = connect(url(urls, 1), "B").await;
    b.emit("join-room", json!({"roomId": r, "name": 42})).await;
    let uc = b.expect("user-connected").await;
    assert_eq!(uc["name"], json!(long_ok), "trimmed name passed on");
    b.expect("join-ok").await;
    // A non-string name is absent: `user-connected {id}` only.
    let uc = a.expect("user-connected").await;
    assert!(uc.get("name").is_none(), "{uc}");
    a.expect("#rtcio:init-offer").await;
    a.close().await;
    b.close().await;
}

/// `#rtcio:previous-id {id}` (our extension): a reconnected client's old id is hinted to its
/// rooms with `#rtcio:peer-left`, unless the id is live (on any process) or the sender's own.
async fn previous_id_hint(urls: &[String]) {
    let r = room("prev");
    let mut a = connect(url(urls, 0), "A").await;
    join(&mut a, &r, "alice", None).await;
    let mut b = connect(url(urls, 1), "B").await;
    let a_id = join(&mut b, &r, "bob", None).await.remove(0);
    let b_id = a.expect("user-connected").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    a.expect("#rtcio:init-offer").await;
    // A live id (A's, on the other process with Redis) and B's own: refused. In order per
    // socket, so a wrongly sent hint would arrive before the good one.
    b.emit("#rtcio:previous-id", json!({"id": a_id})).await;
    b.emit("#rtcio:previous-id", json!({"id": b_id})).await;
    b.emit("#rtcio:previous-id", json!({"id": 5})).await;
    b.emit(
        "#rtcio:previous-id",
        json!({"id": "bob-before-the-restart"}),
    )
    .await;
    assert_eq!(
        a.expect("#rtcio:peer-left").await,
        json!({"id": "bob-before-the-restart"})
    );
    // Nothing for the sender itself; the room's presence is untouched.
    b.emit("chat-message", json!({"roomId": r, "text": "m"}))
        .await;
    assert!(a.until_marker("chat-message").await.is_empty());
    assert!(b.drain().is_empty());
    for c in [a, b] {
        c.close().await;
    }
}

async fn all_scenarios(urls: &[String]) {
    join_relay_leave(urls).await;
    passwords(urls).await;
    bad_payloads(urls).await;
    relay_hardening(urls).await;
    eight_clients(urls).await;
    names(urls).await;
    previous_id_hint(urls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_on_one_process() {
    let server = local_server(Policy::default()).await;
    all_scenarios(&[server.url()]).await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_across_two_processes_through_redis() {
    let (_redis, redis_url) = start_redis();
    let (_s1, u1) = start_server_process(&["--redis", &redis_url]);
    let (_s2, u2) = start_server_process(&["--redis", &redis_url]);
    all_scenarios(&[u1, u2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anchor_compat_relays_to_any_target_and_repeats_rejoin() {
    let server = local_server(Policy::anchor()).await;
    let r = room("anchor");
    let mut a = connect(&server.url(), "A").await;
    join(&mut a, &r, "alice", None).await;
    let mut b = connect(&server.url(), "B").await;
    let a_id = join(&mut b, &r, "bob", None).await.remove(0);
    let b_id = a.expect("user-connected").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    a.expect("#rtcio:init-offer").await;
    // An outsider with a made-up source reaches A, as with rtc.io-server.
    let x = connect(&server.url(), "X").await;
    let env = json!({"source": "made-up", "target": a_id, "data": {"mid": "m"}});
    x.emit("#rtcio:message", env.clone()).await;
    assert_eq!(a.expect("#rtcio:message").await, env);
    // No handler for our previous-id extension: no hint (the next event A sees is the relay).
    b.emit("#rtcio:previous-id", json!({"id": "gone"})).await;
    b.emit(
        "#rtcio:message",
        json!({"source": b_id, "target": a_id, "data": {"mid": "n"}}),
    )
    .await;
    assert_eq!(a.expect("#rtcio:message").await["data"]["mid"], "n");
    // Re-join repeats the whole sequence, self included.
    b.emit("join-room", json!({"roomId": r, "name": "bob"}))
        .await;
    let mut self_seen = false;
    loop {
        let ev = b.next().await;
        match ev.name.as_str() {
            "user-connected" => self_seen |= ev.args[0]["id"] == Value::String(b_id.clone()),
            "join-ok" => break,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(self_seen, "anchor re-join backfills the joiner itself");
    assert_eq!(
        a.expect("user-connected").await["id"],
        Value::String(b_id.clone())
    );
    assert_eq!(a.expect("#rtcio:init-offer").await, json!({"source": b_id}));
    for c in [a, b, x] {
        c.close().await;
    }
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_token_is_enforced() {
    let server = rtcio_server::start(ServerConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        auth_token: Some("letmein".into()),
        ..ServerConfig::default()
    })
    .await
    .expect("server starts");
    let no_auth = try_connect(&server.url(), "anon", None).await;
    assert!(no_auth.is_err(), "connected without a token");
    let wrong = try_connect(&server.url(), "wrong", Some(json!({"token": "guess"}))).await;
    assert!(wrong.is_err(), "connected with a wrong token");
    let ok = try_connect(&server.url(), "ok", Some(json!({"token": "letmein"}))).await;
    ok.expect("right token connects").close().await;
    server.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_rate_limit_drops_excess_but_keeps_the_socket() {
    let server = local_server(Policy {
        relay_per_second: 50.0,
        ..Policy::default()
    })
    .await;
    let r = room("rate");
    let mut a = connect(&server.url(), "A").await;
    join(&mut a, &r, "alice", None).await;
    let mut b = connect(&server.url(), "B").await;
    let a_id = join(&mut b, &r, "bob", None).await.remove(0);
    let b_id = a.expect("user-connected").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    a.expect("#rtcio:init-offer").await;
    for i in 0..500 {
        b.emit(
            "#rtcio:message",
            json!({"source": b_id, "target": a_id, "data": {"mid": i.to_string()}}),
        )
        .await;
    }
    b.emit("chat-message", json!({"roomId": r, "done": true}))
        .await;
    let relayed = a.until_marker("chat-message").await;
    assert!(
        !relayed.is_empty() && relayed.len() < 500,
        "{} of 500 relayed",
        relayed.len()
    );
    // Nothing was reordered among the ones that passed.
    let mids: Vec<u64> = relayed
        .iter()
        .map(|r| r.args[0]["data"]["mid"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(mids.windows(2).all(|w| w[0] < w[1]));
    a.close().await;
    b.close().await;
    server.shutdown().await.expect("clean shutdown");
}
