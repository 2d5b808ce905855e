//! A bottleneck-link simulator for send-side estimators (tests only).
//!
//! A paced video-like sender (30 frames/s sized from the estimate, released at the pacing
//! factor × the estimate, as the real pacer does) feeds a drop-tail bottleneck of a given
//! capacity, queue and one-way delay; the receiver's transport-wide feedback (every 100 ms,
//! covering everything up to the newest arrival) goes back to the estimator after the same delay.
//! Everything runs on one injected clock, so a trajectory is reproducible and a test can assert
//! what the estimator did to the queue, not only what number it printed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rtc::interceptor::{BandwidthEstimator, PacketReport};

use crate::probe::ProbeLog;

/// One link phase: from `at` on, the bottleneck has this capacity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phase {
    pub at: Duration,
    pub capacity_bps: f64,
}

/// The simulated path.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub phases: Vec<Phase>,
    /// One-way propagation delay (each direction).
    pub one_way: Duration,
    /// Drop-tail queue, as the time it takes to drain at the current capacity.
    pub queue: Duration,
    /// Random loss on top of queue drops, 0..1 (deterministic pseudo-random).
    pub random_loss: f64,
    /// Extra frames (keyframes) the sender emits: (when, bytes).
    pub keyframes: Vec<(Duration, usize)>,
    /// The sender as the media glue drives a real encoder: video at 0.9 × the estimate −
    /// 48 kbit/s (room for audio), reached with a 1 s lag (an encoder follows a new target over
    /// its rate-control window), so it sends below the estimate while the estimate climbs.
    /// `false`: frames sized exactly from the estimate.
    pub encoder_lag: bool,
}

impl Link {
    fn capacity(&self, t: Duration) -> f64 {
        self.phases
            .iter()
            .rev()
            .find(|p| p.at <= t)
            .map(|p| p.capacity_bps)
            .unwrap_or(1e6)
    }
}

/// What a second of simulation looked like.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Second {
    /// Estimate at the end of the second (media target, before the pacing factor).
    pub estimate_bps: f64,
    /// Bits that left the sender in the second, per second.
    pub sent_bps: f64,
    /// Largest queueing delay a packet saw in the second.
    pub max_queue_ms: f64,
    /// Fraction of the second's packets lost.
    pub loss: f64,
}

struct Sent {
    id: u64,
    size: usize,
    departure: Duration,
    /// Receiver-clock arrival; `None`: dropped.
    arrival: Option<Duration>,
}

