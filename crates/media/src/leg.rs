//! One leg: a peer connection of the `rtc` core plus what the worker needs to route its media.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use router::{MediaKind, SubscriptionId, TrackId};
use rtc::crypto::SignatureScheme;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::rand::generate_pwd;
use rtc::interceptor::{
    NackGeneratorBuilder, NackResponderBuilder, ReceiverReportBuilder, Registry,
    SenderReportBuilder, Slot, TwccReceiverBuilder,
};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::configure_simulcast_extension_headers;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpHeaderExtensionCapability, RtpCodecKind, TYPE_RTCP_FB_NACK, TYPE_RTCP_FB_TRANSPORT_CC,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit,
};
use rtc::sdp::extmap::TRANSPORT_CC_URI;

use crate::codecs;
use crate::demux::LegKey;
use crate::interceptors::{RTCP_TAP_SLOT, RtcpTap};
use crate::{LegId, MediaError};

/// Settings every new peer connection is built with.
#[derive(Clone, Debug)]
pub(crate) struct LegSettings {
    pub(crate) announced_address: SocketAddr,
    pub(crate) ice_disconnected_timeout: Duration,
    pub(crate) ice_failed_timeout: Duration,
    /// NACKs received on every leg, shared by their RTCP taps.
    pub(crate) nacks_received: Arc<AtomicU64>,
}

/// Negotiated header extensions of a leg: (URI, id).
pub(crate) type ExtensionIds = Vec<(String, u8)>;

/// A track a publisher leg receives, known from the offer before its first packet arrives.
pub(crate) struct PublishedTrack {
    pub(crate) track: TrackId,
    pub(crate) kind: MediaKind,
    pub(crate) receiver: RTCRtpReceiverId,
    /// SSRC of the publisher's stream, learnt from the first packet. Packets are routed by it,
    /// and keyframe requests name it.
    pub(crate) media_ssrc: Option<u32>,
    pub(crate) codecs: Vec<RTCRtpCodecParameters>,
    pub(crate) extensions: ExtensionIds,
    /// FIR is used only when the publisher did not negotiate PLI.
    pub(crate) prefers_fir: bool,
    pub(crate) fir_sequence_number: u8,
    pub(crate) started: bool,
}

pub(crate) struct Publisher {
    pub(crate) tracks: Vec<PublishedTrack>,
    /// Subscriber legs receiving this publisher's tracks.
    pub(crate) subscribers: Vec<LegKey>,
}

/// One publisher track as sent on a subscriber leg.
pub(crate) struct SubscribedTrack {
    pub(crate) subscription: SubscriptionId,
    pub(crate) track: TrackId,
    pub(crate) sender: RTCRtpSenderId,
    pub(crate) ssrc: u32,
    /// Track id string of the local track; inbound RTCP about it is tagged with it.
    pub(crate) local_track_id: String,
    pub(crate) subscribed: bool,
}

pub(crate) struct Subscriber {
    pub(crate) publisher: LegKey,
    pub(crate) tracks: Vec<SubscribedTrack>,
    /// The node's offer while the leg waits for its answer; `None` once the answer is applied,
    /// and for a leg that answered a client's offer.
    pub(crate) pending_offer: Option<PendingOffer>,
}

/// What the node offered a subscriber leg, kept until the answer is applied.
///
/// `rtc` 0.21.1 moves the signaling state to stable before it checks most of an answer, so an
/// answer it rejects leaves a peer connection that takes no other answer. The leg then gets a
/// new peer connection built from this, whose offer matches the one the subscriber holds: same
/// ICE credentials, certificate, mids, payload types and SSRCs.
pub(crate) struct PendingOffer {
    /// The leg is closed when no answer arrived by then.
    pub(crate) answer_deadline: Instant,
    pub(crate) credentials: LocalCredentials,
    /// The `a=msid` stream id of every track, so the subscriber puts them in one stream.
    pub(crate) stream_id: String,
    /// One per offered section, in offer order and in the order of the subscriber's tracks.
    pub(crate) tracks: Vec<OfferedTrack>,
}

