//! Serving a [`Provider`] to Terraform: handshake, listener, AutoMTLS and the gRPC services
//! go-plugin expects (`tfplugin6.Provider`, `grpc.health.v1.Health`, `plugin.GRPCStdio`,
//! `plugin.GRPCController`).

mod grpc;
pub(crate) mod plan;
pub mod proto;

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};

pub use grpc::ProviderService;

use crate::handshake::{HandshakeConfig, HandshakeError, ListenAddr, Transport, handshake_line};
use crate::provider::Provider;
use crate::tls::{ServerIdentity, TlsError, parse_client_cert_pem};

/// Default limit for one gRPC message in either direction (64 MiB). Terraform sends whole
/// resource states and configurations; anything bigger is refused instead of buffered.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// How often the plugin checks whether Terraform (its parent process) is still alive.
const PARENT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How long a client may take for the TLS handshake before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The process was not started as Terraform expects (for example run by hand).
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listener could not be opened.
    #[error("cannot listen on {what}: {source}")]
    Listen {
        /// The socket path or port range.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// The gRPC server failed.
    #[error("the plugin's gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Callback receiving the handshake line instead of stdout.
pub type HandshakeSink = Box<dyn FnOnce(&str) + Send>;

/// Options for [`serve_with`].
#[non_exhaustive]
pub struct ServeOptions {
    /// The handshake to use instead of reading the process environment.
    pub handshake: Option<HandshakeConfig>,
    /// Listen on loopback TCP even on Unix.
    pub force_tcp: bool,
    /// Where the handshake line goes; stdout (what Terraform reads) when `None`.
    pub handshake_sink: Option<HandshakeSink>,
    /// Stops the server when cancelled (in addition to `GRPCController.Shutdown`).
    pub shutdown: CancellationToken,
    /// Largest accepted and sent gRPC message.
    pub max_message_size: usize,
    /// Install the hclog JSON logger on stderr at the level `TF_LOG_PROVIDER`/`TF_LOG` ask
    /// for ([`crate::logging::init_from_env`]).
    pub init_logging: bool,
    /// Exit when the parent process (Terraform) goes away without shutting the plugin
    /// down. On by default; turn off when serving in-process (tests).
    pub watch_parent: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            handshake: None,
            force_tcp: false,
            handshake_sink: None,
            shutdown: CancellationToken::new(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            init_logging: true,
            watch_parent: true,
        }
    }
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("handshake", &self.handshake)
            .field("force_tcp", &self.force_tcp)
            .field("max_message_size", &self.max_message_size)
            .field("init_logging", &self.init_logging)
            .field("watch_parent", &self.watch_parent)
            .finish_non_exhaustive()
    }
}

impl ServeOptions {
    /// Default options: environment handshake, stdout, logging from the environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `handshake` instead of the process environment.
    pub fn handshake(mut self, handshake: HandshakeConfig) -> Self {
        self.handshake = Some(handshake);
        self
    }

    /// Sends the handshake line to `sink` instead of stdout.
    pub fn handshake_sink(mut self, sink: impl FnOnce(&str) + Send + 'static) -> Self {
        self.handshake_sink = Some(Box::new(sink));
        self
    }

    /// Stops serving when `token` is cancelled.
    pub fn shutdown(mut self, token: CancellationToken) -> Self {
        self.shutdown = token;
        self
    }

    /// Listens on loopback TCP even on Unix.
    pub fn force_tcp(mut self) -> Self {
        self.force_tcp = true;
        self
    }

    /// Sets the largest accepted gRPC message.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Does not exit when the parent process goes away (for in-process use).
    pub fn without_parent_watch(mut self) -> Self {
        self.watch_parent = false;
        self
    }

    /// Leaves the global `tracing` subscriber alone.
    pub fn without_logging(mut self) -> Self {
        self.init_logging = false;
        self
    }
}

