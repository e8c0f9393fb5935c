//! Behaviour of `Router` through its public API.

mod common;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::*;
use router::{Codec, MediaKind, RouteOutcome, RouterError, starts_keyframe};
use rtc_rtp::header::{EXTENSION_PROFILE_ONE_BYTE, EXTENSION_PROFILE_TWO_BYTE, Extension};
use shared::marshal::Marshal;

const TRACK: u64 = 1;
const FRAME: u32 = 3000;

#[test]
fn fan_out_rewrites_per_subscriber() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    for (subscription, ssrc, payload_type, audio_level_id) in [
        (10, 0x1111, 100, 1),
        (11, 0x2222, 101, 5),
        (12, 0x3333, 102, 14),
    ] {
        let mut rewrite = rewrite(ssrc, VIDEO_PT, payload_type, 1000 * subscription as u16, 0);
        rewrite.extensions.insert(3, audio_level_id);
        router
            .subscribe(TRACK, subscription, rewrite, now)
            .expect("subscribe");
    }

    let mut source = packet(5000, 90_000, VIDEO_PT, vp8_keyframe(1200));
    source.header.csrc = vec![7, 8];
    source
        .header
        .set_extension(3, Bytes::from_static(&[0x42]))
        .expect("one-byte extension");
    let (forwards, _) = route(&mut router, TRACK, &source, now);

    assert_eq!(forwards.len(), 3);
    let expected = [
        (10, 0x1111, 100, 1, 10_000),
        (11, 0x2222, 101, 5, 11_000),
        (12, 0x3333, 102, 14, 12_000),
    ];
    for (forward, (subscription, ssrc, payload_type, id, sequence_number)) in
        forwards.iter().zip(expected)
    {
        let header = &forward.packet.header;
        assert_eq!(forward.subscription, subscription);
        assert_eq!(header.ssrc, ssrc);
        assert_eq!(header.payload_type, payload_type);
        assert_eq!(header.sequence_number, sequence_number);
        assert_eq!(header.timestamp, 0);
        assert_eq!(header.get_extension_ids(), vec![id]);
        assert_eq!(header.get_extension(id), Some(Bytes::from_static(&[0x42])));
        assert_eq!(header.csrc, vec![7, 8]);
        assert!(header.marker);
        // The payload is shared, not copied.
        assert_eq!(forward.packet.payload.as_ptr(), source.payload.as_ptr());
        assert_eq!(forward.packet.payload.len(), 1200);
        assert_marshal_round_trip(&forward.packet);
    }
    let stats = router.stats();
    assert_eq!(stats.received_packets, 1);
    assert_eq!(stats.forwarded_packets, 3);
}

#[test]
fn forwarded_bytes_match_marshalled_size() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    let mut rewrite = rewrite(1, VIDEO_PT, 100, 0, 0);
    rewrite.mid = Some((4, Bytes::from_static(b"video-7")));
    router.subscribe(TRACK, 1, rewrite, now).expect("subscribe");
    let (forwards, _) = route(
        &mut router,
        TRACK,
        &packet(1, 0, VIDEO_PT, vp8_keyframe(999)),
        now,
    );
    let marshalled = forwards[0].packet.marshal().expect("marshal").len() as u64;
    assert_eq!(router.stats().forwarded_bytes, marshalled);
}

#[test]
fn route_appends_to_out() {
    let now = Instant::now();
    let mut router = audio_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, AUDIO_PT, AUDIO_PT, 0, 0), now)
        .expect("subscribe");
    let mut out = Vec::new();
    router.route(TRACK, &packet(1, 0, AUDIO_PT, opus(50)), now, &mut out);
    router.route(TRACK, &packet(2, 960, AUDIO_PT, opus(50)), now, &mut out);
    assert_eq!(sequence_numbers(&out, 1), vec![0, 1]);
}

#[test]
fn new_video_subscriber_waits_for_keyframe() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    let outcome = router
        .subscribe(TRACK, 1, rewrite(1, VIDEO_PT, VIDEO_PT, 40, 7), now)
        .expect("subscribe");
    assert!(outcome.request_keyframe);

    for sequence_number in 100..105 {
        let (forwards, _) = route(
            &mut router,
            TRACK,
            &packet(sequence_number, 0, VIDEO_PT, vp8_delta(500)),
            now,
        );
        assert!(forwards.is_empty());
    }
    assert_eq!(router.stats().dropped_waiting_for_keyframe, 5);

    let (forwards, _) = route(
        &mut router,
        TRACK,
        &packet(105, FRAME, VIDEO_PT, vp8_keyframe(500)),
        now,
    );
    assert_eq!(sequence_numbers(&forwards, 1), vec![40]);
    assert_eq!(forwards[0].packet.header.timestamp, 7);

    // Everything after the keyframe is forwarded, keyframe or not.
    let (forwards, _) = route(
        &mut router,
        TRACK,
        &packet(106, FRAME, VIDEO_PT, vp8_delta(500)),
        now,
    );
    assert_eq!(sequence_numbers(&forwards, 1), vec![41]);
    assert_eq!(forwards[0].packet.header.timestamp, 7);
}

#[test]
fn video_subscriber_ignores_late_pre_keyframe_packet() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0), now)
        .expect("subscribe");
    route(
        &mut router,
        TRACK,
        &packet(10, 0, VIDEO_PT, vp8_keyframe(100)),
        now,
    );
    let (forwards, _) = route(
        &mut router,
        TRACK,
        &packet(9, 0, VIDEO_PT, vp8_delta(100)),
        now,
    );
    assert!(forwards.is_empty());
    assert_eq!(router.stats().dropped_too_old, 1);
}

#[test]
fn subscriber_does_not_start_at_reordered_packet() {
    let now = Instant::now();
    let mut router = audio_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, AUDIO_PT, AUDIO_PT, 0, 0), now)
        .expect("subscribe");
    route(&mut router, TRACK, &packet(10, 0, AUDIO_PT, opus(20)), now);

    // The track has seen 10 when the second subscription is made, so 9 arriving late is
    // not its first packet.
    router
        .subscribe(TRACK, 2, rewrite(2, AUDIO_PT, AUDIO_PT, 500, 0), now)
        .expect("subscribe");
    let (forwards, _) = route(&mut router, TRACK, &packet(9, 0, AUDIO_PT, opus(20)), now);
    assert!(sequence_numbers(&forwards, 2).is_empty());
    let (forwards, _) = route(&mut router, TRACK, &packet(11, 0, AUDIO_PT, opus(20)), now);
    assert_eq!(sequence_numbers(&forwards, 2), vec![500]);
    assert_eq!(sequence_numbers(&forwards, 1), vec![1]);
}

