//! The media worker: one thread, one UDP socket, every leg's peer connection and the router.

mod offers;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use router::{
    ExtensionMap, Forward, MediaKind, PayloadCodecs, PayloadTypeMap, Router, RouterConfig,
    SubscriberRewrite, SubscriptionId, TrackId,
};
use rtc::ice::rand::generate_ufrag;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::rtcp::payload_feedbacks::full_intra_request::{FirEntry, FullIntraRequest};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp::Packet;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpHeaderExtensionParameters,
};
use rtc::sansio::Protocol;
use rtc::sdp::extmap::SDES_MID_URI;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info, info_span, trace, warn};

use crate::codecs::{self, FORWARDED_EXTENSIONS};
use crate::demux::{Demux, LegKey};
use crate::leg::{
    self, ExtensionIds, Leg, LegSettings, LocalCredentials, PublishedTrack, Publisher, Role,
    SubscribedTrack, Subscriber,
};
use crate::offer::{self, kind_index};
use crate::{
    CloseReason, Command, LegId, MediaConfig, MediaError, MediaEvent, MediaStats, MuteState,
    PublishAnswer,
};

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);
/// Maximum time the worker sleeps with no timer due, so a stuck timer heap cannot stall it.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Largest datagram read; larger ones are truncated by the kernel and then fail to parse.
const RECEIVE_BUFFER: usize = 2048;

pub(crate) struct Worker {
    poll: Poll,
    socket: UdpSocket,
    waker: Arc<Waker>,
    local_addr: SocketAddr,
    settings: LegSettings,
    commands: Receiver<Command>,
    events: UnboundedSender<MediaEvent>,
    router: Router,
    legs: HashMap<LegKey, Leg>,
    leg_keys: HashMap<LegId, LegKey>,
    demux: Demux,
    timers: BinaryHeap<Reverse<(Instant, LegKey)>>,
    /// Publisher leg of each router track.
    track_owners: HashMap<TrackId, LegKey>,
    /// Subscriber leg and sender of each router subscription.
    subscription_owners: HashMap<SubscriptionId, (LegKey, rtc::rtp_transceiver::RTCRtpSenderId)>,
    next_leg: LegKey,
    next_track: TrackId,
    next_subscription: SubscriptionId,
    /// Reused between packets so routing allocates no vector.
    forwards: Vec<Forward>,
    /// Subscriber legs written to since their datagrams were last sent.
    pending_flush: Vec<LegKey>,
    /// The waker fired, and the command queue may not be empty yet.
    commands_waiting: bool,
    stats: MediaStats,
    /// Time of the receive of the datagram being handled, the start of its packets' transit.
    received_at: Instant,
    packet_transit: Option<prometheus::Histogram>,
    /// Time a leg the node offered waits for its answer.
    answer_timeout: Duration,
    running: bool,
}

impl Worker {
    pub(crate) fn bind(
        config: MediaConfig,
        commands: Receiver<Command>,
        events: UnboundedSender<MediaEvent>,
    ) -> Result<Worker, MediaError> {
        let announced_address = config.announced_address.unwrap_or(config.bind);
        if announced_address.ip().is_unspecified() || announced_address.port() == 0 {
            // Port 0 is fine for the bind, and the announced address then follows the socket.
            if announced_address.ip().is_unspecified() {
                return Err(MediaError::Config(format!(
                    "the announced media address {announced_address} is unspecified: set it to the \
                     address browsers reach this node on"
                )));
            }
        }
        let socket = bind_socket(config.bind, config.socket_buffer_bytes)?;
        let local_addr = socket.local_addr().map_err(|source| MediaError::Bind {
            address: config.bind,
            source,
        })?;
        let announced_address = if announced_address.port() == 0 {
            SocketAddr::new(announced_address.ip(), local_addr.port())
        } else {
            announced_address
        };
        let poll = Poll::new().map_err(|e| MediaError::Config(format!("creating poll: {e}")))?;
        let mut socket = socket;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)
            .map_err(|e| MediaError::Config(format!("registering the media socket: {e}")))?;
        let waker = Waker::new(poll.registry(), WAKER)
            .map_err(|e| MediaError::Config(format!("creating the worker waker: {e}")))?;
        info!(%local_addr, %announced_address, "media socket bound");
        Ok(Worker {
            poll,
            socket,
            waker: Arc::new(waker),
            local_addr,
            settings: LegSettings {
                announced_address,
                ice_disconnected_timeout: config.ice_disconnected_timeout,
                ice_failed_timeout: config.ice_failed_timeout,
                nacks_received: Arc::new(AtomicU64::new(0)),
            },
            commands,
            events,
            router: Router::new(RouterConfig {
                keyframe_request_interval: config.keyframe_request_interval,
            }),
            legs: HashMap::new(),
            leg_keys: HashMap::new(),
            demux: Demux::default(),
            timers: BinaryHeap::new(),
            track_owners: HashMap::new(),
            subscription_owners: HashMap::new(),
            next_leg: 1,
            next_track: 1,
            next_subscription: 1,
            forwards: Vec::new(),
            pending_flush: Vec::new(),
            commands_waiting: false,
            stats: MediaStats::default(),
            received_at: Instant::now(),
            packet_transit: config.packet_transit,
            answer_timeout: config.answer_timeout,
            running: true,
        })
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub(crate) fn announced_address(&self) -> SocketAddr {
        self.settings.announced_address
    }

