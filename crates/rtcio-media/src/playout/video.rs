//! Receive-side video timing: a frame pacer that turns RTP timestamps into render times, and
//! basic A/V sync from RTCP sender reports (or, without them, from the audio playout delay).

use std::time::{Duration, Instant};

use tracing::debug;

use crate::codec::h264::H264Decoder;
use crate::error::Result;
use crate::frame::{AUDIO_SAMPLE_RATE, I420Frame, RtpUnwrapper, VIDEO_CLOCK_RATE};

/// What to do with a decoded frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaceDecision {
    /// Show it at this instant (maybe now).
    RenderAt(Instant),
    /// It is too late to be worth showing.
    Drop,
}

/// Schedules decoded frames so motion is smooth despite network jitter.
///
/// The pacer tracks the lowest transit time seen (RTP time vs arrival) as its anchor and renders
/// each frame at `anchor + rtp offset + delay`. Frames later than `max_lateness` are dropped;
/// after a stall of more than a second it re-anchors instead of dropping everything.
#[derive(Debug)]
pub struct VideoPacer {
    unwrapper: RtpUnwrapper,
    anchor: Option<(u64, Instant)>,
    delay: Duration,
    max_lateness: Duration,
    rendered: u64,
    dropped: u64,
}

impl VideoPacer {
    /// A pacer adding `delay` of smoothing (e.g. 50 ms).
    pub fn new(delay: Duration) -> Self {
        Self {
            unwrapper: RtpUnwrapper::new(),
            anchor: None,
            delay,
            max_lateness: Duration::from_millis(50),
            rendered: 0,
            dropped: 0,
        }
    }

    /// Changes the smoothing delay (A/V sync raises it to match audio).
    pub fn set_delay(&mut self, delay: Duration) {
        self.delay = delay.min(Duration::from_secs(2));
    }

    /// Current delay.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Frames scheduled / dropped so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.rendered, self.dropped)
    }

    /// Decides when the frame with `rtp_timestamp` (90 kHz), decoded at `now`, is shown.
    pub fn schedule(&mut self, rtp_timestamp: u32, now: Instant) -> PaceDecision {
        let ext = self.unwrapper.unwrap(rtp_timestamp);
        let to_dur = |ticks: i64| {
            Duration::from_nanos(ticks.unsigned_abs() * 1_000_000_000 / u64::from(VIDEO_CLOCK_RATE))
        };
        let (anchor_rtp, anchor_at) = *self.anchor.get_or_insert((ext, now));
        let offset = ext as i64 - anchor_rtp as i64;
        let nominal = if offset >= 0 {
            anchor_at + to_dur(offset)
        } else {
            anchor_at.checked_sub(to_dur(offset)).unwrap_or(anchor_at)
        };
        // Arrived earlier than the anchor predicts: lower transit, move the anchor.
        if now < nominal {
            self.anchor = Some((ext, now));
            self.rendered += 1;
            return PaceDecision::RenderAt(now + self.delay);
        }
        let due = nominal + self.delay;
        if due + self.max_lateness >= now {
            self.rendered += 1;
            return PaceDecision::RenderAt(due.max(now));
        }
        if now - due > Duration::from_secs(1) {
            // A stall: start over from this frame.
            self.anchor = Some((ext, now));
            self.rendered += 1;
            return PaceDecision::RenderAt(now + self.delay);
        }
        self.dropped += 1;
        PaceDecision::Drop
    }
}

/// Basic lip sync between one audio and one video stream of the same peer.
///
/// With RTCP sender reports for both streams (RTP timestamp ↔ sender wall clock), a video frame
/// is rendered when the audio captured at the same moment plays. Without them, video is simply
/// delayed by the audio playout delay ([`AvSync::fallback_video_delay`]).
#[derive(Debug, Default)]
pub struct AvSync {
    audio_sr: Option<(u32, Duration)>,
    video_sr: Option<(u32, Duration)>,
}

fn rtp_to_wall(sr: (u32, Duration), rtp: u32, clock: u32) -> Duration {
    let diff = rtp.wrapping_sub(sr.0) as i32;
    let d = Duration::from_nanos(u64::from(diff.unsigned_abs()) * 1_000_000_000 / u64::from(clock));
    if diff >= 0 {
        sr.1 + d
    } else {
        sr.1.saturating_sub(d)
    }
}

impl AvSync {
    /// No reports yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an audio sender report: `rtp` corresponds to sender wall clock `ntp`.
    pub fn audio_sender_report(&mut self, rtp: u32, ntp: Duration) {
        self.audio_sr = Some((rtp, ntp));
    }

