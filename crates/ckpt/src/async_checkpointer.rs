//! [`AsyncCheckpointer`]: saves that return once the data is copied to host
//! memory and commit in the background.

use std::sync::Arc;

use ckpt_colocated::Controller;
use ckpt_pytree::PyTree;
use ckpt_storage::{
    open_committed, ArrayFormat, ItemHandlers, PendingCheckpoint, StorageError, Store, TMP_SUFFIX,
};
use serde_json::Value;
use tracing::{info, warn};

use crate::{
    async_save::{snapshot_items, staging_bytes, AsyncOptions, Background},
    item_io::{read_json_item, StagedItem, JSON_ITEM_FILE},
    ItemSave, Leaf, PyTreeCheckpointer, PyTreeRestore, Result, TypeHandlerRegistry,
};

/// Saves checkpoints in the background (Orbax's `AsyncCheckpointer`).
///
/// [`save`](Self::save) returns once every host has copied the replica-0
/// shards of the item's sharded arrays into host memory. Changing or
/// dropping the live arrays afterwards does not change the checkpoint.
/// A background thread then writes and commits the copies, one save after
/// another, with the commit protocol of [`PyTreeCheckpointer`]: a save that
/// fails leaves no committed checkpoint.
///
/// A background failure is returned once, by whichever comes first of
/// [`wait_until_finished`](Self::wait_until_finished) and the next `save`.
/// That `save` starts nothing, so call it again. [`AsyncOptions`] bound the
/// saves in flight and the host memory their copies hold: `save` waits
/// while a limit is reached. Dropping the checkpointer waits for the saves
/// in flight and logs a failure that no caller received.
#[derive(Debug)]
pub struct AsyncCheckpointer {
    controller: Arc<Controller>,
    registry: TypeHandlerRegistry,
    format: ArrayFormat,
    overwrite: bool,
    /// Restores with the caller's settings.
    reader: PyTreeCheckpointer,
    /// Writes the snapshots of background saves.
    writer: Arc<PyTreeCheckpointer>,
    background: Background,
}

impl AsyncCheckpointer {
    /// Creates a checkpointer over `controller`'s runtime with the
    /// process-wide type handler registry, the default format and the
    /// default [`AsyncOptions`].
    pub fn new(controller: Arc<Controller>) -> AsyncCheckpointer {
        let registry = crate::global_registry();
        let format = ArrayFormat::default();
        AsyncCheckpointer {
            reader: PyTreeCheckpointer::new(Arc::clone(&controller)),
            writer: Arc::new(snapshot_writer(&controller, &registry, &format)),
            background: Background::new("ckpt-async-save", AsyncOptions::default()),
            controller,
            registry,
            format,
            overwrite: false,
        }
    }

    /// Sets the limits on saves in flight.
    pub fn with_options(mut self, options: AsyncOptions) -> AsyncCheckpointer {
        self.background = Background::new("ckpt-async-save", options);
        self
    }

    /// Uses `registry` in place of the process-wide one.
    pub fn with_registry(mut self, registry: TypeHandlerRegistry) -> AsyncCheckpointer {
        self.registry = registry;
        self.rebuild();
        self
    }

    /// Sets how arrays are stored.
    pub fn with_format(mut self, format: ArrayFormat) -> AsyncCheckpointer {
        self.format = format;
        self.rebuild();
        self
    }

    /// Sets whether a save replaces a committed checkpoint of the same
    /// name, as [`PyTreeCheckpointer::with_overwrite`].
    pub fn with_overwrite(mut self, overwrite: bool) -> AsyncCheckpointer {
        self.overwrite = overwrite;
        self.rebuild();
        self
    }

    fn rebuild(&mut self) {
        self.reader = PyTreeCheckpointer::new(Arc::clone(&self.controller))
            .with_registry(self.registry.clone())
            .with_format(self.format.clone());
        let writer = snapshot_writer(&self.controller, &self.registry, &self.format);
        self.writer = Arc::new(writer.with_overwrite(self.overwrite));
    }

    /// Returns the limits on saves in flight.
    pub fn options(&self) -> AsyncOptions {
        self.background.options()
    }

