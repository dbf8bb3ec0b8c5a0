use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use bytes::Bytes;
use ckpt_core::{copy_region, num_bytes_usize, IndexBox};
use ckpt_storage::{ArrayFormat, Store};
use tracing::warn;

use crate::{
    protocol::{
        ArrayId, ArraySpec, HostCall, HostReply, PutSource, RestoreItem, SaveItem, SaveReport,
        ShardBytes, VerifyReport,
    },
    ColocatedError, Generator, Result, Runtime,
};

/// A handle to an array whose shards live on a runtime's hosts.
///
/// The controller holds only the id and the description; the bytes stay on
/// the hosts that own the devices.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardedArray {
    id: ArrayId,
    spec: ArraySpec,
}

impl ShardedArray {
    /// The array's id in its runtime.
    pub fn id(&self) -> ArrayId {
        self.id
    }

    /// Global shape, dtype and sharding.
    pub fn spec(&self) -> &ArraySpec {
        &self.spec
    }
}

/// One array that a colocated restore reads, onto a target spec.
#[derive(Clone, Debug, PartialEq)]
pub struct ArrayRestore {
    /// Its parameter name in the checkpoint item.
    pub param_name: String,
    /// The target shape, dtype and sharding.
    pub spec: ArraySpec,
    /// Allow a cast that changes values (see [`ckpt_core::CastKind`]).
    pub allow_lossy_cast: bool,
}

impl ArrayRestore {
    /// Restores `param_name` onto `spec`, allowing only casts that keep every value.
    pub fn new(param_name: impl Into<String>, spec: ArraySpec) -> ArrayRestore {
        ArrayRestore {
            param_name: param_name.into(),
            spec,
            allow_lossy_cast: false,
        }
    }

    /// Sets whether a cast that changes values is allowed.
    pub fn with_lossy_cast(mut self, allow: bool) -> ArrayRestore {
        self.allow_lossy_cast = allow;
        self
    }
}

/// The controller side of single-controller checkpointing.
///
/// It turns array-level operations into per-host requests and counts the
/// array bytes that pass through it, which colocated saving keeps at zero.
#[derive(Debug)]
pub struct Controller {
    runtime: Arc<dyn Runtime>,
    next_id: AtomicU64,
    array_bytes: AtomicU64,
}

