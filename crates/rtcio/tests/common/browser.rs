//! Drives the browser rtc.io peer (`tests/browser/driver.mjs`: headless Chromium through
//! playwright-core) over its JSON-lines protocol.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// One headless Chromium with any number of pages.
pub struct Browser {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
}

/// The workspace root: the nearest ancestor of the package holding `tests/browser/driver.mjs`
/// (this file is shared by packages at different depths).
fn repo_root() -> PathBuf {
    let pkg = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    pkg.ancestors()
        .find(|d| d.join("tests/browser/driver.mjs").is_file())
        .map(PathBuf::from)
        .unwrap_or(pkg)
}

impl Browser {
    /// Starts the driver (and Chromium) and waits until it answers.
    pub async fn start() -> Browser {
        let root = repo_root();
        assert!(
            root.join("tests/browser/node_modules").is_dir(),
            "tests/browser/node_modules missing: run ./scripts/setup.sh"
        );
        let mut child = Command::new("node")
            .arg(root.join("tests/browser/driver.mjs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed (scripts/setup.sh)");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let mut b = Browser {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            next_id: 1,
        };
        b.cmd(json!({"cmd": "ping"}))
            .await
            .expect("driver answers ping");
        b
    }

    /// Sends one command and returns its result (commands are issued one at a time).
    pub async fn cmd(&mut self, mut c: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        c["id"] = json!(id);
        let mut line = c.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let Some(reply) = self.lines.next_line().await.map_err(|e| e.to_string())? else {
                return Err("driver exited".into());
            };
            let v: Value = serde_json::from_str(&reply)
                .map_err(|e| format!("bad driver line {reply}: {e}"))?;
            if v["id"] != json!(id) {
                continue;
            }
            return if v["ok"] == json!(true) {
                Ok(v["result"].clone())
            } else {
                Err(v["error"]
                    .as_str()
                    .unwrap_or("unknown driver error")
                    .to_string())
            };
        }
    }

    /// Opens a page; returns its index.
    pub async fn open(&mut self, label: &str) -> u64 {
        let v = self
            .cmd(json!({"cmd": "open", "label": label}))
            .await
            .expect("open page");
        v.as_u64().expect("page index")
    }

    /// Evaluates `expr` (an expression or function of `arg`) in a page.
    pub async fn eval(&mut self, page: u64, expr: &str, arg: Value) -> Value {
        self.cmd(json!({"cmd": "eval", "page": page, "expr": expr, "arg": arg, "timeoutMs": 60000}))
            .await
            .unwrap_or_else(|e| panic!("eval `{expr}` failed: {e}"))
    }

    /// Waits for a log entry partially matching `m` at or after `since`; returns `{index, entry}`.
    pub async fn wait_log(&mut self, page: u64, m: Value, since: u64, timeout_ms: u64) -> Value {
        self.cmd(json!({"cmd": "waitLog", "page": page, "match": m, "since": since, "timeoutMs": timeout_ms}))
            .await
            .unwrap_or_else(|e| panic!("waitLog {m}: {e}"))
    }

    /// Number of log entries so far (the index to wait from).
    pub async fn log_len(&mut self, page: u64) -> u64 {
        let v = self
            .cmd(json!({"cmd": "log", "page": page, "since": 1_000_000_000u64}))
            .await
            .expect("log");
        v["next"].as_u64().unwrap_or(0)
    }

    /// Closes a page (its peer connections die with it, without goodbye).
    pub async fn close_page(&mut self, page: u64) {
        let _ = self.cmd(json!({"cmd": "close", "page": page})).await;
    }

    /// Quits the driver and Chromium.
    pub async fn quit(mut self) {
        let _ = self.cmd(json!({"cmd": "quit"})).await;
        let _ = self.child.wait().await;
    }
}

/// The page's deterministic byte stream (`ByteGen(seed)` in rtcio-peer.js): xorshift32 words,
/// little-endian.
pub struct ByteGen {
    x: u32,
}

impl ByteGen {
    pub fn new(seed: u32) -> Self {
        ByteGen {
            x: if seed == 0 { 0x9e37_79b9 } else { seed },
        }
    }

    /// Fills `n` bytes (`n` a multiple of 4).
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 17;
            self.x ^= self.x << 5;
            out.extend_from_slice(&self.x.to_le_bytes());
        }
        out.truncate(n);
        out
    }
}
