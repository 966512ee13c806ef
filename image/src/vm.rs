//! QEMU guest test harness: boot a test program inside a throw-away VM with the pinned Debian
//! kernel, optional virtio disks, a private network between guests and a vTPM, and collect its
//! exit code and serial console.
//!
//! Two boot modes:
//! - direct kernel boot (the default): the harness builds an initramfs with busybox (harness
//!   only; the product image has no shell), the default kernel modules, the given program and
//!   its shared libraries, and an `/init` that mounts `/proc /sys /dev /sys/kernel/security`,
//!   loads the modules, optionally configures network addresses, runs the program, prints
//!   `CONSTELLATION-GUEST-EXIT=<code>` and powers off;
//! - UEFI boot ([`GuestBuilder::uefi_disk`]): OVMF boots a disk image (the node image).
//!
//! Every process and file a guest starts is removed when the [`RunningGuest`] is dropped.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use constellation_vmm::VmmError;
use constellation_vmm::qemu::{self, Accel, DiskCache, HostNic, NodeVm, PrivateNic, QEMU};
use constellation_vmm::swtpm::{self, Swtpm};

use crate::cpio::Archive;
use crate::debian::{Cache, Lock};
use crate::initramfs::{self, InitramfsError};
use crate::kernel::{DEFAULT_MODULES, Kernel, KernelError};

/// The line the harness init prints when the program ends.
pub const EXIT_MARKER: &str = "CONSTELLATION-GUEST-EXIT=";

/// OVMF firmware code (read-only) and the variable store template (each guest gets its own
/// copy), from Debian's `ovmf` package.
pub use constellation_vmm::qemu::{OVMF_CODE, OVMF_VARS};

/// Errors from preparing, booting or waiting for a guest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmError {
    /// The pinned kernel could not be provided.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The initramfs could not be assembled.
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    /// A required program is missing.
    #[error("{program} not found on PATH: {source}; run scripts/install-deps.sh")]
    MissingProgram {
        /// The program.
        program: String,
        /// The spawn error.
        source: std::io::Error,
    },
    /// The guest did not finish in time (it was killed).
    #[error("guest {name} did not power off within {timeout:?}; last serial output:\n{tail}")]
    Timeout {
        /// The guest's name.
        name: String,
        /// The limit.
        timeout: Duration,
        /// The end of the serial log.
        tail: String,
    },
    /// swtpm did not come up.
    #[error("swtpm for guest {name} did not create its socket: {detail}")]
    Swtpm {
        /// The guest's name.
        name: String,
        /// Its stderr.
        detail: String,
    },
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Invalid builder input.
    #[error("invalid guest configuration: {0}")]
    Config(String),
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VmError {
    let path = path.to_path_buf();
    move |source| VmError::Io { op, path, source }
}

/// The pinned kernel, its default modules and busybox, resolved once per process.
#[derive(Debug)]
pub struct HarnessBase {
    /// The kernel.
    pub kernel: Kernel,
    /// The base archive: busybox, modules, directories.
    base: Archive,
}

static BASE: OnceLock<Result<HarnessBase, String>> = OnceLock::new();

impl HarnessBase {
    /// Fetches (or takes from the shared cache) the pinned kernel and busybox and prepares the
    /// base initramfs. Cached for the life of the process.
    pub fn get() -> Result<&'static HarnessBase, VmError> {
        BASE.get_or_init(|| Self::build().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| VmError::Config(format!("preparing the harness kernel: {e}")))
    }

    fn build() -> Result<Self, VmError> {
        let cache = Cache::from_env();
        let lock = Lock::default_lock();
        let kernel = Kernel::pinned(&cache, &lock)?;
        let modules = kernel.resolve(DEFAULT_MODULES)?;
        let bb_pin = lock.get("busybox-static").map_err(KernelError::from)?;
        let bb_root = cache.extracted(bb_pin).map_err(KernelError::from)?;
        let bb = bb_root.join("bin/busybox");
        let mut base = Archive::new();
        for d in [
            "dev", "proc", "sys", "tmp", "run", "mnt", "etc", "root", "var",
        ] {
            base.dir(d);
        }
        base.file("bin/busybox", fs::read(&bb).map_err(io("read", &bb))?, true);
        base.symlink("bin/sh", "busybox");
        initramfs::add_modules(&mut base, &kernel.release, &modules)?;
        Ok(Self { kernel, base })
    }
}

