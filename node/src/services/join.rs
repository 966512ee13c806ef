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
use super::{ClusterRegister, NodeContext, mesh_address, peer_claims, summarize};
use crate::metadata::Role;
use crate::state::{ClusterState, Member};
use constellation_attest::validator::VerifiedClaims;

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
    if !crate::keys::is_luks_uuid(&lower) {
        return Err(Status::invalid_argument(format!(
            "disk_uuid {:?} is not a LUKS UUID (8-4-4-4-12 hex digits)",
            uuid.chars().take(64).collect::<String>()
        )));
    }
    Ok(lower)
}

/// True when the member list revokes `name` or the disk `uuid`: removal records both, so a
/// removed node cannot come back under another name with the same state disk.
fn is_removed(cluster: &ClusterState, name: &str, uuid: &str) -> bool {
    cluster.removed.iter().any(|n| n == name || n == uuid)
}

/// Join tickets only for nodes whose cluster-ID register is at its reset value.
fn require_fresh(register: ClusterRegister) -> Result<(), Status> {
    if register == ClusterRegister::Reset {
        return Ok(());
    }
    Err(Status::permission_denied(format!(
        "join refused: the node's cluster-ID register (PCR 15 / RTMR3) {}; only a node that \
         has not joined since it booted gets a join ticket (members rejoin after a reboot)",
        register.describe()
    )))
}

/// Decides a join request (pure) for the record `candidate` would become. A join ticket is
/// for a node that has not joined anything since it booted (its attested cluster-ID register
/// is at its reset value): a running member, whatever its role, cannot ask for a new identity
/// or role. A recorded name or disk is never taken over: only the very same record (disk,
/// role, address and this boot's WireGuard key — a join retried after its answer was lost)
/// is served again.
pub fn admit_join(
    cluster: &ClusterState,
    name: &str,
    candidate: &Member,
    register: ClusterRegister,
) -> Result<(), Status> {
    require_fresh(register)?;
    let uuid = candidate.disk_uuid.as_str();
    if is_removed(cluster, name, uuid) {
        return Err(Status::permission_denied(format!(
            "node {name} or its state disk {uuid} was removed from the cluster"
        )));
    }
    if let Some(m) = cluster.members.get(name)
        && (m.disk_uuid != candidate.disk_uuid
            || m.role != candidate.role
            || m.private_ip != candidate.private_ip
            || m.wireguard_public_key != candidate.wireguard_public_key)
    {
        return Err(Status::already_exists(format!(
            "node {name} is already a member ({}); join under a new name, or remove the member \
             first",
            m.role
        )));
    }
    if let Some((other, _)) = cluster
        .members
        .iter()
        .find(|(n, m)| n.as_str() != name && m.disk_uuid == uuid)
    {
        return Err(Status::already_exists(format!(
            "state disk {uuid} belongs to member {other}"
        )));
    }
    Ok(())
}

/// Decides a rejoin request (pure) and returns the recorded role. Only a recorded member
/// rejoins, with the state disk it joined with and the role it joined in; its cluster-ID
/// register is reset (power cycle) or holds this cluster's ID (agent restart).
pub fn admit_rejoin(
    cluster: &ClusterState,
    name: &str,
    uuid: &str,
    wants_control_plane: bool,
    register: ClusterRegister,
) -> Result<Role, Status> {
    if !matches!(
        register,
        ClusterRegister::Reset | ClusterRegister::ThisCluster
    ) {
        return Err(Status::permission_denied(format!(
            "rejoin refused: the node's cluster-ID register (PCR 15 / RTMR3) {}",
            register.describe()
        )));
    }
    if is_removed(cluster, name, uuid) {
        return Err(Status::permission_denied(format!(
            "node {name} or its state disk {uuid} was removed from the cluster"
        )));
    }
    let Some(m) = cluster.members.get(name) else {
        return Err(Status::permission_denied(format!(
            "node {name} is not a member of this cluster; a new node joins with a join ticket"
        )));
    };
    if m.disk_uuid != uuid {
        return Err(Status::permission_denied(format!(
            "node {name} joined with another state disk"
        )));
    }
    if wants_control_plane != (m.role == Role::ControlPlane) {
        return Err(Status::permission_denied(format!(
            "node {name} joined as a {}; it cannot rejoin in another role",
            m.role
        )));
    }
    Ok(m.role)
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

/// The canonical bytes a GetPeers authenticator covers: the node name, every peer (name, key,
/// endpoint, allowed IPs) and every control-plane endpoint, each length-prefixed, in answer
/// order. Independent of the protobuf encoding, so unknown fields cannot break it.
pub fn peers_answer_bytes(
    node_name: &str,
    peers: &[WireGuardPeer],
    control_plane_endpoints: &[String],
) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u64).to_be_bytes());
        out.extend_from_slice(b);
    }
    let mut out = Vec::new();
    put(&mut out, node_name.as_bytes());
    out.extend_from_slice(&(peers.len() as u64).to_be_bytes());
    for p in peers {
        put(&mut out, p.node_name.as_bytes());
        put(&mut out, &p.public_key);
        put(&mut out, p.endpoint.as_bytes());
        out.extend_from_slice(&(p.allowed_ips.len() as u64).to_be_bytes());
        for a in &p.allowed_ips {
            put(&mut out, a.as_bytes());
        }
    }
    out.extend_from_slice(&(control_plane_endpoints.len() as u64).to_be_bytes());
    for e in control_plane_endpoints {
        put(&mut out, e.as_bytes());
    }
    out
}

