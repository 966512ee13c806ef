//! Attested TLS (aTLS) on rustls 0.23 with the aws-lc-rs provider, and tonic helpers.
//!
//! Each attesting side presents a fresh self-signed certificate (fresh ECDSA P-256 key) whose
//! non-critical extension, under the variant's OID, holds an attestation document whose user
//! data is SHA-256(SubjectPublicKeyInfo) and whose nonce is the peer's fresh nonce:
//!
//! - client → server nonce: the SNI, 32 random bytes as hex split into two labels,
//!   `<32 hex>.<32 hex>.atls` (rustls sends any DNS-valid name; see [`nonce_to_sni`]);
//! - server → client nonce: an acceptable-CA name in the CertificateRequest, a DER Name whose
//!   CN is `atls-nonce:<64 hex>` (see [`nonce_to_dn`]).
//!
//! Only TLS 1.3; no session resumption or tickets (a resumed session would skip attestation).
//! The handshake signature is always checked against the certificate key, so the document's
//! binding to the key also binds it to this connection. There is no fallback to plain TLS: a
//! side either validates its peer's attestation or is explicitly configured not to, and at
//! least one direction must be attested.

mod cert;
pub mod limits;
mod tonic_io;
mod verify;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{LazyConfigAcceptor, TlsConnector};

pub use cert::{NONCE_LEN, dn_to_nonce, nonce_to_dn, nonce_to_sni, sni_to_nonce};
pub use tonic_io::{
    AtlsConnectInfo, AtlsServerStream, channel, connect_channel, serve_router,
    serve_router_with_caps, serve_routes,
};

use crate::validator::{IssueError, Issuer, ValidationError, Validators, VerifiedClaims};

/// How the text of an [`AtlsError::Rejected`] begins: a peer presented attestation evidence
/// and it failed validation. Only such failures are refusals worth reporting; timeouts, resets
/// and TLS-level failures say nothing about the peer's image.
pub const REJECTED_PREFIX: &str = "peer attestation rejected: ";

/// Why an aTLS handshake or configuration failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AtlsError {
    /// Neither side would be attested: that would be plain, unauthenticated TLS.
    #[error(
        "aTLS configuration attests neither side; refusing to build what would be unauthenticated TLS"
    )]
    NothingAttested,
    /// The peer's certificate has no attestation extension.
    #[error(
        "peer certificate carries no attestation extension (expected one of the 1.3.9900.x.y variant OIDs)"
    )]
    NoAttestationExtension,
    /// The peer's certificate has an attestation-branch OID this build does not know.
    #[error("peer certificate carries an attestation extension with unknown OID {0}")]
    UnknownOid(String),
    /// The peer's certificate cannot be parsed.
    #[error("peer certificate is not valid X.509: {0}")]
    BadCertificate(String),
    /// The peer's attestation did not validate.
    #[error("{REJECTED_PREFIX}{0}")]
    Rejected(#[from] ValidationError),
    /// Our own attestation could not be produced.
    #[error("issuing our attestation failed: {0}")]
    Issue(#[from] IssueError),
    /// The nonce could not be found in the SNI / CertificateRequest.
    #[error("no aTLS nonce in the {0}")]
    MissingNonce(&'static str),
    /// Generating the certificate failed.
    #[error("generating the aTLS certificate failed: {0}")]
    CertGen(String),
    /// The handshake did not finish in time.
    #[error("aTLS handshake timed out after {0:?}")]
    Timeout(Duration),
    /// The client sent no ClientHello in time (an idle connection).
    #[error("no TLS ClientHello within {0:?}; connection closed")]
    NoClientHello(Duration),
    /// TLS or I/O failure.
    #[error("TLS handshake failed: {0}")]
    Tls(#[from] std::io::Error),
    /// Invalid endpoint URI.
    #[error("invalid endpoint {uri:?}: {message}")]
    BadEndpoint {
        /// The URI.
        uri: String,
        /// What is wrong.
        message: String,
    },
}

impl AtlsError {
    /// Whether the peer's attestation evidence was checked and failed: a refusal. A timeout, a
    /// reset connection or a TLS failure is not one (a slow quote or a client retry causes those).
    pub fn is_attestation_rejection(&self) -> bool {
        matches!(self, AtlsError::Rejected(_))
    }
}

/// The crate's single crypto provider: aws-lc-rs (the provider binary needs it for Terraform's
/// P-521 certificates; one provider avoids ambiguity).
pub fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// How a client treats the server.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ServerVerification {
    /// The server must present an attestation that one of these validators accepts.
    Attested(Validators),
    /// The server is not authenticated. Only allowed when the client itself attests (e.g. a
    /// joining node, whose secrets are protected by the *server's* validation of it).
    Unauthenticated,
}

/// Default handshake timeout: generous, a TPM quote on a loaded machine can take seconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Client side of aTLS.
#[derive(Clone)]
pub struct AtlsClient {
    issuer: Option<Arc<dyn Issuer>>,
    server: ServerVerification,
    timeout: Duration,
}

impl std::fmt::Debug for AtlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtlsClient")
            .field("attests", &self.issuer.as_ref().map(|i| i.variant()))
            .field("server", &self.server)
            .finish()
    }
}

