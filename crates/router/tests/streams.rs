//! Property tests: random packet streams through the router, checked against the rewrite
//! invariants.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use proptest::prelude::*;
use router::{
    Codec, ExtensionMap, MediaKind, PayloadCodecs, PayloadTypeMap, Router, RouterConfig,
    SubscriberRewrite, SubscriptionId,
};
use rtc_rtp::Packet;
use rtc_rtp::header::{EXTENSION_PROFILE_ONE_BYTE, EXTENSION_PROFILE_TWO_BYTE, Extension, Header};
use shared::marshal::Marshal;

const TRACK: u64 = 7;
/// A second payload type on the track (RTX, RED or FEC in practice) that one subscription
/// did not negotiate.
const SECONDARY_PT: u8 = 120;
const SUBSCRIPTIONS: [SubscriptionId; 3] = [1, 2, 3];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PacketKind {
    Keyframe,
    Delta,
    Secondary,
    PaddingOnly,
}

#[derive(Clone, Debug)]
struct SourcePacket {
    kind: PacketKind,
    payload_length: usize,
    /// Media packets with the padding bit: `route_bytes` must strip the padding.
    padding_bit: bool,
    /// Bit i set: publisher extension id i + 1 is present.
    extension_mask: u8,
    two_byte_profile: bool,
}

#[derive(Clone, Debug)]
struct Scenario {
    video: bool,
    first_sequence_number: u16,
    first_timestamp: u32,
    initial_sequence_numbers: [u16; 3],
    initial_timestamps: [u32; 3],
    packets: Vec<SourcePacket>,
    via_bytes: Vec<bool>,
}

/// One packet a subscription received.
#[derive(Clone, Copy, Debug)]
struct Received {
    source: usize,
    sequence_number: u16,
    timestamp: u32,
}

fn near_wrap_u16() -> impl Strategy<Value = u16> {
    prop_oneof![65_000u16..=u16::MAX, 0u16..=200, any::<u16>()]
}

fn near_wrap_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        u32::MAX - 2_000_000..=u32::MAX,
        0u32..=2_000_000,
        any::<u32>()
    ]
}

fn source_packet() -> impl Strategy<Value = SourcePacket> {
    let kind = prop_oneof![
        1 => Just(PacketKind::Keyframe),
        6 => Just(PacketKind::Delta),
        1 => Just(PacketKind::Secondary),
        1 => Just(PacketKind::PaddingOnly),
    ];
    (
        kind,
        12usize..=1400,
        prop::bool::weighted(0.1),
        0u8..8,
        any::<bool>(),
    )
        .prop_map(
            |(kind, payload_length, padding_bit, extension_mask, two_byte_profile)| SourcePacket {
                kind,
                payload_length,
                padding_bit,
                extension_mask,
                two_byte_profile,
            },
        )
}

fn scenario(max_packets: usize) -> impl Strategy<Value = Scenario> {
    (
        any::<bool>(),
        near_wrap_u16(),
        near_wrap_u32(),
        [near_wrap_u16(), near_wrap_u16(), near_wrap_u16()],
        [near_wrap_u32(), near_wrap_u32(), near_wrap_u32()],
        prop::collection::vec(source_packet(), 1..max_packets),
    )
        .prop_flat_map(
            |(
                video,
                sequence_number,
                timestamp,
                initial_sequence_numbers,
                initial_timestamps,
                packets,
            )| {
                let count = packets.len();
                (
                    Just(Scenario {
                        video,
                        first_sequence_number: sequence_number,
                        first_timestamp: timestamp,
                        initial_sequence_numbers,
                        initial_timestamps,
                        packets,
                        via_bytes: Vec::new(),
                    }),
                    prop::collection::vec(any::<bool>(), count),
                )
            },
        )
        .prop_map(|(mut scenario, via_bytes)| {
            scenario.via_bytes = via_bytes;
            scenario
        })
}

/// Random events between deliveries: a duplicate of an earlier packet, a mute toggle.
#[derive(Clone, Debug)]
struct Noise {
    duplicate: Option<prop::sample::Index>,
    toggle_mute: bool,
}

fn noise(mute_toggles: bool) -> impl Strategy<Value = Noise> {
    let duplicate = prop::option::weighted(0.08, any::<prop::sample::Index>());
    let toggle = if mute_toggles {
        prop::bool::weighted(0.03).boxed()
    } else {
        Just(false).boxed()
    };
    (duplicate, toggle).prop_map(|(duplicate, toggle_mute)| Noise {
        duplicate,
        toggle_mute,
    })
}

impl Scenario {
    fn primary_payload_type(&self) -> u8 {
        if self.video { VIDEO_PT } else { AUDIO_PT }
    }

