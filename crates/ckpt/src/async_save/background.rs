//! A background thread that runs saves in order, with back-pressure on the
//! number of saves in flight and on the bytes they keep staged.

use std::{
    collections::BTreeSet,
    num::NonZeroUsize,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread::{self, JoinHandle},
};

use tracing::{debug, error};

use crate::{CkptError, Result};

/// Limits on the saves that run in the background at once.
///
/// A save that would exceed a limit waits in `save` until earlier saves
/// finish, so host memory held by snapshots stays bounded however fast the
/// caller saves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AsyncOptions {
    /// Maximum number of saves whose snapshot exists at once: being written,
    /// or waiting for an earlier save to finish. The default of 1 makes each
    /// save wait for the previous one, as Orbax's `AsyncCheckpointer` does.
    pub max_saves_in_flight: NonZeroUsize,
    /// Maximum bytes of snapshots held at once, counting every array and
    /// string of the saves in flight. A save larger than the whole budget
    /// still runs, alone, once no other save is in flight. `None` sets no
    /// byte limit.
    pub max_staging_bytes: Option<u64>,
}

impl Default for AsyncOptions {
    fn default() -> AsyncOptions {
        AsyncOptions {
            max_saves_in_flight: NonZeroUsize::MIN,
            max_staging_bytes: None,
        }
    }
}

impl AsyncOptions {
    /// Sets the maximum number of saves in flight.
    pub fn with_max_saves_in_flight(mut self, saves: NonZeroUsize) -> AsyncOptions {
        self.max_saves_in_flight = saves;
        self
    }

    /// Sets the maximum bytes of snapshots held at once.
    pub fn with_max_staging_bytes(mut self, bytes: Option<u64>) -> AsyncOptions {
        self.max_staging_bytes = bytes;
        self
    }
}

type Work = Box<dyn FnOnce() -> Result<()> + Send>;

struct Job {
    work: Work,
    ticket: Ticket,
}

#[derive(Default)]
struct State {
    in_flight: usize,
    staged_bytes: u64,
    /// Operations in flight, such as `save of step 3`, to reject a second
    /// save of the same checkpoint.
    operations: BTreeSet<String>,
    /// The first background failure that no caller has been given yet.
    error: Option<CkptError>,
}

struct Shared {
    options: AsyncOptions,
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(guard).unwrap_or_else(PoisonError::into_inner)
    }
}

/// A place among the saves in flight: its staged bytes and operation name.
/// Dropping it frees the place and wakes saves waiting for one.
pub(crate) struct Ticket {
    shared: Arc<Shared>,
    operation: String,
    bytes: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.in_flight -= 1;
        state.staged_bytes -= self.bytes;
        state.operations.remove(&self.operation);
        drop(state);
        self.shared.changed.notify_all();
    }
}

/// Runs submitted work on one background thread, in submission order.
///
/// The first failure is kept until [`Background::wait_until_finished`] or
/// the next [`Background::reserve`] returns it; every failure is logged
/// when it happens.
pub(crate) struct Background {
    thread_name: String,
    shared: Arc<Shared>,
    worker: Mutex<Option<(mpsc::Sender<Job>, JoinHandle<()>)>>,
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Background")
            .field("thread_name", &self.thread_name)
            .field("options", &self.shared.options)
            .field("in_flight", &state.in_flight)
            .field("staged_bytes", &state.staged_bytes)
            .finish()
    }
}

impl Background {
    /// Creates a runner; its thread starts with the first submitted work.
    pub(crate) fn new(thread_name: &str, options: AsyncOptions) -> Background {
        Background {
            thread_name: thread_name.to_owned(),
            shared: Arc::new(Shared {
                options,
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
            }),
            worker: Mutex::new(None),
        }
    }

    pub(crate) fn options(&self) -> AsyncOptions {
        self.shared.options
    }

