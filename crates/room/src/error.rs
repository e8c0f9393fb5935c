//! Errors of the conversation model.

use crate::id::{ConversationId, LegId, MemberId, UserId};
use crate::member::MemberState;
use crate::storage::StorageError;

/// A rule of the model that a request broke. Every variant names the value it is about.
///
/// Deliberately not `#[non_exhaustive]`: the signaling layer maps every variant to an HTTP
/// status, and a new variant should fail its build until it is mapped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// No user has this id.
    #[error("user {0} not found")]
    UserNotFound(UserId),
    /// No user has this name.
    #[error("no user is named {0:?}")]
    UserNameNotFound(String),
    /// User names are unique on a node.
    #[error("a user named {0:?} already exists")]
    DuplicateUserName(String),
    /// No conversation has this id.
    #[error("conversation {0} not found")]
    ConversationNotFound(ConversationId),
    /// The conversation was deleted. Its id stays known so that requests about it get this
    /// error rather than a not-found.
    #[error("conversation {0} was deleted")]
    ConversationDeleted(ConversationId),
    /// Conversation names are unique on a node.
    #[error("a conversation named {0:?} already exists")]
    DuplicateConversationName(String),
    /// The conversation has no member with this id.
    #[error("member {0} not found in this conversation")]
    MemberNotFound(MemberId),
    /// The action needs a JOINED member.
    #[error("member {member} is {state}, not JOINED")]
    MemberNotJoined {
        member: MemberId,
        state: MemberState,
    },
    /// The member already left, so it cannot leave again or be joined.
    #[error("member {0} has already left the conversation")]
    MemberAlreadyLeft(MemberId),
    /// The user already has a membership that has not ended.
    #[error("user {user} is already a member of this conversation as {member} ({state})")]
    AlreadyMember {
        user: UserId,
        member: MemberId,
        state: MemberState,
    },
    /// The conversation has no leg with this id.
    #[error("leg {0} not found in this conversation")]
    LegNotFound(LegId),
    /// Leg ids are unique on a node.
    #[error("leg {0} already exists")]
    DuplicateLeg(LegId),
    /// Only a publisher (upstream) leg can be subscribed to.
    #[error("leg {0} is not a publisher leg")]
    NotAPublisherLeg(LegId),
    /// A member receives its own media locally, never through the node.
    #[error("member {member} cannot subscribe to its own publisher leg {leg}")]
    OwnPublisherLeg { member: MemberId, leg: LegId },
    /// The member already has a downstream leg receiving that publisher leg.
    #[error("member {member} already receives publisher leg {publisher} on leg {leg}")]
    AlreadySubscribed {
        member: MemberId,
        publisher: LegId,
        leg: LegId,
    },
    /// The member has as many upstream legs as a member may have.
    #[error("member {member} already publishes {limit} legs, the maximum per member")]
    TooManyPublisherLegs { member: MemberId, limit: usize },
    /// A field of a new user, conversation or event is out of range.
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    /// The event type is neither a known type nor `custom:<name>`.
    #[error("invalid event type {0:?}: expected custom:<name> or a mute type")]
    InvalidEventType(String),
    /// The event type exists but only the node creates events of that type.
    #[error("events of type {0} are created by the node and cannot be posted")]
    EventTypeNotPostable(String),
    /// A paging cursor does not decode, or was made for another list or order.
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),
    /// The storage under the registry failed, and the command changed nothing.
    #[error("the command was not applied: {0}")]
    Storage(#[from] StorageError),
    /// A posted event's body is larger than the limit.
    #[error("the event body is {size} bytes of JSON, more than the limit of {limit}")]
    EventBodyTooLarge { size: usize, limit: usize },
}
