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
    /// A restore target whose key paths do not match the checkpoint's. Both
    /// lists are sorted and complete.
    #[error("{}", key_mismatch_message(missing, unexpected))]
    KeyMismatch {
        /// Key paths of the target (restore arguments or selected key
        /// paths) that the checkpoint lacks.
        missing: Vec<String>,
        /// Key paths of checkpoint leaves and empty nodes that a strict
        /// target does not cover.
        unexpected: Vec<String>,
    },
    /// An array leaf restored onto its saved sharding, which names devices
    /// that this runtime lacks.
    #[error(
        "cannot restore leaf {key_path} onto its saved sharding: it names {} that this runtime lacks (this runtime has {runtime_devices} devices); pass RestoreArgs::array with a sharding over this runtime's devices, or opt in to a fallback with RestoreArgs::with_missing_sharding(MissingSharding::Replicated, SingleDevice or Host)",
        device_list(missing_devices)
    )]
    SavedDevicesMissing {
        /// The leaf's key path.
        key_path: String,
        /// The saved device ids that this runtime lacks, sorted.
        missing_devices: Vec<u32>,
        /// Number of devices in this runtime.
        runtime_devices: usize,
    },
    /// An array leaf restored onto its saved sharding, which the checkpoint
    /// does not record.
    #[error("cannot restore leaf {key_path} onto its saved sharding: the checkpoint has no _sharding entry for it; pass RestoreArgs::array with a target sharding, or opt in to a fallback with RestoreArgs::with_missing_sharding(MissingSharding::Replicated, SingleDevice or Host)")]
    NoSavedSharding {
        /// The leaf's key path.
        key_path: String,
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

/// Most device ids that an error message lists before it counts the rest.
const MAX_LISTED_DEVICES: usize = 8;

/// Formats device ids as `device 4, device 5 and 2 more`.
fn device_list(ids: &[u32]) -> String {
    let mut listed: Vec<String> = ids
        .iter()
        .take(MAX_LISTED_DEVICES)
        .map(|id| format!("device {id}"))
        .collect();
    if ids.len() > MAX_LISTED_DEVICES {
        listed.push(format!("{} more", ids.len() - MAX_LISTED_DEVICES));
    }
    listed.join(", ")
}

fn key_mismatch_message(missing: &[String], unexpected: &[String]) -> String {
    let mut findings = Vec::new();
    if !missing.is_empty() {
        findings.push(format!("the checkpoint lacks target keys {}", missing.join(", ")));
    }
    if !unexpected.is_empty() {
        findings.push(format!("the target does not cover checkpoint keys {}", unexpected.join(", ")));
    }
    let remedy = match (missing.is_empty(), unexpected.is_empty()) {
        (true, _) => "restore a subset with PyTreeRestore::with_partial_restore(true) or KeyMatch::Partial, or select key paths with PyTreeRestore::with_key_paths",
        (false, true) => "correct or drop the missing keys, or leave them out with KeyMatch::Lenient",
        (false, false) => "restore a subset with KeyMatch::Partial and correct or drop the missing keys, or use KeyMatch::Lenient to leave both out",
    };
    format!(
        "the restore target does not match the checkpoint: {}; {remedy}",
        findings.join(" and ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_list_counts_the_rest() {
        let ids: Vec<u32> = (0..10).collect();
        assert_eq!(
            device_list(&ids),
            "device 0, device 1, device 2, device 3, device 4, device 5, device 6, device 7, 2 more"
        );
    }

    #[test]
    fn key_mismatch_names_remedy() {
        let message = key_mismatch_message(&[], &["['opt']".to_owned()]);
        assert!(message.contains("['opt']"), "{message}");
        assert!(message.contains("KeyMatch::Partial"), "{message}");
    }
}
