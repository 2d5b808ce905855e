//! Video over Tauri IPC, measured in the real app: the `rtcio-desktop` UI in WebKitGTK on a
//! private Xvfb joins a room (synthetic sources, as with `RTCIO_FAKE_MEDIA=1`) where 1, 2 and
//! then 4 remotes each send 1280×720 30 fps video. The remotes and the signaling server run in
//! a second process (this example in its `remotes` role), so the CPU figure is the app
//! process's alone. Each remote count runs twice, back to back: remote frames handed to the page
//! as RGBA (`RTCIO_FRAME_FORMAT=rgba`, painted with `putImageData`) and as I420 (painted by
//! WebGL 2, the app's default); `BENCH_FORMATS` picks. After a warm-up each run prints: batches
//! of frames the page pulled, their size and frames, IPC messages (pulls and their replies) per
//! painted frame, the frames replaced while waiting, the IPC time per frame (encoded in Rust →
//! arrived in the page, from the frame header: waiting for the page's pull included), the
//! paint time per frame, frames painted per second per remote tile, the app process's and its
//! WebKit processes' CPU and the load average; the end prints the table of all runs.
//!
//! ```text
//! cargo build --release -p rtcio-cli
//! unshare -n sh -c 'ip link set lo up && cargo run --release -p rtcio-desktop --example ipc_bench'
//! ```
//! The remotes are `rtcio` processes (`BENCH_CLI`, default the `rtcio` next to this example's
//! directory: build it in the same profile) sending a pre-encoded 1 s 720p30 H.264 file that the
//! bench writes first (the moving test pattern; `BENCH_FILE=x.h264` sends another): remotes that
//! cost nothing to produce, so the two cores measure the app (issue 13's painting figure). A file
//! cannot answer keyframe requests, so a receiver starts at the file's next loop. The remotes
//! are send-only (`rtcio join --no-receive`: they drop each other's video undecoded), so only
//! the app decodes. `BENCH_SYNTHETIC=1` makes them in-process sessions encoding the test
//! pattern (and decoding each other) instead.
//! The remotes process (and its `rtcio` children) runs at nice 19 (`BENCH_NICE`, 0 = normal):
//! it stands for other machines and must not starve the app it measures.
//! `BENCH_SECONDS` (default 10) sets the measurement length, `BENCH_REMOTES` (default `1,2,4`)
//! the runs, `BENCH_FORMATS` (default `rgba,i420`) the formats, `BENCH_SCREENSHOT=DIR` saves
//! the screen at the end of each run (imagemagick `import`), `BENCH_WINDOW=WxH` sizes the
//! window and the display (default: the app's 1200 × 780 window on 1280 × 800; 1920x1080 makes
//! 4 remotes and our preview 3 + 2 cells near half of 720p, which get exactly half, see
//! `media::i420_scale_target`). `RTCIO_I420_SCALER=tile` scales to each tile's own size
//! instead (the before of that rule). `BENCH_ENVS` runs each count and format once per set of
//! the app's environment variables (`K=V` separated by spaces, sets by `|`, `||` the
//! environment as it is), back to back with one binary: `LP_NUM_THREADS`, `GALLIUM_DRIVER`,
//! `WEBKIT_*` (the app role sets `WEBKIT_DISABLE_DMABUF_RENDERER=1` and
//! `LIBGL_ALWAYS_SOFTWARE=1` only when a set does not).
//!
//! `BENCH_ROLE=scale` runs no app: it prints the cost of scaling a 1280×720 picture into the
//! IPC buffer of tiles at and near half and a quarter of it, fast_image_resize at the tile's
//! own size against the exact half / quarter block average the app now sends them
//! (`BENCH_FRAMES` per round, default 300), and the load average. `RTCIO_I420_SCALER=resizer`
//! in the environment of a normal run makes the app scale with fast_image_resize only.
//!
//! The active-speaker screenshot (`docs/screenshot-active-speaker.png`): `BENCH_TALKERS=1`
//! makes only the first remote send its tone (the others are silent, microphone off), so the
//! speaking ring lights that remote and our own tile (the app sends its tone too) and not the
//! others; `BENCH_SIZE=640x360` sends smaller pictures; `BENCH_SCREENSHOT_FILE=PATH` names the
//! PNG:
//!
//! ```text
//! unshare -n sh -c 'ip link set lo up && BENCH_SYNTHETIC=1 BENCH_REMOTES=2 BENCH_FORMATS=i420 \
//!   BENCH_TALKERS=1 BENCH_SIZE=640x360 BENCH_SECONDS=3 BENCH_SCREENSHOT=/tmp \
//!   BENCH_SCREENSHOT_FILE=docs/screenshot-active-speaker.png \
//!   cargo run -p rtcio-desktop --example ipc_bench'
//! ```

