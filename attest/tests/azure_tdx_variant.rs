//! azure-tdx: the TD quote vouches (through the HCL report's TDREPORT and runtime claims) for the
//! vTPM AK. Real trustee evidence from ../shared/testdata, and a synthetic end-to-end document
//! through `AttestationConfig::validators()`.
#![allow(clippy::unwrap_used)]

mod common;
use base64::Engine;
use common::synth_tdx::{QuoteSpec, pki, quote};
use common::synth_tpm::{self, Ak};
use constellation_attest::azure::variant::{AzureAkError, AzureTdxAkTrust, AzureTdxInstanceInfo};
use constellation_attest::azure::{AzureError, HclReport};
use constellation_attest::config::AttestationConfig;
use constellation_attest::document::{AttestationDocument, Evidence, TdxCollateral, TpmEvidence};
use constellation_attest::policy::TdxPolicy;
use constellation_attest::tpm::{AkTrust, TpmPublic};
use constellation_attest::validator::{PlatformClaims, ValidationError, Validators};
use constellation_attest::variant::Variant;
use sha2::Digest;

const NONCE: &[u8] = b"azure-tdx-nonce";
const USER: &[u8] = &[0x33; 32];

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn azure_err(e: ValidationError) -> AzureAkError {
    match e {
        ValidationError::Platform { source, .. } => *source.downcast::<AzureAkError>().unwrap(),
        other => panic!("expected a platform error, got {other}"),
    }
}

