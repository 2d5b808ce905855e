//! Adaptation policies, pure and clock-injected so they are testable without a network:
//!
//! * [`BitrateController`]: the encoder's target bitrate from receiver feedback that webrtc-rs
//!   exposes — RTCP receiver reports (fraction lost, RTT), REMB, and the receive rate measured
//!   from transport-wide congestion control feedback. Loss-based like Google Congestion
//!   Control: grow 8 %/s under 2 % loss, hold between 2 and 10 %, cut by half the loss above.
//! * [`SharedBitrate`]: one encoder feeds every peer, so its target is the lowest of the peers'.
//! * [`QualityScaler`]: steps resolution and frame rate down when encoding eats too much of the
//!   frame budget (CPU pressure), the encoder cannot get down to its target bitrate, or the
//!   target (the link's estimate) is too low for the size, and back up when there is headroom
//!   again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Limits of a [`BitrateController`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitrateConfig {
    /// Never go below this.
    pub min_bps: u32,
    /// Never go above this.
    pub max_bps: u32,
    /// Where to start.
    pub start_bps: u32,
}

impl Default for BitrateConfig {
    fn default() -> Self {
        Self {
            min_bps: 150_000,
            max_bps: 2_500_000,
            start_bps: 800_000,
        }
    }
}

/// Loss/RTT/REMB/receive-rate driven target bitrate for one receiver.
#[derive(Clone, Debug)]
pub struct BitrateController {
    config: BitrateConfig,
    target: f64,
    last_update: Option<Instant>,
    remb: Option<u32>,
    rtt: Option<Duration>,
}

impl BitrateController {
    /// Starts at `config.start_bps`.
    pub fn new(config: BitrateConfig) -> Self {
        Self {
            config,
            target: f64::from(config.start_bps.clamp(config.min_bps, config.max_bps)),
            last_update: None,
            remb: None,
            rtt: None,
        }
    }

    /// Current target in bits per second.
    pub fn target_bps(&self) -> u32 {
        self.target as u32
    }

    /// Last RTT reported.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    fn clamp(&mut self) -> u32 {
        let cap = self
            .remb
            .map_or(self.config.max_bps, |r| r.min(self.config.max_bps));
        self.target = self.target.clamp(
            f64::from(self.config.min_bps),
            f64::from(cap.max(self.config.min_bps)),
        );
        self.target as u32
    }

    /// An RTCP receiver report: `fraction_lost` in 0..=1 (the report's 8-bit value / 256) and
    /// the round-trip time if known. Returns the new target.
    pub fn on_receiver_report(
        &mut self,
        fraction_lost: f32,
        rtt: Option<Duration>,
        now: Instant,
    ) -> u32 {
        let loss = f64::from(fraction_lost.clamp(0.0, 1.0));
        if rtt.is_some() {
            self.rtt = rtt;
        }
        let elapsed = self
            .last_update
            .map_or(Duration::from_secs(1), |t| now.saturating_duration_since(t))
            .min(Duration::from_secs(2));
        self.last_update = Some(now);
        if loss > 0.10 {
            self.target *= 1.0 - 0.5 * loss;
        } else if loss < 0.02 {
            // 8 %/s, slower when the path is long (RTT above 200 ms halves it).
            let rate: f64 = if self.rtt.is_some_and(|r| r > Duration::from_millis(200)) {
                0.04
            } else {
                0.08
            };
            self.target *= (1.0 + rate).powf(elapsed.as_secs_f64());
        }
        self.clamp()
    }

    /// A REMB message: the receiver's estimate caps the target.
    pub fn on_remb(&mut self, bps: u32) -> u32 {
        self.remb = Some(bps);
        self.clamp()
    }

    /// The receive rate measured from transport-wide CC feedback: when sending clearly more than
    /// arrives, the path is congested; drop to 90 % of what arrives.
    pub fn on_receive_rate(&mut self, received_bps: u32) -> u32 {
        let received = f64::from(received_bps);
        if self.target > received * 1.25 {
            self.target = received * 0.9;
        }
        self.clamp()
    }
}

/// The target for one encoder shared by several peers: the lowest peer's target.
#[derive(Clone, Debug)]
pub struct SharedBitrate {
    config: BitrateConfig,
    peers: BTreeMap<String, BitrateController>,
}

impl SharedBitrate {
    /// No peers yet.
    pub fn new(config: BitrateConfig) -> Self {
        Self {
            config,
            peers: BTreeMap::new(),
        }
    }

