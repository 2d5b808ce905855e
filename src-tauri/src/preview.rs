//! The start screen's self preview, without Tauri: the chosen camera (or the test pattern)
//! scaled and sent as binary frames keyed [`PREVIEW_KEY`] over the same frame sink the call
//! uses, and the chosen microphone (or the tone) metered into `mic-level {rms, peak}` events
//! (linear 0..1, about ten a second).
//!
//! Nothing is encoded: the preview only shows what the devices deliver. Joining stops it
//! first so the call can open the same devices.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rtcio_media::{
    AudioLevel, AudioSource, MediaError, RgbaFrame, Scaler, TestPatternConfig, TestPatternSource,
    ToneConfig, ToneSource, VideoSource,
};
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

use crate::media::{self, AudioChoice, FrameSink, MediaConfig, VideoChoice};
use crate::session::UiSink;

/// Tile key of the preview frames.
pub const PREVIEW_KEY: &str = "preview/camera";
/// Name of the level event.
pub const MIC_LEVEL_EVENT: &str = "mic-level";
/// Largest preview frame (the start screen's canvas is smaller; aspect is kept).
pub const PREVIEW_SIZE: (u32, u32) = (640, 360);
/// Camera capture size asked for (small: the preview needs no more).
const CAPTURE_SIZE: (u32, u32) = (640, 360);
/// Preview frame rate.
const FPS: f32 = 15.0;
/// 20 ms audio frames per level event: 5 → 10 events a second.
const FRAMES_PER_LEVEL: usize = 5;
/// How long [`Preview::stop`] waits for the devices to be released. A paced source returns
/// within a frame time; a camera that stalls inside its driver may never return, and then the
/// start screen or the join must not hang with it.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// What the preview could start, for the UI.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewInfo {
    /// Preview frames are being sent.
    pub video: bool,
    /// `mic-level` events are being sent.
    pub audio: bool,
    /// Why a chosen device could not be opened (shown on the start screen as is).
    pub errors: Vec<String>,
}

/// A running preview. Stop it with [`Preview::stop`] (dropping it stops it too).
pub struct Preview {
    running: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Disconnected once every preview thread has ended (each holds a sender).
    done: mpsc::Receiver<()>,
}

/// Start-screen wording for a device that could not be opened.
pub fn preview_message(what: &str, e: &MediaError) -> String {
    match e {
        MediaError::DeviceNotFound { .. } => {
            format!("No {what} found ({e}). Pick another one or join without it.")
        }
        MediaError::DeviceBusy { .. } => {
            format!("The {what} is in use by another program ({e}). Close it and pick it again.")
        }
        _ => format!("Could not open the {what}: {e}."),
    }
}

fn open_video(choice: &VideoChoice) -> Result<Option<Box<dyn VideoSource>>, MediaError> {
    let (width, height) = CAPTURE_SIZE;
    let pattern = || {
        TestPatternSource::new(TestPatternConfig {
            width,
            height,
            fps: FPS,
            paced: true,
        })
    };
    Ok(Some(match choice {
        VideoChoice::Off => return Ok(None),
        VideoChoice::TestPattern => Box::new(pattern()?),
        // The green pattern is listed among the cameras (the call opens it the same way).
        VideoChoice::Camera(Some(id)) if id == media::TEST_PATTERN_GREEN_ID => {
            Box::new(pattern()?.tinted(54, 34))
        }
        VideoChoice::Camera(device) => Box::new(rtcio_media::CameraSource::open(
            rtcio_media::CameraConfig {
                device: device.clone(),
                width,
                height,
                fps: FPS as u32,
            },
        )?),
    }))
}

fn open_audio(choice: &AudioChoice) -> Result<Option<Box<dyn AudioSource>>, MediaError> {
    Ok(Some(match choice {
        AudioChoice::Off => return Ok(None),
        AudioChoice::Tone => Box::new(ToneSource::new(ToneConfig::default())?),
        AudioChoice::Microphone(device) => Box::new(rtcio_media::MicrophoneSource::open(
            rtcio_media::MicrophoneConfig {
                device: device.clone(),
                channels: 1,
            },
        )?),
    }))
}

