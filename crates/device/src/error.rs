use ckpt_core::{CoreError, IndexBox};
use thiserror::Error;

use crate::DeviceId;

/// Errors of devices, meshes, shardings, buffers and arrays.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// A shape, box or buffer check of the core model failed.
    #[error(transparent)]
    Core(#[from] CoreError),

    /// A topology with no devices.
    #[error("topology has no devices: give at least one device")]
    EmptyTopology,

    /// A uniform topology whose device count does not fit in a 32-bit device id.
    #[error("topology of {hosts} hosts with {devices_per_host} devices each has too many devices for 32-bit device ids")]
    TopologyTooLarge {
        /// Requested number of hosts.
        hosts: usize,
        /// Requested number of devices per host.
        devices_per_host: usize,
    },

    /// A device id listed twice in a topology, mesh or device set.
    #[error("device {device} is listed twice: every device may appear once")]
    DuplicateDevice {
        /// The repeated device.
        device: DeviceId,
    },

    /// A mesh whose shape and axis names differ in length.
    #[error("mesh shape {shape:?} has {} axes but {} axis names {axis_names:?} were given", shape.len(), axis_names.len())]
    MeshRankMismatch {
        /// The mesh shape.
        shape: Vec<usize>,
        /// The axis names.
        axis_names: Vec<String>,
    },

    /// A mesh whose axis types differ in number from its axes.
    #[error("mesh has {axes} axes but {axis_types} axis types were given")]
    AxisTypesLength {
        /// Number of mesh axes.
        axes: usize,
        /// Number of axis types given.
        axis_types: usize,
    },

    /// A mesh whose shape has a zero extent, so it would hold no device.
    #[error("mesh shape {shape:?} has a zero extent: every mesh axis needs at least one device")]
    EmptyMesh {
        /// The mesh shape.
        shape: Vec<usize>,
    },

    /// A mesh whose shape product differs from its number of devices.
    #[error("mesh shape {shape:?} does not fit the {found} devices given: the product of its extents must equal the device count")]
    MeshSizeMismatch {
        /// The mesh shape.
        shape: Vec<usize>,
        /// Number of devices given.
        found: usize,
    },

    /// A mesh with two axes of the same name.
    #[error("mesh axis name {axis:?} is used twice: axis names must be unique")]
    DuplicateAxisName {
        /// The repeated name.
        axis: String,
    },

    /// A partition spec naming an axis the mesh does not have.
    #[error("partition spec names axis {axis:?}, which is not in the mesh axes {mesh_axes:?}")]
    UnknownAxis {
        /// The unknown name.
        axis: String,
        /// The axes of the mesh.
        mesh_axes: Vec<String>,
    },

    /// A partition spec that shards over one mesh axis twice.
    #[error(
        "partition spec uses mesh axis {axis:?} twice: each axis may shard one dimension once"
    )]
    AxisUsedTwice {
        /// The repeated axis.
        axis: String,
    },

    /// A partition spec with more entries than the array has dimensions.
    #[error(
        "partition spec has {spec_rank} entries but the array has only {array_rank} dimensions"
    )]
    SpecTooLong {
        /// Entries in the spec.
        spec_rank: usize,
        /// Rank of the array.
        array_rank: usize,
    },

    /// A replicated sharding over an empty set of devices.
    #[error("replicated sharding has no devices: give at least one device")]
    EmptyDeviceSet,

    /// A byte buffer whose length differs from what its shape and dtype need.
    #[error("buffer has {found} bytes but {expected} were expected")]
    BufferLength {
        /// Bytes expected.
        expected: u64,
        /// Bytes present.
        found: u64,
    },

    /// A typed view of a buffer whose length is not a multiple of the element size.
    #[error("buffer of {len} bytes is not a whole number of {item_size}-byte elements")]
    ViewSize {
        /// Buffer length in bytes.
        len: usize,
        /// Size of the requested element type in bytes.
        item_size: usize,
    },

    /// A typed view of a shared buffer whose start is not aligned for the element type.
    #[error("shared buffer is not aligned to {align} bytes for the requested element type: copy it into an owned buffer first")]
    ViewAlignment {
        /// Alignment the element type needs.
        align: usize,
    },

    /// A request to mutate a read-only (shared) host buffer.
    #[error("host buffer is read-only because it wraps shared bytes: convert it with `into_owned` to write to it")]
    ReadOnlyBuffer,

    /// A host allocation that failed.
    #[error("failed to allocate {bytes} bytes of host memory")]
    AllocationFailed {
        /// Requested size.
        bytes: usize,
    },

    /// A device memory implementation failed to move data to or from a device.
    #[error("device memory operation on device {device} failed")]
    Backend {
        /// The device involved.
        device: DeviceId,
        /// The framework's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A shard on a device that the array's sharding does not use.
    #[error("shard on device {device} is not part of the array's sharding")]
    UnknownShardDevice {
        /// The device of the shard.
        device: DeviceId,
    },

    /// Two shards of one array on the same device.
    #[error("array has two shards on device {device}")]
    DuplicateShard {
        /// The device holding both.
        device: DeviceId,
    },

    /// A shard whose index box differs from the one its sharding assigns to its device.
    #[error("shard on device {device} covers {found} but the sharding assigns {expected}")]
    ShardIndexMismatch {
        /// The device of the shard.
        device: DeviceId,
        /// Box the sharding assigns.
        expected: IndexBox,
        /// Box the shard claims.
        found: IndexBox,
    },

    /// A shard whose replica id differs from the one its sharding assigns to its device.
    #[error("shard on device {device} has replica id {found} but the sharding assigns {expected}")]
    ShardReplicaMismatch {
        /// The device of the shard.
        device: DeviceId,
        /// Replica id the sharding assigns.
        expected: u32,
        /// Replica id the shard claims.
        found: u32,
    },

    /// A shard whose buffer lives on another device than the shard.
    #[error("shard on device {device} has a buffer on device {buffer_device}")]
    ShardBufferDevice {
        /// The device of the shard.
        device: DeviceId,
        /// The device of its buffer.
        buffer_device: DeviceId,
    },

    /// A shard whose buffer length differs from the byte size of its box.
    #[error("shard on device {device} has {found} bytes but its box {index} needs {expected}")]
    ShardLength {
        /// The device of the shard.
        device: DeviceId,
        /// The shard's box.
        index: IndexBox,
        /// Bytes the box needs.
        expected: u64,
        /// Bytes in the buffer.
        found: u64,
    },

    /// An array region that no shard of the array contains.
    #[error("no shard of the array contains the region {index}: collect the shards of every host before assembling the whole array")]
    MissingShard {
        /// The region no shard contains.
        index: IndexBox,
    },

    /// A `_sharding` entry that is not valid JSON.
    #[error("sharding entry is not valid JSON")]
    ShardingJson {
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// A `_sharding` entry with a missing field or a field of the wrong type.
    #[error("sharding entry field {field:?} is missing or invalid: expected {expected}")]
    ShardingJsonField {
        /// Path of the field inside the entry.
        field: &'static str,
        /// Description of the expected value.
        expected: &'static str,
    },

    /// A `_sharding` entry of a sharding type this crate does not read.
    #[error("unsupported sharding type {sharding_type:?}: expected \"NamedSharding\" or \"SingleDeviceSharding\"")]
    UnknownShardingType {
        /// The type as found.
        sharding_type: String,
    },

    /// A mesh axis type other than the ones JAX defines.
    #[error("unknown mesh axis type {axis_type:?}: expected \"AxisType.Auto\", \"AxisType.Explicit\" or \"AxisType.Manual\"")]
    UnknownAxisType {
        /// The type as found.
        axis_type: String,
    },

    /// A `device_str` from which no device id can be read.
    #[error("invalid device string {device_str:?}: expected \"<platform>:<id>\" such as \"cpu:3\", or \"TFRT_CPU_<id>\"")]
    InvalidDeviceString {
        /// The string as found.
        device_str: String,
    },

    /// A `device_mesh` whose nesting does not match the mesh shape.
    #[error("device_mesh does not have the mesh shape {shape:?}: expected nested lists of that shape holding {{\"id\": n}} objects")]
    DeviceMeshLayout {
        /// The mesh shape it should have.
        shape: Vec<usize>,
    },
}
