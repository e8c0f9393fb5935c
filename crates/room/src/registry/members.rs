//! Commands on members: joining, inviting and leaving.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::Registry;
use crate::conversation::{ConversationRecord, MemberEntry, member_body};
use crate::error::RoomError;
use crate::event::EventType;
use crate::id::{ConversationId, LegId, MemberId, UserId};
use crate::leg::{Leg, LegCloseReason};
use crate::member::{Channel, Member, MemberAction, MemberMedia, MemberState, MemberTimestamps};
use crate::page::{Page, PageRequest, select_page};
use crate::user::User;

/// A member that left, and the legs that closed with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Departure {
    pub member: Member,
    /// The member's legs and other members' downstream legs that received its publisher legs.
    pub closed_legs: Vec<Leg>,
}

/// The outcome of a join or an invitation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedMember {
    pub member: Member,
    /// Whether the member is new. A join that accepts an invitation, or that finds the user
    /// already JOINED, returns the existing member.
    pub created: bool,
    /// Legs that ended because a JOINED member joined again: its client is gone, and its legs
    /// with it. They are closed in the room; the caller closes them in the media worker.
    pub closed_legs: Vec<Leg>,
}

impl Registry {
    /// Adds a user to a conversation as a JOINED or INVITED member.
    ///
    /// A user has at most one INVITED or JOINED member per conversation. Joining with a
    /// pending invitation accepts it: the INVITED member becomes JOINED and keeps its id.
    /// Joining while JOINED returns the same member and closes the legs it still has.
    /// Inviting a user who is INVITED or JOINED is [`RoomError::AlreadyMember`].
    pub fn add_member(
        &self,
        conversation_id: &ConversationId,
        user_id: &UserId,
        action: MemberAction,
        invited_by: Option<String>,
    ) -> Result<AddedMember, RoomError> {
        // The user table stays read-locked until the member is stored, so the user cannot be
        // deleted in between and leave a member behind.
        let users = self.read_users();
        let user = users
            .by_id
            .get(user_id)
            .map(|stored| stored.user.clone())
            .ok_or_else(|| RoomError::UserNotFound(user_id.clone()))?;

        self.write(conversation_id, |record| {
            let Some(existing) = record.active_member_of(&user.id) else {
                let seq = self.next_seq();
                return Ok(create_member(record, seq, &user, action, invited_by));
            };
            if action == MemberAction::Invite {
                return Err(RoomError::AlreadyMember {
                    user: user.id.clone(),
                    member: existing.id.clone(),
                    state: existing.state,
                });
            }
            let member_id = existing.id.clone();
            join(record, &member_id)
        })
    }

