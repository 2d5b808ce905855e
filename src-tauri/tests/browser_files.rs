//! File transfer between the app's session and the rtc.io browser peer (`tests/browser/`,
//! headless Chromium) doing it the tutorial's way (`meta`, 16 KiB chunks with drain, `eof`):
//! files arrive intact in both directions.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::browser::{Browser, ByteGen};
use rtcio_desktop::session::{JoinConfig, ServerChoice, Session, UiSink};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

type Events = mpsc::UnboundedReceiver<(String, Value)>;

const WAIT: Duration = Duration::from_secs(60);

fn sink() -> (UiSink, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    let ui: UiSink = Arc::new(move |name: &str, payload: Value| {
        let _ = tx.send((name.to_string(), payload));
    });
    (ui, rx)
}

async fn expect(rx: &mut Events, what: &str, pred: impl Fn(&str, &Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((name, payload))) if pred(&name, &payload) => return payload,
            Ok(Some((name, payload))) if name == "file-error" => {
                panic!("file-error while waiting for {what}: {payload}")
            }
            Ok(Some(_)) => continue,
            Ok(None) => panic!("sink closed while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1_048_576.0 / d.as_secs_f64().max(1e-6)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_between_the_app_and_a_tutorial_browser_peer_arrive_intact() {
    let downloads = tempfile::tempdir().expect("tempdir");
    let src = tempfile::tempdir().expect("tempdir");
    let (ui, mut ev) = sink();
    let mut cfg = JoinConfig::new("Ann", "files-room", ServerChoice::Host);
    cfg.socket = rtcio::Options::loopback();
    cfg.host_bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    cfg.downloads = Some(downloads.path().to_path_buf());
    let (mut ann, info) = Session::join(cfg, ui).await.expect("join");
    let url = info.share_urls[0].clone();
    let aid = info.self_id.clone();

    let mut br = Browser::start().await;
    let page = br.open("web").await;
    let web = br
        .eval(
            page,
            "(o) => { rtcio.config.hashEachMessage = false; rtcio.config.recvMode = 'retain'; \
             return rtcio.join(o.url, o); }",
            json!({"url": url, "roomId": "files-room", "name": "web",
                   "perPeer": [{"name": "file", "options": {"ordered": true}}]}),
        )
        .await;
    let web_id = web["id"].as_str().expect("browser id").to_string();
    br.eval(page, "() => rtcio.receiveFiles()", json!(null))
        .await;
    br.wait_log(
        page,
        json!({"kind": "peer-connect", "peer": aid}),
        0,
        30_000,
    )
    .await;
    let w = web_id.clone();
    expect(&mut ev, "peer-connect", move |n, v| {
        n == "peer-connect" && v["id"] == w.as_str()
    })
    .await;

    // Browser → app, with a hostile name: saved as "from web.bin" in Downloads, bytes intact.
    let n_in = 3 * 1024 * 1024 + 4;
    let t0 = Instant::now();
    let sent = br
        .eval(
            page,
            "(o) => rtcio.sendFile(o)",
            json!({"peer": aid, "bytes": n_in, "name": "../../from web.bin", "seed": 11,
                   "tid": "web-1"}),
        )
        .await;
    let done = expect(&mut ev, "the browser's file", |n, v| {
        n == "file-done" && v["tid"] == "web-1" && v["direction"] == "receive"
    })
    .await;
    let took_in = t0.elapsed();
    assert_eq!(sent["bytes"], json!(n_in), "{sent}");
    assert_eq!(done["peerId"], web_id.as_str());
    assert_eq!(done["name"], "from web.bin");
    let path = PathBuf::from(done["path"].as_str().expect("path"));
    assert_eq!(path, downloads.path().join("from web.bin"));
    let got = std::fs::read(&path).expect("read");
    assert_eq!(got.len(), n_in);
    assert_eq!(sha256_hex(&got), sent["sha256"].as_str().expect("sha"));
    assert!(got == ByteGen::new(11).take(n_in), "bytes differ");

    // App → browser: the tutorial receiver gets every byte, our name and a MIME type.
    let n_out = 4 * 1024 * 1024 + 100;
    let data = ByteGen::new(12).take(n_out);
    let file = src.path().join("to-web.bin");
    std::fs::write(&file, &data).expect("write");
    let since = br.log_len(page).await;
    let t0 = Instant::now();
    let tid = ann.send_file(&web_id, &file).await.expect("send");
    let got = br
        .wait_log(
            page,
            json!({"kind": "file-received", "tid": tid}),
            since,
            60_000,
        )
        .await;
    let took_out = t0.elapsed();
    let f = &got["entry"];
    assert_eq!(f["peer"], json!(aid), "{f}");
    assert_eq!(f["name"], "to-web.bin", "{f}");
    assert_eq!(f["size"], json!(n_out), "{f}");
    assert_eq!(f["bytes"], json!(n_out), "{f}");
    assert_eq!(f["mime"], "application/octet-stream", "{f}");
    let want = sha256_hex(&data);
    assert_eq!(f["sha256"], json!(want), "{f}");
    assert_eq!(
        f["sha256Sent"],
        json!(want),
        "our eof's sha256 extension: {f}"
    );
    let t = tid.clone();
    expect(&mut ev, "our send done", move |n, v| {
        n == "file-done" && v["tid"] == t.as_str() && v["direction"] == "send"
    })
    .await;
    eprintln!(
        "browser file transfer throughput (loopback, debug build): browser→app {n_in} B in \
         {took_in:.2?} = {:.1} MB/s, app→browser {n_out} B in {took_out:.2?} = {:.1} MB/s",
        mbps(n_in, took_in),
        mbps(n_out, took_out)
    );

    br.quit().await;
    ann.leave().await;
}
