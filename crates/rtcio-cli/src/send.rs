//! Sending media: one source per kind, encoded once (rtcio-media pipelines), published to an
//! [`EncodedFanout`] whose single subscriber writes each frame to the stream's [`LocalTrack`] —
//! which hands the same bytes to every peer's sender. Keyframe requests (PLI/FIR) from any peer
//! become one forced IDR.
//!
//! Sources are opened before connecting ([`open`]), so a missing camera fails fast with exit
//! code 7; [`Producers::attach`] wires them to a stream once the socket exists.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rtcio::{LocalStream, LocalTrack, MediaKind, MediaSample, Socket};
use rtcio_media::{
    AudioPipelineConfig, AudioSendPipeline, AudioSource, EncodedFanout, EncodedSource, H264Config,
    MediaError, OpusConfig, VideoPipelineConfig, VideoSendPipeline, VideoSource,
};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle as TaskHandle;
use tracing::{debug, info, warn};

use crate::args::{AudioChoice, SessionArgs, VideoChoice};
use crate::exit::{CliError, code};

/// Frames queued for the track writer before the fan-out drops (and asks for an IDR).
const FANOUT_DEPTH: usize = 8;

/// What encodes one kind of media.
enum Producer {
    Video(VideoSendPipeline),
    Audio(AudioSendPipeline),
    /// An already encoded file played on a thread.
    Encoded {
        stop: Arc<AtomicBool>,
        published: Arc<AtomicU64>,
        thread: Option<JoinHandle<()>>,
    },
}

