use std::collections::BTreeMap;

use bytes::Bytes;
use ckpt_colocated::{ArrayRestore, ArraySpec, ReplicaSlicing, SaveItem, ShardedArray};
use ckpt_core::{num_bytes, zeroed_bytes, CastKind, IndexBox};
use ckpt_device::Sharding;
use ckpt_storage::{choose_chunk_shape, RegionRead, StoredArray, DEFAULT_MAX_CHUNK_BYTES};
use tracing::info;

use super::ARRAY_VALUE_TYPE;
use crate::{
    CkptError, Leaf, MissingSharding, RestoreContext, RestoreEntry, RestoreTarget, Result,
    SaveContext, SaveEntry, SavedLeaf, TypeHandler,
};

/// Saves sharded arrays through the controller: it fetches every replica-0
/// shard from the hosts and writes it itself (Orbax's default path in a
/// single-controller deployment). Restores by reading on the controller and
/// sending each host its devices' boxes.
#[derive(Clone, Copy, Debug, Default)]
pub struct ArrayHandler;

/// Saves and restores sharded arrays colocated: each host writes, and reads,
/// the shards of its own devices, and the controller sends only requests.
#[derive(Clone, Copy, Debug, Default)]
pub struct ColocatedArrayHandler;

impl TypeHandler for ArrayHandler {
    fn value_type(&self) -> &str {
        ARRAY_VALUE_TYPE
    }

    fn save(&self, context: &SaveContext<'_>, entries: &[SaveEntry<'_>]) -> Result<Vec<SavedLeaf>> {
        let planned = plan_arrays(entries, context.replica_parallel)?;
        for plan in &planned {
            context.writer.create_array(&plan.param_name, &plan.stored)?;
            context
                .writer
                .note_sharded_array(&plan.param_name, &plan.write_shape, &plan.stored.chunk_shape);
        }
        let arrays: Vec<&ShardedArray> = planned.iter().map(|plan| plan.array).collect();
        let by_id: BTreeMap<_, _> = planned.iter().map(|plan| (plan.array.id(), plan)).collect();
        for shard in context.controller.fetch_shards(&arrays)? {
            if shard.index.is_empty() {
                continue;
            }
            let Some(plan) = by_id.get(&shard.id) else {
                continue;
            };
            context
                .writer
                .write_region(&plan.param_name, &plan.stored, &shard.index, &shard.bytes)?;
        }
        planned.iter().map(saved_leaf).collect()
    }

    fn restore(
        &self,
        context: &RestoreContext<'_>,
        entries: &[RestoreEntry<'_>],
    ) -> Result<Vec<Leaf>> {
        entries
            .iter()
            .map(|entry| restore_through_controller(context, entry))
            .collect()
    }
}

impl TypeHandler for ColocatedArrayHandler {
    fn value_type(&self) -> &str {
        ARRAY_VALUE_TYPE
    }

