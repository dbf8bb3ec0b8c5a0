//! `cargo xtask cluster`: a multi-host cluster of real processes on
//! loopback, one scenario, and one JSON line of metrics.
//!
//! Each host is a `ckpt-worker` process on its own address (host 0 on
//! 127.0.0.1, host 1 on 127.0.0.2, ...). In `colocated` and `gather` mode
//! this process is the controller, which saves and restores through the
//! `ckpt` facade over a `GrpcRuntime`. In `spmd` mode every host is an SPMD
//! process and there is no controller. Every process started here is
//! stopped when the scenario ends, passes, fails or panics: the launcher
//! kills its children on drop, and the children exit when this process's
//! end of their standard input closes.

use std::{
    collections::BTreeMap,
    fmt,
    io::Write,
    ops::Range,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use ckpt::{
    colocated::{
        spawn_spmd, wait_spmd_report, ArraySpec, ChildProcess, Controller, Generator, GrpcRuntime,
        GrpcRuntimeOptions, HostCall, HostReply, LaunchOptions, Runtime, SpmdArray, SpmdConfig,
        SpmdFaults, SpmdReport, WorkerCluster, PAUSED_LINE, WRITING_LINE,
    },
    device::{Mesh, PartitionSpec, Sharding, Topology},
    pytree::{param_name, PyTree},
    storage::{
        list_committed, open_committed, open_store, Backend, Capabilities, StorageError, Store,
        COMMIT_SUCCESS_FILE, TMP_SUFFIX,
    },
    DType, Leaf, PyTreeCheckpointer, PyTreeRestore, PyTreeSave, RestoreArgs, SaveArgs, Scalar,
};
use serde::{Deserialize, Serialize};

use crate::s3::MotoServer;

/// Options of `cargo xtask cluster`.
#[derive(Debug, clap::Args)]
pub(crate) struct ClusterArgs {
    /// Number of hosts: worker processes, or SPMD processes in spmd mode.
    #[arg(long, default_value_t = 4)]
    hosts: usize,
    /// Devices on each host.
    #[arg(long, default_value_t = 2)]
    devices_per_host: usize,
    /// colocated: each worker writes its own shards; gather: the controller
    /// fetches every shard and writes it; spmd: one process per host and no controller.
    #[arg(long, value_enum, default_value_t = Mode::Colocated)]
    mode: Mode,
    /// Approximate bytes of array data; accepts suffixes K, M and G (powers of 1024).
    #[arg(long, default_value = "64M", value_parser = crate::demo::parse_size)]
    size: u64,
    /// The scenario to run.
    #[arg(long, value_enum, default_value_t = Scenario::SaveRestore)]
    scenario: Scenario,
    /// Hosts that restore in the reshard scenario (default: half of --hosts, or 2 for one host).
    #[arg(long)]
    restore_hosts: Option<usize>,
    /// Deadline in seconds of each request to a host, and of each barrier
    /// in spmd mode (default: 2 in slow-worker, 300 otherwise).
    #[arg(long)]
    deadline_seconds: Option<f64>,
    /// Directory for checkpoints and process logs (default: target/cluster).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Where the checkpoints go: local disk under --dir, or S3 on a moto
    /// server that this task starts on 127.0.0.1 and stops at the end.
    #[arg(long, value_enum, default_value_t = StoreKind::Local)]
    store: StoreKind,
    /// Runs this process as the controller that kill-primary-before-commit
    /// kills; set by the scenario itself.
    #[arg(long, hide = true)]
    controller_child: Option<String>,
}

/// The storage of a cluster run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    Local,
    S3,
}

/// The bucket of `--store s3` runs.
const S3_BUCKET: &str = "ckpt-cluster";

/// Deployment and save path of the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    Colocated,
    Gather,
    Spmd,
}

/// Scenario run on the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Scenario {
    /// Save and restore on the same hosts.
    SaveRestore,
    /// Save on --hosts hosts, restore on --restore-hosts hosts with another mesh.
    Reshard,
    /// SIGKILL a worker during a save; the earlier checkpoint must still restore.
    KillWorkerDuringSave,
    /// SIGKILL the controller (or SPMD process 0) just before it commits.
    KillPrimaryBeforeCommit,
    /// One worker stalls in its save until the deadline passes.
    SlowWorker,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Colocated => "colocated",
            Mode::Gather => "gather",
            Mode::Spmd => "spmd",
        })
    }
}

/// The JSON line printed at the end.
#[derive(Debug, Default, Serialize)]
struct Metrics {
    mode: String,
    scenario: String,
    hosts: usize,
    devices_per_host: usize,
    /// Hosts of the restore, in the reshard scenario.
    restore_hosts: Option<usize>,
    /// Bytes of every array, each counted once.
    total_array_bytes: u64,
    /// Array bytes that passed through the controller in the save and the restore.
    controller_array_bytes: u64,
    save_controller_array_bytes: u64,
    restore_controller_array_bytes: u64,
    save_seconds: f64,
    restore_seconds: f64,
    /// Array bytes (before compression) each host wrote in the measured save.
    host_bytes_written: Vec<u64>,
    /// Array bytes the controller wrote in the measured save.
    controller_bytes_written: u64,
    /// Seconds from the fault to the failed save's return, in the fault
    /// scenarios. A slow worker's fault starts with the save, and in spmd
    /// mode the save returns when the last surviving process exits.
    failed_after_seconds: Option<f64>,
    /// The error of the failed save, in the fault scenarios.
    save_error: Option<String>,
    /// Whether every check of the scenario held.
    passed: bool,
    /// The scenario's error, when it failed.
    error: Option<String>,
}

