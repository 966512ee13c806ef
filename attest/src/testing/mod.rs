//! Test support (feature `test-support`): a swtpm process per test.
//!
//! Each [`Swtpm`] has its own state directory and its own pair of loopback ports, so tests run
//! in parallel; the process is killed and the directory removed on drop (also when a test
//! panics).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `swtpm socket --tpm2` on 127.0.0.1.
#[derive(Debug)]
pub struct Swtpm {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

/// How long swtpm may take to listen (generous: the machine may be loaded).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl Swtpm {
    /// Starts a fresh, already started-up (`TPM2_Startup(CLEAR)`) TPM.
    pub fn start() -> io::Result<Self> {
        Self::start_inner(false)
    }

    /// Like [`Swtpm::start`], but first provisions EK certificates with
    /// `swtpm_setup --create-ek-cert --create-platform-cert`.
    pub fn start_with_ek_cert() -> io::Result<Self> {
        Self::start_inner(true)
    }

    fn start_inner(ek_cert: bool) -> io::Result<Self> {
        let mut last_err = None;
        for _ in 0..10 {
            let dir = tempfile::Builder::new().prefix("swtpm-").tempdir()?;
            if ek_cert {
                setup_ek(dir.path())?;
            }
            let port = free_port_pair()?;
            match spawn(dir.path(), port) {
                Ok(child) => match wait_ready(child, port) {
                    Ok(child) => return Ok(Self { child, port, dir }),
                    Err(e) => last_err = Some(e),
                },
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("swtpm did not start")))
    }

    /// TCTI string for tss-esapi: `swtpm:host=127.0.0.1,port=P`.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The TPM command port (the control port is `port() + 1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TPM state directory.
    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn swtpm_missing(e: io::Error, prog: &str) -> io::Error {
    if e.kind() == io::ErrorKind::NotFound {
        io::Error::new(
            e.kind(),
            format!(
                "{prog} not found on PATH; install swtpm and swtpm-tools (scripts/install-deps.sh)"
            ),
        )
    } else {
        e
    }
}

fn setup_ek(dir: &Path) -> io::Result<()> {
    let out = Command::new("swtpm_setup")
        .arg("--tpm2")
        .arg("--tpmstate")
        .arg(dir)
        .args(["--create-ek-cert", "--create-platform-cert", "--overwrite"])
        .args(["--pcr-banks", "sha256"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| swtpm_missing(e, "swtpm_setup"))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "swtpm_setup failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// Two consecutive free loopback ports (server, ctrl). The OS may hand them out again before
/// swtpm binds; the caller retries then.
fn free_port_pair() -> io::Result<u16> {
    for _ in 0..100 {
        let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let p = a.local_addr()?.port();
        if p == u16::MAX {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, p + 1)).is_ok() {
            return Ok(p);
        }
    }
    Err(io::Error::other("no two consecutive free loopback ports"))
}

fn spawn(dir: &Path, port: u16) -> io::Result<Child> {
    let log = std::fs::File::create(dir.join("swtpm.log"))?;
    Command::new("swtpm")
        .args(["socket", "--tpm2"])
        .arg("--server")
        .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
        .arg("--tpmstate")
        .arg(format!("dir={}", dir.display()))
        .args(["--flags", "not-need-init,startup-clear"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| swtpm_missing(e, "swtpm"))
}

/// Waits until the control port accepts (probing the control channel leaves the single TPM
/// command connection free for the test).
fn wait_ready(mut child: Child, port: u16) -> io::Result<Child> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let ctrl = SocketAddr::from((Ipv4Addr::LOCALHOST, port + 1));
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "swtpm exited early ({status}); port {port} probably taken"
            )));
        }
        if TcpStream::connect_timeout(&ctrl, Duration::from_millis(200)).is_ok() {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "swtpm did not listen within 30 s",
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
