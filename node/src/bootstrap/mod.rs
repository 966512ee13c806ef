//! The bootstrapper: decides between init, join and rejoin, and runs the node's servers.
//!
//! At boot: read metadata, prepare the state disk, read PCR 15. PCR 15 zero → fresh node: the
//! Init server (control planes) and the join client run concurrently; the first to take the
//! bootstrap lock and extend PCR 15 wins. PCR 15 non-zero (or an initialised disk) → rejoin:
//! the join client asks for a rejoin ticket; control planes also accept recovery.

mod client;
mod servers;

pub use client::{fetch_peers, join_loop, peers_of, rejoin_loop};
pub use servers::{BoxFut, READY_LOG, ServeError, Transport, serve_all, serve_management};

use std::net::IpAddr;
use std::time::Duration;

use constellation_node_api::ports;

/// Ports the node listens on (all configurable for host tests running several agents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// Init server.
    pub init: u16,
    /// Join + key services.
    pub join: u16,
    /// Verification, gRPC.
    pub verify_grpc: u16,
    /// Verification, HTTP.
    pub verify_http: u16,
    /// Recovery.
    pub recovery: u16,
    /// Management.
    pub management: u16,
    /// Metrics.
    pub metrics: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            init: ports::INIT,
            join: ports::JOIN,
            verify_grpc: ports::VERIFY_GRPC,
            verify_http: ports::VERIFY_HTTP,
            recovery: ports::RECOVERY,
            management: ports::MANAGEMENT,
            metrics: ports::METRICS,
        }
    }
}

/// Bootstrapper configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the public servers bind to (init, join, verification, recovery, management).
    pub listen_ip: IpAddr,
    /// Ports.
    pub ports: Ports,
    /// After this the join client reports an error once and retries every 30 s.
    pub join_deadline: Duration,
    /// How often workers ask a control plane for the current WireGuard peers.
    pub peer_refresh: Duration,
}

use std::sync::Arc;

use crate::disk::BootState;
use crate::metadata::Role;
use crate::services::{NodeContext, Phase, blocking};

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The state disk could not be prepared.
    #[error("preparing the state disk failed: {0}")]
    Disk(String),
    /// PCR 15 could not be read.
    #[error("reading PCR 15 failed: {0}")]
    Lock(String),
    /// A server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// An internal task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Internal(String),
}

/// Runs the node until a server fails or the process is told to stop (SIGTERM/SIGINT).
pub async fn run(
    ctx: Arc<NodeContext>,
    cfg: Config,
    transport: Arc<dyn Transport>,
) -> Result<(), RunError> {
    let disk = ctx.disk.clone();
    let boot = blocking(move || disk.prepare())
        .await
        .map_err(|e| RunError::Disk(e.message().to_string()))?
        .map_err(|e| RunError::Disk(e.to_string()))?;
    let lock = ctx.lock.clone();
    let unlocked = blocking(move || lock.is_unlocked())
        .await
        .map_err(|e| RunError::Lock(e.message().to_string()))?
        .map_err(|e| RunError::Lock(e.to_string()))?;
    let phase = if unlocked && boot == BootState::Fresh {
        Phase::Fresh
    } else {
        Phase::AwaitingRejoin
    };
    if phase == Phase::AwaitingRejoin && boot == BootState::Fresh {
        tracing::error!(
            "PCR 15 is set but the state disk is blank: this node's state was lost; rejoin will fail, replace the node"
        );
    }
    tracing::info!(
        ?phase,
        ?boot,
        pcr15_zero = unlocked,
        "boot state determined"
    );
    ctx.phase.send_replace(phase);
    // Control planes learned before the reboot (the header is readable while locked).
    let disk = ctx.disk.clone();
    match blocking(move || disk.remembered_join_endpoints()).await {
        Ok(Ok(list)) if !list.is_empty() => {
            ctx.endpoints.replace(&list, &ctx.own_join_endpoint());
            tracing::info!(endpoints = ?ctx.endpoints.learned(), "control-plane endpoints remembered from before the reboot");
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "reading the remembered control-plane endpoints failed; using the metadata's only")
        }
        Err(e) => {
            tracing::warn!(error = %e.message(), "reading the remembered control-plane endpoints failed")
        }
    }

    let mut tasks = tokio::task::JoinSet::new();
    {
        let ctx = ctx.clone();
        let cfg = cfg.clone();
        let t = transport.clone();
        tasks.spawn(async move { serve_all(ctx, &cfg, t).await.map_err(RunError::from) });
    }
    let client_ctx = ctx.clone();
    let deadline = cfg.join_deadline;
    let t = transport.clone();
    tasks.spawn(async move {
        let has_endpoints = !client_ctx.join_endpoints().is_empty();
        match phase {
            Phase::Fresh if has_endpoints => join_loop(client_ctx, t, deadline).await,
            Phase::AwaitingRejoin if has_endpoints => rejoin_loop(client_ctx, t, deadline).await,
            _ => {
                tracing::info!(
                    "no join endpoints in the metadata or remembered; waiting for Init or recovery"
                );
            }
        }
        // Keep serving: a control plane may still be initialised or recovered.
        std::future::pending::<Result<(), RunError>>().await
    });
    let mgmt_ctx = ctx.clone();
    let mgmt_cfg = cfg.clone();
    let t = transport.clone();
    tasks.spawn(async move {
        let mut rx = mgmt_ctx.phase.subscribe();
        // The sender lives in the context, so waiting cannot fail while the node runs.
        let _ = rx.wait_for(|p| *p == Phase::Bootstrapped).await;
        if mgmt_ctx.info.role == Role::ControlPlane {
            // Replication ends with the process (the task is aborted with the runtime).
            tokio::spawn(crate::services::members::replicate(
                mgmt_ctx.clone(),
                mgmt_cfg.ports.management,
            ));
            serve_management(mgmt_ctx, &mgmt_cfg)
                .await
                .map_err(RunError::from)
        } else {
            client::peer_refresh_loop(mgmt_ctx, t, mgmt_cfg.peer_refresh).await;
            std::future::pending::<Result<(), RunError>>().await
        }
    });
    let stop = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {},
        }
    };
    tokio::select! {
        r = tasks.join_next() => match r {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(RunError::Internal(e.to_string())),
            None => Ok(()),
        },
        () = stop => {
            tracing::info!("stopping on signal");
            Ok(())
        }
    }
}
