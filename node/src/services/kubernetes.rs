//! Kubernetes bring-up through kubeadm, for images that carry it (`image/kubernetes.lock`).
//!
//! The agent generates kubeadm `v1beta4` configuration documents (JSON documents joined by
//! `---`: JSON is YAML, so no YAML dependency), runs `kubeadm init` on the first control plane
//! and `kubeadm join` on joiners, and creates per-ticket bootstrap tokens (and, for
//! control-plane joiners, re-uploads the control-plane certificates under a fresh certificate
//! key). Without kubeadm on PATH nothing runs and the status says "not installed".
//!
//! Secrets (bootstrap tokens, certificate keys, the admin kubeconfig) are zeroizing, are
//! never logged and are cut out of kubeadm's output before it is streamed as progress.

use std::path::PathBuf;
use std::process::Stdio;

use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};
use zeroize::Zeroizing;

/// Environment variable overriding where kubeadm writes (default `/etc/kubernetes`).
pub const KUBERNETES_DIR_ENV: &str = "CONSTELLATION_KUBERNETES_DIR";
/// kubeadm's fixed output directory.
pub const DEFAULT_KUBERNETES_DIR: &str = "/etc/kubernetes";
/// The kubeadm config API version the documents use.
pub const KUBEADM_API_VERSION: &str = "kubeadm.k8s.io/v1beta4";
/// API server port.
pub const API_SERVER_PORT: u16 = 6443;
/// Default pod network when the provider names none.
pub const DEFAULT_POD_SUBNET: &str = "10.244.0.0/16";
/// Default service network when the provider names none.
pub const DEFAULT_SERVICE_SUBNET: &str = "10.96.0.0/12";
/// Status once `kubeadm init` or `kubeadm join` succeeded.
pub const STATUS_RUNNING: &str = "running";
/// Lifetime of the bootstrap tokens put into join tickets.
pub const TICKET_TOKEN_TTL: &str = "1h0m0s";
/// Lines of kubeadm output kept for error reports, per stream (stdout and stderr are read
/// concurrently, so one ring could lose the error line to later progress lines).
const TAIL_LINES: usize = 20;

/// Errors of the Kubernetes bring-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubeError {
    /// kubeadm could not be started.
    #[error("starting {program} failed: {source}")]
    Spawn {
        /// The binary.
        program: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// kubeadm exited unsuccessfully.
    #[error("`kubeadm {command}` failed ({status}); its last output lines:\n{tail}")]
    Failed {
        /// Sub-command, without secret arguments.
        command: String,
        /// Exit status.
        status: String,
        /// The last lines of its output (secrets cut out).
        tail: String,
    },
    /// A file kubeadm should have written (or the agent writes) could not be used.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A setting is invalid.
    #[error("invalid Kubernetes setting: {0}")]
    Invalid(String),
}

/// Cluster-wide Kubernetes settings, from the Init request (persisted with the cluster state
/// so that every control plane can build join material).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// Kubernetes version, e.g. `v1.33.7`.
    pub kubernetes_version: String,
    /// Cluster name.
    pub cluster_name: String,
    /// Pod network (CIDR).
    pub pod_subnet: String,
    /// Service network (CIDR).
    pub service_subnet: String,
    /// `host:port` every node reaches the API server at.
    pub control_plane_endpoint: String,
    /// Extra names and addresses for the API server certificate.
    pub cert_sans: Vec<String>,
}

