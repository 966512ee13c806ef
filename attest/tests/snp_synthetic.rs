//! SEV-SNP verification on a PKI and reports the test generates itself (runs in a fresh clone):
//! one positive path and one test per rejection reason, each asserting its typed error.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod common;
use common::synth::{self, HWID, Rep, TCB, Y2020, Y2040, tcb_raw, vcek, vcek_with};
use constellation_attest::certs::{Cert, CertError};
use constellation_attest::policy::{Hex, IdKeyMode, MinTcb, SnpPolicy};
use constellation_attest::snp::{
    self, AmdRoots, ReportDataBinding, ReportError, SignerKind, SigningKey, SnpError,
};
use sha2::Digest;

fn roots() -> AmdRoots {
    AmdRoots::from_certs(vec![
        Cert::from_der(&synth::milan().ark).unwrap(),
        Cert::from_der(&synth::genoa().ark).unwrap(),
    ])
}
fn ask() -> Cert {
    Cert::from_der(&synth::milan().ask).unwrap()
}
fn at() -> Option<time::OffsetDateTime> {
    Some(time::macros::datetime!(2030-01-01 0:00 UTC))
}

/// Verifies `rep` signed by a fresh Milan VCEK with TCB/hwID `TCB`/`HWID`.
fn check(
    rep: &Rep,
    policy: &SnpPolicy,
    binding: &ReportDataBinding,
) -> Result<snp::VerifiedSnp, Vec<SnpError>> {
    let leaf = vcek(synth::milan(), TCB, HWID);
    let bytes = rep.sign(&leaf.key);
    snp::verify_all(
        &bytes,
        &Cert::from_der(&leaf.der).unwrap(),
        Some(&ask()),
        &roots(),
        at(),
        policy,
        binding,
    )
}

fn only(rep: &Rep, policy: &SnpPolicy, binding: &ReportDataBinding) -> SnpError {
    let e = check(rep, policy, binding).unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    e.into_iter().next().unwrap()
}

fn def() -> SnpPolicy {
    SnpPolicy::default()
}

#[test]
fn synthetic_report_verifies() {
    let c = check(&Rep::default(), &def(), &ReportDataBinding::None).unwrap();
    assert_eq!(c.measurement, hex::encode([0xAA; 48]));
    assert_eq!(c.signer, SignerKind::Vcek);
    for v in [3u32, 5] {
        check(
            &Rep {
                version: v,
                cpuid: Some((0x19, 0x01, 1)),
                ..Default::default()
            },
            &def(),
            &ReportDataBinding::None,
        )
        .unwrap();
    }
}

fn signed_default() -> (Vec<u8>, Cert) {
    let leaf = vcek(synth::milan(), TCB, HWID);
    (
        Rep::default().sign(&leaf.key),
        Cert::from_der(&leaf.der).unwrap(),
    )
}

fn verify_bytes(b: &[u8], leaf: &Cert) -> Vec<SnpError> {
    snp::verify_all(
        b,
        leaf,
        Some(&ask()),
        &roots(),
        at(),
        &def(),
        &ReportDataBinding::None,
    )
    .unwrap_err()
}

#[test]
fn neg_signature_altered() {
    let (mut b, leaf) = signed_default();
    b[0x2A0] ^= 1;
    assert_eq!(
        verify_bytes(&b, &leaf),
        vec![SnpError::SignatureInvalid(SignerKind::Vcek)]
    );
}

#[test]
fn neg_report_altered_after_signing() {
    let (mut b, leaf) = signed_default();
    b[0x90] ^= 1;
    assert_eq!(
        verify_bytes(&b, &leaf),
        vec![SnpError::SignatureInvalid(SignerKind::Vcek)]
    );
}

#[test]
fn neg_signature_out_of_range() {
    let (mut b, leaf) = signed_default();
    b[0x2A0 + 60] = 1;
    assert_eq!(verify_bytes(&b, &leaf), vec![SnpError::SignatureMalformed]);
}

