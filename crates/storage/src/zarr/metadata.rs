use ckpt_core::{num_bytes, num_bytes_usize, ChunkGrid, DType};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{Result, StorageError};

/// Maximum size in bytes of a `.zarray` document that [`ZarrV2Metadata::parse`] accepts.
///
/// Orbax writes about 170 bytes; a 64-dimensional array with 20-digit
/// extents needs under 3 KiB.
pub const MAX_ZARRAY_BYTES: usize = 64 * 1024;

/// The fields of a zarr v2 `.zarray` document, a superset of what Orbax writes.
const KNOWN_FIELDS: [&str; 9] = [
    "chunks",
    "compressor",
    "dimension_separator",
    "dtype",
    "fill_value",
    "filters",
    "order",
    "shape",
    "zarr_format",
];

/// The compressor of a zarr v2 array's chunks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZarrCompressor {
    /// One zstd frame per chunk, with the decompressed size in its header.
    Zstd {
        /// The zstd compression level; Orbax writes 1.
        level: i32,
    },
}

/// The metadata of a zarr v2 array (its `.zarray` document), as Orbax writes it.
///
/// Only the form Orbax and TensorStore write is supported: C order, `"."`
/// between chunk indices, no filters, a `null` fill value (missing chunks
/// read as zeros) and zstd or no compression. Construction checks the
/// chunk shape and that the byte sizes of the array and of one chunk fit in
/// 64 bits and in memory addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZarrV2Metadata {
    /// The array shape and chunk shape, checked to have equal ranks and no zero chunk extent.
    grid: ChunkGrid,
    dtype: DType,
    compressor: Option<ZarrCompressor>,
    chunk_num_bytes: usize,
}

/// The `.zarray` document, with fields in the sorted order Orbax writes.
#[derive(Serialize)]
struct ZarrayDocument<'a> {
    chunks: &'a [u64],
    compressor: Option<CompressorDocument>,
    dimension_separator: &'static str,
    dtype: &'static str,
    fill_value: Option<()>,
    filters: Option<()>,
    order: &'static str,
    shape: &'a [u64],
    zarr_format: u8,
}

#[derive(Serialize)]
struct CompressorDocument {
    id: &'static str,
    level: i32,
}

impl ZarrV2Metadata {
    /// Creates the metadata of an array of `shape` stored in chunks of `chunks`.
    ///
    /// Fails when the ranks differ, a chunk extent is zero, or the byte size
    /// of the array or of one chunk overflows.
    pub fn new(
        shape: Vec<u64>,
        chunks: Vec<u64>,
        dtype: DType,
        compressor: Option<ZarrCompressor>,
    ) -> Result<ZarrV2Metadata> {
        let grid = ChunkGrid::new(&shape, &chunks)?;
        num_bytes(&shape, dtype)?;
        let chunk_num_bytes = num_bytes_usize(&chunks, dtype)?;
        if let Some(ZarrCompressor::Zstd { level }) = compressor {
            check_zstd_level(level).map_err(|reason| StorageError::InvalidMetadata {
                key: ".zarray".to_owned(),
                reason,
            })?;
        }
        Ok(ZarrV2Metadata {
            grid,
            dtype,
            compressor,
            chunk_num_bytes,
        })
    }

    /// Parses and validates a `.zarray` document read from `key`, which error messages name.
    ///
    /// Rejects documents over [`MAX_ZARRAY_BYTES`], unknown fields, and every
    /// value outside the supported form with [`StorageError::InvalidMetadata`].
    pub fn parse(document: &[u8], key: &str) -> Result<ZarrV2Metadata> {
        let invalid = |reason: String| StorageError::InvalidMetadata {
            key: key.to_owned(),
            reason,
        };
        if document.len() > MAX_ZARRAY_BYTES {
            return Err(invalid(format!(
                "the document has {} bytes, more than the maximum of {MAX_ZARRAY_BYTES} for a .zarray",
                document.len()
            )));
        }
        let value: Value = serde_json::from_slice(document)
            .map_err(|error| invalid(format!("not valid JSON: {error}")))?;
        let Value::Object(fields) = value else {
            return Err(invalid("expected a JSON object".to_owned()));
        };
        parse_fields(&fields).map_err(invalid)
    }

