//! SPMD mode: several processes run the same program, each owning the
//! devices of one host, and save or restore one checkpoint together.
//!
//! Every process writes its own replica-0 shards into its own OCDBT
//! database `ocdbt.process_<i>`. Process 0, the primary, begins the
//! checkpoint, and after a barrier that every process passes only once its
//! shards are written, merges the databases, writes `_METADATA` and
//! `_sharding`, and commits. The barriers run on the coordination service
//! that process 0 hosts (see [`crate::grpc::coordinator`]).

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::URL_SAFE, Engine as _};
use bytes::Bytes;
use ckpt_core::DType;
use ckpt_device::{HostMemory, Sharding, Topology};
use ckpt_pytree::{PyTree, TreeMetadata, ValueMetadata};
use ckpt_storage::{
    finalize_item, open_committed, open_store, ArrayFormat, ItemHandlers, PendingCheckpoint,
    StoredArray, Store,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{
    grpc::{
        coordinator::{CoordinatorClient, CoordinatorServer},
        error::GrpcError,
        server::error_chain,
        wire::store_location,
    },
    protocol::{ArrayId, ArraySpec, HostCall, HostReply, PutSource, RestoreItem, SaveItem},
    ColocatedError, Generator, HostState,
};

/// The handler Orbax records for a PyTree checkpoint item, so Orbax and
/// the `ckpt` facade restore SPMD checkpoints like their own.
const PYTREE_HANDLER_NAME: &str =
    "orbax.checkpoint._src.handlers.pytree_checkpoint_handler.PyTreeCheckpointHandler";
/// Time the primary lets the other processes collect the last barrier's reply before it stops the coordinator.
const COORDINATOR_GRACE: Duration = Duration::from_secs(5);

/// One array of an SPMD program: each process creates the shards on its own devices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpmdArray {
    /// The array's key in the checkpoint's top-level dict. It must not
    /// contain `.` or `/`, so it is also its parameter name.
    pub name: String,
    /// Global shape.
    pub shape: Vec<u64>,
    /// Element type.
    pub dtype: DType,
    /// Layout over the devices of all processes.
    pub sharding: Sharding,
    /// Seed of the [`Generator`] that fills the array and checks it after a restore.
    pub seed: u64,
}

/// Faults an SPMD process injects into its own run, for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpmdFaults {
    /// Time the process waits before it writes its shards, in milliseconds.
    #[serde(default)]
    pub save_delay_ms: u64,
    /// Whether the primary stops just before committing and waits to be
    /// killed. If nothing kills it within the barrier timeout, the save fails.
    #[serde(default)]
    pub pause_before_commit: bool,
}

/// Configuration of one SPMD process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpmdConfig {
    /// This process's index, which is also its host index.
    pub process_index: usize,
    /// Processes in the job.
    pub num_processes: usize,
    /// Devices of each process: the topology is `Topology::uniform(num_processes, devices_per_process)`.
    pub devices_per_process: usize,
    /// The coordination service's `ip:port`. Process 0 listens on it, where
    /// port 0 picks a free port; the others connect to the address it reports.
    pub coordinator: String,
    /// The directory of the checkpoints, as a local path or URL.
    pub directory: String,
    /// The arrays, the same in every process.
    pub arrays: Vec<SpmdArray>,
    /// Name of the checkpoint to save, if any.
    #[serde(default)]
    pub save: Option<String>,
    /// Name of the checkpoint to restore and check against the generators,
    /// if any. A restore follows the save when both are set.
    #[serde(default)]
    pub restore: Option<String>,
    /// How long each barrier waits for every process, in milliseconds.
    pub barrier_timeout_ms: u64,
    /// Injected faults.
    #[serde(default)]
    pub faults: SpmdFaults,
}

/// Outcome of one SPMD process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SpmdReport {
    /// The process index.
    pub process_index: usize,
    /// Array bytes this process wrote (before compression).
    pub bytes_written: u64,
    /// Chunks this process wrote.
    pub chunks_written: u64,
    /// Seconds from the start of the save to the commit barrier.
    pub save_seconds: f64,
    /// Array bytes this process read in the restore.
    pub bytes_read: u64,
    /// Seconds the restore took, the check against the generators included.
    pub restore_seconds: f64,
    /// Elements compared with the generators after the restore.
    pub elements_verified: u64,
    /// Elements that differed from the generators.
    pub mismatches: u64,
}

