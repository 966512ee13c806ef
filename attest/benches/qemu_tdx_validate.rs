//! qemu-tdx document validation as the JoinService does it (decode, quote, collateral and PCK
//! chain, binding, measurements), with the validator's verifier cache vs without it, next to one
//! P-256 verify. Synthetic Intel PKI and quote (no shared testdata needed).
//! Run: cargo bench -p constellation-attest --bench qemu_tdx_validate
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::synth_tdx::{QuoteSpec, pki, quote};
use constellation_attest::config::AttestationConfig;
use constellation_attest::document::{
    AttestationDocument, Evidence, TdxCollateral, TdxEvidence, tdx_report_data,
};
use constellation_attest::qemu_tdx::QemuTdxValidator;
use constellation_attest::validator::Validators;
use constellation_attest::variant::Variant;
use p256::ecdsa::signature::{Signer, Verifier};

fn per_op(mut f: impl FnMut()) -> Duration {
    for _ in 0..20 {
        f();
    }
    let mut n = 0u32;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) {
        for _ in 0..10 {
            f();
        }
        n += 10;
    }
    start.elapsed() / n
}

fn main() {
    let (nonce, user) = (b"bench-nonce", [7u8; 32]);
    let p = pki();
    let spec = QuoteSpec {
        report_data: tdx_report_data(&user, nonce),
        ..Default::default()
    };
    let ev = TdxEvidence {
        quote: quote(&spec, &p, &p.pck_key),
        event_log: None,
        collateral: Some(TdxCollateral::from_files(&p.collateral())),
    };
    let doc = AttestationDocument::new(Variant::QemuTdx, user.to_vec(), Evidence::Tdx(ev.clone()))
        .to_bytes();
    let policy = serde_json::json!({"version": 1, "tdx": {"root_ca_pem": p.root_pem()}});
    // MRTD of the synthetic quote, enforced: a config must pin the boot.
    let measurements = serde_json::json!({"0": {"expected": "44".repeat(48), "warnOnly": false}});
    let json =
        serde_json::json!({"variant": "qemu-tdx", "measurements": measurements, "policy": policy});
    let c = AttestationConfig::from_json(json.to_string().as_bytes()).unwrap();
    let cached = Validators::new(c.validators().unwrap());
    let t_cached = per_op(|| {
        cached.validate_bytes(&doc, nonce, &user).unwrap();
    });
    let uncached = QemuTdxValidator::new(Default::default(), c.policy.tdx.clone()).unwrap();
    let now = Some(time::OffsetDateTime::now_utc());
    let t_uncached = per_op(|| {
        uncached.validate_tdx_at(&user, &ev, nonce, now).unwrap();
    });
    let key = p256::ecdsa::SigningKey::random(&mut rand::thread_rng());
    let sig: p256::ecdsa::Signature = key.sign(b"message");
    let vk = key.verifying_key();
    let t_p256 = per_op(|| {
        vk.verify(b"message", &sig).unwrap();
    });
    println!(
        "qemu-tdx document, verifier cached:   {t_cached:?} ({:.0}/s)",
        1.0 / t_cached.as_secs_f64()
    );
    println!(
        "qemu-tdx document, no verifier cache: {t_uncached:?} ({:.0}/s)",
        1.0 / t_uncached.as_secs_f64()
    );
    println!("one P-256 verify:                     {t_p256:?}");
    println!(
        "cached / (2 x P-256) = {:.2}",
        t_cached.as_secs_f64() / (2.0 * t_p256.as_secs_f64())
    );
}
