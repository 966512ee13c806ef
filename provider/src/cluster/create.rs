//! Create: boot the nodes, attest the first control plane, Init over aTLS, wait for every
//! node to join. What was made is reported as partial state when a create fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tfplugin::provider::{ApplyRequest, Context, StateResponse};
use tfplugin::{Diagnostics, Value};
use zeroize::Zeroizing;

use super::common::*;
use super::membership::*;
use super::model;
use super::record::*;
use super::schema::*;
use crate::cloud::ClusterEndpoint;
use crate::cloud::addresses;
use crate::cloud::qemu::{OVMF_CODE, OVMF_VARS, PrivateNetwork, QemuOptions};
use crate::cloud::{Cloud, MachineState, NodeSpec, Role};
use crate::cluster_config::{self, ClusterConfig};
use crate::create_marker::{self, CreateMarker, Decision, Found};
use crate::node_client::{self, OwnerCredential};
use constellation_node_api::v1::InitRequest;

/// How long a create may keep going after Terraform asked the provider to stop, or after its
/// timeout, before it is abandoned (every wait ends sooner on its own; this bounds a stuck
/// call).
pub(super) const STOP_GRACE: Duration = Duration::from_secs(5);

/// What a create has made so far: returned as partial state when it fails.
#[derive(Default)]
pub(super) struct Progress {
    /// The record, once the working directory holds one.
    record: Option<ClusterRecord>,
    /// Credentials and secrets once Init succeeded (state attributes), else null.
    credentials: Value,
    /// The working directory once this create's marker is in it.
    marked: Option<PathBuf>,
}

/// Secrets the provider holds while creating a cluster.
pub(super) struct Secrets {
    master: Zeroizing<Vec<u8>>,
    master_salt: Zeroizing<Vec<u8>>,
    measurement_salt: Vec<u8>,
    generated: bool,
}

