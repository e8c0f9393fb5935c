//! Logged-in sessions of the realtime API and the legs each opened.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;
use room::{ConversationId, LegId, MemberId, UserId};
use serde_json::Value;

use super::outbox::Outbox;

/// One logged-in socket: a user, its token, and the legs and memberships it created.
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) user_id: UserId,
    pub(crate) user_name: String,
    outbox: Arc<Outbox>,
    /// The token of the login, replaced by `session:update-token`. Requests run with it.
    token: Mutex<String>,
    media: Mutex<SessionMedia>,
    /// Members this session joined, left when the session ends and the user has no other.
    joined: Mutex<HashSet<(ConversationId, MemberId)>>,
    /// Conversations this session created, which it may read before it joins them.
    created: Mutex<HashSet<ConversationId>>,
    /// Every upstream leg this session opened, ended ones included.
    opened: Mutex<HashSet<LegId>>,
}

/// Upstream legs a session opened, and the server offers made for each.
#[derive(Default)]
pub(crate) struct SessionMedia {
    pub(crate) legs: HashMap<LegId, OwnLeg>,
}

/// An upstream leg opened with `rtc:new`.
pub(crate) struct OwnLeg {
    pub(crate) conversation_id: ConversationId,
    pub(crate) member_id: MemberId,
    /// The SDK published with direction `both`, so it answers the node's `rtc:offer`s.
    pub(crate) receives: bool,
    /// Downstream legs offered on this leg's behalf, by the publisher leg they receive. An
    /// entry stays after its downstream leg ends, so a pair is offered once.
    pub(crate) offers: HashMap<LegId, LegId>,
}

impl Session {
    pub(crate) fn new(
        id: String,
        user_id: UserId,
        user_name: String,
        token: String,
        outbox: Arc<Outbox>,
    ) -> Self {
        Session {
            id,
            user_id,
            user_name,
            outbox,
            token: Mutex::new(token),
            media: Mutex::new(SessionMedia::default()),
            joined: Mutex::new(HashSet::new()),
            created: Mutex::new(HashSet::new()),
            opened: Mutex::new(HashSet::new()),
        }
    }

    pub(crate) fn token(&self) -> String {
        lock(&self.token).clone()
    }

    pub(crate) fn set_token(&self, token: String) {
        *lock(&self.token) = token;
    }

    pub(crate) fn media(&self) -> MutexGuard<'_, SessionMedia> {
        lock(&self.media)
    }

    pub(crate) fn record_joined(&self, conversation_id: ConversationId, member_id: MemberId) {
        lock(&self.joined).insert((conversation_id, member_id));
    }

    pub(crate) fn forget_joined(&self, conversation_id: &ConversationId, member_id: &MemberId) {
        lock(&self.joined).remove(&(conversation_id.clone(), member_id.clone()));
    }

    pub(crate) fn record_created(&self, conversation_id: ConversationId) {
        lock(&self.created).insert(conversation_id);
    }

    pub(crate) fn created(&self, conversation_id: &ConversationId) -> bool {
        lock(&self.created).contains(conversation_id)
    }

    pub(crate) fn record_opened(&self, leg_id: LegId) {
        lock(&self.opened).insert(leg_id);
    }

    pub(crate) fn opened(&self, leg_id: &LegId) -> bool {
        lock(&self.opened).contains(leg_id)
    }

    fn take_joined(&self) -> Vec<(ConversationId, MemberId)> {
        lock(&self.joined).drain().collect()
    }

    /// Sends an event to the session's socket (see [`Outbox::emit`]).
    pub(crate) fn emit(&self, name: &str, payload: &Value) {
        self.outbox.emit(name, payload);
    }
}

/// Every live session of the node, by id and by user.
#[derive(Default)]
pub(crate) struct Sessions {
    by_id: DashMap<String, Arc<Session>>,
    by_user: DashMap<UserId, HashSet<String>>,
    /// Serializes the removals of sessions, so that two sessions of one user that end together
    /// cannot hand their members to each other and both leave none.
    removal: Mutex<()>,
}

impl Sessions {
    pub(crate) fn insert(&self, session: Arc<Session>) {
        self.by_user
            .entry(session.user_id.clone())
            .or_default()
            .insert(session.id.clone());
        self.by_id.insert(session.id.clone(), session);
    }

    /// Removes a session, and returns the members it joined that must leave now. While the
    /// user has another live session, that session takes the members over instead, because the
    /// user is still connected.
    pub(crate) fn remove(&self, session: &Session) -> Vec<(ConversationId, MemberId)> {
        let _removal = lock(&self.removal);
        self.by_id.remove(&session.id);
        if let Some(mut ids) = self.by_user.get_mut(&session.user_id) {
            ids.remove(&session.id);
        }
        self.by_user
            .remove_if(&session.user_id, |_, ids| ids.is_empty());

        let joined = session.take_joined();
        match self.of_user(&session.user_id).first() {
            Some(heir) => {
                for (conversation_id, member_id) in joined {
                    heir.record_joined(conversation_id, member_id);
                }
                Vec::new()
            }
            None => joined,
        }
    }

    /// Returns the live sessions of a user.
    pub(crate) fn of_user(&self, user_id: &UserId) -> Vec<Arc<Session>> {
        let Some(ids) = self.by_user.get(user_id) else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|id| self.by_id.get(id).map(|session| Arc::clone(&session)))
            .collect()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Session>> {
        self.by_id
            .iter()
            .map(|entry| Arc::clone(entry.value()))
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// Locks a mutex of session state. Every change to that state is a single insert or remove,
/// so a panic elsewhere cannot leave it half changed.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
