//! The real app in a real window: `rtcio-desktop` under a private Xvfb (started here, so the
//! test needs no display of its own) must come up and paint the UI — the page's background
//! colour from `ui/style.css` covering a good part of the screen — instead of crashing or
//! showing a blank webview. Everything else about the UI is tested in `ui_logic.rs`.

mod common;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rtcio_media::capture::screen::{ScreenConfig, ScreenSource};
use rtcio_media::capture::xvfb::VirtualDisplay;
use rtcio_media::convert::i420_to_rgba;

use common::process::{Group, Scratch, app_on_xvfb};

/// WebKit's first paint can take a while on a loaded CI box.
const PAINT_TIMEOUT: Duration = Duration::from_secs(90);
/// Share of the screen that must show the page background (the window covers ~90 % of it, the
/// start card and its fields the rest).
const MIN_BACKGROUND_SHARE: f64 = 0.25;
/// Per-channel tolerance: compositing and colour conversion round a little.
const TOLERANCE: i32 = 12;

/// `--bg: #rrggbb` from `ui/style.css`.
fn page_background() -> [u8; 3] {
    let css =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ui/style.css"))
            .expect("ui/style.css");
    let hex = css
        .split("--bg:")
        .nth(1)
        .and_then(|rest| rest.trim_start().strip_prefix('#'))
        .and_then(|rest| rest.get(..6))
        .expect("ui/style.css defines --bg: #rrggbb");
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex colour");
    [byte(0), byte(2), byte(4)]
}

#[test]
fn app_starts_and_paints_the_ui_under_xvfb() {
    let xvfb = VirtualDisplay::start(1280, 800).expect("Xvfb (installed by scripts/setup.sh)");
    let scratch = Scratch(
        std::env::temp_dir().join(format!("rtcio-desktop-window-test-{}", std::process::id())),
    );
    std::fs::create_dir_all(&scratch.0).expect("scratch dir");
    let log = scratch.0.join("app.log");
    let log_file = std::fs::File::create(&log).expect("log file");

    let mut app = Group(
        app_on_xvfb(
            &mut Command::new(env!("CARGO_BIN_EXE_rtcio-desktop")),
            xvfb.display(),
            &scratch.0,
        )
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file)
        .process_group(0)
        .spawn()
        .expect("start rtcio-desktop"),
    );

    let want = page_background();
    let mut screen = ScreenSource::open(ScreenConfig {
        display: Some(xvfb.display().to_owned()),
        monitor: None,
        fps: 10.0,
        paced: false,
    })
    .expect("capture the Xvfb screen");
    let started = Instant::now();
    let share = loop {
        if let Some(status) = app.0.try_wait().expect("app status") {
            panic!(
                "rtcio-desktop exited ({status}) before painting:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let frame = screen.grab(started.elapsed()).expect("grab the screen");
        let rgba = i420_to_rgba(&frame).expect("convert");
        let pixels = rgba.data.len() / 4;
        let matching = rgba
            .data
            .chunks_exact(4)
            .filter(|p| (0..3).all(|c| (i32::from(p[c]) - i32::from(want[c])).abs() <= TOLERANCE))
            .count();
        let share = matching as f64 / pixels as f64;
        if share >= MIN_BACKGROUND_SHARE {
            break share;
        }
        assert!(
            started.elapsed() < PAINT_TIMEOUT,
            "no UI after {} s: only {:.1} % of the screen shows the page background {want:?}; \
             app output:\n{}",
            PAINT_TIMEOUT.as_secs(),
            share * 100.0,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    println!(
        "UI painted after {:.1} s ({:.0} % page background)",
        started.elapsed().as_secs_f64(),
        share * 100.0
    );
    drop(app);
}
