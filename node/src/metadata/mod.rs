//! Instance metadata: what the (untrusted) host tells a node about itself.
//!
//! Everything here is untrusted input: it decides *where* the node looks, never *whom* it
//! trusts (peers are attested, the init secret is checked against the hash).
//!
//! Implementations: [`FwCfgMetadata`] reads QEMU fw_cfg entries
//! (`/sys/firmware/qemu_fw_cfg/by_name/opt/constellation/<key>/raw`), [`DirectoryMetadata`]
//! reads the same keys as plain files from a directory (host tests). Cloud IMDS variants come
//! with the cloud backends.

use std::path::{Path, PathBuf};

pub use constellation_node_api::metadata::{
    InterfaceAddress, MAX_VALUE_BYTES, Role, format_mac, keys,
};

/// What the metadata says about this instance (the node API's metadata format).
pub type InstanceInfo = constellation_node_api::metadata::NodeMetadata;

/// Parses the `network` key (see [`constellation_node_api::metadata::parse_network`]).
pub fn parse_network(value: &str) -> Result<Vec<InterfaceAddress>, MetadataError> {
    constellation_node_api::metadata::parse_network(value).map_err(MetadataError::from_format)
}

/// Metadata errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// A required key is absent.
    #[error("metadata key {key:?} is missing at {path}; the host must provide it")]
    Missing {
        /// The key.
        key: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A value is malformed.
    #[error("metadata key {key:?} is invalid: {reason}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// Reading failed.
    #[error("reading metadata {path} failed")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl MetadataError {
    fn from_format(e: constellation_node_api::metadata::MetadataError) -> Self {
        use constellation_node_api::metadata::MetadataError as F;
        match e {
            F::Missing { key } => MetadataError::Missing {
                key,
                path: PathBuf::from(key),
            },
            F::Invalid { key, reason } => MetadataError::Invalid { key, reason },
            other => MetadataError::Invalid {
                key: "metadata",
                reason: other.to_string(),
            },
        }
    }
}

/// A source of instance metadata.
pub trait Metadata: Send + Sync {
    /// Reads the current metadata (re-read on every call: peers may change).
    fn instance(&self) -> Result<InstanceInfo, MetadataError>;
}

/// Reads keys as files below a root; `suffix` is appended to each key path (fw_cfg: `raw`).
#[derive(Debug, Clone)]
struct FileSource {
    root: PathBuf,
    suffix: Option<&'static str>,
}

impl FileSource {
    fn path(&self, key: &str) -> PathBuf {
        let p = self.root.join(key);
        match self.suffix {
            Some(s) => p.join(s),
            None => p,
        }
    }

    fn read(&self, key: &'static str) -> Result<Option<String>, MetadataError> {
        use std::io::Read;
        let path = self.path(key);
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(MetadataError::Io { path, source }),
        };
        let mut buf = Vec::new();
        f.take(MAX_VALUE_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(|source| MetadataError::Io {
                path: path.clone(),
                source,
            })?;
        clean_value(key, buf).map(Some)
    }

    fn instance(&self) -> Result<InstanceInfo, MetadataError> {
        parse_instance(|key| self.read(key), |key| self.path(key))
    }
}

/// Checks and normalises one raw metadata value: size limit, UTF-8, and trailing NUL or
/// whitespace removed (fw_cfg blobs often carry them from the host's file).
pub fn clean_value(key: &'static str, raw: Vec<u8>) -> Result<String, MetadataError> {
    if raw.len() as u64 > MAX_VALUE_BYTES {
        return Err(MetadataError::Invalid {
            key,
            reason: format!("longer than {MAX_VALUE_BYTES} bytes"),
        });
    }
    let s = String::from_utf8(raw).map_err(|_| MetadataError::Invalid {
        key,
        reason: "not UTF-8".into(),
    })?;
    Ok(s.trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_string())
}

