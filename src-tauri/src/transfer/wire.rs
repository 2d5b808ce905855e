//! The file-transfer wire messages (`meta`, `eof`, `cancel`), the receiver's state machine, safe
//! file names and progress throttling: everything [`super`] decides without I/O. A file of its own
//! (serde_json, thiserror and tracing only) so the fuzz build compiles it alone (`fuzz/`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tracing::debug;

/// The largest file we accept (1 TiB): a larger announced size is refused at `meta`.
pub const MAX_FILE_SIZE: u64 = 1 << 40;
/// The tutorial's default MIME type.
pub const DEFAULT_MIME: &str = "application/octet-stream";
/// Longest file name we write (bytes of UTF-8; most file systems allow 255).
pub(crate) const MAX_NAME_BYTES: usize = 180;
/// Longest `name` / `mime` / `tid` string we take from a peer, in characters.
pub(crate) const MAX_FIELD_CHARS: usize = 1024;

/// What can go wrong with a transfer. The message is what the UI shows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// A `meta` we cannot use.
    #[error("the peer's file offer is malformed: {0}")]
    BadMeta(String),
    /// The announced size is over [`MAX_FILE_SIZE`].
    #[error("the offered file is too large ({size} bytes, at most {max} accepted)")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// Our limit.
        max: u64,
    },
    /// More bytes than announced arrived.
    #[error("the peer sent more than the announced {size} bytes")]
    Overflow {
        /// Announced size.
        size: u64,
    },
    /// `eof` came before all bytes did.
    #[error("the file ended after {got} of {size} bytes")]
    Incomplete {
        /// Bytes received.
        got: u64,
        /// Announced size.
        size: u64,
    },
    /// `eof` for a transfer we are not receiving.
    #[error("end of file for unknown transfer {0:?}")]
    UnknownTid(String),
    /// The `sha256` in `eof` does not match the bytes received.
    #[error("the received file is damaged (SHA-256 mismatch)")]
    Checksum,
    /// A new `meta` arrived before the current file's `eof`.
    #[error("the peer started another file before this one was complete")]
    Superseded,
    /// Cancelled here.
    #[error("cancelled")]
    Cancelled,
    /// Cancelled by the other side.
    #[error("cancelled by the other side{}", .0.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    CancelledByPeer(Option<String>),
    /// The connection to the peer closed mid-transfer.
    #[error("the connection to the peer closed before the transfer finished")]
    PeerGone,
    /// We left the room mid-transfer.
    #[error("you left the room before the transfer finished")]
    Left,
    /// No `file` channel to that peer (not connected).
    #[error("not connected to peer {0}")]
    NoPeer(String),
    /// `cancel_transfer` for a transfer that is not running.
    #[error("no running transfer {0:?}")]
    UnknownTransfer(String),
    /// The file to send cannot be used.
    #[error("cannot send {path}: {why}")]
    Source {
        /// The path given.
        path: String,
        /// Why.
        why: String,
    },
    /// Reading, writing or renaming failed.
    #[error("{0}")]
    Io(String),
    /// The channel refused or lost data.
    #[error("sending failed: {0}")]
    Channel(String),
}

// ─── Messages ───────────────────────────────────────────────────────────────────────────────────

/// A parsed `meta`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// Transfer id (absent in the AGENTS variant `meta {name, size, mime}`).
    pub tid: Option<String>,
    /// File name as the peer sent it (not yet safe to use as a path).
    pub name: String,
    /// Announced size in bytes.
    pub size: u64,
    /// MIME type ([`DEFAULT_MIME`] when absent).
    pub mime: String,
}

/// A parsed `eof`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eof {
    /// Transfer id (absent in `eof {}`).
    pub tid: Option<String>,
    /// Lower-case hex SHA-256 of the whole file, if the sender added one.
    pub sha256: Option<String>,
}

pub(crate) fn clip(s: &str) -> String {
    s.chars().take(MAX_FIELD_CHARS).collect()
}

