//! Opens an OCDBT database made of one manifest and one data file, lists its
//! keys and reads their values.
//!
//! Input: an options byte (see `ckpt_fuzz::split_mode`), then the manifest
//! and the data file joined by `ckpt_fuzz::join_two`. The store serves the
//! data file under every path other than the manifests (see
//! `ckpt_fuzz::OcdbtBackend`).

#![no_main]

use std::sync::Arc;

use ckpt_fuzz::{split_mode, split_two, OcdbtBackend};
use ckpt_storage::{KvStore, OcdbtReader, Store};
use libfuzzer_sys::fuzz_target;

/// Values read per run, so that a tree with many keys still runs quickly.
const MAX_VALUES_READ: usize = 64;

fuzz_target!(|data: &[u8]| {
    let (mode, rest) = split_mode(data);
    let (manifest, data_file) = split_two(rest);
    let backend = OcdbtBackend::new(manifest, data_file, mode.repair);
    let Ok(reader) = OcdbtReader::open(Store::new(Arc::new(backend))) else {
        return;
    };
    let Ok(keys) = reader.list("") else {
        return;
    };
    for key in keys.iter().take(MAX_VALUES_READ) {
        let _ = reader.read(key);
    }
});
