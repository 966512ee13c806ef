//! Issue with a real TPM 2.0 (swtpm) and validate with the pure-Rust validator.
// Test helpers outside #[test] fns unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]
#![cfg(all(feature = "tpm", feature = "test-support"))]

use std::sync::Arc;

use constellation_attest::document::{AttestationDocument, Evidence};
use constellation_attest::eventlog::EventLogBuilder;
use constellation_attest::measurements::{Measurement, Measurements, expected_pcr15};
use constellation_attest::testing::Swtpm;
use constellation_attest::tpm::issuer::{AkAlgorithm, TpmIssuer, TpmIssuerConfig};
use constellation_attest::validator::{Issuer, ValidationError, Validator, validate_document};
use constellation_attest::{Variant, qemu_vtpm};
use sha2::{Digest, Sha256};

// Field order matters: the issuer (TPM connection) drops before swtpm is killed.
struct Setup {
    issuer: TpmIssuer,
    _tpm: Swtpm,
    _dir: tempfile::TempDir,
}

fn setup(ak: AkAlgorithm, with_log: bool) -> Setup {
    let tpm = Swtpm::start().expect("start swtpm (install swtpm: scripts/install-deps.sh)");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TpmIssuerConfig::new(tpm.tcti(), Variant::QemuVtpm);
    cfg.ak = ak;
    if with_log {
        cfg.event_log = Some(dir.path().join("log"));
    }
    let issuer = TpmIssuer::open(cfg.clone()).expect("open TPM issuer");
    if with_log {
        // A firmware-like log: measure into PCRs 4 and 9 and write the log.
        let mut b = EventLogBuilder::new();
        for (pcr, data) in [(4u32, &b"kernel"[..]), (4, b"initrd"), (9, b"cmdline")] {
            let d = b.measure(pcr, 0x8000_0003, data);
            issuer.extend_sha256(pcr, d).unwrap();
        }
        std::fs::write(dir.path().join("log"), b.build()).unwrap();
    }
    Setup {
        issuer,
        _tpm: tpm,
        _dir: dir,
    }
}

fn all_enforced(issuer: &TpmIssuer) -> Measurements {
    let mut m = Measurements::new();
    for (i, v) in issuer.read_pcrs().unwrap() {
        m.insert(i, Measurement::enforced(v.to_vec()).unwrap());
    }
    m
}

fn tpm_ev(doc: &mut AttestationDocument) -> &mut constellation_attest::TpmEvidence {
    match &mut doc.evidence {
        Evidence::Tpm(t) => t,
        #[allow(unreachable_patterns)]
        _ => panic!("not tpm"),
    }
}

#[test]
fn issue_and_validate_rsa_with_event_log() {
    let s = setup(AkAlgorithm::Rsa2048, true);
    let nonce = [7u8; 32];
    let user = Sha256::digest(b"spki").to_vec();
    let doc = s.issuer.issue(&user, &nonce).unwrap();
    let bytes = doc.to_bytes();
    let doc = AttestationDocument::from_bytes(&bytes).unwrap();
    let v = qemu_vtpm::validator(all_enforced(&s.issuer));
    let claims = v.validate(&doc, &nonce).unwrap();
    assert_eq!(claims.measurements.len(), 24);
    assert!(claims.event_log_verified);
    assert_eq!(claims.user_data, user);
    assert_eq!(
        claims.measurements[&4],
        s.issuer.read_pcrs().unwrap()[&4].to_vec()
    );

    // A log that does not match the TPM is refused.
    let mut bad = doc.clone();
    let mut b = EventLogBuilder::new();
    b.measure(4, 0x8000_0003, b"other kernel");
    tpm_ev(&mut bad).event_log = Some(b.build().into());
    assert!(matches!(
        v.validate(&bad, &nonce),
        Err(ValidationError::EventLogReplayMismatch(m)) if m.len() == 1 && m[0].index == 4
    ));
}

#[test]
fn ecc_and_pss_aks_validate() {
    for ak in [AkAlgorithm::EccP256, AkAlgorithm::Rsa2048Pss] {
        let s = setup(ak, false);
        let nonce = [1u8; 32];
        let doc = s.issuer.issue(b"u", &nonce).unwrap();
        let v = qemu_vtpm::validator(all_enforced(&s.issuer));
        v.validate(&doc, &nonce)
            .unwrap_or_else(|e| panic!("{ak:?}: {e}"));
    }
}

