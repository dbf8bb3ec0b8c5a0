//! Helpers shared by the integration tests: the Orbax fixtures under
//! `testdata/orbax`, their `expected_values.json`, and runtimes of
//! simulated hosts.

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use ckpt::{
    colocated::{Controller, InProcessRuntime},
    device::{PartitionDim, Sharding, Topology},
    pytree::{Key, KeyPath},
    storage::{open_committed, open_store, Store},
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Returns the directory of the fixture `name` under `testdata/orbax`.
pub(crate) fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/orbax")
        .join(name)
}

/// Returns the store of the directory above a fixture's checkpoint item
/// `item` (such as `ckpt` or `ckpt/1/state`), and the item's name in it.
pub(crate) fn fixture_parent(fixture: &str, item: &str) -> (Store, String) {
    let path = fixture_dir(fixture).join(item);
    let parent = path
        .parent()
        .expect("a fixture item has a parent directory");
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .expect("a fixture item name is UTF-8");
    let parent = open_store(&parent.display().to_string())
        .unwrap_or_else(|error| panic!("cannot open {}: {error}", parent.display()));
    (parent, name.to_owned())
}

/// Opens the committed checkpoint item `item` of a fixture.
pub(crate) fn open_fixture(fixture: &str, item: &str) -> Store {
    let (parent, name) = fixture_parent(fixture, item);
    open_committed(&parent, &name)
        .unwrap_or_else(|error| panic!("cannot open {fixture}/{item}: {error}"))
}

/// The part of a fixture's `expected_values.json` that the tests check.
#[derive(Debug, Deserialize)]
pub(crate) struct ExpectedValues {
    /// One record per leaf and per empty node, in JAX flatten order.
    pub(crate) leaves: Vec<ExpectedLeaf>,
}

/// One record of `expected_values.json`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ExpectedLeaf {
    /// The key path, with JAX key types.
    pub(crate) keypath: Vec<ExpectedKey>,
    /// The keys joined with `.`.
    pub(crate) param_name: String,
    /// `array`, `array0d`, `string` or `empty`.
    pub(crate) kind: String,
    /// The NumPy dtype name, for arrays.
    pub(crate) dtype: Option<String>,
    /// The global shape, for arrays.
    pub(crate) shape: Option<Vec<u64>>,
    /// Lowercase hex SHA-256 of the element bytes or of a string's UTF-8.
    pub(crate) sha256: Option<String>,
    /// The Python type Orbax saved: `jax.Array`, `np.ndarray`, `int`, `float` and others.
    pub(crate) source_type: Option<String>,
    /// The sharding of a `jax.Array` at save time.
    pub(crate) source_sharding: Option<ExpectedSharding>,
    /// Element values in C order, listed for small arrays only.
    pub(crate) values: Option<Vec<serde_json::Value>>,
    /// The value of a string leaf.
    pub(crate) value: Option<String>,
    /// The Python type of an empty node: `dict`, `list`, `tuple` or `NoneType`.
    pub(crate) python_type: Option<String>,
    /// The step of a CheckpointManager fixture.
    pub(crate) step: Option<u64>,
    /// The item of a CheckpointManager fixture.
    pub(crate) item: Option<String>,
}

/// One key of an expected key path.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ExpectedKey {
    /// The key as a string (indices in decimal).
    pub(crate) key: String,
    /// `dict` or `sequence`.
    pub(crate) key_type: String,
    /// The code Orbax writes in `_METADATA`: 2 for dict keys, 1 for indices.
    pub(crate) orbax_key_type: u64,
}

/// The sharding of a `jax.Array` leaf at save time.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct ExpectedSharding {
    /// Mesh axis sizes by axis name.
    pub(crate) mesh_shape: serde_json::Map<String, serde_json::Value>,
    /// Device ids in mesh order, nested as the mesh.
    pub(crate) mesh_device_ids: serde_json::Value,
    /// Per array dimension: null, an axis name or a list of names.
    pub(crate) partition_spec: Vec<serde_json::Value>,
}

