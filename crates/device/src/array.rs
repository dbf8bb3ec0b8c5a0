use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ckpt_core::{copy_region, num_bytes, num_bytes_usize, DType, IndexBox};

use crate::{DeviceBuffer, DeviceError, DeviceId, DeviceMemory, DeviceSlice, HostBuffer, Sharding};

/// The part of an array held on one device, with the buffer holding its bytes.
#[derive(Clone, Debug)]
pub struct Shard {
    device: DeviceId,
    index: IndexBox,
    replica_id: u32,
    buffer: Arc<dyn DeviceBuffer>,
}

impl Shard {
    /// Creates a shard as given. [`Array::from_shards`] checks it against the array's sharding.
    pub fn new(
        device: DeviceId,
        index: IndexBox,
        replica_id: u32,
        buffer: Arc<dyn DeviceBuffer>,
    ) -> Shard {
        Shard {
            device,
            index,
            replica_id,
            buffer,
        }
    }

    /// The device holding the shard.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// The box of the global array the shard covers.
    pub fn index(&self) -> &IndexBox {
        &self.index
    }

    /// The number of devices earlier in the sharding's order that hold the same box.
    pub fn replica_id(&self) -> u32 {
        self.replica_id
    }

    /// The device buffer holding the shard's elements in C order.
    pub fn buffer(&self) -> &Arc<dyn DeviceBuffer> {
        &self.buffer
    }
}

/// A global array laid out over devices, with the shards addressable in this process.
///
/// The shards are those of all devices, or only those of one host's devices
/// in a multi-process deployment. Every shard has been checked against the
/// sharding: its box and replica id are the ones the sharding assigns to its
/// device, and its buffer lives on that device with the box's byte size.
#[derive(Clone, Debug)]
pub struct Array {
    shape: Vec<u64>,
    dtype: DType,
    sharding: Sharding,
    shards: Vec<Shard>,
    byte_len: u64,
}

impl Array {
    /// Creates an array from shards built elsewhere, checking each against `sharding`.
    ///
    /// Shards are kept in the sharding's device order whatever their order in `shards`.
    pub fn from_shards(
        shape: Vec<u64>,
        dtype: DType,
        sharding: Sharding,
        shards: Vec<Shard>,
    ) -> Result<Array, DeviceError> {
        let byte_len = num_bytes(&shape, dtype)?;
        let map = sharding.devices_indices_map(&shape)?;
        let position: HashMap<DeviceId, usize> = map
            .iter()
            .enumerate()
            .map(|(index, slice)| (slice.device, index))
            .collect();

        let mut seen = HashSet::with_capacity(shards.len());
        for shard in &shards {
            let Some(&index) = position.get(&shard.device) else {
                return Err(DeviceError::UnknownShardDevice {
                    device: shard.device,
                });
            };
            if !seen.insert(shard.device) {
                return Err(DeviceError::DuplicateShard {
                    device: shard.device,
                });
            }
            check_shard(shard, &map[index], dtype)?;
        }

        let mut shards = shards;
        shards.sort_by_key(|shard| position.get(&shard.device).copied());
        Ok(Array {
            shape,
            dtype,
            sharding,
            shards,
            byte_len,
        })
    }

    /// Creates an array by slicing C-order `bytes` of the whole array into each addressable device's box.
    ///
    /// `addressable` selects the devices to create shards for, such as the
    /// devices of this host. Each shard is built in a [`HostBuffer`] and
    /// placed on its device with `memory`.
    pub fn from_global_bytes(
        shape: Vec<u64>,
        dtype: DType,
        sharding: Sharding,
        bytes: &[u8],
        memory: &dyn DeviceMemory,
        addressable: impl Fn(DeviceId) -> bool,
    ) -> Result<Array, DeviceError> {
        let expected = num_bytes(&shape, dtype)?;
        if expected != bytes.len() as u64 {
            return Err(DeviceError::BufferLength {
                expected,
                found: bytes.len() as u64,
            });
        }
        let whole = IndexBox::full(&shape);
        let item_size = dtype.item_size();
        Array::try_from_fn(shape, dtype, sharding, memory, addressable, |index, out| {
            copy_region(bytes, &whole, out, index, index, item_size)?;
            Ok(())
        })
    }

