//! Receive-side audio: one [`RemoteAudio`] per peer (jitter buffer + Opus decoder with PLC and
//! FEC) and an [`AudioMixer`] that sums every peer into one 20 ms, 48 kHz output frame.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, warn};

use crate::apm::RenderTap;
use crate::codec::opus::OpusDecoder;
use crate::error::Result;
use crate::frame::{AUDIO_FRAME_SAMPLES, AUDIO_SAMPLE_RATE, AudioFrame};
use crate::level::AudioLevel;
use crate::playout::jitter::{JitterBuffer, JitterConfig, JitterStats, Playout, PushOutcome};

/// One remote peer's audio stream: packets in, 20 ms PCM frames out.
#[derive(Debug)]
pub struct RemoteAudio {
    jitter: JitterBuffer<Bytes>,
    decoder: OpusDecoder,
    channels: u16,
    first_ts: Option<u64>,
    playing_ts: Option<u64>,
    level: AudioLevel,
    gain: f32,
    decode_errors: u64,
}

impl RemoteAudio {
    /// A stream decoded to `channels` channels with the given jitter settings.
    pub fn new(channels: u16, jitter: JitterConfig) -> Result<Self> {
        Ok(Self {
            jitter: JitterBuffer::new(jitter),
            decoder: OpusDecoder::new(channels)?,
            channels,
            first_ts: None,
            playing_ts: None,
            level: AudioLevel::default(),
            gain: 1.0,
            decode_errors: 0,
        })
    }

    /// Adds a depacketized Opus packet with its RTP timestamp.
    pub fn push(&mut self, rtp_timestamp: u32, packet: Bytes, arrival: Instant) -> PushOutcome {
        self.jitter.push(rtp_timestamp, packet, arrival)
    }

    /// Jitter buffer counters.
    pub fn stats(&self) -> JitterStats {
        self.jitter.stats()
    }

    /// Frames concealed by the decoder / recovered through FEC.
    pub fn concealment(&self) -> (u64, u64) {
        (self.decoder.concealed(), self.decoder.recovered())
    }

    /// Current jitter buffer delay.
    pub fn delay(&self) -> Duration {
        self.jitter.buffered_delay()
    }

    /// Level of the last frame produced.
    pub fn level(&self) -> AudioLevel {
        self.level
    }

    /// Playback gain (1.0 = unchanged, 0.0 = muted).
    pub fn set_gain(&mut self, gain: f32) {
        self.gain = gain.clamp(0.0, 4.0);
    }

    /// Delays this stream by `extra` on top of its jitter target (lip sync: the audio waits for
    /// its video), taken in gradually and bounded (see [`JitterBuffer::set_extra_delay`]).
    pub fn set_extra_delay(&mut self, extra: Duration) {
        self.jitter.set_extra_delay(extra);
    }

    /// The extra delay in effect now.
    pub fn extra_delay(&self) -> Duration {
        self.jitter.extra_delay()
    }

    /// Extended RTP timestamp of the frame last played (for A/V sync).
    pub fn playing_rtp(&self) -> Option<u64> {
        self.playing_ts
    }

    fn timestamp_of(&mut self, ts: u64) -> Duration {
        let first = *self.first_ts.get_or_insert(ts);
        Duration::from_nanos(
            ts.saturating_sub(first) * 1_000_000_000 / u64::from(AUDIO_SAMPLE_RATE),
        )
    }

    fn silence(&self, timestamp: Duration) -> AudioFrame {
        AudioFrame::silence(
            AUDIO_FRAME_SAMPLES,
            self.channels,
            AUDIO_SAMPLE_RATE,
            timestamp,
        )
    }