/// Progress an SPMD process reports while it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpmdEvent {
    /// Process 0's coordination service listens on this address.
    CoordinatorListening(SocketAddr),
    /// The process starts writing its shards of the checkpoint.
    WritingShards,
    /// The primary stopped before committing, as [`SpmdFaults::pause_before_commit`] requests.
    PausedBeforeCommit,
}

/// Runs one SPMD process to the end: joins the job, creates its shards of
/// every array, then saves and restores as `config` requests.
///
/// Blocks the calling thread, which must not run a tokio runtime.
pub fn run_spmd_process(
    config: &SpmdConfig,
    mut on_event: impl FnMut(SpmdEvent),
) -> Result<SpmdReport, GrpcError> {
    validate(config)?;
    let topology = Topology::uniform(config.num_processes, config.devices_per_process)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(format!("ckpt-spmd-{}", config.process_index))
        .enable_all()
        .build()
        .map_err(|source| GrpcError::Io {
            operation: "start the process's async runtime".into(),
            source,
        })?;
    let timeout = Duration::from_millis(config.barrier_timeout_ms);

    let (server, address) = if config.process_index == 0 {
        let listen: SocketAddr = config.coordinator.parse().map_err(|_| GrpcError::InvalidAddress {
            address: config.coordinator.clone(),
        })?;
        let server = runtime.block_on(CoordinatorServer::start(listen, config.num_processes))?;
        let address = server.local_addr();
        on_event(SpmdEvent::CoordinatorListening(address));
        (Some(server), address.to_string())
    } else {
        (None, config.coordinator.clone())
    };
    let client = runtime.block_on(CoordinatorClient::connect(&address, config.process_index, timeout))?;

    let mut process = SpmdProcess {
        config,
        host: HostState::new(config.process_index, topology, Arc::new(HostMemory)),
        client,
        runtime: &runtime,
        timeout,
    };
    let result = process.run(&mut on_event);

    // Every process meets at a last barrier, so the primary keeps the
    // coordinator up until the others are done. Failed processes arrive
    // without an error here, so that the barrier waits for everyone alive.
    let finished = runtime.block_on(process.client.barrier("finished", timeout, Ok(String::new())));
    if let Some(server) = server {
        runtime.block_on(server.stop(COORDINATOR_GRACE));
    }
    let report = result?;
    finished?;
    Ok(report)
}

fn validate(config: &SpmdConfig) -> Result<(), GrpcError> {
    let invalid = |reason: String| Err(GrpcError::InvalidConfig { reason });
    if config.num_processes == 0 || config.devices_per_process == 0 {
        return invalid(format!(
            "num_processes ({}) and devices_per_process ({}) must be at least 1",
            config.num_processes, config.devices_per_process
        ));
    }
    if config.process_index >= config.num_processes {
        return invalid(format!(
            "process_index {} is out of range for {} processes",
            config.process_index, config.num_processes
        ));
    }
    if config.barrier_timeout_ms == 0 {
        return invalid("barrier_timeout_ms must be at least 1".into());
    }
    for array in &config.arrays {
        if array.name.is_empty() || array.name.contains(['.', '/']) {
            return invalid(format!(
                "array name {:?} must be non-empty and contain no '.' or '/'",
                array.name
            ));
        }
    }
    Ok(())
}

struct SpmdProcess<'a> {
    config: &'a SpmdConfig,
    host: HostState,
    client: CoordinatorClient,
    runtime: &'a tokio::runtime::Runtime,
    timeout: Duration,
}

