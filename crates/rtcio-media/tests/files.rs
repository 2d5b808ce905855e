//! File sources: Y4M, raw H.264, WAV and Ogg Opus, written here and read back.

use std::path::PathBuf;

use rtcio_media::file::h264::{H264FileSource, split_access_units};
use rtcio_media::file::ogg_opus::{OggOpusSource, OggOpusWriter};
use rtcio_media::file::wav::WavSource;
use rtcio_media::file::y4m::{Y4mSource, Y4mWriter};
use rtcio_media::synthetic::audio::detect_marks;
use rtcio_media::{
    AudioSource, EncodedSource, H264Config, H264Decoder, H264Encoder, MediaError, OpusConfig,
    OpusDecoder, OpusEncoder, TestPatternConfig, TestPatternSource, ToneConfig, ToneSource,
    VideoSource, read_marker,
};

/// A per-test scratch directory under the target dir, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join(format!("rtcio-media-test-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn pattern() -> TestPatternSource {
    TestPatternSource::new(TestPatternConfig {
        width: 320,
        height: 180,
        fps: 25.0,
        paced: false,
    })
    .unwrap()
}

#[test]
fn y4m_round_trip_and_loop() {
    let dir = scratch("y4m");
    let path = dir.join("clip.y4m");
    let mut src = pattern();
    let mut w = Y4mWriter::create(&path, 320, 180, 25).unwrap();
    for _ in 0..5 {
        w.write(&src.next_frame().unwrap()).unwrap();
    }
    w.finish().unwrap();
    let mut y4m = Y4mSource::open(&path, false, false).unwrap();
    assert_eq!((y4m.size(), y4m.frame_rate()), ((320, 180), 25.0));
    for n in 0..5 {
        let f = y4m.next_frame().unwrap();
        assert_eq!(read_marker(&f).unwrap().frame_number, n);
    }
    assert!(matches!(y4m.next_frame(), Err(MediaError::EndOfStream)));
    let mut looping = Y4mSource::open(&path, true, false).unwrap();
    let numbers: Vec<u32> = (0..7)
        .map(|_| {
            read_marker(&looping.next_frame().unwrap())
                .unwrap()
                .frame_number
        })
        .collect();
    assert_eq!(numbers, vec![0, 1, 2, 3, 4, 0, 1]);
    // Not a Y4M file / missing file.
    std::fs::write(dir.join("bad.y4m"), b"RIFF....").unwrap();
    assert!(matches!(
        Y4mSource::open(dir.join("bad.y4m"), false, false),
        Err(MediaError::Format(_))
    ));
    assert!(matches!(
        Y4mSource::open(dir.join("none.y4m"), false, false),
        Err(MediaError::Io(_))
    ));
}

#[test]
fn raw_h264_file_plays_access_units_in_order() {
    let dir = scratch("h264");
    let path = dir.join("clip.h264");
    let mut src = pattern();
    let mut enc = H264Encoder::new(H264Config {
        keyframe_interval: 10,
        ..H264Config::default()
    })
    .unwrap();
    let mut stream = Vec::new();
    for _ in 0..15 {
        stream.extend_from_slice(
            &enc.encode(&src.next_frame().unwrap())
                .unwrap()
                .unwrap()
                .data,
        );
    }
    std::fs::write(&path, &stream).unwrap();
    assert_eq!(split_access_units(&stream).len(), 15);
    let mut file = H264FileSource::open(&path, 25.0, false, false).unwrap();
    let mut dec = H264Decoder::new().unwrap();
    for n in 0..15u32 {
        let e = file.next_frame().unwrap();
        assert_eq!(e.keyframe, n % 10 == 0, "frame {n}");
        assert_eq!(e.rtp_timestamp(), n * 3600);
        let pic = dec.decode(&e.data, e.rtp_timestamp()).unwrap().unwrap();
        assert_eq!(read_marker(&pic).unwrap().frame_number, n);
    }
    assert!(matches!(file.next_frame(), Err(MediaError::EndOfStream)));
    // A stream that does not start with an IDR is refused.
    let tail: Vec<u8> = split_access_units(&stream)[1..5].concat();
    assert!(matches!(
        H264FileSource::from_bytes(&tail, 25.0, false, false),
        Err(MediaError::Format(_))
    ));
}

#[test]
fn wav_source_resamples_to_48k_and_keeps_marks() {
    let dir = scratch("wav");
    let path = dir.join("tone.wav");
    let mut tone = ToneSource::new(ToneConfig {
        sample_rate: 16_000,
        mark_interval: std::time::Duration::from_millis(250),
        paced: false,
        ..ToneConfig::default()
    })
    .unwrap();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for _ in 0..50 {
        for s in tone.next_frame().unwrap().samples {
            w.write_sample((s * 32767.0) as i16).unwrap();
        }
    }
    w.finalize().unwrap();
    let mut wav = WavSource::open(&path, 2, false, false).unwrap();
    assert_eq!((wav.sample_rate(), wav.channels()), (48_000, 2));
    let mut left = Vec::new();
    loop {
        match wav.next_frame() {
            Ok(f) => {
                assert_eq!(f.frames(), 960);
                left.extend(f.samples.iter().step_by(2));
            }
            Err(MediaError::EndOfStream) => break,
            Err(e) => panic!("{e}"),
        }
    }
    let marks = detect_marks(&left, 48_000, 3_000.0);
    assert_eq!(marks.len(), 4, "{marks:?}");
    for pair in marks.windows(2) {
        assert!(
            (pair[1] as i64 - pair[0] as i64 - 12_000).abs() <= 120,
            "{marks:?}"
        );
    }
    assert!(matches!(
        WavSource::open(dir.join("missing.wav"), 1, false, false),
        Err(MediaError::Io(_))
    ));
}

#[test]
fn ogg_opus_round_trip() {
    let dir = scratch("ogg");
    let path = dir.join("voice.opus");
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
    let mut w = OggOpusWriter::create(&path, 1, 312).unwrap();
    let mut sent = Vec::new();
    for _ in 0..30 {
        for p in enc.push(&tone.next_frame().unwrap()).unwrap() {
            w.write(&p.data).unwrap();
            sent.push(p.data);
        }
    }
    w.finish().unwrap();
    let mut src = OggOpusSource::open(&path, false, false).unwrap();
    assert_eq!((src.channels(), src.pre_skip()), (1, 312));
    let mut dec = OpusDecoder::new(1).unwrap();
    for (i, expected) in sent.iter().enumerate() {
        let f = src.next_frame().unwrap();
        assert_eq!(&f.data, expected);
        assert_eq!(f.rtp_timestamp(), i as u32 * 960);
        assert_eq!(dec.decode(&f.data, f.timestamp).unwrap().frames(), 960);
    }
    assert!(matches!(src.next_frame(), Err(MediaError::EndOfStream)));
    std::fs::write(dir.join("not.opus"), b"OggS garbage").unwrap();
    assert!(OggOpusSource::open(dir.join("not.opus"), false, false).is_err());
}
