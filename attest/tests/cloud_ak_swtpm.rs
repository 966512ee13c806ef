//! The issuer quotes with the attestation key the cloud provisioned, and each variant's real
//! validator accepts the result. swtpm is provisioned exactly like the cloud vTPM: Azure's AK
//! persisted at 0x81000003 with the HCL report (synthetic, signed by the test AMD/Intel PKI) at
//! NV 0x01400001 or the AK certificate (test CA) at NV 0x01C101D0; GCE's AK template at NV
//! 0x01c10001 with the Compute API (local server) naming the key derived from it.
#![allow(clippy::unwrap_used)]
#![cfg(all(feature = "tpm", feature = "test-support"))]

mod common;

use std::sync::Arc;

use base64::Engine;
use common::http::{Routes, Server};
use common::synth::{
    self, HWID, Rep, Signer, TCB, Y2020, Y2040, ak_eku_ext, ca_exts, make_cert, vcek,
};
use common::synth_tdx::{self, QuoteSpec, pem};
use common::synth_tpm;
use constellation_attest::azure::trustedlaunch::{TrustedLaunchError, TrustedLaunchInstanceInfo};
use constellation_attest::azure::variant::{
    AzureAkError, AzureTdxInstanceInfo, azure_snp_instance_info,
};
use constellation_attest::certs::fetch::{PlainHttp, Thim};
use constellation_attest::config::AttestationConfig;
use constellation_attest::document::{AttestationDocument, TdxCollateral};
use constellation_attest::gcp::{GceInstance, GcpAkError};
use constellation_attest::testing::{Swtpm, rsa_ak_template_bytes};
use constellation_attest::tpm::issuer::{
    AZURE_AK_CERT_NV_INDEX, AZURE_AK_PERSISTENT_HANDLE, AZURE_HCL_REPORT_NV_INDEX, AkSource,
    GCE_AK_TEMPLATE_RSA_NV_INDEX, TpmIssuer, TpmIssuerConfig,
};
use constellation_attest::tpm::{TpmKey, TpmPublic};
use constellation_attest::validator::{
    IssueError, Issuer, PlatformClaims, StaticInstanceInfo, ValidationError, Validators,
};
use constellation_attest::variant::Variant;
use sha2::Digest;

const NONCE: &[u8] = b"cloud-ak-nonce";
const USER: &[u8] = &[0x5c; 32];

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn swtpm() -> Swtpm {
    Swtpm::start().expect("start swtpm (install swtpm: scripts/install-deps.sh)")
}

fn open(tpm: &Swtpm, variant: Variant) -> Result<TpmIssuer, IssueError> {
    let cfg = TpmIssuerConfig {
        pcrs: (0..8).collect(),
        ..TpmIssuerConfig::new(tpm.tcti(), variant)
    };
    TpmIssuer::open(cfg)
}

/// The variant's validators from a config whose measurements are the TPM's current PCRs.
fn validators(variant: Variant, issuer: &TpmIssuer, policy: serde_json::Value) -> Validators {
    let json = serde_json::json!({
        "variant": variant.as_str(),
        "measurements": synth_tpm::measurements_json(&issuer.read_pcrs().unwrap()),
        "policy": policy,
    });
    let c = AttestationConfig::from_json(json.to_string().as_bytes()).unwrap();
    Validators::new(c.validators().unwrap())
}

fn issue(issuer: &TpmIssuer) -> Vec<u8> {
    let doc: AttestationDocument = issuer.issue(USER, NONCE).unwrap();
    doc.to_bytes()
}

/// The typed platform reason of a rejection (panics, naming the error, if it is another).
fn platform_err<T: std::error::Error + 'static>(e: ValidationError) -> T {
    e.into_platform_error()
        .unwrap_or_else(|e| panic!("expected a typed platform error, got {e}"))
}

fn rsa_modulus(tpm2b: &[u8]) -> Vec<u8> {
    match TpmPublic::parse_tpm2b(tpm2b).unwrap().key {
        TpmKey::Rsa { modulus, .. } => modulus,
        other => panic!("not an RSA key: {other:?}"),
    }
}

fn spki_der(tpm2b: &[u8]) -> Vec<u8> {
    constellation_attest::aws::ak_spki_der(&TpmPublic::parse_tpm2b(tpm2b).unwrap()).unwrap()
}

