//! Child processes and scratch directories that clean up after a test, also when it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// A child started as the leader of its own process group (`process_group(0)`): dropping it
/// kills the whole group (the app and WebKit's helpers, or tauri-driver → WebKitWebDriver →
/// the app), not only the child.
pub struct Group(pub Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch directory (settings, WebKit caches, logs), removed when dropped.
pub struct Scratch(pub PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Points `cmd` (the app, or a driver that starts it) at the X display `display` with its
/// settings, caches and WebKit data under `scratch` instead of the real home directory.
pub fn app_on_xvfb<'a>(cmd: &'a mut Command, display: &str, scratch: &Path) -> &'a mut Command {
    cmd.env("DISPLAY", display)
        .env_remove("WAYLAND_DISPLAY")
        .env("GDK_BACKEND", "x11")
        .env("HOME", scratch)
        .env("XDG_DATA_HOME", scratch.join("data"))
        .env("XDG_CONFIG_HOME", scratch.join("config"))
        .env("XDG_CACHE_HOME", scratch.join("cache"))
        // Xvfb has no GPU: software rendering, no DMA-BUF renderer, no accessibility bus.
        .env("WEBKIT_DISABLE_DMABUF_RENDERER", "1")
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .env("NO_AT_BRIDGE", "1")
}
