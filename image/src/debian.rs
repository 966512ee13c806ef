//! Pinned Debian packages: the lock list, a download cache shared between builds and test
//! processes, hash verification and extraction.
//!
//! The cache lives in `$CONSTELLATION_CACHE`, else `$XDG_CACHE_HOME/constellation-rs`, else
//! `$HOME/.cache/constellation-rs`. It is safe for concurrent use by several processes: every
//! entry is produced in a private temporary directory under an exclusive file lock and published
//! with an atomic rename, so readers never see a half-written file.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// The lock list compiled into the library, so that other crates' tests use the same pins.
pub const DEFAULT_LOCK: &str = include_str!("../debian.lock");

/// Errors from fetching, verifying or extracting pinned packages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DebianError {
    /// A line of the lock list is malformed.
    #[error("debian.lock line {line}: {reason}; expected `name version sha256`")]
    LockSyntax {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// The package is not pinned in the lock list.
    #[error("package {0} is not pinned in image/debian.lock; add `name version sha256` there")]
    NotPinned(String),
    /// The downloaded package does not have the pinned hash.
    #[error(
        "package {name} {version}: SHA-256 mismatch (pinned {expected}, got {actual}) in {path}; \
         the mirror served different bytes or the pin is wrong — do not use this package"
    )]
    HashMismatch {
        /// Package name.
        name: String,
        /// Package version.
        version: String,
        /// Pinned hash.
        expected: String,
        /// Hash of the file obtained.
        actual: String,
        /// Where the offending file is.
        path: PathBuf,
    },
    /// An external tool (apt-get, dpkg-deb) failed.
    #[error("{tool} failed for {what}: {detail}")]
    Tool {
        /// The program.
        tool: &'static str,
        /// The package or file it worked on.
        what: String,
        /// Its stderr or exit status.
        detail: String,
    },
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DebianError {
    let path = path.to_path_buf();
    move |source| DebianError::Io { op, path, source }
}

/// One pinned package.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pin {
    /// Debian package name.
    pub name: String,
    /// Exact Debian version (may contain an epoch such as `1:`).
    pub version: String,
    /// Lower-case hex SHA-256 of the `.deb`.
    pub sha256: String,
}

/// A parsed lock list.
#[derive(Debug, Clone)]
pub struct Lock {
    pins: Vec<Pin>,
}

impl Lock {
    /// Parses `name version sha256` lines; `#` starts a comment.
    pub fn parse(text: &str) -> Result<Self, DebianError> {
        let mut pins = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, version, sha] = fields.as_slice() else {
                return Err(DebianError::LockSyntax {
                    line: i + 1,
                    reason: format!("{} fields", fields.len()),
                });
            };
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(DebianError::LockSyntax {
                    line: i + 1,
                    reason: format!("`{sha}` is not a SHA-256 hex digest"),
                });
            }
            pins.push(Pin {
                name: (*name).to_owned(),
                version: (*version).to_owned(),
                sha256: sha.to_ascii_lowercase(),
            });
        }
        Ok(Self { pins })
    }

    /// The lock list shipped in `image/debian.lock`.
    pub fn default_lock() -> Self {
        // The embedded list is checked by a unit test, so this cannot fail at run time.
        Self::parse(DEFAULT_LOCK).expect("image/debian.lock is well-formed (unit-tested)")
    }

    /// Looks up a package by name.
    pub fn get(&self, name: &str) -> Result<&Pin, DebianError> {
        self.pins
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| DebianError::NotPinned(name.to_owned()))
    }

    /// Every pin, in file order.
    pub fn pins(&self) -> &[Pin] {
        &self.pins
    }
}

/// SHA-256 of a file, lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String, DebianError> {
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        h.update(buf.get(..n).unwrap_or_default());
    }
    Ok(hex::encode(h.finalize()))
}

