use std::{fs, path::PathBuf, sync::Arc};

use bytes::Bytes;

use super::*;
use crate::{LocalBackend, ObjectStoreBackend};

fn local() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(dir.path()).unwrap().with_fsync(false);
    (dir, Store::new(Arc::new(backend)))
}

fn memory() -> Store {
    Store::new(Arc::new(ObjectStoreBackend::memory().unwrap()))
}

/// Saves a checkpoint `name` holding one file `data` with `value`.
fn save(parent: &Store, name: &str, value: &'static [u8]) -> Store {
    let pending = PendingCheckpoint::begin(parent, name).unwrap();
    pending
        .store()
        .put("data", Bytes::from_static(value))
        .unwrap();
    pending.commit().unwrap()
}

fn overwrite() -> CommitOptions {
    CommitOptions::default().overwrite(true)
}

#[test]
fn local_writes_into_tmp_dir() {
    let (_dir, parent) = local();
    let pending = PendingCheckpoint::begin(&parent, "ckpt").unwrap();
    assert_eq!(pending.store().prefix(), "ckpt.orbax-checkpoint-tmp/");
    let metadata = CheckpointMetadata::read(pending.store()).unwrap().unwrap();
    assert!(metadata.init_timestamp_nsecs.is_some());
    assert_eq!(metadata.commit_timestamp_nsecs, None);
}

#[test]
fn local_commit_renames_tmp_dir() {
    let (dir, parent) = local();
    let committed = save(&parent, "ckpt", b"1");
    assert_eq!(parent.list_dirs().unwrap(), ["ckpt"]);
    assert_eq!(
        committed.get_required("data").unwrap(),
        Bytes::from_static(b"1")
    );

    let final_path: PathBuf = fs::canonicalize(dir.path()).unwrap().join("ckpt");
    let marker = committed.get_required(COMMIT_SUCCESS_FILE).unwrap();
    let expected = format!(
        "Checkpoint commit was successful to {}",
        final_path.display()
    );
    assert_eq!(marker, expected.as_bytes());

    let metadata = CheckpointMetadata::read(&committed).unwrap().unwrap();
    assert!(metadata.commit_timestamp_nsecs >= metadata.init_timestamp_nsecs);
    assert!(metadata.commit_timestamp_nsecs.is_some());
}

#[test]
fn local_nested_name() {
    let (_dir, parent) = local();
    save(&parent, "run/5", b"1");
    assert!(open_committed(&parent, "run/5").is_ok());
    assert_eq!(
        list_committed(&parent.child("run").unwrap()).unwrap(),
        ["5"]
    );
}

#[test]
fn local_stale_tmp_is_cleaned() {
    let (_dir, parent) = local();
    parent
        .put("ckpt.orbax-checkpoint-tmp/junk", Bytes::from_static(b"x"))
        .unwrap();
    let pending = PendingCheckpoint::begin(&parent, "ckpt").unwrap();
    assert_eq!(pending.store().list().unwrap(), [CHECKPOINT_METADATA_FILE]);
}

#[test]
fn local_tmp_dir_is_not_committed() {
    let (_dir, parent) = local();
    let _pending = PendingCheckpoint::begin(&parent, "ckpt").unwrap();
    let err = open_committed(&parent, "ckpt.orbax-checkpoint-tmp").unwrap_err();
    assert!(matches!(err, StorageError::NotCommitted { .. }), "{err}");
    let err = open_committed(&parent, "ckpt").unwrap_err();
    assert!(matches!(err, StorageError::NotFound { .. }), "{err}");
    assert!(list_committed(&parent).unwrap().is_empty());
}

#[test]
fn local_dir_without_marker_is_committed() {
    // Orbax's rename commit does not require commit_success.txt.
    let (dir, parent) = local();
    fs::create_dir(dir.path().join("orbax")).unwrap();
    fs::write(dir.path().join("orbax/_METADATA"), b"{}").unwrap();
    let opened = open_committed(&parent, "orbax").unwrap();
    assert!(opened.exists("_METADATA").unwrap());
    assert_eq!(list_committed(&parent).unwrap(), ["orbax"]);
}

