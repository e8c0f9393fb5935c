//! The codecs and header extensions each kind of leg negotiates, and how a publisher's payload
//! types and extension ids map onto a subscriber's.

use router::{Codec, MediaKind};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_AV1, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8, MIME_TYPE_VP9, MediaEngine,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sdp::extmap::{AUDIO_LEVEL_URI, VIDEO_ORIENTATION_URI};

use crate::MediaError;

/// Header extensions that carry meaning from publisher to subscriber and are forwarded as they
/// are. The transport-wide sequence number, abs-send-time and the stream ids describe the
/// publisher's own connection, so the router strips them.
pub(crate) const FORWARDED_EXTENSIONS: [&str; 2] = [AUDIO_LEVEL_URI, VIDEO_ORIENTATION_URI];

fn video_feedback() -> Vec<RTCPFeedback> {
    [
        ("transport-cc", ""),
        ("ccm", "fir"),
        ("nack", ""),
        ("nack", "pli"),
    ]
    .into_iter()
    .map(|(typ, parameter)| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    })
    .collect()
}

fn codec(
    mime_type: &str,
    clock_rate: u32,
    channels: u16,
    fmtp: &str,
    payload_type: u8,
) -> RTCRtpCodecParameters {
    let rtcp_feedback = if mime_type.starts_with("video/") {
        video_feedback()
    } else {
        vec![RTCPFeedback {
            typ: "transport-cc".to_owned(),
            parameter: String::new(),
        }]
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: mime_type.to_owned(),
            clock_rate,
            channels,
            sdp_fmtp_line: fmtp.to_owned(),
            rtcp_feedback,
        },
        payload_type,
    }
}

/// Codecs a publisher may send. The offer's own payload types and order win in the answer; the
/// payload types here only matter to an offer that does not name them.
fn publishable_codecs() -> Vec<(RTCRtpCodecParameters, RtpCodecKind)> {
    vec![
        (
            codec(MIME_TYPE_OPUS, 48_000, 2, "minptime=10;useinbandfec=1", 111),
            RtpCodecKind::Audio,
        ),
        (codec(MIME_TYPE_VP8, 90_000, 0, "", 96), RtpCodecKind::Video),
        (
            codec(MIME_TYPE_VP9, 90_000, 0, "profile-id=0", 98),
            RtpCodecKind::Video,
        ),
        (
            codec(MIME_TYPE_VP9, 90_000, 0, "profile-id=2", 100),
            RtpCodecKind::Video,
        ),
        (
            codec(
                MIME_TYPE_H264,
                90_000,
                0,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
                108,
            ),
            RtpCodecKind::Video,
        ),
        (
            codec(
                MIME_TYPE_H264,
                90_000,
                0,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
                102,
            ),
            RtpCodecKind::Video,
        ),
        (
            codec(
                MIME_TYPE_H264,
                90_000,
                0,
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f",
                116,
            ),
            RtpCodecKind::Video,
        ),
        (
            codec(MIME_TYPE_AV1, 90_000, 0, "level-idx=5;profile=0;tier=0", 45),
            RtpCodecKind::Video,
        ),
    ]
}

fn register_forwarded_extensions(engine: &mut MediaEngine) -> Result<(), MediaError> {
    let extensions = [
        (AUDIO_LEVEL_URI, RtpCodecKind::Audio),
        (VIDEO_ORIENTATION_URI, RtpCodecKind::Video),
    ];
    for (uri, kind) in extensions {
        engine
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: uri.to_owned(),
                },
                kind,
                None,
            )
            .map_err(|e| MediaError::Rtc(format!("registering header extension {uri}: {e}")))?;
    }
    Ok(())
}

/// Media engine of a publisher leg: every codec Switchboard forwards.
pub(crate) fn publisher_media_engine() -> Result<MediaEngine, MediaError> {
    let mut engine = MediaEngine::default();
    for (parameters, kind) in publishable_codecs() {
        let mime = parameters.rtp_codec.mime_type.clone();
        engine
            .register_codec(parameters, kind)
            .map_err(|e| MediaError::Rtc(format!("registering codec {mime}: {e}")))?;
    }
    register_forwarded_extensions(&mut engine)?;
    Ok(engine)
}

/// Media engine of a subscriber leg: exactly the codecs the publisher leg negotiated, so the
/// subscriber can only accept what the publisher may send.
pub(crate) fn subscriber_media_engine(
    publisher_codecs: &[(MediaKind, Vec<RTCRtpCodecParameters>)],
) -> Result<MediaEngine, MediaError> {
    let mut engine = MediaEngine::default();
    for (kind, codecs) in publisher_codecs {
        for parameters in codecs {
            let mime = parameters.rtp_codec.mime_type.clone();
            engine
                .register_codec(parameters.clone(), codec_kind(*kind))
                .map_err(|e| MediaError::Rtc(format!("registering codec {mime}: {e}")))?;
        }
    }
    register_forwarded_extensions(&mut engine)?;
    Ok(engine)
}

