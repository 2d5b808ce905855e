//! Receiving: a remote video track's access units decoded (OpenH264), a keyframe request (PLI)
//! when the picture cannot be decoded, and freeze counters like Chromium's `freezeCount` /
//! `totalFreezesDuration`. The app scales and paints what comes out; the CLI counts, measures
//! and records it.

use std::collections::VecDeque;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rtcio::{MediaFrame, RemoteTrack, RtpCodec};
use rtcio_media::{H264Decoder, I420Frame, MediaError, PliThrottle};
use tracing::debug;

/// Frame intervals the freeze rule averages over.
const FREEZE_WINDOW: usize = 30;
/// The shortest gap that counts as a freeze.
const MIN_FREEZE: Duration = Duration::from_millis(150);

/// Waits on a receive thread for the next frame of `track`, waking up every 200 ms to honour
/// `stop`; `None` when the track ended or `stop` was set ([`crate::recv_until`] without a
/// deadline; needs no runtime).
pub fn next_frame(track: &RemoteTrack, stop: &AtomicBool) -> Option<MediaFrame> {
    match crate::playout::recv_until(track, stop, None) {
        crate::playout::Recv::Frame(f) => Some(f),
        crate::playout::Recv::Due | crate::playout::Recv::Ended => None,
    }
}

/// Freezes seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FreezeStats {
    /// Gaps between shown frames longer than max(3 × the average interval, 150 ms).
    pub count: u64,
    /// Their summed length.
    pub total: Duration,
}

/// Chromium's freeze rule over the instants frames are shown: a gap longer than
/// max(3 × the recent average frame interval, 150 ms) is a freeze. Clock-injected.
#[derive(Debug, Default)]
pub struct FreezeDetector {
    last: Option<Instant>,
    intervals: VecDeque<Duration>,
    stats: FreezeStats,
}

impl FreezeDetector {
    /// No frames yet.
    pub fn new() -> Self {
        FreezeDetector::default()
    }

    /// A frame was shown at `at`; true when the gap before it was a freeze.
    pub fn on_frame(&mut self, at: Instant) -> bool {
        let Some(last) = self.last.replace(at) else {
            return false;
        };
        let gap = at.saturating_duration_since(last);
        let frozen = !self.intervals.is_empty() && gap > self.threshold();
        if frozen {
            self.stats.count += 1;
            self.stats.total += gap;
        } else {
            // A freeze is not a frame interval: it would inflate the average.
            if self.intervals.len() == FREEZE_WINDOW {
                self.intervals.pop_front();
            }
            self.intervals.push_back(gap);
        }
        frozen
    }

    fn threshold(&self) -> Duration {
        let n = self.intervals.len().max(1) as u32;
        let avg = self.intervals.iter().sum::<Duration>() / n;
        (avg * 3).max(MIN_FREEZE)
    }

    /// Freezes so far.
    pub fn stats(&self) -> FreezeStats {
        self.stats
    }
}

/// Counters of one remote video track.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VideoRecvStats {
    /// Access units received.
    pub received: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Keyframes received.
    pub keyframes: u64,
    /// Access units that followed a gap (lost packets).
    pub lost: u64,
    /// Pictures decoded.
    pub decoded: u64,
    /// Access units the decoder refused.
    pub decode_errors: u64,
    /// Keyframe requests (PLI) we sent.
    pub keyframe_requests: u64,
    /// Size of the last picture.
    pub size: (u32, u32),
    /// Freezes between decoded pictures.
    pub freezes: FreezeStats,
    /// The codec of the last access unit.
    pub codec: Option<RtpCodec>,
}

/// One remote video track's decoder: decode, ask for a keyframe when stuck, count.
pub struct VideoTrackDecoder {
    decoder: H264Decoder,
    pli: PliThrottle,
    freezes: FreezeDetector,
    stats: VideoRecvStats,
}

impl VideoTrackDecoder {
    /// A fresh decoder.
    pub fn new() -> Result<Self, MediaError> {
        Ok(VideoTrackDecoder {
            decoder: H264Decoder::new()?,
            pli: PliThrottle::new(),
            freezes: FreezeDetector::new(),
            stats: VideoRecvStats::default(),
        })
    }

