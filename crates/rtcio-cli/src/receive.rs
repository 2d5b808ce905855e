//! Receiving media: one thread per remote track decodes what arrives (OpenH264 / Opus), counts
//! it for the `video-stats` / `audio-stats` lines, reads the synthetic source's frame marks
//! (glass-to-glass latency) and, with `--record`, writes the track to a playable file.
//!
//! Video is shown (frame marks read, freezes counted) at its playout time: capture time + a
//! jitter-adaptive delay, in step with the stream's audio when `--play` plays it (lip sync,
//! see [`rtcio_glue::playout`]). With `--play` and the synthetic tone, the tone's marks (on
//! whole seconds of the capture clock) give the audio/video offset as played: `av_offset_ms`.
//! Lip sync uses the tracks' RTCP sender reports once both have one (`path_offset_ms` in the
//! audio line), and delays the audio (`audio_extra_ms`) when the video is the later one.
//! Test knobs (environment): `RTCIO_AV_SYNC=off` leaves video and audio unsynced,
//! `RTCIO_AV_SR=off` ignores sender reports (a shared path is assumed),
//! `RTCIO_VIDEO_PLAYOUT=off` shows video as decoded (no smoothing), `RTCIO_AUDIO_MIN_DELAY_MS`
//! sets the audio jitter buffer's minimum delay, `RTCIO_VIDEO_MIN_DELAY_MS` the video
//! playout's.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rtcio::{MediaKind, RemoteStream, RemoteTrack, RtpCodec};
use rtcio_glue::{
    FreezeStats, LipSync, Recv, RemoteVideoPath, SharedAudioClock, VideoSync, note_audio_playout,
    recv_until,
};
use rtcio_media::playout::video::VideoPlayoutConfig;
use rtcio_media::synthetic::audio::{detect_marks, to_mono};
use rtcio_media::synthetic::video::{read_marker, unix_micros};
use rtcio_media::{
    ApmControl, AudioLevel, AudioMixer, AudioOutput, I420Frame, JitterConfig, OpusDecoder,
    OutputDevice, RenderTap,
};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use crate::output::Output;
use crate::record::{self, Recorder};
use crate::send::{kind_str, round2};

/// Latency samples kept per track for the final percentiles.
const MAX_SAMPLES: usize = 200_000;
/// Frequency of the synthetic tone's marks (`ToneConfig::default`).
const TONE_MARK_HZ: f32 = 3_000.0;
/// Frame marks below this (a day, in µs) count media time, not Unix time.
const MEDIA_TIME_MARKS_BELOW_US: u64 = 86_400_000_000;
/// Recent video delays (shown − captured) the A/V offset compares an audio mark with.
const VIDEO_DELAYS: usize = 30;

/// The playout knobs, read once from the environment (test use only).
#[derive(Debug, Clone, Copy)]
struct Knobs {
    av_sync: bool,
    sender_reports: bool,
    video_playout: bool,
    audio_min_delay: Option<Duration>,
    video_min_delay: Option<Duration>,
}

impl Knobs {
    fn from_env() -> Self {
        let off = |k: &str| std::env::var(k).is_ok_and(|v| v == "off");
        let ms = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map(|ms| Duration::from_millis(ms.min(1000)))
        };
        Knobs {
            av_sync: !off("RTCIO_AV_SYNC"),
            sender_reports: !off("RTCIO_AV_SR"),
            video_playout: !off("RTCIO_VIDEO_PLAYOUT"),
            audio_min_delay: ms("RTCIO_AUDIO_MIN_DELAY_MS"),
            video_min_delay: ms("RTCIO_VIDEO_MIN_DELAY_MS"),
        }
    }
}

