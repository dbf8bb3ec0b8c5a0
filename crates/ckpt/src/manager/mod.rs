//! [`CheckpointManager`]: numbered steps of several items under one root,
//! with save decisions, retention and background saving, in Orbax's layout.

mod options;
mod retention;
mod step_io;
mod step_name;

use std::{
    collections::{BTreeMap, BTreeSet},
    num::NonZeroUsize,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use ckpt_colocated::Controller;
use ckpt_storage::{open_committed, ArrayFormat, StorageError, Store};
use serde_json::Value;
use tracing::{info, warn};

pub use self::{
    options::{BestFn, BestMode, BestPolicy, CheckpointManagerOptions, Metrics, ShouldSaveFn},
    step_io::UncommittedStep,
    step_name::StepNameFormat,
};
use self::{
    retention::{steps_to_delete, StepRecord},
    step_io::{delete_step, remove_unfinished, scan_root, write_step},
};
use crate::{
    async_checkpointer::snapshot_writer,
    async_save::{snapshot_items, staging_bytes, AsyncOptions, Background},
    item_io::{read_json_item, validate_item_name, StagedItem, JSON_ITEM_FILE, METRICS_ITEM},
    CkptError, Composite, CompositeRestore, ItemRestore, PyTreeCheckpointer, RestoredItem,
    RestoredItems, Result, TypeHandlerRegistry,
};

/// Options of one [`CheckpointManager::save_with`] call.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct StepSaveOptions {
    /// Metrics ranked by the best-N retention rule. They are saved as the
    /// JSON item `metrics`, where Orbax's manager reads them, and in the
    /// step's `_CHECKPOINT_METADATA`.
    pub metrics: Option<Metrics>,
    /// Save even where the save decision rules would skip the step, as on
    /// preemption. A step that exists is still rejected.
    pub force: bool,
}

impl StepSaveOptions {
    /// Default options: no metrics, not forced.
    pub fn new() -> StepSaveOptions {
        StepSaveOptions::default()
    }

    /// Records `metrics` with the step.
    pub fn with_metrics(mut self, metrics: Metrics) -> StepSaveOptions {
        self.metrics = Some(metrics);
        self
    }

    /// Sets whether the save ignores the save decision rules.
    pub fn with_force(mut self, force: bool) -> StepSaveOptions {
        self.force = force;
        self
    }
}

/// Steps of a manager: committed, being saved, and found complete without
/// their commit marker.
#[derive(Debug, Default)]
struct Steps {
    committed: BTreeMap<u64, StepRecord>,
    in_flight: BTreeSet<u64>,
    uncommitted: Vec<UncommittedStep>,
}

type SharedSteps = Arc<Mutex<Steps>>;

fn lock(steps: &Mutex<Steps>) -> MutexGuard<'_, Steps> {
    steps.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes a step from the in-flight set when its save ends, whatever the outcome.
struct InFlight {
    steps: SharedSteps,
    step: u64,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.steps).in_flight.remove(&self.step);
    }
}

/// State shared with the background work of a save.
#[derive(Clone)]
struct SaveContext {
    root: Store,
    options: CheckpointManagerOptions,
    steps: SharedSteps,
    deleter: Option<Arc<Background>>,
}

/// Saves numbered steps of several named items under one root directory,
/// and decides which to keep (Orbax's `CheckpointManager`).
///
/// Each step is a directory `<root>/<step>/` (named by
/// [`StepNameFormat`]) containing one directory per item, such as a pytree
/// `state/` and a JSON `extra/`, and a `_CHECKPOINT_METADATA` that records
/// each item's handler and the step's metrics. Python Orbax reads these
/// directories and the manager reads Orbax's.
///
/// Saves run in the background by default, as with [`crate::AsyncCheckpointer`]:
/// `save` returns once the items are copied to host memory. The step lists
/// ([`all_steps`](Self::all_steps), [`latest_step`](Self::latest_step))
/// contain committed steps only, so a restore during a save reads the
/// previous step. Orbax 0.12.8 lists a step as soon as its save starts.
/// After a step commits, the retention rules pick old steps to delete, as
/// [`CheckpointManagerOptions`] describes.
pub struct CheckpointManager {
    root: Store,
    controller: Arc<Controller>,
    options: CheckpointManagerOptions,
    registry: TypeHandlerRegistry,
    format: ArrayFormat,
    /// Restores, and writes synchronous saves.
    checkpointer: Arc<PyTreeCheckpointer>,
    /// Writes the snapshots of background saves.
    snapshot_writer: Arc<PyTreeCheckpointer>,
    steps: SharedSteps,
    saver: Background,
    deleter: Option<Arc<Background>>,
}

