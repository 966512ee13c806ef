//! SNP extended-report certificate table parsing, and certificate parsing of its entries.
#![no_main]
use constellation_attest::certs::{Cert, table};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = table::parse(data) {
        for (_, der) in entries {
            let _ = Cert::from_der(&der);
        }
    }
});
