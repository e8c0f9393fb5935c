use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc_rtp::Packet;
use rtc_rtp::header::{CC_MASK, EXTENSION_SHIFT, Header, VERSION_SHIFT};
use shared::marshal::{MarshalSize, Unmarshal};

use crate::codec::{Codec, MediaKind, PayloadCodecs};
use crate::keyframe::starts_keyframe;
use crate::rewrite::{SubscriberRewrite, extension_block_fits, is_valid_mid, rewrite_header};
use crate::sequence::{Arrival, SequenceRewriter, SequenceUnwrapper};
use crate::{SubscriptionId, TrackId};

/// RTP version 2, the only one in use (RFC 3550 section 5.1).
const RTP_VERSION: u8 = 2;
/// The CSRC count field is 4 bits wide.
const MAX_CSRC_COUNT: usize = 15;
const MAX_PAYLOAD_TYPE: u8 = 127;

#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// The minimum time between two keyframe requests sent to one publisher track.
    pub keyframe_request_interval: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            keyframe_request_interval: Duration::from_millis(250),
        }
    }
}

/// A packet rewritten for one subscription, ready for the subscriber's leg.
#[derive(Debug)]
pub struct Forward {
    pub subscription: SubscriptionId,
    pub packet: Packet,
}

/// What the transport must do for a track after a router call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteOutcome {
    /// Send a PLI or FIR to the track's publisher now.
    pub request_keyframe: bool,
}

/// Packet counters since the router was created.
///
/// A packet dropped for every subscription counts once in its `dropped_*` field. A packet
/// dropped for some subscriptions only (`dropped_waiting_for_keyframe`,
/// `dropped_unknown_payload_type`, `dropped_duplicate`, `dropped_too_old`) counts once per
/// subscription. Byte counts are RTP header plus payload, without padding, except for a
/// malformed datagram, which counts with its full length.
#[derive(Clone, Debug, Default)]
pub struct RouterStats {
    /// Every packet handed to [`Router::route`] or [`Router::route_bytes`].
    pub received_packets: u64,
    pub received_bytes: u64,
    /// One per subscription that received the packet.
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    pub dropped_muted: u64,
    pub dropped_no_subscriber: u64,
    pub dropped_waiting_for_keyframe: u64,
    pub dropped_padding: u64,
    pub dropped_duplicate: u64,
    pub dropped_too_old: u64,
    pub dropped_malformed: u64,
    pub dropped_unknown_track: u64,
    pub dropped_unknown_payload_type: u64,
    /// Keyframe requests the router asked the transport to send.
    pub keyframe_requests: u64,
    /// Keyframe requests folded into an earlier or a pending one by the rate limit.
    pub keyframe_requests_merged: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("track {0} not found")]
    UnknownTrack(TrackId),
    #[error("track {0} already exists; remove it before adding it again")]
    DuplicateTrack(TrackId),
    #[error("subscription {0} already exists; unsubscribe it before subscribing again")]
    DuplicateSubscription(SubscriptionId),
    #[error("subscription {0} not found")]
    UnknownSubscription(SubscriptionId),
    #[error(
        "invalid mid extension for subscription {subscription}: id {id} with a {length}-byte \
         value, but the id must be 1 to 255 and the value 1 to 255 bytes"
    )]
    InvalidMid {
        subscription: SubscriptionId,
        id: u8,
        length: usize,
    },
}

/// The newest packet forwarded on a subscription, as the subscriber received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastForwarded {
    /// The `now` passed with the packet.
    pub at: Instant,
    pub sequence_number: u16,
    pub timestamp: u32,
}

/// Rate limit and merging of keyframe requests toward one publisher track.
#[derive(Debug, Default)]
struct KeyframeRequests {
    last_sent: Option<Instant>,
    /// A request was suppressed by the rate limit and is still owed to the publisher.
    pending: bool,
}

impl KeyframeRequests {
    fn may_send(&self, now: Instant, interval: Duration) -> bool {
        self.last_sent
            .is_none_or(|last_sent| now.saturating_duration_since(last_sent) >= interval)
    }

    fn mark_sent(&mut self, now: Instant) {
        self.last_sent = Some(now);
        self.pending = false;
    }
}

#[derive(Debug)]
enum SubscriptionState {
    /// Nothing is forwarded until a packet the subscription can start at: a keyframe if
    /// `needs_keyframe`, otherwise any packet. That packet gets `sequence_number`.
    Waiting {
        sequence_number: u16,
        needs_keyframe: bool,
    },
    Forwarding(SequenceRewriter),
}