/// Runtime claims as the Azure paravisor writes them, with `modulus` as HCLAkPub.
fn claims_json(modulus: &[u8]) -> Vec<u8> {
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    serde_json::to_vec(&serde_json::json!({
        "keys": [{"kid": "HCLAkPub", "key_ops": ["sign"], "kty": "RSA", "e": "AQAB", "n": url.encode(modulus)}],
        "vm-configuration": {"vmUniqueId": "8C85CE00-0000-4000-8000-000000000002"},
        "user-data": "00",
    }))
    .unwrap()
}

/// HCL report: header, hardware report (1184-byte slot), IGVM request data, runtime claims.
fn hcl(hw_report: &[u8], report_type: u32, claims: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 0x4D4 + claims.len()];
    b[0..4].copy_from_slice(b"HCLA");
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    b[0x20..0x20 + hw_report.len()].copy_from_slice(hw_report);
    let igvm = 0x4C0;
    for (i, v) in [
        20 + claims.len() as u32,
        1,
        report_type,
        1,
        claims.len() as u32,
    ]
    .iter()
    .enumerate()
    {
        b[igvm + 4 * i..igvm + 4 * i + 4].copy_from_slice(&v.to_le_bytes());
    }
    b[0x4D4..].copy_from_slice(claims);
    b
}

fn report_data_of(claims: &[u8]) -> [u8; 64] {
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(&sha2::Sha256::digest(claims));
    rd
}

// ---------------------------------------------------------------- azure-sev-snp

/// Provisions the Azure CVM vTPM: AK at 0x81000003, HCL report naming `hcl_ak` (the AK itself
/// unless a test wants a mismatch) at 0x01400001. Returns the THIM server.
fn provision_azure_snp(tpm: &Swtpm, hcl_ak: Option<&[u8]>) -> Server {
    let ak = tpm
        .persist_rsa_ak(AZURE_AK_PERSISTENT_HANDLE, b"azure-hcl-ak")
        .unwrap();
    let claims = claims_json(hcl_ak.unwrap_or(&rsa_modulus(&ak)));
    let m = synth::milan();
    let leaf = vcek(m, TCB, HWID);
    let report = Rep {
        report_data: report_data_of(&claims),
        // Azure's paravisor firmware is signed with one of Azure's ID keys.
        id_key_digest: constellation_attest::policy::AZURE_ID_KEY_DIGESTS[0],
        ..Default::default()
    }
    .sign(&leaf.key);
    tpm.define_nv(AZURE_HCL_REPORT_NV_INDEX, &hcl(&report, 2, &claims))
        .unwrap();
    let bundle = serde_json::json!({
        "vcekCert": pem(&leaf.der),
        "tcbm": "7308000000000003",
        "certificateChain": format!("{}{}", pem(&m.ask), pem(&m.ark)),
    });
    let mut routes = Routes::new();
    routes.insert(
        ("GET".into(), "/metadata/THIM/amd/certification".into()),
        (200, serde_json::to_vec(&bundle).unwrap()),
    );
    Server::start(routes)
}

/// What the node agent does for azure-sev-snp: HCL report from NV, VCEK from THIM.
fn azure_snp_issuer(tpm: &Swtpm, thim: &Server) -> TpmIssuer {
    let mut issuer = open(tpm, Variant::AzureSevSnp).unwrap();
    let hcl = issuer.nv_read(AZURE_HCL_REPORT_NV_INDEX).unwrap();
    let thim = Thim {
        base: thim.base(),
        http: Box::new(PlainHttp::default()),
    };
    let info = azure_snp_instance_info(&hcl, &thim).unwrap();
    issuer.set_instance_info_source(Arc::new(StaticInstanceInfo(info)));
    issuer
}

fn snp_policy() -> serde_json::Value {
    serde_json::json!({"version": 1, "snp": {"ark_pem": [pem(&synth::milan().ark)]}})
}

#[test]
fn azure_sev_snp_issues_with_the_hcl_ak_and_validates() {
    let tpm = swtpm();
    let thim = provision_azure_snp(&tpm, None);
    let issuer = azure_snp_issuer(&tpm, &thim);
    assert_eq!(
        AkSource::for_variant(Variant::AzureSevSnp),
        AkSource::Persistent {
            handle: AZURE_AK_PERSISTENT_HANDLE
        }
    );
    let v = validators(Variant::AzureSevSnp, &issuer, snp_policy());
    let c = v.validate_bytes(&issue(&issuer), NONCE, USER).unwrap();
    let PlatformClaims::HardwareVerified { claims } = &c.platform else {
        panic!("{:?}", c.platform)
    };
    assert_eq!(
        claims["vm_unique_id"],
        "8C85CE00-0000-4000-8000-000000000002"
    );
    drop(issuer);
    drop(tpm);
}

