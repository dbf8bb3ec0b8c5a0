//! Round trips through the ckpt facade that compare values.
//!
//! They cover every dtype as host and as sharded arrays, scalars, strings
//! and tree structure, the colocated and gather paths, the memory and local
//! stores, and metadata. The files written are compared with those of
//! Python Orbax in fixture `b_pytree_zarr2_no_ocdbt`.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use ckpt::{
    colocated::{ArraySpec, Controller, Generator, ShardedArray},
    device::{DeviceId, Mesh, PartitionDim, PartitionSpec, Sharding},
    leaf_digests,
    pytree::PyTree,
    storage::{
        list_committed, open_committed, ArrayFormat, LocalBackend, ObjectStoreBackend, Store,
        COMMIT_SUCCESS_FILE, TMP_SUFFIX,
    },
    DType, HostArray, Leaf, LeafType, PyTreeCheckpointer, PyTreeRestore, PyTreeSave, RestoreArgs,
    RestoreContext, RestoreEntry, SaveArgs, SaveContext, SaveEntry, SavedLeaf, Scalar,
    ScalarHandler, TypeHandler, TypeHandlerRegistry,
};
use proptest::prelude::*;
use serde_json::Value;
use tempfile::TempDir;

use common::{controller, fixture_dir, open_fixture};

/// Opens a new temporary directory as a store. Writes skip `fsync`, which
/// these tests do not check and which makes saves of many small chunk
/// files slow.
fn local_parent() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let backend = LocalBackend::new(dir.path())
        .expect("open the directory")
        .with_fsync(false);
    (dir, Store::new(Arc::new(backend)))
}

fn memory_parent() -> Store {
    Store::new(Arc::new(
        ObjectStoreBackend::memory().expect("a memory store"),
    ))
}

/// Returns the array formats ckpt writes: zarr v2 or v3, each inside OCDBT
/// (Orbax's default is zarr v2 in OCDBT) or with one directory per array.
fn formats() -> Vec<(&'static str, ArrayFormat)> {
    let format = |use_ocdbt, use_zarr3| {
        let mut format = ArrayFormat::default();
        format.use_ocdbt = use_ocdbt;
        format.use_zarr3 = use_zarr3;
        format
    };
    vec![
        ("zarr2 ocdbt", format(true, false)),
        ("zarr2 plain", format(false, false)),
        ("zarr3 ocdbt", format(true, true)),
        ("zarr3 plain", format(false, true)),
    ]
}

/// Returns the bytes of a host array of `dtype` and `shape` with valid,
/// non-zero values.
fn host_array(dtype: DType, shape: &[u64], seed: u64) -> HostArray {
    let bytes = Generator::new(seed).global_bytes(dtype, shape);
    HostArray::from_bytes(shape.to_vec(), dtype, bytes).expect("a valid host array")
}

fn restore_all(
    checkpointer: &PyTreeCheckpointer,
    parent: &Store,
    name: &str,
    args: RestoreArgs,
) -> PyTree<Leaf> {
    let restore = PyTreeRestore::new().with_restore_args(PyTree::leaf(args));
    checkpointer
        .restore(parent, name, restore)
        .unwrap_or_else(|error| panic!("restore {name}: {error}"))
}

// Host arrays, scalars, strings and structure.

#[test]
fn host_array_dtypes_round_trip() {
    let shape = [3, 5];
    let tree = PyTree::dict(DType::ALL.iter().enumerate().map(|(i, &dtype)| {
        (
            dtype.name(),
            PyTree::leaf(Leaf::HostArray(host_array(dtype, &shape, i as u64))),
        )
    }));
    for (format_name, format) in formats() {
        let (_dir, parent) = local_parent();
        let checkpointer = PyTreeCheckpointer::new(controller(1, 1)).with_format(format);
        checkpointer
            .save(&parent, "ckpt", PyTreeSave::new(tree.clone()))
            .unwrap_or_else(|error| panic!("{format_name}: save: {error}"));

        let restored = checkpointer
            .restore(&parent, "ckpt", PyTreeRestore::new())
            .unwrap_or_else(|error| panic!("{format_name}: restore: {error}"));
        for ((path, found), (_, saved)) in restored.flatten().into_iter().zip(tree.flatten()) {
            assert_eq!(found, saved, "{format_name} {path}");
        }
        assert_eq!(restored, tree, "{format_name}");
    }
}

#[test]
fn scalars_round_trip() {
    let scalars = [
        ("int", Scalar::Int(-7)),
        ("int_min", Scalar::Int(i64::MIN)),
        ("int_max", Scalar::Int(i64::MAX)),
        ("float", Scalar::Float(0.125)),
        ("float_negative_zero", Scalar::Float(-0.0)),
        ("float_large", Scalar::Float(1e300)),
        ("bool_true", Scalar::Bool(true)),
        ("bool_false", Scalar::Bool(false)),
    ];
    let tree = PyTree::dict(scalars.map(|(key, scalar)| (key, PyTree::leaf(Leaf::Scalar(scalar)))));
    let (_dir, parent) = local_parent();
    let checkpointer = PyTreeCheckpointer::new(controller(1, 1));
    checkpointer
        .save(&parent, "ckpt", PyTreeSave::new(tree.clone()))
        .expect("save");

    let restored = checkpointer
        .restore(&parent, "ckpt", PyTreeRestore::new())
        .expect("restore");
    for (key, scalar) in scalars {
        let path = [key.into()].into_iter().collect();
        let Some(PyTree::Leaf(Leaf::Scalar(found))) = restored.get(&path) else {
            panic!("{key}: restored as {:?}", restored.get(&path));
        };
        assert_eq!(found, &scalar, "{key}");
        assert_eq!(found.to_bytes(), scalar.to_bytes(), "{key}: bits");
    }
}

