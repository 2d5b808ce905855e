//! End to end: the real `rtcio-desktop` window, driven through WebDriver (`tauri-driver` in
//! front of WebKitGTK's `WebKitWebDriver`), on a private Xvfb with the synthetic camera and
//! tone (`RTCIO_FAKE_MEDIA=1`), hosts a room that a headless Chromium rtc.io peer
//! (`tests/browser/`) joins with its fake camera. Checked, each with a bounded wait on what the
//! app's page or the browser's log shows:
//!
//! 1. the app's tile for the browser paints frames (`videoStats.perKey` grows), delivered over
//!    the app's loopback frame socket (`videoStats.transport`);
//! 2. the browser's `camera` handler gets our stream with our name and decodes it;
//! 3. chat app → browser and browser → app;
//! 4. M in the app → the browser hears `media-state` with `mic: false`;
//! 5. the app's screen share (the Xvfb screen) reaches the browser as `screenshare` and plays;
//!    stop → `stopScreenShare` and the share's video track ends;
//! 6. a screenshot of the app in the call (`$CARGO_TARGET_TMPDIR/e2e-call.png`; also
//!    `docs/screenshot-e2e.png` with `RTCIO_SAVE_SCREENSHOT=1`);
//! 7. Leave → the browser gets the server's `user-disconnected` for the app.
//!
//! Needs `tauri-driver` and `WebKitWebDriver` (`scripts/setup.sh`); `RTCIO_TAURI_DRIVER` and
//! `RTCIO_WEBKIT_DRIVER` override where they are looked for, `RTCIO_DESKTOP_BIN` the app binary.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::process::Scratch;
use common::webdriver::{App, PAINTED, PAINTED_AT_LEAST, WAIT, retries, tail};
use rtcio_media::capture::xvfb::VirtualDisplay;
use serde_json::json;

const APP_NAME: &str = "E2E App";
const WEB_NAME: &str = "E2E Browser";

// ------------------------------------------------------------------------------ browser page

/// Waits in the page until the `<video>` of stream `o.msid` has shown `o.frames` frames; returns
/// its size and frame count.
const WAIT_PLAYED: &str = "async (o) => {
  for (;;) {
    const v = document.querySelector(`video[data-msid=\"${o.msid}\"]`);
    const q = v && v.getVideoPlaybackQuality();
    if (q && q.totalVideoFrames >= o.frames) return {frames: q.totalVideoFrames, width: v.videoWidth, height: v.videoHeight};
    await new Promise((r) => setTimeout(r, 100));
  }
}";

