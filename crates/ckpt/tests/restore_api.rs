//! The restore API: partial restores by target tree and by key path, the
//! policy for saved shardings this runtime cannot use, metadata without
//! devices, and the forms a restore target can take. Checkpoints come from
//! ckpt itself and from Python Orbax (`testdata/orbax`).

mod common;

use std::{collections::BTreeMap, fs, path::PathBuf, sync::Arc};

use ckpt::{
    colocated::{ArraySpec, Controller, Generator},
    device::{DeviceId, Mesh, PartitionDim, PartitionSpec, Sharding},
    pytree::{KeyPath, NodeKind, PyTree},
    storage::{open_store, ArrayFormat, Store},
    CkptError, DType, HostArray, KeyMatch, Leaf, MissingSharding, PyTreeCheckpointer,
    PyTreeRestore, PyTreeSave, RestoreArgs, Scalar,
};
use tempfile::TempDir;

use common::{controller, expected_leaves, fixture_parent, sha256_hex};

/// A checkpoint that ckpt saved on 4 hosts of 2 devices, with one
/// directory per array so that tests can delete an array's data.
struct Saved {
    _dir: TempDir,
    parent: Store,
    /// The checkpoint item directory on disk.
    item: PathBuf,
    /// Element bytes of every array leaf, by key path text.
    bytes: BTreeMap<String, Vec<u8>>,
}

const NAME: &str = "ckpt";

fn mesh_4x2(controller: &Controller) -> Mesh {
    let devices = controller.runtime().topology().device_ids();
    Mesh::new(vec![4, 2], vec!["x", "y"], devices).expect("a 4x2 mesh")
}

/// Saves `{"params": {"w": f32[6, 4] on P('x', 'y'), "b": f32[4]
/// replicated}, "opt": [i64[5], f64[2, 2]], "step": 7, "name": "run"}`.
fn save_checkpoint() -> Saved {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let parent = open_store(&dir.path().display().to_string()).expect("open the directory");
    let controller = controller(4, 2);
    let mesh = mesh_4x2(&controller);
    let mut bytes = BTreeMap::new();

    let mut sharded = |key: &str, shape: Vec<u64>, spec: PartitionSpec, seed: u64| {
        let global = Generator::new(seed).global_bytes(DType::Float32, &shape);
        let sharding = Sharding::named(mesh.clone(), spec).expect("a valid spec");
        let spec = ArraySpec { shape, dtype: DType::Float32, sharding };
        let array = controller.put_global(spec, &global).expect("put the array");
        bytes.insert(key.to_owned(), global);
        PyTree::leaf(Leaf::Array(array))
    };
    let w = sharded("['params']['w']", vec![6, 4], PartitionSpec::new([Some("x"), Some("y")]), 1);
    let b = sharded("['params']['b']", vec![4], PartitionSpec::replicated(), 2);

    let counts = HostArray::from_vec(vec![5], vec![1i64, 2, 3, 4, 5]).expect("a host array");
    let table = HostArray::from_vec(vec![2, 2], vec![0.5f64, 1.5, 2.5, 3.5]).expect("a host array");
    bytes.insert("['opt'][0]".to_owned(), counts.bytes().to_vec());
    bytes.insert("['opt'][1]".to_owned(), table.bytes().to_vec());

    let tree = PyTree::dict([
        ("params", PyTree::dict([("w", w), ("b", b)])),
        (
            "opt",
            PyTree::list([PyTree::leaf(Leaf::HostArray(counts)), PyTree::leaf(Leaf::HostArray(table))]),
        ),
        ("step", PyTree::leaf(Leaf::Scalar(Scalar::Int(7)))),
        ("name", PyTree::leaf(Leaf::from("run"))),
    ]);
    let format = ArrayFormat::default().with_ocdbt(false);
    let custom = serde_json::json!({"epoch": 3, "note": "restore api"});
    PyTreeCheckpointer::new(Arc::clone(&controller))
        .with_format(format)
        .save(&parent, NAME, PyTreeSave::new(tree).with_custom_metadata(custom))
        .expect("save");

    Saved {
        item: dir.path().join(NAME),
        _dir: dir,
        parent,
        bytes,
    }
}

