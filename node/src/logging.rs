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

/// A bounded buffer of recent log lines, shared between the tracing layer and services.
#[derive(Clone, Debug, Default)]
pub struct LogRing(Arc<Mutex<VecDeque<String>>>);

impl LogRing {
    /// An empty ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a line, dropping the oldest when full.
    pub fn push(&self, mut line: String) {
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == RING_LINES {
            q.pop_front();
        }
        q.push_back(line);
    }

    /// The last `n` lines, oldest first.
    pub fn recent(&self, n: usize) -> Vec<String> {
        let q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().skip(q.len().saturating_sub(n)).cloned().collect()
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

/// Installs the global subscriber: compact lines on stderr (the serial console) filtered by
/// `RUST_LOG` (default `info`), plus the ring. Returns the ring. Call once per process.
pub fn init() -> LogRing {
    let ring = LogRing::new();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true);
    // A second init (tests) fails harmlessly; the ring then stays empty.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(RingLayer::new(ring.clone()))
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
}
