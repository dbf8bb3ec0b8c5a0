//! Parses a `_CHECKPOINT_METADATA` document.

#![no_main]

use ckpt_storage::CheckpointMetadata;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = CheckpointMetadata::parse(data, "memory://fuzz/_CHECKPOINT_METADATA");
});
