//! The workspace's own processes next to the app: `rtcio-server` on a loopback port and
//! `rtcio join --json` participants whose JSON lines the test reads. Both binaries are built
//! next to `rtcio-desktop` by `cargo test --workspace` (or `cargo build -p rtcio-cli -p
//! rtcio-server`).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Failure guard for one awaited line (never a synchronisation device).
pub const LINE_WAIT: Duration = Duration::from_secs(30);

/// A workspace binary built next to the app's.
pub fn sibling_bin(name: &str) -> PathBuf {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_rtcio-desktop"))
        .parent()
        .expect("target dir")
        .join(name);
    assert!(
        bin.is_file(),
        "{} is missing: build it (`cargo build -p rtcio-cli -p rtcio-server`, or run `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// Sends `sig` (`-KILL`, `-TERM`) to one process.
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill {sig} {pid} failed");
}

/// Milliseconds since the Unix epoch (the clock of the CLI's `ts`).
pub fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `rtcio-server` as its own process on 127.0.0.1:`port`; killed on drop.
pub struct ServerProc(Child);

impl ServerProc {
    /// Starts the server and returns once it accepts connections.
    pub fn start(port: u16) -> ServerProc {
        let child = Command::new(sibling_bin("rtcio-server"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env("RTCIO_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rtcio-server");
        let server = ServerProc(child);
        let deadline = Instant::now() + LINE_WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "rtcio-server did not listen");
            std::thread::sleep(Duration::from_millis(25));
        }
        server
    }

    /// SIGKILL, then reap it (the port is free again afterwards).
    pub fn kill9(&mut self) {
        signal(self.0.id(), "-KILL");
        let _ = self.0.wait();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a participant printed so far, and a signal for every new line.
#[derive(Default)]
struct Output {
    lines: Mutex<(Vec<Value>, bool)>,
    grew: Condvar,
}

/// One `rtcio join --json` process: a thread collects its stdout lines. Killed on drop.
pub struct Participant {
    pub label: String,
    child: Child,
    out: Arc<Output>,
    stderr: Arc<Mutex<String>>,
}

impl Participant {
    /// Joins `room` on `url` as `name` with a small synthetic call (320×180 test pattern at
    /// 15 fps, 300 kbit/s, and a tone), printing JSON lines.
    pub fn join(url: &str, room: &str, name: &str) -> Participant {
        let mut child = Command::new(sibling_bin("rtcio"))
            .args(["join", "--json", "--loopback", "--server", url])
            .args(["--room", room, "--name", name])
            .args([
                "--video",
                "testsrc",
                "--audio",
                "tone",
                "--video-size",
                "320x180",
            ])
            .args(["--fps", "15", "--video-bitrate", "300"])
            .env("RTCIO_LOG", "error,rtcio=warn,rtcio_cli=info")
            .env_remove("RUST_LOG")
            .env_remove("RTCIO_SERVER")
            .env_remove("RTCIO_PASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rtcio");
        let out = Arc::new(Output::default());
        let stdout = child.stdout.take().expect("stdout");
        let sink = out.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Not JSON is kept as a marker: it shows up in failure messages.
                let v = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({"type": "not-json", "line": line}));
                sink.lines.lock().expect("lines").0.push(v);
                sink.grew.notify_all();
            }
            sink.lines.lock().expect("lines").1 = true;
            sink.grew.notify_all();
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let text = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                text.lock()
                    .expect("stderr")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Participant {
            label: name.to_string(),
            child,
            out,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line printed so far.
    pub fn seen(&self) -> Vec<Value> {
        self.out.lines.lock().expect("lines").0.clone()
    }

    /// The first line (printed so far or later) matching `pred`; fails the test after
    /// [`LINE_WAIT`] or when the process ends without one.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + LINE_WAIT;
        let mut guard = self.out.lines.lock().expect("lines");
        loop {
            if let Some(v) = guard.0.iter().find(|v| pred(v)) {
                return v.clone();
            }
            let now = Instant::now();
            if guard.1 || now >= deadline {
                let lines: Vec<String> = guard.0.iter().map(Value::to_string).collect();
                panic!(
                    "{}: no {what} ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.label,
                    if guard.1 {
                        "stdout closed"
                    } else {
                        "timed out"
                    },
                    lines.join("\n"),
                    self.stderr.lock().expect("stderr")
                );
            }
            guard = self
                .out
                .grew
                .wait_timeout(guard, deadline - now)
                .expect("lines")
                .0;
        }
    }

    /// Our socket id from the `joined` line.
    pub fn id(&self) -> String {
        self.wait_for("joined", |v| v["type"] == "joined")["id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits until this participant has decoded ≥ `frames` video frames from `name` (one
    /// connection's stats line), after `since_ms` (epoch ms).
    pub fn decodes_from(&self, name: &str, frames: u64, since_ms: u64) -> Value {
        self.wait_for(&format!("video decoded from {name}"), |v| {
            v["type"] == "video-stats"
                && v["name"] == name
                && v["ts"].as_u64().unwrap_or(0) >= since_ms
                && v["frames_decoded"].as_u64().unwrap_or(0) >= frames
        })
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Frames decoded from `name` per CLI stats tick at or after `since_ms`, over every connection
/// that carried them: `(tick ts, frames)`. The CLI prints each track's cumulative count once a
/// second, all tracks together, so lines within 500 ms of each other are one tick.
pub fn frames_per_tick(lines: &[Value], name: &str, since_ms: u64) -> Vec<(u64, u64)> {
    let mut last_count: std::collections::HashMap<String, u64> = Default::default();
    let mut ticks: Vec<(u64, u64)> = Vec::new();
    for v in lines
        .iter()
        .filter(|v| v["type"] == "video-stats" && v["name"] == name)
    {
        let track = format!("{}#{}", v["peer"], v["mid"]);
        let count = v["frames_decoded"].as_u64().unwrap_or(0);
        let grown = count.saturating_sub(last_count.insert(track, count).unwrap_or(0));
        let ts = v["ts"].as_u64().unwrap_or(0);
        if ts < since_ms {
            continue;
        }
        match ticks.last_mut() {
            Some((t, n)) if ts.saturating_sub(*t) < 500 => *n += grown,
            _ => ticks.push((ts, grown)),
        }
    }
    ticks
}
