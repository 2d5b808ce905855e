//! RTP packets of one received track → complete media frames, without I/O.
//!
//! We do not use rtc's `SampleBuilder`: it allocates two 65 536-entry buffers (~13 MB) per
//! track. This assembler keeps a [`REORDER_WINDOW`]-slot ring and at most one frame under
//! construction, capped at [`MAX_FRAME_BYTES`].
//!
//! Rules, counted in packets, plus one time bound when the caller passes the arrival time
//! ([`FrameAssembler::push_at`]; the clock is injected, never read here):
//!
//! - Packets are processed strictly in sequence order (16-bit numbers are unwrapped into a
//!   64-bit counter, so 65 535 → 0 is just the next packet). A packet that arrives early waits in
//!   the ring until the packets before it arrive — NACK retransmissions come back out of order.
//! - A missing packet (a *gap*) is given up and counted lost when either
//!   * a packet arrives [`REORDER_WINDOW`] or more sequence numbers past it, or
//!   * the packets buffered past it already end [`VIDEO_GAP_FRAMES`] frames (H.264, VP8 and
//!     other codecs; a frame ends at a marker bit or a timestamp change), or
//!     [`OPUS_GAP_FRAMES`] packets (Opus, where waiting longer only adds audio delay), or
//!   * it has been missing for [`VIDEO_GAP_WAIT`] ([`OPUS_GAP_WAIT`] for Opus) of arrival
//!     time: at a low frame rate (a congested link) eight frames are seconds, and every frame
//!     behind the gap waits with it; a retransmission that needs longer comes too late to
//!     watch anyway, and the keyframe request that follows a given-up gap recovers sooner.
//! - Never deliver a frame that may miss a packet. A lost packet damages the frame it sits in;
//!   when it sits between two frames we cannot tell which one it belonged to, so the frame that
//!   starts after the gap is dropped too (its first packets may be the lost ones). Every frame
//!   dropped sets `lost_before` on the next frame delivered, so the caller can ask for a keyframe.
//! - A packet behind the point already processed is ignored (counted as a duplicate if it had
//!   been received). A jump of [`MAX_DROPOUT`] or more in either direction is a stray packet unless
//!   the next packet continues it, in which case the sender restarted its numbering and we resync
//!   (RFC 3550 appendix A.1 probation).
//! - The first frame of a stream is used only if its first packet is a frame head (H.264: not a
//!   FU-A continuation; VP8: S = 1 and partition 0); joining mid-frame drops that frame. Until
//!   that frame ends, a packet of it from up to [`START_REWIND`] numbers before the first
//!   packet (its head, reordered behind the rest) re-syncs the stream there.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::rtp::codec::h264::{
    ANNEXB_NALUSTART_CODE, FU_END_BITMASK, FU_START_BITMASK, FUA_NALU_TYPE, H264Packet,
    NALU_TYPE_BITMASK, STAPA_NALU_TYPE,
};
use rtc::rtp::codec::vp8::Vp8Packet;
use rtc::rtp::packetizer::Depacketizer;

/// Ring slots for reordering; also the furthest ahead of a gap a packet may be before the gap
/// is given up. 512 slots are ~1.5 s of 720p video at 3 Mbit/s, so the time and frame bounds
/// below decide when a gap is given up; at 64 a 720p keyframe (~50 packets) and a few frames
/// behind a gap gave it up within ~100 ms, before its repair could arrive (a 1 s burst of
/// 30 % loss cost Rust→Rust 3 given-up gaps and a 1.2 s freeze).
pub const REORDER_WINDOW: usize = 512;

/// Frame ends buffered past a gap (H.264, VP8, other codecs) at which the gap is declared lost:
/// ~270 ms at 30 fps, enough for a NACK round trip on most paths without stalling playout long.
pub const VIDEO_GAP_FRAMES: usize = 8;

/// Opus packets buffered past a gap at which it is declared lost (60 ms at 20 ms packets):
/// Opus conceals a lost packet better than a stall hides a late one.
pub const OPUS_GAP_FRAMES: usize = 3;

/// Arrival time a video gap may stay open waiting for its retransmission (NACK every 20 ms,
/// then a round trip: enough for RTTs up to ~200 ms).
pub const VIDEO_GAP_WAIT: Duration = Duration::from_millis(250);

/// The same for Opus: audio behind a gap cannot wait longer than the jitter buffer would.
pub const OPUS_GAP_WAIT: Duration = Duration::from_millis(80);

/// Cap on the bytes of one frame (received payload and assembled output); larger frames are
/// dropped as malformed so a broken or hostile sender cannot grow memory without bound.
pub const MAX_FRAME_BYTES: usize = 4 << 20;

/// Sequence jump (either direction) that is not believed until a second packet continues it.
/// Same value as RFC 3550's `MAX_DROPOUT`; also the oldest a late packet can be and still be
/// recognised as late rather than as a restart.
pub const MAX_DROPOUT: i64 = 3000;

/// How far before the first packet of a stream a packet of the same frame may arrive late and
/// still be used. Syncing on the first packet that arrives made a keyframe whose SPS/PPS came
/// second (reordered on the path) undecodable: a keyframe request round trip at every such
/// join. Packets logged for the replay are bounded by [`START_LOG`].
pub const START_REWIND: u16 = 64;

/// Packets kept for a start rewind; a first frame longer than this is not rewound.
const START_LOG: usize = 256;

/// Offset added to the first sequence number so unwrapped numbers never go negative.
const SEQ_BASE: i64 = 1 << 16;

/// Codec of a received track, from its negotiated MIME type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RtpCodec {
    /// `video/H264`: depacketized to Annex-B access units.
    H264,
    /// `audio/opus`: one packet is one frame.
    Opus,
    /// `video/VP8`: payload descriptors stripped, partitions concatenated.
    Vp8,
    /// Anything else (the MIME type as negotiated): each payload is passed through as a frame.
    Other(String),
}

impl RtpCodec {
    /// Maps a negotiated MIME type (`video/H264`, `audio/opus`, `video/VP8`, any case) to a codec;
    /// anything else is [`RtpCodec::Other`].
    pub fn from_mime(mime: &str) -> RtpCodec {
        if mime.eq_ignore_ascii_case("video/H264") {
            RtpCodec::H264
        } else if mime.eq_ignore_ascii_case("audio/opus") {
            RtpCodec::Opus
        } else if mime.eq_ignore_ascii_case("video/VP8") {
            RtpCodec::Vp8
        } else {
            RtpCodec::Other(mime.to_string())
        }
    }
}

/// One complete access unit (H.264, Annex-B with 00 00 00 01 start codes), Opus packet or VP8 frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssembledFrame {
    /// The frame's bytes, ready for a decoder.
    pub data: Bytes,
    /// RTP timestamp shared by the frame's packets.
    pub rtp_timestamp: u32,
    /// H.264: the access unit holds an IDR slice (NAL type 5) or SPS (7); VP8: key frame bit; Opus: always true.
    pub keyframe: bool,
    /// Packets were lost (or a frame was dropped as incomplete) since the previous delivered frame — the caller may request a keyframe.
    pub lost_before: bool,
    /// The frame waited for a missing packet: it became complete when a late packet (a
    /// retransmission, a reordered one) filled a gap, or when a gap was given up. Its arrival
    /// time says how long the repair took, not how much the path jitters (libwebrtc keeps such
    /// frames out of its jitter estimate too).
    pub held_for_loss: bool,
}

