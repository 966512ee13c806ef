//! Who is a member: the control planes' view (`GetStatus`), attestation of a node's
//! cluster-ID measurement, refusals at join, and waiting until nodes joined.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use constellation_attest::Validators;
use tfplugin::Diagnostics;
use tfplugin::provider::Context;

use super::common::*;
use super::model::Prior;
use super::record::*;
use crate::cloud::NodeRecord;
#[cfg(test)]
use crate::cloud::Role;
use crate::node_client::{self, OwnerCredential};
use constellation_node_api::v1::Refusal;

/// The cluster as its control planes report it (`GetStatus` on each, merged).
#[derive(Debug, Default)]
pub(super) struct ClusterView {
    /// Member name → image version.
    pub(super) joined: BTreeMap<String, String>,
    /// The attestation config a control plane enforces.
    pub(super) attestation_config: Option<String>,
    /// (control plane, refused handshake), oldest first per control plane.
    pub(super) refusals: Vec<(String, constellation_node_api::v1::Refusal)>,
}

pub(super) async fn members(
    record: &ClusterRecord,
    owner: &OwnerCredential,
) -> Result<ClusterView, String> {
    let mut view = ClusterView::default();
    let mut last_err = None;
    for cp in record.control_planes() {
        let Some(addr) = cp.endpoints.management else {
            continue;
        };
        match node_client::status(addr, owner).await {
            Ok(st) => {
                for n in st.nodes {
                    view.joined.insert(n.name, n.image_version);
                }
                view.attestation_config
                    .get_or_insert(st.attestation_config_json);
                view.refusals
                    .extend(st.recent_refusals.into_iter().map(|r| (cp.name.clone(), r)));
            }
            Err(e) => last_err = Some(e.to_string()),
        }
    }
    if view.joined.is_empty()
        && let Some(e) = last_err
    {
        return Err(e);
    }
    Ok(view)
}

/// Whether the node at `n` attests (fresh nonce, `validators`) with the cluster-ID
/// measurement of cluster `id`, i.e. it joined, rejoined or was recovered into it.
pub(super) async fn attests_membership(n: &NodeRecord, validators: &Validators, id: &[u8]) -> bool {
    match node_client::verify(n.endpoints.verify_grpc, validators).await {
        Ok(c) => {
            let (index, want) =
                constellation_attest::measurements::cluster_id_measurement(c.variant, id);
            if c.measurements.get(&index) == Some(&want) {
                return true;
            }
            tracing::warn!(node = %n.name, "node attests but is not a member of this cluster (cluster-ID measurement)");
            false
        }
        Err(e) => {
            tracing::debug!(node = %n.name, error = %e, "node failed verification");
            false
        }
    }
}

/// Waits until every recorded node is a member.
pub(super) async fn wait_joined(
    ctx: &Context,
    record: &ClusterRecord,
    owner: &OwnerCredential,
    deadline: Instant,
    baseline: &[(String, Refusal)],
) -> Result<BTreeMap<String, String>, Diagnostics> {
    let cloud = record.cloud();
    loop {
        let view = tokio::select! {
            () = ctx.cancellation().cancelled() => {
                return Err(err("Cancelled", "Cancelled while waiting for nodes to join."));
            }
            v = members(record, owner) => v.unwrap_or_default(),
        };
        let joined = view.joined;
        let missing: Vec<&NodeRecord> = record
            .nodes
            .iter()
            .filter(|n| !joined.contains_key(&n.name))
            .collect();
        if missing.is_empty() {
            return Ok(joined);
        }
        // Refusals listed before the nodes were added are about earlier nodes (addresses are
        // used again).
        let fresh: Vec<(String, Refusal)> = view
            .refusals
            .into_iter()
            .filter(|r| !baseline.contains(r))
            .collect();
        if let Some(refusal) = refusal_of(record, &fresh, &missing) {
            return Err(refusal);
        }
        let words = WaitWords {
            stopped: "A node stopped before joining",
            not_yet: "has not joined",
            late: "Nodes did not join in time",
            waiting: "waiting for nodes to join",
        };
        wait_round(ctx, cloud.as_ref(), &missing, deadline, &words).await?;
    }
}

