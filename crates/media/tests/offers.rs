//! Answers to real offers captured from Chromium 156, and to offers derived from them that keep
//! one video codec only; and a Chromium 148 answer to an offer the node made.

use media::{LegId, MediaConfig, MediaError, MediaHandle, MediaKind, MuteState};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("reading {path}: {error}"))
}

fn start_node() -> MediaHandle {
    let (media, _events) = MediaHandle::start(MediaConfig {
        bind: "127.0.0.1:0".parse().expect("bind address"),
        ..MediaConfig::default()
    })
    .expect("start the media worker");
    media
}

/// Keeps only the video payload types whose rtpmap names `codec`, with their attribute lines, so
/// the offer proposes that codec alone.
fn keep_video_codec(sdp: &str, codec: &str) -> String {
    let mut kept: Vec<String> = Vec::new();
    let mut in_video = false;
    for line in sdp.split("\r\n") {
        if line.starts_with("m=") {
            in_video = line.starts_with("m=video");
        }
        if in_video && let Some(rest) = line.strip_prefix("a=rtpmap:") {
            let (payload_type, name) = rest.split_once(' ').unwrap_or_default();
            if name
                .to_ascii_lowercase()
                .starts_with(&codec.to_ascii_lowercase())
            {
                kept.push(payload_type.to_owned());
            }
        }
    }
    assert!(!kept.is_empty(), "the offer has no {codec}");

    let mut out = Vec::new();
    let mut in_video = false;
    for line in sdp.split("\r\n") {
        if line.starts_with("m=") {
            in_video = line.starts_with("m=video");
            if in_video {
                let fields: Vec<&str> = line.split(' ').take(3).collect();
                out.push(format!("{} {}", fields.join(" "), kept.join(" ")));
                continue;
            }
        }
        if in_video {
            let payload_type = ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"]
                .iter()
                .find_map(|prefix| line.strip_prefix(prefix))
                .and_then(|rest| rest.split([' ', ':']).next());
            if let Some(payload_type) = payload_type
                && !kept.iter().any(|kept| kept == payload_type)
            {
                continue;
            }
            if line.starts_with("a=ssrc-group:FID") {
                continue;
            }
        }
        out.push(line.to_owned());
    }
    out.join("\r\n")
}

fn video_section(sdp: &str) -> &str {
    let start = sdp.find("m=video").expect("the answer has a video section");
    &sdp[start..]
}

#[tokio::test]
async fn chrome_offer_gets_complete_lite_answer() {
    let media = start_node();
    let answer = media
        .publish(
            LegId::from("up"),
            fixture("chrome-publish-av.sdp"),
            MuteState::default(),
        )
        .await
        .expect("answer");
    assert_eq!(answer.tracks, vec![MediaKind::Audio, MediaKind::Video]);
    let sdp = answer.sdp;
    assert!(sdp.contains("a=ice-lite"), "no ice-lite:\n{sdp}");
    assert!(
        sdp.contains("a=setup:passive"),
        "not the DTLS server:\n{sdp}"
    );
    let port = media.announced_address().port();
    assert!(
        sdp.contains(&format!("127.0.0.1 {port} typ host")),
        "no candidate for the node's socket:\n{sdp}"
    );
    assert!(
        sdp.contains("a=end-of-candidates"),
        "candidates not ended:\n{sdp}"
    );
    assert!(sdp.contains("a=rtpmap:111 opus/48000/2"), "no Opus:\n{sdp}");
    assert!(
        video_section(&sdp).contains("a=rtpmap:96 VP8/90000"),
        "no VP8:\n{sdp}"
    );
    assert!(
        sdp.contains("a=recvonly"),
        "publisher sections must be recvonly:\n{sdp}"
    );
    media.shutdown();
}

#[tokio::test]
async fn every_forwarded_video_codec_is_accepted_alone() {
    let media = start_node();
    let base = fixture("chrome-publish-av.sdp");
    for (index, codec) in ["VP8", "VP9", "H264", "AV1"].iter().enumerate() {
        let offer = keep_video_codec(&base, codec);
        let answer = media
            .publish(LegId(format!("up-{index}")), offer, MuteState::default())
            .await
            .unwrap_or_else(|error| panic!("{codec}-only offer rejected: {error}"));
        assert_eq!(answer.tracks, vec![MediaKind::Audio, MediaKind::Video]);
        let video = video_section(&answer.sdp);
        assert!(
            video.contains(&format!(" {codec}/90000")),
            "{codec} missing from the answer:\n{video}"
        );
    }
    media.shutdown();
}

