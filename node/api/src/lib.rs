//! gRPC API definitions shared by the node agent and the provider.
//!
//! The `.proto` files under `proto/` are the source of truth; see `docs/node-api.md`.
//! This crate carries no TPM or disk dependencies so that the provider can use it on a
//! user's laptop.

/// Version 1 of the node API (`constellation.node.v1`).
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

/// Limits every server and client of the node API applies.
pub mod limits {
    /// Largest gRPC message accepted or sent, in bytes (attestation documents with
    /// certificate chains fit comfortably).
    pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;
}

/// User data a verification-service document carries, naming the service.
pub const VERIFY_USER_DATA: &[u8] = b"constellation-verify";