/// Counters since the assembler was created.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssemblerStats {
    /// Packets pushed, whatever became of them.
    pub packets: u64,
    /// Frames delivered.
    pub frames: u64,
    /// Frames started but not delivered: missing packets, malformed or oversized.
    pub dropped_frames: u64,
    /// Sequence numbers given up as lost.
    pub lost_packets: u64,
    /// Packets already buffered or already processed, ignored.
    pub duplicates: u64,
    /// Payloads that could not be used (empty, truncated, unparseable, out of FU-A order) plus
    /// frames over [`MAX_FRAME_BYTES`].
    pub malformed: u64,
}

/// A packet waiting in the reorder ring.
#[derive(Debug, Clone)]
struct Slot {
    ts: u32,
    marker: bool,
    payload: Bytes,
}

/// How payloads become frames.
#[derive(Debug)]
enum Depack {
    /// `fu` is the NAL type of the FU-A being reassembled: rtc's depacketizer concatenates any
    /// FU-A it is given, so start/continuation order is checked here.
    H264 {
        pkt: H264Packet,
        fu: Option<u8>,
    },
    Vp8,
    /// One payload per frame (Opus and unknown codecs).
    PerPacket {
        keyframe: bool,
    },
}

/// The frame being assembled.
#[derive(Debug)]
struct Building {
    ts: u32,
    data: BytesMut,
    /// Payload bytes received for the frame; bounds what rtc's FU-A buffer holds before output.
    raw: usize,
    packets: usize,
    keyframe: bool,
    /// Missing or bad packets: the frame is consumed to its end and then dropped.
    damaged: bool,
}

impl Building {
    /// Marks the frame undeliverable and frees what it held.
    fn damage(&mut self) {
        self.damaged = true;
        self.data = BytesMut::new();
    }
}

/// Reorders the RTP packets of one track and assembles them into frames (see the module docs
/// for the loss rules).
#[derive(Debug)]
pub struct FrameAssembler {
    depack: Depack,
    /// Opus: its gap bounds stay as they are.
    audio: bool,
    /// Frame ends past a gap that give the gap up.
    gap_frames: usize,
    /// Arrival time past which a gap is given up.
    gap_wait: Duration,
    /// The gap at `next` (its sequence) and when it was first seen open.
    gap_seen: Option<(i64, Instant)>,
    slots: Box<[Option<Slot>]>,
    buffered: usize,
    /// Whether `next` is set: false before the first packet and after a restart.
    synced: bool,
    /// Unwrapped sequence number of the next packet to process.
    next: i64,
    /// Bit i: sequence `next - 1 - i` was received, to tell duplicates from late packets.
    history: u64,
    /// A far-off packet waiting for a successor to prove a sequence restart.
    probation: Option<(u16, Slot)>,
    /// The packets accepted since the (re)start, while its first frame is still open: a packet
    /// of that frame that arrives after them (reordered at the stream's start) re-syncs the
    /// stream on it and they are replayed behind it ([`START_REWIND`]).
    start_log: Option<Vec<(u16, Slot)>>,
    /// A frame has been started since the (re)start: later non-head first packets are malformed.
    started: bool,
    frame: Option<Building>,
    /// Packets were lost since the last packet processed: the next frame to start may miss its head.
    gap_pending: bool,
    /// Reported on the next delivered frame.
    lost_before: bool,
    /// Highest unwrapped sequence number placed so far: a packet below it is late.
    highest: Option<i64>,
    /// Frames delivered during the current push waited for a gap ([`AssembledFrame::held_for_loss`]).
    held: bool,
    stats: AssemblerStats,
}

impl FrameAssembler {
    /// Creates an assembler for one received track.
    pub fn new(codec: RtpCodec) -> Self {
        let gap_wait = if codec == RtpCodec::Opus {
            OPUS_GAP_WAIT
        } else {
            VIDEO_GAP_WAIT
        };
        let (depack, gap_frames) = match codec {
            RtpCodec::H264 => (
                Depack::H264 {
                    pkt: H264Packet::default(),
                    fu: None,
                },
                VIDEO_GAP_FRAMES,
            ),
            RtpCodec::Vp8 => (Depack::Vp8, VIDEO_GAP_FRAMES),
            RtpCodec::Opus => (Depack::PerPacket { keyframe: true }, OPUS_GAP_FRAMES),
            RtpCodec::Other(_) => (Depack::PerPacket { keyframe: false }, VIDEO_GAP_FRAMES),
        };
        FrameAssembler {
            audio: codec == RtpCodec::Opus,
            depack,
            gap_frames,
            gap_wait,
            gap_seen: None,
            slots: (0..REORDER_WINDOW).map(|_| None).collect(),
            buffered: 0,
            synced: false,
            next: 0,
            history: 0,
            probation: None,
            start_log: None,
            started: false,
            frame: None,
            gap_pending: false,
            lost_before: false,
            highest: None,
            held: false,
            stats: AssemblerStats::default(),
        }
    }

    /// Feeds one packet (sequence number, RTP timestamp, marker bit, payload). Returns the
    /// frames that became complete, oldest first. Without an arrival time gaps are bounded in
    /// packets and frames only: prefer [`FrameAssembler::push_at`].
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Vec<AssembledFrame> {
        self.push_inner(seq, timestamp, marker, payload, None)
    }

    /// [`FrameAssembler::push`] with the packet's arrival time: a gap also ends once it has
    /// been open for [`VIDEO_GAP_WAIT`] / [`OPUS_GAP_WAIT`] of arrival time.
    pub fn push_at(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
        now: Instant,
    ) -> Vec<AssembledFrame> {
        self.push_inner(seq, timestamp, marker, payload, Some(now))
    }

    fn push_inner(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
        now: Option<Instant>,
    ) -> Vec<AssembledFrame> {
        self.stats.packets += 1;
        self.held = false;
        let mut out = Vec::new();
        let slot = Slot {
            ts: timestamp,
            marker,
            payload: Bytes::copy_from_slice(payload),
        };
        if !self.synced {
            self.sync_to(seq);
        } else if self.distance(seq).abs() >= MAX_DROPOUT {
            match self.probation.take() {
                Some((prev, held)) if prev.wrapping_add(1) == seq => {
                    // Two in a row: the sender renumbered. Finish the old stream, replay the held packet.
                    self.restart(&mut out);
                    self.sync_to(prev);
                    self.accept(prev, held, now, &mut out);
                }
                _ => {
                    self.probation = Some((seq, slot));
                    return out;
                }
            }
        }
        self.probation = None;
        self.accept(seq, slot, now, &mut out);
        out
    }

    /// Sets how long (arrival time) a gap stays open for its retransmission, for a round trip
    /// that needs longer than [`VIDEO_GAP_WAIT`]; the frame bound grows with it (a frame per
    /// 33 ms, at least [`VIDEO_GAP_FRAMES`]), so a gap at 30 fps is not given up by count
    /// before its time. Packets past [`REORDER_WINDOW`] still give it up. Not for Opus, whose
    /// gaps cannot wait longer than its jitter buffer.
    pub fn set_gap_wait(&mut self, wait: Duration) {
        if self.gap_wait == wait || self.audio {
            return;
        }
        self.gap_wait = wait;
        let frames = usize::try_from(wait.as_millis().div_ceil(33)).unwrap_or(usize::MAX);
        self.gap_frames = VIDEO_GAP_FRAMES.max(frames);
    }

