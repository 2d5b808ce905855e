//! Live capture: screen (X11 MIT-SHM), camera (nokhwa) and microphone (cpal).

pub mod camera;
pub mod microphone;
pub mod screen;
pub mod xvfb;
