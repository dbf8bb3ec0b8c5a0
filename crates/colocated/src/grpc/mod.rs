//! The multi-process runtime: worker processes that own each host's
//! devices, reached over gRPC, and the coordination of SPMD processes.
//!
//! - [`GrpcRuntime`] is the controller's [`crate::Runtime`] over workers.
//! - [`WorkerServer`] is a worker: the `ckpt-worker` binary runs one.
//! - [`run_spmd_process`] runs one process of an SPMD job, with barriers on
//!   a coordination service that process 0 hosts.
//! - [`WorkerCluster`] and [`spawn_spmd`] start those processes on loopback.
//!   They kill them when dropped, and the processes exit on their own when
//!   the process that started them exits.
//! - The wire messages are prost structs written by hand, so building
//!   needs no `protoc`; [`WORKER_PROTO`] is their schema.

// tonic's handlers and clients pass `tonic::Status` (176 bytes) by value in
// every `Result`, as generated tonic services do.
#![allow(clippy::result_large_err)]

mod cancel;
mod client;
mod coordinator;
mod error;
mod launch;
mod pieces;
mod server;
mod service;
mod spmd;
mod wire;

pub use self::{
    client::{GrpcRuntime, GrpcRuntimeOptions, WorkerHealth},
    error::GrpcError,
    launch::{
        loopback_address, spawn_spmd, wait_spmd_report, ChildProcess, LaunchOptions, WorkerCluster,
        COORDINATOR_PREFIX, FAILED_PREFIX, LISTENING_PREFIX, PAUSED_LINE, REPORT_PREFIX,
        WRITING_LINE,
    },
    server::{ShutdownHandle, WorkerOptions, WorkerServer},
    spmd::{run_spmd_process, SpmdArray, SpmdConfig, SpmdEvent, SpmdFaults, SpmdReport},
    wire::WORKER_PROTO,
};

#[cfg(test)]
mod tests;