fn path(text: &str) -> KeyPath {
    text.parse().unwrap_or_else(|error| panic!("{error}"))
}

/// Returns the global bytes of a restored array leaf, sharded or host.
fn leaf_bytes(controller: &Controller, leaf: &Leaf) -> Vec<u8> {
    match leaf {
        Leaf::Array(array) => controller.to_global_bytes(array).expect("gather the array"),
        Leaf::HostArray(array) => array.bytes().to_vec(),
        other => panic!("expected an array, found {other:?}"),
    }
}

fn leaf_at<'a>(tree: &'a PyTree<Leaf>, key_path: &str) -> &'a Leaf {
    match tree.get(&path(key_path)) {
        Some(PyTree::Leaf(leaf)) => leaf,
        other => panic!("{key_path}: expected a leaf, found {other:?}"),
    }
}

fn error_text<T: std::fmt::Debug>(result: ckpt::Result<T>) -> String {
    match result {
        Ok(value) => panic!("expected an error, found {value:?}"),
        Err(error) => error.to_string(),
    }
}

fn assert_contains(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{part:?} is not in: {message}");
    }
}

fn spec_on(controller: &Controller, shape: Vec<u64>, dtype: DType, spec: PartitionSpec) -> ArraySpec {
    let devices = controller.runtime().topology().device_ids();
    let mesh = Mesh::new(vec![devices.len()], vec!["x"], devices).expect("a 1-D mesh");
    ArraySpec {
        shape,
        dtype,
        sharding: Sharding::named(mesh, spec).expect("a valid spec"),
    }
}

// Partial restore.

#[test]
fn key_paths_skip_unselected_data() {
    let saved = save_checkpoint();
    fs::remove_dir_all(saved.item.join("params.w")).expect("delete params.w");
    fs::remove_dir_all(saved.item.join("opt.0")).expect("delete opt.0");
    let controller = controller(4, 2);
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));

    let full = checkpointer.restore(&saved.parent, NAME, PyTreeRestore::new());
    assert!(full.is_err(), "a full restore reads the deleted arrays");

    let request = PyTreeRestore::new()
        .with_keystr_paths(["['params']['b']", "['opt'][1]", "['step']"])
        .expect("valid key paths");
    let restored = checkpointer.restore(&saved.parent, NAME, request).expect("partial restore");

    for key in ["['params']['b']", "['opt'][1]"] {
        let leaf = leaf_at(&restored, key);
        assert_eq!(leaf_bytes(&controller, leaf), saved.bytes[key], "{key}");
    }
    assert_eq!(leaf_at(&restored, "['step']"), &Leaf::Scalar(Scalar::Int(7)));
    assert_eq!(restored.num_leaves(), 3);
    assert_eq!(restored.get(&path("['opt'][0]")), Some(&PyTree::None));
    assert_eq!(restored.get(&path("['params']['w']")), None);
    assert_eq!(restored.get(&path("['name']")), None);
}

#[test]
fn partial_target_skips_unselected_data() {
    let saved = save_checkpoint();
    fs::remove_dir_all(saved.item.join("opt.0")).expect("delete opt.0");
    fs::remove_file(saved.item.join("_strings.json")).expect("delete _strings.json");
    let controller = controller(1, 2);
    let target = spec_on(&controller, vec![6, 4], DType::Float32, PartitionSpec::new([Some("x"), None]));
    let args = PyTree::dict([("params", PyTree::dict([("w", PyTree::leaf(RestoreArgs::array(target.clone())))]))]);
    let request = PyTreeRestore::new()
        .with_restore_args(args)
        .with_partial_restore(true);

    let restored = PyTreeCheckpointer::new(Arc::clone(&controller))
        .restore(&saved.parent, NAME, request)
        .expect("partial restore");

    assert_eq!(restored.num_leaves(), 1);
    let Leaf::Array(array) = leaf_at(&restored, "['params']['w']") else {
        panic!("expected a sharded array");
    };
    assert_eq!(array.spec(), &target);
    assert_eq!(controller.to_global_bytes(array).expect("gather"), saved.bytes["['params']['w']"]);
}

