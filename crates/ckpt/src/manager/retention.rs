//! The retention rules: the choice of committed steps to delete.

use std::{collections::BTreeMap, time::Duration};

use super::{BestMode, CheckpointManagerOptions, Metrics};

/// The manager's record of a committed step.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StepRecord {
    /// The step directory's name.
    pub(crate) name: String,
    /// Commit time in nanoseconds since the Unix epoch, when known.
    pub(crate) time_nsecs: Option<u64>,
    /// The metrics saved with the step; `None` when there were none.
    pub(crate) metrics: Option<Metrics>,
}

/// Returns the steps to delete, oldest first.
///
/// A step is kept when any rule keeps it:
/// - the latest `max_to_keep` steps, or with a best policy the
///   `max_to_keep` best-scoring steps and, if so configured, every step
///   without a score (ties go to the newer step);
/// - every multiple of `keep_period`;
/// - with `keep_time_interval`, the oldest step and each step committed at
///   least that long after the last one this rule kept, as Orbax 0.12.8's
///   `EveryNSeconds` does. Steps with no known time are not kept by it;
/// - the newest step, because it is where training resumes. Orbax 0.12.8's
///   best-N rule deletes it when its score is not among the best.
///
/// Without `max_to_keep` nothing is deleted.
pub(crate) fn steps_to_delete(steps: &BTreeMap<u64, StepRecord>, options: &CheckpointManagerOptions) -> Vec<u64> {
    let Some(max_to_keep) = options.max_to_keep else {
        return Vec::new();
    };
    let records: Vec<(u64, &StepRecord)> = steps.iter().map(|(step, record)| (*step, record)).collect();
    let Some(newest) = records.len().checked_sub(1) else {
        return Vec::new();
    };
    let mut keep = vec![false; records.len()];
    keep[newest] = true;

    match &options.best {
        None => {
            let first_kept = records.len().saturating_sub(max_to_keep.get());
            keep[first_kept..].fill(true);
        }
        Some(best) => {
            let mut scored = Vec::new();
            for (position, (_, record)) in records.iter().enumerate() {
                let score = record.metrics.as_ref().and_then(|metrics| (best.score)(metrics));
                match score.filter(|score| !score.is_nan()) {
                    Some(score) => scored.push((position, score)),
                    None => keep[position] |= best.keep_checkpoints_without_metrics,
                }
            }
            scored.sort_by(|(a_position, a), (b_position, b)| {
                let by_score = match best.mode {
                    BestMode::Min => a.total_cmp(b),
                    BestMode::Max => b.total_cmp(a),
                };
                by_score.then(b_position.cmp(a_position))
            });
            for (position, _) in scored.into_iter().take(max_to_keep.get()) {
                keep[position] = true;
            }
        }
    }

    if let Some(period) = options.keep_period {
        for (position, (step, _)) in records.iter().enumerate() {
            keep[position] |= step % period.get() == 0;
        }
    }
    if let Some(interval) = options.keep_time_interval {
        keep_by_interval(&records, interval, &mut keep);
    }

    records
        .iter()
        .zip(keep)
        .filter(|(_, kept)| !kept)
        .map(|((step, _), _)| *step)
        .collect()
}

