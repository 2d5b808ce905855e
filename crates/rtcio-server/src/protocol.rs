//! The rtc.io signaling and room rules as plain functions: parsing inbound socket.io events into
//! typed requests, the password decisions of the example room server, and the exact reply payloads
//! (key order included). Nothing here touches a socket, so every rule is unit-testable.
//!
//! Payloads that are relayed or echoed travel as [`RawValue`] so their bytes (key order, number
//! spelling, escapes) reach the other side exactly as the sender wrote them.

use serde::Serialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

/// Internal relay event: `{source, target, data}` forwarded unchanged to the room `target`.
pub const EV_MESSAGE: &str = "#rtcio:message";
/// Sent by the room logic to existing members when a socket joins: `{source}`.
pub const EV_INIT_OFFER: &str = "#rtcio:init-offer";
/// Sent by the core on disconnecting to every room of the leaver: `{id}`.
pub const EV_PEER_LEFT: &str = "#rtcio:peer-left";

/// Why an inbound event could not be turned into a request. Logged, never answered with a panic.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InboundError {
    /// The socket.io payload was not a JSON array starting with an event name.
    #[error("malformed socket.io event payload: {0}")]
    Malformed(String),
    /// The event carried no argument where one object was expected.
    #[error("event `{0}` has no payload")]
    MissingPayload(String),
    /// The first argument of the event was not a JSON object.
    #[error("event `{0}` payload is not an object")]
    NotAnObject(String),
    /// `roomId` was missing, empty or not a string.
    #[error("event `{0}` has no valid roomId")]
    InvalidRoom(String),
    /// The relay envelope had no string `target`.
    #[error("relay envelope has no string target")]
    NoTarget,
}

/// One inbound socket.io event: its name and the raw JSON text of each argument.
#[derive(Debug)]
pub struct InboundEvent<'a> {
    /// Event name (the first array element).
    pub name: String,
    /// Raw JSON of every following argument, byte-exact.
    pub args: Vec<&'a RawValue>,
}

/// Splits the socket.io event payload `["name", arg, …]` into name and raw arguments.
pub fn parse_event(payload: &str) -> Result<InboundEvent<'_>, InboundError> {
    let items: Vec<&RawValue> =
        serde_json::from_str(payload).map_err(|e| InboundError::Malformed(e.to_string()))?;
    let (first, rest) = items
        .split_first()
        .ok_or_else(|| InboundError::Malformed("empty event array".into()))?;
    let name: String = serde_json::from_str(first.get())
        .map_err(|_| InboundError::Malformed("event name is not a string".into()))?;
    Ok(InboundEvent {
        name,
        args: rest.to_vec(),
    })
}

/// JS truthiness of a JSON value (absent, `null`, `false`, `0`, `""` are falsy).
pub fn truthy(v: Option<&serde_json::Value>) -> bool {
    use serde_json::Value;
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_)) | Some(Value::Object(_)) => true,
    }
}

/// `pw(x)` of the example server: the trimmed string, or `""` for anything else.
pub fn normalize_password(v: Option<&serde_json::Value>) -> String {
    match v {
        Some(serde_json::Value::String(s)) => s.trim().to_string(),
        _ => String::new(),
    }
}

/// Parsed `join-room` / `check-room` request.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomRequest {
    /// The room to join or check.
    pub room_id: String,
    /// Display name (`join-room` only); `None` when absent or not a string.
    pub name: Option<String>,
    /// Password after `pw()` normalisation (`""` when none).
    pub password: String,
}

/// The outcome of validating a room request: either a request or the `join-error` reply to send.
#[derive(Debug, PartialEq)]
pub enum RoomParse {
    /// A well-formed request.
    Ok(RoomRequest),
    /// Invalid room id: reply `join-error {reason: "invalid-room", roomId?}`.
    InvalidRoom(JoinError),
}

