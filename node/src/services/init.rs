//! InitService: initialises a new cluster on the first control plane.

use std::pin::Pin;
use std::sync::Arc;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use constellation_node_api::v1::init_response::Kind;
use constellation_node_api::v1::init_service_server::InitService;
use constellation_node_api::v1::{InitFailure, InitRequest, InitResponse, InitSuccess};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::{NodeContext, Phase, blocking};
use crate::ca::ClusterCa;
use crate::disk::DiskKey;
use crate::keys::{self, MasterSecret, Secret};
use crate::metadata::Role;
use crate::state::{ClusterSecrets, NodeState};

use super::kubernetes::{self, ClusterSettings, InitOutput, Kubeadm, NodeSpec, STATUS_RUNNING};

/// Kubernetes status when the image carries no kubeadm.
pub const KUBERNETES_NOT_INSTALLED: &str = "not installed";

/// Checks `secret` against an argon2 PHC hash (constant-time comparison inside `argon2`).
pub fn check_init_secret(phc: &str, secret: &[u8]) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(secret, &h).is_ok(),
        Err(_) => false,
    }
}

/// Hashes an init secret as argon2id PHC string (for hosts that write the metadata).
pub fn hash_init_secret(secret: &[u8]) -> Result<String, argon2::password_hash::Error> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default().hash_password(secret, &salt)?.to_string())
}

/// Zeroizes the secret fields of a request when dropped.
struct Wiped<T: WipeSecrets>(T);

/// Messages carrying secrets.
pub(crate) trait WipeSecrets {
    fn wipe(&mut self);
}

impl<T: WipeSecrets> Drop for Wiped<T> {
    fn drop(&mut self) {
        self.0.wipe();
    }
}

impl WipeSecrets for InitRequest {
    fn wipe(&mut self) {
        use zeroize::Zeroize;
        self.master_secret.zeroize();
        self.master_salt.zeroize();
        self.init_secret.zeroize();
    }
}

impl WipeSecrets for constellation_node_api::v1::RecoverRequest {
    fn wipe(&mut self) {
        use zeroize::Zeroize;
        self.master_secret.zeroize();
        self.master_salt.zeroize();
    }
}

impl WipeSecrets for constellation_node_api::v1::IssueJoinTicketResponse {
    fn wipe(&mut self) {
        use zeroize::Zeroize;
        if let Some(k) = self.kubernetes.as_mut() {
            k.token.zeroize();
            k.certificate_key.zeroize();
        }
        self.state_disk_key.zeroize();
        self.measurement_secret.zeroize();
        if let Some(cp) = self.control_plane.as_mut() {
            cp.master_secret.zeroize();
            cp.master_salt.zeroize();
        }
    }
}

impl WipeSecrets for constellation_node_api::v1::IssueRejoinTicketResponse {
    fn wipe(&mut self) {
        use zeroize::Zeroize;
        self.state_disk_key.zeroize();
        self.measurement_secret.zeroize();
        if let Some(cp) = self.control_plane.as_mut() {
            cp.master_secret.zeroize();
            cp.master_salt.zeroize();
        }
    }
}

/// Wraps a message so that its secrets are zeroized on drop.
pub(crate) fn wiped<T: WipeSecrets>(msg: T) -> impl std::ops::Deref<Target = T> {
    WipedRef(Wiped(msg))
}

struct WipedRef<T: WipeSecrets>(Wiped<T>);

impl<T: WipeSecrets> std::ops::Deref for WipedRef<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0.0
    }
}

/// Init-secret checks that run at the same time. Each is an Argon2 run with the memory cost
/// of the metadata's hash (the provider's default is 19 MiB), so this bounds what concurrent
/// unauthenticated Init calls can allocate before the secret is known to be right.
pub const MAX_CONCURRENT_SECRET_CHECKS: usize = 2;

/// How long an Init call waits for a free check slot before it is refused with
/// `RESOURCE_EXHAUSTED`.
pub const SECRET_CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The InitService implementation.
#[derive(Debug, Clone)]
pub struct InitServer {
    ctx: Arc<NodeContext>,
    checks: Arc<tokio::sync::Semaphore>,
    running: Arc<std::sync::atomic::AtomicUsize>,
    peak: Arc<std::sync::atomic::AtomicUsize>,
}