#[test]
fn key_path_outside_target_names_key() {
    let saved = save_checkpoint();
    let controller = controller(4, 2);
    let args = PyTree::dict([("params", PyTree::dict([("w", PyTree::leaf(RestoreArgs::default()))]))]);
    let request = |key_match: KeyMatch| {
        PyTreeRestore::new()
            .with_restore_args(args.clone())
            .with_key_match(key_match)
            .with_keystr_paths(["['params']['w']", "['params']['b']", "['step']"])
            .expect("valid key paths")
    };
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));

    let result = checkpointer.restore(&saved.parent, NAME, request(KeyMatch::Partial));
    let message = error_text(result);
    assert_contains(&message, &["['params']['b']", "['step']", "with_key_paths"]);
    assert!(!message.contains("['params']['w']"), "{message}");

    let restored = checkpointer
        .restore(&saved.parent, NAME, request(KeyMatch::Lenient))
        .expect("a lenient restore");
    assert_eq!(restored.num_leaves(), 1);
    let leaf = leaf_at(&restored, "['params']['w']");
    assert_eq!(leaf_bytes(&controller, leaf), saved.bytes["['params']['w']"]);
}

#[test]
fn strict_target_lists_every_key() {
    let saved = save_checkpoint();
    let default = || PyTree::leaf(RestoreArgs::default());
    let args = PyTree::dict([
        ("params", PyTree::dict([("w", default()), ("x", default())])),
        ("zz", default()),
        ("step", default()),
    ]);
    let request = PyTreeRestore::new().with_restore_args(args);

    let result = PyTreeCheckpointer::new(controller(4, 2)).restore(&saved.parent, NAME, request);
    let Err(error) = result else {
        panic!("a strict restore of a mismatched target succeeded");
    };
    let message = error.to_string();
    let CkptError::KeyMismatch { missing, unexpected } = error else {
        panic!("expected a key mismatch, found {error}");
    };
    assert_eq!(missing, ["['params']['x']", "['zz']"]);
    assert_eq!(unexpected, ["['name']", "['opt'][0]", "['opt'][1]", "['params']['b']"]);
    assert_contains(&message, &["['params']['x']", "['zz']", "['opt'][1]", "KeyMatch::Partial", "KeyMatch::Lenient"]);
}

#[test]
fn missing_key_path_names_key() {
    let saved = save_checkpoint();
    let request = PyTreeRestore::new()
        .with_keystr_paths(["['params']['kernel']", "['step']"])
        .expect("valid key paths");

    let result = PyTreeCheckpointer::new(controller(4, 2)).restore(&saved.parent, NAME, request);
    let message = error_text(result);
    assert_contains(&message, &["['params']['kernel']", "KeyMatch::Lenient"]);
    assert!(!message.contains("['step']"), "{message}");
}

#[test]
fn lenient_leaves_out_missing() {
    let saved = save_checkpoint();
    let request = PyTreeRestore::new()
        .with_keystr_paths(["['params']['kernel']", "['step']"])
        .expect("valid key paths")
        .with_key_match(KeyMatch::Lenient);

    let restored = PyTreeCheckpointer::new(controller(4, 2))
        .restore(&saved.parent, NAME, request)
        .expect("lenient restore");
    assert_eq!(restored.num_leaves(), 1);
    assert_eq!(leaf_at(&restored, "['step']"), &Leaf::Scalar(Scalar::Int(7)));
}

