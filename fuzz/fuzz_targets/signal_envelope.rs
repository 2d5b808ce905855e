//! `#rtcio:message` payloads as the server relays them from any member of the room: every data
//! variant (description, candidate, metadata response and request), re-enveloped by our own
//! encoders and parsed again; the SDP of a description goes on to the SDP-derived stream state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcio_fuzz::proto::envelope::{
    Signal, candidate_envelope, data_envelope, description_envelope, is_reserved, parse_signal,
};
use rtcio_fuzz::proto::{channel_sync, sdp_streams, stream_meta};
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Some(inbound) = parse_signal(&payload) else {
        return;
    };
    assert!(!inbound.source.is_empty());
    let again = match &inbound.signal {
        Signal::Description(d) => {
            let _ = sdp_streams::sent_streams(&d.sdp);
            let _ = channel_sync::announces(&d.sdp);
            description_envelope(&inbound.source, "target", d)
        }
        Signal::Candidate(c) => candidate_envelope(&inbound.source, "target", c),
        Signal::MetaResponse { mid, events } => {
            let (keep, dropped) = stream_meta::response_events(events.clone());
            assert_eq!(keep.len() + dropped.len(), events.len());
            assert!(keep.iter().all(|(name, _)| !is_reserved(name)));
            assert!(dropped.iter().all(|name| is_reserved(name)));
            let mut data = Map::new();
            data.insert("mid".into(), Value::String(mid.clone()));
            data.insert("events".into(), Value::Object(events.clone()));
            data_envelope(&inbound.source, "target", Value::Object(data))
        }
        Signal::MetaRequest { mid } => {
            data_envelope(&inbound.source, "target", stream_meta::request(mid))
        }
    };
    // What we would send for the parsed value must parse back to the same value.
    let text = serde_json::to_string(&again).expect("a Value always serialises");
    let back: Value = serde_json::from_str(&text).expect("serde_json output parses");
    assert_eq!(
        parse_signal(&back).as_ref(),
        Some(&inbound),
        "round trip of {text}"
    );
});
