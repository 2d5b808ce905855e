//! Sending: one source per kind, encoded once ([`rtcio_media`] pipelines) into an
//! [`EncodedFanout`] whose single subscriber writes each frame to the stream's [`LocalTrack`] —
//! which hands the same bytes to every peer's sender. Keyframe requests (PLI/FIR) from any peer
//! become one forced IDR, and the encoder's target bitrate follows the weakest peer's send-side
//! bandwidth estimate ([`crate::rate`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rtcio::{LocalStream, LocalTrack, MediaKind, MediaSample, Socket};
use rtcio_media::{
    ApmControl, AudioLevel, AudioPipelineConfig, AudioProcessingConfig, AudioSendPipeline,
    AudioSource, BitrateControl, EncodedFanout, EncodedSource, H264Config, LossControl, MediaError,
    OpusConfig, RenderTap, RgbaFrame, VideoPipelineConfig, VideoSendPipeline, VideoSource,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinHandle as TaskHandle;
use tracing::{debug, info, warn};

use crate::rate::{RatePolicy, opus_expected_loss, video_target_bps, worth_changing};

/// Frames queued for the track writer before the fan-out drops (and asks for an IDR).
const FANOUT_DEPTH: usize = 8;
/// How often the encoder's target is brought in line with the estimates.
const RATE_INTERVAL: Duration = Duration::from_millis(250);
/// Keyframe requests from peers within this long of the last IDR we forced are answered by one
/// IDR at the end of it: on a congested link every IDR is a burst that loses packets, which
/// makes receivers ask again — answering each request feeds that loop.
const MIN_KEYFRAME_INTERVAL: Duration = Duration::from_millis(1000);

/// What encodes one kind of media.
enum Producer {
    Video(VideoSendPipeline),
    Audio(AudioSendPipeline),
    /// An already encoded file played on a thread (no re-encoding: keyframe requests and the
    /// bandwidth estimate cannot be honoured).
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

/// A source that runs and encodes, not yet attached to a stream (frames are dropped until a
/// track subscribes).
pub struct Opened {
    kind: MediaKind,
    label: String,
    producer: Producer,
    fanout: EncodedFanout,
}

impl Opened {
    /// Starts encoding `source` with H.264. `preview`: the size of the RGBA preview frames
    /// ([`Opened::preview`]), `None` for none.
    pub fn video(
        source: Box<dyn VideoSource>,
        encoder: H264Config,
        preview: Option<(u32, u32)>,
        label: impl Into<String>,
    ) -> Result<Opened, MediaError> {
        let fanout = EncodedFanout::new(FANOUT_DEPTH);
        let pipeline = VideoSendPipeline::start(
            source,
            VideoPipelineConfig {
                encoder,
                preview,
                adapt_quality: true,
            },
            fanout.clone(),
        )?;
        Ok(Opened {
            kind: MediaKind::Video,
            label: label.into(),
            producer: Producer::Video(pipeline),
            fanout,
        })
    }

    /// Starts encoding `source` with Opus, cleaning it first with `processing` (a microphone:
    /// then wire [`Opened::render_tap`] to the playout mixer and tell [`Opened::apm_control`]
    /// whether a speaker plays; `None` for tones and files).
    pub fn audio(
        source: Box<dyn AudioSource>,
        encoder: OpusConfig,
        processing: Option<AudioProcessingConfig>,
        label: impl Into<String>,
    ) -> Result<Opened, MediaError> {
        let fanout = EncodedFanout::new(FANOUT_DEPTH);
        let pipeline = AudioSendPipeline::start(
            source,
            AudioPipelineConfig {
                encoder,
                processing,
            },
            fanout.clone(),
        )?;
        Ok(Opened {
            kind: MediaKind::Audio,
            label: label.into(),
            producer: Producer::Audio(pipeline),
            fanout,
        })
    }

    /// The far-end input of this audio's echo canceller (pass it to
    /// `AudioMixer::set_render_tap`); `None` without processing.
    pub fn render_tap(&self) -> Option<RenderTap> {
        match &self.producer {
            Producer::Audio(p) => p.render_tap(),
            _ => None,
        }
    }

    /// Switches of this audio's processing; `None` without processing.
    pub fn apm_control(&self) -> Option<ApmControl> {
        match &self.producer {
            Producer::Audio(p) => p.apm_control(),
            _ => None,
        }
    }

    /// Plays an already encoded source (a file) on a thread, paced by the source.
    pub fn encoded(
        mut source: Box<dyn EncodedSource>,
        kind: MediaKind,
        label: impl Into<String>,
    ) -> Result<Opened, MediaError> {
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
            .map_err(MediaError::Io)?;
        Ok(Opened {
            kind,
            label: label.into(),
            producer: Producer::Encoded {
                stop,
                published,
                thread: Some(thread),
            },
            fanout,
        })
    }

    /// Audio or video.
    pub fn kind(&self) -> MediaKind {
        self.kind
    }

    /// What the source is (for logs and stats lines).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The video's RGBA preview frames (encoding video sources only).
    pub fn preview(&self) -> Option<watch::Receiver<Option<Arc<RgbaFrame>>>> {
        match &self.producer {
            Producer::Video(p) => Some(p.preview()),
            _ => None,
        }
    }

    /// Stops the source without sending anything.
    pub fn stop(self) {
        self.producer.stop();
    }
}

/// How a [`SendStream`] sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SendOptions {
    /// The video target's limits; `rate.max_bps` is the user's cap.
    pub rate: RatePolicy,
    /// Make the encoder follow the peers' bandwidth estimates (off: always `rate.max_bps`).
    pub follow_estimate: bool,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            rate: RatePolicy::default(),
            follow_estimate: true,
        }
    }
}