#[test]
fn audio_is_never_gated() {
    let now = Instant::now();
    let mut router = audio_router(TRACK);
    let outcome = router
        .subscribe(TRACK, 1, rewrite(1, AUDIO_PT, 109, 500, 1234), now)
        .expect("subscribe");
    assert_eq!(outcome, RouteOutcome::default());
    let (forwards, request) = route(
        &mut router,
        TRACK,
        &packet(77, 48_000, AUDIO_PT, opus(80)),
        now,
    );
    assert!(!request);
    assert_eq!(sequence_numbers(&forwards, 1), vec![500]);
    assert_eq!(forwards[0].packet.header.timestamp, 1234);
    assert_eq!(forwards[0].packet.header.payload_type, 109);
}

#[test]
fn mute_unmute_video_continuity() {
    let start = Instant::now();
    let mut router = video_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, VIDEO_PT, VIDEO_PT, 100, 5000), start)
        .expect("subscribe");
    route(
        &mut router,
        TRACK,
        &packet(10, 90_000, VIDEO_PT, vp8_keyframe(300)),
        start,
    );
    let (forwards, _) = route(
        &mut router,
        TRACK,
        &packet(11, 90_000, VIDEO_PT, vp8_delta(300)),
        start,
    );
    assert_eq!(sequence_numbers(&forwards, 1), vec![101]);

    let outcome = router.set_muted(TRACK, true, start).expect("mute");
    assert_eq!(outcome, RouteOutcome::default());
    assert_eq!(router.is_muted(TRACK), Some(true));
    let mut now = start;
    for step in 0..50u16 {
        now += Duration::from_millis(33);
        let payload = if step % 10 == 0 {
            vp8_keyframe(300)
        } else {
            vp8_delta(300)
        };
        let (forwards, request) = route(
            &mut router,
            TRACK,
            &packet(
                12 + step,
                90_000 + u32::from(step) * FRAME,
                VIDEO_PT,
                payload,
            ),
            now,
        );
        assert!(forwards.is_empty());
        assert!(!request);
    }
    assert_eq!(router.stats().dropped_muted, 50);

    let outcome = router.set_muted(TRACK, false, now).expect("unmute");
    assert!(outcome.request_keyframe);
    assert_eq!(router.is_muted(TRACK), Some(false));

    // Interframes after unmute wait for the keyframe.
    let (forwards, _) = route(
        &mut router,
        TRACK,
        &packet(62, 90_000 + 50 * FRAME, VIDEO_PT, vp8_delta(300)),
        now,
    );
    assert!(forwards.is_empty());
    let (forwards, _) = route(
        &mut router,
        TRACK,
        &packet(63, 90_000 + 51 * FRAME, VIDEO_PT, vp8_keyframe(300)),
        now,
    );
    assert_eq!(sequence_numbers(&forwards, 1), vec![102]);
    assert!(starts_keyframe(Codec::Vp8, &forwards[0].packet.payload));

    // The timestamp offset survives the mute: the publisher's clock kept running.
    assert_eq!(forwards[0].packet.header.timestamp, 5000 + 51 * FRAME);
    let (forwards, _) = route(
        &mut router,
        TRACK,
        &packet(64, 90_000 + 51 * FRAME, VIDEO_PT, vp8_delta(300)),
        now,
    );
    assert_eq!(sequence_numbers(&forwards, 1), vec![103]);
}

#[test]
fn mute_unmute_audio_continuity() {
    let now = Instant::now();
    let mut router = audio_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, AUDIO_PT, AUDIO_PT, 65_534, 0), now)
        .expect("subscribe");
    route(&mut router, TRACK, &packet(1, 960, AUDIO_PT, opus(60)), now);

    router.set_muted(TRACK, true, now).expect("mute");
    for sequence_number in 2..20 {
        route(
            &mut router,
            TRACK,
            &packet(
                sequence_number,
                960 * u32::from(sequence_number),
                AUDIO_PT,
                opus(60),
            ),
            now,
        );
    }

    let outcome = router.set_muted(TRACK, false, now).expect("unmute");
    assert!(!outcome.request_keyframe);
    let (forwards, _) = route(
        &mut router,
        TRACK,
        &packet(20, 960 * 20, AUDIO_PT, opus(60)),
        now,
    );
    assert_eq!(sequence_numbers(&forwards, 1), vec![65_535]);
    assert_eq!(forwards[0].packet.header.timestamp, 960 * 19);
    let (forwards, _) = route(
        &mut router,
        TRACK,
        &packet(21, 960 * 21, AUDIO_PT, opus(60)),
        now,
    );
    assert_eq!(sequence_numbers(&forwards, 1), vec![0]);

    // A packet from before the mute arriving now is not forwarded.
    let (forwards, _) = route(
        &mut router,
        TRACK,
        &packet(19, 960 * 19, AUDIO_PT, opus(60)),
        now,
    );
    assert!(forwards.is_empty());
}

#[test]
fn packet_from_mute_cannot_restart_after_unmute() {
    let now = Instant::now();
    let mut router = audio_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, AUDIO_PT, AUDIO_PT, 0, 0), now)
        .expect("subscribe");
    route(&mut router, TRACK, &packet(1, 0, AUDIO_PT, opus(20)), now);

    router.set_muted(TRACK, true, now).expect("mute");
    for sequence_number in 2..5 {
        route(
            &mut router,
            TRACK,
            &packet(sequence_number, 0, AUDIO_PT, opus(20)),
            now,
        );
    }

    router.set_muted(TRACK, false, now).expect("unmute");

    // A copy of a packet sent while muted, and a late packet from before the mute.
    for sequence_number in [3, 0] {
        let (forwards, _) = route(
            &mut router,
            TRACK,
            &packet(sequence_number, 0, AUDIO_PT, opus(20)),
            now,
        );
        assert!(forwards.is_empty(), "sequence number {sequence_number}");
    }
    assert_eq!(router.stats().dropped_too_old, 2);
    let (forwards, _) = route(&mut router, TRACK, &packet(5, 0, AUDIO_PT, opus(20)), now);
    assert_eq!(sequence_numbers(&forwards, 1), vec![1]);
}

