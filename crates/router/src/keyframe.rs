//! Keyframe detection from RTP payloads.
//!
//! A subscriber can decode video only from a keyframe on, so the router gates new and
//! unmuted video subscriptions on the first packet of one. Each parser reads only the RTP
//! payload format's descriptor and the first bytes of the codec data, and returns `false`
//! for anything truncated or malformed.

use crate::codec::Codec;

/// Returns whether `payload` is the first RTP packet of a keyframe of `codec`.
///
/// Returns `false` for audio and `Other` codecs, and for truncated or malformed payloads. It
/// never panics.
pub fn starts_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => vp8_starts_keyframe(payload),
        Codec::Vp9 => vp9_starts_keyframe(payload),
        Codec::H264 => h264_starts_keyframe(payload),
        Codec::Av1 => av1_starts_keyframe(payload),
        Codec::Opus | Codec::Other => false,
    }
}

/// VP8 payload descriptor and payload header, RFC 7741 sections 4.2 and 4.3.
fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    const EXTENDED: u8 = 0x80;
    const START_OF_PARTITION: u8 = 0x10;
    const PARTITION_INDEX: u8 = 0x07;
    const PICTURE_ID_PRESENT: u8 = 0x80;
    const TL0PICIDX_PRESENT: u8 = 0x40;
    const TID_PRESENT: u8 = 0x20;
    const KEYIDX_PRESENT: u8 = 0x10;
    const LONG_PICTURE_ID: u8 = 0x80;
    // The frame tag's P bit is 0 on a keyframe (RFC 6386 section 9.1).
    const INTER_FRAME: u8 = 0x01;
    // A keyframe's frame tag (3 bytes) is followed by this start code (RFC 6386 section 9.1).
    const START_CODE: [u8; 3] = [0x9d, 0x01, 0x2a];

    let Some(&first) = payload.first() else {
        return false;
    };
    if first & START_OF_PARTITION == 0 || first & PARTITION_INDEX != 0 {
        return false;
    }

    let mut offset = 1;
    if first & EXTENDED != 0 {
        let Some(&extension) = payload.get(offset) else {
            return false;
        };
        offset += 1;
        if extension & PICTURE_ID_PRESENT != 0 {
            let Some(&picture_id) = payload.get(offset) else {
                return false;
            };
            offset += if picture_id & LONG_PICTURE_ID != 0 {
                2
            } else {
                1
            };
        }
        if extension & TL0PICIDX_PRESENT != 0 {
            offset += 1;
        }
        if extension & (TID_PRESENT | KEYIDX_PRESENT) != 0 {
            offset += 1;
        }
    }

    let Some(frame) = payload.get(offset..) else {
        return false;
    };
    match (frame.first(), frame.get(3..6)) {
        (Some(&frame_tag), Some(start_code)) => {
            frame_tag & INTER_FRAME == 0 && start_code == START_CODE
        }
        _ => false,
    }
}

/// VP9 payload descriptor, RFC 9628 section 4.2.
fn vp9_starts_keyframe(payload: &[u8]) -> bool {
    const PICTURE_ID_PRESENT: u8 = 0x80;
    const INTER_PICTURE_PREDICTED: u8 = 0x40;
    const LAYER_INDICES_PRESENT: u8 = 0x20;
    const FLEXIBLE_MODE: u8 = 0x10;
    const START_OF_FRAME: u8 = 0x08;
    const LONG_PICTURE_ID: u8 = 0x80;

    let Some(&first) = payload.first() else {
        return false;
    };
    if first & START_OF_FRAME == 0 || first & INTER_PICTURE_PREDICTED != 0 {
        return false;
    }

    let mut offset = 1;
    if first & PICTURE_ID_PRESENT != 0 {
        let Some(&picture_id) = payload.get(offset) else {
            return false;
        };
        offset += if picture_id & LONG_PICTURE_ID != 0 {
            2
        } else {
            1
        };
    }
    if first & LAYER_INDICES_PRESENT != 0 {
        let Some(&layer_indices) = payload.get(offset) else {
            return false;
        };
        // TID (3 bits), U, SID (3 bits), D: a keyframe starts at spatial layer 0.
        let spatial_layer = (layer_indices >> 1) & 0x07;
        if spatial_layer != 0 {
            return false;
        }
        offset += 1;
        // Non-flexible mode adds TL0PICIDX after the layer indices.
        if first & FLEXIBLE_MODE == 0 {
            offset += 1;
        }
    }
    // A truncated descriptor is not trusted as a keyframe.
    payload.len() >= offset
}

