//! Make-before-break across a signaling restart (proto::handover): when the server comes back
//! without recovery and everyone gets a new socket id, the old peer connections keep carrying
//! media until the new ones do, then close; each side ends with one peer for the other.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::room::{WAIT, connected_to, next, pair, restart_server, server};
use rtcio::{Event, LocalTrack, MediaKind, MediaSample, Socket};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

/// Arrival times of video frames, by the socket id of the connection that carried them.
type Arrivals = Arc<Mutex<Vec<(String, Instant)>>>;

/// A fake H.264 IDR access unit (the assembler only looks at NAL boundaries).
fn access_unit(n: u32) -> Bytes {
    let mut v = vec![0, 0, 0, 1, 0x65, 7];
    v.extend_from_slice(format!("{n:08}").as_bytes());
    v.extend((0..1500u32).map(|i| (i % 251) as u8 | 1));
    Bytes::from(v)
}

/// 50 frames a second until the flag drops (at most five minutes).
fn feed(video: LocalTrack) -> Arc<AtomicBool> {
    let run = Arc::new(AtomicBool::new(true));
    let flag = run.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut n = 0u32;
        while flag.load(Ordering::Relaxed) && n < 15_000 {
            tick.tick().await;
            video
                .write(&MediaSample {
                    data: access_unit(n),
                    duration: Duration::from_millis(20),
                })
                .await;
            n += 1;
        }
    });
    run
}

/// Records every frame of every `camera` stream `rx` delivers (one task per stream, ending
/// with its track).
fn record(mut rx: UnboundedReceiver<Event>) -> Arrivals {
    let arrivals: Arrivals = Arc::default();
    let out = arrivals.clone();
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            let Some(rs) = ev.stream.clone() else {
                continue;
            };
            let Some(track) = rs.track(MediaKind::Video) else {
                continue;
            };
            let (out, peer) = (out.clone(), rs.peer().to_string());
            tokio::spawn(async move {
                while let Some(_f) = track.recv().await {
                    out.lock()
                        .expect("lock")
                        .push((peer.clone(), Instant::now()));
                }
            });
        }
    });
    arrivals
}

fn camera(socket: &Socket, name: &str) -> Arc<AtomicBool> {
    let stream = socket.create_stream();
    let run = feed(stream.add_track(MediaKind::Video));
    socket
        .emit(
            "camera",
            vec![json!({"id": rtcio::SELF_ID, "name": name, "camera": stream.token()})],
        )
        .expect("emit");
    run
}

/// Waits for `peer-disconnect` of `id`.
async fn disconnected(rx: &mut UnboundedReceiver<Event>, id: &str) {
    loop {
        let ev = next(rx, "peer-disconnect of the old connection").await;
        if ev.arg()["id"] == Value::String(id.to_string()) {
            return;
        }
    }
}

/// The longest pause between frames after `from`, and the frames of the old and the new
/// connection.
fn analyse(
    a: &Arrivals,
    old: &str,
    new: &str,
    from: Instant,
) -> (Duration, Vec<Instant>, Vec<Instant>) {
    let list = a.lock().expect("lock").clone();
    let mut all: Vec<Instant> = list
        .iter()
        .map(|(_, t)| *t)
        .filter(|t| *t >= from)
        .collect();
    all.sort();
    let gap = all
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(Duration::MAX);
    let of = |id: &str| -> Vec<Instant> {
        list.iter()
            .filter(|(p, _)| p == id)
            .map(|(_, t)| *t)
            .collect()
    };
    (gap, of(old), of(new))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_keeps_flowing_across_a_signaling_restart() {
    let srv = server().await;
    let (mut a, mut b) = pair(&srv.url(), "handover").await;
    let (on_a, on_b) = (
        record(a.socket.subscribe("camera")),
        record(b.socket.subscribe("camera")),
    );
    let run_a = camera(&a.socket, "alice");
    let run_b = camera(&b.socket, "bob");
    let (old_a, old_b) = (a.socket.id(), b.socket.id());
    // Video flows both ways before the restart.
    let deadline = Instant::now() + WAIT;
    while on_a.lock().expect("lock").is_empty() || on_b.lock().expect("lock").is_empty() {
        assert!(Instant::now() < deadline, "no video before the restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut a_gone = a.socket.subscribe("peer-disconnect");
    let mut b_gone = b.socket.subscribe("peer-disconnect");
    let restart = Instant::now();
    let srv = restart_server(srv, &[&a.socket, &b.socket]).await;
    let (new_a, new_b) = (a.socket.id(), b.socket.id());
    assert_ne!(new_a, old_a);
    assert_ne!(new_b, old_b);
    connected_to(&mut a, std::slice::from_ref(&new_b)).await;
    connected_to(&mut b, std::slice::from_ref(&new_a)).await;
    // The old connections close once the new ones carry media (not before: that was the gap).
    disconnected(&mut a_gone, &old_b).await;
    disconnected(&mut b_gone, &old_a).await;
    let closed = Instant::now();
    assert_eq!(a.socket.peers().await, vec![new_b.clone()]);
    assert_eq!(b.socket.peers().await, vec![new_a.clone()]);
    // Some more video on the new connections only.
    let deadline = Instant::now() + WAIT;
    loop {
        let after = |arr: &Arrivals, id: &str| {
            arr.lock()
                .expect("lock")
                .iter()
                .filter(|(p, t)| p == id && *t > closed)
                .count()
        };
        if after(&on_a, &new_b) >= 25 && after(&on_b, &new_a) >= 25 {
            break;
        }
        assert!(Instant::now() < deadline, "no video on the new connections");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (who, arr, old, new) in [
        ("bob", &on_b, &old_a, &new_a),
        ("alice", &on_a, &old_b, &new_b),
    ] {
        let (gap, old_frames, new_frames) = analyse(arr, old, new, restart);
        let last_old = *old_frames.last().expect("frames on the old connection");
        let first_new = *new_frames.first().expect("frames on the new connection");
        println!(
            "{who}: largest gap between video frames across the restart {gap:?}; old connection carried frames until {:?} after the restart, the new one from {:?}",
            last_old - restart,
            first_new - restart
        );
        // Make-before-break: the old connection still delivered after the new one started.
        assert!(
            last_old > first_new,
            "{who}: the old connection stopped ({:?}) before the new one delivered ({:?})",
            last_old - restart,
            first_new - restart
        );
    }
    run_a.store(false, Ordering::Relaxed);
    run_b.store(false, Ordering::Relaxed);
    a.socket.close().await;
    b.socket.close().await;
    srv.shutdown().await.expect("shutdown");
}
