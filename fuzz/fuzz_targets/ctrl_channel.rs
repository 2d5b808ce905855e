//! Data-channel text from a peer: ctrl `{e, d}` envelopes, custom-channel envelopes, the
//! channel-open handshake event and channel names (ids are hashed from remote names too).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcio_fuzz::proto::channel_id::{channel_id, channel_label};
use rtcio_fuzz::proto::channel_sync::{open_event, parse_open_event};
use rtcio_fuzz::proto::envelope::{
    CTRL_MAX_UTF16, ChannelText, decode_channel_text, decode_ctrl, encode_event, is_reserved,
    is_reserved_on_channel,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok((name, args)) = decode_ctrl(text) {
        assert!(!is_reserved(&name), "reserved ctrl event {name:?} passed");
        let enc = encode_event(&name, &args);
        if enc.len() <= CTRL_MAX_UTF16 {
            assert_eq!(decode_ctrl(&enc), Ok((name, args)), "round trip of {enc}");
        }
    }
    match decode_channel_text(text) {
        ChannelText::Event(name, args) => {
            assert!(
                !is_reserved_on_channel(&name),
                "channel-local {name:?} passed"
            );
            let enc = encode_event(&name, &args);
            assert_eq!(decode_channel_text(&enc), ChannelText::Event(name, args));
        }
        ChannelText::Reserved(name) => assert!(is_reserved_on_channel(&name)),
        ChannelText::Invalid | ChannelText::Ignore => {}
    }
    if let Some(id) = parse_open_event(text) {
        assert!((1..=1023).contains(&id));
        assert_eq!(parse_open_event(&open_event(id)), Some(id));
    }
    let id = channel_id(text);
    assert!((1..=1023).contains(&id), "channel id {id} out of range");
    assert!(channel_label(text).ends_with(text));
});
