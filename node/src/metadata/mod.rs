//! Instance metadata: what the (untrusted) host tells a node about itself.
//!
//! Everything here is untrusted input: it decides *where* the node looks, never *whom* it
//! trusts (peers are attested, the init secret is checked against the hash).
//!
//! Implementations: [`FwCfgMetadata`] reads QEMU fw_cfg entries
//! (`/sys/firmware/qemu_fw_cfg/by_name/opt/constellation/<key>/raw`), [`DirectoryMetadata`]
//! reads the same keys as plain files from a directory (host tests). Cloud IMDS variants come
//! with the cloud backends.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Largest metadata value read, in bytes.
pub const MAX_VALUE_BYTES: u64 = 64 * 1024;

/// The node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Serves init/join/key/verification/recovery/management.
    ControlPlane,
    /// Runs workloads only.
    Worker,
}

impl Role {
    /// `control-plane` or `worker`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = MetadataError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "control-plane" | "controlplane" => Ok(Role::ControlPlane),
            "worker" => Ok(Role::Worker),
            other => Err(MetadataError::Invalid {
                key: "role",
                reason: format!("{other:?} is neither \"control-plane\" nor \"worker\""),
            }),
        }
    }
}

/// What the metadata says about this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    /// Role.
    pub role: Role,
    /// Node name (unique in the cluster).
    pub name: String,
    /// Address on the private network.
    pub private_ip: IpAddr,
    /// Join-service endpoints (`host:port`) of control planes to try.
    pub join_endpoints: Vec<String>,
    /// argon2id PHC hash of the one-time init secret (first control plane only).
    pub init_secret_hash: Option<String>,
    /// Image version, when the host passes it (otherwise the agent's built-in one).
    pub image_version: Option<String>,
    /// Static interface configuration (key `network`); empty: leave networking alone.
    pub network: Vec<InterfaceAddress>,
}

/// One line of the `network` key: `<mac> <address>/<prefix>[ via <gateway>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// MAC address that identifies the interface.
    pub mac: [u8; 6],
    /// Address to add.
    pub address: IpAddr,
    /// Prefix length of `address`.
    pub prefix: u8,
    /// Default gateway through this interface, if any.
    pub gateway: Option<IpAddr>,
}

impl InterfaceAddress {
    /// The MAC in the usual `52:54:00:…` form.
    pub fn mac_string(&self) -> String {
        format_mac(&self.mac)
    }
}

/// Formats a MAC address as lower-case colon-separated hex.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Parses the `network` key: one interface per non-empty line,
/// `<mac> <address>/<prefix>[ via <gateway>]`. Pure and panic-free (fuzzed).
pub fn parse_network(value: &str) -> Result<Vec<InterfaceAddress>, MetadataError> {
    let mut out: Vec<InterfaceAddress> = Vec::new();
    for (n, line) in value.lines().map(str::trim).enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| MetadataError::Invalid {
            key: keys::NETWORK,
            reason: format!("line {}: {reason}", n + 1),
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let (mac, cidr, gateway) = match words.as_slice() {
            [mac, cidr] => (*mac, *cidr, None),
            [mac, cidr, "via", gw] => (*mac, *cidr, Some(*gw)),
            _ => {
                return Err(bad(format!(
                    "{line:?}: expected \"<mac> <address>/<prefix>[ via <gateway>]\""
                )));
            }
        };
        let mac = parse_mac(mac).ok_or_else(|| bad(format!("{mac:?} is not a MAC address")))?;
        let (addr, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| bad(format!("{cidr:?} has no /prefix")))?;
        let address: IpAddr = addr
            .parse()
            .map_err(|e| bad(format!("address {addr:?}: {e}")))?;
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| bad(format!("prefix {prefix:?} is not in 0..={max}")))?;
        let gateway = gateway
            .map(|g| {
                g.parse::<IpAddr>()
                    .map_err(|e| bad(format!("gateway {g:?}: {e}")))
                    .and_then(|gw| {
                        if gw.is_ipv4() == address.is_ipv4() {
                            Ok(gw)
                        } else {
                            Err(bad(format!(
                                "gateway {g} and address {addr} differ in family"
                            )))
                        }
                    })
            })
            .transpose()?;
        if out.iter().any(|i| i.mac == mac) {
            return Err(bad(format!("{} is listed twice", format_mac(&mac))));
        }
        out.push(InterfaceAddress {
            mac,
            address,
            prefix,
            gateway,
        });
    }
    Ok(out)
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

