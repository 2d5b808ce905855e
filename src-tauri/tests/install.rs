//! The app as a user gets it: `scripts/package-deb.sh` builds the Debian package (dev profile,
//! `tauri build --debug --bundles deb`), `apt-get install ./…deb` installs it, the desktop entry
//! it installs must name an installed binary and an icon the hicolor theme resolves, and that
//! installed binary — started on a private Xvfb as the desktop menu would start it — must open
//! its window (title from `tauri.conf.json`) and paint the start screen. The package is removed
//! at the end, also when the test fails, so the machine is left as it was.
//!
//! Needs root (apt-get) and the Tauri CLI that `scripts/setup.sh` installs under tests/package/;
//! `./scripts/test.sh` runs it offline, inside its loopback-only network namespace (every
//! dependency of the package is already installed there, so apt needs no network).
//! `RTCIO_INSTALL_SCREENSHOT=FILE` keeps a copy of the screenshot (docs/screenshot-installed-start.png
//! is one).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rtcio_media::capture::xvfb::VirtualDisplay;
use serde_json::Value;

use common::process::{Group, Scratch, app_on_xvfb};

/// Building the package: on a target dir warmed by `cargo test` only the app crates are compiled
/// again (with `tauri/custom-protocol`), under a minute; the bound is for a loaded CI box.
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// apt-get install / remove of a local package (includes waiting for the dpkg lock).
const APT_TIMEOUT: Duration = Duration::from_secs(3 * 60);
/// From starting the installed app to its start screen painted (WebKit's first paint can take a
/// while on a loaded CI box; window.rs allows the same).
const WINDOW_TIMEOUT: Duration = Duration::from_secs(90);
/// Standard deviation (0..1, ImageMagick's `%[fx:standard_deviation]`) above which the window is
/// taken to show the UI: a blank or background-only webview is ~0, the start screen ~0.1.
const MIN_STDDEV: f64 = 0.04;
/// The hicolor theme's icon directories.
const HICOLOR: &str = "/usr/share/icons/hicolor";
/// What a desktop session's launcher searches for a bare `Exec` name.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tauri_conf() -> Value {
    let path = manifest_dir().join("tauri.conf.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("src-tauri/tauri.conf.json"))
        .expect("tauri.conf.json is JSON")
}

/// Runs `cmd` under coreutils `timeout` (which signals the command's whole process group), so a
/// hung build or a dpkg lock held elsewhere fails the test instead of hanging it.
fn run_bounded(what: &str, cmd: &mut Command, limit: Duration) -> Output {
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(ToOwned::to_owned).collect();
    let mut bounded = Command::new("timeout");
    bounded
        .args(["--kill-after=10", &format!("{}", limit.as_secs())])
        .arg(program)
        .args(args)
        .stdin(Stdio::null());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => bounded.env(key, value),
            None => bounded.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        bounded.current_dir(dir);
    }
    let out = bounded
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    if out.status.code() == Some(124) || out.status.code() == Some(137) {
        panic!(
            "{what}: timed out after {} s; output:\n{}",
            limit.as_secs(),
            tail(&out, 60)
        );
    }
    out
}

/// The last `lines` lines of a command's stdout and stderr, for panic messages.
fn tail(out: &Output, lines: usize) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn apt_get(args: &[&str]) -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-y", "-o", "DPkg::Lock::Timeout=60"])
        .args(args);
    cmd
}

/// The installed package: removed when dropped (the test's end, or a panic on the way).
struct Installed {
    package: String,
    removed: bool,
}

impl Installed {
    fn remove(&mut self) -> Output {
        self.removed = true;
        run_bounded(
            "apt-get remove",
            &mut apt_get(&["remove", &self.package]),
            APT_TIMEOUT,
        )
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.removed {
            let out = self.remove();
            if !out.status.success() {
                eprintln!(
                    "apt-get remove {} failed; remove it by hand (dpkg -r {}):\n{}",
                    self.package,
                    self.package,
                    tail(&out, 20)
                );
            }
        }
    }
}

/// `tauri build` links its own variant of the app (with `tauri/custom-protocol`) to
/// `target/debug/rtcio-desktop`, the binary the other test binaries start. This puts the one
/// `cargo test` built back when dropped.
struct KeepDevBinary {
    path: PathBuf,
    saved: PathBuf,
}

