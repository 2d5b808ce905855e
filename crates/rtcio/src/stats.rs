//! Per-peer statistics: the raw webrtc-rs report as JSON, and a session summary (bitrates, RTT,
//! loss, jitter, selected candidate pair) like rtc.io's `getSessionStats`.

use std::time::Instant;

use serde::Serialize;
use serde_json::Value;
use webrtc::peer_connection::{RTCStatsReport, RTCStatsReportEntry};

/// One end of the selected ICE candidate pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CandidateInfo {
    /// IP address.
    pub address: Option<String>,
    /// Port.
    pub port: u16,
    /// `host`, `srflx`, `prflx` or `relay`.
    pub candidate_type: String,
    /// `udp` / `tcp`.
    pub protocol: String,
}

/// Summary of one peer connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerStats {
    /// Remote socket id.
    pub peer: String,
    /// Whether we are the polite side.
    pub polite: bool,
    /// Connection state (`new`, `connecting`, `connected`, `disconnected`, `failed`, `closed`).
    pub connection: String,
    /// Signaling state as this peer tracks it.
    pub signaling: String,
    /// Transport bytes sent / received (all media and data).
    pub bytes_sent: u64,
    /// See `bytes_sent`.
    pub bytes_received: u64,
    /// Outgoing bit rate since the previous `stats()` call, bits/s.
    pub bitrate_out: Option<f64>,
    /// Incoming bit rate since the previous `stats()` call, bits/s.
    pub bitrate_in: Option<f64>,
    /// Round-trip time of the selected pair, ms.
    pub rtt_ms: Option<f64>,
    /// Packets lost, summed over inbound RTP streams.
    pub packets_lost: i64,
    /// Largest inbound RTP jitter, ms.
    pub jitter_ms: Option<f64>,
    /// Send-side bandwidth estimate toward this peer (GCC over transport-wide CC feedback),
    /// bits/s; `None` with congestion control off.
    pub send_estimate_bps: Option<f64>,
    /// Fraction of our packets this peer reported lost (the estimator's loss window), 0..=1.
    pub send_loss: Option<f64>,
    /// Local end of the selected pair.
    pub local: Option<CandidateInfo>,
    /// Remote end of the selected pair. Peer-reflexive when the peer's check came before its
    /// candidate and no signaled candidate has that address.
    pub remote: Option<CandidateInfo>,
    /// Offers we sent to this peer (initial, renegotiations, ICE restarts).
    pub offers_sent: u64,
    /// Remote offers that collided with ours (glare).
    pub glares: u64,
    /// Every report entry as JSON (`{"type": …, …}`), for whoever wants the details.
    pub raw: Vec<Value>,
}

/// The previous byte counters, for bit rates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    at: Instant,
    sent: u64,
    received: u64,
}

fn entry_json(e: &RTCStatsReportEntry) -> Option<Value> {
    let (kind, v) = match e {
        RTCStatsReportEntry::PeerConnection(s) => ("peer-connection", serde_json::to_value(s)),
        RTCStatsReportEntry::Transport(s) => ("transport", serde_json::to_value(s)),
        RTCStatsReportEntry::IceCandidatePair(s) => ("candidate-pair", serde_json::to_value(s)),
        RTCStatsReportEntry::LocalCandidate(s) => ("local-candidate", serde_json::to_value(s)),
        RTCStatsReportEntry::RemoteCandidate(s) => ("remote-candidate", serde_json::to_value(s)),
        RTCStatsReportEntry::DataChannel(s) => ("data-channel", serde_json::to_value(s)),
        RTCStatsReportEntry::InboundRtp(s) => ("inbound-rtp", serde_json::to_value(s)),
        RTCStatsReportEntry::OutboundRtp(s) => ("outbound-rtp", serde_json::to_value(s)),
        RTCStatsReportEntry::RemoteInboundRtp(s) => ("remote-inbound-rtp", serde_json::to_value(s)),
        RTCStatsReportEntry::RemoteOutboundRtp(s) => {
            ("remote-outbound-rtp", serde_json::to_value(s))
        }
        RTCStatsReportEntry::Codec(s) => ("codec", serde_json::to_value(s)),
        _ => return None,
    };
    let mut v = v.ok()?;
    if let Value::Object(o) = &mut v {
        o.insert("type".into(), Value::String(kind.into()));
    }
    Some(v)
}

fn candidate(report: &RTCStatsReport, id: &str) -> Option<CandidateInfo> {
    // webrtc-rs names the pair's ends `candidate:…` but files the entries under a prefixed id.
    let entry = report
        .get(id)
        .or_else(|| report.get(&format!("RTCLocalIceCandidate_{id}")))
        .or_else(|| report.get(&format!("RTCRemoteIceCandidate_{id}")))?;
    match entry {
        RTCStatsReportEntry::LocalCandidate(c) => Some(candidate_info(c)),
        RTCStatsReportEntry::RemoteCandidate(c) => {
            let signaled = report.iter().filter_map(|e| match e {
                RTCStatsReportEntry::RemoteCandidate(s) => Some(candidate_info(s)),
                _ => None,
            });
            Some(resolve_prflx(candidate_info(c), signaled))
        }
        _ => None,
    }
}

