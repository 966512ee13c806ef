//! The cluster-wide member list: control planes replicate their member records to each other.
//!
//! Every control plane records the nodes that join through it (and removals) in its
//! [`ClusterState`]. A replicator task pushes the full list to every other control plane
//! whenever it changed since the last successful push to that peer, and at least every
//! [`RESYNC_INTERVAL`]; the callee merges ([`ClusterState::merge`]: union, removals win) and
//! answers with its merged list, which the caller merges back. Failed pushes are retried
//! with backoff. The channel is the management port's mutual TLS by the cluster CA, which
//! only holders of the master secret can obtain certificates from.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use constellation_node_api::limits::MAX_MESSAGE_BYTES;
use constellation_node_api::v1::member_sync_service_client::MemberSyncServiceClient;
use constellation_node_api::v1::member_sync_service_server::MemberSyncService;
use constellation_node_api::v1::{
    KubernetesSettings, MemberList, MemberRecord, SyncMembersRequest, SyncMembersResponse,
};
use tonic::{Request, Response, Status};

use super::NodeContext;
use super::kubernetes::ClusterSettings;
use crate::ca::{ClusterCa, MANAGEMENT_SERVER_NAME};
use crate::metadata::Role;
use crate::state::{ClusterState, Member};

/// Longest time between two pushes to a peer, changed or not (anti-entropy).
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(30);
/// How often the replicator looks for changes.
const POLL: Duration = Duration::from_millis(500);
/// Longest backoff after failed pushes.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Most members a list may carry.
pub const MAX_MEMBERS: usize = 4096;

/// A member as a protobuf record.
pub fn to_record(name: &str, m: &Member) -> MemberRecord {
    MemberRecord {
        name: name.into(),
        role: m.role.to_string(),
        image_version: m.image_version.clone(),
        attestation_summary: m.attestation_summary.clone(),
        joined_at: m.joined_at.clone(),
        private_ip: m.private_ip.clone(),
        disk_uuid: m.disk_uuid.clone(),
        wireguard_public_key: hex::decode(&m.wireguard_public_key).unwrap_or_default(),
        wireguard_address: m.wireguard_address.clone(),
    }
}

fn bounded(field: &str, v: &str, max: usize) -> Result<String, Status> {
    if v.len() > max {
        return Err(Status::invalid_argument(format!(
            "member field {field} is longer than {max} bytes"
        )));
    }
    Ok(v.to_string())
}

/// A member from a protobuf record, validated.
pub fn from_record(r: &MemberRecord) -> Result<(String, Member), Status> {
    super::join::check_name(&r.name)?;
    let role: Role = r
        .role
        .parse()
        .map_err(|e| Status::invalid_argument(format!("member {}: {e}", r.name)))?;
    r.private_ip
        .parse::<std::net::IpAddr>()
        .map_err(|e| Status::invalid_argument(format!("member {}: private_ip: {e}", r.name)))?;
    if !r.wireguard_public_key.is_empty() && r.wireguard_public_key.len() != 32 {
        return Err(Status::invalid_argument(format!(
            "member {}: wireguard_public_key must be 32 bytes",
            r.name
        )));
    }
    Ok((
        r.name.clone(),
        Member {
            role,
            image_version: bounded("image_version", &r.image_version, 128)?,
            attestation_summary: bounded("attestation_summary", &r.attestation_summary, 1024)?,
            joined_at: bounded("joined_at", &r.joined_at, 64)?,
            private_ip: r.private_ip.clone(),
            disk_uuid: bounded("disk_uuid", &r.disk_uuid, 64)?,
            wireguard_public_key: hex::encode(&r.wireguard_public_key),
            wireguard_address: bounded("wireguard_address", &r.wireguard_address, 64)?,
        },
    ))
}

/// The member list of a cluster state.
pub fn to_list(c: &ClusterState) -> MemberList {
    MemberList {
        members: c.members.iter().map(|(n, m)| to_record(n, m)).collect(),
        removed: c.removed.clone(),
    }
}