#[test]
fn legacy_key_paths_select() {
    let (parent, name) = fixture_parent("../orbax-generated/n_legacy_msgpack", "ckpt");
    let expected: BTreeMap<String, String> = expected_leaves("../orbax-generated/n_legacy_msgpack", None)
        .into_iter()
        .filter_map(|leaf| Some((leaf.param_name.clone(), leaf.sha256?)))
        .collect();
    let controller = controller(1, 2);
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));

    let request = PyTreeRestore::new()
        .with_keystr_paths(["['params']['kernel']", "['step']"])
        .expect("valid key paths");
    let restored = checkpointer.restore(&parent, &name, request).expect("legacy restore");
    assert_eq!(restored.num_leaves(), 2);
    let Leaf::HostArray(kernel) = leaf_at(&restored, "['params']['kernel']") else {
        panic!("expected a host array");
    };
    assert_eq!(sha256_hex(kernel.bytes()), expected["params.kernel"]);

    let target = spec_on(&controller, vec![3, 4], DType::Float32, PartitionSpec::new([None, Some("x")]));
    let args = PyTree::dict([("params", PyTree::dict([("kernel", PyTree::leaf(RestoreArgs::array(target.clone())))]))]);
    let request = PyTreeRestore::new().with_restore_args(args).with_key_match(KeyMatch::Partial);
    let restored = checkpointer.restore(&parent, &name, request).expect("legacy restore onto a sharding");
    let Leaf::Array(array) = leaf_at(&restored, "['params']['kernel']") else {
        panic!("expected a sharded array");
    };
    assert_eq!(array.spec(), &target);
    assert_eq!(sha256_hex(&controller.to_global_bytes(array).expect("gather")), expected["params.kernel"]);

    let request = PyTreeRestore::new().with_keystr_paths(["['params']['w']"]).expect("a valid key path");
    let message = error_text(checkpointer.restore(&parent, &name, request));
    assert_contains(&message, &["['params']['w']"]);
}

// Saved shardings this runtime cannot use.

#[test]
fn missing_devices_error_names_leaf() {
    let saved = save_checkpoint();
    let request = PyTreeRestore::new().with_key_paths([path("['params']['w']")]);

    let result = PyTreeCheckpointer::new(controller(2, 2)).restore(&saved.parent, NAME, request);
    let Err(error) = result else {
        panic!("a restore onto missing devices succeeded");
    };
    let message = error.to_string();
    assert_contains(
        &message,
        &["['params']['w']", "device 4", "device 7", "RestoreArgs::array", "with_missing_sharding"],
    );
    let CkptError::SavedDevicesMissing { missing_devices, runtime_devices, .. } = error else {
        panic!("expected SavedDevicesMissing, found {error}");
    };
    assert_eq!(missing_devices, [4, 5, 6, 7]);
    assert_eq!(runtime_devices, 4);
}

#[test]
fn missing_devices_colocated_error() {
    let saved = save_checkpoint();
    let args = RestoreArgs::default().with_colocated(true);
    let request = PyTreeRestore::new()
        .with_restore_args(PyTree::leaf(args))
        .with_key_paths([path("['params']")]);

    let result = PyTreeCheckpointer::new(controller(2, 2)).restore(&saved.parent, NAME, request);
    assert_contains(&error_text(result), &["['params']['b']", "device 4", "with_missing_sharding"]);
}

