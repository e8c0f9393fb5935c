//! Building a registry from what storage holds.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::Registry;
use crate::conversation::ConversationRecord;
use crate::error::RoomError;
use crate::id::ConversationId;
use crate::storage::{LoadedState, Storage, StorageError, StoredMember};

impl Registry {
    /// Creates a registry on top of `storage`, with the users, conversations and members it
    /// holds. Legs are live state and are never stored, so every conversation starts without
    /// legs, and its members keep the state they had: a JOINED member stays JOINED until it
    /// leaves.
    pub fn with_storage(storage: Arc<dyn Storage>) -> Result<Registry, RoomError> {
        let state = storage.load()?;
        let registry = Registry::empty(storage);
        registry.restore_state(state)?;
        Ok(registry)
    }

    fn restore_state(&self, state: LoadedState) -> Result<(), RoomError> {
        let mut max_seq = 0;

        let mut users = self.write_users();
        for stored in state.users {
            max_seq = max_seq.max(stored.seq);
            users.insert(stored);
        }
        drop(users);

        let mut members: HashMap<ConversationId, Vec<StoredMember>> = HashMap::new();
        for stored in state.members {
            max_seq = max_seq.max(stored.seq);
            members
                .entry(stored.member.conversation_id.clone())
                .or_default()
                .push(stored);
        }

        for loaded in state.conversations {
            max_seq = max_seq.max(loaded.conversation.seq);
            let id = loaded.conversation.id.clone();
            let mut own_members = members.remove(&id).unwrap_or_default();
            if let Some(deleted) = loaded.conversation.deleted {
                self.tombstones.insert(id, deleted);
                continue;
            }
            own_members.sort_by_key(|stored| stored.seq);
            let record =
                ConversationRecord::load(loaded.conversation, loaded.last_event_id, own_members);
            self.add_loaded(record);
        }

        if let Some(orphan) = members.keys().next() {
            let message = format!("members of conversation {orphan}, which is not stored");
            return Err(StorageError::Corrupt(message).into());
        }
        self.next_seq.store(max_seq + 1, Ordering::Relaxed);
        Ok(())
    }

    fn add_loaded(&self, record: ConversationRecord) {
        for entry in &record.members {
            self.index_membership(&record.id, entry);
        }

        self.conversation_names
            .insert(record.name.clone(), record.id.clone());
        self.conversation_order
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(record.seq, record.id.clone());
        self.conversations
            .insert(record.id.clone(), Arc::new(Mutex::new(record)));
    }
}
