//! Delay- and loss-based send-side estimator in the shape of libwebrtc's current GCC: a
//! trendline filter over inter-group delay variation, an adaptive overuse threshold, AIMD rate
//! control that backs off to what the path *delivered*, and a loss half that only bites above
//! 10 % loss.
//!
//! Why not webrtc-rs's own `Gcc` (a port of pion's Kalman-filter version): on a simulated
//! 1 Mbit/s bottleneck with a 200 ms queue it never signals overuse from delay, climbs 8 %/s past
//! the link until the queue overflows (20–30 % loss), and repeats that saw-tooth every few
//! seconds (`bwe_sim` shows it; the network bench saw the same on real links). Chromium reacts to
//! the queue building, long before loss. Everything here is a function of the instants handed in
//! (no clock of its own), so trajectories are reproducible and unit-testable.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Packets sent within this span form one group (libwebrtc's burst grouping).
const GROUP_SPAN: Duration = Duration::from_millis(5);
/// Points in the trendline's regression window.
const TRENDLINE_WINDOW: usize = 20;
/// Smoothing of the accumulated delay before the regression.
const TRENDLINE_SMOOTHING: f64 = 0.9;
/// Gain from the slope (ms per ms) to the value compared with the threshold.
const TRENDLINE_GAIN: f64 = 4.0;
/// Overuse must last this long (in send time) before it is declared.
const OVERUSE_TIME_MS: f64 = 10.0;
/// Multiplicative increase per second while the link's capacity is unknown.
const INCREASE_PER_SECOND: f64 = 1.08;
/// Before the first overuse: the start is a guess, so climb faster (Chromium probes instead).
const STARTUP_INCREASE_PER_SECOND: f64 = 1.5;
/// Back off to this fraction of the delivered rate.
const BETA: f64 = 0.85;
/// Delivered below this fraction of the estimate, the sender is not testing the estimate.
const APP_LIMITED: f64 = 0.85;
/// Window of the delivered-rate measurement.
const ACKED_WINDOW: Duration = Duration::from_millis(500);

/// What the delay detector concluded from the newest group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Usage {
    Normal,
    Overusing,
    Underusing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RateState {
    Hold,
    Increase,
    Decrease,
}

/// One packet's fate, as transport-wide feedback reports it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Packet {
    /// When it left this endpoint (the pacer's release).
    pub departure: Instant,
    /// When it arrived, on the receiver's clock; `None`: reported lost.
    pub arrival: Option<Duration>,
    /// Bytes on the wire.
    pub size: usize,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    first_departure: Instant,
    last_departure: Instant,
    first_arrival: Duration,
    last_arrival: Duration,
}

/// Link capacity estimate from the delivered rates seen at overuse (libwebrtc's
/// `LinkCapacityEstimator`, kbit/s internally).
#[derive(Debug, Clone, Copy, Default)]
struct LinkCapacity {
    estimate_kbps: Option<f64>,
    deviation_kbps: f64,
}

impl LinkCapacity {
    fn on_overuse(&mut self, acked_bps: f64) {
        let sample = acked_bps / 1000.0;
        let alpha = 0.05;
        let est = match self.estimate_kbps {
            None => {
                self.deviation_kbps = 0.4;
                sample
            }
            Some(e) => (1.0 - alpha) * e + alpha * sample,
        };
        let norm = est.max(1.0);
        let err = est - sample;
        self.deviation_kbps =
            ((1.0 - alpha) * self.deviation_kbps + alpha * err * err / norm).clamp(0.4, 2.5);
        self.estimate_kbps = Some(est);
    }

    fn spread_kbps(&self, est: f64) -> f64 {
        3.0 * (self.deviation_kbps * est).sqrt()
    }

    fn upper_bps(&self) -> f64 {
        self.estimate_kbps
            .map_or(f64::INFINITY, |e| (e + self.spread_kbps(e)) * 1000.0)
    }

