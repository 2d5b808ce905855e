//! rtcio-desktop entry point: logging, then the app (see the library crate).

// No console window on Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,webrtc=warn,rtc=warn,rtcio=info")),
        )
        .init();
    rtcio_desktop::run()
}
