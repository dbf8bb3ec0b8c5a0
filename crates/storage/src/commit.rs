//! The commit protocol of Orbax checkpoints: temporary names, the commit
//! marker and `_CHECKPOINT_METADATA`.
//!
//! A checkpoint is committed when its directory name lacks
//! [`TMP_SUFFIX`] and, on backends without atomic rename, it contains
//! [`COMMIT_SUCCESS_FILE`]. Nothing else lists or opens a checkpoint.

mod metadata;
mod pending;

pub use self::{
    metadata::{
        CheckpointMetadata, ItemHandlers, CHECKPOINT_METADATA_FILE, MAX_CHECKPOINT_METADATA_BYTES,
    },
    pending::{CommitOptions, PendingCheckpoint},
};
use crate::{validate_key, Result, StorageError, Store};

/// Suffix of the directory that a save writes into before renaming it, as Orbax names it.
pub const TMP_SUFFIX: &str = ".orbax-checkpoint-tmp";

/// Name of the marker file that a commit writes last inside the checkpoint directory.
pub const COMMIT_SUCCESS_FILE: &str = "commit_success.txt";

/// Opens the committed checkpoint `name` inside `parent`.
///
/// On a backend with atomic rename, any directory whose name lacks
/// [`TMP_SUFFIX`] is committed, as Orbax decides there: a directory written
/// by Orbax need not contain [`COMMIT_SUCCESS_FILE`]. Elsewhere the marker
/// file must exist. Fails with [`StorageError::NotCommitted`] for a name
/// with the temporary suffix or a directory without its marker, and with
/// [`StorageError::NotFound`] when nothing of that name exists.
pub fn open_committed(parent: &Store, name: &str) -> Result<Store> {
    validate_key(name)?;
    let dir = parent.child(name)?;
    if name.contains(TMP_SUFFIX) {
        return Err(StorageError::NotCommitted {
            path: dir.url(),
            reason: format!(
                "its name contains {TMP_SUFFIX}, which marks a save that has not finished"
            ),
        });
    }
    if dir.exists(COMMIT_SUCCESS_FILE)? {
        return Ok(dir);
    }
    if !dir_exists(parent, name)? {
        return Err(StorageError::NotFound {
            store: parent.url(),
            key: name.to_owned(),
        });
    }
    if parent.capabilities().atomic_rename {
        return Ok(dir);
    }
    Err(StorageError::NotCommitted {
        path: dir.url(),
        reason: format!(
            "{COMMIT_SUCCESS_FILE} is missing, and on a store without atomic rename that file marks a finished save"
        ),
    })
}

/// Lists the names of the committed checkpoint directories directly inside `parent`, sorted.
///
/// Every committed directory counts, whatever its name, so callers filter
/// out directories that are not checkpoints (such as a manager's `metadata`).
/// On a backend without atomic rename this reads one marker per directory.
pub fn list_committed(parent: &Store) -> Result<Vec<String>> {
    let rename = parent.capabilities().atomic_rename;
    let mut committed = Vec::new();
    for name in parent.list_dirs()? {
        if name.contains(TMP_SUFFIX) {
            continue;
        }
        if rename || parent.child(&name)?.exists(COMMIT_SUCCESS_FILE)? {
            committed.push(name);
        }
    }
    Ok(committed)
}

/// Checks whether a directory `name`, which may have several segments, exists inside `parent`.
///
/// Listing the parent finds empty directories on local disks, which have no keys below them.
fn dir_exists(parent: &Store, name: &str) -> Result<bool> {
    let (base, last) = match name.trim_end_matches('/').rsplit_once('/') {
        Some((base, last)) => (parent.child(base)?, last),
        None => (parent.clone(), name.trim_end_matches('/')),
    };
    Ok(base.list_dirs()?.iter().any(|dir| dir == last))
}

#[cfg(test)]
mod tests;
