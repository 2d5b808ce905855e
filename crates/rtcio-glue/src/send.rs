//! Sending: one source per kind, encoded once ([`rtcio_media`] pipelines) into an
//! [`EncodedFanout`] whose single subscriber writes each frame to the stream's [`LocalTrack`] —
//! which hands the same bytes to every peer's sender. Keyframe requests (PLI/FIR) from any peer
//! become one forced IDR, and the encoder's target bitrate follows the weakest peer's send-side
//! bandwidth estimate ([`crate::rate`]).
//!
//! A capture source can be swapped under its running encoder ([`SendStream::replace_source`],
//! WebRTC's `replaceTrack`): same track, same stream, no renegotiation. A source that fails
//! (an unplugged device) is reported ([`SendStream::source_failures`]) and the track stays,
//! sending nothing until it gets another source.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rtcio::{LocalStream, LocalTrack, MediaKind, MediaSample, Socket};
use rtcio_media::{
    ApmControl, AudioFrame, AudioLevel, AudioPipelineConfig, AudioProcessingConfig, AudioResampler,
    AudioSendPipeline, AudioSource, BitrateControl, EncodedFanout, EncodedSource, H264Config,
    I420Frame, LossControl, MediaError, OpusConfig, RenderTap, RgbaFrame, Scaler,
    VideoPipelineConfig, VideoSendPipeline, VideoSource, resample::remix_channels,
};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinHandle as TaskHandle;
use tracing::{debug, info, warn};

