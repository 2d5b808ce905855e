//! Send-side bandwidth estimation: webrtc-rs's Google Congestion Control (delay + loss) over
//! transport-wide CC feedback, one estimator per peer connection, published so the application
//! can make its encoder follow the link.
//!
//! The estimator is ours (`bwe_gcc.rs`, libwebrtc's trendline + AIMD design; why not webrtc-rs's
//! `Gcc` is said there), plugged into webrtc-rs's TWCC sender and pacer through its
//! [`BandwidthEstimator`] trait. Its value leaves the interceptor chain ([`BandwidthEstimate`]),
//! and the pacer runs with headroom above the media rate (a keyframe is several times the average
//! frame; pacing it at exactly the target would delay it by hundreds of milliseconds).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use rtc::interceptor::{BandwidthEstimator, EstimatorStats, PacketReport};

use crate::nack_limit::SharedRtt;
use crate::probe::ProbeLog;

/// The pacer releases at this multiple of the estimate. Chromium uses 2.5; with openh264's
/// keyframes (several times a P-frame even at low targets) 2.5× overflowed a 200 ms bottleneck
/// queue with every keyframe near the link's rate, and each loss asked for the next keyframe.
pub const PACING_FACTOR: f64 = 1.5;

/// Congestion control settings of every peer connection of a socket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CongestionConfig {
    /// Run GCC + pacer over transport-wide CC feedback. Off: no estimate (the application sends
    /// at its own fixed rate, as before).
    pub enabled: bool,
    /// Where the estimate starts, bits/s. 300 kbit/s, Chromium's start: starting above a slow
    /// link's capacity floods its queue (seen: an 8 s freeze at the start of a call on a
    /// 600 kbit/s link from 1 Mbit/s). The first keyframe's probe cluster (`crate::probe`, at
    /// 3× this) then moves it to what the link delivered; until then, and on links faster than
    /// the probe, it climbs 50 %/s.
    pub start_bps: u32,
    /// Floor of the estimate, bits/s.
    pub min_bps: u32,
    /// Ceiling of the estimate, bits/s.
    pub max_bps: u32,
    /// Receive side: repeat a NACK once per measured repair round trip and wait two of them
    /// for a missing video packet ([`crate::nack_pace`]); `false`: webrtc-rs's generator
    /// (6 NACKs in 120 ms) and a 250 ms wait, which gave up most repairs on a 150 ms round
    /// trip (network bench, Rust→Rust, 150 ms / 3 %: 2.7–4.4 s of freezes per 30 s, paced
    /// 1.2 s). On by default since the congestion test's capped receivers kept ≥ 15 fps with
    /// it in 4 of 4 runs (the earlier failures came with a 5 s ladder hold, since undone).
    pub paced_nacks: bool,
    /// Send side: [`crate::pacer::PriorityPacer`] (the default: audio at once, retransmissions
    /// before video, any queue drained within 2 s, as libwebrtc's pacer); `false`: webrtc-rs's
    /// single-FIFO pacer, kept to compare the two in one build (network bench).
    pub priority_pacer: bool,
}

impl Default for CongestionConfig {
    fn default() -> Self {
        CongestionConfig {
            enabled: true,
            start_bps: 300_000,
            min_bps: 100_000,
            max_bps: 10_000_000,
            paced_nacks: true,
            priority_pacer: true,
        }
    }
}

/// One peer connection's current send-side estimate, readable from any thread.
#[derive(Debug)]
pub struct BandwidthEstimate {
    target_bps: AtomicU64,
    /// Loss fraction seen by the loss half, in millionths (`u32::MAX`: unknown).
    loss_ppm: AtomicU32,
    /// Feedback batches processed (0: the value is still the start value).
    reports: AtomicU64,
    /// How long the oldest packet in the pacer's queue has waited, µs.
    pacer_wait_us: AtomicU64,
    /// The probe clusters of this connection's pacer and estimator.
    probes: Arc<ProbeLog>,
}

impl BandwidthEstimate {
    /// A new estimate holding `start_bps`.
    pub fn new(start_bps: u32) -> Self {
        BandwidthEstimate {
            target_bps: AtomicU64::new(u64::from(start_bps)),
            loss_ppm: AtomicU32::new(u32::MAX),
            reports: AtomicU64::new(0),
            pacer_wait_us: AtomicU64::new(0),
            probes: Arc::new(ProbeLog::default()),
        }
    }

    /// The probe clusters this connection's pacer sends and its estimator reads back.
    pub(crate) fn probes(&self) -> &Arc<ProbeLog> {
        &self.probes
    }

