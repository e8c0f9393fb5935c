//! Publisher and subscriber peers on the async `webrtc` crate.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::interceptor::TaggedPacket;
use rtc::interceptor::{Attribute, Interceptor, Packet as ChainPacket, Slot, StreamInfo};
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use rtc::rtp_transceiver::RTCRtpTransceiverInit;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::statistics::StatsSelector;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription, Registry,
    register_default_interceptors,
};

use crate::ClientError;
use crate::media::{
    AUDIO_TICKS_PER_PACKET, OPUS_PAYLOAD_TYPE, VIDEO_TICKS_PER_FRAME, VP8_PAYLOAD_TYPE,
    opus_packet, vp8_frame,
};

/// Audio or video, as the test peers see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Audio,
    Video,
}

fn vp8_codec() -> RTCRtpCodec {
    let feedback = [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
        .into_iter()
        .map(|(typ, parameter)| RTCPFeedback {
            typ: typ.to_owned(),
            parameter: parameter.to_owned(),
        })
        .collect();
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: feedback,
    }
}

fn opus_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48_000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
        rtcp_feedback: Vec::new(),
    }
}

/// Counts of the RTCP reports a peer received.
#[derive(Default)]
struct ReportCounts {
    sender_reports: AtomicU64,
    receiver_reports: AtomicU64,
}

