//! TDX verification on an Intel-like PKI, quotes and collateral the test generates itself (runs
//! in a fresh clone): a positive path and one test per rejection reason.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod common;
use common::synth::{Y2020, Y2040};
use common::synth_tdx::{self, IntelPki, QuoteSpec, pki, quote};
use constellation_attest::policy::{Hex, TdxPolicy};
use constellation_attest::tdx::{self, CollateralFiles, QuoteError, TcbStatus, TdxError, Times};

fn times() -> Times {
    let t = Some(time::macros::datetime!(2030-01-01 0:00 UTC));
    Times {
        at: t,
        collateral_at: t,
    }
}

fn policy(p: &IntelPki) -> TdxPolicy {
    TdxPolicy {
        root_ca_pem: Some(p.root_pem()),
        ..Default::default()
    }
}

fn run(
    q: &[u8],
    _p: &IntelPki,
    c: &CollateralFiles,
    pol: &TdxPolicy,
) -> Result<tdx::VerifiedTdx, Vec<TdxError>> {
    tdx::verify_quote(q, Some(c), pol, times())
}

fn only(r: Result<tdx::VerifiedTdx, Vec<TdxError>>) -> TdxError {
    let e = r.unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    e.into_iter().next().unwrap()
}

#[test]
fn synthetic_quote_is_up_to_date() {
    let p = pki();
    let q = quote(&QuoteSpec::default(), &p, &p.pck_key);
    let v = run(&q, &p, &p.collateral(), &policy(&p)).unwrap();
    assert_eq!(v.tcb_status, Some(TcbStatus::UpToDate));
    assert_eq!(v.mrtd, hex::encode([0x44; 48]));
    assert_eq!(v.fmspc, "90c06f000000");
    assert_eq!(v.pce_svn, 13);
}

#[test]
fn neg_qe_report_signed_by_wrong_pck() {
    let p = pki();
    let other = p256::ecdsa::SigningKey::random(&mut rand::thread_rng());
    let q = quote(&QuoteSpec::default(), &p, &other);
    assert_eq!(
        only(run(&q, &p, &p.collateral(), &policy(&p))),
        TdxError::QeReportSignature
    );
}

#[test]
fn neg_quote_body_altered() {
    let p = pki();
    let mut q = quote(&QuoteSpec::default(), &p, &p.pck_key);
    q[48 + 200] ^= 1;
    assert_eq!(
        only(run(&q, &p, &p.collateral(), &policy(&p))),
        TdxError::QuoteSignature
    );
}

#[test]
fn neg_attestation_key_not_bound() {
    let p = pki();
    let q = quote(
        &QuoteSpec {
            bound_auth_data: Some(vec![1; 32]),
            ..Default::default()
        },
        &p,
        &p.pck_key,
    );
    assert_eq!(
        only(run(&q, &p, &p.collateral(), &policy(&p))),
        TdxError::AttestationKeyBinding
    );
}

#[test]
fn neg_tcb_info_signature_broken() {
    let p = pki();
    let q = quote(&QuoteSpec::default(), &p, &p.pck_key);
    let mut c = p.collateral();
    let s = String::from_utf8(c.tcb_info.unwrap())
        .unwrap()
        .replacen("OutOfDate", "OutOfDatf", 1);
    c.tcb_info = Some(s.into_bytes());
    assert_eq!(
        only(run(&q, &p, &c, &policy(&p))),
        TdxError::CollateralSignature("TCB info")
    );
}

#[test]
fn neg_qe_identity_signature_broken() {
    let p = pki();
    let q = quote(&QuoteSpec::default(), &p, &p.pck_key);
    let mut c = p.collateral();
    let s = String::from_utf8(c.qe_identity.unwrap()).unwrap().replacen(
        "\"isvprodid\":2",
        "\"isvprodid\":3",
        1,
    );
    c.qe_identity = Some(s.into_bytes());
    assert_eq!(
        only(run(&q, &p, &c, &policy(&p))),
        TdxError::CollateralSignature("QE identity")
    );
}

#[test]
fn neg_collateral_signed_by_other_key() {
    let p = pki();
    let other = pki();
    let q = quote(&QuoteSpec::default(), &p, &p.pck_key);
    let mut c = p.collateral();
    c.tcb_info = Some(
        other
            .sign_json(
                "tcbInfo",
                &p.tcb_info_body("90c06f000000", "2039-01-01T00:00:00Z"),
            )
            .into_bytes(),
    );
    assert_eq!(
        only(run(&q, &p, &c, &policy(&p))),
        TdxError::CollateralSignature("TCB info")
    );
}

