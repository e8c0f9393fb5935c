use std::fmt;

/// The media kind of a track, as in the SDP media section (`m=audio` or `m=video`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
}

/// The codec carried by an RTP payload type.
///
/// The router needs the codec only to find keyframes in video payloads. A video track whose
/// payloads are all `Other` never passes keyframe gating, so its subscribers receive nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Opus,
    Vp8,
    Vp9,
    H264,
    Av1,
    /// Any other codec, and payload types such as RTX, RED or FEC that carry no keyframe.
    Other,
}

/// The number of RTP payload types: the header field is 7 bits wide.
pub(crate) const PAYLOAD_TYPE_COUNT: usize = 128;

/// Payload type to codec table of a publisher track, as negotiated on the publisher's leg.
#[derive(Clone)]
pub struct PayloadCodecs {
    codecs: [Option<Codec>; PAYLOAD_TYPE_COUNT],
}

impl PayloadCodecs {
    pub fn new() -> Self {
        Self {
            codecs: [None; PAYLOAD_TYPE_COUNT],
        }
    }

    /// Maps `payload_type` to `codec`, replacing an earlier entry.
    ///
    /// A payload type above 127 is ignored, because no RTP packet can carry it.
    pub fn insert(&mut self, payload_type: u8, codec: Codec) {
        if let Some(slot) = self.codecs.get_mut(usize::from(payload_type)) {
            *slot = Some(codec);
        }
    }

    pub fn get(&self, payload_type: u8) -> Option<Codec> {
        self.codecs
            .get(usize::from(payload_type))
            .copied()
            .flatten()
    }
}

impl Default for PayloadCodecs {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PayloadCodecs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = self
            .codecs
            .iter()
            .enumerate()
            .filter_map(|(payload_type, codec)| codec.map(|codec| (payload_type, codec)));
        f.debug_map().entries(entries).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_codecs_insert_and_get() {
        let mut codecs = PayloadCodecs::new();
        codecs.insert(96, Codec::Vp8);
        codecs.insert(127, Codec::H264);
        assert_eq!(codecs.get(96), Some(Codec::Vp8));
        assert_eq!(codecs.get(127), Some(Codec::H264));
        assert_eq!(codecs.get(97), None);
    }

    #[test]
    fn payload_codecs_ignore_out_of_range() {
        let mut codecs = PayloadCodecs::new();
        codecs.insert(128, Codec::Vp8);
        codecs.insert(255, Codec::Vp8);
        assert_eq!(codecs.get(128), None);
        assert_eq!(codecs.get(255), None);
        assert_eq!(format!("{codecs:?}"), "{}");
    }

    #[test]
    fn payload_codecs_replace_entry() {
        let mut codecs = PayloadCodecs::default();
        codecs.insert(100, Codec::Vp8);
        codecs.insert(100, Codec::Vp9);
        assert_eq!(codecs.get(100), Some(Codec::Vp9));
        assert_eq!(format!("{codecs:?}"), "{100: Vp9}");
    }
}