#[test]
fn neg_azure_sev_snp_hcl_report_names_another_ak() {
    let tpm = swtpm();
    let thim = provision_azure_snp(&tpm, Some(&synth_tpm::other_ak().modulus));
    let issuer = azure_snp_issuer(&tpm, &thim);
    let v = validators(Variant::AzureSevSnp, &issuer, snp_policy());
    let e: AzureAkError = platform_err(v.validate_bytes(&issue(&issuer), NONCE, USER).unwrap_err());
    assert!(matches!(e, AzureAkError::AkMismatch), "{e}");
}

#[test]
fn neg_azure_variants_without_the_persistent_ak_name_the_handle() {
    let tpm = swtpm();
    for v in [
        Variant::AzureSevSnp,
        Variant::AzureTdx,
        Variant::AzureTrustedLaunch,
    ] {
        let e = open(&tpm, v).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, IssueError::AttestationKey { .. }), "{msg}");
        assert!(
            msg.contains("persistent handle 0x81000003")
                && msg.contains(v.as_str())
                && msg.contains("Azure vTPM"),
            "{msg}"
        );
    }
}

#[test]
fn neg_missing_hcl_report_names_the_index() {
    let tpm = swtpm();
    tpm.persist_rsa_ak(AZURE_AK_PERSISTENT_HANDLE, b"azure-hcl-ak")
        .unwrap();
    let issuer = open(&tpm, Variant::AzureSevSnp).unwrap();
    let msg = issuer
        .nv_read(AZURE_HCL_REPORT_NV_INDEX)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("0x01400001"), "{msg}");
}

// ---------------------------------------------------------------- azure-tdx

/// An HCL report (TDX) whose TDREPORT carries the TD quote's fields.
fn hcl_tdx(spec: &QuoteSpec, claims: &[u8]) -> Vec<u8> {
    let mut td = vec![0u8; 1024];
    td[0] = 0x81;
    td[128..192].copy_from_slice(&spec.report_data);
    td[264..280].copy_from_slice(&spec.tee_tcb_svn);
    td[512..520].copy_from_slice(&spec.td_attributes);
    td[520..528].copy_from_slice(&spec.xfam);
    td[528..576].copy_from_slice(&spec.mrtd);
    for (i, r) in spec.rtmr.iter().enumerate() {
        td[720 + 48 * i..768 + 48 * i].copy_from_slice(r);
    }
    hcl(&td, 4, claims)
}

fn azure_tdx_round_trip(hcl_ak: Option<&[u8]>) -> Result<(), ValidationError> {
    let tpm = swtpm();
    let ak = tpm
        .persist_rsa_ak(AZURE_AK_PERSISTENT_HANDLE, b"azure-tdx-ak")
        .unwrap();
    let claims = claims_json(hcl_ak.unwrap_or(&rsa_modulus(&ak)));
    let p = synth_tdx::pki();
    let spec = QuoteSpec {
        report_data: report_data_of(&claims),
        ..Default::default()
    };
    tpm.define_nv(AZURE_HCL_REPORT_NV_INDEX, &hcl_tdx(&spec, &claims))
        .unwrap();
    let mut issuer = open(&tpm, Variant::AzureTdx).unwrap();
    let hcl = issuer.nv_read(AZURE_HCL_REPORT_NV_INDEX).unwrap();
    // The quote the host's quoting enclave makes of that TDREPORT (IMDS /acc/tdquote).
    let info = AzureTdxInstanceInfo {
        hcl_report: b64(&hcl),
        td_quote: b64(&synth_tdx::quote(&spec, &p, &p.pck_key)),
        collateral: Some(TdxCollateral::from_files(&p.collateral())),
    };
    issuer.set_instance_info_source(Arc::new(StaticInstanceInfo(
        serde_json::to_vec(&info).unwrap(),
    )));
    let v = validators(
        Variant::AzureTdx,
        &issuer,
        // The MRTD of the TD and the MRSEAM of the TDX module the quote reports.
        serde_json::json!({"version": 1, "tdx": {"root_ca_pem": p.root_pem(),
            "mrtd": [hex::encode(spec.mrtd)], "mrseam": ["00".repeat(48)]}}),
    );
    v.validate_bytes(&issue(&issuer), NONCE, USER).map(|_| ())
}

#[test]
fn azure_tdx_issues_with_the_hcl_ak_and_validates() {
    azure_tdx_round_trip(None).unwrap();
}