impl Controller {
    /// Creates a controller over `runtime`.
    pub fn new(runtime: Arc<dyn Runtime>) -> Controller {
        Controller {
            runtime,
            next_id: AtomicU64::new(1),
            array_bytes: AtomicU64::new(0),
        }
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    /// Array bytes that have passed through the controller, in both directions.
    pub fn array_bytes(&self) -> u64 {
        self.array_bytes.load(Ordering::Relaxed)
    }

    /// Returns a fresh array id.
    pub fn new_id(&self) -> ArrayId {
        ArrayId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// The hosts that own at least one device of `spec`'s sharding, sorted.
    pub fn hosts_of(&self, spec: &ArraySpec) -> Vec<usize> {
        let topology = self.runtime.topology();
        let hosts: BTreeSet<usize> = spec
            .sharding
            .device_set()
            .into_iter()
            .filter_map(|device| topology.host_of(device))
            .collect();
        hosts.into_iter().collect()
    }

    /// Every host of the runtime.
    pub fn all_hosts(&self) -> Vec<usize> {
        (0..self.runtime.topology().num_hosts()).collect()
    }

    /// Sends calls, counts their array bytes, and names the host in each error.
    pub fn call(&self, calls: Vec<(usize, HostCall)>) -> Result<Vec<(usize, HostReply)>> {
        let hosts: Vec<(usize, &'static str)> = calls
            .iter()
            .map(|(host, call)| (*host, call.operation()))
            .collect();
        let sent: u64 = calls.iter().map(|(_, call)| call.array_bytes()).sum();
        self.array_bytes.fetch_add(sent, Ordering::Relaxed);
        let replies = self.runtime.call_hosts(calls);
        let mut out = Vec::with_capacity(replies.len());
        for ((host, operation), reply) in hosts.into_iter().zip(replies) {
            let reply = reply.map_err(|err| match err {
                err @ (ColocatedError::HostUnavailable { .. }
                | ColocatedError::HostFailed { .. }
                | ColocatedError::UnknownHost { .. }) => err,
                other => ColocatedError::HostFailed {
                    host,
                    operation,
                    message: other.to_string(),
                },
            })?;
            self.array_bytes
                .fetch_add(reply.array_bytes(), Ordering::Relaxed);
            out.push((host, reply));
        }
        Ok(out)
    }

    /// Creates an array whose values each host generates for its own devices.
    pub fn put_generated(&self, spec: ArraySpec, generator: Generator) -> Result<ShardedArray> {
        let id = self.new_id();
        let calls = self
            .hosts_of(&spec)
            .into_iter()
            .map(|host| {
                let call = HostCall::PutArray {
                    id,
                    spec: spec.clone(),
                    source: PutSource::Generate(generator),
                };
                (host, call)
            })
            .collect();
        self.call(calls)?;
        Ok(ShardedArray { id, spec })
    }

    /// Creates an array from the controller's bytes of the whole array,
    /// sending each host the boxes of its devices.
    pub fn put_global(&self, spec: ArraySpec, global: &[u8]) -> Result<ShardedArray> {
        let id = self.new_id();
        let item_size = spec.dtype.item_size();
        let full = IndexBox::full(&spec.shape);
        let topology = self.runtime.topology();
        let slices = spec.sharding.devices_indices_map(&spec.shape)?;
        let mut per_host: Vec<Vec<(IndexBox, Bytes)>> = vec![Vec::new(); topology.num_hosts()];
        for slice in slices {
            let Some(host) = topology.host_of(slice.device) else {
                continue;
            };
            if per_host[host].iter().any(|(index, _)| *index == slice.index) {
                continue;
            }
            let mut bytes = vec![0u8; num_bytes_usize(&slice.index.shape(), spec.dtype)?];
            copy_region(global, &full, &mut bytes, &slice.index, &slice.index, item_size)?;
            per_host[host].push((slice.index, Bytes::from(bytes)));
        }
        let calls = per_host
            .into_iter()
            .enumerate()
            .filter(|(_, shards)| !shards.is_empty())
            .map(|(host, shards)| {
                let call = HostCall::PutArray {
                    id,
                    spec: spec.clone(),
                    source: PutSource::Shards(shards),
                };
                (host, call)
            })
            .collect();
        self.call(calls)?;
        Ok(ShardedArray { id, spec })
    }

    /// Asks every host holding the arrays to write its replica-0 shards into
    /// `item`. Each host gets only the arrays with shards on its devices,
    /// and the first of an array's hosts writes its zarr metadata.
    pub fn save_colocated(
        &self,
        item: &Store,
        format: &ArrayFormat,
        items: Vec<(&ShardedArray, SaveItem)>,
    ) -> Result<Vec<(usize, SaveReport)>> {
        let mut per_host: BTreeMap<usize, Vec<SaveItem>> = BTreeMap::new();
        for (array, save) in items {
            let hosts = self.hosts_of(&array.spec);
            for (position, host) in hosts.into_iter().enumerate() {
                let mut host_item = save.clone();
                host_item.create_metadata = save.create_metadata && position == 0;
                per_host.entry(host).or_default().push(host_item);
            }
        }
        let calls = per_host
            .into_iter()
            .map(|(host, items)| {
                let call = HostCall::SaveShards {
                    item: item.clone(),
                    format: format.clone(),
                    items,
                };
                (host, call)
            })
            .collect();
        let replies = self.call(calls)?;
        replies
            .into_iter()
            .map(|(host, reply)| match reply {
                HostReply::Saved(report) => Ok((host, report)),
                _ => Err(ColocatedError::UnexpectedReply {
                    host,
                    operation: "save shards",
                }),
            })
            .collect()
    }

    /// Fetches the replica-0 shards of arrays to the controller (the gather path).
    pub fn fetch_shards(&self, arrays: &[&ShardedArray]) -> Result<Vec<ShardBytes>> {
        let mut per_host: BTreeMap<usize, Vec<ArrayId>> = BTreeMap::new();
        for array in arrays {
            for host in self.hosts_of(&array.spec) {
                per_host.entry(host).or_default().push(array.id);
            }
        }
        let calls = per_host
            .into_iter()
            .map(|(host, ids)| (host, HostCall::FetchShards { ids }))
            .collect();
        let mut shards = Vec::new();
        for (host, reply) in self.call(calls)? {
            match reply {
                HostReply::Shards(mut list) => shards.append(&mut list),
                _ => {
                    return Err(ColocatedError::UnexpectedReply {
                        host,
                        operation: "fetch shards",
                    })
                }
            }
        }
        Ok(shards)
    }

    /// Asks each host to read its devices' boxes of each array from `item`,
    /// allowing only casts that keep every value.
    pub fn restore_colocated(
        &self,
        item: &Store,
        use_ocdbt: Option<bool>,
        use_zarr3: bool,
        targets: Vec<(String, ArraySpec)>,
    ) -> Result<Vec<ShardedArray>> {
        let targets = targets
            .into_iter()
            .map(|(param_name, spec)| ArrayRestore::new(param_name, spec))
            .collect();
        self.restore_arrays(item, use_ocdbt, use_zarr3, targets)
    }

    /// Asks each host to read its devices' boxes of each array from `item`,
    /// casting on the host where a target dtype differs from the stored one.
    pub fn restore_arrays(
        &self,
        item: &Store,
        use_ocdbt: Option<bool>,
        use_zarr3: bool,
        targets: Vec<ArrayRestore>,
    ) -> Result<Vec<ShardedArray>> {
        let arrays: Vec<ShardedArray> = targets
            .iter()
            .map(|target| ShardedArray {
                id: self.new_id(),
                spec: target.spec.clone(),
            })
            .collect();
        let mut per_host: BTreeMap<usize, Vec<RestoreItem>> = BTreeMap::new();
        for (array, target) in arrays.iter().zip(targets) {
            let restore = RestoreItem {
                id: array.id,
                param_name: target.param_name,
                spec: array.spec.clone(),
                allow_lossy_cast: target.allow_lossy_cast,
            };
            for host in self.hosts_of(&array.spec) {
                per_host.entry(host).or_default().push(restore.clone());
            }
        }
        let calls = per_host
            .into_iter()
            .map(|(host, items)| {
                let call = HostCall::RestoreShards {
                    item: item.clone(),
                    use_ocdbt,
                    use_zarr3,
                    items,
                };
                (host, call)
            })
            .collect();
        self.call(calls)?;
        Ok(arrays)
    }

    /// Creates an array from boxes that the controller produces one host at
    /// a time: `read_box` returns the bytes of one box, and each host's
    /// distinct boxes are sent to it before the next host's are read.
    ///
    /// So the controller keeps one host's boxes in memory at a time, never
    /// the global array, unless a single host needs all of it.
    pub fn put_from_boxes<E>(
        &self,
        spec: ArraySpec,
        mut read_box: impl FnMut(&IndexBox) -> std::result::Result<Bytes, E>,
    ) -> std::result::Result<ShardedArray, E>
    where
        E: From<ColocatedError>,
    {
        // NOTE: a host's share is one message; splitting it into pieces of
        // a fixed size needs a request that appends to a shard.
        let id = self.new_id();
        let topology = self.runtime.topology();
        let slices = spec
            .sharding
            .devices_indices_map(&spec.shape)
            .map_err(ColocatedError::from)?;
        let mut per_host: BTreeMap<usize, Vec<IndexBox>> = BTreeMap::new();
        for slice in slices {
            let Some(host) = topology.host_of(slice.device) else {
                continue;
            };
            let boxes = per_host.entry(host).or_default();
            if !boxes.contains(&slice.index) {
                boxes.push(slice.index);
            }
        }
        for (host, boxes) in per_host {
            let mut shards = Vec::with_capacity(boxes.len());
            for index in boxes {
                let bytes = read_box(&index)?;
                shards.push((index, bytes));
            }
            let call = HostCall::PutArray {
                id,
                spec: spec.clone(),
                source: PutSource::Shards(shards),
            };
            self.call(vec![(host, call)])?;
        }
        Ok(ShardedArray { id, spec })
    }

    /// Compares an array's shards on every host with a generator's values.
    pub fn verify(&self, array: &ShardedArray, generator: Generator) -> Result<VerifyReport> {
        let calls = self
            .hosts_of(&array.spec)
            .into_iter()
            .map(|host| (host, HostCall::Verify { id: array.id, generator }))
            .collect();
        let mut total = VerifyReport::default();
        for (host, reply) in self.call(calls)? {
            let HostReply::Verified(report) = reply else {
                return Err(ColocatedError::UnexpectedReply {
                    host,
                    operation: "verify an array",
                });
            };
            total.elements += report.elements;
            total.mismatches += report.mismatches;
        }
        Ok(total)
    }

    /// Assembles an array's bytes on the controller from its replica-0 shards.
    pub fn to_global_bytes(&self, array: &ShardedArray) -> Result<Vec<u8>> {
        let spec = &array.spec;
        let full = IndexBox::full(&spec.shape);
        let mut global = vec![0u8; num_bytes_usize(&spec.shape, spec.dtype)?];
        for shard in self.fetch_shards(&[array])? {
            copy_region(
                &shard.bytes,
                &shard.index,
                &mut global,
                &full,
                &shard.index,
                spec.dtype.item_size(),
            )?;
        }
        Ok(global)
    }

    /// Copies the replica-0 shards of `arrays` into host memory on the hosts
    /// that hold them and returns handles to the copies, in the same order.
    ///
    /// Later changes to the sources do not reach the copies, so a background
    /// save can write a copy while training goes on. A copy holds one
    /// replica of each box, so save it with replica 0 writing whole shards,
    /// and drop it with [`Controller::drop_arrays`] when done. On error no
    /// copy is left on any host.
    pub fn snapshot_arrays(&self, arrays: &[&ShardedArray]) -> Result<Vec<ShardedArray>> {
        let copies: Vec<ShardedArray> = arrays
            .iter()
            .map(|array| ShardedArray {
                id: self.new_id(),
                spec: array.spec.clone(),
            })
            .collect();
        let mut per_host: BTreeMap<usize, Vec<(ArrayId, ArrayId)>> = BTreeMap::new();
        for (array, copy) in arrays.iter().zip(&copies) {
            for host in self.hosts_of(&array.spec) {
                per_host.entry(host).or_default().push((array.id, copy.id));
            }
        }
        let calls = per_host
            .into_iter()
            .map(|(host, arrays)| (host, HostCall::SnapshotArrays { arrays }))
            .collect();
        if let Err(err) = self.call(calls) {
            let copies: Vec<&ShardedArray> = copies.iter().collect();
            if let Err(drop_err) = self.drop_arrays(&copies) {
                warn!(error = %drop_err, "could not drop the copies of a failed snapshot");
            }
            return Err(err);
        }
        Ok(copies)
    }

    /// Drops arrays from every host that holds them.
    pub fn drop_arrays(&self, arrays: &[&ShardedArray]) -> Result<()> {
        let ids: Vec<ArrayId> = arrays.iter().map(|a| a.id).collect();
        let calls = self
            .all_hosts()
            .into_iter()
            .map(|host| (host, HostCall::DropArrays { ids: ids.clone() }))
            .collect();
        self.call(calls)?;
        Ok(())
    }
}