/// Members and removals from a list, validated.
pub fn from_list(l: &MemberList) -> Result<(BTreeMap<String, Member>, Vec<String>), Status> {
    if l.members.len() > MAX_MEMBERS || l.removed.len() > MAX_MEMBERS {
        return Err(Status::invalid_argument(format!(
            "member lists hold at most {MAX_MEMBERS} entries"
        )));
    }
    let members = l
        .members
        .iter()
        .map(from_record)
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    for n in &l.removed {
        super::join::check_name(n)?;
    }
    Ok((members, l.removed.clone()))
}

/// Kubernetes settings as protobuf.
pub fn settings_to_proto(s: &ClusterSettings) -> KubernetesSettings {
    KubernetesSettings {
        kubernetes_version: s.kubernetes_version.clone(),
        cluster_name: s.cluster_name.clone(),
        pod_subnet: s.pod_subnet.clone(),
        service_subnet: s.service_subnet.clone(),
        control_plane_endpoint: s.control_plane_endpoint.clone(),
        cert_sans: s.cert_sans.clone(),
    }
}

/// Kubernetes settings from protobuf, validated.
pub fn settings_from_proto(
    k: &KubernetesSettings,
    private_ip: std::net::IpAddr,
) -> Result<ClusterSettings, String> {
    if k.control_plane_endpoint.is_empty() {
        return Err("Kubernetes settings lack the control-plane endpoint".into());
    }
    ClusterSettings::new(
        &k.kubernetes_version,
        &k.cluster_name,
        &k.pod_subnet,
        &k.service_subnet,
        &k.control_plane_endpoint,
        &k.cert_sans,
        private_ip,
    )
    .map_err(|e| e.to_string())
}

/// Merges a list into the node's cluster state and persists it when it changed.
pub fn merge_into(ctx: &Arc<NodeContext>, list: &MemberList, from: &str) -> Result<bool, Status> {
    let (members, removed) = from_list(list)?;
    let changed = ctx
        .cluster
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .merge(members, &removed);
    if changed {
        tracing::info!(from, "member list updated from another control plane");
        ctx.persist_cluster();
        ctx.refresh_mesh();
    }
    Ok(changed)
}

/// The MemberSyncService implementation (served on the management port).
#[derive(Debug, Clone)]
pub struct MemberSyncServer {
    ctx: Arc<NodeContext>,
}

impl MemberSyncServer {
    /// Serves member sync for this control plane.
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        Self { ctx }
    }
}

#[tonic::async_trait]
impl MemberSyncService for MemberSyncServer {
    async fn sync_members(
        &self,
        request: Request<SyncMembersRequest>,
    ) -> Result<Response<SyncMembersResponse>, Status> {
        self.ctx.master()?;
        let req = request.into_inner();
        let from: String = req.from.chars().take(63).collect();
        if let Some(list) = &req.members {
            merge_into(&self.ctx, list, &from)?;
        }
        let merged = to_list(&self.ctx.cluster.lock().unwrap_or_else(|e| e.into_inner()));
        Ok(Response::new(SyncMembersResponse {
            members: Some(merged),
        }))
    }
}

/// Per-peer replication state.
#[derive(Default)]
struct PeerSync {
    /// The list last pushed successfully.
    pushed: Option<MemberList>,
    /// When it was pushed.
    at: Option<Instant>,
    /// Consecutive failures and when to try again.
    failures: u32,
    retry_at: Option<Instant>,
}

