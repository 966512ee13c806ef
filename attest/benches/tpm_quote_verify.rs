//! Quote validation throughput (RSA-2048 AK, 24 PCRs, real swtpm quote) vs one bare RSA-2048
//! PKCS#1 verify of the same signature, in the same run.
//! Run: cargo bench -p constellation-attest --features tpm,test-support --bench tpm_quote_verify

use std::time::{Duration, Instant};

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use constellation_attest::measurements::{Measurement, Measurements};
use constellation_attest::testing::Swtpm;
use constellation_attest::tpm::issuer::{TpmIssuer, TpmIssuerConfig};
use constellation_attest::tpm::{TpmKey, TpmPublic, TpmSignature};
use constellation_attest::validator::{Issuer, Validator};
use constellation_attest::{AttestationDocument, Evidence, Variant, qemu_vtpm};

fn per_op(mut f: impl FnMut()) -> Duration {
    for _ in 0..200 {
        f();
    }
    let mut n = 0u32;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        for _ in 0..100 {
            f();
        }
        n += 100;
    }
    start.elapsed() / n
}

fn main() {
    let tpm = Swtpm::start().expect("swtpm on PATH (scripts/install-deps.sh)");
    let issuer =
        TpmIssuer::open(TpmIssuerConfig::new(tpm.tcti(), Variant::QemuVtpm)).expect("issuer");
    let nonce = [5u8; 32];
    let doc = issuer.issue(&[1u8; 32], &nonce).expect("quote");
    let bytes = doc.to_bytes();
    let mut m = Measurements::new();
    for (i, v) in issuer.read_pcrs().expect("pcrs") {
        m.insert(i, Measurement::enforced(v.to_vec()).expect("32 bytes"));
    }
    let v = qemu_vtpm::validator(m);
    v.validate(&doc, &nonce).expect("valid");

    let Evidence::Tpm(ev) = &doc.evidence else {
        unreachable!("tpm evidence")
    };
    let ak = TpmPublic::parse_tpm2b(&ev.ak_public).expect("ak");
    let TpmKey::Rsa { modulus, .. } = &ak.key else {
        unreachable!("rsa ak")
    };
    let TpmSignature::RsaSsa { sig, .. } = TpmSignature::parse(&ev.signature).expect("sig") else {
        unreachable!("rsassa")
    };
    let key = RsaPublicKeyComponents {
        n: modulus.as_slice(),
        e: &[1u8, 0, 1][..],
    };

    let full = per_op(|| {
        let d = AttestationDocument::from_bytes(&bytes).expect("decode");
        v.validate(&d, &nonce).expect("valid");
    });
    let bare = per_op(|| {
        key.verify(&RSA_PKCS1_2048_8192_SHA256, &ev.quote, &sig)
            .expect("verify")
    });
    println!(
        "tpm_quote_verify: decode+validate {:.1} us/op = {:.0} ops/s/core; bare RSA-2048 verify {:.1} us/op = {:.0} ops/s; ratio {:.2}x",
        full.as_secs_f64() * 1e6,
        1.0 / full.as_secs_f64(),
        bare.as_secs_f64() * 1e6,
        1.0 / bare.as_secs_f64(),
        full.as_secs_f64() / bare.as_secs_f64()
    );
    drop(issuer);
}
