//! Reads the checkpoints that Python Orbax 0.12.8 wrote under
//! `testdata/orbax` and compares every leaf with the fixture's
//! `expected_values.json`: digests, a restore onto the saved shardings and
//! a restore into host memory.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use base64::{engine::general_purpose::URL_SAFE, Engine as _};
use ckpt::pytree::{Key, NodeKind, PyTree};
use ckpt::{
    device::Sharding, leaf_digests, pytree::KeyPath, DType, HostArray, Leaf, PyTreeCheckpointer,
    PyTreeRestore, RestoreArgs, Scalar,
};

use common::{
    assert_sharding_matches, controller, expected_leaves, fixture_parent, open_fixture, sha256_hex,
    ExpectedLeaf,
};

/// The storage format of a fixture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// zarr v2, one directory per array (`use_ocdbt=False`).
    Zarr2,
    /// zarr v2 inside OCDBT databases: Orbax's default.
    OcdbtZarr2,
    /// zarr v3, one directory per array (`use_ocdbt=False, use_zarr3=True`).
    Zarr3,
    /// zarr v3 inside OCDBT databases (`use_zarr3=True`).
    OcdbtZarr3,
}

/// A checkpoint item written by Orbax and its storage format.
struct Fixture {
    /// Directory under `testdata/orbax`.
    name: &'static str,
    /// The item directory inside the fixture.
    item: &'static str,
    /// For a CheckpointManager fixture, the step and item whose records of
    /// `expected_values.json` describe `item`.
    step_item: Option<(u64, &'static str)>,
    format: Format,
}

// Every shipped fixture: ckpt reads zarr v2 and zarr v3, each with or
// without OCDBT.
const A: Fixture = fixture("a_pytree_ocdbt", Format::OcdbtZarr2);
const B: Fixture = fixture("b_pytree_zarr2_no_ocdbt", Format::Zarr2);
const C: Fixture = fixture("c_pytree_zarr3_ocdbt", Format::OcdbtZarr3);
const C2: Fixture = fixture("c2_pytree_zarr3_no_ocdbt", Format::Zarr3);
const D_STEP1: Fixture = manager_item("d_manager", "ckpt/1/state", 1, "state", Format::OcdbtZarr2);
const D_STEP2: Fixture = manager_item("d_manager", "ckpt/2/state", 2, "state", Format::OcdbtZarr2);
const F: Fixture = fixture("f_dtypes_zarr2", Format::OcdbtZarr2);
const G: Fixture = fixture("g_scalars_empty", Format::OcdbtZarr2);
const J: Fixture = fixture("j_uncompressed_single_replica", Format::OcdbtZarr2);
const M: Fixture = fixture("m_foreign_minimal", Format::OcdbtZarr2);

const fn fixture(name: &'static str, format: Format) -> Fixture {
    Fixture {
        name,
        item: "ckpt",
        step_item: None,
        format,
    }
}

const fn manager_item(
    name: &'static str,
    item: &'static str,
    step: u64,
    item_name: &'static str,
    format: Format,
) -> Fixture {
    Fixture {
        name,
        item,
        step_item: Some((step, item_name)),
        format,
    }
}

/// Generates a module of tests for each fixture.
macro_rules! readable_fixture_tests {
    ($($module:ident => $fixture:ident),* $(,)?) => {
        $(mod $module {
            #[test]
            fn digests() {
                super::check_digests(&super::$fixture);
            }

            #[test]
            fn restore_saved() {
                super::check_restore_saved(&super::$fixture);
            }

            #[test]
            fn restore_colocated() {
                super::check_restore_colocated(&super::$fixture);
            }

            #[test]
            fn restore_host() {
                super::check_restore_host(&super::$fixture);
            }
        })*
    };
}

readable_fixture_tests! {
    a_ocdbt => A,
    b_zarr2 => B,
    c_ocdbt_zarr3 => C,
    c2_zarr3 => C2,
    d_step1 => D_STEP1,
    d_step2 => D_STEP2,
    f_dtypes => F,
    g_scalars => G,
    j_uncompressed => J,
    m_foreign => M,
}

/// Returns the records of leaves with data, by key path.
fn expected_by_path(fixture: &Fixture) -> BTreeMap<KeyPath, ExpectedLeaf> {
    expected_leaves(fixture.name, fixture.step_item)
        .into_iter()
        .filter(|leaf| !leaf.is_empty_node())
        .map(|leaf| (leaf.key_path(), leaf))
        .collect()
}

fn check_digests(fixture: &Fixture) {
    let item = open_fixture(fixture.name, fixture.item);
    let metadata = ckpt::item_metadata(&item)
        .unwrap_or_else(|error| panic!("{}: item_metadata failed: {error}", fixture.name));
    let (use_ocdbt, use_zarr3) = match fixture.format {
        Format::Zarr2 => (false, false),
        Format::OcdbtZarr2 => (true, false),
        Format::Zarr3 => (false, true),
        Format::OcdbtZarr3 => (true, true),
    };
    assert_eq!(
        metadata.use_ocdbt,
        Some(use_ocdbt),
        "{}: use_ocdbt",
        fixture.name
    );
    assert_eq!(metadata.use_zarr3, use_zarr3, "{}: use_zarr3", fixture.name);

    let expected = expected_by_path(fixture);
    let digests = leaf_digests(&item)
        .unwrap_or_else(|error| panic!("{}: leaf_digests failed: {error}", fixture.name));

    let found: BTreeSet<&KeyPath> = digests.iter().map(|digest| &digest.key_path).collect();
    let expected_paths: BTreeSet<&KeyPath> = expected.keys().collect();
    assert_eq!(found, expected_paths, "{}: leaves", fixture.name);

    for digest in &digests {
        let context = format!("{} {}", fixture.name, digest.key_path);
        let leaf = &expected[&digest.key_path];
        let key_types: Vec<u64> = digest
            .key_path
            .iter()
            .map(|key| u64::from(key.key_type().code()))
            .collect();
        let expected_key_types: Vec<u64> =
            leaf.keypath.iter().map(|key| key.orbax_key_type).collect();
        assert_eq!(key_types, expected_key_types, "{context}: key types");
        assert_eq!(digest.param_name, leaf.param_name, "{context}: param name");
        assert_eq!(
            digest.dtype.map(DType::name),
            leaf.dtype.as_deref(),
            "{context}: dtype"
        );
        assert_eq!(digest.shape, leaf.shape, "{context}: shape");
        assert_eq!(
            Some(&digest.sha256),
            leaf.sha256.as_ref(),
            "{context}: sha256"
        );
    }
}

/// Restores through the controller onto the saved shardings.
fn check_restore_saved(fixture: &Fixture) {
    check_restore_on_saved_shardings(fixture, PyTreeRestore::new());
}

/// Restores with each host reading its own devices' shards, onto the
/// saved shardings.
fn check_restore_colocated(fixture: &Fixture) {
    let colocated = RestoreArgs::default().with_colocated(true);
    check_restore_on_saved_shardings(
        fixture,
        PyTreeRestore::new().with_restore_args(PyTree::leaf(colocated)),
    );
}

/// Restores on 4 hosts of 2 devices, the 8 device ids that Orbax's
/// `_sharding` entries name, and checks every leaf.
fn check_restore_on_saved_shardings(fixture: &Fixture, args: PyTreeRestore) {
    let controller = controller(4, 2);
    let (parent, name) = fixture_parent(fixture.name, fixture.item);
    let checkpointer = PyTreeCheckpointer::new(controller.clone());
    let restored = checkpointer
        .restore(&parent, &name, args)
        .unwrap_or_else(|error| panic!("{}: restore failed: {error}", fixture.name));
    let saved_shardings = read_saved_shardings(fixture);

    for (path, leaf) in restored.flatten() {
        let context = format!("{} {path}", fixture.name);
        let expected = &expected_by_path(fixture)[&path];
        match leaf {
            Leaf::Array(array) => {
                assert_eq!(
                    expected.source_type.as_deref(),
                    Some("jax.Array"),
                    "{context}: leaf type"
                );
                let sharding = &array.spec().sharding;
                match &expected.source_sharding {
                    Some(source) => assert_sharding_matches(sharding, source, &context),
                    None => assert_eq!(
                        Some(sharding),
                        saved_shardings.get(&expected.param_name),
                        "{context}: sharding"
                    ),
                }
                let bytes = controller
                    .to_global_bytes(array)
                    .unwrap_or_else(|error| panic!("{context}: {error}"));
                assert_eq!(
                    Some(sha256_hex(&bytes)),
                    expected.sha256,
                    "{context}: sha256"
                );
            }
            other => check_host_leaf(other, expected, &context),
        }
    }
    assert_eq!(
        restored.num_leaves(),
        expected_by_path(fixture).len(),
        "{}: leaf count",
        fixture.name
    );
    check_empty_nodes(fixture, &restored);
    check_sequences_are_lists(fixture, &restored);
}

/// Checks that every list or tuple above a leaf is restored as a list,
/// because `_METADATA` does not tell them apart and Orbax returns lists.
fn check_sequences_are_lists(fixture: &Fixture, restored: &PyTree<Leaf>) {
    for path in expected_by_path(fixture).keys() {
        let mut prefix = KeyPath::root();
        for key in path.iter() {
            if matches!(key, Key::Index(_)) {
                let node = restored
                    .get(&prefix)
                    .unwrap_or_else(|| panic!("{prefix} missing"));
                assert_eq!(
                    node.kind(),
                    NodeKind::List,
                    "{} {prefix}: node kind",
                    fixture.name
                );
            }
            prefix.push(key.clone());
        }
    }
}

/// Checks that each empty container and `None` of the fixture is restored
/// as the same kind of node: Orbax restores an empty tuple as a tuple.
fn check_empty_nodes(fixture: &Fixture, restored: &PyTree<Leaf>) {
    let empty = expected_leaves(fixture.name, fixture.step_item)
        .into_iter()
        .filter(ExpectedLeaf::is_empty_node);
    for record in empty {
        let path = record.key_path();
        let context = format!("{} {path}", fixture.name);
        let expected_kind = match record.python_type.as_deref() {
            Some("dict") => NodeKind::Dict,
            Some("list") => NodeKind::List,
            Some("tuple") => NodeKind::Tuple,
            Some("NoneType") => NodeKind::None,
            other => panic!("{context}: unknown empty node type {other:?}"),
        };
        let node = restored
            .get(&path)
            .unwrap_or_else(|| panic!("{context}: missing"));
        assert_eq!(node.kind(), expected_kind, "{context}: node kind");
        assert_eq!(node.num_leaves(), 0, "{context}: leaves");
    }
}

/// Restores every leaf with `RestoreArgs::host()`: sharded arrays come
/// back as host arrays, everything else as it was saved.
fn check_restore_host(fixture: &Fixture) {
    let (parent, name) = fixture_parent(fixture.name, fixture.item);
    let checkpointer = PyTreeCheckpointer::new(controller(4, 2));
    let args = PyTreeRestore::new().with_restore_args(PyTree::leaf(RestoreArgs::host()));
    let restored = checkpointer
        .restore(&parent, &name, args)
        .unwrap_or_else(|error| panic!("{}: restore failed: {error}", fixture.name));

    let expected = expected_by_path(fixture);
    assert_eq!(
        restored.num_leaves(),
        expected.len(),
        "{}: leaf count",
        fixture.name
    );
    for (path, leaf) in restored.flatten() {
        let context = format!("{} {path}", fixture.name);
        let record = &expected[&path];
        if record.source_type.as_deref() == Some("jax.Array") {
            let Leaf::HostArray(array) = leaf else {
                panic!("{context}: expected a host array, found {leaf:?}");
            };
            check_host_array(array, record, &context);
        } else {
            check_host_leaf(leaf, record, &context);
        }
    }
}

/// Checks a restored leaf that is not a sharded array: host arrays,
/// scalars and strings.
fn check_host_leaf(leaf: &Leaf, expected: &ExpectedLeaf, context: &str) {
    match leaf {
        Leaf::HostArray(array) => check_host_array(array, expected, context),
        Leaf::Scalar(scalar) => {
            assert_eq!(expected.kind, "array0d", "{context}: kind");
            assert_eq!(
                Some(scalar.dtype().name()),
                scalar_dtype(expected),
                "{context}: dtype"
            );
            let value = match *scalar {
                Scalar::Int(value) => value as f64,
                Scalar::Float(value) => value,
                Scalar::Bool(value) => f64::from(u8::from(value)),
                other => panic!("{context}: unexpected scalar {other:?}"),
            };
            if let Some(values) = expected.values_f64() {
                assert_eq!(vec![value], values, "{context}: value");
            }
        }
        Leaf::String(text) => {
            assert_eq!(expected.kind, "string", "{context}: kind");
            assert_eq!(Some(text), expected.value.as_ref(), "{context}: value");
            assert_eq!(
                Some(sha256_hex(text.as_bytes())),
                expected.sha256,
                "{context}: sha256"
            );
        }
        other => panic!("{context}: unexpected leaf {other:?}"),
    }
}

/// Returns the dtype of a restored scalar. Python ints, floats and bools come
/// back as int64, float64 and bool, and NumPy scalars widen to those as
/// `.item()` does.
fn scalar_dtype(expected: &ExpectedLeaf) -> Option<&'static str> {
    let dtype = DType::from_name(expected.dtype.as_deref()?).ok()?;
    Scalar::from_element(dtype, &vec![0; dtype.item_size()]).map(|scalar| scalar.dtype().name())
}