    pub(crate) fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut buffer = vec![0u8; RECEIVE_BUFFER];
        while self.running {
            let now = Instant::now();
            let sleep = if self.commands_waiting {
                Duration::ZERO
            } else {
                self.timers
                    .peek()
                    .map(|Reverse((deadline, _))| deadline.saturating_duration_since(now))
                    .unwrap_or(MAX_SLEEP)
                    .min(MAX_SLEEP)
            };
            if let Err(error) = self.poll.poll(&mut events, Some(sleep)) {
                if error.kind() == ErrorKind::Interrupted {
                    continue;
                }
                warn!(%error, "media poll failed; stopping the worker");
                break;
            }
            for event in events.iter() {
                match event.token() {
                    SOCKET => self.read_datagrams(&mut buffer),
                    WAKER => self.commands_waiting = true,
                    _ => {}
                }
            }
            // One command per turn: answering an offer takes milliseconds, and a burst of them
            // must not hold up the datagrams of every other leg.
            if self.commands_waiting {
                self.handle_next_command();
            }
            self.fire_timers(Instant::now());
        }
        self.close_all(CloseReason::Shutdown);
        info!("media worker stopped");
    }

    fn read_datagrams(&mut self, buffer: &mut [u8]) {
        let mut count = 0u32;
        loop {
            match self.socket.recv_from(buffer) {
                Ok((length, source)) => {
                    let Some(datagram) = buffer.get(..length) else {
                        continue;
                    };
                    self.handle_datagram(source, datagram, Instant::now());
                    count = count.wrapping_add(1);
                    // Timers must not starve behind a long burst of datagrams.
                    if count.is_multiple_of(64) {
                        self.fire_timers(Instant::now());
                    }
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => {
                    // ICMP errors from a vanished peer surface here on Linux; the leg's ICE
                    // consent timer is what closes it.
                    trace!(%error, "media socket receive error");
                }
            }
        }
    }

    fn handle_datagram(&mut self, source: SocketAddr, datagram: &[u8], now: Instant) {
        let Some(key) = self.demux.route(source, datagram) else {
            self.stats.unroutable_datagrams += 1;
            trace!(
                length = datagram.len(),
                "dropped a datagram of no known leg"
            );
            return;
        };

        let kind = DatagramKind::of(datagram);
        if kind == DatagramKind::Other {
            self.stats.rejected_datagrams += 1;
            trace!(
                length = datagram.len(),
                "dropped a datagram that is not WebRTC"
            );
            return;
        }

        let Some(leg) = self.legs.get_mut(&key) else {
            self.stats.unroutable_datagrams += 1;
            return;
        };
        self.received_at = now;
        let connected = leg.connected;
        let rtcp_before = leg.rtcp_received.load(Ordering::Relaxed);
        let message = TaggedBytesMut {
            now,
            transport: TransportContext {
                // The ICE agent matches this against the announced candidate, not the socket.
                local_addr: self.settings.announced_address,
                peer_addr: source,
                transport_protocol: TransportProtocol::UDP,
                ecn: None,
            },
            message: BytesMut::from(datagram),
        };
        if let Err(error) = leg.pc.handle_read(message) {
            self.stats.rejected_datagrams += 1;
            trace!(leg = %leg.id, %error, "leg rejected a datagram");
            self.drain(key, now);
            return;
        }

        let drained = self.drain(key, now);
        let rtcp_after = self
            .legs
            .get(&key)
            .map_or(rtcp_before, |leg| leg.rtcp_received.load(Ordering::Relaxed));

        // The core drops what fails its checks without an error, so silence is how a rejection
        // shows: RTP or RTCP that fails SRTP authentication or replay checks yields no packet,
        // and a binding request that fails MESSAGE-INTEGRITY gets no response.
        let silent = match kind {
            DatagramKind::Rtp => drained.rtp_packets == 0,
            DatagramKind::Rtcp => rtcp_after == rtcp_before,
            DatagramKind::Stun => is_binding_request(datagram) && drained.datagrams_sent == 0,
            _ => false,
        };
        if silent {
            self.stats.rejected_datagrams += 1;
            trace!(length = datagram.len(), ?kind, "leg dropped a datagram");
        }

        // The core answers a peer's close_notify with its own alert but reports no state change,
        // and only an authenticated alert gets that reply, so the reply marks the hang-up.
        if connected && kind == DatagramKind::Dtls && drained.alert_sent {
            self.close_leg(key, CloseReason::PeerClosed);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((deadline, key))) = self.timers.peek().copied() {
            if deadline > now {
                break;
            }
            self.timers.pop();
            let Some(leg) = self.legs.get_mut(&key) else {
                continue;
            };
            if leg.answer_deadline() == Some(deadline) {
                self.expire_offer(key);
                continue;
            }
            if leg.deadline != Some(deadline) {
                continue;
            }
            leg.deadline = None;
            if let Err(error) = leg.pc.handle_timeout(now) {
                debug!(leg = %leg.id, %error, "leg timer failed");
            }
            self.drain(key, now);
            // A deadline the core leaves in the past would spin this loop; retry it a little later.
            if let Some(leg) = self.legs.get_mut(&key)
                && leg.deadline.is_some_and(|next| next <= now)
            {
                let retry = now + Duration::from_millis(1);
                leg.deadline = Some(retry);
                self.timers.push(Reverse((retry, key)));
            }
        }
    }

    /// Runs the drain step after any input to a leg: collect its events and inbound messages,
    /// send its datagrams, then act on what was collected.
    fn drain(&mut self, key: LegKey, now: Instant) -> Drained {
        let Some(leg) = self.legs.get_mut(&key) else {
            return Drained::default();
        };
        let mut events = Vec::new();
        while let Some(event) = leg.pc.poll_event() {
            events.push(event);
        }
        let mut packets: Vec<Packet> = Vec::new();
        let mut keyframe_requests: Vec<String> = Vec::new();
        while let Some(message) = leg.pc.poll_read() {
            match message.message {
                RTCMessage::RtpPacket(_, packet) => packets.push(packet),
                // Only PLI and FIR are let through by the keyframe feedback interceptor.
                RTCMessage::RtcpPacket(track_id, _) => keyframe_requests.push(track_id),
                _ => {}
            }
        }
        let flushed = self.flush(key);

        for event in events {
            self.handle_event(key, event, now);
        }
        let rtp_packets = packets.len();
        for packet in packets {
            self.route_packet(key, &packet, now);
        }
        for track_id in keyframe_requests {
            self.handle_subscriber_keyframe_request(key, &track_id, now);
        }
        self.flush_pending();
        self.schedule(key);
        Drained {
            rtp_packets,
            ..flushed
        }
    }

    /// Sends every datagram the leg queued, binding the remote address to the leg the first
    /// time the leg's ICE agent responds to it.
    fn flush(&mut self, key: LegKey) -> Drained {
        self.flush_until(key, Until::Empty)
    }

    fn flush_until(&mut self, key: LegKey, until: Until) -> Drained {
        let mut flushed = Drained::default();
        let Some(leg) = self.legs.get_mut(&key) else {
            return flushed;
        };
        let had_forwards = leg.unsent_forwards > 0;
        let stop_after_forwards = until == Until::ForwardsSent && leg.unsent_forwards > 0;
        let mut new_addresses = Vec::new();
        while let Some(datagram) = leg.pc.poll_write() {
            flushed.datagrams_sent += 1;
            flushed.alert_sent |= datagram.message.first() == Some(&DTLS_ALERT);
            let peer = datagram.transport.peer_addr;
            if !leg.addresses.contains(&peer) {
                leg.addresses.push(peer);
                new_addresses.push(peer);
                debug!(leg = %leg.id, "leg bound to its ICE-validated address");
            }
            // The core queues a forwarded packet at once, so the RTP among this leg's datagrams
            // are the copies written since its last flush. Other RTP (NACK retransmissions) is
            // written while the leg's own input is handled, when no forward is pending.
            let forwarded =
                leg.unsent_forwards > 0 && DatagramKind::of(&datagram.message) == DatagramKind::Rtp;
            send(&self.socket, &mut self.stats, &datagram.message, peer);
            if forwarded {
                leg.unsent_forwards -= 1;
                // Observing is lock-free and allocates nothing: prometheus 0.14's
                // `HistogramCore::observe` is an atomic add to the count, a scan of the bucket
                // bounds, an atomic add to one bucket and a compare-and-swap on the sum.
                if let Some(histogram) = &self.packet_transit {
                    let transit = Instant::now().saturating_duration_since(self.received_at);
                    histogram.observe(transit.as_secs_f64());
                }
                if stop_after_forwards && leg.unsent_forwards == 0 {
                    break;
                }
            }
        }
        flushed.forwards_sent = had_forwards && leg.unsent_forwards == 0;
        // A copy the core did not queue must not be matched with a later packet's datagram.
        leg.unsent_forwards = 0;
        for peer in new_addresses {
            if let Some(previous) = self.demux.bind_address(peer, key)
                && let Some(previous_leg) = self.legs.get_mut(&previous)
            {
                previous_leg.addresses.retain(|address| *address != peer);
            }
        }
        flushed
    }

    fn flush_pending(&mut self) {
        let mut pending = std::mem::take(&mut self.pending_flush);
        pending.sort_unstable();
        pending.dedup();
        for key in pending.drain(..) {
            let flushed = self.flush_until(key, Until::ForwardsSent);
            let Some(leg) = self.legs.get_mut(&key) else {
                continue;
            };
            // Reading the deadline walks every handler of the leg. In `rtc` 0.21.1 the only
            // timer an outbound RTP packet can arm is the sender report's, on the first one,
            // so later forwards leave the deadline where it was.
            if flushed.forwards_sent {
                if leg.forwarding_deadline_known {
                    continue;
                }
                leg.forwarding_deadline_known = true;
            }
            self.schedule(key);
        }
        self.pending_flush = pending;
    }

    /// Pushes the leg's next deadline onto the timer heap if it changed.
    fn schedule(&mut self, key: LegKey) {
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        let next = leg.pc.poll_timeout();
        if next != leg.deadline {
            leg.deadline = next;
            if let Some(deadline) = next {
                self.timers.push(Reverse((deadline, key)));
            }
        }
    }

    fn handle_event(&mut self, key: LegKey, event: RTCPeerConnectionEvent, now: Instant) {
        match event {
            RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(state) => {
                let Some(leg) = self.legs.get_mut(&key) else {
                    return;
                };
                let _span = info_span!("leg", leg = %leg.id).entered();
                debug!(%state, "leg ICE state changed");
                let up = matches!(
                    state,
                    RTCIceConnectionState::Connected | RTCIceConnectionState::Completed
                );
                if up && !leg.ice_connected {
                    leg.ice_connected = true;
                    self.stats.outcomes.ice_connected += 1;
                }
            }
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                let Some(leg) = self.legs.get_mut(&key) else {
                    return;
                };
                let _span = info_span!("leg", leg = %leg.id).entered();
                info!(%state, "leg connection state changed");
                match state {
                    RTCPeerConnectionState::Connected if !leg.connected => {
                        leg.connected = true;
                        // Connected implies ICE is up, whatever order the core reported it in.
                        if !leg.ice_connected {
                            leg.ice_connected = true;
                            self.stats.outcomes.ice_connected += 1;
                        }
                        self.stats.outcomes.dtls_connected += 1;
                        let id = leg.id.clone();
                        self.activate_subscriptions(key, now);
                        self.emit(MediaEvent::LegConnected { leg: id });
                    }
                    RTCPeerConnectionState::Failed => {
                        self.close_leg(key, CloseReason::ConnectionFailed);
                    }
                    _ => {}
                }
            }
            RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                let Some(leg) = self.legs.get_mut(&key) else {
                    return;
                };
                let id = leg.id.clone();
                let Some(publisher) = leg.publisher_mut() else {
                    return;
                };
                let Some(track) = publisher
                    .tracks
                    .iter_mut()
                    .find(|track| track.receiver == init.receiver_id)
                else {
                    return;
                };
                if track.started {
                    // A second SSRC on one receiver is a simulcast layer; only the first is
                    // forwarded until layer selection exists.
                    debug!(leg = %id, ssrc = init.ssrc, "ignoring an additional SSRC of a track");
                    return;
                }
                track.started = true;
                track.media_ssrc = Some(init.ssrc);
                let kind = track.kind;
                let _span = info_span!("leg", leg = %id).entered();
                info!(?kind, ssrc = init.ssrc, "published track started");
                self.emit(MediaEvent::TrackStarted { leg: id, kind });
            }
            _ => {}
        }
    }

    /// Routes a publisher's packet by its SSRC, which the track learnt when its first packet
    /// opened it. The core's track id is no key: offers without `a=msid` give every track the
    /// same empty one.
    fn route_packet(&mut self, key: LegKey, packet: &Packet, now: Instant) {
        let Some(publisher) = self.legs.get(&key).and_then(Leg::publisher) else {
            return;
        };
        let ssrc = Some(packet.header.ssrc);
        let Some(track) = publisher
            .tracks
            .iter()
            .find(|track| track.media_ssrc == ssrc)
        else {
            return;
        };
        let track_id = track.track;

        let mut forwards = std::mem::take(&mut self.forwards);
        let outcome = self.router.route(track_id, packet, now, &mut forwards);
        for forward in forwards.drain(..) {
            let Some(&(subscriber, sender)) = self.subscription_owners.get(&forward.subscription)
            else {
                continue;
            };
            let Some(leg) = self.legs.get_mut(&subscriber) else {
                continue;
            };
            match leg.pc.rtp_sender(sender) {
                Some(mut rtp_sender) => match rtp_sender.write_rtp(now, forward.packet) {
                    Ok(()) => leg.unsent_forwards = leg.unsent_forwards.saturating_add(1),
                    Err(error) => {
                        self.stats.send_errors += 1;
                        trace!(leg = %leg.id, %error, "subscriber leg rejected a forwarded packet");
                    }
                },
                None => continue,
            }
            self.pending_flush.push(subscriber);
        }
        self.forwards = forwards;

        if outcome.request_keyframe {
            self.send_keyframe_request(track_id, now);
        }
    }

    fn handle_subscriber_keyframe_request(
        &mut self,
        key: LegKey,
        local_track_id: &str,
        now: Instant,
    ) {
        let Some(Leg {
            role: Role::Subscriber(subscriber),
            ..
        }) = self.legs.get(&key)
        else {
            return;
        };
        let Some(track) = subscriber
            .tracks
            .iter()
            .find(|track| track.local_track_id == local_track_id)
        else {
            return;
        };
        let track_id = track.track;
        self.stats.keyframe_requests_received += 1;
        match self.router.request_keyframe(track_id, now) {
            Ok(outcome) if outcome.request_keyframe => self.send_keyframe_request(track_id, now),
            Ok(_) => {}
            Err(error) => trace!(%error, "keyframe request for a track the router does not know"),
        }
    }

    /// Sends PLI (or FIR where only that was negotiated) to the publisher of `track_id`.
    fn send_keyframe_request(&mut self, track_id: TrackId, now: Instant) {
        let Some(&key) = self.track_owners.get(&track_id) else {
            return;
        };
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        let Role::Publisher(publisher) = &mut leg.role else {
            return;
        };
        let Some(track) = publisher.tracks.iter_mut().find(|t| t.track == track_id) else {
            return;
        };

        // Before the first packet the SSRC is unknown; the router retries from `route`.
        let Some(media_ssrc) = track.media_ssrc else {
            return;
        };
        let request: Box<dyn rtc::rtcp::Packet> = if track.prefers_fir {
            track.fir_sequence_number = track.fir_sequence_number.wrapping_add(1);
            Box::new(FullIntraRequest {
                sender_ssrc: 0,
                media_ssrc,
                fir: vec![FirEntry {
                    ssrc: media_ssrc,
                    sequence_number: track.fir_sequence_number,
                }],
            })
        } else {
            Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc,
            })
        };

        let receiver = track.receiver;
        let Some(mut rtp_receiver) = leg.pc.rtp_receiver(receiver) else {
            return;
        };
        if let Err(error) = rtp_receiver.write_rtcp(now, vec![request]) {
            debug!(leg = %leg.id, %error, "failed to queue a keyframe request");
            return;
        }

        self.stats.keyframe_requests_sent += 1;
        trace!(leg = %leg.id, media_ssrc, "keyframe request sent to publisher");
        self.pending_flush.push(key);
    }

    fn emit(&self, event: MediaEvent) {
        // The receiver is gone only while the node shuts down.
        let _ = self.events.send(event);
    }

    fn handle_next_command(&mut self) {
        match self.commands.try_recv() {
            Ok(command) => self.handle_command(command),
            Err(TryRecvError::Empty) => self.commands_waiting = false,
            Err(TryRecvError::Disconnected) => {
                self.commands_waiting = false;
                self.running = false;
            }
        }
    }

    fn handle_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Publish {
                leg,
                offer,
                muted,
                reply,
            } => {
                let _span = info_span!("leg", %leg).entered();
                let result = self.publish(leg, offer, muted, now);
                let _ = reply.send(result);
            }
            Command::Subscribe {
                leg,
                publisher,
                offer,
                reply,
            } => {
                let _span = info_span!("leg", %leg).entered();
                let result = self.subscribe(leg, publisher, offer, now);
                let _ = reply.send(result);
            }
            Command::OfferSubscription {
                leg,
                publisher,
                reply,
            } => {
                let _span = info_span!("leg", %leg).entered();
                let result = self.offer_subscription(leg, publisher, now);
                let _ = reply.send(result);
            }
            Command::AcceptAnswer { leg, answer, reply } => {
                let _span = info_span!("leg", %leg).entered();
                let result = self.accept_answer(&leg, answer, now);
                let _ = reply.send(result);
            }
            Command::CloseLeg { leg, reply } => {
                let result = match self.leg_keys.get(&leg) {
                    Some(&key) => {
                        self.close_leg(key, CloseReason::Requested);
                        Ok(())
                    }
                    None => Err(MediaError::LegNotFound(leg)),
                };
                let _ = reply.send(result);
            }
            Command::SetMuted {
                publisher,
                kind,
                muted,
                reply,
            } => {
                let _span = info_span!("leg", leg = %publisher).entered();
                let result = self.set_muted(&publisher, kind, muted, now);
                let _ = reply.send(result);
            }
            Command::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            Command::Shutdown => self.running = false,
        }
    }

    fn stats(&self) -> MediaStats {
        let mut stats = self.stats.clone();
        stats.router = self.router.stats().clone();
        stats.legs = self.legs.len();
        stats.publisher_legs = self
            .legs
            .values()
            .filter(|leg| matches!(leg.role, Role::Publisher(_)))
            .count();
        stats.subscriber_legs = stats.legs - stats.publisher_legs;
        stats.tracks = self.router.track_count();
        stats.subscriptions = self.router.subscription_count();
        stats.nacks_received = self.settings.nacks_received.load(Ordering::Relaxed);
        stats
    }

    fn unique_ufrag(&self) -> String {
        loop {
            let ufrag = generate_ufrag();
            if !self.demux.has_ufrag(&ufrag) {
                return ufrag;
            }
        }
    }

    fn insert_leg(&mut self, leg: Leg) -> LegKey {
        let key = self.next_leg;
        self.next_leg += 1;
        self.demux.add_ufrag(leg.ufrag.clone(), key);
        self.leg_keys.insert(leg.id.clone(), key);
        self.legs.insert(key, leg);
        key
    }

    fn publish(
        &mut self,
        id: LegId,
        offer: String,
        muted: MuteState,
        now: Instant,
    ) -> Result<PublishAnswer, MediaError> {
        if self.leg_keys.contains_key(&id) {
            return Err(MediaError::DuplicateLeg(id));
        }
        let summary = offer::inspect(&offer)?;
        summary.check_publishable()?;
        let ufrag = self.unique_ufrag();
        let (mut pc, rtcp_received) = leg::build_peer_connection(
            &self.settings,
            codecs::publisher_media_engine()?,
            leg::Direction::Upstream,
            &LocalCredentials::new(ufrag.clone()),
            summary.dtls_role,
            now,
        )?;
        leg::apply_offer(&mut pc, offer, now)?;
        let sdp = leg::complete_answer(&mut pc, &self.settings, now)?;

        let mut tracks = Vec::new();
        let mut offered_send_sections = 0usize;
        let transceivers: Vec<_> = pc.get_transceivers().collect();
        for transceiver_id in transceivers {
            let Some(transceiver) = pc.rtp_transceiver(transceiver_id) else {
                continue;
            };
            if !transceiver.direction().has_recv() {
                continue;
            }
            let Some(receiver_id) = transceiver.receiver() else {
                continue;
            };
            let Some(mut receiver) = pc.rtp_receiver(receiver_id) else {
                continue;
            };
            let Some(kind) = codecs::media_kind(receiver.track().kind()) else {
                continue;
            };
            offered_send_sections += 1;
            let parameters = receiver.get_parameters().rtp_parameters.clone();
            if parameters.codecs.is_empty() {
                continue;
            }
            tracks.push(published_track(
                kind,
                receiver_id,
                parameters.codecs,
                &parameters.header_extensions,
            ));
        }
        if tracks.is_empty() {
            return Err(if offered_send_sections == 0 {
                MediaError::NothingToPublish
            } else {
                MediaError::NoSupportedCodec(
                    "Switchboard forwards Opus audio and VP8, VP9, H264 or AV1 video".to_owned(),
                )
            });
        }

        let kinds: Vec<MediaKind> = tracks.iter().map(|track| track.kind).collect();
        let key = self.next_leg;
        for track in &mut tracks {
            track.track = self.next_track;
            self.next_track += 1;
            let mut payload_codecs = PayloadCodecs::new();
            for codec in &track.codecs {
                payload_codecs.insert(
                    codec.payload_type,
                    codecs::router_codec(&codec.rtp_codec.mime_type),
                );
            }
            let track_muted = match track.kind {
                MediaKind::Audio => muted.audio,
                MediaKind::Video => muted.video,
            };
            self.router
                .add_track(track.track, track.kind, payload_codecs, track_muted)
                .map_err(|e| MediaError::Rtc(format!("registering track: {e}")))?;
            self.track_owners.insert(track.track, key);
        }
        info!(tracks = ?kinds, "publisher leg answered");
        let inserted = self.insert_leg(Leg {
            id,
            pc,
            ufrag,
            addresses: Vec::new(),
            connected: false,
            ice_connected: false,
            unsent_forwards: 0,
            forwarding_deadline_known: false,
            deadline: None,
            rtcp_received,
            role: Role::Publisher(Publisher {
                tracks,
                subscribers: Vec::new(),
            }),
        });
        debug_assert_eq!(inserted, key);
        self.drain(key, now);
        Ok(PublishAnswer { sdp, tracks: kinds })
    }

    fn subscribe(
        &mut self,
        id: LegId,
        publisher_id: LegId,
        offer: String,
        now: Instant,
    ) -> Result<String, MediaError> {
        if self.leg_keys.contains_key(&id) {
            return Err(MediaError::DuplicateLeg(id));
        }
        let publisher_key = *self
            .leg_keys
            .get(&publisher_id)
            .ok_or_else(|| MediaError::LegNotFound(publisher_id.clone()))?;
        let publisher = self
            .legs
            .get(&publisher_key)
            .and_then(Leg::publisher)
            .ok_or_else(|| MediaError::NotAPublisher(publisher_id.clone()))?;
        let published: Vec<(TrackId, MediaKind, Vec<_>)> = publisher
            .tracks
            .iter()
            .map(|track| (track.track, track.kind, track.codecs.clone()))
            .collect();
        let engine_codecs: Vec<_> = published
            .iter()
            .map(|(_, kind, codecs)| (*kind, codecs.clone()))
            .collect();

        let summary = offer::inspect(&offer)?;
        let ufrag = self.unique_ufrag();
        let (mut pc, rtcp_received) = leg::build_peer_connection(
            &self.settings,
            codecs::subscriber_media_engine(&engine_codecs)?,
            leg::Direction::Downstream,
            &LocalCredentials::new(ufrag.clone()),
            summary.dtls_role,
            now,
        )?;

        // An answer cannot add m-lines, so each track needs a receiving section of its kind.
        let mut free_sections = summary.receiving;
        leg::apply_offer(&mut pc, offer, now)?;

        let mut tracks = Vec::new();
        for (index, (track_id, kind, track_codecs)) in published.iter().enumerate() {
            let free = &mut free_sections[kind_index(*kind)];
            if *free == 0 {
                continue;
            }
            *free -= 1;
            let Some(first_codec) = track_codecs.first() else {
                continue;
            };
            let ssrc = rand::random::<u32>();
            let local_track_id = format!("{publisher_id}-{index}");
            let track = MediaStreamTrack::new(
                publisher_id.0.clone(),
                local_track_id.clone(),
                local_track_id.clone(),
                codecs::codec_kind(*kind),
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(ssrc),
                        ..Default::default()
                    },
                    codec: first_codec.rtp_codec.clone(),
                    ..Default::default()
                }],
            );
            // The core refuses a track whose codec the offer's section cannot receive.
            let sender = pc.add_track(track).map_err(|e| {
                MediaError::NoSupportedCodec(format!(
                    "the offer cannot receive the publisher's {} ({e})",
                    first_codec.rtp_codec.mime_type
                ))
            })?;
            tracks.push(SubscribedTrack {
                subscription: 0,
                track: *track_id,
                sender,
                ssrc,
                local_track_id,
                subscribed: false,
            });
        }
        if tracks.is_empty() {
            return Err(MediaError::NothingToSubscribe(format!(
                "the publisher sends {:?}; the offer needs a receiving section for each kind",
                published
                    .iter()
                    .map(|(_, kind, _)| *kind)
                    .collect::<Vec<_>>()
            )));
        }
        let sdp = leg::complete_answer(&mut pc, &self.settings, now)?;

        // A track whose section negotiated none of the publisher's codecs cannot be forwarded.
        let mut usable = Vec::new();
        for mut track in tracks {
            let negotiated = pc
                .rtp_sender(track.sender)
                .map(|mut sender| !sender.get_parameters().rtp_parameters.codecs.is_empty())
                .unwrap_or(false);
            if negotiated {
                track.subscription = self.next_subscription;
                self.next_subscription += 1;
                usable.push(track);
            }
        }
        if usable.is_empty() {
            return Err(MediaError::NoSupportedCodec(
                "the offer accepts none of the codecs the publisher sends".to_owned(),
            ));
        }

        info!(publisher = %publisher_id, tracks = usable.len(), "subscriber leg answered");
        let key = self.insert_leg(Leg {
            id,
            pc,
            ufrag,
            addresses: Vec::new(),
            connected: false,
            ice_connected: false,
            unsent_forwards: 0,
            forwarding_deadline_known: false,
            deadline: None,
            rtcp_received,
            role: Role::Subscriber(Subscriber {
                publisher: publisher_key,
                tracks: usable,
                pending_offer: None,
            }),
        });
        if let Some(publisher) = self
            .legs
            .get_mut(&publisher_key)
            .and_then(Leg::publisher_mut)
        {
            publisher.subscribers.push(key);
        }
        self.drain(key, now);
        Ok(sdp)
    }

    /// Adds a connected subscriber leg's tracks to the router; until then writes would fail for
    /// want of SRTP keys.
    fn activate_subscriptions(&mut self, key: LegKey, now: Instant) {
        let Some(Leg {
            role: Role::Subscriber(subscriber),
            ..
        }) = self.legs.get(&key)
        else {
            return;
        };
        let publisher_key = subscriber.publisher;
        let Some(publisher) = self.legs.get(&publisher_key).and_then(Leg::publisher) else {
            return;
        };
        let published: HashMap<TrackId, (Vec<_>, ExtensionIds)> = publisher
            .tracks
            .iter()
            .map(|track| {
                (
                    track.track,
                    (track.codecs.clone(), track.extensions.clone()),
                )
            })
            .collect();

        let mut requests = Vec::new();
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        let Role::Subscriber(subscriber) = &mut leg.role else {
            return;
        };
        for track in &mut subscriber.tracks {
            let Some((publisher_codecs, publisher_extensions)) = published.get(&track.track) else {
                continue;
            };
            let Some(mut sender) = leg.pc.rtp_sender(track.sender) else {
                continue;
            };
            let parameters = sender.get_parameters().rtp_parameters.clone();
            let mid = leg
                .pc
                .rtp_transceiver(track.sender.into())
                .and_then(|transceiver| transceiver.mid().clone());

            let mut payload_types = PayloadTypeMap::default();
            for publisher_codec in publisher_codecs {
                if let Some(subscriber_codec) = parameters.codecs.iter().find(|candidate| {
                    codecs::codecs_match(&publisher_codec.rtp_codec, &candidate.rtp_codec)
                }) {
                    payload_types
                        .insert(publisher_codec.payload_type, subscriber_codec.payload_type);
                }
            }
            let mut extensions = ExtensionMap::default();
            for uri in FORWARDED_EXTENSIONS {
                let from = publisher_extensions
                    .iter()
                    .find(|(candidate, _)| candidate == uri)
                    .map(|(_, id)| *id);
                let to = extension_id(&parameters.header_extensions, uri);
                if let (Some(from), Some(to)) = (from, to) {
                    extensions.insert(from, to);
                }
            }
            let mid =
                extension_id(&parameters.header_extensions, SDES_MID_URI).zip(mid.map(Bytes::from));
            let rewrite = SubscriberRewrite {
                ssrc: track.ssrc,
                payload_types,
                extensions,
                mid,
                initial_sequence_number: rand::random(),
                initial_timestamp: rand::random(),
            };
            match self
                .router
                .subscribe(track.track, track.subscription, rewrite, now)
            {
                Ok(outcome) => {
                    track.subscribed = true;
                    self.subscription_owners
                        .insert(track.subscription, (key, track.sender));
                    if outcome.request_keyframe {
                        requests.push(track.track);
                    }
                }
                Err(error) => warn!(%error, "failed to subscribe a track"),
            }
        }
        for track in requests {
            self.send_keyframe_request(track, now);
        }
    }

    fn set_muted(
        &mut self,
        publisher_id: &LegId,
        kind: MediaKind,
        muted: bool,
        now: Instant,
    ) -> Result<(), MediaError> {
        let key = *self
            .leg_keys
            .get(publisher_id)
            .ok_or_else(|| MediaError::LegNotFound(publisher_id.clone()))?;
        let publisher = self
            .legs
            .get(&key)
            .and_then(Leg::publisher)
            .ok_or_else(|| MediaError::NotAPublisher(publisher_id.clone()))?;
        let tracks: Vec<TrackId> = publisher
            .tracks
            .iter()
            .filter(|track| track.kind == kind)
            .map(|track| track.track)
            .collect();
        if tracks.is_empty() {
            return Err(MediaError::NoSuchTrack(kind));
        }
        for track in tracks {
            match self.router.set_muted(track, muted, now) {
                Ok(outcome) if outcome.request_keyframe => self.send_keyframe_request(track, now),
                Ok(_) => {}
                Err(error) => warn!(%error, "failed to change mute state"),
            }
        }
        info!(?kind, muted, "publisher mute state changed");
        self.flush_pending();
        Ok(())
    }

    fn close_leg(&mut self, key: LegKey, reason: CloseReason) {
        let Some(mut leg) = self.legs.remove(&key) else {
            return;
        };
        let _span = info_span!("leg", leg = %leg.id).entered();
        if reason == CloseReason::ConnectionFailed {
            if !leg.ice_connected {
                self.stats.outcomes.ice_failed += 1;
            } else if !leg.connected {
                self.stats.outcomes.dtls_failed += 1;
            }
        }
        if let Err(error) = leg.pc.close() {
            debug!(leg = %leg.id, %error, "closing the peer connection failed");
        }
        // Close queues a DTLS close_notify; send it before the leg is dropped.
        while let Some(datagram) = leg.pc.poll_write() {
            send(
                &self.socket,
                &mut self.stats,
                &datagram.message,
                datagram.transport.peer_addr,
            );
        }
        self.demux.remove(&leg.ufrag, &leg.addresses, key);
        self.leg_keys.remove(&leg.id);

        match leg.role {
            Role::Publisher(publisher) => {
                for track in &publisher.tracks {
                    self.track_owners.remove(&track.track);
                    match self.router.remove_track(track.track) {
                        Ok(subscriptions) => {
                            for subscription in subscriptions {
                                self.subscription_owners.remove(&subscription);
                            }
                        }
                        Err(error) => debug!(leg = %leg.id, %error, "removing a track failed"),
                    }
                }
                for subscriber in publisher.subscribers {
                    self.close_leg(subscriber, CloseReason::PublisherClosed);
                }
            }
            Role::Subscriber(subscriber) => {
                for track in &subscriber.tracks {
                    self.subscription_owners.remove(&track.subscription);
                    if track.subscribed
                        && let Err(error) = self.router.unsubscribe(track.subscription)
                    {
                        debug!(leg = %leg.id, %error, "removing a subscription failed");
                    }
                }
                if let Some(publisher) = self
                    .legs
                    .get_mut(&subscriber.publisher)
                    .and_then(Leg::publisher_mut)
                {
                    publisher.subscribers.retain(|candidate| *candidate != key);
                }
            }
        }
        info!(reason = reason.as_str(), "leg closed");
        self.emit(MediaEvent::LegClosed {
            leg: leg.id,
            reason,
        });
    }

    fn close_all(&mut self, reason: CloseReason) {
        // Publishers first: closing one also closes its subscribers with the publisher reason,
        // so close subscribers up front to report the shutdown reason on every leg.
        let subscribers: Vec<LegKey> = self
            .legs
            .iter()
            .filter(|(_, leg)| matches!(leg.role, Role::Subscriber(_)))
            .map(|(key, _)| *key)
            .collect();
        for key in subscribers {
            self.close_leg(key, reason);
        }
        let rest: Vec<LegKey> = self.legs.keys().copied().collect();
        for key in rest {
            self.close_leg(key, reason);
        }
    }
}

