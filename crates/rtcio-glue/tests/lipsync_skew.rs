//! Lip sync with a skewed sender, simulated on an injected clock: one track leaves the sender
//! 150 ms after capture (a device's buffer, a slow encoder), while its RTCP sender reports map
//! RTP timestamps to capture time (as Chromium's do). Arrival times alone then put audio and
//! video 150 ms apart; with both sender reports the receiver waits the right side out.

use std::time::{Duration, Instant};

use rtcio::SenderReport;
use rtcio_glue::{LipSync, VideoPlayoutQueue};
use rtcio_media::AudioMixer;
use std::sync::Mutex;

const KEY: &str = "peer/stream";
const MIX: &str = "peer/0";
/// Transit of the faster track, and the audio's own playout delay over its arrival.
const TRANSIT: f64 = 0.030;
const AUDIO_PLAYOUT: f64 = 0.060;
/// What the slow track adds.
const SKEW: f64 = 0.150;
/// Simulated call length, and the tail that is measured.
const SECONDS: f64 = 8.0;
const MEASURED_FROM: f64 = 4.0;
/// Random-looking RTP starts, close to the 32-bit wrap.
const A0: u32 = u32::MAX - 100_000;
const V0: u32 = 1_234_567;

fn ntp(s: f64) -> u64 {
    // Seconds since 1900, 32.32 fixed point; the sender's clock is at 3.9e9 s at capture 0.
    let secs = 3_900_000_000u64 + s.floor() as u64;
    let frac = ((s - s.floor()) * 4_294_967_296.0) as u64;
    (secs << 32) | frac
}

fn at(t0: Instant, s: f64) -> Instant {
    t0 + Duration::from_secs_f64(s)
}

/// Runs the call; returns the median A/V offset (s, audio later when positive) over the
/// measured tail and the extra audio delay decided last.
fn simulate(audio_late: bool, use_reports: bool) -> (f64, Duration) {
    let t0 = Instant::now();
    let (audio_path, video_path) = if audio_late {
        (TRANSIT + SKEW, TRANSIT)
    } else {
        (TRANSIT, TRANSIT + SKEW)
    };
    let sync = LipSync::new();
    let clock = sync.clock(KEY);
    let mixer = Mutex::new(AudioMixer::new(1));
    mixer.lock().expect("mixer").add_peer(MIX).expect("peer");
    let mut queue: VideoPlayoutQueue<f64> = VideoPlayoutQueue::new();
    let report = |rtp0: u32, rate: f64, capture: f64, path: f64, now: f64| {
        // One report a second from capture second 1, available once it has travelled.
        let sent = capture.floor();
        (use_reports && sent >= 1.0 && now >= sent + path).then(|| SenderReport {
            ntp_time: ntp(sent),
            rtp_time: rtp0.wrapping_add((sent * rate) as u32),
            arrival: at(t0, sent + path),
        })
    };
    let mut extra = Duration::ZERO;
    let mut offsets = Vec::new();
    // Events in time order: audio packets every 20 ms, video frames every 33.3 ms.
    let (mut ai, mut vi) = (0u32, 0u32);
    for _ in 0..10_000 {
        let ta = f64::from(ai) * 0.020;
        let tv = f64::from(vi) / 30.0;
        if ta.min(tv) > SECONDS {
            break;
        }
        if ta + audio_path <= tv + video_path {
            let now = ta + audio_path;
            let rtp = A0.wrapping_add(ai * 960);
            let mut c = clock.lock().expect("clock");
            c.on_arrival(rtp, at(t0, now));
            // The packet playing now: captured `delay` ago. (The mixer here plays nothing, so
            // its extra delay in effect stays 0: the clock sees the natural delay, and the
            // extra decided is added where the audio's play time is measured below.)
            let delay = audio_path + AUDIO_PLAYOUT;
            let playing = ((now - delay) / 0.020).floor();
            if playing >= 0.0 {
                c.on_playing(A0.wrapping_add(playing as u32 * 960), at(t0, now));
            }
            drop(c);
            let sr = report(A0, 48_000.0, ta, audio_path, now);
            extra = sync.sync_audio(KEY, &mixer, MIX, sr).audio_extra;
            ai += 1;
        } else {
            let now = tv + video_path;
            let rtp = V0.wrapping_add(vi * 3000);
            let sr = report(V0, 90_000.0, tv, video_path, now);
            let d = sync.video_sync_delay(KEY, &queue, sr);
            queue.set_sync_delay(d);
            assert!(
                queue.push(tv, rtp, at(t0, now), false),
                "frame {vi} dropped"
            );
            let due = queue.next_due().expect("queued");
            let shown = queue.pop_due(due).expect("due");
            if tv >= MEASURED_FROM {
                let rendered = (due - t0).as_secs_f64();
                let audio_plays = shown + audio_path + AUDIO_PLAYOUT + extra.as_secs_f64();
                offsets.push(audio_plays - rendered);
            }
            vi += 1;
        }
    }
    offsets.sort_by(f64::total_cmp);
    (offsets[offsets.len() / 2], extra)
}

#[test]
fn late_audio_video_waits_by_the_sender_reports() {
    let (with, _) = simulate(true, true);
    let (without, _) = simulate(true, false);
    eprintln!("audio 150 ms late: offset {with:.4} s with reports, {without:.4} s without");
    assert!(with.abs() <= 0.010, "with sender reports: {with}");
    // The shared-path assumption cannot see the skew.
    assert!((without - SKEW).abs() <= 0.010, "without: {without}");
}

#[test]
fn late_video_audio_waits_by_the_sender_reports() {
    let (with, extra) = simulate(false, true);
    let (without, _) = simulate(false, false);
    eprintln!(
        "video 150 ms late: offset {with:.4} s with reports (audio extra {extra:?}), {without:.4} s without"
    );
    assert!(with.abs() <= 0.020, "with sender reports: {with}");
    assert!(extra >= Duration::from_millis(80), "{extra:?}");
    assert!((without + SKEW).abs() <= 0.010, "without: {without}");
}
