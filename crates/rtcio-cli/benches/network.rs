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

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Process group of the script (and everything it starts), for the signal handler.
static GROUP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(_sig: libc::c_int) {
    let g = GROUP.load(Ordering::SeqCst);
    if g > 0 {
        // SAFETY: kill is async-signal-safe; the group is the one this program created.
        unsafe { libc::kill(-g, libc::SIGTERM) };
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn env_or(name: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(name).map(PathBuf::from).unwrap_or(default)
}

/// True when this process sees no network interface but `lo`.
fn loopback_only() -> bool {
    match std::fs::read_dir("/sys/class/net") {
        Ok(dir) => dir.flatten().all(|e| e.file_name() == "lo"),
        Err(_) => false,
    }
}

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .map(|v| v.split(',').filter(|x| !x.trim().is_empty()).count())
        .unwrap_or(default)
}

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

    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if loopback_only() {
        // Already isolated: make sure lo is up (fails harmlessly when it is, or without root).
        let _ = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        let mut c = Command::new("node");
        c.arg("network-bench.mjs");
        c
    } else if root {
        let mut c = Command::new("unshare");
        c.args([
            "-n",
            "sh",
            "-c",
            "ip link set lo up && exec node network-bench.mjs",
        ]);
        c
    } else {
        eprintln!(
            "network bench: not root, so no private network namespace: running on this host's loopback"
        );
        let mut c = Command::new("node");
        c.arg("network-bench.mjs");
        c
    };
    cmd.current_dir(&dir)
        .env("RTCIO_SERVER_BIN", &server)
        .env("RTCIO_CLI_BIN", &cli)
        .process_group(0);
    eprintln!(
        "network bench: {} and {}, {runs} calls of {duration} s (limit {} s)",
        server.display(),
        cli.display(),
        limit.as_secs()
    );
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("network bench: cannot start node / unshare: {e}");
            return ExitCode::FAILURE;
        }
    };
    let group = child.id() as i32;
    GROUP.store(group, Ordering::SeqCst);
    // SAFETY: the handler only reads an atomic and calls kill (async-signal-safe).
    unsafe {
        let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }

    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if start.elapsed() > limit => {
                eprintln!(
                    "network bench: no result within {} s: stopping it",
                    limit.as_secs()
                );
                timed_out = true;
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => {
                eprintln!("network bench: waiting for the script: {e}");
                break None;
            }
        }
    };
    // Whatever happened, nothing of the group outlives us: SIGTERM, a grace period, SIGKILL.
    // SAFETY: signals to the process group this program created.
    unsafe { libc::kill(-group, libc::SIGTERM) };
    let grace = Instant::now();
    let mut status = status;
    while grace.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(st)) = child.try_wait() {
            status.get_or_insert(st);
            // SAFETY: as above; probes (signal 0) whether any member is left.
            if unsafe { libc::kill(-group, 0) } != 0 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: as above.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    let _ = child.wait();
    match status {
        Some(st) if st.success() && !timed_out => ExitCode::SUCCESS,
        Some(st) => {
            eprintln!("network bench: the script failed ({st})");
            ExitCode::FAILURE
        }
        None => ExitCode::FAILURE,
    }
}