fn send(socket: &UdpSocket, stats: &mut MediaStats, datagram: &[u8], peer: SocketAddr) {
    if let Err(error) = socket.send_to(datagram, peer) {
        // WouldBlock means the kernel's send buffer is full: the datagram is dropped, as a
        // congested link would.
        if error.kind() == ErrorKind::WouldBlock {
            stats.send_buffer_full += 1;
        }
        stats.send_errors += 1;
        trace!(%error, "media socket send failed");
    }
}

/// How far [`Worker::flush_until`] drains a leg's outbound datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Until {
    /// Until the core has nothing more to send.
    Empty,
    /// Until the forwarded copies written since the last flush are sent, or, for a leg with
    /// none, until the core has nothing more to send.
    ///
    /// Every `poll_write` of `rtc` 0.21.1 walks the whole handler pipeline and interceptor
    /// chain, so the last call, which finds nothing, repeats that walk for every leg that got a
    /// copy. The first call already moves everything pending into the output queue, and
    /// forwards add nothing but themselves, so a datagram left behind could only be one the
    /// core queued on its own. The core does that only on an input or a timeout, and both
    /// drain the leg with [`Until::Empty`].
    ForwardsSent,
}

/// First byte of a DTLS alert record.
const DTLS_ALERT: u8 = 21;

