//! The cluster CA, derived from the master secret, and the management API's mutual TLS.
//!
//! The CA's P-256 key is `HKDF(master, salt, "constellation-internal-clusterCA")` interpreted as
//! a scalar (an internal key: no data-key id reaches it, see [`crate::keys`]), so every holder
//! of the master secret (each control plane, and the cluster owner) holds the same CA without
//! storing it. It issues the owner's client certificate at Init and
//! each control plane's management server certificate; both sides of the management API then
//! authenticate each other by that CA.

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use zeroize::Zeroizing;

use crate::keys::{CLUSTER_CA_ID, DEFAULT_KEY_LEN, MasterSecret};

/// DNS name in every management server certificate; clients verify against it.
pub const MANAGEMENT_SERVER_NAME: &str = "constellation-management";
/// Common name of the owner certificate.
pub const OWNER_COMMON_NAME: &str = "constellation-cluster-owner";

/// Errors of the cluster CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// Deriving the CA key failed.
    #[error("deriving the cluster CA key failed: {0}")]
    Derive(String),
    /// Certificate generation failed.
    #[error("generating the {what} certificate failed: {source}")]
    Rcgen {
        /// Which certificate.
        what: &'static str,
        /// Cause.
        #[source]
        source: rcgen::Error,
    },
}

/// A PEM certificate and its PEM private key (zeroized on drop).
#[derive(Clone)]
pub struct Credential {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM PKCS#8 private key.
    pub key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The cluster CA.
pub struct ClusterCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCa(<key redacted>)")
    }
}

impl ClusterCa {
    /// Derives the CA from the master secret.
    pub fn derive(master: &MasterSecret) -> Result<Self, CaError> {
        let scalar = master
            .internal_key(CLUSTER_CA_ID, DEFAULT_KEY_LEN)
            .map_err(|e| CaError::Derive(e.to_string()))?;
        let (issuer, cert_pem) = constellation_node_api::cluster_ca::build(scalar.expose())
            .map_err(|e| CaError::Derive(e.to_string()))?;
        Ok(Self { issuer, cert_pem })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    fn leaf(
        &self,
        what: &'static str,
        cn: &str,
        sans: Vec<SanType>,
        eku: ExtendedKeyUsagePurpose,
    ) -> Result<Credential, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|source| CaError::Rcgen { what, source })?;
        let mut p = CertificateParams::new(Vec::<String>::new())
            .map_err(|source| CaError::Rcgen { what, source })?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.subject_alt_names = sans;
        p.extended_key_usages = vec![eku];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(3650);
        let cert = p
            .signed_by(&key, &self.issuer)
            .map_err(|source| CaError::Rcgen { what, source })?;
        Ok(Credential {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }

    /// Issues the owner's client certificate for the management API.
    pub fn issue_owner(&self) -> Result<Credential, CaError> {
        self.leaf(
            "owner",
            OWNER_COMMON_NAME,
            vec![],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    /// Issues a management server certificate (DNS name [`MANAGEMENT_SERVER_NAME`]).
    pub fn issue_server(&self) -> Result<Credential, CaError> {
        let san = SanType::DnsName(MANAGEMENT_SERVER_NAME.try_into().map_err(|source| {
            CaError::Rcgen {
                what: "server",
                source,
            }
        })?);
        self.leaf(
            "server",
            MANAGEMENT_SERVER_NAME,
            vec![san],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ca_is_stable_and_distinct() {
        let m = MasterSecret::new(&[1u8; 32], &[2u8; 32]).unwrap();
        let a = ClusterCa::derive(&m).unwrap();
        let b = ClusterCa::derive(&m).unwrap();
        let key_of = |pem: &str| {
            let der = rustls_pem(pem);
            let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
            c.public_key().raw.to_vec()
        };
        assert_eq!(key_of(a.cert_pem()), key_of(b.cert_pem()));
        let other = ClusterCa::derive(&MasterSecret::new(&[3u8; 32], &[2u8; 32]).unwrap()).unwrap();
        assert_ne!(key_of(a.cert_pem()), key_of(other.cert_pem()));
        let owner = a.issue_owner().unwrap();
        assert!(owner.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(!format!("{owner:?}").contains("PRIVATE"));
    }

    /// A control plane (prefix + id through `MasterSecret`) and the cluster owner (the shared
    /// info string, as the provider derives it after an import) build the same CA certificate:
    /// byte-identical to-be-signed parts (subject, key, validity, serial, extensions), and each
    /// signature verifies under that one key. Only the randomised ECDSA signature differs.
    #[test]
    fn control_plane_and_owner_build_byte_identical_ca_certificates() {
        use p256::ecdsa::signature::Verifier as _;
        let (master, salt) = ([3u8; 32], [4u8; 32]);
        let node_side = ClusterCa::derive(&MasterSecret::new(&master, &salt).unwrap()).unwrap();
        let mut scalar = [0u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::new(Some(&salt), &master)
            .expand(
                constellation_node_api::key_info::CLUSTER_CA.as_bytes(),
                &mut scalar,
            )
            .unwrap();
        let (_, owner_side) = constellation_node_api::cluster_ca::build(&scalar).unwrap();
        let (a, b) = (rustls_pem(node_side.cert_pem()), rustls_pem(&owner_side));
        let (_, ca) = x509_parser::parse_x509_certificate(&a).unwrap();
        let (_, cb) = x509_parser::parse_x509_certificate(&b).unwrap();
        assert_eq!(ca.tbs_certificate.as_ref(), cb.tbs_certificate.as_ref());
        let key =
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&ca.public_key().subject_public_key.data)
                .unwrap();
        for c in [&ca, &cb] {
            let sig = p256::ecdsa::Signature::from_der(&c.signature_value.data).unwrap();
            key.verify(c.tbs_certificate.as_ref(), &sig).unwrap();
        }
    }

    fn rustls_pem(pem: &str) -> Vec<u8> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }
}
