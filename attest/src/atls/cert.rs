//! aTLS certificates and nonce encodings.

use rcgen::{CertificateParams, CustomExtension, KeyPair, PublicKeyData};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

use super::AtlsError;
use crate::validator::Issuer;
use crate::variant::Variant;

/// Length of aTLS nonces.
pub const NONCE_LEN: usize = 32;
const SNI_SUFFIX: &str = "atls";
const DN_PREFIX: &[u8] = b"atls-nonce:";

pub(crate) fn random_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut n).expect("the system RNG is available");
    n
}

/// `<hex of bytes 0..16>.<hex of bytes 16..32>.atls` — a DNS-valid SNI carrying the nonce.
pub fn nonce_to_sni(nonce: &[u8; NONCE_LEN]) -> String {
    let h = hex::encode(nonce);
    let (a, b) = h.split_at(NONCE_LEN);
    format!("{a}.{b}.{SNI_SUFFIX}")
}

/// Inverse of [`nonce_to_sni`]; `None` unless the name has exactly that form.
pub fn sni_to_nonce(sni: &str) -> Option<[u8; NONCE_LEN]> {
    let mut parts = sni.split('.');
    let (a, b, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || s != SNI_SUFFIX || a.len() != NONCE_LEN || b.len() != NONCE_LEN {
        return None;
    }
    let mut out = [0u8; NONCE_LEN];
    hex::decode_to_slice(format!("{a}{b}"), &mut out).ok()?;
    Some(out)
}

/// A DER `Name` with one CN `atls-nonce:<64 hex>`, sent as acceptable CA name.
pub fn nonce_to_dn(nonce: &[u8; NONCE_LEN]) -> Vec<u8> {
    let mut value = DN_PREFIX.to_vec();
    value.extend_from_slice(hex::encode(nonce).as_bytes());
    // AttributeTypeAndValue ::= SEQUENCE { id-at-commonName, UTF8String }
    let mut atv = vec![0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, value.len() as u8];
    atv.extend_from_slice(&value);
    let mut set = vec![0x30, atv.len() as u8];
    set.extend_from_slice(&atv);
    let mut rdn = vec![0x31, set.len() as u8];
    rdn.extend_from_slice(&set);
    let mut name = vec![0x30, rdn.len() as u8];
    name.extend_from_slice(&rdn);
    name
}

/// Finds the nonce in one acceptable-CA name produced by [`nonce_to_dn`].
pub fn dn_to_nonce(dn: &[u8]) -> Option<[u8; NONCE_LEN]> {
    let at = dn.windows(DN_PREFIX.len()).position(|w| w == DN_PREFIX)?;
    let hex_part = dn.get(at + DN_PREFIX.len()..at + DN_PREFIX.len() + 2 * NONCE_LEN)?;
    let mut out = [0u8; NONCE_LEN];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

/// A fresh key and self-signed certificate; with an issuer, the certificate carries the
/// attestation document for SHA-256(SPKI) and `nonce`.
pub(crate) fn make_cert(
    issuer: Option<&dyn Issuer>,
    nonce: Option<&[u8]>,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), AtlsError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| AtlsError::CertGen(e.to_string()))?;
    let mut params = CertificateParams::new(vec!["atls".to_owned()])
        .map_err(|e| AtlsError::CertGen(e.to_string()))?;
    if let Some(issuer) = issuer {
        let user_data = Sha256::digest(key.subject_public_key_info());
        let doc = issuer.issue(&user_data, nonce.unwrap_or_default())?;
        let mut ext = CustomExtension::from_oid_content(issuer.variant().oid(), doc.to_bytes());
        // Non-critical so that generic X.509 code (webpki's handshake-signature check) accepts
        // the certificate; aTLS verifiers require the extension anyway.
        ext.set_criticality(false);
        params.custom_extensions.push(ext);
    }
    let cert = params
        .self_signed(&key)
        .map_err(|e| AtlsError::CertGen(e.to_string()))?;
    Ok((
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    ))
}

/// The attestation extension of a peer certificate and SHA-256 of its SPKI.
pub(crate) struct Extracted {
    pub(crate) variant: Variant,
    pub(crate) document: Vec<u8>,
    pub(crate) spki_sha256: [u8; 32],
}

/// Pulls the attestation document out of a peer certificate.
pub(crate) fn extract(der: &[u8]) -> Result<Extracted, AtlsError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| AtlsError::BadCertificate(e.to_string()))?;
    let spki_sha256 = Sha256::digest(cert.tbs_certificate.subject_pki.raw).into();
    let mut unknown = None;
    for ext in cert.extensions() {
        let Some(arcs) = ext.oid.iter() else { continue };
        let arcs: Vec<u64> = arcs.collect();
        if let Some(variant) = Variant::from_oid(&arcs) {
            return Ok(Extracted {
                variant,
                document: ext.value.to_vec(),
                spki_sha256,
            });
        }
        if arcs.starts_with(&[1, 3, 9900]) {
            unknown = Some(ext.oid.to_id_string());
        }
    }
    Err(unknown.map_or(AtlsError::NoAttestationExtension, AtlsError::UnknownOid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_encodings_round_trip() {
        let n = random_nonce();
        let sni = nonce_to_sni(&n);
        assert!(rustls::pki_types::ServerName::try_from(sni.clone()).is_ok());
        assert_eq!(sni_to_nonce(&sni), Some(n));
        assert_eq!(dn_to_nonce(&nonce_to_dn(&n)), Some(n));
        assert_eq!(sni_to_nonce("example.com"), None);
        assert_eq!(sni_to_nonce(&format!("{sni}.x")), None);
        assert_eq!(dn_to_nonce(b"atls-nonce:zz"), None);
    }

    #[test]
    fn plain_cert_has_no_extension() {
        let (der, _) = make_cert(None, None).unwrap();
        assert!(matches!(
            extract(&der),
            Err(AtlsError::NoAttestationExtension)
        ));
        assert!(matches!(
            extract(b"junk"),
            Err(AtlsError::BadCertificate(_))
        ));
    }

    #[test]
    fn unknown_attestation_oid_is_named() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["atls".to_owned()]).unwrap();
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                &[1, 3, 9900, 9, 9],
                vec![1, 2, 3],
            ));
        let cert = params.self_signed(&key).unwrap();
        match extract(cert.der()) {
            Err(AtlsError::UnknownOid(oid)) => assert_eq!(oid, "1.3.9900.9.9"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted"),
        }
        // A known OID is found and the SPKI hash matches the key.
        let mut params = CertificateParams::new(vec!["atls".to_owned()]).unwrap();
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                Variant::QemuVtpm.oid(),
                vec![1, 2, 3],
            ));
        let cert = params.self_signed(&key).unwrap();
        let ex = extract(cert.der()).unwrap();
        assert_eq!(ex.variant, Variant::QemuVtpm);
        assert_eq!(ex.document, vec![1, 2, 3]);
        let want: [u8; 32] = Sha256::digest(key.subject_public_key_info()).into();
        assert_eq!(ex.spki_sha256, want);
    }
}
