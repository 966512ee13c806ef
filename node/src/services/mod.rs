//! The node's gRPC services and their shared context.
//!
//! Services are plain tonic services; the channel security (aTLS, mutual TLS) is applied by
//! the servers in [`crate::bootstrap`]. Handlers that need an attested peer read its verified
//! claims from the request extensions (put there by the aTLS layer) via [`peer_claims`].

pub mod endpoints;
pub mod init;
pub mod join;
pub mod key;
pub mod kubernetes;
pub mod management;
pub mod members;
pub mod recovery;
pub mod verify;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use constellation_attest::validator::{Issuer, Validators, VerifiedClaims};
use tokio::sync::watch;
use tonic::Status;

use crate::disk::StateDisk;
use crate::lock::ClusterLock;
use crate::logging::LogRing;
use crate::metadata::InstanceInfo;
use crate::metrics::Metrics;
use crate::netcrypt::NetworkEncryption;
use crate::state::{ClusterSecrets, ClusterState};

/// Turns a validated attestation config (JSON) into validators. Injected so that the node
/// logic does not fix one config format.
pub type ConfigParser = Arc<
    dyn Fn(&str) -> Result<Vec<Arc<dyn constellation_attest::validator::Validator>>, String>
        + Send
        + Sync,
>;

/// Where the node is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for Init or a join ticket.
    Fresh,
    /// Rebooted member waiting for a rejoin ticket or recovery.
    AwaitingRejoin,
    /// Initialised or joined; control planes serve the cluster services.
    Bootstrapped,
}

/// Serialises header writes of the remembered endpoints.
static PERSIST_ENDPOINTS: Mutex<()> = Mutex::new(());

/// Everything the services share.
pub struct NodeContext {
    /// Metadata read at boot.
    pub info: InstanceInfo,
    /// Image version this node runs.
    pub image_version: String,
    /// Metrics.
    pub metrics: Metrics,
    /// Recent log lines.
    pub logs: LogRing,
    /// Issues this node's attestation documents.
    pub issuer: Arc<dyn Issuer>,
    /// PCR 15.
    pub lock: Arc<dyn ClusterLock>,
    /// State disk.
    pub disk: Arc<dyn StateDisk>,
    /// Network encryption.
    pub net: Arc<dyn NetworkEncryption>,
    /// Validators the join/key services check clients with (replaced at run time).
    pub validators: Validators,
    /// Parses attestation configs.
    pub parse_config: ConfigParser,
    /// Cluster secrets once bootstrapped.
    pub secrets: RwLock<Option<ClusterSecrets>>,
    /// Control-plane view of the cluster.
    pub cluster: Mutex<ClusterState>,
    /// Mounted state directory once the disk is open.
    pub state_dir: RwLock<Option<PathBuf>>,
    /// Serialises Init, join and recovery: the first to take the node lock wins.
    pub bootstrap_lock: Arc<tokio::sync::Mutex<()>>,
    /// Life-cycle phase, observable.
    pub phase: watch::Sender<Phase>,
    /// Control-plane endpoints learned from the cluster (see [`endpoints`]).
    pub endpoints: endpoints::KnownEndpoints,
    /// Members that joined or rejoined: the key GetPeers answers are authenticated with
    /// ([`crate::keys::peers_key`] of this node's disk key).
    pub peers_key: RwLock<Option<crate::keys::Secret>>,
}

