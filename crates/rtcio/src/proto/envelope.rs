//! Envelopes: the `#rtcio:message` signaling payload (PROTOCOL.md §2) and the `{e, d}` event
//! framing of data channels (§4.4–4.6). Parsing is total: hostile input yields `None` or an error
//! value, never a panic.

use serde::Serialize;
use serde_json::Value;

/// The relayed signaling event.
pub const MESSAGE_EVENT: &str = "#rtcio:message";
/// Sent by the room server to existing members when someone joins: `{source}`.
pub const INIT_OFFER_EVENT: &str = "#rtcio:init-offer";
/// Sent by the server when a socket leaves a shared room: `{id}`.
pub const PEER_LEFT_EVENT: &str = "#rtcio:peer-left";

/// Largest ctrl envelope accepted, in UTF-16 code units (the JS compares `string.length`).
pub const CTRL_MAX_UTF16: usize = 1_048_576;

/// Events that only the local library may raise; dropped when they arrive over ctrl.
pub const RESERVED_EVENTS: [&str; 4] = [
    "peer-connect",
    "peer-disconnect",
    "track-added",
    "track-removed",
];

/// True for names a remote peer must not be able to trigger: over ctrl, on a channel or through
/// stream metadata.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with("#rtcio:") || RESERVED_EVENTS.contains(&name)
}

/// Events a named channel raises itself (and a broadcast channel's `peer-left`): a remote
/// envelope with one of these names would pass for the local transport's own event.
pub const CHANNEL_LOCAL_EVENTS: [&str; 6] =
    ["open", "close", "error", "drain", "data", "peer-left"];

/// True for names a remote must not raise on a named channel: the reserved names plus the
/// channel's own events. The JS has no filter here (PROTOCOL.md §4.6); names like these are
/// spoofing, never application traffic.
pub fn is_reserved_on_channel(name: &str) -> bool {
    is_reserved(name) || CHANNEL_LOCAL_EVENTS.contains(&name)
}

/// JS truthiness of an optional JSON value.
pub fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_)) | Some(Value::Object(_)) => true,
    }
}

/// `offer` or `answer` (other SDP types are not part of rtc.io signaling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SdpKind {
    /// An offer.
    Offer,
    /// An answer.
    Answer,
}

/// A session description as the browser serialises it: exactly `{type, sdp}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Description {
    /// Offer or answer.
    #[serde(rename = "type")]
    pub kind: SdpKind,
    /// The SDP text.
    pub sdp: String,
}

/// A trickled ICE candidate in the browser's JSON shape (that key order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// `candidate:…` line, or `""` for end-of-candidates.
    pub candidate: String,
    /// m-line id.
    #[serde(rename = "sdpMid")]
    pub sdp_mid: Option<String>,
    /// m-line index.
    #[serde(rename = "sdpMLineIndex")]
    pub sdp_mline_index: Option<u16>,
    /// ICE ufrag of the generation.
    #[serde(rename = "usernameFragment")]
    pub username_fragment: Option<String>,
}

/// What an inbound `#rtcio:message` asks for, in the JS dispatch precedence (§2.3).
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// An SDP offer or answer.
    Description(Description),
    /// A trickled candidate (`candidate == ""` means end of candidates).
    Candidate(Candidate),
    /// Stream metadata response `{mid, events}`.
    MetaResponse {
        /// MediaStream id (msid) the events belong to.
        mid: String,
        /// Event name → argument list.
        events: serde_json::Map<String, Value>,
    },
    /// Stream metadata request `{mid}`.
    MetaRequest {
        /// MediaStream id (msid) whose events are wanted.
        mid: String,
    },
}

/// A parsed inbound signaling envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// Sender's socket id (always a non-empty string; envelopes without one are dropped).
    pub source: String,
    /// The variant.
    pub signal: Signal,
}