    /// Joins an existing member: accepts an invitation, or, for a JOINED member, closes the
    /// legs it still has as [`Registry::add_member`] does. A LEFT member cannot join again
    /// ([`RoomError::MemberAlreadyLeft`]): its user joins as a new member instead.
    pub fn join_member(
        &self,
        conversation_id: &ConversationId,
        member_id: &MemberId,
    ) -> Result<AddedMember, RoomError> {
        self.write(conversation_id, |record| {
            if !record.member(member_id)?.is_active() {
                return Err(RoomError::MemberAlreadyLeft(member_id.clone()));
            }
            join(record, member_id)
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
        self.read(conversation_id, |record| {
            Ok(record
                .members
                .iter()
                .map(|entry| entry.member.clone())
                .collect())
        })
    }

    /// Returns a page of a conversation's members, LEFT ones included, by creation.
    pub fn list_members(
        &self,
        conversation_id: &ConversationId,
        request: &PageRequest,
    ) -> Result<Page<Member>, RoomError> {
        self.read(conversation_id, |record| {
            let by_seq: BTreeMap<u64, &Member> = record
                .members
                .iter()
                .map(|entry| (entry.seq, &entry.member))
                .collect();
            let list = format!("members:{conversation_id}");
            let page = select_page(&by_seq, &list, request)?;
            Ok(page.filter_map(|member| Some(member.clone())))
        })
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
    /// receive its publisher legs), sets it LEFT and appends `member:left`. Leaving twice is
    /// [`RoomError::MemberAlreadyLeft`].
    pub fn remove_member(
        &self,
        conversation_id: &ConversationId,
        member_id: &MemberId,
    ) -> Result<Departure, RoomError> {
        self.write(conversation_id, |record| {
            if !record.member(member_id)?.is_active() {
                return Err(RoomError::MemberAlreadyLeft(member_id.clone()));
            }
            leave(record, member_id, LegCloseReason::MemberLeft)
        })
    }
}

fn create_member(
    record: &mut ConversationRecord,
    seq: u64,
    user: &User,
    action: MemberAction,
    invited_by: Option<String>,
) -> AddedMember {
    let now = OffsetDateTime::now_utc();
    let (state, timestamp, invited_by, kind) = match action {
        MemberAction::Join => (
            MemberState::Joined,
            MemberTimestamps {
                joined: Some(now),
                ..MemberTimestamps::default()
            },
            None,
            EventType::MemberJoined,
        ),
        MemberAction::Invite => (
            MemberState::Invited,
            MemberTimestamps {
                invited: Some(now),
                ..MemberTimestamps::default()
            },
            invited_by,
            EventType::MemberInvited,
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
    record.members.push(MemberEntry {
        seq,
        member: member.clone(),
    });
    record.append(kind, Some(&member.id), None, member_body(&member));

    AddedMember {
        member,
        created: true,
        closed_legs: Vec::new(),
    }
}

/// Joins an INVITED or JOINED member. An INVITED member becomes JOINED and `member:joined` is
/// appended; a JOINED member stays as it is, and its legs close.
fn join(record: &mut ConversationRecord, member_id: &MemberId) -> Result<AddedMember, RoomError> {
    if record.member(member_id)?.state == MemberState::Joined {
        let closed_legs = close_member_legs(record, member_id, LegCloseReason::MemberRejoined);
        return Ok(AddedMember {
            member: record.member(member_id)?.clone(),
            created: false,
            closed_legs,
        });
    }

    let member = record.member_mut(member_id)?;
    member.state = MemberState::Joined;
    member.timestamp.joined = Some(OffsetDateTime::now_utc());
    let member = member.clone();
    record.append(
        EventType::MemberJoined,
        Some(member_id),
        None,
        member_body(&member),
    );
    Ok(AddedMember {
        member,
        created: false,
        closed_legs: Vec::new(),
    })
}

/// Sets an active member LEFT after closing its legs, and appends `member:left`.
pub(super) fn leave(
    record: &mut ConversationRecord,
    member_id: &MemberId,
    reason: LegCloseReason,
) -> Result<Departure, RoomError> {
    let closed_legs = close_member_legs(record, member_id, reason);

    let member = record.member_mut(member_id)?;
    member.state = MemberState::Left;
    member.timestamp.left = Some(OffsetDateTime::now_utc());
    let member = member.clone();
    record.append(
        EventType::MemberLeft,
        Some(member_id),
        None,
        member_body(&member),
    );
    Ok(Departure {
        member,
        closed_legs,
    })
}

/// Closes a member's legs and the downstream legs of others that receive its publisher legs.
fn close_member_legs(
    record: &mut ConversationRecord,
    member_id: &MemberId,
    reason: LegCloseReason,
) -> Vec<Leg> {
    let own_legs: Vec<LegId> = record
        .legs
        .iter()
        .filter(|leg| leg.member_id == *member_id)
        .map(|leg| leg.id.clone())
        .collect();
    let mut closed_legs = Vec::new();
    for leg in own_legs {
        // A downstream leg of this member may already be gone with its publisher.
        if let Ok(removed) = record.remove_leg(&leg, reason) {
            closed_legs.extend(removed);
        }
    }
    closed_legs
}
