//! JoinService: issues join and rejoin tickets to attested nodes.
//!
//! The aTLS layer has already validated the client against the cluster's *current*
//! validators (replaced through the management API without restart); the handler reads the
//! verified claims, checks the request and derives the ticket.

use std::sync::Arc;

use constellation_node_api::v1::join_service_server::JoinService;
use constellation_node_api::v1::{
    ControlPlaneMaterial, GetPeersRequest, GetPeersResponse, IssueJoinTicketRequest,
    IssueJoinTicketResponse, IssueRejoinTicketRequest, IssueRejoinTicketResponse, KubernetesJoin,
    WireGuardPeer,
};
use tonic::{Request, Response, Status};

use super::kubernetes::Kubeadm;
use super::{NodeContext, mesh_address, peer_claims, summarize};
use crate::metadata::Role;
use crate::state::Member;

/// The JoinService implementation.
#[derive(Debug, Clone)]
pub struct JoinServer {
    ctx: Arc<NodeContext>,
}

impl JoinServer {
    /// Serves joins for this control plane.
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        Self { ctx }
    }

    /// Fresh kubeadm join material when this cluster runs Kubernetes (`None` otherwise).
    async fn kubernetes_material(
        &self,
        control_plane: bool,
    ) -> Result<Option<KubernetesJoin>, Status> {
        let settings = self
            .ctx
            .cluster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .kubernetes
            .clone();
        let Some(settings) = settings else {
            return Ok(None);
        };
        let Some(kubeadm) = Kubeadm::find() else {
            return Err(Status::unavailable(
                "the cluster runs Kubernetes but this control plane has no kubeadm; join through another control plane",
            ));
        };
        let m = kubeadm
            .join_material(&settings.control_plane_endpoint, control_plane)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "creating Kubernetes join material failed");
                Status::unavailable(format!("creating Kubernetes join material failed: {e}"))
            })?;
        Ok(Some(KubernetesJoin {
            api_server_endpoint: m.api_server_endpoint.clone(),
            token: m.token.to_string(),
            discovery_token_ca_cert_hash: m.ca_cert_hash.clone(),
            certificate_key: m.certificate_key.to_string(),
        }))
    }

    fn refuse(&self, reason: &str, status: Status) -> Status {
        tracing::warn!(reason, error = %status.message(), "join refused");
        self.ctx.metrics.join("refused", reason);
        status
    }
}

pub(crate) fn check_name(name: &str) -> Result<(), Status> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(Status::invalid_argument(
            "node_name must be 1..=63 characters of [A-Za-z0-9.-]",
        ));
    }
    Ok(())
}

fn check_uuid(uuid: &str) -> Result<String, Status> {
    let lower = uuid.to_ascii_lowercase();
    let shape_ok = lower.len() == 36
        && lower.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    if !shape_ok {
        return Err(Status::invalid_argument(format!(
            "disk_uuid {:?} is not a LUKS UUID (8-4-4-4-12 hex digits)",
            uuid.chars().take(64).collect::<String>()
        )));
    }
    Ok(lower)
}

/// Every member but `except` that has a WireGuard key, as the join API sends peers.
fn wire_peers(cluster: &crate::state::ClusterState, except: &str) -> Vec<WireGuardPeer> {
    cluster
        .members
        .iter()
        .filter(|(name, m)| name.as_str() != except && !m.wireguard_public_key.is_empty())
        .map(|(name, m)| WireGuardPeer {
            node_name: name.clone(),
            public_key: hex::decode(&m.wireguard_public_key).unwrap_or_default(),
            endpoint: format!("{}:51820", m.private_ip),
            allowed_ips: vec![m.wireguard_address.replace("/16", "/32")],
        })
        .collect()
}

