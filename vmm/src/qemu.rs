//! The QEMU command line of a node VM.
//!
//! [`NodeVm::args`] is pure: the same description gives the same arguments, so the shape is
//! tested without starting QEMU. Whoever starts the VM (the provider daemonizes it, the
//! image's harness keeps it as a child) adds only how the process runs.

use std::fs;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;

use constellation_node_api::metadata::{InterfaceAddress, NodeMetadata, format_mac, fw_cfg_name};

use crate::VmmError;

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// Default OVMF firmware (Debian's `ovmf` package).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// Default OVMF variable store template; each VM gets its own copy.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The network of QEMU's user-mode (slirp) NIC.
pub const USER_NET: &str = "10.0.2.0/24";
/// The guest's address on the user-mode NIC (slirp's first lease; the node sets it itself).
pub const USER_NET_GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// The user-mode network's gateway.
pub const USER_NET_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// Prefix length of [`USER_NET`].
pub const USER_NET_PREFIX: u8 = 24;

/// CPU virtualisation QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Software emulation: works everywhere, slow.
    Tcg,
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
}

impl Accel {
    /// Parses `tcg` / `kvm`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tcg" => Some(Self::Tcg),
            "kvm" => Some(Self::Kvm),
            _ => None,
        }
    }

    fn names(self) -> (&'static str, &'static str) {
        match self {
            // `max` gives TCG guests AES-NI and friends, which dm-crypt and WireGuard expect.
            Accel::Tcg => ("tcg", "max"),
            Accel::Kvm => ("kvm", "host"),
        }
    }
}

/// How QEMU caches a writable disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskCache {
    /// QEMU's default (writeback, flushes honoured): a node's state survives a host crash.
    Default,
    /// Flushes ignored: for throw-away disks of tests, where it saves time.
    Unsafe,
}

/// The host NIC: QEMU user networking with `restrict=on` (the guest cannot open connections
/// to the host or beyond) and forwards from 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNic {
    /// The NIC's MAC (the node finds the NIC by it, see [`NodeVm::network`]).
    pub mac: [u8; 6],
    /// `(host port on 127.0.0.1, guest port)` TCP forwards.
    pub forwards: Vec<(u16, u16)>,
}

/// The private NIC: a multicast socket hub on 127.0.0.1, an L2 network between every VM on
/// the same group and port that needs no root (no tap, no bridge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivateNic {
    /// The NIC's MAC.
    pub mac: [u8; 6],
    /// Multicast group (239.255.0.0/16) and UDP port.
    pub hub: SocketAddrV4,
}

/// A node VM: OVMF with its own variable store, a vTPM (swtpm), the node image read-only as
/// the boot disk, a state disk, the host and private NICs and the node's metadata as fw_cfg
/// files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeVm {
    /// VM name.
    pub name: String,
    /// CPU virtualisation.
    pub accel: Accel,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// OVMF code (read-only).
    pub ovmf_code: PathBuf,
    /// This VM's OVMF variable store.
    pub ovmf_vars: PathBuf,
    /// The swtpm control socket ([`crate::swtpm::Swtpm::for_qemu`]).
    pub tpm_socket: PathBuf,
    /// The node image (`disk.raw`), attached read-only.
    pub boot_disk: PathBuf,
    /// The state disk (the guest's `/dev/vdb`).
    pub state_disk: PathBuf,
    /// How the state disk is cached.
    pub state_disk_cache: DiskCache,
    /// The host NIC.
    pub host_nic: HostNic,
    /// The private NIC.
    pub private_nic: PrivateNic,
    /// fw_cfg items: name and the file holding the value ([`write_metadata`]).
    pub fw_cfg: Vec<(String, PathBuf)>,
    /// Where the serial console goes (appended: a restarted VM's console follows its
    /// earlier boots).
    pub serial_log: PathBuf,
    /// QMP socket, if QEMU is to be controlled.
    pub qmp_socket: Option<PathBuf>,
    /// `Some(pid file)`: QEMU daemonizes (it then outlives its parent) and writes its pid.
    pub pid_file: Option<PathBuf>,
}

/// An argument list that refuses values which would break QEMU's comma-separated options.
#[derive(Debug, Default)]
struct Args(Vec<String>);

impl Args {
    fn raw(&mut self, args: &[&str]) -> &mut Self {
        self.0.extend(args.iter().map(|s| (*s).to_owned()));
        self
    }

