//! stdout: one JSON object per line with `--json`, short human lines otherwise. Every line is
//! built as a JSON object first (`type`, `ts` and the type's fields), so both forms carry the
//! same information. Writes are whole lines under the stdout lock, so concurrent tasks never
//! interleave.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// Milliseconds since the Unix epoch.
pub fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where result lines go.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Prints one line of `kind` with `fields` (an object; other values go under `value`).
    pub fn line(&self, kind: &str, fields: Value) {
        let obj = build(kind, fields);
        let text = if self.json {
            Value::Object(obj).to_string()
        } else {
            human(&obj)
        };
        let mut out = std::io::stdout().lock();
        // A closed stdout (e.g. `| head`) must not kill the session.
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

/// `{"type": kind, "ts": now, ...fields}`.
pub fn build(kind: &str, fields: Value) -> Map<String, Value> {
    let mut obj = Map::new();
    obj.insert("type".into(), Value::String(kind.into()));
    obj.insert("ts".into(), json!(epoch_ms()));
    match fields {
        Value::Object(m) => obj.extend(m),
        Value::Null => {}
        other => {
            obj.insert("value".into(), other);
        }
    }
    obj
}

fn s<'a>(o: &'a Map<String, Value>, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or("?")
}

fn n(o: &Map<String, Value>, k: &str) -> String {
    match o.get(k) {
        Some(Value::Null) | None => "?".into(),
        Some(v) => v.to_string(),
    }
}

fn args_text(o: &Map<String, Value>) -> String {
    match o.get("args") {
        Some(Value::Array(a)) => a.iter().map(Value::to_string).collect::<Vec<_>>().join(" "),
        Some(v) => v.to_string(),
        None => String::new(),
    }
}

fn who(o: &Map<String, Value>) -> String {
    match o.get("name").and_then(Value::as_str) {
        Some(n) => format!("{n} ({})", s(o, "peer")),
        None => s(o, "peer").to_string(),
    }
}

/// The human form of a line.
fn human(o: &Map<String, Value>) -> String {
    let kind = s(o, "type");
    match kind {
        "joined" => format!(
            "joined room {} as {} (id {})",
            s(o, "room"),
            s(o, "name"),
            s(o, "id")
        ),
        "hosting" => format!(
            "hosting on {} — others join with --server {}",
            s(o, "listen"),
            o.get("urls")
                .and_then(Value::as_array)
                .and_then(|u| u.first())
                .and_then(Value::as_str)
                .unwrap_or("?")
        ),
        "peer-connect" => format!("+ {} connected", who(o)),
        "peer-disconnect" => format!("- {} disconnected", who(o)),
        "server-event" => format!("[server] {} {}", s(o, "event"), args_text(o)),
        "event" => format!("[{}] {} {}", who(o), s(o, "event"), args_text(o)),
        "channel-message" => {
            let a = o.get("args").and_then(|a| a.get(0));
            match (
                a.and_then(|a| a.get("name")).and_then(Value::as_str),
                a.and_then(|a| a.get("text")).and_then(Value::as_str),
            ) {
                (Some(n), Some(t)) if s(o, "channel") == "chat" => format!("<{n}> {t}"),
                _ => format!(
                    "[{}#{}] {} {}",
                    who(o),
                    s(o, "channel"),
                    s(o, "event"),
                    args_text(o)
                ),
            }
        }
        "chat-sent" => format!("<me> {}", s(o, "text")),
        "stream" => {
            let kinds: Vec<&str> = o
                .get("tracks")
                .and_then(Value::as_array)
                .map(|t| t.iter().filter_map(|t| t["kind"].as_str()).collect())
                .unwrap_or_default();
            format!(
                "[{}] {}: stream {} ({})",
                who(o),
                s(o, "event"),
                s(o, "stream"),
                kinds.join(", ")
            )
        }
        "video-stats" => format!(
            "video from {}: {}x{} {} fps, {} decoded, {} kbps{}",
            who(o),
            n(o, "width"),
            n(o, "height"),
            n(o, "fps"),
            n(o, "frames_decoded"),
            n(o, "kbps"),
            match o.get("latency_ms") {
                Some(l) => format!(", latency {l} ms"),
                None => String::new(),
            }
        ),
        "audio-stats" => format!(
            "audio from {}: {} packets/s, {} decoded, {} dBFS",
            who(o),
            n(o, "pps"),
            n(o, "decoded"),
            n(o, "level_dbfs")
        ),
        "send-stats" => format!(
            "sending {} ({}): {} fps, {} kbps to {} peer(s)",
            s(o, "kind"),
            s(o, "source"),
            n(o, "fps"),
            n(o, "kbps"),
            n(o, "peers")
        ),
        "record" => format!(
            "recording {} of {} to {}",
            s(o, "kind"),
            who(o),
            s(o, "path")
        ),
        "latency" => format!(
            "latency of {}: p50 {} ms, p95 {} ms, p99 {} ms ({} frames, {} fps)",
            who(o),
            n(o, "p50_ms"),
            n(o, "p95_ms"),
            n(o, "p99_ms"),
            n(o, "samples"),
            n(o, "fps")
        ),
        "signaling" => format!("signaling {}", s(o, "state")),
        "left" => format!("left ({})", s(o, "reason")),
        "error" => format!("error: {}", s(o, "message")),
        _ => {
            // Generic: `type key=value …` without the timestamp.
            let rest: Vec<String> = o
                .iter()
                .filter(|(k, _)| *k != "type" && *k != "ts")
                .map(|(k, v)| match v {
                    Value::String(t) => format!("{k}={t}"),
                    v => format!("{k}={v}"),
                })
                .collect();
            format!("{kind} {}", rest.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_have_type_and_ts_first() {
        let o = build("peer-connect", json!({"peer": "abc", "name": null}));
        let text = Value::Object(o).to_string();
        assert!(
            text.starts_with(r#"{"type":"peer-connect","ts":"#),
            "{text}"
        );
        assert!(!text.contains('\n'));
    }

    #[test]
    fn human_forms() {
        let chat = build(
            "channel-message",
            json!({"peer": "p1", "channel": "chat", "event": "msg",
                   "args": [{"name": "bob", "text": "hi", "at": 1}]}),
        );
        assert_eq!(human(&chat), "<bob> hi");
        let ev = build(
            "event",
            json!({"peer": "p1", "name": "bob", "event": "hello", "args": [{"x": 1}]}),
        );
        assert_eq!(human(&ev), r#"[bob (p1)] hello {"x":1}"#);
        let vs = build(
            "video-stats",
            json!({"peer": "p1", "name": "bob", "width": 320, "height": 180, "fps": 30.0,
                   "frames_decoded": 90, "kbps": 300.5}),
        );
        assert_eq!(
            human(&vs),
            "video from bob (p1): 320x180 30.0 fps, 90 decoded, 300.5 kbps"
        );
        let other = build("mesh", json!({"peers": 3, "setup_ms": 700}));
        assert_eq!(human(&other), "mesh peers=3 setup_ms=700");
    }
}
