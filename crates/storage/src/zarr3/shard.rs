//! Encoding and decoding of stored zarr v3 shards of one inner chunk.
//!
//! A shard value is the encoded inner chunk followed by the shard index:
//! the chunk's byte offset and length as two little-endian `u64`s, then a
//! little-endian `u32` CRC-32C of those 16 bytes. An offset and length of
//! both `u64::MAX` mark the chunk as missing.

use std::io::{self, Read};

use bytes::Bytes;

use super::ZarrV3Compressor;
use crate::{store::join_url, Result, StorageError};

/// Bytes of the index entry of one chunk: offset and length.
const INDEX_ENTRY_BYTES: usize = 16;
/// Bytes of the shard index: the entry and its CRC-32C.
pub(super) const INDEX_BYTES: usize = INDEX_ENTRY_BYTES + 4;
/// The offset and length of a chunk that the shard does not contain.
const MISSING: u64 = u64::MAX;
/// Maximum size of the first buffer for a decompressed chunk.
///
/// Larger chunks grow by doubling as data arrives, so a frame whose header
/// declares a false size cannot make a read allocate more than twice the
/// bytes the frame really decompresses to.
const FIRST_ALLOCATION_MAX: usize = 16 << 20;

/// Encodes the bytes of a full chunk as a shard value.
///
/// zstd writes one frame that records the decompressed size in its header,
/// as TensorStore does for Orbax.
pub(super) fn encode_shard(
    compressor: Option<ZarrV3Compressor>,
    chunk: &[u8],
    store: &str,
    key: &str,
) -> Result<Bytes> {
    let mut shard = match compressor {
        None => {
            let mut shard = Vec::with_capacity(chunk.len() + INDEX_BYTES);
            shard.extend_from_slice(chunk);
            shard
        }
        Some(ZarrV3Compressor::Zstd { level, checksum }) => compress(chunk, level, checksum)
            .map_err(|source| StorageError::Io {
                operation: "compress",
                store: store.to_owned(),
                key: key.to_owned(),
                source: Box::new(source),
            })?,
    };
    let mut index = [0u8; INDEX_BYTES];
    // The offset stays 0, because the chunk starts the shard.
    index[8..16].copy_from_slice(&(shard.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c(&index[..INDEX_ENTRY_BYTES]);
    index[INDEX_ENTRY_BYTES..].copy_from_slice(&crc.to_le_bytes());
    shard.extend_from_slice(&index);
    Ok(Bytes::from(shard))
}

fn compress(chunk: &[u8], level: i32, checksum: bool) -> io::Result<Vec<u8>> {
    let mut compressor = zstd::bulk::Compressor::new(level)?;
    compressor.include_checksum(checksum)?;
    let mut frame = compressor.compress(chunk)?;
    frame.reserve_exact(INDEX_BYTES);
    Ok(frame)
}

/// Decodes a shard value into its chunk, which must have exactly `expected` bytes once decoded.
///
/// Returns `None` when the index marks the chunk as missing. Checks the
/// CRC-32C of the index, that the chunk's byte range lies inside the value,
/// and the decoded size. Memory is allocated only up to `expected` bytes,
/// and for zstd only as decompressed data arrives (see [`FIRST_ALLOCATION_MAX`]).
pub(super) fn decode_shard(
    compressor: Option<ZarrV3Compressor>,
    shard: &Bytes,
    expected: usize,
    store: &str,
    key: &str,
) -> Result<Option<Vec<u8>>> {
    let corrupt = |reason: String| StorageError::Corrupt {
        key: join_url(store, key),
        reason,
    };
    let Some(chunk_range) = read_index(shard).map_err(corrupt)? else {
        return Ok(None);
    };
    let encoded = &shard[chunk_range];
    let chunk = match compressor {
        None if encoded.len() == expected => encoded.to_vec(),
        None => {
            return Err(corrupt(format!(
                "the chunk has {} bytes, expected {expected} for its shape and dtype",
                encoded.len()
            )))
        }
        Some(ZarrV3Compressor::Zstd { .. }) => decompress(encoded, expected, store, key)?,
    };
    Ok(Some(chunk))
}

/// Reads and checks the shard index at the end of `shard` and returns the
/// chunk's byte range, or `None` for a missing chunk. The error is the reason.
fn read_index(shard: &[u8]) -> std::result::Result<Option<std::ops::Range<usize>>, String> {
    let Some(data_len) = shard.len().checked_sub(INDEX_BYTES) else {
        return Err(format!(
            "the shard has {} bytes, fewer than the {INDEX_BYTES} bytes of its index",
            shard.len()
        ));
    };
    let index = &shard[data_len..];
    let entry = &index[..INDEX_ENTRY_BYTES];
    let stored_crc = u32::from_le_bytes([index[16], index[17], index[18], index[19]]);
    let computed_crc = crc32c::crc32c(entry);
    if stored_crc != computed_crc {
        return Err(format!(
            "the CRC-32C of the shard index is {computed_crc:#010x}, but the index stores {stored_crc:#010x}"
        ));
    }

    let offset = u64::from_le_bytes([
        entry[0], entry[1], entry[2], entry[3], entry[4], entry[5], entry[6], entry[7],
    ]);
    let length = u64::from_le_bytes([
        entry[8], entry[9], entry[10], entry[11], entry[12], entry[13], entry[14], entry[15],
    ]);
    match (offset, length) {
        (MISSING, MISSING) => return Ok(None),
        (MISSING, _) | (_, MISSING) => {
            return Err(format!(
                "the shard index has offset {offset} and length {length}: a missing chunk has both set to 2^64-1"
            ))
        }
        _ => {}
    }
    let end = offset
        .checked_add(length)
        .filter(|end| *end <= data_len as u64);
    let Some(end) = end else {
        return Err(format!(
            "the shard index points to bytes {offset}..{offset}+{length}, past the {data_len} bytes before the index"
        ));
    };
    // Both bounds are at most `data_len`, a `usize`.
    Ok(Some(offset as usize..end as usize))
}

/// Decompresses one zstd frame that must contain exactly `expected` bytes.
fn decompress(frame: &[u8], expected: usize, store: &str, key: &str) -> Result<Vec<u8>> {
    let corrupt = |reason: String| StorageError::Corrupt {
        key: join_url(store, key),
        reason,
    };
    // A declared size that differs from the metadata's is an error before
    // anything is allocated. A matching one is still not trusted for sizing.
    match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(declared)) if declared != expected as u64 => {
            return Err(corrupt(format!(
                "the zstd frame declares {declared} decompressed bytes, expected {expected} for the chunk's shape and dtype"
            )))
        }
        Ok(_) => {}
        Err(_) => return Err(corrupt("invalid zstd data: no valid frame header".to_owned())),
    }

    let mut decoder = zstd::stream::read::Decoder::with_buffer(frame)
        .map_err(|error| corrupt(format!("invalid zstd data: {error}")))?;
    let mut chunk = Vec::new();
    let mut step = expected.min(FIRST_ALLOCATION_MAX);
    while chunk.len() < expected {
        let start = chunk.len();
        let grow = step.min(expected - start);
        allocate(&mut chunk, start + grow, store, key)?;
        let filled = read_full(&mut decoder, &mut chunk[start..])
            .map_err(|error| corrupt(format!("invalid zstd data: {error}")))?;
        if filled < grow {
            return Err(corrupt(format!(
                "the chunk decompresses to {} bytes, expected {expected} for its shape and dtype",
                start + filled
            )));
        }
        // Doubling keeps the number of reallocations logarithmic in the chunk size.
        step = chunk.len();
    }

    let mut probe = [0u8; 1];
    let extra = read_full(&mut decoder, &mut probe)
        .map_err(|error| corrupt(format!("invalid zstd data: {error}")))?;
    if extra > 0 {
        return Err(corrupt(format!(
            "the chunk decompresses to more than {expected} bytes, expected {expected} for its shape and dtype"
        )));
    }
    Ok(chunk)
}

