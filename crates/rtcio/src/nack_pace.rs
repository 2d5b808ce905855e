//! NACKs paced by the round trip on the receiving side, and how long a gap is worth waiting for.
//!
//! webrtc-rs's NACK generator asks for every missing packet at a fixed interval (ours 20 ms)
//! a fixed number of times. Our sender, like Chromium's, answers at most once per round trip
//! ([`crate::nack_limit`]), so on a 150 ms round trip six asks 20 ms apart bought one copy and
//! nothing more: when that copy was lost too (3 % loss: one lost packet in 33), the gap was
//! given up, the receiver asked for a keyframe, and the keyframe's round trip and size (a
//! 20 KB IDR is 320 ms of a 500 kbit/s link) froze the picture for 1–2 s. libwebrtc asks at
//! once and then again once per round trip, up to 10 times.
//!
//! [`NackPacer`] is that policy (plain, time passed in): the first NACK of a packet goes out
//! at once, a repeat only when a repair round trip has passed without the packet arriving, and
//! none once the packet is older than the assembler would wait for it. The repair round trip is
//! measured here, so a receive-only peer (no media of its own, so no RTT from RTCP reports) has
//! it too: the time from a packet's first NACK to its arrival, over the recent repairs (the
//! median sets the gap wait, the lower quartile when to ask again: a repair that took several
//! rounds counts them all, and a merely reordered packet is an outlier; repairs come on the RTX
//! stream, which webrtc-rs unwraps only after the interceptors, so the original sequence number
//! is read here). The generator publishes it (a [`SharedRtt`] per peer connection) to the track
//! readers, whose assemblers wait [`gap_wait`] for a missing packet: two repair rounds, so one
//! lost copy is repaired instead of costing a keyframe.
//! [`PacedNackGenerator`] puts the policy in front of the stock generator.

use crate::interceptor_util::{forward_to_inner, interceptor_types};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Interceptor, NackGeneratorBuilder, NackGeneratorInterceptor, Packet, StreamInfo, TaggedPacket,
};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use rtc::sansio::Protocol;

use crate::nack_limit::{SharedRtt, nack_pair_seqs};
use crate::proto::rtp_assembler::VIDEO_GAP_WAIT;

/// Repeats before any repair was measured: often enough that a burst at the start of a call
/// gets six asks in the 250 ms a gap is waited for (at 120 ms it got two, and 30 % loss took
/// both a quarter of the time). On a long path the sender answers once per round trip anyway;
/// the extra NACKs are a few bytes each, and the first repair sets the real pace.
const UNMEASURED_RESEND: Duration = Duration::from_millis(40);
/// Never repeat a NACK sooner than this (a loopback round trip is ~1 ms).
const MIN_RESEND: Duration = Duration::from_millis(20);
/// A repeat waits the repair round trip times this (jitter on the way back).
const RESEND_FACTOR: f64 = 1.2;
/// The longest a gap is waited for, however long the round trip: past it a keyframe is the
/// faster repair, and the playout would drop the frames anyway.
const MAX_GAP_WAIT: Duration = Duration::from_millis(800);
/// Repair samples kept for the median.
const SAMPLES: usize = 15;
/// Samples needed before the median is used.
const MIN_SAMPLES: usize = 3;
/// NACKed packets remembered (the oldest forgotten first).
const REMEMBERED: usize = 2048;
/// NACKs per packet at most (libwebrtc's retry limit): only a short round trip, whose gap
/// wait is the 250 ms floor, gets near it.
const MAX_ASKS: u8 = 10;

/// How long a video gap is worth waiting for when a repair takes `repair`: the NACK, the copy,
/// and one more round for a lost copy, plus margin; at least [`VIDEO_GAP_WAIT`] (what short
/// round trips always had), at most [`MAX_GAP_WAIT`].
pub(crate) fn gap_wait(repair: Option<Duration>) -> Duration {
    match repair {
        None => VIDEO_GAP_WAIT,
        Some(r) => (r.mul_f64(2.0 * RESEND_FACTOR) + Duration::from_millis(50))
            .clamp(VIDEO_GAP_WAIT, MAX_GAP_WAIT),
    }
}

