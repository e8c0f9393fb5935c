//! Commands on legs, mute state and posted events.

use dashmap::mapref::entry::Entry;
use serde_json::json;
use time::OffsetDateTime;

use super::Registry;
use crate::conversation::ConversationRecord;
use crate::error::RoomError;
use crate::event::{Event, EventType, MAX_POSTED_BODY_BYTES, NewEvent, body_size};
use crate::forwarding::ForwardingTable;
use crate::id::{ConversationId, LegId, MemberId};
use crate::leg::{Leg, LegCloseReason, LegRole, LegState, MediaKind, MuteState};

/// A new publisher leg and the mute flags its member has now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedLeg {
    pub leg: Leg,
    pub muted: MuteState,
}

/// A posted event and what it changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostedEvent {
    pub event: Event,
    pub mute: Option<MuteChange>,
}

/// A mute flag that a mute event set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MuteChange {
    pub member_id: MemberId,
    pub kind: MediaKind,
    pub muted: bool,
    /// The member's publisher legs that publish a track of this kind.
    pub publisher_legs: Vec<LegId>,
}

impl Registry {
    /// Checks that a member may publish and returns the mute flags its new leg starts with.
    /// Nothing changes: the leg is added by [`Registry::add_publisher_leg`] once the media
    /// worker accepted the offer.
    pub fn check_publish(
        &self,
        conversation_id: &ConversationId,
        member_id: &MemberId,
    ) -> Result<MuteState, RoomError> {
        self.read(conversation_id, |record| check_publish(record, member_id))
    }

    /// Adds an upstream leg that publishes `tracks`, appending `rtc:new` and `member:media`.
    /// The returned mute flags are the member's at this moment, which differ from those of
    /// [`Registry::check_publish`] if a mute event came in between.
    pub fn add_publisher_leg(
        &self,
        conversation_id: &ConversationId,
        member_id: &MemberId,
        leg_id: &LegId,
        tracks: &[MediaKind],
    ) -> Result<PublishedLeg, RoomError> {
        self.write(conversation_id, |record| {
            let muted = check_publish(record, member_id)?;
            let role = LegRole::Upstream {
                tracks: tracks.to_vec(),
            };
            let leg = self.insert_leg(record, member_id, leg_id, role)?;

            let body = json!({ "rtc_id": leg.id, "direction": "upstream", "tracks": tracks });
            record.append(EventType::RtcNew, Some(member_id), None, body);
            record.refresh_media(member_id);
            Ok(PublishedLeg { leg, muted })
        })
    }

    /// Checks that a member may receive the publisher leg `publisher`: both members are
    /// JOINED, they differ, and the leg publishes. Nothing changes.
    pub fn check_subscribe(
        &self,
        conversation_id: &ConversationId,
        member_id: &MemberId,
        publisher: &LegId,
    ) -> Result<Leg, RoomError> {
        self.read(conversation_id, |record| {
            check_subscribe(record, member_id, publisher).cloned()
        })
    }

    /// Adds a downstream leg that receives the publisher leg `publisher`, appending `rtc:new`.
    pub fn add_subscriber_leg(
        &self,
        conversation_id: &ConversationId,
        member_id: &MemberId,
        leg_id: &LegId,
        publisher: &LegId,
    ) -> Result<Leg, RoomError> {
        self.write(conversation_id, |record| {
            let publisher_member = check_subscribe(record, member_id, publisher)?
                .member_id
                .clone();
            let role = LegRole::Downstream {
                publisher: publisher.clone(),
            };
            let leg = self.insert_leg(record, member_id, leg_id, role)?;

            let body = json!({
                "rtc_id": leg.id,
                "direction": "downstream",
                "subscribe": { "rtc_id": publisher },
            });
            record.append(
                EventType::RtcNew,
                Some(member_id),
                Some(&publisher_member),
                body,
            );
            Ok(leg)
        })
    }

    pub fn leg(&self, conversation_id: &ConversationId, leg_id: &LegId) -> Result<Leg, RoomError> {
        self.read(conversation_id, |record| record.leg(leg_id).cloned())
    }

    /// Removes a leg of a conversation, as [`Registry::close_leg_anywhere`] does.
    pub fn close_leg(
        &self,
        conversation_id: &ConversationId,
        leg_id: &LegId,
        reason: LegCloseReason,
    ) -> Result<Vec<Leg>, RoomError> {
        self.write(conversation_id, |record| record.remove_leg(leg_id, reason))
    }

    /// Removes a leg, wherever it is, and for a publisher leg the downstream legs receiving
    /// it. Appends `rtc:terminate` with the reason for each, and `member:media` when a
    /// publisher leg ends. Returns the removed legs, the named one first.
    pub fn close_leg_anywhere(
        &self,
        leg_id: &LegId,
        reason: LegCloseReason,
    ) -> Result<Vec<Leg>, RoomError> {
        let conversation_id = self.conversation_of_leg(leg_id)?;
        self.close_leg(&conversation_id, leg_id, reason)
    }

    /// Finds a leg by id alone, for events that do not name its conversation.
    pub fn find_leg(&self, leg_id: &LegId) -> Result<Leg, RoomError> {
        let conversation_id = self.conversation_of_leg(leg_id)?;
        self.leg(&conversation_id, leg_id)
    }