impl ClusterSettings {
    /// Settings from the Init request; empty values get the defaults (networks, endpoint =
    /// this node's private address).
    pub fn new(
        kubernetes_version: &str,
        cluster_name: &str,
        pod_subnet: &str,
        service_subnet: &str,
        control_plane_endpoint: &str,
        cert_sans: &[String],
        private_ip: std::net::IpAddr,
    ) -> Result<Self, KubeError> {
        let pick = |v: &str, d: &str| {
            if v.is_empty() {
                d.to_string()
            } else {
                v.into()
            }
        };
        let s = Self {
            kubernetes_version: kubernetes_version.into(),
            cluster_name: cluster_name.into(),
            pod_subnet: pick(pod_subnet, DEFAULT_POD_SUBNET),
            service_subnet: pick(service_subnet, DEFAULT_SERVICE_SUBNET),
            control_plane_endpoint: pick(
                control_plane_endpoint,
                &std::net::SocketAddr::new(private_ip, API_SERVER_PORT).to_string(),
            ),
            cert_sans: cert_sans.to_vec(),
        };
        for (name, v) in [("pod", &s.pod_subnet), ("service", &s.service_subnet)] {
            check_cidr(v).map_err(|e| KubeError::Invalid(format!("{name} network {v:?}: {e}")))?;
        }
        if !s.kubernetes_version.is_empty() && !valid_version(&s.kubernetes_version) {
            return Err(KubeError::Invalid(format!(
                "kubernetes_version {:?} is not like \"v1.33.7\"",
                s.kubernetes_version
            )));
        }
        if s.control_plane_endpoint.len() > 253
            || !s
                .control_plane_endpoint
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            return Err(KubeError::Invalid(format!(
                "control-plane endpoint {:?} is not host:port",
                s.control_plane_endpoint
            )));
        }
        if s.cert_sans.len() > 32
            || s.cert_sans.iter().any(|n| {
                n.is_empty()
                    || n.len() > 253
                    || !n
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b".-:*".contains(&b))
            })
        {
            return Err(KubeError::Invalid(
                "API server certificate SANs must be at most 32 DNS names or IPs".into(),
            ));
        }
        Ok(s)
    }
}

fn valid_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let parts: Vec<_> = rest.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()))
}

fn check_cidr(v: &str) -> Result<(), String> {
    let (ip, len) = v.split_once('/').ok_or("no /prefix")?;
    let ip: std::net::IpAddr = ip.parse().map_err(|e| format!("{e}"))?;
    let len: u8 = len.parse().map_err(|e| format!("prefix: {e}"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("prefix longer than {max}"));
    }
    Ok(())
}

/// What the node registers as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Kubernetes node name.
    pub name: String,
    /// Address the node (and a control plane's API server) advertises.
    pub private_ip: std::net::IpAddr,
}

/// Join material a control plane hands out in a ticket.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinMaterial {
    /// API server endpoint `host:port`.
    pub api_server_endpoint: String,
    /// Bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`.
    pub token: Zeroizing<String>,
    /// `sha256:<hex>` of the cluster CA's SubjectPublicKeyInfo.
    pub ca_cert_hash: String,
    /// Certificate key for control-plane joiners (64 hex digits); empty for workers.
    pub certificate_key: Zeroizing<String>,
}

impl std::fmt::Debug for JoinMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinMaterial")
            .field("api_server_endpoint", &self.api_server_endpoint)
            .field("ca_cert_hash", &self.ca_cert_hash)
            .finish_non_exhaustive()
    }
}

/// A fresh bootstrap token, `[a-z0-9]{6}.[a-z0-9]{16}` (kubeadm's format).
pub fn generate_token() -> Zeroizing<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let mut s = Zeroizing::new(String::with_capacity(23));
    for i in 0..22 {
        if i == 6 {
            s.push('.');
        }
        let idx = rng.gen_range(0..ALPHABET.len());
        s.push(char::from(ALPHABET.get(idx).copied().unwrap_or(b'a')));
    }
    s
}

/// Whether `t` has the bootstrap-token shape.
pub fn is_token(t: &str) -> bool {
    let ok = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    matches!(t.split_once('.'), Some((id, secret)) if ok(id, 6) && ok(secret, 16))
}

/// A fresh certificate key: 32 random bytes, hex (kubeadm's AES-256 key for uploaded certs).
pub fn generate_certificate_key() -> Zeroizing<String> {
    let mut k = Zeroizing::new([0u8; 32]);
    rand::thread_rng().fill(&mut k[..]);
    Zeroizing::new(hex::encode(&k[..]))
}

