use std::collections::{BTreeSet, HashMap, HashSet};

use ckpt_core::IndexBox;
use serde::{Deserialize, Serialize};

use crate::{DeviceError, DeviceId, Mesh, PartitionSpec};

/// The layout of an array's elements over devices, after `jax.sharding`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sharding {
    /// Split over the axes of a mesh as a partition spec says (`NamedSharding`).
    Named {
        /// The device mesh.
        mesh: Mesh,
        /// The mesh axes that split each array dimension.
        spec: PartitionSpec,
    },
    /// The whole array on one device (`SingleDeviceSharding`).
    SingleDevice(DeviceId),
    /// A full copy of the array on every device of a set, in the given order.
    Replicated {
        /// The devices, each holding the whole array.
        devices: Vec<DeviceId>,
    },
}

/// The part of an array one device holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceSlice {
    /// The device.
    pub device: DeviceId,
    /// The box of the global array the device holds.
    pub index: IndexBox,
    /// How many devices earlier in the sharding's order hold the same box.
    pub replica_id: u32,
}

impl Sharding {
    /// Creates a named sharding, checking that `spec` names only axes of `mesh`, each once.
    pub fn named(mesh: Mesh, spec: PartitionSpec) -> Result<Sharding, DeviceError> {
        spec.validate(&mesh)?;
        Ok(Sharding::Named { mesh, spec })
    }

    /// Creates a sharding that places the whole array on `device`.
    pub fn single_device(device: DeviceId) -> Sharding {
        Sharding::SingleDevice(device)
    }

    /// Creates a sharding that copies the whole array to every device of a non-empty set.
    pub fn replicated(devices: Vec<DeviceId>) -> Result<Sharding, DeviceError> {
        check_device_set(&devices)?;
        Ok(Sharding::Replicated { devices })
    }

    /// The devices of the sharding in its order: mesh row-major order for a named sharding.
    pub fn devices(&self) -> &[DeviceId] {
        match self {
            Sharding::Named { mesh, .. } => mesh.devices(),
            Sharding::SingleDevice(device) => std::slice::from_ref(device),
            Sharding::Replicated { devices } => devices,
        }
    }

    /// The devices of the sharding as a set.
    pub fn device_set(&self) -> BTreeSet<DeviceId> {
        self.devices().iter().copied().collect()
    }

    /// Returns how many devices hold each element of an array.
    ///
    /// For a named sharding this is the product of the sizes of the mesh
    /// axes the spec does not name. When a dimension is split into more
    /// shards than it has elements, several devices hold an identical empty
    /// box, so their replica ids in [`Sharding::devices_indices_map`] can
    /// reach this count or beyond.
    pub fn num_replicas(&self) -> usize {
        match self {
            Sharding::Named { mesh, spec } => {
                let used: HashSet<&str> = spec.used_axes().collect();
                mesh.shape()
                    .iter()
                    .zip(mesh.axis_names())
                    .filter(|(_, name)| !used.contains(name.as_str()))
                    .map(|(extent, _)| *extent)
                    .product()
            }
            Sharding::SingleDevice(_) => 1,
            Sharding::Replicated { devices } => devices.len(),
        }
    }

    /// Whether every device holds the whole array.
    pub fn is_fully_replicated(&self) -> bool {
        self.num_replicas() == self.devices().len()
    }

    /// Returns the box and replica id of every device, in the sharding's device order.
    ///
    /// This follows JAX's `Sharding.devices_indices_map` and
    /// `Shard.replica_id`. A dimension of extent `dim` split `n` ways has
    /// shards of `ceil(dim / n)` elements, and shard `i` covers
    /// `[min(i * size, dim), min((i + 1) * size, dim))`, so the last shards
    /// may be short or empty. The shard index of a dimension split over
    /// several mesh axes counts the first axis as most significant. A
    /// device's replica id is the number of devices before it in the
    /// sharding's order that hold the same box.
    pub fn devices_indices_map(
        &self,
        global_shape: &[u64],
    ) -> Result<Vec<DeviceSlice>, DeviceError> {
        let boxes = match self {
            Sharding::Named { mesh, spec } => named_boxes(mesh, spec, global_shape)?,
            Sharding::SingleDevice(device) => vec![(*device, IndexBox::full(global_shape))],
            Sharding::Replicated { devices } => {
                check_device_set(devices)?;
                let whole = IndexBox::full(global_shape);
                devices
                    .iter()
                    .map(|&device| (device, whole.clone()))
                    .collect()
            }
        };
        Ok(assign_replica_ids(boxes))
    }
}

fn check_device_set(devices: &[DeviceId]) -> Result<(), DeviceError> {
    if devices.is_empty() {
        return Err(DeviceError::EmptyDeviceSet);
    }
    let mut seen = HashSet::with_capacity(devices.len());
    for &device in devices {
        if !seen.insert(device) {
            return Err(DeviceError::DuplicateDevice { device });
        }
    }
    Ok(())
}

