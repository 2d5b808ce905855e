//! Ogg Opus files as a bot's audio source: Ogg pages, OpusHead / OpusTags, packet durations.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcio_fuzz::file::ogg_opus::OggOpusSource;
use rtcio_fuzz::source::EncodedSource;
use rtcio_fuzz::util::scratch_file;

fuzz_target!(|data: &[u8]| {
    let path = scratch_file("opus", data);
    let looping = data.last().is_some_and(|b| b & 1 == 1);
    let Ok(mut src) = OggOpusSource::open(&path, looping, false) else {
        return;
    };
    assert!((1..=2).contains(&src.channels()));
    let mut last = None;
    for _ in 0..64 {
        match src.next_frame() {
            Ok(f) => {
                assert!(!f.data.is_empty());
                assert!(last.is_none_or(|t| f.timestamp >= t), "time went back");
                last = Some(f.timestamp);
            }
            Err(_) => break,
        }
    }
});
