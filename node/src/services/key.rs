//! KeyService: data keys derived from the master secret, for attested members only.
//!
//! A caller must attest with this cluster's ID in its cluster-ID register (a member), and
//! may ask only for data-key ids: the cluster's own keys (measurement secret, state-disk
//! keys, the cluster CA) are out of its reach (see [`crate::keys`]).

use std::sync::Arc;

use constellation_node_api::v1::key_service_server::KeyService;
use constellation_node_api::v1::{GetDataKeyRequest, GetDataKeyResponse};
use tonic::{Request, Response, Status};

use super::{ClusterRegister, NodeContext, peer_claims};
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
        let Some(claims) = peer_claims(&request) else {
            self.ctx.metrics.key("unauthenticated");
            return Err(Status::unauthenticated(
                "GetDataKey requires an attested (aTLS) client",
            ));
        };
        let secrets = self.ctx.secrets()?;
        let register = ClusterRegister::of(&claims, &secrets.cluster_id);
        if register != ClusterRegister::ThisCluster {
            self.ctx.metrics.key("not-a-member");
            return Err(Status::permission_denied(format!(
                "data keys are for members of this cluster: the client's cluster-ID register \
                 (PCR 15 / RTMR3) {}",
                register.describe()
            )));
        }
        let req = request.into_inner();
        let resp = self.derive(&req)?;
        tracing::debug!(id = %req.data_key_id, "data key derived");
        Ok(Response::new(resp))
    }
}