#[test]
fn mute_without_packets_still_regates_video() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0), now)
        .expect("subscribe");
    route(
        &mut router,
        TRACK,
        &packet(1, 0, VIDEO_PT, vp8_keyframe(100)),
        now,
    );

    router.set_muted(TRACK, true, now).expect("mute");
    let later = now + INTERVAL;
    assert!(
        router
            .set_muted(TRACK, false, later)
            .expect("unmute")
            .request_keyframe
    );
    let (forwards, _) = route(
        &mut router,
        TRACK,
        &packet(2, FRAME, VIDEO_PT, vp8_delta(100)),
        later,
    );
    assert!(forwards.is_empty());
    let (forwards, _) = route(
        &mut router,
        TRACK,
        &packet(3, FRAME * 2, VIDEO_PT, vp8_keyframe(100)),
        later,
    );
    assert_eq!(sequence_numbers(&forwards, 1), vec![1]);
}

#[test]
fn set_muted_to_same_state_is_noop() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0), now)
        .expect("subscribe");
    route(
        &mut router,
        TRACK,
        &packet(1, 0, VIDEO_PT, vp8_keyframe(100)),
        now,
    );
    let later = now + INTERVAL * 4;
    assert_eq!(
        router.set_muted(TRACK, false, later).expect("unmute"),
        RouteOutcome::default()
    );

    // The subscription was not restarted, so interframes still flow.
    let (forwards, _) = route(
        &mut router,
        TRACK,
        &packet(2, FRAME, VIDEO_PT, vp8_delta(100)),
        later,
    );
    assert_eq!(sequence_numbers(&forwards, 1), vec![1]);
}

#[test]
fn muted_track_requests_no_keyframes() {
    let now = Instant::now();
    let mut router = router();
    router
        .add_track(TRACK, MediaKind::Video, video_codecs(), true)
        .expect("add track");
    assert_eq!(router.is_muted(TRACK), Some(true));
    let outcome = router
        .subscribe(TRACK, 1, rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0), now)
        .expect("subscribe");
    assert!(!outcome.request_keyframe);
    assert!(
        !router
            .request_keyframe(TRACK, now)
            .expect("request")
            .request_keyframe
    );
    let (forwards, request) = route(
        &mut router,
        TRACK,
        &packet(1, 0, VIDEO_PT, vp8_delta(100)),
        now + INTERVAL * 10,
    );
    assert!(forwards.is_empty());
    assert!(!request);
    assert_eq!(router.stats().keyframe_requests, 0);
    assert_eq!(router.stats().keyframe_requests_merged, 0);

    // The request goes out on unmute.
    assert!(
        router
            .set_muted(TRACK, false, now + INTERVAL * 10)
            .expect("unmute")
            .request_keyframe
    );
}

#[test]
fn keyframe_requests_merged_and_retried() {
    let start = Instant::now();
    let mut router = video_router(TRACK);
    let delta = |sequence_number| packet(sequence_number, 0, VIDEO_PT, vp8_delta(100));

    assert!(
        router
            .subscribe(TRACK, 1, rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0), start)
            .expect("subscribe")
            .request_keyframe
    );
    let soon = start + Duration::from_millis(10);
    assert!(
        !router
            .subscribe(TRACK, 2, rewrite(2, VIDEO_PT, VIDEO_PT, 0, 0), soon)
            .expect("subscribe")
            .request_keyframe
    );
    assert!(
        !router
            .request_keyframe(TRACK, soon)
            .expect("request")
            .request_keyframe
    );
    assert_eq!(router.stats().keyframe_requests, 1);
    assert_eq!(router.stats().keyframe_requests_merged, 2);

    // Within the interval, packets do not trigger a request.
    let (_, request) = route(
        &mut router,
        TRACK,
        &delta(1),
        start + Duration::from_millis(249),
    );
    assert!(!request);

    // Once it has passed, the pending request goes out, once.
    let due = start + INTERVAL;
    let (_, request) = route(&mut router, TRACK, &delta(2), due);
    assert!(request);
    let (_, request) = route(
        &mut router,
        TRACK,
        &delta(3),
        due + Duration::from_millis(1),
    );
    assert!(!request);
    assert_eq!(router.stats().keyframe_requests, 2);

    // No keyframe came: the subscribers still wait, so the request is retried.
    let (_, request) = route(&mut router, TRACK, &delta(4), due + INTERVAL);
    assert!(request);
    assert_eq!(router.stats().keyframe_requests, 3);

    // After the keyframe, nothing is owed.
    let (forwards, request) = route(
        &mut router,
        TRACK,
        &packet(5, FRAME, VIDEO_PT, vp8_keyframe(100)),
        due + INTERVAL * 2,
    );
    assert_eq!(forwards.len(), 2);
    assert!(!request);
    let (_, request) = route(&mut router, TRACK, &delta(6), due + INTERVAL * 10);
    assert!(!request);
    assert_eq!(router.stats().keyframe_requests, 3);
}

#[test]
fn subscriber_request_rate_limited() {
    let start = Instant::now();
    let mut router = video_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0), start)
        .expect("subscribe");
    route(
        &mut router,
        TRACK,
        &packet(1, 0, VIDEO_PT, vp8_keyframe(100)),
        start,
    );

    let later = start + INTERVAL * 2;
    assert!(
        router
            .request_keyframe(TRACK, later)
            .expect("request")
            .request_keyframe
    );
    for millis in [1, 50, 100, 249] {
        let now = later + Duration::from_millis(millis);
        assert!(
            !router
                .request_keyframe(TRACK, now)
                .expect("request")
                .request_keyframe
        );
    }
    assert_eq!(router.stats().keyframe_requests_merged, 4);
    assert!(
        router
            .request_keyframe(TRACK, later + INTERVAL)
            .expect("request")
            .request_keyframe
    );
}

#[test]
fn keyframe_serves_pending_request() {
    let start = Instant::now();
    let mut router = video_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0), start)
        .expect("subscribe");
    route(
        &mut router,
        TRACK,
        &packet(1, 0, VIDEO_PT, vp8_keyframe(100)),
        start,
    );
    assert!(
        !router
            .request_keyframe(TRACK, start)
            .expect("request")
            .request_keyframe
    );

    // The publisher sends a keyframe before the interval ends, so the owed request is
    // dropped.
    route(
        &mut router,
        TRACK,
        &packet(2, FRAME, VIDEO_PT, vp8_keyframe(100)),
        start + Duration::from_millis(100),
    );
    let (_, request) = route(
        &mut router,
        TRACK,
        &packet(3, FRAME, VIDEO_PT, vp8_delta(100)),
        start + INTERVAL,
    );
    assert!(!request);
}

