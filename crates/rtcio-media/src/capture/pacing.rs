//! What a capture callback does with each buffer the device hands it: pass it on, or drop it
//! because the device runs ahead of real time (ALSA's `null` device delivers as fast as it is
//! asked, tens of thousands of buffers a second) or because the consumer is behind. Drops are
//! counted and summarised in a log line at most every few seconds, never one line per buffer.
//!
//! Plain structs with the time passed in, so tests can drive a simulated second of 100 000
//! buffers.

use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

use cpal::{FromSample, Sample};
use tracing::warn;

/// Audio a device may deliver ahead of the wall clock before buffers are dropped: covers
/// start-up bursts and clock drift between the device and the system.
pub(crate) const DEFAULT_SLACK: Duration = Duration::from_millis(500);
/// First gap between two drop summaries.
const FIRST_INTERVAL: Duration = Duration::from_secs(5);
/// The gap doubles while drops go on, up to this.
const MAX_INTERVAL: Duration = Duration::from_secs(300);

/// Why a buffer was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// The device delivered more audio than wall-clock time allows.
    AheadOfRealTime,
    /// The consumer's queue was full.
    ConsumerSlow,
}

/// Drops since the last summary, due now for a log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DropReport {
    /// Buffers dropped because the device ran ahead of real time.
    pub ahead: u64,
    /// Buffers dropped because the consumer was behind.
    pub slow: u64,
    /// Audio dropped in total (device frames).
    pub frames: u64,
    /// True for the first report after a quiet period (logged at once).
    pub first: bool,
}

/// Counts drops and says when a summary is due: the first drop after a quiet period at once,
/// then at most one line per interval, the interval doubling (5 s … 5 min) while drops go on.
#[derive(Debug)]
pub(crate) struct DropLog {
    pending: DropReport,
    last_log: Option<Instant>,
    interval: Duration,
}

impl Default for DropLog {
    fn default() -> Self {
        Self {
            pending: DropReport::default(),
            last_log: None,
            interval: FIRST_INTERVAL,
        }
    }
}

impl DropLog {
    /// Records a dropped buffer of `frames` frames at `now`.
    pub fn record(&mut self, now: Instant, frames: usize, reason: DropReason) {
        if let Some(last) = self.last_log {
            // A quiet stretch longer than the interval: the next drop is news again.
            if self.pending.ahead + self.pending.slow == 0
                && now.saturating_duration_since(last) > self.interval
            {
                self.last_log = None;
                self.interval = FIRST_INTERVAL;
            }
        }
        match reason {
            DropReason::AheadOfRealTime => self.pending.ahead += 1,
            DropReason::ConsumerSlow => self.pending.slow += 1,
        }
        self.pending.frames += frames as u64;
    }

    /// The summary to log now, if one is due.
    pub fn due(&mut self, now: Instant) -> Option<DropReport> {
        if self.pending.ahead + self.pending.slow == 0 {
            return None;
        }
        let first = match self.last_log {
            None => true,
            Some(last) if now.saturating_duration_since(last) >= self.interval => {
                self.interval = (self.interval * 2).min(MAX_INTERVAL);
                false
            }
            Some(_) => return None,
        };
        self.last_log = Some(now);
        let report = DropReport {
            first,
            ..self.pending
        };
        self.pending = DropReport::default();
        Some(report)
    }
}

/// Keeps a capture stream at most `slack` ahead of the wall clock, from its first buffer on.
#[derive(Debug)]
pub(crate) struct RealTimeGate {
    sample_rate: u32,
    slack: Duration,
    start: Option<Instant>,
    passed: u64,
}

impl RealTimeGate {
    /// A gate for a device running at `sample_rate` frames per second.
    pub fn new(sample_rate: u32, slack: Duration) -> Self {
        Self {
            sample_rate: sample_rate.max(1),
            slack,
            start: None,
            passed: 0,
        }
    }

    /// Whether a buffer of `frames` frames arriving at `now` fits within real time (counted
    /// as passed if so).
    pub fn admit(&mut self, now: Instant, frames: usize) -> bool {
        let start = *self.start.get_or_insert(now);
        let allowed = (now.saturating_duration_since(start) + self.slack).as_secs_f64()
            * f64::from(self.sample_rate);
        let after = self.passed + frames as u64;
        if after as f64 > allowed {
            return false;
        }
        self.passed = after;
        true
    }
}

/// The body of the microphone's cpal callback: pacing, conversion to f32, hand-over to the
/// consumer, drop accounting and rate-limited logging.
#[derive(Debug)]
pub(crate) struct CaptureCallback {
    tx: SyncSender<Vec<f32>>,
    channels: usize,
    gate: RealTimeGate,
    drops: DropLog,
}

impl CaptureCallback {
    /// A callback for a device with `channels` interleaved channels at `sample_rate`.
    pub fn new(tx: SyncSender<Vec<f32>>, sample_rate: u32, channels: u16, slack: Duration) -> Self {
        Self {
            tx,
            channels: usize::from(channels.max(1)),
            gate: RealTimeGate::new(sample_rate, slack),
            drops: DropLog::default(),
        }
    }

