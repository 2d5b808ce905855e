//! File sources for bots (and writers for recordings): Y4M and raw H.264 video, WAV and Ogg
//! Opus audio.

pub mod h264;
pub mod ogg_opus;
pub mod wav;
mod wav_pcm;
pub mod y4m;
