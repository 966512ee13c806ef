//! Clients of the node API the provider uses: Init over aTLS (the node attests, the provider
//! validates it with the cluster's attestation config), the management API over mutual TLS
//! with the owner credential, and the verification service for a fresh nonce.

use std::net::SocketAddr;
use std::time::Duration;

use constellation_attest::atls::{AtlsClient, ServerVerification, connect_channel};
use constellation_attest::{Validators, VerifiedClaims};
use constellation_node_api::limits::MAX_MESSAGE_BYTES;
use constellation_node_api::v1::init_response::Kind;
use constellation_node_api::v1::init_service_client::InitServiceClient;
use constellation_node_api::v1::management_service_client::ManagementServiceClient;
use constellation_node_api::v1::recovery_service_client::RecoveryServiceClient;
use constellation_node_api::v1::verification_service_client::VerificationServiceClient;
use constellation_node_api::v1::{
    GetAttestationRequest, GetStatusRequest, GetStatusResponse, InitRequest, InitSuccess,
    RecoverRequest, RemoveNodeRequest,
};
use tonic::transport::Channel;

/// DNS name in the management server's certificate (issued by the cluster CA).
pub const MANAGEMENT_SERVER_NAME: &str = "constellation-management";

/// Node API client errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeClientError {
    /// The aTLS handshake or connection failed (includes attestation failures).
    #[error("connecting to {endpoint} failed: {detail}")]
    Connect {
        /// Endpoint.
        endpoint: String,
        /// Cause.
        detail: String,
    },
    /// The node answered with an error status.
    #[error("{call} on {endpoint} failed: {status}")]
    Rpc {
        /// Which call.
        call: &'static str,
        /// Endpoint.
        endpoint: String,
        /// The status (code and message).
        status: String,
    },
    /// Init ran and failed on the node.
    #[error("the node reported that Init failed: {error}\nRecent node log:\n{log}")]
    InitFailed {
        /// The error.
        error: String,
        /// The node's recent log lines.
        log: String,
    },
    /// The node's answer was malformed.
    #[error("{endpoint} answered unexpectedly: {detail}")]
    Protocol {
        /// Endpoint.
        endpoint: String,
        /// What was wrong.
        detail: String,
    },
    /// The attestation document did not validate.
    #[error("attestation of {endpoint} failed: {detail}")]
    Attestation {
        /// Endpoint.
        endpoint: String,
        /// Every reason the validator gave.
        detail: String,
    },
}

fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// An attested channel to `addr` (the node must validate against `validators`).
pub async fn attested_channel(
    addr: SocketAddr,
    validators: Validators,
    handshake_timeout: Duration,
) -> Result<Channel, NodeClientError> {
    let endpoint = addr.to_string();
    let client = AtlsClient::new(None, ServerVerification::Attested(validators))
        .map_err(|e| NodeClientError::Connect {
            endpoint: endpoint.clone(),
            detail: e.to_string(),
        })?
        .with_timeout(handshake_timeout);
    connect_channel(&format!("http://{addr}"), client)
        .await
        .map_err(|e| NodeClientError::Connect {
            endpoint,
            detail: e.to_string(),
        })
}

/// Runs Init on an attested channel; `progress` receives the node's log lines as they come.
pub async fn init(
    channel: Channel,
    addr: SocketAddr,
    request: InitRequest,
    mut progress: impl FnMut(&str),
) -> Result<InitSuccess, NodeClientError> {
    let endpoint = addr.to_string();
    let mut client = InitServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mut stream = client
        .init(request)
        .await
        .map_err(|s| NodeClientError::Rpc {
            call: "Init",
            endpoint: endpoint.clone(),
            status: status_text(&s),
        })?
        .into_inner();
    loop {
        let msg = stream.message().await.map_err(|s| NodeClientError::Rpc {
            call: "Init",
            endpoint: endpoint.clone(),
            status: status_text(&s),
        })?;
        match msg.and_then(|m| m.kind) {
            Some(Kind::LogLine(line)) => progress(&line),
            Some(Kind::Success(ok)) => return Ok(ok),
            Some(Kind::Failure(f)) => {
                return Err(NodeClientError::InitFailed {
                    error: f.error,
                    log: f.log_lines.join("\n"),
                });
            }
            None => {
                return Err(NodeClientError::Protocol {
                    endpoint,
                    detail: "the Init stream ended without a result".into(),
                });
            }
        }
    }
}

/// The owner's credential for the management API.
#[derive(Clone)]
pub struct OwnerCredential {
    /// Cluster CA certificate (PEM).
    pub ca_pem: String,
    /// Owner certificate (PEM).
    pub cert_pem: String,
    /// Owner private key (PEM PKCS#8). Secret.
    pub key_pem: zeroize::Zeroizing<String>,
}

impl std::fmt::Debug for OwnerCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnerCredential { .. }")
    }
}

