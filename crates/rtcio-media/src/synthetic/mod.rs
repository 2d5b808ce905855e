//! Synthetic sources for tests, benchmarks and bots.

pub mod audio;
pub mod unplug;
pub mod video;
