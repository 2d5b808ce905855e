//! Y4M (YUV4MPEG2) files: a 4:2:0 video source for bots, and a writer for recordings.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{MediaError, Result};
use crate::frame::{I420Frame, check_dimensions};
use crate::source::{VideoSource, sleep_until};

/// Slowest frame rate a header may set (one frame every 100 s).
const MIN_FPS: f32 = 0.01;
/// Fastest frame rate a header may set.
const MAX_FPS: f32 = 1000.0;

fn format_err(msg: impl Into<String>) -> MediaError {
    MediaError::Format(msg.into())
}

/// Reads frames from a Y4M file (8-bit 4:2:0 only).
pub struct Y4mSource {
    reader: BufReader<File>,
    width: u32,
    height: u32,
    fps: f32,
    data_start: u64,
    looping: bool,
    paced: bool,
    frames: u64,
    start: Option<Instant>,
}

impl std::fmt::Debug for Y4mSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Y4mSource")
            .field("size", &(self.width, self.height))
            .field("fps", &self.fps)
            .finish_non_exhaustive()
    }
}

fn read_line(reader: &mut impl BufRead, max: usize) -> Result<Option<String>> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(max as u64)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(format_err("Y4M line too long or truncated"));
    }
    line.pop();
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| format_err("Y4M header is not text"))
}

impl Y4mSource {
    /// Opens a Y4M file. `looping` restarts at the end; `paced` delivers frames in real time.
    pub fn open(path: impl AsRef<Path>, looping: bool, paced: bool) -> Result<Self> {
        let mut reader = BufReader::new(File::open(path)?);
        let header = read_line(&mut reader, 1024)?.ok_or_else(|| format_err("empty Y4M file"))?;
        let mut params = header.split(' ');
        if params.next() != Some("YUV4MPEG2") {
            return Err(format_err("not a YUV4MPEG2 file"));
        }
        let (mut width, mut height, mut fps) = (0u32, 0u32, 30.0f32);
        for p in params {
            // A parameter starting with a multi-byte character is no tag we know; split_at(1)
            // would panic inside it.
            let Some((tag, value)) = p.split_at_checked(p.len().min(1)) else {
                continue;
            };
            match tag {
                "W" => width = value.parse().map_err(|_| format_err("bad Y4M width"))?,
                "H" => height = value.parse().map_err(|_| format_err("bad Y4M height"))?,
                "F" => {
                    let (n, d) = value
                        .split_once(':')
                        .ok_or_else(|| format_err("bad Y4M frame rate"))?;
                    let n: f32 = n.parse().map_err(|_| format_err("bad Y4M frame rate"))?;
                    let d: f32 = d.parse().map_err(|_| format_err("bad Y4M frame rate"))?;
                    // Only a rate timestamps can be computed from: F30000:1e40 gave 0 fps and
                    // the first frame a 0/0 timestamp (a panic). Others keep the default, like
                    // a zero or negative rate always did.
                    let rate = n / d;
                    if (MIN_FPS..=MAX_FPS).contains(&rate) {
                        fps = rate;
                    }
                }
                "C" if !value.starts_with("420") || value.contains("p1") => {
                    return Err(MediaError::Unsupported(format!(
                        "Y4M colour space {value} (only 8-bit 4:2:0)"
                    )));
                }
                _ => {}
            }
        }
        check_dimensions(width, height)?;
        let data_start = header.len() as u64 + 1;
        Ok(Self {
            reader,
            width,
            height,
            fps,
            data_start,
            looping,
            paced,
            frames: 0,
            start: None,
        })
    }

    fn read_frame(&mut self) -> Result<Option<I420Frame>> {
        let Some(line) = read_line(&mut self.reader, 1024)? else {
            return Ok(None);
        };
        if !line.starts_with("FRAME") {
            return Err(format_err("missing Y4M FRAME marker"));
        }
        let (w, h) = (self.width as usize, self.height as usize);
        let mut frame = I420Frame::black(self.width, self.height)?;
        self.reader.read_exact(&mut frame.y)?;
        self.reader.read_exact(&mut frame.u)?;
        self.reader.read_exact(&mut frame.v)?;
        debug_assert_eq!(frame.y.len(), w * h);
        Ok(Some(frame))
    }
}