#[test]
fn neg_untrusted_root() {
    let p = pki();
    let q = quote(&QuoteSpec::default(), &p, &p.pck_key);
    // Pinned Intel root (no policy override): the synthetic chain is refused.
    let e = tdx::verify_quote(
        &q,
        None,
        &TdxPolicy {
            accepted_tcb_status: vec![],
            ..Default::default()
        },
        times(),
    )
    .unwrap_err();
    assert!(
        matches!(&e[0], TdxError::UntrustedRoot { chain: "PCK", .. }),
        "{e:?}"
    );
}

#[test]
fn neg_expired_pck_at_reference_time() {
    let p = synth_tdx::pki_with((Y2020, Y2020 + 86_400));
    let q = quote(&QuoteSpec::default(), &p, &p.pck_key);
    let e = only(run(&q, &p, &p.collateral(), &policy(&p)));
    assert!(
        matches!(e, TdxError::CertNotValidAt { ref subject, .. } if subject == "Intel SGX PCK Certificate"),
        "{e:?}"
    );
}

#[test]
fn neg_collateral_expired() {
    let p = pki();
    let q = quote(&QuoteSpec::default(), &p, &p.pck_key);
    let mut c = p.collateral();
    c.tcb_info = Some(
        p.sign_json(
            "tcbInfo",
            &p.tcb_info_body("90c06f000000", "2025-01-01T00:00:00Z"),
        )
        .into_bytes(),
    );
    assert!(matches!(
        only(run(&q, &p, &c, &policy(&p))),
        TdxError::CollateralNotValidAt {
            what: "TCB info",
            ..
        }
    ));
}

#[test]
fn neg_fmspc_mismatch() {
    let p = pki();
    let q = quote(&QuoteSpec::default(), &p, &p.pck_key);
    let mut c = p.collateral();
    c.tcb_info = Some(
        p.sign_json(
            "tcbInfo",
            &p.tcb_info_body("00806f050000", "2039-01-01T00:00:00Z"),
        )
        .into_bytes(),
    );
    assert!(matches!(
        only(run(&q, &p, &c, &policy(&p))),
        TdxError::FmspcMismatch { .. }
    ));
}

#[test]
fn neg_tcb_status_out_of_date_not_accepted() {
    let p = pki();
    let mut spec = QuoteSpec::default();
    spec.tee_tcb_svn[0] = 4;
    let q = quote(&spec, &p, &p.pck_key);
    assert_eq!(
        only(run(&q, &p, &p.collateral(), &policy(&p))),
        TdxError::TcbStatus {
            status: "OutOfDate".into(),
            accepted: vec!["UpToDate".into()]
        }
    );
    let pol = TdxPolicy {
        accepted_tcb_status: vec!["UpToDate".into(), "OutOfDate".into()],
        ..policy(&p)
    };
    assert_eq!(
        run(&q, &p, &p.collateral(), &pol).unwrap().tcb_status,
        Some(TcbStatus::OutOfDate)
    );
}

#[test]
fn neg_tcb_level_not_supported() {
    let p = pki();
    let mut spec = QuoteSpec::default();
    spec.tee_tcb_svn[0] = 2;
    let q = quote(&spec, &p, &p.pck_key);
    assert!(
        run(&q, &p, &p.collateral(), &policy(&p))
            .unwrap_err()
            .iter()
            .any(|e| matches!(e, TdxError::TcbLevelNotSupported { .. }))
    );
}

#[test]
fn neg_qe_identity_mrsigner_mismatch() {
    let p = pki();
    let q = quote(
        &QuoteSpec {
            qe_mrsigner: [0x22; 32],
            ..Default::default()
        },
        &p,
        &p.pck_key,
    );
    assert_eq!(
        only(run(&q, &p, &p.collateral(), &policy(&p))),
        TdxError::QeIdentityMismatch("MRSIGNER")
    );
}

#[test]
fn neg_qe_svn_below_identity_levels() {
    let p = pki();
    let q = quote(
        &QuoteSpec {
            qe_isvsvn: 3,
            ..Default::default()
        },
        &p,
        &p.pck_key,
    );
    assert_eq!(
        only(run(&q, &p, &p.collateral(), &policy(&p))),
        TdxError::QeTcbNotSupported(3)
    );
}