    /// Records a video sender report.
    pub fn video_sender_report(&mut self, rtp: u32, ntp: Duration) {
        self.video_sr = Some((rtp, ntp));
    }

    /// When to render video frame `video_rtp`, given that audio frame `audio_rtp` starts
    /// playing at `audio_playing_at`. `None` until both sender reports are known.
    pub fn video_render_time(
        &self,
        video_rtp: u32,
        audio_rtp: u32,
        audio_playing_at: Instant,
    ) -> Option<Instant> {
        let v = rtp_to_wall(self.video_sr?, video_rtp, VIDEO_CLOCK_RATE);
        let a = rtp_to_wall(self.audio_sr?, audio_rtp, AUDIO_SAMPLE_RATE);
        Some(if v >= a {
            audio_playing_at + (v - a)
        } else {
            audio_playing_at
                .checked_sub(a - v)
                .unwrap_or(audio_playing_at)
        })
    }

    /// Without sender reports: delay video by the audio path's delay (jitter buffer plus device
    /// latency) minus the video path's own decode delay, never below `min`.
    pub fn fallback_video_delay(
        audio_delay: Duration,
        video_decode_delay: Duration,
        min: Duration,
    ) -> Duration {
        audio_delay.saturating_sub(video_decode_delay).max(min)
    }
}

/// What [`RemoteVideo::push`] produced.
#[derive(Debug, Default)]
pub struct RemoteVideoOutput {
    /// A decoded picture and when to show it (dropped late frames give `None`).
    pub frame: Option<(I420Frame, Instant)>,
    /// Send a PLI to the sender now (throttled to one per 500 ms).
    pub send_pli: bool,
}

/// When a receiver whose decoder lost its reference asks the sender for a keyframe (PLI): at
/// once, then at most every [`PliThrottle::INTERVAL`] while it still has none (the keyframe
/// needs a round trip and a burst of packets; asking on every frame only adds load).
#[derive(Debug, Default, Clone)]
pub struct PliThrottle {
    last: Option<Instant>,
}

impl PliThrottle {
    /// The shortest time between two keyframe requests.
    pub const INTERVAL: Duration = Duration::from_millis(500);

    /// No request sent yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether to send a PLI now, given whether the decoder needs a keyframe.
    pub fn want(&mut self, needs_keyframe: bool, now: Instant) -> bool {
        if !needs_keyframe
            || self
                .last
                .is_some_and(|t| now.saturating_duration_since(t) < Self::INTERVAL)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// One remote peer's video: H.264 decoder, pacer, and PLI throttling.
#[derive(Debug)]
pub struct RemoteVideo {
    decoder: H264Decoder,
    pacer: VideoPacer,
    pli: PliThrottle,
}

impl RemoteVideo {
    /// A receiver pacing with `delay` of smoothing.
    pub fn new(delay: Duration) -> Result<Self> {
        Ok(Self {
            decoder: H264Decoder::new()?,
            pacer: VideoPacer::new(delay),
            pli: PliThrottle::new(),
        })
    }

    /// The pacer (to adjust its delay for A/V sync).
    pub fn pacer(&mut self) -> &mut VideoPacer {
        &mut self.pacer
    }

    fn want_pli(&mut self, now: Instant) -> bool {
        self.pli.want(self.decoder.needs_keyframe(), now)
    }

    /// Tells the receiver an access unit was lost (RTP sequence gap).
    pub fn packet_lost(&mut self, now: Instant) -> bool {
        self.decoder.packet_lost();
        self.want_pli(now)
    }

    /// Decodes one depacketized access unit. Decoder errors are logged and turned into a PLI.
    pub fn push(
        &mut self,
        access_unit: &[u8],
        rtp_timestamp: u32,
        now: Instant,
    ) -> RemoteVideoOutput {
        let decoded = match self.decoder.decode(access_unit, rtp_timestamp) {
            Ok(d) => d,
            Err(e) => {
                debug!(error = %e, "remote video decode failed");
                None
            }
        };
        let frame = decoded.and_then(|f| match self.pacer.schedule(rtp_timestamp, now) {
            PaceDecision::RenderAt(at) => Some((f, at)),
            PaceDecision::Drop => None,
        });
        RemoteVideoOutput {
            frame,
            send_pli: self.want_pli(now),
        }
    }
}

/// `base + secs` for a signed number of seconds (an instant before `base` saturates at it).
fn offset_instant(base: Instant, secs: f64) -> Instant {
    if secs >= 0.0 {
        base + Duration::from_secs_f64(secs)
    } else {
        base.checked_sub(Duration::from_secs_f64(-secs))
            .unwrap_or(base)
    }
}

/// Settings of a [`VideoPlayout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VideoPlayoutConfig {
    /// The lowest playout delay over the fastest frame's transit (a frame interval of margin
    /// for the decoder).
    pub min_delay: Duration,
    /// The highest: beyond it frames are dropped (and A/V sync stops waiting), so latency never
    /// grows without bound. Room for a repaired loss: on a 150 ms round trip with a queued link
    /// a retransmission takes 250–300 ms, and at a 300 ms bound every frame it held was
    /// dropped (a freeze per lost packet, 3 % loss froze 6 s in 20 s); libwebrtc adds the
    /// round trip to its delay once it NACKs, under a far higher bound.
    pub max_delay: Duration,
    /// How many recent frames the transit statistics cover (10 s at 30 fps).
    pub window: usize,
    /// How fast a raised delay comes back down, per second of media.
    pub decay_per_second: Duration,
    /// Consecutive frames later than `max_delay` after which the path is taken to have changed
    /// (a longer route, a sender clock jump) and the statistics restart from the next frame.
    pub reanchor_after: u32,
}

impl Default for VideoPlayoutConfig {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(500),
            window: 300,
            decay_per_second: Duration::from_millis(50),
            reanchor_after: 15,
        }
    }
}

