//! The local backend: one QEMU VM per node with OVMF and its own swtpm, booting the node
//! image's `disk.raw` read-only, with a blank state disk, metadata in fw_cfg, a private L2
//! network between the cluster's VMs and host port forwards for the provider.
//!
//! Everything lives in the cluster's working directory (`nodes/<name>/` per node), so
//! deleting a cluster is: stop the processes recorded there, remove the directory.
//!
//! - VMs outlive the provider: QEMU runs with `-daemonize` and swtpm with `--daemon`, both in
//!   their own process group, so neither Terraform ending the plugin nor a terminal's Ctrl-C
//!   reaches them. They are found again through their pid files, and a pid is only trusted
//!   when `/proc/<pid>/cwd` is the node's directory (pids get reused).
//! - Private network: QEMU's `socket` netdev on a multicast group on 127.0.0.1 — an L2 hub
//!   between any number of VMs that needs no root (no tap, no bridge). Traffic on it is
//!   WireGuard between the agents; the group and port are random per cluster.
//! - Host access: a user-mode (slirp) NIC with `restrict=on` (the guest cannot open
//!   connections to the host or beyond) and `hostfwd` from free loopback ports to the node's
//!   service ports.
//! - Attestation-key root: every swtpm is manufactured here, so right after manufacture its AK
//!   is derived in the TPM and certified by the cluster's AK CA, and template and certificate
//!   go into the TPM's NV (`constellation_vmm::tpm`), as cloud vTPMs are provisioned. The CA
//!   (`ak-ca.pem`, key `ak-ca-key.pem`, 0600) lives in the 0700 working directory only.
//! - QMP (through the `qapi` crate) for status and graceful shutdown.
//! - Both daemonize (and change to `/`), so every path they get is absolute; unix socket
//!   paths are limited to 107 bytes, which is checked with a message naming the fix.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use constellation_attest::qemu_vtpm::{self, AkCa};
use constellation_node_api::metadata::NodeMetadata;
use constellation_node_api::ports;
use constellation_vmm::VmmError;
use constellation_vmm::qemu::{DiskCache, HostNic, NodeVm, PrivateNic};
use constellation_vmm::swtpm::{self, Manufacture, Swtpm};
use serde::{Deserialize, Serialize};

use super::{CloudError, MachineState, NodeEndpoints, NodeRecord, NodeSpec, Role};

pub use constellation_vmm::qemu::{Accel, OVMF_CODE, OVMF_VARS};

/// Longest unix socket path (sun_path is 108 bytes including the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The cluster's private network: a multicast group on the loopback interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateNetwork {
    /// Multicast group (239.255.0.0/16, administratively scoped).
    pub group: Ipv4Addr,
    /// UDP port.
    pub port: u16,
}

impl PrivateNetwork {
    /// A random group and port, so that two clusters on one machine do not share a wire.
    pub fn random() -> Self {
        use rand::Rng as _;
        let mut rng = rand::thread_rng();
        Self {
            group: Ipv4Addr::new(239, 255, rng.r#gen_range(1..=254), rng.r#gen_range(1..=254)),
            port: rng.r#gen_range(20000..=60000),
        }
    }
}

/// Settings of the local backend for one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuOptions {
    /// The cluster's working directory (absolute).
    pub work_dir: PathBuf,
    /// Virtual CPUs per VM.
    pub vcpus: u32,
    /// Memory per VM in MiB.
    pub memory_mib: u32,
    /// Size of each VM's state disk in MiB.
    pub state_disk_mib: u64,
    /// CPU virtualisation.
    pub accel: Accel,
    /// The private network.
    pub network: PrivateNetwork,
    /// OVMF code.
    pub ovmf_code: PathBuf,
    /// OVMF variables template.
    pub ovmf_vars: PathBuf,
}

/// The QEMU backend.
#[derive(Debug, Clone)]
pub struct QemuCloud {
    opts: QemuOptions,
}