    /// The controller of `peer` (created on first use).
    pub fn peer(&mut self, peer: &str) -> &mut BitrateController {
        let config = self.config;
        self.peers
            .entry(peer.to_owned())
            .or_insert_with(|| BitrateController::new(config))
    }

    /// Forgets a peer that left.
    pub fn remove(&mut self, peer: &str) {
        self.peers.remove(peer);
    }

    /// The encoder's target: the minimum over peers (start rate with none).
    pub fn target_bps(&self) -> u32 {
        self.peers
            .values()
            .map(BitrateController::target_bps)
            .min()
            .unwrap_or(self.config.start_bps)
    }
}

/// Skips frames when the encoder's output runs ahead of its target bitrate (WebRTC's frame
/// dropper): a leaky bucket that every encoded frame fills with its bits and that drains at the
/// target rate; while it holds more than [`FrameDropper::WINDOW`] of the target, the next frame
/// is not encoded. Without it an encoder that cannot compress down to a low target (big
/// keyframes, hard content) overshoots the link and the loss that follows drives the estimate
/// lower still. Clock-free: time is the frames' own timestamps.
///
/// A keyframe is charged in [`FrameDropper::KEYFRAME_SPREAD`] parts, one with it and one with
/// each following frame sent (libwebrtc spreads it the same way): charged at once, a keyframe several
/// times the window at a low target (a 360p IDR behind a 600 kbit/s link) skipped the next
/// 5–15 frames in a row, a freeze on every keyframe a lossy link asks for. Spread, the same bits
/// cost single skipped frames over the next half second.
///
/// When the target falls the bucket is scaled down with it (libwebrtc's `SetRates` does the
/// same): a bucket filled at 830 kbit/s and drained at 300 kbit/s skipped every frame for 1.4 s
/// after each cut of the estimate.
#[derive(Clone, Debug, Default)]
pub struct FrameDropper {
    bits: f64,
    last: Option<Duration>,
    dropped: u64,
    /// Bits of the last keyframe not charged yet, and the part charged per frame.
    spread: (f64, f64),
    /// The target of the previous frame, bits/s (0 before the first).
    target: u32,
}

impl FrameDropper {
    /// How far ahead of its target the encoder may run.
    pub const WINDOW: Duration = Duration::from_millis(500);
    /// Frames a keyframe's bits are charged over (half a second at 30 fps).
    pub const KEYFRAME_SPREAD: u32 = 15;

    /// An empty bucket.
    pub fn new() -> Self {
        Self::default()
    }

    fn drain(&mut self, now: Duration, target_bps: u32) {
        if let Some(last) = self.last {
            let dt = now.saturating_sub(last).as_secs_f64();
            self.bits = (self.bits - dt * f64::from(target_bps)).max(0.0);
        }
        self.last = Some(now);
    }

    /// Whether to skip the frame captured at `timestamp`.
    pub fn should_drop(&mut self, timestamp: Duration, target_bps: u32) -> bool {
        if target_bps < self.target {
            self.bits *= f64::from(target_bps) / f64::from(self.target);
        }
        self.target = target_bps;
        self.drain(timestamp, target_bps);
        let drop = self.bits > f64::from(target_bps) * Self::WINDOW.as_secs_f64();
        self.dropped += u64::from(drop);
        drop
    }

    /// An encoded frame of `bytes` left the encoder (`keyframe`: charged over the next
    /// [`FrameDropper::KEYFRAME_SPREAD`] frames).
    pub fn on_encoded(&mut self, bytes: usize, keyframe: bool) {
        let bits = bytes as f64 * 8.0;
        // The next part of a spread keyframe rides on each frame sent (charged on skipped
        // frames too, it would keep the bucket full and skip frames in a row all the same).
        let (left, part) = self.spread;
        if left > 0.0 {
            let now = part.min(left);
            self.bits += now;
            self.spread.0 = left - now;
        }
        if keyframe {
            let part = bits / f64::from(Self::KEYFRAME_SPREAD);
            // A keyframe replaces what is left of an earlier one. Keyframes that close together
            // come from a call's start (the stream attached, then the peer connected: the first
            // reached nobody); peers' requests are at least a second apart. Owed on top, two
            // such IDRs held a call's first 3 s at 10 fps.
            self.bits += part;
            self.spread = (bits - part, part);
        } else {
            self.bits += bits;
        }
    }

