//! The requests a controller sends to hosts and their replies.
//!
//! Requests name arrays by id and describe boxes, formats and storage
//! locations. Array bytes appear only in [`HostCall::PutArray`] with
//! [`PutSource::Shards`] and in [`HostReply::Shards`], so those are where
//! the controller counts the bytes that pass through it.

use bytes::Bytes;
use ckpt_core::{DType, IndexBox};
use ckpt_device::Sharding;
use ckpt_storage::{ArrayFormat, StoredArray, Store};

use crate::Generator;

/// Identifier of an array in a runtime, unique per controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ArrayId(pub u64);

/// Global shape, dtype and sharding of an array.
#[derive(Clone, Debug, PartialEq)]
pub struct ArraySpec {
    /// Global shape.
    pub shape: Vec<u64>,
    /// Element type.
    pub dtype: DType,
    /// The layout of the array over devices.
    pub sharding: Sharding,
}

/// The source of a new array's shard data on a host.
#[derive(Clone, Debug)]
pub enum PutSource {
    /// Generate values on the host from a seed.
    Generate(Generator),
    /// Bytes of each distinct box of the host's devices, sent by the
    /// controller once per host even where several devices hold the box.
    Shards(Vec<(IndexBox, Bytes)>),
}

/// The split of a shard's writing among its replicas (Orbax's
/// replica-parallel saving). Replica `r` writes the `r`-th of `replicas`
/// equal slices of the shard along `axis`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaSlicing {
    /// The shard axis that is split.
    pub axis: usize,
    /// The number of slices, one per replica; replicas beyond it write nothing.
    pub replicas: u32,
}

impl ReplicaSlicing {
    /// The box that replica `replica_id` of a shard with box `shard` writes,
    /// or `None` if that replica writes nothing.
    pub fn slice(&self, shard: &IndexBox, replica_id: u32) -> Option<IndexBox> {
        if replica_id >= self.replicas {
            return None;
        }
        let extent = shard.shape()[self.axis] / u64::from(self.replicas);
        let mut start = shard.start().to_vec();
        let mut stop = shard.stop().to_vec();
        start[self.axis] += extent * u64::from(replica_id);
        stop[self.axis] = start[self.axis] + extent;
        IndexBox::new(start, stop).ok()
    }
}

/// One array to save in a colocated save.
#[derive(Clone, Debug)]
pub struct SaveItem {
    /// The array.
    pub id: ArrayId,
    /// Its parameter name: the zarr array path inside the checkpoint item.
    pub param_name: String,
    /// How it is stored: shape, dtype and chunk shape.
    pub stored: StoredArray,
    /// The shape each writer writes: a shard, or a replica's slice of one.
    pub write_shape: Vec<u64>,
    /// Replica-parallel slicing; `None` means replica 0 writes whole shards.
    pub replica_slicing: Option<ReplicaSlicing>,
    /// Whether this host writes the array's zarr metadata (one host does).
    pub create_metadata: bool,
}

/// One array to restore in a colocated restore.
#[derive(Clone, Debug)]
pub struct RestoreItem {
    /// The id the restored array gets.
    pub id: ArrayId,
    /// Its parameter name in the checkpoint item.
    pub param_name: String,
    /// The target shape, dtype and sharding. A dtype other than the
    /// stored one is cast on the host as each chunk is read.
    pub spec: ArraySpec,
    /// Allow a cast that changes values (see [`ckpt_core::CastKind`]);
    /// without it the host rejects such a cast.
    pub allow_lossy_cast: bool,
}

/// A request from the controller to one host.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum HostCall {
    /// Create an array's shards on this host's devices.
    PutArray {
        /// Id of the new array.
        id: ArrayId,
        /// Global shape, dtype and sharding.
        spec: ArraySpec,
        /// Where the shard data comes from.
        source: PutSource,
    },
    /// Write this host's replica-0 shards of each item into a checkpoint item.
    SaveShards {
        /// The checkpoint item directory being written.
        item: Store,
        /// Storage format options.
        format: ArrayFormat,
        /// The arrays.
        items: Vec<SaveItem>,
    },
    /// Return the bytes of this host's replica-0 shards (the gather path).
    FetchShards {
        /// The arrays.
        ids: Vec<ArrayId>,
    },
    /// Read the boxes of this host's devices from a checkpoint item.
    RestoreShards {
        /// The committed checkpoint item directory.
        item: Store,
        /// Whether the item stores arrays in OCDBT; `None` lets the reader detect it.
        use_ocdbt: Option<bool>,
        /// Whether the item stores arrays as zarr v3 rather than v2.
        use_zarr3: bool,
        /// The arrays.
        items: Vec<RestoreItem>,
    },
    /// Compare this host's shards with a generator's values.
    Verify {
        /// The array.
        id: ArrayId,
        /// The generator the values should come from.
        generator: Generator,
    },
    /// Copy this host's replica-0 shards of each source array into host
    /// memory under a new id, so that a background save reads bytes which
    /// later changes to the source array cannot reach.
    SnapshotArrays {
        /// Pairs of a source array and the id its copy gets.
        arrays: Vec<(ArrayId, ArrayId)>,
    },
    /// Drop arrays from this host.
    DropArrays {
        /// The arrays.
        ids: Vec<ArrayId>,
    },
}

impl HostCall {
    /// A short name of the request, for errors and logs.
    pub fn operation(&self) -> &'static str {
        match self {
            HostCall::PutArray { .. } => "put an array",
            HostCall::SaveShards { .. } => "save shards",
            HostCall::FetchShards { .. } => "fetch shards",
            HostCall::RestoreShards { .. } => "restore shards",
            HostCall::Verify { .. } => "verify an array",
            HostCall::SnapshotArrays { .. } => "snapshot arrays",
            HostCall::DropArrays { .. } => "drop arrays",
        }
    }

    /// Array bytes this request carries from the controller to a host.
    pub fn array_bytes(&self) -> u64 {
        match self {
            HostCall::PutArray {
                source: PutSource::Shards(shards),
                ..
            } => shards.iter().map(|(_, bytes)| bytes.len() as u64).sum(),
            _ => 0,
        }
    }
}

/// Bytes of one shard returned to the controller.
#[derive(Clone, Debug)]
pub struct ShardBytes {
    /// The array.
    pub id: ArrayId,
    /// The shard's box in the global array.
    pub index: IndexBox,
    /// The shard's elements in C order.
    pub bytes: Bytes,
}

/// What one host wrote in a colocated save.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SaveReport {
    /// Array bytes written (before compression).
    pub bytes: u64,
    /// Chunks written.
    pub chunks: u64,
}

/// The outcome of comparing a host's shards with a generator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Elements compared.
    pub elements: u64,
    /// Elements that differ.
    pub mismatches: u64,
}

/// A host's reply.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum HostReply {
    /// The request succeeded and returns nothing.
    Done,
    /// The result of [`HostCall::SaveShards`].
    Saved(SaveReport),
    /// The result of [`HostCall::FetchShards`].
    Shards(Vec<ShardBytes>),
    /// The result of [`HostCall::RestoreShards`]: bytes read from storage.
    Restored {
        /// Array bytes read into this host's devices.
        bytes: u64,
    },
    /// The result of [`HostCall::Verify`].
    Verified(VerifyReport),
}

impl HostReply {
    /// Array bytes this reply carries from a host to the controller.
    pub fn array_bytes(&self) -> u64 {
        match self {
            HostReply::Shards(shards) => shards.iter().map(|s| s.bytes.len() as u64).sum(),
            _ => 0,
        }
    }
}
