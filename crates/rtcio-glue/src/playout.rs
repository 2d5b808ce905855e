//! Playout of remote video: decoded pictures wait for their render time (capture time + a
//! jitter-adaptive delay, see [`rtcio_media::playout::video::VideoPlayout`]) and are shown then,
//! in step with the same stream's audio (lip sync); a picture later than the maximum delay is
//! shown at once.
//! The CLI and the app both receive with [`recv_until`] and hold pictures in a
//! [`VideoPlayoutQueue`]; a stream's audio thread keeps its [`AudioPlayoutClock`] current with
//! [`note_audio_playout`] and asks [`LipSync::sync_audio`] for its extra delay, and the video
//! thread asks [`LipSync::video_sync_delay`] how long to wait: the policy is
//! [`crate::avsync`] (RTCP sender reports when both tracks have one, else a shared clock).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtcio::{MediaFrame, RemoteTrack, SenderReport};
use rtcio_media::AudioMixer;
use rtcio_media::playout::video::{
    AudioPlayoutClock, PaceDecision, VideoPlayout, VideoPlayoutConfig,
};

use crate::avsync::{self, AvSyncConfig, AvSyncPolicy};
use crate::recv::{FreezeDetector, FreezeStats};

/// How often a blocked receive wakes up to check whether it should stop.
const RECV_POLL: Duration = Duration::from_millis(200);
/// Pictures held at most (300 ms at 60 fps, with margin): beyond it the oldest goes.
const MAX_QUEUED: usize = 32;

/// What [`recv_until`] got.
#[derive(Debug)]
pub enum Recv {
    /// The next frame of the track.
    Frame(MediaFrame),
    /// The deadline passed first.
    Due,
    /// The track ended, or `stop` was set.
    Ended,
}

/// Waits on a receive thread for the next frame of `track`, at most until `deadline` (a
/// queued picture's render time), waking up every 200 ms to honour `stop`. Needs no runtime
/// ([`RemoteTrack::recv_timeout`]): a thread still here while the app or CLI shuts its runtime
/// down ends instead of panicking.
pub fn recv_until(track: &RemoteTrack, stop: &AtomicBool, deadline: Option<Instant>) -> Recv {
    // Bounded: each pass waits ≥ 1 ms or returns.
    loop {
        if stop.load(Ordering::Relaxed) {
            return Recv::Ended;
        }
        let now = Instant::now();
        let wait = match deadline {
            Some(d) if d <= now => return Recv::Due,
            Some(d) => (d - now).min(RECV_POLL),
            None => RECV_POLL,
        };
        match track.recv_timeout(wait) {
            rtcio::TimedRecv::Frame(f) => return Recv::Frame(f),
            rtcio::TimedRecv::Ended => return Recv::Ended,
            rtcio::TimedRecv::TimedOut => continue,
        }
    }
}

/// Counters of a [`VideoPlayoutQueue`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct VideoPlayoutStats {
    /// Pictures shown.
    pub shown: u64,
    /// Pictures that arrived later than the maximum delay (shown at once).
    pub shown_late: u64,
    /// Pictures dropped because a newer one was due at the same time (the consumer was
    /// behind) or the queue was full.
    pub dropped_stale: u64,
    /// Freezes between shown pictures (Chromium's rule).
    pub freezes: FreezeStats,
    /// The current delay over the fastest transit (jitter target or lip sync).
    pub delay: Duration,
    /// Its jitter part alone.
    pub jitter_delay: Duration,
}

/// Decoded pictures waiting for their render time. `T` is whatever the caller shows (an
/// [`rtcio_media::I420Frame`], or something already scaled).
#[derive(Debug)]
pub struct VideoPlayoutQueue<T> {
    policy: VideoPlayout,
    queue: VecDeque<(Instant, T)>,
    freezes: FreezeDetector,
    shown: u64,
    stale: u64,
    enabled: bool,
}

impl<T> VideoPlayoutQueue<T> {
    /// An empty queue with the default policy (delay bounded to 500 ms).
    pub fn new() -> Self {
        Self::with_config(VideoPlayoutConfig::default())
    }

    /// An empty queue with the given policy settings.
    pub fn with_config(config: VideoPlayoutConfig) -> Self {
        VideoPlayoutQueue {
            policy: VideoPlayout::new(config),
            queue: VecDeque::new(),
            freezes: FreezeDetector::new(),
            shown: 0,
            stale: 0,
            enabled: true,
        }
    }

