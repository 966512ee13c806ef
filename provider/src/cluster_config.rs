//! The `constellation_cluster` configuration: parsing, validation with diagnostics at the
//! attribute that is wrong, and the derived values (addresses, node names, timeouts).
//!
//! Validation runs in ValidateResourceConfig, before any machine exists, and again on apply
//! (values unknown at validation time are checked then).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use constellation_attest::config::AttestationConfig;
use tfplugin::{AttributePath, Diagnostics, Value};
use zeroize::Zeroizing;

use crate::cloud::qemu::Accel;

/// Default create timeout (TCG boots are slow).
pub const DEFAULT_CREATE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default update timeout.
pub const DEFAULT_UPDATE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default delete timeout.
pub const DEFAULT_DELETE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Default private network.
pub const DEFAULT_NODE_CIDR: &str = "10.42.0.0/24";
/// Default Kubernetes pod network.
pub const DEFAULT_POD_CIDR: &str = "10.244.0.0/16";
/// Default Kubernetes service network.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";
/// Most control planes.
pub const MAX_CONTROL_PLANES: u64 = 9;
/// Most workers at once (addresses come from the node network, lowest free first).
pub const MAX_WORKERS: u64 = 100;

/// QEMU settings (the `cloud.qemu` block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuSettings {
    /// vCPUs per VM.
    pub vcpus: u32,
    /// Memory per VM (MiB).
    pub memory_mib: u32,
    /// State disk per VM (MiB).
    pub state_disk_mib: u64,
    /// Accelerator.
    pub accel: Accel,
    /// Working directory as configured (None: default).
    pub working_dir: Option<String>,
}

/// An IPv4 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`; the address must be the network address.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR notation (e.g. {DEFAULT_NODE_CIDR})"))?;
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{p:?} is not a prefix length 0..=32"))?;
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        if u32::from(addr) & !mask != 0 {
            return Err(format!(
                "{s} has host bits set; the network address is {}/{prefix}",
                Ipv4Addr::from(u32::from(addr) & mask)
            ));
        }
        Ok(Self { addr, prefix })
    }

    fn overlaps(&self, other: &Cidr) -> bool {
        let p = self.prefix.min(other.prefix);
        let mask = u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
        u32::from(self.addr) & mask == u32::from(other.addr) & mask
    }
}

/// Everything the cluster is configured with (write-only secret excluded).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Cluster name.
    pub name: String,
    /// QEMU settings.
    pub qemu: QemuSettings,
    /// Control planes.
    pub control_plane_count: u64,
    /// Workers.
    pub worker_count: u64,
    /// `disk.raw` of the image.
    pub image_reference: String,
    /// The attestation config as given (JSON).
    pub attestation_config: String,
    /// Kubernetes version or None.
    pub kubernetes_version: Option<String>,
    /// Node network.
    pub node_cidr: Cidr,
    /// Pod network (Kubernetes).
    pub pod_cidr: Cidr,
    /// Service network (Kubernetes).
    pub service_cidr: Cidr,
    /// Timeouts.
    pub create_timeout: Duration,
    /// Update timeout.
    pub update_timeout: Duration,
    /// Delete timeout.
    pub delete_timeout: Duration,
}

impl ClusterConfig {
    /// Name of control plane `i`.
    pub fn control_plane_name(&self, i: u32) -> String {
        format!("{}-cp-{i}", self.name)
    }

    /// Name of worker `i`.
    pub fn worker_name(&self, i: u32) -> String {
        format!("{}-worker-{i}", self.name)
    }

    /// The working directory: configured, or `.constellation/<name>` under Terraform's
    /// working directory (the provider's current directory).
    pub fn work_dir(&self) -> PathBuf {
        let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        match &self.qemu.working_dir {
            Some(d) => base.join(d),
            None => base.join(".constellation").join(&self.name),
        }
    }
}

fn attr<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.get_attr(p)?;
        if cur.is_null() {
            return None;
        }
    }
    Some(cur)
}

fn path_of(path: &[&str]) -> AttributePath {
    let mut it = path.iter();
    let mut p = AttributePath::new(*it.next().unwrap_or(&""));
    for s in it {
        p = p.attr(*s);
    }
    p
}

