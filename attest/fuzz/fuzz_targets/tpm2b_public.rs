#![no_main]
//! TPM2B_PUBLIC parsing and name computation.
use constellation_attest::tpm::TpmPublic;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = TpmPublic::parse_tpm2b(data) {
        let _ = p.name();
        let _ = p.is_restricted_signing_key();
    }
});
