//! Devices, meshes and shardings with JAX's semantics, and arrays whose shards live on devices.
//!
//! ckpt saves and restores arrays split over the devices of many hosts. This
//! crate models that layout the way JAX does, so that a checkpoint written
//! by Orbax and one written by ckpt agree on which device holds which part
//! of an array:
//!
//! - [`Topology`] lists the hosts (processes) and the [`Device`]s local to each.
//! - [`Mesh`] arranges devices in a named grid, and a [`PartitionSpec`] says
//!   which mesh axes split each array dimension.
//! - [`Sharding`] combines them (or places an array on one device, or copies
//!   it to a set of devices). [`Sharding::devices_indices_map`] returns each
//!   device's box of the array and its replica id, and
//!   [`Sharding::to_orbax_json`] and [`Sharding::from_orbax_json`] convert
//!   to and from the text Orbax stores in a checkpoint's `_sharding` file.
//! - [`Array`] is a global shape, dtype and sharding with the [`Shard`]s
//!   held in this process, each in a [`DeviceBuffer`].
//! - [`DeviceMemory`] is the trait a framework implements to move bytes
//!   between host memory ([`HostBuffer`]) and its devices. [`HostMemory`]
//!   implements it with host memory, which simulates devices.
//!
//! The crate does no I/O. Storage reads and writes boxes of arrays, and
//! resharding on restore copies between boxes with [`ckpt_core::copy_region`].
//!
//! # Example
//!
//! ```
//! use ckpt_core::DType;
//! use ckpt_device::{Array, DeviceId, HostMemory, Mesh, PartitionSpec, Sharding};
//!
//! # fn main() -> Result<(), ckpt_device::DeviceError> {
//! // Eight devices in a 4x2 mesh; rows split over "x", columns over "y".
//! let devices = (0..8).map(DeviceId).collect();
//! let mesh = Mesh::new(vec![4, 2], ["x", "y"], devices)?;
//! let sharding = Sharding::named(mesh, PartitionSpec::new([Some("x"), Some("y")]))?;
//!
//! for slice in sharding.devices_indices_map(&[16, 8])? {
//!     println!("device {} holds {} (replica {})", slice.device, slice.index, slice.replica_id);
//! }
//!
//! // Slice a 16x8 array of f32 over the devices and reassemble it.
//! let values: Vec<f32> = (0..128).map(|i| i as f32).collect();
//! let bytes: &[u8] = bytemuck::cast_slice(&values);
//! let array = Array::from_global_bytes(vec![16, 8], DType::Float32, sharding, bytes, &HostMemory, |_| true)?;
//! assert_eq!(array.shards()[3].index().to_string(), "[4:8, 4:8]");
//! assert_eq!(array.to_global_bytes()?, bytes);
//! # Ok(())
//! # }
//! ```

mod array;
mod error;
mod host_buffer;
mod memory;
mod mesh;
mod orbax_json;
mod sharding;
mod spec;
mod topology;

pub use crate::{
    array::{Array, Shard},
    error::DeviceError,
    host_buffer::{HostBuffer, SharedBytes, HOST_BUFFER_ALIGN},
    memory::{DeviceBuffer, DeviceMemory, HostDeviceBuffer, HostMemory},
    mesh::{AxisType, Mesh},
    sharding::{DeviceSlice, Sharding},
    spec::{PartitionDim, PartitionSpec},
    topology::{Device, DeviceId, Topology},
};
