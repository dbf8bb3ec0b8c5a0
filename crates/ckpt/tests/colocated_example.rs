//! The colocated example from Orbax's documentation, as a test.

use std::sync::Arc;

use ckpt::{
    colocated::{ArraySpec, Controller, InProcessRuntime},
    device::{Sharding, Topology},
    pytree::PyTree,
    storage::open_store,
    ColocatedArrayHandler, DType, HostArray, Leaf, LeafType, PyTreeRestore, SaveArgs,
    StandardCheckpointer, StandardSave, TypeHandlerRegistry,
};

#[test]
fn colocated_example_round_trip() {
    let topology = Topology::uniform(2, 1).unwrap();
    let runtime = InProcessRuntime::new(topology.clone()).unwrap();
    let controller = Arc::new(Controller::new(Arc::new(runtime)));

    // A registry of this test's own, so other tests in the process are unaffected.
    let mut registry = TypeHandlerRegistry::with_defaults();
    registry
        .register(LeafType::Array, Arc::new(ColocatedArrayHandler), true)
        .unwrap();

    let ones = vec![1.0f32; 10];
    let x = controller
        .put_global(
            ArraySpec {
                shape: vec![10],
                dtype: DType::Float32,
                sharding: Sharding::single_device(topology.device_ids()[1]),
            },
            bytemuck::cast_slice(&ones),
        )
        .unwrap();
    let y = HostArray::from_vec(vec![5], (0..5).collect::<Vec<i64>>()).unwrap();
    let tree = PyTree::dict([
        ("x", PyTree::leaf(Leaf::Array(x.clone()))),
        ("y", PyTree::leaf(Leaf::HostArray(y.clone()))),
    ]);

    let dir = tempfile::tempdir().unwrap();
    let parent = open_store(&dir.path().display().to_string()).unwrap();
    let checkpointer = StandardCheckpointer::new(Arc::clone(&controller)).with_registry(registry);
    let bytes_before_save = controller.array_bytes();
    let args = StandardSave::new(tree).with_save_args(PyTree::leaf(SaveArgs::colocated()));
    let summary = checkpointer.save(&parent, "checkpoint", args).unwrap();
    assert_eq!(summary.controller_array_bytes, 0);
    assert_eq!(controller.array_bytes(), bytes_before_save);

    let restored = checkpointer
        .restore(&parent, "checkpoint", PyTreeRestore::new())
        .unwrap();
    let leaves = restored.flatten();
    assert_eq!(leaves.len(), 2);
    let Leaf::Array(restored_x) = leaves[0].1 else {
        panic!("x restored as {:?}", leaves[0].1);
    };
    assert_eq!(restored_x.spec(), x.spec());
    let values: Vec<f32> = bytemuck::pod_collect_to_vec(&controller.to_global_bytes(restored_x).unwrap());
    assert_eq!(values, ones);
    assert_eq!(leaves[1].1, &Leaf::HostArray(y));
}