/// A NACKed packet: when it was first and last asked for, and whether it has arrived since.
#[derive(Debug, Clone, Copy)]
struct Asked {
    first: Instant,
    last: Instant,
    asks: u8,
    arrived: bool,
}

/// When each NACKed packet was first and last asked for.
#[derive(Debug, Default)]
pub(crate) struct NackPacer {
    asked: HashMap<(u32, u16), Asked>,
    order: VecDeque<(u32, u16)>,
    samples: VecDeque<Duration>,
    median: Option<Duration>,
    /// The lower quartile of the same samples: when to ask again.
    quick: Option<Duration>,
}

impl NackPacer {
    /// The repair round trip: the median of recent samples, once there are enough.
    #[cfg(test)]
    fn repair(&self) -> Option<Duration> {
        self.median
    }

    /// A repair sample runs from a packet's first NACK, so one that needed two rounds (its
    /// NACK or copy lost) counts twice the round trip. In a burst of 30 % loss half the
    /// repairs take several rounds: paced by the median, the asks spread out as the burst
    /// went on (resend 25 → 100 ms on a 1 ms path), only two or three fit in the gap wait, and
    /// gaps were given up. The lower quartile is the round trip of the repairs that worked
    /// at once.
    fn resend_after(&self) -> Duration {
        self.quick
            .map_or(UNMEASURED_RESEND, |q| q.mul_f64(RESEND_FACTOR))
            .max(MIN_RESEND)
    }

    /// Whether packet `seq` of `ssrc` may be NACKed at `now`; when it may, it counts as asked.
    pub(crate) fn allow(&mut self, ssrc: u32, seq: u16, now: Instant) -> bool {
        let resend = self.resend_after();
        let give_up = gap_wait(self.median);
        if let Some(a) = self.asked.get_mut(&(ssrc, seq)) {
            // The stock generator never sees repairs (they arrive on the RTX stream and are
            // unwrapped after the interceptors), so it keeps listing repaired packets.
            if a.arrived
                || a.asks >= MAX_ASKS
                || now.saturating_duration_since(a.first) > give_up
                || now.saturating_duration_since(a.last) < resend
            {
                return false;
            }
            a.last = now;
            a.asks += 1;
            return true;
        }
        if self.order.len() >= REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.asked.remove(&old);
        }
        self.asked.insert(
            (ssrc, seq),
            Asked {
                first: now,
                last: now,
                asks: 1,
                arrived: false,
            },
        );
        self.order.push_back((ssrc, seq));
        true
    }

    /// Packet `seq` of media stream `ssrc` arrived (an original or a repair): if it had been
    /// NACKed, it is not asked for again and the time since its first NACK is a repair sample.
    /// Returns the new median when it changed.
    pub(crate) fn on_packet(&mut self, ssrc: u32, seq: u16, now: Instant) -> Option<Duration> {
        let a = self.asked.get_mut(&(ssrc, seq)).filter(|a| !a.arrived)?;
        a.arrived = true;
        let first = a.first;
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(now.saturating_duration_since(first));
        let mut sorted: Vec<Duration> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        // The repeats follow the first repair at once, not after three: the first loss of a
        // call is often a burst, and it is over before three repairs are in (network bench,
        // Chromium → Rust, a 1 s burst of 30 % loss 5 s into a call on a 1 ms path: gaps
        // given up and a 0.9–1 s freeze in the first burst, none in later ones). A merely
        // late packet makes this too short: that only costs NACKs.
        self.quick = Some(sorted[sorted.len() / 4]);
        if self.samples.len() < MIN_SAMPLES {
            return None;
        }
        let median = sorted[sorted.len() / 2];
        (self.median != Some(median)).then(|| {
            self.median = Some(median);
            median
        })
    }
}

