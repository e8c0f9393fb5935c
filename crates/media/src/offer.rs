//! A first look at an offer, before any peer connection is built for it: what it can send and
//! receive, which DTLS role the answer must take, and values the core would accept but the
//! router could not use. Garbage is rejected here cheaply.

use std::io::Cursor;

use router::MediaKind;
use rtc::peer_connection::transport::RTCDtlsRole;
use rtc::sdp::{MediaDescription, SessionDescription};

use crate::MediaError;

/// Maximum length of a mid that fits in one RTP header extension element.
const MAX_MID_BYTES: usize = 255;
/// Maximum number of tracks one publisher leg may send: far above a camera, a microphone and a
/// screen share, low enough that one offer cannot make the node hold hundreds of tracks.
pub(crate) const MAX_TRACKS_PER_LEG: usize = 16;

/// Summary of an offer, per media kind (index 0 audio, 1 video).
#[derive(Debug)]
pub(crate) struct OfferSummary {
    /// Sections that send media to us and are not rejected.
    pub(crate) sending: [usize; 2],
    /// Sections that can receive media from us and are not rejected.
    pub(crate) receiving: [usize; 2],
    /// The answer's DTLS role: the server, unless the offerer insists on being it.
    pub(crate) dtls_role: RTCDtlsRole,
}

pub(crate) fn kind_index(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

fn direction(media: &MediaDescription) -> (bool, bool) {
    if media.attribute("sendonly").is_some() {
        (true, false)
    } else if media.attribute("recvonly").is_some() {
        (false, true)
    } else if media.attribute("inactive").is_some() {
        (false, false)
    } else {
        (true, true)
    }
}

/// Parses an offer and summarises it, rejecting what no answer could serve.
pub(crate) fn inspect(offer: &str) -> Result<OfferSummary, MediaError> {
    let description = SessionDescription::unmarshal(&mut Cursor::new(offer.as_bytes()))
        .map_err(|e| MediaError::InvalidOffer(e.to_string()))?;

    let session_setup = description.attribute("setup").map(String::as_str);
    let mut summary = OfferSummary {
        sending: [0; 2],
        receiving: [0; 2],
        dtls_role: RTCDtlsRole::Server,
    };
    for media in &description.media_descriptions {
        if let Some(Some(mid)) = media.attribute("mid")
            && mid.len() > MAX_MID_BYTES
        {
            return Err(MediaError::InvalidOffer(format!(
                "a=mid is {} bytes long; at most {MAX_MID_BYTES} fit in an RTP header extension",
                mid.len()
            )));
        }
        let setup = media.attribute("setup").flatten().or(session_setup);
        // An offerer that will only be the DTLS server leaves the client role to the answer.
        if setup == Some("passive") {
            summary.dtls_role = RTCDtlsRole::Client;
        }

        let kind = match media.media_name.media.as_str() {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            _ => continue,
        };
        // Port 0 rejects a section unless BUNDLE carries it on another section's transport.
        if media.media_name.port.value == 0 && media.attribute("bundle-only").is_none() {
            continue;
        }
        let (sends, receives) = direction(media);
        if sends {
            summary.sending[kind_index(kind)] += 1;
        }
        if receives {
            summary.receiving[kind_index(kind)] += 1;
        }
    }
    Ok(summary)
}

impl OfferSummary {
    /// Checks that the offer sends something, and not more tracks than one leg may publish.
    pub(crate) fn check_publishable(&self) -> Result<(), MediaError> {
        let tracks: usize = self.sending.iter().sum();
        if tracks == 0 {
            return Err(MediaError::NothingToPublish);
        }
        if tracks > MAX_TRACKS_PER_LEG {
            return Err(MediaError::InvalidOffer(format!(
                "the offer sends {tracks} tracks; a leg may publish at most {MAX_TRACKS_PER_LEG}"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(sections: &str) -> String {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n{sections}"
        )
    }

    const AUDIO: &str = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=setup:actpass\r\na=rtpmap:111 opus/48000/2\r\n";
    const VIDEO: &str = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\na=setup:actpass\r\na=rtpmap:96 VP8/90000\r\n";

    #[test]
    fn directions_counted_per_kind() {
        let summary = inspect(&offer(&format!("{AUDIO}{VIDEO}"))).expect("valid offer");
        assert_eq!(summary.sending, [1, 0]);
        assert_eq!(summary.receiving, [0, 1]);
        assert_eq!(summary.dtls_role, RTCDtlsRole::Server);
    }

    #[test]
    fn port_zero_section_is_rejected() {
        let rejected = AUDIO.replace("m=audio 9", "m=audio 0");
        let summary = inspect(&offer(&rejected)).expect("valid offer");
        assert_eq!(summary.sending, [0, 0]);
    }

    #[test]
    fn passive_offer_gets_client_role() {
        let passive = AUDIO.replace("a=setup:actpass", "a=setup:passive");
        let summary = inspect(&offer(&passive)).expect("valid offer");
        assert_eq!(summary.dtls_role, RTCDtlsRole::Client);
    }

    #[test]
    fn overlong_mid_is_invalid() {
        let long = AUDIO.replace("a=mid:0", &format!("a=mid:{}", "m".repeat(256)));
        assert!(matches!(
            inspect(&offer(&long)),
            Err(MediaError::InvalidOffer(_))
        ));
    }

    #[test]
    fn publishable_needs_one_to_sixteen_tracks() {
        let none = inspect(&offer(VIDEO)).expect("valid offer");
        assert!(matches!(
            none.check_publishable(),
            Err(MediaError::NothingToPublish)
        ));

        let one = inspect(&offer(AUDIO)).expect("valid offer");
        assert!(one.check_publishable().is_ok());

        let many = inspect(&offer(&AUDIO.repeat(MAX_TRACKS_PER_LEG + 1))).expect("valid offer");
        assert!(matches!(
            many.check_publishable(),
            Err(MediaError::InvalidOffer(_))
        ));
    }

    #[test]
    fn garbage_is_invalid() {
        assert!(matches!(inspect("hello"), Err(MediaError::InvalidOffer(_))));
    }
}