/// Pushes this control plane's member list to the other control planes until the process
/// ends. `management_port` is the port every control plane serves management on.
pub async fn replicate(ctx: Arc<NodeContext>, management_port: u16) {
    let tls = match client_tls(&ctx).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "member replication disabled: no client credential");
            return;
        }
    };
    let mut peers: HashMap<String, PeerSync> = HashMap::new();
    loop {
        let (list, targets) = {
            let c = ctx.cluster.lock().unwrap_or_else(|e| e.into_inner());
            let targets: Vec<(String, String)> = c
                .members
                .iter()
                .filter(|(n, m)| m.role == Role::ControlPlane && **n != ctx.info.name)
                .map(|(n, m)| (n.clone(), m.private_ip.clone()))
                .collect();
            (to_list(&c), targets)
        };
        peers.retain(|n, _| targets.iter().any(|(t, _)| t == n));
        for (name, ip) in targets {
            let p = peers.entry(name.clone()).or_default();
            let now = Instant::now();
            let due = p.pushed.as_ref() != Some(&list)
                || p.at
                    .is_none_or(|t| now.duration_since(t) >= RESYNC_INTERVAL);
            if !due || p.retry_at.is_some_and(|t| now < t) {
                continue;
            }
            match push(&ctx, &tls, &ip, management_port, &list).await {
                Ok(()) => {
                    if p.failures > 0 {
                        tracing::info!(peer = %name, "member replication to peer recovered");
                    }
                    *p = PeerSync {
                        pushed: Some(list.clone()),
                        at: Some(Instant::now()),
                        ..Default::default()
                    };
                }
                Err(e) => {
                    p.failures = p.failures.saturating_add(1);
                    let backoff = Duration::from_millis(500)
                        .saturating_mul(1u32 << p.failures.min(6))
                        .min(MAX_BACKOFF);
                    p.retry_at = Some(Instant::now() + backoff);
                    tracing::warn!(peer = %name, error = %e, retry_in = ?backoff, "member replication failed; retrying");
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn client_tls(ctx: &NodeContext) -> Result<tonic::transport::ClientTlsConfig, String> {
    let master = ctx.master().map_err(|s| s.message().to_string())?;
    let (ca_pem, cred) = super::blocking(move || -> Result<_, String> {
        let ca = ClusterCa::derive(&master).map_err(|e| e.to_string())?;
        let cred = ca.issue_owner().map_err(|e| e.to_string())?;
        Ok((ca.cert_pem().to_string(), cred))
    })
    .await
    .map_err(|s| s.message().to_string())??;
    Ok(tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
        .identity(tonic::transport::Identity::from_pem(
            cred.cert_pem.as_bytes(),
            cred.key_pem.as_bytes(),
        ))
        .domain_name(MANAGEMENT_SERVER_NAME))
}

async fn push(
    ctx: &Arc<NodeContext>,
    tls: &tonic::transport::ClientTlsConfig,
    ip: &str,
    port: u16,
    list: &MemberList,
) -> Result<(), String> {
    let ip: std::net::IpAddr = ip.parse().map_err(|e| format!("address {ip:?}: {e}"))?;
    let addr = std::net::SocketAddr::new(ip, port);
    let ch = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls.clone())
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .http2_keep_alive_interval(constellation_attest::atls::limits::KEEPALIVE_INTERVAL)
        .keep_alive_timeout(constellation_attest::atls::limits::KEEPALIVE_TIMEOUT)
        .connect()
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let resp = MemberSyncServiceClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
        .sync_members(SyncMembersRequest {
            from: ctx.info.name.clone(),
            members: Some(list.clone()),
        })
        .await
        .map_err(|s| format!("{addr}: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    if let Some(merged) = resp.members {
        merge_into(ctx, &merged, ip.to_string().as_str()).map_err(|s| s.message().to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_are_validated() {
        let m = Member {
            role: Role::ControlPlane,
            image_version: "v1".into(),
            attestation_summary: "variant=qemu-vtpm".into(),
            joined_at: "2026-01-01T00:00:00Z".into(),
            private_ip: "10.0.0.2".into(),
            disk_uuid: "abcdef01-2345-6789-abcd-ef0123456789".into(),
            wireguard_public_key: hex::encode([7u8; 32]),
            wireguard_address: "10.99.0.2/16".into(),
        };
        let r = to_record("cp-1", &m);
        assert_eq!(from_record(&r).unwrap(), ("cp-1".to_string(), m));
        for bad in [
            MemberRecord {
                name: "bad name".into(),
                ..r.clone()
            },
            MemberRecord {
                role: "boss".into(),
                ..r.clone()
            },
            MemberRecord {
                private_ip: "nope".into(),
                ..r.clone()
            },
            MemberRecord {
                wireguard_public_key: vec![1; 3],
                ..r.clone()
            },
            MemberRecord {
                image_version: "x".repeat(500),
                ..r.clone()
            },
        ] {
            assert!(from_record(&bad).is_err(), "{bad:?}");
        }
        let list = MemberList {
            members: vec![r],
            removed: vec!["w-9".into()],
        };
        let (members, removed) = from_list(&list).unwrap();
        assert_eq!(members.len(), 1);
        assert_eq!(removed, ["w-9"]);
    }
}
