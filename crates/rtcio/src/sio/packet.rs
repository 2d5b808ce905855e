//! Engine.IO v4 / Socket.IO v5 packet text (PROTOCOL.md §1.2–1.3), encode and decode, no I/O.

use serde::Deserialize;
use serde_json::Value;

/// The Engine.IO `open` packet payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenInfo {
    /// Engine.IO session id (not the socket id rtc.io uses).
    pub sid: String,
    /// Server ping period, ms.
    pub ping_interval: u64,
    /// Grace for our pong, ms.
    pub ping_timeout: u64,
    /// Largest message the server accepts.
    #[serde(default)]
    pub max_payload: Option<u64>,
}

/// One Engine.IO packet received as a WebSocket text frame.
#[derive(Debug, Clone, PartialEq)]
pub enum EioPacket {
    /// `0{…}`.
    Open(OpenInfo),
    /// `1`.
    Close,
    /// `2` (server ping; answer `3`).
    Ping,
    /// `3`.
    Pong,
    /// `4…`: a Socket.IO packet.
    Message(String),
    /// `6`.
    Noop,
}

/// Why a frame could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Empty frame or unknown type digit.
    #[error("unknown engine.io packet {0:?}")]
    UnknownEio(String),
    /// Open packet without valid JSON.
    #[error("bad engine.io open packet: {0}")]
    BadOpen(String),
    /// Unknown Socket.IO packet type.
    #[error("unknown socket.io packet {0:?}")]
    UnknownSio(String),
    /// EVENT without a JSON array starting with a string name.
    #[error("bad socket.io event payload: {0}")]
    BadEvent(String),
}

fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Decodes one Engine.IO text frame.
pub fn decode_eio(frame: &str) -> Result<EioPacket, PacketError> {
    let mut chars = frame.chars();
    let kind = chars
        .next()
        .ok_or_else(|| PacketError::UnknownEio(String::new()))?;
    let rest = chars.as_str();
    Ok(match kind {
        '0' => EioPacket::Open(
            serde_json::from_str(rest).map_err(|e| PacketError::BadOpen(e.to_string()))?,
        ),
        '1' => EioPacket::Close,
        '2' => EioPacket::Ping,
        '3' => EioPacket::Pong,
        '4' => EioPacket::Message(rest.to_string()),
        '6' => EioPacket::Noop,
        _ => return Err(PacketError::UnknownEio(shorten(frame))),
    })
}

/// A decoded Socket.IO packet (only what a client needs).
#[derive(Debug, Clone, PartialEq)]
pub enum SioPacket {
    /// CONNECT ack: the namespace socket id.
    Connect {
        /// Namespace.
        nsp: String,
        /// Socket id used everywhere in rtc.io.
        sid: Option<String>,
    },
    /// DISCONNECT from the server.
    Disconnect {
        /// Namespace.
        nsp: String,
    },
    /// EVENT (or an ACK we do not use).
    Event {
        /// Namespace.
        nsp: String,
        /// Event name.
        name: String,
        /// Arguments, trailing ones (recovery offsets) included.
        args: Vec<Value>,
    },
    /// CONNECT_ERROR.
    ConnectError {
        /// Namespace.
        nsp: String,
        /// `message` of the error object.
        message: String,
    },
    /// ACK / binary packets: not used by rtc.io signaling.
    Other,
}

/// Decodes the payload of an Engine.IO message: `<type>[<n>-][<nsp>,][<ack>][json]`.
pub fn decode_sio(text: &str) -> Result<SioPacket, PacketError> {
    let bytes = text.as_bytes();
    let kind = *bytes
        .first()
        .ok_or_else(|| PacketError::UnknownSio(String::new()))?;
    // A non-ASCII first character is no packet type; slicing after its first byte would panic.
    let Some(mut rest) = text.get(1..) else {
        return Err(PacketError::UnknownSio(shorten(text)));
    };
    if matches!(kind, b'5' | b'6') {
        return Ok(SioPacket::Other);
    }
    let mut nsp = String::from("/");
    if rest.starts_with('/') {
        match rest.find(',') {
            Some(i) => {
                nsp = rest[..i].to_string();
                rest = &rest[i + 1..];
            }
            None => {
                nsp = rest.to_string();
                rest = "";
            }
        }
    }
    // Ack id digits before the JSON.
    let json_start = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let json = &rest[json_start..];
    Ok(match kind {
        b'0' => {
            let sid = serde_json::from_str::<Value>(json)
                .ok()
                .and_then(|v| v.get("sid").and_then(Value::as_str).map(str::to_string));
            SioPacket::Connect { nsp, sid }
        }
        b'1' => SioPacket::Disconnect { nsp },
        b'2' => {
            let arr: Vec<Value> = serde_json::from_str(json)
                .map_err(|e| PacketError::BadEvent(format!("{e}: {}", shorten(json))))?;
            let mut it = arr.into_iter();
            let name = match it.next() {
                Some(Value::String(s)) => s,
                _ => return Err(PacketError::BadEvent(shorten(json))),
            };
            SioPacket::Event {
                nsp,
                name,
                args: it.collect(),
            }
        }
        b'3' => SioPacket::Other,
        b'4' => {
            let message = serde_json::from_str::<Value>(json)
                .ok()
                .and_then(|v| match v {
                    Value::String(s) => Some(s),
                    Value::Object(o) => {
                        o.get("message").and_then(Value::as_str).map(str::to_string)
                    }
                    _ => None,
                })
                .unwrap_or_else(|| shorten(json));
            SioPacket::ConnectError { nsp, message }
        }
        _ => return Err(PacketError::UnknownSio(shorten(text))),
    })
}