const H264_NAL_TYPE_MASK: u8 = 0x1f;

/// H.264 RTP payload format, RFC 6184 section 5.
fn h264_starts_keyframe(payload: &[u8]) -> bool {
    const FORBIDDEN_BIT: u8 = 0x80;
    const STAP_A: u8 = 24;
    const FU_A: u8 = 28;
    const FU_START: u8 = 0x80;

    let Some(&nal_header) = payload.first() else {
        return false;
    };
    if nal_header & FORBIDDEN_BIT != 0 {
        return false;
    }
    match nal_header & H264_NAL_TYPE_MASK {
        STAP_A => stap_a_contains_keyframe(payload.get(1..).unwrap_or_default()),
        FU_A => match payload.get(1) {
            Some(&fu_header) => {
                fu_header & FU_START != 0 && is_h264_keyframe_nal(fu_header & H264_NAL_TYPE_MASK)
            }
            None => false,
        },
        nal_type => is_h264_keyframe_nal(nal_type),
    }
}

/// IDR slice (5) or sequence parameter set (7): a decoder can start at either.
fn is_h264_keyframe_nal(nal_type: u8) -> bool {
    nal_type == 5 || nal_type == 7
}

/// Walks the aggregation units of a STAP-A (each a 16-bit size, then a NAL unit).
///
/// Returns `false` unless every unit is complete, so a truncated packet is never a keyframe
/// start.
fn stap_a_contains_keyframe(mut units: &[u8]) -> bool {
    let mut found = false;
    while !units.is_empty() {
        let (Some(&high), Some(&low)) = (units.first(), units.get(1)) else {
            return false;
        };
        let size = usize::from(u16::from_be_bytes([high, low]));
        let Some(nal) = units.get(2..).and_then(|rest| rest.get(..size)) else {
            return false;
        };
        let Some(&nal_header) = nal.first() else {
            return false;
        };
        found |= is_h264_keyframe_nal(nal_header & H264_NAL_TYPE_MASK);
        units = units.get(2 + size..).unwrap_or_default();
    }
    found
}