/// Parses the first argument of `join-room` / `check-room`.
///
/// The anchor rejects a missing or non-string `roomId` with `invalid-room`, echoing `roomId` only
/// when one was given. We also reject the empty string and ids longer than `max_room_len`.
pub fn parse_room_request(arg: Option<&RawValue>, max_room_len: usize) -> RoomParse {
    let value: serde_json::Value = arg
        .and_then(|a| serde_json::from_str(a.get()).ok())
        .unwrap_or(serde_json::Value::Null);
    let obj = value.as_object();
    let room_raw = obj.and_then(|o| o.get("roomId"));
    let room_id = match room_raw {
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= max_room_len => s.clone(),
        _ => {
            return RoomParse::InvalidRoom(JoinError {
                reason: JoinErrorReason::InvalidRoom,
                room_id: room_raw.cloned(),
            });
        }
    };
    let name = match obj.and_then(|o| o.get("name")) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    RoomParse::Ok(RoomRequest {
        room_id,
        name,
        password: normalize_password(obj.and_then(|o| o.get("password"))),
    })
}

/// Why a `join-room` display name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidName {
    /// More Unicode scalar values than allowed (after trimming).
    #[error("name has {chars} characters, at most {max} are allowed")]
    TooLong {
        /// Length of the trimmed name.
        chars: usize,
        /// The limit in force.
        max: usize,
    },
    /// A control, line-separator or bidirectional-formatting character.
    #[error("name contains the control character U+{0:04X}")]
    ControlCharacter(u32),
}

/// Characters a display name may not contain: they break the one-line labels every client draws
/// (C0/C1 controls, line and paragraph separators) or reorder the text around them to spoof other
/// names (bidirectional embeddings, overrides and isolates).
fn forbidden_in_name(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Validates the display name of a `join-room` (already `None` when absent or not a string, which
/// the anchor would echo as given and we treat as absent).
///
/// With `max_chars == 0` any string passes unchanged (the anchor). Otherwise the name is trimmed;
/// empty after trimming counts as absent; longer than `max_chars` Unicode scalar values or holding a
/// [forbidden character](forbidden_in_name) is refused.
pub fn validate_name(name: Option<&str>, max_chars: usize) -> Result<Option<String>, InvalidName> {
    let Some(name) = name else { return Ok(None) };
    if max_chars == 0 {
        return Ok(Some(name.to_string()));
    }
    let name = name.trim();
    if let Some(c) = name.chars().find(|c| forbidden_in_name(*c)) {
        return Err(InvalidName::ControlCharacter(c as u32));
    }
    let chars = name.chars().count();
    if chars > max_chars {
        return Err(InvalidName::TooLong {
            chars,
            max: max_chars,
        });
    }
    Ok((!name.is_empty()).then(|| name.to_string()))
}

/// Reasons carried by `join-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JoinErrorReason {
    /// Missing, empty or non-string room id.
    InvalidRoom,
    /// The room has a password and a different one was supplied.
    WrongPassword,
    /// The room has a password and none was supplied.
    PasswordRequired,
    /// Too many join / check requests from this socket (our addition).
    RateLimited,
    /// The `join-room` name is too long or has control characters (our addition).
    InvalidName,
}

/// `join-error {"reason", "roomId"}` (roomId omitted when the request had none).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JoinError {
    /// Why the request failed.
    pub reason: JoinErrorReason,
    /// The room id as the client gave it.
    #[serde(rename = "roomId", skip_serializing_if = "Option::is_none")]
    pub room_id: Option<serde_json::Value>,
}

impl JoinError {
    /// A join error for a known room id.
    pub fn for_room(reason: JoinErrorReason, room_id: &str) -> Self {
        JoinError {
            reason,
            room_id: Some(serde_json::Value::String(room_id.to_string())),
        }
    }
}