#[test]
fn rejections_name_their_cause() {
    let s = setup(AkAlgorithm::Rsa2048, false);
    let nonce = [9u8; 32];
    let doc = s.issuer.issue(b"user", &nonce).unwrap();
    let good = all_enforced(&s.issuer);
    let v = qemu_vtpm::validator(good.clone());
    v.validate(&doc, &nonce).unwrap();

    // Several PCRs differ: every index is listed with expected and got.
    let mut m = good.clone();
    m.insert(1, Measurement::enforced(vec![0xaa; 32]).unwrap());
    m.insert(7, Measurement::enforced(vec![0xbb; 32]).unwrap());
    m.insert(8, Measurement::warn_only(vec![0xcc; 32]).unwrap());
    let err = qemu_vtpm::validator(m.clone())
        .validate(&doc, &nonce)
        .unwrap_err();
    match &err {
        ValidationError::MeasurementMismatch(v) => {
            assert_eq!(v.iter().map(|x| x.index).collect::<Vec<_>>(), vec![1, 7]);
            assert_eq!(v[0].expected, vec![0xaa; 32]);
            assert_eq!(v[0].got, Some(vec![0u8; 32]));
        }
        e => panic!("{e}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("index 1") && msg.contains("index 7"), "{msg}");
    // warn-only alone: accepted with a warning.
    let mut w = good.clone();
    w.insert(8, Measurement::warn_only(vec![0xcc; 32]).unwrap());
    let c = qemu_vtpm::validator(w).validate(&doc, &nonce).unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.warnings[0].index, 8);

    // Replayed with another nonce.
    assert!(matches!(
        v.validate(&doc, &[8u8; 32]),
        Err(ValidationError::NonceOrUserDataMismatch { .. })
    ));

    // User data not matching what the caller expects (aTLS: the certificate key).
    let vs: Vec<Arc<dyn Validator>> = vec![Arc::new(v.clone())];
    assert!(matches!(
        validate_document(&vs, &doc, &nonce, b"other key"),
        Err(ValidationError::UserDataMismatch { .. })
    ));
    // User data altered inside the document breaks the binding.
    let mut d = doc.clone();
    d.user_data = b"evil".to_vec();
    assert!(matches!(
        v.validate(&d, &nonce),
        Err(ValidationError::NonceOrUserDataMismatch { .. })
    ));

    // Signature byte flipped.
    let mut d = doc.clone();
    let sig = &mut tpm_ev(&mut d).signature;
    let last = sig.len() - 1;
    sig[last] ^= 1;
    assert!(matches!(
        v.validate(&d, &nonce),
        Err(ValidationError::BadSignature)
    ));

    // Quote byte flipped (e.g. the PCR digest): signature no longer verifies.
    let mut d = doc.clone();
    let q = &mut tpm_ev(&mut d).quote;
    let last = q.len() - 1;
    q[last] ^= 1;
    assert!(matches!(
        v.validate(&d, &nonce),
        Err(ValidationError::BadSignature)
    ));

    // PCR value in the document not matching the quoted digest.
    let mut d = doc.clone();
    tpm_ev(&mut d).pcrs.insert(3, vec![1u8; 32].into());
    assert!(matches!(
        v.validate(&d, &nonce),
        Err(ValidationError::PcrDigestMismatch { .. })
    ));
    let mut d = doc.clone();
    tpm_ev(&mut d).pcrs.remove(&3);
    assert!(matches!(
        v.validate(&d, &nonce),
        Err(ValidationError::PcrSelectionMismatch { .. })
    ));

    // Wrong attestation key type: an ECC AK with an RSA signature.
    let ecc = setup(AkAlgorithm::EccP256, false);
    let ecc_doc = ecc.issuer.issue(b"user", &nonce).unwrap();
    let mut d = doc.clone();
    tpm_ev(&mut d).ak_public = match &ecc_doc.evidence {
        Evidence::Tpm(t) => t.ak_public.clone(),
        #[allow(unreachable_patterns)]
        _ => unreachable!(),
    };
    assert!(matches!(
        v.validate(&d, &nonce),
        Err(ValidationError::AkKeyTypeMismatch {
            key: "ECC",
            signature: "RSASSA"
        })
    ));
    // Another RSA key than the signer: signature fails.
    let other = setup(AkAlgorithm::Rsa2048Pss, false);
    let other_doc = other.issuer.issue(b"user", &nonce).unwrap();
    let mut d = doc.clone();
    tpm_ev(&mut d).ak_public = match &other_doc.evidence {
        Evidence::Tpm(t) => t.ak_public.clone(),
        #[allow(unreachable_patterns)]
        _ => unreachable!(),
    };
    assert!(matches!(
        v.validate(&d, &nonce),
        Err(ValidationError::BadSignature)
    ));

    // Document of another variant.
    let mut d = doc.clone();
    d.variant = Variant::AwsNitroTpm;
    assert!(matches!(
        v.validate(&d, &nonce),
        Err(ValidationError::VariantMismatch { .. })
    ));

    // Truncated or garbage documents: errors, never panics.
    let bytes = doc.to_bytes();
    for n in [0, 1, 10, bytes.len() / 2, bytes.len() - 1] {
        assert!(AttestationDocument::from_bytes(&bytes[..n]).is_err());
    }
    let mut garbage = bytes.clone();
    for (i, b) in garbage.iter_mut().enumerate() {
        *b = b.wrapping_mul(31).wrapping_add(i as u8);
    }
    assert!(AttestationDocument::from_bytes(&garbage).is_err());
}

#[test]
fn pcr15_cluster_id_extension() {
    let s = setup(AkAlgorithm::EccP256, false);
    let cluster_id = Sha256::digest(b"some cluster").to_vec();
    assert_eq!(s.issuer.read_pcrs().unwrap()[&15], [0u8; 32]);
    s.issuer.extend_cluster_id(&cluster_id).unwrap();
    assert_eq!(
        s.issuer.read_pcrs().unwrap()[&15],
        expected_pcr15(&cluster_id)
    );

    let nonce = [3u8; 32];
    let doc = s.issuer.issue(b"u", &nonce).unwrap();
    let mut m = Measurements::new();
    m.insert(
        15,
        Measurement::enforced(expected_pcr15(&cluster_id).to_vec()).unwrap(),
    );
    let claims = qemu_vtpm::validator(m).validate(&doc, &nonce).unwrap();
    assert_eq!(
        claims.measurements[&15],
        expected_pcr15(&cluster_id).to_vec()
    );

    let mut wrong = Measurements::new();
    wrong.insert(
        15,
        Measurement::enforced(expected_pcr15(b"other").to_vec()).unwrap(),
    );
    assert!(matches!(
        qemu_vtpm::validator(wrong).validate(&doc, &nonce),
        Err(ValidationError::MeasurementMismatch(v)) if v.len() == 1 && v[0].index == 15
    ));
}

#[test]
fn swtpm_with_ek_certificates_starts() {
    let tpm = Swtpm::start_with_ek_cert().expect("swtpm_setup --create-ek-cert");
    let issuer = TpmIssuer::open(TpmIssuerConfig {
        ak: AkAlgorithm::EccP256,
        ..TpmIssuerConfig::new(tpm.tcti(), Variant::QemuVtpm)
    })
    .unwrap();
    let doc = issuer.issue(b"x", b"n").unwrap();
    qemu_vtpm::validator(Measurements::new())
        .validate(&doc, b"n")
        .unwrap();
}

/// Regenerates the recorded swtpm vectors that the pure-Rust tests (tests/tpm_vectors.rs) use:
/// `cargo test -p constellation-attest --features tpm,test-support --test tpm_swtpm -- --ignored`
#[test]
#[ignore = "writes tests/data; run by hand to refresh the vectors"]
fn regenerate_vectors() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    std::fs::create_dir_all(&dir).unwrap();
    let nonce = [7u8; 32];
    let user = Sha256::digest(b"vector spki").to_vec();
    for (name, ak, log) in [
        ("qemu-vtpm-rsa", AkAlgorithm::Rsa2048, true),
        ("qemu-vtpm-ecc", AkAlgorithm::EccP256, false),
    ] {
        let s = setup(ak, log);
        s.issuer.extend_cluster_id(b"vector cluster").unwrap();
        let doc = s.issuer.issue(&user, &nonce).unwrap();
        std::fs::write(dir.join(format!("{name}.cbor")), doc.to_bytes()).unwrap();
        std::fs::write(
            dir.join(format!("{name}.measurements.json")),
            all_enforced(&s.issuer).to_json(),
        )
        .unwrap();
    }
}
