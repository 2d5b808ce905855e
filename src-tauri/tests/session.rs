//! The call logic end to end, without a window: two sessions through the embedded server on
//! loopback, as two app instances would run it.

use std::time::Duration;

mod common;

use common::session::{Events, sink};
use rtcio_desktop::session::{JoinConfig, ServerChoice, Session};
use serde_json::Value;

fn config(name: &str, room: &str, server: ServerChoice) -> JoinConfig {
    common::session::config(name, room, server)
}

async fn expect(rx: &mut Events, what: &str, pred: impl Fn(&str, &Value) -> bool) -> Value {
    common::session::expect(rx, Duration::from_secs(15), what, pred).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_guest_share_presence_media_state_and_chat() {
    let (ui_a, mut rx_a) = sink();
    let mut cfg = config("Ann", "room-1", ServerChoice::Host);
    cfg.password = Some("secret".into());
    let (a, info_a) = Session::join(cfg, ui_a).await.expect("host joins");
    assert!(info_a.hosting);
    assert!(info_a.join_confirmed, "rtcio-server sends join-ok");
    assert_eq!(info_a.share_urls.len(), 1);
    let url = info_a.share_urls[0].clone();

    // Wrong and missing passwords are refused with the server's reason.
    for (pw, reason) in [
        (Some("nope"), "wrong-password"),
        (None, "password-required"),
    ] {
        let (ui, _rx) = sink();
        let mut cfg = config("Eve", "room-1", ServerChoice::Url(url.clone()));
        cfg.password = pw.map(str::to_string);
        let err = Session::join(cfg, ui).await.err().expect("refused");
        let v = serde_json::to_value(&err).unwrap();
        assert_eq!(v["kind"], "join");
        assert_eq!(v["reason"], reason);
    }

    let (ui_b, mut rx_b) = sink();
    let mut cfg = config("Bob", "room-1", ServerChoice::Url(url.clone()));
    cfg.password = Some("secret".into());
    cfg.mic = false;
    let (b, info_b) = Session::join(cfg, ui_b).await.expect("guest joins");
    assert!(!info_b.hosting);
    assert!(!info_b.mic && info_b.cam);

    // Roster both ways, the host's media state backfilled to the guest.
    expect(&mut rx_b, "Ann in B's roster", |n, v| {
        n == "room-event"
            && v["type"] == "user-connected"
            && v["name"] == "Ann"
            && v["id"] == info_a.self_id
    })
    .await;
    expect(&mut rx_b, "Ann's media state", |n, v| {
        n == "media-state" && v["id"] == info_a.self_id && v["mic"] == true
    })
    .await;
    expect(&mut rx_a, "Bob in A's roster", |n, v| {
        n == "room-event" && v["type"] == "user-connected" && v["name"] == "Bob"
    })
    .await;
    expect(&mut rx_a, "Bob's media state", |n, v| {
        n == "media-state" && v["id"] == info_b.self_id && v["mic"] == false
    })
    .await;
    expect(&mut rx_a, "peer-connect", |n, v| {
        n == "peer-connect" && v["id"] == info_b.self_id
    })
    .await;
    expect(&mut rx_b, "peer-connect", |n, v| {
        n == "peer-connect" && v["id"] == info_a.self_id
    })
    .await;

    // Toggle, then chat over the broadcast channel.
    a.set_media_state(false, false).expect("toggle");
    expect(&mut rx_b, "Ann muted", |n, v| {
        n == "media-state" && v["id"] == info_a.self_id && v["mic"] == false && v["cam"] == false
    })
    .await;
    let sent = b.send_chat("hello Ann").expect("chat");
    assert_eq!(sent.name, "Bob");
    let got = expect(&mut rx_a, "chat", |n, _| n == "chat").await;
    assert_eq!(got["text"], "hello Ann");
    assert_eq!(got["name"], "Bob");
    assert_eq!(got["from"], info_b.self_id);
    assert_eq!(got["at"], sent.at);
    assert!(b.send_chat("   ").is_err());

    // Leaving is seen at once.
    b.leave().await;
    expect(&mut rx_a, "Bob left", |n, v| {
        n == "room-event" && v["type"] == "user-disconnected" && v["id"] == info_b.self_id
    })
    .await;
    a.leave().await;
}

/// The host's own server tells the room that the host left before it stops: a guest gets
/// `user-disconnected` for the host, not only a lost server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_hear_the_host_leave() {
    let (ui_a, _rx_a) = sink();
    let (a, info_a) = Session::join(config("Ann", "room-h", ServerChoice::Host), ui_a)
        .await
        .expect("host joins");
    let url = info_a.share_urls[0].clone();
    let (ui_b, mut rx_b) = sink();
    let (b, _) = Session::join(config("Bob", "room-h", ServerChoice::Url(url)), ui_b)
        .await
        .expect("guest joins");
    expect(&mut rx_b, "Ann in B's roster", |n, v| {
        n == "room-event" && v["type"] == "user-connected" && v["id"] == info_a.self_id
    })
    .await;
    a.leave().await;
    expect(&mut rx_b, "Ann left", |n, v| {
        n == "room-event" && v["type"] == "user-disconnected" && v["id"] == info_a.self_id
    })
    .await;
    b.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_are_typed() {
    let (ui, _rx) = sink();
    let err = Session::join(
        config("Ann", "r", ServerChoice::Url("localhost:3001".into())),
        ui,
    )
    .await
    .err()
    .expect("bad url");
    assert_eq!(err.kind(), "badUrl");

    // A port nobody listens on (bound then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (ui, _rx) = sink();
    let err = Session::join(
        config(
            "Ann",
            "r",
            ServerChoice::Url(format!("http://127.0.0.1:{port}")),
        ),
        ui,
    )
    .await
    .err()
    .expect("unreachable");
    assert!(
        matches!(err.kind(), "unreachable" | "timeout"),
        "got {err:?}"
    );

    let (ui, _rx) = sink();
    let err = Session::join(config("  ", "r", ServerChoice::Host), ui)
        .await
        .err()
        .expect("empty name");
    assert_eq!(err.kind(), "invalid");
}

/// "Run a TURN relay when hosting" + "Relay only" on both sides: the call forms through the
/// host's embedded relay (credentials from its /ice-servers) and both see a relayed path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_call_through_the_hosts_turn_relay() {
    let (ui_a, mut rx_a) = sink();
    let mut cfg = config("Ann", "room-turn", ServerChoice::Host);
    cfg.host_turn = true;
    cfg.socket.relay_only = true;
    let (a, info_a) = Session::join(cfg, ui_a).await.expect("host joins");
    let url = info_a.share_urls[0].clone();
    let (ui_b, mut rx_b) = sink();
    let mut cfg = config("Bob", "room-turn", ServerChoice::Url(url));
    cfg.socket.relay_only = true;
    let (b, info_b) = Session::join(cfg, ui_b).await.expect("guest joins");
    for (rx, peer, who) in [
        (&mut rx_a, info_b.self_id.clone(), "Ann"),
        (&mut rx_b, info_a.self_id.clone(), "Bob"),
    ] {
        expect(
            rx,
            &format!("{who}: a relayed path to the other"),
            |n, v| n == "peer-quality" && v["id"] == peer.as_str() && v["path"] == "relay",
        )
        .await;
    }
    b.leave().await;
    a.leave().await;
}
