//! Encoding and decoding of stored zarr v2 chunks.

use std::io::{self, Read};

use bytes::Bytes;

use crate::{store::join_url, Result, StorageError, ZarrCompressor};

/// Encodes the bytes of a full chunk for storage.
///
/// zstd writes one frame that records the decompressed size in its header,
/// as TensorStore does for Orbax.
pub(crate) fn encode_chunk(
    compressor: Option<ZarrCompressor>,
    chunk: &[u8],
    store: &str,
    key: &str,
) -> Result<Bytes> {
    match compressor {
        None => Ok(Bytes::copy_from_slice(chunk)),
        Some(ZarrCompressor::Zstd { level }) => zstd::bulk::compress(chunk, level)
            .map(Bytes::from)
            .map_err(|source| StorageError::Io {
                operation: "compress",
                store: store.to_owned(),
                key: key.to_owned(),
                source: Box::new(source),
            }),
    }
}

/// Decodes a stored chunk, which must hold exactly `expected` bytes once decompressed.
///
/// The output buffer is sized from `expected`, never from the size a zstd
/// frame declares, and decompression stops one byte past `expected`, so a
/// corrupt or hostile frame cannot make it allocate more.
pub(crate) fn decode_chunk(
    compressor: Option<ZarrCompressor>,
    stored: Bytes,
    expected: usize,
    store: &str,
    key: &str,
) -> Result<Vec<u8>> {
    let corrupt = |reason: String| StorageError::Corrupt {
        key: join_url(store, key),
        reason,
    };
    match compressor {
        None if stored.len() == expected => Ok(Vec::from(stored)),
        None => Err(corrupt(format!(
            "the chunk has {} bytes, expected {expected} for its shape and dtype",
            stored.len()
        ))),
        Some(ZarrCompressor::Zstd { .. }) if !plausible_size(stored.len(), expected) => {
            let chunk = decompress_growing(&stored, expected)
                .map_err(|error| corrupt(format!("invalid zstd data: {error}")))?;
            if chunk.len() == expected {
                return Ok(chunk);
            }
            Err(corrupt(format!(
                "the chunk decompresses to {}{} bytes, expected {expected} for its shape and dtype",
                if chunk.len() > expected { "more than " } else { "" },
                chunk.len().min(expected)
            )))
        }
        Some(ZarrCompressor::Zstd { .. }) => {
            let mut chunk = allocate_chunk(expected, store, key)?;
            let filled = decompress_into(&stored, &mut chunk)
                .map_err(|error| corrupt(format!("invalid zstd data: {error}")))?;
            match filled {
                Filled::Exactly => Ok(chunk),
                Filled::Short(found) => Err(corrupt(format!(
                    "the chunk decompresses to {found} bytes, expected {expected} for its shape and dtype"
                ))),
                Filled::Over => Err(corrupt(format!(
                    "the chunk decompresses to more than {expected} bytes, expected {expected} for its shape and dtype"
                ))),
            }
        }
    }
}

/// Decodes a stored chunk straight into `dst`, which must be exactly the
/// decoded chunk's size, so no second chunk-sized buffer is allocated.
///
/// Fails as [`decode_chunk`] does. A zstd frame of implausible ratio is
/// decoded into a growing buffer first, as there, and then copied.
pub(crate) fn decode_chunk_into(
    compressor: Option<ZarrCompressor>,
    stored: Bytes,
    dst: &mut [u8],
    store: &str,
    key: &str,
) -> Result<()> {
    let expected = dst.len();
    let corrupt = |reason: String| StorageError::Corrupt {
        key: join_url(store, key),
        reason,
    };
    match compressor {
        Some(ZarrCompressor::Zstd { .. }) if plausible_size(stored.len(), expected) => {
            let filled = decompress_into(&stored, dst)
                .map_err(|error| corrupt(format!("invalid zstd data: {error}")))?;
            match filled {
                Filled::Exactly => Ok(()),
                Filled::Short(found) => Err(corrupt(format!(
                    "the chunk decompresses to {found} bytes, expected {expected} for its shape and dtype"
                ))),
                Filled::Over => Err(corrupt(format!(
                    "the chunk decompresses to more than {expected} bytes, expected {expected} for its shape and dtype"
                ))),
            }
        }
        None if stored.len() == expected => {
            dst.copy_from_slice(&stored);
            Ok(())
        }
        _ => {
            let chunk = decode_chunk(compressor, stored, expected, store, key)?;
            dst.copy_from_slice(&chunk);
            Ok(())
        }
    }
}