fn nsp_prefix(nsp: &str) -> String {
    if nsp == "/" {
        String::new()
    } else {
        format!("{nsp},")
    }
}

/// `40[nsp,][auth]` as an Engine.IO text frame.
pub fn encode_connect(nsp: &str, auth: Option<&Value>) -> String {
    let auth = auth.map(|a| a.to_string()).unwrap_or_default();
    format!("40{}{auth}", nsp_prefix(nsp))
}

/// `42[nsp,]["name",args…]` as an Engine.IO text frame.
pub fn encode_event(nsp: &str, name: &str, args: &[Value]) -> String {
    let mut arr = Vec::with_capacity(args.len() + 1);
    arr.push(Value::String(name.to_string()));
    arr.extend_from_slice(args);
    let json = serde_json::to_string(&arr).unwrap_or_else(|_| "[]".into());
    format!("42{}{json}", nsp_prefix(nsp))
}

/// `41[nsp,]` as an Engine.IO text frame.
pub fn encode_disconnect(nsp: &str) -> String {
    format!("41{}", nsp_prefix(nsp))
}

/// Event names socket.io-client refuses to emit.
pub fn is_reserved_sio_event(name: &str) -> bool {
    matches!(
        name,
        "connect"
            | "connect_error"
            | "disconnect"
            | "disconnecting"
            | "newListener"
            | "removeListener"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn engine_io_frames() {
        let open = decode_eio(r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#)
            .unwrap();
        assert_eq!(
            open,
            EioPacket::Open(OpenInfo {
                sid: "abc".into(),
                ping_interval: 25000,
                ping_timeout: 20000,
                max_payload: Some(1_000_000)
            })
        );
        assert_eq!(decode_eio("2").unwrap(), EioPacket::Ping);
        assert_eq!(decode_eio("40").unwrap(), EioPacket::Message("0".into()));
        assert!(decode_eio("").is_err());
        assert!(decode_eio("9").is_err());
        assert!(decode_eio("0{bad").is_err());
    }

    #[test]
    fn socket_io_packets() {
        assert_eq!(
            decode_sio(r#"0{"sid":"XYZ","pid":"p"}"#).unwrap(),
            SioPacket::Connect {
                nsp: "/".into(),
                sid: Some("XYZ".into())
            }
        );
        assert_eq!(
            decode_sio(r#"0/calls,{"sid":"S"}"#).unwrap(),
            SioPacket::Connect {
                nsp: "/calls".into(),
                sid: Some("S".into())
            }
        );
        assert_eq!(
            decode_sio(r#"2["join-ok",{"roomId":"r1"},"Q80uhL-"]"#).unwrap(),
            SioPacket::Event {
                nsp: "/".into(),
                name: "join-ok".into(),
                args: vec![json!({"roomId": "r1"}), json!("Q80uhL-")]
            }
        );
        assert_eq!(
            decode_sio(r#"2/calls,12["ev",1]"#).unwrap(),
            SioPacket::Event {
                nsp: "/calls".into(),
                name: "ev".into(),
                args: vec![json!(1)]
            }
        );
        assert_eq!(
            decode_sio(r#"4{"message":"unauthorized"}"#).unwrap(),
            SioPacket::ConnectError {
                nsp: "/".into(),
                message: "unauthorized".into()
            }
        );
        assert_eq!(
            decode_sio("1").unwrap(),
            SioPacket::Disconnect { nsp: "/".into() }
        );
        for bad in ["", "2", "2[]", "2[1]", "2{", "9"] {
            assert!(decode_sio(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn encoding() {
        assert_eq!(encode_connect("/", None), "40");
        assert_eq!(
            encode_connect("/", Some(&json!({"token": "t"}))),
            r#"40{"token":"t"}"#
        );
        assert_eq!(encode_connect("/calls", None), "40/calls,");
        assert_eq!(
            encode_event("/", "join-room", &[json!({"roomId": "r1", "name": "bob"})]),
            r#"42["join-room",{"roomId":"r1","name":"bob"}]"#
        );
        assert_eq!(encode_event("/calls", "x", &[]), r#"42/calls,["x"]"#);
        assert_eq!(encode_disconnect("/"), "41");
        assert_eq!(encode_disconnect("/calls"), "41/calls,");
        assert!(is_reserved_sio_event("disconnect"));
    }

    #[test]
    fn non_ascii_packet_type_is_an_error_not_a_panic() {
        // Found by fuzz/fuzz_targets/sio_packet.rs: `text[1..]` split the first character.
        assert_eq!(
            decode_sio("Đ;#"),
            Err(PacketError::UnknownSio("Đ;#".into()))
        );
        assert!(decode_sio("é").is_err());
    }
}
