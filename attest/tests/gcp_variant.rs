//! gcp-sev-snp and gcp-sev-es end to end through `AttestationConfig::validators()`: synthetic AMD
//! PKI and vTPM quotes, and the Compute API served by a local HTTP server in its real JSON shape.
#![allow(clippy::unwrap_used)]

mod common;
use base64::Engine;
use common::http::{Routes, Server};
use common::synth::{self, HWID, Rep, TCB, vcek};
use common::synth_tdx::pem;
use common::synth_tpm::{self, Ak};
use constellation_attest::config::AttestationConfig;
use constellation_attest::document::{AttestationDocument, Evidence, extra_data};
use constellation_attest::eventlog::{EventLog, EventLogBuilder};
use constellation_attest::gcp::{
    GceApiError, GceComputeApi, GceInstance, GcpAkError, GcpSnpInstanceInfo,
    ShieldedIdentitySource, parse_shielded_identity,
};
use constellation_attest::snp::SnpError;
use constellation_attest::validator::{PlatformClaims, ValidationError, Validators};
use constellation_attest::variant::Variant;
use sha2::Digest;

const NONCE: &[u8] = b"fresh-nonce-0123456789abcdef";
const USER: &[u8] = &[0x42; 32];

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn config(variant: &str, policy: serde_json::Value) -> Validators {
    let pcrs = synth_tpm::pcrs();
    let json = serde_json::json!({
        "variant": variant,
        "measurements": synth_tpm::measurements_json(&pcrs),
        "policy": policy,
    });
    let c = AttestationConfig::from_json(json.to_string().as_bytes()).unwrap();
    Validators::new(c.validators().unwrap())
}

/// gcp-sev-snp policy: the synthetic ARK and the Compute API at `api` (required by the variant).
fn snp_policy(api: &Server, extra: serde_json::Value) -> serde_json::Value {
    let mut p = serde_json::json!({"version": 1, "snp": {"ark_pem": [pem(&synth::milan().ark)]},
        "gcp": {"compute_api_url": api.base()}});
    if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    p
}

fn snp_info(report_data: [u8; 64], gce: Option<GceInstance>) -> Vec<u8> {
    let m = synth::milan();
    let leaf = vcek(m, TCB, HWID);
    let report = Rep {
        report_data,
        ..Default::default()
    }
    .sign(&leaf.key);
    serde_json::to_vec(&GcpSnpInstanceInfo {
        report: b64(&report),
        signer_pem: pem(&leaf.der),
        chain_pem: format!("{}{}", pem(&m.ask), pem(&m.ark)),
        gce,
    })
    .unwrap()
}

fn padded_extra() -> [u8; 64] {
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(&extra_data(USER, NONCE));
    rd
}

fn doc(variant: Variant, ak: &Ak, info: Vec<u8>) -> Vec<u8> {
    let ev = synth_tpm::evidence(ak, &synth_tpm::pcrs(), info, USER, NONCE);
    AttestationDocument::new(variant, USER.to_vec(), Evidence::Tpm(ev)).to_bytes()
}

/// The typed platform reason of a rejection (panics, naming the error, if it is another).
fn platform_err<T: std::error::Error + 'static>(e: ValidationError) -> T {
    e.into_platform_error()
        .unwrap_or_else(|e| panic!("expected a typed platform error, got {e}"))
}

#[test]
fn gcp_sev_snp_verifies_end_to_end() {
    let s = api_server(synth_tpm::ak());
    let v = config("gcp-sev-snp", snp_policy(&s, serde_json::json!({})));
    let d = doc(
        Variant::GcpSevSnp,
        synth_tpm::ak(),
        snp_info(padded_extra(), Some(inst())),
    );
    let claims = v.validate_bytes(&d, NONCE, USER).unwrap();
    assert_eq!(claims.variant, Variant::GcpSevSnp);
    assert_eq!(claims.measurements.len(), 8);
    assert!(matches!(
        claims.platform,
        PlatformClaims::HardwareVerified { .. }
    ));
}

#[test]
fn neg_gcp_sev_snp_report_for_other_nonce() {
    let s = api_server(synth_tpm::ak());
    let v = config("gcp-sev-snp", snp_policy(&s, serde_json::json!({})));
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(&extra_data(USER, b"an old nonce"));
    let d = doc(
        Variant::GcpSevSnp,
        synth_tpm::ak(),
        snp_info(rd, Some(inst())),
    );
    let e: GcpAkError = platform_err(v.validate_bytes(&d, NONCE, USER).unwrap_err());
    match e {
        GcpAkError::Hardware(errs) => assert!(
            errs.iter()
                .any(|e| matches!(e, SnpError::ReportData { .. })),
            "{errs:?}"
        ),
        other => panic!("{other}"),
    }
}