#[test]
fn unicode_strings_round_trip() {
    let strings = [
        ("ascii", "hello"),
        ("empty", ""),
        ("accents", "h\u{e9}llo \u{2713} \"quoted\" \\ /slash"),
        ("cjk", "\u{65e5}\u{672c}\u{8a9e}"),
        ("emoji", "\u{1f980} crab"),
        ("control", "tab\tnewline\n nul\u{0}"),
    ];
    let tree = PyTree::dict(strings.map(|(key, text)| (key, PyTree::leaf(Leaf::from(text)))));
    for parent in [local_parent().1, memory_parent()] {
        let checkpointer = PyTreeCheckpointer::new(controller(1, 1));
        checkpointer
            .save(&parent, "ckpt", PyTreeSave::new(tree.clone()))
            .expect("save");

        let restored = checkpointer
            .restore(&parent, "ckpt", PyTreeRestore::new())
            .expect("restore");
        assert_eq!(restored, tree, "{}", parent.url());
    }
}

/// Orbax restores tuples as lists, because `_METADATA` records sequence
/// keys only, but it restores an empty tuple as a tuple, because the empty
/// node has a value type of its own (fixture `g_scalars_empty`).
#[test]
fn structure_round_trips() {
    let leaf = |value: i64| PyTree::leaf(Leaf::Scalar(Scalar::Int(value)));
    let tree = PyTree::dict([
        ("empty_dict", PyTree::Dict(BTreeMap::new())),
        ("empty_list", PyTree::list([])),
        ("empty_tuple", PyTree::tuple([])),
        ("none", PyTree::None),
        (
            "pair",
            PyTree::tuple([leaf(1), PyTree::tuple([leaf(2), PyTree::None])]),
        ),
        (
            "nested",
            PyTree::list([
                PyTree::list([leaf(3), PyTree::list([leaf(4), leaf(5)])]),
                PyTree::list([]),
                PyTree::dict([("x", leaf(6))]),
            ]),
        ),
    ]);
    let expected = PyTree::dict([
        ("empty_dict", PyTree::Dict(BTreeMap::new())),
        ("empty_list", PyTree::list([])),
        ("empty_tuple", PyTree::tuple([])),
        ("none", PyTree::None),
        (
            "pair",
            PyTree::list([leaf(1), PyTree::list([leaf(2), PyTree::None])]),
        ),
        (
            "nested",
            PyTree::list([
                PyTree::list([leaf(3), PyTree::list([leaf(4), leaf(5)])]),
                PyTree::list([]),
                PyTree::dict([("x", leaf(6))]),
            ]),
        ),
    ]);
    let (_dir, parent) = local_parent();
    let checkpointer = PyTreeCheckpointer::new(controller(1, 1));
    checkpointer
        .save(&parent, "ckpt", PyTreeSave::new(tree))
        .expect("save");

    let restored = checkpointer
        .restore(&parent, "ckpt", PyTreeRestore::new())
        .expect("restore");
    assert_eq!(restored, expected);
}

// Sharded arrays of every dtype on many shardings.

/// Shapes and shardings on 4 hosts of 2 devices each (device ids 0..8).
fn sharding_cases() -> Vec<(&'static str, Vec<u64>, Sharding)> {
    let all: Vec<DeviceId> = (0..8).map(DeviceId).collect();
    let first_four: Vec<DeviceId> = (0..4).map(DeviceId).collect();
    let row = Mesh::new(vec![4], vec!["x"], first_four).expect("a 1-D mesh");
    let grid = Mesh::new(vec![4, 2], vec!["x", "y"], all.clone()).expect("a 4x2 mesh");
    let named = |mesh: &Mesh, spec: PartitionSpec| {
        Sharding::named(mesh.clone(), spec).expect("a valid sharding")
    };
    vec![
        (
            "uneven_rows",
            vec![10, 3],
            named(&row, PartitionSpec::new([Some("x"), None])),
        ),
        (
            "uneven_grid",
            vec![9, 5],
            named(&grid, PartitionSpec::new([Some("x"), Some("y")])),
        ),
        (
            "grid",
            vec![8, 4],
            named(&grid, PartitionSpec::new([Some("x"), Some("y")])),
        ),
        (
            "grid_transposed",
            vec![6, 8],
            named(&grid, PartitionSpec::new([Some("y"), Some("x")])),
        ),
        (
            "two_axes_one_dim",
            vec![16],
            named(
                &grid,
                PartitionSpec::from_dims([PartitionDim::axes(["x", "y"])]),
            ),
        ),
        (
            "replicated_named",
            vec![5, 3],
            named(&grid, PartitionSpec::replicated()),
        ),
        (
            "replicated",
            vec![7],
            Sharding::replicated(all).expect("a replicated sharding"),
        ),
        (
            "single_device",
            vec![3, 3],
            Sharding::single_device(DeviceId(5)),
        ),
        ("scalar", vec![], named(&grid, PartitionSpec::replicated())),
    ]
}

struct ShardedTree {
    tree: PyTree<Leaf>,
    /// Each array with the seed of its values, by parameter name.
    arrays: BTreeMap<String, (ShardedArray, u64)>,
    /// Bytes of one copy of every array.
    total_bytes: u64,
}

