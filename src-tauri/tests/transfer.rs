//! File transfer end to end without a window: two sessions through the embedded server on
//! loopback, each receiving into its own temporary Downloads directory.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtcio_desktop::session::{JoinConfig, JoinInfo, ServerChoice, Session, UiSink};
use serde_json::Value;
use tokio::sync::mpsc;

type Events = mpsc::UnboundedReceiver<(String, Value)>;

const WAIT: Duration = Duration::from_secs(60);

fn sink() -> (UiSink, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sink: UiSink = Arc::new(move |name: &str, payload: Value| {
        let _ = tx.send((name.to_string(), payload));
    });
    (sink, rx)
}

fn config(name: &str, server: ServerChoice, downloads: &Path) -> JoinConfig {
    let mut cfg = JoinConfig::new(name, "files", server);
    cfg.socket = rtcio::Options::loopback();
    cfg.socket.connect_timeout = Duration::from_secs(5);
    cfg.host_bind = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    cfg.downloads = Some(downloads.to_path_buf());
    cfg
}

/// A UI stand-in that remembers every event it has seen.
struct Ui {
    rx: Events,
    seen: Vec<(String, Value)>,
}

impl Ui {
    fn new(rx: Events) -> Self {
        Ui {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for the first event (from now on) matching `pred`.
    async fn expect(&mut self, what: &str, pred: impl Fn(&str, &Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((name, payload))) => {
                    self.seen.push((name.clone(), payload.clone()));
                    if pred(&name, &payload) {
                        return payload;
                    }
                }
                Ok(None) => panic!("sink closed while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}; seen: {:?}", self.tail()),
            }
        }
    }

    /// Like [`Ui::expect`], but an event seen already counts too.
    async fn seen_or_expect(&mut self, what: &str, pred: impl Fn(&str, &Value) -> bool) -> Value {
        if let Some((_, v)) = self.seen.iter().find(|(n, v)| pred(n, v)) {
            return v.clone();
        }
        self.expect(what, pred).await
    }

    fn tail(&self) -> Vec<&(String, Value)> {
        self.seen.iter().rev().take(8).collect()
    }

    /// Progress byte counts seen for `tid`, in order.
    fn progress(&self, tid: &str) -> Vec<u64> {
        self.seen
            .iter()
            .filter(|(n, v)| n == "file-progress" && v["tid"] == tid)
            .map(|(_, v)| v["bytes"].as_u64().expect("bytes"))
            .collect()
    }
}

fn is(name: &'static str, tid: String, dir: &'static str) -> impl Fn(&str, &Value) -> bool {
    move |n, v| n == name && v["tid"] == tid.as_str() && v["direction"] == dir
}

/// Deterministic pseudo-random bytes (xorshift32).
fn random_bytes(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.max(1);
    let mut out = Vec::with_capacity(n + 4);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write source file");
    p
}

/// Every entry of a directory (partial files included).
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Asserts progress is monotone, ends at `size`, and was throttled (≤ 10/s plus the ends).
fn check_progress(ui: &Ui, tid: &str, size: u64, elapsed: Duration, side: &str) {
    let p = ui.progress(tid);
    assert!(!p.is_empty(), "{side}: no progress for {tid}");
    assert!(
        p.windows(2).all(|w| w[0] <= w[1]),
        "{side}: progress not monotone: {p:?}"
    );
    assert_eq!(p.first(), Some(&0), "{side}: progress starts at 0");
    assert_eq!(p.last(), Some(&size), "{side}: progress ends at the size");
    let max = (elapsed.as_secs_f64() * 10.0).ceil() as usize + 3;
    assert!(
        p.len() <= max,
        "{side}: {} progress events in {elapsed:?} (throttled to ≤ {max})",
        p.len()
    );
}

struct Pair {
    a: Session,
    b: Session,
    ia: JoinInfo,
    ib: JoinInfo,
    ua: Ui,
    ub: Ui,
    dl_a: tempfile::TempDir,
    dl_b: tempfile::TempDir,
    src: tempfile::TempDir,
}

