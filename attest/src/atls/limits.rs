//! Resource limits of the node's servers and clients: connection caps (global and per peer),
//! HTTP/2 stream limits, request deadlines and keepalive. Every public port of a node is
//! reachable without credentials, so each of these bounds what an unauthenticated peer can
//! hold; the clients' deadlines make a peer that stops answering cost a bounded wait.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long a new aTLS connection may take to send its ClientHello. Nothing is spent on a
/// connection before that (no permit, no quote), so an idle connection costs one slot of the
/// connection caps for at most this long.
pub const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Attestations an aTLS listener issues at the same time (one TPM quote each; the TPM
/// serialises them anyway).
pub const MAX_CONCURRENT_ISSUING: usize = 8;

/// Connections (handshaking or established) one listener holds at once.
pub const MAX_CONNECTIONS: usize = 256;

/// Connections one peer address holds on one listener at once. All of a host's forwarded
/// connections share one address (QEMU user networking), so this stays well above what one
/// legitimate client opens.
pub const MAX_CONNECTIONS_PER_PEER: usize = 64;

/// HTTP/2 streams one connection may have open.
pub const MAX_CONCURRENT_STREAMS: u32 = 16;

/// Requests one connection has in flight in the handlers.
pub const CONCURRENCY_PER_CONNECTION: usize = 8;

/// Server-side deadline of a handler's answer (the response headers; a streamed Init
/// answers at once and streams its progress after).
pub const SERVER_REQUEST_TIMEOUT: Duration = Duration::from_secs(180);

/// Client-side deadline of one node-API call: a peer that accepted the connection and then
/// never answers is given up after this long.
pub const CLIENT_RPC_TIMEOUT: Duration = Duration::from_secs(150);

/// HTTP/2 PING interval on both sides, and how long a PING may stay unanswered: a frozen or
/// unreachable peer is detected in about 20 s even while a call waits.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// A tonic server with the node's limits: stream and per-connection concurrency caps, a
/// handler deadline, HTTP/2 keepalive, and no pending-reset flood.
pub fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
        .timeout(SERVER_REQUEST_TIMEOUT)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .http2_max_pending_accept_reset_streams(Some(32))
        .http2_max_header_list_size(64 * 1024)
}

/// A tonic client endpoint with the node's client limits: per-call deadline and HTTP/2
/// keepalive (also while idle, so a dead peer is found before the next call). Connecting is
/// bounded by the aTLS client's handshake timeout, which covers the TCP connect too.
pub fn client_endpoint(endpoint: tonic::transport::Endpoint) -> tonic::transport::Endpoint {
    endpoint
        .timeout(CLIENT_RPC_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
}

/// Connection caps of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCaps {
    /// All connections.
    pub total: usize,
    /// Connections of one peer address.
    pub per_peer: usize,
}

impl Default for ConnectionCaps {
    fn default() -> Self {
        Self {
            total: MAX_CONNECTIONS,
            per_peer: MAX_CONNECTIONS_PER_PEER,
        }
    }
}

/// Whether one more connection of a peer that holds `peer` of `total` connections fits.
pub fn admits(caps: ConnectionCaps, total: usize, peer: usize) -> bool {
    total < caps.total && peer < caps.per_peer
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// Counts the open connections of one listener; [`ConnectionTracker::try_admit`] hands out a
/// [`ConnectionSlot`] that is given back when the connection is dropped.
#[derive(Debug, Clone)]
pub struct ConnectionTracker {
    caps: ConnectionCaps,
    counts: Arc<Mutex<Counts>>,
}

impl ConnectionTracker {
    /// A tracker enforcing `caps`.
    pub fn new(caps: ConnectionCaps) -> Self {
        Self {
            caps,
            counts: Arc::default(),
        }
    }

    /// A slot for a new connection from `peer`, or `None` when a cap is reached.
    pub fn try_admit(&self, peer: IpAddr) -> Option<ConnectionSlot> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let held = c.per_peer.get(&peer).copied().unwrap_or(0);
        if !admits(self.caps, c.total, held) {
            return None;
        }
        c.total += 1;
        *c.per_peer.entry(peer).or_insert(0) += 1;
        Some(ConnectionSlot {
            peer,
            counts: self.counts.clone(),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// One admitted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnectionSlot {
    peer: IpAddr,
    counts: Arc<Mutex<Counts>>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_peer.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_peer.remove(&self.peer);
            }
        }
    }
}