    fn lower_bps(&self) -> f64 {
        self.estimate_kbps
            .map_or(0.0, |e| (e - self.spread_kbps(e)).max(0.0) * 1000.0)
    }

    fn estimate_bps(&self) -> Option<f64> {
        self.estimate_kbps.map(|e| e * 1000.0)
    }
}

/// The estimator. Feed it every feedback batch with [`Estimator::on_feedback`]; read
/// [`Estimator::target_bps`].
#[derive(Debug)]
pub(crate) struct Estimator {
    min: f64,
    max: f64,
    // Grouping.
    group: Option<Group>,
    prev_group: Option<Group>,
    // Trendline.
    first_arrival_ms: Option<f64>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    history: VecDeque<(f64, f64)>,
    deltas: u32,
    prev_trend: f64,
    // Overuse detector.
    threshold: f64,
    threshold_updated_ms: Option<f64>,
    time_over_using_ms: Option<f64>,
    overuse_count: u32,
    usage: Usage,
    // Delivered rate: (receiver arrival, bytes).
    acked: VecDeque<(Duration, usize)>,
    acked_bps: Option<f64>,
    // AIMD.
    delay_target: f64,
    state: RateState,
    last_change: Option<Instant>,
    capacity: LinkCapacity,
    seen_overuse: bool,
    rtt: Duration,
    // Loss half.
    loss_cap: f64,
    loss_lost: usize,
    loss_total: usize,
    loss_since: Option<Instant>,
    last_loss_decrease: Option<Instant>,
    loss: Option<f64>,
}

impl Estimator {
    /// Starts at `start`, always within `min..=max` (bits/s).
    pub(crate) fn new(start: f64, min: f64, max: f64) -> Self {
        let max = max.max(min);
        Estimator {
            min,
            max,
            group: None,
            prev_group: None,
            first_arrival_ms: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            history: VecDeque::with_capacity(TRENDLINE_WINDOW + 1),
            deltas: 0,
            prev_trend: 0.0,
            threshold: 12.5,
            threshold_updated_ms: None,
            time_over_using_ms: None,
            overuse_count: 0,
            usage: Usage::Normal,
            acked: VecDeque::new(),
            acked_bps: None,
            delay_target: start.clamp(min, max),
            state: RateState::Hold,
            last_change: None,
            capacity: LinkCapacity::default(),
            seen_overuse: false,
            rtt: Duration::from_millis(100),
            loss_cap: f64::INFINITY,
            loss_lost: 0,
            loss_total: 0,
            loss_since: None,
            last_loss_decrease: None,
            loss: None,
        }
    }

    /// The combined target, bits/s.
    pub(crate) fn target_bps(&self) -> f64 {
        self.delay_target
            .min(self.loss_cap)
            .clamp(self.min, self.max)
    }

    /// The delay-based half's target, bits/s.
    pub(crate) fn delay_based_bps(&self) -> f64 {
        self.delay_target
    }

    /// The loss half's cap, bits/s (infinite while loss is low).
    pub(crate) fn loss_based_bps(&self) -> f64 {
        self.loss_cap
    }

    /// Loss fraction of the latest loss window, once one is complete.
    pub(crate) fn loss(&self) -> Option<f64> {
        self.loss
    }

    /// One feedback batch, in send order, handed in at `now`.
    pub(crate) fn on_feedback(&mut self, now: Instant, packets: &[Packet]) {
        if packets.is_empty() {
            return;
        }
        for p in packets {
            self.loss_total += 1;
            let Some(arrival) = p.arrival else {
                self.loss_lost += 1;
                continue;
            };
            self.on_arrival(p.departure, arrival, p.size);
        }
        if let Some(newest) = packets.iter().rev().find(|p| p.arrival.is_some()) {
            // Feedback delay of the newest packet: RTT plus the receiver's feedback interval
            // and any queueing; only the additive increase's pace and the decrease interval use it.
            let sample = now.saturating_duration_since(newest.departure);
            self.rtt = (self.rtt * 7 + sample) / 8;
        }
        self.update_acked();
        self.update_delay_target(now);
        self.update_loss(now);
    }

