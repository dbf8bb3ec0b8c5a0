//! The gRPC runtime against workers served on threads of the test process.

use std::{sync::Arc, thread::JoinHandle, time::Duration};

use ckpt_core::DType;
use ckpt_device::{Mesh, PartitionSpec, Sharding, Topology};
use ckpt_storage::{open_store, ArrayFormat, PendingCheckpoint};

use crate::{
    ArraySpec, ColocatedError, Controller, Generator, GrpcError, GrpcRuntime, GrpcRuntimeOptions,
    Runtime, SaveItem, ShutdownHandle, WorkerOptions, WorkerServer,
};

/// Workers on threads, shut down when dropped.
struct ThreadWorkers {
    addresses: Vec<String>,
    handles: Vec<ShutdownHandle>,
    threads: Vec<JoinHandle<Result<(), GrpcError>>>,
}

impl ThreadWorkers {
    fn start(hosts: usize) -> ThreadWorkers {
        let mut workers = ThreadWorkers {
            addresses: Vec::new(),
            handles: Vec::new(),
            threads: Vec::new(),
        };
        for host in 0..hosts {
            let mut options = WorkerOptions::new(host, "127.0.0.1:0".parse().unwrap());
            options.allow_fault_injection = true;
            options.shutdown_grace = Duration::from_secs(2);
            let server = WorkerServer::bind(options).unwrap();
            workers.addresses.push(server.local_addr().to_string());
            workers.handles.push(server.shutdown_handle());
            workers.threads.push(std::thread::spawn(move || server.serve()));
        }
        workers
    }
}

