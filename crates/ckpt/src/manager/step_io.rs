//! Writing, reading, scanning and deleting step directories.

use std::collections::BTreeMap;

use ckpt_storage::{
    CheckpointMetadata, ItemHandlers, PendingCheckpoint, Store, COMMIT_SUCCESS_FILE, TMP_SUFFIX,
};
use serde_json::Value;
use tracing::{info, warn};

use super::{retention::StepRecord, Metrics, StepNameFormat};
use crate::{
    item_io::{read_json_item, write_finalized_item, StagedItem, METRICS_ITEM},
    CkptError, PyTreeCheckpointer, Result,
};

/// A step directory without `commit_success.txt` on a store where that
/// file is the commit point, whose contents are complete: its
/// `_CHECKPOINT_METADATA` records a commit time and every item it names is
/// finalized.
///
/// Such a directory is usually a finished checkpoint whose marker was lost,
/// for example by a copy that skipped it. The manager neither lists nor
/// deletes it, and refuses to save the same step over it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UncommittedStep {
    /// The step.
    pub step: u64,
    /// The step directory.
    pub path: String,
}

/// The step directories found by a scan of the manager's root.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub(crate) committed: BTreeMap<u64, StepRecord>,
    pub(crate) uncommitted: Vec<UncommittedStep>,
    /// Names of directories left by saves that did not finish.
    pub(crate) unfinished: Vec<String>,
}

/// Writes `items` as the step directory `name` under `root` and commits it.
///
/// The order is Orbax's: the step's temporary directory with
/// `_CHECKPOINT_METADATA`, each item finalized inside it, then the step's
/// metadata with item handlers and metrics, `commit_success.txt`, and the
/// rename. A failure before the commit removes what was written; a failed
/// commit leaves an uncommitted directory. Returns the commit time.
pub(crate) fn write_step(
    writer: &PyTreeCheckpointer,
    root: &Store,
    name: &str,
    items: &[(String, StagedItem)],
    metrics: Option<&Metrics>,
) -> Result<u64> {
    let mut pending = PendingCheckpoint::begin(root, name)?;
    if let Err(err) = write_items(writer, pending.store(), items) {
        if let Err(abort_err) = pending.abort() {
            warn!(step = name, error = %abort_err, "could not remove the files of a failed save");
        }
        return Err(err);
    }
    let handlers = items
        .iter()
        .map(|(item, staged)| (item.clone(), staged.handler_name().to_owned()))
        .collect();
    let metadata = pending.metadata_mut();
    metadata.item_handlers = Some(ItemHandlers::Composite(handlers));
    if let Some(metrics) = metrics {
        metadata.metrics = metrics.clone();
    }
    pending.commit()?;
    Ok(now_nsecs())
}

fn write_items(writer: &PyTreeCheckpointer, step_dir: &Store, items: &[(String, StagedItem)]) -> Result<()> {
    for (name, item) in items {
        write_finalized_item(writer, step_dir, name, item)?;
    }
    Ok(())
}

/// Deletes the committed step directory `name`.
///
/// Where the store renames atomically the directory is first renamed to
/// its temporary name, so a crash mid-deletion leaves an unfinished save
/// that cleanup removes, never a listed step with files missing.
pub(crate) fn delete_step(root: &Store, name: &str) -> Result<()> {
    if !root.capabilities().atomic_rename {
        // NOTE: object stores delete keys in listing order, and
        // `_CHECKPOINT_METADATA` sorts before `commit_success.txt`, so a crash
        // mid-deletion leaves a step that is not complete and that cleanup
        // removes. A store that deletes in another order can leave a listed
        // step with items missing.
        return Ok(root.child(name)?.delete_all()?);
    }
    let doomed = format!("{name}{TMP_SUFFIX}");
    if root.list_dirs()?.contains(&doomed) {
        root.child(&doomed)?.delete_all()?;
    }
    root.rename_child(name, &doomed)?;
    root.child(&doomed)?.delete_all()?;
    Ok(())
}