    fn on_arrival(&mut self, departure: Instant, arrival: Duration, size: usize) {
        self.acked.push_back((arrival, size));
        let Some(g) = self.group.as_mut() else {
            self.group = Some(Group {
                first_departure: departure,
                last_departure: departure,
                first_arrival: arrival,
                last_arrival: arrival,
            });
            return;
        };
        if arrival < g.last_arrival && departure >= g.last_departure {
            // Reordered behind a later packet: says nothing reliable about the queue.
            return;
        }
        let same_group = departure.saturating_duration_since(g.first_departure) <= GROUP_SPAN
            || departure < g.first_departure;
        // A burst: packets that arrive back to back with less spacing than they were sent
        // belong to the group in flight (libwebrtc's BelongsToBurst).
        let burst = {
            let arrival_delta = arrival.saturating_sub(g.last_arrival);
            let send_delta = departure.saturating_duration_since(g.last_departure);
            arrival_delta < send_delta
                && arrival.saturating_sub(g.first_arrival) < Duration::from_millis(100)
                && arrival_delta <= GROUP_SPAN
        };
        if same_group || burst {
            g.last_departure = g.last_departure.max(departure);
            g.last_arrival = g.last_arrival.max(arrival);
            return;
        }
        let done = *g;
        *g = Group {
            first_departure: departure,
            last_departure: departure,
            first_arrival: arrival,
            last_arrival: arrival,
        };
        if let Some(prev) = self.prev_group {
            let send_ms = done
                .last_departure
                .saturating_duration_since(prev.last_departure)
                .as_secs_f64()
                * 1000.0;
            let recv_ms =
                (done.last_arrival.as_secs_f64() - prev.last_arrival.as_secs_f64()) * 1000.0;
            self.trendline(
                recv_ms - send_ms,
                send_ms,
                done.last_arrival.as_secs_f64() * 1000.0,
            );
        }
        self.prev_group = Some(done);
    }

    fn trendline(&mut self, delta_ms: f64, send_delta_ms: f64, arrival_ms: f64) {
        self.deltas = (self.deltas + 1).min(1000);
        let first = *self.first_arrival_ms.get_or_insert(arrival_ms);
        self.accumulated_ms += delta_ms;
        self.smoothed_ms = TRENDLINE_SMOOTHING * self.smoothed_ms
            + (1.0 - TRENDLINE_SMOOTHING) * self.accumulated_ms;
        self.history
            .push_back((arrival_ms - first, self.smoothed_ms));
        if self.history.len() > TRENDLINE_WINDOW {
            self.history.pop_front();
        }
        let mut trend = self.prev_trend;
        if self.history.len() == TRENDLINE_WINDOW
            && let Some(slope) = linear_fit_slope(&self.history)
        {
            trend = slope;
        }
        self.detect(trend, send_delta_ms, arrival_ms);
    }

    fn detect(&mut self, trend: f64, send_delta_ms: f64, now_ms: f64) {
        if self.deltas < 2 {
            self.usage = Usage::Normal;
            return;
        }
        let modified = f64::from(self.deltas.min(60)) * trend * TRENDLINE_GAIN;
        if modified > self.threshold {
            let over = match self.time_over_using_ms {
                None => send_delta_ms / 2.0,
                Some(t) => t + send_delta_ms,
            };
            self.time_over_using_ms = Some(over);
            self.overuse_count += 1;
            if over > OVERUSE_TIME_MS && self.overuse_count > 1 && trend >= self.prev_trend {
                self.time_over_using_ms = Some(0.0);
                self.overuse_count = 0;
                self.usage = Usage::Overusing;
            }
        } else if modified < -self.threshold {
            self.time_over_using_ms = None;
            self.overuse_count = 0;
            self.usage = Usage::Underusing;
        } else {
            self.time_over_using_ms = None;
            self.overuse_count = 0;
            self.usage = Usage::Normal;
        }
        self.prev_trend = trend;
        // Adaptive threshold: follows the trend slowly up, quickly down, so a path's own jitter
        // does not read as overuse while a real queue still does.
        let last = *self.threshold_updated_ms.get_or_insert(now_ms);
        if modified.abs() <= self.threshold + 15.0 {
            let k = if modified.abs() < self.threshold {
                0.039
            } else {
                0.0087
            };
            let dt = (now_ms - last).clamp(0.0, 100.0);
            self.threshold =
                (self.threshold + k * (modified.abs() - self.threshold) * dt).clamp(6.0, 600.0);
        }
        self.threshold_updated_ms = Some(now_ms);
    }

