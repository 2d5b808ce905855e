//! WAV files as a bot's audio source: the RIFF container and sample decoding (any rate, channel
//! count, integer or float format). Resampling is not parsing and is left out.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use rtcio_fuzz::file::wav_pcm::read_pcm;

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = hound::WavReader::new(Cursor::new(data)) else {
        return;
    };
    let Ok((spec, samples)) = read_pcm(reader) else {
        return;
    };
    assert!(spec.channels > 0 && spec.sample_rate > 0);
    // Every sample comes from at least one byte of the file.
    assert!(
        samples.len() <= data.len(),
        "{} samples from {} bytes",
        samples.len(),
        data.len()
    );
    assert!(
        samples.iter().all(|s| !s.is_finite()
            || s.abs() <= 1.0
            || spec.sample_format == hound::SampleFormat::Float),
        "integer samples scaled outside [-1, 1]"
    );
});
