//! Send pipelines the app starts and stops: a thread per source that captures, encodes once and
//! publishes to an [`EncodedFanout`], with a live preview / level meter on the side.
//!
//! ```text
//! VideoSource ──► quality step (scale, frame-rate cap) ──► H264Encoder ──► EncodedFanout ──► N tracks
//!      └──► preview (RGBA at a requested size, tokio watch)
//! AudioSource ──► resample to 48 kHz ──► audio processing (AEC3/NS/AGC2/HPF, optional)
//!      ──► level meter (watch) ──► OpusEncoder ──► EncodedFanout
//!                   ▲ far end: AudioMixer::set_render_tap(pipeline.render_tap())
//! ```

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::adapt::{FrameDropper, OvershootMeter, QualityScaler};
use crate::apm::{ApmConfig, AudioProcessor, RenderTap};
use crate::codec::h264::{H264Config, H264Encoder};
use crate::codec::opus::{OpusConfig, OpusEncoder};
use crate::convert::Scaler;
use crate::error::{MediaError, Result};
use crate::fanout::EncodedFanout;
use crate::frame::{AUDIO_SAMPLE_RATE, RgbaFrame};
use crate::level::AudioLevel;
use crate::resample::{AudioResampler, Reframer, remix_channels};
use crate::source::{AudioSource, VideoSource};

/// Settings of a [`VideoSendPipeline`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VideoPipelineConfig {
    /// Encoder settings (the bitrate is the start value; see
    /// [`VideoSendPipeline::set_target_bitrate`]).
    pub encoder: H264Config,
    /// Preview size (fits within, aspect kept); `None` disables the preview.
    pub preview: Option<(u32, u32)>,
    /// Step resolution / frame rate down under CPU pressure or bitrate overshoot.
    pub adapt_quality: bool,
}

impl Default for VideoPipelineConfig {
    fn default() -> Self {
        Self {
            encoder: H264Config::default(),
            preview: Some((320, 180)),
            adapt_quality: true,
        }
    }
}

/// Counters of a video send pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct VideoSendStats {
    /// Frames taken from the source.
    pub captured: u64,
    /// Frames encoded (and published once each).
    pub encoded: u64,
    /// Frames skipped by the frame-rate cap.
    pub skipped: u64,
    /// IDR frames sent.
    pub keyframes: u64,
    /// Encoded bytes.
    pub bytes: u64,
    /// Size last encoded.
    pub size: (u32, u32),
    /// Quality ladder level (0 = full).
    pub quality_level: usize,
    /// Smoothed encode time per frame, milliseconds.
    pub encode_ms: f64,
}

/// Sets a running [`VideoSendPipeline`]'s target bitrate; the encoder picks it up at its next
/// frame. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BitrateControl(Arc<AtomicU32>);

impl BitrateControl {
    /// Sets the target, bits/s.
    pub fn set(&self, bps: u32) {
        self.0.store(bps, Ordering::Relaxed);
    }

    /// The current target, bits/s.
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A running video send pipeline. Stop it with [`VideoSendPipeline::stop`] (or drop it).
#[derive(Debug)]
pub struct VideoSendPipeline {
    stop: Arc<AtomicBool>,
    bitrate: Arc<AtomicU32>,
    thread: Option<JoinHandle<Result<()>>>,
    preview: watch::Receiver<Option<Arc<RgbaFrame>>>,
    stats: Arc<Mutex<VideoSendStats>>,
}

impl VideoSendPipeline {
    /// Starts capturing from `source` and publishing to `fanout`.
    pub fn start(
        mut source: Box<dyn VideoSource>,
        config: VideoPipelineConfig,
        fanout: EncodedFanout,
    ) -> Result<Self> {
        let mut encoder = H264Encoder::new(config.encoder)?;
        let stop = Arc::new(AtomicBool::new(false));
        let bitrate = Arc::new(AtomicU32::new(config.encoder.bitrate_bps));
        let stats = Arc::new(Mutex::new(VideoSendStats::default()));
        let (preview_tx, preview_rx) = watch::channel(None);
        let (stop2, bitrate2, stats2) =
            (Arc::clone(&stop), Arc::clone(&bitrate), Arc::clone(&stats));
        let thread = std::thread::Builder::new()
            .name("rtcio-video-send".into())
            .spawn(move || {
                let result = run_video(
                    &mut *source,
                    &mut encoder,
                    &config,
                    &fanout,
                    &stop2,
                    &bitrate2,
                    &stats2,
                    &preview_tx,
                );
                source.stop();
                if let Err(e) = &result {
                    warn!(error = %e, "video send pipeline ended");
                }
                result
            })
            .map_err(MediaError::Io)?;
        Ok(Self {
            stop,
            bitrate,
            thread: Some(thread),
            preview: preview_rx,
            stats,
        })
    }

