//! Codec order in a remote offer. An answer lists codecs in the offer's order and the offerer
//! sends the first one it can, so a browser offering `VP8, …, H264` would send us VP8, which our
//! decoder (OpenH264) cannot read. Reordering the offer we apply — not what the browser sent —
//! makes our answer lead with H.264 constrained baseline, packetization-mode 1.

use std::collections::HashMap;

/// Rank of a video payload type (lower is preferred); `None` leaves it in place after the
/// ranked ones.
fn rank(rtpmap: Option<&str>, fmtp: Option<&str>) -> Option<u8> {
    let codec = rtpmap?.split('/').next()?;
    if !codec.eq_ignore_ascii_case("H264") {
        return None;
    }
    let fmtp = fmtp.unwrap_or("").to_ascii_lowercase();
    let mode1 = fmtp.contains("packetization-mode=1");
    // profile_idc 0x42 = baseline family; 42e0xx / 42c0xx are constrained baseline.
    let profile = fmtp
        .split(';')
        .find_map(|p| p.trim().strip_prefix("profile-level-id="))
        .unwrap_or("");
    let constrained = profile.starts_with("42e0") || profile.starts_with("42c0");
    let baseline = profile.starts_with("42");
    Some(match (mode1, constrained, baseline) {
        (true, true, _) => 0,
        (true, false, true) => 1,
        (true, false, false) => 3,
        (false, _, true) => 2,
        (false, _, false) => 4,
    })
}

/// The SDP with each video m-line's payload types reordered so H.264 (constrained baseline,
/// packetization-mode 1 first) leads; RTX entries stay where they were. Everything else is
/// untouched, including line endings.
pub fn prefer_h264(sdp: &str) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let lines: Vec<&str> = sdp.split(eol).collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if !line.starts_with("m=video ") {
            out.push(line.to_string());
            i += 1;
            continue;
        }
        // The section runs to the next m= line.
        let end = lines[i + 1..]
            .iter()
            .position(|l| l.starts_with("m="))
            .map_or(lines.len(), |p| i + 1 + p);
        let section = &lines[i + 1..end];
        // One pass over the section, not one per payload type: a hostile SDP with thousands of
        // payload types and attribute lines made this quadratic (~2 ms for 11 kB when fuzzed).
        // The first line for a payload type wins, as a search from the top would find.
        let mut rtpmaps: HashMap<&str, &str> = HashMap::new();
        let mut fmtps: HashMap<&str, &str> = HashMap::new();
        for l in section {
            let (map, rest) = if let Some(r) = l.strip_prefix("a=rtpmap:") {
                (&mut rtpmaps, r)
            } else if let Some(r) = l.strip_prefix("a=fmtp:") {
                (&mut fmtps, r)
            } else {
                continue;
            };
            if let Some((pt, value)) = rest.split_once(' ') {
                map.entry(pt).or_insert(value);
            }
        }
        let mut parts: Vec<&str> = line.split(' ').collect();
        if parts.len() > 3 {
            let pts: Vec<&str> = parts.split_off(3);
            let mut ranked: Vec<(u8, usize, &str)> = Vec::new();
            let mut rest: Vec<&str> = Vec::new();
            for (idx, pt) in pts.iter().enumerate() {
                match rank(rtpmaps.get(pt).copied(), fmtps.get(pt).copied()) {
                    Some(r) => ranked.push((r, idx, pt)),
                    None => rest.push(pt),
                }
            }
            ranked.sort();
            parts.extend(ranked.iter().map(|(_, _, pt)| *pt));
            parts.extend(rest);
        }
        out.push(parts.join(" "));
        out.extend(section.iter().map(|l| l.to_string()));
        i = end;
    }
    out.join(eol)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Chromium-shaped offer: VP8 first, H.264 high profile before baseline.
    const OFFER: &str = "v=0\r\ns=-\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 100 101 102 103 35\r\na=mid:1\r\n\
a=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\n\
a=rtpmap:100 H264/90000\r\na=fmtp:100 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f\r\n\
a=rtpmap:101 rtx/90000\r\na=fmtp:101 apt=100\r\n\
a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=rtpmap:103 H264/90000\r\na=fmtp:103 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f\r\n\
a=rtpmap:35 AV1/90000\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:2\r\n";

    #[test]
    fn h264_baseline_mode1_leads_video() {
        let out = prefer_h264(OFFER);
        assert!(
            out.contains("m=video 9 UDP/TLS/RTP/SAVPF 102 103 100 96 97 101 35\r\n"),
            "{out}"
        );
        // Nothing else changed.
        assert_eq!(out.len(), OFFER.len());
        assert!(out.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111 63\r\n"));
        assert!(out.ends_with("a=mid:2\r\n"));
    }

    #[test]
    fn leaves_sdp_without_h264_or_video_alone() {
        let vp8 = "m=video 9 RTP/AVP 96 97\na=rtpmap:96 VP8/90000\na=rtpmap:97 VP9/90000\n";
        assert_eq!(prefer_h264(vp8), vp8);
        assert_eq!(prefer_h264(""), "");
        assert_eq!(prefer_h264("m=video 9"), "m=video 9");
        let garbage = "m=video \r\na=rtpmap: \r\na=fmtp:x";
        assert_eq!(prefer_h264(garbage), garbage);
    }

    #[test]
    fn the_first_attribute_line_of_a_payload_type_decides() {
        // A later, contradicting rtpmap for 96 is ignored; 9 is not 96's prefix.
        let sdp = "m=video 9 RTP/AVP 9 96\na=rtpmap:96 H264/90000\n\
a=fmtp:96 packetization-mode=1;profile-level-id=42e01f\na=rtpmap:96 VP8/90000\n\
a=rtpmap:9 VP8/90000\n";
        assert!(prefer_h264(sdp).starts_with("m=video 9 RTP/AVP 96 9\n"));
    }

    #[test]
    fn thousands_of_payload_types_keep_every_one() {
        let pts: Vec<String> = (0..5000).map(|n| n.to_string()).collect();
        let mut sdp = format!("m=video 9 RTP/AVP {}\n", pts.join(" "));
        for pt in &pts {
            sdp.push_str(&format!("a=rtpmap:{pt} VP8/90000\n"));
        }
        sdp.push_str("a=rtpmap:4999 H264/90000\n");
        let out = prefer_h264(&sdp);
        assert_eq!(out.len(), sdp.len());
        assert!(
            out.starts_with("m=video 9 RTP/AVP 0 1 2 "),
            "VP8 everywhere: order kept"
        );
    }
}