/// Collects diagnostics while reading a (possibly partly unknown) configuration. Readers
/// return `None` for null, unknown or invalid values; `complete` stays true only if every
/// value was known.
struct Reader<'a> {
    v: &'a Value,
    d: Diagnostics,
    complete: bool,
}

impl<'a> Reader<'a> {
    fn known(&mut self, path: &[&str]) -> Option<&'a Value> {
        let x = attr(self.v, path)?;
        if !x.is_fully_known() {
            self.complete = false;
            return None;
        }
        Some(x)
    }

    fn string(&mut self, path: &[&str]) -> Option<String> {
        self.known(path).and_then(Value::as_str).map(str::to_owned)
    }

    fn number(&mut self, path: &[&str], min: u64, max: u64, what: &str) -> Option<u64> {
        let x = self.known(path)?;
        match x.as_number().and_then(|n| n.as_u64()) {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                let shown = x
                    .as_number()
                    .map_or_else(|| "?".into(), |n| n.to_decimal_string());
                self.error(
                    path,
                    &format!("Invalid {what}"),
                    format!("{shown} is not allowed: use a whole number from {min} to {max}."),
                );
                None
            }
        }
    }

    fn error(&mut self, path: &[&str], summary: &str, detail: String) {
        self.d.error_at(path_of(path), summary, detail);
    }

    /// Reads a CIDR inside the `network` object. Errors point at `network` because
    /// Terraform cannot highlight a single attribute inside an object expression; the
    /// summary names the attribute.
    fn cidr(&mut self, path: &[&str], default: &str) -> Option<Cidr> {
        let s = match attr(self.v, path) {
            None => default.to_owned(),
            Some(_) => self.string(path)?,
        };
        match Cidr::parse(&s) {
            Ok(c) => Some(c),
            Err(e) => {
                let name = path.last().copied().unwrap_or_default();
                self.error(
                    &path[..1],
                    &format!("Invalid CIDR in {name}"),
                    format!("{name}: {e}."),
                );
                None
            }
        }
    }

    fn duration(&mut self, path: &[&str], default: Duration) -> Option<Duration> {
        let s = match attr(self.v, path) {
            None => return Some(default),
            Some(_) => self.string(path)?,
        };
        match humantime::parse_duration(&s) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => {
                self.error(
                    path,
                    "Invalid timeout",
                    format!("{s:?} is not a duration such as \"30m\", \"1h\" or \"90s\"."),
                );
                None
            }
        }
    }
}

