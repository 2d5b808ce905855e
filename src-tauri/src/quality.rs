//! Per-peer connection quality for the tiles' indicator: round-trip time, bit rates and packet
//! loss from the peer connection's stats, classified as good / fair / poor.
//!
//! [`classify`] and [`Tracker`] are pure (unit-tested); [`spawn`] polls a socket about once a
//! second and emits `peer-quality {id, rttMs, kbpsIn, kbpsOut, lossPct, estimateKbps, path, level}` per remote
//! peer.

use std::collections::HashMap;
use std::time::Duration;

use rtcio::Socket;
use rtcio::stats::PeerStats;
use serde::Serialize;
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::session::UiSink;

/// How often the stats are read (the bit rates are averaged over this interval).
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Round-trip time up to which a link is good, ms (a conversation feels live).
pub const GOOD_RTT_MS: f64 = 150.0;
/// Round-trip time up to which a link is fair, ms (ITU-T G.114's 400 ms one-way limit for
/// interactive speech, taken round-trip: beyond it people talk over each other).
pub const FAIR_RTT_MS: f64 = 400.0;
/// Packet loss up to which a link is good, percent (Opus FEC and NACK hide it).
pub const GOOD_LOSS_PCT: f64 = 2.0;
/// Packet loss up to which a link is fair, percent (visible artefacts, speech still clear).
pub const FAIR_LOSS_PCT: f64 = 10.0;
/// Incoming rate below which video is not flowing usefully, kbit/s (about one Opus stream).
/// Only applied when the peer sends at all: an audio-only or muted peer is not "poor".
pub const THIN_KBPS: f64 = 30.0;

/// Quality class of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// RTT ≤ [`GOOD_RTT_MS`] and loss ≤ [`GOOD_LOSS_PCT`].
    Good,
    /// RTT ≤ [`FAIR_RTT_MS`] and loss ≤ [`FAIR_LOSS_PCT`], or a thin incoming stream.
    Fair,
    /// Anything worse.
    Poor,
}

/// Classifies a link. Thresholds are inclusive (`rtt_ms == 150` is still good). `rtt_ms: None`
/// (not measured yet) does not count against the link. `kbps_in` only demotes a good link to
/// fair when it is above zero but below [`THIN_KBPS`] (something arrives, but too little); zero
/// means the peer sends nothing (camera and mic off), which is no fault of the link.
pub fn classify(rtt_ms: Option<f64>, loss_pct: f64, kbps_in: f64) -> Level {
    let rtt = rtt_ms.unwrap_or(0.0);
    // NaN (a broken report) must not read as "good": treat it as unknown, i.e. no evidence.
    let loss = if loss_pct.is_finite() { loss_pct } else { 0.0 };
    if rtt > FAIR_RTT_MS || loss > FAIR_LOSS_PCT {
        Level::Poor
    } else if rtt > GOOD_RTT_MS || loss > GOOD_LOSS_PCT || (kbps_in > 0.0 && kbps_in < THIN_KBPS) {
        Level::Fair
    } else {
        Level::Good
    }
}

/// One `peer-quality` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerQuality {
    /// Remote socket id.
    pub id: String,
    /// Round-trip time of the selected candidate pair, ms (`null` until measured).
    pub rtt_ms: Option<f64>,
    /// Incoming bit rate since the previous reading, kbit/s.
    pub kbps_in: f64,
    /// Outgoing bit rate since the previous reading, kbit/s.
    pub kbps_out: f64,
    /// Packets lost since the previous reading, percent of the packets expected.
    pub loss_pct: f64,
    /// Our send-side bandwidth estimate toward this peer (congestion control), kbit/s: what our
    /// video to them is held to.
    pub estimate_kbps: Option<f64>,
    /// `"relay"` when the call to this peer goes through a TURN relay (either side's selected
    /// candidate is relayed), `"direct"` otherwise; `null` before a pair is selected.
    pub path: Option<&'static str>,
    /// Classification.
    pub level: Level,
}

/// Cumulative inbound RTP packet counters of one reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    received: u64,
    lost: i64,
}

