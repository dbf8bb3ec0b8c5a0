//! The envelope around every manifest, version tree node and B+tree node.
//!
//! Layout: a big-endian u32 magic number, a little-endian u64 total length,
//! varint format version (0), varint compression (0 none, 1 zstd), the body,
//! and a little-endian CRC-32C of every byte before it.

use std::io::Read;

use bytes::Bytes;

use super::{cursor::write_varint, Cursor, OcdbtCompression, OcdbtError};

/// Magic number of `manifest.ocdbt` and numbered manifests.
pub const MANIFEST_MAGIC: u32 = 0x0cdb_3a2a;
/// Magic number of version tree nodes.
pub const VERSION_TREE_NODE_MAGIC: u32 = 0x0cdb_1234;
/// Magic number of B+tree nodes.
pub const BTREE_NODE_MAGIC: u32 = 0x0cdb_20de;

/// Maximum decoded body size of any envelope, whatever the configuration
/// allows. It is above Orbax's `max_decoded_node_bytes` of 100 MB and low
/// enough that a hostile file cannot make a reader allocate without bound.
pub const MAX_DECODED_BYTES_LIMIT: u64 = 256 << 20;

/// Bytes of magic, length and checksum. The version and compression varints
/// take at least one byte each on top.
const FIXED_BYTES: usize = 4 + 8 + 4;

/// Maximum initial capacity of the zstd output buffer. The buffer grows with
/// the real output, so a frame header that claims a huge size allocates no more.
const INITIAL_DECOMPRESS_CAPACITY: u64 = 1 << 20;

fn structure_name(magic: u32) -> &'static str {
    match magic {
        MANIFEST_MAGIC => "manifest",
        VERSION_TREE_NODE_MAGIC => "version tree node",
        BTREE_NODE_MAGIC => "B+tree node",
        _ => "OCDBT structure",
    }
}

/// Checks the envelope of `encoded` and returns its decompressed body.
///
/// The checks run in this order: the magic number, the length header against
/// the input length, the CRC-32C, version 0 and the compression method. Then
/// the decompressed body must be at most `max_decoded_bytes` and
/// [`MAX_DECODED_BYTES_LIMIT`], and a zstd body must be exactly one frame.
pub fn decode_envelope(
    encoded: &[u8],
    magic: u32,
    max_decoded_bytes: u64,
) -> Result<Bytes, OcdbtError> {
    let structure = structure_name(magic);
    let mut cursor = Cursor::new(encoded);
    let found = cursor.u32_be("magic number")?;
    if found != magic {
        return Err(OcdbtError::BadMagic {
            structure,
            expected: magic,
            found,
        });
    }
    let header = cursor.u64_le("length header")?;
    if header != encoded.len() as u64 {
        return Err(OcdbtError::LengthMismatch {
            header,
            actual: encoded.len() as u64,
        });
    }
    if encoded.len() < FIXED_BYTES + 2 {
        return Err(OcdbtError::UnexpectedEnd {
            field: "envelope",
            needed: (FIXED_BYTES + 2) as u64,
            available: encoded.len() as u64,
        });
    }

    let (checked, stored) = encoded.split_at(encoded.len() - 4);
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let computed = crc32c::crc32c(checked);
    if stored != computed {
        return Err(OcdbtError::ChecksumMismatch { stored, computed });
    }

    let mut cursor = Cursor::new(&checked[12..]);
    let version = cursor.varint("format version")?;
    if version != 0 {
        return Err(OcdbtError::UnsupportedVersion { version });
    }
    let method = cursor.varint("compression method")?;
    let body = cursor.take(cursor.remaining() as u64, "body")?;
    let limit = max_decoded_bytes.min(MAX_DECODED_BYTES_LIMIT);
    match method {
        0 => {
            check_decoded_size(body.len() as u64, limit)?;
            Ok(Bytes::copy_from_slice(body))
        }
        1 => decompress_one_frame(body, limit).map(Bytes::from),
        method => Err(OcdbtError::UnknownCompression { method }),
    }
}