/// Returns the dtypes saved on a sharding case: all of them on the uneven,
/// replicated and single-device cases, and one of each item size plus the
/// sub-byte and bool types elsewhere, to keep the test fast.
fn dtypes_for_case(case: &str) -> Vec<DType> {
    if ["uneven_rows", "uneven_grid", "replicated", "single_device"].contains(&case) {
        return DType::ALL.to_vec();
    }
    vec![
        DType::Bool,
        DType::Int4,
        DType::BFloat16,
        DType::Float32,
        DType::Int64,
        DType::Complex128,
    ]
}

/// Puts arrays on every sharding case, as `{case: {dtype: array}}`.
fn sharded_tree(controller: &Controller) -> ShardedTree {
    let mut arrays = BTreeMap::new();
    let mut cases = Vec::new();
    let mut total_bytes = 0;
    let mut seed = 0;
    for (case, shape, sharding) in sharding_cases() {
        let mut leaves = Vec::new();
        for dtype in dtypes_for_case(case) {
            seed += 1;
            let spec = ArraySpec {
                shape: shape.clone(),
                dtype,
                sharding: sharding.clone(),
            };
            let array = controller
                .put_generated(spec, Generator::new(seed))
                .expect("put an array");
            total_bytes += ckpt::core::num_bytes(&shape, dtype).expect("a small array");
            arrays.insert(format!("{case}.{}", dtype.name()), (array.clone(), seed));
            leaves.push((dtype.name(), PyTree::leaf(Leaf::Array(array))));
        }
        cases.push((case, PyTree::dict(leaves)));
    }
    ShardedTree {
        tree: PyTree::dict(cases),
        arrays,
        total_bytes,
    }
}

/// Checks every restored sharded array against the saved one: shape,
/// dtype, the boxes each device holds, and the global bytes.
fn assert_sharded_restored(
    controller: &Controller,
    saved: &ShardedTree,
    restored: &PyTree<Leaf>,
    context: &str,
) {
    let flat = restored.flatten();
    assert_eq!(flat.len(), saved.arrays.len(), "{context}: leaf count");
    for (path, leaf) in flat {
        let name = ckpt::pytree::param_name(&path);
        let (array, seed) = &saved.arrays[&name];
        let Leaf::Array(found) = leaf else {
            panic!("{context} {name}: restored as {leaf:?}");
        };
        let spec = array.spec();
        assert_eq!(found.spec().shape, spec.shape, "{context} {name}: shape");
        assert_eq!(found.spec().dtype, spec.dtype, "{context} {name}: dtype");
        if matches!(spec.sharding, Sharding::Replicated { .. }) {
            // A replicated sharding is written as a named sharding with an
            // empty partition spec, so compare where each device's data lies.
            let boxes = |sharding: &Sharding| {
                sharding
                    .devices_indices_map(&spec.shape)
                    .expect("a valid sharding")
            };
            assert_eq!(
                boxes(&found.spec().sharding),
                boxes(&spec.sharding),
                "{context} {name}: device boxes"
            );
        } else {
            assert_eq!(
                found.spec().sharding,
                spec.sharding,
                "{context} {name}: sharding"
            );
        }
        let bytes = controller
            .to_global_bytes(found)
            .expect("the restored bytes");
        let expected = Generator::new(*seed).global_bytes(spec.dtype, &spec.shape);
        assert_eq!(bytes, expected, "{context} {name}: values");
    }
}

#[test]
fn sharded_dtypes_gather_round_trip() {
    for (format_name, format) in formats() {
        let controller = controller(4, 2);
        let saved = sharded_tree(&controller);
        let (_dir, parent) = local_parent();
        let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller)).with_format(format);

        let before = controller.array_bytes();
        let summary = checkpointer
            .save(&parent, "ckpt", PyTreeSave::new(saved.tree.clone()))
            .unwrap_or_else(|error| panic!("{format_name}: save: {error}"));
        assert_eq!(
            summary.controller_array_bytes, saved.total_bytes,
            "{format_name}: bytes through the controller"
        );
        assert_eq!(
            controller.array_bytes() - before,
            saved.total_bytes,
            "{format_name}: controller count"
        );

        let restored = restore_all(&checkpointer, &parent, "ckpt", RestoreArgs::default());
        assert_sharded_restored(&controller, &saved, &restored, format_name);
    }
}

#[test]
fn sharded_dtypes_colocated_round_trip() {
    for (format_name, format) in formats() {
        let controller = controller(4, 2);
        let saved = sharded_tree(&controller);
        let (_dir, parent) = local_parent();
        let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller)).with_format(format);

        let before = controller.array_bytes();
        let args =
            PyTreeSave::new(saved.tree.clone()).with_save_args(PyTree::leaf(SaveArgs::colocated()));
        let summary = checkpointer
            .save(&parent, "ckpt", args)
            .unwrap_or_else(|error| panic!("{format_name}: save: {error}"));
        assert_eq!(
            summary.controller_array_bytes, 0,
            "{format_name}: bytes through the controller"
        );
        assert_eq!(
            controller.array_bytes(),
            before,
            "{format_name}: controller count after save"
        );

        let restored = restore_all(
            &checkpointer,
            &parent,
            "ckpt",
            RestoreArgs::default().with_colocated(true),
        );
        assert_eq!(
            controller.array_bytes(),
            before,
            "{format_name}: controller count after restore"
        );
        assert_sharded_restored(&controller, &saved, &restored, format_name);
    }
}