#[test]
fn neg_gcp_sev_snp_padding_must_be_zero() {
    let s = api_server(synth_tpm::ak());
    let v = config("gcp-sev-snp", snp_policy(&s, serde_json::json!({})));
    let mut rd = padded_extra();
    rd[63] = 1;
    let d = doc(
        Variant::GcpSevSnp,
        synth_tpm::ak(),
        snp_info(rd, Some(inst())),
    );
    let e: GcpAkError = platform_err(v.validate_bytes(&d, NONCE, USER).unwrap_err());
    assert!(matches!(e, GcpAkError::Hardware(_)), "{e}");
}

#[test]
fn neg_gcp_sev_snp_wrong_root() {
    // The default (pinned AMD) roots do not accept the synthetic chain.
    let s = api_server(synth_tpm::ak());
    let v = config(
        "gcp-sev-snp",
        serde_json::json!({"version": 1, "gcp": {"compute_api_url": s.base()}}),
    );
    let d = doc(
        Variant::GcpSevSnp,
        synth_tpm::ak(),
        snp_info(padded_extra(), Some(inst())),
    );
    let e: GcpAkError = platform_err(v.validate_bytes(&d, NONCE, USER).unwrap_err());
    assert!(matches!(e, GcpAkError::Hardware(_)), "{e}");
}

#[test]
fn neg_gcp_sev_snp_instance_info_swapped_after_quote() {
    let s = api_server(synth_tpm::ak());
    let v = config("gcp-sev-snp", snp_policy(&s, serde_json::json!({})));
    let ak = synth_tpm::ak();
    let mut ev = synth_tpm::evidence(
        ak,
        &synth_tpm::pcrs(),
        snp_info(padded_extra(), Some(inst())),
        USER,
        NONCE,
    );
    ev.instance_info = snp_info(padded_extra(), Some(inst())); // another (re-signed) report
    let d = AttestationDocument::new(Variant::GcpSevSnp, USER.to_vec(), Evidence::Tpm(ev));
    assert!(matches!(
        v.validate_bytes(&d.to_bytes(), NONCE, USER).unwrap_err(),
        ValidationError::NonceOrUserDataMismatch { .. }
    ));
}

#[test]
fn neg_gcp_sev_snp_garbage_instance_info() {
    let s = api_server(synth_tpm::ak());
    let v = config("gcp-sev-snp", snp_policy(&s, serde_json::json!({})));
    let d = doc(
        Variant::GcpSevSnp,
        synth_tpm::ak(),
        b"{\"report\":1}".to_vec(),
    );
    let e: GcpAkError = platform_err(v.validate_bytes(&d, NONCE, USER).unwrap_err());
    assert!(matches!(e, GcpAkError::InstanceInfo(_)), "{e}");
}

// --- Compute API (gcp-sev-es, and the optional gcp-sev-snp check) ---

fn inst() -> GceInstance {
    GceInstance {
        project_id: "my-project".into(),
        zone: "europe-west3-b".into(),
        instance_name: "cp-0".into(),
    }
}

fn identity_path(i: &GceInstance) -> String {
    format!(
        "/compute/v1/projects/{}/zones/{}/instances/{}/getShieldedInstanceIdentity",
        i.project_id, i.zone, i.instance_name
    )
}

fn spki_pem(der: &[u8]) -> String {
    let b = b64(der);
    let lines: Vec<String> = b
        .as_bytes()
        .chunks(64)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

/// The real `compute#shieldedInstanceIdentity` shape.
fn identity_body(signing: &Ak) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "kind": "compute#shieldedInstanceIdentity",
        "signingKey": {"ekPub": spki_pem(&signing.spki_der)},
        "encryptionKey": {"ekCert": "", "ekPub": spki_pem(&synth_tpm::other_ak().spki_der)},
    }))
    .unwrap()
}

fn api_server(signing: &Ak) -> Server {
    let mut routes = Routes::new();
    routes.insert(
        ("GET".into(), identity_path(&inst())),
        (200, identity_body(signing)),
    );
    Server::start(routes)
}

/// PCRs and event log of a GCE VM whose firmware recorded confidential technology `tech` (1: AMD
/// SEV) in PCR 0's NonHostInfo event.
fn es_pcrs(tech: u8) -> (std::collections::BTreeMap<u32, [u8; 32]>, Vec<u8>) {
    let mut b = EventLogBuilder::new();
    let mut data = b"GCE NonHostInfo\0".to_vec();
    data.push(tech);
    data.extend([0u8; 15]);
    b.measure(0, 0x11, &data);
    let log = b.build();
    let replayed = EventLog::parse(&log).unwrap().replay_sha256().unwrap();
    let mut pcrs = synth_tpm::pcrs();
    pcrs.insert(0, replayed[&0]);
    (pcrs, log)
}

