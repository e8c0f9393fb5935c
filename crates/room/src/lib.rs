//! The conversation model of a Switchboard node.
//!
//! Users join conversations as members. A JOINED member publishes tracks on upstream legs and
//! receives other members' tracks on downstream legs. Every change is recorded in the
//! conversation's event log, and the forwarding table (which publisher legs exist and which
//! legs receive them) is derived from the same state. This crate contains only the rules and
//! the state: it opens no sockets and returns the work for the media worker to its caller
//! instead of doing it. Durable records go through the [`Storage`] trait, which another crate
//! implements; [`Registry::new`] keeps them in memory.

mod conversation;
mod error;
mod event;
mod forwarding;
mod id;
mod leg;
mod member;
mod page;
mod registry;
pub mod storage;
mod user;

#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod paging_tests;
#[cfg(test)]
mod rollback_tests;
#[cfg(test)]
mod tests;

pub use conversation::{
    Conversation, ConversationProperties, ConversationSummary, ConversationUpdate, NewConversation,
};
pub use error::RoomError;
pub use event::{
    Event, EventListener, EventQuery, EventType, MAX_CUSTOM_NAME_LENGTH, MAX_POSTED_BODY_BYTES,
    NewEvent, Order,
};
pub use forwarding::{ForwardingTable, PublisherRoutes, SubscriberRoute};
pub use id::{ConversationId, LegId, MemberId, UserId};
pub use leg::{Leg, LegCloseReason, LegRole, LegState, MediaKind, MuteState};
pub use member::{
    Channel, ChannelType, Member, MemberAction, MemberMedia, MemberState, MemberTimestamps,
    TrackSettings,
};
pub use page::{DEFAULT_PAGE_SIZE, EventPage, MAX_PAGE_SIZE, Page, PageRequest};
pub use registry::{
    AddedMember, Census, DeletedConversation, Departure, MAX_PUBLISHER_LEGS_PER_MEMBER, MuteChange,
    PostedEvent, PublishedLeg, Registry, UserConversation, UserUpdate,
};
pub use storage::{Storage, StorageError};
pub use user::{MAX_NAME_LENGTH, NewUser, User, validate_name};
