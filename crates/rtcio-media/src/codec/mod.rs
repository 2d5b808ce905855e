//! Codecs: H.264 (OpenH264) and Opus (libopus), plus Annex-B helpers.

pub mod annexb;
pub mod h264;
pub mod opus;
