//! Lip sync policy: how long one peer's video waits for its audio, or its audio for its video.
//!
//! Both tracks of a sender are put on one time line with their RTCP sender reports (each maps
//! an RTP timestamp to the sender's wall clock, shared by its tracks). Compared with the
//! fastest arrival of each track on our side, that gives the *path offset*: how much later the
//! video of a moment arrives than the audio of the same moment (encoding, pacing, another
//! route). Until both reports are in (or when they make no sense), the offset is taken as 0:
//! audio and video of one peer share a path and a capture clock.
//!
//! Then, with the audio played `audio_delay` after its fastest arrival and the video needing
//! `video_jitter` after its own: video waits for audio when audio is the later one (the video
//! delay becomes `audio_delay − offset`, bounded by the video playout's maximum), and audio
//! waits for video otherwise (an extra audio delay of `offset + video_jitter − natural audio
//! delay`, at most [`AvSyncConfig::max_audio_extra`]; the jitter buffer takes it in 20 ms at a
//! time). Latency never grows without bound: each side's wait is capped.
//!
//! Plain functions of their inputs: the caller passes the reports and the fastest-arrival
//! functions of its playout state.

use std::time::{Duration, Instant};

use rtcio::SenderReport;

/// RTP clock rates of the tracks (Opus, video).
const AUDIO_CLOCK: u32 = 48_000;
const VIDEO_CLOCK: u32 = 90_000;

/// Settings of an [`AvSyncPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvSyncConfig {
    /// The most audio is delayed to wait for video (Chromium's NetEq allows about as much).
    pub max_audio_extra: Duration,
    /// A path offset beyond this means the reports do not describe one clock (a sender whose
    /// tracks have unrelated wall clocks, a clock step): the shared-clock assumption is used.
    pub max_path_offset: Duration,
    /// The extra audio delay changes only when the wanted one moves by more than this, so
    /// measurement noise does not stretch and skip audio back and forth.
    pub deadband: Duration,
    /// Audio starts waiting only for video later than this (and stops when it is less than
    /// half of it): video a little late is within the bound anyway, and a loopback call's
    /// video jitter would otherwise stretch and skip its audio all the time.
    pub min_audio_extra: Duration,
}

impl Default for AvSyncConfig {
    fn default() -> Self {
        AvSyncConfig {
            max_audio_extra: Duration::from_millis(500),
            max_path_offset: Duration::from_secs(1),
            deadband: Duration::from_millis(15),
            min_audio_extra: Duration::from_millis(30),
        }
    }
}

/// How much later (seconds; negative: earlier) the video of a moment arrives at best than the
/// audio of the same moment, from both tracks' sender reports and their fastest-arrival
/// functions (RTP timestamp → instant, e.g.
/// [`VideoPlayout::base_arrival`](rtcio_media::playout::video::VideoPlayout::base_arrival)).
/// `None` when a report or an arrival is missing or the offset is beyond `max`.
pub fn path_offset(
    audio_sr: Option<SenderReport>,
    video_sr: Option<SenderReport>,
    audio_base: impl Fn(u32) -> Option<Instant>,
    video_base: impl Fn(u32) -> Option<Instant>,
    max: Duration,
) -> Option<f64> {
    let (a, v) = (audio_sr?, video_sr?);
    // The moment of the video report, in audio RTP ticks. More than a 32-bit wrap apart
    // (12 h at 48 kHz) means the reports are unusable anyway.
    let gap = v.ntp_secs() - a.ntp_secs();
    if gap.abs() > 3600.0 {
        return None;
    }
    let audio_rtp = a
        .rtp_time
        .wrapping_add((gap * f64::from(AUDIO_CLOCK)).round() as i64 as u32);
    let video_at = video_base(v.rtp_time)?;
    let audio_at = audio_base(audio_rtp)?;
    let offset = signed_secs(video_at, audio_at);
    (offset.abs() <= max.as_secs_f64()).then_some(offset)
}

/// `a − b` in seconds.
fn signed_secs(a: Instant, b: Instant) -> f64 {
    if a >= b {
        (a - b).as_secs_f64()
    } else {
        -(b - a).as_secs_f64()
    }
}

/// Whether the report pair maps `video_rtp` and `audio_rtp` to the same sender moment within
/// `tolerance` (for tests and logs).
pub fn same_moment(
    audio_sr: &SenderReport,
    video_sr: &SenderReport,
    audio_rtp: u32,
    video_rtp: u32,
    tolerance: Duration,
) -> bool {
    let a = audio_sr.sender_time(audio_rtp, AUDIO_CLOCK);
    let v = video_sr.sender_time(video_rtp, VIDEO_CLOCK);
    (a - v).abs() <= tolerance.as_secs_f64()
}

