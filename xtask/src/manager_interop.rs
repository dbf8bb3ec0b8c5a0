//! Checks that Python Orbax's `CheckpointManager` reads a root directory
//! written by ckpt's [`CheckpointManager`].

use std::{fs, num::NonZeroUsize, path::Path, sync::Arc};

use anyhow::{bail, Context, Result};
use ckpt::{
    colocated::{ArraySpec, Controller, Generator, InProcessRuntime},
    device::{Mesh, PartitionSpec, Sharding, Topology},
    pytree::PyTree,
    storage::open_store,
    CheckpointManager, CheckpointManagerOptions, Composite, DType, HostArray, JsonSave, Leaf,
    Metrics, Scalar, StandardSave, StepSaveOptions,
};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{
    orbax,
    records::{ckpt_records, compare, json_records, Record},
};

/// Steps the check saves; the manager keeps the newest two.
const STEPS: [u64; 3] = [10, 20, 30];

/// Saves three steps with ckpt's manager (keeping two) under
/// `work/ckpt-manager`, then has Python Orbax find the newest step and
/// restore its `state` item, and compares every leaf with what was saved.
/// Returns the number of leaves compared.
pub(crate) fn check_manager_interop(python: &Path, work: &Path) -> Result<usize> {
    let root_dir = work.join("ckpt-manager");
    if root_dir.exists() {
        fs::remove_dir_all(&root_dir).with_context(|| format!("removing {}", root_dir.display()))?;
    }
    fs::create_dir_all(&root_dir)?;
    let root = open_store(&root_dir.display().to_string())?;

    // Eight devices, as Orbax's reader simulates, so it can place arrays on
    // the device ids recorded in `_sharding`.
    let topology = Topology::uniform(4, 2)?;
    let controller = Arc::new(Controller::new(Arc::new(InProcessRuntime::new(topology.clone())?)));
    let mesh = Mesh::new(vec![4, 2], vec!["x", "y"], topology.device_ids())?;
    let options = CheckpointManagerOptions::default().with_max_to_keep(NonZeroUsize::new(2));
    let manager = CheckpointManager::new(root.clone(), Arc::clone(&controller), options)?;

    let mut expected = Vec::new();
    for step in STEPS {
        let (items, records) = step_items(&controller, &mesh, step)?;
        let mut metrics = Metrics::new();
        metrics.insert("loss".into(), json!(1.0 / step as f64));
        let saved = manager.save_with(step, items, StepSaveOptions::new().with_metrics(metrics))?;
        if !saved {
            bail!("the manager skipped step {step}");
        }
        expected = records;
    }
    manager.close()?;

    let newest = *STEPS.last().context("no steps")?;
    let mut listed: Vec<String> = fs::read_dir(&root_dir)?
        .map(|entry| entry.map(|entry| entry.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    listed.sort();
    if listed != ["20", "30"] {
        bail!("the root lists {listed:?}, expected the newest two steps [\"20\", \"30\"]");
    }

    let step_dir = ckpt::storage::open_committed(&root, &newest.to_string())?;
    let ours = ckpt_records(&ckpt::storage::open_committed(&step_dir, "state")?)?;
    compare(&ours, &expected, "ckpt's reading of its own manager step")?;

    let theirs = orbax::orbax_read_manager(python, &root_dir, "state")?;
    if theirs["step"].as_u64() != Some(newest) {
        bail!("Orbax found step {} as the newest, expected {newest}", theirs["step"]);
    }
    compare(&json_records(&theirs, None)?, &expected, "Orbax's restore of the newest step")
}

/// The items of one step, `state` and `extra`, and the records the state
/// leaves must read back as.
fn step_items(controller: &Controller, mesh: &Mesh, step: u64) -> Result<(Composite, Vec<Record>)> {
    let spec = ArraySpec {
        shape: vec![16, 8],
        dtype: DType::Float32,
        sharding: Sharding::named(mesh.clone(), PartitionSpec::new([Some("x"), Some("y")]))?,
    };
    let generator = Generator::new(step);
    let kernel_digest = hex(&Sha256::digest(generator.global_bytes(spec.dtype, &spec.shape)));
    let kernel = controller.put_generated(spec, generator)?;
    let counts = HostArray::from_vec(vec![4], vec![step as i64; 4])?;
    let count_digest = hex(&Sha256::digest(counts.bytes()));
    let scalar = Scalar::Int(step as i64);
    let scalar_digest = hex(&Sha256::digest(scalar.to_bytes()));

    let state = PyTree::dict([
        ("kernel", PyTree::leaf(Leaf::Array(kernel))),
        ("counts", PyTree::leaf(Leaf::HostArray(counts))),
        ("step", PyTree::leaf(Leaf::Scalar(scalar))),
    ]);
    let records = vec![
        record("kernel", DType::Float32, &[16, 8], kernel_digest),
        record("counts", DType::Int64, &[4], count_digest),
        record("step", DType::Int64, &[], scalar_digest),
    ];
    let items = Composite::new()
        .with_item("state", StandardSave::new(state).with_colocated(true))
        .with_item("extra", JsonSave::new(json!({"step": step, "note": format!("step {step}")})));
    Ok((items, records))
}

fn record(name: &str, dtype: DType, shape: &[u64], sha256: String) -> Record {
    Record {
        id: format!("{name}(dict)"),
        param_name: Some(name.to_owned()),
        empty: false,
        dtype: Some(dtype.name().to_owned()),
        shape: Some(shape.to_vec()),
        sha256: Some(sha256),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