    /// How long the oldest packet queued in the pacer toward this peer has waited (zero when
    /// nothing waits): the part of the send latency spent before the network.
    pub fn pacer_wait(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.pacer_wait_us.load(Ordering::Relaxed))
    }

    pub(crate) fn set_pacer_wait(&self, wait: std::time::Duration) {
        let us = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        self.pacer_wait_us.store(us, Ordering::Relaxed);
    }

    /// The estimated available send rate toward this peer, bits/s.
    pub fn target_bps(&self) -> u64 {
        self.target_bps.load(Ordering::Relaxed)
    }

    /// Fraction of packets the peer reported lost (GCC's loss window), if any feedback came.
    pub fn loss(&self) -> Option<f64> {
        match self.loss_ppm.load(Ordering::Relaxed) {
            u32::MAX => None,
            ppm => Some(f64::from(ppm) / 1e6),
        }
    }

    /// Feedback batches the estimate is based on (0: nothing heard yet, the start value).
    pub fn feedback_count(&self) -> u64 {
        self.reports.load(Ordering::Relaxed)
    }

    fn publish(&self, target: f64, loss: Option<f64>) {
        if target.is_finite() && target >= 0.0 {
            self.target_bps.store(target as u64, Ordering::Relaxed);
        }
        if let Some(l) = loss.filter(|l| l.is_finite()) {
            let ppm = (l.clamp(0.0, 1.0) * 1e6) as u32;
            self.loss_ppm.store(ppm, Ordering::Relaxed);
        }
        self.reports.fetch_add(1, Ordering::Relaxed);
    }
}

/// The estimator whose value is published to a [`BandwidthEstimate`]; what it hands the pacer
/// is the estimate × [`PACING_FACTOR`].
pub(crate) struct PublishedGcc {
    gcc: gcc::Estimator,
    out: Arc<BandwidthEstimate>,
    scratch: Vec<gcc::Packet>,
    /// Where the round trip it sees goes (for the NACK responder's limit), and the smallest
    /// samples of the current and the previous [`RTT_WINDOW`].
    rtt: Option<(Arc<SharedRtt>, RttWindow)>,
    /// Probe clusters the pacer sent (`crate::probe`), read back from the feedback.
    probes: Option<Arc<ProbeLog>>,
}

/// A round-trip sample is feedback arrival − departure of the newest packet it reports; the
/// feedback interval only ever adds to it, so the smallest recent sample is the round trip.
const RTT_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, Default)]
struct RttWindow {
    start: Option<Instant>,
    current: Option<std::time::Duration>,
    previous: Option<std::time::Duration>,
}

impl RttWindow {
    /// Adds a sample; returns the round trip to publish.
    fn add(&mut self, now: Instant, sample: std::time::Duration) -> std::time::Duration {
        let start = *self.start.get_or_insert(now);
        if now.saturating_duration_since(start) >= RTT_WINDOW {
            self.previous = self.current.take();
            self.start = Some(now);
        }
        let cur = self.current.map_or(sample, |c| c.min(sample));
        self.current = Some(cur);
        self.previous.map_or(cur, |p| p.min(cur))
    }
}

impl PublishedGcc {
    pub(crate) fn new(config: &CongestionConfig, out: Arc<BandwidthEstimate>) -> Self {
        let min = f64::from(config.min_bps.max(10_000));
        let max = f64::from(config.max_bps).max(min);
        PublishedGcc {
            gcc: gcc::Estimator::new(f64::from(config.start_bps), min, max),
            out,
            scratch: Vec::new(),
            rtt: None,
            probes: None,
        }
    }

    /// Also reads the probe clusters in `probes` (the pacer's) from the feedback.
    pub(crate) fn with_probes(mut self, probes: Arc<ProbeLog>) -> Self {
        self.probes = Some(probes);
        self
    }

    /// Also publishes the round trip the feedback shows to `rtt`.
    pub(crate) fn with_rtt(mut self, rtt: Arc<SharedRtt>) -> Self {
        self.rtt = Some((rtt, RttWindow::default()));
        self
    }
}