/// A colocated save restores through the controller and the other way round.
#[test]
fn colocated_and_gather_interchange() {
    let controller = controller(4, 2);
    let saved = sharded_tree(&controller);
    let (_dir, parent) = local_parent();
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));

    let colocated =
        PyTreeSave::new(saved.tree.clone()).with_save_args(PyTree::leaf(SaveArgs::colocated()));
    checkpointer
        .save(&parent, "colocated", colocated)
        .expect("colocated save");
    checkpointer
        .save(&parent, "gathered", PyTreeSave::new(saved.tree.clone()))
        .expect("gather save");

    let restored = restore_all(&checkpointer, &parent, "colocated", RestoreArgs::default());
    assert_sharded_restored(
        &controller,
        &saved,
        &restored,
        "colocated save, gather restore",
    );
    let restored = restore_all(
        &checkpointer,
        &parent,
        "gathered",
        RestoreArgs::default().with_colocated(true),
    );
    assert_sharded_restored(
        &controller,
        &saved,
        &restored,
        "gather save, colocated restore",
    );
}

/// Restores onto a different sharding than the one saved.
#[test]
fn restore_reshards() {
    let controller = controller(4, 2);
    let saved = sharded_tree(&controller);
    let (_dir, parent) = local_parent();
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));
    checkpointer
        .save(&parent, "ckpt", PyTreeSave::new(saved.tree.clone()))
        .expect("save");

    let (name, (array, seed)) = saved
        .arrays
        .iter()
        .find(|(name, _)| name.as_str() == "uneven_grid.float32")
        .expect("a saved array");
    let devices: Vec<DeviceId> = (0..8).rev().map(DeviceId).collect();
    let mesh = Mesh::new(vec![8], vec!["z"], devices).expect("a 1-D mesh");
    let target = ArraySpec {
        shape: array.spec().shape.clone(),
        dtype: array.spec().dtype,
        sharding: Sharding::named(mesh, PartitionSpec::new([None, Some("z")]))
            .expect("a valid sharding"),
    };
    let path = ckpt::pytree::KeyPath::from(vec!["uneven_grid".into(), "float32".into()]);
    for colocated in [false, true] {
        let mut args = saved.tree.as_ref().map(|_| RestoreArgs::default());
        if let Some(PyTree::Leaf(leaf_args)) = args.get_mut(&path) {
            *leaf_args = RestoreArgs::array(target.clone()).with_colocated(colocated);
        }
        let restored = checkpointer
            .restore(
                &parent,
                "ckpt",
                PyTreeRestore::new().with_restore_args(args),
            )
            .unwrap_or_else(|error| panic!("restore of {name}: {error}"));
        let Some(PyTree::Leaf(Leaf::Array(found))) = restored.get(&path) else {
            panic!("{name}: not restored as a sharded array");
        };
        assert_eq!(found.spec(), &target, "colocated {colocated}: spec");
        let bytes = controller
            .to_global_bytes(found)
            .expect("the restored bytes");
        assert_eq!(
            bytes,
            Generator::new(*seed).global_bytes(DType::Float32, &target.shape),
            "colocated {colocated}: values"
        );
    }
}

// Stores and the commit protocol.

/// A scalar handler that records the directory each save writes into.
#[derive(Debug, Default)]
struct RecordingScalarHandler {
    save_dirs: Mutex<Vec<String>>,
}

impl TypeHandler for RecordingScalarHandler {
    fn value_type(&self) -> &str {
        ScalarHandler.value_type()
    }

    fn save(
        &self,
        context: &SaveContext<'_>,
        entries: &[SaveEntry<'_>],
    ) -> ckpt::Result<Vec<SavedLeaf>> {
        self.save_dirs
            .lock()
            .expect("the lock is not poisoned")
            .push(context.item.url());
        ScalarHandler.save(context, entries)
    }

    fn restore(
        &self,
        context: &RestoreContext<'_>,
        entries: &[RestoreEntry<'_>],
    ) -> ckpt::Result<Vec<Leaf>> {
        ScalarHandler.restore(context, entries)
    }
}

/// Saves a small tree of every leaf kind through a recording scalar
/// handler, restores it and checks the values. Returns the directory the
/// save wrote into.
fn save_and_check(parent: &Store, name: &str) -> String {
    let controller = controller(2, 2);
    let recorder = Arc::new(RecordingScalarHandler::default());
    let mut registry = TypeHandlerRegistry::with_defaults();
    registry
        .register(
            LeafType::Scalar,
            Arc::clone(&recorder) as Arc<dyn TypeHandler>,
            true,
        )
        .expect("register the recorder");
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller)).with_registry(registry);

    let devices = controller.runtime().topology().device_ids();
    let mesh = Mesh::new(vec![4], vec!["x"], devices).expect("a mesh");
    let spec = ArraySpec {
        shape: vec![6, 2],
        dtype: DType::BFloat16,
        sharding: Sharding::named(mesh, PartitionSpec::new([Some("x"), None])).expect("a sharding"),
    };
    let array = controller
        .put_generated(spec.clone(), Generator::new(3))
        .expect("put an array");
    let host = host_array(DType::Int16, &[2, 3], 4);
    let tree = PyTree::dict([
        ("array", PyTree::leaf(Leaf::Array(array))),
        ("host", PyTree::leaf(Leaf::HostArray(host.clone()))),
        ("step", PyTree::leaf(Leaf::Scalar(Scalar::Int(12)))),
        ("note", PyTree::leaf(Leaf::from("r\u{e9}sum\u{e9}"))),
    ]);
    checkpointer
        .save(parent, name, PyTreeSave::new(tree))
        .expect("save");

