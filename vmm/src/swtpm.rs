//! swtpm: manufacturing a TPM and the `swtpm socket` command line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::VmmError;

/// The TPM emulator.
pub const SWTPM: &str = "swtpm";
/// Its manufacturing tool.
pub const SWTPM_SETUP: &str = "swtpm_setup";

/// What [`manufacture`] creates besides the TPM's seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Manufacture {
    /// Also an EK certificate and a platform certificate (signed by swtpm's local CA), and
    /// overwrite existing state.
    pub ek_certificates: bool,
}

/// The `swtpm_setup` arguments for a TPM in `state_dir`.
pub fn manufacture_args(state_dir: &Path, what: Manufacture) -> Vec<String> {
    // Only the SHA-256 PCR bank: swtpm's default activates SHA-1, SHA-256, SHA-384 and
    // SHA-512, and firmware, stub and kernel then hash every measured byte four times — in
    // software, which under emulation costs seconds per boot. Attestation uses SHA-256 only.
    let mut args: Vec<String> = ["--tpm2", "--pcr-banks", "sha256", "--tpmstate"]
        .map(str::to_owned)
        .to_vec();
    args.push(state_dir.display().to_string());
    if what.ek_certificates {
        args.extend(
            ["--create-ek-cert", "--create-platform-cert", "--overwrite"].map(str::to_owned),
        );
    }
    args
}

/// Manufactures a TPM 2.0 in `state_dir` (which must exist): its seeds and, as asked, EK
/// certificates. A TPM keeps its identity across restarts of swtpm on the same state.
pub fn manufacture(state_dir: &Path, what: Manufacture) -> Result<(), VmmError> {
    let out = Command::new(SWTPM_SETUP)
        .args(manufacture_args(state_dir, what))
        .stdin(Stdio::null())
        .output()
        .map_err(VmmError::spawn(SWTPM_SETUP))?;
    if !out.status.success() {
        return Err(VmmError::Failed {
            program: SWTPM_SETUP,
            status: out.status,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}

/// Gives the TPM in `state_dir` (manufactured, not running) its attestation-key root: starts
/// a swtpm on it with both channels on unix sockets inside `state_dir`, runs
/// [`crate::tpm::provision_ak`] (AK template and `certify`'s certificate into NV) and shuts
/// the TPM down so its state is saved. Returns the AK's `TPM2B_PUBLIC`.
pub fn provision_ak<E: std::fmt::Display>(
    state_dir: &Path,
    certify: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, VmmError> {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    let server = state_dir.join("provision.sock");
    let ctrl = state_dir.join("provision.ctrl");
    for s in [&server, &ctrl] {
        // sun_path holds 107 bytes and a NUL.
        if s.as_os_str().len() > 107 {
            return Err(VmmError::Argument {
                what: "swtpm provisioning socket",
                value: s.display().to_string(),
                reason: "longer than the 107 bytes a unix socket path may have; use a shorter TPM state directory",
            });
        }
        let _ = std::fs::remove_file(s);
    }
    let tpm = Swtpm {
        state_dir: state_dir.to_path_buf(),
        ctrl: Channel::Unix(ctrl.clone()),
        server: Some(Channel::Unix(server.clone())),
        startup_clear: true,
        terminate: false,
        daemon: None,
        log: None,
    };
    let mut child = tpm
        .command()?
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(VmmError::spawn(SWTPM))?;
    let failed = |child: &mut std::process::Child, message: String| {
        let _ = child.kill();
        let mut output = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut output);
        }
        let status = child.wait();
        VmmError::Provision {
            state_dir: state_dir.to_path_buf(),
            message: match status {
                Ok(s) if !output.is_empty() => format!("{message} (swtpm {s}: {output})"),
                _ => message,
            },
        }
    };
    let up = wait_for_socket(&server, Duration::from_secs(30), || {
        matches!(child.try_wait(), Ok(Some(_)))
    }) && wait_for_socket(&ctrl, Duration::from_secs(30), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !up {
        return Err(failed(
            &mut child,
            "swtpm did not listen within 30 s".into(),
        ));
    }
    let result = UnixStream::connect(&server)
        .map_err(|e| format!("connecting to {}: {e}", server.display()))
        .and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(60)))
                .map_err(|e| e.to_string())?;
            crate::tpm::provision_ak(&mut s, certify).map_err(|e| e.to_string())
        });
    let public = match result {
        Ok(p) => p,
        Err(e) => return Err(failed(&mut child, e)),
    };
    // CMD_SHUTDOWN on the control channel: swtpm saves its state and exits.
    let shut = UnixStream::connect(&ctrl).and_then(|mut c| {
        c.write_all(&3u32.to_be_bytes())?;
        let mut res = [0u8; 4];
        c.read_exact(&mut res)?;
        Ok(u32::from_be_bytes(res))
    });
    match shut {
        Ok(0) => {}
        Ok(code) => {
            return Err(failed(
                &mut child,
                format!("CMD_SHUTDOWN returned {code:#x}"),
            ));
        }
        Err(e) => return Err(failed(&mut child, format!("CMD_SHUTDOWN: {e}"))),
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                return Err(failed(
                    &mut child,
                    "swtpm did not exit after CMD_SHUTDOWN".into(),
                ));
            }
        }
    }
    for s in [&server, &ctrl] {
        let _ = std::fs::remove_file(s);
    }
    Ok(public)
}

