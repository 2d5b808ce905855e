//! The real app under WebDriver: `tauri-driver` in front of WebKitGTK's `WebKitWebDriver` starts
//! `rtcio-desktop` on a given X display (a private Xvfb) with the synthetic camera and tone
//! (`RTCIO_FAKE_MEDIA=1`), and a W3C WebDriver session drives its window, plus the plain HTTP
//! client that talks to the driver.
//!
//! Needs `tauri-driver` and `WebKitWebDriver` (`scripts/setup.sh`); `RTCIO_TAURI_DRIVER` and
//! `RTCIO_WEBKIT_DRIVER` override where they are looked for, `RTCIO_DESKTOP_BIN` the app binary.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::process::{Group, app_on_xvfb};

/// Every wait on the app (a loaded 2-core CI box: WebKit, Chromium, two encoders and two
/// decoders share it).
pub const WAIT: Duration = Duration::from_secs(45);
/// Starting the app through the WebDriver chain and WebKit's first load.
pub const START_WAIT: Duration = Duration::from_secs(120);
/// W3C WebDriver's key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Frames painted so far per tile key in the app: those that reached the screen
/// (`videoStats.drawnPerKey` of `ui/app.js`; the shared WebGL layer draws in animation frames,
/// so `perKey`, the frames handed to the renderer, can run ahead of it).
pub const PAINTED: &str =
    "const s = window.__rtcioVideo; return s ? (s.drawnPerKey || s.perKey) : null;";

/// Painted frames of the first tile whose key starts with `arguments[0]`, when ≥ `arguments[1]`.
pub const PAINTED_AT_LEAST: &str = "const s = window.__rtcioVideo; if (!s) return null;
  for (const [k, n] of Object.entries(s.drawnPerKey || s.perKey)) if (k.startsWith(arguments[0]) && n >= arguments[1]) return {key: k, n};
  return null;";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `name` from an override variable, `$PATH`, or `~/.cargo/bin`.
