//! Azure HCL report parsing: header, hardware report, runtime claims JSON, TDREPORT.
#![no_main]
use constellation_attest::azure::{HclReport, TdReport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = HclReport::parse(data) {
        if let Ok(c) = h.claims() {
            let _ = c.ak_public_key();
        }
        let _ = TdReport::parse(&h.hw_report);
        let _ = h.check_binding(&[0u8; 64]);
    }
});
