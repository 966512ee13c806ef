//! Every TDX vector of ../shared/testdata/MANIFEST.md (intel-roots/, tdx/, azure-tdx quote).
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod common;
use common::{now, t, td};
use constellation_attest::certs::{Cert, Crl};
use constellation_attest::policy::TdxPolicy;
use constellation_attest::tdx::{
    self, CollateralFiles, INTEL_SGX_ROOT_SHA256, IntelRoot, Quote, TcbStatus, TdxError, Times,
};

fn collateral(tcb: &str) -> Option<CollateralFiles> {
    Some(CollateralFiles {
        tcb_info: Some(td(tcb)?),
        qe_identity: Some(td("tdx/go-tdx-guest-qe-identity-2023-06.json")?),
        tcb_signing_chain: Some(td("intel-roots/intel-tcb-signing-chain.pem")?),
        pck_crl: Some(td("tdx/go-tdx-guest-pck-platform-ca-2023-06.crl.der")?),
        root_ca_crl: Some(td("tdx/go-tdx-guest-intel-root-ca-2023-04.crl.der")?),
    })
}

fn no_status() -> TdxPolicy {
    TdxPolicy {
        accepted_tcb_status: vec![],
        ..Default::default()
    }
}

#[test]
fn intel_roots() {
    let (Some(root), Some(signing), Some(platform)) = (
        td("intel-roots/intel-sgx-root-ca.pem"),
        td("intel-roots/intel-tcb-signing-chain.pem"),
        td("intel-roots/intel-pck-platform-ca-chain.pem"),
    ) else {
        return;
    };
    let root = Cert::from_pem_or_der(&root).unwrap();
    assert_eq!(root.sha256(), INTEL_SGX_ROOT_SHA256);
    let s = Cert::from_pem_bundle(&signing).unwrap();
    s[0].verify_ecdsa_p256_by(&s[1]).unwrap();
    assert_eq!(s[1].sha256(), INTEL_SGX_ROOT_SHA256);
    assert!(
        s[0].valid_at(t("2025-05-01T00:00:00Z")) && !s[0].valid_at(now()),
        "TCB signing expired 2025-05-21"
    );
    let p = Cert::from_pem_bundle(&platform).unwrap();
    p[0].verify_ecdsa_p256_by(&p[1]).unwrap();
    assert!(p[0].valid_at(now()));
}

#[test]
fn crls_verify_and_list_no_quote_pck() {
    let (Some(pck_crl), Some(root_crl), Some(platform)) = (
        td("tdx/go-tdx-guest-pck-platform-ca-2023-06.crl.der"),
        td("tdx/go-tdx-guest-intel-root-ca-2023-04.crl.der"),
        td("intel-roots/intel-pck-platform-ca-chain.pem"),
    ) else {
        return;
    };
    let p = Cert::from_pem_bundle(&platform).unwrap();
    let crl = Crl::parse(&pck_crl).unwrap();
    crl.verify_ecdsa_p256_by(&p[0]).unwrap();
    assert!(crl.valid_at(t("2023-07-01T00:00:00Z")) && !crl.valid_at(now()));
    Crl::parse(&root_crl)
        .unwrap()
        .verify_ecdsa_p256_by(&p[1])
        .unwrap();
    for f in [
        "tdx/trustee-quote-v4-fmspc50806f.dat",
        "tdx/trustee-quote-v5-fmspc90c06f.dat",
        "tdx/go-tdx-guest-quote-v5-fmspc90c06f.dat",
        "tdx/gce-cos113-quote-v4-padded.dat",
        "azure-tdx/trustee-td-quote.bin",
    ] {
        let Some(q) = td(f) else { return };
        let q = Quote::parse(&q).unwrap();
        let pck = Cert::from_pem_bundle(&q.pck_chain_pem).unwrap();
        assert!(!crl.is_revoked(&pck[0]), "{f}");
    }
}