#[test]
fn neg_qe_vendor_id() {
    let p = pki();
    let q = quote(
        &QuoteSpec {
            qe_vendor_id: [1; 16],
            ..Default::default()
        },
        &p,
        &p.pck_key,
    );
    assert!(matches!(
        only(run(&q, &p, &p.collateral(), &policy(&p))),
        TdxError::QeVendorId(_)
    ));
}

#[test]
fn neg_policy_minimums_and_values() {
    let p = pki();
    let q = quote(&QuoteSpec::default(), &p, &p.pck_key);
    let c = p.collateral();
    let base = policy(&p);
    assert_eq!(
        only(run(
            &q,
            &p,
            &c,
            &TdxPolicy {
                minimum_qe_svn: 5,
                ..base.clone()
            }
        )),
        TdxError::QeSvn { got: 4, min: 5 }
    );
    assert_eq!(
        only(run(
            &q,
            &p,
            &c,
            &TdxPolicy {
                minimum_pce_svn: 14,
                ..base.clone()
            }
        )),
        TdxError::PceSvn { got: 13, min: 14 }
    );
    let mut min = [0u8; 16];
    min[0] = 6;
    assert!(matches!(
        only(run(
            &q,
            &p,
            &c,
            &TdxPolicy {
                minimum_tee_tcb_svn: Some(Hex(min)),
                ..base.clone()
            }
        )),
        TdxError::TeeTcbSvn { .. }
    ));
    assert!(matches!(
        only(run(
            &q,
            &p,
            &c,
            &TdxPolicy {
                mrseam: vec![Hex([1; 48])],
                ..base.clone()
            }
        )),
        TdxError::Mrseam(_)
    ));
    assert!(matches!(
        only(run(
            &q,
            &p,
            &c,
            &TdxPolicy {
                xfam: Some(Hex([0; 8])),
                ..base.clone()
            }
        )),
        TdxError::Xfam { .. }
    ));
    assert!(matches!(
        only(run(
            &q,
            &p,
            &c,
            &TdxPolicy {
                mrtd: vec![Hex([1; 48])],
                ..base.clone()
            }
        )),
        TdxError::Mrtd(_)
    ));
    assert!(matches!(
        only(run(
            &q,
            &p,
            &c,
            &TdxPolicy {
                report_data: Some(Hex([0; 64])),
                ..base.clone()
            }
        )),
        TdxError::ReportData { .. }
    ));
    run(
        &q,
        &p,
        &c,
        &TdxPolicy {
            mrtd: vec![Hex([0x44; 48])],
            report_data: Some(Hex([0x55; 64])),
            ..base
        },
    )
    .unwrap();
}

#[test]
fn neg_debug_td() {
    let p = pki();
    let q = quote(
        &QuoteSpec {
            td_attributes: [1, 0, 0, 0, 0, 0, 0, 0],
            ..Default::default()
        },
        &p,
        &p.pck_key,
    );
    assert!(matches!(
        only(run(&q, &p, &p.collateral(), &policy(&p))),
        TdxError::Debug(_)
    ));
}

#[test]
fn neg_malformed_quotes() {
    let p = pki();
    let q = quote(&QuoteSpec::default(), &p, &p.pck_key);
    let mut v3 = q.clone();
    v3[0] = 3;
    assert_eq!(
        only(run(&v3, &p, &p.collateral(), &policy(&p))),
        TdxError::Quote(QuoteError::Version(3))
    );
    assert!(matches!(
        only(run(&q[..700], &p, &p.collateral(), &policy(&p))),
        TdxError::Quote(QuoteError::Truncated { .. })
    ));
    // Trailing bytes after the signature data are ignored.
    let mut padded = q.clone();
    padded.extend([0u8; 100]);
    run(&padded, &p, &p.collateral(), &policy(&p)).unwrap();
}

#[test]
fn missing_collateral_with_status_policy() {
    let p = pki();
    let q = quote(&QuoteSpec::default(), &p, &p.pck_key);
    let e = tdx::verify_quote(&q, None, &policy(&p), times()).unwrap_err();
    assert!(matches!(&e[..], [TdxError::CollateralMissing(_)]), "{e:?}");
}

