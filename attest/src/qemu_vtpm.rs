//! The `qemu-vtpm` variant: a local QEMU VM whose TPM is a swtpm process on the host.
//!
//! There is no hardware root of trust; the host that runs swtpm is trusted (it is the user's
//! own machine). What ties a quote to a real TPM is an attestation-key root the host creates,
//! the way cloud vTPMs are provisioned (GCE stores an AK certificate in NV at VM creation):
//!
//! - when it manufactures a node's swtpm, the host derives the AK inside that TPM from a fixed
//!   template (an ECC P-256 restricted signing key in the endorsement hierarchy, see
//!   `constellation_vmm::tpm`), certifies its public key with the cluster's [`AkCa`] and stores
//!   template and certificate in the TPM's NV ([`AK_TEMPLATE_NV_INDEX`], [`AK_CERT_NV_INDEX`]);
//! - the node's agent derives the same key from the template and carries the certificate (DER)
//!   as the document's `instance_info` (which the quote's qualifying data covers);
//! - [`certified_validator`] requires that certificate to chain to the cluster's AK CA
//!   certificate, to carry the TCG AK usage, and to certify exactly the key that signed the
//!   quote. A key made outside the TPM (software AK, self-made quote) has no such certificate.
//!
//! Every TPM check applies on top: quote signature, binding to nonce and user data, PCR digest,
//! measurements, event-log replay. A malicious host is not defended against.
//!
//! [`validator`] still trusts whatever AK the document carries: it only proves the quote is
//! consistent with itself, so a tampered image that builds its own quote with the expected
//! PCR values passes it. It remains for callers that have no AK CA yet.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, UnixTime};
use zeroize::Zeroizing;

use crate::document::TpmEvidence;
use crate::measurements::Measurements;
use crate::tpm::{AkTrust, EccCurve, HostTrustedAk, TpmKey, TpmPublic, TpmValidator};
use crate::validator::{PlatformClaims, ValidationError};
use crate::variant::Variant;

/// NV index of the AK template (`constellation_vmm::tpm::AK_TEMPLATE_NV_INDEX`).
pub const AK_TEMPLATE_NV_INDEX: u32 = 0x0100_1000;
/// NV index of the AK certificate (`constellation_vmm::tpm::AK_CERT_NV_INDEX`).
pub const AK_CERT_NV_INDEX: u32 = 0x0100_1001;

/// tcg-kp-AIKCertificate (2.23.133.8.3), DER content octets: the certificate is for a TPM
/// attestation key.
const AIK_CERTIFICATE_EKU: &[u8] = &[0x67, 0x81, 0x05, 0x08, 0x03];
const AIK_CERTIFICATE_EKU_ARCS: [u64; 5] = [2, 23, 133, 8, 3];
/// Largest AK certificate accepted (a P-256 certificate is well under 1 KiB).
const MAX_AK_CERT_LEN: usize = 4096;
const CA_NAME: &str = "constellation-rs qemu-vtpm AK CA";
const AK_NAME: &str = "constellation-rs qemu-vtpm attestation key";

/// Why a qemu-vtpm AK root or certificate is unusable. Each says what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QemuVtpmError {
    /// The validator was built without the cluster's AK CA certificate.
    #[error(
        "no AK CA certificate configured for qemu-vtpm: the cluster's AK CA certificate \
         (created by the provider with the cluster's TPMs) is needed to trust any node's key"
    )]
    NoCa,
    /// The AK CA certificate (or key) cannot be used.
    #[error("the qemu-vtpm AK CA is unusable: {0}")]
    Ca(String),
    /// The document carries no AK certificate.
    #[error(
        "the document carries no AK certificate (instance_info is empty): the node's TPM was \
         not provisioned by this cluster's provider, or the agent did not read NV index \
         {AK_CERT_NV_INDEX:#010x}"
    )]
    NoCertificate,
    /// The AK certificate does not chain to the AK CA or lacks the AK usage.
    #[error("the AK certificate is not issued by the cluster's AK CA for an attestation key: {0}")]
    Untrusted(String),
    /// The certificate certifies another key than the one that signed the quote.
    #[error(
        "the AK certificate certifies key {certified}, but the quote is signed by key {quoted}"
    )]
    KeyMismatch {
        /// Public key in the certificate (hex).
        certified: String,
        /// Public key that signed the quote (hex).
        quoted: String,
    },
    /// The key is not of the kind the host provisions.
    #[error("the attestation key is not an ECC NIST P-256 key as provisioned: {0}")]
    UnsupportedKey(String),
    /// Issuing a certificate failed.
    #[error("issuing the AK certificate: {0}")]
    Issue(String),
}

