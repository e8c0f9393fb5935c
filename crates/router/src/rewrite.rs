//! Per-subscriber RTP header rewriting.
//!
//! Publisher and subscriber legs negotiate their SSRCs, payload types and header extension
//! ids independently, so every forwarded header is rebuilt in the subscriber's terms. The
//! payload is never touched.

use std::fmt;

use bytes::Bytes;
use rtc_rtp::header::{
    CSRC_LENGTH, EXTENSION_PROFILE_ONE_BYTE, EXTENSION_PROFILE_TWO_BYTE, Extension, Header,
};

use crate::codec::PAYLOAD_TYPE_COUNT;

/// The RTP version every forwarded packet carries.
const RTP_VERSION: u8 = 2;
/// Fixed RTP header size, before CSRCs and extensions.
const FIXED_HEADER_LENGTH: usize = 12;
/// The extension profile and length fields that start an extension block.
const EXTENSION_BLOCK_HEADER_LENGTH: usize = 4;
/// Maximum extension block payload length that marshals correctly. The length field counts
/// 32-bit words, but rtc-rtp 0.21.1 casts the byte length to `u16` before dividing by 4.
const MAX_EXTENSION_BLOCK_LENGTH: usize = u16::MAX as usize;
/// The largest extension value a two-byte header (RFC 8285 section 4.3) can carry.
const MAX_TWO_BYTE_VALUE_LENGTH: usize = u8::MAX as usize;
/// The largest id and value length a one-byte header (RFC 8285 section 4.2) can carry.
const MAX_ONE_BYTE_ID: u8 = 14;
const MAX_ONE_BYTE_VALUE_LENGTH: usize = 16;

/// Publisher payload type to subscriber payload type table for one subscription.
#[derive(Clone)]
pub struct PayloadTypeMap {
    payload_types: [Option<u8>; PAYLOAD_TYPE_COUNT],
}

impl PayloadTypeMap {
    pub fn new() -> Self {
        Self {
            payload_types: [None; PAYLOAD_TYPE_COUNT],
        }
    }

    /// Maps publisher payload type `from` to subscriber payload type `to`.
    ///
    /// The entry is ignored if either value is above 127, the largest RTP payload type, so
    /// packets with that payload type are dropped as unknown.
    pub fn insert(&mut self, from: u8, to: u8) {
        if usize::from(to) >= PAYLOAD_TYPE_COUNT {
            return;
        }
        if let Some(slot) = self.payload_types.get_mut(usize::from(from)) {
            *slot = Some(to);
        }
    }

    pub fn get(&self, from: u8) -> Option<u8> {
        self.payload_types.get(usize::from(from)).copied().flatten()
    }
}

impl Default for PayloadTypeMap {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PayloadTypeMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = self
            .payload_types
            .iter()
            .enumerate()
            .filter_map(|(from, to)| to.map(|to| (from, to)));
        f.debug_map().entries(entries).finish()
    }
}

/// Publisher header extension id to subscriber header extension id table for one
/// subscription.
#[derive(Clone)]
pub struct ExtensionMap {
    /// Subscriber ids indexed by publisher id. A 0 marks a missing entry, because 0 is never
    /// a valid id.
    ids: [u8; 256],
}

impl ExtensionMap {
    pub fn new() -> Self {
        Self { ids: [0; 256] }
    }

    /// Maps publisher extension id `from_id` to subscriber extension id `to_id`.
    ///
    /// The entry is ignored if either id is 0, which RFC 8285 does not assign, so that
    /// extension is removed from forwarded packets.
    pub fn insert(&mut self, from_id: u8, to_id: u8) {
        if from_id == 0 || to_id == 0 {
            return;
        }
        if let Some(slot) = self.ids.get_mut(usize::from(from_id)) {
            *slot = to_id;
        }
    }

    pub fn get(&self, from_id: u8) -> Option<u8> {
        match self.ids.get(usize::from(from_id)) {
            Some(&0) | None => None,
            Some(&to_id) => Some(to_id),
        }
    }
}

