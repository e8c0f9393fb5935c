//! Conversions between the model's records and table rows.

use room::storage::{
    LoadedConversation, StorageError, StoredConversation, StoredMember, StoredUser, Write,
};
use room::{
    Channel, ConversationProperties, Event, EventType, Member, MemberMedia, MemberState,
    MemberTimestamps, TrackSettings, User,
};
use rusqlite::{Connection, Row, Transaction, params};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::unavailable;

pub(crate) const SELECT_EVENTS_ASC: &str = "
    SELECT id, type, from_member, to_member, body, timestamp FROM events
    WHERE conversation_id = ?1 AND id BETWEEN ?2 AND ?3 ORDER BY id ASC LIMIT ?4";

pub(crate) const SELECT_EVENTS_DESC: &str = "
    SELECT id, type, from_member, to_member, body, timestamp FROM events
    WHERE conversation_id = ?1 AND id BETWEEN ?2 AND ?3 ORDER BY id DESC LIMIT ?4";

/// Turns an id or sequence number into SQLite's signed integer. Numbers above `i64::MAX`
/// never occur in storage, so clamping only affects open-ended ranges.
pub(crate) fn to_sql_id(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_sql_id(value: i64, what: &str) -> Result<u64, StorageError> {
    u64::try_from(value).map_err(|_| corrupt(format!("negative {what} {value}")))
}

fn corrupt(message: String) -> StorageError {
    StorageError::Corrupt(message)
}

fn format_time(time: OffsetDateTime) -> Result<String, StorageError> {
    time.format(&Rfc3339)
        .map_err(|error| corrupt(format!("timestamp {time} cannot be stored: {error}")))
}

fn format_optional_time(time: Option<OffsetDateTime>) -> Result<Option<String>, StorageError> {
    time.map(format_time).transpose()
}

fn parse_time(text: &str) -> Result<OffsetDateTime, StorageError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|error| corrupt(format!("invalid timestamp {text:?}: {error}")))
}

fn parse_optional_time(text: Option<String>) -> Result<Option<OffsetDateTime>, StorageError> {
    text.as_deref().map(parse_time).transpose()
}

/// Writes one record inside the batch's transaction.
pub(crate) fn apply(transaction: &Transaction<'_>, write: &Write) -> Result<(), StorageError> {
    let result = match write {
        Write::PutUser(stored) => put_user(transaction, stored)?,
        Write::DeleteUser(id) => transaction
            .prepare_cached("DELETE FROM users WHERE id = ?1")
            .and_then(|mut statement| statement.execute([id.as_str()])),
        Write::PutConversation(stored) => put_conversation(transaction, stored)?,
        Write::PutMember(stored) => put_member(transaction, stored)?,
        Write::AppendEvent {
            conversation_id,
            event,
        } => append_event(transaction, conversation_id.as_str(), event)?,
    };
    result.map(|_| ()).map_err(unavailable)
}

// Each writer returns the statement's result inside the conversion's: a value that cannot be
// turned into a column is corrupt, a statement that fails means storage is unavailable.

fn put_user(
    transaction: &Transaction<'_>,
    stored: &StoredUser,
) -> Result<rusqlite::Result<usize>, StorageError> {
    let user = &stored.user;
    let created = format_time(user.created)?;
    let result = transaction
        .prepare_cached(
            "INSERT INTO users (id, seq, name, display_name, created) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                 display_name = excluded.display_name",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                user.id.as_str(),
                to_sql_id(stored.seq),
                user.name,
                user.display_name,
                created
            ])
        });
    Ok(result)
}

fn put_conversation(
    transaction: &Transaction<'_>,
    stored: &StoredConversation,
) -> Result<rusqlite::Result<usize>, StorageError> {
    let created = format_time(stored.created)?;
    let deleted = format_optional_time(stored.deleted)?;
    let ttl = stored.properties.ttl.map(to_sql_id);
    let result = transaction
        .prepare_cached(
            "INSERT INTO conversations (id, seq, name, display_name, video, ttl, created, deleted)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                 display_name = excluded.display_name, video = excluded.video,
                 ttl = excluded.ttl, deleted = excluded.deleted",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                stored.id.as_str(),
                to_sql_id(stored.seq),
                stored.name,
                stored.display_name,
                stored.properties.video,
                ttl,
                created,
                deleted
            ])
        });
    Ok(result)
}

