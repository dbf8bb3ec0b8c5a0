//! Cluster scenarios with one `ckpt-worker` process per host on loopback
//! and the test process as the controller. They save and restore colocated
//! and gathered, reshard onto other host counts, kill a worker during a
//! save, and stall a worker past the deadline.

mod cluster_support;

use std::{sync::Arc, time::Duration};

use ckpt_colocated::{ColocatedError, GrpcRuntimeOptions, HostReply, HostCall, Runtime};
use ckpt_storage::{list_committed, open_committed, open_store, TMP_SUFFIX};
use cluster_support::{
    dirs, model, model_bytes, put_model, restore_gathered_mismatches, restore_mismatches, save, start,
    wait_until, Mode,
};

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn colocated_moves_no_bytes_through_controller() {
    let cluster = start(4, 2, GrpcRuntimeOptions::default());
    let model = model(&cluster.topology, 4);
    let arrays = put_model(&cluster.controller, &model);
    let dir = tempfile::tempdir().unwrap();
    let parent = open_store(dir.path().to_str().unwrap()).unwrap();

    save(&cluster.controller, &parent, "step_1", &model, &arrays, Mode::Colocated).unwrap();
    assert_eq!(cluster.controller.array_bytes(), 0);
    assert_eq!(restore_mismatches(&cluster.controller, &parent, "step_1", &model), 0);
    assert_eq!(cluster.controller.array_bytes(), 0);

    // Every host wrote its own database.
    let item = open_committed(&parent, "step_1").unwrap();
    for host in 0..4 {
        assert!(dirs(&item).contains(&format!("ocdbt.process_{host}")), "host {host}");
    }
}

#[test]
fn gather_moves_every_byte_through_controller() {
    let cluster = start(4, 2, GrpcRuntimeOptions::default().with_piece_bytes(16 << 10));
    let model = model(&cluster.topology, 4);
    let arrays = put_model(&cluster.controller, &model);
    let dir = tempfile::tempdir().unwrap();
    let parent = open_store(dir.path().to_str().unwrap()).unwrap();

    save(&cluster.controller, &parent, "step_1", &model, &arrays, Mode::Gather).unwrap();
    // Replica-0 shards cover each array exactly once.
    assert_eq!(cluster.controller.array_bytes(), model_bytes(&model));
    let item = open_committed(&parent, "step_1").unwrap();
    assert!(dirs(&item).contains("ocdbt.process_controller"));

    assert_eq!(restore_gathered_mismatches(&cluster.controller, &parent, "step_1", &model), 0);
    assert!(cluster.controller.array_bytes() > model_bytes(&model));
}

#[test]
fn checkpoint_of_four_hosts_restores_on_other_counts() {
    let dir = tempfile::tempdir().unwrap();
    let parent = open_store(dir.path().to_str().unwrap()).unwrap();
    {
        let cluster = start(4, 2, GrpcRuntimeOptions::default());
        let model = model(&cluster.topology, 4);
        let arrays = put_model(&cluster.controller, &model);
        save(&cluster.controller, &parent, "step_1", &model, &arrays, Mode::Colocated).unwrap();
        cluster.workers.stop(10 * SECOND).unwrap();
    }

    // Other host counts, devices per host and mesh shapes.
    for (hosts, devices_per_host, rows) in [(1, 2, 1), (2, 3, 3), (3, 2, 3), (8, 1, 2)] {
        let cluster = start(hosts, devices_per_host, GrpcRuntimeOptions::default());
        let model = model(&cluster.topology, rows);
        let mismatches = restore_mismatches(&cluster.controller, &parent, "step_1", &model);
        assert_eq!(mismatches, 0, "{hosts} hosts x {devices_per_host} devices");
        assert_eq!(cluster.controller.array_bytes(), 0, "{hosts} hosts");
        cluster.workers.stop(10 * SECOND).unwrap();
    }
}