/// Accepts from `listener`, closing at once every connection beyond the caps, and pausing
/// after accept errors (e.g. no file descriptors left) instead of spinning.
#[derive(Debug)]
pub struct CappedListener {
    listener: TcpListener,
    tracker: ConnectionTracker,
    backoff: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl CappedListener {
    /// Wraps `listener` with `caps`.
    pub fn new(listener: TcpListener, caps: ConnectionCaps) -> Self {
        Self {
            listener,
            tracker: ConnectionTracker::new(caps),
            backoff: None,
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The tracker (e.g. to read how many connections are open).
    pub fn tracker(&self) -> &ConnectionTracker {
        &self.tracker
    }

    /// The next admitted connection and its peer address.
    pub fn poll_accept_capped(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<(CappedStream<TcpStream>, SocketAddr)> {
        loop {
            if let Some(s) = self.backoff.as_mut() {
                ready!(s.as_mut().poll(cx));
                self.backoff = None;
            }
            match ready!(self.listener.poll_accept(cx)) {
                Ok((tcp, addr)) => match self.tracker.try_admit(addr.ip()) {
                    Some(slot) => {
                        let _ = tcp.set_nodelay(true);
                        return Poll::Ready((CappedStream { inner: tcp, slot }, addr));
                    }
                    None => {
                        tracing::debug!(peer = %addr, "connection cap reached; connection closed");
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing the listener briefly");
                    self.backoff = Some(Box::pin(tokio::time::sleep(ACCEPT_ERROR_BACKOFF)));
                }
            }
        }
    }

    /// Async form of [`CappedListener::poll_accept_capped`].
    pub async fn accept(&mut self) -> (CappedStream<TcpStream>, SocketAddr) {
        std::future::poll_fn(|cx| self.poll_accept_capped(cx)).await
    }
}

impl tokio_stream::Stream for CappedListener {
    type Item = Result<CappedStream<TcpStream>, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let (s, _) = ready!(self.get_mut().poll_accept_capped(cx));
        Poll::Ready(Some(Ok(s)))
    }
}

/// A connection holding its [`ConnectionSlot`] for as long as it lives.
#[derive(Debug)]
pub struct CappedStream<S> {
    inner: S,
    slot: ConnectionSlot,
}

impl<S> CappedStream<S> {
    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Splits off the slot, e.g. to move it into a stream built on the inner one.
    pub fn into_parts(self) -> (S, ConnectionSlot) {
        (self.inner, self.slot)
    }
}

impl Connected for CappedStream<TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CappedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CappedStream<S> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn admission_table() {
        let caps = ConnectionCaps {
            total: 4,
            per_peer: 2,
        };
        for (total, peer, want) in [
            (0, 0, true),
            (1, 1, true),
            (2, 2, false), // this peer is at its cap
            (3, 0, true),
            (4, 0, false), // the listener is full
            (4, 1, false),
        ] {
            assert_eq!(admits(caps, total, peer), want, "{total}/{peer}");
        }
    }

    #[test]
    fn slots_are_counted_and_given_back() {
        let t = ConnectionTracker::new(ConnectionCaps {
            total: 3,
            per_peer: 2,
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = t.try_admit(a).unwrap();
        let _s2 = t.try_admit(a).unwrap();
        assert!(t.try_admit(a).is_none(), "per-peer cap");
        let _s3 = t.try_admit(b).unwrap();
        assert!(t.try_admit(b).is_none(), "global cap");
        drop(s1);
        assert_eq!(t.open(), 2);
        assert!(t.try_admit(a).is_some(), "a freed slot is usable again");
    }
}