/// One end of a private point-to-point network between two guests (QEMU `dgram` netdev on
/// 127.0.0.1 UDP; no root needed).
#[derive(Debug, Clone)]
pub struct NetEndpoint {
    local_port: u16,
    remote_port: u16,
    mac: String,
}

/// Private networks between guests.
#[derive(Debug)]
pub struct Network;

fn free_udp_port() -> Result<u16, VmError> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(io("bind UDP", Path::new("127.0.0.1:0")))?;
    let port = s
        .local_addr()
        .map_err(io("local_addr", Path::new("127.0.0.1")))?
        .port();
    Ok(port)
}

impl Network {
    /// A private link between two guests: give one endpoint to each. The MAC addresses are
    /// `52:54:00:12:34:01` and `…:02`.
    pub fn pair() -> Result<(NetEndpoint, NetEndpoint), VmError> {
        let a = free_udp_port()?;
        let mut b = free_udp_port()?;
        while b == a {
            b = free_udp_port()?;
        }
        Ok((
            NetEndpoint {
                local_port: a,
                remote_port: b,
                mac: "52:54:00:12:34:01".into(),
            },
            NetEndpoint {
                local_port: b,
                remote_port: a,
                mac: "52:54:00:12:34:02".into(),
            },
        ))
    }
}

#[derive(Debug, Clone)]
struct NetCfg {
    endpoint: NetEndpoint,
    address: Option<String>,
    pcap: Option<PathBuf>,
}

#[derive(Debug, Clone)]
enum Program {
    None,
    Binary { host: PathBuf, args: Vec<String> },
    Shell(String),
}

/// Configures and boots a guest. Obtain with [`Guest::builder`].
#[derive(Debug, Clone)]
pub struct GuestBuilder {
    name: String,
    program: Program,
    env: Vec<(String, String)>,
    files: Vec<(String, Vec<u8>, bool)>,
    executables: Vec<(PathBuf, String)>,
    disks: Vec<PathBuf>,
    nets: Vec<NetCfg>,
    tpm: bool,
    tpm_state: Option<PathBuf>,
    memory_mib: u32,
    cpus: u32,
    timeout: Duration,
    cmdline_extra: String,
    uefi_disk: Option<PathBuf>,
    ovmf_vars: Option<PathBuf>,
    serial_log: Option<PathBuf>,
    user_net_forwards: Vec<(u16, u16)>,
    extra_modules: Vec<String>,
    fw_cfg: Vec<(String, String)>,
    node: Option<NodeGuest>,
    extra_qemu_args: Vec<String>,
}

/// The node image booted as the provider boots it ([`GuestBuilder::node`]): what differs per
/// node. The harness adds the rest in the guest's temporary directory (firmware variables,
/// TPM, metadata files, serial log).
#[derive(Debug, Clone)]
pub struct NodeGuest {
    /// The node image (`disk.raw`), attached read-only.
    pub boot_disk: PathBuf,
    /// The state disk (must exist, see [`create_raw_disk`]).
    pub state_disk: PathBuf,
    /// The host NIC and its forwards from 127.0.0.1.
    pub host_nic: HostNic,
    /// The private NIC on a multicast hub.
    pub private_nic: PrivateNic,
    /// fw_cfg items (name, value), e.g. the node's metadata; passed as files, so values
    /// may contain commas.
    pub fw_cfg: Vec<(String, String)>,
}

/// Entry point of the harness.
#[derive(Debug)]
pub struct Guest;

impl Guest {
    /// A builder with defaults: 512 MiB, 1 vCPU, 300 s timeout, no disks, no network, no TPM.
    pub fn builder() -> GuestBuilder {
        GuestBuilder {
            name: "guest".into(),
            program: Program::None,
            env: Vec::new(),
            files: Vec::new(),
            executables: Vec::new(),
            disks: Vec::new(),
            nets: Vec::new(),
            tpm: false,
            tpm_state: None,
            memory_mib: 512,
            cpus: 1,
            timeout: Duration::from_secs(300),
            cmdline_extra: String::new(),
            uefi_disk: None,
            ovmf_vars: None,
            serial_log: None,
            user_net_forwards: Vec::new(),
            extra_modules: Vec::new(),
            fw_cfg: Vec::new(),
            node: None,
            extra_qemu_args: Vec::new(),
        }
    }
}