/// Where a swtpm channel listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// A unix socket; on the control channel, QEMU's `emulator` TPM backend.
    Unix(PathBuf),
    /// A TCP port on 127.0.0.1.
    Tcp(u16),
}

/// One `swtpm socket --tpm2` process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swtpm {
    /// The TPM state directory.
    pub state_dir: PathBuf,
    /// The control channel.
    pub ctrl: Channel,
    /// The TPM command channel; `None` when QEMU passes the commands over the control
    /// channel.
    pub server: Option<Channel>,
    /// Start up the TPM itself (`TPM2_Startup(CLEAR)`), as no firmware will: for tests that
    /// talk to the TPM directly.
    pub startup_clear: bool,
    /// Exit when the client (QEMU) disconnects.
    pub terminate: bool,
    /// `Some(pid file)`: detach (it then outlives its parent) and write its pid.
    pub daemon: Option<PathBuf>,
    /// swtpm's own log file (level 1).
    pub log: Option<PathBuf>,
}

impl Swtpm {
    /// The vTPM of a QEMU VM: control socket `socket` (for [`crate::qemu::tpm_args`]), ends
    /// with the VM.
    pub fn for_qemu(state_dir: impl Into<PathBuf>, socket: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            ctrl: Channel::Unix(socket.into()),
            server: None,
            startup_clear: false,
            terminate: true,
            daemon: None,
            log: None,
        }
    }

    /// A TPM for tests on TCP `port` (commands) and `port + 1` (control), already started up.
    pub fn on_tcp(state_dir: impl Into<PathBuf>, port: u16) -> Self {
        Self {
            state_dir: state_dir.into(),
            ctrl: Channel::Tcp(port.saturating_add(1)),
            server: Some(Channel::Tcp(port)),
            startup_clear: true,
            terminate: false,
            daemon: None,
            log: None,
        }
    }

    fn channel(c: &Channel) -> Result<String, VmmError> {
        Ok(match c {
            Channel::Unix(p) => format!("type=unixio,path={}", path("swtpm socket", p)?),
            Channel::Tcp(port) => format!("type=tcp,port={port},bindaddr=127.0.0.1"),
        })
    }

    /// swtpm's arguments; paths with commas are refused (swtpm's options are comma-separated
    /// `key=value` lists, so a comma would inject options).
    pub fn args(&self) -> Result<Vec<String>, VmmError> {
        let mut a: Vec<String> = vec!["socket".into(), "--tpm2".into()];
        if self.terminate {
            a.push("--terminate".into());
        }
        if let Some(pid) = &self.daemon {
            a.push("--daemon".into());
            a.push("--pid".into());
            a.push(format!("file={}", path("swtpm pid file", pid)?));
        }
        a.push("--tpmstate".into());
        a.push(format!(
            "dir={}",
            path("TPM state directory", &self.state_dir)?
        ));
        a.push("--ctrl".into());
        a.push(Self::channel(&self.ctrl)?);
        if let Some(server) = &self.server {
            a.push("--server".into());
            a.push(Self::channel(server)?);
        }
        if self.startup_clear {
            a.push("--flags".into());
            a.push("not-need-init,startup-clear".into());
        }
        if let Some(log) = &self.log {
            a.push("--log".into());
            a.push(format!("file={},level=1", path("swtpm log", log)?));
        }
        Ok(a)
    }

    /// `swtpm` with [`Self::args`] and stdin closed; the caller sets stdout/stderr and runs it.
    pub fn command(&self) -> Result<Command, VmmError> {
        let mut cmd = Command::new(SWTPM);
        cmd.args(self.args()?).stdin(Stdio::null());
        Ok(cmd)
    }
}

/// `p` for a comma-separated swtpm option.
fn path(what: &'static str, p: &Path) -> Result<String, VmmError> {
    let value = p.display().to_string();
    if value.contains(',') {
        return Err(VmmError::Argument {
            what,
            value,
            reason: "commas separate swtpm's option fields; use a path without commas",
        });
    }
    Ok(value)
}

