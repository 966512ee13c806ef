//! Booting the node image the way the provider's QEMU backend does: OVMF + swtpm, the image as
//! the first (read-only) disk, a blank state disk as `/dev/vdb`, a "host" NIC on QEMU user
//! networking with port forwards and a "private" NIC on a multicast hub, and the agent's
//! metadata as fw_cfg items `opt/constellation/<key>` including `network`.
//!
//! `constellation-image run` and the image tests use this. The command line is the provider's
//! own ([`constellation_vmm::qemu::NodeVm`]) and so is the metadata
//! ([`constellation_node_api::metadata`]).

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use constellation_node_api::metadata::{NodeMetadata, Role, fw_cfg_name};
use constellation_node_api::ports;
use constellation_vmm::qemu::{self, HostNic, PrivateNic};

use crate::vm::{Guest, GuestBuilder, NodeGuest, VmError};

/// Guest ports of the agent's servers that the host NIC forwards.
pub const FORWARDED_GUEST_PORTS: [(&str, u16); 5] = [
    ("init", ports::INIT),
    ("management", ports::MANAGEMENT),
    ("verify-http", ports::VERIFY_HTTP),
    ("verify-grpc", ports::VERIFY_GRPC),
    ("recovery", ports::RECOVERY),
];

/// How to boot one node.
#[derive(Debug, Clone)]
pub struct NodeVmOptions {
    /// The node image (disk.raw).
    pub disk: PathBuf,
    /// The blank (or reused) state disk; created sparse with `state_disk_mib` if absent.
    pub state_disk: PathBuf,
    /// State disk size when it is created.
    pub state_disk_mib: u64,
    /// Role.
    pub role: Role,
    /// Node name.
    pub name: String,
    /// Address on the private network (the NICs' MACs derive from it).
    pub private_ip: Ipv4Addr,
    /// Prefix length of the private network.
    pub private_prefix: u8,
    /// Multicast group and port of the private network (`239.255.x.y:port`).
    pub private_group: String,
    /// `(host port, guest port)` forwards on 127.0.0.1.
    pub forwards: Vec<(u16, u16)>,
    /// Further fw_cfg items (`opt/constellation/<key>`, value), e.g. join-endpoints.
    pub extra_fw_cfg: Vec<(String, String)>,
    /// Guest RAM.
    pub memory_mib: u32,
    /// vCPUs.
    pub cpus: u32,
    /// Kill the guest after this long.
    pub timeout: Duration,
}

impl NodeVmOptions {
    /// A control plane waiting for Init: the provider's defaults (2 GiB, 2 vCPUs), private
    /// address 10.42.0.11/24, and every agent port forwarded from a free host port.
    pub fn control_plane(disk: impl Into<PathBuf>, state_disk: impl Into<PathBuf>) -> Self {
        Self {
            disk: disk.into(),
            state_disk: state_disk.into(),
            state_disk_mib: 256,
            role: Role::ControlPlane,
            name: "cp-0".into(),
            private_ip: Ipv4Addr::new(10, 42, 0, 11),
            private_prefix: 24,
            private_group: "239.255.42.1:42042".into(),
            forwards: Vec::new(),
            extra_fw_cfg: Vec::new(),
            memory_mib: 2048,
            cpus: 2,
            timeout: Duration::from_secs(3600),
        }
    }

    /// Forwards every port of [`FORWARDED_GUEST_PORTS`] from a free 127.0.0.1 port; returns
    /// `(name, host port, guest port)`.
    pub fn forward_free_ports(&mut self) -> Result<Vec<(&'static str, u16, u16)>, VmError> {
        let mut out = Vec::new();
        for (name, guest) in FORWARDED_GUEST_PORTS {
            let host = free_tcp_port()?;
            self.forwards.push((host, guest));
            out.push((name, host, guest));
        }
        Ok(out)
    }

    /// The node's metadata, as the provider writes it (the `network` key names both NICs).
    pub fn metadata(&self) -> NodeMetadata {
        NodeMetadata {
            role: self.role,
            name: self.name.clone(),
            private_ip: self.private_ip.into(),
            join_endpoints: Vec::new(),
            init_secret_hash: None,
            image_version: None,
            network: qemu::network(self.private_ip, self.private_prefix),
        }
    }

    /// The fw_cfg items (name, value): the metadata, then [`Self::extra_fw_cfg`].
    pub fn fw_cfg(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .metadata()
            .encode()
            .into_iter()
            .map(|(key, value)| (fw_cfg_name(key), value))
            .collect();
        v.extend(self.extra_fw_cfg.iter().cloned());
        v
    }

    /// A guest builder with all of the above (add `.serial_log(...)` etc. as needed).
    pub fn builder(&self) -> Result<GuestBuilder, VmError> {
        let hub: SocketAddrV4 = self.private_group.parse().map_err(|e| {
            VmError::Config(format!(
                "private group {:?}: {e}; expected 239.255.x.y:port",
                self.private_group
            ))
        })?;
        crate::vm::create_raw_disk(&self.state_disk, self.state_disk_mib)?;
        Ok(Guest::builder()
            .name(&self.name)
            .memory_mib(self.memory_mib)
            .cpus(self.cpus)
            .timeout(self.timeout)
            .node(NodeGuest {
                boot_disk: self.disk.clone(),
                state_disk: self.state_disk.clone(),
                host_nic: HostNic::for_node(self.private_ip, self.forwards.clone()),
                private_nic: PrivateNic::for_node(self.private_ip, hub),
                fw_cfg: self.fw_cfg(),
            }))
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> Result<u16, VmError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|source| VmError::Io {
        op: "bind",
        path: Path::new("127.0.0.1:0").to_path_buf(),
        source,
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| VmError::Io {
            op: "local_addr",
            path: Path::new("127.0.0.1").to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_matches_the_contract() {
        let o = NodeVmOptions::control_plane("d", "s");
        let items = o.fw_cfg();
        let network = items
            .iter()
            .find(|(k, _)| k == "opt/constellation/network")
            .map(|(_, v)| v.as_str());
        assert_eq!(
            network,
            Some("52:54:00:c0:00:0b 10.0.2.15/24 via 10.0.2.2\n52:54:00:c1:00:0b 10.42.0.11/24\n")
        );
        assert!(items.contains(&("opt/constellation/role".into(), "control-plane".into())));
    }
}