/// webrtc-rs's NACK generator behind a [`NackPacer`] (see the module docs).
pub(crate) struct PacedNackGenerator {
    inner: NackGeneratorInterceptor,
    pacer: NackPacer,
    repair: Arc<SharedRtt>,
    /// RTX SSRC → the media SSRC it repairs (RFC 4588, from the remote streams' bindings).
    rtx: HashMap<u32, u32>,
}

impl PacedNackGenerator {
    /// The stock generator asking every `interval`, its NACKs paced by the measured repair
    /// round trip, which is published to `repair`. The stock generator's own count only
    /// bounds how long it keeps a packet on its list; the pacer decides what goes out.
    pub(crate) fn new(interval: Duration, repair: Arc<SharedRtt>) -> Self {
        let asks = (MAX_GAP_WAIT.as_millis() / interval.as_millis().max(1)).max(1) + 1;
        PacedNackGenerator {
            inner: NackGeneratorBuilder::new()
                .with_interval(interval)
                .with_max_nacks_per_packet(u16::try_from(asks).unwrap_or(u16::MAX))
                .build(),
            pacer: NackPacer::default(),
            repair,
            rtx: HashMap::new(),
        }
    }

    /// `nack` with only the packets the pacer lets through (`None`: none left).
    fn pace(&mut self, nack: &TransportLayerNack, now: Instant) -> Option<TransportLayerNack> {
        // webrtc-rs binds a remote RTX stream as a stream of its own, with the media's NACK
        // feedback, so the stock generator asked for every lost *retransmission* by its RTX
        // number, ten times, which no sender answers (network bench, Chromium → Rust, 30 %
        // loss: 27–40 % of the packets NACKed were RTX packets). The original is asked again.
        if self.rtx.contains_key(&nack.media_ssrc) {
            return None;
        }
        let mut seqs = Vec::new();
        for pair in &nack.nacks {
            for seq in nack_pair_seqs(pair) {
                if self.pacer.allow(nack.media_ssrc, seq, now) {
                    seqs.push(seq);
                }
            }
        }
        (!seqs.is_empty()).then(|| TransportLayerNack {
            sender_ssrc: nack.sender_ssrc,
            media_ssrc: nack.media_ssrc,
            nacks: nack_pairs_from_sequence_numbers(&seqs),
        })
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for PacedNackGenerator {
    interceptor_types!();

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        // A repair on the RTX stream carries the original sequence number (OSN) first.
        let media = match &msg.message.packet {
            Packet::Rtp(p) => match self.rtx.get(&p.header.ssrc) {
                Some(&media) => p
                    .payload
                    .get(..2)
                    .map(|osn| (media, u16::from_be_bytes([osn[0], osn[1]]))),
                None => Some((p.header.ssrc, p.header.sequence_number)),
            },
            _ => None,
        };
        if let Some((ssrc, seq)) = media
            && let Some(m) = self.pacer.on_packet(ssrc, seq, msg.now)
        {
            tracing::debug!(repair_ms = m.as_millis() as u64, "nack repair round trip");
            self.repair.set(m);
        }
        self.inner.handle_read(msg)
    }

    forward_to_inner!(poll_read, handle_write, handle_timeout, poll_timeout);

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        loop {
            let mut msg = self.inner.poll_write()?;
            let now = msg.now;
            let Packet::Rtcp(packets) = &mut msg.message.packet else {
                return Some(msg);
            };
            let mut kept: Vec<Box<dyn rtc::rtcp::Packet>> = Vec::with_capacity(packets.len());
            for p in packets.drain(..) {
                match p.as_any().downcast_ref::<TransportLayerNack>() {
                    Some(nack) => {
                        if let Some(paced) = self.pace(nack, now) {
                            kept.push(Box::new(paced));
                        }
                    }
                    None => kept.push(p),
                }
            }
            if !kept.is_empty() {
                *packets = kept;
                return Some(msg);
            }
            // Every NACK in it was held back: nothing to send, look at the next one.
        }
    }
}

