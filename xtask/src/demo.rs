//! `cargo xtask demo`: the main job end to end on a simulated 4-host cluster.
//!
//! Builds a model-like tree of sharded arrays whose values each host
//! generates for its own devices, saves it colocated and through the
//! controller (the gather path), restores both, checks every leaf bit for
//! bit, and prints bytes, seconds, GB/s and the array bytes that passed
//! through the controller for each phase.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use anyhow::{bail, ensure, Context, Result};
use ckpt::{
    colocated::{ArraySpec, Controller, Generator, InProcessRuntime},
    device::{Mesh, PartitionSpec, Sharding, Topology},
    pytree::PyTree,
    storage::{open_store, Store},
    DType, HostArray, Leaf, PyTreeCheckpointer, PyTreeRestore, PyTreeSave, RestoreArgs,
    SaveArgs, Scalar,
};

/// Options of the demo.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Directory for the checkpoints (default: target/demo).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Approximate bytes of array data in the tree; accepts suffixes K, M, G (powers of 1024).
    #[arg(long, default_value = "512M", value_parser = parse_size)]
    size: u64,
}

impl DemoArgs {
    /// A 64 MiB demo in `dir`, for the test suite.
    pub(crate) fn small(dir: PathBuf) -> DemoArgs {
        DemoArgs {
            dir: Some(dir),
            size: 64 << 20,
        }
    }
}

const HOSTS: usize = 4;
const DEVICES_PER_HOST: usize = 2;

pub(crate) fn run(root: &Path, args: &DemoArgs) -> Result<()> {
    let dir = args.dir.clone().unwrap_or_else(|| root.join("target/demo"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let parent = open_store(&dir.display().to_string())?;

    let topology = Topology::uniform(HOSTS, DEVICES_PER_HOST)?;
    let runtime = InProcessRuntime::new(topology.clone())?;
    let controller = Arc::new(Controller::new(Arc::new(runtime)));
    let mesh = Mesh::new(
        vec![HOSTS, DEVICES_PER_HOST],
        vec!["x", "y"],
        topology.device_ids(),
    )?;

    println!(
        "demo: {HOSTS} hosts x {DEVICES_PER_HOST} devices, mesh x={HOSTS} y={DEVICES_PER_HOST}, checkpoints in {}",
        dir.display()
    );
    let started = Instant::now();
    let model = build_model(&controller, &mesh, args.size)?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "demo: created {} leaves, {} of array data on the hosts in {seconds:.2} s",
        model.seeds.len() + 4,
        human_bytes(model.array_bytes)
    );

    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller));
    for path in [SavePath::Colocated, SavePath::Gather] {
        run_path(&checkpointer, &controller, &parent, &model, path)?;
    }
    println!(
        "demo: verified {} leaves ({} of arrays) bit for bit after colocated and gather round trips",
        model.seeds.len() + 4,
        human_bytes(model.array_bytes)
    );
    Ok(())
}

/// The two ways a single controller saves and restores sharded arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SavePath {
    Colocated,
    Gather,
}

impl SavePath {
    fn name(self) -> &'static str {
        match self {
            SavePath::Colocated => "colocated",
            SavePath::Gather => "gather",
        }
    }
}

fn run_path(
    checkpointer: &PyTreeCheckpointer,
    controller: &Controller,
    parent: &Store,
    model: &Model,
    path: SavePath,
) -> Result<()> {
    let name = path.name();
    parent.child(name)?.delete_all()?;
    let colocated = path == SavePath::Colocated;

    let before = controller.array_bytes();
    let started = Instant::now();
    let save_args = SaveArgs::default().with_colocated(colocated);
    let args = PyTreeSave::new(model.tree.clone()).with_save_args(PyTree::leaf(save_args));
    checkpointer.save(parent, name, args)?;
    report(name, "save", model.array_bytes, started, controller.array_bytes() - before);

    let before = controller.array_bytes();
    let started = Instant::now();
    let restore_args = RestoreArgs::default().with_colocated(colocated);
    let restored = checkpointer.restore(
        parent,
        name,
        PyTreeRestore::new().with_restore_args(PyTree::leaf(restore_args)),
    )?;
    report(name, "restore", model.array_bytes, started, controller.array_bytes() - before);

    verify(controller, model, &restored)
        .with_context(|| format!("verifying the {name} round trip"))?;
    drop_arrays(controller, &restored)
}

/// Frees the device memory of every sharded array in `tree`.
pub(crate) fn drop_arrays(controller: &Controller, tree: &PyTree<Leaf>) -> Result<()> {
    let arrays: Vec<_> = tree
        .leaves()
        .into_iter()
        .filter_map(|leaf| match leaf {
            Leaf::Array(array) => Some(array),
            _ => None,
        })
        .collect();
    controller.drop_arrays(&arrays)?;
    Ok(())
}

fn report(path: &str, phase: &str, bytes: u64, started: Instant, controller_bytes: u64) {
    let seconds = started.elapsed().as_secs_f64();
    let rate = bytes as f64 / seconds / 1e9;
    println!(
        "demo: {path:<9} {phase:<7} {:>10} in {seconds:6.2} s = {rate:5.2} GB/s, array bytes through the controller: {controller_bytes}",
        human_bytes(bytes)
    );
}

/// The tree, and what each leaf must equal after a restore.
struct Model {
    tree: PyTree<Leaf>,
    /// Generator seed of each sharded array, by parameter name.
    seeds: BTreeMap<String, u64>,
    array_bytes: u64,
}

