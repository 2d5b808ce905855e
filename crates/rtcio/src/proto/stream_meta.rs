//! Stream metadata (PROTOCOL.md §5.1, §5.4, §5.5): which events a local stream was emitted with,
//! the `"[RTCIOStream] <id>"` tokens that stand for streams in event arguments, and the
//! `{mid}` request / `{mid, events}` response exchanged over signaling.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::proto::envelope::is_reserved;

/// Prefix of a stream token in event arguments (exactly one space follows the bracket).
pub const TOKEN_PREFIX: &str = "[RTCIOStream] ";

/// Stands for this socket's *current* id in emitted arguments (`{"id": SELF_ID, "camera": …}`).
/// A stream announcement is stored and re-sent to every later peer; the placeholder is replaced
/// each time it leaves, so after a reconnect that changed the socket id receivers still key the
/// stream by the id that sends it. Never sent as such.
pub const SELF_ID: &str = "[RTCIOSelf]";

/// `args` with every string equal to [`SELF_ID`] (at any depth) replaced by `id`.
pub fn resolve_self_id(args: &[Value], id: &str) -> Vec<Value> {
    fn has(v: &Value) -> bool {
        match v {
            Value::String(s) => s == SELF_ID,
            Value::Array(a) => a.iter().any(has),
            Value::Object(o) => o.values().any(has),
            _ => false,
        }
    }
    fn walk(v: &Value, id: &str) -> Value {
        match v {
            Value::String(s) if s == SELF_ID => Value::String(id.to_string()),
            Value::Array(a) => Value::Array(a.iter().map(|x| walk(x, id)).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, x)| (k.clone(), walk(x, id))).collect())
            }
            other => other.clone(),
        }
    }
    if !args.iter().any(has) {
        return args.to_vec();
    }
    args.iter().map(|v| walk(v, id)).collect()
}

/// The token that stands for the stream `id` in event arguments.
pub fn token(id: &str) -> String {
    format!("{TOKEN_PREFIX}{id}")
}

/// The stream id inside a token string, if it is one (the JS matches the `[RTCIOStream]` prefix
/// and strips `"[RTCIOStream] "`).
pub fn token_id(s: &str) -> Option<&str> {
    if !s.starts_with("[RTCIOStream]") {
        return None;
    }
    Some(
        s.strip_prefix(TOKEN_PREFIX)
            .unwrap_or(&s["[RTCIOStream]".len()..]),
    )
}

/// The first stream token in `args`, depth first (arrays in order, object keys in order).
pub fn first_token(args: &[Value]) -> Option<String> {
    fn walk(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => token_id(s).map(str::to_string),
            Value::Array(a) => a.iter().find_map(walk),
            Value::Object(o) => o.values().find_map(walk),
            _ => None,
        }
    }
    args.iter().find_map(walk)
}

/// Event name → arguments, in first-emit order.
type EventArgs = Vec<(String, Vec<Value>)>;

/// Local streams and the events they were emitted with (`streamEvents` in the JS).
#[derive(Debug, Default, Clone)]
pub struct StreamRegistry {
    /// stream id → its events, streams in registration order.
    entries: Vec<(String, EventArgs)>,
}

impl StreamRegistry {
    /// Records `event(args)` for a stream; re-emitting the same name replaces its args.
    pub fn register(&mut self, stream: &str, event: &str, args: Vec<Value>) {
        let idx = match self.entries.iter().position(|(s, _)| s == stream) {
            Some(i) => i,
            None => {
                self.entries.push((stream.to_string(), Vec::new()));
                self.entries.len() - 1
            }
        };
        let events = &mut self.entries[idx].1;
        match events.iter_mut().find(|(e, _)| e == event) {
            Some(slot) => slot.1 = args,
            None => events.push((event.to_string(), args)),
        }
    }

