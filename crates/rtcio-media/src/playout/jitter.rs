//! An adaptive jitter buffer for fixed-duration packets (20 ms Opus) keyed by RTP timestamp.
//!
//! Packets go in as they arrive, in any order; the playout clock pulls one slot per frame
//! duration and gets the packet for that slot, a "lost" marker (with the following packet,
//! if it is already here, so the decoder can use its FEC data), or "buffering" while the buffer
//! fills up to its target delay. The target follows the measured inter-arrival jitter
//! (RFC 3550 estimator) between a minimum and a maximum.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::frame::RtpUnwrapper;

/// Settings of a [`JitterBuffer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitterConfig {
    /// RTP clock rate of the timestamps.
    pub clock_rate: u32,
    /// Ticks per packet (960 for 20 ms Opus at 48 kHz).
    pub frame_ticks: u32,
    /// Lowest target delay.
    pub min_delay: Duration,
    /// Highest target delay; beyond it old packets are dropped to catch up.
    pub max_delay: Duration,
    /// After this many consecutive slots with an empty buffer, stop concealing and re-buffer.
    pub max_conceal_frames: u32,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            clock_rate: 48_000,
            frame_ticks: 960,
            min_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(300),
            max_conceal_frames: 5,
        }
    }
}

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored for playout.
    Accepted,
    /// Its slot was already played: dropped.
    Late,
    /// A packet with this timestamp is already stored: dropped.
    Duplicate,
}

/// What the playout clock gets for one slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Playout<T> {
    /// The packet for this slot.
    Packet {
        /// Extended (64-bit) RTP timestamp of the slot.
        timestamp: u64,
        /// The packet.
        payload: T,
    },
    /// No packet for this slot: conceal it.
    Lost {
        /// Extended RTP timestamp of the missing slot.
        timestamp: u64,
        /// The packet of the following slot when already buffered (for FEC recovery).
        next: Option<T>,
    },
    /// Not playing yet (start-up or re-buffering after an underrun): play silence.
    Buffering,
}

/// Counters of a [`JitterBuffer`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets accepted.
    pub received: u64,
    /// Slots played from a packet.
    pub played: u64,
    /// Slots reported lost (concealed).
    pub lost: u64,
    /// Packets that came after their slot.
    pub late: u64,
    /// Duplicate packets.
    pub duplicates: u64,
    /// Packets dropped to bring the delay back under the maximum.
    pub dropped_for_latency: u64,
    /// Times the buffer ran dry and re-buffered.
    pub underruns: u64,
    /// Slots skipped when jumping over a long gap (e.g. a DTX pause).
    pub skipped: u64,
    /// Slots played as concealment to add delay ([`JitterBuffer::set_extra_delay`]).
    pub stretched: u64,
    /// Packets skipped to take delay away again.
    pub shortened: u64,
}

/// See the [module documentation](self).
#[derive(Debug)]
pub struct JitterBuffer<T> {
    config: JitterConfig,
    packets: BTreeMap<u64, T>,
    unwrapper: RtpUnwrapper,
    next: Option<u64>,
    empty_slots: u32,
    jitter_ticks: f64,
    last_arrival: Option<(Instant, u64)>,
    stats: JitterStats,
    /// Extra delay asked for (lip sync), in frames, and how much of it is in effect.
    extra_wanted: u32,
    extra_applied: u32,
    /// Slots played since the last extra-delay step (steps are spaced out).
    since_step: u32,
}

/// The most extra delay [`JitterBuffer::set_extra_delay`] takes.
pub const MAX_EXTRA_DELAY: Duration = Duration::from_millis(500);
/// Slots between two 1-frame steps of the extra delay (one step per 100 ms of 20 ms frames):
/// at most a fifth of the slots are stretched or skipped while the delay moves.
const EXTRA_STEP_EVERY: u32 = 5;

impl<T: Clone> JitterBuffer<T> {
    /// An empty buffer.
    pub fn new(config: JitterConfig) -> Self {
        Self {
            config,
            packets: BTreeMap::new(),
            unwrapper: RtpUnwrapper::new(),
            next: None,
            empty_slots: 0,
            jitter_ticks: 0.0,
            last_arrival: None,
            stats: JitterStats::default(),
            extra_wanted: 0,
            extra_applied: 0,
            since_step: 0,
        }
    }

