//! Colocated saves into S3 and their behavior under injected storage
//! faults, against a moto server on 127.0.0.1 that the tests start.
//!
//! Every test saves through the in-process runtime, where each host is a
//! thread that writes its own shards straight to the S3 server.

#[path = "../../storage/tests/moto/mod.rs"]
mod moto;

use std::{
    collections::BTreeSet,
    ops::Range,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use ckpt::{
    colocated::{ArraySpec, Controller, InProcessRuntime, ShardedArray},
    device::{Mesh, PartitionSpec, Sharding, Topology},
    pytree::PyTree,
    storage::{
        list_committed, open_object_store, Backend, Capabilities, Fault, FaultPlan, FaultRule,
        FaultyObjectStore, MultipartConfig, ObjectStoreBackend, Operation, RetryBackend,
        RetryConfig, Store, COMMIT_SUCCESS_FILE, MIN_PART_SIZE,
    },
    ColocatedArrayHandler, DType, Leaf, LeafType, PyTreeRestore, SaveArgs, StandardCheckpointer,
    StandardSave, TypeHandlerRegistry,
};

const HOSTS: usize = 4;

/// Elements per host: 6 MiB of float32, above the 5 MiB multipart threshold
/// of these tests, so that each host's data goes up in several parts.
const ELEMENTS_PER_HOST: usize = 6 * 1024 * 1024 / 4;

/// Deadline of one storage request in the tests that hang a request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A simulated cluster of [`HOSTS`] hosts with one device each, saving colocated.
struct Cluster {
    controller: Arc<Controller>,
    topology: Topology,
    checkpointer: StandardCheckpointer,
}

fn cluster() -> Cluster {
    let topology = Topology::uniform(HOSTS, 1).unwrap();
    let runtime = InProcessRuntime::new(topology.clone()).unwrap();
    let controller = Arc::new(Controller::new(Arc::new(runtime)));
    let mut registry = TypeHandlerRegistry::with_defaults();
    registry
        .register(LeafType::Array, Arc::new(ColocatedArrayHandler), true)
        .unwrap();
    let checkpointer = StandardCheckpointer::new(Arc::clone(&controller)).with_registry(registry);
    Cluster {
        controller,
        topology,
        checkpointer,
    }
}

impl Cluster {
    /// Puts a `[HOSTS, ELEMENTS_PER_HOST]` float32 array with one row per
    /// host and returns it with its values, which depend on `seed`.
    fn array(&self, seed: u32) -> (ShardedArray, Vec<f32>) {
        let mesh = Mesh::new(vec![HOSTS], ["x"], self.topology.device_ids()).unwrap();
        let sharding = Sharding::named(mesh, PartitionSpec::new([Some("x"), None])).unwrap();
        let values: Vec<f32> = (0..HOSTS * ELEMENTS_PER_HOST)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) as f32)
            .collect();
        let spec = ArraySpec {
            shape: vec![HOSTS as u64, ELEMENTS_PER_HOST as u64],
            dtype: DType::Float32,
            sharding,
        };
        let array = self
            .controller
            .put_global(spec, bytemuck::cast_slice(&values))
            .unwrap();
        (array, values)
    }

    fn save(&self, parent: &Store, name: &str, array: &ShardedArray) -> ckpt::Result<u64> {
        let tree = PyTree::dict([("w", PyTree::leaf(Leaf::Array(array.clone())))]);
        let args = StandardSave::new(tree).with_save_args(PyTree::leaf(SaveArgs::colocated()));
        let summary = self.checkpointer.save(parent, name, args)?;
        Ok(summary.controller_array_bytes)
    }

    fn restore(&self, parent: &Store, name: &str) -> Vec<f32> {
        let restored = self
            .checkpointer
            .restore(parent, name, PyTreeRestore::new())
            .unwrap();
        let leaves = restored.flatten();
        assert_eq!(leaves.len(), 1);
        let Leaf::Array(array) = leaves[0].1 else {
            panic!("w restored as {:?}", leaves[0].1);
        };
        bytemuck::pod_collect_to_vec(&self.controller.to_global_bytes(array).unwrap())
    }
}

/// A backend that records the name of every thread that writes through it.
#[derive(Debug)]
struct WriterThreads {
    inner: Arc<dyn Backend>,
    names: Mutex<BTreeSet<String>>,
}

impl WriterThreads {
    fn record(&self) {
        let name = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();
        self.names.lock().unwrap().insert(name);
    }
}

