//! Helpers shared by the fuzz targets.

use std::path::{Path, PathBuf};

/// Writes `data` to this process's scratch file and returns its path: the Y4M and Ogg sources
/// open paths, and a real file keeps their reading code exactly as shipped. tmpfs when there is
/// one: rewriting a file in place on ext4 waits for the disk at every execution.
pub fn scratch_file(ext: &str, data: &[u8]) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("rtcio-fuzz-{}.{ext}", std::process::id()));
    // A new file each time rather than a truncated one (ext4 flushes truncated rewrites).
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, data).expect("scratch dir writable");
    path
}

/// Splits fuzz input into at most `max` byte strings at `0xFF` bytes (never part of UTF-8).
pub fn split_parts(data: &[u8], max: usize) -> Vec<&[u8]> {
    data.splitn(max, |&b| b == 0xFF).collect()
}
