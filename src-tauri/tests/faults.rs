//! Faults with the real app (the `rtcio-desktop` window on a private Xvfb, driven through
//! WebDriver as in `e2e.rs`) in a call on an external `rtcio-server` process with `rtcio join`
//! participants, everything on loopback:
//!
//! - the app SIGKILLed mid-call: the CLI peer prints `peer-disconnect` for it within seconds
//!   (the server sees the socket die and says `user-disconnected`);
//! - the server SIGKILLed mid-call and restarted on the same port 2 s later: the CLI decodes the
//!   app's video in every stats second, the app keeps painting the CLI's, the app ends with one
//!   tile for the CLI (its new id), and a third participant joins and gets the app's video.
//!
//! Needs what `e2e.rs` needs plus the `rtcio` and `rtcio-server` binaries (built by `cargo test
//! --workspace`).

mod common;

use std::time::{Duration, Instant};

use common::browser::Browser;
use common::cli::{Participant, ServerProc, epoch_ms, frames_per_tick, signal};
use common::process::Scratch;
use common::webdriver::{App, PAINTED_AT_LEAST, WebDriver, free_port, tail};
use rtcio_media::capture::xvfb::VirtualDisplay;
use serde_json::{Value, json};

const APP_NAME: &str = "Fault App";
const CLI_NAME: &str = "cli";
/// A peer killed while signaling is up is announced by the server (`user-disconnected`) as soon
/// as its socket closes; without that hint only ICE consent (~30 s) would tell.
const NOTICE_BOUND: Duration = Duration::from_secs(10);
/// The rtc.io page ignores the hint while the connection looks healthy and drops the peer on its
/// liveness watchdog after ICE fails (~17 s measured); ICE consent alone takes ~30 s more.
const PAGE_NOTICE_BOUND: Duration = Duration::from_secs(30);
/// The longest time a page may run without a new painted (or decoded) frame for "video never
/// stopped": a 15 fps stream on a loaded 2-core box stutters by a few hundred ms at most, while
/// closing the old connections before the new ones carry video loses seconds. Time in which the
/// page itself did not run (a starved CPU: 1 s seen at load average 15) does not count.
const MAX_GAP_MS: f64 = 1000.0;

/// The app, its server and its display for one test (fields drop in order: the app first).
struct Rig {
    app: App,
    scratch: Scratch,
    _xvfb: VirtualDisplay,
    server: ServerProc,
    port: u16,
    url: String,
    room: String,
}

impl Rig {
    fn start(tag: &str) -> Rig {
        let port = free_port();
        let server = ServerProc::start(port);
        let xvfb = VirtualDisplay::start(1280, 800).expect("Xvfb (installed by scripts/setup.sh)");
        let scratch = Scratch(
            std::env::temp_dir().join(format!("rtcio-desktop-faults-{tag}-{}", std::process::id())),
        );
        std::fs::create_dir_all(&scratch.0).expect("scratch dir");
        let app = App::start(xvfb.display(), &scratch.0);
        Rig {
            app,
            scratch,
            _xvfb: xvfb,
            server,
            port,
            url: format!("http://127.0.0.1:{port}"),
            room: format!("faults-{tag}-{}", std::process::id()),
        }
    }

    fn wd(&self) -> &WebDriver {
        &self.app.wd
    }

    /// Fills in the start screen with the external server's URL and joins, as a person would.
    fn join(&self) {
        let wd = self.wd();
        wd.type_into("#name", APP_NAME);
        wd.type_into("#room", &self.room);
        wd.click("#server-url-choice");
        wd.type_into("#server-url", &self.url);
        wd.click("#join-button");
        wd.wait_js(
            "the call screen",
            "return !document.getElementById('call-screen').hidden;",
            json!([]),
        );
    }