#[derive(Debug)]
struct Subscription {
    id: SubscriptionId,
    rewrite: SubscriberRewrite,
    state: SubscriptionState,
    /// Added to publisher timestamps; set on the first forwarded packet and kept across
    /// mute, because the publisher's clock runs on while muted.
    timestamp_offset: Option<u32>,
    /// Kept so that a later source switch (a simulcast layer change) can continue the
    /// timestamps from the wall clock.
    last_forwarded: Option<LastForwarded>,
}

impl Subscription {
    fn is_waiting_for_keyframe(&self) -> bool {
        matches!(
            self.state,
            SubscriptionState::Waiting {
                needs_keyframe: true,
                ..
            }
        )
    }

    /// Makes the subscription start over at its next usable packet, numbered right after
    /// the last one it received, so that no gap shows where packets were dropped.
    fn restart(&mut self, needs_keyframe: bool) {
        let sequence_number = match &self.state {
            SubscriptionState::Waiting {
                sequence_number, ..
            } => *sequence_number,
            SubscriptionState::Forwarding(rewriter) => rewriter.next_sequence_number(),
        };
        self.state = SubscriptionState::Waiting {
            sequence_number,
            needs_keyframe,
        };
    }
}

#[derive(Debug)]
struct Track {
    kind: MediaKind,
    codecs: PayloadCodecs,
    muted: bool,
    sequence: SequenceUnwrapper,
    keyframe_requests: KeyframeRequests,
    subscriptions: Vec<Subscription>,
}

/// One incoming packet, as the fan-out loop sees it.
struct Incoming<'a> {
    packet: &'a Packet,
    extended: u64,
    codec: Codec,
    now: Instant,
}

/// Forwards the RTP packets of published tracks to their subscriptions.
#[derive(Debug)]
pub struct Router {
    config: RouterConfig,
    tracks: HashMap<TrackId, Track>,
    subscription_tracks: HashMap<SubscriptionId, TrackId>,
    stats: RouterStats,
}

impl Router {
    pub fn new(config: RouterConfig) -> Self {
        Self {
            config,
            tracks: HashMap::new(),
            subscription_tracks: HashMap::new(),
            stats: RouterStats::default(),
        }
    }

    pub fn add_track(
        &mut self,
        track: TrackId,
        kind: MediaKind,
        codecs: PayloadCodecs,
        muted: bool,
    ) -> Result<(), RouterError> {
        if self.tracks.contains_key(&track) {
            return Err(RouterError::DuplicateTrack(track));
        }
        self.tracks.insert(
            track,
            Track {
                kind,
                codecs,
                muted,
                sequence: SequenceUnwrapper::default(),
                keyframe_requests: KeyframeRequests::default(),
                subscriptions: Vec::new(),
            },
        );
        Ok(())
    }

    /// Removes the track and returns the subscriptions it had (the transport ends those).
    pub fn remove_track(&mut self, track: TrackId) -> Result<Vec<SubscriptionId>, RouterError> {
        let removed = self
            .tracks
            .remove(&track)
            .ok_or(RouterError::UnknownTrack(track))?;
        let subscriptions: Vec<SubscriptionId> = removed
            .subscriptions
            .iter()
            .map(|subscription| subscription.id)
            .collect();
        for subscription in &subscriptions {
            self.subscription_tracks.remove(subscription);
        }
        Ok(subscriptions)
    }

    /// Subscribes to a track. Video subscriptions start forwarding at the next keyframe;
    /// returns whether to request one from the publisher now.
    pub fn subscribe(
        &mut self,
        track: TrackId,
        subscription: SubscriptionId,
        rewrite: SubscriberRewrite,
        now: Instant,
    ) -> Result<RouteOutcome, RouterError> {
        if self.subscription_tracks.contains_key(&subscription) {
            return Err(RouterError::DuplicateSubscription(subscription));
        }
        if let Some((id, value)) = &rewrite.mid
            && !is_valid_mid(*id, value)
        {
            return Err(RouterError::InvalidMid {
                subscription,
                id: *id,
                length: value.len(),
            });
        }
        let entry = self
            .tracks
            .get_mut(&track)
            .ok_or(RouterError::UnknownTrack(track))?;

        let is_video = entry.kind == MediaKind::Video;
        entry.subscriptions.push(Subscription {
            id: subscription,
            state: SubscriptionState::Waiting {
                sequence_number: rewrite.initial_sequence_number,
                needs_keyframe: is_video,
            },
            rewrite,
            timestamp_offset: None,
            last_forwarded: None,
        });
        self.subscription_tracks.insert(subscription, track);

        if !is_video || entry.muted {
            return Ok(RouteOutcome::default());
        }
        Ok(self.request_keyframe_now(track, now))
    }