#[test]
fn audio_never_requests_keyframes() {
    let now = Instant::now();
    let mut router = audio_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, AUDIO_PT, AUDIO_PT, 0, 0), now)
        .expect("subscribe");
    assert!(
        !router
            .request_keyframe(TRACK, now)
            .expect("request")
            .request_keyframe
    );

    router.set_muted(TRACK, true, now).expect("mute");
    assert!(
        !router
            .set_muted(TRACK, false, now)
            .expect("unmute")
            .request_keyframe
    );
    let (_, request) = route(
        &mut router,
        TRACK,
        &packet(1, 0, AUDIO_PT, opus(10)),
        now + INTERVAL,
    );
    assert!(!request);
    assert_eq!(router.stats().keyframe_requests, 0);
    assert_eq!(router.stats().keyframe_requests_merged, 0);
}

#[test]
fn padding_only_packets_leave_no_gap() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, VIDEO_PT, VIDEO_PT, 10, 0), now)
        .expect("subscribe");
    router
        .subscribe(TRACK, 2, rewrite(2, VIDEO_PT, VIDEO_PT, 20, 0), now)
        .expect("subscribe");
    let mut forwards = Vec::new();
    let mut out = Vec::new();
    router.route(
        TRACK,
        &packet(1, 0, VIDEO_PT, vp8_keyframe(100)),
        now,
        &mut out,
    );
    forwards.append(&mut out);
    for sequence_number in 2..6 {
        let mut padding = packet(sequence_number, 0, VIDEO_PT, Bytes::new());
        padding.header.padding = true;
        router.route(TRACK, &padding, now, &mut out);
        assert!(out.is_empty());
    }
    router.route(
        TRACK,
        &packet(6, FRAME, VIDEO_PT, vp8_delta(100)),
        now,
        &mut out,
    );
    forwards.append(&mut out);
    assert_eq!(sequence_numbers(&forwards, 1), vec![10, 11]);
    assert_eq!(sequence_numbers(&forwards, 2), vec![20, 21]);

    // Counted once per packet, not per subscriber.
    assert_eq!(router.stats().dropped_padding, 4);
}

#[test]
fn padding_before_start_is_ignored() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, VIDEO_PT, VIDEO_PT, 10, 0), now)
        .expect("subscribe");
    let (forwards, _) = route(
        &mut router,
        TRACK,
        &packet(1, 0, VIDEO_PT, Bytes::new()),
        now,
    );
    assert!(forwards.is_empty());
    let (forwards, _) = route(
        &mut router,
        TRACK,
        &packet(2, 0, VIDEO_PT, vp8_keyframe(100)),
        now,
    );
    assert_eq!(sequence_numbers(&forwards, 1), vec![10]);
}

#[test]
fn padding_bit_cleared_on_media() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0), now)
        .expect("subscribe");
    let mut source = packet(1, 0, VIDEO_PT, vp8_keyframe(101));
    source.header.padding = true;
    let (forwards, _) = route(&mut router, TRACK, &source, now);
    assert_eq!(forwards.len(), 1);
    let forwarded = &forwards[0].packet;
    assert!(!forwarded.header.padding);
    assert_eq!(forwarded.marshal().expect("marshal").len(), 12 + 101);
    assert_marshal_round_trip(forwarded);
}

#[test]
fn duplicates_dropped() {
    let now = Instant::now();
    let mut router = audio_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, AUDIO_PT, AUDIO_PT, 0, 0), now)
        .expect("subscribe");
    router
        .subscribe(TRACK, 2, rewrite(2, AUDIO_PT, AUDIO_PT, 0, 0), now)
        .expect("subscribe");
    let mut forwards = Vec::new();
    for sequence_number in [1, 2, 2, 3, 1, 3, 4] {
        let (mut out, _) = route(
            &mut router,
            TRACK,
            &packet(sequence_number, 0, AUDIO_PT, opus(20)),
            now,
        );
        forwards.append(&mut out);
    }
    assert_eq!(sequence_numbers(&forwards, 1), vec![0, 1, 2, 3]);

    // Counted per subscriber.
    assert_eq!(router.stats().dropped_duplicate, 6);
}

#[test]
fn reordered_packets_keep_their_numbers() {
    let now = Instant::now();
    let mut router = audio_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, AUDIO_PT, AUDIO_PT, 100, 0), now)
        .expect("subscribe");
    let mut forwards = Vec::new();
    for sequence_number in [10, 12, 11, 15, 13, 14] {
        let (mut out, _) = route(
            &mut router,
            TRACK,
            &packet(sequence_number, 0, AUDIO_PT, opus(20)),
            now,
        );
        forwards.append(&mut out);
    }
    assert_eq!(
        sequence_numbers(&forwards, 1),
        vec![100, 102, 101, 105, 103, 104]
    );
}

#[test]
fn reordered_packet_after_drop_uses_its_offset() {
    let now = Instant::now();
    let mut router = audio_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, AUDIO_PT, AUDIO_PT, 100, 0), now)
        .expect("subscribe");
    let mut forwards = Vec::new();
    let stream = [
        packet(10, 0, AUDIO_PT, opus(20)),
        // 11 is late, and 12 is padding that the router drops.
        packet(12, 0, AUDIO_PT, Bytes::new()),
        packet(13, 0, AUDIO_PT, opus(20)),
        packet(11, 0, AUDIO_PT, opus(20)),
        packet(14, 0, AUDIO_PT, opus(20)),
    ];
    for source in &stream {
        let (mut out, _) = route(&mut router, TRACK, source, now);
        forwards.append(&mut out);
    }
    assert_eq!(sequence_numbers(&forwards, 1), vec![100, 102, 101, 103]);
}

#[test]
fn upstream_loss_passes_through_as_gap() {
    let now = Instant::now();
    let mut router = audio_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, AUDIO_PT, AUDIO_PT, 0, 0), now)
        .expect("subscribe");
    let mut forwards = Vec::new();
    for sequence_number in [1, 2, 5, 6] {
        let (mut out, _) = route(
            &mut router,
            TRACK,
            &packet(sequence_number, 0, AUDIO_PT, opus(20)),
            now,
        );
        forwards.append(&mut out);
    }
    assert_eq!(sequence_numbers(&forwards, 1), vec![0, 1, 4, 5]);
}

#[test]
fn too_old_packets_dropped() {
    let now = Instant::now();
    let mut router = audio_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, AUDIO_PT, AUDIO_PT, 0, 0), now)
        .expect("subscribe");
    route(
        &mut router,
        TRACK,
        &packet(1000, 0, AUDIO_PT, opus(20)),
        now,
    );
    route(
        &mut router,
        TRACK,
        &packet(1400, 0, AUDIO_PT, opus(20)),
        now,
    );

    // Older than the subscription's first packet.
    let (forwards, _) = route(&mut router, TRACK, &packet(999, 0, AUDIO_PT, opus(20)), now);
    assert!(forwards.is_empty());

    // Newer than the first packet, but outside the reorder window.
    let (forwards, _) = route(
        &mut router,
        TRACK,
        &packet(1100, 0, AUDIO_PT, opus(20)),
        now,
    );
    assert!(forwards.is_empty());

    // Inside the window.
    let (forwards, _) = route(
        &mut router,
        TRACK,
        &packet(1300, 0, AUDIO_PT, opus(20)),
        now,
    );
    assert_eq!(sequence_numbers(&forwards, 1), vec![300]);
    assert_eq!(router.stats().dropped_too_old, 2);
}

