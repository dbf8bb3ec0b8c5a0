//! Decodes an OCDBT B+tree node, or with the body-only option its body.
//!
//! Input: an options byte (see `ckpt_fuzz::split_mode`), the transitive path
//! of the node's file (see `ckpt_fuzz::split_path`), then the node.

#![no_main]

use bytes::Bytes;
use ckpt_fuzz::{repair_envelope, split_mode, split_path};
use ckpt_storage::ocdbt_format::{decode_btree_node, decode_btree_node_body};
use libfuzzer_sys::fuzz_target;

/// Decoded size limit of the envelope. The `ocdbt_envelope` target covers larger limits.
const MAX_DECODED_BYTES: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let (mode, rest) = split_mode(data);
    let (transitive_path, encoded) = split_path(rest);
    if mode.body_only {
        let _ = decode_btree_node_body(&Bytes::copy_from_slice(encoded), transitive_path);
    } else if mode.repair {
        let _ = decode_btree_node(
            &repair_envelope(encoded),
            transitive_path,
            MAX_DECODED_BYTES,
        );
    } else {
        let _ = decode_btree_node(encoded, transitive_path, MAX_DECODED_BYTES);
    }
});