/// The cluster's qemu-vtpm AK CA certificate and key in the working directory.
const AK_CA_CERT: &str = "ak-ca.pem";
const AK_CA_KEY: &str = "ak-ca-key.pem";

/// The node's state disk in its directory.
const STATE_DISK: &str = "state.raw";

fn file_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CloudError + use<> {
    let path = path.display().to_string();
    move |e| CloudError::File {
        what,
        path,
        detail: e.to_string(),
    }
}

/// Last `max` bytes of a text file, lossily decoded; empty when unreadable.
fn tail_of(path: &Path, max: usize) -> String {
    let Ok(bytes) = fs::read(path) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(bytes.get(start..).unwrap_or_default()).into_owned()
}

/// Reads a pid file and returns the pid if that process is alive and was started for `dir`
/// (its command line names the directory; pids get reused).
fn live_pid(pid_file: &Path, dir: &Path) -> Option<i32> {
    let pid: i32 = fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    // A zombie (exited, not yet reaped) has an empty command line, so it is not "alive".
    (pid_alive(pid) && names_dir(&cmdline, dir)).then_some(pid)
}

/// Whether a NUL-separated command line names `dir` itself or a path inside it: `dir`
/// followed by `/`, `,` (an option list) or the end of an argument — so `.../w-1` does not
/// match a process of `.../w-10`.
fn names_dir(cmdline: &[u8], dir: &Path) -> bool {
    let needle = dir.as_os_str().as_encoded_bytes();
    if needle.is_empty() {
        return false;
    }
    cmdline.windows(needle.len()).enumerate().any(|(i, w)| {
        w == needle
            && matches!(
                cmdline.get(i + needle.len()),
                None | Some(b'/' | b',' | b'\0')
            )
    })
}

/// Writes `bytes` to `path` readable by this user only, durably and atomically (a temporary
/// file renamed over it).
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// Creates `dir` (and missing parents) accessible to this user only, and tightens an existing
/// `dir` to 0700: it holds TPM state, sockets, disks and the serial log.
fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

fn pid_alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

