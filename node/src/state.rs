//! Node and cluster state: secrets in memory, non-secret records persisted on the state disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::Sha256;

use crate::keys::{self, MasterSecret, Secret};
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
    /// The cluster state on disk is not authenticated by this cluster's master secret, so its
    /// security configuration (attestation config, members, removals) is not adopted.
    #[error(
        "state file {path} is not authenticated by this cluster's master secret: {reason}; its \
         attestation config and member and removal lists are not adopted (only a control plane \
         holding the master secret writes them, so someone else wrote or replaced this file)"
    )]
    Unauthenticated {
        /// The file.
        path: PathBuf,
        /// What was wrong (no MAC, MAC mismatch).
        reason: &'static str,
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

/// HKDF info of the key that authenticates [`CLUSTER_STATE_FILE`]. Outside the `key-` namespace
/// of data keys, so no key id a client asks for can derive it.
pub const STATE_MAC_INFO: &str = "constellation/state-file-mac/v1";
/// Format marker of the authenticated cluster-state file.
const SEALED_FORMAT: &str = "constellation-cluster-state/v1";

/// The key that authenticates the cluster state on the state disk:
/// `HKDF-SHA256(master secret, master salt, STATE_MAC_INFO)`.
#[derive(Clone)]
pub struct StateMacKey(Secret);

impl std::fmt::Debug for StateMacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateMacKey(<redacted>)")
    }
}

impl StateMacKey {
    /// Derives the key from the cluster's master secret.
    pub fn derive(master: &MasterSecret) -> Result<Self, keys::KeyError> {
        keys::derive(
            master.secret().expose(),
            master.salt().expose(),
            STATE_MAC_INFO.as_bytes(),
            keys::DEFAULT_KEY_LEN,
        )
        .map(Self)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(self.0.expose())
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"))
    }
}

/// `cluster-state.json`: the state as written (exact bytes) and its HMAC, when the writer held
/// the master secret.
#[derive(Serialize, Deserialize)]
struct SealedClusterState {
    format: String,
    /// HMAC-SHA256 of the `state` bytes, hex; `None` when written without the master secret.
    mac: Option<String>,
    state: Box<RawValue>,
}

/// Writes the cluster state with its HMAC under `key` (control planes), or without one when
/// the node holds no master secret (workers: their copy is never trusted for security).
pub fn save_cluster_state(
    dir: &Path,
    state: &ClusterState,
    key: Option<&StateMacKey>,
) -> Result<(), StateError> {
    let json = |source| StateError::Json {
        path: dir.join(CLUSTER_STATE_FILE),
        source,
    };
    let raw = serde_json::value::to_raw_value(state).map_err(json)?;
    let mac = key.map(|k| {
        let mut m = k.mac();
        m.update(raw.get().as_bytes());
        hex::encode(m.finalize().into_bytes())
    });
    let sealed = SealedClusterState {
        format: SEALED_FORMAT.into(),
        mac,
        state: raw,
    };
    save(dir, CLUSTER_STATE_FILE, &sealed)
}

/// Reads the cluster state written by [`save_cluster_state`].
///
/// With `key` (a node holding the master secret), the file must carry a valid HMAC: otherwise
/// [`StateError::Unauthenticated`] names why. Without `key`, only the fields that carry no
/// security configuration are returned (Kubernetes status and settings); members, removals and
/// the attestation config are left empty for the cluster to supply.
pub fn load_cluster_state(
    dir: &Path,
    key: Option<&StateMacKey>,
) -> Result<Option<ClusterState>, StateError> {
    let path = dir.join(CLUSTER_STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Io { path, source }),
    };
    let json = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StateError::Json { path, source }
    };
    let sealed = match serde_json::from_slice::<SealedClusterState>(&bytes) {
        Ok(s) if s.format == SEALED_FORMAT => Some(s),
        _ => None,
    };
    let (state_bytes, mac) = match &sealed {
        Some(s) => (s.state.get().as_bytes(), s.mac.as_deref()),
        // An older agent's file: the state itself, never authenticated.
        None => (&bytes[..], None),
    };
    let state: ClusterState = serde_json::from_slice(state_bytes).map_err(json(&path))?;
    let Some(key) = key else {
        return Ok(Some(ClusterState {
            kubernetes_status: state.kubernetes_status,
            kubernetes: state.kubernetes,
            ..ClusterState::default()
        }));
    };
    let Some(mac) = mac else {
        return Err(StateError::Unauthenticated {
            path,
            reason: "it carries no MAC",
        });
    };
    let tag = hex::decode(mac).map_err(|_| StateError::Unauthenticated {
        path: path.clone(),
        reason: "its MAC is not hex",
    })?;
    let mut m = key.mac();
    m.update(state_bytes);
    m.verify_slice(&tag)
        .map_err(|_| StateError::Unauthenticated {
            path: path.clone(),
            reason: "its MAC does not match",
        })?;
    Ok(Some(state))
}