/// Allocates a zeroed chunk buffer, returning an error instead of aborting when memory is short.
pub(crate) fn allocate_chunk(len: usize, store: &str, key: &str) -> Result<Vec<u8>> {
    let mut chunk = Vec::new();
    chunk.try_reserve_exact(len).map_err(|_| StorageError::Io {
        operation: "allocate a buffer for",
        store: store.to_owned(),
        key: key.to_owned(),
        source: Box::new(io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("cannot allocate {len} bytes for one chunk"),
        )),
    })?;
    chunk.resize(len, 0);
    Ok(chunk)
}

/// Largest compression ratio for which a chunk's buffer is allocated at its
/// full size before decompressing. Float weights compress by well under 10x;
/// a chunk claiming more (a run of zeros, or a tiny hostile file declaring a
/// huge shape) grows its buffer as data actually arrives instead.
const MAX_EAGER_RATIO: u64 = 256;

/// First buffer size when a chunk's buffer grows as it decompresses.
const GROWING_START_BYTES: usize = 16 << 20;

fn plausible_size(stored: usize, expected: usize) -> bool {
    (stored as u64).saturating_mul(MAX_EAGER_RATIO) >= expected as u64
}

/// Decompresses at most `expected + 1` bytes into a buffer that grows with
/// the data, so memory follows what the stream holds, not what it claims.
fn decompress_growing(stored: &[u8], expected: usize) -> io::Result<Vec<u8>> {
    let decoder = zstd::stream::read::Decoder::with_buffer(stored)?;
    let mut chunk = Vec::with_capacity(expected.min(GROWING_START_BYTES));
    decoder
        .take(expected as u64 + 1)
        .read_to_end(&mut chunk)?;
    Ok(chunk)
}

/// How much of a buffer a decompressed stream filled.
enum Filled {
    /// The stream ended exactly at the end of the buffer.
    Exactly,
    /// The stream ended after this many bytes, before the end of the buffer.
    Short(usize),
    /// The stream has more data than the buffer holds.
    Over,
}