#[test]
fn neg_ask_of_another_generation() {
    let (b, leaf) = signed_default();
    let genoa_ask = Cert::from_der(&synth::genoa().ask).unwrap();
    let e = snp::verify_all(
        &b,
        &leaf,
        Some(&genoa_ask),
        &roots(),
        at(),
        &def(),
        &ReportDataBinding::None,
    )
    .unwrap_err();
    assert!(
        e.iter()
            .any(|e| matches!(e, SnpError::IntermediateMismatch { .. })),
        "{e:?}"
    );
}

#[test]
fn neg_vcek_of_another_generation() {
    let g = synth::genoa();
    let leaf = vcek(g, TCB, HWID);
    let b = Rep::default().sign(&leaf.key);
    let e = snp::verify_all(
        &b,
        &Cert::from_der(&leaf.der).unwrap(),
        Some(&ask()),
        &roots(),
        at(),
        &def(),
        &ReportDataBinding::None,
    )
    .unwrap_err();
    assert!(e.iter().any(|e| matches!(e, SnpError::IntermediateMismatch { expected, .. } if expected == "SEV-Genoa")), "{e:?}");
}

#[test]
fn neg_report_cpuid_generation_differs_from_chain() {
    let rep = Rep {
        version: 3,
        cpuid: Some((0x19, 0x11, 1)),
        ..Default::default()
    };
    assert_eq!(
        only(&rep, &def(), &ReportDataBinding::None),
        SnpError::GenerationMismatch {
            report: "Genoa",
            chain: "Milan"
        }
    );
}

#[test]
fn neg_vcek_signed_by_foreign_ask_key() {
    let m = synth::milan();
    let rogue = synth::genoa(); // another RSA key, same CN
    let leaf = vcek_with(
        m,
        "SEV-Milan",
        TCB,
        HWID,
        (Y2020, Y2040),
        &rogue.ask_key,
        None,
    );
    let e = snp::verify_chain(
        &Cert::from_der(&leaf.der).unwrap(),
        Some(&ask()),
        &roots(),
        at(),
    )
    .unwrap_err();
    assert!(
        matches!(&e[0], SnpError::Cert(CertError::BadSignature { subject, .. }) if subject == "SEV-VCEK"),
        "{e:?}"
    );
}

#[test]
fn neg_ask_not_signed_by_pinned_ark() {
    let (b, leaf) = signed_default();
    // Only the Genoa ARK is trusted under the Milan name's absence: use a roots set whose
    // "ARK-Milan" is a different key.
    let fake = synth::genoa();
    let rsa_spki =
        rsa::pkcs8::EncodePublicKey::to_public_key_der(&fake.ark_key.to_public_key()).unwrap();
    let other_ark = synth::make_cert(
        "ARK-Milan",
        "ARK-Milan",
        rsa_spki.as_bytes(),
        1,
        (Y2020, Y2040),
        &synth::ca_exts(None),
        synth::Signer::RsaPss(&fake.ark_key),
    );
    let r = AmdRoots::from_certs(vec![Cert::from_der(&other_ark).unwrap()]);
    let e = snp::verify_all(
        &b,
        &leaf,
        Some(&ask()),
        &r,
        at(),
        &def(),
        &ReportDataBinding::None,
    )
    .unwrap_err();
    assert!(
        matches!(&e[0], SnpError::Cert(CertError::BadSignature { subject, .. }) if subject == "SEV-Milan"),
        "{e:?}"
    );
}

#[test]
fn neg_no_root_for_generation() {
    let (b, leaf) = signed_default();
    let r = AmdRoots::from_certs(vec![Cert::from_der(&synth::genoa().ark).unwrap()]);
    let e = snp::verify_all(
        &b,
        &leaf,
        Some(&ask()),
        &r,
        at(),
        &def(),
        &ReportDataBinding::None,
    )
    .unwrap_err();
    assert_eq!(e[0], SnpError::NoRoot("Milan"));
}

