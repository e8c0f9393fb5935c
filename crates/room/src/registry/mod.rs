//! The registry of users and conversations, and every command that changes them.

mod conversations;
mod legs;
mod load;
mod members;
mod users;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use dashmap::DashMap;
use time::OffsetDateTime;

use crate::conversation::{ConversationRecord, MemberEntry};
use crate::error::RoomError;
use crate::event::EventListener;
use crate::id::{ConversationId, LegId, MemberId, UserId};
use crate::member::MemberState;
use crate::storage::{MemoryStorage, Storage, StoredUser, Write};

pub use conversations::{DeletedConversation, UserConversation};
pub use legs::{MAX_PUBLISHER_LEGS_PER_MEMBER, MuteChange, PostedEvent, PublishedLeg};
pub use members::{AddedMember, Departure};
pub use users::UserUpdate;

/// Counts of a registry's conversations and members at one moment, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    pub conversations: usize,
    pub members_invited: usize,
    pub members_joined: usize,
    /// LEFT members stay in their conversation's member list, so this count only grows.
    pub members_left: usize,
}

/// A conversation's state behind its own lock.
type RecordHandle = Arc<Mutex<ConversationRecord>>;

/// All users and conversations of a node.
///
/// Every command locks one conversation for its whole check, apply and commit, so the rules
/// about a conversation never see it half changed and its changes reach storage in the order
/// they were applied. A command's writes go to [`Storage`] in one batch, and if the batch fails
/// the command's in-memory changes are undone and it returns [`RoomError::Storage`]. Commands
/// return the work left for the media worker (legs to close, legs to mute), and the registry
/// does no other I/O.
///
/// Locks are taken in one order: the user table, then conversations (several only by
/// ascending id, and only with the user table held for writing), then the indexes. No code
/// holds an index entry while it takes a conversation's lock.
pub struct Registry {
    storage: Arc<dyn Storage>,
    listener: RwLock<Option<Arc<dyn EventListener>>>,
    /// The next creation sequence number, shared by users, conversations and members.
    next_seq: AtomicU64,
    users: RwLock<UserTable>,
    conversations: DashMap<ConversationId, RecordHandle>,
    /// Conversation of every name in use. Deleted conversations free their names.
    conversation_names: DashMap<String, ConversationId>,
    /// Conversations that exist, by creation sequence number, for paging.
    conversation_order: Mutex<BTreeMap<u64, ConversationId>>,
    /// Deleted conversations and when they were deleted.
    // NOTE: Tombstones stay in memory for the life of the process, one small entry each.
    tombstones: DashMap<ConversationId, OffsetDateTime>,
    /// Conversation of every open leg, for media events that name only the leg.
    leg_conversations: DashMap<LegId, ConversationId>,
    /// Every user's newest member of each conversation it belongs to, by the member's creation
    /// sequence number.
    memberships: DashMap<UserId, BTreeMap<u64, Membership>>,
}

#[derive(Debug, Default)]
struct UserTable {
    by_id: HashMap<UserId, StoredUser>,
    by_name: HashMap<String, UserId>,
    by_seq: BTreeMap<u64, UserId>,
}

impl UserTable {
    fn insert(&mut self, stored: StoredUser) {
        self.by_name
            .insert(stored.user.name.clone(), stored.user.id.clone());
        self.by_seq.insert(stored.seq, stored.user.id.clone());
        self.by_id.insert(stored.user.id.clone(), stored);
    }