    /// Records that ICE and DTLS are up on a leg.
    pub fn mark_leg_connected(&self, leg_id: &LegId) -> Result<Leg, RoomError> {
        let conversation_id = self.conversation_of_leg(leg_id)?;
        self.write(&conversation_id, |record| {
            let leg = record
                .legs
                .iter_mut()
                .find(|leg| leg.id == *leg_id)
                .ok_or_else(|| RoomError::LegNotFound(leg_id.clone()))?;
            leg.state = LegState::Connected;
            Ok(leg.clone())
        })
    }

    pub fn forwarding_table(
        &self,
        conversation_id: &ConversationId,
    ) -> Result<ForwardingTable, RoomError> {
        self.read(conversation_id, |record| {
            Ok(ForwardingTable::derive(record))
        })
    }

    /// Appends an event a client posted. Only `custom:<name>` and the mute types may be
    /// posted, by a JOINED member. A mute event also sets the mute flag of its target (`to`,
    /// or the sender without one), which must be JOINED, and returns the legs to mute.
    pub fn post_event(
        &self,
        conversation_id: &ConversationId,
        new: NewEvent,
    ) -> Result<PostedEvent, RoomError> {
        if !new.kind.is_postable() {
            return Err(RoomError::EventTypeNotPostable(new.kind.to_string()));
        }
        let size = body_size(&new.body);
        if size > MAX_POSTED_BODY_BYTES {
            return Err(RoomError::EventBodyTooLarge {
                size,
                limit: MAX_POSTED_BODY_BYTES,
            });
        }

        self.write(conversation_id, |record| {
            record.joined_member(&new.from)?;

            let Some((kind, muted)) = new.kind.mute() else {
                if let Some(to) = &new.to
                    && !record.member(to)?.is_active()
                {
                    return Err(RoomError::MemberAlreadyLeft(to.clone()));
                }
                let event = record.append(new.kind, Some(&new.from), new.to.as_ref(), new.body);
                return Ok(PostedEvent { event, mute: None });
            };

            let target = new.to.unwrap_or_else(|| new.from.clone());
            record.joined_member(&target)?;
            let event = record.append(new.kind, Some(&new.from), Some(&target), new.body);
            record.set_muted(&target, kind, muted)?;

            let publisher_legs = record
                .legs
                .iter()
                .filter(|leg| leg.member_id == target && leg.published_kinds().contains(&kind))
                .map(|leg| leg.id.clone())
                .collect();
            let change = MuteChange {
                member_id: target,
                kind,
                muted,
                publisher_legs,
            };
            Ok(PostedEvent {
                event,
                mute: Some(change),
            })
        })
    }

    fn conversation_of_leg(&self, leg_id: &LegId) -> Result<ConversationId, RoomError> {
        self.leg_conversations
            .get(leg_id)
            .map(|conversation| conversation.clone())
            .ok_or_else(|| RoomError::LegNotFound(leg_id.clone()))
    }

    /// Adds a leg to the conversation and the leg index. Called with the conversation locked.
    /// No code holds an index entry while it locks a conversation, so the two cannot deadlock.
    fn insert_leg(
        &self,
        record: &mut ConversationRecord,
        member_id: &MemberId,
        leg_id: &LegId,
        role: LegRole,
    ) -> Result<Leg, RoomError> {
        let Entry::Vacant(slot) = self.leg_conversations.entry(leg_id.clone()) else {
            return Err(RoomError::DuplicateLeg(leg_id.clone()));
        };
        let leg = Leg {
            id: leg_id.clone(),
            conversation_id: record.id.clone(),
            member_id: member_id.clone(),
            role,
            state: LegState::Connecting,
            created: OffsetDateTime::now_utc(),
        };
        record.legs.push(leg.clone());
        slot.insert(record.id.clone());
        Ok(leg)
    }
}

/// Maximum number of upstream legs one member may have open: a camera, a screen share and room
/// to replace either without closing it first.
pub const MAX_PUBLISHER_LEGS_PER_MEMBER: usize = 4;

fn check_publish(
    record: &ConversationRecord,
    member_id: &MemberId,
) -> Result<MuteState, RoomError> {
    let muted = record.joined_member(member_id)?.muted();
    let publishing = record
        .legs
        .iter()
        .filter(|leg| leg.member_id == *member_id && leg.is_publisher())
        .count();
    if publishing >= MAX_PUBLISHER_LEGS_PER_MEMBER {
        return Err(RoomError::TooManyPublisherLegs {
            member: member_id.clone(),
            limit: MAX_PUBLISHER_LEGS_PER_MEMBER,
        });
    }
    Ok(muted)
}

fn check_subscribe<'a>(
    record: &'a ConversationRecord,
    member_id: &MemberId,
    publisher: &LegId,
) -> Result<&'a Leg, RoomError> {
    record.joined_member(member_id)?;

    let leg = record.leg(publisher)?;
    if !leg.is_publisher() {
        return Err(RoomError::NotAPublisherLeg(publisher.clone()));
    }
    if leg.member_id == *member_id {
        return Err(RoomError::OwnPublisherLeg {
            member: member_id.clone(),
            leg: publisher.clone(),
        });
    }
    record.joined_member(&leg.member_id)?;
    if let Some(existing) = record.legs.iter().find(|candidate| {
        candidate.member_id == *member_id && candidate.publisher() == Some(publisher)
    }) {
        return Err(RoomError::AlreadySubscribed {
            member: member_id.clone(),
            publisher: publisher.clone(),
            leg: existing.id.clone(),
        });
    }
    Ok(leg)
}