    /// Creates an array whose addressable shards `fill` writes, one box at a time.
    ///
    /// `fill` receives each shard's box and a zeroed buffer of the box's byte
    /// size, to fill with the box's elements in C order. Use it to generate
    /// data on the host that owns it, without ever building the whole array.
    pub fn from_fn(
        shape: Vec<u64>,
        dtype: DType,
        sharding: Sharding,
        memory: &dyn DeviceMemory,
        addressable: impl Fn(DeviceId) -> bool,
        mut fill: impl FnMut(&IndexBox, &mut [u8]),
    ) -> Result<Array, DeviceError> {
        Array::try_from_fn(shape, dtype, sharding, memory, addressable, |index, out| {
            fill(index, out);
            Ok(())
        })
    }

    /// Creates an array as [`Array::from_fn`] does, stopping at the first error of `fill`.
    pub fn try_from_fn(
        shape: Vec<u64>,
        dtype: DType,
        sharding: Sharding,
        memory: &dyn DeviceMemory,
        addressable: impl Fn(DeviceId) -> bool,
        mut fill: impl FnMut(&IndexBox, &mut [u8]) -> Result<(), DeviceError>,
    ) -> Result<Array, DeviceError> {
        num_bytes(&shape, dtype)?;
        let map = sharding.devices_indices_map(&shape)?;
        let mut shards = Vec::new();
        for slice in map.into_iter().filter(|slice| addressable(slice.device)) {
            let len = num_bytes_usize(&slice.index.shape(), dtype)?;
            let mut data = HostBuffer::zeroed(len)?;
            fill(&slice.index, data.as_bytes_mut()?)?;
            let buffer = memory.upload(slice.device, data)?;
            shards.push(Shard::new(
                slice.device,
                slice.index,
                slice.replica_id,
                buffer,
            ));
        }
        Array::from_shards(shape, dtype, sharding, shards)
    }

    /// Assembles the C-order bytes of the whole array from its shards.
    ///
    /// Fails with [`DeviceError::MissingShard`] when the shards held here do
    /// not cover the array, as when they are one host's share of it.
    pub fn to_global_bytes(&self) -> Result<Vec<u8>, DeviceError> {
        let len = num_bytes_usize(&self.shape, self.dtype)?;
        let mut out = Vec::new();
        out.try_reserve_exact(len)
            .map_err(|_| DeviceError::AllocationFailed { bytes: len })?;
        out.resize(len, 0);

        // The distinct non-empty boxes of the sharding tile the array, so
        // filling each once from any shard holding it fills every element.
        let mut holders: HashMap<&IndexBox, &Shard> = HashMap::new();
        for shard in &self.shards {
            holders.entry(&shard.index).or_insert(shard);
        }
        let whole = IndexBox::full(&self.shape);
        let item_size = self.dtype.item_size();
        let mut filled = HashSet::new();
        for slice in self.sharding.devices_indices_map(&self.shape)? {
            if slice.index.is_empty() || filled.contains(&slice.index) {
                continue;
            }
            let Some(shard) = holders.get(&slice.index) else {
                return Err(DeviceError::MissingShard { index: slice.index });
            };
            let host_copy;
            let bytes = match shard.buffer.host_bytes() {
                Some(bytes) => bytes,
                None => {
                    host_copy = shard.buffer.to_host_buffer()?;
                    host_copy.as_bytes()
                }
            };
            copy_region(
                bytes,
                &shard.index,
                &mut out,
                &whole,
                &shard.index,
                item_size,
            )?;
            filled.insert(slice.index);
        }
        Ok(out)
    }

    /// The global shape.
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The layout of the array over devices.
    pub fn sharding(&self) -> &Sharding {
        &self.sharding
    }

    /// The shards held here, in the sharding's device order.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// Returns the shard on `device`, if it is held here.
    pub fn shard(&self, device: DeviceId) -> Option<&Shard> {
        self.shards.iter().find(|shard| shard.device == device)
    }

    /// Byte size of the whole array.
    pub fn num_bytes(&self) -> u64 {
        self.byte_len
    }
}