#[test]
fn long_pause_keeps_numbering_and_clock() {
    let start = Instant::now();
    let mut router = video_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0), start)
        .expect("subscribe");
    route(
        &mut router,
        TRACK,
        &packet(500, 1_000_000, VIDEO_PT, vp8_keyframe(100)),
        start,
    );

    // Ten minutes without packets, then the stream continues.
    let resumed = start + Duration::from_secs(600);
    let paused_ticks = 90_000 * 600;
    let (forwards, request) = route(
        &mut router,
        TRACK,
        &packet(501, 1_000_000 + paused_ticks, VIDEO_PT, vp8_delta(100)),
        resumed,
    );
    assert!(!request);
    assert_eq!(sequence_numbers(&forwards, 1), vec![1]);
    assert_eq!(forwards[0].packet.header.timestamp, paused_ticks);
    assert_eq!(router.last_forwarded(1).map(|last| last.at), Some(resumed));

    // A keyframe request after the pause is not held back by the one made at subscribe.
    assert!(
        router
            .request_keyframe(TRACK, resumed)
            .expect("request")
            .request_keyframe
    );
}

#[test]
fn sequence_number_wraparound() {
    let now = Instant::now();
    let mut router = audio_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, AUDIO_PT, AUDIO_PT, 65_530, 0), now)
        .expect("subscribe");
    let mut forwards = Vec::new();
    let mut sequence_number = 65_533u16;
    for step in 0..10 {
        // Every fourth packet is padding, which must not leave a gap across the wrap.
        let payload = if step % 4 == 3 {
            Bytes::new()
        } else {
            opus(20)
        };
        let (mut out, _) = route(
            &mut router,
            TRACK,
            &packet(sequence_number, 0, AUDIO_PT, payload),
            now,
        );
        forwards.append(&mut out);
        sequence_number = sequence_number.wrapping_add(1);
    }
    assert_eq!(
        sequence_numbers(&forwards, 1),
        vec![65_530, 65_531, 65_532, 65_533, 65_534, 65_535, 0, 1]
    );
}

#[test]
fn timestamp_wraparound() {
    let now = Instant::now();
    let mut router = audio_router(TRACK);
    router
        .subscribe(
            TRACK,
            1,
            rewrite(1, AUDIO_PT, AUDIO_PT, 0, u32::MAX - 1000),
            now,
        )
        .expect("subscribe");
    let mut timestamps = Vec::new();
    let mut timestamp = u32::MAX - 1500;
    for sequence_number in 0..4 {
        let (out, _) = route(
            &mut router,
            TRACK,
            &packet(sequence_number, timestamp, AUDIO_PT, opus(20)),
            now,
        );
        timestamps.push(out[0].packet.header.timestamp);
        timestamp = timestamp.wrapping_add(960);
    }
    assert_eq!(timestamps, vec![u32::MAX - 1000, u32::MAX - 40, 919, 1879]);
}

#[test]
fn extensions_remapped_and_removed() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    let mut keep_all = rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0);
    keep_all.extensions.insert(1, 2);
    keep_all.extensions.insert(2, 1);
    keep_all.extensions.insert(3, 9);
    let mut keep_one = rewrite(2, VIDEO_PT, VIDEO_PT, 0, 0);
    keep_one.extensions.insert(3, 3);
    router
        .subscribe(TRACK, 1, keep_all, now)
        .expect("subscribe");
    router
        .subscribe(TRACK, 2, keep_one, now)
        .expect("subscribe");
    router
        .subscribe(TRACK, 3, rewrite(3, VIDEO_PT, VIDEO_PT, 0, 0), now)
        .expect("subscribe");

    let mut source = packet(1, 0, VIDEO_PT, vp8_keyframe(200));
    for (id, value) in [(1u8, &b"\x01"[..]), (2, b"\x02\x02"), (3, b"\x03\x03\x03")] {
        source
            .header
            .set_extension(id, Bytes::copy_from_slice(value))
            .expect("extension");
    }
    let (forwards, _) = route(&mut router, TRACK, &source, now);
    assert_eq!(forwards.len(), 3);

    let all = &forwards[0].packet.header;
    assert_eq!(all.get_extension_ids(), vec![2, 1, 9]);
    assert_eq!(all.get_extension(2), Some(Bytes::from_static(b"\x01")));
    assert_eq!(all.get_extension(1), Some(Bytes::from_static(b"\x02\x02")));
    assert_eq!(
        all.get_extension(9),
        Some(Bytes::from_static(b"\x03\x03\x03"))
    );
    let one = &forwards[1].packet.header;
    assert_eq!(one.get_extension_ids(), vec![3]);
    let none = &forwards[2].packet.header;
    assert!(!none.extension);
    assert!(none.get_extension_ids().is_empty());
    for forward in &forwards {
        assert_marshal_round_trip(&forward.packet);
    }
}

#[test]
fn two_byte_extension_profile() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    let mut rewrite = rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0);
    rewrite.extensions.insert(20, 40);
    rewrite.extensions.insert(5, 6);
    router.subscribe(TRACK, 1, rewrite, now).expect("subscribe");

    let mut source = packet(1, 0, VIDEO_PT, vp8_keyframe(200));
    source.header.extension = true;
    source.header.extension_profile = EXTENSION_PROFILE_TWO_BYTE;
    source.header.extensions = vec![
        Extension {
            id: 20,
            payload: Bytes::from(vec![9; 30]),
        },
        Extension {
            id: 5,
            payload: Bytes::new(),
        },
        Extension {
            id: 7,
            payload: Bytes::from_static(b"removed"),
        },
    ];
    let (forwards, _) = route(&mut router, TRACK, &source, now);
    let header = &forwards[0].packet.header;
    assert_eq!(header.extension_profile, EXTENSION_PROFILE_TWO_BYTE);
    assert_eq!(header.get_extension_ids(), vec![40, 6]);
    assert_eq!(header.get_extension(40), Some(Bytes::from(vec![9; 30])));
    assert_eq!(header.get_extension(6), Some(Bytes::new()));
    assert_marshal_round_trip(&forwards[0].packet);
}