impl Drop for ThreadWorkers {
    fn drop(&mut self) {
        for handle in &self.handles {
            handle.shutdown();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn connect(workers: &ThreadWorkers, topology: &Topology, options: GrpcRuntimeOptions) -> Controller {
    let runtime = GrpcRuntime::connect(topology.clone(), &workers.addresses, options).unwrap();
    Controller::new(Arc::new(runtime))
}

fn row_spec(topology: &Topology, shape: Vec<u64>, dtype: DType) -> ArraySpec {
    let mesh = Mesh::new(vec![topology.device_ids().len()], vec!["x"], topology.device_ids()).unwrap();
    ArraySpec {
        shape,
        dtype,
        sharding: Sharding::named(mesh, PartitionSpec::new([Some("x")])).unwrap(),
    }
}

#[test]
fn put_global_round_trip_in_pieces() {
    let workers = ThreadWorkers::start(2);
    let topology = Topology::uniform(2, 2).unwrap();
    // 4 KiB pieces split every shard of this 1 MiB array into many messages.
    let options = GrpcRuntimeOptions::default().with_piece_bytes(4096);
    let controller = connect(&workers, &topology, options);
    let spec = row_spec(&topology, vec![1023, 256], DType::Float32);
    let global = Generator::new(5).global_bytes(DType::Float32, &spec.shape);

    let array = controller.put_global(spec, &global).unwrap();
    assert_eq!(controller.array_bytes(), global.len() as u64);
    let fetched = controller.to_global_bytes(&array).unwrap();
    assert!(fetched == global, "fetched bytes differ from the bytes put");
    assert_eq!(controller.array_bytes(), 2 * global.len() as u64);
    assert_eq!(controller.verify(&array, Generator::new(5)).unwrap().mismatches, 0);
}

#[test]
fn colocated_save_restore_moves_no_bytes() {
    let workers = ThreadWorkers::start(2);
    let topology = Topology::uniform(2, 1).unwrap();
    let controller = connect(&workers, &topology, GrpcRuntimeOptions::default());
    let spec = row_spec(&topology, vec![9, 3], DType::Int16);
    let array = controller.put_generated(spec.clone(), Generator::new(9)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let parent = open_store(dir.path().to_str().unwrap()).unwrap();
    let pending = PendingCheckpoint::begin(&parent, "c").unwrap();
    let item = SaveItem {
        id: array.id(),
        param_name: "a".into(),
        stored: ckpt_storage::StoredArray {
            shape: vec![9, 3],
            dtype: DType::Int16,
            chunk_shape: vec![5, 3],
        },
        write_shape: vec![5, 3],
        replica_slicing: None,
        create_metadata: true,
    };
    let format = ArrayFormat::default();
    let reports = controller
        .save_colocated(pending.store(), &format, vec![(&array, item)])
        .unwrap();
    assert_eq!(reports.iter().map(|(_, r)| r.bytes).sum::<u64>(), 9 * 3 * 2);
    ckpt_storage::finalize_item(pending.store(), &format).unwrap();
    let committed = pending.commit().unwrap();

    let restored = controller
        .restore_colocated(&committed, Some(true), false, vec![("a".into(), spec)])
        .unwrap();
    assert_eq!(controller.verify(&restored[0], Generator::new(9)).unwrap().mismatches, 0);
    assert_eq!(controller.array_bytes(), 0);
}

#[test]
fn memory_store_is_rejected() {
    let workers = ThreadWorkers::start(1);
    let topology = Topology::uniform(1, 1).unwrap();
    let controller = connect(&workers, &topology, GrpcRuntimeOptions::default());
    let spec = row_spec(&topology, vec![4], DType::UInt8);
    let array = controller.put_generated(spec, Generator::new(1)).unwrap();
    let item = SaveItem {
        id: array.id(),
        param_name: "a".into(),
        stored: ckpt_storage::StoredArray {
            shape: vec![4],
            dtype: DType::UInt8,
            chunk_shape: vec![4],
        },
        write_shape: vec![4],
        replica_slicing: None,
        create_metadata: true,
    };
    let store = open_store("memory://bucket/c").unwrap();
    let err = controller
        .save_colocated(&store, &ArrayFormat::default(), vec![(&array, item)])
        .unwrap_err();
    assert!(matches!(err, ColocatedError::HostFailed { host: 0, .. }), "{err}");
    assert!(err.to_string().contains("memory://bucket/c"), "{err}");
}

#[test]
fn unknown_array_names_host() {
    let workers = ThreadWorkers::start(2);
    let topology = Topology::uniform(2, 1).unwrap();
    let controller = connect(&workers, &topology, GrpcRuntimeOptions::default());
    let spec = row_spec(&topology, vec![4], DType::UInt8);
    let array = controller.put_generated(spec, Generator::new(1)).unwrap();
    controller.drop_arrays(&[&array]).unwrap();
    let err = controller.verify(&array, Generator::new(1)).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, ColocatedError::HostFailed { host: 0, .. }), "{message}");
    assert!(message.contains("is not on host 0"), "{message}");
    assert!(message.contains(&workers.addresses[0]), "{message}");
}

#[test]
fn stopped_worker_is_unavailable() {
    let workers = ThreadWorkers::start(2);
    let topology = Topology::uniform(2, 1).unwrap();
    let runtime = GrpcRuntime::connect(topology.clone(), &workers.addresses, GrpcRuntimeOptions::default()).unwrap();
    runtime.shutdown_workers().into_iter().for_each(|result| result.unwrap());
    std::thread::sleep(Duration::from_millis(200));
    let health = runtime.health(1).unwrap_err();
    assert!(matches!(health, ColocatedError::HostUnavailable { host: 1, .. }), "{health}");
    assert!(health.to_string().contains(&workers.addresses[1]), "{health}");
}

#[test]
fn slow_save_is_cancelled_at_deadline() {
    let workers = ThreadWorkers::start(1);
    let topology = Topology::uniform(1, 1).unwrap();
    let options = GrpcRuntimeOptions::default().with_call_timeout(Duration::from_millis(300));
    let runtime = Arc::new(GrpcRuntime::connect(topology.clone(), &workers.addresses, options).unwrap());
    let controller = Controller::new(Arc::clone(&runtime) as Arc<dyn Runtime>);
    let spec = row_spec(&topology, vec![4], DType::UInt8);
    let array = controller.put_generated(spec, Generator::new(1)).unwrap();
    runtime.inject_save_delay(0, Duration::from_secs(30)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let item_store = open_store(dir.path().to_str().unwrap()).unwrap();
    let item = SaveItem {
        id: array.id(),
        param_name: "a".into(),
        stored: ckpt_storage::StoredArray {
            shape: vec![4],
            dtype: DType::UInt8,
            chunk_shape: vec![4],
        },
        write_shape: vec![4],
        replica_slicing: None,
        create_metadata: true,
    };
    let started = std::time::Instant::now();
    let err = controller
        .save_colocated(&item_store, &ArrayFormat::default(), vec![(&array, item)])
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(err.to_string().contains("deadline"), "{err}");

    // The worker learns of the deadline too and stops the delayed save.
    let mut health = runtime.health(0).unwrap();
    for _ in 0..100 {
        if health.saves_in_flight == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        health = runtime.health(0).unwrap();
    }
    assert_eq!(health.saves_in_flight, 0);
    assert_eq!(health.calls_cancelled, 1);
}

#[test]
fn fault_injection_needs_permission() {
    let mut options = WorkerOptions::new(0, "127.0.0.1:0".parse().unwrap());
    options.shutdown_grace = Duration::from_secs(1);
    let server = WorkerServer::bind(options).unwrap();
    let address = server.local_addr().to_string();
    let handle = server.shutdown_handle();
    let thread = std::thread::spawn(move || server.serve());

    let topology = Topology::uniform(1, 1).unwrap();
    let runtime = GrpcRuntime::connect(topology, &[address], GrpcRuntimeOptions::default()).unwrap();
    let err = runtime.inject_save_delay(0, Duration::from_secs(1)).unwrap_err();
    assert!(err.to_string().contains("--fault-injection"), "{err}");
    handle.shutdown();
    thread.join().unwrap().unwrap();
}

#[test]
fn address_count_must_match_hosts() {
    let topology = Topology::uniform(2, 1).unwrap();
    let err = GrpcRuntime::connect(topology, &["127.0.0.1:1".into()], GrpcRuntimeOptions::default())
        .unwrap_err();
    assert!(matches!(err, GrpcError::AddressCount { expected: 2, found: 1 }), "{err}");
}

#[test]
fn invalid_address_is_rejected() {
    let topology = Topology::uniform(1, 1).unwrap();
    let err = GrpcRuntime::connect(topology, &["localhost".into()], GrpcRuntimeOptions::default())
        .unwrap_err();
    assert!(matches!(err, GrpcError::InvalidAddress { .. }), "{err}");
}

#[test]
fn proto_names_every_method() {
    for path in [
        "Health",
        "OpenSession",
        "EndSession",
        "Call",
        "PutShards",
        "FetchShards",
        "InjectFaults",
        "Shutdown",
        "Join",
        "Barrier",
    ] {
        assert!(crate::WORKER_PROTO.contains(&format!("rpc {path}(")), "{path}");
    }
}
