//! Negotiated data-channel ids, exactly as the rtc.io JS computes them.

/// SCTP stream id of the control channel `rtcio:ctrl`.
pub const CTRL_ID: u16 = 0;
/// Label of the control channel.
pub const CTRL_LABEL: &str = "rtcio:ctrl";
/// Label prefix of custom channels.
pub const CHANNEL_PREFIX: &str = "rtcio:ch:";

/// `fnv1a32` over the name's UTF-16 code units (JS `charCodeAt`), then `% 1023 + 1`, so ids fall in
/// 1..=1023. Hashing UTF-8 bytes instead would give different ids for non-ASCII names.
pub fn channel_id(name: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for unit in name.encode_utf16() {
        h ^= u32::from(unit);
        h = h.wrapping_mul(0x0100_0193);
    }
    // The modulo keeps the value below 1024, so the cast cannot truncate.
    ((h % 1023) + 1) as u16
}

/// Data-channel label of a custom channel.
pub fn channel_label(name: &str) -> String {
    format!("{CHANNEL_PREFIX}{name}")
}

/// The error rtc.io raises when two names on one peer map to the same SCTP id.
pub fn collision_message(new: &str, existing: &str, peer: &str, id: u16) -> String {
    format!(
        "[rtc-io] Channel '{new}' hash-collides with existing channel '{existing}' on peer {peer} \
         (both names hash to SCTP id {id}). Pick a different channel name."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_test_vectors() {
        let vectors: &[(&str, u16)] = &[
            ("chat", 721),
            ("cursors", 57),
            ("cursor", 467),
            ("file", 139),
            ("bulk", 32),
            ("a", 635),
            ("", 257),
            ("émoji-✓", 386),
            ("😀", 480),
            ("rtcio", 999),
            ("game-state", 977),
            ("msg", 294),
            ("game", 419),
            ("game-events", 568),
            ("telemetry", 956),
            ("position", 789),
            ("input", 313),
            ("reaction", 300),
            ("rpc", 583),
            ("live", 53),
        ];
        for (name, id) in vectors {
            assert_eq!(channel_id(name), *id, "{name:?}");
        }
        assert_eq!(channel_id(&"x".repeat(100)), 693);
    }

    #[test]
    fn known_collisions() {
        assert_eq!(channel_id("draw"), 412);
        assert_eq!(channel_id("log"), 412);
        assert_eq!(channel_id("ch-18"), channel_id("ch-50"));
        assert_eq!(channel_id("ch-18"), 93);
        assert_eq!(channel_id("room-792"), channel_id("chat"));
    }

    #[test]
    fn ids_stay_in_range() {
        for i in 0..5000 {
            let id = channel_id(&format!("name-{i}"));
            assert!((1..=1023).contains(&id));
        }
    }
}
