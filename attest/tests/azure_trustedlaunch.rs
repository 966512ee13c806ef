//! azure-trustedlaunch: the vTPM AK certificate must certify exactly the AK and chain to a root
//! pinned in the policy; a missing intermediate is fetched from the caIssuers (AIA) URL through a
//! configured mirror (a local HTTP server here). Synthetic Azure-like PKI (RSA, sha256WithRSA).
#![allow(clippy::unwrap_used)]

mod common;
use std::sync::OnceLock;

use common::http::{Routes, Server};
use common::synth::{Signer, Y2020, Y2040, ak_eku_ext, ca_exts, make_cert};
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
            &ca_exts(None),
            Signer::RsaPkcs1(&root_key),
        );
        let intermediate = make_cert(
            "Global Virtual TPM CA - 01",
            "Azure Virtual TPM Root Certificate Authority 2023",
            &spki(&inter_key),
            2,
            (Y2020, Y2040),
            &ca_exts(None),
            Signer::RsaPkcs1(&root_key),
        );
        let other_key = rsa_key();
        let other_root = make_cert(
            "Azure Virtual TPM Root Certificate Authority 2023",
            "Azure Virtual TPM Root Certificate Authority 2023",
            &spki(&other_key),
            1,
            (Y2020, Y2040),
            &ca_exts(None),
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
        &[
            (
                "1.3.6.1.5.5.7.1.1",
                aia(&format!("http://crl.microsoft.com{AIA_PATH}")),
            ),
            ak_eku_ext(),
        ],
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

/// CA constraints on the AK chain, on an rcgen-built PKI (ECDSA P-256): a VM's own AK
/// certificate must not be able to issue a certificate for a software key.
mod constraints {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, PublicKeyData,
    };

    use super::*;
    use constellation_attest::certs::CertError;

    const AIK: &[u64] = &[2, 23, 133, 8, 3];

    struct Ca {
        der: Vec<u8>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn params(cn: &str) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p
    }

    fn ca_params(cn: &str, path_len: Option<u8>) -> CertificateParams {
        let mut p = params(cn);
        p.is_ca = IsCa::Ca(path_len.map_or(BasicConstraints::Unconstrained, |n| {
            BasicConstraints::Constrained(n)
        }));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    }

    fn root(cn: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let p = ca_params(cn, None);
        let der = p.self_signed(&key).unwrap().der().to_vec();
        Ca {
            der,
            issuer: Issuer::new(p, key),
        }
    }

    /// A certificate from `p` for a fresh key, signed by `by`, usable as an issuer.
    fn issue(p: CertificateParams, by: &Ca) -> Ca {
        let key = KeyPair::generate().unwrap();
        let der = p.signed_by(&key, &by.issuer).unwrap().der().to_vec();
        Ca {
            der,
            issuer: Issuer::new(p, key),
        }
    }

    /// An AK-profile certificate (end entity, AIK EKU, digitalSignature) for the quoting AK.
    fn ak_params(cn: &str) -> CertificateParams {
        let mut p = params(cn);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(AIK.to_vec())];
        p
    }

    /// The quoting AK's RSA public key, for rcgen to certify.
    struct AkPublic(Vec<u8>);

    impl PublicKeyData for AkPublic {
        fn der_bytes(&self) -> &[u8] {
            &self.0
        }
        fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
            &rcgen::PKCS_RSA_SHA256
        }
    }

    fn for_ak(p: CertificateParams, ak: &Ak, by: &Ca) -> Vec<u8> {
        use rsa::pkcs1::EncodeRsaPublicKey;
        let pkcs1 = ak.key.to_public_key().to_pkcs1_der().unwrap();
        let key = AkPublic(pkcs1.as_bytes().to_vec());
        p.signed_by(&key, &by.issuer).unwrap().der().to_vec()
    }

    fn validate(root: &Ca, leaf: &[u8], intermediates: &[&[u8]]) -> Result<(), TrustedLaunchError> {
        let ak = synth_tpm::ak();
        let info = TrustedLaunchInstanceInfo {
            ak_cert: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, leaf),
            intermediates_pem: intermediates.iter().map(|d| pem(d)).collect(),
        };
        validators(roots_policy(&root.der))
            .validate_bytes(&doc(ak, &info), NONCE, USER)
            .map(|_| ())
            .map_err(tl_err)
    }

    #[test]
    fn rcgen_ak_chain_with_ca_constraints_verifies() {
        let r = root("TL Root");
        let i = issue(ca_params("TL Intermediate", Some(0)), &r);
        let leaf = for_ak(ak_params("vm-ak"), synth_tpm::ak(), &i);
        validate(&r, &leaf, &[&i.der]).unwrap();
    }

    /// The review's attack: a VM's genuine AK certificate (an end entity) "issues" a
    /// certificate for a software AK. Refused, naming the AK certificate used as issuer.
    #[test]
    fn neg_intermediate_is_an_end_entity_certificate() {
        let r = root("TL Root");
        let i = issue(ca_params("TL Intermediate", Some(0)), &r);
        let vm_ak = issue(ak_params("genuine-vm-ak"), &i);
        let forged = for_ak(ak_params("forged-ak"), synth_tpm::ak(), &vm_ak);
        let e = validate(&r, &forged, &[&vm_ak.der, &i.der]).unwrap_err();
        assert!(
            matches!(&e, TrustedLaunchError::Cert(CertError::IssuerNotCa { issuer, subject })
                if issuer == "genuine-vm-ak" && subject == "forged-ak"),
            "{e:?}"
        );
        assert!(e.to_string().contains("'genuine-vm-ak'"), "{e}");
    }

    #[test]
    fn neg_ak_certificate_without_the_ak_eku() {
        let r = root("TL Root");
        let i = issue(ca_params("TL Intermediate", None), &r);
        let mut p = ak_params("tls-leaf");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = for_ak(p, synth_tpm::ak(), &i);
        let e = validate(&r, &leaf, &[&i.der]).unwrap_err();
        assert!(
            matches!(&e, TrustedLaunchError::Cert(CertError::MissingEku { subject, .. }) if subject == "tls-leaf"),
            "{e:?}"
        );
        let mut p = ak_params("no-eku");
        p.extended_key_usages = vec![];
        let leaf = for_ak(p, synth_tpm::ak(), &i);
        let e = validate(&r, &leaf, &[&i.der]).unwrap_err();
        assert!(
            matches!(&e, TrustedLaunchError::Cert(CertError::MissingEku { .. })),
            "{e:?}"
        );
    }

    #[test]
    fn neg_ak_certificate_that_is_a_ca() {
        let r = root("TL Root");
        let i = issue(ca_params("TL Intermediate", None), &r);
        let mut p = ak_params("ca-leaf");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let leaf = for_ak(p, synth_tpm::ak(), &i);
        let e = validate(&r, &leaf, &[&i.der]).unwrap_err();
        assert!(
            matches!(&e, TrustedLaunchError::Cert(CertError::LeafIsCa { subject }) if subject == "ca-leaf"),
            "{e:?}"
        );
    }

    #[test]
    fn neg_issuer_without_key_cert_sign() {
        let r = root("TL Root");
        let mut p = ca_params("TL Signing-only CA", None);
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let i = issue(p, &r);
        let leaf = for_ak(ak_params("vm-ak"), synth_tpm::ak(), &i);
        let e = validate(&r, &leaf, &[&i.der]).unwrap_err();
        assert!(
            matches!(&e, TrustedLaunchError::Cert(CertError::IssuerNoKeyCertSign { issuer, .. })
                if issuer == "TL Signing-only CA"),
            "{e:?}"
        );
    }

    #[test]
    fn neg_path_length_exceeded() {
        let r = root("TL Root");
        let upper = issue(ca_params("TL Upper CA", Some(0)), &r);
        let lower = issue(ca_params("TL Lower CA", None), &upper);
        let leaf = for_ak(ak_params("vm-ak"), synth_tpm::ak(), &lower);
        let e = validate(&r, &leaf, &[&lower.der, &upper.der]).unwrap_err();
        assert!(
            matches!(&e, TrustedLaunchError::Cert(CertError::PathLenExceeded { issuer, limit: 0, found: 1 })
                if issuer == "TL Upper CA"),
            "{e:?}"
        );
    }

    #[test]
    fn neg_expired_intermediate() {
        let r = root("TL Root");
        let mut p = ca_params("TL Expired CA", None);
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let i = issue(p, &r);
        let leaf = for_ak(ak_params("vm-ak"), synth_tpm::ak(), &i);
        let e = validate(&r, &leaf, &[&i.der]).unwrap_err();
        assert!(
            matches!(&e, TrustedLaunchError::Expired { subject, .. } if subject == "TL Expired CA"),
            "{e:?}"
        );
    }
}
