//! The source traits every capture device, synthetic generator and file reader implements, and
//! the device descriptions that enumeration returns.

use crate::error::Result;
use crate::frame::{AudioFrame, EncodedFrame, I420Frame};

/// What kind of device a [`DeviceInfo`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// A camera (V4L2 through nokhwa).
    Camera,
    /// An audio input (cpal).
    Microphone,
    /// An audio output (cpal).
    Speaker,
    /// A monitor that can be captured (X11 RandR).
    Monitor,
}

/// One entry of a device list, as the UI shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Stable id to pass back when opening the device.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// What it is.
    pub kind: DeviceKind,
    /// Whether this is the system's default (or primary monitor).
    pub is_default: bool,
    /// Native size for cameras and monitors (`None` when unknown or for audio devices).
    pub size: Option<(u32, u32)>,
}

/// A source of raw video frames (camera, screen, test pattern, Y4M file).
///
/// `next_frame` blocks until the next frame is due: live sources wait for the device, paced
/// synthetic and file sources wait for the frame's time, unpaced ones return at once.
pub trait VideoSource: Send {
    /// Blocks for the next frame. [`crate::MediaError::EndOfStream`] ends a finite source,
    /// [`crate::MediaError::Stopped`] a stopped one.
    fn next_frame(&mut self) -> Result<I420Frame>;

    /// Nominal output size.
    fn size(&self) -> (u32, u32);

    /// Nominal frame rate.
    fn frame_rate(&self) -> f32;

    /// Releases the device. Later `next_frame` calls return [`crate::MediaError::Stopped`].
    fn stop(&mut self) {}
}

/// A source of raw audio (microphone, tone generator, WAV file).
///
/// Frames are 20 ms long at [`AudioSource::sample_rate`]; the microphone resamples to 48 kHz.
pub trait AudioSource: Send {
    /// Blocks for the next 20 ms frame.
    fn next_frame(&mut self) -> Result<AudioFrame>;

    /// Output sample rate.
    fn sample_rate(&self) -> u32;

    /// Output channel count.
    fn channels(&self) -> u16;

    /// Releases the device.
    fn stop(&mut self) {}
}

/// A source of already encoded media (a raw H.264 or Ogg Opus file for bots).
pub trait EncodedSource: Send {
    /// Blocks for the next access unit or packet.
    fn next_frame(&mut self) -> Result<EncodedFrame>;
}

impl<T: VideoSource + ?Sized> VideoSource for Box<T> {
    fn next_frame(&mut self) -> Result<I420Frame> {
        (**self).next_frame()
    }
    fn size(&self) -> (u32, u32) {
        (**self).size()
    }
    fn frame_rate(&self) -> f32 {
        (**self).frame_rate()
    }
    fn stop(&mut self) {
        (**self).stop()
    }
}

impl<T: AudioSource + ?Sized> AudioSource for Box<T> {
    fn next_frame(&mut self) -> Result<AudioFrame> {
        (**self).next_frame()
    }
    fn sample_rate(&self) -> u32 {
        (**self).sample_rate()
    }
    fn channels(&self) -> u16 {
        (**self).channels()
    }
    fn stop(&mut self) {
        (**self).stop()
    }
}

/// Sleeps until `deadline` (used only for pacing real-time sources, never for synchronisation).
pub(crate) fn sleep_until(deadline: std::time::Instant) {
    let now = std::time::Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}