fn candidate_info(
    c: &rtc::statistics::stats::ice_candidate::RTCIceCandidateStats,
) -> CandidateInfo {
    CandidateInfo {
        address: c.address.clone(),
        port: c.port,
        candidate_type: format!("{:?}", c.candidate_type).to_lowercase(),
        protocol: c.protocol.clone(),
    }
}

/// A peer-reflexive remote end that a signaled candidate matches (same address, port and
/// protocol) is that candidate: the peer's check arrived before its candidate did, which on a
/// relayed call makes the peer's relay address look peer-reflexive. libwebrtc updates such a
/// candidate when the signaled one arrives; webrtc-rs keeps the pair on the prflx one.
fn resolve_prflx(
    selected: CandidateInfo,
    mut signaled: impl Iterator<Item = CandidateInfo>,
) -> CandidateInfo {
    if selected.candidate_type != "prflx" {
        return selected;
    }
    signaled
        .find(|c| {
            c.candidate_type != "prflx"
                && c.address == selected.address
                && c.port == selected.port
                && c.protocol == selected.protocol
        })
        .unwrap_or(selected)
}

/// Builds the summary; returns it with the sample to keep for the next call.
#[allow(clippy::too_many_arguments)]
pub(crate) fn summarize(
    peer: &str,
    counters: (u64, u64),
    polite: bool,
    connection: &str,
    signaling: &str,
    report: &RTCStatsReport,
    prev: Option<Sample>,
    now: Instant,
    estimate: Option<&crate::bwe::BandwidthEstimate>,
) -> (PeerStats, Sample) {
    let transport = report.transport();
    let bytes_sent = transport.map_or(0, |t| t.bytes_sent);
    let bytes_received = transport.map_or(0, |t| t.bytes_received);
    let pair = transport
        .and_then(|t| report.get(&t.selected_candidate_pair_id))
        .and_then(|e| match e {
            RTCStatsReportEntry::IceCandidatePair(p) => Some(p),
            _ => None,
        })
        .or_else(|| report.candidate_pairs().find(|p| p.nominated));
    let rtt_ms = pair
        .map(|p| p.current_round_trip_time * 1000.0)
        .filter(|r| *r > 0.0);
    let (local, remote) = match pair {
        Some(p) => (
            candidate(report, &p.local_candidate_id),
            candidate(report, &p.remote_candidate_id),
        ),
        None => (None, None),
    };
    let mut packets_lost = 0;
    let mut jitter: Option<f64> = None;
    for s in report.inbound_rtp_streams() {
        packets_lost += s.received_rtp_stream_stats.packets_lost;
        let j = s.received_rtp_stream_stats.jitter * 1000.0;
        jitter = Some(jitter.map_or(j, |x: f64| x.max(j)));
    }
    let rate =
        |a: u64, b: u64, secs: f64| (secs > 0.0).then(|| (a.saturating_sub(b) as f64) * 8.0 / secs);
    let (bitrate_out, bitrate_in) = match prev {
        Some(p) => {
            let secs = now.saturating_duration_since(p.at).as_secs_f64();
            (
                rate(bytes_sent, p.sent, secs),
                rate(bytes_received, p.received, secs),
            )
        }
        None => (None, None),
    };
    let stats = PeerStats {
        peer: peer.to_string(),
        polite,
        connection: connection.to_string(),
        signaling: signaling.to_string(),
        bytes_sent,
        bytes_received,
        bitrate_out,
        bitrate_in,
        rtt_ms,
        packets_lost,
        jitter_ms: jitter,
        send_estimate_bps: estimate.map(|e| e.target_bps() as f64),
        send_loss: estimate.and_then(|e| e.loss()),
        offers_sent: counters.0,
        glares: counters.1,
        local,
        remote,
        raw: report.iter().filter_map(entry_json).collect(),
    };
    (
        stats,
        Sample {
            at: now,
            sent: bytes_sent,
            received: bytes_received,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(t: &str, port: u16) -> CandidateInfo {
        CandidateInfo {
            address: Some("127.0.0.1".into()),
            port,
            candidate_type: t.into(),
            protocol: "udp".into(),
        }
    }

    #[test]
    fn a_prflx_end_takes_the_type_of_the_signaled_candidate_at_its_address() {
        let signaled = [cand("host", 5000), cand("relay", 42045)];
        assert_eq!(
            resolve_prflx(cand("prflx", 42045), signaled.iter().cloned()),
            cand("relay", 42045)
        );
    }

    #[test]
    fn a_prflx_end_without_a_match_stays_prflx_and_others_are_kept() {
        let signaled = [cand("relay", 42045), cand("prflx", 6000)];
        assert_eq!(
            resolve_prflx(cand("prflx", 6000), signaled.iter().cloned()),
            cand("prflx", 6000)
        );
        assert_eq!(
            resolve_prflx(cand("host", 42045), signaled.iter().cloned()),
            cand("host", 42045)
        );
    }
}