/// Counters of a [`VideoPlayout`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VideoPlayoutStats {
    /// Frames given a render time.
    pub scheduled: u64,
    /// Frames later than the maximum delay: shown as soon as they arrived.
    pub shown_late: u64,
    /// Times the transit statistics restarted.
    pub reanchors: u64,
}

/// Video playout timing: when to show each frame so motion stays smooth despite network jitter,
/// and so it lines up with the same peer's audio.
///
/// Each frame's *transit* is its arrival time minus its capture time (RTP timestamp) on the
/// receiver's clock, up to a constant. The fastest transit of the recent window is the
/// path's base; a frame's *excess* over it is the jitter it suffered (queueing, a NACK
/// retransmission, a late keyframe). A frame is shown at capture time + base + the target
/// delay, where the target is the 95th percentile of the recent excess, raised at once by a
/// frame that arrives later than that and decaying slowly back (Chromium's idea: delay ≈ the
/// frame jitter estimate), plus whatever A/V sync asks ([`VideoPlayout::set_sync_delay`]), all
/// bounded by [`VideoPlayoutConfig::max_delay`]. Frames that waited for a retransmission are
/// kept out of that: while repairs happen the target is at least the *median* repair (the
/// lateness of the first frame of each held run), as libwebrtc adds the round trip to its
/// delay while it NACKs; a repair slower than that plays late instead of raising the delay
/// for everyone (the longest repair set it before: 3 % loss on a 150 ms round trip kept
/// every frame ~450 ms late). Frames whose excess is beyond the maximum are shown as soon as
/// they arrive (and after half a second of them the path's base starts over). Plain and
/// clock-injected: the caller passes every instant.
#[derive(Debug)]
pub struct VideoPlayout {
    config: VideoPlayoutConfig,
    unwrapper: RtpUnwrapper,
    /// Receiver instant and extended RTP timestamp that transit offsets are measured from.
    anchor: Option<(Instant, u64)>,
    /// Recent transit offsets, seconds, oldest first.
    transits: std::collections::VecDeque<f64>,
    /// Reused for the 95th percentile of the window (no allocation per frame).
    scratch: Vec<f64>,
    /// The jitter target before decay (seconds) and the RTP time it was last updated at.
    peak: f64,
    last_ext: Option<u64>,
    sync: Duration,
    target: Duration,
    late_run: u32,
    /// Lateness (seconds) of the first frame of recent held runs, newest last.
    repairs: std::collections::VecDeque<f64>,
    /// Whether the previous frame was held (a held run is one repair).
    in_held_run: bool,
    /// Extended RTP time of the newest held frame.
    last_held_ext: Option<u64>,
    stats: VideoPlayoutStats,
}

/// Repair samples kept for the median.
const REPAIR_SAMPLES: usize = 9;
/// How long the repair allowance is kept after the last held frame (media time) before it
/// decays: losses on a lossy link come every second or two.
const REPAIR_HOLD_SECS: f64 = 2.0;