    fn remove(&mut self, id: &UserId) -> Option<StoredUser> {
        let stored = self.by_id.remove(id)?;
        self.by_name.remove(&stored.user.name);
        self.by_seq.remove(&stored.seq);
        Some(stored)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Membership {
    conversation_id: ConversationId,
    member_id: MemberId,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("users", &self.read_users().by_id.len())
            .field("conversations", &self.conversations.len())
            .field("legs", &self.leg_conversations.len())
            .finish_non_exhaustive()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// Creates an empty registry that keeps everything in memory, event logs included.
    pub fn new() -> Self {
        Self::empty(Arc::new(MemoryStorage::new()))
    }

    fn empty(storage: Arc<dyn Storage>) -> Self {
        Registry {
            storage,
            listener: RwLock::new(None),
            next_seq: AtomicU64::new(1),
            users: RwLock::default(),
            conversations: DashMap::new(),
            conversation_names: DashMap::new(),
            conversation_order: Mutex::default(),
            tombstones: DashMap::new(),
            leg_conversations: DashMap::new(),
            memberships: DashMap::new(),
        }
    }

    /// Sets the receiver of every event appended from now on, replacing any earlier one.
    pub fn set_event_listener(&self, listener: Arc<dyn EventListener>) {
        *self
            .listener
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(listener);
    }

    fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    fn read_users(&self) -> RwLockReadGuard<'_, UserTable> {
        // The table is changed only after storage accepted the change, by plain inserts and
        // removals, so a panic elsewhere cannot leave it half changed.
        self.users
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_users(&self) -> RwLockWriteGuard<'_, UserTable> {
        self.users
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn handle(&self, id: &ConversationId) -> Result<RecordHandle, RoomError> {
        if let Some(handle) = self.conversations.get(id) {
            return Ok(handle.clone());
        }
        if self.tombstones.contains_key(id) {
            return Err(RoomError::ConversationDeleted(id.clone()));
        }
        Err(RoomError::ConversationNotFound(id.clone()))
    }

    /// Counts conversations and members by state, deleted conversations left out. Each
    /// conversation is read under its own lock, so the counts of a registry that changes
    /// meanwhile may mix two moments.
    pub fn census(&self) -> Census {
        let handles: Vec<RecordHandle> = self
            .conversations
            .iter()
            .map(|entry| entry.value().clone())
            .collect();
        let mut census = Census::default();
        for handle in handles {
            let record = lock(&handle);
            if record.deleted.is_some() {
                continue;
            }
            census.conversations += 1;
            for entry in &record.members {
                match entry.member.state {
                    MemberState::Invited => census.members_invited += 1,
                    MemberState::Joined => census.members_joined += 1,
                    MemberState::Left => census.members_left += 1,
                }
            }
        }
        census
    }

    fn read<T>(
        &self,
        id: &ConversationId,
        apply: impl FnOnce(&ConversationRecord) -> Result<T, RoomError>,
    ) -> Result<T, RoomError> {
        let handle = self.handle(id)?;
        let record = lock(&handle);
        if record.deleted.is_some() {
            return Err(RoomError::ConversationDeleted(id.clone()));
        }
        apply(&record)
    }

    /// Applies a command to one conversation and commits its changes, all under its lock.
    fn write<T>(
        &self,
        id: &ConversationId,
        apply: impl FnOnce(&mut ConversationRecord) -> Result<T, RoomError>,
    ) -> Result<T, RoomError> {
        let handle = self.handle(id)?;
        let mut record = lock(&handle);
        if record.deleted.is_some() {
            return Err(RoomError::ConversationDeleted(id.clone()));
        }
        self.transact(&mut record, apply)
    }

    /// Applies a command to a locked conversation, then stores its changes. If the command or
    /// the commit fails, the record is restored as it was.
    fn transact<T>(
        &self,
        record: &mut ConversationRecord,
        apply: impl FnOnce(&mut ConversationRecord) -> Result<T, RoomError>,
    ) -> Result<T, RoomError> {
        let before = record.clone();
        let value = match apply(record) {
            Ok(value) => value,
            Err(error) => {
                self.restore(record, before);
                return Err(error);
            }
        };

        record.refresh_empty_since(OffsetDateTime::now_utc());
        let batch = record.take_changes(&before);
        if !batch.is_empty()
            && let Err(error) = self.storage.commit(&batch)
        {
            self.restore(record, before);
            return Err(error.into());
        }

        self.update_indexes(&before, record);
        self.notify(&batch);
        Ok(value)
    }

    /// Undoes a command's changes to a record, and frees the leg ids it claimed.
    fn restore(&self, record: &mut ConversationRecord, before: ConversationRecord) {
        let kept: HashSet<&LegId> = before.legs.iter().map(|leg| &leg.id).collect();
        for leg in &record.legs {
            if !kept.contains(&leg.id) {
                self.leg_conversations.remove(&leg.id);
            }
        }
        *record = before;
    }

    /// Brings the leg and membership indexes up to date with a committed command.
    fn update_indexes(&self, before: &ConversationRecord, after: &ConversationRecord) {
        let open: HashSet<&LegId> = after.legs.iter().map(|leg| &leg.id).collect();
        for leg in &before.legs {
            if !open.contains(&leg.id) {
                self.leg_conversations.remove(&leg.id);
            }
        }

        for entry in after.members.iter().skip(before.members.len()) {
            self.index_membership(&after.id, entry);
        }
    }

    /// Records a member as its user's newest member of the conversation.
    fn index_membership(&self, conversation_id: &ConversationId, entry: &MemberEntry) {
        let member = &entry.member;
        let mut memberships = self.memberships.entry(member.user_id.clone()).or_default();
        memberships.retain(|_, membership| membership.conversation_id != *conversation_id);
        memberships.insert(
            entry.seq,
            Membership {
                conversation_id: conversation_id.clone(),
                member_id: member.id.clone(),
            },
        );
    }

    /// Hands the events of a committed batch to the listener, in log order. Called with the
    /// conversations of the events still locked.
    fn notify(&self, batch: &[Write]) {
        let listener = self
            .listener
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let Some(listener) = listener else {
            return;
        };
        for write in batch {
            if let Write::AppendEvent {
                conversation_id,
                event,
            } = write
            {
                listener.appended(conversation_id, event);
            }
        }
    }
}

/// Locks a conversation. A command that panicked while holding the lock may have left the
/// record half changed, but the record is still memory-safe, and refusing every later command
/// on the conversation would be worse, so the lock is taken anyway.
fn lock(handle: &Mutex<ConversationRecord>) -> MutexGuard<'_, ConversationRecord> {
    handle
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