    /// The latest preview frame (RGBA). `changed().await` on it to follow the stream.
    pub fn preview(&self) -> watch::Receiver<Option<Arc<RgbaFrame>>> {
        self.preview.clone()
    }

    /// Sets the encoder's target bitrate (e.g. from the link's bandwidth estimate).
    pub fn set_target_bitrate(&self, bps: u32) {
        self.bitrate.store(bps, Ordering::Relaxed);
    }

    /// A handle that sets the target bitrate from elsewhere (a congestion-control task).
    pub fn bitrate_control(&self) -> BitrateControl {
        BitrateControl(Arc::clone(&self.bitrate))
    }

    /// Counters so far.
    pub fn stats(&self) -> VideoSendStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True once the thread has ended (source finished or failed).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops the pipeline and returns the error that ended it, if any. End of a finite source
    /// and stopping are not errors.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(Ok(()) | Err(MediaError::EndOfStream | MediaError::Stopped))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(MediaError::Stopped),
        }
    }
}

impl Drop for VideoSendPipeline {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// Encode errors in a row after which the video send pipeline gives up.
const MAX_ENCODE_FAILURES: u32 = 30;

#[allow(clippy::too_many_arguments)]
fn run_video(
    source: &mut dyn VideoSource,
    encoder: &mut H264Encoder,
    config: &VideoPipelineConfig,
    fanout: &EncodedFanout,
    stop: &AtomicBool,
    bitrate: &AtomicU32,
    stats: &Mutex<VideoSendStats>,
    preview: &watch::Sender<Option<Arc<RgbaFrame>>>,
) -> Result<()> {
    let mut scaler = Scaler::default();
    let mut preview_scaler = Scaler::default();
    let mut quality = QualityScaler::default();
    let mut dropper = FrameDropper::new();
    let source_fps = source.frame_rate().max(1.0);
    let mut next_due = Duration::ZERO;
    let mut encode_ms = 0.0f64;
    let mut overshoot = OvershootMeter::new();
    let mut failures = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let frame = source.next_frame()?;
        add_stats(stats, |st| st.captured += 1);
        if let Some((w, h)) = config.preview
            && preview.receiver_count() > 0
        {
            match preview_scaler.preview(&frame, w, h) {
                Ok(p) => {
                    preview.send_replace(Some(Arc::new(p)));
                }
                Err(e) => warn!(error = %e, "preview failed"),
            }
        }
        // Nobody takes the frames yet (the stream is not attached): encoding them would only
        // cost CPU, and their IDR, at the target of before the stream's, would be charged to
        // the frame dropper.
        if fanout.subscriber_count() == 0 {
            add_stats(stats, |st| st.skipped += 1);
            continue;
        }
        let target = bitrate.load(Ordering::Relaxed);
        quality.set_budget(target, (frame.width, frame.height), source_fps);
        if encoder.frames_encoded() == 0 {
            // The first IDR at the size the start rate feeds, not at full size and again a
            // rung or two down a few frames later.
            quality.start_at_budget();
        }
        let step = quality.step();
        let max_fps = step.max_fps.min(source_fps);
        if frame.timestamp + Duration::from_millis(2) < next_due {
            add_stats(stats, |st| st.skipped += 1);
            continue;
        }
        let interval = Duration::from_secs_f64(1.0 / f64::from(max_fps));
        next_due = next_due.max(frame.timestamp.saturating_sub(interval)) + interval;
        // Over budget: skip this frame (a pending keyframe request waits for the next one).
        if dropper.should_drop(frame.timestamp, target) {
            add_stats(stats, |st| st.skipped += 1);
            continue;
        }
        if target != encoder.config().bitrate_bps {
            encoder.set_bitrate(target)?;
        }
        if (encoder.config().max_fps - max_fps).abs() > 0.5 {
            encoder.set_frame_rate(max_fps)?;
        }
        let scaled;
        let input = if step.scale < 1.0 {
            let w = ((frame.width as f32 * step.scale) as u32 & !1).max(2);
            let h = ((frame.height as f32 * step.scale) as u32 & !1).max(2);
            scaled = scaler.scale_i420(&frame, w, h)?;
            &scaled
        } else {
            &frame
        };
        if fanout.take_keyframe_request() {
            encoder.request_keyframe();
        }
        let started = Instant::now();
        let encoded = match encoder.encode(input) {
            Ok(e) => {
                failures = 0;
                e
            }
            // One bad frame must not end the call's video: a new encoder starts with an IDR.
            Err(e) if failures < MAX_ENCODE_FAILURES => {
                failures += 1;
                // The first of a run is worth a warning; the rest of it would flood the log.
                if failures == 1 {
                    warn!(error = %e, "h264 encode failed; encoder rebuilt");
                } else {
                    debug!(error = %e, failures, "h264 encode failed again; encoder rebuilt");
                }
                encoder.rebuild()?;
                continue;
            }
            Err(e) => return Err(e),
        };
        let took = started.elapsed();
        encode_ms += (took.as_secs_f64() * 1000.0 - encode_ms) * 0.1;
        let Some(encoded) = encoded else { continue };
        dropper.on_encoded(encoded.data.len(), encoded.keyframe);
        let ratio = overshoot.on_encoded(
            encoded.timestamp,
            encoded.data.len(),
            encoded.keyframe,
            target,
        );
        fanout.publish(&encoded);
        if config.adapt_quality
            && let Some((step, reason)) = quality.on_frame(took, interval, ratio)
        {
            info!(?step, ?reason, "video quality changed");
            overshoot.reset();
        }
        add_stats(stats, |st| {
            st.encoded += 1;
            st.keyframes += u64::from(encoded.keyframe);
            st.bytes += encoded.data.len() as u64;
            st.size = (input.width, input.height);
            st.quality_level = quality.level();
            st.encode_ms = encode_ms;
        });
    }
    Ok(())
}