impl std::fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContext")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl NodeContext {
    /// Current phase.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// The cluster secrets, or `Unavailable` before bootstrap.
    pub fn secrets(&self) -> Result<ClusterSecrets, Status> {
        self.secrets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| {
                Status::unavailable("this node has not joined or initialised a cluster yet")
            })
    }

    /// The master secret, or `Unavailable` on nodes that do not hold it.
    pub fn master(&self) -> Result<crate::keys::MasterSecret, Status> {
        self.secrets()?.master.ok_or_else(|| {
            Status::unavailable("this node is not a control plane holding the master secret")
        })
    }

    /// This node's own join-service endpoint (never a place to join through).
    pub fn own_join_endpoint(&self) -> String {
        std::net::SocketAddr::new(self.info.private_ip, self.endpoints.join_port()).to_string()
    }

    /// Where to look for control planes: the metadata's endpoints, then those learned from the
    /// cluster (re-read on every round, as both may change while the node waits).
    pub fn join_endpoints(&self) -> Vec<String> {
        endpoints::merged(&self.info.join_endpoints, &self.endpoints.learned())
    }

    /// Records the control-plane endpoints the cluster reported and, when they changed,
    /// remembers them on the state disk's header (in the background when called on the
    /// runtime: a header write syncs the disk). Failures only warn: the list is a hint.
    pub fn learn_endpoints(self: &Arc<Self>, list: &[String]) {
        if self
            .endpoints
            .replace(list, &self.own_join_endpoint())
            .is_none()
        {
            return;
        }
        let ctx = self.clone();
        let persist = move || {
            // Whatever is current when the write runs, so racing updates end with the newest.
            let _serial = PERSIST_ENDPOINTS.lock().unwrap_or_else(|e| e.into_inner());
            let now = ctx.endpoints.learned();
            match ctx.disk.remember_join_endpoints(&now) {
                Ok(()) => {
                    tracing::info!(endpoints = ?now, "remembered the control-plane endpoints")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "remembering the control-plane endpoints failed")
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(persist)),
            Err(_) => persist(),
        }
    }

    /// Control planes: the WireGuard peers follow the member list (joins through any control
    /// plane, replicated lists, removals), so every member reaches every control plane through
    /// the mesh. A joiner gets the then-current members as peers in its ticket; without this
    /// the control planes would never learn the joiner's key and the tunnel would stay down.
    /// The other control planes' endpoints are remembered for this node's own rejoin.
    pub fn refresh_mesh(self: &Arc<Self>) {
        if self.info.role != crate::metadata::Role::ControlPlane {
            return;
        }
        let (plan, control_planes) = {
            let c = self.cluster.lock().unwrap_or_else(|e| e.into_inner());
            (
                mesh_for(&c, &self.info.name),
                self.endpoints.of_control_planes(&c, &self.info.name),
            )
        };
        self.learn_endpoints(&control_planes);
        if let Some((own, peers)) = plan
            && let Err(e) = init::apply_network(self, peers, &own)
        {
            tracing::warn!(error = %e, "updating the WireGuard peers failed");
        }
    }

    /// Persists the cluster state (control planes) on the state disk.
    pub fn persist_cluster(&self) {
        let dir = self
            .state_dir
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(dir) = dir {
            // Control planes authenticate the file with a key derived from the master secret,
            // so recovery can tell it from one written by whoever controls the disk; until the
            // node holds the secret there is nothing to write that recovery would accept.
            let key = self
                .secrets
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .and_then(|s| s.master.as_ref())
                .and_then(|m| crate::state::StateMacKey::derive(m).ok());
            if key.is_none() && self.info.role == crate::metadata::Role::ControlPlane {
                tracing::debug!("cluster state not persisted yet: no master secret held");
                return;
            }
            let snapshot = self
                .cluster
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Err(e) = crate::state::save_cluster_state(&dir, &snapshot, key.as_ref()) {
                tracing::warn!(error = %e, "persisting the cluster state failed");
            }
        }
    }

    /// Replaces the validators from an attestation config.
    pub fn apply_attestation_config(&self, json: &str) -> Result<(), Status> {
        let v = (self.parse_config)(json)
            .map_err(|e| Status::invalid_argument(format!("attestation config rejected: {e}")))?;
        if v.is_empty() {
            return Err(Status::invalid_argument(
                "attestation config yields no validator",
            ));
        }
        self.validators.replace(v);
        self.cluster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .attestation_config_json = json.into();
        Ok(())
    }
}

/// The attested peer's verified claims, set by the aTLS layer.
pub fn peer_claims<T>(req: &tonic::Request<T>) -> Option<VerifiedClaims> {
    if let Some(info) = req
        .extensions()
        .get::<constellation_attest::atls::AtlsConnectInfo>()
    {
        return info.peer_claims.as_deref().cloned();
    }
    // In-process callers (tests, benchmarks) insert the claims directly.
    req.extensions().get::<VerifiedClaims>().cloned()
}

/// What an attested peer's cluster-ID register (PCR 15; RTMR3 on qemu-tdx) shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterRegister {
    /// Reset value (all zero): the node has not joined any cluster since it booted.
    Reset,
    /// Extended once with this cluster's ID: a member of this cluster.
    ThisCluster,
    /// Anything else: locked to another cluster, or extended otherwise.
    Other,
    /// The evidence does not carry the register.
    Missing,
}

