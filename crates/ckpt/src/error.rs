use thiserror::Error;

/// Errors of saving, restoring and inspecting checkpoints.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CkptError {
    /// A type handler registered twice for one leaf type without `override`.
    #[error("a type handler for {leaf_type} is already registered: pass override = true to replace it")]
    HandlerExists {
        /// The leaf type.
        leaf_type: String,
    },
    /// A leaf whose type has no registered handler.
    #[error("no type handler is registered for {leaf_type} (leaf {key_path}): register one with register_type_handler")]
    NoHandler {
        /// The leaf type or the `value_type` found in `_METADATA`.
        leaf_type: String,
        /// The leaf's key path.
        key_path: String,
    },
    /// A leaf that cannot be saved as given.
    #[error("cannot save leaf {key_path}: {reason}")]
    InvalidLeaf {
        /// The leaf's key path.
        key_path: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A leaf whose restore arguments do not fit the checkpoint.
    #[error("cannot restore leaf {key_path}: {reason}")]
    InvalidRestore {
        /// The leaf's key path.
        key_path: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// Checkpoint metadata that is missing, malformed or inconsistent.
    #[error("invalid checkpoint metadata in {path}: {reason}")]
    InvalidMetadata {
        /// The file or directory.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A save that failed after `save` had returned. Nothing of it was committed.
    #[error("{operation} failed in the background, so nothing of it was committed: save it again")]
    Background {
        /// The failed operation, such as `save of step 200`.
        operation: String,
        /// The error of the background work.
        #[source]
        source: Box<CkptError>,
    },
    /// A deletion of an old step by the retention rules that failed after
    /// the save that triggered it had committed.
    #[error("deleting old step {step} at {path} failed after a newer step was committed: reload() lists it again and a later save retries, or delete it by hand")]
    StepDelete {
        /// The step.
        step: u64,
        /// The step directory.
        path: String,
        /// The storage error.
        #[source]
        source: Box<CkptError>,
    },
    /// Background work that panicked or lost its thread, a bug in ckpt or
    /// in a type handler. Nothing of it was committed.
    #[error("{operation} stopped in the background: {message}; this is a bug in ckpt or in a type handler, so report it")]
    BackgroundPanic {
        /// The operation that was running.
        operation: String,
        /// The panic message.
        message: String,
    },
    /// A thread that the operating system did not start.
    #[error("could not start the thread {name}")]
    ThreadStart {
        /// The thread's name.
        name: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A save of a checkpoint or step whose previous save has not finished.
    #[error("a save of {checkpoint} is still in progress: call wait_until_finished before saving it again")]
    SaveInProgress {
        /// The checkpoint or step.
        checkpoint: String,
    },
    /// A write to a checkpoint manager opened read-only.
    #[error("cannot {operation}: the checkpoint manager of {root} is read-only")]
    ReadOnly {
        /// The requested operation.
        operation: String,
        /// The manager's root directory.
        root: String,
    },
    /// A step that the manager does not list as committed.
    #[error("step {step} is not a committed checkpoint under {root}: pick one of all_steps(), or reload() if another process saved it")]
    StepNotFound {
        /// The step.
        step: u64,
        /// The manager's root directory.
        root: String,
    },
    /// A step directory with complete contents but no `commit_success.txt`
    /// on a store where that file is the commit point.
    #[error("step {step} at {path} is complete but has no commit_success.txt, so it is not listed: check it, then add the marker to keep it or delete the directory to save the step again")]
    UncommittedStep {
        /// The step.
        step: u64,
        /// The step directory.
        path: String,
    },
    /// An option value that cannot work.
    #[error("invalid option {option}: {reason}")]
    InvalidOptions {
        /// The option.
        option: String,
        /// The problem and how to fix it.
        reason: String,
    },
    /// A checkpoint item that is invalid, missing, or not of the requested kind.
    #[error("invalid checkpoint item {item}: {reason}")]
    InvalidItem {
        /// The item name or directory.
        item: String,
        /// The problem and how to fix it.
        reason: String,
    },
    /// An error of the pytree model: a key that collides or escapes, or a
    /// structure mismatch.
    #[error(transparent)]
    PyTree(#[from] ckpt_pytree::TreeError),
    /// An error of the device model.
    #[error(transparent)]
    Device(#[from] ckpt_device::DeviceError),
    /// An error of storage.
    #[error(transparent)]
    Storage(#[from] ckpt_storage::StorageError),
    /// An error of the runtime or of a host.
    #[error(transparent)]
    Colocated(#[from] ckpt_colocated::ColocatedError),
    /// An error of the core model.
    #[error(transparent)]
    Core(#[from] ckpt_core::CoreError),
}

/// A `Result` with [`CkptError`].
pub type Result<T, E = CkptError> = std::result::Result<T, E>;
