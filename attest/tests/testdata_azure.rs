//! Every Azure vector of ../shared/testdata/MANIFEST.md (azure-snp/ HCL reports and evidence,
//! azure-tdx/), each giving the stated outcome.
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod common;
use base64::Engine;
use common::{now, td};
use constellation_attest::azure::{self, AzureError, HclReport, HwKind, TdReport};
use constellation_attest::certs::Cert;
use constellation_attest::policy::{MinTcb, Policy, SnpPolicy, TdxPolicy};
use constellation_attest::snp::{AmdRoots, Generation};
use constellation_attest::tdx::{Quote, Times};
use constellation_attest::variant::Variant;
use serde_json::Value;

fn b64url(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .unwrap()
}
fn bytes(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u8)
        .collect()
}
fn json(rel: &str) -> Option<Value> {
    td(rel).map(|b| serde_json::from_slice(&b).unwrap())
}
/// (message, signature, pcrs) from trustee's quote JSON (hex strings or byte arrays).
fn tpm_quote(q: &Value) -> (Vec<u8>, Vec<u8>, Vec<Vec<u8>>) {
    let f = |v: &Value| match v {
        Value::String(s) => hex::decode(s).unwrap(),
        other => bytes(other),
    };
    let pcrs = q["pcrs"].as_array().unwrap().iter().map(f).collect();
    (f(&q["message"]), f(&q["signature"]), pcrs)
}

/// azure-sev-snp's default policy (Azure's ID-key digests, the Milan minimum TCB). Real Azure
/// evidence must pass it unchanged.
fn snp_policy() -> SnpPolicy {
    Policy::for_variant(Variant::AzureSevSnp).snp
}

/// The default plus an explicit Genoa minimum: the defaults name none for Genoa, so a Genoa
/// report is refused until the operator sets one (here: the level of the Azure Genoa evidence).
fn snp_policy_genoa() -> SnpPolicy {
    let mut p = snp_policy();
    p.minimum_tcb_by_generation.insert(
        "genoa".into(),
        MinTcb {
            bootloader: 10,
            tee: 0,
            snp: 23,
            microcode: 84,
            fmc: 0,
        },
    );
    p
}

#[test]
fn trustee_hcl_report_milan_and_its_tpm_quote() {
    let (Some(h), Some(pem), Some(q)) = (
        td("azure-snp/trustee-hcl-report-milan.bin"),
        td("azure-snp/trustee-vcek-ask-ark-milan.pem"),
        json("azure-snp/trustee-tpm-quote-v1.json"),
    ) else {
        return;
    };
    assert_eq!(h.len(), 2600);
    let chain = Cert::from_pem_bundle(&pem).unwrap();
    let hcl = HclReport::parse(&h).unwrap();
    assert_eq!((hcl.version, hcl.kind), (1, HwKind::Snp));
    let v = azure::verify_snp(
        &h,
        &chain[0],
        Some(&chain[1]),
        &AmdRoots::builtin(),
        Some(now()),
        &snp_policy(),
    )
    .unwrap();
    assert_eq!(
        (
            v.hardware.reported_tcb.bootloader,
            v.hardware.reported_tcb.snp,
            v.hardware.reported_tcb.microcode
        ),
        (3, 8, 115)
    );
    let claims = hcl.claims().unwrap();
    let (m, s, pcrs) = tpm_quote(&q);
    let a = azure::verify_vtpm_quote(&claims, &m, &s, &pcrs).unwrap();
    assert_eq!(a.extra_data, b"challenge");
    // The bincode form holds the same quote.
    let Some(bin) = td("azure-snp/trustee-tpm-quote-v1.bincode.bin") else {
        return;
    };
    assert_eq!(u64::from_le_bytes(bin[..8].try_into().unwrap()), 256);
    assert_eq!(&bin[8..264], s.as_slice());
    let mut tampered = pcrs.clone();
    tampered[0][0] ^= 1;
    assert_eq!(
        azure::verify_vtpm_quote(&claims, &m, &s, &tampered).unwrap_err(),
        AzureError::PcrDigest
    );
    let mut bad = s.clone();
    bad[10] ^= 1;
    assert_eq!(
        azure::verify_vtpm_quote(&claims, &m, &bad, &pcrs).unwrap_err(),
        AzureError::TpmQuoteSignature
    );
}

fn check_evidence(rel: &str, generation: Generation, nonce: Option<&[u8]>) {
    let policy = if generation == Generation::Genoa {
        snp_policy_genoa()
    } else {
        snp_policy()
    };
    let Some(e) = json(rel) else { return };
    let (report, vcek, quote) = if e.get("version").is_some() {
        (
            b64url(e["hcl_report"].as_str().unwrap()),
            Cert::from_der(&b64url(e["vcek"].as_str().unwrap())).unwrap(),
            &e["tpm_quote"],
        )
    } else {
        (
            bytes(&e["report"]),
            Cert::from_pem_or_der(e["vcek"].as_str().unwrap().as_bytes()).unwrap(),
            &e["quote"],
        )
    };
    let v = azure::verify_snp(
        &report,
        &vcek,
        None,
        &AmdRoots::builtin(),
        Some(now()),
        &policy,
    )
    .unwrap();
    assert_eq!(v.hardware.generation, generation, "{rel}");
    if generation == Generation::Genoa {
        // Under the default alone a Genoa report is refused, naming the setting.
        let errs = azure::verify_snp(
            &report,
            &vcek,
            None,
            &AmdRoots::builtin(),
            Some(now()),
            &snp_policy(),
        )
        .unwrap_err();
        let msg: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            msg.iter()
                .any(|m| m.contains("minimum_tcb_by_generation.genoa")),
            "{msg:?}"
        );
    }
    assert_eq!(v.hardware.version, 3, "{rel}");
    let claims = HclReport::parse(&report).unwrap().claims().unwrap();
    let (m, s, pcrs) = tpm_quote(quote);
    let a = azure::verify_vtpm_quote(&claims, &m, &s, &pcrs).unwrap();
    if let Some(n) = nonce {
        assert_eq!(a.extra_data, n, "{rel}");
    }
}

