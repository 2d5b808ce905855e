//! Make-before-break across a signaling reconnect with a new socket id, as plain logic over an
//! injected clock.
//!
//! A new socket id means the server forgot us: every member re-joins and new peer connections
//! form under the new ids. The old connections still carry media, so they are kept ("stale")
//! until a replacement to the same participant has been carrying media for [`SETTLE`], the
//! old one fails, or [`GRACE`] passes. A replacement is found by, in order: an explicit re-key
//! from an rtcio peer (`#rtcio:rekey {id}` on the old ctrl channel: JS peers drop `#rtcio:`
//! names there), the same remote id (only we reconnected), or the participant's name from the
//! server's `user-connected` events when exactly one current peer has it.
//!
//! Browser peers know the old connection under our *old* socket id, which the restarted server
//! never heard of, so no `#rtcio:peer-left` would ever name it: when we close the old connection
//! the page's `connectionState` turns `failed` and the rtc.io client waits out its 12 s watchdog
//! with a second tile for us. So, [`HINT_DELAY`] after an old connection is gone, we ask our
//! server (`#rtcio:previous-id {id}`, see [`previous_id_message`]) to send the hint for the old
//! id; with the page's connection already `failed`, the hint cleans it up at once (PROTOCOL.md
//! §6.3). The real rtc.io-server has no handler for the event and drops it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long a replacement must carry media before the old connection is closed: the remote
/// needs its end of the new connection decoding too (our keyframe answering its PLI). Chromium
/// decoded our video on the new connection ~0.25 s after our first media from it (server
/// restart test, CLI ↔ page); the glue answers keyframe requests at most once a second
/// (several peers reconnecting at once wait up to that long), so 1 s for that plus margin.
pub const SETTLE: Duration = Duration::from_millis(1500);

/// A replacement that is connected but carries no media (a call without streams) takes over
/// after this long.
pub const SETTLE_WITHOUT_MEDIA: Duration = Duration::from_secs(6);

/// The longest an old connection is kept after a new id when no replacement shows up.
pub const GRACE: Duration = Duration::from_secs(20);

/// Client → server: "my socket id before this connection was `id`; it is gone: tell my rooms"
/// (our server answers with `#rtcio:peer-left {id}` to the rooms we are in).
pub const PREVIOUS_ID_EVENT: &str = "#rtcio:previous-id";

/// From an old connection being gone to asking for the hint: the close's DTLS alert must turn
/// the browser's connection `failed` before the hint arrives (hint first, the rtc.io client only
/// shortens its watchdog to 2.5 s). Chromium takes ~10 ms on an idle machine; as in the peer's
/// leave linger, the rest is margin.
pub const HINT_DELAY: Duration = Duration::from_millis(250);

/// The hint is asked for once more this long after the first: on a machine so busy that the
/// browser's connection was not `failed` yet when the first hint came, the second one still
/// cleans it up at once (else its watchdog, shortened to 2.5 s by the first, would). A hint for
/// a connection already gone is ignored.
pub const HINT_REPEAT: Duration = Duration::from_millis(1000);

/// The arguments of [`PREVIOUS_ID_EVENT`] for our old id.
pub fn previous_id_message(old_self: &str) -> Vec<Value> {
    vec![json!({ "id": old_self })]
}

/// The ctrl event an rtcio peer sends on each old connection after its id changed.
pub const REKEY_EVENT: &str = "#rtcio:rekey";

/// The ctrl envelope announcing our new socket id on an old connection.
pub fn rekey_message(new_id: &str) -> String {
    json!({"e": REKEY_EVENT, "d": [{"id": new_id}]}).to_string()
}

/// The new id in a re-key envelope, `None` for anything else.
pub fn parse_rekey(text: &str) -> Option<String> {
    // Cheap test first: this runs for every ctrl message.
    if !text.contains(REKEY_EVENT) {
        return None;
    }
    let v: Value = serde_json::from_str(text).ok()?;
    if v.get("e")?.as_str()? != REKEY_EVENT {
        return None;
    }
    let id = v.get("d")?.get(0)?.get("id")?.as_str()?;
    // Socket ids are short; anything else is junk.
    (!id.is_empty() && id.len() <= 64).then(|| id.to_string())
}

#[derive(Debug, Clone)]
struct Stale {
    since: Instant,
    name: Option<String>,
    /// Our socket id the remote knows this connection under, when it is not our id any more.
    self_id: Option<String>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Live {
    connected: Option<Instant>,
    media: Option<Instant>,
}

/// Why an old connection is closed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retire {
    /// Its replacement (this current peer id) took over; `quiet` when both have the same id
    /// (no `peer-disconnect`: the application would drop the live peer).
    Replaced { successor: String, quiet: bool },
    /// No replacement within [`GRACE`].
    GraceOver,
}

