//! Calls through an impaired link (issue 12's network benchmark): `cargo bench -p rtcio-cli
//! --bench network` runs `tests/browser/network-bench.mjs` with this build's `rtcio` and the
//! `rtcio-server` next to it (build it first: `cargo build --release -p rtcio-server`), in a
//! private loopback-only network namespace (`unshare -n`, root) unless it already runs in one.
//! Rust→Rust, Rust→Chromium, Chromium→Rust and Chromium→Chromium through four link profiles;
//! prints one markdown table per profile. Its environment (`RTCIO_BENCH_DURATION`,
//! `RTCIO_BENCH_PROFILES`, `RTCIO_BENCH_PAIRS`, …) is passed on; see the script's header.
//!
//! Not a test: without `--bench` (e.g. `cargo test --benches`) it only says so. The whole run
//! is bounded (the script's own limit plus a margin); every process it started is killed at the
//! end, on a timeout and on Ctrl-C; a failed run exits non-zero.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod common;

use common::{count, env_or, node_command, repo, run_script};

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!("network bench: skipped (run it with `cargo bench -p rtcio-cli --bench network`)");
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
            "network bench: {} is missing: build it with this profile (`cargo build --release -p rtcio-server`) or set RTCIO_SERVER_BIN",
            server.display()
        );
        return ExitCode::FAILURE;
    }
    let dir = repo().join("tests/browser");
    if !dir.join("node_modules").is_dir() {
        eprintln!("network bench: tests/browser/node_modules is missing: run ./scripts/setup.sh");
        return ExitCode::FAILURE;
    }

    // The script's own limit ((duration + 90 s) per run + 60 s), plus a margin for Chromium.
    let duration: u64 = std::env::var("RTCIO_BENCH_DURATION")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let runs = (count("RTCIO_BENCH_PROFILES", 4) * count("RTCIO_BENCH_PAIRS", 4)) as u64;
    let limit = Duration::from_secs(runs * (duration + 90) + 120);

    let mut cmd = node_command(&dir, "network-bench.mjs", "network bench");
    cmd.env("RTCIO_SERVER_BIN", &server)
        .env("RTCIO_CLI_BIN", &cli);
    eprintln!(
        "network bench: {} and {}, {runs} calls of {duration} s (limit {} s)",
        server.display(),
        cli.display(),
        limit.as_secs()
    );
    run_script(&mut cmd, limit, "network bench")
}