impl Default for ExtensionMap {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ExtensionMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = self
            .ids
            .iter()
            .enumerate()
            .filter(|(_, to_id)| **to_id != 0);
        f.debug_map().entries(entries).finish()
    }
}

/// Rewrite rules of one subscription, in the terms the subscriber's leg negotiated.
#[derive(Clone, Debug)]
pub struct SubscriberRewrite {
    /// SSRC the subscriber's leg announced for this track.
    pub ssrc: u32,
    /// Packets whose payload type has no entry are dropped for this subscriber.
    pub payload_types: PayloadTypeMap,
    /// Publisher extensions without an entry are removed.
    pub extensions: ExtensionMap,
    /// The `sdes:mid` extension id and value on the subscriber's leg, set on every forwarded
    /// packet. The value must be 1 to 255 bytes long.
    pub mid: Option<(u8, Bytes)>,
    /// The sequence number of the first packet this subscriber receives.
    pub initial_sequence_number: u16,
    /// The RTP timestamp of the first packet this subscriber receives.
    pub initial_timestamp: u32,
}

/// Returns whether a mid value can be encoded in a header extension.
pub(crate) fn is_valid_mid(id: u8, value: &Bytes) -> bool {
    id != 0 && (1..=MAX_TWO_BYTE_VALUE_LENGTH).contains(&value.len())
}

/// Returns whether every rewrite of `source` has an extension block whose length fits the
/// 16-bit length field.
///
/// A rewrite at worst widens each extension to a two-byte header and adds the mid, so the
/// bound is checked on that worst case.
pub(crate) fn extension_block_fits(source: &Header) -> bool {
    let mut worst_case = 2 + MAX_TWO_BYTE_VALUE_LENGTH + 3;
    for extension in &source.extensions {
        worst_case = worst_case.saturating_add(extension.payload.len().saturating_add(2));
    }
    worst_case <= MAX_EXTENSION_BLOCK_LENGTH
}

