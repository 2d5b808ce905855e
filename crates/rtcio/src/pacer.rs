//! The send pacer: webrtc-rs's leaky bucket ([`rtc::interceptor::Pacer`]) with libwebrtc's
//! priorities, in place of webrtc-rs's `PacerInterceptor`, which keeps one FIFO for everything.
//!
//! With one FIFO an audio packet waited behind whatever video was queued before it (a keyframe
//! is tens of packets), so the audio's arrival jitter grew with the video's bursts, and the
//! browser's audio jitter buffer (and, through lip sync, its video delay) grew with it; a
//! retransmission waited behind fresh video, so every repair took longer than the path needs.
//! libwebrtc's pacer sends audio at once (counted against the budget, not held by it) and
//! retransmissions before new video, and lets no packet wait more than 2 s (it raises the rate
//! to drain a longer queue in time). [`PriorityPacer`] does the same; RTCP passes straight
//! through as before.
//!
//! The classes come from the local streams bound to the interceptor: an `audio/*` stream's SSRC
//! is audio, a stream's RTX SSRC is a retransmission, anything else (video, FEC, a stream not
//! bound) is video. Without RTX negotiated a retransmission carries the video SSRC and queues
//! as video, as before.
//!
//! With a [`ProbeLog`], the pacer also sends probe clusters: when enough video is queued (a
//! keyframe) and the log asks for one, the head of the queue leaves at the probe rate instead of
//! the budget's (paid from the budget all the same, so the average rate holds), and the
//! estimator reads the link's capacity from how the path delivered it (`crate::probe`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{Attribute, Interceptor, Pacer, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::marshal::MarshalSize;
use tracing::warn;

use crate::bwe::{BandwidthEstimate, PACING_FACTOR};
use crate::interceptor_util::interceptor_types;
use crate::probe::ProbeLog;

/// No packet waits longer than this in the pacer: when the queue holds more than this at the
/// estimated rate, the pacer releases faster (libwebrtc's `kMaxExpectedQueueLength`). A queue
/// that long means the encoder is far above the estimate; the link decides what gets through.
pub(crate) const MAX_QUEUE_TIME: Duration = Duration::from_secs(2);
/// Packets queued at most (webrtc-rs's default); more are dropped and counted.
const QUEUE_LIMIT: usize = 4096;
/// The rate before the first estimate arrives (webrtc-rs's default).
const DEFAULT_BPS: f64 = 1_000_000.0;

/// How a packet is paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Sent at once, its size taken from the budget.
    Audio,
    /// Queued ahead of video.
    Retransmission,
    /// Queued behind retransmissions.
    Video,
}

/// A queued packet and when it was queued.
struct Queued {
    packet: TaggedPacket,
    bits: f64,
    since: Instant,
}

/// A probe cluster being sent: the head of the queue leaves every `bits / rate_bps`.
struct ActiveProbe {
    rate_bps: f64,
    left: usize,
    next_at: Instant,
}

/// The pacer interceptor (see the module docs).
pub(crate) struct PriorityPacer {
    bucket: Pacer,
    /// The rate the estimator asked for (the bucket may run faster to drain a long queue).
    target_bps: f64,
    classes: HashMap<u32, Class>,
    retransmissions: VecDeque<Queued>,
    video: VecDeque<Queued>,
    queued_bits: f64,
    dropped: u64,
    released: VecDeque<TaggedPacket>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
    /// Where the oldest packet's wait is published (`None`: nowhere).
    out: Option<Arc<BandwidthEstimate>>,
    /// Probe clusters, shared with the estimator (`None`: no probing).
    probes: Option<Arc<ProbeLog>>,
    probe: Option<ActiveProbe>,
}

impl PriorityPacer {
    /// A pacer at webrtc-rs's start rate until the estimator says otherwise; with `out`, the
    /// wait of the oldest queued packet is published there; with `probes`, it sends the probe
    /// clusters that log asks for.
    pub(crate) fn new(out: Option<Arc<BandwidthEstimate>>, probes: Option<Arc<ProbeLog>>) -> Self {
        PriorityPacer {
            bucket: Pacer::new(DEFAULT_BPS),
            target_bps: DEFAULT_BPS,
            classes: HashMap::new(),
            retransmissions: VecDeque::new(),
            video: VecDeque::new(),
            queued_bits: 0.0,
            dropped: 0,
            released: VecDeque::new(),
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
            out,
            probes,
            probe: None,
        }
    }

