//! What the benches that drive a Node script (and Chromium) share: paths, the loopback check,
//! and running the script in a process group of its own that is bounded in time and never
//! outlives the bench (Ctrl-C included).

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

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn env_or(name: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(name).map(PathBuf::from).unwrap_or(default)
}

/// True when this process sees no network interface but `lo`.
fn loopback_only() -> bool {
    match std::fs::read_dir("/sys/class/net") {
        Ok(dir) => dir.flatten().all(|e| e.file_name() == "lo"),
        Err(_) => false,
    }
}

pub fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .map(|v| v.split(',').filter(|x| !x.trim().is_empty()).count())
        .unwrap_or(default)
}

/// Spawns `cmd` (set to a process group of its own), waits at most `limit`, then stops whatever
/// is left of the group: SIGTERM, a 10 s grace period, SIGKILL. `name` prefixes the messages.
/// Success only when the script exited 0 in time.
pub fn run_script(cmd: &mut Command, limit: Duration, name: &str) -> ExitCode {
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: cannot start node / unshare: {e}");
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
                    "{name}: no result within {} s: stopping it",
                    limit.as_secs()
                );
                timed_out = true;
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => {
                eprintln!("{name}: waiting for the script: {e}");
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
            eprintln!("{name}: the script failed ({st})");
            ExitCode::FAILURE
        }
        None => ExitCode::FAILURE,
    }
}

/// `node SCRIPT` in `dir`, in a private loopback-only network namespace (`unshare -n`) when we
/// are root and not in one already, in a process group of its own (for [`run_script`]).
pub fn node_command(dir: &Path, script: &str, name: &str) -> Command {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if loopback_only() {
        // Already isolated: make sure lo is up (fails harmlessly when it is, or without root).
        let _ = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status();
        let mut c = Command::new("node");
        c.arg(script);
        c
    } else if root {
        let mut c = Command::new("unshare");
        c.args([
            "-n",
            "sh",
            "-c",
            &format!("ip link set lo up && exec node {script}"),
        ]);
        c
    } else {
        eprintln!(
            "{name}: not root, so no private network namespace: running on this host's loopback"
        );
        let mut c = Command::new("node");
        c.arg(script);
        c
    };
    cmd.current_dir(dir).process_group(0);
    cmd
}