fn kill(pid: i32, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

/// Waits up to `limit` for `pid` to exit.
fn wait_gone(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while pid_alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Free loopback TCP ports; the listeners are held until all are chosen.
fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// A backend error of the node VM's processes: a missing program as such, anything else as a
/// failed start of `node`.
fn vmm_err(node: &str) -> impl FnOnce(VmmError) -> CloudError + '_ {
    move |e| match e {
        VmmError::MissingProgram {
            program,
            package,
            source,
        } => CloudError::MissingProgram {
            program,
            package,
            detail: source.to_string(),
        },
        other => CloudError::Start {
            node: node.into(),
            detail: other.to_string(),
        },
    }
}

impl QemuCloud {
    /// A backend for the cluster in `opts.work_dir`.
    pub fn new(opts: QemuOptions) -> Self {
        Self { opts }
    }

    fn node_dir(&self, name: &str) -> PathBuf {
        self.opts.work_dir.join("nodes").join(name)
    }

    fn check_programs() -> Result<(), CloudError> {
        for (program, package) in constellation_vmm::PROGRAMS {
            Command::new(program)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|e| CloudError::MissingProgram {
                    program,
                    package,
                    detail: e.to_string(),
                })?;
        }
        Ok(())
    }

    /// The cluster's AK CA (see `constellation_attest::qemu_vtpm`): loaded from the working
    /// directory, created there on first use. Its key never leaves that 0700 directory (not in
    /// Terraform state, not in logs); its certificate is what validators must trust.
    pub fn ak_ca(&self) -> Result<AkCa, CloudError> {
        // Nodes are created concurrently: one creator, everyone else loads.
        static CREATE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = CREATE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = &self.opts.work_dir;
        let (cert_path, key_path) = (dir.join(AK_CA_CERT), dir.join(AK_CA_KEY));
        let ca_err = |e: qemu_vtpm::QemuVtpmError| CloudError::File {
            what: "qemu-vtpm AK CA",
            path: dir.display().to_string(),
            detail: e.to_string(),
        };
        match (
            fs::read_to_string(&cert_path),
            fs::read_to_string(&key_path),
        ) {
            (Ok(cert), Ok(key)) => {
                let key = zeroize::Zeroizing::new(key);
                AkCa::from_pem(&cert, &key).map_err(ca_err)
            }
            (Err(c), Err(k)) if c.kind() == io::ErrorKind::NotFound && k.kind() == c.kind() => {
                private_dir(dir).map_err(file_err("working directory", dir))?;
                let ca = AkCa::generate().map_err(ca_err)?;
                write_private(&key_path, ca.key_pem().as_bytes())
                    .map_err(file_err("AK CA key", &key_path))?;
                write_private(&cert_path, ca.cert_pem().as_bytes())
                    .map_err(file_err("AK CA certificate", &cert_path))?;
                Ok(ca)
            }
            (Err(e), _) => Err(file_err("AK CA certificate", &cert_path)(e)),
            (_, Err(e)) => Err(file_err("AK CA key", &key_path)(e)),
        }
    }

    /// Starts the node's swtpm; `manufacture` creates the TPM state first (new nodes), a
    /// restarted node keeps its TPM (endorsement key, NV) and only its PCRs reset.
    fn start_swtpm(&self, name: &str, dir: &Path, manufacture: bool) -> Result<(), CloudError> {
        let state = dir.join("tpm");
        private_dir(&state).map_err(file_err("TPM state directory", dir))?;
        let socket = dir.join("swtpm.sock");
        // A stale socket from a previous run would make the wait below return at once.
        let _ = fs::remove_file(&socket);
        if manufacture {
            swtpm::manufacture(&state, Manufacture::default()).map_err(vmm_err(name))?;
            let ca = self.ak_ca()?;
            swtpm::provision_ak(&state, |ak: &[u8]| ca.certify(ak)).map_err(vmm_err(name))?;
        }
        let mut tpm = Swtpm::for_qemu(&state, &socket);
        tpm.daemon = Some(dir.join("swtpm.pid"));
        tpm.log = Some(dir.join("swtpm.log"));
        let status = tpm
            .command()
            .map_err(vmm_err(name))?
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .output()
            .map_err(|e| vmm_err(name)(VmmError::spawn(swtpm::SWTPM)(e)))?;
        if !status.status.success() {
            return Err(CloudError::Start {
                node: name.into(),
                detail: format!(
                    "swtpm exited with {}: {}{}",
                    status.status,
                    String::from_utf8_lossy(&status.stderr),
                    tail_of(&dir.join("swtpm.log"), 2000)
                ),
            });
        }
        if !swtpm::wait_for_socket(&socket, Duration::from_secs(20), || false) {
            return Err(CloudError::Start {
                node: name.into(),
                detail: format!(
                    "swtpm did not create its socket within 20 s: {}",
                    tail_of(&dir.join("swtpm.log"), 2000)
                ),
            });
        }
        Ok(())
    }

    /// Writes the node's metadata into `meta/` and returns the fw_cfg items naming the files.
    fn write_metadata(dir: &Path, spec: &NodeSpec) -> Result<Vec<(String, PathBuf)>, CloudError> {
        let metadata = NodeMetadata {
            role: spec.role,
            name: spec.name.clone(),
            private_ip: spec.private_ip.into(),
            join_endpoints: spec.join_endpoints.clone(),
            init_secret_hash: spec.init_secret_hash.clone(),
            image_version: Some(spec.image_version.clone()),
            network: constellation_vmm::qemu::network(spec.private_ip, spec.prefix_len),
        };
        constellation_vmm::qemu::write_metadata(&dir.join("meta"), &metadata)
            .map_err(vmm_err(&spec.name))
    }

    fn qemu_command(
        &self,
        dir: &Path,
        spec: &NodeSpec,
        fw_cfg: Vec<(String, PathBuf)>,
        ep: &NodeEndpoints,
    ) -> Result<Command, CloudError> {
        let o = &self.opts;
        // Host access through loopback port forwards only.
        let forwards = [
            (ep.init, ports::INIT),
            (ep.management, ports::MANAGEMENT),
            (ep.recovery, ports::RECOVERY),
            (Some(ep.verify_http), ports::VERIFY_HTTP),
            (Some(ep.verify_grpc), ports::VERIFY_GRPC),
        ]
        .into_iter()
        .filter_map(|(host, guest)| host.map(|h| (h.port(), guest)))
        .collect();
        NodeVm {
            name: spec.name.clone(),
            accel: o.accel,
            memory_mib: o.memory_mib,
            vcpus: o.vcpus,
            ovmf_code: o.ovmf_code.clone(),
            ovmf_vars: dir.join("OVMF_VARS.fd"),
            tpm_socket: dir.join("swtpm.sock"),
            boot_disk: spec.image.clone().into(),
            state_disk: dir.join(STATE_DISK),
            state_disk_cache: DiskCache::Default,
            host_nic: HostNic::for_node(spec.private_ip, forwards),
            private_nic: PrivateNic::for_node(
                spec.private_ip,
                SocketAddrV4::new(o.network.group, o.network.port),
            ),
            fw_cfg,
            serial_log: dir.join("serial.log"),
            qmp_socket: Some(dir.join("qmp.sock")),
            pid_file: Some(dir.join("qemu.pid")),
        }
        .command()
        .map_err(vmm_err(&spec.name))
    }

    fn create_node_blocking(&self, spec: &NodeSpec) -> Result<NodeRecord, CloudError> {
        let dir = self.node_dir(&spec.name);
        if dir.exists() {
            return Err(CloudError::Start {
                node: spec.name.clone(),
                detail: format!(
                    "{} already exists: a node of that name exists or was not cleaned up; \
                     destroy the cluster or remove the directory",
                    dir.display()
                ),
            });
        }
        // The longest socket path of a node: swtpm's command channel while it is provisioned.
        let qmp = dir.join("tpm").join("provision.sock");
        if qmp.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(CloudError::File {
                what: "socket path",
                path: qmp.display().to_string(),
                detail: format!(
                    "is longer than {MAX_SOCKET_PATH} bytes, the limit for unix sockets; \
                     set cloud.qemu.working_dir to a shorter directory"
                ),
            });
        }
        private_dir(&dir).map_err(file_err("node directory", &dir))?;
        let result = self.start_in(&dir, spec);
        if result.is_err() {
            self.remove_node_dir(&spec.name);
        }
        result
    }

    /// A new node: firmware variables and a blank state disk, then [`Self::launch`] with fresh
    /// loopback ports and a newly manufactured TPM.
    fn start_in(&self, dir: &Path, spec: &NodeSpec) -> Result<NodeRecord, CloudError> {
        let vars = dir.join("OVMF_VARS.fd");
        fs::copy(&self.opts.ovmf_vars, &vars).map_err(file_err(
            "OVMF variables template (Debian: apt-get install ovmf)",
            &self.opts.ovmf_vars,
        ))?;
        let state = dir.join(STATE_DISK);
        let f = fs::File::create(&state).map_err(file_err("state disk", &state))?;
        f.set_len(self.opts.state_disk_mib * 1024 * 1024)
            .map_err(file_err("state disk", &state))?;
        drop(f);
        let endpoints = Self::fresh_endpoints(spec)?;
        self.launch(dir, spec, &endpoints, true)
    }

    fn fresh_endpoints(spec: &NodeSpec) -> Result<NodeEndpoints, CloudError> {
        let cp = spec.role == Role::ControlPlane;
        let ports = free_ports(if cp { 5 } else { 2 }).map_err(|e| CloudError::Start {
            node: spec.name.clone(),
            detail: format!("no free loopback port: {e}"),
        })?;
        let at =
            |i: usize| SocketAddr::from((Ipv4Addr::LOCALHOST, ports.get(i).copied().unwrap_or(0)));
        Ok(NodeEndpoints {
            verify_http: at(0),
            verify_grpc: at(1),
            init: cp.then(|| at(2)),
            management: cp.then(|| at(3)),
            recovery: cp.then(|| at(4)),
        })
    }

    /// Boots an existing node directory again: the kept state disk, TPM state and firmware
    /// variables, metadata rewritten from `spec`. The recorded loopback ports are reused so
    /// the endpoints in state stay valid; if one was taken meanwhile, fresh ports are used.
    fn restart_blocking(
        &self,
        node: &NodeRecord,
        spec: &NodeSpec,
    ) -> Result<NodeRecord, CloudError> {
        let dir = self.node_dir(&node.name);
        for (what, f) in [("state disk", STATE_DISK), ("TPM state directory", "tpm")] {
            let path = dir.join(f);
            fs::metadata(&path).map_err(file_err(what, &path))?;
        }
        // Leftovers of the previous run (a swtpm whose QEMU died) would keep the old PCRs.
        self.stop_node_processes(&node.name)?;
        match self.launch(&dir, spec, &node.endpoints, false) {
            Ok(r) => Ok(r),
            Err(e) => {
                tracing::warn!(node = %node.name, error = %e, "restart on the recorded ports failed; trying fresh ports");
                let _ = self.stop_node_processes(&node.name);
                let endpoints = Self::fresh_endpoints(spec)?;
                self.launch(&dir, spec, &endpoints, false)
            }
        }
    }

    fn launch(
        &self,
        dir: &Path,
        spec: &NodeSpec,
        endpoints: &NodeEndpoints,
        manufacture_tpm: bool,
    ) -> Result<NodeRecord, CloudError> {
        let image = Path::new(&spec.image);
        fs::metadata(image).map_err(file_err("image disk", image))?;
        let fw_cfg = Self::write_metadata(dir, spec)?;
        let _ = fs::remove_file(dir.join("qmp.sock"));
        self.start_swtpm(&spec.name, dir, manufacture_tpm)?;
        let out = self
            .qemu_command(dir, spec, fw_cfg, endpoints)?
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .output()
            .map_err(|e| CloudError::MissingProgram {
                program: "qemu-system-x86_64",
                package: "qemu-system-x86",
                detail: e.to_string(),
            })?;
        if !out.status.success() {
            return Err(CloudError::Start {
                node: spec.name.clone(),
                detail: format!(
                    "QEMU exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        if live_pid(&dir.join("qemu.pid"), dir).is_none() {
            return Err(CloudError::Start {
                node: spec.name.clone(),
                detail: format!(
                    "QEMU is not running after start: {}",
                    tail_of(&dir.join("serial.log"), 2000)
                ),
            });
        }
        tracing::info!(node = %spec.name, dir = %dir.display(), restart = !manufacture_tpm, "VM started");
        Ok(NodeRecord {
            name: spec.name.clone(),
            role: spec.role,
            private_ip: spec.private_ip,
            endpoints: endpoints.clone(),
            backend_id: spec.name.clone(),
            image: spec.image.clone(),
        })
    }

    fn qmp<T>(
        dir: &Path,
        f: impl FnOnce(
            &mut qapi::Qmp<
                qapi::Stream<
                    io::BufReader<&std::os::unix::net::UnixStream>,
                    &std::os::unix::net::UnixStream,
                >,
            >,
        ) -> Result<T, String>,
    ) -> Result<T, String> {
        let path = dir.join("qmp.sock");
        let stream = std::os::unix::net::UnixStream::connect(&path)
            .map_err(|e| format!("connecting to {}: {e}", path.display()))?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
        let mut qmp = qapi::Qmp::from_stream(&stream);
        qmp.handshake().map_err(|e| format!("QMP handshake: {e}"))?;
        f(&mut qmp)
    }

    fn machine_state_blocking(&self, name: &str) -> MachineState {
        let dir = self.node_dir(name);
        if live_pid(&dir.join("qemu.pid"), &dir).is_none() {
            // Not running; with its disks kept it can boot again.
            return if dir.join(STATE_DISK).is_file() && dir.join("tpm").is_dir() {
                MachineState::Off
            } else {
                MachineState::Gone
            };
        }
        let running = Self::qmp(&dir, |q| {
            q.execute(&qapi::qmp::query_status {})
                .map(|s| s.running)
                .map_err(|e| e.to_string())
        });
        match running {
            Ok(true) => MachineState::Running,
            _ => MachineState::Stopped,
        }
    }

    fn stop_node_processes(&self, name: &str) -> Result<(), CloudError> {
        let dir = self.node_dir(name);
        if let Some(pid) = live_pid(&dir.join("qemu.pid"), &dir) {
            // Graceful first (QMP quit flushes the disks), then force.
            let _ = Self::qmp(&dir, |q| {
                q.execute(&qapi::qmp::quit {})
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
            if !wait_gone(pid, Duration::from_secs(10)) {
                kill(pid, nix::sys::signal::Signal::SIGKILL);
                if !wait_gone(pid, Duration::from_secs(10)) {
                    return Err(CloudError::Stop {
                        node: name.into(),
                        detail: format!("QEMU (pid {pid}) does not exit, even on SIGKILL"),
                    });
                }
            }
        }
        if let Some(pid) = live_pid(&dir.join("swtpm.pid"), &dir) {
            kill(pid, nix::sys::signal::Signal::SIGTERM);
            if !wait_gone(pid, Duration::from_secs(5)) {
                kill(pid, nix::sys::signal::Signal::SIGKILL);
                let _ = wait_gone(pid, Duration::from_secs(5));
            }
        }
        Ok(())
    }

    fn remove_node_dir(&self, name: &str) {
        let _ = self.stop_node_processes(name);
        let _ = fs::remove_dir_all(self.node_dir(name));
    }

    fn destroy_blocking(&self) -> Result<(), CloudError> {
        let nodes = self.opts.work_dir.join("nodes");
        let mut first_err = None;
        if let Ok(entries) = fs::read_dir(&nodes) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Err(err) = self.stop_node_processes(&name) {
                    first_err.get_or_insert(err);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        match fs::remove_dir_all(&self.opts.work_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_err("working directory", &self.opts.work_dir)(e)),
        }
        // The default location is `.constellation/<name>`: leave no empty `.constellation`
        // behind (remove_dir fails, harmlessly, while other clusters live there).
        if let Some(parent) = self.opts.work_dir.parent()
            && parent.file_name().is_some_and(|n| n == ".constellation")
        {
            let _ = fs::remove_dir(parent);
        }
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T
where
{
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

#[tfplugin::async_trait]
impl super::Cloud for QemuCloud {
    fn name(&self) -> &'static str {
        "qemu"
    }

    async fn prepare(&self) -> Result<super::ClusterEndpoint, CloudError> {
        let opts = self.opts.clone();
        blocking(move || {
            Self::check_programs()?;
            for (what, p) in [
                (
                    "OVMF firmware (Debian: apt-get install ovmf)",
                    &opts.ovmf_code,
                ),
                (
                    "OVMF variables template (Debian: apt-get install ovmf)",
                    &opts.ovmf_vars,
                ),
            ] {
                fs::metadata(p).map_err(file_err(what, p))?;
            }
            if opts.accel == Accel::Kvm {
                fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/kvm")
                    .map_err(file_err(
                        "KVM device (set accel = \"tcg\" to emulate)",
                        Path::new("/dev/kvm"),
                    ))?;
            }
            private_dir(&opts.work_dir).map_err(file_err("working directory", &opts.work_dir))?;
            let nodes = opts.work_dir.join("nodes");
            private_dir(&nodes).map_err(file_err("working directory", &nodes))?;
            QemuCloud::new(opts.clone()).ak_ca()?;
            // No load balancer on the host: kubeadm takes the first control plane's address.
            Ok(super::ClusterEndpoint::default())
        })
        .await
    }

    async fn create_node(&self, spec: &NodeSpec) -> Result<NodeRecord, CloudError> {
        let this = self.clone();
        let spec = spec.clone();
        blocking(move || this.create_node_blocking(&spec)).await
    }

    async fn machine_state(&self, node: &NodeRecord) -> Result<MachineState, CloudError> {
        let this = self.clone();
        // The node directory is named after the node (its backend ID).
        let name = node.name.clone();
        Ok(blocking(move || this.machine_state_blocking(&name)).await)
    }

    async fn start_node(
        &self,
        node: &NodeRecord,
        spec: &NodeSpec,
    ) -> Result<NodeRecord, CloudError> {
        let this = self.clone();
        let node = node.clone();
        let spec = spec.clone();
        blocking(move || this.restart_blocking(&node, &spec)).await
    }

    async fn console_tail(&self, node: &NodeRecord, max_bytes: usize) -> String {
        tail_of(&self.node_dir(&node.name).join("serial.log"), max_bytes)
    }

    async fn delete_node(&self, node: &NodeRecord) -> Result<(), CloudError> {
        let this = self.clone();
        let name = node.name.clone();
        blocking(move || {
            this.stop_node_processes(&name)?;
            let dir = this.node_dir(&name);
            match fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(file_err("node directory", &dir)(e)),
            }
        })
        .await
    }

    async fn destroy(&self) -> Result<(), CloudError> {
        let this = self.clone();
        blocking(move || this.destroy_blocking()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> NodeSpec {
        NodeSpec {
            name: "demo-cp-0".into(),
            role: Role::ControlPlane,
            private_ip: Ipv4Addr::new(10, 42, 0, 2),
            prefix_len: 24,
            join_endpoints: vec![],
            init_secret_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$abc$def".into()),
            image_version: "v0.1.0".into(),
            image: "/images/v0.1.0/disk.raw".into(),
        }
    }

    #[test]
    fn metadata_files_are_written_per_key_without_commas_in_qemu_args() {
        let dir = tempfile::tempdir().unwrap();
        let items = QemuCloud::write_metadata(dir.path(), &spec()).unwrap();
        let names: Vec<_> = items.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"opt/constellation/init-secret-hash"));
        assert!(items.iter().all(|(_, f)| f.is_absolute()));
        assert!(!names.contains(&"opt/constellation/join-endpoints"));
        let hash = fs::read_to_string(dir.path().join("meta/init-secret-hash")).unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert_eq!(
            fs::read_to_string(dir.path().join("meta/network")).unwrap(),
            "52:54:00:c0:00:02 10.0.2.15/24 via 10.0.2.2\n52:54:00:c1:00:02 10.42.0.2/24\n"
        );
        let cloud = QemuCloud::new(QemuOptions {
            work_dir: dir.path().to_path_buf(),
            vcpus: 1,
            memory_mib: 512,
            state_disk_mib: 1,
            accel: Accel::Tcg,
            network: PrivateNetwork::random(),
            ovmf_code: OVMF_CODE.into(),
            ovmf_vars: OVMF_VARS.into(),
        });
        let ep = QemuCloud::fresh_endpoints(&spec()).unwrap();
        let cmd = cloud.qemu_command(dir.path(), &spec(), items, &ep).unwrap();
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy()).collect();
        let args = args.join(" ");
        assert!(args.contains(&format!(
            "hostfwd=tcp:127.0.0.1:{}-10.0.2.15:9000",
            ep.init.unwrap().port()
        )));
        assert!(args.contains("-daemonize -pidfile"), "{args}");
    }

    #[test]
    fn a_pid_file_of_a_foreign_process_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        // Our own pid is alive but its command line does not name the node's directory.
        fs::write(dir.path().join("qemu.pid"), std::process::id().to_string()).unwrap();
        assert_eq!(live_pid(&dir.path().join("qemu.pid"), dir.path()), None);
        fs::write(dir.path().join("qemu.pid"), "not a pid").unwrap();
        assert_eq!(live_pid(&dir.path().join("qemu.pid"), dir.path()), None);
    }

    #[test]
    fn a_process_matches_only_its_own_node_directory() {
        let dir = Path::new("/c/nodes/w-1");
        for (cmdline, matches) in [
            (&b"swtpm\0--tpmstate\0dir=/c/nodes/w-1/tpm\0"[..], true),
            (b"qemu\0-pidfile\0/c/nodes/w-1\0", true),
            (b"qemu\0-drive\0file=/c/nodes/w-1,format=raw\0", true),
            (b"qemu\0-pidfile\0/c/nodes/w-1", true),
            (b"swtpm\0dir=/c/nodes/w-10/tpm\0", false),
            (b"qemu\0/c/nodes/w-1x/qemu.pid\0", false),
            (b"", false),
        ] {
            assert_eq!(
                names_dir(cmdline, dir),
                matches,
                "{}",
                String::from_utf8_lossy(cmdline)
            );
        }
        assert!(!names_dir(b"anything", Path::new("")));
    }

    #[test]
    fn the_ak_ca_is_created_once_privately_and_loaded_after() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cloud = QemuCloud::new(QemuOptions {
            work_dir: dir.path().join("c"),
            vcpus: 1,
            memory_mib: 512,
            state_disk_mib: 1,
            accel: Accel::Tcg,
            network: PrivateNetwork::random(),
            ovmf_code: "/nonexistent".into(),
            ovmf_vars: "/nonexistent".into(),
        });
        let ca = cloud.ak_ca().unwrap();
        let key = dir.path().join("c").join(AK_CA_KEY);
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(cloud.ak_ca().unwrap().cert_pem(), ca.cert_pem());
        // A damaged CA is an error, never silently replaced (nodes carry its certificates).
        fs::write(&key, "garbage").unwrap();
        assert!(cloud.ak_ca().is_err());
        fs::remove_file(&key).unwrap();
        assert!(cloud.ak_ca().is_err());
    }

    #[test]
    fn working_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a/b");
        private_dir(&dir).unwrap();
        for d in [base.path().join("a"), dir.clone()] {
            let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn random_networks_are_administratively_scoped_multicast() {
        let n = PrivateNetwork::random();
        assert!(n.group.is_multicast());
        assert_eq!(n.group.octets()[..2], [239, 255]);
        assert!(n.port >= 20000);
    }

    #[test]
    fn a_stopped_node_with_its_disks_is_off_without_them_gone() {
        let dir = tempfile::tempdir().unwrap();
        let cloud = QemuCloud::new(QemuOptions {
            work_dir: dir.path().to_path_buf(),
            vcpus: 1,
            memory_mib: 512,
            state_disk_mib: 1,
            accel: Accel::Tcg,
            network: PrivateNetwork::random(),
            ovmf_code: "/nonexistent".into(),
            ovmf_vars: "/nonexistent".into(),
        });
        let node = cloud.node_dir("n");
        fs::create_dir_all(node.join("tpm")).unwrap();
        fs::write(node.join(STATE_DISK), b"").unwrap();
        // A pid file of a process that is not this node's QEMU does not make it run.
        fs::write(node.join("qemu.pid"), std::process::id().to_string()).unwrap();
        assert_eq!(cloud.machine_state_blocking("n"), MachineState::Off);
        fs::remove_file(node.join(STATE_DISK)).unwrap();
        assert_eq!(cloud.machine_state_blocking("n"), MachineState::Gone);
        assert_eq!(cloud.machine_state_blocking("other"), MachineState::Gone);
        assert!(MachineState::Off.is_down() && !MachineState::Stopped.is_down());
    }
}
