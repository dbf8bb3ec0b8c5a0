//! Decodes an OCDBT data file table.
//!
//! Input: the transitive path of the file the table is in (see
//! `ckpt_fuzz::split_path`), then the table.

#![no_main]

use ckpt_fuzz::split_path;
use ckpt_storage::ocdbt_format::decode_data_file_table;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (transitive_path, table) = split_path(data);
    let _ = decode_data_file_table(table, transitive_path);
});
