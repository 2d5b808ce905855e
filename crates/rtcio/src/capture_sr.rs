//! RTCP sender reports on the capture clock. webrtc-rs's `SenderReportInterceptor` maps the RTP
//! time of a frame to the moment its first packet reached the peer connection's driver, so our
//! encoder delay (and the wait in between) looks, to the receiver, like a later capture: its lip
//! sync then shows our video that much too late. Chromium's reports map RTP time to capture
//! time. [`CaptureTimeReports`] wraps the stock interceptor and shows it each new frame's RTP
//! timestamp moved forward by the frame's age (now − capture), so the report's NTP ↔ RTP pair
//! names the capture instant; the packets on the wire are unchanged. The capture instants come
//! from [`crate::LocalTrack::write_captured`] through [`CaptureTimes`], one per peer
//! connection: a frame's first packet takes the newest instant written before the driver
//! handled it (in write order alone, frames whose packets the driver dropped before the
//! chain — while the transport comes up — left instants behind that shifted every later
//! frame by a few frames).

use crate::interceptor_util::{forward_to_inner, interceptor_types};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rtc::interceptor::{
    Interceptor, Packet, SenderReportBuilder, SenderReportInterceptor, StreamInfo, TaggedPacket,
};
use rtc::sansio::Protocol;

/// Frames of one SSRC whose capture instants wait for their first packet (more means the
/// driver is far behind: the oldest are dropped).
const QUEUED: usize = 64;
/// A frame older than this at its first packet is not moved (a stalled source, a bad stamp).
const MAX_AGE: Duration = Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One written frame: its id, when it was written, when it was captured.
#[derive(Debug, Clone, Copy)]
struct Written {
    id: u64,
    at: Instant,
    captured: Instant,
}

/// Capture instants of the frames written to each local SSRC of one peer connection, oldest
/// first, each with an id to take it back when its write failed before any packet left.
#[derive(Debug, Default)]
pub(crate) struct CaptureTimes {
    queues: Mutex<HashMap<u32, VecDeque<Written>>>,
    next_id: Mutex<u64>,
}

impl CaptureTimes {
    /// Queues the capture instant of the frame about to be written to `ssrc`.
    pub(crate) fn push(&self, ssrc: u32, captured: Instant) -> u64 {
        self.push_at(ssrc, captured, Instant::now())
    }

    fn push_at(&self, ssrc: u32, captured: Instant, at: Instant) -> u64 {
        let id = {
            let mut n = lock(&self.next_id);
            *n = n.wrapping_add(1);
            *n
        };
        let mut q = lock(&self.queues);
        let q = q.entry(ssrc).or_default();
        if q.len() == QUEUED {
            q.pop_front();
        }
        q.push_back(Written { id, at, captured });
        id
    }

    /// Takes back an instant whose frame sent nothing (the write failed).
    pub(crate) fn cancel(&self, ssrc: u32, id: u64) {
        if let Some(q) = lock(&self.queues).get_mut(&ssrc) {
            q.retain(|w| w.id != id);
        }
    }

    /// The capture instant of the frame whose first packet the driver handles at `now`: the
    /// newest written before `now` (packets follow their write at once unless the driver is
    /// a whole frame behind); it and every older one leave the queue.
    fn take(&self, ssrc: u32, now: Instant) -> Option<Instant> {
        let mut g = lock(&self.queues);
        let q = g.get_mut(&ssrc)?;
        let i = q.iter().rposition(|w| w.at <= now)?;
        let w = q[i];
        q.drain(..=i);
        Some(w.captured)
    }

    fn forget(&self, ssrc: u32) {
        lock(&self.queues).remove(&ssrc);
    }
}

/// What the wrapper tracks per local SSRC.
#[derive(Debug)]
struct Stream {
    clock_rate: f64,
    started: bool,
    last_seq: u16,
    last_ts: u32,
    /// RTP ticks the current frame's timestamp is moved by for the inner interceptor.
    shift: u32,
}

/// webrtc-rs's sender reports, on the capture clock (see the module docs).
pub(crate) struct CaptureTimeReports {
    inner: SenderReportInterceptor,
    times: Arc<CaptureTimes>,
    streams: HashMap<u32, Stream>,
    out: VecDeque<TaggedPacket>,
}

impl CaptureTimeReports {
    /// The stock interceptor (1 s interval) fed from `times`.
    pub(crate) fn new(times: Arc<CaptureTimes>) -> Self {
        CaptureTimeReports {
            inner: SenderReportBuilder::new().build(),
            times,
            streams: HashMap::new(),
            out: VecDeque::new(),
        }
    }