/// One publisher track in the node's offer.
#[derive(Clone, Debug)]
pub(crate) struct OfferedTrack {
    pub(crate) kind: MediaKind,
    /// The publisher's negotiated codecs for the track, in its order.
    pub(crate) codecs: Vec<RTCRtpCodecParameters>,
    pub(crate) ssrc: u32,
    pub(crate) local_track_id: String,
    /// Set when the first offer is created.
    pub(crate) mid: String,
}

/// The ICE credentials and DTLS certificate a peer connection is built with.
#[derive(Clone)]
pub(crate) struct LocalCredentials {
    pub(crate) ufrag: String,
    pub(crate) pwd: String,
    /// `None` lets the core generate one.
    pub(crate) certificate: Option<RTCCertificate>,
}

impl LocalCredentials {
    /// Credentials with a new password and a certificate the core generates.
    pub(crate) fn new(ufrag: String) -> LocalCredentials {
        LocalCredentials {
            ufrag,
            pwd: generate_pwd(),
            certificate: None,
        }
    }

    /// Credentials with a new password and a certificate generated here, so a second peer
    /// connection can be built with the same fingerprint.
    pub(crate) fn with_certificate(ufrag: String) -> Result<LocalCredentials, MediaError> {
        let provider = rtc::crypto::default_provider()
            .map_err(|e| MediaError::Rtc(format!("loading the crypto provider: {e}")))?;
        let parameters = CertificateParams::new(vec!["switchboard".to_owned()])
            .map_err(|e| MediaError::Rtc(format!("preparing the DTLS certificate: {e}")))?;
        let certificate = RTCCertificate::generate(
            provider.crypto(),
            SignatureScheme::EcdsaP256Sha256,
            parameters,
        )
        .map_err(|e| MediaError::Rtc(format!("generating the DTLS certificate: {e}")))?;
        Ok(LocalCredentials {
            certificate: Some(certificate),
            ..LocalCredentials::new(ufrag)
        })
    }
}

pub(crate) enum Role {
    Publisher(Publisher),
    Subscriber(Subscriber),
}

pub(crate) struct Leg {
    pub(crate) id: LegId,
    pub(crate) pc: RTCPeerConnection,
    pub(crate) ufrag: String,
    /// Remote addresses bound to this leg in the demultiplexer.
    pub(crate) addresses: Vec<SocketAddr>,
    /// The peer connection reported connected: ICE, DTLS and SRTP are up.
    pub(crate) connected: bool,
    /// The ICE agent reported connected at least once.
    pub(crate) ice_connected: bool,
    /// Forwarded RTP packets written to the peer connection and not yet sent on the socket.
    pub(crate) unsent_forwards: u32,
    /// The deadline was read after a forwarded copy went out, so it includes the sender report
    /// timer that the first outbound RTP packet arms.
    pub(crate) forwarding_deadline_known: bool,
    /// Deadline last pushed to the worker's timer heap.
    pub(crate) deadline: Option<Instant>,
    /// Inbound RTCP packets that passed SRTCP authentication.
    pub(crate) rtcp_received: Arc<AtomicU64>,
    pub(crate) role: Role,
}

impl Leg {
    pub(crate) fn publisher(&self) -> Option<&Publisher> {
        match &self.role {
            Role::Publisher(publisher) => Some(publisher),
            Role::Subscriber(_) => None,
        }
    }

    pub(crate) fn publisher_mut(&mut self) -> Option<&mut Publisher> {
        match &mut self.role {
            Role::Publisher(publisher) => Some(publisher),
            Role::Subscriber(_) => None,
        }
    }

    /// Deadline for the answer to the node's offer, while the leg waits for it.
    pub(crate) fn answer_deadline(&self) -> Option<Instant> {
        match &self.role {
            Role::Subscriber(subscriber) => subscriber
                .pending_offer
                .as_ref()
                .map(|offer| offer.answer_deadline),
            Role::Publisher(_) => None,
        }
    }
}

/// Which way media flows on a leg, which decides the interceptors its peer connection gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// The peer publishes: the node receives RTP and sends only RTCP.
    Upstream,
    /// The peer subscribes: the node sends RTP and receives only RTCP.
    Downstream,
}