/// `n` random bytes in a zeroizing buffer.
pub(super) fn random_bytes(n: usize) -> Zeroizing<Vec<u8>> {
    use rand::RngCore as _;
    let mut v = Zeroizing::new(vec![0u8; n]);
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// The spec of a new node: its name from `index`, the lowest free address of the node
/// network, the record's image.
pub(super) fn node_spec(
    cfg: &ClusterConfig,
    role: Role,
    index: u32,
    join: &[String],
    init_hash: Option<&str>,
    record: &ClusterRecord,
) -> Result<NodeSpec, Diagnostics> {
    let name = match role {
        Role::ControlPlane => cfg.control_plane_name(index),
        Role::Worker => cfg.worker_name(index),
    };
    let used: BTreeSet<std::net::Ipv4Addr> = record.nodes.iter().map(|n| n.private_ip).collect();
    let ip = addresses::allocate(cfg.node_cidr.addr, cfg.node_cidr.prefix, role, &name, &used)
        .map_err(|e| err_at("network", "Node network too small", e.to_string()))?;
    Ok(NodeSpec {
        name,
        role,
        private_ip: ip,
        prefix_len: cfg.node_cidr.prefix,
        join_endpoints: join.to_vec(),
        init_secret_hash: init_hash.map(str::to_owned),
        image_version: record.image_version.clone(),
        image: record.image_reference.clone(),
    })
}

/// The join endpoints (`ip:port`) of every recorded control plane.
pub(super) fn join_endpoints(record: &ClusterRecord) -> Vec<String> {
    record
        .control_planes()
        .map(|c| format!("{}:{}", c.private_ip, constellation_node_api::ports::JOIN))
        .collect()
}

/// Creates a VM and records it.
pub(super) async fn add_node(
    cloud: &dyn Cloud,
    record: &mut ClusterRecord,
    spec: &NodeSpec,
) -> Result<(), Diagnostics> {
    let node = cloud
        .create_node(spec)
        .await
        .map_err(|e| err("Starting a node failed", e.explained()))?;
    record.nodes.push(node);
    record
        .save()
        .map_err(|e| err("Recording the cluster failed", e))
}

/// Waits until the first control plane answers the aTLS handshake with a valid
/// attestation, then runs Init. Returns the success message.
pub(super) async fn initialise(
    ctx: &Context,
    record: &ClusterRecord,
    cfg: &ClusterConfig,
    secrets: &Secrets,
    init_secret: &[u8],
    deadline: Instant,
) -> Result<constellation_node_api::v1::InitSuccess, Diagnostics> {
    let (att, validators) = validators_for(&cfg.attestation_config)?;
    let cp0 = record
        .control_planes()
        .next()
        .ok_or_else(|| err("No control plane", "The cluster has no control plane."))?
        .clone();
    let Some(addr) = cp0.endpoints.init else {
        return Err(err(
            "No Init endpoint",
            "The first control plane has no Init port forward.",
        ));
    };
    let cloud = record.cloud();
    let started = Instant::now();
    let mut last;
    let channel = loop {
        let bound = Duration::from_secs(60)
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_secs(1));
        let attempt = node_client::attested_channel(addr, validators.clone(), bound);
        let attempt = tokio::select! {
            () = ctx.cancellation().cancelled() => return Err(err(
                "Cancelled",
                "Cancelled while waiting for the first control plane to attest.",
            )),
            r = attempt => r,
        };
        match attempt {
            Ok(c) => break c,
            Err(e) => {
                let msg = e.to_string();
                // A node that attests with wrong measurements will not change its mind.
                if msg.contains("measurement(s) differ") {
                    return Err(err(
                        "The first control plane failed attestation",
                        format!(
                            "{}\nThe node does not match `attestation_config`; Init was not sent and the master secret did not leave the provider. Check that the attestation config was built from the same image and that the image was not modified.",
                            name_registers(att.variant, &msg)
                        ),
                    ));
                }
                last = msg;
            }
        }
        if machine_down(&*cloud, &cp0).await {
            return Err(err(
                "The first control plane stopped",
                format!(
                    "{} is no longer running. Its console log ends with:\n{}",
                    cp0.name,
                    strip_ansi(&cloud.console_tail(&cp0, 3000).await)
                ),
            ));
        }
        if Instant::now() + Duration::from_secs(2) >= deadline {
            return Err(err(
                "The first control plane did not come up",
                format!(
                    "No attested connection to {} at {addr} before the create timeout; last error: {last}\nConsole log:\n{}",
                    cp0.name,
                    strip_ansi(&cloud.console_tail(&cp0, 3000).await)
                ),
            ));
        }
        pause(ctx, deadline, "waiting for the first control plane to boot").await?;
    };
    tracing::info!(node = %cp0.name, after_s = started.elapsed().as_secs_f64(), "first control plane attested");
    let request = InitRequest {
        master_secret: secrets.master.to_vec(),
        master_salt: secrets.master_salt.to_vec(),
        measurement_salt: secrets.measurement_salt.clone(),
        cluster_name: cfg.name.clone(),
        init_secret: init_secret.to_vec(),
        attestation_config_json: cfg.attestation_config.clone(),
        kubernetes_version: cfg.kubernetes_version.clone().unwrap_or_default(),
        pod_cidr: format!("{}/{}", cfg.pod_cidr.addr, cfg.pod_cidr.prefix),
        service_cidr: format!("{}/{}", cfg.service_cidr.addr, cfg.service_cidr.prefix),
        // The backend's load balancer when it has one; else empty, kubeadm's default (this
        // node's private IP).
        control_plane_endpoint: record
            .api_endpoint
            .kubernetes_api
            .clone()
            .unwrap_or_default(),
        api_server_cert_sans: record.api_endpoint.api_server_cert_sans.clone(),
    };
    let name = cp0.name.clone();
    let fut = node_client::init(channel, addr, request, |line| {
        tracing::info!(node = %name, "{line}");
    });
    tokio::select! {
        () = ctx.cancellation().cancelled() => Err(err("Cancelled", "Cancelled during Init.")),
        () = tokio::time::sleep_until(deadline.into()) => Err(err(
            "Timed out",
            "Init did not finish before the create timeout. Raise `timeouts.create` if the machine is slow.",
        )),
        r = fut => r.map_err(|e| err("Init failed", e.to_string())),
    }
}