pub(crate) fn run(root: &Path, args: &ClusterArgs) -> Result<()> {
    if let Some(setup) = &args.controller_child {
        return run_controller_child(setup);
    }
    check_args(args)?;
    let dir = args.dir.clone().unwrap_or_else(|| root.join("target/cluster"));
    let run_dir = dir.join(format!("{}-{}", args.mode, scenario_name(args.scenario)));
    if run_dir.exists() {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("removing the previous run's {}", run_dir.display()))?;
    }
    std::fs::create_dir_all(run_dir.join("checkpoints"))
        .with_context(|| format!("creating {}", run_dir.display()))?;
    let binary = build_worker(root)?;
    let mut launch = LaunchOptions::new(binary)
        .with_log_dir(run_dir.join("logs"))
        .with_log_filter("info")
        .with_fault_injection(true);
    let run_name = format!("{}-{}", args.mode, scenario_name(args.scenario));
    let (parent_url, moto) = match args.store {
        StoreKind::Local => (run_dir.join("checkpoints").display().to_string(), None),
        StoreKind::S3 => {
            let moto = MotoServer::start_from_venv(root)?;
            moto.create_bucket(S3_BUCKET)?;
            // Every process reaches the server as a deployment would: the
            // endpoint and credentials come from the environment, which
            // object_store's S3 builder reads. The controller child of
            // kill-primary-before-commit inherits this process's variables.
            for (key, value) in moto.env() {
                std::env::set_var(key, &value);
                launch = launch.with_env(key, value);
            }
            (format!("s3://{S3_BUCKET}/{run_name}"), Some(moto))
        }
    };
    eprintln!(
        "cluster: {} hosts x {} devices, {} mode, scenario {}, checkpoints in {parent_url}, logs in {}",
        args.hosts,
        args.devices_per_host,
        args.mode,
        scenario_name(args.scenario),
        run_dir.join("logs").display()
    );

    let mut metrics = Metrics {
        mode: args.mode.to_string(),
        scenario: scenario_name(args.scenario).to_owned(),
        hosts: args.hosts,
        devices_per_host: args.devices_per_host,
        ..Metrics::default()
    };
    let context = Run {
        args,
        launch,
        parent_url,
        log_dir: run_dir.join("logs"),
    };
    let mut result = match args.mode {
        Mode::Colocated | Mode::Gather => run_controller_scenario(&context, &mut metrics),
        Mode::Spmd => run_spmd_scenario(&context, &mut metrics),
    };
    if let (Some(moto), Ok(())) = (&moto, &result) {
        result = moto.open_uploads(S3_BUCKET).and_then(|open| {
            ensure!(open == 0, "{open} multipart uploads in bucket {S3_BUCKET} were neither completed nor aborted");
            Ok(())
        });
    }
    metrics.passed = result.is_ok();
    metrics.error = result.as_ref().err().map(|err| format!("{err:#}"));
    metrics.controller_array_bytes =
        metrics.save_controller_array_bytes + metrics.restore_controller_array_bytes;
    println!("{}", serde_json::to_string(&metrics)?);
    result
}

fn check_args(args: &ClusterArgs) -> Result<()> {
    ensure!(
        (1..=254).contains(&args.hosts),
        "--hosts {} is out of range: each host needs its own address in 127.0.0.1..=127.0.0.254",
        args.hosts
    );
    ensure!(args.devices_per_host >= 1, "--devices-per-host must be at least 1");
    ensure!(args.size >= 1024, "--size {} is too small: use at least 1K", args.size);
    if let Some(hosts) = args.restore_hosts {
        ensure!((1..=254).contains(&hosts), "--restore-hosts {hosts} is out of range 1..=254");
    }
    if let Some(seconds) = args.deadline_seconds {
        ensure!(seconds > 0.0 && seconds.is_finite(), "--deadline-seconds must be positive");
    }
    Ok(())
}

fn scenario_name(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::SaveRestore => "save-restore",
        Scenario::Reshard => "reshard",
        Scenario::KillWorkerDuringSave => "kill-worker-during-save",
        Scenario::KillPrimaryBeforeCommit => "kill-primary-before-commit",
        Scenario::SlowWorker => "slow-worker",
    }
}

/// Builds the `ckpt-worker` binary with the profile this task was built
/// with and returns its path, next to this task's binary.
fn build_worker(root: &Path) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let profile_dir = exe
        .parent()
        .context("the xtask binary has no parent directory")?
        .to_path_buf();
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("debug")
        .to_owned();

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(&cargo);
    // Selecting xtask too resolves features as for this task's own build,
    // so the shared crates are not compiled a second time.
    command.current_dir(root).args([
        "build", "--quiet", "-p", "xtask", "-p", "ckpt-colocated", "--bin", "ckpt-worker",
    ]);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    remove_cargo_run_variables(&mut command);

    let status = command
        .status()
        .with_context(|| format!("running {cargo} build for ckpt-worker"))?;
    ensure!(status.success(), "building ckpt-worker failed ({status})");
    let binary = profile_dir.join(format!("ckpt-worker{}", std::env::consts::EXE_SUFFIX));
    ensure!(binary.exists(), "{} is missing after the build", binary.display());
    Ok(binary)
}

/// Removes the variables that `cargo run` gives this process about its
/// package. Build scripts that watch them (ring's does) would see them
/// change and rebuild half the dependency tree.
fn remove_cargo_run_variables(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let set_by_cargo_run = key.starts_with("CARGO_PKG_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
            );
        if set_by_cargo_run {
            command.env_remove(key);
        }
    }
}

/// Settings shared by every scenario.
struct Run<'a> {
    args: &'a ClusterArgs,
    launch: LaunchOptions,
    /// The directory of the checkpoints: a local path or an s3:// URL.
    parent_url: String,
    log_dir: PathBuf,
}

impl Run<'_> {
    fn parent(&self) -> Result<Store> {
        Ok(open_store(&self.parent_url)?)
    }

    fn deadline(&self) -> Duration {
        let default = if self.args.scenario == Scenario::SlowWorker { 2.0 } else { 300.0 };
        Duration::from_secs_f64(self.args.deadline_seconds.unwrap_or(default))
    }

    fn restore_hosts(&self) -> usize {
        self.args
            .restore_hosts
            .unwrap_or(if self.args.hosts > 1 { self.args.hosts / 2 } else { 2 })
    }

    /// Returns the host that the fault scenarios kill or slow down: the last one.
    fn victim(&self) -> usize {
        self.args.hosts - 1
    }
}

