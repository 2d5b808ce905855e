//! Send-side bandwidth estimation: webrtc-rs's Google Congestion Control (delay + loss) over
//! transport-wide CC feedback, one estimator per peer connection, published so the application
//! can make its encoder follow the link.
//!
//! The estimator itself is webrtc-rs's ([`rtc::interceptor::Gcc`]); this module only wraps it so
//! its value leaves the interceptor chain ([`BandwidthEstimate`]) and so the pacer runs with
//! headroom above the media rate, as Chromium's does (a keyframe is several times the average
//! frame; pacing it at exactly the target would delay it by hundreds of milliseconds).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use rtc::interceptor::{BandwidthEstimator, EstimatorStats, Gcc, PacketReport};

/// The pacer releases at this multiple of the estimate (Chromium's pacing factor).
pub const PACING_FACTOR: f64 = 2.5;

/// Congestion control settings of every peer connection of a socket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CongestionConfig {
    /// Run GCC + pacer over transport-wide CC feedback. Off: no estimate (the application sends
    /// at its own fixed rate, as before).
    pub enabled: bool,
    /// Where the estimate starts, bits/s (GCC has no probing here: it grows ~8 %/s from this).
    /// 300 kbit/s, Chromium's start: starting above a slow link's capacity floods its queue
    /// (seen: an 8 s freeze at the start of a call on a 600 kbit/s link from 1 Mbit/s); the
    /// price is a slow ramp on fast links (~15 s to 850 kbit/s) until probing exists.
    pub start_bps: u32,
    /// Floor of the estimate, bits/s.
    pub min_bps: u32,
    /// Ceiling of the estimate, bits/s.
    pub max_bps: u32,
}

impl Default for CongestionConfig {
    fn default() -> Self {
        CongestionConfig {
            enabled: true,
            start_bps: 300_000,
            min_bps: 100_000,
            max_bps: 10_000_000,
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
}

impl BandwidthEstimate {
    /// A new estimate holding `start_bps`.
    pub fn new(start_bps: u32) -> Self {
        BandwidthEstimate {
            target_bps: AtomicU64::new(u64::from(start_bps)),
            loss_ppm: AtomicU32::new(u32::MAX),
            reports: AtomicU64::new(0),
        }
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

/// GCC whose estimate is published to a [`BandwidthEstimate`]; what it hands the pacer is the
/// estimate × [`PACING_FACTOR`].
pub(crate) struct PublishedGcc {
    gcc: Gcc,
    out: Arc<BandwidthEstimate>,
}

impl PublishedGcc {
    pub(crate) fn new(config: &CongestionConfig, out: Arc<BandwidthEstimate>) -> Self {
        let min = f64::from(config.min_bps.max(10_000));
        let max = f64::from(config.max_bps).max(min);
        PublishedGcc {
            gcc: Gcc::new(f64::from(config.start_bps), min, max),
            out,
        }
    }
}

impl BandwidthEstimator for PublishedGcc {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        if reports.is_empty() {
            return;
        }
        self.gcc.on_reports(now, reports);
        self.out
            .publish(self.gcc.target_bitrate(), self.gcc.stats().packet_loss);
    }

    fn target_bitrate(&self) -> f64 {
        self.gcc.target_bitrate() * PACING_FACTOR
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.gcc.handle_timeout(now);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.gcc.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.gcc.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