impl Preview {
    /// Opens the chosen devices (`None`: none; with `fake`, or the synthetic ids, the
    /// synthetic sources) and starts sending. Blocking (V4L2 / ALSA): call it off the async
    /// runtime. A device that cannot be opened is left out and reported in
    /// [`PreviewInfo::errors`]; it never fails as a whole.
    pub fn start(
        camera: Option<&str>,
        microphone: Option<&str>,
        fake: bool,
        frames: FrameSink,
        ui: UiSink,
    ) -> (Preview, PreviewInfo) {
        let cfg = MediaConfig::from_choices(camera, microphone, fake);
        let running = Arc::new(AtomicBool::new(true));
        let mut threads = Vec::new();
        let (done_tx, done) = mpsc::channel::<()>();
        let mut info = PreviewInfo::default();
        match open_video(&cfg.video) {
            Ok(Some(source)) => {
                let r = running.clone();
                let d = done_tx.clone();
                match std::thread::Builder::new()
                    .name("preview-video".into())
                    .spawn(move || {
                        video_loop(source, frames, r);
                        drop(d);
                    }) {
                    Ok(t) => {
                        threads.push(t);
                        info.video = true;
                    }
                    Err(e) => info
                        .errors
                        .push(format!("Could not start the preview: {e}")),
                }
            }
            Ok(None) => {}
            Err(e) => {
                warn!("preview camera: {e}");
                info.errors.push(preview_message("camera", &e));
            }
        }
        match open_audio(&cfg.audio) {
            Ok(Some(source)) => {
                let r = running.clone();
                let d = done_tx.clone();
                match std::thread::Builder::new()
                    .name("preview-audio".into())
                    .spawn(move || {
                        audio_loop(source, ui, r);
                        drop(d);
                    }) {
                    Ok(t) => {
                        threads.push(t);
                        info.audio = true;
                    }
                    Err(e) => info
                        .errors
                        .push(format!("Could not start the mic meter: {e}")),
                }
            }
            Ok(None) => {}
            Err(e) => {
                warn!("preview microphone: {e}");
                info.errors.push(preview_message("microphone", &e));
            }
        }
        info!(video = info.video, audio = info.audio, "preview started");
        drop(done_tx);
        (
            Preview {
                running,
                threads,
                done,
            },
            info,
        )
    }

    /// Stops sending and releases the devices; returns once they are closed (so the call can
    /// open them right after). Blocking: about one frame time, at most [`STOP_TIMEOUT`] (a
    /// thread still stuck in its driver then is left to end on its own).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.running.store(false, Ordering::SeqCst);
        if self.threads.is_empty() {
            return;
        }
        // Disconnected = every thread dropped its sender, i.e. has ended.
        if let Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) = self.done.recv_timeout(STOP_TIMEOUT)
        {
            warn!("a preview device did not stop within {STOP_TIMEOUT:?}; leaving it behind");
            self.threads.clear();
            return;
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                warn!("a preview thread panicked");
            }
        }
    }
}

impl Drop for Preview {
    fn drop(&mut self) {
        self.halt();
    }
}

fn video_loop(mut source: Box<dyn VideoSource>, frames: FrameSink, running: Arc<AtomicBool>) {
    let mut scaler = Scaler::default();
    while running.load(Ordering::SeqCst) {
        let frame = match source.next_frame() {
            Ok(f) => f,
            Err(MediaError::Stopped | MediaError::EndOfStream) => break,
            Err(e) => {
                warn!("preview camera stopped: {e}");
                break;
            }
        };
        let rgba: RgbaFrame = match scaler.preview(&frame, PREVIEW_SIZE.0, PREVIEW_SIZE.1) {
            Ok(f) => f,
            Err(e) => {
                warn!("preview frame not converted: {e}");
                continue;
            }
        };
        frames(media::encode_frame(PREVIEW_KEY, &rgba));
    }
    // Released here, on the thread that owns the device.
    source.stop();
}

fn audio_loop(mut source: Box<dyn AudioSource>, ui: UiSink, running: Arc<AtomicBool>) {
    let mut n = 0usize;
    let mut sum_sq = 0.0f64;
    let mut peak = 0.0f32;
    while running.load(Ordering::SeqCst) {
        let frame = match source.next_frame() {
            Ok(f) => f,
            Err(MediaError::Stopped | MediaError::EndOfStream) => break,
            Err(e) => {
                warn!("preview microphone stopped: {e}");
                break;
            }
        };
        let level = AudioLevel::measure(&frame);
        sum_sq += f64::from(level.rms) * f64::from(level.rms);
        peak = peak.max(level.peak);
        n += 1;
        if n == FRAMES_PER_LEVEL {
            // RMS over the whole 100 ms, peak its largest sample.
            let rms = (sum_sq / n as f64).sqrt() as f32;
            ui(MIC_LEVEL_EVENT, json!({"rms": rms, "peak": peak}));
            (n, sum_sq, peak) = (0, 0.0, 0.0);
        }
    }
    source.stop();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_green_test_pattern_previews_green() {
        let choice = VideoChoice::Camera(Some(media::TEST_PATTERN_GREEN_ID.into()));
        let mut source = open_video(&choice)
            .expect("opens like the call does")
            .expect("a source");
        let frame = source.next_frame().expect("a frame");
        // The bars take the tint's chroma (the plain pattern's bars are coloured, none at it).
        let tinted = |plane: &[u8], value: u8| plane.iter().filter(|&&x| x == value).count();
        assert!(tinted(&frame.u, 54) > frame.u.len() / 2, "not green");
        assert!(tinted(&frame.v, 34) > frame.v.len() / 2, "not green");
    }
}