/// Marks inbound PLI and FIR for the application, so a publisher receives keyframe requests.
/// On the wire side of the chain it counts inbound sender and receiver reports instead, before
/// the report interceptors consume them.
#[derive(Default)]
struct KeyframeRequestMarker {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
    reports: Option<Arc<ReportCounts>>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestMarker {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let ChainPacket::Rtcp(list) = &msg.message.packet {
            if let Some(reports) = &self.reports {
                for packet in list {
                    let any = packet.as_any();
                    if any.is::<SenderReport>() {
                        reports.sender_reports.fetch_add(1, Ordering::SeqCst);
                    } else if any.is::<ReceiverReport>() {
                        reports.receiver_reports.fetch_add(1, Ordering::SeqCst);
                    }
                }
            } else if list
                .iter()
                .any(|packet| is_keyframe_request(packet.as_ref()))
            {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for KeyframeRequestMarker {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

fn is_keyframe_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// Connection and gathering state shared with the event handler.
struct PeerState {
    connection: watch::Sender<RTCPeerConnectionState>,
    gathering: watch::Sender<RTCIceGatheringState>,
}

struct Handler {
    state: Arc<PeerState>,
    received: Option<Arc<Receiving>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        self.state.gathering.send_replace(state);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.connection.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let Some(receiving) = self.received.clone() else {
            return;
        };
        let kind = match track.kind().await {
            RtpCodecKind::Audio => Kind::Audio,
            _ => Kind::Video,
        };
        if kind == Kind::Video
            && let Ok(mut video) = receiving.video_track.lock()
        {
            *video = Some(Arc::clone(&track));
        }
        tokio::spawn(async move {
            let mut seen = SeenSequenceNumbers::default();
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(packet) => {
                        let first_copy = seen.insert(packet.header.sequence_number);
                        receiving.record(kind, packet, first_copy);
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

/// A packet a subscriber received, with its header fields and arrival time.
#[derive(Clone, Debug)]
pub struct ReceivedPacket {
    pub kind: Kind,
    pub ssrc: u32,
    pub payload_type: u8,
    pub sequence_number: u16,
    pub timestamp: u32,
    pub marker: bool,
    pub payload: Bytes,
    pub at: Instant,
}

/// Counts of the packets a subscriber received, each sequence number once per track.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceivedCounts {
    pub audio: u64,
    pub video: u64,
    /// Copies of a sequence number already received (retransmissions), not in `audio` or `video`.
    pub duplicates: u64,
}

impl ReceivedCounts {
    pub fn total(&self) -> u64 {
        self.audio + self.video
    }
}

/// The sequence numbers of the last 128 packets of one track, to tell first copies from
/// retransmitted ones.
#[derive(Default)]
struct SeenSequenceNumbers {
    highest: Option<u16>,
    /// Bit `n` is set when `highest - n` was received.
    window: u128,
}

impl SeenSequenceNumbers {
    /// Records `sequence_number` and returns whether it is the first copy. A packet more than
    /// 128 behind the highest counts as a first copy, since the window no longer covers it.
    fn insert(&mut self, sequence_number: u16) -> bool {
        let Some(highest) = self.highest else {
            self.highest = Some(sequence_number);
            self.window = 1;
            return true;
        };
        let ahead = sequence_number.wrapping_sub(highest) as i16;
        if ahead > 0 {
            let shift = u32::from(ahead.unsigned_abs());
            self.window = if shift >= 128 {
                0
            } else {
                self.window << shift
            };
            self.window |= 1;
            self.highest = Some(sequence_number);
            return true;
        }
        let behind = u32::from(ahead.unsigned_abs());
        if behind >= 128 {
            return true;
        }
        let bit = 1u128 << behind;
        let first = self.window & bit == 0;
        self.window |= bit;
        first
    }
}

struct Receiving {
    /// Keep every packet for [`Subscriber::received`]; the load test only counts.
    record_packets: bool,
    packets: Mutex<Vec<ReceivedPacket>>,
    audio: AtomicU64,
    video: AtomicU64,
    duplicates: AtomicU64,
    first_video_at: OnceLock<Instant>,
    video_track: Mutex<Option<Arc<dyn TrackRemote>>>,
}

impl Receiving {
    fn new(record_packets: bool) -> Receiving {
        Receiving {
            record_packets,
            packets: Mutex::new(Vec::new()),
            audio: AtomicU64::new(0),
            video: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            first_video_at: OnceLock::new(),
            video_track: Mutex::new(None),
        }
    }

    fn record(&self, kind: Kind, packet: Packet, first_copy: bool) {
        let counter = match (first_copy, kind) {
            (false, _) => &self.duplicates,
            (true, Kind::Audio) => &self.audio,
            (true, Kind::Video) => &self.video,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if kind == Kind::Video {
            self.first_video_at.get_or_init(Instant::now);
        }
        if !self.record_packets {
            return;
        }
        let received = ReceivedPacket {
            kind,
            ssrc: packet.header.ssrc,
            payload_type: packet.header.payload_type,
            sequence_number: packet.header.sequence_number,
            timestamp: packet.header.timestamp,
            marker: packet.header.marker,
            payload: packet.payload,
            at: Instant::now(),
        };
        if let Ok(mut packets) = self.packets.lock() {
            packets.push(received);
        }
    }
}

async fn build_peer(
    bind: IpAddr,
    state: Arc<PeerState>,
    received: Option<Arc<Receiving>>,
    reports: Arc<ReportCounts>,
) -> Result<Arc<dyn PeerConnection>, ClientError> {
    let mut engine = MediaEngine::default();
    engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: vp8_codec(),
                payload_type: VP8_PAYLOAD_TYPE,
            },
            RtpCodecKind::Video,
        )
        .map_err(ClientError::webrtc("registering VP8"))?;
    engine
        .register_codec(
            RTCRtpCodecParameters {
                rtp_codec: opus_codec(),
                payload_type: OPUS_PAYLOAD_TYPE,
            },
            RtpCodecKind::Audio,
        )
        .map_err(ClientError::webrtc("registering Opus"))?;
    let registry = register_default_interceptors(Registry::new(), &mut engine)
        .map_err(ClientError::webrtc("configuring interceptors"))?
        .with(Slot::from(14_000), KeyframeRequestMarker::default())
        .with(
            Slot::from(500),
            KeyframeRequestMarker {
                reports: Some(reports),
                ..KeyframeRequestMarker::default()
            },
        );
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(engine)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Handler { state, received }))
        .with_udp_addrs(vec![SocketAddr::new(bind, 0).to_string()])
        .build()
        .await
        .map_err(ClientError::webrtc("building the peer connection"))?;
    Ok(Arc::new(pc))
}

fn new_state() -> Arc<PeerState> {
    Arc::new(PeerState {
        connection: watch::channel(RTCPeerConnectionState::New).0,
        gathering: watch::channel(RTCIceGatheringState::New).0,
    })
}

/// State that publishers and subscribers share: a peer connection, its observed state and the RTCP
/// reports it received. [`Publisher`] and [`Subscriber`] dereference to it.
pub struct Peer {
    pc: Arc<dyn PeerConnection>,
    state: Arc<PeerState>,
    reports: Arc<ReportCounts>,
}

/// Time allowed for ICE gathering on loopback.
const GATHERING_TIMEOUT: Duration = Duration::from_secs(5);

impl Peer {
    /// Creates an offer with every host candidate in it (no trickle).
    pub async fn offer(&self) -> Result<String, ClientError> {
        let offer = self
            .pc
            .create_offer(None)
            .await
            .map_err(ClientError::webrtc("creating the offer"))?;
        self.apply_local_after_gathering(offer, "applying the offer")
            .await
    }

    /// Applies a remote offer and returns the answer with every host candidate in it (no
    /// trickle).
    pub async fn answer(&self, offer: String) -> Result<String, ClientError> {
        let offer = RTCSessionDescription::offer(offer)
            .map_err(ClientError::webrtc("parsing the offer"))?;
        self.pc
            .set_remote_description(offer)
            .await
            .map_err(ClientError::webrtc("applying the offer"))?;
        let answer = self
            .pc
            .create_answer(None)
            .await
            .map_err(ClientError::webrtc("creating the answer"))?;
        self.apply_local_after_gathering(answer, "applying the answer")
            .await
    }

    /// Sets the local description, waits for ICE gathering to complete, and returns the SDP
    /// with every host candidate in it.
    async fn apply_local_after_gathering(
        &self,
        description: RTCSessionDescription,
        context: &'static str,
    ) -> Result<String, ClientError> {
        let mut gathering = self.state.gathering.subscribe();
        self.pc
            .set_local_description(description)
            .await
            .map_err(ClientError::webrtc(context))?;
        tokio::time::timeout(
            GATHERING_TIMEOUT,
            gathering.wait_for(|state| *state == RTCIceGatheringState::Complete),
        )
        .await
        .map_err(|_| ClientError::Timeout("ICE gathering"))?
        .map_err(|_| ClientError::Closed)?;
        self.pc
            .local_description()
            .await
            .map(|description| description.sdp)
            .ok_or(ClientError::Closed)
    }

    pub async fn apply_answer(&self, sdp: String) -> Result<(), ClientError> {
        let answer = RTCSessionDescription::answer(sdp)
            .map_err(ClientError::webrtc("parsing the answer"))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(ClientError::webrtc("applying the answer"))
    }

    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), ClientError> {
        let mut connection = self.state.connection.subscribe();
        tokio::time::timeout(
            timeout,
            connection.wait_for(|state| *state == RTCPeerConnectionState::Connected),
        )
        .await
        .map_err(|_| ClientError::Timeout("the connection"))?
        .map_err(|_| ClientError::Closed)?;
        Ok(())
    }

    pub fn connection_state(&self) -> RTCPeerConnectionState {
        *self.state.connection.borrow()
    }

    /// RTCP receiver reports that reached this peer.
    pub fn receiver_reports(&self) -> u64 {
        self.reports.receiver_reports.load(Ordering::SeqCst)
    }

    /// RTCP sender reports that reached this peer.
    pub fn sender_reports(&self) -> u64 {
        self.reports.sender_reports.load(Ordering::SeqCst)
    }

    /// Returns the SRTP protection profile the leg negotiated, as `rtc` statistics name it (for
    /// example `SRTP_AEAD_AES_128_GCM`), or `None` before DTLS completes.
    pub async fn srtp_cipher(&self) -> Option<String> {
        let report = self.pc.get_stats(Instant::now(), StatsSelector::None).await;
        report
            .transport()
            .map(|transport| transport.srtp_cipher.clone())
            .filter(|cipher| !cipher.is_empty())
    }
}

/// Settings of a publisher's synthetic media.
#[derive(Clone, Debug)]
pub struct SendPlan {
    pub video_packet_size: usize,
    pub packets_per_keyframe: u8,
    pub packets_per_delta_frame: u8,
    /// A keyframe every this many frames besides the first and the requested ones; 0 for none.
    pub keyframe_interval: u32,
    pub audio_packet_size: usize,
    pub send_audio: bool,
    pub send_video: bool,
    /// Time between video frames.
    pub frame_interval: Duration,
    /// Time between audio packets.
    pub audio_interval: Duration,
    /// Keep every sent packet for [`Publisher::sent`]; the load test only counts.
    pub record_sent: bool,
}

impl Default for SendPlan {
    fn default() -> Self {
        SendPlan {
            video_packet_size: 1000,
            packets_per_keyframe: 3,
            packets_per_delta_frame: 1,
            keyframe_interval: 0,
            audio_packet_size: 80,
            send_audio: true,
            send_video: true,
            frame_interval: Duration::from_millis(33),
            audio_interval: Duration::from_millis(20),
            record_sent: true,
        }
    }
}

/// A packet a publisher sent.
#[derive(Clone, Debug)]
pub struct SentPacket {
    pub kind: Kind,
    pub sequence_number: u16,
    pub starts_keyframe: bool,
    pub payload: Bytes,
    pub at: Instant,
}

impl std::ops::Deref for Publisher {
    type Target = Peer;

    fn deref(&self) -> &Peer {
        &self.peer
    }
}

impl std::ops::Deref for Subscriber {
    type Target = Peer;

    fn deref(&self) -> &Peer {
        &self.peer
    }
}

/// A peer that publishes one Opus and one VP8 track.
pub struct Publisher {
    peer: Peer,
    audio: Arc<TrackLocalStaticRTP>,
    video: Arc<TrackLocalStaticRTP>,
    pub audio_ssrc: u32,
    pub video_ssrc: u32,
    keyframe_requests: Arc<AtomicU64>,
    keyframe_requested: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<SentPacket>>>,
    sent_count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Publisher {
    /// Creates a publisher whose socket binds 127.0.0.1.
    pub async fn new() -> Result<Publisher, ClientError> {
        Publisher::bound_to(Ipv4Addr::LOCALHOST.into()).await
    }

    /// Creates a publisher whose socket binds `address` (port chosen by the system).
    pub async fn bound_to(address: IpAddr) -> Result<Publisher, ClientError> {
        Publisher::build(address, true).await
    }

    /// Creates a publisher whose socket binds 127.0.0.1 and whose offer has only an audio
    /// track.
    pub async fn audio_only() -> Result<Publisher, ClientError> {
        Publisher::build(Ipv4Addr::LOCALHOST.into(), false).await
    }

    async fn build(address: IpAddr, with_video: bool) -> Result<Publisher, ClientError> {
        let state = new_state();
        let reports = Arc::new(ReportCounts::default());
        let pc = build_peer(address, Arc::clone(&state), None, Arc::clone(&reports)).await?;
        let audio_ssrc = rand::random::<u32>();
        let video_ssrc = rand::random::<u32>() | 1;
        let stream = format!("publisher-{audio_ssrc:08x}");
        let track = |kind: RtpCodecKind, ssrc: u32, codec: RTCRtpCodec, name: &str| {
            Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
                stream.clone(),
                format!("{stream}-{name}"),
                name.to_owned(),
                kind,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec,
                    ..Default::default()
                }],
            )))
        };
        let audio = track(RtpCodecKind::Audio, audio_ssrc, opus_codec(), "audio");
        let video = track(RtpCodecKind::Video, video_ssrc, vp8_codec(), "video");
        pc.add_track(Arc::clone(&audio) as Arc<dyn TrackLocal>)
            .await
            .map_err(ClientError::webrtc("adding the audio track"))?;
        if with_video {
            pc.add_track(Arc::clone(&video) as Arc<dyn TrackLocal>)
                .await
                .map_err(ClientError::webrtc("adding the video track"))?;
        }

        let publisher = Publisher {
            peer: Peer { pc, state, reports },
            audio,
            video,
            audio_ssrc,
            video_ssrc,
            keyframe_requests: Arc::new(AtomicU64::new(0)),
            keyframe_requested: Arc::new(AtomicBool::new(false)),
            sent: Arc::new(Mutex::new(Vec::new())),
            sent_count: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            tasks: Mutex::new(Vec::new()),
        };
        publisher.watch_keyframe_requests();
        Ok(publisher)
    }

