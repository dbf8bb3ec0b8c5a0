//! Input layouts and in-memory stores shared by ckpt's fuzz targets.
//!
//! Each target in `fuzz_targets/` passes the bytes libFuzzer generates to one
//! parser of on-disk data and checks nothing beyond what libFuzzer itself
//! detects: a panic, a hang or a large allocation. Parsers must return errors
//! on bad input.
//!
//! Targets that need more than one file, or a few options, read them from
//! one input with the `split_*` functions here. `examples/make_seeds.rs`
//! writes seed inputs in the same layouts with the `join_*` functions, from
//! the Orbax checkpoints in `testdata/`.

use std::{collections::BTreeSet, fmt, ops::Range};

use bytes::Bytes;
use ckpt_core::{num_bytes, DType, IndexBox};
use ckpt_storage::{Backend, Capabilities, KvStore, StorageError};

/// Bytes of the OCDBT envelope fields that [`repair_envelope`] rewrites and
/// checks for: a 4-byte magic number, an 8-byte length and a 4-byte CRC-32C.
const ENVELOPE_FIXED_BYTES: usize = 16;

/// Splits `data` into two parts.
///
/// The layout is a little-endian `u16` length `n`, then the first part (`n`
/// bytes, or fewer when the input ends first), then the second part. Every
/// input splits, so the fuzzer never wastes a run on a layout error.
pub fn split_two(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((length, rest)) = data.split_first_chunk::<2>() else {
        return (data, &[]);
    };
    let length = usize::from(u16::from_le_bytes(*length)).min(rest.len());
    rest.split_at(length)
}

/// Joins two parts in the layout [`split_two`] reads, or returns `None` when
/// the first part is longer than `u16::MAX` bytes.
pub fn join_two(first: &[u8], second: &[u8]) -> Option<Vec<u8>> {
    let length = u16::try_from(first.len()).ok()?;
    let mut data = length.to_le_bytes().to_vec();
    data.extend_from_slice(first);
    data.extend_from_slice(second);
    Some(data)
}

/// Options that the first byte of an OCDBT input selects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OcdbtMode {
    /// Rewrite the length header and CRC-32C of each envelope before decoding
    /// (bit 0), so that mutated bytes reach the decoders behind the checksum.
    pub repair: bool,
    /// Decode the body alone, skipping the envelope (bit 1), where the target
    /// has a body decoder.
    pub body_only: bool,
}

impl OcdbtMode {
    const REPAIR_BIT: u8 = 1;
    const BODY_ONLY_BIT: u8 = 2;

    /// Returns the byte that selects these options.
    pub const fn to_byte(self) -> u8 {
        let mut byte = 0;
        if self.repair {
            byte |= Self::REPAIR_BIT;
        }
        if self.body_only {
            byte |= Self::BODY_ONLY_BIT;
        }
        byte
    }
}

/// Splits the options byte off the front of an OCDBT input. An empty input
/// selects no options.
pub fn split_mode(data: &[u8]) -> (OcdbtMode, &[u8]) {
    let Some((&byte, rest)) = data.split_first() else {
        return (OcdbtMode::default(), data);
    };
    let mode = OcdbtMode {
        repair: byte & OcdbtMode::REPAIR_BIT != 0,
        body_only: byte & OcdbtMode::BODY_ONLY_BIT != 0,
    };
    (mode, rest)
}

/// Splits a path off the front of `data`: one length byte `n`, then `n`
/// bytes of path (or fewer when the input ends first), then the rest.
pub fn split_path(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&length, rest)) = data.split_first() else {
        return (data, &[]);
    };
    rest.split_at(usize::from(length).min(rest.len()))
}

/// Joins a path and the rest in the layout [`split_path`] reads, or returns
/// `None` when the path is longer than 255 bytes.
pub fn join_path(path: &[u8], rest: &[u8]) -> Option<Vec<u8>> {
    let length = u8::try_from(path.len()).ok()?;
    let mut data = vec![length];
    data.extend_from_slice(path);
    data.extend_from_slice(rest);
    Some(data)
}

/// Returns `encoded` with a correct length header and CRC-32C, the fields an
/// OCDBT envelope checks before anything else.
///
/// Mutations rarely keep a CRC-32C valid, so without this step nearly every
/// fuzzed node or manifest would stop at the checksum. Inputs shorter than
/// the fixed envelope fields are returned unchanged.
pub fn repair_envelope(encoded: &[u8]) -> Vec<u8> {
    let mut repaired = encoded.to_vec();
    let length = repaired.len();
    if length < ENVELOPE_FIXED_BYTES {
        return repaired;
    }
    repaired[4..12].copy_from_slice(&(length as u64).to_le_bytes());
    let checksum = crc32c::crc32c(&repaired[..length - 4]);
    repaired[length - 4..].copy_from_slice(&checksum.to_le_bytes());
    repaired
}

/// Chunks that [`region_to_read`] spans along the first and second
/// dimensions. It spans one chunk along each other dimension.
const CHUNKS_PER_DIM: [u64; 2] = [4, 2];