/// Lists the step directories under `root` in the format `format`.
pub(crate) fn scan_root(root: &Store, format: &StepNameFormat) -> Result<Scan> {
    let rename = root.capabilities().atomic_rename;
    let mut scan = Scan::default();
    for name in root.list_dirs()? {
        if let Some(position) = name.find(TMP_SUFFIX) {
            if format.parse(&name[..position]).is_some() {
                scan.unfinished.push(name);
            }
            continue;
        }
        let Some(step) = format.parse(&name) else {
            continue;
        };
        let dir = root.child(&name)?;
        if rename || dir.exists(COMMIT_SUCCESS_FILE)? {
            scan.committed.insert(step, read_record(&dir, &name));
        } else if is_complete(&dir)? {
            scan.uncommitted.push(UncommittedStep { step, path: dir.url() });
        } else {
            scan.unfinished.push(name);
        }
    }
    Ok(scan)
}

/// Reads what retention needs from a committed step's `_CHECKPOINT_METADATA`.
///
/// A missing or unreadable file gives a record without time or metrics and
/// a warning, so one damaged step does not stop the manager from opening.
pub(crate) fn read_record(dir: &Store, name: &str) -> StepRecord {
    let metadata = match CheckpointMetadata::read(dir) {
        Ok(metadata) => metadata,
        Err(err) => {
            warn!(step = name, error = %err, "ignoring the unreadable _CHECKPOINT_METADATA of a committed step");
            None
        }
    };
    let Some(metadata) = metadata else {
        return StepRecord {
            name: name.to_owned(),
            time_nsecs: None,
            metrics: None,
        };
    };
    let has_metrics_item = match &metadata.item_handlers {
        Some(ItemHandlers::Composite(items)) => items.contains_key(METRICS_ITEM),
        _ => false,
    };
    let metrics = if has_metrics_item {
        read_metrics_item(dir, name)
    } else {
        Some(metadata.metrics)
    };
    StepRecord {
        name: name.to_owned(),
        time_nsecs: metadata.commit_timestamp_nsecs.or(metadata.init_timestamp_nsecs),
        metrics: metrics.filter(|metrics| !metrics.is_empty()),
    }
}

/// Reads the metrics item that Orbax's manager writes; `None`, with a
/// warning, when it is unreadable or not a JSON object.
fn read_metrics_item(dir: &Store, name: &str) -> Option<Metrics> {
    let value = dir
        .child(METRICS_ITEM)
        .map_err(CkptError::from)
        .and_then(|item| read_json_item(&item, METRICS_ITEM));
    match value {
        Ok(Value::Object(metrics)) => Some(metrics),
        Ok(other) => {
            warn!(step = name, found = %other, "ignoring metrics that are not a JSON object");
            None
        }
        Err(err) => {
            warn!(step = name, error = %err, "ignoring the unreadable metrics of a committed step");
            None
        }
    }
}

/// Checks whether an unmarked step directory contains a finished save: a
/// recorded commit time, and `commit_success.txt` in every item it names.
fn is_complete(dir: &Store) -> Result<bool> {
    let Ok(Some(metadata)) = CheckpointMetadata::read(dir) else {
        return Ok(false);
    };
    if metadata.commit_timestamp_nsecs.is_none() {
        return Ok(false);
    }
    match &metadata.item_handlers {
        Some(ItemHandlers::Composite(items)) if !items.is_empty() => {
            for item in items.keys() {
                if !dir.child(item)?.exists(COMMIT_SUCCESS_FILE)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        Some(ItemHandlers::Single(_)) => Ok(true),
        _ => Ok(false),
    }
}

/// Deletes the directories of unfinished saves found by a scan.
pub(crate) fn remove_unfinished(root: &Store, names: &[String]) -> Result<()> {
    for name in names {
        info!(directory = %name, root = %root.url(), "removing the directory of an unfinished save");
        root.child(name)?.delete_all()?;
    }
    Ok(())
}

fn now_nsecs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