use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
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
///
/// `tuning` (`BENCH_PAGE_TUNING`, a JSON object, e.g. `{"earlyPull":true}`) becomes the page's
/// `window.__rtcioVideoTuning`: switches of the page's frame loop, for back-to-back pairs with
/// one build.
fn autojoin_script(url: &str, tuning: &str) -> String {
    format!(
        r#"(function () {{
  window.__rtcioVideoTuning = {tuning};
  const go = () => {{
    if (document.body.dataset.ready !== 'true') return setTimeout(go, 50);
    const $ = (id) => document.getElementById(id);
    $('name').value = 'bench';
    $('room').value = '{ROOM}';
    $('server-url-choice').checked = true;
    $('server-url').disabled = false;
    $('server-url').value = '{url}';
    $('join-button').click();
    // Whether this webview offers WebGL (the I420 frames are painted with WebGL 2).
    const probe = document.createElement('canvas');
    const ctx = probe.getContext('webgl2') || probe.getContext('webgl');
    const info = ctx && ctx.getExtension('WEBGL_debug_renderer_info');
    // The kind and the GL renderer (llvmpipe / softpipe: software GL).
    const gl = (ctx ? (ctx instanceof WebGL2RenderingContext ? 'webgl2' : 'webgl') : 'none')
      + (info ? ' ' + ctx.getParameter(info.UNMASKED_RENDERER_WEBGL) : '');
    setInterval(() => {{
      const v = window.__rtcioVideo || {{}};
      window.__TAURI_INTERNALS__.invoke('plugin:event|emit', {{
        event: 'bench-stats',
        payload: {{ painted: v.painted, dropped: v.dropped, ipcMs: v.ipcMs, paintMs: v.paintMs, perKey: v.perKey, drawnPerKey: v.drawnPerKey, bytesPerKey: v.bytesPerKey, webgl: v.webgl, i420: v.i420, messages: v.messages, pulls: v.pulls, transport: v.transport, stages: v.stages, gl, at: performance.now() }},
      }});
    }}, 500);
  }};
  go();
}})();"#
    )
}

#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    painted: f64,
    per_key: serde_json::Map<String, Value>,
    /// Frames that reached the screen per tile (`videoStats.drawnPerKey`; the shared video
    /// layer draws a tile at most once per animation frame, so this can be below `per_key`).
    drawn_per_key: serde_json::Map<String, Value>,
    bytes_per_key: serde_json::Map<String, Value>,
    webgl: f64,
    i420: f64,
    /// `next_frames` replies the page received and pulls it made.
    messages: f64,
    pulls: f64,
    /// `websocket` or `ipc` (the page's `videoStats.transport`).
    transport: String,
    /// The page's per-stage sums (`videoStats.stages`: ms and counts).
    stages: serde_json::Map<String, Value>,
    cpu_ticks: u64,
    web_ticks: u64,
    remote_ticks: u64,
    ipc_ms: f64,
    paint_ms: f64,
    flow: rtcio_desktop::media::FlowStats,
    gl: String,
    /// The 1-minute load average when sampled.
    load: String,
}

/// User + system CPU ticks of a process (`/proc/<pid>/stat` fields 14 and 15).
fn cpu_ticks(pid: &str) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // The command name may hold spaces; fields are counted after its closing parenthesis.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// CPU ticks of every descendant of `root` whose command name starts with `prefix` (the
/// app's WebKit web and network processes paint and fetch the frames; the remotes' `rtcio`
/// processes send them).
fn descendant_ticks(root: u32, prefix: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    // (pid, parent, command name, ticks) of every process.
    let procs: Vec<(u32, u32, String, u64)> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1.to_string();
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid, comm, cpu_ticks(&pid.to_string())))
        })
        .collect();
    let mut family = vec![root];
    // Bounded: a process tree is at most as deep as the process count.
    for _ in 0..procs.len() {
        let more: Vec<u32> = procs
            .iter()
            .filter(|p| family.contains(&p.1) && !family.contains(&p.0))
            .map(|p| p.0)
            .collect();
        if more.is_empty() {
            break;
        }
        family.extend(more);
    }
    procs
        .iter()
        .filter(|p| p.0 != root && family.contains(&p.0) && p.2.starts_with(prefix))
        .map(|p| p.3)
        .sum()
}

/// `/proc` reports CPU time in USER_HZ ticks, which the Linux ABI fixes at 100 per second.
fn clock_ticks_per_second() -> f64 {
    100.0
}

fn main() -> anyhow::Result<()> {
    match std::env::var("BENCH_ROLE").as_deref() {
        Ok("remotes") => remotes(),
        Ok("app") => app(),
        Ok("scale") => scale(),
        _ => driver(),
    }
}

