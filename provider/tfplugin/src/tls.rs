//! go-plugin AutoMTLS: a fresh server certificate per run and exact pinning of the client
//! certificate Terraform passes in `PLUGIN_CLIENT_CERT`.
//!
//! Terraform's client certificate is a self-signed ECDSA P-521 certificate with
//! `CA:TRUE`. WebPKI-style client verification rejects it (a CA used as end entity), and
//! optional client authentication would let anyone on the socket in. So the server pins
//! the exact certificate bytes with [`PinnedClientCertVerifier`], and still verifies the
//! handshake signature, which proves the peer holds the matching private key.
//!
//! Crypto is ring for everything the server does itself (key generation, signing, key
//! exchange, randomness) and aws-lc-rs only for verifying the client's signature: ring
//! cannot verify P-521, and aws-lc's random generator spends ~130 ms of CPU on its first
//! use, which every plugin start (several per `terraform plan`) would pay.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// Errors setting up TLS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// PLUGIN_CLIENT_CERT holds no PEM certificate.
    #[error("PLUGIN_CLIENT_CERT does not contain a PEM certificate: {0}")]
    ClientCertPem(String),
    /// Generating the per-run server certificate failed.
    #[error("cannot generate the plugin's TLS server certificate: {0}")]
    ServerCert(String),
    /// rustls rejected the configuration.
    #[error("cannot build the TLS server configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider used for the plugin's TLS: ring, with aws-lc-rs's signature
/// verification algorithms (which include ECDSA P-521).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        signature_verification_algorithms: rustls::crypto::aws_lc_rs::default_provider()
            .signature_verification_algorithms,
        ..rustls::crypto::ring::default_provider()
    })
}

/// A P-256 key held by ring, signing certificates for rcgen.
struct RingP256 {
    key: ring::signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
}

impl rcgen::PublicKeyData for RingP256 {
    fn der_bytes(&self) -> &[u8] {
        use ring::signature::KeyPair as _;
        self.key.public_key().as_ref()
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for RingP256 {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key
            .sign(&self.rng, msg)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|_| rcgen::Error::RingUnspecified)
    }
}

/// The per-run server identity: a self-signed certificate for `localhost` and its key.
pub struct ServerIdentity {
    /// DER certificate, announced in the handshake line.
    pub cert_der: CertificateDer<'static>,
    key_der: PrivatePkcs8KeyDer<'static>,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

impl ServerIdentity {
    /// Generates a fresh ECDSA P-256 certificate for `localhost`.
    ///
    /// go-plugin puts it into the client's root pool and checks the name `localhost`, so it
    /// is self-signed, CA:TRUE (as go-plugin's own certificates), and valid for server and
    /// client auth. The serial is random and positive (Go rejects negative serials).
    pub fn generate() -> Result<Self, TlsError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
            KeyUsagePurpose, SerialNumber,
        };
        use ring::rand::SecureRandom as _;
        use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
        let err = |e: rcgen::Error| TlsError::ServerCert(e.to_string());
        let ring_err = |what: &str| TlsError::ServerCert(format!("ring: {what}"));

        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| ring_err("key generation failed"))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|e| ring_err(&e.to_string()))?;
        let key = RingP256 { key, rng };

        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).map_err(err)?;
        params
            .distinguished_name
            .push(DnType::OrganizationName, "HashiCorp");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
            KeyUsagePurpose::KeyCertSign,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        // Some slack for clock differences; a run rarely lasts a day, a long apply might.
        params.not_before = now - time::Duration::minutes(30);
        params.not_after = now + time::Duration::days(30);
        let mut serial = [0u8; 16];
        key.rng
            .fill(&mut serial)
            .map_err(|_| ring_err("no secure randomness"))?;
        serial[0] &= 0x7f;
        serial[0] |= 0x01;
        params.serial_number = Some(SerialNumber::from_slice(&serial));

        let cert = params.self_signed(&key).map_err(err)?;
        Ok(Self {
            cert_der: cert.der().clone(),
            key_der: PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec()),
        })
    }

    /// A rustls server configuration that presents this identity, requires a client
    /// certificate that is exactly `client_cert`, and offers ALPN `h2` (grpc-go refuses
    /// TLS connections without it).
    pub fn server_config(
        &self,
        client_cert: CertificateDer<'static>,
    ) -> Result<rustls::ServerConfig, TlsError> {
        let provider = crypto_provider();
        let verifier = Arc::new(PinnedClientCertVerifier::new(
            client_cert,
            provider.signature_verification_algorithms,
        ));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![self.cert_der.clone()],
                PrivateKeyDer::Pkcs8(self.key_der.clone_key()),
            )?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// Parses the first certificate of a PEM document (PLUGIN_CLIENT_CERT).
pub fn parse_client_cert_pem(pem: &str) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| TlsError::ClientCertPem(e.to_string()))
}

/// Accepts exactly one client certificate (byte for byte) and verifies the TLS handshake
/// signature against its public key.
#[derive(Debug)]
pub struct PinnedClientCertVerifier {
    pinned: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedClientCertVerifier {
    /// A verifier pinning `cert`, checking signatures with `algorithms`.
    pub fn new(cert: CertificateDer<'static>, algorithms: WebPkiSupportedAlgorithms) -> Self {
        Self {
            pinned: cert,
            algorithms,
        }
    }
}

impl ClientCertVerifier for PinnedClientCertVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: the client has exactly one certificate to offer.
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Only the pinned certificate itself, no chain: anything else is not Terraform.
        if intermediates.is_empty() && end_entity.as_ref() == self.pinned.as_ref() {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, PKCS_ECDSA_P521_SHA512};

    /// A client certificate shaped like Terraform's: ECDSA P-521, self-signed, CA:TRUE.
    pub(crate) fn terraform_like_client_cert() -> (CertificateDer<'static>, KeyPair) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P521_SHA512).unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        (cert.der().clone(), key)
    }

    fn now() -> UnixTime {
        UnixTime::now()
    }

    #[test]
    fn pinned_verifier_accepts_only_the_exact_cert() {
        let (pinned, _) = terraform_like_client_cert();
        let (other, _) = terraform_like_client_cert();
        let verifier = PinnedClientCertVerifier::new(
            pinned.clone(),
            crypto_provider().signature_verification_algorithms,
        );
        assert!(verifier.client_auth_mandatory());
        assert!(verifier.verify_client_cert(&pinned, &[], now()).is_ok());
        assert!(verifier.verify_client_cert(&other, &[], now()).is_err());
        // The pinned cert presented with an extra chain element is not what Terraform sends.
        assert!(
            verifier
                .verify_client_cert(&pinned, std::slice::from_ref(&other), now())
                .is_err()
        );
        // A single flipped byte is a different certificate.
        let mut tampered = pinned.as_ref().to_vec();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(
            verifier
                .verify_client_cert(&CertificateDer::from(tampered), &[], now())
                .is_err()
        );
        assert!(
            verifier
                .supported_verify_schemes()
                .contains(&SignatureScheme::ECDSA_NISTP521_SHA512)
        );
    }

    #[test]
    fn client_cert_pem_parsing() {
        let (_, key) = terraform_like_client_cert();
        let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let parsed = parse_client_cert_pem(&cert.pem()).unwrap();
        assert_eq!(parsed.as_ref(), cert.der().as_ref());
        assert!(parse_client_cert_pem("not a cert").is_err());
    }

    #[test]
    fn server_identity_builds_a_config() {
        let identity = ServerIdentity::generate().unwrap();
        let (client, _) = terraform_like_client_cert();
        let config = identity.server_config(client).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
        assert!(!format!("{identity:?}").contains("key_der"));
    }
}
