//! Every SEV-SNP vector of ../shared/testdata/MANIFEST.md (amd-roots/, snp/, aws-snp/,
//! azure-snp/ bare report), each giving the stated outcome. Skipped with a notice when absent.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod common;
use common::{now, t, td};
use constellation_attest::certs::Cert;
use constellation_attest::policy::{Hex, SnpPolicy};
use constellation_attest::snp::{
    self, AmdRoots, Generation, ReportDataBinding, SignerKind, SnpError, SnpReport,
};

fn bundle(rel: &str) -> Option<Vec<Cert>> {
    td(rel).map(|b| Cert::from_pem_bundle(&b).unwrap())
}

fn roots() -> AmdRoots {
    AmdRoots::builtin()
}

#[test]
fn amd_root_self_signatures_and_asks() {
    for g in ["milan", "genoa", "turin"] {
        let (Some(ark), Some(ask)) = (
            bundle(&format!("amd-roots/{g}-ark.pem")),
            bundle(&format!("amd-roots/{g}-ask.pem")),
        ) else {
            return;
        };
        ark[0].verify_rsa_pss_sha384_by(&ark[0]).unwrap();
        ask[0].verify_rsa_pss_sha384_by(&ark[0]).unwrap();
        assert!(ark[0].valid_at(now()) && ask[0].valid_at(now()));
    }
}

#[test]
fn builtin_arks_equal_testdata_arks() {
    let b = AmdRoots::builtin();
    let _ = b;
    for g in ["milan", "genoa", "turin"] {
        let Some(ark) = bundle(&format!("amd-roots/{g}-ark.pem")) else {
            return;
        };
        let pinned = match g {
            "milan" => sev::certs::snp::builtin::milan::ARK,
            "genoa" => sev::certs::snp::builtin::genoa::ARK,
            _ => sev::certs::snp::builtin::turin::ARK,
        };
        assert_eq!(
            Cert::from_pem_or_der(pinned).unwrap().sha256(),
            ark[0].sha256(),
            "{g}"
        );
    }
}

#[test]
fn kds_style_chains_verify() {
    for (f, ask_cn) in [
        ("amd-roots/milan-ask-ark-chain.pem", "SEV-Milan"),
        ("amd-roots/milan-asvk-ark-chain.pem", "SEV-VLEK-Milan"),
        ("amd-roots/genoa-asvk-ark-chain.pem", "SEV-VLEK-Genoa"),
        ("amd-roots/turin-ask-ark-chain.pem", "SEV-Turin"),
        ("amd-roots/turin-asvk-ark-chain.pem", "SEV-VLEK-Turin"),
    ] {
        let Some(c) = bundle(f) else { return };
        assert_eq!(c.len(), 2, "{f}");
        assert_eq!(c[0].subject_cn(), ask_cn);
        c[0].verify_rsa_pss_sha384_by(&c[1]).unwrap();
        c[1].verify_rsa_pss_sha384_by(&c[1]).unwrap();
    }
}

fn verify(
    report: &[u8],
    leaf: &Cert,
    inter: Option<&Cert>,
    at: Option<time::OffsetDateTime>,
    p: &SnpPolicy,
    b: &ReportDataBinding,
) -> Result<snp::VerifiedSnp, Vec<SnpError>> {
    snp::verify_all(report, leaf, inter, &roots(), at, p, b)
}

#[test]
fn milan_vcek_report_trustee_verifies() {
    let (Some(r), Some(v), Some(chain)) = (
        td("snp/milan-vcek-report-trustee.bin"),
        td("snp/milan-vcek-trustee.der"),
        bundle("amd-roots/milan-ask-ark-chain.pem"),
    ) else {
        return;
    };
    let vcek = Cert::from_der(&v).unwrap();
    let c = verify(
        &r,
        &vcek,
        Some(&chain[0]),
        Some(now()),
        &SnpPolicy::default(),
        &ReportDataBinding::None,
    )
    .unwrap();
    assert_eq!(c.version, 2);
    assert_eq!(c.policy, 0x3001f);
    assert_eq!(c.guest_svn, 4);
    assert_eq!(c.vmpl, 0);
    assert!(c.measurement.starts_with("a1f39304") && c.measurement.ends_with("d3d38c"));
    assert_eq!(
        (
            c.reported_tcb.bootloader,
            c.reported_tcb.tee,
            c.reported_tcb.snp,
            c.reported_tcb.microcode
        ),
        (3, 0, 8, 115)
    );
    assert_eq!(c.generation, Generation::Milan);
    // The built-in ASK gives the same result.
    verify(
        &r,
        &vcek,
        None,
        Some(now()),
        &SnpPolicy::default(),
        &ReportDataBinding::None,
    )
    .unwrap();
}

