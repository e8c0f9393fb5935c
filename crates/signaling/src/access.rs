//! Access rules: an admin token may do everything, a user token acts only as its own user.

use room::{ConversationId, Member, MemberId, User};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Rejects a user token.
pub(crate) fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    match caller.user_name() {
        None => Ok(()),
        Some(name) => Err(ApiError::Forbidden(format!(
            "user {name:?} may not do this: it needs an admin token"
        ))),
    }
}

/// Finds the user a user token acts as, or `None` for an admin token. A token for a user that does
/// not exist grants nothing.
pub(crate) fn caller_user(state: &AppState, caller: &Caller) -> Result<Option<User>, ApiError> {
    let Some(name) = caller.user_name() else {
        return Ok(None);
    };
    state.registry().user_by_name(name).map(Some).map_err(|_| {
        ApiError::Forbidden(format!(
            "the token acts as user {name:?}, which does not exist: create the user first"
        ))
    })
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
        None => Err(ApiError::Forbidden(format!(
            "user {:?} is not a member of conversation {conversation_id}",
            user.name
        ))),
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
        return Err(ApiError::Forbidden(format!(
            "user {:?} may not act as member {member_id}, which belongs to user {:?}",
            user.name, member.user_name
        )));
    }
    Ok(member)
}