#[test]
fn missing_sharding_fallbacks() {
    let saved = save_checkpoint();
    let controller = controller(2, 2);
    let devices = controller.runtime().topology().device_ids();
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));
    let cases = [
        (MissingSharding::Replicated, Some(Sharding::replicated(devices.clone()).expect("replicated"))),
        (MissingSharding::SingleDevice(DeviceId(2)), Some(Sharding::single_device(DeviceId(2)))),
        (MissingSharding::Host, None),
    ];
    for (policy, expected_sharding) in cases {
        for colocated in [false, true] {
            let context = format!("{policy:?}, colocated {colocated}");
            let args = RestoreArgs::default()
                .with_colocated(colocated)
                .with_missing_sharding(policy);
            let request = PyTreeRestore::new()
                .with_restore_args(PyTree::leaf(args))
                .with_key_paths([path("['params']")]);
            let restored = checkpointer
                .restore(&saved.parent, NAME, request)
                .unwrap_or_else(|error| panic!("{context}: {error}"));
            for key in ["['params']['w']", "['params']['b']"] {
                let leaf = leaf_at(&restored, key);
                assert_eq!(leaf_bytes(&controller, leaf), saved.bytes[key], "{context} {key}");
                match (&expected_sharding, leaf) {
                    (Some(sharding), Leaf::Array(array)) => {
                        assert_eq!(&array.spec().sharding, sharding, "{context} {key}")
                    }
                    (None, Leaf::HostArray(_)) => {}
                    (_, other) => panic!("{context} {key}: unexpected leaf {other:?}"),
                }
            }
        }
    }
}

#[test]
fn fallback_device_must_exist() {
    let saved = save_checkpoint();
    let args = RestoreArgs::default().with_missing_sharding(MissingSharding::SingleDevice(DeviceId(9)));
    let request = PyTreeRestore::new()
        .with_restore_args(PyTree::leaf(args))
        .with_key_paths([path("['params']['w']")]);

    let result = PyTreeCheckpointer::new(controller(2, 2)).restore(&saved.parent, NAME, request);
    assert_contains(&error_text(result), &["['params']['w']", "device 9"]);
}

#[test]
fn usable_sharding_ignores_policy() {
    let saved = save_checkpoint();
    let controller = controller(4, 2);
    let args = RestoreArgs::default().with_missing_sharding(MissingSharding::Host);
    let request = PyTreeRestore::new()
        .with_restore_args(PyTree::leaf(args))
        .with_key_paths([path("['params']['w']")]);

    let restored = PyTreeCheckpointer::new(Arc::clone(&controller))
        .restore(&saved.parent, NAME, request)
        .expect("restore onto the saved devices");
    let Leaf::Array(array) = leaf_at(&restored, "['params']['w']") else {
        panic!("expected a sharded array on the saved sharding");
    };
    let expected = Sharding::named(mesh_4x2(&controller), PartitionSpec::new([Some("x"), Some("y")]));
    assert_eq!(Some(&array.spec().sharding), expected.as_ref().ok());
}

#[test]
fn absent_sharding_entry() {
    let saved = save_checkpoint();
    fs::remove_file(saved.item.join("_sharding")).expect("delete _sharding");
    let controller = controller(4, 2);
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));
    let request = || PyTreeRestore::new().with_key_paths([path("['params']['w']")]);

    let result = checkpointer.restore(&saved.parent, NAME, request());
    let Err(error) = result else {
        panic!("a restore without a _sharding entry succeeded");
    };
    assert_contains(&error.to_string(), &["['params']['w']", "_sharding", "RestoreArgs::array", "with_missing_sharding"]);
    assert!(matches!(error, CkptError::NoSavedSharding { .. }), "{error:?}");

    let args = RestoreArgs::default().with_missing_sharding(MissingSharding::Replicated);
    let restored = checkpointer
        .restore(&saved.parent, NAME, request().with_restore_args(PyTree::leaf(args)))
        .expect("restore replicated");
    let leaf = leaf_at(&restored, "['params']['w']");
    assert_eq!(leaf_bytes(&controller, leaf), saved.bytes["['params']['w']"]);
}

#[test]
fn orbax_multiprocess_devices_missing() {
    let fixture = "../orbax-generated/h_multiprocess";
    let (parent, name) = fixture_parent(fixture, "ckpt");
    let request = PyTreeRestore::new().with_key_paths([path("['rows']")]);

    let result = PyTreeCheckpointer::new(controller(4, 2)).restore(&parent, &name, request);
    assert_contains(&error_text(result), &["['rows']", "device 2048", "device 2051", "RestoreArgs::array"]);
}

