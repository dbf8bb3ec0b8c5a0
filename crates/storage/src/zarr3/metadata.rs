use ckpt_core::{num_bytes, num_bytes_usize, ChunkGrid, DType};
use serde::Serialize;

use super::parse::{check_zstd_level, parse_document};
use crate::{Result, StorageError};

/// Maximum size in bytes of a `zarr.json` document that [`ZarrV3Metadata::parse`] accepts.
///
/// Orbax writes about 500 bytes. A 64-dimensional array with 20-digit
/// extents in the shape and both chunk shapes needs an estimated 4.5 KiB.
pub const MAX_ZARR_JSON_BYTES: usize = 64 * 1024;

/// The compression of the chunks inside a zarr v3 array's shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ZarrV3Compressor {
    /// The `zstd` codec: one zstd frame per chunk, with the decompressed
    /// size in its header.
    Zstd {
        /// The zstd compression level. Orbax writes 3.
        level: i32,
        /// Whether each frame ends with a checksum of its content. Orbax writes `false`.
        checksum: bool,
    },
}

/// The metadata of a zarr v3 array (its `zarr.json` document), as Orbax writes it.
///
/// Only the form that Orbax 0.12 writes through TensorStore is supported: a
/// regular chunk grid, the default chunk key encoding (`c/0/1`), and one
/// `sharding_indexed` codec whose single inner chunk is the whole shard.
/// The inner chunk is stored little-endian, then zstd-compressed or raw, and
/// the shard index ends the shard and carries a CRC-32C. The fill value is
/// the dtype's zero, so missing chunks read as zeros. Construction checks the
/// chunk shape and that the byte sizes of the array and of one chunk fit in
/// 64 bits and in memory addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZarrV3Metadata {
    /// The array shape and chunk shape, checked to have equal ranks and no zero chunk extent.
    grid: ChunkGrid,
    dtype: DType,
    compressor: Option<ZarrV3Compressor>,
    chunk_num_bytes: usize,
}

impl ZarrV3Metadata {
    /// Creates the metadata of an array of `shape` stored in chunks of `chunks`.
    ///
    /// Fails when the ranks differ, a chunk extent is zero, the byte size of
    /// the array or of one chunk overflows, or the zstd level is outside
    /// the range that the linked zstd library accepts.
    pub fn new(
        shape: Vec<u64>,
        chunks: Vec<u64>,
        dtype: DType,
        compressor: Option<ZarrV3Compressor>,
    ) -> Result<ZarrV3Metadata> {
        let grid = ChunkGrid::new(&shape, &chunks)?;
        num_bytes(&shape, dtype)?;
        let chunk_num_bytes = num_bytes_usize(&chunks, dtype)?;
        if let Some(ZarrV3Compressor::Zstd { level, .. }) = compressor {
            check_zstd_level(level).map_err(|reason| StorageError::InvalidMetadata {
                key: "zarr.json".to_owned(),
                reason,
            })?;
        }
        Ok(ZarrV3Metadata {
            grid,
            dtype,
            compressor,
            chunk_num_bytes,
        })
    }

    /// Parses and validates a `zarr.json` document read from `key`, which error messages name.
    ///
    /// Rejects documents over [`MAX_ZARR_JSON_BYTES`], unknown fields, and
    /// every value outside the supported form with
    /// [`StorageError::InvalidMetadata`]. The optional `attributes` and
    /// `dimension_names` fields are checked and then dropped, so
    /// [`ZarrV3Metadata::to_json`] does not write them back.
    pub fn parse(document: &[u8], key: &str) -> Result<ZarrV3Metadata> {
        parse_document(document).map_err(|reason| StorageError::InvalidMetadata {
            key: key.to_owned(),
            reason,
        })
    }

    /// Serializes the metadata as Orbax does: compact JSON with sorted keys.
    pub fn to_json(&self) -> Vec<u8> {
        let chunk_shape = self.grid.chunk_shape();
        let mut inner_codecs = vec![bytes_codec(self.dtype)];
        if let Some(ZarrV3Compressor::Zstd { level, checksum }) = self.compressor {
            inner_codecs.push(CodecDocument {
                configuration: Some(CodecConfiguration::Zstd { checksum, level }),
                name: "zstd",
            });
        }
        let sharding = CodecDocument {
            configuration: Some(CodecConfiguration::Sharding {
                chunk_shape,
                codecs: inner_codecs,
                index_codecs: vec![
                    CodecDocument {
                        configuration: Some(CodecConfiguration::Bytes { endian: "little" }),
                        name: "bytes",
                    },
                    CodecDocument {
                        configuration: None,
                        name: "crc32c",
                    },
                ],
            }),
            name: "sharding_indexed",
        };
        let document = ZarrJsonDocument {
            chunk_grid: ChunkGridDocument {
                configuration: ChunkShapeDocument { chunk_shape },
                name: "regular",
            },
            chunk_key_encoding: ChunkKeyEncodingDocument { name: "default" },
            codecs: vec![sharding],
            data_type: self.dtype.name(),
            fill_value: zero_fill_value(self.dtype),
            node_type: "array",
            shape: self.grid.shape(),
            zarr_format: 3,
        };
        // serde_json fails only on maps with non-string keys and on custom
        // `Serialize` errors, and these structs of slices, strings and numbers have neither.
        serde_json::to_vec(&document).unwrap_or_default()
    }