#[tokio::test]
async fn other_chrome_offers_are_accepted() {
    let media = start_node();
    let cases = [
        ("chrome-publish-h264-only.sdp", vec![MediaKind::Video]),
        (
            "chrome-publish-av-maxbundle.sdp",
            vec![MediaKind::Audio, MediaKind::Video],
        ),
        (
            "chrome-legacy-balanced.sdp",
            vec![MediaKind::Audio, MediaKind::Video],
        ),
        (
            "chrome-publish-simulcast.sdp",
            vec![MediaKind::Audio, MediaKind::Video],
        ),
    ];
    for (name, kinds) in cases {
        let answer = media
            .publish(LegId::from(name), fixture(name), MuteState::default())
            .await
            .unwrap_or_else(|error| panic!("{name} rejected: {error}"));
        assert_eq!(answer.tracks, kinds, "{name}");
    }
    let h264 = media
        .publish(
            LegId::from("h264"),
            fixture("chrome-publish-h264-only.sdp"),
            MuteState::default(),
        )
        .await;
    assert!(h264.is_ok());
    media.shutdown();
}

#[tokio::test]
async fn recvonly_offer_subscribes_to_a_publisher() {
    let media = start_node();
    media
        .publish(
            LegId::from("up"),
            fixture("chrome-publish-av.sdp"),
            MuteState::default(),
        )
        .await
        .expect("publish");
    let answer = media
        .subscribe(
            LegId::from("down"),
            LegId::from("up"),
            fixture("chrome-recvonly.sdp"),
        )
        .await
        .expect("subscribe");
    assert!(
        answer.contains("a=sendonly"),
        "no sending section:\n{answer}"
    );
    assert!(answer.contains("a=ssrc:"), "no announced SSRC:\n{answer}");
    assert!(
        video_section(&answer).contains("VP8/90000"),
        "the subscriber must get the publisher's codec:\n{answer}"
    );

    let not_a_publisher = media
        .subscribe(
            LegId::from("down-2"),
            LegId::from("down"),
            fixture("chrome-recvonly.sdp"),
        )
        .await;
    assert!(
        matches!(not_a_publisher, Err(MediaError::NotAPublisher(_))),
        "{not_a_publisher:?}"
    );
    let duplicate = media
        .subscribe(
            LegId::from("down"),
            LegId::from("up"),
            fixture("chrome-recvonly.sdp"),
        )
        .await;
    assert!(
        matches!(duplicate, Err(MediaError::DuplicateLeg(_))),
        "{duplicate:?}"
    );
    media.shutdown();
}

#[tokio::test]
async fn unsupported_video_codec_is_rejected() {
    let media = start_node();
    // H265 is a codec Switchboard does not forward.
    let offer = fixture("chrome-publish-h264-only.sdp").replace("H264/90000", "H265/90000");
    let result = media
        .publish(LegId::from("up"), offer, MuteState::default())
        .await;
    assert!(
        matches!(result, Err(MediaError::NoSupportedCodec(_))),
        "{result:?}"
    );

    let vp8_publisher = media
        .publish(
            LegId::from("vp8"),
            keep_video_codec(&fixture("chrome-publish-av.sdp"), "VP8"),
            MuteState::default(),
        )
        .await;
    assert!(vp8_publisher.is_ok());
    // A subscriber whose offer cannot receive VP8 cannot be fed by a VP8 publisher.
    let offer = fixture("chrome-recvonly.sdp").replace("VP8/90000", "VP7/90000");
    let result = media
        .subscribe(LegId::from("down"), LegId::from("vp8"), offer)
        .await;
    assert!(
        matches!(result, Err(MediaError::NoSupportedCodec(_))),
        "a subscriber without VP8 was answered: {result:?}"
    );
    assert_eq!(media.stats().await.expect("stats").legs, 1);
    media.shutdown();
}

#[tokio::test]
async fn chrome_answer_to_node_offer_is_applied() {
    let media = start_node();
    media
        .publish(
            LegId::from("a-up"),
            fixture("chrome-publish-av.sdp"),
            MuteState::default(),
        )
        .await
        .expect("publish");
    let offer = media
        .offer_subscription(LegId::from("b-from-a"), LegId::from("a-up"))
        .await
        .expect("offer a subscription");
    // Chromium 148 answered an offer the node made for this publisher, whose video section
    // lists the publisher's negotiated codecs in the publisher's order.
    assert!(
        offer.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 102 108 116 45 98 100\r\n"),
        "the offer's video codecs changed; capture a new answer:\n{offer}"
    );
    media
        .accept_answer(
            LegId::from("b-from-a"),
            fixture("chrome-answer-to-node-offer.sdp"),
        )
        .await
        .expect("Chromium's answer applies");
    let again = media
        .accept_answer(
            LegId::from("b-from-a"),
            fixture("chrome-answer-to-node-offer.sdp"),
        )
        .await;
    assert!(
        matches!(again, Err(MediaError::NotAwaitingAnswer(_))),
        "{again:?}"
    );
    media.shutdown();
}