/// Builds an ICE-lite peer connection whose ICE ufrag is set in advance, so the demultiplexer
/// can route the first binding request to it.
pub(crate) fn build_peer_connection(
    settings: &LegSettings,
    mut engine: MediaEngine,
    direction: Direction,
    credentials: &LocalCredentials,
    dtls_role: RTCDtlsRole,
    now: Instant,
) -> Result<(RTCPeerConnection, Arc<AtomicU64>), MediaError> {
    let setting_engine = SettingEngineBuilder::new()
        .with_ice_credentials(credentials.ufrag.clone(), credentials.pwd.clone())
        .with_lite(true)
        // Passive DTLS where the offer allows it: the browser then sends its ClientHello as soon
        // as its ICE check succeeds.
        .with_answering_dtls_role(dtls_role)
        // An ICE-lite server never resolves remote candidates, and mDNS queries would leave
        // through the shared socket.
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_ice_timeouts(
            Some(settings.ice_disconnected_timeout),
            Some(settings.ice_failed_timeout),
            None,
        )
        .build();
    register_feedback_and_extensions(&mut engine)?;
    let (tap, rtcp_received) = RtcpTap::new(Arc::clone(&settings.nacks_received));
    let registry = interceptors_for(direction).with(Slot::from(RTCP_TAP_SLOT), tap);
    let configuration = match &credentials.certificate {
        Some(certificate) => {
            RTCConfigurationBuilder::new().with_certificates(vec![certificate.clone()])
        }
        None => RTCConfigurationBuilder::new(),
    };
    let pc = RTCPeerConnectionBuilder::new()
        .with_configuration(configuration.build())
        .with_media_engine(engine)
        .with_setting_engine(setting_engine)
        .with_interceptor_registry(registry)
        .build(now)
        .map_err(|e| MediaError::Rtc(format!("building peer connection: {e}")))?;
    Ok((pc, rtcp_received))
}

