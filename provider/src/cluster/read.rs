//! Read (refresh with drift), delete and import, all starting from the record.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use constellation_attest::config::AttestationConfig;
use tfplugin::provider::{ApplyRequest, Context, ImportResponse, ReadRequest, StateResponse};
use tfplugin::{AttributePath, Diagnostics, Value};

use super::TYPE_NAME;
use super::common::*;
use super::membership::*;
use super::model::Prior;
use super::record::*;
use super::schema::*;
use crate::cloud::{MachineState, Role};
use crate::cluster_config::{self};

/// Read: the state from the record, the machines and the control planes, with drift (node
/// counts that run, the attestation config enforced) for the next plan to repair.
pub(super) async fn read(_ctx: &Context, request: ReadRequest) -> StateResponse {
    let prior_value = &request.current_state;
    let prior = match Prior::of(prior_value) {
        Ok(p) => p,
        Err(d) => return StateResponse::from_diagnostics(d),
    };
    let Ok(dir) = prior.work_dir() else {
        return StateResponse::new(Value::Null);
    };
    let record = match ClusterRecord::load(&dir) {
        Ok(Some(r)) => r,
        // The working directory is gone: so is the cluster.
        Ok(None) => {
            tracing::warn!(dir = %dir.display(), "cluster record missing; removing the cluster from state");
            return StateResponse::new(Value::Null);
        }
        Err(e) => return StateResponse::from_diagnostics(err("Unreadable cluster record", e)),
    };
    let cloud = record.cloud();
    let mut running = BTreeSet::new();
    let mut off = Vec::new();
    let mut unknown = Vec::new();
    for n in &record.nodes {
        match cloud.machine_state(n).await {
            Ok(MachineState::Running | MachineState::Stopped) => {
                running.insert(n.name.clone());
            }
            Ok(MachineState::Off) => off.push(n.name.clone()),
            Ok(MachineState::Gone) => {}
            // Unknown is not gone: the node stays in state as it was last seen.
            Err(e) => {
                running.insert(n.name.clone());
                unknown.push(format!("{}: {}", n.name, e.explained()));
            }
        }
    }
    if running.is_empty() && off.is_empty() {
        tracing::warn!(dir = %dir.display(), "no VM of the cluster is left; removing it from state");
        return StateResponse::new(Value::Null);
    }
    let mut d = Diagnostics::new();
    if !unknown.is_empty() {
        d.warning(
            "Machine state unknown",
            format!(
                "The {} backend could not say how these machines are; they are shown as \
                     last known:\n{}",
                cloud.name(),
                unknown.join("\n")
            ),
        );
    }
    if !off.is_empty() {
        // Counted as missing below, so the plan shows the drift; apply boots them again.
        d.warning(
            "Nodes are not running",
            format!(
                "{} stopped (crash or host reboot); their disks are kept. `terraform apply` \
                     boots them again and they rejoin the cluster{}.",
                off.join(", "),
                if running.is_empty() {
                    " (a control plane is recovered with the master secret first, since none runs)"
                } else {
                    ""
                }
            ),
        );
    }
    let mut state_cfg = prior_value.clone();
    let (joined, att) = match prior.owner() {
        // Nothing runs to ask (every node is off); membership shows as not joined.
        Some(_) if running.is_empty() => (BTreeMap::new(), None),
        Some(owner) => match members(&record, &owner).await {
            Ok(v) => (v.joined, v.attestation_config),
            Err(e) => {
                d.warning("Control planes unreachable", format!("Could not ask the control planes for members: {e}. Node membership is shown as last known."));
                (prior.joined(), None)
            }
        },
        None => (attested_members(&record, &prior, &running).await, None),
    };
    // Drift: counts are what actually runs, so a plan restores the configured numbers;
    // the attestation config is what the control planes enforce.
    for (attr, role, configured) in [
        (
            "control_plane_count",
            Role::ControlPlane,
            prior.control_plane_count.unwrap_or(1),
        ),
        (
            "worker_count",
            Role::Worker,
            prior.worker_count.unwrap_or(1),
        ),
    ] {
        let actual = record
            .nodes
            .iter()
            .filter(|n| n.role == role && running.contains(&n.name))
            .count() as u64;
        if actual != configured {
            tracing::warn!(attr, configured, actual, "node count drifted");
            let _ = state_cfg.set_at(&AttributePath::new(attr), Value::number(actual));
        }
    }
    if let Some(a) = att
        && !a.is_empty()
        && prior.attestation_config.as_deref() != Some(a.as_str())
    {
        // The same config may be spelled differently; only report a semantic change.
        let same = matches!(
            (AttestationConfig::from_json(a.as_bytes()), prior.attestation_config.as_deref().map(|p| AttestationConfig::from_json(p.as_bytes()))),
            (Ok(x), Some(Ok(y))) if x == y
        );
        if !same {
            let _ = state_cfg.set_at(&AttributePath::new("attestation_config"), Value::string(a));
        }
    }
    let mut nodes = node_states(&record, &joined);
    // Nodes whose VM does not run are reported as not joined.
    for n in &mut nodes {
        n.joined &= running.contains(&n.name);
    }
    let state = state_with_nodes(&record, &state_cfg, prior_value, &nodes);
    let mut resp = StateResponse::new(state);
    resp.diagnostics.extend(d);
    resp
}

/// Delete: the backend destroys every machine and the working directory.
pub(super) async fn delete(_ctx: &Context, request: ApplyRequest) -> Diagnostics {
    let Ok(dir) = Prior::of(&request.prior_state).and_then(|p| p.work_dir()) else {
        return Diagnostics::new();
    };
    let record = match ClusterRecord::load(&dir) {
        Ok(Some(r)) => r,
        Ok(None) => return Diagnostics::new(),
        Err(e) => return err("Unreadable cluster record", e),
    };
    let timeout = cluster_config::parse(&record.config_value())
        .0
        .map_or(cluster_config::DEFAULT_DELETE_TIMEOUT, |c| c.delete_timeout);
    match tokio::time::timeout(timeout, record.cloud().destroy()).await {
        Ok(Ok(())) => Diagnostics::new(),
        Ok(Err(e)) => err("Destroying the cluster failed", e.to_string()),
        Err(_) => err(
            "Timed out",
            format!(
                "Destroying the cluster took longer than {}.",
                humantime::format_duration(timeout)
            ),
        ),
    }
}

/// Import by working directory: the state is rebuilt from its record (no secrets).
pub(super) async fn import(_ctx: &Context, id: &str) -> ImportResponse {
    let dir = PathBuf::from(id);
    let dir = std::env::current_dir().map(|c| c.join(&dir)).unwrap_or(dir);
    match ClusterRecord::load(&dir) {
        Ok(Some(rec)) => {
            let mut prior = rec.config_value();
            let _ = prior.set_at(
                &AttributePath::new("id"),
                Value::string(rec.work_dir.display().to_string()),
            );
            let state = state_from(&rec, &prior, &Value::Null, &BTreeMap::new());
            ImportResponse::single(TYPE_NAME, state)
        }
        Ok(None) => ImportResponse::from_diagnostics(err(
            "No cluster to import",
            format!(
                "{} holds no {RECORD_FILE}. The import ID is the cluster's working directory (the `id` attribute), e.g. .constellation/<name>.",
                dir.display()
            ),
        )),
        Err(e) => ImportResponse::from_diagnostics(err("Unreadable cluster record", e)),
    }
}