    /// Decodes one access unit received at `now`; asks `track` for a keyframe (see
    /// [`PliThrottle`]) while the decoder has no usable reference. Non-H.264 frames (VP8 from a
    /// browser that would not take H.264) are counted, not decoded.
    pub fn push(
        &mut self,
        frame: &MediaFrame,
        track: &RemoteTrack,
        now: Instant,
    ) -> Option<I420Frame> {
        let st = &mut self.stats;
        st.received += 1;
        st.bytes += frame.data.len() as u64;
        st.keyframes += u64::from(frame.keyframe);
        st.lost += u64::from(frame.lost_before);
        st.codec = Some(frame.codec.clone());
        if frame.codec != RtpCodec::H264 {
            return None;
        }
        if frame.lost_before {
            self.decoder.packet_lost();
        }
        let pic = match self.decoder.decode(&frame.data, frame.rtp_timestamp) {
            Ok(p) => p,
            Err(e) => {
                debug!("decode: {e}");
                self.stats.decode_errors += 1;
                None
            }
        };
        if self.pli.want(self.decoder.needs_keyframe(), now) {
            track.request_keyframe();
            self.stats.keyframe_requests += 1;
        }
        let pic = pic?;
        self.freezes.on_frame(now);
        self.stats.decoded += 1;
        self.stats.size = (pic.width, pic.height);
        self.stats.freezes = self.freezes.stats();
        Some(pic)
    }

    /// Counters so far.
    pub fn stats(&self) -> &VideoRecvStats {
        &self.stats
    }
}

/// Gives a microphone's echo canceller what the speaker plays: every frame the playout `mixer`
/// hands its output, from now on. `speaker` says whether a real output device plays it (the
/// null sink or no playout: there is no echo, the canceller stays off and gets no far end).
pub fn feed_echo_canceller(
    mixer: &std::sync::Mutex<rtcio_media::AudioMixer>,
    speaker: bool,
    tap: Option<rtcio_media::RenderTap>,
    control: Option<rtcio_media::ApmControl>,
) {
    if let Some(c) = &control {
        c.set_output_present(speaker && tap.is_some());
    }
    mixer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .set_render_tap(tap.filter(|_| speaker));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut FreezeDetector, t0: Instant, ms: &[u64]) -> Vec<bool> {
        ms.iter()
            .map(|m| d.on_frame(t0 + Duration::from_millis(*m)))
            .collect()
    }

    #[test]
    fn steady_frames_do_not_freeze() {
        let mut d = FreezeDetector::new();
        let t0 = Instant::now();
        let times: Vec<u64> = (0..100).map(|i| i * 33).collect();
        assert!(feed(&mut d, t0, &times).iter().all(|f| !f));
        assert_eq!(d.stats(), FreezeStats::default());
    }

    #[test]
    fn a_gap_over_150_ms_at_30_fps_is_one_freeze() {
        let mut d = FreezeDetector::new();
        let t0 = Instant::now();
        let mut times: Vec<u64> = (0..30).map(|i| i * 33).collect();
        // 957 ms → 1 357 ms: a 400 ms gap, then normal frames again.
        times.extend((0..10).map(|i| 1357 + i * 33));
        let frozen = feed(&mut d, t0, &times);
        assert_eq!(frozen.iter().filter(|f| **f).count(), 1);
        assert_eq!(d.stats().count, 1);
        assert_eq!(d.stats().total, Duration::from_millis(400));
    }

    #[test]
    fn at_low_frame_rates_the_threshold_is_three_intervals() {
        let mut d = FreezeDetector::new();
        let t0 = Instant::now();
        // 5 fps: 200 ms intervals; 500 ms is no freeze (< 600), then with that 500 in the
        // average (260 ms → 780 ms) 900 ms is.
        let times = [0, 200, 400, 600, 1100, 1300, 2200];
        let frozen = feed(&mut d, t0, &times);
        assert_eq!(frozen, vec![false, false, false, false, false, false, true]);
    }

    #[test]
    fn the_first_gap_is_never_a_freeze() {
        let mut d = FreezeDetector::new();
        let t0 = Instant::now();
        assert_eq!(feed(&mut d, t0, &[0, 5000]), vec![false, false]);
    }
}