#[test]
fn edited_vceks_parse_but_fail_the_chain() {
    let Some(chain) = bundle("amd-roots/milan-ask-ark-chain.pem") else {
        return;
    };
    for f in [
        "snp/milan-vcek-bad-sig-hwid-raw64.der",
        "snp/milan-vcek-bad-sig-hwid-octetstring.der",
    ] {
        let Some(b) = td(f) else { return };
        let c = Cert::from_der(&b).unwrap();
        let (_, hwid, _) =
            snp::verify::leaf_extensions(&c, SignerKind::Vcek, Generation::Milan).unwrap();
        let expected: Vec<u8> = (0u8..64).collect();
        assert_eq!(hwid.unwrap().to_vec(), expected, "{f}");
        let errs = snp::verify_chain(&c, Some(&chain[0]), &roots(), None).unwrap_err();
        assert!(
            errs.iter().any(|e| matches!(
                e,
                SnpError::Cert(constellation_attest::certs::CertError::BadSignature { .. })
            )),
            "{f}: {errs:?}"
        );
        let Some(r) = td("snp/milan-vcek-report-trustee.bin") else {
            return;
        };
        assert!(
            verify(
                &r,
                &c,
                Some(&chain[0]),
                None,
                &SnpPolicy::default(),
                &ReportDataBinding::None
            )
            .is_err()
        );
    }
}

#[test]
fn virtee_hex_decodes_to_bin_and_verifies() {
    let (Some(h), Some(r), Some(v)) = (
        td("snp/milan-vcek-report-virtee.hex"),
        td("snp/milan-vcek-report-virtee.bin"),
        td("snp/milan-vcek-virtee.der"),
    ) else {
        return;
    };
    assert_eq!(
        hex::decode(String::from_utf8(h).unwrap().trim()).unwrap(),
        r
    );
    let vcek = Cert::from_der(&v).unwrap();
    let c = verify(
        &r,
        &vcek,
        None,
        Some(now()),
        &SnpPolicy::default(),
        &ReportDataBinding::None,
    )
    .unwrap();
    assert_eq!(c.policy, 0x30000);
    assert!(c.measurement.starts_with("7a1e5c26"));
    // virtee's negative: flip bit 7 of byte 0x15 (inside the policy field).
    let mut bad = r.clone();
    bad[0x15] ^= 0x80;
    let errs = verify(
        &bad,
        &vcek,
        None,
        Some(now()),
        &SnpPolicy::default(),
        &ReportDataBinding::None,
    )
    .unwrap_err();
    assert!(
        errs.contains(&SnpError::SignatureInvalid(SignerKind::Vcek)),
        "{errs:?}"
    );
}

#[test]
fn turin_vcek_chain_verifies() {
    let (Some(v), Some(chain)) = (
        td("snp/turin-vcek-virtee.der"),
        bundle("amd-roots/turin-ask-ark-chain.pem"),
    ) else {
        return;
    };
    let vcek = Cert::from_der(&v).unwrap();
    let s = snp::verify_chain(&vcek, Some(&chain[0]), &roots(), Some(now())).unwrap();
    assert_eq!(s.generation, Generation::Turin);
    assert_eq!(s.kind, SignerKind::Vcek);
}

