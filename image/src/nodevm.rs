//! Booting the node image the way the provider's QEMU backend does: OVMF + swtpm, the image as
//! the first (snapshot) disk, a blank state disk as `/dev/vdb`, a "host" NIC on QEMU user
//! networking with port forwards and a "private" NIC on a multicast hub, and the agent's
//! metadata as fw_cfg items `opt/constellation/<key>` including `network`.
//!
//! `constellation-image run` and the image tests use this; the provider builds the same
//! command line itself.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::vm::{Guest, GuestBuilder, VmError};

/// Guest ports of the agent's servers that the host NIC forwards (init, management,
/// verification HTTP and gRPC, recovery; see node/api `ports`).
pub const FORWARDED_GUEST_PORTS: [(&str, u16); 5] = [
    ("init", 9000),
    ("management", 9100),
    ("verify-http", 30080),
    ("verify-grpc", 30081),
    ("recovery", 9999),
];

/// The host NIC's address in QEMU user networking and its gateway.
pub const HOST_NIC_IP: &str = "10.0.2.15";
/// The user network's gateway.
pub const HOST_NIC_GATEWAY: &str = "10.0.2.2";

/// How to boot one node.
#[derive(Debug, Clone)]
pub struct NodeVmOptions {
    /// The node image (disk.raw).
    pub disk: PathBuf,
    /// The blank (or reused) state disk; created sparse with `state_disk_mib` if absent.
    pub state_disk: PathBuf,
    /// State disk size when it is created.
    pub state_disk_mib: u64,
    /// `control-plane` or `worker`.
    pub role: String,
    /// Node name.
    pub name: String,
    /// Address on the private network.
    pub private_ip: String,
    /// Prefix length of the private network.
    pub private_prefix: u8,
    /// Multicast group and port of the private network (`239.255.x.y:port`).
    pub private_group: String,
    /// MAC of the host NIC.
    pub host_mac: String,
    /// MAC of the private NIC.
    pub private_mac: String,
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
            role: "control-plane".into(),
            name: "cp-0".into(),
            private_ip: "10.42.0.11".into(),
            private_prefix: 24,
            private_group: "239.255.42.1:42042".into(),
            host_mac: "52:54:00:c0:00:01".into(),
            private_mac: "52:54:00:c1:00:01".into(),
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

    /// The `network` metadata value for the two NICs.
    pub fn network_value(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} {HOST_NIC_IP}/24 via {HOST_NIC_GATEWAY}",
            self.host_mac
        );
        let _ = writeln!(
            s,
            "{} {}/{}",
            self.private_mac, self.private_ip, self.private_prefix
        );
        s
    }

    /// The fw_cfg items (name, value).
    pub fn fw_cfg(&self) -> Vec<(String, String)> {
        let k = |key: &str| format!("opt/constellation/{key}");
        let mut v = vec![
            (k("role"), self.role.clone()),
            (k("name"), self.name.clone()),
            (k("private-ip"), self.private_ip.clone()),
            (k("network"), self.network_value()),
        ];
        v.extend(self.extra_fw_cfg.iter().cloned());
        v
    }

    /// A guest builder with all of the above (add `.serial_log(...)` etc. as needed).
    pub fn builder(&self) -> Result<GuestBuilder, VmError> {
        crate::vm::create_raw_disk(&self.state_disk, self.state_disk_mib)?;
        let mut b = Guest::builder()
            .name(&self.name)
            .uefi_disk(&self.disk)
            .disk(&self.state_disk)
            .tpm()
            .memory_mib(self.memory_mib)
            .cpus(self.cpus)
            .timeout(self.timeout)
            .nic_user(&self.host_mac, HOST_NIC_IP, &self.forwards)
            .nic_mcast(&self.private_mac, &self.private_group);
        for (name, value) in self.fw_cfg() {
            b = b.fw_cfg(&name, &value);
        }
        Ok(b)
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
    fn network_value_matches_the_contract() {
        let o = NodeVmOptions::control_plane("d", "s");
        assert_eq!(
            o.network_value(),
            "52:54:00:c0:00:01 10.0.2.15/24 via 10.0.2.2\n52:54:00:c1:00:01 10.42.0.11/24\n"
        );
        assert!(
            o.fw_cfg()
                .iter()
                .any(|(k, _)| k == "opt/constellation/network")
        );
    }
}
