//! File-transfer messages from a peer (`meta`, binary chunks, `eof`, `cancel`) in any order,
//! through the app's receiver: bytes never exceed the announced size, a file finishes only when
//! complete, and every name we would write is one safe path component.
//!
//! Input: a JSON array of `{"e": "meta"|"eof"|"cancel"|"chunk"|"local"|"fail"|"closed", "d": …}`
//! (`chunk`: `d` is the binary message's length).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcio_fuzz::app::transfer::{
    Action, MAX_FILE_SIZE, Receiver, TransferError, meta_payload, parse_eof, parse_meta,
    safe_file_name, unique_name,
};
use serde_json::Value;

fn check_name(name: &str) {
    assert!(!name.is_empty());
    assert!(!name.contains(['/', '\\']), "{name:?} has a separator");
    assert!(
        !name.chars().any(char::is_control),
        "{name:?} has a control character"
    );
    assert!(!name.starts_with('.'), "{name:?} is hidden or a parent");
    assert!(name.len() <= 181, "{} bytes", name.len());
}

fuzz_target!(|data: &[u8]| {
    let Ok(Value::Array(events)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let mut rx = Receiver::default();
    for (i, ev) in events.iter().take(256).enumerate() {
        let d = ev.get("d").unwrap_or(&Value::Null);
        let ui_tid = format!("ui{i}");
        let actions: Vec<Action> = match ev.get("e").and_then(Value::as_str) {
            Some("meta") => {
                if let Ok(m) = parse_meta(d) {
                    assert!(m.size <= MAX_FILE_SIZE);
                    let again = parse_meta(&meta_payload("t", &m.name, m.size, &m.mime)).unwrap();
                    assert_eq!(
                        (again.name, again.size, again.mime),
                        (m.name.clone(), m.size, m.mime)
                    );
                    let safe = safe_file_name(&m.name);
                    check_name(&safe);
                    // A finite set of taken names, as a directory holds (an infinite one could
                    // make unique_name count through u32).
                    let first = unique_name(&safe, |n| n == safe);
                    assert_ne!(first, safe);
                    let second = unique_name(&safe, |n| n == safe || n == first);
                    assert!(second != safe && second != first);
                }
                rx.on_meta(d, ui_tid)
            }
            Some("eof") => {
                let eof = parse_eof(d);
                assert!(eof.sha256.is_none_or(|h| h.len() == 64));
                rx.on_eof(d).into_iter().collect()
            }
            Some("cancel") => rx.on_cancel(d).into_iter().collect(),
            Some("chunk") => {
                let len = d.as_u64().unwrap_or(0).min(1 << 20) as usize;
                let before = rx.current().map(|c| (c.got, c.size));
                let a = rx.on_chunk(len);
                if let (Some((got, size)), Some(Action::Write { got: now, .. })) = (before, &a) {
                    assert_eq!(*now, got + len as u64);
                    assert!(*now <= size);
                }
                a.into_iter().collect()
            }
            Some("local") => rx
                .cancel_local(d.as_str().unwrap_or("ui0"))
                .into_iter()
                .collect(),
            Some("fail") => rx
                .fail(TransferError::Io("disk full".into()))
                .into_iter()
                .collect(),
            Some("closed") => rx.closed(TransferError::PeerGone).into_iter().collect(),
            _ => Vec::new(),
        };
        for a in &actions {
            match a {
                Action::Begin(inc) => {
                    check_name(&inc.name);
                    assert_eq!(inc.got, 0);
                    assert!(inc.size <= MAX_FILE_SIZE);
                }
                Action::Finish { .. } => assert!(rx.current().is_none()),
                _ => {}
            }
        }
        if let Some(c) = rx.current() {
            assert!(c.got <= c.size, "{} of {} bytes", c.got, c.size);
        }
    }
});
