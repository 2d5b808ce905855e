//! Single-encode fan-out with the real H.264 encoder.

use rtcio_media::{
    EncodedFanout, H264Config, H264Decoder, H264Encoder, TestPatternConfig, TestPatternSource,
    VideoSource, read_marker,
};

fn source() -> TestPatternSource {
    TestPatternSource::new(TestPatternConfig {
        width: 320,
        height: 180,
        fps: 30.0,
        paced: false,
    })
    .unwrap()
}

fn encoder() -> H264Encoder {
    H264Encoder::new(H264Config {
        keyframe_interval: 0,
        bitrate_bps: 500_000,
        ..H264Config::default()
    })
    .unwrap()
}

/// The encoder loop body as the pipeline runs it.
fn step(src: &mut TestPatternSource, enc: &mut H264Encoder, fanout: &EncodedFanout) -> bool {
    if fanout.take_keyframe_request() {
        enc.request_keyframe();
    }
    let e = enc.encode(&src.next_frame().unwrap()).unwrap().unwrap();
    fanout.publish(&e);
    e.keyframe
}

#[test]
fn three_sinks_one_encode_per_frame() {
    let (mut src, mut enc) = (source(), encoder());
    let fanout = EncodedFanout::new(64);
    let mut sinks = [fanout.subscribe(), fanout.subscribe(), fanout.subscribe()];
    let mut keyframes = Vec::new();
    for n in 0..30 {
        if n == 10 {
            // All three peers send a PLI before the same frame: one IDR.
            for s in &sinks {
                s.request_keyframe();
            }
        }
        if step(&mut src, &mut enc, &fanout) {
            keyframes.push(n);
        }
    }
    assert_eq!(enc.frames_encoded(), 30, "one encode per frame");
    assert_eq!(keyframes, vec![0, 10]);
    let mut decoders: Vec<H264Decoder> = (0..3).map(|_| H264Decoder::new().unwrap()).collect();
    let mut first_payloads = Vec::new();
    for (sink, dec) in sinks.iter_mut().zip(&mut decoders) {
        let mut n = 0;
        while let Some(frame) = sink.try_recv() {
            let pic = dec
                .decode(&frame.data, frame.rtp_timestamp())
                .unwrap()
                .unwrap();
            assert_eq!(read_marker(&pic).unwrap().frame_number, n);
            if n == 0 {
                first_payloads.push(frame.data.clone());
            }
            n += 1;
        }
        assert_eq!(n, 30);
    }
    // Every sink got the very same buffer (no copy per peer).
    assert!(
        first_payloads
            .windows(2)
            .all(|w| w[0].as_ptr() == w[1].as_ptr())
    );
}

#[test]
fn a_joining_peer_triggers_one_keyframe_and_starts_on_it() {
    let (mut src, mut enc) = (source(), encoder());
    let fanout = EncodedFanout::new(64);
    let mut early = fanout.subscribe();
    for _ in 0..5 {
        step(&mut src, &mut enc, &fanout);
    }
    let mut late = fanout.subscribe();
    let mut later = fanout.subscribe();
    let mut keyframes = 0;
    for _ in 0..5 {
        if step(&mut src, &mut enc, &fanout) {
            keyframes += 1;
        }
    }
    assert_eq!(keyframes, 1, "two joins before one frame → one IDR");
    assert_eq!(fanout.keyframe_requests(), 3);
    let first_late = late.try_recv().unwrap();
    assert!(first_late.keyframe);
    assert_eq!(first_late.sequence, 5);
    assert!(later.try_recv().unwrap().keyframe);
    let mut early_count = 0;
    while early.try_recv().is_some() {
        early_count += 1;
    }
    assert_eq!(early_count, 10);
}

#[test]
fn slow_subscriber_drops_and_asks_for_keyframe_without_blocking() {
    let (mut src, mut enc) = (source(), encoder());
    let fanout = EncodedFanout::new(4);
    let mut fast = fanout.subscribe();
    let mut slow = fanout.subscribe();
    let mut fast_count = 0;
    for _ in 0..6 {
        step(&mut src, &mut enc, &fanout);
        // The fast one keeps up; the slow one reads nothing.
        while fast.try_recv().is_some() {
            fast_count += 1;
        }
    }
    // Frame 4 overflowed the slow queue: dropped for it, keyframe requested.
    assert!(fanout.take_keyframe_request());
    assert_eq!(fast_count, 6);
    // It drains what it has, then resumes at the next keyframe only.
    let mut got = Vec::new();
    while let Some(f) = slow.try_recv() {
        got.push((f.sequence, f.keyframe));
    }
    assert_eq!(got, vec![(0, true), (1, false), (2, false), (3, false)]);
    enc.request_keyframe();
    step(&mut src, &mut enc, &fanout); // frame 6: IDR
    step(&mut src, &mut enc, &fanout); // frame 7
    let resumed: Vec<(u64, bool)> = std::iter::from_fn(|| slow.try_recv())
        .map(|f| (f.sequence, f.keyframe))
        .collect();
    assert_eq!(resumed, vec![(6, true), (7, false)]);
}

#[test]
fn dropped_subscribers_are_removed() {
    let (mut src, mut enc) = (source(), encoder());
    let fanout = EncodedFanout::new(8);
    let keep = fanout.subscribe();
    drop(fanout.subscribe());
    assert_eq!(fanout.subscriber_count(), 2);
    step(&mut src, &mut enc, &fanout);
    assert_eq!(fanout.subscriber_count(), 1);
    drop(keep);
}

#[tokio::test]
async fn async_subscriber_sees_end_when_fanout_is_gone() {
    let (mut src, mut enc) = (source(), encoder());
    let fanout = EncodedFanout::new(8);
    let mut sub = fanout.subscribe();
    step(&mut src, &mut enc, &fanout);
    drop(fanout);
    assert!(sub.recv().await.is_some());
    assert!(sub.recv().await.is_none());
    // Requests after the end are harmless.
    sub.request_keyframe();
}
