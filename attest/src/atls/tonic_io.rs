//! tonic over aTLS: node services stay plain tonic services; the transport attests.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, Router};
use tonic::transport::{Channel, Endpoint, Uri};

use super::limits::{self, CappedListener, ConnectionCaps, ConnectionSlot};
use super::{AtlsClient, AtlsError, AtlsServer};
use crate::validator::VerifiedClaims;

/// Connection facts available to every request handler as a request extension:
/// `request.extensions().get::<AtlsConnectInfo>()`.
#[derive(Debug, Clone)]
pub struct AtlsConnectInfo {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// The client's verified attestation; `None` when the server does not validate clients.
    pub peer_claims: Option<Arc<VerifiedClaims>>,
}

/// An accepted, attested server-side connection.
#[derive(Debug)]
pub struct AtlsServerStream {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: AtlsConnectInfo,
    /// This connection's place under the listener's connection caps.
    _slot: ConnectionSlot,
}

impl Connected for AtlsServerStream {
    type ConnectInfo = AtlsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for AtlsServerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for AtlsServerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves `router` on `listener` over aTLS until `shutdown` completes. Every connection runs its
/// own handshake concurrently; connections whose handshake fails (e.g. attestation rejected)
/// are logged and dropped before any request reaches a handler. Connections are capped per
/// listener and per peer ([`limits::ConnectionCaps`]); a connection must send its
/// ClientHello within [`limits::CLIENT_HELLO_TIMEOUT`], and at most
/// [`limits::MAX_CONCURRENT_ISSUING`] handshakes issue an attestation at once.
pub async fn serve_router(
    router: Router,
    listener: TcpListener,
    server: AtlsServer,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_router_with_caps(
        router,
        listener,
        server,
        ConnectionCaps::default(),
        shutdown,
    )
    .await
}

/// [`serve_router`] with explicit connection caps.
pub async fn serve_router_with_caps(
    router: Router,
    listener: TcpListener,
    server: AtlsServer,
    caps: ConnectionCaps,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<AtlsServerStream, io::Error>>(16);
    let server = Arc::new(server);
    let issuing = Arc::new(tokio::sync::Semaphore::new(limits::MAX_CONCURRENT_ISSUING));
    let mut listener = CappedListener::new(listener, caps);
    let accept_loop = tokio::spawn(async move {
        loop {
            let (capped, addr) = listener.accept().await;
            let (tcp, slot) = capped.into_parts();
            let server = server.clone();
            let tx = tx.clone();
            let issuing = issuing.clone();
            tokio::spawn(async move {
                match server.accept_limited(tcp, Some(&issuing)).await {
                    Ok((inner, claims)) => {
                        let info = AtlsConnectInfo {
                            remote_addr: Some(addr),
                            peer_claims: claims.map(Arc::new),
                        };
                        let _ = tx
                            .send(Ok(AtlsServerStream {
                                inner,
                                info,
                                _slot: slot,
                            }))
                            .await;
                    }
                    Err(e @ AtlsError::NoClientHello(_)) => {
                        tracing::debug!(peer = %addr, error = %e, "aTLS connection dropped");
                    }
                    // Only a rejected attestation is a refusal (the node reports those as
                    // verdicts about the peer's image); other failures are transient.
                    Err(e) if e.is_attestation_rejection() => {
                        tracing::warn!(peer = %addr, error = %e, "aTLS handshake refused");
                    }
                    Err(e) => tracing::info!(peer = %addr, error = %e, "aTLS handshake failed"),
                }
            });
        }
    });
    // Stop accepting when serving ends or this future is dropped.
    let _guard = AbortOnDrop(accept_loop);
    router
        .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(rx), shutdown)
        .await
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// [`serve_router`] for a set of tonic `Routes`, on a server with the node's limits
/// ([`limits::server_builder`]).
pub async fn serve_routes(
    routes: tonic::service::Routes,
    listener: TcpListener,
    server: AtlsServer,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let router = limits::server_builder().add_routes(routes);
    serve_router(router, listener, server, shutdown).await
}

fn endpoint(uri: &str) -> Result<Endpoint, AtlsError> {
    let bad = |message: String| AtlsError::BadEndpoint {
        uri: uri.to_owned(),
        message,
    };
    let parsed: Uri = uri.parse().map_err(|e| bad(format!("{e}")))?;
    if parsed.scheme_str() != Some("http") {
        return Err(bad(
            "use http://host:port — TLS is done by aTLS, not by tonic".to_owned(),
        ));
    }
    Endpoint::from_shared(uri.to_owned())
        .map(limits::client_endpoint)
        .map_err(|e| bad(e.to_string()))
}

type ClientIo = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
type ConnectFuture = Pin<Box<dyn Future<Output = Result<ClientIo, AtlsError>> + Send>>;

fn connector(
    client: AtlsClient,
) -> impl tower::Service<Uri, Response = ClientIo, Error = AtlsError, Future = ConnectFuture> + Clone
{
    let client = Arc::new(client);
    tower::service_fn(move |uri: Uri| {
        let client = client.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .unwrap_or_default()
                .trim_matches(['[', ']'])
                .to_owned();
            let port = uri.port_u16().unwrap_or(80);
            let tcp =
                tokio::time::timeout(client.timeout, TcpStream::connect((host.as_str(), port)))
                    .await
                    .map_err(|_| AtlsError::Timeout(client.timeout))??;
            tcp.set_nodelay(true)?;
            let (tls, _claims) = client.connect(tcp).await?;
            Ok(TokioIo::new(tls))
        }) as ConnectFuture
    })
}

/// A lazily connecting tonic channel to `uri` (`http://host:port`) over aTLS: each (re)connect
/// runs a fresh attested handshake.
pub fn channel(uri: &str, client: AtlsClient) -> Result<Channel, AtlsError> {
    Ok(endpoint(uri)?.connect_with_connector_lazy(connector(client)))
}

/// Like [`channel`], but connects (and attests) now, so a refused peer fails here before any
/// request is sent.
pub async fn connect_channel(uri: &str, client: AtlsClient) -> Result<Channel, AtlsError> {
    endpoint(uri)?
        .connect_with_connector(connector(client))
        .await
        .map_err(|e| {
            // Surface our typed error when the transport failed in the aTLS connector.
            let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = src {
                if let Some(a) = s.downcast_ref::<AtlsError>() {
                    // The error is borrowed from tonic's; rebuild it without a second
                    // "TLS handshake failed:" prefix for plain I/O failures.
                    return AtlsError::Tls(match a {
                        AtlsError::Tls(io) => io::Error::new(io.kind(), io.to_string()),
                        other => io::Error::other(other.to_string()),
                    });
                }
                src = s.source();
            }
            AtlsError::Tls(io::Error::other(e))
        })
}
