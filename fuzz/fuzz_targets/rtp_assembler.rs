//! RTP packets of a received track (any sequence numbers, timestamps, markers and payloads, in
//! any order) through the frame assembler: H.264 (single NAL, STAP-A, FU-A), Opus, VP8.
//!
//! Input: one codec byte, then records `seq:u16 ts_delta:u8 flags:u8 len:u8 payload[len]`
//! (flags bit 0 = marker, bits 1..7 = milliseconds of arrival time since the previous packet).
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rtcio_fuzz::proto::rtp_assembler::{FrameAssembler, MAX_FRAME_BYTES, RtpCodec};

fuzz_target!(|data: &[u8]| {
    let Some((&codec, mut rest)) = data.split_first() else {
        return;
    };
    let codec = match codec % 4 {
        0 => RtpCodec::H264,
        1 => RtpCodec::Opus,
        2 => RtpCodec::Vp8,
        _ => RtpCodec::from_mime("video/AV1"),
    };
    let h264 = codec == RtpCodec::H264;
    let mut asm = FrameAssembler::new(codec);
    let mut now = Instant::now();
    let (mut ts, mut pushed, mut bytes_in, mut bytes_out, mut frames) =
        (0u32, 0u64, 0usize, 0usize, 0u64);
    while rest.len() >= 5 {
        let seq = u16::from_be_bytes([rest[0], rest[1]]);
        ts = ts.wrapping_add(u32::from(rest[2]) * 1500);
        let flags = rest[3];
        let len = usize::from(rest[4]).min(rest.len() - 5);
        let payload = &rest[5..5 + len];
        rest = &rest[5 + len..];
        now += Duration::from_millis(u64::from(flags >> 1));
        let out = asm.push_at(seq, ts, flags & 1 == 1, payload, now);
        pushed += 1;
        bytes_in += len;
        for f in out {
            frames += 1;
            assert!(f.data.len() <= MAX_FRAME_BYTES);
            if h264 {
                assert!(f.data.is_empty() || f.data.starts_with(&[0, 0, 0, 1]));
            }
            bytes_out += f.data.len();
        }
    }
    let stats = asm.stats();
    assert_eq!(stats.packets, pushed);
    assert_eq!(stats.frames, frames);
    // Depacketizing adds at most a start code per NAL unit (STAP-A: 2-byte sizes become 4-byte
    // start codes; FU-A: 2 header bytes become 1 plus a start code), so output stays linear.
    assert!(
        bytes_out <= 2 * bytes_in + 8 * pushed as usize,
        "{bytes_out} bytes out of {bytes_in} in {pushed} packets"
    );
});