// Metadata.

#[test]
fn metadata_without_saved_devices() {
    let saved = save_checkpoint();
    let from_function = ckpt::metadata(&saved.parent, NAME).expect("metadata");
    let from_checkpointer = PyTreeCheckpointer::new(controller(1, 1))
        .metadata(&saved.parent, NAME)
        .expect("metadata on one device");
    assert_eq!(from_function, from_checkpointer);
    let metadata = from_function;

    let w = match metadata.tree.get(&path("['params']['w']")) {
        Some(PyTree::Leaf(leaf)) => leaf,
        other => panic!("expected a leaf, found {other:?}"),
    };
    assert_eq!(w.value_type, "jax.Array");
    assert_eq!(w.dtype, Some(DType::Float32));
    assert_eq!(w.shape.as_deref(), Some(&[6, 4][..]));
    assert_eq!(w.size_bytes, Some(96));
    assert!(w.sharding.as_deref().is_some_and(|json| json.contains("NamedSharding")));
    let Some(Sharding::Named { mesh, spec }) = &w.saved_sharding else {
        panic!("expected a named saved sharding, found {:?}", w.saved_sharding);
    };
    assert_eq!(mesh.shape(), [4, 2]);
    assert_eq!(mesh.axis_names(), ["x", "y"]);
    assert_eq!(mesh.devices().len(), 8);
    assert_eq!(spec.dims(), [PartitionDim::axis("x"), PartitionDim::axis("y")]);

    let counts = match metadata.tree.get(&path("['opt'][0]")) {
        Some(PyTree::Leaf(leaf)) => leaf,
        other => panic!("expected a leaf, found {other:?}"),
    };
    assert_eq!(counts.saved_sharding, None);
    assert_eq!(counts.size_bytes, Some(40));

    assert_eq!(metadata.size_bytes(), Some(96 + 16 + 40 + 32 + 8));
    assert_eq!(
        metadata.custom_metadata,
        Some(serde_json::json!({"epoch": 3, "note": "restore api"}))
    );
}

#[test]
fn orbax_metadata_on_one_device() {
    let (parent, name) = fixture_parent("a_pytree_ocdbt", "ckpt");
    let metadata = PyTreeCheckpointer::new(controller(1, 1))
        .metadata(&parent, &name)
        .expect("metadata on one device");
    for record in expected_leaves("a_pytree_ocdbt", None) {
        if record.is_empty_node() {
            continue;
        }
        let key_path = record.key_path();
        let Some(PyTree::Leaf(leaf)) = metadata.tree.get(&key_path) else {
            panic!("{key_path}: not a leaf in the metadata");
        };
        assert_eq!(leaf.dtype.map(DType::name), record.dtype.as_deref(), "{key_path}: dtype");
        assert_eq!(leaf.shape, record.shape, "{key_path}: shape");
        let Some(source) = &record.source_sharding else {
            assert_eq!(leaf.saved_sharding, None, "{key_path}: sharding");
            continue;
        };
        let Some(sharding) = &leaf.saved_sharding else {
            panic!("{key_path}: no saved sharding");
        };
        common::assert_sharding_matches(sharding, source, &key_path.to_string());
    }
}

// Restore targets.

#[test]
fn abstract_targets_reshard() {
    let saved = save_checkpoint();
    let controller = controller(3, 1);
    let uneven = spec_on(&controller, vec![6, 4], DType::Float32, PartitionSpec::new([None, Some("x")]));
    let single = ArraySpec {
        shape: vec![4],
        dtype: DType::Float32,
        sharding: Sharding::single_device(DeviceId(2)),
    };
    let target = PyTree::dict([("params", PyTree::dict([("w", PyTree::leaf(uneven.clone())), ("b", PyTree::leaf(single.clone()))]))]);
    let request = PyTreeRestore::new().with_target(target).with_key_match(KeyMatch::Partial);

    let restored = PyTreeCheckpointer::new(Arc::clone(&controller))
        .restore(&saved.parent, NAME, request)
        .expect("restore onto 3 devices");
    for (key, spec) in [("['params']['w']", &uneven), ("['params']['b']", &single)] {
        let Leaf::Array(array) = leaf_at(&restored, key) else {
            panic!("{key}: expected a sharded array");
        };
        assert_eq!(array.spec(), spec, "{key}: spec");
        assert_eq!(controller.to_global_bytes(array).expect("gather"), saved.bytes[key], "{key}: bytes");
    }
}