#[test]
fn one_byte_profile_widens_for_large_id() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    let mut rewrite = rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0);
    rewrite.extensions.insert(1, 100);
    router.subscribe(TRACK, 1, rewrite, now).expect("subscribe");
    let mut source = packet(1, 0, VIDEO_PT, vp8_keyframe(200));
    source
        .header
        .set_extension(1, Bytes::from_static(b"abc"))
        .expect("extension");
    assert_eq!(source.header.extension_profile, EXTENSION_PROFILE_ONE_BYTE);
    let (forwards, _) = route(&mut router, TRACK, &source, now);
    let header = &forwards[0].packet.header;
    assert_eq!(header.extension_profile, EXTENSION_PROFILE_TWO_BYTE);
    assert_eq!(header.get_extension(100), Some(Bytes::from_static(b"abc")));
    assert_marshal_round_trip(&forwards[0].packet);
}

#[test]
fn mid_set_on_every_packet() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    let mut with_mid = rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0);
    with_mid.extensions.insert(1, 1);

    // The publisher's mid (id 4) must be replaced, not forwarded.
    with_mid.extensions.insert(4, 4);
    with_mid.mid = Some((4, Bytes::from_static(b"sub-mid")));
    router
        .subscribe(TRACK, 1, with_mid, now)
        .expect("subscribe");

    let mut mids = Vec::new();
    for sequence_number in 1..4 {
        let mut source = packet(sequence_number, 0, VIDEO_PT, vp8_keyframe(100));
        if sequence_number != 2 {
            source
                .header
                .set_extension(1, Bytes::from_static(b"\x10"))
                .expect("extension");
            source
                .header
                .set_extension(4, Bytes::from_static(b"pub-mid"))
                .expect("extension");
        }
        let (forwards, _) = route(&mut router, TRACK, &source, now);
        let header = &forwards[0].packet.header;
        mids.push(header.get_extension(4));
        assert_eq!(
            header
                .get_extension_ids()
                .iter()
                .filter(|id| **id == 4)
                .count(),
            1
        );
        assert_marshal_round_trip(&forwards[0].packet);
    }
    assert_eq!(mids, vec![Some(Bytes::from_static(b"sub-mid")); 3]);
}

#[test]
fn csrc_list_and_marker_kept() {
    let now = Instant::now();
    let mut router = audio_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, AUDIO_PT, AUDIO_PT, 0, 0), now)
        .expect("subscribe");
    let mut source = packet(1, 0, AUDIO_PT, opus(30));
    source.header.csrc = (1..=15).collect();
    source.header.marker = false;
    let (forwards, _) = route(&mut router, TRACK, &source, now);
    assert_eq!(
        forwards[0].packet.header.csrc,
        (1..=15).collect::<Vec<u32>>()
    );
    assert!(!forwards[0].packet.header.marker);
    assert_marshal_round_trip(&forwards[0].packet);
}

#[test]
fn unknown_payload_type_dropped_without_gap() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    let mut both = rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0);
    both.payload_types.insert(VIDEO_PT + 1, 120);
    router.subscribe(TRACK, 1, both, now).expect("subscribe");
    router
        .subscribe(TRACK, 2, rewrite(2, VIDEO_PT, VIDEO_PT, 0, 0), now)
        .expect("subscribe");

    // The second subscription did not negotiate payload type VIDEO_PT + 1.
    let mut forwards = Vec::new();
    let stream = [
        packet(1, 0, VIDEO_PT, vp8_keyframe(100)),
        packet(2, 0, VIDEO_PT + 1, opus(40)),
        packet(3, 0, VIDEO_PT + 1, opus(40)),
        packet(4, 0, VIDEO_PT, vp8_delta(100)),
    ];
    for source in &stream {
        let (mut out, _) = route(&mut router, TRACK, source, now);
        forwards.append(&mut out);
    }

    assert_eq!(sequence_numbers(&forwards, 1), vec![0, 1, 2, 3]);
    let second = forwards
        .iter()
        .filter(|forward| forward.subscription == 1)
        .nth(1);
    assert_eq!(
        second.map(|forward| forward.packet.header.payload_type),
        Some(120)
    );
    assert_eq!(sequence_numbers(&forwards, 2), vec![0, 1]);
    assert_eq!(router.stats().dropped_unknown_payload_type, 2);
}

#[test]
fn unknown_payload_type_before_start() {
    let now = Instant::now();
    let mut router = audio_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, AUDIO_PT, AUDIO_PT, 0, 0), now)
        .expect("subscribe");
    let (forwards, _) = route(&mut router, TRACK, &packet(1, 0, 0, opus(20)), now);
    assert!(forwards.is_empty());
    let (forwards, _) = route(&mut router, TRACK, &packet(2, 0, AUDIO_PT, opus(20)), now);
    assert_eq!(sequence_numbers(&forwards, 1), vec![0]);
    assert_eq!(router.stats().dropped_unknown_payload_type, 1);
}

#[test]
fn unknown_track_counted() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    let (forwards, request) = route(
        &mut router,
        99,
        &packet(1, 0, VIDEO_PT, vp8_keyframe(100)),
        now,
    );
    assert!(forwards.is_empty());
    assert!(!request);
    assert_eq!(router.stats().dropped_unknown_track, 1);
    assert_eq!(router.stats().received_packets, 1);
}

#[test]
fn track_without_subscriptions_counted() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    let (_, request) = route(
        &mut router,
        TRACK,
        &packet(1, 0, VIDEO_PT, vp8_delta(100)),
        now,
    );
    assert!(!request);
    assert_eq!(router.stats().dropped_no_subscriber, 1);
}

#[test]
fn remove_track_returns_subscriptions() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    router
        .add_track(2, MediaKind::Audio, audio_codecs(), false)
        .expect("add track");
    for subscription in [5, 6, 7] {
        router
            .subscribe(
                TRACK,
                subscription,
                rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0),
                now,
            )
            .expect("subscribe");
    }
    router
        .subscribe(2, 8, rewrite(1, AUDIO_PT, AUDIO_PT, 0, 0), now)
        .expect("subscribe");
    router.unsubscribe(6).expect("unsubscribe");
    assert_eq!(router.subscriptions(TRACK).collect::<Vec<_>>(), vec![5, 7]);

    assert_eq!(router.remove_track(TRACK).expect("remove"), vec![5, 7]);
    assert_eq!(router.subscriptions(TRACK).count(), 0);
    assert!(matches!(
        router.unsubscribe(5),
        Err(RouterError::UnknownSubscription(5))
    ));
    assert!(matches!(
        router.remove_track(TRACK),
        Err(RouterError::UnknownTrack(TRACK))
    ));
    assert_eq!(router.is_muted(TRACK), None);

    // The other track is untouched, and the ids can be used again.
    assert_eq!(router.subscriptions(2).collect::<Vec<_>>(), vec![8]);
    router
        .add_track(TRACK, MediaKind::Video, video_codecs(), false)
        .expect("add again");
    router
        .subscribe(TRACK, 5, rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0), now)
        .expect("subscribe again");
}