impl std::fmt::Debug for CheckpointManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointManager")
            .field("root", &self.root.url())
            .field("options", &self.options)
            .field("steps", &*lock(&self.steps))
            .finish_non_exhaustive()
    }
}

impl CheckpointManager {
    /// Opens the manager of the steps under `root`.
    ///
    /// Lists the committed steps and reads their metrics. With
    /// `cleanup_tmp_directories` it deletes the directories of unfinished
    /// saves first. A complete step without `commit_success.txt` is kept,
    /// logged and returned by [`uncommitted_steps`](Self::uncommitted_steps).
    pub fn new(
        root: Store,
        controller: Arc<Controller>,
        options: CheckpointManagerOptions,
    ) -> Result<CheckpointManager> {
        options.validate()?;
        let scan = scan_root(&root, &options.step_name_format)?;
        if options.cleanup_tmp_directories && !options.read_only {
            remove_unfinished(&root, &scan.unfinished)?;
        }
        report_uncommitted(&scan.uncommitted);

        let registry = crate::global_registry();
        let format = ArrayFormat::default();
        let deleter = options.enable_background_delete.then(|| {
            let unbounded = AsyncOptions::default().with_max_saves_in_flight(NonZeroUsize::MAX);
            Arc::new(Background::new("ckpt-manager-delete", unbounded))
        });
        let steps = Steps {
            committed: scan.committed,
            in_flight: BTreeSet::new(),
            uncommitted: scan.uncommitted,
        };
        Ok(CheckpointManager {
            checkpointer: Arc::new(PyTreeCheckpointer::new(Arc::clone(&controller))),
            snapshot_writer: Arc::new(snapshot_writer(&controller, &registry, &format)),
            saver: Background::new("ckpt-manager-save", options.async_options),
            deleter,
            steps: Arc::new(Mutex::new(steps)),
            root,
            controller,
            options,
            registry,
            format,
        })
    }

    /// Uses `registry` in place of the process-wide one for later saves and restores.
    pub fn with_registry(mut self, registry: TypeHandlerRegistry) -> CheckpointManager {
        self.registry = registry;
        self.rebuild_checkpointers();
        self
    }

    /// Sets how arrays of later saves are stored.
    pub fn with_format(mut self, format: ArrayFormat) -> CheckpointManager {
        self.format = format;
        self.rebuild_checkpointers();
        self
    }

    fn rebuild_checkpointers(&mut self) {
        let checkpointer = PyTreeCheckpointer::new(Arc::clone(&self.controller))
            .with_registry(self.registry.clone())
            .with_format(self.format.clone());
        self.checkpointer = Arc::new(checkpointer);
        self.snapshot_writer = Arc::new(snapshot_writer(&self.controller, &self.registry, &self.format));
    }

    /// Returns the root directory.
    pub fn root(&self) -> &Store {
        &self.root
    }

    /// Returns the options.
    pub fn options(&self) -> &CheckpointManagerOptions {
        &self.options
    }

    /// Returns the committed steps, oldest first.
    pub fn all_steps(&self) -> Vec<u64> {
        lock(&self.steps).committed.keys().copied().collect()
    }

    /// Returns the newest committed step.
    pub fn latest_step(&self) -> Option<u64> {
        lock(&self.steps).committed.keys().next_back().copied()
    }

    /// Returns the metrics saved with a committed step, or `None` for an
    /// unknown step and one saved without metrics.
    pub fn metrics(&self, step: u64) -> Option<Metrics> {
        lock(&self.steps).committed.get(&step)?.metrics.clone()
    }

