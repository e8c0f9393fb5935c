//! Checks of a subscriber's answer to the node's offer, made before the answer reaches the peer
//! connection.
//!
//! `rtc` 0.21.1 moves the signaling state to stable before it reads most of an answer, so an
//! answer it fails on leaves a peer connection that takes no second answer. These checks reject
//! the answers the core would fail on, and answers it would take but that leave nothing to
//! forward, with an error that names the problem.

use std::io::{BufReader, Cursor};

use router::MediaKind;
use rtc::ice::candidate::unmarshal_candidate;
use rtc::rtp_transceiver::rtp_sender::RTCRtpCodec;
use rtc::sdp::extmap::ExtMap;
use rtc::sdp::{MediaDescription, SessionDescription};

use crate::MediaError;
use crate::codecs;
use crate::leg::OfferedTrack;

/// The one fingerprint algorithm the DTLS transport of `rtc` 0.21.1 verifies.
const FINGERPRINT_ALGORITHM: &str = "sha-256";

fn invalid(message: String) -> MediaError {
    MediaError::InvalidAnswer(message)
}

fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

/// Parses `answer` and checks it against the offered tracks, in offer order. Returns, per
/// offered track, whether the answer receives it with one of the publisher's codecs.
pub(crate) fn check(answer: &str, offered: &[OfferedTrack]) -> Result<Vec<bool>, MediaError> {
    let description = SessionDescription::unmarshal(&mut Cursor::new(answer.as_bytes()))
        .map_err(|e| invalid(format!("the SDP does not parse: {e}")))?;
    check_not_an_offer(&description)?;

    let sections = description.media_descriptions.len();
    if sections != offered.len() {
        return Err(invalid(format!(
            "the answer has {sections} media sections and the offer {}; an answer has one per \
             offered section, in the same order",
            offered.len()
        )));
    }
    let mut accepted = Vec::with_capacity(offered.len());
    for (index, (media, track)) in description
        .media_descriptions
        .iter()
        .zip(offered)
        .enumerate()
    {
        check_section(index, media, track)?;
        accepted.push(receives(media) && accepts_a_codec(media, track));
    }
    check_dtls_setup(&description)?;
    check_ice(&description)?;
    check_fingerprint(&description)?;

    if !accepted.contains(&true) {
        return Err(MediaError::NothingToSubscribe(
            "the answer rejects every offered section or accepts none of the publisher's codecs"
                .to_owned(),
        ));
    }
    Ok(accepted)
}

