//! The pinned Debian kernel: its image, version and a dependency-ordered set of modules.
//!
//! Debian's kernel package ships no `modules.dep` (depmod runs at install time), so the
//! dependencies are read from each module's `.modinfo` section (`depends=`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection};

use crate::debian::{Cache, DebianError, Lock, io_err};

/// Modules every guest and the node image load, in addition to their dependencies:
/// virtio transport, disk, network, console and entropy; device-mapper targets and the crypto
/// the state disk uses (LUKS2 aes-xts, dm-integrity hmac via authenc); AF_ALG, which
/// libcryptsetup uses for keyslot encryption; WireGuard; ext4.
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio_rng",
    "dm_mod",
    "dm_crypt",
    "dm_integrity",
    "xts",
    "authenc",
    "aesni_intel",
    "algif_skcipher",
    "algif_hash",
    "wireguard",
    // ext4 for the state disk's file system; its crc32c shash and a fast sha256 for
    // dm-integrity's hmac(sha256) (no module autoload without modprobe).
    "ext4",
    "crc32c_generic",
    "sha256_ssse3",
    // /sys/firmware/qemu_fw_cfg: instance metadata of the local QEMU backend.
    "qemu_fw_cfg",
];

/// Errors from locating the kernel or resolving modules.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// Fetching or extracting the package failed.
    #[error(transparent)]
    Debian(#[from] DebianError),
    /// The package does not have the expected layout.
    #[error("kernel package {package}: {reason}")]
    Layout {
        /// The package.
        package: String,
        /// What is missing.
        reason: String,
    },
    /// A module was asked for that the kernel does not ship (and is not built in).
    #[error("kernel module {0} is neither shipped as .ko nor built into the pinned kernel")]
    UnknownModule(String),
    /// A module file could not be parsed.
    #[error("kernel module {path}: {reason}")]
    BadModule {
        /// The module file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// An extracted kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The package pin it came from.
    pub pin: crate::debian::Pin,
    /// `uname -r` of the kernel, e.g. `6.1.0-50-amd64`.
    pub release: String,
    /// Path of the bzImage (`vmlinuz-…`).
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` in the extracted package.
    pub modules_dir: PathBuf,
}

/// A module to install: its path relative to `lib/modules/<release>/` and the file on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Canonical name (dashes replaced by underscores).
    pub name: String,
    /// Path relative to the modules directory, e.g. `kernel/drivers/md/dm-mod.ko`.
    pub rel_path: String,
    /// The file in the extracted package.
    pub host_path: PathBuf,
}

fn canon(name: &str) -> String {
    name.replace('-', "_")
}

impl Kernel {
    /// Fetches (or reuses from the cache) the pinned `linux-image-*` package of `lock`.
    pub fn pinned(cache: &Cache, lock: &Lock) -> Result<Self, KernelError> {
        let pin = lock
            .pins()
            .iter()
            .find(|p| p.name.starts_with("linux-image-"))
            .ok_or_else(|| DebianError::NotPinned("linux-image-*".into()))?
            .clone();
        let root = cache.extracted(&pin)?;
        let release = pin
            .name
            .strip_prefix("linux-image-")
            .unwrap_or(&pin.name)
            .to_owned();
        let vmlinuz = root.join(format!("boot/vmlinuz-{release}"));
        let modules_dir = root.join(format!("lib/modules/{release}"));
        for p in [&vmlinuz, &modules_dir] {
            if !p.exists() {
                return Err(KernelError::Layout {
                    package: pin.name.clone(),
                    reason: format!("{} is missing", p.display()),
                });
            }
        }
        Ok(Self {
            pin,
            release,
            vmlinuz,
            modules_dir,
        })
    }

    fn index(&self) -> Result<BTreeMap<String, String>, KernelError> {
        let mut map = BTreeMap::new();
        let mut stack = vec![self.modules_dir.join("kernel")];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
                let e = e.map_err(io_err("read directory", &dir))?;
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Some(stem) = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".ko"))
                {
                    let rel = p
                        .strip_prefix(&self.modules_dir)
                        .map_err(|_| KernelError::Layout {
                            package: self.pin.name.clone(),
                            reason: format!("{} outside modules dir", p.display()),
                        })?
                        .to_string_lossy()
                        .into_owned();
                    map.insert(canon(stem), rel);
                }
            }
        }
        Ok(map)
    }

    fn builtin(&self) -> Result<BTreeSet<String>, KernelError> {
        let p = self.modules_dir.join("modules.builtin");
        let text = fs::read_to_string(&p).map_err(io_err("read", &p))?;
        Ok(text
            .lines()
            .filter_map(|l| l.rsplit('/').next())
            .filter_map(|f| f.strip_suffix(".ko"))
            .map(canon)
            .collect())
    }

    /// Resolves `names` and all their dependencies into load order (dependencies first).
    /// Built-in modules are skipped.
    pub fn resolve(&self, names: &[&str]) -> Result<Vec<Module>, KernelError> {
        let index = self.index()?;
        let builtin = self.builtin()?;
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for n in names {
            self.visit(&canon(n), &index, &builtin, &mut done, &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        index: &BTreeMap<String, String>,
        builtin: &BTreeSet<String>,
        done: &mut BTreeSet<String>,
        order: &mut Vec<Module>,
    ) -> Result<(), KernelError> {
        if done.contains(name) {
            return Ok(());
        }
        done.insert(name.to_owned());
        let Some(rel) = index.get(name) else {
            if builtin.contains(name) {
                return Ok(());
            }
            return Err(KernelError::UnknownModule(name.to_owned()));
        };
        let host_path = self.modules_dir.join(rel);
        for dep in module_depends(&host_path)? {
            self.visit(&canon(&dep), index, builtin, done, order)?;
        }
        order.push(Module {
            name: name.to_owned(),
            rel_path: rel.clone(),
            host_path,
        });
        Ok(())
    }
}

/// Reads the `depends=` entry of a module's `.modinfo` section.
pub fn module_depends(path: &Path) -> Result<Vec<String>, KernelError> {
    let data = fs::read(path).map_err(io_err("read", path))?;
    let bad = |reason: String| KernelError::BadModule {
        path: path.to_path_buf(),
        reason,
    };
    let file = object::File::parse(&*data).map_err(|e| bad(format!("not an ELF object: {e}")))?;
    let section = file
        .section_by_name(".modinfo")
        .ok_or_else(|| bad("no .modinfo section".into()))?;
    let bytes = section
        .data()
        .map_err(|e| bad(format!("unreadable .modinfo: {e}")))?;
    Ok(parse_modinfo_depends(bytes))
}

/// Parses NUL-separated `key=value` entries and returns the `depends` list.
pub fn parse_modinfo_depends(modinfo: &[u8]) -> Vec<String> {
    modinfo
        .split(|b| *b == 0)
        .filter_map(|e| e.strip_prefix(b"depends="))
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_depends() {
        let info =
            b"license=GPL\0depends=udp_tunnel,ip6_udp_tunnel,curve25519-x86_64\0name=wireguard\0";
        assert_eq!(
            parse_modinfo_depends(info),
            ["udp_tunnel", "ip6_udp_tunnel", "curve25519-x86_64"]
        );
        assert!(parse_modinfo_depends(b"depends=\0").is_empty());
        assert!(parse_modinfo_depends(b"").is_empty());
    }
}