fn put_member(
    transaction: &Transaction<'_>,
    stored: &StoredMember,
) -> Result<rusqlite::Result<usize>, StorageError> {
    let member = &stored.member;
    let channel = serde_json::to_string(&member.channel)
        .map_err(|error| corrupt(format!("channel of member {}: {error}", member.id)))?;
    let invited = format_optional_time(member.timestamp.invited)?;
    let joined = format_optional_time(member.timestamp.joined)?;
    let left = format_optional_time(member.timestamp.left)?;
    let result = transaction
        .prepare_cached(
            "INSERT INTO members (id, seq, conversation_id, user_id, user_name, state, invited,
                 joined, left, invited_by, channel, audio_muted, video_muted)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT (id) DO UPDATE SET user_name = excluded.user_name,
                 state = excluded.state, invited = excluded.invited, joined = excluded.joined,
                 left = excluded.left, invited_by = excluded.invited_by,
                 channel = excluded.channel, audio_muted = excluded.audio_muted,
                 video_muted = excluded.video_muted",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                member.id.as_str(),
                to_sql_id(stored.seq),
                member.conversation_id.as_str(),
                member.user_id.as_str(),
                member.user_name,
                member.state.as_str(),
                invited,
                joined,
                left,
                member.invited_by,
                channel,
                member.media.audio_settings.muted,
                member.media.video_settings.muted
            ])
        });
    Ok(result)
}

fn append_event(
    transaction: &Transaction<'_>,
    conversation_id: &str,
    event: &Event,
) -> Result<rusqlite::Result<usize>, StorageError> {
    let timestamp = format_time(event.timestamp)?;
    let body = event.body.to_string();
    let result = transaction
        .prepare_cached(
            "INSERT INTO events (conversation_id, id, type, from_member, to_member, body,
                 timestamp)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut statement| {
            statement.execute(params![
                conversation_id,
                to_sql_id(event.id),
                event.kind.as_str(),
                event.from.as_ref().map(|id| id.as_str()),
                event.to.as_ref().map(|id| id.as_str()),
                body,
                timestamp
            ])
        });
    Ok(result)
}

pub(crate) fn load_users(connection: &Connection) -> Result<Vec<StoredUser>, StorageError> {
    let mut statement = connection
        .prepare("SELECT seq, id, name, display_name, created FROM users ORDER BY seq")
        .map_err(unavailable)?;
    let rows = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, String>(4)?,
            ))
        })
        .map_err(unavailable)?;

    let mut users = Vec::new();
    for row in rows {
        let (seq, id, name, display_name, created) = row.map_err(unavailable)?;
        users.push(StoredUser {
            seq: from_sql_id(seq, "user sequence number")?,
            user: User {
                id: id.into(),
                name,
                display_name,
                created: parse_time(&created)?,
            },
        });
    }
    Ok(users)
}

pub(crate) fn load_conversations(
    connection: &Connection,
) -> Result<Vec<LoadedConversation>, StorageError> {
    let mut statement = connection
        .prepare(
            "SELECT seq, id, name, display_name, video, ttl, created, deleted,
                 (SELECT COALESCE(MAX(events.id), 0) FROM events
                  WHERE events.conversation_id = conversations.id)
             FROM conversations ORDER BY seq",
        )
        .map_err(unavailable)?;
    let rows = statement
        .query_map([], |row| {
            Ok(ConversationRow {
                seq: row.get(0)?,
                id: row.get(1)?,
                name: row.get(2)?,
                display_name: row.get(3)?,
                video: row.get(4)?,
                ttl: row.get(5)?,
                created: row.get(6)?,
                deleted: row.get(7)?,
                last_event_id: row.get(8)?,
            })
        })
        .map_err(unavailable)?;

    let mut conversations = Vec::new();
    for row in rows {
        conversations.push(row.map_err(unavailable)?.into_loaded()?);
    }
    Ok(conversations)
}

struct ConversationRow {
    seq: i64,
    id: String,
    name: String,
    display_name: Option<String>,
    video: bool,
    ttl: Option<i64>,
    created: String,
    deleted: Option<String>,
    last_event_id: i64,
}

