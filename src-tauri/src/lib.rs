//! rtcio-desktop: a video-room app for rtc.io rooms.
//!
//! The UI (`../ui`, plain HTML/JS) talks to this process through the commands in
//! [`commands`]; room activity reaches it as Tauri events (`room-event`, `media-state`, `chat`,
//! `peer-connect`, `peer-disconnect`, `peer-quality`, `mic-level`). [`session`] holds the call logic without Tauri, so it is
//! tested on its own.

pub mod commands;
pub mod devices;
pub mod error;
pub mod frame_socket;
pub mod inbound;
pub mod media;
pub mod preview;
pub mod quality;
pub mod session;
pub mod settings;
pub mod transfer;

use std::time::Duration;

use tauri::Manager;

/// Whether this machine has a DRI device (`/dev/dri/card*` or `renderD*`): without one Mesa
/// can only give WebKitGTK software GL (llvmpipe), whatever the settings.
#[cfg(target_os = "linux")]
pub fn has_dri_device() -> bool {
    std::fs::read_dir("/dev/dri").is_ok_and(|dir| {
        dir.filter_map(Result::ok).any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("card") || name.starts_with("renderD")
        })
    })
}

/// WebKitGTK settings for a machine without a GPU (no DRI device, see [`has_dri_device`]),
/// each only when the user has not set it: `WEBKIT_DISABLE_DMABUF_RENDERER=1`. With software
/// GL the DMA-BUF renderer painted four 720p tiles at 0.12–0.36× the rate of the shared-memory
/// one and cost WebKit 4.3–7.5× the CPU per frame (`ipc_bench`, src-tauri/README.md "Software GL
/// settings"). A machine with a DRI device keeps WebKit's defaults.
///
/// Call it before any thread exists (environment writes are not thread-safe): first in `main`.
pub fn software_rendering_defaults() {
    #[cfg(target_os = "linux")]
    for (key, value) in software_rendering_env(has_dri_device(), |k| std::env::var_os(k).is_some())
    {
        // SAFETY: called first in `main`, before any other thread exists (documented).
        unsafe { std::env::set_var(key, value) };
    }
}

/// The variables [`software_rendering_defaults`] sets: those of [`SOFTWARE_RENDERING_ENV`] that
/// are not set yet (`is_set`), and none when the machine has a DRI device.
pub fn software_rendering_env(
    has_dri: bool,
    is_set: impl Fn(&str) -> bool,
) -> Vec<(&'static str, &'static str)> {
    if has_dri {
        return Vec::new();
    }
    SOFTWARE_RENDERING_ENV
        .iter()
        .copied()
        .filter(|(key, _)| !is_set(key))
        .collect()
}

/// What [`software_rendering_defaults`] sets on a machine without a DRI device.
pub const SOFTWARE_RENDERING_ENV: &[(&str, &str)] = &[("WEBKIT_DISABLE_DMABUF_RENDERER", "1")];

/// Builds and runs the app until its last window closes.
pub fn run() -> anyhow::Result<()> {
    let app = builder().build(tauri::generate_context!())?;
    match run_app(app) {
        0 => Ok(()),
        code => anyhow::bail!("the app ended with exit code {code}"),
    }
}

/// The app's builder: plugins, state and commands (the IPC bench adds its own setup to it).
pub fn builder() -> tauri::Builder<tauri::Wry> {
    tauri::Builder::default()
        .plugin(tauri_plugin_store::Builder::default().build())
        .manage(commands::AppState::default())
        .invoke_handler(tauri::generate_handler![
            commands::list_devices,
            commands::test_speaker,
            commands::switch_camera,
            commands::switch_microphone,
            commands::switch_speaker,
            commands::join,
            commands::leave,
            commands::send_chat,
            commands::set_media_state,
            commands::get_settings,
            commands::save_settings,
            commands::video_formats,
            commands::next_frames,
            commands::frame_socket,
            commands::set_tile_size,
            commands::list_monitors,
            commands::start_screen_share,
            commands::stop_screen_share,
            commands::send_file,
            commands::cancel_transfer,
            commands::start_preview,
            commands::stop_preview,
        ])
}

/// Runs a built app until its last window closes, leaving the call properly on exit; returns
/// the exit code (the IPC bench cleans up after it).
pub fn run_app(app: tauri::App<tauri::Wry>) -> i32 {
    app.run_return(|handle, event| {
        if let tauri::RunEvent::Exit = event {
            // Leave properly so peers notice at once instead of after their watchdog (~12 s);
            // bounded so a stuck connection cannot keep the process alive.
            let state = handle.state::<commands::AppState>();
            tauri::async_runtime::block_on(async {
                if let Some(session) = state.session.lock().await.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), session.leave()).await;
                }
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_rendering_env_only_without_a_dri_device_and_never_over_the_user() {
        assert!(
            software_rendering_env(true, |_| false).is_empty(),
            "a GPU keeps WebKit's defaults"
        );
        assert_eq!(
            software_rendering_env(false, |_| false),
            vec![("WEBKIT_DISABLE_DMABUF_RENDERER", "1")]
        );
        assert!(
            software_rendering_env(false, |k| k == "WEBKIT_DISABLE_DMABUF_RENDERER").is_empty(),
            "the user's own setting wins"
        );
    }
}