/// A management client for the control plane at `addr`.
pub async fn management(
    addr: SocketAddr,
    owner: &OwnerCredential,
) -> Result<ManagementServiceClient<Channel>, NodeClientError> {
    let endpoint = addr.to_string();
    let connect = |detail: String| NodeClientError::Connect {
        endpoint: endpoint.clone(),
        detail,
    };
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&owner.ca_pem))
        .identity(tonic::transport::Identity::from_pem(
            &owner.cert_pem,
            owner.key_pem.as_bytes(),
        ))
        .domain_name(MANAGEMENT_SERVER_NAME);
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| connect(e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .http2_keep_alive_interval(constellation_attest::atls::limits::KEEPALIVE_INTERVAL)
        .keep_alive_timeout(constellation_attest::atls::limits::KEEPALIVE_TIMEOUT)
        .tls_config(tls)
        .map_err(|e| connect(e.to_string()))?
        .connect()
        .await
        .map_err(|e| connect(error_chain(&e)))?;
    Ok(ManagementServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// The cluster status from one control plane.
pub async fn status(
    addr: SocketAddr,
    owner: &OwnerCredential,
) -> Result<GetStatusResponse, NodeClientError> {
    let mut c = management(addr, owner).await?;
    c.get_status(GetStatusRequest {})
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| NodeClientError::Rpc {
            call: "GetStatus",
            endpoint: addr.to_string(),
            status: status_text(&s),
        })
}

/// Removes a member so it gets no more tickets.
pub async fn remove_node(
    addr: SocketAddr,
    owner: &OwnerCredential,
    name: &str,
) -> Result<(), NodeClientError> {
    let mut c = management(addr, owner).await?;
    match c.remove_node(RemoveNodeRequest { name: name.into() }).await {
        Ok(_) => Ok(()),
        // Never a member (e.g. refused at join): nothing to remove.
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(s) => Err(NodeClientError::Rpc {
            call: "RemoveNode",
            endpoint: addr.to_string(),
            status: status_text(&s),
        }),
    }
}

/// How a recovery attempt ended.
#[derive(Debug)]
pub enum Recovered {
    /// The node unlocked its disk with the master secret; the cluster ID it is locked to.
    Now(Vec<u8>),
    /// The node was no longer waiting (it rejoined through another control plane meanwhile).
    Already,
}

/// Sends the master secret to a control plane waiting for recovery, on an aTLS channel whose
/// handshake validated the node against `validators` first (the secret never reaches a node
/// that does not attest).
pub async fn recover(
    addr: SocketAddr,
    validators: Validators,
    master_secret: &[u8],
    master_salt: &[u8],
) -> Result<Recovered, NodeClientError> {
    let channel = attested_channel(addr, validators, Duration::from_secs(60)).await?;
    // As with Init, the request's copy of the secret lives only until tonic encoded it.
    let request = RecoverRequest {
        master_secret: master_secret.to_vec(),
        master_salt: master_salt.to_vec(),
    };
    // The channel's per-call deadline and keepalive (aTLS endpoint defaults) bound a node
    // that froze after the handshake.
    let result = RecoveryServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .recover(request)
        .await;
    match result {
        Ok(r) => Ok(Recovered::Now(r.into_inner().cluster_id)),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => Ok(Recovered::Already),
        Err(s) => Err(NodeClientError::Rpc {
            call: "Recover",
            endpoint: addr.to_string(),
            status: status_text(&s),
        }),
    }
}

/// Fetches an attestation document for a fresh nonce from the verification service at
/// `addr` (gRPC) and validates it; the document must name the verification service in its
/// user data.
pub async fn verify(
    addr: SocketAddr,
    validators: &Validators,
) -> Result<VerifiedClaims, NodeClientError> {
    use rand::RngCore as _;
    let endpoint = addr.to_string();
    let mut nonce = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut nonce);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| NodeClientError::Connect {
            endpoint: endpoint.clone(),
            detail: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .http2_keep_alive_interval(constellation_attest::atls::limits::KEEPALIVE_INTERVAL)
        .keep_alive_timeout(constellation_attest::atls::limits::KEEPALIVE_TIMEOUT)
        .connect()
        .await
        .map_err(|e| NodeClientError::Connect {
            endpoint: endpoint.clone(),
            detail: error_chain(&e),
        })?;
    let mut client =
        VerificationServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    // The service is public and rate limited for all callers together: a busy answer means
    // "shortly", so retry it for a bounded time with jitter.
    let give_up = std::time::Instant::now() + VERIFY_BUSY_RETRY;
    let doc = loop {
        match client
            .get_attestation(GetAttestationRequest {
                nonce: nonce.to_vec(),
            })
            .await
        {
            Ok(r) => break r.into_inner().attestation,
            Err(s)
                if s.code() == tonic::Code::ResourceExhausted
                    && std::time::Instant::now() < give_up =>
            {
                let ms = 100 + u64::from(rand::random::<u16>() % 400);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Err(s) => {
                return Err(NodeClientError::Rpc {
                    call: "GetAttestation",
                    endpoint: endpoint.clone(),
                    status: status_text(&s),
                });
            }
        }
    };
    validators
        .validate_bytes(&doc, &nonce, constellation_node_api::VERIFY_USER_DATA)
        .map_err(|e| NodeClientError::Attestation {
            endpoint,
            detail: e.to_string(),
        })
}

/// How long [`verify`] retries a verification service that answers busy.
const VERIFY_BUSY_RETRY: Duration = Duration::from_secs(30);

/// An error with its sources, for messages (tonic's transport errors hide the cause).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}