/// The stored cluster state a rejoining node starts from, before the rejoin ticket's current
/// members and attestation config are merged in. A file that fails authentication is reported
/// and only its non-security fields are kept; the ticket supplies the rest.
pub fn load_cluster_state_for_rejoin(
    dir: &Path,
    key: Option<&StateMacKey>,
) -> Option<ClusterState> {
    match load_cluster_state(dir, key) {
        Ok(s) => s,
        Err(e @ StateError::Unauthenticated { .. }) => {
            tracing::warn!(error = %e, "using the rejoin ticket's view of the cluster instead");
            load_cluster_state(dir, None).ok().flatten()
        }
        Err(e) => {
            tracing::warn!(error = %e, "the stored cluster state is unreadable; ignoring it");
            None
        }
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
        // A set for look-ups: the list only grows, so linear scans made each merge quadratic.
        let mut known: std::collections::HashSet<String> = self.removed.iter().cloned().collect();
        for name in removed {
            if known.insert(name.clone()) {
                self.removed.push(name.clone());
                changed = true;
            }
        }
        for (name, m) in members {
            if !self.members.contains_key(&name) && !known.contains(&name) {
                self.members.insert(name, m);
                changed = true;
            }
        }
        let before = self.members.len();
        self.members.retain(|name, _| !known.contains(name));
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
    fn merge_of_many_removals_is_set_based_and_deduplicated() {
        let mut a = ClusterState::default();
        a.members.insert("w-42".into(), member("10.0.0.1"));
        let removed: Vec<String> = (0..5000).map(|i| format!("w-{i}")).collect();
        assert!(a.merge(BTreeMap::new(), &removed));
        assert_eq!(a.removed.len(), 5000);
        assert!(a.members.is_empty(), "a removed name drops its record");
        assert!(
            !a.merge(BTreeMap::new(), &removed),
            "merging again changes nothing"
        );
        assert_eq!(a.removed.len(), 5000);
    }

    fn mac_key(byte: u8) -> StateMacKey {
        StateMacKey::derive(&MasterSecret::new(&[byte; 32], &[9u8; 16]).unwrap()).unwrap()
    }

    fn secured(config: &str) -> ClusterState {
        let mut s = ClusterState::default();
        s.members.insert("cp-0".into(), member("10.0.0.1"));
        s.removed.push("w-9".into());
        s.attestation_config_json = config.into();
        s.kubernetes_status = "running".into();
        s
    }

    #[test]
    fn cluster_state_is_authenticated_by_the_master_secret() {
        let d = tempfile::tempdir().unwrap();
        let key = mac_key(1);
        assert_eq!(load_cluster_state(d.path(), Some(&key)).unwrap(), None);
        let s = secured(r#"{"variant":"qemu-vtpm"}"#);
        save_cluster_state(d.path(), &s, Some(&key)).unwrap();
        assert_eq!(
            load_cluster_state(d.path(), Some(&key)).unwrap(),
            Some(s.clone())
        );

        // Another cluster's master secret: refused.
        let e = load_cluster_state(d.path(), Some(&mac_key(2))).unwrap_err();
        assert!(
            matches!(e, StateError::Unauthenticated { reason, .. } if reason.contains("does not match")),
            "{e}"
        );

        // The attestation config changed on disk, MAC kept: refused.
        let path = d.path().join(CLUSTER_STATE_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        let forged = text.replace("qemu-vtpm", "qemu-vtpX");
        assert_ne!(text, forged);
        std::fs::write(&path, forged).unwrap();
        let e = load_cluster_state(d.path(), Some(&key)).unwrap_err();
        assert!(e.to_string().contains("MAC does not match"), "{e}");
        assert!(e.to_string().contains("attestation config"), "{e}");

        // Written without a MAC (or by an older agent, plain state): refused.
        save_cluster_state(d.path(), &secured("{}"), None).unwrap();
        let e = load_cluster_state(d.path(), Some(&key)).unwrap_err();
        assert!(e.to_string().contains("carries no MAC"), "{e}");
        save(d.path(), CLUSTER_STATE_FILE, &secured("{}")).unwrap();
        let e = load_cluster_state(d.path(), Some(&key)).unwrap_err();
        assert!(e.to_string().contains("carries no MAC"), "{e}");
    }

    #[test]
    fn without_the_master_secret_only_non_security_fields_are_read() {
        let d = tempfile::tempdir().unwrap();
        save_cluster_state(d.path(), &secured("{\"a\":1}"), None).unwrap();
        let got = load_cluster_state(d.path(), None).unwrap().unwrap();
        assert_eq!(got.kubernetes_status, "running");
        assert!(got.members.is_empty() && got.removed.is_empty());
        assert!(got.attestation_config_json.is_empty());
    }

    #[test]
    fn state_mac_key_is_outside_the_data_key_namespace() {
        assert!(!STATE_MAC_INFO.starts_with(keys::INFO_PREFIX));
        let m = MasterSecret::new(&[1u8; 32], &[9u8; 16]).unwrap();
        let want = keys::derive(&[1u8; 32], &[9u8; 16], STATE_MAC_INFO.as_bytes(), 32).unwrap();
        assert_eq!(StateMacKey::derive(&m).unwrap().0, want);
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
