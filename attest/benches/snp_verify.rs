//! Full SEV-SNP report verification with the chain cached (a verified VCEK) vs one ECDSA-P384
//! verify of the same report, measured in the same run. Uses ../shared/testdata (skips if absent).
//! Run: cargo bench -p constellation-attest --bench snp_verify

use std::time::{Duration, Instant};

use constellation_attest::certs::Cert;
use constellation_attest::policy::SnpPolicy;
use constellation_attest::snp::{self, AmdRoots, ReportDataBinding, SnpReport};
use p384::ecdsa::signature::Verifier;

fn per_op(mut f: impl FnMut()) -> Duration {
    for _ in 0..50 {
        f();
    }
    let mut n = 0u32;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        for _ in 0..20 {
            f();
        }
        n += 20;
    }
    start.elapsed() / n
}

fn main() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/");
    let (Ok(report), Ok(vcek)) = (
        std::fs::read(format!("{dir}snp/milan-vcek-report-trustee.bin")),
        std::fs::read(format!("{dir}snp/milan-vcek-trustee.der")),
    ) else {
        constellation_testkit::skip_current(
            "the shared testdata folder ../shared/testdata is absent",
            "put it next to the repository clone",
        );
        return;
    };
    let leaf = Cert::from_der(&vcek).expect("VCEK parses");
    let signer =
        snp::verify_chain(&leaf, None, &AmdRoots::builtin(), None).expect("chain verifies");
    let policy = SnpPolicy::default();
    let full = per_op(|| {
        let r = SnpReport::parse(&report).expect("report parses");
        snp::verify_report(&r, &signer, &policy, &ReportDataBinding::None)
            .expect("report verifies");
    });
    // The bare primitive: one P-384 verify over the same bytes with the same key and signature.
    let r = SnpReport::parse(&report).expect("report parses");
    let (rl, sl) = r.signature_rs();
    let mut rb: Vec<u8> = rl[..48].to_vec();
    rb.reverse();
    let mut sb: Vec<u8> = sl[..48].to_vec();
    sb.reverse();
    let sig = p384::ecdsa::Signature::from_scalars(
        <[u8; 48]>::try_from(rb.as_slice()).expect("48"),
        <[u8; 48]>::try_from(sb.as_slice()).expect("48"),
    )
    .expect("signature");
    let key = signer.key;
    let msg = r.signed_bytes().to_vec();
    let one = per_op(|| key.verify(&msg, &sig).expect("verifies"));
    let chain = per_op(|| {
        snp::verify_chain(&leaf, None, &AmdRoots::builtin(), None).expect("chain");
    });
    println!(
        "snp_verify: full verification (chain cached): {:.1} us/op ({:.0}/s)",
        full.as_secs_f64() * 1e6,
        1.0 / full.as_secs_f64()
    );
    println!(
        "snp_verify: one ECDSA-P384 verify:             {:.1} us/op",
        one.as_secs_f64() * 1e6
    );
    println!(
        "snp_verify: ratio full/one = {:.3} (goal <= 1.3)",
        full.as_secs_f64() / one.as_secs_f64()
    );
    println!(
        "snp_verify: chain verification (uncached, incl. parsing built-in roots): {:.1} us/op",
        chain.as_secs_f64() * 1e6
    );
}
