//! Liveness watchdog and `#rtcio:peer-left` hint (PROTOCOL.md §6.2–6.3) as plain logic over an
//! injected clock.

use std::time::{Duration, Instant};

/// Watchdog timing, in rtc.io's option names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// Grace period for a `disconnected`/`failed` peer (12 000 ms).
    pub timeout: Duration,
    /// Shorter grace period when a peer-left hint is fresh (2 500 ms).
    pub hint_timeout: Duration,
    /// How long a hint stays fresh (30 000 ms); zero disables the shortening.
    pub hint_ttl: Duration,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            timeout: Duration::from_millis(12_000),
            hint_timeout: Duration::from_millis(2_500),
            hint_ttl: Duration::from_millis(30_000),
        }
    }
}

impl WatchdogConfig {
    /// Builds a config from millisecond options the way the JS validates them: a missing,
    /// non-finite or negative value falls back to the default.
    pub fn from_millis(
        timeout: Option<f64>,
        hint_timeout: Option<f64>,
        hint_ttl: Option<f64>,
    ) -> Self {
        let d = WatchdogConfig::default();
        let pick = |v: Option<f64>, dflt: Duration| match v {
            Some(ms) if ms.is_finite() && ms >= 0.0 => Duration::from_secs_f64(ms / 1000.0),
            _ => dflt,
        };
        WatchdogConfig {
            timeout: pick(timeout, d.timeout),
            hint_timeout: pick(hint_timeout, d.hint_timeout),
            hint_ttl: pick(hint_ttl, d.hint_ttl),
        }
    }
}

/// Connection states the watchdog reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not yet connected.
    New,
    /// Connecting.
    Connecting,
    /// Connected.
    Connected,
    /// Temporarily lost.
    Disconnected,
    /// ICE failed.
    Failed,
    /// Closed.
    Closed,
}

impl LinkState {
    fn unhealthy(self) -> bool {
        matches!(self, LinkState::Disconnected | LinkState::Failed)
    }
}

/// What the driver must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogAction {
    /// Nothing.
    None,
    /// Cancel the timer.
    Cancel,
    /// (Re)arm the timer to fire at this instant.
    Arm(Instant),
    /// Restart ICE, then arm the timer.
    RestartIceAndArm(Instant),
    /// Close the peer connection and clean the peer up now.
    Cleanup,
}

/// Per-peer watchdog.
#[derive(Debug)]
pub struct Watchdog {
    cfg: WatchdogConfig,
    hint_at: Option<Instant>,
    deadline: Option<Instant>,
}

impl Watchdog {
    /// A disarmed watchdog.
    pub fn new(cfg: WatchdogConfig) -> Self {
        Watchdog {
            cfg,
            hint_at: None,
            deadline: None,
        }
    }

