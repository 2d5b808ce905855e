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

/// Our `cancel` extension against a tutorial peer that ignores it: cancelling a file from the
/// browser drops the rest of it here (no partial file) and its next file arrives intact;
/// cancelling our own send leaves the browser with a partial buffer it discards at our next
/// `meta`, so our next file arrives intact too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_work_against_a_peer_that_ignores_them() {
    let downloads = tempfile::tempdir().expect("tempdir");
    let src = tempfile::tempdir().expect("tempdir");
    let (ui, mut ev) = sink();
    let mut cfg = JoinConfig::new("Ann", "cancel-room", ServerChoice::Host);
    cfg.socket = rtcio::Options::loopback();
    cfg.host_bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    cfg.downloads = Some(downloads.path().to_path_buf());
    let (mut ann, info) = Session::join(cfg, ui).await.expect("join");
    let aid = info.self_id.clone();
    let mut br = Browser::start().await;
    let page = br.open("web").await;
    let web = br
        .eval(
            page,
            "(o) => { rtcio.config.hashEachMessage = false; rtcio.config.recvMode = 'retain'; \
             return rtcio.join(o.url, o); }",
            json!({"url": info.share_urls[0], "roomId": "cancel-room", "name": "web",
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

    // The browser sends 32 MiB; we cancel once bytes arrive. It keeps sending (it ignores our
    // cancel); we drop the rest and its eof quietly.
    br.eval(
        page,
        "(o) => { window.__big = rtcio.sendFile(o); return true; }",
        json!({"peer": aid, "bytes": 32 * 1024 * 1024, "name": "big.bin", "tid": "big",
               "seed": 21}),
    )
    .await;
    expect(&mut ev, "bytes of the big file", |n, v| {
        n == "file-progress" && v["tid"] == "big" && v["bytes"].as_u64().unwrap_or(0) > 0
    })
    .await;
    ann.cancel_transfer("big").expect("cancel");
    let e = expect(&mut ev, "our cancel", |n, v| {
        n == "file-error" && v["tid"] == "big" && v["direction"] == "receive"
    })
    .await;
    assert_eq!(e["message"], "cancelled");
    br.eval(page, "() => window.__big.then((r) => r.bytes)", json!(null))
        .await;
    let n = 100_000;
    let sent = br
        .eval(
            page,
            "(o) => rtcio.sendFile(o)",
            json!({"peer": aid, "bytes": n, "name": "small.bin", "tid": "small", "seed": 22}),
        )
        .await;
    let done = expect(&mut ev, "the next file", |n, v| {
        n == "file-done" && v["tid"] == "small"
    })
    .await;
    let path = PathBuf::from(done["path"].as_str().expect("path"));
    let got = std::fs::read(&path).expect("read");
    assert_eq!(sha256_hex(&got), sent["sha256"].as_str().expect("sha"));
    let names: Vec<String> = std::fs::read_dir(downloads.path())
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["small.bin".to_string()], "no partial big.bin");

    // We send 48 MiB and cancel; the browser logs our cancel, then gets our next file intact.
    let big = src.path().join("big-out.bin");
    std::fs::write(&big, ByteGen::new(23).take(48 * 1024 * 1024)).expect("write");
    let since = br.log_len(page).await;
    let tid = ann.send_file(&web_id, &big).await.expect("send");
    let t = tid.clone();
    expect(&mut ev, "our send under way", move |n, v| {
        n == "file-progress" && v["tid"] == t.as_str() && v["bytes"].as_u64().unwrap_or(0) > 0
    })
    .await;
    ann.cancel_transfer(&tid).expect("cancel");
    let t = tid.clone();
    expect(&mut ev, "our send cancelled", move |n, v| {
        n == "file-error" && v["tid"] == t.as_str() && v["direction"] == "send"
    })
    .await;
    br.wait_log(
        page,
        json!({"kind": "file-cancel", "tid": tid}),
        since,
        30_000,
    )
    .await;
    let small = src.path().join("small-out.bin");
    let data = ByteGen::new(24).take(200_000);
    std::fs::write(&small, &data).expect("write");
    let tid2 = ann.send_file(&web_id, &small).await.expect("send");
    let got = br
        .wait_log(
            page,
            json!({"kind": "file-received", "tid": tid2}),
            since,
            60_000,
        )
        .await;
    let f = &got["entry"];
    assert_eq!(f["bytes"], json!(data.len()), "{f}");
    assert_eq!(f["sha256"], json!(sha256_hex(&data)), "{f}");
    assert!(
        br.eval(
            page,
            "(o) => rtcio.files.every((f) => f.tid !== o.tid)",
            json!({"tid": tid})
        )
        .await
        .as_bool()
        .unwrap_or(false),
        "the cancelled file never completed in the browser"
    );

    br.quit().await;
    ann.leave().await;
}