impl ConversationRow {
    fn into_loaded(self) -> Result<LoadedConversation, StorageError> {
        let ttl = self
            .ttl
            .map(|ttl| from_sql_id(ttl, "conversation ttl"))
            .transpose()?;
        Ok(LoadedConversation {
            conversation: StoredConversation {
                seq: from_sql_id(self.seq, "conversation sequence number")?,
                id: self.id.into(),
                name: self.name,
                display_name: self.display_name,
                properties: ConversationProperties {
                    video: self.video,
                    ttl,
                },
                created: parse_time(&self.created)?,
                deleted: parse_optional_time(self.deleted)?,
            },
            last_event_id: from_sql_id(self.last_event_id, "event id")?,
        })
    }
}

pub(crate) fn load_members(connection: &Connection) -> Result<Vec<StoredMember>, StorageError> {
    let mut statement = connection
        .prepare(
            "SELECT seq, id, conversation_id, user_id, user_name, state, invited, joined, left,
                 invited_by, channel, audio_muted, video_muted
             FROM members ORDER BY seq",
        )
        .map_err(unavailable)?;
    let rows = statement
        .query_map([], |row| {
            Ok(MemberRow {
                seq: row.get(0)?,
                id: row.get(1)?,
                conversation_id: row.get(2)?,
                user_id: row.get(3)?,
                user_name: row.get(4)?,
                state: row.get(5)?,
                invited: row.get(6)?,
                joined: row.get(7)?,
                left: row.get(8)?,
                invited_by: row.get(9)?,
                channel: row.get(10)?,
                audio_muted: row.get(11)?,
                video_muted: row.get(12)?,
            })
        })
        .map_err(unavailable)?;

    let mut members = Vec::new();
    for row in rows {
        members.push(row.map_err(unavailable)?.into_stored()?);
    }
    Ok(members)
}

struct MemberRow {
    seq: i64,
    id: String,
    conversation_id: String,
    user_id: String,
    user_name: String,
    state: String,
    invited: Option<String>,
    joined: Option<String>,
    left: Option<String>,
    invited_by: Option<String>,
    channel: String,
    audio_muted: bool,
    video_muted: bool,
}

impl MemberRow {
    fn into_stored(self) -> Result<StoredMember, StorageError> {
        let state = match self.state.as_str() {
            "INVITED" => MemberState::Invited,
            "JOINED" => MemberState::Joined,
            "LEFT" => MemberState::Left,
            other => return Err(corrupt(format!("member {} has state {other:?}", self.id))),
        };
        let channel: Channel = serde_json::from_str(&self.channel)
            .map_err(|error| corrupt(format!("channel of member {}: {error}", self.id)))?;
        let media = MemberMedia {
            audio_settings: TrackSettings {
                enabled: false,
                muted: self.audio_muted,
            },
            video_settings: TrackSettings {
                enabled: false,
                muted: self.video_muted,
            },
        };

        Ok(StoredMember {
            seq: from_sql_id(self.seq, "member sequence number")?,
            member: Member {
                id: self.id.into(),
                conversation_id: self.conversation_id.into(),
                user_id: self.user_id.into(),
                user_name: self.user_name,
                state,
                timestamp: MemberTimestamps {
                    invited: parse_optional_time(self.invited)?,
                    joined: parse_optional_time(self.joined)?,
                    left: parse_optional_time(self.left)?,
                },
                channel,
                invited_by: self.invited_by,
                media,
            },
        })
    }
}

/// An event row as read, turned into an [`Event`] outside the row callback so that a bad
/// value becomes a [`StorageError::Corrupt`].
pub(crate) struct EventRow {
    id: i64,
    kind: String,
    from: Option<String>,
    to: Option<String>,
    body: String,
    timestamp: String,
}

impl EventRow {
    pub(crate) fn read(row: &Row<'_>) -> rusqlite::Result<EventRow> {
        Ok(EventRow {
            id: row.get(0)?,
            kind: row.get(1)?,
            from: row.get(2)?,
            to: row.get(3)?,
            body: row.get(4)?,
            timestamp: row.get(5)?,
        })
    }

    pub(crate) fn into_event(self) -> Result<Event, StorageError> {
        let kind: EventType = self
            .kind
            .parse()
            .map_err(|_| corrupt(format!("event {} has type {:?}", self.id, self.kind)))?;
        let body = serde_json::from_str(&self.body)
            .map_err(|error| corrupt(format!("body of event {}: {error}", self.id)))?;
        Ok(Event {
            id: from_sql_id(self.id, "event id")?,
            kind,
            from: self.from.map(Into::into),
            to: self.to.map(Into::into),
            body,
            timestamp: parse_time(&self.timestamp)?,
        })
    }
}
