//! TDX quote v4/v5 parsing and the PCK chain/extension parsing that follows.
#![no_main]
use constellation_attest::certs::Cert;
use constellation_attest::tdx::Quote;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = Quote::parse(data) {
        if let Ok(certs) = Cert::from_pem_bundle(&q.pck_chain_pem) {
            for c in certs {
                if let Some(ext) = c.extension(constellation_attest::tdx::collateral::OID_SGX_EXT) {
                    let _ = constellation_attest::tdx::collateral::parse_pck_extension(ext);
                }
            }
        }
    }
});