    fn update_acked(&mut self) {
        let Some(&(newest, _)) = self.acked.back() else {
            return;
        };
        while self
            .acked
            .front()
            .is_some_and(|&(a, _)| newest.saturating_sub(a) > ACKED_WINDOW)
        {
            self.acked.pop_front();
        }
        let Some(&(oldest, _)) = self.acked.front() else {
            return;
        };
        let span = newest.saturating_sub(oldest);
        if span < Duration::from_millis(150) || self.acked.len() < 5 {
            return;
        }
        // The oldest packet's bytes arrived before the span started.
        let bytes: usize = self.acked.iter().skip(1).map(|&(_, s)| s).sum();
        self.acked_bps = Some(bytes as f64 * 8.0 / span.as_secs_f64());
    }

    fn update_delay_target(&mut self, now: Instant) {
        let acked = self.acked_bps;
        match self.usage {
            Usage::Overusing => {
                if self.state != RateState::Decrease {
                    let interval = self
                        .rtt
                        .clamp(Duration::from_millis(10), Duration::from_millis(200));
                    let due = self
                        .last_change
                        .is_none_or(|t| now.saturating_duration_since(t) >= interval)
                        || acked.is_some_and(|a| a < 0.5 * self.delay_target);
                    if !due {
                        // Not yet: the previous change has not had a round trip to show; and
                        // certainly no increase while the queue grows.
                        return;
                    }
                    self.state = RateState::Decrease;
                }
            }
            Usage::Normal => {
                if self.state == RateState::Hold {
                    self.last_change = Some(now);
                    self.state = RateState::Increase;
                }
            }
            Usage::Underusing => self.state = RateState::Hold,
        }
        match self.state {
            RateState::Hold => {}
            RateState::Increase => {
                let Some(acked) = acked else {
                    return;
                };
                if acked > self.capacity.upper_bps() {
                    self.capacity = LinkCapacity::default();
                }
                let limit = 1.5 * acked + 10_000.0;
                let elapsed = self
                    .last_change
                    .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                // Past the capacity an overuse or a probe found, only media that uses the
                // estimate tests it: while the sender stays well below it (our encoder follows
                // the target with a lag, under it), climbing further is a guess that the encoder
                // catching up pays for with a queue and losses (network bench (b): the estimate
                // crept to 1.3x the link between backoffs).
                let app_limited = acked < APP_LIMITED * self.delay_target
                    && self.delay_target >= self.capacity.upper_bps();
                if self.delay_target < limit && !app_limited {
                    // Additive only near the capacity seen at the last overuse; far below it
                    // (a backoff spiral, a sender that was idle) climb multiplicatively.
                    let near_capacity = self.capacity.estimate_bps().is_some()
                        && self.delay_target >= self.capacity.lower_bps();
                    let increased = if near_capacity {
                        self.delay_target + self.additive_rate() * elapsed.as_secs_f64()
                    } else {
                        let per_second = if self.seen_overuse {
                            INCREASE_PER_SECOND
                        } else {
                            STARTUP_INCREASE_PER_SECOND
                        };
                        let alpha = per_second.powf(elapsed.as_secs_f64().min(1.0));
                        self.delay_target + (self.delay_target * (alpha - 1.0)).max(1000.0)
                    };
                    self.delay_target = increased.min(limit);
                }
                self.last_change = Some(now);
            }
            RateState::Decrease => {
                let Some(acked) = acked else {
                    self.state = RateState::Hold;
                    return;
                };
                // At most a halving per backoff: when the sender is application-limited (the
                // frame dropper paying off a keyframe) the delivered rate says little about the
                // link, and following it down spirals to the floor (seen behind a 600 kbit/s
                // cap: 475 → 100 kbit/s in a second after a 960x540 keyframe).
                let mut decreased = (acked * BETA - 5000.0).max(self.delay_target * 0.5);
                if decreased > self.delay_target
                    && let Some(cap) = self.capacity.estimate_bps()
                {
                    decreased = BETA * cap;
                }
                if decreased < self.delay_target {
                    self.delay_target = decreased;
                }
                if acked < self.capacity.lower_bps() {
                    self.capacity = LinkCapacity::default();
                }
                self.capacity.on_overuse(acked);
                self.seen_overuse = true;
                // Hold until the queue has drained.
                self.state = RateState::Hold;
                self.last_change = Some(now);
            }
        }
        self.delay_target = self.delay_target.clamp(self.min, self.max);
    }

