//! Subscriber legs whose offer comes from the node: the offer, the answer, and the close of a leg
//! whose answer never came.

use std::cmp::Reverse;
use std::time::Instant;

use router::TrackId;
use rtc::peer_connection::sdp::RTCSessionDescription;
use tracing::{info, warn};

use super::Worker;
use crate::answer;
use crate::demux::LegKey;
use crate::leg::{
    self, Leg, LocalCredentials, OfferedTrack, PendingOffer, Role, SubscribedTrack, Subscriber,
};
use crate::{CloseReason, LegId, MediaError};

impl Worker {
    pub(super) fn offer_subscription(
        &mut self,
        id: LegId,
        publisher_id: LegId,
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
        let published: Vec<TrackId> = publisher.tracks.iter().map(|track| track.track).collect();
        let offered: Vec<OfferedTrack> = publisher
            .tracks
            .iter()
            .enumerate()
            .map(|(index, track)| OfferedTrack {
                kind: track.kind,
                codecs: track.codecs.clone(),
                ssrc: rand::random(),
                local_track_id: format!("{publisher_id}-{index}"),
                mid: String::new(),
            })
            .collect();

        let ufrag = self.unique_ufrag();
        let mut offer = PendingOffer {
            answer_deadline: now + self.answer_timeout,
            credentials: LocalCredentials::with_certificate(ufrag.clone())?,
            stream_id: publisher_id.0.clone(),
            tracks: offered,
        };
        let built = leg::build_offering_peer_connection(&self.settings, &mut offer, now)?;
        let tracks: Vec<SubscribedTrack> = published
            .iter()
            .zip(&offer.tracks)
            .zip(built.senders)
            .map(|((track, offered), sender)| SubscribedTrack {
                subscription: 0,
                track: *track,
                sender,
                ssrc: offered.ssrc,
                local_track_id: offered.local_track_id.clone(),
                subscribed: false,
            })
            .collect();

        info!(publisher = %publisher_id, tracks = tracks.len(), "subscriber leg offered");
        let answer_deadline = offer.answer_deadline;
        let key = self.insert_leg(Leg {
            id,
            pc: built.pc,
            ufrag,
            addresses: Vec::new(),
            connected: false,
            ice_connected: false,
            unsent_forwards: 0,
            forwarding_deadline_known: false,
            deadline: None,
            rtcp_received: built.rtcp_received,
            role: Role::Subscriber(Subscriber {
                publisher: publisher_key,
                tracks,
                pending_offer: Some(offer),
            }),
        });
        if let Some(publisher) = self
            .legs
            .get_mut(&publisher_key)
            .and_then(Leg::publisher_mut)
        {
            publisher.subscribers.push(key);
        }
        self.timers.push(Reverse((answer_deadline, key)));
        self.drain(key, now);
        Ok(built.sdp)
    }

    pub(super) fn accept_answer(
        &mut self,
        id: &LegId,
        answer: String,
        now: Instant,
    ) -> Result<(), MediaError> {
        let key = *self
            .leg_keys
            .get(id)
            .ok_or_else(|| MediaError::LegNotFound(id.clone()))?;
        let leg = self
            .legs
            .get_mut(&key)
            .ok_or_else(|| MediaError::LegNotFound(id.clone()))?;
        let Role::Subscriber(Subscriber {
            pending_offer: Some(offer),
            ..
        }) = &leg.role
        else {
            return Err(MediaError::NotAwaitingAnswer(id.clone()));
        };
        let accepted = answer::check(&answer, &offer.tracks)?;
        let description = RTCSessionDescription::answer(answer)
            .map_err(|e| MediaError::InvalidAnswer(e.to_string()))?;

        if let Err(error) = leg.pc.set_remote_description(now, description) {
            self.rebuild_offer(key, now);
            return Err(MediaError::InvalidAnswer(format!(
                "the peer connection rejected the answer: {error}"
            )));
        }

        // A track is forwarded only where the answer accepted it and the core negotiated a codec
        // for its sender.
        let Role::Subscriber(subscriber) = &mut leg.role else {
            return Err(MediaError::NotAwaitingAnswer(id.clone()));
        };
        let usable: Vec<bool> = subscriber
            .tracks
            .iter()
            .zip(&accepted)
            .map(|(track, accepted)| {
                *accepted
                    && leg.pc.rtp_sender(track.sender).is_some_and(|mut sender| {
                        !sender.get_parameters().rtp_parameters.codecs.is_empty()
                    })
            })
            .collect();
        if !usable.contains(&true) {
            self.rebuild_offer(key, now);
            return Err(MediaError::NothingToSubscribe(
                "the answer negotiated no codec for any offered track".to_owned(),
            ));
        }

        let tracks = std::mem::take(&mut subscriber.tracks);
        for (mut track, usable) in tracks.into_iter().zip(usable) {
            if usable {
                track.subscription = self.next_subscription;
                self.next_subscription += 1;
                subscriber.tracks.push(track);
            }
        }
        subscriber.pending_offer = None;
        info!(tracks = subscriber.tracks.len(), "subscriber leg answered");
        self.drain(key, now);
        Ok(())
    }

    /// Gives a leg whose peer connection failed on an answer a new peer connection with the
    /// same offer, so the subscriber's next answer can still apply. A leg that cannot get one is
    /// closed.
    fn rebuild_offer(&mut self, key: LegKey, now: Instant) {
        let Some(leg) = self.legs.get_mut(&key) else {
            return;
        };
        let Role::Subscriber(subscriber) = &mut leg.role else {
            return;
        };
        let Some(offer) = subscriber.pending_offer.as_mut() else {
            return;
        };
        match leg::build_offering_peer_connection(&self.settings, offer, now) {
            Ok(built) => {
                for (track, sender) in subscriber.tracks.iter_mut().zip(built.senders) {
                    track.sender = sender;
                }
                leg.pc = built.pc;
                leg.rtcp_received = built.rtcp_received;
                leg.deadline = None;
                info!(leg = %leg.id, "offer rebuilt after a rejected answer");
                self.drain(key, now);
            }
            Err(error) => {
                warn!(leg = %leg.id, %error, "failed to rebuild the offer; closing the leg");
                self.close_leg(key, CloseReason::ConnectionFailed);
            }
        }
    }

    /// Closes a leg whose answer did not arrive in time.
    pub(super) fn expire_offer(&mut self, key: LegKey) {
        if let Some(leg) = self.legs.get(&key) {
            info!(leg = %leg.id, timeout = ?self.answer_timeout, "no answer to the node's offer");
        }
        self.close_leg(key, CloseReason::AnswerTimeout);
    }
}
