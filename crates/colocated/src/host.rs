use std::{borrow::Cow, collections::HashMap, sync::Arc};

use bytes::Bytes;
use ckpt_core::{copy_region, num_bytes_usize, CastKind, IndexBox};
use ckpt_device::{Array, DeviceMemory, HostBuffer, HostDeviceBuffer, Shard, Topology};
use ckpt_storage::{ArrayFormat, ArrayReader, ArrayWriter, RegionRead, Store};
use tracing::debug;

use crate::{
    protocol::{
        ArrayId, ArraySpec, HostCall, HostReply, PutSource, RestoreItem, SaveItem, SaveReport,
        ShardBytes, VerifyReport,
    },
    ColocatedError, Generator, Result,
};

/// The state of one host: the shards on its devices, and the work it does on them.
///
/// The in-process runtime runs one per thread; a worker process runs one
/// behind its RPC server. Both hand it the same [`HostCall`]s.
#[derive(Debug)]
pub struct HostState {
    host: usize,
    topology: Topology,
    memory: Arc<dyn DeviceMemory>,
    arrays: HashMap<ArrayId, Array>,
}

impl HostState {
    /// Creates the state of `host` in `topology`, with its device memory.
    pub fn new(host: usize, topology: Topology, memory: Arc<dyn DeviceMemory>) -> HostState {
        HostState {
            host,
            topology,
            memory,
            arrays: HashMap::new(),
        }
    }

    /// Index of this host.
    pub fn host(&self) -> usize {
        self.host
    }

    /// Carries out one request.
    pub fn handle(&mut self, call: HostCall) -> Result<HostReply> {
        match call {
            HostCall::PutArray { id, spec, source } => {
                self.put_array(id, &spec, source)?;
                Ok(HostReply::Done)
            }
            HostCall::SaveShards {
                item,
                format,
                items,
            } => self.save_shards(&item, &format, &items).map(HostReply::Saved),
            HostCall::FetchShards { ids } => self.fetch_shards(&ids).map(HostReply::Shards),
            HostCall::RestoreShards {
                item,
                use_ocdbt,
                use_zarr3,
                items,
            } => self
                .restore_shards(&item, use_ocdbt, use_zarr3, items)
                .map(|bytes| HostReply::Restored { bytes }),
            HostCall::Verify { id, generator } => {
                self.verify(id, generator).map(HostReply::Verified)
            }
            HostCall::SnapshotArrays { arrays } => {
                self.snapshot_arrays(&arrays)?;
                Ok(HostReply::Done)
            }
            HostCall::DropArrays { ids } => {
                for id in ids {
                    self.arrays.remove(&id);
                }
                Ok(HostReply::Done)
            }
        }
    }

    fn is_local(&self, device: ckpt_device::DeviceId) -> bool {
        self.topology.host_of(device) == Some(self.host)
    }

    fn array(&self, id: ArrayId) -> Result<&Array> {
        self.arrays.get(&id).ok_or(ColocatedError::UnknownArray {
            id: id.0,
            host: self.host,
        })
    }

    fn put_array(&mut self, id: ArrayId, spec: &ArraySpec, source: PutSource) -> Result<()> {
        let array = match source {
            PutSource::Generate(generator) => Array::from_fn(
                spec.shape.clone(),
                spec.dtype,
                spec.sharding.clone(),
                self.memory.as_ref(),
                |device| self.is_local(device),
                |index, dst| generator.fill(spec.dtype, &spec.shape, index, dst),
            )?,
            PutSource::Shards(shards) => self.array_from_shards(id, spec, shards)?,
        };
        self.arrays.insert(id, array);
        Ok(())
    }

