//! The resource's schema, the configuration recorded for import, and the state built from
//! a record.

use std::collections::BTreeMap;

use tfplugin::Value;

use super::model::{NodeState, nodes_value};
use super::record::*;
use tfplugin::{Attribute, Block, NestedAttributes, NestedBlock, Schema, Type};

// Attribute names that are configuration (recorded for import) rather than computed.
pub(super) const CONFIG_ATTRS: &[&str] = &[
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
pub(super) fn config_type() -> &'static Type {
    static TYPE: std::sync::OnceLock<Type> = std::sync::OnceLock::new();
    TYPE.get_or_init(|| {
        let full = schema_v0().value_type();
        let attrs = full.object_attributes().cloned().unwrap_or_default();
        Type::object(
            CONFIG_ATTRS
                .iter()
                .map(|a| (*a, attrs.get(*a).cloned().unwrap_or(Type::String))),
        )
    })
}

/// The configuration attributes of `v` in Terraform's JSON encoding (recorded for import).
pub(super) fn config_echo(v: &Value) -> serde_json::Value {
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

/// A recorded configuration as a value (null attributes when unreadable).
pub(super) fn config_from_json(config: &serde_json::Value) -> Value {
    serde_json::to_vec(config)
        .ok()
        .and_then(|b| tfplugin::json::decode(&b, config_type()).ok())
        .unwrap_or_else(|| Value::object(CONFIG_ATTRS.iter().map(|a| (*a, Value::Null))))
}

/// The attributes of one element of `nodes`.
pub(super) fn node_object_type() -> Vec<Attribute> {
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

/// The resource's schema (version 0).
pub(super) fn schema_v0() -> Schema {
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

/// The nodes of `record` as the `nodes` attribute lists them; `joined` maps members to the
/// image version they reported.
pub(super) fn node_states(
    record: &ClusterRecord,
    joined: &BTreeMap<String, String>,
) -> Vec<NodeState> {
    record
        .nodes
        .iter()
        .map(|n| NodeState {
            name: n.name.clone(),
            role: n.role.as_str().to_owned(),
            private_ip: n.private_ip.to_string(),
            image_version: joined
                .get(&n.name)
                .filter(|v| !v.is_empty())
                .cloned()
                .unwrap_or_else(|| record.image_version.clone()),
            joined: joined.contains_key(&n.name),
            verification_endpoint: n.endpoints.verify_grpc.to_string(),
        })
        .collect()
}

/// The state: `config`'s configuration attributes, the record's computed ones, secrets
/// and credentials kept from `prior`.
pub(super) fn state_from(
    record: &ClusterRecord,
    config: &Value,
    prior: &Value,
    joined: &BTreeMap<String, String>,
) -> Value {
    state_with_nodes(record, config, prior, &node_states(record, joined))
}

/// [`state_from`] with the nodes given.
pub(super) fn state_with_nodes(
    record: &ClusterRecord,
    config: &Value,
    prior: &Value,
    nodes: &[NodeState],
) -> Value {
    let keep = |k: &str| prior.get_attr(k).cloned().unwrap_or(Value::Null);
    let cp0 = record.control_planes().next();
    let s = |x: Option<String>| x.map_or(Value::Null, Value::string);
    let nodes = nodes_value(nodes);
    let mut attrs: Vec<(&str, Value)> = CONFIG_ATTRS
        .iter()
        .map(|a| (*a, config.get_attr(a).cloned().unwrap_or(Value::Null)))
        .collect();
    attrs.extend([
        ("master_secret_wo", Value::Null),
        ("id", Value::string(record.work_dir.display().to_string())),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_is_valid_and_secrets_are_hidden() {
        let s = schema_v0();
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
}