impl InitServer {
    /// Serves Init for this node.
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        Self {
            ctx,
            checks: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_SECRET_CHECKS)),
            running: Arc::default(),
            peak: Arc::default(),
        }
    }

    /// The most init-secret checks that ever ran at the same time on this server.
    pub fn peak_concurrent_checks(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Checks `secret` against `hash` in one of the bounded check slots.
    async fn check_secret(&self, hash: String, secret: Zeroizing<Vec<u8>>) -> Result<bool, Status> {
        use std::sync::atomic::Ordering;
        let permit = tokio::time::timeout(SECRET_CHECK_WAIT, self.checks.clone().acquire_owned())
            .await
            .map_err(|_| {
                Status::resource_exhausted(
                    "too many Init calls are being checked; try again shortly",
                )
            })?
            .map_err(|_| Status::unavailable("the Init service is shutting down"))?;
        let (running, peak) = (self.running.clone(), self.peak.clone());
        blocking(move || {
            let _permit = permit;
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let ok = check_init_secret(&hash, &secret);
            running.fetch_sub(1, Ordering::SeqCst);
            ok
        })
        .await
    }
}

type InitStream = Pin<Box<dyn Stream<Item = Result<InitResponse, Status>> + Send>>;

fn line(s: impl Into<String>) -> Result<InitResponse, Status> {
    Ok(InitResponse {
        kind: Some(Kind::LogLine(s.into())),
    })
}

/// Validated Init input, secrets zeroizing.
struct InitInput {
    master: MasterSecret,
    measurement_salt: Vec<u8>,
    cluster_name: String,
    attestation_config_json: String,
    kubernetes: ClusterSettings,
}

fn validate(req: &InitRequest, private_ip: std::net::IpAddr) -> Result<InitInput, Status> {
    let master = MasterSecret::new(&req.master_secret, &req.master_salt)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if req.measurement_salt.is_empty() || req.measurement_salt.len() > keys::MAX_SECRET_LEN {
        return Err(Status::invalid_argument(format!(
            "measurement_salt must be 1..={} bytes, got {}",
            keys::MAX_SECRET_LEN,
            req.measurement_salt.len()
        )));
    }
    if req.cluster_name.is_empty()
        || req.cluster_name.len() > 63
        || !req
            .cluster_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(Status::invalid_argument(
            "cluster_name must be 1..=63 characters of [A-Za-z0-9-]",
        ));
    }
    let kubernetes = ClusterSettings::new(
        &req.kubernetes_version,
        &req.cluster_name,
        &req.pod_cidr,
        &req.service_cidr,
        &req.control_plane_endpoint,
        &req.api_server_cert_sans,
        private_ip,
    )
    .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(InitInput {
        master,
        measurement_salt: req.measurement_salt.clone(),
        cluster_name: req.cluster_name.clone(),
        attestation_config_json: req.attestation_config_json.clone(),
        kubernetes,
    })
}

#[tonic::async_trait]
impl InitService for InitServer {
    type InitStream = InitStream;