    /// Snapshots `args` and saves it as the checkpoint `name` under `parent`
    /// in the background.
    ///
    /// Returns a failure of an earlier background save first, without
    /// starting this one. Fails at once when a save of `name` is in flight
    /// or, unless [`with_overwrite`](Self::with_overwrite) is set, when
    /// `name` is committed already. Waits while the [`AsyncOptions`] limits
    /// are reached.
    pub fn save(&self, parent: &Store, name: &str, args: impl Into<ItemSave>) -> Result<()> {
        self.background.take_error()?;
        check_name(name)?;
        if !self.overwrite {
            check_not_committed(parent, name)?;
        }
        let checkpoint = parent.child(name)?.url().trim_end_matches('/').to_owned();
        let item = StagedItem::new(args.into())?;

        let bytes = staging_bytes([&item])?;
        let operation = format!("save of {checkpoint}");
        let ticket = self.background.reserve(&operation, &checkpoint, bytes)?;
        let (items, snapshot) = snapshot_items(&self.controller, vec![(name.to_owned(), item)])?;

        let writer = Arc::clone(&self.writer);
        let parent = parent.clone();
        let work = move || {
            let result = items
                .iter()
                .try_for_each(|(name, item)| commit_checkpoint(&writer, &parent, name, item));
            // Free the host copies before the place among the saves in flight.
            drop(snapshot);
            result
        };
        self.background.submit(ticket, Box::new(work))
    }

    /// Waits until every save in flight is committed or failed, and returns
    /// the first failure not yet returned.
    pub fn wait_until_finished(&self) -> Result<()> {
        self.background.wait_until_finished()
    }

    /// Returns whether a save is in flight.
    pub fn is_saving(&self) -> bool {
        self.background.is_busy()
    }

    /// Restores the pytree checkpoint `name` under `parent`. Saves still in
    /// flight are not visible.
    pub fn restore(&self, parent: &Store, name: &str, args: PyTreeRestore) -> Result<PyTree<Leaf>> {
        self.reader.restore(parent, name, args)
    }

    /// Restores the JSON checkpoint `name` under `parent`.
    pub fn restore_json(&self, parent: &Store, name: &str) -> Result<Value> {
        read_json_item(&open_committed(parent, name)?, JSON_ITEM_FILE)
    }

    /// Reads the tree structure and per-leaf metadata of the committed checkpoint `name`.
    pub fn metadata(&self, parent: &Store, name: &str) -> Result<crate::CheckpointMetadata> {
        crate::metadata(parent, name)
    }

    /// Waits for the saves in flight and returns the first failure not yet returned.
    pub fn close(self) -> Result<()> {
        self.background.wait_until_finished()
    }
}

/// Returns the checkpointer that writes snapshots.
///
/// A snapshot contains one replica of each shard, so replica 0 writes
/// whole shards. With replica-parallel writing the replicas that the snapshot
/// lacks would leave their slices unwritten.
// NOTE: so a background save writes each replicated box from one host,
// where a direct save spreads it over the hosts of its replicas. Staging
// only replica 0 keeps the host memory of a snapshot at one copy of the data.
pub(crate) fn snapshot_writer(
    controller: &Arc<Controller>,
    registry: &TypeHandlerRegistry,
    format: &ArrayFormat,
) -> PyTreeCheckpointer {
    PyTreeCheckpointer::new(Arc::clone(controller))
        .with_registry(registry.clone())
        .with_format(format.clone())
        .with_replica_parallel(false)
}

/// Fails when the checkpoint `name` under `parent` is committed, and when
/// `name` cannot name a checkpoint.
fn check_name(name: &str) -> Result<()> {
    if name.contains(TMP_SUFFIX) || name.ends_with('/') {
        return Err(StorageError::InvalidCheckpointName {
            name: name.to_owned(),
            reason: format!("a checkpoint name does not end in \"/\" or contain {TMP_SUFFIX}"),
        }
        .into());
    }
    Ok(())
}

fn check_not_committed(parent: &Store, name: &str) -> Result<()> {
    match open_committed(parent, name) {
        Ok(dir) => Err(StorageError::CheckpointExists { path: dir.url() }.into()),
        Err(StorageError::NotFound { .. } | StorageError::NotCommitted { .. }) => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// Writes `item` as the single-item checkpoint `name` under `parent` and commits it.
fn commit_checkpoint(
    writer: &PyTreeCheckpointer,
    parent: &Store,
    name: &str,
    item: &StagedItem,
) -> Result<()> {
    let mut pending = PendingCheckpoint::begin_with(parent, name, writer.commit_options())?;
    pending.metadata_mut().item_handlers = Some(ItemHandlers::Single(item.handler_name().to_owned()));
    if let Err(err) = item.write_files(writer, pending.store()) {
        if let Err(abort_err) = pending.abort() {
            warn!(checkpoint = name, error = %abort_err, "could not remove a failed save");
        }
        return Err(err);
    }
    let committed = pending.commit()?;
    info!(checkpoint = %committed.url(), "committed checkpoint in the background");
    Ok(())
}

