//! The registry of users and conversations, and every command that changes them.

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use serde_json::json;
use time::OffsetDateTime;

use crate::conversation::{Conversation, ConversationRecord, NewConversation, member_body};
use crate::error::RoomError;
use crate::event::{Event, EventQuery, EventType, MAX_POSTED_BODY_BYTES, NewEvent, body_size};
use crate::forwarding::ForwardingTable;
use crate::id::{ConversationId, LegId, MemberId, UserId};
use crate::leg::{Leg, LegCloseReason, LegRole, LegState, MediaKind, MuteState};
use crate::member::{Channel, Member, MemberAction, MemberMedia, MemberState, MemberTimestamps};
use crate::user::{NewUser, User, validate_name};

/// All users and conversations of a node.
///
/// Every command locks one conversation's entry for its whole check-and-apply, so the rules
/// about a conversation never see it half changed. Commands return the work left for the media
/// worker (legs to close, legs to mute), and the registry itself does no I/O. All state changes
/// go through these methods, which is where a persistent store would be written.
#[derive(Debug, Default)]
pub struct Registry {
    users: DashMap<UserId, User>,
    user_names: DashMap<String, UserId>,
    conversations: DashMap<ConversationId, ConversationRecord>,
    conversation_names: DashMap<String, ConversationId>,
    /// Conversation of every open leg, for media events that name only the leg.
    leg_conversations: DashMap<LegId, ConversationId>,
}

/// Counts of a registry's conversations and members at one moment, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    pub conversations: usize,
    pub members_invited: usize,
    pub members_joined: usize,
    /// LEFT members stay in their conversation's member list, so this count only grows.
    pub members_left: usize,
}