    fn save(&self, context: &SaveContext<'_>, entries: &[SaveEntry<'_>]) -> Result<Vec<SavedLeaf>> {
        let planned = plan_arrays(entries, context.replica_parallel)?;
        let items = planned
            .iter()
            .map(|plan| {
                let item = SaveItem {
                    id: plan.array.id(),
                    param_name: plan.param_name.clone(),
                    stored: plan.stored.clone(),
                    write_shape: plan.write_shape.clone(),
                    replica_slicing: plan.replica_slicing,
                    create_metadata: true,
                };
                (plan.array, item)
            })
            .collect();
        context
            .controller
            .save_colocated(context.item, context.format, items)?;
        planned.iter().map(saved_leaf).collect()
    }

    fn restore(
        &self,
        context: &RestoreContext<'_>,
        entries: &[RestoreEntry<'_>],
    ) -> Result<Vec<Leaf>> {
        let mut targets = Vec::with_capacity(entries.len());
        for entry in entries {
            if restores_to_host(context, entry)? {
                targets.push(None);
                continue;
            }
            let restore = ArrayRestore::new(entry.param_name, target_spec(context, entry)?)
                .with_lossy_cast(entry.args.allow_lossy_cast);
            targets.push(Some(restore));
        }
        let wanted: Vec<ArrayRestore> = targets.iter().flatten().cloned().collect();
        let mut restored = context
            .controller
            .restore_arrays(context.item, context.use_ocdbt, context.use_zarr3, wanted)?
            .into_iter();
        let mut leaves = Vec::with_capacity(entries.len());
        for (entry, target) in entries.iter().zip(&targets) {
            let leaf = match target {
                None => restore_through_controller(context, entry)?,
                Some(_) => match restored.next() {
                    Some(array) => Leaf::Array(array),
                    None => {
                        return Err(CkptError::InvalidRestore {
                            key_path: entry.key_path.to_string(),
                            reason: "the hosts returned fewer arrays than requested".into(),
                        })
                    }
                },
            };
            leaves.push(leaf);
        }
        Ok(leaves)
    }
}

/// A sharded array leaf ready to save.
struct PlannedArray<'a> {
    array: &'a ShardedArray,
    param_name: String,
    stored: StoredArray,
    /// The shape each writer writes: a shard or a replica's slice of one.
    write_shape: Vec<u64>,
    replica_slicing: Option<ReplicaSlicing>,
}

fn plan_arrays<'a>(entries: &[SaveEntry<'a>], replica_parallel: bool) -> Result<Vec<PlannedArray<'a>>> {
    entries
        .iter()
        .map(|entry| {
            let Leaf::Array(array) = entry.leaf else {
                return Err(CkptError::InvalidLeaf {
                    key_path: entry.key_path.to_string(),
                    reason: "the array handler was given a leaf that is not a sharded array"
                        .into(),
                });
            };
            let spec = array.spec();
            let invalid = |reason| CkptError::InvalidLeaf {
                key_path: entry.key_path.to_string(),
                reason,
            };
            let shard_shape = shard_shape(spec).map_err(invalid)?;
            let replica_slicing = if replica_parallel {
                replica_slicing(spec, &shard_shape).map_err(invalid)?
            } else {
                None
            };
            let write_shape = match replica_slicing {
                Some(slicing) => {
                    let mut shape = shard_shape.clone();
                    shape[slicing.axis] /= u64::from(slicing.replicas);
                    shape
                }
                None => shard_shape,
            };
            let write_bytes = num_bytes(&write_shape, spec.dtype)?;
            let target = entry.args.chunk_byte_size.or(
                (write_bytes > DEFAULT_MAX_CHUNK_BYTES).then_some(DEFAULT_MAX_CHUNK_BYTES),
            );
            let chunk_shape =
                choose_chunk_shape(&spec.shape, &write_shape, spec.dtype.item_size(), target);
            Ok(PlannedArray {
                array,
                param_name: entry.param_name.to_owned(),
                stored: StoredArray {
                    shape: spec.shape.clone(),
                    dtype: spec.dtype,
                    chunk_shape,
                },
                write_shape,
                replica_slicing,
            })
        })
        .collect()
}

/// Orbax's replica-parallel split of replicated shards: when every shard
/// has the same shape and is held by R > 1 devices, the first shard axis
/// divisible by R is cut into R slices, one per replica. `None` when no
/// axis divides or the shards differ in shape (uneven sharding).
fn replica_slicing(
    spec: &ArraySpec,
    shard_shape: &[u64],
) -> std::result::Result<Option<ReplicaSlicing>, String> {
    let replicas = spec.sharding.num_replicas();
    if replicas <= 1 || shard_shape.iter().product::<u64>() == 0 {
        return Ok(None);
    }
    let slices = spec
        .sharding
        .devices_indices_map(&spec.shape)
        .map_err(|err| err.to_string())?;
    if slices.iter().any(|slice| slice.index.shape() != shard_shape) {
        return Ok(None);
    }
    let replicas = u32::try_from(replicas).map_err(|_| "too many replicas".to_owned())?;
    let axis = shard_shape
        .iter()
        .position(|&extent| extent % u64::from(replicas) == 0);
    Ok(axis.map(|axis| ReplicaSlicing { axis, replicas }))
}