#[test]
fn local_existing_checkpoint_is_kept() {
    let (_dir, parent) = local();
    save(&parent, "ckpt", b"1");
    let err = PendingCheckpoint::begin(&parent, "ckpt").unwrap_err();
    assert!(
        matches!(err, StorageError::CheckpointExists { .. }),
        "{err}"
    );
    let committed = open_committed(&parent, "ckpt").unwrap();
    assert_eq!(
        committed.get_required("data").unwrap(),
        Bytes::from_static(b"1")
    );
}

#[test]
fn local_commit_after_concurrent_save_fails() {
    let (_dir, parent) = local();
    let pending = PendingCheckpoint::begin(&parent, "ckpt").unwrap();
    save(&parent.clone(), "other", b"0");
    parent.rename_child("other", "ckpt").unwrap();
    let err = pending.commit().unwrap_err();
    assert!(
        matches!(err, StorageError::CheckpointExists { .. }),
        "{err}"
    );
    let dirs = parent.list_dirs().unwrap();
    assert_eq!(dirs, ["ckpt", "ckpt.orbax-checkpoint-tmp"]);
}

#[test]
fn local_overwrite_replaces() {
    let (_dir, parent) = local();
    save(&parent, "ckpt", b"old");
    let pending = PendingCheckpoint::begin_with(&parent, "ckpt", overwrite()).unwrap();
    pending
        .store()
        .put("new", Bytes::from_static(b"2"))
        .unwrap();
    let committed = pending.commit().unwrap();
    assert!(!committed.exists("data").unwrap());
    assert!(committed.exists("new").unwrap());
}

#[test]
fn local_abort_deletes_tmp_dir() {
    let (_dir, parent) = local();
    let pending = PendingCheckpoint::begin(&parent, "ckpt").unwrap();
    pending
        .store()
        .put("data", Bytes::from_static(b"1"))
        .unwrap();
    pending.abort().unwrap();
    assert!(parent.list().unwrap().is_empty());
    assert!(parent.list_dirs().unwrap().is_empty());
}

#[test]
fn memory_writes_under_final_name() {
    let parent = memory();
    let pending = PendingCheckpoint::begin(&parent, "ckpt").unwrap();
    assert_eq!(pending.store().prefix(), "ckpt/");
    let err = open_committed(&parent, "ckpt").unwrap_err();
    assert!(matches!(err, StorageError::NotCommitted { .. }), "{err}");
    assert!(err.to_string().contains(COMMIT_SUCCESS_FILE), "{err}");
    assert!(list_committed(&parent).unwrap().is_empty());
}

#[test]
fn memory_commit_writes_marker() {
    let parent = memory();
    let committed = save(&parent, "ckpt", b"1");
    assert_eq!(committed.url(), "memory:///ckpt");
    let marker = committed.get_required(COMMIT_SUCCESS_FILE).unwrap();
    assert_eq!(
        marker,
        "Checkpoint commit was successful to memory:///ckpt".as_bytes()
    );
    assert!(open_committed(&parent, "ckpt").is_ok());
    assert_eq!(list_committed(&parent).unwrap(), ["ckpt"]);
    let metadata = CheckpointMetadata::read(&committed).unwrap().unwrap();
    assert!(metadata.commit_timestamp_nsecs.is_some());
}

#[test]
fn memory_leftover_is_cleaned() {
    let parent = memory();
    parent.put("ckpt/junk", Bytes::from_static(b"x")).unwrap();
    let pending = PendingCheckpoint::begin(&parent, "ckpt").unwrap();
    assert_eq!(pending.store().list().unwrap(), [CHECKPOINT_METADATA_FILE]);
}

#[test]
fn memory_existing_checkpoint_is_kept() {
    let parent = memory();
    save(&parent, "ckpt", b"1");
    let err = PendingCheckpoint::begin(&parent, "ckpt").unwrap_err();
    assert!(
        matches!(err, StorageError::CheckpointExists { .. }),
        "{err}"
    );
    assert!(parent.exists("ckpt/data").unwrap());
}

#[test]
fn memory_overwrite_replaces() {
    let parent = memory();
    save(&parent, "ckpt", b"old");
    let pending = PendingCheckpoint::begin_with(&parent, "ckpt", overwrite()).unwrap();
    assert!(!parent.exists("ckpt/data").unwrap());
    pending.commit().unwrap();
    assert!(open_committed(&parent, "ckpt").is_ok());
}

