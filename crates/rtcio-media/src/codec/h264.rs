//! H.264 through OpenH264 (built from source with nasm): a real-time encoder with constrained
//! baseline output and a decoder to I420 that waits for a keyframe after loss.

use std::time::Duration;

use bytes::Bytes;
use openh264::OpenH264API;
use openh264::decoder::Decoder;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    RateControlMode, UsageType,
};
use openh264::formats::{YUVSlices, YUVSource};
use tracing::{debug, warn};

use crate::codec::annexb;
use crate::error::{MediaError, Result};
use crate::frame::{
    EncodedFrame, I420Frame, MediaKind, RtpUnwrapper, VIDEO_CLOCK_RATE, pack_plane, valid_fps,
};

/// What the encoder is tuned for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContentHint {
    /// Camera or synthetic motion video.
    #[default]
    Camera,
    /// Screen sharing. OpenH264's screen-content mode ignored the bitrate target on this machine
    /// (see STACK.md), so this only changes the defaults the pipeline picks, not the usage type.
    Screen,
}

/// Settings of an [`H264Encoder`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct H264Config {
    /// Target bitrate in bits per second (changeable at run time).
    pub bitrate_bps: u32,
    /// Expected (maximum) frame rate.
    pub max_fps: f32,
    /// Periodic IDR interval in frames; 0 sends IDRs only on request (first frame, PLI, join).
    /// The default is 3 000 (100 s at 30 fps, libwebrtc's OpenH264 setting): receivers ask for
    /// a keyframe when they need one, and each IDR is several P-frames' worth of bytes at once —
    /// on a capped link a delay spike that raises the receiver's jitter delay, on a lossy one
    /// more packets to lose.
    pub keyframe_interval: u32,
    /// Encoder threads (1 leaves the second core to decoding on a 2-core machine).
    pub threads: u16,
    /// Maximum NAL unit size in bytes (`None`: one slice per picture; RTP packetization mode 1
    /// fragments large NAL units with FU-A anyway).
    pub max_nal_bytes: Option<u32>,
    /// Camera or screen.
    pub content: ContentHint,
}

impl Default for H264Config {
    fn default() -> Self {
        Self {
            bitrate_bps: 1_500_000,
            max_fps: 30.0,
            keyframe_interval: 3_000,
            threads: 1,
            max_nal_bytes: None,
            content: ContentHint::Camera,
        }
    }
}

fn enc_err(e: impl std::fmt::Display) -> MediaError {
    MediaError::codec("h264 encoder", e)
}

fn dec_err(e: impl std::fmt::Display) -> MediaError {
    MediaError::codec("h264 decoder", e)
}

/// OpenH264 encoder producing Annex-B access units.
///
/// Output: constrained baseline (`profile_idc` 66 with `constraint_set1`), one slice per picture
/// unless [`H264Config::max_nal_bytes`] is set, SPS + PPS before every IDR, frame skipping off
/// (`skip_frames(false)`), bitrate rate control.
pub struct H264Encoder {
    config: H264Config,
    encoder: Encoder,
    force_keyframe: bool,
    frames_encoded: u64,
    /// Running encoders replaced because openh264 refused a new setting.
    rebuilds: u64,
    last_timestamp: Option<Duration>,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for H264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Encoder")
            .field("config", &self.config)
            .field("frames_encoded", &self.frames_encoded)
            .finish_non_exhaustive()
    }
}

fn build_encoder(config: &H264Config) -> Result<Encoder> {
    if config.bitrate_bps < 10_000 || !valid_fps(config.max_fps, 240.0) {
        return Err(MediaError::InvalidInput(format!(
            "bitrate {} bps / fps {} out of range",
            config.bitrate_bps, config.max_fps
        )));
    }
    let mut cfg = EncoderConfig::new()
        .bitrate(BitRate::from_bps(config.bitrate_bps))
        .max_frame_rate(FrameRate::from_hz(config.max_fps))
        .skip_frames(false)
        .rate_control_mode(RateControlMode::Bitrate)
        .usage_type(UsageType::CameraVideoRealTime)
        .profile(Profile::Baseline)
        .intra_frame_period(IntraFramePeriod::from_num_frames(config.keyframe_interval))
        .num_threads(config.threads)
        .background_detection(false)
        .scene_change_detect(false);
    if let Some(max) = config.max_nal_bytes {
        cfg = cfg.max_slice_len(max);
    }
    Encoder::with_api_config(OpenH264API::from_source(), cfg).map_err(enc_err)
}

/// Which of a layer's two rates [`H264Encoder::set_bitrate`] sets.
#[derive(Clone, Copy, Debug)]
enum MaxOrTarget {
    Max,
    Target,
}

impl H264Encoder {
    /// Creates an encoder; the picture size is taken from the first frame (and may change later,
    /// which re-initialises the encoder and starts with an IDR).
    pub fn new(config: H264Config) -> Result<Self> {
        let encoder = build_encoder(&config)?;
        Ok(Self {
            config,
            encoder,
            force_keyframe: false,
            frames_encoded: 0,
            rebuilds: 0,
            last_timestamp: None,
            buffer: Vec::with_capacity(256 * 1024),
        })
    }

