//! Where cluster nodes run. The `constellation_cluster` resource talks to a [`Cloud`]; the
//! local QEMU backend ([`qemu`]) is the first implementation, AWS/Azure/GCP implement the
//! same trait later.
//!
//! A backend only provisions machines and tells the provider how to reach them; everything
//! about trust (attestation, Init, joins) is the resource's business and identical across
//! backends.

pub mod qemu;

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

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
    /// The image it booted (the spec's `image`); empty in records written before rolling
    /// upgrades existed, which then count as running the cluster's recorded image.
    #[serde(default)]
    pub image: String,
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

/// Backend errors. Each says what failed and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloudError {
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

/// A place to run cluster nodes.
#[tfplugin::async_trait]
pub trait Cloud: Send + Sync {
    /// Backend name, e.g. `qemu`.
    fn name(&self) -> &'static str;

    /// Checks prerequisites and creates cluster-wide resources (network, directories).
    /// Idempotent.
    async fn prepare(&self) -> Result<(), CloudError>;

    /// Creates and starts one node. On error nothing of the node is left behind.
    async fn create_node(&self, spec: &NodeSpec) -> Result<NodeRecord, CloudError>;

    /// The node's machine state.
    async fn machine_state(&self, node: &NodeRecord) -> MachineState;

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