/// Rejects an SDP with `a=setup:actpass`, which only an offer may carry (RFC 5763 section 5):
/// a client that sends its own offer where the answer belongs would otherwise fail later.
fn check_not_an_offer(description: &SessionDescription) -> Result<(), MediaError> {
    let session = description.attribute("setup").map(String::as_str);
    let media = description
        .media_descriptions
        .iter()
        .filter_map(|media| media.attribute("setup").flatten());
    if session
        .into_iter()
        .chain(media)
        .any(|setup| setup == "actpass")
    {
        return Err(invalid(
            "the SDP has a=setup:actpass, so it is an offer; accept_answer takes the subscriber's \
             answer to the node's offer"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Checks that the section mirrors the offered one and that the core can read its payload types
/// and header extensions.
fn check_section(
    index: usize,
    media: &MediaDescription,
    track: &OfferedTrack,
) -> Result<(), MediaError> {
    match media.attribute("mid").flatten() {
        Some(mid) if mid == track.mid => {}
        Some(mid) => {
            return Err(invalid(format!(
                "media section {index} has a=mid:{mid}; the offer's section {index} has a=mid:{}",
                track.mid
            )));
        }
        None => {
            return Err(invalid(format!(
                "media section {index} has no a=mid; the offer's has a=mid:{}",
                track.mid
            )));
        }
    }
    let expected = kind_name(track.kind);
    if media.media_name.media != expected {
        return Err(invalid(format!(
            "media section {index} is {}; the offer's section {index} is {expected}",
            media.media_name.media
        )));
    }
    if media.media_name.port.value == 0 {
        return Ok(());
    }

    let codecs = media.codecs();
    for format in &media.media_name.formats {
        let payload_type: u8 = format.parse().map_err(|_| {
            invalid(format!(
                "media section {index} lists payload type {format:?}, which is not a number from 0 \
                 to 255"
            ))
        })?;
        // The core skips payload type 0 (PCMU) without an rtpmap and rejects any other.
        if payload_type != 0 && !codecs.contains_key(&payload_type) {
            return Err(invalid(format!(
                "media section {index} lists payload type {payload_type} without an a=rtpmap"
            )));
        }
    }
    for attribute in media.attributes.iter().filter(|a| a.key == "extmap") {
        let line = attribute.to_string();
        ExtMap::unmarshal(&mut BufReader::new(line.as_bytes())).map_err(|e| {
            invalid(format!(
                "media section {index} has an invalid a={line}: {e}"
            ))
        })?;
    }
    Ok(())
}

/// Returns whether the answerer receives on the section: not rejected with port 0, and
/// `recvonly` or `sendrecv` (the default when no direction is given).
fn receives(media: &MediaDescription) -> bool {
    media.media_name.port.value != 0
        && media.attribute("sendonly").is_none()
        && media.attribute("inactive").is_none()
}

/// Returns whether the section lists a codec the subscriber can decode the track's media with.
fn accepts_a_codec(media: &MediaDescription, track: &OfferedTrack) -> bool {
    let codecs = media.codecs();
    media
        .media_name
        .formats
        .iter()
        .filter_map(|format| format.parse::<u8>().ok())
        .filter_map(|payload_type| codecs.get(&payload_type))
        .any(|codec| {
            let answered = RTCRtpCodec {
                mime_type: format!("{}/{}", media.media_name.media, codec.name),
                clock_rate: codec.clock_rate,
                channels: 0,
                sdp_fmtp_line: codec.fmtp.clone(),
                rtcp_feedback: Vec::new(),
            };
            track
                .codecs
                .iter()
                .any(|offered| codecs::codecs_match(&offered.rtp_codec, &answered))
        })
}

/// Checks the DTLS role where the core reads it: the first `a=setup` of a media section.
fn check_dtls_setup(description: &SessionDescription) -> Result<(), MediaError> {
    let setup = description
        .media_descriptions
        .iter()
        .find_map(|media| media.attribute("setup"));
    match setup {
        Some(Some("active" | "passive")) => Ok(()),
        Some(Some(other)) => Err(invalid(format!(
            "the answer has a=setup:{other}; an answer takes active or passive"
        ))),
        Some(None) | None => Err(invalid(
            "the answer's media sections have no a=setup:active or a=setup:passive".to_owned(),
        )),
    }
}

/// Checks the ICE credentials and candidates as the core reads them: the session's or the first
/// active section's credentials, the same in every section that is not inactive, and the
/// candidates of those sections.
fn check_ice(description: &SessionDescription) -> Result<(), MediaError> {
    let mut ufrag = description.attribute("ice-ufrag").map(String::as_str);
    let mut pwd = description.attribute("ice-pwd").map(String::as_str);
    let mut inactive_ufrag = None;
    let mut inactive_pwd = None;
    for media in &description.media_descriptions {
        let media_ufrag = media.attribute("ice-ufrag").flatten();
        let media_pwd = media.attribute("ice-pwd").flatten();
        if media.attribute("inactive").is_some() {
            inactive_ufrag = inactive_ufrag.or(media_ufrag);
            inactive_pwd = inactive_pwd.or(media_pwd);
            continue;
        }
        ufrag = ufrag.or(media_ufrag);
        pwd = pwd.or(media_pwd);
        if media_ufrag.is_some() && media_ufrag != ufrag {
            return Err(invalid(
                "the answer's media sections have different a=ice-ufrag values".to_owned(),
            ));
        }
        if media_pwd.is_some() && media_pwd != pwd {
            return Err(invalid(
                "the answer's media sections have different a=ice-pwd values".to_owned(),
            ));
        }
        for attribute in media.attributes.iter().filter(|a| a.is_ice_candidate()) {
            let Some(value) = &attribute.value else {
                continue;
            };
            unmarshal_candidate(value).map_err(|e| {
                invalid(format!(
                    "the answer has an invalid a=candidate:{value}: {e}"
                ))
            })?;
        }
    }
    match ufrag.or(inactive_ufrag) {
        Some(value) if !value.is_empty() => {}
        _ => return Err(invalid("the answer has no a=ice-ufrag".to_owned())),
    }
    match pwd.or(inactive_pwd) {
        Some(value) if !value.is_empty() => {}
        _ => return Err(invalid("the answer has no a=ice-pwd".to_owned())),
    }
    Ok(())
}

/// Checks that the answer has one DTLS fingerprint, of the algorithm the core verifies.
fn check_fingerprint(description: &SessionDescription) -> Result<(), MediaError> {
    let session = description.attribute("fingerprint").map(String::as_str);
    let media = description
        .media_descriptions
        .iter()
        .filter_map(|media| media.attribute("fingerprint").flatten());
    let fingerprints: Vec<&str> = session.into_iter().chain(media).collect();
    let Some(first) = fingerprints.first() else {
        return Err(invalid("the answer has no a=fingerprint".to_owned()));
    };
    if fingerprints.iter().any(|other| other != first) {
        return Err(invalid(
            "the answer has different a=fingerprint values".to_owned(),
        ));
    }
    match first.split(' ').collect::<Vec<_>>().as_slice() {
        [FINGERPRINT_ALGORITHM, value] if !value.is_empty() => Ok(()),
        [algorithm, _] => Err(invalid(format!(
            "the answer's fingerprint uses {algorithm}; the node verifies {FINGERPRINT_ALGORITHM} \
             only"
        ))),
        _ => Err(invalid(format!(
            "the answer has an invalid a=fingerprint:{first}; it takes an algorithm and a value"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters;

    fn track(kind: MediaKind, mid: &str, mime_type: &str, clock_rate: u32, pt: u8) -> OfferedTrack {
        OfferedTrack {
            kind,
            codecs: vec![RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: mime_type.to_owned(),
                    clock_rate,
                    channels: 0,
                    sdp_fmtp_line: String::new(),
                    rtcp_feedback: Vec::new(),
                },
                payload_type: pt,
            }],
            ssrc: 1,
            local_track_id: format!("t{mid}"),
            mid: mid.to_owned(),
        }
    }

    fn offered() -> Vec<OfferedTrack> {
        vec![
            track(MediaKind::Audio, "0", "audio/opus", 48_000, 111),
            track(MediaKind::Video, "1", "video/VP8", 90_000, 96),
        ]
    }

    const FINGERPRINT: &str = "sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99";

    fn audio(extra: &str) -> String {
        format!(
            "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\n\
             a=setup:active\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
             a=fingerprint:{FINGERPRINT}\r\na=rtpmap:111 opus/48000/2\r\n{extra}"
        )
    }

    fn video(extra: &str) -> String {
        format!(
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\n\
             a=setup:active\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
             a=fingerprint:{FINGERPRINT}\r\na=rtpmap:96 VP8/90000\r\n{extra}"
        )
    }

    fn answer(sections: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n{sections}"
        )
    }

    fn invalid_message(result: Result<Vec<bool>, MediaError>) -> String {
        match result {
            Err(MediaError::InvalidAnswer(message)) => message,
            other => panic!("expected InvalidAnswer, got {other:?}"),
        }
    }

    #[test]
    fn valid_answer_accepts_both_tracks() {
        let sdp = answer(&format!("{}{}", audio(""), video("")));
        assert_eq!(check(&sdp, &offered()).expect("valid answer"), [true, true]);
    }

    #[test]
    fn rejected_section_is_not_accepted() {
        let rejected = video("").replace("m=video 9", "m=video 0");
        let sdp = answer(&format!("{}{rejected}", audio("")));
        assert_eq!(
            check(&sdp, &offered()).expect("valid answer"),
            [true, false]
        );
    }

    #[test]
    fn section_without_offered_codec_is_not_accepted() {
        let h264 = video("")
            .replace("SAVPF 96", "SAVPF 102")
            .replace("a=rtpmap:96 VP8/90000", "a=rtpmap:102 H264/90000");
        let sdp = answer(&format!("{}{h264}", audio("")));
        assert_eq!(
            check(&sdp, &offered()).expect("valid answer"),
            [true, false]
        );
    }

    #[test]
    fn garbage_is_invalid() {
        let message = invalid_message(check("hello", &offered()));
        assert!(message.contains("does not parse"), "{message}");
    }

    #[test]
    fn offer_is_invalid() {
        let sdp = answer(&format!("{}{}", audio(""), video(""))).replace("active", "actpass");
        let message = invalid_message(check(&sdp, &offered()));
        assert!(message.contains("offer"), "{message}");
    }

    #[test]
    fn section_count_must_match() {
        let message = invalid_message(check(&answer(&audio("")), &offered()));
        assert!(message.contains("1 media sections"), "{message}");
    }

    #[test]
    fn mids_must_match_in_order() {
        let swapped = audio("").replace("a=mid:0", "a=mid:7");
        let message = invalid_message(check(
            &answer(&format!("{swapped}{}", video(""))),
            &offered(),
        ));
        assert!(message.contains("a=mid:7"), "{message}");
    }

    #[test]
    fn kinds_must_match() {
        let sdp = answer(&format!(
            "{}{}",
            audio(""),
            video("").replace("m=video", "m=audio")
        ));
        let message = invalid_message(check(&sdp, &offered()));
        assert!(message.contains("is audio"), "{message}");
    }

    #[test]
    fn unmapped_payload_type_is_invalid() {
        let sdp = answer(&format!(
            "{}{}",
            audio(""),
            video("").replace("SAVPF 96", "SAVPF 96 97")
        ));
        let message = invalid_message(check(&sdp, &offered()));
        assert!(message.contains("payload type 97"), "{message}");
    }

    #[test]
    fn missing_credentials_are_invalid() {
        let strip = |s: String| s.replace("a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n", "");
        let sdp = answer(&format!("{}{}", strip(audio("")), strip(video(""))));
        let message = invalid_message(check(&sdp, &offered()));
        assert!(message.contains("ice-pwd"), "{message}");
    }

    #[test]
    fn bad_candidate_is_invalid() {
        let sdp = answer(&format!(
            "{}{}",
            audio("a=candidate:not a candidate\r\n"),
            video("")
        ));
        let message = invalid_message(check(&sdp, &offered()));
        assert!(message.contains("candidate"), "{message}");
    }

    #[test]
    fn missing_fingerprint_is_invalid() {
        let strip = |s: String| s.replace(&format!("a=fingerprint:{FINGERPRINT}\r\n"), "");
        let sdp = answer(&format!("{}{}", strip(audio("")), strip(video(""))));
        let message = invalid_message(check(&sdp, &offered()));
        assert!(message.contains("no a=fingerprint"), "{message}");
    }

    #[test]
    fn other_fingerprint_algorithm_is_invalid() {
        let sdp = answer(&format!("{}{}", audio(""), video(""))).replace("sha-256", "sha-1");
        let message = invalid_message(check(&sdp, &offered()));
        assert!(message.contains("sha-1"), "{message}");
    }

    #[test]
    fn nothing_accepted_is_nothing_to_subscribe() {
        let reject = |s: String| s.replace(" 9 UDP", " 0 UDP");
        let sdp = answer(&format!("{}{}", reject(audio("")), reject(video(""))));
        assert!(matches!(
            check(&sdp, &offered()),
            Err(MediaError::NothingToSubscribe(_))
        ));
    }
}