/// Counters of one sent track, updated by its writer task.
#[derive(Default)]
struct WriteCounters {
    frames: AtomicU64,
    bytes: AtomicU64,
    keyframes: AtomicU64,
    keyframe_requests: AtomicU64,
}

/// One sent track.
struct Sent {
    kind: MediaKind,
    label: String,
    producer: Producer,
    track: LocalTrack,
    fanout: EncodedFanout,
    enabled: Arc<AtomicBool>,
    counters: Arc<WriteCounters>,
    bitrate: Option<BitrateControl>,
    tasks: Vec<TaskHandle<()>>,
    last: (Instant, u64, u64),
}

/// What one sent track did since the previous [`SendStream::stats`] call (and in total).
#[derive(Debug, Clone, PartialEq)]
pub struct TrackSendStats {
    /// Audio or video.
    pub kind: MediaKind,
    /// The source's label.
    pub label: String,
    /// The track id.
    pub track: String,
    /// Frames written to the track so far.
    pub frames: u64,
    /// Frames per second since the previous call.
    pub fps: f64,
    /// Encoded kbit/s since the previous call.
    pub kbps: f64,
    /// Peers the track feeds.
    pub peers: usize,
    /// Samples the track handed to its peers' senders.
    pub samples_written: u64,
    /// Frames the encoder produced (packets for audio, frames read for files).
    pub encoded: u64,
    /// IDR frames (video).
    pub keyframes: u64,
    /// Keyframe requests (PLI/FIR) received from peers (video).
    pub keyframe_requests: u64,
    /// Size last encoded (video encoders).
    pub size: Option<(u32, u32)>,
    /// Smoothed encode time, ms (video encoders).
    pub encode_ms: Option<f64>,
    /// Quality ladder level, 0 = full (video encoders).
    pub quality_level: Option<usize>,
    /// The encoder's target bitrate, bits/s (video encoders).
    pub target_bps: Option<u32>,
    /// The lowest send-side bandwidth estimate over the track's peers, bits/s.
    pub estimate_bps: Option<u64>,
    /// The source ended.
    pub ended: bool,
}

/// A stream we send (camera + mic, a screen, or files).
pub struct SendStream {
    stream: LocalStream,
    sent: Vec<Sent>,
    audio_level: Option<watch::Receiver<AudioLevel>>,
}

