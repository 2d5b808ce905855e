//! The browser guest page rtcio-server serves at `/` (crates/rtcio-server/web), in headless
//! Chromium, in a call with this crate's `rtcio` CLI: `tests/browser/guest.test.mjs` runs the
//! scenario (video both ways, chat, media-state, receive-only guest, screen share and stop,
//! leave, password room, token, server loss) and fails with the check that broke.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// rtcio-server's binary: built next to ours by `cargo test --workspace`.
fn server_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_rtcio"))
        .parent()
        .expect("target dir")
        .join("rtcio-server");
    assert!(
        bin.is_file(),
        "{} is missing: build it (`cargo build -p rtcio-server`, or run `cargo test --workspace`)",
        bin.display()
    );
    bin
}

fn run_guest_test(env: &[(&str, &str)]) {
    let dir = repo().join("tests/browser");
    assert!(
        dir.join("node_modules").is_dir(),
        "tests/browser/node_modules is missing: run ./scripts/setup.sh"
    );
    let mut cmd = Command::new("node");
    cmd.current_dir(&dir)
        .arg("guest.test.mjs")
        .env("RTCIO_SERVER_BIN", server_bin())
        .env("RTCIO_CLI_BIN", env!("CARGO_BIN_EXE_rtcio"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("node runs (scripts/setup.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stdout.lines().chain(stderr.lines()) {
        if line.contains("PASS") || line.contains("FAIL") || line.contains("passed") {
            println!("{line}");
        }
    }
    assert!(
        out.status.success(),
        "guest page test failed:\n{stdout}\n{stderr}"
    );
}

#[test]
fn guest_page_call_with_the_cli() {
    // The page as built into the server binary.
    run_guest_test(&[("RTCIO_GUEST_EMBEDDED", "1")]);
}

#[test]
fn guest_page_call_relayed_through_the_embedded_turn() {
    run_guest_test(&[("RTCIO_GUEST_RELAY", "1")]);
}

#[test]
fn guest_page_video_keeps_flowing_through_a_lossy_relay() {
    // 3 % random loss, 20 ms one way with 5 ms of jitter, both directions (the relay's
    // impairment layer): NACKs and retransmissions must carry the video both ways.
    run_guest_test(&[("RTCIO_GUEST_IMPAIR", "loss=3%,delay=20ms,jitter=5ms")]);
}