impl Producer {
    fn stop(self) {
        match self {
            Producer::Video(p) => {
                if let Err(e) = p.stop() {
                    warn!("video source ended with an error: {e}");
                }
            }
            Producer::Audio(p) => {
                if let Err(e) = p.stop() {
                    warn!("audio source ended with an error: {e}");
                }
            }
            Producer::Encoded {
                stop, mut thread, ..
            } => {
                stop.store(true, Ordering::Relaxed);
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
        }
    }

    fn finished(&self) -> bool {
        match self {
            Producer::Video(p) => p.is_finished(),
            Producer::Audio(p) => p.is_finished(),
            Producer::Encoded { thread, .. } => thread.as_ref().is_none_or(|t| t.is_finished()),
        }
    }
}

/// An opened, running source and its fan-out.
struct Opened {
    kind: MediaKind,
    label: String,
    producer: Producer,
    fanout: EncodedFanout,
}

/// Sources opened before connecting.
pub struct Producers {
    opened: Vec<Opened>,
}

fn media_err(what: &str, e: MediaError) -> CliError {
    CliError::new(code::MEDIA, "media", format!("{what}: {e}"))
}

/// Opens the sources `args` asks for and starts encoding (frames are dropped until a track
/// subscribes).
pub fn open(args: &SessionArgs) -> Result<Producers, CliError> {
    let mut opened = Vec::new();
    if let Some(v) = open_video(args)? {
        opened.push(v);
    }
    if let Some(a) = open_audio(args)? {
        opened.push(a);
    }
    Ok(Producers { opened })
}

fn h264(args: &SessionArgs, screen: bool) -> H264Config {
    H264Config {
        bitrate_bps: args.video_bitrate.saturating_mul(1000).max(50_000),
        max_fps: args.fps.clamp(1.0, 120.0),
        content: if screen {
            rtcio_media::ContentHint::Screen
        } else {
            rtcio_media::ContentHint::Camera
        },
        ..H264Config::default()
    }
}

fn start_video(
    source: Box<dyn VideoSource>,
    config: H264Config,
    label: String,
) -> Result<Opened, CliError> {
    let fanout = EncodedFanout::new(FANOUT_DEPTH);
    let pipeline = VideoSendPipeline::start(
        source,
        VideoPipelineConfig {
            encoder: config,
            preview: None,
            adapt_quality: true,
        },
        fanout.clone(),
    )
    .map_err(|e| media_err("starting the H.264 encoder", e))?;
    Ok(Opened {
        kind: MediaKind::Video,
        label,
        producer: Producer::Video(pipeline),
        fanout,
    })
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn open_video(args: &SessionArgs) -> Result<Option<Opened>, CliError> {
    let size = args.video_size;
    let fps = args.fps.clamp(1.0, 120.0);
    let opened = match &args.video {
        VideoChoice::None => return Ok(None),
        VideoChoice::TestSrc => {
            let src = rtcio_media::TestPatternSource::new(rtcio_media::TestPatternConfig {
                width: size.width,
                height: size.height,
                fps,
                paced: true,
            })
            .map_err(|e| media_err("test pattern", e))?;
            start_video(Box::new(src), h264(args, false), format!("testsrc {size}"))?
        }
        VideoChoice::Camera(device) => {
            let src = rtcio_media::CameraSource::open(rtcio_media::CameraConfig {
                device: device.clone(),
                width: size.width,
                height: size.height,
                fps: fps.round() as u32,
            })
            .map_err(|e| media_err("cannot open the camera", e))?;
            start_video(Box::new(src), h264(args, false), "camera".into())?
        }
        VideoChoice::Screen(monitor) => {
            // X11 through $DISPLAY; on Wayland the desktop portal (its dialog picks the monitor).
            let src = rtcio_media::open_screen_source(
                rtcio_media::ScreenConfig {
                    monitor: monitor.clone(),
                    fps,
                    ..rtcio_media::ScreenConfig::default()
                },
                rtcio_media::PortalConfig {
                    fps,
                    ..rtcio_media::PortalConfig::default()
                },
            )
            .map_err(|e| media_err("cannot capture the screen", e))?;
            start_video(src, h264(args, true), "screen".into())?
        }
        VideoChoice::File(path) => match extension(path).as_str() {
            "y4m" => {
                let src = rtcio_media::file::y4m::Y4mSource::open(path, true, true)
                    .map_err(|e| media_err(&format!("cannot read {}", path.display()), e))?;
                start_video(Box::new(src), h264(args, false), path.display().to_string())?
            }
            "h264" | "264" | "avc" => {
                let src = rtcio_media::file::h264::H264FileSource::open(path, fps, true, true)
                    .map_err(|e| media_err(&format!("cannot read {}", path.display()), e))?;
                start_encoded(Box::new(src), MediaKind::Video, path.display().to_string())?
            }
            other => {
                return Err(CliError::new(
                    code::MEDIA,
                    "media",
                    format!(
                        "{}: unsupported video file type {other:?} (use .y4m or raw .h264)",
                        path.display()
                    ),
                ));
            }
        },
    };
    Ok(Some(opened))
}

fn start_audio(source: Box<dyn AudioSource>, label: String) -> Result<Opened, CliError> {
    let fanout = EncodedFanout::new(FANOUT_DEPTH);
    let pipeline = AudioSendPipeline::start(
        source,
        AudioPipelineConfig {
            encoder: OpusConfig::default(),
        },
        fanout.clone(),
    )
    .map_err(|e| media_err("starting the Opus encoder", e))?;
    Ok(Opened {
        kind: MediaKind::Audio,
        label,
        producer: Producer::Audio(pipeline),
        fanout,
    })
}

fn open_audio(args: &SessionArgs) -> Result<Option<Opened>, CliError> {
    let opened = match &args.audio {
        AudioChoice::None => return Ok(None),
        AudioChoice::Tone => {
            let src = rtcio_media::ToneSource::new(rtcio_media::ToneConfig::default())
                .map_err(|e| media_err("tone", e))?;
            start_audio(Box::new(src), "tone".into())?
        }
        AudioChoice::Mic(device) => {
            let src = rtcio_media::MicrophoneSource::open(rtcio_media::MicrophoneConfig {
                device: device.clone(),
                channels: 1,
            })
            .map_err(|e| media_err("cannot open the microphone", e))?;
            start_audio(Box::new(src), "mic".into())?
        }
        AudioChoice::File(path) => match extension(path).as_str() {
            "wav" => {
                let src = rtcio_media::file::wav::WavSource::open(path, 1, true, true)
                    .map_err(|e| media_err(&format!("cannot read {}", path.display()), e))?;
                start_audio(Box::new(src), path.display().to_string())?
            }
            "opus" | "ogg" | "oga" => {
                let src = rtcio_media::file::ogg_opus::OggOpusSource::open(path, true, true)
                    .map_err(|e| media_err(&format!("cannot read {}", path.display()), e))?;
                start_encoded(Box::new(src), MediaKind::Audio, path.display().to_string())?
            }
            other => {
                return Err(CliError::new(
                    code::MEDIA,
                    "media",
                    format!(
                        "{}: unsupported audio file type {other:?} (use .wav or Ogg Opus)",
                        path.display()
                    ),
                ));
            }
        },
    };
    Ok(Some(opened))
}

/// Plays an encoded file on a thread into a fan-out (no re-encoding; keyframe requests cannot
/// be honoured — give bots clips with periodic IDRs).
fn start_encoded(
    mut source: Box<dyn EncodedSource>,
    kind: MediaKind,
    label: String,
) -> Result<Opened, CliError> {
    let fanout = EncodedFanout::new(FANOUT_DEPTH);
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let (f, s, p) = (fanout.clone(), stop.clone(), published.clone());
    let thread = std::thread::Builder::new()
        .name("rtcio-file-send".into())
        .spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match source.next_frame() {
                    Ok(frame) => {
                        f.publish(&frame);
                        p.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(MediaError::EndOfStream | MediaError::Stopped) => break,
                    Err(e) => {
                        warn!("file source: {e}");
                        break;
                    }
                }
            }
        })
        .map_err(|e| CliError::other(format!("cannot start a thread: {e}")))?;
    Ok(Opened {
        kind,
        label,
        producer: Producer::Encoded {
            stop,
            published,
            thread: Some(thread),
        },
        fanout,
    })
}