fn keep_by_interval(records: &[(u64, &StepRecord)], interval: Duration, keep: &mut [bool]) {
    let interval = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
    let mut last_kept: Option<u64> = None;
    for (position, (_, record)) in records.iter().enumerate() {
        let Some(time) = record.time_nsecs else {
            continue;
        };
        let due = match last_kept {
            None => true,
            Some(last) => time.checked_sub(last).is_some_and(|elapsed| elapsed >= interval),
        };
        if due {
            keep[position] = true;
            last_kept = Some(time);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU64, NonZeroUsize};

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn record(step: u64, loss: Option<f64>) -> (u64, StepRecord) {
        let metrics = loss.map(|loss| {
            let mut metrics = Metrics::new();
            metrics.insert("loss".into(), json!(loss));
            metrics
        });
        let record = StepRecord {
            name: step.to_string(),
            time_nsecs: Some(step * 1_000_000_000),
            metrics,
        };
        (step, record)
    }

    fn keep(n: usize) -> Option<NonZeroUsize> {
        NonZeroUsize::new(n)
    }

    #[test]
    fn latest_n() {
        let steps = (1..=5).map(|step| record(step, None)).collect();
        let options = CheckpointManagerOptions::default().with_max_to_keep(keep(2));
        assert_eq!(steps_to_delete(&steps, &options), [1, 2, 3]);
    }

    #[test]
    fn no_max_to_keep_keeps_all() {
        let steps = (1..=5).map(|step| record(step, None)).collect();
        let options = CheckpointManagerOptions::default().with_keep_period(NonZeroU64::new(2));
        assert!(steps_to_delete(&steps, &options).is_empty());
    }

    #[test]
    fn best_n_keeps_newest_with_worsening_metric() {
        let steps = (1..=5).map(|i| record(i * 100, Some(i as f64))).collect();
        let options = CheckpointManagerOptions::default()
            .with_max_to_keep(keep(3))
            .with_best_metric("loss", BestMode::Min);
        assert_eq!(steps_to_delete(&steps, &options), [400]);
    }

    #[test]
    fn best_n_max_mode() {
        let steps = (1..=5).map(|i| record(i, Some(i as f64))).collect();
        let options = CheckpointManagerOptions::default()
            .with_max_to_keep(keep(2))
            .with_best_metric("loss", BestMode::Max);
        assert_eq!(steps_to_delete(&steps, &options), [1, 2, 3]);
    }

    #[test]
    fn best_n_ties_keep_newer() {
        let steps = (1..=4).map(|i| record(i, Some(1.0))).collect();
        let options = CheckpointManagerOptions::default()
            .with_max_to_keep(keep(2))
            .with_best_metric("loss", BestMode::Min);
        assert_eq!(steps_to_delete(&steps, &options), [1, 2]);
    }

    #[test]
    fn steps_without_metrics_kept_by_default() {
        let steps = [record(1, None), record(2, Some(3.0)), record(3, Some(2.0)), record(4, Some(1.0))]
            .into_iter()
            .collect();
        let options = CheckpointManagerOptions::default()
            .with_max_to_keep(keep(1))
            .with_best_metric("loss", BestMode::Min);
        assert_eq!(steps_to_delete(&steps, &options), [2, 3]);
    }

    #[test]
    fn steps_without_metrics_dropped_by_option() {
        let steps = [record(1, None), record(2, Some(1.0)), record(3, None)].into_iter().collect();
        let options = CheckpointManagerOptions::default()
            .with_max_to_keep(keep(1))
            .with_best_metric("loss", BestMode::Min)
            .with_keep_checkpoints_without_metrics(false);
        assert_eq!(steps_to_delete(&steps, &options), [1]);
    }

    #[test]
    fn keep_period_keeps_multiples() {
        let steps = (1..=10).map(|step| record(step, None)).collect();
        let options = CheckpointManagerOptions::default()
            .with_max_to_keep(keep(1))
            .with_keep_period(NonZeroU64::new(4));
        assert_eq!(steps_to_delete(&steps, &options), [1, 2, 3, 5, 6, 7, 9]);
    }

    #[test]
    fn keep_time_interval_keeps_one_per_interval() {
        // Steps are committed one second apart.
        let steps = (1..=7).map(|step| record(step, None)).collect();
        let options = CheckpointManagerOptions::default()
            .with_max_to_keep(keep(1))
            .with_keep_time_interval(Some(Duration::from_secs(3)));
        assert_eq!(steps_to_delete(&steps, &options), [2, 3, 5, 6]);
    }

    fn options_strategy() -> impl Strategy<Value = CheckpointManagerOptions> {
        (1usize..6, proptest::option::of(1u64..5), any::<bool>(), any::<bool>(), proptest::option::of(0u64..4)).prop_map(
            |(max, period, best, keep_unscored, interval)| {
                let mut options = CheckpointManagerOptions::default()
                    .with_max_to_keep(keep(max))
                    .with_keep_period(period.and_then(NonZeroU64::new))
                    .with_keep_time_interval(interval.map(Duration::from_secs));
                if best {
                    options = options
                        .with_best_metric("loss", BestMode::Min)
                        .with_keep_checkpoints_without_metrics(keep_unscored);
                }
                options
            },
        )
    }

    proptest! {
        #[test]
        fn retention_invariants(
            losses in proptest::collection::btree_map(0u64..60, proptest::option::of(-5.0f64..5.0), 1..20),
            options in options_strategy(),
        ) {
            let steps: BTreeMap<u64, StepRecord> = losses.iter().map(|(step, loss)| record(*step, *loss)).collect();
            let deleted = steps_to_delete(&steps, &options);
            let newest = *steps.keys().next_back().unwrap();
            prop_assert!(!deleted.contains(&newest));
            prop_assert!(deleted.iter().all(|step| steps.contains_key(step)));
            // Dropping unscored steps can leave fewer than max_to_keep.
            let keeps_unscored = options.best.as_ref().is_none_or(|best| best.keep_checkpoints_without_metrics);
            if keeps_unscored {
                let max_to_keep = options.max_to_keep.unwrap().get();
                prop_assert!(steps.len() - deleted.len() >= max_to_keep.min(steps.len()));
            }
            if let Some(period) = options.keep_period {
                prop_assert!(deleted.iter().all(|step| step % period.get() != 0));
            }
        }
    }
}