/// What a finished guest left behind.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    /// The program's exit code from the `CONSTELLATION-GUEST-EXIT=` line; `None` if the guest
    /// powered off without printing it (crash, panic, UEFI image that does not print it).
    pub exit_code: Option<i32>,
    /// Everything the guest wrote to its serial console.
    pub serial_log: String,
    /// QEMU's own stderr.
    pub qemu_stderr: String,
    /// Wall time from spawn to power-off.
    pub elapsed: Duration,
}

impl GuestOutput {
    /// Whether the program exited with 0.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl GuestBuilder {
    /// A name used in error messages and the pcap/serial file names.
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }

    /// Runs a host executable (with its shared libraries) as the guest's program. A common
    /// pattern: `std::env::current_exe()` with `["--exact", "guest_side_test", "--ignored"]`.
    pub fn binary(mut self, host: impl AsRef<Path>, args: &[&str]) -> Self {
        self.program = Program::Binary {
            host: host.as_ref().to_path_buf(),
            args: args.iter().map(|s| (*s).to_owned()).collect(),
        };
        self
    }

    /// Loads these kernel modules (and their dependencies) after the default set
    /// ([`crate::kernel::DEFAULT_MODULES`]).
    pub fn modules(mut self, names: &[&str]) -> Self {
        self.extra_modules
            .extend(names.iter().map(|s| (*s).to_owned()));
        self
    }

    /// Runs a busybox shell script as the guest's program (harness convenience).
    pub fn shell(mut self, script: &str) -> Self {
        self.program = Program::Shell(script.to_owned());
        self
    }

    /// Sets an environment variable for the program.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Adds a file to the guest's root file system.
    pub fn file(mut self, guest_path: &str, data: Vec<u8>, executable: bool) -> Self {
        self.files.push((guest_path.to_owned(), data, executable));
        self
    }

    /// Adds another host executable (with its shared libraries) at `guest_path`.
    pub fn executable(mut self, host: impl AsRef<Path>, guest_path: &str) -> Self {
        self.executables
            .push((host.as_ref().to_path_buf(), guest_path.to_owned()));
        self
    }

    /// Attaches a raw disk image as the next virtio disk (`/dev/vda`, `/dev/vdb`, …). The file
    /// must exist (see [`create_raw_disk`]); it persists, so booting twice with the same disk is
    /// a reboot.
    pub fn disk(mut self, path: impl AsRef<Path>) -> Self {
        self.disks.push(path.as_ref().to_path_buf());
        self
    }

    /// Attaches a virtio NIC on a private link (`eth0`, `eth1`, … in call order). `address`
    /// (e.g. `10.0.0.1/24`) is configured by the harness init when given.
    pub fn net(mut self, endpoint: NetEndpoint, address: Option<&str>) -> Self {
        self.nets.push(NetCfg {
            endpoint,
            address: address.map(str::to_owned),
            pcap: None,
        });
        self
    }

    /// Like [`Self::net`] and writes every frame of that NIC to a pcap file on the host.
    pub fn net_with_pcap(
        mut self,
        endpoint: NetEndpoint,
        address: Option<&str>,
        pcap: impl AsRef<Path>,
    ) -> Self {
        self.nets.push(NetCfg {
            endpoint,
            address: address.map(str::to_owned),
            pcap: Some(pcap.as_ref().to_path_buf()),
        });
        self
    }

    /// QEMU user-mode networking with host port forwards `(host_port, guest_port)` on
    /// 127.0.0.1 (an extra NIC after the private ones; the guest gets 10.0.2.15 by DHCP only if
    /// it asks, so the harness init configures it statically when this is set).
    pub fn host_forwards(mut self, forwards: &[(u16, u16)]) -> Self {
        self.user_net_forwards = forwards.to_vec();
        self
    }

    /// Boots the node image as a node VM: the provider's QEMU command line
    /// ([`constellation_vmm::qemu::NodeVm`]) with a vTPM, kept as a child of this process.
    /// Program, files, disks, networks and cmdline settings of the harness are then ignored.
    pub fn node(mut self, node: NodeGuest) -> Self {
        self.tpm = true;
        self.node = Some(node);
        self
    }

    /// Passes a QEMU fw_cfg string item (e.g. `opt/constellation/role`), readable in the guest at
    /// `/sys/firmware/qemu_fw_cfg/by_name/<name>/raw` (module `qemu_fw_cfg`, loaded by default).
    pub fn fw_cfg(mut self, name: &str, value: &str) -> Self {
        self.fw_cfg.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds a swtpm vTPM (`tpm-crb`). State is fresh unless [`Self::tpm_state`] is set.
    pub fn tpm(mut self) -> Self {
        self.tpm = true;
        self
    }

    /// Keeps the vTPM state in this directory (so it survives a reboot); implies [`Self::tpm`].
    pub fn tpm_state(mut self, dir: impl AsRef<Path>) -> Self {
        self.tpm = true;
        self.tpm_state = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Guest RAM in MiB.
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Further QEMU arguments appended to the command line (boot-time experiments, e.g.
    /// `-machine smm=off`; later options override earlier ones).
    pub fn qemu_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_qemu_args
            .extend(args.into_iter().map(Into::into));
        self
    }

    /// Number of vCPUs.
    pub fn cpus(mut self, n: u32) -> Self {
        self.cpus = n;
        self
    }

    /// Kills the guest and fails after this long.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Extra kernel command-line arguments (direct boot only).
    pub fn cmdline(mut self, extra: &str) -> Self {
        self.cmdline_extra = extra.to_owned();
        self
    }

    /// Boots this disk image with OVMF instead of a direct kernel boot (the program, files and
    /// cmdline settings are then ignored). The disk is the first disk, with `snapshot=on`: the
    /// guest may write, the file stays unchanged.
    pub fn uefi_disk(mut self, path: impl AsRef<Path>) -> Self {
        self.uefi_disk = Some(path.as_ref().to_path_buf());
        self
    }

    /// Uses this OVMF variable store (copied from the template if it does not exist yet).
    pub fn ovmf_vars(mut self, path: impl AsRef<Path>) -> Self {
        self.ovmf_vars = Some(path.as_ref().to_path_buf());
        self
    }

    /// Also writes the serial console to this host file (it is always captured).
    pub fn serial_log(mut self, path: impl AsRef<Path>) -> Self {
        self.serial_log = Some(path.as_ref().to_path_buf());
        self
    }

    fn init_script(&self) -> String {
        let mut s = String::from(
            "#!/bin/sh\n\
             export PATH=/bin:/sbin:/usr/bin:/usr/sbin\n\
             /bin/busybox --install -s /bin\n\
             mount -t proc proc /proc\n\
             mount -t sysfs sysfs /sys\n\
             mount -t devtmpfs devtmpfs /dev\n\
             mkdir -p /dev/pts /dev/shm\n\
             mount -t devpts devpts /dev/pts\n\
             mount -t tmpfs tmpfs /tmp\n\
             mount -t tmpfs tmpfs /run\n\
             mount -t securityfs securityfs /sys/kernel/security 2>/dev/null\n\
             for m in $(cat /lib/modules/$(uname -r)/modules.load /lib/modules/$(uname -r)/modules.extra 2>/dev/null); do\n\
             \x20 insmod /lib/modules/$(uname -r)/$m 2>/dev/null || echo \"harness: insmod $m failed\"\n\
             done\n\
             ip link set lo up\n",
        );
        for (i, n) in self.nets.iter().enumerate() {
            if let Some(a) = &n.address {
                let _ = writeln!(
                    s,
                    "ip addr add {} dev eth{i}\nip link set eth{i} up",
                    shell_quote(a)
                );
            }
        }
        if !self.user_net_forwards.is_empty() {
            let i = self.nets.len();
            let _ = writeln!(
                s,
                "ip addr add 10.0.2.15/24 dev eth{i}\nip link set eth{i} up\nip route add default via 10.0.2.2"
            );
        }
        for (k, v) in &self.env {
            let _ = writeln!(s, "export {k}={}", shell_quote(v));
        }
        s.push_str("cd /\n");
        match &self.program {
            Program::None => s.push_str("true\n"),
            Program::Binary { args, .. } => {
                s.push_str("/harness/program");
                for a in args {
                    s.push(' ');
                    s.push_str(&shell_quote(a));
                }
                s.push('\n');
            }
            Program::Shell(_) => s.push_str("/bin/sh /harness/program.sh\n"),
        }
        let _ = write!(
            s,
            // The UART sends asynchronously: give it time to drain before the power goes.
            "rc=$?\nsync\necho\necho \"{EXIT_MARKER}$rc\"\nsleep 1\npoweroff -f\n"
        );
        s
    }

    fn initramfs(&self, base: &HarnessBase) -> Result<Vec<u8>, VmError> {
        let mut a = base.base.clone();
        match &self.program {
            Program::None => {}
            Program::Binary { host, .. } => {
                initramfs::add_executable(&mut a, host, "harness/program")?;
            }
            Program::Shell(script) => {
                a.file("harness/program.sh", script.clone().into_bytes(), true);
            }
        }
        if !self.extra_modules.is_empty() {
            let names: Vec<&str> = self.extra_modules.iter().map(String::as_str).collect();
            let release = &base.kernel.release;
            let mut list = String::new();
            for m in base.kernel.resolve(&names)? {
                let path = format!("lib/modules/{release}/{}", m.rel_path);
                if !a.contains(&path) {
                    a.file(
                        &path,
                        fs::read(&m.host_path).map_err(io("read", &m.host_path))?,
                        false,
                    );
                    list.push_str(&m.rel_path);
                    list.push('\n');
                }
            }
            a.file(
                &format!("lib/modules/{release}/modules.extra"),
                list.into_bytes(),
                false,
            );
        }
        for (host, guest) in &self.executables {
            initramfs::add_executable(&mut a, host, guest)?;
        }
        for (p, d, x) in &self.files {
            a.file(p, d.clone(), *x);
        }
        a.file("init", self.init_script().into_bytes(), true);
        Ok(a.to_bytes(0))
    }

    /// Boots the guest and waits until it powers off (or the timeout kills it).
    pub fn boot(self) -> Result<GuestOutput, VmError> {
        self.spawn()?.wait()
    }

    /// Starts the guest in the background; use [`RunningGuest::wait`]. Start several to run
    /// guests concurrently (e.g. the two ends of a [`Network::pair`]).
    pub fn spawn(self) -> Result<RunningGuest, VmError> {
        let work = tempfile::Builder::new()
            .prefix("constellation-guest-")
            .tempdir()
            .map_err(io("create temporary directory", &std::env::temp_dir()))?;
        let serial = work.path().join("serial.log");
        let stderr_path = work.path().join("qemu.stderr");
        let accel = std::env::var("CONSTELLATION_ACCEL").unwrap_or_else(|_| "tcg".into());
        let accel = Accel::parse(&accel).ok_or_else(|| {
            VmError::Config(format!("CONSTELLATION_ACCEL={accel}: use tcg or kvm"))
        })?;
        let mut cmd = match &self.node {
            Some(node) => self.node_command(node, work.path(), &serial, accel)?,
            None => self.harness_command(work.path(), &serial, accel)?,
        };
        let swtpm = if self.tpm {
            Some(self.start_swtpm(work.path())?)
        } else {
            None
        };
        cmd.args(&self.extra_qemu_args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr_path).map_err(io("create", &stderr_path))?);
        let qemu = cmd.spawn().map_err(|source| VmError::MissingProgram {
            program: QEMU.into(),
            source,
        })?;
        Ok(RunningGuest {
            name: self.name,
            qemu: ChildGuard(Some(qemu)),
            swtpm,
            serial,
            stderr_path,
            copy_serial_to: self.serial_log,
            timeout: self.timeout,
            started: Instant::now(),
            _work: work,
        })
    }

    /// This guest's OVMF variable store (copied from the template if it does not exist yet).
    fn ovmf_vars_in(&self, work: &Path) -> Result<PathBuf, VmError> {
        let vars = match &self.ovmf_vars {
            Some(v) => v.clone(),
            None => work.join("OVMF_VARS.fd"),
        };
        if !vars.exists() {
            fs::copy(OVMF_VARS, &vars).map_err(io("copy OVMF vars to", &vars))?;
        }
        Ok(vars)
    }

    /// A node VM: the provider's command line ([`NodeVm`]) with a throw-away state disk
    /// cache, and a guest that powers off instead of rebooting.
    fn node_command(
        &self,
        node: &NodeGuest,
        work: &Path,
        serial: &Path,
        accel: Accel,
    ) -> Result<Command, VmError> {
        let meta = work.join("fw_cfg");
        fs::create_dir_all(&meta).map_err(io("create", &meta))?;
        let mut fw_cfg = Vec::new();
        for (i, (name, value)) in node.fw_cfg.iter().chain(&self.fw_cfg).enumerate() {
            let file = meta.join(i.to_string());
            fs::write(&file, value).map_err(io("write", &file))?;
            fw_cfg.push((name.clone(), file));
        }
        let vm = NodeVm {
            name: self.name.clone(),
            accel,
            memory_mib: self.memory_mib,
            vcpus: self.cpus,
            ovmf_code: OVMF_CODE.into(),
            ovmf_vars: self.ovmf_vars_in(work)?,
            tpm_socket: work.join("swtpm.sock"),
            boot_disk: node.boot_disk.clone(),
            state_disk: node.state_disk.clone(),
            state_disk_cache: DiskCache::Unsafe,
            host_nic: node.host_nic.clone(),
            private_nic: node.private_nic,
            fw_cfg,
            serial_log: serial.to_path_buf(),
            qmp_socket: None,
            pid_file: None,
        };
        let mut cmd = vm.command().map_err(vmm_error(&self.name))?;
        // Only the disk: no boot attempts of other devices by the firmware.
        cmd.args(["-no-reboot", "-boot", "strict=on"]);
        Ok(cmd)
    }

    /// A harness guest: direct kernel boot or a UEFI disk, with the harness's networks.
    fn harness_command(
        &self,
        work: &Path,
        serial: &Path,
        accel: Accel,
    ) -> Result<Command, VmError> {
        let mut cmd = Command::new(QEMU);
        cmd.args([
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-monitor",
            "none",
        ]);
        cmd.args(qemu::machine_args(accel, self.memory_mib, self.cpus));
        cmd.args(qemu::serial_args(serial, false).map_err(vmm_error(&self.name))?);
        cmd.args(["-device", "virtio-rng-pci"]);

        if let Some(disk) = &self.uefi_disk {
            let vars = self.ovmf_vars_in(work)?;
            cmd.args(qemu::uefi_args(Path::new(OVMF_CODE), &vars).map_err(vmm_error(&self.name))?);
            cmd.arg("-drive").arg(format!(
                "if=none,id=boot,format=raw,snapshot=on,file={}",
                disk.display()
            ));
            cmd.args(["-device", "virtio-blk-pci,drive=boot,bootindex=0"]);
            // Only the disk: no network boot attempts by the firmware.
            cmd.args(["-boot", "strict=on"]);
        } else {
            let base = HarnessBase::get()?;
            let initrd = work.join("initramfs.cpio");
            fs::write(&initrd, self.initramfs(base)?).map_err(io("write", &initrd))?;
            cmd.arg("-kernel").arg(&base.kernel.vmlinuz);
            cmd.arg("-initrd").arg(&initrd);
            cmd.arg("-append").arg(format!(
                "console=ttyS0 panic=-1 loglevel=4 no_timer_check rdinit=/init {}",
                self.cmdline_extra
            ));
        }
        for (i, d) in self.disks.iter().enumerate() {
            if !d.exists() {
                return Err(VmError::Config(format!(
                    "disk {} does not exist; create it with create_raw_disk",
                    d.display()
                )));
            }
            cmd.arg("-drive").arg(format!(
                "if=none,id=d{i},format=raw,cache=unsafe,file={}",
                d.display()
            ));
            cmd.arg("-device")
                .arg(format!("virtio-blk-pci,drive=d{i},serial=disk{i}"));
        }
        for (i, n) in self.nets.iter().enumerate() {
            cmd.arg("-netdev").arg(format!(
                "dgram,id=n{i},local.type=inet,local.host=127.0.0.1,local.port={},\
                 remote.type=inet,remote.host=127.0.0.1,remote.port={}",
                n.endpoint.local_port, n.endpoint.remote_port
            ));
            cmd.arg("-device")
                .arg(format!("virtio-net-pci,netdev=n{i},mac={}", n.endpoint.mac));
            if let Some(p) = &n.pcap {
                cmd.arg("-object").arg(format!(
                    "filter-dump,id=dump{i},netdev=n{i},file={}",
                    p.display()
                ));
            }
        }
        if !self.user_net_forwards.is_empty() {
            let mut s = String::from("user,id=user0,net=10.0.2.0/24");
            for (h, g) in &self.user_net_forwards {
                let _ = write!(s, ",hostfwd=tcp:127.0.0.1:{h}-:{g}");
            }
            cmd.arg("-netdev").arg(s);
            cmd.args(["-device", "virtio-net-pci,netdev=user0"]);
        }

        for (name, value) in &self.fw_cfg {
            if name.contains(',') || value.contains(',') {
                return Err(VmError::Config(format!(
                    "fw_cfg item {name}: commas are not allowed in QEMU option values"
                )));
            }
            cmd.arg("-fw_cfg")
                .arg(format!("name={name},string={value}"));
        }
        if self.tpm {
            cmd.args(qemu::tpm_args(&work.join("swtpm.sock")).map_err(vmm_error(&self.name))?);
        }
        Ok(cmd)
    }

    /// Starts the guest's swtpm on `<work>/swtpm.sock`, manufacturing its TPM first unless the
    /// state directory already holds one.
    fn start_swtpm(&self, work: &Path) -> Result<ChildGuard, VmError> {
        let state = match &self.tpm_state {
            Some(d) => d.clone(),
            None => work.join("tpm"),
        };
        fs::create_dir_all(&state).map_err(io("create", &state))?;
        if !state.join("tpm2-00.permall").exists() {
            swtpm::manufacture(&state, swtpm::Manufacture::default())
                .map_err(vmm_error(&self.name))?;
        }
        let sock = work.join("swtpm.sock");
        let tpm_err = work.join("swtpm.stderr");
        let child = Swtpm::for_qemu(&state, &sock)
            .command()
            .map_err(vmm_error(&self.name))?
            .stdout(Stdio::null())
            .stderr(File::create(&tpm_err).map_err(io("create", &tpm_err))?)
            .spawn()
            .map_err(|source| VmError::MissingProgram {
                program: swtpm::SWTPM.into(),
                source,
            })?;
        let mut guard = ChildGuard(Some(child));
        let up = swtpm::wait_for_socket(&sock, Duration::from_secs(30), || {
            guard
                .0
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some()
        });
        if !up {
            return Err(VmError::Swtpm {
                name: self.name.clone(),
                detail: fs::read_to_string(&tpm_err).unwrap_or_default(),
            });
        }
        Ok(guard)
    }
}