    /// Returns the complete step directories without `commit_success.txt`
    /// found when the manager opened or last reloaded.
    pub fn uncommitted_steps(&self) -> Vec<UncommittedStep> {
        lock(&self.steps).uncommitted.clone()
    }

    /// Returns whether a save or deletion is running in the background.
    pub fn is_saving_in_progress(&self) -> bool {
        self.saver.is_busy() || self.deleter.as_ref().is_some_and(|deleter| deleter.is_busy())
    }

    /// Returns whether [`save`](Self::save) would save `step`.
    ///
    /// Never in read-only mode or at or before the newest step saved or in
    /// flight. Otherwise `should_save_fn` decides when it is set. Without it
    /// the step is saved when it is a multiple of `save_interval_steps`, is
    /// listed in `save_on_steps`, or is the manager's first.
    pub fn should_save(&self, step: u64) -> bool {
        if self.options.read_only {
            return false;
        }
        let last = {
            let steps = lock(&self.steps);
            let committed = steps.committed.keys().next_back().copied();
            committed.max(steps.in_flight.iter().next_back().copied())
        };
        if last.is_some_and(|last| last >= step) {
            return false;
        }
        if let Some(should_save) = &self.options.should_save_fn {
            return should_save(step, last);
        }
        last.is_none()
            || step.is_multiple_of(self.options.save_interval_steps.get())
            || self.options.save_on_steps.contains(&step)
    }

    /// Saves `items` as `step` when [`should_save`](Self::should_save)
    /// returns true, and returns whether it saved.
    pub fn save(&self, step: u64, items: Composite) -> Result<bool> {
        self.save_with(step, items, StepSaveOptions::default())
    }

    /// Saves `items` as `step` with metrics or forced, and returns whether it did.
    ///
    /// Returns a failure of an earlier background save or deletion first,
    /// without saving. Read-only managers save nothing and return `false`.
    /// Fails when the step is committed, in flight, or found complete
    /// without its commit marker. In the background mode the step is not
    /// listed until its commit; the retention rules then run.
    pub fn save_with(&self, step: u64, items: Composite, options: StepSaveOptions) -> Result<bool> {
        self.take_background_error()?;
        if self.options.read_only {
            warn!(step, root = %self.root.url(), "the checkpoint manager is read-only, so the step is not saved");
            return Ok(false);
        }
        if !options.force && !self.should_save(step) {
            return Ok(false);
        }
        let name = self.options.step_name_format.name(step);
        let staged = stage_items(items, options.metrics.as_ref())?;
        self.check_new_step(step, &name)?;

        let in_flight = self.mark_in_flight(step)?;
        let context = SaveContext {
            root: self.root.clone(),
            options: self.options.clone(),
            steps: Arc::clone(&self.steps),
            deleter: self.deleter.clone(),
        };
        if !self.options.enable_async_checkpointing {
            let doomed = commit_step(&context, &self.checkpointer, step, &name, &staged, options.metrics.as_ref())?;
            drop(in_flight);
            delete_old_steps(&context, doomed)?;
            return Ok(true);
        }

        let operation = format!("save of step {step}");
        let checkpoint = format!("step {step} under {}", self.root.url());
        let bytes = staging_bytes(staged.iter().map(|(_, item)| item))?;
        let ticket = self.saver.reserve(&operation, &checkpoint, bytes)?;
        let (staged, snapshot) = snapshot_items(&self.controller, staged)?;
        let writer = Arc::clone(&self.snapshot_writer);
        let metrics = options.metrics;
        let work = move || {
            let doomed = commit_step(&context, &writer, step, &name, &staged, metrics.as_ref());
            // Free the host copies before deleting old steps.
            drop(snapshot);
            drop(in_flight);
            delete_old_steps(&context, doomed?)
        };
        self.saver.submit(ticket, Box::new(work))?;
        Ok(true)
    }

