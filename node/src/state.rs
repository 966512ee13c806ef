//! Node and cluster state: secrets in memory, non-secret records persisted on the state disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::keys::{MasterSecret, Secret};
use crate::metadata::Role;

/// File name of the node's record on the mounted state disk.
pub const NODE_STATE_FILE: &str = "node-state.json";
/// File name of a control plane's member list and attestation config.
pub const CLUSTER_STATE_FILE: &str = "cluster-state.json";

/// What a bootstrapped node keeps on its (encrypted) state disk. No secrets: keys are derived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// Role.
    pub role: Role,
    /// Node name.
    pub name: String,
    /// Cluster ID, hex.
    pub cluster_id: String,
    /// Cluster name.
    pub cluster_name: String,
    /// Measurement salt, hex (needed to re-derive the cluster ID on recovery).
    pub measurement_salt: String,
    /// When the node initialised or joined, RFC 3339 UTC.
    pub joined_at: String,
}

/// Errors reading or writing persisted state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// I/O failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON of the expected shape.
    #[error("state file {path} is malformed: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Writes `value` as JSON atomically (temp file + rename) below `dir`.
pub fn save<T: Serialize>(dir: &Path, file: &str, value: &T) -> Result<(), StateError> {
    let path = dir.join(file);
    let tmp = dir.join(format!(".{file}.tmp"));
    let json = serde_json::to_vec_pretty(value).map_err(|source| StateError::Json {
        path: path.clone(),
        source,
    })?;
    // Durable before it counts: without the syncs a power loss after the rename can leave an
    // empty file (ext4 delays allocating a new file's blocks), and a node whose state file is
    // empty can never rejoin. Found by the acceptance test that kills every VM.
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StateError::Io { path, source }
    };
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    std::io::Write::write_all(&mut f, &json).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Reads JSON from `dir/file`; `Ok(None)` when absent.
pub fn load<T: for<'de> Deserialize<'de>>(dir: &Path, file: &str) -> Result<Option<T>, StateError> {
    let path = dir.join(file);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| StateError::Json { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io { path, source }),
    }
}

/// The cluster's secrets as held in memory by control planes (and the measurement part by
/// every node). Never persisted, never logged.
#[derive(Clone)]
pub struct ClusterSecrets {
    /// Master secret and salt (control planes only).
    pub master: Option<MasterSecret>,
    /// Measurement secret.
    pub measurement_secret: Secret,
    /// Measurement salt (not secret).
    pub measurement_salt: Vec<u8>,
    /// Cluster ID.
    pub cluster_id: [u8; 32],
    /// Cluster name.
    pub cluster_name: String,
}

impl std::fmt::Debug for ClusterSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSecrets")
            .field("cluster_id", &hex::encode(self.cluster_id))
            .field("cluster_name", &self.cluster_name)
            .finish_non_exhaustive()
    }
}

/// One member of the cluster as recorded by the control plane that admitted it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Role.
    pub role: Role,
    /// Image version the node reported.
    pub image_version: String,
    /// Summary of its verified attestation claims.
    pub attestation_summary: String,
    /// Joined time, RFC 3339 UTC.
    pub joined_at: String,
    /// Private IP.
    pub private_ip: String,
    /// Lower-case LUKS UUID of its state disk.
    pub disk_uuid: String,
    /// WireGuard public key, hex (empty when none).
    pub wireguard_public_key: String,
    /// Address inside the WireGuard mesh (CIDR).
    pub wireguard_address: String,
}

/// A control plane's view of the cluster (persisted on its state disk).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Members by name.
    pub members: BTreeMap<String, Member>,
    /// Names removed through the management API; refused on join and rejoin.
    pub removed: Vec<String>,
    /// Current attestation config (JSON).
    pub attestation_config_json: String,
    /// Kubernetes state.
    pub kubernetes_status: String,
    /// Kubernetes settings once kubeadm brought the cluster up (control planes build join
    /// material from them).
    #[serde(default)]
    pub kubernetes: Option<crate::services::kubernetes::ClusterSettings>,
}

impl ClusterState {
    /// Merges another control plane's view: members it knows that this view lacks are added
    /// (records already here are kept), and removals win over records on either side. The
    /// merge is idempotent and order-independent, so replicas converge. Returns whether this
    /// view changed.
    pub fn merge(&mut self, members: BTreeMap<String, Member>, removed: &[String]) -> bool {
        let mut changed = false;
        for name in removed {
            if !self.removed.contains(name) {
                self.removed.push(name.clone());
                changed = true;
            }
        }
        for (name, m) in members {
            if !self.members.contains_key(&name) && !self.removed.contains(&name) {
                self.members.insert(name, m);
                changed = true;
            }
        }
        let before = self.members.len();
        let removed = &self.removed;
        self.members.retain(|name, _| !removed.contains(name));
        changed |= self.members.len() != before;
        changed
    }
}

/// RFC 3339 UTC timestamp of now.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(ip: &str) -> Member {
        Member {
            role: Role::Worker,
            image_version: "v".into(),
            attestation_summary: String::new(),
            joined_at: now_rfc3339(),
            private_ip: ip.into(),
            disk_uuid: String::new(),
            wireguard_public_key: String::new(),
            wireguard_address: String::new(),
        }
    }

    #[test]
    fn merge_is_idempotent_union_with_removals_winning() {
        let mut a = ClusterState::default();
        a.members.insert("cp-0".into(), member("10.0.0.1"));
        a.members.insert("w-1".into(), member("10.0.0.2"));
        let mut b = ClusterState::default();
        b.members.insert("cp-1".into(), member("10.0.0.3"));
        b.members.insert("w-2".into(), member("10.0.0.4"));
        b.removed.push("w-1".into());
        let (a0, b0) = (a.clone(), b.clone());
        assert!(a.merge(b0.members.clone(), &b0.removed));
        assert!(b.merge(a0.members.clone(), &a0.removed));
        assert_eq!(
            a.members.keys().collect::<Vec<_>>(),
            ["cp-0", "cp-1", "w-2"]
        );
        assert_eq!(a.members, b.members, "both orders converge");
        assert_eq!(a.removed, ["w-1"]);
        // Idempotent: merging again changes nothing.
        assert!(!a.merge(b.members.clone(), &b.removed));
        // Existing records are kept.
        let mut other = BTreeMap::new();
        other.insert("cp-0".into(), member("10.9.9.9"));
        assert!(!a.merge(other, &[]));
        assert_eq!(a.members["cp-0"].private_ip, "10.0.0.1");
    }

    #[test]
    fn round_trips() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            load::<ClusterState>(d.path(), CLUSTER_STATE_FILE).unwrap(),
            None
        );
        let mut s = ClusterState::default();
        s.removed.push("w-1".into());
        save(d.path(), CLUSTER_STATE_FILE, &s).unwrap();
        assert_eq!(
            load::<ClusterState>(d.path(), CLUSTER_STATE_FILE).unwrap(),
            Some(s)
        );
        // Old files without newer fields still load.
        std::fs::write(
            d.path().join(CLUSTER_STATE_FILE),
            br#"{"members":{},"removed":[],"attestation_config_json":"","kubernetes_status":""}"#,
        )
        .unwrap();
        assert!(
            load::<ClusterState>(d.path(), CLUSTER_STATE_FILE)
                .unwrap()
                .is_some()
        );
        std::fs::write(d.path().join(NODE_STATE_FILE), b"{").unwrap();
        assert!(load::<NodeState>(d.path(), NODE_STATE_FILE).is_err());
        assert!(now_rfc3339().ends_with('Z'));
    }
}
