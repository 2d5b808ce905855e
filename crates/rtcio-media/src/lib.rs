//! Media engine for rtcio peers: capture, H.264/Opus encode and decode, conversion and scaling,
//! single-encode fan-out, jitter buffering, mixing and playout.
//!
//! The crate knows nothing about networking, Tauri or the `rtcio` crate: encoded output is an
//! [`EncodedFrame`] (an Annex-B access unit or one Opus packet with its timestamp), and the
//! decoders take access units / packets with RTP timestamps. The glue that writes encoded frames
//! to rtcio tracks and feeds received ones back lives in the application (see the README).

#![warn(missing_docs)]

pub mod adapt;
pub mod apm;
pub mod audio_device;
pub mod capture;
pub mod codec;
pub mod convert;
pub mod error;
pub mod fanout;
pub mod file;
pub mod frame;
pub mod level;
pub mod pipeline;
pub mod playout;
pub mod resample;
pub mod source;
pub mod synthetic;

pub use apm::{ApmConfig, ApmStats, AudioProcessor, RenderTap};
pub use audio_device::{list_microphones, list_speakers};
pub use capture::camera::{CameraConfig, CameraSource, list_cameras};
pub use capture::microphone::{MicrophoneConfig, MicrophoneSource};
#[cfg(feature = "wayland")]
pub use capture::portal::{
    PortalConfig, PortalScreenSource, ScreenBackend, SessionEnv, open_screen_source,
    open_screen_source_in,
};
pub use capture::screen::{ScreenConfig, ScreenSource, list_monitors};
pub use codec::h264::{ContentHint, H264Config, H264Decoder, H264Encoder};
pub use codec::opus::{OpusConfig, OpusDecoder, OpusEncoder};
pub use convert::{ScaleQuality, Scaler};
pub use error::{MediaError, Result};
pub use fanout::{EncodedFanout, FanoutSubscriber, KeyframeRequester, PublishReport};
pub use frame::{
    AUDIO_FRAME_DURATION, AUDIO_FRAME_SAMPLES, AUDIO_SAMPLE_RATE, AudioFrame, EncodedFrame,
    I420Frame, MediaKind, RgbaFrame, VIDEO_CLOCK_RATE,
};
pub use level::AudioLevel;
pub use pipeline::{
    ApmControl, AudioPipelineConfig, AudioProcessingConfig, AudioSendPipeline, BitrateControl,
    LossControl, VideoPipelineConfig, VideoSendPipeline, VideoSendStats,
};
pub use playout::jitter::{JitterBuffer, JitterConfig, JitterStats, Playout, PushOutcome};
pub use playout::mixer::{AudioMixer, RemoteAudio};
pub use playout::output::{AudioOutput, OutputDevice, TestSound, play_test_sound};
pub use playout::video::{
    AvSync, PaceDecision, PliThrottle, RemoteVideo, RemoteVideoOutput, VideoPacer,
};
pub use resample::AudioResampler;
pub use source::{AudioSource, DeviceInfo, DeviceKind, EncodedSource, VideoSource};
pub use synthetic::audio::{ToneConfig, ToneSource};
pub use synthetic::unplug::{PlugHandle, Unpluggable};
pub use synthetic::video::{FrameMarker, TestPatternConfig, TestPatternSource, read_marker};
