//! Restoring onto another machine: read a checkpoint's metadata without its
//! devices, restore part of the tree onto a different device count and
//! dtype, and see the errors that guard against silent guesses.
//!
//! The checkpoint is saved on 4 hosts with 2 devices each, then restored in
//! a runtime of 1 host with 3 devices, where none of the saved shardings
//! can be used.
//!
//! Run with `cargo run -p ckpt --example restore`.

use std::{error::Error, sync::Arc};

use ckpt::{
    colocated::{ArraySpec, Controller, InProcessRuntime},
    core::cast_elements,
    device::{Mesh, PartitionSpec, Sharding, Topology},
    metadata,
    pytree::PyTree,
    storage::open_store,
    DType, Leaf, PyTreeCheckpointer, PyTreeRestore, PyTreeSave, RestoreArgs, SaveArgs, Scalar,
};

/// Returns a controller over simulated hosts with `devices_per_host` devices each.
fn controller(hosts: usize, devices_per_host: usize) -> Result<Arc<Controller>, Box<dyn Error>> {
    let runtime = InProcessRuntime::new(Topology::uniform(hosts, devices_per_host)?)?;
    Ok(Arc::new(Controller::new(Arc::new(runtime))))
}

/// Returns a sharding of rank-2 arrays whose rows are split over every
/// device of `controller`.
fn rows_over_all_devices(controller: &Controller) -> Result<Sharding, Box<dyn Error>> {
    let devices = controller.runtime().topology().device_ids();
    let mesh = Mesh::new(vec![devices.len()], vec!["x"], devices)?;
    Ok(Sharding::named(mesh, PartitionSpec::new([Some("x"), None]))?)
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = std::env::temp_dir().join(format!("ckpt-restore-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let parent = open_store(&dir.display().to_string())?;

    // Save on 8 devices: weights split by rows, their optimizer state, and a step.
    let saving = controller(4, 2)?;
    let weights: Vec<f32> = (0..8 * 6).map(|i| i as f32 * 0.25 + 1.0).collect();
    let spec = ArraySpec {
        shape: vec![8, 6],
        dtype: DType::Float32,
        sharding: rows_over_all_devices(&saving)?,
    };
    let w = saving.put_global(spec.clone(), bytemuck::cast_slice(&weights))?;
    let momentum_values = vec![0.1f32; 8 * 6];
    let momentum = saving.put_global(spec, bytemuck::cast_slice(&momentum_values))?;
    let tree = PyTree::dict([
        ("params", PyTree::dict([("w", PyTree::leaf(Leaf::Array(w)))])),
        ("opt", PyTree::dict([("momentum", PyTree::leaf(Leaf::Array(momentum)))])),
        ("step", PyTree::leaf(Leaf::Scalar(Scalar::Int(100)))),
    ]);
    let args = PyTreeSave::new(tree).with_save_args(PyTree::leaf(SaveArgs::colocated()));
    PyTreeCheckpointer::new(saving).save(&parent, "ckpt", args)?;

    // Metadata needs no runtime, so it reads on any machine.
    let saved = metadata(&parent, "ckpt")?;
    for (path, leaf) in saved.tree.flatten() {
        let dtype = leaf.dtype.map_or_else(|| "-".to_owned(), |dtype| dtype.to_string());
        let placement = match &leaf.saved_sharding {
            Some(sharding) => format!("saved on {} devices", sharding.device_set().len()),
            None => "no sharding".to_owned(),
        };
        println!("{path}: {} {dtype} shape {:?}, {placement}", leaf.value_type, leaf.shape.clone().unwrap_or_default());
    }

    // A runtime of 3 devices, which the saved shardings do not name.
    let restoring = controller(1, 3)?;
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&restoring));

    // Without a target sharding the restore fails, and its error explains how to give one.
    let error = checkpointer
        .restore(&parent, "ckpt", PyTreeRestore::new())
        .expect_err("the saved devices are missing here");
    println!("restore without a target: {error}");

    // Only the weights, as bfloat16, with rows split 3, 3 and 2 over 3 devices.
    let target = ArraySpec {
        shape: vec![8, 6],
        dtype: DType::BFloat16,
        sharding: rows_over_all_devices(&restoring)?,
    };
    let weights_only = |args: RestoreArgs| {
        PyTreeRestore::new()
            .with_restore_args(PyTree::dict([("params", PyTree::dict([("w", PyTree::leaf(args))]))]))
            .with_partial_restore(true)
    };
    let error = checkpointer
        .restore(&parent, "ckpt", weights_only(RestoreArgs::array(target.clone())))
        .expect_err("float32 to bfloat16 loses precision");
    println!("lossy cast without the opt-in: {error}");

    let restored = checkpointer.restore(
        &parent,
        "ckpt",
        weights_only(RestoreArgs::array(target).with_lossy_cast(true)),
    )?;
    let paths: Vec<String> = restored.flatten().iter().map(|(path, _)| path.to_string()).collect();
    println!("restored leaves: {}", paths.join(", "));

    let Some((_, Leaf::Array(w))) = restored.flatten().into_iter().next() else {
        return Err("params.w was not restored as a sharded array".into());
    };
    let mut expected = vec![0u8; 8 * 6 * 2];
    cast_elements(DType::Float32, bytemuck::cast_slice(&weights), DType::BFloat16, &mut expected)?;
    if restoring.to_global_bytes(w)? != expected {
        return Err("the restored weights differ from the saved ones cast to bfloat16".into());
    }
    println!("params.w on 3 devices as bfloat16 equals the saved weights cast to bfloat16");

    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