/// Counters of one sent track, updated by its writer task.
#[derive(Default)]
struct WriteCounters {
    frames: AtomicU64,
    bytes: AtomicU64,
    keyframes: AtomicU64,
    keyframe_requests: AtomicU64,
}

struct Sent {
    kind: MediaKind,
    label: String,
    producer: Producer,
    track: LocalTrack,
    counters: Arc<WriteCounters>,
    tasks: Vec<TaskHandle<()>>,
    fanout: EncodedFanout,
    last: (Instant, u64, u64),
}

/// The stream being sent.
pub struct Sender {
    stream: LocalStream,
    sent: Vec<Sent>,
}

impl Producers {
    /// True when nothing is sent.
    pub fn is_empty(&self) -> bool {
        self.opened.is_empty()
    }

    pub fn has(&self, kind: MediaKind) -> bool {
        self.opened.iter().any(|o| o.kind == kind)
    }

    /// Creates the stream with one track per source and starts writing to it. The caller
    /// announces it (see [`announce`]).
    pub fn attach(self, socket: &Socket) -> Option<Sender> {
        if self.opened.is_empty() {
            return None;
        }
        let stream = socket.create_stream();
        let mut sent = Vec::new();
        for o in self.opened {
            let track = stream.add_track(o.kind);
            let counters = Arc::new(WriteCounters::default());
            let mut tasks = Vec::new();
            let mut sub = o.fanout.subscribe();
            let (t, c) = (track.clone(), counters.clone());
            tasks.push(tokio::spawn(async move {
                while let Some(f) = sub.recv().await {
                    t.write(&MediaSample {
                        data: f.data.clone(),
                        duration: f.duration,
                    })
                    .await;
                    c.frames.fetch_add(1, Ordering::Relaxed);
                    c.bytes.fetch_add(f.data.len() as u64, Ordering::Relaxed);
                    if f.keyframe && f.kind == rtcio_media::MediaKind::Video {
                        c.keyframes.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
            if o.kind == MediaKind::Video {
                let mut requests = track.keyframe_requests();
                let requester = o.fanout.keyframe_requester();
                let c = counters.clone();
                tasks.push(tokio::spawn(async move {
                    loop {
                        match requests.recv().await {
                            Ok(r) => {
                                debug!(peer = %r.peer, fir = r.fir, "keyframe request");
                                c.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                                requester.request_keyframe();
                            }
                            Err(RecvError::Lagged(_)) => requester.request_keyframe(),
                            Err(RecvError::Closed) => break,
                        }
                    }
                }));
            }
            info!(kind = ?o.kind, source = %o.label, "sending");
            sent.push(Sent {
                kind: o.kind,
                label: o.label,
                producer: o.producer,
                track,
                counters,
                tasks,
                fanout: o.fanout,
                last: (Instant::now(), 0, 0),
            });
        }
        Some(Sender { stream, sent })
    }
}

/// The demo's way to announce a stream: `camera` with `{id, name, camera: <stream>}`; other
/// event names carry the stream under `stream` (`screenshare {id, name, stream}`). `id` is
/// [`rtcio::SELF_ID`]: the library writes our socket id as it is when the metadata leaves, so
/// the announcement stays right after a reconnect that changed the id.
pub fn announcement(event: &str, name: &str, stream: &LocalStream) -> Value {
    let key = if event == "camera" {
        "camera"
    } else {
        "stream"
    };
    let mut v = json!({"id": rtcio::SELF_ID, "name": name});
    v[key] = stream.token();
    v
}

impl Sender {
    pub fn stream(&self) -> &LocalStream {
        &self.stream
    }

    /// A new peer will need an IDR to start decoding: ask now rather than waiting for its PLI.
    pub fn request_keyframe(&self) {
        for s in &self.sent {
            if s.kind == MediaKind::Video {
                s.fanout.keyframe_requester().request_keyframe();
            }
        }
    }

    /// One `send-stats` line per track since the previous call.
    pub fn stats(&mut self) -> Vec<Value> {
        let now = Instant::now();
        let mut out = Vec::new();
        for s in &mut self.sent {
            let frames = s.counters.frames.load(Ordering::Relaxed);
            let bytes = s.counters.bytes.load(Ordering::Relaxed);
            let (t0, f0, b0) = s.last;
            let secs = now.duration_since(t0).as_secs_f64().max(1e-3);
            s.last = (now, frames, bytes);
            let mut line = json!({
                "kind": kind_str(s.kind),
                "source": s.label,
                "track": s.track.id(),
                "frames": frames,
                "fps": round2((frames - f0) as f64 / secs),
                "kbps": round2((bytes - b0) as f64 * 8.0 / secs / 1000.0),
                "peers": s.track.peer_count(),
                "samples_written": s.track.samples_written(),
            });
            match &s.producer {
                Producer::Video(p) => {
                    let st = p.stats();
                    line["encoded"] = json!(st.encoded);
                    line["keyframes"] = json!(st.keyframes);
                    line["keyframe_requests"] =
                        json!(s.counters.keyframe_requests.load(Ordering::Relaxed));
                    line["width"] = json!(st.size.0);
                    line["height"] = json!(st.size.1);
                    line["encode_ms"] = json!(round2(st.encode_ms));
                    line["quality_level"] = json!(st.quality_level);
                }
                Producer::Audio(p) => {
                    line["encoded"] = json!(p.packets());
                }
                Producer::Encoded { published, .. } => {
                    line["encoded"] = json!(published.load(Ordering::Relaxed));
                }
            }
            if s.producer.finished() {
                line["ended"] = json!(true);
            }
            out.push(line);
        }
        out
    }

    /// Stops announcing the stream to new peers, stops the sources and the writers.
    pub fn stop(self, socket: &Socket) {
        socket.untrack_stream(&self.stream);
        for s in self.sent {
            s.producer.stop();
            for t in s.tasks {
                t.abort();
            }
        }
    }
}

pub fn kind_str(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

pub fn round2(x: f64) -> f64 {
    if x.is_finite() {
        (x * 100.0).round() / 100.0
    } else {
        0.0
    }
}

/// Bounded wait used when stopping threads.
pub const STOP_WAIT: Duration = Duration::from_secs(3);
