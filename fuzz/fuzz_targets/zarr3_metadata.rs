//! Parses a zarr v3 `zarr.json` document, and writes back the ones that parse.

#![no_main]

use ckpt_storage::ZarrV3Metadata;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(metadata) = ZarrV3Metadata::parse(data, "memory://fuzz/zarr.json") {
        let _ = metadata.to_json();
    }
});
