//! Fault injection for reliability tests: wrappers that make requests fail,
//! slow down, hang or write short, following a shared [`FaultPlan`].

use std::{
    fmt,
    ops::Range,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{stream::BoxStream, StreamExt};
use object_store::{
    path::Path as ObjectPath, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

use crate::{Backend, Capabilities, Result, StorageError};

/// How often a hung request checks whether the plan released it.
const HANG_POLL: Duration = Duration::from_millis(10);

/// A storage request kind that a [`FaultRule`] can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Read of a whole object.
    Get,
    /// Read of a byte range.
    GetRange,
    /// Write that replaces any previous value.
    Put,
    /// Create-only write.
    PutIfAbsent,
    /// Upload of one part of a multipart upload.
    PutPart,
    /// Completion of a multipart upload.
    CompleteUpload,
    /// Size or metadata lookup.
    Size,
    /// Recursive listing.
    List,
    /// Listing of child directories.
    ListDirs,
    /// Deletion.
    Delete,
    /// Directory rename or object copy.
    Rename,
}

impl Operation {
    /// Every operation that writes data.
    pub const WRITES: [Operation; 4] = [
        Operation::Put,
        Operation::PutIfAbsent,
        Operation::PutPart,
        Operation::CompleteUpload,
    ];
}

/// A failure or delay to inject into a request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Fails with a retryable error, like an HTTP 503 Service Unavailable response.
    Unavailable,
    /// Fails with a retryable error, like an HTTP 429 Too Many Requests response.
    Throttled,
    /// Fails with an error that retrying does not fix.
    Failed,
    /// Waits this long, then runs the request.
    Latency(Duration),
    /// Never finishes until [`FaultPlan::release_hung`] is called, and then fails.
    Hang,
    /// Stores the first `keep` bytes of the written value, then fails
    /// without retry. Requests that write nothing fail without storing.
    TruncatedWrite {
        /// Number of bytes stored.
        keep: usize,
    },
}

impl Fault {
    fn name(&self) -> &'static str {
        match self {
            Fault::Unavailable => "503 service unavailable",
            Fault::Throttled => "429 too many requests",
            Fault::Failed => "permanent failure",
            Fault::Latency(_) => "latency",
            Fault::Hang => "hung request",
            Fault::TruncatedWrite { .. } => "truncated write",
        }
    }
}

/// A rule of a [`FaultPlan`]: which requests get which fault, and how often.
#[derive(Clone, Debug)]
pub struct FaultRule {
    fault: Fault,
    operations: Vec<Operation>,
    key_contains: Option<String>,
    skip: u64,
    times: Option<u64>,
}

impl FaultRule {
    /// Creates a rule that injects `fault` into every request.
    pub fn new(fault: Fault) -> FaultRule {
        FaultRule {
            fault,
            operations: Vec::new(),
            key_contains: None,
            skip: 0,
            times: None,
        }
    }

    /// Restricts the rule to `operation`. Each further call allows one more operation.
    pub fn on(mut self, operation: Operation) -> FaultRule {
        self.operations.push(operation);
        self
    }

    /// Restricts the rule to the operations that write data.
    pub fn on_writes(mut self) -> FaultRule {
        self.operations.extend(Operation::WRITES);
        self
    }

    /// Restricts the rule to keys that contain `text`.
    pub fn key_containing(mut self, text: impl Into<String>) -> FaultRule {
        self.key_contains = Some(text.into());
        self
    }

    /// Lets the first `count` matching requests pass unharmed.
    pub fn after(mut self, count: u64) -> FaultRule {
        self.skip = count;
        self
    }

    /// Injects the fault into at most `count` requests, then stops.
    pub fn times(mut self, count: u64) -> FaultRule {
        self.times = Some(count);
        self
    }

    fn matches(&self, operation: Operation, key: &str) -> bool {
        let operation_matches = self.operations.is_empty() || self.operations.contains(&operation);
        let key_matches = self
            .key_contains
            .as_deref()
            .is_none_or(|text| key.contains(text));
        operation_matches && key_matches
    }
}

#[derive(Debug)]
struct RuleState {
    rule: FaultRule,
    matched: u64,
    injected: u64,
}

#[derive(Debug, Default)]
struct PlanState {
    rules: Vec<RuleState>,
    byte_budget: Option<u64>,
}

#[derive(Debug, Default)]
struct PlanShared {
    state: Mutex<PlanState>,
    bytes_written: AtomicU64,
    injected: AtomicU64,
    released: AtomicBool,
}

