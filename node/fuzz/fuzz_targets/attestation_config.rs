//! The attestation config JSON (from Init, the management API or a join ticket) parsed
//! into validators. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = constellation_node::attestation::parse_config(s);
    }
});