/// Outcome of one input to a leg, as seen from outside the core.
#[derive(Clone, Copy, Debug, Default)]
struct Drained {
    rtp_packets: usize,
    datagrams_sent: usize,
    /// Every forwarded copy written since the last flush went out.
    forwards_sent: bool,
    /// A DTLS alert went out: the core is closing the DTLS transport.
    alert_sent: bool,
}

/// The protocol of a datagram, by its first byte as RFC 7983 assigns the ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DatagramKind {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    Other,
}

fn is_binding_request(datagram: &[u8]) -> bool {
    datagram.get(..2) == Some(&[0x00, 0x01])
}

impl DatagramKind {
    fn of(datagram: &[u8]) -> DatagramKind {
        match datagram {
            [0..=3, ..] => DatagramKind::Stun,
            [20..=63, ..] => DatagramKind::Dtls,
            // RFC 5761 keeps RTCP packet types 192 to 223 apart from RTP payload types.
            [128..=191, 192..=223, ..] => DatagramKind::Rtcp,
            [128..=191, _, ..] => DatagramKind::Rtp,
            _ => DatagramKind::Other,
        }
    }
}

fn extension_id(extensions: &[RTCRtpHeaderExtensionParameters], uri: &str) -> Option<u8> {
    extensions
        .iter()
        .find(|extension| extension.uri == uri)
        .and_then(|extension| u8::try_from(extension.id).ok())
}