/// The faults to inject, shared by [`FaultyBackend`] and [`FaultyObjectStore`] wrappers.
///
/// Cloning is cheap, and clones share rules and counters, so a test keeps
/// one clone to add rules and read counts while a wrapper uses another.
/// For each request the first rule that matches and still has faults left
/// decides; a request that no rule matches runs unharmed.
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    shared: Arc<PlanShared>,
}

impl FaultPlan {
    /// Creates a plan that injects nothing.
    pub fn new() -> FaultPlan {
        FaultPlan::default()
    }

    /// Adds a rule after the existing ones.
    pub fn add(&self, rule: FaultRule) -> &FaultPlan {
        let mut state = self.lock();
        state.rules.push(RuleState {
            rule,
            matched: 0,
            injected: 0,
        });
        self
    }

    /// Fails every write that would take the bytes written through this
    /// plan past `bytes` in total. Such a write stores nothing, and its
    /// error is not retryable.
    pub fn fail_after_bytes(&self, bytes: u64) -> &FaultPlan {
        self.lock().byte_budget = Some(bytes);
        self
    }

    /// Removes every rule and the byte limit, and releases hung requests.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.rules.clear();
        state.byte_budget = None;
        self.release_hung();
    }

    /// Makes every hung request, now and later, fail instead of waiting.
    pub fn release_hung(&self) {
        self.shared.released.store(true, Ordering::SeqCst);
    }

    /// Number of faults injected so far, latency included.
    pub fn injected(&self) -> u64 {
        self.shared.injected.load(Ordering::SeqCst)
    }

    /// Number of bytes written successfully through this plan.
    pub fn bytes_written(&self) -> u64 {
        self.shared.bytes_written.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PlanState> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Picks the fault for a request that writes `bytes` bytes, or `None`.
    fn decide(&self, operation: Operation, key: &str, bytes: u64) -> Option<Fault> {
        let mut state = self.lock();
        let mut chosen = None;
        for entry in &mut state.rules {
            if !entry.rule.matches(operation, key) {
                continue;
            }
            entry.matched += 1;
            let exhausted = entry
                .rule
                .times
                .is_some_and(|times| entry.injected >= times);
            if entry.matched <= entry.rule.skip || exhausted {
                continue;
            }
            entry.injected += 1;
            chosen = Some(entry.rule.fault.clone());
            break;
        }

        if chosen.is_none() && bytes > 0 {
            if let Some(budget) = state.byte_budget {
                let written = self.shared.bytes_written.load(Ordering::SeqCst);
                if written.saturating_add(bytes) > budget {
                    chosen = Some(Fault::Failed);
                }
            }
        }
        if let Some(fault) = &chosen {
            self.shared.injected.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(
                ?operation,
                key,
                fault = fault.name(),
                "injecting a storage fault"
            );
        }
        chosen
    }

    fn record_written(&self, bytes: usize) {
        self.shared
            .bytes_written
            .fetch_add(bytes as u64, Ordering::SeqCst);
    }

    fn hang_blocking(&self) {
        while !self.shared.released.load(Ordering::SeqCst) {
            std::thread::sleep(HANG_POLL);
        }
    }

    async fn hang(&self) {
        while !self.shared.released.load(Ordering::SeqCst) {
            tokio::time::sleep(HANG_POLL).await;
        }
    }
}

/// The error of an injected fault, as the source of the error a request returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("injected fault: {kind}")]
pub struct InjectedFault {
    kind: &'static str,
    retryable: bool,
}

impl InjectedFault {
    fn new(fault: &Fault) -> InjectedFault {
        InjectedFault {
            kind: fault.name(),
            retryable: matches!(fault, Fault::Unavailable | Fault::Throttled),
        }
    }

    /// Returns true when the fault imitates an error that a retry may fix, such as HTTP 503 or 429.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// Checks whether an object_store error comes from a retryable injected fault.
pub(crate) fn is_injected_transient(error: &object_store::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(fault) = current.downcast_ref::<InjectedFault>() {
            return fault.is_retryable();
        }
        source = current.source();
    }
    false
}

/// Outcome of consulting the plan for one request.
enum Action {
    /// Runs the request.
    Run,
    /// Stores this prefix of the value, then fails with the fault.
    Truncate(usize, InjectedFault),
    /// Fails without running the request.
    Fail(InjectedFault),
}

/// A [`Backend`] that injects the faults of a [`FaultPlan`] into the requests it passes on.
///
/// Retryable faults return [`StorageError::Transient`] and others
/// [`StorageError::Io`]; both name the request's key. A hung request blocks
/// the calling thread until [`FaultPlan::release_hung`].
#[derive(Debug)]
pub struct FaultyBackend {
    inner: Arc<dyn Backend>,
    plan: FaultPlan,
}

