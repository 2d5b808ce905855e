//! A server restart mid-call, as two app instances see it: everyone comes back with a new id,
//! the library keeps the old connections until the new ones carry the call, and the UI hears
//! that the old ids left (no server will say so: it forgot them).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

mod common;

use common::session::{Events, sink};
use rtcio_desktop::session::{JoinConfig, ServerChoice, Session};
use serde_json::Value;

fn config(name: &str, room: &str, url: &str) -> JoinConfig {
    common::session::config(name, room, ServerChoice::Url(url.to_string()))
}

async fn expect(rx: &mut Events, what: &str, pred: impl Fn(&str, &Value) -> bool) -> Value {
    common::session::expect(rx, Duration::from_secs(30), what, pred).await
}

async fn start_server(bind: SocketAddr) -> rtcio_server::RunningServer {
    rtcio_server::start(rtcio_server::ServerConfig {
        bind,
        ..Default::default()
    })
    .await
    .expect("server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_server_restart_the_old_ids_leave_the_roster() {
    let srv = start_server(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await;
    let addr = srv.local_addr();
    let url = srv.url();
    let (ui_a, mut rx_a) = sink();
    let (a, info_a) = Session::join(config("Ann", "restart", &url), ui_a)
        .await
        .expect("Ann joins");
    let (ui_b, mut rx_b) = sink();
    let (b, info_b) = Session::join(config("Bob", "restart", &url), ui_b)
        .await
        .expect("Bob joins");
    expect(&mut rx_a, "peer-connect", |n, v| {
        n == "peer-connect" && v["id"] == info_b.self_id
    })
    .await;
    expect(&mut rx_b, "peer-connect", |n, v| {
        n == "peer-connect" && v["id"] == info_a.self_id
    })
    .await;

    // The server goes and comes back on the same address without recovery.
    srv.shutdown().await.expect("shutdown");
    let srv = start_server(addr).await;
    let new_b = expect(&mut rx_a, "Bob under a new id", |n, v| {
        n == "room-event"
            && v["type"] == "user-connected"
            && v["name"] == "Bob"
            && v["id"] != info_b.self_id
    })
    .await;
    expect(&mut rx_a, "peer-connect to Bob's new id", |n, v| {
        n == "peer-connect" && v["id"] == new_b["id"]
    })
    .await;
    // Bob's old id leaves Ann's roster once its connection is replaced.
    expect(&mut rx_a, "Bob's old id leaves", |n, v| {
        n == "room-event" && v["type"] == "user-disconnected" && v["id"] == info_b.self_id
    })
    .await;
    expect(&mut rx_b, "Ann's old id leaves", |n, v| {
        n == "room-event" && v["type"] == "user-disconnected" && v["id"] == info_a.self_id
    })
    .await;
    a.leave().await;
    b.leave().await;
    srv.shutdown().await.expect("shutdown");
}