    fn watch_keyframe_requests(&self) {
        let video = Arc::clone(&self.video);
        let requests = Arc::clone(&self.keyframe_requests);
        let requested = Arc::clone(&self.keyframe_requested);
        let task = tokio::spawn(async move {
            while let Some(event) = video.poll().await {
                let TrackLocalEvent::OnRtcpPacket(packets) = event else {
                    continue;
                };
                if packets
                    .iter()
                    .any(|packet| is_keyframe_request(packet.as_ref()))
                {
                    requests.fetch_add(1, Ordering::SeqCst);
                    requested.store(true, Ordering::SeqCst);
                }
            }
        });
        self.push_task(task);
    }

    fn push_task(&self, task: JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }

    /// Keyframe requests (PLI or FIR) that reached this publisher.
    pub fn keyframe_requests(&self) -> u64 {
        self.keyframe_requests.load(Ordering::SeqCst)
    }

    /// Packets sent so far, audio and video; counted even when the plan records nothing.
    pub fn sent_count(&self) -> u64 {
        self.sent_count.load(Ordering::Relaxed)
    }

    /// Everything sent so far, in send order; empty when the plan's `record_sent` is false.
    pub fn sent(&self) -> Vec<SentPacket> {
        self.sent
            .lock()
            .map(|sent| sent.clone())
            .unwrap_or_default()
    }