impl SendStream {
    /// Creates a stream on `socket` with one track per opened source and starts writing to it.
    /// The caller announces it (an event carrying [`LocalStream::token`]). Needs a tokio runtime.
    pub fn attach(socket: &Socket, opened: Vec<Opened>, opts: SendOptions) -> SendStream {
        let stream = socket.create_stream();
        let mut sent = Vec::new();
        let mut audio_level = None;
        for o in opened {
            if let (Producer::Audio(p), None) = (&o.producer, &audio_level) {
                audio_level = Some(p.level());
            }
            let track = stream.add_track(o.kind);
            let enabled = Arc::new(AtomicBool::new(true));
            let counters = Arc::new(WriteCounters::default());
            let mut tasks = vec![spawn_writer(&o, &track, &enabled, &counters)];
            let mut bitrate = None;
            if o.kind == MediaKind::Video {
                tasks.push(spawn_keyframe_relay(&o, &track, &counters));
                if let Producer::Video(p) = &o.producer {
                    let ctl = p.bitrate_control();
                    ctl.set(video_target_bps(&opts.rate, None));
                    if opts.follow_estimate {
                        tasks.push(spawn_rate_follower(track.clone(), ctl.clone(), opts.rate));
                    }
                    bitrate = Some(ctl);
                }
            }
            if let (Producer::Audio(p), true) = (&o.producer, opts.follow_estimate) {
                tasks.push(spawn_fec_follower(track.clone(), p.loss_control()));
            }
            info!(kind = ?o.kind, source = %o.label, "sending");
            sent.push(Sent {
                kind: o.kind,
                label: o.label,
                producer: o.producer,
                track,
                fanout: o.fanout,
                enabled,
                counters,
                bitrate,
                tasks,
                last: (Instant::now(), 0, 0),
            });
        }
        SendStream {
            stream,
            sent,
            audio_level,
        }
    }

    /// The level of the encoded audio (before muting), updated every 20 ms.
    pub fn audio_level(&self) -> Option<watch::Receiver<AudioLevel>> {
        self.audio_level.clone()
    }

    /// The stream (its token goes into the announcing event).
    pub fn stream(&self) -> &LocalStream {
        &self.stream
    }

    /// True when a track of this kind is sent.
    pub fn has(&self, kind: MediaKind) -> bool {
        self.sent.iter().any(|s| s.kind == kind)
    }

    /// Starts or stops sending one kind. Stopped audio is also muted at the encoder (so a
    /// turned-on mic starts with fresh audio); turned-on video starts with an IDR so receivers
    /// can decode at once. The encoders keep running, so turning back on is instant.
    pub fn set_enabled(&self, kind: MediaKind, on: bool) {
        for s in self.sent.iter().filter(|s| s.kind == kind) {
            let was = s.enabled.swap(on, Ordering::Relaxed);
            match &s.producer {
                Producer::Audio(p) => p.set_muted(!on),
                _ if s.kind == MediaKind::Video && on && !was => {
                    s.fanout.keyframe_requester().request_keyframe()
                }
                _ => {}
            }
        }
    }

    /// Whether a kind is being sent.
    pub fn enabled(&self, kind: MediaKind) -> bool {
        self.sent
            .iter()
            .any(|s| s.kind == kind && s.enabled.load(Ordering::Relaxed))
    }

    /// The flag [`SendStream::set_enabled`] flips for the first track of `kind` (for tasks that
    /// should pause with it, like a self preview).
    pub fn enabled_flag(&self, kind: MediaKind) -> Option<Arc<AtomicBool>> {
        self.sent
            .iter()
            .find(|s| s.kind == kind)
            .map(|s| s.enabled.clone())
    }

    /// Samples of one kind written to the stream so far (what the toggles stop).
    pub fn samples_written(&self, kind: MediaKind) -> u64 {
        self.sent
            .iter()
            .filter(|s| s.kind == kind)
            .map(|s| s.track.samples_written())
            .sum()
    }

    /// A new peer needs an IDR to start decoding: ask now rather than waiting for its PLI.
    pub fn request_keyframe(&self) {
        for s in self.sent.iter().filter(|s| s.kind == MediaKind::Video) {
            s.fanout.keyframe_requester().request_keyframe();
        }
    }