    fn check_new_step(&self, step: u64, name: &str) -> Result<()> {
        let steps = lock(&self.steps);
        if steps.committed.contains_key(&step) {
            return Err(StorageError::CheckpointExists {
                path: self.root.child(name)?.url(),
            }
            .into());
        }
        if steps.in_flight.contains(&step) {
            return Err(CkptError::SaveInProgress {
                checkpoint: format!("step {step}"),
            });
        }
        if let Some(found) = steps.uncommitted.iter().find(|found| found.step == step) {
            return Err(CkptError::UncommittedStep {
                step,
                path: found.path.clone(),
            });
        }
        Ok(())
    }

    fn mark_in_flight(&self, step: u64) -> Result<InFlight> {
        let mut steps = lock(&self.steps);
        if !steps.in_flight.insert(step) {
            return Err(CkptError::SaveInProgress {
                checkpoint: format!("step {step}"),
            });
        }
        Ok(InFlight {
            steps: Arc::clone(&self.steps),
            step,
        })
    }

    fn take_background_error(&self) -> Result<()> {
        self.saver.take_error()?;
        match &self.deleter {
            Some(deleter) => deleter.take_error(),
            None => Ok(()),
        }
    }

    /// Restores the requested items of the committed `step`.
    ///
    /// Fails with [`CkptError::StepNotFound`] for a step the manager does
    /// not list, such as one still being saved.
    pub fn restore(&self, step: u64, args: CompositeRestore) -> Result<RestoredItems> {
        let step_dir = self.open_step(step)?;
        let mut restored = RestoredItems::default();
        for (name, request) in args.into_items() {
            validate_item_name(&name)?;
            let item = match request {
                ItemRestore::PyTree(args) => {
                    RestoredItem::PyTree(self.checkpointer.restore(&step_dir, &name, args)?)
                }
                ItemRestore::Json(_) => {
                    let file = if name == METRICS_ITEM { METRICS_ITEM } else { JSON_ITEM_FILE };
                    RestoredItem::Json(read_json_item(&open_committed(&step_dir, &name)?, file)?)
                }
            };
            restored.insert(name, item);
        }
        Ok(restored)
    }

    /// Reads the `_CHECKPOINT_METADATA` of the committed `step`: item
    /// handlers, metrics and timestamps.
    pub fn step_metadata(&self, step: u64) -> Result<ckpt_storage::CheckpointMetadata> {
        let step_dir = self.open_step(step)?;
        ckpt_storage::CheckpointMetadata::read(&step_dir)?.ok_or_else(|| CkptError::InvalidMetadata {
            path: step_dir.url(),
            reason: "_CHECKPOINT_METADATA is missing".into(),
        })
    }

    /// Reads the tree structure and per-leaf metadata of the pytree item `item` of `step`.
    pub fn item_metadata(&self, step: u64, item: &str) -> Result<crate::CheckpointMetadata> {
        validate_item_name(item)?;
        crate::metadata(&self.open_step(step)?, item)
    }

    fn open_step(&self, step: u64) -> Result<Store> {
        let name = lock(&self.steps).committed.get(&step).map(|record| record.name.clone());
        let Some(name) = name else {
            return Err(CkptError::StepNotFound {
                step,
                root: self.root.url(),
            });
        };
        Ok(open_committed(&self.root, &name)?)
    }

    /// Deletes the committed `step` now.
    pub fn delete(&self, step: u64) -> Result<()> {
        if self.options.read_only {
            return Err(CkptError::ReadOnly {
                operation: format!("delete step {step}"),
                root: self.root.url(),
            });
        }
        let record = lock(&self.steps).committed.remove(&step);
        let Some(record) = record else {
            return Err(CkptError::StepNotFound {
                step,
                root: self.root.url(),
            });
        };
        info!(step, root = %self.root.url(), "deleting step");
        delete_step(&self.root, &record.name)
    }

    /// Waits for the saves and deletions in flight, then lists the steps
    /// under the root again, to see steps that another process saved or
    /// deleted. Returns a background failure first.
    pub fn reload(&self) -> Result<()> {
        self.wait_until_finished()?;
        let scan = scan_root(&self.root, &self.options.step_name_format)?;
        report_uncommitted(&scan.uncommitted);
        let mut steps = lock(&self.steps);
        steps.committed = scan.committed;
        steps.uncommitted = scan.uncommitted;
        Ok(())
    }