/// Parses the payload of `#rtcio:message`. `None` for anything that rtc.io would ignore: no
/// string `source` (envelopes flushed during an outage), no known variant, malformed parts.
pub fn parse_signal(payload: &Value) -> Option<Inbound> {
    let source = match payload.get("source") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return None,
    };
    let data = payload.get("data")?;
    let signal = if truthy(data.get("description")) {
        let d = data.get("description")?;
        let kind = match d.get("type").and_then(Value::as_str)? {
            "offer" => SdpKind::Offer,
            "answer" => SdpKind::Answer,
            _ => return None,
        };
        let sdp = d.get("sdp").and_then(Value::as_str)?.to_string();
        Signal::Description(Description { kind, sdp })
    } else if truthy(data.get("candidate")) {
        let c = data.get("candidate")?;
        let candidate = match c.get("candidate") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => String::new(),
            _ => return None,
        };
        let sdp_mid = c.get("sdpMid").and_then(Value::as_str).map(str::to_string);
        let sdp_mline_index = c
            .get("sdpMLineIndex")
            .and_then(Value::as_u64)
            .and_then(|i| u16::try_from(i).ok());
        if !candidate.is_empty() && sdp_mid.is_none() && sdp_mline_index.is_none() {
            return None;
        }
        Signal::Candidate(Candidate {
            candidate,
            sdp_mid,
            sdp_mline_index,
            username_fragment: c
                .get("usernameFragment")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    } else if truthy(data.get("events")) {
        let mid = data
            .get("mid")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())?
            .to_string();
        let events = data.get("events")?.as_object()?.clone();
        Signal::MetaResponse { mid, events }
    } else if truthy(data.get("mid")) {
        let mid = data.get("mid").and_then(Value::as_str)?.to_string();
        Signal::MetaRequest { mid }
    } else {
        return None;
    };
    Some(Inbound { source, signal })
}

#[derive(Serialize)]
struct OfferEnvelope<'a, D: Serialize> {
    target: &'a str,
    source: &'a str,
    data: D,
}

#[derive(Serialize)]
struct ReplyEnvelope<'a, D: Serialize> {
    source: &'a str,
    target: &'a str,
    data: D,
}

#[derive(Serialize)]
struct DescriptionData<'a> {
    description: &'a Description,
}

#[derive(Serialize)]
struct CandidateData<'a> {
    candidate: &'a Candidate,
}

/// Builds an outbound `#rtcio:message` payload with the key order the JS uses: offers
/// `{target, source, data}`, everything else `{source, target, data}`.
pub fn description_envelope(source: &str, target: &str, d: &Description) -> Value {
    let data = DescriptionData { description: d };
    let v = match d.kind {
        SdpKind::Offer => serde_json::to_value(OfferEnvelope {
            target,
            source,
            data,
        }),
        SdpKind::Answer => serde_json::to_value(ReplyEnvelope {
            source,
            target,
            data,
        }),
    };
    v.unwrap_or(Value::Null)
}

/// `{source, target, data: {candidate}}`.
pub fn candidate_envelope(source: &str, target: &str, c: &Candidate) -> Value {
    serde_json::to_value(ReplyEnvelope {
        source,
        target,
        data: CandidateData { candidate: c },
    })
    .unwrap_or(Value::Null)
}

/// `{source, target, data}` for metadata requests/responses.
pub fn data_envelope(source: &str, target: &str, data: Value) -> Value {
    serde_json::to_value(ReplyEnvelope {
        source,
        target,
        data,
    })
    .unwrap_or(Value::Null)
}

/// Text of a data-channel event envelope: `{"e": name, "d": [args…]}`.
pub fn encode_event(name: &str, args: &[Value]) -> String {
    #[derive(Serialize)]
    struct Env<'a> {
        e: &'a str,
        d: &'a [Value],
    }
    serde_json::to_string(&Env { e: name, d: args })
        .unwrap_or_else(|_| String::from("{\"e\":\"\",\"d\":[]}"))
}

/// Why a ctrl message was not dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtrlDrop {
    /// Longer than [`CTRL_MAX_UTF16`] UTF-16 units.
    TooLarge,
    /// Not JSON, or not an object.
    NotJson,
    /// `e` missing or not a string.
    NoEventName,
    /// A reserved name (anti-spoofing).
    Reserved(String),
}

