//! The cluster record (`cluster.json` in the working directory): what was created, enough to
//! find, refresh, import and delete the cluster. No secrets. Versioned and backend-neutral;
//! records of earlier versions are migrated when read. Saved durably: a crash leaves the old
//! or the new record, never a torn one.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use constellation_attest::Variant;
use constellation_attest::config::AttestationConfig;
use serde::{Deserialize, Serialize};
use tfplugin::Value;

pub use crate::cloud::BackendOptions;
use crate::cloud::qemu::QemuOptions;
use crate::cloud::{Cloud, ClusterEndpoint, NodeRecord, Role};

/// Name of the record file in the working directory.
pub const RECORD_FILE: &str = "cluster.json";
/// The version this provider writes.
pub const RECORD_VERSION: u32 = 2;

/// What the working directory records about a cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// Record format version ([`RECORD_VERSION`]).
    pub version: u32,
    /// Cluster name.
    pub name: String,
    /// The working directory holding this record (absolute); the resource's ID.
    pub work_dir: PathBuf,
    /// The backend and its settings.
    pub backend: BackendOptions,
    /// Where the Kubernetes API is reached, as the backend's `prepare` said.
    #[serde(default)]
    pub api_endpoint: ClusterEndpoint,
    /// Nodes created so far.
    pub nodes: Vec<NodeRecord>,
    /// Next worker number (never reused, so names stay unique in logs and history).
    pub next_worker: u32,
    /// Next control-plane number (never reused).
    pub next_control_plane: u32,
    /// Cluster ID (hex) once initialised.
    pub cluster_id: Option<String>,
    /// The master secret's salt (hex). Not a secret (HKDF's salt, useless without the master
    /// secret); kept so that whoever holds the master secret derives the owner credential
    /// and recovers control planes after `terraform import`, whose state has no salt.
    #[serde(default)]
    pub master_salt: Option<String>,
    /// Image version new nodes run (the configured image's).
    pub image_version: String,
    /// The configured image new nodes boot. Nodes whose own `image` differs are replaced,
    /// one at a time, by a rolling upgrade.
    pub image_reference: String,
    /// The configuration's non-secret attributes as last applied (for import), in
    /// Terraform's JSON value encoding.
    pub config: serde_json::Value,
}

/// The first format (`"format": 1`, backend settings under `qemu`).
#[derive(Deserialize)]
struct RecordV1 {
    qemu: QemuOptions,
    name: String,
    nodes: Vec<NodeRecord>,
    next_worker: u32,
    #[serde(default)]
    next_control_plane: u32,
    cluster_id: Option<String>,
    image_version: String,
    #[serde(default)]
    image_reference: String,
    config: serde_json::Value,
}

impl RecordV1 {
    fn migrate(self) -> ClusterRecord {
        let mut image_reference = self.image_reference;
        if image_reference.is_empty()
            && let Some(r) = self.config.get("image_reference").and_then(|v| v.as_str())
        {
            image_reference = r.to_owned();
        }
        let mut nodes = self.nodes;
        for n in &mut nodes {
            if n.image.is_empty() {
                n.image = image_reference.clone();
            }
            if n.backend_id.is_empty() {
                // QEMU names a node's directory after the node.
                n.backend_id = n.name.clone();
            }
        }
        let cps = nodes
            .iter()
            .filter(|n| n.role == Role::ControlPlane)
            .map(|n| node_number(&n.name) + 1)
            .max()
            .unwrap_or(0);
        ClusterRecord {
            version: RECORD_VERSION,
            name: self.name,
            work_dir: self.qemu.work_dir.clone(),
            backend: BackendOptions::Qemu(self.qemu),
            api_endpoint: ClusterEndpoint::default(),
            nodes,
            next_worker: self.next_worker,
            next_control_plane: self.next_control_plane.max(cps),
            cluster_id: self.cluster_id,
            master_salt: None,
            image_version: self.image_version,
            image_reference,
            config: self.config,
        }
    }
}

