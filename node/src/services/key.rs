//! KeyService: data keys derived from the master secret, for attested clients only.

use std::sync::Arc;

use constellation_node_api::v1::key_service_server::KeyService;
use constellation_node_api::v1::{GetDataKeyRequest, GetDataKeyResponse};
use tonic::{Request, Response, Status};

use super::{NodeContext, peer_claims};
use crate::keys::DEFAULT_KEY_LEN;

/// The KeyService implementation.
#[derive(Debug, Clone)]
pub struct KeyServer {
    ctx: Arc<NodeContext>,
}

impl KeyServer {
    /// Serves keys for this control plane.
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        Self { ctx }
    }

    /// Derives the key for a request whose channel is already authenticated (benchmarks).
    pub fn derive(&self, req: &GetDataKeyRequest) -> Result<GetDataKeyResponse, Status> {
        let len = if req.length == 0 {
            DEFAULT_KEY_LEN
        } else {
            req.length as usize
        };
        let master = self.ctx.master()?;
        let key = master.data_key(&req.data_key_id, len).map_err(|e| {
            self.ctx.metrics.key("invalid-request");
            Status::invalid_argument(e.to_string())
        })?;
        self.ctx.metrics.key("ok");
        Ok(GetDataKeyResponse {
            data_key: key.expose().to_vec(),
        })
    }
}

#[tonic::async_trait]
impl KeyService for KeyServer {
    async fn get_data_key(
        &self,
        request: Request<GetDataKeyRequest>,
    ) -> Result<Response<GetDataKeyResponse>, Status> {
        if peer_claims(&request).is_none() {
            self.ctx.metrics.key("unauthenticated");
            return Err(Status::unauthenticated(
                "GetDataKey requires an attested (aTLS) client",
            ));
        }
        let req = request.into_inner();
        let resp = self.derive(&req)?;
        tracing::debug!(id = %req.data_key_id, "data key derived");
        Ok(Response::new(resp))
    }
}
