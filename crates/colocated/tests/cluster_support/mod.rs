//! Helpers of the cluster tests: worker processes, a small model of arrays
//! with uneven shards, and checkpoints saved and restored through a
//! controller with the commit protocol.

#![allow(dead_code)]

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use ckpt_colocated::{
    ArraySpec, Controller, Generator, GrpcRuntime, GrpcRuntimeOptions, LaunchOptions, SaveItem,
    ShardedArray, WorkerCluster,
};
use ckpt_core::{DType, IndexBox};
use ckpt_device::{Mesh, PartitionSpec, Sharding, Topology};
use ckpt_storage::{
    finalize_item, open_committed, ArrayFormat, ArrayWriter, PendingCheckpoint, StoredArray, Store,
};

/// Options for the `ckpt-worker` binary that Cargo built for these tests.
pub(crate) fn launch_options() -> LaunchOptions {
    LaunchOptions::new(env!("CARGO_BIN_EXE_ckpt-worker"))
        .with_fault_injection(true)
        .with_log_filter("warn")
}

/// Worker processes and a controller connected to them.
pub(crate) struct Cluster {
    pub(crate) workers: WorkerCluster,
    pub(crate) runtime: Arc<GrpcRuntime>,
    pub(crate) controller: Controller,
    pub(crate) topology: Topology,
}

pub(crate) fn start(hosts: usize, devices_per_host: usize, options: GrpcRuntimeOptions) -> Cluster {
    let workers = WorkerCluster::start(hosts, &launch_options()).unwrap();
    let topology = Topology::uniform(hosts, devices_per_host).unwrap();
    let runtime = Arc::new(GrpcRuntime::connect(topology.clone(), workers.addresses(), options).unwrap());
    let controller = Controller::new(Arc::clone(&runtime) as Arc<dyn ckpt_colocated::Runtime>);
    Cluster {
        workers,
        runtime,
        controller,
        topology,
    }
}

/// One array of the test model.
#[derive(Clone, Debug)]
pub(crate) struct ModelArray {
    pub(crate) name: &'static str,
    pub(crate) spec: ArraySpec,
    pub(crate) seed: u64,
}

/// A model over all devices of `topology` arranged as a `rows` x rest mesh.
/// Its arrays are split by rows, by columns, by both, or replicated. No mesh
/// axis of 2, 3, 4 or 8 divides their shapes, so shards are uneven.
pub(crate) fn model(topology: &Topology, rows: usize) -> Vec<ModelArray> {
    let devices = topology.device_ids();
    let columns = devices.len() / rows;
    let mesh = Mesh::new(vec![rows, columns], vec!["x", "y"], devices).unwrap();
    let sharding = |dims: [Option<&str>; 2]| Sharding::named(mesh.clone(), PartitionSpec::new(dims)).unwrap();
    let arrays = [
        ("rows", vec![37, 11], DType::Float32, sharding([Some("x"), None])),
        ("columns", vec![5, 53], DType::BFloat16, sharding([None, Some("y")])),
        ("both", vec![29, 31], DType::Int32, sharding([Some("x"), Some("y")])),
        ("replicated", vec![13, 7], DType::Float64, sharding([None, None])),
    ];
    arrays
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape, dtype, sharding))| ModelArray {
            name,
            spec: ArraySpec {
                shape,
                dtype,
                sharding,
            },
            seed: 100 + i as u64,
        })
        .collect()
}

/// Bytes of all arrays of the model, each counted once.
pub(crate) fn model_bytes(model: &[ModelArray]) -> u64 {
    model
        .iter()
        .map(|array| array.spec.shape.iter().product::<u64>() * array.spec.dtype.item_size() as u64)
        .sum()
}

pub(crate) fn put_model(controller: &Controller, model: &[ModelArray]) -> Vec<ShardedArray> {
    model
        .iter()
        .map(|array| controller.put_generated(array.spec.clone(), Generator::new(array.seed)).unwrap())
        .collect()
}

/// How a save moves array bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Each host writes its own shards.
    Colocated,
    /// The controller fetches the shards and writes them.
    Gather,
}

