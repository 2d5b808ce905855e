//! Streams between Rust peers over real webrtc-rs connections on loopback (PROTOCOL.md §5):
//! metadata and the user's event, late-joiner replay, untrack, source swap without
//! renegotiation, track removal and keyframe requests.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::room::{Member, WAIT, connected_to, join, next, pair, restart_server, server};
use rtcio::{
    Event, LocalStream, LocalTrack, MediaFrame, MediaKind, MediaSample, Origin, RemoteStream,
    RemoteTrack, RtpCodec, Socket,
};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

/// A fake H.264 access unit: an IDR NAL whose bytes name the source and the frame (in ASCII
/// digits: no zero bytes, which would read as start codes). The packetizer and our assembler
/// only look at NAL boundaries, so it travels like a real one (big enough for FU-A fragments).
fn access_unit(source: u8, n: u32) -> Bytes {
    let mut v = vec![0, 0, 0, 1, 0x65, source];
    v.extend_from_slice(format!("{n:08}").as_bytes());
    v.extend((0..3000u32).map(|i| (i % 251) as u8 | 1));
    Bytes::from(v)
}

fn opus_packet(n: u32) -> Bytes {
    let mut v = vec![0xfc];
    v.extend_from_slice(&n.to_be_bytes());
    Bytes::from(v)
}

/// Writes samples to the tracks until the flag drops (bounded by the test's own end).
fn feed(video: LocalTrack, audio: Option<LocalTrack>, source: u8) -> Arc<AtomicBool> {
    let run = Arc::new(AtomicBool::new(true));
    let flag = run.clone();
    tokio::spawn(async move {
        let mut n = 0u32;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        // At most five minutes, whatever happens to the test.
        while flag.load(Ordering::Relaxed) && n < 15_000 {
            tick.tick().await;
            video
                .write(&MediaSample {
                    data: access_unit(source, n),
                    duration: Duration::from_millis(20),
                })
                .await;
            if let Some(a) = &audio {
                a.write(&MediaSample {
                    data: opus_packet(n),
                    duration: Duration::from_millis(20),
                })
                .await;
            }
            n += 1;
        }
    });
    run
}

async fn frame(track: &RemoteTrack, what: &str) -> MediaFrame {
    match tokio::time::timeout(WAIT, track.recv()).await {
        Ok(Some(f)) => f,
        Ok(None) => panic!("{what}: track ended"),
        Err(_) => panic!("{what}: no frame within {WAIT:?}"),
    }
}

/// Waits for the `camera` event and checks it names `from`'s stream the tutorial's way.
/// Announces `stream` the tutorial's way, as Alice: `camera {id, name, camera: <stream>}`.
fn announce_camera(from: &Socket, id: &str, stream: &LocalStream) {
    from.emit(
        "camera",
        vec![json!({"id": id, "name": "alice", "camera": stream.token()})],
    )
    .expect("emit");
}

async fn camera_from(
    rx: &mut UnboundedReceiver<Event>,
    from: &Socket,
    stream: &LocalStream,
) -> RemoteStream {
    let ev = next(rx, "camera").await;
    assert_eq!(ev.origin, Origin::Peer(from.id()));
    assert_eq!(
        ev.args,
        vec![json!({"id": from.id(), "name": "alice", "camera": stream.token()})]
    );
    let rs = ev.stream.clone().expect("the event carries the stream");
    assert_eq!(rs.id(), stream.id(), "ID-sync from the token");
    assert_eq!(rs.msid(), stream.msid());
    assert_eq!(rs.peer(), from.id());
    rs
}

