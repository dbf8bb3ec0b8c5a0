//! Parses one value of a `_sharding` file (the JSON text of one sharding),
//! and writes back the ones that parse.

#![no_main]

use ckpt_device::Sharding;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sharding) = Sharding::from_orbax_json(text) {
        let _ = sharding.to_orbax_json();
    }
});
