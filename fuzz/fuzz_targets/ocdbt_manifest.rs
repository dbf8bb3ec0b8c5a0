//! Decodes an OCDBT manifest, or with the body-only option its body.
//!
//! Input: an options byte (see `ckpt_fuzz::split_mode`), then the manifest.

#![no_main]

use ckpt_fuzz::{repair_envelope, split_mode};
use ckpt_storage::ocdbt_format::{decode_manifest, decode_manifest_body};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (mode, encoded) = split_mode(data);
    if mode.body_only {
        let _ = decode_manifest_body(encoded);
    } else if mode.repair {
        let _ = decode_manifest(&repair_envelope(encoded));
    } else {
        let _ = decode_manifest(encoded);
    }
});
