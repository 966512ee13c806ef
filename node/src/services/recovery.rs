//! RecoveryService: a control plane that cannot rejoin (no other control plane is up) takes
//! the master secret over aTLS, derives its disk key, unlocks and continues booting.

use std::sync::Arc;

use constellation_node_api::v1::recovery_service_server::RecoveryService;
use constellation_node_api::v1::{RecoverRequest, RecoverResponse};
use tonic::{Request, Response, Status};

use super::{NodeContext, Phase, blocking};
use crate::disk::DiskKey;
use crate::keys::{self, MasterSecret};
use crate::state::{ClusterSecrets, NODE_STATE_FILE, NodeState, StateMacKey};

/// The RecoveryService implementation.
#[derive(Debug, Clone)]
pub struct RecoveryServer {
    ctx: Arc<NodeContext>,
}

impl RecoveryServer {
    /// Serves recovery for this node.
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        Self { ctx }
    }
}

#[tonic::async_trait]
impl RecoveryService for RecoveryServer {
    async fn recover(
        &self,
        request: Request<RecoverRequest>,
    ) -> Result<Response<RecoverResponse>, Status> {
        let req = super::init::wiped(request.into_inner());
        let ctx = self.ctx.clone();
        if ctx.phase() != Phase::AwaitingRejoin {
            return Err(Status::failed_precondition(
                "recovery is only possible while the node waits to rejoin after a reboot",
            ));
        }
        let master = MasterSecret::new(&req.master_secret, &req.master_salt)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // One attempt at a time, and no queue: each attempt costs an Argon2 key-slot check, so
        // queued bogus calls would delay a genuine one (and the node's own rejoin, which takes
        // the same lock) without bound. A caller that finds it busy retries.
        let Ok(_guard) = ctx.bootstrap_lock.try_lock() else {
            return Err(Status::unavailable(
                "busy: another recovery attempt or a rejoin is running on this node; try again shortly",
            ));
        };
        if ctx.phase() != Phase::AwaitingRejoin {
            return Err(Status::failed_precondition("the node rejoined meanwhile"));
        }
        let disk = ctx.disk.clone();
        let m2 = master.clone();
        let dir = blocking(move || -> Result<std::path::PathBuf, Status> {
            let uuid = disk.uuid().map_err(|e| Status::internal(e.to_string()))?;
            let key = m2
                .disk_key(&uuid)
                .map_err(|e| Status::internal(e.to_string()))?;
            disk.unlock(&DiskKey::from_slice(key.expose()))
                .map_err(|e| match e {
                    crate::disk::DiskError::WrongKey { .. } => Status::permission_denied(
                        "the master secret does not unlock this node's state disk",
                    ),
                    e @ crate::disk::DiskError::HeaderPolicy { .. } => {
                        Status::failed_precondition(e.to_string())
                    }
                    other => Status::internal(other.to_string()),
                })?;
            disk.mount().map_err(|e| Status::internal(e.to_string()))
        })
        .await??;
        let state: NodeState = crate::state::load(&dir, NODE_STATE_FILE)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::internal("the unlocked state disk holds no node state"))?;
        // The security configuration (attestation config, members, removals) is adopted only
        // when a control plane of this cluster wrote it: the file's MAC is keyed by the master
        // secret. Checked before the node is locked to the cluster or serves anything.
        let mac_key = StateMacKey::derive(&master).map_err(|e| Status::internal(e.to_string()))?;
        let stored =
            crate::state::load_cluster_state(&dir, Some(&mac_key)).map_err(|e| match e {
                e @ crate::state::StateError::Unauthenticated { .. } => {
                    Status::failed_precondition(format!("recovery refused: {e}"))
                }
                other => Status::internal(format!("recovery refused: {other}")),
            })?;
        let salt = hex::decode(&state.measurement_salt)
            .map_err(|_| Status::internal("stored measurement salt is not hex"))?;
        let ms = master
            .measurement_secret()
            .map_err(|e| Status::internal(e.to_string()))?;
        let cluster_id =
            keys::cluster_id(ms.expose(), &salt).map_err(|e| Status::internal(e.to_string()))?;
        let lock = ctx.lock.clone();
        let (unlocked, ours) = blocking(move || {
            Ok::<_, crate::lock::LockError>((
                lock.is_unlocked()?,
                lock.holds_cluster_id(&cluster_id)?,
            ))
        })
        .await?
        .map_err(|e| Status::internal(e.to_string()))?;
        if unlocked {
            // A real reboot (power cycle) resets PCR 15: the disk opened with this cluster's
            // key, so lock the node to it again, as a rejoin does.
            super::init::lock_node(&ctx, &cluster_id)
                .await
                .map_err(Status::internal)?;
        } else if !ours {
            return Err(Status::permission_denied(
                "the master secret belongs to another cluster than the cluster-ID register \
                 (PCR 15 / RTMR3) records",
            ));
        }
        if let Some(c) = stored {
            *ctx.cluster.lock().unwrap_or_else(|e| e.into_inner()) = c;
        }
        // The reboot cleared the kernel's WireGuard peers.
        ctx.refresh_mesh();
        let cfg = ctx
            .cluster
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .attestation_config_json
            .clone();
        if !cfg.is_empty()
            && let Err(e) = ctx.apply_attestation_config(&cfg)
        {
            tracing::warn!(error = %e.message(), "stored attestation config rejected; keeping the boot-time one");
        }
        *ctx.state_dir.write().unwrap_or_else(|e| e.into_inner()) = Some(dir);
        *ctx.secrets.write().unwrap_or_else(|e| e.into_inner()) = Some(ClusterSecrets {
            master: Some(master),
            measurement_secret: ms,
            measurement_salt: salt,
            cluster_id,
            cluster_name: state.cluster_name,
        });
        ctx.metrics.disk_unlocked.set(1);
        ctx.metrics.bootstrapped.set(1);
        ctx.phase.send_replace(Phase::Bootstrapped);
        tracing::info!("recovered: state disk unlocked with the master secret");
        Ok(Response::new(RecoverResponse {
            cluster_id: cluster_id.to_vec(),
        }))
    }
}
