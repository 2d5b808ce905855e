//! H.264 Annex-B helpers: split an access unit into NAL units and look at their headers.

/// NAL unit type of an IDR slice.
pub const NAL_IDR: u8 = 5;
/// NAL unit type of a sequence parameter set.
pub const NAL_SPS: u8 = 7;
/// NAL unit type of a picture parameter set.
pub const NAL_PPS: u8 = 8;
/// NAL unit type of an access unit delimiter.
pub const NAL_AUD: u8 = 9;

/// Iterates over the NAL units of an Annex-B buffer, without their start codes.
pub fn nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    openh264::nal_units(data).filter_map(|nal| {
        // openh264 yields each unit starting at its 3-byte `00 00 01` prefix.
        let body = nal.strip_prefix(&[0, 0, 1][..])?;
        // A following 4-byte start code leaves one zero at the end: trim trailing zeros.
        let end = body.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        (end > 0).then(|| &body[..end])
    })
}

/// The `nal_unit_type` of a NAL unit (without start code).
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|h| h & 0x1F)
}

/// True when the access unit holds an IDR slice.
pub fn contains_idr(access_unit: &[u8]) -> bool {
    nal_units(access_unit).any(|n| nal_type(n) == Some(NAL_IDR))
}

/// `(profile_idc, constraint flags byte, level_idc)` of the first SPS in the access unit.
pub fn sps_profile(access_unit: &[u8]) -> Option<(u8, u8, u8)> {
    let sps = nal_units(access_unit).find(|n| nal_type(n) == Some(NAL_SPS))?;
    Some((*sps.get(1)?, *sps.get(2)?, *sps.get(3)?))
}

/// The `profile-level-id` SDP parameter (six hex digits) the access unit's SPS announces.
pub fn profile_level_id(access_unit: &[u8]) -> Option<String> {
    let (p, c, l) = sps_profile(access_unit)?;
    Some(format!("{p:02x}{c:02x}{l:02x}"))
}

/// True when the first slice of this NAL unit starts a new picture (`first_mb_in_slice == 0`,
/// whose Exp-Golomb code is a single `1` bit).
pub(crate) fn starts_picture(nal: &[u8]) -> bool {
    matches!(nal_type(nal), Some(1 | 5)) && nal.get(1).is_some_and(|b| b & 0x80 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 0x88, 4,
        ];
        let nals: Vec<&[u8]> = nal_units(&data).collect();
        assert_eq!(
            nals,
            vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 0x88, 4][..]]
        );
        assert!(contains_idr(&data));
        // The SPS above is too short to carry a level.
        assert_eq!(sps_profile(&data), None);
    }
}
