//! Parses a zarr v2 `.zarray` document, and writes back the ones that parse.

#![no_main]

use ckpt_storage::ZarrV2Metadata;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(metadata) = ZarrV2Metadata::parse(data, "memory://fuzz/.zarray") {
        let _ = metadata.to_json();
    }
});
