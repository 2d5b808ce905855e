//! A remote SDP (from any peer's offer or answer): media sections and the streams it sends, the
//! difference between two descriptions, the channel-open announcement, and our codec reordering.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcio_fuzz::proto::channel_sync::{RemoteChannels, announces, mark_sdp};
use rtcio_fuzz::proto::codec_order::prefer_h264;
use rtcio_fuzz::proto::sdp_streams::{diff, media_sections, sent_streams};
use rtcio_fuzz::util::split_parts;

fuzz_target!(|data: &[u8]| {
    let parts = split_parts(data, 2);
    let Ok(before) = std::str::from_utf8(parts[0]) else {
        return;
    };
    let after = parts
        .get(1)
        .and_then(|p| std::str::from_utf8(p).ok())
        .unwrap_or("");

    let sections = media_sections(before);
    assert!(sections.iter().all(|s| !s.mid.is_empty()));
    assert!(sections.len() <= before.matches("m=").count());
    let (a, b) = (sent_streams(before), sent_streams(after));
    let tracks = a.values().map(Vec::len).sum::<usize>();
    assert!(tracks <= sections.len());

    let ch = diff(&a, &b);
    assert!(
        ch.new_streams
            .iter()
            .all(|s| b.contains_key(s) && !a.contains_key(s))
    );
    assert!(
        ch.added
            .iter()
            .all(|(s, _)| a.contains_key(s) && b.contains_key(s))
    );
    assert!(ch.removed.len() <= tracks);
    // Nothing changes between a description and itself.
    let same = diff(&a, &a);
    assert!(same.new_streams.is_empty() && same.added.is_empty() && same.removed.is_empty());

    let mut channels = RemoteChannels::default();
    let legacy = channels.on_remote_sdp(before);
    assert_eq!(legacy, !announces(before));
    assert!(
        !channels.on_remote_sdp(after),
        "only the first description decides"
    );
    let _ = mark_sdp(before);

    let once = prefer_h264(before);
    assert_eq!(prefer_h264(&once), once, "codec reordering is idempotent");
    assert_eq!(
        once.len(),
        before.len(),
        "reordering neither adds nor drops bytes"
    );
});
