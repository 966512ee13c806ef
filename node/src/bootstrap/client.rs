//! The join client: fresh nodes ask for a join ticket, rebooted members for a rejoin ticket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use constellation_node_api::limits::MAX_MESSAGE_BYTES;
use constellation_node_api::v1::join_service_client::JoinServiceClient;
use constellation_node_api::v1::{
    ControlPlaneMaterial, IssueJoinTicketRequest, IssueRejoinTicketRequest, KubernetesJoin,
};

use super::Transport;
use crate::keys::{self, MasterSecret, Secret};
use crate::metadata::Role;
use crate::netcrypt::{IpCidr, PeerConfig, WgPublicKey};
use crate::services::init::{apply_network, lock_node, setup_disk};
use crate::services::{NodeContext, Phase, blocking};
use crate::state::{ClusterSecrets, NODE_STATE_FILE, NodeState};

async fn client(
    transport: &Arc<dyn Transport>,
    endpoint: &str,
) -> Result<JoinServiceClient<tonic::transport::Channel>, String> {
    let ch = within(
        transport,
        "connecting",
        transport.connect_attesting(endpoint.to_string()),
    )
    .await??;
    Ok(JoinServiceClient::new(ch)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Runs `call` under the transport's per-call deadline.
async fn within<T>(
    transport: &Arc<dyn Transport>,
    what: &str,
    call: impl std::future::Future<Output = T>,
) -> Result<T, String> {
    let deadline = transport.rpc_deadline();
    tokio::time::timeout(deadline, call)
        .await
        .map_err(|_| format!("{what}: no answer within {deadline:?}"))
}

fn endpoints(ctx: &NodeContext) -> Vec<String> {
    // Learned endpoints change while the node runs (polls, tickets); re-read each round.
    ctx.join_endpoints()
}

/// Tries every endpoint in turn until an attempt succeeds or the phase changes (Init or
/// recovery won). It never gives up: a node without a ticket has nothing else to do, and the
/// control planes may come back much later. After `deadline` it reports an error once and
/// then tries every 30 s.
async fn retry<F, Fut>(ctx: &Arc<NodeContext>, deadline: Duration, what: &str, mut attempt: F)
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    let mut backoff = Duration::from_millis(500);
    let mut last = String::from("no join endpoint in the metadata");
    let mut late = false;
    let wanted = ctx.phase();
    loop {
        for ep in endpoints(ctx) {
            if ctx.phase() != wanted {
                return;
            }
            match attempt(ep.clone()).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(endpoint = %ep, error = %e, "{what} attempt failed");
                    last = format!("{ep}: {e}");
                }
            }
        }
        if ctx.phase() != wanted {
            return;
        }
        if !late && start.elapsed() > deadline {
            late = true;
            tracing::error!(last = %last, "{what}: no ticket after {deadline:?}; still trying every 30 s");
        }
        tokio::time::sleep(if late {
            Duration::from_secs(30)
        } else {
            backoff
        })
        .await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The WireGuard peers of a ticket or GetPeers answer, validated: a peer is kept only with a
/// usable key (32 bytes, not all zero), a socket-address endpoint and exactly one allowed
/// IP, a /32 inside the mesh's /16 other than this node's own; a key or mesh address that
/// appears twice drops every peer that carries it. Nothing else is routed into the tunnel,
/// so an answer cannot capture traffic for addresses outside the mesh. Returns the peers
/// and how many were dropped.
pub fn peers_of(
    peers: &[constellation_node_api::v1::WireGuardPeer],
    own_address: &str,
) -> (Vec<PeerConfig>, usize) {
    let own: Option<IpCidr> = own_address.parse().ok();
    let mesh = own.filter(|c| c.addr.is_ipv4() && c.prefix == 16);
    let in_mesh = |c: &IpCidr| match (c.addr, mesh.map(|m| m.addr)) {
        (std::net::IpAddr::V4(a), Some(std::net::IpAddr::V4(m))) => {
            c.prefix == 32
                && a.octets()[..2] == m.octets()[..2]
                && own.map(|o| o.addr) != Some(c.addr)
        }
        _ => false,
    };
    let candidates: Vec<PeerConfig> = peers
        .iter()
        .filter_map(|p| {
            let key: [u8; 32] = p.public_key.as_slice().try_into().ok()?;
            if key == [0u8; 32] {
                return None;
            }
            let endpoint: std::net::SocketAddr = p.endpoint.parse().ok()?;
            let [ip] = p.allowed_ips.as_slice() else {
                return None;
            };
            let ip: IpCidr = ip.parse().ok()?;
            in_mesh(&ip).then_some(PeerConfig {
                public_key: WgPublicKey(key),
                endpoint: Some(endpoint),
                allowed_ips: vec![ip],
                persistent_keepalive: None,
            })
        })
        .collect();
    let unique = |p: &PeerConfig| {
        candidates
            .iter()
            .filter(|q| q.public_key.0 == p.public_key.0 || q.allowed_ips == p.allowed_ips)
            .count()
            == 1
    };
    let kept: Vec<PeerConfig> = candidates.iter().filter(|p| unique(p)).cloned().collect();
    let dropped = peers.len() - kept.len();
    (kept, dropped)
}

/// Asks the control plane at `ep` for this member's WireGuard peers and checks the answer:
/// its authenticator must verify under this node's peers key (so only a control plane can
/// have produced it, for this request), and the peers must be well-formed ([`peers_of`]).
/// Returns the peers to apply and the control-plane endpoints the answer lists.
pub async fn fetch_peers(
    ctx: &Arc<NodeContext>,
    transport: &Arc<dyn Transport>,
    ep: &str,
) -> Result<(Vec<PeerConfig>, Vec<String>), String> {
    let key = ctx
        .peers_key
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or("this node has no peers key (it has not joined)")?;
    let own = crate::services::mesh_address(&ctx.info.private_ip.to_string());
    let nonce: [u8; 32] = rand::random();
    let mut c = client(transport, ep).await?;
    let resp = within(
        transport,
        "GetPeers",
        c.get_peers(constellation_node_api::v1::GetPeersRequest {
            node_name: ctx.info.name.clone(),
            nonce: nonce.to_vec(),
        }),
    )
    .await?
    .map(tonic::Response::into_inner)
    .map_err(|s| format!("GetPeers ({:?}): {}", s.code(), s.message()))?;
    let answer = crate::services::join::peers_answer_bytes(
        &ctx.info.name,
        &resp.peers,
        &resp.control_plane_endpoints,
    );
    let want = keys::peers_authenticator(&key, &nonce, &answer).map_err(|e| e.to_string())?;
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        want.expose(),
        resp.authenticator.as_slice(),
    )) {
        return Err(
            "the GetPeers answer is not authenticated by a control plane of this cluster; ignored"
                .into(),
        );
    }
    let (peers, dropped) = peers_of(&resp.peers, &own);
    if dropped > 0 {
        tracing::warn!(endpoint = %ep, dropped, "GetPeers answer carried invalid WireGuard peers; they were ignored");
    }
    // A worker always has the control planes as peers: an empty answer is not a reason to
    // tear the mesh down.
    if peers.is_empty() {
        return Err("the GetPeers answer lists no valid WireGuard peer".into());
    }
    Ok((peers, resp.control_plane_endpoints))
}

