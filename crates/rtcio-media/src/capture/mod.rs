//! Live capture: screen (X11 MIT-SHM; desktop portal + PipeWire on Wayland with the `wayland`
//! feature), camera (nokhwa) and microphone (cpal).

pub mod camera;
pub mod microphone;
pub(crate) mod pacing;
#[cfg(feature = "wayland")]
pub mod portal;
pub mod screen;
pub mod xvfb;
