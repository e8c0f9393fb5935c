//! Synthetic media: VP8 frames with real payload descriptors and keyframe headers, and Opus-sized
//! audio packets, each carrying a counter so a receiver can tell exactly which packet it got.

use bytes::{BufMut, Bytes, BytesMut};

/// Payload type both test peers register for VP8.
pub const VP8_PAYLOAD_TYPE: u8 = 96;
/// Payload type both test peers register for Opus.
pub const OPUS_PAYLOAD_TYPE: u8 = 111;
/// RTP clock ticks per video frame at 30 frames per second.
pub const VIDEO_TICKS_PER_FRAME: u32 = 90_000 / 30;
/// RTP clock ticks per 20 ms Opus packet.
pub const AUDIO_TICKS_PER_PACKET: u32 = 48_000 / 50;

/// One packet's worth of a synthetic VP8 frame.
#[derive(Clone, Debug)]
pub struct VideoPacket {
    pub frame: u32,
    pub index: u8,
    pub keyframe: bool,
    /// Last packet of its frame: the RTP marker bit.
    pub last: bool,
    pub payload: Bytes,
}

/// Splits frame number `frame` into `packets` RTP payloads of about `size` bytes each.
///
/// The first payload starts with a VP8 payload descriptor with S=1 and partition 0, then the VP8
/// frame tag (inverse key-frame bit 0 for a keyframe), and for a keyframe the start code and a
/// 640x480 size, as RFC 7741 and RFC 6386 lay them out. Every payload then carries the frame
/// number and packet index.
pub fn vp8_frame(frame: u32, keyframe: bool, packets: u8, size: usize) -> Vec<VideoPacket> {
    let packets = packets.max(1);
    (0..packets)
        .map(|index| {
            let mut payload = BytesMut::with_capacity(size.max(32));
            let first = index == 0;
            // Descriptor: X=0, N=0, S=1 on the first packet of the frame, PID=0.
            payload.put_u8(if first { 0x10 } else { 0x00 });
            if first {
                // Frame tag: bit 0 is the inverse key-frame flag, bit 4 show_frame.
                let tag0 = if keyframe { 0x10 } else { 0x11 };
                payload.put_slice(&[tag0, 0x00, 0x00]);
                if keyframe {
                    payload.put_slice(&[0x9d, 0x01, 0x2a]);
                    payload.put_u16_le(640);
                    payload.put_u16_le(480);
                }
            }
            payload.put_u32(frame);
            payload.put_u8(index);
            while payload.len() < size {
                payload.put_u8((frame as u8).wrapping_add(index));
            }
            VideoPacket {
                frame,
                index,
                keyframe,
                last: index + 1 == packets,
                payload: payload.freeze(),
            }
        })
        .collect()
}

/// Reads the frame number and packet index that [`vp8_frame`] wrote.
pub fn vp8_counter(payload: &[u8]) -> Option<(u32, u8)> {
    let first = payload.first()? & 0x10 != 0;
    let offset = match (first, payload.get(1)? & 0x01 == 0) {
        (true, true) => 1 + 3 + 7,
        (true, false) => 1 + 3,
        (false, _) => 1,
    };
    let counter = payload.get(offset..offset + 5)?;
    let frame = u32::from_be_bytes([counter[0], counter[1], counter[2], counter[3]]);
    Some((frame, counter[4]))
}

/// Returns whether a payload made by [`vp8_frame`] starts a keyframe.
pub fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    matches!(payload, [descriptor, tag, ..] if descriptor & 0x10 != 0 && tag & 0x01 == 0)
}

/// Builds an audio payload: a TOC byte for a 20 ms CELT frame, then the packet number.
pub fn opus_packet(number: u32, size: usize) -> Bytes {
    let mut payload = BytesMut::with_capacity(size.max(8));
    payload.put_u8(0x78);
    payload.put_u32(number);
    while payload.len() < size {
        payload.put_u8(number as u8);
    }
    payload.freeze()
}

/// Reads the packet number that [`opus_packet`] wrote.
pub fn opus_counter(payload: &[u8]) -> Option<u32> {
    let bytes = payload.get(1..5)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_counter_round_trips() {
        let packets = vp8_frame(77, true, 3, 200);
        assert_eq!(packets.len(), 3);
        assert!(vp8_starts_keyframe(&packets[0].payload));
        assert!(!vp8_starts_keyframe(&packets[1].payload));
        assert_eq!(vp8_counter(&packets[0].payload), Some((77, 0)));
        assert_eq!(vp8_counter(&packets[2].payload), Some((77, 2)));
        assert!(packets[2].last);
    }

    #[test]
    fn delta_frame_is_not_keyframe() {
        let packets = vp8_frame(5, false, 1, 100);
        assert!(!vp8_starts_keyframe(&packets[0].payload));
        assert_eq!(vp8_counter(&packets[0].payload), Some((5, 0)));
    }

    #[test]
    fn opus_counter_round_trips() {
        assert_eq!(opus_counter(&opus_packet(123_456, 80)), Some(123_456));
        assert_eq!(opus_packet(1, 80).len(), 80);
    }
}
