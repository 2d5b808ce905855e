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
            processing: None,
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

/// White noise (costs Opus every bit it is given) in 20 ms frames at 48 kHz; after `pause_at`
/// frames it waits for the test's go (an event) before the rest.
struct Noise {
    n: usize,
    total: usize,
    pause_at: usize,
    seed: u32,
    go: std::sync::mpsc::Receiver<()>,
}

impl AudioSource for Noise {
    fn next_frame(&mut self) -> Result<AudioFrame> {
        if self.n == self.total {
            return Err(MediaError::EndOfStream);
        }
        if self.n == self.pause_at {
            self.go
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| MediaError::Stopped)?;
        }
        let samples = (0..960)
            .map(|_| {
                self.seed = self
                    .seed
                    .wrapping_mul(1_664_525)
                    .wrapping_add(1_013_904_223);
                (self.seed >> 16) as f32 / 65_536.0 - 0.5
            })
            .collect();
        let timestamp = Duration::from_millis(20 * self.n as u64);
        self.n += 1;
        Ok(AudioFrame {
            samples,
            channels: 1,
            sample_rate: 48_000,
            timestamp,
        })
    }
    fn sample_rate(&self) -> u32 {
        48_000
    }
    fn channels(&self) -> u16 {
        1
    }
}

#[test]
fn audio_pipeline_follows_its_bitrate_control() {
    let (go_tx, go) = std::sync::mpsc::channel();
    let source = Noise {
        n: 0,
        total: 100,
        pause_at: 50,
        seed: 7,
        go,
    };
    let fanout = EncodedFanout::new(256);
    let mut sub = fanout.subscribe();
    let pipeline = AudioSendPipeline::start(
        Box::new(source),
        AudioPipelineConfig {
            encoder: OpusConfig {
                bitrate_bps: 64_000,
                dtx: false,
                fec: false,
                ..OpusConfig::default()
            },
            processing: None,
        },
        fanout,
    )
    .unwrap();
    let control = pipeline.bitrate_control();
    assert_eq!(control.get(), 64_000);
    let mut sizes = Vec::new();
    while let Some(p) = sub.blocking_recv() {
        sizes.push(p.data.len());
        if sizes.len() == 50 {
            // Every frame before the pause is out: lower the rate, then let the rest come.
            control.set(16_000);
            go_tx.send(()).unwrap();
        }
    }
    assert_eq!(sizes.len(), 100);
    // Bytes per 20 ms packet, skipping the encoder's first and the switch's settling packets.
    let mean = |s: &[usize]| s.iter().sum::<usize>() as f64 / s.len() as f64;
    let (before, after) = (mean(&sizes[10..50]), mean(&sizes[60..]));
    // 64 kbit/s is 160 bytes per packet, 16 kbit/s 40.
    assert!(before > 120.0, "{before} bytes per packet at 64 kbit/s");
    assert!(after < 60.0, "{after} bytes per packet at 16 kbit/s");
    pipeline.stop().unwrap();
}

/// A microphone in a simulated room: each 20 ms it hands the far end's next frame to the
/// speaker (the render tap, as the mixer does when the output takes a frame) and returns what
/// the microphone hears — that far end's echo through the room, delayed and reverberant.
struct EchoRoom {
    far: Vec<f32>,
    echo: Vec<f32>,
    pos: usize,
    tap_rx: std::sync::mpsc::Receiver<Option<rtcio_media::RenderTap>>,
    tap: Option<Option<rtcio_media::RenderTap>>,
}

