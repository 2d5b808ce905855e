//! Send pipelines end to end: synthetic source → encoder → fan-out → decoder, with preview and
//! level meter.

use std::time::Duration;

use rtcio_media::{
    AudioFrame, AudioPipelineConfig, AudioSendPipeline, AudioSource, EncodedFanout, H264Config,
    H264Decoder, I420Frame, MediaError, OpusConfig, OpusDecoder, RemoteVideo, Result,
    TestPatternConfig, TestPatternSource, ToneConfig, ToneSource, VideoPipelineConfig,
    VideoSendPipeline, VideoSource, read_marker,
};

/// Ends a source after `n` frames.
struct Limited<S> {
    inner: S,
    left: usize,
}

impl<S: VideoSource> VideoSource for Limited<S> {
    fn next_frame(&mut self) -> Result<I420Frame> {
        if self.left == 0 {
            return Err(MediaError::EndOfStream);
        }
        self.left -= 1;
        self.inner.next_frame()
    }
    fn size(&self) -> (u32, u32) {
        self.inner.size()
    }
    fn frame_rate(&self) -> f32 {
        self.inner.frame_rate()
    }
}

impl<S: AudioSource> AudioSource for Limited<S> {
    fn next_frame(&mut self) -> Result<AudioFrame> {
        if self.left == 0 {
            return Err(MediaError::EndOfStream);
        }
        self.left -= 1;
        self.inner.next_frame()
    }
    fn sample_rate(&self) -> u32 {
        self.inner.sample_rate()
    }
    fn channels(&self) -> u16 {
        self.inner.channels()
    }
}

#[test]
fn video_pipeline_encodes_once_for_all_subscribers_with_preview() {
    let source = Limited {
        inner: TestPatternSource::new(TestPatternConfig {
            width: 640,
            height: 360,
            fps: 30.0,
            paced: false,
        })
        .unwrap(),
        left: 20,
    };
    let fanout = EncodedFanout::new(64);
    let mut a = fanout.subscribe();
    let mut b = fanout.subscribe();
    let pipeline = VideoSendPipeline::start(
        Box::new(source),
        VideoPipelineConfig {
            encoder: H264Config {
                keyframe_interval: 0,
                ..H264Config::default()
            },
            preview: Some((160, 160)),
            adapt_quality: false,
        },
        fanout,
    )
    .unwrap();
    let preview = pipeline.preview();
    let mut dec = H264Decoder::new().unwrap();
    let mut n = 0;
    // The fan-out closes when the pipeline's thread ends.
    while let Some(f) = a.blocking_recv() {
        let pic = dec.decode(&f.data, f.rtp_timestamp()).unwrap().unwrap();
        assert_eq!(read_marker(&pic).unwrap().frame_number, n);
        n += 1;
    }
    assert_eq!(n, 20);
    assert_eq!(std::iter::from_fn(|| b.blocking_recv()).count(), 20);
    let stats = pipeline.stats();
    assert_eq!(
        (stats.captured, stats.encoded, stats.keyframes),
        (20, 20, 1)
    );
    assert_eq!(stats.size, (640, 360));
    let last = preview.borrow().clone().expect("preview frame");
    assert_eq!((last.width, last.height), (160, 90));
    pipeline.stop().unwrap();
}

#[test]
fn remote_video_decodes_paces_and_asks_for_keyframes() {
    let mut src = TestPatternSource::new(TestPatternConfig {
        width: 320,
        height: 180,
        fps: 30.0,
        paced: false,
    })
    .unwrap();
    let mut enc = rtcio_media::H264Encoder::new(H264Config::default()).unwrap();
    let mut remote = RemoteVideo::new(Duration::from_millis(50)).unwrap();
    let t0 = std::time::Instant::now();
    let mut shown = 0;
    let mut plis = 0;
    for n in 0..10u32 {
        let e = enc.encode(&src.next_frame().unwrap()).unwrap().unwrap();
        let now = t0 + Duration::from_millis(u64::from(n) * 33);
        if n == 0 {
            // The first access unit is lost: the receiver asks for a keyframe once.
            if remote.packet_lost(now) {
                plis += 1;
            }
            continue;
        }
        let out = remote.push(&e.data, e.rtp_timestamp(), now);
        plis += u32::from(out.send_pli);
        if let Some((pic, at)) = out.frame {
            assert!(at >= now);
            assert_eq!(read_marker(&pic).unwrap().frame_number, n);
            shown += 1;
        }
        if n == 4 {
            enc.request_keyframe();
        }
    }
    // Frames 1-5 wait for the IDR at 5; PLIs are throttled to one per 500 ms.
    assert_eq!(shown, 5);
    assert_eq!(plis, 1);
}

#[test]
fn audio_pipeline_resamples_and_meters() {
    let source = Limited {
        inner: ToneSource::new(ToneConfig {
            sample_rate: 44_100,
            paced: false,
            mark_interval: Duration::ZERO,
            ..ToneConfig::default()
        })
        .unwrap(),
        left: 50,
    };
    let fanout = EncodedFanout::new(256);
    let mut sub = fanout.subscribe();
    let pipeline = AudioSendPipeline::start(
        Box::new(source),
        AudioPipelineConfig {
            encoder: OpusConfig {
                dtx: false,
                ..OpusConfig::default()
            },
        },
        fanout,
    )
    .unwrap();
    let level = pipeline.level();
    let mut dec = OpusDecoder::new(1).unwrap();
    let mut packets = 0;
    while let Some(p) = sub.blocking_recv() {
        assert_eq!(dec.decode(&p.data, p.timestamp).unwrap().frames(), 960);
        packets += 1;
    }
    // 1 s at 44.1 kHz → ~49 packets of 20 ms at 48 kHz (the resampler holds a little back).
    assert!((47..=50).contains(&packets), "{packets}");
    let rms = level.borrow().rms;
    assert!((rms - 0.177).abs() < 0.02, "{rms}");
    assert_eq!(pipeline.packets(), packets);
    pipeline.stop().unwrap();
}
