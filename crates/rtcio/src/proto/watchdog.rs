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
    /// A connection that has never been connected this long restarts ICE (8 000 ms; zero
    /// disables). Not an rtc.io option: the JS waits for ever on a connection that never forms
    /// (a remote that never answers, a DTLS handshake starved on a busy CPU, a path that died
    /// while connecting).
    pub connect_timeout: Duration,
    /// Connection attempts (the first one and each restart) before a never-connected peer is
    /// given up and cleaned up (4).
    pub connect_attempts: u32,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            timeout: Duration::from_millis(12_000),
            hint_timeout: Duration::from_millis(2_500),
            hint_ttl: Duration::from_millis(30_000),
            connect_timeout: Duration::from_millis(8_000),
            connect_attempts: 4,
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
            ..d
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
    /// While the connection has never been connected: when the current attempt runs out.
    setup_deadline: Option<Instant>,
    setup_attempts: u32,
    ever_connected: bool,
}

impl Watchdog {
    /// A disarmed watchdog.
    pub fn new(cfg: WatchdogConfig) -> Self {
        Watchdog {
            cfg,
            hint_at: None,
            deadline: None,
            setup_deadline: None,
            setup_attempts: 0,
            ever_connected: false,
        }
    }

    /// The peer connection was created at `now`: the first connection attempt starts.
    pub fn start(&mut self, now: Instant) {
        if !self.cfg.connect_timeout.is_zero() && !self.ever_connected {
            self.setup_attempts = 1;
            self.setup_deadline = Some(now + self.cfg.connect_timeout);
        }
    }

    /// When the armed timer fires, if armed.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.deadline, self.setup_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
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
                self.setup_deadline = None;
                self.ever_connected = true;
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
                self.setup_deadline = None;
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
        let settled = matches!(state, LinkState::Connected | LinkState::Closed);
        if let Some(at) = self.deadline
            && now >= at
        {
            self.deadline = None;
            if !settled {
                self.setup_deadline = None;
                return WatchdogAction::Cleanup;
            }
        }
        match self.setup_deadline {
            Some(at) if now >= at => {
                if settled || self.ever_connected {
                    self.setup_deadline = None;
                    WatchdogAction::None
                } else if self.setup_attempts >= self.cfg.connect_attempts {
                    self.setup_deadline = None;
                    WatchdogAction::Cleanup
                } else {
                    self.setup_attempts += 1;
                    let next = now + self.cfg.connect_timeout;
                    self.setup_deadline = Some(next);
                    WatchdogAction::RestartIceAndArm(next)
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
    fn never_connected_restarts_then_gives_up() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(WatchdogConfig::default());
        assert_eq!(w.deadline(), None);
        w.start(t0);
        assert_eq!(w.deadline(), Some(t0 + ms(8_000)));
        assert_eq!(
            w.on_state(LinkState::Connecting, t0 + ms(100)),
            WatchdogAction::None
        );
        assert_eq!(
            w.on_timer(LinkState::Connecting, t0 + ms(7_999)),
            WatchdogAction::None
        );
        // Attempts 2, 3 and 4 each start with an ICE restart.
        let mut at = t0 + ms(8_000);
        for _ in 0..3 {
            let next = at + ms(8_000);
            assert_eq!(
                w.on_timer(LinkState::Connecting, at),
                WatchdogAction::RestartIceAndArm(next)
            );
            assert_eq!(w.deadline(), Some(next));
            at = next;
        }
        // The fourth attempt ran out: the peer is given up (a remote that never answers no
        // longer holds a connection for the rest of the call).
        assert_eq!(w.on_timer(LinkState::New, at), WatchdogAction::Cleanup);
        assert_eq!(w.deadline(), None);
    }

    #[test]
    fn connected_once_is_never_a_setup_timeout() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(WatchdogConfig::default());
        w.start(t0);
        assert_eq!(
            w.on_state(LinkState::Connected, t0 + ms(300)),
            WatchdogAction::Cancel
        );
        assert_eq!(w.deadline(), None);
        // A later restart that sits in "connecting" is the liveness watchdog's business.
        assert_eq!(
            w.on_state(LinkState::Connecting, t0 + ms(20_000)),
            WatchdogAction::None
        );
        assert_eq!(w.deadline(), None);
        assert_eq!(
            w.on_timer(LinkState::Connecting, t0 + ms(40_000)),
            WatchdogAction::None
        );
    }

    #[test]
    fn setup_timeout_and_liveness_timer_together() {
        let t0 = Instant::now();
        let mut w = Watchdog::new(WatchdogConfig::default());
        w.start(t0);
        // DTLS gave up at 7 s: failed, ICE restarted, liveness armed for 19 s.
        assert_eq!(
            w.on_state(LinkState::Failed, t0 + ms(7_000)),
            WatchdogAction::RestartIceAndArm(t0 + ms(19_000))
        );
        assert_eq!(w.deadline(), Some(t0 + ms(8_000)));
        assert_eq!(
            w.on_timer(LinkState::Failed, t0 + ms(8_000)),
            WatchdogAction::RestartIceAndArm(t0 + ms(16_000))
        );
        assert_eq!(w.deadline(), Some(t0 + ms(16_000)));
        // Connected on the second attempt: both timers go.
        assert_eq!(
            w.on_state(LinkState::Connected, t0 + ms(9_000)),
            WatchdogAction::Cancel
        );
        assert_eq!(w.deadline(), None);
        assert_eq!(
            w.on_timer(LinkState::Connected, t0 + ms(19_000)),
            WatchdogAction::None
        );
    }

    #[test]
    fn zero_connect_timeout_disables_the_setup_timer() {
        let t0 = Instant::now();
        let cfg = WatchdogConfig {
            connect_timeout: Duration::ZERO,
            ..WatchdogConfig::default()
        };
        let mut w = Watchdog::new(cfg);
        w.start(t0);
        assert_eq!(w.deadline(), None);
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
