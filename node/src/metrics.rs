//! Prometheus metrics, served on the private network only (see `bootstrap`).
//!
//! Labels carry reasons and ids, never key material.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of join outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JoinLabels {
    /// `accepted` or `refused`.
    pub outcome: String,
    /// Reason for refusals (`attestation`, `invalid-request`, `removed`, ...), empty otherwise.
    pub reason: String,
}

/// Label of key requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyLabels {
    /// `ok` or the refusal reason.
    pub outcome: String,
}

/// The node's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Join tickets issued/refused.
    pub joins: Family<JoinLabels, Counter>,
    /// Key requests.
    pub key_requests: Family<KeyLabels, Counter>,
    /// Seconds spent issuing attestation documents.
    pub attestation_seconds: Histogram,
    /// Documents issued by the verification service.
    pub verifications: Counter,
    /// 1 while the state disk is unlocked and mounted.
    pub disk_unlocked: Gauge,
    /// 1 once this node is initialised or joined.
    pub bootstrapped: Gauge,
    /// WireGuard peers currently configured.
    pub wireguard_peers: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("constellation_node");
        let joins = Family::<JoinLabels, Counter>::default();
        registry.register(
            "joins",
            "Join and rejoin requests by outcome and reason",
            joins.clone(),
        );
        let key_requests = Family::<KeyLabels, Counter>::default();
        registry.register(
            "key_requests",
            "KeyService requests by outcome",
            key_requests.clone(),
        );
        let attestation_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "attestation_seconds",
            "Time to issue an attestation document",
            attestation_seconds.clone(),
        );
        let verifications = Counter::default();
        registry.register(
            "verifications",
            "Verification documents issued",
            verifications.clone(),
        );
        let disk_unlocked = Gauge::default();
        registry.register(
            "disk_unlocked",
            "1 while the state disk is unlocked",
            disk_unlocked.clone(),
        );
        let bootstrapped = Gauge::default();
        registry.register(
            "bootstrapped",
            "1 once initialised or joined",
            bootstrapped.clone(),
        );
        let wireguard_peers = Gauge::default();
        registry.register(
            "wireguard_peers",
            "WireGuard peers currently configured",
            wireguard_peers.clone(),
        );
        Self {
            registry: Arc::new(registry),
            joins,
            key_requests,
            attestation_seconds,
            verifications,
            disk_unlocked,
            bootstrapped,
            wireguard_peers,
        }
    }

    /// Counts a join outcome.
    pub fn join(&self, outcome: &str, reason: &str) {
        self.joins
            .get_or_create(&JoinLabels {
                outcome: outcome.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a key request.
    pub fn key(&self, outcome: &str) {
        self.key_requests
            .get_or_create(&KeyLabels {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        // Encoding into a String cannot fail except on a formatter bug; return what we have.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters() {
        let m = Metrics::new();
        m.join("refused", "attestation");
        m.key("ok");
        let t = m.encode();
        assert!(
            t.contains(
                "constellation_node_joins_total{outcome=\"refused\",reason=\"attestation\"} 1"
            ),
            "{t}"
        );
        assert!(t.contains("constellation_node_key_requests_total{outcome=\"ok\"} 1"));
    }
}