/// Waits until `o.peer`'s inbound video has decoded `o.frames` frames; returns its stats.
const WAIT_DECODED: &str = "async (o) => {
  for (;;) {
    const s = (await rtcio.mediaStats({peer: o.peer}))[o.peer];
    if (s && s.video.framesDecoded >= o.frames) return s.video;
    await new Promise((r) => setTimeout(r, 100));
  }
}";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[test]
fn app_window_in_a_call_with_a_browser_peer() {
    let t0 = Instant::now();
    let rt = rt();
    let xvfb = VirtualDisplay::start(1280, 800).expect("Xvfb (installed by scripts/setup.sh)");
    let scratch =
        Scratch(std::env::temp_dir().join(format!("rtcio-desktop-e2e-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).expect("scratch dir");
    let log = scratch.0.join("app.log");
    let app = App::start(xvfb.display(), &scratch.0);
    let wd = &app.wd;
    let t_ready = t0.elapsed();

    // ---- the start screen, as a person fills it in
    wd.type_into("#name", APP_NAME);
    let room = format!("e2e-{}", std::process::id());
    wd.type_into("#room", &room);
    wd.click("#server-host");
    let devices = wd.js(
        "return {camera: document.getElementById('camera').value, mic: document.getElementById('microphone').value};",
        json!([]),
    );
    assert_eq!(
        devices,
        json!({"camera": "synthetic:test-pattern", "mic": "synthetic:tone"}),
        "RTCIO_FAKE_MEDIA=1 preselects the synthetic sources"
    );
    let t_click = Instant::now();
    wd.click("#join-button");
    let share_text = wd.wait_js(
        "the call screen with the hosted address",
        "const s = document.getElementById('share-info');
         return !document.getElementById('call-screen').hidden && !s.hidden && s.textContent;",
        json!([]),
    );
    let t_joined = t_click.elapsed();
    let share_text = share_text.as_str().unwrap_or_default().to_string();
    // "http://<lan ip>:<port>" or, with only `lo` (CI's namespace), "http://127.0.0.1:<port>".
    let server_port: u16 = share_text
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split(':').nth(1))
        .map(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no http://…:port in the hosting line {share_text:?}"));
    let url = format!("http://127.0.0.1:{server_port}");
    println!(
        "app ready after {}, joined (hosting, {share_text:?}) {} after Join",
        secs(t_ready),
        secs(t_joined)
    );

    // ---- the browser joins with its fake camera
    let mut br = rt.block_on(Browser::start());
    let page = rt.block_on(br.open("web"));
    let t_web_join = Instant::now();
    let joined = rt.block_on(br.eval(
        page,
        "(o) => rtcio.join(o.url, o)",
        json!({"url": url, "roomId": room, "name": WEB_NAME, "camera": true, "chat": true}),
    ));
    let web_id = joined["id"]
        .as_str()
        .expect("browser socket id")
        .to_string();

    // (2) our camera with our name reaches the browser's camera handler, and Chromium decodes it
    let cam = rt.block_on(br.wait_log(
        page,
        json!({"kind": "event", "name": "camera", "args": [{"name": APP_NAME}]}),
        0,
        WAIT.as_millis() as u64,
    ));
    let app_id = cam["entry"]["args"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("camera payload without id: {cam}"))
        .to_string();
    assert!(
        cam["entry"]["args"][0]["camera"].is_object(),
        "camera payload carries a stream: {cam}"
    );
    let decoded = rt.block_on(
        br.cmd(json!({"cmd": "eval", "page": page, "expr": WAIT_DECODED,
        "arg": {"peer": app_id, "frames": 10}, "timeoutMs": WAIT.as_millis() as u64})),
    );
    let decoded = decoded.unwrap_or_else(|e| {
        panic!(
            "the browser decodes no video from the app: {e}\napp log tail:\n{}",
            tail(&log, 60)
        )
    });
    let t_web_decoded = t_web_join.elapsed();

    // (1) the app's tile for the browser paints frames, and keeps painting
    let first = wd.wait_js(
        "the browser's camera tile painting",
        PAINTED_AT_LEAST,
        json!([format!("{web_id}/"), 1]),
    );
    let t_first_paint = t_web_join.elapsed();
    let key = first["key"].as_str().expect("tile key").to_string();
    let n0 = first["n"].as_u64().unwrap_or(0);
    let t_more = Instant::now();
    let more = wd.wait_js(
        "30 more painted frames on the browser's tile",
        PAINTED_AT_LEAST,
        json!([key, n0 + 30]),
    );
    let paint_fps = (more["n"].as_u64().unwrap_or(0) - n0) as f64 / t_more.elapsed().as_secs_f64();
    println!(
        "browser joined → app paints its first frame of {key}: {}; ~{paint_fps:.1} painted fps; \
         browser decoded {} frames ({}×{}) of the app's camera after {}",
        secs(t_first_paint),
        decoded["framesDecoded"],
        decoded["frameWidth"],
        decoded["frameHeight"],
        secs(t_web_decoded)
    );
    // The frames came over the app's loopback frame socket, not the IPC fallback: WebKit
    // opened `ws://127.0.0.1:PORT` under the app's CSP with the run's token.
    let transport = wd.js(
        "const s = window.__rtcioVideo; return s ? s.transport : null;",
        json!([]),
    );
    assert_eq!(
        transport,
        json!("websocket"),
        "frames reach the page over the frame socket\napp log tail:\n{}",
        tail(&log, 60)
    );
    let tile_name = wd.wait_js(
        "the browser's tile labelled with its name",
        "const t = document.querySelector(`#grid .tile[data-id=\"${arguments[0]}\"] .tile-name`);
         return t && t.textContent;",
        json!([web_id]),
    );
    assert_eq!(tile_name, json!(WEB_NAME));

    // (3) chat both ways
    let since = rt.block_on(br.log_len(page));
    let t_chat = Instant::now();
    wd.type_into("#chat-input", "hello from the app");
    wd.click("#chat-send");
    rt.block_on(br.wait_log(
        page,
        json!({"kind": "channel", "channel": "chat", "name": "msg",
               "args": [{"text": "hello from the app", "name": APP_NAME}]}),
        since,
        WAIT.as_millis() as u64,
    ));
    let t_chat_out = t_chat.elapsed();
    let t_chat = Instant::now();
    rt.block_on(br.eval(
        page,
        "(o) => rtcio.channels.chat.emit('msg', {...o, at: Date.now()})",
        json!({"name": WEB_NAME, "text": "hello from the browser"}),
    ));
    wd.wait_js(
        "the browser's chat message in the app's chat log",
        "return [...document.querySelectorAll('#chat-log li')].some((li) =>
           li.querySelector('.text')?.textContent === arguments[0] && li.querySelector('.who')?.textContent === arguments[1]);",
        json!(["hello from the browser", WEB_NAME]),
    );
    println!(
        "chat app → browser {}, browser → app {}",
        secs(t_chat_out),
        secs(t_chat.elapsed())
    );

    // (6) the screenshot: the app in the call, the browser's camera painting, chat on screen
    let png = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-call.png");
    let shot = Command::new("import")
        .args(["-display", xvfb.display(), "-window", "root"])
        .arg(&png)
        .status()
        .expect("imagemagick's import (scripts/setup.sh)");
    assert!(shot.success(), "import -window root failed: {shot}");
    println!("screenshot: {}", png.display());
    if std::env::var("RTCIO_SAVE_SCREENSHOT").as_deref() == Ok("1") {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshot-e2e.png");
        std::fs::copy(&png, &docs).expect("copy the screenshot to docs/");
        println!("screenshot saved to {}", docs.display());
    }

    // (4) M mutes: the browser hears media-state with mic:false
    let since = rt.block_on(br.log_len(page));
    wd.js(
        "document.activeElement && document.activeElement.blur();",
        json!([]),
    );
    let t_mute = Instant::now();
    wd.press_key("m");
    rt.block_on(br.wait_log(
        page,
        json!({"kind": "event", "name": "media-state", "args": [{"id": app_id, "mic": false}]}),
        since,
        WAIT.as_millis() as u64,
    ));
    let t_mute = t_mute.elapsed();
    assert_eq!(
        wd.js(
            "return document.getElementById('toggle-mic').getAttribute('aria-pressed');",
            json!([])
        ),
        json!("false"),
        "the mic button shows off (aria-pressed=false: crossed icon on red)"
    );
    wd.wait_js(
        "the muted badge on our own tile",
        "return !!document.querySelector('#grid .tile.self [data-badge=\"muted\"]');",
        json!([]),
    );
    println!(
        "M → browser hears media-state mic:false after {}",
        secs(t_mute)
    );

    // (5) screen share of the Xvfb screen reaches the browser and plays; stop ends it
    let since = rt.block_on(br.log_len(page));
    let t_share = Instant::now();
    wd.click("#toggle-share");
    let share = rt.block_on(br.wait_log(
        page,
        json!({"kind": "event", "name": "screenshare", "peer": app_id}),
        since,
        WAIT.as_millis() as u64,
    ));
    let args = &share["entry"]["args"][0];
    assert_eq!(args["name"], json!(APP_NAME), "{args}");
    assert_eq!(args["id"], json!(app_id), "{args}");
    let msid = args["stream"]["$stream"]["msid"]
        .as_str()
        .unwrap_or_else(|| panic!("screenshare without a stream: {args}"))
        .to_string();
    let played = rt
        .block_on(
            br.cmd(json!({"cmd": "eval", "page": page, "expr": WAIT_PLAYED,
            "arg": {"msid": msid, "frames": 5}, "timeoutMs": WAIT.as_millis() as u64})),
        )
        .unwrap_or_else(|e| {
            panic!(
                "the browser plays no frame of the app's share: {e}\napp log tail:\n{}",
                tail(&log, 60)
            )
        });
    let t_share = t_share.elapsed();
    println!(
        "share → browser plays {} frames ({}×{}) after {}",
        played["frames"],
        played["width"],
        played["height"],
        secs(t_share)
    );
    wd.wait_js(
        "the share button to show sharing",
        "return document.getElementById('toggle-share').getAttribute('aria-pressed') === 'true';",
        json!([]),
    );
    let since = rt.block_on(br.log_len(page));
    let t_stop = Instant::now();
    wd.click("#toggle-share");
    rt.block_on(br.wait_log(
        page,
        json!({"kind": "event", "name": "stopScreenShare", "args": [{"id": app_id}]}),
        since,
        WAIT.as_millis() as u64,
    ));
    // The share's video is gone from the browser's stream (track removed or ended).
    rt.block_on(br.cmd(json!({"cmd": "waitFn", "page": page, "arg": {"msid": msid},
        "expr": "(o) => { const v = document.querySelector(`video[data-msid=\"${o.msid}\"]`);
                 return !v || !v.srcObject || v.srcObject.getVideoTracks().every((t) => t.readyState === 'ended'); }",
        "timeoutMs": WAIT.as_millis() as u64})))
    .unwrap_or_else(|e| panic!("the share's video track stays live in the browser: {e}"));
    println!(
        "stop share → stopScreenShare and the track gone after {}",
        secs(t_stop.elapsed())
    );
    // The page updates the button when `stop_screen_share` returns, which can be after the
    // browser saw the wire event: wait for it rather than read it once.
    wd.wait_js(
        "the share button to show not sharing",
        "return document.getElementById('toggle-share').getAttribute('aria-pressed') === 'false';",
        json!([]),
    );

    // (7) Leave: the browser sees the app go
    let since = rt.block_on(br.log_len(page));
    let t_leave = Instant::now();
    wd.click("#leave");
    let gone = rt
        .block_on(br.cmd(json!({"cmd": "waitFn", "page": page,
            "arg": {"since": since, "id": app_id},
            // The host's own server must announce it before stopping (not ICE consent loss
            // ~30 s later).
            "expr": "(o) => window.__log.slice(o.since).find((e) =>
                e.kind === 'event' && e.via === 'server' && e.name === 'user-disconnected' &&
                JSON.stringify(e.args).includes(o.id))",
            "timeoutMs": WAIT.as_millis() as u64})))
        .unwrap_or_else(|e| panic!("the browser did not hear user-disconnected for the app: {e}"));
    println!(
        "Leave → browser gets user-disconnected {} after {}",
        gone["args"],
        secs(t_leave.elapsed())
    );
    // The host who leaves must vanish from the browser's grid at once: its rtc.io client fires
    // peer-disconnect (it took 9.6-11.4 s, ICE consent, before the DTLS close patch).
    rt.block_on(br.cmd(json!({"cmd": "waitFn", "page": page,
        "arg": {"since": since, "id": app_id},
        "expr": "(o) => window.__log.slice(o.since).find((e) =>
            e.kind === 'peer-disconnect' && JSON.stringify(e).includes(o.id))",
        "timeoutMs": WAIT.as_millis() as u64})))
        .unwrap_or_else(|e| {
            panic!("the browser's rtc.io client never fired peer-disconnect for the app: {e}")
        });
    let noticed = t_leave.elapsed();
    println!("Leave → browser's peer-disconnect after {}", secs(noticed));
    assert!(
        noticed <= Duration::from_secs(2),
        "the browser saw the hosting app leave only {} after Leave (at most 2 s)",
        secs(noticed)
    );
    // How the browser learnt it, for the record: the peer's state changes since Leave.
    let after = rt.block_on(br.eval(
        page,
        "(o) => { const l = window.__log.slice(o.since); const t0 = l.length ? l[0].t : 0;
           return l.filter((e) => ['pc-state', 'ice-state', 'ctrl-close', 'disconnect', 'watchdog-armed',
             'peer-disconnect'].includes(e.kind) || (e.kind === 'event' && e.via === 'server'))
             .map((e) => `+${Math.round(e.t - t0)} ms ${e.kind} ${e.state || e.reason || e.name || ''}`); }",
        json!({"since": since}),
    ));
    println!("browser after Leave: {after}");
    wd.wait_js(
        "the start screen after Leave",
        "return !document.getElementById('start-screen').hidden;",
        json!([]),
    );
    let painted = wd.js(PAINTED, json!([]));
    println!("painted per tile: {painted}");

    rt.block_on(br.quit());
    wd.end();
    println!(
        "e2e total {} ({} WebDriver requests sent again)",
        secs(t0.elapsed()),
        retries()
    );
}
