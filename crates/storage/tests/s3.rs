//! The backend contract, multipart uploads, faults and the commit marker on
//! S3, against a moto server on 127.0.0.1 that the tests start themselves.

mod moto;

use std::{
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use bytes::Bytes;
use ckpt_storage::{
    check_backend, open_object_store, open_store_with, Backend, Fault, FaultPlan, FaultRule,
    FaultyObjectStore, MultipartConfig, ObjectStoreBackend, Operation, PendingCheckpoint,
    RetryBackend, RetryConfig, StorageError, Store, StoreOptions, COMMIT_SUCCESS_FILE,
    MIN_PART_SIZE,
};

/// Uploads objects of 5 MiB or more in 5 MiB parts, two at a time, so
/// that the 12 MiB objects of the conformance checks take three parts.
fn small_parts() -> MultipartConfig {
    MultipartConfig::new(MIN_PART_SIZE, MIN_PART_SIZE, 2).unwrap()
}

fn options() -> StoreOptions {
    moto::server().options().with_multipart(small_parts())
}

/// Opens a new bucket whose name starts with `prefix` as a backend.
fn bucket_backend(prefix: &str) -> (String, Arc<dyn Backend>) {
    let bucket = moto::server().create_bucket(prefix);
    let store = open_store_with(&format!("s3://{bucket}"), &options()).unwrap();
    (bucket, Arc::clone(store.backend()))
}

/// Returns a [`RetryBackend`] over an [`ObjectStoreBackend`] whose S3 store
/// of `bucket` injects the faults of `plan`.
fn faulty_backend(bucket: &str, plan: &FaultPlan, timeout: Option<Duration>) -> RetryBackend {
    let url = format!("s3://{bucket}");
    let (s3, _) = open_object_store(&url, &options()).unwrap();
    let faulty = Arc::new(FaultyObjectStore::new(s3, plan.clone()));
    let backend = ObjectStoreBackend::new(faulty, url)
        .unwrap()
        .with_multipart(small_parts())
        .with_request_timeout(timeout);
    let retry = RetryConfig::default()
        .with_max_retries(3)
        .with_backoff(Duration::from_millis(5), Duration::from_millis(20))
        .with_request_timeout(None);
    RetryBackend::new(Arc::new(backend), retry)
}

fn large_value() -> Bytes {
    Bytes::from(vec![7u8; 2 * MIN_PART_SIZE + 1024])
}

#[test]
fn conformance_on_s3() {
    check_backend(|| bucket_backend("conformance").1);
}

#[test]
fn bucket_with_dots() {
    let (bucket, backend) = bucket_backend("ckpt.dotted.bucket");
    assert!(bucket.contains('.'));
    backend.put("step_1/x", Bytes::from_static(b"1")).unwrap();
    assert_eq!(
        backend.get("step_1/x").unwrap(),
        Some(Bytes::from_static(b"1"))
    );
    assert_eq!(backend.list_dirs("").unwrap(), ["step_1"]);
}

#[test]
fn url_query_configures_store() {
    let server = moto::server();
    let bucket = server.create_bucket("query");
    let url = format!(
        "s3://{bucket}/run/checkpoints?endpoint={}&allow_http=true&region=us-east-1\
         &access_key_id=testing&secret_access_key=testing",
        server.endpoint()
    );
    let store = open_store_with(&url, &StoreOptions::default()).unwrap();
    store.put("step_1/a", Bytes::from_static(b"a")).unwrap();
    assert_eq!(store.url(), format!("s3://{bucket}/run/checkpoints"));

    let root = open_store_with(&format!("s3://{bucket}"), &options()).unwrap();
    assert_eq!(root.list().unwrap(), ["run/checkpoints/step_1/a"]);
}

#[test]
fn unknown_option_is_rejected() {
    let options = options().with("no_such_option", "1");
    let err = open_store_with("s3://bucket", &options).unwrap_err();
    assert!(
        matches!(err, StorageError::InvalidOption { ref option, .. } if option == "no_such_option"),
        "{err}"
    );
}

#[test]
fn multipart_writes_parts() {
    let (bucket, backend) = bucket_backend("multipart");
    let value = large_value();
    backend.put("big", value.clone()).unwrap();
    assert_eq!(backend.get("big").unwrap(), Some(value));
    assert_eq!(moto::server().open_uploads(&bucket), 0);
}

#[test]
fn failed_part_aborts_upload() {
    let bucket = moto::server().create_bucket("part-failure");
    let plan = FaultPlan::new();
    plan.add(
        FaultRule::new(Fault::Failed)
            .on(Operation::PutPart)
            .after(1),
    );
    let backend = faulty_backend(&bucket, &plan, None);

    let err = backend.put("big", large_value()).unwrap_err();
    assert!(matches!(err, StorageError::Io { .. }), "{err}");
    assert_eq!(moto::server().open_uploads(&bucket), 0);
    plan.clear();
    assert_eq!(backend.get("big").unwrap(), None);
}

#[test]
fn failed_completion_aborts_upload() {
    let bucket = moto::server().create_bucket("complete-failure");
    let plan = FaultPlan::new();
    plan.add(FaultRule::new(Fault::Failed).on(Operation::CompleteUpload));
    let backend = faulty_backend(&bucket, &plan, None);

    assert!(backend.put("big", large_value()).is_err());
    assert_eq!(moto::server().open_uploads(&bucket), 0);
}

#[test]
fn hung_part_times_out() {
    let bucket = moto::server().create_bucket("part-hang");
    let plan = FaultPlan::new();
    plan.add(FaultRule::new(Fault::Hang).on(Operation::PutPart).times(1));
    let timeout = Duration::from_millis(500);
    let backend = faulty_backend(&bucket, &plan, Some(timeout));

    // The timed-out upload is aborted and the retry writes the object.
    let started = Instant::now();
    backend.put("big", large_value()).unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= timeout, "took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    assert_eq!(plan.injected(), 1);
    assert_eq!(moto::server().open_uploads(&bucket), 0);
}

#[test]
fn hang_fails_within_deadline() {
    let bucket = moto::server().create_bucket("hang");
    let plan = FaultPlan::new();
    plan.add(FaultRule::new(Fault::Hang).on_writes());
    let timeout = Duration::from_millis(200);
    let backend = faulty_backend(&bucket, &plan, Some(timeout));

    let started = Instant::now();
    let err = backend.put("k", Bytes::from_static(b"v")).unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, StorageError::TimedOut { .. }), "{err}");
    // Four attempts of 200 ms each and three backoffs of at most 20 ms.
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert_eq!(plan.injected(), 4);
}