    /// Starts a probe cluster if the log wants one now.
    fn maybe_probe(&mut self, now: Instant) {
        if self.probe.is_some() {
            return;
        }
        let Some(log) = &self.probes else {
            return;
        };
        let queued = self.retransmissions.len() + self.video.len();
        let waited = self
            .oldest()
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let frame_continues = match self.head().map(|q| &q.packet.message.packet) {
            Some(Packet::Rtp(rtp)) => !rtp.header.marker,
            _ => false,
        };
        // The published estimate: the bucket runs at webrtc-rs's default until the first
        // feedback, and the keyframe at connect comes before that.
        let estimate = self
            .out
            .as_ref()
            .map_or(self.target_bps / PACING_FACTOR, |o| o.target_bps() as f64);
        if let Some(plan) = log.plan(now, queued, frame_continues, waited, estimate) {
            self.probe = Some(ActiveProbe {
                rate_bps: plan.rate_bps,
                left: plan.packets,
                next_at: now,
            });
        }
    }

    /// Sends what the probe cluster has due; ends it when it is complete or a packet due is not
    /// there.
    fn send_probe(&mut self, now: Instant) {
        let Some(mut probe) = self.probe.take() else {
            return;
        };
        while probe.left > 0 && probe.next_at <= now {
            let Some(mut q) = self.pop_head() else {
                break;
            };
            self.bucket.consume(q.bits);
            probe.left -= 1;
            probe.next_at += Duration::from_secs_f64(q.bits / probe.rate_bps.max(1.0));
            if let (Some(log), Packet::Rtp(rtp)) = (&self.probes, &q.packet.message.packet) {
                log.sent(
                    rtp.header.ssrc,
                    rtp.header.sequence_number,
                    (q.bits / 8.0) as usize,
                    now,
                );
            }
            q.packet.now = now;
            self.released.push_back(q.packet);
        }
        // The queue may be empty between two packets of the frame being written: only a packet
        // due and not there ends the cluster.
        if probe.left == 0 || (self.head().is_none() && probe.next_at <= now) {
            if let Some(log) = &self.probes {
                log.end(now);
            }
        } else {
            self.probe = Some(probe);
        }
    }

    fn bits_of(packet: &TaggedPacket) -> f64 {
        match &packet.message.packet {
            Packet::Rtp(rtp) => (rtp.marshal_size() * 8) as f64,
            _ => 0.0,
        }
    }

    fn class_of(&self, packet: &TaggedPacket) -> Class {
        match &packet.message.packet {
            Packet::Rtp(rtp) => self
                .classes
                .get(&rtp.header.ssrc)
                .copied()
                .unwrap_or(Class::Video),
            // Not RTP: nothing to pace.
            _ => Class::Audio,
        }
    }

    /// The next packet to go: retransmissions first.
    fn head(&self) -> Option<&Queued> {
        self.retransmissions.front().or_else(|| self.video.front())
    }

    fn pop_head(&mut self) -> Option<Queued> {
        let q = self
            .retransmissions
            .pop_front()
            .or_else(|| self.video.pop_front())?;
        self.queued_bits = (self.queued_bits - q.bits).max(0.0);
        Some(q)
    }

    /// When the oldest queued packet was queued.
    fn oldest(&self) -> Option<Instant> {
        [self.retransmissions.front(), self.video.front()]
            .into_iter()
            .flatten()
            .map(|q| q.since)
            .min()
    }

    /// The bucket's rate: the target, or fast enough that the queue is gone when its oldest
    /// packet has waited [`MAX_QUEUE_TIME`] (libwebrtc drains by the same deadline).
    fn apply_rate(&mut self, now: Instant) {
        let waited = self
            .oldest()
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let left = MAX_QUEUE_TIME
            .saturating_sub(waited)
            .max(Duration::from_millis(10));
        let drain = self.queued_bits / left.as_secs_f64();
        let rate = self.target_bps.max(drain);
        if (rate - self.bucket.target_bitrate()).abs() > f64::EPSILON {
            self.bucket.set_target_bitrate(rate);
        }
    }

