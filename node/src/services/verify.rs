//! VerificationService: attestation documents for a caller's nonce, over gRPC and HTTP.
//!
//! The document's user data is [`VERIFY_USER_DATA`], naming the service, so a document
//! obtained here cannot be replayed as, e.g., an aTLS certificate extension.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine as _;
use constellation_attest::validator::IssueError;
use constellation_node_api::VERIFY_USER_DATA;
use constellation_node_api::v1::verification_service_server::VerificationService;
use constellation_node_api::v1::{GetAttestationRequest, GetAttestationResponse};
use tonic::{Request, Response, Status};

use super::{NodeContext, blocking};

/// Shortest accepted nonce.
pub const MIN_NONCE: usize = 16;
/// Longest accepted nonce.
pub const MAX_NONCE: usize = 64;

/// Documents issued at the same time; further requests are refused at once (the TPM
/// serialises quotes, so waiting callers would only pile up).
pub const MAX_CONCURRENT: usize = 4;
/// Sustained documents per second, for all callers together.
pub const RATE_PER_SECOND: f64 = 10.0;
/// Documents a burst may take above the sustained rate.
pub const BURST: f64 = 20.0;

/// A token bucket: `capacity` tokens, refilled at `rate` per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    tokens: f64,
    capacity: f64,
    rate: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: f64, rate: f64, now: Instant) -> Self {
        Self {
            tokens: capacity,
            capacity,
            rate,
            last: now,
        }
    }

    /// Takes one token at `now` if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The VerificationService implementation. Public and unauthenticated, so it is bounded: a
/// global rate ([`RATE_PER_SECOND`], [`BURST`]) and [`MAX_CONCURRENT`] documents in flight;
/// requests beyond either get `RESOURCE_EXHAUSTED` (HTTP 429) at once.
#[derive(Debug, Clone)]
pub struct VerifyServer {
    ctx: Arc<NodeContext>,
    in_flight: Arc<tokio::sync::Semaphore>,
    bucket: Arc<Mutex<TokenBucket>>,
}

impl VerifyServer {
    /// Serves documents of this node with the default limits.
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        Self::with_limits(ctx, MAX_CONCURRENT, BURST, RATE_PER_SECOND)
    }

    /// Serves documents with explicit limits.
    pub fn with_limits(
        ctx: Arc<NodeContext>,
        concurrent: usize,
        burst: f64,
        rate_per_second: f64,
    ) -> Self {
        Self {
            ctx,
            in_flight: Arc::new(tokio::sync::Semaphore::new(concurrent)),
            bucket: Arc::new(Mutex::new(TokenBucket::new(
                burst,
                rate_per_second,
                Instant::now(),
            ))),
        }
    }

    /// Issues the encoded document for `nonce`.
    pub async fn attest(&self, nonce: Vec<u8>) -> Result<Vec<u8>, Status> {
        if !(MIN_NONCE..=MAX_NONCE).contains(&nonce.len()) {
            return Err(Status::invalid_argument(format!(
                "nonce must be {MIN_NONCE}..={MAX_NONCE} bytes, got {}",
                nonce.len()
            )));
        }
        let busy = || {
            Status::resource_exhausted(
                "the verification service is busy (rate or concurrency limit); try again shortly",
            )
        };
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            return Err(busy());
        };
        if !self
            .bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(Instant::now())
        {
            return Err(busy());
        }
        let issuer = self.ctx.issuer.clone();
        let t0 = Instant::now();
        let doc = blocking(move || {
            let _permit = permit;
            issuer.issue(VERIFY_USER_DATA, &nonce)
        })
        .await?
        .map_err(|e| match e {
            IssueError::Busy { .. } => busy(),
            e => {
                tracing::error!(error = %e, "issuing a verification document failed");
                Status::internal(format!("issuing the attestation document failed: {e}"))
            }
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
        Err(s) if s.code() == tonic::Code::ResourceExhausted => {
            err(StatusCode::TOO_MANY_REQUESTS, s.message().to_string())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3.0, 2.0, t0);
        assert!((0..3).all(|_| b.take(t0)), "the burst");
        assert!(!b.take(t0), "empty");
        assert!(!b.take(t0 + Duration::from_millis(400)), "0.8 tokens");
        assert!(b.take(t0 + Duration::from_millis(500)), "refilled to 1");
        // A long pause refills to the capacity, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.take(later)));
        assert!(!b.take(later));
    }
}