impl FaultyBackend {
    /// Wraps `inner`, injecting the faults of `plan`.
    pub fn new(inner: Arc<dyn Backend>, plan: FaultPlan) -> FaultyBackend {
        FaultyBackend { inner, plan }
    }

    /// Returns the plan, to add rules or read counts.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    fn act(&self, operation: Operation, key: &str, bytes: usize) -> Action {
        let Some(fault) = self.plan.decide(operation, key, bytes as u64) else {
            return Action::Run;
        };
        match fault {
            Fault::Latency(delay) => {
                std::thread::sleep(delay);
                Action::Run
            }
            Fault::Hang => {
                self.plan.hang_blocking();
                Action::Fail(InjectedFault::new(&Fault::Hang))
            }
            Fault::TruncatedWrite { keep } if bytes > 0 => {
                Action::Truncate(keep.min(bytes), InjectedFault::new(&fault))
            }
            fault => Action::Fail(InjectedFault::new(&fault)),
        }
    }

    fn error(&self, operation: &'static str, key: &str, fault: InjectedFault) -> StorageError {
        let store = self.inner.url();
        let key = key.to_owned();
        if fault.is_retryable() {
            StorageError::Transient {
                operation,
                store,
                key,
                source: Box::new(fault),
            }
        } else {
            StorageError::Io {
                operation,
                store,
                key,
                source: Box::new(fault),
            }
        }
    }

    /// Runs `request` unless the plan injects a failure first.
    fn run<T>(
        &self,
        operation: Operation,
        name: &'static str,
        key: &str,
        request: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        match self.act(operation, key, 0) {
            Action::Run => request(),
            Action::Fail(fault) | Action::Truncate(_, fault) => Err(self.error(name, key, fault)),
        }
    }

    fn write(
        &self,
        operation: Operation,
        key: &str,
        value: Bytes,
        request: impl FnOnce(Bytes) -> Result<()>,
    ) -> Result<()> {
        let length = value.len();
        match self.act(operation, key, length) {
            Action::Run => {
                request(value)?;
                self.plan.record_written(length);
                Ok(())
            }
            Action::Truncate(keep, fault) => {
                self.inner.put(key, value.slice(..keep))?;
                self.plan.record_written(keep);
                Err(self.error("write", key, fault))
            }
            Action::Fail(fault) => Err(self.error("write", key, fault)),
        }
    }
}

impl Backend for FaultyBackend {
    fn url(&self) -> String {
        self.inner.url()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.run(Operation::Get, "read", key, || self.inner.get(key))
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Bytes>> {
        self.run(Operation::GetRange, "read", key, || {
            self.inner.get_range(key, range)
        })
    }

    fn put(&self, key: &str, value: Bytes) -> Result<()> {
        self.write(Operation::Put, key, value, |value| {
            self.inner.put(key, value)
        })
    }

    fn put_if_absent(&self, key: &str, value: Bytes) -> Result<()> {
        self.write(Operation::PutIfAbsent, key, value, |value| {
            self.inner.put_if_absent(key, value)
        })
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.run(Operation::Size, "stat", key, || self.inner.size(key))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.run(Operation::List, "list", prefix, || self.inner.list(prefix))
    }

    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        self.run(Operation::ListDirs, "list", prefix, || {
            self.inner.list_dirs(prefix)
        })
    }

    fn delete_prefix(&self, prefix: &str) -> Result<()> {
        self.run(Operation::Delete, "delete", prefix, || {
            self.inner.delete_prefix(prefix)
        })
    }

    fn rename_dir(&self, from: &str, to: &str) -> Result<()> {
        self.run(Operation::Rename, "rename", from, || {
            self.inner.rename_dir(from, to)
        })
    }

    fn local_root(&self) -> Option<&std::path::Path> {
        self.inner.local_root()
    }
}

/// An [`ObjectStore`] that injects the faults of a [`FaultPlan`] into the requests it passes on.
///
/// It sits below [`crate::ObjectStoreBackend`], so injected faults reach
/// multipart uploads part by part. A hung request waits asynchronously, so
/// a request deadline cancels it.
#[derive(Debug)]
pub struct FaultyObjectStore {
    inner: Arc<dyn ObjectStore>,
    plan: FaultPlan,
}

impl FaultyObjectStore {
    /// Wraps `inner`, injecting the faults of `plan`.
    pub fn new(inner: Arc<dyn ObjectStore>, plan: FaultPlan) -> FaultyObjectStore {
        FaultyObjectStore { inner, plan }
    }
}