impl ClusterRegister {
    /// Reads the register from verified claims and compares it with `cluster_id`.
    pub fn of(claims: &VerifiedClaims, cluster_id: &[u8; 32]) -> Self {
        let (index, member) =
            constellation_attest::measurements::cluster_id_measurement(claims.variant, cluster_id);
        match claims.measurements.get(&index) {
            None => Self::Missing,
            Some(v) if v.iter().all(|b| *b == 0) => Self::Reset,
            Some(v) if *v == member => Self::ThisCluster,
            Some(_) => Self::Other,
        }
    }

    /// How a refusal describes the register.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Reset => "is at its reset value (the node has not joined since it booted)",
            Self::ThisCluster => "holds this cluster's ID (the node is a member)",
            Self::Other => "holds another value (the node is locked to another cluster)",
            Self::Missing => "is missing from the evidence",
        }
    }
}

/// Short human-readable summary of claims (variant and the boot PCRs), for status output.
pub fn summarize(claims: &VerifiedClaims) -> String {
    let mut s = format!("variant={}", claims.variant);
    for idx in [4u32, 9, 11, 12, 15] {
        if let Some(v) = claims.measurements.get(&idx) {
            let h = hex::encode(v);
            s.push_str(&format!(" pcr[{idx}]={}", h.get(..16).unwrap_or(&h)));
        }
    }
    s
}

/// Runs blocking work (TPM, disk) off the async executor.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("background task failed: {e}")))
}

/// This member's mesh address and its WireGuard peers (every other member with a key), or
/// None when `own` is not a member with a mesh address.
pub fn mesh_for(
    cluster: &ClusterState,
    own: &str,
) -> Option<(String, Vec<crate::netcrypt::PeerConfig>)> {
    let address = cluster
        .members
        .get(own)
        .map(|m| m.wireguard_address.clone())
        .filter(|a| !a.is_empty())?;
    let peers = cluster
        .members
        .iter()
        .filter(|(name, _)| name.as_str() != own)
        .filter_map(|(_, m)| {
            let key: [u8; 32] = hex::decode(&m.wireguard_public_key).ok()?.try_into().ok()?;
            Some(crate::netcrypt::PeerConfig {
                public_key: crate::netcrypt::WgPublicKey(key),
                endpoint: format!("{}:51820", m.private_ip).parse().ok(),
                allowed_ips: m
                    .wireguard_address
                    .replace("/16", "/32")
                    .parse()
                    .ok()
                    .into_iter()
                    .collect(),
                persistent_keepalive: None,
            })
        })
        .collect();
    Some((address, peers))
}

/// The node's WireGuard mesh address: 10.99.x.y/16 from the last two octets of its IPv4
/// private address (so control planes need not coordinate allocations).
pub fn mesh_address(private_ip: &str) -> String {
    match private_ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            let o = v4.octets();
            format!("10.99.{}.{}/16", o[2], o[3])
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Role;
    use crate::state::Member;

    fn member(ip: &str, key: u8) -> Member {
        Member {
            role: Role::Worker,
            image_version: "v".into(),
            attestation_summary: String::new(),
            joined_at: String::new(),
            private_ip: ip.into(),
            disk_uuid: String::new(),
            wireguard_public_key: if key == 0 {
                String::new()
            } else {
                hex::encode([key; 32])
            },
            wireguard_address: mesh_address(ip),
        }
    }

    #[test]
    fn control_plane_mesh_follows_every_member() {
        let mut c = ClusterState::default();
        c.members.insert("cp-0".into(), member("10.42.0.10", 1));
        c.members.insert("w-0".into(), member("10.42.0.100", 2));
        c.members.insert("w-1".into(), member("10.42.0.101", 3));
        c.members.insert("w-nokey".into(), member("10.42.0.102", 0));
        let (own, peers) = mesh_for(&c, "cp-0").unwrap();
        assert_eq!(own, "10.99.0.10/16");
        // Every other member with a key, routed by its /32 mesh address, at its private IP.
        let mut got: Vec<(String, String)> = peers
            .iter()
            .map(|p| {
                (
                    p.endpoint.unwrap().to_string(),
                    format!("{}/{}", p.allowed_ips[0].addr, p.allowed_ips[0].prefix),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                (
                    "10.42.0.100:51820".to_string(),
                    "10.99.0.100/32".to_string()
                ),
                (
                    "10.42.0.101:51820".to_string(),
                    "10.99.0.101/32".to_string()
                ),
            ]
        );
        assert_eq!(peers[0].public_key.0, [2; 32]);
        // A name that is not a member gets nothing (no interface to configure).
        assert!(mesh_for(&c, "stranger").is_none());
    }
}