    /// Returns the array shape.
    pub fn shape(&self) -> &[u64] {
        self.grid.shape()
    }

    /// Returns the chunk shape, which is also the shard shape. Edge chunks
    /// have this full shape too, past the array's end.
    pub fn chunks(&self) -> &[u64] {
        self.grid.chunk_shape()
    }

    /// Returns the element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Returns the chunk compressor, or `None` for chunks stored raw.
    pub fn compressor(&self) -> Option<ZarrV3Compressor> {
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

    /// Returns the key of a chunk relative to the array: `c/` followed by
    /// the indices joined by `/`, or `c` for 0-d arrays.
    pub fn chunk_key(chunk_index: &[u64]) -> String {
        let mut key = String::from("c");
        for index in chunk_index {
            key.push('/');
            key.push_str(&index.to_string());
        }
        key
    }
}

/// The `zarr.json` document. Fields of this struct and of the structs it
/// contains are declared in sorted order, which is the order Orbax writes.
#[derive(Serialize)]
struct ZarrJsonDocument<'a> {
    chunk_grid: ChunkGridDocument<'a>,
    chunk_key_encoding: ChunkKeyEncodingDocument,
    codecs: Vec<CodecDocument<'a>>,
    data_type: &'static str,
    fill_value: FillValueDocument,
    node_type: &'static str,
    shape: &'a [u64],
    zarr_format: u8,
}

#[derive(Serialize)]
struct ChunkGridDocument<'a> {
    configuration: ChunkShapeDocument<'a>,
    name: &'static str,
}

#[derive(Serialize)]
struct ChunkShapeDocument<'a> {
    chunk_shape: &'a [u64],
}

#[derive(Serialize)]
struct ChunkKeyEncodingDocument {
    name: &'static str,
}

#[derive(Serialize)]
struct CodecDocument<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    configuration: Option<CodecConfiguration<'a>>,
    name: &'static str,
}

#[derive(Serialize)]
#[serde(untagged)]
enum CodecConfiguration<'a> {
    Bytes {
        endian: &'static str,
    },
    Zstd {
        checksum: bool,
        level: i32,
    },
    Sharding {
        chunk_shape: &'a [u64],
        codecs: Vec<CodecDocument<'a>>,
        index_codecs: Vec<CodecDocument<'a>>,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum FillValueDocument {
    Bool(bool),
    Integer(u8),
    Float(f64),
    Complex([f64; 2]),
}

/// Returns the `bytes` codec as TensorStore writes it for `dtype`.
///
/// The zarr v3 specification requires `endian` only for types of more than
/// one byte, and TensorStore 0.1.86 leaves the configuration out for
/// one-byte types such as `bool`, `int4` and `float8_e4m3fn`.
fn bytes_codec<'a>(dtype: DType) -> CodecDocument<'a> {
    let configuration = if dtype.item_size() > 1 {
        Some(CodecConfiguration::Bytes { endian: "little" })
    } else {
        None
    };
    CodecDocument {
        configuration,
        name: "bytes",
    }
}

