#![no_main]
//! TPMS_ATTEST (quote) and TPMT_SIGNATURE parsing.
use constellation_attest::tpm::{TpmAttest, TpmSignature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = TpmAttest::parse(data);
    let _ = TpmSignature::parse(data);
});
