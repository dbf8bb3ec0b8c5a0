//! A controller killed after its hosts wrote their shards but before it
//! committed. The test binary runs itself again as that controller, in a
//! process of its own, and the test kills it with SIGKILL.

mod cluster_support;

use std::{io::Write, process::Command, sync::Arc, time::Duration};

use ckpt_colocated::{ChildProcess, Controller, GrpcRuntime, GrpcRuntimeOptions, PAUSED_LINE};
use ckpt_device::Topology;
use ckpt_storage::{finalize_item, list_committed, open_committed, open_store, ArrayFormat, PendingCheckpoint, TMP_SUFFIX};
use cluster_support::{dirs, model, put_model, restore_mismatches, save, start, write_arrays, Mode};

/// Set in the child process: the checkpoint directory and the workers' addresses, one per line.
const CHILD_ENV: &str = "CKPT_TEST_KILLED_CONTROLLER";
const TEST_NAME: &str = "killed_controller_commits_nothing";

#[test]
fn killed_controller_commits_nothing() {
    if let Ok(setup) = std::env::var(CHILD_ENV) {
        run_controller_until_killed(&setup);
    }

    let cluster = start(3, 1, GrpcRuntimeOptions::default());
    let model = model(&cluster.topology, 3);
    let arrays = put_model(&cluster.controller, &model);
    let dir = tempfile::tempdir().unwrap();
    let parent = open_store(dir.path().to_str().unwrap()).unwrap();
    save(&cluster.controller, &parent, "step_1", &model, &arrays, Mode::Colocated).unwrap();

    let mut setup = vec![dir.path().display().to_string()];
    setup.extend(cluster.workers.addresses().iter().cloned());
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, setup.join("\n"));
    let mut controller = ChildProcess::spawn("controller", &mut command).unwrap();
    controller.wait_for_line(PAUSED_LINE, Duration::from_secs(60)).unwrap();
    assert!(dirs(&parent).contains(&format!("step_2{TMP_SUFFIX}")));
    controller.kill().unwrap();

    // Nothing under the new name is listed or restorable; the old checkpoint restores.
    assert_eq!(list_committed(&parent).unwrap(), ["step_1"]);
    assert!(open_committed(&parent, "step_2").is_err());
    assert_eq!(restore_mismatches(&cluster.controller, &parent, "step_1", &model), 0);

    // The dead controller's session stays on the workers until they stop.
    assert_eq!(cluster.runtime.health(0).unwrap().sessions, 2);

    // The next save of the name removes the unfinished one and commits.
    save(&cluster.controller, &parent, "step_2", &model, &arrays, Mode::Colocated).unwrap();
    assert_eq!(list_committed(&parent).unwrap(), ["step_1", "step_2"]);
    assert_eq!(restore_mismatches(&cluster.controller, &parent, "step_2", &model), 0);
}

/// Runs the child: saves `step_2` up to the commit, reports that on
/// standard output, and waits to be killed.
fn run_controller_until_killed(setup: &str) -> ! {
    let mut lines = setup.lines();
    let dir = lines.next().unwrap().to_owned();
    let addresses: Vec<String> = lines.map(str::to_owned).collect();
    let topology = Topology::uniform(addresses.len(), 1).unwrap();
    let runtime = GrpcRuntime::connect(topology.clone(), &addresses, GrpcRuntimeOptions::default()).unwrap();
    let controller = Controller::new(Arc::new(runtime));
    let model = model(&topology, addresses.len());
    let arrays = put_model(&controller, &model);

    let parent = open_store(&dir).unwrap();
    let pending = PendingCheckpoint::begin(&parent, "step_2").unwrap();
    write_arrays(&controller, pending.store(), &model, &arrays, Mode::Colocated).unwrap();
    finalize_item(pending.store(), &ArrayFormat::default()).unwrap();

    // The test harness has printed "test NAME ... " without a line end.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "\n{PAUSED_LINE}").unwrap();
    stdout.flush().unwrap();
    drop(stdout);
    std::thread::sleep(Duration::from_secs(60));
    panic!("the test did not kill this controller within 60 s");
}