use crate::rate::{
    RatePolicy, followed_estimate, opus_expected_loss, opus_target_bps, video_target_bps,
    worth_changing,
};

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
    // First: dropped before the producer, so a pipeline waiting for a replacement ends.
    switch: SwitchHandle,
    /// When the source gave each frame (capture sources only): the sender reports' clock.
    stamps: Option<Arc<CaptureStamps>>,
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
        let label = label.into();
        let fanout = EncodedFanout::new(FANOUT_DEPTH);
        let format = source.size();
        let rate = source.frame_rate();
        let slot: Arc<Slot<dyn VideoSource>> = Slot::new(MediaKind::Video, source, &label);
        // The encoder keeps the source's timestamps.
        let stamps = Arc::new(CaptureStamps::new(false));
        let pipeline = VideoSendPipeline::start(
            Box::new(Switchable::new(slot.clone(), format, rate).stamped(stamps.clone())),
            VideoPipelineConfig {
                encoder,
                preview,
                adapt_quality: true,
            },
            fanout.clone(),
        )?;
        Ok(Opened {
            switch: SwitchHandle::Video(slot),
            stamps: Some(stamps),
            kind: MediaKind::Video,
            label,
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
        let label = label.into();
        let fanout = EncodedFanout::new(FANOUT_DEPTH);
        let format = (source.sample_rate(), u32::from(source.channels()));
        let slot: Arc<Slot<dyn AudioSource>> = Slot::new(MediaKind::Audio, source, &label);
        // Opus counts its packets' time from zero, whatever the source's first timestamp.
        let stamps = Arc::new(CaptureStamps::new(true));
        let pipeline = AudioSendPipeline::start(
            Box::new(Switchable::new(slot.clone(), format, 0.0).stamped(stamps.clone())),
            AudioPipelineConfig {
                encoder,
                processing,
            },
            fanout.clone(),
        )?;
        Ok(Opened {
            switch: SwitchHandle::Audio(slot),
            stamps: Some(stamps),
            kind: MediaKind::Audio,
            label,
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
            switch: SwitchHandle::None,
            stamps: None,
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
        self.switch.close();
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
    // First: dropped before the producer (see [`Opened`]).
    switch: SwitchHandle,
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
    /// The longest wait of a packet in the send pacers toward the track's peers, ms (a
    /// snapshot: the send latency spent before the network).
    pub pacer_wait_ms: Option<f64>,
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
            let mut tasks = Vec::new();
            let mut bitrate = None;
            if o.kind == MediaKind::Video {
                tasks.push(spawn_keyframe_relay(&o, &track, &counters));
                if let Producer::Video(p) = &o.producer {
                    let ctl = p.bitrate_control();
                    let cc = socket.congestion();
                    let start = cc.enabled.then_some(cc.start_bps);
                    if opts.follow_estimate {
                        ctl.set(video_target_bps(
                            &opts.rate,
                            followed_estimate(None, 0, start),
                        ));
                        tasks.push(spawn_rate_follower(
                            track.clone(),
                            ctl.clone(),
                            opts.rate,
                            start,
                        ));
                    } else {
                        ctl.set(video_target_bps(&opts.rate, None));
                    }
                    bitrate = Some(ctl);
                }
            }
            if let (Producer::Audio(p), true) = (&o.producer, opts.follow_estimate) {
                tasks.push(spawn_audio_follower(
                    track.clone(),
                    p.loss_control(),
                    p.bitrate_control(),
                ));
            }
            // Last: the pipeline encodes from the first subscriber on, at the target set above.
            tasks.push(spawn_writer(&o, &track, &enabled, &counters));
            info!(kind = ?o.kind, source = %o.label, "sending");
            sent.push(Sent {
                switch: o.switch,
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

    /// Swaps the capture source of the stream's track of that kind (the camera or microphone
    /// switched mid-call, or a fallback after a failure): the encoder, track and stream stay, so
    /// peers keep decoding without renegotiation. Later frames are scaled to the first source's
    /// size (audio resampled to its rate) and continue its timeline; video starts with an IDR.
    /// The old source is stopped. Errors when no such track is sent (or it plays a file).
    pub fn replace_source(
        &mut self,
        source: Replacement,
        label: impl Into<String>,
    ) -> Result<(), MediaError> {
        let kind = source.kind();
        let label = label.into();
        let s = self
            .sent
            .iter_mut()
            .find(|s| s.kind == kind && !matches!(s.switch, SwitchHandle::None))
            .ok_or_else(|| {
                MediaError::InvalidInput(format!("no {kind:?} track to switch the source of"))
            })?;
        let old_label = std::mem::replace(&mut s.label, label.clone());
        match (&s.switch, source) {
            (SwitchHandle::Video(slot), Replacement::Video(v)) => {
                if let Some(mut old) = slot.replace(v, &label) {
                    old.stop();
                }
                s.fanout.keyframe_requester().request_keyframe();
            }
            (SwitchHandle::Audio(slot), Replacement::Audio(a)) => {
                if let Some(mut old) = slot.replace(a, &label) {
                    old.stop();
                }
            }
            _ => {
                s.label = old_label;
                return Err(MediaError::InvalidInput(format!("not a {kind:?} source")));
            }
        }
        info!(?kind, from = %old_label, to = %label, track = %s.track.id(), "source replaced");
        Ok(())
    }

    /// The latest failure of the capture source of that kind's track (`None` inside until one
    /// fails); `None` when no such track has a capture source.
    pub fn source_failures(
        &self,
        kind: MediaKind,
    ) -> Option<watch::Receiver<Option<SourceFailure>>> {
        self.sent
            .iter()
            .find(|s| s.kind == kind)
            .and_then(|s| s.switch.failures())
    }

    /// The label of the source a kind's track sends now.
    pub fn source_label(&self, kind: MediaKind) -> Option<&str> {
        self.sent
            .iter()
            .find(|s| s.kind == kind)
            .map(|s| s.label.as_str())
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
                    pacer_wait_ms: s.track.max_pacer_wait().map(|d| d.as_secs_f64() * 1000.0),
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
            s.switch.close();
            s.producer.stop();
        }
    }
}

// ---------------------------------------------------------------- switchable sources

/// A capture source that stopped giving frames while its track stays (an unplugged camera or
/// microphone). The track sends nothing until [`SendStream::replace_source`] gives it another.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFailure {
    /// Audio or video.
    pub kind: MediaKind,
    /// The failed source's label.
    pub label: String,
    /// What the source said.
    pub error: String,
    /// Failures of this track so far (1 for the first).
    pub count: u64,
}

/// A new source for a track that is already sent ([`SendStream::replace_source`]).
pub enum Replacement {
    /// For a video track.
    Video(Box<dyn VideoSource>),
    /// For an audio track.
    Audio(Box<dyn AudioSource>),
}

impl Replacement {
    fn kind(&self) -> MediaKind {
        match self {
            Replacement::Video(_) => MediaKind::Video,
            Replacement::Audio(_) => MediaKind::Audio,
        }
    }
}

/// How long a source-less switch waits before looking at its closed flag again.
const SWITCH_POLL: Duration = Duration::from_millis(200);

struct SlotState<S: ?Sized> {
    /// The source, `None` while the pipeline thread reads from it or after it failed.
    current: Option<Box<S>>,
    /// A replacement arrived: the next frame starts a new timeline.
    swapped: bool,
    /// Set (after a replacement) while the pipeline thread still holds the old source.
    replaced_while_reading: bool,
    label: String,
    failures: u64,
    closed: bool,
}

/// The source of a running pipeline, swappable from another thread: the pipeline reads
/// frames from a [`Switchable`] holding it, the stream holds this side.
struct Slot<S: ?Sized> {
    kind: MediaKind,
    state: Mutex<SlotState<S>>,
    cond: Condvar,
    failed: watch::Sender<Option<SourceFailure>>,
}

impl<S: ?Sized> Slot<S> {
    fn new(kind: MediaKind, source: Box<S>, label: &str) -> Arc<Self> {
        Arc::new(Slot {
            kind,
            state: Mutex::new(SlotState {
                current: Some(source),
                swapped: true,
                replaced_while_reading: false,
                label: label.to_string(),
                failures: 0,
                closed: false,
            }),
            cond: Condvar::new(),
            failed: watch::channel(None).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, SlotState<S>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn replace(&self, source: Box<S>, label: &str) -> Option<Box<S>> {
        let mut st = self.lock();
        let old = st.current.replace(source);
        st.replaced_while_reading = old.is_none();
        st.swapped = true;
        st.label = label.to_string();
        self.cond.notify_all();
        old
    }

    fn close(&self) {
        self.lock().closed = true;
        self.cond.notify_all();
    }

    /// Blocks until a source is there (taking it out) or the slot is closed.
    fn take(&self) -> Option<(Box<S>, bool)> {
        let mut st = self.lock();
        loop {
            // Closed with a source: keep serving it until the pipeline's own stop flag ends its
            // loop (an error here would be logged as the pipeline failing).
            if let Some(s) = st.current.take() {
                st.replaced_while_reading = false;
                return Some((s, std::mem::take(&mut st.swapped)));
            }
            if st.closed {
                return None;
            }
            st = self
                .cond
                .wait_timeout(st, SWITCH_POLL)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Puts the source back after a read; gives it back (the caller stops it) when it was
    /// replaced meanwhile.
    fn put_back(&self, source: Box<S>) -> Result<(), Box<S>> {
        let mut st = self.lock();
        if st.replaced_while_reading || st.current.is_some() {
            return Err(source);
        }
        st.current = Some(source);
        Ok(())
    }

    /// After a read: a frame goes out (`Some`) unless the source was replaced meanwhile; a lost
    /// source is stopped and reported, and `None` makes the caller wait for a replacement; the
    /// end of a finite source ends the pipeline.
    fn settle<T>(
        &self,
        mut source: Box<S>,
        result: Result<T, MediaError>,
    ) -> Result<Option<T>, MediaError>
    where
        S: Stoppable,
    {
        match result {
            Ok(frame) => match self.put_back(source) {
                Ok(()) => Ok(Some(frame)),
                Err(mut old) => {
                    // Replaced (or closed) while we read: that frame is the old device's.
                    old.halt();
                    Ok(None)
                }
            },
            Err(e) if source_lost(&e) => {
                source.halt();
                let st = self.lock();
                let replaced = st.closed || st.current.is_some();
                drop(st);
                if !replaced {
                    self.fail(&e);
                }
                Ok(None)
            }
            Err(e) => {
                source.halt();
                Err(e)
            }
        }
    }

    fn fail(&self, error: &MediaError) {
        let mut st = self.lock();
        st.failures += 1;
        let f = SourceFailure {
            kind: self.kind,
            label: st.label.clone(),
            error: error.to_string(),
            count: st.failures,
        };
        drop(st);
        warn!(kind = ?f.kind, source = %f.label, error = %f.error, "source failed; track kept");
        self.failed.send_replace(Some(f));
    }
}

/// Closes the slot when the stream side goes away, so a pipeline waiting for a replacement
/// ends (the pipeline's own stop joins its thread, which must not wait forever).
enum SwitchHandle {
    None,
    Video(Arc<Slot<dyn VideoSource>>),
    Audio(Arc<Slot<dyn AudioSource>>),
}

impl SwitchHandle {
    fn close(&self) {
        match self {
            SwitchHandle::None => {}
            SwitchHandle::Video(s) => s.close(),
            SwitchHandle::Audio(s) => s.close(),
        }
    }

    fn failures(&self) -> Option<watch::Receiver<Option<SourceFailure>>> {
        match self {
            SwitchHandle::None => None,
            SwitchHandle::Video(s) => Some(s.failed.subscribe()),
            SwitchHandle::Audio(s) => Some(s.failed.subscribe()),
        }
    }
}

impl Drop for SwitchHandle {
    fn drop(&mut self) {
        self.close();
    }
}

/// Maps a new source's media time onto the track's timeline, continuing after the last frame.
#[derive(Default)]
struct Timeline {
    /// (first time of the current source, where it lands on the output)
    base: Option<(Duration, Duration)>,
    /// Output time just past the last frame.
    next: Option<Duration>,
}

impl Timeline {
    fn map(&mut self, ts: Duration, swapped: bool, length: Duration) -> Duration {
        if swapped || self.base.is_none() {
            self.base = Some((ts, self.next.unwrap_or(ts)));
        }
        let (from, to) = self.base.unwrap_or((ts, ts));
        let out = to + ts.saturating_sub(from);
        self.next = Some(self.next.map_or(out + length, |n| n.max(out + length)));
        out
    }
}

/// What a pipeline reads from: the slot's current source, failures turned into a wait for a
/// replacement, later sources brought to the first one's format and timeline.
struct Switchable<S: ?Sized> {
    slot: Arc<Slot<S>>,
    timeline: Timeline,
    /// The first source's size / frame rate (video) or rate / channels (audio).
    format: (u32, u32),
    rate: f32,
    scaler: Scaler,
    resampler: Option<AudioResampler>,
    swapped_once: bool,
    stamps: Option<Arc<CaptureStamps>>,
}

impl<S: ?Sized> Switchable<S> {
    fn new(slot: Arc<Slot<S>>, format: (u32, u32), rate: f32) -> Self {
        Switchable {
            slot,
            timeline: Timeline::default(),
            format,
            rate,
            scaler: Scaler::default(),
            resampler: None,
            swapped_once: false,
            stamps: None,
        }
    }

    /// Records when each frame came from the source into `stamps`.
    fn stamped(mut self, stamps: Arc<CaptureStamps>) -> Self {
        self.stamps = Some(stamps);
        self
    }
}

/// When the source gave the frames of one track (by their output media time): the writer
/// hands each encoded frame's capture instant to [`LocalTrack::write_captured`], so the RTCP
/// sender reports map RTP time to capture time and the encoding delay is not counted as a
/// later capture by the receiver's lip sync.
#[derive(Debug)]
struct CaptureStamps {
    /// Keyed by time since the first frame (audio: Opus counts from zero).
    relative: bool,
    inner: Mutex<StampsInner>,
}

#[derive(Debug, Default)]
struct StampsInner {
    first: Option<Duration>,
    /// (media time, when the source gave it), oldest first.
    recent: VecDeque<(Duration, Instant)>,
}

/// Frames remembered (~2 s of 20 ms audio, 4 s of 30 fps video: the encoder is never that far
/// behind).
const STAMPS: usize = 128;

impl CaptureStamps {
    fn new(relative: bool) -> Self {
        CaptureStamps {
            relative,
            inner: Mutex::new(StampsInner::default()),
        }
    }

    fn record(&self, ts: Duration, at: Instant) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let first = *g.first.get_or_insert(ts);
        let key = if self.relative {
            ts.saturating_sub(first)
        } else {
            ts
        };
        if g.recent.len() == STAMPS {
            g.recent.pop_front();
        }
        g.recent.push_back((key, at));
    }

    /// The capture instant of media time `ts`: the newest frame at or before it, plus the
    /// difference (an encoder's packet may start inside a source frame); `None` when no frame
    /// within a second before it is known.
    fn capture_of(&self, ts: Duration) -> Option<Instant> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (t, at) = g.recent.iter().rev().find(|(t, _)| *t <= ts)?;
        let d = ts - *t;
        (d <= Duration::from_secs(1)).then(|| *at + d)
    }
}

/// Stops either kind of source (the slot is generic over both traits).
trait Stoppable {
    fn halt(&mut self);
}

impl Stoppable for dyn VideoSource {
    fn halt(&mut self) {
        self.stop()
    }
}

impl Stoppable for dyn AudioSource {
    fn halt(&mut self) {
        self.stop()
    }
}

/// Whether an error from a source means it is gone (vs. a finite source's normal end).
fn source_lost(e: &MediaError) -> bool {
    !matches!(e, MediaError::EndOfStream)
}

impl VideoSource for Switchable<dyn VideoSource> {
    fn next_frame(&mut self) -> Result<I420Frame, MediaError> {
        // Bounded: each round either returns or consumes a failed / replaced source; waiting
        // for a replacement ends when the stream closes the slot.
        loop {
            let (mut source, swapped) = self.slot.take().ok_or(MediaError::Stopped)?;
            let result = source.next_frame();
            let got = Instant::now();
            let mut frame = match self.slot.settle(source, result)? {
                Some(f) => f,
                None => continue,
            };
            if swapped && self.timeline.base.is_some() {
                self.swapped_once = true;
            }
            let (w, h) = self.format;
            if self.swapped_once && (frame.width, frame.height) != (w, h) {
                frame = self.scaler.scale_i420(&frame, w, h)?;
            }
            let length = Duration::from_secs_f64(1.0 / f64::from(self.rate.max(1.0)));
            frame.timestamp = self.timeline.map(frame.timestamp, swapped, length);
            if let Some(s) = &self.stamps {
                s.record(frame.timestamp, got);
            }
            return Ok(frame);
        }
    }

    fn size(&self) -> (u32, u32) {
        self.format
    }

    fn frame_rate(&self) -> f32 {
        self.rate
    }

    fn stop(&mut self) {
        self.slot.close();
        if let Some(mut s) = self.slot.lock().current.take() {
            s.stop();
        }
    }
}

impl AudioSource for Switchable<dyn AudioSource> {
    fn next_frame(&mut self) -> Result<AudioFrame, MediaError> {
        loop {
            let (mut source, swapped) = self.slot.take().ok_or(MediaError::Stopped)?;
            let result = source.next_frame();
            let got = Instant::now();
            let mut frame = match self.slot.settle(source, result)? {
                Some(f) => f,
                None => continue,
            };
            let (rate, channels) = (self.format.0, self.format.1 as u16);
            if swapped {
                // A new source: resampled to the first one's rate if it differs.
                self.resampler = if frame.sample_rate != rate {
                    Some(AudioResampler::new(frame.sample_rate, rate, channels)?)
                } else {
                    None
                };
            }
            if frame.channels != channels {
                frame.samples = remix_channels(&frame.samples, frame.channels, channels);
                frame.channels = channels;
            }
            if let Some(r) = self.resampler.as_mut() {
                frame.samples = r.process(&frame.samples)?;
                frame.sample_rate = rate;
            }
            let n = frame.samples.len() / usize::from(channels.max(1));
            let length = Duration::from_secs_f64(n as f64 / f64::from(rate.max(1)));
            frame.timestamp = self.timeline.map(frame.timestamp, swapped, length);
            if let Some(s) = &self.stamps {
                s.record(frame.timestamp, got);
            }
            return Ok(frame);
        }
    }

    fn sample_rate(&self) -> u32 {
        self.format.0
    }

    fn channels(&self) -> u16 {
        self.format.1 as u16
    }

    fn stop(&mut self) {
        self.slot.close();
        if let Some(mut s) = self.slot.lock().current.take() {
            s.stop();
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
    // `RTCIO_SR_CLOCK=send`: the former send-time reports (to compare, in the avsync bench).
    let stamps = o
        .stamps
        .clone()
        .filter(|_| std::env::var("RTCIO_SR_CLOCK").map_or(true, |v| v != "send"));
    tokio::spawn(async move {
        while let Some(f) = sub.recv().await {
            // Toggled off: the encoder keeps running but nothing reaches the peers.
            if !on.load(Ordering::Relaxed) {
                continue;
            }
            let sample = MediaSample {
                data: f.data.clone(),
                duration: f.duration,
            };
            match stamps.as_ref().and_then(|s| s.capture_of(f.timestamp)) {
                Some(captured) => t.write_captured(&sample, captured).await,
                None => t.write(&sample).await,
            };
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
    start_bps: Option<u32>,
) -> TaskHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RATE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let estimate =
                followed_estimate(track.min_estimated_bitrate(), track.peer_count(), start_bps);
            let target = video_target_bps(&policy, estimate);
            let current = ctl.get();
            if worth_changing(current, target) {
                debug!(?estimate, current, target, "video target bitrate");
                ctl.set(target);
            }
        }
    })
}

/// Sizes Opus's in-band FEC for the worst loss a peer reports, and its bitrate for the
/// weakest peer's estimate (up to the configured rate).
fn spawn_audio_follower(
    track: LocalTrack,
    loss: LossControl,
    bitrate: BitrateControl,
) -> TaskHandle<()> {
    let default_loss = loss.get();
    let configured = bitrate.get();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(RATE_INTERVAL * 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let want = opus_expected_loss(track.max_reported_loss(), default_loss);
            if want != loss.get() {
                debug!(want, "opus expected loss");
                loss.set(want);
            }
            let bps = opus_target_bps(track.min_estimated_bitrate(), configured);
            if worth_changing(bitrate.get(), bps) {
                debug!(bps, "opus bitrate");
                bitrate.set(bps);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtcio_media::{PlugHandle, TestPatternConfig, TestPatternSource, Unpluggable};

    fn pattern(width: u32, height: u32) -> TestPatternSource {
        TestPatternSource::new(TestPatternConfig {
            width,
            height,
            fps: 30.0,
            paced: false,
        })
        .expect("valid pattern")
    }

    fn switchable(
        source: Box<dyn VideoSource>,
    ) -> (Arc<Slot<dyn VideoSource>>, Switchable<dyn VideoSource>) {
        let slot: Arc<Slot<dyn VideoSource>> = Slot::new(MediaKind::Video, source, "first");
        let sw = Switchable::new(slot.clone(), (160, 96), 30.0);
        (slot, sw)
    }

    fn mean_u(f: &I420Frame) -> f64 {
        f.u.iter().map(|&v| f64::from(v)).sum::<f64>() / f.u.len() as f64
    }

    #[test]
    fn capture_stamps_give_each_encoded_frame_its_source_instant() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Audio: keyed from the first frame (a source starting at 5 s is Opus time 0).
        let a = CaptureStamps::new(true);
        for k in 0..5u64 {
            a.record(ms(5_000 + 10 * k), t0 + ms(10 * k));
        }
        assert_eq!(a.capture_of(ms(20)), Some(t0 + ms(20)));
        // A packet starting inside a source frame: that frame's instant plus the difference.
        assert_eq!(a.capture_of(ms(25)), Some(t0 + ms(25)));
        // Video: the encoder keeps the source's timestamps.
        let v = CaptureStamps::new(false);
        v.record(ms(1_000), t0);
        v.record(ms(1_033), t0 + ms(40));
        assert_eq!(v.capture_of(ms(1_033)), Some(t0 + ms(40)));
        assert_eq!(v.capture_of(ms(999)), None);
        assert_eq!(v.capture_of(ms(3_000)), None);
    }

    #[test]
    fn a_replaced_source_continues_the_timeline_at_the_first_size() {
        let (slot, mut sw) = switchable(Box::new(pattern(160, 96)));
        let mut last = Duration::ZERO;
        for _ in 0..3 {
            last = sw.next_frame().expect("frame").timestamp;
        }
        let before = mean_u(&sw.next_frame().expect("frame"));
        // A bigger, green second camera whose clock starts at zero again.
        slot.replace(Box::new(pattern(320, 192).tinted(54, 34)), "second");
        let f = sw.next_frame().expect("frame of the new source");
        assert_eq!((f.width, f.height), (160, 96), "scaled to the track's size");
        assert!(f.timestamp > last, "{:?} after {last:?}", f.timestamp);
        assert!(f.timestamp <= last + Duration::from_millis(100));
        assert!((mean_u(&f) - before).abs() > 10.0, "the picture changed");
    }

    #[test]
    fn a_lost_source_is_reported_and_waits_for_a_replacement() {
        let (source, plug): (_, PlugHandle) = Unpluggable::new(pattern(160, 96), "camera");
        let (slot, mut sw) = switchable(Box::new(source));
        let mut failures = slot.failed.subscribe();
        assert!(sw.next_frame().is_ok());
        plug.unplug();
        let reader = std::thread::spawn(move || {
            let f = sw.next_frame();
            (f.map(|f| f.width), sw)
        });
        // The failure is reported while the reader waits (bounded: 10 s).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let failure = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), failures.wait_for(Option::is_some))
                .await
                .expect("a failure within 10 s")
                .expect("sender alive")
                .clone()
        });
        let failure = failure.expect("some");
        assert_eq!(failure.kind, MediaKind::Video);
        assert_eq!(failure.label, "first");
        assert!(failure.error.contains("unplugged"), "{}", failure.error);
        assert!(!reader.is_finished(), "the track waits instead of ending");
        slot.replace(Box::new(pattern(160, 96)), "fallback");
        let (width, mut sw) = reader.join().expect("reader");
        assert_eq!(width.expect("a frame of the fallback"), 160);
        // Closing (the stream stops) ends a reader that has no source.
        slot.lock().current = None;
        slot.close();
        assert!(matches!(sw.next_frame(), Err(MediaError::Stopped)));
    }

    #[test]
    fn a_replaced_audio_source_is_resampled_to_the_first_rate_and_continues() {
        use rtcio_media::{ToneConfig, ToneSource};
        let tone = |rate: u32, channels: u16| -> Box<dyn AudioSource> {
            Box::new(
                ToneSource::new(ToneConfig {
                    sample_rate: rate,
                    channels,
                    paced: false,
                    ..ToneConfig::default()
                })
                .expect("tone"),
            )
        };
        let slot: Arc<Slot<dyn AudioSource>> = Slot::new(MediaKind::Audio, tone(48_000, 1), "a");
        let mut sw = Switchable::new(slot.clone(), (48_000, 1), 0.0);
        let mut end = Duration::ZERO;
        for _ in 0..3 {
            let f = sw.next_frame().expect("frame");
            end = f.timestamp + Duration::from_millis(20);
        }
        // A 16 kHz stereo microphone instead: still 48 kHz mono on the track, right after.
        slot.replace(tone(16_000, 2), "b");
        let mut samples = 0;
        for i in 0..10 {
            let f = sw.next_frame().expect("frame of the new source");
            assert_eq!((f.sample_rate, f.channels), (48_000, 1));
            if i == 0 {
                assert_eq!(f.timestamp, end, "continues the timeline");
            }
            samples += f.samples.len();
        }
        // 10 × 20 ms at 48 kHz, less what the resampler holds back.
        assert!((8_000..=9_700).contains(&samples), "{samples} samples");
    }

    #[test]
    fn timeline_maps_each_source_after_the_last_frame() {
        let mut t = Timeline::default();
        let ms = Duration::from_millis;
        assert_eq!(t.map(ms(500), true, ms(20)), ms(500));
        assert_eq!(t.map(ms(520), false, ms(20)), ms(520));
        // A new source starting at 0 lands right after the last frame.
        assert_eq!(t.map(ms(0), true, ms(20)), ms(540));
        assert_eq!(t.map(ms(20), false, ms(20)), ms(560));
    }
}