impl BandwidthEstimator for PublishedGcc {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        self.scratch.clear();
        self.scratch.extend(reports.iter().map(|r| gcc::Packet {
            departure: r.departure,
            arrival: r.arrival.filter(|_| r.arrived),
            size: r.size,
        }));
        self.gcc.on_feedback(now, &self.scratch);
        if let Some(result) = self.probes.as_ref().and_then(|p| p.on_reports(reports)) {
            tracing::debug!(
                bps = result.bps as u64,
                saturated = result.saturated,
                "probe cluster measured"
            );
            if result.saturated {
                self.gcc
                    .on_probe_saturated(now, result.bps, result.delivered_bps);
            } else {
                self.gcc.on_probe_unsaturated(now, result.bps);
            }
        }
        if let Some((shared, window)) = &mut self.rtt
            && let Some(newest) = reports
                .iter()
                .filter(|r| r.arrived)
                .map(|r| r.departure)
                .max()
        {
            shared.set(window.add(now, now.saturating_duration_since(newest)));
        }
        self.out.publish(self.gcc.target_bps(), self.gcc.loss());
    }

    fn target_bitrate(&self) -> f64 {
        self.gcc.target_bps() * PACING_FACTOR
    }

    fn stats(&self) -> EstimatorStats {
        let mut stats = EstimatorStats::default();
        stats.delay_based_bitrate = Some(self.gcc.delay_based_bps());
        stats.loss_based_bitrate = Some(self.gcc.loss_based_bps());
        stats.packet_loss = self.gcc.loss();
        stats
    }
}

#[path = "bwe_gcc.rs"]
mod gcc;