/// Builds a transformer-like tree: an embedding, layers of attention and
/// MLP weights sharded by rows, columns and both mesh axes, replicated
/// norms, a host array, an int step, a float learning rate and a string.
fn build_model(controller: &Controller, mesh: &Mesh, size: u64) -> Result<Model> {
    let hidden: u64 = 1024;
    let vocab: u64 = 8192;
    let embedding_bytes = vocab * hidden * 4;
    // Per layer: qkv f32 [h, 3h], out bf16 [h, h], up f32 [h, 4h], down bf16 [4h, h],
    // two norms f32 [h].
    let layer_bytes = hidden * hidden * (3 * 4 + 2 + 4 * 4 + 4 * 2) + 2 * hidden * 4;
    let layers = (size.saturating_sub(embedding_bytes) / layer_bytes).max(1);

    let row = PartitionSpec::new([Some("x"), None]);
    let column = PartitionSpec::new([None, Some("y")]);
    let both = PartitionSpec::new([Some("x"), Some("y")]);
    let replicated = PartitionSpec::new([None::<&str>]);

    let mut seeds = BTreeMap::new();
    let mut array_bytes = 0u64;
    let mut put = |name: String, shape: Vec<u64>, dtype: DType, spec: &PartitionSpec| -> Result<PyTree<Leaf>> {
        let seed = seeds.len() as u64 + 1;
        let sharding = Sharding::Named {
            mesh: mesh.clone(),
            spec: spec.clone(),
        };
        array_bytes += shape.iter().product::<u64>() * dtype.item_size() as u64;
        let array = controller.put_generated(
            ArraySpec {
                shape,
                dtype,
                sharding,
            },
            Generator::new(seed),
        )?;
        seeds.insert(name, seed);
        Ok(PyTree::leaf(Leaf::Array(array)))
    };

    let mut layer_trees = Vec::new();
    for layer in 0..layers {
        let prefix = format!("params.layers.{layer}");
        let tree = PyTree::dict([
            (
                "attention",
                PyTree::dict([
                    ("qkv", put(format!("{prefix}.attention.qkv"), vec![hidden, 3 * hidden], DType::Float32, &both)?),
                    ("out", put(format!("{prefix}.attention.out"), vec![hidden, hidden], DType::BFloat16, &row)?),
                ]),
            ),
            (
                "mlp",
                PyTree::dict([
                    ("up", put(format!("{prefix}.mlp.up"), vec![hidden, 4 * hidden], DType::Float32, &column)?),
                    ("down", put(format!("{prefix}.mlp.down"), vec![4 * hidden, hidden], DType::BFloat16, &row)?),
                ]),
            ),
            ("norm1", put(format!("{prefix}.norm1"), vec![hidden], DType::Float32, &replicated)?),
            ("norm2", put(format!("{prefix}.norm2"), vec![hidden], DType::Float32, &replicated)?),
        ]);
        layer_trees.push(tree);
    }
    let embedding = put("params.embedding".into(), vec![vocab, hidden], DType::Float32, &row)?;

    let token_counts: Vec<i64> = (1..=256).collect();
    let tree = PyTree::dict([
        (
            "params",
            PyTree::dict([("embedding", embedding), ("layers", PyTree::list(layer_trees))]),
        ),
        ("token_counts", PyTree::leaf(Leaf::HostArray(HostArray::from_vec(vec![256], token_counts)?))),
        ("step", PyTree::leaf(Leaf::Scalar(Scalar::Int(1000)))),
        ("learning_rate", PyTree::leaf(Leaf::Scalar(Scalar::Float(3e-4)))),
        ("run_name", PyTree::leaf(Leaf::String("ckpt demo ✓".into()))),
    ]);
    Ok(Model {
        tree,
        seeds,
        array_bytes,
    })
}

/// Checks every restored leaf: sharded arrays on their hosts against their
/// generators, everything else against the saved tree.
fn verify(controller: &Controller, model: &Model, restored: &PyTree<Leaf>) -> Result<()> {
    let saved = model.tree.flatten();
    let restored = restored.flatten();
    ensure!(
        saved.len() == restored.len(),
        "restored {} leaves, saved {}",
        restored.len(),
        saved.len()
    );
    for ((path, saved), (restored_path, restored)) in saved.iter().zip(&restored) {
        ensure!(path == restored_path, "leaf {restored_path} restored where {path} was saved");
        let name = ckpt::pytree::param_name(path);
        match (saved, restored) {
            (Leaf::Array(saved), Leaf::Array(restored)) => {
                ensure!(saved.spec() == restored.spec(), "{name}: restored with another shape, dtype or sharding");
                let seed = model.seeds[&name];
                let report = controller.verify(restored, Generator::new(seed))?;
                ensure!(report.mismatches == 0, "{name}: {} of {} elements differ", report.mismatches, report.elements);
                ensure!(report.elements > 0, "{name}: no elements were compared");
            }
            (saved, restored) if saved == restored => {}
            (saved, restored) => bail!("{name}: saved {saved:?}, restored {restored:?}"),
        }
    }
    Ok(())
}

fn human_bytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

/// Parses a byte count with an optional K, M or G suffix (powers of 1024).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {text:?}: expected a number with an optional K, M or G suffix"))?;
    let scale: u64 = match unit.to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => return Err(format!("invalid size suffix in {text:?}: use K, M or G")),
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_suffixes() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("3k"), Ok(3 << 10));
        assert_eq!(parse_size("10"), Ok(10));
        assert!(parse_size("1T").is_err());
        assert!(parse_size("M").is_err());
    }
}
