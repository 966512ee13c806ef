//! Certificate chains from untrusted bytes: parsing, the RFC 5280 role constraints and the
//! azure-trustedlaunch AK chain walk (with rustls-webpki behind it) must never panic.
//! Input: certificates as u16 big-endian length + DER; the first is the leaf, the last the root.
#![no_main]
use constellation_attest::azure::trustedlaunch::TrustedLaunchAkTrust;
use constellation_attest::certs::Cert;
use constellation_attest::certs::x509::path_constraint_errors;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut certs = Vec::new();
    let mut rest = data;
    while let [hi, lo, tail @ ..] = rest {
        let n = usize::from(u16::from_be_bytes([*hi, *lo]));
        let (der, next) = tail.split_at(n.min(tail.len()));
        if let Ok(c) = Cert::from_der(der) {
            certs.push(c);
        }
        rest = next;
        if certs.len() == 6 {
            break;
        }
    }
    let refs: Vec<&Cert> = certs.iter().collect();
    let _ = path_constraint_errors(&refs);
    if let [leaf, pool @ .., root] = certs.as_slice() {
        let trust = TrustedLaunchAkTrust {
            roots: vec![root.clone()],
            issuers: None,
        };
        let at = time::OffsetDateTime::from_unix_timestamp(1_800_000_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let _ = trust.verify_chain(leaf, pool, at);
    }
});