#[test]
fn collateral_signatures_verify() {
    for f in [
        "tdx/go-tdx-guest-tcbinfo-fmspc50806f-2023-06.json",
        "tdx/go-tdx-guest-tcbinfo-fmspc90c06f-2026-02.json",
    ] {
        let Some(c) = collateral(f) else { return };
        tdx::verify_collateral(&c, &IntelRoot::pinned(), None).unwrap();
    }
    // In-window reference time for the 2023 set.
    let Some(c) = collateral("tdx/go-tdx-guest-tcbinfo-fmspc50806f-2023-06.json") else {
        return;
    };
    tdx::verify_collateral(&c, &IntelRoot::pinned(), Some(t("2023-07-01T00:00:00Z"))).unwrap();
    let errs = tdx::verify_collateral(&c, &IntelRoot::pinned(), Some(now())).unwrap_err();
    assert!(errs.iter().any(|e| matches!(
        e,
        TdxError::CollateralNotValidAt {
            what: "TCB info",
            ..
        }
    )));
    assert!(
        errs.iter()
            .any(|e| matches!(e, TdxError::CertNotValidAt { .. }))
    );
    // A tampered TCB info fails its signature.
    let mut bad = c.clone();
    let s = String::from_utf8(bad.tcb_info.take().unwrap())
        .unwrap()
        .replacen("\"UpToDate\"", "\"UpToDatf\"", 1);
    bad.tcb_info = Some(s.into_bytes());
    let errs = tdx::verify_collateral(&bad, &IntelRoot::pinned(), None).unwrap_err();
    assert!(
        errs.contains(&TdxError::CollateralSignature("TCB info")),
        "{errs:?}"
    );
}

#[test]
fn trustee_v4_quote_is_up_to_date() {
    let (Some(q), Some(c)) = (
        td("tdx/trustee-quote-v4-fmspc50806f.dat"),
        collateral("tdx/go-tdx-guest-tcbinfo-fmspc50806f-2023-06.json"),
    ) else {
        return;
    };
    assert_eq!(q.len(), 4936);
    let at = Some(t("2023-07-01T00:00:00Z"));
    // This quote comes from a debug TD: the strict default rejects it for exactly that reason.
    let errs = tdx::verify_quote(
        &q,
        Some(&c),
        &TdxPolicy::default(),
        Times {
            at,
            collateral_at: at,
        },
    )
    .unwrap_err();
    assert_eq!(errs, vec![TdxError::Debug("0100001000000000".into())]);
    let p = TdxPolicy {
        reject_debug: false,
        ..Default::default()
    };
    let v = tdx::verify_quote(
        &q,
        Some(&c),
        &p,
        Times {
            at,
            collateral_at: at,
        },
    )
    .unwrap();
    assert_eq!(v.tcb_status, Some(TcbStatus::UpToDate));
    assert_eq!(v.quote_version, 4);
    assert_eq!(v.fmspc, "50806f000000");
    assert!(v.tee_tcb_svn.starts_with("030005"));
    assert_eq!(v.qe_svn, 4);
    // At the current date the collateral is stale.
    assert!(
        tdx::verify_quote(
            &q,
            Some(&c),
            &p,
            Times {
                at: Some(now()),
                collateral_at: Some(now())
            }
        )
        .is_err()
    );
}

#[test]
fn trustee_v5_quote_matches_no_tcb_level() {
    let (Some(q), Some(c)) = (
        td("tdx/trustee-quote-v5-fmspc90c06f.dat"),
        collateral("tdx/go-tdx-guest-tcbinfo-fmspc90c06f-2026-02.json"),
    ) else {
        return;
    };
    let parsed = Quote::parse(&q).unwrap();
    assert_eq!(parsed.version, 5);
    assert!(parsed.body.tee_tcb_svn2.is_some());
    // Signatures and chain alone are valid.
    tdx::verify_quote(
        &q,
        None,
        &no_status(),
        Times {
            at: Some(now()),
            collateral_at: None,
        },
    )
    .unwrap();
    let errs = tdx::verify_quote(
        &q,
        Some(&c),
        &TdxPolicy::default(),
        Times {
            at: Some(now()),
            collateral_at: None,
        },
    )
    .unwrap_err();
    assert!(
        errs.iter()
            .any(|e| matches!(e, TdxError::TcbLevelNotSupported { .. })),
        "{errs:?}"
    );
}