/// Decodes a ctrl text message per §4.5: size cap, JSON, string `e`, reserved filter,
/// non-array `d` treated as no arguments.
pub fn decode_ctrl(text: &str) -> Result<(String, Vec<Value>), CtrlDrop> {
    // Bytes ≥ UTF-16 units, so only long texts need counting.
    if text.len() > CTRL_MAX_UTF16 && text.encode_utf16().count() > CTRL_MAX_UTF16 {
        return Err(CtrlDrop::TooLarge);
    }
    let v: Value = serde_json::from_str(text).map_err(|_| CtrlDrop::NotJson)?;
    let obj = v.as_object().ok_or(CtrlDrop::NotJson)?;
    let name = obj
        .get("e")
        .and_then(Value::as_str)
        .ok_or(CtrlDrop::NoEventName)?;
    if is_reserved(name) {
        return Err(CtrlDrop::Reserved(name.to_string()));
    }
    let args = match obj.get("d") {
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    Ok((name.to_string(), args))
}

/// What a custom channel does with a text message (§4.6).
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelText {
    /// Dispatch this event locally.
    Event(String, Vec<Value>),
    /// Raise the channel's `error` event (`RTCIOChannel: invalid JSON envelope`).
    Invalid,
    /// Valid JSON without a string `e`: ignored silently.
    Ignore,
    /// A name only the library raises ([`is_reserved_on_channel`]): dropped.
    Reserved(String),
}

/// Decodes a custom-channel text message. No size cap, as in rtc.io; unlike rtc.io, reserved and
/// channel-local names are dropped ([`is_reserved_on_channel`]).
pub fn decode_channel_text(text: &str) -> ChannelText {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(obj)) => match obj.get("e") {
            Some(Value::String(e)) if is_reserved_on_channel(e) => ChannelText::Reserved(e.clone()),
            Some(Value::String(e)) => {
                let args = match obj.get("d") {
                    Some(Value::Array(a)) => a.clone(),
                    _ => Vec::new(),
                };
                ChannelText::Event(e.clone(), args)
            }
            _ => ChannelText::Ignore,
        },
        // JS destructuring of null/primitives throws → error event; other JSON (arrays) has no `e`.
        Ok(Value::Array(_)) => ChannelText::Ignore,
        Ok(Value::String(_)) | Ok(Value::Number(_)) | Ok(Value::Bool(_)) => ChannelText::Ignore,
        Ok(Value::Null) | Err(_) => ChannelText::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dispatch_precedence() {
        let env = |data: Value| json!({"source": "A", "target": "B", "data": data});
        assert!(matches!(
            parse_signal(&env(
                json!({"description": {"type": "offer", "sdp": "v=0"}, "candidate": {"candidate": "x", "sdpMid": "0"}})
            )),
            Some(Inbound {
                signal: Signal::Description(_),
                ..
            })
        ));
        assert!(matches!(
            parse_signal(&env(
                json!({"candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 5 typ host", "sdpMid": "0", "sdpMLineIndex": 0}})
            )),
            Some(Inbound {
                signal: Signal::Candidate(_),
                ..
            })
        ));
        // events is tested before mid.
        assert!(matches!(
            parse_signal(&env(json!({"mid": "m", "events": {}}))),
            Some(Inbound {
                signal: Signal::MetaResponse { .. },
                ..
            })
        ));
        assert!(matches!(
            parse_signal(&env(json!({"mid": "m"}))),
            Some(Inbound {
                signal: Signal::MetaRequest { .. },
                ..
            })
        ));
        assert_eq!(parse_signal(&env(json!({"mid": ""}))), None);
        assert_eq!(parse_signal(&env(json!({"candidate": null}))), None);
    }

    #[test]
    fn end_of_candidates_is_an_empty_candidate() {
        let v = json!({"source": "A", "data": {"candidate": {"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0}}});
        match parse_signal(&v) {
            Some(Inbound {
                signal: Signal::Candidate(c),
                ..
            }) => assert!(c.candidate.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn envelopes_without_source_are_dropped() {
        for v in [
            json!({"target": "B", "data": {"mid": "m"}}),
            json!({"source": "", "data": {"mid": "m"}}),
            json!({"source": 5, "data": {"mid": "m"}}),
            json!(null),
            json!([1, 2]),
            json!("x"),
        ] {
            assert_eq!(parse_signal(&v), None, "{v}");
        }
    }

    #[test]
    fn hostile_signals_never_panic() {
        let cases = [
            json!({"source": "A", "data": {"description": {"type": "pranswer", "sdp": "v=0"}}}),
            json!({"source": "A", "data": {"description": {"type": "offer"}}}),
            json!({"source": "A", "data": {"description": "offer"}}),
            json!({"source": "A", "data": {"candidate": {"candidate": 5}}}),
            json!({"source": "A", "data": {"candidate": {"candidate": "c"}}}),
            json!({"source": "A", "data": {"candidate": {"candidate": "c", "sdpMLineIndex": 99999999}}}),
            json!({"source": "A", "data": {"events": [1], "mid": "m"}}),
            json!({"source": "A", "data": {"events": {}, "mid": 3}}),
            json!({"source": "A", "data": 7}),
            json!({"source": "A"}),
        ];
        for c in cases {
            assert_eq!(parse_signal(&c), None, "{c}");
        }
    }

    #[test]
    fn outbound_key_order_matches_js() {
        let d = Description {
            kind: SdpKind::Offer,
            sdp: "v=0".into(),
        };
        let t = serde_json::to_string(&description_envelope("A", "B", &d)).unwrap();
        assert!(
            t.starts_with(r#"{"target":"B","source":"A","data":{"description":{"type":"offer""#),
            "{t}"
        );
        let d = Description {
            kind: SdpKind::Answer,
            sdp: "v=0".into(),
        };
        let t = serde_json::to_string(&description_envelope("A", "B", &d)).unwrap();
        assert!(t.starts_with(r#"{"source":"A","target":"B","data""#), "{t}");
        let c = Candidate {
            candidate: "c".into(),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
            username_fragment: None,
        };
        let t = serde_json::to_string(&candidate_envelope("A", "B", &c)).unwrap();
        assert_eq!(
            t,
            r#"{"source":"A","target":"B","data":{"candidate":{"candidate":"c","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":null}}}"#
        );
    }

    #[test]
    fn ctrl_rules() {
        assert_eq!(
            encode_event("chat", &[json!({"a": 1})]),
            r#"{"e":"chat","d":[{"a":1}]}"#
        );
        assert_eq!(encode_event("x", &[]), r#"{"e":"x","d":[]}"#);
        assert_eq!(
            decode_ctrl(r#"{"e":"chat","d":[1,2]}"#),
            Ok(("chat".into(), vec![json!(1), json!(2)]))
        );
        assert_eq!(
            decode_ctrl(r#"{"e":"chat","d":{"x":1}}"#),
            Ok(("chat".into(), vec![]))
        );
        assert_eq!(decode_ctrl(r#"{"e":"chat"}"#), Ok(("chat".into(), vec![])));
        assert_eq!(decode_ctrl("nope"), Err(CtrlDrop::NotJson));
        assert_eq!(decode_ctrl("[1]"), Err(CtrlDrop::NotJson));
        assert_eq!(decode_ctrl(r#"{"e":5}"#), Err(CtrlDrop::NoEventName));
        for r in [
            "peer-connect",
            "peer-disconnect",
            "track-added",
            "track-removed",
            "#rtcio:message",
        ] {
            assert_eq!(
                decode_ctrl(&encode_event(r, &[])),
                Err(CtrlDrop::Reserved(r.into()))
            );
        }
        let big = encode_event("x", &[json!("a".repeat(CTRL_MAX_UTF16))]);
        assert_eq!(decode_ctrl(&big), Err(CtrlDrop::TooLarge));
        // 2-byte UTF-8 chars are one UTF-16 unit each: 600k of them is under the cap.
        let wide = encode_event("x", &[json!("é".repeat(600_000))]);
        assert!(decode_ctrl(&wide).is_ok());
    }

    #[test]
    fn channel_text_rules() {
        assert_eq!(
            decode_channel_text(r#"{"e":"msg","d":["hi"]}"#),
            ChannelText::Event("msg".into(), vec![json!("hi")])
        );
        assert_eq!(
            decode_channel_text(r#"{"e":"msg","d":3}"#),
            ChannelText::Event("msg".into(), vec![])
        );
        assert_eq!(decode_channel_text("not json"), ChannelText::Invalid);
        assert_eq!(decode_channel_text("null"), ChannelText::Invalid);
        assert_eq!(decode_channel_text(r#"{"e":1}"#), ChannelText::Ignore);
        assert_eq!(decode_channel_text("\"str\""), ChannelText::Ignore);
    }

    #[test]
    fn channel_text_drops_reserved_and_channel_local_names() {
        for name in [
            "peer-connect",
            "peer-disconnect",
            "track-added",
            "track-removed",
            "#rtcio:message",
            "open",
            "close",
            "error",
            "drain",
            "data",
            "peer-left",
        ] {
            assert_eq!(
                decode_channel_text(&encode_event(name, &[json!({"id": "forged"})])),
                ChannelText::Reserved(name.into()),
                "{name}"
            );
        }
        // Names that merely look alike are application events.
        assert_eq!(
            decode_channel_text(&encode_event("opened", &[])),
            ChannelText::Event("opened".into(), vec![])
        );
    }
}