    fn payload_type(&self, index: usize) -> u8 {
        match self.packets.get(index).map(|packet| packet.kind) {
            Some(PacketKind::Secondary) => SECONDARY_PT,
            _ => self.primary_payload_type(),
        }
    }

    fn payload(&self, index: usize) -> Bytes {
        let Some(source) = self.packets.get(index) else {
            return Bytes::new();
        };
        let mut payload = match (source.kind, self.video) {
            (PacketKind::PaddingOnly, _) => return Bytes::new(),
            (PacketKind::Keyframe, true) => vp8_keyframe(11).to_vec(),
            (PacketKind::Delta, true) => vp8_delta(4).to_vec(),
            _ => Vec::new(),
        };
        // A pattern that identifies the packet, so a mixed-up payload shows.
        let mut byte = index as u8;
        while payload.len() < source.payload_length {
            payload.push(byte);
            byte = byte.wrapping_add(1);
        }
        Bytes::from(payload)
    }

    fn packet(&self, index: usize) -> Packet {
        let Some(source) = self.packets.get(index) else {
            return Packet::default();
        };
        let mut header = Header {
            version: 2,
            padding: source.padding_bit || source.kind == PacketKind::PaddingOnly,
            marker: index.is_multiple_of(3),
            payload_type: self.payload_type(index),
            sequence_number: self.first_sequence_number.wrapping_add(index as u16),
            // Three packets per frame, 3000 ticks apart (30 fps at 90 kHz).
            timestamp: self.first_timestamp.wrapping_add((index / 3) as u32 * 3000),
            ssrc: 0x5eed,
            csrc: if index.is_multiple_of(5) {
                vec![11, 22]
            } else {
                Vec::new()
            },
            ..Header::default()
        };
        let values: [&'static [u8]; 3] = [b"\x01", b"\x02\x03", b"0123456789abcdef"];
        for (bit, value) in values.iter().enumerate() {
            if source.extension_mask & (1 << bit) != 0 {
                header.extensions.push(Extension {
                    id: bit as u8 + 1,
                    payload: Bytes::from_static(value),
                });
            }
        }
        if !header.extensions.is_empty() {
            let (profile, element_header) = if source.two_byte_profile {
                (EXTENSION_PROFILE_TWO_BYTE, 2)
            } else {
                (EXTENSION_PROFILE_ONE_BYTE, 1)
            };
            let block: usize = header
                .extensions
                .iter()
                .map(|extension| extension.payload.len() + element_header)
                .sum();
            header.extension = true;
            header.extension_profile = profile;
            header.extensions_padding = (4 - block % 4) % 4;
        }
        Packet {
            header,
            payload: self.payload(index),
        }
    }

    fn rewrites(&self) -> [SubscriberRewrite; 3] {
        let primary = self.primary_payload_type();
        let build = |index: usize,
                     secondary: bool,
                     extensions: &[(u8, u8)],
                     mid: Option<(u8, &'static [u8])>| {
            let mut payload_types = PayloadTypeMap::new();
            payload_types.insert(primary, primary);
            if secondary {
                payload_types.insert(SECONDARY_PT, 121);
            }
            let mut map = ExtensionMap::new();
            for (from, to) in extensions {
                map.insert(*from, *to);
            }
            SubscriberRewrite {
                ssrc: 0x1000 + index as u32,
                payload_types,
                extensions: map,
                mid: mid.map(|(id, value)| (id, Bytes::from_static(value))),
                initial_sequence_number: self.initial_sequence_numbers[index],
                initial_timestamp: self.initial_timestamps[index],
            }
        };
        [
            build(0, true, &[(1, 1), (2, 20), (3, 3)], Some((4, b"video-0"))),
            build(1, false, &[(1, 3), (3, 2)], None),
            build(2, true, &[], Some((5, b"m"))),
        ]
    }

    /// Returns whether the router drops this packet for `subscription` on purpose.
    fn router_drops(&self, index: usize, subscription: usize) -> bool {
        match self.packets.get(index).map(|packet| packet.kind) {
            Some(PacketKind::PaddingOnly) => true,
            // The second subscription did not negotiate the secondary payload type.
            Some(PacketKind::Secondary) => subscription == 1,
            _ => false,
        }
    }
}

struct Harness {
    router: Router,
    muted: bool,
    received: HashMap<SubscriptionId, Vec<Received>>,
    start: Instant,
    arrivals: u32,
}

impl Harness {
    fn new(scenario: &Scenario) -> Self {
        let mut router = Router::new(RouterConfig::default());
        let mut codecs = PayloadCodecs::new();
        codecs.insert(VIDEO_PT, Codec::Vp8);
        codecs.insert(AUDIO_PT, Codec::Opus);
        codecs.insert(SECONDARY_PT, Codec::Other);
        let kind = if scenario.video {
            MediaKind::Video
        } else {
            MediaKind::Audio
        };
        router
            .add_track(TRACK, kind, codecs, false)
            .expect("add track");
        let start = Instant::now();
        for (subscription, rewrite) in SUBSCRIPTIONS.iter().zip(scenario.rewrites()) {
            router
                .subscribe(TRACK, *subscription, rewrite, start)
                .expect("subscribe");
        }
        Self {
            router,
            muted: false,
            received: HashMap::new(),
            start,
            arrivals: 0,
        }
    }

