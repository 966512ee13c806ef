//! VerificationService: attestation documents for a caller's nonce, over gRPC and HTTP.
//!
//! The document's user data is [`VERIFY_USER_DATA`], naming the service, so a document
//! obtained here cannot be replayed as, e.g., an aTLS certificate extension.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine as _;
use constellation_node_api::VERIFY_USER_DATA;
use constellation_node_api::v1::verification_service_server::VerificationService;
use constellation_node_api::v1::{GetAttestationRequest, GetAttestationResponse};
use tonic::{Request, Response, Status};

use super::{NodeContext, blocking};

/// Shortest accepted nonce.
pub const MIN_NONCE: usize = 16;
/// Longest accepted nonce.
pub const MAX_NONCE: usize = 64;

/// The VerificationService implementation.
#[derive(Debug, Clone)]
pub struct VerifyServer {
    ctx: Arc<NodeContext>,
}

impl VerifyServer {
    /// Serves documents of this node.
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        Self { ctx }
    }

    /// Issues the encoded document for `nonce`.
    pub async fn attest(&self, nonce: Vec<u8>) -> Result<Vec<u8>, Status> {
        if !(MIN_NONCE..=MAX_NONCE).contains(&nonce.len()) {
            return Err(Status::invalid_argument(format!(
                "nonce must be {MIN_NONCE}..={MAX_NONCE} bytes, got {}",
                nonce.len()
            )));
        }
        let issuer = self.ctx.issuer.clone();
        let t0 = Instant::now();
        let doc = blocking(move || issuer.issue(VERIFY_USER_DATA, &nonce))
            .await?
            .map_err(|e| {
                tracing::error!(error = %e, "issuing a verification document failed");
                Status::internal(format!("issuing the attestation document failed: {e}"))
            })?;
        self.ctx
            .metrics
            .attestation_seconds
            .observe(t0.elapsed().as_secs_f64());
        self.ctx.metrics.verifications.inc();
        Ok(doc.to_bytes())
    }
}

#[tonic::async_trait]
impl VerificationService for VerifyServer {
    async fn get_attestation(
        &self,
        request: Request<GetAttestationRequest>,
    ) -> Result<Response<GetAttestationResponse>, Status> {
        let attestation = self.attest(request.into_inner().nonce).await?;
        Ok(Response::new(GetAttestationResponse { attestation }))
    }
}

/// Query of `GET /?nonce=<base64url>`.
#[derive(Debug, serde::Deserialize)]
pub struct NonceQuery {
    nonce: Option<String>,
}

/// JSON answer of the HTTP endpoint.
#[derive(Debug, serde::Serialize)]
struct HttpAnswer {
    variant: String,
    /// Standard base64 of the encoded document.
    attestation: String,
}

async fn http_get(
    State(server): State<VerifyServer>,
    Query(q): Query<NonceQuery>,
) -> axum::response::Response {
    let err = |code: StatusCode, msg: String| {
        (code, axum::Json(serde_json::json!({ "error": msg }))).into_response()
    };
    let Some(nonce) = q.nonce else {
        return err(
            StatusCode::BAD_REQUEST,
            "missing query parameter nonce=<base64url>".into(),
        );
    };
    let Ok(nonce) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(nonce.trim_end_matches('='))
    else {
        return err(StatusCode::BAD_REQUEST, "nonce is not base64url".into());
    };
    match server.attest(nonce).await {
        Ok(doc) => axum::Json(HttpAnswer {
            variant: server.ctx.issuer.variant().to_string(),
            attestation: base64::engine::general_purpose::STANDARD.encode(doc),
        })
        .into_response(),
        Err(s) if s.code() == tonic::Code::InvalidArgument => {
            err(StatusCode::BAD_REQUEST, s.message().to_string())
        }
        Err(s) => err(StatusCode::INTERNAL_SERVER_ERROR, s.message().to_string()),
    }
}

/// The HTTP router (`GET /?nonce=<base64url>` → JSON).
pub fn http_router(server: VerifyServer) -> axum::Router {
    axum::Router::new()
        .route("/", axum::routing::get(http_get))
        .layer(axum::extract::DefaultBodyLimit::max(4096))
        .with_state(server)
}
