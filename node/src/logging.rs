//! Structured logs to the console plus a ring buffer of recent lines.
//!
//! The ring buffer lets a failed Init stream the node's recent log lines back to the
//! provider. Secrets never reach it because no secret is ever passed to `tracing`: secret
//! types redact themselves in `Debug`, and handlers log ids and lengths only.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Number of lines the ring buffer keeps.
pub const RING_LINES: usize = 200;
/// Longest line kept (longer lines are cut).
const MAX_LINE: usize = 1024;

/// Refused aTLS handshakes kept for the management API's `recent_refusals`.
pub const REFUSAL_LINES: usize = 32;
/// The message of the attest crate's log event for a refused aTLS handshake (fields `peer`,
/// `error`). The provider used to scan serial consoles for it; it now reads the records.
pub const REFUSAL_MESSAGE: &str = "aTLS handshake refused";

/// One refused aTLS handshake, captured from the attest crate's log event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Peer address as the server saw it.
    pub peer: String,
    /// When, RFC 3339 UTC.
    pub time: String,
    /// The handshake error, naming every mismatching measurement.
    pub reason: String,
}

/// A bounded buffer of recent log lines (and refused handshakes), shared between the tracing
/// layer and services.
#[derive(Clone, Debug, Default)]
pub struct LogRing {
    lines: Arc<Mutex<VecDeque<String>>>,
    refusals: Arc<Mutex<VecDeque<Refusal>>>,
}

impl LogRing {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a refused handshake, dropping the oldest beyond [`REFUSAL_LINES`].
    pub fn push_refusal(&self, mut r: Refusal) {
        truncate(&mut r.peer, 128);
        truncate(&mut r.reason, MAX_LINE * 4);
        let mut q = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == REFUSAL_LINES {
            q.pop_front();
        }
        q.push_back(r);
    }

    /// Recent refused handshakes, oldest first.
    pub fn refusals(&self) -> Vec<Refusal> {
        let q = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().cloned().collect()
    }

    /// Appends a line, dropping the oldest when full.
    pub fn push(&self, mut line: String) {
        truncate(&mut line, MAX_LINE);
        let mut q = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == RING_LINES {
            q.pop_front();
        }
        q.push_back(line);
    }

    /// The last `n` lines, oldest first.
    pub fn recent(&self, n: usize) -> Vec<String> {
        let q = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().skip(q.len().saturating_sub(n)).cloned().collect()
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// Collects the `peer` and `error` fields of a refusal event.
#[derive(Default)]
struct RefusalVisitor {
    message: bool,
    peer: String,
    error: String,
}

impl Visit for RefusalVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            // `%x` fields arrive as Display wrappers whose Debug prints the Display text.
            "message" => self.message = format!("{value:?}") == REFUSAL_MESSAGE,
            "peer" => self.peer = format!("{value:?}"),
            "error" => self.error = format!("{value:?}"),
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value == REFUSAL_MESSAGE,
            "peer" => self.peer = value.to_string(),
            "error" => self.error = value.to_string(),
            _ => {}
        }
    }
}

/// A tracing layer that formats each event as one line into a [`LogRing`].
#[derive(Debug, Clone)]
pub struct RingLayer(LogRing);

impl RingLayer {
    /// Feeds `ring`.
    pub fn new(ring: LogRing) -> Self {
        Self(ring)
    }
}

struct LineVisitor(String);

impl Visit for LineVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let now = time::OffsetDateTime::now_utc();
        let mut v = LineVisitor(format!(
            "{:02}:{:02}:{:02} {} {}:",
            now.hour(),
            now.minute(),
            now.second(),
            meta.level(),
            meta.target()
        ));
        event.record(&mut v);
        self.0.push(v.0);
    }
}

/// A tracing layer that records refused aTLS handshakes into a [`LogRing`]. Separate from
/// [`RingLayer`] so that it sees the attest crate's warnings whatever `RUST_LOG` says.
#[derive(Debug, Clone)]
pub struct RefusalLayer(LogRing);

impl RefusalLayer {
    /// Feeds `ring`.
    pub fn new(ring: LogRing) -> Self {
        Self(ring)
    }
}

