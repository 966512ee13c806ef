//! qemu-tdx end to end through `AttestationConfig::validators()`: a synthetic Intel PKI, TD
//! quote, PCS collateral and CC event log; one test per rejection reason; and the real GCE
//! quote from ../shared/testdata.
#![allow(clippy::unwrap_used)]

mod common;
use common::synth_tdx::{IntelPki, QuoteSpec, pki, quote};
use constellation_attest::config::AttestationConfig;
use constellation_attest::document::{
    AttestationDocument, Evidence, TdxCollateral, TdxEvidence, TpmEvidence, tdx_report_data,
};
use constellation_attest::qemu_tdx::{QemuTdxError, QemuTdxValidator};
use constellation_attest::tdx::TdxError;
use constellation_attest::validator::{PlatformClaims, ValidationError, Validators};
use constellation_attest::variant::Variant;
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha384};

const NONCE: &[u8] = b"tdx-nonce-0123456789";
const USER: &[u8] = &[0x24; 32];

/// A TCG2 crypto-agile (SHA-384 only) CC event log and the RTMRs it replays to.
fn ccel(events: &[(u32, &[u8])]) -> (Vec<u8>, [[u8; 48]; 4]) {
    let mut spec = Vec::new();
    spec.extend(b"Spec ID Event03\0");
    spec.extend(0u32.to_le_bytes());
    spec.extend([0u8, 2, 0, 2]);
    spec.extend(1u32.to_le_bytes());
    spec.extend(0x000Cu16.to_le_bytes());
    spec.extend(48u16.to_le_bytes());
    spec.push(0);
    let mut log = Vec::new();
    log.extend(0u32.to_le_bytes());
    log.extend(3u32.to_le_bytes());
    log.extend([0u8; 20]);
    log.extend((spec.len() as u32).to_le_bytes());
    log.extend(spec);
    let mut rtmr = [[0u8; 48]; 4];
    for (mr, data) in events {
        let d: [u8; 48] = Sha384::digest(data).into();
        log.extend(mr.to_le_bytes());
        log.extend(0x8000_0001u32.to_le_bytes());
        log.extend(1u32.to_le_bytes());
        log.extend(0x000Cu16.to_le_bytes());
        log.extend(d);
        log.extend((data.len() as u32).to_le_bytes());
        log.extend(*data);
        let r = &mut rtmr[(*mr - 1) as usize];
        let mut h = Sha384::new();
        h.update(*r);
        h.update(d);
        r.copy_from_slice(&h.finalize());
    }
    log.extend([0u8; 64]); // unused area of the ACPI table
    (log, rtmr)
}

struct Fixture {
    pki: IntelPki,
    log: Vec<u8>,
    spec: QuoteSpec,
}

fn fixture() -> Fixture {
    let (log, rtmr) = ccel(&[(1, b"firmware"), (2, b"kernel"), (3, b"cmdline")]);
    let spec = QuoteSpec {
        report_data: tdx_report_data(USER, NONCE),
        rtmr,
        ..Default::default()
    };
    Fixture {
        pki: pki(),
        log,
        spec,
    }
}

fn measurements(spec: &QuoteSpec) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert(
        "0".into(),
        serde_json::json!({"expected": hex::encode(spec.mrtd), "warnOnly": false}),
    );
    for (i, r) in spec.rtmr.iter().enumerate() {
        m.insert(
            (i + 1).to_string(),
            serde_json::json!({"expected": hex::encode(r), "warnOnly": false}),
        );
    }
    serde_json::Value::Object(m)
}

fn validators(f: &Fixture, measurements: serde_json::Value) -> Validators {
    let json = serde_json::json!({
        "variant": "qemu-tdx",
        "measurements": measurements,
        "policy": {"version": 1, "tdx": {"root_ca_pem": f.pki.root_pem()}},
    });
    let c = AttestationConfig::from_json(json.to_string().as_bytes()).unwrap();
    Validators::new(c.validators().unwrap())
}

fn doc(f: &Fixture, spec: &QuoteSpec, log: Option<&[u8]>, collateral: bool) -> Vec<u8> {
    let q = quote(spec, &f.pki, &f.pki.pck_key);
    AttestationDocument::new(
        Variant::QemuTdx,
        USER.to_vec(),
        Evidence::Tdx(TdxEvidence {
            quote: q,
            event_log: log.map(|l| ByteBuf::from(l.to_vec())),
            collateral: collateral.then(|| TdxCollateral::from_files(&f.pki.collateral())),
        }),
    )
    .to_bytes()
}

fn quote_errors(e: ValidationError) -> Vec<TdxError> {
    match e {
        ValidationError::Platform { source, .. } => {
            match *source.downcast::<QemuTdxError>().unwrap() {
                QemuTdxError::Quote(v) => v,
                other => panic!("{other}"),
            }
        }
        other => panic!("expected a platform error, got {other}"),
    }
}