fn check_host_array(array: &HostArray, expected: &ExpectedLeaf, context: &str) {
    assert_eq!(
        Some(array.dtype().name()),
        expected.dtype.as_deref(),
        "{context}: dtype"
    );
    assert_eq!(
        Some(array.shape()),
        expected.shape.as_deref(),
        "{context}: shape"
    );
    assert_eq!(
        Some(sha256_hex(array.bytes())),
        expected.sha256,
        "{context}: sha256"
    );
    if let (Some(values), Some(found)) = (expected.values_f64(), decode_f64(array)) {
        assert_eq!(found, values, "{context}: values");
    }
}

/// Decodes the elements of dtypes whose listed values are plain numbers.
fn decode_f64(array: &HostArray) -> Option<Vec<f64>> {
    let bytes = array.bytes();
    let values = match array.dtype() {
        DType::Bool | DType::UInt8 => bytes.iter().map(|&b| f64::from(b)).collect(),
        DType::Int8 => bytes.iter().map(|&b| f64::from(b as i8)).collect(),
        DType::Int16 => array.to_vec::<i16>()?.into_iter().map(f64::from).collect(),
        DType::UInt16 => array.to_vec::<u16>()?.into_iter().map(f64::from).collect(),
        DType::Int32 => array.to_vec::<i32>()?.into_iter().map(f64::from).collect(),
        DType::UInt32 => array.to_vec::<u32>()?.into_iter().map(f64::from).collect(),
        DType::Int64 => array
            .to_vec::<i64>()?
            .into_iter()
            .map(|v| v as f64)
            .collect(),
        DType::UInt64 => array
            .to_vec::<u64>()?
            .into_iter()
            .map(|v| v as f64)
            .collect(),
        DType::Float16 => array
            .to_vec::<half::f16>()?
            .into_iter()
            .map(f64::from)
            .collect(),
        DType::BFloat16 => array
            .to_vec::<half::bf16>()?
            .into_iter()
            .map(f64::from)
            .collect(),
        DType::Float32 => array.to_vec::<f32>()?.into_iter().map(f64::from).collect(),
        DType::Float64 => array.to_vec::<f64>()?,
        _ => return None,
    };
    Some(values)
}