#[test]
fn neg_builtin_roots_reject_synthetic_chain() {
    let (b, leaf) = signed_default();
    let e = snp::verify_all(
        &b,
        &leaf,
        Some(&ask()),
        &AmdRoots::builtin(),
        at(),
        &def(),
        &ReportDataBinding::None,
    )
    .unwrap_err();
    assert!(
        matches!(&e[0], SnpError::Cert(CertError::BadSignature { .. })),
        "{e:?}"
    );
}

#[test]
fn neg_unknown_issuer() {
    let m = synth::milan();
    let leaf = vcek_with(m, "Some-CA", TCB, HWID, (Y2020, Y2040), &m.ask_key, None);
    let e =
        snp::verify_chain(&Cert::from_der(&leaf.der).unwrap(), None, &roots(), at()).unwrap_err();
    assert_eq!(e, vec![SnpError::UnknownIssuer("Some-CA".into())]);
}

#[test]
fn neg_leaf_tcb_bootloader_differs_from_reported_tcb() {
    let rep = Rep {
        reported_tcb: tcb_raw((4, 0, 8, 115)),
        committed_tcb: tcb_raw((4, 0, 8, 115)),
        ..Default::default()
    };
    assert_eq!(
        only(&rep, &def(), &ReportDataBinding::None),
        SnpError::TcbMismatch {
            component: "bootloader",
            cert: 3,
            report: 4
        }
    );
}

#[test]
fn neg_leaf_tcb_microcode_differs_from_reported_tcb() {
    let rep = Rep {
        reported_tcb: tcb_raw((3, 0, 8, 114)),
        ..Default::default()
    };
    assert_eq!(
        only(&rep, &def(), &ReportDataBinding::None),
        SnpError::TcbMismatch {
            component: "microcode",
            cert: 115,
            report: 114
        }
    );
}

#[test]
fn neg_chip_id_differs_from_hwid() {
    let rep = Rep {
        chip_id: [8; 64],
        ..Default::default()
    };
    assert!(matches!(
        only(&rep, &def(), &ReportDataBinding::None),
        SnpError::ChipIdMismatch { .. }
    ));
}

