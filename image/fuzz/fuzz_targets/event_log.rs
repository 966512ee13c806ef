//! TCG event logs come from the guest (untrusted): parsing and replay must never panic.
#![no_main]

use constellation_image::measure;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(events) = measure::parse_event_log(data) {
        let _ = measure::replay(&events);
    }
});
