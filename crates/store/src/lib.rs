//! Durable storage of a Switchboard node in an embedded SQLite file.
//!
//! [`SqliteStore`] implements [`room::Storage`]: users, conversations (with deletion
//! tombstones), members and every conversation's event log, in `switchboard.sqlite3` inside
//! the node's data directory. Legs are live state and are never stored.

mod rows;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use room::storage::{EventRange, LoadedState, Storage, StorageError, Write};
use room::{ConversationId, Event, Order};
use rusqlite::{Connection, OpenFlags, params};

/// Name of the database file inside the data directory.
pub const DATABASE_FILE_NAME: &str = "switchboard.sqlite3";

/// How long a statement waits for a lock held by another connection before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Failure to open the database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The data directory could not be created.
    #[error("failed to create the data directory {path}: {source}")]
    CreateDirectory {
        path: PathBuf,
        source: std::io::Error,
    },
    /// SQLite could not open or prepare the database file.
    #[error("failed to open the database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// The file was written by a newer version of Switchboard.
    #[error(
        "the database {path} has schema version {found}, newer than version {supported} that \
         this node knows; run a newer node or restore an older data directory"
    )]
    UnsupportedSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
}

/// Users, conversations, members and event logs in one SQLite file.
///
/// One connection writes and another reads event logs, so that reading a long log does not
/// hold up commits. The file uses write-ahead logging with `synchronous=NORMAL`: a commit is
/// durable against a crash of the process, and against a power loss all but the last few
/// commits are.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) `switchboard.sqlite3` in `data_dir`, which is created too,
    /// and creates or checks its schema.
    pub fn open(data_dir: &Path) -> Result<SqliteStore, OpenError> {
        std::fs::create_dir_all(data_dir).map_err(|source| OpenError::CreateDirectory {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DATABASE_FILE_NAME);
        let sqlite_error = |source| OpenError::Sqlite {
            path: path.clone(),
            source,
        };

        let mut writer = open_connection(&path, OpenFlags::default()).map_err(sqlite_error)?;
        schema::migrate(&mut writer, &path)?;
        let read_only = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let reader = open_connection(&path, read_only).map_err(sqlite_error)?;

        Ok(SqliteStore {
            path,
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open_connection(path: &Path, flags: OpenFlags) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(path, flags)?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    if !flags.contains(OpenFlags::SQLITE_OPEN_READ_ONLY) {
        connection.pragma_update(None, "journal_mode", "WAL")?;
    }
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.pragma_update(None, "foreign_keys", true)?;
    Ok(connection)
}

/// Locks a connection. A connection has no state of ours that a panic could leave half
/// changed (an open transaction rolls back when it is dropped), so a poisoned lock is used.
fn lock(connection: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    connection
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Storage for SqliteStore {
    fn load(&self) -> Result<LoadedState, StorageError> {
        let connection = lock(&self.writer);
        Ok(LoadedState {
            users: rows::load_users(&connection)?,
            conversations: rows::load_conversations(&connection)?,
            members: rows::load_members(&connection)?,
        })
    }

    fn commit(&self, batch: &[Write]) -> Result<(), StorageError> {
        let mut connection = lock(&self.writer);
        let transaction = connection.transaction().map_err(unavailable)?;
        for write in batch {
            rows::apply(&transaction, write)?;
        }
        transaction.commit().map_err(unavailable)
    }

    fn events(
        &self,
        conversation_id: &ConversationId,
        range: &EventRange,
    ) -> Result<Vec<Event>, StorageError> {
        let connection = lock(&self.reader);
        let sql = match range.order {
            Order::Asc => rows::SELECT_EVENTS_ASC,
            Order::Desc => rows::SELECT_EVENTS_DESC,
        };
        let mut statement = connection.prepare_cached(sql).map_err(unavailable)?;
        let limit = i64::try_from(range.limit).unwrap_or(i64::MAX);
        let rows = statement
            .query_map(
                params![
                    conversation_id.as_str(),
                    rows::to_sql_id(range.start_id),
                    rows::to_sql_id(range.end_id),
                    limit
                ],
                rows::EventRow::read,
            )
            .map_err(unavailable)?;

        let mut events = Vec::new();
        for row in rows {
            events.push(row.map_err(unavailable)?.into_event()?);
        }
        Ok(events)
    }
}

pub(crate) fn unavailable(error: rusqlite::Error) -> StorageError {
    StorageError::Unavailable(error.to_string())
}
