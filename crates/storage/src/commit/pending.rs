use bytes::Bytes;

use super::{dir_exists, metadata::now_nsecs, COMMIT_SUCCESS_FILE, TMP_SUFFIX};
use crate::{validate_key, CheckpointMetadata, Result, StorageError, Store};

/// Options of a save's commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitOptions {
    /// Whether a committed checkpoint of the same name is deleted and
    /// replaced. Off by default, so that a save never silently replaces one.
    pub overwrite: bool,
}

impl CommitOptions {
    /// Sets whether a committed checkpoint of the same name is replaced.
    pub fn overwrite(mut self, overwrite: bool) -> CommitOptions {
        self.overwrite = overwrite;
        self
    }
}

/// A checkpoint directory being written, which becomes visible to readers at [`commit`](Self::commit).
///
/// On a backend with atomic rename the save writes into
/// `<name>.orbax-checkpoint-tmp` and `commit` renames it to `<name>`, as
/// Orbax does on local filesystems. Elsewhere the save writes under `<name>`
/// itself and the `commit_success.txt` file that `commit` writes last is
/// the commit point, as Orbax does on object stores. In both modes
/// `_CHECKPOINT_METADATA` is written when the save begins and again at commit.
///
/// Dropping a pending checkpoint leaves its directory as a crashed save
/// would; the next [`begin`](Self::begin) of the same name removes it.
#[derive(Debug)]
pub struct PendingCheckpoint {
    parent: Store,
    name: String,
    /// The directory written into: `<name>` plus the temporary suffix, or `<name>`.
    work_name: String,
    store: Store,
    metadata: CheckpointMetadata,
    options: CommitOptions,
}

impl PendingCheckpoint {
    /// Begins a save of the checkpoint `name` inside `parent`, with default options.
    pub fn begin(parent: &Store, name: &str) -> Result<PendingCheckpoint> {
        PendingCheckpoint::begin_with(parent, name, CommitOptions::default())
    }

    /// Begins a save of the checkpoint `name` inside `parent`.
    ///
    /// Fails with [`StorageError::CheckpointExists`] when a committed
    /// checkpoint of that name exists, unless `options.overwrite` is set.
    /// Removes what a crashed save of the same name left behind. With
    /// overwrite on a backend without atomic rename, the old checkpoint is
    /// deleted here, because the new one is written in its place.
    pub fn begin_with(
        parent: &Store,
        name: &str,
        options: CommitOptions,
    ) -> Result<PendingCheckpoint> {
        check_name(name)?;
        let rename = parent.capabilities().atomic_rename;
        let work_name = if rename {
            format!("{name}{TMP_SUFFIX}")
        } else {
            name.to_owned()
        };
        let store = parent.child(&work_name)?;

        // NOTE: an unfinished directory may also belong to a save of the same
        // name that another process is still writing. Nothing here can tell
        // the two apart, so concurrent saves of one name can delete or
        // overwrite each other's files. Only one of them commits, but the
        // files under that commit may be mixed.
        if rename {
            if dir_exists(parent, name)? && !options.overwrite {
                return Err(StorageError::CheckpointExists {
                    path: parent.child(name)?.url(),
                });
            }
            if dir_exists(parent, &work_name)? {
                tracing::info!(path = %store.url(), "removing the directory of an unfinished save");
                store.delete_all()?;
            }
        } else if store.exists(COMMIT_SUCCESS_FILE)? {
            if !options.overwrite {
                return Err(StorageError::CheckpointExists { path: store.url() });
            }
            tracing::info!(path = %store.url(), "deleting a committed checkpoint to overwrite it");
            store.delete_all()?;
        } else if !store.list()?.is_empty() {
            tracing::info!(path = %store.url(), "removing the files of an unfinished save");
            store.delete_all()?;
        }

        let metadata = CheckpointMetadata {
            init_timestamp_nsecs: Some(now_nsecs()),
            ..CheckpointMetadata::default()
        };
        metadata.write(&store)?;
        Ok(PendingCheckpoint {
            parent: parent.clone(),
            name: name.to_owned(),
            work_name,
            store,
            metadata,
            options,
        })
    }

    /// Returns the directory to write the checkpoint's files into.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Returns the name the checkpoint has once committed.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the `_CHECKPOINT_METADATA` that `commit` writes, to record item handlers, metrics or custom metadata.
    pub fn metadata_mut(&mut self) -> &mut CheckpointMetadata {
        &mut self.metadata
    }

    /// Commits the checkpoint and returns its final directory.
    ///
    /// Writes `_CHECKPOINT_METADATA` with the commit time, then
    /// `commit_success.txt`, then renames the temporary directory where the
    /// backend can. Fails with [`StorageError::CheckpointExists`] when a
    /// checkpoint of the same name was committed since `begin`, unless
    /// overwrite is set. The written files then stay where they are until
    /// the next `begin` of the name removes them.
    pub fn commit(mut self) -> Result<Store> {
        self.metadata.commit_timestamp_nsecs = Some(now_nsecs());
        self.metadata.write(&self.store)?;

        let final_store = self.parent.child(&self.name)?;
        // Orbax names the path the checkpoint is committed to: a plain path
        // on local disks, a URL elsewhere.
        let final_path = match final_store.local_path() {
            Some(path) => path.display().to_string(),
            None => final_store.url(),
        };
        let marker = Bytes::from(format!("Checkpoint commit was successful to {final_path}"));

        if !self.parent.capabilities().atomic_rename {
            return match self.store.put_if_absent(COMMIT_SUCCESS_FILE, marker) {
                Ok(()) => Ok(final_store),
                Err(StorageError::AlreadyExists { .. }) => Err(StorageError::CheckpointExists {
                    path: final_store.url(),
                }),
                Err(error) => Err(error),
            };
        }

        self.store.put(COMMIT_SUCCESS_FILE, marker)?;
        if self.options.overwrite && dir_exists(&self.parent, &self.name)? {
            // NOTE: between this delete and the rename below no checkpoint of
            // this name exists, so a crash here loses the old one.
            tracing::info!(path = %final_store.url(), "deleting a committed checkpoint to overwrite it");
            final_store.delete_all()?;
        }
        match self.parent.rename_child(&self.work_name, &self.name) {
            Ok(()) => Ok(final_store),
            Err(StorageError::AlreadyExists { .. }) => Err(StorageError::CheckpointExists {
                path: final_store.url(),
            }),
            Err(error) => Err(error),
        }
    }

    /// Abandons the save and deletes everything it wrote.
    pub fn abort(self) -> Result<()> {
        self.store.delete_all()
    }
}

fn check_name(name: &str) -> Result<()> {
    validate_key(name)?;
    if name.contains(TMP_SUFFIX) {
        return Err(StorageError::InvalidCheckpointName {
            name: name.to_owned(),
            reason: format!(
                "{TMP_SUFFIX} marks unfinished saves, so a committed checkpoint cannot carry it"
            ),
        });
    }
    if name.ends_with('/') {
        return Err(StorageError::InvalidCheckpointName {
            name: name.to_owned(),
            reason: "a checkpoint name does not end in \"/\"".to_owned(),
        });
    }
    Ok(())
}