    /// Asks for `extra` delay on top of the jitter target (lip sync: this audio waits for its
    /// video), bounded by [`MAX_EXTRA_DELAY`]. Taken in gradually while playing: one frame is
    /// concealed (played as [`Playout::Lost`] with the previous timestamp) or one packet skipped
    /// at most every 100 ms, so the change is smooth and never a jump.
    pub fn set_extra_delay(&mut self, extra: Duration) {
        let extra = extra.min(MAX_EXTRA_DELAY);
        self.extra_wanted =
            (extra.as_secs_f64() / self.frame_duration().as_secs_f64()).round() as u32;
    }

    /// The extra delay in effect now.
    pub fn extra_delay(&self) -> Duration {
        self.frame_duration() * self.extra_applied
    }

    /// Counters so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// True when no packet waits.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// True while playing (not buffering).
    pub fn is_playing(&self) -> bool {
        self.next.is_some()
    }

    /// Estimated inter-arrival jitter.
    pub fn jitter(&self) -> Duration {
        Duration::from_secs_f64(self.jitter_ticks / f64::from(self.config.clock_rate))
    }

    fn frame_duration(&self) -> Duration {
        Duration::from_secs_f64(
            f64::from(self.config.frame_ticks) / f64::from(self.config.clock_rate),
        )
    }

    /// Current target delay: one frame plus three times the jitter, clamped to the limits.
    pub fn target_delay(&self) -> Duration {
        let want = self.frame_duration() + self.jitter().mul_f64(3.0);
        want.clamp(self.config.min_delay, self.config.max_delay)
    }

    fn frames_for(&self, d: Duration) -> usize {
        let f = self.frame_duration().as_secs_f64();
        ((d.as_secs_f64() / f).ceil() as usize).max(1)
    }

    /// Current buffered delay (packets waiting × frame duration).
    pub fn buffered_delay(&self) -> Duration {
        self.frame_duration() * self.packets.len() as u32
    }

    /// Adds a packet that arrived at `arrival`.
    pub fn push(&mut self, rtp_timestamp: u32, payload: T, arrival: Instant) -> PushOutcome {
        let ext = self.unwrapper.unwrap(rtp_timestamp);
        if self.next.is_some_and(|next| ext < next) {
            self.stats.late += 1;
            return PushOutcome::Late;
        }
        if self.packets.contains_key(&ext) {
            self.stats.duplicates += 1;
            return PushOutcome::Duplicate;
        }
        // RFC 3550 interarrival jitter, in clock ticks.
        if let Some((prev_arrival, prev_ts)) = self.last_arrival {
            let arrival_ticks = if arrival >= prev_arrival {
                (arrival - prev_arrival).as_secs_f64()
            } else {
                -(prev_arrival - arrival).as_secs_f64()
            } * f64::from(self.config.clock_rate);
            let d = arrival_ticks - (ext as f64 - prev_ts as f64);
            self.jitter_ticks += (d.abs() - self.jitter_ticks) / 16.0;
        }
        self.last_arrival = Some((arrival, ext));
        self.packets.insert(ext, payload);
        self.stats.received += 1;
        PushOutcome::Accepted
    }

