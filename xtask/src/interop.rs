//! `cargo xtask interop`: checks ckpt against real Python Orbax, both ways.
//!
//! Orbax writes, ckpt reads: every checkpoint under `testdata/orbax` and
//! `testdata/orbax-generated`, plus a fresh set written now by
//! `python/make_fixtures.py`, must read back with the values recorded in
//! its `expected_values.json`. ckpt writes, Orbax reads: ckpt saves a tree
//! of every leaf kind, sharded over a 4-host simulated cluster, in each
//! format option and by both the colocated and the gather path. Orbax must
//! restore each with the same values, without a target and onto another
//! mesh.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{bail, Context, Result};
use ckpt::{
    colocated::{ArraySpec, Controller, Generator, InProcessRuntime},
    device::{Mesh, PartitionSpec, Sharding, Topology},
    pytree::PyTree,
    storage::{
        open_committed, open_store, ArrayFormat, Compression, OcdbtReader, OcdbtWriter,
        OcdbtWriterOptions, Store,
    },
    DType, HostArray, Leaf, PyTreeCheckpointer, PyTreeSave, SaveArgs, Scalar,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{
    orbax,
    records::{ckpt_records, compare, json_records, Record},
    venv,
};

/// Tallies checks and prints each outcome as it happens.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: Vec<String>,
}

impl Tally {
    fn record(&mut self, name: &str, outcome: Result<usize>) {
        match outcome {
            Ok(leaves) => {
                self.passed += 1;
                println!("interop: ok   {name} ({leaves} leaves)");
            }
            Err(err) => {
                println!("interop: FAIL {name}: {err:#}");
                self.failed.push(name.to_owned());
            }
        }
    }
}

pub(crate) fn run(root: &Path) -> Result<()> {
    let python = venv::ensure_venv(root)?;
    let work = root.join("target/interop");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    fs::create_dir_all(&work)?;
    let mut tally = Tally::default();

    for dir in ["testdata/orbax", "testdata/orbax-generated"] {
        for fixture in fixture_dirs(&root.join(dir))? {
            let name = format!("orbax->ckpt {dir}/{}", file_name(&fixture));
            tally.record(&name, check_fixture(&fixture));
        }
    }
    let fresh = work.join("orbax-written");
    orbax::make_fixtures(&python, &fresh).context("writing fresh checkpoints with Orbax")?;
    write_legacy_fixture(&python, root, &fresh.join("n_legacy_msgpack"))?;
    for fixture in fixture_dirs(&fresh)? {
        let name = format!("orbax->ckpt fresh {}", file_name(&fixture));
        tally.record(&name, check_fixture(&fixture));
    }

    let shipped = fixture_dirs(&root.join("testdata/orbax"))?;
    for fixture in shipped.into_iter().chain(fixture_dirs(&fresh)?) {
        if crate::restore_interop::applies(&fixture)? {
            let name = format!("orbax 8 devices->ckpt 3 devices {}", file_name(&fixture));
            tally.record(&name, crate::restore_interop::check_onto_three_devices(&fixture));
        }
    }

    tally.record("ckpt->tensorstore raw multi-level OCDBT", check_raw_written_by_ckpt(&python, &work));
    for config in write_configs() {
        let name = format!("ckpt->orbax {}", config.name);
        tally.record(&name, check_written_by_ckpt(&python, &work, &config));
    }

    let manager_work = work.join("manager");
    tally.record(
        "ckpt->orbax CheckpointManager directory",
        crate::manager_interop::check_manager_interop(&python, &manager_work),
    );

    println!("interop: {} passed, {} failed", tally.passed, tally.failed.len());
    if !tally.failed.is_empty() {
        bail!("interop checks failed: {}", tally.failed.join(", "));
    }
    Ok(())
}

/// Rewrites `testdata/orbax-generated` with real Orbax: the fixtures of
/// `python/make_fixtures.py` and the legacy msgpack file.
pub(crate) fn regenerate_fixtures(root: &Path) -> Result<()> {
    let python = venv::ensure_venv(root)?;
    let out = root.join("testdata/orbax-generated");
    orbax::make_fixtures(&python, &out)?;
    write_legacy_fixture(&python, root, &out.join("n_legacy_msgpack"))?;
    for fixture in fixture_dirs(&out)? {
        let leaves = check_fixture(&fixture)?;
        println!("orbax-fixtures: {} ({leaves} leaves) reads back in ckpt", fixture.display());
    }
    Ok(())
}

