//! Saves and restores that must fail with a clear error: trees whose keys
//! collide or escape the checkpoint, checkpoints without their commit
//! point, damaged array files, and hosts that fail during a save.

mod common;

use std::{path::Path, sync::Arc};

use ckpt::{
    colocated::{ArraySpec, Controller, ShardedArray},
    device::{Mesh, PartitionSpec, Sharding},
    leaf_digests,
    pytree::PyTree,
    storage::{
        list_committed, open_committed, open_store, ArrayFormat, ObjectStoreBackend, Store,
        COMMIT_SUCCESS_FILE, TMP_SUFFIX,
    },
    DType, HostArray, Leaf, PyTreeCheckpointer, PyTreeRestore, PyTreeSave, RestoreArgs, SaveArgs,
    Scalar,
};
use tempfile::TempDir;

use common::controller;

/// Opens a new temporary directory as a store.
fn local_parent() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = open_store(dir.path().to_str().expect("UTF-8 path")).expect("open the directory");
    (dir, store)
}

/// Returns zarr v2 with one directory per array, so that each chunk is a
/// file a test can damage.
fn plain_zarr2() -> ArrayFormat {
    let mut format = ArrayFormat::default();
    format.use_ocdbt = false;
    format
}

/// Creates `w`: float32[4, 2] with values 0..8, row-sharded over every
/// device of the runtime (2 hosts of 2 devices each).
fn sharded_w(controller: &Controller) -> ShardedArray {
    let devices = controller.runtime().topology().device_ids();
    let mesh = Mesh::new(vec![devices.len()], vec!["x"], devices).expect("a valid mesh");
    let sharding =
        Sharding::named(mesh, PartitionSpec::new([Some("x"), None])).expect("a valid sharding");
    let spec = ArraySpec {
        shape: vec![4, 2],
        dtype: DType::Float32,
        sharding,
    };
    let values: Vec<f32> = (0..8).map(|i| i as f32).collect();
    controller
        .put_global(spec, bytemuck::cast_slice(&values))
        .expect("put w on the hosts")
}

/// Returns a tree of a sharded array, a host array and a scalar.
fn sample_tree(controller: &Controller) -> PyTree<Leaf> {
    let host = HostArray::from_vec(vec![3], vec![1i32, 2, 3]).expect("a valid host array");
    PyTree::dict([
        ("w", PyTree::leaf(Leaf::Array(sharded_w(controller)))),
        ("h", PyTree::leaf(Leaf::HostArray(host))),
        ("s", PyTree::leaf(Leaf::Scalar(Scalar::Int(7)))),
    ])
}

/// Returns the error text of `result`, failing the test when it succeeded.
fn error_text<T: std::fmt::Debug, E: std::fmt::Display>(
    result: Result<T, E>,
    operation: &str,
) -> String {
    match result {
        Ok(value) => panic!("{operation} succeeded with {value:?}"),
        Err(error) => error.to_string(),
    }
}

fn assert_contains(message: &str, fragments: &[&str]) {
    for fragment in fragments {
        assert!(
            message.contains(fragment),
            "{fragment:?} missing from {message:?}"
        );
    }
}

// Keys that collide or escape the checkpoint directory.

/// Saves a tree of two host arrays under the given keys and checks that
/// the save fails with every fragment in its message and writes nothing.
fn assert_save_rejects_tree(tree: PyTree<Leaf>, fragments: &[&str]) {
    let (_dir, parent) = local_parent();
    let checkpointer = PyTreeCheckpointer::new(controller(1, 1));

    let message = error_text(
        checkpointer.save(&parent, "ckpt", PyTreeSave::new(tree)),
        "save",
    );
    assert_contains(&message, fragments);

    assert_eq!(
        list_committed(&parent).expect("list the parent"),
        Vec::<String>::new()
    );
    assert_eq!(
        parent.list().expect("list the parent"),
        Vec::<String>::new(),
        "files written"
    );
    assert_eq!(
        parent.list_dirs().expect("list the parent"),
        Vec::<String>::new(),
        "directories made"
    );
}

fn host_leaf(value: i32) -> PyTree<Leaf> {
    let array = HostArray::from_vec(vec![1], vec![value]).expect("a valid host array");
    PyTree::leaf(Leaf::HostArray(array))
}

#[test]
fn save_rejects_colliding_keys() {
    let tree = PyTree::dict([
        ("a.b", host_leaf(1)),
        ("a", PyTree::dict([("b", host_leaf(2))])),
    ]);
    assert_save_rejects_tree(tree, &["\"a.b\"", "['a']['b']", "['a.b']"]);
}

