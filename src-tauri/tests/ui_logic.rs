//! The UI's own tests (every `tests/ui/*.test.mjs`): `ui/` in headless Chromium, driven by
//! playwright-core, against a stand-in for Tauri's IPC bridge. Run from here so that
//! `cargo test --workspace` (the README's test command) covers the UI too.
//!
//! Needs what `scripts/setup.sh` installs: node, `/usr/bin/chromium` (or `CHROMIUM=…`) and
//! `npm ci` in `tests/ui`. No display: Chromium runs headless. Network: loopback only.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The suites take ~50 s; a hung browser must fail the test rather than stall CI.
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

fn ui_tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/ui")
}

/// Every `*.test.mjs` file of the suite, sorted (new files are picked up without editing this).
fn test_files(dir: &std::path::Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .expect("tests/ui is readable")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".test.mjs"))
        .collect();
    files.sort();
    files
}

/// Reads a child's pipe to the end on its own thread (so a full pipe cannot block the child).
fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

#[test]
fn ui_suite_in_headless_chromium() {
    let dir = ui_tests_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "tests/ui/node_modules is missing: run ./scripts/setup.sh (npm ci in tests/ui)"
    );
    let files = test_files(&dir);
    assert!(
        files.iter().any(|f| f == "ui.test.mjs"),
        "no ui.test.mjs in {}",
        dir.display()
    );
    let mut child = Command::new("node")
        .current_dir(&dir)
        .args(["--test", "--test-concurrency=1"])
        .args(&files)
        // The page's pictures are for people, not for the test run.
        .env_remove("UI_SCREENSHOTS")
        // Its own process group, so a timeout can end Chromium along with node.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node must be installed (scripts/setup.sh)");
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());

    let deadline = Instant::now() + SUITE_TIMEOUT;
    let status = loop {
        match child.try_wait().expect("waiting for node") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                // The whole group: node and the Chromium processes it started.
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => thread::sleep(Duration::from_millis(200)),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();

    // The runner's summary in the cargo test log either way (visible with --nocapture).
    for line in stdout.lines().filter(|l| {
        let l = l.trim_start_matches(['#', ' ', 'ℹ']);
        ["tests ", "pass ", "fail ", "skipped "]
            .iter()
            .any(|p| l.starts_with(p))
    }) {
        println!("ui suite: {}", line.trim());
    }
    let Some(status) = status else {
        panic!(
            "ui suite did not finish within {} s:\n{stdout}\n{stderr}",
            SUITE_TIMEOUT.as_secs()
        );
    };
    assert!(
        status.success(),
        "ui suite failed ({status}):\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.lines().any(
            |l| l.trim_start_matches(['#', ' ', 'ℹ']).starts_with("pass ") && !l.contains("pass 0")
        ),
        "ui suite ran no test:\n{stdout}\n{stderr}"
    );
}
