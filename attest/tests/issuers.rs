//! Node-side issuers without hardware: configfs-tsm entries laid out in a temp dir with recorded
//! (synthetic) device responses, the cloud metadata services and AMD KDS / Azure THIM served by
//! a local HTTP server in their real wire formats. Documents the issuers produce are then
//! checked by the validators built from an attestation config.
#![cfg(feature = "issuer")]
#![allow(clippy::unwrap_used)]

mod common;
use std::path::Path;

use common::http::{Routes, Server};
use common::synth::{self, HWID, Rep, TCB, vcek};
use common::synth_tdx::{QuoteSpec, pem, pki, quote};
use common::synth_tpm;
use constellation_attest::certs::fetch::{DiskCache, FetchError, Kds, PlainHttp, Thim};
use constellation_attest::certs::table::{self, CertKind};
use constellation_attest::config::AttestationConfig;
use constellation_attest::document::{AttestationDocument, Evidence, extra_data, tdx_report_data};
use constellation_attest::gcp::{GceInstance, GcpSnpInstanceInfoSource};
use constellation_attest::imds::{AwsImds, AzureImds, GceMetadata};
use constellation_attest::qemu_tdx::{CollateralSource, QemuTdxIssuer};
use constellation_attest::snp::issuer::SnpReportSource;
use constellation_attest::tdx::CollateralFiles;
use constellation_attest::tsm::ConfigFsTsm;
use constellation_attest::validator::{InstanceInfoSource, IssueError, Issuer, Validators};
use constellation_attest::variant::Variant;

const NONCE: &[u8] = b"issuer-nonce";
const USER: &[u8] = &[0x5A; 32];

/// A configfs-tsm entry as the kernel would present it after a report request.
fn entry(dir: &Path, provider: &str, outblob: &[u8], auxblob: Option<&[u8]>) -> std::path::PathBuf {
    let e = dir.join("report0");
    std::fs::create_dir(&e).unwrap();
    std::fs::write(e.join("provider"), format!("{provider}\n")).unwrap();
    std::fs::write(e.join("generation"), "1\n").unwrap();
    std::fs::write(e.join("outblob"), outblob).unwrap();
    if let Some(a) = auxblob {
        std::fs::write(e.join("auxblob"), a).unwrap();
    }
    e
}

fn validators(
    variant: &str,
    policy: serde_json::Value,
    measurements: serde_json::Value,
) -> Validators {
    let json =
        serde_json::json!({"variant": variant, "measurements": measurements, "policy": policy});
    let c = AttestationConfig::from_json(json.to_string().as_bytes()).unwrap();
    Validators::new(c.validators().unwrap())
}

/// The GCE instance the gcp-sev-snp tests run as.
fn gce() -> GceInstance {
    GceInstance {
        project_id: "my-project".into(),
        zone: "europe-west3-b".into(),
        instance_name: "cp-0".into(),
    }
}

/// The Compute API naming the synthetic AK as the instance's vTPM signing key (gcp-sev-snp
/// trusts the AK only through it).
fn compute_api() -> Server {
    let i = gce();
    let pem_key = pem(&synth_tpm::ak().spki_der).replace("CERTIFICATE", "PUBLIC KEY");
    let body = serde_json::json!({
        "kind": "compute#shieldedInstanceIdentity",
        "signingKey": {"ekPub": pem_key},
    });
    let mut routes = Routes::new();
    routes.insert(
        (
            "GET".into(),
            format!(
                "/compute/v1/projects/{}/zones/{}/instances/{}/getShieldedInstanceIdentity",
                i.project_id, i.zone, i.instance_name
            ),
        ),
        (200, serde_json::to_vec(&body).unwrap()),
    );
    Server::start(routes)
}

fn gcp_snp_validators(api: &Server) -> Validators {
    validators(
        "gcp-sev-snp",
        serde_json::json!({"version": 1, "snp": {"ark_pem": [pem(&synth::milan().ark)]},
            "gcp": {"compute_api_url": api.base()}}),
        synth_tpm::measurements_json(&synth_tpm::pcrs()),
    )
}

fn padded_extra() -> [u8; 64] {
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(&extra_data(USER, NONCE));
    rd
}

