//! Round trips for peers that only receive from us: answers to RTCP XR Receiver Reference Time
//! reports (RFC 3611 §4.4) with DLRR blocks (§4.5).
//!
//! A receiver that sends no media of its own cannot measure its round trip from sender and
//! receiver reports. Chromium's receivers then send an XR "receiver reference time" with their
//! receiver reports and expect the sender to answer with the delay since it arrived (Chromium's
//! own senders do). Without an answer a browser receiving only from us keeps a default round
//! trip: it asks again for a lost packet only every ~100 ms, and its jitter buffer holds our
//! frames longer (measured: target delay 50–200 ms for our stream against 11–22 ms for a
//! Chromium sender's on the same link, 0.5–0.8 s of freeze per 1 s loss burst against none).
//! webrtc-rs parses XR but does not answer it.
//!
//! [`DlrrAnswers`] is the policy (plain, time passed in); [`XrRttResponder`] is the interceptor
//! that feeds it inbound RTCP and sends its answers.

use crate::interceptor_util::interceptor_types;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use rtc::interceptor::{AttributedPacket, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::extended_report::{
    DLRRReport, DLRRReportBlock, ExtendedReport, ReceiverReferenceTimeReportBlock,
};
use rtc::sansio::Protocol;
use rtc::shared::TransportContext;

/// At most one answer per receiver in this interval: a receiver reports about once a second,
/// and a peer sending XR in a flood must not make us send as many packets back.
const MIN_ANSWER_GAP: Duration = Duration::from_millis(100);
/// Receivers remembered at most (one per remote receive stream; more is a hostile peer).
const MAX_RECEIVERS: usize = 64;

/// The middle 32 bits of a 64-bit NTP timestamp (RFC 3550 "compact" form, 1/65536 s units).
pub(crate) fn compact_ntp(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// A delay in RFC 3611's DLRR units (1/65536 s), saturating.
pub(crate) fn dlrr_units(delay: Duration) -> u32 {
    let units = delay.as_nanos().saturating_mul(65_536) / 1_000_000_000;
    u32::try_from(units).unwrap_or(u32::MAX)
}

/// Which receivers' reference times to answer, and when (the policy of this module).
#[derive(Debug, Default)]
pub(crate) struct DlrrAnswers {
    /// Receiver SSRC → when we last answered it.
    answered: HashMap<u32, Instant>,
}

impl DlrrAnswers {
    /// The DLRR report for receiver `ssrc`'s reference time `ntp`, which arrived at `arrived`,
    /// answered at `now`; `None` when this receiver was answered less than
    /// [`MIN_ANSWER_GAP`] ago, or too many receivers are known.
    pub(crate) fn answer(
        &mut self,
        ssrc: u32,
        ntp: u64,
        arrived: Instant,
        now: Instant,
    ) -> Option<DLRRReport> {
        if let Some(at) = self.answered.get(&ssrc) {
            if now.saturating_duration_since(*at) < MIN_ANSWER_GAP {
                return None;
            }
        } else if self.answered.len() >= MAX_RECEIVERS {
            // Forget receivers that have not reported for a while before refusing a new one.
            self.answered
                .retain(|_, at| now.saturating_duration_since(*at) < Duration::from_secs(10));
            if self.answered.len() >= MAX_RECEIVERS {
                return None;
            }
        }
        self.answered.insert(ssrc, now);
        Some(DLRRReport {
            ssrc,
            last_rr: compact_ntp(ntp),
            dlrr: dlrr_units(now.saturating_duration_since(arrived)),
        })
    }
}

/// Answers each receiver reference time in inbound RTCP with a DLRR block, one XR packet per
/// local media stream (a receiver attributes the round trip to the SSRC the XR comes from).
#[derive(Default)]
pub(crate) struct XrRttResponder {
    answers: DlrrAnswers,
    /// Our media SSRCs (not RTX or FEC).
    local: BTreeSet<u32>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl XrRttResponder {
    /// The XR packets answering the reference times in `packets` (empty when there are none, or
    /// we send no media).
    fn answers_for(
        &mut self,
        packets: &[Box<dyn rtc::rtcp::Packet>],
        now: Instant,
    ) -> Vec<Box<dyn rtc::rtcp::Packet>> {
        if self.local.is_empty() {
            return Vec::new();
        }
        let mut reports = Vec::new();
        for p in packets {
            let Some(xr) = p.as_any().downcast_ref::<ExtendedReport>() else {
                continue;
            };
            for block in &xr.reports {
                if let Some(rrtr) = block
                    .as_any()
                    .downcast_ref::<ReceiverReferenceTimeReportBlock>()
                    // Answered as it is read: the delay to the wire is the driver's next write.
                    && let Some(r) = self.answers.answer(xr.sender_ssrc, rrtr.ntp_timestamp, now, now)
                {
                    reports.push(r);
                }
            }
        }
        if reports.is_empty() {
            return Vec::new();
        }
        self.local
            .iter()
            .map(|&ssrc| {
                Box::new(ExtendedReport {
                    sender_ssrc: ssrc,
                    reports: vec![Box::new(DLRRReportBlock {
                        reports: reports.clone(),
                    })],
                }) as Box<dyn rtc::rtcp::Packet>
            })
            .collect()
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for XrRttResponder {
    interceptor_types!();

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let answers = self.answers_for(packets, msg.now);
            if !answers.is_empty() {
                self.write_queue.push_back(TaggedPacket {
                    now: msg.now,
                    transport: TransportContext::default(),
                    message: AttributedPacket::new(Packet::Rtcp(answers)),
                });
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Instant> {
        None
    }
}

impl Interceptor for XrRttResponder {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.local.insert(info.ssrc);
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.local.remove(&info.ssrc);
    }

    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}

    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::shared::marshal::Unmarshal;

    #[test]
    fn compact_forms() {
        // 0x0001_0002 seconds . 0x8000_0000 fraction (half a second): middle bits 0x0002_8000.
        assert_eq!(compact_ntp(0x0001_0002_8000_0000), 0x0002_8000);
        assert_eq!(dlrr_units(Duration::from_secs(1)), 65_536);
        assert_eq!(dlrr_units(Duration::from_millis(500)), 32_768);
        assert_eq!(dlrr_units(Duration::ZERO), 0);
        assert_eq!(dlrr_units(Duration::from_secs(1 << 20)), u32::MAX);
    }

    #[test]
    fn answers_each_receiver_at_most_every_gap() {
        let t0 = Instant::now();
        let mut a = DlrrAnswers::default();
        let r = a
            .answer(7, 0x0001_0002_8000_0000, t0, t0 + Duration::from_millis(2))
            .expect("first report is answered");
        assert_eq!((r.ssrc, r.last_rr), (7, 0x0002_8000));
        // 2 ms in 1/65536 s units.
        assert_eq!(r.dlrr, 131);
        // A second report within the gap is not; another receiver's is.
        assert!(a.answer(7, 1, t0, t0 + Duration::from_millis(50)).is_none());
        assert!(a.answer(8, 1, t0, t0 + Duration::from_millis(50)).is_some());
        assert!(
            a.answer(7, 1, t0, t0 + Duration::from_millis(150))
                .is_some()
        );
    }

    #[test]
    fn receivers_are_bounded() {
        let t0 = Instant::now();
        let mut a = DlrrAnswers::default();
        for ssrc in 0..MAX_RECEIVERS as u32 {
            assert!(a.answer(ssrc, 1, t0, t0).is_some());
        }
        assert!(a.answer(1_000, 1, t0, t0).is_none(), "a flood of SSRCs");
        // Once the old ones have gone quiet, a new receiver is answered again.
        let later = t0 + Duration::from_secs(11);
        assert!(a.answer(1_000, 1, later, later).is_some());
    }

    fn xr_rrtr(sender: u32, ntp: u64) -> Box<dyn rtc::rtcp::Packet> {
        Box::new(ExtendedReport {
            sender_ssrc: sender,
            reports: vec![Box::new(ReceiverReferenceTimeReportBlock {
                ntp_timestamp: ntp,
            })],
        })
    }

    fn tagged(packets: Vec<Box<dyn rtc::rtcp::Packet>>, now: Instant) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(packets)),
        }
    }

    fn local(ssrc: u32) -> StreamInfo {
        StreamInfo {
            ssrc,
            ..StreamInfo::default()
        }
    }

    #[test]
    fn a_reference_time_is_answered_from_every_local_stream_on_the_wire() {
        let mut x = XrRttResponder::default();
        let now = Instant::now();
        // Nothing of ours to attribute a round trip to: no answer.
        x.handle_read(tagged(vec![xr_rrtr(0xABC, 0x1111_2222_3333_4444)], now))
            .expect("read");
        assert!(x.poll_read().is_some(), "inbound RTCP goes on");
        assert!(x.poll_write().is_none());

        x.bind_local_stream(&local(10));
        x.bind_local_stream(&local(20));
        x.handle_read(tagged(vec![xr_rrtr(0xABC, 0x1111_2222_3333_4444)], now))
            .expect("read");
        assert!(x.poll_read().is_some());
        let Some(out) = x.poll_write() else {
            panic!("no answer")
        };
        let Packet::Rtcp(packets) = &out.message.packet else {
            panic!("not RTCP")
        };
        let senders: Vec<u32> = packets
            .iter()
            .map(|p| {
                // What goes on the wire parses back to the same answer.
                let bytes = p.marshal().expect("marshal");
                let back = ExtendedReport::unmarshal(&mut bytes.as_ref()).expect("unmarshal");
                let dlrr = back.reports[0]
                    .as_any()
                    .downcast_ref::<DLRRReportBlock>()
                    .expect("a DLRR block");
                assert_eq!(dlrr.reports.len(), 1);
                assert_eq!(dlrr.reports[0].ssrc, 0xABC);
                assert_eq!(dlrr.reports[0].last_rr, 0x2222_3333);
                back.sender_ssrc
            })
            .collect();
        assert_eq!(senders, vec![10, 20]);
        assert!(x.poll_write().is_none());

        // Other RTCP is left alone and gets no answer.
        x.handle_read(tagged(
            vec![Box::new(
                rtc::rtcp::receiver_report::ReceiverReport::default(),
            )],
            now + Duration::from_secs(1),
        ))
        .expect("read");
        assert!(x.poll_read().is_some());
        assert!(x.poll_write().is_none());
    }
}
