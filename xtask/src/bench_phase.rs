//! One measured phase of `cargo xtask bench`, run in its own release-built
//! child process so that its peak resident memory (`VmHWM`) covers that
//! phase alone.
//!
//! Every phase prints one JSON line, a [`PhaseResult`] or a
//! [`MachineResult`], as the last line of its stdout.

use std::{
    fs::{self, File},
    io::{Read, Write},
    path::Path,
    sync::Arc,
    time::Instant,
};

use anyhow::{bail, Context, Result};
use ckpt::{
    colocated::{ArraySpec, Controller, InProcessRuntime},
    device::{Mesh, PartitionSpec, Sharding, Topology},
    pytree::PyTree,
    storage::{open_store, ArrayFormat, Compression, Store},
    DType, Leaf, PyTreeCheckpointer, PyTreeRestore, PyTreeSave, RestoreArgs, SaveArgs,
};
use serde::{Deserialize, Serialize};

const HOSTS: usize = 4;
const DEVICES_PER_HOST: usize = 2;
const HIDDEN: u64 = 1024;
const VOCAB: u64 = 8192;

/// Size of each `write` call of the page-cache write reference: 64 MiB.
const IO_BLOCK: usize = 64 << 20;

/// Timings and memory of one phase.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PhaseResult {
    /// Array bytes saved or restored per run.
    pub(crate) bytes: u64,
    /// Bytes the restored shards hold on their devices per run: the array
    /// bytes times their replication. Zero for saves and for Orbax phases.
    #[serde(default)]
    pub(crate) device_bytes: u64,
    /// Duration of each timed run, after one warm-up run.
    pub(crate) seconds: Vec<f64>,
    /// Resident bytes just before the first run: the live tree for a save,
    /// the empty runtime for a restore.
    pub(crate) rss_before: u64,
    /// Peak resident bytes (`VmHWM`) over every run of the phase.
    pub(crate) peak_rss: u64,
}

/// Timings of the machine references on the same byte count.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MachineResult {
    /// Bytes written, read and copied per run.
    pub(crate) bytes: u64,
    /// Writes of the bytes into a new file in the page cache, no fsync.
    pub(crate) write: Vec<f64>,
    /// Reads of that file into a newly allocated buffer each run.
    pub(crate) read_fresh: Vec<f64>,
    /// Reads of that file into one buffer allocated and touched before.
    pub(crate) read_reused: Vec<f64>,
    /// Copies between two buffers touched before.
    pub(crate) memcpy: Vec<f64>,
}

/// Names of the phases that [`run_phase`] accepts.
pub(crate) const PHASES: [&str; 8] = [
    "read-orbax-default",
    "read-orbax-raw",
    "save-default",
    "save-raw",
    "restore-default",
    "restore-raw",
    "restore-8x1",
    "machine",
];

/// Runs one phase in `dir` on a tree of about `size` bytes with one warm-up
/// run and `runs` timed runs, and prints its JSON result.
pub(crate) fn run_phase(phase: &str, dir: &Path, size: u64, runs: usize) -> Result<()> {
    let line = match phase {
        "read-orbax-default" => json(restore_phase(dir, "orbax-default", size, runs, MeshShape::Same)?)?,
        "read-orbax-raw" => json(restore_phase(dir, "orbax-raw", size, runs, MeshShape::Same)?)?,
        "save-default" => json(save_phase(dir, "ckpt-default", Compression::Zstd { level: 1 }, size, runs)?)?,
        "save-raw" => json(save_phase(dir, "ckpt-raw", Compression::None, size, runs)?)?,
        "restore-default" => json(restore_phase(dir, "ckpt-default", size, runs, MeshShape::Same)?)?,
        "restore-raw" => json(restore_phase(dir, "ckpt-raw", size, runs, MeshShape::Same)?)?,
        "restore-8x1" => json(restore_phase(dir, "ckpt-default", size, runs, MeshShape::Column)?)?,
        "machine" => json(machine_phase(dir, size, runs)?)?,
        other => bail!("unknown bench phase {other:?}: expected one of {}", PHASES.join(", ")),
    };
    println!("{line}");
    Ok(())
}

fn json(value: impl Serialize) -> Result<String> {
    Ok(serde_json::to_string(&value)?)
}

/// The mesh a restore lands on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MeshShape {
    /// 4x2, the mesh the tree was saved from.
    Same,
    /// 8x1: every row-sharded array is split over 8 devices instead of 4.
    Column,
}

/// Creates a 4-host x 2-device in-process cluster and returns its controller.
fn cluster() -> Result<(Arc<Controller>, Topology)> {
    let topology = Topology::uniform(HOSTS, DEVICES_PER_HOST)?;
    let runtime = InProcessRuntime::new(topology.clone())?;
    Ok((Arc::new(Controller::new(Arc::new(runtime))), topology))
}

fn mesh(topology: &Topology, shape: MeshShape) -> Result<Mesh> {
    let dims = match shape {
        MeshShape::Same => vec![HOSTS, DEVICES_PER_HOST],
        MeshShape::Column => vec![HOSTS * DEVICES_PER_HOST, 1],
    };
    Ok(Mesh::new(dims, vec!["x", "y"], topology.device_ids())?)
}