    pub fn unsubscribe(&mut self, subscription: SubscriptionId) -> Result<(), RouterError> {
        let track = self
            .subscription_tracks
            .remove(&subscription)
            .ok_or(RouterError::UnknownSubscription(subscription))?;
        if let Some(entry) = self.tracks.get_mut(&track) {
            entry
                .subscriptions
                .retain(|existing| existing.id != subscription);
        }
        Ok(())
    }

    /// Mutes or unmutes a track. Mute drops every packet of the track. Unmuting restarts
    /// every subscription, video ones at a keyframe, and for video with subscriptions returns
    /// whether to request a keyframe now.
    pub fn set_muted(
        &mut self,
        track: TrackId,
        muted: bool,
        now: Instant,
    ) -> Result<RouteOutcome, RouterError> {
        let entry = self
            .tracks
            .get_mut(&track)
            .ok_or(RouterError::UnknownTrack(track))?;
        if entry.muted == muted {
            return Ok(RouteOutcome::default());
        }
        entry.muted = muted;
        if muted {
            // Nothing is forwarded while muted, so an owed keyframe would be wasted.
            entry.keyframe_requests.pending = false;
            return Ok(RouteOutcome::default());
        }

        // The packets dropped while muted must leave no gap. Restarting numbers the next
        // forwarded packet right after the last one, and a video decoder needs a keyframe
        // to resume after the frames it missed.
        let is_video = entry.kind == MediaKind::Video;
        for subscription in &mut entry.subscriptions {
            subscription.restart(is_video);
        }
        if !is_video || entry.subscriptions.is_empty() {
            return Ok(RouteOutcome::default());
        }
        Ok(self.request_keyframe_now(track, now))
    }

    pub fn is_muted(&self, track: TrackId) -> Option<bool> {
        self.tracks.get(&track).map(|entry| entry.muted)
    }

    /// Handles a subscriber's PLI or FIR. Requests are merged with others and rate-limited
    /// per track; audio and muted tracks never request keyframes.
    pub fn request_keyframe(
        &mut self,
        track: TrackId,
        now: Instant,
    ) -> Result<RouteOutcome, RouterError> {
        let entry = self
            .tracks
            .get(&track)
            .ok_or(RouterError::UnknownTrack(track))?;
        if entry.kind != MediaKind::Video || entry.muted {
            return Ok(RouteOutcome::default());
        }
        Ok(self.request_keyframe_now(track, now))
    }

    /// Routes one packet and pushes one [`Forward`] per subscription that gets it onto `out`.
    ///
    /// `out` is only appended to, so the caller can reuse it across calls. The payload
    /// `Bytes` of every forward shares the input's buffer.
    pub fn route(
        &mut self,
        track: TrackId,
        packet: &Packet,
        now: Instant,
        out: &mut Vec<Forward>,
    ) -> RouteOutcome {
        self.stats.received_packets += 1;
        self.stats.received_bytes += received_size(packet);

        let Some(entry) = self.tracks.get_mut(&track) else {
            self.stats.dropped_unknown_track += 1;
            return RouteOutcome::default();
        };
        if !is_well_formed(&packet.header) {
            self.stats.dropped_malformed += 1;
            return RouteOutcome::default();
        }
        // Muted packets still advance the unwrapper, so sequence numbers after unmute
        // extend from the right place.
        let extended = entry.sequence.extend(packet.header.sequence_number);
        if entry.muted {
            self.stats.dropped_muted += 1;
            return RouteOutcome::default();
        }
        if entry.subscriptions.is_empty() {
            self.stats.dropped_no_subscriber += 1;
            return RouteOutcome::default();
        }

        let incoming = Incoming {
            packet,
            extended,
            codec: entry
                .codecs
                .get(packet.header.payload_type)
                .unwrap_or(Codec::Other),
            now,
        };
        if packet.payload.is_empty() {
            self.stats.dropped_padding += 1;
            drop_padding(entry, extended);
        } else {
            fan_out(entry, &incoming, &mut self.stats, out);
        }

        if entry.kind != MediaKind::Video {
            return RouteOutcome::default();
        }
        if entry.keyframe_requests.pending && starts_keyframe(incoming.codec, &packet.payload) {
            // The publisher is sending a keyframe anyway, which serves the owed request.
            entry.keyframe_requests.pending = false;
        }
        let any_waiting = entry
            .subscriptions
            .iter()
            .any(Subscription::is_waiting_for_keyframe);
        let interval = self.config.keyframe_request_interval;
        if (entry.keyframe_requests.pending || any_waiting)
            && entry.keyframe_requests.may_send(now, interval)
        {
            // Retrying here recovers a request the publisher never received without a timer.
            entry.keyframe_requests.mark_sent(now);
            self.stats.keyframe_requests += 1;
            return RouteOutcome {
                request_keyframe: true,
            };
        }
        RouteOutcome::default()
    }