/// Builds the ticket for a validated request (exposed for benchmarks).
pub fn issue_ticket(
    ctx: &NodeContext,
    req: &IssueJoinTicketRequest,
    attestation_summary: String,
) -> Result<IssueJoinTicketResponse, Status> {
    check_name(&req.node_name)?;
    let uuid = check_uuid(&req.disk_uuid)?;
    if !req.wireguard_public_key.is_empty() && req.wireguard_public_key.len() != 32 {
        return Err(Status::invalid_argument(
            "wireguard_public_key must be 32 bytes",
        ));
    }
    let ip: std::net::IpAddr = req
        .private_ip
        .parse()
        .map_err(|e| Status::invalid_argument(format!("private_ip {:?}: {e}", req.private_ip)))?;
    let secrets = ctx.secrets()?;
    let master = ctx.master()?;
    let disk_key = master
        .disk_key(&uuid)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let role = if req.is_control_plane {
        Role::ControlPlane
    } else {
        Role::Worker
    };
    let wg_address = mesh_address(&ip.to_string());
    let mut cluster = ctx.cluster.lock().unwrap_or_else(|e| e.into_inner());
    if cluster.removed.iter().any(|n| n == &req.node_name) {
        return Err(Status::permission_denied(format!(
            "node {} was removed from the cluster",
            req.node_name
        )));
    }
    let peers = wire_peers(&cluster, &req.node_name);
    cluster.members.insert(
        req.node_name.clone(),
        Member {
            role,
            image_version: req.image_version.chars().take(128).collect(),
            attestation_summary,
            joined_at: crate::state::now_rfc3339(),
            private_ip: ip.to_string(),
            disk_uuid: uuid,
            wireguard_public_key: hex::encode(&req.wireguard_public_key),
            wireguard_address: wg_address.clone(),
        },
    );
    // Control-plane joiners start with the cluster-wide member list (including themselves).
    let control_plane = req.is_control_plane.then(|| ControlPlaneMaterial {
        master_secret: master.secret().expose().to_vec(),
        master_salt: master.salt().expose().to_vec(),
        attestation_config_json: cluster.attestation_config_json.clone(),
        members: Some(super::members::to_list(&cluster)),
        kubernetes_settings: cluster
            .kubernetes
            .as_ref()
            .map(super::members::settings_to_proto),
        kubernetes_status: cluster.kubernetes_status.clone(),
    });
    let control_plane_endpoints = ctx.endpoints.of_control_planes(&cluster, &req.node_name);
    drop(cluster);
    Ok(IssueJoinTicketResponse {
        state_disk_key: disk_key.expose().to_vec(),
        measurement_secret: secrets.measurement_secret.expose().to_vec(),
        measurement_salt: secrets.measurement_salt.clone(),
        cluster_id: secrets.cluster_id.to_vec(),
        peers,
        wireguard_address: wg_address,
        control_plane,
        kubernetes: None,
        cluster_name: secrets.cluster_name.clone(),
        control_plane_endpoints,
    })
}

#[tonic::async_trait]
impl JoinService for JoinServer {
    async fn issue_join_ticket(
        &self,
        request: Request<IssueJoinTicketRequest>,
    ) -> Result<Response<IssueJoinTicketResponse>, Status> {
        let Some(claims) = peer_claims(&request) else {
            return Err(self.refuse(
                "unauthenticated",
                Status::unauthenticated("join requires an attested (aTLS) client"),
            ));
        };
        let req = request.into_inner();
        // Kubernetes join material first: a join must not be recorded when it cannot be served.
        let kubernetes = match self.kubernetes_material(req.is_control_plane).await {
            Ok(k) => k,
            Err(s) => return Err(self.refuse("kubernetes", s)),
        };
        match issue_ticket(&self.ctx, &req, summarize(&claims)) {
            Ok(mut t) => {
                t.kubernetes = kubernetes;
                tracing::info!(node = %req.node_name, control_plane = req.is_control_plane, "join ticket issued");
                self.ctx.metrics.join("accepted", "");
                self.ctx.persist_cluster();
                self.ctx.refresh_mesh();
                Ok(Response::new(t))
            }
            Err(s) => {
                let reason = match s.code() {
                    tonic::Code::InvalidArgument => "invalid-request",
                    tonic::Code::PermissionDenied => "removed",
                    _ => "unavailable",
                };
                Err(self.refuse(reason, s))
            }
        }
    }

