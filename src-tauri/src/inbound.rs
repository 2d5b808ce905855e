//! Turns what other apps send into the few shapes the UI understands.
//!
//! rtc.io apps disagree on payloads (PROTOCOL.md §8): we send the tutorial / example-server form
//! and accept every form seen in the docs. Everything here is pure so the rules are unit-tested;
//! anything malformed is dropped (`None`), never trusted.

use rtcio::Event;
use serde::Serialize;
use serde_json::Value;

/// Longest display name we pass on; longer ones are cut (the UI has no use for more).
pub const MAX_NAME_CHARS: usize = 64;
/// Longest chat message we pass on.
pub const MAX_CHAT_CHARS: usize = 4000;

/// Someone's microphone / camera state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaState {
    /// Socket id of the person.
    pub id: String,
    /// Microphone on (`None` when the sender did not say).
    pub mic: Option<bool>,
    /// Camera on (`None` when the sender did not say).
    pub cam: Option<bool>,
    /// The room it was meant for, when given.
    pub room_id: Option<String>,
}

/// A chat message as the UI shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    /// Socket id of the sender when known (peer messages), `None` for our own or server copies.
    pub from: Option<String>,
    /// Display name (the sender's claim).
    pub name: String,
    /// Text.
    pub text: String,
    /// Epoch milliseconds (sender's clock when given, else arrival).
    pub at: u64,
}

/// A presence change from the room server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum RoomEvent {
    /// `user-connected {id, name}`.
    UserConnected {
        /// Socket id.
        id: String,
        /// Display name (`None` when missing).
        name: Option<String>,
    },
    /// `user-disconnected {id}`.
    UserDisconnected {
        /// Socket id.
        id: String,
    },
    /// `join-ok {roomId}`.
    #[serde(rename_all = "camelCase")]
    JoinOk {
        /// The room, when the server said it.
        room_id: Option<String>,
    },
    /// `join-error {reason, roomId?}`.
    #[serde(rename_all = "camelCase")]
    JoinError {
        /// Why.
        reason: String,
        /// The room, when the server said it.
        room_id: Option<String>,
    },
    /// The signaling connection changed state (`connected`, `reconnecting`, `error`).
    Connection {
        /// New state.
        state: &'static str,
        /// Our socket id after a (re)connect.
        id: Option<String>,
    },
}

