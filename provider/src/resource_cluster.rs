//! `constellation_cluster`: boots measured nodes, validates the first control plane by
//! attestation, initialises the cluster over aTLS, waits for every node to join, and keeps
//! the cluster in step with the configuration (worker scaling, attestation config).
//!
//! The cluster's working directory holds a record (`cluster.json`, no secrets) of what was
//! created; Read, Delete and Import start from it, so state and machines cannot drift apart
//! silently. Secrets (master secret, owner key, kubeconfig) live only in Terraform state as
//! sensitive values — or, with `master_secret_wo`, the master secret lives nowhere but the
//! configuration and the nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use constellation_attest::Validators;
use constellation_attest::config::AttestationConfig;
use constellation_node_api::v1::InitRequest;
use serde::{Deserialize, Serialize};
use tfplugin::provider::{
    ApplyRequest, Context, ImportResponse, PlanRequest, PlanResponse, ReadRequest, Resource,
    StateResponse,
};
use tfplugin::{
    Attribute, AttributePath, Block, Diagnostics, NestedAttributes, NestedBlock, Schema, Type,
    Value,
};
use zeroize::Zeroizing;

use crate::cloud::qemu::{OVMF_CODE, OVMF_VARS, PrivateNetwork, QemuCloud, QemuOptions};
use crate::cloud::{Cloud, MachineState, NodeRecord, NodeSpec, Role};
use crate::cluster_config::{self, ClusterConfig};
use crate::create_marker::{self, CreateMarker, Decision, Found};
use crate::node_client::{self, OwnerCredential};
use constellation_attest::Variant;

/// Type name.
pub const TYPE_NAME: &str = "constellation_cluster";
/// Name of the record file in the working directory.
pub const RECORD_FILE: &str = "cluster.json";
/// How long a create may keep going after Terraform asked the provider to stop, or after its
/// timeout, before it is abandoned (every wait ends sooner on its own; this bounds a stuck
/// call).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What a create has made so far: returned as partial state when it fails.
#[derive(Default)]
struct Progress {
    /// The record, once the working directory holds one.
    record: Option<ClusterRecord>,
    /// Credentials and secrets once Init succeeded (state attributes), else null.
    credentials: Value,
    /// The working directory once this create's marker is in it.
    marked: Option<PathBuf>,
}

/// The resource type.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterResource;

/// What the working directory records about a cluster: enough to find, refresh, import and
/// delete it. No secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// Record format version.
    pub format: u32,
    /// Cluster name.
    pub name: String,
    /// Backend settings.
    pub qemu: QemuOptions,
    /// Nodes created so far.
    pub nodes: Vec<NodeRecord>,
    /// Next worker number (never reused).
    pub next_worker: u32,
    /// Next control-plane number (never reused; rolling upgrades add control planes).
    #[serde(default)]
    pub next_control_plane: u32,
    /// Cluster ID (hex) once initialised.
    pub cluster_id: Option<String>,
    /// Image version new nodes run (the configured image's).
    pub image_version: String,
    /// The configured image new nodes boot. Nodes whose own `image` differs are replaced,
    /// one at a time, by a rolling upgrade.
    #[serde(default)]
    pub image_reference: String,
    /// The configuration's non-secret attributes as last applied (for import), in
    /// Terraform's JSON value encoding.
    pub config: serde_json::Value,
}

impl ClusterRecord {
    fn path(dir: &Path) -> PathBuf {
        dir.join(RECORD_FILE)
    }

    /// Loads the record from a working directory; None when there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>, String> {
        let p = Self::path(dir);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice::<Self>(&b)
                .map(|r| Some(r.upgraded()))
                .map_err(|e| format!("{}: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    }

    /// Fills what records written by earlier versions lack.
    fn upgraded(mut self) -> Self {
        if self.image_reference.is_empty()
            && let Some(r) = self.config.get("image_reference").and_then(|v| v.as_str())
        {
            self.image_reference = r.to_owned();
        }
        for n in &mut self.nodes {
            if n.image.is_empty() {
                n.image = self.image_reference.clone();
            }
        }
        let cps = self
            .control_planes()
            .map(|n| node_number(&n.name) + 1)
            .max();
        self.next_control_plane = self.next_control_plane.max(cps.unwrap_or(0));
        self
    }

    /// Nodes that do not run the configured image, control planes first.
    fn outdated(&self) -> Vec<NodeRecord> {
        let mut v: Vec<NodeRecord> = self
            .nodes
            .iter()
            .filter(|n| n.image != self.image_reference)
            .cloned()
            .collect();
        v.sort_by_key(|n| (n.role != Role::ControlPlane, node_number(&n.name)));
        v
    }

    fn save(&self) -> Result<(), String> {
        let p = Self::path(&self.qemu.work_dir);
        let tmp = p.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &p))
            .map_err(|e| format!("writing {}: {e}", p.display()))
    }

    /// The backend that runs this cluster's machines. Everything after creation goes through
    /// the `Cloud` trait; the record's backend settings decide which implementation it is.
    fn cloud(&self) -> Box<dyn Cloud> {
        Box::new(QemuCloud::new(self.qemu.clone()))
    }

    /// The attestation variant of the recorded configuration (None when unreadable).
    fn variant(&self) -> Option<Variant> {
        let cfg = self.config_value();
        let json = cfg.get_attr("attestation_config")?.as_str()?.to_owned();
        AttestationConfig::from_json(json.as_bytes())
            .ok()
            .map(|c| c.variant)
    }

    fn control_planes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.iter().filter(|n| n.role == Role::ControlPlane)
    }
}

// Attribute names that are configuration (recorded for import) rather than computed.
const CONFIG_ATTRS: &[&str] = &[
    "name",
    "cloud",
    "control_plane_count",
    "worker_count",
    "image_reference",
    "attestation_config",
    "kubernetes_version",
    "network",
    "master_secret_wo_version",
    "timeouts",
];

/// The object type of the configuration attributes (derived from the schema once).
fn config_type() -> &'static Type {
    static TYPE: std::sync::OnceLock<Type> = std::sync::OnceLock::new();
    TYPE.get_or_init(|| {
        let full = ClusterResource.schema().value_type();
        let attrs = full.object_attributes().cloned().unwrap_or_default();
        Type::object(
            CONFIG_ATTRS
                .iter()
                .map(|a| (*a, attrs.get(*a).cloned().unwrap_or(Type::String))),
        )
    })
}

