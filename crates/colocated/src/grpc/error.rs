use thiserror::Error;

use crate::ColocatedError;

/// Errors of the gRPC transport: starting and reaching workers, SPMD
/// coordination, and the worker processes a launcher starts.
///
/// Failures of a request to one host are [`ColocatedError`]s, as with any
/// runtime; this type wraps them where a larger operation fails.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GrpcError {
    /// An address that does not parse as `ip:port`.
    #[error("invalid address {address:?}: expected ip:port, such as 127.0.0.2:0")]
    InvalidAddress {
        /// The address as given.
        address: String,
    },
    /// A listening socket that could not be opened.
    #[error("could not listen on {address}")]
    Bind {
        /// The address.
        address: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A local operating-system call that failed, such as starting a thread
    /// or an async runtime.
    #[error("could not {operation}")]
    Io {
        /// What was being done.
        operation: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A gRPC server that stopped with an error.
    #[error("the gRPC server on {address} failed: {reason}")]
    Serve {
        /// The server's address.
        address: String,
        /// The transport's error.
        reason: String,
    },
    /// A number of worker addresses that differs from the topology's hosts.
    #[error("expected {expected} worker addresses, one per host of the topology, but got {found}")]
    AddressCount {
        /// Hosts in the topology.
        expected: usize,
        /// Addresses given.
        found: usize,
    },
    /// A coordination service that could not be reached or went away.
    #[error("the SPMD coordinator at {address} is unreachable: {reason}; process 0, which runs it, may have exited")]
    CoordinatorUnavailable {
        /// The coordinator's address.
        address: String,
        /// What the transport reported.
        reason: String,
    },
    /// A barrier that some processes did not reach before its timeout.
    #[error("barrier {barrier:?} timed out after {seconds:.1} s waiting for processes {missing:?}")]
    BarrierTimedOut {
        /// The barrier's name.
        barrier: String,
        /// The timeout in seconds.
        seconds: f64,
        /// Processes that had not arrived.
        missing: Vec<usize>,
    },
    /// A barrier that failed because one process reported an error or disconnected.
    #[error("barrier {barrier:?} failed because process {process} {reason}")]
    BarrierFailed {
        /// The barrier's name.
        barrier: String,
        /// The process that failed.
        process: usize,
        /// What happened to it.
        reason: String,
    },
    /// An SPMD configuration that cannot run.
    #[error("invalid SPMD configuration: {reason}")]
    InvalidConfig {
        /// The problem and the value found.
        reason: String,
    },
    /// A child process that could not be started, did not report ready, or exited.
    #[error("{process}: {reason}")]
    Process {
        /// The process, such as `worker 2` or `spmd process 0`.
        process: String,
        /// What happened.
        reason: String,
    },
    /// A failure of the colocated runtime, naming the host.
    #[error(transparent)]
    Colocated(#[from] ColocatedError),
    /// A storage failure.
    #[error(transparent)]
    Storage(#[from] ckpt_storage::StorageError),
    /// A failure of the device model.
    #[error(transparent)]
    Device(#[from] ckpt_device::DeviceError),
}
