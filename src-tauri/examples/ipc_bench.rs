//! Video over Tauri IPC, measured in the real app: the `rtcio-desktop` UI in WebKitGTK on a
//! private Xvfb joins a room (synthetic sources, as with `RTCIO_FAKE_MEDIA=1`) where a headless
//! session sends a 1280×720 test pattern. After a warm-up it prints, per second of measurement:
//! frames handed to the channel and their size, Rust's `Channel::send` time per frame, the
//! IPC time per frame (handed over in Rust → arrived in the page, from the frame header), the
//! paint time per frame (`putImageData`) and frames painted per second.
//!
//! ```text
//! unshare -n sh -c 'ip link set lo up && cargo run --release -p rtcio-desktop --example ipc_bench'
//! ```
//! `BENCH_SECONDS` (default 10) sets the measurement length.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rtcio_desktop::commands::AppState;
use rtcio_desktop::media::MediaConfig;
use rtcio_desktop::session::{JoinConfig, ServerChoice, Session};
use rtcio_media::capture::xvfb::VirtualDisplay;
use serde_json::Value;
use tauri::{Listener, Manager};

const ROOM: &str = "ipc-bench";
const WARMUP: Duration = Duration::from_secs(4);

/// Fills the start form like a person would and joins; then reports the page's video counters
/// every 500 ms as a `bench-stats` event.
fn autojoin_script(url: &str) -> String {
    format!(
        r#"(function () {{
  const go = () => {{
    if (document.body.dataset.ready !== 'true') return setTimeout(go, 50);
    const $ = (id) => document.getElementById(id);
    $('name').value = 'bench';
    $('room').value = '{ROOM}';
    $('server-url-choice').checked = true;
    $('server-url').disabled = false;
    $('server-url').value = '{url}';
    $('join-button').click();
    setInterval(() => {{
      const v = window.__rtcioVideo || {{}};
      window.__TAURI_INTERNALS__.invoke('plugin:event|emit', {{
        event: 'bench-stats',
        payload: {{ painted: v.painted, dropped: v.dropped, ipcMs: v.ipcMs, paintMs: v.paintMs, at: performance.now() }},
      }});
    }}, 500);
  }};
  go();
}})();"#
    )
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    painted: f64,
    ipc_ms: f64,
    paint_ms: f64,
    frames: u64,
    bytes: u64,
    send_ns: u64,
}