fn add_stats<T>(stats: &Mutex<T>, f: impl FnOnce(&mut T)) {
    f(&mut stats.lock().unwrap_or_else(|e| e.into_inner()));
}

/// Settings of an [`AudioSendPipeline`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AudioPipelineConfig {
    /// Encoder settings (channels must match what the source is remixed to).
    pub encoder: OpusConfig,
    /// Clean the signal before encoding (a microphone): echo cancellation, noise
    /// suppression, gain, high-pass. `None`: the source is encoded as it is (tones, files).
    pub processing: Option<AudioProcessingConfig>,
}

/// Audio processing in an [`AudioSendPipeline`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioProcessingConfig {
    /// Which parts run (changeable later through [`ApmControl`]).
    pub apm: ApmConfig,
    /// Channels of the far end fed through [`AudioSendPipeline::render_tap`] (the
    /// [`AudioMixer`](crate::AudioMixer)'s channel count).
    pub render_channels: u16,
}

impl Default for AudioProcessingConfig {
    fn default() -> Self {
        AudioProcessingConfig {
            apm: ApmConfig::VOICE,
            render_channels: 1,
        }
    }
}

#[derive(Debug)]
struct ApmShared {
    config: Mutex<ApmConfig>,
    output_present: AtomicBool,
    /// Bumped on every change, so the audio thread looks at the lock only then.
    generation: AtomicU64,
    erle_centi_db: std::sync::atomic::AtomicI32,
}

/// Changes a running pipeline's audio processing from any thread; it applies at the next
/// 20 ms frame. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ApmControl(Arc<ApmShared>);