/// The create's steps (see the module documentation).
pub(super) async fn create_inner(
    ctx: &Context,
    req: &ApplyRequest,
    progress: &mut Progress,
) -> Result<Value, Diagnostics> {
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
    let deadline = Instant::now() + cfg.create_timeout;
    let manifest = cluster_config::image_manifest(&cfg.image_reference)
        .map_err(|e| err_at("image_reference", "Image missing", e))?;
    let work_dir = cfg.work_dir();
    let qemu = QemuOptions {
        work_dir: work_dir.clone(),
        vcpus: cfg.qemu.vcpus,
        memory_mib: cfg.qemu.memory_mib,
        state_disk_mib: cfg.qemu.state_disk_mib,
        accel: cfg.qemu.accel,
        network: PrivateNetwork::random(),
        ovmf_code: OVMF_CODE.into(),
        ovmf_vars: OVMF_VARS.into(),
    };
    let mut fresh = ClusterRecord {
        version: RECORD_VERSION,
        name: cfg.name.clone(),
        work_dir: work_dir.clone(),
        backend: BackendOptions::Qemu(qemu),
        api_endpoint: ClusterEndpoint::default(),
        nodes: Vec::new(),
        next_worker: 0,
        next_control_plane: cfg.control_plane_count as u32,
        cluster_id: None,
        master_salt: None,
        image_version: manifest.version.clone(),
        image_reference: cfg.image_reference.clone(),
        config: config_echo(&req.planned_state),
    };
    let cloud = fresh.cloud();
    match create_marker::decide(&cfg.name, &inspect_work_dir(&work_dir).await?) {
        Decision::Create => {}
        Decision::RemoveLeftovers { reason } => {
            // Nothing records these remains, so nothing else would ever remove them;
            // they would also hold the name's ports and directory.
            tracing::warn!(dir = %work_dir.display(), %reason, "removing the remains of an unrecorded create");
            cloud.destroy().await.map_err(|e| {
                err(
                    "Removing the remains of an earlier create failed",
                    format!("{reason}; removing them failed: {e}"),
                )
            })?;
        }
        Decision::Refuse(why) => {
            return Err(err_at(
                "name",
                "The cluster's working directory is in use",
                format!("{}: {why}.", work_dir.display()),
            ));
        }
    }
    CreateMarker::for_this_process(&cfg.name)
        .write(&work_dir)
        .map_err(|e| err("Recording the create failed", e))?;
    progress.marked = Some(work_dir.clone());
    fresh.api_endpoint = cloud.prepare().await.map_err(|e| {
        err(
            &format!("The {} backend is not ready", cloud.name()),
            e.explained(),
        )
    })?;
    let rec = progress.record.insert(fresh);
    rec.save()
        .map_err(|e| err("Recording the cluster failed", e))?;

    let secrets = match model::master_secret_wo(&req.config)? {
        Some(s) => Secrets {
            master: cluster_config::parse_master_secret(&s.0)
                .map_err(|e| err_at("master_secret_wo", "Invalid master secret", e))?,
            master_salt: random_bytes(32),
            measurement_salt: random_bytes(32).to_vec(),
            generated: false,
        },
        None => Secrets {
            master: random_bytes(32),
            master_salt: random_bytes(32),
            measurement_salt: random_bytes(32).to_vec(),
            generated: true,
        },
    };
    rec.master_salt = Some(hex::encode(&*secrets.master_salt));
    rec.save()
        .map_err(|e| err("Recording the cluster failed", e))?;
    let init_secret = random_bytes(32);
    let init_hash = {
        let s = init_secret.clone();
        tokio::task::spawn_blocking(move || hash_init_secret(&s))
            .await
            .map_err(|e| err("Hashing the init secret failed", e.to_string()))?
            .map_err(|e| err("Hashing the init secret failed", e))?
    };

    let t0 = Instant::now();
    let spec = node_spec(&cfg, Role::ControlPlane, 0, &[], Some(&init_hash), rec)?;
    check_going(ctx, deadline, "starting the nodes")?;
    add_node(cloud.as_ref(), rec, &spec).await?;
    let join = join_endpoints(rec);
    for i in 1..cfg.control_plane_count as u32 {
        let spec = node_spec(&cfg, Role::ControlPlane, i, &join, None, rec)?;
        check_going(ctx, deadline, "starting all nodes")?;
        add_node(cloud.as_ref(), rec, &spec).await?;
    }
    for _ in 0..cfg.worker_count {
        let i = rec.next_worker;
        rec.next_worker += 1;
        let spec = node_spec(&cfg, Role::Worker, i, &join, None, rec)?;
        check_going(ctx, deadline, "starting all nodes")?;
        add_node(cloud.as_ref(), rec, &spec).await?;
    }
    tracing::info!(
        nodes = rec.nodes.len(),
        secs = t0.elapsed().as_secs_f64(),
        "VMs started"
    );

    let ok = initialise(ctx, rec, &cfg, &secrets, &init_secret, deadline).await?;
    tracing::info!(secs = t0.elapsed().as_secs_f64(), "cluster initialised");
    rec.cluster_id = Some(hex::encode(&ok.cluster_id));
    rec.save()
        .map_err(|e| err("Recording the cluster failed", e))?;
    let owner = OwnerCredential {
        ca_pem: ok.cluster_ca_pem.clone(),
        cert_pem: ok.owner_certificate_pem.clone(),
        key_pem: Zeroizing::new(ok.owner_private_key_pem.clone()),
    };
    let kubeconfig = if ok.kubeconfig.is_empty() {
        Value::Null
    } else {
        Value::string(String::from_utf8_lossy(&ok.kubeconfig).into_owned())
    };
    // From here on a failure leaves an initialised cluster: its owner keeps access.
    progress.credentials = Value::object([
        ("cluster_ca_pem", Value::string(ok.cluster_ca_pem)),
        (
            "owner_certificate_pem",
            Value::string(ok.owner_certificate_pem),
        ),
        (
            "owner_private_key_pem",
            Value::string(ok.owner_private_key_pem),
        ),
        ("kubeconfig", kubeconfig),
        ("kubernetes_status", Value::string(ok.kubernetes_status)),
        (
            "master_secret",
            if secrets.generated {
                Value::string(hex::encode(&*secrets.master))
            } else {
                Value::Null
            },
        ),
        (
            "master_salt",
            Value::string(hex::encode(&*secrets.master_salt)),
        ),
    ]);
    let joined = wait_joined(ctx, rec, &owner, deadline, &[]).await?;
    tracing::info!(secs = t0.elapsed().as_secs_f64(), "all nodes joined");
    Ok(state_from(
        rec,
        &req.planned_state,
        &progress.credentials,
        &joined,
    ))
}