/// Returns the object_store error of an injected fault.
fn store_error(fault: InjectedFault) -> object_store::Error {
    object_store::Error::Generic {
        store: "fault injection",
        source: Box::new(fault),
    }
}

/// Consults `plan` for one request and waits out latency and hangs.
async fn act_async(plan: &FaultPlan, operation: Operation, key: &str, bytes: usize) -> Action {
    let Some(fault) = plan.decide(operation, key, bytes as u64) else {
        return Action::Run;
    };
    match fault {
        Fault::Latency(delay) => {
            tokio::time::sleep(delay).await;
            Action::Run
        }
        Fault::Hang => {
            plan.hang().await;
            Action::Fail(InjectedFault::new(&Fault::Hang))
        }
        Fault::TruncatedWrite { keep } if bytes > 0 => {
            Action::Truncate(keep.min(bytes), InjectedFault::new(&fault))
        }
        fault => Action::Fail(InjectedFault::new(&fault)),
    }
}

/// Fails with the injected fault unless the plan lets the request run.
async fn check(plan: &FaultPlan, operation: Operation, key: &str) -> object_store::Result<()> {
    match act_async(plan, operation, key, 0).await {
        Action::Run => Ok(()),
        Action::Fail(fault) | Action::Truncate(_, fault) => Err(store_error(fault)),
    }
}

