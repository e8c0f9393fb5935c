//! Cost of the router's hot path: one 1200-byte video packet fanned out to 1, 10 and 100
//! subscriptions, and dropped on a muted track with 100 subscriptions.
//!
//! Each iteration routes one packet with the next sequence number and then drops the
//! forwards, as the transport does after sending them, so allocation and release of the
//! rewritten headers are included.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use router::{
    Codec, ExtensionMap, Forward, MediaKind, PayloadCodecs, PayloadTypeMap, Router, RouterConfig,
    SubscriberRewrite, TrackId,
};
use rtc_rtp::Packet;
use rtc_rtp::header::Header;
use shared::marshal::MarshalSize;

const TRACK: TrackId = 1;
const VP8_PAYLOAD_TYPE: u8 = 96;
const DATAGRAM_SIZE: usize = 1200;
const FANOUTS: [u64; 3] = [1, 10, 100];
const MUTED_SUBSCRIPTIONS: u64 = 100;

/// Builds a VP8 packet as a browser sends it, with abs-send-time (id 1), transport-wide
/// sequence number (id 3) and mid (id 4), padded out to `DATAGRAM_SIZE` bytes on the wire.
fn video_packet(keyframe: bool) -> Packet {
    let mut header = Header {
        version: 2,
        marker: false,
        payload_type: VP8_PAYLOAD_TYPE,
        sequence_number: 1,
        timestamp: 90_000,
        ssrc: 0x1234_5678,
        ..Header::default()
    };
    for (id, value) in [(1u8, &b"\x12\x34\x56"[..]), (3, b"\x00\x07"), (4, b"0")] {
        header
            .set_extension(id, Bytes::copy_from_slice(value))
            .expect("one-byte extension");
    }
    let mut payload = if keyframe {
        vec![
            0x10, 0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01,
        ]
    } else {
        vec![0x10, 0x31, 0x42, 0x00]
    };
    payload.resize(DATAGRAM_SIZE - header.marshal_size(), 0xab);
    Packet {
        header,
        payload: Bytes::from(payload),
    }
}

/// Keeps abs-send-time under a new id, drops the transport-wide sequence number (each leg
/// numbers its own) and sets the subscriber's mid.
fn subscriber_rewrite(index: u64) -> SubscriberRewrite {
    let mut payload_types = PayloadTypeMap::new();
    payload_types.insert(VP8_PAYLOAD_TYPE, 96 + (index % 3) as u8);
    let mut extensions = ExtensionMap::new();
    extensions.insert(1, 2);
    SubscriberRewrite {
        ssrc: 0x1000 + index as u32,
        payload_types,
        extensions,
        mid: Some((4, Bytes::from(format!("v{index}")))),
        initial_sequence_number: (index * 997) as u16,
        initial_timestamp: (index * 7919) as u32,
    }
}

/// Builds a router whose track has `subscriptions` subscriptions, all past their first
/// keyframe.
fn router_with(subscriptions: u64, now: Instant) -> Router {
    let mut router = Router::new(RouterConfig::default());
    let mut codecs = PayloadCodecs::new();
    codecs.insert(VP8_PAYLOAD_TYPE, Codec::Vp8);
    router
        .add_track(TRACK, MediaKind::Video, codecs, false)
        .expect("new track");
    for index in 0..subscriptions {
        router
            .subscribe(TRACK, index, subscriber_rewrite(index), now)
            .expect("new subscription");
    }
    let mut out = Vec::new();
    router.route(TRACK, &video_packet(true), now, &mut out);
    assert_eq!(
        out.len() as u64,
        subscriptions,
        "every subscription starts at the keyframe"
    );
    router
}

/// Routes the next packet of the stream and drops the forwards.
fn route_next(router: &mut Router, packet: &mut Packet, now: Instant, out: &mut Vec<Forward>) {
    packet.header.sequence_number = packet.header.sequence_number.wrapping_add(1);
    packet.header.timestamp = packet.header.timestamp.wrapping_add(3000);
    black_box(router.route(TRACK, packet, now, out));
    black_box(&*out);
    out.clear();
}

struct Case {
    name: &'static str,
    subscriptions: u64,
    muted: bool,
}

fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = FANOUTS
        .iter()
        .map(|subscriptions| Case {
            name: "fan_out",
            subscriptions: *subscriptions,
            muted: false,
        })
        .collect();
    cases.push(Case {
        name: "muted",
        subscriptions: MUTED_SUBSCRIPTIONS,
        muted: true,
    });
    cases
}

fn prepare(case: &Case, now: Instant) -> (Router, Packet, Vec<Forward>) {
    let mut router = router_with(case.subscriptions, now);
    if case.muted {
        router.set_muted(TRACK, true, now).expect("known track");
    }
    let out = Vec::with_capacity(case.subscriptions as usize);
    (router, video_packet(false), out)
}

fn bench_router(criterion: &mut Criterion) {
    let now = Instant::now();
    let mut group = criterion.benchmark_group("route_1200_byte_video");
    for case in cases() {
        let (mut router, mut packet, mut out) = prepare(&case, now);
        // Throughput in subscriptions, so criterion's elements per second is the inverse of
        // the time per packet per subscription.
        group.throughput(Throughput::Elements(case.subscriptions));
        group.bench_function(BenchmarkId::new(case.name, case.subscriptions), |bencher| {
            bencher.iter(|| route_next(&mut router, &mut packet, now, &mut out));
        });
        if !case.muted {
            assert!(router.stats().forwarded_packets > 0);
        }
    }
    group.finish();
}

/// Prints nanoseconds per packet and per packet per subscription from a plain timed loop,
/// once, before criterion's own measurements.
fn print_per_subscription_costs() {
    println!("case                     ns/packet   ns/packet/subscription");
    let now = Instant::now();
    for case in cases() {
        let (mut router, mut packet, mut out) = prepare(&case, now);
        // About 100 ms per case on a current core at the fan-out costs seen so far.
        let iterations = (2_000_000 / case.subscriptions).max(10_000);
        for _ in 0..iterations / 10 {
            route_next(&mut router, &mut packet, now, &mut out);
        }
        let started = Instant::now();
        for _ in 0..iterations {
            route_next(&mut router, &mut packet, now, &mut out);
        }
        let per_packet = started.elapsed().as_nanos() as f64 / iterations as f64;
        println!(
            "{:<24} {:>9.0}   {:>22.1}",
            format!("{}/{}", case.name, case.subscriptions),
            per_packet,
            per_packet / case.subscriptions as f64
        );
    }
}

fn main() {
    // `cargo test --benches` and `--list` run this binary too, and need no numbers.
    let quick_run = std::env::args().any(|argument| argument == "--test" || argument == "--list");
    if !quick_run {
        print_per_subscription_costs();
    }
    let mut criterion = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    bench_router(&mut criterion);
    criterion.final_summary();
}
