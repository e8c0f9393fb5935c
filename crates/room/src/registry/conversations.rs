//! Commands on conversations, and reads of their event logs.

use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::mapref::entry::Entry;
use time::{Duration, OffsetDateTime};

use super::members::leave;
use super::{Registry, lock};
use crate::conversation::{
    Conversation, ConversationRecord, ConversationSummary, ConversationUpdate, NewConversation,
};
use crate::error::RoomError;
use crate::event::{Event, EventQuery, EventType};
use crate::id::{ConversationId, MemberId, UserId};
use crate::leg::{Leg, LegCloseReason};
use crate::member::Member;
use crate::page::{EventPage, Page, PageRequest, check_page_size, event_window, select_page};
use crate::storage::{EventRange, Write};
use crate::user::validate_name;

/// A deleted conversation and the legs that closed with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedConversation {
    /// The conversation as it was when it was deleted, without legs.
    pub conversation: Conversation,
    /// The legs that were open, for the caller to close in the media worker.
    pub closed_legs: Vec<Leg>,
}

/// A conversation a user belongs to, with the user's newest member of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserConversation {
    pub conversation: ConversationSummary,
    pub member: Member,
}

impl Registry {
    /// Creates a conversation with a name no other conversation has, and appends
    /// `conversation:created` as the first event of its log.
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
            Entry::Occupied(_) => return Err(RoomError::DuplicateConversationName(name)),
            Entry::Vacant(slot) => {
                slot.insert(id.clone());
            }
        }

        let mut record = ConversationRecord::new(self.next_seq(), id.clone(), name.clone(), new);
        let body = record.body();
        record.append(EventType::ConversationCreated, None, None, body);
        let mut batch = vec![Write::PutConversation(record.stored())];
        batch.extend(record.pending.drain(..).map(|event| Write::AppendEvent {
            conversation_id: id.clone(),
            event,
        }));
        if let Err(error) = self.storage.commit(&batch) {
            self.conversation_names.remove(&name);
            return Err(error.into());
        }

        // The conversation is unreachable until it is in the map, so its first event reaches
        // the listener before any other.
        self.notify(&batch);
        let conversation = record.snapshot();
        self.conversation_order()
            .insert(record.seq, record.id.clone());
        self.conversations.insert(id, Arc::new(Mutex::new(record)));
        Ok(conversation)
    }

    pub fn conversation(&self, id: &ConversationId) -> Result<Conversation, RoomError> {
        self.read(id, |record| Ok(record.snapshot()))
    }

    /// Finds the conversation named `name`. Names are unique among the conversations that
    /// exist, so at most one matches.
    pub fn conversation_by_name(&self, name: &str) -> Option<Conversation> {
        // The id is copied out, so that no index entry is held while the conversation is
        // locked.
        let id = self.conversation_names.get(name)?.value().clone();
        // A conversation claims its name before it is stored, and a renamed or deleted one
        // frees its old name only after the change: in those moments the name is not its own.
        self.read(&id, |record| {
            Ok((record.name == name).then(|| record.snapshot()))
        })
        .ok()
        .flatten()
    }

    /// Checks that a conversation exists, without copying it.
    pub fn check_conversation(&self, id: &ConversationId) -> Result<(), RoomError> {
        self.read(id, |_| Ok(()))
    }

    /// Returns a page of the conversations that exist, by creation.
    pub fn list_conversations(
        &self,
        request: &PageRequest,
    ) -> Result<Page<ConversationSummary>, RoomError> {
        let page = select_page(&self.conversation_order(), "conversations", request)?;
        Ok(page.filter_map(|id| self.read(&id, |record| Ok(record.summary())).ok()))
    }

    /// Changes a conversation's name, display name or properties, and appends
    /// `conversation:updated` if anything changed. A new name must be unused.
    pub fn update_conversation(
        &self,
        id: &ConversationId,
        update: ConversationUpdate,
    ) -> Result<Conversation, RoomError> {
        if let Some(name) = &update.name {
            validate_name("name", name)?;
        }
        if let Some(Some(display_name)) = &update.display_name {
            validate_name("display_name", display_name)?;
        }

        let handle = self.handle(id)?;
        let mut record = lock(&handle);
        if record.deleted.is_some() {
            return Err(RoomError::ConversationDeleted(id.clone()));
        }
        let old_name = record.name.clone();
        let new_name = update.name.clone().filter(|name| *name != old_name);
        if let Some(name) = &new_name {
            self.claim_name(name, id)?;
        }

        let result = self.transact(&mut record, |record| {
            apply_update(record, update);
            Ok(record.snapshot())
        });
        match (&result, new_name) {
            (Ok(_), Some(_)) => {
                self.conversation_names.remove(&old_name);
            }
            (Err(_), Some(name)) => {
                self.conversation_names.remove(&name);
            }
            (_, None) => {}
        }
        result
    }

    /// Deletes a conversation: closes its legs, appends `conversation:deleted`, and leaves a
    /// tombstone, so that later commands on it get [`RoomError::ConversationDeleted`]. Its name
    /// is free again. Its members and events stay in storage as history.
    pub fn delete_conversation(
        &self,
        id: &ConversationId,
    ) -> Result<DeletedConversation, RoomError> {
        let handle = self.handle(id)?;
        let mut record = lock(&handle);
        self.delete_locked(&mut record)
    }

    /// Deletes every conversation that has had no INVITED or JOINED member for longer than
    /// its `ttl`, as of `now`. Returns the outcome of each deletion it tried: a storage failure
    /// stops no other deletion, and the next call tries again.
    pub fn expire_conversations(
        &self,
        now: OffsetDateTime,
    ) -> Vec<Result<DeletedConversation, RoomError>> {
        let handles: Vec<_> = self
            .conversations
            .iter()
            .map(|entry| entry.value().clone())
            .collect();
        let mut outcomes = Vec::new();
        for handle in handles {
            let mut record = lock(&handle);
            if record.deleted.is_none() && is_expired(&record, now) {
                outcomes.push(self.delete_locked(&mut record));
            }
        }
        outcomes
    }

    /// Returns a page of the conversations a user belongs to, with the user's newest member of
    /// each (LEFT ones included), by the creation of that member.
    pub fn list_user_conversations(
        &self,
        user_id: &UserId,
        request: &PageRequest,
    ) -> Result<Page<UserConversation>, RoomError> {
        self.user(user_id)?;
        let memberships = self
            .memberships
            .get(user_id)
            .map(|memberships| memberships.clone())
            .unwrap_or_default();

        let list = format!("user_conversations:{user_id}");
        let page = select_page(&memberships, &list, request)?;
        Ok(page.filter_map(|membership| {
            self.read(&membership.conversation_id, |record| {
                Ok(UserConversation {
                    conversation: record.summary(),
                    member: record.member(&membership.member_id)?.clone(),
                })
            })
            .ok()
        }))
    }

    /// Reads events of a conversation's log, without the page size limit of
    /// [`Registry::list_events`].
    pub fn events(
        &self,
        conversation_id: &ConversationId,
        query: &EventQuery,
    ) -> Result<Vec<Event>, RoomError> {
        Ok(self.read_events(conversation_id, query)?.events)
    }

    /// Returns a page of a conversation's event log, with the queries of the pages before
    /// and after it. `page_size` must be 1 to [`crate::MAX_PAGE_SIZE`].
    pub fn list_events(
        &self,
        conversation_id: &ConversationId,
        query: &EventQuery,
    ) -> Result<EventPage, RoomError> {
        check_page_size(query.page_size)?;
        self.read_events(conversation_id, query)
    }

    fn read_events(
        &self,
        conversation_id: &ConversationId,
        query: &EventQuery,
    ) -> Result<EventPage, RoomError> {
        let last_event_id = self.read(conversation_id, |record| Ok(record.last_event_id))?;
        let (window, next, prev) = event_window(query, last_event_id);
        let Some((start_id, end_id)) = window else {
            return Ok(EventPage {
                events: Vec::new(),
                next,
                prev,
            });
        };

        let range = EventRange {
            start_id,
            end_id,
            limit: query.page_size,
            order: query.order,
        };
        let events = self.storage.events(conversation_id, &range)?;
        Ok(EventPage { events, next, prev })
    }

    /// Deletes a locked conversation, as [`Registry::delete_conversation`] describes.
    fn delete_locked(
        &self,
        record: &mut ConversationRecord,
    ) -> Result<DeletedConversation, RoomError> {
        if record.deleted.is_some() {
            return Err(RoomError::ConversationDeleted(record.id.clone()));
        }
        let deleted = OffsetDateTime::now_utc();
        let closed_legs = self.transact(record, |record| {
            // Members leave first, so the log and the webhooks see every leg end and every
            // member leave before the conversation goes.
            let active: Vec<MemberId> = record
                .members
                .iter()
                .filter(|entry| entry.member.is_active())
                .map(|entry| entry.member.id.clone())
                .collect();
            let mut closed_legs = Vec::new();
            for member_id in &active {
                let departure = leave(record, member_id, LegCloseReason::ConversationDeleted)?;
                closed_legs.extend(departure.closed_legs);
            }
            closed_legs.append(&mut record.legs);
            record.deleted = Some(deleted);
            let body = record.body();
            record.append(EventType::ConversationDeleted, None, None, body);
            Ok(closed_legs)
        })?;

        let id = record.id.clone();
        self.conversations.remove(&id);
        self.tombstones.insert(id.clone(), deleted);
        self.conversation_order().remove(&record.seq);
        self.conversation_names
            .remove_if(&record.name, |_, owner| *owner == id);
        for entry in &record.members {
            if let Some(mut memberships) = self.memberships.get_mut(&entry.member.user_id) {
                memberships.retain(|_, membership| membership.conversation_id != id);
            }
        }
        Ok(DeletedConversation {
            conversation: record.snapshot(),
            closed_legs,
        })
    }

    /// Claims a conversation name for `id`, unless another conversation has it.
    fn claim_name(&self, name: &str, id: &ConversationId) -> Result<(), RoomError> {
        match self.conversation_names.entry(name.to_owned()) {
            Entry::Occupied(owner) if owner.get() != id => {
                Err(RoomError::DuplicateConversationName(name.to_owned()))
            }
            Entry::Occupied(_) => Ok(()),
            Entry::Vacant(slot) => {
                slot.insert(id.clone());
                Ok(())
            }
        }
    }

    fn conversation_order(
        &self,
    ) -> MutexGuard<'_, std::collections::BTreeMap<u64, ConversationId>> {
        // The order is changed by single inserts and removals, so a panic elsewhere cannot
        // leave it half changed.
        self.conversation_order
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn apply_update(record: &mut ConversationRecord, update: ConversationUpdate) {
    let before = record.stored();
    if let Some(name) = update.name {
        record.name = name;
    }
    if let Some(display_name) = update.display_name {
        record.display_name = display_name;
    }
    if let Some(video) = update.video {
        record.properties.video = video;
    }
    if let Some(ttl) = update.ttl {
        record.properties.ttl = ttl;
    }
    if record.stored() != before {
        let body = record.body();
        record.append(EventType::ConversationUpdated, None, None, body);
    }
}

fn is_expired(record: &ConversationRecord, now: OffsetDateTime) -> bool {
    let (Some(ttl), Some(empty_since)) = (record.properties.ttl, record.empty_since) else {
        return false;
    };
    let ttl = Duration::seconds(i64::try_from(ttl).unwrap_or(i64::MAX));
    empty_since
        .checked_add(ttl)
        .is_some_and(|expiry| expiry <= now)
}