    /// Counters since creation.
    pub fn stats(&self) -> AssemblerStats {
        self.stats
    }

    fn sync_to(&mut self, seq: u16) {
        self.next = i64::from(seq) + SEQ_BASE;
        self.highest = None;
        self.synced = true;
        self.start_log = Some(Vec::new());
    }

    /// Whether `seq`/`ts` is a late packet of the stream's still-open first frame, from before
    /// the packet the stream was synced on.
    fn starts_earlier(&self, seq: u16, ts: u32) -> bool {
        let Some((first, slot)) = self.start_log.as_ref().and_then(|l| l.first()) else {
            return false;
        };
        let back = first.wrapping_sub(seq);
        slot.ts == ts && back > 0 && back <= START_REWIND
    }

    /// Re-syncs the stream on `seq` (a late packet of its first frame) and replays the packets
    /// accepted since the first sync behind it.
    fn rewind(
        &mut self,
        seq: u16,
        slot: Slot,
        now: Option<Instant>,
        out: &mut Vec<AssembledFrame>,
    ) {
        let log = self.start_log.take().unwrap_or_default();
        self.slots.iter_mut().for_each(|s| *s = None);
        self.buffered = 0;
        self.frame = None;
        self.started = false;
        self.gap_pending = false;
        self.gap_seen = None;
        self.history = 0;
        self.sync_to(seq);
        self.accept(seq, slot, now, out);
        for (s, sl) in log {
            self.accept(s, sl, now, out);
        }
    }

    /// Signed distance from the next expected sequence number, across the 16-bit wrap.
    fn distance(&self, seq: u16) -> i64 {
        i64::from(seq.wrapping_sub(self.next as u16) as i16)
    }

    fn index(ext: i64) -> usize {
        ext.rem_euclid(REORDER_WINDOW as i64) as usize
    }

    /// Places a packet in sequence order and processes whatever became processable.
    fn accept(
        &mut self,
        seq: u16,
        slot: Slot,
        now: Option<Instant>,
        out: &mut Vec<AssembledFrame>,
    ) {
        let diff = self.distance(seq);
        if diff < 0 && self.starts_earlier(seq, slot.ts) {
            self.rewind(seq, slot, now, out);
            return;
        }
        if diff < 0 {
            // Behind the processing point: a duplicate, or a retransmission too late to use.
            let bit = (-diff - 1) as u32;
            if bit < u64::BITS && self.history & (1u64 << bit) != 0 {
                self.stats.duplicates += 1;
            }
            return;
        }
        let ext = self.next + diff;
        let window = REORDER_WINDOW as i64;
        while ext - self.next >= window {
            if self.buffered == 0 {
                // Nothing buffered: skip the missing run in one step, keeping a full window
                // behind the new packet for stragglers.
                let skip = ext - self.next - (window - 1);
                self.lose(skip as u64);
                self.next += skip;
                break;
            }
            self.step(out);
        }
        let i = Self::index(ext);
        if self.slots[i].is_some() {
            self.stats.duplicates += 1;
            return;
        }
        // Below the highest placed: it fills a gap, and what it completes waited for it.
        if self.highest.is_some_and(|h| ext < h) {
            self.held = true;
        }
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        if let Some(log) = &mut self.start_log {
            if log.len() < START_LOG {
                log.push((seq, slot.clone()));
            } else {
                self.start_log = None;
            }
        }
        self.slots[i] = Some(slot);
        self.buffered += 1;
        self.settle(now, out);
    }

    /// Processes contiguous packets, giving up gaps that have waited past their bound.
    fn settle(&mut self, now: Option<Instant>, out: &mut Vec<AssembledFrame>) {
        // Gaps uncovered by giving one up were open as long as it was.
        let mut inherited: Option<Instant> = None;
        loop {
            while self.slots[Self::index(self.next)].is_some() {
                self.step(out);
            }
            if self.buffered == 0 {
                self.gap_seen = None;
                return;
            }
            let seen = match (self.gap_seen, now) {
                (Some((seq, t)), _) if seq == self.next => Some(t),
                (_, Some(now)) => {
                    let t = inherited.unwrap_or(now);
                    self.gap_seen = Some((self.next, t));
                    Some(t)
                }
                (_, None) => None,
            };
            let timed_out = matches!((seen, now), (Some(t), Some(now)) if now.saturating_duration_since(t) >= self.gap_wait);
            if !timed_out && self.frames_ahead() < self.gap_frames {
                return;
            }
            inherited = seen;
            // Giving the gap up: what follows it waited for it.
            self.held = true;
            while self.slots[Self::index(self.next)].is_none() {
                self.step(out);
            }
        }
    }

    /// Frame ends among the packets buffered past the gap at `next` (stops counting at the bound).
    fn frames_ahead(&self) -> usize {
        let per_packet = matches!(self.depack, Depack::PerPacket { .. });
        let mut ends = 0;
        for i in 0..REORDER_WINDOW as i64 {
            let Some(s) = &self.slots[Self::index(self.next + i)] else {
                continue;
            };
            let ts_change = i + 1 < REORDER_WINDOW as i64
                && self.slots[Self::index(self.next + i + 1)]
                    .as_ref()
                    .is_some_and(|n| n.ts != s.ts);
            if per_packet || s.marker || ts_change {
                ends += 1;
                if ends >= self.gap_frames {
                    break;
                }
            }
        }
        ends
    }

    /// Processes the packet at `next`, or declares it lost if absent.
    fn step(&mut self, out: &mut Vec<AssembledFrame>) {
        match self.slots[Self::index(self.next)].take() {
            Some(slot) => {
                self.buffered -= 1;
                self.history = (self.history << 1) | 1;
                self.process(slot, out);
            }
            None => self.lose(1),
        }
        self.next += 1;
    }

    fn lose(&mut self, n: u64) {
        self.stats.lost_packets += n;
        self.history = if n >= u64::from(u64::BITS) {
            0
        } else {
            self.history << n
        };
        self.lost_before = true;
        self.gap_pending = true;
        if let Some(f) = &mut self.frame {
            f.damage();
        }
    }

    /// Ends the old numbering: buffered packets are processed (holes lost), the open frame dropped.
    fn restart(&mut self, out: &mut Vec<AssembledFrame>) {
        while self.buffered > 0 {
            self.step(out);
        }
        if self.frame.take().is_some() {
            self.stats.dropped_frames += 1;
            self.lost_before = true;
        }
        self.synced = false;
        self.history = 0;
        self.started = false;
        self.gap_pending = false;
    }

