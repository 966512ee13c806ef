//! Read (refresh with drift), delete and import, all starting from the record.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use constellation_attest::config::AttestationConfig;
use tfplugin::provider::{ApplyRequest, Context, ImportResponse, ReadRequest, StateResponse};
use tfplugin::{AttributePath, Diagnostics, Value};

use super::TYPE_NAME;
use super::common::*;
use super::membership::*;
use super::record::*;
use super::schema::*;
use crate::cloud::{MachineState, Role};
use crate::cluster_config::{self};

// READ
pub(super) async fn read(_ctx: &Context, request: ReadRequest) -> StateResponse {
    let prior = &request.current_state;
    let Ok(dir) = work_dir_of(prior) else {
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
    let mut state_cfg = prior.clone();
    let (joined, att) = match owner_from_state(prior) {
        // Nothing runs to ask (every node is off); membership shows as not joined.
        Some(_) if running.is_empty() => (BTreeMap::new(), None),
        Some(owner) => match members(&record, &owner).await {
            Ok(v) => (v.joined, v.attestation_config),
            Err(e) => {
                d.warning("Control planes unreachable", format!("Could not ask the control planes for members: {e}. Node membership is shown as last known."));
                (prior_joined(prior), None)
            }
        },
        None => (attested_members(&record, prior, &running).await, None),
    };
    // Drift: counts are what actually runs, so a plan restores the configured numbers;
    // the attestation config is what the control planes enforce.
    for (attr, role, default) in [
        ("control_plane_count", Role::ControlPlane, 1u64),
        ("worker_count", Role::Worker, 1u64),
    ] {
        let configured = prior
            .get_attr(attr)
            .and_then(Value::as_number)
            .and_then(|n| n.as_u64())
            .unwrap_or(default);
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
        && prior.get_attr("attestation_config").and_then(Value::as_str) != Some(a.as_str())
    {
        // The same config may be spelled differently; only report a semantic change.
        let same = matches!(
            (AttestationConfig::from_json(a.as_bytes()), prior.get_attr("attestation_config").and_then(Value::as_str).map(|p| AttestationConfig::from_json(p.as_bytes()))),
            (Ok(x), Some(Ok(y))) if x == y
        );
        if !same {
            let _ = state_cfg.set_at(&AttributePath::new("attestation_config"), Value::string(a));
        }
    }
    let mut state = state_from(&record, &state_cfg, prior, &joined);
    // Nodes whose VM is gone are reported as not joined.
    if let Some(Value::List(nodes)) = state.get_attr("nodes").cloned() {
        let nodes = nodes
            .into_iter()
            .map(|mut n| {
                let name = n
                    .get_attr("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if !running.contains(&name) {
                    let _ = n.set_at(&AttributePath::new("joined"), Value::Bool(false));
                }
                n
            })
            .collect::<Vec<_>>();
        let _ = state.set_at(&AttributePath::new("nodes"), Value::list(nodes));
    }
    let mut resp = StateResponse::new(state);
    resp.diagnostics.extend(d);
    resp
}

pub(super) async fn delete(_ctx: &Context, request: ApplyRequest) -> Diagnostics {
    let Ok(dir) = work_dir_of(&request.prior_state) else {
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