    let restored = checkpointer
        .restore(parent, name, PyTreeRestore::new())
        .expect("restore");
    let leaf = |key: &str| restored.get(&[key.into()].into_iter().collect()).cloned();
    let Some(PyTree::Leaf(Leaf::Array(found))) = leaf("array") else {
        panic!("array not restored as a sharded array");
    };
    assert_eq!(found.spec(), &spec);
    let bytes = controller
        .to_global_bytes(&found)
        .expect("the restored bytes");
    assert_eq!(
        bytes,
        Generator::new(3).global_bytes(DType::BFloat16, &[6, 2])
    );
    assert_eq!(leaf("host"), Some(PyTree::leaf(Leaf::HostArray(host))));
    assert_eq!(
        leaf("step"),
        Some(PyTree::leaf(Leaf::Scalar(Scalar::Int(12))))
    );
    assert_eq!(
        leaf("note"),
        Some(PyTree::leaf(Leaf::from("r\u{e9}sum\u{e9}")))
    );

    let dirs = recorder
        .save_dirs
        .lock()
        .expect("the lock is not poisoned")
        .clone();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

#[test]
fn memory_store_commits_with_marker() {
    let parent = memory_parent();
    let save_dir = save_and_check(&parent, "ckpt");

    assert!(
        save_dir.ends_with("/ckpt"),
        "the save wrote into {save_dir}"
    );
    let checkpoint = parent.child("ckpt").expect("a child store");
    let marker = checkpoint
        .get(COMMIT_SUCCESS_FILE)
        .expect("read the marker");
    let marker = marker.map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    assert_eq!(
        marker,
        Some(format!(
            "Checkpoint commit was successful to {}",
            checkpoint.url()
        ))
    );
    assert_eq!(
        list_committed(&parent).expect("list"),
        vec!["ckpt".to_owned()]
    );
    assert_eq!(parent.list_dirs().expect("list"), vec!["ckpt".to_owned()]);
}

#[test]
fn local_store_commits_by_rename() {
    let (dir, parent) = local_parent();
    let save_dir = save_and_check(&parent, "ckpt");

    assert!(
        save_dir.ends_with(&format!("/ckpt{TMP_SUFFIX}")),
        "the save wrote into {save_dir}"
    );
    let final_dir = dir.path().join("ckpt");
    let marker =
        std::fs::read_to_string(final_dir.join(COMMIT_SUCCESS_FILE)).expect("read the marker");
    let final_path = std::fs::canonicalize(&final_dir).expect("the final directory");
    assert_eq!(
        marker,
        format!(
            "Checkpoint commit was successful to {}",
            final_path.display()
        )
    );
    assert!(
        !dir.path().join(format!("ckpt{TMP_SUFFIX}")).exists(),
        "the temporary directory is left"
    );
    assert_eq!(
        list_committed(&parent).expect("list"),
        vec!["ckpt".to_owned()]
    );
}

/// Saves, as `ckpt`, a one-leaf tree whose host array contains `seed`'s values.
fn save_seeded(checkpointer: &PyTreeCheckpointer, parent: &Store, seed: u64) -> ckpt::Result<()> {
    let tree = PyTree::dict([("w", PyTree::leaf(Leaf::HostArray(host_array(DType::Int32, &[3, 4], seed))))]);
    checkpointer.save(parent, "ckpt", PyTreeSave::new(tree)).map(|_| ())
}

#[test]
fn overwrite_replaces_committed_checkpoint() {
    let (_dir, local) = local_parent();
    for (store, parent) in [("local", local), ("memory", memory_parent())] {
        let checkpointer = PyTreeCheckpointer::new(controller(2, 1));
        save_seeded(&checkpointer, &parent, 1).expect("the first save");

        let error = save_seeded(&checkpointer, &parent, 2).expect_err("a second save without overwrite");
        let message = error.to_string();
        assert!(message.contains("already exists"), "{store}: {message}");
        assert!(message.contains("overwrite"), "{store}: {message}");
        let previous = restore_all(&checkpointer, &parent, "ckpt", RestoreArgs::default());
        assert_eq!(previous, PyTree::dict([("w", PyTree::leaf(Leaf::HostArray(host_array(DType::Int32, &[3, 4], 1))))]), "{store}");

        let overwriting = PyTreeCheckpointer::new(controller(2, 1)).with_overwrite(true);
        save_seeded(&overwriting, &parent, 2).expect("a save with overwrite");
        let replaced = restore_all(&checkpointer, &parent, "ckpt", RestoreArgs::default());
        assert_eq!(replaced, PyTree::dict([("w", PyTree::leaf(Leaf::HostArray(host_array(DType::Int32, &[3, 4], 2))))]), "{store}");
        assert_eq!(list_committed(&parent).expect("list"), vec!["ckpt".to_owned()], "{store}");
    }
}

#[test]
fn checkpoint_metadata_records_handler() {
    let (_dir, parent) = local_parent();
    save_and_check(&parent, "ckpt");

    let item = open_committed(&parent, "ckpt").expect("ckpt is committed");
    let text = item
        .get_required("_CHECKPOINT_METADATA")
        .expect("read _CHECKPOINT_METADATA");
    let document: Value = serde_json::from_slice(&text).expect("JSON");
    assert_eq!(
        document["item_handlers"],
        "orbax.checkpoint._src.handlers.pytree_checkpoint_handler.PyTreeCheckpointHandler"
    );
    let init = document["init_timestamp_nsecs"]
        .as_u64()
        .expect("an init time");
    let commit = document["commit_timestamp_nsecs"]
        .as_u64()
        .expect("a commit time");
    assert!(init <= commit, "init {init} after commit {commit}");
}

// Metadata without array reads.

#[test]
fn metadata_reads_no_arrays() {
    let controller = controller(2, 2);
    let (dir, parent) = local_parent();
    let mut plain = ArrayFormat::default();
    plain.use_ocdbt = false;
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller)).with_format(plain);

    let devices = controller.runtime().topology().device_ids();
    let mesh = Mesh::new(vec![2, 2], vec!["x", "y"], devices).expect("a mesh");
    let sharding =
        Sharding::named(mesh, PartitionSpec::new([Some("y"), Some("x")])).expect("a sharding");
    let spec = ArraySpec {
        shape: vec![4, 6],
        dtype: DType::Float16,
        sharding: sharding.clone(),
    };
    let array = controller
        .put_generated(spec, Generator::new(9))
        .expect("put an array");
    let tree = PyTree::dict([
        ("w", PyTree::leaf(Leaf::Array(array))),
        (
            "opt",
            PyTree::tuple([
                PyTree::leaf(Leaf::HostArray(host_array(DType::UInt32, &[5], 1))),
                PyTree::None,
            ]),
        ),
        ("step", PyTree::leaf(Leaf::Scalar(Scalar::Float(1.5)))),
        ("name", PyTree::leaf(Leaf::from("run"))),
    ]);
    checkpointer
        .save(&parent, "ckpt", PyTreeSave::new(tree))
        .expect("save");

    // Delete every chunk: metadata must not need them.
    for key in parent.child("ckpt").expect("a child").list().expect("list") {
        let is_chunk =
            key.contains('/') && !key.ends_with("/.zarray") && !key.starts_with("array_metadatas/");
        if is_chunk {
            std::fs::remove_file(dir.path().join("ckpt").join(&key)).expect("delete a chunk");
        }
    }
    let before = controller.array_bytes();
    let metadata = checkpointer.metadata(&parent, "ckpt").expect("metadata");
    assert_eq!(controller.array_bytes(), before);

    assert_eq!(metadata.use_ocdbt, Some(false));
    assert!(!metadata.use_zarr3);
    let leaf = |keys: &[ckpt::pytree::Key]| {
        let path = keys.iter().cloned().collect();
        match metadata.tree.get(&path) {
            Some(PyTree::Leaf(leaf)) => leaf.clone(),
            other => panic!("{path}: {other:?}"),
        }
    };
    let w = leaf(&["w".into()]);
    assert_eq!(w.value_type, "jax.Array");
    assert_eq!(w.dtype, Some(DType::Float16));
    assert_eq!(w.shape, Some(vec![4, 6]));
    assert_eq!(w.chunk_shape, Some(vec![2, 3]));
    assert_eq!(w.size_bytes, Some(48));
    assert_eq!(w.sharding, Some(sharding.to_orbax_json()));

    let host = leaf(&["opt".into(), ckpt::pytree::Key::Index(0)]);
    assert_eq!(host.value_type, "np.ndarray");
    assert_eq!(host.dtype, Some(DType::UInt32));
    assert_eq!(host.shape, Some(vec![5]));
    assert_eq!(host.sharding, None);

    let step = leaf(&["step".into()]);
    assert_eq!(step.value_type, "scalar");
    assert_eq!(step.dtype, Some(DType::Float64));
    assert_eq!(step.shape, Some(vec![]));

    let name = leaf(&["name".into()]);
    assert_eq!(name.value_type, "string");
    assert_eq!(name.dtype, None);
    assert_eq!(name.shape, None);

    let opt = metadata
        .tree
        .get(&["opt".into()].into_iter().collect())
        .expect("opt");
    assert_eq!(
        opt.kind(),
        ckpt::pytree::NodeKind::List,
        "a tuple's metadata is a list"
    );
    let none = metadata.tree.get(
        &["opt".into(), ckpt::pytree::Key::Index(1)]
            .into_iter()
            .collect(),
    );
    assert_eq!(none, Some(&PyTree::None));
}