fn check_decoded_size(size: u64, limit: u64) -> Result<(), OcdbtError> {
    if size > limit {
        return Err(OcdbtError::LimitExceeded {
            field: "decoded size",
            value: size,
            limit,
        });
    }
    Ok(())
}

/// Decompresses exactly one zstd frame of at most `limit` bytes.
fn decompress_one_frame(frame: &[u8], limit: u64) -> Result<Vec<u8>, OcdbtError> {
    let declared = zstd::zstd_safe::get_frame_content_size(frame)
        .ok()
        .flatten();
    if let Some(declared) = declared {
        check_decoded_size(declared, limit)?;
    }
    let capacity = declared.unwrap_or(0).min(INITIAL_DECOMPRESS_CAPACITY) as usize;
    let mut out = Vec::with_capacity(capacity);

    let mut decoder = zstd::stream::read::Decoder::with_buffer(frame)
        .map_err(|source| OcdbtError::Decompress { source })?
        .single_frame();
    (&mut decoder)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|source| OcdbtError::Decompress { source })?;
    check_decoded_size(out.len() as u64, limit)?;

    let rest = decoder.finish();
    if !rest.is_empty() {
        return Err(OcdbtError::TrailingBytes {
            structure: "the zstd frame",
            count: rest.len() as u64,
        });
    }
    if let Some(declared) = declared {
        if declared != out.len() as u64 {
            return Err(OcdbtError::InvalidField {
                field: "zstd frame",
                reason: format!("header declares {declared} bytes but {} decoded", out.len()),
            });
        }
    }
    Ok(out)
}