    /// Takes a place for `operation` holding `bytes`, waiting while the
    /// limits are reached.
    ///
    /// Returns a pending background failure instead, and
    /// [`CkptError::SaveInProgress`] when `operation` is already in flight.
    pub(crate) fn reserve(&self, operation: &str, checkpoint: &str, bytes: u64) -> Result<Ticket> {
        let options = self.shared.options;
        let mut state = self.shared.lock();
        loop {
            if let Some(err) = state.error.take() {
                return Err(err);
            }
            if state.operations.contains(operation) {
                return Err(CkptError::SaveInProgress {
                    checkpoint: checkpoint.to_owned(),
                });
            }
            let count_fits = state.in_flight < options.max_saves_in_flight.get();
            let bytes_fit = match options.max_staging_bytes {
                None => true,
                Some(max) => state.in_flight == 0 || state.staged_bytes.saturating_add(bytes) <= max,
            };
            if count_fits && bytes_fit {
                break;
            }
            debug!(operation, bytes, in_flight = state.in_flight, "waiting for an earlier save to finish");
            state = self.shared.wait(state);
        }
        state.in_flight += 1;
        state.staged_bytes += bytes;
        state.operations.insert(operation.to_owned());
        Ok(Ticket {
            shared: Arc::clone(&self.shared),
            operation: operation.to_owned(),
            bytes,
        })
    }

    /// Queues `work` without waiting for the limits or returning a pending
    /// failure, for work that other background work starts.
    pub(crate) fn enqueue(&self, operation: &str, work: Work) -> Result<()> {
        let ticket = {
            let mut state = self.shared.lock();
            state.in_flight += 1;
            state.operations.insert(operation.to_owned());
            Ticket {
                shared: Arc::clone(&self.shared),
                operation: operation.to_owned(),
                bytes: 0,
            }
        };
        self.submit(ticket, work)
    }

    /// Queues `work` under `ticket`, which is freed when the work ends.
    pub(crate) fn submit(&self, ticket: Ticket, work: Work) -> Result<()> {
        let mut worker = self.worker.lock().unwrap_or_else(PoisonError::into_inner);
        let sender = match worker.as_ref() {
            Some((sender, _)) => sender.clone(),
            None => {
                let (sender, handle) = self.spawn()?;
                *worker = Some((sender.clone(), handle));
                sender
            }
        };
        // The thread only exits once the sender is dropped, so a failed send
        // means it died some other way.
        sender.send(Job { work, ticket }).map_err(|returned| CkptError::BackgroundPanic {
            operation: returned.0.ticket.operation.clone(),
            message: "the background thread has exited".into(),
        })
    }

    fn spawn(&self) -> Result<(mpsc::Sender<Job>, JoinHandle<()>)> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let shared = Arc::clone(&self.shared);
        let handle = thread::Builder::new()
            .name(self.thread_name.clone())
            .spawn(move || run_jobs(&shared, &receiver))
            .map_err(|source| CkptError::ThreadStart {
                name: self.thread_name.clone(),
                source,
            })?;
        Ok((sender, handle))
    }

    /// Returns and clears the pending background failure, without waiting.
    pub(crate) fn take_error(&self) -> Result<()> {
        match self.shared.lock().error.take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Waits until no work is in flight, then returns the pending failure.
    pub(crate) fn wait_until_finished(&self) -> Result<()> {
        let mut state = self.shared.lock();
        while state.in_flight > 0 {
            state = self.shared.wait(state);
        }
        match state.error.take() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Returns whether any work is in flight.
    pub(crate) fn is_busy(&self) -> bool {
        self.shared.lock().in_flight > 0
    }
}

impl Drop for Background {
    /// Finishes the queued work and stops the thread. A failure that no
    /// caller received is logged, because a destructor cannot return it.
    fn drop(&mut self) {
        let worker = self.worker.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        if let Some((sender, handle)) = worker {
            drop(sender);
            if handle.join().is_err() {
                error!(thread = %self.thread_name, "the background thread panicked");
            }
        }
        if let Some(err) = self.shared.lock().error.take() {
            error!(error = %err, "a background failure was never returned to the caller");
        }
    }
}

fn run_jobs(shared: &Arc<Shared>, receiver: &mpsc::Receiver<Job>) {
    for Job { work, ticket } in receiver.iter() {
        let operation = ticket.operation.clone();
        debug!(operation = %operation, "background work started");
        let outcome = catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            Err(CkptError::BackgroundPanic {
                operation: operation.clone(),
                message,
            })
        });
        match outcome {
            Ok(()) => debug!(operation = %operation, "background work finished"),
            Err(err) => record_failure(shared, &operation, err),
        }
        // The failure is recorded before the place is freed, so that a
        // caller woken by the freed place finds it.
        drop(ticket);
    }
}

