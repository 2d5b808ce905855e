//! Per-peer quality end to end without a window: two sessions on the embedded server
//! (loopback) send the synthetic test pattern + tone, and each gets `peer-quality` events for
//! the other with the documented fields, a measured RTT and incoming bits once media flows.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rtcio_desktop::media::MediaConfig;
use rtcio_desktop::session::{JoinConfig, ServerChoice, Session, UiSink};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

type Events = mpsc::UnboundedReceiver<(String, Value)>;

fn sink() -> (UiSink, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    let ui: UiSink = Arc::new(move |name: &str, payload: Value| {
        let _ = tx.send((name.to_string(), payload));
    });
    (ui, rx)
}

fn config(name: &str, server: ServerChoice) -> JoinConfig {
    let mut cfg = JoinConfig::new(name, "quality-room", server);
    cfg.socket = rtcio::Options::loopback();
    cfg.socket.connect_timeout = Duration::from_secs(5);
    cfg.host_bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    cfg.media = MediaConfig::synthetic();
    cfg
}

const WAIT: Duration = Duration::from_secs(30);

/// Waits for a `peer-quality` event about `peer` with media flowing in and an RTT measured.
async fn flowing_quality(rx: &mut Events, peer: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    // The last report about `peer`, for the failure message.
    let mut last = Value::Null;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((name, v))) if name == "peer-quality" && v["id"] == peer => {
                // Every event, early ones too, has the documented shape and sane numbers.
                for k in ["kbpsIn", "kbpsOut", "lossPct"] {
                    let x = v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
                    assert!(x.is_finite() && x >= 0.0, "{k} = {x}");
                }
                assert!(v["lossPct"].as_f64() <= Some(100.0), "{v}");
                assert!(
                    ["good", "fair", "poor"].contains(&v["level"].as_str().unwrap_or("")),
                    "{v}"
                );
                let rtt = v["rttMs"].as_f64();
                if let Some(r) = rtt {
                    assert!(r >= 0.0, "{v}");
                }
                if rtt.is_some() && v["kbpsIn"].as_f64() > Some(0.0) {
                    return v;
                }
                last = v;
            }
            Ok(Some(_)) => continue,
            Ok(None) => panic!("sink closed"),
            Err(_) => panic!(
                "no peer-quality with media flowing for {peer} within {WAIT:?}; last: {last}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_side_reports_the_others_quality() {
    // `RUST_LOG=...` shows the sessions' logs when this fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (ui_a, mut ev_a) = sink();
    let (a, info_a) = Session::join(config("Ann", ServerChoice::Host), ui_a)
        .await
        .expect("host joins");
    let url = info_a.share_urls[0].clone();
    let (ui_b, mut ev_b) = sink();
    let (b, info_b) = Session::join(config("Bob", ServerChoice::Url(url)), ui_b)
        .await
        .expect("guest joins");

    let at_a = flowing_quality(&mut ev_a, &info_b.self_id).await;
    let at_b = flowing_quality(&mut ev_b, &info_a.self_id).await;
    // Both send video and audio: each side's outgoing rate shows too.
    assert!(at_a["kbpsOut"].as_f64() > Some(0.0), "{at_a}");
    assert!(at_b["kbpsOut"].as_f64() > Some(0.0), "{at_b}");
    // The indicator's link estimate (congestion control toward that peer, 100 kbit/s at
    // least) and the path: loopback host candidates, so direct.
    for v in [&at_a, &at_b] {
        let est = v["estimateKbps"].as_f64();
        assert!(est.is_some_and(|e| e >= 100.0 && e.is_finite()), "{v}");
        assert_eq!(v["path"], "direct", "{v}");
    }

    b.leave().await;
    a.leave().await;
}
