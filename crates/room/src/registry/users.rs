//! Commands on users.

use std::sync::MutexGuard;

use time::OffsetDateTime;

use super::members::{Departure, leave};
use super::{Registry, lock};
use crate::conversation::ConversationRecord;
use crate::error::RoomError;
use crate::id::{ConversationId, UserId};
use crate::leg::LegCloseReason;
use crate::page::{Page, PageRequest, select_page};
use crate::storage::{StoredUser, Write};
use crate::user::{NewUser, User, validate_name};

/// Changes to a user. `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserUpdate {
    /// A new unique name. Members created before the change keep the old name.
    pub name: Option<String>,
    /// A new display name, or `Some(None)` to remove it.
    pub display_name: Option<Option<String>>,
}

impl Registry {
    /// Creates a user with a name no other user has.
    pub fn create_user(&self, new: NewUser) -> Result<User, RoomError> {
        validate_name("name", &new.name)?;
        if let Some(display_name) = &new.display_name {
            validate_name("display_name", display_name)?;
        }

        let mut users = self.write_users();
        if users.by_name.contains_key(&new.name) {
            return Err(RoomError::DuplicateUserName(new.name));
        }
        let stored = StoredUser {
            seq: self.next_seq(),
            user: User {
                id: UserId::generate(),
                name: new.name,
                display_name: new.display_name,
                created: OffsetDateTime::now_utc(),
            },
        };
        self.storage.commit(&[Write::PutUser(stored.clone())])?;

        let user = stored.user.clone();
        users.insert(stored);
        Ok(user)
    }

    pub fn user(&self, id: &UserId) -> Result<User, RoomError> {
        self.read_users()
            .by_id
            .get(id)
            .map(|stored| stored.user.clone())
            .ok_or_else(|| RoomError::UserNotFound(id.clone()))
    }

    pub fn user_by_name(&self, name: &str) -> Result<User, RoomError> {
        let users = self.read_users();
        users
            .by_name
            .get(name)
            .and_then(|id| users.by_id.get(id))
            .map(|stored| stored.user.clone())
            .ok_or_else(|| RoomError::UserNameNotFound(name.to_owned()))
    }

    /// Lists every user, oldest first.
    pub fn users(&self) -> Vec<User> {
        let users = self.read_users();
        users
            .by_seq
            .values()
            .filter_map(|id| users.by_id.get(id))
            .map(|stored| stored.user.clone())
            .collect()
    }

    /// Returns a page of the users, by creation.
    pub fn list_users(&self, request: &PageRequest) -> Result<Page<User>, RoomError> {
        let users = self.read_users();
        let page = select_page(&users.by_seq, "users", request)?;
        Ok(page.filter_map(|id| users.by_id.get(&id).map(|stored| stored.user.clone())))
    }

    /// Changes a user's name or display name. A new name must be unused.
    pub fn update_user(&self, id: &UserId, update: UserUpdate) -> Result<User, RoomError> {
        if let Some(name) = &update.name {
            validate_name("name", name)?;
        }
        if let Some(Some(display_name)) = &update.display_name {
            validate_name("display_name", display_name)?;
        }

        let mut users = self.write_users();
        let stored = users
            .by_id
            .get(id)
            .cloned()
            .ok_or_else(|| RoomError::UserNotFound(id.clone()))?;
        let mut updated = stored.clone();
        if let Some(name) = update.name {
            if name != stored.user.name && users.by_name.contains_key(&name) {
                return Err(RoomError::DuplicateUserName(name));
            }
            updated.user.name = name;
        }
        if let Some(display_name) = update.display_name {
            updated.user.display_name = display_name;
        }
        if updated == stored {
            return Ok(updated.user);
        }

        self.storage.commit(&[Write::PutUser(updated.clone())])?;
        users.remove(id);
        users.insert(updated.clone());
        Ok(updated.user)
    }

    /// Deletes a user. Each of its INVITED or JOINED members leaves its conversation, with its
    /// legs closed, in the same transaction as the deletion. Returns those departures so that
    /// the caller can close the legs in the media worker. The members stay as history, with
    /// the user's id and name.
    pub fn delete_user(&self, id: &UserId) -> Result<Vec<Departure>, RoomError> {
        let mut users = self.write_users();
        if !users.by_id.contains_key(id) {
            return Err(RoomError::UserNotFound(id.clone()));
        }

        // Holding the user table for writing keeps new members of this user out, and lets
        // this command lock several conversations: it is the only kind that does.
        let handles = self.conversation_handles_of(id);
        let mut records: Vec<_> = handles.iter().map(|handle| lock(handle)).collect();
        let mut changes = Changes::default();
        let mut result = leave_everywhere(&mut records, id, &mut changes);
        changes.batch.push(Write::DeleteUser(id.clone()));
        if result.is_ok() {
            result = self.storage.commit(&changes.batch).map_err(RoomError::from);
        }

        if let Err(error) = result {
            for (index, before) in changes.before {
                self.restore(&mut records[index], before);
            }
            return Err(error);
        }
        for (index, before) in &changes.before {
            self.update_indexes(before, &records[*index]);
        }
        self.notify(&changes.batch);
        drop(records);

        users.remove(id);
        self.memberships.remove(id);
        Ok(changes.departures)
    }

    /// Finds the conversations a user has a member in, in ascending id order.
    fn conversation_handles_of(&self, id: &UserId) -> Vec<super::RecordHandle> {
        let mut ids: Vec<ConversationId> = self
            .memberships
            .get(id)
            .map(|memberships| {
                memberships
                    .values()
                    .map(|membership| membership.conversation_id.clone())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids.dedup();
        ids.iter()
            .filter_map(|conversation_id| self.handle(conversation_id).ok())
            .collect()
    }
}

/// The changes a user's deletion made in its conversations.
#[derive(Default)]
struct Changes {
    batch: Vec<Write>,
    /// Each changed record's index among the locked ones, and its copy from before.
    before: Vec<(usize, ConversationRecord)>,
    departures: Vec<Departure>,
}

/// Makes the user's active member of each locked conversation leave, and records the changes.
fn leave_everywhere(
    records: &mut [MutexGuard<'_, ConversationRecord>],
    user_id: &UserId,
    changes: &mut Changes,
) -> Result<(), RoomError> {
    for (index, record) in records.iter_mut().enumerate() {
        if record.deleted.is_some() {
            continue;
        }
        let Some(member_id) = record
            .active_member_of(user_id)
            .map(|member| member.id.clone())
        else {
            continue;
        };

        changes.before.push((index, record.clone()));
        let departure = leave(record, &member_id, LegCloseReason::MemberLeft)?;
        record.refresh_empty_since(OffsetDateTime::now_utc());
        let before = &changes.before[changes.before.len() - 1].1;
        changes.batch.extend(record.take_changes(before));
        changes.departures.push(departure);
    }
    Ok(())
}