/// Builds colocated restore arguments for the tree that
/// `python/bench_orbax.py` saves, on `mesh`, and returns them with the
/// tree's array bytes. The layout must match that script's `leaf_specs`.
/// Returns the restore arguments of the model-like tree of about `size`
/// bytes on `mesh`, its array bytes, and the bytes its shards hold on the
/// devices (replicated shards count once per device).
fn restore_args(size: u64, mesh: &Mesh) -> (PyTree<RestoreArgs>, u64, u64) {
    let embedding_bytes = VOCAB * HIDDEN * 4;
    let layer_bytes = HIDDEN * HIDDEN * (3 * 4 + 2 + 4 * 4 + 4 * 2) + 2 * HIDDEN * 4;
    let layers = (size.saturating_sub(embedding_bytes) / layer_bytes).max(1);

    let row = PartitionSpec::new([Some("x"), None]);
    let column = PartitionSpec::new([None, Some("y")]);
    let both = PartitionSpec::new([Some("x"), Some("y")]);
    let replicated = PartitionSpec::new(Vec::<Option<&str>>::new());

    let mut total = 0u64;
    let mut on_devices = 0u64;
    let mut array = |shape: Vec<u64>, dtype: DType, spec: &PartitionSpec| {
        total += shape.iter().product::<u64>() * dtype.item_size() as u64;
        let sharding = Sharding::Named {
            mesh: mesh.clone(),
            spec: spec.clone(),
        };
        let slices = sharding
            .devices_indices_map(&shape)
            .expect("the bench mesh shards every bench array");
        on_devices += slices
            .iter()
            .map(|slice| slice.index.shape().iter().product::<u64>() * dtype.item_size() as u64)
            .sum::<u64>();
        let spec = ArraySpec {
            shape,
            dtype,
            sharding,
        };
        PyTree::leaf(RestoreArgs::array(spec).with_colocated(true))
    };

    let h = HIDDEN;
    let mut layer_trees = Vec::new();
    for _ in 0..layers {
        layer_trees.push(PyTree::dict([
            (
                "attention",
                PyTree::dict([
                    ("qkv", array(vec![h, 3 * h], DType::Float32, &both)),
                    ("out", array(vec![h, h], DType::BFloat16, &row)),
                ]),
            ),
            (
                "mlp",
                PyTree::dict([
                    ("up", array(vec![h, 4 * h], DType::Float32, &column)),
                    ("down", array(vec![4 * h, h], DType::BFloat16, &row)),
                ]),
            ),
            ("norm1", array(vec![h], DType::Float32, &replicated)),
            ("norm2", array(vec![h], DType::Float32, &replicated)),
        ]));
    }
    let embedding = array(vec![VOCAB, h], DType::Float32, &row);
    let tree = PyTree::dict([
        (
            "params",
            PyTree::dict([("embedding", embedding), ("layers", PyTree::list(layer_trees))]),
        ),
        ("step", PyTree::leaf(RestoreArgs::default())),
        ("learning_rate", PyTree::leaf(RestoreArgs::default())),
    ]);
    (tree, total, on_devices)
}

fn restore(
    checkpointer: &PyTreeCheckpointer,
    parent: &Store,
    name: &str,
    args: &PyTree<RestoreArgs>,
) -> Result<PyTree<Leaf>> {
    let request = PyTreeRestore::new().with_restore_args(args.clone());
    checkpointer
        .restore(parent, name, request)
        .with_context(|| format!("restoring {name}"))
}

/// Restores checkpoint `name` onto `shape` once to warm up and `runs` times
/// timed, dropping each restored tree before the next run.
fn restore_phase(dir: &Path, name: &str, size: u64, runs: usize, shape: MeshShape) -> Result<PhaseResult> {
    let (controller, topology) = cluster()?;
    let mesh = mesh(&topology, shape)?;
    let (args, bytes, device_bytes) = restore_args(size, &mesh);
    let parent = open_store(&dir.display().to_string())?;
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));

    let rss_before = proc_status_bytes("VmRSS")?;
    reset_peak_rss();
    let mut seconds = Vec::with_capacity(runs);
    for run in 0..=runs {
        let started = Instant::now();
        let tree = restore(&checkpointer, &parent, name, &args)?;
        let elapsed = started.elapsed().as_secs_f64();
        crate::demo::drop_arrays(&controller, &tree)?;
        if run > 0 {
            seconds.push(elapsed);
        }
    }
    Ok(PhaseResult {
        bytes,
        device_bytes,
        seconds,
        rss_before,
        peak_rss: proc_status_bytes("VmHWM")?,
    })
}

