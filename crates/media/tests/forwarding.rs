//! The media path end to end with real WebRTC peers (the async `webrtc` crate) over loopback:
//! ICE, DTLS and SRTP against the node's one UDP socket, forwarding through the router.

use std::time::{Duration, Instant};

use client::media::{opus_counter, vp8_counter, vp8_starts_keyframe};
use client::{
    Kind, Publisher, ReceivedPacket, Relay, SendPlan, SentPacket, Subscriber, wait_until,
};
use media::{CloseReason, LegId, MediaConfig, MediaError, MediaHandle, MediaKind, MuteState};

mod common;

use common::{CONNECT_TIMEOUT, next_closed, publish, publish_via, start_node};

async fn subscribe(media: &MediaHandle, leg: &str, publisher_leg: &str) -> Subscriber {
    let subscriber = Subscriber::new().await.expect("subscriber");
    let offer = subscriber.offer().await.expect("subscriber offer");
    let answer = media
        .subscribe(LegId::from(leg), LegId::from(publisher_leg), offer)
        .await
        .expect("subscribe answer");
    subscriber.apply_answer(answer).await.expect("apply answer");
    subscriber
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .expect("subscriber connects");
    subscriber
}

fn of_kind(packets: &[ReceivedPacket], kind: Kind) -> Vec<ReceivedPacket> {
    packets
        .iter()
        .filter(|packet| packet.kind == kind)
        .cloned()
        .collect()
}

fn sent_of_kind(packets: &[SentPacket], kind: Kind) -> Vec<SentPacket> {
    packets
        .iter()
        .filter(|packet| packet.kind == kind)
        .cloned()
        .collect()
}

/// Asserts that `received` is a run of consecutive packets of `sent`, byte for byte and in order.
fn assert_contiguous_run(label: &str, sent: &[SentPacket], received: &[ReceivedPacket]) {
    let first = received
        .first()
        .unwrap_or_else(|| panic!("{label}: nothing received"));
    let start = sent
        .iter()
        .position(|packet| packet.payload == first.payload)
        .unwrap_or_else(|| panic!("{label}: the first received payload was never sent"));
    for (offset, packet) in received.iter().enumerate() {
        let expected = sent
            .get(start + offset)
            .unwrap_or_else(|| panic!("{label}: received more than was sent"));
        assert_eq!(
            packet.payload, expected.payload,
            "{label}: payload {offset} differs from what was sent"
        );
    }
}