/// What a stream's video and audio threads share for lip sync and its measurement.
#[derive(Debug, Default)]
struct StreamAv {
    /// Recent glass-to-glass delays (µs) of shown frames with frame marks.
    video_delays_us: std::collections::VecDeque<i64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters one track's thread updates.
#[derive(Debug, Default, Clone)]
struct Counters {
    received: u64,
    bytes: u64,
    keyframes: u64,
    lost: u64,
    decoded: u64,
    decode_errors: u64,
    keyframe_requests: u64,
    width: u32,
    height: u32,
    codec: String,
    /// Glass-to-glass latencies (µs) read from frame marks since the last stats line.
    window_latency_us: Vec<u64>,
    /// All of them (bounded), for the summary.
    latency_us: Vec<u64>,
    first_decoded: Option<Instant>,
    last_decoded: Option<Instant>,
    /// Sum of squared samples and count, for the audio level since the last line.
    level_sq: f64,
    level_n: u64,
    /// Freezes between shown video frames (Chromium's rule).
    freezes: FreezeStats,
    /// Video frames shown, shown past the playout maximum, and the current playout delay (ms).
    shown: u64,
    shown_late: u64,
    playout_delay_ms: u64,
    /// Audio/video offsets (µs, audio later when positive) at the tone's marks, since the last
    /// line and all of them.
    window_av_us: Vec<i64>,
    av_us: Vec<i64>,
    /// What lip sync did last (audio tracks).
    sync: rtcio_glue::SyncStatus,
    /// Mean U and V of the last picture shown: a fingerprint of what is seen (a switched
    /// camera shows up in it).
    chroma: Option<(f64, f64)>,
    ended: bool,
}

/// Identity of one remote track for the lines we print.
#[derive(Debug, Clone)]
struct TrackInfo {
    peer: String,
    name: Option<String>,
    stream: String,
    kind: MediaKind,
    mid: String,
}

struct Consumer {
    info: TrackInfo,
    counters: Arc<Mutex<Counters>>,
    thread: Option<JoinHandle<()>>,
    /// Counters at the previous stats line, and when.
    last: (Instant, Counters),
}

/// Glass-to-glass latency of one remote video track, from its frame marks.
#[derive(Debug, Clone)]
pub struct LatencyReport {
    pub peer: String,
    pub name: Option<String>,
    pub stream: String,
    pub frames_decoded: u64,
    pub samples: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub fps: f64,
}

impl LatencyReport {
    pub fn to_json(&self) -> Value {
        json!({
            "peer": self.peer, "name": self.name, "stream": self.stream,
            "frames_decoded": self.frames_decoded, "samples": self.samples,
            "p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "p99_ms": self.p99_ms,
            "mean_ms": self.mean_ms, "min_ms": self.min_ms, "max_ms": self.max_ms,
            "fps": self.fps,
        })
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(us: u64) -> f64 {
    round2(us as f64 / 1000.0)
}

/// `--play`: every remote audio track mixed and played.
pub struct Playout {
    mixer: Arc<Mutex<AudioMixer>>,
    output: AudioOutput,
}

/// Every remote track being consumed.
pub struct Receiver {
    out: Output,
    record_dir: Option<PathBuf>,
    stop: Arc<AtomicBool>,
    consumers: HashMap<(String, String), Consumer>,
    /// Latency of tracks that ended.
    done_reports: Vec<LatencyReport>,
    playout: Option<Playout>,
    lipsync: LipSync,
    streams_av: HashMap<String, Arc<Mutex<StreamAv>>>,
    knobs: Knobs,
    /// Our microphone's echo-canceller inputs, kept to feed the next output after a switch.
    echo: (Option<RenderTap>, Option<ApmControl>),
}

impl Receiver {
    pub fn new(out: Output, record_dir: Option<PathBuf>) -> Self {
        Receiver {
            out,
            record_dir,
            stop: Arc::new(AtomicBool::new(false)),
            consumers: HashMap::new(),
            done_reports: Vec::new(),
            playout: None,
            lipsync: LipSync::new(),
            streams_av: HashMap::new(),
            knobs: Knobs::from_env(),
            echo: (None, None),
        }
    }

    /// Plays remote audio on `device` from now on (the null sink, with a warning, when it
    /// cannot be opened). Prints a `playout` line naming the device.
    pub fn play(&mut self, device: OutputDevice) {
        let mut jitter = JitterConfig::default();
        if let Some(d) = self.knobs.audio_min_delay {
            jitter.min_delay = d;
            jitter.max_delay = jitter.max_delay.max(d * 2);
        }
        let mixer = Arc::new(Mutex::new(AudioMixer::with_jitter(1, jitter)));
        let output = AudioOutput::start_or_null(mixer.clone(), device);
        self.out.line(
            "playout",
            json!({"device": output.device_name(), "null": output.is_null()}),
        );
        self.playout = Some(Playout { mixer, output });
    }

    /// Gives our microphone's echo canceller what `--play` plays (nothing to cancel without a
    /// speaker).
    pub fn feed_echo_canceller(&mut self, tap: Option<RenderTap>, control: Option<ApmControl>) {
        self.echo = (tap.clone(), control.clone());
        match &self.playout {
            Some(p) => rtcio_glue::feed_echo_canceller(&p.mixer, !p.output.is_null(), tap, control),
            None => {
                if let Some(c) = control {
                    c.set_output_present(false);
                }
            }
        }
    }

    /// Plays the room's audio on `device` from now on (`--control-stdin`'s `speaker`): the
    /// mixer and the streams stay, the old output stops once the new one is open, and the
    /// echo canceller hears the new one. Errors (the old output kept) when nothing is played
    /// (no `--play`) or the device cannot be opened. Returns the device's name.
    pub fn set_speaker(&mut self, device: OutputDevice) -> Result<String, String> {
        let Some(p) = &mut self.playout else {
            return Err("no audio is played: start with --play to switch the speaker".into());
        };
        let output = AudioOutput::start(p.mixer.clone(), device)
            .map_err(|e| format!("cannot open the output: {e}"))?;
        let mut old = std::mem::replace(&mut p.output, output);
        old.stop();
        let name = p.output.device_name().to_string();
        self.out.line(
            "playout",
            json!({"device": name, "null": p.output.is_null()}),
        );
        let (tap, control) = self.echo.clone();
        self.feed_echo_canceller(tap, control);
        Ok(name)
    }

    /// Starts consuming the stream's tracks that are not consumed yet.
    pub fn add_stream(&mut self, stream: &RemoteStream, name: Option<String>) {
        for track in stream.tracks() {
            let key = (stream.peer().to_string(), track.mid().to_string());
            if self
                .consumers
                .get(&key)
                .is_some_and(|c| c.thread.as_ref().is_some_and(|t| !t.is_finished()))
            {
                continue;
            }
            self.start(stream, track, name.clone());
        }
    }

    /// A track added to a stream (or re-enabled): always a new track object.
    pub fn add_track(&mut self, stream: &RemoteStream, mid: &str, name: Option<String>) {
        if let Some(track) = stream.tracks().into_iter().find(|t| t.mid() == mid) {
            self.start(stream, track, name);
        }
    }

    fn start(&mut self, stream: &RemoteStream, track: RemoteTrack, name: Option<String>) {
        let info = TrackInfo {
            peer: stream.peer().to_string(),
            name,
            stream: stream.id(),
            kind: track.kind(),
            mid: track.mid().to_string(),
        };
        let counters = Arc::new(Mutex::new(Counters::default()));
        let (c, stop, out) = (counters.clone(), self.stop.clone(), self.out);
        let mixer = self.playout.as_ref().map(|p| p.mixer.clone());
        let recorder = self.record_dir.as_ref().map(|dir| {
            Recorder::new(
                dir,
                &info.peer,
                &info.stream,
                kind_str(info.kind),
                &info.mid,
            )
        });
        let thread_info = info.clone();
        let av_key = format!("{}/{}", info.peer, info.stream);
        let av = self.streams_av.entry(av_key.clone()).or_default().clone();
        let clock = self.lipsync.clock(&av_key);
        let (lipsync, knobs) = (self.lipsync.clone(), self.knobs);
        let spawned = std::thread::Builder::new()
            .name(format!("rtcio-recv-{}", kind_str(info.kind)))
            .spawn(move || {
                consume(
                    track,
                    Sinks {
                        info: thread_info,
                        counters: c,
                        stop,
                        recorder,
                        out,
                        mixer,
                        av,
                        clock,
                        lipsync,
                        av_key,
                        knobs,
                    },
                )
            });
        let thread = match spawned {
            Ok(t) => Some(t),
            Err(e) => {
                warn!("cannot start a receive thread: {e}");
                None
            }
        };
        info!(peer = %info.peer, kind = kind_str(info.kind), mid = %info.mid, "receiving");
        let key = (info.peer.clone(), info.mid.clone());
        if let Some(old) = self.consumers.insert(
            key,
            Consumer {
                info,
                counters,
                thread,
                last: (Instant::now(), Counters::default()),
            },
        ) {
            // Its track was replaced: it ends by itself once the library drops the old route.
            drop(old);
        }
    }

    /// One `video-stats` / `audio-stats` line per track, since the previous call. Tracks that
    /// ended are reported once more, then dropped.
    pub fn stats(&mut self) -> Vec<(&'static str, Value)> {
        let now = Instant::now();
        let mut lines = Vec::new();
        let mut gone = Vec::new();
        for (key, c) in self.consumers.iter_mut() {
            let cur = {
                let mut g = lock(&c.counters);
                let snap = g.clone();
                g.window_latency_us.clear();
                g.window_av_us.clear();
                g.level_sq = 0.0;
                g.level_n = 0;
                snap
            };
            let (t0, prev) = &c.last;
            let secs = now.duration_since(*t0).as_secs_f64().max(1e-3);
            let base = json!({
                "peer": c.info.peer,
                "name": c.info.name,
                "stream": c.info.stream,
                "mid": c.info.mid,
                "codec": cur.codec,
            });
            let mut line = base;
            match c.info.kind {
                MediaKind::Video => {
                    line["frames_received"] = json!(cur.received);
                    line["frames_decoded"] = json!(cur.decoded);
                    line["fps"] = json!(round2((cur.decoded - prev.decoded) as f64 / secs));
                    line["width"] = json!(cur.width);
                    line["height"] = json!(cur.height);
                    line["keyframes"] = json!(cur.keyframes);
                    line["lost"] = json!(cur.lost);
                    line["decode_errors"] = json!(cur.decode_errors);
                    line["keyframe_requests"] = json!(cur.keyframe_requests);
                    line["frames_shown"] = json!(cur.shown);
                    line["shown_late"] = json!(cur.shown_late);
                    line["playout_delay_ms"] = json!(cur.playout_delay_ms);
                    line["freeze_count"] = json!(cur.freezes.count);
                    line["total_freezes_ms"] = json!(cur.freezes.total.as_millis() as u64);
                    line["kbps"] = json!(round2(
                        (cur.bytes - prev.bytes) as f64 * 8.0 / secs / 1000.0
                    ));
                    if !cur.window_latency_us.is_empty() {
                        let mut w = cur.window_latency_us.clone();
                        w.sort_unstable();
                        line["latency_ms"] = json!(ms(percentile(&w, 50.0)));
                    }
                    if let Some((u, v)) = cur.chroma {
                        line["chroma_u"] = json!(round2(u));
                        line["chroma_v"] = json!(round2(v));
                    }
                }
                MediaKind::Audio => {
                    line["packets"] = json!(cur.received);
                    line["decoded"] = json!(cur.decoded);
                    line["pps"] = json!(round2((cur.received - prev.received) as f64 / secs));
                    line["lost"] = json!(cur.lost);
                    line["decode_errors"] = json!(cur.decode_errors);
                    line["kbps"] = json!(round2(
                        (cur.bytes - prev.bytes) as f64 * 8.0 / secs / 1000.0
                    ));
                    if !cur.window_av_us.is_empty() {
                        let mut w = cur.window_av_us.clone();
                        w.sort_unstable();
                        line["av_offset_ms"] = json!(round2(w[w.len() / 2] as f64 / 1000.0));
                    }
                    line["audio_extra_ms"] = json!(cur.sync.audio_extra.as_millis() as u64);
                    if let Some(o) = cur.sync.path_offset_ms {
                        line["path_offset_ms"] = json!(round2(o));
                    }
                    let rms = if cur.level_n > 0 {
                        (cur.level_sq / cur.level_n as f64).sqrt() as f32
                    } else {
                        0.0
                    };
                    line["level_dbfs"] =
                        json!(round2(f64::from(AudioLevel { rms, peak: rms }.rms_dbfs())));
                    // What `--play` is playing of this track right now (its last 20 ms).
                    if let Some(p) = &self.playout {
                        let id = format!("{}/{}", key.0, key.1);
                        if let Some(r) = lock(&p.mixer).peer(&id) {
                            line["playing_dbfs"] = json!(round2(f64::from(r.level().rms_dbfs())));
                        }
                    }
                }
            }
            if cur.ended {
                line["ended"] = json!(true);
                gone.push(key.clone());
            }
            let kind = match c.info.kind {
                MediaKind::Video => "video-stats",
                MediaKind::Audio => "audio-stats",
            };
            lines.push((kind, line));
            c.last = (now, cur);
        }
        for k in gone {
            if let Some(c) = self.consumers.remove(&k)
                && let Some(r) = report(&c.info, &lock(&c.counters))
            {
                self.done_reports.push(r);
            }
        }
        lines.sort_by_key(|a| a.1.to_string());
        lines
    }

    /// Latency of every remote video track that carried frame marks (ended ones included).
    pub fn latency_reports(&self) -> Vec<LatencyReport> {
        let mut out = self.done_reports.clone();
        for c in self.consumers.values() {
            if let Some(r) = report(&c.info, &lock(&c.counters)) {
                out.push(r);
            }
        }
        out.sort_by(|a, b| (&a.peer, &a.stream).cmp(&(&b.peer, &b.stream)));
        out
    }

    /// Stops every thread (recordings are finished and flushed), waiting at most `wait`.
    pub fn stop(&mut self, wait: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + wait;
        for c in self.consumers.values_mut() {
            if let Some(t) = c.thread.take() {
                while !t.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                if t.is_finished() {
                    let _ = t.join();
                } else {
                    warn!(peer = %c.info.peer, mid = %c.info.mid, "receive thread did not stop in time");
                }
            }
        }
    }
}

fn report(info: &TrackInfo, g: &Counters) -> Option<LatencyReport> {
    if info.kind != MediaKind::Video || g.latency_us.is_empty() {
        return None;
    }
    let mut v = g.latency_us.clone();
    v.sort_unstable();
    let span = match (g.first_decoded, g.last_decoded) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    Some(LatencyReport {
        peer: info.peer.clone(),
        name: info.name.clone(),
        stream: info.stream.clone(),
        frames_decoded: g.decoded,
        samples: v.len(),
        p50_ms: ms(percentile(&v, 50.0)),
        p95_ms: ms(percentile(&v, 95.0)),
        p99_ms: ms(percentile(&v, 99.0)),
        mean_ms: round2(v.iter().sum::<u64>() as f64 / v.len() as f64 / 1000.0),
        min_ms: ms(v[0]),
        max_ms: ms(v[v.len() - 1]),
        fps: if span > 0.0 {
            round2(g.decoded.saturating_sub(1) as f64 / span)
        } else {
            0.0
        },
    })
}

/// The per-track thread.
/// Where one consumed track's frames go.
struct Sinks {
    info: TrackInfo,
    counters: Arc<Mutex<Counters>>,
    stop: Arc<AtomicBool>,
    recorder: Option<Recorder>,
    out: Output,
    /// `--play`'s mixer (audio only).
    mixer: Option<Arc<Mutex<AudioMixer>>>,
    /// Shared with the other track of the same stream.
    av: Arc<Mutex<StreamAv>>,
    clock: SharedAudioClock,
    lipsync: LipSync,
    av_key: String,
    knobs: Knobs,
}

fn consume(track: RemoteTrack, sinks: Sinks) {
    let Sinks {
        info,
        counters,
        stop,
        mut recorder,
        out,
        mixer,
        av,
        clock,
        lipsync,
        av_key,
        knobs,
    } = sinks;
    // The mixer's id for this track (one jitter buffer and decoder per track).
    let mix_id = format!("{}/{}", info.peer, info.mid);
    // Decoder and playout, created at the first video frame.
    let mut video: Option<RemoteVideoPath> = None;
    let mut audio: Option<OpusDecoder> = None;
    let mut config = VideoPlayoutConfig::default();
    if let Some(d) = knobs.video_min_delay {
        config.min_delay = d;
        config.max_delay = config.max_delay.max(d);
    }
    let sender_report = || {
        if knobs.sender_reports {
            track.sender_report()
        } else {
            None
        }
    };
    let mut marks = MarkReader::default();
    loop {
        let due = video.as_ref().and_then(|v| v.next_due());
        let frame = match recv_until(&track, &stop, due) {
            Recv::Frame(f) => f,
            Recv::Due => {
                let now = Instant::now();
                if let Some(v) = video.as_mut()
                    && let Some(pic) = v.on_due(now)
                {
                    show(&pic, now, v, &counters, &av);
                }
                continue;
            }
            Recv::Ended => break,
        };
        {
            let mut g = lock(&counters);
            g.received += 1;
            g.bytes += frame.data.len() as u64;
            g.keyframes += u64::from(frame.keyframe && info.kind == MediaKind::Video);
            g.lost += u64::from(frame.lost_before);
            if g.codec.is_empty() {
                g.codec = codec_name(&frame.codec);
            }
        }
        if let Some(r) = recorder.as_mut() {
            match r.write(&frame, info.kind) {
                Ok(Some(path)) => out.line(
                    "record",
                    json!({"peer": info.peer, "name": info.name, "stream": info.stream,
                           "kind": kind_str(info.kind), "mid": info.mid, "path": path}),
                ),
                Ok(None) => {}
                Err(e) => {
                    warn!(
                        "recording {}: {e}; recording of this track stopped",
                        info.mid
                    );
                    recorder = None;
                }
            }
        }
        match (info.kind, &frame.codec) {
            (MediaKind::Video, _) => {
                let v = match &mut video {
                    Some(v) => v,
                    None => match RemoteVideoPath::new(config) {
                        Ok(mut v) => {
                            v.set_playout_enabled(knobs.video_playout);
                            video.insert(v)
                        }
                        Err(e) => {
                            warn!("H.264 decoder: {e}");
                            break;
                        }
                    },
                };
                let sync = knobs.av_sync.then(|| VideoSync {
                    lipsync: &lipsync,
                    key: &av_key,
                    sender_report: sender_report(),
                });
                let pic = v.on_frame(&frame, &track, Instant::now(), sync);
                let st = v.decoder_stats();
                {
                    let mut g = lock(&counters);
                    g.decoded = st.decoded;
                    g.decode_errors = st.decode_errors;
                    g.keyframe_requests = st.keyframe_requests;
                }
                if let Some(pic) = pic {
                    show(&pic, Instant::now(), v, &counters, &av);
                }
            }
            (MediaKind::Audio, RtpCodec::Opus) => {
                if let Some(m) = &mixer
                    && let Err(e) = lock(m).push(
                        &mix_id,
                        frame.rtp_timestamp,
                        frame.data.clone(),
                        frame.received,
                    )
                {
                    debug!("playout: {e}");
                }
                if let Some(m) = &mixer {
                    note_audio_playout(&clock, m, &mix_id, frame.rtp_timestamp, frame.received);
                    if knobs.av_sync {
                        let st = lipsync.sync_audio(&av_key, m, &mix_id, sender_report());
                        lock(&counters).sync = st;
                    }
                }
                let dec = match &mut audio {
                    Some(d) => d,
                    None => match OpusDecoder::new(record::opus_channels(&frame.data)) {
                        Ok(d) => audio.insert(d),
                        Err(e) => {
                            warn!("Opus decoder: {e}");
                            break;
                        }
                    },
                };
                match dec.decode(&frame.data, Duration::ZERO) {
                    Ok(pcm) => {
                        let sq: f64 = pcm.samples.iter().map(|s| f64::from(*s).powi(2)).sum();
                        if mixer.is_some() {
                            let mono = to_mono(&pcm.samples, pcm.channels);
                            marks.push(&mono, frame.rtp_timestamp);
                            let offsets = marks.resolve(&clock, &av);
                            let mut g = lock(&counters);
                            for o in offsets {
                                g.window_av_us.push(o);
                                if g.av_us.len() < MAX_SAMPLES {
                                    g.av_us.push(o);
                                }
                            }
                        }
                        let mut g = lock(&counters);
                        g.decoded += 1;
                        g.level_sq += sq;
                        g.level_n += pcm.samples.len() as u64;
                    }
                    Err(e) => {
                        debug!("decode: {e}");
                        lock(&counters).decode_errors += 1;
                    }
                }
            }
            // Another codec (VP8 from a browser that would not take H.264): counted only.
            _ => {}
        }
    }
    if let Some(r) = recorder.take()
        && let Err(e) = r.finish()
    {
        warn!("finishing the recording of {}: {e}", info.mid);
    }
    if let Some(m) = &mixer {
        lock(m).remove_peer(&mix_id);
    }
    lock(&counters).ended = true;
}

/// A picture reaches its render time: read its frame mark (glass-to-glass latency as shown)
/// and count it.
fn show(
    pic: &I420Frame,
    now: Instant,
    video: &RemoteVideoPath,
    counters: &Mutex<Counters>,
    av: &Mutex<StreamAv>,
) {
    let st = video.playout_stats();
    let mut g = lock(counters);
    g.freezes = st.freezes;
    g.shown = st.shown;
    g.shown_late = st.shown_late;
    g.playout_delay_ms = st.delay.as_millis() as u64;
    g.width = pic.width;
    g.height = pic.height;
    g.first_decoded.get_or_insert(now);
    g.last_decoded = Some(now);
    g.chroma = mean_chroma(pic);
    if let Some(m) = read_marker(pic) {
        let age = unix_micros().saturating_sub(m.capture_time_us);
        // Media-time marks (a file made for Chromium's fake camera) are no latency.
        if m.capture_time_us > MEDIA_TIME_MARKS_BELOW_US {
            g.window_latency_us.push(age);
            if g.latency_us.len() < MAX_SAMPLES {
                g.latency_us.push(age);
            }
        }
        let mut a = lock(av);
        if a.video_delays_us.len() == VIDEO_DELAYS {
            a.video_delays_us.pop_front();
        }
        a.video_delays_us.push_back(age as i64);
    }
}

/// Mean U and V of a picture, from every 4th sample of every 4th chroma row (cheap enough for
/// every frame shown).
fn mean_chroma(pic: &I420Frame) -> Option<(f64, f64)> {
    let (cw, ch) = (
        pic.width.div_ceil(2) as usize,
        pic.height.div_ceil(2) as usize,
    );
    let (mut u, mut v, mut n) = (0u64, 0u64, 0u64);
    for row in (0..ch).step_by(4) {
        let ur = pic.u.get(row * pic.stride_u..row * pic.stride_u + cw)?;
        let vr = pic.v.get(row * pic.stride_v..row * pic.stride_v + cw)?;
        for (a, b) in ur.iter().step_by(4).zip(vr.iter().step_by(4)) {
            u += u64::from(*a);
            v += u64::from(*b);
            n += 1;
        }
    }
    (n > 0).then(|| (u as f64 / n as f64, v as f64 / n as f64))
}

/// Finds the tone's marks in decoded audio (one a second of the sender's clock) and, once a
/// mark has played, its audio/video offset: how much later than the video of the same moment
/// it was played.
///
/// The marks fall on whole seconds of the clock the video's frame marks count in: the Unix
/// clock for the synthetic sources (ours, and `tests/browser/avsync-source.js` in Chromium),
/// media time for a Y4M + WAV pair written with testsrc marks. Either way, a frame shown `age` after its mark's time
/// and a mark played at `played` are `played − age` apart modulo one second: the offset, when
/// it is within ±0.5 s.
#[derive(Debug, Default)]
struct MarkReader {
    /// The previous packet's mono samples and RTP timestamp (a mark may straddle two packets).
    prev: Option<(Vec<f32>, u32)>,
    last_mark: Option<u32>,
    /// RTP timestamps of marks not played yet.
    pending: Vec<u32>,
}

/// `x` (µs) modulo one second, into [−0.5 s, 0.5 s).
fn wrap_second(x: i64) -> i64 {
    (x + 500_000).rem_euclid(1_000_000) - 500_000
}

impl MarkReader {
    fn push(&mut self, mono: &[f32], rtp: u32) {
        let (mut buf, start) = match self.prev.take() {
            Some((p, r)) if rtp.wrapping_sub(r) as usize == p.len() => (p, r),
            _ => (Vec::new(), rtp),
        };
        buf.extend_from_slice(mono);
        for i in detect_marks(&buf, 48_000, TONE_MARK_HZ) {
            let at = start.wrapping_add(i as u32);
            // One mark per second: the same burst seen again in the next window is no new one.
            if self
                .last_mark
                .is_some_and(|l| (at.wrapping_sub(l) as i32) < 24_000)
            {
                continue;
            }
            self.last_mark = Some(at);
            if self.pending.len() < 8 {
                self.pending.push(at);
            }
        }
        self.prev = Some((mono.to_vec(), rtp));
    }

    /// Offsets (µs) of the marks that have played by now.
    fn resolve(
        &mut self,
        clock: &Mutex<rtcio_media::playout::video::AudioPlayoutClock>,
        av: &Mutex<StreamAv>,
    ) -> Vec<i64> {
        let now = Instant::now();
        let unix_now = unix_micros() as i64;
        let ages: Vec<i64> = lock(av).video_delays_us.iter().copied().collect();
        let c = lock(clock);
        let mut out = Vec::new();
        self.pending.retain(|&rtp| {
            let Some(played) = c.play_time(rtp) else {
                return true;
            };
            if played > now {
                return true;
            }
            let played_unix = unix_now - now.duration_since(played).as_micros() as i64;
            // Against each recent frame (robust to a file's loop point), the median.
            let mut o: Vec<i64> = ages
                .iter()
                .map(|age| wrap_second(played_unix - age))
                .collect();
            o.sort_unstable();
            if let Some(m) = o.get(o.len() / 2) {
                out.push(*m);
            }
            false
        });
        out
    }
}

fn codec_name(c: &RtpCodec) -> String {
    match c {
        RtpCodec::H264 => "H264".into(),
        RtpCodec::Opus => "opus".into(),
        RtpCodec::Vp8 => "VP8".into(),
        RtpCodec::Other(m) => m.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chroma_fingerprint_tells_the_two_test_patterns_apart() {
        use rtcio_media::{TestPatternConfig, TestPatternSource};
        let cfg = TestPatternConfig {
            width: 320,
            height: 180,
            fps: 30.0,
            paced: false,
        };
        let t = Duration::ZERO;
        let bars = TestPatternSource::new(cfg).unwrap().render(0, t, 0);
        let green = TestPatternSource::new(cfg)
            .unwrap()
            .tinted(54, 34)
            .render(0, t, 0);
        let (bu, bv) = mean_chroma(&bars).unwrap();
        let (gu, gv) = mean_chroma(&green).unwrap();
        assert!(bu > 110.0 && bv > 110.0, "bars {bu} {bv}");
        assert!(gu < 75.0 && gv < 65.0, "green {gu} {gv}");
    }

    #[test]
    fn offsets_wrap_to_the_nearest_second() {
        assert_eq!(wrap_second(3_000_120_000), 120_000);
        assert_eq!(wrap_second(2_999_800_000), -200_000);
        assert_eq!(wrap_second(-40_000), -40_000);
        assert_eq!(wrap_second(499_999), 499_999);
        assert_eq!(wrap_second(500_000), -500_000);
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 95.0), 95);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