#[test]
fn save_rejects_dotdot_key() {
    let tree = PyTree::dict([("..", host_leaf(1))]);
    assert_save_rejects_tree(tree, &["\"..\"", "['..']", "invalid"]);
}

#[test]
fn save_rejects_dotdot_segment_key() {
    let tree = PyTree::dict([("a/../b", host_leaf(1))]);
    assert_save_rejects_tree(tree, &["\"a/../b\"", "['a/../b']", "invalid"]);
}

#[test]
fn save_rejects_absolute_key() {
    let tree = PyTree::dict([("/abs", host_leaf(1))]);
    assert_save_rejects_tree(tree, &["\"/abs\"", "['/abs']", "absolute"]);
}

// Checkpoints whose commit point is missing.

#[test]
fn restore_rejects_local_tmp_dir() {
    let (dir, parent) = local_parent();
    let controller = controller(2, 2);
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));
    checkpointer
        .save(&parent, "x", PyTreeSave::new(sample_tree(&controller)))
        .expect("save x");
    // A save that crashed before its rename leaves a complete directory
    // under the temporary name.
    let tmp_name = format!("x{TMP_SUFFIX}");
    std::fs::rename(dir.path().join("x"), dir.path().join(&tmp_name)).expect("rename x");

    let restored = checkpointer.restore(&parent, &tmp_name, PyTreeRestore::new());
    let message = error_text(restored, "restore of the temporary directory");
    assert_contains(&message, &[&tmp_name, "is not committed"]);

    let message = error_text(
        ckpt::metadata(&parent, &tmp_name),
        "metadata of the temporary directory",
    );
    assert_contains(&message, &[&tmp_name, "is not committed"]);

    let restored = checkpointer.restore(&parent, "x", PyTreeRestore::new());
    let message = error_text(restored, "restore of the uncommitted name");
    assert_contains(&message, &["x not found"]);

    assert_eq!(
        list_committed(&parent).expect("list the parent"),
        Vec::<String>::new()
    );
}

#[test]
fn restore_rejects_memory_without_marker() {
    let parent = Store::new(Arc::new(
        ObjectStoreBackend::memory().expect("a memory store"),
    ));
    let controller = controller(2, 2);
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));
    checkpointer
        .save(
            &parent,
            "complete",
            PyTreeSave::new(sample_tree(&controller)),
        )
        .expect("save complete");
    // Copy every file but the commit marker, as a save interrupted before
    // its last write leaves them.
    let source = parent.child("complete").expect("the saved directory");
    let target = parent.child("x").expect("a directory name");
    for key in source.list().expect("list the checkpoint") {
        if key != COMMIT_SUCCESS_FILE {
            let value = source.get_required(&key).expect("read a file");
            target.put(&key, value).expect("copy a file");
        }
    }

    let restored = checkpointer.restore(&parent, "x", PyTreeRestore::new());
    let message = error_text(restored, "restore without a commit marker");
    assert_contains(
        &message,
        &["memory://", "/x", "is not committed", COMMIT_SUCCESS_FILE],
    );

    let message = error_text(open_committed(&parent, "x"), "open without a commit marker");
    assert_contains(&message, &["is not committed"]);

    assert_eq!(
        list_committed(&parent).expect("list the parent"),
        vec!["complete".to_owned()]
    );
}

// Damaged array files of a committed checkpoint.

/// Saves the sample tree as `ckpt` in plain zarr v2 and returns its directory.
fn saved_plain_checkpoint() -> (TempDir, Store, Arc<Controller>) {
    let (dir, parent) = local_parent();
    let controller = controller(2, 2);
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller)).with_format(plain_zarr2());
    checkpointer
        .save(&parent, "ckpt", PyTreeSave::new(sample_tree(&controller)))
        .expect("save ckpt");
    (dir, parent, controller)
}

/// Where a colocated restore finds damage: the controller reads the zarr
/// metadata of every array before it sends the hosts requests to read chunks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FailsOn {
    Controller,
    Host,
}

/// Checks that each reader of the checkpoint fails with every fragment in
/// its message: a restore through the controller, a colocated restore on
/// the hosts, and `leaf_digests`.
fn assert_reads_fail(
    parent: &Store,
    controller: &Arc<Controller>,
    fails_on: FailsOn,
    fragments: &[&str],
) {
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(controller));

    let restored = checkpointer.restore(parent, "ckpt", PyTreeRestore::new());
    assert_contains(&error_text(restored, "restore"), fragments);

    let colocated = PyTreeRestore::new()
        .with_restore_args(PyTree::leaf(RestoreArgs::default().with_colocated(true)));
    let message = error_text(
        checkpointer.restore(parent, "ckpt", colocated),
        "colocated restore",
    );
    assert_contains(&message, fragments);
    if fails_on == FailsOn::Host {
        assert_contains(&message, &["host ", "failed to restore shards"]);
    }

    let item = open_committed(parent, "ckpt").expect("ckpt is committed");
    assert_contains(&error_text(leaf_digests(&item), "leaf_digests"), fragments);
}

