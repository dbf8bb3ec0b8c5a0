//! `CheckpointManager`: the Orbax layout, save decisions, retention,
//! background saves and failures, cleanup, and reading a manager directory
//! written by Python Orbax.

mod async_support;

use std::{
    num::{NonZeroU64, NonZeroUsize},
    path::Path,
    sync::Arc,
};

use async_support::{controller, restored_count, restored_w, sharded_array, tree, values, TestBackend};
use bytes::Bytes;
use ckpt::{
    colocated::{Controller, InProcessRuntime},
    device::Topology,
    pytree::param_name,
    storage::{open_store, CheckpointMetadata, ItemHandlers, StorageError, Store},
    BestMode, CheckpointManager, CheckpointManagerOptions, CkptError, Composite, CompositeRestore,
    JsonRestore, JsonSave, Leaf, Metrics, PyTreeRestore, StandardSave, StepNameFormat,
    StepSaveOptions,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Builds the items of one step: a standard pytree `state` and a JSON `extra`.
fn items(controller: &Controller, step: u64) -> Composite {
    let array = sharded_array(controller, &values(32, step as f32));
    Composite::new()
        .with_item("state", StandardSave::new(tree(&array, step as i64)))
        .with_item("extra", JsonSave::new(json!({"step": step})))
}

fn restore_all() -> CompositeRestore {
    CompositeRestore::new()
        .with_item("state", PyTreeRestore::new())
        .with_item("extra", JsonRestore)
}

fn loss(value: f64) -> Metrics {
    let mut metrics = Metrics::new();
    metrics.insert("loss".into(), json!(value));
    metrics
}

fn local_root(dir: &Path) -> Store {
    open_store(dir.to_str().expect("a UTF-8 temporary path")).expect("open the root")
}

fn dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn reads_orbax_manager_fixture() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/orbax/d_manager");
    let expected: Value =
        serde_json::from_slice(&std::fs::read(fixture.join("expected_values.json")).unwrap()).unwrap();
    // The fixture's arrays were sharded over eight devices.
    let topology = Topology::uniform(4, 2).unwrap();
    let controller = Arc::new(Controller::new(Arc::new(InProcessRuntime::new(topology).unwrap())));
    let options = CheckpointManagerOptions::default().with_read_only(true);
    let manager = CheckpointManager::new(local_root(&fixture.join("ckpt")), Arc::clone(&controller), options).unwrap();

    assert_eq!(manager.all_steps(), [1, 2]);
    assert_eq!(manager.latest_step(), Some(2));
    for step in [1u64, 2] {
        let restored = manager.restore(step, restore_all()).unwrap();
        let extra = &expected["notes"]["extra_item_values"][step.to_string()];
        assert_eq!(restored.json("extra"), Some(extra), "extra of step {step}");

        let state = restored.pytree("state").unwrap();
        let mut checked = 0;
        for leaf in expected["leaves"].as_array().unwrap() {
            if leaf["step"].as_u64() != Some(step) {
                continue;
            }
            let name = leaf["param_name"].as_str().unwrap();
            let (_, value) = state
                .flatten()
                .into_iter()
                .find(|(path, _)| param_name(path) == name)
                .unwrap_or_else(|| panic!("step {step} has no leaf {name}"));
            let bytes = match value {
                Leaf::Array(array) => controller.to_global_bytes(array).unwrap(),
                Leaf::HostArray(array) => array.bytes().to_vec(),
                other => panic!("leaf {name} restored as {other:?}"),
            };
            let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(Some(digest.as_str()), leaf["sha256"].as_str(), "leaf {name} of step {step}");
            checked += 1;
        }
        assert_eq!(checked, 2, "leaves checked in step {step}");
    }
    let metadata = manager.step_metadata(1).unwrap();
    let Some(ItemHandlers::Composite(handlers)) = metadata.item_handlers else {
        panic!("step 1 records no item handlers");
    };
    assert!(handlers["extra"].ends_with("JsonCheckpointHandler"));
}