/// Computes each mesh device's box for a named sharding, in mesh order.
fn named_boxes(
    mesh: &Mesh,
    spec: &PartitionSpec,
    global_shape: &[u64],
) -> Result<Vec<(DeviceId, IndexBox)>, DeviceError> {
    spec.validate(mesh)?;
    let dims = spec.padded(global_shape.len())?;

    // For each array dimension: the mesh axes splitting it, major to minor,
    // and the extent of one shard.
    let mut split_axes: Vec<Vec<usize>> = Vec::with_capacity(dims.len());
    let mut shard_sizes: Vec<u64> = Vec::with_capacity(dims.len());
    for (dim, &extent) in dims.iter().zip(global_shape) {
        let axes: Vec<usize> = dim
            .axis_names()
            .iter()
            .filter_map(|name| mesh.axis_index(name))
            .collect();
        // The product of distinct mesh extents divides the device count, so it fits in u64.
        let num_shards: u64 = axes.iter().map(|&axis| mesh.shape()[axis] as u64).product();
        shard_sizes.push(extent.div_ceil(num_shards));
        split_axes.push(axes);
    }

    let mut boxes = Vec::with_capacity(mesh.devices().len());
    for (flat, &device) in mesh.devices().iter().enumerate() {
        let coordinates = mesh.coordinates(flat);
        let mut start = Vec::with_capacity(global_shape.len());
        let mut stop = Vec::with_capacity(global_shape.len());
        for ((axes, &size), &extent) in split_axes.iter().zip(&shard_sizes).zip(global_shape) {
            let shard = axes.iter().fold(0u64, |index, &axis| {
                index * mesh.shape()[axis] as u64 + coordinates[axis] as u64
            });
            start.push(clamped_product(shard, size, extent));
            stop.push(clamped_product(shard + 1, size, extent));
        }
        boxes.push((device, IndexBox::new(start, stop)?));
    }
    Ok(boxes)
}

/// Returns `min(shard * size, extent)`, treating an overflowing product as past `extent`.
fn clamped_product(shard: u64, size: u64, extent: u64) -> u64 {
    shard
        .checked_mul(size)
        .map_or(extent, |offset| offset.min(extent))
}