/// A source of instance metadata.
pub trait Metadata: Send + Sync {
    /// Reads the current metadata (re-read on every call: peers may change).
    fn instance(&self) -> Result<InstanceInfo, MetadataError>;
}

/// Keys read by the file-based sources.
pub mod keys {
    /// `control-plane` or `worker`.
    pub const ROLE: &str = "role";
    /// Node name.
    pub const NAME: &str = "name";
    /// Private IP address.
    pub const PRIVATE_IP: &str = "private-ip";
    /// Join endpoints, `host:port`, separated by commas or newlines.
    pub const JOIN_ENDPOINTS: &str = "join-endpoints";
    /// argon2id PHC string of the init secret.
    pub const INIT_SECRET_HASH: &str = "init-secret-hash";
    /// Image version.
    pub const IMAGE_VERSION: &str = "image-version";
    /// Static interface configuration, one line per interface (see
    /// [`super::parse_network`]).
    pub const NETWORK: &str = "network";
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
    let required = |key: &'static str| match read(key)? {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(MetadataError::Missing {
            key,
            path: path(key),
        }),
    };
    let role = required(keys::ROLE)?.parse()?;
    let name = required(keys::NAME)?;
    if name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(MetadataError::Invalid {
            key: keys::NAME,
            reason: "use 1..=63 characters of [A-Za-z0-9.-]".into(),
        });
    }
    let ip = required(keys::PRIVATE_IP)?;
    let private_ip = ip.parse().map_err(|e| MetadataError::Invalid {
        key: keys::PRIVATE_IP,
        reason: format!("{ip:?}: {e}"),
    })?;
    let join_endpoints = read(keys::JOIN_ENDPOINTS)?
        .unwrap_or_default()
        .split([',', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let init_secret_hash = read(keys::INIT_SECRET_HASH)?.filter(|s| !s.is_empty());
    let image_version = read(keys::IMAGE_VERSION)?.filter(|s| !s.is_empty());
    let network = match read(keys::NETWORK)? {
        Some(v) => parse_network(&v)?,
        None => Vec::new(),
    };
    Ok(InstanceInfo {
        role,
        name,
        private_ip,
        join_endpoints,
        init_secret_hash,
        image_version,
        network,
    })
}

/// QEMU fw_cfg metadata (`-fw_cfg name=opt/constellation/<key>,file=...`).
#[derive(Debug, Clone)]
pub struct FwCfgMetadata(FileSource);

/// Where the kernel exposes fw_cfg entries named `opt/constellation/*`.
pub const FW_CFG_ROOT: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/constellation";

impl FwCfgMetadata {
    /// Reads below [`FW_CFG_ROOT`].
    pub fn new() -> Self {
        Self::with_root(FW_CFG_ROOT)
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
        let n = parse_network(
            "52:54:00:C0:00:01 10.0.2.15/24 via 10.0.2.2\n\n  52:54:00:c1:00:01 10.42.0.11/24\n",
        )
        .unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].mac_string(), "52:54:00:c0:00:01");
        assert_eq!(n[0].address, "10.0.2.15".parse::<IpAddr>().unwrap());
        assert_eq!(n[0].prefix, 24);
        assert_eq!(n[0].gateway, Some("10.0.2.2".parse().unwrap()));
        assert_eq!(n[1].gateway, None);
        assert!(parse_network("").unwrap().is_empty());
        for bad in [
            "52:54:00:c0:00 10.0.0.1/24",
            "52:54:00:c0:00:01:02 10.0.0.1/24",
            "52:54:00:c0:00:zz 10.0.0.1/24",
            "52:54:00:c0:00:01 10.0.0.1",
            "52:54:00:c0:00:01 10.0.0.1/33",
            "52:54:00:c0:00:01 10.0.0.300/24",
            "52:54:00:c0:00:01 10.0.0.1/24 via",
            "52:54:00:c0:00:01 10.0.0.1/24 via fe80::1",
            "52:54:00:c0:00:01 10.0.0.1/24 gw 10.0.0.2",
            "52:54:00:c0:00:01 10.0.0.1/24\n52:54:00:c0:00:01 10.0.0.2/24",
        ] {
            let err = parse_network(bad).unwrap_err().to_string();
            assert!(err.contains("\"network\""), "{bad}: {err}");
        }
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
