//! Conversations and the state each one keeps: members, legs and the newest event id.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::RoomError;
use crate::event::{Event, EventType};
use crate::id::{ConversationId, LegId, MemberId, UserId};
use crate::leg::{Leg, LegCloseReason, MediaKind};
use crate::member::{Member, MemberMedia};
use crate::storage::{StoredConversation, StoredMember, Write};

/// Settings of a conversation that clients set at creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationProperties {
    /// Whether this is a video conversation. The JavaScript SDK takes its audio-only path
    /// unless this is true. The node itself forwards video either way.
    pub video: bool,
    /// Seconds an empty conversation (one without INVITED or JOINED members) is kept before
    /// [`crate::Registry::expire_conversations`] deletes it.
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

/// Changes to a conversation's own fields. `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConversationUpdate {
    /// A new unique name.
    pub name: Option<String>,
    /// A new display name, or `Some(None)` to remove it.
    pub display_name: Option<Option<String>>,
    pub video: Option<bool>,
    /// A new time to live in seconds, or `Some(None)` to keep the conversation while empty.
    pub ttl: Option<Option<u64>>,
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

/// A conversation's own fields, as lists show them: without members and legs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationSummary {
    pub id: ConversationId,
    pub name: String,
    pub display_name: Option<String>,
    pub properties: ConversationProperties,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Id of the newest event, 0 before the first one.
    pub sequence_number: u64,
}

/// A member and its creation sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MemberEntry {
    pub seq: u64,
    pub member: Member,
}

/// The state of one conversation, kept behind its own lock so that every rule about it is
/// checked and applied, and its changes stored, under one lock.
#[derive(Clone, Debug)]
pub(crate) struct ConversationRecord {
    pub seq: u64,
    pub id: ConversationId,
    pub name: String,
    pub display_name: Option<String>,
    pub properties: ConversationProperties,
    pub created: OffsetDateTime,
    pub members: Vec<MemberEntry>,
    pub legs: Vec<Leg>,
    /// Id of the newest event of the log, which lives in storage.
    pub last_event_id: u64,
    /// Events the command being applied appended, until they are committed.
    pub pending: Vec<Event>,
    /// When the conversation was deleted. A deleted record is only reachable by commands
    /// that looked it up before the deletion, and they return an error.
    pub deleted: Option<OffsetDateTime>,
    /// Since when the conversation has had no INVITED or JOINED member, for its time to live.
    pub empty_since: Option<OffsetDateTime>,
}

impl ConversationRecord {
    pub fn new(seq: u64, id: ConversationId, name: String, new: NewConversation) -> Self {
        let created = OffsetDateTime::now_utc();
        ConversationRecord {
            seq,
            id,
            name,
            display_name: new.display_name,
            properties: new.properties,
            created,
            members: Vec::new(),
            legs: Vec::new(),
            last_event_id: 0,
            pending: Vec::new(),
            deleted: None,
            empty_since: Some(created),
        }
    }

    /// Rebuilds a record from storage: no legs, so no member publishes anything.
    pub fn load(
        stored: StoredConversation,
        last_event_id: u64,
        members: Vec<StoredMember>,
    ) -> Self {
        let members: Vec<MemberEntry> = members
            .into_iter()
            .map(|stored| MemberEntry {
                seq: stored.seq,
                member: stored_form(&stored.member),
            })
            .collect();
        let mut record = ConversationRecord {
            seq: stored.seq,
            id: stored.id,
            name: stored.name,
            display_name: stored.display_name,
            properties: stored.properties,
            created: stored.created,
            members,
            legs: Vec::new(),
            last_event_id,
            pending: Vec::new(),
            deleted: stored.deleted,
            empty_since: None,
        };
        let last_left = record
            .members
            .iter()
            .filter_map(|entry| entry.member.timestamp.left)
            .max();
        let since = last_left.map_or(record.created, |left| left.max(record.created));
        record.refresh_empty_since(since);
        record
    }