fn platform(e: QemuVtpmError) -> ValidationError {
    ValidationError::Platform {
        variant: Variant::QemuVtpm,
        source: Box::new(e),
    }
}

/// A validator for `qemu-vtpm` documents expecting `measurements` that trusts the AK the
/// document carries (see the module documentation for what that does not prove).
pub fn validator(measurements: Measurements) -> TpmValidator {
    TpmValidator::new(Variant::QemuVtpm, measurements, Arc::new(HostTrustedAk))
}

/// A validator for `qemu-vtpm` documents expecting `measurements` whose AK must be certified
/// by the cluster's AK CA (`ak_ca_pem`, the PEM certificate of [`AkCa::cert_pem`]).
pub fn certified_validator(
    measurements: Measurements,
    ak_ca_pem: &str,
) -> Result<TpmValidator, QemuVtpmError> {
    Ok(TpmValidator::new(
        Variant::QemuVtpm,
        measurements,
        Arc::new(CaCertifiedAk::from_pem(ak_ca_pem)?),
    ))
}

/// The cluster's AK CA: a P-256 key that certifies the AK of every TPM the host provisions.
/// Its private key stays with the host (the cluster's working directory); the certificate goes
/// into the attestation config.
pub struct AkCa {
    key: rcgen::KeyPair,
    cert_pem: String,
}

impl std::fmt::Debug for AkCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AkCa")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

fn ca_params() -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, CA_NAME);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    // Valid for as long as the cluster lives; the key never leaves the host.
    p.not_before = rcgen::date_time_ymd(2000, 1, 1);
    p.not_after = rcgen::date_time_ymd(9999, 12, 31);
    p
}

impl AkCa {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<Self, QemuVtpmError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| QemuVtpmError::Ca(format!("generating the key: {e}")))?;
        let cert = ca_params()
            .self_signed(&key)
            .map_err(|e| QemuVtpmError::Ca(format!("self-signing: {e}")))?;
        Ok(Self {
            key,
            cert_pem: cert.pem(),
        })
    }

    /// The CA saved earlier ([`Self::cert_pem`], [`Self::key_pem`]); the key must be the
    /// certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, QemuVtpmError> {
        let key = rcgen::KeyPair::from_pem(key_pem)
            .map_err(|e| QemuVtpmError::Ca(format!("the key is not a PEM private key: {e}")))?;
        let der = ca_der(cert_pem)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| QemuVtpmError::Ca(format!("the certificate does not parse: {e}")))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(QemuVtpmError::Ca(
                "the private key does not belong to the certificate".into(),
            ));
        }
        Ok(Self {
            key,
            cert_pem: cert_pem.to_owned(),
        })
    }

    /// The CA certificate (PEM), for the attestation config.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PKCS#8 PEM), to be kept only where the host keeps secrets.
    pub fn key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.key.serialize_pem())
    }

    /// Certifies the AK whose `TPM2B_PUBLIC` is `ak_public` (an ECC P-256 key, as the host
    /// provisions it); returns the certificate (DER).
    pub fn certify(&self, ak_public: &[u8]) -> Result<Vec<u8>, QemuVtpmError> {
        let ak = TpmPublic::parse_tpm2b(ak_public)
            .map_err(|e| QemuVtpmError::UnsupportedKey(e.to_string()))?;
        if !ak.is_restricted_signing_key() {
            return Err(QemuVtpmError::UnsupportedKey(format!(
                "object attributes {:#010x} are not those of a restricted signing key",
                ak.object_attributes
            )));
        }
        let point = p256_point(&ak.key).map_err(QemuVtpmError::UnsupportedKey)?;
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, AK_NAME);
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::Other(
            AIK_CERTIFICATE_EKU_ARCS.to_vec(),
        )];
        p.use_authority_key_identifier_extension = true;
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(9999, 12, 31);
        let issuer = rcgen::Issuer::new(ca_params(), &self.key);
        let cert = p
            .signed_by(&P256Point(point), &issuer)
            .map_err(|e| QemuVtpmError::Issue(e.to_string()))?;
        Ok(cert.der().to_vec())
    }
}