/// Host A and guest B in one room, peer-connected.
async fn pair() -> Pair {
    let dl_a = tempfile::tempdir().expect("tempdir");
    let dl_b = tempfile::tempdir().expect("tempdir");
    let src = tempfile::tempdir().expect("tempdir");
    let (sa, ra) = sink();
    let (a, ia) = Session::join(config("Ann", ServerChoice::Host, dl_a.path()), sa)
        .await
        .expect("host joins");
    let url = ia.share_urls[0].clone();
    let (sb, rb) = sink();
    let (b, ib) = Session::join(config("Bob", ServerChoice::Url(url), dl_b.path()), sb)
        .await
        .expect("guest joins");
    let mut ua = Ui::new(ra);
    let mut ub = Ui::new(rb);
    let idb = ib.self_id.clone();
    ua.expect("peer-connect on A", move |n, v| {
        n == "peer-connect" && v["id"] == idb.as_str()
    })
    .await;
    let ida = ia.self_id.clone();
    ub.expect("peer-connect on B", move |n, v| {
        n == "peer-connect" && v["id"] == ida.as_str()
    })
    .await;
    // Each side creates its `file` channel in its own peer-connect handler; data sent before
    // the other side's channel exists is lost (webrtc-rs drops a negotiated stream nobody
    // opened), so wait until both are open, as a user dragging a file a moment later would.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(a.file_channel_ready(&ib.self_id) && b.file_channel_ready(&ia.self_id)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the file channels did not open"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Pair {
        a,
        b,
        ia,
        ib,
        ua,
        ub,
        dl_a,
        dl_b,
        src,
    }
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1_048_576.0 / d.as_secs_f64().max(1e-6)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_both_ways_intact_with_progress_and_collision_names() {
    let mut p = pair().await;
    let size_ab = 6 * 1024 * 1024 + 123; // not a multiple of the chunk size
    let size_ba = 5 * 1024 * 1024;
    let data_ab = random_bytes(size_ab, 7);
    let data_ba = random_bytes(size_ba, 8);
    let src_ab = write_file(p.src.path(), "from-ann.bin", &data_ab);
    let src_ba = write_file(p.src.path(), "from bob.dat", &data_ba);

    // Both at once: A → B and B → A.
    let t0 = Instant::now();
    let tid_ab =
        p.a.send_file(&p.ib.self_id, &src_ab)
            .await
            .expect("A sends");
    let tid_ba =
        p.b.send_file(&p.ia.self_id, &src_ba)
            .await
            .expect("B sends");
    assert_ne!(tid_ab, tid_ba);

    let done_b =
        p.ub.seen_or_expect("B received", is("file-done", tid_ab.clone(), "receive"))
            .await;
    let elapsed_ab = t0.elapsed();
    let done_a =
        p.ua.seen_or_expect("A received", is("file-done", tid_ba.clone(), "receive"))
            .await;
    let elapsed_ba = t0.elapsed();
    p.ua.seen_or_expect("A's send done", is("file-done", tid_ab.clone(), "send"))
        .await;
    p.ub.seen_or_expect("B's send done", is("file-done", tid_ba.clone(), "send"))
        .await;
    eprintln!(
        "file transfer throughput (both directions at once, loopback, debug build): \
         A→B {size_ab} B in {elapsed_ab:.2?} = {:.1} MB/s, B→A {size_ba} B in {elapsed_ba:.2?} = {:.1} MB/s",
        mbps(size_ab, elapsed_ab),
        mbps(size_ba, elapsed_ba)
    );

    for (done, dir, name, data, peer) in [
        (
            &done_b,
            p.dl_b.path(),
            "from-ann.bin",
            &data_ab,
            &p.ia.self_id,
        ),
        (
            &done_a,
            p.dl_a.path(),
            "from bob.dat",
            &data_ba,
            &p.ib.self_id,
        ),
    ] {
        assert_eq!(done["name"], name);
        assert_eq!(done["peerId"], peer.as_str());
        let path = PathBuf::from(done["path"].as_str().expect("path"));
        assert_eq!(path, dir.join(name), "saved in the Downloads dir");
        let got = std::fs::read(&path).expect("read received file");
        assert_eq!(got.len(), data.len());
        assert!(got == *data, "{name}: bytes differ");
        assert_eq!(
            listing(dir),
            vec![name.to_string()],
            "no partial files left"
        );
    }
    check_progress(&p.ua, &tid_ab, size_ab as u64, elapsed_ab, "A send");
    check_progress(&p.ub, &tid_ab, size_ab as u64, elapsed_ab, "B receive");
    check_progress(&p.ub, &tid_ba, size_ba as u64, elapsed_ba, "B send");
    check_progress(&p.ua, &tid_ba, size_ba as u64, elapsed_ba, "A receive");
    assert!(
        !p.ua
            .seen
            .iter()
            .chain(&p.ub.seen)
            .any(|(n, _)| n == "file-error"),
        "no errors"
    );

    // The same name again: "from-ann (1).bin", then "(2)"; an empty file works too.
    for want in ["from-ann (1).bin", "from-ann (2).bin"] {
        let t0 = Instant::now();
        let tid = p.a.send_file(&p.ib.self_id, &src_ab).await.expect("again");
        let done =
            p.ub.expect("B received again", is("file-done", tid, "receive"))
                .await;
        eprintln!(
            "file transfer throughput (one way, loopback, debug build): A→B {size_ab} B in \
             {:.2?} = {:.1} MB/s",
            t0.elapsed(),
            mbps(size_ab, t0.elapsed())
        );
        assert_eq!(done["name"], want);
        let path = PathBuf::from(done["path"].as_str().expect("path"));
        assert_eq!(path, p.dl_b.path().join(want));
        assert!(std::fs::read(&path).expect("read") == data_ab);
    }
    let empty = write_file(p.src.path(), "empty.txt", b"");
    let tid = p.a.send_file(&p.ib.self_id, &empty).await.expect("empty");
    let done =
        p.ub.expect("empty file", is("file-done", tid, "receive"))
            .await;
    let path = PathBuf::from(done["path"].as_str().expect("path"));
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), 0);

    // Typed errors for what cannot be sent.
    let err =
        p.a.send_file("no-such-peer", &src_ab)
            .await
            .expect_err("unknown peer");
    assert_eq!(err.kind(), "file");
    let err =
        p.a.send_file(&p.ib.self_id, &p.src.path().join("missing"))
            .await
            .expect_err("missing file");
    assert_eq!(err.kind(), "file");
    let err =
        p.a.send_file(&p.ib.self_id, p.src.path())
            .await
            .expect_err("a directory");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    assert_eq!(
        p.a.cancel_transfer("nope").expect_err("unknown tid").kind(),
        "file"
    );

    p.b.leave().await;
    p.a.leave().await;
}

