//! Probing the link with media: libwebrtc's idea (`ProbeController` sends a cluster of packets
//! above the estimate, `ProbeBitrateEstimator` reads the rate the path delivered them at from
//! transport-wide feedback), with the video the pacer already holds instead of padding.
//!
//! Why: without it the estimate can only climb blindly from its start value. Our encoder sends
//! below the estimate (the target leaves room for audio and retransmissions, and openh264
//! undershoots), so the link is not loaded while the estimate climbs, and nothing says where the
//! link ends until the encoder catches up and overflows it (network bench (b), 500 kbit/s: the
//! estimate at 1.35–1.46× the link in every run with ≥ 1.5 s of freezes). A cluster of the
//! queued keyframe's packets sent at 3× the estimate arrives at the receiver spread out at the
//! bottleneck's rate: that rate is the link.
//!
//! Padding probes are not used: padding-only packets would need RTX numbering of their own next
//! to the NACK responder's, and webrtc-rs reads a padding-only RTX packet as a retransmission.
//!
//! [`ProbeLog`] is shared by the pacer (which asks [`ProbeLog::plan`] whether to send a cluster
//! and reports each packet it sends in one) and the estimator (which hands it the feedback and
//! gets [`ProbeResult`]s). Everything is a function of the instants handed in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rtc::interceptor::PacketReport;

/// A cluster needs at least this many packets (libwebrtc's minimum): this many queued, or a
/// frame of several being written (the pacer releases a frame's first packets as they come, so
/// a keyframe is rarely queued whole).
const MIN_PACKETS: usize = 5;
/// At most this many packets go at the probe rate; the rest of a keyframe is paced as usual.
const MAX_PACKETS: usize = 20;
/// Clusters are sent at this multiple of the media estimate (libwebrtc's first probe).
const PROBE_FACTOR: f64 = 3.0;
/// Clusters tried before giving up (each waits for queued video: a keyframe, a big frame).
const MAX_ATTEMPTS: u32 = 6;
/// A cluster whose feedback has not passed it after this long is dropped.
const FEEDBACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Clusters go only this long after the connection came up: the start is where the estimate
/// is a guess. Later a queue long enough for a cluster is mostly congestion (after a capacity
/// drop, a cluster at 3× a stale estimate overflowed the new bottleneck: network bench (c)).
const START_WINDOW: Duration = Duration::from_secs(5);
/// Only a queue this fresh (a frame just written: a keyframe) is sent as a cluster, not a
/// backlog.
const FRESH: Duration = Duration::from_millis(30);
/// Time between the end of a cluster and the start of the next.
const SPACING: Duration = Duration::from_millis(500);
/// A delivery rate below this fraction of the send rate means the probe found the bottleneck
/// (libwebrtc's `kMinRatioForUnsaturatedLink`).
const SATURATED_RATIO: f64 = 0.9;
/// Of a saturated probe's delivery rate, this much becomes the estimate (libwebrtc's
/// `kTargetUtilizationFraction`).
const UTILIZATION: f64 = 0.95;

/// What a cluster measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ProbeResult {
    /// The rate to take as the estimate, bits/s.
    pub bps: f64,
    /// The path delivered the cluster slower than it was sent: `bps` is (just under) the
    /// bottleneck's capacity, not a lower bound of it.
    pub saturated: bool,
    /// The rate the path delivered the cluster at, bits/s.
    pub delivered_bps: f64,
}

/// A cluster the pacer should send now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Plan {
    pub rate_bps: f64,
    pub packets: usize,
}

#[derive(Debug)]
struct Cluster {
    /// (ssrc, sequence number) → bytes, of the packets sent in it not yet seen arriving.
    packets: HashMap<(u32, u16), usize>,
    /// Packets sent in it.
    sent: usize,
    last_departure: Option<Instant>,
    ended: Option<Instant>,
    /// Arrived packets' (departure, arrival on the receiver's clock, bytes).
    arrived: Vec<(Instant, Duration, usize)>,
}

