//! A session without a window: the UI stand-in every event goes to, a loopback join config and
//! the event waiter the session tests share.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rtcio_desktop::session::{JoinConfig, ServerChoice, UiSink};
use serde_json::Value;
use tokio::sync::mpsc;

/// What the session emitted to the window, in order.
pub type Events = mpsc::UnboundedReceiver<(String, Value)>;

/// A UI stand-in: every event the session would emit to the window.
pub fn sink() -> (UiSink, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sink: UiSink = Arc::new(move |name: &str, payload: Value| {
        let _ = tx.send((name.to_string(), payload));
    });
    (sink, rx)
}

/// Joins `room` as `name` on loopback only, failing fast when the server is not there.
pub fn config(name: &str, room: &str, server: ServerChoice) -> JoinConfig {
    let mut cfg = JoinConfig::new(name, room, server);
    cfg.socket = rtcio::Options::loopback();
    cfg.socket.connect_timeout = Duration::from_secs(5);
    cfg.host_bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    cfg
}

/// Waits up to `wait` for the first event matching `pred`, skipping others.
pub async fn expect(
    rx: &mut Events,
    wait: Duration,
    what: &str,
    pred: impl Fn(&str, &Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((name, payload))) if pred(&name, &payload) => return payload,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("sink closed while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}