fn assign_replica_ids(boxes: Vec<(DeviceId, IndexBox)>) -> Vec<DeviceSlice> {
    let mut holders: HashMap<IndexBox, u32> = HashMap::new();
    boxes
        .into_iter()
        .map(|(device, index)| {
            let count = holders.entry(index.clone()).or_insert(0);
            let replica_id = *count;
            *count += 1;
            DeviceSlice {
                device,
                index,
                replica_id,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::PartitionDim;

    fn ids(count: u32) -> Vec<DeviceId> {
        (0..count).map(DeviceId).collect()
    }

    fn ibox(start: &[u64], stop: &[u64]) -> IndexBox {
        IndexBox::new(start.to_vec(), stop.to_vec()).unwrap()
    }

    fn mesh_4x2() -> Mesh {
        Mesh::new(vec![4, 2], ["x", "y"], ids(8)).unwrap()
    }

    #[test]
    fn named_2d_boxes() {
        let sharding =
            Sharding::named(mesh_4x2(), PartitionSpec::new([Some("x"), Some("y")])).unwrap();
        let map = sharding.devices_indices_map(&[16, 8]).unwrap();
        assert_eq!(map.len(), 8);
        assert_eq!(map[0].index, ibox(&[0, 0], &[4, 4]));
        assert_eq!(map[1].index, ibox(&[0, 4], &[4, 8]));
        assert_eq!(map[5].index, ibox(&[8, 4], &[12, 8]));
        assert_eq!(map[7].device, DeviceId(7));
        assert!(map.iter().all(|slice| slice.replica_id == 0));
    }

    #[test]
    fn named_rows_replicated_over_y() {
        let sharding = Sharding::named(mesh_4x2(), PartitionSpec::new([Some("x"), None])).unwrap();
        let map = sharding.devices_indices_map(&[4, 2]).unwrap();
        assert_eq!(map[2].index, ibox(&[1, 0], &[2, 2]));
        assert_eq!(map[3].index, ibox(&[1, 0], &[2, 2]));
        assert_eq!(map[2].replica_id, 0);
        assert_eq!(map[3].replica_id, 1);
        assert_eq!(sharding.num_replicas(), 2);
    }

    #[test]
    fn multi_axis_is_major_to_minor() {
        let spec = PartitionSpec::from_dims([PartitionDim::axes(["y", "x"])]);
        let sharding = Sharding::named(mesh_4x2(), spec).unwrap();
        let map = sharding.devices_indices_map(&[8]).unwrap();
        // Device 2 sits at mesh (x=1, y=0): shard index y * 4 + x = 1.
        assert_eq!(map[2].index, ibox(&[1], &[2]));
        // Device 1 sits at mesh (x=0, y=1): shard index 4.
        assert_eq!(map[1].index, ibox(&[4], &[5]));
    }

    #[test]
    fn uneven_last_shard() {
        let mesh = Mesh::new(vec![4], ["x"], ids(4)).unwrap();
        let sharding = Sharding::named(mesh, PartitionSpec::new([Some("x")])).unwrap();
        let map = sharding.devices_indices_map(&[5]).unwrap();
        let boxes: Vec<IndexBox> = map.iter().map(|slice| slice.index.clone()).collect();
        assert_eq!(
            boxes,
            vec![
                ibox(&[0], &[2]),
                ibox(&[2], &[4]),
                ibox(&[4], &[5]),
                ibox(&[5], &[5])
            ]
        );
    }

    #[test]
    fn identical_empty_boxes_count_as_replicas() {
        let mesh = Mesh::new(vec![4], ["x"], ids(4)).unwrap();
        let sharding = Sharding::named(mesh, PartitionSpec::new([Some("x")])).unwrap();
        let map = sharding.devices_indices_map(&[1]).unwrap();
        let replica_ids: Vec<u32> = map.iter().map(|slice| slice.replica_id).collect();
        assert_eq!(replica_ids, vec![0, 0, 1, 2]);
    }

    #[test]
    fn zero_size_dimension() {
        let sharding =
            Sharding::named(mesh_4x2(), PartitionSpec::new([Some("x"), Some("y")])).unwrap();
        let map = sharding.devices_indices_map(&[0, 8]).unwrap();
        assert!(map.iter().all(|slice| slice.index.is_empty()));
        assert_eq!(map[1].index, ibox(&[0, 4], &[0, 8]));
    }

    #[test]
    fn scalar_is_replicated() {
        let sharding = Sharding::named(mesh_4x2(), PartitionSpec::replicated()).unwrap();
        let map = sharding.devices_indices_map(&[]).unwrap();
        assert_eq!(map[5].index, IndexBox::full(&[]));
        assert_eq!(map[5].replica_id, 5);
    }

    #[test]
    fn spec_longer_than_rank() {
        let sharding =
            Sharding::named(mesh_4x2(), PartitionSpec::new([Some("x"), Some("y")])).unwrap();
        let err = sharding.devices_indices_map(&[8]).unwrap_err();
        assert!(matches!(err, DeviceError::SpecTooLong { .. }));
    }

    #[test]
    fn named_rejects_unknown_axis() {
        let err = Sharding::named(mesh_4x2(), PartitionSpec::new([Some("z")])).unwrap_err();
        assert!(matches!(err, DeviceError::UnknownAxis { .. }));
    }

    #[test]
    fn map_revalidates_spec() {
        // The variant is public, so a spec built without `Sharding::named` is checked on use.
        let sharding = Sharding::Named {
            mesh: mesh_4x2(),
            spec: PartitionSpec::new([Some("x"), Some("x")]),
        };
        let err = sharding.devices_indices_map(&[4, 4]).unwrap_err();
        assert!(matches!(err, DeviceError::AxisUsedTwice { .. }));
    }

    #[test]
    fn single_device_holds_everything() {
        let sharding = Sharding::single_device(DeviceId(3));
        let map = sharding.devices_indices_map(&[3, 5]).unwrap();
        assert_eq!(map.len(), 1);
        assert_eq!(map[0].device, DeviceId(3));
        assert_eq!(map[0].index, ibox(&[0, 0], &[3, 5]));
        assert!(sharding.is_fully_replicated());
    }

    #[test]
    fn replicated_replica_ids() {
        let sharding = Sharding::replicated(vec![DeviceId(4), DeviceId(1)]).unwrap();
        let map = sharding.devices_indices_map(&[2]).unwrap();
        assert_eq!(map[0].replica_id, 0);
        assert_eq!(map[1].device, DeviceId(1));
        assert_eq!(map[1].replica_id, 1);
        assert!(sharding.is_fully_replicated());
        assert_eq!(sharding.num_replicas(), 2);
    }

    #[test]
    fn replicated_rejects_empty_set() {
        let err = Sharding::replicated(Vec::new()).unwrap_err();
        assert!(matches!(err, DeviceError::EmptyDeviceSet));
    }

    #[test]
    fn replicated_rejects_duplicate() {
        let err = Sharding::replicated(vec![DeviceId(1), DeviceId(1)]).unwrap_err();
        assert!(matches!(err, DeviceError::DuplicateDevice { .. }));
    }

    #[test]
    fn fully_replicated_named() {
        let replicated = Sharding::named(mesh_4x2(), PartitionSpec::replicated()).unwrap();
        assert!(replicated.is_fully_replicated());
        let split = Sharding::named(mesh_4x2(), PartitionSpec::new([Some("y")])).unwrap();
        assert!(!split.is_fully_replicated());
        let size_one = Mesh::new(vec![1, 8], ["a", "b"], ids(8)).unwrap();
        let trivial = Sharding::named(size_one, PartitionSpec::new([Some("a")])).unwrap();
        assert!(trivial.is_fully_replicated());
    }

    #[test]
    fn device_set_is_sorted() {
        let sharding = Sharding::replicated(vec![DeviceId(4), DeviceId(1)]).unwrap();
        let set: Vec<DeviceId> = sharding.device_set().into_iter().collect();
        assert_eq!(set, vec![DeviceId(1), DeviceId(4)]);
    }

    /// Generates a mesh of 1 to 3 axes, a valid spec over it and an array shape.
    fn sharding_and_shape() -> impl Strategy<Value = (Sharding, Vec<u64>)> {
        let mesh_shape = prop::collection::vec(1usize..4, 1..=3);
        let rank = 0usize..4;
        (mesh_shape, rank)
            .prop_flat_map(|(mesh_shape, rank)| {
                let axes = mesh_shape.len();
                // For every axis: the array dimension it splits (rank means unused)
                // and a sort key that orders axes within a dimension.
                let assignment = prop::collection::vec((0..=rank, any::<u8>()), axes);
                let shape = prop::collection::vec(0u64..10, rank);
                let device_count = mesh_shape.iter().product::<usize>();
                let permutation = Just((0..device_count).collect::<Vec<_>>()).prop_shuffle();
                let trim = any::<bool>();
                (
                    Just(mesh_shape),
                    Just(rank),
                    assignment,
                    shape,
                    permutation,
                    trim,
                )
            })
            .prop_map(|(mesh_shape, rank, assignment, shape, permutation, trim)| {
                let names: Vec<String> = (0..mesh_shape.len())
                    .map(|axis| format!("a{axis}"))
                    .collect();
                let devices = permutation
                    .into_iter()
                    .map(|id| DeviceId(id as u32 * 3))
                    .collect();
                let mesh = Mesh::new(mesh_shape, names.clone(), devices).unwrap();
                let mut dims = Vec::with_capacity(rank);
                for dim in 0..rank {
                    let mut axes: Vec<(u8, &String)> = assignment
                        .iter()
                        .zip(&names)
                        .filter(|((target, _), _)| *target == dim)
                        .map(|((_, key), name)| (*key, name))
                        .collect();
                    axes.sort();
                    let dim = match axes.as_slice() {
                        [] => PartitionDim::Unsharded,
                        [(_, name)] => PartitionDim::axis(name.as_str()),
                        _ => PartitionDim::axes(axes.iter().map(|(_, name)| name.as_str())),
                    };
                    dims.push(dim);
                }
                // Drop trailing unsharded entries some of the time, as JAX allows.
                while trim && dims.last() == Some(&PartitionDim::Unsharded) {
                    dims.pop();
                }
                let sharding = Sharding::named(mesh, PartitionSpec::from_dims(dims)).unwrap();
                (sharding, shape)
            })
    }

    proptest! {
        #[test]
        fn replicas_tile_the_array((sharding, shape) in sharding_and_shape()) {
            let map = sharding.devices_indices_map(&shape).unwrap();
            let total = ckpt_core::num_elements(&shape).unwrap();
            let replicas = sharding.num_replicas();
            prop_assert_eq!(map.len(), sharding.devices().len());

            for replica in 0..replicas as u32 {
                let boxes: Vec<&IndexBox> = map
                    .iter()
                    .filter(|slice| slice.replica_id == replica)
                    .map(|slice| &slice.index)
                    .collect();
                let covered: u64 = boxes.iter().map(|b| b.num_elements().unwrap()).sum();
                prop_assert_eq!(covered, total, "replica {} covers {} of {} elements", replica, covered, total);
                for (i, a) in boxes.iter().enumerate() {
                    prop_assert!(IndexBox::full(&shape).contains(a));
                    for b in &boxes[i + 1..] {
                        let overlap = a.intersect(b).filter(|overlap| !overlap.is_empty());
                        prop_assert!(overlap.is_none(), "replica {} boxes {} and {} overlap", replica, a, b);
                    }
                }
            }

            // Replica ids past the replication count only arise for empty boxes.
            for slice in map.iter().filter(|slice| slice.replica_id as usize >= replicas) {
                prop_assert!(slice.index.is_empty(), "{:?}", slice);
            }
        }
    }
}
