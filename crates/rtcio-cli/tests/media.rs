//! Media through the `rtcio` binary: synthetic video and tone between processes, decoding on
//! both sides, recordings that our decoders read back, latency and mesh measurements.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use rtcio_media::file::h264::split_access_units;
use rtcio_media::file::ogg_opus::OggOpusSource;
use rtcio_media::synthetic::video::read_marker;
use rtcio_media::{EncodedSource, H264Decoder, MediaError, OpusDecoder};
use serde_json::Value;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rtcio-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn media_args<'a>(url: &'a str, room: &'a str, name: &'a str, record: &'a str) -> Vec<&'a str> {
    let mut v = small_media_args(url, room, name);
    v.extend(["--record", record]);
    v
}

/// Waits until `p` reports decoded video of the expected size from `from`.
async fn decoded_video_from(p: &mut Rtcio, from: &str) -> Value {
    p.wait_for("video-stats with decoded frames", |v| {
        v["type"] == "video-stats"
            && v["peer"] == from
            && v["frames_decoded"].as_u64().unwrap_or(0) >= 10
            && v["width"] == 320
            && v["height"] == 180
    })
    .await
}

/// Decodes a recorded raw H.264 file; returns (pictures, width, height, pictures with marks).
fn decode_h264_file(path: &Path) -> (usize, u32, u32, usize) {
    let data = std::fs::read(path).expect("read .h264");
    let mut dec = H264Decoder::new().expect("decoder");
    let (mut n, mut w, mut h, mut marked) = (0, 0, 0, 0);
    for (i, au) in split_access_units(&data).iter().enumerate() {
        if let Ok(Some(pic)) = dec.decode(au, (i as u32).wrapping_mul(6000)) {
            n += 1;
            w = pic.width;
            h = pic.height;
            marked += usize::from(read_marker(&pic).is_some());
        }
    }
    (n, w, h, marked)
}

