//! Embeds `web/` (the browser guest page) into the binary: generates a table of
//! `(relative path, bytes)` that `src/web.rs` serves at `/`. The page shares the desktop app's
//! icon set, grid layout and control bar, so those files come from the app's `ui/` (one copy).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Files of the app's `ui/` the guest page uses as they are.
const SHARED_FROM_UI: &[&str] = &["icons.js", "layout.js", "controls.css", "clipboard.js"];

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("web");
    // A directory makes cargo rerun this script when anything under it changes.
    println!("cargo:rerun-if-changed=web");
    let mut files = Vec::new();
    if root.is_dir() {
        collect(&root, &root, &mut files);
    }
    // The app's files the guest page loads as `./icons.js`, `./layout.js` and `./controls.css`.
    let ui = root.join("../../../ui");
    for shared in SHARED_FROM_UI {
        let path = ui.join(shared);
        println!("cargo:rerun-if-changed={}", path.display());
        if path.is_file() {
            files.push((shared.to_string(), path.to_string_lossy().into_owned()));
        }
    }
    files.sort();
    let mut out = String::from(
        "/// Files under `web/`, embedded at build time.\npub static ASSETS: &[(&str, &[u8])] = &[\n",
    );
    for (rel, abs) in &files {
        let _ = writeln!(out, "    ({rel:?}, include_bytes!({abs:?})),");
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("web_assets.rs");
    std::fs::write(dest, out).expect("OUT_DIR is writable");
}

fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        // Editor droppings and dotfiles are not part of the page.
        if name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, files);
        } else if let Ok(rel) = path.strip_prefix(root) {
            let rel = rel.to_string_lossy().replace('\\', "/");
            files.push((rel, path.to_string_lossy().into_owned()));
        }
    }
}