fn checkpoint_file(dir: &TempDir, key: &str) -> std::path::PathBuf {
    dir.path().join("ckpt").join(key)
}

/// Replaces `old` by `new` in a text file of the checkpoint.
fn edit_file(path: &Path, old: &str, new: &str) {
    let text = std::fs::read_to_string(path).expect("read the file");
    assert!(text.contains(old), "{old:?} not in {text}");
    std::fs::write(path, text.replace(old, new)).expect("write the file");
}

#[test]
fn missing_chunk_fails_reads() {
    let (dir, parent, controller) = saved_plain_checkpoint();
    std::fs::remove_file(checkpoint_file(&dir, "w/2.0")).expect("delete a chunk");

    assert_reads_fail(&parent, &controller, FailsOn::Host, &["w/2.0", "not found"]);
}

#[test]
fn truncated_chunk_fails_reads() {
    let (dir, parent, controller) = saved_plain_checkpoint();
    let path = checkpoint_file(&dir, "w/2.0");
    let bytes = std::fs::read(&path).expect("read a chunk");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate the chunk");

    assert_reads_fail(&parent, &controller, FailsOn::Host, &["w/2.0", "corrupt"]);
}

#[test]
fn unknown_dtype_fails_reads() {
    let (dir, parent, controller) = saved_plain_checkpoint();
    edit_file(&checkpoint_file(&dir, "w/.zarray"), "\"<f4\"", "\"<f5\"");

    assert_reads_fail(
        &parent,
        &controller,
        FailsOn::Controller,
        &["w/.zarray", "unknown dtype \"<f5\""],
    );
}

#[test]
fn overflowing_shape_fails_reads() {
    let (dir, parent, controller) = saved_plain_checkpoint();
    edit_file(
        &checkpoint_file(&dir, "w/.zarray"),
        "\"shape\":[4,2]",
        "\"shape\":[18446744073709551615,2]",
    );

    assert_reads_fail(
        &parent,
        &controller,
        FailsOn::Controller,
        &["w/.zarray", "18446744073709551615", "overflows"],
    );
}

/// A `.zarray` may claim a shape far larger than the chunks stored.
/// `leaf_digests` reads in bounded pieces, so it reports the first bad
/// chunk instead of allocating the claimed size.
#[test]
fn huge_shape_fails_digests() {
    let (dir, parent, _controller) = saved_plain_checkpoint();
    // 2^40 rows of 2 float32 values claim 8 TiB. Large chunks keep the
    // number of chunks in one bounded read small.
    edit_file(
        &checkpoint_file(&dir, "w/.zarray"),
        "\"chunks\":[1,2]",
        "\"chunks\":[65536,2]",
    );
    edit_file(
        &checkpoint_file(&dir, "w/.zarray"),
        "\"shape\":[4,2]",
        "\"shape\":[1099511627776,2]",
    );

    let item = open_committed(&parent, "ckpt").expect("ckpt is committed");
    let message = error_text(leaf_digests(&item), "leaf_digests");
    assert_contains(&message, &["w/0.0", "corrupt"]);
}

/// A host array's `.zarray` may claim more bytes than any machine has. The
/// restore then fails naming the size instead of aborting on the allocation.
#[test]
fn huge_host_shape_fails_restore() {
    let (dir, parent, controller) = saved_plain_checkpoint();
    edit_file(&checkpoint_file(&dir, "h/.zarray"), "\"shape\":[3]", "\"shape\":[1152921504606846976]");

    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));
    let restored = checkpointer.restore(&parent, "ckpt", PyTreeRestore::new());
    assert_contains(
        &error_text(restored, "restore"),
        &["cannot allocate", "4611686018427387904 bytes", "[1152921504606846976]"],
    );

    let to_host = PyTreeRestore::new().with_restore_args(PyTree::dict([("w", PyTree::leaf(RestoreArgs::host()))]));
    edit_file(&checkpoint_file(&dir, "w/.zarray"), "\"shape\":[4,2]", "\"shape\":[1152921504606846976,2]");
    let partial = to_host.with_partial_restore(true);
    let restored = checkpointer.restore(&parent, "ckpt", partial);
    assert_contains(&error_text(restored, "host restore"), &["cannot allocate", "[1152921504606846976, 2]"]);
}