    /// Forgets a stream: future peers do not get it and late requests get no answer.
    pub fn untrack(&mut self, stream: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(s, _)| s != stream);
        before != self.entries.len()
    }

    /// Registered stream ids, in registration order (for replay to a new peer).
    pub fn streams(&self) -> Vec<String> {
        self.entries.iter().map(|(s, _)| s.clone()).collect()
    }

    /// The `{event: args}` map of a stream, if registered, as sent by socket `self_id` (see
    /// [`SELF_ID`]).
    pub fn events(&self, stream: &str, self_id: &str) -> Option<Map<String, Value>> {
        let (_, events) = self.entries.iter().find(|(s, _)| s == stream)?;
        Some(
            events
                .iter()
                .map(|(e, a)| (e.clone(), Value::Array(resolve_self_id(a, self_id))))
                .collect(),
        )
    }
}

/// Per peer, on the sending side: which msid (MediaStream id) carries which rtc.io stream.
#[derive(Debug, Default, Clone)]
pub struct SentStreams {
    by_msid: HashMap<String, String>,
    /// msids the peer asked about: it has applied our SDP and knows the stream.
    requested: std::collections::HashSet<String>,
}

impl SentStreams {
    /// Remembers that `msid` carries `stream` to this peer (before the SDP leaves).
    pub fn insert(&mut self, msid: &str, stream: &str) {
        self.by_msid.insert(msid.to_string(), stream.to_string());
    }

    /// A `{mid}` request from the peer: the `data` of the reply (see [`Self::answer`]); the
    /// stream then counts as known to the peer.
    pub fn on_request(
        &mut self,
        mid: &str,
        registry: &StreamRegistry,
        self_id: &str,
    ) -> Option<Value> {
        if self.by_msid.contains_key(mid) {
            self.requested.insert(mid.to_string());
        }
        self.answer(mid, registry, self_id)
    }

    /// An unsolicited metadata update for a re-emitted stream, only if the peer asked about it
    /// before: a push that reaches a browser before our SDP is dropped there, and as the first
    /// message from us it would even create the peer the wrong way (PROTOCOL.md §3.3).
    pub fn update(&self, mid: &str, registry: &StreamRegistry, self_id: &str) -> Option<Value> {
        if !self.requested.contains(mid) {
            return None;
        }
        self.answer(mid, registry, self_id)
    }

    /// The `data` of the reply to a `{mid}` request as sent by socket `self_id`, or `None`
    /// (unknown msid, or untracked: rtc.io answers nothing then).
    pub fn answer(&self, mid: &str, registry: &StreamRegistry, self_id: &str) -> Option<Value> {
        let stream = self.by_msid.get(mid)?;
        let events = registry.events(stream, self_id)?;
        let mut data = Map::new();
        data.insert("mid".into(), Value::String(mid.to_string()));
        data.insert("events".into(), Value::Object(events));
        Some(Value::Object(data))
    }
}

/// `{mid}`: the receiver's metadata request.
pub fn request(mid: &str) -> Value {
    let mut data = Map::new();
    data.insert("mid".into(), Value::String(mid.to_string()));
    Value::Object(data)
}

/// Event name → arguments of one announcement, in the sender's order.
pub type Announced = Vec<(String, Vec<Value>)>;

/// The dispatchable events of a `{mid, events}` response and the names dropped from it. Reserved
/// names (`peer-connect`, `track-added`, `#rtcio:*`, …) must not reach the application as stream
/// events any more than over ctrl; a non-array argument list counts as one argument.
pub fn response_events(events: Map<String, Value>) -> (Announced, Vec<String>) {
    let mut keep = Vec::new();
    let mut dropped = Vec::new();
    for (name, args) in events {
        if is_reserved(&name) {
            dropped.push(name);
            continue;
        }
        let args = match args {
            Value::Array(a) => a,
            other => vec![other],
        };
        keep.push((name, args));
    }
    (keep, dropped)
}

/// How long an announcement for a stream with no negotiated track waits for one (a response
/// that overtook its SDP) before it is dropped.
pub const ANNOUNCE_HOLD: Duration = Duration::from_secs(2);

/// Announcements held per peer at most: a forger cannot grow the table.
pub const MAX_HELD: usize = 8;

struct Held {
    mid: String,
    events: Announced,
    until: Instant,
}

/// Per peer, on the receiving side: stream announcements are dispatched only for a stream that
/// has at least one track in the applied SDP. Others are held briefly, then dropped; all are
/// dropped with the peer.
#[derive(Default)]
pub struct Announcements {
    held: Vec<Held>,
}