fn config_echo(v: &Value) -> serde_json::Value {
    let echo = Value::object(
        CONFIG_ATTRS
            .iter()
            .map(|a| (*a, v.get_attr(a).cloned().unwrap_or(Value::Null))),
    );
    tfplugin::json::encode(&echo, config_type())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

impl ClusterRecord {
    /// The recorded configuration as a value (null attributes when unreadable).
    fn config_value(&self) -> Value {
        serde_json::to_vec(&self.config)
            .ok()
            .and_then(|b| tfplugin::json::decode(&b, config_type()).ok())
            .unwrap_or_else(|| Value::object(CONFIG_ATTRS.iter().map(|a| (*a, Value::Null))))
    }
}

fn node_object_type() -> Vec<Attribute> {
    vec![
        Attribute::computed("name", Type::String).description("Node name."),
        Attribute::computed("role", Type::String).description("`control-plane` or `worker`."),
        Attribute::computed("private_ip", Type::String)
            .description("Address on the cluster's private network."),
        Attribute::computed("image_version", Type::String)
            .description("Image version the node reported when it joined."),
        Attribute::computed("joined", Type::Bool).description(
            "True when a control plane lists the node as a member (it passed attestation).",
        ),
        Attribute::computed("verification_endpoint", Type::String).description(
            "`host:port` of the node's verification service (gRPC), reachable from the \
             machine running Terraform; feed it to `constellation_cluster_verification`.",
        ),
    ]
}

fn err(summary: &str, detail: impl Into<String>) -> Diagnostics {
    let mut d = Diagnostics::new();
    d.error(summary, detail);
    d
}

fn err_at(path: &str, summary: &str, detail: impl Into<String>) -> Diagnostics {
    let mut d = Diagnostics::new();
    d.error_at(AttributePath::new(path), summary, detail);
    d
}

/// Secrets the provider holds while creating a cluster.
struct Secrets {
    master: Zeroizing<Vec<u8>>,
    master_salt: Zeroizing<Vec<u8>>,
    measurement_salt: Vec<u8>,
    generated: bool,
}

fn random_bytes(n: usize) -> Zeroizing<Vec<u8>> {
    use rand::RngCore as _;
    let mut v = Zeroizing::new(vec![0u8; n]);
    rand::thread_rng().fill_bytes(&mut v);
    v
}

fn validators_for(config_json: &str) -> Result<(AttestationConfig, Validators), Diagnostics> {
    let cfg = AttestationConfig::from_json(config_json.as_bytes()).map_err(|e| {
        err_at(
            "attestation_config",
            "Invalid attestation config",
            e.to_string(),
        )
    })?;
    let v = cfg.validators().map_err(|e| {
        err_at(
            "attestation_config",
            "Unsupported attestation config",
            e.to_string(),
        )
    })?;
    Ok((cfg, Validators::new(v)))
}

/// The master secret and its salt (recovery input).
type MasterAndSalt = (Zeroizing<Vec<u8>>, Zeroizing<Vec<u8>>);

fn owner_from_state(state: &Value) -> Option<OwnerCredential> {
    let s = |k: &str| state.get_attr(k).and_then(Value::as_str).map(str::to_owned);
    Some(OwnerCredential {
        ca_pem: s("cluster_ca_pem")?,
        cert_pem: s("owner_certificate_pem")?,
        key_pem: Zeroizing::new(s("owner_private_key_pem")?),
    })
}

/// Waits with the context's cancellation and a deadline.
async fn pause(ctx: &Context, deadline: Instant, what: &str) -> Result<(), Diagnostics> {
    if Instant::now() >= deadline {
        return Err(err(
            "Timed out",
            format!(
                "Timed out {what}. Raise the timeout in the `timeouts` block if the machine is slow (TCG emulation is)."
            ),
        ));
    }
    tokio::select! {
        () = ctx.cancellation().cancelled() => Err(err("Cancelled", format!("Cancelled {what}."))),
        () = tokio::time::sleep(Duration::from_secs(2)) => Ok(()),
    }
}

/// Fails when Terraform asked the provider to stop or the deadline passed (checked between
/// steps that cannot be interrupted, such as starting a VM).
fn check_going(ctx: &Context, deadline: Instant, what: &str) -> Result<(), Diagnostics> {
    if ctx.is_cancelled() {
        return Err(err("Cancelled", format!("Cancelled before {what}.")));
    }
    if Instant::now() >= deadline {
        return Err(err(
            "Timed out",
            format!(
                "Timed out before {what}. Raise `timeouts.create` if the machine is slow (TCG emulation is)."
            ),
        ));
    }
    Ok(())
}

/// The cluster as its control planes report it (`GetStatus` on each, merged).
#[derive(Debug, Default)]
struct ClusterView {
    /// Member name → image version.
    joined: BTreeMap<String, String>,
    /// The attestation config a control plane enforces.
    attestation_config: Option<String>,
    /// (control plane, refused handshake), oldest first per control plane.
    refusals: Vec<(String, constellation_node_api::v1::Refusal)>,
}

async fn members(record: &ClusterRecord, owner: &OwnerCredential) -> Result<ClusterView, String> {
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

/// What a wait for nodes reports when it gives up.
struct WaitWords {
    /// Summary when a waited-for node's machine went down.
    stopped: &'static str,
    /// Per node when the deadline passes, e.g. "has not joined".
    not_yet: &'static str,
    /// Summary when the deadline passes.
    late: &'static str,
    /// For `pause`: "waiting for …".
    waiting: &'static str,
}

/// One round of waiting for `pending` nodes: fails if one of them is down or the deadline is
/// near (each named with the end of its console log), else pauses.
async fn wait_round(
    ctx: &Context,
    cloud: &dyn Cloud,
    pending: &[&NodeRecord],
    deadline: Instant,
    words: &WaitWords,
) -> Result<(), Diagnostics> {
    for n in pending {
        if cloud.machine_state(n).await.is_down() {
            return Err(err(
                words.stopped,
                format!(
                    "{} is no longer running. Its console log ends with:\n{}",
                    n.name,
                    strip_ansi(&cloud.console_tail(n, 3000).await)
                ),
            ));
        }
    }
    if Instant::now() + Duration::from_secs(2) >= deadline {
        let mut detail = String::new();
        for n in pending {
            detail.push_str(&format!(
                "{} {}. Its console log ends with:\n{}\n",
                n.name,
                words.not_yet,
                strip_ansi(&cloud.console_tail(n, 3000).await)
            ));
        }
        return Err(err(words.late, detail));
    }
    pause(ctx, deadline, words.waiting).await
}

/// The nodes to remove so that `want` of `nodes` stay: those on another image than `image`
/// first, then the newest (highest numbers).
fn surplus(mut nodes: Vec<NodeRecord>, want: usize, image: &str) -> Vec<NodeRecord> {
    let excess = nodes.len().saturating_sub(want);
    nodes.sort_by_key(|n| (n.image == image, std::cmp::Reverse(node_number(&n.name))));
    nodes.truncate(excess);
    nodes
}

/// Whether the node at `n` attests (fresh nonce, `validators`) with the cluster-ID
/// measurement of cluster `id`, i.e. it joined, rejoined or was recovered into it.
async fn attests_membership(n: &NodeRecord, validators: &Validators, id: &[u8]) -> bool {
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

impl ClusterResource {
    fn schema_v0() -> Schema {
        let qemu = Block::new()
            .description("The local QEMU backend: one VM per node with OVMF and swtpm.")
            .attribute(
                Attribute::optional("vcpus", Type::Number).description("vCPUs per VM (default 2)."),
            )
            .attribute(
                Attribute::optional("memory_mib", Type::Number)
                    .description("Memory per VM in MiB (default 2048)."),
            )
            .attribute(
                Attribute::optional("state_disk_mib", Type::Number)
                    .description("Size of each node's encrypted state disk in MiB (default 512). The node formats it with dm-integrity at first boot, which takes time proportional to the size under emulation."),
            )
            .attribute(Attribute::optional("accel", Type::String).description(
                "`tcg` (default: software emulation, works everywhere) or `kvm` (needs a \
                 working /dev/kvm; nested KVM hangs on some hosts).",
            ))
            .attribute(
                Attribute::optional("working_dir", Type::String).description(
                    "Directory for the VMs' disks, TPM state, sockets and logs, relative to the \
                 Terraform working directory (default `.constellation/<name>`). Destroy \
                 removes it. Keep the path short: unix sockets live in it.",
                ),
            );
        let timeouts = Block::new()
            .description("How long operations may take (e.g. \"30m\").")
            .attribute(Attribute::optional("create", Type::String).description("Default 30m."))
            .attribute(Attribute::optional("update", Type::String).description("Default 30m."))
            .attribute(Attribute::optional("delete", Type::String).description("Default 10m."));
        Schema::new(
            Block::new()
                .description(
                    "A confidential cluster: measured nodes that prove their image by remote \
                     attestation before they get any secret. Create boots the nodes, validates \
                     the first control plane over attested TLS, initialises it and waits until \
                     every node joined (each one attested by the control plane). Changing \
                     `worker_count` scales in place; `attestation_config` is updated in place \
                     on every control plane.",
                )
                .attribute(Attribute::required("name", Type::String).description(
                    "Cluster name: lowercase letters, digits, dashes (≤ 30). Changing it replaces the cluster.",
                ))
                .attribute(Attribute::optional("control_plane_count", Type::Number).description(
                    "Control planes (default 1, at most 9). Scales in place: new control planes \
                     join one at a time (attested, served before the next step); removing takes \
                     the newest first.",
                ))
                .attribute(Attribute::optional("worker_count", Type::Number).description(
                    "Workers (default 1, 0 to 100). Changed in place.",
                ))
                .attribute(Attribute::required("image_reference", Type::String).description(
                    "The node image: `data.constellation_image.<name>.reference`. Changing it \
                     upgrades in place, one node at a time: a node on the new image joins \
                     (attested against `attestation_config`, so change both together), then \
                     one on the old image is removed; control planes first.",
                ))
                .attribute(Attribute::required("attestation_config", Type::String).description(
                    "What nodes must prove: `data.constellation_attestation.<name>.config_json`. \
                     Updated in place on every control plane.",
                ))
                .attribute(Attribute::optional("kubernetes_version", Type::String).description(
                    "Kubernetes version to bring up; must be the one the image carries. Null: no \
                     Kubernetes (the nodes still attest, encrypt their disks and mesh).",
                ))
                .attribute(
                    Attribute::optional(
                        "network",
                        NestedAttributes::single([
                            Attribute::optional("node_cidr", Type::String).description(
                                "Private network of the nodes (default 10.42.0.0/24, prefix 8 to 24).",
                            ),
                            Attribute::optional("pod_cidr", Type::String).description(
                                "Kubernetes pod network (default 10.244.0.0/16).",
                            ),
                            Attribute::optional("service_cidr", Type::String).description(
                                "Kubernetes service network (default 10.96.0.0/12).",
                            ),
                        ]),
                    )
                    .description("Networks; changing any replaces the cluster."),
                )
                .attribute(Attribute::optional("master_secret_wo", Type::String).write_only().description(
                    "Master secret as hex (32 bytes recommended; `openssl rand -hex 32`). \
                     Write-only: never stored in state. When unset the provider generates one \
                     and keeps it in the sensitive `master_secret` attribute (needed for \
                     recovery).",
                ))
                .attribute(Attribute::optional("master_secret_wo_version", Type::Number).description(
                    "Set with `master_secret_wo`; changing it replaces the cluster.",
                ))
                .attribute(Attribute::computed("id", Type::String).description(
                    "The cluster's working directory (absolute); also the import ID.",
                ))
                .attribute(Attribute::computed("cluster_id", Type::String).description(
                    "Cluster ID (hex); PCR 15 of every node is extended with it (see `provider::constellation::expected_pcr15`).",
                ))
                .attribute(Attribute::computed("image_version", Type::String).description("Image version the nodes run."))
                .attribute(Attribute::computed("management_endpoint", Type::String).description(
                    "`host:port` of the first control plane's management API (mutual TLS with the owner certificate).",
                ))
                .attribute(Attribute::computed("verification_endpoint", Type::String).description(
                    "`host:port` of the first control plane's verification service (gRPC).",
                ))
                .attribute(Attribute::computed("nodes", NestedAttributes::list(node_object_type())).description(
                    "Every node with its role, address and whether it joined.",
                ))
                .attribute(Attribute::computed("cluster_ca_pem", Type::String).description(
                    "Certificate of the cluster CA (derived from the master secret).",
                ))
                .attribute(Attribute::computed("owner_certificate_pem", Type::String).description(
                    "Owner certificate for the management API.",
                ))
                .attribute(Attribute::computed("owner_private_key_pem", Type::String).sensitive().description(
                    "Private key of the owner certificate.",
                ))
                .attribute(Attribute::computed("kubeconfig", Type::String).sensitive().description(
                    "Admin kubeconfig; null when Kubernetes does not run.",
                ))
                .attribute(Attribute::computed("kubernetes_status", Type::String).description(
                    "What the control plane reports about Kubernetes, e.g. `not installed`.",
                ))
                .attribute(Attribute::computed("master_secret", Type::String).sensitive().description(
                    "The generated master secret (hex); null when `master_secret_wo` is used. Keep \
                     it: recovering a control plane whose disk cannot be unlocked needs it.",
                ))
                .attribute(Attribute::computed("master_salt", Type::String).sensitive().description(
                    "Salt of the key derivation (hex); needed with the master secret for recovery.",
                ))
                .block(NestedBlock::single(
                    "cloud",
                    Block::new()
                        .description("Where the nodes run (required). Only `qemu` so far; changing it replaces the cluster.")
                        .block(NestedBlock::single("qemu", qemu)),
                ))
                .block(NestedBlock::single("timeouts", timeouts)),
        )
    }

    fn state_from(
        record: &ClusterRecord,
        config: &Value,
        prior: &Value,
        joined: &BTreeMap<String, String>,
    ) -> Value {
        let keep = |k: &str| prior.get_attr(k).cloned().unwrap_or(Value::Null);
        let cp0 = record.control_planes().next();
        let s = |x: Option<String>| x.map_or(Value::Null, Value::string);
        let nodes = Value::list(record.nodes.iter().map(|n| {
            Value::object([
                ("name", Value::string(n.name.clone())),
                ("role", Value::string(n.role.as_str())),
                ("private_ip", Value::string(n.private_ip.to_string())),
                (
                    "image_version",
                    Value::string(
                        joined
                            .get(&n.name)
                            .filter(|v| !v.is_empty())
                            .cloned()
                            .unwrap_or_else(|| record.image_version.clone()),
                    ),
                ),
                ("joined", Value::Bool(joined.contains_key(&n.name))),
                (
                    "verification_endpoint",
                    Value::string(n.endpoints.verify_grpc.to_string()),
                ),
            ])
        }));
        let mut attrs: Vec<(&str, Value)> = CONFIG_ATTRS
            .iter()
            .map(|a| (*a, config.get_attr(a).cloned().unwrap_or(Value::Null)))
            .collect();
        attrs.extend([
            ("master_secret_wo", Value::Null),
            (
                "id",
                Value::string(record.qemu.work_dir.display().to_string()),
            ),
            ("cluster_id", s(record.cluster_id.clone())),
            ("image_version", Value::string(record.image_version.clone())),
            (
                "management_endpoint",
                s(cp0
                    .and_then(|c| c.endpoints.management)
                    .map(|a| a.to_string())),
            ),
            (
                "verification_endpoint",
                s(cp0.map(|c| c.endpoints.verify_grpc.to_string())),
            ),
            ("nodes", nodes),
            ("cluster_ca_pem", keep("cluster_ca_pem")),
            ("owner_certificate_pem", keep("owner_certificate_pem")),
            ("owner_private_key_pem", keep("owner_private_key_pem")),
            ("kubeconfig", keep("kubeconfig")),
            ("kubernetes_status", keep("kubernetes_status")),
            ("master_secret", keep("master_secret")),
            ("master_salt", keep("master_salt")),
        ]);
        Value::object(attrs)
    }

    fn node_spec(
        cfg: &ClusterConfig,
        role: Role,
        index: u32,
        join: &[String],
        init_hash: Option<&str>,
        record: &ClusterRecord,
    ) -> Result<NodeSpec, Diagnostics> {
        let (name, ip) = match role {
            Role::ControlPlane => (cfg.control_plane_name(index), cfg.control_plane_ip(index)),
            Role::Worker => (cfg.worker_name(index), cfg.worker_ip(index)),
        };
        let ip = ip.ok_or_else(|| {
            err_at(
                "network",
                "Node network too small",
                format!(
                    "No address left in {}/{} for {name}; use a larger node_cidr.",
                    cfg.node_cidr.addr, cfg.node_cidr.prefix
                ),
            )
        })?;
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

    fn join_endpoints(record: &ClusterRecord) -> Vec<String> {
        record
            .control_planes()
            .map(|c| format!("{}:{}", c.private_ip, constellation_node_api::ports::JOIN))
            .collect()
    }

    /// Creates a VM and records it.
    async fn add_node(record: &mut ClusterRecord, spec: &NodeSpec) -> Result<(), Diagnostics> {
        let node = record
            .cloud()
            .create_node(spec)
            .await
            .map_err(|e| err("Starting a node failed", e.to_string()))?;
        record.nodes.push(node);
        record
            .save()
            .map_err(|e| err("Recording the cluster failed", e))
    }

    /// Waits until the first control plane answers the aTLS handshake with a valid
    /// attestation, then runs Init. Returns the success message.
    async fn initialise(
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
            if cloud.machine_state(&cp0).await.is_down() {
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
            // kubeadm's default (this node's private IP); with several control planes a
            // load balancer address belongs here once a cloud backend provides one.
            control_plane_endpoint: String::new(),
            api_server_cert_sans: Vec::new(),
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

    /// Waits until every recorded node is a member.
    async fn wait_joined(
        ctx: &Context,
        record: &ClusterRecord,
        owner: &OwnerCredential,
        deadline: Instant,
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
            if let Some(refusal) = refusal_of(record, &view.refusals, &missing) {
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

    async fn create_inner(
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
        let fresh = ClusterRecord {
            format: 1,
            name: cfg.name.clone(),
            qemu,
            nodes: Vec::new(),
            next_worker: 0,
            next_control_plane: cfg.control_plane_count as u32,
            cluster_id: None,
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
        cloud.prepare().await.map_err(|e| {
            err(
                &format!("The {} backend is not ready", cloud.name()),
                e.to_string(),
            )
        })?;
        let rec = progress.record.insert(fresh);
        rec.save()
            .map_err(|e| err("Recording the cluster failed", e))?;

        let secrets = match req
            .config
            .get_attr("master_secret_wo")
            .and_then(Value::as_str)
        {
            Some(s) => Secrets {
                master: cluster_config::parse_master_secret(s)
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
        let init_secret = random_bytes(32);
        let init_hash = {
            let s = init_secret.clone();
            tokio::task::spawn_blocking(move || hash_init_secret(&s))
                .await
                .map_err(|e| err("Hashing the init secret failed", e.to_string()))?
                .map_err(|e| err("Hashing the init secret failed", e))?
        };

        let t0 = Instant::now();
        let spec = Self::node_spec(&cfg, Role::ControlPlane, 0, &[], Some(&init_hash), rec)?;
        check_going(ctx, deadline, "starting the nodes")?;
        Self::add_node(rec, &spec).await?;
        let join = Self::join_endpoints(rec);
        for i in 1..cfg.control_plane_count as u32 {
            let spec = Self::node_spec(&cfg, Role::ControlPlane, i, &join, None, rec)?;
            check_going(ctx, deadline, "starting all nodes")?;
            Self::add_node(rec, &spec).await?;
        }
        for _ in 0..cfg.worker_count {
            let i = rec.next_worker;
            rec.next_worker += 1;
            let spec = Self::node_spec(&cfg, Role::Worker, i, &join, None, rec)?;
            check_going(ctx, deadline, "starting all nodes")?;
            Self::add_node(rec, &spec).await?;
        }
        tracing::info!(
            nodes = rec.nodes.len(),
            secs = t0.elapsed().as_secs_f64(),
            "VMs started"
        );

        let ok = Self::initialise(ctx, rec, &cfg, &secrets, &init_secret, deadline).await?;
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
        let joined = Self::wait_joined(ctx, rec, &owner, deadline).await?;
        tracing::info!(secs = t0.elapsed().as_secs_f64(), "all nodes joined");
        Ok(Self::state_from(
            rec,
            &req.planned_state,
            &progress.credentials,
            &joined,
        ))
    }

    /// Removes a node from the cluster: every other control plane forgets it (NotFound is
    /// fine: it may never have joined there), then its machine goes and the record follows.
    async fn retire_node(
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
        record
            .cloud()
            .delete_node(node)
            .await
            .map_err(|e| err("Removing a node failed", e.to_string()))?;
        record.nodes.retain(|x| x.name != node.name);
        record
            .save()
            .map_err(|e| err("Recording the cluster failed", e))
    }

    /// Adds one node of `role` on the configured image and waits until it is a member (and,
    /// for a control plane, serves its management API: a member is listed when its ticket is
    /// issued, but serves only after it set up its disk). A node that does not get there is
    /// removed again; `why` heads the error.
    async fn add_member(
        ctx: &Context,
        record: &mut ClusterRecord,
        cfg: &ClusterConfig,
        owner: &OwnerCredential,
        role: Role,
        why: &str,
        deadline: Instant,
    ) -> Result<NodeRecord, Diagnostics> {
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
        let join = Self::join_endpoints(record);
        let spec = Self::node_spec(cfg, role, i, &join, None, record)?;
        Self::add_node(record, &spec).await?;
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
        let mut joined = Self::wait_joined(ctx, record, owner, deadline)
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
            if let Err(e) = Self::retire_node(record, owner, &node).await {
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
    async fn replace_node(
        ctx: &Context,
        record: &mut ClusterRecord,
        cfg: &ClusterConfig,
        owner: &OwnerCredential,
        old: &NodeRecord,
        deadline: Instant,
    ) -> Result<(), Diagnostics> {
        tracing::info!(old = %old.name, image = %record.image_reference, "rolling upgrade: replacing node");
        let new = Self::add_member(
            ctx,
            record,
            cfg,
            owner,
            old.role,
            "Rolling upgrade stopped",
            deadline,
        )
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
        Self::retire_node(record, owner, old).await?;
        tracing::info!(old = %old.name, new = %new.name, "rolling upgrade: node replaced");
        Ok(())
    }

    /// The spec a kept node boots with again: its own name, role, address and image; the
    /// metadata names every other control plane of the record (the node also remembers the
    /// ones it last heard of). No init-secret hash: an initialised node never runs Init.
    fn restart_spec(cfg: &ClusterConfig, record: &ClusterRecord, node: &NodeRecord) -> NodeSpec {
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

    /// Boots the nodes whose machines are off (crash, host reboot) from their kept disks. When
    /// no control plane kept running, the first restarted one is recovered with the master
    /// secret (after it attested); the others rejoin through it. Returns once every restarted
    /// node attests as a member again and restarted control planes serve the management API.
    async fn restart_off_nodes(
        ctx: &Context,
        record: &mut ClusterRecord,
        cfg: &ClusterConfig,
        req: &ApplyRequest,
        owner: &OwnerCredential,
        deadline: Instant,
    ) -> Result<(), Diagnostics> {
        let cloud = record.cloud();
        let mut off = Vec::new();
        let mut control_plane_up = false;
        for n in &record.nodes {
            match cloud.machine_state(n).await {
                MachineState::Off => off.push(n.clone()),
                MachineState::Running | MachineState::Stopped => {
                    control_plane_up |= n.role == Role::ControlPlane;
                }
                MachineState::Gone => {}
            }
        }
        // Without any control plane left to run or recover, restarting workers is futile; the
        // step for vanished nodes below reports that.
        if off.is_empty()
            || (!control_plane_up && !off.iter().any(|n| n.role == Role::ControlPlane))
        {
            return Ok(());
        }
        // Control planes first: workers rejoin through them.
        off.sort_by_key(|n| n.role != Role::ControlPlane);
        for n in &off {
            let spec = Self::restart_spec(cfg, record, n);
            let started = cloud.start_node(n, &spec).await.map_err(|e| {
                err(
                    "Restarting a node failed",
                    format!(
                        "{e}\nThe node's disks are kept; fix the cause and run `terraform apply` again."
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
        }
        // The nodes run the image they ran before, so they attest against the config the
        // cluster enforced, not one this apply may be about to push.
        let att = req
            .prior_state
            .get_attr("attestation_config")
            .and_then(Value::as_str)
            .unwrap_or(&cfg.attestation_config);
        let (att, validators) = validators_for(att)?;
        let restarted: Vec<String> = off.iter().map(|n| n.name.clone()).collect();
        if !control_plane_up
            && let Some(first) = record
                .nodes
                .iter()
                .find(|n| n.role == Role::ControlPlane && restarted.contains(&n.name))
                .cloned()
        {
            Self::recover(ctx, record, &first, req, &validators, att.variant, deadline).await?;
        }
        Self::wait_rejoined(ctx, record, &restarted, &validators, owner, deadline).await
    }

    /// The master secret and salt for recovery: the write-only attribute from this apply's
    /// configuration, else the generated secret in state.
    fn recovery_secrets(req: &ApplyRequest) -> Result<MasterAndSalt, Diagnostics> {
        let from_state = |k: &str| {
            req.prior_state
                .get_attr(k)
                .and_then(Value::as_str)
                .and_then(|h| hex::decode(h).ok())
                .map(Zeroizing::new)
        };
        let master = match req
            .config
            .get_attr("master_secret_wo")
            .and_then(Value::as_str)
        {
            Some(s) => cluster_config::parse_master_secret(s)
                .map_err(|e| err_at("master_secret_wo", "Invalid master secret", e))?,
            None => from_state("master_secret").ok_or_else(|| {
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
        let salt = from_state("master_salt").ok_or_else(|| {
            err(
                "Master salt missing",
                "The state holds no `master_salt`, which recovery needs with the master secret.",
            )
        })?;
        Ok((master, salt))
    }

    /// Recovers `cp` (waiting for recovery after a reboot): it must attest, then gets the
    /// master secret, unlocks its disk and locks itself to the cluster again.
    async fn recover(
        ctx: &Context,
        record: &ClusterRecord,
        cp: &NodeRecord,
        req: &ApplyRequest,
        validators: &Validators,
        variant: Variant,
        deadline: Instant,
    ) -> Result<(), Diagnostics> {
        let (master, salt) = Self::recovery_secrets(req)?;
        let Some(addr) = cp.endpoints.recovery else {
            return Err(err(
                "No recovery endpoint",
                format!("{} has no recovery port forward.", cp.name),
            ));
        };
        let cloud = record.cloud();
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
            if cloud.machine_state(cp).await.is_down() {
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
    async fn wait_rejoined(
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

    async fn update_inner(ctx: &Context, req: &ApplyRequest) -> Result<Value, Diagnostics> {
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
        let dir = work_dir_of(&req.prior_state)?;
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
        let owner = owner_from_state(&req.prior_state).ok_or_else(|| {
            err(
                "No owner credential",
                "The state holds no owner credential (e.g. after an import), so the cluster cannot be changed by this provider. Recreate the cluster to manage it.",
            )
        })?;
        // Machines that stopped but kept their disks boot again and rejoin (recovering a
        // control plane if none kept running) before anything else talks to the cluster.
        Self::restart_off_nodes(ctx, &mut record, &cfg, req, &owner, deadline).await?;

        // Attestation config: push to every control plane (the join service validates the
        // next joiner with it, no restart).
        let old_att = req
            .prior_state
            .get_attr("attestation_config")
            .and_then(Value::as_str);
        if old_att != Some(cfg.attestation_config.as_str()) {
            validators_for(&cfg.attestation_config)?;
            for cp in record.control_planes() {
                let Some(addr) = cp.endpoints.management else {
                    continue;
                };
                let mut c = node_client::management(addr, &owner)
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
        }

        // Nodes whose VM is gone are removed (and replaced below by scaling), as long as a
        // control plane is left to tell the others.
        let cloud = record.cloud();
        let mut gone = Vec::new();
        for n in &record.nodes {
            if cloud.machine_state(n).await == MachineState::Gone {
                gone.push(n.clone());
            }
        }
        if !gone.is_empty()
            && record
                .control_planes()
                .all(|c| gone.iter().any(|g| g.name == c.name))
        {
            return Err(err(
                "No control plane is running",
                "Every control plane's VM is gone together with its disks, so no node can \
                 join or be changed and nothing is left to recover. Recreate the cluster \
                 (`terraform apply -replace=...`).",
            ));
        }
        for n in &gone {
            tracing::warn!(node = %n.name, role = n.role.as_str(), "node VM is gone; removing it");
            cloud
                .delete_node(n)
                .await
                .map_err(|e| err("Removing a node failed", e.to_string()))?;
        }
        record
            .nodes
            .retain(|n| !gone.iter().any(|g| g.name == n.name));
        record
            .save()
            .map_err(|e| err("Recording the cluster failed", e))?;
        for n in &gone {
            for cp in record.control_planes() {
                if let Some(addr) = cp.endpoints.management
                    && let Err(e) = node_client::remove_node(addr, &owner, &n.name).await
                {
                    tracing::warn!(node = %n.name, control_plane = %cp.name, error = %e, "could not remove the dead node from the member list");
                }
            }
        }
        record
            .save()
            .map_err(|e| err("Recording the cluster failed", e))?;
        // A new image: new nodes boot it from now on; nodes on another image are replaced
        // below, one at a time.
        if cfg.image_reference != record.image_reference {
            let manifest = cluster_config::image_manifest(&cfg.image_reference)
                .map_err(|e| err_at("image_reference", "Image missing", e))?;
            record.image_reference = cfg.image_reference.clone();
            record.image_version = manifest.version;
            record
                .save()
                .map_err(|e| err("Recording the cluster failed", e))?;
        }
        let workers: Vec<NodeRecord> = record
            .nodes
            .iter()
            .filter(|n| n.role == Role::Worker)
            .cloned()
            .collect();
        let want = cfg.worker_count as usize;
        for n in surplus(workers, want, &record.image_reference) {
            Self::retire_node(&mut record, &owner, &n).await?;
            tracing::info!(node = %n.name, "worker removed");
        }
        // Control planes: surplus ones go (the newest first), missing ones join one at a time.
        let cps: Vec<NodeRecord> = record.control_planes().cloned().collect();
        let want_cps = cfg.control_plane_count as usize;
        for n in surplus(cps, want_cps, &record.image_reference) {
            Self::retire_node(&mut record, &owner, &n).await?;
            tracing::info!(node = %n.name, "control plane removed");
        }
        for old in record.outdated() {
            Self::replace_node(ctx, &mut record, &cfg, &owner, &old, deadline).await?;
        }
        while record.control_planes().count() < want_cps {
            let n = Self::add_member(
                ctx,
                &mut record,
                &cfg,
                &owner,
                Role::ControlPlane,
                "Adding a control plane failed",
                deadline,
            )
            .await?;
            tracing::info!(node = %n.name, "control plane added");
        }
        let before: BTreeSet<String> = record.nodes.iter().map(|n| n.name.clone()).collect();
        let have = record
            .nodes
            .iter()
            .filter(|n| n.role == Role::Worker)
            .count();
        if have < want {
            let join = Self::join_endpoints(&record);
            for _ in have..want {
                let i = record.next_worker;
                record.next_worker += 1;
                let spec = Self::node_spec(&cfg, Role::Worker, i, &join, None, &record)?;
                Self::add_node(&mut record, &spec).await?;
            }
        }
        record.config = config_echo(&req.planned_state);
        record
            .save()
            .map_err(|e| err("Recording the cluster failed", e))?;
        let joined = match Self::wait_joined(ctx, &record, &owner, deadline).await {
            Ok(j) => j,
            Err(mut d) => {
                // Nodes added here that did not join are of no use (refused, or broken):
                // remove them so the cluster stays as it was.
                let added: Vec<NodeRecord> = record
                    .nodes
                    .iter()
                    .filter(|n| !before.contains(&n.name))
                    .cloned()
                    .collect();
                for n in added {
                    if let Err(e) = cloud.delete_node(&n).await {
                        d.error("Removing a node that did not join failed", e.to_string());
                    }
                    record.nodes.retain(|x| x.name != n.name);
                }
                if let Err(e) = record.save() {
                    d.error("Recording the cluster failed", e);
                }
                return Err(d);
            }
        };
        Ok(Self::state_from(
            &record,
            &req.planned_state,
            &req.prior_state,
            &joined,
        ))
    }
}

/// Validator messages number registers by index. The user should read the register's own
/// name: "PCR 9" for vTPM variants; "MRTD" / "RTMR2" for qemu-tdx (index 0 = MRTD,
/// 1..=4 = RTMR0..3, as upstream numbers them).
fn name_registers(variant: Variant, text: &str) -> String {
    if variant != Variant::QemuTdx {
        return text.replace("index ", "PCR ");
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("index ") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + "index ".len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match after[..digits].parse::<u32>() {
            Ok(0) => out.push_str("MRTD"),
            Ok(i @ 1..=4) => out.push_str(&format!("RTMR{}", i - 1)),
            _ => out.push_str(&rest[pos..pos + "index ".len() + digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// Removes ANSI escape sequences (the node logs in colour to its console).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // CSI: parameters and intermediates up to a final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A control plane that refused a joining node says why (`GetStatus.recent_refusals`: the
/// peer's address and the validator's reasons). Finding it turns a long wait for a timeout
/// into an immediate error naming the failed measurements.
fn refusal_of(
    record: &ClusterRecord,
    refusals: &[(String, constellation_node_api::v1::Refusal)],
    missing: &[&NodeRecord],
) -> Option<Diagnostics> {
    for n in missing {
        let ip = n.private_ip.to_string();
        // Before Init a control plane has no attestation config and refuses everyone
        // ("no validator configured"); joiners retry, so that is not a verdict.
        let Some((cp, r)) = refusals.iter().rev().find(|(_, r)| {
            r.peer.rsplit_once(':').map_or(r.peer.as_str(), |(h, _)| h) == ip
                && !r.reason.contains("no validator configured")
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

fn node_number(name: &str) -> u32 {
    name.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn work_dir_of(state: &Value) -> Result<PathBuf, Diagnostics> {
    state
        .get_attr("id")
        .and_then(Value::as_str)
        .map(PathBuf::from)
        .ok_or_else(|| {
            err(
                "Corrupt state",
                "The state has no `id` (working directory).",
            )
        })
}

/// What a create finds in its working directory (input of [`create_marker::decide`]).
async fn inspect_work_dir(dir: &Path) -> Result<Found, Diagnostics> {
    let record = ClusterRecord::load(dir).map_err(|e| err("Unreadable cluster record", e))?;
    let mut record_all_gone = true;
    if let Some(r) = &record {
        let cloud = r.cloud();
        for n in &r.nodes {
            if cloud.machine_state(n).await != MachineState::Gone {
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
fn hash_init_secret(secret: &[u8]) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(secret, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[tfplugin::async_trait]
impl Resource for ClusterResource {
    fn type_name(&self) -> &str {
        TYPE_NAME
    }

    fn schema(&self) -> Schema {
        Self::schema_v0()
    }

    fn requires_replace(&self) -> Vec<AttributePath> {
        [
            "name",
            "cloud",
            "kubernetes_version",
            "network",
            "master_secret_wo_version",
        ]
        .into_iter()
        .map(AttributePath::new)
        .collect()
    }

    async fn validate(&self, _ctx: &Context, config: &Value) -> Diagnostics {
        cluster_config::parse(config).1
    }

    async fn modify_plan(&self, _ctx: &Context, request: &PlanRequest, plan: &mut PlanResponse) {
        if request.is_create() || request.is_destroy() {
            return;
        }
        // A new image replaces nodes (rolling), so what names nodes and endpoints changes.
        let image_changed = request.prior_state.get_attr("image_reference")
            != request.proposed_new_state.get_attr("image_reference");
        // Read marks stopped or vanished nodes as not joined: apply restarts or replaces them,
        // and a restarted machine may get new loopback ports if its old ones were taken.
        let repairing = request
            .prior_state
            .get_attr("nodes")
            .and_then(Value::as_elements)
            .is_some_and(|nodes| {
                nodes
                    .iter()
                    .any(|n| n.get_attr("joined").and_then(Value::as_bool) == Some(false))
            });
        // Values fixed at creation stay as they are on other in-place updates.
        for a in [
            "id",
            "cluster_id",
            "image_version",
            "management_endpoint",
            "verification_endpoint",
            "cluster_ca_pem",
            "owner_certificate_pem",
            "owner_private_key_pem",
            "kubeconfig",
            "kubernetes_status",
            "master_secret",
            "master_salt",
        ] {
            if image_changed
                && matches!(
                    a,
                    "image_version" | "management_endpoint" | "verification_endpoint"
                )
            {
                continue;
            }
            if repairing && matches!(a, "management_endpoint" | "verification_endpoint") {
                continue;
            }
            plan.use_prior_if_unknown(&request.prior_state, &AttributePath::new(a));
        }
        let same =
            |a: &str| request.prior_state.get_attr(a) == request.proposed_new_state.get_attr(a);
        if !image_changed && same("worker_count") && same("control_plane_count") {
            plan.use_prior_if_unknown(&request.prior_state, &AttributePath::new("nodes"));
        }
    }

    async fn read(&self, _ctx: &Context, request: ReadRequest) -> StateResponse {
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
        for n in &record.nodes {
            match cloud.machine_state(n).await {
                MachineState::Running | MachineState::Stopped => {
                    running.insert(n.name.clone());
                }
                MachineState::Off => off.push(n.name.clone()),
                MachineState::Gone => {}
            }
        }
        if running.is_empty() && off.is_empty() {
            tracing::warn!(dir = %dir.display(), "no VM of the cluster is left; removing it from state");
            return StateResponse::new(Value::Null);
        }
        let mut d = Diagnostics::new();
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
                let _ =
                    state_cfg.set_at(&AttributePath::new("attestation_config"), Value::string(a));
            }
        }
        let mut state = Self::state_from(&record, &state_cfg, prior, &joined);
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

    async fn create(&self, ctx: &Context, request: ApplyRequest) -> StateResponse {
        let mut progress = Progress::default();
        // Every wait inside ends on Terraform's stop signal and at the deadline; this bound
        // also covers a call that hangs.
        let timeout = cluster_config::parse(&request.config)
            .0
            .map_or(cluster_config::DEFAULT_CREATE_TIMEOUT, |c| c.create_timeout);
        let abandon_at = tokio::time::Instant::now() + timeout + STOP_GRACE;
        let outcome = {
            let work = Self::create_inner(ctx, &request, &mut progress);
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
                        rec.qemu.work_dir.display()
                    ),
                );
                let state = Self::state_from(
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

    async fn update(&self, ctx: &Context, request: ApplyRequest) -> StateResponse {
        match Self::update_inner(ctx, &request).await {
            Ok(state) => StateResponse::new(state),
            Err(d) => StateResponse::from_diagnostics(d),
        }
    }

    async fn delete(&self, _ctx: &Context, request: ApplyRequest) -> Diagnostics {
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

    async fn import(&self, _ctx: &Context, id: &str) -> ImportResponse {
        let dir = PathBuf::from(id);
        let dir = std::env::current_dir().map(|c| c.join(&dir)).unwrap_or(dir);
        match ClusterRecord::load(&dir) {
            Ok(Some(rec)) => {
                let mut prior = rec.config_value();
                let _ = prior.set_at(
                    &AttributePath::new("id"),
                    Value::string(rec.qemu.work_dir.display().to_string()),
                );
                let state = Self::state_from(&rec, &prior, &Value::Null, &BTreeMap::new());
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
}

/// Without an owner credential (after an import) membership is established by attestation:
/// a node is a member when its verification service's document validates against the
/// attestation config and its PCR 15 holds this cluster's ID.
async fn attested_members(
    record: &ClusterRecord,
    prior: &Value,
    running: &BTreeSet<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let (Some(att), Some(id)) = (
        prior.get_attr("attestation_config").and_then(Value::as_str),
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

fn prior_joined(prior: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(nodes) = prior.get_attr("nodes").and_then(Value::as_elements) {
        for n in nodes {
            if n.get_attr("joined").and_then(Value::as_bool) == Some(true)
                && let Some(name) = n.get_attr("name").and_then(Value::as_str)
            {
                let v = n
                    .get_attr("image_version")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                out.insert(name.to_owned(), v.to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, role: Role, ip: [u8; 4], image: &str) -> NodeRecord {
        let a: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        NodeRecord {
            name: name.into(),
            role,
            private_ip: ip.into(),
            endpoints: crate::cloud::NodeEndpoints {
                init: None,
                management: None,
                recovery: None,
                verify_http: a,
                verify_grpc: a,
            },
            image: image.into(),
        }
    }

    fn record(nodes: Vec<NodeRecord>) -> ClusterRecord {
        ClusterRecord {
            format: 1,
            name: "acc".into(),
            qemu: QemuOptions {
                work_dir: "/tmp/x".into(),
                vcpus: 1,
                memory_mib: 1024,
                state_disk_mib: 256,
                accel: crate::cloud::qemu::Accel::Tcg,
                network: PrivateNetwork::random(),
                ovmf_code: OVMF_CODE.into(),
                ovmf_vars: OVMF_VARS.into(),
            },
            nodes,
            next_worker: 0,
            next_control_plane: 0,
            cluster_id: None,
            image_version: "v2".into(),
            image_reference: String::new(),
            config: serde_json::json!({ "image_reference": "/img/v1/disk.raw" }),
        }
    }

    #[test]
    fn old_records_upgrade_and_outdated_nodes_go_control_planes_first() {
        let r = record(vec![
            node("acc-worker-3", Role::Worker, [10, 0, 0, 103], ""),
            node("acc-cp-4", Role::ControlPlane, [10, 0, 0, 14], ""),
        ])
        .upgraded();
        // Missing fields come from the recorded configuration and the node names.
        assert_eq!(r.image_reference, "/img/v1/disk.raw");
        assert!(r.nodes.iter().all(|n| n.image == "/img/v1/disk.raw"));
        assert_eq!(r.next_control_plane, 5);
        assert!(r.outdated().is_empty());
        let mut r = r;
        r.image_reference = "/img/v2/disk.raw".into();
        let order: Vec<String> = r.outdated().into_iter().map(|n| n.name).collect();
        assert_eq!(order, ["acc-cp-4", "acc-worker-3"]);
    }

    #[test]
    fn surplus_takes_old_images_then_the_newest() {
        let nodes = vec![
            node("acc-worker-1", Role::Worker, [10, 0, 0, 101], "/new"),
            node("acc-worker-2", Role::Worker, [10, 0, 0, 102], "/old"),
            node("acc-worker-3", Role::Worker, [10, 0, 0, 103], "/new"),
            node("acc-worker-4", Role::Worker, [10, 0, 0, 104], "/new"),
        ];
        let names = |v: Vec<NodeRecord>| v.into_iter().map(|n| n.name).collect::<Vec<_>>();
        assert_eq!(
            names(surplus(nodes.clone(), 2, "/new")),
            ["acc-worker-2", "acc-worker-4"]
        );
        assert!(surplus(nodes.clone(), 4, "/new").is_empty());
        assert!(surplus(nodes, 9, "/new").is_empty());
    }

    #[test]
    fn refusals_of_missing_nodes_fail_fast_and_name_pcrs() {
        use constellation_node_api::v1::Refusal;
        let w = node("acc-worker-1", Role::Worker, [10, 42, 0, 101], "/i");
        let r = record(vec![w.clone()]);
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
            refusal("10.42.0.101:40000", "no validator configured"),
            refusal("10.42.0.102:40000", "1 measurement(s) differ: index 9"),
        ];
        assert!(refusal_of(&r, &list, &[&w]).is_none());
        let list = vec![refusal(
            "10.42.0.101:40001",
            "1 measurement(s) differ: index 9: expected aa, got bb",
        )];
        let d = format!("{:?}", refusal_of(&r, &list, &[&w]).unwrap());
        assert!(d.contains("acc-worker-1"), "{d}");
        assert!(d.contains("index 9") || d.contains("PCR 9"), "{d}");
    }

    #[test]
    fn registers_are_named_per_variant() {
        let msg =
            "2 measurement(s) differ: index 9: expected aa, got bb; index 11: expected cc, got dd";
        assert_eq!(
            name_registers(Variant::QemuVtpm, msg),
            "2 measurement(s) differ: PCR 9: expected aa, got bb; PCR 11: expected cc, got dd"
        );
        let tdx = "index 0: expected aa, got bb; index 3: expected cc, got dd; index 7: x";
        assert_eq!(
            name_registers(Variant::QemuTdx, tdx),
            "MRTD: expected aa, got bb; RTMR2: expected cc, got dd; index 7: x"
        );
        assert_eq!(name_registers(Variant::QemuTdx, "no index"), "no index");
    }

    #[test]
    fn schema_is_valid_and_secrets_are_hidden() {
        let s = ClusterResource.schema();
        assert!(s.validate().is_empty(), "{:?}", s.validate());
        let b = &s.block;
        for a in [
            "owner_private_key_pem",
            "kubeconfig",
            "master_secret",
            "master_salt",
        ] {
            assert!(b.get_attribute(a).unwrap().sensitive, "{a}");
        }
        assert!(b.get_attribute("master_secret_wo").unwrap().write_only);
    }

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

    #[test]
    fn console_colours_are_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m peer=10.42.0.100:1 x"),
            "2026  WARN peer=10.42.0.100:1 x"
        );
    }

    #[test]
    fn node_numbers_come_from_names() {
        assert_eq!(node_number("demo-worker-12"), 12);
        assert_eq!(node_number("demo"), 0);
    }
}