impl<S: tracing::Subscriber> Layer<S> for RefusalLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() > tracing::Level::WARN {
            return;
        }
        let mut r = RefusalVisitor::default();
        event.record(&mut r);
        if r.message {
            self.0.push_refusal(Refusal {
                peer: r.peer,
                time: crate::state::now_rfc3339(),
                reason: r.error,
            });
        }
    }
}

/// Installs the global subscriber: compact lines on stderr (the serial console) filtered by
/// `RUST_LOG` (default `info`), plus the ring. Returns the ring. Call once per process.
pub fn init() -> LogRing {
    let ring = LogRing::new();
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true);
    // Refusals are captured independently of RUST_LOG (the management API reports them).
    let refusals = tracing_subscriber::filter::Targets::new()
        .with_target("constellation_attest", tracing::Level::WARN);
    // A second init (tests) fails harmlessly; the ring then stays empty.
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter()))
        .with(RingLayer::new(ring.clone()).with_filter(filter()))
        .with(RefusalLayer::new(ring.clone()).with_filter(refusals))
        .try_init();
    ring
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_recent_lines() {
        let ring = LogRing::new();
        let sub = tracing_subscriber::registry().with(RingLayer::new(ring.clone()));
        tracing::subscriber::with_default(sub, || {
            for i in 0..(RING_LINES + 5) {
                tracing::info!(n = i, "line");
            }
            tracing::warn!("{}", "x".repeat(5000));
        });
        let r = ring.recent(2);
        assert!(r[0].contains("n=204"), "{r:?}");
        assert!(r[1].len() <= MAX_LINE);
        assert_eq!(ring.recent(1000).len(), RING_LINES);
    }

    #[test]
    fn refusals_are_captured_bounded() {
        let ring = LogRing::new();
        let sub = tracing_subscriber::registry().with(RefusalLayer::new(ring.clone()));
        let addr: std::net::SocketAddr = "127.0.0.9:4242".parse().unwrap();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(peer = %addr, error = "x", "{}", REFUSAL_MESSAGE);
            for i in 0..(REFUSAL_LINES + 3) {
                let e = format!("attestation rejected: index 4: expected 00, got {i:02}");
                tracing::warn!(peer = %addr, error = %e, "aTLS handshake refused");
            }
            tracing::warn!(peer = %addr, error = "other", "aTLS accept failed");
        });
        let r = ring.refusals();
        assert_eq!(r.len(), REFUSAL_LINES);
        assert_eq!(r[0].peer, "127.0.0.9:4242");
        assert!(r[0].reason.ends_with("got 03"), "{r:?}");
        assert!(r[REFUSAL_LINES - 1].reason.contains("index 4:"));
        assert!(r[REFUSAL_LINES - 1].time.ends_with('Z'));
    }

    /// A handshake that times out or a client that sends junk and hangs up is not a refusal:
    /// the provider would read it as a verdict on a pending node's image.
    #[test]
    fn timed_out_and_reset_handshakes_are_not_refusals() {
        use constellation_attest::atls::{AtlsServer, serve_routes};
        use constellation_attest::validator::Validators;
        use tokio::io::AsyncWriteExt;
        let ring = LogRing::new();
        let sub = tracing_subscriber::registry().with(RefusalLayer::new(ring.clone()));
        let _guard = tracing::subscriber::set_default(sub);
        // One thread: the server's tasks log under this thread's subscriber.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let validators = Validators::new(vec![Arc::new(
                constellation_attest::qemu_vtpm::validator(Default::default()),
            )]);
            let server = AtlsServer::new(None, Some(validators))
                .unwrap()
                .with_timeout(std::time::Duration::from_millis(200));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let serve = tokio::spawn(serve_routes(
                tonic::service::Routes::default(),
                listener,
                server,
                async {
                    let _ = stopped.await;
                },
            ));
            // A client that connects and says nothing until the handshake times out.
            let idle = tokio::net::TcpStream::connect(addr).await.unwrap();
            // A client that sends junk and hangs up.
            let mut junk = tokio::net::TcpStream::connect(addr).await.unwrap();
            junk.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
            drop(junk);
            tokio::time::sleep(std::time::Duration::from_millis(600)).await;
            drop(idle);
            let _ = stop.send(());
            let _ = serve.await;
        });
        assert!(ring.refusals().is_empty(), "{:?}", ring.refusals());
    }
}