    /// Takes what plays in the next slot. Call once per frame duration from the playout clock.
    pub fn pop(&mut self) -> Playout<T> {
        let ticks = u64::from(self.config.frame_ticks);
        let Some(next) = self.next else {
            // Buffering: start once the target delay's worth of packets is here.
            let extra = self.frame_duration() * self.extra_wanted;
            if self.packets.len() >= self.frames_for(self.target_delay() + extra) {
                let first = *self.packets.keys().next().unwrap_or(&0);
                self.next = Some(first);
                self.empty_slots = 0;
                self.extra_applied = self.extra_wanted;
                return self.pop();
            }
            return Playout::Buffering;
        };
        self.since_step = self.since_step.saturating_add(1);
        if self.extra_applied != self.extra_wanted && self.since_step >= EXTRA_STEP_EVERY {
            self.since_step = 0;
            if self.extra_applied < self.extra_wanted {
                // Play one slot of concealment and stay on `next`: 20 ms more delay.
                self.extra_applied += 1;
                self.stats.stretched += 1;
                return Playout::Lost {
                    timestamp: next.saturating_sub(ticks),
                    next: None,
                };
            }
            // Skip the packet due now (if it is here at all): 20 ms less delay.
            self.extra_applied -= 1;
            self.stats.shortened += 1;
            self.packets.remove(&next);
            self.next = Some(next + ticks);
            return self.pop();
        }
        if let Some(payload) = self.packets.remove(&next) {
            self.next = Some(next + ticks);
            self.empty_slots = 0;
            self.stats.played += 1;
            self.trim_latency();
            return Playout::Packet {
                timestamp: next,
                payload,
            };
        }
        match self.packets.keys().next().copied() {
            None => {
                self.empty_slots += 1;
                if self.empty_slots > self.config.max_conceal_frames {
                    self.next = None;
                    self.stats.underruns += 1;
                    return Playout::Buffering;
                }
                self.next = Some(next + ticks);
                self.stats.lost += 1;
                Playout::Lost {
                    timestamp: next,
                    next: None,
                }
            }
            Some(first) => {
                let gap = (first.saturating_sub(next)) / ticks;
                if gap > u64::from(self.config.max_conceal_frames) {
                    // A long pause (DTX) or a jump: resume at the first buffered packet.
                    self.stats.skipped += gap;
                    self.next = Some(first);
                    return self.pop();
                }
                self.next = Some(next + ticks);
                self.stats.lost += 1;
                Playout::Lost {
                    timestamp: next,
                    next: self.packets.get(&(next + ticks)).cloned(),
                }
            }
        }
    }

    fn trim_latency(&mut self) {
        let extra = self.frame_duration() * self.extra_applied;
        let max_frames = self.frames_for(self.config.max_delay + extra);
        let target = self.frames_for(self.target_delay() + extra);
        if self.packets.len() <= max_frames {
            return;
        }
        while self.packets.len() > target {
            if let Some((ts, _)) = self.packets.pop_first() {
                self.stats.dropped_for_latency += 1;
                self.next = Some(ts + u64::from(self.config.frame_ticks));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_then_plays_in_order() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let t0 = Instant::now();
        assert_eq!(jb.pop(), Playout::Buffering);
        jb.push(960, 1, t0);
        jb.push(0, 0, t0);
        assert!(matches!(jb.pop(), Playout::Packet { payload: 0, .. }));
        assert!(matches!(jb.pop(), Playout::Packet { payload: 1, .. }));
    }

    /// Feeds one packet per slot on time for `slots` slots, returns what played.
    fn run(jb: &mut JitterBuffer<u32>, from: u32, slots: u32, t0: Instant) -> Vec<Playout<u32>> {
        (from..from + slots)
            .map(|i| {
                jb.push(i * 960, i, t0 + Duration::from_millis(u64::from(i) * 20));
                jb.pop()
            })
            .collect()
    }

    #[test]
    fn extra_delay_comes_in_and_goes_out_gradually_and_is_bounded() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let t0 = Instant::now();
        run(&mut jb, 0, 50, t0);
        let lag = |jb: &JitterBuffer<u32>| jb.len();
        let before = lag(&jb);
        jb.set_extra_delay(Duration::from_millis(100));
        // Five 20 ms steps, at most one per 100 ms (5 slots).
        let out = run(&mut jb, 50, 30, t0);
        let steps: Vec<usize> = (0..out.len())
            .filter(|&i| matches!(out[i], Playout::Lost { .. }))
            .collect();
        assert_eq!(steps.len(), 5, "{steps:?}");
        assert!(steps.windows(2).all(|w| w[1] - w[0] >= 5), "{steps:?}");
        assert_eq!(jb.extra_delay(), Duration::from_millis(100));
        assert_eq!(lag(&jb), before + 5, "100 ms more buffered");
        assert_eq!(jb.stats().lost, 0, "stretching is no loss");
        // Never more than the bound, however much is asked.
        jb.set_extra_delay(Duration::from_secs(10));
        run(&mut jb, 80, 300, t0);
        assert_eq!(jb.extra_delay(), MAX_EXTRA_DELAY);
        assert_eq!(lag(&jb), before + 25, "not trimmed away as excess latency");
        // And back down by skipping packets.
        jb.set_extra_delay(Duration::ZERO);
        run(&mut jb, 380, 200, t0);
        assert_eq!(jb.extra_delay(), Duration::ZERO);
        assert_eq!(lag(&jb), before);
        assert_eq!(jb.stats().shortened, 25);
    }
}