    /// Frames skipped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// The encoder's output against its target over windows of about a second, for the quality
/// scaler's overshoot rule ([`QualityReason::Bitrate`]). A window's budget is the target in
/// force over each frame's interval, so the bits sent just before a cut of the target are not
/// read as an overshoot at the new one (read against the new target, one cut of the estimate
/// stepped the picture down a rung: 360p30 → 360p20 → 270p15 behind a 600 kbit/s link).
/// Keyframes are left out: they are asked for, and the frame dropper spreads their cost.
#[derive(Clone, Debug, Default)]
pub struct OvershootMeter {
    start: Option<Duration>,
    last: Option<Duration>,
    bits: f64,
    budget: f64,
}

impl OvershootMeter {
    /// Length of a window.
    pub const WINDOW: Duration = Duration::from_secs(1);

    /// An empty meter.
    pub fn new() -> Self {
        Self::default()
    }

    /// A frame of `bytes` encoded at `timestamp` under `target_bps`; returns the output/target
    /// ratio of the window it completes.
    pub fn on_encoded(
        &mut self,
        timestamp: Duration,
        bytes: usize,
        keyframe: bool,
        target_bps: u32,
    ) -> Option<f64> {
        let Some(last) = self.last.replace(timestamp) else {
            // The first frame only opens the window: its bits have no interval before them.
            self.start = Some(timestamp);
            return None;
        };
        self.budget += timestamp.saturating_sub(last).as_secs_f64() * f64::from(target_bps);
        if !keyframe {
            self.bits += bytes as f64 * 8.0;
        }
        let start = *self.start.get_or_insert(timestamp);
        if timestamp.saturating_sub(start) < Self::WINDOW {
            return None;
        }
        let ratio = if self.budget > 0.0 {
            self.bits / self.budget
        } else {
            1.0
        };
        self.start = Some(timestamp);
        self.bits = 0.0;
        self.budget = 0.0;
        Some(ratio)
    }

    /// Starts over (a new rung: its output is judged on its own).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// One rung of the quality ladder.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QualityStep {
    /// Picture scale relative to the source (1.0 = full size).
    pub scale: f32,
    /// Maximum frame rate.
    pub max_fps: f32,
}

/// Why the quality changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QualityReason {
    /// Encoding took too much of the frame budget.
    Cpu,
    /// The encoder overshot its target bitrate (cannot compress this size enough).
    Bitrate,
    /// The target bitrate (the link's estimate) is too low for this size and frame rate.
    TargetBitrate,
    /// Headroom came back.
    Recovered,
}

/// Steps resolution / frame rate down under pressure and back up when it is gone.
#[derive(Clone, Debug)]
pub struct QualityScaler {
    ladder: Vec<QualityStep>,
    level: usize,
    load: f64,
    overshoot: f64,
    frames_since_change: u32,
    /// Media time since the last change (the frame intervals fed since).
    time_since_change: Duration,
    /// Target bitrate, full (source) size and source frame rate, for the bits-per-pixel rule.
    budget: Option<(u32, (u32, u32), f32)>,
    /// The last step up for headroom: the rung it went to and the target it was taken at.
    last_up: Option<(usize, u32)>,
    /// A step up the target could not hold (see [`QualityScaler::FAILED_UP_WINDOW`]).
    failed_up: Option<FailedUp>,
}

/// A step up to `level` at `bps` that was followed by a step down for the target within
/// [`QualityScaler::FAILED_UP_WINDOW`]: the estimate was above what the link carries.
#[derive(Clone, Copy, Debug)]
struct FailedUp {
    level: usize,
    bps: u32,
    /// Media time since it failed.
    age: Duration,
}

impl Default for QualityScaler {
    /// Resolution first, frame rate last (720p30 → 540p30 → 360p30 → 360p20 → 270p15 →
    /// 180p10): motion matters more than sharpness in a call, and Chromium's bitrate-driven
    /// scaler lowers resolution only. Behind a 600 kbit/s link (target ≈ 350 kbit/s) this sends
    /// 360p30 where the old ladder (fps and size together) sent 360p15.
    fn default() -> Self {
        let step = |scale: f32, max_fps: f32| QualityStep { scale, max_fps };
        Self::new(vec![
            step(1.0, 30.0),
            step(0.75, 30.0),
            step(0.5, 30.0),
            step(0.5, 20.0),
            step(0.375, 15.0),
            step(0.25, 10.0),
        ])
    }
}