/// Decodes a recorded Ogg Opus file; returns the packets decoded.
fn decode_opus_file(path: &Path) -> usize {
    let mut src = OggOpusSource::open(path, false, false).expect("open .opus");
    let mut dec = OpusDecoder::new(u16::from(src.channels())).expect("decoder");
    let mut n = 0;
    loop {
        match src.next_frame() {
            Ok(f) => {
                dec.decode(&f.data, f.timestamp).expect("decodes");
                n += 1;
            }
            Err(MediaError::EndOfStream) => break,
            Err(e) => panic!("reading {}: {e}", path.display()),
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_media_decodes_on_both_sides_and_records() {
    let srv = server().await;
    let url = srv.url();
    let r = room("media");
    let (dir_a, dir_b) = (temp_dir("rec-a"), temp_dir("rec-b"));
    let (da, db) = (dir_a.display().to_string(), dir_b.display().to_string());

    let mut a = Rtcio::spawn("alice", &media_args(&url, &r, "alice", &da));
    let a_id = a.wait_type("joined").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut b = Rtcio::spawn("bob", &media_args(&url, &r, "bob", &db));
    let b_id = b.wait_type("joined").await["id"]
        .as_str()
        .expect("id")
        .to_string();

    // Each announces its camera the demo's way; the other gets it as a `stream` line.
    for (p, from, from_name) in [(&mut a, &b_id, "bob"), (&mut b, &a_id, "alice")] {
        let st = p
            .wait_for("stream", |v| {
                v["type"] == "stream" && v["peer"] == from.as_str()
            })
            .await;
        assert_eq!(st["event"], "camera");
        assert_eq!(st["name"], from_name);
        let arg = &st["args"][0];
        assert_eq!(arg["id"], from.as_str());
        assert_eq!(arg["name"], from_name);
        assert!(
            arg["camera"]
                .as_str()
                .is_some_and(|t| t.starts_with("[RTCIOStream] ")),
            "{arg}"
        );
        let kinds: Vec<&str> = st["tracks"]
            .as_array()
            .expect("tracks")
            .iter()
            .filter_map(|t| t["kind"].as_str())
            .collect();
        assert!(kinds.contains(&"video") && kinds.contains(&"audio"), "{st}");
    }

    // Video decodes at the sent size on both sides; audio decodes too.
    for (p, from) in [(&mut a, &b_id), (&mut b, &a_id)] {
        let vs = decoded_video_from(p, from).await;
        assert_eq!(vs["codec"], "H264");
        assert!(vs["fps"].as_f64().expect("fps") > 0.0, "{vs}");
        assert!(
            vs.get("latency_ms").is_some(),
            "testsrc frame marks read: {vs}"
        );
        let au = p
            .wait_for("audio-stats", |v| {
                v["type"] == "audio-stats"
                    && v["peer"] == from.as_str()
                    && v["decoded"].as_u64().unwrap_or(0) >= 25
            })
            .await;
        assert_eq!(au["codec"], "opus");
        assert!(
            au["level_dbfs"].as_f64().expect("level") > -40.0,
            "tone heard: {au}"
        );
        let ss = p
            .seen_or_wait("send-stats video", |v| {
                v["type"] == "send-stats" && v["kind"] == "video" && v["peers"] == 1
            })
            .await;
        assert!(ss["encoded"].as_u64().expect("encoded") > 0);
        assert_eq!(ss["width"], 320);
    }
    // Both record lines (video and audio) were printed.
    for p in [&mut a, &mut b] {
        for kind in ["video", "audio"] {
            p.seen_or_wait("record line", |v| {
                v["type"] == "record" && v["kind"] == kind
            })
            .await;
        }
    }

    // Leaving finishes the recordings.
    a.terminate();
    b.terminate();
    assert_eq!(a.exit_code().await, 0);
    assert_eq!(b.exit_code().await, 0);
    for (p, dir) in [(&a, &dir_a), (&b, &dir_b)] {
        let recs = p.seen_type("record");
        let video = recs
            .iter()
            .find(|v| v["kind"] == "video")
            .and_then(|v| v["path"].as_str())
            .expect("video recording");
        let audio = recs
            .iter()
            .find(|v| v["kind"] == "audio")
            .and_then(|v| v["path"].as_str())
            .expect("audio recording");
        assert!(Path::new(video).starts_with(dir), "{video}");
        assert!(video.ends_with(".h264") && audio.ends_with(".opus"));
        let (n, w, h, marked) = decode_h264_file(Path::new(video));
        assert!(n >= 10, "{video}: only {n} pictures decoded");
        assert_eq!((w, h), (320, 180));
        assert!(marked * 2 >= n, "{video}: frame marks in {marked} of {n}");
        let packets = decode_opus_file(Path::new(audio));
        assert!(packets >= 25, "{audio}: only {packets} packets");
    }
    let _ = std::fs::remove_dir_all(&dir_a);
    let _ = std::fs::remove_dir_all(&dir_b);
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_of_a_remote_testsrc() {
    let srv = server().await;
    let url = srv.url();
    let r = room("lat");
    let mut sender_args = join_args(&url, &r, "sender");
    sender_args.extend([
        "--video",
        "testsrc",
        "--video-size",
        "320x180",
        "--fps",
        "20",
    ]);
    let mut sender = Rtcio::spawn("sender", &sender_args);
    let sender_id = sender.wait_type("joined").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut lat = Rtcio::spawn(
        "latency",
        &[
            "latency",
            "--json",
            "--loopback",
            "--server",
            &url,
            "--room",
            &r,
            "--duration",
            "4",
        ],
    );
    assert_eq!(lat.exit_code().await, 0);
    let reports = lat.seen_type("latency");
    assert_eq!(reports.len(), 1, "{:?}", lat.seen);
    let rep = reports[0];
    assert_eq!(rep["peer"], sender_id.as_str());
    assert_eq!(rep["name"], "sender");
    let (p50, p95, p99) = (
        rep["p50_ms"].as_f64().expect("p50"),
        rep["p95_ms"].as_f64().expect("p95"),
        rep["p99_ms"].as_f64().expect("p99"),
    );
    assert!(
        p50 > 0.0 && p50 <= p95 && p95 <= p99 && p99 < 5000.0,
        "{rep}"
    );
    assert!(rep["samples"].as_u64().expect("samples") >= 10, "{rep}");
    assert!(rep["fps"].as_f64().expect("fps") > 5.0, "{rep}");
    sender.terminate();
    assert_eq!(sender.exit_code().await, 0);

    // Nobody sending marked video: exit 9.
    let mut lonely = Rtcio::spawn(
        "latency-alone",
        &[
            "latency",
            "--json",
            "--loopback",
            "--server",
            &url,
            "--room",
            "empty",
            "--duration",
            "0.5",
        ],
    );
    assert_eq!(lonely.exit_code().await, 9);
    assert_eq!(lonely.seen_type("error")[0]["reason"], "no-marked-video");
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_of_three_reports_cpu_and_encodes() {
    let mut m = Rtcio::spawn(
        "mesh",
        &[
            "mesh",
            "--json",
            "--peers",
            "3",
            "--duration",
            "3",
            "--video-size",
            "160x90",
            "--fps",
            "15",
            "--video-bitrate",
            "150",
        ],
    );
    assert_eq!(m.exit_code().await, 0);
    let peers = m.seen_type("mesh-peer");
    assert_eq!(peers.len(), 3, "{:?}", m.seen);
    for p in &peers {
        assert_eq!(p["peers_connected"], 2, "{p}");
        assert!(p["cpu_percent"].as_f64().expect("cpu") > 0.0, "{p}");
        assert!(p["encodes_per_s"].as_f64().expect("enc") > 5.0, "{p}");
        assert!(
            p["audio_packets_per_s"].as_f64().expect("audio") > 20.0,
            "{p}"
        );
        assert_eq!(
            p["decoded_fps"].as_object().expect("per remote").len(),
            2,
            "{p}"
        );
        assert!(p["decoded_fps_total"].as_f64().expect("fps") > 10.0, "{p}");
    }
    let summary = m.seen_type("mesh");
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0]["peers"], 3);
    assert!(summary[0]["setup_ms"].as_u64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_media_file_exits_7_before_connecting() {
    // The server is unreachable too: the media error comes first (exit 7, not 3).
    let mut args = join_args("http://127.0.0.1:9", "r", "x");
    args.extend(["--video", "/nonexistent/clip.y4m"]);
    let mut p = Rtcio::spawn("no-file", &args);
    assert_eq!(p.exit_code().await, 7);
    let err = p.seen_type("error");
    assert_eq!(err[0]["reason"], "media");
    assert!(
        err[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("/nonexistent/clip.y4m")),
        "{:?}",
        err[0]
    );
    let mut args = join_args("http://127.0.0.1:9", "r", "x");
    args.extend(["--audio", "clip.mp3"]);
    let mut p = Rtcio::spawn("bad-type", &args);
    assert_eq!(p.exit_code().await, 7);
    assert!(
        p.stderr().contains("unsupported audio file type"),
        "{}",
        p.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_mixes_remote_audio_for_an_output() {
    let server = server().await;
    let url = server.url();
    let r = room("play");
    let mut a = join_args(&url, &r, "alice");
    a.extend(["--audio", "tone"]);
    let mut b = join_args(&url, &r, "bob");
    // The null sink: mixed and pulled every 20 ms like a speaker, without a sound card.
    b.extend(["--play", "null"]);
    let mut alice = Rtcio::spawn("alice", &a);
    let mut bob = Rtcio::spawn("bob", &b);
    let playout = bob.wait_type("playout").await;
    assert_eq!(playout["null"], true, "{playout}");
    let joined = alice.wait_type("joined").await;
    let alice_id = joined["id"].as_str().expect("id").to_string();
    // The tone (about −15 dBFS) is what bob's playout mixes for alice's track.
    let line = bob
        .wait_for("alice's tone being played", |v| {
            v["type"] == "audio-stats"
                && v["peer"] == alice_id.as_str()
                && v["playing_dbfs"].as_f64().is_some_and(|db| db > -30.0)
        })
        .await;
    assert!(line["playing_dbfs"].as_f64() <= Some(0.0), "{line}");
    // Without --play there is no playout and no such field.
    let plain = alice.seen.iter().any(|v| v["type"] == "playout");
    assert!(!plain, "alice plays nothing");
    drop(alice);
    drop(bob);
    server.shutdown().await.expect("shutdown");
}