/// An HCL report (v2 layout) holding a TDREPORT with the quote's fields and these claims.
fn hcl_tdx(spec: &QuoteSpec, claims: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 2600.max(0x4D4 + claims.len())];
    b[0..4].copy_from_slice(b"HCLA");
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    let td = 0x20;
    b[td] = 0x81;
    b[td + 128..td + 192].copy_from_slice(&spec.report_data);
    b[td + 264..td + 280].copy_from_slice(&spec.tee_tcb_svn);
    b[td + 512..td + 520].copy_from_slice(&spec.td_attributes);
    b[td + 520..td + 528].copy_from_slice(&spec.xfam);
    b[td + 528..td + 576].copy_from_slice(&spec.mrtd);
    for (i, r) in spec.rtmr.iter().enumerate() {
        b[td + 720 + 48 * i..td + 768 + 48 * i].copy_from_slice(r);
    }
    let igvm = 0x4C0;
    for (i, v) in [20 + claims.len() as u32, 1, 4, 1, claims.len() as u32]
        .iter()
        .enumerate()
    {
        b[igvm + 4 * i..igvm + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    b[0x4D4..0x4D4 + claims.len()].copy_from_slice(claims);
    b
}

fn claims_json(ak: &Ak) -> Vec<u8> {
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    serde_json::to_vec(&serde_json::json!({
        "keys": [{"kid": "HCLAkPub", "key_ops": ["sign"], "kty": "RSA", "e": "AQAB", "n": url.encode(&ak.modulus)}],
        "vm-configuration": {"vmUniqueId": "8C85CE00-0000-4000-8000-000000000001"},
        "user-data": "00",
    }))
    .unwrap()
}

struct Synthetic {
    validators: Validators,
    info: AzureTdxInstanceInfo,
}

fn synthetic(claims_ak: &Ak) -> Synthetic {
    let p = pki();
    let claims = claims_json(claims_ak);
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(&sha2::Sha256::digest(&claims));
    let spec = QuoteSpec {
        report_data: rd,
        ..Default::default()
    };
    let q = quote(&spec, &p, &p.pck_key);
    let info = AzureTdxInstanceInfo {
        hcl_report: b64(&hcl_tdx(&spec, &claims)),
        td_quote: b64(&q),
        collateral: Some(TdxCollateral::from_files(&p.collateral())),
    };
    let json = serde_json::json!({
        "variant": "azure-tdx",
        "measurements": synth_tpm::measurements_json(&synth_tpm::pcrs()),
        // The MRTD of the TD and the MRSEAM of the TDX module the quote reports.
        "policy": {"version": 1, "tdx": {"root_ca_pem": p.root_pem(),
            "mrtd": [hex::encode(spec.mrtd)], "mrseam": ["00".repeat(48)]}},
    });
    let c = AttestationConfig::from_json(json.to_string().as_bytes()).unwrap();
    Synthetic {
        validators: Validators::new(c.validators().unwrap()),
        info,
    }
}

fn doc(ak: &Ak, info: &AzureTdxInstanceInfo) -> Vec<u8> {
    let ev = synth_tpm::evidence(
        ak,
        &synth_tpm::pcrs(),
        serde_json::to_vec(info).unwrap(),
        USER,
        NONCE,
    );
    AttestationDocument::new(Variant::AzureTdx, USER.to_vec(), Evidence::Tpm(ev)).to_bytes()
}

#[test]
fn azure_tdx_verifies_end_to_end() {
    let s = synthetic(synth_tpm::ak());
    let c = s
        .validators
        .validate_bytes(&doc(synth_tpm::ak(), &s.info), NONCE, USER)
        .unwrap();
    assert_eq!(c.variant, Variant::AzureTdx);
    let PlatformClaims::HardwareVerified { claims } = &c.platform else {
        panic!("{:?}", c.platform)
    };
    assert_eq!(claims["hardware"]["tcb_status"], "UpToDate");
    assert_eq!(
        claims["vm_unique_id"],
        "8C85CE00-0000-4000-8000-000000000001"
    );
}

#[test]
fn neg_azure_tdx_hcl_ak_is_not_the_quoting_ak() {
    let s = synthetic(synth_tpm::other_ak());
    let e = s
        .validators
        .validate_bytes(&doc(synth_tpm::ak(), &s.info), NONCE, USER)
        .unwrap_err();
    assert!(matches!(azure_err(e), AzureAkError::AkMismatch));
}

#[test]
fn neg_azure_tdx_quote_of_another_td() {
    let s = synthetic(synth_tpm::ak());
    let p = pki();
    let other = QuoteSpec {
        mrtd: [0x99; 48],
        ..Default::default()
    };
    let mut info = s.info.clone();
    info.td_quote = b64(&quote(&other, &p, &p.pck_key));
    let e = s
        .validators
        .validate_bytes(&doc(synth_tpm::ak(), &info), NONCE, USER)
        .unwrap_err();
    match azure_err(e) {
        AzureAkError::Hardware(errs) => {
            assert!(
                errs.contains(&AzureError::QuoteReportMismatch("MRTD")),
                "{errs:?}"
            );
            assert!(
                errs.contains(&AzureError::QuoteReportMismatch("REPORT_DATA")),
                "{errs:?}"
            );
        }
        other => panic!("{other}"),
    }
}

#[test]
fn neg_azure_tdx_claims_altered() {
    let s = synthetic(synth_tpm::ak());
    let mut hcl = base64::engine::general_purpose::STANDARD
        .decode(&s.info.hcl_report)
        .unwrap();
    // Flip a byte inside the vmUniqueId: the claims no longer hash to REPORT_DATA.
    let pos = hcl.windows(8).position(|w| w == b"8C85CE00").unwrap();
    hcl[pos] = b'9';
    let mut info = s.info.clone();
    info.hcl_report = b64(&hcl);
    let e = s
        .validators
        .validate_bytes(&doc(synth_tpm::ak(), &info), NONCE, USER)
        .unwrap_err();
    match azure_err(e) {
        AzureAkError::Hardware(errs) => assert!(
            errs.iter().any(|e| matches!(e, AzureError::Hcl(_))),
            "{errs:?}"
        ),
        other => panic!("{other}"),
    }
}

#[test]
fn neg_azure_tdx_missing_collateral_default_policy() {
    let s = synthetic(synth_tpm::ak());
    let mut info = s.info.clone();
    info.collateral = None;
    let e = s
        .validators
        .validate_bytes(&doc(synth_tpm::ak(), &info), NONCE, USER)
        .unwrap_err();
    assert!(matches!(azure_err(e), AzureAkError::Hardware(_)));
}

fn tpm2b_from_claims(n: &[u8], e: &[u8]) -> TpmPublic {
    let mut t = synth_tpm::tpm2b_rsa(n);
    if e != [1, 0, 1] {
        let mut b = [0u8; 4];
        b[4 - e.len()..].copy_from_slice(e);
        let off = 2 + 2 + 2 + 4 + 2 + 2 + 2 + 2 + 2;
        t[off..off + 4].copy_from_slice(&b);
    }
    TpmPublic::parse_tpm2b(&t).unwrap()
}

#[test]
fn real_trustee_azure_tdx_evidence_vouches_for_its_ak() {
    let (Some(h), Some(q)) = (
        common::td("azure-tdx/trustee-hcl-report-tdx.bin"),
        common::td("azure-tdx/trustee-td-quote.bin"),
    ) else {
        return;
    };
    let claims = HclReport::parse(&h).unwrap().claims().unwrap();
    let ak = tpm2b_from_claims(&claims.ak_n, &claims.ak_e);
    let info = AzureTdxInstanceInfo {
        hcl_report: b64(&h),
        td_quote: b64(&q),
        collateral: None,
    };
    let ev: TpmEvidence = serde_json::from_value(serde_json::json!({
        "ak_public": [], "quote": [], "signature": [], "pcrs": {}, "event_log": null,
        "instance_info": serde_json::to_vec(&info).unwrap(),
    }))
    .unwrap();
    // No TCB info for this FMSPC in the set, so no TCB status can be required.
    let trust = AzureTdxAkTrust {
        policy: TdxPolicy {
            accepted_tcb_status: vec![],
            ..Default::default()
        },
    };
    match trust.verify_ak(Variant::AzureTdx, &ev, &ak, &[0; 32]) {
        Ok(PlatformClaims::HardwareVerified { claims }) => {
            assert_eq!(claims["hardware"]["quote_version"], 4);
        }
        Err(ValidationError::Platform { source, .. }) => {
            // The PCK chain of real evidence may have expired by the time this runs; anything
            // else is a failure.
            let msg = source.to_string();
            assert!(msg.contains("not valid at"), "{msg}");
            eprintln!("real azure-tdx evidence: certificates expired, only the expiry checked");
            return;
        }
        other => panic!("{other:?}"),
    }
    let mut n = claims.ak_n.clone();
    n[7] ^= 1;
    let other = tpm2b_from_claims(&n, &claims.ak_e);
    let e = trust
        .verify_ak(Variant::AzureTdx, &ev, &other, &[0; 32])
        .unwrap_err();
    assert!(matches!(azure_err(e), AzureAkError::AkMismatch));
    // A quote from another TD (the GCE one) does not match the TDREPORT.
    if let Some(gce) = common::td("tdx/gce-cos113-quote-v4-padded.dat") {
        let bad = AzureTdxInstanceInfo {
            td_quote: b64(&gce),
            ..info
        };
        let ev2: TpmEvidence = serde_json::from_value(serde_json::json!({
            "ak_public": [], "quote": [], "signature": [], "pcrs": {}, "event_log": null,
            "instance_info": serde_json::to_vec(&bad).unwrap(),
        }))
        .unwrap();
        let e = trust
            .verify_ak(Variant::AzureTdx, &ev2, &ak, &[0; 32])
            .unwrap_err();
        match azure_err(e) {
            AzureAkError::Hardware(errs) => assert!(
                errs.contains(&AzureError::QuoteReportMismatch("MRTD")),
                "{errs:?}"
            ),
            other => panic!("{other}"),
        }
    }
}