impl QualityScaler {
    /// Frames to wait after a change before stepping down again for CPU or overshoot.
    const DOWN_HOLD: u32 = 30;
    /// Frames to wait before following a target that is too low for the rung. Short: when the
    /// target falls, the frame dropper lets only a few frames through (2 fps behind a 600 kbit/s
    /// link at 720p), so a hold counted in frames would last many seconds of frozen video.
    const STARVED_HOLD: u32 = 3;
    /// Time with headroom before stepping up. Time, not frames: 300 frames (10 s at 30 fps)
    /// held a call that had fallen to 270p15 there for 20 s after its link recovered. Not
    /// shorter: at 5 s a call behind a 600 kbit/s cap stepped up to 540p while its estimate
    /// (no probing) overshot to 900 kbit/s, and the 540p IDR on the full link collapsed the
    /// estimate to 100 kbit/s (270p at 4 fps; the congestion test failed 2 of 7 runs so).
    const UP_HOLD: Duration = Duration::from_secs(10);
    /// Below this many bits per pixel per frame, H.264 at this size turns to mush: a smaller
    /// picture or fewer frames look better at the same bitrate (720p30 ≈ 830 kbit/s,
    /// 540p20 ≈ 310 kbit/s, 360p15 ≈ 100 kbit/s).
    const MIN_BITS_PER_PIXEL: f64 = 0.03;
    /// Step back up only with this much room above the better rung's minimum.
    const UP_MARGIN: f64 = 1.3;
    /// A step up followed this soon by a step down for the target failed: the estimate had
    /// climbed above the link (no probing; the sender was application-limited below it), and
    /// the bigger rung's IDR and rate overflowed it. Seen in the congestion test behind a
    /// 600 kbit/s cap: 360p → 540p at an estimate of 760 kbit/s, the estimate fell to 446 and
    /// the ladder stepped straight back, two IDRs, and again after every hold.
    const FAILED_UP_WINDOW: Duration = Duration::from_secs(10);
    /// After a failed step up, that rung (and better) wants this much more than the target
    /// that failed, for [`QualityScaler::FAILED_UP_MEMORY`]: a link that really grew passes it.
    const FAILED_UP_MARGIN: f64 = 1.25;
    /// How long a failed step up is remembered: one retry a minute costs two IDRs a minute at
    /// most, where the hold alone allowed one pair every 10–20 s.
    const FAILED_UP_MEMORY: Duration = Duration::from_secs(60);

    /// The bitrate a rung needs for a source of `full` size delivering `fps`.
    fn min_bps(step: QualityStep, full: (u32, u32), fps: f32) -> f64 {
        let pixels = f64::from(full.0) * f64::from(full.1) * f64::from(step.scale).powi(2);
        pixels * f64::from(step.max_fps.min(fps)) * Self::MIN_BITS_PER_PIXEL
    }

    /// Tells the scaler the encoder's current target bitrate and the source's full size and
    /// frame rate: when the target is below what the current rung needs it steps down, and it
    /// steps up only when the better rung would get enough (see [`QualityReason::TargetBitrate`]).
    pub fn set_budget(&mut self, target_bps: u32, full_size: (u32, u32), source_fps: f32) {
        self.budget = Some((target_bps, full_size, source_fps));
    }

    fn starved(&self, level: usize) -> bool {
        self.budget.is_some_and(|(bps, full, fps)| {
            f64::from(bps) < Self::min_bps(self.ladder[level], full, fps)
        })
    }

    fn fed_for(&self, level: usize) -> bool {
        self.budget.is_none_or(|(bps, full, fps)| {
            let failed_here = self
                .failed_up
                .filter(|f| level <= f.level && f.age < Self::FAILED_UP_MEMORY);
            f64::from(bps) >= Self::min_bps(self.ladder[level], full, fps) * Self::UP_MARGIN
                && failed_here
                    .is_none_or(|f| f64::from(bps) >= f64::from(f.bps) * Self::FAILED_UP_MARGIN)
        })
    }

    /// A scaler over `ladder` (best first; must not be empty).
    pub fn new(ladder: Vec<QualityStep>) -> Self {
        let ladder = if ladder.is_empty() {
            vec![QualityStep {
                scale: 1.0,
                max_fps: 30.0,
            }]
        } else {
            ladder
        };
        Self {
            ladder,
            level: 0,
            load: 0.0,
            overshoot: 1.0,
            frames_since_change: 0,
            time_since_change: Duration::ZERO,
            budget: None,
            last_up: None,
            failed_up: None,
        }
    }

    /// The current rung.
    pub fn step(&self) -> QualityStep {
        self.ladder[self.level]
    }

    /// Index of the current rung (0 = best).
    pub fn level(&self) -> usize {
        self.level
    }