    fn opt(&mut self, flag: &str, value: String) -> &mut Self {
        self.0.push(flag.to_owned());
        self.0.push(value);
        self
    }
}

/// `value` for use inside a comma-separated QEMU option.
fn plain(what: &'static str, value: &str) -> Result<String, VmmError> {
    if value.contains(',') {
        return Err(VmmError::Argument {
            what,
            value: value.to_owned(),
            reason: "commas separate QEMU's option fields; use a path without commas",
        });
    }
    Ok(value.to_owned())
}

fn path(what: &'static str, p: &Path) -> Result<String, VmmError> {
    plain(what, &p.display().to_string())
}

/// `-machine`, `-cpu`, `-m` and `-smp`.
pub fn machine_args(accel: Accel, memory_mib: u32, vcpus: u32) -> Vec<String> {
    let (accel, cpu) = accel.names();
    let mut a = Args::default();
    a.opt("-machine", format!("q35,accel={accel}"))
        .opt("-cpu", cpu.to_owned())
        .opt("-m", memory_mib.to_string())
        .opt("-smp", vcpus.to_string());
    a.0
}

/// OVMF: the code read-only, the VM's own variable store writable.
pub fn uefi_args(code: &Path, vars: &Path) -> Result<Vec<String>, VmmError> {
    let mut a = Args::default();
    a.opt(
        "-drive",
        format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            path("OVMF code", code)?
        ),
    )
    .opt(
        "-drive",
        format!(
            "if=pflash,format=raw,unit=1,file={}",
            path("OVMF variables", vars)?
        ),
    );
    Ok(a.0)
}

/// A TPM 2.0 (CRB interface) backed by the swtpm listening on `socket`.
pub fn tpm_args(socket: &Path) -> Result<Vec<String>, VmmError> {
    let mut a = Args::default();
    a.opt(
        "-chardev",
        format!("socket,id=chrtpm,path={}", path("swtpm socket", socket)?),
    )
    .raw(&["-tpmdev", "emulator,id=tpm0,chardev=chrtpm"])
    .raw(&["-device", "tpm-crb,tpmdev=tpm0"]);
    Ok(a.0)
}

/// The serial console into a file.
pub fn serial_args(log: &Path, append: bool) -> Result<Vec<String>, VmmError> {
    let append = if append { ",append=on" } else { "" };
    let mut a = Args::default();
    a.opt(
        "-chardev",
        format!("file,id=ser0,path={}{append}", path("serial log", log)?),
    )
    .raw(&["-serial", "chardev:ser0"]);
    Ok(a.0)
}

impl NodeVm {
    /// QEMU's arguments (without the program name).
    pub fn args(&self) -> Result<Vec<String>, VmmError> {
        let mut a = Args::default();
        a.opt("-name", plain("VM name", &self.name)?).raw(&[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
        ]);
        a.0.extend(machine_args(self.accel, self.memory_mib, self.vcpus));
        a.0.extend(uefi_args(&self.ovmf_code, &self.ovmf_vars)?);
        a.0.extend(tpm_args(&self.tpm_socket)?);
        a.raw(&["-device", "virtio-rng-pci"])
            .opt(
                "-drive",
                format!(
                    "if=none,id=boot,format=raw,readonly=on,file={}",
                    path("boot disk", &self.boot_disk)?
                ),
            )
            .raw(&["-device", "virtio-blk-pci,drive=boot,bootindex=0"]);
        let cache = match self.state_disk_cache {
            DiskCache::Default => "",
            DiskCache::Unsafe => "cache=unsafe,",
        };
        a.opt(
            "-drive",
            format!(
                "if=none,id=state,format=raw,{cache}file={}",
                path("state disk", &self.state_disk)?
            ),
        )
        .raw(&["-device", "virtio-blk-pci,drive=state,serial=state"]);
        let mut user = format!("user,id=host,net={USER_NET},restrict=on");
        for (host, guest) in &self.host_nic.forwards {
            user.push_str(&format!(
                ",hostfwd=tcp:127.0.0.1:{host}-{USER_NET_GUEST_IP}:{guest}"
            ));
        }
        // romfile=: no iPXE option ROM (it only slows OVMF down; a node never net-boots).
        a.opt("-netdev", user).opt(
            "-device",
            format!(
                "virtio-net-pci,netdev=host,mac={},romfile=",
                format_mac(&self.host_nic.mac)
            ),
        );
        a.opt(
            "-netdev",
            format!(
                "socket,id=priv,mcast={},localaddr=127.0.0.1",
                self.private_nic.hub
            ),
        )
        .opt(
            "-device",
            format!(
                "virtio-net-pci,netdev=priv,mac={},romfile=",
                format_mac(&self.private_nic.mac)
            ),
        );
        for (name, file) in &self.fw_cfg {
            a.opt(
                "-fw_cfg",
                format!(
                    "name={},file={}",
                    plain("fw_cfg name", name)?,
                    path("fw_cfg file", file)?
                ),
            );
        }
        a.0.extend(serial_args(&self.serial_log, true)?);
        if let Some(qmp) = &self.qmp_socket {
            a.opt(
                "-qmp",
                format!("unix:{},server=on,wait=off", path("QMP socket", qmp)?),
            );
        }
        if let Some(pid) = &self.pid_file {
            a.raw(&["-daemonize"])
                .opt("-pidfile", pid.display().to_string());
        }
        Ok(a.0)
    }

