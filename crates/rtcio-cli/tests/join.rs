//! `rtcio join` / `rtcio host` as processes: real server, real WebRTC on loopback.

mod common;

use common::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_peers_chat_over_the_demo_channel() {
    let srv = server().await;
    let url = srv.url();
    let r = room("chat");

    let mut a_args = join_args(&url, &r, "alice");
    a_args.push("--chat-stdin");
    let mut a = Rtcio::spawn("alice", &a_args);
    let a_joined = a.wait_type("joined").await;
    let a_id = a_joined["id"].as_str().expect("id").to_string();
    assert_eq!(a_joined["room"], r.as_str());
    assert_eq!(a_joined["name"], "alice");
    assert_eq!(a_joined["members"], serde_json::json!([]));

    let mut b_args = join_args(&url, &r, "bob");
    b_args.push("--chat-stdin");
    let mut b = Rtcio::spawn("bob", &b_args);
    let b_joined = b.wait_type("joined").await;
    let b_id = b_joined["id"].as_str().expect("id").to_string();
    // The server's backfill is listed (and was printed as server-event lines before).
    assert_eq!(
        b_joined["members"],
        serde_json::json!([{"id": a_id, "name": "alice"}])
    );
    assert!(
        b.seen.iter().any(|v| v["type"] == "server-event"
            && v["event"] == "user-connected"
            && v["args"][0]["id"] == a_id.as_str()),
        "bob printed the backfilled user-connected"
    );

    // A hears bob arrive through the server, then both see the peer connection.
    let uc = a
        .wait_for("user-connected bob", |v| {
            v["type"] == "server-event" && v["event"] == "user-connected"
        })
        .await;
    assert_eq!(uc["args"][0]["name"], "bob");
    let pc = a
        .seen_or_wait("peer-connect", |v| v["type"] == "peer-connect")
        .await;
    assert_eq!(pc["peer"], b_id.as_str());
    assert_eq!(pc["name"], "bob");
    let pc = b.wait_type("peer-connect").await;
    assert_eq!(pc["peer"], a_id.as_str());
    assert_eq!(pc["name"], "alice");

    // Each sends its media state over ctrl on peer-connect: an `event` line on the other side.
    let ms = b
        .seen_or_wait("ctrl media-state", |v| {
            v["type"] == "event" && v["event"] == "media-state"
        })
        .await;
    assert_eq!(ms["peer"], a_id.as_str());
    assert_eq!(ms["args"][0]["id"], a_id.as_str());
    assert_eq!(ms["args"][0]["roomId"], r.as_str());

    // Chat the demo's way: broadcast channel `chat`, event `msg` {name, text, at}.
    a.send_line("hello from alice").await;
    let sent = a.wait_type("chat-sent").await;
    assert_eq!(sent["text"], "hello from alice");
    assert_eq!(sent["peers"], serde_json::json!([b_id]));
    let msg = b
        .seen_or_wait("chat", |v| v["type"] == "channel-message")
        .await;
    assert_eq!(msg["peer"], a_id.as_str());
    assert_eq!(msg["name"], "alice");
    assert_eq!(msg["channel"], "chat");
    assert_eq!(msg["event"], "msg");
    let body = &msg["args"][0];
    assert_eq!(body["name"], "alice");
    assert_eq!(body["text"], "hello from alice");
    assert_eq!(body["at"], sent["at"]);
    assert!(body["at"].as_u64().expect("at is epoch ms") > 1_600_000_000_000);

    b.send_line("hi alice, ünïcödé ✓").await;
    let msg = a.wait_type("channel-message").await;
    assert_eq!(msg["args"][0]["text"], "hi alice, ünïcödé ✓");
    assert_eq!(msg["args"][0]["name"], "bob");

    // stdin EOF ends alice's session (no --duration): she leaves, bob notices at once.
    a.close_stdin();
    assert_eq!(a.exit_code().await, 0, "alice exit code");
    let left = a.seen_type("left");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["reason"], "stdin-eof");
    let gone = b.wait_type("peer-disconnect").await;
    assert_eq!(gone["peer"], a_id.as_str());
    assert_eq!(gone["name"], "alice");
    // The server announces the leave too (regression: a DISCONNECT packet followed at once by the
    // WebSocket close used to lose it). It may come before or after the peer-disconnect.
    let bye = b
        .seen_or_wait("user-disconnected(alice)", |v| {
            v["type"] == "server-event"
                && v["event"] == "user-disconnected"
                && v["args"][0]["id"] == a_id.as_str()
        })
        .await;
    assert_eq!(bye["args"][0]["id"], a_id.as_str());

    // SIGTERM is a normal end too.
    b.terminate();
    assert_eq!(b.exit_code().await, 0, "bob exit code");
    assert_eq!(b.seen_type("left")[0]["reason"], "signal");
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_password_exits_4() {
    let srv = server().await;
    let url = srv.url();
    let r = room("pw");
    let mut owner_args = join_args(&url, &r, "owner");
    owner_args.extend(["--password", "s3cret"]);
    let mut owner = Rtcio::spawn("owner", &owner_args);
    owner.wait_type("joined").await;

    let mut bad_args = join_args(&url, &r, "mallory");
    bad_args.extend(["--password", "guess"]);
    let mut bad = Rtcio::spawn("wrong", &bad_args);
    assert_eq!(bad.exit_code().await, 4);
    let err = bad.seen_type("error");
    assert_eq!(err.len(), 1, "{:?}", bad.seen);
    assert_eq!(err[0]["code"], 4);
    assert_eq!(err[0]["reason"], "wrong-password");
    assert!(
        bad.stderr().contains("wrong password for room"),
        "{}",
        bad.stderr()
    );
    assert!(
        bad.seen
            .iter()
            .any(|v| v["type"] == "server-event" && v["event"] == "join-error"),
        "the join-error itself is printed"
    );
    assert!(bad.seen_type("joined").is_empty());

    let mut none = Rtcio::spawn("none", &join_args(&url, &r, "eve"));
    assert_eq!(none.exit_code().await, 4);
    assert_eq!(none.seen_type("error")[0]["reason"], "password-required");
    assert!(
        none.stderr().contains("requires a password"),
        "{}",
        none.stderr()
    );

    let mut good_args = join_args(&url, &r, "friend");
    good_args.extend(["--password", "s3cret", "--duration", "0"]);
    let mut good = Rtcio::spawn("good", &good_args);
    good.wait_type("joined").await;
    assert_eq!(good.exit_code().await, 0);

    owner.terminate();
    assert_eq!(owner.exit_code().await, 0);
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_exits_3() {
    // A port that was free a moment ago: connection refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let mut p = Rtcio::spawn("unreachable", &join_args(&url, "r", "x"));
    assert_eq!(p.exit_code().await, 3);
    let err = p.seen_type("error");
    assert_eq!(err.len(), 1);
    assert_eq!(err[0]["reason"], "unreachable");
    let msg = err[0]["message"].as_str().expect("message");
    assert!(msg.contains("cannot reach the signaling server"), "{msg}");
    assert!(msg.contains(&url), "{msg}");
    assert!(p.stderr().contains(&url), "{}", p.stderr());

    // Not a URL at all: a usage error.
    let mut p = Rtcio::spawn("bad-url", &join_args("ftp://nowhere", "r", "x"));
    assert_eq!(p.exit_code().await, 2);
    assert_eq!(p.seen_type("error")[0]["reason"], "bad-url");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_room_exits_5_and_usage_errors_exit_2() {
    let srv = server().await;
    let url = srv.url();
    let mut p = Rtcio::spawn("empty-room", &join_args(&url, "", "x"));
    assert_eq!(p.exit_code().await, 5);
    let err = p.seen_type("error");
    assert_eq!(err[0]["reason"], "invalid-room");
    assert!(
        p.stderr().contains("rejected the room id"),
        "{}",
        p.stderr()
    );

    // clap: missing --server.
    let mut p = Rtcio::spawn("usage", &["join", "--room", "r"]);
    assert_eq!(p.exit_code().await, 2);
    assert!(p.stderr().contains("--server"), "{}", p.stderr());
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_ends_the_session() {
    let srv = server().await;
    let url = srv.url();
    let r = room("dur");
    let mut args = join_args(&url, &r, "brief");
    args.extend(["--duration", "0.5"]);
    let mut p = Rtcio::spawn("brief", &args);
    let joined = p.wait_type("joined").await;
    assert_eq!(p.exit_code().await, 0);
    let left = p.seen_type("left");
    assert_eq!(left[0]["reason"], "duration");
    let stayed = left[0]["ts"].as_u64().expect("ts") - joined["ts"].as_u64().expect("ts");
    assert!(stayed >= 450, "left after {stayed} ms");
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_serves_a_room_others_join() {
    let mut host = Rtcio::spawn(
        "host",
        &[
            "host",
            "--json",
            "--loopback",
            "--addr",
            "127.0.0.1",
            "--port",
            "0",
            "--room",
            "hosted",
            "--name",
            "hoster",
            "--chat-stdin",
        ],
    );
    let hosting = host.wait_type("hosting").await;
    let urls: Vec<String> = hosting["urls"]
        .as_array()
        .expect("urls")
        .iter()
        .map(|u| u.as_str().expect("url").to_string())
        .collect();
    assert_eq!(urls.len(), 1);
    assert!(urls[0].starts_with("http://127.0.0.1:"), "{urls:?}");
    assert_eq!(hosting["room"], "hosted");
    let host_joined = host.wait_type("joined").await;
    let host_id = host_joined["id"].as_str().expect("id").to_string();

    let mut guest = Rtcio::spawn("guest", &join_args(&urls[0], "hosted", "guest"));
    guest.wait_type("joined").await;
    let pc = guest.wait_type("peer-connect").await;
    assert_eq!(pc["peer"], host_id.as_str());
    host.wait_type("peer-connect").await;

    host.send_line("welcome").await;
    let msg = guest.wait_type("channel-message").await;
    assert_eq!(msg["args"][0]["text"], "welcome");
    assert_eq!(msg["args"][0]["name"], "hoster");

    // The host leaving stops the server: the guest loses its peer and its signaling.
    host.close_stdin();
    assert_eq!(host.exit_code().await, 0);
    guest.wait_type("peer-disconnect").await;
    guest
        .seen_or_wait("signaling disconnected", |v: &Value| {
            v["type"] == "signaling" && v["state"] == "disconnected"
        })
        .await;
    guest.terminate();
    assert_eq!(guest.exit_code().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_port_in_use_exits_8() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let mut p = Rtcio::spawn(
        "host-busy",
        &["host", "--json", "--addr", "127.0.0.1", "--port", &port],
    );
    assert_eq!(p.exit_code().await, 8);
    assert_eq!(p.seen_type("error")[0]["reason"], "host");
    assert!(
        p.stderr().contains("cannot start the room server"),
        "{}",
        p.stderr()
    );
}