/// Serves `provider` to Terraform until Terraform shuts it down. Call it from `main`:
///
/// ```no_run
/// # struct MyProvider;
/// # #[tfplugin::async_trait] impl tfplugin::Provider for MyProvider {
/// #   fn schema(&self) -> tfplugin::schema::Schema { Default::default() }
/// #   async fn configure(&self, _: &tfplugin::Context, _: &str, _: tfplugin::Value)
/// #     -> tfplugin::ConfigureResponse { Default::default() } }
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() -> std::process::ExitCode {
///     match tfplugin::serve(MyProvider).await {
///         Ok(()) => std::process::ExitCode::SUCCESS,
///         Err(error) => {
///             eprintln!("{error}");
///             std::process::ExitCode::FAILURE
///         }
///     }
/// }
/// ```
///
/// Run by hand (without Terraform's magic cookie) it returns
/// [`HandshakeError::NotStartedByTerraform`], whose message explains how to use the binary.
pub async fn serve<P: Provider>(provider: P) -> Result<(), ServeError> {
    serve_with(provider, ServeOptions::default()).await
}

/// [`serve`] with options (custom handshake source, handshake sink, shutdown token).
pub async fn serve_with<P: Provider>(provider: P, options: ServeOptions) -> Result<(), ServeError> {
    let handshake = match options.handshake {
        Some(h) => h,
        None => HandshakeConfig::from_env()?,
    };
    if options.init_logging {
        crate::logging::init_from_env();
    }

    let tls = match &handshake.client_cert_pem {
        Some(pem) => {
            let client_cert = parse_client_cert_pem(pem)?;
            let identity = ServerIdentity::generate()?;
            let config = identity.server_config(client_cert)?;
            Some((identity, Arc::new(config)))
        }
        None => None,
    };

    let shutdown = options.shutdown;
    // Before the socket exists: a SIGTERM right after the handshake must already find the
    // handler, or the default action would kill the process and leave the socket behind.
    let _guards = Guards::spawn(&shutdown, options.watch_parent)?;
    let listener = Listener::open(&handshake.transport(options.force_tcp)).await?;

    let line = handshake_line(
        handshake.protocol_version,
        &listener.addr,
        tls.as_ref().map(|(identity, _)| identity.cert_der.as_ref()),
    );
    match options.handshake_sink {
        Some(sink) => sink(&line),
        None => {
            use std::io::Write as _;
            let mut stdout = io::stdout().lock();
            // Terraform waits for this line; failing to write it means nobody is listening.
            writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .map_err(|source| ServeError::Listen {
                    what: "stdout (handshake)".into(),
                    source,
                })?;
        }
    }
    tracing::debug!(address = %listener.addr, tls = tls.is_some(), "plugin server listening");

    let service = Arc::new(ProviderService::new(Arc::new(provider)));
    let result = run(
        listener,
        tls.map(|(_, config)| config),
        service.clone(),
        shutdown.clone(),
        options.max_message_size,
    )
    .await;
    // Whatever stopped the server, in-flight handlers must not keep working for nobody,
    // and the accept loop (which owns the socket) must end.
    service.stop();
    shutdown.cancel();
    result
}

async fn run(
    listener: Listener,
    tls: Option<Arc<rustls::ServerConfig>>,
    service: Arc<ProviderService>,
    shutdown: CancellationToken,
    max_message_size: usize,
) -> Result<(), ServeError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("plugin", tonic_health::ServingStatus::Serving)
        .await;

    let provider_server = proto::tfplugin6::provider_server::ProviderServer::from_arc(service)
        .max_decoding_message_size(max_message_size)
        .max_encoding_message_size(max_message_size);
    let controller = proto::plugin::grpc_controller_server::GrpcControllerServer::new(Controller {
        shutdown: shutdown.clone(),
    });
    let stdio = proto::plugin::grpc_stdio_server::GrpcStdioServer::new(Stdio {
        shutdown: shutdown.clone(),
    });

    let incoming = listener.accept_stream(tls, shutdown.clone());
    let result = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(controller)
        .add_service(stdio)
        .add_service(provider_server)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await;
    result.map_err(ServeError::from)
}

/// Background tasks that turn signals and the parent's death into a shutdown; aborted on
/// drop.
struct Guards(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Guards {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Guards {
    fn spawn(shutdown: &CancellationToken, watch_parent: bool) -> Result<Self, ServeError> {
        use tokio::signal::unix::{SignalKind, signal};
        let handler_error = |what: &str| {
            let what = what.to_owned();
            move |source| ServeError::Listen { what, source }
        };
        // Terraform handles Ctrl-C itself and tells the plugin through StopProvider and
        // Shutdown; the signal also reaches the plugin (same process group) and must not
        // kill it mid-apply.
        let mut sigint =
            signal(SignalKind::interrupt()).map_err(handler_error("a SIGINT handler"))?;
        let mut sigterm =
            signal(SignalKind::terminate()).map_err(handler_error("a SIGTERM handler"))?;
        let mut tasks = Vec::new();
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = sigint.recv() => tracing::debug!("ignoring SIGINT; waiting for Terraform"),
                    _ = sigterm.recv() => { token.cancel(); break; }
                    () = token.cancelled() => break,
                }
            }
        }));
        // If Terraform dies without shutting the plugin down (killed, crashed), the plugin
        // is re-parented; nobody will ever talk to it again, so it exits instead of lingering.
        if watch_parent {
            let token = shutdown.clone();
            let parent = std::os::unix::process::parent_id();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(PARENT_POLL_INTERVAL);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if std::os::unix::process::parent_id() != parent {
                                tracing::warn!("Terraform went away; shutting down");
                                token.cancel();
                                break;
                            }
                        }
                        () = token.cancelled() => break,
                    }
                }
            }));
        }
        Ok(Self(tasks))
    }
}

/// `plugin.GRPCController`: Terraform's request to exit.
struct Controller {
    shutdown: CancellationToken,
}