/// Builds [`InstanceInfo`] from cleaned values (`read(key)`, `None` when absent); `path(key)`
/// names where a missing key was looked for. Pure, so it can be fuzzed directly.
pub fn parse_instance(
    read: impl Fn(&'static str) -> Result<Option<String>, MetadataError>,
    path: impl Fn(&'static str) -> PathBuf,
) -> Result<InstanceInfo, MetadataError> {
    let mut values = std::collections::BTreeMap::new();
    for key in keys::ALL {
        if let Some(v) = read(key)? {
            values.insert(key, v);
        }
    }
    InstanceInfo::decode(|key| values.get(key).map(String::as_str)).map_err(|e| {
        match MetadataError::from_format(e) {
            MetadataError::Missing { key, .. } => MetadataError::Missing {
                key,
                path: path(key),
            },
            other => other,
        }
    })
}

/// QEMU fw_cfg metadata (`-fw_cfg name=opt/constellation/<key>,file=...`).
#[derive(Debug, Clone)]
pub struct FwCfgMetadata(FileSource);

/// Where the kernel exposes fw_cfg entries by name.
pub const FW_CFG_BY_NAME: &str = "/sys/firmware/qemu_fw_cfg/by_name";

impl FwCfgMetadata {
    /// Reads the node's entries below [`FW_CFG_BY_NAME`]
    /// (`opt/constellation/<key>/raw`, see [`constellation_node_api::metadata::fw_cfg_name`]).
    pub fn new() -> Self {
        Self::with_root(
            Path::new(FW_CFG_BY_NAME)
                .join(constellation_node_api::metadata::FW_CFG_PREFIX.trim_end_matches('/')),
        )
    }

    /// Reads below another sysfs-shaped root (`<root>/<key>/raw`).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self(FileSource {
            root: root.into(),
            suffix: Some("raw"),
        })
    }
}

impl Default for FwCfgMetadata {
    fn default() -> Self {
        Self::new()
    }
}

impl Metadata for FwCfgMetadata {
    fn instance(&self) -> Result<InstanceInfo, MetadataError> {
        self.0.instance()
    }
}

/// HOST-TIER metadata: one plain file per key in a directory the test controls.
#[derive(Debug, Clone)]
pub struct DirectoryMetadata(FileSource);

impl DirectoryMetadata {
    /// Reads `<dir>/<key>`.
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self(FileSource {
            root: dir.as_ref().to_path_buf(),
            suffix: None,
        })
    }
}

impl Metadata for DirectoryMetadata {
    fn instance(&self) -> Result<InstanceInfo, MetadataError> {
        self.0.instance()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_directory_and_fw_cfg_layouts() {
        let d = tempfile::tempdir().unwrap();
        let w = |k: &str, v: &str| std::fs::write(d.path().join(k), v).unwrap();
        w("role", "worker\n");
        w("name", "w-1");
        w("private-ip", "10.0.0.3\0");
        w("join-endpoints", "10.0.0.1:30090, 10.0.0.2:30090\n");
        let m = DirectoryMetadata::new(d.path()).instance().unwrap();
        assert_eq!(m.role, Role::Worker);
        assert_eq!(m.join_endpoints, ["10.0.0.1:30090", "10.0.0.2:30090"]);
        assert_eq!(m.init_secret_hash, None);

        let f = tempfile::tempdir().unwrap();
        for (k, v) in [
            ("role", "control-plane"),
            ("name", "cp-0"),
            ("private-ip", "10.0.0.1"),
        ] {
            std::fs::create_dir_all(f.path().join(k)).unwrap();
            std::fs::write(f.path().join(k).join("raw"), v).unwrap();
        }
        let m = FwCfgMetadata::with_root(f.path()).instance().unwrap();
        assert_eq!(m.role, Role::ControlPlane);
        assert!(m.join_endpoints.is_empty());
    }

    #[test]
    fn rejects_bad_values() {
        let d = tempfile::tempdir().unwrap();
        let w = |k: &str, v: &[u8]| std::fs::write(d.path().join(k), v).unwrap();
        let src = DirectoryMetadata::new(d.path());
        assert!(matches!(
            src.instance(),
            Err(MetadataError::Missing { key: "role", .. })
        ));
        w("role", b"boss");
        assert!(matches!(
            src.instance(),
            Err(MetadataError::Invalid { key: "role", .. })
        ));
        w("role", b"worker");
        w("name", b"bad/name");
        assert!(matches!(
            src.instance(),
            Err(MetadataError::Invalid { key: "name", .. })
        ));
        w("name", b"ok");
        w("private-ip", &[0xff, 0xfe]);
        assert!(matches!(
            src.instance(),
            Err(MetadataError::Invalid {
                key: "private-ip",
                ..
            })
        ));
        w("private-ip", &vec![b'1'; (MAX_VALUE_BYTES + 1) as usize]);
        assert!(matches!(src.instance(), Err(MetadataError::Invalid { .. })));
    }

    #[test]
    fn network_key() {
        assert!(
            parse_network("52:54:00:c0:00:01 10.0.0.1")
                .unwrap_err()
                .to_string()
                .contains("\"network\"")
        );
        let d = tempfile::tempdir().unwrap();
        for (k, v) in [
            ("role", "worker"),
            ("name", "w"),
            ("private-ip", "10.42.0.11"),
            ("network", "52:54:00:c1:00:01 10.42.0.11/24\n"),
        ] {
            std::fs::write(d.path().join(k), v).unwrap();
        }
        let m = DirectoryMetadata::new(d.path()).instance().unwrap();
        assert_eq!(m.network.len(), 1);
    }
}