    /// One entry per track; rates are since the previous call.
    pub fn stats(&mut self) -> Vec<TrackSendStats> {
        let now = Instant::now();
        self.sent
            .iter_mut()
            .map(|s| {
                let frames = s.counters.frames.load(Ordering::Relaxed);
                let bytes = s.counters.bytes.load(Ordering::Relaxed);
                let (t0, f0, b0) = s.last;
                let secs = now.duration_since(t0).as_secs_f64().max(1e-3);
                s.last = (now, frames, bytes);
                let mut st = TrackSendStats {
                    kind: s.kind,
                    label: s.label.clone(),
                    track: s.track.id().to_string(),
                    frames,
                    fps: frames.saturating_sub(f0) as f64 / secs,
                    kbps: bytes.saturating_sub(b0) as f64 * 8.0 / secs / 1000.0,
                    peers: s.track.peer_count(),
                    samples_written: s.track.samples_written(),
                    encoded: 0,
                    keyframes: s.counters.keyframes.load(Ordering::Relaxed),
                    keyframe_requests: s.counters.keyframe_requests.load(Ordering::Relaxed),
                    size: None,
                    encode_ms: None,
                    quality_level: None,
                    target_bps: s.bitrate.as_ref().map(BitrateControl::get),
                    estimate_bps: s.track.min_estimated_bitrate(),
                    ended: s.producer.finished(),
                };
                match &s.producer {
                    Producer::Video(p) => {
                        let v = p.stats();
                        st.encoded = v.encoded;
                        st.keyframes = v.keyframes;
                        st.size = Some(v.size);
                        st.encode_ms = Some(v.encode_ms);
                        st.quality_level = Some(v.quality_level);
                    }
                    Producer::Audio(p) => st.encoded = p.packets(),
                    Producer::Encoded { published, .. } => {
                        st.encoded = published.load(Ordering::Relaxed)
                    }
                }
                st
            })
            .collect()
    }

    /// Stops announcing the stream to new peers, optionally removes its tracks (receivers see
    /// `track-removed`), and stops the sources and writers.
    pub fn stop(self, socket: &Socket, remove_tracks: bool) {
        socket.untrack_stream(&self.stream);
        for s in self.sent {
            if remove_tracks {
                self.stream.remove_track(&s.track);
            }
            for t in s.tasks {
                t.abort();
            }
            s.producer.stop();
        }
    }
}

/// Writes every encoded frame to the track while the kind is enabled.
fn spawn_writer(
    o: &Opened,
    track: &LocalTrack,
    enabled: &Arc<AtomicBool>,
    counters: &Arc<WriteCounters>,
) -> TaskHandle<()> {
    let mut sub = o.fanout.subscribe();
    let (t, on, c) = (track.clone(), enabled.clone(), counters.clone());
    tokio::spawn(async move {
        while let Some(f) = sub.recv().await {
            // Toggled off: the encoder keeps running but nothing reaches the peers.
            if !on.load(Ordering::Relaxed) {
                continue;
            }
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
    })
}

/// Turns peers' PLI/FIR into IDR requests at the encoder, at most one per
/// [`MIN_KEYFRAME_INTERVAL`] (later requests are coalesced into one at the end of it).
fn spawn_keyframe_relay(
    o: &Opened,
    track: &LocalTrack,
    counters: &Arc<WriteCounters>,
) -> TaskHandle<()> {
    let mut requests = track.keyframe_requests();
    let requester = o.fanout.keyframe_requester();
    let c = counters.clone();
    tokio::spawn(async move {
        let mut last: Option<tokio::time::Instant> = None;
        loop {
            match requests.recv().await {
                Ok(r) => {
                    debug!(peer = %r.peer, fir = r.fir, "keyframe request");
                    c.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            }
            if let Some(at) = last.map(|t| t + MIN_KEYFRAME_INTERVAL) {
                tokio::time::sleep_until(at).await;
                // Requests that came in meanwhile are answered by this one IDR.
                while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
                    requests.try_recv()
                {
                    c.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                }
            }
            requester.request_keyframe();
            last = Some(tokio::time::Instant::now());
        }
    })
}

/// Keeps the encoder's target at what the weakest peer's link carries.
fn spawn_rate_follower(
    track: LocalTrack,
    ctl: BitrateControl,
    policy: RatePolicy,
) -> TaskHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RATE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let estimate = track.min_estimated_bitrate();
            let target = video_target_bps(&policy, estimate);
            let current = ctl.get();
            if worth_changing(current, target) {
                debug!(?estimate, current, target, "video target bitrate");
                ctl.set(target);
            }
        }
    })
}

/// Sizes Opus's in-band FEC for the worst loss a peer reports.
fn spawn_fec_follower(track: LocalTrack, ctl: LossControl) -> TaskHandle<()> {
    let default = ctl.get();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RATE_INTERVAL * 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let want = opus_expected_loss(track.max_reported_loss(), default);
            if want != ctl.get() {
                debug!(want, "opus expected loss");
                ctl.set(want);
            }
        }
    })
}