    pub fn snapshot(&self) -> Conversation {
        Conversation {
            id: self.id.clone(),
            name: self.name.clone(),
            display_name: self.display_name.clone(),
            properties: self.properties,
            created: self.created,
            sequence_number: self.last_event_id,
            members: self
                .members
                .iter()
                .map(|entry| entry.member.clone())
                .collect(),
            legs: self.legs.clone(),
        }
    }

    pub fn summary(&self) -> ConversationSummary {
        ConversationSummary {
            id: self.id.clone(),
            name: self.name.clone(),
            display_name: self.display_name.clone(),
            properties: self.properties,
            created: self.created,
            sequence_number: self.last_event_id,
        }
    }

    pub fn stored(&self) -> StoredConversation {
        StoredConversation {
            seq: self.seq,
            id: self.id.clone(),
            name: self.name.clone(),
            display_name: self.display_name.clone(),
            properties: self.properties,
            created: self.created,
            deleted: self.deleted,
        }
    }

    /// Body of the `conversation:*` events: the conversation's own fields.
    pub fn body(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "display_name": self.display_name,
            "properties": self.properties,
            "timestamp": { "created": self.created.format(&Rfc3339).ok() },
        })
    }

    /// Lists the records to store for the changes made since `before`, a copy of this record
    /// taken before the command, and takes the pending events.
    pub fn take_changes(&mut self, before: &ConversationRecord) -> Vec<Write> {
        let mut writes = Vec::new();
        if self.stored() != before.stored() {
            writes.push(Write::PutConversation(self.stored()));
        }

        // Members are only ever appended, so an index names the same member before and after.
        for (index, entry) in self.members.iter().enumerate() {
            let changed = before
                .members
                .get(index)
                .is_none_or(|old| stored_form(&old.member) != stored_form(&entry.member));
            if changed {
                writes.push(Write::PutMember(StoredMember {
                    seq: entry.seq,
                    member: stored_form(&entry.member),
                }));
            }
        }

        for event in self.pending.drain(..) {
            writes.push(Write::AppendEvent {
                conversation_id: self.id.clone(),
                event,
            });
        }
        writes
    }

    /// Sets or clears the time since which the conversation has had no active member.
    pub fn refresh_empty_since(&mut self, now: OffsetDateTime) {
        let empty = !self.members.iter().any(|entry| entry.member.is_active());
        if !empty {
            self.empty_since = None;
        } else if self.empty_since.is_none() {
            self.empty_since = Some(now);
        }
    }

    /// Appends an event with the next id of this conversation. It is stored when the command
    /// commits.
    pub fn append(
        &mut self,
        kind: EventType,
        from: Option<&MemberId>,
        to: Option<&MemberId>,
        body: Value,
    ) -> Event {
        self.last_event_id += 1;
        let event = Event {
            id: self.last_event_id,
            kind,
            from: from.cloned(),
            to: to.cloned(),
            body,
            timestamp: OffsetDateTime::now_utc(),
        };
        self.pending.push(event.clone());
        event
    }

    pub fn member(&self, id: &MemberId) -> Result<&Member, RoomError> {
        self.members
            .iter()
            .map(|entry| &entry.member)
            .find(|member| member.id == *id)
            .ok_or_else(|| RoomError::MemberNotFound(id.clone()))
    }

    pub fn member_mut(&mut self, id: &MemberId) -> Result<&mut Member, RoomError> {
        self.members
            .iter_mut()
            .map(|entry| &mut entry.member)
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
            .map(|entry| &entry.member)
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
        self.append(EventType::RtcTerminate, Some(&leg.member_id), None, body);
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
            self.append(EventType::MemberMedia, Some(member_id), None, body);
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
        self.append(EventType::MemberMedia, Some(member_id), None, body);
        Ok(())
    }
}

/// Returns the member as storage keeps it, without the flags of what it publishes, because
/// those describe live legs.
pub(crate) fn stored_form(member: &Member) -> Member {
    let mut member = member.clone();
    member.media.audio_settings.enabled = false;
    member.media.video_settings.enabled = false;
    member
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