fn es_config(policy: serde_json::Value) -> Validators {
    let json = serde_json::json!({
        "variant": "gcp-sev-es",
        "measurements": synth_tpm::measurements_json(&es_pcrs(1).0),
        "policy": policy,
    });
    let c = AttestationConfig::from_json(json.to_string().as_bytes()).unwrap();
    Validators::new(c.validators().unwrap())
}

fn es_doc_with(ak: &Ak, info: Vec<u8>, tech: u8, log: bool) -> Vec<u8> {
    let (pcrs, event_log) = es_pcrs(tech);
    let mut ev = synth_tpm::evidence(ak, &pcrs, info, USER, NONCE);
    ev.event_log = log.then(|| event_log.into());
    AttestationDocument::new(Variant::GcpSevEs, USER.to_vec(), Evidence::Tpm(ev)).to_bytes()
}

fn es_doc(ak: &Ak, info: Vec<u8>) -> Vec<u8> {
    es_doc_with(ak, info, 1, true)
}

fn es_policy(base: &str, projects: &[&str]) -> serde_json::Value {
    serde_json::json!({"version": 1, "gcp": {"compute_api_url": base, "allowed_projects": projects}})
}

#[test]
fn gcp_sev_es_ak_vouched_by_compute_api() {
    let s = api_server(synth_tpm::ak());
    let v = es_config(es_policy(&s.base(), &["my-project"]));
    let d = es_doc(synth_tpm::ak(), serde_json::to_vec(&inst()).unwrap());
    let claims = v.validate_bytes(&d, NONCE, USER).unwrap();
    assert!(matches!(
        claims.platform,
        PlatformClaims::CloudVouchedAk { .. }
    ));
    let reqs = s.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "GET");
    assert_eq!(reqs[0].path, identity_path(&inst()));
}

#[test]
fn neg_gcp_sev_es_other_ak() {
    let s = api_server(synth_tpm::other_ak());
    let v = es_config(es_policy(&s.base(), &[]));
    let d = es_doc(synth_tpm::ak(), serde_json::to_vec(&inst()).unwrap());
    let e: GcpAkError = platform_err(v.validate_bytes(&d, NONCE, USER).unwrap_err());
    assert!(matches!(e, GcpAkError::AkMismatch(_)), "{e}");
}

#[test]
fn neg_gcp_sev_es_unknown_instance_is_api_error() {
    let s = api_server(synth_tpm::ak());
    let v = es_config(es_policy(&s.base(), &[]));
    let mut i = inst();
    i.instance_name = "not-there".into();
    let d = es_doc(synth_tpm::ak(), serde_json::to_vec(&i).unwrap());
    let e: GcpAkError = platform_err(v.validate_bytes(&d, NONCE, USER).unwrap_err());
    assert!(matches!(e, GcpAkError::Api(GceApiError::Http(_))), "{e}");
}

#[test]
fn neg_gcp_sev_es_project_not_allowed() {
    let s = api_server(synth_tpm::ak());
    let v = es_config(es_policy(&s.base(), &["another-project"]));
    let d = es_doc(synth_tpm::ak(), serde_json::to_vec(&inst()).unwrap());
    let e: GcpAkError = platform_err(v.validate_bytes(&d, NONCE, USER).unwrap_err());
    assert!(matches!(e, GcpAkError::ProjectNotAllowed(_)), "{e}");
    assert!(
        s.requests.lock().unwrap().is_empty(),
        "no API call for a refused project"
    );
}

#[test]
fn neg_gcp_sev_es_path_injection_refused() {
    let s = api_server(synth_tpm::ak());
    let v = es_config(es_policy(&s.base(), &[]));
    let mut i = inst();
    i.instance_name = "../../other/instances/x".into();
    let d = es_doc(synth_tpm::ak(), serde_json::to_vec(&i).unwrap());
    let e: GcpAkError = platform_err(v.validate_bytes(&d, NONCE, USER).unwrap_err());
    assert!(matches!(e, GcpAkError::InstanceInfo(_)), "{e}");
    assert!(s.requests.lock().unwrap().is_empty());
}