/// What a create finds in its working directory (input of [`create_marker::decide`]).
pub(super) async fn inspect_work_dir(dir: &Path) -> Result<Found, Diagnostics> {
    let record = ClusterRecord::load(dir).map_err(|e| err("Unreadable cluster record", e))?;
    let mut record_all_gone = true;
    if let Some(r) = &record {
        let cloud = r.cloud();
        for n in &r.nodes {
            // An unanswered look-up counts as present: nothing is removed on a guess.
            if !matches!(cloud.machine_state(n).await, Ok(MachineState::Gone)) {
                record_all_gone = false;
            }
        }
    }
    let marker = CreateMarker::load(dir);
    Ok(Found {
        occupied: std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()),
        record: record.is_some(),
        record_all_gone,
        writer_alive: marker.as_ref().and_then(CreateMarker::writer_alive),
        marker,
    })
}

/// argon2id PHC hash of the init secret, as the node verifies it.
pub(super) fn hash_init_secret(secret: &[u8]) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(secret, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Create, bounded by the timeout and Terraform's stop signal; what was made comes back as
/// partial state with the error.
pub(super) async fn create(ctx: &Context, request: ApplyRequest) -> StateResponse {
    let mut progress = Progress::default();
    // Every wait inside ends on Terraform's stop signal and at the deadline; this bound
    // also covers a call that hangs.
    let timeout = cluster_config::parse(&request.config)
        .0
        .map_or(cluster_config::DEFAULT_CREATE_TIMEOUT, |c| c.create_timeout);
    let abandon_at = tokio::time::Instant::now() + timeout + STOP_GRACE;
    let outcome = {
        let work = create_inner(ctx, &request, &mut progress);
        tokio::pin!(work);
        tokio::select! {
            r = &mut work => r,
            () = async {
                ctx.cancellation().cancelled().await;
                tokio::time::sleep(STOP_GRACE).await;
            } => Err(err("Cancelled", "Terraform asked the provider to stop; the create was abandoned.")),
            () = tokio::time::sleep_until(abandon_at) => Err(err(
                "Timed out",
                format!("The create took longer than {}.", humantime::format_duration(timeout)),
            )),
        }
    };
    let resp = match (outcome, &progress.record) {
        (Ok(state), _) => StateResponse::new(state),
        (Err(mut d), Some(rec)) => {
            // What was made is reported with the error: Terraform keeps it (tainted), so
            // `destroy`, or the apply that replaces it, removes every VM and file.
            d.warning(
                    "The partly created cluster is kept in state",
                    format!(
                        "Its machines and files in {} stay until `terraform destroy` removes them                          (or `terraform apply` replaces the cluster, which Terraform marked                          tainted). Their logs are in nodes/*/serial.log there.",
                        rec.work_dir.display()
                    ),
                );
            let state = state_from(
                rec,
                &request.planned_state,
                &progress.credentials,
                &BTreeMap::new(),
            );
            StateResponse::partial(state, d)
        }
        (Err(d), None) => {
            // Nothing but (empty) directories was made.
            if let Some(dir) = &progress.marked {
                CreateMarker::remove(dir);
                let _ = std::fs::remove_dir(dir.join("nodes"));
                let _ = std::fs::remove_dir(dir);
            }
            StateResponse::from_diagnostics(d)
        }
    };
    // The result goes to Terraform now: the create is no longer unrecorded.
    if let Some(dir) = &progress.marked {
        CreateMarker::remove(dir);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_secret_hash_verifies_like_the_node_does() {
        use argon2::{PasswordHash, PasswordVerifier};
        let h = hash_init_secret(b"secret").unwrap();
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(
            argon2::Argon2::default()
                .verify_password(b"secret", &parsed)
                .is_ok()
        );
        assert!(
            argon2::Argon2::default()
                .verify_password(b"other", &parsed)
                .is_err()
        );
    }
}