/// Returns the zero of `dtype` in the JSON form Orbax writes as `fill_value`.
fn zero_fill_value(dtype: DType) -> FillValueDocument {
    if dtype == DType::Bool {
        FillValueDocument::Bool(false)
    } else if dtype.is_complex() {
        FillValueDocument::Complex([0.0, 0.0])
    } else if dtype.is_float() {
        FillValueDocument::Float(0.0)
    } else {
        FillValueDocument::Integer(0)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `params.dense.kernel/zarr.json` of a checkpoint that Orbax 0.12.8 wrote with `use_zarr3=True`.
    pub(in crate::zarr3) const ORBAX_KERNEL: &str = r#"{"chunk_grid":{"configuration":{"chunk_shape":[4,4]},"name":"regular"},"chunk_key_encoding":{"name":"default"},"codecs":[{"configuration":{"chunk_shape":[4,4],"codecs":[{"configuration":{"endian":"little"},"name":"bytes"},{"configuration":{"checksum":false,"level":3},"name":"zstd"}],"index_codecs":[{"configuration":{"endian":"little"},"name":"bytes"},{"name":"crc32c"}]},"name":"sharding_indexed"}],"data_type":"float32","fill_value":0.0,"node_type":"array","shape":[16,8],"zarr_format":3}"#;

    const ORBAX_ZSTD: Option<ZarrV3Compressor> = Some(ZarrV3Compressor::Zstd {
        level: 3,
        checksum: false,
    });

    fn json(metadata: &ZarrV3Metadata) -> String {
        String::from_utf8(metadata.to_json()).unwrap()
    }

    #[test]
    fn orbax_document_round_trips() {
        let metadata = ZarrV3Metadata::parse(ORBAX_KERNEL.as_bytes(), "k").unwrap();
        assert_eq!(metadata.shape(), [16, 8]);
        assert_eq!(metadata.chunks(), [4, 4]);
        assert_eq!(metadata.dtype(), DType::Float32);
        assert_eq!(metadata.compressor(), ORBAX_ZSTD);
        assert_eq!(metadata.chunk_num_bytes(), 64);
        assert_eq!(json(&metadata), ORBAX_KERNEL);
    }

    #[test]
    fn new_serializes_like_orbax() {
        let metadata =
            ZarrV3Metadata::new(vec![16, 8], vec![4, 4], DType::Float32, ORBAX_ZSTD).unwrap();
        assert_eq!(json(&metadata), ORBAX_KERNEL);
    }

    #[test]
    fn one_byte_types_omit_endian() {
        let metadata = ZarrV3Metadata::new(vec![4], vec![2], DType::Bool, ORBAX_ZSTD).unwrap();
        let document = json(&metadata);
        let inner = r#""codecs":[{"name":"bytes"},{"configuration":{"checksum":false,"level":3},"name":"zstd"}]"#;
        assert!(document.contains(inner), "{document}");
        assert!(document.contains(r#""fill_value":false"#), "{document}");
    }

    #[test]
    fn uncompressed_has_bytes_codec_only() {
        let metadata = ZarrV3Metadata::new(vec![], vec![], DType::Int64, None).unwrap();
        let expected = r#"{"chunk_grid":{"configuration":{"chunk_shape":[]},"name":"regular"},"chunk_key_encoding":{"name":"default"},"codecs":[{"configuration":{"chunk_shape":[],"codecs":[{"configuration":{"endian":"little"},"name":"bytes"}],"index_codecs":[{"configuration":{"endian":"little"},"name":"bytes"},{"name":"crc32c"}]},"name":"sharding_indexed"}],"data_type":"int64","fill_value":0,"node_type":"array","shape":[],"zarr_format":3}"#;
        assert_eq!(json(&metadata), expected);
    }

    #[test]
    fn fill_values_by_dtype() {
        let cases = [
            (DType::Float32, r#""fill_value":0.0"#),
            (DType::BFloat16, r#""fill_value":0.0"#),
            (DType::Float8E4M3Fn, r#""fill_value":0.0"#),
            (DType::Int4, r#""fill_value":0"#),
            (DType::UInt64, r#""fill_value":0"#),
            (DType::Bool, r#""fill_value":false"#),
            (DType::Complex128, r#""fill_value":[0.0,0.0]"#),
        ];
        for (dtype, expected) in cases {
            let metadata = ZarrV3Metadata::new(vec![2], vec![2], dtype, None).unwrap();
            let document = json(&metadata);
            assert!(document.contains(expected), "{dtype}: {document}");
        }
    }

    #[test]
    fn checksum_flag_serializes() {
        let zstd = Some(ZarrV3Compressor::Zstd {
            level: 5,
            checksum: true,
        });
        let metadata = ZarrV3Metadata::new(vec![2], vec![2], DType::Int8, zstd).unwrap();
        let document = json(&metadata);
        assert!(
            document.contains(r#"{"configuration":{"checksum":true,"level":5},"name":"zstd"}"#),
            "{document}"
        );
        let parsed = ZarrV3Metadata::parse(document.as_bytes(), "k").unwrap();
        assert_eq!(parsed, metadata);
    }

    #[test]
    fn new_rejects_bad_zstd_level() {
        let zstd = Some(ZarrV3Compressor::Zstd {
            level: 1000,
            checksum: false,
        });
        let err = ZarrV3Metadata::new(vec![2], vec![2], DType::Int8, zstd).unwrap_err();
        assert!(
            matches!(err, StorageError::InvalidMetadata { ref reason, .. } if reason.contains("1000")),
            "{err}"
        );
    }

    #[test]
    fn new_rejects_zero_chunk() {
        let err = ZarrV3Metadata::new(vec![2], vec![0], DType::Int8, None).unwrap_err();
        assert!(matches!(err, StorageError::Core(_)), "{err}");
    }

    #[test]
    fn chunk_keys() {
        assert_eq!(ZarrV3Metadata::chunk_key(&[]), "c");
        assert_eq!(ZarrV3Metadata::chunk_key(&[3]), "c/3");
        assert_eq!(ZarrV3Metadata::chunk_key(&[1, 0, 12]), "c/1/0/12");
    }
}