    fn process(&mut self, slot: Slot, out: &mut Vec<AssembledFrame>) {
        if let Depack::PerPacket { keyframe } = self.depack {
            self.start_log = None;
            self.gap_pending = false;
            if slot.payload.is_empty() || slot.payload.len() > MAX_FRAME_BYTES {
                self.stats.malformed += 1;
                self.stats.dropped_frames += 1;
                self.lost_before = true;
                return;
            }
            self.deliver(slot.payload, slot.ts, keyframe, out);
            return;
        }

        if self.frame.as_ref().is_some_and(|f| f.ts != slot.ts) {
            // Timestamp changed without a marker: some senders omit it.
            self.finish(out);
        }
        if self.frame.is_none() {
            if slot.payload.is_empty() {
                // Padding-only or empty packet between frames: it carries no part of any frame.
                self.stats.malformed += 1;
                return;
            }
            let gap = std::mem::take(&mut self.gap_pending);
            let head = self.is_frame_head(&slot.payload);
            if !head && !gap && self.started {
                // Not explained by loss, nor by joining mid-frame at startup: a broken sender.
                self.stats.malformed += 1;
            }
            let damaged = gap || !head;
            self.started = true;
            if let Depack::H264 { pkt, fu } = &mut self.depack {
                *pkt = H264Packet::default();
                *fu = None;
            }
            self.frame = Some(Building {
                ts: slot.ts,
                data: BytesMut::new(),
                raw: 0,
                packets: 0,
                keyframe: false,
                damaged,
            });
        } else {
            // The lost packets sat inside this frame (already damaged), not before the next one.
            self.gap_pending = false;
        }
        self.append(&slot.payload);
        if slot.marker {
            self.finish(out);
        }
    }

    /// Whether a payload can start a frame.
    fn is_frame_head(&self, payload: &[u8]) -> bool {
        match self.depack {
            Depack::H264 { .. } => match payload {
                [b0, b1, ..] if b0 & NALU_TYPE_BITMASK == FUA_NALU_TYPE => {
                    b1 & FU_START_BITMASK != 0
                }
                _ => true,
            },
            // S bit set and partition index 0.
            Depack::Vp8 => payload.first().is_some_and(|b| b & 0x17 == 0x10),
            Depack::PerPacket { .. } => true,
        }
    }

    /// Depacketizes one payload into the open frame; bad input damages the frame.
    fn append(&mut self, payload: &Bytes) {
        let Some(f) = self.frame.as_mut() else {
            return;
        };
        if f.damaged {
            return;
        }
        f.packets += 1;
        f.raw += payload.len();
        if payload.is_empty() || f.raw > MAX_FRAME_BYTES {
            self.stats.malformed += 1;
            f.damage();
            return;
        }
        let chunk = match &mut self.depack {
            Depack::H264 { pkt, fu } => match check_h264(payload, fu) {
                None => None,
                Some(key) => {
                    f.keyframe |= key;
                    if payload.len() < 3 {
                        // rtc rejects NAL units under 3 bytes (e.g. end of sequence), RFC 6184 does not.
                        let mut b = BytesMut::with_capacity(4 + payload.len());
                        b.extend_from_slice(&ANNEXB_NALUSTART_CODE);
                        b.extend_from_slice(payload);
                        Some(b.freeze())
                    } else {
                        pkt.depacketize(payload).ok()
                    }
                }
            },
            Depack::Vp8 => {
                // Fresh per packet: rtc keeps optional-field flags from the previous packet.
                let mut vp8 = Vp8Packet::default();
                vp8.depacketize(payload).ok().inspect(|b| {
                    if f.packets == 1 && vp8.s == 1 && vp8.pid == 0 {
                        // VP8 payload header, P bit: 0 marks a key frame.
                        f.keyframe = b.first().is_some_and(|h| h & 0x01 == 0);
                    }
                })
            }
            Depack::PerPacket { .. } => Some(payload.clone()),
        };
        match chunk {
            Some(b) if f.data.len() + b.len() <= MAX_FRAME_BYTES => f.data.extend_from_slice(&b),
            _ => {
                self.stats.malformed += 1;
                f.damage();
            }
        }
    }

    /// Closes the open frame: delivers it if whole, else drops it.
    fn finish(&mut self, out: &mut Vec<AssembledFrame>) {
        // The first frame is done: a late packet of it can no longer be used.
        self.start_log = None;
        let Some(mut f) = self.frame.take() else {
            return;
        };
        if !f.damaged {
            let open_fu = matches!(self.depack, Depack::H264 { fu: Some(_), .. });
            if open_fu || f.data.is_empty() {
                self.stats.malformed += 1;
                f.damage();
            }
        }
        if f.damaged {
            self.stats.dropped_frames += 1;
            self.lost_before = true;
            return;
        }
        self.deliver(f.data.freeze(), f.ts, f.keyframe, out);
    }

    fn deliver(&mut self, data: Bytes, ts: u32, keyframe: bool, out: &mut Vec<AssembledFrame>) {
        self.stats.frames += 1;
        out.push(AssembledFrame {
            data,
            rtp_timestamp: ts,
            keyframe,
            lost_before: std::mem::take(&mut self.lost_before),
            held_for_loss: self.held,
        });
    }
}

