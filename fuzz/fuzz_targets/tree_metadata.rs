//! Parses a `_METADATA` document, and writes back the ones that parse.

#![no_main]

use ckpt_pytree::TreeMetadata;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(metadata) = TreeMetadata::from_json(data) {
        let _ = metadata.to_json();
    }
});
