//! Colocated checkpointing, following the example in Orbax's documentation:
//! register the colocated array handler, save a device array and a host
//! array with colocated save arguments, restore, and compare.
//!
//! Run with `cargo run --example colocated`.

use std::{error::Error, sync::Arc};

use ckpt::{
    colocated::{ArraySpec, Controller, InProcessRuntime},
    device::{Sharding, Topology},
    pytree::PyTree,
    register_type_handler,
    storage::open_store,
    ColocatedArrayHandler, DType, HostArray, Leaf, LeafType, PyTreeRestore, SaveArgs,
    StandardCheckpointer, StandardSave,
};

fn main() -> Result<(), Box<dyn Error>> {
    // One controller and two hosts with one simulated device each.
    let topology = Topology::uniform(2, 1)?;
    let runtime = InProcessRuntime::new(topology.clone())?;
    let controller = Arc::new(Controller::new(Arc::new(runtime)));

    // Sharded arrays are saved by the hosts that hold them from now on.
    register_type_handler(LeafType::Array, Arc::new(ColocatedArrayHandler), true)?;

    // x: ten ones on a device; y: the host array 0..5.
    let ones = vec![1.0f32; 10];
    let x = controller.put_global(
        ArraySpec {
            shape: vec![10],
            dtype: DType::Float32,
            sharding: Sharding::single_device(topology.device_ids()[0]),
        },
        bytemuck::cast_slice(&ones),
    )?;
    let y = HostArray::from_vec(vec![5], (0..5).collect::<Vec<i64>>())?;
    let tree = PyTree::dict([
        ("x", PyTree::leaf(Leaf::Array(x))),
        ("y", PyTree::leaf(Leaf::HostArray(y.clone()))),
    ]);

    let dir = std::env::temp_dir().join(format!("ckpt-colocated-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let parent = open_store(&dir.display().to_string())?;

    let checkpointer = StandardCheckpointer::new(Arc::clone(&controller));
    let args = StandardSave::new(tree).with_save_args(PyTree::leaf(SaveArgs::colocated()));
    let summary = checkpointer.save(&parent, "checkpoint", args)?;
    println!(
        "saved {} leaves to {}, {} array bytes through the controller",
        summary.leaves,
        dir.join("checkpoint").display(),
        summary.controller_array_bytes
    );

    let restored = checkpointer.restore(&parent, "checkpoint", PyTreeRestore::new())?;
    let leaves = restored.flatten();
    let Leaf::Array(x) = leaves[0].1 else {
        return Err("x was not restored as a sharded array".into());
    };
    let x_values: Vec<f32> = bytemuck::pod_collect_to_vec(&controller.to_global_bytes(x)?);
    assert_eq!(x_values, ones);
    assert_eq!(leaves[1].1, &Leaf::HostArray(y));
    println!("restored x = {x_values:?} and y = [0, 1, 2, 3, 4]: equal to what was saved");

    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
