//! Rust ↔ browser: our peer against the rtc.io browser peer page in headless Chromium, both join
//! orders, through our rtcio-server, on loopback.

mod common;

use std::time::Duration;

use common::browser::{Browser, ByteGen};
use rtcio::{ChannelOptions, Event, Options, Origin, Socket};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(30);
const BULK: usize = 8 * 1024 * 1024;

async fn next(rx: &mut UnboundedReceiver<Event>, what: &str) -> Event {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("{what}: stream closed"),
        Err(_) => panic!("{what}: nothing within {WAIT:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn small_watermarks() -> ChannelOptions {
    // Low enough that 8 MiB really exercises queueing and drain.
    ChannelOptions {
        high_watermark: Some(1024 * 1024),
        low_watermark: Some(256 * 1024),
        ..ChannelOptions::reliable()
    }
}

async fn rust_join(url: &str, room: &str) -> (Socket, UnboundedReceiver<Event>) {
    let socket = Socket::connect(url, Options::loopback())
        .await
        .expect("connect");
    let connects = socket.subscribe("peer-connect");
    let mut ok = socket.subscribe("join-ok");
    socket
        .server()
        .emit("join-room", vec![json!({"roomId": room, "name": "rusty"})])
        .expect("join");
    next(&mut ok, "join-ok").await;
    (socket, connects)
}

async fn interop(browser_first: bool) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let srv = rtcio_server::start(rtcio_server::ServerConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        ..Default::default()
    })
    .await
    .expect("server");
    let url = srv.url();
    let room = format!("interop-{browser_first}");
    let mut br = Browser::start().await;
    let page = br.open("web").await;
    let join_arg = json!({
        "url": url, "roomId": room, "name": "web", "chat": true,
        "perPeer": [{"name": "early", "options": {}}]
    });

    let (socket, mut connects, web) = if browser_first {
        let web = br.eval(page, "(o) => rtcio.join(o.url, o)", join_arg).await;
        let (s, c) = rust_join(&url, &room).await;
        (s, c, web)
    } else {
        let (s, c) = rust_join(&url, &room).await;
        let web = br.eval(page, "(o) => rtcio.join(o.url, o)", join_arg).await;
        (s, c, web)
    };
    let chat = socket
        .create_channel("chat", ChannelOptions::reliable())
        .await
        .expect("chat");
    let web_id = web["id"].as_str().expect("browser socket id").to_string();
    let rid = socket.id();

    // peer-connect on both sides, once.
    let ev = next(&mut connects, "rust peer-connect").await;
    assert_eq!(ev.arg()["id"], Value::String(web_id.clone()));
    br.wait_log(
        page,
        json!({"kind": "peer-connect", "peer": rid}),
        0,
        30_000,
    )
    .await;

    // ctrl chat both ways.
    let mut r_chat = socket.subscribe("chat");
    socket
        .emit("chat", vec![json!({"text": "from rust"})])
        .expect("emit");
    br.wait_log(
        page,
        json!({"kind": "event", "via": "ctrl", "name": "chat", "args": [{"text": "from rust"}]}),
        0,
        10_000,
    )
    .await;
    br.eval(
        page,
        "(o) => rtcio.socket.emit('chat', o)",
        json!({"text": "from web"}),
    )
    .await;
    let ev = next(&mut r_chat, "chat from web").await;
    assert_eq!(ev.arg()["text"], "from web");
    assert_eq!(ev.origin, Origin::Peer(web_id.clone()));

    // A 100 KiB ctrl message: only possible because our SDP advertises a=max-message-size
    // (browsers cap at 64 KiB without it).
    let big = "x".repeat(100 * 1024);
    socket.emit("big", vec![json!(big)]).expect("emit");
    br.wait_log(
        page,
        json!({"kind": "event", "via": "ctrl", "name": "big"}),
        0,
        10_000,
    )
    .await;
    let mut r_big = socket.subscribe("big");
    br.eval(
        page,
        "(o) => rtcio.socket.emit('big', 'y'.repeat(o.n))",
        json!({"n": 200 * 1024}),
    )
    .await;
    assert_eq!(
        next(&mut r_big, "200 KiB ctrl from web")
            .await
            .arg()
            .as_str()
            .map(str::len),
        Some(200 * 1024)
    );

    // Per-peer emit both ways.
    socket
        .peer(&web_id)
        .emit("hello", vec![json!(1), json!("two")])
        .expect("emit");
    br.wait_log(
        page,
        json!({"kind": "event", "via": "ctrl", "name": "hello", "peer": rid, "args": [1, "two"]}),
        0,
        10_000,
    )
    .await;
    let mut r_hello = socket.peer(&web_id).subscribe("hello");
    br.eval(
        page,
        "(o) => rtcio.socket.peer(o.id).emit('hello', 'back')",
        json!({"id": rid}),
    )
    .await;
    assert_eq!(
        next(&mut r_hello, "hello from web").await.args,
        vec![json!("back")]
    );

    // Broadcast channel both ways.
    let member = chat.member(&web_id).expect("chat reaches the browser");
    let mut opened = member.subscribe("open");
    if member.ready_state() != rtcio::ReadyState::Open {
        next(&mut opened, "chat open").await;
    }
    chat.emit(
        "msg",
        vec![json!({"name": "rusty", "text": "hi web", "at": 1})],
    );
    br.wait_log(
        page,
        json!({"kind": "channel", "channel": "chat", "name": "msg", "args": [{"text": "hi web"}]}),
        0,
        10_000,
    )
    .await;
    let mut r_msg = chat.subscribe("msg");
    br.eval(
        page,
        "(o) => rtcio.channels.chat.emit('msg', o)",
        json!({"name": "web", "text": "hi rust", "at": 2}),
    )
    .await;
    let ev = next(&mut r_msg, "broadcast msg from web").await;
    assert_eq!(ev.arg()["text"], "hi rust");

    // A channel the browser created at peer-connect and we create only now (after SCTP is up).
    let early = socket
        .peer(&web_id)
        .create_channel("early", ChannelOptions::reliable())
        .await
        .expect("early");
    let mut early_open = early.subscribe("open");
    if early.ready_state() != rtcio::ReadyState::Open {
        next(&mut early_open, "late channel open").await;
    }
    let mut pings = early.subscribe("ping");
    br.eval(
        page,
        "(o) => rtcio.socket.peer(o.id).createChannel('early').emit('ping', 1)",
        json!({"id": rid}),
    )
    .await;
    assert_eq!(
        next(&mut pings, "ping on the late channel").await.args,
        vec![json!(1)]
    );
    early.emit("pong", vec![json!(2)]);
    br.wait_log(
        page,
        json!({"kind": "channel", "channel": "early", "name": "pong", "args": [2]}),
        0,
        10_000,
    )
    .await;

    // Per-peer binary channel with backpressure, both ways at once, checked by SHA-256.
    br.eval(
        page,
        "(o) => { rtcio.socket.peer(o.id).createChannel('bulk', {highWatermark: 1048576, lowWatermark: 262144}); return true; }",
        json!({"id": rid}),
    )
    .await;
    let bulk = socket
        .peer(&web_id)
        .create_channel("bulk", small_watermarks())
        .await
        .expect("bulk");
    let mut bulk_open = bulk.subscribe("open");
    if bulk.ready_state() != rtcio::ReadyState::Open {
        next(&mut bulk_open, "bulk open").await;
    }
    let mut r_data = bulk.subscribe("data");
    let sender = {
        let bulk = bulk.clone();
        let mut drains = bulk.subscribe("drain");
        let mut errors = bulk.subscribe("error");
        tokio::spawn(async move {
            let mut bytes = ByteGen::new(2);
            let mut hasher = Sha256::new();
            let mut sent = 0;
            let mut waits = 0;
            while sent < BULK {
                let chunk = bytes.take(16 * 1024);
                hasher.update(&chunk);
                sent += chunk.len();
                if !bulk.send(chunk).await {
                    waits += 1;
                    if tokio::time::timeout(WAIT, drains.recv()).await.is_err() {
                        // The caller adds what the page received, to tell a stalled
                        // transport from a lost `drain`.
                        let mut seen = Vec::new();
                        while let Ok(e) = errors.try_recv() {
                            seen.push(e.args);
                        }
                        return Err(format!(
                            "drain: nothing within {WAIT:?} after send() #{waits} returned \
                             false at {sent} of {BULK} bytes; channel errors: {seen:?}"
                        ));
                    }
                }
            }
            Ok((hex(&hasher.finalize()), waits))
        })
    };
    let web_sent = br
        .eval(
            page,
            "(o) => rtcio.sendBytes({peer: o.id, channel: 'bulk', bytes: o.n, seed: 1})",
            json!({"id": rid, "n": BULK}),
        )
        .await;
    let mut hasher = Sha256::new();
    let mut got = 0;
    while got < BULK {
        let ev = next(&mut r_data, "bulk data from web").await;
        let b = ev.data.expect("binary");
        got += b.len();
        hasher.update(&b);
    }
    assert_eq!(got, BULK);
    let expected = hex(&Sha256::digest(ByteGen::new(1).take(BULK)));
    assert_eq!(
        hex(&hasher.finalize()),
        expected,
        "browser → rust bytes differ"
    );
    assert_eq!(web_sent["sha256"], Value::String(expected));
    let (rust_sha, rust_waits) = match sender.await.expect("sender") {
        Ok(done) => done,
        Err(why) => {
            const GOT: &str = "(o) => rtcio.recvStats({peer: o.id, channel: 'bulk', hash: false})";
            let arg = json!({"id": rid});
            let then = br.eval(page, GOT, arg.clone()).await["bytes"].clone();
            // Evidence only (the test fails either way): does anything still arrive?
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            let later = br.eval(page, GOT, arg).await["bytes"].clone();
            panic!("{why}; the page had {then} bytes, {later} 2 s later");
        }
    };
    // The page logs a running total per binary message: wait for the last one.
    br.wait_log(
        page,
        json!({"kind": "channel-data", "channel": "bulk", "peer": rid, "total": BULK}),
        0,
        60_000,
    )
    .await;
    let stats = br
        .eval(
            page,
            "(o) => rtcio.recvStats({peer: o.id, channel: 'bulk', hash: false})",
            json!({"id": rid}),
        )
        .await;
    assert_eq!(stats["bytes"], json!(BULK));
    let stats = br
        .eval(
            page,
            "(o) => rtcio.recvStats({peer: o.id, channel: 'bulk'})",
            json!({"id": rid}),
        )
        .await;
    assert_eq!(
        stats["sha256"],
        Value::String(rust_sha),
        "rust → browser bytes differ"
    );
    println!(
        "bulk: browser waited for drain {} times, rust {rust_waits} times",
        web_sent["drains"]
    );

    // peer-disconnect pairs with peer-connect, both directions of leaving.
    if browser_first {
        let since = br.log_len(page).await;
        socket.close().await;
        let ev = br
            .wait_log(
                page,
                json!({"kind": "peer-disconnect", "peer": rid}),
                since,
                40_000,
            )
            .await;
        assert_eq!(ev["entry"]["peer"], Value::String(rid.clone()));
    } else {
        let mut gone = socket.subscribe("peer-disconnect");
        br.close_page(page).await;
        let ev = next(&mut gone, "peer-disconnect after the page closed").await;
        assert_eq!(ev.arg()["id"], Value::String(web_id.clone()));
        socket.close().await;
    }
    let count = if browser_first {
        br.eval(
            page,
            "(o) => rtcio.log(0).filter(e => e.kind === 'peer-connect' && e.peer === o.id).length",
            json!({"id": rid}),
        )
        .await
    } else {
        json!(1)
    };
    assert_eq!(count, json!(1), "exactly one peer-connect");
    br.quit().await;
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_first_then_rust() {
    interop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_first_then_browser() {
    interop(false).await;
}