    fn publish_wait(&self, now: Instant) {
        if let Some(out) = &self.out {
            let oldest = self.oldest();
            out.set_pacer_wait(oldest.map_or(Duration::ZERO, |t| now.saturating_duration_since(t)));
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for PriorityPacer {
    interceptor_types!();

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Some(Attribute::TargetBitrateChanged { bits_per_second }) =
            msg.message.get(&Attribute::TargetBitrateChanged {
                bits_per_second: 0.0,
            })
        {
            self.target_bps = bits_per_second.max(0.0);
            self.apply_rate(msg.now);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if matches!(msg.message.packet, Packet::Rtcp(_)) {
            self.write_queue.push_back(msg);
            return Ok(());
        }
        self.bucket.refill(msg.now);
        let bits = Self::bits_of(&msg);
        let class = self.class_of(&msg);
        if class == Class::Audio {
            // Not held, but paid for: the video after it waits for the budget it took.
            self.bucket.consume(bits);
            self.released.push_back(msg);
            return Ok(());
        }
        if self.retransmissions.len() + self.video.len() >= QUEUE_LIMIT {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                warn!(
                    dropped = self.dropped,
                    "pacer queue full ({QUEUE_LIMIT} packets): packets dropped"
                );
            }
            return Ok(());
        }
        let now = msg.now;
        let queued = Queued {
            bits,
            since: now,
            packet: msg,
        };
        self.queued_bits += bits;
        match class {
            Class::Retransmission => self.retransmissions.push_back(queued),
            _ => self.video.push_back(queued),
        }
        self.maybe_probe(now);
        self.apply_rate(now);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write_queue
            .pop_front()
            .or_else(|| self.released.pop_front())
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.bucket.refill(now);
        self.maybe_probe(now);
        self.send_probe(now);
        while self.probe.is_none()
            && let Some(head) = self.head()
        {
            if !self.bucket.can_release(head.bits) {
                break;
            }
            let Some(mut q) = self.pop_head() else {
                break;
            };
            self.bucket.consume(q.bits);
            q.packet.now = now;
            self.released.push_back(q.packet);
        }
        self.apply_rate(now);
        self.publish_wait(now);
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        if let Some(p) = &self.probe {
            return Some(p.next_at);
        }
        let head = self.head()?;
        // A microsecond late: the bucket's float budget, refilled at exactly the computed
        // instant, can fall a hair short of the packet and the timer would fire again at once.
        self.bucket
            .releasable_at(head.bits)
            .map(|t| t + Duration::from_micros(1))
    }
}

impl Interceptor for PriorityPacer {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        let class = if info.mime_type.to_ascii_lowercase().starts_with("audio/") {
            Class::Audio
        } else {
            Class::Video
        };
        self.classes.insert(info.ssrc, class);
        if let Some(rtx) = info.ssrc_rtx {
            self.classes.insert(rtx, Class::Retransmission);
        }
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.classes.remove(&info.ssrc);
        if let Some(rtx) = info.ssrc_rtx {
            self.classes.remove(&rtx);
        }
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::shared::TransportContext;

    const AUDIO: u32 = 1;
    const VIDEO: u32 = 2;
    const RTX: u32 = 3;

    fn pacer() -> PriorityPacer {
        let mut p = PriorityPacer::new(None, None);
        p.bind_local_stream(&StreamInfo {
            ssrc: AUDIO,
            mime_type: "audio/opus".into(),
            ..Default::default()
        });
        p.bind_local_stream(&StreamInfo {
            ssrc: VIDEO,
            ssrc_rtx: Some(RTX),
            mime_type: "video/H264".into(),
            ..Default::default()
        });
        p
    }

    fn rtp(ssrc: u32, seq: u16, payload: usize, now: Instant) -> TaggedPacket {
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                ssrc,
                sequence_number: seq,
                ..Default::default()
            },
            payload: vec![0u8; payload].into(),
        };
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(packet)),
        }
    }

    fn rate(p: &mut PriorityPacer, bps: f64, now: Instant) {
        let mut msg = TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(Vec::new())),
        };
        msg.message.add(Attribute::TargetBitrateChanged {
            bits_per_second: bps,
        });
        p.handle_read(msg).unwrap();
        while p.poll_read().is_some() {}
    }

    /// Runs the pacer's timers until `until`; returns (ssrc, seq, release time) in wire order.
    fn drain(p: &mut PriorityPacer, until: Instant) -> Vec<(u32, u16, Instant)> {
        let mut out = Vec::new();
        let collect = |p: &mut PriorityPacer, out: &mut Vec<(u32, u16, Instant)>| {
            while let Some(m) = p.poll_write() {
                if let Packet::Rtp(r) = &m.message.packet {
                    out.push((r.header.ssrc, r.header.sequence_number, m.now));
                }
            }
        };
        collect(p, &mut out);
        for _ in 0..100_000 {
            let Some(at) = p.poll_timeout() else { break };
            if at > until {
                break;
            }
            p.handle_timeout(at).unwrap();
            collect(p, &mut out);
        }
        out
    }

    #[test]
    fn audio_does_not_wait_behind_queued_video() {
        let t0 = Instant::now();
        let mut p = pacer();
        rate(&mut p, 500_000.0, t0);
        // A 40-packet keyframe (~48 KB: ~0.8 s at 500 kbit/s), then an audio packet.
        for seq in 0..40 {
            p.handle_write(rtp(VIDEO, seq, 1200, t0)).unwrap();
        }
        p.handle_write(rtp(AUDIO, 7, 160, t0)).unwrap();
        let out = drain(&mut p, t0 + Duration::from_secs(2));
        let audio = out.iter().find(|(s, _, _)| *s == AUDIO).unwrap();
        assert_eq!(audio.2, t0, "audio left at once");
        let last_video = out.iter().rfind(|(s, _, _)| *s == VIDEO).unwrap();
        assert!(
            last_video.2 > t0 + Duration::from_millis(500),
            "video still paced"
        );
        assert_eq!(out.iter().filter(|(s, _, _)| *s == VIDEO).count(), 40);
    }

    #[test]
    fn retransmissions_go_before_queued_video_and_video_keeps_its_order() {
        let t0 = Instant::now();
        let mut p = pacer();
        rate(&mut p, 500_000.0, t0);
        for seq in 0..20 {
            p.handle_write(rtp(VIDEO, seq, 1200, t0)).unwrap();
        }
        let t1 = t0 + Duration::from_millis(5);
        p.handle_write(rtp(RTX, 100, 1200, t1)).unwrap();
        let out = drain(&mut p, t0 + Duration::from_secs(2));
        let order: Vec<u32> = out.iter().map(|(s, _, _)| *s).collect();
        let rtx_at = order.iter().position(|s| *s == RTX).unwrap();
        assert!(
            rtx_at < 5,
            "the repair went out ahead of the queue: {order:?}"
        );
        let video: Vec<u16> = out
            .iter()
            .filter(|(s, _, _)| *s == VIDEO)
            .map(|(_, q, _)| *q)
            .collect();
        assert_eq!(video, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn audio_is_paid_for_so_video_still_keeps_the_rate() {
        let t0 = Instant::now();
        let mut p = pacer();
        rate(&mut p, 400_000.0, t0);
        // One second of 320 kbit/s video and 80 kbit/s audio: exactly the rate.
        for i in 0..50u16 {
            let at = t0 + Duration::from_millis(u64::from(i) * 20);
            p.handle_write(rtp(AUDIO, i, 188, at)).unwrap();
            for k in 0..2u16 {
                p.handle_write(rtp(VIDEO, i * 2 + k, 388, at)).unwrap();
            }
            p.handle_timeout(at).unwrap();
        }
        // Twice the media again at once: the video must not go out faster than the rate allows.
        let t1 = t0 + Duration::from_secs(1);
        for i in 0..100u16 {
            p.handle_write(rtp(AUDIO, 50 + i, 188, t1)).unwrap();
        }
        for i in 0..100u16 {
            p.handle_write(rtp(VIDEO, 100 + i, 388, t1)).unwrap();
        }
        let out = drain(&mut p, t1 + Duration::from_secs(3));
        let last = out
            .iter()
            .filter(|(s, _, _)| *s == VIDEO)
            .map(|(_, _, t)| *t)
            .max()
            .unwrap();
        // 100 × 200 B audio paid at once + 100 × 400 B video = 480 kbit at 400 kbit/s ≥ 1 s.
        assert!(
            last >= t1 + Duration::from_millis(900),
            "video kept under the rate after an audio burst: last at {:?}",
            last - t1
        );
    }

    #[test]
    fn a_queue_longer_than_two_seconds_drains_faster() {
        let t0 = Instant::now();
        let mut p = pacer();
        rate(&mut p, 100_000.0, t0);
        // 500 × 1 200 B = 4.8 Mbit: 48 s at 100 kbit/s.
        for seq in 0..500 {
            p.handle_write(rtp(VIDEO, seq, 1188, t0)).unwrap();
        }
        let out = drain(&mut p, t0 + Duration::from_secs(10));
        assert_eq!(out.len(), 500, "everything left within 10 s");
        let last = out.last().unwrap().2;
        assert!(
            last <= t0 + MAX_QUEUE_TIME + Duration::from_millis(100),
            "drained in about {MAX_QUEUE_TIME:?}: {:?}",
            last - t0
        );
    }

    #[test]
    fn a_keyframe_opens_with_a_probe_cluster_at_three_times_the_estimate() {
        let t0 = Instant::now();
        let probes = Arc::new(ProbeLog::default());
        probes.set_ready(t0);
        let mut p = PriorityPacer::new(None, Some(probes.clone()));
        p.bind_local_stream(&StreamInfo {
            ssrc: VIDEO,
            mime_type: "video/H264".into(),
            ..Default::default()
        });
        // Estimate 300 kbit/s: released at 450, probed at 900.
        rate(&mut p, 300_000.0 * PACING_FACTOR, t0);
        // Written one packet at a time, the driver running the pacer's due timers in between
        // (so the queue is empty between two of them).
        let mut out = Vec::new();
        for seq in 0..30u16 {
            let at = t0 + Duration::from_micros(u64::from(seq) * 50);
            p.handle_write(rtp(VIDEO, seq, 1188, at)).unwrap();
            out.extend(drain(&mut p, at));
        }
        out.extend(drain(&mut p, t0 + Duration::from_secs(2)));
        assert_eq!(out.len(), 30);
        let gaps: Vec<Duration> = out.windows(2).map(|w| w[1].2 - w[0].2).collect();
        // 1 200 B at 900 kbit/s: 10.7 ms apart, evenly, for the cluster's 20 packets (the
        // first leaves as it is written).
        for g in &gaps[1..19] {
            assert!(
                (g.as_secs_f64() * 1000.0 - 10.7).abs() < 0.5,
                "probe spacing: {gaps:?}"
            );
        }
        // Paid from the budget: the rest waits until the average is back at 450 kbit/s.
        let last = out[29].2 - t0;
        assert!(
            last >= Duration::from_millis(500),
            "30 packets at 450 kbit/s take ≥ 0.5 s after the burst: {last:?}"
        );
        // The cluster waits for its feedback: no second one meanwhile.
        assert_eq!(
            probes.plan(out[29].2, 30, false, Duration::ZERO, 300_000.0),
            None
        );
    }

    #[test]
    fn an_unbound_stream_is_paced_like_video() {
        let t0 = Instant::now();
        let mut p = pacer();
        rate(&mut p, 200_000.0, t0);
        for seq in 0..10 {
            p.handle_write(rtp(99, seq, 1200, t0)).unwrap();
        }
        let out = drain(&mut p, t0 + Duration::from_secs(2));
        assert_eq!(out.len(), 10);
        assert!(out.last().unwrap().2 > t0 + Duration::from_millis(200));
    }
}