/// Validates an H.264 RTP payload before rtc's depacketizer sees it (its STAP-A loop indexes
/// past a truncated length field, and it accepts FU-A fragments in any order) and tracks FU-A
/// continuity in `fu`. Returns whether the payload carries an IDR slice or SPS, or `None` if
/// malformed.
fn check_h264(p: &[u8], fu: &mut Option<u8>) -> Option<bool> {
    let is_key = |nal_header: u8| matches!(nal_header & NALU_TYPE_BITMASK, 5 | 7);
    // forbidden_zero_bit set means the sender flagged bit errors.
    let valid_nal = |h: u8| h & 0x80 == 0 && (1..=23).contains(&(h & NALU_TYPE_BITMASK));
    let (&hdr, _) = p.split_first()?;
    if hdr & 0x80 != 0 {
        return None;
    }
    match hdr & NALU_TYPE_BITMASK {
        1..=23 => fu.is_none().then(|| is_key(hdr)),
        STAPA_NALU_TYPE => {
            if fu.is_some() {
                return None;
            }
            let (mut off, mut count, mut key) = (1, 0, false);
            while off < p.len() {
                let len = <[u8; 2]>::try_from(p.get(off..off + 2)?).ok()?;
                let n = usize::from(u16::from_be_bytes(len));
                off += 2;
                let nal = p.get(off..off + n)?;
                let &h = nal.first()?;
                if !valid_nal(h) {
                    return None;
                }
                key |= is_key(h);
                off += n;
                count += 1;
            }
            (count > 0).then_some(key)
        }
        FUA_NALU_TYPE => {
            // rtc needs at least one fragment byte after the two header bytes.
            let &fh = p.get(1)?;
            if p.len() < 3 || !valid_nal(fh & NALU_TYPE_BITMASK) {
                return None;
            }
            let ty = fh & NALU_TYPE_BITMASK;
            let start = fh & FU_START_BITMASK != 0;
            if start {
                if fu.is_some() {
                    return None;
                }
            } else if *fu != Some(ty) {
                return None;
            }
            *fu = (fh & FU_END_BITMASK == 0).then_some(ty);
            Some(start && is_key(ty))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp::codec::h264::H264Payloader;
    use rtc::rtp::codec::vp8::Vp8Payloader;
    use rtc::rtp::packetizer::{Packetizer, Payloader, new_packetizer};
    use rtc::rtp::sequence::new_fixed_sequencer;
    use std::time::Instant;

    const MTU: usize = 1200;

    #[derive(Clone, Debug)]
    struct Pkt {
        seq: u16,
        ts: u32,
        marker: bool,
        payload: Bytes,
    }

    /// Packetizes frames with rtc's own packetizer; one packet list per frame.
    fn packetize(
        payloader: Box<dyn Payloader>,
        frames: &[Vec<u8>],
        first_seq: u16,
    ) -> Vec<Vec<Pkt>> {
        let now = Instant::now();
        let mut p = new_packetizer(
            now,
            MTU,
            96,
            0x1234,
            payloader,
            Box::new(new_fixed_sequencer(first_seq)),
            90_000,
        );
        frames
            .iter()
            .map(|f| {
                p.packetize(now, &Bytes::copy_from_slice(f), 3000)
                    .expect("packetize")
                    .into_iter()
                    .map(|pk| Pkt {
                        seq: pk.header.sequence_number,
                        ts: pk.header.timestamp,
                        marker: pk.header.marker,
                        payload: pk.payload,
                    })
                    .collect()
            })
            .collect()
    }

    fn h264(frames: &[Vec<u8>], first_seq: u16) -> Vec<Vec<Pkt>> {
        packetize(Box::new(H264Payloader::default()), frames, first_seq)
    }

    /// Bytes with no zero byte, so no accidental start code inside a NAL unit.
    fn body(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|i| ((i * 7 + seed) % 255 + 1) as u8).collect()
    }

    /// SPS + PPS + IDR slice as an Annex-B access unit.
    fn idr_au(len: usize) -> Vec<u8> {
        let mut v = vec![
            0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xec,
        ];
        v.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80]);
        v.extend_from_slice(&[0, 0, 0, 1, 0x65]);
        v.extend(body(len, 3));
        v
    }

    /// Non-IDR P slice as an Annex-B access unit.
    fn p_au(len: usize, seed: usize) -> Vec<u8> {
        let mut v = vec![0, 0, 0, 1, 0x41];
        v.extend(body(len, seed));
        v
    }

    fn feed<'a>(
        a: &mut FrameAssembler,
        pkts: impl IntoIterator<Item = &'a Pkt>,
    ) -> Vec<AssembledFrame> {
        pkts.into_iter()
            .flat_map(|p| a.push(p.seq, p.ts, p.marker, &p.payload))
            .collect()
    }

    fn h264_asm() -> FrameAssembler {
        FrameAssembler::new(RtpCodec::H264)
    }

    /// Keyframe of 5 000 bytes plus `n` P frames alternating between 800 (one packet) and
    /// 2 500 bytes (FU-A).
    fn stream(n: usize) -> Vec<Vec<u8>> {
        let mut v = vec![idr_au(5000)];
        v.extend((0..n).map(|i| p_au(if i % 2 == 0 { 800 } else { 2500 }, i)));
        v
    }

    #[test]
    fn mime_types_map_case_insensitively() {
        assert_eq!(RtpCodec::from_mime("video/h264"), RtpCodec::H264);
        assert_eq!(RtpCodec::from_mime("AUDIO/OPUS"), RtpCodec::Opus);
        assert_eq!(RtpCodec::from_mime("video/vp8"), RtpCodec::Vp8);
        assert_eq!(
            RtpCodec::from_mime("video/AV1"),
            RtpCodec::Other("video/AV1".into())
        );
    }

    #[test]
    fn h264_round_trip_is_byte_exact() {
        let frames = stream(2);
        let pkts = h264(&frames, 1000);
        // The keyframe really is STAP-A (SPS, PPS) followed by FU-A fragments.
        assert!(pkts[0].len() >= 5);
        assert_eq!(pkts[0][0].payload[0] & 0x1f, STAPA_NALU_TYPE);
        assert!(
            pkts[0][1..]
                .iter()
                .all(|p| p.payload[0] & 0x1f == FUA_NALU_TYPE)
        );
        assert_eq!(pkts[1].len(), 1);
        assert!(pkts[2].len() > 1);

        let mut a = h264_asm();
        let out = feed(&mut a, pkts.iter().flatten());
        assert_eq!(out.len(), 3);
        for (i, f) in out.iter().enumerate() {
            assert_eq!(f.data.as_ref(), frames[i].as_slice(), "frame {i}");
            assert_eq!(f.rtp_timestamp, pkts[i][0].ts);
            assert_eq!(f.keyframe, i == 0);
            assert!(!f.lost_before);
            assert!(!f.held_for_loss, "in order: nothing waited");
        }
        let n = pkts.iter().flatten().count() as u64;
        assert_eq!(
            a.stats(),
            AssemblerStats {
                packets: n,
                frames: 3,
                ..Default::default()
            }
        );
    }

    #[test]
    fn frames_are_delivered_as_soon_as_complete() {
        let pkts = h264(&stream(1), 7);
        let mut a = h264_asm();
        let (last, head) = pkts[0].split_last().expect("packets");
        assert!(feed(&mut a, head).is_empty());
        assert_eq!(feed(&mut a, [last]).len(), 1);
    }

    #[test]
    fn reordered_packets_within_window_are_used() {
        let frames = stream(4);
        let pkts = h264(&frames, 500);
        let flat: Vec<Pkt> = pkts.iter().flatten().cloned().collect();
        // First packet in place (it anchors the sequence), the rest reversed: 14 packets late.
        let mut order = vec![flat[0].clone()];
        order.extend(flat[1..].iter().rev().cloned());
        let mut a = h264_asm();
        let out = feed(&mut a, &order);
        let got: Vec<&[u8]> = out.iter().map(|f| f.data.as_ref()).collect();
        let want: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
        assert_eq!(got, want);
        assert!(out.iter().all(|f| !f.lost_before));
        assert_eq!(a.stats().lost_packets, 0);
        assert_eq!(a.stats().dropped_frames, 0);
    }

    #[test]
    fn late_retransmission_fills_the_gap() {
        let frames = stream(3);
        let pkts = h264(&frames, 42);
        let flat: Vec<Pkt> = pkts.iter().flatten().cloned().collect();
        let missing = 2; // a middle FU-A fragment of the keyframe
        let mut a = h264_asm();
        let early = feed(
            &mut a,
            flat.iter()
                .enumerate()
                .filter(|(i, _)| *i != missing)
                .map(|(_, p)| p),
        );
        assert!(early.is_empty(), "nothing may pass the gap");
        let out = feed(&mut a, [&flat[missing]]);
        assert_eq!(out.len(), frames.len());
        for (f, want) in out.iter().zip(&frames) {
            assert_eq!(f.data.as_ref(), want.as_slice());
            assert!(!f.lost_before);
            // All of them waited for the retransmission (for the playout: no path jitter).
            assert!(f.held_for_loss);
        }
        assert_eq!(a.stats().lost_packets, 0);
        // The next frame in order is on time again.
        let next = h264(
            &[p_au(800, 9)],
            flat.last().map_or(0, |p| p.seq.wrapping_add(1)),
        );
        let ts_ok: Vec<Pkt> = next[0]
            .iter()
            .map(|p| Pkt {
                ts: p.ts.wrapping_add(90_000),
                ..p.clone()
            })
            .collect();
        let after = feed(&mut a, &ts_ok);
        assert_eq!(after.len(), 1);
        assert!(!after[0].held_for_loss);
    }

    /// Feeds packets arriving `step` apart, starting at `t0`.
    fn feed_timed<'a>(
        a: &mut FrameAssembler,
        pkts: impl IntoIterator<Item = &'a Pkt>,
        t0: Instant,
        step: Duration,
    ) -> Vec<(usize, AssembledFrame)> {
        pkts.into_iter()
            .enumerate()
            .flat_map(|(i, p)| {
                a.push_at(p.seq, p.ts, p.marker, &p.payload, t0 + step * i as u32)
                    .into_iter()
                    .map(move |f| (i, f))
            })
            .collect()
    }

    #[test]
    fn a_gap_is_given_up_after_its_wait_even_at_a_low_frame_rate() {
        // A keyframe, then one-packet P frames arriving 100 ms apart (10 fps, a congested link):
        // the second P frame is lost and never retransmitted.
        let frames = stream(12);
        let pkts = h264(&frames, 100);
        let lost_frame = 3; // a one-packet P frame
        assert_eq!(pkts[lost_frame].len(), 1);
        let kept: Vec<Pkt> = pkts
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != lost_frame)
            .flat_map(|(_, f)| f.iter().cloned())
            .collect();
        let t0 = Instant::now();
        let mut a = h264_asm();
        let out = feed_timed(&mut a, &kept, t0, Duration::from_millis(100));
        // Frame counting alone would hold everything behind the gap for 8 frames (800 ms);
        // the wait gives it up at the first arrival 250 ms after the gap was seen.
        let first_after = out
            .iter()
            .find(|(_, f)| f.lost_before)
            .expect("a frame after the gap");
        let gap_seen_at = kept
            .iter()
            .position(|p| p.seq > pkts[lost_frame][0].seq)
            .expect("a packet past the gap");
        let waited = Duration::from_millis(100) * (first_after.0 - gap_seen_at) as u32;
        assert!(
            waited >= VIDEO_GAP_WAIT && waited < VIDEO_GAP_WAIT + Duration::from_millis(100),
            "given up after {waited:?}"
        );
        assert_eq!(a.stats().lost_packets, 1);

        // Without arrival times the frame bound still applies (the old behaviour).
        let mut b = h264_asm();
        let out = feed(&mut b, &kept);
        assert!(out.iter().any(|f| f.lost_before));
    }

    #[test]
    fn a_retransmission_within_the_wait_still_fills_the_gap() {
        let frames = stream(6);
        let pkts = h264(&frames, 7);
        let flat: Vec<Pkt> = pkts.iter().flatten().cloned().collect();
        let missing = 2;
        let t0 = Instant::now();
        let mut a = h264_asm();
        let step = Duration::from_millis(10);
        let rest: Vec<&Pkt> = flat
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != missing)
            .map(|(_, p)| p)
            .collect();
        let mut out = Vec::new();
        for (i, p) in rest.iter().enumerate() {
            out.extend(a.push_at(p.seq, p.ts, p.marker, &p.payload, t0 + step * i as u32));
        }
        assert!(
            out.is_empty(),
            "nothing passes the gap before its retransmission"
        );
        // The retransmission comes 200 ms after the gap opened: within the wait.
        let late = t0 + Duration::from_millis(200);
        let p = &flat[missing];
        out.extend(a.push_at(p.seq, p.ts, p.marker, &p.payload, late));
        assert_eq!(out.len(), frames.len());
        assert!(out.iter().all(|f| !f.lost_before));
        assert_eq!(a.stats().lost_packets, 0);
    }

    #[test]
    fn a_longer_round_trip_waits_longer_for_its_repair() {
        // One-packet P frames at 30 fps; frame 3 is lost and its repair (a second copy, the
        // first was lost too) arrives 370 ms after the gap was seen.
        let frames = stream(24);
        let pkts = h264(&frames, 100);
        let lost_frame = 3;
        assert_eq!(pkts[lost_frame].len(), 1);
        let run = |wait: Option<Duration>| {
            let mut a = h264_asm();
            if let Some(w) = wait {
                a.set_gap_wait(w);
            }
            let t0 = Instant::now();
            let step = Duration::from_millis(33);
            let mut out = Vec::new();
            let mut t = t0;
            for (i, f) in pkts.iter().enumerate() {
                if i == lost_frame {
                    t += step;
                    continue;
                }
                for p in f {
                    out.extend(a.push_at(p.seq, p.ts, p.marker, &p.payload, t));
                }
                t += step;
                if i == lost_frame + 12 {
                    let p = &pkts[lost_frame][0];
                    out.extend(a.push_at(
                        p.seq,
                        p.ts,
                        p.marker,
                        &p.payload,
                        t0 + step * 4 + Duration::from_millis(370),
                    ));
                }
            }
            (out, a.stats().lost_packets)
        };
        // The default wait (250 ms, 8 frames) gives the gap up: the frame is lost.
        let (out, lost) = run(None);
        assert_eq!(lost, 1);
        assert!(out.iter().any(|f| f.lost_before));
        // Two round trips of 150 ms (410 ms, 13 frames): the repair fills it.
        let (out, lost) = run(Some(Duration::from_millis(410)));
        assert_eq!(lost, 0);
        assert_eq!(out.len(), frames.len());
        assert!(out.iter().all(|f| !f.lost_before));
        assert!(out.iter().any(|f| f.held_for_loss));
    }

    #[test]
    fn duplicates_are_counted_and_ignored() {
        let frames = stream(3);
        let pkts = h264(&frames, 9);
        let flat: Vec<Pkt> = pkts.iter().flatten().cloned().collect();
        let mut a = h264_asm();
        // Each packet twice: the second copy of a frame's last packet hits the processed history,
        // the others hit the ring or the history.
        let doubled: Vec<&Pkt> = flat.iter().flat_map(|p| [p, p]).collect();
        let mut out = feed(&mut a, doubled);
        // A replay of the very first packet after everything was delivered.
        out.extend(feed(&mut a, [&flat[0]]));
        assert_eq!(out.len(), frames.len());
        for (f, want) in out.iter().zip(&frames) {
            assert_eq!(f.data.as_ref(), want.as_slice());
        }
        assert_eq!(a.stats().duplicates, flat.len() as u64 + 1);
        assert_eq!(a.stats().frames, frames.len() as u64);
        assert_eq!(a.stats().lost_packets, 0);
    }

    #[test]
    fn lost_middle_fua_drops_frame_and_flags_next() {
        let frames = stream(10);
        let pkts = h264(&frames, 100);
        let missing = &pkts[0][3];
        assert_eq!(missing.payload[0] & 0x1f, FUA_NALU_TYPE);
        assert_eq!(missing.payload[1] & 0xc0, 0, "a middle fragment");

        let mut a = h264_asm();
        let key: Vec<&Pkt> = pkts[0].iter().filter(|p| p.seq != missing.seq).collect();
        // The keyframe's own end plus 6 P frames: 7 frame ends past the gap, still waiting.
        let waiting = feed(&mut a, key.into_iter().chain(pkts[1..7].iter().flatten()));
        assert!(waiting.is_empty());
        // The 8th frame end gives the gap up.
        let mut out = feed(&mut a, &pkts[7]);
        assert_eq!(out.len(), 7);
        out.extend(feed(&mut a, pkts[8..].iter().flatten()));
        assert_eq!(out.len(), 10);
        for (i, f) in out.iter().enumerate() {
            assert_eq!(f.data.as_ref(), frames[i + 1].as_slice());
            assert_eq!(f.lost_before, i == 0);
            assert!(!f.keyframe);
        }
        let s = a.stats();
        assert_eq!((s.lost_packets, s.dropped_frames, s.frames), (1, 1, 10));
        // The retransmission now arrives too late: ignored, not a duplicate.
        assert!(feed(&mut a, [missing]).is_empty());
        assert_eq!(a.stats().duplicates, 0);
    }

    #[test]
    fn loss_of_a_frames_first_packet_drops_that_frame() {
        let frames = stream(12);
        let pkts = h264(&frames, 60_000);
        // P frame 2 (index 2) is FU-A: drop its start fragment.
        assert!(pkts[2].len() > 1);
        let missing = pkts[2][0].seq;
        let mut a = h264_asm();
        let out = feed(&mut a, pkts.iter().flatten().filter(|p| p.seq != missing));
        let got: Vec<&[u8]> = out.iter().map(|f| f.data.as_ref()).collect();
        let mut want: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
        want.remove(2);
        assert_eq!(got, want);
        assert_eq!(out.iter().filter(|f| f.lost_before).count(), 1);
        assert!(out[2].lost_before);
        assert_eq!(a.stats().dropped_frames, 1);
        assert_eq!(a.stats().malformed, 0, "a loss is not malformed input");
    }

    #[test]
    fn sequence_wraps_across_65535() {
        let frames = stream(4);
        let mut pkts: Vec<Pkt> = h264(&frames, 65_530).into_iter().flatten().collect();
        let seqs: Vec<u16> = pkts.iter().map(|p| p.seq).collect();
        let wrap = seqs.iter().position(|&s| s == 0).expect("stream crosses 0");
        assert_eq!(seqs[wrap - 1], 65_535);
        pkts.swap(wrap - 1, wrap); // 0 arrives before 65535
        let mut a = h264_asm();
        let out = feed(&mut a, &pkts);
        assert_eq!(out.len(), frames.len());
        for (f, want) in out.iter().zip(&frames) {
            assert_eq!(f.data.as_ref(), want.as_slice());
            assert!(!f.lost_before);
        }
        // A duplicate from before the wrap is recognised as such.
        let old = pkts.iter().find(|p| p.seq == 65_533).expect("65533");
        assert!(feed(&mut a, [old]).is_empty());
        assert_eq!(a.stats().duplicates, 1);
        assert_eq!(a.stats().lost_packets, 0);
    }

    #[test]
    fn timestamp_change_without_marker_ends_frame() {
        let frames = stream(2);
        let mut pkts = h264(&frames, 5);
        for p in pkts.iter_mut().flatten() {
            p.marker = false;
        }
        let mut a = h264_asm();
        assert!(
            feed(&mut a, &pkts[0]).is_empty(),
            "no marker: keyframe still open"
        );
        let out = feed(&mut a, &pkts[1]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data.as_ref(), frames[0].as_slice());
        assert!(out[0].keyframe);
        let out = feed(&mut a, &pkts[2][..1]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data.as_ref(), frames[1].as_slice());
        assert_eq!(a.stats().malformed, 0);
    }

    #[test]
    fn opus_packets_pass_through_in_order() {
        let mut a = FrameAssembler::new(RtpCodec::Opus);
        let pay = |i: u16| vec![0x78, i as u8, 0xaa];
        let ts = |i: u16| 960 * u32::from(i);
        let mut out = Vec::new();
        for i in [1u16, 2] {
            out.extend(a.push(i, ts(i), true, &pay(i)));
        }
        // 4 before 3: held; 3 arrives within the bound and both go out in order.
        assert!(a.push(4, ts(4), true, &pay(4)).is_empty());
        out.extend(a.push(3, ts(3), true, &pay(3)));
        // 5 lost for good: 6, 7 wait, 8 is the third packet past the gap.
        assert!(a.push(6, ts(6), true, &pay(6)).is_empty());
        assert!(a.push(7, ts(7), true, &pay(7)).is_empty());
        out.extend(a.push(8, ts(8), false, &pay(8)));
        let seqs: Vec<u16> = out.iter().map(|f| u16::from(f.data[1])).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 6, 7, 8]);
        for f in &out {
            let i = u16::from(f.data[1]);
            assert_eq!(f.data.as_ref(), pay(i).as_slice());
            assert_eq!(f.rtp_timestamp, ts(i));
            assert!(f.keyframe);
            assert_eq!(f.lost_before, i == 6);
        }
        assert_eq!(a.stats().lost_packets, 1);
        assert_eq!(a.stats().dropped_frames, 0);
    }

    #[test]
    fn other_codecs_pass_payloads_through() {
        let mut a = FrameAssembler::new(RtpCodec::from_mime("video/AV1"));
        let out = a.push(10, 77, false, &[1, 2, 3]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data.as_ref(), [1, 2, 3]);
        assert!(!out[0].keyframe);
    }

    #[test]
    fn vp8_round_trip_and_keyframe_bit() {
        // VP8 payload header: bit 0 (P) clear on a key frame.
        let mut key = vec![0x50, 0x9d, 0x01, 0x2a];
        key.extend(body(3000, 1));
        let mut inter = vec![0x31];
        inter.extend(body(1500, 2));
        let frames = vec![key, inter.clone(), inter];
        let mut payloader = Vp8Payloader::default();
        payloader.enable_picture_id = true;
        let pkts = packetize(Box::new(payloader), &frames, 65_534);
        assert!(pkts[0].len() > 1);
        let mut a = FrameAssembler::new(RtpCodec::Vp8);
        let out = feed(&mut a, pkts.iter().flatten());
        assert_eq!(out.len(), 3);
        for (i, f) in out.iter().enumerate() {
            assert_eq!(f.data.as_ref(), frames[i].as_slice());
            assert_eq!(f.keyframe, i == 0);
        }
    }

    #[test]
    fn garbage_and_empty_payloads_are_malformed_not_panics() {
        let bad: Vec<Vec<u8>> = vec![
            vec![0x00, 1, 2, 3],                      // NAL type 0
            vec![0x1f, 1, 2, 3],                      // type 31
            vec![0x1d, 0x85, 1, 2],                   // FU-B
            vec![0xc1, 1, 2, 3],                      // forbidden_zero_bit
            vec![0x18, 0x00, 0x02, 0x67, 0x42, 0x00], // STAP-A, truncated length field
            vec![0x18, 0x00, 0x09, 0x67, 0x42],       // STAP-A, NAL past the end
            vec![0x18],                               // STAP-A, nothing inside
            vec![0x7c, 0x05, 1, 2, 3],                // FU-A continuation without start
            vec![0x7c, 0x85],                         // FU-A without fragment bytes
            vec![0x7c],                               // FU-A, header cut
            vec![0x7c, 0x85, 1, 2, 3],                // FU-A start, frame ends before its end
        ];
        let mut a = h264_asm();
        let mut seq = 10u16;
        let mut out = Vec::new();
        for (i, p) in bad.iter().enumerate() {
            out.extend(a.push(seq, i as u32 * 3000, true, p));
            seq += 1;
        }
        // Empty inside an open frame damages it; empty between frames only counts.
        out.extend(a.push(seq, 90_000, false, &p_au(100, 1)[4..]));
        out.extend(a.push(seq + 1, 90_000, true, &[]));
        out.extend(a.push(seq + 2, 93_000, false, &[]));
        assert!(out.is_empty());
        let s = a.stats();
        assert_eq!(s.malformed, bad.len() as u64 + 2);
        assert_eq!(s.dropped_frames, bad.len() as u64 + 1);
        assert_eq!(s.lost_packets, 0);

        // A good keyframe afterwards is delivered, flagged.
        let frames = vec![idr_au(5000)];
        let pkts = h264(&frames, seq + 3);
        let out = feed(&mut a, pkts.iter().flatten());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data.as_ref(), frames[0].as_slice());
        assert!(out[0].lost_before && out[0].keyframe);

        let mut v = FrameAssembler::new(RtpCodec::Vp8);
        assert!(v.push(1, 0, true, &[0x90]).is_empty()); // X set, extension cut
        assert!(v.push(2, 1, true, &[]).is_empty());
        assert_eq!(v.stats().malformed, 2);

        let mut o = FrameAssembler::new(RtpCodec::Opus);
        assert!(o.push(1, 0, true, &[]).is_empty());
        let next = o.push(2, 960, true, &[0x78]);
        assert_eq!((o.stats().malformed, o.stats().dropped_frames), (1, 1));
        assert!(next[0].lost_before);
    }

    #[test]
    fn random_input_never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for codec in [RtpCodec::H264, RtpCodec::Vp8, RtpCodec::Opus] {
            let mut a = FrameAssembler::new(codec.clone());
            let mut seq = rnd() as u16;
            let mut delivered = 0u64;
            for _ in 0..20_000 {
                let r = rnd();
                seq = match r % 100 {
                    0 => rnd() as u16,                                // wild jump
                    1..=10 => seq.wrapping_sub((r >> 8) as u16 % 80), // late / duplicate
                    _ => seq.wrapping_add(1 + ((r >> 8) % 3) as u16),
                };
                let len = (rnd() % 40) as usize;
                let mut payload: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
                if codec == RtpCodec::H264 && r % 3 == 0 && !payload.is_empty() {
                    payload[0] = 0x7c; // more FU-A traffic
                }
                let ts = (r >> 32) as u32 % 4;
                for f in a.push(seq, ts, r & 1 == 0, &payload) {
                    delivered += 1;
                    assert!(!f.data.is_empty());
                    if codec == RtpCodec::H264 {
                        assert!(f.data.starts_with(&[0, 0, 0, 1]));
                    }
                }
            }
            assert_eq!(a.stats().frames, delivered);
            assert_eq!(a.stats().packets, 20_000);
        }
    }

    #[test]
    fn oversized_frame_is_dropped_as_malformed() {
        let frames = vec![idr_au(MAX_FRAME_BYTES + 1000), p_au(800, 0)];
        let pkts = h264(&frames, 1);
        let mut a = h264_asm();
        let out = feed(&mut a, pkts.iter().flatten());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data.as_ref(), frames[1].as_slice());
        assert!(out[0].lost_before);
        let s = a.stats();
        assert_eq!((s.malformed, s.dropped_frames, s.lost_packets), (1, 1, 0));
    }

    #[test]
    fn gap_beyond_the_window_is_lost_without_waiting_for_frame_ends() {
        // One keyframe of ~600 packets: no frame end until its last packet.
        let frames = vec![idr_au(700_000), p_au(800, 0)];
        let pkts = h264(&frames, 65_500);
        let key = &pkts[0];
        assert!(key.len() > REORDER_WINDOW + 2);
        let mut a = h264_asm();
        feed(&mut a, [&key[0]]);
        feed(&mut a, &key[2..REORDER_WINDOW + 1]);
        assert_eq!(
            a.stats().lost_packets,
            0,
            "511 packets past the gap: still waiting"
        );
        feed(&mut a, [&key[REORDER_WINDOW + 1]]);
        assert_eq!(a.stats().lost_packets, 1, "512 past the gap: given up");
        let out = feed(&mut a, key[REORDER_WINDOW + 2..].iter().chain(&pkts[1]));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data.as_ref(), frames[1].as_slice());
        assert!(out[0].lost_before);
        assert_eq!(a.stats().dropped_frames, 1);
    }

    #[test]
    fn joining_mid_frame_drops_that_frame() {
        let frames = stream(1);
        let pkts = h264(&frames, 300);
        let mut a = h264_asm();
        // Start at a middle FU-A fragment of the keyframe.
        let out = feed(&mut a, pkts[0][2..].iter().chain(&pkts[1]));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data.as_ref(), frames[1].as_slice());
        assert!(out[0].lost_before);
        assert_eq!(
            a.stats().malformed,
            0,
            "joining late is not the sender's fault"
        );
    }

    #[test]
    fn a_keyframe_head_reordered_behind_the_first_packets_is_used() {
        let frames = stream(1);
        let pkts = h264(&frames, 500);
        assert!(pkts[0].len() >= 3, "the keyframe spans packets");
        let mut a = h264_asm();
        // The SPS/PPS packet arrives second, then the rest of the keyframe and the next frame.
        let order = [&pkts[0][1], &pkts[0][0]]
            .into_iter()
            .chain(&pkts[0][2..])
            .chain(&pkts[1]);
        let out = feed(&mut a, order);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data.as_ref(), frames[0].as_slice());
        assert!(out[0].keyframe && !out[0].lost_before);
        assert_eq!(out[1].data.as_ref(), frames[1].as_slice());
        assert_eq!((a.stats().malformed, a.stats().duplicates), (0, 0));
    }

    #[test]
    fn no_rewind_once_the_first_frame_ended_or_for_another_frame() {
        let frames = stream(2);
        let pkts = h264(&frames, 500);
        // The SPS/PPS packet comes after the keyframe ended: too late, ignored (the frame went
        // out without it; the decoder's keyframe request recovers).
        let mut a = h264_asm();
        let out = feed(&mut a, pkts[0][1..].iter().chain(&pkts[1]));
        assert_eq!(out.len(), 2);
        assert_ne!(out[0].data.as_ref(), frames[0].as_slice());
        assert!(feed(&mut a, [&pkts[0][0]]).is_empty());
        let out = feed(&mut a, &pkts[2]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data.as_ref(), frames[2].as_slice());
        // A late packet of the frame before the first one (another timestamp) is only late:
        // the stream started at a frame head and stays there.
        let mut a = h264_asm();
        let out = feed(
            &mut a,
            pkts[1]
                .iter()
                .chain([pkts[0].last().expect("packet")])
                .chain(&pkts[2]),
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data.as_ref(), frames[1].as_slice());
        assert!(!out[0].lost_before && !out[1].lost_before);
    }

    #[test]
    fn far_jump_is_stray_once_and_a_restart_when_continued() {
        let frames = stream(1);
        let first = h264(&frames, 1000);
        let mut a = h264_asm();
        assert_eq!(feed(&mut a, first.iter().flatten()).len(), 2);
        let next = first[1][0].seq.wrapping_add(1);

        // One stray packet far ahead: ignored, the stream goes on.
        assert!(
            a.push(next.wrapping_add(20_000), 1, true, &p_au(10, 0)[4..])
                .is_empty()
        );
        let more = h264(&[p_au(800, 5)], next);
        let out = feed(&mut a, more.iter().flatten());
        assert_eq!(out.len(), 1);
        assert!(!out[0].lost_before);
        assert_eq!(a.stats().lost_packets, 0);

        // The sender renumbers: the first packet is held, the second confirms, nothing is lost.
        let renumbered = h264(&frames, next.wrapping_add(30_001));
        let out = feed(&mut a, renumbered.iter().flatten());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data.as_ref(), frames[0].as_slice());
        assert_eq!(out[1].data.as_ref(), frames[1].as_slice());
        assert!(!out[0].lost_before);
        let s = a.stats();
        assert_eq!((s.dropped_frames, s.lost_packets, s.frames), (0, 0, 5));
    }
}
