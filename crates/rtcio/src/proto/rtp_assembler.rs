//! TEMPORARY stub — replaced by the real assembler (branch asm).
use bytes::Bytes;
use rtc::rtp::packetizer::Depacketizer;

/// Codec of a received track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtpCodec {
    /// H.264
    H264,
    /// Opus
    Opus,
    /// VP8
    Vp8,
    /// Other
    Other(String),
}
impl RtpCodec {
    /// From MIME.
    pub fn from_mime(mime: &str) -> RtpCodec {
        match mime.to_ascii_lowercase().as_str() {
            "video/h264" => RtpCodec::H264,
            "audio/opus" => RtpCodec::Opus,
            "video/vp8" => RtpCodec::Vp8,
            _ => RtpCodec::Other(mime.to_string()),
        }
    }
}
/// Frame.
pub struct AssembledFrame {
    /// data
    pub data: Bytes,
    /// ts
    pub rtp_timestamp: u32,
    /// kf
    pub keyframe: bool,
    /// lost
    pub lost_before: bool,
}
/// Assembler.
pub struct FrameAssembler {
    codec: RtpCodec,
    h: rtc::rtp::codec::h264::H264Packet,
    buf: Vec<u8>,
    ts: Option<u32>,
    next: Option<u16>,
    lost: bool,
}
impl FrameAssembler {
    /// New.
    pub fn new(codec: RtpCodec) -> Self {
        FrameAssembler {
            codec,
            h: Default::default(),
            buf: Vec::new(),
            ts: None,
            next: None,
            lost: false,
        }
    }
    /// Push.
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Vec<AssembledFrame> {
        if let Some(n) = self.next {
            if n != seq {
                self.lost = true;
                self.buf.clear();
            }
        }
        self.next = Some(seq.wrapping_add(1));
        match self.codec {
            RtpCodec::H264 => {
                if self.ts != Some(timestamp) && !self.buf.is_empty() {
                    self.buf.clear();
                }
                self.ts = Some(timestamp);
                if let Ok(b) = self.h.depacketize(&Bytes::copy_from_slice(payload)) {
                    self.buf.extend_from_slice(&b);
                }
                if marker && !self.buf.is_empty() {
                    let data = Bytes::from(std::mem::take(&mut self.buf));
                    let keyframe = data
                        .windows(5)
                        .any(|w| w[..4] == [0, 0, 0, 1] && (w[4] & 0x1f) == 5);
                    let lost = std::mem::take(&mut self.lost);
                    return vec![AssembledFrame {
                        data,
                        rtp_timestamp: timestamp,
                        keyframe,
                        lost_before: lost,
                    }];
                }
                vec![]
            }
            _ => vec![AssembledFrame {
                data: Bytes::copy_from_slice(payload),
                rtp_timestamp: timestamp,
                keyframe: true,
                lost_before: std::mem::take(&mut self.lost),
            }],
        }
    }
}