#[test]
fn layout_matches_orbax() {
    let dir = tempfile::tempdir().unwrap();
    let controller = controller();
    let options = CheckpointManagerOptions::default().with_async_checkpointing(false);
    let manager = CheckpointManager::new(local_root(dir.path()), Arc::clone(&controller), options).unwrap();

    let saved = manager
        .save_with(1, items(&controller, 1), StepSaveOptions::new().with_metrics(loss(0.5)))
        .unwrap();
    assert!(saved);
    assert_eq!(dir_names(dir.path()), ["1"]);
    let step_dir = dir.path().join("1");
    assert_eq!(
        dir_names(&step_dir),
        ["_CHECKPOINT_METADATA", "commit_success.txt", "extra", "metrics", "state"]
    );
    assert_eq!(dir_names(&step_dir.join("extra")), ["commit_success.txt", "metadata"]);
    assert_eq!(std::fs::read(step_dir.join("extra/metadata")).unwrap(), br#"{"step": 1}"#);
    assert_eq!(dir_names(&step_dir.join("metrics")), ["commit_success.txt", "metrics"]);
    assert_eq!(std::fs::read(step_dir.join("metrics/metrics")).unwrap(), br#"{"loss": 0.5}"#);
    let state_files = dir_names(&step_dir.join("state"));
    assert!(state_files.contains(&"_METADATA".to_owned()), "{state_files:?}");
    assert!(!state_files.contains(&"_CHECKPOINT_METADATA".to_owned()), "{state_files:?}");

    let document = std::fs::read(step_dir.join("_CHECKPOINT_METADATA")).unwrap();
    let metadata = CheckpointMetadata::parse(&document, "step 1").unwrap();
    let Some(ItemHandlers::Composite(handlers)) = metadata.item_handlers else {
        panic!("the step records no item handlers");
    };
    assert_eq!(
        handlers["state"],
        "orbax.checkpoint._src.handlers.standard_checkpoint_handler.StandardCheckpointHandler"
    );
    assert_eq!(
        handlers["extra"],
        "orbax.checkpoint._src.handlers.json_checkpoint_handler.JsonCheckpointHandler"
    );
    assert!(handlers["metrics"].ends_with("JsonCheckpointHandler"));
    assert_eq!(metadata.metrics, loss(0.5));
    assert!(metadata.commit_timestamp_nsecs.is_some());
}

#[test]
fn restore_latest_during_save_returns_previous() {
    let dir = tempfile::tempdir().unwrap();
    let backend = TestBackend::local(dir.path());
    let controller = controller();
    let manager =
        CheckpointManager::new(backend.store(), Arc::clone(&controller), CheckpointManagerOptions::default()).unwrap();

    assert!(manager.save(1, items(&controller, 1)).unwrap());
    manager.wait_until_finished().unwrap();
    backend.hold_writes_containing("2.orbax-checkpoint-tmp");
    assert!(manager.save(2, items(&controller, 2)).unwrap());
    backend.wait_until_held();

    assert_eq!(manager.all_steps(), [1]);
    let latest = manager.latest_step().unwrap();
    assert_eq!(latest, 1);
    let restored = manager.restore(latest, restore_all()).unwrap();
    assert_eq!(restored_w(&controller, restored.pytree("state").unwrap()), values(32, 1.0));
    assert_eq!(restored.json("extra"), Some(&json!({"step": 1})));
    let err = manager.restore(2, restore_all()).unwrap_err();
    assert!(matches!(err, CkptError::StepNotFound { step: 2, .. }), "{err}");
    assert!(manager.is_saving_in_progress());

    backend.release();
    manager.wait_until_finished().unwrap();
    assert_eq!(manager.latest_step(), Some(2));
    let restored = manager.restore(2, restore_all()).unwrap();
    assert_eq!(restored_count(restored.pytree("state").unwrap()), Some(2));
}

#[test]
fn failure_surfaces_on_wait_and_step_not_listed() {
    let dir = tempfile::tempdir().unwrap();
    let backend = TestBackend::local(dir.path());
    let controller = controller();
    let manager =
        CheckpointManager::new(backend.store(), Arc::clone(&controller), CheckpointManagerOptions::default()).unwrap();

    manager.save(1, items(&controller, 1)).unwrap();
    manager.wait_until_finished().unwrap();
    // Fail a write of the pytree item, after the array data.
    backend.fail_writes_containing(Some("7.orbax-checkpoint-tmp/state.orbax-checkpoint-tmp/_METADATA"));
    assert!(manager.save(7, items(&controller, 7)).unwrap());

    let err = manager.wait_until_finished().unwrap_err();
    assert!(matches!(err, CkptError::Background { ref operation, .. } if operation == "save of step 7"), "{err}");
    assert_eq!(manager.all_steps(), [1]);
    manager.reload().unwrap();
    assert_eq!(manager.all_steps(), [1]);
    assert_eq!(dir_names(dir.path()), ["1"]);
}

#[test]
fn failure_surfaces_on_next_save() {
    let backend = TestBackend::memory();
    let controller = controller();
    let manager =
        CheckpointManager::new(backend.store(), Arc::clone(&controller), CheckpointManagerOptions::default()).unwrap();

    backend.fail_writes_containing(Some("3/extra"));
    assert!(manager.save(3, items(&controller, 3)).unwrap());
    let err = manager.save(4, items(&controller, 4)).unwrap_err();
    assert!(matches!(err, CkptError::Background { ref operation, .. } if operation == "save of step 3"), "{err}");
    manager.wait_until_finished().unwrap();
    assert!(manager.all_steps().is_empty(), "{:?}", manager.all_steps());

    backend.fail_writes_containing(None);
    assert!(manager.save(4, items(&controller, 4)).unwrap());
    manager.wait_until_finished().unwrap();
    assert_eq!(manager.all_steps(), [4]);
    manager.reload().unwrap();
    assert_eq!(manager.all_steps(), [4]);
}

#[test]
fn best_three_keeps_newest_when_metric_worsens() {
    let dir = tempfile::tempdir().unwrap();
    let controller = controller();
    let options = CheckpointManagerOptions::default()
        .with_max_to_keep(NonZeroUsize::new(3))
        .with_best_metric("loss", BestMode::Min);
    let manager = CheckpointManager::new(local_root(dir.path()), Arc::clone(&controller), options).unwrap();

    for step in (100..=500).step_by(100) {
        let metrics = loss(step as f64 / 100.0);
        let saved = manager
            .save_with(step, items(&controller, step), StepSaveOptions::new().with_metrics(metrics))
            .unwrap();
        assert!(saved, "step {step}");
    }
    manager.wait_until_finished().unwrap();

    assert_eq!(manager.all_steps(), [100, 200, 300, 500]);
    assert_eq!(dir_names(dir.path()), ["100", "200", "300", "500"]);
    assert_eq!(manager.metrics(500), Some(loss(5.0)));
    let restored = manager.restore(500, restore_all()).unwrap();
    assert_eq!(restored_count(restored.pytree("state").unwrap()), Some(500));
    let metrics_item = manager
        .restore(200, CompositeRestore::new().with_item("metrics", JsonRestore))
        .unwrap();
    assert_eq!(metrics_item.json("metrics"), Some(&Value::Object(loss(2.0))));
    manager.close().unwrap();

    // A reopened manager reads the metrics back and ranks the same way.
    let options = CheckpointManagerOptions::default()
        .with_max_to_keep(NonZeroUsize::new(3))
        .with_best_metric("loss", BestMode::Min);
    let reopened = CheckpointManager::new(local_root(dir.path()), Arc::clone(&controller), options).unwrap();
    assert_eq!(reopened.metrics(300), Some(loss(3.0)));
    let metrics = StepSaveOptions::new().with_metrics(loss(0.5));
    reopened.save_with(600, items(&controller, 600), metrics).unwrap();
    reopened.wait_until_finished().unwrap();
    assert_eq!(reopened.all_steps(), [100, 200, 600]);
}

#[test]
fn latest_n_with_keep_period_and_background_delete() {
    let dir = tempfile::tempdir().unwrap();
    let controller = controller();
    let options = CheckpointManagerOptions::default()
        .with_max_to_keep(NonZeroUsize::new(2))
        .with_keep_period(NonZeroU64::new(4))
        .with_background_delete(true);
    let manager = CheckpointManager::new(local_root(dir.path()), Arc::clone(&controller), options).unwrap();

    for step in 1..=9 {
        assert!(manager.save(step, items(&controller, step)).unwrap(), "step {step}");
    }
    manager.wait_until_finished().unwrap();
    assert_eq!(manager.all_steps(), [4, 8, 9]);
    assert_eq!(dir_names(dir.path()), ["4", "8", "9"]);
}

#[test]
fn save_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let controller = controller();
    let options = CheckpointManagerOptions::default()
        .with_save_interval_steps(NonZeroU64::new(10).unwrap())
        .with_save_on_steps([15])
        .with_async_checkpointing(false);
    let manager = CheckpointManager::new(local_root(dir.path()), Arc::clone(&controller), options).unwrap();

    // The first step is saved whatever the interval.
    assert!(manager.should_save(3));
    for step in 3..=21 {
        manager.save(step, items(&controller, step)).unwrap();
    }
    assert_eq!(manager.all_steps(), [3, 10, 15, 20]);
    assert!(!manager.should_save(20), "a step at or before the latest is not saved");

    // A forced save, as on preemption, ignores the interval.
    let forced = manager
        .save_with(23, items(&controller, 23), StepSaveOptions::new().with_force(true))
        .unwrap();
    assert!(forced);
    assert_eq!(manager.latest_step(), Some(23));
    let err = manager
        .save_with(23, items(&controller, 23), StepSaveOptions::new().with_force(true))
        .unwrap_err();
    assert!(matches!(err, CkptError::Storage(StorageError::CheckpointExists { .. })), "{err}");
}

#[test]
fn should_save_fn_replaces_interval() {
    let dir = tempfile::tempdir().unwrap();
    let controller = controller();
    let options = CheckpointManagerOptions::default()
        .with_should_save_fn(|step, previous| previous.is_none_or(|previous| step >= previous + 5))
        .with_async_checkpointing(false);
    let manager = CheckpointManager::new(local_root(dir.path()), Arc::clone(&controller), options).unwrap();
    for step in 1..=12 {
        manager.save(step, items(&controller, step)).unwrap();
    }
    assert_eq!(manager.all_steps(), [1, 6, 11]);
}

#[test]
fn step_name_format_prefix_and_padding() {
    let dir = tempfile::tempdir().unwrap();
    let controller = controller();
    let format = StepNameFormat::new().with_prefix("ckpt").with_fixed_length(4);
    let options = CheckpointManagerOptions::default().with_step_name_format(format.clone());
    let manager = CheckpointManager::new(local_root(dir.path()), Arc::clone(&controller), options).unwrap();
    manager.save(5, items(&controller, 5)).unwrap();
    manager.close().unwrap();
    assert_eq!(dir_names(dir.path()), ["ckpt_0005"]);

    let options = CheckpointManagerOptions::default().with_step_name_format(format);
    let reopened = CheckpointManager::new(local_root(dir.path()), Arc::clone(&controller), options).unwrap();
    assert_eq!(reopened.all_steps(), [5]);
    let plain = CheckpointManager::new(local_root(dir.path()), controller, CheckpointManagerOptions::default()).unwrap();
    assert!(plain.all_steps().is_empty());
}

#[test]
fn read_only_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let controller = controller();
    let writer = CheckpointManager::new(local_root(dir.path()), Arc::clone(&controller), CheckpointManagerOptions::default()).unwrap();
    writer.save(1, items(&controller, 1)).unwrap();
    writer.close().unwrap();

    let options = CheckpointManagerOptions::default().with_read_only(true);
    let reader = CheckpointManager::new(local_root(dir.path()), Arc::clone(&controller), options).unwrap();
    assert!(!reader.save(2, items(&controller, 2)).unwrap());
    let forced = reader
        .save_with(3, items(&controller, 3), StepSaveOptions::new().with_force(true))
        .unwrap();
    assert!(!forced);
    let err = reader.delete(1).unwrap_err();
    assert!(matches!(err, CkptError::ReadOnly { .. }), "{err}");
    reader.wait_until_finished().unwrap();
    assert_eq!(dir_names(dir.path()), ["1"]);
}