// The files written, against those of Orbax in fixture b.

/// Saves the tree of fixture `b_pytree_zarr2_no_ocdbt` with the same
/// options (zarr v2 without OCDBT) on 8 devices, and returns the
/// checkpoint's directory.
fn save_fixture_b_tree(dir: &TempDir, parent: &Store) -> std::path::PathBuf {
    let controller = controller(4, 2);
    let devices: Vec<DeviceId> = (0..8).map(DeviceId).collect();
    let mesh = Mesh::new(vec![4, 2], vec!["x", "y"], devices).expect("a 4x2 mesh");
    let put = |shape: Vec<u64>, dtype, spec, bytes: &[u8]| {
        let sharding = Sharding::named(mesh.clone(), spec).expect("a sharding");
        controller
            .put_global(
                ArraySpec {
                    shape,
                    dtype,
                    sharding,
                },
                bytes,
            )
            .expect("put an array")
    };
    let kernel: Vec<f32> = (0..128).map(|i| i as f32).collect();
    let kernel = put(
        vec![16, 8],
        DType::Float32,
        PartitionSpec::new([Some("x"), Some("y")]),
        bytemuck::cast_slice(&kernel),
    );
    let bias: Vec<half::bf16> = (0..8)
        .map(|i| half::bf16::from_f32(i as f32 * 0.5))
        .collect();
    let bias = put(
        vec![8],
        DType::BFloat16,
        PartitionSpec::replicated(),
        bytemuck::cast_slice(&bias),
    );

    let tree = PyTree::dict([
        ("lr", PyTree::leaf(Leaf::Scalar(Scalar::Float(0.125)))),
        ("name", PyTree::leaf(Leaf::from("hello"))),
        (
            "opt",
            PyTree::list([
                PyTree::leaf(Leaf::HostArray(
                    HostArray::from_vec(vec![5], (0..5).collect::<Vec<i32>>()).expect("opt.0"),
                )),
                PyTree::tuple([
                    PyTree::leaf(Leaf::HostArray(
                        HostArray::from_vec(vec![3], vec![0.5f32, 1.5, 2.5]).expect("opt.1.0"),
                    )),
                    PyTree::leaf(Leaf::HostArray(
                        HostArray::from_vec(vec![2, 2], vec![-2i64, -1, 0, 1]).expect("opt.1.1"),
                    )),
                ]),
            ]),
        ),
        (
            "params",
            PyTree::dict([(
                "dense",
                PyTree::dict([
                    ("bias", PyTree::leaf(Leaf::Array(bias))),
                    ("kernel", PyTree::leaf(Leaf::Array(kernel))),
                ]),
            )]),
        ),
        ("step", PyTree::leaf(Leaf::Scalar(Scalar::Int(7)))),
    ]);

    let mut plain = ArrayFormat::default();
    plain.use_ocdbt = false;
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller)).with_format(plain);
    checkpointer
        .save(parent, "ckpt", PyTreeSave::new(tree))
        .expect("save");
    dir.path().join("ckpt")
}

