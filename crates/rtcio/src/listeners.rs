//! Event listener registries: callbacks and streams keyed by event name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::mpsc;

/// Where an event came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The signaling server (socket.io).
    Server,
    /// A peer, over the ctrl channel or a data channel: its socket id.
    Peer(String),
    /// Raised by this library (peer-connect, open, drain…).
    Local,
}

/// One received event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Event name.
    pub name: String,
    /// Arguments as sent (server events may carry a trailing recovery offset).
    pub args: Vec<Value>,
    /// Who sent it.
    pub origin: Origin,
    /// The bytes of a binary message (`data` events of channels).
    pub data: Option<bytes::Bytes>,
    /// The remote stream an event announces (the JS passes the stream object in the arguments;
    /// here the arguments keep the `"[RTCIOStream] <id>"` token and the stream is this field).
    pub stream: Option<crate::stream::RemoteStream>,
}

impl Event {
    /// An event without binary data.
    pub fn new(name: &str, args: Vec<Value>, origin: Origin) -> Self {
        Event {
            name: name.to_string(),
            args,
            origin,
            data: None,
            stream: None,
        }
    }

    /// The first argument, or `Null`.
    pub fn arg(&self) -> &Value {
        self.args.first().unwrap_or(&Value::Null)
    }

    /// The sender's socket id, for peer events.
    pub fn peer(&self) -> Option<&str> {
        match &self.origin {
            Origin::Peer(id) => Some(id),
            _ => None,
        }
    }
}

/// Identifies a registered listener for [`Registry::off`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

type Callback = Arc<dyn Fn(&Event) + Send + Sync>;

enum Sink {
    Callback(Callback),
    Stream(mpsc::UnboundedSender<Event>),
}

struct Entry {
    id: u64,
    once: bool,
    sink: Sink,
}

/// A set of listeners keyed by event name.
#[derive(Default)]
pub struct Registry {
    map: Mutex<HashMap<String, Vec<Entry>>>,
    next: AtomicU64,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<Entry>>> {
        // Listeners run outside the lock, so a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, name: &str, once: bool, sink: Sink) -> ListenerId {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .entry(name.to_string())
            .or_default()
            .push(Entry { id, once, sink });
        ListenerId(id)
    }

    /// Calls `f` for every `name` event.
    pub fn on(&self, name: &str, f: impl Fn(&Event) + Send + Sync + 'static) -> ListenerId {
        self.add(name, false, Sink::Callback(Arc::new(f)))
    }

    /// Calls `f` for the next `name` event only.
    pub fn once(&self, name: &str, f: impl Fn(&Event) + Send + Sync + 'static) -> ListenerId {
        self.add(name, true, Sink::Callback(Arc::new(f)))
    }

    /// Every `name` event, as a stream; the listener goes away when the receiver is dropped.
    pub fn subscribe(&self, name: &str) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.add(name, false, Sink::Stream(tx));
        rx
    }

    /// Removes one listener.
    pub fn off(&self, id: ListenerId) {
        for list in self.lock().values_mut() {
            list.retain(|e| e.id != id.0);
        }
    }

    /// Removes every listener of `name`.
    pub fn off_all(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Delivers an event to its listeners. Callbacks run on the caller's task, outside the lock;
    /// a panicking callback is caught and logged so one bad listener cannot stop the others.
    pub fn dispatch(&self, ev: &Event) {
        let callbacks: Vec<Callback> = {
            let mut map = self.lock();
            let Some(list) = map.get_mut(&ev.name) else {
                return;
            };
            let mut out = Vec::new();
            list.retain(|e| {
                let keep = match &e.sink {
                    Sink::Callback(cb) => {
                        out.push(cb.clone());
                        true
                    }
                    Sink::Stream(tx) => tx.send(ev.clone()).is_ok(),
                };
                keep && !e.once
            });
            out
        };
        for cb in callbacks {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(ev))).is_err() {
                tracing::warn!(event = %ev.name, "a listener panicked");
            }
        }
    }

    /// True when nobody listens to `name`.
    pub fn is_empty_for(&self, name: &str) -> bool {
        self.lock().get(name).is_none_or(Vec::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn ev(name: &str) -> Event {
        Event {
            name: name.into(),
            args: vec![],
            origin: Origin::Local,
            data: None,
            stream: None,
        }
    }

    #[test]
    fn on_once_off() {
        let r = Registry::default();
        let n = Arc::new(AtomicUsize::new(0));
        let a = n.clone();
        let id = r.on("x", move |_| {
            a.fetch_add(1, Ordering::SeqCst);
        });
        let b = n.clone();
        r.once("x", move |_| {
            b.fetch_add(10, Ordering::SeqCst);
        });
        r.dispatch(&ev("x"));
        r.dispatch(&ev("x"));
        assert_eq!(n.load(Ordering::SeqCst), 12);
        r.off(id);
        r.dispatch(&ev("x"));
        assert_eq!(n.load(Ordering::SeqCst), 12);
        assert!(r.is_empty_for("x"));
    }

    #[test]
    fn streams_and_panics() {
        let r = Registry::default();
        let mut rx = r.subscribe("y");
        r.on("y", |_| panic!("listener bug"));
        r.dispatch(&ev("y"));
        assert_eq!(rx.try_recv().map(|e| e.name), Ok("y".to_string()));
        drop(rx);
        r.dispatch(&ev("y"));
        // The dropped stream is gone; the panicking callback stays registered.
        assert!(!r.is_empty_for("y"));
    }
}