    /// Parses a raw (decrypted) RTP datagram and routes it.
    ///
    /// A datagram that does not parse as RTP version 2 is dropped and counted as malformed.
    pub fn route_bytes(
        &mut self,
        track: TrackId,
        datagram: &[u8],
        now: Instant,
        out: &mut Vec<Forward>,
    ) -> RouteOutcome {
        match parse_datagram(datagram) {
            Some(packet) => self.route(track, &packet, now, out),
            None => {
                self.stats.received_packets += 1;
                self.stats.received_bytes += datagram.len() as u64;
                self.stats.dropped_malformed += 1;
                RouteOutcome::default()
            }
        }
    }

    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }

    /// Returns the subscriptions of a track, in the order they were made; none for an
    /// unknown track.
    pub fn subscriptions(&self, track: TrackId) -> impl Iterator<Item = SubscriptionId> + '_ {
        self.tracks.get(&track).into_iter().flat_map(|entry| {
            entry
                .subscriptions
                .iter()
                .map(|subscription| subscription.id)
        })
    }

    /// Returns the newest packet forwarded on a subscription, or `None` if the subscription
    /// is unknown or has received nothing yet.
    pub fn last_forwarded(&self, subscription: SubscriptionId) -> Option<LastForwarded> {
        let track = self.subscription_tracks.get(&subscription)?;
        self.tracks
            .get(track)?
            .subscriptions
            .iter()
            .find(|existing| existing.id == subscription)?
            .last_forwarded
    }

    /// Sends a keyframe request now if the rate limit allows, otherwise owes one.
    fn request_keyframe_now(&mut self, track: TrackId, now: Instant) -> RouteOutcome {
        let Some(entry) = self.tracks.get_mut(&track) else {
            return RouteOutcome::default();
        };
        let requests = &mut entry.keyframe_requests;
        if requests.may_send(now, self.config.keyframe_request_interval) {
            requests.mark_sent(now);
            self.stats.keyframe_requests += 1;
            RouteOutcome {
                request_keyframe: true,
            }
        } else {
            requests.pending = true;
            self.stats.keyframe_requests_merged += 1;
            RouteOutcome::default()
        }
    }
}

/// Closes the padding packet's slot in every forwarding subscription, so it leaves no gap.
fn drop_padding(track: &mut Track, extended: u64) {
    for subscription in &mut track.subscriptions {
        if let SubscriptionState::Forwarding(rewriter) = &mut subscription.state
            && matches!(rewriter.classify(extended), Arrival::New | Arrival::Late)
        {
            rewriter.drop_packet(extended);
        }
    }
}