#[test]
fn neg_leaf_missing_tcb_extension() {
    let m = synth::milan();
    let leaf = vcek_with(
        m,
        "SEV-Milan",
        TCB,
        HWID,
        (Y2020, Y2040),
        &m.ask_key,
        Some("1.3.6.1.4.1.3704.1.3.3"),
    );
    let e = snp::verify_chain(
        &Cert::from_der(&leaf.der).unwrap(),
        Some(&ask()),
        &roots(),
        at(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        vec![SnpError::LeafExtension {
            oid: "1.3.6.1.4.1.3704.1.3.3"
        }]
    );
}

#[test]
fn neg_reported_tcb_below_policy_minimum() {
    let p = SnpPolicy {
        minimum_tcb: Some(MinTcb {
            snp: 9,
            ..Default::default()
        }),
        ..def()
    };
    let e = check(&Rep::default(), &p, &ReportDataBinding::None).unwrap_err();
    assert!(
        e.contains(&SnpError::TcbBelowMinimum {
            which: "reported",
            component: "snp",
            got: 8,
            min: 9
        }),
        "{e:?}"
    );
}

#[test]
fn neg_committed_tcb_below_policy_minimum() {
    let rep = Rep {
        committed_tcb: tcb_raw((3, 0, 8, 100)),
        ..Default::default()
    };
    let p = SnpPolicy {
        minimum_tcb: Some(MinTcb {
            microcode: 115,
            ..Default::default()
        }),
        ..def()
    };
    assert_eq!(
        only(&rep, &p, &ReportDataBinding::None),
        SnpError::TcbBelowMinimum {
            which: "committed",
            component: "microcode",
            got: 100,
            min: 115
        }
    );
}

#[test]
fn neg_vmpl_not_zero() {
    let rep = Rep {
        vmpl: 2,
        ..Default::default()
    };
    assert_eq!(
        only(&rep, &def(), &ReportDataBinding::None),
        SnpError::Vmpl {
            got: 2,
            allowed: vec![0]
        }
    );
}

#[test]
fn neg_debug_policy_bit() {
    let rep = Rep {
        policy: 0x30000 | (1 << 19),
        ..Default::default()
    };
    assert_eq!(
        only(&rep, &def(), &ReportDataBinding::None),
        SnpError::DebugAllowed(0x30000 | (1 << 19))
    );
}

#[test]
fn neg_migration_agent_policy_bit() {
    let rep = Rep {
        policy: 0x30000 | (1 << 18),
        ..Default::default()
    };
    assert_eq!(
        only(&rep, &def(), &ReportDataBinding::None),
        SnpError::MigrationAgentAllowed(0x30000 | (1 << 18))
    );
}

#[test]
fn neg_smt_when_policy_forbids() {
    let p = SnpPolicy {
        allow_smt: false,
        ..def()
    };
    assert_eq!(
        only(&Rep::default(), &p, &ReportDataBinding::None),
        SnpError::SmtNotAllowed(1)
    );
}

#[test]
fn neg_guest_svn_below_minimum() {
    let p = SnpPolicy {
        minimum_guest_svn: 2,
        ..def()
    };
    assert_eq!(
        only(&Rep::default(), &p, &ReportDataBinding::None),
        SnpError::GuestSvn { got: 1, min: 2 }
    );
}

#[test]
fn neg_measurement_not_accepted() {
    let p = SnpPolicy {
        measurements: vec![Hex([0xBB; 48])],
        ..def()
    };
    assert!(matches!(
        only(&Rep::default(), &p, &ReportDataBinding::None),
        SnpError::Measurement(_)
    ));
    let p = SnpPolicy {
        measurements: vec![Hex([0xBB; 48]), Hex([0xAA; 48])],
        ..def()
    };
    check(&Rep::default(), &p, &ReportDataBinding::None).unwrap();
}

#[test]
fn neg_host_data_differs() {
    let p = SnpPolicy {
        host_data: Some(Hex([1; 32])),
        ..def()
    };
    assert!(matches!(
        only(&Rep::default(), &p, &ReportDataBinding::None),
        SnpError::HostData { .. }
    ));
}

#[test]
fn aws_report_data_binds_ak_spki() {
    let spki = b"fake SPKI DER".to_vec();
    let mut rd = [0u8; 64];
    rd.copy_from_slice(&sha2::Sha512::digest(&spki));
    let rep = Rep {
        report_data: rd,
        ..Default::default()
    };
    check(&rep, &def(), &ReportDataBinding::AwsAkSpki(spki)).unwrap();
    let e = only(
        &rep,
        &def(),
        &ReportDataBinding::AwsAkSpki(b"another key".to_vec()),
    );
    assert!(
        matches!(
            e,
            SnpError::ReportData {
                binding: "SHA-512 of the attestation key SPKI",
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn gcp_report_data_binds_extra_data() {
    let mut rd = [0u8; 64];
    rd[..5].copy_from_slice(b"nonce");
    let rep = Rep {
        report_data: rd,
        ..Default::default()
    };
    check(
        &rep,
        &def(),
        &ReportDataBinding::GcpExtraData(b"nonce".to_vec()),
    )
    .unwrap();
    assert!(matches!(
        only(
            &rep,
            &def(),
            &ReportDataBinding::GcpExtraData(b"other".to_vec())
        ),
        SnpError::ReportData { .. }
    ));
}

#[test]
fn azure_report_data_binds_runtime_data() {
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(&sha2::Sha256::digest(b"{\"keys\":[]}"));
    let rep = Rep {
        report_data: rd,
        ..Default::default()
    };
    check(
        &rep,
        &def(),
        &ReportDataBinding::AzureRuntimeData(b"{\"keys\":[]}".to_vec()),
    )
    .unwrap();
    assert!(matches!(
        only(
            &rep,
            &def(),
            &ReportDataBinding::AzureRuntimeData(b"{}".to_vec())
        ),
        SnpError::ReportData { .. }
    ));
}

#[test]
fn neg_policy_report_data_differs() {
    let p = SnpPolicy {
        report_data: Some(Hex([9; 64])),
        ..def()
    };
    assert!(matches!(
        only(&Rep::default(), &p, &ReportDataBinding::None),
        SnpError::ReportData {
            binding: "policy report_data",
            ..
        }
    ));
}

#[test]
fn neg_id_key_digest_not_accepted_under_equal() {
    let p = SnpPolicy {
        accepted_id_key_digests: vec![Hex([5; 48])],
        id_key_mode: IdKeyMode::Equal,
        ..def()
    };
    assert_eq!(
        only(&Rep::default(), &p, &ReportDataBinding::None),
        SnpError::IdKeyDigest(hex::encode([0u8; 48]))
    );
    let rep = Rep {
        id_key_digest: [5; 48],
        ..Default::default()
    };
    check(&rep, &p, &ReportDataBinding::None).unwrap();
}

#[test]
fn neg_id_key_maa_fallback_not_supported() {
    let p = SnpPolicy {
        accepted_id_key_digests: vec![Hex([5; 48])],
        id_key_mode: IdKeyMode::MaaFallback,
        ..def()
    };
    assert!(matches!(
        only(&Rep::default(), &p, &ReportDataBinding::None),
        SnpError::MaaFallbackNotSupported(_)
    ));
}

#[test]
fn id_key_warn_only_warns() {
    let p = SnpPolicy {
        accepted_id_key_digests: vec![Hex([5; 48])],
        id_key_mode: IdKeyMode::WarnOnly,
        ..def()
    };
    let c = check(&Rep::default(), &p, &ReportDataBinding::None).unwrap();
    assert_eq!(c.warnings.len(), 1);
}

#[test]
fn neg_expired_vcek_at_reference_time() {
    let m = synth::milan();
    let leaf = vcek_with(
        m,
        "SEV-Milan",
        TCB,
        HWID,
        (Y2020, Y2020 + 86_400),
        &m.ask_key,
        None,
    );
    let e = snp::verify_chain(
        &Cert::from_der(&leaf.der).unwrap(),
        Some(&ask()),
        &roots(),
        at(),
    )
    .unwrap_err();
    assert!(
        matches!(&e[0], SnpError::CertNotValidAt { subject, .. } if subject == "SEV-VCEK"),
        "{e:?}"
    );
    // Inside the window, or without a time check, it verifies.
    snp::verify_chain(
        &Cert::from_der(&leaf.der).unwrap(),
        Some(&ask()),
        &roots(),
        None,
    )
    .unwrap();
}

#[test]
fn neg_vcek_not_yet_valid() {
    let m = synth::milan();
    let leaf = vcek_with(
        m,
        "SEV-Milan",
        TCB,
        HWID,
        (Y2040 - 1000, Y2040),
        &m.ask_key,
        None,
    );
    let e = snp::verify_chain(
        &Cert::from_der(&leaf.der).unwrap(),
        Some(&ask()),
        &roots(),
        at(),
    )
    .unwrap_err();
    assert!(matches!(&e[0], SnpError::CertNotValidAt { .. }));
}

#[test]
fn neg_report_version_4() {
    let (b, leaf) = signed_default();
    let mut b = b;
    b[0] = 4;
    assert_eq!(
        verify_bytes(&b, &leaf),
        vec![SnpError::Report(ReportError::Version(4))]
    );
}

#[test]
fn neg_report_wrong_length() {
    let (b, leaf) = signed_default();
    assert_eq!(
        verify_bytes(&b[..1000], &leaf),
        vec![SnpError::Report(ReportError::Length(1000))]
    );
}

#[test]
fn neg_signature_algorithm() {
    let rep = Rep {
        sig_algo: 2,
        ..Default::default()
    };
    let leaf = vcek(synth::milan(), TCB, HWID);
    let b = rep.sign(&leaf.key);
    assert_eq!(
        verify_bytes(&b, &Cert::from_der(&leaf.der).unwrap()),
        vec![SnpError::Report(ReportError::SignatureAlgorithm(2))]
    );
}

#[test]
fn neg_key_info_says_vlek_but_vcek_signed() {
    let rep = Rep {
        key_info: 1 << 2,
        ..Default::default()
    };
    assert_eq!(
        only(&rep, &def(), &ReportDataBinding::None),
        SnpError::SignerKindMismatch {
            report: SigningKey::Vlek,
            cert: SignerKind::Vcek
        }
    );
}

#[test]
fn neg_signer_kind_not_allowed() {
    let p = SnpPolicy {
        signers: vec!["vlek".into()],
        ..def()
    };
    assert_eq!(
        only(&Rep::default(), &p, &ReportDataBinding::None),
        SnpError::SignerNotAllowed(SignerKind::Vcek)
    );
}

#[test]
fn every_failure_is_listed() {
    let rep = Rep {
        vmpl: 1,
        policy: 0x30000 | (1 << 19) | (1 << 18),
        ..Default::default()
    };
    let e = check(
        &rep,
        &SnpPolicy {
            minimum_guest_svn: 5,
            ..def()
        },
        &ReportDataBinding::None,
    )
    .unwrap_err();
    assert_eq!(e.len(), 4, "{e:?}");
}

#[test]
fn certificate_table_round_trip() {
    use constellation_attest::certs::table::{self, CertKind};
    let m = synth::milan();
    let t = table::build(&[
        (CertKind::Vcek, b"vcek"),
        (CertKind::Ask, &m.ask),
        (CertKind::Ark, &m.ark),
    ]);
    let p = table::parse(&t).unwrap();
    assert_eq!(p.len(), 3);
    assert_eq!(p[0], (CertKind::Vcek, b"vcek".to_vec()));
    assert_eq!(p[1].0, CertKind::Ask);
    assert!(table::parse(&t[..30]).is_err());
    let mut bad = t.clone();
    bad[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        table::parse(&bad),
        Err(table::TableError::OutOfBounds { .. })
    ));
}

#[test]
fn policy_json_round_trip_and_strictness() {
    use constellation_attest::policy::Policy;
    let p = Policy::default();
    assert_eq!(Policy::from_json(p.to_json().as_bytes()).unwrap(), p);
    let min = Policy::from_json(br#"{"version":1}"#).unwrap();
    assert_eq!(min.snp.allowed_vmpls, vec![0]);
    assert!(!min.snp.allow_debug && !min.snp.allow_migration_agent);
    assert_eq!(min.tdx.accepted_tcb_status, vec!["UpToDate".to_string()]);
    assert!(Policy::from_json(br#"{"version":1,"snp":{"alow_debug":true}}"#).is_err());
    assert!(Policy::from_json(br#"{"version":2}"#).is_err());
    assert!(Policy::from_json(br#"{"version":1,"snp":{"measurements":["abcd"]}}"#).is_err());
}

/// An intermediate that the pinned ARK signed but that is not a CA (an end-entity certificate
/// under the ASK's name) must not be able to vouch for a VCEK.
#[test]
fn neg_intermediate_is_an_end_entity_certificate() {
    let m = synth::milan();
    let rogue = synth::genoa(); // its ASK key signs the VCEK below
    let spki =
        rsa::pkcs8::EncodePublicKey::to_public_key_der(&rogue.ask_key.to_public_key()).unwrap();
    let end_entity_ask = synth::make_cert(
        "SEV-Milan",
        "ARK-Milan",
        spki.as_bytes(),
        9,
        (Y2020, Y2040),
        &[],
        synth::Signer::RsaPss(&m.ark_key),
    );
    let leaf = vcek_with(
        m,
        "SEV-Milan",
        TCB,
        HWID,
        (Y2020, Y2040),
        &rogue.ask_key,
        None,
    );
    let e = snp::verify_chain(
        &Cert::from_der(&leaf.der).unwrap(),
        Some(&Cert::from_der(&end_entity_ask).unwrap()),
        &roots(),
        at(),
    )
    .unwrap_err();
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        matches!(&e[0], SnpError::Cert(CertError::IssuerNotCa { issuer, subject })
            if issuer == "SEV-Milan" && subject == "SEV-VCEK"),
        "{e:?}"
    );
    assert!(e[0].to_string().contains("'SEV-Milan'"), "{}", e[0]);
}