/// Returns the region a zarr target reads from an array of `shape` stored in
/// chunks of `chunks`, or `None` when the ranks differ.
///
/// The region starts at the origin and spans up to 4 chunks along the first
/// dimension, 2 along the second and 1 along each other, so a read decodes
/// at most 8 chunks. When that region has more than `max_bytes`, the region
/// is the first element alone, which still decodes one whole chunk.
pub fn region_to_read(
    shape: &[u64],
    chunks: &[u64],
    dtype: DType,
    max_bytes: u64,
) -> Option<IndexBox> {
    if shape.len() != chunks.len() {
        return None;
    }
    let stop: Vec<u64> = shape
        .iter()
        .zip(chunks)
        .enumerate()
        .map(|(dim, (&extent, &chunk))| {
            let count = CHUNKS_PER_DIM.get(dim).copied().unwrap_or(1);
            extent.min(chunk.saturating_mul(count))
        })
        .collect();
    let fits = num_bytes(&stop, dtype).is_ok_and(|bytes| bytes <= max_bytes);
    let stop = if fits { stop } else { vec![1; shape.len()] };
    IndexBox::new(vec![0; shape.len()], stop).ok()
}

/// A read-only [`KvStore`] that contains one array metadata document, as
/// `.zarray` (zarr v2) and `zarr.json` (zarr v3), and returns the same
/// chunk bytes for every other key.
///
/// Serving every chunk key lets a fuzzed metadata document with any chunk
/// grid reach the chunk decoder.
#[derive(Debug)]
pub struct OneChunkKvStore {
    metadata: Bytes,
    chunk: Bytes,
}

impl OneChunkKvStore {
    /// Creates the store from the metadata document and the stored chunk.
    pub fn new(metadata: &[u8], chunk: &[u8]) -> OneChunkKvStore {
        OneChunkKvStore {
            metadata: Bytes::copy_from_slice(metadata),
            chunk: Bytes::copy_from_slice(chunk),
        }
    }
}

impl KvStore for OneChunkKvStore {
    fn url(&self) -> String {
        "memory://fuzz".to_owned()
    }

    fn read(&self, key: &str) -> ckpt_storage::Result<Option<Bytes>> {
        let name = key.rsplit('/').next().unwrap_or(key);
        if name == ".zarray" || name == "zarr.json" {
            Ok(Some(self.metadata.clone()))
        } else {
            Ok(Some(self.chunk.clone()))
        }
    }

    fn write(&self, _key: &str, _value: Bytes) -> ckpt_storage::Result<()> {
        Err(read_only("memory://fuzz"))
    }
}

/// The `manifest.ocdbt` key and the numbered manifest that [`OcdbtBackend`] lists.
const MANIFEST_KEYS: [&str; 2] = ["manifest.0000000000000001", "manifest.ocdbt"];

/// A read-only [`Backend`] over one OCDBT manifest and one data file.
///
/// `manifest.ocdbt` and the numbered manifest `manifest.0000000000000001`
/// both contain the manifest, so either manifest kind finds its versions.
/// Every other key contains the data file, so any data file path a fuzzed
/// manifest or node names can be read. With `repair` set, every ranged read
/// of the data file comes back as a repaired envelope (see
/// [`repair_envelope`]), so fuzzed nodes get past their checksums. Ranged
/// reads of out-of-line values are repaired too, which only changes their bytes.
pub struct OcdbtBackend {
    manifest: Bytes,
    data_file: Bytes,
    repair: bool,
}

impl OcdbtBackend {
    /// Creates the backend. With `repair` set, it repairs the manifest once, here.
    pub fn new(manifest: &[u8], data_file: &[u8], repair: bool) -> OcdbtBackend {
        let manifest = if repair {
            Bytes::from(repair_envelope(manifest))
        } else {
            Bytes::copy_from_slice(manifest)
        };
        OcdbtBackend {
            manifest,
            data_file: Bytes::copy_from_slice(data_file),
            repair,
        }
    }

    fn object(&self, key: &str) -> &Bytes {
        if MANIFEST_KEYS.contains(&key) {
            &self.manifest
        } else {
            &self.data_file
        }
    }
}

impl fmt::Debug for OcdbtBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OcdbtBackend")
            .field("manifest_bytes", &self.manifest.len())
            .field("data_file_bytes", &self.data_file.len())
            .field("repair", &self.repair)
            .finish()
    }
}

