//! A colocated save and restore into S3 with one `ckpt-worker` process per
//! host: every worker opens the bucket itself, with the endpoint and
//! credentials of a moto server on 127.0.0.1 in its environment, and
//! writes and reads its own shards there.

#[path = "../../storage/tests/moto/mod.rs"]
mod moto;

mod cluster_support;

use std::{sync::Arc, time::Duration};

use ckpt_colocated::{Controller, GrpcRuntime, GrpcRuntimeOptions, LaunchOptions, Runtime, WorkerCluster};
use ckpt_device::Topology;
use ckpt_storage::{list_committed, open_committed, open_store_with, Store};
use cluster_support::{dirs, launch_options, model, put_model, restore_mismatches, save, Mode};

const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Worker options whose environment reaches `server` through object_store's
/// `AWS_*` variables, as credentials reach workers in a deployment.
fn s3_launch_options(server: &moto::MotoServer) -> LaunchOptions {
    launch_options()
        .with_env("AWS_ENDPOINT", server.endpoint())
        .with_env("AWS_ALLOW_HTTP", "true")
        .with_env("AWS_REGION", "us-east-1")
        .with_env("AWS_ACCESS_KEY_ID", "testing")
        .with_env("AWS_SECRET_ACCESS_KEY", "testing")
}

fn connect(workers: &WorkerCluster, topology: &Topology) -> Controller {
    let runtime = GrpcRuntime::connect(topology.clone(), workers.addresses(), GrpcRuntimeOptions::default()).unwrap();
    Controller::new(Arc::new(runtime) as Arc<dyn Runtime>)
}

fn parent(server: &moto::MotoServer, bucket: &str) -> Store {
    open_store_with(&format!("s3://{bucket}/run"), &server.options()).unwrap()
}

#[test]
fn workers_save_and_restore_through_s3() {
    let server = moto::server();
    let bucket = server.create_bucket("cluster");
    let parent = parent(server, &bucket);
    let launch = s3_launch_options(server);

    let workers = WorkerCluster::start(4, &launch).unwrap();
    let topology = Topology::uniform(4, 2).unwrap();
    let controller = connect(&workers, &topology);
    let saved = model(&topology, 4);
    let arrays = put_model(&controller, &saved);
    save(&controller, &parent, "step_1", &saved, &arrays, Mode::Colocated).unwrap();
    assert_eq!(controller.array_bytes(), 0);
    assert_eq!(list_committed(&parent).unwrap(), ["step_1"]);

    // Each host wrote its own OCDBT database straight into the bucket.
    let item = open_committed(&parent, "step_1").unwrap();
    for host in 0..4 {
        assert!(dirs(&item).contains(&format!("ocdbt.process_{host}")), "host {host}");
    }
    assert_eq!(restore_mismatches(&controller, &parent, "step_1", &saved), 0);
    assert_eq!(controller.array_bytes(), 0);
    workers.stop(STOP_TIMEOUT).unwrap();

    // Two other worker processes restore it onto a 2 x 1 mesh.
    let workers = WorkerCluster::start(2, &launch).unwrap();
    let topology = Topology::uniform(2, 1).unwrap();
    let controller = connect(&workers, &topology);
    assert_eq!(restore_mismatches(&controller, &parent, "step_1", &model(&topology, 2)), 0);
    assert_eq!(controller.array_bytes(), 0);
    workers.stop(STOP_TIMEOUT).unwrap();

    assert_eq!(server.open_uploads(&bucket), 0);
}