#[test]
fn neg_azure_tdx_hcl_report_names_another_ak() {
    let e: AzureAkError =
        platform_err(azure_tdx_round_trip(Some(&synth_tpm::other_ak().modulus)).unwrap_err());
    assert!(matches!(e, AzureAkError::AkMismatch), "{e}");
}

// ---------------------------------------------------------------- azure-trustedlaunch

struct TlPki {
    root: Vec<u8>,
    intermediate: Vec<u8>,
    inter_key: rsa::RsaPrivateKey,
}

fn tl_pki() -> &'static TlPki {
    use rsa::pkcs8::EncodePublicKey;
    static P: std::sync::OnceLock<TlPki> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let key = || rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let spki = |k: &rsa::RsaPrivateKey| {
            k.to_public_key()
                .to_public_key_der()
                .unwrap()
                .as_bytes()
                .to_vec()
        };
        let (root_key, inter_key) = (key(), key());
        let root_cn = "Test Virtual TPM Root CA";
        let root = make_cert(
            root_cn,
            root_cn,
            &spki(&root_key),
            1,
            (Y2020, Y2040),
            &ca_exts(None),
            Signer::RsaPkcs1(&root_key),
        );
        let intermediate = make_cert(
            "Test Virtual TPM CA - 01",
            root_cn,
            &spki(&inter_key),
            2,
            (Y2020, Y2040),
            &ca_exts(None),
            Signer::RsaPkcs1(&root_key),
        );
        TlPki {
            root,
            intermediate,
            inter_key,
        }
    })
}

fn ak_cert(spki: &[u8]) -> Vec<u8> {
    make_cert(
        "ak.vtpm.test",
        "Test Virtual TPM CA - 01",
        spki,
        7,
        (Y2020, Y2040),
        &[ak_eku_ext()],
        Signer::RsaPkcs1(&tl_pki().inter_key),
    )
}

fn trusted_launch_round_trip(certified: Option<&[u8]>) -> Result<(), ValidationError> {
    let tpm = swtpm();
    let ak = tpm
        .persist_rsa_ak(AZURE_AK_PERSISTENT_HANDLE, b"azure-tl-ak")
        .unwrap();
    let spki = certified.map_or_else(|| spki_der(&ak), <[u8]>::to_vec);
    tpm.define_nv(AZURE_AK_CERT_NV_INDEX, &ak_cert(&spki))
        .unwrap();
    let mut issuer = open(&tpm, Variant::AzureTrustedLaunch).unwrap();
    let der = issuer.nv_read(AZURE_AK_CERT_NV_INDEX).unwrap();
    let info = TrustedLaunchInstanceInfo {
        ak_cert: b64(&der),
        intermediates_pem: pem(&tl_pki().intermediate),
    };
    issuer.set_instance_info_source(Arc::new(StaticInstanceInfo(
        serde_json::to_vec(&info).unwrap(),
    )));
    let v = validators(
        Variant::AzureTrustedLaunch,
        &issuer,
        serde_json::json!({"version": 1, "azure": {"trusted_launch_roots_pem": [pem(&tl_pki().root)]}}),
    );
    v.validate_bytes(&issue(&issuer), NONCE, USER).map(|_| ())
}

#[test]
fn azure_trustedlaunch_issues_with_the_certified_ak_and_validates() {
    trusted_launch_round_trip(None).unwrap();
}

#[test]
fn neg_azure_trustedlaunch_certificate_for_another_key() {
    let e: TrustedLaunchError =
        platform_err(trusted_launch_round_trip(Some(&synth_tpm::other_ak().spki_der)).unwrap_err());
    assert!(matches!(e, TrustedLaunchError::AkMismatch), "{e}");
}

#[test]
fn neg_missing_ak_certificate_names_the_index() {
    let tpm = swtpm();
    tpm.persist_rsa_ak(AZURE_AK_PERSISTENT_HANDLE, b"azure-tl-ak")
        .unwrap();
    let issuer = open(&tpm, Variant::AzureTrustedLaunch).unwrap();
    let msg = issuer
        .nv_read(AZURE_AK_CERT_NV_INDEX)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("0x01c101d0"), "{msg}");
}

// ---------------------------------------------------------------- gcp-sev-es

fn inst() -> GceInstance {
    GceInstance {
        project_id: "my-project".into(),
        zone: "europe-west3-b".into(),
        instance_name: "cp-0".into(),
    }
}

fn spki_pem(der: &[u8]) -> String {
    pem(der).replace("CERTIFICATE", "PUBLIC KEY")
}