#[test]
fn cleanup_removes_unfinished_saves() {
    let dir = tempfile::tempdir().unwrap();
    let root = local_root(dir.path());
    root.put("3.orbax-checkpoint-tmp/_CHECKPOINT_METADATA", Bytes::from_static(b"{}")).unwrap();
    root.put("notes/readme.txt", Bytes::from_static(b"not a step")).unwrap();

    let without_cleanup = CheckpointManager::new(root.clone(), controller(), CheckpointManagerOptions::default()).unwrap();
    drop(without_cleanup);
    assert_eq!(dir_names(dir.path()), ["3.orbax-checkpoint-tmp", "notes"]);

    let options = CheckpointManagerOptions::default().with_cleanup_tmp_directories(true);
    let manager = CheckpointManager::new(root, controller(), options).unwrap();
    assert!(manager.all_steps().is_empty());
    assert_eq!(dir_names(dir.path()), ["notes"]);
}

#[test]
fn complete_step_without_marker_reported_not_deleted() {
    let backend = TestBackend::memory();
    let controller = controller();
    let manager =
        CheckpointManager::new(backend.store(), Arc::clone(&controller), CheckpointManagerOptions::default()).unwrap();
    manager.save(1, items(&controller, 1)).unwrap();
    manager.wait_until_finished().unwrap();
    // The step's marker is its last write: failing it leaves a complete step without one.
    backend.fail_writes_containing(Some("2/commit_success.txt"));
    manager.save(2, items(&controller, 2)).unwrap();
    assert!(manager.wait_until_finished().is_err());
    backend.fail_writes_containing(None);
    // An unfinished save: metadata without a commit time.
    let root = backend.store();
    root.put("3/_CHECKPOINT_METADATA", Bytes::from_static(b"{\"commit_timestamp_nsecs\": null}")).unwrap();
    drop(manager);

    let options = CheckpointManagerOptions::default().with_cleanup_tmp_directories(true);
    let reopened = CheckpointManager::new(root.clone(), Arc::clone(&controller), options).unwrap();
    assert_eq!(reopened.all_steps(), [1]);
    let found = reopened.uncommitted_steps();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].step, 2);
    assert_eq!(root.list_dirs().unwrap(), ["1", "2"]);

    let forced = StepSaveOptions::new().with_force(true);
    let err = reopened.save_with(2, items(&controller, 2), forced).unwrap_err();
    assert!(matches!(err, CkptError::UncommittedStep { step: 2, .. }), "{err}");
    assert!(root.child("2").unwrap().exists("state/_METADATA").unwrap());
}