    /// A probe cluster (`crate::probe`) found the bottleneck: it delivered at `delivered_bps`,
    /// and the estimate goes to `bps` (just under that). The delivered rate is a capacity
    /// sample, and the blind start-up climb ends, even when the delay detector reads the
    /// cluster's own queue as overuse: then the estimate only goes down to `bps` and the
    /// backoff follows from the detector (ignoring the result there left the 50 %/s climb
    /// running: 460 → 734 kbit/s in 4 s on a 500 kbit/s link, network bench (b)).
    pub(crate) fn on_probe_saturated(&mut self, now: Instant, bps: f64, delivered_bps: f64) {
        if !(bps.is_finite() && bps > 0.0 && delivered_bps.is_finite() && delivered_bps > 0.0) {
            return;
        }
        self.delay_target = if self.usage == Usage::Overusing {
            self.delay_target.min(bps)
        } else {
            bps
        }
        .clamp(self.min, self.max);
        self.capacity.on_overuse(delivered_bps);
        self.seen_overuse = true;
        self.last_change = Some(now);
    }

    /// A probe cluster went through at `bps` without finding the bottleneck: the link carries
    /// at least that.
    pub(crate) fn on_probe_unsaturated(&mut self, now: Instant, bps: f64) {
        if !(bps.is_finite() && bps > self.delay_target) || self.usage == Usage::Overusing {
            return;
        }
        self.delay_target = bps.clamp(self.min, self.max);
        self.last_change = Some(now);
    }

    /// Near the known capacity: about one packet more per response time.
    fn additive_rate(&self) -> f64 {
        let frame_bits = self.delay_target / 30.0;
        let packets = (frame_bits / (1200.0 * 8.0)).ceil().max(1.0);
        let packet_bits = frame_bits / packets;
        let response = self.rtt.as_secs_f64() + 0.1;
        (packet_bits / response).max(4000.0)
    }

    fn update_loss(&mut self, now: Instant) {
        let since = *self.loss_since.get_or_insert(now);
        if self.loss_total < 20 || now.saturating_duration_since(since) < Duration::from_millis(500)
        {
            return;
        }
        let loss = self.loss_lost as f64 / self.loss_total as f64;
        self.loss = Some(loss);
        self.loss_lost = 0;
        self.loss_total = 0;
        self.loss_since = Some(now);
        let current = self.target_bps();
        if loss > 0.10 {
            let wait = Duration::from_millis(300) + self.rtt;
            if self
                .last_loss_decrease
                .is_none_or(|t| now.saturating_duration_since(t) >= wait)
            {
                self.loss_cap = (current * (1.0 - 0.5 * loss)).max(self.min);
                self.last_loss_decrease = Some(now);
            }
        } else if loss < 0.04 && self.loss_cap.is_finite() {
            // Low loss: the cap climbs back, and goes away once the delay half is the limit.
            self.loss_cap = self.loss_cap * 1.08 + 1000.0;
            if self.loss_cap > self.delay_target {
                self.loss_cap = f64::INFINITY;
            }
        }
    }
}