#[cfg(test)]
#[path = "bwe_sim.rs"]
mod sim;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_round_trip_is_the_smallest_recent_sample() {
        let t0 = Instant::now();
        let ms = std::time::Duration::from_millis;
        let mut w = RttWindow::default();
        assert_eq!(w.add(t0, ms(180)), ms(180));
        // Feedback waits add to some samples: the smallest wins.
        assert_eq!(w.add(t0 + ms(100), ms(150)), ms(150));
        assert_eq!(w.add(t0 + ms(200), ms(230)), ms(150));
        // The path got longer: followed within two windows.
        assert_eq!(w.add(t0 + ms(2_100), ms(300)), ms(150));
        assert_eq!(w.add(t0 + ms(4_200), ms(310)), ms(300));
    }
    use std::time::Duration;

    fn link(phases: &[(u64, f64)], one_way_ms: u64, loss: f64) -> sim::Link {
        sim::Link {
            phases: phases
                .iter()
                .map(|&(at, capacity_bps)| sim::Phase {
                    at: Duration::from_secs(at),
                    capacity_bps,
                })
                .collect(),
            one_way: Duration::from_millis(one_way_ms),
            queue: Duration::from_millis(200),
            random_loss: loss,
            keyframes: Vec::new(),
            encoder_lag: false,
        }
    }

    fn simulate(l: &sim::Link, seconds: u32) -> Vec<sim::Second> {
        simulate_from(300_000, l, seconds)
    }

    fn simulate_from(start_bps: u32, l: &sim::Link, seconds: u32) -> Vec<sim::Second> {
        simulate_probing(start_bps, l, seconds, true)
    }

    /// The pacer and estimator as a peer connection has them; `probing: false` without probe
    /// clusters.
    fn simulate_probing(
        start_bps: u32,
        l: &sim::Link,
        seconds: u32,
        probing: bool,
    ) -> Vec<sim::Second> {
        let est = Arc::new(BandwidthEstimate::new(start_bps));
        let config = CongestionConfig {
            start_bps,
            ..CongestionConfig::default()
        };
        let log = Arc::new(ProbeLog::default());
        log.set_ready(Instant::now());
        let mut gcc = PublishedGcc::new(&config, est);
        if probing {
            gcc = gcc.with_probes(log.clone());
        }
        sim::run(
            &mut gcc,
            PACING_FACTOR,
            l,
            seconds,
            probing.then_some(log.as_ref()),
        )
    }

    #[test]
    fn a_probe_finds_a_slow_link_before_a_lagging_encoder_overflows_it() {
        // Network bench (b): 500 kbit/s, 150 ms round trip, 3 % loss, an encoder that sends
        // below the estimate and follows it with a lag, a 20 kB keyframe at the start. Without
        // the probe the estimate climbs blindly to ~1.5x the link in the first 5 s, and the
        // queue overflows when the encoder catches up.
        let mut l = link(&[(0, 5e5)], 75, 0.03);
        l.encoder_lag = true;
        l.keyframes = vec![(Duration::from_millis(1), 20_000)];
        let without = simulate_probing(300_000, &l, 10, false);
        let with = simulate_probing(300_000, &l, 10, true);
        let t = format!(
            "without probing:\n{}\nwith:\n{}",
            sim::table(&without),
            sim::table(&with)
        );
        assert!(
            with[1].estimate_bps > 400_000.0,
            "the probe read the link:\n{t}"
        );
        for s in &with[1..6] {
            assert!(s.estimate_bps < 600_000.0, "{t}");
            assert!(s.max_queue_ms < 100.0, "{t}");
        }
    }

    #[test]
    fn a_big_keyframe_is_not_a_collapse() {
        // A 960x540 IDR of 50 kB every 5 s on a 600 kbit/s link with 15 kB of queue: some of it
        // is lost, and the estimate must stay in the link's range rather than fall to the floor.
        let mut l = link(&[(0, 6e5)], 25, 0.0);
        // Every 5 s, then a storm of one a second (each lost one asks for the next).
        l.keyframes = (2..5)
            .map(|i| (Duration::from_secs(5 * i), 50_000))
            .chain((25..30).map(|s| (Duration::from_secs(s), 50_000)))
            .collect();
        let out = simulate(&l, 40);
        let t = sim::table(&out);
        for s in &out[8..] {
            assert!(s.estimate_bps > 300_000.0, "{t}");
        }
    }

    #[test]
    fn recovers_from_a_start_far_above_the_link() {
        // Starting at 1.5 Mbit/s into 600 kbit/s floods the queue; the backoffs that follow
        // must not leave the estimate stuck far below the link.
        let out = simulate_from(1_500_000, &link(&[(0, 6e5)], 25, 0.0), 30);
        let t = sim::table(&out);
        assert!(out[4].estimate_bps < 700_000.0, "{t}");
        for s in &out[15..] {
            assert!(
                s.estimate_bps > 420_000.0 && s.estimate_bps < 640_000.0,
                "{t}"
            );
            assert!(s.max_queue_ms < 150.0, "{t}");
        }
    }

    // webrtc-rs's own Gcc, in the same simulation, climbs 8 %/s through a 1 Mbit/s link
    // until its 200 ms queue overflows (20-31 % loss per second) and repeats that every few
    // seconds; that is why the estimator is ours.
    #[test]
    fn holds_a_capped_link_without_filling_its_queue() {
        let out = simulate(&link(&[(0, 1e6)], 25, 0.0), 40);
        let t = sim::table(&out);
        for s in &out[5..] {
            assert!(
                s.estimate_bps > 600_000.0 && s.estimate_bps < 1_050_000.0,
                "{t}"
            );
            assert!(s.max_queue_ms < 150.0, "{t}");
            assert_eq!(s.loss, 0.0, "{t}");
        }
    }

    #[test]
    fn ramps_up_then_follows_a_capacity_drop() {
        let out = simulate(&link(&[(0, 4e6), (20, 6e5)], 25, 0.0), 40);
        let t = sim::table(&out);
        assert!(out[9].estimate_bps > 2_500_000.0, "slow ramp:\n{t}");
        for s in &out[23..] {
            assert!(s.estimate_bps < 650_000.0, "{t}");
            assert!(s.max_queue_ms < 150.0, "{t}");
            assert_eq!(s.loss, 0.0, "{t}");
        }
    }

    #[test]
    fn random_loss_is_not_congestion() {
        // 3 % random loss on a 500 kbit/s, 150 ms RTT path: the estimate stays near the link,
        // and the queue stays short.
        let out = simulate(&link(&[(0, 5e5)], 75, 0.03), 40);
        let t = sim::table(&out);
        for s in &out[5..] {
            assert!(
                s.estimate_bps > 330_000.0 && s.estimate_bps < 560_000.0,
                "{t}"
            );
            assert!(s.max_queue_ms < 150.0, "{t}");
        }
    }

    #[test]
    fn starts_at_the_start_value_without_feedback() {
        let est = Arc::new(BandwidthEstimate::new(800_000));
        let gcc = PublishedGcc::new(
            &CongestionConfig {
                start_bps: 800_000,
                ..CongestionConfig::default()
            },
            est.clone(),
        );
        assert_eq!(est.target_bps(), 800_000);
        assert_eq!(est.feedback_count(), 0);
        assert_eq!(est.loss(), None);
        assert!((gcc.target_bitrate() - 800_000.0 * PACING_FACTOR).abs() < 1.0);
    }

    #[test]
    fn empty_feedback_is_no_news() {
        let est = Arc::new(BandwidthEstimate::new(500_000));
        let mut gcc = PublishedGcc::new(&CongestionConfig::default(), est.clone());
        gcc.on_reports(Instant::now(), &[]);
        assert_eq!(est.feedback_count(), 0);
    }

    #[test]
    fn publish_ignores_nonsense() {
        let est = BandwidthEstimate::new(500_000);
        est.publish(f64::NAN, None);
        assert_eq!(est.target_bps(), 500_000);
        est.publish(300_000.0, Some(2.0));
        assert_eq!(est.target_bps(), 300_000);
        assert_eq!(est.loss(), Some(1.0));
    }
}