fn stored(spec: &ArraySpec) -> StoredArray {
    let first = spec.sharding.devices_indices_map(&spec.shape).unwrap().remove(0);
    StoredArray {
        shape: spec.shape.clone(),
        dtype: spec.dtype,
        chunk_shape: first.index.shape(),
    }
}

/// Writes the arrays into `item`, colocated or gathered.
pub(crate) fn write_arrays(
    controller: &Controller,
    item: &Store,
    model: &[ModelArray],
    arrays: &[ShardedArray],
    mode: Mode,
) -> ckpt_colocated::Result<()> {
    let format = ArrayFormat::default();
    match mode {
        Mode::Colocated => {
            let items = model
                .iter()
                .zip(arrays)
                .map(|(array, handle)| {
                    let stored = stored(&array.spec);
                    let item = SaveItem {
                        id: handle.id(),
                        param_name: array.name.into(),
                        write_shape: stored.chunk_shape.clone(),
                        stored,
                        replica_slicing: None,
                        create_metadata: true,
                    };
                    (handle, item)
                })
                .collect();
            controller.save_colocated(item, &format, items)?;
        }
        Mode::Gather => {
            let writer = ArrayWriter::open(item, &format, "controller")?;
            for (array, handle) in model.iter().zip(arrays) {
                let stored = stored(&array.spec);
                writer.create_array(array.name, &stored)?;
                for shard in controller.fetch_shards(&[handle])? {
                    if !shard.index.is_empty() {
                        writer.write_region(array.name, &stored, &shard.index, &shard.bytes)?;
                    }
                }
            }
            writer.finish()?;
        }
    }
    Ok(())
}

/// Saves the arrays as checkpoint `name` and commits it.
pub(crate) fn save(
    controller: &Controller,
    parent: &Store,
    name: &str,
    model: &[ModelArray],
    arrays: &[ShardedArray],
    mode: Mode,
) -> ckpt_colocated::Result<()> {
    let pending = PendingCheckpoint::begin(parent, name)?;
    if let Err(err) = write_arrays(controller, pending.store(), model, arrays, mode) {
        pending.abort()?;
        return Err(err);
    }
    finalize_item(pending.store(), &ArrayFormat::default())?;
    pending.commit()?;
    Ok(())
}

/// Restores checkpoint `name` onto the shardings of `model`, colocated,
/// and returns the elements that differ from the generators.
pub(crate) fn restore_mismatches(controller: &Controller, parent: &Store, name: &str, model: &[ModelArray]) -> u64 {
    let item = open_committed(parent, name).unwrap();
    let targets = model
        .iter()
        .map(|array| (array.name.to_owned(), array.spec.clone()))
        .collect();
    let restored = controller.restore_colocated(&item, Some(true), false, targets).unwrap();
    let mut mismatches = 0;
    for (array, handle) in model.iter().zip(&restored) {
        let report = controller.verify(handle, Generator::new(array.seed)).unwrap();
        assert!(report.elements > 0, "{} restored no elements", array.name);
        mismatches += report.mismatches;
    }
    controller.drop_arrays(&restored.iter().collect::<Vec<_>>()).unwrap();
    mismatches
}

/// Restores checkpoint `name` through the controller (the gather path): it
/// reads each array whole and puts each host's boxes. Returns mismatches.
pub(crate) fn restore_gathered_mismatches(controller: &Controller, parent: &Store, name: &str, model: &[ModelArray]) -> u64 {
    let item = open_committed(parent, name).unwrap();
    let reader = ckpt_storage::ArrayReader::open(&item, Some(true)).unwrap();
    let mut mismatches = 0;
    for array in model {
        let stored = reader.array(array.name).unwrap();
        let mut global = vec![0u8; ckpt_core::num_bytes_usize(&stored.shape, stored.dtype).unwrap()];
        reader
            .read_region(array.name, &stored, &IndexBox::full(&stored.shape), &mut global)
            .unwrap();
        let handle = controller.put_global(array.spec.clone(), &global).unwrap();
        mismatches += controller.verify(&handle, Generator::new(array.seed)).unwrap().mismatches;
    }
    mismatches
}

/// Returns the directory names under `parent`.
pub(crate) fn dirs(parent: &Store) -> BTreeSet<String> {
    parent.list_dirs().unwrap().into_iter().collect()
}

/// Polls `condition` every 10 ms until it is true or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    condition()
}