fn record_failure(shared: &Shared, operation: &str, err: CkptError) {
    let err = match err {
        err @ (CkptError::Background { .. }
        | CkptError::StepDelete { .. }
        | CkptError::BackgroundPanic { .. }) => err,
        other => CkptError::Background {
            operation: operation.to_owned(),
            source: Box::new(other),
        },
    };
    error!(operation, error = %err, source = ?std::error::Error::source(&err).map(ToString::to_string), "background work failed");
    let mut state = shared.lock();
    if state.error.is_none() {
        state.error = Some(err);
    }
    drop(state);
    shared.changed.notify_all();
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    fn failing() -> Work {
        Box::new(|| {
            Err(CkptError::InvalidItem {
                item: "x".into(),
                reason: "injected".into(),
            })
        })
    }

    #[test]
    fn failure_returned_once_by_wait() {
        let background = Background::new("test", AsyncOptions::default());
        let ticket = background.reserve("save of a", "a", 0).unwrap();
        background.submit(ticket, failing()).unwrap();
        let err = background.wait_until_finished().unwrap_err();
        assert!(matches!(err, CkptError::Background { ref operation, .. } if operation == "save of a"), "{err}");
        assert!(background.wait_until_finished().is_ok());
    }

    #[test]
    fn failure_returned_by_next_reserve() {
        let background = Background::new("test", AsyncOptions::default());
        let ticket = background.reserve("save of a", "a", 0).unwrap();
        background.submit(ticket, failing()).unwrap();
        // The next reserve waits for the place and then finds the failure.
        let err = background.reserve("save of b", "b", 0).err().expect("the failure of a");
        assert!(err.to_string().contains("save of a"), "{err}");
        assert!(background.reserve("save of b", "b", 0).is_ok());
    }

    #[test]
    fn panic_becomes_error() {
        let background = Background::new("test", AsyncOptions::default());
        let ticket = background.reserve("save of a", "a", 0).unwrap();
        background.submit(ticket, Box::new(|| panic!("boom"))).unwrap();
        let err = background.wait_until_finished().unwrap_err();
        assert!(matches!(err, CkptError::BackgroundPanic { ref message, .. } if message == "boom"), "{err}");
    }

    #[test]
    fn same_operation_rejected_while_in_flight() {
        let options = AsyncOptions::default().with_max_saves_in_flight(NonZeroUsize::new(2).unwrap());
        let background = Background::new("test", options);
        let _ticket = background.reserve("save of a", "a", 0).unwrap();
        let err = background.reserve("save of a", "a", 0).err().expect("a is in flight");
        assert!(matches!(err, CkptError::SaveInProgress { .. }), "{err}");
    }

    #[test]
    fn byte_budget_admits_one_oversized_save() {
        let options = AsyncOptions::default()
            .with_max_saves_in_flight(NonZeroUsize::new(8).unwrap())
            .with_max_staging_bytes(Some(100));
        let background = Background::new("test", options);
        let big = background.reserve("save of a", "a", 500).unwrap();
        assert_eq!(background.shared.lock().staged_bytes, 500);
        drop(big);
        let small = background.reserve("save of b", "b", 60).unwrap();
        let also_small = background.reserve("save of c", "c", 40).unwrap();
        assert_eq!(background.shared.lock().in_flight, 2);
        drop((small, also_small));
        assert_eq!(background.shared.lock().staged_bytes, 0);
    }

    #[test]
    fn reserve_waits_for_budget() {
        let options = AsyncOptions::default()
            .with_max_saves_in_flight(NonZeroUsize::new(8).unwrap())
            .with_max_staging_bytes(Some(100));
        let background = Arc::new(Background::new("test", options));
        let first = background.reserve("save of a", "a", 80).unwrap();
        let admitted = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let background = Arc::clone(&background);
            let admitted = Arc::clone(&admitted);
            thread::spawn(move || {
                let ticket = background.reserve("save of b", "b", 80).unwrap();
                admitted.fetch_add(1, Ordering::SeqCst);
                drop(ticket);
            })
        };
        thread::sleep(Duration::from_millis(50));
        assert_eq!(admitted.load(Ordering::SeqCst), 0);
        drop(first);
        waiter.join().unwrap();
        assert_eq!(admitted.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn work_runs_in_order() {
        let options = AsyncOptions::default().with_max_saves_in_flight(NonZeroUsize::new(4).unwrap());
        let background = Background::new("test", options);
        let order = Arc::new(Mutex::new(Vec::new()));
        for i in 0..4 {
            let ticket = background.reserve(&format!("save of {i}"), "x", 0).unwrap();
            let order = Arc::clone(&order);
            let work: Work = Box::new(move || {
                order.lock().unwrap().push(i);
                Ok(())
            });
            background.submit(ticket, work).unwrap();
        }
        background.wait_until_finished().unwrap();
        assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
    }
}