/// Sums `packetsReceived` / `packetsLost` over the report's inbound RTP entries.
fn counters(stats: &PeerStats) -> Counters {
    let mut c = Counters::default();
    for e in stats.raw.iter().filter(|e| e["type"] == "inbound-rtp") {
        c.received += e["packetsReceived"].as_u64().unwrap_or(0);
        c.lost += e["packetsLost"].as_i64().unwrap_or(0);
    }
    c
}

/// Direct or relayed, from the selected candidate pair.
fn path_of(stats: &PeerStats) -> Option<&'static str> {
    let (local, remote) = (stats.local.as_ref()?, stats.remote.as_ref()?);
    Some(
        if local.candidate_type == "relay" || remote.candidate_type == "relay" {
            "relay"
        } else {
            "direct"
        },
    )
}

/// Turns successive [`PeerStats`] readings into [`PeerQuality`]: loss is a rate over the last
/// interval rather than since the call began, so a link that recovers shows it.
#[derive(Debug, Default)]
pub struct Tracker {
    prev: HashMap<String, Counters>,
}

impl Tracker {
    /// A tracker without history.
    pub fn new() -> Self {
        Tracker::default()
    }

    /// The quality of one reading (`stats.bitrate_*` are already per interval).
    pub fn update(&mut self, stats: &PeerStats) -> PeerQuality {
        let now = counters(stats);
        let prev = self
            .prev
            .insert(stats.peer.clone(), now)
            .unwrap_or_default();
        // Counters restart with a new peer connection (ICE restart, reconnect): then the
        // reading itself is the interval.
        let (received, lost) = if now.received < prev.received {
            (now.received, now.lost)
        } else {
            (now.received - prev.received, now.lost - prev.lost)
        };
        // Lost can go negative (duplicates); expected = received + lost.
        let lost = lost.max(0) as f64;
        let expected = received as f64 + lost;
        let loss_pct = if expected > 0.0 {
            100.0 * lost / expected
        } else {
            0.0
        };
        let kbps = |b: Option<f64>| b.filter(|v| v.is_finite()).unwrap_or(0.0).max(0.0) / 1000.0;
        let kbps_in = kbps(stats.bitrate_in);
        let kbps_out = kbps(stats.bitrate_out);
        PeerQuality {
            id: stats.peer.clone(),
            rtt_ms: stats.rtt_ms,
            kbps_in,
            kbps_out,
            loss_pct,
            estimate_kbps: stats
                .send_estimate_bps
                .filter(|v| v.is_finite())
                .map(|v| v / 1000.0),
            path: path_of(stats),
            level: classify(stats.rtt_ms, loss_pct, kbps_in),
        }
    }

    /// Forgets peers that are gone.
    pub fn retain(&mut self, peers: &[String]) {
        self.prev.retain(|p, _| peers.contains(p));
    }
}

/// Polls `socket`'s peer stats every [`INTERVAL`] and emits `peer-quality` for each connected
/// peer until the task is aborted (on leave).
pub fn spawn(socket: Socket, ui: UiSink) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tracker = Tracker::new();
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let peers = socket.peers().await;
            tracker.retain(&peers);
            for peer in &peers {
                let Some(stats) = socket.stats(peer).await else {
                    continue;
                };
                // A connection still negotiating has nothing meaningful to show.
                if stats.connection != "connected" {
                    continue;
                }
                let q = tracker.update(&stats);
                tracing::trace!(peer = %q.id, ?q, "peer quality");
                match serde_json::to_value(&q) {
                    Ok(v) => ui("peer-quality", v),
                    Err(e) => tracing::warn!("peer quality not serialisable: {e}"),
                }
            }
        }
    })
}

