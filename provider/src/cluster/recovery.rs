//! Machines that stopped (crash, host reboot) boot again from their kept disks; with no
//! control plane left running, one is recovered with the master secret after it attested.

use std::time::{Duration, Instant};

use constellation_attest::Validators;
use constellation_attest::Variant;
use constellation_attest::config::AttestationConfig;
use tfplugin::Diagnostics;
use tfplugin::provider::{ApplyRequest, Context};

use super::common::*;
use zeroize::Zeroizing;

use super::executor::Apply;
use super::membership::*;
use super::model::{self, Prior};
use super::record::*;
use crate::cloud::{Cloud, NodeRecord, NodeSpec};
use crate::cluster_config::{self, ClusterConfig};
use crate::node_client::{self, OwnerCredential};

/// ones it last heard of). No init-secret hash: an initialised node never runs Init.
pub(super) fn restart_spec(
    cfg: &ClusterConfig,
    record: &ClusterRecord,
    node: &NodeRecord,
) -> NodeSpec {
    NodeSpec {
        name: node.name.clone(),
        role: node.role,
        private_ip: node.private_ip,
        prefix_len: cfg.node_cidr.prefix,
        join_endpoints: record
            .control_planes()
            .filter(|c| c.name != node.name)
            .map(|c| format!("{}:{}", c.private_ip, constellation_node_api::ports::JOIN))
            .collect(),
        init_secret_hash: None,
        image_version: record.image_version.clone(),
        image: if node.image.is_empty() {
            record.image_reference.clone()
        } else {
            node.image.clone()
        },
    }
}

/// Boots `name`, whose machine is off (crash, host reboot), from its kept disks.
pub(super) async fn start_node(
    cloud: &dyn Cloud,
    record: &mut ClusterRecord,
    cfg: &ClusterConfig,
    name: &str,
) -> Result<(), Diagnostics> {
    let n = known_node(record, name)?;
    let spec = restart_spec(cfg, record, &n);
    let started = cloud.start_node(&n, &spec).await.map_err(|e| {
        err(
            "Restarting a node failed",
            format!(
                "{}\nThe node's disks are kept; fix the cause and run `terraform apply` again.",
                e.explained()
            ),
        )
    })?;
    if let Some(slot) = record.nodes.iter_mut().find(|x| x.name == n.name) {
        *slot = started;
    }
    record
        .save()
        .map_err(|e| err("Recording the cluster failed", e))?;
    tracing::info!(node = %n.name, role = n.role.as_str(), "node restarted from its kept disks");
    Ok(())
}

/// The validators restarted nodes are checked with: they run the image they ran before, so
/// they attest against the config the cluster enforced, not one this apply may be about to
/// push.
pub(super) fn restart_validators(
    prior: &Prior,
    cfg: &ClusterConfig,
) -> Result<(AttestationConfig, Validators), Diagnostics> {
    let att = prior
        .attestation_config
        .as_deref()
        .unwrap_or(&cfg.attestation_config);
    validators_for(att)
}

/// The recorded node `name` (the planner only names recorded nodes).
pub(super) fn known_node(record: &ClusterRecord, name: &str) -> Result<NodeRecord, Diagnostics> {
    record.node(name).cloned().ok_or_else(|| {
        err(
            "Internal error",
            format!("the update names node {name}, which the cluster record does not hold"),
        )
    })
}

/// The master secret and salt for recovery: the write-only attribute from this apply's
/// configuration, else the generated secret in state.
pub(super) fn recovery_secrets(
    req: &ApplyRequest,
    prior: &Prior,
    record: &ClusterRecord,
) -> Result<MasterAndSalt, Diagnostics> {
    let master = match model::master_secret_wo(&req.config)? {
        Some(s) => cluster_config::parse_master_secret(&s.0)
            .map_err(|e| err_at("master_secret_wo", "Invalid master secret", e))?,
        None => Prior::hex(&prior.master_secret).ok_or_else(|| {
            err_at(
                "master_secret_wo",
                "Master secret needed for recovery",
                "No control plane is running, so one must be recovered with the cluster's \
                 master secret, which is neither in state (it was given write-only) nor in \
                 this configuration: set `master_secret_wo` to the secret the cluster was \
                 created with.",
            )
        })?,
    };
    // After an import the state has no salt; the record keeps it.
    let salt = Prior::hex(&prior.master_salt)
        .or_else(|| {
            record
                .master_salt
                .as_deref()
                .and_then(|h| hex::decode(h).ok())
                .map(Zeroizing::new)
        })
        .ok_or_else(|| {
            err(
                "Master salt missing",
                "The state holds no `master_salt`, which recovery needs with the master secret.",
            )
        })?;
    Ok((master, salt))
}