// Hosts that fail during a save.

/// Returns the restored bytes of `w` and the restored host array `h`.
fn restored_values(
    checkpointer: &PyTreeCheckpointer,
    parent: &Store,
    name: &str,
) -> (Vec<u8>, Leaf) {
    let restored = checkpointer
        .restore(parent, name, PyTreeRestore::new())
        .unwrap_or_else(|error| panic!("restore {name}: {error}"));
    let leaves = restored.flatten();
    let w = leaves
        .iter()
        .find_map(|(path, leaf)| match leaf {
            Leaf::Array(array) if path.to_string() == "['w']" => Some(array),
            _ => None,
        })
        .expect("w is a sharded array");
    let bytes = checkpointer
        .controller()
        .to_global_bytes(w)
        .expect("w's bytes");
    let h = leaves
        .iter()
        .find(|(path, _)| path.to_string() == "['h']")
        .map(|(_, leaf)| (*leaf).clone())
        .expect("h is restored");
    (bytes, h)
}

/// Returns a tree whose sharded array was dropped from every host.
fn tree_with_dropped_array(controller: &Controller) -> PyTree<Leaf> {
    let dropped = sharded_w(controller);
    controller.drop_arrays(&[&dropped]).expect("drop w");
    PyTree::dict([
        ("w", PyTree::leaf(Leaf::Array(dropped))),
        ("h", host_leaf(5)),
    ])
}

fn expected_w_bytes() -> Vec<u8> {
    let values: Vec<f32> = (0..8).map(|i| i as f32).collect();
    bytemuck::cast_slice(&values).to_vec()
}

fn assert_failed_save_leaves_earlier(colocated: bool) {
    let (_dir, parent) = local_parent();
    let controller = controller(2, 2);
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));
    let args = |tree| {
        PyTreeSave::new(tree)
            .with_save_args(PyTree::leaf(SaveArgs::default().with_colocated(colocated)))
    };
    checkpointer
        .save(&parent, "earlier", args(sample_tree(&controller)))
        .expect("save earlier");

    let failed = checkpointer.save(
        &parent,
        "failed",
        args(tree_with_dropped_array(&controller)),
    );
    let message = error_text(failed, "save of a dropped array");
    assert_contains(&message, &["host 0 failed to", "is not on host 0"]);

    assert_eq!(
        list_committed(&parent).expect("list the parent"),
        vec!["earlier".to_owned()]
    );
    assert_eq!(
        parent.list_dirs().expect("list the parent"),
        vec!["earlier".to_owned()],
        "a directory of the failed save is left"
    );
    let (w, h) = restored_values(&checkpointer, &parent, "earlier");
    assert_eq!(w, expected_w_bytes());
    assert_eq!(
        h,
        Leaf::HostArray(HostArray::from_vec(vec![3], vec![1i32, 2, 3]).expect("a host array"))
    );
}

#[test]
fn colocated_host_failure_keeps_earlier() {
    assert_failed_save_leaves_earlier(true);
}

#[test]
fn gather_host_failure_keeps_earlier() {
    assert_failed_save_leaves_earlier(false);
}

/// A save under the name of a committed checkpoint is rejected before any
/// host is asked to write, so the committed checkpoint stays as it was.
#[test]
fn save_rejects_existing_name() {
    let (_dir, parent) = local_parent();
    let controller = controller(2, 2);
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));
    let colocated = PyTree::leaf(SaveArgs::colocated());
    checkpointer
        .save(
            &parent,
            "ckpt",
            PyTreeSave::new(sample_tree(&controller)).with_save_args(colocated.clone()),
        )
        .expect("save ckpt");

    let again = PyTreeSave::new(tree_with_dropped_array(&controller)).with_save_args(colocated);
    let message = error_text(
        checkpointer.save(&parent, "ckpt", again),
        "second save of ckpt",
    );
    assert_contains(&message, &["/ckpt", "already exists"]);

    assert_eq!(
        list_committed(&parent).expect("list the parent"),
        vec!["ckpt".to_owned()]
    );
    assert_eq!(
        parent.list_dirs().expect("list the parent"),
        vec!["ckpt".to_owned()]
    );
    let (w, _) = restored_values(&checkpointer, &parent, "ckpt");
    assert_eq!(w, expected_w_bytes());
}