/// An uncompressed P-256 point as rcgen's subject public key.
struct P256Point(Vec<u8>);

impl rcgen::PublicKeyData for P256Point {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// `0x04 || x || y` of a P-256 TPM key.
fn p256_point(key: &TpmKey) -> Result<Vec<u8>, String> {
    let TpmKey::Ecc {
        curve: EccCurve::NistP256,
        x,
        y,
        ..
    } = key
    else {
        return Err(format!("it is a {} key of another kind", key.type_name()));
    };
    let mut point = vec![0x04];
    for c in [x, y] {
        let start = c.iter().position(|b| *b != 0).unwrap_or(c.len());
        let c = c.get(start..).unwrap_or_default();
        if c.len() > 32 {
            return Err("a coordinate is longer than 32 bytes".into());
        }
        point.resize(point.len() + 32 - c.len(), 0);
        point.extend_from_slice(c);
    }
    Ok(point)
}

fn ca_der(pem: &str) -> Result<Vec<u8>, QemuVtpmError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| QemuVtpmError::Ca(format!("the certificate is not PEM: {e:?}")))
}

/// qemu-vtpm AK trust: the document's `instance_info` is an AK certificate issued by the
/// cluster's AK CA for exactly the key that signed the quote.
#[derive(Debug, Clone)]
pub struct CaCertifiedAk {
    anchor: CertificateDer<'static>,
}

impl CaCertifiedAk {
    /// Trust rooted in the AK CA certificate `pem`; an empty one fails closed.
    pub fn from_pem(pem: &str) -> Result<Self, QemuVtpmError> {
        if pem.trim().is_empty() {
            return Err(QemuVtpmError::NoCa);
        }
        let anchor = CertificateDer::from(ca_der(pem)?);
        webpki::anchor_from_trusted_cert(&anchor)
            .map_err(|e| QemuVtpmError::Ca(format!("not a usable trust anchor: {e}")))?;
        Ok(Self { anchor })
    }

    fn check(&self, evidence: &TpmEvidence, ak: &TpmPublic) -> Result<(), QemuVtpmError> {
        let der = evidence.instance_info.as_slice();
        if der.is_empty() {
            return Err(QemuVtpmError::NoCertificate);
        }
        if der.len() > MAX_AK_CERT_LEN {
            return Err(QemuVtpmError::Untrusted(format!(
                "the certificate is {} bytes, more than the {MAX_AK_CERT_LEN} accepted",
                der.len()
            )));
        }
        let untrusted = |e: webpki::Error| QemuVtpmError::Untrusted(e.to_string());
        let anchor = webpki::anchor_from_trusted_cert(&self.anchor)
            .map_err(|e| QemuVtpmError::Ca(e.to_string()))?;
        let leaf = CertificateDer::from(der);
        let ee = webpki::EndEntityCert::try_from(&leaf).map_err(untrusted)?;
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            UnixTime::now(),
            webpki::KeyUsage::required(AIK_CERTIFICATE_EKU),
            None,
            None,
        )
        .map_err(untrusted)?;
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| {
            QemuVtpmError::Untrusted(format!("the certificate does not parse: {e}"))
        })?;
        let certified = cert.public_key().subject_public_key.data.as_ref();
        let quoted = p256_point(&ak.key).map_err(QemuVtpmError::UnsupportedKey)?;
        if certified != quoted.as_slice() {
            return Err(QemuVtpmError::KeyMismatch {
                certified: hex::encode(certified),
                quoted: hex::encode(quoted),
            });
        }
        Ok(())
    }
}