/// A transfer id as peers send it: a string, or a number (`Date.now()`), or nothing.
pub fn parse_tid(v: &Value) -> Option<String> {
    match v.get("tid")? {
        Value::String(s) if !s.is_empty() => Some(clip(s)),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses `meta {tid, name, size, mime}`: `size` must be a whole number of bytes within
/// [`MAX_FILE_SIZE`]; a missing name becomes "file".
pub fn parse_meta(v: &Value) -> Result<Meta, TransferError> {
    if !v.is_object() {
        return Err(TransferError::BadMeta("not an object".into()));
    }
    let size = match v.get("size") {
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(s), _) => s,
            // 1e3 arrives as a float from JS; a whole, non-negative value is fine.
            (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f < 1.9e19 => f as u64,
            _ => {
                return Err(TransferError::BadMeta(format!(
                    "size {n} is not a whole number of bytes"
                )));
            }
        },
        _ => return Err(TransferError::BadMeta("no size".into())),
    };
    if size > MAX_FILE_SIZE {
        return Err(TransferError::TooLarge {
            size,
            max: MAX_FILE_SIZE,
        });
    }
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(clip)
        .unwrap_or_else(|| "file".into());
    let mime = v
        .get("mime")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(clip)
        .unwrap_or_else(|| DEFAULT_MIME.into());
    Ok(Meta {
        tid: parse_tid(v),
        name,
        size,
        mime,
    })
}

/// Parses `eof {tid, sha256?}` (anything else, `eof {}` included, has neither).
pub fn parse_eof(v: &Value) -> Eof {
    let sha256 = v
        .get("sha256")
        .and_then(Value::as_str)
        .filter(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase);
    Eof {
        tid: parse_tid(v),
        sha256,
    }
}

/// The `meta` payload we send.
pub fn meta_payload(tid: &str, name: &str, size: u64, mime: &str) -> Value {
    json!({"tid": tid, "name": name, "size": size, "mime": mime})
}

/// The `eof` payload we send (`sha256` is an addition tutorial peers ignore).
pub fn eof_payload(tid: &str, sha256: &str) -> Value {
    json!({"tid": tid, "sha256": sha256})
}

/// A MIME type from a file name's extension (tutorial peers use it for the download link).
pub fn mime_for(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" | "md" => "text/plain",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        _ => DEFAULT_MIME,
    }
}

// ─── File names ─────────────────────────────────────────────────────────────────────────────────

/// A peer's file name made safe to create in the downloads directory: the last path component
/// only (`/` and `\` both separate), no control characters or characters Windows forbids, no
/// leading dots (no hidden files, no `..`), no trailing dots or spaces, at most
/// [`MAX_NAME_BYTES`] bytes (the extension kept), never empty ("file").
pub fn safe_file_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).find(|p| !p.trim().is_empty());
    let cleaned: String = last
        .unwrap_or("")
        .chars()
        .map(|c| match c {
            c if c.is_control() => '_',
            '<' | '>' | ':' | '"' | '|' | '?' | '*' => '_',
            c => c,
        })
        .collect();
    // Dots and white space in any mix at either end: ". .bashrc" must not become ".bashrc".
    let trimmed = cleaned
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end_matches(|c: char| c == '.' || c.is_whitespace());
    let mut name = if trimmed.is_empty() {
        "file".to_string()
    } else {
        trimmed.to_string()
    };
    if name.len() > MAX_NAME_BYTES {
        let (stem, ext) = split_ext(&name);
        let ext = if ext.len() <= 16 { ext } else { "" };
        let mut cut = MAX_NAME_BYTES - ext.len();
        while !stem.is_char_boundary(cut.min(stem.len())) {
            cut -= 1;
        }
        name = format!("{}{ext}", &stem[..cut.min(stem.len())]);
    }
    // Device names Windows refuses, whatever the extension; harmless to avoid everywhere.
    let (stem, _) = split_ext(&name);
    let upper = stem.to_ascii_uppercase();
    let reserved = ["CON", "PRN", "AUX", "NUL"].contains(&upper.as_str())
        || ((upper.starts_with("COM") || upper.starts_with("LPT"))
            && upper.len() == 4
            && upper.as_bytes()[3].is_ascii_digit());
    if reserved {
        name = format!("_{name}");
    }
    name
}