#[test]
fn azure_constellation_report_verifies_and_binds_runtime_claims() {
    let (Some(r), Some(claims), Some(pem), Some(der)) = (
        td("azure-snp/constellation-report-with-runtime-header.bin"),
        td("azure-snp/constellation-runtime-claims.json"),
        td("azure-snp/constellation-vcek.pem"),
        td("azure-snp/constellation-vcek.der"),
    ) else {
        return;
    };
    assert_eq!(r.len(), 1204);
    let a = Cert::from_pem_or_der(&pem).unwrap();
    let b = Cert::from_der(&der).unwrap();
    assert_eq!(a.der(), b.der());
    let c = verify(
        &r[..1184],
        &a,
        None,
        Some(now()),
        &SnpPolicy::default(),
        &ReportDataBinding::AzureRuntimeData(claims.clone()),
    )
    .unwrap();
    assert_eq!(c.policy, 0x3001f);
    assert_eq!(
        (
            c.reported_tcb.bootloader,
            c.reported_tcb.snp,
            c.reported_tcb.microcode
        ),
        (2, 6, 93)
    );
    // Header after the report: data_size 604, version 1, report_type 2, hash_type 1, var_size 584.
    let h: Vec<u32> = r[1184..]
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(h, vec![604, 1, 2, 1, 584]);
    // azure-sev-snp's default policy refuses this older firmware: its TCB is below the Milan
    // minimum and its ID key is not among Azure's current ones.
    let azure = constellation_attest::policy::Policy::for_variant(
        constellation_attest::variant::Variant::AzureSevSnp,
    )
    .snp;
    let errs = verify(
        &r[..1184],
        &a,
        None,
        Some(now()),
        &azure,
        &ReportDataBinding::AzureRuntimeData(claims.clone()),
    )
    .unwrap_err();
    assert!(
        errs.iter().any(|e| matches!(
            e,
            SnpError::TcbBelowMinimum {
                component: "snp",
                got: 6,
                min: 8,
                ..
            }
        )),
        "{errs:?}"
    );
    assert!(
        errs.iter().any(|e| matches!(e, SnpError::IdKeyDigest(_))),
        "{errs:?}"
    );
    // Other runtime data does not bind.
    let errs = verify(
        &r[..1184],
        &a,
        None,
        Some(now()),
        &SnpPolicy::default(),
        &ReportDataBinding::AzureRuntimeData(b"{}".to_vec()),
    )
    .unwrap_err();
    assert!(matches!(errs[0], SnpError::ReportData { .. }));
}

#[test]
fn aws_constellation_vlek_report() {
    let (Some(b64), Some(r), Some(vlek), Some(chain), Some(digest)) = (
        td("aws-snp/constellation-report-vlek-2024.b64"),
        td("aws-snp/constellation-report-vlek-2024.bin"),
        td("aws-snp/constellation-vlek-2024.pem"),
        bundle("amd-roots/milan-asvk-ark-chain.pem"),
        td("aws-snp/constellation-ak-digest.hex"),
    ) else {
        return;
    };
    use base64::Engine;
    let txt: String = String::from_utf8(b64).unwrap().split_whitespace().collect();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(txt)
            .unwrap(),
        r
    );
    let vlek = Cert::from_pem_or_der(&vlek).unwrap();
    let rep = SnpReport::parse(&r).unwrap();
    assert_eq!(rep.version(), 3);
    assert_eq!(rep.chip_id(), [0u8; 64]);
    let digest: [u8; 64] = hex::decode(String::from_utf8(digest).unwrap().trim())
        .unwrap()
        .try_into()
        .unwrap();
    let binding = ReportDataBinding::Exact(digest);
    // aws-sev-snp's default policy: VLEK only, an AWS CSP id, the Milan minimum TCB.
    let aws = constellation_attest::policy::Policy::for_variant(
        constellation_attest::variant::Variant::AwsSevSnp,
    )
    .snp;
    let c = verify(
        &r,
        &vlek,
        Some(&chain[0]),
        Some(t("2025-06-01T00:00:00Z")),
        &aws,
        &binding,
    )
    .unwrap();
    assert_eq!(c.csp_id.as_deref(), Some("CN=cc-eu-west-1.amazonaws.com"));
    assert_eq!(c.signer, SignerKind::Vlek);
    assert_eq!(c.platform_info, 0x27);
    assert_eq!(
        (
            c.reported_tcb.bootloader,
            c.reported_tcb.snp,
            c.reported_tcb.microcode
        ),
        (4, 24, 217)
    );
    // No time check also verifies; the current date fails (VLEK expired 2025-12-10).
    verify(
        &r,
        &vlek,
        Some(&chain[0]),
        None,
        &SnpPolicy::default(),
        &binding,
    )
    .unwrap();
    let errs = verify(
        &r,
        &vlek,
        Some(&chain[0]),
        Some(now()),
        &SnpPolicy::default(),
        &binding,
    )
    .unwrap_err();
    assert!(
        errs.iter().any(
            |e| matches!(e, SnpError::CertNotValidAt { subject, .. } if subject == "SEV-VLEK")
        ),
        "{errs:?}"
    );
    // Without the ASVK a VLEK cannot be verified.
    assert_eq!(
        verify(&r, &vlek, None, None, &SnpPolicy::default(), &binding).unwrap_err()[0],
        SnpError::MissingAsvk
    );
}