impl Announcements {
    /// A response for `mid`. `has_track`: the applied SDP gives that stream a track. Returns
    /// the events to dispatch now, or `None` if the announcement is held.
    pub fn on_response(
        &mut self,
        mid: &str,
        events: Announced,
        has_track: bool,
        now: Instant,
    ) -> Option<Announced> {
        self.held.retain(|h| h.mid != mid);
        if has_track {
            return Some(events);
        }
        if self.held.len() >= MAX_HELD {
            self.held.remove(0);
        }
        self.held.push(Held {
            mid: mid.to_string(),
            events,
            until: now + ANNOUNCE_HOLD,
        });
        None
    }

    /// After a remote description was applied: the held announcements whose stream now has a
    /// track, to dispatch.
    pub fn release(&mut self, has_track: impl Fn(&str) -> bool) -> Vec<(String, Announced)> {
        let (ready, wait): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| has_track(&h.mid));
        self.held = wait;
        ready.into_iter().map(|h| (h.mid, h.events)).collect()
    }

    /// Drops the announcements whose wait is over; returns their mids.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let (gone, keep): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.until <= now);
        self.held = keep;
        gone.into_iter().map(|h| h.mid).collect()
    }

    /// When the next held announcement expires.
    pub fn deadline(&self) -> Option<Instant> {
        self.held.iter().map(|h| h.until).min()
    }

    /// The peer is gone: forget everything held.
    pub fn clear(&mut self) {
        self.held.clear();
    }

    /// Announcements waiting for a track.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens() {
        assert_eq!(token("abc"), "[RTCIOStream] abc");
        assert_eq!(token_id("[RTCIOStream] abc"), Some("abc"));
        assert_eq!(token_id("[RTCIOStream]abc"), Some("abc"));
        assert_eq!(token_id("abc"), None);
        let args = vec![
            json!({"id": "A", "name": "alice", "camera": "[RTCIOStream] s1"}),
            json!("[RTCIOStream] s2"),
        ];
        assert_eq!(first_token(&args), Some("s1".into()));
        assert_eq!(
            first_token(&[json!([1, ["[RTCIOStream] deep"]])]),
            Some("deep".into())
        );
        assert_eq!(first_token(&[json!({"a": 1})]), None);
    }

    #[test]
    fn registry_replaces_per_event_and_untracks() {
        let mut r = StreamRegistry::default();
        r.register("s1", "camera", vec![json!({"camera": token("s1"), "n": 1})]);
        r.register("s1", "screen", vec![json!(token("s1"))]);
        r.register("s1", "camera", vec![json!({"camera": token("s1"), "n": 2})]);
        let ev = r.events("s1", "A").unwrap();
        assert_eq!(ev.keys().collect::<Vec<_>>(), vec!["camera", "screen"]);
        assert_eq!(ev["camera"][0]["n"], 2);
        assert_eq!(r.streams(), vec!["s1".to_string()]);
        assert!(r.untrack("s1"));
        assert!(!r.untrack("s1"));
        assert!(r.events("s1", "A").is_none());
    }

    #[test]
    fn answers_only_known_tracked_streams() {
        let mut r = StreamRegistry::default();
        r.register(
            "s1",
            "camera",
            vec![json!({"id": "A", "camera": token("s1")})],
        );
        let mut sent = SentStreams::default();
        sent.insert("msid-1", "s1");
        let a = sent.answer("msid-1", &r, "A").unwrap();
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"mid":"msid-1","events":{"camera":[{"id":"A","camera":"[RTCIOStream] s1"}]}}"#
        );
        assert!(sent.answer("other", &r, "A").is_none());
        // No unsolicited update before the peer asked about the stream.
        assert!(sent.update("msid-1", &r, "A").is_none());
        assert!(sent.on_request("msid-1", &r, "A").is_some());
        assert_eq!(sent.update("msid-1", &r, "A"), Some(a.clone()));
        r.untrack("s1");
        assert!(sent.answer("msid-1", &r, "A").is_none());
        assert_eq!(request("m"), json!({"mid": "m"}));
    }

    #[test]
    fn announcements_name_the_current_socket_id() {
        let mut r = StreamRegistry::default();
        r.register(
            "s1",
            "camera",
            vec![json!({"id": SELF_ID, "name": "alice", "camera": token("s1"), "deep": [SELF_ID]})],
        );
        let mut sent = SentStreams::default();
        sent.insert("msid-1", "s1");
        let before = sent.on_request("msid-1", &r, "old-id").unwrap();
        assert_eq!(before["events"]["camera"][0]["id"], "old-id");
        // A reconnect gave the socket a new id: the stored announcement follows it.
        let after = sent.answer("msid-1", &r, "new-id").unwrap();
        assert_eq!(
            after["events"]["camera"],
            json!([{"id": "new-id", "name": "alice", "camera": "[RTCIOStream] s1", "deep": ["new-id"]}])
        );
        assert_eq!(sent.update("msid-1", &r, "new-id"), Some(after));
        // Only the exact placeholder is replaced.
        let args = vec![json!("x[RTCIOSelf]"), json!(1), json!(null)];
        assert_eq!(resolve_self_id(&args, "A"), args);
    }

    #[test]
    fn reserved_names_in_metadata_are_dropped() {
        let events = json!({
            "peer-connect": [{"id": "forged"}],
            "peer-disconnect": [{"id": "forged"}],
            "track-added": [{"peerId": "forged"}],
            "track-removed": [],
            "#rtcio:init-offer": [{"source": "x"}],
            "camera": [{"id": "A", "camera": "[RTCIOStream] s1"}],
            "screen": "[RTCIOStream] s1",
        });
        let Value::Object(map) = events else {
            unreachable!()
        };
        let (keep, dropped) = response_events(map);
        let names: Vec<&str> = keep.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"camera") && names.contains(&"screen"));
        let screen = keep.iter().find(|(n, _)| n == "screen").unwrap();
        assert_eq!(
            screen.1,
            vec![json!("[RTCIOStream] s1")],
            "a bare arg is one arg"
        );
        assert_eq!(dropped.len(), 5);
        assert!(dropped.iter().all(|d| is_reserved(d)));
    }

    #[test]
    fn announcements_without_a_track_are_held_then_dropped() {
        let t0 = Instant::now();
        let ev = || vec![("camera".to_string(), vec![json!({"id": "A"})])];
        let mut a = Announcements::default();
        // A stream with a negotiated track: at once.
        assert_eq!(a.on_response("m1", ev(), true, t0), Some(ev()));
        assert_eq!(a.held(), 0);
        // None yet: held until an SDP gives it a track…
        assert_eq!(a.on_response("m2", ev(), false, t0), None);
        assert_eq!(a.deadline(), Some(t0 + ANNOUNCE_HOLD));
        assert!(a.release(|m| m == "other").is_empty());
        assert_eq!(a.release(|m| m == "m2"), vec![("m2".to_string(), ev())]);
        assert_eq!(a.held(), 0);
        // …or dropped when the wait is over.
        assert_eq!(a.on_response("ghost", ev(), false, t0), None);
        assert!(a.expire(t0 + ANNOUNCE_HOLD / 2).is_empty());
        assert_eq!(a.expire(t0 + ANNOUNCE_HOLD), vec!["ghost".to_string()]);
        assert_eq!(a.deadline(), None);
        assert!(
            a.release(|_| true).is_empty(),
            "an expired one never comes back"
        );
    }

    #[test]
    fn held_announcements_are_bounded_and_cleared_with_the_peer() {
        let t0 = Instant::now();
        let mut a = Announcements::default();
        for i in 0..(MAX_HELD + 5) {
            assert_eq!(a.on_response(&format!("m{i}"), vec![], false, t0), None);
        }
        assert_eq!(a.held(), MAX_HELD);
        // The newest are kept; a repeat for one mid replaces it.
        assert_eq!(
            a.on_response(&format!("m{}", MAX_HELD + 4), vec![], false, t0),
            None
        );
        assert_eq!(a.held(), MAX_HELD);
        assert!(a.release(|m| m == "m0").is_empty(), "the oldest went first");
        a.clear();
        assert_eq!(a.held(), 0);
        assert_eq!(a.deadline(), None);
    }
}
