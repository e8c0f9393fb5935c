use std::collections::HashMap;
use std::time::{Duration, Instant};

use rtc_rtp::Packet;

use crate::codec::{Codec, MediaKind, PayloadCodecs};
use crate::error::RouterError;
use crate::keyframe::starts_keyframe;
use crate::parse::{is_well_formed, parse_datagram, received_size};
use crate::rewrite::{SubscriberRewrite, is_valid_mid};
use crate::sequence::SequenceUnwrapper;
use crate::stats::RouterStats;
use crate::track::{
    Incoming, KeyframeRequests, Subscription, SubscriptionState, Track, drop_padding, fan_out,
};
use crate::{SubscriptionId, TrackId};

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

/// Action the transport must take for a track after a router call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteOutcome {
    /// Send a PLI or FIR to the track's publisher now.
    pub request_keyframe: bool,
}

/// The newest packet forwarded on a subscription, as the subscriber received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastForwarded {
    /// The `now` passed with the packet.
    pub at: Instant,
    pub sequence_number: u16,
    pub timestamp: u32,
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

    /// Subscribes to a track and returns whether to request a keyframe from the publisher
    /// now. Video subscriptions start forwarding at the next keyframe.
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
                // A reordered packet from before the subscription must not be its first.
                newer_than: entry.sequence.highest(),
            },
            rewrite,
            timestamp_offset: None,
            last_forwarded: None,
        });
        self.subscription_tracks.insert(subscription, track);

        if !is_video || entry.muted {
            return Ok(RouteOutcome::default());
        }
        Ok(self.rate_limited_keyframe_request(track, now))
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
        let track_highest = entry.sequence.highest();
        for subscription in &mut entry.subscriptions {
            subscription.restart(is_video, track_highest);
        }
        if !is_video || entry.subscriptions.is_empty() {
            return Ok(RouteOutcome::default());
        }
        Ok(self.rate_limited_keyframe_request(track, now))
    }

    pub fn is_muted(&self, track: TrackId) -> Option<bool> {
        self.tracks.get(&track).map(|entry| entry.muted)
    }

    /// Handles a subscriber's PLI or FIR. Requests are merged with others and rate-limited
    /// per track. Audio and muted tracks never request keyframes.
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
        Ok(self.rate_limited_keyframe_request(track, now))
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
        let mut keyframe = None;
        if packet.payload.is_empty() {
            self.stats.dropped_padding += 1;
            drop_padding(entry, extended);
        } else {
            keyframe = fan_out(entry, &incoming, &mut self.stats, out);
        }

        if entry.kind != MediaKind::Video {
            return RouteOutcome::default();
        }
        if entry.keyframe_requests.pending
            && keyframe.unwrap_or_else(|| starts_keyframe(incoming.codec, &packet.payload))
        {
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

    /// Number of published tracks the router holds.
    pub fn track_count(&self) -> usize {
        self.tracks.len()
    }

    /// Number of subscriptions the router holds, over all tracks.
    pub fn subscription_count(&self) -> usize {
        self.subscription_tracks.len()
    }

    /// Returns the subscriptions of a track in the order they were made, or none for an
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

    /// Returns a keyframe request if the rate limit allows one now, otherwise marks one as
    /// owed to the publisher.
    fn rate_limited_keyframe_request(&mut self, track: TrackId, now: Instant) -> RouteOutcome {
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
