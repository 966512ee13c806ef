//! rustls verifiers and the client-certificate resolver that carry out aTLS.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::cert::{NONCE_LEN, dn_to_nonce, extract, make_cert};
use super::{AtlsError, ServerVerification};
use crate::validator::{Issuer, Validators, VerifiedClaims};

/// What a handshake's verifier found; read by the connection after the handshake.
#[derive(Default)]
pub(crate) struct Outcome {
    pub(crate) claims: Option<VerifiedClaims>,
    pub(crate) error: Option<AtlsError>,
}

fn reject(outcome: &Mutex<Outcome>, e: AtlsError) -> rustls::Error {
    let msg = e.to_string();
    outcome.lock().unwrap_or_else(|p| p.into_inner()).error = Some(e);
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(std::io::Error::other(msg)),
    )))
}

/// Runs `f` — a peer's validation or our own issuance, which may block on hardware or on
/// network look-ups (AMD KDS, Intel PCS, Azure THIM, cloud APIs) — without stalling the other
/// tasks of the runtime. rustls calls verifiers synchronously inside the handshake's poll, so
/// on a multi-thread tokio runtime `block_in_place` hands this worker's queued tasks (and the
/// I/O and timer drivers) to another thread for the duration. A current-thread runtime has no
/// other thread to hand them to; there `f` runs inline, as it does outside any runtime.
pub(crate) fn off_async_worker<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn validate_peer(
    validators: &Validators,
    der: &[u8],
    nonce: &[u8; NONCE_LEN],
) -> Result<VerifiedClaims, AtlsError> {
    let ex = extract(der)?;
    let _ = ex.variant; // the document names its variant; the validator set picks by it
    Ok(validators.validate_bytes(&ex.document, nonce, &ex.spki_sha256)?)
}

/// Validates the peer's certificate and records the outcome (claims or the typed error) for
/// the caller of the handshake; shared by the server- and client-certificate verifiers.
fn validate_and_record(
    outcome: &Mutex<Outcome>,
    validators: &Validators,
    der: &[u8],
    nonce: &[u8; NONCE_LEN],
) -> Result<(), rustls::Error> {
    match off_async_worker(|| validate_peer(validators, der, nonce)) {
        Ok(c) => {
            outcome.lock().unwrap_or_else(|p| p.into_inner()).claims = Some(c);
            Ok(())
        }
        Err(e) => Err(reject(outcome, e)),
    }
}

fn tls13_sig(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// Client side: validates the server certificate's attestation for the client's nonce.
pub(crate) struct AtlsServerVerifier {
    pub(crate) verification: ServerVerification,
    pub(crate) nonce: [u8; NONCE_LEN],
    pub(crate) outcome: Arc<Mutex<Outcome>>,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for AtlsServerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtlsServerVerifier").finish_non_exhaustive()
    }
}

impl ServerCertVerifier for AtlsServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.verification {
            ServerVerification::Unauthenticated => Ok(ServerCertVerified::assertion()),
            ServerVerification::Attested(v) => {
                validate_and_record(&self.outcome, v, end_entity, &self.nonce)?;
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_sig(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Server side: demands a client certificate attesting for the server's nonce.
pub(crate) struct AtlsClientVerifier {
    pub(crate) validators: Validators,
    pub(crate) nonce: [u8; NONCE_LEN],
    pub(crate) hints: Vec<DistinguishedName>,
    pub(crate) outcome: Arc<Mutex<Outcome>>,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for AtlsClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtlsClientVerifier").finish_non_exhaustive()
    }
}

impl ClientCertVerifier for AtlsClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        validate_and_record(&self.outcome, &self.validators, end_entity, &self.nonce)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_sig(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Client side: answers the server's CertificateRequest with an attested certificate for the
/// nonce found in the acceptable-CA names. Runs inside the handshake, so the quote blocks the
/// connecting task for its duration (off the async worker, see [`off_async_worker`]).
pub(crate) struct AtlsClientCertResolver {
    pub(crate) issuer: Arc<dyn Issuer>,
    pub(crate) outcome: Arc<Mutex<Outcome>>,
}

impl std::fmt::Debug for AtlsClientCertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtlsClientCertResolver")
            .finish_non_exhaustive()
    }
}

impl rustls::client::ResolvesClientCert for AtlsClientCertResolver {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let result = off_async_worker(|| {
            let nonce = root_hint_subjects
                .iter()
                .find_map(|dn| dn_to_nonce(dn))
                .ok_or(AtlsError::MissingNonce("server's CertificateRequest"))?;
            let (cert, key) = make_cert(Some(self.issuer.as_ref()), Some(&nonce))?;
            let signer = super::provider()
                .key_provider
                .load_private_key(key)
                .map_err(|e| AtlsError::CertGen(e.to_string()))?;
            Ok::<_, AtlsError>(Arc::new(rustls::sign::CertifiedKey::new(
                vec![cert],
                signer,
            )))
        });
        match result {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(error = %e, "cannot present an aTLS client certificate");
                self.outcome.lock().unwrap_or_else(|p| p.into_inner()).error = Some(e);
                None
            }
        }
    }

    fn has_certs(&self) -> bool {
        true
    }
}
