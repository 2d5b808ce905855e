//! Lip sync at a Rust receiver (issue 13): `cargo bench -p rtcio-cli --bench avsync` runs
//! `tests/browser/lipsync-bench.mjs` with this build's `rtcio` and the `rtcio-server` next to it
//! (build it first: `cargo build --release -p rtcio-server`), in a private loopback-only network
//! namespace (`unshare -n`, root) unless it already runs in one.
//!
//! The receiver (`rtcio join --play null`) measures the audio/video offset as played, from the
//! tone's marks and the frame marks. Senders: the Rust CLI's synthetic sources (marks on whole
//! Unix seconds), and Chromium's fake camera and microphone fed a Y4M + WAV pair this program
//! writes first (`--use-file-for-fake-video-capture` / `--use-file-for-fake-audio-capture`):
//! 30 s at 320x180, 30 fps, frame marks counting media time and a 20 ms 3 kHz mark on every
//! whole second of the 48 kHz tone, so the same offset is measurable. Conditions: plain
//! loopback, the receiver's audio or video playout held 250 ms; lip sync from the sender
//! reports, on the shared-clock assumption (`RTCIO_AV_SR=off`), and off. Prints one markdown
//! table. Environment passed on: `RTCIO_BENCH_DURATION` (s per call, default 16),
//! `RTCIO_BENCH_PAIRS` (default `rr,cr`), `RTCIO_BENCH_VERBOSE=1`.
//!
//! Not a test: without `--bench` it only says so. The whole run is bounded; every process it
//! started is killed at the end, on a timeout and on Ctrl-C; a failed run exits non-zero.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

mod common;

use common::{count, env_or, node_command, repo, run_script};

/// Length of the file pair (whole seconds, so the loop keeps the marks on whole seconds).
const FILE_SECONDS: u32 = 30;
const FILE_FPS: u32 = 30;

/// Writes the Y4M + WAV pair for Chromium's fake devices into `dir`.
fn write_files(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    use rtcio_media::file::y4m::Y4mWriter;
    use rtcio_media::synthetic::audio::{ToneConfig, ToneSource};
    use rtcio_media::synthetic::video::{TestPatternConfig, TestPatternSource};
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let y4m = dir.join("lipsync.y4m");
    let wav = dir.join("lipsync.wav");
    let pattern = TestPatternSource::new(TestPatternConfig {
        width: 320,
        height: 180,
        fps: FILE_FPS as f32,
        paced: false,
    })
    .map_err(|e| e.to_string())?;
    let mut w = Y4mWriter::create(&y4m, 320, 180, FILE_FPS).map_err(|e| e.to_string())?;
    for i in 0..u64::from(FILE_SECONDS * FILE_FPS) {
        // The mark counts media time: frame i is at i / fps seconds.
        let media_us = i * 1_000_000 / u64::from(FILE_FPS);
        let t = Duration::from_micros(media_us);
        w.write(&pattern.render(i, t, media_us))
            .map_err(|e| e.to_string())?;
    }
    w.finish().map_err(|e| e.to_string())?;
    let tone = ToneSource::new(ToneConfig {
        paced: false,
        ..ToneConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let samples = tone.render(0, (FILE_SECONDS * 48_000) as usize);
    let pcm: Vec<u8> = samples
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
        .collect();
    // A 48 kHz mono 16-bit PCM WAV: the 44-byte canonical header, then the samples.
    let mut out = Vec::with_capacity(44 + pcm.len());
    let len = pcm.len() as u32;
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&48_000u32.to_le_bytes());
    out.extend_from_slice(&96_000u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&pcm);
    std::fs::write(&wav, out).map_err(|e| e.to_string())?;
    Ok((y4m, wav))
}

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!("avsync bench: skipped (run it with `cargo bench -p rtcio-cli --bench avsync`)");
        return ExitCode::SUCCESS;
    }
    let cli = PathBuf::from(env!("CARGO_BIN_EXE_rtcio"));
    let server = env_or(
        "RTCIO_SERVER_BIN",
        cli.parent().expect("target dir").join("rtcio-server"),
    );
    let cli = env_or("RTCIO_CLI_BIN", cli);
    if !server.is_file() {
        eprintln!(
            "avsync bench: {} is missing: build it with this profile (`cargo build --release -p rtcio-server`) or set RTCIO_SERVER_BIN",
            server.display()
        );
        return ExitCode::FAILURE;
    }
    let dir = repo().join("tests/browser");
    if !dir.join("node_modules").is_dir() {
        eprintln!("avsync bench: tests/browser/node_modules is missing: run ./scripts/setup.sh");
        return ExitCode::FAILURE;
    }

    // The script's own limit ((duration + 60 s) per run + 60 s), plus a margin for Chromium.
    let duration: u64 = std::env::var("RTCIO_BENCH_DURATION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let runs = (count("RTCIO_BENCH_PAIRS", 2) * 7) as u64;
    let limit = Duration::from_secs(runs * (duration + 60) + 120);
    let files = std::env::temp_dir().join(format!("rtcio-lipsync-{}", std::process::id()));
    let (y4m, wav) = match write_files(&files) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("avsync bench: cannot write the Chromium file pair: {e}");
            return ExitCode::FAILURE;
        }
    };

    let mut cmd = node_command(&dir, "lipsync-bench.mjs", "avsync bench");
    cmd.env("RTCIO_SERVER_BIN", &server)
        .env("RTCIO_CLI_BIN", &cli)
        .env("RTCIO_LIPSYNC_Y4M", &y4m)
        .env("RTCIO_LIPSYNC_WAV", &wav);
    eprintln!(
        "avsync bench: {} and {}, {runs} calls of {duration} s (limit {} s)",
        server.display(),
        cli.display(),
        limit.as_secs()
    );
    let code = run_script(&mut cmd, limit, "avsync bench");
    let _ = std::fs::remove_dir_all(&files);
    code
}