    /// Current settings.
    pub fn config(&self) -> H264Config {
        self.config
    }

    /// Frames passed to the codec so far (the fan-out test counts encodes with it).
    pub fn frames_encoded(&self) -> u64 {
        self.frames_encoded
    }

    /// Replaces the codec with a new one at the current settings (after an encode error); the
    /// next frame is an IDR.
    pub fn rebuild(&mut self) -> Result<()> {
        self.encoder = build_encoder(&self.config)?;
        self.rebuilds += 1;
        Ok(())
    }

    /// Times a running encoder was rebuilt: openh264 refused a new bitrate, or
    /// [`H264Encoder::rebuild`] (each rebuild starts again with an IDR).
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    /// Makes the next encoded frame an IDR. Several requests before the next frame give one IDR.
    pub fn request_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    /// Changes the target bitrate without a keyframe.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<()> {
        let bps = bps.clamp(30_000, 50_000_000);
        let old = self.config.bitrate_bps;
        if bps == old {
            return Ok(());
        }
        self.config.bitrate_bps = bps;
        if self.frames_encoded == 0 {
            // Not initialised yet: rebuild with the new settings.
            self.encoder = build_encoder(&self.config)?;
            return Ok(());
        }
        // The encoder is built with its layer's maximum equal to the target, and openh264
        // refuses a target above the maximum: raising it alone failed on every increase, and
        // each failure rebuilt the encoder (an IDR every 250 ms while the estimate ramped up).
        // So the maximum moves first on the way up and last on the way down, staying equal to
        // the target as at construction.
        let steps = if bps > old {
            [MaxOrTarget::Max, MaxOrTarget::Target]
        } else {
            [MaxOrTarget::Target, MaxOrTarget::Max]
        };
        let mut failed = None;
        for step in steps {
            let rc = self.set_rate_option(step, bps);
            if rc != 0 {
                failed = Some((step, rc));
                break;
            }
        }
        if let Some((step, rc)) = failed {
            // openh264 may still refuse a change on a running encoder. Ending the video for
            // that would be far worse than one keyframe: rebuild with the new settings instead.
            debug!(bps, rc, ?step, "openh264 refused a new bitrate: rebuilt");
            self.encoder = build_encoder(&self.config)?;
            self.rebuilds += 1;
            return Ok(());
        }
        debug!(bps, "h264 bitrate changed");
        Ok(())
    }

    /// Sets the single spatial layer's target or maximum bitrate; openh264's return code.
    fn set_rate_option(&mut self, which: MaxOrTarget, bps: u32) -> i32 {
        let option = match which {
            MaxOrTarget::Max => openh264_sys2::ENCODER_OPTION_MAX_BITRATE,
            MaxOrTarget::Target => openh264_sys2::ENCODER_OPTION_BITRATE,
        };
        let mut info = openh264_sys2::SBitrateInfo {
            iLayer: openh264_sys2::SPATIAL_LAYER_0,
            iBitrate: bps as i32,
        };
        // SAFETY: the encoder is initialised (a frame was encoded), both option ids take a
        // pointer to an `SBitrateInfo`, and `info` lives for the duration of the call.
        unsafe {
            self.encoder
                .raw_api()
                .set_option(option, (&raw mut info).cast())
        }
    }

    /// Changes the expected frame rate (rate control budget per frame) without a keyframe.
    pub fn set_frame_rate(&mut self, fps: f32) -> Result<()> {
        if !valid_fps(fps, 120.0) {
            return Err(MediaError::InvalidInput(format!("frame rate {fps}")));
        }
        self.config.max_fps = fps;
        if self.frames_encoded == 0 {
            self.encoder = build_encoder(&self.config)?;
            return Ok(());
        }
        let mut value: f32 = fps;
        // SAFETY: as in `set_bitrate`; ENCODER_OPTION_FRAME_RATE takes a pointer to a float.
        let rc = unsafe {
            self.encoder.raw_api().set_option(
                openh264_sys2::ENCODER_OPTION_FRAME_RATE,
                (&raw mut value).cast(),
            )
        };
        if rc != 0 {
            return Err(enc_err(format!("set frame rate to {fps} failed ({rc})")));
        }
        Ok(())
    }

    /// Encodes one frame. Returns `None` only if the codec produced no output for it.
    pub fn encode(&mut self, frame: &I420Frame) -> Result<Option<EncodedFrame>> {
        frame.validate()?;
        if self.force_keyframe && self.frames_encoded > 0 {
            self.encoder.force_intra_frame();
        }
        self.force_keyframe = false;
        let source = YUVSlices::new(
            (&frame.y, &frame.u, &frame.v),
            (frame.width as usize, frame.height as usize),
            (frame.stride_y, frame.stride_u, frame.stride_v),
        );
        let ts = openh264::Timestamp::from_millis(frame.timestamp.as_millis() as u64);
        let bitstream = self.encoder.encode_at(&source, ts).map_err(enc_err)?;
        self.frames_encoded += 1;
        let frame_type = bitstream.frame_type();
        self.buffer.clear();
        bitstream.write_vec(&mut self.buffer);
        if self.buffer.is_empty() || frame_type == FrameType::Skip {
            warn!("h264 encoder produced no output for a frame");
            return Ok(None);
        }
        let nominal = Duration::from_secs_f64(1.0 / f64::from(self.config.max_fps));
        let duration = match self.last_timestamp {
            Some(prev) if frame.timestamp > prev => frame.timestamp - prev,
            _ => nominal,
        };
        self.last_timestamp = Some(frame.timestamp);
        let keyframe = matches!(frame_type, FrameType::IDR | FrameType::I)
            && annexb::contains_idr(&self.buffer);
        Ok(Some(EncodedFrame {
            kind: MediaKind::Video,
            data: Bytes::copy_from_slice(&self.buffer),
            timestamp: frame.timestamp,
            duration,
            keyframe,
            sequence: self.frames_encoded - 1,
        }))
    }
}