/// Registers the RTCP feedback and header extensions that `rtc` 0.21.1's
/// `register_default_interceptors` registers, so SDP answers keep the lines the default chain
/// gave them. These are NACK and PLI for video, the mid and stream id extensions for video, and
/// transport-wide congestion control for both kinds.
fn register_feedback_and_extensions(engine: &mut MediaEngine) -> Result<(), MediaError> {
    for parameter in ["", "pli"] {
        engine.register_feedback(
            RTCPFeedback {
                typ: TYPE_RTCP_FB_NACK.to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    configure_simulcast_extension_headers(engine)
        .map_err(|e| MediaError::Rtc(format!("registering the mid extension: {e}")))?;
    for kind in [RtpCodecKind::Video, RtpCodecKind::Audio] {
        engine.register_feedback(
            RTCPFeedback {
                typ: TYPE_RTCP_FB_TRANSPORT_CC.to_owned(),
                parameter: String::new(),
            },
            kind,
        );
        engine
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: TRANSPORT_CC_URI.to_owned(),
                },
                kind,
                None,
            )
            .map_err(|e| MediaError::Rtc(format!("registering transport-cc: {e}")))?;
    }
    Ok(())
}

/// Returns the built-in interceptors a leg needs, each only where it has packets to act on.
///
/// Every interceptor in a chain costs each outbound packet a push and a pop of the whole message,
/// and a subscriber leg's chain carries every forwarded copy. The receive-side interceptors (NACK
/// generator, TWCC feedback, receiver reports) act only on inbound RTP, which a subscriber leg
/// never gets, and the send-side ones (NACK responder, sender reports) act only on outbound RTP,
/// which a publisher leg never sends.
fn interceptors_for(direction: Direction) -> Registry {
    match direction {
        Direction::Upstream => Registry::new()
            .with(Slot::NackGenerator, NackGeneratorBuilder::new().build())
            .with(Slot::TwccReceiver, TwccReceiverBuilder::new().build())
            .with(Slot::ReceiverReport, ReceiverReportBuilder::new().build()),
        Direction::Downstream => Registry::new()
            .with(Slot::NackResponder, NackResponderBuilder::new().build())
            .with(Slot::SenderReport, SenderReportBuilder::new().build()),
    }
}

/// Parses an offer and applies it as the remote description.
pub(crate) fn apply_offer(
    pc: &mut RTCPeerConnection,
    offer: String,
    now: Instant,
) -> Result<(), MediaError> {
    let description =
        RTCSessionDescription::offer(offer).map_err(|e| MediaError::InvalidOffer(e.to_string()))?;
    pc.set_remote_description(now, description)
        .map_err(|e| MediaError::InvalidOffer(e.to_string()))
}

/// Adds the node's one host candidate to the peer connection.
fn add_host_candidate(
    pc: &mut RTCPeerConnection,
    settings: &LegSettings,
) -> Result<(), MediaError> {
    let address = settings.announced_address;
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: address.ip().to_string(),
            port: address.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .map_err(|e| MediaError::Rtc(format!("creating host candidate: {e}")))?;
    let candidate = RTCIceCandidate::from(&candidate)
        .to_json()
        .map_err(|e| MediaError::Rtc(format!("encoding host candidate: {e}")))?;
    pc.add_local_candidate(candidate)
        .map_err(|e| MediaError::Rtc(format!("adding host candidate: {e}")))
}

/// Ends candidate gathering and returns the local description's SDP text, which then carries the
/// host candidate and end-of-candidates.
fn finish_local_description(pc: &mut RTCPeerConnection) -> Result<String, MediaError> {
    // Setting the local description resets gathering, so end-of-candidates must come after it.
    pc.add_local_candidate(RTCIceCandidateInit::default())
        .map_err(|e| MediaError::Rtc(format!("ending candidates: {e}")))?;
    // Only `local_description` carries the candidates; the value `create_answer` or
    // `create_offer` returned has none.
    pc.local_description()
        .map(|description| description.sdp)
        .ok_or_else(|| MediaError::Rtc("the peer connection has no local description".to_owned()))
}

/// Creates the answer with the node's one host candidate and end-of-candidates, and returns its
/// SDP text.
pub(crate) fn complete_answer(
    pc: &mut RTCPeerConnection,
    settings: &LegSettings,
    now: Instant,
) -> Result<String, MediaError> {
    add_host_candidate(pc, settings)?;
    let answer = pc
        .create_answer(None)
        .map_err(|e| MediaError::InvalidOffer(format!("cannot answer the offer: {e}")))?;
    pc.set_local_description(now, answer)
        .map_err(|e| MediaError::InvalidOffer(format!("cannot apply the answer: {e}")))?;
    finish_local_description(pc)
}

/// Creates the offer with the node's one host candidate and end-of-candidates, and returns its
/// SDP text.
///
/// `rtc` 0.21.1 writes `a=ice-lite` into an offer as into an answer, `a=setup:actpass`, BUNDLE
/// of every section with `rtcp-mux`, and the candidates into the first section only, which
/// BUNDLE makes the one transport.
fn complete_offer(
    pc: &mut RTCPeerConnection,
    settings: &LegSettings,
    now: Instant,
) -> Result<String, MediaError> {
    add_host_candidate(pc, settings)?;
    let offer = pc
        .create_offer(None)
        .map_err(|e| MediaError::Rtc(format!("creating the offer: {e}")))?;
    pc.set_local_description(now, offer)
        .map_err(|e| MediaError::Rtc(format!("applying the offer: {e}")))?;
    finish_local_description(pc)
}

/// A peer connection built to offer a publisher's tracks.
pub(crate) struct OfferingPeerConnection {
    pub(crate) pc: RTCPeerConnection,
    pub(crate) rtcp_received: Arc<AtomicU64>,
    /// The sender of each offered track, in offer order.
    pub(crate) senders: Vec<RTCRtpSenderId>,
    pub(crate) sdp: String,
}

/// Builds a peer connection with one send-only transceiver per offered track and creates its
/// offer. The first build fills in the tracks' mids; a rebuild checks that they came out the
/// same, since the subscriber's answer names them.
pub(crate) fn build_offering_peer_connection(
    settings: &LegSettings,
    offer: &mut PendingOffer,
    now: Instant,
) -> Result<OfferingPeerConnection, MediaError> {
    let engine_codecs: Vec<(MediaKind, Vec<RTCRtpCodecParameters>)> = offer
        .tracks
        .iter()
        .map(|track| (track.kind, track.codecs.clone()))
        .collect();
    let (mut pc, rtcp_received) = build_peer_connection(
        settings,
        codecs::subscriber_media_engine(&engine_codecs)?,
        Direction::Downstream,
        &offer.credentials,
        // The node offers `actpass` and the answer picks the role, so this goes unused.
        RTCDtlsRole::Server,
        now,
    )?;

    let mut transceivers = Vec::with_capacity(offer.tracks.len());
    for track in &offer.tracks {
        let first_codec = track.codecs.first().ok_or_else(|| {
            MediaError::Rtc(format!(
                "the publisher's {:?} track has no codec",
                track.kind
            ))
        })?;
        // The sender binds its SSRC to the interceptors (NACK responder, sender reports) only
        // when the encoding names a codec, so it names the one the publisher lists first.
        let media_track = MediaStreamTrack::new(
            offer.stream_id.clone(),
            track.local_track_id.clone(),
            track.local_track_id.clone(),
            codecs::codec_kind(track.kind),
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(track.ssrc),
                    ..Default::default()
                },
                codec: first_codec.rtp_codec.clone(),
                ..Default::default()
            }],
        );
        let transceiver = pc
            .add_transceiver_from_track(
                media_track,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: Vec::new(),
                    send_encodings: Vec::new(),
                }),
            )
            .map_err(|e| MediaError::Rtc(format!("adding a {:?} transceiver: {e}", track.kind)))?;
        // A track whose encoding names a codec gets that codec alone as its preference; the
        // offer must list every codec the publisher may send.
        pc.rtp_transceiver(transceiver)
            .ok_or_else(|| MediaError::Rtc("a transceiver just added is missing".to_owned()))?
            .set_codec_preferences(track.codecs.clone())
            .map_err(|e| MediaError::Rtc(format!("setting codec preferences: {e}")))?;
        transceivers.push(transceiver);
    }

    let sdp = complete_offer(&mut pc, settings, now)?;

    let mut senders = Vec::with_capacity(transceivers.len());
    for (track, transceiver_id) in offer.tracks.iter_mut().zip(transceivers) {
        let transceiver = pc
            .rtp_transceiver(transceiver_id)
            .ok_or_else(|| MediaError::Rtc("an offered transceiver is missing".to_owned()))?;
        let mid = transceiver.mid().clone().ok_or_else(|| {
            MediaError::Rtc("the offer left a transceiver without a mid".to_owned())
        })?;
        let sender = transceiver
            .sender()
            .ok_or_else(|| MediaError::Rtc("an offered transceiver has no sender".to_owned()))?;
        if track.mid.is_empty() {
            track.mid = mid;
        } else if track.mid != mid {
            return Err(MediaError::Rtc(format!(
                "the rebuilt offer has mid {mid} where the first had {}",
                track.mid
            )));
        }
        senders.push(sender);
    }
    Ok(OfferingPeerConnection {
        pc,
        rtcp_received,
        senders,
        sdp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interceptor_names(direction: Direction) -> Vec<String> {
        interceptors_for(direction)
            .slots()
            .into_iter()
            .map(|(_, name)| name)
            .collect()
    }

    #[test]
    fn upstream_chain_has_receive_side_interceptors() {
        let names = interceptor_names(Direction::Upstream);
        assert_eq!(
            names,
            [
                "NackGeneratorInterceptor",
                "TwccReceiverInterceptor",
                "ReceiverReportInterceptor"
            ]
        );
    }

    #[test]
    fn downstream_chain_has_send_side_interceptors() {
        let names = interceptor_names(Direction::Downstream);
        assert_eq!(
            names,
            ["NackResponderInterceptor", "SenderReportInterceptor"]
        );
    }
}
