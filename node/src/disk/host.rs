//! HOST-TIER ONLY: a state "disk" that is a plain directory.
//!
//! It exists so that host protocol tests can run several agents as processes without root,
//! device-mapper or block devices. It encrypts NOTHING and stores a SHA-256 digest of the key
//! next to the data to emulate "wrong key" failures. It is never used in the node image; the
//! image uses [`super::LuksStateDisk`].

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{BootState, DiskError, DiskKey, StateDisk};

const UUID_FILE: &str = "uuid";
const INITIALIZED_FILE: &str = "initialized-key-sha256";
const STATE_DIR: &str = "state";
/// Outside `state/`, like the LUKS2 header token it stands in for.
const ENDPOINTS_FILE: &str = "join-endpoints.json";

/// HOST-TIER ONLY state disk backed by a plain directory (no encryption; see module docs).
#[derive(Debug)]
pub struct HostDirectoryDisk {
    root: PathBuf,
    open: Mutex<bool>,
}

impl HostDirectoryDisk {
    /// Uses `root` (created if missing) as the emulated disk. Its `state/` subdirectory is what
    /// [`StateDisk::mount`] returns.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            open: Mutex::new(false),
        }
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DiskError + '_ {
        move |source| DiskError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn is_open(&self) -> bool {
        // A poisoned lock only means another thread panicked mid-update of a bool.
        *self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_open(&self, value: bool) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = value;
    }

    fn device(&self) -> String {
        self.root.display().to_string()
    }

    fn digest(key: &DiskKey) -> [u8; 32] {
        Sha256::digest(key.expose()).into()
    }
}

