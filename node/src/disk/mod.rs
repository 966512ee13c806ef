//! The node's encrypted state disk.
//!
//! The flow follows upstream Constellation's disk mapper:
//!
//! 1. At every boot the agent calls [`StateDisk::prepare`]. A disk that carries no LUKS2 header
//!    with the "initialised" token (a blank disk, or one whose first boot was interrupted before
//!    re-keying) is formatted as LUKS2 with a random boot-time passphrase, opened and given a
//!    fresh file system, so the node can work before it has its key ([`BootState::Fresh`]). A disk
//!    that is already initialised stays locked ([`BootState::Locked`]).
//! 2. The disk's key id is [`StateDisk::uuid`] (the lower-case LUKS UUID); the key is derived
//!    from the cluster's master secret (`HKDF(master, salt, "key-" + uuid)`), by this node on Init
//!    or by a control plane on join.
//! 3. Fresh disk: [`StateDisk::rekey`] adds the derived key, destroys the boot-time passphrase and
//!    records "initialised" in a LUKS2 token. Locked disk: [`StateDisk::unlock`] opens it with
//!    the derived key (rejoin or recovery).
//! 4. [`StateDisk::mount`] mounts the opened disk as the node's persistent state directory.
//!
//! Implementations: [`LuksStateDisk`] (the real one, libcryptsetup) and [`HostDirectoryDisk`]
//! (a plain directory for host-tier protocol tests only — no encryption at all).

mod background;
pub mod header_policy;
mod host;
#[cfg(target_os = "linux")]
mod luks;

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

pub use background::BackgroundPrepare;
pub use host::HostDirectoryDisk;
#[cfg(target_os = "linux")]
pub use luks::{LuksHeaderInfo, LuksOptions, LuksStateDisk};

/// The LUKS2 token type that records initialisation (JSON: `{"type": …, "keyslots": [],
/// "diskIsInitialized": bool}`), named like upstream Constellation's.
pub const TOKEN_TYPE: &str = "constellation-state-disk";
/// The LUKS2 token type holding the control-plane endpoints to rejoin through (JSON:
/// `{"type": …, "keyslots": [], "endpoints": ["ip:port", …]}`). Plain data in the header,
/// readable before unlock; see [`crate::services::endpoints`] for why that is safe.
pub const ENDPOINTS_TOKEN_TYPE: &str = "constellation-join-endpoints";

/// A disk encryption key (the derived key, or a boot-time random passphrase).
///
/// The bytes are zeroized on drop and never appear in `Debug` output.
#[derive(Clone)]
pub struct DiskKey(Zeroizing<Vec<u8>>);

impl DiskKey {
    /// Wraps key bytes (for example the 32 bytes of an HKDF derivation).
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Copies key bytes out of a borrowed slice.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }

    /// A fresh random key of `len` bytes from the operating system's CSPRNG.
    pub fn random(len: usize) -> Self {
        use rand::RngCore;
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The key bytes. Do not log or copy them into non-zeroizing memory.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for DiskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DiskKey(<{} bytes redacted>)", self.0.len())
    }
}

/// What [`StateDisk::prepare`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootState {
    /// The disk was (re)formatted with a random boot-time passphrase and is open with a fresh
    /// file system. Call [`StateDisk::rekey`] with the derived key once the node has it.
    Fresh,
    /// The disk is initialised (token present) and locked. Call [`StateDisk::unlock`] with the
    /// derived key (rejoin or recovery).
    Locked,
}