/// Builds the ticket for a validated request (exposed for benchmarks).
pub fn issue_ticket(
    ctx: &NodeContext,
    req: &IssueJoinTicketRequest,
    claims: &VerifiedClaims,
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
    let register = ClusterRegister::of(claims, &secrets.cluster_id);
    let mut cluster = ctx.cluster.lock().unwrap_or_else(|e| e.into_inner());
    let candidate = Member {
        role,
        image_version: req.image_version.chars().take(128).collect(),
        attestation_summary: summarize(claims),
        joined_at: crate::state::now_rfc3339(),
        private_ip: ip.to_string(),
        disk_uuid: uuid,
        wireguard_public_key: hex::encode(&req.wireguard_public_key),
        wireguard_address: wg_address.clone(),
    };
    admit_join(&cluster, &req.node_name, &candidate, register)?;
    let peers = wire_peers(&cluster, &req.node_name);
    // A retried join keeps its first record.
    cluster
        .members
        .entry(req.node_name.clone())
        .or_insert(candidate);
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
        // The register check first: a node that may not join gets no Kubernetes material.
        if let Ok(secrets) = self.ctx.secrets()
            && let Err(s) = require_fresh(ClusterRegister::of(&claims, &secrets.cluster_id))
        {
            return Err(self.refuse("not-fresh", s));
        }
        // Kubernetes join material first: a join must not be recorded when it cannot be served.
        let kubernetes = match self.kubernetes_material(req.is_control_plane).await {
            Ok(k) => k,
            Err(s) => return Err(self.refuse("kubernetes", s)),
        };
        match issue_ticket(&self.ctx, &req, &claims) {
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
                    tonic::Code::PermissionDenied => "not-admitted",
                    tonic::Code::AlreadyExists => "member-exists",
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
        let Some(claims) = peer_claims(&request) else {
            return Err(self.refuse(
                "unauthenticated",
                Status::unauthenticated("rejoin requires an attested (aTLS) client"),
            ));
        };
        let req = request.into_inner();
        check_name(&req.node_name).map_err(|s| self.refuse("invalid-request", s))?;
        let uuid = check_uuid(&req.disk_uuid).map_err(|s| self.refuse("invalid-request", s))?;
        let master = self.ctx.master()?;
        let secrets = self.ctx.secrets()?;
        let register = ClusterRegister::of(&claims, &secrets.cluster_id);
        let role = {
            let c = self.ctx.cluster.lock().unwrap_or_else(|e| e.into_inner());
            admit_rejoin(&c, &req.node_name, &uuid, req.is_control_plane, register)
                .map_err(|s| self.refuse("not-admitted", s))?
        };
        let key = master
            .disk_key(&uuid)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let control_plane_endpoints = {
            let c = self.ctx.cluster.lock().unwrap_or_else(|e| e.into_inner());
            self.ctx.endpoints.of_control_planes(&c, &req.node_name)
        };
        // The recorded role decides, never the request.
        let control_plane = (role == Role::ControlPlane).then(|| {
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
        let Some(claims) = peer_claims(&request) else {
            return Err(self.refuse(
                "unauthenticated",
                Status::unauthenticated("peers require an attested (aTLS) client"),
            ));
        };
        let req = request.into_inner();
        check_name(&req.node_name).map_err(|s| self.refuse("invalid-request", s))?;
        let secrets = self.ctx.secrets()?;
        let register = ClusterRegister::of(&claims, &secrets.cluster_id);
        if register != ClusterRegister::ThisCluster {
            return Err(self.refuse(
                "not-a-member",
                Status::permission_denied(format!(
                    "peers are for members: the node's cluster-ID register (PCR 15 / RTMR3) {}",
                    register.describe()
                )),
            ));
        }
        let c = self.ctx.cluster.lock().unwrap_or_else(|e| e.into_inner());
        if c.removed.iter().any(|n| n == &req.node_name) {
            return Err(Status::permission_denied(format!(
                "node {} was removed",
                req.node_name
            )));
        }
        let Some(m) = c.members.get(&req.node_name) else {
            return Err(Status::not_found(format!(
                "node {} is not a member",
                req.node_name
            )));
        };
        let disk_uuid = m.disk_uuid.clone();
        let peers = wire_peers(&c, &req.node_name);
        let control_plane_endpoints = self.ctx.endpoints.of_control_planes(&c, &req.node_name);
        drop(c);
        // Older members send no nonce and get no authenticator.
        let authenticator = if req.nonce.is_empty() {
            Vec::new()
        } else {
            let master = self.ctx.master()?;
            let key = master
                .disk_key(&disk_uuid)
                .and_then(|k| crate::keys::peers_key(&k))
                .map_err(|e| Status::internal(format!("member {}: {e}", req.node_name)))?;
            let answer = peers_answer_bytes(&req.node_name, &peers, &control_plane_endpoints);
            crate::keys::peers_authenticator(&key, &req.nonce, &answer)
                .map_err(|e| {
                    self.refuse("invalid-request", Status::invalid_argument(e.to_string()))
                })?
                .expose()
                .to_vec()
        };
        Ok(Response::new(GetPeersResponse {
            peers,
            control_plane_endpoints,
            authenticator,
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

    const D1: &str = "00000000-0000-4000-8000-000000000001";
    const D2: &str = "00000000-0000-4000-8000-000000000002";

    fn cluster() -> ClusterState {
        let mut c = ClusterState::default();
        for (name, role, disk) in [("cp-0", Role::ControlPlane, D1), ("w-0", Role::Worker, D2)] {
            c.members.insert(
                name.into(),
                Member {
                    role,
                    image_version: String::new(),
                    attestation_summary: String::new(),
                    joined_at: String::new(),
                    private_ip: "10.0.0.1".into(),
                    disk_uuid: disk.into(),
                    wireguard_public_key: String::new(),
                    wireguard_address: String::new(),
                },
            );
        }
        c.removed = vec!["w-9".into(), "00000000-0000-4000-8000-000000000009".into()];
        c
    }

    #[test]
    fn join_admission() {
        use ClusterRegister::*;
        let c = cluster();
        let new = "00000000-0000-4000-8000-000000000003";
        let gone = "00000000-0000-4000-8000-000000000009";
        let cases: &[(&str, &str, Role, ClusterRegister, Option<tonic::Code>)] = &[
            ("w-1", new, Role::Worker, Reset, None),
            ("cp-1", new, Role::ControlPlane, Reset, None),
            // A member (or another cluster's node) cannot ask for a new identity or role.
            (
                "cp-1",
                new,
                Role::ControlPlane,
                ThisCluster,
                Some(tonic::Code::PermissionDenied),
            ),
            (
                "w-1",
                new,
                Role::Worker,
                Other,
                Some(tonic::Code::PermissionDenied),
            ),
            (
                "w-1",
                new,
                Role::Worker,
                Missing,
                Some(tonic::Code::PermissionDenied),
            ),
            // Removed names and disks stay out.
            (
                "w-9",
                new,
                Role::Worker,
                Reset,
                Some(tonic::Code::PermissionDenied),
            ),
            (
                "w-10",
                gone,
                Role::Worker,
                Reset,
                Some(tonic::Code::PermissionDenied),
            ),
            // A recorded member is not overwritten; the same record is served again.
            (
                "w-0",
                new,
                Role::Worker,
                Reset,
                Some(tonic::Code::AlreadyExists),
            ),
            (
                "w-0",
                D2,
                Role::ControlPlane,
                Reset,
                Some(tonic::Code::AlreadyExists),
            ),
            ("w-0", D2, Role::Worker, Reset, None),
            (
                "w-5",
                D1,
                Role::Worker,
                Reset,
                Some(tonic::Code::AlreadyExists),
            ),
        ];
        for (name, disk, role, reg, want) in cases {
            let candidate = Member {
                role: *role,
                disk_uuid: disk.to_string(),
                ..c.members["w-0"].clone()
            };
            let got = admit_join(&c, name, &candidate, *reg)
                .err()
                .map(|s| s.code());
            assert_eq!(got, *want, "{name} {disk} {role:?} {reg:?}");
        }
    }

    #[test]
    fn rejoin_admission() {
        use ClusterRegister::*;
        let c = cluster();
        assert_eq!(
            admit_rejoin(&c, "w-0", D2, false, Reset).unwrap(),
            Role::Worker
        );
        assert_eq!(
            admit_rejoin(&c, "cp-0", D1, true, ThisCluster).unwrap(),
            Role::ControlPlane
        );
        for (name, disk, cp, reg) in [
            ("w-0", D2, true, Reset),   // a worker asking for control-plane material
            ("cp-0", D1, false, Reset), // roles never change on rejoin
            ("w-7", D2, false, Reset),  // unknown name
            ("w-0", D1, false, Reset),  // another member's disk
            ("w-0", D2, false, Other),  // locked to another cluster
            ("w-0", D2, false, Missing),
            ("w-9", D2, false, Reset), // removed name
        ] {
            let e = admit_rejoin(&c, name, disk, cp, reg).unwrap_err();
            assert_eq!(
                e.code(),
                tonic::Code::PermissionDenied,
                "{name} {disk} {cp} {reg:?}"
            );
        }
    }
}