/// Reads the fixture's `_sharding` file: parameter name to sharding.
fn read_saved_shardings(fixture: &Fixture) -> BTreeMap<String, Sharding> {
    let path = common::fixture_dir(fixture.name)
        .join(fixture.item)
        .join("_sharding");
    let Ok(bytes) = std::fs::read(&path) else {
        return BTreeMap::new();
    };
    let members: BTreeMap<String, String> = serde_json::from_slice(&bytes)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    members
        .into_iter()
        .map(|(key, json)| {
            let name = String::from_utf8(URL_SAFE.decode(&key).expect("base64url key"))
                .expect("UTF-8 parameter name");
            let sharding = Sharding::from_orbax_json(&json)
                .unwrap_or_else(|error| panic!("{}: {name}: {error}", path.display()));
            (name, sharding)
        })
        .collect()
}

/// Every fixture directory under `testdata/orbax` is in the table above.
#[test]
fn table_lists_every_fixture() {
    let listed: BTreeSet<&str> = [&A, &B, &C, &C2, &D_STEP1, &D_STEP2, &F, &G, &J, &M]
        .iter()
        .map(|fixture| fixture.name)
        .collect();
    let root = common::fixture_dir("");
    let present: BTreeSet<String> = std::fs::read_dir(&root)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", root.display()))
        .map(|entry| {
            entry
                .expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let present: BTreeSet<&str> = present.iter().map(String::as_str).collect();
    assert_eq!(listed, present);
}