impl Interceptor for PacedNackGenerator {
    forward_to_inner!(bind_local_stream, unbind_local_stream);

    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        if let Some(rtx) = info.ssrc_rtx {
            self.rtx.insert(rtx, info.ssrc);
        }
        self.inner.bind_remote_stream(info);
    }

    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        if let Some(rtx) = info.ssrc_rtx {
            self.rtx.remove(&rtx);
        }
        self.inner.unbind_remote_stream(info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::shared::TransportContext;

    const SSRC: u32 = 0x4321;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// Feeds repairs of `rtt` ms so the pacer has a median.
    fn learn(p: &mut NackPacer, t0: Instant, rtt: u64) {
        for seq in 1000..1005u16 {
            assert!(p.allow(SSRC, seq, t0));
            p.on_packet(SSRC, seq, ms(t0, rtt));
        }
        assert_eq!(p.repair(), Some(Duration::from_millis(rtt)));
    }

    #[test]
    fn a_repeat_waits_a_repair_round_trip() {
        let t0 = Instant::now();
        let mut p = NackPacer::default();
        learn(&mut p, t0, 150);
        assert!(p.allow(SSRC, 7, t0), "the first NACK goes out at once");
        // The generator asks every 20 ms: held back until 1.2 round trips have passed.
        for t in (20..180).step_by(20) {
            assert!(!p.allow(SSRC, 7, ms(t0, t)), "{t} ms");
        }
        assert!(
            p.allow(SSRC, 7, ms(t0, 180)),
            "the copy was lost: ask again"
        );
        assert!(!p.allow(SSRC, 7, ms(t0, 200)));
        assert!(p.allow(SSRC, 7, ms(t0, 360)));
        // Past the gap wait (2.4 round trips + 50 ms = 410 ms) the assembler has given up.
        assert!(!p.allow(SSRC, 7, ms(t0, 560)));
        // Other packets and streams are their own.
        assert!(p.allow(SSRC, 8, ms(t0, 20)));
        assert!(p.allow(SSRC + 1, 7, ms(t0, 20)));
    }

    #[test]
    fn the_first_repair_paces_the_repeats() {
        // A call's first loss: nothing measured yet, the first NACK goes at once and a repeat
        // 40 ms later (not 120: six asks in the 250 ms gap wait of a burst, not two); once one
        // repair came back in 10 ms, the repeats come every 20 ms.
        let t0 = Instant::now();
        let mut p = NackPacer::default();
        assert!(p.allow(SSRC, 1, t0));
        assert!(p.allow(SSRC, 2, t0));
        assert!(!p.allow(SSRC, 2, ms(t0, 30)), "no repair measured yet");
        assert!(p.allow(SSRC, 2, ms(t0, 40)), "the unmeasured pace");
        p.on_packet(SSRC, 1, ms(t0, 10));
        assert_eq!(p.repair(), None, "one sample is no median");
        assert!(!p.allow(SSRC, 2, ms(t0, 50)));
        assert!(p.allow(SSRC, 2, ms(t0, 60)), "paced by the first repair");
    }

    #[test]
    fn the_repair_time_is_the_median_of_recent_repairs() {
        let t0 = Instant::now();
        let mut p = NackPacer::default();
        assert_eq!(p.repair(), None);
        // Two repairs are not enough to judge.
        for (seq, rtt) in [(1u16, 150u64), (2, 160)] {
            p.allow(SSRC, seq, t0);
            assert_eq!(p.on_packet(SSRC, seq, ms(t0, rtt)), None);
        }
        // A reordered packet (5 ms) and a lost copy (310 ms) do not move the median far.
        for (seq, rtt) in [(3u16, 5u64), (4, 310), (5, 155)] {
            p.allow(SSRC, seq, t0);
            p.on_packet(SSRC, seq, ms(t0, rtt));
        }
        assert_eq!(p.repair(), Some(Duration::from_millis(155)));
        // A packet that was never NACKed is no sample.
        assert_eq!(p.on_packet(SSRC, 99, ms(t0, 1)), None);
        assert_eq!(p.repair(), Some(Duration::from_millis(155)));
    }

    #[test]
    fn repairs_that_took_several_rounds_do_not_spread_the_asks() {
        let t0 = Instant::now();
        let mut p = NackPacer::default();
        // A 1 ms path in a burst of loss: repairs take one to five 20 ms rounds.
        for (i, rtt) in [21u64, 21, 42, 1, 63, 21, 84, 42, 21, 63, 21, 84, 42, 63, 1]
            .into_iter()
            .enumerate()
        {
            let seq = i as u16;
            p.allow(SSRC, seq, t0);
            p.on_packet(SSRC, seq, ms(t0, rtt));
        }
        assert_eq!(p.repair(), Some(Duration::from_millis(42)));
        // Asked again every 25 ms (1.2 × the lower quartile, 21 ms), not every 50 ms.
        assert!(p.allow(SSRC, 100, ms(t0, 1_000)));
        assert!(!p.allow(SSRC, 100, ms(t0, 1_020)));
        assert!(p.allow(SSRC, 100, ms(t0, 1_026)));
    }

    #[test]
    fn short_round_trips_keep_the_old_bounds() {
        let t0 = Instant::now();
        let mut p = NackPacer::default();
        learn(&mut p, t0, 2);
        assert_eq!(gap_wait(p.repair()), VIDEO_GAP_WAIT);
        assert!(p.allow(SSRC, 1, t0));
        assert!(!p.allow(SSRC, 1, ms(t0, 10)), "at least 20 ms apart");
        assert!(p.allow(SSRC, 1, ms(t0, 20)));
        // Every 20 ms within the 250 ms wait, but at most MAX_ASKS times in all.
        let asks = 2
            + (2..13u64)
                .filter(|i| p.allow(SSRC, 1, ms(t0, i * 20)))
                .count();
        assert_eq!(asks, usize::from(MAX_ASKS));
        assert_eq!(gap_wait(None), VIDEO_GAP_WAIT);
        assert_eq!(
            gap_wait(Some(Duration::from_millis(150))),
            Duration::from_millis(410)
        );
        assert_eq!(gap_wait(Some(Duration::from_secs(2))), MAX_GAP_WAIT);
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut p = NackPacer::default();
        for seq in 0..=u16::MAX {
            p.allow(SSRC, seq, t0);
        }
        assert_eq!(p.asked.len(), REMEMBERED);
        assert_eq!(p.order.len(), REMEMBERED);
    }

    const RTX_SSRC: u32 = 0x9999;

    fn rtp(ssrc: u32, seq: u16, payload: Vec<u8>, now: Instant) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    ssrc,
                    payload_type: 96,
                    sequence_number: seq,
                    ..Default::default()
                },
                payload: payload.into(),
            })),
        }
    }

    /// A media packet.
    fn media(seq: u16, now: Instant) -> TaggedPacket {
        rtp(SSRC, seq, vec![0u8; 100], now)
    }

    /// The repair of `osn` on the RTX stream (its own numbering, the original's first).
    fn repair(rtx_seq: u16, osn: u16, now: Instant) -> TaggedPacket {
        let mut payload = osn.to_be_bytes().to_vec();
        payload.extend([0u8; 100]);
        rtp(RTX_SSRC, rtx_seq, payload, now)
    }

    /// Sequence numbers NACKed by what the generator writes after a timeout at `now`.
    fn nacked(g: &mut PacedNackGenerator, now: Instant) -> Vec<u16> {
        g.handle_timeout(now).expect("timeout");
        let mut out = Vec::new();
        while let Some(p) = g.poll_write() {
            if let Packet::Rtcp(ps) = p.message.packet {
                for p in ps {
                    if let Some(n) = p.as_any().downcast_ref::<TransportLayerNack>() {
                        for pair in &n.nacks {
                            out.extend(nack_pair_seqs(pair));
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_generator_repeats_a_nack_once_per_repair_round_trip() {
        let repair_time = Arc::new(SharedRtt::default());
        let mut g = PacedNackGenerator::new(Duration::from_millis(20), repair_time.clone());
        g.bind_remote_stream(&StreamInfo {
            ssrc: SSRC,
            ssrc_rtx: Some(RTX_SSRC),
            payload_type: 96,
            mime_type: "video/H264".into(),
            clock_rate: 90_000,
            rtcp_feedback: vec![rtc::interceptor::RTCPFeedback {
                typ: "nack".into(),
                parameter: String::new(),
            }],
            ..Default::default()
        });
        let t0 = Instant::now();
        // Packets 0..=20 arrive except 5, 6, 7 and 8.
        for seq in (0..=20u16).filter(|s| !(5..=8).contains(s)) {
            g.handle_read(media(seq, t0)).expect("read");
            while g.poll_read().is_some() {}
        }
        assert_eq!(nacked(&mut g, ms(t0, 20)), vec![5, 6, 7, 8]);
        // Repairs of 5, 6 and 7 come back on the RTX stream 150 ms after their NACK: the round
        // trip is learnt.
        for (i, seq) in (5..=7u16).enumerate() {
            g.handle_read(repair(i as u16, seq, ms(t0, 170)))
                .expect("read");
            while g.poll_read().is_some() {}
        }
        assert_eq!(repair_time.get(), Some(Duration::from_millis(150)));
        // The stock generator never sees RTX repairs and keeps listing 5, 6 and 7: they are
        // not asked for again. 8's copy was lost: the 20 ms ticks before 1.2 round trips ask
        // for nothing...
        let mut asked = Vec::new();
        for t in (40..=220).step_by(20) {
            asked.extend(nacked(&mut g, ms(t0, t)).into_iter().map(|s| (t, s)));
        }
        // ...and the one after asks again, once.
        assert_eq!(asked, vec![(200, 8)]);
    }

    #[test]
    fn lost_retransmissions_are_not_nacked_by_their_rtx_number() {
        let mut g = PacedNackGenerator::new(Duration::from_millis(20), Arc::default());
        let nack = vec![rtc::interceptor::RTCPFeedback {
            typ: "nack".into(),
            parameter: String::new(),
        }];
        let stream = |ssrc, ssrc_rtx| StreamInfo {
            ssrc,
            ssrc_rtx,
            payload_type: 96,
            mime_type: "video/H264".into(),
            clock_rate: 90_000,
            rtcp_feedback: nack.clone(),
            ..Default::default()
        };
        // As webrtc-rs binds them: the media stream with its RTX SSRC, then the RTX stream
        // itself, with the same feedback.
        g.bind_remote_stream(&stream(SSRC, Some(RTX_SSRC)));
        g.bind_remote_stream(&stream(RTX_SSRC, None));
        let t0 = Instant::now();
        // Repairs 0..=9 on the RTX stream, its own numbers 3 and 4 lost on the way.
        for rtx_seq in (0..10u16).filter(|s| !(3..=4).contains(s)) {
            g.handle_read(repair(rtx_seq, 100 + rtx_seq, t0))
                .expect("read");
            while g.poll_read().is_some() {}
        }
        assert_eq!(nacked(&mut g, ms(t0, 20)), Vec::<u16>::new());
        // The media stream's own gaps still are.
        for seq in [0u16, 1, 3] {
            g.handle_read(media(seq, t0)).expect("read");
            while g.poll_read().is_some() {}
        }
        assert_eq!(nacked(&mut g, ms(t0, 40)), vec![2]);
    }
}