#[test]
fn gcp_snp_issuer_with_certificate_table_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let m = synth::milan();
    let leaf = vcek(m, TCB, HWID);
    let report = Rep {
        report_data: padded_extra(),
        ..Default::default()
    }
    .sign(&leaf.key);
    let aux = table::build(&[
        (CertKind::Vcek, &leaf.der),
        (CertKind::Ask, &m.ask),
        (CertKind::Ark, &m.ark),
    ]);
    let e = entry(dir.path(), "sev_guest", &report, Some(&aux));
    let src = GcpSnpInstanceInfoSource {
        snp: SnpReportSource {
            tsm: ConfigFsTsm::existing_entry(&e),
            kds: None,
            privlevel: Some(0),
            variant: Variant::GcpSevSnp,
        },
        gce: Some(gce()),
    };
    let ak = synth_tpm::ak();
    let info = src
        .instance_info(&extra_data(USER, NONCE), &ak.tpm2b)
        .unwrap();
    // The issuer asked the kernel for exactly the padded extra data, at VMPL 0.
    assert_eq!(std::fs::read(e.join("inblob")).unwrap(), padded_extra());
    assert_eq!(std::fs::read_to_string(e.join("privlevel")).unwrap(), "0");
    let ev = synth_tpm::evidence(ak, &synth_tpm::pcrs(), info, USER, NONCE);
    let d = AttestationDocument::new(Variant::GcpSevSnp, USER.to_vec(), Evidence::Tpm(ev));
    let api = compute_api();
    gcp_snp_validators(&api)
        .validate_bytes(&d.to_bytes(), NONCE, USER)
        .unwrap();
}

#[test]
fn gcp_snp_issuer_fetches_the_vcek_from_kds_when_the_table_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let m = synth::milan();
    let leaf = vcek(m, TCB, HWID);
    let report = Rep {
        version: 3,
        cpuid: Some((0x19, 0x01, 1)),
        report_data: padded_extra(),
        ..Default::default()
    }
    .sign(&leaf.key);
    let e = entry(dir.path(), "sev_guest", &report, None);
    let mut routes = Routes::new();
    routes.insert(
        (
            "GET".into(),
            format!(
                "/vcek/v1/Milan/{}?blSPL={}&teeSPL={}&snpSPL={}&ucodeSPL={}",
                hex::encode(HWID),
                TCB.0,
                TCB.1,
                TCB.2,
                TCB.3
            ),
        ),
        (200, leaf.der.clone()),
    );
    routes.insert(
        ("GET".into(), "/vcek/v1/Milan/cert_chain".into()),
        (200, format!("{}{}", pem(&m.ask), pem(&m.ark)).into_bytes()),
    );
    let s = Server::start(routes);
    let src = GcpSnpInstanceInfoSource {
        snp: SnpReportSource {
            tsm: ConfigFsTsm::existing_entry(&e),
            kds: Some(Kds {
                base: s.base(),
                http: Box::new(PlainHttp::default()),
                cache: DiskCache::new(dir.path().join("cache")),
            }),
            privlevel: None,
            variant: Variant::GcpSevSnp,
        },
        gce: Some(gce()),
    };
    let ak = synth_tpm::ak();
    let info = src
        .instance_info(&extra_data(USER, NONCE), &ak.tpm2b)
        .unwrap();
    let ev = synth_tpm::evidence(ak, &synth_tpm::pcrs(), info, USER, NONCE);
    let d = AttestationDocument::new(Variant::GcpSevSnp, USER.to_vec(), Evidence::Tpm(ev));
    let api = compute_api();
    gcp_snp_validators(&api)
        .validate_bytes(&d.to_bytes(), NONCE, USER)
        .unwrap();
}

#[test]
fn snp_issuer_refuses_a_tdx_provider_and_a_missing_signer() {
    let dir = tempfile::tempdir().unwrap();
    let report = Rep::default().unsigned();
    let e = entry(dir.path(), "tdx_guest", &report, None);
    let mut src = SnpReportSource {
        tsm: ConfigFsTsm::existing_entry(&e),
        kds: None,
        privlevel: None,
        variant: Variant::GcpSevSnp,
    };
    let err = src.get(&[0; 64]).unwrap_err();
    assert!(err.to_string().contains("not an SEV-SNP guest"), "{err}");
    std::fs::write(e.join("provider"), "sev_guest").unwrap();
    src.tsm = ConfigFsTsm::existing_entry(&e);
    let err = src.get(&[0; 64]).unwrap_err();
    assert!(err.to_string().contains("no KDS"), "{err}");
}

