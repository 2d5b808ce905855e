//! The Wayland (desktop portal + PipeWire) screen source where no portal exists: a private
//! `dbus-daemon` without any services, a bus that never answers, no bus at all — each must end
//! in a typed error within its time limit. And the automatic backend choice under a private
//! Xvfb: X11, also when the session claims Wayland but the portal is missing.
#![cfg(feature = "wayland")]

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rtcio_media::capture::xvfb::VirtualDisplay;
use rtcio_media::{
    MediaError, PortalConfig, PortalScreenSource, ScreenConfig, SessionEnv, VideoSource,
    open_screen_source_in,
};

/// A session bus of our own: no service files, so nothing (no real portal) can be activated.
struct PrivateBus {
    child: Child,
    address: String,
    _dir: TempDir,
}

impl PrivateBus {
    fn start() -> Self {
        let dir = TempDir::new("bus");
        let config = dir.0.join("session.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.0.display()
            ),
        )
        .expect("write bus config");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dbus-daemon (install the dbus-daemon package)");
        let stdout = child.stdout.take().expect("stdout");
        let mut address = String::new();
        BufReader::new(stdout)
            .read_line(&mut address)
            .expect("bus address");
        let address = address.trim().to_owned();
        assert!(address.starts_with("unix:"), "address {address:?}");
        Self {
            child,
            address,
            _dir: dir,
        }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p =
            std::env::temp_dir().join(format!("rtcio-portal-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn quick(bus: &str) -> PortalConfig {
    PortalConfig {
        bus_address: Some(bus.to_owned()),
        connect_timeout: Duration::from_secs(2),
        dialog_timeout: Duration::from_secs(2),
        frame_timeout: Duration::from_secs(2),
        ..PortalConfig::default()
    }
}

#[test]
fn private_bus_without_portal_is_portal_unavailable_quickly() {
    let bus = PrivateBus::start();
    let t = Instant::now();
    let err = PortalScreenSource::open(quick(&bus.address)).unwrap_err();
    let took = t.elapsed();
    assert!(
        matches!(err, MediaError::PortalUnavailable(_)),
        "got {err:?}"
    );
    assert!(err.to_string().contains("portal"), "{err}");
    // ServiceUnknown comes straight from the bus: no timeout involved.
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn no_bus_is_portal_unavailable() {
    let dir = TempDir::new("nobus");
    let address = format!("unix:path={}", dir.0.join("missing").display());
    let t = Instant::now();
    let err = PortalScreenSource::open(quick(&address)).unwrap_err();
    assert!(
        matches!(err, MediaError::PortalUnavailable(_)),
        "got {err:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn silent_bus_times_out_within_the_limit() {
    // A socket that accepts and then never says a word: the D-Bus handshake hangs.
    let dir = TempDir::new("silent");
    let path = dir.0.join("bus");
    let listener = UnixListener::bind(&path).expect("bind");
    let holder = std::thread::spawn(move || {
        let conn = listener.accept();
        std::thread::sleep(Duration::from_millis(1500));
        drop(conn);
    });
    let config = PortalConfig {
        connect_timeout: Duration::from_millis(500),
        ..quick(&format!("unix:path={}", path.display()))
    };
    let t = Instant::now();
    let err = PortalScreenSource::open(config).unwrap_err();
    let took = t.elapsed();
    assert!(matches!(err, MediaError::Timeout(_)), "got {err:?}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    let _ = holder.join();
}

#[test]
fn automatic_selection_under_xvfb_captures_x11() {
    let xvfb = VirtualDisplay::start(1280, 720).expect("Xvfb (install the xvfb package)");
    let env = SessionEnv {
        display: Some(xvfb.display().to_owned()),
        wayland_display: None,
        session_type: Some("x11".into()),
    };
    let screen = ScreenConfig {
        display: None,
        monitor: None,
        fps: 30.0,
        paced: false,
    };
    // No portal config is used on X11: a bus that does not exist proves it is never asked.
    let mut source =
        open_screen_source_in(&env, screen, quick("unix:path=/nonexistent/bus")).unwrap();
    assert_eq!(source.size(), (1280, 720));
    let frame = source.next_frame().unwrap();
    assert_eq!((frame.width, frame.height), (1280, 720));
    source.stop();
    assert!(matches!(source.next_frame(), Err(MediaError::Stopped)));
}

#[test]
fn wayland_session_without_portal_falls_back_to_x11_and_no_display_is_an_error() {
    let xvfb = VirtualDisplay::start(640, 480).expect("Xvfb (install the xvfb package)");
    let bus = PrivateBus::start();
    let screen = ScreenConfig {
        paced: false,
        ..ScreenConfig::default()
    };
    // XWayland-like session whose portal is missing: X11 is the fallback.
    let env = SessionEnv {
        display: Some(xvfb.display().to_owned()),
        wayland_display: Some("wayland-rtcio-test".into()),
        session_type: Some("wayland".into()),
    };
    let mut source = open_screen_source_in(&env, screen.clone(), quick(&bus.address)).unwrap();
    let frame = source.next_frame().unwrap();
    assert_eq!((frame.width, frame.height), (640, 480));

    // Pure Wayland without a portal: the typed portal error, not a panic or a hang.
    let env = SessionEnv {
        display: None,
        ..env
    };
    let err = open_screen_source_in(&env, screen.clone(), quick(&bus.address))
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(err, MediaError::PortalUnavailable(_)),
        "got {err:?}"
    );

    // Nothing at all.
    let err = open_screen_source_in(&SessionEnv::default(), screen, quick(&bus.address))
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, MediaError::Display(_)), "got {err:?}");
}