/// Old connections and the current peers that may replace them.
#[derive(Debug, Default)]
pub struct Handover {
    stale: HashMap<String, Stale>,
    /// Current peers' progress (by remote id).
    live: HashMap<String, Live>,
    /// Participant names of the current session's members (server `user-connected`).
    names: HashMap<String, String>,
    /// Re-keys heard: old remote id → its new id.
    rekeys: HashMap<String, String>,
    /// Old connections told to close, until they are gone: remote id → our old id.
    retiring: HashMap<String, Option<String>>,
    /// Hints to ask the server for: our old id → when, and whether that is the repeat.
    hints: HashMap<String, (Instant, bool)>,
}

impl Handover {
    /// Our id changed from `old_self`: `peers` (the current peers) become stale; what we knew
    /// of the old session's members is forgotten except their names.
    pub fn on_new_id(
        &mut self,
        peers: impl IntoIterator<Item = String>,
        old_self: &str,
        now: Instant,
    ) {
        for id in peers {
            self.insert_stale(id, Some(old_self.to_string()), now);
        }
        self.live.clear();
        self.names.clear();
    }

    /// One current peer becomes stale (its remote re-keyed while we kept our id).
    pub fn make_stale(&mut self, id: String, now: Instant) {
        self.insert_stale(id, None, now);
    }

    fn insert_stale(&mut self, id: String, self_id: Option<String>, now: Instant) {
        let name = self.names.get(&id).cloned();
        self.live.remove(&id);
        self.retiring.remove(&id);
        self.stale.insert(
            id,
            Stale {
                since: now,
                name,
                self_id,
            },
        );
    }

    /// True if `id` is an old connection.
    pub fn is_stale(&self, id: &str) -> bool {
        self.stale.contains_key(id)
    }

    /// An rtcio peer said that `old` is now `new`.
    pub fn on_rekey(&mut self, old: &str, new: &str) {
        if old != new {
            self.rekeys.insert(old.to_string(), new.to_string());
        }
    }

    /// The server named a member of the current session.
    pub fn on_name(&mut self, id: &str, name: &str) {
        self.names.insert(id.to_string(), name.to_string());
    }

    /// A current peer's ctrl channel opened.
    pub fn on_connected(&mut self, id: &str, now: Instant) {
        self.live
            .entry(id.to_string())
            .or_default()
            .connected
            .get_or_insert(now);
    }

    /// A current peer received its first media.
    pub fn on_media(&mut self, id: &str, now: Instant) {
        self.live
            .entry(id.to_string())
            .or_default()
            .media
            .get_or_insert(now);
    }

    /// A current peer went away.
    pub fn current_gone(&mut self, id: &str) {
        self.live.remove(id);
    }

    /// An old connection is gone (closed by us after [`Handover::due`], or by itself): if the
    /// remote knew it under an old id of ours, the hint for that id is asked for
    /// [`HINT_DELAY`] later, and again [`HINT_REPEAT`] after that.
    pub fn stale_gone(&mut self, id: &str, now: Instant) {
        let self_id = match self.stale.remove(id) {
            Some(st) => st.self_id,
            None => self.retiring.remove(id).flatten(),
        };
        self.rekeys.remove(id);
        if let Some(old) = self_id {
            // One hint serves every connection closed before it leaves; a later close moves it
            // (each page's connection must be `failed` before the hint arrives).
            self.hints.insert(old, (now + HINT_DELAY, false));
        }
    }

    /// We are leaving: nothing more to close or ask for.
    pub fn clear(&mut self) {
        *self = Handover::default();
    }

