//! Ogg Opus files (RFC 7845): an encoded audio source for bots (packets go to the track as they
//! are, no decoding) and a writer for recordings.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ogg::{PacketReader, PacketWriteEndInfo, PacketWriter};

use crate::error::{MediaError, Result};
use crate::frame::{AUDIO_SAMPLE_RATE, EncodedFrame, MediaKind};
use crate::source::{EncodedSource, sleep_until};

fn ogg_err(e: ogg::OggReadError) -> MediaError {
    match e {
        ogg::OggReadError::ReadError(io) => MediaError::Io(io),
        other => MediaError::Format(other.to_string()),
    }
}

/// Reads Opus packets from an Ogg file.
pub struct OggOpusSource {
    path: std::path::PathBuf,
    reader: PacketReader<BufReader<File>>,
    channels: u8,
    pre_skip: u16,
    looping: bool,
    paced: bool,
    samples: u64,
    emitted: u64,
    start: Option<Instant>,
}

impl std::fmt::Debug for OggOpusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OggOpusSource")
            .field("path", &self.path)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

fn open_reader(path: &Path) -> Result<(PacketReader<BufReader<File>>, u8, u16)> {
    let mut reader = PacketReader::new(BufReader::new(File::open(path)?));
    let head = reader
        .read_packet()
        .map_err(ogg_err)?
        .ok_or_else(|| MediaError::Format("empty Ogg file".into()))?;
    let h = &head.data;
    if h.len() < 19 || &h[..8] != b"OpusHead" {
        return Err(MediaError::Format(
            "not an Ogg Opus file (no OpusHead)".into(),
        ));
    }
    let channels = h[9];
    let pre_skip = u16::from_le_bytes([h[10], h[11]]);
    if h[18] != 0 || !(1..=2).contains(&channels) {
        return Err(MediaError::Unsupported(format!(
            "Ogg Opus with {channels} channels / mapping family {}",
            h[18]
        )));
    }
    let tags = reader
        .read_packet()
        .map_err(ogg_err)?
        .ok_or_else(|| MediaError::Format("Ogg Opus without OpusTags".into()))?;
    if !tags.data.starts_with(b"OpusTags") {
        return Err(MediaError::Format(
            "second Ogg packet is not OpusTags".into(),
        ));
    }
    Ok((reader, channels, pre_skip))
}

impl OggOpusSource {
    /// Opens the file and checks its headers.
    pub fn open(path: impl AsRef<Path>, looping: bool, paced: bool) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let (reader, channels, pre_skip) = open_reader(&path)?;
        Ok(Self {
            path,
            reader,
            channels,
            pre_skip,
            looping,
            paced,
            samples: 0,
            emitted: 0,
            start: None,
        })
    }

    /// Channel count from the header.
    pub fn channels(&self) -> u8 {
        self.channels
    }

    /// Samples (at 48 kHz) the decoder should drop at the start.
    pub fn pre_skip(&self) -> u16 {
        self.pre_skip
    }
}

impl EncodedSource for OggOpusSource {
    fn next_frame(&mut self) -> Result<EncodedFrame> {
        let packet = match self.reader.read_packet().map_err(ogg_err)? {
            Some(p) => p,
            None if self.looping && self.emitted > 0 => {
                let (reader, _, _) = open_reader(&self.path)?;
                self.reader = reader;
                self.reader
                    .read_packet()
                    .map_err(ogg_err)?
                    .ok_or(MediaError::EndOfStream)?
            }
            None => return Err(MediaError::EndOfStream),
        };
        if packet.data.is_empty() {
            // The empty end-of-stream packet an empty recording ends with.
            return Err(MediaError::EndOfStream);
        }
        let samples = opus::packet::get_nb_samples(&packet.data, AUDIO_SAMPLE_RATE)
            .map_err(|e| MediaError::Format(format!("bad Opus packet: {e}")))?;
        let timestamp =
            Duration::from_nanos(self.samples * 1_000_000_000 / u64::from(AUDIO_SAMPLE_RATE));
        let duration =
            Duration::from_nanos(samples as u64 * 1_000_000_000 / u64::from(AUDIO_SAMPLE_RATE));
        if self.paced {
            let start = *self.start.get_or_insert_with(Instant::now);
            sleep_until(start + timestamp);
        }
        self.samples += samples as u64;
        let frame = EncodedFrame {
            kind: MediaKind::Audio,
            data: Bytes::from(packet.data),
            timestamp,
            duration,
            keyframe: true,
            sequence: self.emitted,
        };
        self.emitted += 1;
        Ok(frame)
    }
}

/// Writes Opus packets (e.g. [`crate::OpusEncoder`] output) to an Ogg Opus file.
pub struct OggOpusWriter {
    writer: PacketWriter<'static, BufWriter<File>>,
    serial: u32,
    granule: u64,
    pending: Option<Vec<u8>>,
}

impl std::fmt::Debug for OggOpusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OggOpusWriter")
            .field("granule", &self.granule)
            .finish_non_exhaustive()
    }
}

impl OggOpusWriter {
    /// Creates the file and writes the OpusHead and OpusTags headers.
    pub fn create(path: impl AsRef<Path>, channels: u8, pre_skip: u16) -> Result<Self> {
        let mut writer = PacketWriter::new(BufWriter::new(File::create(path)?));
        let serial = 0x7274_6369; // "rtci"
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1);
        head.push(channels);
        head.extend_from_slice(&pre_skip.to_le_bytes());
        head.extend_from_slice(&AUDIO_SAMPLE_RATE.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes());
        head.push(0);
        writer.write_packet(head, serial, PacketWriteEndInfo::EndPage, 0)?;
        let vendor = b"rtcio-media";
        let mut tags = Vec::new();
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&0u32.to_le_bytes());
        writer.write_packet(tags, serial, PacketWriteEndInfo::EndPage, 0)?;
        Ok(Self {
            writer,
            serial,
            granule: u64::from(pre_skip),
            pending: None,
        })
    }

    /// Appends one Opus packet.
    pub fn write(&mut self, packet: &[u8]) -> Result<()> {
        let samples = opus::packet::get_nb_samples(packet, AUDIO_SAMPLE_RATE)
            .map_err(|e| MediaError::InvalidInput(format!("bad Opus packet: {e}")))?;
        // Hold one packet back so the last one can end the stream.
        if let Some(prev) = self.pending.take() {
            self.writer.write_packet(
                prev,
                self.serial,
                PacketWriteEndInfo::NormalPacket,
                self.granule,
            )?;
        }
        self.granule += samples as u64;
        self.pending = Some(packet.to_vec());
        Ok(())
    }

    /// Ends the stream and flushes the file.
    pub fn finish(mut self) -> Result<()> {
        let last = self.pending.take().unwrap_or_default();
        self.writer.write_packet(
            last,
            self.serial,
            PacketWriteEndInfo::EndStream,
            self.granule,
        )?;
        self.writer.inner_mut().flush()?;
        Ok(())
    }
}