/// One stream's lip sync decisions (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct AvSyncPolicy {
    config: AvSyncConfig,
    audio_extra: Duration,
}

impl AvSyncPolicy {
    /// No extra audio delay yet.
    pub fn new(config: AvSyncConfig) -> Self {
        AvSyncPolicy {
            config,
            audio_extra: Duration::ZERO,
        }
    }

    /// The delay to show video at over its fastest transit, given the audio's whole delay over
    /// its own (extra delay included) and the path offset (`None`: 0). The video playout
    /// bounds it further (its maximum).
    pub fn video_delay(&self, audio_delay: Duration, path_offset: Option<f64>) -> Duration {
        let d = audio_delay.as_secs_f64() - path_offset.unwrap_or(0.0);
        Duration::from_secs_f64(d.max(0.0))
    }

    /// The extra delay audio should get so it plays with its video: `natural_audio_delay` is
    /// the audio's delay over its fastest transit without the extra delay, `video_jitter` the
    /// video's own delay need (its jitter target, not what it waits for audio). Capped at
    /// [`AvSyncConfig::max_audio_extra`], changed only beyond the dead band.
    pub fn audio_extra(
        &mut self,
        natural_audio_delay: Duration,
        video_jitter: Duration,
        path_offset: Option<f64>,
    ) -> Duration {
        let want = path_offset.unwrap_or(0.0) + video_jitter.as_secs_f64()
            - natural_audio_delay.as_secs_f64();
        let want = Duration::from_secs_f64(want.max(0.0)).min(self.config.max_audio_extra);
        let threshold = if self.audio_extra.is_zero() {
            self.config.min_audio_extra
        } else {
            self.config.min_audio_extra / 2
        };
        let want = if want < threshold {
            Duration::ZERO
        } else {
            want
        };
        let moved = want.abs_diff(self.audio_extra);
        // Going to zero always happens: no delay is kept for nothing.
        if moved > self.config.deadband || want.is_zero() {
            self.audio_extra = want;
        }
        self.audio_extra
    }

