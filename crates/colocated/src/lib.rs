//! The single-controller runtime of ckpt: a controller and the hosts that own
//! the devices, and the colocated save and restore between them.
//!
//! In a single-controller deployment one process drives many hosts. With
//! colocated checkpointing the controller sends each host a small request
//! naming arrays, boxes and a storage location, and each host writes the
//! shards of its own devices straight to storage, so array bytes never pass
//! through the controller. The gather path, where the controller fetches
//! every shard and writes it itself, is here too, for comparison and for
//! backends that cannot be reached from the hosts.
//!
//! [`Runtime`] is the transport: [`InProcessRuntime`] runs each host on a
//! thread. [`HostState`] is what a host does with each [`HostCall`], and
//! [`Controller`] is what the controller asks, counting the array bytes
//! that pass through it.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//!
//! use ckpt_colocated::{ArraySpec, Controller, Generator, InProcessRuntime};
//! use ckpt_core::DType;
//! use ckpt_device::{Mesh, PartitionSpec, Sharding, Topology};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let topology = Topology::uniform(2, 2)?;
//! let runtime = InProcessRuntime::new(topology.clone())?;
//! let controller = Controller::new(Arc::new(runtime));
//! let mesh = Mesh::new(vec![2, 2], vec!["x", "y"], topology.device_ids())?;
//! let spec = ArraySpec {
//!     shape: vec![8, 4],
//!     dtype: DType::Float32,
//!     sharding: Sharding::named(mesh, PartitionSpec::new([Some("x"), Some("y")]))?,
//! };
//! let array = controller.put_generated(spec, Generator::new(1))?;
//! let report = controller.verify(&array, Generator::new(1))?;
//! assert_eq!(report.mismatches, 0);
//! assert_eq!(controller.array_bytes(), 0);
//! # Ok(())
//! # }
//! ```

mod controller;
mod error;
mod generate;
mod grpc;
mod host;
mod protocol;
mod runtime;

pub use crate::{
    controller::{ArrayRestore, Controller, ShardedArray},
    error::{ColocatedError, Result},
    generate::Generator,
    grpc::{
        loopback_address, run_spmd_process, spawn_spmd, wait_spmd_report, ChildProcess,
        GrpcError, GrpcRuntime, GrpcRuntimeOptions, LaunchOptions, ShutdownHandle, SpmdArray,
        SpmdConfig, SpmdEvent, SpmdFaults, SpmdReport, WorkerCluster, WorkerHealth,
        WorkerOptions, WorkerServer, COORDINATOR_PREFIX, FAILED_PREFIX, LISTENING_PREFIX,
        PAUSED_LINE, REPORT_PREFIX, WORKER_PROTO, WRITING_LINE,
    },
    host::HostState,
    protocol::{
        ArrayId, ArraySpec, HostCall, HostReply, PutSource, ReplicaSlicing, RestoreItem, SaveItem,
        SaveReport,
        ShardBytes, VerifyReport,
    },
    runtime::{InProcessRuntime, Runtime},
};