/// AV1 aggregation header, "RTP Payload Format For AV1" section 4.4: Z=0 (the packet does
/// not continue an OBU) and N=1 (the first packet of a coded video sequence).
fn av1_starts_keyframe(payload: &[u8]) -> bool {
    const CONTINUES_OBU: u8 = 0x80;
    const NEW_CODED_VIDEO_SEQUENCE: u8 = 0x08;

    match payload {
        // At least one OBU byte must follow the aggregation header.
        [header, _, ..] => header & CONTINUES_OBU == 0 && header & NEW_CODED_VIDEO_SEQUENCE != 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of a VP8 keyframe: frame tag with P=0, start code, 640x480.
    const VP8_KEYFRAME_DATA: [u8; 10] =
        [0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
    /// A VP8 interframe tag (P=1).
    const VP8_INTERFRAME_DATA: [u8; 6] = [0x31, 0x42, 0x00, 0x10, 0x20, 0x30];

    fn vp8(descriptor: &[u8], data: &[u8]) -> Vec<u8> {
        [descriptor, data].concat()
    }

    fn assert_truncations_do_not_panic(codec: Codec, payload: &[u8]) {
        for length in 0..payload.len() {
            let _ = starts_keyframe(codec, payload.get(..length).unwrap_or_default());
        }
    }

    fn vp8_positive_cases() -> Vec<Vec<u8>> {
        vec![
            // S=1, PID=0, no extension.
            vp8(&[0x10], &VP8_KEYFRAME_DATA),
            // X=1 with I (7-bit picture id).
            vp8(&[0x90, 0x80, 0x12], &VP8_KEYFRAME_DATA),
            // X=1 with I (15-bit picture id), L, T and K.
            vp8(&[0x90, 0xf0, 0x81, 0x23, 0x05, 0x40], &VP8_KEYFRAME_DATA),
            // X=1 with only L.
            vp8(&[0x90, 0x40, 0x07], &VP8_KEYFRAME_DATA),
            // X=1 with only K.
            vp8(&[0x90, 0x10, 0x03], &VP8_KEYFRAME_DATA),
            // N=1 (non-reference) does not change keyframe-ness.
            vp8(&[0x30], &VP8_KEYFRAME_DATA),
        ]
    }

    #[test]
    fn vp8_keyframe_detected() {
        for payload in vp8_positive_cases() {
            assert!(starts_keyframe(Codec::Vp8, &payload), "{payload:02x?}");
        }
    }

    #[test]
    fn vp8_non_keyframes_rejected() {
        let cases = [
            // Interframe (P=1).
            vp8(&[0x10], &VP8_INTERFRAME_DATA),
            // S=0: a continuation packet of the keyframe.
            vp8(&[0x00], &VP8_KEYFRAME_DATA),
            // PID=1: a later partition.
            vp8(&[0x11], &VP8_KEYFRAME_DATA),
            // X=1 announces I and L fields that are missing, so the frame tag is read from
            // the wrong byte and no start code follows it.
            vp8(&[0x90, 0xc0], &VP8_KEYFRAME_DATA),
            // Frame tag with P=0 but no start code.
            vp8(&[0x10], &[0x50, 0x42, 0x00, 0x00, 0x00, 0x00]),
            // Descriptor only.
            vec![0x10],
            vec![0x90, 0x80, 0x92],
        ];
        for payload in cases {
            assert!(!starts_keyframe(Codec::Vp8, &payload), "{payload:02x?}");
        }
    }

    #[test]
    fn vp8_truncations_do_not_panic() {
        for payload in vp8_positive_cases() {
            assert_truncations_do_not_panic(Codec::Vp8, &payload);
            // The frame data is 10 bytes long, so dropping 5 of them cuts the start code.
            for length in 0..payload.len() - 4 {
                let truncated = payload.get(..length).unwrap_or_default();
                assert!(!starts_keyframe(Codec::Vp8, truncated), "{truncated:02x?}");
            }
        }
    }

    fn vp9_positive_cases() -> Vec<Vec<u8>> {
        vec![
            // B=1, E=1, no optional fields, then VP9 frame data.
            vec![0x0c, 0x82, 0x49, 0x83],
            // I=1 with a 15-bit picture id, B=1.
            vec![0x88, 0x81, 0x23, 0x82, 0x49],
            // I=1 (7-bit), L=1 non-flexible: layer byte with SID=0, then TL0PICIDX.
            vec![0xa8, 0x12, 0x20, 0x05, 0x82],
            // I=1 (15-bit), L=1, F=1 (flexible), SID=0, no TL0PICIDX.
            vec![0xb8, 0x80, 0x01, 0x00, 0x82],
            // I=1, L=1 non-flexible, V=1 (scalability structure follows).
            vec![0xaa, 0x12, 0x00, 0x05, 0x18, 0x02, 0x80, 0x01, 0xe0],
        ]
    }

    #[test]
    fn vp9_keyframe_detected() {
        for payload in vp9_positive_cases() {
            assert!(starts_keyframe(Codec::Vp9, &payload), "{payload:02x?}");
        }
    }

    #[test]
    fn vp9_non_keyframes_rejected() {
        let cases: [&[u8]; 6] = [
            // P=1: inter-picture predicted.
            &[0x48, 0x82],
            // B=0: not the start of a frame.
            &[0x04, 0x82],
            // L=1, SID=1: the start of an upper spatial layer.
            &[0xa8, 0x12, 0x02, 0x05, 0x82],
            // L=1 with 15-bit picture id, SID=2.
            &[0xa8, 0x81, 0x23, 0x24, 0x05],
            // Picture id byte missing.
            &[0x88],
            // Long picture id whose second byte is missing.
            &[0x88, 0x81],
        ];
        for payload in cases {
            assert!(!starts_keyframe(Codec::Vp9, payload), "{payload:02x?}");
        }
    }

    #[test]
    fn vp9_truncations_do_not_panic() {
        for payload in vp9_positive_cases() {
            assert_truncations_do_not_panic(Codec::Vp9, &payload);
        }
        // Cutting into the I or L fields must not read as a keyframe.
        assert!(!starts_keyframe(Codec::Vp9, &[0xa8, 0x12]));
        assert!(!starts_keyframe(Codec::Vp9, &[0xa8, 0x12, 0x20]));
        assert!(!starts_keyframe(Codec::Vp9, &[]));
    }

    /// SPS, PPS and IDR NAL units as a Baseline encoder emits them.
    const H264_SPS: [u8; 8] = [0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16];
    const H264_PPS: [u8; 4] = [0x68, 0xce, 0x3c, 0x80];
    const H264_IDR: [u8; 6] = [0x65, 0x88, 0x84, 0x00, 0x33, 0xff];
    const H264_NON_IDR: [u8; 5] = [0x41, 0x9a, 0x02, 0x04, 0x00];

    fn stap_a(units: &[&[u8]]) -> Vec<u8> {
        let mut payload = vec![0x78];
        for unit in units {
            let size = u16::try_from(unit.len()).unwrap_or(u16::MAX);
            payload.extend_from_slice(&size.to_be_bytes());
            payload.extend_from_slice(unit);
        }
        payload
    }

    fn h264_positive_cases() -> Vec<Vec<u8>> {
        vec![
            H264_IDR.to_vec(),
            H264_SPS.to_vec(),
            stap_a(&[&H264_SPS, &H264_PPS, &H264_IDR]),
            stap_a(&[&H264_SPS, &H264_PPS]),
            // FU-A start of an IDR: indicator (NRI=3, type 28), header S=1 type 5.
            vec![0x7c, 0x85, 0x88, 0x84, 0x00],
        ]
    }

    #[test]
    fn h264_keyframe_detected() {
        for payload in h264_positive_cases() {
            assert!(starts_keyframe(Codec::H264, &payload), "{payload:02x?}");
        }
    }

    #[test]
    fn h264_non_keyframes_rejected() {
        let cases = [
            H264_NON_IDR.to_vec(),
            H264_PPS.to_vec(),
            // SEI.
            vec![0x06, 0x05, 0x10],
            // STAP-A without SPS or IDR.
            stap_a(&[&H264_PPS, &H264_NON_IDR]),
            // FU-A middle and end fragments of an IDR.
            vec![0x7c, 0x05, 0x88],
            vec![0x7c, 0x45, 0x88],
            // FU-A start of a non-IDR slice.
            vec![0x7c, 0x81, 0x9a],
            // FU-A with no FU header.
            vec![0x7c],
            // Forbidden bit set on an IDR.
            vec![0xe5, 0x88],
            // STAP-A whose second unit claims more bytes than present.
            [stap_a(&[&H264_PPS]), vec![0x00, 0x20, 0x65]].concat(),
            // STAP-A with a zero-size unit.
            vec![0x78, 0x00, 0x00],
            // STAP-A with no units.
            vec![0x78],
        ];
        for payload in cases {
            assert!(!starts_keyframe(Codec::H264, &payload), "{payload:02x?}");
        }
    }

    #[test]
    fn h264_truncations_do_not_panic() {
        for payload in h264_positive_cases() {
            assert_truncations_do_not_panic(Codec::H264, &payload);
        }
        // A STAP-A cut inside the IDR unit is malformed as a whole.
        let full = stap_a(&[&H264_SPS, &H264_IDR]);
        let cut = full.get(..full.len() - 1).unwrap_or_default();
        assert!(!starts_keyframe(Codec::H264, cut));
    }

    fn av1_positive_cases() -> Vec<Vec<u8>> {
        vec![
            // Z=0, Y=0, W=2, N=1, then a sequence header OBU with its size field.
            vec![0x28, 0x0a, 0x0b, 0x00, 0x00, 0x00, 0x24, 0xc4],
            // Z=0, Y=1, W=0, N=1.
            vec![0x48, 0x0a, 0x0b],
        ]
    }

    #[test]
    fn av1_keyframe_detected() {
        for payload in av1_positive_cases() {
            assert!(starts_keyframe(Codec::Av1, &payload), "{payload:02x?}");
        }
    }

    #[test]
    fn av1_non_keyframes_rejected() {
        let cases: [&[u8]; 4] = [
            // N=0.
            &[0x20, 0x32, 0x10],
            // Z=1 with N=1: continues an OBU.
            &[0xa8, 0x0a],
            // Aggregation header only.
            &[0x28],
            &[],
        ];
        for payload in cases {
            assert!(!starts_keyframe(Codec::Av1, payload), "{payload:02x?}");
        }
    }

    #[test]
    fn av1_truncations_do_not_panic() {
        for payload in av1_positive_cases() {
            assert_truncations_do_not_panic(Codec::Av1, &payload);
        }
    }

    #[test]
    fn audio_and_other_never_keyframes() {
        assert!(!starts_keyframe(Codec::Opus, &VP8_KEYFRAME_DATA));
        assert!(!starts_keyframe(Codec::Other, &H264_IDR));
    }

    #[test]
    fn garbage_never_panics() {
        let codecs = [
            Codec::Vp8,
            Codec::Vp9,
            Codec::H264,
            Codec::Av1,
            Codec::Opus,
            Codec::Other,
        ];
        for codec in codecs {
            for first in 0..=u8::MAX {
                for second in [0x00, 0x7f, 0x80, 0xff] {
                    let _ = starts_keyframe(codec, &[first]);
                    let _ = starts_keyframe(codec, &[first, second]);
                    let _ = starts_keyframe(codec, &[first, second, 0xff, 0xff, 0xff]);
                }
            }
        }
    }
}