#[test]
fn memory_host_failure_leaves_nothing() {
    let parent = Store::new(Arc::new(
        ObjectStoreBackend::memory().expect("a memory store"),
    ));
    let controller = controller(2, 2);
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));
    let colocated = PyTree::leaf(SaveArgs::colocated());
    checkpointer
        .save(
            &parent,
            "earlier",
            PyTreeSave::new(sample_tree(&controller)).with_save_args(colocated.clone()),
        )
        .expect("save earlier");

    let failed = PyTreeSave::new(tree_with_dropped_array(&controller)).with_save_args(colocated);
    let message = error_text(
        checkpointer.save(&parent, "failed", failed),
        "save of a dropped array",
    );
    assert_contains(&message, &["host 0 failed to", "is not on host 0"]);

    assert_eq!(
        list_committed(&parent).expect("list the parent"),
        vec!["earlier".to_owned()]
    );
    assert_eq!(
        parent
            .child("failed")
            .expect("a name")
            .list()
            .expect("list"),
        Vec::<String>::new()
    );
    let (w, _) = restored_values(&checkpointer, &parent, "earlier");
    assert_eq!(w, expected_w_bytes());
}

#[test]
fn standard_save_rejects_strings() {
    let (_dir, parent) = local_parent();
    let checkpointer = ckpt::StandardCheckpointer::new(controller(1, 1));
    let tree = PyTree::dict([
        ("step", host_leaf(1)),
        ("note", PyTree::leaf(Leaf::from("text"))),
    ]);

    let saved = checkpointer.save(&parent, "ckpt", ckpt::StandardSave::new(tree));
    let message = error_text(saved, "standard save of a string");
    assert_contains(
        &message,
        &["['note']", "StandardCheckpointer does not save strings"],
    );
    assert_eq!(
        parent.list_dirs().expect("list the parent"),
        Vec::<String>::new()
    );
}

#[test]
fn save_rejects_zero_size_arrays() {
    let controller = controller(2, 2);
    let devices = controller.runtime().topology().device_ids();
    let spec = ArraySpec {
        shape: vec![0, 4],
        dtype: DType::Float32,
        sharding: Sharding::replicated(devices).expect("a replicated sharding"),
    };
    let empty = controller
        .put_global(spec, &[])
        .expect("put an empty array");
    let empty_host =
        HostArray::from_vec(vec![3, 0], Vec::<i32>::new()).expect("an empty host array");
    let cases = [
        ("sharded", PyTree::leaf(Leaf::Array(empty))),
        ("host", PyTree::leaf(Leaf::HostArray(empty_host))),
    ];

    for (key, leaf) in cases {
        let (_dir, parent) = local_parent();
        let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));
        let tree = PyTree::dict([(key, leaf)]);
        let message = error_text(
            checkpointer.save(&parent, "ckpt", PyTreeSave::new(tree)),
            key,
        );
        assert_contains(&message, &[&format!("['{key}']"), "zero-size"]);
        assert_eq!(
            list_committed(&parent).expect("list the parent"),
            Vec::<String>::new()
        );
        assert_eq!(
            parent.list_dirs().expect("list the parent"),
            Vec::<String>::new()
        );
    }
}

/// Fixture b was saved on device ids 0..8, which a runtime of 4 devices lacks.
#[test]
fn restore_rejects_missing_devices() {
    let (parent, name) = common::fixture_parent("b_pytree_zarr2_no_ocdbt", "ckpt");
    let checkpointer = PyTreeCheckpointer::new(controller(2, 2));

    let restored = checkpointer.restore(&parent, &name, PyTreeRestore::new());
    let message = error_text(restored, "restore onto 4 devices");
    assert_contains(
        &message,
        &["['params']['dense']", "device 4", "RestoreArgs::array"],
    );
}

#[test]
fn restore_rejects_wrong_target_shape() {
    let (_dir, parent, controller) = saved_plain_checkpoint();
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));
    let wrong = ArraySpec {
        shape: vec![2, 4],
        dtype: DType::Float32,
        sharding: Sharding::single_device(controller.runtime().topology().device_ids()[0]),
    };
    let args = PyTree::dict([
        ("w", PyTree::leaf(RestoreArgs::array(wrong))),
        ("h", PyTree::leaf(RestoreArgs::default())),
        ("s", PyTree::leaf(RestoreArgs::default())),
    ]);

    let restored = checkpointer.restore(
        &parent,
        "ckpt",
        PyTreeRestore::new().with_restore_args(args),
    );
    let message = error_text(restored, "restore onto the wrong shape");
    assert_contains(&message, &["['w']", "[2, 4]", "[4, 2]"]);
}
