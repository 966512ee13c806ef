//! azure-trustedlaunch: the vTPM AK certificate must certify exactly the AK and chain to a root
//! pinned in the policy; a missing intermediate is fetched from the caIssuers (AIA) URL through a
//! configured mirror (a local HTTP server here). Synthetic Azure-like PKI (RSA, sha256WithRSA).
#![allow(clippy::unwrap_used)]

mod common;
use std::sync::OnceLock;

use common::http::{Routes, Server};
use common::synth::{Signer, Y2020, Y2040, make_cert};
use common::synth_tdx::pem;
use common::synth_tpm::{self, Ak};
use constellation_attest::azure::trustedlaunch::{
    TrustedLaunchError, TrustedLaunchInstanceInfo, ca_issuers_url,
};
use constellation_attest::certs::Cert;
use constellation_attest::config::AttestationConfig;
use constellation_attest::document::{AttestationDocument, Evidence};
use constellation_attest::validator::{PlatformClaims, ValidationError, Validators};
use constellation_attest::variant::Variant;
use rsa::pkcs8::EncodePublicKey;

const NONCE: &[u8] = b"tl-nonce";
const USER: &[u8] = &[0x11; 32];
const AIA_PATH: &str = "/pkiinfra/Certs/Azure%20Virtual%20TPM%20CA%20-%2001.crt";

struct Pki {
    root: Vec<u8>,
    intermediate: Vec<u8>,
    inter_key: rsa::RsaPrivateKey,
    other_root: Vec<u8>,
}

fn rsa_key() -> rsa::RsaPrivateKey {
    rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap()
}

fn spki(k: &rsa::RsaPrivateKey) -> Vec<u8> {
    k.to_public_key()
        .to_public_key_der()
        .unwrap()
        .as_bytes()
        .to_vec()
}

fn pki() -> &'static Pki {
    static P: OnceLock<Pki> = OnceLock::new();
    P.get_or_init(|| {
        let root_key = rsa_key();
        let inter_key = rsa_key();
        let root = make_cert(
            "Azure Virtual TPM Root Certificate Authority 2023",
            "Azure Virtual TPM Root Certificate Authority 2023",
            &spki(&root_key),
            1,
            (Y2020, Y2040),
            &[],
            Signer::RsaPkcs1(&root_key),
        );
        let intermediate = make_cert(
            "Global Virtual TPM CA - 01",
            "Azure Virtual TPM Root Certificate Authority 2023",
            &spki(&inter_key),
            2,
            (Y2020, Y2040),
            &[],
            Signer::RsaPkcs1(&root_key),
        );
        let other_key = rsa_key();
        let other_root = make_cert(
            "Azure Virtual TPM Root Certificate Authority 2023",
            "Azure Virtual TPM Root Certificate Authority 2023",
            &spki(&other_key),
            1,
            (Y2020, Y2040),
            &[],
            Signer::RsaPkcs1(&other_key),
        );
        Pki {
            root,
            intermediate,
            inter_key,
            other_root,
        }
    })
}

/// AIA extension value: SEQUENCE { SEQUENCE { caIssuers OID, [6] URI } }.
fn aia(uri: &str) -> Vec<u8> {
    let oid = [0x06, 0x08, 0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02];
    let mut ad = oid.to_vec();
    ad.push(0x86);
    ad.push(uri.len() as u8);
    ad.extend(uri.as_bytes());
    let mut seq1 = vec![0x30, ad.len() as u8];
    seq1.extend(ad);
    let mut out = vec![0x30, seq1.len() as u8];
    out.extend(seq1);
    out
}

fn ak_cert(ak: &Ak, validity: (u64, u64)) -> Vec<u8> {
    let p = pki();
    make_cert(
        "ak.vtpm.azure",
        "Global Virtual TPM CA - 01",
        &ak.spki_der,
        7,
        validity,
        &[(
            "1.3.6.1.5.5.7.1.1",
            aia(&format!("http://crl.microsoft.com{AIA_PATH}")),
        )],
        Signer::RsaPkcs1(&p.inter_key),
    )
}

fn validators(policy: serde_json::Value) -> Validators {
    let json = serde_json::json!({
        "variant": "azure-trustedlaunch",
        "measurements": synth_tpm::measurements_json(&synth_tpm::pcrs()),
        "policy": policy,
    });
    let c = AttestationConfig::from_json(json.to_string().as_bytes()).unwrap();
    Validators::new(c.validators().unwrap())
}