/// Returns the shape of the largest shard, which is the first shard's
/// under JAX's ceiling division.
fn shard_shape(spec: &ArraySpec) -> std::result::Result<Vec<u64>, String> {
    if spec.shape.contains(&0) {
        return Err(format!(
            "its shape {:?} has a zero-size dimension, which the Orbax format cannot store; drop the leaf or give it at least one element",
            spec.shape
        ));
    }
    let slices = spec
        .sharding
        .devices_indices_map(&spec.shape)
        .map_err(|err| err.to_string())?;
    let first = slices
        .first()
        .ok_or_else(|| "its sharding has no devices".to_owned())?;
    Ok(first.index.shape())
}

fn saved_leaf(plan: &PlannedArray<'_>) -> Result<SavedLeaf> {
    Ok(SavedLeaf {
        value_type: ARRAY_VALUE_TYPE.to_owned(),
        write_shape: Some(plan.write_shape.clone()),
        sharding: Some(plan.array.spec().sharding.to_orbax_json()),
    })
}

/// Returns the spec a leaf is restored onto: the caller's, or the saved
/// sharding recorded in `_sharding` when its devices exist in this runtime.
pub(crate) fn target_spec(context: &RestoreContext<'_>, entry: &RestoreEntry<'_>) -> Result<ArraySpec> {
    let stored = context.reader.array(entry.param_name)?;
    let spec = match &entry.args.target {
        RestoreTarget::Array(spec) => spec.clone(),
        RestoreTarget::Saved | RestoreTarget::Host => {
            let sharding = saved_sharding(context, entry)?;
            ArraySpec {
                shape: stored.shape.clone(),
                dtype: stored.dtype,
                sharding,
            }
        }
    };
    if spec.shape != stored.shape {
        return Err(CkptError::InvalidRestore {
            key_path: entry.key_path.to_string(),
            reason: format!(
                "the target is {} {:?} but the checkpoint holds {} {:?}; restore with the saved shape",
                spec.dtype, spec.shape, stored.dtype, stored.shape
            ),
        });
    }
    if !entry.args.allow_lossy_cast && !CastKind::of(stored.dtype, spec.dtype).is_exact() {
        return Err(CkptError::InvalidRestore {
            key_path: entry.key_path.to_string(),
            reason: format!(
                "casting the stored {} to the target {} can change values; set RestoreArgs::with_lossy_cast(true) to allow it, or restore as {}",
                stored.dtype, spec.dtype, stored.dtype
            ),
        });
    }
    Ok(spec)
}

/// The saved sharding of a leaf, as far as this runtime can use it.
enum SavedSharding {
    /// The `_sharding` entry, whose devices all exist here.
    Usable(Sharding),
    /// The `_sharding` entry names these device ids, which this runtime lacks.
    DevicesMissing(Vec<u32>),
    /// The checkpoint has no `_sharding` entry for the leaf.
    Absent,
}

fn lookup_saved_sharding(context: &RestoreContext<'_>, entry: &RestoreEntry<'_>) -> Result<SavedSharding> {
    let Some(json) = context.shardings.get(entry.param_name) else {
        return Ok(SavedSharding::Absent);
    };
    let sharding = Sharding::from_orbax_json(json)?;
    let topology = context.controller.runtime().topology();
    let missing: Vec<u32> = sharding
        .device_set()
        .into_iter()
        .filter(|device| topology.host_of(*device).is_none())
        .map(|device| device.0)
        .collect();
    if missing.is_empty() {
        Ok(SavedSharding::Usable(sharding))
    } else {
        Ok(SavedSharding::DevicesMissing(missing))
    }
}

