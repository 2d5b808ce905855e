//! The PipeWire half of the Wayland screen source against a private `pipewire` daemon whose
//! only video node is PipeWire's own test pattern (`videotestsrc`): the same path a portal's
//! `OpenPipeWireRemote` fd takes, without a compositor. No session manager runs, so the test
//! links the pattern to our stream itself with `pw-link` (WirePlumber's job on a desktop).
//!
//! Needs the `pipewire` and `pw-link` binaries (Debian `pipewire-bin`); without them the test
//! says so and passes, since the package is optional on build machines.
#![cfg(feature = "wayland")]

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rtcio_media::{MediaError, PortalConfig, PortalScreenSource, VideoSource};
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

const CONFIG: &str = r#"
context.properties = { core.daemon = true core.name = pipewire-0 log.level = 2 }
context.spa-libs = {
    support.*    = support/libspa-support
    videotestsrc = videotestsrc/libspa-videotestsrc
}
context.modules = [
    { name = libpipewire-module-protocol-native }
    { name = libpipewire-module-access }
    { name = libpipewire-module-client-node }
    { name = libpipewire-module-adapter }
    { name = libpipewire-module-spa-node-factory }
    { name = libpipewire-module-link-factory }
]
context.objects = [
    { factory = spa-node-factory args = { factory.name = support.node.driver node.name = Dummy-Driver priority.driver = 20000 } }
    { factory = spa-node-factory args = { factory.name = videotestsrc node.name = rtcio-test-pattern media.class = Video/Source } }
]
"#;