#[test]
fn unsubscribe_stops_forwarding() {
    let now = Instant::now();
    let mut router = audio_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, AUDIO_PT, AUDIO_PT, 0, 0), now)
        .expect("subscribe");
    router
        .subscribe(TRACK, 2, rewrite(2, AUDIO_PT, AUDIO_PT, 0, 0), now)
        .expect("subscribe");
    route(&mut router, TRACK, &packet(1, 0, AUDIO_PT, opus(20)), now);
    router.unsubscribe(1).expect("unsubscribe");
    let (forwards, _) = route(&mut router, TRACK, &packet(2, 0, AUDIO_PT, opus(20)), now);
    assert_eq!(forwards.len(), 1);
    assert_eq!(sequence_numbers(&forwards, 2), vec![1]);
    assert_eq!(router.last_forwarded(1), None);
}

#[test]
fn api_errors() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    assert!(matches!(
        router.add_track(TRACK, MediaKind::Audio, audio_codecs(), false),
        Err(RouterError::DuplicateTrack(TRACK))
    ));
    router
        .subscribe(TRACK, 1, rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0), now)
        .expect("subscribe");
    assert!(matches!(
        router.subscribe(TRACK, 1, rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0), now),
        Err(RouterError::DuplicateSubscription(1))
    ));
    assert!(matches!(
        router.subscribe(9, 2, rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0), now),
        Err(RouterError::UnknownTrack(9))
    ));
    assert!(matches!(
        router.unsubscribe(2),
        Err(RouterError::UnknownSubscription(2))
    ));
    assert!(matches!(
        router.set_muted(9, true, now),
        Err(RouterError::UnknownTrack(9))
    ));
    assert!(matches!(
        router.request_keyframe(9, now),
        Err(RouterError::UnknownTrack(9))
    ));
    assert!(matches!(
        router.remove_track(9),
        Err(RouterError::UnknownTrack(9))
    ));

    let mut empty_mid = rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0);
    empty_mid.mid = Some((3, Bytes::new()));
    let error = router
        .subscribe(TRACK, 3, empty_mid, now)
        .expect_err("empty mid");
    assert!(matches!(
        error,
        RouterError::InvalidMid {
            subscription: 3,
            id: 3,
            length: 0
        }
    ));
    assert!(error.to_string().contains("subscription 3"), "{error}");
    let mut zero_id = rewrite(1, VIDEO_PT, VIDEO_PT, 0, 0);
    zero_id.mid = Some((0, Bytes::from_static(b"0")));
    assert!(matches!(
        router.subscribe(TRACK, 4, zero_id, now),
        Err(RouterError::InvalidMid { .. })
    ));

    // A failed subscribe leaves nothing behind.
    assert_eq!(router.subscriptions(TRACK).collect::<Vec<_>>(), vec![1]);
    assert_eq!(
        RouterError::UnknownTrack(9).to_string(),
        "track 9 not found"
    );
}

#[test]
fn last_forwarded_tracks_newest_packet() {
    let start = Instant::now();
    let mut router = audio_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, AUDIO_PT, AUDIO_PT, 50, 1000), start)
        .expect("subscribe");
    assert_eq!(router.last_forwarded(1), None);
    route(
        &mut router,
        TRACK,
        &packet(10, 0, AUDIO_PT, opus(20)),
        start,
    );
    let later = start + Duration::from_millis(40);
    route(
        &mut router,
        TRACK,
        &packet(12, 1920, AUDIO_PT, opus(20)),
        later,
    );

    // A late packet does not replace the newest.
    route(
        &mut router,
        TRACK,
        &packet(11, 960, AUDIO_PT, opus(20)),
        later + Duration::from_millis(5),
    );
    let last = router.last_forwarded(1).expect("forwarded");
    assert_eq!(last.at, later);
    assert_eq!(last.sequence_number, 52);
    assert_eq!(last.timestamp, 2920);
}

#[test]
fn malformed_packets_counted() {
    let now = Instant::now();
    let mut router = audio_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, AUDIO_PT, AUDIO_PT, 0, 0), now)
        .expect("subscribe");
    let mut version_one = packet(1, 0, AUDIO_PT, opus(20));
    version_one.header.version = 1;
    let mut too_many_csrcs = packet(2, 0, AUDIO_PT, opus(20));
    too_many_csrcs.header.csrc = (0..16).collect();
    let mut bad_payload_type = packet(3, 0, 200, opus(20));
    bad_payload_type.header.payload_type = 200;
    for source in [version_one, too_many_csrcs, bad_payload_type] {
        let (forwards, _) = route(&mut router, TRACK, &source, now);
        assert!(forwards.is_empty());
    }
    assert_eq!(router.stats().dropped_malformed, 3);

    // The malformed packets did not disturb numbering.
    let (forwards, _) = route(&mut router, TRACK, &packet(4, 0, AUDIO_PT, opus(20)), now);
    assert_eq!(sequence_numbers(&forwards, 1), vec![0]);
}

/// Builds a datagram with two CSRCs, a one-byte extension block and padding.
fn sample_datagram() -> Vec<u8> {
    let mut source = packet(300, 4242, VIDEO_PT, vp8_keyframe(64));
    source.header.csrc = vec![0x0102_0304, 0x0506_0708];
    source
        .header
        .set_extension(1, Bytes::from_static(b"\x11\x22"))
        .expect("extension");
    source
        .header
        .set_extension(2, Bytes::from_static(b"\x33"))
        .expect("extension");
    source.header.padding = true;
    source.marshal().expect("marshal").to_vec()
}

#[test]
fn route_bytes_forwards_parsed_datagram() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    let mut rewrite = rewrite(9, VIDEO_PT, 100, 7, 0);
    rewrite.extensions.insert(1, 5);
    router.subscribe(TRACK, 1, rewrite, now).expect("subscribe");
    let datagram = sample_datagram();
    let mut out = Vec::new();
    router.route_bytes(TRACK, &datagram, now, &mut out);
    assert_eq!(out.len(), 1);
    let forwarded = &out[0].packet;
    assert_eq!(forwarded.header.sequence_number, 7);
    assert_eq!(forwarded.header.csrc, vec![0x0102_0304, 0x0506_0708]);
    assert_eq!(
        forwarded.header.get_extension(5),
        Some(Bytes::from_static(b"\x11\x22"))
    );
    assert_eq!(forwarded.payload, vp8_keyframe(64));
    assert_marshal_round_trip(forwarded);
}