/// Checks the image directory: `disk.raw` with `manifest.json` beside it. Returns the
/// manifest's Kubernetes version (None when the image has none).
pub fn image_manifest(reference: &str) -> Result<ImageManifest, String> {
    let disk = Path::new(reference);
    if !disk.is_absolute() {
        return Err(format!(
            "{reference:?} is not an absolute path; use `data.constellation_image.<name>.reference`"
        ));
    }
    std::fs::metadata(disk).map_err(|e| {
        format!("{reference}: {e}. Build the image with `make image` and pass `data.constellation_image.<name>.reference`.")
    })?;
    let manifest = disk.with_file_name("manifest.json");
    let bytes = std::fs::read(&manifest).map_err(|e| {
        format!(
            "{}: {e}. The image directory must be the output of `make image`.",
            manifest.display()
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", manifest.display()))
}

/// What the resource reads from the image's `manifest.json`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ImageManifest {
    /// Image version.
    pub version: String,
    /// Kubernetes version the image carries.
    pub kubernetes: Option<String>,
}

/// Reads and validates the configuration. Returns the config only when every value is
/// known and valid; diagnostics name the attribute.
pub fn parse(config: &Value) -> (Option<ClusterConfig>, Diagnostics) {
    let mut r = Reader {
        v: config,
        d: Diagnostics::new(),
        complete: true,
    };
    let name = r.string(&["name"]);
    if let Some(n) = &name {
        let ok = n.len() <= 30
            && n.starts_with(|c: char| c.is_ascii_lowercase())
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !n.ends_with('-');
        if !ok {
            r.error(
                &["name"],
                "Invalid cluster name",
                format!(
                    "{n:?}: use 1 to 30 lowercase letters, digits and dashes, starting with a \
                     letter and not ending with a dash (node names are derived from it)."
                ),
            );
        }
    }
    if attr(config, &["cloud", "qemu"]).is_none() {
        r.error(
            &["cloud"],
            "Missing cloud backend",
            "Add `cloud { qemu {} }`: the local QEMU backend is the only one so far.".into(),
        );
    }
    let q = |k: &'static str| ["cloud", "qemu", k];
    let vcpus = r.number(&q("vcpus"), 1, 64, "vCPU count").map(|n| n as u32);
    let memory = r
        .number(&q("memory_mib"), 1024, 1 << 20, "memory size")
        .map(|n| n as u32);
    let disk = r.number(&q("state_disk_mib"), 256, 1 << 24, "state disk size");
    let accel = match r.string(&q("accel")) {
        None => Some(Accel::Tcg),
        Some(a) => Accel::parse(&a).or_else(|| {
            r.error(
                &q("accel"),
                "Invalid accelerator",
                format!("{a:?}: use \"tcg\" (emulation, works everywhere) or \"kvm\" (needs a working /dev/kvm)."),
            );
            None
        }),
    };
    let working_dir = r.string(&q("working_dir"));
    let cps = r.number(
        &["control_plane_count"],
        1,
        MAX_CONTROL_PLANES,
        "control plane count",
    );
    let workers = r.number(&["worker_count"], 0, MAX_WORKERS, "worker count");
    let image = r.string(&["image_reference"]);
    let mut image_k8s = None;
    if let Some(i) = &image {
        match image_manifest(i) {
            Ok(m) => image_k8s = Some(m.kubernetes),
            Err(e) => r.error(&["image_reference"], "Image missing", e),
        }
    }
    let att = r.string(&["attestation_config"]);
    if let Some(a) = &att {
        match AttestationConfig::from_json(a.as_bytes()).and_then(|c| c.validators().map(|_| c)) {
            Ok(_) => {}
            Err(e) => r.error(
                &["attestation_config"],
                "Invalid attestation config",
                format!("{e}. Use the `config_json` of a `constellation_attestation` data source."),
            ),
        }
    }
    let k8s = r.string(&["kubernetes_version"]);
    if let (Some(v), Some(carried)) = (&k8s, &image_k8s) {
        match carried {
            None => r.error(
                &["kubernetes_version"],
                "Kubernetes not in the image",
                format!(
                    "The image carries no Kubernetes, so {v} cannot run on it: remove \
                         `kubernetes_version`, or build an image with Kubernetes."
                ),
            ),
            Some(c) if c.trim_start_matches('v') != v.trim_start_matches('v') => r.error(
                &["kubernetes_version"],
                "Kubernetes version not in the image",
                format!("The image carries Kubernetes {c}, not {v}."),
            ),
            Some(_) => {}
        }
    }
    let node_cidr = r.cidr(&["network", "node_cidr"], DEFAULT_NODE_CIDR);
    if let Some(c) = node_cidr
        && !(8..=24).contains(&c.prefix)
    {
        r.error(
            &["network", "node_cidr"],
            "Invalid CIDR",
            format!(
                "The node network needs a prefix length from 8 to 24, got /{}.",
                c.prefix
            ),
        );
    }
    let pod_cidr = r.cidr(&["network", "pod_cidr"], DEFAULT_POD_CIDR);
    let service_cidr = r.cidr(&["network", "service_cidr"], DEFAULT_SERVICE_CIDR);
    for (a, b, path) in [
        (node_cidr, pod_cidr, "pod_cidr"),
        (node_cidr, service_cidr, "service_cidr"),
        (pod_cidr, service_cidr, "service_cidr"),
    ] {
        if let (Some(a), Some(b)) = (a, b)
            && a.overlaps(&b)
        {
            r.error(
                &["network"],
                &format!("Overlapping networks in {path}"),
                format!(
                    "{}/{} overlaps {}/{}: node, pod and service networks must be disjoint.",
                    b.addr, b.prefix, a.addr, a.prefix
                ),
            );
        }
    }
    let create = r.duration(&["timeouts", "create"], DEFAULT_CREATE_TIMEOUT);
    let update = r.duration(&["timeouts", "update"], DEFAULT_UPDATE_TIMEOUT);
    let delete = r.duration(&["timeouts", "delete"], DEFAULT_DELETE_TIMEOUT);

    if let Some(s) = r.known(&["master_secret_wo"]).and_then(Value::as_str) {
        if let Err(e) = parse_master_secret(s) {
            r.error(&["master_secret_wo"], "Invalid master secret", e);
        }
        if attr(config, &["master_secret_wo_version"]).is_none() {
            r.error(
                &["master_secret_wo_version"],
                "Missing master_secret_wo_version",
                "Write-only values are not stored, so Terraform cannot see when they change: set \
                 `master_secret_wo_version` (changing it replaces the cluster)."
                    .into(),
            );
        }
    }

    let complete = r.complete && !r.d.has_errors();
    let cfg = (|| {
        if !complete {
            return None;
        }
        Some(ClusterConfig {
            name: name?,
            qemu: QemuSettings {
                vcpus: vcpus.unwrap_or(2),
                memory_mib: memory.unwrap_or(2048),
                state_disk_mib: disk.unwrap_or(512),
                accel: accel?,
                working_dir,
            },
            control_plane_count: cps.unwrap_or(1),
            worker_count: workers.unwrap_or(1),
            image_reference: image?,
            attestation_config: att?,
            kubernetes_version: k8s,
            node_cidr: node_cidr?,
            pod_cidr: pod_cidr?,
            service_cidr: service_cidr?,
            create_timeout: create?,
            update_timeout: update?,
            delete_timeout: delete?,
        })
    })();
    (cfg, r.d)
}

/// Parses a master secret given as hex (16 to 64 bytes).
pub fn parse_master_secret(s: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let bytes = Zeroizing::new(hex::decode(s.trim()).map_err(|_| {
        "the master secret must be hex (e.g. from `openssl rand -hex 32`)".to_string()
    })?);
    if !(16..=64).contains(&bytes.len()) {
        return Err(format!(
            "the master secret must be 16 to 64 bytes (32 recommended), got {} bytes",
            bytes.len()
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_checked() {
        assert_eq!(Cidr::parse("10.42.0.0/24").unwrap().prefix, 24);
        assert!(
            Cidr::parse("10.42.0.1/24")
                .unwrap_err()
                .contains("host bits")
        );
        assert!(Cidr::parse("10.42.0.0").is_err());
        assert!(Cidr::parse("10.42.0.0/33").is_err());
        assert!(Cidr::parse("300.1.1.1/8").is_err());
        let c = Cidr::parse("10.42.0.0/24").unwrap();
        assert!(c.overlaps(&Cidr::parse("10.0.0.0/8").unwrap()));
        assert!(!c.overlaps(&Cidr::parse("10.244.0.0/16").unwrap()));
    }

    #[test]
    fn master_secrets_are_hex_of_sane_length() {
        assert!(parse_master_secret(&"ab".repeat(32)).is_ok());
        assert!(parse_master_secret("xyz").unwrap_err().contains("hex"));
        assert!(parse_master_secret("abcd").unwrap_err().contains("2 bytes"));
    }

    #[test]
    fn invalid_values_are_reported_at_their_attribute() {
        let cfg = Value::object([
            ("name", Value::string("Bad_Name")),
            ("control_plane_count", Value::number(0u64)),
            ("worker_count", Value::number(1u64)),
            ("image_reference", Value::string("/nonexistent/disk.raw")),
            ("attestation_config", Value::string("{}")),
            (
                "network",
                Value::object([("node_cidr", Value::string("10.42.0.1/24"))]),
            ),
            (
                "cloud",
                Value::object([("qemu", Value::object([("accel", Value::string("hvf"))]))]),
            ),
        ]);
        let (c, d) = parse(&cfg);
        assert!(c.is_none());
        let paths: Vec<String> = d
            .iter()
            .filter_map(|d| d.attribute.as_ref().map(ToString::to_string))
            .collect();
        for p in [
            "name",
            "control_plane_count",
            "image_reference",
            "attestation_config",
            "network",
            "cloud.qemu.accel",
        ] {
            assert!(paths.iter().any(|x| x == p), "{p} not in {paths:?}");
        }
    }
}
