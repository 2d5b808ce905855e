//! How the video encoder's target follows the link: the weakest peer's send-side estimate, less
//! what audio and overhead take, within a floor and the user's cap.

/// Limits of the video target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePolicy {
    /// The user's cap (and the target when no estimate exists), bits/s.
    pub max_bps: u32,
    /// Never ask the encoder for less, bits/s.
    pub min_bps: u32,
    /// Share of the estimate video may use (the rest is headroom for RTP/RTX overhead).
    pub share: f64,
    /// What the audio track takes off the estimate, bits/s.
    pub audio_bps: u32,
}

impl Default for RatePolicy {
    fn default() -> Self {
        RatePolicy {
            max_bps: 1_500_000,
            min_bps: 80_000,
            share: 0.9,
            audio_bps: 48_000,
        }
    }
}

/// The encoder's target for the lowest estimate over the peers (`None`: no peer with an
/// estimate yet, so the cap).
pub fn video_target_bps(policy: &RatePolicy, min_estimate_bps: Option<u64>) -> u32 {
    let cap = policy.max_bps.max(policy.min_bps);
    let Some(est) = min_estimate_bps else {
        return cap;
    };
    let usable = est as f64 * policy.share - f64::from(policy.audio_bps);
    (usable.max(0.0) as u64).clamp(u64::from(policy.min_bps), u64::from(cap)) as u32
}

/// The estimate the encoder's target follows: the lowest over the peers the track feeds; with
/// no peer yet, the estimate a peer connection starts from (`start_bps`, `None` without
/// congestion control). Sized for the start, the first keyframe a joining peer gets and the
/// rung it comes at fit the link the call starts on; sized for the cap, a 720p IDR at the cap
/// flooded a 600 kbit/s link for a second and every loss asked for another.
pub fn followed_estimate(
    min_estimate_bps: Option<u64>,
    peers: usize,
    start_bps: Option<u32>,
) -> Option<u64> {
    match (min_estimate_bps, peers) {
        (Some(e), _) => Some(e),
        (None, 0) => start_bps.map(u64::from),
        (None, _) => None,
    }
}

/// The loss Opus's in-band FEC should be sized for, percent, from the highest loss a peer
/// reports (`None`: no report yet, keep `default`). Never 0 while reports exist (a little FEC
/// costs little and covers the first loss); at most 30 (beyond that FEC cannot keep up and
/// only eats the bitrate).
pub fn opus_expected_loss(reported: Option<f64>, default: u8) -> u8 {
    match reported.filter(|l| l.is_finite()) {
        None => default,
        Some(l) => ((l.clamp(0.0, 1.0) * 100.0).ceil() as u8).clamp(1, 30),
    }
}

/// Opus never goes below this for the estimate: wideband speech is still clear at 16 kbit/s,
/// and below it the codec falls to narrowband.
pub const OPUS_FLOOR_BPS: u32 = 16_000;

/// Opus's bitrate for the lowest estimate over the peers (`None`: none yet, `configured`):
/// a tenth of the estimate, between [`OPUS_FLOOR_BPS`] and the configured rate. At 32 kbit/s
/// configured it is untouched down to a 320 kbit/s link; on a 200 kbit/s link it gives video
/// 12 kbit/s more, and audio still fits a link the video cannot (it keeps 16 of 80 kbit/s).
pub fn opus_target_bps(min_estimate_bps: Option<u64>, configured: u32) -> u32 {
    match min_estimate_bps {
        None => configured,
        Some(e) => u32::try_from(e / 10)
            .unwrap_or(u32::MAX)
            .clamp(OPUS_FLOOR_BPS.min(configured), configured),
    }
}

/// True when the target moved enough to tell the encoder (small wobbles of the estimate would
/// otherwise reconfigure it several times a second).
pub fn worth_changing(current: u32, new: u32) -> bool {
    let (a, b) = (f64::from(current), f64::from(new));
    (a - b).abs() > a.max(1.0) * 0.05
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opus_follows_a_tenth_of_the_estimate_within_floor_and_configured() {
        assert_eq!(opus_target_bps(None, 32_000), 32_000);
        assert_eq!(opus_target_bps(Some(5_000_000), 32_000), 32_000);
        assert_eq!(opus_target_bps(Some(320_000), 32_000), 32_000);
        assert_eq!(opus_target_bps(Some(250_000), 32_000), 25_000);
        assert_eq!(opus_target_bps(Some(100_000), 32_000), 16_000);
        assert_eq!(opus_target_bps(Some(0), 32_000), 16_000);
        // A configured rate below the floor is never raised.
        assert_eq!(opus_target_bps(Some(0), 12_000), 12_000);
        assert_eq!(opus_target_bps(Some(u64::MAX), 12_000), 12_000);
    }

    #[test]
    fn follows_the_estimate_within_floor_and_cap() {
        let p = RatePolicy::default();
        assert_eq!(video_target_bps(&p, None), 1_500_000);
        assert_eq!(video_target_bps(&p, Some(10_000_000)), 1_500_000);
        assert_eq!(video_target_bps(&p, Some(600_000)), 492_000);
        assert_eq!(video_target_bps(&p, Some(50_000)), 80_000);
        assert_eq!(video_target_bps(&p, Some(0)), 80_000);
    }

    #[test]
    fn with_no_peer_the_encoder_waits_at_the_start_estimate() {
        let p = RatePolicy::default();
        let target = |e, peers, start| video_target_bps(&p, followed_estimate(e, peers, start));
        // No peer yet: sized for where a peer's estimate will start.
        assert_eq!(target(None, 0, Some(300_000)), 222_000);
        // Without congestion control: the cap, with or without peers.
        assert_eq!(target(None, 0, None), 1_500_000);
        assert_eq!(target(None, 2, None), 1_500_000);
        // Peers: their lowest estimate, whatever the start.
        assert_eq!(target(Some(600_000), 1, Some(300_000)), 492_000);
    }

    #[test]
    fn a_cap_below_the_floor_still_gives_the_floor() {
        let p = RatePolicy {
            max_bps: 10_000,
            ..RatePolicy::default()
        };
        assert_eq!(video_target_bps(&p, Some(5_000_000)), 80_000);
    }

    #[test]
    fn opus_fec_follows_reported_loss() {
        assert_eq!(opus_expected_loss(None, 10), 10);
        assert_eq!(opus_expected_loss(Some(0.0), 10), 1);
        assert_eq!(opus_expected_loss(Some(0.031), 10), 4);
        assert_eq!(opus_expected_loss(Some(0.9), 10), 30);
        assert_eq!(opus_expected_loss(Some(f64::NAN), 10), 10);
    }

    #[test]
    fn small_moves_are_ignored() {
        assert!(!worth_changing(1_000_000, 1_040_000));
        assert!(worth_changing(1_000_000, 900_000));
        assert!(worth_changing(0, 100_000));
    }
}
