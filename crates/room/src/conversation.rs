//! Conversations and the state each one keeps: members, legs and the event log.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::error::RoomError;
use crate::event::{Event, EventType};
use crate::id::{ConversationId, LegId, MemberId, UserId};
use crate::leg::{Leg, LegCloseReason, MediaKind};
use crate::member::{Member, MemberMedia};

/// Settings of a conversation that clients set at creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationProperties {
    /// Whether this is a video conversation. The JavaScript SDK takes its audio-only path
    /// unless this is true. The node itself forwards video either way.
    pub video: bool,
    /// Seconds an empty conversation is kept before it is deleted.
    // TODO: The node stores the TTL but does not delete empty conversations yet.
    pub ttl: Option<u64>,
}

/// The fields of a conversation to create.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewConversation {
    /// Unique name. The conversation's id is used when it is absent.
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub properties: ConversationProperties,
}

/// A copy of a conversation's state at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: ConversationId,
    pub name: String,
    pub display_name: Option<String>,
    pub properties: ConversationProperties,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Id of the newest event, 0 before the first one.
    pub sequence_number: u64,
    /// Every member, LEFT ones included, in the order they were created.
    pub members: Vec<Member>,
    /// Legs that are open, in the order they were created.
    pub legs: Vec<Leg>,
}

/// The state of one conversation, kept behind its registry entry so that every rule about it is
/// checked and applied under one lock.
#[derive(Debug)]
pub(crate) struct ConversationRecord {
    pub id: ConversationId,
    pub name: String,
    pub display_name: Option<String>,
    pub properties: ConversationProperties,
    pub created: OffsetDateTime,
    pub members: Vec<Member>,
    pub legs: Vec<Leg>,
    pub events: Vec<Event>,
}