#[test]
fn route_bytes_full_size_datagram() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    let mut rewrite = rewrite(9, VIDEO_PT, VIDEO_PT, 0, 0);
    rewrite.extensions.insert(1, 1);
    rewrite.extensions.insert(2, 2);
    rewrite.mid = Some((3, Bytes::from_static(b"0")));
    router.subscribe(TRACK, 1, rewrite, now).expect("subscribe");
    let mut source = packet(1, 0, VIDEO_PT, Bytes::new());
    source.header.csrc = vec![1, 2, 3];
    source
        .header
        .set_extension(1, Bytes::from_static(b"\x01\x02\x03"))
        .expect("extension");
    source
        .header
        .set_extension(2, Bytes::from_static(b"\x04"))
        .expect("extension");
    let header_size = 12 + 12 + 4 + 8;
    source.payload = vp8_keyframe(1500 - header_size);
    let datagram: BytesMut = source.marshal().expect("marshal");
    assert_eq!(datagram.len(), 1500);
    let mut out = Vec::new();
    router.route_bytes(TRACK, &datagram, now, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].packet.payload, source.payload);
    assert_marshal_round_trip(&out[0].packet);
    assert_eq!(router.stats().received_bytes, 1500);
}

#[test]
fn route_bytes_truncations_are_malformed() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(9, VIDEO_PT, VIDEO_PT, 0, 0), now)
        .expect("subscribe");
    let datagram = sample_datagram();

    // 12 fixed bytes, 8 of CSRCs, 4 of extension block header and 8 of extension elements.
    let header_length = 32;
    let mut out = Vec::new();
    for length in 0..datagram.len() {
        router.route_bytes(TRACK, &datagram[..length], now, &mut out);
    }

    // Cuts into the header fail to parse. Cuts into the payload cut off the padding length
    // byte, so they parse only when the byte that ends up last is a valid padding length.
    assert!(router.stats().dropped_malformed >= header_length);
    assert!(out.iter().all(|forward| forward.packet.payload.len() <= 64));
}

#[test]
fn route_bytes_rejects_bad_datagrams() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(9, VIDEO_PT, VIDEO_PT, 0, 0), now)
        .expect("subscribe");
    let valid = packet(1, 0, VIDEO_PT, vp8_keyframe(20))
        .marshal()
        .expect("marshal")
        .to_vec();

    let mut cases: Vec<Vec<u8>> = Vec::new();
    for version in [0u8, 1, 3] {
        let mut datagram = valid.clone();
        datagram[0] = (datagram[0] & 0x3f) | (version << 6);
        cases.push(datagram);
    }

    // Padding bit set with a zero padding length, and with one longer than the payload.
    let mut zero_padding = valid.clone();
    zero_padding[0] |= 0x20;
    *zero_padding.last_mut().expect("payload") = 0;
    cases.push(zero_padding);
    let mut long_padding = valid.clone();
    long_padding[0] |= 0x20;
    *long_padding.last_mut().expect("payload") = 200;
    cases.push(long_padding);

    // CSRC count larger than the datagram.
    let mut csrc_overrun = valid.clone();
    csrc_overrun[0] |= 0x0f;
    cases.push(csrc_overrun);

    // Extension bit with an extension length past the end.
    let mut extension_overrun = valid.clone();
    extension_overrun[0] |= 0x10;
    extension_overrun.splice(12..12, [0xbe, 0xde, 0x00, 0x20]);
    cases.push(extension_overrun);

    // A one-byte element that runs past the end of its block into the payload.
    let mut element_overrun = valid.clone();
    element_overrun[0] |= 0x10;
    element_overrun.splice(12..12, [0xbe, 0xde, 0x00, 0x01, 0x1f, 0x00, 0x00, 0x00]);
    cases.push(element_overrun);
    cases.push(Vec::new());
    cases.push(vec![0x80]);

    let mut out = Vec::new();
    for datagram in &cases {
        router.route_bytes(TRACK, datagram, now, &mut out);
    }
    assert!(out.is_empty());
    assert_eq!(router.stats().dropped_malformed, cases.len() as u64);
}

#[test]
fn route_bytes_stops_at_extension_id_15() {
    let now = Instant::now();
    let mut router = video_router(TRACK);
    let mut rewrite = rewrite(9, VIDEO_PT, VIDEO_PT, 0, 0);
    rewrite.extensions.insert(1, 1);
    rewrite.extensions.insert(2, 2);
    router.subscribe(TRACK, 1, rewrite, now).expect("subscribe");
    let mut datagram = packet(1, 0, VIDEO_PT, vp8_keyframe(20))
        .marshal()
        .expect("marshal")
        .to_vec();
    datagram[0] |= 0x10;

    // Element id 1, then id 15 (processing stops there, RFC 8285 section 4.2), then an
    // element id 2 that must be ignored.
    datagram.splice(
        12..12,
        [
            0xbe, 0xde, 0x00, 0x02, 0x10, 0xaa, 0xf0, 0x00, 0x20, 0xbb, 0x00, 0x00,
        ],
    );
    let mut out = Vec::new();
    router.route_bytes(TRACK, &datagram, now, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].packet.header.get_extension_ids(), vec![1]);
    assert_eq!(out[0].packet.payload, vp8_keyframe(20));
}

#[test]
fn route_bytes_padding_only_datagram() {
    let now = Instant::now();
    let mut router = audio_router(TRACK);
    router
        .subscribe(TRACK, 1, rewrite(1, AUDIO_PT, AUDIO_PT, 0, 0), now)
        .expect("subscribe");
    let mut out = Vec::new();
    router.route_bytes(
        TRACK,
        &packet(1, 0, AUDIO_PT, opus(20)).marshal().expect("marshal"),
        now,
        &mut out,
    );

    // Header, then 4 bytes of padding whose last byte counts them.
    let mut padding_only = packet(2, 0, AUDIO_PT, Bytes::new())
        .marshal()
        .expect("marshal")
        .to_vec();
    padding_only[0] |= 0x20;
    padding_only.extend_from_slice(&[0, 0, 0, 4]);
    router.route_bytes(TRACK, &padding_only, now, &mut out);
    router.route_bytes(
        TRACK,
        &packet(3, 0, AUDIO_PT, opus(20)).marshal().expect("marshal"),
        now,
        &mut out,
    );
    assert_eq!(sequence_numbers(&out, 1), vec![0, 1]);
    assert_eq!(router.stats().dropped_padding, 1);
}
