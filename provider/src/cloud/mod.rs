//! Where cluster nodes run. The `constellation_cluster` resource talks to a [`Cloud`]; the
//! local QEMU backend ([`qemu`]) is the first implementation, AWS/Azure/GCP implement the
//! same trait later.
//!
//! A backend only provisions machines and tells the provider how to reach them; everything
//! about trust (attestation, Init, joins) is the resource's business and identical across
//! backends.

pub mod addresses;
#[cfg(test)]
pub mod memory;
pub mod qemu;

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Where a cluster's machines run, with the backend's settings (recorded in `cluster.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BackendOptions {
    /// Local QEMU VMs.
    Qemu(qemu::QemuOptions),
}

/// The one place a backend's settings become its [`Cloud`]: a new backend adds its arm here.
/// The cluster engine takes any `&dyn Cloud`, so tests pass an in-memory one instead.
pub fn for_backend(options: &BackendOptions) -> Box<dyn Cloud> {
    match options {
        BackendOptions::Qemu(o) => Box::new(qemu::QemuCloud::new(o.clone())),
    }
}

/// A node's role, as the node's metadata names it (the node API's type).
pub use constellation_node_api::metadata::Role;

/// What a node must be told when it is created (its instance metadata).
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Unique node name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Address on the cluster's private network.
    pub private_ip: Ipv4Addr,
    /// Prefix length of the private network.
    pub prefix_len: u8,
    /// Join-service endpoints (`ip:port`) of control planes to try.
    pub join_endpoints: Vec<String>,
    /// argon2id PHC hash of the init secret (control planes).
    pub init_secret_hash: Option<String>,
    /// Image version reported by the node.
    pub image_version: String,
    /// The image to boot, in the backend's terms (QEMU: the image's `disk.raw`). Per node,
    /// so that a rolling upgrade runs old and new images side by side.
    pub image: String,
}

/// Where the provider reaches a node's services from the machine it runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEndpoints {
    /// Bootstrapper Init (aTLS, the node attests). Control planes only.
    pub init: Option<SocketAddr>,
    /// Management API (mutual TLS with the owner certificate). Control planes only.
    pub management: Option<SocketAddr>,
    /// Recovery (aTLS, the node attests). Control planes only.
    pub recovery: Option<SocketAddr>,
    /// Verification service over HTTP.
    pub verify_http: SocketAddr,
    /// Verification service over gRPC.
    pub verify_grpc: SocketAddr,
}

/// A provisioned node as recorded in state and in the backend's records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Private IP.
    pub private_ip: Ipv4Addr,
    /// How the provider reaches it.
    pub endpoints: NodeEndpoints,
    /// The backend's own name for the machine (a cloud's instance ID; QEMU: the node's
    /// directory name). Empty in records written before backends kept one, which then
    /// fall back to the node name.
    #[serde(default)]
    pub backend_id: String,
    /// The image it booted (the spec's `image`); empty in records written before rolling
    /// upgrades existed, which then count as running the cluster's recorded image.
    #[serde(default)]
    pub image: String,
}

/// Where the cluster's Kubernetes API is reached, as the backend provides it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterEndpoint {
    /// `host:port` in front of every control plane's API server (a cloud load balancer).
    /// None when the backend has none: kubeadm then uses the first control plane's private
    /// address, which stays valid only while that control plane lives.
    pub kubernetes_api: Option<String>,
    /// Further names and addresses the API server certificate must carry (the load
    /// balancer's DNS name and public address).
    #[serde(default)]
    pub api_server_cert_sans: Vec<String>,
}

/// The machine state of a node as the backend sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MachineState {
    /// The machine runs.
    Running,
    /// It exists but does not run (paused).
    Stopped,
    /// It does not run (shut down, crashed, the host rebooted), but its disks (state disk,
    /// TPM state) are kept: [`Cloud::start_node`] boots it again and it rejoins.
    Off,
    /// Nothing of it is left.
    Gone,
}

impl MachineState {
    /// Whether the machine does not run (off or gone): it cannot join or answer.
    pub fn is_down(self) -> bool {
        matches!(self, MachineState::Off | MachineState::Gone)
    }
}

/// What kind of failure a backend error is: it decides what the user is told to do and
/// whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// An account or project limit was reached (instances, cores, addresses).
    Quota,
    /// The provider (region, zone) has no capacity for the machine type right now.
    Capacity,
    /// The credentials may not do what was asked.
    Permission,
    /// The backend cannot do this with this configuration (machine type, region, feature).
    Unsupported,
    /// A passing failure (rate limit, timeout, unavailable service): trying again helps.
    Transient,
    /// Anything else; the error's own text says what to do.
    Other,
}

/// Backend errors. Each says what failed and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloudError {
    /// A call to the backend's API failed.
    #[error("{operation} failed: {detail}")]
    Api {
        /// What kind of failure it is.
        class: ErrorClass,
        /// What was asked, e.g. `creating instance demo-worker-3`.
        operation: String,
        /// The API's answer.
        detail: String,
    },
    /// A program the backend needs is missing.
    #[error("{program} was not found ({detail}); install it (Debian: apt-get install {package})")]
    MissingProgram {
        /// Program name.
        program: &'static str,
        /// Debian package.
        package: &'static str,
        /// Cause.
        detail: String,
    },
    /// A file the backend needs is missing or unusable.
    #[error("{what} {path}: {detail}")]
    File {
        /// What the file is.
        what: &'static str,
        /// Path.
        path: String,
        /// Cause.
        detail: String,
    },
    /// Starting a machine failed.
    #[error("starting node {node} failed: {detail}")]
    Start {
        /// Node name.
        node: String,
        /// Cause, with the tail of the machine's logs.
        detail: String,
    },
    /// Stopping or removing a machine failed.
    #[error("removing node {node} failed: {detail}")]
    Stop {
        /// Node name.
        node: String,
        /// Cause.
        detail: String,
    },
}

impl CloudError {
    /// What kind of failure this is.
    pub fn class(&self) -> ErrorClass {
        match self {
            CloudError::Api { class, .. } => *class,
            // A missing program or firmware is a prerequisite of the machine running
            // Terraform, not of the backend's API.
            CloudError::MissingProgram { .. }
            | CloudError::File { .. }
            | CloudError::Start { .. }
            | CloudError::Stop { .. } => ErrorClass::Other,
        }
    }

    /// Whether the same call may succeed when tried again unchanged.
    pub fn is_transient(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// What the user should do about it, for the error's detail; None when the message
    /// itself says it.
    pub fn remedy(&self) -> Option<&'static str> {
        match self.class() {
            ErrorClass::Quota => Some(
                "A quota of the cloud account is exhausted: raise it in the cloud's console, \
                 or lower `control_plane_count` / `worker_count`, then run `terraform apply` \
                 again.",
            ),
            ErrorClass::Capacity => Some(
                "The cloud has no capacity for this machine type in this location right now: \
                 run `terraform apply` again later, or choose another zone or machine type.",
            ),
            ErrorClass::Permission => Some(
                "The credentials the provider uses lack a permission: grant the one named above \
                 and run `terraform apply` again.",
            ),
            ErrorClass::Unsupported => Some(
                "The backend cannot do this with the given settings: change them (machine \
                 type, location, confidential-computing option).",
            ),
            ErrorClass::Transient => Some(
                "The failure is passing (rate limit, timeout, unavailable service): run \
                 `terraform apply` again.",
            ),
            ErrorClass::Other => None,
        }
    }

    /// The message followed by the remedy (what a diagnostic's detail shows).
    pub fn explained(&self) -> String {
        match self.remedy() {
            Some(r) => format!("{self}\n{r}"),
            None => self.to_string(),
        }
    }
}

/// A place to run cluster nodes.
#[tfplugin::async_trait]
pub trait Cloud: Send + Sync {
    /// Backend name, e.g. `qemu`.
    fn name(&self) -> &'static str;

    /// Checks prerequisites and creates cluster-wide resources (network, directories, load
    /// balancer). Idempotent. Returns where the cluster's Kubernetes API is reached.
    async fn prepare(&self) -> Result<ClusterEndpoint, CloudError>;

    /// Creates and starts one node. On error nothing of the node is left behind.
    async fn create_node(&self, spec: &NodeSpec) -> Result<NodeRecord, CloudError>;

    /// The node's machine state. An error means the state is unknown (the backend could
    /// not be asked): never treat it as [`MachineState::Gone`], never delete on it.
    async fn machine_state(&self, node: &NodeRecord) -> Result<MachineState, CloudError>;

    /// Boots a node that is [`MachineState::Off`] again from its kept disks. Its metadata is
    /// written anew from `spec` (so it names the current control planes); name, role, address
    /// and image are the node's own. Returns the record (endpoints may differ).
    async fn start_node(
        &self,
        node: &NodeRecord,
        spec: &NodeSpec,
    ) -> Result<NodeRecord, CloudError>;

    /// The last `max_bytes` of the node's console log (may be empty).
    async fn console_tail(&self, node: &NodeRecord, max_bytes: usize) -> String;

    /// Stops and removes one node and everything created for it. Idempotent.
    async fn delete_node(&self, node: &NodeRecord) -> Result<(), CloudError>;

    /// Removes the cluster-wide resources and anything left of any node. Idempotent.
    async fn destroy(&self) -> Result<(), CloudError>;
}