/// The discovery hash of a CA certificate (PEM): `sha256:` + hex SHA-256 of its DER
/// SubjectPublicKeyInfo, as `kubeadm join --discovery-token-ca-cert-hash` expects.
pub fn ca_cert_hash(pem: &[u8]) -> Result<String, String> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not a PEM certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(format!(
        "sha256:{}",
        hex::encode(Sha256::digest(cert.tbs_certificate.subject_pki.raw))
    ))
}

fn doc(v: &serde_json::Value) -> String {
    // Serialising a Value cannot fail.
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn node_registration(node: &NodeSpec) -> serde_json::Value {
    json!({
        "name": node.name,
        "criSocket": "unix:///run/containerd/containerd.sock",
        "kubeletExtraArgs": [{"name": "node-ip", "value": node.private_ip.to_string()}],
    })
}

/// `InitConfiguration` + `ClusterConfiguration` for `kubeadm init` on the first control plane.
pub fn init_config(
    node: &NodeSpec,
    cluster: &ClusterSettings,
    token: &str,
    certificate_key: &str,
) -> String {
    let mut sans = vec![node.private_ip.to_string()];
    if let Some(host) = endpoint_host(&cluster.control_plane_endpoint) {
        sans.push(host);
    }
    for s in &cluster.cert_sans {
        if !sans.contains(s) {
            sans.push(s.clone());
        }
    }
    sans.dedup();
    let init = json!({
        "apiVersion": KUBEADM_API_VERSION,
        "kind": "InitConfiguration",
        "bootstrapTokens": [{
            "token": token,
            "ttl": "24h0m0s",
            "usages": ["signing", "authentication"],
            "groups": ["system:bootstrappers:kubeadm:default-node-token"],
            "description": "created by the Constellation node agent at Init",
        }],
        "nodeRegistration": node_registration(node),
        "localAPIEndpoint": {
            "advertiseAddress": node.private_ip.to_string(),
            "bindPort": API_SERVER_PORT,
        },
        "certificateKey": certificate_key,
        // Kubernetes networking is installed by the operator afterwards, not by kubeadm.
        "skipPhases": ["addon/kube-proxy"],
    });
    let mut cluster_doc = json!({
        "apiVersion": KUBEADM_API_VERSION,
        "kind": "ClusterConfiguration",
        "clusterName": cluster.cluster_name,
        "controlPlaneEndpoint": cluster.control_plane_endpoint,
        "networking": {
            "podSubnet": cluster.pod_subnet,
            "serviceSubnet": cluster.service_subnet,
        },
        "apiServer": {"certSANs": sans},
    });
    if !cluster.kubernetes_version.is_empty()
        && let Some(o) = cluster_doc.as_object_mut()
    {
        o.insert(
            "kubernetesVersion".into(),
            cluster.kubernetes_version.clone().into(),
        );
    }
    format!("{}\n---\n{}\n", doc(&init), doc(&cluster_doc))
}

/// `JoinConfiguration` for `kubeadm join`; with a certificate key the node joins as a
/// control plane.
pub fn join_config(node: &NodeSpec, join: &JoinMaterial) -> String {
    let mut j = json!({
        "apiVersion": KUBEADM_API_VERSION,
        "kind": "JoinConfiguration",
        "nodeRegistration": node_registration(node),
        "discovery": {
            "bootstrapToken": {
                "token": join.token.as_str(),
                "apiServerEndpoint": join.api_server_endpoint,
                "caCertHashes": [join.ca_cert_hash],
            },
        },
    });
    if !join.certificate_key.is_empty()
        && let Some(o) = j.as_object_mut()
    {
        o.insert(
            "controlPlane".into(),
            json!({
                "localAPIEndpoint": {
                    "advertiseAddress": node.private_ip.to_string(),
                    "bindPort": API_SERVER_PORT,
                },
                "certificateKey": join.certificate_key.as_str(),
            }),
        );
    }
    format!("{}\n", doc(&j))
}

fn endpoint_host(ep: &str) -> Option<String> {
    let host = match ep.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => ep,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_string())
}