#[test]
fn revoked_pck_is_refused_and_crls_are_required_for_a_status() {
    let p = pki();
    let q = quote(&QuoteSpec::default(), &p, &p.pck_key);
    // The PCK (serial 3) on the platform CA's CRL.
    let mut c = p.collateral();
    c.pck_crl = Some(p.pck_crl(&[3]));
    let e = run(&q, &p, &c, &policy(&p)).unwrap_err();
    assert!(e.iter().any(|e| matches!(e, TdxError::Revoked(_))), "{e:?}");
    // The attester leaves out the CRL that revokes it: refused, naming the missing CRL.
    c.pck_crl = None;
    assert_eq!(
        only(run(&q, &p, &c, &policy(&p))),
        TdxError::CollateralMissing(vec!["PCK CRL".into()])
    );
    let mut c = p.collateral();
    c.root_ca_crl = None;
    assert_eq!(
        only(run(&q, &p, &c, &policy(&p))),
        TdxError::CollateralMissing(vec!["root CA CRL".into()])
    );
    // Without a required status (accepted_tcb_status empty) CRLs stay optional.
    c.pck_crl = None;
    let pol = TdxPolicy {
        accepted_tcb_status: vec![],
        ..policy(&p)
    };
    run(&q, &p, &c, &pol).unwrap();
}

#[test]
fn tcb_evaluation_data_number_below_policy_minimum_is_refused() {
    let p = pki();
    let q = quote(&QuoteSpec::default(), &p, &p.pck_key);
    // The synthetic TCB info and QE identity carry evaluation number 17.
    let at = |min: u32| TdxPolicy {
        minimum_tcb_evaluation_data_number: min,
        ..policy(&p)
    };
    run(&q, &p, &p.collateral(), &at(17)).unwrap();
    let e = run(&q, &p, &p.collateral(), &at(18)).unwrap_err();
    assert_eq!(
        e,
        vec![
            TdxError::TcbEvaluationDataNumber {
                what: "TCB info",
                got: 17,
                min: 18
            },
            TdxError::TcbEvaluationDataNumber {
                what: "QE identity",
                got: 17,
                min: 18
            },
        ]
    );
    assert!(
        e[0].to_string()
            .contains("minimum_tcb_evaluation_data_number")
    );
}

#[test]
fn pck_cache_hits_give_the_same_result() {
    let p = pki();
    let q = quote(&QuoteSpec::default(), &p, &p.pck_key);
    let root = tdx::IntelRoot::from_pem(p.root_pem().as_bytes()).unwrap();
    let col = tdx::verify_collateral(&p.collateral(), &root, times().collateral_at).unwrap();
    let v = tdx::TdxVerifier::new(root, Some(col), times());
    for _ in 0..3 {
        assert_eq!(
            v.verify(&q, &policy(&p)).unwrap().tcb_status,
            Some(TcbStatus::UpToDate)
        );
    }
    let other = p256::ecdsa::SigningKey::random(&mut rand::thread_rng());
    let bad = quote(&QuoteSpec::default(), &p, &other);
    assert_eq!(
        v.verify(&bad, &policy(&p)).unwrap_err(),
        vec![TdxError::QeReportSignature]
    );
    let _ = (Y2040,);
}

/// A PCK "Platform CA" that is an end-entity certificate cannot issue the PCK certificate.
#[test]
fn neg_intermediate_is_an_end_entity_certificate() {
    use p256::pkcs8::EncodePublicKey;
    let mut p = pki();
    let spki = p256::PublicKey::from(p.platform_key.verifying_key())
        .to_public_key_der()
        .unwrap();
    p.platform = common::synth::make_cert(
        "Intel SGX PCK Platform CA",
        "Intel SGX Root CA",
        spki.as_bytes(),
        2,
        (Y2020, Y2040),
        &[],
        common::synth::Signer::P256(&p.root_key),
    );
    let q = quote(&QuoteSpec::default(), &p, &p.pck_key);
    let e = run(&q, &p, &p.collateral(), &policy(&p)).unwrap_err();
    assert!(
        e.iter().any(|e| matches!(e,
            TdxError::Cert(constellation_attest::certs::CertError::IssuerNotCa { issuer, subject })
                if issuer == "Intel SGX PCK Platform CA" && subject == "Intel SGX PCK Certificate")),
        "{e:?}"
    );
}
