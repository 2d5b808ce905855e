//! Device switching mid-call (`--control-stdin`): the CLI sender swaps its camera source on
//! the track it already sends (no renegotiation), and the Rust receiver goes on decoding the
//! same stream and sees the new picture (the green test pattern's chroma).

mod common;

use common::{Rtcio, join_args, room, server};
use serde_json::Value;

/// Mean chroma of the colour-bar pattern is ~128; the green one is ~65 / ~53 (U / V).
fn is_green(v: &Value) -> bool {
    v["chroma_u"].as_f64().is_some_and(|u| u < 80.0)
        && v["chroma_v"].as_f64().is_some_and(|c| c < 70.0)
}

fn is_bars(v: &Value) -> bool {
    v["chroma_u"].as_f64().is_some_and(|u| u > 110.0)
        && v["chroma_v"].as_f64().is_some_and(|c| c > 110.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_switch_keeps_the_stream_and_shows_the_new_picture() {
    let srv = server().await;
    let url = srv.url();
    let r = room("devswitch");
    let mut s = join_args(&url, &r, "sender");
    s.extend([
        "--video",
        "testsrc",
        "--video-size",
        "320x180",
        "--fps",
        "15",
        "--video-bitrate",
        "300",
        "--control-stdin",
    ]);
    let mut b = join_args(&url, &r, "receiver");
    b.extend(["--play", "null", "--control-stdin"]);
    let mut sender = Rtcio::spawn("sender", &s);
    let mut receiver = Rtcio::spawn("receiver", &b);
    let sender_id = sender.wait_type("joined").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let stream = receiver
        .wait_for("the sender's stream", |v| {
            v["type"] == "stream" && v["peer"] == sender_id.as_str()
        })
        .await["stream"]
        .as_str()
        .expect("stream id")
        .to_string();
    let from_sender = |v: &Value| {
        v["type"] == "video-stats" && v["peer"] == sender_id.as_str() && v["stream"] == stream
    };
    let before = receiver
        .wait_for("the colour bars decoded", |v| from_sender(v) && is_bars(v))
        .await;

    // Unknown ids and a speaker without --play are errors; the call goes on.
    sender.send_line("camera nosuchcam").await;
    let e = sender.wait_type("control-error").await;
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains("unknown camera")),
        "{e}"
    );
    sender.send_line("speaker default").await;
    let e = sender.wait_type("control-error").await;
    assert!(
        e["error"].as_str().is_some_and(|m| m.contains("--play")),
        "{e}"
    );

    sender.send_line("camera testsrc-green").await;
    let done = sender.wait_type("device").await;
    assert_eq!(done["kind"], "camera", "{done}");
    assert!(
        done["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("testsrc-green")),
        "{done}"
    );
    let after = receiver
        .wait_for("the green pattern decoded on the same stream", |v| {
            from_sender(v) && is_green(v)
        })
        .await;
    eprintln!(
        "before: chroma {} {}, after: chroma {} {}",
        before["chroma_u"], before["chroma_v"], after["chroma_u"], after["chroma_v"]
    );
    let decoded = |v: &Value| v["frames_decoded"].as_u64().unwrap_or(0);
    assert!(decoded(&after) > decoded(&before), "{before} → {after}");
    // Later seconds still decode (no stall after the switch).
    let later = receiver
        .wait_for("frames after the switch", |v| {
            from_sender(v) && decoded(v) > decoded(&after)
        })
        .await;
    assert!(is_green(&later), "{later}");

    // The receiver's speaker switches (to another null sink here: no sound card).
    receiver.send_line("speaker null").await;
    let done = receiver.wait_type("device").await;
    assert_eq!(done["kind"], "speaker", "{done}");
    // A track that is not sent cannot switch.
    sender.send_line("mic tone").await;
    let e = sender.wait_type("control-error").await;
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains("no audio track")),
        "{e}"
    );

    // No second stream: the same track carried the new source.
    assert_eq!(
        receiver
            .seen
            .iter()
            .filter(|v| v["type"] == "stream" && v["peer"] == sender_id.as_str())
            .count(),
        1
    );
    drop(sender);
    drop(receiver);
    srv.shutdown().await.expect("shutdown");
}
