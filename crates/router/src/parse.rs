//! Checks and parsing of packets before they are routed.

use bytes::Bytes;
use rtc_rtp::Packet;
use rtc_rtp::header::{CC_MASK, EXTENSION_SHIFT, Header, VERSION_SHIFT};
use shared::marshal::{MarshalSize, Unmarshal};

use crate::rewrite::extension_block_fits;

/// RTP version 2, the only one in use (RFC 3550 section 5.1).
const RTP_VERSION: u8 = 2;
/// The CSRC count field is 4 bits wide.
const MAX_CSRC_COUNT: usize = 15;
const MAX_PAYLOAD_TYPE: u8 = 127;

/// Returns whether the router can rebuild and marshal this header.
pub(crate) fn is_well_formed(header: &Header) -> bool {
    header.version == RTP_VERSION
        && header.payload_type <= MAX_PAYLOAD_TYPE
        && header.csrc.len() <= MAX_CSRC_COUNT
        && extension_block_fits(header)
}

/// Returns the RTP header and payload size of a packet, without padding.
pub(crate) fn received_size(packet: &Packet) -> u64 {
    (packet.header.marshal_size() + packet.payload.len()) as u64
}

/// Parses a datagram as an RTP packet, stripping padding from the payload.
///
/// Returns `None` for anything but a well-formed RTP version 2 packet. The datagram is
/// copied once, and the payload and extension values are slices of that copy.
pub(crate) fn parse_datagram(datagram: &[u8]) -> Option<Packet> {
    let first = *datagram.first()?;
    if first >> VERSION_SHIFT != RTP_VERSION {
        return None;
    }
    let header_length = header_length(datagram)?;
    let buffer = Bytes::copy_from_slice(datagram);
    let mut cursor = buffer.clone();
    let header = Header::unmarshal(&mut cursor).ok()?;
    // rtc-rtp 0.21.1 stops reading one-byte extensions at id 15 (as RFC 8285 section 4.2
    // specifies) without skipping the rest of the block, and lets an element run past the
    // block. Taking the payload offset from the length fields handles the first case, and
    // the second is malformed.
    let consumed = buffer.len().saturating_sub(cursor.len());
    if consumed > header_length || header_length > buffer.len() {
        return None;
    }
    let mut payload = buffer.slice(header_length..);
    if header.padding {
        // The last padding byte counts the padding, itself included (RFC 3550 section 5.1).
        let padding_length = usize::from(*payload.last()?);
        if padding_length == 0 {
            return None;
        }
        let length = payload.len().checked_sub(padding_length)?;
        payload.truncate(length);
    }
    Some(Packet { header, payload })
}

/// Returns the header length the CSRC count and extension length fields announce.
fn header_length(datagram: &[u8]) -> Option<usize> {
    let first = *datagram.first()?;
    let mut length = 12 + 4 * usize::from(first & CC_MASK);
    if first & (1 << EXTENSION_SHIFT) != 0 {
        let words = datagram.get(length + 2..length + 4)?;
        let words = u16::from_be_bytes(words.try_into().ok()?);
        length += 4 + 4 * usize::from(words);
    }
    Some(length)
}
