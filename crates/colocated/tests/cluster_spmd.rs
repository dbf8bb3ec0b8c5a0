//! SPMD scenarios: `ckpt-worker spmd` processes that save and restore one
//! checkpoint together, with a process killed during the save, the
//! primary killed before it commits, and a process too slow for the
//! barrier timeout.

mod cluster_support;

use std::time::Duration;

use ckpt_colocated::{
    spawn_spmd, wait_spmd_report, ChildProcess, GrpcRuntimeOptions, SpmdArray, SpmdConfig, SpmdFaults,
    SpmdReport, PAUSED_LINE, WRITING_LINE,
};
use ckpt_device::Topology;
use ckpt_storage::{list_committed, open_committed, open_store, Store, TMP_SUFFIX};
use cluster_support::{dirs, launch_options, model, model_bytes, restore_mismatches, start, ModelArray};

const SECOND: Duration = Duration::from_secs(1);

fn spmd_arrays(model: &[ModelArray]) -> Vec<SpmdArray> {
    model
        .iter()
        .map(|array| SpmdArray {
            name: array.name.to_owned(),
            shape: array.spec.shape.clone(),
            dtype: array.spec.dtype,
            sharding: array.spec.sharding.clone(),
            seed: array.seed,
        })
        .collect()
}

/// Configs of a job of `processes` x `devices` whose mesh has `rows` rows.
fn job_configs(processes: usize, devices: usize, rows: usize, dir: &str) -> Vec<SpmdConfig> {
    let topology = Topology::uniform(processes, devices).unwrap();
    let arrays = spmd_arrays(&model(&topology, rows));
    (0..processes)
        .map(|process_index| SpmdConfig {
            process_index,
            num_processes: processes,
            devices_per_process: devices,
            coordinator: "127.0.0.1:0".into(),
            directory: dir.to_owned(),
            arrays: arrays.clone(),
            save: None,
            restore: None,
            barrier_timeout_ms: 20_000,
            faults: SpmdFaults::default(),
        })
        .collect()
}

/// Runs the job and returns each process's report or error message.
fn run(configs: Vec<SpmdConfig>) -> Vec<Result<SpmdReport, String>> {
    let mut processes = spawn_spmd(configs, &launch_options()).unwrap();
    finish(&mut processes)
}

fn finish(processes: &mut [ChildProcess]) -> Vec<Result<SpmdReport, String>> {
    processes
        .iter_mut()
        .map(|process| wait_spmd_report(process, Duration::from_secs(60)).unwrap())
        .collect()
}

fn save_and_restore(processes: usize, dir: &str, name: &str) -> Vec<Result<SpmdReport, String>> {
    let mut configs = job_configs(processes, 2, processes, dir);
    for config in &mut configs {
        config.save = Some(name.into());
        config.restore = Some(name.into());
    }
    run(configs)
}

fn parent(dir: &tempfile::TempDir) -> Store {
    open_store(dir.path().to_str().unwrap()).unwrap()
}

#[test]
fn spmd_save_restore() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let reports = save_and_restore(4, path, "step_1");
    let reports: Vec<SpmdReport> = reports.into_iter().map(Result::unwrap).collect();

    let topology = Topology::uniform(4, 2).unwrap();
    let total = model_bytes(&model(&topology, 4));
    assert_eq!(reports.iter().map(|r| r.bytes_written).sum::<u64>(), total);
    for report in &reports {
        assert!(report.bytes_written > 0, "process {}", report.process_index);
        assert!(report.elements_verified > 0, "process {}", report.process_index);
        assert_eq!(report.mismatches, 0, "process {}", report.process_index);
    }
    let item = open_committed(&parent(&dir), "step_1").unwrap();
    for process in 0..4 {
        assert!(dirs(&item).contains(&format!("ocdbt.process_{process}")), "process {process}");
    }
    assert!(item.exists("_METADATA").unwrap());
    assert!(item.exists("_sharding").unwrap());
}