#[test]
fn delete_removes_step() {
    let dir = tempfile::tempdir().unwrap();
    let controller = controller();
    let options = CheckpointManagerOptions::default().with_async_checkpointing(false);
    let manager = CheckpointManager::new(local_root(dir.path()), Arc::clone(&controller), options).unwrap();
    manager.save(1, items(&controller, 1)).unwrap();
    manager.save(2, items(&controller, 2)).unwrap();

    manager.delete(1).unwrap();
    assert_eq!(manager.all_steps(), [2]);
    assert_eq!(dir_names(dir.path()), ["2"]);
    let err = manager.delete(1).unwrap_err();
    assert!(matches!(err, CkptError::StepNotFound { step: 1, .. }), "{err}");
}

#[test]
fn invalid_items_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let controller = controller();
    let manager = CheckpointManager::new(local_root(dir.path()), Arc::clone(&controller), CheckpointManagerOptions::default()).unwrap();

    let err = manager.save(1, Composite::new()).unwrap_err();
    assert!(matches!(err, CkptError::InvalidItem { .. }), "{err}");
    let named = Composite::new().with_item("a/b", JsonSave::new(json!(1)));
    let err = manager.save(1, named).unwrap_err();
    assert!(matches!(err, CkptError::InvalidItem { .. }), "{err}");
    let strings = Composite::new().with_item("state", StandardSave::new(ckpt::pytree::PyTree::leaf(Leaf::from("text"))));
    let err = manager.save(1, strings).unwrap_err();
    assert!(matches!(err, CkptError::InvalidLeaf { .. }), "{err}");
    assert!(manager.all_steps().is_empty());
}

#[test]
fn invalid_prefix_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let options = CheckpointManagerOptions::default().with_step_name_format(StepNameFormat::new().with_prefix("a/b"));
    let err = CheckpointManager::new(local_root(dir.path()), controller(), options).unwrap_err();
    assert!(matches!(err, CkptError::InvalidOptions { .. }), "{err}");
}