impl ExpectedLeaf {
    /// Returns the key path built from the expected keys.
    pub(crate) fn key_path(&self) -> KeyPath {
        self.keypath
            .iter()
            .map(|key| match key.key_type.as_str() {
                "sequence" => {
                    Key::Index(key.key.parse().expect("a sequence key is a decimal index"))
                }
                _ => Key::Dict(key.key.clone()),
            })
            .collect()
    }

    /// Returns whether the record is an empty container or `None`, which has no data.
    pub(crate) fn is_empty_node(&self) -> bool {
        self.kind == "empty"
    }

    /// Returns the listed values as `f64`, booleans as 0 and 1.
    pub(crate) fn values_f64(&self) -> Option<Vec<f64>> {
        let values = self.values.as_ref()?;
        values
            .iter()
            .map(|value| match value {
                serde_json::Value::Bool(flag) => Some(f64::from(u8::from(*flag))),
                other => other.as_f64(),
            })
            .collect()
    }
}

/// Reads `expected_values.json` of a fixture. For a CheckpointManager
/// fixture, `step` and `item` select the records of one item of one step.
pub(crate) fn expected_leaves(fixture: &str, step_item: Option<(u64, &str)>) -> Vec<ExpectedLeaf> {
    let path = fixture_dir(fixture).join("expected_values.json");
    let bytes =
        fs::read(&path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    let document: ExpectedValues = serde_json::from_slice(&bytes)
        .unwrap_or_else(|error| panic!("cannot parse {}: {error}", path.display()));
    document
        .leaves
        .into_iter()
        .filter(|leaf| match step_item {
            None => true,
            Some((step, item)) => leaf.step == Some(step) && leaf.item.as_deref() == Some(item),
        })
        .collect()
}

/// Checks that `sharding` is the expected mesh, device order and partition
/// spec, whatever order the expected mesh axes are listed in.
pub(crate) fn assert_sharding_matches(
    sharding: &Sharding,
    expected: &ExpectedSharding,
    context: &str,
) {
    let Sharding::Named { mesh, spec } = sharding else {
        panic!("{context}: expected a named sharding, found {sharding:?}");
    };
    assert_eq!(
        mesh.axis_names().len(),
        expected.mesh_shape.len(),
        "{context}: mesh rank"
    );
    for (name, size) in mesh.axis_names().iter().zip(mesh.shape()) {
        let expected_size = expected
            .mesh_shape
            .get(name)
            .and_then(serde_json::Value::as_u64);
        assert_eq!(
            expected_size,
            Some(*size as u64),
            "{context}: size of mesh axis {name}"
        );
    }

    let mut expected_ids = Vec::new();
    flatten_ids(&expected.mesh_device_ids, &mut expected_ids);
    let ids: Vec<u64> = mesh
        .devices()
        .iter()
        .map(|device| u64::from(device.0))
        .collect();
    assert_eq!(ids, expected_ids, "{context}: mesh devices");

    let dims: Vec<serde_json::Value> = spec
        .dims()
        .iter()
        .map(|dim| match dim {
            PartitionDim::Axis(name) => serde_json::Value::from(name.as_str()),
            PartitionDim::Axes(names) => serde_json::Value::from(names.clone()),
            _ => serde_json::Value::Null,
        })
        .collect();
    assert_eq!(dims, expected.partition_spec, "{context}: partition spec");
}

fn flatten_ids(value: &serde_json::Value, out: &mut Vec<u64>) {
    match value {
        serde_json::Value::Array(items) => items.iter().for_each(|item| flatten_ids(item, out)),
        other => out.push(other.as_u64().expect("a device id is an integer")),
    }
}

/// Returns the lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Starts an in-process runtime of `hosts` simulated hosts with
/// `devices_per_host` devices each, and a controller over it.
pub(crate) fn controller(hosts: usize, devices_per_host: usize) -> Arc<Controller> {
    let topology = Topology::uniform(hosts, devices_per_host).expect("a valid topology");
    let runtime = InProcessRuntime::new(topology).expect("the host threads start");
    Arc::new(Controller::new(Arc::new(runtime)))
}