impl VideoPlayout {
    /// A playout with nothing seen yet.
    pub fn new(config: VideoPlayoutConfig) -> Self {
        Self {
            config,
            unwrapper: RtpUnwrapper::new(),
            anchor: None,
            transits: std::collections::VecDeque::new(),
            scratch: Vec::new(),
            peak: 0.0,
            last_ext: None,
            sync: Duration::ZERO,
            target: config.min_delay,
            late_run: 0,
            repairs: std::collections::VecDeque::new(),
            in_held_run: false,
            last_held_ext: None,
            stats: VideoPlayoutStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> VideoPlayoutStats {
        self.stats
    }

    /// The delay frames are currently shown at over the fastest transit (jitter target or A/V
    /// sync, whichever is longer, bounded).
    pub fn delay(&self) -> Duration {
        self.target
            .max(self.sync)
            .clamp(self.config.min_delay, self.config.max_delay)
    }

    /// The jitter part of the delay alone.
    pub fn jitter_delay(&self) -> Duration {
        self.target
    }

    /// Asks for video to be shown `delay` after the fastest transit (what the peer's audio
    /// plays at, see [`AudioPlayoutClock::delay`]); bounded by the maximum delay.
    pub fn set_sync_delay(&mut self, delay: Duration) {
        self.sync = delay.min(self.config.max_delay);
    }

    /// When a frame with `rtp_timestamp` arrives (arrived) on the fastest transit of the recent
    /// window: the path's base, which lip sync compares with the audio's. `None` before the
    /// first frame. Timestamps within ±2^31 ticks of the newest frame's are unwrapped.
    pub fn base_arrival(&self, rtp_timestamp: u32) -> Option<Instant> {
        let (anchor_at, anchor_ext) = self.anchor?;
        let last = self.last_ext?;
        let base = self.transits.iter().copied().reduce(f64::min)?;
        let ext = last as i64 + i64::from(rtp_timestamp.wrapping_sub(last as u32) as i32);
        let media = (ext - anchor_ext as i64) as f64 / f64::from(VIDEO_CLOCK_RATE);
        Some(offset_instant(anchor_at, base + media))
    }

    fn reset(&mut self) {
        self.anchor = None;
        self.transits.clear();
        self.peak = 0.0;
        self.last_ext = None;
        self.late_run = 0;
        self.repairs.clear();
        self.in_held_run = false;
        self.last_held_ext = None;
    }

    /// What repairs add to the delay at media time `ext`: the median repair while they
    /// happen, decaying like the jitter peak from [`REPAIR_HOLD_SECS`] after the last one.
    fn repair_allowance(&self, ext: u64) -> f64 {
        let Some(last) = self.last_held_ext else {
            return 0.0;
        };
        if self.repairs.is_empty() {
            return 0.0;
        }
        // No allocation per frame: at most REPAIR_SAMPLES values.
        let mut sorted = [0.0f64; REPAIR_SAMPLES];
        let n = self.repairs.len().min(REPAIR_SAMPLES);
        for (d, s) in sorted.iter_mut().zip(&self.repairs) {
            *d = *s;
        }
        let sorted = &mut sorted[..n];
        sorted.sort_unstable_by(f64::total_cmp);
        let median = sorted[n / 2];
        let since = ext.saturating_sub(last) as f64 / f64::from(VIDEO_CLOCK_RATE);
        let decay = self.config.decay_per_second.as_secs_f64() * (since - REPAIR_HOLD_SECS);
        (median - decay.max(0.0)).max(0.0)
    }

    /// When to show the frame with `rtp_timestamp` (90 kHz) that arrived (last packet) at
    /// `arrival` (at once when it is later than the maximum delay; never dropped).
    ///
    /// `held_for_loss`: the frame waited for a missing packet (a retransmission; see
    /// `rtcio::MediaFrame::held_for_loss`). The lateness of the first frame of a held run is a
    /// repair sample: the delay is at least their median while repairs happen (so the frames
    /// of a loss burst play smoothly, as libwebrtc adds the round trip to its delay while it
    /// NACKs), decaying from 2 s after the last one. Held frames stay out of the window's 95th
    /// percentile, which held one second of 30 % loss for the next 10 s (with a burst every
    /// 10 s, every frame was ~270 ms late for good), and out of the jitter peak, which made
    /// the slowest repair everyone's delay.
    pub fn schedule_frame(
        &mut self,
        rtp_timestamp: u32,
        arrival: Instant,
        held_for_loss: bool,
    ) -> PaceDecision {
        self.schedule_inner(
            rtp_timestamp,
            arrival,
            held_for_loss && !self.transits.is_empty(),
        )
    }

    /// [`VideoPlayout::schedule_frame`] for a frame that did not wait for a lost packet.
    pub fn schedule(&mut self, rtp_timestamp: u32, arrival: Instant) -> PaceDecision {
        self.schedule_inner(rtp_timestamp, arrival, false)
    }

    fn schedule_inner(&mut self, rtp_timestamp: u32, arrival: Instant, held: bool) -> PaceDecision {
        let ext = self.unwrapper.unwrap(rtp_timestamp);
        let (anchor_at, anchor_ext) = *self.anchor.get_or_insert((arrival, ext));
        let media = |e: u64| (e as f64 - anchor_ext as f64) / f64::from(VIDEO_CLOCK_RATE);
        let since = |t: Instant| {
            if t >= anchor_at {
                (t - anchor_at).as_secs_f64()
            } else {
                -(anchor_at - t).as_secs_f64()
            }
        };
        let transit = since(arrival) - media(ext);
        if !held {
            if self.transits.len() == self.config.window.max(1) {
                self.transits.pop_front();
            }
            self.transits.push_back(transit);
        }
        let base = self.transits.iter().copied().fold(f64::INFINITY, f64::min);
        let excess = transit - base;
        // Decay the peak over the media time since the previous frame (never on reordering).
        if let Some(prev) = self.last_ext
            && ext > prev
        {
            let dt = (ext - prev) as f64 / f64::from(VIDEO_CLOCK_RATE);
            self.peak -= self.config.decay_per_second.as_secs_f64() * dt.min(1.0);
        }
        self.last_ext = Some(self.last_ext.map_or(ext, |p| p.max(ext)));
        let max = self.config.max_delay.as_secs_f64();
        if excess > max {
            // Shown as soon as it is here, not dropped: a newer picture is not here yet (frames
            // come in order), so dropping it only showed nothing for longer. Chromium, too,
            // skips a late frame only for a newer decodable one, which the queue does. (Network
            // bench (c), Rust → Rust: 15–26 frames were dropped at the capacity drop; freezes
            // there did not measurably change, the queue delays every frame anyway.)
            self.stats.shown_late += 1;
            if !held {
                // Late for a repair is not a longer path.
                self.late_run += 1;
                if self.late_run >= self.config.reanchor_after {
                    // Every frame for half a second was beyond the maximum: the path itself
                    // changed. Start over (the next frame sets the new base).
                    self.reset();
                    self.stats.reanchors += 1;
                }
            }
            return PaceDecision::RenderAt(arrival);
        }
        if held {
            if !self.in_held_run {
                // The first frame of a held run waited the whole repair; the rest less.
                if self.repairs.len() == REPAIR_SAMPLES {
                    self.repairs.pop_front();
                }
                self.repairs.push_back(excess.max(0.0));
            }
            self.last_held_ext = Some(self.last_held_ext.map_or(ext, |p| p.max(ext)));
        } else {
            self.late_run = 0;
            self.peak = self.peak.max(excess);
        }
        self.in_held_run = held;
        self.scratch.clear();
        self.scratch.extend(self.transits.iter().map(|t| t - base));
        let at = (self.scratch.len() * 95 / 100).min(self.scratch.len().saturating_sub(1));
        let (_, p95, _) = self.scratch.select_nth_unstable_by(at, f64::total_cmp);
        let p95 = *p95;
        self.peak = self.peak.max(p95);
        let target = self.peak.max(self.repair_allowance(ext));
        self.target = Duration::from_secs_f64(target.clamp(0.0, max))
            .clamp(self.config.min_delay, self.config.max_delay);
        let render = base + media(ext) + self.delay().as_secs_f64();
        self.stats.scheduled += 1;
        PaceDecision::RenderAt(if render >= 0.0 {
            anchor_at + Duration::from_secs_f64(render)
        } else {
            anchor_at
                .checked_sub(Duration::from_secs_f64(-render))
                .unwrap_or(anchor_at)
        })
    }
}

/// Where one peer's audio is in time, for lip sync: its fastest transit (arrival vs RTP
/// timestamp, like [`VideoPlayout`]'s) and when its packets play (the mixer's playing RTP
/// timestamp, sampled). The difference is the audio's delay over the fastest transit — what
/// video must be shown at to line up, assuming audio and video of one peer share a path and a
/// capture clock. Plain and clock-injected.
#[derive(Debug, Default)]
pub struct AudioPlayoutClock {
    anchor: Option<(Instant, u32)>,
    /// (when, offset in seconds) of recent arrivals and of recent playing samples.
    arrivals: std::collections::VecDeque<(Instant, f64)>,
    playing: std::collections::VecDeque<(Instant, f64)>,
}

/// How long [`AudioPlayoutClock`] remembers arrivals (the fastest transit).
const AUDIO_BASE_WINDOW: Duration = Duration::from_secs(10);
/// And playing samples (the playout clock's phase: a sample is taken somewhere inside a 20 ms
/// slot, the earliest-looking one is the slot's start).
const AUDIO_PLAY_WINDOW: Duration = Duration::from_secs(1);

impl AudioPlayoutClock {
    /// Nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn offset(&mut self, at: Instant, rtp: u32) -> f64 {
        let (a, r) = *self.anchor.get_or_insert((at, rtp));
        let media = f64::from(rtp.wrapping_sub(r) as i32) / f64::from(AUDIO_SAMPLE_RATE);
        let since = if at >= a {
            (at - a).as_secs_f64()
        } else {
            -(a - at).as_secs_f64()
        };
        since - media
    }

    fn push(
        q: &mut std::collections::VecDeque<(Instant, f64)>,
        at: Instant,
        x: f64,
        keep: Duration,
    ) {
        while q
            .front()
            .is_some_and(|(t, _)| at.saturating_duration_since(*t) > keep)
        {
            q.pop_front();
        }
        q.push_back((at, x));
    }

    /// A packet with `rtp` (48 kHz) arrived at `arrival`.
    pub fn on_arrival(&mut self, rtp: u32, arrival: Instant) {
        let x = self.offset(arrival, rtp);
        Self::push(&mut self.arrivals, arrival, x, AUDIO_BASE_WINDOW);
    }

    /// At `now` the output was playing the packet with RTP timestamp `rtp`.
    pub fn on_playing(&mut self, rtp: u32, now: Instant) {
        let x = self.offset(now, rtp);
        Self::push(&mut self.playing, now, x, AUDIO_PLAY_WINDOW);
    }

    fn min(q: &std::collections::VecDeque<(Instant, f64)>) -> Option<f64> {
        q.iter().map(|(_, x)| *x).reduce(f64::min)
    }

    /// The audio's delay from its fastest transit to being played; `None` until both arrivals
    /// and playing samples were seen.
    pub fn delay(&self) -> Option<Duration> {
        let d = Self::min(&self.playing)? - Self::min(&self.arrivals)?;
        Some(Duration::from_secs_f64(d.max(0.0)))
    }

    /// When the audio with RTP timestamp `rtp` arrives (arrived) on the fastest transit of the
    /// recent window (what lip sync compares with the video's); `None` before any arrival.
    pub fn base_arrival(&self, rtp: u32) -> Option<Instant> {
        let (a, r) = self.anchor?;
        let x = Self::min(&self.arrivals)?;
        let t = x + f64::from(rtp.wrapping_sub(r) as i32) / f64::from(AUDIO_SAMPLE_RATE);
        Some(offset_instant(a, t))
    }

    /// When the audio with RTP timestamp `rtp` plays (or played), from the playout clock's
    /// phase; `None` before any playing sample.
    pub fn play_time(&self, rtp: u32) -> Option<Instant> {
        let (a, r) = self.anchor?;
        let x = Self::min(&self.playing)?;
        let t = x + f64::from(rtp.wrapping_sub(r) as i32) / f64::from(AUDIO_SAMPLE_RATE);
        Some(if t >= 0.0 {
            a + Duration::from_secs_f64(t)
        } else {
            a.checked_sub(Duration::from_secs_f64(-t)).unwrap_or(a)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_spaces_frames_by_rtp_time() {
        let mut p = VideoPacer::new(Duration::from_millis(40));
        let t0 = Instant::now();
        let PaceDecision::RenderAt(a) = p.schedule(0, t0) else {
            panic!("first frame dropped")
        };
        // Second frame arrives late by 10 ms of jitter; still rendered 33 ms after the first.
        let PaceDecision::RenderAt(b) = p.schedule(3000, t0 + Duration::from_millis(43)) else {
            panic!("second frame dropped")
        };
        assert_eq!(b - a, Duration::from_nanos(33_333_333));
        // A frame 200 ms late is dropped.
        assert_eq!(
            p.schedule(6000, t0 + Duration::from_millis(300)),
            PaceDecision::Drop
        );
    }

    #[test]
    fn pli_at_once_then_at_most_every_interval() {
        let mut p = PliThrottle::new();
        let t0 = Instant::now();
        assert!(
            !p.want(false, t0),
            "a decoder with a reference asks nothing"
        );
        assert!(p.want(true, t0));
        assert!(!p.want(true, t0 + Duration::from_millis(499)));
        assert!(p.want(true, t0 + PliThrottle::INTERVAL));
    }

    #[test]
    fn sender_reports_align_video_to_audio() {
        let mut s = AvSync::new();
        s.audio_sender_report(48_000, Duration::from_secs(100));
        s.video_sender_report(90_000, Duration::from_secs(100));
        let now = Instant::now();
        // Video captured 100 ms after the audio now playing.
        let at = s.video_render_time(90_000 + 9_000, 48_000, now).unwrap();
        assert_eq!(at - now, Duration::from_millis(100));
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    fn render_ms(p: &mut VideoPlayout, t0: Instant, frame: u32, arrival_ms: u64) -> Option<i64> {
        match p.schedule(frame * 3000, at(t0, arrival_ms)) {
            PaceDecision::RenderAt(r) => Some((r - t0).as_millis() as i64),
            PaceDecision::Drop => None,
        }
    }

    #[test]
    fn playout_without_jitter_adds_only_the_minimum() {
        let mut p = VideoPlayout::new(VideoPlayoutConfig::default());
        let t0 = Instant::now();
        for i in 0..100u32 {
            let arrival = u64::from(i) * 100 / 3;
            let r = render_ms(&mut p, t0, i, arrival).expect("shown");
            assert!(
                (r - arrival as i64 - 10).abs() <= 1,
                "frame {i}: {r} vs {arrival}"
            );
        }
        assert_eq!(p.delay(), Duration::from_millis(10));
    }

    #[test]
    fn playout_delay_follows_jitter_and_spaces_frames_evenly() {
        let mut p = VideoPlayout::new(VideoPlayoutConfig::default());
        let t0 = Instant::now();
        // Every 10th frame is 120 ms late (a retransmission): the target rises to cover it, so
        // frames keep their 33 ms spacing instead of freezing.
        let mut renders = Vec::new();
        for i in 0..90u32 {
            let late = if i % 10 == 5 { 120 } else { 0 };
            let arrival = u64::from(i) * 100 / 3 + late;
            renders.push(render_ms(&mut p, t0, i, arrival).expect("never dropped"));
        }
        assert!(p.delay() >= Duration::from_millis(110), "{:?}", p.delay());
        let tail = &renders[20..];
        for w in tail.windows(2) {
            assert!((w[1] - w[0] - 33).abs() <= 1, "uneven: {tail:?}");
        }
    }

    #[test]
    fn a_loss_burst_raises_the_delay_for_seconds_not_for_the_window() {
        let t0 = Instant::now();
        let ms = |v: u64| t0 + Duration::from_millis(v);
        // 2 s on time, then one second whose frames each wait 150 ms for a retransmission,
        // then on time again; flagged (`held`) or not.
        let run = |held: bool| {
            let mut p = VideoPlayout::new(VideoPlayoutConfig::default());
            let mut delays = Vec::new();
            for i in 0..300u32 {
                let late = if (60..90).contains(&i) { 150 } else { 0 };
                let at = ms(u64::from(i) * 100 / 3 + late);
                let flagged = held && late > 0;
                assert!(
                    matches!(
                        p.schedule_frame(i * 3000, at, flagged),
                        PaceDecision::RenderAt(_)
                    ),
                    "frame {i} dropped"
                );
                delays.push(p.delay());
            }
            delays
        };
        let (held, plain) = (run(true), run(false));
        // During the burst both cover the retransmission: its frames play smoothly.
        assert!(held[70] >= Duration::from_millis(140), "{:?}", held[70]);
        // 5 s after it, the held frames' delay has decayed to the minimum; the plain frames'
        // is still held up by the window's 95th percentile (10 s of frames).
        assert_eq!(held[240], Duration::from_millis(10));
        assert!(plain[240] >= Duration::from_millis(140), "{:?}", plain[240]);
    }

    #[test]
    fn repairs_add_their_median_not_the_slowest_one() {
        let t0 = Instant::now();
        // 30 fps for 20 s; every 20th frame's packet is lost and repaired `r` ms late, and the
        // five frames behind it are delivered with it (one held run per repair).
        let repairs = [200u64, 250, 300, 230, 280, 480];
        let mut p = VideoPlayout::new(VideoPlayoutConfig::default());
        let mut run_end = 0u32;
        let mut repair_at = 0u64;
        let mut k = 0usize;
        for i in 0..600u32 {
            let due = u64::from(i) * 100 / 3;
            let held = i > 0 && (i % 20 == 0 || i < run_end);
            if i % 20 == 0 && i > 0 {
                repair_at = due + repairs[k % repairs.len()];
                k += 1;
                run_end = i + 6;
            }
            let at = if held { repair_at.max(due) } else { due };
            assert!(
                matches!(
                    p.schedule_frame(i * 3000, t0 + Duration::from_millis(at), held),
                    PaceDecision::RenderAt(_)
                ),
                "frame {i} dropped"
            );
            if i > 300 {
                let d = p.delay().as_millis();
                assert!((230..=300).contains(&d), "frame {i}: {d} ms");
            }
        }
    }

    #[test]
    fn playout_shows_frames_past_the_maximum_at_once_and_reanchors_on_a_path_change() {
        let mut p = VideoPlayout::new(VideoPlayoutConfig::default());
        let t0 = Instant::now();
        for i in 0..30u32 {
            render_ms(&mut p, t0, i, u64::from(i) * 100 / 3).expect("shown");
        }
        // One frame 500 ms late: shown as it arrives, not dropped, not held.
        assert_eq!(render_ms(&mut p, t0, 30, 1000 + 500), Some(1500));
        assert_eq!(p.stats().shown_late, 1);
        assert_eq!(p.stats().reanchors, 0);
        // A frame late for a repair, too.
        assert_eq!(
            p.schedule_frame(31 * 3000, at(t0, 1033 + 500), true),
            PaceDecision::RenderAt(at(t0, 1533))
        );
        // The path gets 1 s longer for good: every frame is shown (the first half second as it
        // arrives), then playout restarts on the new base and smooths again.
        for i in 32..90u32 {
            let arrival = u64::from(i) * 100 / 3 + 1000;
            let shown = render_ms(&mut p, t0, i, arrival).expect("shown");
            assert!(shown >= arrival as i64, "frame {i}: {shown} < {arrival}");
        }
        assert_eq!(p.stats().reanchors, 1);
        assert!(p.stats().shown_late >= 15);
        assert!(p.delay() <= Duration::from_millis(300));
    }

    #[test]
    fn sync_delay_is_honoured_but_bounded() {
        let mut p = VideoPlayout::new(VideoPlayoutConfig::default());
        let t0 = Instant::now();
        p.set_sync_delay(Duration::from_millis(150));
        assert_eq!(render_ms(&mut p, t0, 0, 0), Some(150));
        p.set_sync_delay(Duration::from_secs(5));
        let max = VideoPlayoutConfig::default().max_delay.as_millis() as i64;
        assert_eq!(render_ms(&mut p, t0, 1, 33), Some(33 + max));
    }

    #[test]
    fn base_arrivals_follow_the_fastest_transit() {
        let mut p = VideoPlayout::new(VideoPlayoutConfig::default());
        let mut c = AudioPlayoutClock::new();
        let t0 = Instant::now();
        assert_eq!(p.base_arrival(0), None);
        assert_eq!(c.base_arrival(0), None);
        // Video starting just below the wrap, every other frame 30 ms late.
        let v0 = u32::MAX - 3000 * 5;
        for i in 0..20u32 {
            let late = if i % 2 == 1 { 30 } else { 0 };
            p.schedule(
                v0.wrapping_add(i * 3000),
                at(t0, 100 + u64::from(i) * 100 / 3 + late),
            );
            c.on_arrival(7 + i * 960, at(t0, 50 + u64::from(i) * 20 + late));
        }
        // Frame 30 (past the wrap) would arrive at best 100 ms + 1 s.
        let b = p.base_arrival(v0.wrapping_add(30 * 3000)).expect("known");
        assert!(((b - t0).as_secs_f64() - 1.1).abs() < 0.001, "{b:?}");
        let b = c.base_arrival(7 + 50 * 960).expect("known");
        assert!(((b - t0).as_secs_f64() - 1.05).abs() < 0.001, "{b:?}");
        // Before the anchor too.
        let b = c.base_arrival(7u32.wrapping_sub(960)).expect("known");
        assert!(((b - t0).as_secs_f64() - 0.03).abs() < 0.001, "{b:?}");
    }

    #[test]
    fn audio_clock_measures_the_playout_delay() {
        let mut c = AudioPlayoutClock::new();
        let t0 = Instant::now();
        assert_eq!(c.delay(), None);
        // Packets arrive on time every 20 ms (one 15 ms late); the output plays each one 80 ms
        // after its arrival, sampled at various points inside its 20 ms slot.
        for i in 0..100u32 {
            let late = if i == 50 { 15 } else { 0 };
            c.on_arrival(i * 960, at(t0, u64::from(i) * 20 + late));
            if i >= 4 {
                let playing = i - 4;
                c.on_playing(playing * 960, at(t0, u64::from(i) * 20 + u64::from(i % 7)));
            }
        }
        let d = c.delay().expect("known");
        assert!((d.as_secs_f64() - 0.080).abs() < 0.002, "{d:?}");
        let t = c.play_time(99 * 960).expect("known");
        assert!(((t - t0).as_secs_f64() - (1.980 + 0.080)).abs() < 0.002);
    }
}
