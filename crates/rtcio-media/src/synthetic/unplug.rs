//! A device that can be pulled out: wraps any source and, once [`PlugHandle::unplug`] is
//! called, fails the way a vanished device does ([`MediaError::Device`]). Tests and the app's
//! `synthetic:*` devices use it to exercise what happens when a camera or microphone
//! disappears mid-call, without hardware.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{MediaError, Result};
use crate::frame::{AudioFrame, I420Frame};
use crate::source::{AudioSource, VideoSource};

/// Pulls the plug of an [`Unpluggable`] source from any thread. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct PlugHandle(Arc<AtomicBool>);

impl PlugHandle {
    /// The device goes away: its next frame is an error, and every one after.
    pub fn unplug(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`PlugHandle::unplug`] was called.
    pub fn is_unplugged(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A source that fails once its [`PlugHandle`] unplugs it.
pub struct Unpluggable<S> {
    inner: S,
    plug: PlugHandle,
    kind: &'static str,
}

impl<S> Unpluggable<S> {
    /// Wraps `inner` (`kind`: "camera" / "microphone", for the error); returns the handle that
    /// unplugs it.
    pub fn new(inner: S, kind: &'static str) -> (Self, PlugHandle) {
        let plug = PlugHandle::default();
        (
            Unpluggable {
                inner,
                plug: plug.clone(),
                kind,
            },
            plug,
        )
    }

    fn check(&self) -> Result<()> {
        if self.plug.is_unplugged() {
            return Err(MediaError::Device {
                kind: self.kind,
                message: "the device was unplugged".into(),
            });
        }
        Ok(())
    }
}

impl<S: VideoSource> VideoSource for Unpluggable<S> {
    fn next_frame(&mut self) -> Result<I420Frame> {
        self.check()?;
        let frame = self.inner.next_frame()?;
        // Unplugged while the frame was being made: the device is gone, so is the frame.
        self.check()?;
        Ok(frame)
    }

    fn size(&self) -> (u32, u32) {
        self.inner.size()
    }

    fn frame_rate(&self) -> f32 {
        self.inner.frame_rate()
    }

    fn stop(&mut self) {
        self.inner.stop()
    }
}

impl<S: AudioSource> AudioSource for Unpluggable<S> {
    fn next_frame(&mut self) -> Result<AudioFrame> {
        self.check()?;
        let frame = self.inner.next_frame()?;
        self.check()?;
        Ok(frame)
    }

    fn sample_rate(&self) -> u32 {
        self.inner.sample_rate()
    }

    fn channels(&self) -> u16 {
        self.inner.channels()
    }

    fn stop(&mut self) {
        self.inner.stop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::video::{TestPatternConfig, TestPatternSource};

    #[test]
    fn frames_until_unplugged_then_device_errors() {
        let src = TestPatternSource::new(TestPatternConfig {
            width: 160,
            height: 96,
            fps: 30.0,
            paced: false,
        })
        .unwrap();
        let (mut src, plug) = Unpluggable::new(src, "camera");
        assert!(src.next_frame().is_ok());
        plug.unplug();
        for _ in 0..2 {
            assert!(matches!(
                src.next_frame(),
                Err(MediaError::Device { kind: "camera", .. })
            ));
        }
    }
}