/// Builds the header `rewrite` gives to a packet with header `source`.
///
/// Returns the header and its marshalled size. The extension list is rebuilt rather than
/// edited in place so that the profile, padding and flag always agree: the one-byte profile
/// is kept when every id and value fits it, otherwise the two-byte profile is used.
/// Extensions too long for a two-byte header are removed. `source` must pass
/// [`extension_block_fits`].
pub(crate) fn rewrite_header(
    source: &Header,
    rewrite: &SubscriberRewrite,
    payload_type: u8,
    sequence_number: u16,
    timestamp: u32,
) -> (Header, usize) {
    let mid_id = rewrite.mid.as_ref().map(|(id, _)| *id);
    let mut extensions = Vec::new();
    if source.extension {
        for extension in &source.extensions {
            let Some(id) = rewrite.extensions.get(extension.id) else {
                continue;
            };
            // The subscriber's mid replaces whatever the publisher sent under that id.
            if Some(id) == mid_id || extension.payload.len() > MAX_TWO_BYTE_VALUE_LENGTH {
                continue;
            }
            if extensions.capacity() == 0 {
                extensions.reserve_exact(source.extensions.len() + 1);
            }
            extensions.push(Extension {
                id,
                payload: extension.payload.clone(),
            });
        }
    }
    if let Some((id, value)) = &rewrite.mid {
        extensions.push(Extension {
            id: *id,
            payload: value.clone(),
        });
    }

    let mut header = Header {
        version: RTP_VERSION,
        padding: false,
        extension: false,
        marker: source.marker,
        payload_type,
        sequence_number,
        timestamp,
        ssrc: rewrite.ssrc,
        csrc: source.csrc.clone(),
        extension_profile: 0,
        extensions: Vec::new(),
        extensions_padding: 0,
    };
    let mut size = FIXED_HEADER_LENGTH + header.csrc.len() * CSRC_LENGTH;

    if !extensions.is_empty() {
        let one_byte = extensions.iter().all(|extension| {
            (1..=MAX_ONE_BYTE_ID).contains(&extension.id)
                && (1..=MAX_ONE_BYTE_VALUE_LENGTH).contains(&extension.payload.len())
        });
        let (profile, element_header_length) = if one_byte {
            (EXTENSION_PROFILE_ONE_BYTE, 1)
        } else {
            (EXTENSION_PROFILE_TWO_BYTE, 2)
        };
        let block_length: usize = extensions
            .iter()
            .map(|extension| extension.payload.len() + element_header_length)
            .sum();
        // Unmarshalling counts the zero bytes that pad the block to 32 bits, so setting the
        // same count here lets a forwarded header compare equal to its parsed copy.
        let padding = (4 - block_length % 4) % 4;
        header.extension = true;
        header.extension_profile = profile;
        header.extensions = extensions;
        header.extensions_padding = padding;
        size += EXTENSION_BLOCK_HEADER_LENGTH + block_length + padding;
    }
    (header, size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use rtc_rtp::Packet;
    use shared::marshal::{Marshal, MarshalSize, Unmarshal};

    fn rewrite_with(extensions: ExtensionMap, mid: Option<(u8, Bytes)>) -> SubscriberRewrite {
        let mut payload_types = PayloadTypeMap::new();
        payload_types.insert(96, 100);
        SubscriberRewrite {
            ssrc: 0x1234_5678,
            payload_types,
            extensions,
            mid,
            initial_sequence_number: 0,
            initial_timestamp: 0,
        }
    }

    fn source_header(profile: u16, extensions: &[(u8, &'static [u8])]) -> Header {
        let mut header = Header {
            version: 2,
            padding: true,
            marker: true,
            payload_type: 96,
            sequence_number: 7,
            timestamp: 9,
            ssrc: 0xdead_beef,
            csrc: vec![1, 2, 3],
            ..Header::default()
        };
        if !extensions.is_empty() {
            header.extension = true;
            header.extension_profile = profile;
            for (id, value) in extensions {
                header.extensions.push(Extension {
                    id: *id,
                    payload: Bytes::from_static(value),
                });
            }
        }
        header
    }

    /// Marshals the rewritten header with a payload, parses it back and checks both agree.
    fn assert_round_trip(header: &Header, size: usize) {
        assert_eq!(header.marshal_size(), size);
        let packet = Packet {
            header: header.clone(),
            payload: Bytes::from_static(&[1, 2, 3, 4, 5]),
        };
        let raw: BytesMut = packet.marshal().expect("rewritten header marshals");
        assert_eq!(raw.len(), size + 5);
        let parsed = Packet::unmarshal(&mut raw.freeze()).expect("marshalled packet parses");
        assert_eq!(&parsed.header, header);
        assert_eq!(parsed.payload.as_ref(), &[1, 2, 3, 4, 5]);
    }

    fn extension_ids(header: &Header) -> Vec<u8> {
        header.get_extension_ids()
    }

    #[test]
    fn payload_type_map_entries() {
        let mut map = PayloadTypeMap::new();
        map.insert(96, 100);
        map.insert(111, 109);
        assert_eq!(map.get(96), Some(100));
        assert_eq!(map.get(111), Some(109));
        assert_eq!(map.get(97), None);
        assert_eq!(format!("{map:?}"), "{96: 100, 111: 109}");
    }

    #[test]
    fn payload_type_map_ignores_out_of_range() {
        let mut map = PayloadTypeMap::default();
        map.insert(96, 128);
        map.insert(200, 96);
        assert_eq!(map.get(96), None);
        assert_eq!(map.get(200), None);
    }

    #[test]
    fn extension_map_entries() {
        let mut map = ExtensionMap::new();
        map.insert(1, 3);
        map.insert(255, 14);
        map.insert(0, 5);
        map.insert(6, 0);
        assert_eq!(map.get(1), Some(3));
        assert_eq!(map.get(255), Some(14));
        assert_eq!(map.get(0), None);
        assert_eq!(map.get(6), None);
        assert_eq!(format!("{map:?}"), "{1: 3, 255: 14}");
    }

    #[test]
    fn rewrite_sets_subscriber_fields() {
        let source = source_header(0, &[]);
        let rewrite = rewrite_with(ExtensionMap::new(), None);
        let (header, size) = rewrite_header(&source, &rewrite, 100, 500, 600);
        assert_eq!(header.version, 2);
        assert!(!header.padding);
        assert!(header.marker);
        assert_eq!(header.payload_type, 100);
        assert_eq!(header.sequence_number, 500);
        assert_eq!(header.timestamp, 600);
        assert_eq!(header.ssrc, 0x1234_5678);
        assert_eq!(header.csrc, vec![1, 2, 3]);
        assert!(!header.extension);
        assert_eq!(size, 12 + 3 * 4);
        assert_round_trip(&header, size);
    }

    #[test]
    fn rewrite_maps_and_removes_extensions() {
        let source = source_header(
            EXTENSION_PROFILE_ONE_BYTE,
            &[(1, &[0xaa]), (2, &[0xbb, 0xcc]), (3, &[0xdd, 0xee, 0xff])],
        );
        let mut map = ExtensionMap::new();
        map.insert(1, 4);
        map.insert(3, 2);
        let (header, size) = rewrite_header(&source, &rewrite_with(map, None), 100, 1, 1);
        assert_eq!(extension_ids(&header), vec![4, 2]);
        assert_eq!(header.get_extension(4), Some(Bytes::from_static(&[0xaa])));
        assert_eq!(
            header.get_extension(2),
            Some(Bytes::from_static(&[0xdd, 0xee, 0xff]))
        );
        assert_eq!(header.extension_profile, EXTENSION_PROFILE_ONE_BYTE);
        assert_round_trip(&header, size);
    }

    #[test]
    fn rewrite_removes_all_extensions() {
        let source = source_header(EXTENSION_PROFILE_ONE_BYTE, &[(1, &[0xaa])]);
        let (header, size) =
            rewrite_header(&source, &rewrite_with(ExtensionMap::new(), None), 100, 1, 1);
        assert!(!header.extension);
        assert!(header.extensions.is_empty());
        assert_eq!(header.extension_profile, 0);
        assert_round_trip(&header, size);
    }

    #[test]
    fn rewrite_sets_mid() {
        let source = source_header(EXTENSION_PROFILE_ONE_BYTE, &[(1, &[0xaa]), (9, b"pub")]);
        let mut map = ExtensionMap::new();
        map.insert(1, 1);
        // The publisher's own mid maps onto the subscriber's mid id and must not survive.
        map.insert(9, 3);
        let rewrite = rewrite_with(map, Some((3, Bytes::from_static(b"video0"))));
        let (header, size) = rewrite_header(&source, &rewrite, 100, 1, 1);
        assert_eq!(extension_ids(&header), vec![1, 3]);
        assert_eq!(header.get_extension(3), Some(Bytes::from_static(b"video0")));
        assert_round_trip(&header, size);
    }

    #[test]
    fn rewrite_adds_mid_without_source_extensions() {
        let source = source_header(0, &[]);
        let rewrite = rewrite_with(ExtensionMap::new(), Some((5, Bytes::from_static(b"1"))));
        let (header, size) = rewrite_header(&source, &rewrite, 100, 1, 1);
        assert!(header.extension);
        assert_eq!(header.extension_profile, EXTENSION_PROFILE_ONE_BYTE);
        assert_eq!(extension_ids(&header), vec![5]);
        assert_round_trip(&header, size);
    }

    #[test]
    fn rewrite_widens_to_two_byte_for_large_id() {
        let source = source_header(EXTENSION_PROFILE_ONE_BYTE, &[(1, &[0xaa]), (2, &[0xbb])]);
        let mut map = ExtensionMap::new();
        map.insert(1, 20);
        map.insert(2, 2);
        let (header, size) = rewrite_header(&source, &rewrite_with(map, None), 100, 1, 1);
        assert_eq!(header.extension_profile, EXTENSION_PROFILE_TWO_BYTE);
        assert_eq!(extension_ids(&header), vec![20, 2]);
        assert_round_trip(&header, size);
    }

    #[test]
    fn rewrite_widens_to_two_byte_for_long_mid() {
        let source = source_header(EXTENSION_PROFILE_ONE_BYTE, &[(1, &[0xaa])]);
        let mut map = ExtensionMap::new();
        map.insert(1, 1);
        let mid = Bytes::from_static(b"a-mid-longer-than-sixteen-bytes");
        let (header, size) = rewrite_header(&source, &rewrite_with(map, Some((4, mid))), 100, 1, 1);
        assert_eq!(header.extension_profile, EXTENSION_PROFILE_TWO_BYTE);
        assert_round_trip(&header, size);
    }

    #[test]
    fn rewrite_keeps_two_byte_values() {
        let source = source_header(
            EXTENSION_PROFILE_TWO_BYTE,
            &[(1, &[]), (2, &[0x01; 40]), (200, &[0x02, 0x03])],
        );
        let mut map = ExtensionMap::new();
        map.insert(1, 1);
        map.insert(2, 2);
        map.insert(200, 201);
        let (header, size) = rewrite_header(&source, &rewrite_with(map, None), 100, 1, 1);
        assert_eq!(header.extension_profile, EXTENSION_PROFILE_TWO_BYTE);
        assert_eq!(extension_ids(&header), vec![1, 2, 201]);
        assert_eq!(header.get_extension(1), Some(Bytes::new()));
        assert_round_trip(&header, size);
    }

    #[test]
    fn rewrite_narrows_two_byte_to_one_byte() {
        let source = source_header(EXTENSION_PROFILE_TWO_BYTE, &[(30, &[0x01, 0x02])]);
        let mut map = ExtensionMap::new();
        map.insert(30, 3);
        let (header, size) = rewrite_header(&source, &rewrite_with(map, None), 100, 1, 1);
        assert_eq!(header.extension_profile, EXTENSION_PROFILE_ONE_BYTE);
        assert_round_trip(&header, size);
    }

    #[test]
    fn rewrite_removes_rfc3550_extension() {
        // A non-RFC 8285 profile parses as a single extension with id 0, which never maps.
        let source = source_header(0x1234, &[(0, &[1, 2, 3, 4])]);
        let mut map = ExtensionMap::new();
        map.insert(1, 1);
        let (header, size) = rewrite_header(&source, &rewrite_with(map, None), 100, 1, 1);
        assert!(!header.extension);
        assert_round_trip(&header, size);
    }

    #[test]
    fn rewrite_drops_oversized_values() {
        static LONG: [u8; 300] = [7; 300];
        let source = source_header(EXTENSION_PROFILE_TWO_BYTE, &[(1, &LONG), (2, &[1])]);
        let mut map = ExtensionMap::new();
        map.insert(1, 1);
        map.insert(2, 2);
        let (header, size) = rewrite_header(&source, &rewrite_with(map, None), 100, 1, 1);
        assert_eq!(extension_ids(&header), vec![2]);
        assert_round_trip(&header, size);
    }

    #[test]
    fn mid_validity() {
        assert!(is_valid_mid(1, &Bytes::from_static(b"0")));
        assert!(is_valid_mid(255, &Bytes::from(vec![b'a'; 255])));
        assert!(!is_valid_mid(0, &Bytes::from_static(b"0")));
        assert!(!is_valid_mid(1, &Bytes::new()));
        assert!(!is_valid_mid(1, &Bytes::from(vec![b'a'; 256])));
    }

    #[test]
    fn extension_block_limit() {
        let small = source_header(EXTENSION_PROFILE_ONE_BYTE, &[(1, &[1])]);
        assert!(extension_block_fits(&small));
        let mut huge = source_header(EXTENSION_PROFILE_TWO_BYTE, &[]);
        huge.extension = true;
        for id in 1..=255u8 {
            huge.extensions.push(Extension {
                id,
                payload: Bytes::from(vec![0u8; 1100]),
            });
        }
        assert!(!extension_block_fits(&huge));
    }
}