/// The password rule of the example server for an occupied room.
///
/// `stored` is the room's password (`""` when none). A room without a password lets anyone in and
/// ignores a supplied password.
pub fn check_password(occupied: bool, stored: &str, supplied: &str) -> Result<(), JoinErrorReason> {
    if occupied && !stored.is_empty() && supplied != stored {
        if supplied.is_empty() {
            Err(JoinErrorReason::PasswordRequired)
        } else {
            Err(JoinErrorReason::WrongPassword)
        }
    } else {
        Ok(())
    }
}

/// What happens to the room password when someone joins an empty room.
#[derive(Debug, PartialEq, Eq)]
pub enum PasswordChange {
    /// The room was occupied: leave the password as it is.
    Keep,
    /// Empty room and a non-empty password: it becomes the room password.
    Set(String),
    /// Empty room and no password: drop any stale password.
    Clear,
}

/// Password registry update for a successful join.
pub fn password_change(occupied: bool, supplied: &str) -> PasswordChange {
    if occupied {
        PasswordChange::Keep
    } else if supplied.is_empty() {
        PasswordChange::Clear
    } else {
        PasswordChange::Set(supplied.to_string())
    }
}

/// `room-check-ok {"roomId", "passwordRequired"}`.
#[derive(Debug, Serialize)]
pub struct RoomCheckOk<'a> {
    /// The checked room.
    #[serde(rename = "roomId")]
    pub room_id: &'a str,
    /// True when the room is occupied and has a password.
    #[serde(rename = "passwordRequired")]
    pub password_required: bool,
}

/// `user-connected {"name", "id"}` (name omitted when the member gave none).
#[derive(Debug, Serialize)]
pub struct UserConnected<'a> {
    /// Display name of the member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    /// Socket id of the member.
    pub id: &'a str,
}

/// Backfilled `media-state {"id", "roomId", "mic", "cam"}`.
#[derive(Debug, Serialize)]
pub struct MediaStateBackfill<'a> {
    /// Whose state this is.
    pub id: &'a str,
    /// The room being joined.
    #[serde(rename = "roomId")]
    pub room_id: &'a str,
    /// Microphone on.
    pub mic: bool,
    /// Camera on.
    pub cam: bool,
}

/// `join-ok {"roomId"}`.
#[derive(Debug, Serialize)]
pub struct JoinOk<'a> {
    /// The joined room.
    #[serde(rename = "roomId")]
    pub room_id: &'a str,
}

/// `#rtcio:init-offer {"source"}`.
#[derive(Debug, Serialize)]
pub struct InitOffer<'a> {
    /// The newcomer's socket id.
    pub source: &'a str,
}

/// `{"id"}` as used by `#rtcio:peer-left` and `user-disconnected`.
#[derive(Debug, Serialize)]
pub struct IdOnly<'a> {
    /// The leaver's socket id.
    pub id: &'a str,
}

/// A cached `{mic, cam}` state of one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
pub struct MediaState {
    /// Microphone on.
    pub mic: bool,
    /// Camera on.
    pub cam: bool,
}

/// A room-addressed echo (`media-state`, `stopScreenShare`, `chat-message`): the room it goes to,
/// the verbatim payload, and for `media-state` the cacheable state.
#[derive(Debug)]
pub struct RoomEcho<'a> {
    /// `roomId` of the payload.
    pub room_id: String,
    /// `{mic, cam}` when both are booleans.
    pub media: Option<MediaState>,
    /// The payload exactly as received.
    pub payload: &'a RawValue,
}

/// Parses the payload of an echoed room event. The anchor ignores a falsy `roomId`; we also need it
/// to be a string (a socket.io room name).
pub fn parse_room_echo<'a>(
    event: &str,
    arg: Option<&'a RawValue>,
) -> Result<RoomEcho<'a>, InboundError> {
    let payload = arg.ok_or_else(|| InboundError::MissingPayload(event.to_string()))?;
    let value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(payload.get())
        .map_err(|_| InboundError::NotAnObject(event.to_string()))?;
    let room_id = match value.get("roomId") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(InboundError::InvalidRoom(event.to_string())),
    };
    let media = match (value.get("mic"), value.get("cam")) {
        (Some(serde_json::Value::Bool(mic)), Some(serde_json::Value::Bool(cam))) => {
            Some(MediaState {
                mic: *mic,
                cam: *cam,
            })
        }
        _ => None,
    };
    Ok(RoomEcho {
        room_id,
        media,
        payload,
    })
}