    /// With `false`, pictures are shown as soon as they are pushed (no smoothing, no lip sync):
    /// what the app and CLI did before; kept to measure the difference.
    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
    }

    /// Asks for pictures to be shown `delay` over the fastest transit (the stream's audio
    /// delay, for lip sync); bounded by the policy's maximum.
    pub fn set_sync_delay(&mut self, delay: Duration) {
        self.policy.set_sync_delay(delay);
    }

    /// Adds a picture of the frame with `rtp_timestamp` that arrived at `arrival`
    /// (`held_for_loss`: it waited for a retransmission, `rtcio::MediaFrame::held_for_loss`).
    /// False when the policy dropped it.
    pub fn push(
        &mut self,
        picture: T,
        rtp_timestamp: u32,
        arrival: Instant,
        held_for_loss: bool,
    ) -> bool {
        let at = match self
            .policy
            .schedule_frame(rtp_timestamp, arrival, held_for_loss)
        {
            PaceDecision::RenderAt(at) if self.enabled => at,
            PaceDecision::RenderAt(_) => arrival,
            PaceDecision::Drop if self.enabled => return false,
            PaceDecision::Drop => arrival,
        };
        if self.queue.len() >= MAX_QUEUED {
            self.queue.pop_front();
            self.stale += 1;
        }
        // Render times only go back when the delay shrinks (slowly): keep the order anyway.
        let pos = self.queue.partition_point(|(t, _)| *t <= at);
        self.queue.insert(pos, (at, picture));
        true
    }

    /// When a frame with `rtp_timestamp` arrives at best (the video path's base), for lip sync.
    pub fn base_arrival(&self, rtp_timestamp: u32) -> Option<Instant> {
        self.policy.base_arrival(rtp_timestamp)
    }

    /// The render time of the next picture.
    pub fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|(t, _)| *t)
    }

    /// The picture to show at `now`: the newest one due (older due ones are dropped as stale).
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        let mut out = None;
        while self.queue.front().is_some_and(|(t, _)| *t <= now) {
            if out.is_some() {
                self.stale += 1;
            }
            out = self.queue.pop_front().map(|(_, p)| p);
        }
        if out.is_some() {
            self.shown += 1;
            self.freezes.on_frame(now);
        }
        out
    }

    /// Counters so far.
    pub fn stats(&self) -> VideoPlayoutStats {
        VideoPlayoutStats {
            shown: self.shown,
            shown_late: self.policy.stats().shown_late,
            dropped_stale: self.stale,
            freezes: self.freezes.stats(),
            delay: self.policy.delay(),
            jitter_delay: self.policy.jitter_delay(),
        }
    }
}

impl<T> Default for VideoPlayoutQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Whom a remote video waits for: its stream's entry `key` in `lipsync`, with the track's
/// latest sender report (`None` to assume audio and video share a path).
#[derive(Debug, Clone, Copy)]
pub struct VideoSync<'a> {
    /// The shared lip sync state.
    pub lipsync: &'a LipSync,
    /// The stream's entry in it.
    pub key: &'a str,
    /// The video track's latest RTCP sender report.
    pub sender_report: Option<SenderReport>,
}

/// One remote video track's path after the network, as the app and the CLI both run it on
/// the track's receive thread: decode (a keyframe request while the picture is broken), the
/// lip sync delay, the jitter-adaptive playout. The callers differ only in what they do with
/// a picture that is due:
///
/// ```ignore
/// loop {
///     match recv_until(&track, &stop, path.next_due()) {
///         Recv::Frame(f) => if let Some(pic) = path.on_frame(&f, &track, Instant::now(), sync) { show(pic) },
///         Recv::Due => if let Some(pic) = path.on_due(Instant::now()) { show(pic) },
///         Recv::Ended => break,
///     }
/// }
/// ```
pub struct RemoteVideoPath {
    decoder: crate::recv::VideoTrackDecoder,
    playout: VideoPlayoutQueue<rtcio_media::I420Frame>,
}

impl RemoteVideoPath {
    /// A path with an H.264 decoder and a playout with `config`.
    pub fn new(config: VideoPlayoutConfig) -> Result<Self, rtcio_media::MediaError> {
        Ok(RemoteVideoPath {
            decoder: crate::recv::VideoTrackDecoder::new()?,
            playout: VideoPlayoutQueue::with_config(config),
        })
    }

