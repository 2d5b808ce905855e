//! Lip sync on a synthetic Rust→Rust call: the sender's tone marks and test-pattern frame marks
//! share its capture clock, the receiver plays the audio (`--play null`: a 20 ms clock like a
//! speaker) and reports, per mark, how much later the audio played than the video of the same
//! moment was shown (`av_offset_ms`). The receiver's audio jitter buffer is held at 250 ms, so
//! only a video playout that waits for the audio keeps the two within ±45 ms; the reverse
//! (the video playout held at 250 ms) needs the audio to wait for the video. Both tracks'
//! RTCP sender reports reach the receiver, which then syncs from them (`path_offset_ms`).
//!
//! Chromium → Rust: the sender is the browser test peer (`tests/browser/peer.html`) whose
//! camera and microphone are `tests/browser/avsync-source.js`, a canvas and WebAudio carrying
//! the same marks on the page's Unix clock, so the offset is the call's real sync error.

mod common;

use common::browser::Browser;
use common::{Rtcio, join_args, room, server};
use serde_json::json;

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

/// What the receiver reported once settled.
struct Settled {
    /// A/V offsets (ms, audio later when positive).
    offsets: Vec<f64>,
    /// Path offsets from the sender reports (ms), when lip sync had both.
    path_offsets: Vec<f64>,
    /// The extra audio delay at the end (ms).
    audio_extra_ms: f64,
}

/// Runs the call with `env` on the receiver; returns its settled offsets in ms.
async fn offsets(tag: &str, env: &[(&str, &str)]) -> Vec<f64> {
    settle(tag, env).await.offsets
}

/// Who sends the synthetic call.
enum Sender {
    /// The `rtcio` CLI (`--video testsrc --audio tone`).
    Cli,
    /// Chromium: the browser peer with `avsync-source.js` as its camera and microphone.
    Chromium,
}

/// The sender while the call runs (dropped at the end).
enum Running {
    Cli(Rtcio),
    Chromium(Browser),
}

/// Runs the call with `env` on the receiver; returns what it reported once settled.
async fn settle(tag: &str, env: &[(&str, &str)]) -> Settled {
    settle_from(Sender::Cli, tag, env).await
}

/// Starts the Chromium sender in `room` on `url`; returns it and its peer id.
async fn chromium_sender(url: &str, room: &str) -> (Browser, String) {
    let mut br = Browser::start().await;
    let page = br.open("sender").await;
    br.eval(
        page,
        "() => new Promise((res, rej) => { const s = document.createElement('script'); \
         s.src = '/avsync-source.js'; s.onload = () => res(true); \
         s.onerror = () => rej(new Error('avsync-source.js did not load')); document.head.append(s); })",
        json!(null),
    )
    .await;
    let joined = br
        .eval(
            page,
            "(o) => rtcio.join(o.url, o)",
            json!({"url": url, "roomId": room, "name": "sender", "camera": true}),
        )
        .await;
    let id = joined["id"].as_str().expect("page's socket id").to_string();
    (br, id)
}

/// Runs the call from `from` with `env` on the receiver; returns what it reported once settled.
async fn settle_from(from: Sender, tag: &str, env: &[(&str, &str)]) -> Settled {
    let srv = server().await;
    let url = srv.url();
    let r = room(tag);
    let mut b = join_args(&url, &r, "receiver");
    b.extend(["--play", "null"]);
    let mut receiver = Rtcio::spawn_env("receiver", &b, env);
    let (sender, sender_id) = match from {
        Sender::Cli => {
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
            let mut sender = Rtcio::spawn("sender", &s);
            let id = sender.wait_type("joined").await["id"]
                .as_str()
                .expect("id")
                .to_string();
            (Running::Cli(sender), id)
        }
        Sender::Chromium => {
            receiver.wait_type("joined").await;
            let (br, id) = chromium_sender(&url, &r).await;
            (Running::Chromium(br), id)
        }
    };
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
    let settled = &got[WARMUP..];
    let v: Vec<f64> = settled
        .iter()
        .map(|l| l["av_offset_ms"].as_f64().expect("number"))
        .collect();
    let path_offsets = settled
        .iter()
        .filter_map(|l| l["path_offset_ms"].as_f64())
        .collect();
    let audio_extra_ms = settled
        .last()
        .and_then(|l| l["audio_extra_ms"].as_f64())
        .unwrap_or(0.0);
    match sender {
        Running::Cli(s) => drop(s),
        Running::Chromium(br) => br.quit().await,
    }
    drop(receiver);
    srv.shutdown().await.expect("shutdown");
    Settled {
        offsets: v,
        path_offsets,
        audio_extra_ms,
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lip_sync_within_45_ms_with_audio_held_250_ms() {
    let s = settle("lipsync", &[("RTCIO_AUDIO_MIN_DELAY_MS", HOLD_MS)]).await;
    let v = &s.offsets;
    eprintln!(
        "synced offsets (ms, audio later when positive): {v:?}, path offsets {:?}",
        s.path_offsets
    );
    let m = median(v);
    assert!(m.abs() <= BOUND_MS, "median A/V offset {m} ms: {v:?}");
    // Synced from the sender reports, not on the shared-path assumption alone.
    assert!(
        s.path_offsets.len() >= SAMPLES / 2,
        "sender reports reached lip sync in {} of {SAMPLES} seconds",
        s.path_offsets.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_waits_for_video_held_250_ms() {
    // The video playout holds pictures 250 ms; audio plays ~50 ms after arrival unless it
    // waits (without that: about -200 ms, audio early).
    let s = settle(
        "lipsync-audio-waits",
        &[("RTCIO_VIDEO_MIN_DELAY_MS", HOLD_MS)],
    )
    .await;
    let v = &s.offsets;
    eprintln!(
        "offsets with video held (ms): {v:?}, audio extra {} ms",
        s.audio_extra_ms
    );
    let m = median(v);
    assert!(m.abs() <= BOUND_MS, "median A/V offset {m} ms: {v:?}");
    assert!(
        s.audio_extra_ms >= 100.0,
        "audio extra {} ms",
        s.audio_extra_ms
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_to_rust_lip_sync_within_45_ms_with_audio_held_250_ms() {
    // Chromium's sender reports map RTP time to its own clock; the receiver holds its audio
    // 250 ms, so only a video playout that waits for it (from those reports) stays in bounds
    // (without sync: ~+200 ms, audio late; checked with RTCIO_AV_SYNC=off in the environment).
    let s = settle_from(
        Sender::Chromium,
        "lipsync-chromium",
        &[("RTCIO_AUDIO_MIN_DELAY_MS", HOLD_MS)],
    )
    .await;
    let v = &s.offsets;
    eprintln!(
        "Chromium → Rust offsets (ms, audio later when positive): {v:?}, path offsets {:?}",
        s.path_offsets
    );
    let m = median(v);
    assert!(m.abs() <= BOUND_MS, "median A/V offset {m} ms: {v:?}");
    assert!(
        s.path_offsets.len() >= SAMPLES / 2,
        "sender reports reached lip sync in {} of {SAMPLES} seconds",
        s.path_offsets.len()
    );
}
