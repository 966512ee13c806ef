//! Update: observe the cluster, let the planner decide, carry the steps out through the
//! `Cloud` and the node clients.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use constellation_node_api::v1::Refusal;
use tfplugin::provider::{ApplyRequest, Context};
use tfplugin::{Diagnostics, Value};

use super::common::*;
use super::create::add_node;
use super::membership::{ClusterView, members, refusal_of, wait_joined};
use super::model::{self, Prior};
use super::nodes::{add_member, next_spec, remove_dead, replace_node, retire_node};
use super::owner;
use super::planner::{self, Blocked, Desired, NodeView, Observed, Step};
use super::record::*;
use super::recovery;
use super::schema::{config_echo, state_from};
use crate::cloud::{Cloud, CloudError, NodeRecord, Role};
use crate::cluster_config::{self, ClusterConfig};
use crate::node_client::{self, OwnerCredential};

/// What every step of an update works with.
#[derive(Clone, Copy)]
pub(super) struct Apply<'a> {
    /// Terraform's request context (cancellation).
    pub(super) ctx: &'a Context,
    /// The apply request (configuration, planned state).
    pub(super) req: &'a ApplyRequest,
    /// What the prior state holds.
    pub(super) prior: &'a Prior,
    /// The backend.
    pub(super) cloud: &'a dyn Cloud,
    /// The configuration being applied.
    pub(super) cfg: &'a ClusterConfig,
    /// The owner credential for the management API.
    pub(super) owner: &'a OwnerCredential,
    /// When the update's timeout ends.
    pub(super) deadline: Instant,
}

/// What the planner needs to know about each recorded node: its machine state (errors
/// kept apart, to be named) and whether a control plane refused it at join.
pub(super) async fn observe(
    cloud: &dyn Cloud,
    record: &ClusterRecord,
    view: &ClusterView,
) -> (Observed, BTreeMap<String, CloudError>) {
    let mut errors = BTreeMap::new();
    let mut nodes = Vec::new();
    for n in &record.nodes {
        let machine = match cloud.machine_state(n).await {
            Ok(s) => Some(s),
            Err(e) => {
                errors.insert(n.name.clone(), e);
                None
            }
        };
        let refused = !view.joined.contains_key(&n.name)
            && refusal_of(record, &view.refusals, &[n]).is_some();
        nodes.push(NodeView {
            name: n.name.clone(),
            role: n.role,
            image: n.image.clone(),
            machine,
            refused,
        });
    }
    let observed = Observed {
        nodes,
        recorded_image: record.image_reference.clone(),
    };
    (observed, errors)
}

/// The owner credential derived from the configuration's master secret, for a state that
/// holds none (after an import).
fn derived_owner(
    req: &ApplyRequest,
    record: &ClusterRecord,
) -> Result<OwnerCredential, Diagnostics> {
    let master = model::master_secret_wo(&req.config)?.ok_or_else(|| {
        err_at(
            "master_secret_wo",
            "No owner credential",
            "The state holds no owner credential (e.g. after an import). Set \
             `master_secret_wo` (and `master_secret_wo_version`) to the cluster's master \
             secret: the provider derives the owner credential from it.",
        )
    })?;
    let master = cluster_config::parse_master_secret(&master.0)
        .map_err(|e| err_at("master_secret_wo", "Invalid master secret", e))?;
    let salt = record
        .master_salt
        .as_deref()
        .and_then(|h| hex::decode(h).ok())
        .map(zeroize::Zeroizing::new)
        .ok_or_else(|| {
            err(
                "No owner credential",
                "Neither the state nor the cluster record holds the master salt (the cluster \
                 was created by an earlier provider version), so no owner credential can be \
                 derived. Recreate the cluster to manage it.",
            )
        })?;
    owner::derive(&master, &salt).map_err(|e| err("Deriving the owner credential failed", e))
}

