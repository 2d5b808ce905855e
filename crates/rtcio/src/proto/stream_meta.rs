//! Stream metadata (PROTOCOL.md §5.1, §5.4, §5.5): which events a local stream was emitted with,
//! the `"[RTCIOStream] <id>"` tokens that stand for streams in event arguments, and the
//! `{mid}` request / `{mid, events}` response exchanged over signaling.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// Prefix of a stream token in event arguments (exactly one space follows the bracket).
pub const TOKEN_PREFIX: &str = "[RTCIOStream] ";

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

    /// The `{event: args}` map of a stream, if registered.
    pub fn events(&self, stream: &str) -> Option<Map<String, Value>> {
        let (_, events) = self.entries.iter().find(|(s, _)| s == stream)?;
        Some(
            events
                .iter()
                .map(|(e, a)| (e.clone(), Value::Array(a.clone())))
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
    pub fn on_request(&mut self, mid: &str, registry: &StreamRegistry) -> Option<Value> {
        if self.by_msid.contains_key(mid) {
            self.requested.insert(mid.to_string());
        }
        self.answer(mid, registry)
    }

    /// An unsolicited metadata update for a re-emitted stream, only if the peer asked about it
    /// before: a push that reaches a browser before our SDP is dropped there, and as the first
    /// message from us it would even create the peer the wrong way (PROTOCOL.md §3.3).
    pub fn update(&self, mid: &str, registry: &StreamRegistry) -> Option<Value> {
        if !self.requested.contains(mid) {
            return None;
        }
        self.answer(mid, registry)
    }

    /// The `data` of the reply to a `{mid}` request, or `None` (unknown msid, or untracked:
    /// rtc.io answers nothing then).
    pub fn answer(&self, mid: &str, registry: &StreamRegistry) -> Option<Value> {
        let stream = self.by_msid.get(mid)?;
        let events = registry.events(stream)?;
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
        let ev = r.events("s1").unwrap();
        assert_eq!(ev.keys().collect::<Vec<_>>(), vec!["camera", "screen"]);
        assert_eq!(ev["camera"][0]["n"], 2);
        assert_eq!(r.streams(), vec!["s1".to_string()]);
        assert!(r.untrack("s1"));
        assert!(!r.untrack("s1"));
        assert!(r.events("s1").is_none());
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
        let a = sent.answer("msid-1", &r).unwrap();
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"mid":"msid-1","events":{"camera":[{"id":"A","camera":"[RTCIOStream] s1"}]}}"#
        );
        assert!(sent.answer("other", &r).is_none());
        // No unsolicited update before the peer asked about the stream.
        assert!(sent.update("msid-1", &r).is_none());
        assert!(sent.on_request("msid-1", &r).is_some());
        assert_eq!(sent.update("msid-1", &r), Some(a.clone()));
        r.untrack("s1");
        assert!(sent.answer("msid-1", &r).is_none());
        assert_eq!(request("m"), json!({"mid": "m"}));
    }
}