    /// Serializes the metadata as Orbax does: compact JSON with sorted keys.
    pub fn to_json(&self) -> Vec<u8> {
        let document = ZarrayDocument {
            chunks: self.grid.chunk_shape(),
            compressor: self
                .compressor
                .map(|ZarrCompressor::Zstd { level }| CompressorDocument { id: "zstd", level }),
            dimension_separator: ".",
            dtype: self.dtype.zarr_v2_name(),
            fill_value: None,
            filters: None,
            order: "C",
            shape: self.grid.shape(),
            zarr_format: 2,
        };
        // serde_json fails only on maps with non-string keys and on custom
        // `Serialize` errors, and this struct of slices, strings and integers has neither.
        serde_json::to_vec(&document).unwrap_or_default()
    }

    /// Returns the array shape.
    pub fn shape(&self) -> &[u64] {
        self.grid.shape()
    }

    /// Returns the chunk shape. Edge chunks have this full shape too, past the array's end.
    pub fn chunks(&self) -> &[u64] {
        self.grid.chunk_shape()
    }

    /// Returns the element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Returns the chunk compressor, or `None` for chunks stored raw.
    pub fn compressor(&self) -> Option<ZarrCompressor> {
        self.compressor
    }

    /// Returns the byte size of one decoded chunk.
    pub fn chunk_num_bytes(&self) -> usize {
        self.chunk_num_bytes
    }

    /// Returns the grid of chunks over the array.
    pub fn chunk_grid(&self) -> &ChunkGrid {
        &self.grid
    }

    /// Returns the key of a chunk relative to the array: indices joined by `.`, or `0` for 0-d arrays.
    pub fn chunk_key(chunk_index: &[u64]) -> String {
        if chunk_index.is_empty() {
            return "0".to_owned();
        }
        let parts: Vec<String> = chunk_index.iter().map(u64::to_string).collect();
        parts.join(".")
    }
}

/// Checks every field of a `.zarray` object and builds the metadata; the error is the reason.
fn parse_fields(fields: &Map<String, Value>) -> std::result::Result<ZarrV2Metadata, String> {
    if let Some(unknown) = fields
        .keys()
        .find(|name| !KNOWN_FIELDS.contains(&name.as_str()))
    {
        return Err(format!(
            "unknown field {unknown:?}: a zarr v2 .zarray has only {}",
            KNOWN_FIELDS.join(", ")
        ));
    }
    let required = |name: &str| {
        fields
            .get(name)
            .ok_or_else(|| format!("missing field {name:?}"))
    };

    let format = required("zarr_format")?;
    if format.as_u64() != Some(2) {
        return Err(format!("zarr_format is {format}, expected 2 for a .zarray"));
    }
    let shape = parse_extents(required("shape")?, "shape")?;
    let chunks = parse_extents(required("chunks")?, "chunks")?;
    let dtype = match required("dtype")? {
        Value::String(name) => DType::from_zarr_v2(name).map_err(|error| error.to_string())?,
        other => {
            return Err(format!(
                "dtype is {other}, expected a string such as \"<f4\""
            ))
        }
    };
    let compressor = parse_compressor(required("compressor")?)?;
    match required("order")? {
        Value::String(order) if order == "C" => {}
        other => {
            return Err(format!(
                "order is {other}, but ckpt reads only C order (\"C\")"
            ))
        }
    }
    match fields.get("fill_value") {
        None | Some(Value::Null) => {}
        Some(other) => {
            return Err(format!(
                "fill_value is {other}, but ckpt reads only null, which Orbax writes"
            ))
        }
    }
    match fields.get("filters") {
        None | Some(Value::Null) => {}
        Some(Value::Array(filters)) if filters.is_empty() => {}
        Some(other) => return Err(format!("filters are {other}, but ckpt reads only null")),
    }
    match fields.get("dimension_separator") {
        None => {}
        Some(Value::String(separator)) if separator == "." => {}
        Some(other) => {
            return Err(format!(
                "dimension_separator is {other}, but ckpt reads only \".\", which Orbax writes"
            ))
        }
    }

    ZarrV2Metadata::new(shape, chunks, dtype, compressor).map_err(|error| error.to_string())
}

/// Parses a `shape` or `chunks` array of non-negative integers.
fn parse_extents(value: &Value, name: &str) -> std::result::Result<Vec<u64>, String> {
    let invalid = || format!("{name} is {value}, expected an array of non-negative integers");
    let Value::Array(items) = value else {
        return Err(invalid());
    };
    items
        .iter()
        .map(|item| item.as_u64().ok_or_else(invalid))
        .collect()
}