    /// Starts sending video at 30 frames per second and audio at 50 packets per second until
    /// [`Publisher::stop_media`] or [`Publisher::close`]. The first frame is a keyframe, and so
    /// is the next frame after every keyframe request.
    pub fn start_media(&self, plan: SendPlan) {
        if plan.send_video {
            let video = Arc::clone(&self.video);
            let sent = Arc::clone(&self.sent);
            let sent_count = Arc::clone(&self.sent_count);
            let stop = Arc::clone(&self.stop);
            let requested = Arc::clone(&self.keyframe_requested);
            let ssrc = self.video_ssrc;
            let plan = plan.clone();
            self.push_task(tokio::spawn(async move {
                let mut ticker = tokio::time::interval(plan.frame_interval);
                let mut sequence_number: u16 = rand::random();
                let mut timestamp: u32 = rand::random();
                let mut frame = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    ticker.tick().await;
                    let keyframe = frame == 0
                        || requested.swap(false, Ordering::SeqCst)
                        || (plan.keyframe_interval > 0
                            && frame.is_multiple_of(plan.keyframe_interval));
                    let packets = if keyframe {
                        plan.packets_per_keyframe
                    } else {
                        plan.packets_per_delta_frame
                    };
                    for packet in vp8_frame(frame, keyframe, packets, plan.video_packet_size) {
                        let rtp = Packet {
                            header: Header {
                                version: 2,
                                marker: packet.last,
                                payload_type: VP8_PAYLOAD_TYPE,
                                sequence_number,
                                timestamp,
                                ssrc,
                                ..Default::default()
                            },
                            payload: packet.payload.clone(),
                        };
                        if video.write_rtp(rtp).await.is_err() {
                            return;
                        }
                        sent_count.fetch_add(1, Ordering::Relaxed);
                        if plan.record_sent
                            && let Ok(mut sent) = sent.lock()
                        {
                            sent.push(SentPacket {
                                kind: Kind::Video,
                                sequence_number,
                                starts_keyframe: keyframe && packet.index == 0,
                                payload: packet.payload,
                                at: Instant::now(),
                            });
                        }
                        sequence_number = sequence_number.wrapping_add(1);
                    }
                    frame += 1;
                    timestamp = timestamp.wrapping_add(VIDEO_TICKS_PER_FRAME);
                }
            }));
        }
        if plan.send_audio {
            let audio = Arc::clone(&self.audio);
            let sent = Arc::clone(&self.sent);
            let sent_count = Arc::clone(&self.sent_count);
            let stop = Arc::clone(&self.stop);
            let ssrc = self.audio_ssrc;
            let size = plan.audio_packet_size;
            let interval = plan.audio_interval;
            let record_sent = plan.record_sent;
            self.push_task(tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                let mut sequence_number: u16 = rand::random();
                let mut timestamp: u32 = rand::random();
                let mut number = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    ticker.tick().await;
                    let payload = opus_packet(number, size);
                    let rtp = Packet {
                        header: Header {
                            version: 2,
                            marker: number == 0,
                            payload_type: OPUS_PAYLOAD_TYPE,
                            sequence_number,
                            timestamp,
                            ssrc,
                            ..Default::default()
                        },
                        payload: payload.clone(),
                    };
                    if audio.write_rtp(rtp).await.is_err() {
                        return;
                    }
                    sent_count.fetch_add(1, Ordering::Relaxed);
                    if record_sent && let Ok(mut sent) = sent.lock() {
                        sent.push(SentPacket {
                            kind: Kind::Audio,
                            sequence_number,
                            starts_keyframe: false,
                            payload,
                            at: Instant::now(),
                        });
                    }
                    sequence_number = sequence_number.wrapping_add(1);
                    timestamp = timestamp.wrapping_add(AUDIO_TICKS_PER_PACKET);
                    number += 1;
                }
            }));
        }
    }

    pub fn stop_media(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub async fn close(&self) {
        self.stop_media();
        let _ = self.peer.pc.close().await;
        if let Ok(mut tasks) = self.tasks.lock() {
            for task in tasks.drain(..) {
                task.abort();
            }
        }
    }
}