pub fn find_tool(var: &str, name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(var) {
        return PathBuf::from(p);
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found (run ./scripts/setup.sh, or set {var})"))
}

/// The last `lines` lines of a log file, for failure messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ------------------------------------------------------------------------------ HTTP

/// Transport failures (no answer at all) retried by [`http`].
const HTTP_ATTEMPTS: usize = 5;

/// One WebDriver command over HTTP/1.1 (plain JSON). tauri-driver now and then drops a
/// connection without an answer when its pooled connection to WebKitWebDriver has just been
/// closed ("Error serving connection … SendRequest" in its log; it does not retry itself): the
/// command never reached WebKit, so it is sent again.
pub fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut attempt = 1;
    loop {
        match http_once(port, method, path, body) {
            Err(e) if e.starts_with(NO_ANSWER) && attempt < HTTP_ATTEMPTS => {
                attempt += 1;
                RETRIES.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

const NO_ANSWER: &str = "no answer";

/// Requests sent again by [`http`] (printed at the end).
static RETRIES: AtomicUsize = AtomicUsize::new(0);

/// WebDriver requests [`http`] has sent again so far in this test process.
pub fn retries() -> usize {
    RETRIES.load(Ordering::Relaxed)
}

/// One HTTP/1.1 exchange with `Connection: close`.
fn http_once(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("{NO_ANSWER}: connect: {e}"))?;
    s.set_read_timeout(Some(START_WAIT))
        .map_err(|e| e.to_string())?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json; \
         charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    if raw.is_empty() {
        return Err(format!("{NO_ANSWER}: connection closed without a response"));
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no HTTP header in {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let mut payload = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        payload = dechunk(&payload)?;
    }
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let v: Value = serde_json::from_slice(&payload).map_err(|e| {
        format!(
            "HTTP {status}: bad JSON ({e}): {}",
            String::from_utf8_lossy(&payload)
        )
    })?;
    if status >= 400 {
        return Err(format!("HTTP {status}: {}", v["value"]));
    }
    Ok(v["value"].clone())
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("bad chunk header")?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|e| format!("bad chunk size {size_text:?}: {e}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(..size).ok_or("short chunk")?);
        b = b.get(size + 2..).unwrap_or_default();
    }
}

// ------------------------------------------------------------------------------ WebDriver

/// A WebDriver session on the app's window.
pub struct WebDriver {
    pub port: u16,
    pub session: String,
    /// The app's log, for failure messages.
    pub log: PathBuf,
    /// tauri-driver's and WebKitWebDriver's log.
    pub driver_log: PathBuf,
}

impl WebDriver {
    pub fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        http(self.port, method, &full, body.as_ref()).unwrap_or_else(|e| {
            panic!(
                "WebDriver {method} {path} failed: {e}\ndriver log tail:\n{}\napp log tail:\n{}",
                tail(&self.driver_log, 20),
                tail(&self.log, 60)
            )
        })
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page.
    pub fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    pub fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element id for {css}: {v}"))
            .to_string()
    }

    pub fn click(&self, css: &str) {
        let el = self.find(css);
        self.cmd("POST", &format!("/element/{el}/click"), Some(json!({})));
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.cmd("POST", &format!("/element/{el}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({"text": text})),
        );
    }

    /// One key pressed and released, as a person would (goes to the focused element).
    pub fn press_key(&self, key: &str) {
        self.cmd(
            "POST",
            "/actions",
            Some(
                json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
                {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]}),
            ),
        );
        let _ = http(
            self.port,
            "DELETE",
            &format!("/session/{}/actions", self.session),
            None,
        );
    }

    /// Polls `script` until it returns something truthy; returns that value.
    pub fn wait_js(&self, what: &str, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.js(script, args.clone());
            if !(v.is_null() || v == json!(false) || v == json!(0) || v == json!("")) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {} s waiting in the app for {what}; last value {v}\napp log tail:\n{}",
                WAIT.as_secs(),
                tail(&self.log, 60)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ends the session (best effort: the app may be gone already).
    pub fn end(&self) {
        let _ = http(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

// ------------------------------------------------------------------------------ the app

/// The real app on an X display, started through tauri-driver, with a WebDriver session on its
/// window showing the start screen. Dropping it kills tauri-driver, WebKitWebDriver and the app.
pub struct App {
    pub wd: WebDriver,
    /// The app's own process id (the wrapper script `exec`s it), for SIGKILL tests.
    pid_file: PathBuf,
    _driver: Group,
}

impl App {
    /// Starts the app on `display` with its settings, caches and logs under `scratch`
    /// (`app.log`, `driver.log`), and waits for its start screen (`body[data-ready]`).
    pub fn start(display: &str, scratch: &Path) -> App {
        let log = scratch.join("app.log");
        // WebKitWebDriver starts the "browser" with its own arguments; a wrapper sends the app's
        // output to our log (WebKitWebDriver drops its own stdout), records the app's pid, and
        // keeps everything else.
        let bin = std::env::var("RTCIO_DESKTOP_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_rtcio-desktop").to_string());
        let wrapper = scratch.join("app.sh");
        let pid_file = scratch.join("app.pid");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho $$ >'{}'\nexec '{bin}' \"$@\" >>'{}' 2>&1\n",
                pid_file.display(),
                log.display()
            ),
        )
        .expect("wrapper");
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");

        let port = free_port();
        let native_port = free_port();
        let driver_log = std::fs::File::create(scratch.join("driver.log")).expect("driver log");
        let driver = Group(
            app_on_xvfb(
                Command::new(find_tool("RTCIO_TAURI_DRIVER", "tauri-driver"))
                    .args([
                        "--port",
                        &port.to_string(),
                        "--native-port",
                        &native_port.to_string(),
                        "--native-driver",
                    ])
                    .arg(find_tool("RTCIO_WEBKIT_DRIVER", "WebKitWebDriver")),
                display,
                scratch,
            )
            .env("RTCIO_FAKE_MEDIA", "1")
            .env(
                "RUST_LOG",
                "info,webrtc=warn,rtc=warn,rtcio=info,rtcio_desktop=info,rtcio_server=info,rtcio_media=info",
            )
            .stdin(Stdio::null())
            .stdout(driver_log.try_clone().expect("driver log"))
            .stderr(driver_log)
            .process_group(0)
            .spawn()
            .expect("start tauri-driver"),
        );
        let driver_log = scratch.join("driver.log");

        // The driver is up when /status answers.
        let deadline = Instant::now() + START_WAIT;
        while http(port, "GET", "/status", None).is_err() {
            assert!(
                Instant::now() < deadline,
                "tauri-driver did not answer on port {port}:\n{}",
                tail(&driver_log, 40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "tauri:options": {"application": wrapper, "args": []}}}});
        // Right after start the native driver may not listen yet (tauri-driver then drops the
        // connection without an answer): retry those, not HTTP errors.
        let session = loop {
            match http(port, "POST", "/session", Some(&caps)) {
                Ok(v) => break v,
                Err(e) if !e.starts_with("HTTP") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!(
                    "no WebDriver session: {e}\ndriver log:\n{}\napp log:\n{}",
                    tail(&driver_log, 40),
                    tail(&log, 40)
                ),
            }
        };
        let wd = WebDriver {
            port,
            session: session["sessionId"]
                .as_str()
                .expect("sessionId")
                .to_string(),
            log,
            driver_log,
        };
        wd.wait_js(
            "the start screen (body[data-ready])",
            "return document.body.dataset.ready === 'true';",
            json!([]),
        );
        App {
            wd,
            pid_file,
            _driver: driver,
        }
    }

    /// The app's process id (the real binary, not tauri-driver or WebKitWebDriver).
    pub fn pid(&self) -> u32 {
        std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no app pid in {}", self.pid_file.display()))
    }
}