/// Recovers `cp` (waiting for recovery after a reboot): it must attest, then gets the
/// master secret, unlocks its disk and locks itself to the cluster again.
pub(super) async fn recover(
    a: &Apply<'_>,
    record: &ClusterRecord,
    cp: &NodeRecord,
    validators: &Validators,
    variant: Variant,
) -> Result<(), Diagnostics> {
    let Apply {
        ctx,
        cloud,
        deadline,
        ..
    } = *a;
    let (master, salt) = recovery_secrets(a.req, a.prior, record)?;
    let Some(addr) = cp.endpoints.recovery else {
        return Err(err(
            "No recovery endpoint",
            format!("{} has no recovery port forward.", cp.name),
        ));
    };
    let mut last;
    loop {
        match node_client::recover(addr, validators.clone(), &master, &salt).await {
            Ok(node_client::Recovered::Now(id)) => {
                if record.cluster_id.as_deref() != Some(hex::encode(&id).as_str()) {
                    return Err(err(
                        "Recovered into another cluster",
                        format!(
                            "{} reports cluster ID {} after recovery, but this cluster is {}.",
                            cp.name,
                            hex::encode(&id),
                            record.cluster_id.as_deref().unwrap_or("unknown")
                        ),
                    ));
                }
                tracing::info!(node = %cp.name, "control plane recovered with the master secret");
                return Ok(());
            }
            Ok(node_client::Recovered::Already) => return Ok(()),
            Err(e) => {
                let msg = e.to_string();
                if msg.contains("measurement(s) differ") {
                    return Err(err(
                        "A control plane failed attestation during recovery",
                        format!(
                            "{}\nThe master secret was not sent. The node no longer matches the attestation config the cluster enforces.",
                            name_registers(variant, &msg)
                        ),
                    ));
                }
                if msg.contains("PermissionDenied") || msg.contains("InvalidArgument") {
                    return Err(err(
                        "Recovery refused",
                        format!(
                            "{}: {msg}\nCheck that `master_secret_wo` is the secret this cluster was created with.",
                            cp.name
                        ),
                    ));
                }
                last = msg;
            }
        }
        if machine_down(cloud, cp).await {
            return Err(err(
                "A control plane stopped during recovery",
                format!(
                    "{} is no longer running. Its console log ends with:\n{}",
                    cp.name,
                    strip_ansi(&cloud.console_tail(cp, 3000).await)
                ),
            ));
        }
        if Instant::now() + Duration::from_secs(2) >= deadline {
            return Err(err(
                "Recovery did not complete in time",
                format!(
                    "{} at {addr}; last error: {last}\nConsole log:\n{}",
                    cp.name,
                    strip_ansi(&cloud.console_tail(cp, 3000).await)
                ),
            ));
        }
        pause(
            ctx,
            deadline,
            "waiting for a control plane to take recovery",
        )
        .await?;
    }
}

/// Waits until each named node attests with the cluster-ID measurement (it rejoined or
/// was recovered) and, for control planes, answers the management API.
pub(super) async fn wait_rejoined(
    ctx: &Context,
    record: &ClusterRecord,
    names: &[String],
    validators: &Validators,
    owner: &OwnerCredential,
    deadline: Instant,
) -> Result<(), Diagnostics> {
    let id = record
        .cluster_id
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| err("No cluster ID", "The cluster record holds no cluster ID."))?;
    let cloud = record.cloud();
    loop {
        let mut pending = Vec::new();
        for n in record.nodes.iter().filter(|n| names.contains(&n.name)) {
            let member = attests_membership(n, validators, &id).await;
            let serving = match (member, n.endpoints.management) {
                (true, Some(addr)) => node_client::status(addr, owner).await.is_ok(),
                (m, _) => m,
            };
            if !serving {
                pending.push(n);
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        let words = WaitWords {
            stopped: "A restarted node stopped",
            not_yet: "did not rejoin",
            late: "Restarted nodes did not rejoin in time",
            waiting: "waiting for restarted nodes to rejoin",
        };
        wait_round(ctx, cloud.as_ref(), &pending, deadline, &words).await?;
    }
}
