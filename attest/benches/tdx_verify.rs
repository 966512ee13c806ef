//! TDX quote verification with collateral (and the PCK chain) cached, vs the two P-256 verifies
//! it must do (quote signature, QE report signature). Uses ../shared/testdata (skips if absent).
//! Run: cargo bench -p constellation-attest --bench tdx_verify

use std::time::{Duration, Instant};

use constellation_attest::certs::Cert;
use constellation_attest::policy::TdxPolicy;
use constellation_attest::tdx::{self, CollateralFiles, IntelRoot, Quote, TdxVerifier, Times};
use p256::ecdsa::signature::Verifier;

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
    let read = |p: &str| std::fs::read(format!("{dir}{p}")).ok();
    let (Some(quote), Some(tcb), Some(qe), Some(chain)) = (
        read("tdx/go-tdx-guest-quote-v5-fmspc90c06f.dat"),
        read("tdx/go-tdx-guest-tcbinfo-fmspc90c06f-2026-02.json"),
        read("tdx/go-tdx-guest-qe-identity-2023-06.json"),
        read("intel-roots/intel-tcb-signing-chain.pem"),
    ) else {
        constellation_testkit::skip_current(
            "the shared testdata folder ../shared/testdata is absent",
            "put it next to the repository clone",
        );
        return;
    };
    let files = CollateralFiles {
        tcb_info: Some(tcb),
        qe_identity: Some(qe),
        tcb_signing_chain: Some(chain),
        pck_crl: None,
        root_ca_crl: None,
    };
    // Collateral validity windows do not overlap the signing certificate's (see MANIFEST): no time check.
    let times = Times {
        at: None,
        collateral_at: None,
    };
    let col =
        tdx::verify_collateral(&files, &IntelRoot::pinned(), None).expect("collateral verifies");
    let v = TdxVerifier::new(IntelRoot::pinned(), Some(col), times);
    let policy = TdxPolicy::default();
    let full = per_op(|| {
        v.verify(&quote, &policy).expect("quote verifies");
    });
    let q = Quote::parse(&quote).expect("quote parses");
    let mut point = vec![4u8];
    point.extend_from_slice(&q.attest_key);
    let ak = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).expect("AK");
    let pck = Cert::from_pem_bundle(&q.pck_chain_pem).expect("PCK chain")[0]
        .p256_key()
        .expect("PCK key");
    let s1 = p256::ecdsa::Signature::from_slice(&q.signature).expect("sig");
    let s2 = p256::ecdsa::Signature::from_slice(&q.qe_report_signature).expect("sig");
    let two = per_op(|| {
        ak.verify(&q.signed, &s1).expect("quote sig");
        pck.verify(&q.qe_report.raw, &s2).expect("QE sig");
    });
    let cold = per_op(|| {
        tdx::verify_quote(&quote, Some(&files), &policy, times).expect("verifies");
    });
    println!(
        "tdx_verify: quote verification (collateral + PCK cached): {:.1} us/op = {:.0} quotes/s",
        full.as_secs_f64() * 1e6,
        1.0 / full.as_secs_f64()
    );
    println!(
        "tdx_verify: two P-256 verifies:                          {:.1} us/op",
        two.as_secs_f64() * 1e6
    );
    println!(
        "tdx_verify: ratio = {:.3}",
        full.as_secs_f64() / two.as_secs_f64()
    );
    println!(
        "tdx_verify: uncached (collateral + PCK chain each time): {:.1} us/op",
        cold.as_secs_f64() * 1e6
    );
}