#[test]
fn concrete_targets_copy_spec() {
    let saved = save_checkpoint();
    let controller = controller(2, 1);
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));
    let spec = spec_on(&controller, vec![4], DType::Float32, PartitionSpec::new([Some("x")]));
    let template = PyTree::dict([
        ("params", PyTree::dict([
            ("w", PyTree::leaf(Leaf::HostArray(HostArray::from_vec(vec![1], vec![0f32]).expect("an array")))),
            ("b", PyTree::leaf(Leaf::Array(controller.put_global(spec.clone(), &[0; 16]).expect("put")))),
        ])),
        ("opt", PyTree::list([PyTree::leaf(Leaf::Scalar(Scalar::Int(0))), PyTree::leaf(Leaf::Scalar(Scalar::Int(0)))])),
        ("step", PyTree::leaf(Leaf::Scalar(Scalar::Int(0)))),
        ("name", PyTree::leaf(Leaf::from(""))),
    ]);

    let restored = checkpointer
        .restore(&saved.parent, NAME, PyTreeRestore::new().with_target(template.as_ref()))
        .expect("restore like the template");
    let Leaf::Array(b) = leaf_at(&restored, "['params']['b']") else {
        panic!("expected a sharded array");
    };
    assert_eq!(b.spec(), &spec);
    assert_eq!(controller.to_global_bytes(b).expect("gather"), saved.bytes["['params']['b']"]);
    let Leaf::HostArray(w) = leaf_at(&restored, "['params']['w']") else {
        panic!("expected a host array for a host array template");
    };
    assert_eq!(w.bytes(), saved.bytes["['params']['w']"]);
    assert_eq!(leaf_at(&restored, "['name']"), &Leaf::from("run"));
}

#[test]
fn host_array_onto_sharding() {
    let saved = save_checkpoint();
    let controller = controller(2, 1);
    let spec = spec_on(&controller, vec![2, 2], DType::Float64, PartitionSpec::new([Some("x"), None]));
    let args = PyTree::dict([("opt", PyTree::list([PyTree::None, PyTree::leaf(RestoreArgs::array(spec.clone()))]))]);
    let request = PyTreeRestore::new().with_restore_args(args).with_key_match(KeyMatch::Partial);

    let restored = PyTreeCheckpointer::new(Arc::clone(&controller))
        .restore(&saved.parent, NAME, request)
        .expect("restore a host array onto a sharding");
    let Leaf::Array(array) = leaf_at(&restored, "['opt'][1]") else {
        panic!("expected a sharded array");
    };
    assert_eq!(array.spec(), &spec);
    assert_eq!(controller.to_global_bytes(array).expect("gather"), saved.bytes["['opt'][1]"]);
    assert_eq!(restored.get(&path("['opt']")).map(PyTree::kind), Some(NodeKind::List));
}

#[test]
fn scalar_rejects_array_target() {
    let saved = save_checkpoint();
    let controller = controller(2, 1);
    let spec = spec_on(&controller, vec![], DType::Int64, PartitionSpec::replicated());
    let args = PyTree::dict([("step", PyTree::leaf(RestoreArgs::array(spec)))]);
    let request = PyTreeRestore::new().with_restore_args(args).with_key_match(KeyMatch::Partial);

    let result = PyTreeCheckpointer::new(controller).restore(&saved.parent, NAME, request);
    assert_contains(&error_text(result), &["['step']", "RestoreArgs::default()"]);
}