    /// Handles one buffer from the device, arriving at `now`.
    pub fn deliver<T>(&mut self, now: Instant, data: &[T])
    where
        T: Sample,
        f32: FromSample<T>,
    {
        let frames = data.len() / self.channels;
        if !self.gate.admit(now, frames) {
            self.drops.record(now, frames, DropReason::AheadOfRealTime);
        } else {
            let chunk: Vec<f32> = data.iter().map(|&s| f32::from_sample(s)).collect();
            match self.tx.try_send(chunk) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => {
                    self.drops.record(now, frames, DropReason::ConsumerSlow);
                }
            }
        }
        if let Some(r) = self.drops.due(now) {
            log_drops(&r, self.gate.sample_rate);
        }
    }
}

fn log_drops(r: &DropReport, sample_rate: u32) {
    let ms = r.frames * 1000 / u64::from(sample_rate.max(1));
    if r.first {
        warn!(
            ahead_of_real_time = r.ahead,
            consumer_slow = r.slow,
            dropped_ms = ms,
            "microphone audio dropped (device ahead of real time or consumer slow); \
             further drops are summarised"
        );
    } else {
        warn!(
            ahead_of_real_time = r.ahead,
            consumer_slow = r.slow,
            dropped_ms = ms,
            "microphone audio dropped since the last report"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc::sync_channel;

    use super::*;

    /// Counts WARN events (and nothing else) so a test can see how much would be logged.
    struct CountWarnings(Arc<AtomicUsize>);

    impl tracing::Subscriber for CountWarnings {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            if *event.metadata().level() == tracing::Level::WARN {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    /// Runs `f` and returns how many warnings it logged on this thread.
    fn warnings(f: impl FnOnce()) -> usize {
        let count = Arc::new(AtomicUsize::new(0));
        tracing::subscriber::with_default(CountWarnings(Arc::clone(&count)), f);
        count.load(Ordering::Relaxed)
    }

    /// The null-device flood: 100 000 buffers in one simulated second into a consumer that
    /// never reads. Used to be one warning per buffer.
    #[test]
    fn a_flood_of_overflows_logs_a_handful_of_lines() {
        let (tx, _rx) = sync_channel(64);
        let mut cb = CaptureCallback::new(tx, 48_000, 1, DEFAULT_SLACK);
        let t0 = Instant::now();
        let buf = [0i16; 48];
        let n = warnings(|| {
            for i in 0..100_000u64 {
                cb.deliver(t0 + Duration::from_micros(i * 10), &buf);
            }
        });
        assert!((1..=3).contains(&n), "{n} warnings");
    }

    /// The consumer keeps up but the device delivers 100× real time: the consumer gets about
    /// one second of audio per second (plus the slack), and the log stays short for a minute.
    #[test]
    fn a_device_faster_than_real_time_is_paced() {
        let (tx, rx) = sync_channel(1_000_000);
        let mut cb = CaptureCallback::new(tx, 48_000, 2, DEFAULT_SLACK);
        let t0 = Instant::now();
        let buf = vec![0.0f32; 2 * 480]; // 10 ms of stereo
        let mut received = 0usize;
        let n = warnings(|| {
            // 60 s of wall-clock time, 100 ms-worth of buffers per 1 ms.
            for ms in 0..60_000u64 {
                for _ in 0..10 {
                    cb.deliver(t0 + Duration::from_millis(ms), &buf);
                }
                received += rx.try_iter().map(|c| c.len() / 2).sum::<usize>();
            }
        });
        let seconds = received as f64 / 48_000.0;
        assert!((59.9..=60.6).contains(&seconds), "{seconds} s passed");
        // 0, 5, 15, 35 s: four lines in a minute.
        assert!(n <= 5, "{n} warnings");
    }

    #[test]
    fn a_real_time_device_with_a_live_consumer_drops_nothing() {
        let (tx, rx) = sync_channel(4);
        let mut cb = CaptureCallback::new(tx, 44_100, 1, DEFAULT_SLACK);
        let t0 = Instant::now();
        let buf = vec![0u16; 441];
        let n = warnings(|| {
            for i in 0..1_000u64 {
                cb.deliver(t0 + Duration::from_millis(i * 10), &buf);
                assert_eq!(rx.try_recv().map(|c| c.len()), Ok(441));
            }
        });
        assert_eq!(n, 0);
    }

    #[test]
    fn drops_after_a_quiet_spell_are_reported_at_once() {
        let mut log = DropLog::default();
        let t0 = Instant::now();
        log.record(t0, 10, DropReason::ConsumerSlow);
        assert!(log.due(t0).is_some_and(|r| r.first && r.slow == 1));
        log.record(t0 + Duration::from_secs(1), 10, DropReason::ConsumerSlow);
        assert_eq!(log.due(t0 + Duration::from_secs(1)), None);
        let r = log.due(t0 + Duration::from_secs(5));
        assert_eq!(
            r,
            Some(DropReport {
                ahead: 0,
                slow: 1,
                frames: 10,
                first: false
            })
        );
        // Quiet for a minute, then one drop: logged straight away.
        let later = t0 + Duration::from_secs(65);
        log.record(later, 10, DropReason::AheadOfRealTime);
        assert!(log.due(later).is_some_and(|r| r.first && r.ahead == 1));
    }
}
