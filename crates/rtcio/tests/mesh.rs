//! Rust↔Rust over real webrtc-rs connections on loopback, signaled through our rtcio-server.

mod common;

use std::time::{Duration, Instant};

use common::room::{
    Member, WAIT, connected_to, join, join_with, next, pair, restart_server, server,
};

use rtcio::{ChannelOptions, Options, Origin};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

async fn trio(url: &str, room: &str) -> (Member, Member, Member) {
    let mut a = join(url, room, "alice").await;
    let mut b = join(url, room, "bob").await;
    let mut c = join(url, room, "carol").await;
    let (ia, ib, ic) = (a.socket.id(), b.socket.id(), c.socket.id());
    connected_to(&mut a, &[ib.clone(), ic.clone()]).await;
    connected_to(&mut b, &[ia.clone(), ic]).await;
    connected_to(&mut c, &[ia, ib]).await;
    (a, b, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_events_broadcast_and_per_peer() {
    let srv = server().await;
    let (a, b, c) = trio(&srv.url(), "ctrl").await;
    let mut b_chat = b.socket.subscribe("chat");
    let mut c_chat = c.socket.subscribe("chat");
    a.socket
        .emit("chat", vec![json!({"text": "hi all"}), json!(2)])
        .expect("emit");
    for (rx, who) in [(&mut b_chat, "B"), (&mut c_chat, "C")] {
        let ev = next(rx, who).await;
        assert_eq!(ev.args, vec![json!({"text": "hi all"}), json!(2)]);
        assert_eq!(ev.origin, Origin::Peer(a.socket.id()));
    }
    // Per-peer: only B hears it, and B's per-peer listener for A too.
    let mut b_from_a = b.socket.peer(&a.socket.id()).subscribe("hello");
    let mut c_hello = c.socket.subscribe("hello");
    a.socket
        .peer(&b.socket.id())
        .emit("hello", vec![json!("just you")])
        .expect("emit");
    assert_eq!(
        next(&mut b_from_a, "B per-peer").await.args,
        vec![json!("just you")]
    );
    // C: a marker sent after the hello reaches C first and alone.
    let mut c_marker = c.socket.subscribe("marker");
    a.socket.emit("marker", vec![]).expect("emit");
    next(&mut c_marker, "C marker").await;
    assert!(
        c_hello.try_recv().is_err(),
        "C heard a per-peer message for B"
    );
    for m in [a, b, c] {
        m.socket.close().await;
    }
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_reserved_events_are_dropped() {
    let srv = server().await;
    let (a, b) = pair(&srv.url(), "spoof").await;
    let mut b_all = [
        b.socket.subscribe("peer-connect"),
        b.socket.subscribe("peer-disconnect"),
        b.socket.subscribe("track-added"),
        b.socket.subscribe("#rtcio:message"),
    ];
    let mut marker = b.socket.subscribe("marker");
    for name in [
        "peer-connect",
        "peer-disconnect",
        "track-added",
        "track-removed",
    ] {
        a.socket
            .emit(name, vec![json!({"id": "forged"})])
            .expect("emit");
    }
    a.socket.emit("marker", vec![]).expect("emit");
    next(&mut marker, "marker").await;
    for rx in b_all.iter_mut() {
        assert!(rx.try_recv().is_err(), "a reserved event got through");
    }
    a.socket.close().await;
    b.socket.close().await;
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_and_per_peer_channels_including_late_joiner() {
    let srv = server().await;
    let (a, b) = pair(&srv.url(), "chan").await;
    let a_chat = a
        .socket
        .create_channel("chat", ChannelOptions::reliable())
        .await
        .expect("a chat");
    let b_chat = b
        .socket
        .create_channel("chat", ChannelOptions::reliable())
        .await
        .expect("b chat");
    let mut b_msgs = b_chat.subscribe("msg");
    // The channel opens on both ends once both exist; wait for B's end to be open.
    let a_to_b = a_chat.member(&b.socket.id()).expect("per-peer member");
    let mut opened = a_to_b.subscribe("open");
    if a_to_b.ready_state() != rtcio::ReadyState::Open {
        next(&mut opened, "open").await;
    }
    a_chat.emit(
        "msg",
        vec![json!({"name": "alice", "text": "one", "at": 1})],
    );
    let ev = next(&mut b_msgs, "B msg").await;
    assert_eq!(ev.arg()["text"], "one");
    assert_eq!(ev.origin, Origin::Peer(a.socket.id()));

    // A late joiner gets the broadcast channel replayed by both.
    let mut c = join(&srv.url(), "chan", "carol").await;
    let c_chat = c
        .socket
        .create_channel("chat", ChannelOptions::reliable())
        .await
        .expect("c chat");
    connected_to(&mut c, &[a.socket.id(), b.socket.id()]).await;
    let mut c_msgs = c_chat.subscribe("msg");
    let mut b_msgs2 = b_chat.subscribe("msg");
    // Messages sent before C's end exists can be lost (as in rtc.io); resend until one lands.
    let deadline = Instant::now() + WAIT;
    let got = loop {
        a_chat.emit("msg", vec![json!({"text": "to everyone"})]);
        match tokio::time::timeout(Duration::from_millis(200), c_msgs.recv()).await {
            Ok(Some(ev)) => break ev,
            _ => assert!(
                Instant::now() < deadline,
                "late joiner never got the broadcast"
            ),
        }
    };
    assert_eq!(got.arg()["text"], "to everyone");
    next(&mut b_msgs2, "B got it too").await;

    // Per-peer channel between B and C only.
    let bc = b
        .socket
        .peer(&c.socket.id())
        .create_channel("file", ChannelOptions::reliable())
        .await
        .expect("bc");
    let cb = c
        .socket
        .peer(&b.socket.id())
        .create_channel("file", ChannelOptions::reliable())
        .await
        .expect("cb");
    assert_eq!(bc.id(), 139);
    let mut meta = cb.subscribe("meta");
    bc.emit_wait("meta", vec![json!({"tid": 1, "name": "x.bin", "size": 3})])
        .await
        .expect("emit_wait");
    assert_eq!(next(&mut meta, "meta").await.arg()["name"], "x.bin");

    // Collisions name both channels.
    let err = b
        .socket
        .peer(&c.socket.id())
        .create_channel("log", ChannelOptions::reliable())
        .await;
    let _ = err.expect("log alone is fine");
    let err = b
        .socket
        .peer(&c.socket.id())
        .create_channel("draw", ChannelOptions::reliable())
        .await
        .expect_err("draw collides with log");
    let msg = err.to_string();
    assert!(
        msg.contains("'draw'") && msg.contains("'log'") && msg.contains("412"),
        "{msg}"
    );

    // C leaves: the broadcast on A reports peer-left for C.
    let mut left = a_chat.subscribe("peer-left");
    c.socket.close().await;
    let ev = next(&mut left, "peer-left").await;
    assert_eq!(ev.arg(), &Value::String(c.socket.id()));
    a.socket.close().await;
    b.socket.close().await;
    srv.shutdown().await.expect("shutdown");
}

/// A per-peer channel `name` from `a` (with `opts`) to `b` (reliable), open on `a`'s side.
async fn open_channel_pair(
    a: &Member,
    b: &Member,
    name: &str,
    opts: ChannelOptions,
) -> (rtcio::Channel, rtcio::Channel) {
    let tx = a
        .socket
        .peer(&b.socket.id())
        .create_channel(name, opts)
        .await
        .expect("tx");
    let rx = b
        .socket
        .peer(&a.socket.id())
        .create_channel(name, ChannelOptions::reliable())
        .await
        .expect("rx");
    let mut open = tx.subscribe("open");
    if tx.ready_state() != rtcio::ReadyState::Open {
        next(&mut open, "open").await;
    }
    (tx, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mib_with_backpressure_arrives_intact() {
    const TOTAL: usize = 50 * 1024 * 1024;
    const CHUNK: usize = 16 * 1024;
    let srv = server().await;
    let (a, b) = pair(&srv.url(), "bulk").await;
    let (tx, rx) = open_channel_pair(&a, &b, "bulk", ChannelOptions::reliable()).await;
    let mut data_rx = rx.subscribe("data");
    let mut drains = tx.subscribe("drain");
    let sender = tokio::spawn(async move {
        // rtc.io style: send until it returns false, then wait for drain.
        let mut hasher = Sha256::new();
        let mut sent = 0usize;
        let mut i: u32 = 0;
        let mut waited = 0u32;
        while sent < TOTAL {
            let chunk: Vec<u8> = (0..CHUNK).map(|k| (i as usize * 31 + k) as u8).collect();
            hasher.update(&chunk);
            sent += chunk.len();
            i += 1;
            if !tx.send(chunk).await {
                // Queued (not lost): wait until the queue drains below the low watermark.
                waited += 1;
                next(&mut drains, "drain").await;
            }
        }
        (hasher.finalize().to_vec(), waited)
    });
    let mut hasher = Sha256::new();
    let mut got = 0usize;
    while got < TOTAL {
        let ev = next(&mut data_rx, "data").await;
        let bytes = ev.data.expect("binary payload");
        got += bytes.len();
        hasher.update(&bytes);
    }
    let (sent_hash, waited) = sender.await.expect("sender");
    assert_eq!(got, TOTAL);
    assert_eq!(hasher.finalize().to_vec(), sent_hash, "payload corrupted");
    println!("50 MiB transferred, sender waited for drain {waited} times");
    a.socket.close().await;
    b.socket.close().await;
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_lossy_channel_delivers() {
    let srv = server().await;
    let (a, b) = pair(&srv.url(), "lossy").await;
    let ca = a
        .socket
        .create_channel("cursors", ChannelOptions::lossy())
        .await
        .expect("a");
    let cb = b
        .socket
        .create_channel("cursors", ChannelOptions::lossy())
        .await
        .expect("b");
    assert_eq!(ca.options().max_retransmits, Some(0));
    let mut moves = cb.subscribe("move");
    let m = ca.member(&b.socket.id()).expect("member");
    let mut open = m.subscribe("open");
    if m.ready_state() != rtcio::ReadyState::Open {
        next(&mut open, "open").await;
    }
    for i in 0..200 {
        ca.emit("move", vec![json!({"id": a.socket.id(), "x": i, "y": i})]);
    }
    // Loopback rarely loses anything; at least one position must arrive.
    let ev = next(&mut moves, "move").await;
    assert!(ev.arg()["x"].is_u64());
    a.socket.close().await;
    b.socket.close().await;
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_leave_is_noticed_without_the_watchdog() {
    let srv = server().await;
    // A's watchdog would need a minute: only the graceful teardown can explain a quick notice.
    let slow = Options {
        watchdog: rtcio::WatchdogConfig::from_millis(Some(60_000.0), Some(60_000.0), None),
        ..Options::loopback()
    };
    let mut a = join_with(&srv.url(), "leave", "alice", slow).await;
    let mut b = join(&srv.url(), "leave", "bob").await;
    connected_to(&mut a, &[b.socket.id()]).await;
    connected_to(&mut b, &[a.socket.id()]).await;
    let mut gone = a.socket.subscribe("peer-disconnect");
    let started = Instant::now();
    b.socket.close().await;
    let ev = next(&mut gone, "peer-disconnect").await;
    let took = started.elapsed();
    assert_eq!(ev.arg()["id"], Value::String(b.socket.id()));
    println!("graceful leave noticed after {took:?}");
    assert!(a.socket.peers().await.is_empty());
    a.socket.close().await;
    srv.shutdown().await.expect("shutdown");
}

async fn pair_with(url: &str, room: &str, a_opts: Options, b_opts: Options) -> (Member, Member) {
    let mut a = join_with(url, room, "alice", a_opts).await;
    let mut b = join_with(url, room, "bob", b_opts).await;
    connected_to(&mut a, &[b.socket.id()]).await;
    connected_to(&mut b, &[a.socket.id()]).await;
    (a, b)
}

/// Polls the peer's own view until its negotiation settled (no event exists for that).
async fn settled(m: &Member, peer: &str) -> rtcio::PeerStats {
    let deadline = Instant::now() + WAIT;
    loop {
        let st = m.socket.stats(peer).await.expect("peer known");
        if st.signaling == "stable" && st.connection == "connected" {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "negotiation never settled: {} / {}",
            st.signaling,
            st.connection
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn simultaneous_restarts_converge(a_opts: Options, b_opts: Options, room: &str) {
    let srv = server().await;
    let (a, b) = pair_with(&srv.url(), room, a_opts, b_opts).await;
    let (ia, ib) = (a.socket.id(), b.socket.id());
    let mut a_gone = a.socket.subscribe("peer-disconnect");
    let before_a = a.socket.stats(&ib).await.expect("stats").offers_sent;
    let before_b = b.socket.stats(&ia).await.expect("stats").offers_sent;
    // Both ask for an ICE restart at once: two offers cross (glare).
    a.socket.restart_ice(&ib).expect("restart");
    b.socket.restart_ice(&ia).expect("restart");
    // Each side's new offer must end up answered and both back in `stable`.
    let deadline = Instant::now() + WAIT;
    let (sa, sb) = loop {
        let sa = settled(&a, &ib).await;
        let sb = settled(&b, &ia).await;
        if sa.offers_sent > before_a && sb.offers_sent > before_b {
            break (sa, sb);
        }
        assert!(Instant::now() < deadline, "offers not sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "glares seen: alice {} bob {}; offers {} / {}",
        sa.glares, sb.glares, sa.offers_sent, sb.offers_sent
    );
    // The call survived and still carries events both ways.
    let mut on_b = b.socket.subscribe("after");
    let mut on_a = a.socket.subscribe("after");
    a.socket.emit("after", vec![json!(1)]).expect("emit");
    b.socket.emit("after", vec![json!(2)]).expect("emit");
    assert_eq!(next(&mut on_b, "after on B").await.args, vec![json!(1)]);
    assert_eq!(next(&mut on_a, "after on A").await.args, vec![json!(2)]);
    assert!(a_gone.try_recv().is_err(), "the peer was torn down");
    a.socket.close().await;
    b.socket.close().await;
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_ice_restarts_converge_polite_and_impolite() {
    simultaneous_restarts_converge(Options::loopback(), Options::loopback(), "glare").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_ice_restarts_converge_when_both_are_impolite() {
    // Like two JS peers behind a recovery-enabled server: only the deadlock breaker can resolve it.
    let impolite = || Options {
        force_impolite: true,
        glare_break: Duration::from_millis(400),
        ..Options::loopback()
    };
    simultaneous_restarts_converge(impolite(), impolite(), "glare2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_the_selected_loopback_pair() {
    let srv = server().await;
    let (a, b) = pair_with(
        &srv.url(),
        "stats",
        Options::loopback(),
        Options::loopback(),
    )
    .await;
    let st = settled(&a, &b.socket.id()).await;
    assert!(st.polite, "the existing member is polite");
    assert!(st.bytes_sent > 0 && st.bytes_received > 0);
    let local = st.local.clone().expect("selected pair");
    // The remote end is not asserted: when ICE learned it peer-reflexively (checks before its
    // candidate arrived) webrtc-rs's report has no entry for it.
    assert_eq!(local.candidate_type, "host");
    assert_eq!(local.address.as_deref(), Some("127.0.0.1"));
    assert!(!st.raw.is_empty());
    let stb = settled(&b, &a.socket.id()).await;
    assert!(!stb.polite, "the newcomer is impolite");
    a.socket.close().await;
    b.socket.close().await;
    srv.shutdown().await.expect("shutdown");
}

/// Run by `peer_disconnect_when_the_remote_process_is_killed` as a separate process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process for another test"]
async fn child_peer_process() {
    let (Ok(url), Ok(room)) = (
        std::env::var("RTCIO_CHILD_URL"),
        std::env::var("RTCIO_CHILD_ROOM"),
    ) else {
        return;
    };
    let m = join(&url, &room, "child").await;
    // Stay until killed (bounded in case the parent dies first).
    tokio::time::sleep(Duration::from_secs(120)).await;
    m.socket.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_disconnect_when_the_remote_process_is_killed() {
    let srv = server().await;
    let mut a = join(&srv.url(), "kill", "alice").await;
    let mut gone = a.socket.subscribe("peer-disconnect");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["child_peer_process", "--exact", "--ignored", "--nocapture"])
        .env("RTCIO_CHILD_URL", srv.url())
        .env("RTCIO_CHILD_ROOM", "kill")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn child peer");
    let ev = next(&mut a.connects, "peer-connect from the child").await;
    let child_id = ev.arg()["id"].as_str().unwrap_or_default().to_string();
    let started = Instant::now();
    child.kill().expect("kill -9 the child");
    let _ = child.wait();
    let ev = tokio::time::timeout(Duration::from_secs(60), gone.recv())
        .await
        .expect("peer-disconnect within the watchdog")
        .expect("stream");
    assert_eq!(ev.arg()["id"], Value::String(child_id));
    println!("killed peer noticed after {:?}", started.elapsed());
    a.socket.close().await;
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signaling_restart_gives_new_ids_and_the_room_reforms() {
    let srv = server().await;
    let (mut a, mut b) = pair_with(
        &srv.url(),
        "restart",
        Options::loopback(),
        Options::loopback(),
    )
    .await;
    let (old_a, old_b) = (a.socket.id(), b.socket.id());
    let mut a_gone = a.socket.subscribe("peer-disconnect");
    // The signaling server goes away and comes back on the same address, without recovery.
    let srv = restart_server(srv, &[&a.socket, &b.socket]).await;
    assert_ne!(a.socket.id(), old_a);
    assert_ne!(b.socket.id(), old_b);
    // The re-sent join-room re-forms the room, and the old connection (old id) is closed once
    // the new one carries on (make-before-break, tests/reconnect.rs).
    assert_eq!(
        next(&mut a_gone, "stale peer closed").await.arg()["id"],
        Value::String(old_b)
    );
    connected_to(&mut a, &[b.socket.id()]).await;
    connected_to(&mut b, &[a.socket.id()]).await;
    let mut on_b = b.socket.subscribe("again");
    a.socket.emit("again", vec![json!("hi")]).expect("emit");
    assert_eq!(
        next(&mut on_b, "ctrl after the restart").await.args,
        vec![json!("hi")]
    );
    a.socket.close().await;
    b.socket.close().await;
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_closes_the_socket() {
    let srv = server().await;
    let (a, b) = pair(&srv.url(), "dropped").await;
    let b_id = b.socket.id();
    let mut left = a.socket.subscribe("user-disconnected");
    let mut gone = a.socket.subscribe("peer-disconnect");
    // Two handles, neither closed: only the last drop may end the socket.
    let b2 = b.socket.clone();
    drop(b);
    drop(b2);
    // Far below the server's ping timeout (20 s), which a leaked loop would never even reach.
    let bound = Duration::from_secs(5);
    let ev = tokio::time::timeout(bound, left.recv())
        .await
        .expect("the server saw the dropped socket leave")
        .expect("stream");
    assert_eq!(ev.arg()["id"], Value::String(b_id.clone()));
    // Its peer connections were closed too, not left to the watchdog.
    let ev = tokio::time::timeout(bound, gone.recv())
        .await
        .expect("peer-disconnect for the dropped socket")
        .expect("stream");
    assert_eq!(ev.arg()["id"], Value::String(b_id));
    a.socket.close().await;
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_sent_before_the_remote_created_the_channel_arrives() {
    let srv = server().await;
    let (a, b) = pair(&srv.url(), "early-data").await;
    let (ia, ib) = (a.socket.id(), b.socket.id());
    let b_ch = b
        .socket
        .peer(&ia)
        .create_channel("late", ChannelOptions::reliable())
        .await
        .expect("b late");
    // B sends at once, before A has its end.
    for i in 0..3 {
        b_ch.emit("early", vec![json!(i)]);
    }
    b_ch.send(vec![1u8, 2, 3]).await;
    // The scenario, not a synchronisation: A creates its end half a second later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a_ch = a
        .socket
        .peer(&ib)
        .create_channel("late", ChannelOptions::reliable())
        .await
        .expect("a late");
    let mut early = a_ch.subscribe("early");
    let mut data = a_ch.subscribe("data");
    for i in 0..3 {
        assert_eq!(next(&mut early, "early message").await.args, vec![json!(i)]);
    }
    let bin = next(&mut data, "early binary").await;
    assert_eq!(bin.data.as_deref(), Some(&[1u8, 2, 3][..]));
    // And the channel works both ways afterwards.
    let mut back = b_ch.subscribe("back");
    a_ch.emit_wait("back", vec![json!("a→b")])
        .await
        .expect("a sends");
    assert_eq!(next(&mut back, "A → B").await.args, vec![json!("a→b")]);
    let mut more = a_ch.subscribe("more");
    b_ch.emit_wait("more", vec![json!("b→a")])
        .await
        .expect("b sends");
    assert_eq!(next(&mut more, "B → A").await.args, vec![json!("b→a")]);
    a.socket.close().await;
    b.socket.close().await;
    srv.shutdown().await.expect("shutdown");
}

/// A member that joins and never answers (a broken or forged client) must not leave us holding
/// a connection that never forms for the rest of the call: after the connect timeout our peer
/// restarts ICE, and when the last attempt runs out it is given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_forms_is_given_up() {
    use rtcio::sio::client::{SioClient, SioEvent, SioOptions};
    let srv = server().await;
    let opts = Options {
        watchdog: rtcio::WatchdogConfig {
            connect_timeout: Duration::from_millis(800),
            connect_attempts: 2,
            ..rtcio::WatchdogConfig::default()
        },
        ..Options::loopback()
    };
    let a = join_with(&srv.url(), "mute", "alice", opts).await;
    let (mute, mut events, mute_id) = SioClient::connect(&srv.url(), SioOptions::default())
        .await
        .expect("connect");
    mute.emit("join-room", &[json!({"roomId": "mute", "name": "mute"})])
        .expect("emit");
    // Alice, the existing member, offers to the newcomer, which never answers.
    let offered = tokio::time::timeout(WAIT, async {
        while let Some(ev) = events.recv().await {
            if let SioEvent::Event { name, .. } = ev
                && name == "#rtcio:message"
            {
                return;
            }
        }
        panic!("signaling closed before alice's offer");
    });
    offered.await.expect("alice's offer within WAIT");
    assert!(a.socket.peers().await.contains(&mute_id));
    // No event reports the end of a peer that never connected: poll, bounded.
    let deadline = Instant::now() + WAIT;
    while a.socket.peers().await.contains(&mute_id) {
        assert!(
            Instant::now() < deadline,
            "a peer that never answered was still held after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mute.close().await;
    a.socket.close().await;
    srv.shutdown().await.expect("shutdown");
}

/// `try_send` tells the three outcomes apart: sent now, queued (a `drain` follows), and refused
/// for the queue budget (not queued, so no `drain` can be owed for it) — where `send` answers
/// `false` for both of the latter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_send_tells_queued_from_refused() {
    const CHUNK: usize = 64 * 1024;
    let srv = server().await;
    let (a, b) = pair(&srv.url(), "outcomes").await;
    // A small transport buffer and queue, so both fill within a few chunks.
    let opts = ChannelOptions {
        high_watermark: Some(CHUNK),
        low_watermark: Some(CHUNK / 2),
        queue_budget: Some(4 * CHUNK),
        ..ChannelOptions::reliable()
    };
    let (tx, rx) = open_channel_pair(&a, &b, "outcomes", opts).await;
    let mut data_rx = rx.subscribe("data");
    let mut drains = tx.subscribe("drain");
    let mut errors = tx.subscribe("error");
    let (mut sent, mut queued) = (0usize, 0usize);
    let mut refused = None;
    for _ in 0..256 {
        match tx.try_send(vec![7u8; CHUNK]).await {
            Ok(rtcio::SendOutcome::Sent) => sent += 1,
            Ok(rtcio::SendOutcome::Queued) => queued += 1,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert!(sent >= 1, "the first chunk goes to the transport");
    assert!(queued >= 1, "chunks over the high-water mark are queued");
    assert!(
        matches!(refused, Some(rtcio::ChannelError::OverBudget)),
        "a chunk over the budget is refused as such: {refused:?}"
    );
    next(&mut errors, "error").await;
    // Everything accepted arrives, the refused chunk does not, and the queue's drain comes.
    next(&mut drains, "drain").await;
    let mut got = 0usize;
    while got < (sent + queued) * CHUNK {
        let ev = next(&mut data_rx, "data").await;
        got += ev.data.expect("binary payload").len();
    }
    assert_eq!(got, (sent + queued) * CHUNK);
    tx.close();
    assert!(
        matches!(
            tx.try_send(vec![1u8]).await,
            Err(rtcio::ChannelError::Closed)
        ),
        "a closed channel refuses as closed"
    );
    a.socket.close().await;
    b.socket.close().await;
    srv.shutdown().await.expect("shutdown");
}