/// Settings of a subscriber.
#[derive(Clone, Debug)]
pub struct SubscriberOptions {
    /// Address the socket binds (port chosen by the system).
    pub address: IpAddr,
    /// Offer to receive video as well as audio.
    pub receive_video: bool,
    /// Keep every packet for [`Subscriber::received`] rather than only counting them.
    pub record_packets: bool,
    /// Add receiving transceivers for an offer of the subscriber's own. A subscriber that
    /// answers a remote offer with [`Peer::answer`] gets its transceivers from that offer.
    pub add_transceivers: bool,
}

impl Default for SubscriberOptions {
    fn default() -> Self {
        SubscriberOptions {
            address: Ipv4Addr::LOCALHOST.into(),
            receive_video: true,
            record_packets: true,
            add_transceivers: true,
        }
    }
}

/// A peer that receives one audio and one video track.
pub struct Subscriber {
    peer: Peer,
    receiving: Arc<Receiving>,
}

impl Subscriber {
    /// Creates a subscriber whose socket binds 127.0.0.1.
    pub async fn new() -> Result<Subscriber, ClientError> {
        Subscriber::bound_to(Ipv4Addr::LOCALHOST.into()).await
    }

    /// Creates a subscriber whose socket binds `address` (port chosen by the system).
    pub async fn bound_to(address: IpAddr) -> Result<Subscriber, ClientError> {
        Subscriber::with_options(SubscriberOptions {
            address,
            ..SubscriberOptions::default()
        })
        .await
    }