/// Reads into `buffer` until it is full or the stream ends, and returns the bytes read.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Grows `buffer` with zeros to `len` bytes, returning an error instead of aborting when memory is short.
pub(super) fn allocate(buffer: &mut Vec<u8>, len: usize, store: &str, key: &str) -> Result<()> {
    let additional = len.saturating_sub(buffer.len());
    buffer
        .try_reserve_exact(additional)
        .map_err(|_| StorageError::Io {
            operation: "allocate a buffer for",
            store: store.to_owned(),
            key: key.to_owned(),
            source: Box::new(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("cannot allocate {len} bytes for one chunk"),
            )),
        })?;
    buffer.resize(len, 0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZSTD: Option<ZarrV3Compressor> = Some(ZarrV3Compressor::Zstd {
        level: 3,
        checksum: false,
    });

    fn decode(
        compressor: Option<ZarrV3Compressor>,
        shard: &[u8],
        expected: usize,
    ) -> Result<Option<Vec<u8>>> {
        decode_shard(
            compressor,
            &Bytes::copy_from_slice(shard),
            expected,
            "mem",
            "x/c/0",
        )
    }

    fn corrupt_reason(result: Result<Option<Vec<u8>>>) -> String {
        match result {
            Err(StorageError::Corrupt { key, reason }) => {
                assert_eq!(key, "mem/x/c/0");
                reason
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    /// Builds a shard of `data` followed by an index entry with a valid CRC.
    fn shard_with_index(data: &[u8], offset: u64, length: u64) -> Vec<u8> {
        let mut shard = data.to_vec();
        let mut entry = [0u8; INDEX_ENTRY_BYTES];
        entry[..8].copy_from_slice(&offset.to_le_bytes());
        entry[8..].copy_from_slice(&length.to_le_bytes());
        shard.extend_from_slice(&entry);
        shard.extend_from_slice(&crc32c::crc32c(&entry).to_le_bytes());
        shard
    }

    #[test]
    fn raw_layout() {
        let shard = encode_shard(None, &[1, 2, 3], "mem", "x/c/0").unwrap();
        assert_eq!(shard.len(), 3 + INDEX_BYTES);
        assert_eq!(&shard[..3], [1, 2, 3]);
        assert_eq!(&shard[3..11], 0u64.to_le_bytes());
        assert_eq!(&shard[11..19], 3u64.to_le_bytes());
        let crc = crc32c::crc32c(&shard[3..19]);
        assert_eq!(&shard[19..], crc.to_le_bytes());
    }

    #[test]
    fn raw_round_trip() {
        let shard = encode_shard(None, &[1, 2, 3], "mem", "x/c/0").unwrap();
        let chunk = decode(None, &shard, 3).unwrap();
        assert_eq!(chunk, Some(vec![1, 2, 3]));
    }

    #[test]
    fn zstd_round_trip() {
        let chunk: Vec<u8> = (0..1000u32).map(|i| (i % 7) as u8).collect();
        let shard = encode_shard(ZSTD, &chunk, "mem", "x/c/0").unwrap();
        assert!(shard.len() < chunk.len());
        assert_eq!(decode(ZSTD, &shard, 1000).unwrap(), Some(chunk));
    }

    #[test]
    fn zstd_frame_has_content_size() {
        let shard = encode_shard(ZSTD, &[7u8; 300], "mem", "x/c/0").unwrap();
        let size = zstd::zstd_safe::get_frame_content_size(&shard).unwrap();
        assert_eq!(size, Some(300));
    }

    #[test]
    fn zstd_checksum_flag() {
        let plain = encode_shard(ZSTD, &[7u8; 300], "mem", "x/c/0").unwrap();
        let with_checksum = Some(ZarrV3Compressor::Zstd {
            level: 3,
            checksum: true,
        });
        let checked = encode_shard(with_checksum, &[7u8; 300], "mem", "x/c/0").unwrap();
        // The frame grows by its 4-byte content checksum.
        assert_eq!(checked.len(), plain.len() + 4);
        assert_eq!(
            decode(with_checksum, &checked, 300).unwrap(),
            Some(vec![7u8; 300])
        );
    }

    #[test]
    fn chunk_at_nonzero_offset() {
        let shard = shard_with_index(&[9, 9, 1, 2], 2, 2);
        assert_eq!(decode(None, &shard, 2).unwrap(), Some(vec![1, 2]));
    }

    #[test]
    fn missing_chunk_is_none() {
        let shard = shard_with_index(&[], MISSING, MISSING);
        assert_eq!(decode(None, &shard, 4).unwrap(), None);
    }

    #[test]
    fn half_missing_entry_is_corrupt() {
        let shard = shard_with_index(&[1, 2], MISSING, 2);
        let reason = corrupt_reason(decode(None, &shard, 2));
        assert!(reason.contains("both set to 2^64-1"), "{reason}");
    }

    #[test]
    fn crc_mismatch_is_corrupt() {
        let mut shard = encode_shard(None, &[1, 2, 3], "mem", "x/c/0")
            .unwrap()
            .to_vec();
        let last = shard.len() - 1;
        shard[last] ^= 0x01;
        let reason = corrupt_reason(decode(None, &shard, 3));
        assert!(reason.contains("CRC-32C"), "{reason}");
    }

    #[test]
    fn short_shard_is_corrupt() {
        let reason = corrupt_reason(decode(None, &[0u8; 19], 0));
        assert!(
            reason.contains("has 19 bytes, fewer than the 20"),
            "{reason}"
        );
    }

    #[test]
    fn range_past_end_is_corrupt() {
        let shard = shard_with_index(&[1, 2, 3], 1, 3);
        let reason = corrupt_reason(decode(None, &shard, 3));
        assert!(reason.contains("past the 3 bytes"), "{reason}");
    }

    #[test]
    fn overflowing_range_is_corrupt() {
        let shard = shard_with_index(&[1, 2, 3], u64::MAX - 1, 2);
        let reason = corrupt_reason(decode(None, &shard, 3));
        assert!(reason.contains("past the 3 bytes"), "{reason}");
    }

    #[test]
    fn raw_size_mismatch_is_corrupt() {
        let shard = encode_shard(None, &[1, 2, 3], "mem", "x/c/0").unwrap();
        let reason = corrupt_reason(decode(None, &shard, 4));
        assert!(reason.contains("has 3 bytes, expected 4"), "{reason}");
    }

    #[test]
    fn declared_size_mismatch_is_corrupt() {
        let shard = encode_shard(ZSTD, &[5u8; 13], "mem", "x/c/0").unwrap();
        let reason = corrupt_reason(decode(ZSTD, &shard, 12));
        assert!(
            reason.contains("declares 13 decompressed bytes"),
            "{reason}"
        );
    }

    #[test]
    fn declared_size_is_not_allocated() {
        // A frame that declares 64 MiB, read as a 16-byte chunk, fails
        // before any buffer of the declared size exists.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 3).unwrap();
        let shard = shard_with_index(&bomb, 0, bomb.len() as u64);
        let reason = corrupt_reason(decode(ZSTD, &shard, 16));
        assert!(reason.contains("declares 67108864"), "{reason}");
    }

    #[test]
    fn false_declared_size_is_corrupt() {
        // A hand-made frame that declares 2^40 bytes and contains one RLE block of
        // 300 bytes. Reading it as a 2^40-byte chunk fails as corrupt data (the
        // decoder rejects the frame's window) and not as a failed allocation of
        // 2^40 bytes, because the declared size never sizes a buffer.
        let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0xe0];
        frame.extend_from_slice(&(1u64 << 40).to_le_bytes());
        let block_header = (300u32 << 3) | (1 << 1) | 1;
        frame.extend_from_slice(&block_header.to_le_bytes()[..3]);
        frame.push(7);
        let declared = zstd::zstd_safe::get_frame_content_size(&frame).unwrap();
        assert_eq!(declared, Some(1 << 40));

        let shard = shard_with_index(&frame, 0, frame.len() as u64);
        let reason = corrupt_reason(decode(ZSTD, &shard, 1 << 40));
        assert!(reason.contains("invalid zstd data"), "{reason}");
    }

    /// Compresses `data` into a frame whose header leaves out the decompressed size.
    fn frame_without_size(data: &[u8]) -> Vec<u8> {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        encoder.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut encoder, data).unwrap();
        let frame = encoder.finish().unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&frame).unwrap(),
            None
        );
        frame
    }

    #[test]
    fn undeclared_size_round_trip() {
        let chunk: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let frame = frame_without_size(&chunk);
        let shard = shard_with_index(&frame, 0, frame.len() as u64);
        assert_eq!(decode(ZSTD, &shard, chunk.len()).unwrap(), Some(chunk));
    }

    #[test]
    fn undeclared_long_content_is_corrupt() {
        let frame = frame_without_size(&vec![0u8; 64 << 20]);
        let shard = shard_with_index(&frame, 0, frame.len() as u64);
        let reason = corrupt_reason(decode(ZSTD, &shard, 16));
        assert!(reason.contains("more than 16 bytes"), "{reason}");
    }

    #[test]
    fn undeclared_short_content_is_corrupt() {
        let frame = frame_without_size(&[4u8; 10]);
        let shard = shard_with_index(&frame, 0, frame.len() as u64);
        let reason = corrupt_reason(decode(ZSTD, &shard, 12));
        assert!(
            reason.contains("decompresses to 10 bytes, expected 12"),
            "{reason}"
        );
    }

    #[test]
    fn truncated_frame_is_corrupt() {
        let chunk: Vec<u8> = (0..4096u32).map(|i| (i * 31 % 251) as u8).collect();
        let frame = zstd::bulk::compress(&chunk, 3).unwrap();
        let half = &frame[..frame.len() / 2];
        let shard = shard_with_index(half, 0, half.len() as u64);
        let reason = corrupt_reason(decode(ZSTD, &shard, 4096));
        assert!(
            reason.contains("zstd") || reason.contains("decompresses to"),
            "{reason}"
        );
    }

    #[test]
    fn garbage_frame_is_corrupt() {
        let shard = shard_with_index(b"not zstd", 0, 8);
        let reason = corrupt_reason(decode(ZSTD, &shard, 8));
        assert!(reason.contains("invalid zstd data"), "{reason}");
    }
}
