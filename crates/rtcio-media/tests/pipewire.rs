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

use rtcio_media::{MediaError, PortalConfig, PortalScreenSource, VideoSource};

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

fn start_daemon() -> Daemon {
    let dir = std::env::temp_dir().join(format!("rtcio-pw-{}", std::process::id()));
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
    let daemon = start_daemon();
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