fn doc(ak: &Ak, info: &TrustedLaunchInstanceInfo) -> Vec<u8> {
    let ev = synth_tpm::evidence(
        ak,
        &synth_tpm::pcrs(),
        serde_json::to_vec(info).unwrap(),
        USER,
        NONCE,
    );
    AttestationDocument::new(
        Variant::AzureTrustedLaunch,
        USER.to_vec(),
        Evidence::Tpm(ev),
    )
    .to_bytes()
}

fn info(cert: &[u8], with_intermediate: bool) -> TrustedLaunchInstanceInfo {
    TrustedLaunchInstanceInfo {
        ak_cert: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, cert),
        intermediates_pem: if with_intermediate {
            pem(&pki().intermediate)
        } else {
            String::new()
        },
    }
}

fn tl_err(e: ValidationError) -> TrustedLaunchError {
    match e {
        ValidationError::Platform { source, .. } => {
            *source.downcast::<TrustedLaunchError>().unwrap()
        }
        other => panic!("expected a platform error, got {other}"),
    }
}

fn roots_policy(root: &[u8]) -> serde_json::Value {
    serde_json::json!({"version": 1, "azure": {"trusted_launch_roots_pem": [pem(root)]}})
}

#[test]
fn ak_certificate_with_intermediate_in_evidence() {
    let ak = synth_tpm::ak();
    let v = validators(roots_policy(&pki().root));
    let c = v
        .validate_bytes(
            &doc(ak, &info(&ak_cert(ak, (Y2020, Y2040)), true)),
            NONCE,
            USER,
        )
        .unwrap();
    let PlatformClaims::CloudVouchedAk { claims } = &c.platform else {
        panic!("{:?}", c.platform)
    };
    assert_eq!(claims["chain"].as_array().unwrap().len(), 3);
}

#[test]
fn intermediate_fetched_from_the_aia_mirror() {
    let mut r = Routes::new();
    r.insert(
        ("GET".into(), AIA_PATH.into()),
        (200, pki().intermediate.clone()),
    );
    let s = Server::start(r);
    let ak = synth_tpm::ak();
    let cert = ak_cert(ak, (Y2020, Y2040));
    assert_eq!(
        ca_issuers_url(&Cert::from_der(&cert).unwrap()).unwrap(),
        format!("http://crl.microsoft.com{AIA_PATH}")
    );
    let mut p = roots_policy(&pki().root);
    p["azure"]["ca_issuers_base_url"] = s.base().into();
    validators(p)
        .validate_bytes(&doc(ak, &info(&cert, false)), NONCE, USER)
        .unwrap();
    assert_eq!(s.requests.lock().unwrap()[0].path, AIA_PATH);
}

#[test]
fn neg_no_intermediate_and_no_mirror() {
    let ak = synth_tpm::ak();
    let e = validators(roots_policy(&pki().root))
        .validate_bytes(
            &doc(ak, &info(&ak_cert(ak, (Y2020, Y2040)), false)),
            NONCE,
            USER,
        )
        .unwrap_err();
    assert!(matches!(tl_err(e), TrustedLaunchError::Untrusted { .. }));
}

#[test]
fn neg_chain_to_another_root() {
    let ak = synth_tpm::ak();
    let e = validators(roots_policy(&pki().other_root))
        .validate_bytes(
            &doc(ak, &info(&ak_cert(ak, (Y2020, Y2040)), true)),
            NONCE,
            USER,
        )
        .unwrap_err();
    assert!(matches!(tl_err(e), TrustedLaunchError::Untrusted { .. }));
}

#[test]
fn neg_certificate_for_another_key() {
    let ak = synth_tpm::ak();
    let cert = ak_cert(synth_tpm::other_ak(), (Y2020, Y2040));
    let e = validators(roots_policy(&pki().root))
        .validate_bytes(&doc(ak, &info(&cert, true)), NONCE, USER)
        .unwrap_err();
    assert!(matches!(tl_err(e), TrustedLaunchError::AkMismatch));
}

#[test]
fn neg_expired_ak_certificate() {
    let ak = synth_tpm::ak();
    let cert = ak_cert(ak, (Y2020, Y2020 + 86_400));
    let e = validators(roots_policy(&pki().root))
        .validate_bytes(&doc(ak, &info(&cert, true)), NONCE, USER)
        .unwrap_err();
    assert!(matches!(tl_err(e), TrustedLaunchError::Expired { .. }));
}

#[test]
fn needs_roots_in_the_policy() {
    let json = serde_json::json!({"variant": "azure-trustedlaunch", "measurements": {}});
    let c = AttestationConfig::from_json(json.to_string().as_bytes()).unwrap();
    let e = c.validators().err().unwrap();
    assert!(e.to_string().contains("trusted_launch_roots_pem"), "{e}");
}