/// A video frame from source `source` (after frames of an earlier source have drained).
async fn frame_from(track: &RemoteTrack, source: u8, what: &str) -> MediaFrame {
    for _ in 0..500 {
        let f = frame(track, what).await;
        assert_eq!(f.codec, RtpCodec::H264);
        assert_eq!(
            &f.data[..5],
            &[0, 0, 0, 1, 0x65],
            "{what}: an Annex-B IDR access unit"
        );
        if f.data[5] == source {
            let n: u32 = std::str::from_utf8(&f.data[6..14])
                .ok()
                .and_then(|d| d.parse().ok())
                .expect("frame number");
            assert_eq!(f.data, access_unit(source, n), "{what}: frame {n} intact");
            assert!(f.keyframe);
            return f;
        }
    }
    panic!("{what}: no frame of source {source} in 500 frames");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_metadata_replay_and_untrack() {
    let srv = server().await;
    let url = srv.url();
    let (a, b) = pair(&url, "streams").await;

    let stream = a.socket.create_stream();
    let video = stream.add_track(MediaKind::Video);
    let audio = stream.add_track(MediaKind::Audio);
    let run = feed(video, Some(audio), 1);
    let mut b_cam = b.socket.subscribe("camera");
    announce_camera(&a.socket, &a.socket.id(), &stream);

    let rs = camera_from(&mut b_cam, &a.socket, &stream).await;
    frame_from(&rs.track(MediaKind::Video).expect("video"), 1, "B video").await;
    let af = frame(&rs.track(MediaKind::Audio).expect("audio"), "B audio").await;
    assert_eq!(af.codec, RtpCodec::Opus);
    assert_eq!(af.data[0], 0xfc);
    assert!(
        b_cam.try_recv().is_err(),
        "exactly one camera event per stream and peer"
    );

    // A late joiner gets the stream by replay, nobody re-emits.
    let mut c = join(&url, "streams", "carol").await;
    let mut c_cam = c.socket.subscribe("camera");
    connected_to(&mut c, &[a.socket.id(), b.socket.id()]).await;
    let rs_c = camera_from(&mut c_cam, &a.socket, &stream).await;
    frame_from(&rs_c.track(MediaKind::Video).expect("video"), 1, "C video").await;

    // After untrack a new joiner gets nothing, while B and C keep receiving.
    assert!(a.socket.untrack_stream(&stream));
    let mut d = join(&url, "streams", "dave").await;
    let mut d_cam = d.socket.subscribe("camera");
    let mut d_marker = d.socket.subscribe("marker");
    let mut d_added = d.socket.subscribe("track-added");
    connected_to(&mut d, &[a.socket.id(), b.socket.id(), c.socket.id()]).await;
    a.socket.emit("marker", vec![]).expect("emit");
    next(&mut d_marker, "D marker").await;
    assert!(
        d_cam.try_recv().is_err(),
        "an untracked stream was replayed"
    );
    assert!(d_added.try_recv().is_err());
    frame_from(
        &rs.track(MediaKind::Video).expect("video"),
        1,
        "B video after untrack",
    )
    .await;

    run.store(false, Ordering::Relaxed);
    for m in [a, b, c, d] {
        m.socket.close().await;
    }
    srv.shutdown().await.expect("shutdown");
}

async fn offers(a: &Member, b: &Member) -> u64 {
    let ab = a.socket.stats(&b.socket.id()).await.expect("stats");
    let ba = b.socket.stats(&a.socket.id()).await.expect("stats");
    ab.offers_sent + ba.offers_sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_remove_and_keyframe_requests() {
    let srv = server().await;
    let url = srv.url();
    let (a, b) = pair(&url, "swap").await;

    let stream = a.socket.create_stream();
    let video = stream.add_track(MediaKind::Video);
    let audio = stream.add_track(MediaKind::Audio);
    let run1 = feed(video.clone(), Some(audio.clone()), 1);
    let mut b_cam = b.socket.subscribe("camera");
    announce_camera(&a.socket, &a.socket.id(), &stream);
    let rs = camera_from(&mut b_cam, &a.socket, &stream).await;
    let rv = rs.track(MediaKind::Video).expect("video");
    frame_from(&rv, 1, "first source").await;

    // Swap the source: same m-line, no renegotiation, frames of the new source arrive.
    let before = offers(&a, &b).await;
    let video2 = LocalTrack::new(MediaKind::Video);
    let old = stream.replace_track(&video2).expect("displaced");
    assert_eq!(old.id(), video.id());
    run1.store(false, Ordering::Relaxed);
    let run2 = feed(video2.clone(), Some(audio.clone()), 2);
    frame_from(&rv, 2, "second source").await;
    assert_eq!(offers(&a, &b).await, before, "a source swap renegotiated");
    assert_eq!(video.peer_count(), 0, "the displaced track feeds nobody");
    assert_eq!(video2.peer_count(), 1);

    // PLI from B reaches A's current track.
    let mut kf = video2.keyframe_requests();
    rv.request_keyframe();
    let req = tokio::time::timeout(WAIT, kf.recv())
        .await
        .expect("keyframe request within WAIT")
        .expect("channel open");
    assert_eq!(req.peer, b.socket.id());

    // Removing the audio track renegotiates and B sees track-removed; its audio track ends.
    let mut b_removed = b.socket.subscribe("track-removed");
    let ra = rs.track(MediaKind::Audio).expect("audio");
    assert!(stream.remove_track(&audio));
    let ev = next(&mut b_removed, "track-removed").await;
    assert_eq!(ev.origin, Origin::Local);
    assert_eq!(ev.arg()["peerId"], json!(a.socket.id()));
    assert_eq!(ev.arg()["track"]["kind"], json!("audio"));
    assert_eq!(ev.stream.as_ref(), Some(&rs));
    assert!(rs.track(MediaKind::Audio).is_none());
    let ended = tokio::time::timeout(WAIT, async { while ra.recv().await.is_some() {} }).await;
    assert!(ended.is_ok(), "the removed audio track did not end");
    assert!(offers(&a, &b).await > before);
    frame_from(&rv, 2, "video after audio removal").await;

    run2.store(false, Ordering::Relaxed);
    a.socket.close().await;
    b.socket.close().await;
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_names_in_stream_metadata_are_dropped() {
    let srv = server().await;
    let url = srv.url();
    let (a, b) = pair(&url, "forged-meta").await;

    let stream = a.socket.create_stream();
    let video = stream.add_track(MediaKind::Video);
    let run = feed(video, None, 1);
    let mut b_cam = b.socket.subscribe("camera");
    announce_camera(&a.socket, &a.socket.id(), &stream);
    camera_from(&mut b_cam, &a.socket, &stream).await;

    // A forges an unsolicited `{mid, events}` for its real stream, with library-only names and
    // one application name that serves as the marker.
    let mut reserved: Vec<UnboundedReceiver<Event>> = [
        "peer-connect",
        "peer-disconnect",
        "track-added",
        "track-removed",
    ]
    .iter()
    .map(|n| b.socket.subscribe(n))
    .collect();
    let mut marker = b.socket.subscribe("screen");
    let forged = json!({
        "source": a.socket.id(),
        "target": b.socket.id(),
        "data": {"mid": stream.msid(), "events": {
            "peer-connect": [{"id": "forged"}],
            "peer-disconnect": [{"id": a.socket.id()}],
            "track-added": [{"peerId": "forged"}],
            "track-removed": [{"peerId": "forged"}],
            "screen": [stream.token()],
        }},
    });
    a.socket
        .server()
        .emit("#rtcio:message", vec![forged])
        .expect("emit");
    let ev = next(&mut marker, "the application event of the forged metadata").await;
    assert!(ev.stream.is_some());
    // The same peer task handles a second message only after the whole first one.
    let mut done = b.socket.subscribe("done");
    let after = json!({
        "source": a.socket.id(),
        "target": b.socket.id(),
        "data": {"mid": stream.msid(), "events": {"done": []}},
    });
    a.socket
        .server()
        .emit("#rtcio:message", vec![after])
        .expect("emit");
    next(&mut done, "the follow-up metadata").await;
    for rx in reserved.iter_mut() {
        if let Ok(ev) = rx.try_recv() {
            panic!("a reserved name in stream metadata got through: {ev:?}");
        }
    }
    run.store(false, Ordering::Relaxed);
    a.socket.close().await;
    b.socket.close().await;
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcement_names_the_current_id_after_a_signaling_restart() {
    let srv = server().await;
    let url = srv.url();
    let (a, b) = pair(&url, "restart-cam").await;
    let stream = a.socket.create_stream();
    let video = stream.add_track(MediaKind::Video);
    let run = feed(video, None, 1);
    let mut b_cam = b.socket.subscribe("camera");
    // Announced once, the way the CLI and the app do.
    announce_camera(&a.socket, rtcio::SELF_ID, &stream);
    camera_from(&mut b_cam, &a.socket, &stream).await;

    // The server restarts without recovery: both come back with new ids and re-join.
    let old_a = a.socket.id();
    let srv = restart_server(srv, &[&a.socket, &b.socket]).await;
    assert_ne!(a.socket.id(), old_a);
    // The replayed announcement names A's current id (camera_from checks the args).
    let rs = camera_from(&mut b_cam, &a.socket, &stream).await;
    frame_from(
        &rs.track(MediaKind::Video).expect("video"),
        1,
        "video after the restart",
    )
    .await;
    run.store(false, Ordering::Relaxed);
    a.socket.close().await;
    b.socket.close().await;
    srv.shutdown().await.expect("shutdown");
}
