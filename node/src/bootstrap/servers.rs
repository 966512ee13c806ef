//! The node's servers and the channel-security seam ([`Transport`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use constellation_attest::atls::limits::{self, CappedListener, CappedStream, ConnectionCaps};
use constellation_attest::validator::Validators;
use constellation_node_api::limits::MAX_MESSAGE_BYTES;
use constellation_node_api::v1::init_service_server::InitServiceServer;
use constellation_node_api::v1::join_service_server::JoinServiceServer;
use constellation_node_api::v1::key_service_server::KeyServiceServer;
use constellation_node_api::v1::management_service_server::ManagementServiceServer;
use constellation_node_api::v1::member_sync_service_server::MemberSyncServiceServer;
use constellation_node_api::v1::recovery_service_server::RecoveryServiceServer;
use constellation_node_api::v1::verification_service_server::VerificationServiceServer;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::Channel;

use super::Config;
use crate::ca::ClusterCa;
use crate::metadata::Role;
use crate::services::NodeContext;
use crate::services::init::InitServer;
use crate::services::join::JoinServer;
use crate::services::key::KeyServer;
use crate::services::management::ManagementServer;
use crate::services::members::MemberSyncServer;
use crate::services::recovery::RecoveryServer;
use crate::services::verify::{VerifyServer, http_router};

/// Errors of the servers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Binding a listener failed.
    #[error("binding the {server} server to {addr} failed: {source}")]
    Bind {
        /// Which server.
        server: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A server stopped with an error.
    #[error("the {server} server failed: {message}")]
    Serve {
        /// Which server.
        server: &'static str,
        /// Cause.
        message: String,
    },
    /// Building the management TLS identity failed.
    #[error("management TLS setup failed: {0}")]
    Tls(String),
}

/// A boxed future returned by [`Transport`] methods.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Channel security: the aTLS layer in the product, injected so that service logic does not
/// depend on one transport.
pub trait Transport: Send + Sync + 'static {
    /// Serves `routes` on `listener`; this node attests to every client (Init, recovery).
    fn serve_node_attested(
        &self,
        routes: Routes,
        listener: TcpListener,
    ) -> BoxFut<'static, Result<(), String>>;

    /// Serves `routes` on `listener`; every client must attest and is validated with the
    /// *current* `validators` at handshake time; handlers find the verified claims in the
    /// request extensions (join, key).
    fn serve_client_attested(
        &self,
        routes: Routes,
        listener: TcpListener,
        validators: Validators,
    ) -> BoxFut<'static, Result<(), String>>;

    /// Connects to `endpoint` (`host:port`) as an attesting client (join client).
    fn connect_attesting(&self, endpoint: String) -> BoxFut<'static, Result<Channel, String>>;

    /// How long the join client waits for one call (connect included) before it tries the
    /// next endpoint: a control plane that froze after the handshake costs no more.
    fn rpc_deadline(&self) -> std::time::Duration {
        limits::CLIENT_RPC_TIMEOUT
    }
}

async fn bind(server: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind {
            server,
            addr,
            source,
        })
}

/// How long a management client may take for its TLS handshake.
const MANAGEMENT_TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The verification service's HTTP listener under the connection caps.
struct HttpListener(CappedListener);