/// Returns whether a sharded array leaf restores into the controller's
/// memory: its target is host memory, or its target is the saved sharding,
/// which this runtime cannot use, and its policy is [`MissingSharding::Host`].
fn restores_to_host(context: &RestoreContext<'_>, entry: &RestoreEntry<'_>) -> Result<bool> {
    match entry.args.target {
        RestoreTarget::Host => Ok(true),
        RestoreTarget::Saved if entry.args.missing_sharding == MissingSharding::Host => {
            let saved = lookup_saved_sharding(context, entry)?;
            let to_host = !matches!(saved, SavedSharding::Usable(_));
            if to_host {
                info!(leaf = %entry.key_path, "saved sharding is unavailable here; restoring into host memory as MissingSharding::Host requests");
            }
            Ok(to_host)
        }
        _ => Ok(false),
    }
}

/// Returns the saved sharding of a leaf, or the fallback its
/// [`MissingSharding`] policy opts in to when this runtime cannot use it.
fn saved_sharding(context: &RestoreContext<'_>, entry: &RestoreEntry<'_>) -> Result<Sharding> {
    let saved = lookup_saved_sharding(context, entry)?;
    if let SavedSharding::Usable(sharding) = saved {
        return Ok(sharding);
    }
    let topology = context.controller.runtime().topology();
    let fallback = match entry.args.missing_sharding {
        MissingSharding::Replicated => Some(Sharding::replicated(topology.device_ids())?),
        MissingSharding::SingleDevice(device) => {
            if topology.host_of(device).is_none() {
                return Err(CkptError::InvalidRestore {
                    key_path: entry.key_path.to_string(),
                    reason: format!(
                        "MissingSharding::SingleDevice names device {device}, which this runtime lacks; pick one of its {} devices",
                        topology.devices().len()
                    ),
                });
            }
            Some(Sharding::single_device(device))
        }
        _ => None,
    };
    if let Some(sharding) = fallback {
        info!(leaf = %entry.key_path, policy = ?entry.args.missing_sharding, "saved sharding is unavailable here; using the opted-in fallback");
        return Ok(sharding);
    }
    Err(match saved {
        SavedSharding::DevicesMissing(missing_devices) => CkptError::SavedDevicesMissing {
            key_path: entry.key_path.to_string(),
            missing_devices,
            runtime_devices: topology.devices().len(),
        },
        _ => CkptError::NoSavedSharding {
            key_path: entry.key_path.to_string(),
        },
    })
}

/// Restores through the controller. It reads each host's boxes, converted
/// to the target dtype, and sends them host by host. When the leaf restores
/// into host memory, it reads the whole array instead.
fn restore_through_controller(context: &RestoreContext<'_>, entry: &RestoreEntry<'_>) -> Result<Leaf> {
    let stored = context.reader.array(entry.param_name)?;
    if restores_to_host(context, entry)? {
        let mut global = zeroed_bytes(&stored.shape, stored.dtype)?;
        context.reader.read_region(
            entry.param_name,
            &stored,
            &IndexBox::full(&stored.shape),
            &mut global,
        )?;
        let array = crate::HostArray::from_bytes(stored.shape.clone(), stored.dtype, global)?;
        return Ok(Leaf::HostArray(array));
    }
    let spec = target_spec(context, entry)?;
    let dtype = spec.dtype;
    let array = context.controller.put_from_boxes(spec, |index: &IndexBox| -> Result<Bytes> {
        let mut bytes = zeroed_bytes(&index.shape(), dtype)?;
        let mut reads = [RegionRead {
            region: index.clone(),
            dst: &mut bytes,
        }];
        context.reader.read_regions(entry.param_name, dtype, &mut reads)?;
        Ok(Bytes::from(bytes))
    })?;
    Ok(Leaf::Array(array))
}