    /// Turns the playout timing off (every picture shown on arrival) or on.
    pub fn set_playout_enabled(&mut self, on: bool) {
        self.playout.set_enabled(on);
    }

    /// When the next held picture is due (the deadline for [`recv_until`]).
    pub fn next_due(&self) -> Option<Instant> {
        self.playout.next_due()
    }

    /// A received frame at `now`: decoded, scheduled after the lip sync delay `sync` asks for
    /// (none: no lip sync); returns the picture due now, if any (this one or an earlier one).
    pub fn on_frame(
        &mut self,
        frame: &MediaFrame,
        track: &RemoteTrack,
        now: Instant,
        sync: Option<VideoSync<'_>>,
    ) -> Option<rtcio_media::I420Frame> {
        let pic = self.decoder.push(frame, track, now)?;
        if let Some(s) = sync {
            let wait = s
                .lipsync
                .video_sync_delay(s.key, &self.playout, s.sender_report);
            self.playout.set_sync_delay(wait);
        }
        self.playout.push(
            pic,
            frame.rtp_timestamp,
            frame.received,
            frame.held_for_loss,
        );
        self.playout.pop_due(Instant::now())
    }

    /// The picture due at `now`, if any (after [`recv_until`] returned [`Recv::Due`]).
    pub fn on_due(&mut self, now: Instant) -> Option<rtcio_media::I420Frame> {
        self.playout.pop_due(now)
    }

    /// The decoder's counters.
    pub fn decoder_stats(&self) -> &crate::recv::VideoRecvStats {
        self.decoder.stats()
    }

    /// The playout's counters.
    pub fn playout_stats(&self) -> VideoPlayoutStats {
        self.playout.stats()
    }
}

/// One stream's audio playout clock, shared by its audio thread (writer) and video thread.
pub type SharedAudioClock = Arc<Mutex<AudioPlayoutClock>>;

/// One stream's lip sync state, shared by its audio and video threads.
#[derive(Debug, Default)]
struct StreamSync {
    audio_sr: Option<SenderReport>,
    video_sr: Option<SenderReport>,
    /// The video's own delay need (jitter target), from its thread.
    video_jitter: Option<Duration>,
    /// Video path − audio path (s) from the reports, when known.
    path_offset: Option<f64>,
    policy: AvSyncPolicy,
}

/// What lip sync of one stream is doing (for stats lines).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SyncStatus {
    /// Video arrives this much later than the audio of the same moment (ms), from both
    /// tracks' sender reports; `None`: not both reports yet, a shared path is assumed.
    pub path_offset_ms: Option<f64>,
    /// The extra audio delay asked for (audio waits for video).
    pub audio_extra: Duration,
}

