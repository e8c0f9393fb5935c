//! Opening the node's durable storage and the registry on top of it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use room::storage::{EventRange, LoadedState, Storage, StorageError, Write};
use room::{ConversationId, Event, Registry};
use store::SqliteStore;
use tempfile::TempDir;
use tracing::info;

use crate::config::StorageSettings;

/// Opens the SQLite database in the configured data directory, or in a fresh temporary one,
/// and loads the registry from it. Returns the registry and the data directory in use.
pub(crate) fn open_registry(settings: &StorageSettings) -> anyhow::Result<(Registry, PathBuf)> {
    let (storage, data_dir): (Arc<dyn Storage>, _) = if settings.temporary_data_dir {
        let store = TemporaryStore::create()?;
        let data_dir = store.directory.path().to_owned();
        (Arc::new(store), data_dir)
    } else {
        let data_dir = &settings.data_dir;
        // NOTE: Nothing stops a second node from opening the same data directory, and the two
        // would then assign the same event ids. A lock file (std's File::try_lock) would.
        let store = SqliteStore::open(data_dir)
            .with_context(|| format!("failed to open storage.data_dir {}", data_dir.display()))?;
        (Arc::new(store), data_dir.clone())
    };

    let registry = Registry::with_storage(storage).with_context(|| {
        format!(
            "failed to load the stored users and conversations from storage.data_dir {}",
            data_dir.display()
        )
    })?;
    info!(
        data_dir = %shown(&data_dir),
        temporary = settings.temporary_data_dir,
        users = registry.users().len(),
        conversations = registry.census().conversations,
        "storage opened"
    );
    Ok((registry, data_dir))
}

/// Returns the absolute form of a path for the log, because a relative data directory
/// depends on the working directory the node was started in.
fn shown(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_owned())
        .display()
        .to_string()
}

/// A SQLite store in a temporary directory that is removed when the store is dropped, that
/// is when the last holder of the registry lets it go.
struct TemporaryStore {
    // Fields drop in declaration order, so the database closes before its directory goes.
    store: SqliteStore,
    directory: TempDir,
}

impl TemporaryStore {
    fn create() -> anyhow::Result<TemporaryStore> {
        let directory = tempfile::Builder::new()
            .prefix("switchboard-data-")
            .tempdir()
            .context("failed to create a temporary data directory")?;
        let store = SqliteStore::open(directory.path()).with_context(|| {
            format!(
                "failed to open storage in the temporary directory {}",
                directory.path().display()
            )
        })?;
        Ok(TemporaryStore { store, directory })
    }
}

impl Storage for TemporaryStore {
    fn load(&self) -> Result<LoadedState, StorageError> {
        self.store.load()
    }

    fn commit(&self, batch: &[Write]) -> Result<(), StorageError> {
        self.store.commit(batch)
    }

    fn events(
        &self,
        conversation_id: &ConversationId,
        range: &EventRange,
    ) -> Result<Vec<Event>, StorageError> {
        self.store.events(conversation_id, range)
    }
}

#[cfg(test)]
mod tests {
    use room::NewUser;

    use super::*;

    #[test]
    fn temporary_directory_is_removed_with_the_registry() {
        let settings = StorageSettings {
            temporary_data_dir: true,
            ..StorageSettings::default()
        };
        let (registry, data_dir) = open_registry(&settings).expect("open");
        registry
            .create_user(NewUser {
                name: "alice".to_owned(),
                display_name: None,
            })
            .expect("create a user");
        assert!(data_dir.join(store::DATABASE_FILE_NAME).is_file());

        drop(registry);
        assert!(!data_dir.exists(), "{} is left", data_dir.display());
    }

    #[test]
    fn unusable_data_dir_is_named() {
        let file = tempfile::NamedTempFile::new().expect("a temporary file");
        let settings = StorageSettings {
            data_dir: file.path().join("data"),
            temporary_data_dir: false,
        };
        let error = open_registry(&settings).expect_err("a data_dir inside a file");
        let message = format!("{error:#}");
        assert!(message.contains("storage.data_dir"), "{message}");
        assert!(
            message.contains(&file.path().display().to_string()),
            "{message}"
        );
    }
}
