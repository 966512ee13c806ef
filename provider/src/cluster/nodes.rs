//! Adding and removing nodes: a member joins (and is removed again if it does not), a
//! surplus or outdated member is retired, a dead one forgotten.

use std::time::Instant;

use constellation_node_api::v1::Refusal;
use tfplugin::Diagnostics;

use super::common::*;
use super::create::{add_node, join_endpoints, node_spec};
use super::executor::Apply;
use super::membership::wait_joined;
use super::record::*;
use super::recovery;
use crate::cloud::{Cloud, NodeRecord, NodeSpec, Role};
use crate::cluster_config::ClusterConfig;
use crate::node_client::{self, OwnerCredential};

/// Removes a node from the cluster: every other control plane forgets it (NotFound is
/// fine: it may never have joined there), then its machine goes and the record follows.
pub(super) async fn retire_node(
    cloud: &dyn Cloud,
    record: &mut ClusterRecord,
    owner: &OwnerCredential,
    node: &NodeRecord,
) -> Result<(), Diagnostics> {
    for cp in record.control_planes().filter(|c| c.name != node.name) {
        if let Some(addr) = cp.endpoints.management {
            node_client::remove_node(addr, owner, &node.name)
                .await
                .map_err(|e| err("Removing a node from the cluster failed", e.to_string()))?;
        }
    }
    cloud
        .delete_node(node)
        .await
        .map_err(|e| err("Removing a node failed", e.explained()))?;
    record.nodes.retain(|x| x.name != node.name);
    record
        .save()
        .map_err(|e| err("Recording the cluster failed", e))
}

/// Adds one node of `role` on the configured image and waits until it is a member (and,
/// for a control plane, serves its management API: a member is listed when its ticket is
/// issued, but serves only after it set up its disk). A node that does not get there is
/// removed again; `why` heads the error.
pub(super) async fn add_member(
    a: &Apply<'_>,
    record: &mut ClusterRecord,
    role: Role,
    why: &str,
    baseline: &[(String, Refusal)],
) -> Result<NodeRecord, Diagnostics> {
    let Apply {
        ctx,
        cloud,
        cfg,
        owner,
        deadline,
        ..
    } = *a;
    let spec = next_spec(record, cfg, role)?;
    add_node(cloud, record, &spec).await?;
    let node = record
        .nodes
        .iter()
        .find(|n| n.name == spec.name)
        .cloned()
        .ok_or_else(|| {
            err(
                "Recording the cluster failed",
                "the new node is not recorded",
            )
        })?;
    let mut joined = wait_joined(ctx, record, owner, deadline, baseline)
        .await
        .map(|_| ());
    if joined.is_ok()
        && let Some(addr) = node.endpoints.management
    {
        loop {
            let last = match node_client::status(addr, owner).await {
                Ok(_) => break,
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                joined = Err(err(
                    "Control plane not serving",
                    format!(
                        "{} joined but its management API did not answer before the \
                         timeout ({last}).",
                        spec.name
                    ),
                ));
                break;
            }
            pause(
                ctx,
                deadline,
                "waiting for the new control plane's management API",
            )
            .await?;
        }
    }
    if let Err(mut d) = joined {
        if let Err(e) = retire_node(cloud, record, owner, &node).await {
            d.extend(e);
        }
        d.error(
            why,
            format!(
                "{} (image {}) was removed again; the cluster runs as before.",
                spec.name, spec.image
            ),
        );
        return Err(d);
    }
    Ok(node)
}

/// One step of a rolling upgrade: a node on the configured image joins first (attested
/// against the current attestation config), then `old` is retired. If the new node does
/// not join, it is removed again and `old` keeps running, so the cluster never has fewer
/// members than before.
pub(super) async fn replace_node(
    a: &Apply<'_>,
    record: &mut ClusterRecord,
    old: &NodeRecord,
    baseline: &[(String, Refusal)],
) -> Result<(), Diagnostics> {
    tracing::info!(old = %old.name, image = %record.image_reference, "rolling upgrade: replacing node");
    let new = add_member(a, record, old.role, "Rolling upgrade stopped", baseline)
        .await
        .map_err(|mut d| {
            d.error(
                "Previous node kept",
                format!(
                    "{} was kept; nodes still on the previous image are replaced when you \
                 apply again.",
                    old.name
                ),
            );
            d
        })?;
    retire_node(a.cloud, record, a.owner, old).await?;
    tracing::info!(old = %old.name, new = %new.name, "rolling upgrade: node replaced");
    Ok(())
}

/// Removes a node whose machine is gone: the record forgets it, then every control plane
/// (failures there only warn: the member list is advisory for a machine that cannot return).
pub(super) async fn remove_dead(
    cloud: &dyn Cloud,
    record: &mut ClusterRecord,
    owner: &OwnerCredential,
    name: &str,
) -> Result<(), Diagnostics> {
    let n = recovery::known_node(record, name)?;
    tracing::warn!(node = %n.name, role = n.role.as_str(), "node VM is gone; removing it");
    cloud
        .delete_node(&n)
        .await
        .map_err(|e| err("Removing a node failed", e.explained()))?;
    record.nodes.retain(|x| x.name != n.name);
    record
        .save()
        .map_err(|e| err("Recording the cluster failed", e))?;
    for cp in record.control_planes() {
        if let Some(addr) = cp.endpoints.management
            && let Err(e) = node_client::remove_node(addr, owner, &n.name).await
        {
            tracing::warn!(node = %n.name, control_plane = %cp.name, error = %e, "could not remove the dead node from the member list");
        }
    }
    Ok(())
}

/// The spec of the next new node of `role`: the next unused number, the lowest free
/// address, the configured image, every control plane to join through.
pub(super) fn next_spec(
    record: &mut ClusterRecord,
    cfg: &ClusterConfig,
    role: Role,
) -> Result<NodeSpec, Diagnostics> {
    let i = match role {
        Role::ControlPlane => {
            record.next_control_plane += 1;
            record.next_control_plane - 1
        }
        Role::Worker => {
            record.next_worker += 1;
            record.next_worker - 1
        }
    };
    let join = join_endpoints(record);
    node_spec(cfg, role, i, &join, None, record)
}
