//! Raw H.264 Annex-B files (bot clips): NAL splitting, access-unit grouping and the source that
//! plays them. Only the bitstream parsing: nothing is decoded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtcio_fuzz::codec::annexb;
use rtcio_fuzz::error::MediaError;
use rtcio_fuzz::file::h264::{H264FileSource, split_access_units};
use rtcio_fuzz::source::EncodedSource;

fuzz_target!(|data: &[u8]| {
    let mut nal_bytes = 0;
    for nal in annexb::nal_units(data) {
        assert!(!nal.is_empty());
        nal_bytes += nal.len();
    }
    assert!(nal_bytes <= data.len());
    let _ = annexb::profile_level_id(data);

    let units = split_access_units(data);
    let mut total = 0;
    for u in &units {
        assert!(u.starts_with(&[0, 0, 0, 1]));
        total += u.len();
    }
    // Each NAL unit keeps its bytes and gains at most a 4-byte start code for its ≥ 3-byte one
    // (plus one byte each for at most every other byte of input).
    assert!(
        total <= 2 * data.len() + 4,
        "{total} bytes from {}",
        data.len()
    );

    match H264FileSource::from_bytes(data, 30.0, false, false) {
        Ok(mut src) => {
            assert_eq!(src.len(), units.len());
            for i in 0..=units.len() {
                match src.next_frame() {
                    Ok(f) => assert!(i < units.len() && f.data == units[i]),
                    Err(MediaError::EndOfStream) => {
                        assert_eq!(i, units.len());
                        break;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        Err(_) => {}
    }
});
