//! At most one retransmission of a packet per round trip. webrtc-rs's NACK responder answers
//! every NACK with a copy of the packet, and a receiver NACKs each missing packet every
//! interval (ours every 20 ms, up to 6 times) until it arrives: on a 150 ms round trip every
//! lost packet was sent up to 6 times more before the first copy could have arrived, and those
//! copies took a 500 kbit/s link's room from the video (the sender's estimate stayed at half the
//! link, 9 fps at 270p, 12 s of freezes in 30 s). Chromium's sender has the same rule: a packet
//! retransmitted less than an RTT ago is not sent again.
//!
//! [`RetransmitLimiter`] is the policy (plain, time passed in); [`LimitedNackResponder`] wraps the
//! stock responder and takes the sequence numbers the policy refuses out of each NACK before the
//! responder sees it, so the RTX stream's own numbering stays gap-free.

use crate::interceptor_util::{forward_to_inner, interceptor_types};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Interceptor, NackResponderBuilder, NackResponderInterceptor, Packet, TaggedPacket,
};
use rtc::rtcp::transport_feedbacks::transport_layer_nack::{NackPair, TransportLayerNack};
use rtc::sansio::Protocol;

/// The round trip assumed before one is measured (and without congestion control, which
/// measures it).
pub(crate) const DEFAULT_RTT: Duration = Duration::from_millis(100);
/// Never wait less than this between two copies of one packet (a measured RTT on loopback is
/// ~1 ms; the receiver's NACK interval is 20 ms).
const MIN_GAP: Duration = Duration::from_millis(20);
/// Packets remembered (older ones are forgotten first): a second of 720p video at a few Mbit/s.
const REMEMBERED: usize = 2048;

/// A round trip shared between where it is measured and where it is used (the estimator and
/// the responder; the NACK generator's repair time and the track readers), in microseconds
/// (0: not measured yet).
#[derive(Debug, Default)]
pub(crate) struct SharedRtt(AtomicU32);

impl SharedRtt {
    /// The latest measurement, if any.
    pub(crate) fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(u64::from(us))),
        }
    }

    /// Stores a measurement (at least 1 µs, at most ~71 min).
    pub(crate) fn set(&self, rtt: Duration) {
        let us = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX).max(1);
        self.0.store(us, Ordering::Relaxed);
    }
}

/// The sequence numbers one NACK pair names: its packet id and the bitmask of the 16 after it.
pub(crate) fn nack_pair_seqs(pair: &NackPair) -> impl Iterator<Item = u16> + '_ {
    std::iter::once(pair.packet_id).chain(
        (0..16u16)
            .filter(|i| pair.lost_packets & (1 << i) != 0)
            .map(|i| pair.packet_id.wrapping_add(i + 1)),
    )
}

/// When each (media SSRC, sequence number) was last retransmitted.
#[derive(Debug, Default)]
pub(crate) struct RetransmitLimiter {
    last: HashMap<(u32, u16), Instant>,
    order: VecDeque<(u32, u16)>,
}

impl RetransmitLimiter {
    /// Whether packet `seq` of `ssrc` may be sent again at `now`, given the round trip `rtt`;
    /// when it may, it counts as sent.
    pub(crate) fn allow(&mut self, ssrc: u32, seq: u16, now: Instant, rtt: Duration) -> bool {
        let gap = rtt.max(MIN_GAP);
        if let Some(at) = self.last.get_mut(&(ssrc, seq)) {
            if now.saturating_duration_since(*at) < gap {
                return false;
            }
            *at = now;
            return true;
        }
        if self.order.len() >= REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.last.remove(&old);
        }
        self.last.insert((ssrc, seq), now);
        self.order.push_back((ssrc, seq));
        true
    }
}

/// webrtc-rs's NACK responder behind a [`RetransmitLimiter`] (see the module docs).
pub(crate) struct LimitedNackResponder {
    inner: NackResponderInterceptor,
    limiter: RetransmitLimiter,
    rtt: Arc<SharedRtt>,
}

impl LimitedNackResponder {
    /// The stock responder, its copies limited to one per `rtt` (or [`DEFAULT_RTT`] until
    /// measured).
    pub(crate) fn new(rtt: Arc<SharedRtt>) -> Self {
        LimitedNackResponder {
            inner: NackResponderBuilder::new().build(),
            limiter: RetransmitLimiter::default(),
            rtt,
        }
    }

    /// `nack` without the packets sent again less than a round trip ago (`None`: none left).
    fn limit(&mut self, nack: &TransportLayerNack, now: Instant) -> Option<TransportLayerNack> {
        let rtt = self.rtt.get().unwrap_or(DEFAULT_RTT);
        let mut nacks = Vec::new();
        for pair in &nack.nacks {
            for seq in nack_pair_seqs(pair) {
                if self.limiter.allow(nack.media_ssrc, seq, now, rtt) {
                    nacks.push(NackPair {
                        packet_id: seq,
                        lost_packets: 0,
                    });
                }
            }
        }
        (!nacks.is_empty()).then_some(TransportLayerNack {
            sender_ssrc: nack.sender_ssrc,
            media_ssrc: nack.media_ssrc,
            nacks,
        })
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for LimitedNackResponder {
    interceptor_types!();

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        let now = msg.now;
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            let mut kept: Vec<Box<dyn rtc::rtcp::Packet>> = Vec::with_capacity(packets.len());
            for p in packets.drain(..) {
                match p.as_any().downcast_ref::<TransportLayerNack>() {
                    Some(nack) => {
                        if let Some(limited) = self.limit(nack, now) {
                            kept.push(Box::new(limited));
                        }
                    }
                    None => kept.push(p),
                }
            }
            *packets = kept;
        }
        self.inner.handle_read(msg)
    }

