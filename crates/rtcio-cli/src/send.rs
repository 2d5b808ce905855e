//! Sending media: the sources the arguments ask for, opened before connecting ([`open`]) so a
//! missing camera fails fast with exit code 7, then attached to a stream once the socket exists
//! ([`Producers::attach`]). The encoding, track writing, keyframe requests and congestion
//! control are `rtcio-glue`'s, shared with the desktop app.

use std::path::Path;
use std::time::Duration;

use rtcio::{LocalStream, MediaKind, Socket};
use rtcio_glue::{Opened, RatePolicy, Replacement, SendOptions, SendStream};
use rtcio_media::{H264Config, MediaError, OpusConfig};
use serde_json::{Value, json};

use crate::args::{AudioChoice, SessionArgs, VideoChoice};
use crate::exit::{CliError, code};

/// Sources opened before connecting.
pub struct Producers {
    opened: Vec<Opened>,
    /// The user's video bitrate cap, bits/s.
    max_video_bps: u32,
    /// Follow the peers' bandwidth estimates.
    follow_estimate: bool,
}

impl Producers {
    /// The microphone's echo-canceller inputs (far-end tap, switches), when it is processed.
    pub fn echo_canceller(
        &self,
    ) -> (
        Option<rtcio_media::RenderTap>,
        Option<rtcio_media::ApmControl>,
    ) {
        self.opened
            .iter()
            .find(|o| o.kind() == rtcio::MediaKind::Audio)
            .map_or((None, None), |o| (o.render_tap(), o.apm_control()))
    }
}

fn media_err(what: &str, e: MediaError) -> CliError {
    CliError::new(code::MEDIA, "media", format!("{what}: {e}"))
}

/// Opens the sources `args` asks for and starts encoding (frames are dropped until a track
/// subscribes).
pub fn open(args: &SessionArgs) -> Result<Producers, CliError> {
    let mut opened = Vec::new();
    if let Some(v) = open_video(args)? {
        opened.push(v);
    }
    if let Some(a) = open_audio(args)? {
        opened.push(a);
    }
    Ok(Producers {
        opened,
        max_video_bps: video_bps(args),
        follow_estimate: !args.net.no_congestion_control,
    })
}

fn video_bps(args: &SessionArgs) -> u32 {
    args.video_bitrate.saturating_mul(1000).max(50_000)
}

fn h264(args: &SessionArgs, screen: bool) -> H264Config {
    H264Config {
        bitrate_bps: video_bps(args),
        max_fps: args.fps.clamp(1.0, 120.0),
        content: if screen {
            rtcio_media::ContentHint::Screen
        } else {
            rtcio_media::ContentHint::Camera
        },
        ..H264Config::default()
    }
}