/// The Compute API's getShieldedInstanceIdentity naming `signing_spki` as the vTPM AK.
fn compute_api(signing_spki: &[u8]) -> Server {
    let i = inst();
    let path = format!(
        "/compute/v1/projects/{}/zones/{}/instances/{}/getShieldedInstanceIdentity",
        i.project_id, i.zone, i.instance_name
    );
    let body = serde_json::json!({
        "kind": "compute#shieldedInstanceIdentity",
        "signingKey": {"ekPub": spki_pem(signing_spki)},
        "encryptionKey": {"ekPub": spki_pem(&synth_tpm::other_ak().spki_der)},
    });
    let mut routes = Routes::new();
    routes.insert(
        ("GET".into(), path),
        (200, serde_json::to_vec(&body).unwrap()),
    );
    Server::start(routes)
}

/// Provisions the GCE vTPM's AK template; returns the AK the hypervisor derives (and the
/// Compute API reports), computed independently of the issuer.
fn provision_gce(tpm: &Swtpm) -> Vec<u8> {
    let template = rsa_ak_template_bytes(&[]).unwrap();
    tpm.define_nv(GCE_AK_TEMPLATE_RSA_NV_INDEX, &template)
        .unwrap();
    spki_der(&tpm.endorsement_primary_public(&template).unwrap())
}

fn gcp_sev_es_round_trip(api_names_other_key: bool) -> Result<(), ValidationError> {
    let tpm = swtpm();
    let gce_ak = provision_gce(&tpm);
    // GCE's firmware records the confidential technology (1: AMD SEV) in PCR 0; the validator
    // reads it from the quoted event log.
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("log");
    let cfg = TpmIssuerConfig {
        pcrs: (0..8).collect(),
        event_log: Some(log_path.clone()),
        ..TpmIssuerConfig::new(tpm.tcti(), Variant::GcpSevEs)
    };
    let mut issuer = TpmIssuer::open(cfg).unwrap();
    let mut log = constellation_attest::eventlog::EventLogBuilder::new();
    let mut non_host_info = b"GCE NonHostInfo\0".to_vec();
    non_host_info.push(1);
    non_host_info.extend([0u8; 15]);
    let digest = log.measure(0, 0x11, &non_host_info);
    issuer.extend_sha256(0, digest).unwrap();
    std::fs::write(&log_path, log.build()).unwrap();
    assert_eq!(spki_der(issuer.ak_public()), gce_ak);
    issuer.set_instance_info_source(Arc::new(StaticInstanceInfo(
        serde_json::to_vec(&inst()).unwrap(),
    )));
    let api = compute_api(if api_names_other_key {
        &synth_tpm::other_ak().spki_der
    } else {
        &gce_ak
    });
    let v = validators(
        Variant::GcpSevEs,
        &issuer,
        serde_json::json!({"version": 1, "gcp": {"compute_api_url": api.base()}}),
    );
    v.validate_bytes(&issue(&issuer), NONCE, USER).map(|_| ())
}

#[test]
fn gcp_sev_es_issues_with_the_gce_ak_and_validates() {
    gcp_sev_es_round_trip(false).unwrap();
}

#[test]
fn neg_gcp_sev_es_compute_api_names_another_key() {
    let e: GcpAkError = platform_err(gcp_sev_es_round_trip(true).unwrap_err());
    assert!(matches!(e, GcpAkError::AkMismatch(_)), "{e}");
}

#[test]
fn neg_gcp_variants_without_the_ak_template_name_the_index() {
    let tpm = swtpm();
    for v in [Variant::GcpSevEs, Variant::GcpSevSnp] {
        let e = open(&tpm, v).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, IssueError::AttestationKey { .. }), "{msg}");
        assert!(
            msg.contains("0x01c10001") && msg.contains("GCE vTPM") && msg.contains(v.as_str()),
            "{msg}"
        );
    }
}

#[test]
fn neg_gce_template_that_is_not_a_key() {
    let tpm = swtpm();
    tpm.define_nv(GCE_AK_TEMPLATE_RSA_NV_INDEX, b"not a TPMT_PUBLIC")
        .unwrap();
    let msg = open(&tpm, Variant::GcpSevEs).unwrap_err().to_string();
    assert!(
        msg.contains("0x01c10001") && msg.contains("TPMT_PUBLIC"),
        "{msg}"
    );
}

#[test]
fn other_variants_keep_creating_their_ak() {
    for v in [Variant::QemuVtpm, Variant::AwsSevSnp, Variant::AwsNitroTpm] {
        assert_eq!(AkSource::for_variant(v), AkSource::Created, "{v}");
    }
}