#[derive(Debug, Default)]
struct Inner {
    /// When the connection came up: packets sent since reach the peer. Before that SRTP drops
    /// them (after the pacer), and a cluster of them would wait for feedback that never comes.
    ready_at: Option<Instant>,
    attempts: u32,
    /// A saturated result came: the link's capacity is known, no more probes.
    found: bool,
    sending: Option<Cluster>,
    waiting: Option<Cluster>,
    last_end: Option<Instant>,
}

/// The probe clusters of one peer connection (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct ProbeLog {
    inner: Mutex<Inner>,
}

impl ProbeLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding it leaves plain data behind: keep using it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The connection came up at `now` (DTLS done, SRTP keyed): clusters may go for
    /// [`START_WINDOW`] from then.
    pub(crate) fn set_ready(&self, now: Instant) {
        let mut s = self.lock();
        if s.ready_at.is_none() {
            s.ready_at = Some(now);
        }
    }

    /// Whether the pacer should send a cluster now, holding `queued` video packets whose oldest
    /// has waited `waited` (`frame_continues`: the head is not the last packet of its frame, so
    /// more of it is being written), with the media estimate at `estimate_bps`; when it says so
    /// a cluster has started.
    pub(crate) fn plan(
        &self,
        now: Instant,
        queued: usize,
        frame_continues: bool,
        waited: Duration,
        estimate_bps: f64,
    ) -> Option<Plan> {
        let mut s = self.lock();
        if let Some(w) = &s.waiting
            && w.ended
                .is_some_and(|e| now.saturating_duration_since(e) > FEEDBACK_TIMEOUT)
        {
            s.waiting = None;
        }
        let in_window = s
            .ready_at
            .is_some_and(|r| now.saturating_duration_since(r) <= START_WINDOW);
        if !in_window
            || waited > FRESH
            || s.found
            || s.attempts >= MAX_ATTEMPTS
            || s.sending.is_some()
            || s.waiting.is_some()
            || (queued < MIN_PACKETS && !frame_continues)
            || !(estimate_bps.is_finite() && estimate_bps > 0.0)
            || s.last_end
                .is_some_and(|e| now.saturating_duration_since(e) < SPACING)
        {
            return None;
        }
        s.attempts += 1;
        tracing::debug!(
            attempt = s.attempts,
            queued,
            rate_bps = (estimate_bps * PROBE_FACTOR) as u64,
            "probe cluster starts"
        );
        s.sending = Some(Cluster {
            packets: HashMap::new(),
            sent: 0,
            last_departure: None,
            ended: None,
            arrived: Vec::new(),
        });
        // Up to MAX_PACKETS, not just what is queued now: the rest of the frame being written is
        // queued long before the second probe packet is due.
        Some(Plan {
            rate_bps: estimate_bps * PROBE_FACTOR,
            packets: MAX_PACKETS,
        })
    }

    /// The pacer sent a packet of the current cluster.
    pub(crate) fn sent(&self, ssrc: u32, seq: u16, bytes: usize, now: Instant) {
        if let Some(c) = self.lock().sending.as_mut() {
            c.packets.insert((ssrc, seq), bytes);
            c.sent += 1;
            c.last_departure = Some(now);
        }
    }

    /// The pacer finished the current cluster (sent its packets, or ran out of queued ones).
    pub(crate) fn end(&self, now: Instant) {
        let mut s = self.lock();
        let Some(mut c) = s.sending.take() else {
            return;
        };
        s.last_end = Some(now);
        if c.sent < MIN_PACKETS {
            // A small frame: not an attempt (the next may be the keyframe).
            s.attempts = s.attempts.saturating_sub(1);
            return;
        }
        c.ended = Some(now);
        s.waiting = Some(c);
    }

    /// Feedback for packets in send order; a result once the feedback has passed the cluster.
    pub(crate) fn on_reports(&self, reports: &[PacketReport]) -> Option<ProbeResult> {
        let mut s = self.lock();
        let c = s.waiting.as_mut()?;
        let last = c.last_departure?;
        let mut passed = false;
        for r in reports {
            if r.departure > last {
                passed = true;
                continue;
            }
            let Some(arrival) = r.arrival.filter(|_| r.arrived) else {
                continue;
            };
            // Removed once seen: a packet reported again is counted once.
            if let Some(bytes) = c.packets.remove(&(r.ssrc, r.rtp_sequence_number)) {
                c.arrived.push((r.departure, arrival, bytes));
            }
        }
        if !passed {
            return None;
        }
        let c = s.waiting.take()?;
        let result = measure(&c.arrived, c.sent);
        if result.is_none() {
            tracing::debug!(
                sent = c.sent,
                arrived = c.arrived.len(),
                "probe cluster measured nothing"
            );
        }
        if result.is_some_and(|r| r.saturated) {
            s.found = true;
        }
        result
    }
}