impl VideoSource for Y4mSource {
    fn next_frame(&mut self) -> Result<I420Frame> {
        let mut frame = match self.read_frame() {
            Ok(Some(f)) => f,
            Ok(None) if self.looping && self.frames > 0 => {
                use std::io::Seek;
                self.reader
                    .seek(std::io::SeekFrom::Start(self.data_start))?;
                self.read_frame()?.ok_or(MediaError::EndOfStream)?
            }
            Ok(None) => return Err(MediaError::EndOfStream),
            Err(MediaError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(MediaError::EndOfStream);
            }
            Err(e) => return Err(e),
        };
        let timestamp = Duration::from_secs_f64(self.frames as f64 / f64::from(self.fps));
        if self.paced {
            let start = *self.start.get_or_insert_with(Instant::now);
            sleep_until(start + timestamp);
        }
        frame.timestamp = timestamp;
        self.frames += 1;
        Ok(frame)
    }

    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn frame_rate(&self) -> f32 {
        self.fps
    }
}

/// Writes I420 frames to a Y4M file.
pub struct Y4mWriter {
    out: BufWriter<File>,
    size: (u32, u32),
}

impl std::fmt::Debug for Y4mWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Y4mWriter")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Y4mWriter {
    /// Creates the file and writes the header.
    pub fn create(path: impl AsRef<Path>, width: u32, height: u32, fps: u32) -> Result<Self> {
        check_dimensions(width, height)?;
        let mut out = BufWriter::new(File::create(path)?);
        writeln!(
            out,
            "YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg"
        )?;
        Ok(Self {
            out,
            size: (width, height),
        })
    }

    /// Appends a frame (must have the header's size).
    pub fn write(&mut self, frame: &I420Frame) -> Result<()> {
        if (frame.width, frame.height) != self.size {
            return Err(MediaError::InvalidInput(format!(
                "frame {}x{} in a {}x{} Y4M file",
                frame.width, frame.height, self.size.0, self.size.1
            )));
        }
        let packed = frame.clone().into_packed();
        self.out.write_all(b"FRAME\n")?;
        self.out.write_all(&packed.y)?;
        self.out.write_all(&packed.u)?;
        self.out.write_all(&packed.v)?;
        Ok(())
    }

    /// Flushes the file.
    pub fn finish(mut self) -> Result<()> {
        self.out.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_header_parameter_is_skipped_not_a_panic() {
        // Found by fuzz/fuzz_targets/file_y4m.rs: the tag was cut after the first byte.
        let path = std::env::temp_dir().join(format!("rtcio-y4m-tag-{}.y4m", std::process::id()));
        std::fs::write(&path, "YUV4MPEG2 W16 H16 \u{1ba}V4MPEG2\nFRAME\n").unwrap();
        let opened = Y4mSource::open(&path, false, false);
        let _ = std::fs::remove_file(&path);
        assert_eq!(opened.unwrap().size(), (16, 16));
    }

    #[test]
    fn frame_rate_that_rounds_to_zero_or_overflows_keeps_the_default() {
        // Found by fuzz/fuzz_targets/file_y4m.rs: 30000 / 4.2e60 is 0 fps, and the first
        // frame's timestamp 0 / 0 made Duration::from_secs_f64 panic.
        let path = std::env::temp_dir().join(format!("rtcio-y4m-fps-{}.y4m", std::process::id()));
        let huge = "9".repeat(60);
        for f in [
            format!("30000:{huge}"),
            format!("{huge}:1"),
            "1:0".to_string(),
        ] {
            let mut file = format!("YUV4MPEG2 W2 H2 F{f}\nFRAME\n").into_bytes();
            file.extend_from_slice(&[0; 6]);
            std::fs::write(&path, file).unwrap();
            let mut src = Y4mSource::open(&path, false, false).unwrap();
            assert_eq!(src.frame_rate(), 30.0, "F{f}");
            assert_eq!(src.next_frame().unwrap().timestamp, Duration::ZERO);
        }
        let _ = std::fs::remove_file(&path);
    }
}