/// Workers: every `every`, asks a control plane (aTLS, this node attests) for the current
/// peers and applies them, so members that joined after this node become WireGuard peers
/// (control planes keep theirs in step with the member list themselves). Runs until the node
/// stops; failures are logged and retried at the next round.
pub async fn peer_refresh_loop(
    ctx: Arc<NodeContext>,
    transport: Arc<dyn Transport>,
    every: Duration,
) {
    let own = crate::services::mesh_address(&ctx.info.private_ip.to_string());
    // The first poll runs at once: after a reboot (rejoin) the kernel has no peers at all.
    let mut first = true;
    loop {
        if !first {
            tokio::time::sleep(every).await;
        }
        first = false;
        let mut last = String::from("no join endpoint in the metadata");
        let mut done = false;
        for ep in endpoints(&ctx) {
            match fetch_peers(&ctx, &transport, &ep).await {
                Ok((peers, endpoints)) => {
                    ctx.learn_endpoints(&endpoints);
                    if let Err(e) = apply_network(&ctx, peers, &own) {
                        tracing::warn!(error = %e, "applying the WireGuard peers failed");
                    }
                    done = true;
                    break;
                }
                Err(e) => last = format!("{ep}: {e}"),
            }
        }
        if !done {
            tracing::warn!(error = %last, "refreshing the WireGuard peers failed; retrying later");
        }
    }
}

