//! Child processes and scratch directories that clean up after a test, also when it fails.

use std::path::PathBuf;
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
