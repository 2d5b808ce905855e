//! rtcio-desktop entry point: logging, then the app (see the library crate).

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use tracing_subscriber::EnvFilter;

/// Our crates at info, the WebRTC stack (`webrtc`, `rtc`) at warn.
const DEFAULT_LOG: &str =
    "info,webrtc=warn,rtc=warn,rtcio=info,rtcio_desktop=info,rtcio_server=info,rtcio_media=info";

fn main() -> anyhow::Result<()> {
    // First, while this is the only thread: it writes the environment WebKit reads.
    rtcio_desktop::software_rendering_defaults();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                // Targets match by prefix: `rtc=warn` alone would also silence `rtcio*`.
                .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG)),
        )
        .init();
    rtcio_desktop::run()
}
