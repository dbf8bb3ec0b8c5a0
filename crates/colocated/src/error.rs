use thiserror::Error;

/// Errors of the colocated runtime.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ColocatedError {
    /// A host that did not answer: its thread or process has exited.
    #[error("host {host} is unavailable: {reason}")]
    HostUnavailable {
        /// Index of the host.
        host: usize,
        /// What was observed, such as a closed channel or a refused connection.
        reason: String,
    },
    /// A host that answered with an error.
    #[error("host {host} failed to {operation}: {message}")]
    HostFailed {
        /// Index of the host.
        host: usize,
        /// What the host was asked to do.
        operation: &'static str,
        /// The host's error, rendered on the host.
        message: String,
    },
    /// A host index outside the topology.
    #[error("host {host} does not exist: the runtime has {num_hosts} hosts")]
    UnknownHost {
        /// The index requested.
        host: usize,
        /// Number of hosts in the runtime.
        num_hosts: usize,
    },
    /// An array id that a host does not hold.
    #[error("array {id} is not on host {host}: it was never put there or was dropped")]
    UnknownArray {
        /// The array id.
        id: u64,
        /// The host asked.
        host: usize,
    },
    /// A reply of the wrong kind for its request, a bug in a runtime.
    #[error("host {host} sent a reply of the wrong kind to {operation}")]
    UnexpectedReply {
        /// The host.
        host: usize,
        /// The request.
        operation: &'static str,
    },
    /// Shard data sent to a host that does not match the device's box.
    #[error("invalid shard data for array {id} on device {device}: {reason}")]
    InvalidShardData {
        /// The array id.
        id: u64,
        /// The device.
        device: u32,
        /// What does not match.
        reason: String,
    },
    /// A restore whose target dtype would change some stored values, sent
    /// without the opt-in that allows lossy casts.
    #[error("restoring {param_name} as {target} from the stored {stored} is a lossy cast; allow lossy casts for it or restore it as {stored}")]
    LossyCast {
        /// The array's parameter name in the checkpoint item.
        param_name: String,
        /// The stored dtype.
        stored: ckpt_core::DType,
        /// The requested dtype.
        target: ckpt_core::DType,
    },
    /// An error of the device model.
    #[error(transparent)]
    Device(#[from] ckpt_device::DeviceError),
    /// An error of storage.
    #[error(transparent)]
    Storage(#[from] ckpt_storage::StorageError),
    /// An error of the core model.
    #[error(transparent)]
    Core(#[from] ckpt_core::CoreError),
}

/// A `Result` with [`ColocatedError`].
pub type Result<T, E = ColocatedError> = std::result::Result<T, E>;