impl AkTrust for CaCertifiedAk {
    fn verify_ak(
        &self,
        _variant: Variant,
        evidence: &TpmEvidence,
        ak: &TpmPublic,
        _extra_data: &[u8; 32],
    ) -> Result<PlatformClaims, ValidationError> {
        self.check(evidence, ak).map_err(platform)?;
        Ok(PlatformClaims::HostTrustedAk)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeMap;

    use p256::ecdsa::signature::Signer;
    use serde_bytes::ByteBuf;

    use super::*;
    use crate::document::{AttestationDocument, Evidence, extra_data, tpm_qualifying_data};
    use crate::measurements::{Measurement, Measurements};
    use crate::tpm::pcr_digest_sha256;
    use crate::validator::Validator;

    /// fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign.
    const AK_ATTRS: u32 = 0x0005_0072;

    /// A software P-256 key dressed as a restricted TPM key (`TPM2B_PUBLIC`).
    fn software_ak(key: &p256::ecdsa::SigningKey) -> Vec<u8> {
        let point = key.verifying_key().to_encoded_point(false);
        let mut t = Vec::new();
        t.extend(0x0023u16.to_be_bytes());
        t.extend(0x000bu16.to_be_bytes());
        t.extend(AK_ATTRS.to_be_bytes());
        t.extend(0u16.to_be_bytes());
        t.extend(0x0010u16.to_be_bytes());
        t.extend(0x0018u16.to_be_bytes());
        t.extend(0x000bu16.to_be_bytes());
        t.extend(0x0003u16.to_be_bytes());
        t.extend(0x0010u16.to_be_bytes());
        for c in [point.x().unwrap(), point.y().unwrap()] {
            t.extend(32u16.to_be_bytes());
            t.extend(&c[..]);
        }
        let mut out = u16::try_from(t.len()).unwrap().to_be_bytes().to_vec();
        out.extend(t);
        out
    }

    /// A quote (`TPMS_ATTEST`) over `pcrs` (SHA-256 bank) with `qualifying` data.
    fn quote(pcrs: &BTreeMap<u32, [u8; 32]>, qualifying: &[u8]) -> Vec<u8> {
        let mut q = Vec::new();
        q.extend(0xff54_4347u32.to_be_bytes());
        q.extend(0x8018u16.to_be_bytes());
        q.extend(2u16.to_be_bytes()); // qualifiedSigner: a bare hash alg + nothing
        q.extend([0, 0x0b]);
        q.extend(u16::try_from(qualifying.len()).unwrap().to_be_bytes());
        q.extend(qualifying);
        q.extend([0u8; 17]); // clockInfo
        q.extend(0u64.to_be_bytes()); // firmwareVersion
        q.extend(1u32.to_be_bytes()); // one selection
        q.extend(0x000bu16.to_be_bytes());
        let mut bitmap = [0u8; 3];
        for i in pcrs.keys() {
            bitmap[usize::try_from(*i / 8).unwrap()] |= 1 << (i % 8);
        }
        q.push(3);
        q.extend(bitmap);
        let digest = pcr_digest_sha256(pcrs.values().map(|v| v.as_slice()));
        q.extend(u16::try_from(digest.len()).unwrap().to_be_bytes());
        q.extend(digest);
        q
    }

    /// A self-made qemu-vtpm document: software AK, self-signed quote, `pcrs`, `instance_info`.
    fn forged(
        key: &p256::ecdsa::SigningKey,
        pcrs: &BTreeMap<u32, [u8; 32]>,
        instance_info: Vec<u8>,
        user_data: &[u8],
        nonce: &[u8],
    ) -> AttestationDocument {
        let qd = tpm_qualifying_data(&instance_info, &extra_data(user_data, nonce));
        let q = quote(pcrs, &qd);
        let sig: p256::ecdsa::Signature = key.sign(&q);
        let (r, s) = sig.split_bytes();
        let mut tsig = Vec::new();
        tsig.extend(0x0018u16.to_be_bytes());
        tsig.extend(0x000bu16.to_be_bytes());
        for c in [&r[..], &s[..]] {
            tsig.extend(32u16.to_be_bytes());
            tsig.extend(c);
        }
        AttestationDocument::new(
            Variant::QemuVtpm,
            user_data.to_vec(),
            Evidence::Tpm(TpmEvidence {
                ak_public: software_ak(key),
                quote: q,
                signature: tsig,
                pcrs: pcrs
                    .iter()
                    .map(|(k, v)| (*k, ByteBuf::from(v.to_vec())))
                    .collect(),
                event_log: None,
                instance_info,
            }),
        )
    }

    fn expected() -> (BTreeMap<u32, [u8; 32]>, Measurements) {
        let pcrs: BTreeMap<u32, [u8; 32]> = [(4, [0x44; 32]), (9, [0x99; 32])].into();
        let m = Measurements(
            pcrs.iter()
                .map(|(i, v)| (*i, Measurement::enforced(v.to_vec()).unwrap()))
                .collect(),
        );
        (pcrs, m)
    }

    fn key() -> p256::ecdsa::SigningKey {
        p256::ecdsa::SigningKey::random(&mut rand::thread_rng())
    }

    #[test]
    fn a_software_ak_with_the_expected_pcrs_is_refused() {
        let (pcrs, m) = expected();
        let ca = AkCa::generate().unwrap();
        let k = key();
        let doc = forged(&k, &pcrs, Vec::new(), b"u", b"n");
        // The host-trusted validator cannot tell: the forgery is self-consistent.
        validator(m.clone()).validate(&doc, b"n").unwrap();
        let v = certified_validator(m, ca.cert_pem()).unwrap();
        let e = v.validate(&doc, b"n").unwrap_err();
        assert!(matches!(
            e.into_platform_error::<QemuVtpmError>().unwrap(),
            QemuVtpmError::NoCertificate
        ),);
    }

    #[test]
    fn a_certificate_from_another_ca_or_for_another_key_is_refused() {
        let (pcrs, m) = expected();
        let ca = AkCa::generate().unwrap();
        let v = certified_validator(m, ca.cert_pem()).unwrap();
        let k = key();
        // Another CA (e.g. the attacker's own) certifying the software key.
        let other = AkCa::generate().unwrap();
        let cert = other.certify(&software_ak(&k)).unwrap();
        let e = v
            .validate(&forged(&k, &pcrs, cert, b"u", b"n"), b"n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not issued by the cluster's AK CA"), "{e}");
        // The cluster's CA certified another key (a genuine node's AK).
        let genuine = ca.certify(&software_ak(&key())).unwrap();
        let e = v
            .validate(&forged(&k, &pcrs, genuine.clone(), b"u", b"n"), b"n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("certifies key"), "{e}");
        // Its own key certified by the cluster's CA passes (stands in for a provisioned TPM).
        let own = ca.certify(&software_ak(&k)).unwrap();
        v.validate(&forged(&k, &pcrs, own, b"u", b"n"), b"n")
            .unwrap();
        // Garbage instead of a certificate.
        let e = v
            .validate(
                &forged(&k, &pcrs, vec![0x30, 0x03, 1, 2, 3], b"u", b"n"),
                b"n",
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("not issued by the cluster's AK CA"), "{e}");
    }

    #[test]
    fn a_missing_or_broken_ca_fails_closed() {
        let (_, m) = expected();
        assert!(matches!(
            certified_validator(m.clone(), " "),
            Err(QemuVtpmError::NoCa)
        ));
        assert!(matches!(
            certified_validator(
                m,
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            ),
            Err(QemuVtpmError::Ca(_))
        ));
    }

    #[test]
    fn the_ca_round_trips_through_pem_and_refuses_a_foreign_key() {
        let ca = AkCa::generate().unwrap();
        let again = AkCa::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        let cert = again.certify(&software_ak(&key())).unwrap();
        let (_, m) = expected();
        let k = key();
        let v = certified_validator(m, ca.cert_pem()).unwrap();
        let own = again.certify(&software_ak(&k)).unwrap();
        let (pcrs, _) = expected();
        v.validate(&forged(&k, &pcrs, own, b"u", b"n"), b"n")
            .unwrap();
        assert!(!cert.is_empty());
        let other = AkCa::generate().unwrap();
        assert!(matches!(
            AkCa::from_pem(ca.cert_pem(), &other.key_pem()),
            Err(QemuVtpmError::Ca(_))
        ));
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }

    #[test]
    fn only_restricted_p256_keys_are_certified() {
        let ca = AkCa::generate().unwrap();
        let mut ak = software_ak(&key());
        ak[6..10].copy_from_slice(&0x0004_0072u32.to_be_bytes()); // not restricted
        assert!(matches!(
            ca.certify(&ak),
            Err(QemuVtpmError::UnsupportedKey(_))
        ));
    }
}
