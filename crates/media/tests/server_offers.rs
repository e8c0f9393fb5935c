//! Subscriber legs whose offer comes from the node, with a real publisher and a real answering
//! subscriber (the async `webrtc` crate) over loopback.

use std::io::Cursor;
use std::time::Duration;

use client::media::vp8_starts_keyframe;
use client::{Kind, ReceivedPacket, SendPlan, Subscriber, wait_until};
use media::{CloseReason, LegId, MediaConfig, MediaError, MediaEvent, MediaHandle};
use rtc::sdp::{MediaDescription, SessionDescription};
use tokio::sync::mpsc::UnboundedReceiver;

mod common;

use common::{CONNECT_TIMEOUT, next_closed, node_config, publish, start_node};

fn parse(sdp: &str) -> SessionDescription {
    SessionDescription::unmarshal(&mut Cursor::new(sdp.as_bytes()))
        .unwrap_or_else(|error| panic!("the SDP does not parse: {error}\n{sdp}"))
}

fn values<'a>(media: &'a MediaDescription, key: &str) -> Vec<&'a str> {
    media
        .attributes
        .iter()
        .filter(|attribute| attribute.key == key)
        .filter_map(|attribute| attribute.value.as_deref())
        .collect()
}

/// Returns the SSRC that the section's `a=ssrc` lines name.
fn offered_ssrc(media: &MediaDescription) -> u32 {
    let line = values(media, "ssrc")
        .first()
        .copied()
        .expect("the section has an a=ssrc line");
    line.split(' ')
        .next()
        .and_then(|ssrc| ssrc.parse().ok())
        .unwrap_or_else(|| panic!("invalid a=ssrc:{line}"))
}

fn of_kind(packets: &[ReceivedPacket], kind: Kind) -> Vec<ReceivedPacket> {
    packets
        .iter()
        .filter(|packet| packet.kind == kind)
        .cloned()
        .collect()
}

/// Waits up to `CONNECT_TIMEOUT` for `LegConnected` of `leg`, skipping other events.
async fn wait_leg_connected(events: &mut UnboundedReceiver<MediaEvent>, leg: &str) -> bool {
    let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if event == (MediaEvent::LegConnected { leg: leg.into() }) {
            return true;
        }
    }
    false
}

/// Offers `leg` the tracks of `publisher_leg`, and returns a subscriber that has answered the
/// offer, its answer, and the offer.
async fn offer_and_answer(
    media: &MediaHandle,
    leg: &str,
    publisher_leg: &str,
) -> (Subscriber, String, String) {
    let offer = media
        .offer_subscription(LegId::from(leg), LegId::from(publisher_leg))
        .await
        .expect("offer a subscription");
    let subscriber = Subscriber::answering().await.expect("subscriber");
    let answer = subscriber.answer(offer.clone()).await.expect("answer");
    (subscriber, answer, offer)
}

/// Applies the subscriber's answer and checks that the leg connects and forwards video.
async fn assert_connects_and_forwards(
    media: &MediaHandle,
    leg: &str,
    subscriber: &Subscriber,
    answer: String,
    after: &str,
) {
    media
        .accept_answer(LegId::from(leg), answer)
        .await
        .unwrap_or_else(|error| panic!("{leg}: the correct answer after {after} failed: {error}"));
    subscriber
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("{leg}: no connection after {after}: {error}"));
    assert!(
        wait_until(Duration::from_secs(3), || subscriber.count(Kind::Video)
            >= 5)
        .await,
        "{leg}: no video after {after}"
    );
}

/// Replaces the port of every `m=` line with 0, which rejects the section.
fn reject_every_section(sdp: &str) -> String {
    reject_sections(sdp, "m=")
}

/// Replaces the port of the `m=` lines that start with `prefix` with 0, which rejects the
/// sections.
fn reject_sections(sdp: &str, prefix: &str) -> String {
    let mut lines = Vec::new();
    for line in sdp.split("\r\n") {
        if !line.starts_with(prefix) {
            lines.push(line.to_owned());
            continue;
        }
        let mut fields: Vec<&str> = line.split(' ').collect();
        if let Some(port) = fields.get_mut(1) {
            *port = "0";
        }
        lines.push(fields.join(" "));
    }
    lines.join("\r\n")
}