#[test]
fn tsm_entry_is_created_and_removed_and_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // A plain directory is not configfs: writing inblob works, but there is no generation.
    let err = ConfigFsTsm::new(dir.path())
        .report(&[1; 64], None)
        .unwrap_err();
    assert!(matches!(err, IssueError::Io { .. }), "{err}");
    assert!(err.to_string().contains("generation"), "{err}");
    // A non-numeric generation is refused too.
    let e = entry(dir.path(), "sev_guest", b"x", None);
    std::fs::write(e.join("generation"), "many").unwrap();
    let err = ConfigFsTsm::existing_entry(&e)
        .report(&[1; 64], None)
        .unwrap_err();
    assert!(err.to_string().contains("not a number"), "{err}");
    // A missing root cannot host an entry.
    let err = ConfigFsTsm::new(dir.path().join("absent"))
        .report(&[1; 64], None)
        .unwrap_err();
    assert!(matches!(err, IssueError::Io { .. }));
}

struct FixedCollateral(CollateralFiles);

impl CollateralSource for FixedCollateral {
    fn collateral(&self, fmspc: &[u8; 6]) -> Result<CollateralFiles, FetchError> {
        assert_eq!(hex::encode(fmspc), "90c06f000000");
        Ok(self.0.clone())
    }
}

#[test]
fn qemu_tdx_issuer_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let spec = QuoteSpec {
        report_data: tdx_report_data(USER, NONCE),
        ..Default::default()
    };
    let q = quote(&spec, &p, &p.pck_key);
    let e = entry(dir.path(), "tdx_guest", &q, None);
    let issuer = QemuTdxIssuer {
        tsm: ConfigFsTsm::existing_entry(&e),
        event_log: None,
        collateral: Some(Box::new(FixedCollateral(p.collateral()))),
    };
    let d = issuer.issue(USER, NONCE).unwrap();
    assert_eq!(
        std::fs::read(e.join("inblob")).unwrap(),
        tdx_report_data(USER, NONCE)
    );
    let v = validators(
        "qemu-tdx",
        serde_json::json!({"version": 1, "tdx": {"root_ca_pem": p.root_pem()}}),
        serde_json::json!({"0": {"expected": hex::encode(spec.mrtd), "warnOnly": false}}),
    );
    v.validate_bytes(&d.to_bytes(), NONCE, USER).unwrap();
    // The same quote does not validate for another nonce.
    assert!(v.validate_bytes(&d.to_bytes(), b"other", USER).is_err());
}

#[test]
fn qemu_tdx_issuer_refuses_an_snp_guest() {
    let dir = tempfile::tempdir().unwrap();
    let e = entry(dir.path(), "sev_guest", &[1; 1184], None);
    let issuer = QemuTdxIssuer {
        tsm: ConfigFsTsm::existing_entry(&e),
        event_log: None,
        collateral: None,
    };
    let err = issuer.issue(USER, NONCE).unwrap_err();
    assert!(err.to_string().contains("not a TDX guest"), "{err}");
}

// --- metadata services and THIM ---

#[test]
fn gce_metadata_names_the_instance() {
    let mut r = Routes::new();
    for (path, body) in [
        ("/computeMetadata/v1/project/project-id", "my-project"),
        (
            "/computeMetadata/v1/instance/zone",
            "projects/123456/zones/europe-west3-b",
        ),
        ("/computeMetadata/v1/instance/name", "cp-0\n"),
    ] {
        r.insert(("GET".into(), path.into()), (200, body.as_bytes().to_vec()));
    }
    let s = Server::start(r);
    let md = GceMetadata {
        base: s.base(),
        http: PlainHttp::default(),
    };
    assert_eq!(
        md.instance().unwrap(),
        GceInstance {
            project_id: "my-project".into(),
            zone: "europe-west3-b".into(),
            instance_name: "cp-0".into()
        }
    );
    let reqs = s.requests.lock().unwrap().clone();
    assert!(
        reqs.iter()
            .all(|r| r.header("Metadata-Flavor") == Some("Google"))
    );
}

#[test]
fn azure_imds_compute_and_td_quote() {
    let mut r = Routes::new();
    r.insert(
        (
            "GET".into(),
            "/metadata/instance/compute?api-version=2021-02-01".into(),
        ),
        (
            200,
            serde_json::to_vec(&serde_json::json!({
                "vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6", "name": "cp-0",
                "subscriptionId": "8d10da13-8125-4ba9-a717-bf7490507b3d",
                "resourceGroupName": "rg", "location": "westeurope", "vmSize": "Standard_DC4as_v5",
            }))
            .unwrap(),
        ),
    );
    let quote = vec![0xAB; 100];
    r.insert(
        ("POST".into(), "/acc/tdquote".into()),
        (
            200,
            serde_json::to_vec(&serde_json::json!({
                "quote": base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &quote)
            }))
            .unwrap(),
        ),
    );
    let s = Server::start(r);
    let imds = AzureImds {
        base: s.base(),
        http: PlainHttp::default(),
    };
    let c = imds.compute().unwrap();
    assert_eq!(c.name, "cp-0");
    assert_eq!(c.location, "westeurope");
    assert_eq!(imds.td_quote(&[7u8; 1024]).unwrap(), quote);
    let reqs = s.requests.lock().unwrap().clone();
    assert_eq!(reqs[0].header("Metadata"), Some("true"));
    let sent: serde_json::Value = serde_json::from_slice(&reqs[1].body).unwrap();
    let report = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        sent["report"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(report, vec![7u8; 1024]);
}

