//! Checkpointing for pytrees of sharded arrays, in the Orbax on-disk format,
//! with colocated saving.
//!
//! A checkpoint holds a pytree (nested dicts, lists, tuples and `None`)
//! whose leaves are arrays sharded over the devices of many hosts, host
//! arrays, scalars and strings. [`PyTreeCheckpointer`] and
//! [`StandardCheckpointer`] save and restore such trees in the format
//! Python Orbax reads and writes, so checkpoints move between JAX and Rust.
//!
//! In a single-controller deployment the controller holds only handles to
//! arrays ([`colocated::ShardedArray`]); the shards live on the hosts. With
//! [`SaveArgs::colocated`] (or [`ColocatedArrayHandler`] registered for
//! sharded arrays) each host writes its own shards straight to storage and
//! the controller moves only metadata; the default [`ArrayHandler`] gathers
//! the shards to the controller first, as Orbax does without a dispatcher.
//!
//! Each layer is a crate of its own and is re-exported here: [`core`]
//! (dtypes, boxes, region copy), [`pytree`], [`device`] (meshes,
//! shardings), [`storage`] (stores, zarr, OCDBT, commit protocol) and
//! [`colocated`] (the runtime of controller and hosts).
//!
//! # Restoring
//!
//! [`PyTreeRestore`] chooses what each leaf becomes through a tree of
//! [`RestoreArgs`], a full tree or a prefix whose leaves cover subtrees.
//! [`PyTreeRestore::with_target`] builds that tree from abstract arrays
//! ([`colocated::ArraySpec`]: shape, dtype and sharding), from concrete
//! arrays whose spec it copies, or from restore arguments. A sharding may
//! be on any mesh of this runtime's devices or on one device, and
//! [`RestoreArgs::host`] reads an array into the controller's memory.
//!
//! A restore may read part of a checkpoint. With [`KeyMatch::Partial`] the
//! restore arguments may be a subset of the checkpoint's tree, and
//! [`PyTreeRestore::with_key_paths`] selects leaves or subtrees by key
//! path (`['params']['dense']` in `jax.tree_util.keystr` form). Leaves
//! outside the selection are not read. Under the default
//! [`KeyMatch::Strict`], keys that the target and the checkpoint do not
//! share fail the restore with [`CkptError::KeyMismatch`], which lists
//! all of them; [`KeyMatch::Lenient`] leaves missing keys out with a
//! warning.
//!
//! A sharded array leaf without a target sharding restores onto the
//! sharding recorded in the checkpoint. When that sharding names devices
//! this runtime lacks, or the checkpoint records none, the restore fails
//! with [`CkptError::SavedDevicesMissing`] or [`CkptError::NoSavedSharding`]
//! naming the leaf. The caller then either gives a target sharding or opts
//! in to a fallback per leaf with [`RestoreArgs::with_missing_sharding`]:
//! [`MissingSharding::Replicated`] over all devices,
//! [`MissingSharding::SingleDevice`] or [`MissingSharding::Host`]. The
//! restore never picks a layout on its own. [`metadata`] needs no devices
//! at all, so it reads any checkpoint on any machine.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//!
//! use ckpt::colocated::{ArraySpec, Controller, InProcessRuntime};
//! use ckpt::device::{Mesh, PartitionSpec, Sharding, Topology};
//! use ckpt::pytree::PyTree;
//! use ckpt::storage::open_store;
//! use ckpt::{DType, HostArray, Leaf, PyTreeCheckpointer, PyTreeRestore, PyTreeSave, SaveArgs};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Two simulated hosts with two devices each.
//! let topology = Topology::uniform(2, 2)?;
//! let controller = Arc::new(Controller::new(Arc::new(InProcessRuntime::new(topology.clone())?)));
//! let mesh = Mesh::new(vec![4], vec!["x"], topology.device_ids())?;
//! let sharding = Sharding::Named { mesh, spec: PartitionSpec::new([Some("x")]) };
//!
//! let values: Vec<f32> = (0..8).map(|i| i as f32).collect();
//! let spec = ArraySpec { shape: vec![8], dtype: DType::Float32, sharding };
//! let x = controller.put_global(spec, bytemuck::cast_slice(&values))?;
//! let tree = PyTree::dict([
//!     ("x", PyTree::leaf(Leaf::Array(x))),
//!     ("y", PyTree::leaf(Leaf::HostArray(HostArray::from_vec(vec![3], vec![1i32, 2, 3])?))),
//! ]);
//!
//! let dir = tempfile::tempdir()?;
//! let parent = open_store(&dir.path().display().to_string())?;
//! let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));
//! let args = PyTreeSave::new(tree).with_save_args(PyTree::leaf(SaveArgs::colocated()));
//! let summary = checkpointer.save(&parent, "step_1", args)?;
//! assert_eq!(summary.controller_array_bytes, 0);
//!
//! let restored = checkpointer.restore(&parent, "step_1", PyTreeRestore::new())?;
//! assert_eq!(restored.leaves().len(), 2);
//! # Ok(())
//! # }
//! ```

mod args;
mod async_checkpointer;
mod async_save;
mod checkpointer;
mod error;
mod handler;
mod handlers;
mod item_io;
mod items;
mod leaf;
mod manager;
mod legacy;
mod metadata;
mod partial;

pub use ckpt_colocated as colocated;
pub use ckpt_core as core;
pub use ckpt_device as device;
pub use ckpt_pytree as pytree;
pub use ckpt_storage as storage;

pub use crate::{
    args::{
        KeyMatch, MissingSharding, PyTreeRestore, PyTreeSave, RestoreArgs, RestoreTarget,
        SaveArgs, StandardRestore, StandardSave,
    },
    async_checkpointer::AsyncCheckpointer,
    async_save::AsyncOptions,
    checkpointer::{PyTreeCheckpointer, SaveSummary, StandardCheckpointer},
    error::{CkptError, Result},
    handler::{
        global_registry, register_type_handler, RestoreContext, RestoreEntry, SaveContext,
        SaveEntry, SavedLeaf, TypeHandler, TypeHandlerRegistry,
    },
    handlers::{
        ArrayHandler, ColocatedArrayHandler, HostArrayHandler, ScalarHandler, StringHandler,
        ARRAY_VALUE_TYPE, HOST_ARRAY_VALUE_TYPE, SCALAR_VALUE_TYPE, STRING_VALUE_TYPE,
    },
    item_io::{JSON_ITEM_FILE, MAX_JSON_ITEM_BYTES, METRICS_ITEM},
    items::{
        Composite, CompositeRestore, ItemRestore, ItemSave, JsonRestore, JsonSave, RestoredItem,
        RestoredItems,
    },
    leaf::{HostArray, Leaf, LeafType, Scalar},
    manager::{
        BestFn, BestMode, BestPolicy, CheckpointManager, CheckpointManagerOptions, Metrics,
        ShouldSaveFn, StepNameFormat, StepSaveOptions, UncommittedStep,
    },
    metadata::{item_metadata, leaf_digests, metadata, CheckpointMetadata, LeafDigest, LeafMetadata},
};
pub use ckpt_core::DType;
