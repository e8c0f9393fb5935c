//! One leg: a peer connection of the `rtc` core plus what the worker needs to route its media.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use router::{MediaKind, SubscriptionId, TrackId};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::rand::generate_pwd;
use rtc::interceptor::{
    NackGeneratorBuilder, NackResponderBuilder, ReceiverReportBuilder, Registry,
    SenderReportBuilder, Slot, TwccReceiverBuilder,
};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::configure_simulcast_extension_headers;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCDtlsRole, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
    TYPE_RTCP_FB_NACK, TYPE_RTCP_FB_TRANSPORT_CC,
};
use rtc::sdp::extmap::TRANSPORT_CC_URI;

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
    ufrag: &str,
    dtls_role: RTCDtlsRole,
    now: Instant,
) -> Result<(RTCPeerConnection, Arc<AtomicU64>), MediaError> {
    let setting_engine = SettingEngineBuilder::new()
        .with_ice_credentials(ufrag.to_owned(), generate_pwd())
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
    let pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
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

/// Creates the answer with the node's one host candidate and end-of-candidates, and returns its
/// SDP text.
pub(crate) fn complete_answer(
    pc: &mut RTCPeerConnection,
    settings: &LegSettings,
    now: Instant,
) -> Result<String, MediaError> {
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
        .map_err(|e| MediaError::Rtc(format!("adding host candidate: {e}")))?;

    let answer = pc
        .create_answer(None)
        .map_err(|e| MediaError::InvalidOffer(format!("cannot answer the offer: {e}")))?;
    pc.set_local_description(now, answer)
        .map_err(|e| MediaError::InvalidOffer(format!("cannot apply the answer: {e}")))?;
    // Setting the local description resets gathering, so end-of-candidates must come after it.
    pc.add_local_candidate(RTCIceCandidateInit::default())
        .map_err(|e| MediaError::Rtc(format!("ending candidates: {e}")))?;

    // Only `local_description` carries the candidates; the value `create_answer` returned has none.
    pc.local_description()
        .map(|description| description.sdp)
        .ok_or_else(|| MediaError::Rtc("the answer has no local description".to_owned()))
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