/// Restores the Orbax-written default checkpoint (untimed) so the saved
/// values are exactly Orbax's, then saves them colocated as `name` once to
/// warm up and `runs` times timed.
fn save_phase(dir: &Path, name: &str, compression: Compression, size: u64, runs: usize) -> Result<PhaseResult> {
    let (controller, topology) = cluster()?;
    let mesh = mesh(&topology, MeshShape::Same)?;
    let (args, bytes, _) = restore_args(size, &mesh);
    let parent = open_store(&dir.display().to_string())?;
    let tree = restore(&PyTreeCheckpointer::new(Arc::clone(&controller)), &parent, "orbax-default", &args)?;

    let format = ArrayFormat::default().with_compression(compression);
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller)).with_format(format);
    let target = parent.child(name)?;

    let rss_before = proc_status_bytes("VmRSS")?;
    reset_peak_rss();
    let mut seconds = Vec::with_capacity(runs);
    for run in 0..=runs {
        target.delete_all()?;
        let request = PyTreeSave::new(tree.clone()).with_save_args(PyTree::leaf(SaveArgs::colocated()));
        let started = Instant::now();
        checkpointer
            .save(&parent, name, request)
            .with_context(|| format!("saving {name}"))?;
        let elapsed = started.elapsed().as_secs_f64();
        if run > 0 {
            seconds.push(elapsed);
        }
    }
    Ok(PhaseResult {
        bytes,
        device_bytes: 0,
        seconds,
        rss_before,
        peak_rss: proc_status_bytes("VmHWM")?,
    })
}

/// Measures the machine's own limits on `size` bytes of non-zero data: a
/// Rust write loop into the page cache (no fsync), reads into fresh and
/// into reused buffers, and a memory copy.
fn machine_phase(dir: &Path, size: u64, runs: usize) -> Result<MachineResult> {
    let len = usize::try_from(size)?;
    let path = dir.join("machine-reference.bin");
    let block: Vec<u8> = (0..IO_BLOCK).map(|i| (i % 251) as u8 + 1).collect();

    let mut write = Vec::new();
    for run in 0..=runs {
        let _ = fs::remove_file(&path);
        let started = Instant::now();
        write_file(&path, &block, len)?;
        push_timed(&mut write, run, started);
    }

    let mut read_fresh = Vec::new();
    for run in 0..=runs {
        let started = Instant::now();
        let data = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        push_timed(&mut read_fresh, run, started);
        drop(data);
    }

    let mut reused = vec![1u8; len];
    let mut read_reused = Vec::new();
    for run in 0..=runs {
        let started = Instant::now();
        File::open(&path)?.read_exact(&mut reused)?;
        push_timed(&mut read_reused, run, started);
    }

    let mut copy = vec![2u8; len];
    let mut memcpy = Vec::new();
    for run in 0..=runs {
        let started = Instant::now();
        copy.copy_from_slice(&reused);
        std::hint::black_box(&copy);
        push_timed(&mut memcpy, run, started);
    }
    fs::remove_file(&path)?;
    Ok(MachineResult {
        bytes: size,
        write,
        read_fresh,
        read_reused,
        memcpy,
    })
}

/// Records the time since `started` unless `run` is the warm-up run 0.
fn push_timed(seconds: &mut Vec<f64>, run: usize, started: Instant) {
    let elapsed = started.elapsed().as_secs_f64();
    if run > 0 {
        seconds.push(elapsed);
    }
}

fn write_file(path: &Path, block: &[u8], len: usize) -> Result<()> {
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len());
        file.write_all(&block[..n])?;
        left -= n;
    }
    Ok(())
}

/// Reads a `kB` field of `/proc/self/status`, such as `VmRSS` or `VmHWM`,
/// in bytes.
pub(crate) fn proc_status_bytes(field: &str) -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status (Linux only)")?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix(field).and_then(|rest| rest.strip_prefix(':')) {
            let kilobytes: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("invalid {field} line {line:?} in /proc/self/status"))?;
            return Ok(kilobytes * 1024);
        }
    }
    bail!("missing {field} in /proc/self/status")
}

/// Resets `VmHWM` to the current resident size. Where the kernel rejects
/// the write the peak also covers what the process did before the phase.
fn reset_peak_rss() {
    // NOTE: ignored on failure; the peak then includes loading the tree.
    let _ = fs::write("/proc/self/clear_refs", "5");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_status_has_peak() {
        let peak = proc_status_bytes("VmHWM").expect("VmHWM on Linux");
        assert!(peak > 0);
    }

    #[test]
    fn proc_status_rejects_missing_field() {
        assert!(proc_status_bytes("NoSuchField").is_err());
    }

    #[test]
    fn restore_args_bytes_for_1_gib() {
        let (_, topology) = cluster().expect("cluster");
        let mesh = mesh(&topology, MeshShape::Same).expect("mesh");
        let (_, bytes, _) = restore_args(1 << 30, &mesh);
        // 32 MiB of embedding and 26 layers of 38 MiB + 8 KiB.
        let layer = 38 * (1 << 20) + 8 * 1024;
        assert_eq!(bytes, 32 * (1 << 20) + 26 * layer);
    }

    #[test]
    fn unknown_phase_rejected() {
        let message = format!("{:#}", run_phase("nope", Path::new("."), 1, 1).expect_err("unknown"));
        assert!(message.contains("unknown bench phase"), "{message}");
    }
}