// ---------------------------------------------------------------------------
// The model: sharded arrays with uneven shards and a scalar.

/// Layout of an array over the `x` (hosts) and `y` (devices) mesh axes.
#[derive(Clone, Copy, Debug)]
enum Layout {
    Rows,
    Columns,
    Both,
    Replicated,
}

impl Layout {
    fn spec(self) -> PartitionSpec {
        match self {
            Layout::Rows => PartitionSpec::new([Some("x"), None]),
            Layout::Columns => PartitionSpec::new([None, Some("y")]),
            Layout::Both => PartitionSpec::new([Some("x"), Some("y")]),
            Layout::Replicated => PartitionSpec::new([None::<&str>, None]),
        }
    }
}

#[derive(Clone, Debug)]
struct ModelArray {
    /// Key in the `params` dict; also the SPMD array name.
    key: String,
    shape: Vec<u64>,
    dtype: DType,
    layout: Layout,
    seed: u64,
}

impl ModelArray {
    fn bytes(&self) -> u64 {
        self.shape.iter().product::<u64>() * self.dtype.item_size() as u64
    }

    fn spec(&self, mesh: &Mesh) -> Result<ArraySpec> {
        Ok(ArraySpec {
            shape: self.shape.clone(),
            dtype: self.dtype,
            sharding: Sharding::named(mesh.clone(), self.layout.spec())?,
        })
    }
}

/// Arrays adding up to about `size` bytes. Every shape has a prime
/// dimension, so most meshes split them unevenly.
fn model_arrays(size: u64) -> Vec<ModelArray> {
    const COLUMNS: u64 = 251;
    let per_array = (size / 16).clamp(4 << 10, 16 << 20);
    let kinds = [
        (DType::Float32, Layout::Rows),
        (DType::BFloat16, Layout::Columns),
        (DType::Float32, Layout::Both),
        (DType::Int32, Layout::Rows),
        (DType::Float32, Layout::Replicated),
    ];
    let mut arrays = Vec::new();
    let mut total = 0;
    while total < size {
        let (dtype, layout) = kinds[arrays.len() % kinds.len()];
        // Replicated arrays are restored onto every device, so they stay small.
        let target = match layout {
            Layout::Replicated => per_array / 16,
            _ => per_array,
        };
        let rows = (target / (COLUMNS * dtype.item_size() as u64)).max(1) | 1;
        let array = ModelArray {
            key: format!("w{:03}_{}", arrays.len(), layout_name(layout)),
            shape: vec![rows, COLUMNS],
            dtype,
            layout,
            seed: 1000 + arrays.len() as u64,
        };
        total += array.bytes();
        arrays.push(array);
    }
    arrays
}

fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Rows => "rows",
        Layout::Columns => "columns",
        Layout::Both => "both",
        Layout::Replicated => "replicated",
    }
}

fn total_bytes(arrays: &[ModelArray]) -> u64 {
    arrays.iter().map(ModelArray::bytes).sum()
}

/// Returns the `hosts` x `devices_per_host` mesh with axes `x` and `y`.
/// With `transposed` it returns the `devices_per_host` x `hosts` mesh, a
/// different mesh over the same devices.
fn mesh(topology: &Topology, hosts: usize, devices_per_host: usize, transposed: bool) -> Result<Mesh> {
    let shape = if transposed {
        vec![devices_per_host, hosts]
    } else {
        vec![hosts, devices_per_host]
    };
    Ok(Mesh::new(shape, vec!["x", "y"], topology.device_ids())?)
}

// ---------------------------------------------------------------------------
// Controller modes: colocated and gather through the ckpt facade.

/// Counts the array bytes each host reports writing, and passes every call on.
#[derive(Debug)]
struct MeteredRuntime {
    inner: Arc<GrpcRuntime>,
    written: Vec<AtomicU64>,
}

impl MeteredRuntime {
    fn take_written(&self) -> Vec<u64> {
        self.written.iter().map(|bytes| bytes.swap(0, Ordering::Relaxed)).collect()
    }
}

impl Runtime for MeteredRuntime {
    fn topology(&self) -> &Topology {
        self.inner.topology()
    }

    fn call_hosts(&self, calls: Vec<(usize, HostCall)>) -> Vec<ckpt::colocated::Result<HostReply>> {
        let hosts: Vec<usize> = calls.iter().map(|(host, _)| *host).collect();
        let replies = self.inner.call_hosts(calls);
        for (host, reply) in hosts.into_iter().zip(&replies) {
            if let (Ok(HostReply::Saved(report)), Some(counter)) = (reply, self.written.get(host)) {
                counter.fetch_add(report.bytes, Ordering::Relaxed);
            }
        }
        replies
    }
}

/// Workers and a controller over them.
struct ControllerCluster {
    workers: WorkerCluster,
    grpc: Arc<GrpcRuntime>,
    metered: Arc<MeteredRuntime>,
    controller: Arc<Controller>,
    checkpointer: PyTreeCheckpointer,
    mesh: Mesh,
}