    fn now(&self) -> Instant {
        self.start + Duration::from_millis(u64::from(self.arrivals) * 10)
    }

    fn set_muted(&mut self, muted: bool) {
        let now = self.now();
        self.router.set_muted(TRACK, muted, now).expect("set muted");
        self.muted = muted;
    }

    fn deliver(&mut self, scenario: &Scenario, index: usize) -> Result<(), TestCaseError> {
        self.arrivals += 1;
        let now = self.now();
        let source = scenario.packet(index);
        let mut out = Vec::new();
        if scenario.via_bytes.get(index).copied().unwrap_or(false) {
            let datagram = source.marshal().expect("source packet marshals");
            prop_assert!(datagram.len() <= 1500);
            self.router.route_bytes(TRACK, &datagram, now, &mut out);
        } else {
            self.router.route(TRACK, &source, now, &mut out);
        }
        if self.muted {
            prop_assert!(out.is_empty(), "forwarded while muted");
        }
        for forward in out {
            let packet = &forward.packet;
            prop_assert_eq!(&packet.payload, &source.payload, "payload changed");
            prop_assert!(!packet.header.padding);
            prop_assert_eq!(packet.header.marker, source.header.marker);
            prop_assert_eq!(&packet.header.csrc, &source.header.csrc);
            let raw = packet.marshal().expect("forwarded packet marshals");
            let parsed = <Packet as shared::marshal::Unmarshal>::unmarshal(&mut raw.freeze())
                .expect("forwarded packet parses");
            prop_assert_eq!(&parsed, packet, "marshal round trip changed the packet");
            self.received
                .entry(forward.subscription)
                .or_default()
                .push(Received {
                    source: index,
                    sequence_number: packet.header.sequence_number,
                    timestamp: packet.header.timestamp,
                });
        }
        Ok(())
    }
}

/// Checks what holds for every stream: the first packet carries the initial numbers, output
/// sequence numbers never repeat and keep the input order with no gap wider than the input
/// one, and timestamps keep a constant offset.
fn check_common(scenario: &Scenario, harness: &Harness) -> Result<(), TestCaseError> {
    for (position, subscription) in SUBSCRIPTIONS.iter().enumerate() {
        let Some(received) = harness.received.get(subscription) else {
            continue;
        };
        let Some(first) = received.first() else {
            continue;
        };
        let initial_sequence_number = scenario.initial_sequence_numbers[position];
        prop_assert_eq!(first.sequence_number, initial_sequence_number);
        prop_assert_eq!(first.timestamp, scenario.initial_timestamps[position]);

        let mut seen = HashSet::new();
        for packet in received {
            prop_assert!(
                seen.insert(packet.sequence_number),
                "sequence number {} repeated",
                packet.sequence_number
            );
            let source = scenario.packet(packet.source);
            prop_assert_eq!(
                packet.timestamp.wrapping_sub(source.header.timestamp),
                first
                    .timestamp
                    .wrapping_sub(scenario.packet(first.source).header.timestamp),
                "timestamp offset changed"
            );
        }

        let mut by_source: Vec<(usize, u16)> = received
            .iter()
            .map(|packet| {
                (
                    packet.source,
                    packet.sequence_number.wrapping_sub(initial_sequence_number),
                )
            })
            .collect();
        by_source.sort_unstable();
        for pair in by_source.windows(2) {
            let [(source_a, output_a), (source_b, output_b)] = [pair[0], pair[1]];
            prop_assert!(output_b > output_a, "order changed: {:?}", pair);
            prop_assert!(
                usize::from(output_b - output_a) <= source_b - source_a,
                "gap grew: {:?}",
                pair
            );
        }
    }
    Ok(())
}

/// Delivers the packets in order, with duplicates and mute toggles between them.
fn run_in_order(
    scenario: &Scenario,
    noise: &[Noise],
    lost: &[bool],
) -> Result<Harness, TestCaseError> {
    let mut harness = Harness::new(scenario);
    for index in 0..scenario.packets.len() {
        if !lost.get(index).copied().unwrap_or(false) {
            harness.deliver(scenario, index)?;
        }
        let Some(noise) = noise.get(index) else {
            continue;
        };
        if let Some(duplicate) = &noise.duplicate {
            // Only packets that arrived can be duplicated, or this would be a late arrival.
            let duplicate = duplicate.index(index + 1);
            if !lost.get(duplicate).copied().unwrap_or(false) {
                harness.deliver(scenario, duplicate)?;
            }
        }
        if noise.toggle_mute {
            let muted = !harness.muted;
            harness.set_muted(muted);
        }
    }
    Ok(harness)
}

fn scenario_with_noise(
    mute_toggles: bool,
) -> impl Strategy<Value = (Scenario, Vec<Noise>, Vec<bool>)> {
    scenario(600).prop_flat_map(move |scenario| {
        let count = scenario.packets.len();
        (
            Just(scenario),
            prop::collection::vec(noise(mute_toggles), count),
            prop::collection::vec(prop::bool::weighted(0.05), count),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Without upstream loss or reordering, every subscription receives strictly
    /// consecutive sequence numbers, whatever the router dropped in between.
    #[test]
    fn in_order_stream_is_consecutive((scenario, noise, _) in scenario_with_noise(true)) {
        let harness = run_in_order(&scenario, &noise, &[])?;
        check_common(&scenario, &harness)?;
        for (position, subscription) in SUBSCRIPTIONS.iter().enumerate() {
            let initial = scenario.initial_sequence_numbers[position];
            for (count, packet) in harness.received.get(subscription).into_iter().flatten().enumerate() {
                prop_assert_eq!(packet.sequence_number, initial.wrapping_add(count as u16));
            }
        }
    }

    /// With upstream loss and no mute, each gap in the output equals the input gap less the
    /// packets the router dropped on purpose.
    #[test]
    fn upstream_loss_keeps_gap_size((scenario, noise, lost) in scenario_with_noise(false)) {
        let harness = run_in_order(&scenario, &noise, &lost)?;
        check_common(&scenario, &harness)?;
        for (position, subscription) in SUBSCRIPTIONS.iter().enumerate() {
            let received = harness.received.get(subscription).cloned().unwrap_or_default();
            for pair in received.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                let dropped = (a.source + 1..b.source)
                    .filter(|index| !lost[*index] && scenario.router_drops(*index, position))
                    .count();
                let expected = (b.source - a.source - dropped) as u16;
                prop_assert_eq!(b.sequence_number.wrapping_sub(a.sequence_number), expected);
            }
        }
    }

    /// Reordering within a window, loss, duplicates and mute toggles together keep the
    /// common invariants.
    #[test]
    fn reordered_stream_keeps_invariants(
        (scenario, noise, lost) in scenario_with_noise(true),
        jitter in prop::collection::vec(0usize..24, 600),
    ) {
        let mut order: Vec<usize> = (0..scenario.packets.len()).collect();
        order.sort_by_key(|index| index + jitter.get(*index).copied().unwrap_or(0));
        let mut harness = Harness::new(&scenario);
        for (step, index) in order.iter().enumerate() {
            if !lost[*index] {
                harness.deliver(&scenario, *index)?;
            }
            if let Some(duplicate) = &noise[step].duplicate {
                harness.deliver(&scenario, order[duplicate.index(step + 1)])?;
            }
            if noise[step].toggle_mute {
                let muted = !harness.muted;
                harness.set_muted(muted);
            }
        }
        check_common(&scenario, &harness)?;
    }

    /// Any bytes at all: never a panic, and anything forwarded marshals cleanly.
    #[test]
    fn route_bytes_never_panics(datagram in prop::collection::vec(any::<u8>(), 0..1500)) {
        route_arbitrary(&datagram)?;
    }

    /// Bytes that start like RTP version 2, to get past the first check more often.
    #[test]
    fn route_bytes_never_panics_on_rtp_like(
        first in 0x80u8..=0xbf,
        second in any::<u8>(),
        rest in prop::collection::vec(any::<u8>(), 0..1500),
    ) {
        let datagram = [&[first, second & 0x7f], rest.as_slice()].concat();
        route_arbitrary(&datagram)?;
    }
}

fn route_arbitrary(datagram: &[u8]) -> Result<(), TestCaseError> {
    let now = Instant::now();
    let mut router = audio_router(TRACK);
    let mut rewrite = rewrite(1, 0, 0, 0, 0);
    for payload_type in 0..=127 {
        rewrite.payload_types.insert(payload_type, payload_type);
    }
    for id in 1..=255 {
        rewrite.extensions.insert(id, id);
    }
    rewrite.mid = Some((3, Bytes::from_static(b"mid")));
    router.subscribe(TRACK, 1, rewrite, now).expect("subscribe");
    let mut out = Vec::new();
    router.route_bytes(TRACK, datagram, now, &mut out);
    router.route_bytes(99, datagram, now, &mut out);
    for forward in &out {
        assert_marshal_round_trip(&forward.packet);
    }
    prop_assert!(out.len() <= 1);
    Ok(())
}
