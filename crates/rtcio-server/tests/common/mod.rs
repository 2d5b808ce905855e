//! Test harness: real servers (in-process or as child processes), a real Redis, and real
//! rust_socketio clients whose events are collected in arrival order.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload, TransportType};
use serde_json::Value;
use tokio::sync::mpsc;

/// Guard time for one awaited event; a failure, never a synchronisation device.
pub const WAIT: Duration = Duration::from_secs(10);

/// One received event.
#[derive(Debug, Clone)]
pub struct Received {
    pub name: String,
    pub args: Vec<Value>,
}

/// A socket.io client that records every custom event it receives.
pub struct TestClient {
    pub label: String,
    pub client: Client,
    rx: mpsc::UnboundedReceiver<Received>,
    /// Events read past while looking for another one, still to be consumed.
    backlog: Vec<Received>,
}

/// Connects over WebSocket and waits for the socket.io CONNECT ack.
pub async fn connect(url: &str, label: &str) -> TestClient {
    try_connect(url, label, None)
        .await
        .unwrap_or_else(|e| panic!("{label}: {e}"))
}

/// Connects with an optional handshake `auth` payload; `Err` carries the connect_error text.
pub async fn try_connect(
    url: &str,
    label: &str,
    auth: Option<Value>,
) -> Result<TestClient, String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (open_tx, mut open_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let open_err = open_tx.clone();
    let mut builder = ClientBuilder::new(url)
        .transport_type(TransportType::Websocket)
        .reconnect(false)
        .on("open", move |_, _| {
            let _ = open_tx.send(Ok(()));
            async {}.boxed()
        })
        .on("error", move |p, _| {
            let _ = open_err.send(Err(format!("{p:?}")));
            async {}.boxed()
        })
        .on_any(move |ev: Event, payload: Payload, _| {
            let args = match payload {
                Payload::Text(v) => v,
                other => vec![Value::String(format!("{other:?}"))],
            };
            let _ = tx.send(Received {
                name: String::from(ev),
                args,
            });
            async {}.boxed()
        });
    if let Some(a) = auth {
        builder = builder.auth(a);
    }
    let client = builder.connect().await.map_err(|e| e.to_string())?;
    match tokio::time::timeout(WAIT, open_rx.recv()).await {
        Ok(Some(Ok(()))) => Ok(TestClient {
            label: label.to_string(),
            client,
            rx,
            backlog: Vec::new(),
        }),
        Ok(Some(Err(e))) => Err(e),
        Ok(None) => Err("client dropped before open".into()),
        Err(_) => Err("no CONNECT ack within the guard time".into()),
    }
}

impl TestClient {
    pub async fn emit(&self, event: &str, payload: Value) {
        self.client
            .emit(event, payload)
            .await
            .unwrap_or_else(|e| panic!("{}: emit {event}: {e}", self.label));
    }

    /// Next event of any name, in arrival order.
    pub async fn next(&mut self) -> Received {
        if !self.backlog.is_empty() {
            return self.backlog.remove(0);
        }
        match tokio::time::timeout(WAIT, self.rx.recv()).await {
            Ok(Some(r)) => r,
            Ok(None) => panic!("{}: connection closed while waiting", self.label),
            Err(_) => panic!("{}: no event within {WAIT:?}", self.label),
        }
    }

    /// Next event, which must be `name`; returns its first argument.
    pub async fn expect(&mut self, name: &str) -> Value {
        let r = self.next().await;
        assert_eq!(r.name, name, "{}: expected {name}, got {r:?}", self.label);
        r.args.into_iter().next().unwrap_or(Value::Null)
    }

    /// Waits for `name`, keeping other events for later; returns its first argument.
    pub async fn wait_for(&mut self, name: &str) -> Value {
        self.wait_for_within(name, WAIT).await
    }

    /// [`TestClient::wait_for`] with its own guard time (for answers that take several
    /// server-side timeouts).
    pub async fn wait_for_within(&mut self, name: &str, guard: Duration) -> Value {
        if let Some(i) = self.backlog.iter().position(|r| r.name == name) {
            return self
                .backlog
                .remove(i)
                .args
                .into_iter()
                .next()
                .unwrap_or(Value::Null);
        }
        let mut skipped = Vec::new();
        let found = loop {
            match tokio::time::timeout(guard, self.rx.recv()).await {
                Ok(Some(r)) if r.name == name => break r,
                Ok(Some(r)) => skipped.push(r),
                Ok(None) => panic!("{}: closed while waiting for {name}", self.label),
                Err(_) => panic!(
                    "{}: no {name} within {guard:?} (saw {skipped:?})",
                    self.label
                ),
            }
        };
        self.backlog.extend(skipped);
        found.args.into_iter().next().unwrap_or(Value::Null)
    }

    /// Everything received so far without waiting.
    pub fn drain(&mut self) -> Vec<Received> {
        let mut out = std::mem::take(&mut self.backlog);
        while let Ok(r) = self.rx.try_recv() {
            out.push(r);
        }
        out
    }

    /// Asserts that nothing but `allowed` events arrived before `marker`, and returns them.
    pub async fn until_marker(&mut self, marker: &str) -> Vec<Received> {
        let mut seen = Vec::new();
        loop {
            let r = self.next().await;
            if r.name == marker {
                return seen;
            }
            seen.push(r);
        }
    }

    pub async fn close(self) {
        let _ = self.client.disconnect().await;
    }
}

/// Joins `room` and returns the socket ids of members announced in the backfill.
pub async fn join(
    c: &mut TestClient,
    room: &str,
    name: &str,
    password: Option<&str>,
) -> Vec<String> {
    let mut p = serde_json::json!({"roomId": room, "name": name});
    if let Some(pw) = password {
        p["password"] = Value::String(pw.to_string());
    }
    c.emit("join-room", p).await;
    let mut ids = Vec::new();
    loop {
        let r = c.next().await;
        match r.name.as_str() {
            "user-connected" => ids.push(r.args[0]["id"].as_str().unwrap_or_default().to_string()),
            "media-state" => {}
            "join-ok" => return ids,
            _ => panic!("{}: unexpected {r:?} while joining", c.label),
        }
    }
}

/// A free loopback TCP port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot find a free port")
}

/// A child process killed when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a private `redis-server` on a free loopback port; returns it and its URL.
pub fn start_redis() -> (ChildGuard, String) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect(
            "redis-server must be installed (Debian package redis-server; .ci/run installs it)",
        );
    let mut guard = ChildGuard(child);
    let stdout = guard.0.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("redis-server output");
        if line.contains("Ready to accept connections") {
            break;
        }
    }
    // Keep draining so redis never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (guard, format!("redis://127.0.0.1:{port}"))
}

/// Starts the `rtcio-server` binary with `args` and returns it with its URL.
pub fn start_server_process(args: &[&str]) -> (ChildGuard, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_rtcio-server"))
        .args(["--port", "0", "--log", "warn"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn rtcio-server");
    let mut guard = ChildGuard(child);
    let stdout = guard.0.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(url) = line.strip_prefix("rtcio-server listening on ") {
                    break url.trim().to_string();
                }
            }
            _ => panic!("rtcio-server exited before listening"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (guard, url)
}