#[test]
fn go_tdx_guest_v5_quote_is_up_to_date() {
    let (Some(q), Some(c)) = (
        td("tdx/go-tdx-guest-quote-v5-fmspc90c06f.dat"),
        collateral("tdx/go-tdx-guest-tcbinfo-fmspc90c06f-2026-02.json"),
    ) else {
        return;
    };
    // The TCB signing certificate copy expired 2025-05-21 while this TCB info was issued 2026-02:
    // collateral time checks are skipped (documented), the quote's PCK chain is checked at now.
    let v = tdx::verify_quote(
        &q,
        Some(&c),
        &TdxPolicy::default(),
        Times {
            at: Some(now()),
            collateral_at: None,
        },
    )
    .unwrap();
    assert_eq!(v.tcb_status, Some(TcbStatus::UpToDate));
    assert_eq!(v.fmspc, "90c06f000000");
    assert_eq!(v.qe_svn, 7);
    assert!(v.tee_tcb_svn.starts_with("0b0104"));
    let errs = tdx::verify_quote(
        &q,
        Some(&c),
        &TdxPolicy::default(),
        Times {
            at: Some(now()),
            collateral_at: Some(now()),
        },
    )
    .unwrap_err();
    assert!(
        errs.iter()
            .any(|e| matches!(e, TdxError::CollateralNotValidAt { .. }))
    );
}

#[test]
fn gce_padded_quote_verifies_without_tcb_info() {
    let (Some(q), Some(nonce)) = (
        td("tdx/gce-cos113-quote-v4-padded.dat"),
        td("tdx/gce-cos113-nonce.bin"),
    ) else {
        return;
    };
    assert_eq!(q.len(), 8000);
    let v = tdx::verify_quote(
        &q,
        None,
        &no_status(),
        Times {
            at: Some(now()),
            collateral_at: None,
        },
    )
    .unwrap();
    assert_eq!(hex::decode(&v.report_data).unwrap(), nonce);
    assert_eq!(v.tcb_status, None);
    let errs = tdx::verify_quote(
        &q,
        None,
        &TdxPolicy::default(),
        Times {
            at: Some(now()),
            collateral_at: None,
        },
    )
    .unwrap_err();
    assert!(matches!(errs[0], TdxError::CollateralMissing(_)));
}

#[test]
fn azure_td_quote_signatures_and_chain() {
    let Some(q) = td("azure-tdx/trustee-td-quote.bin") else {
        return;
    };
    assert_eq!(q.len(), 5006);
    tdx::verify_quote(
        &q,
        None,
        &no_status(),
        Times {
            at: Some(now()),
            collateral_at: None,
        },
    )
    .unwrap();
}

#[test]
fn altered_quotes_fail_with_their_reason() {
    let Some(q) = td("tdx/go-tdx-guest-quote-v5-fmspc90c06f.dat") else {
        return;
    };
    let times = Times {
        at: Some(now()),
        collateral_at: None,
    };
    let mut body = q.clone();
    body[48 + 6 + 200] ^= 1; // inside MRTD
    assert_eq!(
        tdx::verify_quote(&body, None, &no_status(), times).unwrap_err(),
        vec![TdxError::QuoteSignature]
    );
    let parsed = Quote::parse(&q).unwrap();
    let qe_off = q
        .windows(384)
        .position(|w| w == parsed.qe_report.raw.as_slice())
        .unwrap();
    let mut qe = q.clone();
    qe[qe_off + 20] ^= 1; // QE MISCSELECT/reserved area: QE report signature breaks
    let errs = tdx::verify_quote(&qe, None, &no_status(), times).unwrap_err();
    assert!(errs.contains(&TdxError::QeReportSignature), "{errs:?}");
}

#[test]
fn gce_ccel_replay_reproduces_quote_rtmrs() {
    let (Some(log), Some(q)) = (
        td("tdx/gce-cos113-ccel-eventlog.bin"),
        td("tdx/gce-cos113-quote-v4-padded.dat"),
    ) else {
        return;
    };
    let rtmrs = tdx::ccel::replay_rtmrs(&log).unwrap();
    assert_eq!(rtmrs, Quote::parse(&q).unwrap().body.rtmr);
    // The unpaired OVMF log parses but matches no quote here.
    let Some(other) = td("tdx/trustee-ccel-eventlog-ovmf-unpaired.bin") else {
        return;
    };
    assert_ne!(
        tdx::ccel::replay_rtmrs(&other).unwrap(),
        Quote::parse(&q).unwrap().body.rtmr
    );
}