impl ConversationRecord {
    pub fn new(id: ConversationId, name: String, new: NewConversation) -> Self {
        ConversationRecord {
            id,
            name,
            display_name: new.display_name,
            properties: new.properties,
            created: OffsetDateTime::now_utc(),
            members: Vec::new(),
            legs: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn snapshot(&self) -> Conversation {
        Conversation {
            id: self.id.clone(),
            name: self.name.clone(),
            display_name: self.display_name.clone(),
            properties: self.properties,
            created: self.created,
            sequence_number: self.sequence_number(),
            members: self.members.clone(),
            legs: self.legs.clone(),
        }
    }

    pub fn sequence_number(&self) -> u64 {
        self.events.last().map_or(0, |event| event.id)
    }

    /// Appends an event with the next id of this conversation.
    // NOTE: The log is kept in memory for the conversation's lifetime, without a cap.
    pub fn append(
        &mut self,
        kind: EventType,
        from: &MemberId,
        to: Option<&MemberId>,
        body: Value,
    ) -> Event {
        let event = Event {
            id: self.sequence_number() + 1,
            kind,
            from: from.clone(),
            to: to.cloned(),
            body,
            timestamp: OffsetDateTime::now_utc(),
        };
        self.events.push(event.clone());
        event
    }

    pub fn member(&self, id: &MemberId) -> Result<&Member, RoomError> {
        self.members
            .iter()
            .find(|member| member.id == *id)
            .ok_or_else(|| RoomError::MemberNotFound(id.clone()))
    }

    pub fn member_mut(&mut self, id: &MemberId) -> Result<&mut Member, RoomError> {
        self.members
            .iter_mut()
            .find(|member| member.id == *id)
            .ok_or_else(|| RoomError::MemberNotFound(id.clone()))
    }

    pub fn joined_member(&self, id: &MemberId) -> Result<&Member, RoomError> {
        let member = self.member(id)?;
        if !member.is_joined() {
            return Err(RoomError::MemberNotJoined {
                member: id.clone(),
                state: member.state,
            });
        }
        Ok(member)
    }

    /// Finds the user's membership that has not ended, if any. A user has at most one.
    pub fn active_member_of(&self, user: &UserId) -> Option<&Member> {
        self.members
            .iter()
            .find(|member| member.user_id == *user && member.is_active())
    }

    pub fn leg(&self, id: &LegId) -> Result<&Leg, RoomError> {
        self.legs
            .iter()
            .find(|leg| leg.id == *id)
            .ok_or_else(|| RoomError::LegNotFound(id.clone()))
    }

    /// Removes a leg and, for a publisher leg, the downstream legs that receive it, because
    /// the media worker closes those together. Appends `rtc:terminate` for each removed leg and
    /// `member:media` for a member whose media changed. Returns the removed legs, the named one
    /// first.
    pub fn remove_leg(
        &mut self,
        id: &LegId,
        reason: LegCloseReason,
    ) -> Result<Vec<Leg>, RoomError> {
        let position = self
            .legs
            .iter()
            .position(|leg| leg.id == *id)
            .ok_or_else(|| RoomError::LegNotFound(id.clone()))?;
        let leg = self.legs.remove(position);

        let mut removed = Vec::new();
        if leg.is_publisher() {
            let (downstream, kept): (Vec<Leg>, Vec<Leg>) = std::mem::take(&mut self.legs)
                .into_iter()
                .partition(|other| other.publisher() == Some(&leg.id));
            self.legs = kept;
            for subscriber in downstream {
                self.append_terminate(&subscriber, LegCloseReason::PublisherClosed);
                removed.push(subscriber);
            }
        }

        self.append_terminate(&leg, reason);
        if leg.is_publisher() {
            self.refresh_media(&leg.member_id);
        }
        removed.insert(0, leg);
        Ok(removed)
    }

    fn append_terminate(&mut self, leg: &Leg, reason: LegCloseReason) {
        let mut body = json!({ "rtc_id": leg.id, "reason": reason.as_str() });
        if let Some(publisher) = leg.publisher() {
            body["subscribe"] = json!({ "rtc_id": publisher });
        }
        self.append(EventType::RtcTerminate, &leg.member_id, None, body);
    }

    /// Recomputes which kinds the member publishes from its upstream legs and appends
    /// `member:media` when that or its mute state changed since the last computation.
    pub fn refresh_media(&mut self, member_id: &MemberId) {
        let mut published = MemberMedia::default();
        for leg in self.legs.iter().filter(|leg| leg.member_id == *member_id) {
            for kind in leg.published_kinds() {
                published.settings_mut(*kind).enabled = true;
            }
        }

        let Ok(member) = self.member_mut(member_id) else {
            return;
        };
        let before = member.media;
        for kind in MediaKind::ALL {
            member.media.settings_mut(kind).enabled = published.settings(kind).enabled;
        }
        let after = member.media;

        if before != after {
            let body = json!({ "media": after, "channel": member.channel });
            self.append(EventType::MemberMedia, member_id, None, body);
        }
    }

    /// Sets a member's mute flag for one kind and appends `member:media` if it changed.
    pub fn set_muted(
        &mut self,
        member_id: &MemberId,
        kind: MediaKind,
        muted: bool,
    ) -> Result<(), RoomError> {
        let member = self.member_mut(member_id)?;
        let settings = member.media.settings_mut(kind);
        if settings.muted == muted {
            return Ok(());
        }
        settings.muted = muted;

        let body = json!({ "media": member.media, "channel": member.channel });
        self.append(EventType::MemberMedia, member_id, None, body);
        Ok(())
    }
}

/// Body of `member:joined`, `member:invited` and `member:left`: the member as the JavaScript
/// SDK reads it, with `timestamp` an object of the states entered so far.
pub(crate) fn member_body(member: &Member) -> Value {
    let mut body = json!({
        "member_id": member.id,
        "user": { "id": member.user_id, "name": member.user_name },
        "state": member.state,
        "timestamp": member.timestamp,
        "channel": member.channel,
    });
    if let Some(inviter) = &member.invited_by {
        body["invited_by"] = json!(inviter);
    }
    body
}