/// Fresh node: asks the join endpoints for a ticket until it gets one or Init wins.
pub async fn join_loop(ctx: Arc<NodeContext>, transport: Arc<dyn Transport>, deadline: Duration) {
    retry(&ctx, deadline, "join", |ep| {
        let ctx = ctx.clone();
        let transport = transport.clone();
        async move { try_join(&ctx, &transport, &ep).await }
    })
    .await
}

async fn try_join(
    ctx: &Arc<NodeContext>,
    transport: &Arc<dyn Transport>,
    ep: &str,
) -> Result<(), String> {
    let disk = ctx.disk.clone();
    let uuid = blocking(move || disk.uuid())
        .await
        .map_err(|e| e.message().to_string())?
        .map_err(|e| e.to_string())?;
    let mut c = client(transport, ep).await?;
    let req = IssueJoinTicketRequest {
        node_name: ctx.info.name.clone(),
        disk_uuid: uuid,
        is_control_plane: ctx.info.role == Role::ControlPlane,
        wireguard_public_key: ctx.net.public_key().0.to_vec(),
        private_ip: ctx.info.private_ip.to_string(),
        image_version: ctx.image_version.clone(),
    };
    let ticket = crate::services::init::wiped(
        within(transport, "IssueJoinTicket", c.issue_join_ticket(req))
            .await?
            .map_err(|s| format!("join refused ({:?}): {}", s.code(), s.message()))?
            .into_inner(),
    );
    let _guard = ctx.bootstrap_lock.lock().await;
    if ctx.phase() != Phase::Fresh {
        tracing::info!("ticket received after this node was initialised; discarding it");
        return Ok(());
    }
    let ms = Secret::from_slice(&ticket.measurement_secret);
    let cluster_id =
        keys::cluster_id(ms.expose(), &ticket.measurement_salt).map_err(|e| e.to_string())?;
    if ticket.cluster_id != cluster_id {
        return Err("ticket's cluster ID does not match its measurement secret and salt".into());
    }
    let master = match &ticket.control_plane {
        Some(cp) => {
            Some(MasterSecret::new(&cp.master_secret, &cp.master_salt).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    if ctx.info.role == Role::ControlPlane && master.is_none() {
        return Err("control-plane ticket lacks the control-plane material".into());
    }
    lock_node(ctx, &cluster_id).await?;
    let state = NodeState {
        role: ctx.info.role,
        name: ctx.info.name.clone(),
        cluster_id: hex::encode(cluster_id),
        cluster_name: ticket.cluster_name.clone(),
        measurement_salt: hex::encode(&ticket.measurement_salt),
        joined_at: crate::state::now_rfc3339(),
    };
    let key = Secret::from_slice(&ticket.state_disk_key);
    let peers_key = keys::peers_key(&key).map_err(|e| e.to_string())?;
    setup_disk(ctx, &key, true, &state).await?;
    *ctx.peers_key.write().unwrap_or_else(|e| e.into_inner()) = Some(peers_key);
    ctx.learn_endpoints(&ticket.control_plane_endpoints);
    let (peers, dropped) = peers_of(&ticket.peers, &ticket.wireguard_address);
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "the join ticket carried invalid WireGuard peers; they were ignored"
        );
    }
    apply_network(ctx, peers, &ticket.wireguard_address)?;
    if let Some(cp) = &ticket.control_plane
        && !cp.attestation_config_json.is_empty()
    {
        ctx.apply_attestation_config(&cp.attestation_config_json)
            .map_err(|s| s.message().to_string())?;
    }
    if let Some(cp) = &ticket.control_plane {
        adopt_cluster_view(ctx, cp);
    }
    *ctx.secrets.write().unwrap_or_else(|e| e.into_inner()) = Some(ClusterSecrets {
        master,
        measurement_secret: ms,
        measurement_salt: ticket.measurement_salt.clone(),
        cluster_id,
        cluster_name: ticket.cluster_name.clone(),
    });
    ctx.persist_cluster();
    ctx.metrics.bootstrapped.set(1);
    ctx.phase.send_replace(Phase::Bootstrapped);
    tracing::info!(endpoint = %ep, cluster_id = %hex::encode(cluster_id), "joined the cluster");
    if let Some(k) = &ticket.kubernetes {
        kubeadm_join(ctx, k).await;
    }
    Ok(())
}

/// A control-plane joiner starts from the issuing control plane's view: member list,
/// Kubernetes settings and status. Invalid parts are logged and skipped (replication fills
/// the member list later).
fn adopt_cluster_view(ctx: &Arc<NodeContext>, cp: &ControlPlaneMaterial) {
    if let Some(list) = &cp.members
        && let Err(e) = crate::services::members::merge_into(ctx, list, "join ticket")
    {
        tracing::warn!(error = %e.message(), "the ticket's member list was rejected");
    }
    let mut c = ctx.cluster.lock().unwrap_or_else(|e| e.into_inner());
    c.kubernetes_status = cp.kubernetes_status.clone();
    if let Some(k) = &cp.kubernetes_settings {
        match crate::services::members::settings_from_proto(k, ctx.info.private_ip) {
            Ok(s) => c.kubernetes = Some(s),
            Err(e) => tracing::warn!(error = %e, "the ticket's Kubernetes settings were rejected"),
        }
    }
    drop(c);
    ctx.persist_cluster();
}

/// Joins Kubernetes with the ticket's material. The node has joined the Constellation
/// cluster already (PCR 15 is extended), so a failure is logged with kubeadm's output and
/// recorded in the status, not retried as a new join.
async fn kubeadm_join(ctx: &Arc<NodeContext>, k: &KubernetesJoin) {
    use crate::services::kubernetes::{self, JoinMaterial, Kubeadm, NodeSpec};
    let status = match Kubeadm::find() {
        None => {
            tracing::error!(
                "the ticket carries Kubernetes join material but this image has no kubeadm; the node is not a Kubernetes node"
            );
            crate::services::init::KUBERNETES_NOT_INSTALLED.to_string()
        }
        Some(kubeadm) => {
            let m = JoinMaterial {
                api_server_endpoint: k.api_server_endpoint.clone(),
                token: zeroize::Zeroizing::new(k.token.clone()),
                ca_cert_hash: k.discovery_token_ca_cert_hash.clone(),
                certificate_key: zeroize::Zeroizing::new(k.certificate_key.clone()),
            };
            let node = NodeSpec {
                name: ctx.info.name.clone(),
                private_ip: ctx.info.private_ip,
            };
            let config = zeroize::Zeroizing::new(kubernetes::join_config(&node, &m));
            let mut log = |l: String| tracing::info!(target: "kubeadm", "{l}");
            tracing::info!(
                control_plane = !m.certificate_key.is_empty(),
                "kubernetes: running kubeadm join"
            );
            match kubeadm
                .join(
                    &config,
                    &[m.token.as_str(), m.certificate_key.as_str()],
                    &mut log,
                )
                .await
            {
                Ok(()) => {
                    tracing::info!("kubernetes: joined");
                    kubernetes::STATUS_RUNNING.to_string()
                }
                Err(e) => {
                    tracing::error!(error = %e, "kubernetes: kubeadm join failed");
                    format!("kubeadm join failed: {e}")
                }
            }
        }
    };
    ctx.cluster
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .kubernetes_status = status;
    ctx.persist_cluster();
}

/// The node state on the unlocked disk, if it records `cluster_id` (the cluster this node
/// joined); an error naming both IDs otherwise.
fn check_recorded_cluster(
    dir: &std::path::Path,
    cluster_id: &[u8; 32],
) -> Result<NodeState, String> {
    let state: NodeState = crate::state::load(dir, NODE_STATE_FILE)
        .map_err(|e| e.to_string())?
        .ok_or("the unlocked state disk holds no node state")?;
    if !state
        .cluster_id
        .eq_ignore_ascii_case(&hex::encode(cluster_id))
    {
        return Err(format!(
            "the rejoin ticket is for cluster {} but this node's state disk records cluster {}; ticket discarded",
            hex::encode(cluster_id),
            state.cluster_id
        ));
    }
    Ok(state)
}

/// Rebooted member: asks for a rejoin ticket until it gets one or recovery happens.
pub async fn rejoin_loop(ctx: Arc<NodeContext>, transport: Arc<dyn Transport>, deadline: Duration) {
    retry(&ctx, deadline, "rejoin", |ep| {
        let ctx = ctx.clone();
        let transport = transport.clone();
        async move { try_rejoin(&ctx, &transport, &ep).await }
    })
    .await
}

async fn try_rejoin(
    ctx: &Arc<NodeContext>,
    transport: &Arc<dyn Transport>,
    ep: &str,
) -> Result<(), String> {
    let disk = ctx.disk.clone();
    let uuid = blocking(move || disk.uuid())
        .await
        .map_err(|e| e.message().to_string())?
        .map_err(|e| e.to_string())?;
    let mut c = client(transport, ep).await?;
    let ticket = crate::services::init::wiped(
        within(
            transport,
            "IssueRejoinTicket",
            c.issue_rejoin_ticket(IssueRejoinTicketRequest {
                node_name: ctx.info.name.clone(),
                disk_uuid: uuid,
                is_control_plane: ctx.info.role == Role::ControlPlane,
            }),
        )
        .await?
        .map_err(|s| format!("rejoin refused ({:?}): {}", s.code(), s.message()))?
        .into_inner(),
    );
    let _guard = ctx.bootstrap_lock.lock().await;
    if ctx.phase() != Phase::AwaitingRejoin {
        return Ok(());
    }
    let ms = Secret::from_slice(&ticket.measurement_secret);
    let cluster_id =
        keys::cluster_id(ms.expose(), &ticket.measurement_salt).map_err(|e| e.to_string())?;
    // A control plane's master secret must be the one behind the ticket's measurement secret.
    let master = match &ticket.control_plane {
        Some(cp) => {
            let m =
                MasterSecret::new(&cp.master_secret, &cp.master_salt).map_err(|e| e.to_string())?;
            let derived = m.measurement_secret().map_err(|e| e.to_string())?;
            if derived != ms {
                return Err("the rejoin ticket's master secret does not derive its measurement secret; ticket discarded".into());
            }
            Some(m)
        }
        None => None,
    };
    if ctx.info.role == Role::ControlPlane && master.is_none() {
        return Err("control-plane rejoin ticket lacks the control-plane material".into());
    }
    let lock = ctx.lock.clone();
    // Through is_unlocked/holds_cluster_id, so that every lock (PCR 15, TDX RTMR3) works.
    let (unlocked, ours) = blocking(move || {
        Ok::<_, crate::lock::LockError>((lock.is_unlocked()?, lock.holds_cluster_id(&cluster_id)?))
    })
    .await
    .map_err(|e| e.message().to_string())?
    .map_err(|e| e.to_string())?;
    if !unlocked && !ours {
        return Err("the cluster-ID register (PCR 15 / RTMR3) records another cluster than the rejoin ticket's".into());
    }
    // The ticket is proven before the node is locked to it: its disk key must open this
    // node's disk and its cluster ID must be the one the disk recorded at join. Whoever
    // answers at an endpoint is not authenticated, so an impostor's ticket (or another
    // cluster's) fails here and leaves the register untouched for the genuine one.
    let key = Secret::from_slice(&ticket.state_disk_key);
    let disk = ctx.disk.clone();
    let dk = crate::disk::DiskKey::from_slice(key.expose());
    let dir = blocking(move || -> Result<std::path::PathBuf, String> {
        disk.unlock(&dk).map_err(|e| e.to_string())?;
        disk.mount().map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.message().to_string())??;
    let state = match check_recorded_cluster(&dir, &cluster_id) {
        Ok(s) => s,
        Err(e) => {
            let disk = ctx.disk.clone();
            if let Ok(Err(c)) = blocking(move || disk.close()).await {
                tracing::warn!(error = %c, "closing the state disk again failed");
            }
            return Err(e);
        }
    };
    if unlocked {
        lock_node(ctx, &cluster_id).await?;
    }
    *ctx.peers_key.write().unwrap_or_else(|e| e.into_inner()) =
        Some(keys::peers_key(&key).map_err(|e| e.to_string())?);
    // Security configuration from the disk counts only when authenticated by the master secret.
    let mac_key = master
        .as_ref()
        .and_then(|m| crate::state::StateMacKey::derive(m).ok());
    if let Some(cs) = crate::state::load_cluster_state_for_rejoin(&dir, mac_key.as_ref()) {
        *ctx.cluster.lock().unwrap_or_else(|e| e.into_inner()) = cs;
    }
    *ctx.state_dir.write().unwrap_or_else(|e| e.into_inner()) = Some(dir);
    ctx.learn_endpoints(&ticket.control_plane_endpoints);
    if let Some(list) = ticket
        .control_plane
        .as_ref()
        .and_then(|cp| cp.members.as_ref())
    {
        // The stored list is as old as the reboot; the ticket's is current. The WireGuard
        // peers are gone with the reboot: set them up again from the merged list.
        if let Err(e) = crate::services::members::merge_into(ctx, list, "rejoin ticket") {
            tracing::warn!(error = %e.message(), "the rejoin ticket's member list was rejected");
        }
        ctx.refresh_mesh();
    }
    if let Some(cp) = &ticket.control_plane
        && !cp.attestation_config_json.is_empty()
    {
        ctx.apply_attestation_config(&cp.attestation_config_json)
            .map_err(|s| s.message().to_string())?;
    }
    *ctx.secrets.write().unwrap_or_else(|e| e.into_inner()) = Some(ClusterSecrets {
        master,
        measurement_secret: ms,
        measurement_salt: ticket.measurement_salt.clone(),
        cluster_id,
        cluster_name: state.cluster_name,
    });
    ctx.persist_cluster();
    ctx.metrics.disk_unlocked.set(1);
    ctx.metrics.bootstrapped.set(1);
    ctx.phase.send_replace(Phase::Bootstrapped);
    tracing::info!(endpoint = %ep, "rejoined the cluster; state disk unlocked");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use constellation_node_api::v1::WireGuardPeer;

    fn peer(key: u8, endpoint: &str, ips: &[&str]) -> WireGuardPeer {
        WireGuardPeer {
            node_name: "n".into(),
            public_key: vec![key; 32],
            endpoint: endpoint.into(),
            allowed_ips: ips.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn peers_are_validated() {
        let own = "10.99.0.100/16";
        let good = peer(1, "10.42.0.10:51820", &["10.99.0.10/32"]);
        let (kept, dropped) = peers_of(std::slice::from_ref(&good), own);
        assert_eq!((kept.len(), dropped), (1, 0));
        let mut short = peer(2, "10.42.0.11:51820", &["10.99.0.11/32"]);
        short.public_key.truncate(31);
        for bad in [
            short,
            peer(0, "10.42.0.11:51820", &["10.99.0.11/32"]), // all-zero key
            peer(3, "nowhere", &["10.99.0.11/32"]),
            peer(4, "10.42.0.11:51820", &["0.0.0.0/0"]), // would capture all traffic
            peer(5, "10.42.0.11:51820", &["10.99.0.0/16"]),
            peer(6, "10.42.0.11:51820", &["10.98.0.11/32"]), // outside the mesh
            peer(7, "10.42.0.11:51820", &["10.99.0.100/32"]), // this node's own address
            peer(8, "10.42.0.11:51820", &["10.99.0.11/32", "10.99.0.12/32"]),
            peer(9, "10.42.0.11:51820", &[]),
        ] {
            let (kept, dropped) = peers_of(&[good.clone(), bad.clone()], own);
            assert_eq!((kept.len(), dropped), (1, 1), "{bad:?}");
        }
        // A key or an address claimed twice: neither claimant is trusted.
        let twin_ip = peer(10, "10.42.0.12:51820", &["10.99.0.10/32"]);
        assert_eq!(peers_of(&[good.clone(), twin_ip], own).0.len(), 0);
        let twin_key = peer(1, "10.42.0.12:51820", &["10.99.0.12/32"]);
        assert_eq!(peers_of(&[good, twin_key], own).0.len(), 0);
        // Without a usable own mesh address nothing is accepted.
        assert!(
            peers_of(&[peer(1, "10.42.0.10:51820", &["10.99.0.10/32"])], "")
                .0
                .is_empty()
        );
    }
}
