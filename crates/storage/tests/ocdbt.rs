//! OCDBT reader, writer and merge against the databases real Orbax wrote
//! (testdata/orbax) and against databases these tests write themselves.

use std::{
    collections::BTreeMap,
    fs,
    ops::Range,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use ckpt_storage::{
    merge_databases, Backend, Capabilities, KvStore, LocalBackend, ObjectStoreBackend,
    OcdbtCompression, OcdbtReader, OcdbtWriter, OcdbtWriterOptions, Result, StorageError, Store,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/orbax")
}

fn local_store(dir: &Path) -> Store {
    Store::new(Arc::new(LocalBackend::new(dir).unwrap()))
}

fn memory_store() -> Store {
    Store::new(Arc::new(ObjectStoreBackend::memory().unwrap()))
}

// ---------------------------------------------------------------------------
// Fixtures written by Orbax 0.12.8 / TensorStore 0.1.86.

/// One database as `dump.md` describes it.
#[derive(Debug, Default)]
struct DumpedDatabase {
    /// Directory relative to the fixture's `ckpt/`.
    dir: String,
    /// The newest generation listed, with its key count.
    newest: Option<(u64, u64)>,
    /// Each key of the root B+tree node with `INLINE` or `INDIRECT` and the value length.
    entries: Vec<(String, String, u64)>,
}

/// Parses the "OCDBT databases (decoded)" section of a fixture's dump.md.
fn parse_dump(text: &str) -> Vec<DumpedDatabase> {
    let mut databases: Vec<DumpedDatabase> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("### OCDBT database `") {
            databases.push(DumpedDatabase {
                dir: rest.trim_end_matches('`').to_owned(),
                ..DumpedDatabase::default()
            });
            continue;
        }
        let Some(database) = databases.last_mut() else {
            continue;
        };
        if let Some(rest) = line.strip_prefix("  - gen=") {
            let generation: u64 = rest.split(' ').next().unwrap().parse().unwrap();
            let num_keys: u64 = field_after(rest, "num_keys=").parse().unwrap();
            if database
                .newest
                .is_none_or(|(newest, _)| generation > newest)
            {
                database.newest = Some((generation, num_keys));
            }
        } else if let Some(rest) = line.strip_prefix("  - `") {
            let (key, rest) = rest.split_once("` ").unwrap();
            let (kind, rest) = rest.split_once(' ').unwrap();
            let length = match kind {
                "INLINE" => rest.split(' ').next().unwrap().parse().unwrap(),
                _ => field_after(rest, "len=").parse().unwrap(),
            };
            database
                .entries
                .push((key.to_owned(), kind.to_owned(), length));
        }
    }
    databases
}

fn field_after<'a>(text: &'a str, name: &str) -> &'a str {
    let start = text.find(name).unwrap() + name.len();
    text[start..].split(' ').next().unwrap()
}

fn fixtures_with_ocdbt() -> Vec<PathBuf> {
    let mut fixtures: Vec<PathBuf> = fs::read_dir(testdata())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            fs::read_to_string(path.join("dump.md"))
                .is_ok_and(|dump| dump.contains("### OCDBT database"))
        })
        .collect();
    fixtures.sort();
    fixtures
}