/// A shared VM-builder error as the harness reports it.
fn vmm_error(name: &str) -> impl FnOnce(VmmError) -> VmError + '_ {
    move |e| match e {
        VmmError::MissingProgram {
            program, source, ..
        } => VmError::MissingProgram {
            program: program.into(),
            source,
        },
        VmmError::Argument { .. } => VmError::Config(e.to_string()),
        other => VmError::Swtpm {
            name: name.to_owned(),
            detail: other.to_string(),
        },
    }
}

/// utime + stime of a `/proc/<pid>/stat` line in seconds. The fields after the command name
/// (which may contain spaces, hence the last `)`) start with the state (field 3); utime and
/// stime are fields 14 and 15, in USER_HZ ticks, which Linux fixes at 100 for this interface.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // Tick counts stay far below 2^52, so the conversion is exact.
    #[allow(clippy::cast_precision_loss)]
    Some((utime + stime) as f64 / 100.0)
}

/// Kills and reaps the child when dropped.
#[derive(Debug)]
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A booted guest. Dropping it kills QEMU and swtpm and removes its temporary files.
#[derive(Debug)]
pub struct RunningGuest {
    name: String,
    qemu: ChildGuard,
    swtpm: Option<ChildGuard>,
    serial: PathBuf,
    stderr_path: PathBuf,
    copy_serial_to: Option<PathBuf>,
    timeout: Duration,
    started: Instant,
    _work: tempfile::TempDir,
}