fn read_json(path: &std::path::Path) -> Value {
    let bytes = std::fs::read(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Lists the files below `dir`, relative to it, sorted.
fn list_files(dir: &std::path::Path) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).expect("list a directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).expect("below the root");
                files.insert(relative.to_string_lossy().into_owned());
            }
        }
    }
    files
}

#[test]
fn metadata_file_matches_orbax() {
    let (dir, parent) = local_parent();
    let ours = save_fixture_b_tree(&dir, &parent);
    let orbax = fixture_dir("b_pytree_zarr2_no_ocdbt").join("ckpt");

    assert_eq!(
        read_json(&ours.join("_METADATA")),
        read_json(&orbax.join("_METADATA"))
    );
}

#[test]
fn sharding_file_matches_orbax() {
    let (dir, parent) = local_parent();
    let ours = save_fixture_b_tree(&dir, &parent);
    let orbax = fixture_dir("b_pytree_zarr2_no_ocdbt").join("ckpt");

    let ours = std::fs::read_to_string(ours.join("_sharding")).expect("our _sharding");
    let orbax = std::fs::read_to_string(orbax.join("_sharding")).expect("Orbax's _sharding");
    let ours: BTreeMap<String, String> =
        serde_json::from_str(&ours).expect("a JSON object of strings");
    let orbax: BTreeMap<String, String> =
        serde_json::from_str(&orbax).expect("a JSON object of strings");
    // Each value is Python's json.dumps text, compared byte for byte.
    assert_eq!(ours, orbax);
}

#[test]
fn zarray_files_match_orbax() {
    let (dir, parent) = local_parent();
    let ours = save_fixture_b_tree(&dir, &parent);
    let orbax = fixture_dir("b_pytree_zarr2_no_ocdbt").join("ckpt");

    let zarrays: Vec<String> = list_files(&orbax)
        .into_iter()
        .filter(|file| file.ends_with("/.zarray"))
        .collect();
    assert_eq!(zarrays.len(), 7, "{zarrays:?}");
    for file in &zarrays {
        assert_eq!(
            read_json(&ours.join(file)),
            read_json(&orbax.join(file)),
            "{file}"
        );
    }
}

#[test]
fn array_files_match_orbax() {
    let (dir, parent) = local_parent();
    let ours = save_fixture_b_tree(&dir, &parent);
    let orbax = fixture_dir("b_pytree_zarr2_no_ocdbt").join("ckpt");

    // Every zarr key and the strings file, by name. Chunk bytes can differ
    // because zstd builds differ, so values are compared by digest below.
    let arrays = |dir| -> BTreeSet<String> {
        list_files(dir)
            .into_iter()
            .filter(|file| {
                file.contains('/') && !file.starts_with("array_metadatas/")
                    || file == "_strings.json"
            })
            .collect()
    };
    assert_eq!(arrays(&ours), arrays(&orbax));
    assert_eq!(
        read_json(&ours.join("_strings.json")),
        read_json(&orbax.join("_strings.json"))
    );

    let item = open_committed(&parent, "ckpt").expect("ckpt is committed");
    let ours = leaf_digests(&item).expect("our digests");
    let theirs =
        leaf_digests(&open_fixture("b_pytree_zarr2_no_ocdbt", "ckpt")).expect("Orbax's digests");
    assert_eq!(ours, theirs);
}

#[test]
fn checkpoint_metadata_matches_orbax_keys() {
    let (dir, parent) = local_parent();
    let ours = read_json(&save_fixture_b_tree(&dir, &parent).join("_CHECKPOINT_METADATA"));
    let orbax =
        read_json(&fixture_dir("b_pytree_zarr2_no_ocdbt").join("ckpt/_CHECKPOINT_METADATA"));

    let keys = |value: &Value| -> BTreeSet<String> {
        value
            .as_object()
            .expect("a JSON object")
            .keys()
            .cloned()
            .collect()
    };
    assert_eq!(keys(&ours), keys(&orbax));
    for key in [
        "item_handlers",
        "metrics",
        "performance_metrics",
        "custom_metadata",
    ] {
        assert_eq!(ours[key], orbax[key], "{key}");
    }
}

// Random trees.

/// One array of a random tree: its dtype, shape, sharding and values.
#[derive(Clone, Debug)]
struct RandomArray {
    dtype: DType,
    shape: Vec<u64>,
    /// 0: named sharding over the mesh, 1: one device, 2: replicated.
    sharding_kind: u8,
    /// Per dimension: 0 unsharded, 1 split over mesh axis `x`, 2 over `y`.
    dim_axes: Vec<u8>,
    device: usize,
    seed: u64,
}

