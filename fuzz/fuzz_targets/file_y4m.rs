//! Y4M (YUV4MPEG2) files as a bot's video source: header, frame markers, frame data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcio_fuzz::file::y4m::Y4mSource;
use rtcio_fuzz::source::VideoSource;
use rtcio_fuzz::util::scratch_file;

fuzz_target!(|data: &[u8]| {
    let path = scratch_file("y4m", data);
    let looping = data.first().is_some_and(|b| b & 1 == 1);
    let Ok(mut src) = Y4mSource::open(&path, looping, false) else {
        return;
    };
    let (w, h) = src.size();
    assert!(w > 0 && h > 0 && w <= 8192 && h <= 8192);
    let fps = src.frame_rate();
    assert!(fps.is_finite() && fps > 0.0, "frame rate {fps}");
    // Bounded: a looping source over a one-frame file would go on for ever.
    for _ in 0..4 {
        match src.next_frame() {
            Ok(f) => {
                assert_eq!((f.width, f.height), (w, h));
                assert_eq!(f.y.len(), w as usize * h as usize);
            }
            Err(_) => break,
        }
    }
});