pub(crate) fn codec_kind(kind: MediaKind) -> RtpCodecKind {
    match kind {
        MediaKind::Audio => RtpCodecKind::Audio,
        MediaKind::Video => RtpCodecKind::Video,
    }
}

pub(crate) fn media_kind(kind: RtpCodecKind) -> Option<MediaKind> {
    match kind {
        RtpCodecKind::Audio => Some(MediaKind::Audio),
        RtpCodecKind::Video => Some(MediaKind::Video),
        _ => None,
    }
}

/// Maps a MIME type to the router's codec.
pub(crate) fn router_codec(mime_type: &str) -> Codec {
    let mime = mime_type.to_ascii_lowercase();
    match mime.as_str() {
        "audio/opus" => Codec::Opus,
        "video/vp8" => Codec::Vp8,
        "video/vp9" => Codec::Vp9,
        "video/h264" => Codec::H264,
        "video/av1" => Codec::Av1,
        _ => Codec::Other,
    }
}

fn fmtp_value<'a>(fmtp: &'a str, key: &str) -> Option<&'a str> {
    fmtp.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case(key)
            .then_some(value.trim())
    })
}

/// Returns whether a subscriber that negotiated codec `b` can decode what a publisher sends with
/// codec `a`: the same MIME type and the same fmtp parameters that change the bitstream.
pub(crate) fn codecs_match(a: &RTCRtpCodec, b: &RTCRtpCodec) -> bool {
    if !a.mime_type.eq_ignore_ascii_case(&b.mime_type) || a.clock_rate != b.clock_rate {
        return false;
    }
    let (fa, fb) = (a.sdp_fmtp_line.as_str(), b.sdp_fmtp_line.as_str());
    match router_codec(&a.mime_type) {
        Codec::H264 => {
            let mode = |f| fmtp_value(f, "packetization-mode").unwrap_or("0");
            // profile_idc and the constraint flags decide decodability; the level does not.
            let profile = |f| {
                fmtp_value(f, "profile-level-id")
                    .and_then(|id| id.get(..4))
                    .map(str::to_ascii_lowercase)
                    .unwrap_or_else(|| "42e0".to_owned())
            };
            mode(fa) == mode(fb) && profile(fa) == profile(fb)
        }
        Codec::Vp9 => {
            fmtp_value(fa, "profile-id").unwrap_or("0")
                == fmtp_value(fb, "profile-id").unwrap_or("0")
        }
        Codec::Av1 => {
            fmtp_value(fa, "profile").unwrap_or("0") == fmtp_value(fb, "profile").unwrap_or("0")
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h264(fmtp: &str) -> RTCRtpCodec {
        codec(MIME_TYPE_H264, 90_000, 0, fmtp, 102).rtp_codec
    }

    #[test]
    fn h264_match_needs_same_mode_and_profile() {
        let a = h264("packetization-mode=1;profile-level-id=42e01f");
        assert!(codecs_match(
            &a,
            &h264("profile-level-id=42E034;packetization-mode=1")
        ));
        assert!(!codecs_match(
            &a,
            &h264("packetization-mode=0;profile-level-id=42e01f")
        ));
        assert!(!codecs_match(
            &a,
            &h264("packetization-mode=1;profile-level-id=4d001f")
        ));
    }

    #[test]
    fn vp9_match_needs_same_profile() {
        let p0 = codec(MIME_TYPE_VP9, 90_000, 0, "profile-id=0", 98).rtp_codec;
        let p2 = codec(MIME_TYPE_VP9, 90_000, 0, "profile-id=2", 100).rtp_codec;
        let bare = codec(MIME_TYPE_VP9, 90_000, 0, "", 98).rtp_codec;
        assert!(codecs_match(&p0, &bare));
        assert!(!codecs_match(&p0, &p2));
    }

    #[test]
    fn different_mime_types_do_not_match() {
        let vp8 = codec(MIME_TYPE_VP8, 90_000, 0, "", 96).rtp_codec;
        let vp8_upper = codec("video/vp8", 90_000, 0, "", 120).rtp_codec;
        assert!(codecs_match(&vp8, &vp8_upper));
        assert!(!codecs_match(&vp8, &h264("packetization-mode=1")));
    }
}