    /// Waits until the app has painted ≥ `frames` frames of a tile of peer `id`; a failure shows
    /// the page's video counters, its tiles and the app's log.
    fn paints(&self, id: &str, frames: u64) -> Value {
        let deadline = Instant::now() + common::webdriver::WAIT;
        loop {
            let v = self
                .wd()
                .js(PAINTED_AT_LEAST, json!([format!("{id}/"), frames]));
            if !v.is_null() {
                return v;
            }
            if Instant::now() > deadline {
                let stats = self.wd().js(
                    "const s = window.__rtcioVideo; return s && {...s, canvases: [...document.querySelectorAll('#grid canvas.video')].map((c) => [c.dataset.key, c.dataset.painted ?? null, c.width, c.height])};",
                    json!([]),
                );
                panic!(
                    "the app painted no {frames} frames of {id} in {:?}\nvideo counters: {stats}\ntiles: {}\napp log tail:\n{}",
                    common::webdriver::WAIT,
                    self.tiles(),
                    self.app_log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The app's person tiles as `[data-id, name]`.
    fn tiles(&self) -> Value {
        self.wd().js(
            "return [...document.querySelectorAll('#grid .tile[data-id]')].map((t) =>
               [t.dataset.id, t.querySelector('.tile-name')?.textContent ?? '']);",
            json!([]),
        )
    }

    fn app_log(&self) -> String {
        tail(&self.scratch.0.join("app.log"), 60)
    }
}

/// The CLI's id for the app (its `peer-connect` naming us), not `old`.
fn app_peer_id(cli: &Participant, old: &str) -> String {
    cli.wait_for("peer-connect from the app", |v| {
        v["type"] == "peer-connect" && v["name"] == APP_NAME && v["peer"] != old
    })["peer"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The rtc.io browser peer (`tests/browser/`, headless Chromium, fake camera) in the room.
struct Page {
    br: Browser,
    page: u64,
    /// Drives the browser driver's async client from these synchronous tests.
    rt: tokio::runtime::Runtime,
}

impl Page {
    fn join(url: &str, room: &str) -> Page {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut br = rt.block_on(Browser::start());
        let page = rt.block_on(br.open("web"));
        rt.block_on(br.eval(
            page,
            "(o) => rtcio.join(o.url, o)",
            json!({"url": url, "roomId": room, "name": "web", "camera": true}),
        ));
        Page { br, page, rt }
    }

    /// Waits (in the page, bounded) until `expr` of `arg` is truthy; returns it.
    fn until(&mut self, what: &str, expr: &str, arg: Value) -> Value {
        let cmd = json!({"cmd": "waitFn", "page": self.page, "expr": expr, "arg": arg,
            "timeoutMs": common::webdriver::WAIT.as_millis() as u64});
        self.rt
            .block_on(self.br.cmd(cmd))
            .unwrap_or_else(|e| panic!("the page: no {what}: {e}"))
    }

    fn eval(&mut self, expr: &str, arg: Value) -> Value {
        self.rt.block_on(self.br.eval(self.page, expr, arg))
    }
}

/// The peers of the page's `<video>` tiles, as a sorted list.
const PAGE_TILES: &str =
    "() => [...document.querySelectorAll('#tiles video')].map((v) => v.dataset.peer).sort()";

#[test]
fn app_killed_mid_call_is_noticed() {
    let rig = Rig::start("kill-app");
    rig.join();
    let cli = Participant::join(&rig.url, &rig.room, CLI_NAME);
    let cli_id = cli.id();
    let app_id = app_peer_id(&cli, "");
    let mut web = Page::join(&rig.url, &rig.room);
    // Media flows both ways before the kill, and the page shows the app's tile.
    cli.decodes_from(APP_NAME, 5, 0);
    rig.paints(&cli_id, 5);
    web.until(
        "tile for the app",
        "(o) => [...document.querySelectorAll('#tiles video')].some((v) => v.dataset.peer === o.id)",
        json!({"id": app_id}),
    );

    let pid = rig.app.pid();
    let killed = epoch_ms();
    let t = Instant::now();
    signal(pid, "-KILL");
    cli.wait_for("peer-disconnect of the killed app", |v| {
        v["type"] == "peer-disconnect" && v["peer"] == app_id.as_str()
    });
    let noticed = t.elapsed();
    web.until(
        "tile for the killed app removed",
        "(o) => ![...document.querySelectorAll('#tiles video')].some((v) => v.dataset.peer === o.id)",
        json!({"id": app_id}),
    );
    let page_noticed = t.elapsed();
    let hint = cli
        .seen()
        .into_iter()
        .find(|v| {
            v["type"] == "server-event"
                && v["event"] == "user-disconnected"
                && v.to_string().contains(&app_id)
        })
        .map(|v| {
            format!(
                "after {} ms",
                v["ts"].as_u64().unwrap_or(0).saturating_sub(killed)
            )
        });
    println!(
        "app SIGKILLed: the CLI printed peer-disconnect after {:.2} s (the server's user-disconnected: {}); \
         the page dropped the app's tile after {:.2} s",
        noticed.as_secs_f64(),
        hint.as_deref().unwrap_or("not seen"),
        page_noticed.as_secs_f64()
    );
    assert!(
        noticed < NOTICE_BOUND,
        "the CLI took {noticed:?} to notice the killed app (bound {NOTICE_BOUND:?})"
    );
    assert!(
        page_noticed < PAGE_NOTICE_BOUND,
        "the page took {page_noticed:?} to drop the killed app's tile (bound {PAGE_NOTICE_BOUND:?})"
    );
}

/// Records, every 50 ms in the app's page, the frames painted so far per tile key
/// (`videoStats.perKey`).
const APP_SAMPLER: &str = "const g = (window.__faults = {samples: []});
  g.timer = setInterval(() => {
    const s = window.__rtcioVideo;
    if (s) g.samples.push({t: performance.now(), wall: Date.now(), per: {...s.perKey}});
  }, 50);
  return true;";

/// Records, every 50 ms in the browser page, the frames Chromium decoded so far per peer id.
const PAGE_SAMPLER: &str = "() => {
  const g = (window.__faults = {samples: []});
  g.timer = setInterval(async () => {
    const per = {};
    for (const [id, r] of Object.entries(await rtcio.mediaStats({}))) per[id] = r?.video?.framesDecoded ?? 0;
    g.samples.push({t: performance.now(), wall: Date.now(), per});
  }, 50);
  return true;
}";

/// Of the samples above: the longest pause between two samples in which any counter whose key
/// `match`es grew (`max`; `at`: epoch ms of its end), the same counting at most 100 ms per
/// sampling interval (`idle`: time the page ran without a new frame; a page frozen by a starved
/// CPU takes no samples, and the frames waiting meanwhile are painted as soon as it runs), that
/// time since the last growth (`tail`), the sampler's own longest interval (`timer`), and per
/// key the first and last growth (epoch ms) and the frames counted.
const GAP_OF: &str = "(samples, match) => {
  const seen = {}, keys = {};
  let last = 0, max = 0, at = 0, prev = 0, timer = 0, run = 0, idle = 0;
  for (const x of samples.slice().sort((a, b) => a.t - b.t)) {
    if (prev) { timer = Math.max(timer, x.t - prev); run += Math.min(x.t - prev, 100); }
    prev = x.t;
    let grew = false;
    for (const [k, n] of Object.entries(x.per)) {
      if (!match(k) || n <= (seen[k] ?? 0)) continue;
      seen[k] = n; grew = true;
      keys[k] ??= {first: x.wall};
      keys[k].last = x.wall; keys[k].frames = n;
    }
    if (!grew) continue;
    if (last && x.t - last > max) { max = x.t - last; at = x.wall; }
    if (last) idle = Math.max(idle, run);
    run = 0;
    last = x.t;
  }
  // `tail`: the page's running time since the last new frame (a frozen page counts as above).
  return {max, at, idle, tail: last ? run : null, timer, samples: samples.length, keys};
}";

/// Checks one sampler's result: the page never ran for [`MAX_GAP_MS`] without a new frame,
/// also not at the end. `log`: what to show with a failure.
fn assert_no_gap(who: &str, gap: &Value, log: &str) {
    for (what, field) in [
        ("without a frame", "idle"),
        ("since its last frame", "tail"),
    ] {
        let ms = gap[field].as_f64().unwrap_or(f64::MAX);
        assert!(ms < MAX_GAP_MS, "{who} ran {ms:.0} ms {what}: {gap}\n{log}");
    }
}

/// Frames counted by a sampler for keys starting with `prefix`.
fn frames_of(gap: &Value, prefix: &str) -> u64 {
    gap["keys"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v["frames"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn app_keeps_video_across_a_server_restart() {
    let mut rig = Rig::start("restart");
    rig.join();
    let cli = Participant::join(&rig.url, &rig.room, CLI_NAME);
    let cli_old = cli.id();
    let app_old = app_peer_id(&cli, "");
    let mut web = Page::join(&rig.url, &rig.room);
    cli.decodes_from(APP_NAME, 5, 0);
    rig.paints(&cli_old, 5);
    web.until(
        "video decoded from the app",
        "async (o) => { const s = (await rtcio.mediaStats({peer: o.id}))[o.id]; return s && s.video.framesDecoded >= 5; }",
        json!({"id": app_old}),
    );
    rig.wd().js(APP_SAMPLER, json!([]));
    web.eval(PAGE_SAMPLER, Value::Null);

    // The server dies without a word and comes back on the same port 2 s later.
    let killed = epoch_ms();
    let t_kill = Instant::now();
    rig.server.kill9();
    std::thread::sleep(Duration::from_secs(2));
    rig.server = ServerProc::start(rig.port);
    let back = epoch_ms();

    let cli_new = cli.wait_for("signaling back with a new id", |v| {
        v["type"] == "signaling" && v["state"] == "connected" && v["id"] != cli_old.as_str()
    })["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let app_new = app_peer_id(&cli, &app_old);
    let old_closed = cli.wait_for("the old connection to the app closed", |v| {
        v["type"] == "peer-disconnect" && v["peer"] == app_old.as_str()
    })["ts"]
        .as_u64()
        .unwrap_or(0);
    // The app paints the CLI's new connection and ends with one tile for it, under its new id.
    rig.paints(&cli_new, 5);
    let deadline = Instant::now() + common::webdriver::WAIT;
    let mut two_tiles = false;
    let one_tile = loop {
        let tiles = rig.tiles();
        let cli_tiles: Vec<&Value> = tiles
            .as_array()
            .map(|a| a.iter().filter(|t| t[1] == CLI_NAME).collect())
            .unwrap_or_default();
        two_tiles |= cli_tiles.len() > 1;
        if cli_tiles.len() == 1 && cli_tiles[0][0] == cli_new.as_str() {
            break t_kill.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the app's tiles are {tiles}, not one for the CLI's new id {cli_new}\napp log tail:\n{}",
            rig.app_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The page ends with one tile for the app, under its new id.
    web.until(
        "one tile for the app, under its new id",
        &format!(
            "(o) => {{ const t = ({PAGE_TILES})().filter((p) => p === o.old || p === o.new);
               return t.length === 1 && t[0] === o.new; }}"
        ),
        json!({"old": app_old, "new": app_new}),
    );
    let page_one_tile = t_kill.elapsed();
    // Two more stats seconds on the new connection alone.
    let mut after = epoch_ms();
    for _ in 0..2 {
        after = cli.wait_for("a stats second after the old connection closed", |v| {
            v["type"] == "video-stats" && v["ts"].as_u64().unwrap_or(0) > after + 500
        })["ts"]
            .as_u64()
            .unwrap_or(after);
    }

    let ticks = frames_per_tick(&cli.seen(), APP_NAME, killed);
    let cli_gap = ticks
        .windows(2)
        .map(|w| w[1].0.saturating_sub(w[0].0))
        .max()
        .unwrap_or(u64::MAX);
    let app_gap = rig.wd().js(
        &format!(
            "const g = window.__faults; clearInterval(g.timer);
             return ({GAP_OF})(g.samples, (k) => arguments[0].some((p) => k.startsWith(p)));"
        ),
        json!([[format!("{cli_old}/"), format!("{cli_new}/")]]),
    );
    let page_gap = web.eval(
        &format!(
            "(o) => {{ const g = window.__faults; clearInterval(g.timer);
               return ({GAP_OF})(g.samples, (k) => o.ids.includes(k)); }}"
        ),
        json!({"ids": [app_old, app_new]}),
    );
    let at = |g: &Value| (g["at"].as_f64().unwrap_or(0.0) as u64).saturating_sub(killed);
    println!(
        "server SIGKILLed, back after {} ms; the CLI closed its old connection to the app {} ms after the kill \
         ({} ms after the server was back)",
        back.saturating_sub(killed),
        old_closed.saturating_sub(killed),
        old_closed.saturating_sub(back)
    );
    println!(
        "CLI: frames from the app per stats second after the kill {:?}; largest spacing of stats seconds with frames {cli_gap} ms",
        ticks.iter().map(|t| t.1).collect::<Vec<_>>()
    );
    println!(
        "app: largest pause between painted frames of the CLI {:.0} ms, {:.0} ms of it with the page running \
         (50 ms sampling, ending +{} ms; the page's own longest stall {:.0} ms); two tiles for the CLI seen: {two_tiles}; \
         one tile again {:.1} s after the kill",
        app_gap["max"].as_f64().unwrap_or(-1.0),
        app_gap["idle"].as_f64().unwrap_or(-1.0),
        at(&app_gap),
        app_gap["timer"].as_f64().unwrap_or(-1.0),
        one_tile.as_secs_f64()
    );
    println!(
        "chromium: largest pause between decoded frames of the app {:.0} ms, {:.0} ms of it with the page running \
         (50 ms sampling, ending +{} ms; the page's own longest stall {:.0} ms); one tile for the app again {:.1} s after the kill",
        page_gap["max"].as_f64().unwrap_or(-1.0),
        page_gap["idle"].as_f64().unwrap_or(-1.0),
        at(&page_gap),
        page_gap["timer"].as_f64().unwrap_or(-1.0),
        page_one_tile.as_secs_f64()
    );
    let empty: Vec<u64> = ticks
        .iter()
        .filter(|t| t.1 == 0)
        .map(|t| t.0.saturating_sub(killed))
        .collect();
    assert!(
        empty.is_empty(),
        "the CLI decoded no video from the app in the stats seconds at {empty:?} ms after the kill"
    );
    // Stats lines come once a second; a second without any line (no track carrying the app's
    // video) spaces two of them 2 s apart. A starved CLI prints late, not never: 1.86 s was
    // seen at load average 16 with every line counting frames, ~1.0-1.1 s is usual.
    assert!(
        cli_gap < 2000,
        "{cli_gap} ms between two stats seconds with video from the app: a second without any"
    );
    let keys_since_kill = |g: &Value| {
        let mut out = Vec::new();
        for (k, v) in g["keys"].as_object().into_iter().flatten() {
            let rel = |f: &str| (v[f].as_f64().unwrap_or(0.0) as u64).saturating_sub(killed);
            out.push(format!(
                "{k}: +{}..+{} ms, {}",
                rel("first"),
                rel("last"),
                v["frames"]
            ));
        }
        out.join("; ")
    };
    println!("app tiles painted: {}", keys_since_kill(&app_gap));
    println!("page decoded: {}", keys_since_kill(&page_gap));
    let app_log = format!(
        "(kill at {killed} ms since the epoch) app log tail:\n{}",
        rig.app_log()
    );
    assert_no_gap("the app painting the CLI", &app_gap, &app_log);
    assert_no_gap("the page decoding the app", &page_gap, "");
    // And both still get new frames after the samplers stopped.
    rig.paints(&cli_new, frames_of(&app_gap, &format!("{cli_new}/")) + 5);
    web.until(
        "more video decoded from the app",
        "async (o) => { const s = (await rtcio.mediaStats({peer: o.id}))[o.id]; return s && s.video.framesDecoded >= o.n; }",
        json!({"id": app_new, "n": frames_of(&page_gap, &app_new) + 5}),
    );

    // A third participant joins the restarted server and gets the app's video (and the app its).
    let carol = Participant::join(&rig.url, &rig.room, "carol");
    let carol_id = carol.id();
    let t_join = Instant::now();
    carol.decodes_from(APP_NAME, 5, 0);
    rig.paints(&carol_id, 5);
    println!(
        "a third participant decodes the app's video {:.2} s after joining",
        t_join.elapsed().as_secs_f64()
    );
}
