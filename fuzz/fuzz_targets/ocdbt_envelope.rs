//! Checks and unwraps an OCDBT envelope.
//!
//! Input: an options byte (see `ckpt_fuzz::split_mode`), a byte that picks
//! the expected magic number and the decoded size limit, then the envelope.

#![no_main]

use ckpt_fuzz::{repair_envelope, split_mode};
use ckpt_storage::ocdbt_format::{
    decode_envelope, BTREE_NODE_MAGIC, MANIFEST_MAGIC, MAX_DECODED_BYTES_LIMIT,
    VERSION_TREE_NODE_MAGIC,
};
use libfuzzer_sys::fuzz_target;

/// The decoded size limit, unless the selector's top bit selects the largest one.
const SMALL_LIMIT: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let (mode, rest) = split_mode(data);
    let Some((&selector, encoded)) = rest.split_first() else {
        return;
    };
    let magic = match selector % 3 {
        0 => MANIFEST_MAGIC,
        1 => VERSION_TREE_NODE_MAGIC,
        _ => BTREE_NODE_MAGIC,
    };
    let limit = if selector & 0x80 != 0 {
        MAX_DECODED_BYTES_LIMIT
    } else {
        SMALL_LIMIT
    };
    if mode.repair {
        let _ = decode_envelope(&repair_envelope(encoded), magic, limit);
    } else {
        let _ = decode_envelope(encoded, magic, limit);
    }
});