/// A control plane that refused a joining node says why (`GetStatus.recent_refusals`: the
/// peer's address and the validator's reasons). Finding it turns a long wait for a timeout
/// into an immediate error naming the failed measurements.
pub(super) fn refusal_of(
    record: &ClusterRecord,
    refusals: &[(String, constellation_node_api::v1::Refusal)],
    missing: &[&NodeRecord],
) -> Option<Diagnostics> {
    for n in missing {
        let ip = n.private_ip.to_string();
        let Some((cp, r)) = refusals.iter().rev().find(|(_, r)| {
            r.peer.rsplit_once(':').map_or(r.peer.as_str(), |(h, _)| h) == ip
                && is_attestation_verdict(&r.reason)
        }) else {
            continue;
        };
        let reason = match record.variant() {
            Some(v) => name_registers(v, &r.reason),
            None => r.reason.clone(),
        };
        return Some(err(
            "A node was refused at join",
            format!(
                "Control plane {cp} refused {} ({ip}) at {}: {reason}\nThe node does not match `attestation_config`: it booted a different image or was tampered with. It got no key and no ticket.",
                n.name, r.time
            ),
        ));
    }
    None
}

/// Whether a control plane's refusal reason is a verdict on the node's image: its attestation
/// evidence was checked and failed. A timeout or a reset connection (a slow quote, a client
/// retry) is not, even from a control plane that still lists those; nor is "no validator
/// configured", which every joiner gets before Init and then retries.
fn is_attestation_verdict(reason: &str) -> bool {
    reason.starts_with(constellation_attest::atls::REJECTED_PREFIX)
        && !reason.contains("no validator configured")
}

/// Without an owner credential (after an import) membership is established by attestation:
/// a node is a member when its verification service's document validates against the
/// attestation config and its PCR 15 holds this cluster's ID.
pub(super) async fn attested_members(
    record: &ClusterRecord,
    prior: &Prior,
    running: &BTreeSet<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let (Some(att), Some(id)) = (
        prior.attestation_config.as_deref(),
        record
            .cluster_id
            .as_deref()
            .and_then(|h| hex::decode(h).ok()),
    ) else {
        return out;
    };
    let Ok((_, validators)) = validators_for(att) else {
        return out;
    };
    for n in record.nodes.iter().filter(|n| running.contains(&n.name)) {
        if attests_membership(n, &validators, &id).await {
            out.insert(n.name.clone(), record.image_version.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_of_missing_nodes_fail_fast_and_name_pcrs() {
        use constellation_node_api::v1::Refusal;
        let w = test_node("acc-worker-1", Role::Worker, [10, 42, 0, 101], "/i");
        let r = test_record(vec![w.clone()]);
        let refusal = |peer: &str, reason: &str| {
            (
                "acc-cp-0".to_string(),
                Refusal {
                    peer: peer.into(),
                    time: "2026-11-26T00:00:00Z".into(),
                    reason: reason.into(),
                },
            )
        };
        // Before Init everyone is refused; not a verdict. Other peers do not count.
        let list = vec![
            refusal(
                "10.42.0.101:40000",
                "peer attestation rejected: no validator configured for attestation variant qemu-vtpm (configured: [])",
            ),
            refusal(
                "10.42.0.102:40000",
                "peer attestation rejected: 1 measurement(s) differ: index 9",
            ),
        ];
        assert!(refusal_of(&r, &list, &[&w]).is_none());
        let list = vec![refusal(
            "10.42.0.101:40001",
            "peer attestation rejected: 1 measurement(s) differ: index 9: expected aa, got bb",
        )];
        let d = format!("{:?}", refusal_of(&r, &list, &[&w]).unwrap());
        assert!(d.contains("acc-worker-1"), "{d}");
        assert!(d.contains("index 9") || d.contains("PCR 9"), "{d}");
    }

    #[test]
    fn transient_handshake_failures_do_not_fail_the_wait_for_joins() {
        use constellation_node_api::v1::Refusal;
        let w = test_node("acc-worker-1", Role::Worker, [10, 42, 0, 101], "/i");
        let r = test_record(vec![w.clone()]);
        // What a control plane lists for a joiner whose quote is slow under TCG or whose client
        // retried: the wait for joins goes on.
        let transient = [
            "aTLS handshake timed out after 60s",
            "TLS handshake failed: connection reset by peer",
            "TLS handshake failed: unexpected end of file",
        ];
        let list: Vec<(String, Refusal)> = transient
            .iter()
            .map(|reason| {
                (
                    "acc-cp-0".to_string(),
                    Refusal {
                        peer: "10.42.0.101:40000".into(),
                        time: "2026-11-26T00:00:00Z".into(),
                        reason: (*reason).into(),
                    },
                )
            })
            .collect();
        assert!(refusal_of(&r, &list, &[&w]).is_none());
        // The same text as the node's aTLS error, built from the error type itself.
        let timeout =
            constellation_attest::atls::AtlsError::Timeout(std::time::Duration::from_secs(60));
        assert!(!is_attestation_verdict(&timeout.to_string()));
    }
}
