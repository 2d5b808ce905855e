//! Lip sync at a Rust receiver (issue 13): `cargo bench -p rtcio-cli --bench avsync` runs
//! `tests/browser/lipsync-bench.mjs` with this build's `rtcio` and the `rtcio-server` next to it
//! (build it first: `cargo build --release -p rtcio-server`), in a private loopback-only network
//! namespace (`unshare -n`, root) unless it already runs in one.
//!
//! The receiver (`rtcio join --play null`) measures the audio/video offset as played, from the
//! tone's marks and the frame marks. Senders: the Rust CLI's synthetic sources, and the guest
//! page in Chromium whose camera and microphone are `tests/browser/avsync-source.js` (a canvas
//! and WebAudio drawing the same marks: frame marks carrying the capture time, a 20 ms 3 kHz
//! mark on every whole Unix second of the tone, both on the page's Unix clock). Conditions:
//! plain loopback, the receiver's audio or video playout held 250 ms; lip sync from the sender
//! reports, on the shared-clock assumption (`RTCIO_AV_SR=off`), and off; for the Rust sender
//! also its former send-time reports (`RTCIO_SR_CLOCK=send` on the sender). Prints one markdown
//! table. Environment passed on: `RTCIO_BENCH_DURATION` (s per call, default 16),
//! `RTCIO_BENCH_PAIRS` (default `rr,cr`), `RTCIO_BENCH_RUNS`, `RTCIO_BENCH_VERBOSE=1`.
//!
//! Not a test: without `--bench` it only says so. The whole run is bounded; every process it
//! started is killed at the end, on a timeout and on Ctrl-C; a failed run exits non-zero.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod common;

use common::{count, env_or, node_command, repo, run_script};

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
    let runs = (count("RTCIO_BENCH_PAIRS", 2) * 10) as u64;
    let limit = Duration::from_secs(runs * (duration + 60) + 120);
    let mut cmd = node_command(&dir, "lipsync-bench.mjs", "avsync bench");
    cmd.env("RTCIO_SERVER_BIN", &server)
        .env("RTCIO_CLI_BIN", &cli);
    eprintln!(
        "avsync bench: {} and {}, {runs} calls of {duration} s (limit {} s)",
        server.display(),
        cli.display(),
        limit.as_secs()
    );
    run_script(&mut cmd, limit, "avsync bench")
}