impl Backend for OcdbtBackend {
    fn url(&self) -> String {
        "memory://fuzz".to_owned()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    fn get(&self, key: &str) -> ckpt_storage::Result<Option<Bytes>> {
        Ok(Some(self.object(key).clone()))
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> ckpt_storage::Result<Option<Bytes>> {
        let object = self.object(key);
        let size = object.len() as u64;
        if range.start > range.end || range.end > size {
            return Err(StorageError::InvalidRange {
                store: self.url(),
                key: key.to_owned(),
                start: range.start,
                end: range.end,
                size,
            });
        }
        // The check above bounds both ends by the object's length, a usize.
        let bytes = object.slice(range.start as usize..range.end as usize);
        if self.repair && !MANIFEST_KEYS.contains(&key) {
            return Ok(Some(Bytes::from(repair_envelope(&bytes))));
        }
        Ok(Some(bytes))
    }

    fn put(&self, _key: &str, _value: Bytes) -> ckpt_storage::Result<()> {
        Err(read_only(&self.url()))
    }

    fn put_if_absent(&self, _key: &str, _value: Bytes) -> ckpt_storage::Result<()> {
        Err(read_only(&self.url()))
    }

    fn size(&self, key: &str) -> ckpt_storage::Result<Option<u64>> {
        Ok(Some(self.object(key).len() as u64))
    }

    fn list(&self, prefix: &str) -> ckpt_storage::Result<Vec<String>> {
        Ok(MANIFEST_KEYS
            .iter()
            .filter(|key| key.starts_with(prefix))
            .map(|key| (*key).to_owned())
            .collect())
    }

    fn list_dirs(&self, prefix: &str) -> ckpt_storage::Result<Vec<String>> {
        // Every listed key is a file at the root, so no key has a directory below `prefix`.
        let dirs: BTreeSet<String> = self
            .list(prefix)?
            .iter()
            .filter_map(|key| {
                let (dir, _) = key[prefix.len()..].split_once('/')?;
                Some(format!("{prefix}{dir}"))
            })
            .collect();
        Ok(dirs.into_iter().collect())
    }

    fn delete_prefix(&self, _prefix: &str) -> ckpt_storage::Result<()> {
        Err(read_only(&self.url()))
    }

    fn rename_dir(&self, _from: &str, _to: &str) -> ckpt_storage::Result<()> {
        Err(read_only(&self.url()))
    }
}

fn read_only(store: &str) -> StorageError {
    StorageError::Unsupported {
        store: store.to_owned(),
        operation: "writes to a fuzz input",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_two_round_trip() {
        let data = join_two(b"first", b"second").unwrap();
        assert_eq!(split_two(&data), (&b"first"[..], &b"second"[..]));
    }

    #[test]
    fn split_two_short_input() {
        assert_eq!(split_two(&[7]), (&[7u8][..], &[][..]));
        assert_eq!(split_two(&[9, 0, 1, 2]), (&[1u8, 2][..], &[][..]));
    }

    #[test]
    fn split_path_round_trip() {
        let data = join_path(b"ocdbt.process_0/", b"node").unwrap();
        assert_eq!(split_path(&data), (&b"ocdbt.process_0/"[..], &b"node"[..]));
    }

    #[test]
    fn mode_round_trip() {
        for byte in 0..4u8 {
            let data = [byte, 5];
            let (mode, rest) = split_mode(&data);
            assert_eq!(mode.to_byte(), byte);
            assert_eq!(rest, [5]);
        }
    }

    #[test]
    fn repair_envelope_fixes_fields() {
        let mut encoded = vec![0u8; 20];
        encoded[12] = 3;
        let repaired = repair_envelope(&encoded);
        assert_eq!(repaired[4..12], 20u64.to_le_bytes());
        let checksum = crc32c::crc32c(&repaired[..16]);
        assert_eq!(repaired[16..], checksum.to_le_bytes());
        assert_eq!(repaired[12], 3);
    }

    #[test]
    fn region_spans_leading_chunks() {
        let region = region_to_read(&[10, 10, 10], &[2, 3, 4], DType::UInt8, 1 << 20).unwrap();
        assert_eq!(region.stop(), [8, 6, 4]);
    }

    #[test]
    fn region_clipped_to_shape() {
        let region = region_to_read(&[3, 1], &[2, 3], DType::UInt8, 1 << 20).unwrap();
        assert_eq!(region.stop(), [3, 1]);
    }

    #[test]
    fn region_over_budget_is_one_element() {
        let region = region_to_read(&[1 << 20], &[1 << 20], DType::Float32, 1024).unwrap();
        assert_eq!(region.stop(), [1]);
    }

    #[test]
    fn region_rank_mismatch() {
        assert!(region_to_read(&[4], &[2, 2], DType::UInt8, 1024).is_none());
    }

    #[test]
    fn kv_store_serves_metadata_and_chunk() {
        let kv = OneChunkKvStore::new(b"{}", b"chunk");
        assert_eq!(kv.read("a/zarr.json").unwrap().unwrap(), "{}");
        assert_eq!(kv.read(".zarray").unwrap().unwrap(), "{}");
        assert_eq!(kv.read("a/c/0/1").unwrap().unwrap(), "chunk");
    }

    #[test]
    fn backend_range_past_end() {
        let backend = OcdbtBackend::new(b"m", b"data", false);
        assert!(backend.get_range("d/x", 2..5).is_err());
        assert_eq!(backend.get_range("d/x", 1..3).unwrap().unwrap(), "at");
    }
}