    /// Our old ids whose peer-left hint is due now (each reported twice: at first and as the
    /// repeat).
    pub fn hints_due(&mut self, now: Instant) -> Vec<String> {
        let due: Vec<(String, bool)> = self
            .hints
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(id, (_, repeat))| (id.clone(), *repeat))
            .collect();
        for (id, repeat) in &due {
            if *repeat {
                self.hints.remove(id);
            } else {
                self.hints.insert(id.clone(), (now + HINT_REPEAT, true));
            }
        }
        due.into_iter().map(|(id, _)| id).collect()
    }

    /// The current peer that replaces the old connection `old`, if known.
    pub fn successor(&self, old: &str) -> Option<String> {
        let st = self.stale.get(old)?;
        if let Some(new) = self.rekeys.get(old) {
            return Some(new.clone());
        }
        if self.live.contains_key(old) {
            return Some(old.to_string());
        }
        let name = st.name.as_deref()?;
        let mut same = self
            .names
            .iter()
            .filter(|(_, n)| n.as_str() == name)
            .map(|(id, _)| id);
        match (same.next(), same.next()) {
            (Some(id), None) => Some(id.clone()),
            // Nobody, or two members with one name: wait for a re-key or the grace period.
            _ => None,
        }
    }

    /// True while the old connection `old` is the only working one to its participant (it still
    /// gets what is broadcast on ctrl).
    pub fn still_needed(&self, old: &str) -> bool {
        self.successor(old)
            .and_then(|s| self.live.get(&s).copied())
            .is_none_or(|l| l.connected.is_none())
    }

    fn due_at(&self, old: &str, st: &Stale) -> (Instant, Option<String>) {
        let grace = st.since + GRACE;
        let Some(s) = self.successor(old) else {
            return (grace, None);
        };
        let l = self.live.get(&s).copied().unwrap_or_default();
        let took_over = match (l.media, l.connected) {
            (Some(m), _) => Some(m + SETTLE),
            (None, Some(c)) => Some(c + SETTLE_WITHOUT_MEDIA),
            _ => None,
        };
        match took_over {
            Some(t) if t < grace => (t, Some(s)),
            _ => (grace, None),
        }
    }

    /// Old connections to close now (each reported once: they are forgotten here).
    pub fn due(&mut self, now: Instant) -> Vec<(String, Retire)> {
        let mut out = Vec::new();
        for (old, st) in &self.stale {
            let (at, succ) = self.due_at(old, st);
            if at <= now {
                let why = match succ {
                    Some(s) => Retire::Replaced {
                        quiet: s == *old,
                        successor: s,
                    },
                    None => Retire::GraceOver,
                };
                out.push((old.clone(), why));
            }
        }
        for (old, _) in &out {
            if let Some(st) = self.stale.remove(old) {
                self.retiring.insert(old.clone(), st.self_id);
            }
            self.rekeys.remove(old);
        }
        out
    }

    /// When [`Handover::due`] or [`Handover::hints_due`] next has something to say.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.stale
            .iter()
            .map(|(old, st)| self.due_at(old, st).0)
            .chain(self.hints.values().map(|(at, _)| *at))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn rekey_round_trip_and_junk() {
        assert_eq!(parse_rekey(&rekey_message("abc")), Some("abc".into()));
        assert_eq!(parse_rekey(r##"{"e":"chat","d":["#rtcio:rekey"]}"##), None);
        assert_eq!(
            parse_rekey(r##"{"e":"#rtcio:rekey","d":[{"id":5}]}"##),
            None
        );
        assert_eq!(
            parse_rekey(r##"{"e":"#rtcio:rekey","d":[{"id":""}]}"##),
            None
        );
        assert_eq!(parse_rekey(r##"{"e":"#rtcio:rekey","d":[]}"##), None);
        assert_eq!(parse_rekey(r##"{"e":"#rtcio:rekey""##), None);
        let long = format!(
            r##"{{"e":"#rtcio:rekey","d":[{{"id":"{}"}}]}}"##,
            "x".repeat(65)
        );
        assert_eq!(parse_rekey(&long), None);
    }

    #[test]
    fn replaced_by_rekey_after_media_settles() {
        let t0 = Instant::now();
        let mut h = Handover::default();
        h.on_new_id(["b".to_string()], "me", t0);
        assert!(h.is_stale("b"));
        h.on_rekey("b", "b2");
        assert!(h.still_needed("b"));
        h.on_connected("b2", t0 + ms(500));
        assert!(!h.still_needed("b"));
        h.on_media("b2", t0 + ms(800));
        assert_eq!(h.next_deadline(), Some(t0 + ms(800) + SETTLE));
        assert!(h.due(t0 + ms(800) + SETTLE - ms(1)).is_empty());
        assert_eq!(
            h.due(t0 + ms(800) + SETTLE),
            vec![(
                "b".to_string(),
                Retire::Replaced {
                    successor: "b2".into(),
                    quiet: false
                }
            )]
        );
        assert!(!h.is_stale("b"));
        assert_eq!(h.next_deadline(), None);
    }

    #[test]
    fn replaced_by_name_when_unique() {
        let t0 = Instant::now();
        let mut h = Handover::default();
        h.on_name("b", "bob");
        h.on_name("c", "carol");
        h.on_new_id(["b".to_string(), "c".to_string()], "me", t0);
        h.on_name("b2", "bob");
        h.on_name("c2", "carol");
        h.on_name("c3", "carol");
        assert_eq!(h.successor("b"), Some("b2".into()));
        // Two carols: no guess.
        assert_eq!(h.successor("c"), None);
        h.on_media("b2", t0);
        h.on_media("c2", t0);
        let due = h.due(t0 + SETTLE);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, "b");
        // Carol's old connection waits for the grace period.
        assert_eq!(h.next_deadline(), Some(t0 + GRACE));
        assert_eq!(
            h.due(t0 + GRACE),
            vec![("c".to_string(), Retire::GraceOver)]
        );
    }

    #[test]
    fn same_id_replacement_is_quiet() {
        let t0 = Instant::now();
        let mut h = Handover::default();
        h.on_new_id(["b".to_string()], "me", t0);
        h.on_connected("b", t0 + ms(100));
        assert_eq!(h.successor("b"), Some("b".into()));
        // No media: the longer wait.
        assert!(h.due(t0 + ms(100) + SETTLE).is_empty());
        assert_eq!(
            h.due(t0 + ms(100) + SETTLE_WITHOUT_MEDIA),
            vec![(
                "b".to_string(),
                Retire::Replaced {
                    successor: "b".into(),
                    quiet: true
                }
            )]
        );
    }

    #[test]
    fn a_replacement_that_never_connects_leaves_the_grace_period() {
        let t0 = Instant::now();
        let mut h = Handover::default();
        h.on_new_id(["b".to_string()], "me", t0);
        h.on_rekey("b", "b2");
        assert_eq!(h.next_deadline(), Some(t0 + GRACE));
        assert!(h.due(t0 + GRACE - ms(1)).is_empty());
        assert_eq!(h.due(t0 + GRACE).len(), 1);
    }

    #[test]
    fn a_stale_peer_that_went_away_is_forgotten() {
        let t0 = Instant::now();
        let mut h = Handover::default();
        h.on_new_id(["b".to_string()], "me", t0);
        h.stale_gone("b", t0 + ms(10));
        // Only the hint for our old id is left.
        assert_eq!(h.next_deadline(), Some(t0 + ms(10) + HINT_DELAY));
        assert!(h.due(t0 + GRACE).is_empty());
        assert_eq!(h.hints_due(t0 + GRACE), vec!["me".to_string()]);
        // Once more, then nothing.
        assert_eq!(h.next_deadline(), Some(t0 + GRACE + HINT_REPEAT));
        assert!(h.hints_due(t0 + GRACE + HINT_REPEAT - ms(1)).is_empty());
        assert_eq!(
            h.hints_due(t0 + GRACE + HINT_REPEAT),
            vec!["me".to_string()]
        );
        assert_eq!(h.next_deadline(), None);
    }

    #[test]
    fn the_hint_for_our_old_id_follows_the_last_close() {
        let t0 = Instant::now();
        let mut h = Handover::default();
        h.on_name("b", "bob");
        h.on_name("c", "carol");
        h.on_new_id(["b".to_string(), "c".to_string()], "me0", t0);
        h.on_name("b2", "bob");
        h.on_name("c2", "carol");
        h.on_media("b2", t0);
        h.on_media("c2", t0 + ms(100));
        let due = h.due(t0 + SETTLE);
        assert_eq!(due.len(), 1);
        // Told to close, not gone yet: no hint (the page's connection is still healthy).
        assert_eq!(h.next_deadline(), Some(t0 + ms(100) + SETTLE));
        assert!(h.hints_due(t0 + SETTLE + HINT_DELAY).is_empty());
        let gone = t0 + SETTLE + ms(5);
        h.stale_gone("b", gone);
        assert_eq!(h.next_deadline(), Some(t0 + ms(100) + SETTLE));
        assert!(h.hints_due(gone + HINT_DELAY - ms(1)).is_empty());
        // Carol's old connection closes before the hint left: one hint, after both.
        assert_eq!(h.due(t0 + ms(100) + SETTLE).len(), 1);
        let gone2 = gone + ms(150);
        h.stale_gone("c", gone2);
        assert_eq!(h.next_deadline(), Some(gone2 + HINT_DELAY));
        assert!(h.hints_due(gone + HINT_DELAY).is_empty());
        assert_eq!(h.hints_due(gone2 + HINT_DELAY), vec!["me0".to_string()]);
        let repeat = gone2 + HINT_DELAY + HINT_REPEAT;
        assert_eq!(h.next_deadline(), Some(repeat));
        assert_eq!(h.hints_due(repeat), vec!["me0".to_string()]);
        assert_eq!(h.next_deadline(), None);
        // A connection reported gone again asks for nothing.
        h.stale_gone("c", repeat + ms(500));
        assert_eq!(h.next_deadline(), None);
    }

    #[test]
    fn a_remote_rekey_asks_for_no_hint() {
        let t0 = Instant::now();
        let mut h = Handover::default();
        // Only the remote reconnected: our id is live, the server would refuse anyway.
        h.make_stale("b".to_string(), t0);
        h.on_rekey("b", "b2");
        h.on_media("b2", t0);
        assert_eq!(h.due(t0 + SETTLE).len(), 1);
        h.stale_gone("b", t0 + SETTLE);
        assert_eq!(h.next_deadline(), None);
        assert!(h.hints_due(t0 + GRACE).is_empty());
    }
}
