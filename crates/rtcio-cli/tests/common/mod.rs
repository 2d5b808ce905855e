//! Running the built `rtcio` binary against an in-process rtcio-server and reading its JSON lines.

#![allow(dead_code)]

// One browser driver for every package's tests.
#[path = "../../../rtcio/tests/common/browser.rs"]
pub mod browser;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// Failure guard for one awaited line or exit (never a synchronisation device).
pub const WAIT: Duration = Duration::from_secs(30);

pub async fn server() -> rtcio_server::RunningServer {
    // RUST_LOG=rtcio_server=debug shows the in-process server's side when a test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("rtcio_server=info")),
        )
        .with_test_writer()
        .try_init();
    rtcio_server::start(rtcio_server::ServerConfig {
        bind: "127.0.0.1:0".parse().expect("addr"),
        policy: rtcio_server::Policy {
            relay_per_second: 0.0,
            ..rtcio_server::Policy::default()
        },
        ..Default::default()
    })
    .await
    .expect("server starts")
}

const INVALID: &str = "__not-a-json-line__";

/// A room name unique to this test process.
pub fn room(tag: &str) -> String {
    format!("{tag}-{}", std::process::id())
}

/// One running `rtcio` process. Killed on drop (also when a test panics).
pub struct Rtcio {
    pub label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<Value>,
    /// Every stdout line read so far.
    pub seen: Vec<Value>,
    stderr: Arc<Mutex<String>>,
    /// The stderr reader, which ends at EOF (awaited by [`Rtcio::exit_code`]).
    stderr_reader: Option<tokio::task::JoinHandle<()>>,
}

impl Rtcio {
    /// Starts `rtcio <args>` with stdin piped, stdout and stderr captured.
    pub fn spawn(label: &str, args: &[&str]) -> Rtcio {
        Self::spawn_env(label, args, &[])
    }

    /// Like [`Rtcio::spawn`], with extra environment variables (test knobs).
    pub fn spawn_env(label: &str, args: &[&str], env: &[(&str, &str)]) -> Rtcio {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rtcio"))
            .args(args)
            .envs(env.iter().copied())
            .env("RTCIO_LOG", rtcio_cli::DEFAULT_LOG)
            .env_remove("RUST_LOG")
            .env_remove("RTCIO_SERVER")
            .env_remove("RTCIO_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn rtcio");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr_pipe = child.stderr.take().expect("stderr");
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::unbounded_channel();
        let who = label.to_string();
        tokio::spawn(async move {
            let mut r = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = r.next_line().await {
                // A bad line is passed on as a marker: `wait_for` fails the test with it.
                let v = match serde_json::from_str::<Value>(&line) {
                    Ok(v) if v["type"].is_string() && v["ts"].is_u64() => v,
                    _ => serde_json::json!({"type": INVALID, "line": line, "from": who}),
                };
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let stderr_reader = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("stderr lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Rtcio {
            label: label.to_string(),
            child,
            stdin,
            lines,
            seen: Vec::new(),
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    fn context(&self) -> String {
        let seen: Vec<String> = self.seen.iter().map(Value::to_string).collect();
        format!(
            "\n--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.label,
            seen.join("\n"),
            self.label,
            self.stderr()
        )
    }

    /// The next stdout line matching `pred` (earlier non-matching lines are kept in `seen`).
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(v)) => {
                    assert!(
                        v["type"] != INVALID,
                        "{}: stdout line is not a JSON object with type and ts: {}",
                        self.label,
                        v["line"]
                    );
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Ok(None) => panic!(
                    "{}: stdout closed while waiting for {what}{}",
                    self.label,
                    self.context()
                ),
                Err(_) => panic!(
                    "{}: no {what} within {WAIT:?}{}",
                    self.label,
                    self.context()
                ),
            }
        }
    }

    /// A line matching `pred` already seen, else the next one that matches (for lines whose
    /// order relative to the last awaited one is not fixed).
    pub async fn seen_or_wait(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        self.wait_for(what, pred).await
    }

    /// The next line of this `type`.
    pub async fn wait_type(&mut self, kind: &str) -> Value {
        self.wait_for(kind, |v| v["type"] == kind).await
    }

    /// Writes one line to the process's stdin.
    pub async fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write stdin");
        stdin.flush().await.expect("flush stdin");
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the process to exit; returns its code after reading the rest of stdout and
    /// stderr (a test that then reads `stderr()` sees all of it, not the first read's part).
    pub async fn exit_code(&mut self) -> i32 {
        let status = match tokio::time::timeout(WAIT, self.child.wait()).await {
            Ok(s) => s.expect("wait"),
            Err(_) => panic!(
                "{}: did not exit within {WAIT:?}{}",
                self.label,
                self.context()
            ),
        };
        if let Some(reader) = self.stderr_reader.take() {
            let _ = tokio::time::timeout(WAIT, reader).await;
        }
        // The reader task ends at EOF: collect what is left.
        while let Ok(Some(v)) = tokio::time::timeout(WAIT, self.lines.recv()).await {
            assert!(
                v["type"] != INVALID,
                "{}: bad stdout line {}",
                self.label,
                v["line"]
            );
            self.seen.push(v);
        }
        status.code().unwrap_or(-1)
    }

    /// Lines of a type seen so far.
    pub fn seen_type(&self, kind: &str) -> Vec<&Value> {
        self.seen.iter().filter(|v| v["type"] == kind).collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -TERM failed");
    }
}

/// `join` arguments for a loopback peer printing JSON.
pub fn join_args<'a>(url: &'a str, room: &'a str, name: &'a str) -> Vec<&'a str> {
    vec![
        "join",
        "--json",
        "--loopback",
        "--server",
        url,
        "--room",
        room,
        "--name",
        name,
    ]
}

/// `join_args` plus a small synthetic call: a 320x180 test pattern at 15 fps (300 kbit/s) and a
/// tone, cheap enough for several processes on two cores.
pub fn small_media_args<'a>(url: &'a str, room: &'a str, name: &'a str) -> Vec<&'a str> {
    let mut v = join_args(url, room, name);
    v.extend([
        "--video",
        "testsrc",
        "--audio",
        "tone",
        "--video-size",
        "320x180",
        "--fps",
        "15",
        "--video-bitrate",
        "300",
    ]);
    v
}
