//! What other apps send the desktop app: presence from the server, media state and chat from the
//! server or any peer (ctrl or the chat channel), library events. Only the server may add or
//! remove participants; names and texts reach the UI capped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcio::{Event, Origin};
use rtcio_fuzz::app::inbound::{
    ChatMessage, MAX_CHAT_CHARS, MAX_NAME_CHARS, RoomEvent, chat, join_error, join_ok, media_state,
    peer_id, user_connected, user_disconnected,
};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((&who, json)) = data.split_first() else {
        return;
    };
    let Ok(arg) = serde_json::from_slice::<Value>(json) else {
        return;
    };
    let origin = match who % 3 {
        0 => Origin::Server,
        1 => Origin::Local,
        _ => Origin::Peer("peer-a".into()),
    };
    let from_server = origin == Origin::Server;
    let ev = Event::new("x", vec![arg], origin.clone());

    match user_connected(&ev) {
        Some(RoomEvent::UserConnected { id, name }) => {
            assert!(from_server && !id.trim().is_empty());
            assert!(name.is_none_or(|n| n.chars().count() <= MAX_NAME_CHARS));
        }
        Some(other) => panic!("user_connected gave {other:?}"),
        None => {}
    }
    assert!(user_disconnected(&ev).is_none() || from_server);
    assert!(join_ok(&ev).is_none() || from_server);
    match join_error(&ev) {
        Some(RoomEvent::JoinError { reason, .. }) => {
            assert!(from_server && reason.chars().count() <= MAX_NAME_CHARS);
        }
        Some(other) => panic!("join_error gave {other:?}"),
        None => {}
    }
    if let Some(state) = media_state(&ev, "room") {
        assert!(state.mic.is_some() || state.cam.is_some());
        assert!(state.room_id.as_deref().is_none_or(|r| r == "room"));
        if let Origin::Peer(p) = &origin {
            assert_eq!(&state.id, p, "a peer spoke for someone else");
        }
    }
    if let Some(ChatMessage {
        from, name, text, ..
    }) = chat(&ev, "room")
    {
        assert!(name.chars().count() <= MAX_NAME_CHARS);
        assert!(text.chars().count() <= MAX_CHAT_CHARS && !text.trim().is_empty());
        assert_eq!(from.is_some(), matches!(origin, Origin::Peer(_)));
    }
    assert!(peer_id(&ev).is_none() || origin == Origin::Local);
});
