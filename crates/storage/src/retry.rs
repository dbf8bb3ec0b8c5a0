//! Retries with backoff and per-request deadlines for any [`Backend`].

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    ops::Range,
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use bytes::Bytes;

use crate::{Backend, Capabilities, Result, RetryConfig, StorageError};

impl StorageError {
    /// Checks whether repeating the failed request may succeed: true for
    /// [`StorageError::Transient`] and [`StorageError::TimedOut`].
    ///
    /// A retry after a timeout may repeat a write that did finish, so
    /// [`RetryBackend`] does not retry create-only writes and renames after one.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StorageError::Transient { .. } | StorageError::TimedOut { .. }
        )
    }
}

/// A request of one backend method, owning its arguments so that it can
/// run again or on another thread.
type Request<T> = Arc<dyn Fn(&dyn Backend) -> Result<T> + Send + Sync>;

/// A [`Backend`] that retries the retryable errors of another backend and
/// gives every attempt a deadline.
///
/// Backoff grows from [`RetryConfig::initial_backoff`] by
/// [`RetryConfig::backoff_base`] up to [`RetryConfig::max_backoff`], with
/// random jitter of up to half of it. Each retry emits one `warn` event
/// with the operation, key, attempt and error. No retry starts after
/// [`RetryConfig::retry_timeout`].
///
/// With [`RetryConfig::request_timeout`] set, each attempt runs on a thread
/// of its own and the caller gets [`StorageError::TimedOut`] once the
/// deadline passes. A request that never returns keeps its thread until
/// the inner backend lets it go.
#[derive(Debug)]
pub struct RetryBackend {
    inner: Arc<dyn Backend>,
    config: RetryConfig,
}

impl RetryBackend {
    /// Wraps `inner` with the retries and deadlines of `config`.
    pub fn new(inner: Arc<dyn Backend>, config: RetryConfig) -> RetryBackend {
        RetryBackend { inner, config }
    }

    /// Returns the retry settings.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// Runs `request` until it succeeds, fails for good or runs out of retries.
    fn call<T: Send + 'static>(
        &self,
        operation: &'static str,
        key: &str,
        idempotent: bool,
        request: Request<T>,
    ) -> Result<T> {
        let started = Instant::now();
        let mut retry = 0;
        loop {
            let error = match self.attempt(operation, key, &request) {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let retryable = match error {
                StorageError::Transient { .. } => true,
                StorageError::TimedOut { .. } => idempotent,
                _ => false,
            };
            if !retryable
                || retry >= self.config.max_retries
                || started.elapsed() >= self.config.retry_timeout
            {
                return Err(error);
            }

            retry += 1;
            let backoff = jitter(self.config.backoff(retry));
            tracing::warn!(
                store = %self.inner.url(),
                operation,
                key,
                retry,
                max_retries = self.config.max_retries,
                backoff_ms = backoff.as_millis() as u64,
                error = %error,
                "retrying a storage request"
            );
            std::thread::sleep(backoff);
        }
    }

    fn attempt<T: Send + 'static>(
        &self,
        operation: &'static str,
        key: &str,
        request: &Request<T>,
    ) -> Result<T> {
        let Some(timeout) = self.config.request_timeout else {
            return request(self.inner.as_ref());
        };

        let (sender, receiver) = mpsc::sync_channel(1);
        let inner = Arc::clone(&self.inner);
        let request = Arc::clone(request);
        let spawned = std::thread::Builder::new()
            .name("ckpt-storage-request".to_owned())
            .spawn(move || {
                // The caller may have stopped waiting, so a failed send is fine.
                let _ = sender.send(request(inner.as_ref()));
            });
        if let Err(source) = spawned {
            return Err(StorageError::Io {
                operation,
                store: self.inner.url(),
                key: key.to_owned(),
                source: Box::new(source),
            });
        }
        receiver.recv_timeout(timeout).unwrap_or_else(|_| {
            Err(StorageError::TimedOut {
                operation,
                store: self.inner.url(),
                key: key.to_owned(),
                timeout,
            })
        })
    }
}

/// Returns a duration between half of `backoff` and all of it, picked at random.
fn jitter(backoff: Duration) -> Duration {
    let random = RandomState::new().build_hasher().finish();
    let fraction = (random >> 11) as f64 / (1u64 << 53) as f64;
    backoff.mul_f64(0.5 + 0.5 * fraction)
}

impl Backend for RetryBackend {
    fn url(&self) -> String {
        self.inner.url()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let owned = key.to_owned();
        self.call("read", key, true, Arc::new(move |b| b.get(&owned)))
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Bytes>> {
        let owned = key.to_owned();
        self.call(
            "read",
            key,
            true,
            Arc::new(move |b| b.get_range(&owned, range.clone())),
        )
    }

    fn put(&self, key: &str, value: Bytes) -> Result<()> {
        let owned = key.to_owned();
        self.call(
            "write",
            key,
            true,
            Arc::new(move |b| b.put(&owned, value.clone())),
        )
    }

    fn put_if_absent(&self, key: &str, value: Bytes) -> Result<()> {
        let owned = key.to_owned();
        self.call(
            "create-only write",
            key,
            false,
            Arc::new(move |b| b.put_if_absent(&owned, value.clone())),
        )
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let owned = key.to_owned();
        self.call("stat", key, true, Arc::new(move |b| b.size(&owned)))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let owned = prefix.to_owned();
        self.call("list", prefix, true, Arc::new(move |b| b.list(&owned)))
    }

    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        let owned = prefix.to_owned();
        self.call("list", prefix, true, Arc::new(move |b| b.list_dirs(&owned)))
    }

    fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let owned = prefix.to_owned();
        self.call(
            "delete",
            prefix,
            true,
            Arc::new(move |b| b.delete_prefix(&owned)),
        )
    }

    fn rename_dir(&self, from: &str, to: &str) -> Result<()> {
        let (source, target) = (from.to_owned(), to.to_owned());
        self.call(
            "rename",
            from,
            false,
            Arc::new(move |b| b.rename_dir(&source, &target)),
        )
    }

    fn local_root(&self) -> Option<&std::path::Path> {
        self.inner.local_root()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{Fault, FaultPlan, FaultRule, FaultyBackend, ObjectStoreBackend, Operation};

    fn quick() -> RetryConfig {
        RetryConfig::default()
            .with_max_retries(3)
            .with_backoff(Duration::from_millis(1), Duration::from_millis(4))
            .with_request_timeout(None)
    }

    fn stack(config: RetryConfig) -> (FaultPlan, RetryBackend) {
        let plan = FaultPlan::new();
        let memory = Arc::new(ObjectStoreBackend::memory().unwrap());
        let faulty = Arc::new(FaultyBackend::new(memory, plan.clone()));
        (plan, RetryBackend::new(faulty, config))
    }

    crate::conformance::backend_tests!(conformance_stack);

    fn conformance_stack() -> ((), RetryBackend) {
        (
            (),
            stack(quick().with_request_timeout(Some(Duration::from_secs(10)))).1,
        )
    }

    #[test]
    fn transient_errors_are_retried() {
        let (plan, backend) = stack(quick());
        plan.add(
            FaultRule::new(Fault::Unavailable)
                .on(Operation::Put)
                .times(2),
        );
        plan.add(FaultRule::new(Fault::Throttled).on(Operation::Get).times(1));
        backend.put("k", Bytes::from_static(b"v")).unwrap();
        assert_eq!(backend.get("k").unwrap(), Some(Bytes::from_static(b"v")));
        assert_eq!(plan.injected(), 3);
    }

    #[test]
    fn retries_stop_at_max() {
        let (plan, backend) = stack(quick());
        plan.add(FaultRule::new(Fault::Unavailable));
        let err = backend.get("k").unwrap_err();
        assert!(matches!(err, StorageError::Transient { .. }), "{err}");
        assert_eq!(plan.injected(), 4);
    }

    #[test]
    fn permanent_errors_are_not_retried() {
        let (plan, backend) = stack(quick());
        plan.add(FaultRule::new(Fault::Failed));
        assert!(backend.get("k").is_err());
        assert_eq!(plan.injected(), 1);
    }

    #[test]
    fn hung_request_times_out() {
        let timeout = Duration::from_millis(100);
        let (plan, backend) = stack(quick().with_request_timeout(Some(timeout)));
        plan.add(FaultRule::new(Fault::Hang));
        let started = Instant::now();
        let err = backend.get("k").unwrap_err();
        let elapsed = started.elapsed();
        plan.release_hung();
        assert!(matches!(err, StorageError::TimedOut { .. }), "{err}");
        // Four attempts of 100 ms and three short backoffs.
        assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
        assert!(elapsed >= timeout * 4, "took {elapsed:?}");
    }

    #[test]
    fn create_only_not_retried_after_timeout() {
        let timeout = Duration::from_millis(50);
        let (plan, backend) = stack(quick().with_request_timeout(Some(timeout)));
        plan.add(FaultRule::new(Fault::Hang).on(Operation::PutIfAbsent));
        let err = backend.put_if_absent("m", Bytes::new()).unwrap_err();
        plan.release_hung();
        assert!(matches!(err, StorageError::TimedOut { .. }), "{err}");
        assert_eq!(plan.injected(), 1);
    }

    #[test]
    fn one_event_per_retry() {
        use tracing_subscriber::layer::SubscriberExt;

        struct CountRetries(Arc<AtomicUsize>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountRetries {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _context: tracing_subscriber::layer::Context<'_, S>,
            ) {
                if *event.metadata().level() == tracing::Level::WARN {
                    self.0.fetch_add(1, Ordering::SeqCst);
                }
            }
        }

        let count = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry().with(CountRetries(Arc::clone(&count)));
        let (plan, backend) = stack(quick());
        plan.add(FaultRule::new(Fault::Throttled).times(2));
        tracing::subscriber::with_default(subscriber, || {
            backend.put("k", Bytes::new()).unwrap();
        });
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }
}
