//! azure-sev-snp AK trust: the real trustee HCL report + VCEK vouch for exactly their HCLAkPub.
#![allow(clippy::unwrap_used)]

mod common;
use base64::Engine;
use common::td;
use constellation_attest::azure::HclReport;
use constellation_attest::azure::variant::{AzureSnpAkTrust, AzureSnpInstanceInfo};
use constellation_attest::document::TpmEvidence;
use constellation_attest::policy::SnpPolicy;
use constellation_attest::snp::AmdRoots;
use constellation_attest::tpm::{AkTrust, TpmPublic};
use constellation_attest::validator::{PlatformClaims, ValidationError};
use constellation_attest::variant::Variant;

/// Marshals an RSA signing key as TPM2B_PUBLIC.
fn tpm2b_rsa(n: &[u8], e: u32) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend(0x0001u16.to_be_bytes()); // TPM_ALG_RSA
    t.extend(0x000Bu16.to_be_bytes()); // SHA-256 name
    t.extend(0x0005_0072u32.to_be_bytes());
    t.extend(0u16.to_be_bytes()); // authPolicy
    t.extend(0x0010u16.to_be_bytes()); // symmetric NULL
    t.extend(0x0014u16.to_be_bytes()); // RSASSA
    t.extend(0x000Bu16.to_be_bytes()); // SHA-256
    t.extend(((n.len() * 8) as u16).to_be_bytes());
    t.extend(if e == 65537 { 0 } else { e }.to_be_bytes());
    t.extend((n.len() as u16).to_be_bytes());
    t.extend(n);
    let mut out = (t.len() as u16).to_be_bytes().to_vec();
    out.extend(t);
    out
}

fn evidence(info: &AzureSnpInstanceInfo) -> TpmEvidence {
    serde_json::from_value(serde_json::json!({
        "ak_public": [], "quote": [], "signature": [], "pcrs": {}, "event_log": null,
        "instance_info": serde_json::to_vec(info).unwrap(),
    }))
    .unwrap()
}

#[test]
fn hcl_report_vouches_for_its_ak_only() {
    let (Some(h), Some(pem)) = (
        td("azure-snp/trustee-hcl-report-milan.bin"),
        td("azure-snp/trustee-vcek-ask-ark-milan.pem"),
    ) else {
        return;
    };
    let info = AzureSnpInstanceInfo {
        hcl_report: base64::engine::general_purpose::STANDARD.encode(&h),
        vcek_pem: String::from_utf8(pem.clone()).unwrap(),
        chain_pem: String::new(),
    };
    let claims = HclReport::parse(&h).unwrap().claims().unwrap();
    let e = u32::from_be_bytes({
        let mut b = [0u8; 4];
        b[4 - claims.ak_e.len()..].copy_from_slice(&claims.ak_e);
        b
    });
    let ak = TpmPublic::parse_tpm2b(&tpm2b_rsa(&claims.ak_n, e)).unwrap();
    let trust = AzureSnpAkTrust {
        roots: AmdRoots::builtin(),
        policy: SnpPolicy::default(),
    };
    let ev = evidence(&info);
    match trust
        .verify_ak(Variant::AzureSevSnp, &ev, &ak, &[0; 32])
        .unwrap()
    {
        PlatformClaims::HardwareVerified { claims } => assert_eq!(claims["hardware"]["vmpl"], 0),
        other => panic!("{other:?}"),
    }
    // Another key is refused.
    let mut n = claims.ak_n.clone();
    n[5] ^= 1;
    let other = TpmPublic::parse_tpm2b(&tpm2b_rsa(&n, e)).unwrap();
    let err = trust
        .verify_ak(Variant::AzureSevSnp, &ev, &other, &[0; 32])
        .unwrap_err();
    assert!(
        matches!(err, ValidationError::Platform { .. }) && err.to_string().contains("HCLAkPub"),
        "{err}"
    );
    // A tampered HCL report is refused with the hardware reasons.
    let mut bad = h.clone();
    bad[0x20 + 0x90] ^= 1;
    let bad_info = AzureSnpInstanceInfo {
        hcl_report: base64::engine::general_purpose::STANDARD.encode(&bad),
        ..info
    };
    let err = trust
        .verify_ak(Variant::AzureSevSnp, &evidence(&bad_info), &ak, &[0; 32])
        .unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
}