/// A member that left, and the legs that closed with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Departure {
    pub member: Member,
    /// The member's legs and other members' downstream legs that received its publisher legs.
    pub closed_legs: Vec<Leg>,
}

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
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a user with a name no other user has.
    pub fn create_user(&self, new: NewUser) -> Result<User, RoomError> {
        validate_name("name", &new.name)?;
        if let Some(display_name) = &new.display_name {
            validate_name("display_name", display_name)?;
        }

        let user = User {
            id: UserId::generate(),
            name: new.name,
            display_name: new.display_name,
            created: OffsetDateTime::now_utc(),
        };
        match self.user_names.entry(user.name.clone()) {
            Entry::Occupied(_) => Err(RoomError::DuplicateUserName(user.name)),
            Entry::Vacant(slot) => {
                // The user goes in before its name, so a name lookup never finds a missing user.
                self.users.insert(user.id.clone(), user.clone());
                slot.insert(user.id.clone());
                Ok(user)
            }
        }
    }

    pub fn user(&self, id: &UserId) -> Result<User, RoomError> {
        self.users
            .get(id)
            .map(|user| user.clone())
            .ok_or_else(|| RoomError::UserNotFound(id.clone()))
    }

    pub fn user_by_name(&self, name: &str) -> Result<User, RoomError> {
        let id = self
            .user_names
            .get(name)
            .map(|id| id.clone())
            .ok_or_else(|| RoomError::UserNameNotFound(name.to_owned()))?;
        self.user(&id)
    }

    /// Lists every user, oldest first.
    pub fn users(&self) -> Vec<User> {
        let mut users: Vec<User> = self.users.iter().map(|user| user.clone()).collect();
        users.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        users
    }

    /// Creates a conversation with a name no other conversation has.
    pub fn create_conversation(&self, new: NewConversation) -> Result<Conversation, RoomError> {
        if let Some(name) = &new.name {
            validate_name("name", name)?;
        }
        if let Some(display_name) = &new.display_name {
            validate_name("display_name", display_name)?;
        }

        let id = ConversationId::generate();
        let name = new.name.clone().unwrap_or_else(|| id.to_string());
        match self.conversation_names.entry(name.clone()) {
            Entry::Occupied(_) => Err(RoomError::DuplicateConversationName(name)),
            Entry::Vacant(slot) => {
                let record = ConversationRecord::new(id.clone(), name, new);
                let conversation = record.snapshot();
                self.conversations.insert(id.clone(), record);
                slot.insert(id);
                Ok(conversation)
            }
        }
    }

    pub fn conversation(&self, id: &ConversationId) -> Result<Conversation, RoomError> {
        self.read(id, |record| Ok(record.snapshot()))
    }

    /// Checks that a conversation exists, without copying it.
    pub fn check_conversation(&self, id: &ConversationId) -> Result<(), RoomError> {
        self.read(id, |_| Ok(()))
    }

    /// Adds a user to a conversation as a JOINED or INVITED member. Joining with a pending
    /// invitation accepts it: the INVITED member becomes JOINED and keeps its id.
    pub fn add_member(
        &self,
        conversation_id: &ConversationId,
        user_id: &UserId,
        action: MemberAction,
        invited_by: Option<String>,
    ) -> Result<Member, RoomError> {
        let user = self.user(user_id)?;

        self.write(conversation_id, |record| {
            if let Some(existing) = record.active_member_of(&user.id) {
                let accepts_invitation =
                    existing.state == MemberState::Invited && action == MemberAction::Join;
                if !accepts_invitation {
                    return Err(RoomError::AlreadyMember {
                        user: user.id.clone(),
                        member: existing.id.clone(),
                        state: existing.state,
                    });
                }
                let member_id = existing.id.clone();
                return join_member(record, &member_id);
            }

            let now = OffsetDateTime::now_utc();
            let (state, timestamp, invited_by) = match action {
                MemberAction::Join => (
                    MemberState::Joined,
                    MemberTimestamps {
                        joined: Some(now),
                        ..MemberTimestamps::default()
                    },
                    None,
                ),
                MemberAction::Invite => (
                    MemberState::Invited,
                    MemberTimestamps {
                        invited: Some(now),
                        ..MemberTimestamps::default()
                    },
                    invited_by,
                ),
            };
            let member = Member {
                id: MemberId::generate(),
                conversation_id: record.id.clone(),
                user_id: user.id.clone(),
                user_name: user.name.clone(),
                state,
                timestamp,
                channel: Channel::default(),
                invited_by,
                media: MemberMedia::default(),
            };
            record.members.push(member.clone());

            let kind = match state {
                MemberState::Invited => EventType::MemberInvited,
                _ => EventType::MemberJoined,
            };
            record.append(kind, &member.id, None, member_body(&member));
            Ok(member)
        })
    }

    pub fn member(
        &self,
        conversation_id: &ConversationId,
        member_id: &MemberId,
    ) -> Result<Member, RoomError> {
        self.read(conversation_id, |record| record.member(member_id).cloned())
    }

    /// Lists every member of a conversation, LEFT ones included, oldest first.
    pub fn members(&self, conversation_id: &ConversationId) -> Result<Vec<Member>, RoomError> {
        self.read(conversation_id, |record| Ok(record.members.clone()))
    }

    /// Finds the user's INVITED or JOINED member of the conversation, if it has one.
    pub fn active_member_of(
        &self,
        conversation_id: &ConversationId,
        user_id: &UserId,
    ) -> Result<Option<Member>, RoomError> {
        self.read(conversation_id, |record| {
            Ok(record.active_member_of(user_id).cloned())
        })
    }

    /// Ends a membership: closes the member's legs (and the downstream legs of others that
    /// receive its publisher legs), sets it LEFT and appends `member:left`.
    pub fn remove_member(
        &self,
        conversation_id: &ConversationId,
        member_id: &MemberId,
    ) -> Result<Departure, RoomError> {
        self.write(conversation_id, |record| {
            if !record.member(member_id)?.is_active() {
                return Err(RoomError::MemberAlreadyLeft(member_id.clone()));
            }

            let own_legs: Vec<LegId> = record
                .legs
                .iter()
                .filter(|leg| leg.member_id == *member_id)
                .map(|leg| leg.id.clone())
                .collect();
            let mut closed_legs = Vec::new();
            for leg in own_legs {
                // A downstream leg of this member may already be gone with its publisher.
                if let Ok(removed) = record.remove_leg(&leg, LegCloseReason::MemberLeft) {
                    closed_legs.extend(removed);
                }
            }
            for leg in &closed_legs {
                self.leg_conversations.remove(&leg.id);
            }

            let member = record.member_mut(member_id)?;
            member.state = MemberState::Left;
            member.timestamp.left = Some(OffsetDateTime::now_utc());
            let member = member.clone();
            record.append(EventType::MemberLeft, member_id, None, member_body(&member));

            Ok(Departure {
                member,
                closed_legs,
            })
        })
    }

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
            record.append(EventType::RtcNew, member_id, None, body);
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
            record.append(EventType::RtcNew, member_id, Some(&publisher_member), body);
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
        self.write(conversation_id, |record| {
            let removed = record.remove_leg(leg_id, reason)?;
            for leg in &removed {
                self.leg_conversations.remove(&leg.id);
            }
            Ok(removed)
        })
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
                let event = record.append(new.kind, &new.from, new.to.as_ref(), new.body);
                return Ok(PostedEvent { event, mute: None });
            };

            let target = new.to.unwrap_or_else(|| new.from.clone());
            record.joined_member(&target)?;
            let event = record.append(new.kind, &new.from, Some(&target), new.body);
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

    pub fn events(
        &self,
        conversation_id: &ConversationId,
        query: &EventQuery,
    ) -> Result<Vec<Event>, RoomError> {
        self.read(conversation_id, |record| {
            Ok(query.select(&record.events).into_iter().cloned().collect())
        })
    }

    /// Counts conversations and members by state. Each conversation is read under its own
    /// lock, so the counts of a registry that changes meanwhile may mix two moments.
    pub fn census(&self) -> Census {
        let mut census = Census::default();
        for record in self.conversations.iter() {
            census.conversations += 1;
            for member in &record.members {
                match member.state {
                    MemberState::Invited => census.members_invited += 1,
                    MemberState::Joined => census.members_joined += 1,
                    MemberState::Left => census.members_left += 1,
                }
            }
        }
        census
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

    fn read<T>(
        &self,
        id: &ConversationId,
        apply: impl FnOnce(&ConversationRecord) -> Result<T, RoomError>,
    ) -> Result<T, RoomError> {
        let record = self
            .conversations
            .get(id)
            .ok_or_else(|| RoomError::ConversationNotFound(id.clone()))?;
        apply(&record)
    }

    fn write<T>(
        &self,
        id: &ConversationId,
        apply: impl FnOnce(&mut ConversationRecord) -> Result<T, RoomError>,
    ) -> Result<T, RoomError> {
        let mut record = self
            .conversations
            .get_mut(id)
            .ok_or_else(|| RoomError::ConversationNotFound(id.clone()))?;
        apply(&mut record)
    }
}

/// Sets an INVITED member JOINED and appends `member:joined`.
fn join_member(record: &mut ConversationRecord, member_id: &MemberId) -> Result<Member, RoomError> {
    let member = record.member_mut(member_id)?;
    member.state = MemberState::Joined;
    member.timestamp.joined = Some(OffsetDateTime::now_utc());
    let member = member.clone();
    record.append(
        EventType::MemberJoined,
        member_id,
        None,
        member_body(&member),
    );
    Ok(member)
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
