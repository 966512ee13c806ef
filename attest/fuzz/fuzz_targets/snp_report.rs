//! SNP report parsing and field access on arbitrary bytes.
#![no_main]
use constellation_attest::snp::{SnpReport, Tcb};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = SnpReport::parse(data) {
        let _ = (
            r.policy().debug(),
            r.signing_key(),
            r.cpuid(),
            r.mit_vectors(),
            r.signature_rs(),
        );
        let _ = Tcb::from_raw(r.reported_tcb_raw(), r.turin_layout());
        let _ = Tcb::from_raw(r.committed_tcb_raw(), true);
    }
});