/// Wraps `body` in an envelope, compressed with `compression`.
pub(super) fn encode_envelope(
    magic: u32,
    body: &[u8],
    compression: OcdbtCompression,
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() + FIXED_BYTES + 2);
    out.extend_from_slice(&magic.to_be_bytes());
    out.extend_from_slice(&[0u8; 8]);
    write_varint(&mut out, 0);
    match compression {
        OcdbtCompression::None => {
            write_varint(&mut out, 0);
            out.extend_from_slice(body);
        }
        OcdbtCompression::Zstd { level } => {
            write_varint(&mut out, 1);
            // The bulk API writes the content size into the frame header.
            out.extend_from_slice(&zstd::bulk::compress(body, level)?);
        }
    }
    let length = (out.len() + 4) as u64;
    out[4..12].copy_from_slice(&length.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 1 << 20;

    fn seal(mut bytes: Vec<u8>) -> Vec<u8> {
        let length = (bytes.len() + 4) as u64;
        bytes[4..12].copy_from_slice(&length.to_le_bytes());
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    fn raw_envelope(version: u8, method: u8, body: &[u8]) -> Vec<u8> {
        let mut bytes = BTREE_NODE_MAGIC.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 8]);
        bytes.push(version);
        bytes.push(method);
        bytes.extend_from_slice(body);
        seal(bytes)
    }

    #[test]
    fn raw_round_trip() {
        let encoded = encode_envelope(BTREE_NODE_MAGIC, b"body", OcdbtCompression::None).unwrap();
        let body = decode_envelope(&encoded, BTREE_NODE_MAGIC, LIMIT).unwrap();
        assert_eq!(&body[..], b"body");
    }

    #[test]
    fn zstd_round_trip() {
        let compression = OcdbtCompression::Zstd { level: 0 };
        let encoded = encode_envelope(MANIFEST_MAGIC, &[7u8; 5000], compression).unwrap();
        let body = decode_envelope(&encoded, MANIFEST_MAGIC, LIMIT).unwrap();
        assert_eq!(&body[..], &[7u8; 5000][..]);
    }

    #[test]
    fn flipped_bit_fails_checksum() {
        let mut encoded =
            encode_envelope(BTREE_NODE_MAGIC, b"body", OcdbtCompression::None).unwrap();
        encoded[14] ^= 0x04;
        let err = decode_envelope(&encoded, BTREE_NODE_MAGIC, LIMIT).unwrap_err();
        assert!(matches!(err, OcdbtError::ChecksumMismatch { .. }), "{err}");
    }

    #[test]
    fn truncated_envelope_rejected() {
        let encoded = encode_envelope(BTREE_NODE_MAGIC, b"body", OcdbtCompression::None).unwrap();
        let err =
            decode_envelope(&encoded[..encoded.len() - 1], BTREE_NODE_MAGIC, LIMIT).unwrap_err();
        assert!(matches!(err, OcdbtError::LengthMismatch { .. }), "{err}");
    }

    #[test]
    fn short_input_rejected() {
        let err = decode_envelope(&[0x0c, 0xdb], BTREE_NODE_MAGIC, LIMIT).unwrap_err();
        assert!(matches!(err, OcdbtError::UnexpectedEnd { .. }), "{err}");
    }

    #[test]
    fn bad_magic_rejected() {
        let encoded = encode_envelope(MANIFEST_MAGIC, b"body", OcdbtCompression::None).unwrap();
        let err = decode_envelope(&encoded, BTREE_NODE_MAGIC, LIMIT).unwrap_err();
        assert!(matches!(err, OcdbtError::BadMagic { .. }), "{err}");
    }

    #[test]
    fn unknown_version_rejected() {
        let err = decode_envelope(&raw_envelope(1, 0, b"x"), BTREE_NODE_MAGIC, LIMIT).unwrap_err();
        assert!(
            matches!(err, OcdbtError::UnsupportedVersion { version: 1 }),
            "{err}"
        );
    }

    #[test]
    fn unknown_compression_rejected() {
        let err = decode_envelope(&raw_envelope(0, 2, b"x"), BTREE_NODE_MAGIC, LIMIT).unwrap_err();
        assert!(
            matches!(err, OcdbtError::UnknownCompression { method: 2 }),
            "{err}"
        );
    }

    #[test]
    fn raw_body_over_limit_rejected() {
        let err =
            decode_envelope(&raw_envelope(0, 0, &[0; 100]), BTREE_NODE_MAGIC, 99).unwrap_err();
        assert!(matches!(err, OcdbtError::LimitExceeded { .. }), "{err}");
    }

    #[test]
    fn zstd_body_over_limit_rejected() {
        let compression = OcdbtCompression::Zstd { level: 0 };
        let encoded = encode_envelope(BTREE_NODE_MAGIC, &[0; 100], compression).unwrap();
        let err = decode_envelope(&encoded, BTREE_NODE_MAGIC, 99).unwrap_err();
        assert!(matches!(err, OcdbtError::LimitExceeded { .. }), "{err}");
    }

    #[test]
    fn zstd_without_size_over_limit_rejected() {
        let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 0).unwrap();
        encoder.include_contentsize(false).unwrap();
        std::io::Write::write_all(&mut encoder, &[0; 100]).unwrap();
        let frame = encoder.finish().unwrap();
        let err = decode_envelope(&raw_envelope(0, 1, &frame), BTREE_NODE_MAGIC, 99).unwrap_err();
        assert!(matches!(err, OcdbtError::LimitExceeded { .. }), "{err}");
    }

    #[test]
    fn truncated_zstd_frame_rejected() {
        let frame = zstd::bulk::compress(&[1u8; 300], 0).unwrap();
        let envelope = raw_envelope(0, 1, &frame[..frame.len() - 3]);
        let err = decode_envelope(&envelope, BTREE_NODE_MAGIC, LIMIT).unwrap_err();
        assert!(matches!(err, OcdbtError::Decompress { .. }), "{err}");
    }

    #[test]
    fn bytes_after_zstd_frame_rejected() {
        let mut frame = zstd::bulk::compress(&[1u8; 300], 0).unwrap();
        frame.extend_from_slice(b"tail");
        let err =
            decode_envelope(&raw_envelope(0, 1, &frame), BTREE_NODE_MAGIC, LIMIT).unwrap_err();
        assert!(matches!(err, OcdbtError::TrailingBytes { .. }), "{err}");
    }
}