    forward_to_inner!(
        poll_read,
        handle_write,
        poll_write,
        handle_timeout,
        poll_timeout
    );
}

impl Interceptor for LimitedNackResponder {
    forward_to_inner!(
        bind_local_stream,
        unbind_local_stream,
        bind_remote_stream,
        unbind_remote_stream
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::{AttributedPacket, StreamInfo};
    use rtc::shared::TransportContext;

    const SSRC: u32 = 0x1234;

    #[test]
    fn one_copy_per_round_trip() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(150);
        let mut l = RetransmitLimiter::default();
        assert!(l.allow(SSRC, 7, t0, rtt));
        // The receiver NACKs again every 20 ms: nothing more until a round trip has passed.
        for ms in [20, 40, 60, 80, 100, 120, 140] {
            assert!(
                !l.allow(SSRC, 7, t0 + Duration::from_millis(ms), rtt),
                "{ms}"
            );
        }
        assert!(l.allow(SSRC, 7, t0 + Duration::from_millis(150), rtt));
        // Other packets and streams are their own.
        assert!(l.allow(SSRC, 8, t0, rtt));
        assert!(l.allow(SSRC + 1, 7, t0, rtt));
        // A short round trip still waits the receiver's NACK interval.
        let mut l = RetransmitLimiter::default();
        assert!(l.allow(SSRC, 1, t0, Duration::from_millis(1)));
        assert!(!l.allow(
            SSRC,
            1,
            t0 + Duration::from_millis(10),
            Duration::from_millis(1)
        ));
        assert!(l.allow(
            SSRC,
            1,
            t0 + Duration::from_millis(20),
            Duration::from_millis(1)
        ));
    }

    #[test]
    fn memory_is_bounded() {
        let t0 = Instant::now();
        let mut l = RetransmitLimiter::default();
        for seq in 0..=u16::MAX {
            l.allow(SSRC, seq, t0, DEFAULT_RTT);
        }
        assert_eq!(l.last.len(), REMEMBERED);
        assert_eq!(l.order.len(), REMEMBERED);
    }

    fn rtp(seq: u16) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtc::rtp::Packet {
                header: rtc::rtp::header::Header {
                    version: 2,
                    ssrc: SSRC,
                    payload_type: 96,
                    sequence_number: seq,
                    ..Default::default()
                },
                payload: vec![0u8; 100].into(),
            })),
        }
    }

    fn nack(now: Instant, seqs: &[u16]) -> TaggedPacket {
        let pairs = seqs
            .iter()
            .map(|&s| NackPair {
                packet_id: s,
                lost_packets: 0,
            })
            .collect();
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(vec![Box::new(TransportLayerNack {
                sender_ssrc: 1,
                media_ssrc: SSRC,
                nacks: pairs,
            })])),
        }
    }

    /// Sequence numbers of what the responder writes after `msg` is read.
    fn copies(r: &mut LimitedNackResponder, msg: TaggedPacket) -> Vec<u16> {
        r.handle_read(msg).expect("read");
        while r.poll_read().is_some() {}
        let mut out = Vec::new();
        while let Some(p) = r.poll_write() {
            if let Packet::Rtp(p) = p.message.packet {
                out.push(p.header.sequence_number);
            }
        }
        out
    }

    #[test]
    fn repeated_nacks_within_a_round_trip_get_one_copy() {
        let rtt = Arc::new(SharedRtt::default());
        rtt.set(Duration::from_millis(150));
        let mut r = LimitedNackResponder::new(rtt);
        r.bind_local_stream(&StreamInfo {
            ssrc: SSRC,
            payload_type: 96,
            mime_type: "video/H264".into(),
            clock_rate: 90_000,
            rtcp_feedback: vec![rtc::interceptor::RTCPFeedback {
                typ: "nack".into(),
                parameter: String::new(),
            }],
            ..Default::default()
        });
        for seq in 0..10 {
            r.handle_write(rtp(seq)).expect("write");
        }
        while r.poll_write().is_some() {}
        let t0 = Instant::now();
        assert_eq!(copies(&mut r, nack(t0, &[3, 5])), vec![3, 5]);
        // The same NACK 20 ms later (the receiver asks every interval): no copies.
        let t1 = t0 + Duration::from_millis(20);
        assert_eq!(copies(&mut r, nack(t1, &[3, 5])), Vec::<u16>::new());
        // A new loss in the same NACK is still answered.
        assert_eq!(copies(&mut r, nack(t1, &[3, 6])), vec![6]);
        // A round trip later the copy may have been lost too: sent again.
        let t2 = t0 + Duration::from_millis(160);
        assert_eq!(copies(&mut r, nack(t2, &[3])), vec![3]);
    }
}
