//! `--record DIR`: each remote track to a playable file — H.264 as a raw Annex-B elementary
//! stream (`.h264`, starting at the first IDR so every decoder can open it; plays with ffplay /
//! mpv / VLC), Opus as Ogg Opus (`.opus`, RFC 7845).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rtcio::{MediaFrame, MediaKind, RtpCodec};
use rtcio_media::file::ogg_opus::OggOpusWriter;

/// libopus's encoder look-ahead at 48 kHz: what players skip at the start.
const OPUS_PRE_SKIP: u16 = 312;

enum Sink {
    None,
    H264(BufWriter<File>),
    Opus(OggOpusWriter),
}

/// Writes one remote track; the file is created with the first frame it can start with.
pub struct Recorder {
    path_stem: PathBuf,
    sink: Sink,
    /// Frames that could not start a file (video before the first IDR, other codecs).
    pub skipped: u64,
}

/// Keeps letters, digits, `-` and `_` (peer and stream ids become file names).
pub fn sanitize(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if t.is_empty() { "_".into() } else { t }
}

/// Channels an Opus packet is coded with (the TOC byte's stereo flag).
pub fn opus_channels(packet: &[u8]) -> u16 {
    match packet.first() {
        Some(toc) if toc & 0x04 != 0 => 2,
        _ => 1,
    }
}

impl Recorder {
    /// `<dir>/<peer>-<stream>-<kind>-<mid>.<ext>`.
    pub fn new(dir: &Path, peer: &str, stream: &str, kind: &str, mid: &str) -> Recorder {
        let name = format!(
            "{}-{}-{}-{}",
            sanitize(peer),
            sanitize(stream),
            kind,
            sanitize(mid)
        );
        Recorder {
            path_stem: dir.join(name),
            sink: Sink::None,
            skipped: 0,
        }
    }

    /// Appends a frame. Returns the file's path when this frame created it.
    pub fn write(
        &mut self,
        frame: &MediaFrame,
        kind: MediaKind,
    ) -> std::io::Result<Option<String>> {
        match &mut self.sink {
            Sink::H264(w) => {
                w.write_all(&frame.data)?;
                Ok(None)
            }
            Sink::Opus(w) => {
                w.write(&frame.data).map_err(std::io::Error::other)?;
                Ok(None)
            }
            Sink::None => match (kind, &frame.codec) {
                (MediaKind::Video, RtpCodec::H264) if frame.keyframe => {
                    let path = self.path_stem.with_extension("h264");
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    let mut w = BufWriter::new(File::create(&path)?);
                    w.write_all(&frame.data)?;
                    self.sink = Sink::H264(w);
                    Ok(Some(path.display().to_string()))
                }
                (MediaKind::Audio, RtpCodec::Opus) => {
                    let path = self.path_stem.with_extension("opus");
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    let mut w = OggOpusWriter::create(
                        &path,
                        opus_channels(&frame.data) as u8,
                        OPUS_PRE_SKIP,
                    )
                    .map_err(std::io::Error::other)?;
                    w.write(&frame.data).map_err(std::io::Error::other)?;
                    self.sink = Sink::Opus(w);
                    Ok(Some(path.display().to_string()))
                }
                _ => {
                    self.skipped += 1;
                    Ok(None)
                }
            },
        }
    }

    /// Flushes and closes the file (an Ogg stream gets its end-of-stream page).
    pub fn finish(self) -> std::io::Result<()> {
        match self.sink {
            Sink::None => Ok(()),
            Sink::H264(mut w) => w.flush(),
            Sink::Opus(w) => w.finish().map_err(std::io::Error::other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Instant;

    fn frame(data: Vec<u8>, codec: RtpCodec, keyframe: bool) -> MediaFrame {
        MediaFrame {
            data: Bytes::from(data),
            rtp_timestamp: 0,
            codec,
            keyframe,
            lost_before: false,
            held_for_loss: false,
            received: Instant::now(),
        }
    }

    #[test]
    fn names_and_channels() {
        assert_eq!(sanitize("a/b:c..d"), "a_b_c__d");
        assert_eq!(sanitize(""), "_");
        assert_eq!(opus_channels(&[0x04]), 2);
        assert_eq!(opus_channels(&[0xfc]), 2);
        assert_eq!(opus_channels(&[0x78]), 1);
        assert_eq!(opus_channels(&[]), 1);
    }

    #[test]
    fn video_starts_at_the_first_idr() {
        let dir = std::env::temp_dir().join(format!("rtcio-rec-{}", std::process::id()));
        let mut r = Recorder::new(&dir, "peer/1", "s", "video", "0");
        let delta = frame(vec![0, 0, 0, 1, 0x41, 1], RtpCodec::H264, false);
        let idr = frame(vec![0, 0, 0, 1, 0x65, 2], RtpCodec::H264, true);
        assert_eq!(r.write(&delta, MediaKind::Video).expect("write"), None);
        let path = r
            .write(&idr, MediaKind::Video)
            .expect("write")
            .expect("created");
        assert!(path.ends_with("peer_1-s-video-0.h264"), "{path}");
        r.write(&delta, MediaKind::Video).expect("write");
        assert_eq!(r.skipped, 1);
        r.finish().expect("finish");
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(bytes, [0, 0, 0, 1, 0x65, 2, 0, 0, 0, 1, 0x41, 1]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
