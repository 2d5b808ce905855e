//! Lip sync on a synthetic Rust→Rust call: the sender's tone marks and test-pattern frame marks
//! share its capture clock, the receiver plays the audio (`--play null`: a 20 ms clock like a
//! speaker) and reports, per mark, how much later the audio played than the video of the same
//! moment was shown (`av_offset_ms`). The receiver's audio jitter buffer is held at 250 ms, so
//! only a video playout that waits for the audio keeps the two within ±45 ms.

mod common;

use common::{Rtcio, join_args, room, server};

/// The receiver's audio jitter buffer is held this long: well above the video's own jitter
/// delay even on a loaded machine (hiccups raise it for seconds), so without sync the audio
/// plays clearly late and with it the video waits (within the 300 ms playout maximum).
const HOLD_MS: &str = "250";
/// The bound of issue 13 (and of ITU-R BT.1359's detectability threshold for audio late).
const BOUND_MS: f64 = 45.0;
/// Offsets read after the call settled (one per second: the tone marks once a second).
const SAMPLES: usize = 6;
/// Seconds left for the jitter buffers and playout statistics to settle first (a delay raised
/// by a start-up hiccup decays at 50 ms/s).
const WARMUP: usize = 5;

/// Runs the call with `env` on the receiver; returns its settled offsets in ms.
async fn offsets(tag: &str, env: &[(&str, &str)]) -> Vec<f64> {
    let srv = server().await;
    let url = srv.url();
    let r = room(tag);
    let mut s = join_args(&url, &r, "sender");
    s.extend([
        "--video",
        "testsrc",
        "--video-size",
        "320x180",
        "--fps",
        "30",
        "--audio",
        "tone",
    ]);
    let mut b = join_args(&url, &r, "receiver");
    b.extend(["--play", "null"]);
    let mut sender = Rtcio::spawn("sender", &s);
    let mut receiver = Rtcio::spawn_env("receiver", &b, env);
    let sender_id = sender.wait_type("joined").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut got = Vec::new();
    for _ in 0..WARMUP + SAMPLES {
        let line = receiver
            .wait_for("an audio/video offset", |v| {
                v["type"] == "audio-stats"
                    && v["peer"] == sender_id.as_str()
                    && v["av_offset_ms"].is_number()
            })
            .await;
        got.push(line);
    }
    let v: Vec<f64> = got[WARMUP..]
        .iter()
        .map(|l| l["av_offset_ms"].as_f64().expect("number"))
        .collect();
    drop(sender);
    drop(receiver);
    srv.shutdown().await.expect("shutdown");
    v
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lip_sync_within_45_ms_with_audio_held_250_ms() {
    let v = offsets("lipsync", &[("RTCIO_AUDIO_MIN_DELAY_MS", HOLD_MS)]).await;
    eprintln!("synced offsets (ms, audio later when positive): {v:?}");
    let m = median(&v);
    assert!(m.abs() <= BOUND_MS, "median A/V offset {m} ms: {v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sync_the_same_call_is_out_of_bounds() {
    // The measurement can fail: with video shown on its own jitter delay only, the audio held
    // 250 ms plays well over 45 ms after the picture.
    let v = offsets(
        "lipsync-off",
        &[
            ("RTCIO_AUDIO_MIN_DELAY_MS", HOLD_MS),
            ("RTCIO_AV_SYNC", "off"),
        ],
    )
    .await;
    eprintln!("unsynced offsets (ms): {v:?}");
    let m = median(&v);
    assert!(m > BOUND_MS, "median A/V offset {m} ms: {v:?}");
}
