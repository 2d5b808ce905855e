//! Real encoded media for stream tests: the synthetic test pattern through OpenH264 and the
//! tone through Opus (rtcio-media), written to local tracks in real time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtcio::{LocalTrack, MediaSample};
use rtcio_media::{
    AudioFrame, H264Config, H264Encoder, OpusConfig, OpusEncoder, TestPatternConfig,
    TestPatternSource, ToneConfig, ToneSource,
};
use tokio::sync::mpsc;

/// A running synthetic sender; stops when dropped.
pub struct SyntheticFeed {
    stop: Arc<AtomicBool>,
    /// Video frames encoded so far.
    pub video_frames: Arc<AtomicU64>,
    /// Keyframe requests (PLI/FIR) answered so far.
    pub keyframes_requested: Arc<AtomicU64>,
}

impl Drop for SyntheticFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// At most this long, whatever happens to the test.
const LIMIT: Duration = Duration::from_secs(300);

/// Encodes a `width`×`height` 30 fps test pattern (IDR only when a peer asks: every keyframe
/// proves the PLI path) and a tone, and writes them to the tracks.
pub fn start(
    video: Option<LocalTrack>,
    audio: Option<LocalTrack>,
    width: u32,
    height: u32,
) -> SyntheticFeed {
    let stop = Arc::new(AtomicBool::new(false));
    let video_frames = Arc::new(AtomicU64::new(0));
    let keyframes_requested = Arc::new(AtomicU64::new(0));
    let rt = tokio::runtime::Handle::current();
    if let Some(track) = video {
        let want_kf = Arc::new(AtomicBool::new(false));
        let mut kf = track.keyframe_requests();
        let (flag, count) = (want_kf.clone(), keyframes_requested.clone());
        rt.spawn(async move {
            while kf.recv().await.is_ok() {
                count.fetch_add(1, Ordering::Relaxed);
                flag.store(true, Ordering::Relaxed);
            }
        });
        let (tx, rx) = mpsc::channel(8);
        rt.spawn(write_all(track, rx));
        let (stop, frames) = (stop.clone(), video_frames.clone());
        std::thread::spawn(move || {
            let src = TestPatternSource::new(TestPatternConfig {
                width,
                height,
                fps: 30.0,
                paced: false,
            })
            .expect("pattern");
            let mut enc = H264Encoder::new(H264Config {
                keyframe_interval: 0,
                bitrate_bps: 600_000,
                ..H264Config::default()
            })
            .expect("encoder");
            let start = Instant::now();
            let period = Duration::from_micros(33_333);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && start.elapsed() < LIMIT {
                if want_kf.swap(false, Ordering::Relaxed) {
                    enc.request_keyframe();
                }
                let ts = period * i as u32;
                let frame = src.render(i, ts, rtcio_media::synthetic::video::unix_micros());
                if let Ok(Some(out)) = enc.encode(&frame) {
                    frames.fetch_add(1, Ordering::Relaxed);
                    let s = MediaSample {
                        data: out.data,
                        duration: period,
                    };
                    if tx.blocking_send(s).is_err() {
                        break;
                    }
                }
                i += 1;
                // Real-time pacing of a live source.
                if let Some(d) = (start + period * i as u32).checked_duration_since(Instant::now())
                {
                    std::thread::sleep(d);
                }
            }
        });
    }
    if let Some(track) = audio {
        let (tx, rx) = mpsc::channel(8);
        rt.spawn(write_all(track, rx));
        let stop = stop.clone();
        std::thread::spawn(move || {
            let tone = ToneSource::new(ToneConfig::default()).expect("tone");
            let mut enc = OpusEncoder::new(OpusConfig::default()).expect("opus");
            let start = Instant::now();
            let period = Duration::from_millis(20);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && start.elapsed() < LIMIT {
                let frame = AudioFrame {
                    samples: tone.render(i * 960, 960),
                    channels: 1,
                    sample_rate: 48_000,
                    timestamp: period * i as u32,
                };
                for p in enc.push(&frame).unwrap_or_default() {
                    if tx
                        .blocking_send(MediaSample {
                            data: p.data,
                            duration: p.duration,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                i += 1;
                if let Some(d) = (start + period * i as u32).checked_duration_since(Instant::now())
                {
                    std::thread::sleep(d);
                }
            }
        });
    }
    SyntheticFeed {
        stop,
        video_frames,
        keyframes_requested,
    }
}

async fn write_all(track: LocalTrack, mut rx: mpsc::Receiver<MediaSample>) {
    while let Some(s) = rx.recv().await {
        track.write(&s).await;
    }
}
