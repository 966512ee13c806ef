//! ManagementService for the cluster owner (mutual TLS by the cluster CA, see [`crate::ca`]).

use std::sync::Arc;

use constellation_node_api::v1::management_service_server::ManagementService;
use constellation_node_api::v1::{
    GetStatusRequest, GetStatusResponse, NodeStatus, Refusal, RemoveNodeRequest,
    RemoveNodeResponse, SetAttestationConfigRequest, SetAttestationConfigResponse,
};
use tonic::{Request, Response, Status};

use super::NodeContext;

/// Longest accepted attestation config.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// The ManagementService implementation.
#[derive(Debug, Clone)]
pub struct ManagementServer {
    ctx: Arc<NodeContext>,
}

impl ManagementServer {
    /// Serves management for this control plane.
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        Self { ctx }
    }
}

#[tonic::async_trait]
impl ManagementService for ManagementServer {
    async fn get_status(
        &self,
        _request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        let secrets = self.ctx.secrets()?;
        let c = self
            .ctx
            .cluster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let nodes = c
            .members
            .iter()
            .map(|(name, m)| NodeStatus {
                name: name.clone(),
                role: m.role.to_string(),
                image_version: m.image_version.clone(),
                attestation_summary: m.attestation_summary.clone(),
                joined_at: m.joined_at.clone(),
                private_ip: m.private_ip.clone(),
            })
            .collect();
        Ok(Response::new(GetStatusResponse {
            cluster_id: secrets.cluster_id.to_vec(),
            cluster_name: secrets.cluster_name,
            nodes,
            attestation_config_json: c.attestation_config_json,
            kubernetes_status: c.kubernetes_status,
            recent_refusals: self
                .ctx
                .logs
                .refusals()
                .into_iter()
                .map(|r| Refusal {
                    peer: r.peer,
                    time: r.time,
                    reason: r.reason,
                })
                .collect(),
        }))
    }

    async fn set_attestation_config(
        &self,
        request: Request<SetAttestationConfigRequest>,
    ) -> Result<Response<SetAttestationConfigResponse>, Status> {
        self.ctx.secrets()?;
        let json = request.into_inner().attestation_config_json;
        if json.len() > MAX_CONFIG_BYTES {
            return Err(Status::invalid_argument(format!(
                "attestation config is larger than {MAX_CONFIG_BYTES} bytes"
            )));
        }
        self.ctx.apply_attestation_config(&json)?;
        self.ctx.persist_cluster();
        tracing::info!(variants = ?self.ctx.validators.variants(), "attestation config replaced");
        Ok(Response::new(SetAttestationConfigResponse {}))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        self.ctx.secrets()?;
        let name = request.into_inner().name;
        if name == self.ctx.info.name {
            return Err(Status::invalid_argument(
                "a control plane cannot remove itself",
            ));
        }
        {
            let mut c = self.ctx.cluster.lock().unwrap_or_else(|e| e.into_inner());
            let gone = c.members.remove(&name);
            if gone.is_none() && !c.removed.contains(&name) {
                return Err(Status::not_found(format!("node {name:?} is not a member")));
            }
            // The name and the member's state disk are both revoked: names are chosen by the
            // node's metadata, the disk (its LUKS UUID, the id its disk key derives from) is
            // what it rejoins with. The list's entries replicate as names do.
            for revoked in std::iter::once(name.clone())
                .chain(gone.map(|m| m.disk_uuid).filter(|u| !u.is_empty()))
            {
                if !c.removed.contains(&revoked) {
                    c.removed.push(revoked);
                }
            }
        }
        self.ctx.persist_cluster();
        self.ctx.refresh_mesh();
        tracing::info!(node = %name, "node removed");
        Ok(Response::new(RemoveNodeResponse {}))
    }
}
