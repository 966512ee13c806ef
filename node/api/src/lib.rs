//! The contracts between the node agent and those that start and reach it (the provider, the
//! image's VM harness): the gRPC API, the instance metadata format ([`metadata`]) and the
//! service ports ([`ports`]).
//!
//! The `.proto` files under `proto/` are the source of truth of the API; see
//! `docs/node-api.md`. The gRPC code is behind the `grpc` feature (default), so a producer of
//! metadata alone (the image crate) compiles no protobuf. This crate carries no TPM or disk
//! dependencies so that the provider can use it on a user's laptop.

pub mod metadata;

/// Version 1 of the node API (`constellation.node.v1`).
#[cfg(feature = "grpc")]
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("constellation.node.v1");
}

/// Default TCP ports of the node services.
pub mod ports {
    /// Init server (aTLS, the node attests).
    pub const INIT: u16 = 9000;
    /// Join and key services (aTLS, the client attests).
    pub const JOIN: u16 = 30090;
    /// Verification service, gRPC.
    pub const VERIFY_GRPC: u16 = 30081;
    /// Verification service, HTTP (`GET /?nonce=<base64url>`).
    pub const VERIFY_HTTP: u16 = 30080;
    /// Recovery server (aTLS, the node attests).
    pub const RECOVERY: u16 = 9999;
    /// Management API (mutual TLS with the owner certificate).
    pub const MANAGEMENT: u16 = 9100;
    /// Prometheus metrics (private network only).
    pub const METRICS: u16 = 9101;
}

/// HKDF info strings of the keys the cluster derives from its master secret for itself. Both
/// the control planes and the cluster owner (the provider, after an import) derive them, so
/// they live here. None starts with upstream's data-key prefix `key-`, so no data-key id a
/// caller chooses can reach them.
pub mod key_info {
    /// Prefix of every internal key's info.
    pub const INTERNAL_PREFIX: &str = "constellation-internal-";
    /// The cluster CA's P-256 scalar.
    pub const CLUSTER_CA: &str = "constellation-internal-clusterCA";
    /// The cluster owner's P-256 scalar (the management API's client key).
    pub const CLUSTER_OWNER: &str = "constellation-internal-clusterOwner";
}

#[cfg(feature = "cluster-ca")]
pub mod cluster_ca;

/// Limits every server and client of the node API applies.
pub mod limits {
    /// Largest gRPC message accepted or sent, in bytes (attestation documents with
    /// certificate chains fit comfortably).
    pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
}

/// User data a verification-service document carries, naming the service.
pub const VERIFY_USER_DATA: &[u8] = b"constellation-verify";