#[test]
fn memory_second_commit_fails() {
    let parent = memory();
    let first = PendingCheckpoint::begin(&parent, "ckpt").unwrap();
    let second = PendingCheckpoint::begin(&parent, "ckpt").unwrap();
    first.commit().unwrap();
    let err = second.commit().unwrap_err();
    assert!(
        matches!(err, StorageError::CheckpointExists { .. }),
        "{err}"
    );
}

#[test]
fn memory_abort_deletes_files() {
    let parent = memory();
    let pending = PendingCheckpoint::begin(&parent, "ckpt").unwrap();
    pending
        .store()
        .put("data", Bytes::from_static(b"1"))
        .unwrap();
    pending.abort().unwrap();
    assert!(parent.list().unwrap().is_empty());
}

#[test]
fn missing_checkpoint_is_not_found() {
    for parent in [memory(), local().1] {
        let err = open_committed(&parent, "none").unwrap_err();
        assert!(matches!(err, StorageError::NotFound { .. }), "{err}");
    }
}

#[test]
fn metadata_records_handlers() {
    let parent = memory();
    let mut pending = PendingCheckpoint::begin(&parent, "ckpt").unwrap();
    pending.metadata_mut().item_handlers = Some(ItemHandlers::Single("Handler".into()));
    let committed = pending.commit().unwrap();
    let metadata = CheckpointMetadata::read(&committed).unwrap().unwrap();
    assert_eq!(
        metadata.item_handlers,
        Some(ItemHandlers::Single("Handler".into()))
    );
}

#[test]
fn escaping_names_are_rejected() {
    let parent = memory();
    let err = PendingCheckpoint::begin(&parent, "../x").unwrap_err();
    assert!(matches!(err, StorageError::InvalidKey { .. }), "{err}");
    let err = open_committed(&parent, "a/../../x").unwrap_err();
    assert!(matches!(err, StorageError::InvalidKey { .. }), "{err}");
}

#[test]
fn tmp_suffix_name_is_rejected() {
    let parent = memory();
    let err = PendingCheckpoint::begin(&parent, "x.orbax-checkpoint-tmp").unwrap_err();
    assert!(
        matches!(err, StorageError::InvalidCheckpointName { .. }),
        "{err}"
    );
    let err = PendingCheckpoint::begin(&parent, "x/").unwrap_err();
    assert!(
        matches!(err, StorageError::InvalidCheckpointName { .. }),
        "{err}"
    );
}

#[test]
fn orbax_fixtures_are_committed() {
    let testdata = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/orbax");
    let parent = Store::new(Arc::new(LocalBackend::new(testdata).unwrap()));
    let manager = open_committed(&parent, "d_manager/ckpt").unwrap();
    assert_eq!(list_committed(&manager).unwrap(), ["1", "2"]);
    let step = open_committed(&manager, "2").unwrap();
    let metadata = CheckpointMetadata::read(&step).unwrap().unwrap();
    let Some(ItemHandlers::Composite(handlers)) = &metadata.item_handlers else {
        panic!(
            "expected composite item handlers, got {:?}",
            metadata.item_handlers
        );
    };
    assert_eq!(handlers.len(), 2);
    let stored = step.get_required(CHECKPOINT_METADATA_FILE).unwrap();
    assert_eq!(metadata.to_json(), stored);
}

#[test]
fn orbax_metadata_files_round_trip() {
    let testdata = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/orbax");
    let parent = Store::new(Arc::new(LocalBackend::new(testdata).unwrap()));
    let files: Vec<String> = parent
        .list()
        .unwrap()
        .into_iter()
        .filter(|key| key.ends_with(CHECKPOINT_METADATA_FILE))
        .collect();
    assert!(files.len() >= 9, "found only {files:?}");
    for key in files {
        let stored = parent.get_required(&key).unwrap();
        let metadata = CheckpointMetadata::parse(&stored, &key).unwrap();
        assert_eq!(metadata.to_json(), stored, "{key} re-encodes differently");
    }
}