/// The audio playout clock and lip sync state of every remote stream, by a key the caller
/// chooses (peer and stream).
#[derive(Debug, Default, Clone)]
pub struct LipSync {
    clocks: Arc<Mutex<HashMap<String, SharedAudioClock>>>,
    states: Arc<Mutex<HashMap<String, Arc<Mutex<StreamSync>>>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LipSync {
    /// No streams yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The clock of stream `key` (created on first use).
    pub fn clock(&self, key: &str) -> SharedAudioClock {
        lock(&self.clocks)
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    fn state(&self, key: &str) -> Arc<Mutex<StreamSync>> {
        lock(&self.states)
            .entry(key.to_string())
            .or_insert_with(|| {
                Arc::new(Mutex::new(StreamSync {
                    policy: AvSyncPolicy::new(AvSyncConfig::default()),
                    ..StreamSync::default()
                }))
            })
            .clone()
    }

    /// Forgets stream `key`.
    pub fn remove(&self, key: &str) {
        lock(&self.clocks).remove(key);
        lock(&self.states).remove(key);
    }

    /// The audio delay of stream `key` over its fastest transit, if its audio plays.
    pub fn audio_delay(&self, key: &str) -> Option<Duration> {
        let clock = lock(&self.clocks).get(key).cloned()?;
        lock(&clock).delay()
    }

    /// How long the video of stream `key` should wait over its fastest transit to play with
    /// its audio (zero while no audio plays): called by the video thread with its queue and
    /// the track's latest sender report (`None` to assume a shared path).
    pub fn video_sync_delay<T>(
        &self,
        key: &str,
        queue: &VideoPlayoutQueue<T>,
        video_sr: Option<SenderReport>,
    ) -> Duration {
        let clock = self.clock(key);
        let state = self.state(key);
        let mut st = lock(&state);
        st.video_sr = video_sr;
        st.video_jitter = Some(queue.stats().jitter_delay);
        let c = lock(&clock);
        st.path_offset = avsync::path_offset(
            st.audio_sr,
            st.video_sr,
            |r| c.base_arrival(r),
            |v| queue.base_arrival(v),
            AvSyncConfig::default().max_path_offset,
        );
        match c.delay() {
            Some(audio) => st.policy.video_delay(audio, st.path_offset),
            None => Duration::ZERO,
        }
    }

    /// After [`note_audio_playout`]: records the audio track's latest sender report (`None`
    /// to assume a shared path) and sets the extra delay of mixer peer `mix_id` so the audio
    /// waits for its video when the video is the later one. Returns what lip sync is doing.
    pub fn sync_audio(
        &self,
        key: &str,
        mixer: &Mutex<AudioMixer>,
        mix_id: &str,
        audio_sr: Option<SenderReport>,
    ) -> SyncStatus {
        let clock = self.clock(key);
        let state = self.state(key);
        let mut st = lock(&state);
        st.audio_sr = audio_sr;
        let mut m = lock(mixer);
        let Some(peer) = m.peer(mix_id) else {
            return SyncStatus::default();
        };
        let applied = peer.extra_delay();
        let audio = lock(&clock).delay();
        let extra = match (audio, st.video_jitter) {
            (Some(total), Some(jitter)) => {
                let natural = total.saturating_sub(applied);
                let offset = st.path_offset;
                st.policy.audio_extra(natural, jitter, offset)
            }
            // No video (yet): nothing to wait for.
            _ => Duration::ZERO,
        };
        peer.set_extra_delay(extra);
        SyncStatus {
            path_offset_ms: st.path_offset.map(|o| o * 1000.0),
            audio_extra: extra,
        }
    }
}

/// After an audio packet of mixer peer `mix_id` (RTP `rtp_timestamp`, arrived at `arrival`) was
/// pushed into `mixer`: records its arrival and what the mixer is playing now in `clock`.
pub fn note_audio_playout(
    clock: &Mutex<AudioPlayoutClock>,
    mixer: &Mutex<AudioMixer>,
    mix_id: &str,
    rtp_timestamp: u32,
    arrival: Instant,
) {
    let playing = lock(mixer).peer(mix_id).and_then(|p| p.playing_rtp());
    let now = Instant::now();
    let mut c = lock(clock);
    c.on_arrival(rtp_timestamp, arrival);
    // The jitter buffer's extended timestamps keep the low 32 bits of the RTP ones.
    if let Some(p) = playing {
        c.on_playing(p as u32, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_wait_for_their_render_time_and_the_newest_due_wins() {
        let mut q = VideoPlayoutQueue::new();
        let t0 = Instant::now();
        q.set_sync_delay(Duration::from_millis(100));
        assert!(q.push(0u32, 0, t0, false));
        assert!(q.push(1u32, 3000, t0 + Duration::from_millis(33), false));
        assert!(q.push(2u32, 6000, t0 + Duration::from_millis(66), false));
        let due = q.next_due().expect("queued");
        assert_eq!(due - t0, Duration::from_millis(100));
        assert_eq!(q.pop_due(t0 + Duration::from_millis(99)), None);
        assert_eq!(q.pop_due(due), Some(0));
        // A consumer 60 ms behind gets the newest due picture; the one before is stale.
        assert_eq!(q.pop_due(t0 + Duration::from_millis(175)), Some(2));
        let st = q.stats();
        assert_eq!((st.shown, st.dropped_stale), (2, 1));
    }

    #[test]
    fn disabled_shows_at_arrival() {
        let mut q = VideoPlayoutQueue::new();
        q.set_enabled(false);
        q.set_sync_delay(Duration::from_millis(100));
        let t0 = Instant::now();
        q.push('a', 0, t0, false);
        assert_eq!(q.pop_due(t0), Some('a'));
    }
}
