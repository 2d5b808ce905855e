//! Remote streams derived from an applied SDP (PROTOCOL.md §5.7): webrtc-rs fires `on_track` only on
//! the first RTP packet and may not fire again when a recycled m-line changes msid or direction, so
//! the set of streams a peer sends is read from each remote description instead.

use std::collections::BTreeMap;

/// Media kind of an m-section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MediaKind {
    /// `m=audio`.
    Audio,
    /// `m=video`.
    Video,
}

/// Direction attribute of an m-section, as written by its author.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv` (also the default).
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive` (or port 0).
    Inactive,
}

impl Direction {
    /// True when the author sends media on this section.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
}

/// One media section of interest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSection {
    /// `a=mid`.
    pub mid: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// Direction from the SDP author's point of view.
    pub direction: Direction,
    /// `a=msid:<stream> <track>` stream id (the rtc.io metadata `mid`).
    pub stream_id: Option<String>,
    /// Track id from `a=msid`.
    pub track_id: Option<String>,
}

/// A track the remote sends, by m-section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTrack {
    /// m-section mid (transceiver).
    pub mid: String,
    /// Audio or video.
    pub kind: MediaKind,
    /// Track id from msid.
    pub track_id: Option<String>,
}

/// Parses the audio/video m-sections of an SDP. Tolerates CRLF or LF, ignores anything else.
pub fn media_sections(sdp: &str) -> Vec<MediaSection> {
    let mut out = Vec::new();
    // The section being read, and whether its port is 0 (rejected: inactive whatever it says).
    let mut cur: Option<(MediaSection, bool)> = None;
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(m) = line.strip_prefix("m=") {
            if let Some((s, _)) = cur.take() {
                out.push(s);
            }
            let mut parts = m.split_whitespace();
            let kind = match parts.next() {
                Some("audio") => Some(MediaKind::Audio),
                Some("video") => Some(MediaKind::Video),
                _ => None,
            };
            let port_zero = parts.next() == Some("0");
            cur = kind.map(|kind| {
                let section = MediaSection {
                    mid: String::new(),
                    kind,
                    direction: if port_zero {
                        Direction::Inactive
                    } else {
                        Direction::SendRecv
                    },
                    stream_id: None,
                    track_id: None,
                };
                (section, port_zero)
            });
            continue;
        }
        let Some((s, port_zero)) = cur.as_mut() else {
            continue;
        };
        if let Some(mid) = line.strip_prefix("a=mid:") {
            s.mid = mid.trim().to_string();
        } else if let Some(msid) = line.strip_prefix("a=msid:") {
            let mut p = msid.split_whitespace();
            s.stream_id = p.next().filter(|x| *x != "-").map(str::to_string);
            s.track_id = p.next().map(str::to_string);
        } else if !*port_zero {
            match line {
                "a=sendrecv" => s.direction = Direction::SendRecv,
                "a=sendonly" => s.direction = Direction::SendOnly,
                "a=recvonly" => s.direction = Direction::RecvOnly,
                "a=inactive" => s.direction = Direction::Inactive,
                _ => {}
            }
        }
    }
    if let Some((s, _)) = cur {
        out.push(s);
    }
    out.retain(|s| !s.mid.is_empty());
    out
}

/// Streams the SDP's author is sending: msid stream id → its tracks.
pub fn sent_streams(sdp: &str) -> BTreeMap<String, Vec<RemoteTrack>> {
    let mut map: BTreeMap<String, Vec<RemoteTrack>> = BTreeMap::new();
    for s in media_sections(sdp) {
        if !s.direction.sends() {
            continue;
        }
        if let Some(stream) = s.stream_id {
            map.entry(stream).or_default().push(RemoteTrack {
                mid: s.mid,
                kind: s.kind,
                track_id: s.track_id,
            });
        }
    }
    map
}

/// What changed between two applied remote descriptions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamChanges {
    /// Streams seen for the first time (request their metadata once).
    pub new_streams: Vec<String>,
    /// Tracks that appeared in an already known stream: `track-added`.
    pub added: Vec<(String, RemoteTrack)>,
    /// Tracks that stopped being sent (`inactive`/`recvonly`/gone): `track-removed`.
    pub removed: Vec<(String, RemoteTrack)>,
}

/// Compares the streams of the previous and the new remote description.
pub fn diff(
    before: &BTreeMap<String, Vec<RemoteTrack>>,
    after: &BTreeMap<String, Vec<RemoteTrack>>,
) -> StreamChanges {
    let mut ch = StreamChanges::default();
    for (stream, tracks) in after {
        match before.get(stream) {
            None => ch.new_streams.push(stream.clone()),
            Some(old) => {
                for t in tracks {
                    if !old.iter().any(|o| o.mid == t.mid) {
                        ch.added.push((stream.clone(), t.clone()));
                    }
                }
            }
        }
    }
    for (stream, tracks) in before {
        let now = after.get(stream);
        for t in tracks {
            if !now.is_some_and(|n| n.iter().any(|x| x.mid == t.mid)) {
                ch.removed.push((stream.clone(), t.clone()));
            }
        }
    }
    ch
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shape of a Chromium offer: camera (audio+video, one msid) plus the data section.
    const CHROME_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1 2\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=msid:mA tA\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendonly\r\na=msid:mA tV\r\na=rtpmap:96 VP8/90000\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n";

    #[test]
    fn reads_sections_and_streams() {
        let secs = media_sections(CHROME_OFFER);
        assert_eq!(secs.len(), 2);
        assert_eq!(secs[0].kind, MediaKind::Audio);
        assert_eq!(secs[1].direction, Direction::SendOnly);
        let streams = sent_streams(CHROME_OFFER);
        assert_eq!(streams.len(), 1);
        assert_eq!(streams["mA"].len(), 2);
        assert_eq!(streams["mA"][1].track_id.as_deref(), Some("tV"));
    }

    #[test]
    fn recvonly_inactive_and_dash_msid_send_nothing() {
        let sdp = CHROME_OFFER
            .replacen("a=sendonly", "a=recvonly", 1)
            .replacen("a=msid:mA tV", "a=msid:- tV", 1);
        assert!(sent_streams(&sdp).is_empty());
        let lf = CHROME_OFFER
            .replace("\r\n", "\n")
            .replacen("a=sendonly", "a=inactive", 2);
        assert!(sent_streams(&lf).is_empty());
        let port0 = CHROME_OFFER.replace("m=video 9", "m=video 0");
        assert_eq!(sent_streams(&port0)["mA"].len(), 1);
    }

    #[test]
    fn diff_reports_new_added_removed() {
        let before = sent_streams(&CHROME_OFFER.replacen("a=sendonly", "a=inactive", 1));
        let after = sent_streams(CHROME_OFFER);
        let ch = diff(&before, &after);
        assert!(ch.new_streams.is_empty());
        assert_eq!(ch.added.len(), 1);
        assert_eq!(ch.added[0].1.kind, MediaKind::Audio);
        let ch = diff(&after, &BTreeMap::new());
        assert_eq!(ch.removed.len(), 2);
        let ch = diff(&BTreeMap::new(), &after);
        assert_eq!(ch.new_streams, vec!["mA".to_string()]);
    }

    #[test]
    fn garbage_is_empty_not_a_panic() {
        for s in [
            "",
            "m=",
            "m=video",
            "a=mid:x\r\n",
            "m=audio 9\r\na=msid:\r\na=mid:0",
            "\u{0}\u{ffff}",
        ] {
            let _ = sent_streams(s);
        }
        assert_eq!(
            media_sections("m=audio 9 X 1\na=msid:\na=mid:0")[0].stream_id,
            None
        );
    }
}