impl ControllerCluster {
    fn start(context: &Run<'_>, hosts: usize, devices_per_host: usize, transposed: bool) -> Result<ControllerCluster> {
        let workers = WorkerCluster::start(hosts, &context.launch)?;
        let topology = Topology::uniform(hosts, devices_per_host)?;
        let options = GrpcRuntimeOptions::default().with_call_timeout(context.deadline());
        let grpc = Arc::new(GrpcRuntime::connect(topology.clone(), workers.addresses(), options)?);
        let metered = Arc::new(MeteredRuntime {
            inner: Arc::clone(&grpc),
            written: (0..hosts).map(|_| AtomicU64::new(0)).collect(),
        });
        let controller = Arc::new(Controller::new(Arc::clone(&metered) as Arc<dyn Runtime>));
        let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));
        let mesh = mesh(&topology, hosts, devices_per_host, transposed)?;
        Ok(ControllerCluster {
            workers,
            grpc,
            metered,
            controller,
            checkpointer,
            mesh,
        })
    }

    /// Creates every array on the hosts and returns the tree to save.
    fn put(&self, arrays: &[ModelArray]) -> Result<PyTree<Leaf>> {
        let mut params = Vec::with_capacity(arrays.len());
        for array in arrays {
            let handle = self
                .controller
                .put_generated(array.spec(&self.mesh)?, Generator::new(array.seed))?;
            params.push((array.key.clone(), PyTree::leaf(Leaf::Array(handle))));
        }
        Ok(PyTree::dict([
            ("params", PyTree::dict(params)),
            ("step", PyTree::leaf(Leaf::Scalar(Scalar::Int(7)))),
        ]))
    }

    fn save(&self, parent: &Store, name: &str, tree: PyTree<Leaf>, mode: Mode) -> Result<()> {
        save_tree(&self.checkpointer, parent, name, tree, mode)
    }

    /// Restores `name` onto this cluster's mesh and checks every leaf.
    fn restore_and_verify(&self, parent: &Store, name: &str, arrays: &[ModelArray], mode: Mode) -> Result<()> {
        let restored = self.restore(parent, name, arrays, mode)?;
        self.verify(&restored, arrays)
    }

    /// Restores `name` onto this cluster's mesh.
    fn restore(&self, parent: &Store, name: &str, arrays: &[ModelArray], mode: Mode) -> Result<PyTree<Leaf>> {
        let colocated = mode == Mode::Colocated;
        let mut params = Vec::with_capacity(arrays.len());
        for array in arrays {
            let args = RestoreArgs::array(array.spec(&self.mesh)?).with_colocated(colocated);
            params.push((array.key.clone(), PyTree::leaf(args)));
        }
        let restore_args = PyTree::dict([
            ("params", PyTree::dict(params)),
            ("step", PyTree::leaf(RestoreArgs::default())),
        ]);
        let restored = self
            .checkpointer
            .restore(parent, name, PyTreeRestore::new().with_restore_args(restore_args))?;
        Ok(restored)
    }

    fn verify(&self, restored: &PyTree<Leaf>, arrays: &[ModelArray]) -> Result<()> {
        let seeds: BTreeMap<String, u64> = arrays
            .iter()
            .map(|array| (format!("params.{}", array.key), array.seed))
            .collect();
        let leaves = restored.flatten();
        ensure!(
            leaves.len() == arrays.len() + 1,
            "restored {} leaves, saved {}",
            leaves.len(),
            arrays.len() + 1
        );
        let mut handles = Vec::new();
        for (path, leaf) in leaves {
            let name = param_name(&path);
            match leaf {
                Leaf::Array(handle) => {
                    let seed = seeds
                        .get(&name)
                        .with_context(|| format!("restored an unexpected array {name}"))?;
                    let report = self.controller.verify(handle, Generator::new(*seed))?;
                    ensure!(report.elements > 0, "{name} restored no elements");
                    ensure!(report.mismatches == 0, "{name}: {} of {} elements differ", report.mismatches, report.elements);
                    handles.push(handle);
                }
                Leaf::Scalar(Scalar::Int(7)) => {}
                other => bail!("leaf {name} restored as {other:?}"),
            }
        }
        self.controller.drop_arrays(&handles)?;
        Ok(())
    }

    fn drop_tree(&self, tree: &PyTree<Leaf>) -> Result<()> {
        let handles: Vec<_> = tree
            .leaves()
            .into_iter()
            .filter_map(|leaf| match leaf {
                Leaf::Array(handle) => Some(handle),
                _ => None,
            })
            .collect();
        self.controller.drop_arrays(&handles)?;
        Ok(())
    }

    fn stop(self) -> Result<()> {
        let ControllerCluster { workers, .. } = self;
        workers.stop(Duration::from_secs(30))?;
        Ok(())
    }
}

fn save_tree(checkpointer: &PyTreeCheckpointer, parent: &Store, name: &str, tree: PyTree<Leaf>, mode: Mode) -> Result<()> {
    let save_args = SaveArgs::default().with_colocated(mode == Mode::Colocated);
    let args = PyTreeSave::new(tree).with_save_args(PyTree::leaf(save_args));
    checkpointer.save(parent, name, args)?;
    Ok(())
}

/// Saves `name` and records its seconds, controller bytes and bytes written per host.
fn measured_save(
    cluster: &ControllerCluster,
    parent: &Store,
    name: &str,
    tree: PyTree<Leaf>,
    mode: Mode,
    metrics: &mut Metrics,
) -> Result<()> {
    cluster.metered.take_written();
    let before = cluster.controller.array_bytes();
    let started = Instant::now();
    cluster.save(parent, name, tree, mode)?;
    metrics.save_seconds = started.elapsed().as_secs_f64();
    metrics.save_controller_array_bytes = cluster.controller.array_bytes() - before;
    metrics.host_bytes_written = cluster.metered.take_written();
    metrics.controller_bytes_written = match mode {
        Mode::Gather => metrics.save_controller_array_bytes,
        _ => 0,
    };
    Ok(())
}

fn measured_restore(
    cluster: &ControllerCluster,
    parent: &Store,
    name: &str,
    arrays: &[ModelArray],
    mode: Mode,
    metrics: &mut Metrics,
) -> Result<()> {
    let before = cluster.controller.array_bytes();
    let started = Instant::now();
    let restored = cluster.restore(parent, name, arrays, mode)?;
    metrics.restore_seconds = started.elapsed().as_secs_f64();
    metrics.restore_controller_array_bytes = cluster.controller.array_bytes() - before;
    cluster.verify(&restored, arrays)
}