fn published_track(
    kind: MediaKind,
    receiver: rtc::rtp_transceiver::RTCRtpReceiverId,
    codecs: Vec<rtc::rtp_transceiver::rtp_sender::RTCRtpCodecParameters>,
    extensions: &[RTCRtpHeaderExtensionParameters],
) -> PublishedTrack {
    let has_feedback = |typ: &str, parameter: &str| {
        codecs.iter().any(|codec| {
            codec
                .rtp_codec
                .rtcp_feedback
                .iter()
                .any(|feedback| feedback.typ == typ && feedback.parameter == parameter)
        })
    };
    let prefers_fir = !has_feedback("nack", "pli") && has_feedback("ccm", "fir");
    PublishedTrack {
        track: 0,
        kind,
        receiver,
        media_ssrc: None,
        codecs,
        extensions: extensions
            .iter()
            .filter_map(|extension| {
                u8::try_from(extension.id)
                    .ok()
                    .map(|id| (extension.uri.clone(), id))
            })
            .collect(),
        prefers_fir,
        fir_sequence_number: 0,
        started: false,
    }
}

/// Binds the nonblocking media socket with the requested buffer sizes, and logs the sizes the
/// kernel granted, which may be smaller.
fn bind_socket(address: SocketAddr, buffer_bytes: usize) -> Result<UdpSocket, MediaError> {
    let bind_error = |source| MediaError::Bind { address, source };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(bind_error)?;
    socket
        .set_recv_buffer_size(buffer_bytes)
        .map_err(bind_error)?;
    socket
        .set_send_buffer_size(buffer_bytes)
        .map_err(bind_error)?;
    socket.set_nonblocking(true).map_err(bind_error)?;
    socket.bind(&address.into()).map_err(bind_error)?;

    // Linux caps the request at net.core.rmem_max and wmem_max and then doubles it for its own
    // accounting, so a request was granted in full when the reported size is twice as large.
    let granted_receive = socket.recv_buffer_size().unwrap_or_default();
    let granted_send = socket.send_buffer_size().unwrap_or_default();
    let full = buffer_bytes.saturating_mul(2);
    if granted_receive < full || granted_send < full {
        warn!(
            requested = buffer_bytes,
            granted_receive,
            granted_send,
            "the media socket got smaller buffers than requested: raise net.core.rmem_max and \
             net.core.wmem_max, or lower media.socket_buffer_bytes"
        );
    } else {
        info!(granted_receive, granted_send, "media socket buffers set");
    }
    Ok(UdpSocket::from_std(socket.into()))
}