#[test]
fn aws_trustee_vlek_report_is_vmpl1() {
    let (Some(r), Some(v), Some(chain)) = (
        td("aws-snp/trustee-report-vlek-2024.bin"),
        td("aws-snp/trustee-vlek-2024.der"),
        bundle("amd-roots/milan-asvk-ark-chain.pem"),
    ) else {
        return;
    };
    let vlek = Cert::from_der(&v).unwrap();
    let at = Some(t("2025-06-01T00:00:00Z"));
    let errs = verify(
        &r,
        &vlek,
        Some(&chain[0]),
        at,
        &SnpPolicy::default(),
        &ReportDataBinding::None,
    )
    .unwrap_err();
    assert_eq!(
        errs,
        vec![SnpError::Vmpl {
            got: 1,
            allowed: vec![0]
        }]
    );
    let p = SnpPolicy {
        allowed_vmpls: vec![1],
        ..Default::default()
    };
    verify(&r, &vlek, Some(&chain[0]), at, &p, &ReportDataBinding::None).unwrap();
    assert!(
        verify(
            &r,
            &vlek,
            Some(&chain[0]),
            Some(now()),
            &p,
            &ReportDataBinding::None
        )
        .is_err()
    );
}

#[test]
fn aws_unpaired_vlek_chain_ok_but_signs_nothing() {
    let (Some(v), Some(chain)) = (
        td("aws-snp/constellation-vlek-2023-07-unpaired.pem"),
        bundle("amd-roots/milan-asvk-ark-chain.pem"),
    ) else {
        return;
    };
    let vlek = Cert::from_pem_or_der(&v).unwrap();
    snp::verify_chain(&vlek, Some(&chain[0]), &roots(), None).unwrap();
    assert!(snp::verify_chain(&vlek, Some(&chain[0]), &roots(), Some(now())).is_err());
    let p = SnpPolicy {
        allowed_vmpls: vec![0, 1],
        ..Default::default()
    };
    for f in [
        "aws-snp/constellation-report-vlek-2024.bin",
        "aws-snp/trustee-report-vlek-2024.bin",
    ] {
        let Some(r) = td(f) else { return };
        let errs = verify(
            &r,
            &vlek,
            Some(&chain[0]),
            None,
            &p,
            &ReportDataBinding::None,
        )
        .unwrap_err();
        assert!(
            errs.contains(&SnpError::SignatureInvalid(SignerKind::Vlek)),
            "{f}: {errs:?}"
        );
    }
}

#[test]
fn policy_minimum_tcb_on_real_report() {
    let (Some(r), Some(v)) = (
        td("snp/milan-vcek-report-trustee.bin"),
        td("snp/milan-vcek-trustee.der"),
    ) else {
        return;
    };
    let vcek = Cert::from_der(&v).unwrap();
    let mut p = SnpPolicy::default();
    p.minimum_tcb = Some(constellation_attest::policy::MinTcb {
        bootloader: 3,
        tee: 0,
        snp: 8,
        microcode: 115,
        fmc: 0,
    });
    verify(&r, &vcek, None, Some(now()), &p, &ReportDataBinding::None).unwrap();
    p.minimum_tcb = Some(constellation_attest::policy::MinTcb {
        bootloader: 3,
        tee: 0,
        snp: 9,
        microcode: 115,
        fmc: 0,
    });
    let errs = verify(&r, &vcek, None, Some(now()), &p, &ReportDataBinding::None).unwrap_err();
    assert!(errs.iter().any(|e| matches!(
        e,
        SnpError::TcbBelowMinimum {
            component: "snp",
            got: 8,
            min: 9,
            ..
        }
    )));
    p.minimum_tcb = None;
    p.measurements = vec![Hex([0u8; 48])];
    assert!(matches!(
        verify(&r, &vcek, None, Some(now()), &p, &ReportDataBinding::None).unwrap_err()[0],
        SnpError::Measurement(_)
    ));
}