fn run_controller_scenario(context: &Run<'_>, metrics: &mut Metrics) -> Result<()> {
    let args = context.args;
    let mode = args.mode;
    let arrays = model_arrays(args.size);
    metrics.total_array_bytes = total_bytes(&arrays);
    let parent = context.parent()?;
    let cluster = ControllerCluster::start(context, args.hosts, args.devices_per_host, false)?;

    match args.scenario {
        Scenario::SaveRestore => {
            let tree = cluster.put(&arrays)?;
            measured_save(&cluster, &parent, "step_1", tree, mode, metrics)?;
            measured_restore(&cluster, &parent, "step_1", &arrays, mode, metrics)?;
            check_controller_bytes(mode, metrics)?;
            cluster.stop()
        }
        Scenario::Reshard => {
            let tree = cluster.put(&arrays)?;
            measured_save(&cluster, &parent, "step_1", tree, mode, metrics)?;
            cluster.stop()?;
            let hosts = context.restore_hosts();
            metrics.restore_hosts = Some(hosts);
            let restore = ControllerCluster::start(context, hosts, args.devices_per_host, true)?;
            measured_restore(&restore, &parent, "step_1", &arrays, mode, metrics)?;
            check_controller_bytes(mode, metrics)?;
            restore.stop()
        }
        Scenario::KillWorkerDuringSave => {
            kill_worker_during_save(context, cluster, &parent, &arrays, metrics)
        }
        Scenario::KillPrimaryBeforeCommit => {
            kill_controller_before_commit(context, &cluster, &parent, &arrays, metrics)?;
            cluster.stop()
        }
        Scenario::SlowWorker => {
            slow_worker(context, &cluster, &parent, &arrays, metrics)?;
            cluster.stop()
        }
    }
}

fn check_controller_bytes(mode: Mode, metrics: &Metrics) -> Result<()> {
    match mode {
        Mode::Colocated => ensure!(
            metrics.save_controller_array_bytes == 0 && metrics.restore_controller_array_bytes == 0,
            "colocated mode moved {} array bytes through the controller in the save and {} in the restore",
            metrics.save_controller_array_bytes,
            metrics.restore_controller_array_bytes
        ),
        _ => ensure!(
            metrics.save_controller_array_bytes == metrics.total_array_bytes,
            "gather mode moved {} array bytes through the controller in the save, expected all {}",
            metrics.save_controller_array_bytes,
            metrics.total_array_bytes
        ),
    }
    Ok(())
}

/// Returns the directory a save of `name` writes before its commit: a
/// temporary name on stores that rename, the final name on object stores.
fn work_dir(parent: &Store, name: &str) -> String {
    if parent.capabilities().atomic_rename {
        format!("{name}{TMP_SUFFIX}")
    } else {
        name.to_owned()
    }
}

/// Checks that a failed save of `name` left nothing that lists or restores.
fn check_not_committed(parent: &Store, name: &str, committed: &[&str]) -> Result<()> {
    let listed = list_committed(parent)?;
    ensure!(listed == committed, "committed checkpoints are {listed:?}, expected {committed:?}");
    ensure!(
        open_committed(parent, name).is_err(),
        "the failed checkpoint {name} opens as committed"
    );
    Ok(())
}

fn kill_worker_during_save(
    context: &Run<'_>,
    mut cluster: ControllerCluster,
    parent: &Store,
    arrays: &[ModelArray],
    metrics: &mut Metrics,
) -> Result<()> {
    let mode = context.args.mode;
    let victim = context.victim();
    let tree = cluster.put(arrays)?;
    measured_save(&cluster, parent, "step_1", tree.clone(), mode, metrics)?;

    // The victim stalls in the next save, so it is surely mid-save when killed.
    cluster.grpc.inject_save_delay(victim, Duration::from_secs(3600))?;
    let (error, failed_after) = std::thread::scope(|scope| -> Result<_> {
        let checkpointer = &cluster.checkpointer;
        let saving = scope.spawn(|| save_tree(checkpointer, parent, "step_2", tree.clone(), mode));
        wait_until(Duration::from_secs(60), || {
            cluster.grpc.health(victim).is_ok_and(|health| health.saves_in_flight > 0)
        })
        .context("the victim never started its part of the save")?;
        cluster.workers.kill(victim)?;
        let killed = Instant::now();
        let outcome = saving.join().map_err(|_| anyhow::anyhow!("the saving thread panicked"))?;
        let error = match outcome {
            Ok(()) => bail!("the save succeeded although worker {victim} was killed"),
            Err(err) => format!("{err:#}"),
        };
        Ok((error, killed.elapsed()))
    })?;
    metrics.failed_after_seconds = Some(failed_after.as_secs_f64());
    metrics.save_error = Some(error.clone());
    ensure!(error.contains(&format!("host {victim}")), "the error does not name host {victim}: {error}");
    ensure!(failed_after < context.deadline(), "the save failed after {failed_after:?}, past its deadline");
    check_not_committed(parent, "step_2", &["step_1"])?;
    ensure!(
        !parent.list_dirs()?.contains(&work_dir(parent, "step_2")),
        "the failed save's directory was not removed"
    );

    // With the worker back, the earlier checkpoint restores, and saving the name again works.
    cluster.workers.restart(victim)?;
    cluster.drop_tree(&tree)?;
    measured_restore(&cluster, parent, "step_1", arrays, mode, metrics)?;
    let tree = cluster.put(arrays)?;
    cluster.save(parent, "step_2", tree, mode)?;
    cluster.restore_and_verify(parent, "step_2", arrays, mode)?;
    cluster.stop()
}

