//! Jitter buffer under reorder, loss, lateness and DTX gaps, and the mixer with real Opus.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rtcio_media::{
    AudioLevel, AudioMixer, AudioSource, JitterBuffer, JitterConfig, OpusConfig, OpusEncoder,
    Playout, PushOutcome, ToneConfig, ToneSource,
};

const TICKS: u32 = 960;

/// Real Opus packets of a tone, `n` × 20 ms.
fn opus_packets(n: usize, base_rtp: u32) -> Vec<(u32, Bytes)> {
    let mut tone = ToneSource::new(ToneConfig {
        paced: false,
        ..ToneConfig::default()
    })
    .unwrap();
    let mut enc = OpusEncoder::new(OpusConfig {
        dtx: false,
        ..OpusConfig::default()
    })
    .unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        for p in enc.push(&tone.next_frame().unwrap()).unwrap() {
            out.push((base_rtp.wrapping_add(p.rtp_timestamp()), p.data));
        }
    }
    out
}

#[test]
fn reordered_packets_play_in_order_without_loss() {
    let t0 = Instant::now();
    // Start near the 32-bit wrap to exercise unwrapping too.
    let packets = opus_packets(60, u32::MAX - 20 * TICKS);
    // Swap neighbours in every group of three: 1 0 2, 4 3 5, ...
    let mut order: Vec<usize> = (0..packets.len()).collect();
    for chunk in order.chunks_mut(3) {
        chunk.swap(0, 1);
    }
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let mut played = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        let (rtp, data) = &packets[i];
        let arrival = t0 + Duration::from_millis(20 * k as u64);
        assert_eq!(jb.push(*rtp, data.clone(), arrival), PushOutcome::Accepted);
        // The playout clock ticks once per 20 ms of arrivals.
        match jb.pop() {
            Playout::Packet { payload, .. } => played.push(payload),
            Playout::Buffering => {}
            Playout::Lost { timestamp, .. } => panic!("lost {timestamp}"),
        }
    }
    // Drain what is left at the end of the stream.
    while !jb.is_empty() {
        match jb.pop() {
            Playout::Packet { payload, .. } => played.push(payload),
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected: Vec<Bytes> = packets.iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(played, expected);
    let s = jb.stats();
    assert_eq!((s.lost, s.late, s.played), (0, 0, 60));
}

#[test]
fn lost_packets_are_reported_with_the_next_one_for_fec() {
    let t0 = Instant::now();
    let packets = opus_packets(50, 1234);
    let dropped = [7usize, 20, 21, 33];
    let mut jb = JitterBuffer::new(JitterConfig::default());
    let mut results = Vec::new();
    for (i, (rtp, data)) in packets.iter().enumerate() {
        if !dropped.contains(&i) {
            jb.push(
                *rtp,
                data.clone(),
                t0 + Duration::from_millis(20 * i as u64),
            );
        }
        results.push(jb.pop());
    }
    while !jb.is_empty() {
        results.push(jb.pop());
    }
    let lost: Vec<(u64, bool)> = results
        .iter()
        .filter_map(|r| match r {
            Playout::Lost { timestamp, next } => Some((*timestamp, next.is_some())),
            _ => None,
        })
        .collect();
    assert_eq!(lost.len(), dropped.len(), "{lost:?}");
    // 20 is followed by the lost 21 (no FEC source); the others have their successor.
    assert_eq!(
        lost.iter().map(|l| l.1).collect::<Vec<_>>(),
        vec![true, false, true, true]
    );
    let played = results
        .iter()
        .filter(|r| matches!(r, Playout::Packet { .. }))
        .count();
    assert_eq!(played, 50 - dropped.len());
    assert_eq!(jb.stats().lost, dropped.len() as u64);
}

#[test]
fn late_and_duplicate_packets_are_dropped() {
    let t0 = Instant::now();
    let packets = opus_packets(10, 0);
    let mut jb = JitterBuffer::new(JitterConfig::default());
    for (rtp, data) in &packets[..4] {
        jb.push(*rtp, data.clone(), t0);
    }
    assert!(matches!(jb.pop(), Playout::Packet { .. }));
    assert!(matches!(jb.pop(), Playout::Packet { .. }));
    // Packet 0 again: its slot has played.
    assert_eq!(
        jb.push(packets[0].0, packets[0].1.clone(), t0),
        PushOutcome::Late
    );
    assert_eq!(
        jb.push(packets[3].0, packets[3].1.clone(), t0),
        PushOutcome::Duplicate
    );
    let s = jb.stats();
    assert_eq!((s.late, s.duplicates), (1, 1));
}

#[test]
fn underrun_rebuffers_and_a_dtx_pause_is_skipped() {
    let t0 = Instant::now();
    let packets = opus_packets(200, 0);
    let cfg = JitterConfig::default();
    let mut jb = JitterBuffer::new(cfg);
    // Talk 10 frames, pause (DTX) 100 frames, talk again.
    let talk: Vec<usize> = (0..10).chain(110..130).collect();
    let mut kinds = String::new();
    for (slot, (rtp, d)) in packets.iter().enumerate().take(140) {
        if talk.contains(&slot) {
            jb.push(
                *rtp,
                d.clone(),
                t0 + Duration::from_millis(20 * slot as u64),
            );
        }
        kinds.push(match jb.pop() {
            Playout::Packet { .. } => 'P',
            Playout::Lost { .. } => 'L',
            Playout::Buffering => 'B',
        });
    }
    // After each talk spurt: a few concealed frames, then silence until talk resumes; no long
    // run of concealment, and every talk packet plays.
    assert_eq!(kinds.matches('P').count(), 30, "{kinds}");
    let longest_loss = kinds.split(['P', 'B']).map(str::len).max().unwrap_or(0);
    assert!(longest_loss <= cfg.max_conceal_frames as usize, "{kinds}");
    assert_eq!(jb.stats().underruns, 2, "{kinds}");
    assert_eq!(jb.stats().lost, 2 * u64::from(cfg.max_conceal_frames));
}

#[test]
fn target_delay_grows_with_jitter() {
    let t0 = Instant::now();
    let packets = opus_packets(100, 0);
    let mut steady = JitterBuffer::new(JitterConfig::default());
    let mut jittery = JitterBuffer::new(JitterConfig::default());
    for (i, (rtp, d)) in packets.iter().enumerate() {
        let on_time = t0 + Duration::from_millis(20 * i as u64);
        steady.push(*rtp, d.clone(), on_time);
        let wobble = if i % 2 == 0 { 0 } else { 35 };
        jittery.push(*rtp, d.clone(), on_time + Duration::from_millis(wobble));
    }
    assert_eq!(steady.target_delay(), Duration::from_millis(40));
    assert!(
        jittery.target_delay() > Duration::from_millis(80),
        "{:?}",
        jittery.target_delay()
    );
}

#[test]
fn mixer_sums_peers_and_conceals_loss() {
    let t0 = Instant::now();
    let mut mixer = AudioMixer::new(2);
    let a = opus_packets(40, 1000);
    let b = opus_packets(40, 777_777);
    let c = opus_packets(40, 5);
    let mut levels = Vec::new();
    for i in 0..40 {
        let at = t0 + Duration::from_millis(20 * i as u64);
        mixer.push("a", a[i].0, a[i].1.clone(), at).unwrap();
        if i != 15 {
            mixer.push("b", b[i].0, b[i].1.clone(), at).unwrap();
        }
        if i < 20 {
            mixer.push("c", c[i].0, c[i].1.clone(), at).unwrap();
        }
        let out = mixer.mix_next();
        assert_eq!((out.channels, out.frames()), (2, 960));
        levels.push(AudioLevel::measure(&out).rms);
    }
    assert_eq!(mixer.peers().count(), 3);
    let b_stats = mixer.peer("b").unwrap().stats();
    assert_eq!(b_stats.lost, 1);
    // Three in-phase tones mix louder than one: 3 × 0.177 RMS, clipped at full scale.
    assert!(levels[10] > 0.4, "{levels:?}");
    mixer.remove_peer("c");
    assert_eq!(mixer.peers().count(), 2);
}