/// OpenH264 decoder from Annex-B access units to I420.
///
/// After creation, a decode error or [`H264Decoder::packet_lost`], delta frames are dropped
/// until an IDR arrives ([`H264Decoder::needs_keyframe`] tells the caller to send a PLI), so a
/// loss freezes the picture instead of smearing it.
pub struct H264Decoder {
    decoder: Decoder,
    unwrapper: RtpUnwrapper,
    first_rtp: Option<u64>,
    waiting_for_keyframe: bool,
    frames_decoded: u64,
    frames_dropped: u64,
}

impl std::fmt::Debug for H264Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Decoder")
            .field("waiting_for_keyframe", &self.waiting_for_keyframe)
            .field("frames_decoded", &self.frames_decoded)
            .finish_non_exhaustive()
    }
}

impl H264Decoder {
    /// Creates a decoder.
    pub fn new() -> Result<Self> {
        Ok(Self {
            decoder: Decoder::new().map_err(dec_err)?,
            unwrapper: RtpUnwrapper::new(),
            first_rtp: None,
            waiting_for_keyframe: true,
            frames_decoded: 0,
            frames_dropped: 0,
        })
    }

    /// True while the decoder waits for an IDR (send a PLI).
    pub fn needs_keyframe(&self) -> bool {
        self.waiting_for_keyframe
    }

    /// Frames decoded so far.
    pub fn frames_decoded(&self) -> u64 {
        self.frames_decoded
    }

    /// Access units dropped while waiting for a keyframe.
    pub fn frames_dropped(&self) -> u64 {
        self.frames_dropped
    }

    /// Tells the decoder that an access unit was lost (RTP sequence gap): delta frames are
    /// dropped until the next IDR.
    pub fn packet_lost(&mut self) {
        self.waiting_for_keyframe = true;
    }

    /// Decodes one access unit carrying RTP timestamp `rtp_timestamp` (90 kHz). The returned
    /// frame's timestamp counts from the first access unit seen.
    pub fn decode(&mut self, access_unit: &[u8], rtp_timestamp: u32) -> Result<Option<I420Frame>> {
        if access_unit.is_empty() {
            return Ok(None);
        }
        let ext = self.unwrapper.unwrap(rtp_timestamp);
        let first = *self.first_rtp.get_or_insert(ext);
        if self.waiting_for_keyframe {
            if !annexb::contains_idr(access_unit) {
                self.frames_dropped += 1;
                return Ok(None);
            }
            self.waiting_for_keyframe = false;
        }
        let timestamp = Duration::from_nanos(
            ext.saturating_sub(first) * 1_000_000_000 / u64::from(VIDEO_CLOCK_RATE),
        );
        let decoded = match self.decoder.decode(access_unit) {
            Ok(d) => d,
            Err(e) => {
                self.waiting_for_keyframe = true;
                return Err(dec_err(e));
            }
        };
        let Some(yuv) = decoded else {
            return Ok(None);
        };
        let (w, h) = yuv.dimensions();
        let (sy, su, sv) = yuv.strides();
        if w == 0 || h == 0 || !w.is_multiple_of(2) || !h.is_multiple_of(2) {
            self.waiting_for_keyframe = true;
            return Err(dec_err(format!("decoded odd or empty size {w}x{h}")));
        }
        let frame = I420Frame {
            width: w as u32,
            height: h as u32,
            y: pack_plane(yuv.y(), sy, w, h),
            u: pack_plane(yuv.u(), su, w / 2, h / 2),
            v: pack_plane(yuv.v(), sv, w / 2, h / 2),
            stride_y: w,
            stride_u: w / 2,
            stride_v: w / 2,
            timestamp,
        };
        frame.validate()?;
        self.frames_decoded += 1;
        Ok(Some(frame))
    }
}