/// Forwards one media packet to every subscription of `track` that takes it.
fn fan_out(
    track: &mut Track,
    incoming: &Incoming<'_>,
    stats: &mut RouterStats,
    out: &mut Vec<Forward>,
) {
    let header = &incoming.packet.header;
    // Detection runs at most once per packet, and only if a subscription waits for it.
    let mut keyframe: Option<bool> = None;

    for subscription in &mut track.subscriptions {
        let payload_type = subscription.rewrite.payload_types.get(header.payload_type);
        let (sequence_number, is_newest) = match &mut subscription.state {
            SubscriptionState::Waiting {
                sequence_number,
                needs_keyframe,
            } => {
                if *needs_keyframe
                    && !*keyframe.get_or_insert_with(|| {
                        starts_keyframe(incoming.codec, &incoming.packet.payload)
                    })
                {
                    stats.dropped_waiting_for_keyframe += 1;
                    continue;
                }
                if payload_type.is_none() {
                    stats.dropped_unknown_payload_type += 1;
                    continue;
                }
                let sequence_number = *sequence_number;
                subscription.state = SubscriptionState::Forwarding(SequenceRewriter::start(
                    incoming.extended,
                    sequence_number,
                ));
                (sequence_number, true)
            }
            SubscriptionState::Forwarding(rewriter) => {
                let arrival = rewriter.classify(incoming.extended);
                match arrival {
                    Arrival::Duplicate => {
                        stats.dropped_duplicate += 1;
                        continue;
                    }
                    Arrival::TooOld => {
                        stats.dropped_too_old += 1;
                        continue;
                    }
                    Arrival::New | Arrival::Late => {}
                }
                if payload_type.is_none() {
                    stats.dropped_unknown_payload_type += 1;
                    rewriter.drop_packet(incoming.extended);
                    continue;
                }
                let Some(sequence_number) = rewriter.forward(incoming.extended) else {
                    stats.dropped_too_old += 1;
                    continue;
                };
                (sequence_number, arrival == Arrival::New)
            }
        };
        let Some(payload_type) = payload_type else {
            continue;
        };

        let timestamp_offset = *subscription.timestamp_offset.get_or_insert(
            subscription
                .rewrite
                .initial_timestamp
                .wrapping_sub(header.timestamp),
        );
        let timestamp = header.timestamp.wrapping_add(timestamp_offset);
        let (rewritten, header_size) = rewrite_header(
            header,
            &subscription.rewrite,
            payload_type,
            sequence_number,
            timestamp,
        );
        if is_newest {
            subscription.last_forwarded = Some(LastForwarded {
                at: incoming.now,
                sequence_number,
                timestamp,
            });
        }
        stats.forwarded_packets += 1;
        stats.forwarded_bytes += (header_size + incoming.packet.payload.len()) as u64;
        out.push(Forward {
            subscription: subscription.id,
            packet: Packet {
                header: rewritten,
                payload: incoming.packet.payload.clone(),
            },
        });
    }
}

/// Returns whether the router can rebuild and marshal this header.
fn is_well_formed(header: &Header) -> bool {
    header.version == RTP_VERSION
        && header.payload_type <= MAX_PAYLOAD_TYPE
        && header.csrc.len() <= MAX_CSRC_COUNT
        && extension_block_fits(header)
}

/// The RTP header and payload size of a packet, without padding.
fn received_size(packet: &Packet) -> u64 {
    (packet.header.marshal_size() + packet.payload.len()) as u64
}

/// Parses a datagram as an RTP packet, stripping padding from the payload.
///
/// Returns `None` for anything but a well-formed RTP version 2 packet. The datagram is
/// copied once, and the payload and extension values are slices of that copy.
fn parse_datagram(datagram: &[u8]) -> Option<Packet> {
    let first = *datagram.first()?;
    if first >> VERSION_SHIFT != RTP_VERSION {
        return None;
    }
    let header_length = header_length(datagram)?;
    let buffer = Bytes::copy_from_slice(datagram);
    let mut cursor = buffer.clone();
    let header = Header::unmarshal(&mut cursor).ok()?;
    // rtc-rtp 0.21.1 stops reading one-byte extensions at id 15 (as RFC 8285 section 4.2
    // asks) without skipping the rest of the block, and lets an element run past the block.
    // Taking the payload from the length fields handles the first; the second is malformed.
    let consumed = buffer.len() - cursor.len();
    if consumed > header_length || header_length > buffer.len() {
        return None;
    }
    let mut payload = buffer.slice(header_length..);
    if header.padding {
        // The last padding byte counts the padding, itself included (RFC 3550 section 5.1).
        let padding_length = usize::from(*payload.last()?);
        if padding_length == 0 {
            return None;
        }
        let length = payload.len().checked_sub(padding_length)?;
        payload.truncate(length);
    }
    Some(Packet { header, payload })
}

/// Returns the header length the CSRC count and extension length fields announce.
fn header_length(datagram: &[u8]) -> Option<usize> {
    let first = *datagram.first()?;
    let mut length = 12 + 4 * usize::from(first & CC_MASK);
    if first & (1 << EXTENSION_SHIFT) != 0 {
        let words = datagram.get(length + 2..length + 4)?;
        let words = u16::from_be_bytes(words.try_into().ok()?);
        length += 4 + 4 * usize::from(words);
    }
    Some(length)
}