fn random_uuid() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    // RFC 4122 version 4, variant 1 — the same shape LUKS UUIDs have.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl StateDisk for HostDirectoryDisk {
    fn prepare(&self) -> Result<BootState, DiskError> {
        let marker = self.root.join(INITIALIZED_FILE);
        if marker.exists() {
            return Ok(BootState::Locked);
        }
        if self.is_open() {
            return Ok(BootState::Fresh);
        }
        // Uninitialised: "format" — new identity, empty state, like a fresh LUKS header.
        let state = self.root.join(STATE_DIR);
        if state.exists() {
            std::fs::remove_dir_all(&state).map_err(Self::io(&state))?;
        }
        std::fs::create_dir_all(&state).map_err(Self::io(&state))?;
        let endpoints = self.root.join(ENDPOINTS_FILE);
        if endpoints.exists() {
            std::fs::remove_file(&endpoints).map_err(Self::io(&endpoints))?;
        }
        let uuid_path = self.root.join(UUID_FILE);
        std::fs::write(&uuid_path, random_uuid()).map_err(Self::io(&uuid_path))?;
        self.set_open(true);
        Ok(BootState::Fresh)
    }

    fn uuid(&self) -> Result<String, DiskError> {
        let path = self.root.join(UUID_FILE);
        let uuid = std::fs::read_to_string(&path).map_err(Self::io(&path))?;
        Ok(uuid.trim().to_ascii_lowercase())
    }

    fn is_initialized(&self) -> Result<bool, DiskError> {
        Ok(self.root.join(INITIALIZED_FILE).exists())
    }

    fn rekey(&self, derived_key: &DiskKey) -> Result<(), DiskError> {
        if self.is_initialized()? || !self.is_open() {
            return Err(DiskError::InvalidState {
                device: self.device(),
                operation: "rekey",
                reason: "the disk is not freshly prepared; call prepare() on an uninitialised disk first, or unlock() an initialised one".into(),
            });
        }
        let path = self.root.join(INITIALIZED_FILE);
        std::fs::write(&path, hex::encode(Self::digest(derived_key))).map_err(Self::io(&path))
    }

    fn unlock(&self, derived_key: &DiskKey) -> Result<(), DiskError> {
        let path = self.root.join(INITIALIZED_FILE);
        let stored = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DiskError::InvalidState {
                    device: self.device(),
                    operation: "unlock",
                    reason: "the disk is not initialised; call prepare() and rekey() instead"
                        .into(),
                });
            }
            Err(e) => return Err(Self::io(&path)(e)),
        };
        let stored = hex::decode(stored.trim()).map_err(|e| DiskError::Token {
            device: self.device(),
            message: format!("{path:?} is not hex: {e}"),
        })?;
        if !bool::from(stored.ct_eq(&Self::digest(derived_key))) {
            return Err(DiskError::WrongKey {
                device: self.device(),
                uuid: self.uuid()?,
            });
        }
        self.set_open(true);
        Ok(())
    }

    fn mount(&self) -> Result<PathBuf, DiskError> {
        if !self.is_open() {
            return Err(DiskError::InvalidState {
                device: self.device(),
                operation: "mount",
                reason: "the disk is locked; call prepare() or unlock() first".into(),
            });
        }
        let state = self.root.join(STATE_DIR);
        std::fs::create_dir_all(&state).map_err(Self::io(&state))?;
        Ok(state)
    }

    fn close(&self) -> Result<(), DiskError> {
        self.set_open(false);
        Ok(())
    }

    fn remember_join_endpoints(&self, endpoints: &[String]) -> Result<(), DiskError> {
        let path = self.root.join(ENDPOINTS_FILE);
        let json = serde_json::to_vec(endpoints).map_err(|e| DiskError::Token {
            device: self.device(),
            message: e.to_string(),
        })?;
        std::fs::write(&path, json).map_err(Self::io(&path))
    }

    fn remembered_join_endpoints(&self) -> Result<Vec<String>, DiskError> {
        let path = self.root.join(ENDPOINTS_FILE);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| DiskError::Token {
                device: self.device(),
                message: format!("{}: {e}", path.display()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Self::io(&path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_disk_flow() {
        let dir = tempfile::tempdir().unwrap();
        let disk = HostDirectoryDisk::new(dir.path().join("disk"));
        assert_eq!(disk.prepare().unwrap(), BootState::Fresh);
        let uuid = disk.uuid().unwrap();
        assert_eq!(uuid.len(), 36);
        assert!(!disk.is_initialized().unwrap());
        let state = disk.mount().unwrap();
        std::fs::write(state.join("f"), b"data").unwrap();
        let key = DiskKey::from_slice(&[7u8; 32]);
        disk.rekey(&key).unwrap();
        assert!(disk.is_initialized().unwrap());
        assert!(disk.rekey(&key).is_err(), "second rekey must fail");
        disk.close().unwrap();

        // "Reboot": a new instance over the same directory.
        let disk = HostDirectoryDisk::new(dir.path().join("disk"));
        assert_eq!(disk.prepare().unwrap(), BootState::Locked);
        assert_eq!(disk.uuid().unwrap(), uuid);
        assert!(disk.mount().is_err(), "locked disk must not mount");
        let wrong = DiskKey::from_slice(&[8u8; 32]);
        assert!(matches!(
            disk.unlock(&wrong),
            Err(DiskError::WrongKey { .. })
        ));
        disk.unlock(&key).unwrap();
        let state = disk.mount().unwrap();
        assert_eq!(std::fs::read(state.join("f")).unwrap(), b"data");
    }

    #[test]
    fn remembered_endpoints_survive_reboot_not_reformat() {
        let dir = tempfile::tempdir().unwrap();
        let disk = HostDirectoryDisk::new(dir.path().join("disk"));
        disk.prepare().unwrap();
        assert!(disk.remembered_join_endpoints().unwrap().is_empty());
        let eps = vec!["10.0.0.3:30090".to_string()];
        disk.remember_join_endpoints(&eps).unwrap();
        disk.rekey(&DiskKey::from_slice(&[7u8; 32])).unwrap();
        let disk = HostDirectoryDisk::new(dir.path().join("disk"));
        assert_eq!(disk.prepare().unwrap(), BootState::Locked);
        assert_eq!(
            disk.remembered_join_endpoints().unwrap(),
            eps,
            "readable while locked"
        );
        // A disk formatted again (never initialised) starts without any.
        let other = HostDirectoryDisk::new(dir.path().join("other"));
        other.prepare().unwrap();
        other.remember_join_endpoints(&eps).unwrap();
        let other = HostDirectoryDisk::new(dir.path().join("other"));
        other.prepare().unwrap();
        assert!(other.remembered_join_endpoints().unwrap().is_empty());
    }

    #[test]
    fn disk_key_debug_is_redacted() {
        let key = DiskKey::from_slice(b"super-secret-key");
        let dbg = format!("{key:?}");
        assert!(!dbg.contains("super"), "{dbg}");
    }
}
