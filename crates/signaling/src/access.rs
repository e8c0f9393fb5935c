//! Access rules, checked by the route handlers after the middleware verified the token and its
//! `acl.paths`.
//!
//! An admin token may do everything. A user token acts only as its own user. It reads its own
//! user record and the conversations it is an INVITED or JOINED member of, and it creates
//! conversations. As its own member it joins, leaves, publishes, subscribes and posts events,
//! and once JOINED it invites other users. It mutes only itself unless the token carries the
//! `moderator` claim. A token for a user that does not exist may do nothing.

use room::{ConversationId, EventType, Member, MemberAction, MemberId, User};

use crate::auth::{AccessError, Caller};
use crate::error::ApiError;
use crate::state::AppState;

/// Rejects a user token.
pub(crate) fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    match caller.user_name() {
        None => Ok(()),
        Some(name) => Err(AccessError::AdminOnly {
            user: name.to_owned(),
        }
        .into()),
    }
}

/// Finds the user a user token acts as, or `None` for an admin token. A token for a user that
/// does not exist grants nothing.
pub(crate) fn caller_user(state: &AppState, caller: &Caller) -> Result<Option<User>, ApiError> {
    let Some(name) = caller.user_name() else {
        return Ok(None);
    };
    match state.registry().user_by_name(name) {
        Ok(user) => Ok(Some(user)),
        Err(_) => Err(AccessError::UnknownUser {
            user: name.to_owned(),
        }
        .into()),
    }
}

/// Checks that the caller may read `user`'s record and resources: an admin, or that user.
pub(crate) fn require_self_or_admin(
    state: &AppState,
    caller: &Caller,
    user: &User,
) -> Result<(), ApiError> {
    let Some(me) = caller_user(state, caller)? else {
        return Ok(());
    };
    if me.id != user.id {
        return Err(AccessError::OtherUser {
            user: me.name,
            target: format!("user {}", user.id),
            owner: user.name.clone(),
        }
        .into());
    }
    Ok(())
}

/// Checks that the caller may read a conversation: an admin, or a user that is an INVITED or
/// JOINED member of it.
pub(crate) fn require_reader(
    state: &AppState,
    caller: &Caller,
    conversation_id: &ConversationId,
) -> Result<(), ApiError> {
    // The conversation's existence is checked first, so an unknown id is 404 for everyone.
    state.registry().check_conversation(conversation_id)?;
    let Some(user) = caller_user(state, caller)? else {
        return Ok(());
    };

    match state
        .registry()
        .active_member_of(conversation_id, &user.id)?
    {
        Some(_) => Ok(()),
        None => Err(AccessError::NotAMember {
            user: user.name,
            conversation: conversation_id.to_string(),
        }
        .into()),
    }
}

/// Checks that the caller may act as a member, and returns it: an admin may act as any
/// member, a user only as its own.
pub(crate) fn require_acting_as(
    state: &AppState,
    caller: &Caller,
    conversation_id: &ConversationId,
    member_id: &MemberId,
) -> Result<Member, ApiError> {
    let member = state.registry().member(conversation_id, member_id)?;
    let Some(user) = caller_user(state, caller)? else {
        return Ok(member);
    };

    if member.user_id != user.id {
        return Err(AccessError::OtherUser {
            user: user.name,
            target: format!("member {member_id}"),
            owner: member.user_name,
        }
        .into());
    }
    Ok(member)
}

/// Checks that the caller may add `user` to a conversation with `action`, and returns the name
/// to record as the inviter. A user token may join only its own user, and may invite others
/// only while it is a JOINED member.
pub(crate) fn require_may_add_member(
    state: &AppState,
    caller: &Caller,
    conversation_id: &ConversationId,
    user: &User,
    action: MemberAction,
) -> Result<Option<String>, ApiError> {
    let Some(me) = caller_user(state, caller)? else {
        return Ok(None);
    };

    match action {
        MemberAction::Join if me.id == user.id => Ok(None),
        MemberAction::Join => Err(AccessError::OtherUser {
            user: me.name,
            target: format!("user {}", user.id),
            owner: user.name.clone(),
        }
        .into()),
        MemberAction::Invite => {
            let inviter = state.registry().active_member_of(conversation_id, &me.id)?;
            if !inviter.is_some_and(|member| member.is_joined()) {
                return Err(AccessError::NotJoined {
                    user: me.name,
                    conversation: conversation_id.to_string(),
                }
                .into());
            }
            Ok(Some(me.name))
        }
    }
}

/// Checks that the caller may post an event of `kind` from member `from` to member `to`, and
/// returns the sender. The caller must act as `from`. A mute event whose target (`to`, else
/// `from`) is another member also needs an admin token or the `moderator` claim.
pub(crate) fn require_may_post_event(
    state: &AppState,
    caller: &Caller,
    conversation_id: &ConversationId,
    kind: &EventType,
    from: &MemberId,
    to: Option<&MemberId>,
) -> Result<Member, ApiError> {
    let sender = require_acting_as(state, caller, conversation_id, from)?;

    let target = match to {
        Some(target) if kind.mute().is_some() && target != from => target,
        _ => return Ok(sender),
    };
    match caller.user_name() {
        Some(user) if !caller.is_moderator() => Err(AccessError::ModeratorRequired {
            user: user.to_owned(),
            target: target.to_string(),
        }
        .into()),
        _ => Ok(sender),
    }
}
