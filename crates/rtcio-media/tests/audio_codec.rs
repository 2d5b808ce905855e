//! Opus encode → decode with real libopus, resampling with rubato, timing marks.

use std::time::Duration;

use rtcio_media::resample::Reframer;
use rtcio_media::synthetic::audio::{detect_marks, to_mono};
use rtcio_media::{
    AudioLevel, AudioResampler, AudioSource, OpusConfig, OpusDecoder, OpusEncoder, ToneConfig,
    ToneSource,
};

#[test]
fn opus_round_trip_with_resampling_keeps_timing_marks() {
    // A 44.1 kHz "microphone": tone with a mark every 200 ms.
    let mut tone = ToneSource::new(ToneConfig {
        sample_rate: 44_100,
        channels: 1,
        mark_interval: Duration::from_millis(200),
        paced: false,
        ..ToneConfig::default()
    })
    .unwrap();
    let mut resampler = AudioResampler::new(44_100, 48_000, 1).unwrap();
    let mut reframer = Reframer::new(48_000, 1);
    let mut encoder = OpusEncoder::new(OpusConfig::default()).unwrap();
    let mut decoder = OpusDecoder::new(1).unwrap();
    let mut decoded = Vec::new();
    let mut packets = 0;
    for _ in 0..100 {
        // 2 s of audio
        let frame = tone.next_frame().unwrap();
        assert_eq!(frame.frames(), 882);
        reframer.push(&resampler.process(&frame.samples).unwrap());
        while let Some(f48) = reframer.pop() {
            assert_eq!(f48.frames(), 960);
            for packet in encoder.push(&f48).unwrap() {
                assert!(packet.keyframe);
                assert_eq!(packet.duration, Duration::from_millis(20));
                assert_eq!(packet.rtp_timestamp() % 960, 0);
                let pcm = decoder.decode(&packet.data, packet.timestamp).unwrap();
                assert_eq!(pcm.frames(), 960);
                decoded.extend(pcm.samples);
                packets += 1;
            }
        }
    }
    assert!(packets >= 95, "{packets} packets");
    let marks = detect_marks(&decoded, 48_000, 3_000.0);
    // 10 marks in 2 s; the last may fall in the resampler/codec delay.
    assert!(marks.len() >= 9, "marks {marks:?}");
    for pair in marks.windows(2) {
        let spacing = pair[1] as i64 - pair[0] as i64;
        assert!(
            (spacing - 9_600).abs() <= 120,
            "spacing {spacing} in {marks:?}"
        );
    }
    // The first mark appears after the resampler + Opus delay, well under 20 ms.
    assert!(marks[0] < 960, "first mark at {}", marks[0]);
    // The tone between marks keeps its level (0.25 peak sine → RMS ≈ 0.177).
    let level = AudioLevel::of_samples(&decoded[2_000..8_000]);
    assert!((level.rms - 0.177).abs() < 0.04, "rms {}", level.rms);
}

#[test]
fn stereo_round_trip_and_loss_concealment() {
    let mut tone = ToneSource::new(ToneConfig {
        channels: 2,
        paced: false,
        ..ToneConfig::default()
    })
    .unwrap();
    let mut encoder = OpusEncoder::new(OpusConfig {
        channels: 2,
        bitrate_bps: 64_000,
        ..OpusConfig::default()
    })
    .unwrap();
    let mut decoder = OpusDecoder::new(2).unwrap();
    let mut all = Vec::new();
    let mut packets = Vec::new();
    for _ in 0..20 {
        packets.extend(encoder.push(&tone.next_frame().unwrap()).unwrap());
    }
    assert_eq!(packets.len(), 20);
    for (i, p) in packets.iter().enumerate() {
        let out = match i {
            // Lost with the next packet at hand: recover it from FEC.
            10 => decoder.recover(&packets[11].data, p.timestamp).unwrap(),
            // Lost outright: conceal.
            15 => decoder.conceal(p.timestamp).unwrap(),
            _ => decoder.decode(&p.data, p.timestamp).unwrap(),
        };
        assert_eq!(out.channels, 2);
        assert_eq!(out.frames(), 960, "packet {i}");
        if i > 3 {
            // Concealed and recovered frames continue the tone, not silence.
            assert!(AudioLevel::measure(&out).rms > 0.05, "packet {i}");
        }
        all.extend(out.samples);
    }
    assert_eq!(decoder.concealed(), 1);
    assert_eq!(decoder.recovered(), 1);
    // The mark at t = 0 survives in the stereo mix.
    let marks = detect_marks(&to_mono(&all, 2), 48_000, 3_000.0);
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert!(marks[0] < 960);
}

#[test]
fn dtx_skips_silent_frames() {
    let mut encoder = OpusEncoder::new(OpusConfig::default()).unwrap();
    let silence = rtcio_media::AudioFrame::silence(960, 1, 48_000, Duration::ZERO);
    let mut sent = 0;
    for _ in 0..50 {
        sent += encoder.push(&silence).unwrap().len();
    }
    assert!(
        encoder.dtx_skipped() > 30,
        "skipped {}",
        encoder.dtx_skipped()
    );
    assert_eq!(sent as u64 + encoder.dtx_skipped(), 50);
}

#[test]
fn wrong_input_format_is_an_error() {
    let mut encoder = OpusEncoder::new(OpusConfig::default()).unwrap();
    let wrong_rate = rtcio_media::AudioFrame::silence(882, 1, 44_100, Duration::ZERO);
    assert!(encoder.push(&wrong_rate).is_err());
    assert!(OpusDecoder::new(3).is_err());
    let mut decoder = OpusDecoder::new(1).unwrap();
    assert!(decoder.decode(&[], Duration::ZERO).is_err());
    // Garbage bytes: an error or noise, never a panic.
    let _ = decoder.decode(&[0xFF, 0xFF, 0xFF], Duration::ZERO);
}