    /// Moves the inner interceptor's output (reports; the packet just handed in) to ours,
    /// giving a moved RTP packet its own timestamp back.
    fn drain(&mut self, restore: Option<(u32, u16, u32)>) {
        while let Some(mut m) = self.inner.poll_write() {
            if let (Some((ssrc, seq, shift)), Packet::Rtp(p)) = (restore, &mut m.message.packet)
                && p.header.ssrc == ssrc
                && p.header.sequence_number == seq
            {
                p.header.timestamp = p.header.timestamp.wrapping_sub(shift);
            }
            self.out.push_back(m);
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for CaptureTimeReports {
    interceptor_types!();

    forward_to_inner!(handle_read, poll_read, poll_timeout);

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        let mut restore = None;
        if let Packet::Rtp(p) = &mut msg.message.packet
            && let Some(st) = self.streams.get_mut(&p.header.ssrc)
        {
            let (seq, ts) = (p.header.sequence_number, p.header.timestamp);
            let diff = seq.wrapping_sub(st.last_seq);
            // The stock interceptor's rule: only in-order packets move the mapping.
            let in_order = !st.started || (diff > 0 && diff < (1 << 15));
            if in_order {
                if !st.started || ts != st.last_ts {
                    // The first packet of a new frame: its capture instant is next in line.
                    st.shift = self
                        .times
                        .take(p.header.ssrc, msg.now)
                        .and_then(|c| msg.now.checked_duration_since(c))
                        .filter(|age| *age <= MAX_AGE)
                        .map_or(0, |age| (age.as_secs_f64() * st.clock_rate).round() as u32);
                    st.last_ts = ts;
                }
                st.started = true;
                st.last_seq = seq;
            }
            if in_order && st.shift != 0 {
                p.header.timestamp = ts.wrapping_add(st.shift);
                restore = Some((p.header.ssrc, seq, st.shift));
            }
        }
        self.inner.handle_write(msg)?;
        self.drain(restore);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.drain(None);
        self.out.pop_front()
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), Self::Error> {
        self.inner.handle_timeout(now)?;
        self.drain(None);
        Ok(())
    }
}

impl Interceptor for CaptureTimeReports {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.inner.bind_local_stream(info);
        self.streams.insert(
            info.ssrc,
            Stream {
                clock_rate: f64::from(info.clock_rate),
                started: false,
                last_seq: 0,
                last_ts: 0,
                shift: 0,
            },
        );
    }

    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.inner.unbind_local_stream(info);
        self.streams.remove(&info.ssrc);
        self.times.forget(info.ssrc);
    }

    forward_to_inner!(bind_remote_stream, unbind_remote_stream);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::AttributedPacket;
    use rtc::rtcp::sender_report::SenderReport;
    use rtc::shared::TransportContext;

    const SSRC: u32 = 0x1234;

    fn rtp(now: Instant, seq: u16, ts: u32) -> TaggedPacket {
        let mut p = rtc::rtp::Packet::default();
        p.header.ssrc = SSRC;
        p.header.sequence_number = seq;
        p.header.timestamp = ts;
        p.payload = bytes::Bytes::from_static(&[0u8; 100]);
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(p)),
        }
    }

    /// Sends three 30 fps frames (two packets each) written `age` after capture (`None`: no
    /// capture instants), then returns the wire timestamps and the report at +1 s.
    fn run(age: Option<Duration>) -> (Vec<u32>, SenderReport) {
        let times = Arc::new(CaptureTimes::default());
        let mut i = CaptureTimeReports::new(times.clone());
        i.bind_local_stream(&StreamInfo {
            ssrc: SSRC,
            clock_rate: 90_000,
            ..Default::default()
        });
        let t0 = Instant::now() + Duration::from_secs(2);
        let mut wire = Vec::new();
        let mut seq = 100u16;
        for f in 0..3u32 {
            let sent = t0 + Duration::from_millis(33 * u64::from(f));
            if let Some(a) = age {
                times.push(SSRC, sent - a);
            }
            for _ in 0..2 {
                i.handle_write(rtp(sent, seq, 1000 + 3000 * f)).unwrap();
                seq = seq.wrapping_add(1);
            }
        }
        let at = t0 + Duration::from_millis(66) + Duration::from_secs(1);
        i.handle_timeout(at).unwrap();
        let mut report = None;
        while let Some(m) = i.poll_write() {
            match m.message.packet {
                Packet::Rtp(p) => wire.push(p.header.timestamp),
                Packet::Rtcp(v) => {
                    for r in v {
                        if let Some(sr) = r.as_any().downcast_ref::<SenderReport>() {
                            report = Some(sr.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        (wire, report.expect("a sender report"))
    }

    #[test]
    fn reports_map_rtp_time_to_capture_time_and_leave_packets_alone() {
        let (wire, sr) = run(Some(Duration::from_millis(40)));
        assert_eq!(wire, [1000, 1000, 4000, 4000, 7000, 7000]);
        // The last frame (RTP 7000) was captured 1 s + 40 ms before the report.
        assert_eq!(sr.rtp_time, 7000 + 90_000 + 3_600);
        let (wire, sr) = run(None);
        assert_eq!(wire, [1000, 1000, 4000, 4000, 7000, 7000]);
        // Without capture instants: the stock mapping to the first packet's instant.
        assert_eq!(sr.rtp_time, 7000 + 90_000);
    }

    #[test]
    fn each_frame_takes_the_newest_instant_written_before_it() {
        let times = CaptureTimes::default();
        let t = Instant::now();
        let ms = Duration::from_millis;
        // Frames whose packets never reached the chain (transport still coming up).
        for k in 0..3 {
            times.push_at(SSRC, t + ms(33 * k) - ms(5), t + ms(33 * k));
        }
        // The frame written at +100 ms, handled at +101 ms.
        times.push_at(SSRC, t + ms(95), t + ms(100));
        assert_eq!(times.take(SSRC, t + ms(101)), Some(t + ms(95)));
        assert_eq!(times.take(SSRC, t + ms(102)), None);
        // A write that failed is taken back; one written after `now` is not this frame's.
        let id = times.push_at(SSRC, t + ms(128), t + ms(133));
        times.push_at(SSRC, t + ms(161), t + ms(166));
        times.cancel(SSRC, id);
        assert_eq!(times.take(SSRC, t + ms(150)), None);
        assert_eq!(times.take(SSRC, t + ms(167)), Some(t + ms(161)));
    }
}
