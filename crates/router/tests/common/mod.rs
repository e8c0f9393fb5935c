//! Packet builders and checks shared by the router's integration tests.

#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use router::{
    Codec, ExtensionMap, Forward, MediaKind, PayloadCodecs, PayloadTypeMap, Router, RouterConfig,
    SubscriberRewrite, SubscriptionId, TrackId,
};
use rtc_rtp::Packet;
use rtc_rtp::header::Header;
use shared::marshal::{Marshal, Unmarshal};
use std::time::{Duration, Instant};

pub const VIDEO_PT: u8 = 96;
pub const AUDIO_PT: u8 = 111;
pub const INTERVAL: Duration = Duration::from_millis(250);

/// Builds a VP8 payload that starts a keyframe: descriptor S=1 PID=0, frame tag P=0
/// and the keyframe start code, padded with `0xee` to `length` bytes.
pub fn vp8_keyframe(length: usize) -> Bytes {
    let mut payload = vec![
        0x10, 0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01,
    ];
    payload.resize(length.max(payload.len()), 0xee);
    Bytes::from(payload)
}

/// Builds a VP8 interframe payload (frame tag P=1) of `length` bytes.
pub fn vp8_delta(length: usize) -> Bytes {
    let mut payload = vec![0x10, 0x31, 0x42, 0x00];
    payload.resize(length.max(payload.len()), 0xdd);
    Bytes::from(payload)
}

pub fn opus(length: usize) -> Bytes {
    Bytes::from(vec![0x78; length.max(1)])
}

pub fn packet(sequence_number: u16, timestamp: u32, payload_type: u8, payload: Bytes) -> Packet {
    Packet {
        header: Header {
            version: 2,
            marker: true,
            payload_type,
            sequence_number,
            timestamp,
            ssrc: 0x0a0b_0c0d,
            ..Header::default()
        },
        payload,
    }
}

pub fn video_codecs() -> PayloadCodecs {
    let mut codecs = PayloadCodecs::new();
    codecs.insert(VIDEO_PT, Codec::Vp8);
    codecs.insert(VIDEO_PT + 1, Codec::Other);
    codecs
}

pub fn audio_codecs() -> PayloadCodecs {
    let mut codecs = PayloadCodecs::new();
    codecs.insert(AUDIO_PT, Codec::Opus);
    codecs
}

/// Builds a rewrite that maps payload type `from` to `to`, with no extensions and no mid.
pub fn rewrite(
    ssrc: u32,
    from: u8,
    to: u8,
    sequence_number: u16,
    timestamp: u32,
) -> SubscriberRewrite {
    let mut payload_types = PayloadTypeMap::new();
    payload_types.insert(from, to);
    SubscriberRewrite {
        ssrc,
        payload_types,
        extensions: ExtensionMap::new(),
        mid: None,
        initial_sequence_number: sequence_number,
        initial_timestamp: timestamp,
    }
}

pub fn router() -> Router {
    Router::new(RouterConfig {
        keyframe_request_interval: INTERVAL,
    })
}

/// Builds a router with one unmuted video track (VP8 on `VIDEO_PT`).
pub fn video_router(track: TrackId) -> Router {
    let mut router = router();
    router
        .add_track(track, MediaKind::Video, video_codecs(), false)
        .expect("new track");
    router
}

/// Builds a router with one unmuted audio track (Opus on `AUDIO_PT`).
pub fn audio_router(track: TrackId) -> Router {
    let mut router = router();
    router
        .add_track(track, MediaKind::Audio, audio_codecs(), false)
        .expect("new track");
    router
}

/// Routes one packet and returns what it produced.
pub fn route(
    router: &mut Router,
    track: TrackId,
    packet: &Packet,
    now: Instant,
) -> (Vec<Forward>, bool) {
    let mut out = Vec::new();
    let outcome = router.route(track, packet, now, &mut out);
    (out, outcome.request_keyframe)
}

/// Returns the sequence numbers forwarded to `subscription`.
pub fn sequence_numbers(forwards: &[Forward], subscription: SubscriptionId) -> Vec<u16> {
    forwards
        .iter()
        .filter(|forward| forward.subscription == subscription)
        .map(|forward| forward.packet.header.sequence_number)
        .collect()
}

/// Marshals a forwarded packet, parses it back and checks that nothing changed.
pub fn assert_marshal_round_trip(packet: &Packet) {
    assert!(
        !packet.header.padding,
        "forwarded packets never carry padding"
    );
    let raw: BytesMut = packet.marshal().expect("forwarded packet marshals");
    let parsed = Packet::unmarshal(&mut raw.freeze()).expect("marshalled packet parses");
    assert_eq!(&parsed, packet);
}