#[test]
fn fixtures_found() {
    let names: Vec<String> = fixtures_with_ocdbt()
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "a_pytree_ocdbt",
        "c_pytree_zarr3_ocdbt",
        "d_manager",
        "m_foreign_minimal",
    ] {
        assert!(
            names.iter().any(|name| name == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[test]
fn fixture_keys_match_dump() {
    let mut checked = 0;
    for fixture in fixtures_with_ocdbt() {
        let dump = fs::read_to_string(fixture.join("dump.md")).unwrap();
        for database in parse_dump(&dump) {
            let dir = fixture.join("ckpt").join(&database.dir);
            let reader = OcdbtReader::open(local_store(&dir)).unwrap();
            let keys = reader.list("").unwrap();
            let expected: Vec<&str> = database
                .entries
                .iter()
                .map(|(key, _, _)| key.as_str())
                .collect();
            assert_eq!(keys, expected, "keys of {}", dir.display());
            checked += 1;
        }
    }
    assert!(checked >= 14, "only {checked} databases checked");
}

#[test]
fn fixture_values_match_dump_lengths() {
    for fixture in fixtures_with_ocdbt() {
        let dump = fs::read_to_string(fixture.join("dump.md")).unwrap();
        for database in parse_dump(&dump) {
            let dir = fixture.join("ckpt").join(&database.dir);
            let reader = OcdbtReader::open(local_store(&dir)).unwrap();
            for (key, _, length) in &database.entries {
                let value = reader.read(key).unwrap().unwrap();
                assert_eq!(value.len() as u64, *length, "{key} in {}", dir.display());
            }
        }
    }
}

#[test]
fn fixture_newest_version_read() {
    for fixture in fixtures_with_ocdbt() {
        let dump = fs::read_to_string(fixture.join("dump.md")).unwrap();
        for database in parse_dump(&dump) {
            let dir = fixture.join("ckpt").join(&database.dir);
            let reader = OcdbtReader::open(local_store(&dir)).unwrap();
            let (generation, num_keys) = database.newest.unwrap();
            assert_eq!(reader.version().generation, generation, "{}", dir.display());
            assert_eq!(
                reader.version().statistics().num_keys,
                num_keys,
                "{}",
                dir.display()
            );
        }
    }
}

#[test]
fn fixture_config_is_orbax_default() {
    let reader = OcdbtReader::open(local_store(&testdata().join("a_pytree_ocdbt/ckpt"))).unwrap();
    let config = reader.config();
    assert_eq!(config.max_inline_value_bytes, 1024);
    assert_eq!(config.max_decoded_node_bytes, 100_000_000);
    assert_eq!(config.version_tree_arity_log2, 4);
    assert_eq!(config.compression, OcdbtCompression::Zstd { level: 0 });
}

#[test]
fn fixture_zarray_read() {
    let reader = OcdbtReader::open(local_store(&testdata().join("a_pytree_ocdbt/ckpt"))).unwrap();
    let zarray = reader.read("params.dense.kernel/.zarray").unwrap().unwrap();
    let expected = r#"{"chunks":[4,4],"compressor":{"id":"zstd","level":1},"dimension_separator":".","dtype":"<f4","fill_value":null,"filters":null,"order":"C","shape":[16,8],"zarr_format":2}"#;
    assert_eq!(std::str::from_utf8(&zarray).unwrap(), expected);
}

#[test]
fn fixture_missing_key_is_none() {
    let reader = OcdbtReader::open(local_store(&testdata().join("a_pytree_ocdbt/ckpt"))).unwrap();
    assert_eq!(reader.read("params.dense.kernel/9.9").unwrap(), None);
    assert_eq!(reader.read("").unwrap(), None);
    assert_eq!(reader.read("zzz").unwrap(), None);
}

#[test]
fn fixture_list_prefix() {
    let reader = OcdbtReader::open(local_store(&testdata().join("a_pytree_ocdbt/ckpt"))).unwrap();
    let keys = reader.list("params.dense.kernel/").unwrap();
    assert_eq!(keys.len(), 9);
    assert!(keys
        .iter()
        .all(|key| key.starts_with("params.dense.kernel/")));
}

fn expected_sha256(fixture: &str, param: &str) -> String {
    let text = fs::read_to_string(testdata().join(fixture).join("expected_values.json")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    let leaves = expected["leaves"].as_array().unwrap();
    let leaf = leaves
        .iter()
        .find(|leaf| leaf["param_name"] == param)
        .unwrap();
    leaf["sha256"].as_str().unwrap().to_owned()
}

/// Reads the f32[16, 8] kernel of fixture a, stored as 4x2 zstd chunks of 4x4.
fn read_kernel(reader: &OcdbtReader) -> Vec<u8> {
    let mut array = vec![0u8; 16 * 8 * 4];
    for chunk_row in 0..4 {
        for chunk_col in 0..2 {
            let key = format!("params.dense.kernel/{chunk_row}.{chunk_col}");
            let compressed = reader.read(&key).unwrap().unwrap();
            let chunk = zstd::bulk::decompress(&compressed, 64).unwrap();
            assert_eq!(chunk.len(), 64, "{key}");
            for row in 0..4 {
                let dst = ((chunk_row * 4 + row) * 8 + chunk_col * 4) * 4;
                array[dst..dst + 16].copy_from_slice(&chunk[row * 16..row * 16 + 16]);
            }
        }
    }
    array
}

#[test]
fn fixture_kernel_sha256_matches() {
    let expected = expected_sha256("a_pytree_ocdbt", "params.dense.kernel");
    for dir in ["ckpt", "ckpt/ocdbt.process_0"] {
        let reader =
            OcdbtReader::open(local_store(&testdata().join("a_pytree_ocdbt").join(dir))).unwrap();
        let sha = format!("{:x}", Sha256::digest(read_kernel(&reader)));
        assert_eq!(sha, expected, "{dir}");
    }
}

#[test]
fn fixture_out_of_line_value_sha256_matches() {
    // m_foreign_minimal stores big/0.0, a raw u32[32, 32] chunk, out-of-line.
    let reader =
        OcdbtReader::open(local_store(&testdata().join("m_foreign_minimal/ckpt"))).unwrap();
    let chunk = reader.read("big/0.0").unwrap().unwrap();
    let sha = format!("{:x}", Sha256::digest(&chunk));
    assert_eq!(sha, expected_sha256("m_foreign_minimal", "big"));
}

/// A backend that records the keys read through it.
#[derive(Debug)]
struct RecordingBackend {
    inner: LocalBackend,
    reads: Mutex<Vec<String>>,
}

impl RecordingBackend {
    fn record(&self, key: &str) {
        self.reads.lock().unwrap().push(key.to_owned());
    }
}

impl Backend for RecordingBackend {
    fn url(&self) -> String {
        self.inner.url()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.record(key);
        self.inner.get(key)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Option<Bytes>> {
        self.record(key);
        self.inner.get_range(key, range)
    }
    fn put(&self, key: &str, value: Bytes) -> Result<()> {
        self.inner.put(key, value)
    }
    fn put_if_absent(&self, key: &str, value: Bytes) -> Result<()> {
        self.inner.put_if_absent(key, value)
    }
    fn size(&self, key: &str) -> Result<Option<u64>> {
        self.record(key);
        self.inner.size(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.record(prefix);
        self.inner.list(prefix)
    }
    fn list_dirs(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list_dirs(prefix)
    }
    fn delete_prefix(&self, prefix: &str) -> Result<()> {
        self.inner.delete_prefix(prefix)
    }
    fn rename_dir(&self, from: &str, to: &str) -> Result<()> {
        self.inner.rename_dir(from, to)
    }
}

#[test]
fn fixture_old_generations_not_read() {
    // The per-process database of fixture a has 11 generations, but only the
    // manifest and the newest root node file may be read.
    let backend = Arc::new(RecordingBackend {
        inner: LocalBackend::new(testdata().join("a_pytree_ocdbt/ckpt/ocdbt.process_0")).unwrap(),
        reads: Mutex::default(),
    });
    let reader = OcdbtReader::open(Store::new(backend.clone())).unwrap();
    assert_eq!(reader.version().generation, 11);
    reader.read("params.dense.kernel/0.0").unwrap().unwrap();
    reader.list("").unwrap();

    let mut reads = backend.reads.lock().unwrap().clone();
    reads.sort();
    reads.dedup();
    assert_eq!(
        reads,
        ["d/97d1dd6d358f30832fa1e2f7cef63c15", "manifest.ocdbt"]
    );
}

// ---------------------------------------------------------------------------
// Writer and reader round trips.

fn tiny_nodes() -> OcdbtWriterOptions {
    let mut options = OcdbtWriterOptions::default();
    options.target_node_bytes = 256;
    options
}

fn write_database(store: &Store, options: OcdbtWriterOptions, entries: &BTreeMap<String, Vec<u8>>) {
    let writer = OcdbtWriter::create(store.clone(), options).unwrap();
    for (key, value) in entries {
        writer.write(key, Bytes::from(value.clone())).unwrap();
    }
    writer.commit().unwrap();
}

fn check_database(
    store: &Store,
    entries: &BTreeMap<String, Vec<u8>>,
) -> std::result::Result<(), TestCaseError> {
    let reader = OcdbtReader::open(store.clone()).unwrap();
    let keys: Vec<String> = entries.keys().cloned().collect();
    prop_assert_eq!(reader.list("").unwrap(), keys);
    for (key, value) in entries {
        let found = reader.read(key).unwrap();
        prop_assert_eq!(found.as_deref(), Some(value.as_slice()), "key {}", key);
    }
    prop_assert_eq!(reader.version().statistics().num_keys, entries.len() as u64);
    Ok(())
}

/// Keys from a small alphabet, so that they share prefixes as zarr keys do.
fn key_strategy() -> impl Strategy<Value = String> {
    "[ab./0-2]{1,24}"
}

/// Values of 0 to 2100 bytes, often near the 1024-byte inline limit.
fn value_strategy() -> impl Strategy<Value = Vec<u8>> {
    let len = prop_oneof![0usize..64, 1000usize..1050, 0usize..2100];
    len.prop_flat_map(|len| proptest::collection::vec(any::<u8>(), len))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn round_trip_tiny_nodes(entries in proptest::collection::btree_map(key_strategy(), value_strategy(), 0..120)) {
        let store = memory_store();
        write_database(&store, tiny_nodes(), &entries);
        check_database(&store, &entries)?;
    }

    #[test]
    fn round_trip_uncompressed(entries in proptest::collection::btree_map(key_strategy(), value_strategy(), 1..60)) {
        let store = memory_store();
        let mut options = tiny_nodes();
        options.compression = OcdbtCompression::None;
        write_database(&store, options, &entries);
        check_database(&store, &entries)?;
    }

    #[test]
    fn prefix_list_matches_filter(
        entries in proptest::collection::btree_map(key_strategy(), value_strategy(), 1..120),
        prefix in "[ab./0-2]{0,4}",
    ) {
        let store = memory_store();
        write_database(&store, tiny_nodes(), &entries);
        let reader = OcdbtReader::open(store).unwrap();
        let expected: Vec<String> = entries.keys().filter(|key| key.starts_with(&prefix)).cloned().collect();
        prop_assert_eq!(reader.list(&prefix).unwrap(), expected);
    }
}

fn many_entries(count: usize) -> BTreeMap<String, Vec<u8>> {
    (0..count)
        .map(|index| {
            let key = format!("param.{}/{}.{}", index % 5, index / 10, index % 10);
            let len = [10, 1024, 1025, 3000][index % 4];
            (key, vec![(index % 251) as u8; len])
        })
        .collect()
}

#[test]
fn large_tree_has_several_levels() {
    let store = memory_store();
    let entries = many_entries(2000);
    write_database(&store, tiny_nodes(), &entries);
    let reader = OcdbtReader::open(store.clone()).unwrap();
    assert!(
        reader.version().root_height >= 2,
        "height {}",
        reader.version().root_height
    );
    check_database(&store, &entries).unwrap();
}

#[test]
fn writer_files_are_manifest_and_one_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path());
    write_database(&store, OcdbtWriterOptions::default(), &many_entries(40));
    let files = store.list().unwrap();
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(files[1], "manifest.ocdbt");
    let data_file = files[0].strip_prefix("d/").unwrap();
    assert_eq!(data_file.len(), 32);
    assert!(data_file
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
}

#[test]
fn writer_stores_large_values_out_of_line() {
    let store = memory_store();
    let entries = many_entries(40);
    write_database(&store, OcdbtWriterOptions::default(), &entries);
    let reader = OcdbtReader::open(store).unwrap();
    let out_of_line: u64 = entries
        .values()
        .filter(|value| value.len() > 1024)
        .map(|value| value.len() as u64)
        .sum();
    assert_eq!(
        reader.version().statistics().num_indirect_value_bytes,
        out_of_line
    );
    assert_eq!(reader.version().generation, 1);
}

#[test]
fn last_write_wins() {
    let store = memory_store();
    let writer = OcdbtWriter::create(store.clone(), OcdbtWriterOptions::default()).unwrap();
    writer.write("k", Bytes::from_static(b"first")).unwrap();
    writer.write("k", Bytes::from_static(b"second")).unwrap();
    assert_eq!(writer.read("k").unwrap().as_deref(), Some(&b"second"[..]));
    writer.commit().unwrap();
    let reader = OcdbtReader::open(store).unwrap();
    assert_eq!(reader.read("k").unwrap().as_deref(), Some(&b"second"[..]));
}

#[test]
fn empty_database_round_trips() {
    let store = memory_store();
    OcdbtWriter::create(store.clone(), OcdbtWriterOptions::default())
        .unwrap()
        .commit()
        .unwrap();
    let reader = OcdbtReader::open(store).unwrap();
    assert_eq!(reader.list("").unwrap(), Vec::<String>::new());
    assert_eq!(reader.read("k").unwrap(), None);
}

#[test]
fn writer_rejects_existing_database() {
    let store = memory_store();
    write_database(&store, OcdbtWriterOptions::default(), &many_entries(3));
    let err = OcdbtWriter::create(store, OcdbtWriterOptions::default()).unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err}");
}

#[test]
fn writer_rejects_write_after_commit() {
    let writer = OcdbtWriter::create(memory_store(), OcdbtWriterOptions::default()).unwrap();
    writer.commit().unwrap();
    let err = writer.write("k", Bytes::new()).unwrap_err();
    assert!(matches!(err, StorageError::Unsupported { .. }), "{err}");
    let err = writer.commit().unwrap_err();
    assert!(matches!(err, StorageError::Unsupported { .. }), "{err}");
}

#[test]
fn writer_rejects_long_key() {
    let writer = OcdbtWriter::create(memory_store(), OcdbtWriterOptions::default()).unwrap();
    let err = writer.write(&"k".repeat(65536), Bytes::new()).unwrap_err();
    assert!(
        matches!(err, StorageError::InvalidOcdbtWrite { .. }),
        "{err}"
    );
}

#[test]
fn writer_rejects_bad_options() {
    let mut options = OcdbtWriterOptions::default();
    options.version_tree_arity_log2 = 0;
    let err = OcdbtWriter::create(memory_store(), options).unwrap_err();
    assert!(
        matches!(err, StorageError::InvalidOcdbtWrite { .. }),
        "{err}"
    );

    let mut options = OcdbtWriterOptions::default();
    options.max_inline_value_bytes = (1 << 20) + 1;
    let err = OcdbtWriter::create(memory_store(), options).unwrap_err();
    assert!(
        matches!(err, StorageError::InvalidOcdbtWrite { .. }),
        "{err}"
    );
}

#[test]
fn writer_rejects_node_above_limit() {
    let mut options = OcdbtWriterOptions::default();
    options.max_decoded_node_bytes = 500;
    let writer = OcdbtWriter::create(memory_store(), options).unwrap();
    writer.write("k", Bytes::from(vec![1u8; 1000])).unwrap();
    let err = writer.commit().unwrap_err();
    assert!(
        matches!(err, StorageError::InvalidOcdbtWrite { .. }),
        "{err}"
    );
}

#[test]
fn reader_rejects_writes() {
    let store = memory_store();
    write_database(&store, OcdbtWriterOptions::default(), &many_entries(3));
    let reader = OcdbtReader::open(store).unwrap();
    let err = reader.write("k", Bytes::new()).unwrap_err();
    assert!(matches!(err, StorageError::Unsupported { .. }), "{err}");
}

#[test]
fn reads_from_many_threads() {
    let store = memory_store();
    let entries = many_entries(600);
    write_database(&store, tiny_nodes(), &entries);
    let reader = OcdbtReader::open(store).unwrap();
    std::thread::scope(|scope| {
        for thread in 0..8 {
            let (reader, entries) = (&reader, &entries);
            scope.spawn(move || {
                for (key, value) in entries.iter().skip(thread).step_by(3) {
                    assert_eq!(
                        reader.read(key).unwrap().as_deref(),
                        Some(value.as_slice()),
                        "{key}"
                    );
                }
            });
        }
    });
}

// ---------------------------------------------------------------------------
// Merge.

fn child_entries(process: usize) -> BTreeMap<String, Vec<u8>> {
    let mut entries = BTreeMap::new();
    for chunk in 0..30 {
        let len = if chunk % 3 == 0 { 4000 } else { 100 };
        entries.insert(
            format!("rows/{}.0", process * 30 + chunk),
            vec![(process * 7 + chunk) as u8; len],
        );
    }
    if process == 0 {
        entries.insert("rows/.zarray".to_owned(), b"{\"zarr_format\":2}".to_vec());
    }
    entries
}

#[test]
fn merge_reads_through_root() {
    let root = memory_store();
    let mut all = BTreeMap::new();
    for process in 0..3 {
        let entries = child_entries(process);
        write_database(
            &root.child(&format!("ocdbt.process_{process}")).unwrap(),
            tiny_nodes(),
            &entries,
        );
        all.extend(entries);
    }
    merge_databases(
        root.clone(),
        &["ocdbt.process_0", "ocdbt.process_1", "ocdbt.process_2"],
    )
    .unwrap();
    check_database(&root, &all).unwrap();
}

#[test]
fn merge_copies_no_value_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = local_store(dir.path());
    let mut out_of_line = 0u64;
    for process in 0..3 {
        let entries = child_entries(process);
        out_of_line += entries
            .values()
            .filter(|value| value.len() > 1024)
            .map(|value| value.len() as u64)
            .sum::<u64>();
        write_database(
            &root.child(&format!("ocdbt.process_{process}")).unwrap(),
            tiny_nodes(),
            &entries,
        );
    }
    merge_databases(
        root.clone(),
        &["ocdbt.process_0", "ocdbt.process_1", "ocdbt.process_2"],
    )
    .unwrap();

    let reader = OcdbtReader::open(root.clone()).unwrap();
    assert_eq!(
        reader.version().statistics().num_indirect_value_bytes,
        out_of_line
    );
    let root_files: Vec<String> = root
        .list()
        .unwrap()
        .into_iter()
        .filter(|key| !key.starts_with("ocdbt."))
        .collect();
    assert_eq!(root_files.len(), 2, "{root_files:?}");
    let data_file_size = root.size(&root_files[0]).unwrap().unwrap();
    assert!(
        data_file_size < out_of_line / 4,
        "root data file has {data_file_size} bytes"
    );
}

#[test]
fn merge_rejects_duplicate_keys() {
    let root = memory_store();
    for process in 0..2 {
        let entries = BTreeMap::from([("same".to_owned(), vec![process as u8])]);
        write_database(
            &root.child(&format!("ocdbt.process_{process}")).unwrap(),
            OcdbtWriterOptions::default(),
            &entries,
        );
    }
    let err = merge_databases(root.clone(), &["ocdbt.process_0", "ocdbt.process_1"]).unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("ocdbt.process_1"), "{err}");
    assert!(!root.exists("manifest.ocdbt").unwrap());
}

#[test]
fn merge_rejects_existing_root() {
    let root = memory_store();
    write_database(
        &root.child("ocdbt.process_0").unwrap(),
        OcdbtWriterOptions::default(),
        &child_entries(0),
    );
    merge_databases(root.clone(), &["ocdbt.process_0"]).unwrap();
    let err = merge_databases(root, &["ocdbt.process_0"]).unwrap_err();
    assert!(matches!(err, StorageError::AlreadyExists { .. }), "{err}");
}

#[test]
fn merge_rejects_missing_child() {
    let err = merge_databases(memory_store(), &["ocdbt.process_0"]).unwrap_err();
    assert!(matches!(err, StorageError::NotFound { .. }), "{err}");
}

// ---------------------------------------------------------------------------
// Corrupt databases: one test per kind of damage.

/// Writes a database in memory and returns its store and data file name.
fn damaged_fixture(options: OcdbtWriterOptions) -> (Store, String) {
    let store = memory_store();
    write_database(&store, options, &many_entries(20));
    let data_file = store
        .list()
        .unwrap()
        .into_iter()
        .find(|key| key.starts_with("d/"))
        .unwrap();
    (store, data_file)
}

fn uncompressed() -> OcdbtWriterOptions {
    let mut options = OcdbtWriterOptions::default();
    options.compression = OcdbtCompression::None;
    options
}

/// Replaces `file` with `edit` applied to its bytes.
fn edit_file(store: &Store, file: &str, edit: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = store.get_required(file).unwrap().to_vec();
    edit(&mut bytes);
    store.put(file, Bytes::from(bytes)).unwrap();
}

/// Recomputes the CRC-32C at the end of an envelope that starts at `start`
/// and is `len` bytes long.
fn reseal(bytes: &mut [u8], start: usize, len: usize) {
    let end = start + len;
    let crc = crc32c::crc32c(&bytes[start..end - 4]);
    bytes[end - 4..end].copy_from_slice(&crc.to_le_bytes());
}

/// Opens the database and reads every key, returning the first error.
fn open_and_read_all(store: &Store) -> StorageError {
    let result = OcdbtReader::open(store.clone()).and_then(|reader| {
        for key in many_entries(20).keys() {
            reader.read(key)?;
        }
        Ok(())
    });
    result.unwrap_err()
}

fn assert_corrupt(err: &StorageError, file: &str, message: &str) {
    let StorageError::Corrupt { key, reason } = err else {
        panic!("expected a corrupt-data error, found {err}");
    };
    assert!(key.ends_with(file), "error names {key}, expected {file}");
    assert!(
        reason.contains(message),
        "reason {reason:?} lacks {message:?}"
    );
}

#[test]
fn flipped_bit_fails_checksum() {
    let (store, data_file) = damaged_fixture(OcdbtWriterOptions::default());
    let size = store.size(&data_file).unwrap().unwrap() as usize;
    edit_file(&store, &data_file, |bytes| bytes[size - 10] ^= 0x10);
    assert_corrupt(&open_and_read_all(&store), &data_file, "CRC-32C mismatch");
}

#[test]
fn truncated_manifest_rejected() {
    let (store, _) = damaged_fixture(OcdbtWriterOptions::default());
    edit_file(&store, "manifest.ocdbt", |bytes| {
        bytes.truncate(bytes.len() - 5)
    });
    assert_corrupt(
        &open_and_read_all(&store),
        "manifest.ocdbt",
        "length header",
    );
}

#[test]
fn truncated_data_file_rejected() {
    let (store, data_file) = damaged_fixture(OcdbtWriterOptions::default());
    edit_file(&store, &data_file, |bytes| bytes.truncate(bytes.len() - 1));
    assert_corrupt(
        &open_and_read_all(&store),
        &data_file,
        "past the end of the file",
    );
}

#[test]
fn missing_data_file_rejected() {
    // A copy of the database without its data file.
    let (store, data_file) = damaged_fixture(OcdbtWriterOptions::default());
    let copy = memory_store();
    copy.put(
        "manifest.ocdbt",
        store.get_required("manifest.ocdbt").unwrap(),
    )
    .unwrap();
    assert_corrupt(&open_and_read_all(&copy), &data_file, "missing");
}

#[test]
fn missing_manifest_is_not_found() {
    let err = OcdbtReader::open(memory_store()).unwrap_err();
    assert!(matches!(err, StorageError::NotFound { .. }), "{err}");
}

#[test]
fn bad_magic_rejected() {
    let (store, _) = damaged_fixture(OcdbtWriterOptions::default());
    edit_file(&store, "manifest.ocdbt", |bytes| bytes[0] = 0xff);
    assert_corrupt(
        &open_and_read_all(&store),
        "manifest.ocdbt",
        "bad magic number",
    );
}

#[test]
fn unknown_version_rejected() {
    let (store, _) = damaged_fixture(OcdbtWriterOptions::default());
    edit_file(&store, "manifest.ocdbt", |bytes| {
        bytes[12] = 1;
        let len = bytes.len();
        reseal(bytes, 0, len);
    });
    assert_corrupt(
        &open_and_read_all(&store),
        "manifest.ocdbt",
        "unsupported format version 1",
    );
}

#[test]
fn unknown_compression_rejected() {
    let (store, _) = damaged_fixture(OcdbtWriterOptions::default());
    edit_file(&store, "manifest.ocdbt", |bytes| {
        bytes[13] = 2;
        let len = bytes.len();
        reseal(bytes, 0, len);
    });
    assert_corrupt(
        &open_and_read_all(&store),
        "manifest.ocdbt",
        "unknown compression method 2",
    );
}

#[test]
fn node_above_size_limit_rejected() {
    // Written with max_decoded_node_bytes 16383 (varint ff 7f), then the
    // manifest is edited to say 128 (varint 80 01), below the node's size.
    let mut options = uncompressed();
    options.max_decoded_node_bytes = 16383;
    let (store, data_file) = damaged_fixture(options);
    edit_file(&store, "manifest.ocdbt", |bytes| {
        // Header (14 bytes), uuid (16), manifest kind (1), then
        // max_inline_value_bytes 1024 (varint 80 08).
        let at = 14 + 16 + 1 + 2;
        assert_eq!(&bytes[at..at + 2], &[0xff, 0x7f]);
        bytes[at..at + 2].copy_from_slice(&[0x80, 0x01]);
        let len = bytes.len();
        reseal(bytes, 0, len);
    });
    assert_corrupt(&open_and_read_all(&store), &data_file, "decoded size");
}

#[test]
fn prefix_longer_than_previous_key_rejected() {
    // One uncompressed leaf of inline values: body = height 0, empty data
    // file table, entry count, then the key prefix lengths.
    let store = memory_store();
    let entries = BTreeMap::from([("abc".to_owned(), vec![1]), ("abd".to_owned(), vec![2])]);
    write_database(&store, uncompressed(), &entries);
    let data_file = store
        .list()
        .unwrap()
        .into_iter()
        .find(|key| key.starts_with("d/"))
        .unwrap();
    edit_file(&store, &data_file, |bytes| {
        // Header: 4 magic + 8 length + version + compression.
        let body = 14;
        assert_eq!(
            &bytes[body..body + 4],
            &[0, 0, 2, 2],
            "height, table, count, prefix length"
        );
        bytes[body + 3] = 9;
        let len = bytes.len();
        reseal(bytes, 0, len);
    });
    let reader = OcdbtReader::open(store).unwrap();
    let err = reader.read("abc").unwrap_err();
    assert_corrupt(&err, &data_file, "key_prefix_length[1] is 9");
}

#[test]
fn entry_count_beyond_node_rejected() {
    let store = memory_store();
    let entries = BTreeMap::from([("abc".to_owned(), vec![1]), ("abd".to_owned(), vec![2])]);
    write_database(&store, uncompressed(), &entries);
    let data_file = store
        .list()
        .unwrap()
        .into_iter()
        .find(|key| key.starts_with("d/"))
        .unwrap();
    edit_file(&store, &data_file, |bytes| {
        bytes[14 + 2] = 0x7f;
        let len = bytes.len();
        reseal(bytes, 0, len);
    });
    let reader = OcdbtReader::open(store).unwrap();
    let err = reader.read("abc").unwrap_err();
    assert_corrupt(&err, &data_file, "entry count");
}
