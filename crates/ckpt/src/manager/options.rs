//! Options of [`CheckpointManager`](crate::CheckpointManager), named after
//! Orbax's `CheckpointManagerOptions`.

use std::{
    collections::BTreeSet,
    fmt,
    num::{NonZeroU64, NonZeroUsize},
    sync::Arc,
    time::Duration,
};

use serde_json::{Map, Value};

use super::StepNameFormat;
use crate::{AsyncOptions, Result};

/// The metrics that a save records in `_CHECKPOINT_METADATA`.
pub type Metrics = Map<String, Value>;

/// Scores a checkpoint from its metrics for the best-N retention rule.
/// `None` means the checkpoint has no usable score.
pub type BestFn = Arc<dyn Fn(&Metrics) -> Option<f64> + Send + Sync>;

/// Decides whether to save at `step`, given the newest step saved or in
/// flight, in place of the interval and the listed steps.
pub type ShouldSaveFn = Arc<dyn Fn(u64, Option<u64>) -> bool + Send + Sync>;

/// The direction of the best-N ranking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BestMode {
    /// Lower scores are better, as for a loss.
    Min,
    /// Higher scores are better, as for an accuracy.
    Max,
}

/// The best-N retention rule: keep the `max_to_keep` checkpoints with the
/// best scores.
#[derive(Clone)]
pub struct BestPolicy {
    /// The score of a checkpoint.
    pub score: BestFn,
    /// The direction of the ranking.
    pub mode: BestMode,
    /// Whether checkpoints without a score are kept. When false they are
    /// deleted first, except the newest step.
    pub keep_checkpoints_without_metrics: bool,
}

impl fmt::Debug for BestPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BestPolicy")
            .field("mode", &self.mode)
            .field("keep_checkpoints_without_metrics", &self.keep_checkpoints_without_metrics)
            .finish_non_exhaustive()
    }
}

/// Options of a [`CheckpointManager`](crate::CheckpointManager): step
/// names, save decisions, retention, cleanup and background work.
///
/// The defaults save every step that is newer than the last one, keep every
/// checkpoint, save in the background and delete in the save's thread.
#[derive(Clone)]
#[non_exhaustive]
pub struct CheckpointManagerOptions {
    /// Save when the step is a multiple of this.
    pub save_interval_steps: NonZeroU64,
    /// Also save at these steps.
    pub save_on_steps: BTreeSet<u64>,
    /// Replaces `save_interval_steps` and `save_on_steps`, and the rule that
    /// the first step of a manager is saved, when set.
    pub should_save_fn: Option<ShouldSaveFn>,
    /// Keep at most this many checkpoints by the latest-N rule, or by the
    /// best-N rule when `best` is set. `None` keeps every checkpoint and
    /// turns the other retention rules off.
    pub max_to_keep: Option<NonZeroUsize>,
    /// Also keep every step that is a multiple of this.
    pub keep_period: Option<NonZeroU64>,
    /// Also keep the oldest checkpoint and then each checkpoint committed at
    /// least this long after the last one kept by this rule.
    pub keep_time_interval: Option<Duration>,
    /// Rank checkpoints by score in place of keeping the latest.
    pub best: Option<BestPolicy>,
    /// The naming scheme of step directories.
    pub step_name_format: StepNameFormat,
    /// Never write: saves return `false`, deletions fail and nothing is
    /// cleaned up.
    pub read_only: bool,
    /// When the manager opens, delete the temporary directories of saves
    /// that did not finish. On a store without atomic rename this deletes
    /// step directories without `commit_success.txt` whose contents are
    /// incomplete; complete ones are reported and kept.
    pub cleanup_tmp_directories: bool,
    /// Save in the background, returning once the items are copied to host
    /// memory. When false, `save` returns after the commit.
    pub enable_async_checkpointing: bool,
    /// Limits on background saves in flight.
    pub async_options: AsyncOptions,
    /// Delete old checkpoints on a thread of their own, so the next save
    /// need not wait for the deletion.
    pub enable_background_delete: bool,
}

impl Default for CheckpointManagerOptions {
    fn default() -> CheckpointManagerOptions {
        CheckpointManagerOptions {
            save_interval_steps: NonZeroU64::MIN,
            save_on_steps: BTreeSet::new(),
            should_save_fn: None,
            max_to_keep: None,
            keep_period: None,
            keep_time_interval: None,
            best: None,
            step_name_format: StepNameFormat::default(),
            read_only: false,
            cleanup_tmp_directories: false,
            enable_async_checkpointing: true,
            async_options: AsyncOptions::default(),
            enable_background_delete: false,
        }
    }
}