/// The kubeadm binary and the directories it works with.
#[derive(Debug, Clone)]
pub struct Kubeadm {
    /// The kubeadm binary.
    pub binary: PathBuf,
    /// Where kubeadm writes `admin.conf` and `pki/` (`/etc/kubernetes`).
    pub kubernetes_dir: PathBuf,
    /// Where the agent writes the config files it passes (removed after each run).
    pub work_dir: PathBuf,
}

/// Result of `kubeadm init`.
pub struct InitOutput {
    /// The admin kubeconfig (secret).
    pub kubeconfig: Zeroizing<Vec<u8>>,
    /// Discovery hash of the cluster CA.
    pub ca_cert_hash: String,
}

impl std::fmt::Debug for InitOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitOutput")
            .field("ca_cert_hash", &self.ca_cert_hash)
            .finish_non_exhaustive()
    }
}

impl Kubeadm {
    /// kubeadm from PATH, or `None` when the image does not carry it.
    pub fn find() -> Option<Self> {
        let path = std::env::var_os("PATH")?;
        let binary = std::env::split_paths(&path)
            .map(|d| d.join("kubeadm"))
            .find(|p| p.is_file())?;
        let kubernetes_dir = std::env::var_os(KUBERNETES_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| DEFAULT_KUBERNETES_DIR.into());
        Some(Self {
            binary,
            kubernetes_dir,
            work_dir: std::env::temp_dir(),
        })
    }

    fn admin_conf(&self) -> PathBuf {
        self.kubernetes_dir.join("admin.conf")
    }