struct Daemon {
    child: Child,
    dir: std::path::PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn have(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// One daemon per test (tests run in parallel): `tag` keeps their runtime dirs apart.
fn start_daemon(tag: &str) -> Daemon {
    let dir = std::env::temp_dir().join(format!("rtcio-pw-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("runtime dir");
    let conf = dir.join("pw.conf");
    std::fs::write(&conf, CONFIG).expect("config");
    let child = Command::new("pipewire")
        .arg("-c")
        .arg(&conf)
        .env("XDG_RUNTIME_DIR", &dir)
        .env("PIPEWIRE_RUNTIME_DIR", &dir)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn pipewire");
    Daemon { child, dir }
}

fn pw_link(daemon: &Daemon, args: &[&str]) -> Option<String> {
    let out = Command::new("pw-link")
        .args(args)
        .env("XDG_RUNTIME_DIR", &daemon.dir)
        .env("PIPEWIRE_RUNTIME_DIR", &daemon.dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Port lines of `pw-link -I -o` / `-I -i` are `  <id> <node>:<port>`.
fn find_port(listing: &str, node: &str) -> Option<(u32, String)> {
    listing.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        let id = it.next()?.parse().ok()?;
        let name = it.next()?;
        name.starts_with(&format!("{node}:"))
            .then(|| (id, name.to_owned()))
    })
}

#[test]
fn pipewire_test_pattern_arrives_as_i420() {
    if !have("pipewire") || !have("pw-link") {
        eprintln!("SKIP: no pipewire / pw-link binary (Debian pipewire-bin)");
        return;
    }
    let daemon = start_daemon("direct");
    let socket = daemon.dir.join("pipewire-0");
    let deadline = Instant::now() + Duration::from_secs(5);
    let (node_id, out_port) = loop {
        if let Some(found) = pw_link(&daemon, &["-I", "-o"])
            .as_deref()
            .and_then(|l| find_port(l, "rtcio-test-pattern"))
        {
            break found;
        }
        assert!(Instant::now() < deadline, "pipewire did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    // pw-link lists port ids; the stream only needs some target id (nothing auto-links here).
    let stream = UnixStream::connect(&socket).expect("connect to pipewire-0");
    let mut source = PortalScreenSource::from_pipewire(
        OwnedFd::from(stream),
        node_id,
        PortalConfig {
            fps: 30.0,
            paced: false,
            frame_timeout: Duration::from_secs(5),
            ..PortalConfig::default()
        },
    )
    .expect("stream connects");

    // Link the pattern to our stream's input port once it exists.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some((_, in_port)) = pw_link(&daemon, &["-I", "-i"])
            .as_deref()
            .and_then(|l| find_port(l, "rtcio-screen"))
        {
            pw_link(&daemon, &[&out_port, &in_port]).expect("pw-link");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "our stream has no input port: {:?}",
            pw_link(&daemon, &["-I", "-i"])
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let frame = source.next_frame().expect("a frame");
    eprintln!("first frame {}x{}", frame.width, frame.height);
    assert!(frame.width >= 2 && frame.height >= 2);
    assert_eq!(frame.y.len(), frame.stride_y * frame.height as usize);
    let first = source.frames_received();
    assert!(first >= 1);
    // Frames keep coming (the pattern is live).
    let t = Instant::now();
    while source.frames_received() < first + 5 {
        assert!(t.elapsed() < Duration::from_secs(5), "frames stalled");
        let _ = source.next_frame().expect("frame");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("{} frames received", source.frames_received());
    source.stop();
    assert!(matches!(source.next_frame(), Err(MediaError::Stopped)));
}

// ---------------------------------------------------------------------------------------------
// A fake xdg-desktop-portal: org.freedesktop.portal.ScreenCast on a private bus, answering every
// request at once (no dialog) with the private daemon's test pattern, or cancelling `Start`.

struct FakeScreenCast {
    socket: std::path::PathBuf,
    node_id: u32,
    cancel_start: Arc<AtomicBool>,
}

fn token(options: &HashMap<String, OwnedValue>, key: &str) -> zbus::fdo::Result<String> {
    options
        .get(key)
        .and_then(|v| String::try_from(v.clone()).ok())
        .ok_or_else(|| zbus::fdo::Error::InvalidArgs(format!("missing {key}")))
}

fn caller_id(header: &zbus::message::Header<'_>) -> zbus::fdo::Result<String> {
    let sender = header
        .sender()
        .ok_or_else(|| zbus::fdo::Error::Failed("no sender".into()))?;
    Ok(sender.trim_start_matches(':').replace('.', "_"))
}

/// Emits `Request.Response` on `path` shortly after the method returned (like the real portal).
fn respond(
    conn: &zbus::Connection,
    path: String,
    code: u32,
    results: HashMap<String, OwnedValue>,
) -> zbus::fdo::Result<OwnedObjectPath> {
    let object = OwnedObjectPath::try_from(path.clone())
        .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
    let conn = conn.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = conn
            .emit_signal(
                None::<zbus::names::BusName<'_>>,
                path.as_str(),
                "org.freedesktop.portal.Request",
                "Response",
                &(code, results),
            )
            .await;
    });
    Ok(object)
}

fn owned(v: Value<'_>) -> OwnedValue {
    v.try_to_owned().expect("owned value")
}

#[zbus::interface(name = "org.freedesktop.portal.ScreenCast")]
impl FakeScreenCast {
    async fn create_session(
        &self,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        let id = caller_id(&header)?;
        let request = format!(
            "/org/freedesktop/portal/desktop/request/{id}/{}",
            token(&options, "handle_token")?
        );
        let session = format!(
            "/org/freedesktop/portal/desktop/session/{id}/{}",
            token(&options, "session_handle_token")?
        );
        let results = HashMap::from([("session_handle".to_owned(), owned(Value::from(session)))]);
        respond(conn, request, 0, results)
    }

    async fn select_sources(
        &self,
        _session: OwnedObjectPath,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        let id = caller_id(&header)?;
        let request = format!(
            "/org/freedesktop/portal/desktop/request/{id}/{}",
            token(&options, "handle_token")?
        );
        respond(conn, request, 0, HashMap::new())
    }

    async fn start(
        &self,
        _session: OwnedObjectPath,
        _parent_window: String,
        options: HashMap<String, OwnedValue>,
        #[zbus(header)] header: zbus::message::Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        let id = caller_id(&header)?;
        let request = format!(
            "/org/freedesktop/portal/desktop/request/{id}/{}",
            token(&options, "handle_token")?
        );
        if self.cancel_start.load(Ordering::SeqCst) {
            // Response code 1: the user dismissed the dialog.
            return respond(conn, request, 1, HashMap::new());
        }
        let props: HashMap<String, Value<'_>> = HashMap::from([
            ("size".to_owned(), Value::from((320i32, 240i32))),
            ("source_type".to_owned(), Value::from(1u32)),
        ]);
        let streams = vec![(self.node_id, props)];
        let results = HashMap::from([("streams".to_owned(), owned(Value::from(streams)))]);
        respond(conn, request, 0, results)
    }

    async fn open_pipe_wire_remote(
        &self,
        _session: OwnedObjectPath,
        _options: HashMap<String, OwnedValue>,
    ) -> zbus::fdo::Result<zbus::zvariant::OwnedFd> {
        let stream = UnixStream::connect(&self.socket)
            .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
        Ok(zbus::zvariant::OwnedFd::from(OwnedFd::from(stream)))
    }

    #[zbus(property)]
    fn version(&self) -> u32 {
        4
    }

    #[zbus(property)]
    fn available_source_types(&self) -> u32 {
        1
    }

    #[zbus(property)]
    fn available_cursor_modes(&self) -> u32 {
        3
    }
}

struct Bus {
    child: Child,
    address: String,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_bus(dir: &std::path::Path) -> Bus {
    let config = dir.join("bus.conf");
    std::fs::write(
        &config,
        format!(
            r#"<busconfig>
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
            dir.display()
        ),
    )
    .expect("bus config");
    let mut child = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", config.display()))
        .args(["--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("dbus-daemon");
    let mut address = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut address)
        .expect("bus address");
    Bus {
        child,
        address: address.trim().to_owned(),
    }
}

#[test]
fn fake_portal_hands_out_the_test_pattern_and_cancel_is_typed() {
    if !have("pipewire") || !have("pw-link") || !have("dbus-daemon") {
        eprintln!("SKIP: no pipewire / pw-link / dbus-daemon binary");
        return;
    }
    let daemon = start_daemon("portal");
    let bus = start_bus(&daemon.dir);
    let deadline = Instant::now() + Duration::from_secs(5);
    let (node_id, out_port) = loop {
        if let Some(found) = pw_link(&daemon, &["-I", "-o"])
            .as_deref()
            .and_then(|l| find_port(l, "rtcio-test-pattern"))
        {
            break found;
        }
        assert!(Instant::now() < deadline, "pipewire did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let _portal = rt
        .block_on(async {
            zbus::connection::Builder::address(bus.address.as_str())?
                .name("org.freedesktop.portal.Desktop")?
                .serve_at(
                    "/org/freedesktop/portal/desktop",
                    FakeScreenCast {
                        socket: daemon.dir.join("pipewire-0"),
                        node_id,
                        cancel_start: cancel.clone(),
                    },
                )?
                .build()
                .await
        })
        .expect("fake portal on the bus");
    let config = PortalConfig {
        bus_address: Some(bus.address.clone()),
        fps: 30.0,
        paced: false,
        connect_timeout: Duration::from_secs(3),
        dialog_timeout: Duration::from_secs(3),
        frame_timeout: Duration::from_secs(5),
        ..PortalConfig::default()
    };

    let mut source = PortalScreenSource::open(config.clone()).expect("portal source");
    assert_eq!(source.size(), (320, 240), "size announced by the portal");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some((_, in_port)) = pw_link(&daemon, &["-I", "-i"])
            .as_deref()
            .and_then(|l| find_port(l, "rtcio-screen"))
        {
            pw_link(&daemon, &[&out_port, &in_port]).expect("pw-link");
            break;
        }
        assert!(Instant::now() < deadline, "our stream has no input port");
        std::thread::sleep(Duration::from_millis(50));
    }
    let frame = source.next_frame().expect("a frame through the portal");
    assert_eq!((frame.width, frame.height), (320, 240));
    source.stop();
    assert!(matches!(source.next_frame(), Err(MediaError::Stopped)));

    // The user closes the dialog: a typed Cancelled, quickly.
    cancel.store(true, Ordering::SeqCst);
    let t = Instant::now();
    let err = PortalScreenSource::open(config).unwrap_err();
    assert!(matches!(err, MediaError::Cancelled(_)), "got {err:?}");
    assert!(t.elapsed() < Duration::from_secs(2));
}
