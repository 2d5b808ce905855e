//! Stream metadata: the `{mid, events}` answers a peer sends (reserved names must never reach the
//! application, held announcements stay bounded) and the arguments our own registry resolves.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rtcio_fuzz::proto::envelope::is_reserved;
use rtcio_fuzz::proto::stream_meta::{
    Announcements, MAX_HELD, SELF_ID, SentStreams, StreamRegistry, first_token, resolve_self_id,
    response_events, token, token_id,
};
use serde_json::Value;

fn contains_self(v: &Value) -> bool {
    match v {
        Value::String(s) => s == SELF_ID,
        Value::Array(a) => a.iter().any(contains_self),
        Value::Object(o) => o.values().any(contains_self),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    match value {
        Value::Array(args) => {
            let resolved = resolve_self_id(&args, "me");
            assert_eq!(resolved.len(), args.len());
            assert!(!resolved.iter().any(contains_self));
            if let Some(id) = first_token(&args) {
                assert_eq!(token_id(&token(&id)), Some(id.as_str()));
            }
        }
        Value::Object(events) => {
            let total = events.len();
            let (keep, dropped) = response_events(events);
            assert_eq!(keep.len() + dropped.len(), total);
            assert!(keep.iter().all(|(name, _)| !is_reserved(name)));

            // Our own answer for these events, as a peer would request it.
            let mut registry = StreamRegistry::default();
            for (name, args) in &keep {
                registry.register("stream", name, args.clone());
            }
            let mut sent = SentStreams::default();
            sent.insert("msid", "stream");
            if !keep.is_empty() {
                let answer = sent
                    .on_request("msid", &registry, "me")
                    .expect("known msid");
                let events = answer["events"].as_object().expect("events object").clone();
                let (again, none) = response_events(events);
                assert!(none.is_empty());
                assert_eq!(again.len(), keep.len());
            }

            // Held while no track matches: bounded, released or expired, never kept.
            let start = Instant::now();
            let mut held = Announcements::default();
            for i in 0..(MAX_HELD + 2) {
                let has_track = i % 3 == 0;
                let out = held.on_response(&format!("m{i}"), keep.clone(), has_track, start);
                assert_eq!(out.is_some(), has_track);
                assert!(held.held() <= MAX_HELD);
            }
            let released = held.release(|mid| mid == "m1");
            assert!(released.len() <= 1);
            let later = start + Duration::from_secs(60);
            held.expire(later);
            assert_eq!(held.held(), 0);
        }
        _ => {}
    }
});