#[test]
fn unavailable_then_success() {
    let bucket = moto::server().create_bucket("unavailable");
    let plan = FaultPlan::new();
    plan.add(
        FaultRule::new(Fault::Unavailable)
            .on(Operation::Put)
            .times(2),
    );
    plan.add(
        FaultRule::new(Fault::Throttled)
            .on(Operation::PutPart)
            .times(1),
    );
    plan.add(FaultRule::new(Fault::Throttled).on(Operation::Get).times(1));
    let backend = faulty_backend(&bucket, &plan, None);

    backend.put("small", Bytes::from_static(b"v")).unwrap();
    backend.put("big", large_value()).unwrap();
    assert_eq!(
        backend.get("small").unwrap(),
        Some(Bytes::from_static(b"v"))
    );
    assert_eq!(plan.injected(), 4);
    assert_eq!(moto::server().open_uploads(&bucket), 0);
}

#[test]
fn concurrent_commits_one_wins() {
    const SAVERS: usize = 4;
    let bucket = moto::server().create_bucket("commit-race");
    let parent = open_store_with(&format!("s3://{bucket}/checkpoints"), &options()).unwrap();

    // Every saver begins before any commits, so each one reaches the
    // create-only write of the commit marker.
    let pending: Vec<PendingCheckpoint> = (0..SAVERS)
        .map(|_| PendingCheckpoint::begin(&parent, "step_7").unwrap())
        .collect();
    let barrier = Barrier::new(SAVERS);
    let results: Vec<Result<Store, StorageError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = pending
            .into_iter()
            .map(|pending| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    pending.commit()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect()
    });

    let committed = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(committed, 1);
    for result in &results {
        if let Err(err) = result {
            assert!(
                matches!(err, StorageError::CheckpointExists { .. }),
                "{err}"
            );
        }
    }
    assert!(parent
        .child("step_7")
        .unwrap()
        .exists(COMMIT_SUCCESS_FILE)
        .unwrap());
}
