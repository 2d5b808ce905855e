//! What any socket.io client may send the room server: the event array and the payloads of
//! `join-room` / `check-room`, `#rtcio:message` relays and room echoes (chat, media state).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcio_fuzz::server_protocol::{
    RoomParse, normalize_password, parse_event, parse_relay, parse_room_echo, parse_room_request,
    to_raw, truthy, validate_name,
};

const MAX_ROOM: usize = 256;
const MAX_NAME: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ev) = parse_event(text) else {
        return;
    };
    let arg = ev.args.first().copied();
    match parse_room_request(arg, MAX_ROOM) {
        RoomParse::Ok(req) => {
            assert!(!req.room_id.is_empty() && req.room_id.len() <= MAX_ROOM);
            assert_eq!(req.password, req.password.trim());
            if let Ok(Some(name)) = validate_name(req.name.as_deref(), MAX_NAME) {
                assert!(!name.is_empty() && name.chars().count() <= MAX_NAME);
                assert!(!name.chars().any(char::is_control));
                assert_eq!(name, name.trim());
            }
            // What the server sends back must be valid JSON again.
            let raw = to_raw(&req.room_id);
            assert_eq!(
                serde_json::from_str::<String>(raw.get()).ok().as_ref(),
                Some(&req.room_id)
            );
        }
        RoomParse::InvalidRoom(err) => {
            let _ = to_raw(&err);
        }
    }
    if let Ok(relay) = parse_relay(arg) {
        assert!(!relay.target.is_empty());
    }
    if let Ok(echo) = parse_room_echo(&ev.name, arg) {
        assert!(!echo.room_id.is_empty());
        let _ = to_raw(&echo.media);
    }
    let value = arg.and_then(|a| serde_json::from_str::<serde_json::Value>(a.get()).ok());
    let _ = truthy(value.as_ref());
    let _ = normalize_password(value.as_ref().and_then(|v| v.get("password")));
});