#[derive(Clone, Debug)]
struct RandomCase {
    hosts: usize,
    devices_per_host: usize,
    /// Picks the mesh: 1-D, or 2-D with this index into the divisors of the device count.
    mesh_choice: usize,
    arrays: Vec<RandomArray>,
    colocated_save: bool,
    colocated_restore: bool,
    ocdbt: bool,
    zarr3: bool,
}

fn random_array() -> impl Strategy<Value = RandomArray> {
    (
        prop::sample::select(DType::ALL.to_vec()),
        prop::collection::vec(1u64..=7, 0..=3),
        0u8..3,
        prop::collection::vec(0u8..3, 3),
        0usize..8,
        any::<u64>(),
    )
        .prop_map(
            |(dtype, shape, sharding_kind, dim_axes, device, seed)| RandomArray {
                dtype,
                shape,
                sharding_kind,
                dim_axes,
                device,
                seed,
            },
        )
}

fn random_case() -> impl Strategy<Value = RandomCase> {
    (
        1usize..=4,
        1usize..=2,
        0usize..4,
        prop::collection::vec(random_array(), 1..=4),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(
                hosts,
                devices_per_host,
                mesh_choice,
                arrays,
                colocated_save,
                colocated_restore,
                ocdbt,
                zarr3,
            )| RandomCase {
                hosts,
                devices_per_host,
                mesh_choice,
                arrays,
                colocated_save,
                colocated_restore,
                ocdbt,
                zarr3,
            },
        )
}

/// Builds the mesh of a case: 1-D over all devices, or 2-D `x` by `y`
/// with `x` a divisor of the device count.
fn random_mesh(case: &RandomCase) -> Mesh {
    let count = case.hosts * case.devices_per_host;
    let devices: Vec<DeviceId> = (0..count as u32).map(DeviceId).collect();
    let divisors: Vec<usize> = (1..=count).filter(|d| count.is_multiple_of(*d)).collect();
    match case.mesh_choice {
        0 => Mesh::new(vec![count], vec!["x"], devices),
        choice => {
            let x = divisors[choice % divisors.len()];
            Mesh::new(vec![x, count / x], vec!["x", "y"], devices)
        }
    }
    .expect("a valid mesh")
}

fn random_sharding(mesh: &Mesh, array: &RandomArray) -> Sharding {
    let devices = mesh.devices();
    match array.sharding_kind {
        1 => Sharding::single_device(devices[array.device % devices.len()]),
        2 => Sharding::replicated(devices.to_vec()).expect("a replicated sharding"),
        _ => {
            let mut used = BTreeSet::new();
            let dims = array.shape.iter().zip(&array.dim_axes).map(|(_, &choice)| {
                let axis = match choice {
                    1 => "x",
                    2 => "y",
                    _ => return None,
                };
                (mesh.axis_index(axis).is_some() && used.insert(axis)).then_some(axis)
            });
            let spec = PartitionSpec::new(dims.collect::<Vec<_>>());
            Sharding::named(mesh.clone(), spec).expect("a valid sharding")
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn random_trees_round_trip(case in random_case()) {
        let controller = controller(case.hosts, case.devices_per_host);
        let mesh = random_mesh(&case);
        let mut leaves = Vec::new();
        for (i, random) in case.arrays.iter().enumerate() {
            let spec = ArraySpec { shape: random.shape.clone(), dtype: random.dtype, sharding: random_sharding(&mesh, random) };
            let array = controller.put_generated(spec, Generator::new(random.seed)).expect("put an array");
            leaves.push((format!("a{i}"), PyTree::leaf(Leaf::Array(array))));
        }
        // Half of the arrays go one level down, inside a list.
        let (top, nested): (Vec<_>, Vec<_>) = leaves.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        let mut entries: Vec<(String, PyTree<Leaf>)> = top.into_iter().map(|(_, entry)| entry).collect();
        entries.push(("list".to_owned(), PyTree::list(nested.into_iter().map(|(_, (_, tree))| tree))));
        let tree = PyTree::dict(entries);

        let mut format = ArrayFormat::default();
        format.use_ocdbt = case.ocdbt;
        format.use_zarr3 = case.zarr3;
        let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller)).with_format(format);
        let (_dir, parent) = local_parent();
        let save_args = PyTree::leaf(SaveArgs::colocated().with_colocated(case.colocated_save));
        checkpointer.save(&parent, "ckpt", PyTreeSave::new(tree.clone()).with_save_args(save_args)).expect("save");
        let restored = restore_all(&checkpointer, &parent, "ckpt", RestoreArgs::default().with_colocated(case.colocated_restore));

        let originals: BTreeMap<_, _> = tree.flatten().into_iter().collect();
        prop_assert_eq!(restored.num_leaves(), originals.len());
        for (path, leaf) in restored.flatten() {
            let (Leaf::Array(found), Some(Leaf::Array(original))) = (leaf, originals.get(&path)) else {
                panic!("{path}: restored as {leaf:?}");
            };
            prop_assert_eq!(&found.spec().shape, &original.spec().shape);
            prop_assert_eq!(found.spec().dtype, original.spec().dtype);
            let found_bytes = controller.to_global_bytes(found).expect("restored bytes");
            let original_bytes = controller.to_global_bytes(original).expect("saved bytes");
            prop_assert_eq!(found_bytes, original_bytes, "{}", path);
        }
    }
}