impl Backend for WriterThreads {
    fn url(&self) -> String {
        self.inner.url()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn get(&self, key: &str) -> ckpt::storage::Result<Option<Bytes>> {
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> ckpt::storage::Result<Option<Bytes>> {
        self.inner.get_range(key, range)
    }
    fn put(&self, key: &str, value: Bytes) -> ckpt::storage::Result<()> {
        self.record();
        self.inner.put(key, value)
    }
    fn put_if_absent(&self, key: &str, value: Bytes) -> ckpt::storage::Result<()> {
        self.record();
        self.inner.put_if_absent(key, value)
    }
    fn size(&self, key: &str) -> ckpt::storage::Result<Option<u64>> {
        self.inner.size(key)
    }
    fn list(&self, prefix: &str) -> ckpt::storage::Result<Vec<String>> {
        self.inner.list(prefix)
    }
    fn list_dirs(&self, prefix: &str) -> ckpt::storage::Result<Vec<String>> {
        self.inner.list_dirs(prefix)
    }
    fn delete_prefix(&self, prefix: &str) -> ckpt::storage::Result<()> {
        self.inner.delete_prefix(prefix)
    }
    fn rename_dir(&self, from: &str, to: &str) -> ckpt::storage::Result<()> {
        self.inner.rename_dir(from, to)
    }
}

/// Opens a new bucket as a backend that injects the faults of `plan` below
/// multipart uploads, puts a deadline on each request and retries
/// transient errors three times.
fn faulty_s3(prefix: &str, plan: &FaultPlan) -> (String, Arc<dyn Backend>) {
    let server = moto::server();
    let bucket = server.create_bucket(prefix);
    let url = format!("s3://{bucket}");
    let (s3, _) = open_object_store(&url, &server.options()).unwrap();
    let faulty = Arc::new(FaultyObjectStore::new(s3, plan.clone()));
    let multipart = MultipartConfig::new(MIN_PART_SIZE, MIN_PART_SIZE, 2).unwrap();
    let backend = ObjectStoreBackend::new(faulty, url)
        .unwrap()
        .with_multipart(multipart)
        .with_request_timeout(Some(REQUEST_TIMEOUT));
    let retry = RetryConfig::default()
        .with_max_retries(3)
        .with_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .with_request_timeout(None);
    (
        bucket,
        Arc::new(RetryBackend::new(Arc::new(backend), retry)),
    )
}

#[test]
fn colocated_save_into_s3() {
    let plan = FaultPlan::new();
    let (bucket, backend) = faulty_s3("colocated", &plan);
    let writers = Arc::new(WriterThreads {
        inner: backend,
        names: Mutex::new(BTreeSet::new()),
    });
    let parent = Store::new(Arc::clone(&writers) as Arc<dyn Backend>)
        .child("checkpoints")
        .unwrap();
    let cluster = cluster();
    let (array, values) = cluster.array(1);

    let controller_bytes = cluster.save(&parent, "step_1", &array).unwrap();

    assert_eq!(controller_bytes, 0);
    let names = writers.names.lock().unwrap().clone();
    for host in 0..HOSTS {
        let name = format!("ckpt-host-{host}");
        assert!(
            names.contains(&name),
            "{name} wrote nothing; writers: {names:?}"
        );
    }
    assert!(parent
        .child("step_1")
        .unwrap()
        .exists(COMMIT_SUCCESS_FILE)
        .unwrap());
    assert_eq!(moto::server().open_uploads(&bucket), 0);
    assert!(
        cluster.restore(&parent, "step_1") == values,
        "restored values differ"
    );
}

#[test]
fn unavailable_and_throttled_retried() {
    let plan = FaultPlan::new();
    let (bucket, backend) = faulty_s3("retried", &plan);
    let parent = Store::new(backend);
    let cluster = cluster();
    let (array, values) = cluster.array(2);

    plan.add(
        FaultRule::new(Fault::Unavailable)
            .on(Operation::Put)
            .times(3),
    );
    plan.add(
        FaultRule::new(Fault::Throttled)
            .on(Operation::PutPart)
            .times(2),
    );
    plan.add(
        FaultRule::new(Fault::Unavailable)
            .on(Operation::PutIfAbsent)
            .times(1),
    );
    plan.add(FaultRule::new(Fault::Throttled).on(Operation::Get).times(2));
    cluster.save(&parent, "step_1", &array).unwrap();
    let restored = cluster.restore(&parent, "step_1");

    assert_eq!(plan.injected(), 8);
    assert_eq!(moto::server().open_uploads(&bucket), 0);
    assert!(restored == values, "restored values differ");
}

/// Saves `step_1`, then saves `step_2` with the faults of `inject` and
/// checks that it failed without a trace of a commit: no marker, no open
/// multipart upload, and `step_1` still restores. Returns how long the
/// failed save took.
fn check_failed_save(name: &str, inject: impl FnOnce(&FaultPlan)) -> Duration {
    let plan = FaultPlan::new();
    let (bucket, backend) = faulty_s3(name, &plan);
    let parent = Store::new(backend);
    let cluster = cluster();
    let (first, first_values) = cluster.array(3);
    let (second, _) = cluster.array(4);
    cluster.save(&parent, "step_1", &first).unwrap();

    inject(&plan);
    let started = Instant::now();
    let result = cluster.save(&parent, "step_2", &second);
    let elapsed = started.elapsed();
    plan.clear();

    assert!(result.is_err(), "{name}: the save succeeded");
    assert!(plan.injected() > 0, "{name}: no fault was injected");
    let step_2 = parent.child("step_2").unwrap();
    assert!(
        !step_2.exists(COMMIT_SUCCESS_FILE).unwrap(),
        "{name}: the failed save wrote {COMMIT_SUCCESS_FILE}"
    );
    assert_eq!(list_committed(&parent).unwrap(), ["step_1"], "{name}");
    assert_eq!(moto::server().open_uploads(&bucket), 0, "{name}");
    assert!(
        cluster.restore(&parent, "step_1") == first_values,
        "{name}: step_1 restored different values"
    );
    elapsed
}

#[test]
fn failed_write_keeps_previous() {
    check_failed_save("failed-write", |plan| {
        plan.add(FaultRule::new(Fault::Failed).on(Operation::Put).after(2));
    });
}

#[test]
fn failed_part_keeps_previous() {
    check_failed_save("failed-part", |plan| {
        plan.add(
            FaultRule::new(Fault::Failed)
                .on(Operation::PutPart)
                .after(3),
        );
    });
}

#[test]
fn failed_completion_keeps_previous() {
    check_failed_save("failed-completion", |plan| {
        plan.add(
            FaultRule::new(Fault::Failed)
                .on(Operation::CompleteUpload)
                .after(1),
        );
    });
}

#[test]
fn truncated_write_keeps_previous() {
    check_failed_save("truncated", |plan| {
        plan.add(
            FaultRule::new(Fault::TruncatedWrite { keep: 10 })
                .on(Operation::Put)
                .after(1),
        );
    });
}

#[test]
fn byte_limit_keeps_previous() {
    check_failed_save("byte-limit", |plan| {
        plan.fail_after_bytes(plan.bytes_written() + 8 * 1024 * 1024);
    });
}

#[test]
fn failed_marker_keeps_previous() {
    check_failed_save("failed-marker", |plan| {
        plan.add(
            FaultRule::new(Fault::Failed)
                .on(Operation::PutIfAbsent)
                .key_containing(COMMIT_SUCCESS_FILE),
        );
    });
}

#[test]
fn endless_unavailable_keeps_previous() {
    check_failed_save("endless-unavailable", |plan| {
        plan.add(FaultRule::new(Fault::Unavailable).on_writes().after(2));
    });
}

#[test]
fn hung_write_fails_in_time() {
    let elapsed = check_failed_save("hung-write", |plan| {
        plan.add(FaultRule::new(Fault::Hang).on(Operation::Put).after(2));
    });
    // Four attempts with the deadline each and backoffs of at most 50 ms;
    // the bound leaves room for the writes that precede the hang.
    assert!(elapsed >= REQUEST_TIMEOUT, "took {elapsed:?}");
    assert!(
        elapsed < REQUEST_TIMEOUT * 4 + Duration::from_secs(10),
        "took {elapsed:?}"
    );
}

#[test]
fn hung_part_fails_in_time() {
    let elapsed = check_failed_save("hung-part", |plan| {
        plan.add(FaultRule::new(Fault::Hang).on(Operation::PutPart).after(1));
    });
    assert!(elapsed >= REQUEST_TIMEOUT, "took {elapsed:?}");
    assert!(
        elapsed < REQUEST_TIMEOUT * 4 + Duration::from_secs(10),
        "took {elapsed:?}"
    );
}