fn write_legacy_fixture(python: &Path, root: &Path, out: &Path) -> Result<()> {
    let status = venv::python_command(python)
        .arg(root.join("python/make_legacy_fixture.py"))
        .arg(out)
        .status()
        .context("running make_legacy_fixture.py")?;
    if !status.success() {
        bail!("make_legacy_fixture.py failed ({status})");
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Directories holding an `expected_values.json`, sorted.
fn fixture_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.join("expected_values.json").exists() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Reads a fixture written by Orbax with ckpt and compares every leaf with
/// its `expected_values.json`.
pub(crate) fn check_fixture(fixture: &Path) -> Result<usize> {
    let text = fs::read_to_string(fixture.join("expected_values.json"))?;
    let expected: Value = serde_json::from_str(&text)?;
    let parent = open_store(&fixture.display().to_string())?;

    if expected.get("keys").is_some() {
        return check_raw_ocdbt(&parent.child("ckpt")?, &expected);
    }
    let leaves = expected["leaves"].as_array().context("no leaves")?;
    let mut steps: Vec<(u64, String)> = leaves
        .iter()
        .filter_map(|leaf| Some((leaf.get("step")?.as_u64()?, leaf.get("item")?.as_str()?.to_owned())))
        .collect();
    steps.sort();
    steps.dedup();
    if steps.is_empty() {
        let item = open_committed(&parent, "ckpt")?;
        let ours = ckpt_records(&item)?;
        return compare(&ours, &json_records(&expected, None)?, "ckpt's reading");
    }
    let mut total = 0;
    let manager_root = parent.child("ckpt")?;
    for (step, item_name) in steps {
        let step_dir = open_committed(&manager_root, &step.to_string())?;
        let item = step_dir.child(&item_name)?;
        let ours = ckpt_records(&item)?;
        let what = format!("ckpt's reading of step {step} item {item_name}");
        total += compare(&ours, &json_records(&expected, Some((step, &item_name)))?, &what)?;
    }
    Ok(total)
}

/// Compares every key of a raw OCDBT database with its expected size and hash.
fn check_raw_ocdbt(database: &Store, expected: &Value) -> Result<usize> {
    let reader = OcdbtReader::open(database.clone())?;
    let keys = expected["keys"].as_array().context("no keys")?;
    let listed = reader.list("")?;
    if listed.len() != keys.len() {
        bail!("the database lists {} keys, expected {}", listed.len(), keys.len());
    }
    for key in keys {
        let name = key["key"].as_str().context("a key without a name")?;
        let value = ckpt::storage::KvStore::read(&reader, name)?
            .with_context(|| format!("key {name} is missing"))?;
        let digest = hex(&Sha256::digest(&value));
        if Some(digest.as_str()) != key["sha256"].as_str() {
            bail!("key {name}: sha256 {digest}, expected {}", key["sha256"]);
        }
    }
    Ok(keys.len())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a raw OCDBT database with small nodes (a multi-level B+tree) and
/// values on both sides of the inline limit, then has TensorStore list and
/// read every key.
fn check_raw_written_by_ckpt(python: &Path, work: &Path) -> Result<usize> {
    let dir = work.join("ckpt-written-raw-ocdbt");
    let store = open_store(&dir.display().to_string())?;
    let options = OcdbtWriterOptions::default().with_target_node_bytes(512);
    let writer = OcdbtWriter::create(store, options)?;
    let mut expected = std::collections::BTreeMap::new();
    for i in 0..600u32 {
        let key = format!("group{}/key{i:04}", i % 7);
        let len = (i as usize * 37) % 2500;
        let value: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8 | 1).collect();
        expected.insert(key.clone(), hex(&Sha256::digest(&value)));
        ckpt::storage::KvStore::write(&writer, &key, value.into())?;
    }
    writer.commit()?;
    let listing = orbax::ocdbt_read(python, &dir)?;
    let keys = listing["keys"].as_array().context("TensorStore listed no keys")?;
    if keys.len() != expected.len() {
        bail!("TensorStore lists {} keys, expected {}", keys.len(), expected.len());
    }
    for key in keys {
        let name = key["key"].as_str().unwrap_or_default();
        if expected.get(name).map(String::as_str) != key["sha256"].as_str() {
            bail!("key {name}: TensorStore read sha256 {}, expected {:?}", key["sha256"], expected.get(name));
        }
    }
    Ok(keys.len())
}

/// One way ckpt writes a checkpoint.
struct WriteConfig {
    name: String,
    format: ArrayFormat,
    colocated: bool,
    /// Add an array whose last shard is smaller than the others. JAX cannot
    /// place such an array on its saved sharding, so Orbax reads it only
    /// onto a target mesh.
    uneven: bool,
}

fn write_configs() -> Vec<WriteConfig> {
    let formats = [
        ("ocdbt+zarr2 zstd", ArrayFormat::default()),
        (
            "ocdbt+zarr2 raw",
            ArrayFormat::default().with_compression(Compression::None),
        ),
        ("ocdbt+zarr3 zstd", ArrayFormat::default().with_zarr3(true)),
        (
            "zarr3 raw",
            ArrayFormat::default()
                .with_ocdbt(false)
                .with_zarr3(true)
                .with_compression(Compression::None),
        ),
        ("zarr2 zstd", ArrayFormat::default().with_ocdbt(false)),
        (
            "zarr2 raw",
            ArrayFormat::default()
                .with_ocdbt(false)
                .with_compression(Compression::None),
        ),
    ];
    let mut configs = Vec::new();
    for (format_name, format) in formats {
        for colocated in [true, false] {
            let path = if colocated { "colocated" } else { "gather" };
            configs.push(WriteConfig {
                name: format!("{format_name}, {path}"),
                format: format.clone(),
                colocated,
                uneven: false,
            });
        }
    }
    configs.push(WriteConfig {
        name: "ocdbt+zarr2 zstd, colocated, uneven shards".into(),
        format: ArrayFormat::default(),
        colocated: true,
        uneven: true,
    });
    configs
}

/// Saves a tree with ckpt, checks ckpt's own reading against the values
/// it saved, then has Orbax restore it without a target and onto an
/// 8-device 1-D mesh, and compares every leaf.
fn check_written_by_ckpt(python: &Path, work: &Path, config: &WriteConfig) -> Result<usize> {
    let topology = Topology::uniform(4, 2)?;
    let controller = Arc::new(Controller::new(Arc::new(InProcessRuntime::new(topology.clone())?)));
    let mesh = Mesh::new(vec![4, 2], vec!["x", "y"], topology.device_ids())?;
    let (tree, expected) = interop_tree(&controller, &mesh, config.uneven)?;

    let dir_name = config.name.replace([' ', ',', '+'], "_");
    let parent = open_store(&work.join("ckpt-written").display().to_string())?;
    let checkpointer = PyTreeCheckpointer::new(Arc::clone(&controller)).with_format(config.format.clone());
    let save_args = SaveArgs::default().with_colocated(config.colocated);
    checkpointer.save(&parent, &dir_name, PyTreeSave::new(tree).with_save_args(PyTree::leaf(save_args)))?;

    let item = open_committed(&parent, &dir_name)?;
    let ours = ckpt_records(&item)?;
    compare(&ours, &expected, "ckpt's reading of its own checkpoint")?;

    let path = work.join("ckpt-written").join(&dir_name);
    let mut leaves = 0;
    let meshes: &[Option<&str>] = if config.uneven { &[Some("8")] } else { &[None, Some("8")] };
    for &mesh in meshes {
        let theirs = orbax::orbax_read(python, &path, mesh)?;
        let what = format!("Orbax's restore ({})", mesh.map_or("no target".into(), |m| format!("mesh {m}")));
        leaves = compare(&json_records(&theirs, None)?, &expected, &what)?;
    }
    Ok(leaves)
}

/// A tree with every leaf kind and every dtype, and the record each leaf
/// must read back as.
fn interop_tree(controller: &Controller, mesh: &Mesh, uneven: bool) -> Result<(PyTree<Leaf>, Vec<Record>)> {
    let mut expected = Vec::new();
    let mut seed = 0u64;
    let mut sharded = |id: &str, name: &str, shape: Vec<u64>, dtype: DType, sharding: Sharding| -> Result<PyTree<Leaf>> {
        seed += 1;
        let generator = Generator::new(seed);
        let digest = hex(&Sha256::digest(generator.global_bytes(dtype, &shape)));
        expected.push(data_record(id, name, dtype, &shape, digest));
        let spec = ArraySpec { shape, dtype, sharding };
        Ok(PyTree::leaf(Leaf::Array(controller.put_generated(spec, generator)?)))
    };
    let named = |spec: PartitionSpec| Sharding::named(mesh.clone(), spec);
    let both = named(PartitionSpec::new([Some("x"), Some("y")]))?;

    let mut dtypes = Vec::new();
    for dtype in DType::ALL {
        let id = format!("dtypes(dict)/{}(dict)", dtype.name());
        let name = format!("dtypes.{}", dtype.name());
        dtypes.push((dtype.name(), sharded(&id, &name, vec![4, 6], dtype, both.clone())?));
    }
    let uneven_shape = if uneven { vec![10, 3] } else { vec![12, 3] };
    let params = PyTree::dict([
        ("kernel", sharded("params(dict)/kernel(dict)", "params.kernel", vec![16, 8], DType::Float32, both.clone())?),
        (
            "bias",
            sharded("params(dict)/bias(dict)", "params.bias", vec![8], DType::BFloat16, named(PartitionSpec::new([None::<&str>]))?)?,
        ),
        (
            "rows",
            sharded("params(dict)/rows(dict)", "params.rows", uneven_shape, DType::Float32, named(PartitionSpec::new([Some("x"), None]))?)?,
        ),
        (
            "columns",
            sharded("params(dict)/columns(dict)", "params.columns", vec![4, 6], DType::Int32, named(PartitionSpec::new([None, Some("y")]))?)?,
        ),
        (
            "single",
            sharded("params(dict)/single(dict)", "params.single", vec![6, 4], DType::UInt8, Sharding::single_device(mesh.devices()[5]))?,
        ),
    ]);

    let counts = HostArray::from_vec(vec![5], vec![1i64, 2, 3, 4, 5])?;
    let table = HostArray::from_vec(vec![2, 2], vec![0.5f64, 1.5, 2.5, 3.5])?;
    expected.push(data_record("opt(dict)/0(sequence)", "opt.0", DType::Int64, &[5], hex(&Sha256::digest(counts.bytes()))));
    expected.push(data_record("opt(dict)/1(sequence)", "opt.1", DType::Float64, &[2, 2], hex(&Sha256::digest(table.bytes()))));
    let scalars = [
        ("step", Scalar::Int(1234), DType::Int64),
        ("lr", Scalar::Float(0.125), DType::Float64),
        ("flag", Scalar::Bool(true), DType::Bool),
    ];
    for (name, scalar, dtype) in scalars {
        let id = format!("{name}(dict)");
        expected.push(data_record(&id, name, dtype, &[], hex(&Sha256::digest(scalar.to_bytes()))));
    }
    let text = "héllo ✓ \"quoted\" \\ /slash";
    expected.push(Record {
        id: "name(dict)".into(),
        param_name: Some("name".into()),
        empty: false,
        dtype: None,
        shape: None,
        sha256: Some(hex(&Sha256::digest(text.as_bytes()))),
    });
    for id in ["empty_dict(dict)", "empty_list(dict)", "none(dict)"] {
        expected.push(Record {
            id: id.into(),
            param_name: None,
            empty: true,
            dtype: None,
            shape: None,
            sha256: None,
        });
    }

    let mut entries: Vec<(&str, PyTree<Leaf>)> = vec![
        ("params", params),
        ("dtypes", PyTree::dict(dtypes)),
        ("opt", PyTree::tuple([PyTree::leaf(Leaf::HostArray(counts)), PyTree::leaf(Leaf::HostArray(table))])),
        ("name", PyTree::leaf(Leaf::String(text.into()))),
        ("empty_dict", PyTree::dict(Vec::<(String, PyTree<Leaf>)>::new())),
        ("empty_list", PyTree::list([])),
        ("none", PyTree::None),
    ];
    for (name, scalar, _) in scalars {
        entries.push((name, PyTree::leaf(Leaf::Scalar(scalar))));
    }
    Ok((PyTree::dict(entries), expected))
}

fn data_record(id: &str, name: &str, dtype: DType, shape: &[u64], sha256: String) -> Record {
    Record {
        id: id.into(),
        param_name: Some(name.into()),
        empty: false,
        dtype: Some(dtype.name().into()),
        shape: Some(shape.to_vec()),
        sha256: Some(sha256),
    }
}
