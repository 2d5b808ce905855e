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
}

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
        }
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
            if self.packets.len() >= self.frames_for(self.target_delay()) {
                let first = *self.packets.keys().next().unwrap_or(&0);
                self.next = Some(first);
                self.empty_slots = 0;
                return self.pop();
            }
            return Playout::Buffering;
        };
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
        let max_frames = self.frames_for(self.config.max_delay);
        let target = self.frames_for(self.target_delay());
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
}