    /// Moves to the best rung the budget ([`QualityScaler::set_budget`]) feeds at once, without
    /// the hold of [`QualityScaler::on_frame`]: for before the first frame, so a call that
    /// starts on a slow link does not send an IDR at full size, then another one a rung down.
    pub fn start_at_budget(&mut self) {
        let mut to = self.level;
        while to + 1 < self.ladder.len() && self.starved(to) {
            to += 1;
        }
        if to != self.level {
            self.level = to;
            self.changed();
        }
    }

    /// Feeds one encoded frame: how long encoding took, the frame interval at the current rate,
    /// and, when this frame completed a window of [`OvershootMeter`], the encoder's output rate
    /// vs its target over it (`actual_bps / target_bps`). Returns the new step and the reason
    /// when it changed.
    pub fn on_frame(
        &mut self,
        encode_time: Duration,
        frame_interval: Duration,
        bitrate_ratio: Option<f64>,
    ) -> Option<(QualityStep, QualityReason)> {
        let budget = frame_interval.as_secs_f64().max(1e-3);
        let load = encode_time.as_secs_f64() / budget;
        self.load += (load - self.load) * 0.1;
        // Once per window: two windows at twice the target, or one at three times, step down.
        if let Some(r) = bitrate_ratio.filter(|r| r.is_finite()) {
            self.overshoot += (r - self.overshoot) * 0.5;
        }
        self.frames_since_change = self.frames_since_change.saturating_add(1);
        self.time_since_change = self.time_since_change.saturating_add(frame_interval);
        if let Some(f) = &mut self.failed_up {
            f.age = f.age.saturating_add(frame_interval);
        }
        let can_go_down = self.level + 1 < self.ladder.len();
        if can_go_down && self.frames_since_change >= Self::STARVED_HOLD && self.starved(self.level)
        {
            // Straight to the best rung the target feeds (the last one if none), not one step
            // per hold: a link that drops to a fifth must not take four holds to be followed.
            let mut to = self.level + 1;
            while to + 1 < self.ladder.len() && self.starved(to) {
                to += 1;
            }
            if let Some((up_level, bps)) = self.last_up.take()
                && self.level <= up_level
                && self.time_since_change < Self::FAILED_UP_WINDOW
            {
                self.failed_up = Some(FailedUp {
                    level: up_level,
                    bps,
                    age: Duration::ZERO,
                });
            }
            self.level = to;
            self.changed();
            return Some((self.step(), QualityReason::TargetBitrate));
        }
        if can_go_down && self.frames_since_change >= Self::DOWN_HOLD {
            let reason = if self.load > 0.8 {
                Some(QualityReason::Cpu)
            } else if self.overshoot > 1.5 {
                Some(QualityReason::Bitrate)
            } else {
                None
            };
            if let Some(reason) = reason {
                self.level += 1;
                self.changed();
                return Some((self.step(), reason));
            }
        }
        if self.level > 0
            && self.time_since_change >= Self::UP_HOLD
            && self.load < 0.4
            && self.overshoot < 1.1
            && self.fed_for(self.level - 1)
        {
            self.level -= 1;
            self.last_up = self.budget.map(|(bps, _, _)| (self.level, bps));
            self.changed();
            return Some((self.step(), QualityReason::Recovered));
        }
        None
    }