/// The error for a plan that cannot be made.
fn blocked(b: Blocked, errors: &BTreeMap<String, CloudError>, backend: &str) -> Diagnostics {
    match b {
        Blocked::Unknown(names) => err(
            "Machine state unknown",
            format!(
                "The {backend} backend could not say whether these machines exist, so nothing \
                 was changed (no node is removed or added on a guess):\n{}",
                names
                    .iter()
                    .map(|n| match errors.get(n) {
                        Some(e) => format!("{n}: {}", e.explained()),
                        None => n.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        ),
        Blocked::NoControlPlane => err(
            "No control plane is running",
            "Every control plane's VM is gone together with its disks, so no node can \
             join or be changed and nothing is left to recover. Recreate the cluster \
             (`terraform apply -replace=...`).",
        ),
    }
}

/// Sets the configured attestation config on every control plane (the join service judges
/// the next joiner by it, no restart).
async fn push_attestation_config(
    record: &ClusterRecord,
    cfg: &ClusterConfig,
    owner: &OwnerCredential,
) -> Result<(), Diagnostics> {
    validators_for(&cfg.attestation_config)?;
    for cp in record.control_planes() {
        let Some(addr) = cp.endpoints.management else {
            continue;
        };
        let mut c = node_client::management(addr, owner)
            .await
            .map_err(|e| err("Updating the attestation config failed", e.to_string()))?;
        c.set_attestation_config(constellation_node_api::v1::SetAttestationConfigRequest {
            attestation_config_json: cfg.attestation_config.clone(),
        })
        .await
        .map_err(|s| {
            err_at(
                "attestation_config",
                "The control plane refused the attestation config",
                format!("{}: {}", cp.name, s.message()),
            )
        })?;
        tracing::info!(node = %cp.name, "attestation config updated");
    }
    Ok(())
}

/// The refusals the control planes list now: what was refused before a node is added is
/// not about that node, even when it gets an address a refused node had.
async fn refusals_now(record: &ClusterRecord, owner: &OwnerCredential) -> Vec<(String, Refusal)> {
    members(record, owner)
        .await
        .map(|v| v.refusals)
        .unwrap_or_default()
}

/// Update: observe, plan, carry the steps out; the state when every node is a member.
pub(super) async fn update(ctx: &Context, req: &ApplyRequest) -> Result<Value, Diagnostics> {
    let (cfg, d) = cluster_config::parse(&req.config);
    let Some(cfg) = cfg else {
        return Err(if d.has_errors() {
            d
        } else {
            err(
                "Configuration not known",
                "Some values are still unknown at apply time.",
            )
        });
    };
    let deadline = Instant::now() + cfg.update_timeout;
    let prior = Prior::of(&req.prior_state)?;
    let dir = prior.work_dir()?;
    let mut record = ClusterRecord::load(&dir)
        .map_err(|e| err("Unreadable cluster record", e))?
        .ok_or_else(|| {
            err(
                "Cluster vanished",
                format!(
                    "{} holds no cluster any more; run `terraform apply` again to recreate it.",
                    dir.display()
                ),
            )
        })?;
    let (owner, derived) = match prior.owner() {
        Some(o) => (o, false),
        None => (derived_owner(req, &record)?, true),
    };
    let cloud = record.cloud();
    let cloud = cloud.as_ref();
    let apply = Apply {
        ctx,
        req,
        prior: &prior,
        cloud,
        cfg: &cfg,
        owner: &owner,
        deadline,
    };

    // Observe, plan.
    let (view, asked) = match members(&record, &owner).await {
        Ok(v) => (v, None),
        Err(e) => (ClusterView::default(), Some(e)),
    };
    let (observed, errors) = observe(cloud, &record, &view).await;
    // A derived credential that no running control plane accepts comes from another secret.
    if derived
        && let Some(e) = asked
        && observed.nodes.iter().any(|n| {
            n.role == Role::ControlPlane && n.machine == Some(crate::cloud::MachineState::Running)
        })
    {
        return Err(err_at(
            "master_secret_wo",
            "The master secret does not open the cluster",
            format!(
                "The owner credential derived from `master_secret_wo` was not accepted by the \
                 running control planes ({e}). Set `master_secret_wo` to the secret this \
                 cluster was created with."
            ),
        ));
    }
    let desired = Desired {
        control_planes: cfg.control_plane_count as usize,
        workers: cfg.worker_count as usize,
        image: cfg.image_reference.clone(),
        attestation_config_changed: prior.attestation_config.as_deref()
            != Some(cfg.attestation_config.as_str()),
    };
    let steps =
        planner::plan(&desired, &observed).map_err(|b| blocked(b, &errors, cloud.name()))?;
    tracing::info!(?steps, "update planned");

    // Carry out.
    let mut baseline = view.refusals;
    let mut before_workers: Option<BTreeSet<String>> = None;
    for step in steps {
        match step {
            Step::Start(name) => recovery::start_node(cloud, &mut record, &cfg, &name).await?,
            Step::Recover(name) => {
                let (att, validators) = recovery::restart_validators(&prior, &cfg)?;
                let cp = recovery::known_node(&record, &name)?;
                recovery::recover(&apply, &record, &cp, &validators, att.variant).await?;
            }
            Step::AwaitRejoin(names) => {
                let (_, validators) = recovery::restart_validators(&prior, &cfg)?;
                recovery::wait_rejoined(ctx, &record, &names, &validators, &owner, deadline)
                    .await?;
            }
            Step::PushAttestationConfig => {
                push_attestation_config(&record, &cfg, &owner).await?;
            }
            Step::RemoveDead(name) => remove_dead(cloud, &mut record, &owner, &name).await?,
            Step::RemoveRefused(name) => {
                let n = recovery::known_node(&record, &name)?;
                retire_node(cloud, &mut record, &owner, &n).await?;
                tracing::warn!(node = %name, "node refused at join removed");
            }
            Step::AdoptImage => {
                let manifest = cluster_config::image_manifest(&cfg.image_reference)
                    .map_err(|e| err_at("image_reference", "Image missing", e))?;
                record.image_reference = cfg.image_reference.clone();
                record.image_version = manifest.version;
                record
                    .save()
                    .map_err(|e| err("Recording the cluster failed", e))?;
            }
            Step::Retire(name) => {
                let n = recovery::known_node(&record, &name)?;
                retire_node(cloud, &mut record, &owner, &n).await?;
                tracing::info!(node = %name, role = n.role.as_str(), "node removed");
            }
            Step::Replace(name) => {
                let old = recovery::known_node(&record, &name)?;
                baseline = refusals_now(&record, &owner).await;
                replace_node(&apply, &mut record, &old, &baseline).await?;
            }
            Step::AddControlPlane => {
                baseline = refusals_now(&record, &owner).await;
                let n = add_member(
                    &apply,
                    &mut record,
                    Role::ControlPlane,
                    "Adding a control plane failed",
                    &baseline,
                )
                .await?;
                tracing::info!(node = %n.name, "control plane added");
            }
            Step::AddWorkers(count) => {
                baseline = refusals_now(&record, &owner).await;
                before_workers = Some(record.nodes.iter().map(|n| n.name.clone()).collect());
                for _ in 0..count {
                    let spec = next_spec(&mut record, &cfg, Role::Worker)?;
                    add_node(cloud, &mut record, &spec).await?;
                }
            }
            Step::AwaitJoined => {
                record.config = config_echo(&req.planned_state);
                record
                    .save()
                    .map_err(|e| err("Recording the cluster failed", e))?;
                let joined = match wait_joined(ctx, &record, &owner, deadline, &baseline).await {
                    Ok(j) => j,
                    Err(mut d) => {
                        // Workers added here that did not join are of no use (refused, or
                        // broken): remove them so the cluster stays as it was.
                        let before = before_workers.take().unwrap_or_default();
                        let added: Vec<NodeRecord> = record
                            .nodes
                            .iter()
                            .filter(|n| !before.is_empty() && !before.contains(&n.name))
                            .cloned()
                            .collect();
                        for n in added {
                            if let Err(e) = cloud.delete_node(&n).await {
                                d.error("Removing a node that did not join failed", e.explained());
                            }
                            record.nodes.retain(|x| x.name != n.name);
                        }
                        if let Err(e) = record.save() {
                            d.error("Recording the cluster failed", e);
                        }
                        return Err(d);
                    }
                };
                return Ok(state_from(
                    &record,
                    &req.planned_state,
                    &req.prior_state,
                    &joined,
                ));
            }
        }
    }
    Err(err(
        "Internal error",
        "The update plan ended without waiting for the members.",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::memory::MemoryCloud;
    use crate::cloud::{ErrorClass, MachineState, NodeSpec};
    use std::time::Duration;

    fn spec(name: &str, role: Role, ip: [u8; 4]) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            role,
            private_ip: ip.into(),
            prefix_len: 24,
            join_endpoints: Vec::new(),
            init_secret_hash: None,
            image_version: "v1".into(),
            image: "/img/v1/disk.raw".into(),
        }
    }

    /// A cluster of one control plane and two workers on the in-memory backend.
    async fn cluster(dir: &std::path::Path) -> (MemoryCloud, ClusterRecord) {
        let cloud = MemoryCloud::default();
        let mut record = test_record(Vec::new());
        record.work_dir = dir.to_path_buf();
        let crate::cluster::record::BackendOptions::Qemu(q) = &mut record.backend;
        q.work_dir = dir.to_path_buf();
        record.api_endpoint = cloud.prepare().await.unwrap();
        for (name, role, ip) in [
            ("acc-cp-0", Role::ControlPlane, [10, 42, 0, 10]),
            ("acc-worker-0", Role::Worker, [10, 42, 0, 100]),
            ("acc-worker-1", Role::Worker, [10, 42, 0, 101]),
        ] {
            add_node(&cloud, &mut record, &spec(name, role, ip))
                .await
                .unwrap();
        }
        (cloud, record)
    }

    fn desired(workers: usize) -> Desired {
        Desired {
            control_planes: 1,
            workers,
            image: "/img/v1/disk.raw".into(),
            attestation_config_changed: false,
        }
    }

    #[tokio::test]
    async fn observed_states_drive_the_plan_and_api_errors_block_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cloud, record) = cluster(dir.path()).await;
        assert_eq!(
            record.api_endpoint.kubernetes_api.as_deref(),
            Some("lb.example:6443")
        );
        assert!(
            record
                .nodes
                .iter()
                .all(|n| n.backend_id.starts_with("mem-"))
        );
        cloud.set_state("acc-worker-0", MachineState::Off);
        cloud.set_state("acc-worker-1", MachineState::Gone);
        let (observed, errors) = observe(&cloud, &record, &ClusterView::default()).await;
        assert!(errors.is_empty());
        assert_eq!(
            planner::plan(&desired(2), &observed).unwrap(),
            [
                Step::Start("acc-worker-0".into()),
                Step::AwaitRejoin(vec!["acc-worker-0".into()]),
                Step::RemoveDead("acc-worker-1".into()),
                Step::AddWorkers(1),
                Step::AwaitJoined,
            ]
        );

        // The backend's API fails for the control plane: nothing is planned, the error
        // names the node and says what to do.
        cloud.fail_machine_state("acc-cp-0");
        let (observed, errors) = observe(&cloud, &record, &ClusterView::default()).await;
        let b = planner::plan(&desired(2), &observed).unwrap_err();
        assert_eq!(b, Blocked::Unknown(vec!["acc-cp-0".into()]));
        let d = format!("{:?}", blocked(b, &errors, cloud.name()));
        assert!(d.contains("acc-cp-0") && d.contains("apply` again"), "{d}");
        assert!(!cloud.calls().iter().any(|c| c.starts_with("delete")));
    }

    #[tokio::test]
    async fn dead_nodes_leave_record_and_backend_and_new_ones_get_free_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let (cloud, mut record) = cluster(dir.path()).await;
        let owner = OwnerCredential {
            ca_pem: String::new(),
            cert_pem: String::new(),
            key_pem: zeroize::Zeroizing::new(String::new()),
        };
        cloud.set_state("acc-worker-0", MachineState::Gone);
        remove_dead(&cloud, &mut record, &owner, "acc-worker-0")
            .await
            .unwrap();
        assert!(record.node("acc-worker-0").is_none());
        assert!(cloud.calls().contains(&"delete acc-worker-0".to_string()));
        let saved = ClusterRecord::load(dir.path()).unwrap().unwrap();
        assert_eq!(saved.nodes.len(), 2);

        // The next worker takes the freed address, under a new name.
        let cfg = test_config();
        record.next_worker = 2;
        let s = next_spec(&mut record, &cfg, Role::Worker).unwrap();
        assert_eq!(s.name, "acc-worker-2");
        assert_eq!(s.private_ip, std::net::Ipv4Addr::new(10, 42, 0, 100));
        assert_eq!(s.join_endpoints.len(), 1);

        // A quota error says what to do and leaves nothing behind.
        cloud.fail_next_create(ErrorClass::Quota);
        let e = add_node(&cloud, &mut record, &s).await.unwrap_err();
        let d = format!("{e:?}");
        assert!(d.contains("quota"), "{d}");
        assert_eq!(record.nodes.len(), 2);
        assert!(!cloud.machines().contains_key("acc-worker-2"));
    }

    fn test_config() -> ClusterConfig {
        use cluster_config::{Cidr, QemuSettings};
        let cidr = |s: &str| Cidr::parse(s).unwrap();
        ClusterConfig {
            name: "acc".into(),
            qemu: QemuSettings {
                vcpus: 1,
                memory_mib: 1024,
                state_disk_mib: 256,
                accel: crate::cloud::qemu::Accel::Tcg,
                working_dir: None,
            },
            control_plane_count: 1,
            worker_count: 2,
            image_reference: "/img/v1/disk.raw".into(),
            attestation_config: "{}".into(),
            kubernetes_version: None,
            node_cidr: cidr("10.42.0.0/24"),
            pod_cidr: cidr("10.244.0.0/16"),
            service_cidr: cidr("10.96.0.0/12"),
            create_timeout: Duration::from_secs(1),
            update_timeout: Duration::from_secs(1),
            delete_timeout: Duration::from_secs(1),
        }
    }
}