impl axum::serve::Listener for HttpListener {
    type Io = CappedStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.0.accept().await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// Logged once every public server listens ("agent ready").
pub const READY_LOG: &str = "node agent ready: servers listening";

/// Starts every server this node runs from boot: verification (gRPC + HTTP) and metrics
/// always; init, join+key and recovery on control planes. Returns when one fails.
pub async fn serve_all(
    ctx: Arc<NodeContext>,
    cfg: &Config,
    transport: Arc<dyn Transport>,
) -> Result<(), ServeError> {
    let ip = cfg.listen_ip;
    let p = cfg.ports;
    let mut set = tokio::task::JoinSet::new();

    let verify = VerifyServer::new(ctx.clone());
    let l = bind("verification", SocketAddr::new(ip, p.verify_grpc)).await?;
    let svc = VerificationServiceServer::new(verify.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    set.spawn(async move {
        limits::server_builder()
            .add_service(svc)
            .serve_with_incoming(CappedListener::new(l, ConnectionCaps::default()))
            .await
            .map_err(|e| ServeError::Serve {
                server: "verification",
                message: e.to_string(),
            })
    });
    let l = bind("verification-http", SocketAddr::new(ip, p.verify_http)).await?;
    set.spawn(async move {
        axum::serve(
            HttpListener(CappedListener::new(l, ConnectionCaps::default())),
            http_router(verify),
        )
        .await
        .map_err(|e| ServeError::Serve {
            server: "verification-http",
            message: e.to_string(),
        })
    });
    // Metrics only on the private network address, never on a wildcard.
    let l = bind("metrics", SocketAddr::new(ctx.info.private_ip, p.metrics)).await?;
    let m = ctx.metrics.clone();
    set.spawn(async move {
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let m = m.clone();
                async move { m.encode() }
            }),
        );
        axum::serve(l, app).await.map_err(|e| ServeError::Serve {
            server: "metrics",
            message: e.to_string(),
        })
    });

    if ctx.info.role == Role::ControlPlane {
        let l = bind("init", SocketAddr::new(ip, p.init)).await?;
        let routes = Routes::new(
            InitServiceServer::new(InitServer::new(ctx.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        );
        let t = transport.clone();
        set.spawn(async move {
            t.serve_node_attested(routes, l)
                .await
                .map_err(|message| ServeError::Serve {
                    server: "init",
                    message,
                })
        });

        let l = bind("join", SocketAddr::new(ip, p.join)).await?;
        let routes = Routes::new(
            JoinServiceServer::new(JoinServer::new(ctx.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            KeyServiceServer::new(KeyServer::new(ctx.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        );
        let t = transport.clone();
        let validators = ctx.validators.clone();
        set.spawn(async move {
            t.serve_client_attested(routes, l, validators)
                .await
                .map_err(|message| ServeError::Serve {
                    server: "join",
                    message,
                })
        });

        let l = bind("recovery", SocketAddr::new(ip, p.recovery)).await?;
        let routes = Routes::new(
            RecoveryServiceServer::new(RecoveryServer::new(ctx.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        );
        let t = transport.clone();
        set.spawn(async move {
            t.serve_node_attested(routes, l)
                .await
                .map_err(|message| ServeError::Serve {
                    server: "recovery",
                    message,
                })
        });
    }
    // Every public listener is bound: the host can connect now. Boot-time measurements
    // (scripts/boot-time.sh) and tests wait for this line.
    tracing::info!(role = %ctx.info.role, "{READY_LOG}");
    match set.join_next().await {
        Some(Ok(r)) => r,
        Some(Err(e)) => Err(ServeError::Serve {
            server: "task",
            message: e.to_string(),
        }),
        None => Ok(()),
    }
}

/// Serves the management API over mutual TLS with a server certificate from the cluster CA;
/// only clients holding a certificate of the same CA (the owner) get through.
pub async fn serve_management(ctx: Arc<NodeContext>, cfg: &Config) -> Result<(), ServeError> {
    let master = ctx
        .master()
        .map_err(|s| ServeError::Tls(s.message().to_string()))?;
    let (ca_pem, server) = tokio::task::spawn_blocking(move || {
        let ca = ClusterCa::derive(&master).map_err(|e| e.to_string())?;
        let server = ca.issue_server().map_err(|e| e.to_string())?;
        Ok::<_, String>((ca.cert_pem().to_string(), server))
    })
    .await
    .map_err(|e| ServeError::Tls(e.to_string()))?
    .map_err(ServeError::Tls)?;
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            server.cert_pem.as_bytes(),
            server.key_pem.as_bytes(),
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(ca_pem.as_bytes()))
        .client_auth_optional(false)
        .timeout(MANAGEMENT_TLS_HANDSHAKE_TIMEOUT);
    let addr = SocketAddr::new(cfg.listen_ip, cfg.ports.management);
    let l = bind("management", addr).await?;
    let svc = ManagementServiceServer::new(ManagementServer::new(ctx.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // Member replication between control planes shares the port and its mutual TLS.
    let sync = MemberSyncServiceServer::new(MemberSyncServer::new(ctx))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    limits::server_builder()
        .tls_config(tls)
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .add_service(svc)
        .add_service(sync)
        .serve_with_incoming(CappedListener::new(l, ConnectionCaps::default()))
        .await
        .map_err(|e| ServeError::Serve {
            server: "management",
            message: e.to_string(),
        })
}