#[test]
fn host_target_keeps_other_leaves() {
    let saved = save_checkpoint();
    let controller = controller(1, 1);
    let request = PyTreeRestore::new().with_restore_args(PyTree::leaf(RestoreArgs::host()));

    let restored = PyTreeCheckpointer::new(Arc::clone(&controller))
        .restore(&saved.parent, NAME, request)
        .expect("restore into host memory on one device");
    for key in ["['params']['w']", "['params']['b']", "['opt'][0]"] {
        let Leaf::HostArray(array) = leaf_at(&restored, key) else {
            panic!("{key}: expected a host array");
        };
        assert_eq!(array.bytes(), saved.bytes[key], "{key}");
    }
    assert_eq!(leaf_at(&restored, "['step']"), &Leaf::Scalar(Scalar::Int(7)));
    assert_eq!(leaf_at(&restored, "['name']"), &Leaf::from("run"));
}

// A checkpoint that Python Orbax saved on 8 devices.

/// Restores fixture `a_pytree_ocdbt`, saved by Orbax on a 4x2 mesh, onto
/// 3 devices and compares every leaf with `expected_values.json`.
fn check_orbax_onto_three_devices(hosts: usize, devices_per_host: usize, colocated: bool) {
    let (parent, name) = fixture_parent("a_pytree_ocdbt", "ckpt");
    let controller = controller(hosts, devices_per_host);
    let kernel = spec_on(&controller, vec![16, 8], DType::Float32, PartitionSpec::new([Some("x"), None]));
    let bias = spec_on(&controller, vec![8], DType::BFloat16, PartitionSpec::new([Some("x")]));
    let with = |spec: ArraySpec| PyTree::leaf(RestoreArgs::array(spec).with_colocated(colocated));
    let args = PyTree::dict([
        ("params", PyTree::dict([("dense", PyTree::dict([("kernel", with(kernel.clone())), ("bias", with(bias.clone()))]))])),
        ("opt", PyTree::leaf(RestoreArgs::default())),
        ("step", PyTree::leaf(RestoreArgs::default())),
        ("lr", PyTree::leaf(RestoreArgs::default())),
        ("name", PyTree::leaf(RestoreArgs::default())),
    ]);
    let restored = PyTreeCheckpointer::new(Arc::clone(&controller))
        .restore(&parent, &name, PyTreeRestore::new().with_restore_args(args))
        .expect("restore onto 3 devices");

    let mut checked = 0;
    for record in expected_leaves("a_pytree_ocdbt", None) {
        let (Some(sha256), false) = (&record.sha256, record.is_empty_node()) else {
            continue;
        };
        let key_path = record.key_path();
        let Some(PyTree::Leaf(leaf)) = restored.get(&key_path) else {
            panic!("{key_path}: missing from the restored tree");
        };
        let bytes = match leaf {
            Leaf::Array(array) => {
                let expected = if record.param_name == "params.dense.kernel" { &kernel } else { &bias };
                assert_eq!(array.spec(), expected, "{key_path}: spec");
                controller.to_global_bytes(array).expect("gather")
            }
            Leaf::HostArray(array) => array.bytes().to_vec(),
            Leaf::String(text) => text.as_bytes().to_vec(),
            Leaf::Scalar(_) => continue,
            other => panic!("{key_path}: unexpected leaf {other:?}"),
        };
        assert_eq!(&sha256_hex(&bytes), sha256, "{key_path}: sha256");
        checked += 1;
    }
    assert_eq!(checked, 6, "leaves compared");
}

#[test]
fn orbax_8_devices_onto_3() {
    check_orbax_onto_three_devices(3, 1, false);
}

#[test]
fn orbax_8_devices_onto_3_colocated() {
    check_orbax_onto_three_devices(3, 1, true);
}

#[test]
fn orbax_8_devices_onto_3_one_host() {
    check_orbax_onto_three_devices(1, 3, true);
}