    async fn init(&self, request: Request<InitRequest>) -> Result<Response<InitStream>, Status> {
        let ctx = self.ctx.clone();
        // The request's secret buffers are wiped when the handler returns.
        let req = Wiped(request.into_inner());
        let req = &req.0;
        if ctx.info.role != Role::ControlPlane {
            return Err(Status::failed_precondition(
                "Init is only accepted by control planes",
            ));
        }
        if ctx.phase() != Phase::Fresh {
            return Err(Status::failed_precondition(
                "this node is already part of a cluster; Init can run only once",
            ));
        }
        let Some(hash) = ctx.info.init_secret_hash.clone() else {
            return Err(Status::failed_precondition(
                "no init-secret-hash in this node's metadata: it is not the node to initialise",
            ));
        };
        let secret = Zeroizing::new(req.init_secret.clone());
        if !self.check_secret(hash, secret).await? {
            tracing::warn!("Init refused: the init secret does not match the metadata hash");
            return Err(Status::permission_denied("init secret does not match"));
        }
        let input = validate(req, ctx.info.private_ip)?;
        if !input.attestation_config_json.is_empty() {
            // Parse before changing anything so a bad config leaves the node untouched.
            (ctx.parse_config)(&input.attestation_config_json).map_err(|e| {
                Status::invalid_argument(format!("attestation config rejected: {e}"))
            })?;
        }
        // The first to take the bootstrap lock wins against a concurrent join.
        let guard = ctx.bootstrap_lock.clone().try_lock_owned().map_err(|_| {
            Status::failed_precondition("this node is already being initialised or joined")
        })?;
        if ctx.phase() != Phase::Fresh {
            return Err(Status::failed_precondition(
                "this node is already part of a cluster; Init can run only once",
            ));
        }
        let (tx, rx) = mpsc::channel(32);
        tokio::spawn(async move {
            let _guard = guard;
            let result = run_init(&ctx, input, &tx).await;
            let last = match result {
                Ok(success) => InitResponse {
                    kind: Some(Kind::Success(success)),
                },
                Err(e) => {
                    tracing::error!(error = %e, "Init failed");
                    InitResponse {
                        kind: Some(Kind::Failure(InitFailure {
                            error: e,
                            log_lines: ctx.logs.recent(50),
                        })),
                    }
                }
            };
            let _ = tx.send(Ok(last)).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn progress(tx: &mpsc::Sender<Result<InitResponse, Status>>, msg: &str) {
    tracing::info!("init: {msg}");
    // A disconnected client does not stop the initialisation once begun.
    let _ = tx.send(line(msg)).await;
}

async fn run_init(
    ctx: &Arc<NodeContext>,
    input: InitInput,
    tx: &mpsc::Sender<Result<InitResponse, Status>>,
) -> Result<InitSuccess, String> {
    progress(tx, "deriving the measurement secret and cluster ID").await;
    let measurement_secret = input
        .master
        .measurement_secret()
        .map_err(|e| e.to_string())?;
    let cluster_id = keys::cluster_id(measurement_secret.expose(), &input.measurement_salt)
        .map_err(|e| e.to_string())?;
    let secrets = ClusterSecrets {
        master: Some(input.master.clone()),
        measurement_secret,
        measurement_salt: input.measurement_salt.clone(),
        cluster_id,
        cluster_name: input.cluster_name.clone(),
    };
    let disk = ctx.disk.clone();
    let uuid = blocking(move || disk.uuid())
        .await
        .map_err(|e| e.message().to_string())?
        .map_err(|e| e.to_string())?;
    let disk_key = input.master.disk_key(&uuid).map_err(|e| e.to_string())?;
    progress(tx, "locking the node: extending PCR 15 with the cluster ID").await;
    lock_node(ctx, &cluster_id).await?;
    progress(tx, "re-keying the state disk with its derived key").await;
    let state = NodeState {
        role: Role::ControlPlane,
        name: ctx.info.name.clone(),
        cluster_id: hex::encode(cluster_id),
        cluster_name: input.cluster_name.clone(),
        measurement_salt: hex::encode(&input.measurement_salt),
        joined_at: crate::state::now_rfc3339(),
    };
    setup_disk(ctx, &disk_key, true, &state).await?;
    let config = if input.attestation_config_json.is_empty() {
        String::new()
    } else {
        input.attestation_config_json.clone()
    };
    if !config.is_empty() {
        ctx.apply_attestation_config(&config)
            .map_err(|s| s.message().to_string())?;
    }
    progress(tx, "issuing the owner credential from the cluster CA").await;
    let master = input.master.clone();
    let (ca_pem, owner) = blocking(move || -> Result<_, String> {
        let ca = ClusterCa::derive(&master).map_err(|e| e.to_string())?;
        let owner = ca.issue_owner().map_err(|e| e.to_string())?;
        Ok((ca.cert_pem().to_string(), owner))
    })
    .await
    .map_err(|e| e.message().to_string())??;
    let (kubernetes_status, kubeconfig) = match Kubeadm::find() {
        None => (
            KUBERNETES_NOT_INSTALLED.to_string(),
            Zeroizing::new(Vec::new()),
        ),
        Some(kubeadm) => {
            progress(tx, "kubernetes: running kubeadm init").await;
            let out = kubeadm_init(ctx, &kubeadm, &input.kubernetes, tx).await?;
            (STATUS_RUNNING.to_string(), out.kubeconfig)
        }
    };
    progress(tx, &format!("kubernetes: {kubernetes_status}")).await;
    {
        let mut c = ctx.cluster.lock().unwrap_or_else(|e| e.into_inner());
        c.kubernetes_status = kubernetes_status.clone();
        if kubernetes_status == STATUS_RUNNING {
            c.kubernetes = Some(input.kubernetes.clone());
        }
        c.members.insert(
            ctx.info.name.clone(),
            crate::state::Member {
                role: Role::ControlPlane,
                image_version: ctx.image_version.clone(),
                attestation_summary: format!("self ({})", ctx.issuer.variant()),
                joined_at: state.joined_at.clone(),
                private_ip: ctx.info.private_ip.to_string(),
                disk_uuid: uuid.clone(),
                wireguard_public_key: hex::encode(ctx.net.public_key().0),
                wireguard_address: super::mesh_address(&ctx.info.private_ip.to_string()),
            },
        );
    }
    ctx.persist_cluster();
    apply_network(
        ctx,
        Vec::new(),
        &super::mesh_address(&ctx.info.private_ip.to_string()),
    )?;
    *ctx.secrets.write().unwrap_or_else(|e| e.into_inner()) = Some(secrets);
    ctx.persist_cluster();
    ctx.metrics.bootstrapped.set(1);
    ctx.phase.send_replace(Phase::Bootstrapped);
    progress(
        tx,
        "cluster initialised; control-plane services are serving",
    )
    .await;
    Ok(InitSuccess {
        cluster_id: cluster_id.to_vec(),
        owner_certificate_pem: owner.cert_pem.clone(),
        owner_private_key_pem: owner.key_pem.to_string(),
        cluster_ca_pem: ca_pem,
        kubeconfig: kubeconfig.to_vec(),
        kubernetes_status,
    })
}

/// Runs `kubeadm init`, streaming its output (secrets cut out) as Init progress.
async fn kubeadm_init(
    ctx: &NodeContext,
    kubeadm: &Kubeadm,
    settings: &ClusterSettings,
    tx: &mpsc::Sender<Result<InitResponse, Status>>,
) -> Result<InitOutput, String> {
    let token = kubernetes::generate_token();
    let key = kubernetes::generate_certificate_key();
    let node = NodeSpec {
        name: ctx.info.name.clone(),
        private_ip: ctx.info.private_ip,
    };
    let config = Zeroizing::new(kubernetes::init_config(&node, settings, &token, &key));
    // kubeadm's lines arrive synchronously; a forwarder keeps the stream's back-pressure.
    let (line_tx, mut line_rx) = mpsc::unbounded_channel::<String>();
    let stream = tx.clone();
    let forward = tokio::spawn(async move {
        while let Some(l) = line_rx.recv().await {
            tracing::info!(target: "kubeadm", "{l}");
            let _ = stream.send(line(format!("kubeadm: {l}"))).await;
        }
    });
    let mut cb = move |l: String| {
        let _ = line_tx.send(l);
    };
    let result = kubeadm
        .init(&config, &[token.as_str(), key.as_str()], &mut cb)
        .await;
    drop(cb);
    let _ = forward.await;
    result.map_err(|e| format!("Kubernetes bring-up failed: {e}"))
}

/// Extends PCR 15 with the cluster ID, refusing when it is already extended.
pub async fn lock_node(ctx: &Arc<NodeContext>, cluster_id: &[u8; 32]) -> Result<(), String> {
    let lock = ctx.lock.clone();
    let id = *cluster_id;
    blocking(move || -> Result<(), String> {
        if !lock.is_unlocked().map_err(|e| e.to_string())? {
            return Err("PCR 15 is already extended: this node was bootstrapped before".into());
        }
        lock.extend(&id).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.message().to_string())?
}

/// Re-keys (fresh) or unlocks (rejoin) the state disk, mounts it and writes the node state.
pub async fn setup_disk(
    ctx: &Arc<NodeContext>,
    key: &Secret,
    fresh: bool,
    state: &NodeState,
) -> Result<(), String> {
    let disk = ctx.disk.clone();
    let key = DiskKey::from_slice(key.expose());
    let dir = blocking(move || -> Result<std::path::PathBuf, String> {
        if fresh {
            disk.rekey(&key).map_err(|e| e.to_string())?;
        } else {
            disk.unlock(&key).map_err(|e| e.to_string())?;
        }
        disk.mount().map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.message().to_string())??;
    crate::state::save(&dir, crate::state::NODE_STATE_FILE, state).map_err(|e| e.to_string())?;
    if let Ok(Some(c)) =
        crate::state::load::<crate::state::ClusterState>(&dir, crate::state::CLUSTER_STATE_FILE)
    {
        *ctx.cluster.lock().unwrap_or_else(|e| e.into_inner()) = c;
    }
    *ctx.state_dir.write().unwrap_or_else(|e| e.into_inner()) = Some(dir);
    ctx.metrics.disk_unlocked.set(1);
    Ok(())
}

/// Applies the WireGuard config for this node and `peers`.
pub fn apply_network(
    ctx: &NodeContext,
    peers: Vec<crate::netcrypt::PeerConfig>,
    address: &str,
) -> Result<(), String> {
    let Ok(address) = address.parse() else {
        tracing::warn!(
            address,
            "no usable mesh address; network encryption not configured"
        );
        return Ok(());
    };
    let cfg = crate::netcrypt::NetworkConfig {
        interface: "wg-cstl".into(),
        listen_port: 51820,
        address,
        peers,
    };
    let n = cfg.peers.len();
    ctx.net.apply(&cfg).map_err(|e| e.to_string())?;
    ctx.metrics
        .wireguard_peers
        .set(i64::try_from(n).unwrap_or(i64::MAX));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_secret_check() {
        let h = hash_init_secret(b"correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(check_init_secret(&h, b"correct horse"));
        assert!(!check_init_secret(&h, b"correct horsf"));
        assert!(!check_init_secret("not a hash", b"x"));
    }
}