fn slow_worker(
    context: &Run<'_>,
    cluster: &ControllerCluster,
    parent: &Store,
    arrays: &[ModelArray],
    metrics: &mut Metrics,
) -> Result<()> {
    let mode = context.args.mode;
    let victim = context.victim();
    let deadline = context.deadline();
    let tree = cluster.put(arrays)?;
    cluster.grpc.inject_save_delay(victim, Duration::from_secs(3600))?;

    let started = Instant::now();
    let outcome = cluster.save(parent, "step_1", tree.clone(), mode);
    let elapsed = started.elapsed();
    let error = match outcome {
        Ok(()) => bail!("the save succeeded although worker {victim} stalled"),
        Err(err) => format!("{err:#}"),
    };
    metrics.failed_after_seconds = Some(elapsed.as_secs_f64());
    metrics.save_error = Some(error.clone());
    ensure!(error.contains(&format!("host {victim}")), "the error does not name host {victim}: {error}");
    ensure!(error.contains("deadline"), "the error does not name the deadline: {error}");
    ensure!(
        elapsed < deadline + Duration::from_secs(10),
        "the save failed after {elapsed:?}, long past its deadline of {deadline:?}"
    );
    check_not_committed(parent, "step_1", &[])?;

    // The worker cancels the stalled request instead of finishing it later.
    wait_until(Duration::from_secs(10), || {
        cluster.grpc.health(victim).is_ok_and(|health| health.saves_in_flight == 0)
    })
    .context("the stalled worker kept working after the deadline")?;
    let cancelled = cluster.grpc.health(victim)?.calls_cancelled;
    ensure!(cancelled >= 1, "the stalled worker reports {cancelled} cancelled requests");

    // Without the fault the same save succeeds.
    cluster.grpc.inject_save_delay(victim, Duration::ZERO)?;
    measured_save(cluster, parent, "step_1", tree, mode, metrics)?;
    measured_restore(cluster, parent, "step_1", arrays, mode, metrics)
}

// ---------------------------------------------------------------------------
// kill-primary-before-commit: a controller in a child process.

/// Settings of the controller child, passed as JSON in `--controller-child`.
#[derive(Debug, Serialize, Deserialize)]
struct ChildSetup {
    addresses: Vec<String>,
    devices_per_host: usize,
    size: u64,
    mode: Mode,
    parent: String,
    name: String,
}

fn kill_controller_before_commit(
    context: &Run<'_>,
    cluster: &ControllerCluster,
    parent: &Store,
    arrays: &[ModelArray],
    metrics: &mut Metrics,
) -> Result<()> {
    let args = context.args;
    let tree = cluster.put(arrays)?;
    measured_save(cluster, parent, "step_1", tree.clone(), args.mode, metrics)?;

    let setup = ChildSetup {
        addresses: cluster.workers.addresses().to_vec(),
        devices_per_host: args.devices_per_host,
        size: args.size,
        mode: args.mode,
        parent: context.parent_url.clone(),
        name: "step_2".into(),
    };
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let log_path = context.log_dir.join("controller.log");
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut command = Command::new(exe);
    command
        .args(["cluster", "--controller-child", &serde_json::to_string(&setup)?])
        .stderr(log);
    let mut child = ChildProcess::spawn("controller", &mut command)?;
    child.wait_for_line(PAUSED_LINE, Duration::from_secs(600))?;
    ensure!(
        parent.list_dirs()?.contains(&work_dir(parent, "step_2")),
        "the controller paused without an unfinished step_2"
    );
    child.kill()?;
    eprintln!("cluster: killed the controller (pid {}) before its commit", child.id());

    check_not_committed(parent, "step_2", &["step_1"])?;
    measured_restore(cluster, parent, "step_1", arrays, args.mode, metrics)?;
    cluster.save(parent, "step_2", tree, args.mode)?;
    cluster.restore_and_verify(parent, "step_2", arrays, args.mode)?;
    let listed = list_committed(parent)?;
    ensure!(listed == ["step_1", "step_2"], "committed checkpoints are {listed:?} after the retry");
    Ok(())
}

/// Runs the controller child: saves up to the commit point, reports that,
/// and waits to be killed.
fn run_controller_child(setup: &str) -> Result<()> {
    let setup: ChildSetup = serde_json::from_str(setup).context("parsing --controller-child")?;
    let hosts = setup.addresses.len();
    let topology = Topology::uniform(hosts, setup.devices_per_host)?;
    let grpc = GrpcRuntime::connect(topology.clone(), &setup.addresses, GrpcRuntimeOptions::default())?;
    let controller = Arc::new(Controller::new(Arc::new(grpc)));
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));
    let mesh = mesh(&topology, hosts, setup.devices_per_host, false)?;
    let mut params = Vec::new();
    for array in model_arrays(setup.size) {
        let handle = controller.put_generated(array.spec(&mesh)?, Generator::new(array.seed))?;
        params.push((array.key.clone(), PyTree::leaf(Leaf::Array(handle))));
    }
    let tree = PyTree::dict([("params", PyTree::dict(params))]);

    let store = open_store(&setup.parent)?;
    let paused = PauseBeforeCommit {
        inner: Arc::clone(store.backend()),
    };
    // An object store's backend is rooted at the bucket, so the directory
    // inside it carries over as the prefix.
    let mut parent = Store::new(Arc::new(paused));
    if !store.prefix().is_empty() {
        parent = parent.child(store.prefix())?;
    }
    let save_args = SaveArgs::default().with_colocated(setup.mode == Mode::Colocated);
    let args = PyTreeSave::new(tree).with_save_args(PyTree::leaf(save_args));
    checkpointer.save(&parent, &setup.name, args)?;
    bail!("the save committed although this controller should have been killed before its commit")
}

/// A backend that stops the process just before a commit. A write of
/// `commit_success.txt` prints a line and sleeps until the process is
/// killed. That write precedes the rename on local disks and is the commit
/// itself on object stores.
#[derive(Debug)]
struct PauseBeforeCommit {
    inner: Arc<dyn Backend>,
}