/// `BENCH_ROLE=scale`: the cost of scaling one decoded 1280 × 720 picture (rows padded to a
/// decoder's stride) into a tile's IPC buffer: before, the tile's own size through
/// fast_image_resize's convolution (`encode_i420_resized`); after, the size
/// `i420_scale_target` picks through `encode_i420_scaled` (the exact half or quarter for tiles
/// near them), in alternating rounds; prints ns per frame (median of the rounds) and the load
/// average. The 560 × 315 tile takes the resizer on both sides (a control).
fn scale() -> anyhow::Result<()> {
    use rtcio_desktop::media::{encode_i420_resized, encode_i420_scaled};
    let (w, h, sy, sc) = (1280usize, 720usize, 1344usize, 672usize);
    let mut seed = 0x2545_f491_u32;
    let mut plane = |pw: usize, ph: usize, stride: usize| -> Vec<u8> {
        (0..stride * ph)
            .map(|i| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                if i % stride < pw {
                    (seed >> 24) as u8
                } else {
                    0
                }
            })
            .collect()
    };
    let pic = rtcio_media::I420Frame::from_planes(
        w as u32,
        h as u32,
        plane(w, h, sy),
        plane(w / 2, h / 2, sc),
        plane(w / 2, h / 2, sc),
        (sy, sc, sc),
        Duration::ZERO,
    )?;
    let frames: u32 = std::env::var("BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut resizer = fast_image_resize::Resizer::new();
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("scaling a 1280x720 picture into the IPC buffer, {frames} frames x 7 rounds");
    println!("load before: {}", load().trim());
    println!(
        "| tile | before: size, resizer ns/frame | after: size (i420_scale_target), encode_i420_scaled ns/frame | after/before |"
    );
    println!("|---|---|---|---|");
    // Before: the tile's own fitted size through fast_image_resize; after: what the app does
    // now. 626 x 352 is a 3 + 2 grid cell of a 1920 x 1200 window, 300 x 168 a small
    // thumbnail, 560 x 315 a 2 x 2 cell of a 1280 x 720 window (far from both: the control).
    for tile in [(640u32, 360u32), (626, 352), (300, 168), (560, 315)] {
        let old_size = rtcio_media::convert::fit_within(1280, 720, tile.0, tile.1);
        let new_size =
            rtcio_desktop::media::i420_scale_target((1280, 720), tile).unwrap_or((1280, 720));
        let mut old = Vec::new();
        let mut new = Vec::new();
        for _ in 0..7 {
            for (times, resize) in [(&mut old, true), (&mut new, false)] {
                let start = Instant::now();
                for _ in 0..frames {
                    let f = if resize {
                        encode_i420_resized("k", &pic, old_size, &mut resizer)?
                    } else {
                        encode_i420_scaled("k", &pic, new_size, &mut resizer)?
                    };
                    std::hint::black_box(f);
                }
                times.push(start.elapsed().as_nanos() as f64 / f64::from(frames));
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (o, n) = (median(&mut old), median(&mut new));
        println!(
            "| {}x{} | {}x{}, {o:.0} | {}x{}, {n:.0} | {:.2} |",
            tile.0,
            tile.1,
            old_size.0,
            old_size.1,
            new_size.0,
            new_size.1,
            n / o
        );
    }
    println!("load after: {}", load().trim());
    Ok(())
}

/// Runs the app role once per remote count and format, each in a fresh process (GTK allows one
/// event loop per process), the formats of one count back to back; then prints the table.
fn driver() -> anyhow::Result<()> {
    let runs = std::env::var("BENCH_REMOTES").unwrap_or_else(|_| "1,2,4".into());
    let formats = std::env::var("BENCH_FORMATS").unwrap_or_else(|_| "rgba,i420".into());
    // `BENCH_TRANSPORTS`: how the frames reach the page, `websocket` (the app's loopback frame
    // socket, its default) and/or `ipc` (`next_frames`, `RTCIO_FRAME_TRANSPORT=ipc`), each
    // pair back to back.
    let transports = std::env::var("BENCH_TRANSPORTS").unwrap_or_else(|_| "websocket".into());
    // `BENCH_PAGE_TUNINGS`: page switches (`BENCH_PAGE_TUNING` objects) separated by `|`, each
    // run back to back in that order (default `{}`: the page as it ships).
    let tunings: Vec<String> = std::env::var("BENCH_PAGE_TUNINGS")
        .unwrap_or_else(|_| "{}".into())
        .split('|')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    // `BENCH_ENVS`: sets of environment variables for the app (`K=V` separated by spaces; the
    // sets by `|`, an empty set is the environment as it is), each run back to back in that order
    // with the same binary: e.g. `|LP_NUM_THREADS=1|WEBKIT_DISABLE_COMPOSITING_MODE=1`. The
    // ratios compare each set with the last run of the first set before it.
    let envs: Vec<(String, Vec<(String, String)>)> = std::env::var("BENCH_ENVS")
        .unwrap_or_default()
        .split('|')
        .map(|set| {
            let vars = set
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (set.trim().to_string(), vars)
        })
        .collect();
    let exe = std::env::current_exe()?;
    // The remotes send a pre-encoded file unless told otherwise.
    let scratch = std::env::temp_dir().join(format!("rtcio-ipc-bench-file-{}", std::process::id()));
    let synthetic = std::env::var("BENCH_SYNTHETIC").is_ok_and(|v| v == "1");
    let file = match std::env::var("BENCH_FILE") {
        Ok(f) => Some(std::path::PathBuf::from(f)),
        Err(_) if synthetic => None,
        Err(_) => {
            std::fs::create_dir_all(&scratch)?;
            let path = scratch.join("pattern-720p30.h264");
            write_test_file(&path)?;
            Some(path)
        }
    };
    if file.is_some() {
        let cli = cli_path();
        anyhow::ensure!(
            cli.exists(),
            "{} is missing: build it in this profile (cargo build [--release] -p rtcio-cli) or set BENCH_CLI",
            cli.display()
        );
    }
    let mut results: Vec<Value> = Vec::new();
    for n in runs
        .split(',')
        .filter_map(|n| n.trim().parse::<usize>().ok())
    {
        for format in formats.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            for (transport, tuning, env) in transports
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .flat_map(|t| tunings.iter().map(move |u| (t, u.as_str())))
                .flat_map(|(t, u)| envs.iter().map(move |e| (t, u, e)))
            {
                let (transport, tuning, (env_label, env_vars)) = (transport, tuning, env);
                let mut cmd = Command::new(&exe);
                cmd.env("BENCH_PAGE_TUNING", tuning);
                cmd.env("BENCH_ENV_LABEL", env_label);
                cmd.envs(env_vars.iter().map(|(k, v)| (k, v)));
                cmd.env("BENCH_ROLE", "app")
                    .env("BENCH_REMOTES", n.to_string())
                    .env("BENCH_FORMAT", format)
                    .stdout(Stdio::piped());
                if transport == "ipc" {
                    cmd.env(rtcio_desktop::frame_socket::FRAME_TRANSPORT_ENV, "ipc");
                } else {
                    cmd.env_remove(rtcio_desktop::frame_socket::FRAME_TRANSPORT_ENV);
                }
                if let Some(f) = &file {
                    cmd.env("BENCH_FILE", f);
                }
                // The page asks for I420 when it has WebGL 2; `rgba` makes the app refuse it.
                if format == "rgba" {
                    cmd.env(rtcio_desktop::media::FRAME_FORMAT_ENV, "rgba");
                } else {
                    cmd.env_remove(rtcio_desktop::media::FRAME_FORMAT_ENV);
                }
                let mut child = cmd.spawn()?;
                if let Some(out) = child.stdout.take() {
                    for line in BufReader::new(out).lines() {
                        let line = line?;
                        match line.strip_prefix(RESULT_PREFIX) {
                            Some(json) => results.push(serde_json::from_str(json)?),
                            None => println!("{line}"),
                        }
                    }
                }
                let status = child.wait()?;
                anyhow::ensure!(
                    status.success(),
                    "the run with {n} remotes ({format}, {transport}, page {tuning}, env {env_label}) failed: {status}"
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    print_table(&results);
    Ok(())
}

/// Prefix of the line an app run prints its figures on (read by the driver).
const RESULT_PREFIX: &str = "BENCH_RESULT ";

/// The `rtcio` command line the file-sending remotes run.
fn cli_path() -> std::path::PathBuf {
    std::env::var_os("BENCH_CLI")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().unwrap_or_default();
            exe.parent()
                .and_then(|d| d.parent())
                .map(|d| d.join("rtcio"))
                .unwrap_or_default()
        })
}

/// Writes one second (one IDR, 30 frames) of the moving 1280×720 test pattern as raw H.264:
/// what a 720p30 camera call sends, encoded once here instead of by every remote.
fn write_test_file(path: &std::path::Path) -> anyhow::Result<()> {
    use rtcio_media::VideoSource as _;
    let mut source = rtcio_media::TestPatternSource::new(rtcio_media::TestPatternConfig {
        width: 1280,
        height: 720,
        fps: 30.0,
        paced: false,
    })?;
    let mut encoder = rtcio_media::H264Encoder::new(rtcio_media::H264Config {
        bitrate_bps: 2_000_000,
        ..rtcio_media::H264Config::default()
    })?;
    let mut out = Vec::new();
    for _ in 0..30 {
        if let Some(f) = encoder.encode(&source.next_frame()?)? {
            out.extend_from_slice(&f.data);
        }
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// The before / after table: each remote count's RGBA and I420 runs side by side.
fn print_table(results: &[Value]) {
    if results.is_empty() {
        return;
    }
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    // The page switches and the `BENCH_ENVS` set of a run.
    let label = |v: &Value| match v["env"].as_str().unwrap_or("") {
        "" => v["tuning"].to_string(),
        env => format!("{} {env}", v["tuning"]),
    };
    let tiles = |v: &Value| -> String {
        let list: Vec<String> = v["tile_fps"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_f64)
                    .map(|x| format!("{x:.1}"))
                    .collect()
            })
            .unwrap_or_default();
        list.join(" / ")
    };
    println!();
    println!(
        "| remotes | format | transport | page | painted fps per remote tile | min | median | app CPU % | WebKit CPU % | app / WebKit CPU ms per remote frame | KiB per remote frame | page messages per frame | frames offered/s (all tiles) | transport ms | paint ms | page batches/s | wait / parse / upload / draw / paint ms per batch | load |"
    );
    println!(
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    );
    for v in results {
        let st = |k: &str| v["stage_ms_per_batch"][k].as_f64().unwrap_or(f64::NAN);
        println!(
            "| {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.0} | {:.0} | {:.1} / {:.1} | {:.0} | {:.2} | {:.0} | {:.1} | {:.2} | {:.1} | {:.1} / {:.2} / {:.2} / {:.2} / {:.2} | {} |",
            v["remotes"],
            v["format"].as_str().unwrap_or("?"),
            v["transport"].as_str().unwrap_or("?"),
            label(v),
            tiles(v),
            f(v, "min_tile_fps"),
            f(v, "median_tile_fps"),
            f(v, "app_cpu"),
            f(v, "webkit_cpu"),
            f(v, "app_ms_per_frame"),
            f(v, "webkit_ms_per_frame"),
            f(v, "remote_frame_bytes") / 1024.0,
            f(v, "ipc_calls_per_frame"),
            f(v, "offered_fps"),
            f(v, "ipc_ms"),
            f(v, "paint_ms"),
            f(v, "page_batches_per_s"),
            st("wait"),
            st("parse"),
            st("upload"),
            st("draw"),
            st("paint"),
            v["load"].as_str().unwrap_or("?"),
        );
    }
    // Ratios: I420 over RGBA for each remote count measured both ways.
    println!();
    println!(
        "| remotes | min tile fps I420/RGBA | app CPU per frame I420/RGBA | WebKit CPU per frame I420/RGBA | bytes per frame I420/RGBA |"
    );
    println!("|---|---:|---:|---:|---:|");
    let mut counts: Vec<u64> = results
        .iter()
        .filter_map(|v| v["remotes"].as_u64())
        .collect();
    counts.dedup();
    for n in counts {
        let pick = |fmt: &str| {
            results
                .iter()
                .find(|v| v["remotes"].as_u64() == Some(n) && v["format"] == fmt)
        };
        if let (Some(a), Some(b)) = (pick("rgba"), pick("i420"))
            && a["transport"] == b["transport"]
        {
            let r = |k: &str| f(b, k) / f(a, k);
            println!(
                "| {n} | {:.2} | {:.2} | {:.2} | {:.2} |",
                r("min_tile_fps"),
                r("app_ms_per_frame"),
                r("webkit_ms_per_frame"),
                r("remote_frame_bytes")
            );
        }
    }
    // Ratios: each page tuning / env set over a run of the first one of its group (same remotes,
    // format and transport), the last such run before it (back to back when the sets alternate
    // with the first: `|A||B`), else the run before it.
    if results.windows(2).any(|p| label(&p[0]) != label(&p[1])) {
        println!();
        println!(
            "| remotes | page / env (after / before) | min tile fps | median tile fps | app CPU per frame | WebKit CPU per frame | page batches/s | load |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---|");
        let same_group = |a: &Value, b: &Value| {
            a["remotes"] == b["remotes"]
                && a["format"] == b["format"]
                && a["transport"] == b["transport"]
        };
        for (i, b) in results.iter().enumerate() {
            let Some(first) = results.iter().find(|a| same_group(a, b)) else {
                continue;
            };
            if label(first) == label(b) {
                continue;
            }
            let base = results[..i]
                .iter()
                .rev()
                .find(|a| same_group(a, b) && label(a) == label(first))
                .or_else(|| results[..i].last().filter(|a| same_group(a, b)));
            let Some(a) = base else { continue };
            let r = |k: &str| f(b, k) / f(a, k);
            println!(
                "| {} | {} / {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} / {} |",
                b["remotes"],
                label(b),
                label(a),
                r("min_tile_fps"),
                r("median_tile_fps"),
                r("app_ms_per_frame"),
                r("webkit_ms_per_frame"),
                r("page_batches_per_s"),
                a["load"].as_str().unwrap_or("?"),
                b["load"].as_str().unwrap_or("?"),
            );
        }
    }
    // Ratios: the frame socket over the IPC, per remote count and format measured both ways
    // (runs in order, each socket run against the IPC run next to it).
    println!();
    println!(
        "| remotes | format | min tile fps socket/IPC | app CPU per frame socket/IPC | WebKit CPU per frame socket/IPC | load |"
    );
    println!("|---|---|---:|---:|---:|---|");
    for pair in results.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a["remotes"] != b["remotes"] || a["format"] != b["format"] {
            continue;
        }
        let (ipc, ws) = match (a["transport"].as_str(), b["transport"].as_str()) {
            (Some("ipc"), Some("websocket")) => (a, b),
            (Some("websocket"), Some("ipc")) => (b, a),
            _ => continue,
        };
        let r = |k: &str| f(ws, k) / f(ipc, k);
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {} / {} |",
            ws["remotes"],
            ws["format"].as_str().unwrap_or("?"),
            r("min_tile_fps"),
            r("app_ms_per_frame"),
            r("webkit_ms_per_frame"),
            a["load"].as_str().unwrap_or("?"),
            b["load"].as_str().unwrap_or("?"),
        );
    }
}

/// The server and `BENCH_REMOTES` sending sessions; prints the server URL, then runs until its
/// stdin closes (the app role holds it).
fn remotes() -> anyhow::Result<()> {
    let n: usize = std::env::var("BENCH_REMOTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    // The remotes stand for other people's machines: at the lowest priority (inherited by
    // the `rtcio` processes) they take what the app leaves instead of starving it.
    // `BENCH_NICE=0` keeps the normal priority.
    let nice: i32 = std::env::var("BENCH_NICE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(19);
    // SAFETY: setpriority only changes this process's scheduling priority.
    if nice != 0 && unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        eprintln!("cannot lower the remotes' priority");
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let server = rtcio_server::start(rtcio_server::ServerConfig {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            ..rtcio_server::ServerConfig::default()
        })
        .await?;
        // `BENCH_TALKERS=k`: only the first k remotes send audio (all of them by default).
        let talkers: usize = std::env::var("BENCH_TALKERS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(n);
        let size = std::env::var("BENCH_SIZE")
            .ok()
            .and_then(|s| {
                let (w, h) = s.split_once('x')?;
                Some((w.parse().ok()?, h.parse().ok()?))
            })
            .unwrap_or((1280, 720));
        let mut sessions = Vec::new();
        // `BENCH_FILE=x.h264`: the remotes are `rtcio` processes sending that pre-encoded file
        // (no encoder running: the two cores are the app's), `BENCH_CLI` names the binary.
        let file = std::env::var("BENCH_FILE").ok();
        let mut cli_remotes = Vec::new();
        for i in 0..n {
            if let Some(file) = &file {
                let cli = cli_path();
                let name = format!("remote{i}");
                let url = server.url();
                cli_remotes.push(
                    tokio::process::Command::new(cli)
                        .args(["join", "--loopback", "--server", &url, "--room", ROOM])
                        .args(["--name", &name, "--video", file, "--fps", "30"])
                        // A file cannot re-encode for a lower estimate: sent as it is.
                        .arg("--no-congestion-control")
                        // Send-only: the remotes stand for other machines and must not
                        // spend the app's two cores decoding each other's video.
                        .arg("--no-receive")
                        .args(["--audio", if i < talkers { "tone" } else { "none" }])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        // A remote starved at nice 19 logs every RTP packet its full track
                        // buffer refuses: not the app's figure.
                        .stderr(Stdio::null())
                        .kill_on_drop(true)
                        .spawn()?,
                );
                continue;
            }
            let mut cfg =
                JoinConfig::new(&format!("remote{i}"), ROOM, ServerChoice::Url(server.url()));
            cfg.socket = rtcio::Options::loopback();
            cfg.media = MediaConfig {
                capture_size: size,
                ..MediaConfig::synthetic()
            };
            if i >= talkers {
                cfg.media.audio = rtcio_desktop::media::AudioChoice::Off;
                cfg.mic = false;
            }
            let (s, _) = Session::join(cfg, Arc::new(|_, _| {})).await?;
            sessions.push(s);
        }
        println!("{}", server.url());
        // Block until the app role is done (EOF on stdin).
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await?;
        for s in sessions {
            s.leave().await;
        }
        drop(cli_remotes);
        let _ = server.shutdown().await;
        anyhow::Ok(())
    })
}

fn app() -> anyhow::Result<()> {
    let remotes_n: usize = std::env::var("BENCH_REMOTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    // The remotes process first, before this process has threads or a display.
    let mut remotes = Command::new(std::env::current_exe()?)
        .env("BENCH_ROLE", "remotes")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let remotes_pid = remotes.id().to_string();
    let mut url = String::new();
    if let Some(out) = remotes.stdout.take() {
        BufReader::new(out).read_line(&mut url)?;
    }
    let url = url.trim().to_string();
    anyhow::ensure!(url.starts_with("http"), "the remotes process did not start");
    // `BENCH_WINDOW=WxH`: the app's window that size (default: the app's own 1200 × 780) on a
    // display of that size (default 1280 × 800).
    let window: Option<(u32, u32)> = std::env::var("BENCH_WINDOW").ok().and_then(|s| {
        let (w, h) = s.split_once('x')?;
        Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
    });
    // Run alone (`BENCH_ROLE=app`), it needs its own display.
    let (_own_display, display) = match std::env::var("BENCH_DISPLAY") {
        Ok(d) => (None, d),
        Err(_) => {
            let (w, h) = window.unwrap_or((1280, 800));
            let x = VirtualDisplay::start(w, h)?;
            let d = x.display().to_string();
            (Some(x), d)
        }
    };
    let scratch = std::env::temp_dir().join(format!("rtcio-ipc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    // SAFETY: no other thread exists yet (Xvfb is a child process, not a thread).
    unsafe {
        std::env::set_var("DISPLAY", &display);
        std::env::remove_var("WAYLAND_DISPLAY");
        std::env::set_var("GDK_BACKEND", "x11");
        std::env::set_var("HOME", &scratch);
        std::env::set_var("XDG_DATA_HOME", scratch.join("data"));
        std::env::set_var("XDG_CONFIG_HOME", scratch.join("config"));
        std::env::set_var("XDG_CACHE_HOME", scratch.join("cache"));
        // Defaults a `BENCH_ENVS` set may override (Xvfb has no DRI device either way).
        for (k, v) in [
            ("WEBKIT_DISABLE_DMABUF_RENDERER", "1"),
            ("LIBGL_ALWAYS_SOFTWARE", "1"),
        ] {
            if std::env::var_os(k).is_none() {
                std::env::set_var(k, v);
            }
        }
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

    let (tx, rx) = mpsc::channel::<Value>();
    let tuning = std::env::var("BENCH_PAGE_TUNING").unwrap_or_else(|_| "{}".into());
    anyhow::ensure!(
        serde_json::from_str::<serde_json::Map<String, Value>>(&tuning).is_ok(),
        "BENCH_PAGE_TUNING must be a JSON object"
    );
    let script = autojoin_script(&url, &tuning);
    let app = rtcio_desktop::builder()
        .setup(move |app| {
            // Only this bench's page may emit events (the app's own capability does not allow
            // it): the counters come back that way.
            app.add_capability(
                r#"{"identifier":"ipc-bench","windows":["main"],"permissions":["core:event:allow-emit"]}"#,
            )?;
            if let (Some((w, h)), Some(win)) = (window, app.get_webview_window("main")) {
                win.set_position(tauri::PhysicalPosition::new(0, 0))?;
                win.set_size(tauri::PhysicalSize::new(w, h))?;
            }
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
        let state = handle.state::<AppState>();
        let gate = state.frame_gate().clone();
        let sample = |v: &Value| Sample {
            at: Instant::now(),
            painted: v["painted"].as_f64().unwrap_or(0.0),
            ipc_ms: v["ipcMs"].as_f64().unwrap_or(0.0),
            paint_ms: v["paintMs"].as_f64().unwrap_or(0.0),
            per_key: v["perKey"].as_object().cloned().unwrap_or_default(),
            drawn_per_key: v["drawnPerKey"].as_object().cloned().unwrap_or_default(),
            bytes_per_key: v["bytesPerKey"].as_object().cloned().unwrap_or_default(),
            webgl: v["webgl"].as_f64().unwrap_or(0.0),
            i420: v["i420"].as_f64().unwrap_or(0.0),
            messages: v["messages"].as_f64().unwrap_or(0.0),
            pulls: v["pulls"].as_f64().unwrap_or(0.0),
            transport: v["transport"].as_str().unwrap_or("?").to_string(),
            stages: v["stages"].as_object().cloned().unwrap_or_default(),
            // Filled only for the two samples measured from (`with_ticks`).
            cpu_ticks: 0,
            web_ticks: 0,
            remote_ticks: 0,
            flow: gate.stats(),
            gl: v["gl"].as_str().unwrap_or("?").to_string(),
            load: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .unwrap_or("?")
                .to_string(),
        };
        // The CPU counters: `descendant_ticks` reads every process's `/proc/<pid>/stat`, which
        // on a busy machine cost this (the app's) process ~4 % of its samples when done for
        // every 500 ms report; only the first and last samples need them.
        let with_ticks = |mut s: Sample| {
            s.cpu_ticks = cpu_ticks("self");
            s.web_ticks = descendant_ticks(std::process::id(), "WebKit");
            s.remote_ticks =
                cpu_ticks(&remotes_pid) + descendant_ticks(remotes_pid.parse().unwrap_or(0), "");
            s
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
                None if s.at.duration_since(f) >= WARMUP => start = Some(with_ticks(s)),
                Some(ref st) if s.at.duration_since(st.at) >= Duration::from_secs(seconds) => {
                    end = Some((st.clone(), with_ticks(s)));
                    break;
                }
                _ => {}
            }
        }
        match end {
            Some((a, b)) => {
                let secs = b.at.duration_since(a.at).as_secs_f64();
                let painted = b.painted - a.painted;
                // Batches: non-empty replies to the page's pulls.
                let batches = (b.flow.batches - a.flow.batches) as f64;
                let size = std::env::var("BENCH_SIZE").unwrap_or_else(|_| "1280x720".into());
                println!(
                    "ipc_bench: {remotes_n} remote(s) sending {size} 30 fps, frames as {} over {}, {secs:.1} s measured ({} tiles incl. own preview; page WebGL: {})",
                    std::env::var("BENCH_FORMAT").unwrap_or_else(|_| "i420".into()),
                    b.transport,
                    b.per_key.len(),
                    b.gl
                );
                let sent = (b.flow.sent - a.flow.sent) as f64;
                println!(
                    "  batches pulled by the page: {:.1}/s, {:.0} KiB and {:.2} frames each ({:.1} frames/s); {:.1} pulls/s answered empty",
                    batches / secs,
                    (b.flow.bytes - a.flow.bytes) as f64 / batches.max(1.0) / 1024.0,
                    sent / batches.max(1.0),
                    sent / secs,
                    (b.flow.empty - a.flow.empty) as f64 / secs,
                );
                // What the video threads offered (decoded and due, our preview's 30/s
                // included): when it is low the remotes were starved, not the app.
                let offered = sent + (b.flow.replaced - a.flow.replaced) as f64;
                println!(
                    "  frames offered to the page (all tiles): {:.1}/s, {:.1}/s replaced by a newer one while waiting for a pull",
                    offered / secs,
                    (b.flow.replaced - a.flow.replaced) as f64 / secs,
                );
                // Each pull is one request and one reply.
                let ipc_calls = (b.messages - a.messages) + (b.pulls - a.pulls);
                println!(
                    "  page messages per painted frame: {:.2} (pulls + replies)",
                    ipc_calls / painted.max(1.0)
                );
                println!(
                    "  transport (handed over -> in the page): {:.2} ms/frame",
                    (b.ipc_ms - a.ipc_ms) / painted.max(1.0)
                );
                println!(
                    "  paint (putImageData or WebGL upload + draw): {:.2} ms/frame",
                    (b.paint_ms - a.paint_ms) / painted.max(1.0)
                );
                println!(
                    "  frames painted: {:.1}/s ({:.0} % of those handed over)",
                    painted / secs,
                    100.0 * painted / sent.max(1.0)
                );
                let count = |m: &serde_json::Map<String, Value>, k: &str| {
                    m.get(k).and_then(Value::as_f64).unwrap_or(0.0)
                };
                // Where the page's time goes, per batch it handled and as a share of the
                // measured seconds (the rest of its main thread's time is WebKit's own:
                // receiving messages, compositing, layout).
                let stage = |k: &str| count(&b.stages, k) - count(&a.stages, k);
                let page_batches = stage("batches");
                println!(
                    "  page stages ({:.1} batches/s handled, {:.1} animation frames/s; `waitMs` socket only):",
                    page_batches / secs,
                    stage("frames") / secs
                );
                println!("  | stage | ms per batch | % of the time |");
                println!("  |---|---:|---:|");
                for (name, key) in [
                    ("pull sent -> batch message event", "waitMs"),
                    ("parseBatch", "parseMs"),
                    ("texture uploads (texImage2D / texSubImage2D)", "uploadMs"),
                    ("draw calls", "drawMs"),
                    (
                        "painting the batch (uploads, draws, 2D, bookkeeping)",
                        "paintMs",
                    ),
                ] {
                    println!(
                        "  | {name} | {:.2} | {:.1} |",
                        stage(key) / page_batches.max(1.0),
                        100.0 * stage(key) / (1000.0 * secs)
                    );
                }
                println!(
                    "  draws: {:.1} animation frames/s drew, {:.2} tiles each; {:.1} frames/s superseded before a draw showed them",
                    stage("drawPasses") / secs,
                    stage("tileDraws") / stage("drawPasses").max(1.0),
                    stage("superseded") / secs
                );
                // Per remote tile: frames handed to the renderer, and those that reached the
                // screen (the painted rate; the same unless the layer superseded some).
                let rates = |m_b: &serde_json::Map<String, Value>,
                             m_a: &serde_json::Map<String, Value>| {
                    let mut fps: Vec<f64> = m_b
                        .keys()
                        .filter(|k| !k.starts_with("self/"))
                        .map(|k| (count(m_b, k) - count(m_a, k)) / secs)
                        .collect();
                    fps.sort_by(f64::total_cmp);
                    fps
                };
                let handed_fps = rates(&b.per_key, &a.per_key);
                let drawn = !b.drawn_per_key.is_empty();
                let tile_fps = if drawn {
                    rates(&b.drawn_per_key, &a.drawn_per_key)
                } else {
                    handed_fps.clone()
                };
                let show = |v: &[f64]| {
                    v.iter()
                        .map(|x| format!("{x:.1}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                println!(
                    "  painted per remote tile: [{}] fps (handed to the renderer: [{}])",
                    show(&tile_fps),
                    show(&handed_fps)
                );
                let median_fps = if tile_fps.is_empty() {
                    0.0
                } else if tile_fps.len() % 2 == 1 {
                    tile_fps[tile_fps.len() / 2]
                } else {
                    (tile_fps[tile_fps.len() / 2 - 1] + tile_fps[tile_fps.len() / 2]) / 2.0
                };
                // Bytes per remote frame, from what the page received for the remote tiles.
                let (remote_bytes, remote_frames) = b
                    .per_key
                    .keys()
                    .filter(|k| !k.starts_with("self/"))
                    .fold((0.0, 0.0), |(bytes, n), k| {
                        (
                            bytes + count(&b.bytes_per_key, k) - count(&a.bytes_per_key, k),
                            n + count(&b.per_key, k) - count(&a.per_key, k),
                        )
                    });
                let remote_frame_bytes = remote_bytes / remote_frames.max(1.0);
                // CPU per frame on screen (what the tiles showed, not what was superseded).
                let remote_shown = if drawn {
                    b.drawn_per_key
                        .keys()
                        .filter(|k| !k.starts_with("self/"))
                        .map(|k| count(&b.drawn_per_key, k) - count(&a.drawn_per_key, k))
                        .sum::<f64>()
                } else {
                    remote_frames
                };
                // Only remote tiles get I420 and WebGL (our preview is RGBA on a 2D canvas).
                println!(
                    "  remote frames: {:.0} KiB each; {:.0} % came as I420, {:.0} % painted with WebGL",
                    remote_frame_bytes / 1024.0,
                    100.0 * (b.i420 - a.i420) / remote_frames.max(1.0),
                    100.0 * (b.webgl - a.webgl) / remote_frames.max(1.0)
                );
                let pct = |t: u64| 100.0 * t as f64 / clock_ticks_per_second() / secs;
                let load = format!("{} → {}", a.load, b.load);
                println!(
                    "  CPU, % of one core: app process {:.0}, its WebKit processes {:.0}, remotes + server {:.0}; load average {load}",
                    pct(b.cpu_ticks - a.cpu_ticks),
                    pct(b.web_ticks - a.web_ticks),
                    pct(b.remote_ticks - a.remote_ticks),
                );
                let result = serde_json::json!({
                    "remotes": remotes_n,
                    "format": std::env::var("BENCH_FORMAT").unwrap_or_else(|_| "i420".into()),
                    "transport": b.transport,
                    "tile_fps": tile_fps,
                    "min_tile_fps": tile_fps.first().copied().unwrap_or(0.0),
                    "median_tile_fps": median_fps,
                    "handed_tile_fps": handed_fps,
                    "draw_passes_per_s": stage("drawPasses") / secs,
                    "superseded_per_s": stage("superseded") / secs,
                    "app_cpu": pct(b.cpu_ticks - a.cpu_ticks),
                    "webkit_cpu": pct(b.web_ticks - a.web_ticks),
                    "remotes_cpu": pct(b.remote_ticks - a.remote_ticks),
                    "remote_frame_bytes": remote_frame_bytes,
                    // CPU milliseconds per painted remote frame: what each frame costs, which
                    // a loaded machine changes less than the frame rate it allows.
                    "app_ms_per_frame": 1000.0 * (b.cpu_ticks - a.cpu_ticks) as f64
                        / clock_ticks_per_second() / remote_shown.max(1.0),
                    "webkit_ms_per_frame": 1000.0 * (b.web_ticks - a.web_ticks) as f64
                        / clock_ticks_per_second() / remote_shown.max(1.0),
                    "ipc_ms": (b.ipc_ms - a.ipc_ms) / painted.max(1.0),
                    "ipc_calls_per_frame": ipc_calls / painted.max(1.0),
                    "offered_fps": offered / secs,
                    "paint_ms": (b.paint_ms - a.paint_ms) / painted.max(1.0),
                    "page_batches_per_s": page_batches / secs,
                    "animation_frames_per_s": stage("frames") / secs,
                    "stage_ms_per_batch": serde_json::json!({
                        "wait": stage("waitMs") / page_batches.max(1.0),
                        "parse": stage("parseMs") / page_batches.max(1.0),
                        "upload": stage("uploadMs") / page_batches.max(1.0),
                        "draw": stage("drawMs") / page_batches.max(1.0),
                        "paint": stage("paintMs") / page_batches.max(1.0),
                    }),
                    "tuning": serde_json::from_str::<Value>(&tuning).unwrap_or_default(),
                    "env": std::env::var("BENCH_ENV_LABEL").unwrap_or_default(),
                    "load": load,
                    "gl": b.gl,
                });
                println!("{RESULT_PREFIX}{result}");
            }
            None => println!("ipc_bench: the page painted no video within 90 s"),
        }
        // `BENCH_SCREENSHOT=DIR`: the screen as it is now, one PNG per run.
        if let Ok(dir) = std::env::var("BENCH_SCREENSHOT") {
            let path = match std::env::var("BENCH_SCREENSHOT_FILE") {
                Ok(file) => std::path::PathBuf::from(file),
                Err(_) => std::path::Path::new(&dir).join(format!("call-{remotes_n}-remotes.png")),
            };
            match Command::new("import")
                .args(["-window", "root"])
                .arg(&path)
                .status()
            {
                Ok(s) if s.success() => println!("  screenshot: {}", path.display()),
                other => eprintln!("screenshot failed: {other:?}"),
            }
        }
        handle.exit(0);
    });

    let code = rtcio_desktop::run_app(app);
    // Closing its stdin ends the remotes process.
    drop(remotes.stdin.take());
    let _ = remotes.wait();
    let _ = std::fs::remove_dir_all(&scratch);
    anyhow::ensure!(code == 0, "the app ended with exit code {code}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // Leave without the C atexit handlers: one of them closes the X connection while a
    // windowing thread still waits in XNextEvent, and Xlib's I/O error handler then turns our
    // exit status into 1.
    // SAFETY: _exit only ends the process; everything worth keeping is flushed above.
    unsafe { libc::_exit(0) }
}
