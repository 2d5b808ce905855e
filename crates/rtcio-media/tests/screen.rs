//! X11 shared-memory screen capture against a private Xvfb.

use rtcio_media::capture::screen::{ScreenConfig, ScreenSource, list_monitors};
use rtcio_media::capture::xvfb::VirtualDisplay;
use rtcio_media::convert::i420_to_rgba;
use rtcio_media::{H264Config, H264Decoder, H264Encoder, MediaError, VideoSource};
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt, CreateWindowAux, WindowClass};
use x11rb::wrapper::ConnectionExt as _;

/// Maps a red 200×100 window at (100, 100) and waits (a round trip) until the server did it.
fn show_red_window(display: &str) -> x11rb::rust_connection::RustConnection {
    let (conn, screen) = x11rb::connect(Some(display)).expect("connect");
    let root = conn.setup().roots[screen].root;
    let win = conn.generate_id().expect("id");
    conn.create_window(
        0,
        win,
        root,
        100,
        100,
        200,
        100,
        0,
        WindowClass::INPUT_OUTPUT,
        0,
        &CreateWindowAux::new().background_pixel(0x00FF_0000),
    )
    .expect("create");
    conn.map_window(win).expect("map");
    conn.sync().expect("sync");
    // The window lives as long as this connection.
    conn
}

#[test]
fn screen_capture_under_xvfb_returns_a_frame_of_the_screen_size() {
    let xvfb = VirtualDisplay::start(1280, 720).expect("Xvfb (install the xvfb package)");
    let monitors = list_monitors(Some(xvfb.display())).unwrap();
    assert!(!monitors.is_empty());
    let primary = monitors.iter().find(|m| m.is_default).unwrap();
    assert_eq!(primary.size, Some((1280, 720)));

    let _window = show_red_window(xvfb.display());
    let mut source = ScreenSource::open(ScreenConfig {
        display: Some(xvfb.display().to_owned()),
        monitor: Some(primary.id.clone()),
        fps: 30.0,
        paced: false,
    })
    .unwrap();
    assert!(source.uses_shm(), "MIT-SHM path");
    assert_eq!(source.size(), (1280, 720));
    let mut encoder = H264Encoder::new(H264Config::default()).unwrap();
    let mut decoder = H264Decoder::new().unwrap();
    for n in 0..3 {
        let frame = source.next_frame().unwrap();
        assert_eq!((frame.width, frame.height), (1280, 720));
        // The red window is where we put it; the background (black) elsewhere.
        let rgba = i420_to_rgba(&frame).unwrap();
        let px = |x: usize, y: usize| {
            let i = (y * 1280 + x) * 4;
            [rgba.data[i], rgba.data[i + 1], rgba.data[i + 2]]
        };
        let red = px(200, 150);
        assert!(
            red[0] > 200 && red[1] < 60 && red[2] < 60,
            "frame {n}: {red:?}"
        );
        let outside = px(600, 500);
        assert!(outside.iter().all(|&c| c < 40), "frame {n}: {outside:?}");
        // Screen frames go through the encoder like any other.
        let e = encoder.encode(&frame).unwrap().unwrap();
        let d = decoder.decode(&e.data, e.rtp_timestamp()).unwrap().unwrap();
        assert_eq!((d.width, d.height), (1280, 720));
    }
    source.stop();
    assert!(matches!(source.next_frame(), Err(MediaError::Stopped)));
}

#[test]
fn missing_monitor_and_missing_display_are_errors() {
    let xvfb = VirtualDisplay::start(640, 480).expect("Xvfb");
    let missing = ScreenSource::open(ScreenConfig {
        display: Some(xvfb.display().to_owned()),
        monitor: Some("no-such-monitor".into()),
        ..ScreenConfig::default()
    });
    assert!(matches!(
        missing,
        Err(MediaError::DeviceNotFound {
            kind: "monitor",
            ..
        })
    ));
    drop(xvfb);
    // A display nobody serves.
    let gone = ScreenSource::open(ScreenConfig {
        display: Some(":4093".into()),
        ..ScreenConfig::default()
    });
    assert!(matches!(gone, Err(MediaError::Display(_))), "{gone:?}");
}