/// `("archive.tar", ".gz")`, `("notes", "")`; a leading dot is not an extension.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    }
}

/// `name`, or the first of `stem (1).ext`, `stem (2).ext`, … that `taken` says is free.
pub fn unique_name(name: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(name) {
        return name.to_string();
    }
    let (stem, ext) = split_ext(name);
    (1u32..)
        .map(|n| format!("{stem} ({n}){ext}"))
        .find(|c| !taken(c))
        .unwrap_or_else(|| name.to_string())
}

// ─── Progress ───────────────────────────────────────────────────────────────────────────────────

/// Lets at most one progress report through per interval.
#[derive(Debug, Clone)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
}

impl Throttle {
    /// A throttle letting one report through per `every`.
    pub fn new(every: Duration) -> Self {
        Throttle { every, last: None }
    }

    /// True if a report may go out at `now` (the first one always may).
    pub fn ready(&mut self, now: Instant) -> bool {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.every => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

// ─── Receiver state machine ─────────────────────────────────────────────────────────────────────

/// The file being received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The id the UI knows it by (the peer's tid, made unique here).
    pub tid: String,
    /// The peer's tid, which its `eof` must carry (`None`: the peer sends none).
    pub wire_tid: Option<String>,
    /// Safe file name.
    pub name: String,
    /// Announced size.
    pub size: u64,
    /// MIME type.
    pub mime: String,
    /// Bytes accepted so far.
    pub got: u64,
}

/// What the I/O layer must do after an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a file (create its temporary file).
    Begin(Incoming),
    /// Append the message's bytes to the current file; `got` counts them already.
    Write {
        /// UI tid.
        tid: String,
        /// Bytes received including this message.
        got: u64,
    },
    /// Complete: check `sha256` if given, rename the temporary file into place.
    Finish {
        /// UI tid.
        tid: String,
        /// Checksum the sender gave.
        sha256: Option<String>,
    },
    /// Stop the current file: remove the temporary file, report `error`; with `notify`, tell
    /// the peer (`cancel {tid}`) so it stops sending.
    Abort {
        /// UI tid.
        tid: String,
        /// The peer's tid.
        wire_tid: Option<String>,
        /// Why.
        error: TransferError,
        /// Tell the sender.
        notify: bool,
    },
    /// Report an error about a transfer that has no file open (`tid` as the peer gave it).
    Report {
        /// The tid concerned.
        tid: String,
        /// Why.
        error: TransferError,
    },
    /// Tell the peer we refuse its transfer (`cancel {tid}`), nothing to clean up.
    Refuse {
        /// The peer's tid.
        wire_tid: Option<String>,
        /// Why.
        error: TransferError,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RecvState {
    /// No transfer: binary messages are dropped.
    Idle,
    Receiving(Incoming),
    /// A transfer we stopped: its remaining chunks and its `eof` are dropped quietly.
    Skipping(Option<String>),
}

/// One peer's receiving side: feed it the channel's messages in order, do what it returns.
#[derive(Debug, Clone)]
pub struct Receiver {
    state: RecvState,
}

impl Default for Receiver {
    fn default() -> Self {
        Receiver {
            state: RecvState::Idle,
        }
    }
}

impl Receiver {
    /// The file being received, if any.
    pub fn current(&self) -> Option<&Incoming> {
        match &self.state {
            RecvState::Receiving(i) => Some(i),
            _ => None,
        }
    }

    fn abort_current(&mut self, error: TransferError, notify: bool) -> Option<Action> {
        let prev = std::mem::replace(&mut self.state, RecvState::Idle);
        match prev {
            RecvState::Receiving(i) => {
                self.state = RecvState::Skipping(i.wire_tid.clone());
                Some(Action::Abort {
                    tid: i.tid,
                    wire_tid: i.wire_tid,
                    error,
                    notify,
                })
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    /// A `meta` arrived. `ui_tid` is the id to show it under (unique among running transfers).
    pub fn on_meta(&mut self, v: &Value, ui_tid: String) -> Vec<Action> {
        let mut out = Vec::new();
        // The tutorial starts over on every meta: do the same, but say so.
        out.extend(self.abort_current(TransferError::Superseded, false));
        match parse_meta(v) {
            Ok(m) => {
                let inc = Incoming {
                    tid: ui_tid,
                    wire_tid: m.tid,
                    name: safe_file_name(&m.name),
                    size: m.size,
                    mime: m.mime,
                    got: 0,
                };
                self.state = RecvState::Receiving(inc.clone());
                out.push(Action::Begin(inc));
            }
            Err(error) => {
                let wire_tid = parse_tid(v);
                self.state = RecvState::Skipping(wire_tid.clone());
                out.push(Action::Report {
                    tid: wire_tid.clone().unwrap_or(ui_tid),
                    error: error.clone(),
                });
                out.push(Action::Refuse { wire_tid, error });
            }
        }
        out
    }

    /// A binary message of `len` bytes arrived.
    pub fn on_chunk(&mut self, len: usize) -> Option<Action> {
        let RecvState::Receiving(inc) = &mut self.state else {
            // Before any meta (or after a stopped transfer): dropped, as the tutorial does.
            return None;
        };
        let got = inc.got.saturating_add(len as u64);
        if got > inc.size {
            let size = inc.size;
            return self.abort_current(TransferError::Overflow { size }, true);
        }
        inc.got = got;
        Some(Action::Write {
            tid: inc.tid.clone(),
            got,
        })
    }

    /// An `eof` arrived.
    pub fn on_eof(&mut self, v: &Value) -> Option<Action> {
        let eof = parse_eof(v);
        match &self.state {
            RecvState::Receiving(inc) if eof.tid.is_none() || eof.tid == inc.wire_tid => {
                let (got, size) = (inc.got, inc.size);
                if got < size {
                    return self.abort_current(TransferError::Incomplete { got, size }, false);
                }
                let tid = inc.tid.clone();
                self.state = RecvState::Idle;
                Some(Action::Finish {
                    tid,
                    sha256: eof.sha256,
                })
            }
            RecvState::Skipping(t) if eof.tid.is_none() || eof.tid == *t => {
                self.state = RecvState::Idle;
                None
            }
            _ => match eof.tid {
                Some(tid) => Some(Action::Report {
                    error: TransferError::UnknownTid(tid.clone()),
                    tid,
                }),
                None => {
                    debug!("eof without a transfer: ignored");
                    None
                }
            },
        }
    }

    /// The peer cancelled its transfer `cancel {tid}` (or `cancel {}`: the current one).
    pub fn on_cancel(&mut self, v: &Value) -> Option<Action> {
        let tid = parse_tid(v);
        let reason = v
            .get("reason")
            .and_then(Value::as_str)
            .map(|r| r.chars().take(200).collect());
        match &self.state {
            RecvState::Receiving(inc) if tid.is_none() || tid == inc.wire_tid => {
                self.abort_current(TransferError::CancelledByPeer(reason), false)
            }
            _ => None,
        }
    }

    /// The user cancelled the transfer shown as `ui_tid`.
    pub fn cancel_local(&mut self, ui_tid: &str) -> Option<Action> {
        match &self.state {
            RecvState::Receiving(inc) if inc.tid == ui_tid => {
                self.abort_current(TransferError::Cancelled, true)
            }
            _ => None,
        }
    }

    /// Writing failed (or anything else local): stop and tell the peer.
    pub fn fail(&mut self, error: TransferError) -> Option<Action> {
        self.abort_current(error, true)
    }

    /// The channel closed (the peer left) or we are leaving.
    pub fn closed(&mut self, error: TransferError) -> Option<Action> {
        let a = self.abort_current(error, false);
        self.state = RecvState::Idle;
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dots_behind_white_space_do_not_make_a_hidden_file() {
        // Found by fuzz/fuzz_targets/app_transfer.rs: trimming dots, then spaces, left the dots
        // that followed the spaces.
        for (raw, want) in [
            (". .bashrc", "bashrc"),
            ("..  ...x.txt", "x.txt"),
            (" . . ", "file"),
            ("name . .", "name"),
        ] {
            assert_eq!(safe_file_name(raw), want, "{raw:?}");
        }
    }
}
