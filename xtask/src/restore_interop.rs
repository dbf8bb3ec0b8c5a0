//! Restores checkpoints that Python Orbax saved on 8 devices onto 3 devices
//! in ckpt, and reads their metadata in a runtime of 1 device.
//!
//! Every sharded array is resharded onto a 1-D mesh of 3 devices, split
//! along its first dimension of at least 3 elements (or replicated when it
//! has none), so most arrays end with an uneven last shard. Each restored
//! array, host array and string must hash to the sha256 that the fixture's
//! `expected_values.json` records.

use std::{collections::BTreeMap, fs, path::Path, sync::Arc};

use anyhow::{bail, Context, Result};
use ckpt::{
    colocated::{ArraySpec, Controller, InProcessRuntime},
    device::{Mesh, PartitionDim, PartitionSpec, Sharding, Topology},
    storage::open_store,
    CheckpointMetadata, Leaf, LeafMetadata, PyTreeCheckpointer, PyTreeRestore, RestoreArgs,
    ARRAY_VALUE_TYPE,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Devices of the runtime that saved the checkpoints this check applies to.
const SAVED_DEVICES: usize = 8;
/// Devices of the runtime that restores them.
const RESTORE_DEVICES: usize = 3;

fn controller(hosts: usize, devices_per_host: usize) -> Result<Arc<Controller>> {
    let topology = Topology::uniform(hosts, devices_per_host)?;
    Ok(Arc::new(Controller::new(Arc::new(InProcessRuntime::new(topology)?))))
}

/// Reads the metadata of the item `ckpt` of a fixture in a runtime of one
/// device, or `None` when the fixture is not a single pytree item (a
/// CheckpointManager directory or a raw OCDBT database).
fn one_device_metadata(fixture: &Path) -> Result<Option<CheckpointMetadata>> {
    if !fixture.join("ckpt/_METADATA").is_file() {
        return Ok(None);
    }
    let parent = open_store(&fixture.display().to_string())?;
    let checkpointer = PyTreeCheckpointer::new(controller(1, 1)?);
    Ok(Some(checkpointer.metadata(&parent, "ckpt")?))
}

fn saved_on_eight_devices(leaf: &LeafMetadata) -> bool {
    leaf.value_type == ARRAY_VALUE_TYPE
        && leaf
            .saved_sharding
            .as_ref()
            .is_some_and(|sharding| sharding.device_set().len() == SAVED_DEVICES)
}

/// Returns whether the fixture is a pytree item with a sharded array that
/// Orbax saved on 8 devices.
pub(crate) fn applies(fixture: &Path) -> Result<bool> {
    let Some(metadata) = one_device_metadata(fixture)? else {
        return Ok(false);
    };
    Ok(metadata.tree.leaves().into_iter().any(saved_on_eight_devices))
}

/// Returns the 3-device target of an array of `shape`.
fn target_sharding(mesh: &Mesh, shape: &[u64]) -> Result<Sharding> {
    let split = shape.iter().position(|&extent| extent >= RESTORE_DEVICES as u64);
    let dims = (0..shape.len()).map(|dim| {
        if Some(dim) == split {
            PartitionDim::axis("x")
        } else {
            PartitionDim::Unsharded
        }
    });
    Ok(Sharding::named(mesh.clone(), PartitionSpec::from_dims(dims))?)
}

/// Restores the fixture's item onto 3 devices and compares every array and
/// string with `expected_values.json`. Returns the number of leaves compared.
pub(crate) fn check_onto_three_devices(fixture: &Path) -> Result<usize> {
    let metadata = one_device_metadata(fixture)?.context("the fixture is not a pytree item")?;
    let controller = controller(RESTORE_DEVICES, 1)?;
    let mesh = Mesh::new(vec![RESTORE_DEVICES], vec!["x"], controller.runtime().topology().device_ids())?;

    let args = metadata.tree.as_ref().try_map(|leaf| -> Result<RestoreArgs> {
        if leaf.value_type != ARRAY_VALUE_TYPE {
            return Ok(RestoreArgs::default());
        }
        let (Some(shape), Some(dtype)) = (leaf.shape.clone(), leaf.dtype) else {
            bail!("a sharded array without shape or dtype in its metadata");
        };
        let sharding = target_sharding(&mesh, &shape)?;
        Ok(RestoreArgs::array(ArraySpec { shape, dtype, sharding }).with_colocated(true))
    })?;
    let parent = open_store(&fixture.display().to_string())?;
    let restored = PyTreeCheckpointer::new(Arc::clone(&controller))
        .restore(&parent, "ckpt", PyTreeRestore::new().with_restore_args(args))?;

    let expected = expected_sha256(fixture)?;
    let mut compared = 0;
    for (path, leaf) in restored.flatten() {
        let bytes = match leaf {
            Leaf::Array(array) => {
                let devices = array.spec().sharding.device_set().len();
                if devices != RESTORE_DEVICES {
                    bail!("{path}: restored onto {devices} devices, expected {RESTORE_DEVICES}");
                }
                controller.to_global_bytes(array)?
            }
            Leaf::HostArray(array) => array.bytes().to_vec(),
            Leaf::String(text) => text.as_bytes().to_vec(),
            // Scalars come back widened to int64 or float64, so their bytes
            // differ from those Orbax hashed.
            _ => continue,
        };
        let name = ckpt::pytree::param_name(&path);
        let Some(want) = expected.get(&name) else {
            bail!("{path}: expected_values.json has no sha256 for {name}");
        };
        let got = hex(&Sha256::digest(&bytes));
        if &got != want {
            bail!("{path}: sha256 {got} after the restore onto {RESTORE_DEVICES} devices, expected {want}");
        }
        compared += 1;
    }
    Ok(compared)
}

/// Reads the sha256 of each leaf by parameter name.
fn expected_sha256(fixture: &Path) -> Result<BTreeMap<String, String>> {
    let path = fixture.join("expected_values.json");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let document: Value = serde_json::from_str(&text)?;
    let leaves = document["leaves"].as_array().context("no leaves")?;
    Ok(leaves
        .iter()
        .filter_map(|leaf| {
            let name = leaf.get("param_name")?.as_str()?;
            let sha256 = leaf.get("sha256")?.as_str()?;
            Some((name.to_owned(), sha256.to_owned()))
        })
        .collect())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace_fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/orbax").join(name)
    }

    #[test]
    fn shipped_fixture_a_restores() {
        let fixture = workspace_fixture("a_pytree_ocdbt");
        assert!(applies(&fixture).expect("metadata"));
        assert_eq!(check_onto_three_devices(&fixture).expect("restore onto 3 devices"), 6);
    }

    #[test]
    fn manager_fixture_does_not_apply() {
        assert!(!applies(&workspace_fixture("d_manager")).expect("no metadata"));
    }

    #[test]
    fn target_splits_first_long_dimension() {
        let mesh = Mesh::new(vec![3], vec!["x"], Topology::uniform(3, 1).unwrap().device_ids()).unwrap();
        let sharding = target_sharding(&mesh, &[2, 8]).unwrap();
        let Sharding::Named { spec, .. } = sharding else {
            panic!("expected a named sharding");
        };
        assert_eq!(spec.dims(), [PartitionDim::Unsharded, PartitionDim::axis("x")]);
    }
}