fn assert_consecutive_sequence_numbers(label: &str, received: &[ReceivedPacket]) {
    for pair in received.windows(2) {
        assert_eq!(
            pair[1].sequence_number,
            pair[0].sequence_number.wrapping_add(1),
            "{label}: sequence numbers jump from {} to {}",
            pair[0].sequence_number,
            pair[1].sequence_number
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_receive_each_other() {
    let (media, _events) = start_node();
    let names = ["a", "b", "c"];
    let mut publishers = Vec::new();
    for name in names {
        let publisher = publish(&media, &format!("{name}-up")).await;
        publisher.start_media(SendPlan::default());
        publishers.push(publisher);
    }
    let mut subscriptions = Vec::new();
    for receiver in names {
        for (index, sender) in names.iter().enumerate() {
            if *sender == receiver {
                continue;
            }
            let leg = format!("{receiver}-from-{sender}");
            let subscriber = subscribe(&media, &leg, &format!("{sender}-up")).await;
            subscriptions.push((leg, index, subscriber));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for publisher in &publishers {
        publisher.stop_media();
    }
    // Let the last forwarded packets land.
    tokio::time::sleep(Duration::from_millis(300)).await;

    for (leg, index, subscriber) in &subscriptions {
        let sent = publishers[*index].sent();
        let received = subscriber.received();
        let video = of_kind(&received, Kind::Video);
        let audio = of_kind(&received, Kind::Audio);
        assert!(
            video.len() >= 30,
            "{leg}: only {} video packets",
            video.len()
        );
        assert!(
            audio.len() >= 50,
            "{leg}: only {} audio packets",
            audio.len()
        );
        assert!(
            vp8_starts_keyframe(&video[0].payload),
            "{leg}: the first forwarded video packet does not start a keyframe"
        );
        assert_contiguous_run(leg, &sent_of_kind(&sent, Kind::Video), &video);
        assert_contiguous_run(leg, &sent_of_kind(&sent, Kind::Audio), &audio);
        assert_consecutive_sequence_numbers(leg, &video);
        assert_consecutive_sequence_numbers(leg, &audio);
        assert!(vp8_counter(&video[video.len() - 1].payload).is_some());
        assert!(opus_counter(&audio[audio.len() - 1].payload).is_some());
    }

    let stats = media.stats().await.expect("stats");
    assert_eq!(stats.publisher_legs, 3);
    assert_eq!(stats.subscriber_legs, 6);
    assert_eq!(stats.tracks, 6);
    assert_eq!(stats.subscriptions, 12);
    assert!(stats.router.forwarded_packets > 0);
    media.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_drops_video_and_resumes_at_keyframe() {
    let (media, _events) = start_node();
    let publisher = publish(&media, "a-up").await;
    let subscriber = subscribe(&media, "b-from-a", "a-up").await;
    publisher.start_media(SendPlan::default());
    assert!(
        wait_until(Duration::from_secs(3), || subscriber.count(Kind::Video)
            >= 20)
        .await,
        "video does not flow before the mute"
    );

    media
        .set_muted(LegId::from("a-up"), MediaKind::Video, true)
        .await
        .expect("mute");
    // Packets already on their way when the mute took effect may still land.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let video_at_mute = subscriber.count(Kind::Video);
    let audio_at_mute = subscriber.count(Kind::Audio);
    let sent_at_mute = sent_of_kind(&publisher.sent(), Kind::Video).len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        sent_of_kind(&publisher.sent(), Kind::Video).len() > sent_at_mute + 20,
        "the publisher must keep sending while muted"
    );
    assert_eq!(
        subscriber.count(Kind::Video),
        video_at_mute,
        "video was forwarded while muted"
    );
    assert!(
        subscriber.count(Kind::Audio) > audio_at_mute + 30,
        "audio must go on while video is muted"
    );
    let muted_drops = media.stats().await.expect("stats").router.dropped_muted;
    assert!(
        muted_drops >= 20,
        "only {muted_drops} packets dropped as muted"
    );

    let requests_before = publisher.keyframe_requests();
    media
        .set_muted(LegId::from("a-up"), MediaKind::Video, false)
        .await
        .expect("unmute");
    assert!(
        wait_until(Duration::from_secs(2), || publisher.keyframe_requests()
            > requests_before)
        .await,
        "unmute did not send a keyframe request to the publisher"
    );
    assert!(
        wait_until(Duration::from_secs(3), || subscriber.count(Kind::Video)
            > video_at_mute + 10)
        .await,
        "video does not resume after unmute"
    );
    publisher.stop_media();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let video = of_kind(&subscriber.received(), Kind::Video);
    let resumed = &video[video_at_mute];
    assert!(
        vp8_starts_keyframe(&resumed.payload),
        "the first video packet after unmute does not start a keyframe"
    );
    assert_consecutive_sequence_numbers("video across the mute", &video);
    assert!(
        resumed
            .timestamp
            .wrapping_sub(video[video_at_mute - 1].timestamp)
            >= 90_000,
        "the RTP timestamp must carry the muted second"
    );
    media.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_keyframe_request_reaches_publisher() {
    let (media, _events) = start_node();
    let publisher = publish(&media, "a-up").await;
    let subscriber = subscribe(&media, "b-from-a", "a-up").await;
    publisher.start_media(SendPlan::default());
    assert!(
        wait_until(Duration::from_secs(3), || subscriber.count(Kind::Video)
            >= 10)
        .await,
        "video does not flow"
    );
    // Wait out the keyframe request interval so the subscriber's request is not merged away.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = publisher.keyframe_requests();
    subscriber.request_keyframe().await.expect("send PLI");
    assert!(
        wait_until(Duration::from_secs(2), || publisher.keyframe_requests()
            > before)
        .await,
        "the subscriber's PLI did not reach the publisher"
    );
    let stats = media.stats().await.expect("stats");
    assert!(stats.keyframe_requests_received >= 1);
    media.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtcp_reports_flow_both_ways() {
    let (media, _events) = start_node();
    let publisher = publish(&media, "a-up").await;
    let subscriber = subscribe(&media, "b-from-a", "a-up").await;
    publisher.start_media(SendPlan::default());
    let deadline = Instant::now() + Duration::from_secs(8);
    let (mut receiver_reports, mut sender_reports) = (0, 0);
    while Instant::now() < deadline && (receiver_reports == 0 || sender_reports == 0) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        receiver_reports = publisher.receiver_reports();
        sender_reports = subscriber.sender_reports();
    }
    assert!(
        receiver_reports > 0,
        "the publisher got no receiver report from the node"
    );
    assert!(
        sender_reports > 0,
        "the subscriber got no sender report from the node"
    );
    media.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_loopback_forwards() {
    let (media, _events) = MediaHandle::start(MediaConfig {
        bind: "[::1]:0".parse().expect("bind address"),
        ..MediaConfig::default()
    })
    .expect("start the media worker on ::1");
    let loopback = std::net::Ipv6Addr::LOCALHOST.into();

    let publisher = Publisher::bound_to(loopback).await.expect("publisher");
    let offer = publisher.offer().await.expect("offer");
    let answer = media
        .publish(LegId::from("a-up"), offer, MuteState::default())
        .await
        .expect("publish");
    assert!(
        answer.sdp.contains(" ::1 "),
        "no IPv6 candidate:\n{}",
        answer.sdp
    );
    publisher
        .apply_answer(answer.sdp)
        .await
        .expect("apply answer");
    publisher
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .expect("publisher connects over IPv6");

    let subscriber = Subscriber::bound_to(loopback).await.expect("subscriber");
    let offer = subscriber.offer().await.expect("offer");
    let answer = media
        .subscribe(LegId::from("b-from-a"), LegId::from("a-up"), offer)
        .await
        .expect("subscribe");
    subscriber.apply_answer(answer).await.expect("apply answer");
    subscriber
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .expect("subscriber connects over IPv6");

    publisher.start_media(SendPlan::default());
    assert!(
        wait_until(Duration::from_secs(3), || subscriber.count(Kind::Video)
            >= 10)
        .await,
        "video does not flow over IPv6"
    );
    media.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_publisher_ends_its_subscriber_legs() {
    let (media, mut events) = start_node();
    let _publisher = publish(&media, "a-up").await;
    let _subscriber = subscribe(&media, "b-from-a", "a-up").await;
    media.close_leg(LegId::from("a-up")).await.expect("close");

    let mut closed = vec![
        next_closed(&mut events, Duration::from_secs(2))
            .await
            .expect("first close event"),
        next_closed(&mut events, Duration::from_secs(2))
            .await
            .expect("second close event"),
    ];
    closed.sort();
    assert_eq!(
        closed,
        vec![
            (LegId::from("a-up"), CloseReason::Requested),
            (LegId::from("b-from-a"), CloseReason::PublisherClosed),
        ]
    );
    let stats = media.stats().await.expect("stats");
    assert_eq!(stats.legs, 0);
    assert_eq!(stats.tracks, 0, "the publisher's tracks stay in the router");
    assert_eq!(stats.subscriptions, 0, "subscriptions stay in the router");
    assert!(matches!(
        media.close_leg(LegId::from("a-up")).await,
        Err(MediaError::LegNotFound(_))
    ));
    media.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_publisher_is_closed_when_consent_expires() {
    let (media, mut events) = start_node();
    let relay = Relay::start(media.local_addr()).await.expect("relay");
    let publisher = publish_via(&media, "a-up", Some(&relay)).await;
    let subscriber = subscribe(&media, "b-from-a", "a-up").await;
    publisher.start_media(SendPlan::default());
    assert!(
        wait_until(Duration::from_secs(3), || subscriber.count(Kind::Video)
            >= 10)
        .await,
        "video does not flow through the relay"
    );

    // The publisher's peer connection stays open: it just stops reaching the node.
    relay.cut();
    let cut_at = Instant::now();
    let mut closed = vec![
        next_closed(&mut events, Duration::from_secs(15))
            .await
            .expect("the vanished publisher's leg is closed"),
        next_closed(&mut events, Duration::from_secs(2))
            .await
            .expect("its subscriber leg is closed"),
    ];
    closed.sort();
    assert_eq!(
        closed,
        vec![
            (LegId::from("a-up"), CloseReason::ConnectionFailed),
            (LegId::from("b-from-a"), CloseReason::PublisherClosed),
        ]
    );
    assert!(cut_at.elapsed() < Duration::from_secs(15));
    let stats = media.stats().await.expect("stats");
    assert_eq!(stats.legs, 0);
    assert_eq!(
        stats.tracks, 0,
        "the vanished publisher's tracks stay in the router"
    );
    assert_eq!(stats.subscriptions, 0, "subscriptions stay in the router");
    publisher.close().await;
    media.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_stray_datagrams_are_dropped_and_counted() {
    let (media, _events) = start_node();
    let relay = Relay::start(media.local_addr()).await.expect("relay");
    let publisher = publish_via(&media, "a-up", Some(&relay)).await;
    let subscriber = subscribe(&media, "b-from-a", "a-up").await;
    publisher.start_media(SendPlan::default());
    assert!(
        wait_until(Duration::from_secs(3), || subscriber.count(Kind::Video)
            >= 10)
        .await
    );

    let before = media.stats().await.expect("stats");
    // An RTP-shaped datagram from the publisher's own address that fails SRTP authentication.
    let mut forged = vec![0x80, 96, 0x12, 0x34, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
    forged.extend_from_slice(&[0x55; 200]);
    for _ in 0..5 {
        relay.inject(&forged).await.expect("inject");
    }
    // Garbage from an address no leg owns.
    let stray = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("socket");
    for _ in 0..5 {
        stray
            .send_to(b"not webrtc at all", media.local_addr())
            .await
            .expect("send");
    }
    let received_before = subscriber.count(Kind::Video);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let after = media.stats().await.expect("stats");
    assert!(
        after.unroutable_datagrams >= before.unroutable_datagrams + 5,
        "stray datagrams are not counted as unroutable"
    );
    assert!(
        after.rejected_datagrams >= before.rejected_datagrams + 5,
        "forged SRTP is not counted as rejected"
    );
    assert!(
        subscriber.count(Kind::Video) > received_before + 5,
        "forwarding must go on undisturbed"
    );
    assert_eq!(after.legs, 2);
    media.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_offers_are_rejected_without_a_leg() {
    let (media, _events) = start_node();
    let garbage = media
        .publish(
            LegId::from("x"),
            "v=0\r\nthis is not sdp".into(),
            MuteState::default(),
        )
        .await;
    assert!(
        matches!(garbage, Err(MediaError::InvalidOffer(_))),
        "{garbage:?}"
    );

    let unknown = media
        .subscribe(LegId::from("y"), LegId::from("nobody"), "v=0".into())
        .await;
    assert!(
        matches!(unknown, Err(MediaError::LegNotFound(_))),
        "{unknown:?}"
    );

    // A subscriber's offer is no publisher offer: it sends nothing.
    let receive_only = Subscriber::new().await.expect("subscriber");
    let offer = receive_only.offer().await.expect("offer");
    let nothing = media
        .publish(LegId::from("z"), offer, MuteState::default())
        .await;
    assert!(
        matches!(nothing, Err(MediaError::NothingToPublish)),
        "{nothing:?}"
    );

    assert_eq!(media.stats().await.expect("stats").legs, 0);
    media.shutdown();
}