#[test]
fn neg_gcp_sev_es_event_log_must_show_amd_sev() {
    let s = api_server(synth_tpm::ak());
    let v = es_config(es_policy(&s.base(), &[]));
    let info = || serde_json::to_vec(&inst()).unwrap();
    // No confidential technology (a plain Shielded VM), Intel TDX, SEV-SNP under the wrong variant.
    for tech in [0u8, 3, 4] {
        let d = es_doc_with(synth_tpm::ak(), info(), tech, true);
        let e: GcpAkError = platform_err(v.validate_bytes(&d, NONCE, USER).unwrap_err());
        assert!(
            matches!(&e, GcpAkError::NotSev(m) if m.contains(&format!("technology {tech}"))),
            "{tech}: {e}"
        );
    }
    // No event log at all.
    let d = es_doc_with(synth_tpm::ak(), info(), 1, false);
    let e: GcpAkError = platform_err(v.validate_bytes(&d, NONCE, USER).unwrap_err());
    assert!(
        matches!(&e, GcpAkError::NotSev(m) if m.contains("no event log")),
        "{e}"
    );
    // A log that does not replay to the quoted PCR 0 (an SEV event claimed, PCR 0 of a plain VM).
    let (pcrs, _) = es_pcrs(0);
    let mut ev = synth_tpm::evidence(synth_tpm::ak(), &pcrs, info(), USER, NONCE);
    ev.event_log = Some(es_pcrs(1).1.into());
    let d = AttestationDocument::new(Variant::GcpSevEs, USER.to_vec(), Evidence::Tpm(ev));
    let e: GcpAkError = platform_err(v.validate_bytes(&d.to_bytes(), NONCE, USER).unwrap_err());
    assert!(
        matches!(&e, GcpAkError::NotSev(m) if m.contains("replay")),
        "{e}"
    );
    // An event claiming SEV whose digest is that of a plain VM's event: the log replays to the
    // quoted PCR 0, but the data is not what was measured.
    let mut plain = b"GCE NonHostInfo\0".to_vec();
    plain.push(0);
    plain.extend([0u8; 15]);
    let mut claimed = plain.clone();
    claimed[16] = 1;
    let mut b = EventLogBuilder::new();
    b.event(0, 0x11, sha2::Sha256::digest(&plain).into(), &claimed);
    let mut ev = synth_tpm::evidence(synth_tpm::ak(), &pcrs, info(), USER, NONCE);
    ev.event_log = Some(b.build().into());
    let d = AttestationDocument::new(Variant::GcpSevEs, USER.to_vec(), Evidence::Tpm(ev));
    let e: GcpAkError = platform_err(v.validate_bytes(&d.to_bytes(), NONCE, USER).unwrap_err());
    assert!(
        matches!(&e, GcpAkError::NotSev(m) if m.contains("not what its PCR 0 digest measured")),
        "{e}"
    );
    assert!(
        s.requests.lock().unwrap().is_empty(),
        "refused before any API call"
    );
}

#[test]
fn gcp_sev_snp_needs_the_compute_api() {
    let json = serde_json::json!({"variant": "gcp-sev-snp",
        "measurements": synth_tpm::measurements_json(&synth_tpm::pcrs())});
    let c = AttestationConfig::from_json(json.to_string().as_bytes()).unwrap();
    let e = c.validators().err().unwrap();
    assert!(e.to_string().contains("policy.gcp.compute_api_url"), "{e}");
}

#[test]
fn gcp_sev_es_needs_an_api_endpoint() {
    let json = serde_json::json!({"variant": "gcp-sev-es", "measurements": {}});
    let c = AttestationConfig::from_json(json.to_string().as_bytes()).unwrap();
    let e = c.validators().err().unwrap();
    assert!(e.to_string().contains("compute_api_url"), "{e}");
}

#[test]
fn gcp_sev_snp_with_compute_api_checks_the_ak_too() {
    let s = api_server(synth_tpm::other_ak());
    let p = snp_policy(&s, serde_json::json!({}));
    let v = config("gcp-sev-snp", p);
    let d = doc(
        Variant::GcpSevSnp,
        synth_tpm::ak(),
        snp_info(padded_extra(), Some(inst())),
    );
    let e: GcpAkError = platform_err(v.validate_bytes(&d, NONCE, USER).unwrap_err());
    assert!(matches!(e, GcpAkError::AkMismatch(_)), "{e}");
}

#[test]
fn compute_api_client_parses_the_real_shape() {
    let s = api_server(synth_tpm::ak());
    let api = GceComputeApi {
        base: s.base(),
        http: Box::new(constellation_attest::certs::fetch::PlainHttp::default()),
    };
    let k = api.signing_key(&inst()).unwrap();
    assert_eq!(k, synth_tpm::ak().spki_der);
    assert!(parse_shielded_identity(b"{}").is_err());
    assert!(parse_shielded_identity(b"{\"signingKey\":{\"ekPub\":\"junk\"}}").is_err());
}