#[tonic::async_trait]
impl proto::plugin::grpc_controller_server::GrpcController for Controller {
    async fn shutdown(
        &self,
        _request: Request<proto::plugin::Empty>,
    ) -> Result<Response<proto::plugin::Empty>, Status> {
        tracing::debug!("shutdown requested by Terraform");
        self.shutdown.cancel();
        Ok(Response::new(proto::plugin::Empty {}))
    }
}

/// `plugin.GRPCStdio`: logs go to stderr directly, so the stream carries no data; it
/// stays open until shutdown so the host does not treat the plugin as gone.
struct Stdio {
    shutdown: CancellationToken,
}

#[tonic::async_trait]
impl proto::plugin::grpc_stdio_server::GrpcStdio for Stdio {
    type StreamStdioStream = ReceiverStream<Result<proto::plugin::StdioData, Status>>;

    async fn stream_stdio(
        &self,
        _request: Request<()>,
    ) -> Result<Response<Self::StreamStdioStream>, Status> {
        let (tx, rx) = mpsc::channel(1);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // Holding the sender keeps the stream open.
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tx.closed() => {}
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The plugin's listening socket. Dropping it removes the unix socket and its directory.
struct Listener {
    addr: ListenAddr,
    inner: ListenerKind,
    _dir: Option<tempfile::TempDir>,
}

enum ListenerKind {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

impl Listener {
    async fn open(transport: &Transport) -> Result<Self, ServeError> {
        match transport {
            Transport::Unix { dir } => {
                let mut builder = tempfile::Builder::new();
                builder.prefix("plugin");
                let dir = match dir {
                    Some(parent) => builder.tempdir_in(parent),
                    None => builder.tempdir(),
                }
                .map_err(|source| ServeError::Listen {
                    what: "a temporary directory for the plugin socket".into(),
                    source,
                })?;
                let path: PathBuf = dir.path().join("plugin.sock");
                let listener =
                    tokio::net::UnixListener::bind(&path).map_err(|source| ServeError::Listen {
                        what: path.display().to_string(),
                        source,
                    })?;
                Ok(Self {
                    addr: ListenAddr::Unix(path),
                    inner: ListenerKind::Unix(listener),
                    _dir: Some(dir),
                })
            }
            Transport::Tcp { min_port, max_port } => {
                let mut last_error = None;
                for port in *min_port..=*max_port {
                    match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                        Ok(listener) => {
                            let addr =
                                listener.local_addr().map_err(|source| ServeError::Listen {
                                    what: format!("127.0.0.1:{port}"),
                                    source,
                                })?;
                            return Ok(Self {
                                addr: ListenAddr::Tcp(addr),
                                inner: ListenerKind::Tcp(listener),
                                _dir: None,
                            });
                        }
                        Err(e) => last_error = Some(e),
                    }
                }
                Err(ServeError::Listen {
                    what: format!("127.0.0.1 ports {min_port}-{max_port}"),
                    source: last_error.unwrap_or_else(|| io::Error::other("empty port range")),
                })
            }
        }
    }

    /// Accepts connections (TLS handshakes run concurrently, off the accept loop) and
    /// yields the established ones.
    fn accept_stream(
        self,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: CancellationToken,
    ) -> ReceiverStream<Result<Conn, io::Error>> {
        let (tx, rx) = mpsc::channel(16);
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            // Keeps the socket directory alive until the accept loop ends.
            let listener = self;
            loop {
                let accepted: io::Result<Box<dyn Io>> = tokio::select! {
                    () = shutdown.cancelled() => break,
                    accepted = listener.accept() => accepted,
                };
                let stream = match accepted {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed");
                        continue;
                    }
                };
                let tx = tx.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let conn = match acceptor {
                        None => Conn(Box::into_pin(stream)),
                        Some(acceptor) => {
                            match tokio::time::timeout(
                                TLS_HANDSHAKE_TIMEOUT,
                                acceptor.accept(stream),
                            )
                            .await
                            {
                                Ok(Ok(tls)) => Conn(Box::pin(tls)),
                                Ok(Err(e)) => {
                                    tracing::warn!(error = %e, "TLS handshake with client failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::warn!("TLS handshake timed out");
                                    return;
                                }
                            }
                        }
                    };
                    let _ = tx.send(Ok(conn)).await;
                });
            }
        });
        ReceiverStream::new(rx)
    }

    async fn accept(&self) -> io::Result<Box<dyn Io>> {
        match &self.inner {
            ListenerKind::Unix(l) => Ok(Box::new(l.accept().await?.0)),
            ListenerKind::Tcp(l) => {
                let (stream, _) = l.accept().await?;
                // gRPC sends many small frames; Nagle would only add latency.
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream))
            }
        }
    }
}

/// Byte stream of a connection (plain or TLS, unix or TCP).
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// An established connection handed to tonic.
struct Conn(Pin<Box<dyn Io>>);

impl Connected for Conn {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.as_mut().poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.0.as_mut().poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