    /// `qemu-system-x86_64` with [`Self::args`]; the caller sets stdio and how it runs.
    pub fn command(&self) -> Result<Command, VmmError> {
        let mut cmd = Command::new(QEMU);
        cmd.args(self.args()?);
        Ok(cmd)
    }
}

/// The MACs of a node VM's host and private NIC, derived from its private address (unique
/// in a cluster): `52:54:00:c0:<ip[2]>:<ip[3]>` and `52:54:00:c1:…`.
pub fn node_macs(private_ip: Ipv4Addr) -> ([u8; 6], [u8; 6]) {
    let o = private_ip.octets();
    (
        [0x52, 0x54, 0x00, 0xc0, o[2], o[3]],
        [0x52, 0x54, 0x00, 0xc1, o[2], o[3]],
    )
}

impl HostNic {
    /// The host NIC of the node VM with this private address.
    pub fn for_node(private_ip: Ipv4Addr, forwards: Vec<(u16, u16)>) -> Self {
        Self {
            mac: node_macs(private_ip).0,
            forwards,
        }
    }
}

impl PrivateNic {
    /// The private NIC of the node VM with this private address.
    pub fn for_node(private_ip: Ipv4Addr, hub: SocketAddrV4) -> Self {
        Self {
            mac: node_macs(private_ip).1,
            hub,
        }
    }
}

/// The `network` metadata of the node VM with this private address: the host NIC on the
/// user network (default route through it) and the private NIC with `private_ip/prefix`.
pub fn network(private_ip: Ipv4Addr, prefix: u8) -> Vec<InterfaceAddress> {
    let (host_mac, private_mac) = node_macs(private_ip);
    vec![
        InterfaceAddress {
            mac: host_mac,
            address: USER_NET_GUEST_IP.into(),
            prefix: USER_NET_PREFIX,
            gateway: Some(USER_NET_GATEWAY.into()),
        },
        InterfaceAddress {
            mac: private_mac,
            address: private_ip.into(),
            prefix,
            gateway: None,
        },
    ]
}