impl PauseBeforeCommit {
    fn pause_if_commit(&self, key: &str) {
        if !key.ends_with(COMMIT_SUCCESS_FILE) {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{PAUSED_LINE}");
        let _ = stdout.flush();
        drop(stdout);
        // NOTE: after 10 minutes the save goes on and commits, which the
        // parent reports as a failed scenario.
        std::thread::sleep(Duration::from_secs(600));
    }
}

impl Backend for PauseBeforeCommit {
    fn url(&self) -> String {
        self.inner.url()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn get(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        self.inner.get(key)
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Bytes>, StorageError> {
        self.inner.get_range(key, range)
    }

    fn put(&self, key: &str, value: Bytes) -> Result<(), StorageError> {
        self.pause_if_commit(key);
        self.inner.put(key, value)
    }

    fn put_if_absent(&self, key: &str, value: Bytes) -> Result<(), StorageError> {
        self.pause_if_commit(key);
        self.inner.put_if_absent(key, value)
    }

    fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        self.inner.size(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.inner.list(prefix)
    }

    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.inner.list_dirs(prefix)
    }

    fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        self.inner.delete_prefix(prefix)
    }

    fn rename_dir(&self, from: &str, to: &str) -> Result<(), StorageError> {
        self.inner.rename_dir(from, to)
    }