/// Waits until the receiver has some bytes of `tid` (so the transfer is really under way).
async fn under_way(ui: &mut Ui, tid: &str) {
    let t = tid.to_string();
    ui.expect("receive progress > 0", move |n, v| {
        n == "file-progress"
            && v["tid"] == t.as_str()
            && v["direction"] == "receive"
            && v["bytes"].as_u64().unwrap_or(0) > 0
    })
    .await;
}

/// A file large enough to still be running when the test interferes.
const BIG: usize = 48 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_cancel_stops_both_sides_and_removes_the_partial_file() {
    let mut p = pair().await;
    let src = write_file(p.src.path(), "big.bin", &random_bytes(BIG, 3));
    let tid = p.a.send_file(&p.ib.self_id, &src).await.expect("send");
    under_way(&mut p.ub, &tid).await;
    assert_eq!(
        listing(p.dl_b.path()).len(),
        1,
        "a partial file while receiving"
    );
    assert!(listing(p.dl_b.path())[0].ends_with(".part"));

    p.a.cancel_transfer(&tid).expect("cancel");
    let ea =
        p.ua.expect("A error", is("file-error", tid.clone(), "send"))
            .await;
    assert_eq!(ea["message"], "cancelled");
    let eb =
        p.ub.expect("B error", is("file-error", tid.clone(), "receive"))
            .await;
    assert!(
        eb["message"]
            .as_str()
            .unwrap_or("")
            .contains("cancelled by the other side"),
        "{eb}"
    );
    assert_eq!(
        listing(p.dl_b.path()),
        Vec::<String>::new(),
        "no partial file"
    );
    assert!(!p.ub.seen.iter().any(|(n, _)| n == "file-done"));

    // The channel still works afterwards.
    let small = write_file(p.src.path(), "after.txt", b"still here");
    let tid = p.a.send_file(&p.ib.self_id, &small).await.expect("send");
    let done =
        p.ub.expect("small file", is("file-done", tid, "receive"))
            .await;
    let path = PathBuf::from(done["path"].as_str().expect("path"));
    assert_eq!(std::fs::read(path).expect("read"), b"still here");

    p.b.leave().await;
    p.a.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_cancel_stops_the_sender() {
    let mut p = pair().await;
    let src = write_file(p.src.path(), "big.bin", &random_bytes(BIG, 4));
    let tid = p.a.send_file(&p.ib.self_id, &src).await.expect("send");
    under_way(&mut p.ub, &tid).await;
    p.b.cancel_transfer(&tid)
        .expect("cancel on the receiving side");
    let eb =
        p.ub.expect("B error", is("file-error", tid.clone(), "receive"))
            .await;
    assert_eq!(eb["message"], "cancelled");
    assert_eq!(
        listing(p.dl_b.path()),
        Vec::<String>::new(),
        "no partial file"
    );
    let ea =
        p.ua.expect("A error", is("file-error", tid.clone(), "send"))
            .await;
    assert!(
        ea["message"]
            .as_str()
            .unwrap_or("")
            .contains("cancelled by the other side"),
        "{ea}"
    );
    assert!(!p.ua.seen.iter().any(|(n, _)| n == "file-done"));
    p.b.leave().await;
    p.a.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_leaving_mid_transfer_is_an_error_on_both_sides() {
    let mut p = pair().await;
    let src = write_file(p.src.path(), "big.bin", &random_bytes(BIG, 5));
    // The guest sends to the host, then leaves mid-way.
    let tid = p.b.send_file(&p.ia.self_id, &src).await.expect("send");
    under_way(&mut p.ua, &tid).await;
    let Pair {
        a,
        b,
        mut ua,
        mut ub,
        dl_a,
        ..
    } = p;
    b.leave().await;
    let eb = ub
        .expect("B error", is("file-error", tid.clone(), "send"))
        .await;
    assert!(
        eb["message"].as_str().unwrap_or("").contains("left"),
        "{eb}"
    );
    let ea = ua
        .expect("A error", is("file-error", tid.clone(), "receive"))
        .await;
    // Either the sender's goodbye `cancel` or the closing connection ends it first.
    let msg = ea["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("the sender left the room") || msg.contains("connection to the peer closed"),
        "{ea}"
    );
    assert_eq!(
        listing(dl_a.path()),
        Vec::<String>::new(),
        "no partial file"
    );
    let seen: HashMap<&str, usize> = ua.seen.iter().fold(HashMap::new(), |mut m, (n, _)| {
        *m.entry(n.as_str()).or_default() += 1;
        m
    });
    assert_eq!(seen.get("file-done"), None);
    a.leave().await;
}

/// A hostile or confused sender speaking the wire protocol directly (B's own `file` channel,
/// the very object B's transfers use): path names, more bytes than announced, an `eof` for an
/// unknown transfer, chunks before any `meta`, an absurd size. A reports each clearly, writes
/// nothing outside its Downloads directory and leaves no partial file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_reported_and_never_escapes_downloads() {
    let mut p = pair().await;
    let ch =
        p.b.socket()
            .peer(&p.ia.self_id)
            .create_channel("file", rtcio::ChannelOptions::reliable())
            .await
            .expect("B's file channel");
    let send = |meta: Value| {
        let ch = ch.clone();
        async move { ch.emit_wait("meta", vec![meta]).await.expect("meta") }
    };

    // Chunks before meta are dropped; then a file whose name climbs out of the directory and
    // which carries more than it announced.
    assert!(ch.send(vec![1u8; 100]).await, "chunk before meta");
    send(serde_json::json!({"tid": "h1", "name": "../../escape.txt", "size": 10})).await;
    assert!(ch.send(vec![7u8; 8]).await);
    assert!(ch.send(vec![7u8; 8]).await);
    let e =
        p.ua.expect("overflow error", is("file-error", "h1".into(), "receive"))
            .await;
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("more than the announced 10 bytes"),
        "{e}"
    );
    // A tells B to stop (the `cancel` extension).
    let mut cancels = ch.subscribe("cancel");
    // Its eof afterwards is dropped quietly; an eof for a tid nobody announced is an error.
    ch.emit_wait("eof", vec![serde_json::json!({"tid": "h1"})])
        .await
        .expect("eof");
    ch.emit_wait("eof", vec![serde_json::json!({"tid": "ghost"})])
        .await
        .expect("eof");
    let e =
        p.ua.expect("unknown tid", is("file-error", "ghost".into(), "receive"))
            .await;
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("unknown transfer"),
        "{e}"
    );

    // An absurd size is refused at once.
    send(serde_json::json!({"tid": "h2", "name": "huge", "size": 1u64 << 60})).await;
    let e =
        p.ua.expect("too large", is("file-error", "h2".into(), "receive"))
            .await;
    assert!(
        e["message"].as_str().unwrap_or("").contains("too large"),
        "{e}"
    );
    tokio::time::timeout(WAIT, async {
        while let Some(c) = cancels.recv().await {
            if c.arg()["tid"] == "h2" {
                return;
            }
        }
    })
    .await
    .expect("a cancel for h2");

    // A well-formed file with the same hostile name lands inside Downloads as "escape.txt",
    // checked against the sha256 in eof (a wrong one is refused).
    send(serde_json::json!({"tid": "h3", "name": "../../escape.txt", "size": 4})).await;
    assert!(ch.send(b"abcd".to_vec()).await);
    ch.emit_wait(
        "eof",
        vec![serde_json::json!({"tid": "h3", "sha256": "00".repeat(32)})],
    )
    .await
    .expect("eof");
    let e =
        p.ua.expect("checksum", is("file-error", "h3".into(), "receive"))
            .await;
    assert!(
        e["message"].as_str().unwrap_or("").contains("SHA-256"),
        "{e}"
    );
    send(serde_json::json!({"tid": "h4", "name": "..\\..\\escape.txt", "size": 4})).await;
    assert!(ch.send(b"abcd".to_vec()).await);
    ch.emit_wait("eof", vec![serde_json::json!({"tid": "h4"})])
        .await
        .expect("eof");
    let done =
        p.ua.expect("h4 done", is("file-done", "h4".into(), "receive"))
            .await;
    assert_eq!(
        PathBuf::from(done["path"].as_str().expect("path")),
        p.dl_a.path().join("escape.txt")
    );
    assert_eq!(listing(p.dl_a.path()), vec!["escape.txt".to_string()]);
    let parent = p.dl_a.path().parent().expect("parent");
    assert!(!parent.join("escape.txt").exists());

    p.b.leave().await;
    p.a.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_leaving_mid_transfer_is_an_error_on_both_sides() {
    let mut p = pair().await;
    let src = write_file(p.src.path(), "big.bin", &random_bytes(BIG, 6));
    let tid = p.a.send_file(&p.ib.self_id, &src).await.expect("send");
    under_way(&mut p.ub, &tid).await;
    let Pair {
        a,
        b,
        mut ua,
        mut ub,
        dl_b,
        ..
    } = p;
    b.leave().await;
    // The receiver's own partial file is gone once it has left.
    let eb = ub
        .expect("B error", is("file-error", tid.clone(), "receive"))
        .await;
    assert!(
        eb["message"].as_str().unwrap_or("").contains("left"),
        "{eb}"
    );
    assert_eq!(
        listing(dl_b.path()),
        Vec::<String>::new(),
        "no partial file"
    );
    let ea = ua
        .expect("A error", is("file-error", tid.clone(), "send"))
        .await;
    assert!(
        ea["message"].as_str().unwrap_or("").contains("closed"),
        "{ea}"
    );
    assert!(!ua.seen.iter().any(|(n, _)| n == "file-done"));
    a.leave().await;
}