    /// Waits until the saves and deletions in flight end, and returns the
    /// first failure not yet returned.
    pub fn wait_until_finished(&self) -> Result<()> {
        let saved = self.saver.wait_until_finished();
        let deleted = match &self.deleter {
            Some(deleter) => deleter.wait_until_finished(),
            None => Ok(()),
        };
        saved.and(deleted)
    }

    /// Waits for the work in flight and returns the first failure not yet returned.
    pub fn close(self) -> Result<()> {
        self.wait_until_finished()
    }
}

/// Checks and converts the items of a step, adding the metrics as the JSON
/// item `metrics` where Orbax's manager stores them.
fn stage_items(items: Composite, metrics: Option<&Metrics>) -> Result<Vec<(String, StagedItem)>> {
    if items.is_empty() {
        return Err(CkptError::InvalidItem {
            item: "(none)".into(),
            reason: "a step needs at least one item: add one with Composite::with_item".into(),
        });
    }
    let mut staged = items
        .into_items()
        .into_iter()
        .map(|(name, args)| {
            validate_item_name(&name)?;
            Ok((name, StagedItem::new(args)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let Some(metrics) = metrics.filter(|metrics| !metrics.is_empty()) else {
        return Ok(staged);
    };
    if staged.iter().any(|(name, _)| name == METRICS_ITEM) {
        return Err(CkptError::InvalidItem {
            item: METRICS_ITEM.into(),
            reason: "the step's metrics are saved under this name: rename the item or pass no metrics".into(),
        });
    }
    let item = StagedItem::Json {
        value: Value::Object(metrics.clone()),
        file: METRICS_ITEM,
    };
    staged.push((METRICS_ITEM.to_owned(), item));
    Ok(staged)
}

fn report_uncommitted(uncommitted: &[UncommittedStep]) {
    for found in uncommitted {
        warn!(
            step = found.step,
            path = %found.path,
            "found a complete step without commit_success.txt: it is not listed or deleted; add the marker to keep it"
        );
    }
}

/// Writes and commits a step and lists it. Returns the old steps that the
/// retention rules drop, which are no longer listed.
fn commit_step(
    context: &SaveContext,
    writer: &PyTreeCheckpointer,
    step: u64,
    name: &str,
    items: &[(String, StagedItem)],
    metrics: Option<&Metrics>,
) -> Result<Vec<(u64, String)>> {
    let time = write_step(writer, &context.root, name, items, metrics)?;
    info!(step, root = %context.root.url(), "committed step");

    let mut steps = lock(&context.steps);
    let record = StepRecord {
        name: name.to_owned(),
        time_nsecs: Some(time),
        metrics: metrics.filter(|metrics| !metrics.is_empty()).cloned(),
    };
    steps.committed.insert(step, record);
    let doomed = steps_to_delete(&steps.committed, &context.options);
    Ok(doomed
        .into_iter()
        .filter_map(|old| steps.committed.remove(&old).map(|record| (old, record.name)))
        .collect())
}

/// Deletes the steps that the retention rules dropped, on the deleter
/// thread when there is one. Returns the first failure of a deletion run
/// here and logs the others.
fn delete_old_steps(context: &SaveContext, doomed: Vec<(u64, String)>) -> Result<()> {
    let mut first_error = None;
    for (step, name) in doomed {
        info!(step, root = %context.root.url(), "deleting step dropped by the retention rules");
        let root = context.root.clone();
        let delete = move || {
            delete_step(&root, &name).map_err(|err| CkptError::StepDelete {
                step,
                path: root.child(&name).map(|dir| dir.url()).unwrap_or_else(|_| name.clone()),
                source: Box::new(err),
            })
        };
        let Some(deleter) = &context.deleter else {
            match delete() {
                Ok(()) => {}
                Err(err) if first_error.is_none() => first_error = Some(err),
                Err(err) => warn!(step, error = %err, "could not delete an old step"),
            }
            continue;
        };
        deleter.enqueue(&format!("deletion of step {step}"), Box::new(delete))?;
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