    fn local_root(&self) -> Option<&Path> {
        self.inner.local_root()
    }
}

// ---------------------------------------------------------------------------
// SPMD mode.

fn spmd_arrays(arrays: &[ModelArray], mesh: &Mesh) -> Result<Vec<SpmdArray>> {
    arrays
        .iter()
        .map(|array| {
            Ok(SpmdArray {
                name: array.key.clone(),
                shape: array.shape.clone(),
                dtype: array.dtype,
                sharding: Sharding::named(mesh.clone(), array.layout.spec())?,
                seed: array.seed,
            })
        })
        .collect()
}

/// Returns the configs of an SPMD job of `processes` processes.
fn spmd_job(
    context: &Run<'_>,
    processes: usize,
    transposed: bool,
    arrays: &[ModelArray],
    save: Option<&str>,
    restore: Option<&str>,
) -> Result<Vec<SpmdConfig>> {
    let devices = context.args.devices_per_host;
    let topology = Topology::uniform(processes, devices)?;
    let arrays = spmd_arrays(arrays, &mesh(&topology, processes, devices, transposed)?)?;
    let timeout: u64 = context.deadline().as_millis().try_into().unwrap_or(u64::MAX);
    Ok((0..processes)
        .map(|process_index| SpmdConfig {
            process_index,
            num_processes: processes,
            devices_per_process: devices,
            coordinator: "127.0.0.1:0".into(),
            directory: context.parent_url.clone(),
            arrays: arrays.clone(),
            save: save.map(str::to_owned),
            restore: restore.map(str::to_owned),
            barrier_timeout_ms: timeout,
            faults: SpmdFaults::default(),
        })
        .collect())
}

/// Runs a job to the end and returns each process's report or error.
fn run_job(context: &Run<'_>, configs: Vec<SpmdConfig>) -> Result<Vec<Result<SpmdReport, String>>> {
    let mut processes = spawn_spmd(configs, &context.launch)?;
    finish_job(context, &mut processes)
}

fn finish_job(context: &Run<'_>, processes: &mut [ChildProcess]) -> Result<Vec<Result<SpmdReport, String>>> {
    let timeout = context.deadline() * 4 + Duration::from_secs(60);
    processes
        .iter_mut()
        .map(|process| Ok(wait_spmd_report(process, timeout)?))
        .collect()
}

/// Reports of a job that must succeed, with no element differing from its generator.
fn successful(reports: Vec<Result<SpmdReport, String>>) -> Result<Vec<SpmdReport>> {
    let mut successes = Vec::with_capacity(reports.len());
    for (process, report) in reports.into_iter().enumerate() {
        let report = report.map_err(|message| anyhow::anyhow!("process {process} failed: {message}"))?;
        ensure!(report.mismatches == 0, "process {process}: {} elements differ after the restore", report.mismatches);
        successes.push(report);
    }
    Ok(successes)
}

fn record_spmd(metrics: &mut Metrics, reports: &[SpmdReport]) {
    let max = |f: fn(&SpmdReport) -> f64| reports.iter().map(f).fold(0.0, f64::max);
    if reports.iter().any(|r| r.bytes_written > 0) {
        metrics.save_seconds = max(|r| r.save_seconds);
        metrics.host_bytes_written = reports.iter().map(|r| r.bytes_written).collect();
    }
    if reports.iter().any(|r| r.elements_verified > 0) {
        metrics.restore_seconds = max(|r| r.restore_seconds);
    }
}

fn run_spmd_scenario(context: &Run<'_>, metrics: &mut Metrics) -> Result<()> {
    let args = context.args;
    let hosts = args.hosts;
    let arrays = model_arrays(args.size);
    metrics.total_array_bytes = total_bytes(&arrays);
    let parent = context.parent()?;

    match args.scenario {
        Scenario::SaveRestore => {
            let configs = spmd_job(context, hosts, false, &arrays, Some("step_1"), Some("step_1"))?;
            let reports = successful(run_job(context, configs)?)?;
            record_spmd(metrics, &reports);
            let written: u64 = reports.iter().map(|r| r.bytes_written).sum();
            ensure!(written == metrics.total_array_bytes, "the processes wrote {written} bytes of {}", metrics.total_array_bytes);
        }
        Scenario::Reshard => {
            let configs = spmd_job(context, hosts, false, &arrays, Some("step_1"), None)?;
            record_spmd(metrics, &successful(run_job(context, configs)?)?);
            let restore_hosts = context.restore_hosts();
            metrics.restore_hosts = Some(restore_hosts);
            let configs = spmd_job(context, restore_hosts, true, &arrays, None, Some("step_1"))?;
            let reports = successful(run_job(context, configs)?)?;
            metrics.restore_seconds = reports.iter().map(|r| r.restore_seconds).fold(0.0, f64::max);
        }
        Scenario::KillWorkerDuringSave => spmd_kill_process(context, &parent, &arrays, metrics)?,
        Scenario::KillPrimaryBeforeCommit => spmd_kill_primary(context, &parent, &arrays, metrics)?,
        Scenario::SlowWorker => spmd_slow_process(context, &parent, &arrays, metrics)?,
    }
    Ok(())
}

fn spmd_kill_process(context: &Run<'_>, parent: &Store, arrays: &[ModelArray], metrics: &mut Metrics) -> Result<()> {
    let hosts = context.args.hosts;
    let victim = context.victim();
    ensure!(hosts >= 2, "kill-worker-during-save in spmd mode needs at least 2 hosts: the survivors report the failure");
    let configs = spmd_job(context, hosts, false, arrays, Some("step_1"), None)?;
    record_spmd(metrics, &successful(run_job(context, configs)?)?);

    let mut configs = spmd_job(context, hosts, false, arrays, Some("step_2"), None)?;
    configs[victim].faults.save_delay_ms = 3_600_000;
    let mut processes = spawn_spmd(configs, &context.launch)?;
    processes[victim].wait_for_line(WRITING_LINE, context.deadline())?;
    processes[victim].kill()?;
    let killed = Instant::now();
    let survivors = finish_job(context, &mut processes[..victim])?;
    metrics.failed_after_seconds = Some(killed.elapsed().as_secs_f64());
    for (process, report) in survivors.into_iter().enumerate() {
        let Err(message) = report else {
            bail!("process {process} finished its save although process {victim} was killed");
        };
        ensure!(message.contains(&format!("process {victim}")), "process {process}'s error does not name process {victim}: {message}");
        metrics.save_error.get_or_insert(message);
    }
    check_not_committed(parent, "step_2", &["step_1"])?;

    let configs = spmd_job(context, hosts, false, arrays, None, Some("step_1"))?;
    let reports = successful(run_job(context, configs)?)?;
    metrics.restore_seconds = reports.iter().map(|r| r.restore_seconds).fold(0.0, f64::max);
    let configs = spmd_job(context, hosts, false, arrays, Some("step_2"), Some("step_2"))?;
    successful(run_job(context, configs)?)?;
    Ok(())
}

fn spmd_kill_primary(context: &Run<'_>, parent: &Store, arrays: &[ModelArray], metrics: &mut Metrics) -> Result<()> {
    let hosts = context.args.hosts;
    let configs = spmd_job(context, hosts, false, arrays, Some("step_1"), None)?;
    record_spmd(metrics, &successful(run_job(context, configs)?)?);

    let mut configs = spmd_job(context, hosts, false, arrays, Some("step_2"), None)?;
    configs[0].faults.pause_before_commit = true;
    let mut processes = spawn_spmd(configs, &context.launch)?;
    processes[0].wait_for_line(PAUSED_LINE, context.deadline())?;
    processes[0].kill()?;
    let killed = Instant::now();
    let others = finish_job(context, &mut processes[1..])?;
    metrics.failed_after_seconds = Some(killed.elapsed().as_secs_f64());
    for (offset, report) in others.into_iter().enumerate() {
        let Err(message) = report else {
            bail!("process {} finished although the primary was killed before its commit", offset + 1);
        };
        metrics.save_error.get_or_insert(message);
    }
    check_not_committed(parent, "step_2", &["step_1"])?;

    let configs = spmd_job(context, hosts, false, arrays, None, Some("step_1"))?;
    let reports = successful(run_job(context, configs)?)?;
    metrics.restore_seconds = reports.iter().map(|r| r.restore_seconds).fold(0.0, f64::max);
    let configs = spmd_job(context, hosts, false, arrays, Some("step_2"), Some("step_2"))?;
    successful(run_job(context, configs)?)?;
    Ok(())
}

fn spmd_slow_process(context: &Run<'_>, parent: &Store, arrays: &[ModelArray], metrics: &mut Metrics) -> Result<()> {
    let hosts = context.args.hosts;
    let victim = context.victim();
    ensure!(hosts >= 2, "slow-worker in spmd mode needs at least 2 hosts: the others wait for the slow one");
    let deadline = context.deadline();
    let mut configs = spmd_job(context, hosts, false, arrays, Some("step_1"), None)?;
    let delay = deadline * 3;
    configs[victim].faults.save_delay_ms = delay.as_millis().try_into().unwrap_or(u64::MAX);
    let started = Instant::now();
    let mut processes = spawn_spmd(configs, &context.launch)?;
    let others = finish_job(context, &mut processes[..victim])?;
    metrics.failed_after_seconds = Some(started.elapsed().as_secs_f64());
    for (process, report) in others.into_iter().enumerate() {
        let Err(message) = report else {
            bail!("process {process} finished its save although process {victim} was too slow");
        };
        ensure!(message.contains("timed out"), "process {process} did not time out: {message}");
        metrics.save_error.get_or_insert(message);
    }
    check_not_committed(parent, "step_1", &[])?;
    Ok(())
}

// ---------------------------------------------------------------------------

/// Polls `condition` every 10 ms until it is true or `timeout` passes.
fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !condition() {
        ensure!(Instant::now() < deadline, "still false after {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_reaches_size() {
        for size in [4 << 10, 1 << 20, 64 << 20] {
            let arrays = model_arrays(size);
            let total = total_bytes(&arrays);
            assert!(total >= size, "{total} < {size}");
            assert!(total < size + (16 << 20) + (1 << 20), "{total} for {size}");
        }
    }

    #[test]
    fn model_shapes_are_uneven() {
        for array in model_arrays(1 << 20) {
            assert_eq!(array.shape[0] % 2, 1, "{}", array.key);
            assert_eq!(array.shape[1], 251, "{}", array.key);
        }
    }
}