fn parse_compressor(value: &Value) -> std::result::Result<Option<ZarrCompressor>, String> {
    let supported = "ckpt reads {\"id\":\"zstd\",\"level\":<integer>} or null";
    let object = match value {
        Value::Null => return Ok(None),
        Value::Object(object) => object,
        other => return Err(format!("compressor is {other}: {supported}")),
    };
    match object.get("id") {
        Some(Value::String(id)) if id == "zstd" => {}
        Some(Value::String(id)) => {
            return Err(format!("unsupported compressor {id:?}: {supported}"))
        }
        _ => {
            return Err(format!(
                "compressor {value} has no string \"id\": {supported}"
            ))
        }
    }
    if let Some(unknown) = object.keys().find(|name| *name != "id" && *name != "level") {
        return Err(format!("unsupported zstd option {unknown:?}: {supported}"));
    }
    let level = object
        .get("level")
        .and_then(Value::as_i64)
        .and_then(|level| i32::try_from(level).ok())
        .ok_or_else(|| format!("compressor {value} has no integer \"level\": {supported}"))?;
    check_zstd_level(level)?;
    Ok(Some(ZarrCompressor::Zstd { level }))
}

fn check_zstd_level(level: i32) -> std::result::Result<(), String> {
    let levels = zstd::compression_level_range();
    if levels.contains(&level) {
        Ok(())
    } else {
        Err(format!(
            "zstd level {level} is outside the supported range {}..={}",
            levels.start(),
            levels.end()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORBAX_KERNEL: &str = r#"{"chunks":[4,4],"compressor":{"id":"zstd","level":1},"dimension_separator":".","dtype":"<f4","fill_value":null,"filters":null,"order":"C","shape":[16,8],"zarr_format":2}"#;

    fn parse(document: &str) -> Result<ZarrV2Metadata> {
        ZarrV2Metadata::parse(document.as_bytes(), "a/.zarray")
    }

    /// Returns the Orbax kernel document with one field replaced by `value`, or removed when `None`.
    fn with_field(name: &str, value: Option<&str>) -> String {
        let mut fields: Map<String, Value> = serde_json::from_str(ORBAX_KERNEL).unwrap();
        match value {
            Some(value) => fields.insert(name.to_owned(), serde_json::from_str(value).unwrap()),
            None => fields.remove(name),
        };
        serde_json::to_string(&fields).unwrap()
    }

    fn reason_of(result: Result<ZarrV2Metadata>) -> String {
        match result {
            Err(StorageError::InvalidMetadata { key, reason }) => {
                assert_eq!(key, "a/.zarray");
                reason
            }
            other => panic!("expected InvalidMetadata, got {other:?}"),
        }
    }

    #[test]
    fn orbax_document_round_trips() {
        let metadata = parse(ORBAX_KERNEL).unwrap();
        assert_eq!(metadata.shape(), [16, 8]);
        assert_eq!(metadata.chunks(), [4, 4]);
        assert_eq!(metadata.dtype(), DType::Float32);
        assert_eq!(
            metadata.compressor(),
            Some(ZarrCompressor::Zstd { level: 1 })
        );
        assert_eq!(metadata.chunk_num_bytes(), 64);
        assert_eq!(String::from_utf8(metadata.to_json()).unwrap(), ORBAX_KERNEL);
    }

    #[test]
    fn new_serializes_like_orbax() {
        let metadata = ZarrV2Metadata::new(vec![], vec![], DType::Int64, None).unwrap();
        let expected = r#"{"chunks":[],"compressor":null,"dimension_separator":".","dtype":"<i8","fill_value":null,"filters":null,"order":"C","shape":[],"zarr_format":2}"#;
        assert_eq!(String::from_utf8(metadata.to_json()).unwrap(), expected);
    }

    #[test]
    fn optional_fields_default() {
        let document = with_field("fill_value", None);
        let document = document.replace(r#","dimension_separator":".""#, "");
        assert!(!document.contains("dimension_separator"));
        let metadata = parse(&document).unwrap();
        assert_eq!(metadata.shape(), [16, 8]);
        assert!(parse(&with_field("filters", Some("[]"))).is_ok());
    }

    #[test]
    fn unknown_dtype_is_rejected() {
        let reason = reason_of(parse(&with_field("dtype", Some(r#"">f4""#))));
        assert!(reason.contains("\">f4\""), "{reason}");
        let reason = reason_of(parse(&with_field("dtype", Some(r#"[["a","<f4"]]"#))));
        assert!(reason.contains("expected a string"), "{reason}");
    }

    #[test]
    fn overflowing_shape_is_rejected() {
        let document = with_field("shape", Some("[18446744073709551615,2]"));
        let document = document.replace(r#""chunks":[4,4]"#, r#""chunks":[1,1]"#);
        let reason = reason_of(parse(&document));
        assert!(reason.contains("too large"), "{reason}");
    }

    #[test]
    fn overflowing_chunk_is_rejected() {
        let document = with_field("chunks", Some("[4611686018427387904,2]"));
        let reason = reason_of(parse(&document));
        assert!(reason.contains("too large"), "{reason}");
    }

    #[test]
    fn chunk_rank_mismatch_is_rejected() {
        let reason = reason_of(parse(&with_field("chunks", Some("[4]"))));
        assert!(reason.contains("chunk shape"), "{reason}");
    }

    #[test]
    fn zero_chunk_extent_is_rejected() {
        let reason = reason_of(parse(&with_field("chunks", Some("[4,0]"))));
        assert!(reason.contains("at least 1"), "{reason}");
    }

    #[test]
    fn negative_extent_is_rejected() {
        let reason = reason_of(parse(&with_field("shape", Some("[-1,8]"))));
        assert!(reason.contains("non-negative integers"), "{reason}");
    }

    #[test]
    fn zarr_v3_format_is_rejected() {
        let reason = reason_of(parse(&with_field("zarr_format", Some("3"))));
        assert!(reason.contains("expected 2"), "{reason}");
    }

    #[test]
    fn fortran_order_is_rejected() {
        let reason = reason_of(parse(&with_field("order", Some(r#""F""#))));
        assert!(reason.contains("C order"), "{reason}");
    }

    #[test]
    fn other_compressors_are_rejected() {
        let blosc = r#"{"id":"blosc","cname":"lz4","clevel":5,"shuffle":1}"#;
        let reason = reason_of(parse(&with_field("compressor", Some(blosc))));
        assert!(
            reason.contains("unsupported compressor \"blosc\""),
            "{reason}"
        );
        let no_level = r#"{"id":"zstd"}"#;
        let reason = reason_of(parse(&with_field("compressor", Some(no_level))));
        assert!(reason.contains("level"), "{reason}");
        let checksum = r#"{"id":"zstd","level":1,"checksum":true}"#;
        let reason = reason_of(parse(&with_field("compressor", Some(checksum))));
        assert!(reason.contains("\"checksum\""), "{reason}");
        let level = r#"{"id":"zstd","level":1000}"#;
        let reason = reason_of(parse(&with_field("compressor", Some(level))));
        assert!(reason.contains("1000"), "{reason}");
    }

    #[test]
    fn fill_value_must_be_null() {
        let reason = reason_of(parse(&with_field("fill_value", Some("0"))));
        assert!(reason.contains("fill_value"), "{reason}");
    }

    #[test]
    fn filters_must_be_empty() {
        let filters = r#"[{"id":"delta","dtype":"<f4"}]"#;
        let reason = reason_of(parse(&with_field("filters", Some(filters))));
        assert!(reason.contains("filters"), "{reason}");
    }

    #[test]
    fn slash_separator_is_rejected() {
        let reason = reason_of(parse(&with_field("dimension_separator", Some(r#""/""#))));
        assert!(reason.contains("dimension_separator"), "{reason}");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let reason = reason_of(parse(&with_field("attributes", Some("{}"))));
        assert!(reason.contains("\"attributes\""), "{reason}");
    }

    #[test]
    fn missing_field_is_rejected() {
        let reason = reason_of(parse(&with_field("dtype", None)));
        assert!(reason.contains("missing field \"dtype\""), "{reason}");
    }

    #[test]
    fn malformed_json_is_rejected() {
        let reason = reason_of(parse("{\"chunks\":"));
        assert!(reason.contains("not valid JSON"), "{reason}");
        let reason = reason_of(parse("[1,2]"));
        assert!(reason.contains("JSON object"), "{reason}");
    }

    #[test]
    fn oversized_document_is_rejected() {
        let document = format!("{ORBAX_KERNEL}{}", " ".repeat(MAX_ZARRAY_BYTES));
        let reason = reason_of(parse(&document));
        assert!(reason.contains("maximum"), "{reason}");
    }

    #[test]
    fn chunk_keys() {
        assert_eq!(ZarrV2Metadata::chunk_key(&[]), "0");
        assert_eq!(ZarrV2Metadata::chunk_key(&[3]), "3");
        assert_eq!(ZarrV2Metadata::chunk_key(&[1, 0, 12]), "1.0.12");
    }
}