/// The shared download and extraction cache.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// Holds an exclusive lock on a cache entry until dropped.
struct EntryLock(#[allow(dead_code)] File);

impl Cache {
    /// The cache at the default location (see the module documentation).
    pub fn from_env() -> Self {
        let root = if let Some(p) = std::env::var_os("CONSTELLATION_CACHE") {
            PathBuf::from(p)
        } else if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
            PathBuf::from(p).join("constellation-rs")
        } else if let Some(home) = std::env::var_os("HOME") {
            PathBuf::from(home).join(".cache/constellation-rs")
        } else {
            std::env::temp_dir().join("constellation-rs-cache")
        };
        Self { root }
    }

    /// A cache rooted at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn ensure(&self, sub: &str) -> Result<PathBuf, DebianError> {
        let d = self.root.join(sub);
        fs::create_dir_all(&d).map_err(io_err("create directory", &d))?;
        Ok(d)
    }

    fn lock(&self, key: &str) -> Result<EntryLock, DebianError> {
        let dir = self.ensure("locks")?;
        let p = dir.join(format!("{key}.lock"));
        let f = File::create(&p).map_err(io_err("create lock file", &p))?;
        f.lock().map_err(io_err("lock", &p))?;
        Ok(EntryLock(f))
    }

    /// A fresh private directory for producing an entry; it lives on the cache's file system so
    /// that the final rename is atomic.
    pub(crate) fn scratch(&self) -> Result<tempfile::TempDir, DebianError> {
        let d = self.ensure("tmp")?;
        tempfile::Builder::new()
            .prefix("work-")
            .tempdir_in(&d)
            .map_err(io_err("create temporary directory in", &d))
    }

    /// Returns the path of the pinned `.deb`, downloading it with apt if it is not cached.
    /// The hash is checked every time, also for cached files.
    pub fn deb(&self, pin: &Pin) -> Result<PathBuf, DebianError> {
        let debs = self.ensure("debs")?;
        let file = debs.join(format!(
            "{}_{}.deb",
            pin.name,
            pin.sha256.get(..16).unwrap_or(&pin.sha256)
        ));
        if !file.exists() {
            let _guard = self.lock(&format!("deb-{}", pin.sha256))?;
            if !file.exists() {
                let tmp = self.scratch()?;
                let out = Command::new("apt-get")
                    .args(["download", "-q", "-o", "APT::Sandbox::User=root"])
                    .arg(format!("{}={}", pin.name, pin.version))
                    .current_dir(tmp.path())
                    .output()
                    .map_err(io_err("run apt-get in", tmp.path()))?;
                if !out.status.success() {
                    return Err(DebianError::Tool {
                        tool: "apt-get download",
                        what: format!("{}={}", pin.name, pin.version),
                        detail: format!(
                            "{}: {} (is the version still on the mirror? run `apt-get update`)",
                            out.status,
                            String::from_utf8_lossy(&out.stderr).trim()
                        ),
                    });
                }
                let got = only_deb_in(tmp.path(), &pin.name)?;
                verify(pin, &got)?;
                fs::rename(&got, &file).map_err(io_err("rename into cache", &file))?;
                return Ok(file);
            }
        }
        verify(pin, &file)?;
        Ok(file)
    }

    /// Returns a directory holding the extracted contents of the pinned package.
    pub fn extracted(&self, pin: &Pin) -> Result<PathBuf, DebianError> {
        let root = self.ensure("extract")?;
        let dir = root.join(&pin.sha256);
        if dir.is_dir() {
            return Ok(dir);
        }
        let deb = self.deb(pin)?;
        let _guard = self.lock(&format!("extract-{}", pin.sha256))?;
        if dir.is_dir() {
            return Ok(dir);
        }
        let tmp = self.scratch()?;
        let target = tmp.path().join("root");
        let out = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&target)
            .output()
            .map_err(io_err("run dpkg-deb on", &deb))?;
        if !out.status.success() {
            return Err(DebianError::Tool {
                tool: "dpkg-deb -x",
                what: deb.display().to_string(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        fs::rename(&target, &dir).map_err(io_err("rename into cache", &dir))?;
        Ok(dir)
    }
}

fn only_deb_in(dir: &Path, name: &str) -> Result<PathBuf, DebianError> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        let e = e.map_err(io_err("read directory", dir))?;
        if e.path().extension().is_some_and(|x| x == "deb") {
            found.push(e.path());
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(DebianError::Tool {
            tool: "apt-get download",
            what: name.to_owned(),
            detail: format!("expected exactly one .deb, found {}", found.len()),
        }),
    }
}

/// Checks a `.deb` against its pin.
pub fn verify(pin: &Pin, path: &Path) -> Result<(), DebianError> {
    let actual = sha256_file(path)?;
    if actual != pin.sha256 {
        return Err(DebianError::HashMismatch {
            name: pin.name.clone(),
            version: pin.version.clone(),
            expected: pin.sha256.clone(),
            actual,
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_lock_parses() {
        let l = Lock::parse(DEFAULT_LOCK).unwrap();
        assert!(l.get("systemd-boot-efi").is_ok());
        assert!(l.pins().iter().any(|p| p.name.starts_with("linux-image-")));
    }

    #[test]
    fn lock_rejects_bad_lines() {
        assert!(matches!(
            Lock::parse("a 1"),
            Err(DebianError::LockSyntax { line: 1, .. })
        ));
        assert!(matches!(
            Lock::parse("# c\na 1 zz"),
            Err(DebianError::LockSyntax { line: 2, .. })
        ));
        assert!(matches!(
            Lock::parse("").unwrap().get("x"),
            Err(DebianError::NotPinned(_))
        ));
    }

    #[test]
    fn mismatching_deb_is_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.deb");
        fs::write(&f, b"not the pinned bytes").unwrap();
        let pin = Pin {
            name: "linux-image-test".into(),
            version: "1.0".into(),
            sha256: "00".repeat(32),
        };
        let err = verify(&pin, &f).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("linux-image-test"), "{msg}");
        assert!(msg.contains("mismatch"), "{msg}");
    }
}