#[test]
fn aws_imdsv2_token_then_identity() {
    let mut r = Routes::new();
    r.insert(
        ("PUT".into(), "/latest/api/token".into()),
        (200, b"AQAEAFxx-token==".to_vec()),
    );
    r.insert(
        (
            "GET".into(),
            "/latest/dynamic/instance-identity/document".into(),
        ),
        (
            200,
            serde_json::to_vec(&serde_json::json!({
                "accountId": "123456789012", "architecture": "x86_64",
                "availabilityZone": "eu-central-1a", "imageId": "ami-0abcdef1234567890",
                "instanceId": "i-1234567890abcdef0", "instanceType": "m6a.xlarge",
                "privateIp": "10.0.0.5", "region": "eu-central-1", "version": "2017-09-30",
            }))
            .unwrap(),
        ),
    );
    let s = Server::start(r);
    let imds = AwsImds {
        base: s.base(),
        http: PlainHttp::default(),
    };
    let id = imds.identity().unwrap();
    assert_eq!(id.image_id, "ami-0abcdef1234567890");
    assert_eq!(id.region, "eu-central-1");
    let reqs = s.requests.lock().unwrap().clone();
    assert_eq!(reqs[0].method, "PUT");
    assert!(
        reqs[0]
            .header("X-aws-ec2-metadata-token-ttl-seconds")
            .is_some()
    );
    assert_eq!(
        reqs[1].header("X-aws-ec2-metadata-token"),
        Some("AQAEAFxx-token==")
    );
}

#[test]
fn thim_bundle_fetched_with_metadata_header() {
    let m = synth::milan();
    let leaf = vcek(m, TCB, HWID);
    let body = serde_json::to_vec(&serde_json::json!({
        "vcekCert": pem(&leaf.der),
        "tcbm": "7300000000000803",
        "certificateChain": format!("{}{}", pem(&m.ask), pem(&m.ark)),
        "cacheControl": "86400",
    }))
    .unwrap();
    let mut r = Routes::new();
    r.insert(
        ("GET".into(), "/metadata/THIM/amd/certification".into()),
        (200, body),
    );
    r.insert(
        ("GET".into(), "/bad/metadata/THIM/amd/certification".into()),
        (
            200,
            b"{\"vcekCert\":\"x\",\"tcbm\":\"1\",\"certificateChain\":\"\"}".to_vec(),
        ),
    );
    let s = Server::start(r);
    let thim = Thim {
        base: s.base(),
        http: Box::new(PlainHttp::default()),
    };
    let b = thim.vcek_bundle().unwrap();
    assert_eq!(b.tcb_raw(), Some(0x7300_0000_0000_0803));
    assert!(b.certificate_chain.contains("BEGIN CERTIFICATE"));
    assert_eq!(
        s.requests.lock().unwrap()[0].header("Metadata"),
        Some("true")
    );
    let bad = Thim {
        base: format!("{}/bad", s.base()),
        http: Box::new(PlainHttp::default()),
    };
    assert!(matches!(bad.vcek_bundle(), Err(FetchError::Json { .. })));
}

#[test]
fn disk_cache_refetches_expired_entries_only_with_max_age() {
    let mut r = Routes::new();
    r.insert(("GET".into(), "/x".into()), (200, b"body".to_vec()));
    let s = Server::start(r);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/x", s.base());
    let forever = DiskCache::new(dir.path().join("a"));
    for _ in 0..3 {
        assert_eq!(
            forever.get(&PlainHttp::default(), &url).unwrap().body,
            b"body"
        );
    }
    assert_eq!(s.requests.lock().unwrap().len(), 1);
    let short = DiskCache::with_max_age(dir.path().join("b"), std::time::Duration::from_millis(1));
    short.get(&PlainHttp::default(), &url).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    short.get(&PlainHttp::default(), &url).unwrap();
    assert_eq!(s.requests.lock().unwrap().len(), 3);
}
