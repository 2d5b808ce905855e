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
}