/// Runs `seconds` of a call through `link`, the estimator deciding the sender's rate
/// (`target_bitrate() / pacing` is the media rate, `target_bitrate()` the release rate); with
/// `probes`, the pacer sends the probe clusters that log plans, as the real pacer does.
pub(crate) fn run(
    est: &mut dyn BandwidthEstimator,
    pacing: f64,
    link: &Link,
    seconds: u32,
    probes: Option<&ProbeLog>,
) -> Vec<Second> {
    let epoch = Instant::now();
    let step = Duration::from_millis(1);
    let end = Duration::from_secs(u64::from(seconds));
    let mut t = Duration::ZERO;
    let mut next_frame = Duration::ZERO;
    let mut next_feedback = Duration::from_millis(100);
    // Packets waiting in the pacer: size in bytes.
    let mut pacer: VecDeque<usize> = VecDeque::new();
    let mut pacer_budget = 0.0f64;
    let mut link_free_at = Duration::ZERO;
    let mut sent: Vec<Sent> = Vec::new();
    let mut reported = 0usize;
    // Feedback batches in flight back to the sender: (delivery time, first index, end index).
    let mut feedback: VecDeque<(Duration, usize, usize)> = VecDeque::new();
    let mut seconds_out = Vec::new();
    let mut sec = Second::default();
    let mut sec_packets = 0u32;
    let mut sec_lost = 0u32;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next_id = 0u64;
    let mut encoder_bps: Option<f64> = None;
    // A probe cluster being sent: (rate, packets left, next release).
    let mut probe: Option<(f64, usize, Duration)> = None;
    while t < end {
        let release_bps = est.target_bitrate().max(1.0);
        let media_bps = release_bps / pacing;
        let frame_bps = if link.encoder_lag {
            let target = (0.9 * media_bps - 48_000.0).max(50_000.0);
            let e = encoder_bps.get_or_insert(target);
            // First-order lag, 1 s time constant, 1 ms steps.
            *e += (target - *e) * 0.001;
            *e
        } else {
            media_bps
        };
        if t >= next_frame {
            let mut bytes = (frame_bps / 8.0 / 30.0) as usize;
            if let Some(&(_, k)) = link
                .keyframes
                .iter()
                .find(|(at, _)| *at <= t && *at > t.saturating_sub(Duration::from_micros(33_333)))
            {
                bytes = k;
            }
            while bytes > 0 {
                let p = bytes.min(1200);
                pacer.push_back(p + 40);
                bytes -= p;
            }
            next_frame += Duration::from_micros(33_333);
        }
        pacer_budget = (pacer_budget + release_bps / 8.0 * step.as_secs_f64()).min(3000.0);
        if probe.is_none()
            && let Some(log) = probes
            && let Some(plan) = log.plan(epoch + t, pacer.len(), false, Duration::ZERO, media_bps)
        {
            probe = Some((plan.rate_bps, plan.packets, t));
        }
        while let Some(&size) = pacer.front() {
            let probing = if let Some((rate, left, next)) = probe.as_mut() {
                if *next > t {
                    break;
                }
                *left -= 1;
                *next += Duration::from_secs_f64(size as f64 * 8.0 / *rate);
                true
            } else {
                false
            };
            if !probing && pacer_budget < size as f64 {
                break;
            }
            pacer_budget -= size as f64;
            pacer.pop_front();
            if probing && let Some(log) = probes {
                log.sent(1, next_id as u16, size, epoch + t);
            }
            if let Some((_, left, _)) = probe
                && (left == 0 || pacer.is_empty())
            {
                probe = None;
                if let Some(log) = probes {
                    log.end(epoch + t);
                }
            }
            let cap = link.capacity(t);
            let queue_wait = link_free_at.saturating_sub(t);
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let random_drop = (rng % 1_000_000) as f64 / 1e6 < link.random_loss;
            let arrival = if queue_wait > link.queue {
                None
            } else {
                let start = link_free_at.max(t);
                link_free_at = start + Duration::from_secs_f64(size as f64 * 8.0 / cap);
                sec.max_queue_ms = sec.max_queue_ms.max(queue_wait.as_secs_f64() * 1000.0);
                (!random_drop).then_some(link_free_at + link.one_way)
            };
            sec_packets += 1;
            if arrival.is_none() {
                sec_lost += 1;
            }
            sec.sent_bps += size as f64 * 8.0;
            sent.push(Sent {
                id: next_id,
                size,
                departure: t,
                arrival,
            });
            next_id += 1;
        }
        if t >= next_feedback {
            // Everything up to the newest packet that has arrived by now is reported.
            let upto = sent
                .iter()
                .rposition(|s| s.arrival.is_some_and(|a| a <= t))
                .map(|i| i + 1)
                .unwrap_or(reported);
            if upto > reported {
                feedback.push_back((t + link.one_way, reported, upto));
                reported = upto;
            }
            next_feedback += Duration::from_millis(100);
        }
        while feedback.front().is_some_and(|f| f.0 <= t) {
            let Some((_, from, to)) = feedback.pop_front() else {
                break;
            };
            let reports: Vec<PacketReport> = sent[from..to]
                .iter()
                .map(|s| PacketReport {
                    ssrc: 1,
                    id: s.id,
                    rtp_sequence_number: s.id as u16,
                    is_twcc: true,
                    twcc_sequence_number: s.id as u16,
                    size: s.size,
                    arrived: s.arrival.is_some_and(|a| a <= t),
                    departure: epoch + s.departure,
                    arrival: s.arrival.filter(|a| *a <= t),
                    ecn: Default::default(),
                })
                .collect();
            est.on_reports(epoch + t, &reports);
        }
        if est.poll_timeout().is_some_and(|at| at <= epoch + t) {
            est.handle_timeout(epoch + t);
        }
        t += step;
        if t.as_millis().is_multiple_of(1000) {
            sec.estimate_bps = est.target_bitrate() / pacing;
            sec.loss = if sec_packets == 0 {
                0.0
            } else {
                f64::from(sec_lost) / f64::from(sec_packets)
            };
            seconds_out.push(sec);
            sec = Second::default();
            sec_packets = 0;
            sec_lost = 0;
        }
    }
    seconds_out
}

/// The trajectory as a table, for a failing assertion's message.
pub(crate) fn table(seconds: &[Second]) -> String {
    let mut out = String::from("s  estimate  sent  max-queue  loss\n");
    for (i, s) in seconds.iter().enumerate() {
        out += &format!(
            "{:>2} {:>8.0}k {:>5.0}k {:>7.0}ms {:>5.1}%\n",
            i + 1,
            s.estimate_bps / 1e3,
            s.sent_bps / 1e3,
            s.max_queue_ms,
            s.loss * 100.0
        );
    }
    out
}