/// libwebrtc's `ProbeBitrateEstimator` over one cluster's arrived packets.
fn measure(arrived: &[(Instant, Duration, usize)], sent: usize) -> Option<ProbeResult> {
    // Most of the cluster must have arrived, or the spread says little.
    if arrived.len() < MIN_PACKETS || arrived.len() * 2 < sent {
        return None;
    }
    let first_send = arrived.iter().map(|a| a.0).min()?;
    let (last_send, _, last_send_bytes) = *arrived.iter().max_by_key(|a| a.0)?;
    let (_, first_arrival, first_arrival_bytes) = *arrived.iter().min_by_key(|a| a.1)?;
    let last_arrival = arrived.iter().map(|a| a.1).max()?;
    let total: usize = arrived.iter().map(|a| a.2).sum();
    let send_s = last_send
        .saturating_duration_since(first_send)
        .as_secs_f64();
    let recv_s = last_arrival.saturating_sub(first_arrival).as_secs_f64();
    if send_s <= 0.0 || recv_s <= 0.0 || send_s > 1.0 || recv_s > 1.0 {
        return None;
    }
    // The last packet sent took no send time within the interval, the first to arrive no
    // receive time.
    let send_bps = (total - last_send_bytes) as f64 * 8.0 / send_s;
    let recv_bps = (total - first_arrival_bytes) as f64 * 8.0 / recv_s;
    if recv_bps > 2.0 * send_bps {
        // Arrived much faster than sent: bunched by something on the way, not a measurement.
        return None;
    }
    if recv_bps < SATURATED_RATIO * send_bps {
        Some(ProbeResult {
            bps: UTILIZATION * recv_bps,
            saturated: true,
            delivered_bps: recv_bps,
        })
    } else {
        Some(ProbeResult {
            bps: send_bps.min(recv_bps),
            saturated: false,
            delivered_bps: recv_bps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ssrc: u32, seq: u16, departure: Instant, arrival: Option<Duration>) -> PacketReport {
        PacketReport {
            ssrc,
            id: u64::from(seq),
            rtp_sequence_number: seq,
            is_twcc: true,
            twcc_sequence_number: seq,
            size: 1200,
            arrived: arrival.is_some(),
            departure,
            arrival,
            ecn: Default::default(),
        }
    }

    /// Sends a `n`-packet cluster of 1 200 B at `rate` through a bottleneck of `capacity`
    /// (bits/s) and returns what the log measured.
    fn probe(n: usize, rate: f64, capacity: f64, lose: &[u16]) -> Option<ProbeResult> {
        let t0 = Instant::now();
        let log = ProbeLog::default();
        log.set_ready(t0);
        let plan = log
            .plan(t0, n, false, Duration::ZERO, rate / PROBE_FACTOR)
            .expect("a plan");
        let n = n.min(plan.packets);
        let gap = Duration::from_secs_f64(1200.0 * 8.0 / plan.rate_bps);
        let service = Duration::from_secs_f64(1200.0 * 8.0 / capacity);
        let mut reports = Vec::new();
        let mut free = Duration::from_millis(30);
        for i in 0..n {
            let seq = i as u16;
            let dep = t0 + gap * i as u32;
            log.sent(7, seq, 1200, dep);
            let start = free.max(gap * i as u32 + Duration::from_millis(30));
            free = start + service;
            let arrival = (!lose.contains(&seq)).then_some(free);
            reports.push(report(7, seq, dep, arrival));
        }
        let end = t0 + gap * n as u32;
        log.end(end);
        assert_eq!(log.on_reports(&reports), None, "feedback not past it yet");
        log.on_reports(&[report(7, 999, end + Duration::from_millis(20), Some(free))])
    }

    #[test]
    fn a_probe_through_a_bottleneck_reads_the_bottleneck() {
        let r = probe(20, 900_000.0, 500_000.0, &[]).expect("a result");
        assert!(r.saturated);
        assert!((r.bps - 0.95 * 500_000.0).abs() < 10_000.0, "{r:?}");
    }

    #[test]
    fn a_probe_under_the_capacity_reads_its_own_rate() {
        let r = probe(20, 900_000.0, 4_000_000.0, &[]).expect("a result");
        assert!(!r.saturated);
        assert!((r.bps - 900_000.0).abs() < 20_000.0, "{r:?}");
    }

    #[test]
    fn a_few_losses_still_measure_and_many_do_not() {
        // Lost past the bottleneck: their time there counts, their bytes do not (~10 % low).
        let r = probe(20, 900_000.0, 500_000.0, &[3, 11]).expect("a result");
        assert!(r.saturated && (r.bps - 450_000.0).abs() < 30_000.0, "{r:?}");
        let lost: Vec<u16> = (0..15).collect();
        assert_eq!(probe(20, 900_000.0, 500_000.0, &lost), None);
    }

    #[test]
    fn no_cluster_before_the_connection_nor_without_fresh_queued_video_nor_late() {
        let t0 = Instant::now();
        let z = Duration::ZERO;
        let log = ProbeLog::default();
        assert_eq!(
            log.plan(t0, 10, false, z, 3e5),
            None,
            "not before the connection is up"
        );
        log.set_ready(t0);
        assert_eq!(log.plan(t0, MIN_PACKETS - 1, false, z, 3e5), None);
        assert!(
            log.plan(t0, 1, true, z, 3e5).is_some(),
            "the first packet of a frame of several"
        );
        log.end(t0);
        // That frame was short: not counted, but the next waits out the spacing.
        assert_eq!(log.lock().attempts, 0);
        assert_eq!(log.plan(t0, 10, false, z, 3e5), None);
        log.lock().last_end = None;
        assert_eq!(
            log.plan(t0, 10, false, FRESH * 2, 3e5),
            None,
            "a backlog is no probe"
        );
        // One cluster at a time, spaced.
        assert!(log.plan(t0, 10, false, z, 3e5).is_some());
        assert_eq!(log.plan(t0, 10, false, z, 3e5), None);
        log.end(t0);
        assert_eq!(
            log.plan(t0 + Duration::from_millis(100), 10, false, z, 3e5),
            None
        );
        // The cluster was empty: nothing waits for feedback, the next may go after the spacing.
        assert!(log.plan(t0 + SPACING, 10, false, z, 3e5).is_some());
        log.end(t0 + SPACING);
        // Only at the start of the call.
        assert_eq!(log.plan(t0 + START_WINDOW * 2, 10, false, z, 3e5), None);
    }

    #[test]
    fn a_saturated_result_ends_probing_and_a_lost_cluster_times_out() {
        let t0 = Instant::now();
        let z = Duration::ZERO;
        let log = ProbeLog::default();
        log.set_ready(t0);
        log.plan(t0, 10, false, z, 3e5).expect("a plan");
        for seq in 0..10 {
            log.sent(1, seq, 1200, t0 + Duration::from_millis(u64::from(seq)));
        }
        log.end(t0 + Duration::from_millis(10));
        // No feedback at all: after the timeout the next cluster may go.
        assert_eq!(
            log.plan(t0 + Duration::from_secs(1), 10, false, z, 3e5),
            None
        );
        assert!(
            log.plan(t0 + Duration::from_secs(3), 10, false, z, 3e5)
                .is_some()
        );
        // Found: done.
        log.lock().found = true;
        log.end(t0 + Duration::from_secs(3));
        assert_eq!(
            log.plan(t0 + Duration::from_secs(4), 10, false, z, 3e5),
            None
        );
    }
}
