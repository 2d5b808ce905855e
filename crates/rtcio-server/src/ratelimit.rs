//! Token-bucket rate limiting, driven by the caller's clock so it is testable without time passing.

use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens, refilled at `per_second`. A rate of 0 means unlimited.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `per_second == 0.0` disables the limit.
    pub fn new(per_second: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            per_second,
            burst: burst.max(1.0),
            tokens: burst.max(1.0),
            last: now,
        }
    }

    /// Takes one token if available.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.per_second <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Time until the next token, for logging.
    pub fn retry_after(&self) -> Duration {
        if self.per_second <= 0.0 || self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_second)
        }
    }
}

/// Bounds how many lines one kind of warning writes: at most `per_window` per window, then a
/// count of what was left out. A forged member sending thousands of junk events a second must
/// not turn into thousands of log lines.
#[derive(Debug)]
pub struct LogLimiter {
    window: Duration,
    per_window: u32,
    state: std::sync::Mutex<(Option<Instant>, u32, u64)>,
}

impl LogLimiter {
    /// At most `per_window` lines per `window`.
    pub const fn new(window: Duration, per_window: u32) -> Self {
        LogLimiter {
            window,
            per_window,
            state: std::sync::Mutex::new((None, 0, 0)),
        }
    }

    /// Whether a line may be written now; `Some(n)`: yes, and `n` lines were left out since the
    /// last one written.
    pub fn allow(&self, now: Instant) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (start, logged, suppressed) = &mut *st;
        if start.is_none_or(|s| now.saturating_duration_since(s) >= self.window) {
            *start = Some(now);
            *logged = 0;
        }
        if *logged < self.per_window {
            *logged += 1;
            Some(std::mem::take(suppressed))
        } else {
            *suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0, t0);
        assert!(b.try_take(t0) && b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(b.retry_after() > Duration::ZERO);
        assert!(!b.try_take(t0 + Duration::from_millis(50)));
        assert!(b.try_take(t0 + Duration::from_millis(160)));
        // Refill never exceeds the burst.
        let later = t0 + Duration::from_secs(60);
        let taken = (0..10).filter(|_| b.try_take(later)).count();
        assert_eq!(taken, 3);
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0.0, 1.0, t0);
        assert!((0..10_000).all(|_| b.try_take(t0)));
    }

    #[test]
    fn log_limiter_writes_a_few_lines_then_counts() {
        let t0 = Instant::now();
        let l = LogLimiter::new(Duration::from_secs(1), 3);
        let allowed: Vec<_> = (0..1000).map(|_| l.allow(t0)).collect();
        assert_eq!(allowed.iter().filter(|a| a.is_some()).count(), 3);
        // The next window's first line says how many were left out.
        assert_eq!(l.allow(t0 + Duration::from_secs(1)), Some(997));
        assert_eq!(l.allow(t0 + Duration::from_secs(1)), Some(0));
    }
}