impl AtlsClient {
    /// A client that attests with `issuer` (if any) and treats the server per `server`.
    pub fn new(
        issuer: Option<Arc<dyn Issuer>>,
        server: ServerVerification,
    ) -> Result<Self, AtlsError> {
        if issuer.is_none() && matches!(server, ServerVerification::Unauthenticated) {
            return Err(AtlsError::NothingAttested);
        }
        Ok(Self {
            issuer,
            server,
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        })
    }

    /// Changes the handshake timeout.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Runs the aTLS handshake over `tcp`. Returns the stream and the server's verified claims
    /// (`None` when the server is unauthenticated by configuration).
    pub async fn connect(
        &self,
        tcp: TcpStream,
    ) -> Result<
        (
            tokio_rustls::client::TlsStream<TcpStream>,
            Option<VerifiedClaims>,
        ),
        AtlsError,
    > {
        let nonce = cert::random_nonce();
        let outcome = Arc::new(Mutex::new(verify::Outcome::default()));
        let verifier = Arc::new(verify::AtlsServerVerifier {
            verification: self.server.clone(),
            nonce,
            outcome: outcome.clone(),
            provider: provider(),
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| AtlsError::CertGen(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.issuer {
            Some(issuer) => {
                builder.with_client_cert_resolver(Arc::new(verify::AtlsClientCertResolver {
                    issuer: issuer.clone(),
                    outcome: outcome.clone(),
                }))
            }
            None => builder.with_no_client_auth(),
        };
        config.resumption = rustls::client::Resumption::disabled();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let name = ServerName::try_from(nonce_to_sni(&nonce))
            .map_err(|e| AtlsError::CertGen(format!("SNI nonce encoding: {e}")))?;
        let connector = TlsConnector::from(Arc::new(config));
        let res = tokio::time::timeout(self.timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| AtlsError::Timeout(self.timeout))?;
        let mut out = outcome.lock().unwrap_or_else(|p| p.into_inner());
        match res {
            Ok(stream) => Ok((stream, out.claims.take())),
            Err(e) => Err(out.error.take().unwrap_or(AtlsError::Tls(e))),
        }
    }
}

/// Server side of aTLS.
#[derive(Clone)]
pub struct AtlsServer {
    issuer: Option<Arc<dyn Issuer>>,
    clients: Option<Validators>,
    timeout: Duration,
}

impl std::fmt::Debug for AtlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtlsServer")
            .field("attests", &self.issuer.as_ref().map(|i| i.variant()))
            .field("clients", &self.clients)
            .finish()
    }
}

impl AtlsServer {
    /// A server that attests with `issuer` (if any) and, with `clients`, requires every client
    /// to present an attestation one of those validators accepts.
    pub fn new(
        issuer: Option<Arc<dyn Issuer>>,
        clients: Option<Validators>,
    ) -> Result<Self, AtlsError> {
        if issuer.is_none() && clients.is_none() {
            return Err(AtlsError::NothingAttested);
        }
        Ok(Self {
            issuer,
            clients,
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        })
    }

    /// Changes the handshake timeout.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Runs the aTLS handshake on an accepted connection. Returns the stream and the client's
    /// verified claims (`None` when clients are not validated).
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> Result<
        (
            tokio_rustls::server::TlsStream<TcpStream>,
            Option<VerifiedClaims>,
        ),
        AtlsError,
    > {
        self.accept_limited(tcp, None).await
    }