impl SpmdProcess<'_> {
    fn is_primary(&self) -> bool {
        self.config.process_index == 0
    }

    fn barrier(&self, id: String, arrival: Result<String, String>) -> Result<Vec<String>, GrpcError> {
        self.runtime.block_on(self.client.barrier(&id, self.timeout, arrival))
    }

    fn run(&mut self, on_event: &mut dyn FnMut(SpmdEvent)) -> Result<SpmdReport, GrpcError> {
        let mut report = SpmdReport {
            process_index: self.config.process_index,
            ..SpmdReport::default()
        };
        let created = self.create_arrays();
        self.barrier("created".into(), created.map(|()| String::new()).map_err(|e| error_chain(&e)))?;

        let parent = open_store(&self.config.directory)?;
        if let Some(name) = &self.config.save {
            let started = Instant::now();
            let (bytes, chunks) = self.save(&parent, name, on_event)?;
            report.bytes_written = bytes;
            report.chunks_written = chunks;
            report.save_seconds = started.elapsed().as_secs_f64();
        }
        if let Some(name) = &self.config.restore {
            let started = Instant::now();
            let restored = self.restore(&parent, name);
            let arrival = restored.as_ref().map(|_| String::new()).map_err(|e| error_chain(e));
            let passed = self.barrier(format!("{name}/restored"), arrival);
            let (bytes, elements, mismatches) = restored?;
            passed?;
            report.bytes_read = bytes;
            report.elements_verified = elements;
            report.mismatches = mismatches;
            report.restore_seconds = started.elapsed().as_secs_f64();
        }
        Ok(report)
    }

    fn create_arrays(&mut self) -> Result<(), ColocatedError> {
        for (position, array) in self.config.arrays.iter().enumerate() {
            let call = HostCall::PutArray {
                id: saved_id(position),
                spec: spec(array),
                source: PutSource::Generate(Generator::new(array.seed)),
            };
            self.host.handle(call)?;
        }
        Ok(())
    }

    /// Saves the checkpoint `name` with the other processes; returns the
    /// bytes and chunks this process wrote.
    fn save(
        &mut self,
        parent: &Store,
        name: &str,
        on_event: &mut dyn FnMut(SpmdEvent),
    ) -> Result<(u64, u64), GrpcError> {
        // The primary begins the checkpoint, which removes what a crashed
        // save of the same name left, before anyone writes into it.
        let mut pending = None;
        let begun = if self.is_primary() {
            PendingCheckpoint::begin(parent, name)
                .map_err(|err| error_chain(&err))
                .and_then(|mut checkpoint| {
                    checkpoint.metadata_mut().item_handlers =
                        Some(ItemHandlers::Single(PYTREE_HANDLER_NAME.to_owned()));
                    let location = store_location(checkpoint.store());
                    pending = Some(checkpoint);
                    location
                })
        } else {
            Ok(String::new())
        };
        let location = match self.barrier(format!("{name}/begun"), begun) {
            Ok(values) => values.first().cloned().unwrap_or_default(),
            Err(err) => {
                abort(pending, name);
                return Err(err);
            }
        };

        on_event(SpmdEvent::WritingShards);
        let written = self.write_shards(&location);
        let arrival = written.as_ref().map(|_| String::new()).map_err(|e| error_chain(e));
        let passed = self.barrier(format!("{name}/written"), arrival);
        let (bytes, chunks) = match (written, passed) {
            (Ok(counts), Ok(_)) => counts,
            (Err(err), _) | (_, Err(err)) => {
                abort(pending, name);
                return Err(err);
            }
        };

        let committed = match pending {
            Some(checkpoint) => self
                .commit(checkpoint, name, on_event)
                .map_err(|err| error_chain(&err)),
            None => Ok(()),
        };
        self.barrier(format!("{name}/committed"), committed.map(|()| String::new()))?;
        info!(process = self.config.process_index, checkpoint = name, bytes, "saved");
        Ok((bytes, chunks))
    }

    fn write_shards(&mut self, location: &str) -> Result<(u64, u64), GrpcError> {
        let delay = Duration::from_millis(self.config.faults.save_delay_ms);
        if !delay.is_zero() {
            warn!(process = self.config.process_index, delay_ms = self.config.faults.save_delay_ms, "fault injection: delaying the save");
            std::thread::sleep(delay);
        }
        let item = open_store(location)?;
        let items = self
            .config
            .arrays
            .iter()
            .enumerate()
            .map(|(position, array)| {
                let write_shape = write_shape(array)?;
                Ok(SaveItem {
                    id: saved_id(position),
                    param_name: array.name.clone(),
                    stored: StoredArray {
                        shape: array.shape.clone(),
                        dtype: array.dtype,
                        chunk_shape: write_shape.clone(),
                    },
                    write_shape,
                    replica_slicing: None,
                    create_metadata: self.is_primary(),
                })
            })
            .collect::<Result<Vec<_>, GrpcError>>()?;
        let call = HostCall::SaveShards {
            item,
            format: ArrayFormat::default(),
            items,
        };
        match self.host.handle(call)? {
            HostReply::Saved(report) => Ok((report.bytes, report.chunks)),
            _ => Err(ColocatedError::UnexpectedReply {
                host: self.config.process_index,
                operation: "save shards",
            }
            .into()),
        }
    }

    /// Merges the processes' databases, writes the item's metadata and commits.
    fn commit(
        &self,
        pending: PendingCheckpoint,
        name: &str,
        on_event: &mut dyn FnMut(SpmdEvent),
    ) -> Result<(), GrpcError> {
        let item = pending.store().clone();
        let written = finalize_item(&item, &ArrayFormat::default())
            .map_err(GrpcError::from)
            .and_then(|()| write_item_metadata(&item, &self.config.arrays));
        if let Err(err) = written {
            abort(Some(pending), name);
            return Err(err);
        }
        if self.config.faults.pause_before_commit {
            on_event(SpmdEvent::PausedBeforeCommit);
            warn!("fault injection: paused before commit, waiting to be killed");
            std::thread::sleep(self.timeout);
            return Err(GrpcError::InvalidConfig {
                reason: "the primary paused before commit and was not killed within the barrier timeout".into(),
            });
        }
        pending.commit()?;
        Ok(())
    }

    /// Restores every array onto this process's devices and compares it
    /// with its generator. Returns bytes read, elements compared and mismatches.
    fn restore(&mut self, parent: &Store, name: &str) -> Result<(u64, u64, u64), GrpcError> {
        let item = open_committed(parent, name)?;
        let first_id = self.config.arrays.len();
        let items = self
            .config
            .arrays
            .iter()
            .enumerate()
            .map(|(position, array)| RestoreItem {
                id: saved_id(first_id + position),
                param_name: array.name.clone(),
                spec: spec(array),
                allow_lossy_cast: false,
            })
            .collect();
        let call = HostCall::RestoreShards {
            item,
            use_ocdbt: None,
            use_zarr3: false,
            items,
        };
        let HostReply::Restored { bytes } = self.host.handle(call)? else {
            return Err(ColocatedError::UnexpectedReply {
                host: self.config.process_index,
                operation: "restore shards",
            }
            .into());
        };
        let (mut elements, mut mismatches) = (0, 0);
        for (position, array) in self.config.arrays.iter().enumerate() {
            let call = HostCall::Verify {
                id: saved_id(first_id + position),
                generator: Generator::new(array.seed),
            };
            if let HostReply::Verified(report) = self.host.handle(call)? {
                elements += report.elements;
                mismatches += report.mismatches;
            }
        }
        Ok((bytes, elements, mismatches))
    }
}