    /// Produces the next 20 ms: decoded, recovered from FEC, concealed, or silence while
    /// buffering. Decoder errors are logged and concealed, never returned.
    pub fn next_frame(&mut self) -> AudioFrame {
        let mut frame = match self.jitter.pop() {
            Playout::Buffering => {
                self.playing_ts = None;
                self.silence(Duration::ZERO)
            }
            Playout::Packet { timestamp, payload } => {
                self.playing_ts = Some(timestamp);
                let t = self.timestamp_of(timestamp);
                match self.decoder.decode(&payload, t) {
                    Ok(f) => f,
                    Err(e) => {
                        self.decode_errors += 1;
                        warn!(error = %e, "opus packet failed to decode, concealing");
                        self.decoder.conceal(t).unwrap_or_else(|_| self.silence(t))
                    }
                }
            }
            Playout::Lost { timestamp, next } => {
                self.playing_ts = Some(timestamp);
                let t = self.timestamp_of(timestamp);
                let recovered = match next {
                    Some(next) => self.decoder.recover(&next, t),
                    None => self.decoder.conceal(t),
                };
                recovered.unwrap_or_else(|e| {
                    debug!(error = %e, "concealment failed, playing silence");
                    self.silence(t)
                })
            }
        };
        // Packets longer than 20 ms are not produced by this crate; keep the clock exact.
        frame
            .samples
            .resize(AUDIO_FRAME_SAMPLES * self.channels as usize, 0.0);
        if self.gain != 1.0 {
            for s in &mut frame.samples {
                *s *= self.gain;
            }
        }
        self.level = AudioLevel::measure(&frame);
        frame
    }
}

/// Mixes every remote peer's audio into one output stream (48 kHz, 20 ms frames).
#[derive(Debug)]
pub struct AudioMixer {
    channels: u16,
    jitter: JitterConfig,
    peers: BTreeMap<String, RemoteAudio>,
    frames_mixed: u64,
    render_tap: Option<RenderTap>,
}

impl AudioMixer {
    /// A mixer producing `channels` output channels (1 or 2).
    pub fn new(channels: u16) -> Self {
        Self::with_jitter(channels, JitterConfig::default())
    }

    /// A mixer whose peers use the given jitter buffer settings.
    pub fn with_jitter(channels: u16, jitter: JitterConfig) -> Self {
        Self {
            channels: channels.clamp(1, 2),
            jitter,
            peers: BTreeMap::new(),
            frames_mixed: 0,
            render_tap: None,
        }
    }

    /// Hands every mixed frame, as it leaves for the output, to an echo canceller's far-end
    /// input (the tap's processor must have this mixer's channel count). `None` detaches.
    pub fn set_render_tap(&mut self, tap: Option<RenderTap>) {
        self.render_tap = tap;
    }

    /// Output channels.
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Adds a peer (no-op if present).
    pub fn add_peer(&mut self, peer: &str) -> Result<()> {
        if !self.peers.contains_key(peer) {
            let remote = RemoteAudio::new(self.channels, self.jitter)?;
            self.peers.insert(peer.to_owned(), remote);
        }
        Ok(())
    }

    /// Removes a peer.
    pub fn remove_peer(&mut self, peer: &str) {
        self.peers.remove(peer);
    }

    /// Peer ids.
    pub fn peers(&self) -> impl Iterator<Item = &str> {
        self.peers.keys().map(String::as_str)
    }

    /// A peer's stream (levels, stats, gain).
    pub fn peer(&mut self, peer: &str) -> Option<&mut RemoteAudio> {
        self.peers.get_mut(peer)
    }

    /// Adds a packet from `peer`, adding the peer on first sight.
    pub fn push(
        &mut self,
        peer: &str,
        rtp_timestamp: u32,
        packet: Bytes,
        arrival: Instant,
    ) -> Result<PushOutcome> {
        self.add_peer(peer)?;
        match self.peers.get_mut(peer) {
            Some(remote) => Ok(remote.push(rtp_timestamp, packet, arrival)),
            None => Ok(PushOutcome::Late),
        }
    }

    /// Produces the next 20 ms of mixed output (silence with no peers).
    pub fn mix_next(&mut self) -> AudioFrame {
        let len = AUDIO_FRAME_SAMPLES * self.channels as usize;
        let timestamp = Duration::from_millis(self.frames_mixed * 20);
        self.frames_mixed += 1;
        let mut mix = vec![0.0f32; len];
        for remote in self.peers.values_mut() {
            let frame = remote.next_frame();
            for (m, s) in mix.iter_mut().zip(&frame.samples) {
                *m += s;
            }
        }
        for m in &mut mix {
            *m = m.clamp(-1.0, 1.0);
        }
        // What the speaker is about to play is the echo the microphone will hear. A full
        // queue means the capture side is not running: that frame is dropped there.
        if let Some(tap) = &self.render_tap {
            tap.push(&mix);
        }
        AudioFrame {
            samples: mix,
            channels: self.channels,
            sample_rate: AUDIO_SAMPLE_RATE,
            timestamp,
        }
    }
}