    /// The discovery hash of the cluster CA kubeadm wrote.
    pub fn ca_cert_hash(&self) -> Result<String, KubeError> {
        let path = self.kubernetes_dir.join("pki").join("ca.crt");
        let pem = std::fs::read(&path).map_err(|e| KubeError::File {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        ca_cert_hash(&pem).map_err(|reason| KubeError::File { path, reason })
    }

    /// Writes `config` (it holds secrets: mode 0600) and returns a guard removing it.
    fn write_config(&self, name: &str, config: &str) -> Result<TempConfig, KubeError> {
        use std::io::Write as _;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self
            .work_dir
            .join(format!("constellation-{name}-{}.yaml", std::process::id()));
        let file = TempConfig(path.clone());
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create(true).truncate(true);
        #[cfg(unix)]
        o.mode(0o600);
        o.open(&path)
            .and_then(|mut f| f.write_all(config.as_bytes()))
            .map_err(|e| KubeError::File {
                path,
                reason: e.to_string(),
            })?;
        Ok(file)
    }

    /// Runs kubeadm with `args`, feeding each output line (secrets in `redact` replaced)
    /// to `progress`; returns stdout. `shown` names the command in errors.
    async fn run(
        &self,
        shown: &str,
        args: &[&str],
        redact: &[&str],
        progress: &mut (dyn FnMut(String) + Send),
    ) -> Result<Zeroizing<String>, KubeError> {
        let mut child = tokio::process::Command::new(&self.binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| KubeError::Spawn {
                program: self.binary.clone(),
                source,
            })?;
        let clean = |mut l: String| {
            for s in redact.iter().filter(|s| !s.is_empty()) {
                l = l.replace(s, "<redacted>");
            }
            l
        };
        let mut out = child.stdout.take().map(|o| BufReader::new(o).lines());
        let mut err = child.stderr.take().map(|e| BufReader::new(e).lines());
        let mut stdout = Zeroizing::new(String::new());
        let mut tails = [
            std::collections::VecDeque::new(),
            std::collections::VecDeque::new(),
        ];
        let mut keep = |l: String, tail: &mut std::collections::VecDeque<String>| {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(l.clone());
            progress(l);
        };
        while out.is_some() || err.is_some() {
            tokio::select! {
                l = async { match out.as_mut() { Some(o) => o.next_line().await, None => std::future::pending().await } } => match l {
                    Ok(Some(l)) => {
                        stdout.push_str(&l);
                        stdout.push('\n');
                        keep(clean(l), &mut tails[0]);
                    }
                    _ => out = None,
                },
                l = async { match err.as_mut() { Some(e) => e.next_line().await, None => std::future::pending().await } } => match l {
                    Ok(Some(l)) => keep(clean(l), &mut tails[1]),
                    _ => err = None,
                },
            }
        }
        let status = child.wait().await.map_err(|source| KubeError::Spawn {
            program: self.binary.clone(),
            source,
        })?;
        if !status.success() {
            return Err(KubeError::Failed {
                command: shown.into(),
                status: status.to_string(),
                tail: tails
                    .iter()
                    .zip(["stdout", "stderr"])
                    .map(|(t, name)| {
                        let lines: Vec<_> = t.iter().map(String::as_str).collect();
                        format!("{name}:\n{}", lines.join("\n"))
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            });
        }
        Ok(stdout)
    }

    /// `kubeadm init` with `config` (from [`init_config`]); uploads the control-plane
    /// certificates under the config's certificate key. Returns the admin kubeconfig.
    pub async fn init(
        &self,
        config: &str,
        redact: &[&str],
        progress: &mut (dyn FnMut(String) + Send),
    ) -> Result<InitOutput, KubeError> {
        let file = self.write_config("kubeadm-init", config)?;
        let path = file.0.to_string_lossy().into_owned();
        self.run(
            "init",
            &[
                "init",
                "--config",
                &path,
                "--upload-certs",
                "--skip-token-print",
                "--skip-certificate-key-print",
            ],
            redact,
            progress,
        )
        .await?;
        drop(file);
        let admin = self.admin_conf();
        let kubeconfig = Zeroizing::new(std::fs::read(&admin).map_err(|e| KubeError::File {
            path: admin.clone(),
            reason: format!("kubeadm init succeeded but left no admin kubeconfig: {e}"),
        })?);
        Ok(InitOutput {
            kubeconfig,
            ca_cert_hash: self.ca_cert_hash()?,
        })
    }

    /// Creates join material on a running control plane: a fresh bootstrap token, and for
    /// control-plane joiners the certificates re-uploaded under a fresh certificate key.
    pub async fn join_material(
        &self,
        api_server_endpoint: &str,
        control_plane: bool,
    ) -> Result<JoinMaterial, KubeError> {
        let token = generate_token();
        let admin = self.admin_conf().to_string_lossy().into_owned();
        let mut quiet = |_l: String| {};
        self.run(
            "token create",
            &[
                "token",
                "create",
                token.as_str(),
                "--ttl",
                TICKET_TOKEN_TTL,
                "--kubeconfig",
                &admin,
            ],
            &[token.as_str()],
            &mut quiet,
        )
        .await?;
        let certificate_key = if control_plane {
            let key = generate_certificate_key();
            self.run(
                "init phase upload-certs",
                &[
                    "init",
                    "phase",
                    "upload-certs",
                    "--upload-certs",
                    "--certificate-key",
                    key.as_str(),
                    "--skip-certificate-key-print",
                    "--kubeconfig",
                    &admin,
                ],
                &[key.as_str()],
                &mut quiet,
            )
            .await?;
            key
        } else {
            Zeroizing::new(String::new())
        };
        Ok(JoinMaterial {
            api_server_endpoint: api_server_endpoint.into(),
            token,
            ca_cert_hash: self.ca_cert_hash()?,
            certificate_key,
        })
    }

    /// `kubeadm join` with `config` (from [`join_config`]).
    pub async fn join(
        &self,
        config: &str,
        redact: &[&str],
        progress: &mut (dyn FnMut(String) + Send),
    ) -> Result<(), KubeError> {
        let file = self.write_config("kubeadm-join", config)?;
        let path = file.0.to_string_lossy().into_owned();
        self.run("join", &["join", "--config", &path], redact, progress)
            .await?;
        Ok(())
    }
}

/// Removes a config file holding secrets when dropped (also on error paths).
struct TempConfig(PathBuf);

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ClusterSettings {
        ClusterSettings::new(
            "v1.33.7",
            "c1",
            "10.10.0.0/16",
            "10.20.0.0/16",
            "",
            &["k8s.example".into()],
            "192.168.5.2".parse().unwrap(),
        )
        .unwrap()
    }

    fn docs(s: &str) -> Vec<serde_json::Value> {
        s.split("\n---\n")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn init_config_fields() {
        let node = NodeSpec {
            name: "cp-0".into(),
            private_ip: "192.168.5.2".parse().unwrap(),
        };
        let d = docs(&init_config(
            &node,
            &settings(),
            "abcdef.0123456789abcdef",
            "ff",
        ));
        assert_eq!(d.len(), 2);
        let (i, c) = (&d[0], &d[1]);
        assert_eq!(i["apiVersion"], "kubeadm.k8s.io/v1beta4");
        assert_eq!(i["kind"], "InitConfiguration");
        assert_eq!(i["nodeRegistration"]["name"], "cp-0");
        assert_eq!(i["localAPIEndpoint"]["advertiseAddress"], "192.168.5.2");
        assert_eq!(i["localAPIEndpoint"]["bindPort"], 6443);
        assert_eq!(i["bootstrapTokens"][0]["token"], "abcdef.0123456789abcdef");
        assert_eq!(i["certificateKey"], "ff");
        assert!(i["skipPhases"].is_array());
        assert_eq!(c["kind"], "ClusterConfiguration");
        assert_eq!(c["kubernetesVersion"], "v1.33.7");
        assert_eq!(c["controlPlaneEndpoint"], "192.168.5.2:6443");
        assert_eq!(c["networking"]["podSubnet"], "10.10.0.0/16");
        assert_eq!(c["networking"]["serviceSubnet"], "10.20.0.0/16");
        let sans: Vec<_> = c["apiServer"]["certSANs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(sans, ["192.168.5.2", "k8s.example"]);
    }

    #[test]
    fn join_config_worker_and_control_plane() {
        let node = NodeSpec {
            name: "w-1".into(),
            private_ip: "192.168.5.3".parse().unwrap(),
        };
        let mut m = JoinMaterial {
            api_server_endpoint: "192.168.5.2:6443".into(),
            token: generate_token(),
            ca_cert_hash: "sha256:00".into(),
            certificate_key: Zeroizing::new(String::new()),
        };
        let d = docs(&join_config(&node, &m));
        assert_eq!(d.len(), 1);
        let j = &d[0];
        assert_eq!(j["kind"], "JoinConfiguration");
        assert_eq!(j["apiVersion"], "kubeadm.k8s.io/v1beta4");
        assert_eq!(j["nodeRegistration"]["name"], "w-1");
        let bt = &j["discovery"]["bootstrapToken"];
        assert_eq!(bt["token"], m.token.as_str());
        assert_eq!(bt["apiServerEndpoint"], "192.168.5.2:6443");
        assert_eq!(bt["caCertHashes"][0], "sha256:00");
        assert!(
            j.get("controlPlane").is_none(),
            "worker has no controlPlane"
        );
        m.certificate_key = generate_certificate_key();
        let j = &docs(&join_config(&node, &m))[0];
        assert_eq!(
            j["controlPlane"]["certificateKey"],
            m.certificate_key.as_str()
        );
        assert_eq!(
            j["controlPlane"]["localAPIEndpoint"]["advertiseAddress"],
            "192.168.5.3"
        );
        assert!(!format!("{m:?}").contains(m.token.as_str()));
    }

    #[test]
    fn token_and_key_format() {
        for _ in 0..50 {
            let t = generate_token();
            assert!(is_token(&t), "{}", t.as_str());
        }
        assert_ne!(generate_token(), generate_token());
        for bad in [
            "",
            "abcdef",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdefg",
        ] {
            assert!(!is_token(bad), "{bad}");
        }
        let k = generate_certificate_key();
        assert_eq!(k.len(), 64);
        assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn settings_defaults_and_validation() {
        let s =
            ClusterSettings::new("", "c", "", "", "", &[], "10.0.0.9".parse().unwrap()).unwrap();
        assert_eq!(s.pod_subnet, DEFAULT_POD_SUBNET);
        assert_eq!(s.service_subnet, DEFAULT_SERVICE_SUBNET);
        assert_eq!(s.control_plane_endpoint, "10.0.0.9:6443");
        let ip = "10.0.0.9".parse().unwrap();
        assert!(ClusterSettings::new("1.33", "c", "", "", "", &[], ip).is_err());
        assert!(ClusterSettings::new("", "c", "10.0.0.0", "", "", &[], ip).is_err());
        assert!(ClusterSettings::new("", "c", "", "10.0.0.0/99", "", &[], ip).is_err());
        assert!(ClusterSettings::new("", "c", "", "", "a b:1", &[], ip).is_err());
        assert_eq!(endpoint_host("[fd00::1]:6443").unwrap(), "fd00::1");
    }

    /// A STAND-IN for kubeadm (not obtainable here) that fails like kubeadm does: it tests
    /// only how the agent reports a failure.
    #[cfg(unix)]
    #[tokio::test]
    async fn failure_reports_the_output_tail_without_secrets() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("kubeadm");
        std::fs::write(
            &bin,
            "#!/bin/sh\nfor i in $(seq 1 40); do echo \"line $i\"; done\n\
             echo \"error execution phase preflight: token abcdef.0123456789abcdef\" >&2\nexit 3\n",
        )
        .unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let k = Kubeadm {
            binary: bin,
            kubernetes_dir: d.path().join("k8s"),
            work_dir: d.path().to_path_buf(),
        };
        let mut seen = Vec::new();
        let mut cb = |l: String| seen.push(l);
        let e = k
            .init("{}", &["abcdef.0123456789abcdef"], &mut cb)
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("`kubeadm init` failed"), "{msg}");
        assert!(msg.contains("exit status: 3"), "{msg}");
        assert!(msg.contains("error execution phase preflight"), "{msg}");
        assert!(
            msg.contains("line 40") && !msg.contains("line 5\n"),
            "{msg}"
        );
        assert!(!msg.contains("abcdef.0123456789abcdef"), "{msg}");
        assert_eq!(seen.len(), 41);
        // The config file (it holds secrets) is removed on failure too.
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".yaml"))
            .collect();
        assert!(left.is_empty());
        // A missing binary is reported as such.
        let k = Kubeadm {
            binary: d.path().join("nope"),
            ..k
        };
        let e = k.join("{}", &[], &mut |_| {}).await.unwrap_err();
        assert!(matches!(e, KubeError::Spawn { .. }), "{e}");
    }

    #[test]
    fn ca_hash_matches_independent_spki_digest() {
        use base64::Engine as _;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["kubernetes".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        // Independent path: the key's own SPKI (PEM "PUBLIC KEY"), not parsed from the cert.
        let spki_b64: String = key
            .public_key_pem()
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let spki = base64::engine::general_purpose::STANDARD
            .decode(spki_b64)
            .unwrap();
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(spki)));
        assert_eq!(ca_cert_hash(cert.pem().as_bytes()).unwrap(), expected);
        assert!(ca_cert_hash(b"garbage").is_err());
    }
}
