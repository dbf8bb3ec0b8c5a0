//! Restores onto a dtype other than the stored one: widening casts restore
//! exactly, lossy casts fail naming the leaf unless the caller opts in, on
//! both the colocated and the controller path, also when resharding.

mod common;

use std::sync::Arc;

use ckpt::{
    colocated::{ArrayRestore, ArraySpec, ColocatedError, Controller, Generator},
    core::cast_elements,
    device::{Mesh, PartitionSpec, Sharding},
    pytree::PyTree,
    storage::{open_committed, ObjectStoreBackend, Store},
    DType, Leaf, PyTreeCheckpointer, PyTreeRestore, PyTreeSave, RestoreArgs,
};

use common::controller;

const SHAPE: [u64; 2] = [16, 6];
const SEED: u64 = 7;

/// Saves one array `w` of `dtype`, row-sharded over a 4x2 mesh, and
/// returns the parent store it is saved in.
fn save_array(controller: &Arc<Controller>, dtype: DType) -> Store {
    let parent = Store::new(Arc::new(ObjectStoreBackend::memory().expect("a memory store")));
    let devices = controller.runtime().topology().device_ids();
    let mesh = Mesh::new(vec![4, 2], vec!["x", "y"], devices).expect("a 4x2 mesh");
    let spec = ArraySpec {
        shape: SHAPE.to_vec(),
        dtype,
        sharding: Sharding::named(mesh, PartitionSpec::new([Some("x"), None])).expect("a sharding"),
    };
    let array = controller.put_generated(spec, Generator::new(SEED)).expect("an array");
    let tree = PyTree::dict([("w", PyTree::leaf(Leaf::Array(array)))]);
    PyTreeCheckpointer::new(Arc::clone(controller))
        .save(&parent, "ckpt", PyTreeSave::new(tree))
        .expect("save");
    parent
}

/// A target of `dtype` on an 8x1 mesh, so the restore also reshards.
fn target(controller: &Controller, dtype: DType) -> ArraySpec {
    let devices = controller.runtime().topology().device_ids();
    let mesh = Mesh::new(vec![8, 1], vec!["x", "y"], devices).expect("an 8x1 mesh");
    ArraySpec {
        shape: SHAPE.to_vec(),
        dtype,
        sharding: Sharding::named(mesh, PartitionSpec::new([Some("x"), None])).expect("a sharding"),
    }
}

fn restore(
    controller: &Arc<Controller>,
    parent: &Store,
    args: RestoreArgs,
) -> ckpt::Result<PyTree<Leaf>> {
    let args = PyTree::dict([("w", PyTree::leaf(args))]);
    PyTreeCheckpointer::new(Arc::clone(controller))
        .restore(parent, "ckpt", PyTreeRestore::new().with_restore_args(args))
}

/// Returns the restored `w` as global bytes.
fn restored_bytes(controller: &Controller, tree: &PyTree<Leaf>) -> Vec<u8> {
    let Some(PyTree::Leaf(Leaf::Array(array))) = tree.get(&ckpt::pytree::KeyPath::from(vec!["w".into()])) else {
        panic!("w was not restored as a sharded array");
    };
    controller.to_global_bytes(array).expect("the restored bytes")
}

/// The saved values converted to `to`, as the restore should produce them.
fn expected(from: DType, to: DType) -> Vec<u8> {
    let saved = Generator::new(SEED).global_bytes(from, &SHAPE);
    let mut out = vec![0u8; saved.len() / from.item_size() * to.item_size()];
    cast_elements(from, &saved, to, &mut out).expect("a cast");
    out
}

#[test]
fn widening_cast_restores_exactly() {
    for (from, to) in [(DType::Int16, DType::Float32), (DType::BFloat16, DType::Float32), (DType::UInt8, DType::Int16)] {
        let controller = controller(4, 2);
        let parent = save_array(&controller, from);
        for colocated in [false, true] {
            let args = RestoreArgs::array(target(&controller, to)).with_colocated(colocated);
            let tree = restore(&controller, &parent, args).expect("a widening restore");
            let bytes = restored_bytes(&controller, &tree);
            assert_eq!(bytes, expected(from, to), "{from} -> {to}, colocated {colocated}");
        }
    }
}

#[test]
fn widening_cast_round_trips() {
    let controller = controller(4, 2);
    let parent = save_array(&controller, DType::Int16);
    let tree = restore(&controller, &parent, RestoreArgs::array(target(&controller, DType::Int64)))
        .expect("a widening restore");
    let wide = restored_bytes(&controller, &tree);
    let mut back = vec![0u8; wide.len() / 4];
    cast_elements(DType::Int64, &wide, DType::Int16, &mut back).expect("a cast");
    assert_eq!(back, Generator::new(SEED).global_bytes(DType::Int16, &SHAPE));
}

#[test]
fn lossy_cast_error_names_leaf() {
    let controller = controller(4, 2);
    let parent = save_array(&controller, DType::Float32);
    for colocated in [false, true] {
        let args = RestoreArgs::array(target(&controller, DType::BFloat16)).with_colocated(colocated);
        let message = restore(&controller, &parent, args).expect_err("a lossy restore").to_string();
        assert!(message.contains("leaf ['w']"), "{message}");
        assert!(message.contains("float32"), "{message}");
        assert!(message.contains("bfloat16"), "{message}");
        assert!(message.contains("with_lossy_cast(true)"), "{message}");
    }
}

#[test]
fn lossy_cast_with_opt_in_converts() {
    for (from, to) in [(DType::Float32, DType::BFloat16), (DType::Float32, DType::Int8), (DType::Int32, DType::Float8E4M3Fn)] {
        let controller = controller(4, 2);
        let parent = save_array(&controller, from);
        for colocated in [false, true] {
            let args = RestoreArgs::array(target(&controller, to))
                .with_colocated(colocated)
                .with_lossy_cast(true);
            let tree = restore(&controller, &parent, args).expect("a lossy restore with the opt-in");
            let bytes = restored_bytes(&controller, &tree);
            assert_eq!(bytes, expected(from, to), "{from} -> {to}, colocated {colocated}");
        }
    }
}

#[test]
fn host_rejects_lossy_cast() {
    let controller = controller(4, 2);
    let parent = save_array(&controller, DType::Float64);
    let item = open_committed(&parent, "ckpt").expect("the committed item");
    let request = ArrayRestore::new("w", target(&controller, DType::Float32));
    let err = controller
        .restore_arrays(&item, None, false, vec![request])
        .expect_err("a lossy cast without the opt-in");
    let message = err.to_string();
    assert!(matches!(err, ColocatedError::HostFailed { .. }), "{message}");
    assert!(message.contains("restoring w as float32 from the stored float64 is a lossy cast"), "{message}");
}