/// The number at the end of a node name (`demo-worker-12` → 12).
pub fn node_number(name: &str) -> u32 {
    name.rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Whether `a` and `b` are the same existing directory (symlinks and relative paths
/// resolved).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

impl ClusterRecord {
    fn path(dir: &Path) -> PathBuf {
        dir.join(RECORD_FILE)
    }

    /// Parses a record of any version this provider knows.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        match v.get("version").and_then(serde_json::Value::as_u64) {
            Some(n) if n == u64::from(RECORD_VERSION) => {
                serde_json::from_value(v).map_err(|e| e.to_string())
            }
            Some(n) => Err(format!(
                "record version {n} is not one this provider reads (it writes \
                 {RECORD_VERSION}); a newer provider wrote it: use that version"
            )),
            None if v.get("format").and_then(serde_json::Value::as_u64) == Some(1) => {
                serde_json::from_value::<RecordV1>(v)
                    .map(RecordV1::migrate)
                    .map_err(|e| format!("record format 1: {e}"))
            }
            None => Err("neither `version` nor `format` says what this record is".into()),
        }
    }

    /// Loads the record from a working directory; None when there is none. A record naming
    /// another directory (moved, copied or edited) is refused: every later step — destroy's
    /// removal above all — acts on the directory the record names.
    pub fn load(dir: &Path) -> Result<Option<Self>, String> {
        let p = Self::path(dir);
        match std::fs::read(&p) {
            Ok(b) => Self::parse(&b)
                .and_then(|r| r.check_location(dir).map(|()| r))
                .map(Some)
                .map_err(|e| format!("{}: {e}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    }

    /// Refuses a record whose working directories are not `dir` itself.
    fn check_location(&self, dir: &Path) -> Result<(), String> {
        let BackendOptions::Qemu(q) = &self.backend;
        for (what, named) in [("work_dir", &self.work_dir), ("qemu.work_dir", &q.work_dir)] {
            if !same_dir(named, dir) {
                return Err(format!(
                    "the record's {what} is {}, not the directory it was read from; \
                     refusing to act on another directory (was the working directory moved \
                     or the record edited? restore it to {})",
                    named.display(),
                    named.display()
                ));
            }
        }
        Ok(())
    }

    /// Writes the record durably: a temporary file, synced, renamed over the record, and
    /// the directory synced so the rename survives a power loss.
    pub fn save(&self) -> Result<(), String> {
        let p = Self::path(&self.work_dir);
        let tmp = p.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &p)?;
            std::fs::File::open(&self.work_dir)?.sync_all()
        };
        write().map_err(|e| format!("writing {}: {e}", p.display()))
    }

    /// The backend that runs this cluster's machines, as the record's settings say.
    pub fn cloud(&self) -> Box<dyn Cloud> {
        crate::cloud::for_backend(&self.backend)
    }

    /// The attestation variant of the recorded configuration (None when unreadable).
    pub fn variant(&self) -> Option<Variant> {
        let cfg = self.config_value();
        let json = cfg.get_attr("attestation_config")?.as_str()?.to_owned();
        AttestationConfig::from_json(json.as_bytes())
            .ok()
            .map(|c| c.variant)
    }

    /// The control planes, in the order they were created.
    pub fn control_planes(&self) -> impl Iterator<Item = &NodeRecord> {
        self.nodes.iter().filter(|n| n.role == Role::ControlPlane)
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The recorded configuration as a value (null attributes when unreadable).
    pub fn config_value(&self) -> Value {
        super::schema::config_from_json(&self.config)
    }
}

/// A node record for tests.
#[cfg(test)]
pub(super) fn test_node(name: &str, role: Role, ip: [u8; 4], image: &str) -> NodeRecord {
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
        backend_id: name.into(),
        image: image.into(),
    }
}

/// A record for tests.
#[cfg(test)]
pub(super) fn test_record(nodes: Vec<NodeRecord>) -> ClusterRecord {
    use crate::cloud::qemu::{Accel, OVMF_CODE, OVMF_VARS, PrivateNetwork};
    ClusterRecord {
        version: RECORD_VERSION,
        name: "acc".into(),
        work_dir: "/tmp/x".into(),
        backend: BackendOptions::Qemu(QemuOptions {
            work_dir: "/tmp/x".into(),
            vcpus: 1,
            memory_mib: 1024,
            state_disk_mib: 256,
            accel: Accel::Tcg,
            network: PrivateNetwork::random(),
            ovmf_code: OVMF_CODE.into(),
            ovmf_vars: OVMF_VARS.into(),
        }),
        api_endpoint: ClusterEndpoint::default(),
        nodes,
        next_worker: 0,
        next_control_plane: 0,
        cluster_id: None,
        master_salt: None,
        image_version: "v2".into(),
        image_reference: "/img/v1/disk.raw".into(),
        config: serde_json::json!({ "image_reference": "/img/v1/disk.raw" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record exactly as the first format wrote it.
    const V1: &str = r#"{
      "format": 1,
      "name": "demo",
      "qemu": {
        "work_dir": "/tmp/tf/.constellation/demo",
        "vcpus": 2,
        "memory_mib": 2048,
        "state_disk_mib": 512,
        "accel": "tcg",
        "network": { "group": "239.255.7.9", "port": 31000 },
        "ovmf_code": "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "ovmf_vars": "/usr/share/OVMF/OVMF_VARS_4M.fd"
      },
      "nodes": [
        {
          "name": "demo-cp-0",
          "role": "control-plane",
          "private_ip": "10.42.0.10",
          "endpoints": {
            "init": "127.0.0.1:40001", "management": "127.0.0.1:40002",
            "recovery": "127.0.0.1:40003", "verify_http": "127.0.0.1:40004",
            "verify_grpc": "127.0.0.1:40005"
          }
        },
        {
          "name": "demo-worker-3",
          "role": "worker",
          "private_ip": "10.42.0.103",
          "endpoints": {
            "init": null, "management": null, "recovery": null,
            "verify_http": "127.0.0.1:40006", "verify_grpc": "127.0.0.1:40007"
          },
          "image": "/img/v0/disk.raw"
        }
      ],
      "next_worker": 4,
      "cluster_id": "ab12",
      "image_version": "v1",
      "config": { "name": "demo", "image_reference": "/img/v1/disk.raw" }
    }"#;

    #[test]
    fn format_1_migrates_on_read() {
        let r = ClusterRecord::parse(V1.as_bytes()).unwrap();
        assert_eq!(r.version, RECORD_VERSION);
        assert_eq!(r.work_dir, Path::new("/tmp/tf/.constellation/demo"));
        let BackendOptions::Qemu(q) = &r.backend;
        assert_eq!(q.vcpus, 2);
        assert_eq!(q.network.port, 31000);
        // Missing fields come from the recorded configuration and the node names.
        assert_eq!(r.image_reference, "/img/v1/disk.raw");
        assert_eq!(r.nodes[0].image, "/img/v1/disk.raw");
        assert_eq!(r.nodes[1].image, "/img/v0/disk.raw");
        assert_eq!(r.nodes[0].backend_id, "demo-cp-0");
        assert_eq!(r.next_control_plane, 1);
        assert_eq!(r.next_worker, 4);
        assert_eq!(r.cluster_id.as_deref(), Some("ab12"));
        assert_eq!(r.api_endpoint, ClusterEndpoint::default());
    }

    #[test]
    fn saved_records_read_back_and_unknown_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = ClusterRecord::parse(V1.as_bytes()).unwrap();
        r.work_dir = dir.path().to_path_buf();
        let BackendOptions::Qemu(q) = &mut r.backend;
        q.work_dir = dir.path().to_path_buf();
        r.save().unwrap();
        let back = ClusterRecord::load(dir.path()).unwrap().unwrap();
        assert_eq!(back.nodes, r.nodes);
        assert_eq!(back.backend, r.backend);
        assert!(!dir.path().join("cluster.json.tmp").exists());
        let text = std::fs::read_to_string(dir.path().join(RECORD_FILE)).unwrap();
        assert!(
            text.contains("\"version\": 2") && text.contains("\"qemu\""),
            "{text}"
        );
        let newer = text.replace("\"version\": 2", "\"version\": 3");
        let e = ClusterRecord::parse(newer.as_bytes()).unwrap_err();
        assert!(e.contains("version 3"), "{e}");
        assert!(ClusterRecord::parse(b"{}").is_err());
        assert!(
            ClusterRecord::load(&dir.path().join("none"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_record_naming_another_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let mut r = ClusterRecord::parse(V1.as_bytes()).unwrap();
        r.work_dir = dir.path().to_path_buf();
        let BackendOptions::Qemu(q) = &mut r.backend;
        q.work_dir = dir.path().to_path_buf();
        r.save().unwrap();
        assert!(ClusterRecord::load(dir.path()).unwrap().is_some());
        // Copied (or moved) elsewhere: its paths name the original directory.
        std::fs::copy(
            dir.path().join(RECORD_FILE),
            elsewhere.path().join(RECORD_FILE),
        )
        .unwrap();
        let e = ClusterRecord::load(elsewhere.path()).unwrap_err();
        assert!(e.contains("not the directory it was read from"), "{e}");
        // Edited to name another directory for the backend only.
        let BackendOptions::Qemu(q) = &mut r.backend;
        q.work_dir = elsewhere.path().to_path_buf();
        r.save().unwrap();
        let e = ClusterRecord::load(dir.path()).unwrap_err();
        assert!(e.contains("qemu.work_dir"), "{e}");
    }

    #[test]
    fn node_numbers_come_from_names() {
        assert_eq!(node_number("demo-worker-12"), 12);
        assert_eq!(node_number("demo"), 0);
    }
}