impl RunningGuest {
    /// The serial console written so far.
    pub fn serial_so_far(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    /// CPU time QEMU has used so far (user + system, all threads), in seconds; `None` once it
    /// has exited. Unlike wall time this barely depends on what else the host runs, so boot
    /// stages can be compared on a busy machine.
    pub fn qemu_cpu_seconds(&self) -> Option<f64> {
        let pid = self.qemu.0.as_ref()?.id();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        parse_cpu_seconds(&stat)
    }

    /// Whether QEMU has exited.
    pub fn has_exited(&mut self) -> bool {
        self.qemu
            .0
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Waits until the serial console contains `needle` (e.g. an agent's "ready" line).
    /// Returns how long the guest had been running when it appeared.
    pub fn wait_for_serial(&mut self, needle: &str, limit: Duration) -> Result<Duration, VmError> {
        let deadline = Instant::now() + limit;
        loop {
            if self.serial_so_far().contains(needle) {
                return Ok(self.started.elapsed());
            }
            let exited = self
                .qemu
                .0
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .is_some();
            if exited || Instant::now() > deadline {
                return Err(VmError::Timeout {
                    name: self.name.clone(),
                    timeout: limit,
                    tail: tail(&self.serial_so_far()),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for power-off (killing the guest at the timeout) and collects its output.
    pub fn wait(mut self) -> Result<GuestOutput, VmError> {
        let deadline = self.started + self.timeout;
        loop {
            let done = match self.qemu.0.as_mut() {
                Some(c) => c
                    .try_wait()
                    .map_err(io("wait for qemu", Path::new("qemu-system-x86_64")))?
                    .is_some(),
                None => true,
            };
            if done {
                break;
            }
            if Instant::now() > deadline {
                drop(self.qemu.0.take().map(|mut c| {
                    let _ = c.kill();
                    c.wait()
                }));
                return Err(VmError::Timeout {
                    name: self.name.clone(),
                    timeout: self.timeout,
                    tail: tail(&self.serial_so_far()),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let elapsed = self.started.elapsed();
        let serial_log = self.serial_so_far();
        if let Some(p) = &self.copy_serial_to {
            fs::write(p, &serial_log).map_err(io("write", p))?;
        }
        let qemu_stderr = fs::read_to_string(&self.stderr_path).unwrap_or_default();
        drop(self.swtpm.take());
        Ok(GuestOutput {
            exit_code: parse_exit(&serial_log),
            serial_log,
            qemu_stderr,
            elapsed,
        })
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines
        .get(lines.len().saturating_sub(40)..)
        .unwrap_or_default()
        .join("\n")
}

/// Finds the last exit marker line in a serial log.
pub fn parse_exit(log: &str) -> Option<i32> {
    log.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(EXIT_MARKER))
        .and_then(|v| v.trim().parse().ok())
}

/// Creates a sparse raw disk image of `size_mib` MiB if it does not exist yet.
pub fn create_raw_disk(path: impl AsRef<Path>, size_mib: u64) -> Result<(), VmError> {
    let path = path.as_ref();
    if path.exists() {
        return Ok(());
    }
    let f = File::create(path).map_err(io("create", path))?;
    f.set_len(size_mib * 1024 * 1024)
        .map_err(io("set length of", path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_marker() {
        assert_eq!(parse_exit("x\nCONSTELLATION-GUEST-EXIT=3\r\n"), Some(3));
        assert_eq!(parse_exit("no marker"), None);
    }

    #[test]
    fn proc_stat_cpu_time() {
        let stat = "1234 (qemu-system-x86) S 1 2 3 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.25));
        assert_eq!(parse_cpu_seconds("1 (a) b) S 1"), None);
        assert_eq!(parse_cpu_seconds(""), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
