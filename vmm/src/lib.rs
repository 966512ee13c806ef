//! How a node VM runs on the local machine, in one place for everyone who starts one: the
//! provider's QEMU backend, the image's VM harness and the attestation tests.
//!
//! - [`qemu`]: the QEMU command line of a node VM ([`qemu::NodeVm`]) — machine, OVMF, vTPM,
//!   the read-only image and the state disk, the host and private NICs, the node's metadata
//!   as fw_cfg files, serial console and QMP — built as a pure argument list, plus the
//!   fragments other guests of the harness share.
//! - [`swtpm`]: manufacturing a TPM (`swtpm_setup`, SHA-256 bank only) and the `swtpm socket`
//!   command line.
//!
//! - [`tpm`]: the TPM 2.0 commands that give a manufactured swtpm its attestation-key root
//!   (AK template and AK certificate in NV).
//!
//! Only `std` processes and files: no TPM or disk libraries, so the provider can use it.

pub mod qemu;
pub mod swtpm;
pub mod tpm;

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// The programs a local node VM needs and the Debian packages that provide them.
pub const PROGRAMS: [(&str, &str); 3] = [
    (qemu::QEMU, "qemu-system-x86"),
    (swtpm::SWTPM, "swtpm"),
    (swtpm::SWTPM_SETUP, "swtpm-tools"),
];

/// The Debian package of one of [`PROGRAMS`].
pub fn package_of(program: &str) -> &'static str {
    PROGRAMS
        .iter()
        .find(|(p, _)| *p == program)
        .map_or("qemu-system-x86 swtpm swtpm-tools", |(_, pkg)| pkg)
}

/// Errors of building or starting a VM's processes. Each says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmmError {
    /// A program could not be started.
    #[error(
        "{program} could not be run ({source}); install it (Debian: apt-get install {package})"
    )]
    MissingProgram {
        /// The program.
        program: &'static str,
        /// Its Debian package.
        package: &'static str,
        /// Why it could not be started.
        #[source]
        source: io::Error,
    },
    /// A program ran and failed.
    #[error("{program} exited with {status}: {output}")]
    Failed {
        /// The program.
        program: &'static str,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed (stdout and stderr).
        output: String,
    },
    /// A value cannot go into a QEMU option.
    #[error("{what} {value:?} cannot be passed to QEMU: {reason}")]
    Argument {
        /// What the value is.
        what: &'static str,
        /// The value.
        value: String,
        /// Why not.
        reason: &'static str,
    },
    /// Giving a TPM its attestation-key root failed.
    #[error("provisioning the attestation key of the TPM in {}: {message}", state_dir.display())]
    Provision {
        /// The TPM state directory.
        state_dir: PathBuf,
        /// What failed.
        message: String,
    },
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl VmmError {
    /// The error of spawning `program`.
    pub fn spawn(program: &'static str) -> impl FnOnce(io::Error) -> VmmError {
        move |source| VmmError::MissingProgram {
            program,
            package: package_of(program),
            source,
        }
    }
}
