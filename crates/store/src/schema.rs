//! The database schema and its version check.

use std::path::Path;

use rusqlite::Connection;

use crate::OpenError;

/// Version of the schema below, kept in SQLite's `user_version`. A file with 0 is new.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// Version 1. Timestamps are RFC 3339 text in UTC. `seq` is the registry's creation sequence
/// number, the order of lists. Members keep their user's id and name without a foreign key,
/// because they outlive deleted users. A deleted conversation keeps its row as a tombstone,
/// so only names of conversations that exist are unique.
const SCHEMA_V1: &str = "
CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    seq INTEGER NOT NULL UNIQUE,
    name TEXT NOT NULL UNIQUE,
    display_name TEXT,
    created TEXT NOT NULL
);

CREATE TABLE conversations (
    id TEXT PRIMARY KEY NOT NULL,
    seq INTEGER NOT NULL UNIQUE,
    name TEXT NOT NULL,
    display_name TEXT,
    video INTEGER NOT NULL,
    ttl INTEGER,
    created TEXT NOT NULL,
    deleted TEXT
);
CREATE UNIQUE INDEX conversations_name ON conversations (name) WHERE deleted IS NULL;

CREATE TABLE members (
    id TEXT PRIMARY KEY NOT NULL,
    seq INTEGER NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    state TEXT NOT NULL,
    invited TEXT,
    joined TEXT,
    left TEXT,
    invited_by TEXT,
    channel TEXT NOT NULL,
    audio_muted INTEGER NOT NULL,
    video_muted INTEGER NOT NULL
);
CREATE INDEX members_conversation ON members (conversation_id);

CREATE TABLE events (
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    id INTEGER NOT NULL,
    type TEXT NOT NULL,
    from_member TEXT,
    to_member TEXT,
    body TEXT NOT NULL,
    timestamp TEXT NOT NULL,
    PRIMARY KEY (conversation_id, id)
) WITHOUT ROWID;
";

/// Creates the schema in a new file, or checks the version of an existing one.
pub(crate) fn migrate(connection: &mut Connection, path: &Path) -> Result<(), OpenError> {
    let sqlite_error = |source| OpenError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let transaction = connection.transaction().map_err(sqlite_error)?;
    let version: i64 = transaction
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite_error)?;

    match version {
        0 => {
            transaction.execute_batch(SCHEMA_V1).map_err(sqlite_error)?;
            transaction
                .pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(sqlite_error)?;
        }
        SCHEMA_VERSION => {}
        found => {
            return Err(OpenError::UnsupportedSchema {
                path: path.to_owned(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
    }
    transaction.commit().map_err(sqlite_error)
}