impl fmt::Display for FaultyObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyObjectStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyObjectStore {
    async fn put_opts(
        &self,
        location: &ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let operation = match opts.mode {
            object_store::PutMode::Overwrite => Operation::Put,
            _ => Operation::PutIfAbsent,
        };
        let length = payload.content_length();
        match act_async(&self.plan, operation, location.as_ref(), length).await {
            Action::Run => {
                let result = self.inner.put_opts(location, payload, opts).await?;
                self.plan.record_written(length);
                Ok(result)
            }
            Action::Truncate(keep, fault) => {
                let prefix = Bytes::from(payload).slice(..keep);
                self.inner.put(location, PutPayload::from(prefix)).await?;
                self.plan.record_written(keep);
                Err(store_error(fault))
            }
            Action::Fail(fault) => Err(store_error(fault)),
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjectPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultyUpload {
            inner,
            plan: self.plan.clone(),
            key: location.to_string(),
        }))
    }

    async fn get_opts(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let operation = if options.head {
            Operation::Size
        } else if options.range.is_some() {
            Operation::GetRange
        } else {
            Operation::Get
        };
        check(&self.plan, operation, location.as_ref()).await?;
        self.inner.get_opts(location, options).await
    }

    async fn delete(&self, location: &ObjectPath) -> object_store::Result<()> {
        check(&self.plan, Operation::Delete, location.as_ref()).await?;
        self.inner.delete(location).await
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let key = prefix.map(ToString::to_string).unwrap_or_default();
        // The plan decides when the listing is requested. Latency and hangs
        // then delay the first item of the stream.
        let Some(fault) = self.plan.decide(Operation::List, &key, 0) else {
            return self.inner.list(prefix);
        };
        let listing = self.inner.list(prefix);
        let plan = self.plan.clone();
        let delayed = async move {
            let fault = match fault {
                Fault::Latency(delay) => {
                    tokio::time::sleep(delay).await;
                    return listing;
                }
                Fault::Hang => {
                    plan.hang().await;
                    fault
                }
                fault => fault,
            };
            let error = store_error(InjectedFault::new(&fault));
            futures::stream::once(async move { Err(error) }).boxed()
        };
        futures::stream::once(delayed).flatten().boxed()
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> object_store::Result<ListResult> {
        let key = prefix.map(ToString::to_string).unwrap_or_default();
        check(&self.plan, Operation::ListDirs, &key).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &ObjectPath, to: &ObjectPath) -> object_store::Result<()> {
        check(&self.plan, Operation::Rename, from.as_ref()).await?;
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(
        &self,
        from: &ObjectPath,
        to: &ObjectPath,
    ) -> object_store::Result<()> {
        check(&self.plan, Operation::Rename, from.as_ref()).await?;
        self.inner.copy_if_not_exists(from, to).await
    }
}

/// A multipart upload whose parts and completion pass through the plan.
#[derive(Debug)]
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    plan: FaultPlan,
    key: String,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let plan = self.plan.clone();
        let key = self.key.clone();
        let length = data.content_length();
        // The part index is fixed by this call, so the inner part is created
        // now and only started once the plan lets it run.
        let part = self.inner.put_part(data);
        Box::pin(async move {
            match act_async(&plan, Operation::PutPart, &key, length).await {
                Action::Run => {
                    part.await?;
                    plan.record_written(length);
                    Ok(())
                }
                Action::Truncate(_, fault) | Action::Fail(fault) => Err(store_error(fault)),
            }
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        check(&self.plan, Operation::CompleteUpload, &self.key).await?;
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ObjectStoreBackend;

    fn faulty() -> (FaultPlan, FaultyBackend) {
        let plan = FaultPlan::new();
        let inner = Arc::new(ObjectStoreBackend::memory().unwrap());
        (plan.clone(), FaultyBackend::new(inner, plan))
    }

    #[test]
    fn unavailable_is_transient() {
        let (plan, backend) = faulty();
        plan.add(
            FaultRule::new(Fault::Unavailable)
                .on(Operation::Put)
                .times(1),
        );
        let err = backend.put("k", Bytes::from_static(b"v")).unwrap_err();
        assert!(matches!(err, StorageError::Transient { .. }), "{err}");
        backend.put("k", Bytes::from_static(b"v")).unwrap();
        assert_eq!(plan.injected(), 1);
    }

    #[test]
    fn failed_is_not_transient() {
        let (plan, backend) = faulty();
        plan.add(FaultRule::new(Fault::Failed));
        let err = backend.get("k").unwrap_err();
        assert!(matches!(err, StorageError::Io { .. }), "{err}");
    }

    #[test]
    fn rule_skips_then_fires() {
        let (plan, backend) = faulty();
        plan.add(
            FaultRule::new(Fault::Throttled)
                .key_containing("x")
                .after(2)
                .times(1),
        );
        backend.put("a/x", Bytes::new()).unwrap();
        backend.put("b", Bytes::new()).unwrap();
        backend.put("a/x", Bytes::new()).unwrap();
        assert!(backend.put("c/x", Bytes::new()).is_err());
        backend.put("c/x", Bytes::new()).unwrap();
    }

    #[test]
    fn truncated_write_stores_prefix() {
        let (plan, backend) = faulty();
        plan.add(FaultRule::new(Fault::TruncatedWrite { keep: 3 }));
        let err = backend.put("k", Bytes::from_static(b"abcdef")).unwrap_err();
        assert!(matches!(err, StorageError::Io { .. }), "{err}");
        plan.clear();
        assert_eq!(backend.get("k").unwrap(), Some(Bytes::from_static(b"abc")));
    }

    #[test]
    fn byte_budget_fails_writes() {
        let (plan, backend) = faulty();
        plan.fail_after_bytes(5);
        backend.put("a", Bytes::from_static(b"1234")).unwrap();
        assert!(backend.put("b", Bytes::from_static(b"56")).is_err());
        assert_eq!(backend.get("b").unwrap(), None);
        assert_eq!(plan.bytes_written(), 4);
    }

    #[test]
    fn hang_ends_on_release() {
        let (plan, backend) = faulty();
        plan.add(FaultRule::new(Fault::Hang));
        let releaser = {
            let plan = plan.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                plan.release_hung();
            })
        };
        let err = backend.get("k").unwrap_err();
        releaser.join().unwrap();
        assert!(matches!(err, StorageError::Io { .. }), "{err}");
    }

    #[test]
    fn listing_hang_times_out() {
        let plan = FaultPlan::new();
        plan.add(FaultRule::new(Fault::Hang).on(Operation::List));
        let faulty = FaultyObjectStore::new(
            Arc::new(object_store::memory::InMemory::new()),
            plan.clone(),
        );
        let backend = ObjectStoreBackend::new(Arc::new(faulty), "memory://")
            .unwrap()
            .with_request_timeout(Some(Duration::from_millis(50)));
        let err = backend.list("").unwrap_err();
        plan.release_hung();
        assert!(matches!(err, StorageError::TimedOut { .. }), "{err}");
    }

    #[test]
    fn listing_latency_delays() {
        let plan = FaultPlan::new();
        plan.add(FaultRule::new(Fault::Latency(Duration::from_millis(50))).on(Operation::List));
        let faulty = FaultyObjectStore::new(Arc::new(object_store::memory::InMemory::new()), plan);
        let backend = ObjectStoreBackend::new(Arc::new(faulty), "memory://").unwrap();
        backend.put("a/b", Bytes::new()).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(backend.list("").unwrap(), ["a/b"]);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn injected_transient_detected() {
        let error = store_error(InjectedFault::new(&Fault::Unavailable));
        assert!(is_injected_transient(&error));
        let error = store_error(InjectedFault::new(&Fault::Failed));
        assert!(!is_injected_transient(&error));
    }
}