fn short(s: &str, max: usize) -> String {
    s.trim().chars().take(max).collect()
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `user-connected {id, name}`; only from the server (a peer's ctrl copy would let it add
/// made-up participants: ctrl events share the listener namespace, PROTOCOL.md §4.5).
pub fn user_connected(ev: &Event) -> Option<RoomEvent> {
    if ev.origin != rtcio::Origin::Server {
        return None;
    }
    let arg = ev.arg();
    let id = str_field(arg, "id")?.to_string();
    let name = str_field(arg, "name").map(|n| short(n, MAX_NAME_CHARS));
    Some(RoomEvent::UserConnected { id, name })
}

/// `user-disconnected {id}`; only from the server (a peer could otherwise remove anyone's tile).
pub fn user_disconnected(ev: &Event) -> Option<RoomEvent> {
    if ev.origin != rtcio::Origin::Server {
        return None;
    }
    let id = str_field(ev.arg(), "id")?.to_string();
    Some(RoomEvent::UserDisconnected { id })
}

/// `join-ok {roomId}`; only from the server.
pub fn join_ok(ev: &Event) -> Option<RoomEvent> {
    if ev.origin != rtcio::Origin::Server {
        return None;
    }
    Some(RoomEvent::JoinOk {
        room_id: str_field(ev.arg(), "roomId").map(str::to_string),
    })
}

/// `join-error {reason, roomId?}`; only from the server. A missing reason becomes `unknown`.
pub fn join_error(ev: &Event) -> Option<RoomEvent> {
    if ev.origin != rtcio::Origin::Server {
        return None;
    }
    let arg = ev.arg();
    Some(RoomEvent::JoinError {
        reason: str_field(arg, "reason")
            .map(|r| short(r, MAX_NAME_CHARS))
            .unwrap_or_else(|| "unknown".into()),
        room_id: str_field(arg, "roomId").map(str::to_string),
    })
}

/// `media-state` in every form: server `{id, mic, cam, roomId}`, tutorial ctrl (same), and the
/// per-peer ctrl `{mic, cam}` without an id (then the sending peer is the subject). A state for
/// another room is dropped, as is one that says nothing, as is a peer's claim about someone
/// else (over ctrl the sender is known, and the tutorial form's `id` is the sender's own).
pub fn media_state(ev: &Event, our_room: &str) -> Option<MediaState> {
    let arg = ev.arg();
    let id = str_field(arg, "id").or(ev.peer())?.to_string();
    if ev.peer().is_some_and(|peer| peer != id) {
        return None;
    }
    let room_id = str_field(arg, "roomId").map(str::to_string);
    if room_id.as_deref().is_some_and(|r| r != our_room) {
        return None;
    }
    let mic = arg.get("mic").and_then(Value::as_bool);
    let cam = arg.get("cam").and_then(Value::as_bool);
    if mic.is_none() && cam.is_none() {
        return None;
    }
    Some(MediaState {
        id,
        mic,
        cam,
        room_id,
    })
}

/// A chat message from the broadcast channel `chat` (event `msg`: `{name, text, at}`,
/// `{name, text}` or a bare string), the ctrl event `chat {text, from}`, or the example server's
/// `chat-message {roomId, …}` echo.
pub fn chat(ev: &Event, our_room: &str) -> Option<ChatMessage> {
    let arg = ev.arg();
    let from = ev.peer().map(str::to_string);
    let (text, name, at) = match arg {
        Value::String(s) => (s.as_str(), None, None),
        Value::Object(_) => {
            if let Some(room) = str_field(arg, "roomId")
                && room != our_room
            {
                return None;
            }
            let text = str_field(arg, "text").or(str_field(arg, "message"))?;
            let name = str_field(arg, "name")
                .or(str_field(arg, "from"))
                .or(str_field(arg, "user"));
            (text, name, arg.get("at").and_then(Value::as_u64))
        }
        _ => return None,
    };
    let text: String = text.chars().take(MAX_CHAT_CHARS).collect();
    if text.trim().is_empty() {
        return None;
    }
    let name = name.map(|n| short(n, MAX_NAME_CHARS)).unwrap_or_else(|| {
        from.as_deref()
            .map(|id| format!("Guest {}", id.chars().take(4).collect::<String>()))
            .unwrap_or_else(|| "Someone".into())
    });
    Some(ChatMessage {
        from,
        name,
        text,
        at: at.unwrap_or_else(now_ms),
    })
}

/// `peer-connect {id}` / `peer-disconnect {id}`: only the library raises them.
pub fn peer_id(ev: &Event) -> Option<String> {
    if ev.origin != rtcio::Origin::Local {
        return None;
    }
    str_field(ev.arg(), "id").map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtcio::Origin;
    use serde_json::json;

    fn ev(name: &str, arg: Value, origin: Origin) -> Event {
        Event::new(name, vec![arg], origin)
    }

    #[test]
    fn media_state_forms() {
        let srv = ev(
            "media-state",
            json!({"id": "a", "roomId": "r", "mic": false, "cam": true}),
            Origin::Server,
        );
        assert_eq!(
            media_state(&srv, "r"),
            Some(MediaState {
                id: "a".into(),
                mic: Some(false),
                cam: Some(true),
                room_id: Some("r".into())
            })
        );
        // Another room: dropped.
        assert_eq!(media_state(&srv, "other"), None);
        // Per-peer ctrl form without id: the peer is the subject.
        let ctrl = ev(
            "media-state",
            json!({"mic": true, "cam": false}),
            Origin::Peer("p1".into()),
        );
        assert_eq!(media_state(&ctrl, "r").map(|m| m.id), Some("p1".into()));
        // Tutorial ctrl form: the id is the sender's own; a claim about someone else is dropped.
        let own = ev(
            "media-state",
            json!({"id": "p1", "roomId": "r", "mic": true, "cam": true}),
            Origin::Peer("p1".into()),
        );
        assert_eq!(media_state(&own, "r").map(|m| m.id), Some("p1".into()));
        let spoof = ev(
            "media-state",
            json!({"id": "a", "roomId": "r", "mic": false, "cam": false}),
            Origin::Peer("p1".into()),
        );
        assert_eq!(media_state(&spoof, "r"), None);
        // Nothing useful, or no one to attribute it to.
        assert_eq!(
            media_state(&ev("media-state", json!({"id": "a"}), Origin::Server), "r"),
            None
        );
        assert_eq!(
            media_state(
                &ev("media-state", json!({"mic": true}), Origin::Server),
                "r"
            ),
            None
        );
        assert_eq!(
            media_state(&ev("media-state", json!("junk"), Origin::Server), "r"),
            None
        );
    }

    #[test]
    fn chat_forms() {
        let p = Origin::Peer("abcdef".into());
        let m = chat(
            &ev(
                "msg",
                json!({"name": "Ann", "text": "hi", "at": 5}),
                p.clone(),
            ),
            "r",
        )
        .unwrap();
        assert_eq!((m.name.as_str(), m.text.as_str(), m.at), ("Ann", "hi", 5));
        assert_eq!(m.from.as_deref(), Some("abcdef"));

        let m = chat(&ev("msg", json!("bare"), p.clone()), "r").unwrap();
        assert_eq!((m.name.as_str(), m.text.as_str()), ("Guest abcd", "bare"));

        let m = chat(
            &ev("chat", json!({"text": "yo", "from": "Bob"}), p.clone()),
            "r",
        )
        .unwrap();
        assert_eq!(m.name, "Bob");

        let srv = ev(
            "chat-message",
            json!({"roomId": "x", "text": "elsewhere"}),
            Origin::Server,
        );
        assert_eq!(chat(&srv, "r"), None);
        assert_eq!(
            chat(&ev("msg", json!({"text": "  "}), p.clone()), "r"),
            None
        );
        assert_eq!(chat(&ev("msg", json!(42), p.clone()), "r"), None);

        let long = "x".repeat(MAX_CHAT_CHARS + 10);
        let m = chat(&ev("msg", json!({"text": long}), p), "r").unwrap();
        assert_eq!(m.text.chars().count(), MAX_CHAT_CHARS);
    }

    #[test]
    fn presence_and_join_results() {
        let uc = ev(
            "user-connected",
            json!({"name": "  Ann  ", "id": "a"}),
            Origin::Server,
        );
        assert_eq!(
            user_connected(&uc),
            Some(RoomEvent::UserConnected {
                id: "a".into(),
                name: Some("Ann".into())
            })
        );
        assert_eq!(
            user_connected(&ev("user-connected", json!({}), Origin::Server)),
            None
        );
        assert_eq!(
            user_disconnected(&ev("user-disconnected", json!({"id": "a"}), Origin::Server)),
            Some(RoomEvent::UserDisconnected { id: "a".into() })
        );
        // Presence is the server's word; a peer's ctrl copy is not.
        let p = Origin::Peer("p".into());
        assert_eq!(
            user_connected(&ev(
                "user-connected",
                json!({"id": "x", "name": "X"}),
                p.clone()
            )),
            None
        );
        assert_eq!(
            user_disconnected(&ev("user-disconnected", json!({"id": "a"}), p)),
            None
        );
        let je = ev(
            "join-error",
            json!({"reason": "wrong-password", "roomId": "r"}),
            Origin::Server,
        );
        assert_eq!(
            serde_json::to_value(join_error(&je).unwrap()).unwrap(),
            json!({"type": "join-error", "reason": "wrong-password", "roomId": "r"})
        );
        // A peer cannot fake the server's verdict.
        let spoof = ev(
            "join-error",
            json!({"reason": "x"}),
            Origin::Peer("p".into()),
        );
        assert_eq!(join_error(&spoof), None);
        assert_eq!(
            join_ok(&ev("join-ok", json!({}), Origin::Peer("p".into()))),
            None
        );
    }

    #[test]
    fn peer_events_only_local() {
        assert_eq!(
            peer_id(&ev("peer-connect", json!({"id": "p"}), Origin::Local)),
            Some("p".into())
        );
        assert_eq!(
            peer_id(&ev("peer-connect", json!({"id": "p"}), Origin::Server)),
            None
        );
    }
}