    async fn issue_rejoin_ticket(
        &self,
        request: Request<IssueRejoinTicketRequest>,
    ) -> Result<Response<IssueRejoinTicketResponse>, Status> {
        if peer_claims(&request).is_none() {
            return Err(self.refuse(
                "unauthenticated",
                Status::unauthenticated("rejoin requires an attested (aTLS) client"),
            ));
        }
        let req = request.into_inner();
        check_name(&req.node_name).map_err(|s| self.refuse("invalid-request", s))?;
        let uuid = check_uuid(&req.disk_uuid).map_err(|s| self.refuse("invalid-request", s))?;
        let master = self.ctx.master()?;
        let secrets = self.ctx.secrets()?;
        {
            let c = self.ctx.cluster.lock().unwrap_or_else(|e| e.into_inner());
            if c.removed.iter().any(|n| n == &req.node_name) {
                return Err(self.refuse(
                    "removed",
                    Status::permission_denied(format!("node {} was removed", req.node_name)),
                ));
            }
            // A known member must come back with its own disk.
            if let Some(m) = c.members.get(&req.node_name)
                && m.disk_uuid != uuid
            {
                return Err(self.refuse(
                    "disk-mismatch",
                    Status::permission_denied(format!(
                        "node {} joined with another state disk",
                        req.node_name
                    )),
                ));
            }
        }
        let key = master
            .disk_key(&uuid)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let control_plane_endpoints = {
            let c = self.ctx.cluster.lock().unwrap_or_else(|e| e.into_inner());
            self.ctx.endpoints.of_control_planes(&c, &req.node_name)
        };
        let control_plane = req.is_control_plane.then(|| {
            let c = self.ctx.cluster.lock().unwrap_or_else(|e| e.into_inner());
            ControlPlaneMaterial {
                master_secret: master.secret().expose().to_vec(),
                master_salt: master.salt().expose().to_vec(),
                attestation_config_json: c.attestation_config_json.clone(),
                members: Some(super::members::to_list(&c)),
                kubernetes_settings: c.kubernetes.as_ref().map(super::members::settings_to_proto),
                kubernetes_status: c.kubernetes_status.clone(),
            }
        });
        tracing::info!(node = %req.node_name, "rejoin ticket issued");
        self.ctx.metrics.join("accepted", "rejoin");
        Ok(Response::new(IssueRejoinTicketResponse {
            state_disk_key: key.expose().to_vec(),
            measurement_secret: secrets.measurement_secret.expose().to_vec(),
            control_plane,
            measurement_salt: secrets.measurement_salt.clone(),
            control_plane_endpoints,
        }))
    }

    async fn get_peers(
        &self,
        request: Request<GetPeersRequest>,
    ) -> Result<Response<GetPeersResponse>, Status> {
        if peer_claims(&request).is_none() {
            return Err(self.refuse(
                "unauthenticated",
                Status::unauthenticated("peers require an attested (aTLS) client"),
            ));
        }
        let req = request.into_inner();
        check_name(&req.node_name).map_err(|s| self.refuse("invalid-request", s))?;
        self.ctx.secrets()?;
        let c = self.ctx.cluster.lock().unwrap_or_else(|e| e.into_inner());
        if c.removed.iter().any(|n| n == &req.node_name) {
            return Err(Status::permission_denied(format!(
                "node {} was removed",
                req.node_name
            )));
        }
        if !c.members.contains_key(&req.node_name) {
            return Err(Status::not_found(format!(
                "node {} is not a member",
                req.node_name
            )));
        }
        Ok(Response::new(GetPeersResponse {
            peers: wire_peers(&c, &req.node_name),
            control_plane_endpoints: self.ctx.endpoints.of_control_planes(&c, &req.node_name),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shape() {
        assert_eq!(
            check_uuid("ABCDEF01-2345-6789-ABCD-EF0123456789").unwrap(),
            "abcdef01-2345-6789-abcd-ef0123456789"
        );
        for bad in [
            "",
            "abc",
            "abcdef01-2345-6789-abcd-ef012345678g",
            "abcdef0112345-6789-abcd-ef012345678",
        ] {
            assert!(check_uuid(bad).is_err());
        }
        assert!(crate::keys::validate_id("abcdef01-2345-6789-abcd-ef0123456789").is_ok());
    }
}
