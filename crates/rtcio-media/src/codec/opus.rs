//! Opus through the system libopus: 48 kHz, 20 ms frames, in-band FEC and DTX on the encoder;
//! decoding with packet-loss concealment and FEC recovery.

use std::time::Duration;

use bytes::Bytes;
use opus::{Application, Bitrate, Channels};

use crate::error::{MediaError, Result};
use crate::frame::{
    AUDIO_FRAME_DURATION, AUDIO_FRAME_SAMPLES, AUDIO_SAMPLE_RATE, AudioFrame, EncodedFrame,
    MediaKind,
};

/// Largest Opus packet this crate produces or accepts.
const MAX_PACKET: usize = 1500;

/// Settings of an [`OpusEncoder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpusConfig {
    /// 1 (mono, the microphone default) or 2.
    pub channels: u16,
    /// Target bitrate in bits per second.
    pub bitrate_bps: u32,
    /// In-band forward error correction (the next packet carries a low-rate copy of this one).
    pub fec: bool,
    /// Discontinuous transmission: near-silent frames become tiny packets that are not sent.
    pub dtx: bool,
    /// Expected loss in percent; FEC only kicks in above 0.
    pub expected_loss_percent: u8,
    /// Encoder complexity 0-10.
    pub complexity: u8,
}

impl Default for OpusConfig {
    fn default() -> Self {
        Self {
            channels: 1,
            bitrate_bps: 32_000,
            fec: true,
            dtx: true,
            expected_loss_percent: 10,
            complexity: 9,
        }
    }
}

fn channels(n: u16) -> Result<Channels> {
    match n {
        1 => Ok(Channels::Mono),
        2 => Ok(Channels::Stereo),
        _ => Err(MediaError::InvalidInput(format!(
            "Opus supports 1 or 2 channels, got {n}"
        ))),
    }
}

fn enc_err(e: impl std::fmt::Display) -> MediaError {
    MediaError::codec("opus encoder", e)
}

fn dec_err(e: impl std::fmt::Display) -> MediaError {
    MediaError::codec("opus decoder", e)
}

/// Opus encoder taking 48 kHz PCM of any length and emitting one packet per 20 ms.
pub struct OpusEncoder {
    config: OpusConfig,
    encoder: opus::Encoder,
    pending: Vec<f32>,
    samples_encoded: u64,
    packets: u64,
    dtx_skipped: u64,
    out: Vec<u8>,
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("config", &self.config)
            .field("packets", &self.packets)
            .finish_non_exhaustive()
    }
}

impl OpusEncoder {
    /// Creates an encoder (VoIP application mode).
    pub fn new(config: OpusConfig) -> Result<Self> {
        let mut encoder = opus::Encoder::new(
            AUDIO_SAMPLE_RATE,
            channels(config.channels)?,
            Application::Voip,
        )
        .map_err(enc_err)?;
        encoder
            .set_bitrate(Bitrate::Bits(
                config.bitrate_bps.clamp(6_000, 510_000) as i32
            ))
            .map_err(enc_err)?;
        encoder.set_inband_fec(config.fec).map_err(enc_err)?;
        encoder
            .set_packet_loss_perc(i32::from(config.expected_loss_percent.min(100)))
            .map_err(enc_err)?;
        encoder.set_dtx(config.dtx).map_err(enc_err)?;
        encoder
            .set_complexity(i32::from(config.complexity.min(10)))
            .map_err(enc_err)?;
        Ok(Self {
            config,
            encoder,
            pending: Vec::new(),
            samples_encoded: 0,
            packets: 0,
            dtx_skipped: 0,
            out: vec![0; MAX_PACKET],
        })
    }

    /// Current settings.
    pub fn config(&self) -> OpusConfig {
        self.config
    }

    /// Packets produced so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// 20 ms frames not sent because DTX found them silent.
    pub fn dtx_skipped(&self) -> u64 {
        self.dtx_skipped
    }

