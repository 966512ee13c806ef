//! PCS collateral JSON (TCB info, QE identity) and PCK SGX-extension DER parsing.
#![no_main]
use constellation_attest::tdx::collateral::{
    parse_pck_extension, parse_qe_identity, parse_tcb_info,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_tcb_info(data);
    let _ = parse_qe_identity(data);
    let _ = parse_pck_extension(data);
});