impl ApmControl {
    fn new(config: ApmConfig) -> Self {
        ApmControl(Arc::new(ApmShared {
            config: Mutex::new(config),
            // No far end until someone says a speaker plays it: no echo to cancel.
            output_present: AtomicBool::new(false),
            generation: AtomicU64::new(1),
            erle_centi_db: std::sync::atomic::AtomicI32::new(i32::MIN),
        }))
    }

    /// Switches parts on or off (music mode: [`ApmConfig::MUSIC`]).
    pub fn set_config(&self, config: ApmConfig) {
        *self.0.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
        self.0.generation.fetch_add(1, Ordering::Release);
    }

    /// The switches asked for.
    pub fn config(&self) -> ApmConfig {
        *self.0.config.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether an output device plays the far end (false, the default, for the null sink or
    /// no playout at all: the canceller is off then, the rest runs).
    pub fn set_output_present(&self, present: bool) {
        self.0.output_present.store(present, Ordering::Relaxed);
        self.0.generation.fetch_add(1, Ordering::Release);
    }

    /// The echo canceller's latest echo return loss enhancement, dB (`None` before it
    /// reports one or while it is off).
    pub fn erle_db(&self) -> Option<f64> {
        let v = self.0.erle_centi_db.load(Ordering::Relaxed);
        (v != i32::MIN).then(|| f64::from(v) / 100.0)
    }
}

/// Sets a running [`AudioSendPipeline`]'s expected loss (percent) for Opus in-band FEC. Cheap
/// to clone.
#[derive(Clone, Debug)]
pub struct LossControl(Arc<AtomicU8>);

impl LossControl {
    /// Sets the expected loss, percent (capped at 100).
    pub fn set(&self, percent: u8) {
        self.0.store(percent.min(100), Ordering::Relaxed);
    }

    /// The current value, percent.
    pub fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A running audio send pipeline with a level meter.
#[derive(Debug)]
pub struct AudioSendPipeline {
    stop: Arc<AtomicBool>,
    muted: Arc<AtomicBool>,
    packets: Arc<AtomicU64>,
    expected_loss: Arc<AtomicU8>,
    bitrate: Arc<AtomicU32>,
    thread: Option<JoinHandle<Result<()>>>,
    level: watch::Receiver<AudioLevel>,
    processing: Option<(RenderTap, ApmControl)>,
}

impl AudioSendPipeline {
    /// Starts reading `source`, metering, encoding and publishing to `fanout`.
    pub fn start(
        mut source: Box<dyn AudioSource>,
        config: AudioPipelineConfig,
        fanout: EncodedFanout,
    ) -> Result<Self> {
        let mut encoder = OpusEncoder::new(config.encoder)?;
        let channels = config.encoder.channels;
        let mut processor = match config.processing {
            Some(p) => Some(AudioProcessor::new(
                p.apm,
                AUDIO_SAMPLE_RATE,
                channels,
                p.render_channels,
            )?),
            None => None,
        };
        let processing = processor.as_mut().map(|p| {
            let control = ApmControl::new(p.config());
            p.set_output_present(false);
            (p.render_tap(), control)
        });
        let control = processing.as_ref().map(|(_, c)| c.clone());
        let mut resampler = AudioResampler::new(source.sample_rate(), AUDIO_SAMPLE_RATE, channels)?;
        let stop = Arc::new(AtomicBool::new(false));
        let muted = Arc::new(AtomicBool::new(false));
        let packets = Arc::new(AtomicU64::new(0));
        let expected_loss = Arc::new(AtomicU8::new(config.encoder.expected_loss_percent));
        let bitrate = Arc::new(AtomicU32::new(config.encoder.bitrate_bps));
        let (level_tx, level_rx) = watch::channel(AudioLevel::default());
        let (stop2, muted2, packets2, loss2, bitrate2) = (
            Arc::clone(&stop),
            Arc::clone(&muted),
            Arc::clone(&packets),
            Arc::clone(&expected_loss),
            Arc::clone(&bitrate),
        );
        let thread = std::thread::Builder::new()
            .name("rtcio-audio-send".into())
            .spawn(move || {
                let mut reframer = Reframer::new(AUDIO_SAMPLE_RATE, channels);
                let mut seen_generation = 0u64;
                let mut frames = 0u64;
                let mut asked_bps = encoder.config().bitrate_bps;
                let result = (|| {
                    while !stop2.load(Ordering::Relaxed) {
                        let frame = source.next_frame()?;
                        let remixed = remix_channels(&frame.samples, frame.channels, channels);
                        reframer.push(&resampler.process(&remixed)?);
                        while let Some(mut f) = reframer.pop() {
                            if let (Some(apm), Some(ctl)) = (processor.as_mut(), control.as_ref()) {
                                let generation = ctl.0.generation.load(Ordering::Acquire);
                                if generation != seen_generation {
                                    seen_generation = generation;
                                    apm.set_config(ctl.config());
                                    apm.set_output_present(
                                        ctl.0.output_present.load(Ordering::Relaxed),
                                    );
                                }
                                // A failure here is a length bug, not the user's: send the
                                // raw signal rather than nothing.
                                if let Err(e) = apm.process_capture(&mut f.samples) {
                                    warn!(%e, "audio processing skipped a frame");
                                }
                                frames += 1;
                                if frames.is_multiple_of(50) {
                                    let erle = apm
                                        .stats()
                                        .erle_db
                                        .filter(|_| apm.echo_cancelling())
                                        .map_or(i32::MIN, |v| (v * 100.0) as i32);
                                    ctl.0.erle_centi_db.store(erle, Ordering::Relaxed);
                                }
                            }
                            // The meter shows what is sent: after processing.
                            level_tx.send_replace(AudioLevel::measure(&f));
                            if muted2.load(Ordering::Relaxed) {
                                f.samples.fill(0.0);
                            }
                            let loss = loss2.load(Ordering::Relaxed);
                            if loss != encoder.config().expected_loss_percent {
                                encoder.set_expected_loss(loss)?;
                            }
                            // Compared with what was asked, not what the encoder took (it
                            // clamps), so an out-of-range value is applied once.
                            let bps = bitrate2.load(Ordering::Relaxed);
                            if bps != asked_bps {
                                asked_bps = bps;
                                encoder.set_bitrate(bps)?;
                            }
                            for packet in encoder.push(&f)? {
                                fanout.publish(&packet);
                                packets2.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Ok(())
                })();
                source.stop();
                result
            })
            .map_err(MediaError::Io)?;
        Ok(Self {
            stop,
            muted,
            packets,
            expected_loss,
            bitrate,
            thread: Some(thread),
            level: level_rx,
            processing,
        })
    }

    /// Where the far end goes (pass it to [`AudioMixer::set_render_tap`](crate::AudioMixer::set_render_tap)),
    /// when the pipeline processes audio.
    pub fn render_tap(&self) -> Option<RenderTap> {
        self.processing.as_ref().map(|(t, _)| t.clone())
    }

    /// Switches for the audio processing, when the pipeline has it.
    pub fn apm_control(&self) -> Option<ApmControl> {
        self.processing.as_ref().map(|(_, c)| c.clone())
    }

    /// RMS/peak of the latest 20 ms (after processing, before muting), for the mic meter.
    pub fn level(&self) -> watch::Receiver<AudioLevel> {
        self.level.clone()
    }

    /// Mutes (sends silence, which DTX turns into almost nothing) or unmutes.
    pub fn set_muted(&self, muted: bool) {
        self.muted.store(muted, Ordering::Relaxed);
    }

    /// Packets published so far.
    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }

    /// A handle that sets the loss the encoder's in-band FEC is sized for (from the receivers'
    /// reports); the encoder picks it up at its next frame.
    pub fn loss_control(&self) -> LossControl {
        LossControl(Arc::clone(&self.expected_loss))
    }

    /// A handle that sets the encoder's bitrate (bits/s; Opus takes 6 000–510 000); the
    /// encoder picks it up at its next frame.
    pub fn bitrate_control(&self) -> BitrateControl {
        BitrateControl(Arc::clone(&self.bitrate))
    }

    /// True once the thread has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops the pipeline; returns the error that ended it, if any.
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(Ok(()) | Err(MediaError::EndOfStream | MediaError::Stopped))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(MediaError::Stopped),
        }
    }
}

impl Drop for AudioSendPipeline {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}
