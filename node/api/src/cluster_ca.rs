//! The cluster CA certificate, built from the CA's derived P-256 scalar (HKDF of the master
//! secret with [`crate::key_info::CLUSTER_CA`]). Control planes and the cluster owner (the
//! provider, after an import) both build it here, so its fields cannot drift apart: a
//! verifier's trust anchor is the subject and key, and validity and serial are fixed so every
//! copy carries the same to-be-signed bytes (only the randomised ECDSA signature differs).

use p256::pkcs8::EncodePrivateKey as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

/// Common name of the cluster CA.
pub const CA_COMMON_NAME: &str = "Constellation cluster CA";

/// Errors building the cluster CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterCaError {
    /// The derived scalar is zero or not below the group order (probability ~2^-32). Reported,
    /// not retried: a retry would have to be mirrored by every other implementation.
    #[error("the derived scalar is not a valid P-256 key")]
    InvalidScalar,
    /// Encoding the key or building the certificate failed.
    #[error("building the cluster CA certificate failed: {0}")]
    Build(String),
}

/// A P-256 key pair from a derived scalar (32 bytes, big-endian).
pub fn key_pair(scalar: &[u8]) -> Result<KeyPair, ClusterCaError> {
    let sk = p256::SecretKey::from_slice(scalar).map_err(|_| ClusterCaError::InvalidScalar)?;
    let der = sk
        .to_pkcs8_der()
        .map_err(|e| ClusterCaError::Build(e.to_string()))?;
    KeyPair::from_pkcs8_der_and_sign_algo(&der.as_bytes().into(), &PKCS_ECDSA_P256_SHA256)
        .map_err(|e| ClusterCaError::Build(e.to_string()))
}

/// The CA certificate's fields.
fn ca_params() -> Result<CertificateParams, ClusterCaError> {
    let mut p = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| ClusterCaError::Build(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&[1]));
    Ok(p)
}

/// The cluster CA from its derived scalar: the issuer that signs leaf certificates and the
/// self-signed CA certificate (PEM).
pub fn build(scalar: &[u8]) -> Result<(Issuer<'static, KeyPair>, String), ClusterCaError> {
    let key = key_pair(scalar)?;
    let params = ca_params()?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| ClusterCaError::Build(e.to_string()))?;
    Ok((Issuer::new(params, key), cert.pem()))
}