#[test]
fn killed_worker_fails_save_naming_host() {
    let mut cluster = start(4, 1, GrpcRuntimeOptions::default().with_call_timeout(30 * SECOND));
    let model = model(&cluster.topology, 2);
    let arrays = put_model(&cluster.controller, &model);
    let dir = tempfile::tempdir().unwrap();
    let parent = open_store(dir.path().to_str().unwrap()).unwrap();
    save(&cluster.controller, &parent, "step_1", &model, &arrays, Mode::Colocated).unwrap();

    // Host 2 stalls in its next save, so it is surely mid-save when killed.
    cluster.runtime.inject_save_delay(2, 60 * SECOND).unwrap();
    let started = std::time::Instant::now();
    let error = std::thread::scope(|scope| {
        let saving = scope.spawn(|| save(&cluster.controller, &parent, "step_2", &model, &arrays, Mode::Colocated));
        let runtime = Arc::clone(&cluster.runtime);
        assert!(wait_until(10 * SECOND, || runtime.health(2).is_ok_and(|h| h.saves_in_flight == 1)));
        cluster.workers.kill(2).unwrap();
        saving.join().unwrap().unwrap_err()
    });
    assert!(started.elapsed() < 30 * SECOND, "{:?}", started.elapsed());
    assert!(matches!(error, ColocatedError::HostUnavailable { host: 2, .. }), "{error}");
    assert!(error.to_string().contains(&cluster.workers.addresses()[2]), "{error}");

    // The failed save is not listed, not restorable, and its files are gone.
    assert_eq!(list_committed(&parent).unwrap(), ["step_1"]);
    assert!(open_committed(&parent, "step_2").is_err());
    assert!(!dirs(&parent).contains(&format!("step_2{TMP_SUFFIX}")));

    // With host 2 back, the earlier checkpoint restores and a new save of the name succeeds.
    cluster.workers.restart(2).unwrap();
    assert_eq!(restore_mismatches(&cluster.controller, &parent, "step_1", &model), 0);
    let arrays = put_model(&cluster.controller, &model);
    save(&cluster.controller, &parent, "step_2", &model, &arrays, Mode::Colocated).unwrap();
    assert_eq!(restore_mismatches(&cluster.controller, &parent, "step_2", &model), 0);
    assert_eq!(list_committed(&parent).unwrap(), ["step_1", "step_2"]);
}

#[test]
fn slow_worker_misses_deadline() {
    let deadline = 2 * SECOND;
    let cluster = start(3, 1, GrpcRuntimeOptions::default().with_call_timeout(deadline));
    let model = model(&cluster.topology, 3);
    let arrays = put_model(&cluster.controller, &model);
    let dir = tempfile::tempdir().unwrap();
    let parent = open_store(dir.path().to_str().unwrap()).unwrap();
    cluster.runtime.inject_save_delay(1, 60 * SECOND).unwrap();

    let started = std::time::Instant::now();
    let error = save(&cluster.controller, &parent, "step_1", &model, &arrays, Mode::Colocated).unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed >= deadline, "{elapsed:?}");
    assert!(elapsed < deadline + 5 * SECOND, "{elapsed:?}");
    assert!(matches!(error, ColocatedError::HostFailed { host: 1, .. }), "{error}");
    assert!(error.to_string().contains("deadline"), "{error}");
    assert!(list_committed(&parent).unwrap().is_empty());

    // The worker cancels the stalled save instead of finishing it later.
    let runtime = &cluster.runtime;
    assert!(wait_until(5 * SECOND, || runtime.health(1).is_ok_and(|h| h.saves_in_flight == 0)));
    assert_eq!(runtime.health(1).unwrap().calls_cancelled, 1);
}

#[test]
fn stopped_cluster_leaves_no_process() {
    let mut cluster = start(3, 1, GrpcRuntimeOptions::default());
    let pids: Vec<u32> = (0..3).filter_map(|host| cluster.workers.pid(host)).collect();
    assert_eq!(pids.len(), 3);
    assert_eq!(cluster.workers.running(), 3);
    drop(cluster.controller);
    drop(cluster.runtime);
    cluster.workers.stop(10 * SECOND).unwrap();
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "worker {pid} still exists");
    }
}

#[test]
fn panic_leaves_no_process() {
    let mut pids = Vec::new();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cluster = start(2, 1, GrpcRuntimeOptions::default());
        pids.extend((0..2).filter_map(|host| cluster.workers.pid(host)));
        panic!("a scenario failed");
    }));
    assert!(outcome.is_err());
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "worker {pid} still exists");
    }
}

#[test]
fn runtime_replies_in_call_order() {
    let cluster = start(2, 1, GrpcRuntimeOptions::default());
    let model = model(&cluster.topology, 2);
    let arrays = put_model(&cluster.controller, &model);
    let calls = vec![
        (1, HostCall::DropArrays { ids: vec![arrays[0].id()] }),
        (0, HostCall::DropArrays { ids: vec![arrays[0].id()] }),
        (5, HostCall::DropArrays { ids: Vec::new() }),
    ];
    let replies = cluster.runtime.call_hosts(calls);
    assert!(matches!(replies[0], Ok(HostReply::Done)));
    assert!(matches!(replies[1], Ok(HostReply::Done)));
    assert!(matches!(replies[2], Err(ColocatedError::UnknownHost { host: 5, .. })));
}
