//! Negotiated channels created at different times on the two ends (PROTOCOL.md §4.8, §12.2).
//!
//! A negotiated channel opens locally as soon as SCTP is up, whether or not the remote created
//! its end; webrtc-rs 0.21 drops data for a stream id it has no channel for (the first message is
//! not a DCEP open, so it cannot be accepted as an in-band channel, and nothing announces it to
//! the application). So between two rtcio peers each end says when it has created a channel, and
//! a sender holds its data until the remote end exists. Both signals are invisible to rtc.io JS
//! peers: a session-level SDP attribute (browsers ignore unknown attributes) and a `#rtcio:` ctrl
//! event (the JS drops those names on ctrl). Toward peers that do not announce, channels behave
//! as in rtc.io.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::proto::envelope;

/// Session-level SDP attribute of a peer that announces its channels.
pub const SDP_ATTRIBUTE: &str = "a=x-rtcio-channel-open";

/// Ctrl event announcing that the sender created its end of channel `id`: `d = [id]`.
pub const OPEN_EVENT: &str = "#rtcio:channel-open";

/// `sdp` with [`SDP_ATTRIBUTE`] at the end of the session section (before the first `m=`).
/// Idempotent.
pub fn mark_sdp(sdp: &str) -> String {
    if announces(sdp) {
        return sdp.to_string();
    }
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let line = format!("{SDP_ATTRIBUTE}{eol}");
    match sdp.find(&format!("{eol}m=")) {
        Some(i) => {
            let at = i + eol.len();
            format!("{}{line}{}", &sdp[..at], &sdp[at..])
        }
        None if sdp.ends_with(eol) => format!("{sdp}{line}"),
        None => format!("{sdp}{eol}{line}"),
    }
}

/// True when a remote SDP carries [`SDP_ATTRIBUTE`] in its session section.
pub fn announces(sdp: &str) -> bool {
    sdp.lines()
        .map(|l| l.trim_end_matches('\r'))
        .take_while(|l| !l.starts_with("m="))
        .any(|l| l == SDP_ATTRIBUTE)
}

/// Ctrl text announcing our end of channel `id`.
pub fn open_event(id: u16) -> String {
    envelope::encode_event(OPEN_EVENT, &[Value::from(id)])
}

/// The channel id of an [`OPEN_EVENT`] ctrl text, if it is one (ids 1..=1023; ctrl is never
/// announced).
pub fn parse_open_event(text: &str) -> Option<u16> {
    // Cheap test first: every ctrl message passes through here.
    if !text.contains(OPEN_EVENT) {
        return None;
    }
    let v: Value = serde_json::from_str(text).ok()?;
    if v.get("e")?.as_str()? != OPEN_EVENT {
        return None;
    }
    let id = v.get("d")?.as_array()?.first()?.as_u64()?;
    u16::try_from(id).ok().filter(|id| (1..=1023).contains(id))
}

/// Per peer: whether the remote announces its channels, and which ones it has.
#[derive(Debug, Default)]
pub struct RemoteChannels {
    /// `None` until a remote description was applied.
    announces: Option<bool>,
    open: HashSet<u16>,
}

impl RemoteChannels {
    /// A remote description was applied. Returns true when this settles that the remote does
    /// not announce (every channel may send from now on).
    pub fn on_remote_sdp(&mut self, sdp: &str) -> bool {
        if self.announces.is_some() {
            return false;
        }
        let a = announces(sdp);
        self.announces = Some(a);
        !a
    }

    /// The remote announced channel `id`. True if that is news.
    pub fn on_open_event(&mut self, id: u16) -> bool {
        self.open.insert(id)
    }

    /// May a channel with this id send to the remote? Before the remote description nothing
    /// can be sent anyway (no SCTP yet), so "unknown" answers no.
    pub fn ready(&self, id: u16) -> bool {
        match self.announces {
            Some(false) => true,
            Some(true) => self.open.contains(&id),
            None => false,
        }
    }
}

/// How long after a channel gets its transport inbound events without a listener are kept for
/// the first listener of their name. The remote may send the moment our end exists, before the
/// caller of `create_channel` had a chance to call `on`/`subscribe` on what it returned.
pub const HOLD_FOR: Duration = Duration::from_secs(5);

/// Events held per channel at most.
pub const HOLD_MAX: usize = 1024;

/// Inbound channel events that arrived before anyone listened to their name.
#[derive(Debug)]
pub struct EarlyEvents<T> {
    until: Instant,
    items: VecDeque<(String, T)>,
}

impl<T> EarlyEvents<T> {
    /// A window of [`HOLD_FOR`] from `now`.
    pub fn new(now: Instant) -> Self {
        EarlyEvents {
            until: now + HOLD_FOR,
            items: VecDeque::new(),
        }
    }