/// `peer-quality` payload as JSON (for callers that build it by hand, e.g. tests).
pub fn to_json(q: &PeerQuality) -> Value {
    serde_json::to_value(q).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn thresholds_are_inclusive_at_each_boundary() {
        assert_eq!(classify(Some(GOOD_RTT_MS), 0.0, 500.0), Level::Good);
        assert_eq!(classify(Some(GOOD_RTT_MS + 0.1), 0.0, 500.0), Level::Fair);
        assert_eq!(classify(Some(FAIR_RTT_MS), 0.0, 500.0), Level::Fair);
        assert_eq!(classify(Some(FAIR_RTT_MS + 0.1), 0.0, 500.0), Level::Poor);
        assert_eq!(classify(Some(10.0), GOOD_LOSS_PCT, 500.0), Level::Good);
        assert_eq!(
            classify(Some(10.0), GOOD_LOSS_PCT + 0.01, 500.0),
            Level::Fair
        );
        assert_eq!(classify(Some(10.0), FAIR_LOSS_PCT, 500.0), Level::Fair);
        assert_eq!(
            classify(Some(10.0), FAIR_LOSS_PCT + 0.01, 500.0),
            Level::Poor
        );
    }

    #[test]
    fn bitrate_only_demotes_a_thin_nonzero_stream() {
        assert_eq!(
            classify(Some(10.0), 0.0, 0.0),
            Level::Good,
            "peer sends nothing"
        );
        assert_eq!(classify(Some(10.0), 0.0, THIN_KBPS - 1.0), Level::Fair);
        assert_eq!(classify(Some(10.0), 0.0, THIN_KBPS), Level::Good);
        // The worst factor wins.
        assert_eq!(classify(Some(500.0), 0.0, 5.0), Level::Poor);
    }

    #[test]
    fn unknown_rtt_and_nan_loss_are_no_evidence() {
        assert_eq!(classify(None, 0.0, 500.0), Level::Good);
        assert_eq!(classify(None, f64::NAN, 500.0), Level::Good);
        assert_eq!(classify(None, 50.0, 500.0), Level::Poor);
    }

    fn stats(peer: &str, received: u64, lost: i64, bin: Option<f64>) -> PeerStats {
        PeerStats {
            peer: peer.into(),
            polite: false,
            connection: "connected".into(),
            signaling: "stable".into(),
            bytes_sent: 0,
            bytes_received: 0,
            bitrate_out: Some(64_000.0),
            bitrate_in: bin,
            rtt_ms: Some(20.0),
            packets_lost: lost,
            jitter_ms: None,
            send_estimate_bps: Some(750_000.0),
            send_loss: None,
            local: None,
            remote: None,
            offers_sent: 0,
            glares: 0,
            raw: vec![
                json!({"type": "inbound-rtp", "packetsReceived": received, "packetsLost": lost}),
                json!({"type": "outbound-rtp", "packetsSent": 999}),
            ],
        }
    }

    #[test]
    fn loss_is_measured_over_the_last_interval() {
        let mut t = Tracker::new();
        let q = t.update(&stats("p", 90, 10, Some(800_000.0)));
        assert_eq!(q.loss_pct, 10.0);
        assert_eq!(q.kbps_in, 800.0);
        assert_eq!(q.kbps_out, 64.0);
        assert_eq!(q.level, Level::Fair);
        // 100 more packets, none lost: the old loss no longer counts.
        let q = t.update(&stats("p", 190, 10, Some(800_000.0)));
        assert_eq!(q.loss_pct, 0.0);
        assert_eq!(q.level, Level::Good);
        // A new connection restarts the counters.
        let q = t.update(&stats("p", 50, 50, None));
        assert_eq!(q.loss_pct, 50.0);
        assert_eq!(q.kbps_in, 0.0);
        assert_eq!(q.level, Level::Poor);
    }

    #[test]
    fn event_uses_the_documented_field_names() {
        let mut t = Tracker::new();
        let v = to_json(&t.update(&stats("peer-1", 0, 0, Some(100_000.0))));
        assert_eq!(v["id"], "peer-1");
        assert_eq!(v["rttMs"], 20.0);
        assert_eq!(v["kbpsIn"], 100.0);
        assert_eq!(v["kbpsOut"], 64.0);
        assert_eq!(v["lossPct"], 0.0);
        assert_eq!(v["estimateKbps"], 750.0);
        assert_eq!(v["path"], Value::Null, "no pair selected in this reading");
        assert_eq!(v["level"], "good");
    }
}