#[test]
fn spmd_checkpoint_restores_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    for report in save_and_restore(4, path, "step_1") {
        report.unwrap();
    }

    // Three SPMD processes with another mesh.
    let mut configs = job_configs(3, 2, 3, path);
    for config in &mut configs {
        config.restore = Some("step_1".into());
    }
    for report in run(configs) {
        let report = report.unwrap();
        assert!(report.elements_verified > 0);
        assert_eq!(report.mismatches, 0, "process {}", report.process_index);
    }

    // A controller with two worker processes, colocated.
    let cluster = start(2, 1, GrpcRuntimeOptions::default());
    let model = model(&cluster.topology, 2);
    assert_eq!(restore_mismatches(&cluster.controller, &parent(&dir), "step_1", &model), 0);
}

#[test]
fn spmd_killed_process_fails_save() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    for report in save_and_restore(3, path, "step_1") {
        report.unwrap();
    }

    let mut configs = job_configs(3, 2, 3, path);
    for config in &mut configs {
        config.save = Some("step_2".into());
    }
    configs[2].faults.save_delay_ms = 60_000;
    let started = std::time::Instant::now();
    let mut processes = spawn_spmd(configs, &launch_options()).unwrap();
    processes[2].wait_for_line(WRITING_LINE, 30 * SECOND).unwrap();
    processes[2].kill().unwrap();
    let reports = finish(&mut processes[..2]);
    assert!(started.elapsed() < 30 * SECOND, "{:?}", started.elapsed());
    for report in reports {
        let message = report.unwrap_err();
        assert!(message.contains("process 2"), "{message}");
        assert!(message.contains("disconnected"), "{message}");
    }

    let parent = parent(&dir);
    assert_eq!(list_committed(&parent).unwrap(), ["step_1"]);
    assert!(!dirs(&parent).contains(&format!("step_2{TMP_SUFFIX}")));
    let mut restores = job_configs(3, 2, 3, path);
    for config in &mut restores {
        config.restore = Some("step_1".into());
    }
    for report in run(restores) {
        assert_eq!(report.unwrap().mismatches, 0);
    }
}

#[test]
fn spmd_killed_primary_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let mut configs = job_configs(3, 2, 3, path);
    for config in &mut configs {
        config.save = Some("step_1".into());
    }
    configs[0].faults.pause_before_commit = true;
    let mut processes = spawn_spmd(configs, &launch_options()).unwrap();
    processes[0].wait_for_line(PAUSED_LINE, 30 * SECOND).unwrap();
    processes[0].kill().unwrap();
    for report in finish(&mut processes[1..]) {
        let message = report.unwrap_err();
        assert!(message.contains("coordinator"), "{message}");
    }

    // The merged databases and metadata exist only under the temporary name.
    let parent = parent(&dir);
    assert!(list_committed(&parent).unwrap().is_empty());
    assert!(open_committed(&parent, "step_1").is_err());
    assert!(dirs(&parent).contains(&format!("step_1{TMP_SUFFIX}")));

    // The next save of the name removes it and commits.
    for report in save_and_restore(3, path, "step_1") {
        assert_eq!(report.unwrap().mismatches, 0);
    }
    assert_eq!(dirs(&parent).into_iter().collect::<Vec<_>>(), ["step_1"]);
}

#[test]
fn spmd_slow_process_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    let mut configs = job_configs(3, 1, 3, path);
    for config in &mut configs {
        config.save = Some("step_1".into());
        config.barrier_timeout_ms = 1_000;
    }
    configs[1].faults.save_delay_ms = 4_000;
    let started = std::time::Instant::now();
    let mut reports = run(configs);
    assert!(started.elapsed() < 20 * SECOND, "{:?}", started.elapsed());
    // The slow process finds the job over: process 0 stopped the coordinator.
    let slow = reports.remove(1).unwrap_err();
    assert!(slow.contains("coordinator") || slow.contains("timed out"), "{slow}");
    for report in reports {
        let message = report.unwrap_err();
        assert!(message.contains("timed out"), "{message}");
        assert!(message.contains("[1]"), "{message}");
    }
    assert!(list_committed(&parent(&dir)).unwrap().is_empty());
}

#[test]
fn spmd_invalid_config_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut configs = job_configs(1, 1, 1, dir.path().to_str().unwrap());
    configs[0].arrays[0].name = "a.b".into();
    let err = spawn_spmd(configs, &launch_options()).unwrap_err();
    assert!(err.to_string().contains("\"a.b\""), "{err}");
}