    /// An inbound event named `name`: `Some(item)` to dispatch it now, `None` if it is held.
    /// Held while the window is open and nobody listens to the name — or while older events of
    /// that name are still held, so their order is kept.
    pub fn offer(&mut self, name: &str, item: T, has_listener: bool, now: Instant) -> Option<T> {
        if now >= self.until {
            self.items.clear();
            return Some(item);
        }
        let queued = self.items.iter().any(|(n, _)| n == name);
        if (has_listener && !queued) || self.items.len() >= HOLD_MAX {
            return Some(item);
        }
        self.items.push_back((name.to_string(), item));
        None
    }

    /// Someone listens to `name` now: its held events, oldest first.
    pub fn release(&mut self, name: &str) -> Vec<T> {
        let (out, keep): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.items)
            .into_iter()
            .partition(|(n, _)| n == name);
        self.items = keep;
        out.into_iter().map(|(_, t)| t).collect()
    }

    /// Events held now.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n";

    #[test]
    fn sdp_marker_sits_in_the_session_section() {
        let marked = mark_sdp(SDP);
        assert!(
            marked.contains("a=group:BUNDLE 0\r\na=x-rtcio-channel-open\r\nm=application"),
            "{marked}"
        );
        assert_eq!(mark_sdp(&marked), marked, "idempotent");
        assert!(announces(&marked));
        assert!(!announces(SDP));
        // In a media section it does not count.
        assert!(!announces(&format!("{SDP}{SDP_ATTRIBUTE}\r\n")));
        // No media section, LF line ends.
        assert_eq!(mark_sdp("v=0\ns=-"), "v=0\ns=-\na=x-rtcio-channel-open\n");
    }

    #[test]
    fn open_events_round_trip_and_reject_junk() {
        assert_eq!(
            open_event(139),
            r##"{"e":"#rtcio:channel-open","d":[139]}"##
        );
        assert_eq!(parse_open_event(&open_event(139)), Some(139));
        for junk in [
            r##"{"e":"#rtcio:channel-open","d":[0]}"##,
            r##"{"e":"#rtcio:channel-open","d":[1024]}"##,
            r##"{"e":"#rtcio:channel-open","d":["7"]}"##,
            r##"{"e":"#rtcio:channel-open","d":[-1]}"##,
            r##"{"e":"#rtcio:channel-open"}"##,
            r##"{"e":"chat","d":["#rtcio:channel-open"]}"##,
            "#rtcio:channel-open",
        ] {
            assert_eq!(parse_open_event(junk), None, "{junk}");
        }
        // The JS drops the name on ctrl, as our own decoder does.
        assert!(envelope::decode_ctrl(&open_event(5)).is_err());
    }

    #[test]
    fn channels_wait_for_an_announcing_remote_only() {
        let mut js = RemoteChannels::default();
        assert!(!js.ready(139), "nothing before the remote description");
        assert!(js.on_remote_sdp(SDP));
        assert!(js.ready(139));
        assert!(!js.on_remote_sdp(&mark_sdp(SDP)), "settled once");
        assert!(js.ready(139));

        let mut rust = RemoteChannels::default();
        assert!(!rust.on_remote_sdp(&mark_sdp(SDP)));
        assert!(!rust.ready(139));
        assert!(rust.on_open_event(139));
        assert!(!rust.on_open_event(139));
        assert!(rust.ready(139));
        assert!(!rust.ready(721));
    }

    #[test]
    fn early_events_wait_for_their_first_listener_in_order() {
        let t0 = Instant::now();
        let mut e = EarlyEvents::new(t0);
        assert_eq!(e.offer("msg", 1, false, t0), None);
        assert_eq!(e.offer("data", 2, false, t0), None);
        // A listener for `msg` exists now, but an older `msg` is still held: keep the order.
        assert_eq!(e.offer("msg", 3, true, t0), None);
        assert_eq!(e.release("msg"), vec![1, 3]);
        assert_eq!(e.offer("msg", 4, true, t0), Some(4));
        assert_eq!(e.len(), 1);
        // After the window nothing is held and what was is dropped.
        assert_eq!(e.offer("other", 5, false, t0 + HOLD_FOR), Some(5));
        assert!(e.is_empty());
        assert!(e.release("data").is_empty());
    }

    #[test]
    fn early_events_are_bounded() {
        let t0 = Instant::now();
        let mut e = EarlyEvents::new(t0);
        for i in 0..HOLD_MAX {
            assert_eq!(e.offer("x", i, false, t0), None);
        }
        assert_eq!(e.offer("x", HOLD_MAX, false, t0), Some(HOLD_MAX));
        assert_eq!(e.release("x").len(), HOLD_MAX);
    }
}