/// Waits until `socket` exists (swtpm listens), up to `timeout`; gives up early when
/// `gone()` says the process has exited. Returns whether the socket appeared.
pub fn wait_for_socket(socket: &Path, timeout: Duration, mut gone: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !socket.exists() {
        if gone() || Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn manufacture_only_the_sha256_bank() {
        let d = Path::new("/n/tpm");
        assert_eq!(
            manufacture_args(d, Manufacture::default()).join(" "),
            "--tpm2 --pcr-banks sha256 --tpmstate /n/tpm"
        );
        assert_eq!(
            manufacture_args(
                d,
                Manufacture {
                    ek_certificates: true
                }
            )
            .join(" "),
            "--tpm2 --pcr-banks sha256 --tpmstate /n/tpm \
             --create-ek-cert --create-platform-cert --overwrite"
        );
    }

    #[test]
    fn command_lines() {
        let mut vm = Swtpm::for_qemu("/n/tpm", "/n/swtpm.sock");
        assert_eq!(
            vm.args().unwrap().join(" "),
            "socket --tpm2 --terminate --tpmstate dir=/n/tpm --ctrl type=unixio,path=/n/swtpm.sock"
        );
        vm.daemon = Some("/n/swtpm.pid".into());
        vm.log = Some("/n/swtpm.log".into());
        assert_eq!(
            vm.args().unwrap().join(" "),
            "socket --tpm2 --terminate --daemon --pid file=/n/swtpm.pid --tpmstate dir=/n/tpm \
             --ctrl type=unixio,path=/n/swtpm.sock --log file=/n/swtpm.log,level=1"
        );
        assert_eq!(
            Swtpm::on_tcp("/t", 4000).args().unwrap().join(" "),
            "socket --tpm2 --tpmstate dir=/t --ctrl type=tcp,port=4001,bindaddr=127.0.0.1 \
             --server type=tcp,port=4000,bindaddr=127.0.0.1 --flags not-need-init,startup-clear"
        );
    }

    #[test]
    fn commas_in_paths_are_refused() {
        let mut vm = Swtpm::for_qemu("/n/tpm", "/n/a,b.sock");
        assert!(matches!(
            vm.args(),
            Err(VmmError::Argument {
                what: "swtpm socket",
                ..
            })
        ));
        vm = Swtpm::for_qemu("/n/tpm,x=y", "/n/s.sock");
        assert!(matches!(vm.args(), Err(VmmError::Argument { .. })));
        vm = Swtpm::for_qemu("/n/tpm", "/n/s.sock");
        vm.log = Some("/n/l,og".into());
        assert!(vm.command().is_err());
    }

    /// Needs swtpm on PATH; skipped (failing under CI=true) without it.
    #[test]
    fn provisioning_stores_the_template_and_certificate() {
        use std::io::Read as _;
        if std::process::Command::new(SWTPM)
            .arg("--version")
            .output()
            .is_err()
        {
            constellation_testkit::skip_current("swtpm", "apt-get install swtpm");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let mut seen = Vec::new();
        let public = provision_ak(d.path(), |p: &[u8]| {
            seen = p.to_vec();
            Ok::<_, String>(vec![0x5a; 700])
        })
        .unwrap();
        assert_eq!(public, seen);
        // TPM2B_PUBLIC: the template with its 32-byte x and y filled in.
        assert_eq!(public.len(), 2 + 20 + 2 * (2 + 32));
        assert_eq!(&public[2..8], &crate::tpm::ak_template()[..6]);
        // The same seed gives the same key: provisioning again on the state (new indices
        // collide, so the TPM refuses NV_DefineSpace — but only after deriving nothing).
        let again = provision_ak(d.path(), |_: &[u8]| Ok::<_, String>(vec![1]));
        let msg = again.unwrap_err().to_string();
        assert!(msg.contains("NV_DefineSpace"), "{msg}");
        let mut f = std::fs::File::open(d.path().join("tpm2-00.permall")).unwrap();
        let mut state = Vec::new();
        f.read_to_end(&mut state).unwrap();
        assert!(
            state.windows(700).any(|w| w == [0x5a; 700]),
            "certificate not in saved NV"
        );
    }

    #[test]
    fn waiting_ends_when_the_process_is_gone() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("s");
        assert!(!wait_for_socket(&sock, Duration::from_secs(30), || true));
        std::fs::write(&sock, b"").unwrap();
        assert!(wait_for_socket(&sock, Duration::from_secs(30), || false));
    }
}