/// The addressing part of a `#rtcio:message` envelope; the payload is relayed untouched.
#[derive(Debug, PartialEq)]
pub struct RelayAddress {
    /// `source` when it is a string.
    pub source: Option<String>,
    /// The room (socket id) the envelope goes to.
    pub target: String,
}

/// Reads `source` and `target` of a relay envelope without touching its `data`: one pass over the
/// text that skips every other member without building it (the relay's hot path). A repeated key
/// counts with its last value, as `JSON.parse` does.
pub fn parse_relay(arg: Option<&RawValue>) -> Result<RelayAddress, InboundError> {
    use serde::Deserializer as _;
    use serde::de::{MapAccess, Visitor};

    #[derive(serde::Deserialize)]
    #[serde(field_identifier, rename_all = "lowercase")]
    enum Field {
        Source,
        Target,
        #[serde(other)]
        Other,
    }
    type Addr = (Option<serde_json::Value>, Option<serde_json::Value>);
    struct AddrVisitor;
    impl<'de> Visitor<'de> for AddrVisitor {
        type Value = Addr;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a relay envelope object")
        }
        fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Addr, M::Error> {
            let (mut source, mut target) = (None, None);
            while let Some(k) = m.next_key::<Field>()? {
                match k {
                    Field::Source => source = Some(m.next_value()?),
                    Field::Target => target = Some(m.next_value()?),
                    Field::Other => {
                        m.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok((source, target))
        }
    }
    let arg = arg.ok_or_else(|| InboundError::MissingPayload(EV_MESSAGE.to_string()))?;
    let not_object = |_| InboundError::NotAnObject(EV_MESSAGE.into());
    let mut de = serde_json::Deserializer::from_str(arg.get());
    let (source, target) = de.deserialize_map(AddrVisitor).map_err(not_object)?;
    de.end().map_err(not_object)?;
    let target = match target {
        Some(serde_json::Value::String(t)) if !t.is_empty() => t,
        _ => return Err(InboundError::NoTarget),
    };
    let source = match source {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    };
    Ok(RelayAddress { source, target })
}

/// Serializes a reply payload. Our reply types cannot fail to serialize.
pub fn to_raw<T: Serialize>(v: &T) -> Box<RawValue> {
    let text = serde_json::to_string(v).unwrap_or_else(|_| "null".to_string());
    RawValue::from_string(text).unwrap_or_else(|_| {
        // Unreachable for serde_json output; keep a valid value rather than panic.
        RawValue::from_string("null".to_string()).expect("literal null is valid JSON")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn event_split_keeps_argument_bytes() {
        let ev = parse_event(r##"["#rtcio:message",{"z":1,"a":1.50,"n":1e3,"s":"\u00e9"},"off"]"##)
            .unwrap();
        assert_eq!(ev.name, "#rtcio:message");
        assert_eq!(ev.args.len(), 2);
        assert_eq!(ev.args[0].get(), r#"{"z":1,"a":1.50,"n":1e3,"s":"\u00e9"}"#);
    }

    #[test]
    fn hostile_event_payloads_are_errors_not_panics() {
        for bad in [
            "", "{}", "[]", "[1]", "[null]", "\"x\"", "[\"a\"", "[\"a\",]", "\u{0}",
        ] {
            assert!(parse_event(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn room_request_validation() {
        let ok = parse_room_request(
            Some(&raw(r#"{"roomId":"r1","name":"bob","password":"  pw "}"#)),
            128,
        );
        assert_eq!(
            ok,
            RoomParse::Ok(RoomRequest {
                room_id: "r1".into(),
                name: Some("bob".into()),
                password: "pw".into()
            })
        );
        let cases: [(Option<&str>, Option<serde_json::Value>); 6] = [
            (None, None),
            (Some("null"), None),
            (Some("5"), None),
            (Some(r#"{"name":"x"}"#), None),
            (Some(r#"{"roomId":7}"#), Some(serde_json::json!(7))),
            (Some(r#"{"roomId":""}"#), Some(serde_json::json!(""))),
        ];
        for (input, echoed) in cases {
            let r = input.map(raw);
            match parse_room_request(r.as_deref(), 128) {
                RoomParse::InvalidRoom(e) => {
                    assert_eq!(e.reason, JoinErrorReason::InvalidRoom);
                    assert_eq!(e.room_id, echoed, "{input:?}");
                }
                other => panic!("{input:?} gave {other:?}"),
            }
        }
        let long = format!(r#"{{"roomId":"{}"}}"#, "x".repeat(200));
        assert!(matches!(
            parse_room_request(Some(&raw(&long)), 128),
            RoomParse::InvalidRoom(_)
        ));
    }

    #[test]
    fn non_string_password_counts_as_none() {
        match parse_room_request(Some(&raw(r#"{"roomId":"r","password":123}"#)), 128) {
            RoomParse::Ok(r) => assert_eq!(r.password, ""),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_are_trimmed_capped_and_free_of_controls() {
        assert_eq!(validate_name(None, 64), Ok(None));
        assert_eq!(validate_name(Some("  bob\t"), 64), Ok(Some("bob".into())));
        assert_eq!(validate_name(Some(" \n "), 64), Ok(None), "blank is absent");
        // Unicode scalar values, not bytes: 64 × "é" (128 bytes) and 64 emoji (256 bytes) pass.
        for unit in ["x", "é", "😀"] {
            let ok = unit.repeat(64);
            assert_eq!(validate_name(Some(&ok), 64), Ok(Some(ok.clone())));
            assert_eq!(
                validate_name(Some(&unit.repeat(65)), 64),
                Err(InvalidName::TooLong { chars: 65, max: 64 })
            );
        }
        assert_eq!(
            validate_name(Some(&format!("  {}  ", "x".repeat(64))), 64),
            Ok(Some("x".repeat(64))),
            "the limit applies after trimming"
        );
        for (bad, code) in [
            ("a\nb", 0x0a),
            ("a\u{0}b", 0),
            ("a\u{7f}", 0x7f),
            ("a\u{9b}b", 0x9b),
            ("a\u{2028}b", 0x2028),
            ("evil\u{202E}gpj.exe", 0x202e),
            ("a\u{2067}b", 0x2067),
        ] {
            assert_eq!(
                validate_name(Some(bad), 64),
                Err(InvalidName::ControlCharacter(code)),
                "{bad:?}"
            );
        }
        // The anchor: anything goes, untouched.
        assert_eq!(validate_name(Some(" a\nb "), 0), Ok(Some(" a\nb ".into())));
        assert_eq!(
            to_raw(&JoinError::for_room(JoinErrorReason::InvalidName, "r")).get(),
            r#"{"reason":"invalid-name","roomId":"r"}"#
        );
    }

    #[test]
    fn password_rules_match_example_server() {
        assert_eq!(check_password(false, "pw", ""), Ok(()));
        assert_eq!(check_password(true, "", "anything"), Ok(()));
        assert_eq!(check_password(true, "pw", "pw"), Ok(()));
        assert_eq!(
            check_password(true, "pw", ""),
            Err(JoinErrorReason::PasswordRequired)
        );
        assert_eq!(
            check_password(true, "pw", "nope"),
            Err(JoinErrorReason::WrongPassword)
        );
        assert_eq!(password_change(true, "x"), PasswordChange::Keep);
        assert_eq!(password_change(false, ""), PasswordChange::Clear);
        assert_eq!(password_change(false, "s"), PasswordChange::Set("s".into()));
    }

    #[test]
    fn reply_key_order_is_the_anchors() {
        let e = JoinError::for_room(JoinErrorReason::PasswordRequired, "r");
        assert_eq!(
            to_raw(&e).get(),
            r#"{"reason":"password-required","roomId":"r"}"#
        );
        let e = JoinError {
            reason: JoinErrorReason::InvalidRoom,
            room_id: None,
        };
        assert_eq!(to_raw(&e).get(), r#"{"reason":"invalid-room"}"#);
        assert_eq!(
            to_raw(&UserConnected {
                name: Some("a"),
                id: "X"
            })
            .get(),
            r#"{"name":"a","id":"X"}"#
        );
        assert_eq!(
            to_raw(&MediaStateBackfill {
                id: "X",
                room_id: "r",
                mic: true,
                cam: false
            })
            .get(),
            r#"{"id":"X","roomId":"r","mic":true,"cam":false}"#
        );
        assert_eq!(
            to_raw(&RoomCheckOk {
                room_id: "r",
                password_required: true
            })
            .get(),
            r#"{"roomId":"r","passwordRequired":true}"#
        );
    }

    #[test]
    fn room_echo_caches_only_booleans() {
        let p = raw(r#"{"id":"A","mic":true,"cam":false,"roomId":"r"}"#);
        let e = parse_room_echo("media-state", Some(&p)).unwrap();
        assert_eq!(e.room_id, "r");
        assert_eq!(
            e.media,
            Some(MediaState {
                mic: true,
                cam: false
            })
        );
        let p = raw(r#"{"mic":"yes","cam":false,"roomId":"r"}"#);
        assert_eq!(
            parse_room_echo("media-state", Some(&p)).unwrap().media,
            None
        );
        assert!(parse_room_echo("media-state", Some(&raw(r#"{"mic":true}"#))).is_err());
        assert!(parse_room_echo("chat-message", Some(&raw("null"))).is_err());
        assert!(parse_room_echo("chat-message", Some(&raw("[1]"))).is_err());
        assert!(parse_room_echo("chat-message", None).is_err());
    }

    #[test]
    fn relay_address_parsing() {
        let p = raw(r#"{"target":"B","source":"A","data":{"candidate":{"x":1}}}"#);
        assert_eq!(
            parse_relay(Some(&p)).unwrap(),
            RelayAddress {
                source: Some("A".into()),
                target: "B".into()
            }
        );
        let p = raw(r#"{"target":"B","data":{}}"#);
        assert_eq!(parse_relay(Some(&p)).unwrap().source, None);
        for bad in [
            "null",
            "1",
            r#"{"source":"A"}"#,
            r#"{"target":5}"#,
            r#"{"target":""}"#,
            "[1]",
        ] {
            assert!(parse_relay(Some(&raw(bad))).is_err(), "{bad}");
        }
        // JSON.parse semantics: the last of repeated keys counts, escaped key names are names.
        let p = raw(r#"{"target":"X","source":"A","target":"B","data":[1,{"target":"Y"}]}"#);
        assert_eq!(parse_relay(Some(&p)).unwrap().target, "B");
        let p = raw(r#"{"\u0074arget":"B","source":"A"}"#);
        assert_eq!(parse_relay(Some(&p)).unwrap().target, "B");
    }

    #[test]
    fn truthiness_follows_js() {
        use serde_json::json;
        for v in [json!(null), json!(false), json!(0), json!(""), json!(0.0)] {
            assert!(!truthy(Some(&v)), "{v}");
        }
        for v in [json!({}), json!([]), json!("a"), json!(1), json!(true)] {
            assert!(truthy(Some(&v)), "{v}");
        }
        assert!(!truthy(None));
    }
}
