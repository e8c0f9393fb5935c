//! The storage interface under the registry: records to write in one transaction, what to
//! load at start, and reads of event logs.
//!
//! The registry keeps the live state in memory and writes every change through [`Storage`]
//! before it makes the change visible. An implementation stores records, not commands: a user,
//! a conversation (or its deletion tombstone), a member, an event. An embedded database
//! (SQLite) implements it for one node, and a shared database could implement it for several.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use time::OffsetDateTime;

use crate::conversation::ConversationProperties;
use crate::event::{Event, Order};
use crate::id::{ConversationId, MemberId, UserId};
use crate::member::Member;
use crate::user::User;

/// Failure of the storage under the registry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The storage could not be read or written: a full disk, a lost connection, a lock held
    /// too long. The change it was given was not stored.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored record cannot be turned back into the model: the data was changed outside the
    /// node or by an incompatible version.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

/// A user and its creation sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredUser {
    /// Position in the order of creation of every record of the registry, used for paging.
    pub seq: u64,
    pub user: User,
}

/// A conversation's own fields, without members, legs or events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredConversation {
    pub seq: u64,
    pub id: ConversationId,
    pub name: String,
    pub display_name: Option<String>,
    pub properties: ConversationProperties,
    pub created: OffsetDateTime,
    /// When the conversation was deleted. A deleted conversation is a tombstone: its id stays
    /// known, so requests about it get a precise error, and its name is free again.
    pub deleted: Option<OffsetDateTime>,
}

/// A member and its creation sequence number. The member's `media.*.enabled` flags describe
/// live legs and are not meant to be stored; its mute flags are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMember {
    pub seq: u64,
    pub member: Member,
}

/// One record to write. A batch of them is committed together or not at all.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// Inserts the user, or replaces the user with the same id.
    PutUser(StoredUser),
    /// Removes the user. Its members stay, with the user's id and name, as history.
    DeleteUser(UserId),
    /// Inserts the conversation, or replaces the one with the same id.
    PutConversation(StoredConversation),
    /// Inserts the member, or replaces the one with the same id.
    PutMember(StoredMember),
    /// Appends an event to its conversation's log. The id is the next one of that log.
    AppendEvent {
        conversation_id: ConversationId,
        event: Event,
    },
}

/// A conversation as loaded at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedConversation {
    pub conversation: StoredConversation,
    /// Id of the newest event of its log, 0 for an empty log.
    pub last_event_id: u64,
}

/// Everything the registry needs at start. Events stay in storage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadedState {
    pub users: Vec<StoredUser>,
    /// Every conversation, deleted ones included.
    pub conversations: Vec<LoadedConversation>,
    /// Every member of every conversation.
    pub members: Vec<StoredMember>,
}

/// A window of one conversation's event log, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRange {
    pub start_id: u64,
    pub end_id: u64,
    /// Maximum number of events to return, counted from `start_id` in ascending order and
    /// from `end_id` in descending order.
    pub limit: usize,
    pub order: Order,
}

/// Durable storage of users, conversations, members and event logs.
///
/// The registry calls [`Storage::commit`] while it holds the lock of the conversation the
/// batch is about (or the user table's lock), so batches about one conversation arrive in the
/// order the registry applied them. Implementations must be safe to call from many threads.
pub trait Storage: Send + Sync {
    /// Reads every user, conversation and member, and each conversation's newest event id.
    fn load(&self) -> Result<LoadedState, StorageError>;

    /// Writes a batch atomically: after an error, none of it is stored.
    fn commit(&self, batch: &[Write]) -> Result<(), StorageError>;

    /// Reads the events of a conversation's log within `range`, in `range.order`.
    fn events(
        &self,
        conversation_id: &ConversationId,
        range: &EventRange,
    ) -> Result<Vec<Event>, StorageError>;
}

impl fmt::Debug for dyn Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Storage")
    }
}

/// Storage in the process's memory, for a node that keeps nothing across restarts and for
/// tests. Every event log is kept whole for the life of the process.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    users: BTreeMap<UserId, StoredUser>,
    conversations: BTreeMap<ConversationId, StoredConversation>,
    members: BTreeMap<MemberId, StoredMember>,
    events: HashMap<ConversationId, Vec<Event>>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, MemoryState> {
        // The state is only replaced whole under this lock, so a panic elsewhere cannot leave
        // it half written and a poisoned lock is safe to use.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Storage for MemoryStorage {
    fn load(&self) -> Result<LoadedState, StorageError> {
        let state = self.state();
        let conversations = state
            .conversations
            .values()
            .map(|conversation| LoadedConversation {
                conversation: conversation.clone(),
                last_event_id: state
                    .events
                    .get(&conversation.id)
                    .and_then(|events| events.last())
                    .map_or(0, |event| event.id),
            })
            .collect();
        Ok(LoadedState {
            users: state.users.values().cloned().collect(),
            conversations,
            members: state.members.values().cloned().collect(),
        })
    }

    fn commit(&self, batch: &[Write]) -> Result<(), StorageError> {
        let mut state = self.state();
        for write in batch {
            match write {
                Write::PutUser(user) => {
                    state.users.insert(user.user.id.clone(), user.clone());
                }
                Write::DeleteUser(id) => {
                    state.users.remove(id);
                }
                Write::PutConversation(conversation) => {
                    state
                        .conversations
                        .insert(conversation.id.clone(), conversation.clone());
                }
                Write::PutMember(member) => {
                    state
                        .members
                        .insert(member.member.id.clone(), member.clone());
                }
                Write::AppendEvent {
                    conversation_id,
                    event,
                } => state
                    .events
                    .entry(conversation_id.clone())
                    .or_default()
                    .push(event.clone()),
            }
        }
        Ok(())
    }

    fn events(
        &self,
        conversation_id: &ConversationId,
        range: &EventRange,
    ) -> Result<Vec<Event>, StorageError> {
        let state = self.state();
        let Some(log) = state.events.get(conversation_id) else {
            return Ok(Vec::new());
        };
        let in_range = log
            .iter()
            .filter(|event| range.start_id <= event.id && event.id <= range.end_id);
        let events = match range.order {
            Order::Asc => in_range.take(range.limit).cloned().collect(),
            Order::Desc => in_range.rev().take(range.limit).cloned().collect(),
        };
        Ok(events)
    }
}