    /// Changes the target bitrate.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<()> {
        let bps = bps.clamp(6_000, 510_000);
        self.encoder
            .set_bitrate(Bitrate::Bits(bps as i32))
            .map_err(enc_err)?;
        self.config.bitrate_bps = bps;
        Ok(())
    }

    /// Tells the encoder the loss the receivers report, which sizes its FEC.
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<()> {
        self.encoder
            .set_packet_loss_perc(i32::from(percent.min(100)))
            .map_err(enc_err)?;
        self.config.expected_loss_percent = percent;
        Ok(())
    }

    /// Appends PCM (48 kHz, the configured channel count) and encodes every complete 20 ms.
    /// Frames that DTX marks silent produce no packet (their time still advances).
    pub fn push(&mut self, frame: &AudioFrame) -> Result<Vec<EncodedFrame>> {
        if frame.sample_rate != AUDIO_SAMPLE_RATE || frame.channels != self.config.channels {
            return Err(MediaError::InvalidInput(format!(
                "Opus encoder wants {} Hz x {}, got {} Hz x {}",
                AUDIO_SAMPLE_RATE, self.config.channels, frame.sample_rate, frame.channels
            )));
        }
        self.pending.extend_from_slice(&frame.samples);
        let chunk = AUDIO_FRAME_SAMPLES * self.config.channels as usize;
        let mut out = Vec::new();
        let mut offset = 0;
        while self.pending.len() - offset >= chunk {
            let input = &self.pending[offset..offset + chunk];
            offset += chunk;
            let len = self
                .encoder
                .encode_float(input, &mut self.out)
                .map_err(enc_err)?;
            let timestamp = Duration::from_nanos(
                self.samples_encoded * 1_000_000_000 / u64::from(AUDIO_SAMPLE_RATE),
            );
            self.samples_encoded += AUDIO_FRAME_SAMPLES as u64;
            // libwebrtc's rule: a DTX packet of at most 2 bytes is not transmitted.
            if self.config.dtx && len <= 2 {
                self.dtx_skipped += 1;
                continue;
            }
            out.push(EncodedFrame {
                kind: MediaKind::Audio,
                data: Bytes::copy_from_slice(&self.out[..len]),
                timestamp,
                duration: AUDIO_FRAME_DURATION,
                keyframe: true,
                sequence: self.packets,
            });
            self.packets += 1;
        }
        self.pending.drain(..offset);
        Ok(out)
    }
}

/// Opus decoder to 48 kHz float PCM with concealment.
pub struct OpusDecoder {
    decoder: opus::Decoder,
    channels: u16,
    buffer: Vec<f32>,
    concealed: u64,
    recovered: u64,
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("channels", &self.channels)
            .field("concealed", &self.concealed)
            .finish_non_exhaustive()
    }
}

impl OpusDecoder {
    /// Creates a decoder with `channels` output channels (a mono stream decodes to both).
    pub fn new(channels: u16) -> Result<Self> {
        let decoder =
            opus::Decoder::new(AUDIO_SAMPLE_RATE, self::channels(channels)?).map_err(dec_err)?;
        Ok(Self {
            decoder,
            channels,
            // Up to 120 ms per packet.
            buffer: vec![0.0; 5760 * channels as usize],
            concealed: 0,
            recovered: 0,
        })
    }

    /// Output channel count.
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Frames synthesised by packet-loss concealment so far.
    pub fn concealed(&self) -> u64 {
        self.concealed
    }

    /// Frames recovered from in-band FEC so far.
    pub fn recovered(&self) -> u64 {
        self.recovered
    }

    fn frame(&self, samples: usize, timestamp: Duration) -> AudioFrame {
        AudioFrame {
            samples: self.buffer[..samples * self.channels as usize].to_vec(),
            channels: self.channels,
            sample_rate: AUDIO_SAMPLE_RATE,
            timestamp,
        }
    }

    /// Decodes one packet.
    pub fn decode(&mut self, packet: &[u8], timestamp: Duration) -> Result<AudioFrame> {
        if packet.is_empty() || packet.len() > MAX_PACKET * 4 {
            return Err(MediaError::InvalidInput(format!(
                "Opus packet of {} bytes",
                packet.len()
            )));
        }
        let n = self
            .decoder
            .decode_float(packet, &mut self.buffer, false)
            .map_err(dec_err)?;
        Ok(self.frame(n, timestamp))
    }

    /// Synthesises 20 ms for a lost packet (packet-loss concealment).
    pub fn conceal(&mut self, timestamp: Duration) -> Result<AudioFrame> {
        let len = AUDIO_FRAME_SAMPLES * self.channels as usize;
        let n = self
            .decoder
            .decode_float(&[], &mut self.buffer[..len], false)
            .map_err(dec_err)?;
        self.concealed += 1;
        Ok(self.frame(n, timestamp))
    }

    /// Recovers a lost 20 ms frame from the FEC data in the packet that followed it. Call it
    /// for the lost frame, then [`OpusDecoder::decode`] the following packet as usual.
    pub fn recover(&mut self, next_packet: &[u8], timestamp: Duration) -> Result<AudioFrame> {
        let len = AUDIO_FRAME_SAMPLES * self.channels as usize;
        let n = self
            .decoder
            .decode_float(next_packet, &mut self.buffer[..len], true)
            .map_err(dec_err)?;
        self.recovered += 1;
        Ok(self.frame(n, timestamp))
    }
}