/// Errors of state disk operations. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    /// A libcryptsetup call failed.
    #[error("cryptsetup {operation} on {device} failed: {message}")]
    Cryptsetup {
        /// The operation that failed (e.g. "format", "activate").
        operation: &'static str,
        /// The block device or mapping concerned.
        device: String,
        /// libcryptsetup's error text.
        message: String,
    },
    /// The key was rejected: no key slot opens with it.
    #[error(
        "the key does not open state disk {device} (no key slot matches); check that it was derived for LUKS UUID {uuid}"
    )]
    WrongKey {
        /// The block device.
        device: String,
        /// The LUKS UUID the key should have been derived for.
        uuid: String,
    },
    /// The operation does not fit the disk's current state (e.g. rekey on a locked disk).
    #[error("state disk {device}: {operation} is not possible: {reason}")]
    InvalidState {
        /// The block device or directory.
        device: String,
        /// The operation attempted.
        operation: &'static str,
        /// Why it is not possible now and what to do instead.
        reason: String,
    },
    /// Creating the file system failed.
    #[error("creating the file system on {device} with {program} failed: {message}")]
    Mkfs {
        /// The device.
        device: String,
        /// The mkfs program run.
        program: String,
        /// Its exit status and standard error.
        message: String,
    },
    /// Mounting or unmounting failed.
    #[error("mounting {device} at {target} failed: {message}")]
    Mount {
        /// The device.
        device: String,
        /// The mount point.
        target: PathBuf,
        /// The system error.
        message: String,
    },
    /// The LUKS2 header breaks the header policy ([`header_policy`]): someone who controls the
    /// disk rewrote its unauthenticated metadata. Refused before any key is tried.
    #[error(
        "state disk {device}: the LUKS2 header was altered: it breaks this node's header policy \
         ({violations}); refusing to unlock it with any key. LUKS2 metadata is not authenticated, \
         so whoever controls the disk changed it: do not use this disk; recover the node from \
         the cluster with a new state disk"
    )]
    HeaderPolicy {
        /// The block device.
        device: String,
        /// Every field that broke the policy.
        violations: header_policy::HeaderPolicyError,
    },
    /// A LUKS2 token of ours (initialisation, remembered endpoints) is malformed.
    #[error("state disk {device}: malformed LUKS2 token: {message}")]
    Token {
        /// The device.
        device: String,
        /// What was wrong.
        message: String,
    },
    /// A file-system operation failed (host-tier directory, mount point creation, ...).
    #[error("state disk I/O on {path} failed")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The node's state disk (see the module documentation for the flow).
///
/// Methods block (libcryptsetup, mkfs, argon2id): call them from `spawn_blocking` in async code.
/// Implementations keep their own state behind interior mutability so that one instance can be
/// shared as `Arc<dyn StateDisk>`.
pub trait StateDisk: Send + Sync {
    /// Boot-time setup: formats an uninitialised disk with a random passphrase and opens it
    /// (returns [`BootState::Fresh`]), or finds an initialised, locked disk
    /// ([`BootState::Locked`]). Safe to call again; an already-open disk is reported as `Fresh`
    /// only while it still waits for [`StateDisk::rekey`].
    fn prepare(&self) -> Result<BootState, DiskError>;

    /// The lower-case LUKS UUID: the id the disk key is derived for (`"key-" + uuid`).
    fn uuid(&self) -> Result<String, DiskError>;

    /// Whether the disk is initialised (re-keyed to a derived key; recorded in a LUKS2 token).
    fn is_initialized(&self) -> Result<bool, DiskError>;

    /// Replaces the boot-time passphrase by `derived_key` and marks the disk initialised.
    /// Requires a disk opened by [`StateDisk::prepare`] in state [`BootState::Fresh`].
    fn rekey(&self, derived_key: &DiskKey) -> Result<(), DiskError>;

    /// Opens an initialised disk with `derived_key`. Returns [`DiskError::WrongKey`] when no key
    /// slot matches. Opening an already-open disk is a no-op if the key is right.
    fn unlock(&self, derived_key: &DiskKey) -> Result<(), DiskError>;

    /// Mounts the opened disk at its configured mount point (creating it) and returns that path,
    /// the node's persistent state directory. Idempotent.
    fn mount(&self) -> Result<PathBuf, DiskError>;

    /// Unmounts (if mounted) and closes the disk. Idempotent.
    fn close(&self) -> Result<(), DiskError>;

    /// Stores the control-plane endpoints to rejoin through in the disk's header (a LUKS2
    /// token), readable before unlock. Plain data: see [`crate::services::endpoints`].
    fn remember_join_endpoints(&self, endpoints: &[String]) -> Result<(), DiskError>;

    /// The endpoints stored by [`StateDisk::remember_join_endpoints`]; empty when none (also
    /// on a blank or freshly formatted disk).
    fn remembered_join_endpoints(&self) -> Result<Vec<String>, DiskError>;
}