fn main() -> anyhow::Result<()> {
    let xvfb = VirtualDisplay::start(1280, 800)?;
    let scratch = std::env::temp_dir().join(format!("rtcio-ipc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    // SAFETY: no other thread exists yet (Xvfb is a child process, not a thread).
    unsafe {
        std::env::set_var("DISPLAY", xvfb.display());
        std::env::remove_var("WAYLAND_DISPLAY");
        std::env::set_var("GDK_BACKEND", "x11");
        std::env::set_var("HOME", &scratch);
        std::env::set_var("XDG_DATA_HOME", scratch.join("data"));
        std::env::set_var("XDG_CONFIG_HOME", scratch.join("config"));
        std::env::set_var("XDG_CACHE_HOME", scratch.join("cache"));
        std::env::set_var("WEBKIT_DISABLE_DMABUF_RENDERER", "1");
        std::env::set_var("LIBGL_ALWAYS_SOFTWARE", "1");
        std::env::set_var("NO_AT_BRIDGE", "1");
        std::env::set_var(rtcio_desktop::media::FAKE_MEDIA_ENV, "1");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);

    // The room and the remote sender live on Tauri's runtime, like the app's own session.
    let (server, remote) = tauri::async_runtime::block_on(async {
        let server = rtcio_server::start(rtcio_server::ServerConfig {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ..rtcio_server::ServerConfig::default()
        })
        .await?;
        let mut cfg = JoinConfig::new("remote", ROOM, ServerChoice::Url(server.url()));
        cfg.socket = rtcio::Options::loopback();
        cfg.media = MediaConfig {
            capture_size: (1280, 720),
            ..MediaConfig::synthetic()
        };
        let (remote, _) = Session::join(cfg, Arc::new(|_, _| {})).await?;
        anyhow::Ok((server, remote))
    })?;
    let url = server.url();

    let (tx, rx) = mpsc::channel::<Value>();
    let script = autojoin_script(&url);
    let app = rtcio_desktop::builder()
        .setup(move |app| {
            // Only this bench's page may emit events (the app's own capability does not allow
            // it): the counters come back that way.
            app.add_capability(
                r#"{"identifier":"ipc-bench","windows":["main"],"permissions":["core:event:allow-emit"]}"#,
            )?;
            app.listen_any("bench-stats", move |ev| {
                if let Ok(v) = serde_json::from_str::<Value>(ev.payload()) {
                    let _ = tx.send(v);
                }
            });
            Ok(())
        })
        .on_page_load(move |webview, payload| {
            if matches!(payload.event(), tauri::webview::PageLoadEvent::Finished)
                && let Err(e) = webview.eval(&script)
            {
                eprintln!("cannot drive the page: {e}");
            }
        })
        .build(tauri::generate_context!())?;

    let handle = app.handle().clone();
    std::thread::spawn(move || {
        let stats = handle.state::<AppState>().frame_stats.clone();
        let sample = |v: &Value| Sample {
            at: Instant::now(),
            painted: v["painted"].as_f64().unwrap_or(0.0),
            ipc_ms: v["ipcMs"].as_f64().unwrap_or(0.0),
            paint_ms: v["paintMs"].as_f64().unwrap_or(0.0),
            frames: stats.frames.load(Ordering::Relaxed),
            bytes: stats.bytes.load(Ordering::Relaxed),
            send_ns: stats.send_ns.load(Ordering::Relaxed),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        // Warm-up: from the first painted frame on.
        let mut first: Option<Instant> = None;
        let mut start: Option<Sample> = None;
        let mut end = None;
        while Instant::now() < deadline {
            let Ok(v) = rx.recv_timeout(Duration::from_secs(2)) else {
                continue;
            };
            let s = sample(&v);
            if s.painted == 0.0 {
                continue;
            }
            let f = *first.get_or_insert(s.at);
            match start {
                None if s.at.duration_since(f) >= WARMUP => start = Some(s),
                Some(st) if s.at.duration_since(st.at) >= Duration::from_secs(seconds) => {
                    end = Some((st, s));
                    break;
                }
                _ => {}
            }
        }
        match end {
            Some((a, b)) => {
                let secs = b.at.duration_since(a.at).as_secs_f64();
                let painted = b.painted - a.painted;
                let frames = (b.frames - a.frames) as f64;
                println!(
                    "ipc_bench: {secs:.1} s measured, 2 video tiles (own preview + remote 1280x720 test pattern)"
                );
                println!(
                    "  frames handed to the channel: {:.1}/s, {:.0} KiB each",
                    frames / secs,
                    (b.bytes - a.bytes) as f64 / frames.max(1.0) / 1024.0
                );
                println!(
                    "  Rust Channel::send: {:.3} ms/frame",
                    (b.send_ns - a.send_ns) as f64 / frames.max(1.0) / 1e6
                );
                println!(
                    "  IPC (handed over -> in the page): {:.2} ms/frame",
                    (b.ipc_ms - a.ipc_ms) / painted.max(1.0)
                );
                println!(
                    "  paint (putImageData): {:.2} ms/frame",
                    (b.paint_ms - a.paint_ms) / painted.max(1.0)
                );
                println!(
                    "  frames painted: {:.1}/s ({:.0} % of those handed over)",
                    painted / secs,
                    100.0 * painted / frames.max(1.0)
                );
            }
            None => println!("ipc_bench: the page painted no video within 90 s"),
        }
        handle.exit(0);
    });

    let code = rtcio_desktop::run_app(app);
    tauri::async_runtime::block_on(async {
        remote.leave().await;
        let _ = server.shutdown().await;
    });
    drop(xvfb);
    let _ = std::fs::remove_dir_all(&scratch);
    anyhow::ensure!(code == 0, "the app ended with exit code {code}");
    Ok(())
}
