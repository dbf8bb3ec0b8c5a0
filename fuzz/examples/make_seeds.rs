//! Writes the seed corpora in `fuzz/seeds/<target>/` from the Orbax
//! checkpoints in `testdata/`, replacing what those directories contained.
//!
//! Run from the repository root:
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds`.
//! Seeds are named by the first 16 hex digits of their SHA-256, so running it
//! again on the same test data writes the same files.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use ckpt_fuzz::{join_path, join_two, repair_envelope, OcdbtMode};
use ckpt_storage::{
    ocdbt_format::{
        decode_btree_node, decode_data_file_table, decode_envelope, decode_manifest,
        decode_version_tree_node, BtreeEntries, DataReference, Manifest, ManifestKind,
        BTREE_NODE_MAGIC, MANIFEST_MAGIC, MAX_DECODED_BYTES_LIMIT, VERSION_TREE_NODE_MAGIC,
    },
    OcdbtCompression, ZarrCompressor, ZarrV2Metadata, ZarrV3Metadata,
};
use sha2::{Digest, Sha256};

type Error = Box<dyn std::error::Error>;

/// The options byte of OCDBT inputs that decode the stored bytes as they are.
const AS_STORED: u8 = OcdbtMode {
    repair: false,
    body_only: false,
}
.to_byte();
/// The options byte of OCDBT inputs that decode a body alone.
const BODY_ONLY: u8 = OcdbtMode {
    repair: false,
    body_only: true,
}
.to_byte();

fn main() -> Result<(), Error> {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let testdata = fuzz_dir.join("../testdata");
    let mut seeds = Seeds::default();
    for path in files_below(&testdata)? {
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        match name {
            ".zarray" => add_zarr_seeds(&mut seeds, &path)?,
            "zarr.json" => add_zarr3_seeds(&mut seeds, &path)?,
            "_METADATA" => seeds.add("tree_metadata", fs::read(&path)?),
            "_CHECKPOINT_METADATA" => seeds.add("checkpoint_metadata", fs::read(&path)?),
            "_sharding" => add_sharding_seeds(&mut seeds, &path)?,
            "manifest.ocdbt" => add_ocdbt_seeds(&mut seeds, &path)?,
            _ => {}
        }
    }
    seeds.write(&fuzz_dir.join("seeds"))
}

/// Seed inputs per target, keyed by file name.
#[derive(Default)]
struct Seeds {
    targets: BTreeMap<&'static str, BTreeMap<String, Vec<u8>>>,
}

impl Seeds {
    fn add(&mut self, target: &'static str, input: Vec<u8>) {
        let digest = Sha256::digest(&input);
        let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.targets.entry(target).or_default().insert(name, input);
    }

    fn add_ocdbt(&mut self, target: &'static str, mode: u8, input: &[u8]) {
        self.add(target, [&[mode], input].concat());
    }

    fn write(&self, seeds_dir: &Path) -> Result<(), Error> {
        for (target, inputs) in &self.targets {
            let dir = seeds_dir.join(target);
            if dir.exists() {
                fs::remove_dir_all(&dir)?;
            }
            fs::create_dir_all(&dir)?;
            for (name, input) in inputs {
                fs::write(dir.join(name), input)?;
            }
            println!("{target}: {} seeds", inputs.len());
        }
        Ok(())
    }
}

fn files_below(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Adds the `.zarray`, and the document joined with its first chunk.
///
/// For a zstd array it also adds an uncompressed copy of both, the form
/// Orbax writes with compression turned off.
fn add_zarr_seeds(seeds: &mut Seeds, path: &Path) -> Result<(), Error> {
    let document = fs::read(path)?;
    seeds.add("zarr_metadata", document.clone());

    let metadata = ZarrV2Metadata::parse(&document, &path.display().to_string())?;
    let first_chunk = ZarrV2Metadata::chunk_key(&vec![0; metadata.shape().len()]);
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    let Ok(chunk) = fs::read(dir.join(first_chunk)) else {
        return Ok(());
    };
    seeds.add("zarr_chunk", join(&document, &chunk)?);

    if let Some(ZarrCompressor::Zstd { .. }) = metadata.compressor() {
        let mut fields: serde_json::Value = serde_json::from_slice(&document)?;
        fields["compressor"] = serde_json::Value::Null;
        let raw_document = serde_json::to_vec(&fields)?;
        let raw_chunk = zstd::decode_all(chunk.as_slice())?;
        seeds.add("zarr_metadata", raw_document.clone());
        seeds.add("zarr_chunk", join(&raw_document, &raw_chunk)?);
    }
    Ok(())
}

/// Adds the `zarr.json`, and the document joined with its first chunk's shard.
fn add_zarr3_seeds(seeds: &mut Seeds, path: &Path) -> Result<(), Error> {
    let document = fs::read(path)?;
    seeds.add("zarr3_metadata", document.clone());

    let metadata = ZarrV3Metadata::parse(&document, &path.display().to_string())?;
    let first_chunk = ZarrV3Metadata::chunk_key(&vec![0; metadata.shape().len()]);
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    if let Ok(shard) = fs::read(dir.join(first_chunk)) {
        seeds.add("zarr3_chunk", join(&document, &shard)?);
    }
    Ok(())
}

/// Adds each value of a `_sharding` file, the JSON text of one sharding.
fn add_sharding_seeds(seeds: &mut Seeds, path: &Path) -> Result<(), Error> {
    let document: BTreeMap<String, String> = serde_json::from_slice(&fs::read(path)?)?;
    for text in document.into_values() {
        seeds.add("sharding", text.into_bytes());
    }
    Ok(())
}

/// Adds the manifest, the B+tree nodes of its newest version, and the
/// structures inside them to the OCDBT targets.
fn add_ocdbt_seeds(seeds: &mut Seeds, path: &Path) -> Result<(), Error> {
    let encoded = fs::read(path)?;
    let database = path.parent().ok_or("a manifest path has a parent")?;
    let body = decode_envelope(&encoded, MANIFEST_MAGIC, MAX_DECODED_BYTES_LIMIT)?;
    let manifest = decode_manifest(&encoded)?;

    seeds.add_ocdbt("ocdbt_manifest", AS_STORED, &encoded);
    seeds.add_ocdbt("ocdbt_manifest", BODY_ONLY, &body);
    seeds.add_ocdbt(
        "ocdbt_envelope",
        AS_STORED,
        &[&[0], encoded.as_slice()].concat(),
    );
    for start in config_len(&manifest)..body.len().min(32) {
        seeds.add(
            "ocdbt_varint",
            body[start..body.len().min(start + 10)].to_vec(),
        );
    }
    add_version_tree_seeds(seeds, &manifest, &body)?;

    let root = manifest.latest().and_then(|version| version.root.as_ref());
    let root_file = match root {
        Some(root) => fs::read(database.join(path_str(&root.location)?))?,
        None => Vec::new(),
    };
    seeds.add_ocdbt("ocdbt_reader", AS_STORED, &join(&encoded, &root_file)?);

    let mut pending: Vec<DataReference> =
        root.map(|root| root.location.clone()).into_iter().collect();
    let mut visited = BTreeSet::new();
    while let Some(location) = pending.pop() {
        let key = (path_str(&location)?.to_owned(), location.offset);
        if !visited.insert(key) {
            continue;
        }
        pending.extend(add_btree_node_seeds(seeds, database, &location)?);
    }
    Ok(())
}

/// Adds one B+tree node and its data file table, and returns its children.
fn add_btree_node_seeds(
    seeds: &mut Seeds,
    database: &Path,
    location: &DataReference,
) -> Result<Vec<DataReference>, Error> {
    let file = fs::read(database.join(path_str(location)?))?;
    let start = usize::try_from(location.offset)?;
    let end = usize::try_from(location.end())?;
    let encoded = file
        .get(start..end)
        .ok_or("a node lies inside its data file")?;
    let transitive_path = &location.file.base_path;
    let body = decode_envelope(encoded, BTREE_NODE_MAGIC, MAX_DECODED_BYTES_LIMIT)?;
    let node = decode_btree_node(encoded, transitive_path, MAX_DECODED_BYTES_LIMIT)?;

    seeds.add_ocdbt(
        "ocdbt_btree_node",
        AS_STORED,
        &join_path(transitive_path, encoded).ok_or("long path")?,
    );
    seeds.add_ocdbt(
        "ocdbt_btree_node",
        BODY_ONLY,
        &join_path(transitive_path, &body).ok_or("long path")?,
    );
    seeds.add_ocdbt("ocdbt_envelope", AS_STORED, &[&[2], encoded].concat());
    // The table follows the height byte.
    if let Some(table_len) = data_file_table_len(&body[1..], transitive_path) {
        let table = &body[1..1 + table_len];
        seeds.add(
            "ocdbt_data_file_table",
            join_path(transitive_path, table).ok_or("long path")?,
        );
    }

    let children = match node.entries {
        BtreeEntries::Interior(entries) => entries
            .into_iter()
            .map(|entry| entry.child.location)
            .collect(),
        BtreeEntries::Leaf(_) => Vec::new(),
    };
    Ok(children)
}

/// Adds a version tree leaf node made of the versions in a manifest body.
///
/// The test data has no version tree nodes, because each database there has
/// one version. A manifest body with no version nodes ends with its data file
/// table, its version entries and a zero count of version nodes. The first
/// two are exactly what a version tree leaf contains after its arity and height.
fn add_version_tree_seeds(
    seeds: &mut Seeds,
    manifest: &Manifest,
    body: &[u8],
) -> Result<(), Error> {
    if manifest.config.manifest_kind != ManifestKind::Single || !manifest.version_nodes.is_empty() {
        return Ok(());
    }
    let Some((&0, table_and_versions)) = body[config_len(manifest)..].split_last() else {
        return Ok(());
    };
    let arity_log2 = manifest.config.version_tree_arity_log2;
    let node_body = [&[arity_log2, 0], table_and_versions].concat();
    let encoded = envelope(VERSION_TREE_NODE_MAGIC, &node_body);
    decode_version_tree_node(&encoded, b"", MAX_DECODED_BYTES_LIMIT)?;
    seeds.add_ocdbt(
        "ocdbt_version_tree_node",
        AS_STORED,
        &join_path(b"", &encoded).ok_or("long path")?,
    );
    seeds.add_ocdbt(
        "ocdbt_envelope",
        AS_STORED,
        &[&[1], encoded.as_slice()].concat(),
    );

    if let Some(table_len) = data_file_table_len(table_and_versions, b"") {
        let (table, versions) = table_and_versions.split_at(table_len);
        let entries = [&[arity_log2], join(table, versions)?.as_slice()].concat();
        seeds.add_ocdbt(
            "ocdbt_version_tree_node",
            BODY_ONLY,
            &join_path(b"", &entries).ok_or("long path")?,
        );
    }
    Ok(())
}

/// Wraps an uncompressed body in an envelope.
fn envelope(magic: u32, body: &[u8]) -> Vec<u8> {
    let mut encoded = magic.to_be_bytes().to_vec();
    // The length and checksum are placeholders that `repair_envelope` fills
    // in. Between them come format version 0 and compression method 0.
    encoded.extend_from_slice(&[0; 8]);
    encoded.extend_from_slice(&[0, 0]);
    encoded.extend_from_slice(body);
    encoded.extend_from_slice(&[0; 4]);
    repair_envelope(&encoded)
}

/// Returns the length of the data file table at the start of `bytes`: the
/// only prefix that decodes as a whole table.
fn data_file_table_len(bytes: &[u8], transitive_path: &[u8]) -> Option<usize> {
    (1..=bytes.len()).find(|&len| decode_data_file_table(&bytes[..len], transitive_path).is_ok())
}

/// Returns the length of the configuration at the start of a manifest body.
fn config_len(manifest: &Manifest) -> usize {
    let config = &manifest.config;
    let compression = match config.compression {
        OcdbtCompression::None => 1,
        OcdbtCompression::Zstd { .. } => 1 + 4,
    };
    // uuid, manifest kind, two varints, arity, compression.
    16 + 1
        + varint_len(config.max_inline_value_bytes.into())
        + varint_len(config.max_decoded_node_bytes.into())
        + 1
        + compression
}

fn varint_len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

fn path_str(location: &DataReference) -> Result<String, Error> {
    Ok(String::from_utf8(location.file.full_path())?)
}

fn join(first: &[u8], second: &[u8]) -> Result<Vec<u8>, Error> {
    join_two(first, second)
        .ok_or_else(|| format!("a {}-byte first part is too long", first.len()).into())
}
