//! The `ckpt` command: inspect checkpoints in the Orbax format, written by
//! ckpt or by Python Orbax.

use std::{
    io::ErrorKind,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use ckpt::{
    pytree::{Key, KeyPath, PyTree},
    storage::{open_committed, open_store, Store},
    LeafMetadata,
};
use clap::{Parser, Subcommand};
use serde_json::json;

#[derive(Parser)]
#[command(name = "ckpt", version, about = "Inspect Orbax-format checkpoints")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the tree, dtypes, shapes, shardings and sizes of a checkpoint.
    Inspect {
        /// The checkpoint directory (a path or a file:// URL).
        path: String,
        /// Print one JSON object per leaf with its key path, dtype, shape and
        /// the SHA-256 of its values (reads all array data).
        #[arg(long)]
        json: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Inspect { path, json } => inspect(&path, json),
    }
}

/// Opens the committed checkpoint at `location`.
fn open_checkpoint(location: &str) -> Result<Store> {
    let local = location.strip_prefix("file://").unwrap_or(location);
    let path = PathBuf::from(local);
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .with_context(|| format!("{location} does not name a checkpoint directory"))?;
    // open_store creates a missing directory, and inspecting must not
    // create anything, so the path is checked first.
    match std::fs::metadata(&path) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => bail!("{location} is not a directory: pass the path of a checkpoint directory"),
        Err(error) if error.kind() == ErrorKind::NotFound => {
            bail!("checkpoint directory {location} not found")
        }
        Err(error) => {
            return Err(error).with_context(|| format!("cannot open checkpoint directory {location}"))
        }
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let parent = open_store(&parent.display().to_string())?;
    Ok(open_committed(&parent, name)?)
}

fn inspect(location: &str, as_json: bool) -> Result<()> {
    let item = open_checkpoint(location)?;
    if as_json {
        for digest in ckpt::leaf_digests(&item)? {
            let line = json!({
                "keypath": key_path_json(&digest.key_path),
                "param_name": digest.param_name,
                "value_type": digest.value_type,
                "dtype": digest.dtype.map(|d| d.name()),
                "shape": digest.shape,
                "sha256": digest.sha256,
            });
            println!("{line}");
        }
        return Ok(());
    }
    let metadata = ckpt::item_metadata(&item)?;
    println!("checkpoint {location}");
    let format = match (metadata.use_ocdbt, metadata.use_zarr3) {
        (Some(true), false) => "OCDBT + zarr v2",
        (Some(true), true) => "OCDBT + zarr v3",
        (_, true) => "zarr v3",
        _ => "zarr v2",
    };
    println!("format: {format}");
    let mut total = 0u64;
    print_tree(&metadata.tree, 0, &mut total);
    println!("total: {total} bytes of array data");
    Ok(())
}

fn print_tree(tree: &PyTree<LeafMetadata>, depth: usize, total: &mut u64) {
    let indent = "  ".repeat(depth);
    match tree {
        PyTree::Dict(entries) => {
            for (key, child) in entries {
                print_entry(&format!("{indent}{key}"), child, depth, total);
            }
        }
        PyTree::List(items) | PyTree::Tuple(items) => {
            for (index, child) in items.iter().enumerate() {
                print_entry(&format!("{indent}[{index}]"), child, depth, total);
            }
        }
        PyTree::None => println!("{indent}None"),
        PyTree::Leaf(leaf) => println!("{indent}{}", describe(leaf, total)),
    }
}

fn print_entry(label: &str, child: &PyTree<LeafMetadata>, depth: usize, total: &mut u64) {
    match child {
        PyTree::Leaf(leaf) => println!("{label}: {}", describe(leaf, total)),
        PyTree::None => println!("{label}: None"),
        PyTree::Dict(entries) if entries.is_empty() => println!("{label}: {{}}"),
        PyTree::List(items) if items.is_empty() => println!("{label}: []"),
        PyTree::Tuple(items) if items.is_empty() => println!("{label}: ()"),
        _ => {
            println!("{label}:");
            print_tree(child, depth + 1, total);
        }
    }
}

fn describe(leaf: &LeafMetadata, total: &mut u64) -> String {
    let mut text = leaf.value_type.clone();
    if let (Some(dtype), Some(shape)) = (leaf.dtype, &leaf.shape) {
        text = format!("{text} {dtype}{shape:?}");
    }
    if let Some(chunks) = &leaf.chunk_shape {
        text = format!("{text} chunks {chunks:?}");
    }
    if let Some(bytes) = leaf.size_bytes {
        *total += bytes;
        text = format!("{text} {bytes} B");
    }
    if let Some(sharding) = &leaf.sharding {
        text = format!("{text} sharding {}", summarize_sharding(sharding));
    }
    text
}

/// Shortens Orbax's sharding JSON to its type, mesh and partition spec.
fn summarize_sharding(json: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(json) else {
        return json.to_owned();
    };
    match value.get("sharding_type").and_then(|t| t.as_str()) {
        Some("NamedSharding") => format!(
            "mesh {} axes {} spec {}",
            value["shape"], value["axis_names"], value["partition_spec"]
        ),
        Some(other) => format!("{other} {}", value.get("device_str").unwrap_or(&json!(null))),
        None => json.to_owned(),
    }
}

fn key_path_json(path: &KeyPath) -> serde_json::Value {
    path.keys()
        .iter()
        .map(|key| match key {
            Key::Dict(name) => json!({"key": name, "key_type": "dict"}),
            Key::Index(index) => json!({"key": index.to_string(), "key_type": "sequence"}),
        })
        .collect()
}