#[test]
fn qemu_tdx_verifies_with_collateral_and_event_log() {
    let f = fixture();
    let v = validators(&f, measurements(&f.spec));
    let d = doc(&f, &f.spec, Some(&f.log), true);
    let c = v.validate_bytes(&d, NONCE, USER).unwrap();
    assert_eq!(c.variant, Variant::QemuTdx);
    assert!(c.event_log_verified);
    assert_eq!(c.measurements.len(), 5);
    assert_eq!(c.measurements[&0], f.spec.mrtd.to_vec());
    let PlatformClaims::HardwareVerified { claims } = &c.platform else {
        panic!("{:?}", c.platform)
    };
    assert_eq!(claims["tcb_status"], "UpToDate");
}

#[test]
fn neg_qemu_tdx_nonce_not_bound() {
    let f = fixture();
    let v = validators(&f, measurements(&f.spec));
    let d = doc(&f, &f.spec, None, true);
    assert!(matches!(
        v.validate_bytes(&d, b"another nonce", USER).unwrap_err(),
        ValidationError::NonceOrUserDataMismatch { .. }
    ));
}

#[test]
fn neg_qemu_tdx_measurements_list_every_mismatch() {
    let f = fixture();
    let mut spec = f.spec.clone();
    spec.mrtd = [0x01; 48];
    spec.rtmr[1] = [0x02; 48];
    let v = validators(&f, measurements(&f.spec));
    let d = doc(&f, &spec, None, true);
    match v.validate_bytes(&d, NONCE, USER).unwrap_err() {
        ValidationError::MeasurementMismatch(m) => {
            assert_eq!(m.iter().map(|m| m.index).collect::<Vec<_>>(), vec![0, 2]);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn neg_qemu_tdx_event_log_does_not_replay() {
    let f = fixture();
    let (other_log, _) = ccel(&[(1, b"other firmware")]);
    let v = validators(&f, measurements(&f.spec));
    let d = doc(&f, &f.spec, Some(&other_log), true);
    match v.validate_bytes(&d, NONCE, USER).unwrap_err() {
        ValidationError::EventLogReplayMismatch(m) => {
            assert!(m.iter().any(|m| m.index == 1), "{m:?}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn neg_qemu_tdx_event_log_garbage() {
    let f = fixture();
    let v = validators(&f, measurements(&f.spec));
    let d = doc(&f, &f.spec, Some(b"not an event log at all, sorry"), true);
    let e = v.validate_bytes(&d, NONCE, USER).unwrap_err();
    let ValidationError::Platform { source, .. } = e else {
        panic!("{e}")
    };
    assert!(matches!(
        *source.downcast::<QemuTdxError>().unwrap(),
        QemuTdxError::EventLog(_)
    ));
}

#[test]
fn neg_qemu_tdx_without_collateral_under_default_policy() {
    let f = fixture();
    let v = validators(&f, measurements(&f.spec));
    let d = doc(&f, &f.spec, None, false);
    let errs = quote_errors(v.validate_bytes(&d, NONCE, USER).unwrap_err());
    assert!(
        errs.iter()
            .any(|e| matches!(e, TdxError::CollateralMissing(_))),
        "{errs:?}"
    );
}

#[test]
fn neg_qemu_tdx_signed_by_wrong_pck() {
    let f = fixture();
    let other = p256::ecdsa::SigningKey::random(&mut rand::thread_rng());
    let q = quote(&f.spec, &f.pki, &other);
    let d = AttestationDocument::new(
        Variant::QemuTdx,
        USER.to_vec(),
        Evidence::Tdx(TdxEvidence {
            quote: q,
            event_log: None,
            collateral: Some(TdxCollateral::from_files(&f.pki.collateral())),
        }),
    );
    let v = validators(&f, measurements(&f.spec));
    let errs = quote_errors(v.validate_bytes(&d.to_bytes(), NONCE, USER).unwrap_err());
    assert!(errs.contains(&TdxError::QeReportSignature), "{errs:?}");
}

#[test]
fn neg_qemu_tdx_pinned_root_rejects_foreign_chain() {
    let f = fixture();
    let json = serde_json::json!({"variant": "qemu-tdx", "measurements": measurements(&f.spec)});
    let c = AttestationConfig::from_json(json.to_string().as_bytes()).unwrap();
    let v = Validators::new(c.validators().unwrap());
    let d = doc(&f, &f.spec, None, true);
    let errs = quote_errors(v.validate_bytes(&d, NONCE, USER).unwrap_err());
    assert!(
        errs.iter()
            .any(|e| matches!(e, TdxError::UntrustedRoot { .. })),
        "{errs:?}"
    );
}

#[test]
fn neg_qemu_tdx_refuses_tpm_evidence() {
    let f = fixture();
    let v = validators(&f, measurements(&f.spec));
    let d = AttestationDocument::new(
        Variant::QemuTdx,
        USER.to_vec(),
        Evidence::Tpm(TpmEvidence {
            ak_public: vec![],
            quote: vec![],
            signature: vec![],
            pcrs: Default::default(),
            event_log: None,
            instance_info: vec![],
        }),
    );
    assert!(matches!(
        v.validate_bytes(&d.to_bytes(), NONCE, USER).unwrap_err(),
        ValidationError::EvidenceKindMismatch { .. }
    ));
}

/// The real GCE COS 113 quote: signatures and PCK chain verify (no collateral for its FMSPC
/// here, so no TCB status is required), its event log replays, but REPORT_DATA is all zero, so it
/// is rejected as not bound to our nonce — which is the right answer for a replayed quote.
#[test]
fn real_gce_quote_is_rejected_only_for_the_binding() {
    let (Some(q), Some(log)) = (
        common::td("tdx/gce-cos113-quote-v4-padded.dat"),
        common::td("tdx/gce-cos113-ccel-eventlog.bin"),
    ) else {
        return;
    };
    let policy = constellation_attest::policy::TdxPolicy {
        accepted_tcb_status: vec![],
        ..Default::default()
    };
    let v = QemuTdxValidator::new(Default::default(), policy).unwrap();
    let ev = TdxEvidence {
        quote: q,
        event_log: Some(ByteBuf::from(log)),
        collateral: None,
    };
    match v
        .validate_tdx_at(USER, &ev, NONCE, Some(common::t("2025-06-01T00:00:00Z")))
        .unwrap_err()
    {
        ValidationError::NonceOrUserDataMismatch { got, .. } => assert_eq!(got, "00".repeat(64)),
        other => panic!("{other}"),
    }
}

#[test]
fn cached_verifier_still_checks_every_document() {
    let f = fixture();
    let v = validators(&f, measurements(&f.spec));
    let good = doc(&f, &f.spec, Some(&f.log), true);
    for _ in 0..3 {
        v.validate_bytes(&good, NONCE, USER).unwrap();
    }
    // Same collateral (cache hit), other nonce: rejected.
    assert!(matches!(
        v.validate_bytes(&good, b"replay", USER).unwrap_err(),
        ValidationError::NonceOrUserDataMismatch { .. }
    ));
    // Other collateral (none): the cached verifier is not reused.
    let bare = doc(&f, &f.spec, None, false);
    let errs = quote_errors(v.validate_bytes(&bare, NONCE, USER).unwrap_err());
    assert!(
        errs.iter()
            .any(|e| matches!(e, TdxError::CollateralMissing(_))),
        "{errs:?}"
    );
    // A quote signed by another PCK under the cached verifier: rejected.
    let other = p256::ecdsa::SigningKey::random(&mut rand::thread_rng());
    let bad = AttestationDocument::new(
        Variant::QemuTdx,
        USER.to_vec(),
        Evidence::Tdx(TdxEvidence {
            quote: quote(&f.spec, &f.pki, &other),
            event_log: None,
            collateral: Some(TdxCollateral::from_files(&f.pki.collateral())),
        }),
    );
    let errs = quote_errors(v.validate_bytes(&bad.to_bytes(), NONCE, USER).unwrap_err());
    assert!(errs.contains(&TdxError::QeReportSignature), "{errs:?}");
}

/// The node's cluster-ID lock (RTMR3 via sysfs, not in the firmware's event log) and the
/// validator agree: RTMR3 = SHA-384(0⁴⁸ ‖ SHA-384(cluster ID)) at measurement index 4, and the
/// log's replay does not flag the runtime-only register.
#[test]
fn cluster_id_in_rtmr3_validates_with_event_log() {
    use constellation_attest::tdx::rtmr::{
        CLUSTER_ID_MEASUREMENT_INDEX, CLUSTER_ID_RTMR, expected_cluster_id_rtmr,
    };
    let f = fixture();
    let cid = [0x5a_u8; 32];
    let mut spec = f.spec.clone();
    spec.rtmr[CLUSTER_ID_RTMR as usize] = expected_cluster_id_rtmr(&cid);
    assert_eq!(CLUSTER_ID_MEASUREMENT_INDEX, 4);
    let v = validators(&f, measurements(&spec));
    let c = v
        .validate_bytes(&doc(&f, &spec, Some(&f.log), true), NONCE, USER)
        .unwrap();
    assert!(c.event_log_verified);
    assert_eq!(
        c.measurements[&CLUSTER_ID_MEASUREMENT_INDEX],
        expected_cluster_id_rtmr(&cid).to_vec()
    );
    // Locked to another cluster: the measurement at index 4 is what fails.
    let mut other = spec.clone();
    other.rtmr[CLUSTER_ID_RTMR as usize] = expected_cluster_id_rtmr(&[0x5b; 32]);
    match v
        .validate_bytes(&doc(&f, &other, Some(&f.log), true), NONCE, USER)
        .unwrap_err()
    {
        ValidationError::MeasurementMismatch(m) => {
            assert_eq!(m.iter().map(|m| m.index).collect::<Vec<_>>(), vec![4]);
        }
        other => panic!("{other}"),
    }
    // A log that does record RTMR3 events is still replayed for it.
    let (log4, _) = ccel(&[(1, b"firmware"), (2, b"kernel"), (3, b"cmdline"), (4, b"x")]);
    match v
        .validate_bytes(&doc(&f, &spec, Some(&log4), true), NONCE, USER)
        .unwrap_err()
    {
        ValidationError::EventLogReplayMismatch(m) => {
            assert_eq!(m.iter().map(|m| m.index).collect::<Vec<_>>(), vec![4]);
        }
        other => panic!("{other}"),
    }
}