fn start_video(
    source: Box<dyn rtcio_media::VideoSource>,
    config: H264Config,
    label: String,
) -> Result<Opened, CliError> {
    Opened::video(source, config, None, label)
        .map_err(|e| media_err("starting the H.264 encoder", e))
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// A source and its label (for logs and stats lines).
type Labelled<S> = (Box<S>, String);

fn encoded_file(path: &Path) -> CliError {
    CliError::new(
        code::MEDIA,
        "media",
        format!(
            "{}: an encoded file is sent as it is and cannot replace a source mid-call",
            path.display()
        ),
    )
}

/// A capture source for `choice` (`None` for none) and its label; an already encoded file is
/// no capture source ([`open_video`] plays those as they are). Blocking (V4L2, X11).
fn video_source(
    args: &SessionArgs,
    choice: &VideoChoice,
) -> Result<Option<Labelled<dyn rtcio_media::VideoSource>>, CliError> {
    let size = args.video_size;
    let fps = args.fps.clamp(1.0, 120.0);
    let pattern = |green: bool| {
        let p = rtcio_media::TestPatternSource::new(rtcio_media::TestPatternConfig {
            width: size.width,
            height: size.height,
            fps,
            paced: true,
        })
        .map_err(|e| media_err("test pattern", e))?;
        // The app's "Test pattern (green)": the same pattern on flat green chroma.
        Ok::<_, CliError>(if green { p.tinted(54, 34) } else { p })
    };
    Ok(Some(match choice {
        VideoChoice::None => return Ok(None),
        VideoChoice::TestSrc => (Box::new(pattern(false)?), format!("testsrc {size}")),
        VideoChoice::TestSrcGreen => (Box::new(pattern(true)?), format!("testsrc-green {size}")),
        VideoChoice::Camera(device) => {
            let src = rtcio_media::CameraSource::open(rtcio_media::CameraConfig {
                device: device.clone(),
                width: size.width,
                height: size.height,
                fps: fps.round() as u32,
            })
            .map_err(|e| media_err("cannot open the camera", e))?;
            (Box::new(src), "camera".into())
        }
        VideoChoice::Screen(monitor) => {
            // X11 through $DISPLAY; on Wayland the desktop portal (its dialog picks the monitor).
            let src = rtcio_media::open_screen_source(
                rtcio_media::ScreenConfig {
                    monitor: monitor.clone(),
                    fps,
                    ..rtcio_media::ScreenConfig::default()
                },
                rtcio_media::PortalConfig {
                    fps,
                    ..rtcio_media::PortalConfig::default()
                },
            )
            .map_err(|e| media_err("cannot capture the screen", e))?;
            (src, "screen".into())
        }
        VideoChoice::File(path) => match extension(path).as_str() {
            "y4m" => {
                let src = rtcio_media::file::y4m::Y4mSource::open(path, true, true)
                    .map_err(|e| media_err(&format!("cannot read {}", path.display()), e))?;
                (Box::new(src), path.display().to_string())
            }
            "h264" | "264" | "avc" => return Err(encoded_file(path)),
            other => {
                return Err(CliError::new(
                    code::MEDIA,
                    "media",
                    format!(
                        "{}: unsupported video file type {other:?} (use .y4m or raw .h264)",
                        path.display()
                    ),
                ));
            }
        },
    }))
}

fn open_video(args: &SessionArgs) -> Result<Option<Opened>, CliError> {
    if let VideoChoice::File(path) = &args.video
        && matches!(extension(path).as_str(), "h264" | "264" | "avc")
    {
        let fps = args.fps.clamp(1.0, 120.0);
        let src = rtcio_media::file::h264::H264FileSource::open(path, fps, true, true)
            .map_err(|e| media_err(&format!("cannot read {}", path.display()), e))?;
        return start_encoded(Box::new(src), MediaKind::Video, path.display().to_string())
            .map(Some);
    }
    let Some((src, label)) = video_source(args, &args.video)? else {
        return Ok(None);
    };
    let screen = matches!(args.video, VideoChoice::Screen(_));
    start_video(src, h264(args, screen), label).map(Some)
}

fn start_audio(
    source: Box<dyn rtcio_media::AudioSource>,
    label: String,
    processing: Option<rtcio_media::ApmConfig>,
) -> Result<Opened, CliError> {
    // The CLI plays nothing (no far end in a speaker, so no echo): the canceller stays off,
    // noise suppression, gain and the high-pass filter run.
    let processing = processing.map(|apm| rtcio_media::AudioProcessingConfig {
        apm,
        render_channels: 1,
    });
    Opened::audio(source, OpusConfig::default(), processing, label)
        .map_err(|e| media_err("starting the Opus encoder", e))
}

/// A capture source for `choice` (`None` for none) and its label; an already encoded file is
/// no capture source ([`open_audio`] plays those as they are). Blocking (ALSA).
fn audio_source(
    choice: &AudioChoice,
) -> Result<Option<Labelled<dyn rtcio_media::AudioSource>>, CliError> {
    Ok(Some(match choice {
        AudioChoice::None => return Ok(None),
        AudioChoice::Tone => {
            let src = rtcio_media::ToneSource::new(rtcio_media::ToneConfig::default())
                .map_err(|e| media_err("tone", e))?;
            (Box::new(src), "tone".into())
        }
        AudioChoice::Mic(device) => {
            let src = rtcio_media::MicrophoneSource::open(rtcio_media::MicrophoneConfig {
                device: device.clone(),
                channels: 1,
            })
            .map_err(|e| media_err("cannot open the microphone", e))?;
            (Box::new(src), "mic".into())
        }
        AudioChoice::File(path) => match extension(path).as_str() {
            "wav" => {
                let src = rtcio_media::file::wav::WavSource::open(path, 1, true, true)
                    .map_err(|e| media_err(&format!("cannot read {}", path.display()), e))?;
                (Box::new(src), path.display().to_string())
            }
            "opus" | "ogg" | "oga" => return Err(encoded_file(path)),
            other => {
                return Err(CliError::new(
                    code::MEDIA,
                    "media",
                    format!(
                        "{}: unsupported audio file type {other:?} (use .wav or Ogg Opus)",
                        path.display()
                    ),
                ));
            }
        },
    }))
}

fn open_audio(args: &SessionArgs) -> Result<Option<Opened>, CliError> {
    if let AudioChoice::File(path) = &args.audio
        && matches!(extension(path).as_str(), "opus" | "ogg" | "oga")
    {
        let src = rtcio_media::file::ogg_opus::OggOpusSource::open(path, true, true)
            .map_err(|e| media_err(&format!("cannot read {}", path.display()), e))?;
        return start_encoded(Box::new(src), MediaKind::Audio, path.display().to_string())
            .map(Some);
    }
    let Some((src, label)) = audio_source(&args.audio)? else {
        return Ok(None);
    };
    let processing = match args.audio {
        AudioChoice::Mic(_) => args.mic_processing.apm(),
        _ => None,
    };
    start_audio(src, label, processing).map(Some)
}

/// Plays an encoded file on a thread into a fan-out (no re-encoding; keyframe requests cannot
/// be honoured — give bots clips with periodic IDRs).
fn start_encoded(
    source: Box<dyn rtcio_media::EncodedSource>,
    kind: MediaKind,
    label: String,
) -> Result<Opened, CliError> {
    Opened::encoded(source, kind, label)
        .map_err(|e| CliError::other(format!("cannot start a thread: {e}")))
}

/// The stream being sent.
pub struct Sender {
    stream: SendStream,
}

impl Producers {
    /// True when nothing is sent.
    pub fn is_empty(&self) -> bool {
        self.opened.is_empty()
    }

    pub fn has(&self, kind: MediaKind) -> bool {
        self.opened.iter().any(|o| o.kind() == kind)
    }

    /// Creates the stream with one track per source and starts writing to it. The caller
    /// announces it (see [`announcement`]).
    pub fn attach(self, socket: &Socket) -> Option<Sender> {
        if self.opened.is_empty() {
            return None;
        }
        let opts = SendOptions {
            rate: RatePolicy {
                max_bps: self.max_video_bps,
                ..RatePolicy::default()
            },
            follow_estimate: self.follow_estimate,
        };
        Some(Sender {
            stream: SendStream::attach(socket, self.opened, opts),
        })
    }
}

/// The demo's way to announce a stream: `camera` with `{id, name, camera: <stream>}`; other
/// event names carry the stream under `stream` (`screenshare {id, name, stream}`). `id` is
/// [`rtcio::SELF_ID`]: the library writes our socket id as it is when the metadata leaves, so
/// the announcement stays right after a reconnect that changed the id.
pub fn announcement(event: &str, name: &str, stream: &LocalStream) -> Value {
    let key = if event == "camera" {
        "camera"
    } else {
        "stream"
    };
    let mut v = json!({"id": rtcio::SELF_ID, "name": name});
    v[key] = stream.token();
    v
}

impl Sender {
    pub fn stream(&self) -> &LocalStream {
        self.stream.stream()
    }

    /// A new peer will need an IDR to start decoding: ask now rather than waiting for its PLI.
    pub fn request_keyframe(&self) {
        self.stream.request_keyframe();
    }

    /// Switches the video track to `choice` mid-call (`--control-stdin`): the same track and
    /// stream go on (no renegotiation), frames are scaled to the first source's size; `None`
    /// mutes the track. Returns the new source's label. Blocking (opens devices).
    pub fn switch_video(
        &mut self,
        args: &SessionArgs,
        choice: &VideoChoice,
    ) -> Result<String, CliError> {
        self.switch(MediaKind::Video, || {
            Ok(video_source(args, choice)?.map(|(s, l)| (Replacement::Video(s), l)))
        })
    }

    /// [`Sender::switch_video`] for the audio track (a microphone keeps the processing the
    /// call started with: none when it started with a tone or a file).
    pub fn switch_audio(&mut self, choice: &AudioChoice) -> Result<String, CliError> {
        self.switch(MediaKind::Audio, || {
            Ok(audio_source(choice)?.map(|(s, l)| (Replacement::Audio(s), l)))
        })
    }

    fn switch(
        &mut self,
        kind: MediaKind,
        open: impl FnOnce() -> Result<Option<(Replacement, String)>, CliError>,
    ) -> Result<String, CliError> {
        let what = kind_str(kind);
        if !self.stream.has(kind) {
            return Err(CliError::new(
                code::MEDIA,
                "media",
                format!("no {what} track is sent: start with --{what} to switch it later"),
            ));
        }
        match open()? {
            None => {
                self.stream.set_enabled(kind, false);
                Ok("off".into())
            }
            Some((source, label)) => {
                self.stream
                    .replace_source(source, label.clone())
                    .map_err(|e| media_err(&format!("cannot switch the {what} source"), e))?;
                self.stream.set_enabled(kind, true);
                Ok(label)
            }
        }
    }

    /// One `send-stats` line per track since the previous call.
    pub fn stats(&mut self) -> Vec<Value> {
        self.stream
            .stats()
            .into_iter()
            .map(|st| {
                let mut line = json!({
                    "kind": kind_str(st.kind),
                    "source": st.label,
                    "track": st.track,
                    "frames": st.frames,
                    "fps": round2(st.fps),
                    "kbps": round2(st.kbps),
                    "peers": st.peers,
                    "samples_written": st.samples_written,
                    "encoded": st.encoded,
                });
                if st.kind == MediaKind::Video {
                    line["keyframes"] = json!(st.keyframes);
                    line["keyframe_requests"] = json!(st.keyframe_requests);
                }
                if let Some((w, h)) = st.size {
                    line["width"] = json!(w);
                    line["height"] = json!(h);
                }
                if let Some(ms) = st.encode_ms {
                    line["encode_ms"] = json!(round2(ms));
                }
                if let Some(q) = st.quality_level {
                    line["quality_level"] = json!(q);
                }
                if let Some(t) = st.target_bps {
                    line["target_kbps"] = json!(round2(f64::from(t) / 1000.0));
                }
                if let Some(e) = st.estimate_bps {
                    line["estimate_kbps"] = json!(round2(e as f64 / 1000.0));
                }
                if let Some(ms) = st.pacer_wait_ms {
                    line["pacer_ms"] = json!(round2(ms));
                }
                if st.ended {
                    line["ended"] = json!(true);
                }
                line
            })
            .collect()
    }

    /// Stops announcing the stream to new peers, stops the sources and the writers.
    pub fn stop(self, socket: &Socket) {
        self.stream.stop(socket, false);
    }
}

pub fn kind_str(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

pub fn round2(x: f64) -> f64 {
    if x.is_finite() {
        (x * 100.0).round() / 100.0
    } else {
        0.0
    }
}

/// Bounded wait used when stopping threads.
pub const STOP_WAIT: Duration = Duration::from_secs(3);