    fn changed(&mut self) {
        self.frames_since_change = 0;
        self.time_since_change = Duration::ZERO;
        // Start the next judgement from neutral values, not the old rung's history.
        self.load *= 0.5;
        self.overshoot = 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_cuts_and_clean_reports_grow() {
        let t0 = Instant::now();
        let mut c = BitrateController::new(BitrateConfig::default());
        assert_eq!(c.target_bps(), 800_000);
        // 25 % loss: cut by 12.5 %.
        assert_eq!(c.on_receiver_report(0.25, None, t0), 700_000);
        // 5 % loss: hold.
        assert_eq!(
            c.on_receiver_report(0.05, None, t0 + Duration::from_secs(1)),
            700_000
        );
        // Clean for 5 s: +8 %/s.
        let mut t = t0 + Duration::from_secs(1);
        for _ in 0..5 {
            t += Duration::from_secs(1);
            c.on_receiver_report(0.0, Some(Duration::from_millis(50)), t);
        }
        let grown = c.target_bps();
        assert!((1_020_000..1_040_000).contains(&grown), "{grown}");
        // REMB caps; receive rate cuts.
        assert_eq!(c.on_remb(500_000), 500_000);
        assert_eq!(c.on_receive_rate(300_000), 270_000);
        // Never below the floor.
        assert_eq!(c.on_receiver_report(1.0, None, t), 150_000);
    }

    #[test]
    fn shared_target_is_the_weakest_peer() {
        let t0 = Instant::now();
        let mut s = SharedBitrate::new(BitrateConfig::default());
        s.peer("a").on_remb(2_000_000);
        s.peer("b").on_remb(400_000);
        assert_eq!(s.target_bps(), 400_000);
        s.remove("b");
        assert_eq!(s.target_bps(), 800_000);
        s.peer("a").on_receiver_report(0.5, None, t0);
        assert_eq!(s.target_bps(), 600_000);
    }

    #[test]
    fn cpu_pressure_steps_down_then_recovers() {
        let mut q = QualityScaler::default();
        let interval = Duration::from_millis(33);
        let mut changes = Vec::new();
        // Encoding takes 30 ms of a 33 ms budget.
        for _ in 0..100 {
            if let Some(c) = q.on_frame(Duration::from_millis(30), interval, None) {
                changes.push(c);
            }
        }
        assert!(!changes.is_empty());
        assert_eq!(
            changes[0],
            (
                QualityStep {
                    scale: 0.75,
                    max_fps: 30.0
                },
                QualityReason::Cpu
            )
        );
        let level = q.level();
        // Light load for a long time: one step back up.
        let mut up = None;
        for _ in 0..400 {
            if let Some(c) = q.on_frame(Duration::from_millis(5), interval, None) {
                up = Some(c);
                break;
            }
        }
        assert_eq!(up.map(|c| c.1), Some(QualityReason::Recovered));
        assert_eq!(q.level(), level - 1);
    }

    #[test]
    fn a_low_target_steps_down_and_a_high_one_back_up() {
        let mut q = QualityScaler::default();
        let (fast, interval) = (Duration::from_millis(5), Duration::from_millis(33));
        // 400 kbit/s for a 720p30 source: 720p30 needs ~830k, 540p30 ~470k, 360p30 ~210k.
        q.set_budget(400_000, (1280, 720), 30.0);
        let mut reasons = Vec::new();
        for _ in 0..300 {
            if let Some((_, r)) = q.on_frame(fast, interval, None) {
                reasons.push(r);
            }
        }
        // One step, straight to the rung the target feeds.
        assert_eq!(reasons, vec![QualityReason::TargetBitrate]);
        assert_eq!(q.step().scale, 0.5);
        assert_eq!(q.step().max_fps, 30.0);
        // Not enough for the better rung with margin: stays.
        q.set_budget(600_000, (1280, 720), 30.0);
        assert!((0..400).all(|_| q.on_frame(fast, interval, None).is_none()));
        // Plenty: back up one rung after the hold.
        q.set_budget(2_000_000, (1280, 720), 30.0);
        let up = (0..400).find_map(|_| q.on_frame(fast, interval, None));
        assert_eq!(up.map(|c| c.1), Some(QualityReason::Recovered));
        assert_eq!(q.level(), 1);
        assert_eq!(q.step().scale, 0.75);
    }

    /// The congestion test's flap behind a 600 kbit/s cap: the estimate climbs past the link
    /// while the encoder sends less, the ladder steps up, the bigger rung overflows the link, the
    /// estimate falls and the ladder steps back down. Once is a try; after that the same
    /// estimate must not buy the same step again (each pair of changes is two IDRs), a clearly
    /// higher one does, and a minute later the try may be repeated.
    #[test]
    fn a_step_up_the_link_could_not_hold_is_not_repeated_at_the_same_target() {
        let (fast, interval) = (Duration::from_millis(5), Duration::from_millis(33));
        let full = (1280, 720);
        // 360p30 (540p30 needs ~470k, ~610k with the margin).
        let at_360p = || {
            let mut q = QualityScaler::default();
            q.set_budget(400_000, full, 30.0);
            q.start_at_budget();
            assert_eq!(q.level(), 2);
            q
        };
        // The changes (new level, reason) in `secs` seconds at `bps`.
        let run = |q: &mut QualityScaler, bps: u32, secs: u64| {
            q.set_budget(bps, full, 30.0);
            let mut changes = Vec::new();
            for _ in 0..secs * 30 {
                if let Some((_, r)) = q.on_frame(fast, interval, None) {
                    changes.push((q.level(), r));
                }
            }
            changes
        };
        let up = vec![(1, QualityReason::Recovered)];
        let down = vec![(2, QualityReason::TargetBitrate)];
        let mut q = at_360p();
        // The estimate overshoots the link: up after the hold; 540p overflows it, the estimate
        // falls: straight back down.
        assert_eq!(run(&mut q, 760_000, 11), up);
        assert_eq!(run(&mut q, 446_000, 2), down);
        // The estimate climbs back to where it was: no second try for most of a minute.
        assert_eq!(run(&mut q, 760_000, 50), vec![]);
        // After the memory runs out, one more try.
        assert_eq!(run(&mut q, 760_000, 11), up);
        // A step up that holds (no step down within the window) leaves no memory behind.
        let mut q = at_360p();
        assert_eq!(run(&mut q, 760_000, 11), up);
        assert_eq!(run(&mut q, 760_000, 11), vec![]);
        assert_eq!(run(&mut q, 446_000, 2), down);
        assert_eq!(run(&mut q, 760_000, 11), up);
        // After a failed try, a clearly higher target is a link that grew: up after the hold.
        assert_eq!(run(&mut q, 446_000, 2), down);
        assert_eq!(run(&mut q, 1_000_000, 11), up);
    }

    #[test]
    fn a_low_frame_rate_rung_steps_up_after_the_same_time() {
        let mut q = QualityScaler::default();
        let fast = Duration::from_millis(5);
        // A 150 kbit/s link: down to 270p15 (360p20 needs ~140k with margin ~180k).
        q.set_budget(100_000, (1280, 720), 30.0);
        q.start_at_budget();
        assert_eq!(q.step().max_fps, 15.0);
        // The link recovers: 360p20 is fed. At 15 fps the hold is counted in time (10 s = 150
        // frames), not in frames (300 frames = 20 s).
        q.set_budget(300_000, (1280, 720), 30.0);
        let interval = Duration::from_secs(1) / 15;
        let up = (1..=300u32).find(|_| q.on_frame(fast, interval, None).is_some());
        // (150 intervals of 1/15 s may round to a nanosecond short of 10 s.)
        assert!(matches!(up, Some(150..=151)), "{up:?} frames at 15 fps");
        assert_eq!(q.step().max_fps, 20.0);
    }

    #[test]
    fn the_dropper_holds_the_output_near_the_target() {
        let mut d = FrameDropper::new();
        let target = 300_000u32;
        // Frames of 5 000 bytes at 30 fps: 1.2 Mbit/s offered, 4× the target.
        let (mut sent, mut bits) = (0u32, 0.0f64);
        for i in 0..300u64 {
            let t = Duration::from_millis(i * 1000 / 30);
            if !d.should_drop(t, target) {
                d.on_encoded(5_000, false);
                sent += 1;
                bits += 40_000.0;
            }
        }
        // 10 s: about 3 Mbit may leave, plus the window.
        assert!(bits <= 3.0e6 + 150_000.0 + 40_000.0, "{bits}");
        assert!(sent >= 70, "{sent} frames sent");
        assert_eq!(u64::from(300 - sent), d.dropped());
        // Small frames are never dropped.
        let mut d = FrameDropper::new();
        assert!((0..300u64).all(|i| {
            let ok = !d.should_drop(Duration::from_millis(i * 33), target);
            d.on_encoded(1_000, false);
            ok
        }));
    }

    /// 360p at a 350 kbit/s target: 1 200-byte P-frames and a 30 kB IDR every 2 s.
    fn sent_frames(spread: bool) -> (Vec<bool>, f64) {
        let mut d = FrameDropper::new();
        let target = 350_000u32;
        let (mut sent, mut bits) = (Vec::new(), 0.0);
        for i in 0..300u64 {
            let t = Duration::from_millis(i * 1000 / 30);
            let keyframe = i % 60 == 0;
            let ok = !d.should_drop(t, target);
            if ok {
                let bytes = if keyframe { 30_000 } else { 1_200 };
                d.on_encoded(bytes, keyframe && spread);
                bits += bytes as f64 * 8.0;
            }
            sent.push(ok);
        }
        (sent, bits)
    }

    fn longest_run_of_drops(sent: &[bool]) -> usize {
        sent.split(|ok| *ok).map(<[bool]>::len).max().unwrap_or(0)
    }

    #[test]
    fn a_keyframe_costs_single_frames_not_a_freeze() {
        let (spread, spread_bits) = sent_frames(true);
        let (at_once, _) = sent_frames(false);
        // Charged at once, the IDRs skip runs of frames (a freeze at the receiver).
        assert!(longest_run_of_drops(&at_once) >= 4, "{at_once:?}");
        // Spread: at most two frames in a row, and the output still follows the target
        // (10 s at 350 kbit/s plus the window).
        assert!(longest_run_of_drops(&spread) <= 2, "{spread:?}");
        assert!(
            spread_bits <= 3.5e6 + 175_000.0 + 240_000.0,
            "{spread_bits}"
        );
    }

    #[test]
    fn bitrate_overshoot_steps_down() {
        let mut q = QualityScaler::default();
        let changed = (0..200).find_map(|i| {
            let window = (i % 30 == 29).then_some(3.0);
            q.on_frame(Duration::from_millis(5), Duration::from_millis(33), window)
        });
        assert_eq!(changed.map(|c| c.1), Some(QualityReason::Bitrate));
    }

    #[test]
    fn a_cut_of_the_target_is_not_an_overshoot() {
        // 30 fps of 2 000-byte frames (480 kbit/s) under a 500 kbit/s target, cut to 300 kbit/s
        // halfway through the window, after which the encoder sends 1 200-byte frames.
        let mut m = OvershootMeter::new();
        let mut ratios = Vec::new();
        for i in 0..=60u64 {
            let t = Duration::from_millis(i * 1000 / 30);
            let (bytes, target) = if i < 15 {
                (2_000, 500_000)
            } else {
                (1_200, 300_000)
            };
            ratios.extend(m.on_encoded(t, bytes, false, target));
        }
        assert_eq!(ratios.len(), 2, "{ratios:?}");
        assert!(ratios.iter().all(|r| (0.9..1.1).contains(r)), "{ratios:?}");
        // Read against the new target alone, the first window would be 1.3x.
        let mut q = QualityScaler::default();
        let interval = Duration::from_millis(33);
        assert!((0..120).all(|i| {
            let window = (i % 30 == 29).then(|| ratios[(i / 30) % 2]);
            q.on_frame(Duration::from_millis(5), interval, window)
                .is_none()
        }));
        // Keyframes do not count; a real overshoot does.
        let mut m = OvershootMeter::new();
        let r: Vec<f64> = (0..=30u64)
            .filter_map(|i| {
                let t = Duration::from_millis(i * 1000 / 30);
                m.on_encoded(t, if i == 10 { 40_000 } else { 2_500 }, i == 10, 300_000)
            })
            .collect();
        assert_eq!(r.len(), 1);
        assert!((1.9..2.1).contains(&r[0]), "{r:?}");
    }

    #[test]
    fn back_to_back_keyframes_are_not_owed_twice() {
        // A call's start at 222 kbit/s: an IDR when the stream is attached, another 200 ms later
        // when the peer connects (26 kB each at 360p), then 800-byte P-frames.
        let mut d = FrameDropper::new();
        let sent = (0..90u64)
            .filter(|&i| {
                let t = Duration::from_millis(i * 1000 / 30);
                let ok = !d.should_drop(t, 222_000);
                if ok {
                    let key = i == 0 || i == 6;
                    d.on_encoded(if key { 26_000 } else { 800 }, key);
                }
                ok && i >= 30
            })
            .count();
        // The second and third second run at 25+ fps, not 10.
        assert!(sent >= 50, "{sent} of 60 frames sent");
    }

    #[test]
    fn a_cut_of_the_target_scales_the_dropper_bucket() {
        // Full at 830 kbit/s, then the target falls to 300 kbit/s: frames go on within a few
        // frames, not after the old bucket drained at the new rate (1.4 s).
        let mut d = FrameDropper::new();
        let mut t = Duration::ZERO;
        while !d.should_drop(t, 830_000) {
            d.on_encoded(10_000, false);
            t += Duration::from_millis(33);
        }
        let skipped = (1..60u64)
            .take_while(|i| d.should_drop(t + Duration::from_millis(i * 33), 300_000))
            .count();
        assert!(skipped <= 3, "{skipped} frames skipped after the cut");
    }

    #[test]
    fn a_slow_start_begins_on_the_rung_it_feeds() {
        let mut q = QualityScaler::default();
        // 222 kbit/s for a 720p30 source: 360p30 (~207 kbit/s) is the best rung it feeds.
        q.set_budget(222_000, (1280, 720), 30.0);
        q.start_at_budget();
        assert_eq!(q.level(), 2);
        // Plenty: stays at the top.
        let mut q = QualityScaler::default();
        q.set_budget(2_000_000, (1280, 720), 30.0);
        q.start_at_budget();
        assert_eq!(q.level(), 0);
    }
}
