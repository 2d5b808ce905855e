//! A `tracing` layer that turns one benign, high-volume dependency warning into a counter.
//!
//! In Redis mode socketioxide-core delivers every broadcast of another process to this process's
//! local sockets and logs `remote request broadcast handler: [Closed]` at warn level for each
//! one that reached only sockets already closed — a socket that left while the broadcast was on
//! its way (its leave announcements are sent anyway). At 50 000 sockets behind four processes
//! that was ~43 000 lines per run. Such events are counted instead, and [`summarise`] logs the
//! count at info level (the first within seconds, then at most one line per [`SUMMARY_EVERY`]);
//! an error list with anything but `Closed` in it (a full socket channel: a message was
//! dropped) still passes as a warning. (A layer cannot log the summary itself: `tracing` drops
//! events emitted from inside a subscriber's callbacks.)

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// At most one summary line per this interval while the events go on.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// How often [`summarise`] looks at the counter.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Target of socketioxide-core's remote request handlers.
const TARGET: &str = "socketioxide_core::adapter::request";
/// The message prefix of the broadcast handler's warning; its argument is the error list.
const PREFIX: &str = "remote request broadcast handler: ";

/// Broadcasts counted so far, in this process.
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// How many `remote request broadcast handler: [Closed]` warnings were counted instead of
/// logged since the process started.
pub fn closed_broadcasts() -> u64 {
    SUPPRESSED.load(Ordering::Relaxed)
}

/// The layer; add it to the subscriber before the formatting layer.
#[derive(Debug, Default)]
pub struct QuietClosedBroadcasts;

/// Logs the counted broadcasts now and then, forever (spawn it next to the server).
pub async fn summarise() {
    let mut summary = Summary::default();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        if let Some(line) = summary.due(tokio::time::Instant::now().into_std(), closed_broadcasts())
        {
            tracing::info!("{line}");
        }
    }
}

/// When the next summary line is due and what it says.
#[derive(Debug, Default)]
struct Summary {
    /// When the last line was logged and the count then.
    last: Option<(std::time::Instant, u64)>,
}

impl Summary {
    /// The line to log at `now` with `total` counted so far, if one is due.
    fn due(&mut self, now: std::time::Instant, total: u64) -> Option<String> {
        match self.last {
            None if total > 0 => {
                self.last = Some((now, total));
                Some(format!(
                    "{total} broadcasts from other processes reached only sockets already closed \
                     (socketioxide-core: remote request broadcast handler: [Closed]); benign, \
                     counted and summarised every {} s from now on",
                    SUMMARY_EVERY.as_secs()
                ))
            }
            Some((at, then)) if total > then && now.duration_since(at) >= SUMMARY_EVERY => {
                self.last = Some((now, total));
                Some(format!(
                    "{} more broadcasts from other processes reached only closed sockets \
                     ({total} since start)",
                    total - then
                ))
            }
            _ => None,
        }
    }
}

/// Whether `message` is the broadcast handler's warning with only `Closed` errors in its list.
fn only_closed(message: &str) -> bool {
    let Some(list) = message
        .strip_prefix(PREFIX)
        .and_then(|m| m.strip_prefix('['))
        .and_then(|m| m.strip_suffix(']'))
    else {
        return false;
    };
    !list.is_empty() && list.split(", ").all(|e| e == "Closed")
}

/// Collects the `message` field.
#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}

impl<S: Subscriber> Layer<S> for QuietClosedBroadcasts {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if meta.target() != TARGET || *meta.level() != tracing::Level::WARN {
            return true;
        }
        let mut message = Message::default();
        event.record(&mut message);
        if only_closed(&message.0) {
            SUPPRESSED.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socketioxide_core::adapter::errors::SocketError::{Closed, InternalChannelFull as Full};
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    /// Records the messages of the events that reach it.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
            let mut message = Message::default();
            event.record(&mut message);
            self.0.lock().unwrap().push(message.0);
        }
    }

    #[test]
    fn recognises_only_closed_lists() {
        assert!(only_closed("remote request broadcast handler: [Closed]"));
        assert!(only_closed(
            "remote request broadcast handler: [Closed, Closed, Closed]"
        ));
        assert!(!only_closed(
            "remote request broadcast handler: [Closed, InternalChannelFull]"
        ));
        assert!(!only_closed(
            "remote request broadcast handler: [InternalChannelFull]"
        ));
        assert!(!only_closed("remote request broadcast handler: []"));
        assert!(!only_closed(
            "remote request disconnect sockets handler: [Closed]"
        ));
    }

    #[test]
    fn closed_broadcasts_are_counted_and_real_errors_pass() {
        let seen = Seen::default();
        let subscriber = tracing_subscriber::registry()
            .with(QuietClosedBroadcasts)
            .with(seen.clone());
        let before = closed_broadcasts();
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..1000 {
                // The same call as socketioxide-core's, with its error type.
                tracing::warn!(target: TARGET, node_id = 1, "remote request broadcast handler: {:?}", vec![Closed]);
            }
            tracing::warn!(target: TARGET, "remote request broadcast handler: {:?}", vec![Full, Closed]);
            tracing::warn!("remote request broadcast handler: {:?}", vec![Closed]);
        });
        let seen = seen.0.lock().unwrap().clone();
        // Other tests may count in parallel: at least ours.
        assert!(closed_broadcasts() - before >= 1000);
        assert_eq!(
            seen,
            [
                "remote request broadcast handler: [InternalChannelFull, Closed]",
                "remote request broadcast handler: [Closed]",
            ],
            "a full channel is still a warning, the same text from another target passes"
        );
    }

    #[test]
    fn summary_lines_are_rate_limited() {
        let t0 = std::time::Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut summary = Summary::default();
        assert_eq!(summary.due(at(0), 0), None, "nothing counted, nothing said");
        let first = summary.due(at(5), 3).expect("the first at once");
        assert!(first.starts_with("3 broadcasts"), "{first}");
        assert_eq!(summary.due(at(10), 5000), None, "then at most one a minute");
        let next = summary.due(at(65), 5000).expect("a minute later");
        assert!(next.starts_with("4997 more"), "{next}");
        assert_eq!(
            summary.due(at(200), 5000),
            None,
            "no line without new events"
        );
    }
}
