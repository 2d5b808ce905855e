//! Camera capture through nokhwa (V4L2 on Linux).
//!
//! The camera is opened and read on its own thread (nokhwa's camera is not `Send`); frames are
//! converted to I420 there (YUYV, NV12, grey and raw RGB/BGR directly, MJPEG through nokhwa's
//! decoder) and handed over through a small queue that drops frames when the consumer is slow.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
};
use nokhwa::{Buffer, Camera, FormatDecoder, NokhwaError};
use tracing::{info, warn};

use crate::convert;
use crate::error::{MediaError, Result};
use crate::frame::I420Frame;
use crate::source::{DeviceInfo, DeviceKind, VideoSource};

/// Settings of a [`CameraSource`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CameraConfig {
    /// Device id from [`list_cameras`]; `None` takes the first camera.
    pub device: Option<String>,
    /// Requested width (the closest supported format is used).
    pub width: u32,
    /// Requested height.
    pub height: u32,
    /// Requested frame rate.
    pub fps: u32,
}

impl Default for CameraConfig {
    fn default() -> Self {
        Self {
            device: None,
            width: 1280,
            height: 720,
            fps: 30,
        }
    }
}

fn map_err(id: &str, e: NokhwaError) -> MediaError {
    let text = e.to_string();
    let lower = text.to_lowercase();
    if lower.contains("busy") {
        MediaError::DeviceBusy {
            kind: "camera",
            id: id.to_owned(),
        }
    } else if lower.contains("no such file") || lower.contains("not found") {
        MediaError::DeviceNotFound {
            kind: "camera",
            id: id.to_owned(),
        }
    } else {
        MediaError::Device {
            kind: "camera",
            message: text,
        }
    }
}

/// Lists cameras. An empty list (not an error) when there are none.
pub fn list_cameras() -> Result<Vec<DeviceInfo>> {
    let cameras = nokhwa::query(ApiBackend::Auto).map_err(|e| map_err("*", e))?;
    Ok(cameras
        .iter()
        .enumerate()
        .map(|(i, c)| DeviceInfo {
            id: c.index().as_string(),
            name: c.human_name(),
            kind: DeviceKind::Camera,
            is_default: i == 0,
            size: None,
        })
        .collect())
}

fn to_i420(buffer: &Buffer, timestamp: Duration) -> Result<I420Frame> {
    let res = buffer.resolution();
    let (w, h) = (res.width_x, res.height_y);
    let data = buffer.buffer();
    match buffer.source_frame_format() {
        FrameFormat::YUYV => convert::yuyv_to_i420(data, w, h, timestamp),
        FrameFormat::NV12 => convert::nv12_to_i420(data, w, h, timestamp),
        FrameFormat::GRAY => convert::gray_to_i420(data, w, h, timestamp),
        FrameFormat::RAWRGB => convert::rgb_to_i420(data, w, h, timestamp),
        FrameFormat::RAWBGR => convert::bgr_to_i420(data, w, h, timestamp),
        FrameFormat::MJPEG => {
            let rgb = RgbFormat::write_output(FrameFormat::MJPEG, res, data)
                .map_err(|e| MediaError::Convert(e.to_string()))?;
            convert::rgb_to_i420(&rgb, w, h, timestamp)
        }
    }
}

/// A running camera.
pub struct CameraSource {
    rx: Receiver<Result<I420Frame>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    size: (u32, u32),
    fps: f32,
    stopped: bool,
}

impl std::fmt::Debug for CameraSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraSource")
            .field("size", &self.size)
            .field("fps", &self.fps)
            .finish_non_exhaustive()
    }
}

impl CameraSource {
    /// Opens the camera and starts streaming. A missing camera is
    /// [`MediaError::DeviceNotFound`], one held by another program [`MediaError::DeviceBusy`].
    pub fn open(config: CameraConfig) -> Result<Self> {
        let cameras = list_cameras()?;
        let id = config.device.clone().unwrap_or_else(|| "default".into());
        let info = match &config.device {
            Some(dev) => cameras.into_iter().find(|c| &c.id == dev || &c.name == dev),
            None => cameras.into_iter().next(),
        }
        .ok_or_else(|| MediaError::DeviceNotFound {
            kind: "camera",
            id: id.clone(),
        })?;
        let index = match info.id.parse::<u32>() {
            Ok(n) => CameraIndex::Index(n),
            Err(_) => CameraIndex::String(info.id.clone()),
        };
        let (ready_tx, ready_rx) = sync_channel::<Result<((u32, u32), f32)>>(1);
        let (tx, rx) = sync_channel::<Result<I420Frame>>(2);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("rtcio-camera".into())
            .spawn(move || run_camera(index, config, id, ready_tx, tx, stop2))
            .map_err(MediaError::Io)?;
        let (size, fps) = ready_rx.recv().map_err(|_| MediaError::Stopped)??;
        info!(camera = %info.name, ?size, fps, "camera started");
        Ok(Self {
            rx,
            stop,
            thread: Some(thread),
            size,
            fps,
            stopped: false,
        })
    }
}

fn run_camera(
    index: CameraIndex,
    config: CameraConfig,
    id: String,
    ready: SyncSender<Result<((u32, u32), f32)>>,
    tx: SyncSender<Result<I420Frame>>,
    stop: Arc<AtomicBool>,
) {
    let wanted =
        CameraFormat::new_from(config.width, config.height, FrameFormat::MJPEG, config.fps);
    let request = RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(wanted));
    let opened = Camera::new(index, request).and_then(|mut cam| {
        cam.open_stream()?;
        Ok(cam)
    });
    let mut camera = match opened {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(map_err(&id, e)));
            return;
        }
    };
    let res = camera.resolution();
    let size = (res.width_x, res.height_y);
    if ready.send(Ok((size, camera.frame_rate() as f32))).is_err() {
        return;
    }
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let frame = camera
            .frame()
            .map_err(|e| map_err(&id, e))
            .and_then(|buf| to_i420(&buf, start.elapsed()));
        let failed = frame.is_err();
        match tx.try_send(frame) {
            Ok(()) | Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => break,
        }
        if failed {
            warn!("camera frame failed; stopping capture");
            break;
        }
    }
    let _ = camera.stop_stream();
}

impl VideoSource for CameraSource {
    fn next_frame(&mut self) -> Result<I420Frame> {
        if self.stopped {
            return Err(MediaError::Stopped);
        }
        self.rx.recv().map_err(|_| MediaError::Stopped)?
    }

    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn frame_rate(&self) -> f32 {
        self.fps
    }

    fn stop(&mut self) {
        self.stopped = true;
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // The thread never blocks on the queue; it ends after its current frame read.
            let _ = t.join();
        }
    }
}

impl Drop for CameraSource {
    fn drop(&mut self) {
        self.stop();
    }
}
