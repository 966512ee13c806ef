//! Helpers to put host executables and kernel modules into an initramfs [`Archive`].

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cpio::Archive;
use crate::kernel::Module;

/// Errors from collecting files for an initramfs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitramfsError {
    /// A host file could not be read.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `ldd` could not resolve the shared libraries of a binary.
    #[error("resolving shared libraries of {path} with ldd: {detail}")]
    Ldd {
        /// The binary.
        path: PathBuf,
        /// What went wrong (e.g. `libfoo.so.1 => not found`).
        detail: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, InitramfsError> {
    fs::read(path).map_err(|source| InitramfsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The shared libraries (including the dynamic loader) a host executable needs, as absolute
/// paths. Empty for static executables. The host is Debian 12 like the guest, so the host's
/// libraries are ABI-compatible with the guest kernel.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, InitramfsError> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| InitramfsError::Read {
            path: PathBuf::from("ldd"),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // ldd exits non-zero for static binaries ("not a dynamic executable").
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("statically linked") || err.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(InitramfsError::Ldd {
            path: binary.to_path_buf(),
            detail: format!("{}: {}", out.status, err.trim()),
        });
    }
    let mut libs = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("=> not found") {
            return Err(InitramfsError::Ldd {
                path: binary.to_path_buf(),
                detail: line.to_owned(),
            });
        }
        // Forms: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)",
        //        "/lib64/ld-linux-x86-64.so.2 (0x…)", "linux-vdso.so.1 (0x…)".
        let candidate = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = candidate.filter(|p| p.starts_with('/')) {
            libs.insert(PathBuf::from(p));
        }
    }
    Ok(libs.into_iter().collect())
}

/// Adds a host executable at `guest_path` plus its shared libraries at their host paths.
pub fn add_executable(
    archive: &mut Archive,
    host: &Path,
    guest_path: &str,
) -> Result<(), InitramfsError> {
    archive.file(guest_path, read(host)?, true);
    for lib in shared_libraries(host)? {
        let guest = lib.to_string_lossy().into_owned();
        if !archive.contains(&guest) {
            archive.file(&guest, read(&lib)?, true);
        }
    }
    Ok(())
}

/// Adds kernel modules under `lib/modules/<release>/` plus `modules.load`, the load order
/// (one relative path per line), which the guest's init follows.
pub fn add_modules(
    archive: &mut Archive,
    release: &str,
    modules: &[Module],
) -> Result<(), InitramfsError> {
    let base = format!("lib/modules/{release}");
    let mut order = String::new();
    for m in modules {
        archive.file(
            &format!("{base}/{}", m.rel_path),
            read(&m.host_path)?,
            false,
        );
        order.push_str(&m.rel_path);
        order.push('\n');
    }
    archive.file(&format!("{base}/modules.load"), order.into_bytes(), false);
    Ok(())
}