    /// Creates a subscriber whose socket binds 127.0.0.1 and that answers a remote offer with
    /// [`Peer::answer`] rather than making its own.
    pub async fn answering() -> Result<Subscriber, ClientError> {
        Subscriber::with_options(SubscriberOptions {
            add_transceivers: false,
            ..SubscriberOptions::default()
        })
        .await
    }

    pub async fn with_options(options: SubscriberOptions) -> Result<Subscriber, ClientError> {
        let address = options.address;
        let state = new_state();
        let receiving = Arc::new(Receiving::new(options.record_packets));
        let reports = Arc::new(ReportCounts::default());
        let pc = build_peer(
            address,
            Arc::clone(&state),
            Some(Arc::clone(&receiving)),
            Arc::clone(&reports),
        )
        .await?;
        let kinds: &[RtpCodecKind] = match (options.add_transceivers, options.receive_video) {
            (false, _) => &[],
            (true, true) => &[RtpCodecKind::Audio, RtpCodecKind::Video],
            (true, false) => &[RtpCodecKind::Audio],
        };
        for &kind in kinds {
            pc.add_transceiver_from_kind(
                kind,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: Vec::new(),
                    send_encodings: Vec::new(),
                }),
            )
            .await
            .map_err(ClientError::webrtc("adding a receiving transceiver"))?;
        }
        Ok(Subscriber {
            peer: Peer { pc, state, reports },
            receiving,
        })
    }

    /// Packets received so far, counted whether or not they are recorded.
    pub fn counts(&self) -> ReceivedCounts {
        ReceivedCounts {
            audio: self.receiving.audio.load(Ordering::Relaxed),
            video: self.receiving.video.load(Ordering::Relaxed),
            duplicates: self.receiving.duplicates.load(Ordering::Relaxed),
        }
    }

    /// Arrival time of the first video packet, if one arrived.
    pub fn first_video_at(&self) -> Option<Instant> {
        self.receiving.first_video_at.get().copied()
    }

    /// Everything received so far, in arrival order; empty when the subscriber was built with
    /// `record_packets: false`.
    pub fn received(&self) -> Vec<ReceivedPacket> {
        self.receiving
            .packets
            .lock()
            .map(|packets| packets.clone())
            .unwrap_or_default()
    }

    /// Number of packets of `kind` received so far.
    pub fn count(&self, kind: Kind) -> usize {
        self.receiving
            .packets
            .lock()
            .map(|packets| packets.iter().filter(|packet| packet.kind == kind).count())
            .unwrap_or_default()
    }

    /// Sends a PLI for the received video track.
    pub async fn request_keyframe(&self) -> Result<(), ClientError> {
        let track = self
            .receiving
            .video_track
            .lock()
            .ok()
            .and_then(|track| track.clone())
            .ok_or(ClientError::Timeout("a video track to arrive"))?;
        let media_ssrc = track
            .ssrcs()
            .await
            .first()
            .copied()
            .ok_or(ClientError::Timeout("the video SSRC"))?;
        track
            .write_rtcp(vec![Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            })])
            .await
            .map_err(ClientError::webrtc("sending PLI"))
    }

    pub async fn close(&self) {
        let _ = self.peer.pc.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::SeenSequenceNumbers;

    #[test]
    fn seen_sequence_numbers_flag_copies() {
        let mut seen = SeenSequenceNumbers::default();
        assert!(seen.insert(10));
        assert!(!seen.insert(10));
        assert!(seen.insert(12));
        assert!(seen.insert(11), "a late first copy counts");
        assert!(!seen.insert(11));
    }

    #[test]
    fn seen_sequence_numbers_wrap_around() {
        let mut seen = SeenSequenceNumbers::default();
        assert!(seen.insert(65_535));
        assert!(seen.insert(0));
        assert!(!seen.insert(65_535));
        assert!(!seen.insert(0));
    }

    #[test]
    fn seen_sequence_numbers_large_jump_clears_window() {
        let mut seen = SeenSequenceNumbers::default();
        assert!(seen.insert(1));
        assert!(seen.insert(1_000));
        assert!(seen.insert(999));
        assert!(
            seen.insert(1),
            "older than the window counts as a first copy"
        );
    }
}
