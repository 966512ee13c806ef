//! The resource's state through tfplugin's typed binding: what the operations read from a
//! prior state, and the `nodes` attribute, as Rust types instead of attribute look-ups by
//! name.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};
use tfplugin::{Diagnostics, Type, Value};
use zeroize::Zeroizing;

use super::common::err;
use crate::node_client::OwnerCredential;

/// A sensitive string: zeroized when dropped, redacted in Debug.
#[derive(Clone, Default)]
pub(super) struct SecretString(pub(super) Zeroizing<String>);

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self(Zeroizing::new(s)))
    }
}

/// One node as the `nodes` attribute lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct NodeState {
    /// Node name.
    pub(super) name: String,
    /// `control-plane` or `worker`.
    pub(super) role: String,
    /// Private address.
    pub(super) private_ip: String,
    /// Image version.
    pub(super) image_version: String,
    /// Whether a control plane lists it as a member.
    pub(super) joined: bool,
    /// Its verification service (gRPC).
    pub(super) verification_endpoint: String,
}

/// What the operations read from a prior (or imported) state. Attributes it does not name
/// are ignored; any of these may be null.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct Prior {
    /// The working directory.
    pub(super) id: Option<String>,
    /// The attestation config the cluster enforces.
    pub(super) attestation_config: Option<String>,
    /// Configured control planes.
    pub(super) control_plane_count: Option<u64>,
    /// Configured workers.
    pub(super) worker_count: Option<u64>,
    /// The cluster CA certificate.
    pub(super) cluster_ca_pem: Option<String>,
    /// The owner certificate.
    pub(super) owner_certificate_pem: Option<String>,
    /// The owner's private key.
    pub(super) owner_private_key_pem: Option<SecretString>,
    /// The generated master secret (hex).
    pub(super) master_secret: Option<SecretString>,
    /// The master salt (hex).
    pub(super) master_salt: Option<SecretString>,
    /// The nodes as last read.
    pub(super) nodes: Option<Vec<NodeState>>,
}

impl Prior {
    /// Reads a state value.
    pub(super) fn of(state: &Value) -> Result<Self, Diagnostics> {
        if state.is_null() {
            return Ok(Self::default());
        }
        tfplugin::from_value(state).map_err(crate::binding_diag)
    }

    /// The working directory (the `id`).
    pub(super) fn work_dir(&self) -> Result<PathBuf, Diagnostics> {
        self.id.as_ref().map(PathBuf::from).ok_or_else(|| {
            err(
                "Corrupt state",
                "The state has no `id` (working directory).",
            )
        })
    }

    /// The owner credential, when the state holds one (not after an import).
    pub(super) fn owner(&self) -> Option<OwnerCredential> {
        Some(OwnerCredential {
            ca_pem: self.cluster_ca_pem.clone()?,
            cert_pem: self.owner_certificate_pem.clone()?,
            key_pem: self.owner_private_key_pem.clone()?.0,
        })
    }

    /// The nodes last read as members, with the image version each reported.
    pub(super) fn joined(&self) -> BTreeMap<String, String> {
        self.nodes
            .iter()
            .flatten()
            .filter(|n| n.joined)
            .map(|n| (n.name.clone(), n.image_version.clone()))
            .collect()
    }

    /// A hex secret of the state, decoded.
    pub(super) fn hex(s: &Option<SecretString>) -> Option<Zeroizing<Vec<u8>>> {
        s.as_ref()
            .and_then(|h| hex::decode(h.0.as_str()).ok())
            .map(Zeroizing::new)
    }
}

/// The write-only master secret of a configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WriteOnly {
    master_secret_wo: Option<SecretString>,
}

/// The configuration's `master_secret_wo` (hex), when set.
pub(super) fn master_secret_wo(config: &Value) -> Result<Option<SecretString>, Diagnostics> {
    if config.is_null() {
        return Ok(None);
    }
    tfplugin::from_value::<WriteOnly>(config)
        .map(|w| w.master_secret_wo)
        .map_err(crate::binding_diag)
}

/// The `nodes` attribute's value.
pub(super) fn nodes_value(nodes: &[NodeState]) -> Value {
    let ty = Type::list(Type::object([
        ("name", Type::String),
        ("role", Type::String),
        ("private_ip", Type::String),
        ("image_version", Type::String),
        ("joined", Type::Bool),
        ("verification_endpoint", Type::String),
    ]));
    // Strings and booleans always encode; an error here is a programming error, shown as
    // no nodes rather than a crash.
    tfplugin::to_value(nodes, &ty).unwrap_or_else(|e| {
        tracing::error!(error = %e, "encoding the nodes attribute");
        Value::list(Vec::<Value>::new())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prior_state_reads_typed_and_nodes_round_trip() {
        let nodes = vec![
            NodeState {
                name: "demo-cp-0".into(),
                role: "control-plane".into(),
                private_ip: "10.42.0.10".into(),
                image_version: "v1".into(),
                joined: true,
                verification_endpoint: "127.0.0.1:1".into(),
            },
            NodeState {
                name: "demo-worker-0".into(),
                role: "worker".into(),
                private_ip: "10.42.0.100".into(),
                image_version: "v1".into(),
                joined: false,
                verification_endpoint: "127.0.0.1:2".into(),
            },
        ];
        let state = Value::object([
            ("id", Value::string("/tmp/c")),
            ("worker_count", Value::number(2u64)),
            ("control_plane_count", Value::Null),
            ("master_salt", Value::string("abcd")),
            ("owner_private_key_pem", Value::string("KEY")),
            ("kubeconfig", Value::string("ignored")),
            ("nodes", nodes_value(&nodes)),
        ]);
        let p = Prior::of(&state).unwrap();
        assert_eq!(p.work_dir().unwrap(), PathBuf::from("/tmp/c"));
        assert_eq!(p.worker_count, Some(2));
        assert_eq!(p.control_plane_count, None);
        assert_eq!(p.nodes.as_deref(), Some(&nodes[..]));
        assert_eq!(
            p.joined().into_iter().collect::<Vec<_>>(),
            [("demo-cp-0".to_string(), "v1".to_string())]
        );
        assert_eq!(Prior::hex(&p.master_salt).unwrap().as_slice(), [0xab, 0xcd]);
        // No CA or certificate: no owner credential.
        assert!(p.owner().is_none());
        assert!(!format!("{p:?}").contains("KEY"));
        assert!(Prior::of(&Value::Null).unwrap().work_dir().is_err());
    }
}