    fn array_from_shards(
        &self,
        id: ArrayId,
        spec: &ArraySpec,
        shards: Vec<(IndexBox, Bytes)>,
    ) -> Result<Array> {
        let slices = spec.sharding.devices_indices_map(&spec.shape)?;
        let data: HashMap<IndexBox, Bytes> = shards.into_iter().collect();
        let mut local = Vec::new();
        for slice in slices.into_iter().filter(|s| self.is_local(s.device)) {
            let Some(bytes) = data.get(&slice.index) else {
                return Err(ColocatedError::InvalidShardData {
                    id: id.0,
                    device: slice.device.0,
                    reason: format!("no bytes were sent for its box {}", slice.index),
                });
            };
            let buffer = self
                .memory
                .upload(slice.device, HostBuffer::from_slice(bytes)?)?;
            local.push(Shard::new(slice.device, slice.index, slice.replica_id, buffer));
        }
        Ok(Array::from_shards(
            spec.shape.clone(),
            spec.dtype,
            spec.sharding.clone(),
            local,
        )?)
    }

    fn save_shards(
        &self,
        item: &Store,
        format: &ArrayFormat,
        items: &[SaveItem],
    ) -> Result<SaveReport> {
        let writer = ArrayWriter::open(item, format, &self.host.to_string())?;
        let mut report = SaveReport::default();
        for save in items {
            if save.create_metadata {
                writer.create_array(&save.param_name, &save.stored)?;
            }
            let array = self.array(save.id)?;
            writer.note_sharded_array(&save.param_name, &save.write_shape, &save.stored.chunk_shape);
            for shard in array.shards() {
                let region = match save.replica_slicing {
                    Some(slicing) => slicing.slice(shard.index(), shard.replica_id()),
                    None => (shard.replica_id() == 0).then(|| shard.index().clone()),
                };
                let Some(region) = region.filter(|r| !r.is_empty()) else {
                    continue;
                };
                let bytes = region_bytes(shard, &region, array.dtype().item_size())?;
                let written = writer.write_region(&save.param_name, &save.stored, &region, &bytes)?;
                report.bytes += bytes.len() as u64;
                report.chunks += written;
            }
        }
        writer.finish()?;
        debug!(host = self.host, bytes = report.bytes, chunks = report.chunks, "saved shards");
        Ok(report)
    }

    /// Stores, under each copy id, an array of the source's replica-0 shards
    /// copied into host memory. The copy has no other replicas, so a save
    /// must write it with replica 0 writing whole shards.
    fn snapshot_arrays(&mut self, arrays: &[(ArrayId, ArrayId)]) -> Result<()> {
        for &(source, copy) in arrays {
            let array = self.array(source)?;
            let mut shards = Vec::new();
            for shard in array.shards().iter().filter(|shard| shard.replica_id() == 0) {
                let staged = HostDeviceBuffer::new(shard.device(), shard.buffer().to_host_buffer()?);
                shards.push(Shard::new(shard.device(), shard.index().clone(), 0, Arc::new(staged)));
            }
            let snapshot = Array::from_shards(
                array.shape().to_vec(),
                array.dtype(),
                array.sharding().clone(),
                shards,
            )?;
            self.arrays.insert(copy, snapshot);
        }
        Ok(())
    }

    fn fetch_shards(&self, ids: &[ArrayId]) -> Result<Vec<ShardBytes>> {
        let mut out = Vec::new();
        for id in ids {
            let array = self.array(*id)?;
            for shard in array.shards() {
                if shard.replica_id() != 0 {
                    continue;
                }
                out.push(ShardBytes {
                    id: *id,
                    index: shard.index().clone(),
                    bytes: Bytes::copy_from_slice(&shard_bytes(shard)?),
                });
            }
        }
        Ok(out)
    }