/// Adds to the video section an RTX codec whose `apt` is not a payload type. The node's own
/// checks let it through, and `rtc` 0.21.1 fails on it only after it has taken the answer in.
fn add_unreadable_rtx(sdp: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    for line in sdp.split("\r\n") {
        if line.starts_with("m=video") {
            lines.push(format!("{line} 97"));
            continue;
        }
        lines.push(line.to_owned());
        if line.starts_with("a=rtpmap:96 ") {
            lines.push("a=rtpmap:97 rtx/90000".to_owned());
            lines.push("a=fmtp:97 apt=abc".to_owned());
        }
    }
    lines.join("\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_is_complete_bundled_send_only() {
    let (media, _events) = start_node();
    let _publisher = publish(&media, "a-up").await;
    let offer = media
        .offer_subscription(LegId::from("b-from-a"), LegId::from("a-up"))
        .await
        .expect("offer a subscription");
    let description = parse(&offer);

    assert!(
        description.has_attribute("ice-lite"),
        "no a=ice-lite:\n{offer}"
    );
    let sections = &description.media_descriptions;
    let kinds: Vec<&str> = sections
        .iter()
        .map(|media| media.media_name.media.as_str())
        .collect();
    assert_eq!(kinds, ["audio", "video"], "one section per publisher track");

    let mids: Vec<&str> = sections
        .iter()
        .map(|media| media.attribute("mid").flatten().expect("a=mid"))
        .collect();
    let bundle = description.attribute("group").expect("a=group");
    assert_eq!(*bundle, format!("BUNDLE {}", mids.join(" ")));

    let mut stream_ids = Vec::new();
    for (media, kind) in sections.iter().zip(kinds) {
        assert!(
            media.attribute("sendonly").is_some(),
            "{kind} is not send-only"
        );
        assert_eq!(
            media.attribute("setup").flatten(),
            Some("actpass"),
            "{kind} setup"
        );
        assert!(
            media.attribute("rtcp-mux").is_some(),
            "{kind} has no rtcp-mux"
        );
        let msid = media
            .attribute("msid")
            .flatten()
            .unwrap_or_else(|| panic!("{kind} has no a=msid"));
        stream_ids.push(msid.split(' ').next().unwrap_or_default().to_owned());
        offered_ssrc(media);
    }
    assert_eq!(
        stream_ids[0], stream_ids[1],
        "audio and video must share one stream id"
    );

    let audio = &sections[0];
    assert!(
        values(audio, "rtpmap")
            .iter()
            .any(|rtpmap| rtpmap.contains("opus/48000")),
        "no Opus in the audio section"
    );
    let video = &sections[1];
    assert!(
        values(video, "rtpmap")
            .iter()
            .any(|rtpmap| rtpmap.contains("VP8/90000")),
        "no VP8 in the video section"
    );
    let feedback = values(video, "rtcp-fb");
    for expected in ["nack", "nack pli", "transport-cc"] {
        assert!(
            feedback
                .iter()
                .any(|line| line.split_once(' ').map(|(_, rest)| rest) == Some(expected)),
            "video has no a=rtcp-fb {expected}: {feedback:?}"
        );
    }
    let extensions = values(video, "extmap");
    assert!(
        extensions
            .iter()
            .any(|line| line.ends_with("urn:ietf:params:rtp-hdrext:sdes:mid")),
        "video has no mid extension: {extensions:?}"
    );

    let first = &sections[0];
    let candidates = values(first, "candidate");
    assert!(
        !candidates.is_empty(),
        "the first section has no candidate:\n{offer}"
    );
    let port = media.local_addr().port().to_string();
    assert!(
        candidates
            .iter()
            .any(|candidate| candidate.contains(" 127.0.0.1 ") && candidate.contains(&port)),
        "no candidate names the node's address: {candidates:?}"
    );
    assert!(
        first.attribute("end-of-candidates").is_some(),
        "no a=end-of-candidates:\n{offer}"
    );
    media.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offered_leg_forwards_and_closes_with_publisher() {
    let (media, mut events) = start_node();
    let publisher = publish(&media, "a-up").await;
    publisher.start_media(SendPlan::default());
    // Let the publisher's tracks start, so a keyframe request can name their SSRCs.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (subscriber, answer, offer) = offer_and_answer(&media, "b-from-a", "a-up").await;
    let description = parse(&offer);
    let audio_ssrc = offered_ssrc(&description.media_descriptions[0]);
    let video_ssrc = offered_ssrc(&description.media_descriptions[1]);
    let requests_before = publisher.keyframe_requests();

    media
        .accept_answer(LegId::from("b-from-a"), answer)
        .await
        .expect("accept the answer");
    subscriber
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .expect("subscriber connects");
    assert!(
        wait_leg_connected(&mut events, "b-from-a").await,
        "no LegConnected event for the offered leg"
    );
    assert!(
        wait_until(Duration::from_secs(3), || publisher.keyframe_requests()
            > requests_before)
        .await,
        "the connected subscriber leg did not request a keyframe from the publisher"
    );
    assert!(
        wait_until(Duration::from_secs(3), || {
            subscriber.count(Kind::Video) >= 30 && subscriber.count(Kind::Audio) >= 30
        })
        .await,
        "media does not flow to the offered leg"
    );

    let received = subscriber.received();
    let video = of_kind(&received, Kind::Video);
    let audio = of_kind(&received, Kind::Audio);
    assert!(
        video.iter().all(|packet| packet.ssrc == video_ssrc),
        "video arrives with an SSRC other than the offered {video_ssrc}"
    );
    assert!(
        audio.iter().all(|packet| packet.ssrc == audio_ssrc),
        "audio arrives with an SSRC other than the offered {audio_ssrc}"
    );
    assert_ne!(video_ssrc, publisher.video_ssrc, "video SSRC not rewritten");
    assert_ne!(audio_ssrc, publisher.audio_ssrc, "audio SSRC not rewritten");
    assert!(
        vp8_starts_keyframe(&video[0].payload),
        "the first forwarded video packet does not start a keyframe"
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
    assert_eq!(stats.subscriber_legs, 1);
    assert_eq!(stats.subscriptions, 2);
    assert!(stats.keyframe_requests_received >= 1);

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
    assert_eq!(stats.subscriptions, 0);
    media.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_answers_leave_leg_answerable() {
    let (media, _events) = start_node();
    let publisher = publish(&media, "a-up").await;
    publisher.start_media(SendPlan::default());
    // A client's own offer, sent where the answer belongs.
    let offerer = Subscriber::new().await.expect("subscriber");
    let client_offer = offerer.offer().await.expect("client offer");

    // Each case: its name, how it spoils the answer, and a fragment of the InvalidAnswer
    // message that tells which check caught it (`None` where NothingToSubscribe is expected).
    type Spoil = Box<dyn Fn(&str) -> String>;
    let cases: [(&str, Spoil, Option<&str>); 5] = [
        (
            "garbage",
            Box::new(|_| "v=0\r\nthis is not sdp".to_owned()),
            Some("does not parse"),
        ),
        (
            "an offer",
            Box::new(move |_| client_offer.clone()),
            Some("is an offer"),
        ),
        (
            "a fingerprint the node cannot verify",
            Box::new(|answer| answer.replace("a=fingerprint:sha-256 ", "a=fingerprint:sha-1 ")),
            Some("sha-1"),
        ),
        (
            "every section rejected",
            Box::new(reject_every_section),
            None,
        ),
        (
            "an answer the core fails on",
            Box::new(add_unreadable_rtx),
            Some("the peer connection rejected the answer"),
        ),
    ];
    for (index, (case, spoil, expected)) in cases.iter().enumerate() {
        let leg = format!("b{index}-from-a");
        let (subscriber, answer, _) = offer_and_answer(&media, &leg, "a-up").await;
        let result = media
            .accept_answer(LegId::from(leg.as_str()), spoil(&answer))
            .await;
        match (expected, &result) {
            (None, Err(MediaError::NothingToSubscribe(_))) => {}
            (Some(fragment), Err(MediaError::InvalidAnswer(message))) => assert!(
                message.contains(fragment),
                "{case}: the message {message:?} does not contain {fragment:?}"
            ),
            _ => panic!("{case}: unexpected result {result:?}"),
        }
        assert_connects_and_forwards(&media, &leg, &subscriber, answer, case).await;
    }
    assert_eq!(
        media.stats().await.expect("stats").subscriber_legs,
        cases.len()
    );
    media.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_rejecting_video_gets_audio() {
    let (media, _events) = start_node();
    let publisher = publish(&media, "a-up").await;
    publisher.start_media(SendPlan::default());
    let (subscriber, answer, _) = offer_and_answer(&media, "b-from-a", "a-up").await;

    media
        .accept_answer(LegId::from("b-from-a"), reject_sections(&answer, "m=video"))
        .await
        .expect("an answer that accepts audio only applies");
    subscriber
        .wait_connected(CONNECT_TIMEOUT)
        .await
        .expect("subscriber connects");
    assert!(
        wait_until(Duration::from_secs(3), || subscriber.count(Kind::Audio)
            >= 30)
        .await,
        "audio does not flow"
    );
    assert_eq!(subscriber.count(Kind::Video), 0, "rejected video arrived");
    let stats = media.stats().await.expect("stats");
    assert_eq!(stats.subscriptions, 1, "only the audio track is subscribed");
    media.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_to_wrong_leg_is_rejected() {
    let (media, _events) = start_node();
    let publisher = publish(&media, "a-up").await;
    publisher.start_media(SendPlan::default());
    let (subscriber, answer, _) = offer_and_answer(&media, "b-from-a", "a-up").await;

    let unknown = media
        .accept_answer(LegId::from("nobody"), answer.clone())
        .await;
    assert!(
        matches!(unknown, Err(MediaError::LegNotFound(_))),
        "{unknown:?}"
    );
    let to_publisher = media
        .accept_answer(LegId::from("a-up"), answer.clone())
        .await;
    assert!(
        matches!(to_publisher, Err(MediaError::NotAwaitingAnswer(_))),
        "{to_publisher:?}"
    );

    // A leg that answered a client's offer has no offer of the node's to answer.
    let client = Subscriber::new().await.expect("subscriber");
    let client_offer = client.offer().await.expect("client offer");
    media
        .subscribe(LegId::from("c-from-a"), LegId::from("a-up"), client_offer)
        .await
        .expect("subscribe");
    let to_answering_leg = media
        .accept_answer(LegId::from("c-from-a"), answer.clone())
        .await;
    assert!(
        matches!(to_answering_leg, Err(MediaError::NotAwaitingAnswer(_))),
        "{to_answering_leg:?}"
    );

    assert_connects_and_forwards(
        &media,
        "b-from-a",
        &subscriber,
        answer.clone(),
        "wrong legs",
    )
    .await;
    let again = media.accept_answer(LegId::from("b-from-a"), answer).await;
    assert!(
        matches!(again, Err(MediaError::NotAwaitingAnswer(_))),
        "{again:?}"
    );
    let before = subscriber.count(Kind::Video);
    assert!(
        wait_until(Duration::from_secs(2), || subscriber.count(Kind::Video)
            > before + 10)
        .await,
        "a second answer disturbed the answered leg"
    );
    media.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_needs_new_leg_and_publisher() {
    let (media, _events) = start_node();
    let _publisher = publish(&media, "a-up").await;
    let (_subscriber, _answer, _offer) = offer_and_answer(&media, "b-from-a", "a-up").await;

    let unknown = media
        .offer_subscription(LegId::from("c"), LegId::from("nobody"))
        .await;
    assert!(
        matches!(unknown, Err(MediaError::LegNotFound(_))),
        "{unknown:?}"
    );
    let not_publisher = media
        .offer_subscription(LegId::from("c"), LegId::from("b-from-a"))
        .await;
    assert!(
        matches!(not_publisher, Err(MediaError::NotAPublisher(_))),
        "{not_publisher:?}"
    );
    let duplicate = media
        .offer_subscription(LegId::from("b-from-a"), LegId::from("a-up"))
        .await;
    assert!(
        matches!(duplicate, Err(MediaError::DuplicateLeg(_))),
        "{duplicate:?}"
    );
    let stats = media.stats().await.expect("stats");
    assert_eq!(stats.legs, 2, "a failed offer left a leg behind");
    media.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_offer_closes_after_timeout() {
    let (media, mut events) = MediaHandle::start(MediaConfig {
        answer_timeout: Duration::from_millis(300),
        ..node_config()
    })
    .expect("start the media worker");
    let _publisher = publish(&media, "a-up").await;
    let (_subscriber, answer, _) = offer_and_answer(&media, "b-from-a", "a-up").await;
    assert_eq!(media.stats().await.expect("stats").subscriber_legs, 1);

    let closed = next_closed(&mut events, Duration::from_secs(5))
        .await
        .expect("the unanswered leg is closed");
    assert_eq!(
        closed,
        (LegId::from("b-from-a"), CloseReason::AnswerTimeout)
    );
    assert_eq!(CloseReason::AnswerTimeout.as_str(), "answer_timeout");
    let stats = media.stats().await.expect("stats");
    assert_eq!(stats.subscriber_legs, 0);
    assert_eq!(stats.publisher_legs, 1);
    let late = media.accept_answer(LegId::from("b-from-a"), answer).await;
    assert!(matches!(late, Err(MediaError::LegNotFound(_))), "{late:?}");
    media.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_leg_closes_with_publisher() {
    let (media, mut events) = start_node();
    let _publisher = publish(&media, "a-up").await;
    let _offer = media
        .offer_subscription(LegId::from("b-from-a"), LegId::from("a-up"))
        .await
        .expect("offer a subscription");
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
    assert_eq!(media.stats().await.expect("stats").legs, 0);
    media.shutdown();
}