    /// [`AtlsServer::accept`], issuing only while holding a permit of `issuing`. The
    /// ClientHello must arrive within [`limits::CLIENT_HELLO_TIMEOUT`]: until then the
    /// connection has cost nothing but its socket, so idle connections cannot hold the
    /// permits that real handshakes need.
    pub async fn accept_limited(
        &self,
        tcp: TcpStream,
        issuing: Option<&tokio::sync::Semaphore>,
    ) -> Result<
        (
            tokio_rustls::server::TlsStream<TcpStream>,
            Option<VerifiedClaims>,
        ),
        AtlsError,
    > {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let hello_wait = limits::CLIENT_HELLO_TIMEOUT.min(self.timeout);
        let start = tokio::time::timeout(
            hello_wait,
            LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp),
        )
        .await
        .map_err(|_| AtlsError::NoClientHello(hello_wait))??;
        tokio::time::timeout_at(deadline, self.accept_inner(start, issuing))
            .await
            .map_err(|_| AtlsError::Timeout(self.timeout))?
    }

    async fn accept_inner(
        &self,
        start: tokio_rustls::StartHandshake<TcpStream>,
        issuing: Option<&tokio::sync::Semaphore>,
    ) -> Result<
        (
            tokio_rustls::server::TlsStream<TcpStream>,
            Option<VerifiedClaims>,
        ),
        AtlsError,
    > {
        let sni = start.client_hello().server_name().map(str::to_owned);
        // Every quote costs TPM time: bound how many unauthenticated peers make us issue at
        // once. The permit is held only while issuing.
        let permit = match (&self.issuer, issuing) {
            (Some(_), Some(s)) => Some(
                s.acquire()
                    .await
                    .map_err(|_| AtlsError::CertGen("the server is shutting down".into()))?,
            ),
            _ => None,
        };
        // Issue off the async workers: a TPM quote blocks for milliseconds to seconds.
        let issuer = self.issuer.clone();
        let (cert, key) = tokio::task::spawn_blocking(move || {
            let nonce = match &issuer {
                Some(_) => Some(
                    sni.as_deref()
                        .and_then(sni_to_nonce)
                        .ok_or(AtlsError::MissingNonce("client's SNI"))?,
                ),
                None => None,
            };
            cert::make_cert(issuer.as_deref(), nonce.as_ref().map(|n| n.as_slice()))
        })
        .await
        .map_err(|e| AtlsError::CertGen(format!("issuer task failed: {e}")))??;
        drop(permit);

        let outcome = Arc::new(Mutex::new(verify::Outcome::default()));
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| AtlsError::CertGen(e.to_string()))?;
        let builder = match &self.clients {
            Some(v) => {
                let nonce = cert::random_nonce();
                builder.with_client_cert_verifier(Arc::new(verify::AtlsClientVerifier {
                    validators: v.clone(),
                    nonce,
                    hints: vec![rustls::DistinguishedName::from(nonce_to_dn(&nonce))],
                    outcome: outcome.clone(),
                    provider: provider(),
                }))
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(vec![cert], key)
            .map_err(|e| AtlsError::CertGen(e.to_string()))?;
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let res = start.into_stream(Arc::new(config)).await;
        let mut out = outcome.lock().unwrap_or_else(|p| p.into_inner());
        match res {
            Ok(stream) => Ok((stream, out.claims.take())),
            Err(e) => Err(out.error.take().unwrap_or(AtlsError::Tls(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rejected_attestation_is_a_refusal() {
        let rejected = AtlsError::Rejected(ValidationError::VariantMismatch {
            expected: crate::variant::Variant::QemuVtpm,
            got: crate::variant::Variant::QemuTdx,
        });
        assert!(rejected.is_attestation_rejection());
        assert!(rejected.to_string().starts_with(REJECTED_PREFIX));
        for transient in [
            AtlsError::Timeout(Duration::from_secs(30)),
            AtlsError::Tls(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            AtlsError::MissingNonce("client's SNI"),
        ] {
            assert!(!transient.is_attestation_rejection(), "{transient}");
            assert!(!transient.to_string().starts_with(REJECTED_PREFIX));
        }
    }
}