/// Writes the node's metadata as one file per key into `dir` (created if needed) and returns
/// the fw_cfg items for [`NodeVm::fw_cfg`]. Files rather than `string=` values, because
/// values contain commas (join endpoints, argon2 parameters).
pub fn write_metadata(
    dir: &Path,
    metadata: &NodeMetadata,
) -> Result<Vec<(String, PathBuf)>, VmmError> {
    let io = |op: &'static str, p: &Path| {
        let path = p.to_path_buf();
        move |source| VmmError::Io { op, path, source }
    };
    fs::create_dir_all(dir).map_err(io("create metadata directory", dir))?;
    let mut out = Vec::new();
    for (key, value) in metadata.encode() {
        let file = dir.join(key);
        fs::write(&file, value).map_err(io("write metadata file", &file))?;
        out.push((fw_cfg_name(key), file));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use constellation_node_api::metadata::{Role, format_network};

    fn vm() -> NodeVm {
        let d = Path::new("/w/nodes/cp-0");
        let ip = Ipv4Addr::new(10, 42, 0, 2);
        NodeVm {
            name: "cp-0".into(),
            accel: Accel::Tcg,
            memory_mib: 2048,
            vcpus: 2,
            ovmf_code: OVMF_CODE.into(),
            ovmf_vars: d.join("OVMF_VARS.fd"),
            tpm_socket: d.join("swtpm.sock"),
            boot_disk: "/images/disk.raw".into(),
            state_disk: d.join("state.raw"),
            state_disk_cache: DiskCache::Default,
            host_nic: HostNic::for_node(ip, vec![(40001, 9000), (40002, 30080)]),
            private_nic: PrivateNic::for_node(ip, "239.255.1.2:42000".parse().unwrap()),
            fw_cfg: vec![("opt/constellation/role".into(), d.join("meta/role"))],
            serial_log: d.join("serial.log"),
            qmp_socket: Some(d.join("qmp.sock")),
            pid_file: Some(d.join("qemu.pid")),
        }
    }

    #[test]
    fn the_node_vm_command_line() {
        let args = vm().args().unwrap().join(" ");
        assert_eq!(
            args,
            "-name cp-0 -nodefaults -no-user-config -display none \
             -machine q35,accel=tcg -cpu max -m 2048 -smp 2 \
             -drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
             -drive if=pflash,format=raw,unit=1,file=/w/nodes/cp-0/OVMF_VARS.fd \
             -chardev socket,id=chrtpm,path=/w/nodes/cp-0/swtpm.sock \
             -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-crb,tpmdev=tpm0 \
             -device virtio-rng-pci \
             -drive if=none,id=boot,format=raw,readonly=on,file=/images/disk.raw \
             -device virtio-blk-pci,drive=boot,bootindex=0 \
             -drive if=none,id=state,format=raw,file=/w/nodes/cp-0/state.raw \
             -device virtio-blk-pci,drive=state,serial=state \
             -netdev user,id=host,net=10.0.2.0/24,restrict=on,\
             hostfwd=tcp:127.0.0.1:40001-10.0.2.15:9000,hostfwd=tcp:127.0.0.1:40002-10.0.2.15:30080 \
             -device virtio-net-pci,netdev=host,mac=52:54:00:c0:00:02,romfile= \
             -netdev socket,id=priv,mcast=239.255.1.2:42000,localaddr=127.0.0.1 \
             -device virtio-net-pci,netdev=priv,mac=52:54:00:c1:00:02,romfile= \
             -fw_cfg name=opt/constellation/role,file=/w/nodes/cp-0/meta/role \
             -chardev file,id=ser0,path=/w/nodes/cp-0/serial.log,append=on -serial chardev:ser0 \
             -qmp unix:/w/nodes/cp-0/qmp.sock,server=on,wait=off \
             -daemonize -pidfile /w/nodes/cp-0/qemu.pid"
        );
    }

    #[test]
    fn options_change_only_their_part() {
        let mut v = vm();
        v.accel = Accel::Kvm;
        v.state_disk_cache = DiskCache::Unsafe;
        v.qmp_socket = None;
        v.pid_file = None;
        let args = v.args().unwrap().join(" ");
        assert!(args.contains("-machine q35,accel=kvm -cpu host"));
        assert!(args.contains("if=none,id=state,format=raw,cache=unsafe,file="));
        assert!(!args.contains("-qmp") && !args.contains("-daemonize"));
    }

    #[test]
    fn commas_in_paths_are_refused() {
        let mut v = vm();
        v.state_disk = "/a,b/state.raw".into();
        let err = v.args().unwrap_err().to_string();
        assert!(
            err.contains("state disk") && err.contains("commas"),
            "{err}"
        );
        let mut v = vm();
        v.fw_cfg.push(("opt/x,y".into(), "/f".into()));
        assert!(v.args().is_err());
    }

    #[test]
    fn metadata_files_and_network() {
        let d = tempfile::tempdir().unwrap();
        let v = vm();
        let m = NodeMetadata {
            role: Role::ControlPlane,
            name: "cp-0".into(),
            private_ip: "10.42.0.2".parse().unwrap(),
            join_endpoints: vec![],
            init_secret_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$abc$def".into()),
            image_version: Some("v1".into()),
            network: network(Ipv4Addr::new(10, 42, 0, 2), 24),
        };
        assert_eq!(
            format_network(&m.network),
            "52:54:00:c0:00:02 10.0.2.15/24 via 10.0.2.2\n52:54:00:c1:00:02 10.42.0.2/24\n"
        );
        let items = write_metadata(&d.path().join("meta"), &m).unwrap();
        let names: Vec<_> = items.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"opt/constellation/init-secret-hash"));
        assert!(!names.contains(&"opt/constellation/join-endpoints"));
        let hash = fs::read_to_string(d.path().join("meta/init-secret-hash")).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        // The comma in the hash is in the file, not on the command line.
        let mut v = v;
        v.fw_cfg = items;
        v.args().unwrap();
    }
}