impl fmt::Debug for CheckpointManagerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointManagerOptions")
            .field("save_interval_steps", &self.save_interval_steps)
            .field("save_on_steps", &self.save_on_steps)
            .field("should_save_fn", &self.should_save_fn.as_ref().map(|_| "<fn>"))
            .field("max_to_keep", &self.max_to_keep)
            .field("keep_period", &self.keep_period)
            .field("keep_time_interval", &self.keep_time_interval)
            .field("best", &self.best)
            .field("step_name_format", &self.step_name_format)
            .field("read_only", &self.read_only)
            .field("cleanup_tmp_directories", &self.cleanup_tmp_directories)
            .field("enable_async_checkpointing", &self.enable_async_checkpointing)
            .field("async_options", &self.async_options)
            .field("enable_background_delete", &self.enable_background_delete)
            .finish()
    }
}

impl CheckpointManagerOptions {
    /// Sets the save interval in steps.
    pub fn with_save_interval_steps(mut self, steps: NonZeroU64) -> CheckpointManagerOptions {
        self.save_interval_steps = steps;
        self
    }

    /// Sets steps that are saved whatever the interval.
    pub fn with_save_on_steps(mut self, steps: impl IntoIterator<Item = u64>) -> CheckpointManagerOptions {
        self.save_on_steps = steps.into_iter().collect();
        self
    }

    /// Sets the function that decides which steps are saved.
    pub fn with_should_save_fn(
        mut self,
        should_save: impl Fn(u64, Option<u64>) -> bool + Send + Sync + 'static,
    ) -> CheckpointManagerOptions {
        self.should_save_fn = Some(Arc::new(should_save));
        self
    }

    /// Sets the number of checkpoints kept by the latest-N or best-N rule.
    pub fn with_max_to_keep(mut self, max_to_keep: Option<NonZeroUsize>) -> CheckpointManagerOptions {
        self.max_to_keep = max_to_keep;
        self
    }

    /// Keeps every step that is a multiple of `period`.
    pub fn with_keep_period(mut self, period: Option<NonZeroU64>) -> CheckpointManagerOptions {
        self.keep_period = period;
        self
    }

    /// Keeps one checkpoint per `interval` of commit time.
    pub fn with_keep_time_interval(mut self, interval: Option<Duration>) -> CheckpointManagerOptions {
        self.keep_time_interval = interval;
        self
    }

    /// Ranks checkpoints with `score`, keeping those without a score.
    pub fn with_best_fn(
        mut self,
        score: impl Fn(&Metrics) -> Option<f64> + Send + Sync + 'static,
        mode: BestMode,
    ) -> CheckpointManagerOptions {
        self.best = Some(BestPolicy {
            score: Arc::new(score),
            mode,
            keep_checkpoints_without_metrics: true,
        });
        self
    }

    /// Ranks checkpoints by the numeric metric `name`.
    pub fn with_best_metric(self, name: impl Into<String>, mode: BestMode) -> CheckpointManagerOptions {
        let name = name.into();
        self.with_best_fn(move |metrics| metrics.get(&name).and_then(Value::as_f64), mode)
    }

    /// Sets whether checkpoints without a score survive the best-N rule.
    /// Takes effect only after [`with_best_fn`](Self::with_best_fn) or
    /// [`with_best_metric`](Self::with_best_metric).
    pub fn with_keep_checkpoints_without_metrics(mut self, keep: bool) -> CheckpointManagerOptions {
        if let Some(best) = &mut self.best {
            best.keep_checkpoints_without_metrics = keep;
        }
        self
    }

    /// Sets how step directories are named.
    pub fn with_step_name_format(mut self, format: StepNameFormat) -> CheckpointManagerOptions {
        self.step_name_format = format;
        self
    }

    /// Sets read-only mode.
    pub fn with_read_only(mut self, read_only: bool) -> CheckpointManagerOptions {
        self.read_only = read_only;
        self
    }

    /// Sets whether unfinished saves are deleted when the manager opens.
    pub fn with_cleanup_tmp_directories(mut self, cleanup: bool) -> CheckpointManagerOptions {
        self.cleanup_tmp_directories = cleanup;
        self
    }

    /// Sets whether saves run in the background.
    pub fn with_async_checkpointing(mut self, enable: bool) -> CheckpointManagerOptions {
        self.enable_async_checkpointing = enable;
        self
    }

    /// Sets the limits on background saves in flight.
    pub fn with_async_options(mut self, options: AsyncOptions) -> CheckpointManagerOptions {
        self.async_options = options;
        self
    }

    /// Sets whether old checkpoints are deleted on a thread of their own.
    pub fn with_background_delete(mut self, enable: bool) -> CheckpointManagerOptions {
        self.enable_background_delete = enable;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        self.step_name_format.validate()
    }
}