impl KeepDevBinary {
    fn new() -> Option<Self> {
        let path = PathBuf::from(env!("CARGO_BIN_EXE_rtcio-desktop"));
        let saved = path.with_file_name("rtcio-desktop.kept-by-install-test");
        let _ = std::fs::remove_file(&saved);
        std::fs::hard_link(&path, &saved).ok()?;
        Some(Self { path, saved })
    }
}

impl Drop for KeepDevBinary {
    fn drop(&mut self) {
        if let Err(e) = std::fs::rename(&self.saved, &self.path) {
            eprintln!(
                "could not put {} back ({e}); `cargo build` restores it",
                self.path.display()
            );
        }
    }
}

/// `Key=value` lines of the `[Desktop Entry]` group.
fn desktop_entry(text: &str) -> Vec<(String, String)> {
    let mut in_group = false;
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_group = line == "[Desktop Entry]";
        } else if in_group && let Some((key, value)) = line.split_once('=') {
            keys.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    keys
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR",
        "{} is not a PNG",
        path.display()
    );
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    (be(16), be(20))
}

/// `%[fx:standard_deviation]` of an image (0 for a single colour).
fn stddev(path: &Path) -> f64 {
    let out = Command::new("identify")
        .args(["-format", "%[fx:standard_deviation]"])
        .arg(path)
        .output()
        .expect("identify (imagemagick, installed by scripts/setup.sh)");
    assert!(
        out.status.success(),
        "identify {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("identify prints a number")
}

/// `import` (imagemagick) of one window, or of the whole screen with `"root"`.
fn screenshot(display: &str, window: &str, to: &Path) -> bool {
    Command::new("import")
        .args(["-display", display, "-window", window])
        .arg(to)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        && to.exists()
}

#[test]
fn deb_installs_and_the_installed_app_opens_its_start_screen() {
    let started = Instant::now();
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test installs a .deb with apt-get and needs root: run it as root \
         (`sudo ./scripts/test.sh`; CI runs as root)"
    );
    let conf = tauri_conf();
    let window_conf = &conf["app"]["windows"][0];
    let title = window_conf["title"].as_str().expect("app.windows[0].title");
    let width = window_conf["width"].as_u64().expect("app.windows[0].width") as u32;
    let height = window_conf["height"]
        .as_u64()
        .expect("app.windows[0].height") as u32;

    let scratch = Scratch(
        std::env::temp_dir().join(format!("rtcio-desktop-install-test-{}", std::process::id())),
    );
    std::fs::create_dir_all(&scratch.0).expect("scratch dir");

    // 1. Build the package (the script prints its path on stdout, the build log on stderr).
    let script = manifest_dir().join("../scripts/package-deb.sh");
    let built = {
        let _keep = KeepDevBinary::new();
        run_bounded(
            "scripts/package-deb.sh",
            // Everything was fetched for `cargo test`: no network needed (nor present in
            // test.sh's namespace).
            Command::new(&script).env("CARGO_NET_OFFLINE", "true"),
            BUILD_TIMEOUT,
        )
    };
    assert!(
        built.status.success(),
        "scripts/package-deb.sh failed ({}):\n{}",
        built.status,
        tail(&built, 80)
    );
    let deb = PathBuf::from(String::from_utf8_lossy(&built.stdout).trim());
    assert!(
        deb.is_absolute() && deb.extension().is_some_and(|e| e == "deb") && deb.is_file(),
        "scripts/package-deb.sh printed {deb:?}, not the path of a .deb"
    );
    let age = std::fs::metadata(&deb)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .expect("the .deb's mtime");
    assert!(
        age <= started.elapsed() + Duration::from_secs(5),
        "{} is {} s old: the script did not build it now",
        deb.display(),
        age.as_secs()
    );
    let field = |name: &str| {
        let out = Command::new("dpkg-deb")
            .arg("-f")
            .arg(&deb)
            .arg(name)
            .output()
            .expect("dpkg-deb");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let package = field("Package");
    assert!(
        !package.is_empty(),
        "{} has no Package field",
        deb.display()
    );
    println!(
        "built {} ({:.1} MiB, {package} {}) in {:.1} s",
        deb.display(),
        std::fs::metadata(&deb).map(|m| m.len()).unwrap_or(0) as f64 / 1048576.0,
        field("Version"),
        started.elapsed().as_secs_f64()
    );

    // 2. Install it as a user would. Never over an existing installation: removing it at the end
    // would change the machine.
    assert!(
        !is_installed(&package),
        "{package} is already installed on this machine; this test installs and removes it, so \
         it does not touch an existing installation: remove it first (apt-get remove {package})"
    );
    let install_started = Instant::now();
    let mut installed = Installed {
        package: package.clone(),
        removed: false,
    };
    let out = run_bounded(
        "apt-get install",
        &mut apt_get(&["install", deb.to_str().expect("UTF-8 path")]),
        APT_TIMEOUT,
    );
    assert!(
        out.status.success() && is_installed(&package),
        "apt-get install {} failed ({}); every Depends must already be installed when there is \
         no network:\n{}",
        deb.display(),
        out.status,
        tail(&out, 40)
    );
    println!(
        "installed with apt-get in {:.1} s",
        install_started.elapsed().as_secs_f64()
    );
    let listed = Command::new("dpkg")
        .args(["-L", &package])
        .output()
        .expect("dpkg -L");
    let files: Vec<PathBuf> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();

    // 3. The desktop entry: a name, an Exec that is the installed binary, an icon the theme finds.
    let entries: Vec<&PathBuf> = files
        .iter()
        .filter(|f| {
            f.parent() == Some(Path::new("/usr/share/applications"))
                && f.extension().is_some_and(|e| e == "desktop")
        })
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "{package} should install one /usr/share/applications/*.desktop, installs: {entries:?}"
    );
    let entry_path = entries[0];
    let entry_text = std::fs::read_to_string(entry_path).expect("read the desktop entry");
    let entry = desktop_entry(&entry_text);
    let key = |name: &str| {
        entry
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{} has no {name}=:\n{entry_text}", entry_path.display()))
    };
    assert!(
        !key("Name").is_empty(),
        "empty Name= in {}",
        entry_path.display()
    );
    assert_eq!(
        key("Type"),
        "Application",
        "Type= in {}",
        entry_path.display()
    );
    let exec = key("Exec")
        .split_whitespace()
        .next()
        .expect("Exec= names a program")
        .to_owned();
    let binary = if exec.starts_with('/') {
        PathBuf::from(&exec)
    } else {
        SYSTEM_PATH
            .split(':')
            .map(|dir| Path::new(dir).join(&exec))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("Exec={exec} is on no directory of {SYSTEM_PATH}"))
    };
    assert!(
        files.contains(&binary),
        "Exec={exec} resolves to {}, which {package} does not install (installs: {files:?})",
        binary.display()
    );
    let mode = std::fs::metadata(&binary)
        .expect("stat")
        .permissions()
        .mode();
    assert!(
        mode & 0o111 != 0,
        "{} is not executable ({mode:o})",
        binary.display()
    );
    let icon = key("Icon");
    assert!(
        !icon.contains('/'),
        "Icon={icon}: a theme icon name is expected (the bundle installs into {HICOLOR})"
    );
    // Every icon the bundle lists (tauri.conf.json) must be installed at its size as hicolor/<W>x<H>[@scale]/apps/<Icon>.png.
    let mut found = Vec::new();
    for size_dir in std::fs::read_dir(HICOLOR).expect("hicolor theme").flatten() {
        let png = size_dir.path().join("apps").join(format!("{icon}.png"));
        if !png.is_file() {
            continue;
        }
        assert!(
            files.contains(&png),
            "{} is not from {package}",
            png.display()
        );
        let name = size_dir.file_name().to_string_lossy().into_owned();
        let (w, h) = png_size(&png);
        let want = name.split('@').next().unwrap_or_default().to_owned();
        assert_eq!(
            format!("{w}x{h}"),
            want,
            "{} is {w}x{h} px, in the {name} directory",
            png.display()
        );
        found.push(w);
    }
    for listed_icon in conf["bundle"]["icon"].as_array().expect("bundle.icon") {
        let source = manifest_dir().join(listed_icon.as_str().expect("icon path"));
        if source.extension().is_some_and(|e| e == "png") {
            let (w, _) = png_size(&source);
            assert!(
                found.contains(&w),
                "no {w} px {icon}.png under {HICOLOR}/*/apps/ for {} (installed sizes: {found:?})",
                source.display()
            );
        }
    }
    println!(
        "desktop entry {}: Name={}, Exec={exec} → {}, Icon={icon} at {found:?} px",
        entry_path.display(),
        key("Name"),
        binary.display()
    );

    // 4. The installed binary on its own Xvfb, sized like the window so the screenshot is it.
    let xvfb = VirtualDisplay::start(width, height).expect("Xvfb (installed by scripts/setup.sh)");
    let log = scratch.0.join("app.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let mut app = Group(
        app_on_xvfb(&mut Command::new(&binary), xvfb.display(), &scratch.0)
            .env("RUST_LOG", "info")
            .current_dir(&scratch.0)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display())),
    );
    let app_started = Instant::now();
    let app_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let window_shot = scratch.0.join("window.png");
    let mut window_id = None;
    let mut seen = 0.0;
    loop {
        if let Some(status) = app.0.try_wait().expect("app status") {
            panic!(
                "the installed {} exited ({status}) before showing its start screen:\n{}",
                binary.display(),
                app_log()
            );
        }
        if window_id.is_none() {
            // The window exists once xwininfo finds it by its title.
            let out = Command::new("xwininfo")
                .args(["-display", xvfb.display(), "-name", title])
                .output()
                .expect("xwininfo (x11-utils, installed by scripts/setup.sh)");
            let text = String::from_utf8_lossy(&out.stdout);
            if out.status.success() && text.contains("IsViewable") {
                window_id = text
                    .split_whitespace()
                    .find(|w| w.starts_with("0x"))
                    .map(str::to_owned);
                println!(
                    "window {title:?} ({}) mapped after {:.1} s",
                    window_id.as_deref().unwrap_or("?"),
                    app_started.elapsed().as_secs_f64()
                );
            }
        }
        // Painted once the window holds more than one colour (the start card, its fields).
        if let Some(id) = &window_id
            && screenshot(xvfb.display(), id, &window_shot)
        {
            seen = stddev(&window_shot);
            if seen >= MIN_STDDEV {
                break;
            }
        }
        assert!(
            app_started.elapsed() < WINDOW_TIMEOUT,
            "no start screen after {} s: window {title:?} {}; app output:\n{}",
            WINDOW_TIMEOUT.as_secs(),
            match &window_id {
                None => "never mapped".to_owned(),
                Some(id) => format!("{id} mapped but blank (standard deviation {seen:.3})"),
            },
            app_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    println!(
        "start screen painted after {:.1} s (standard deviation {seen:.3})",
        app_started.elapsed().as_secs_f64()
    );

    // 5. The screenshot: the whole screen, not blank.
    let shot = scratch.0.join("installed-start.png");
    assert!(
        screenshot(xvfb.display(), "root", &shot),
        "import -window root failed"
    );
    let (w, h) = png_size(&shot);
    assert_eq!((w, h), (width, height), "screenshot size");
    let shot_stddev = stddev(&shot);
    assert!(
        shot_stddev >= MIN_STDDEV,
        "the screenshot is blank (standard deviation {shot_stddev:.3})"
    );
    if let Some(status) = app.0.try_wait().expect("app status") {
        panic!(
            "the app exited ({status}) while being screenshot:\n{}",
            app_log()
        );
    }
    match std::env::var_os("RTCIO_INSTALL_SCREENSHOT") {
        Some(keep) => {
            std::fs::copy(&shot, &keep).expect("copy the screenshot");
            println!("screenshot kept as {}", PathBuf::from(keep).display());
        }
        None => println!("screenshot taken (RTCIO_INSTALL_SCREENSHOT=FILE keeps a copy)"),
    }

    // 6. Leave the machine as it was: app stopped, package removed, its files gone.
    drop(app);
    drop(xvfb);
    let out = installed.remove();
    assert!(
        out.status.success() && !is_installed(&package),
        "apt-get remove {package} failed ({}):\n{}",
        out.status,
        tail(&out, 20)
    );
    assert!(
        !binary.exists() && !entry_path.exists(),
        "{} or {} still there after removing {package}",
        binary.display(),
        entry_path.display()
    );
    println!(
        "removed {package}; whole test {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
