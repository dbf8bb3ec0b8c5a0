//! Background saves with `AsyncCheckpointer`: snapshots, failures that
//! surface later, back-pressure and the commit protocol.

mod async_support;

use std::{
    num::NonZeroUsize,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use async_support::{
    controller, controller_on, restored_count, restored_w, sharded_array, tree, values, MutableMemory,
    TestBackend,
};
use ckpt::{
    colocated::{ArrayId, Generator, HostCall},
    storage::{list_committed, StorageError},
    AsyncCheckpointer, AsyncOptions, CkptError, JsonSave, PyTreeRestore, PyTreeSave, StandardSave,
};
use serde_json::json;

#[test]
fn save_then_mutate_keeps_saved_values() {
    let memory = Arc::new(MutableMemory::default());
    let controller = controller_on(Arc::clone(&memory));
    let original = values(32, 0.0);
    let array = sharded_array(&controller, &original);
    let dir = tempfile::tempdir().unwrap();
    let backend = TestBackend::local(dir.path());
    let parent = backend.store();
    let checkpointer = AsyncCheckpointer::new(Arc::clone(&controller));

    // Hold the background writes so that the mutation happens before any byte is written.
    backend.hold_writes_containing("ckpt");
    checkpointer.save(&parent, "ckpt", PyTreeSave::new(tree(&array, 7))).unwrap();
    backend.wait_until_held();
    memory.overwrite_all(0xff);
    let live: Vec<f32> = bytemuck::pod_collect_to_vec(&controller.to_global_bytes(&array).unwrap());
    assert!(live.iter().all(|value| value.is_nan()), "the live array was not overwritten");
    backend.release();
    checkpointer.wait_until_finished().unwrap();

    let restored = checkpointer.restore(&parent, "ckpt", PyTreeRestore::new()).unwrap();
    assert_eq!(restored_w(&controller, &restored), original);
    assert_eq!(restored_count(&restored), Some(7));
}

#[test]
fn overwrite_replaces_committed_checkpoint() {
    let controller = controller();
    let array = sharded_array(&controller, &values(32, 1.0));
    let backend = TestBackend::memory();
    let parent = backend.store();
    let checkpointer = AsyncCheckpointer::new(Arc::clone(&controller));
    checkpointer.save(&parent, "ckpt", PyTreeSave::new(tree(&array, 1))).unwrap();
    checkpointer.wait_until_finished().unwrap();

    let err = checkpointer.save(&parent, "ckpt", PyTreeSave::new(tree(&array, 2))).unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");

    let overwriting = AsyncCheckpointer::new(Arc::clone(&controller)).with_overwrite(true);
    overwriting.save(&parent, "ckpt", PyTreeSave::new(tree(&array, 2))).unwrap();
    overwriting.wait_until_finished().unwrap();
    let restored = overwriting.restore(&parent, "ckpt", PyTreeRestore::new()).unwrap();
    assert_eq!(restored_count(&restored), Some(2));
    assert_eq!(list_committed(&parent).unwrap(), ["ckpt"]);
}

#[test]
fn write_failure_surfaces_on_wait() {
    let controller = controller();
    let array = sharded_array(&controller, &values(32, 1.0));
    let dir = tempfile::tempdir().unwrap();
    let backend = TestBackend::local(dir.path());
    let parent = backend.store();
    let checkpointer = AsyncCheckpointer::new(Arc::clone(&controller));

    checkpointer.save(&parent, "good", PyTreeSave::new(tree(&array, 1))).unwrap();
    checkpointer.wait_until_finished().unwrap();
    backend.fail_writes_containing(Some("broken"));
    checkpointer.save(&parent, "broken", PyTreeSave::new(tree(&array, 2))).unwrap();

    let err = checkpointer.wait_until_finished().unwrap_err();
    assert!(matches!(err, CkptError::Background { ref operation, .. } if operation.contains("broken")), "{err}");
    assert_eq!(list_committed(&parent).unwrap(), ["good"]);
    assert!(checkpointer.wait_until_finished().is_ok(), "a failure is returned once");
}

#[test]
fn write_failure_surfaces_on_next_save() {
    let controller = controller();
    let array = sharded_array(&controller, &values(32, 1.0));
    let backend = TestBackend::memory();
    let parent = backend.store();
    let checkpointer = AsyncCheckpointer::new(Arc::clone(&controller));

    backend.fail_writes_containing(Some("broken"));
    checkpointer.save(&parent, "broken", PyTreeSave::new(tree(&array, 1))).unwrap();
    let err = checkpointer.save(&parent, "next", PyTreeSave::new(tree(&array, 2))).unwrap_err();
    assert!(matches!(err, CkptError::Background { ref operation, .. } if operation.contains("broken")), "{err}");
    checkpointer.wait_until_finished().unwrap();
    assert!(list_committed(&parent).unwrap().is_empty(), "the save that reported the failure started nothing");

    checkpointer.save(&parent, "next", PyTreeSave::new(tree(&array, 2))).unwrap();
    checkpointer.wait_until_finished().unwrap();
    assert_eq!(list_committed(&parent).unwrap(), ["next"]);
}

#[test]
fn save_waits_for_staging_budget() {
    let controller = controller();
    let array = sharded_array(&controller, &values(32, 1.0));
    let dir = tempfile::tempdir().unwrap();
    let backend = TestBackend::local(dir.path());
    let parent = backend.store();
    // Room for two saves by count, but the bytes of only one (128 bytes of array each).
    let options = AsyncOptions::default()
        .with_max_saves_in_flight(NonZeroUsize::new(2).unwrap())
        .with_max_staging_bytes(Some(200));
    let checkpointer = Arc::new(AsyncCheckpointer::new(Arc::clone(&controller)).with_options(options));

    backend.hold_writes_containing("first");
    checkpointer.save(&parent, "first", PyTreeSave::new(tree(&array, 1))).unwrap();
    backend.wait_until_held();
    let returned = Arc::new(AtomicBool::new(false));
    let second = {
        let (checkpointer, parent, array, returned) =
            (Arc::clone(&checkpointer), parent.clone(), array.clone(), Arc::clone(&returned));
        thread::spawn(move || {
            let result = checkpointer.save(&parent, "second", PyTreeSave::new(tree(&array, 2)));
            returned.store(true, Ordering::SeqCst);
            result
        })
    };
    thread::sleep(Duration::from_millis(200));
    assert!(!returned.load(Ordering::SeqCst), "the second save did not wait for the budget");
    assert!(checkpointer.is_saving());

    backend.release();
    second.join().unwrap().unwrap();
    checkpointer.wait_until_finished().unwrap();
    assert_eq!(list_committed(&parent).unwrap(), ["first", "second"]);
}

#[test]
fn same_name_in_flight_rejected() {
    let controller = controller();
    let array = sharded_array(&controller, &values(32, 1.0));
    let dir = tempfile::tempdir().unwrap();
    let backend = TestBackend::local(dir.path());
    let parent = backend.store();
    let checkpointer = AsyncCheckpointer::new(Arc::clone(&controller));

    backend.hold_writes_containing("ckpt");
    checkpointer.save(&parent, "ckpt", PyTreeSave::new(tree(&array, 1))).unwrap();
    let err = checkpointer.save(&parent, "ckpt", PyTreeSave::new(tree(&array, 2))).unwrap_err();
    assert!(matches!(err, CkptError::SaveInProgress { .. }), "{err}");
    backend.release();
    checkpointer.wait_until_finished().unwrap();
}

#[test]
fn committed_name_rejected() {
    let controller = controller();
    let array = sharded_array(&controller, &values(32, 1.0));
    let dir = tempfile::tempdir().unwrap();
    let parent = ckpt::storage::open_store(dir.path().to_str().unwrap()).unwrap();
    let checkpointer = AsyncCheckpointer::new(Arc::clone(&controller));

    checkpointer.save(&parent, "ckpt", PyTreeSave::new(tree(&array, 1))).unwrap();
    checkpointer.wait_until_finished().unwrap();
    let err = checkpointer.save(&parent, "ckpt", PyTreeSave::new(tree(&array, 2))).unwrap_err();
    assert!(matches!(err, CkptError::Storage(StorageError::CheckpointExists { .. })), "{err}");
}

#[test]
fn replicated_boxes_saved_whole() {
    // Every box of the array is held by two devices. The snapshot keeps one
    // replica, which must then write the whole box.
    let controller = controller();
    let original = values(32, -3.0);
    let array = sharded_array(&controller, &original);
    let dir = tempfile::tempdir().unwrap();
    let parent = ckpt::storage::open_store(dir.path().to_str().unwrap()).unwrap();
    let checkpointer = AsyncCheckpointer::new(Arc::clone(&controller));

    for (name, colocated) in [("gathered", false), ("colocated", true)] {
        let args = StandardSave::new(tree(&array, 3)).with_colocated(colocated);
        checkpointer.save(&parent, name, args).unwrap();
        checkpointer.wait_until_finished().unwrap();
        let restored = checkpointer.restore(&parent, name, PyTreeRestore::new()).unwrap();
        assert_eq!(restored_w(&controller, &restored), original, "{name}");
    }
}

#[test]
fn snapshot_copies_are_dropped() {
    let controller = controller();
    let array = sharded_array(&controller, &values(32, 1.0));
    let dir = tempfile::tempdir().unwrap();
    let parent = ckpt::storage::open_store(dir.path().to_str().unwrap()).unwrap();
    let checkpointer = AsyncCheckpointer::new(Arc::clone(&controller));

    checkpointer.save(&parent, "ckpt", PyTreeSave::new(tree(&array, 1))).unwrap();
    checkpointer.wait_until_finished().unwrap();
    // Array ids are handed out in order: the snapshot took the id after the array's.
    let snapshot = ArrayId(array.id().0 + 1);
    let generator = Generator::new(0);
    let calls = controller
        .all_hosts()
        .into_iter()
        .map(|host| (host, HostCall::Verify { id: snapshot, generator }))
        .collect();
    let err = controller.call(calls).unwrap_err();
    assert!(err.to_string().contains("is not on host"), "{err}");
}

#[test]
fn json_checkpoint_round_trips() {
    let controller = controller();
    let dir = tempfile::tempdir().unwrap();
    let parent = ckpt::storage::open_store(dir.path().to_str().unwrap()).unwrap();
    let checkpointer = AsyncCheckpointer::new(controller);
    let document = json!({"epoch": 3, "note": "caf\u{e9}"});

    checkpointer.save(&parent, "extra", JsonSave::new(document.clone())).unwrap();
    checkpointer.wait_until_finished().unwrap();
    assert_eq!(checkpointer.restore_json(&parent, "extra").unwrap(), document);
    let file = std::fs::read(dir.path().join("extra/metadata")).unwrap();
    assert_eq!(file, br#"{"epoch": 3, "note": "caf\u00e9"}"#);
}