/// Returns the id of the array at `position` in this process's host state.
fn saved_id(position: usize) -> ArrayId {
    ArrayId(position as u64 + 1)
}

fn spec(array: &SpmdArray) -> ArraySpec {
    ArraySpec {
        shape: array.shape.clone(),
        dtype: array.dtype,
        sharding: array.sharding.clone(),
    }
}

/// Returns the chunk shape of an array: its first shard's shape, which the
/// `ckpt` facade and Orbax choose too, so every shard is made of whole chunks.
fn write_shape(array: &SpmdArray) -> Result<Vec<u64>, GrpcError> {
    let slices = array.sharding.devices_indices_map(&array.shape)?;
    let Some(first) = slices.first() else {
        return Err(GrpcError::InvalidConfig {
            reason: format!("the sharding of array {} has no devices", array.name),
        });
    };
    if array.shape.contains(&0) {
        return Err(GrpcError::InvalidConfig {
            reason: format!(
                "array {} has shape {:?}, and the Orbax format cannot store a zero-size dimension",
                array.name, array.shape
            ),
        });
    }
    Ok(first.index.shape())
}

/// Writes `_METADATA` (a dict of the arrays) and `_sharding` as the `ckpt`
/// facade writes them for sharded arrays.
fn write_item_metadata(item: &Store, arrays: &[SpmdArray]) -> Result<(), GrpcError> {
    let mut leaves = Vec::with_capacity(arrays.len());
    let mut shardings = serde_json::Map::new();
    for array in arrays {
        leaves.push((
            array.name.clone(),
            PyTree::leaf(ValueMetadata::jax_array(write_shape(array)?)),
        ));
        shardings.insert(
            URL_SAFE.encode(&array.name),
            serde_json::Value::String(array.sharding.to_orbax_json()),
        );
    }
    let mut metadata = TreeMetadata::new(PyTree::dict(leaves));
    metadata.use_ocdbt = Some(true);
    metadata.use_zarr3 = false;
    metadata.store_array_data_equal_to_fill_value = true;
    item.put("_METADATA", Bytes::from(metadata.to_json()))?;
    let shardings = serde_json::Value::Object(shardings).to_string();
    item.put("_sharding", Bytes::from(shardings))?;
    Ok(())
}

fn abort(pending: Option<PendingCheckpoint>, name: &str) {
    let Some(pending) = pending else {
        return;
    };
    if let Err(err) = pending.abort() {
        warn!(checkpoint = name, error = %error_chain(&err), "could not remove a failed save; the next save of the name removes it");
    }
}