#[test]
fn trustee_evidence_v0_milan() {
    check_evidence(
        "azure-snp/trustee-evidence-v0-milan.json",
        Generation::Milan,
        Some(b"challenge"),
    );
}

#[test]
fn trustee_evidence_v1_milan() {
    check_evidence(
        "azure-snp/trustee-evidence-v1-milan.json",
        Generation::Milan,
        None,
    );
}

#[test]
fn trustee_evidence_v0_genoa() {
    check_evidence(
        "azure-snp/trustee-evidence-v0-genoa.json",
        Generation::Genoa,
        None,
    );
    let (Some(e), Some(pem)) = (
        json("azure-snp/trustee-evidence-v0-genoa.json"),
        td("azure-snp/trustee-vcek-genoa.pem"),
    ) else {
        return;
    };
    let embedded = Cert::from_pem_or_der(e["vcek"].as_str().unwrap().as_bytes()).unwrap();
    assert_eq!(embedded.der(), Cert::from_pem_or_der(&pem).unwrap().der());
    let hcl = HclReport::parse(&bytes(&e["report"])).unwrap();
    assert_eq!(hcl.version, 2);
}

#[test]
fn azure_tdx_hcl_reports_bind_their_claims() {
    for f in [
        "azure-tdx/constellation-hcl-report-tdx.bin",
        "azure-tdx/trustee-hcl-report-tdx.bin",
    ] {
        let Some(h) = td(f) else { return };
        let hcl = HclReport::parse(&h).unwrap();
        assert_eq!((hcl.version, hcl.kind), (2, HwKind::Tdx), "{f}");
        let tdr = TdReport::parse(&hcl.hw_report).unwrap();
        hcl.check_binding(&tdr.report_data).unwrap();
        assert!(hcl.claims().unwrap().vm_unique_id.is_some());
    }
}

#[test]
fn azure_tdx_report_matches_quote_and_tpm_quote_verifies() {
    let (Some(h), Some(q), Some(tq)) = (
        td("azure-tdx/trustee-hcl-report-tdx.bin"),
        td("azure-tdx/trustee-td-quote.bin"),
        json("azure-tdx/trustee-tpm-quote-v1.json"),
    ) else {
        return;
    };
    let policy = TdxPolicy {
        accepted_tcb_status: vec![],
        ..Default::default()
    };
    let times = Times {
        at: Some(now()),
        collateral_at: None,
    };
    let v = azure::verify_tdx(&h, &q, None, &policy, times).unwrap();
    assert!(v.vm_unique_id.unwrap().starts_with("6332533D"));
    let claims = HclReport::parse(&h).unwrap().claims().unwrap();
    let (m, s, pcrs) = tpm_quote(&tq);
    azure::verify_vtpm_quote(&claims, &m, &s, &pcrs).unwrap();
    // A quote from another TD does not match this TDREPORT.
    let Some(other) = td("tdx/go-tdx-guest-quote-v5-fmspc90c06f.dat") else {
        return;
    };
    let errs = azure::verify_tdx(&h, &other, None, &policy, times).unwrap_err();
    assert!(
        errs.contains(&AzureError::QuoteReportMismatch("MRTD")),
        "{errs:?}"
    );
}

#[test]
fn azure_tdx_evidence_files_contain_the_same_reports() {
    let (Some(v0), Some(v1), Some(h), Some(q)) = (
        json("azure-tdx/trustee-evidence-v0.json"),
        json("azure-tdx/trustee-evidence-v1.json"),
        td("azure-tdx/trustee-hcl-report-tdx.bin"),
        td("azure-tdx/trustee-td-quote.bin"),
    ) else {
        return;
    };
    assert_eq!(bytes(&v0["hcl_report"]), h);
    assert_eq!(bytes(&v0["td_quote"]), q);
    assert_eq!(b64url(v1["hcl_report"].as_str().unwrap()), h);
    assert_eq!(b64url(v1["td_quote"].as_str().unwrap()), q);
    let claims = HclReport::parse(&h).unwrap().claims().unwrap();
    for e in [&v0, &v1] {
        let (m, s, pcrs) = tpm_quote(&e["tpm_quote"]);
        let a = azure::verify_vtpm_quote(&claims, &m, &s, &pcrs).unwrap();
        assert_eq!(a.extra_data, b"challenge");
    }
    assert!(Quote::parse(&q).is_ok());
}

#[test]
fn hcl_snp_report_in_tdx_verifier_is_rejected() {
    let Some(h) = td("azure-snp/trustee-hcl-report-milan.bin") else {
        return;
    };
    let errs = azure::verify_tdx(
        &h,
        &[],
        None,
        &TdxPolicy::default(),
        Times {
            at: None,
            collateral_at: None,
        },
    )
    .unwrap_err();
    assert_eq!(
        errs,
        vec![AzureError::Kind {
            expected: HwKind::Tdx,
            got: HwKind::Snp
        }]
    );
}
