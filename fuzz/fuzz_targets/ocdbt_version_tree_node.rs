//! Decodes an OCDBT version tree node, or with the body-only option a data
//! file table followed by version tree entries.
//!
//! Input: an options byte (see `ckpt_fuzz::split_mode`), the transitive path
//! of the node's file (see `ckpt_fuzz::split_path`), then the node. In
//! body-only mode the rest is a parameter byte, then the table and the
//! entries joined by `ckpt_fuzz::join_two`. The parameter byte's low 5 bits
//! are the arity's base-2 logarithm, and its top bit selects heights after
//! the interior entries, as in a manifest.

#![no_main]

use ckpt_fuzz::{repair_envelope, split_mode, split_path, split_two};
use ckpt_storage::ocdbt_format::{
    decode_data_file_table, decode_version_interior_entries, decode_version_leaf_entries,
    decode_version_tree_node,
};
use libfuzzer_sys::fuzz_target;

/// Decoded size limit of the envelope. The `ocdbt_envelope` target covers larger limits.
const MAX_DECODED_BYTES: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let (mode, rest) = split_mode(data);
    let (transitive_path, encoded) = split_path(rest);
    if mode.body_only {
        decode_entries(transitive_path, encoded);
    } else if mode.repair {
        let _ = decode_version_tree_node(
            &repair_envelope(encoded),
            transitive_path,
            MAX_DECODED_BYTES,
        );
    } else {
        let _ = decode_version_tree_node(encoded, transitive_path, MAX_DECODED_BYTES);
    }
});

fn decode_entries(transitive_path: &[u8], data: &[u8]) {
    let Some((&parameters, rest)) = data.split_first() else {
        return;
    };
    let (table, entries) = split_two(rest);
    let Ok(table) = decode_data_file_table(table, transitive_path) else {
        return;
    };
    let arity_log2 = parameters & 0x1f;
    let with_heights = parameters & 0x80 != 0;
    let _ = decode_version_leaf_entries(entries, &table, arity_log2);
    let max_count = 1u64 << arity_log2;
    let _ = decode_version_interior_entries(entries, &table, max_count, with_heights);
}