    /// Reads the boxes of this host's devices for each item. Each distinct
    /// box is read once, however many local devices need it, and each
    /// chunk once for all of them. Replicas get copies of the box.
    fn restore_shards(
        &mut self,
        item: &Store,
        use_ocdbt: Option<bool>,
        use_zarr3: bool,
        items: Vec<RestoreItem>,
    ) -> Result<u64> {
        let reader = ArrayReader::open(item, use_ocdbt)?.with_zarr3(use_zarr3);
        let mut total = 0u64;
        for restore in items {
            let stored = reader.array(&restore.param_name)?;
            let spec = &restore.spec;
            if !restore.allow_lossy_cast && !CastKind::of(stored.dtype, spec.dtype).is_exact() {
                return Err(ColocatedError::LossyCast {
                    param_name: restore.param_name.clone(),
                    stored: stored.dtype,
                    target: spec.dtype,
                });
            }
            let slices: Vec<_> = spec
                .sharding
                .devices_indices_map(&spec.shape)?
                .into_iter()
                .filter(|slice| self.is_local(slice.device))
                .collect();

            let mut boxes: Vec<IndexBox> = Vec::new();
            for slice in &slices {
                if !boxes.contains(&slice.index) {
                    boxes.push(slice.index.clone());
                }
            }
            let mut buffers = Vec::with_capacity(boxes.len());
            for index in &boxes {
                buffers.push(HostBuffer::zeroed(num_bytes_usize(&index.shape(), spec.dtype)?)?);
            }
            let mut reads = Vec::with_capacity(boxes.len());
            for (index, buffer) in boxes.iter().zip(&mut buffers) {
                reads.push(RegionRead {
                    region: index.clone(),
                    dst: buffer.as_bytes_mut()?,
                });
            }
            reader.read_regions(&restore.param_name, spec.dtype, &mut reads)?;
            drop(reads);

            let mut first_use: Vec<Option<HostBuffer>> = buffers.into_iter().map(Some).collect();
            let mut shards = Vec::with_capacity(slices.len());
            for slice in slices {
                let position = boxes.iter().position(|index| *index == slice.index).unwrap_or(0);
                let buffer = match first_use[position].take() {
                    Some(buffer) => buffer,
                    None => {
                        let source = shards
                            .iter()
                            .find(|shard: &&Shard| *shard.index() == slice.index)
                            .map(shard_bytes)
                            .transpose()?
                            .unwrap_or_default();
                        HostBuffer::from_slice(&source)?
                    }
                };
                total += buffer.len() as u64;
                let buffer = self.memory.upload(slice.device, buffer)?;
                shards.push(Shard::new(slice.device, slice.index, slice.replica_id, buffer));
            }
            let array = Array::from_shards(spec.shape.clone(), spec.dtype, spec.sharding.clone(), shards)?;
            self.arrays.insert(restore.id, array);
        }
        Ok(total)
    }

    fn verify(&self, id: ArrayId, generator: Generator) -> Result<VerifyReport> {
        let array = self.array(id)?;
        let item_size = array.dtype().item_size();
        let mut report = VerifyReport::default();
        for shard in array.shards() {
            let actual = shard_bytes(shard)?;
            let mut expected = vec![0u8; actual.len()];
            generator.fill(array.dtype(), array.shape(), shard.index(), &mut expected);
            report.elements += (actual.len() / item_size.max(1)) as u64;
            report.mismatches += actual
                .chunks_exact(item_size)
                .zip(expected.chunks_exact(item_size))
                .filter(|(a, e)| a != e)
                .count() as u64;
        }
        Ok(report)
    }
}

/// Returns the bytes of `region`, a box inside a shard, in host memory:
/// borrowed when the region is the whole shard of a host-memory device.
fn region_bytes<'a>(shard: &'a Shard, region: &IndexBox, item_size: usize) -> Result<Cow<'a, [u8]>> {
    let whole = shard_bytes(shard)?;
    if region == shard.index() {
        return Ok(whole);
    }
    let len = region
        .num_elements()?
        .checked_mul(item_size as u64)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| ckpt_core::CoreError::ShapeOverflow {
            shape: region.shape(),
        })?;
    let mut out = vec![0u8; len];
    copy_region(&whole, shard.index(), &mut out, region, region, item_size)?;
    Ok(Cow::Owned(out))
}

/// Returns a shard's bytes in host memory: borrowed for host-memory devices,
/// copied from the device otherwise.
fn shard_bytes(shard: &Shard) -> Result<Cow<'_, [u8]>> {
    let buffer = shard.buffer();
    if let Some(bytes) = buffer.host_bytes() {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut out = vec![0u8; buffer.len()];
    buffer.copy_to_host(&mut out)?;
    Ok(Cow::Owned(out))
}