    /// When the armed timer fires, if armed.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn grace(&self, now: Instant) -> Duration {
        let fresh = self.hint_at.is_some_and(|t| {
            !self.cfg.hint_ttl.is_zero() && now.saturating_duration_since(t) < self.cfg.hint_ttl
        });
        if fresh {
            self.cfg.hint_timeout
        } else {
            self.cfg.timeout
        }
    }

    /// The peer connection's state changed.
    pub fn on_state(&mut self, state: LinkState, now: Instant) -> WatchdogAction {
        match state {
            LinkState::Connected => {
                self.deadline = None;
                WatchdogAction::Cancel
            }
            LinkState::Disconnected => {
                let at = now + self.grace(now);
                self.deadline = Some(at);
                WatchdogAction::Arm(at)
            }
            LinkState::Failed => {
                let at = now + self.grace(now);
                self.deadline = Some(at);
                WatchdogAction::RestartIceAndArm(at)
            }
            LinkState::Closed => {
                self.deadline = None;
                WatchdogAction::Cleanup
            }
            LinkState::New | LinkState::Connecting => WatchdogAction::None,
        }
    }

    /// A `#rtcio:peer-left` hint arrived for this peer.
    pub fn on_hint(&mut self, state: LinkState, now: Instant) -> WatchdogAction {
        if state == LinkState::Closed {
            return WatchdogAction::None;
        }
        self.hint_at = Some(now);
        if state.unhealthy() {
            self.deadline = None;
            WatchdogAction::Cleanup
        } else {
            // Healthy: a signaling-only outage never tears down P2P.
            WatchdogAction::None
        }
    }

    /// The timer fired at `now`.
    pub fn on_timer(&mut self, state: LinkState, now: Instant) -> WatchdogAction {
        match self.deadline {
            Some(at) if now >= at => {
                self.deadline = None;
                if matches!(state, LinkState::Connected | LinkState::Closed) {
                    WatchdogAction::None
                } else {
                    WatchdogAction::Cleanup
                }
            }
            _ => WatchdogAction::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn disconnected_then_recovered() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(WatchdogConfig::default());
        assert_eq!(
            w.on_state(LinkState::Disconnected, t0),
            WatchdogAction::Arm(t0 + ms(12_000))
        );
        assert_eq!(
            w.on_state(LinkState::Connected, t0 + ms(500)),
            WatchdogAction::Cancel
        );
        assert_eq!(
            w.on_timer(LinkState::Connected, t0 + ms(12_000)),
            WatchdogAction::None
        );
    }

    #[test]
    fn expiry_cleans_up_unless_connected() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(WatchdogConfig::default());
        assert_eq!(
            w.on_state(LinkState::Failed, t0),
            WatchdogAction::RestartIceAndArm(t0 + ms(12_000))
        );
        assert_eq!(
            w.on_timer(LinkState::Failed, t0 + ms(11_999)),
            WatchdogAction::None
        );
        assert_eq!(
            w.on_timer(LinkState::Failed, t0 + ms(12_000)),
            WatchdogAction::Cleanup
        );
    }

    #[test]
    fn fresh_hint_shortens_and_unhealthy_hint_cleans_now() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(WatchdogConfig::default());
        assert_eq!(w.on_hint(LinkState::Connected, t0), WatchdogAction::None);
        assert_eq!(
            w.on_state(LinkState::Disconnected, t0 + ms(1000)),
            WatchdogAction::Arm(t0 + ms(3500))
        );
        // Stale hint: back to the full timeout.
        assert_eq!(
            w.on_state(LinkState::Disconnected, t0 + ms(31_000)),
            WatchdogAction::Arm(t0 + ms(43_000))
        );
        assert_eq!(
            w.on_hint(LinkState::Disconnected, t0 + ms(31_001)),
            WatchdogAction::Cleanup
        );
        assert_eq!(w.on_hint(LinkState::Closed, t0), WatchdogAction::None);
    }

    #[test]
    fn zero_ttl_disables_hint() {
        let t0 = Instant::now();
        let cfg = WatchdogConfig::from_millis(None, None, Some(0.0));
        let mut w = Watchdog::new(cfg);
        w.on_hint(LinkState::Connected, t0);
        assert_eq!(
            w.on_state(LinkState::Disconnected, t0),
            WatchdogAction::Arm(t0 + ms(12_000))
        );
    }

    #[test]
    fn invalid_options_fall_back() {
        let c = WatchdogConfig::from_millis(Some(f64::NAN), Some(-1.0), Some(f64::INFINITY));
        assert_eq!(c, WatchdogConfig::default());
        let c = WatchdogConfig::from_millis(Some(100.0), None, None);
        assert_eq!(c.timeout, ms(100));
    }

    /// The same deadline → timer path the peer driver uses, on tokio's paused clock: the hint
    /// shortens the grace period to 2.5 s and the timer fires then, not at 12 s.
    #[tokio::test(start_paused = true)]
    async fn deadlines_fire_on_a_paused_tokio_clock() {
        let mut w = Watchdog::new(WatchdogConfig::default());
        let start = tokio::time::Instant::now();
        w.on_hint(LinkState::Connected, start.into_std());
        let WatchdogAction::Arm(at) = w.on_state(LinkState::Disconnected, start.into_std()) else {
            panic!("not armed");
        };
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        let fired = tokio::time::Instant::now();
        assert_eq!(fired - start, ms(2_500));
        assert_eq!(
            w.on_timer(LinkState::Disconnected, fired.into_std()),
            WatchdogAction::Cleanup
        );
        // Without a hint the full timeout applies.
        let mut w = Watchdog::new(WatchdogConfig::default());
        let t = tokio::time::Instant::now();
        let WatchdogAction::Arm(at) = w.on_state(LinkState::Disconnected, t.into_std()) else {
            panic!("not armed");
        };
        tokio::time::advance(ms(11_999)).await;
        assert_eq!(
            w.on_timer(
                LinkState::Disconnected,
                tokio::time::Instant::now().into_std()
            ),
            WatchdogAction::None
        );
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        assert_eq!(tokio::time::Instant::now() - t, ms(12_000));
        assert_eq!(
            w.on_timer(
                LinkState::Disconnected,
                tokio::time::Instant::now().into_std()
            ),
            WatchdogAction::Cleanup
        );
    }

    #[test]
    fn closed_cleans_up() {
        let mut w = Watchdog::new(WatchdogConfig::default());
        assert_eq!(
            w.on_state(LinkState::Closed, Instant::now()),
            WatchdogAction::Cleanup
        );
    }
}