fn check_shard(shard: &Shard, assigned: &DeviceSlice, dtype: DType) -> Result<(), DeviceError> {
    let device = shard.device;
    if shard.index != assigned.index {
        return Err(DeviceError::ShardIndexMismatch {
            device,
            expected: assigned.index.clone(),
            found: shard.index.clone(),
        });
    }
    if shard.replica_id != assigned.replica_id {
        return Err(DeviceError::ShardReplicaMismatch {
            device,
            expected: assigned.replica_id,
            found: shard.replica_id,
        });
    }
    let buffer_device = shard.buffer.device();
    if buffer_device != device {
        return Err(DeviceError::ShardBufferDevice {
            device,
            buffer_device,
        });
    }
    let expected = num_bytes(&shard.index.shape(), dtype)?;
    let found = shard.buffer.len() as u64;
    if expected != found {
        return Err(DeviceError::ShardLength {
            device,
            index: shard.index.clone(),
            expected,
            found,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{HostMemory, Mesh, PartitionDim, PartitionSpec, Topology};

    fn ids(count: u32) -> Vec<DeviceId> {
        (0..count).map(DeviceId).collect()
    }

    fn sharding_4x2(spec: PartitionSpec) -> Sharding {
        let mesh = Mesh::new(vec![4, 2], ["x", "y"], ids(8)).unwrap();
        Sharding::named(mesh, spec).unwrap()
    }

    fn arange(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn host_shard(device: u32, index: IndexBox, replica_id: u32, len: usize) -> Shard {
        let buffer = HostMemory
            .upload(DeviceId(device), HostBuffer::zeroed(len).unwrap())
            .unwrap();
        Shard::new(DeviceId(device), index, replica_id, buffer)
    }

    #[test]
    fn global_bytes_round_trip() {
        let sharding = sharding_4x2(PartitionSpec::new([Some("x"), Some("y")]));
        let bytes = arange(16 * 8 * 4);
        let array = Array::from_global_bytes(
            vec![16, 8],
            DType::Float32,
            sharding,
            &bytes,
            &HostMemory,
            |_| true,
        )
        .unwrap();
        assert_eq!(array.shards().len(), 8);
        assert_eq!(array.to_global_bytes().unwrap(), bytes);
    }

    #[test]
    fn shard_holds_its_box() {
        let sharding = sharding_4x2(PartitionSpec::new([None, Some("y")]));
        let bytes: Vec<u8> = (0..8).collect();
        let array = Array::from_global_bytes(
            vec![2, 4],
            DType::UInt8,
            sharding,
            &bytes,
            &HostMemory,
            |_| true,
        )
        .unwrap();
        let shard = array.shard(DeviceId(1)).unwrap();
        assert_eq!(
            shard.index(),
            &IndexBox::new(vec![0, 2], vec![2, 4]).unwrap()
        );
        assert_eq!(shard.buffer().host_bytes(), Some(&[2u8, 3, 6, 7][..]));
        assert_eq!(array.shard(DeviceId(3)).unwrap().replica_id(), 1);
    }

    #[test]
    fn one_host_addressable() {
        let topology = Topology::uniform(2, 4).unwrap();
        let sharding = sharding_4x2(PartitionSpec::new([Some("x")]));
        let bytes = arange(8 * 3);
        let array = Array::from_global_bytes(
            vec![8, 3],
            DType::UInt8,
            sharding,
            &bytes,
            &HostMemory,
            |device| topology.host_of(device) == Some(1),
        )
        .unwrap();
        let devices: Vec<DeviceId> = array.shards().iter().map(Shard::device).collect();
        assert_eq!(devices, topology.host_devices(1));
        let err = array.to_global_bytes().unwrap_err();
        assert!(matches!(err, DeviceError::MissingShard { .. }));
    }

    #[test]
    fn replicated_needs_one_copy() {
        let sharding = sharding_4x2(PartitionSpec::new([None, Some("y")]));
        let bytes = arange(3 * 6 * 2);
        // Devices 6 and 7 alone hold both column halves.
        let array = Array::from_global_bytes(
            vec![3, 6],
            DType::Int16,
            sharding,
            &bytes,
            &HostMemory,
            |device| device.0 >= 6,
        )
        .unwrap();
        assert_eq!(array.to_global_bytes().unwrap(), bytes);
    }

    #[test]
    fn global_bytes_wrong_length() {
        let sharding = Sharding::single_device(DeviceId(0));
        let err = Array::from_global_bytes(
            vec![4],
            DType::Float32,
            sharding,
            &[0; 15],
            &HostMemory,
            |_| true,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            DeviceError::BufferLength {
                expected: 16,
                found: 15
            }
        ));
    }

    #[test]
    fn shape_overflow_rejected() {
        let sharding = Sharding::single_device(DeviceId(0));
        let err = Array::from_fn(
            vec![u64::MAX, 4],
            DType::Float32,
            sharding,
            &HostMemory,
            |_| true,
            |_, _| {},
        )
        .unwrap_err();
        assert!(matches!(err, DeviceError::Core(_)));
    }

    #[test]
    fn from_fn_fills_each_box() {
        let sharding = sharding_4x2(PartitionSpec::new([Some("x"), Some("y")]));
        let array = Array::from_fn(
            vec![4, 2],
            DType::UInt8,
            sharding,
            &HostMemory,
            |_| true,
            |index, out| {
                // Each element is its row * 10 + column.
                out[0] = (index.start()[0] * 10 + index.start()[1]) as u8;
            },
        )
        .unwrap();
        assert_eq!(
            array.to_global_bytes().unwrap(),
            vec![0, 1, 10, 11, 20, 21, 30, 31]
        );
    }

    #[test]
    fn empty_and_scalar_arrays() {
        let sharding = sharding_4x2(PartitionSpec::new([Some("x"), Some("y")]));
        let array = Array::from_global_bytes(
            vec![0, 8],
            DType::Float64,
            sharding,
            &[],
            &HostMemory,
            |_| true,
        )
        .unwrap();
        assert!(array.shards().iter().all(|shard| shard.buffer().is_empty()));
        assert_eq!(array.to_global_bytes().unwrap(), Vec::<u8>::new());

        let replicated = sharding_4x2(PartitionSpec::replicated());
        let scalar = Array::from_global_bytes(
            vec![],
            DType::Int32,
            replicated,
            &[1, 2, 3, 4],
            &HostMemory,
            |_| true,
        )
        .unwrap();
        assert_eq!(scalar.to_global_bytes().unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(scalar.num_bytes(), 4);
    }

    #[test]
    fn from_shards_sorts_by_device_order() {
        let sharding = Sharding::replicated(vec![DeviceId(5), DeviceId(2)]).unwrap();
        let whole = IndexBox::full(&[2]);
        let shards = vec![
            host_shard(2, whole.clone(), 1, 2),
            host_shard(5, whole, 0, 2),
        ];
        let array = Array::from_shards(vec![2], DType::UInt8, sharding, shards).unwrap();
        assert_eq!(array.shards()[0].device(), DeviceId(5));
    }

    #[test]
    fn from_shards_unknown_device() {
        let sharding = Sharding::single_device(DeviceId(0));
        let shards = vec![host_shard(1, IndexBox::full(&[2]), 0, 2)];
        let err = Array::from_shards(vec![2], DType::UInt8, sharding, shards).unwrap_err();
        assert!(matches!(
            err,
            DeviceError::UnknownShardDevice {
                device: DeviceId(1)
            }
        ));
    }

    #[test]
    fn from_shards_duplicate() {
        let sharding = Sharding::single_device(DeviceId(0));
        let shards = vec![
            host_shard(0, IndexBox::full(&[2]), 0, 2),
            host_shard(0, IndexBox::full(&[2]), 0, 2),
        ];
        let err = Array::from_shards(vec![2], DType::UInt8, sharding, shards).unwrap_err();
        assert!(matches!(
            err,
            DeviceError::DuplicateShard {
                device: DeviceId(0)
            }
        ));
    }

    #[test]
    fn from_shards_wrong_box() {
        let sharding = Sharding::single_device(DeviceId(0));
        let shards = vec![host_shard(
            0,
            IndexBox::new(vec![0], vec![1]).unwrap(),
            0,
            1,
        )];
        let err = Array::from_shards(vec![2], DType::UInt8, sharding, shards).unwrap_err();
        assert!(matches!(err, DeviceError::ShardIndexMismatch { .. }));
    }

    #[test]
    fn from_shards_wrong_replica() {
        let sharding = Sharding::single_device(DeviceId(0));
        let shards = vec![host_shard(0, IndexBox::full(&[2]), 1, 2)];
        let err = Array::from_shards(vec![2], DType::UInt8, sharding, shards).unwrap_err();
        assert!(matches!(
            err,
            DeviceError::ShardReplicaMismatch {
                expected: 0,
                found: 1,
                ..
            }
        ));
    }

    #[test]
    fn from_shards_buffer_on_other_device() {
        let sharding = Sharding::single_device(DeviceId(0));
        let buffer = HostMemory
            .upload(DeviceId(3), HostBuffer::zeroed(2).unwrap())
            .unwrap();
        let shards = vec![Shard::new(DeviceId(0), IndexBox::full(&[2]), 0, buffer)];
        let err = Array::from_shards(vec![2], DType::UInt8, sharding, shards).unwrap_err();
        assert!(matches!(
            err,
            DeviceError::ShardBufferDevice {
                buffer_device: DeviceId(3),
                ..
            }
        ));
    }

    #[test]
    fn from_shards_wrong_length() {
        let sharding = Sharding::single_device(DeviceId(0));
        let shards = vec![host_shard(0, IndexBox::full(&[2]), 0, 7)];
        let err = Array::from_shards(vec![2], DType::Float32, sharding, shards).unwrap_err();
        assert!(matches!(
            err,
            DeviceError::ShardLength {
                expected: 8,
                found: 7,
                ..
            }
        ));
    }

    #[test]
    fn try_from_fn_stops_at_error() {
        let sharding = sharding_4x2(PartitionSpec::new([Some("x")]));
        let mut calls = 0;
        let err = Array::try_from_fn(
            vec![4],
            DType::UInt8,
            sharding,
            &HostMemory,
            |_| true,
            |_, _| {
                calls += 1;
                Err(DeviceError::ReadOnlyBuffer)
            },
        )
        .unwrap_err();
        assert!(matches!(err, DeviceError::ReadOnlyBuffer));
        assert_eq!(calls, 1);
    }

    #[test]
    fn upload_error_propagates() {
        #[derive(Debug)]
        struct FullMemory;
        impl DeviceMemory for FullMemory {
            fn upload(
                &self,
                device: DeviceId,
                _: HostBuffer,
            ) -> Result<Arc<dyn DeviceBuffer>, DeviceError> {
                Err(DeviceError::Backend {
                    device,
                    source: "out of device memory".into(),
                })
            }
        }
        let sharding = Sharding::single_device(DeviceId(2));
        let err =
            Array::from_global_bytes(vec![1], DType::UInt8, sharding, &[0], &FullMemory, |_| true)
                .unwrap_err();
        assert!(matches!(
            err,
            DeviceError::Backend {
                device: DeviceId(2),
                ..
            }
        ));
    }

    /// Generates a mesh of 1 to 3 axes, a spec splitting some dimensions over some axes, a shape and a dtype.
    fn array_case() -> impl Strategy<Value = (Sharding, Vec<u64>, DType)> {
        let mesh_shape = prop::collection::vec(1usize..4, 1..=3);
        let shape = prop::collection::vec(0u64..9, 0..4);
        (mesh_shape, shape)
            .prop_flat_map(|(mesh_shape, shape)| {
                let targets = prop::collection::vec(0..=shape.len(), mesh_shape.len());
                let dtype = prop::sample::select(DType::ALL.to_vec());
                (Just(mesh_shape), Just(shape), targets, dtype)
            })
            .prop_map(|(mesh_shape, shape, targets, dtype)| {
                let names: Vec<String> = (0..mesh_shape.len())
                    .map(|axis| format!("m{axis}"))
                    .collect();
                let devices = (0..mesh_shape.iter().product::<usize>() as u32)
                    .rev()
                    .map(DeviceId)
                    .collect();
                let mesh = Mesh::new(mesh_shape, names.clone(), devices).unwrap();
                let dims = (0..shape.len()).map(|dim| {
                    let axes: Vec<&String> = names
                        .iter()
                        .zip(&targets)
                        .filter(|(_, t)| **t == dim)
                        .map(|(n, _)| n)
                        .collect();
                    PartitionDim::axes(axes.into_iter().cloned())
                });
                let sharding = Sharding::named(mesh, PartitionSpec::from_dims(dims)).unwrap();
                (sharding, shape, dtype)
            })
    }

    proptest! {
        #[test]
        fn global_bytes_round_trip_random((sharding, shape, dtype) in array_case(), seed in any::<u8>()) {
            let len = num_bytes_usize(&shape, dtype).unwrap();
            let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            let array = Array::from_global_bytes(shape, dtype, sharding, &bytes, &HostMemory, |_| true).unwrap();
            prop_assert_eq!(array.to_global_bytes().unwrap(), bytes);
        }
    }
}