fn linear_fit_slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), &(x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (mut num, mut den) = (0.0, 0.0);
    for &(x, y) in points {
        num += (x - mx) * (y - my);
        den += (x - mx) * (x - mx);
    }
    (den != 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `seconds` of packets sent at `rate_bps` over an uncongested path (20 ms one way),
    /// every `lose_every`-th packet lost, feedback every 100 ms.
    fn feed(est: &mut Estimator, rate_bps: f64, seconds: u64, lose_every: Option<u64>) {
        let epoch = Instant::now();
        let interval = Duration::from_secs_f64(1200.0 * 8.0 / rate_bps);
        let mut batch = Vec::new();
        let mut next_feedback = Duration::from_millis(100);
        let mut t = Duration::ZERO;
        let mut n = 0u64;
        while t < Duration::from_secs(seconds) {
            n += 1;
            let lost = lose_every.is_some_and(|k| n.is_multiple_of(k));
            batch.push(Packet {
                departure: epoch + t,
                arrival: (!lost).then_some(t + Duration::from_millis(20)),
                size: 1200,
            });
            t += interval;
            if t >= next_feedback {
                est.on_feedback(epoch + t + Duration::from_millis(20), &batch);
                batch.clear();
                next_feedback += Duration::from_millis(100);
            }
        }
    }

    #[test]
    fn an_application_limited_sender_does_not_inflate_the_estimate() {
        // Sending 200 kbit/s on an empty path says nothing about 2 Mbit/s: the estimate may run
        // ahead of what is sent by half, no more.
        let mut est = Estimator::new(300_000.0, 100_000.0, 10_000_000.0);
        feed(&mut est, 200_000.0, 30, None);
        assert!(
            est.target_bps() <= 1.5 * 200_000.0 + 10_000.0 + 1.0,
            "{}",
            est.target_bps()
        );
    }

    #[test]
    fn heavy_loss_backs_off_and_light_loss_does_not() {
        let mut heavy = Estimator::new(1_000_000.0, 100_000.0, 10_000_000.0);
        feed(&mut heavy, 1_000_000.0, 5, Some(5)); // 20 %
        assert!(heavy.target_bps() < 900_000.0, "{}", heavy.target_bps());
        assert!(heavy.loss().is_some_and(|l| (l - 0.2).abs() < 0.02));

        let mut light = Estimator::new(1_000_000.0, 100_000.0, 10_000_000.0);
        feed(&mut light, 1_000_000.0, 5, Some(50)); // 2 %
        assert!(light.target_bps() >= 1_000_000.0, "{}", light.target_bps());
    }

    #[test]
    fn a_saturated_probe_ends_the_start_up_climb_even_read_as_overuse() {
        let mut est = Estimator::new(300_000.0, 100_000.0, 10_000_000.0);
        est.usage = Usage::Overusing;
        let now = Instant::now();
        est.on_probe_saturated(now, 450_000.0, 470_000.0);
        // Not raised while the queue grows, but the link is known: no more 50 %/s.
        assert_eq!(est.target_bps(), 300_000.0);
        assert!(est.seen_overuse);
        assert!(est.capacity.estimate_bps().is_some());
        est.usage = Usage::Normal;
        est.on_probe_saturated(now, 450_000.0, 470_000.0);
        assert_eq!(est.target_bps(), 450_000.0);
    }

    #[test]
    fn stays_within_bounds() {
        let mut est = Estimator::new(50_000.0, 150_000.0, 250_000.0);
        assert_eq!(est.target_bps(), 150_000.0);
        feed(&mut est, 2_000_000.0, 10, None);
        assert_eq!(est.target_bps(), 250_000.0);
        feed(&mut est, 2_000_000.0, 3, Some(2));
        assert!(est.target_bps() >= 150_000.0);
    }
}
