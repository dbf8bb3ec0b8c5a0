//! Decodes the varint at the start of the input.

#![no_main]

use ckpt_storage::ocdbt_format::decode_varint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_varint(data);
});