impl AudioSource for EchoRoom {
    fn next_frame(&mut self) -> Result<AudioFrame> {
        // The speaker exists once the test has wired the pipeline's tap (an event, not a wait).
        if self.tap.is_none() {
            let tap = self
                .tap_rx
                .recv_timeout(Duration::from_secs(10))
                .map_err(|_| MediaError::Stopped)?;
            self.tap = Some(tap);
        }
        if self.pos + 960 > self.far.len() {
            return Err(MediaError::EndOfStream);
        }
        let range = self.pos..self.pos + 960;
        if let Some(Some(tap)) = &self.tap {
            tap.push(&self.far[range.clone()]);
        }
        let frame = AudioFrame {
            samples: self.echo[range].to_vec(),
            channels: 1,
            sample_rate: 48_000,
            timestamp: Duration::from_millis(self.pos as u64 / 48),
        };
        self.pos += 960;
        Ok(frame)
    }
    fn sample_rate(&self) -> u32 {
        48_000
    }
    fn channels(&self) -> u16 {
        1
    }
}

/// Energy of the echo in and of what the pipeline sent, over the last `tail_s` seconds.
fn echo_through_pipeline(processing: Option<rtcio_media::AudioProcessingConfig>) -> (f64, f64) {
    use rtcio_media::apm::eval::{Room, Voice, speech};
    let seconds = 6.0;
    let far = speech(Voice::male(7), seconds, 0.0, seconds);
    // 120 ms to the microphone, 10 dB below the far end, a short reverberant room.
    let echo = Room::new(120.0, 10.0, 250.0, 150.0, 3).echo(&far);
    let (tap_tx, tap_rx) = std::sync::mpsc::channel();
    let room = EchoRoom {
        far,
        echo: echo.clone(),
        pos: 0,
        tap_rx,
        tap: None,
    };
    let fanout = EncodedFanout::new(1024);
    let mut sub = fanout.subscribe();
    let pipeline = AudioSendPipeline::start(
        Box::new(room),
        AudioPipelineConfig {
            encoder: OpusConfig {
                dtx: false,
                ..OpusConfig::default()
            },
            processing,
        },
        fanout,
    )
    .unwrap();
    assert_eq!(pipeline.render_tap().is_some(), processing.is_some());
    if let Some(ctl) = pipeline.apm_control() {
        ctl.set_output_present(true);
    }
    tap_tx.send(pipeline.render_tap()).unwrap();
    let mut dec = OpusDecoder::new(1).unwrap();
    let mut sent = Vec::new();
    while let Some(p) = sub.blocking_recv() {
        sent.extend_from_slice(&dec.decode(&p.data, p.timestamp).unwrap().samples);
    }
    pipeline.stop().unwrap();
    // The last 2 s (the canceller has had 4 s to converge; the goal is 2 s).
    let tail = 2 * 48_000;
    let energy = |x: &[f32]| x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>();
    let n = sent.len().min(echo.len());
    assert!(n > tail, "only {n} samples came out");
    (
        energy(&echo[n - tail..n]),
        energy(&sent[n - tail..n]).max(1e-12),
    )
}

#[test]
fn audio_pipeline_cancels_the_echo_it_is_given_the_far_end_of() {
    let erle = |(e_in, e_out): (f64, f64)| 10.0 * (e_in / e_out).log10();
    let processed = erle(echo_through_pipeline(Some(
        rtcio_media::AudioProcessingConfig::default(),
    )));
    let bypassed = erle(echo_through_pipeline(None));
    println!("echo removed by the send pipeline: {processed:.1} dB (bypassed: {bypassed:.1} dB)");
    // Goal 25 dB within 2 s (the apm bench); a threshold well below it that a bypassed or
    // mis-wired canceller (far end not reaching it) cannot reach.
    assert!(processed >= 15.0, "only {processed:.1} dB of echo removed");
    // Opus alone takes a little off (about 2.5 dB here).
    assert!(
        bypassed.abs() < 6.0,
        "without processing the echo should pass: {bypassed:.1} dB"
    );
}

#[test]
fn the_test_sound_goes_through_the_mixer_to_the_output() {
    let played =
        rtcio_media::play_test_sound(rtcio_media::OutputDevice::Null, Duration::from_millis(400))
            .unwrap();
    assert_eq!(played.device, "null");
    // A 0.3-peak tone (about −13 dBFS RMS), faded in and out.
    assert!(played.peak_dbfs > -25.0, "{played:?}");
}