fn decompress_into(stored: &[u8], out: &mut [u8]) -> io::Result<Filled> {
    let mut decoder = zstd::stream::read::Decoder::with_buffer(stored)?;
    let mut filled = 0;
    while filled < out.len() {
        match decoder.read(&mut out[filled..]) {
            Ok(0) => return Ok(Filled::Short(filled)),
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    let mut probe = [0u8; 1];
    loop {
        match decoder.read(&mut probe) {
            Ok(0) => return Ok(Filled::Exactly),
            Ok(_) => return Ok(Filled::Over),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZSTD: Option<ZarrCompressor> = Some(ZarrCompressor::Zstd { level: 1 });

    #[test]
    fn tiny_frame_for_huge_chunk_is_rejected() {
        // 16 bytes compressed, while the metadata claims a 1 GiB chunk: the
        // buffer grows with the data instead of being allocated whole.
        let stored = zstd::bulk::compress(&[7u8; 16], 1).unwrap();
        let reason = corrupt_reason(decode_chunk(ZSTD, Bytes::from(stored), 1 << 30, "mem", "x/0.0"));
        assert!(reason.contains("decompresses to 16 bytes"), "{reason}");
    }

    #[test]
    fn growing_decode_accepts_exact_size() {
        let data = vec![0u8; 1 << 20];
        let stored = zstd::bulk::compress(&data, 1).unwrap();
        assert!(!plausible_size(stored.len(), data.len()));
        let chunk = decode_chunk(ZSTD, Bytes::from(stored), data.len(), "mem://", "a/0").unwrap();
        assert_eq!(chunk, data);
    }

    fn corrupt_reason(result: Result<Vec<u8>>) -> String {
        match result {
            Err(StorageError::Corrupt { key, reason }) => {
                assert_eq!(key, "mem/x/0.0");
                reason
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn decode_into_fills_buffer() {
        let chunk: Vec<u8> = (0..1000u32).map(|i| (i % 7) as u8).collect();
        let stored = encode_chunk(ZSTD, &chunk, "mem", "x/0.0").unwrap();
        let mut dst = vec![0u8; 1000];
        decode_chunk_into(ZSTD, stored, &mut dst, "mem", "x/0.0").unwrap();
        assert_eq!(dst, chunk);
    }

    #[test]
    fn decode_into_rejects_short_frame() {
        let stored = encode_chunk(ZSTD, &[1u8; 900], "mem", "x/0.0").unwrap();
        let mut dst = vec![0u8; 1000];
        let err = decode_chunk_into(ZSTD, stored, &mut dst, "mem", "x/0.0").unwrap_err();
        assert!(err.to_string().contains("decompresses to 900 bytes"), "{err}");
    }

    #[test]
    fn zstd_round_trip() {
        let chunk: Vec<u8> = (0..1000u32).map(|i| (i % 7) as u8).collect();
        let stored = encode_chunk(ZSTD, &chunk, "mem", "x/0.0").unwrap();
        assert!(stored.len() < chunk.len());
        assert_eq!(
            decode_chunk(ZSTD, stored, 1000, "mem", "x/0.0").unwrap(),
            chunk
        );
    }

    #[test]
    fn zstd_header_has_content_size() {
        let stored = encode_chunk(ZSTD, &[7u8; 300], "mem", "x/0.0").unwrap();
        let size = zstd::zstd_safe::get_frame_content_size(&stored).unwrap();
        assert_eq!(size, Some(300));
    }

    #[test]
    fn raw_round_trip() {
        let stored = encode_chunk(None, &[1, 2, 3], "mem", "x/0.0").unwrap();
        assert_eq!(&stored[..], [1, 2, 3]);
        assert_eq!(
            decode_chunk(None, stored, 3, "mem", "x/0.0").unwrap(),
            [1, 2, 3]
        );
    }

    #[test]
    fn raw_short_chunk_is_corrupt() {
        let reason = corrupt_reason(decode_chunk(
            None,
            Bytes::from_static(&[1, 2]),
            3,
            "mem",
            "x/0.0",
        ));
        assert!(reason.contains("has 2 bytes, expected 3"), "{reason}");
    }

    #[test]
    fn raw_long_chunk_is_corrupt() {
        let reason = corrupt_reason(decode_chunk(
            None,
            Bytes::from_static(&[1, 2, 3, 4]),
            3,
            "mem",
            "x/0.0",
        ));
        assert!(reason.contains("has 4 bytes, expected 3"), "{reason}");
    }

    #[test]
    fn zstd_short_content_is_corrupt() {
        let stored = encode_chunk(ZSTD, &[5u8; 10], "mem", "x/0.0").unwrap();
        let reason = corrupt_reason(decode_chunk(ZSTD, stored, 12, "mem", "x/0.0"));
        assert!(
            reason.contains("decompresses to 10 bytes, expected 12"),
            "{reason}"
        );
    }

    #[test]
    fn zstd_long_content_is_corrupt() {
        let stored = encode_chunk(ZSTD, &[5u8; 13], "mem", "x/0.0").unwrap();
        let reason = corrupt_reason(decode_chunk(ZSTD, stored, 12, "mem", "x/0.0"));
        assert!(
            reason.contains("more than 12 bytes, expected 12"),
            "{reason}"
        );
    }

    #[test]
    fn zstd_truncated_frame_is_corrupt() {
        let chunk: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
        let stored = encode_chunk(ZSTD, &chunk, "mem", "x/0.0").unwrap();
        let truncated = stored.slice(..stored.len() / 2);
        let reason = corrupt_reason(decode_chunk(ZSTD, truncated, 4096, "mem", "x/0.0"));
        assert!(
            reason.contains("zstd") || reason.contains("decompresses to"),
            "{reason}"
        );
    }

    #[test]
    fn zstd_garbage_is_corrupt() {
        let reason = corrupt_reason(decode_chunk(
            ZSTD,
            Bytes::from_static(b"not zstd"),
            8,
            "mem",
            "x/0.0",
        ));
        assert!(reason.contains("invalid zstd data"), "{reason}");
    }

    #[test]
    fn declared_size_is_not_trusted() {
        // A frame that declares and contains 64 MiB of zeros, read as a 16-byte chunk:
        // decoding stops after 17 bytes instead of inflating it all.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 1).unwrap();
        let declared = zstd::zstd_safe::get_frame_content_size(&bomb).unwrap();
        assert_eq!(declared, Some(64 << 20));
        let reason = corrupt_reason(decode_chunk(ZSTD, Bytes::from(bomb), 16, "mem", "x/0.0"));
        assert!(reason.contains("more than 16 bytes"), "{reason}");
    }
}