    /// The extra audio delay decided last.
    pub fn current_audio_extra(&self) -> Duration {
        self.audio_extra
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    /// Reports of a sender whose audio and video RTP clocks start at `a0` / `v0` at NTP second
    /// 3.9e9, sent `at` seconds later.
    fn reports(a0: u32, v0: u32, at: f64, now: Instant) -> (SenderReport, SenderReport) {
        let ntp = |s: f64| (((3.9e9 + s) * 4_294_967_296.0) as u128 & u128::from(u64::MAX)) as u64;
        (
            SenderReport {
                ntp_time: ntp(at),
                rtp_time: a0.wrapping_add((at * 48_000.0) as u32),
                arrival: now,
            },
            SenderReport {
                ntp_time: ntp(at + 0.3),
                rtp_time: v0.wrapping_add(((at + 0.3) * 90_000.0) as u32),
                arrival: now,
            },
        )
    }

    /// Fastest arrivals: audio of sender second s at t0 + 50 ms + s, video at + `video_lag`.
    fn arrivals(
        a0: u32,
        v0: u32,
        t0: Instant,
        video_lag: f64,
    ) -> (
        impl Fn(u32) -> Option<Instant>,
        impl Fn(u32) -> Option<Instant>,
    ) {
        let at = move |s: f64| {
            if s >= 0.0 {
                t0 + Duration::from_secs_f64(s)
            } else {
                t0 - Duration::from_secs_f64(-s)
            }
        };
        (
            move |r: u32| Some(at(0.05 + f64::from(r.wrapping_sub(a0) as i32) / 48_000.0)),
            move |r: u32| {
                Some(at(0.05
                    + video_lag
                    + f64::from(r.wrapping_sub(v0) as i32) / 90_000.0))
            },
        )
    }

    #[test]
    fn path_offset_from_reports_either_sign_and_across_wraps() {
        let t0 = Instant::now() + Duration::from_secs(100);
        // RTP clocks about to wrap, reports 10 s in (past the wraps).
        let (a0, v0) = (u32::MAX - 100_000, u32::MAX - 7);
        let (asr, vsr) = reports(a0, v0, 10.0, t0);
        assert!(same_moment(&asr, &vsr, a0, v0, ms(1)));
        for lag in [0.12, -0.08, 0.0] {
            let (ab, vb) = arrivals(a0, v0, t0, lag);
            let off = path_offset(Some(asr), Some(vsr), ab, vb, ms(1000)).expect("offset");
            assert!((off - lag).abs() < 1e-4, "{off} vs {lag}");
        }
    }

    #[test]
    fn missing_reports_or_arrivals_give_no_offset() {
        let t0 = Instant::now();
        let (asr, vsr) = reports(5, 9, 1.0, t0);
        let (ab, vb) = arrivals(5, 9, t0, 0.1);
        assert_eq!(path_offset(None, Some(vsr), &ab, &vb, ms(1000)), None);
        assert_eq!(path_offset(Some(asr), None, &ab, &vb, ms(1000)), None);
        assert_eq!(
            path_offset(Some(asr), Some(vsr), |_| None, &vb, ms(1000)),
            None
        );
        // And the policy then assumes a shared path: video waits for the whole audio delay.
        let p = AvSyncPolicy::new(AvSyncConfig::default());
        assert_eq!(p.video_delay(ms(120), None), ms(120));
    }

    #[test]
    fn a_clock_step_in_one_report_falls_back_instead_of_waiting_for_it() {
        let t0 = Instant::now();
        let (asr, mut vsr) = reports(5, 9, 1.0, t0);
        let (ab, vb) = arrivals(5, 9, t0, 0.1);
        assert!(path_offset(Some(asr), Some(vsr), &ab, &vb, ms(1000)).is_some());
        // The sender's wall clock stepped 20 s between the two reports.
        vsr.ntp_time = vsr.ntp_time.wrapping_add(20 << 32);
        assert_eq!(path_offset(Some(asr), Some(vsr), &ab, &vb, ms(1000)), None);
        // Or by an hour and more: not even mapped.
        vsr.ntp_time = vsr.ntp_time.wrapping_add(7200 << 32);
        assert_eq!(path_offset(Some(asr), Some(vsr), &ab, &vb, ms(1000)), None);
    }

    #[test]
    fn video_waits_for_later_audio_minus_the_path_offset() {
        let p = AvSyncPolicy::new(AvSyncConfig::default());
        // Audio plays 200 ms after its fastest arrival; video arrives 120 ms after the audio of
        // the same moment: it waits 80 ms more.
        assert_eq!(p.video_delay(ms(200), Some(0.12)), ms(80));
        // Video faster than audio: it waits longer.
        assert_eq!(p.video_delay(ms(200), Some(-0.05)), ms(250));
        // Never a negative wait.
        assert_eq!(p.video_delay(ms(50), Some(0.3)), Duration::ZERO);
    }

    #[test]
    fn audio_waits_for_later_video_capped_and_with_a_dead_band() {
        let mut p = AvSyncPolicy::new(AvSyncConfig::default());
        // Video needs 250 ms (jitter), audio plays 50 ms after arrival: audio waits 200 ms.
        assert_eq!(p.audio_extra(ms(50), ms(250), None), ms(200));
        // Then audio plays 250 ms late: the video delay asked for is its jitter delay alone.
        assert_eq!(p.video_delay(ms(250), None), ms(250));
        // Video also arrives 100 ms after the audio: 300 ms.
        assert_eq!(p.audio_extra(ms(50), ms(250), Some(0.1)), ms(300));
        // Noise below the dead band leaves it alone.
        assert_eq!(p.audio_extra(ms(60), ms(250), Some(0.1)), ms(300));
        // Never more than the cap, however late the video.
        assert_eq!(p.audio_extra(ms(50), ms(300), Some(0.9)), ms(500));
        // Audio later than video: no extra at all.
        assert_eq!(p.audio_extra(ms(300), ms(40), Some(0.0)), Duration::ZERO);
        assert_eq!(p.current_audio_extra(), Duration::ZERO);
        // Video only a little later (20 ms): audio does not start waiting...
        assert_eq!(p.audio_extra(ms(50), ms(70), None), Duration::ZERO);
        // ...from 30 ms it does, and keeps waiting down to 15 ms.
        assert_eq!(p.audio_extra(ms(50), ms(90), None), ms(40));
        assert_eq!(p.audio_extra(ms(50), ms(70), None), ms(20));
        assert_eq!(p.audio_extra(ms(50), ms(60), None), Duration::ZERO);
    }
}
