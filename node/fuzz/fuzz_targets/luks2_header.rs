//! The LUKS2 header JSON (written by whoever controls the disk) checked against the state
//! disk's header policy before unlock. Must never panic, and a header it accepts must name
//! exactly one keyslot.
#![no_main]

use constellation_node::disk::header_policy::check_header_json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = check_header_json(data) {
        assert!(h.keyslot < 32);
    }
});
