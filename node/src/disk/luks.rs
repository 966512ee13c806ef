//! The real state disk: LUKS2 through libcryptsetup (never by parsing `cryptsetup` output).
//!
//! Format: LUKS2, aes-xts-plain64 with a 512-bit key, 4096-byte sectors, dm-integrity with
//! hmac(sha256) (authenticated encryption: tampering by the host turns into I/O errors instead of
//! silently changed plaintext), argon2id key slots. A LUKS2 token of type
//! [`TOKEN_TYPE`] records whether the disk has been re-keyed to the derived key.
//!
//! Needs root (device-mapper), the dm-crypt and dm-integrity kernel modules, and an `mkfs.ext4`
//! (e2fsprogs' `mke2fs`) for the file system. Without udev (the node image has none), the
//! process should run with `DM_DISABLE_UDEV=1` so libdevmapper creates `/dev/mapper` nodes itself.

use std::fs::File;
use std::io::{ErrorKind, Read as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use libcryptsetup_rs::consts::flags::{CryptActivate, CryptDeactivate, CryptPbkdf, CryptWipe};
use libcryptsetup_rs::consts::vals::{
    CryptKdf, CryptStatusInfo, CryptWipePattern, EncryptionFormat,
};
use libcryptsetup_rs::{
    CryptDevice, CryptInit, CryptParamsLuks2, CryptPbkdfType, Either, LibcryptErr, TokenInput,
};

use super::header_policy::{self, DATA_OFFSET, METADATA_SIZE};
use super::{BootState, DiskError, DiskKey, ENDPOINTS_TOKEN_TYPE, StateDisk, TOKEN_TYPE};

/// Field of the initialisation token.
const TOKEN_FIELD: &str = "diskIsInitialized";
/// Field of the endpoints token.
const ENDPOINTS_FIELD: &str = "endpoints";
/// LUKS2 allows at most 32 tokens.
const MAX_TOKENS: u32 = 32;
/// AES-XTS with two 256-bit AES keys.
const XTS_KEY_BYTES: usize = 64;
/// hmac(sha256) key that dm-integrity gets from the same volume key.
const HMAC_KEY_BYTES: usize = 32;
const SECTOR_SIZE: u32 = 4096;
/// Boot-time random passphrase length (256 bits, like a derived key).
const BOOT_PASSPHRASE_BYTES: usize = 32;

/// Settings of a [`LuksStateDisk`]. [`LuksOptions::default`] is what the node image uses.
#[derive(Debug, Clone)]
pub struct LuksOptions {
    /// Device-mapper name of the opened disk (`/dev/mapper/<name>`).
    pub mapping_name: String,
    /// Where [`StateDisk::mount`] mounts the file system.
    pub mount_point: PathBuf,
    /// dm-integrity with hmac(sha256). Only the benchmark turns this off.
    pub integrity: bool,
    /// dm-integrity journal. On by default: without it a crash between a data write and its
    /// tag write leaves that sector unreadable (an I/O error, never wrong data).
    pub integrity_journal: bool,
    /// Let dm-crypt process I/O in the submitting context instead of its work queues
    /// (`no_read_workqueue`/`no_write_workqueue`): fewer context switches, higher throughput.
    pub bypass_workqueues: bool,
    /// argon2id memory per key-slot unlock, KiB. The keys are 256-bit random values, so a
    /// memory-hard KDF adds no security over their entropy; a fixed, modest cost keeps boot fast
    /// and predictable on small VMs (no benchmark run at format time).
    pub pbkdf_memory_kib: u32,
    /// argon2id passes (minimum 4 in libcryptsetup).
    pub pbkdf_iterations: u32,
    /// argon2id lanes.
    pub pbkdf_parallel: u32,
    /// The mkfs program to create the ext4 file system.
    pub mkfs_program: PathBuf,
}

impl Default for LuksOptions {
    fn default() -> Self {
        Self {
            mapping_name: "state".into(),
            mount_point: PathBuf::from("/var/lib/constellation"),
            integrity: true,
            integrity_journal: true,
            bypass_workqueues: true,
            pbkdf_memory_kib: 64 * 1024,
            pbkdf_iterations: 4,
            pbkdf_parallel: 1,
            mkfs_program: PathBuf::from("mkfs.ext4"),
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Present between `prepare` (fresh format) and `rekey`.
    boot_passphrase: Option<DiskKey>,
    mounted: bool,
}

/// LUKS2 state disk on a block device (see the module documentation).
pub struct LuksStateDisk {
    device: PathBuf,
    opts: LuksOptions,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for LuksStateDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LuksStateDisk")
            .field("device", &self.device)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// The facts the guest tests and the agent's status want about a LUKS2 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuksHeaderInfo {
    /// Cipher name, e.g. `aes`.
    pub cipher: String,
    /// Cipher mode, e.g. `xts-plain64`.
    pub cipher_mode: String,
    /// Encryption sector size in bytes.
    pub sector_size: u32,
    /// Volume key size in bytes (including the integrity key).
    pub volume_key_bytes: usize,
    /// Integrity algorithm (`hmac(sha256)`), if any.
    pub integrity: Option<String>,
    /// Active key slot numbers.
    pub active_keyslots: Vec<u32>,
    /// KDF type of each active key slot (`argon2id`).
    pub keyslot_kdfs: Vec<String>,
    /// Whether the initialisation token says "initialised".
    pub initialized: bool,
}

/// A private copy of the LUKS2 header area (metadata and keyslots: everything before the data
/// segment), read from the device once. It lives in an anonymous memory file that only this
/// process can reach, and libcryptsetup works on it as a detached header
/// (`/proc/self/fd/N`), so the header that is checked is the header that is used: the disk
/// can change meanwhile without effect.
struct HeaderCopy {
    file: File,
    path: PathBuf,
}

impl HeaderCopy {
    fn read(device: &Path) -> Result<Self, DiskError> {
        let io = |source| DiskError::Io {
            path: device.to_path_buf(),
            source,
        };
        let memfd = nix::sys::memfd::memfd_create(
            "luks2-header-copy",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(|e| io(std::io::Error::from(e)))?;
        let file = File::from(memfd);
        let mut src = File::open(device).map_err(io)?;
        let mut buf = vec![0u8; 1024 * 1024];
        let mut off = 0u64;
        while off < DATA_OFFSET {
            let n = src.read(&mut buf).map_err(io)?;
            if n == 0 {
                return Err(io(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("the device ends at {off} bytes, inside the LUKS2 header area"),
                )));
            }
            let n = n.min(usize::try_from(DATA_OFFSET - off).unwrap_or(usize::MAX));
            file.write_all_at(&buf[..n], off).map_err(io)?;
            off += n as u64;
        }
        use std::os::fd::AsRawFd as _;
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        Ok(Self { file, path })
    }

    /// Writes the copy back over the device's header area: the keyslots area first, then the
    /// two metadata copies, each synced. A crash before the metadata lands leaves the old
    /// metadata in force.
    fn write_back(&self, device: &Path) -> Result<(), DiskError> {
        let io = |source| DiskError::Io {
            path: device.to_path_buf(),
            source,
        };
        let dst = std::fs::OpenOptions::new()
            .write(true)
            .open(device)
            .map_err(io)?;
        let mut buf = vec![0u8; 1024 * 1024];
        let mut copy = |from: u64, to: u64| -> Result<(), DiskError> {
            let mut off = from;
            while off < to {
                let n = usize::try_from((to - off).min(buf.len() as u64)).unwrap_or(buf.len());
                self.file.read_exact_at(&mut buf[..n], off).map_err(io)?;
                dst.write_all_at(&buf[..n], off).map_err(io)?;
                off += n as u64;
            }
            dst.sync_all().map_err(io)
        };
        copy(2 * METADATA_SIZE, DATA_OFFSET)?;
        copy(0, 2 * METADATA_SIZE)
    }
}

/// A libcryptsetup context on a [`HeaderCopy`] whose header passed the policy. `cd` is
/// declared first so that it is dropped before the copy's file is closed.
struct Validated {
    cd: CryptDevice,
    copy: HeaderCopy,
}

impl LuksStateDisk {
    /// A state disk on `device` (e.g. `/dev/vdb`). Nothing is touched until
    /// [`StateDisk::prepare`].
    pub fn new(device: impl Into<PathBuf>, opts: LuksOptions) -> Self {
        Self {
            device: device.into(),
            opts,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The opened device path (`/dev/mapper/<name>`).
    pub fn mapper_path(&self) -> PathBuf {
        Path::new("/dev/mapper").join(&self.opts.mapping_name)
    }

    fn dev_name(&self) -> String {
        self.device.display().to_string()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Poisoning only means a panic elsewhere; the fields stay meaningful.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn err(&self, operation: &'static str) -> impl FnOnce(LibcryptErr) -> DiskError + '_ {
        move |e| DiskError::Cryptsetup {
            operation,
            device: self.dev_name(),
            message: e.to_string(),
        }
    }

    /// Opens a libcryptsetup context on the device and loads its LUKS2 header.
    /// `Ok(None)` means: the device carries no LUKS2 header.
    fn load(&self) -> Result<Option<CryptDevice>, DiskError> {
        let mut cd = CryptInit::init(&self.device).map_err(self.err("init"))?;
        match cd
            .context_handle()
            .load::<()>(Some(EncryptionFormat::Luks2), None)
        {
            Ok(()) => Ok(Some(cd)),
            // EINVAL: no (valid) LUKS2 header.
            Err(LibcryptErr::IOError(e)) if e.raw_os_error() == Some(libc_einval()) => Ok(None),
            Err(e) => Err(self.err("load header")(e)),
        }
    }

    fn load_required(&self, operation: &'static str) -> Result<CryptDevice, DiskError> {
        self.load()?.ok_or_else(|| DiskError::InvalidState {
            device: self.dev_name(),
            operation,
            reason: "the device has no LUKS2 header; call prepare() first".into(),
        })
    }

    /// Reads the header area once into a private copy, loads it with libcryptsetup (the
    /// device as data device) and checks what libcryptsetup loaded against the header policy.
    /// Every later step of the operation uses this context, never the device's header.
    fn load_validated(&self, operation: &'static str) -> Result<Validated, DiskError> {
        let copy = HeaderCopy::read(&self.device)?;
        let altered = |field: &str, problem: String| DiskError::HeaderPolicy {
            device: self.dev_name(),
            violations: header_policy::HeaderPolicyError {
                violations: vec![header_policy::Violation {
                    field: field.into(),
                    problem,
                }],
            },
        };
        let mut cd = CryptInit::init_with_data_device(Either::Right((&copy.path, &self.device)))
            .map_err(self.err("init on the header copy"))?;
        // The copy is in memory: a failure to load it is about its content, not about I/O.
        cd.context_handle()
            .load::<()>(Some(EncryptionFormat::Luks2), None)
            .map_err(|e| {
                altered(
                    "header",
                    format!("libcryptsetup does not load it as LUKS2 ({operation}: {e})"),
                )
            })?;
        let meta = cd
            .status_handle()
            .dump_json()
            .map_err(|e| altered("header", format!("its metadata cannot be read: {e}")))?;
        header_policy::check_header(&meta).map_err(|violations| DiskError::HeaderPolicy {
            device: self.dev_name(),
            violations,
        })?;
        Ok(Validated { cd, copy })
    }

    /// Finds the first token of type `ty`: `(token id, its JSON)`.
    fn find_token(cd: &mut CryptDevice, ty: &str) -> Option<(u32, serde_json::Value)> {
        (0..MAX_TOKENS).find_map(|id| {
            let json = cd.token_handle().json_get(id).ok()?;
            (json.get("type").and_then(|t| t.as_str()) == Some(ty)).then_some((id, json))
        })
    }

    /// Finds the initialisation token: `(token id, initialised)`.
    fn read_token(&self, cd: &mut CryptDevice) -> Result<Option<(u32, bool)>, DiskError> {
        if let Some((id, json)) = Self::find_token(cd, TOKEN_TYPE) {
            let init = json
                .get(TOKEN_FIELD)
                .and_then(|v| v.as_bool())
                .ok_or_else(|| DiskError::Token {
                    device: self.dev_name(),
                    message: format!("token {id} has no boolean {TOKEN_FIELD:?}"),
                })?;
            return Ok(Some((id, init)));
        }
        Ok(None)
    }

    fn write_token(&self, cd: &mut CryptDevice, initialized: bool) -> Result<(), DiskError> {
        let json =
            serde_json::json!({ "type": TOKEN_TYPE, "keyslots": [], TOKEN_FIELD: initialized });
        self.set_token(cd, &json, "write token")
    }

    /// Replaces the first token of `json`'s type, or adds one.
    fn set_token(
        &self,
        cd: &mut CryptDevice,
        json: &serde_json::Value,
        operation: &'static str,
    ) -> Result<(), DiskError> {
        let ty = json
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        let input = match Self::find_token(cd, ty) {
            Some((id, _)) => TokenInput::ReplaceToken(id, json),
            None => TokenInput::AddToken(json),
        };
        cd.token_handle()
            .json_set(input)
            .map_err(self.err(operation))?;
        Ok(())
    }

    fn is_active(&self) -> bool {
        matches!(
            libcryptsetup_rs::status(None, &self.opts.mapping_name),
            Ok(CryptStatusInfo::Active | CryptStatusInfo::Busy)
        )
    }

    fn activation_flags(&self) -> CryptActivate {
        let mut flags = CryptActivate::empty();
        if self.opts.bypass_workqueues {
            flags |= CryptActivate::NO_READ_WORKQUEUE | CryptActivate::NO_WRITE_WORKQUEUE;
        }
        if self.opts.integrity && !self.opts.integrity_journal {
            flags |= CryptActivate::NO_JOURNAL;
        }
        flags
    }

    fn activate(
        &self,
        cd: &mut CryptDevice,
        key: &DiskKey,
        flags: CryptActivate,
    ) -> Result<u32, DiskError> {
        let res = cd.activate_handle().activate_by_passphrase(
            Some(&self.opts.mapping_name),
            None,
            key.expose(),
            flags,
        );
        res.map_err(|e| self.map_key_err(cd, "activate", e))
    }

    fn map_key_err(&self, cd: &mut CryptDevice, op: &'static str, e: LibcryptErr) -> DiskError {
        match e {
            // libcryptsetup answers EPERM when no key slot accepts the passphrase.
            LibcryptErr::IOError(io) if io.kind() == ErrorKind::PermissionDenied => {
                DiskError::WrongKey {
                    device: self.dev_name(),
                    uuid: cd
                        .status_handle()
                        .get_uuid()
                        .map(|u| u.to_string())
                        .unwrap_or_else(|_| "<unknown>".into()),
                }
            }
            other => self.err(op)(other),
        }
    }

    fn deactivate(&self) -> Result<(), DiskError> {
        if !self.is_active() {
            return Ok(());
        }
        let mut cd = CryptInit::init_by_name_and_header(&self.opts.mapping_name, None)
            .map_err(self.err("init by name"))?;
        cd.activate_handle()
            .deactivate(&self.opts.mapping_name, CryptDeactivate::empty())
            .map_err(self.err("deactivate"))
    }

    /// The fixed argon2id cost of every key slot (no benchmark), refused when outside the
    /// header policy's bounds: a disk formatted with it could never be unlocked.
    fn pbkdf(&self) -> Result<CryptPbkdfType, DiskError> {
        let o = &self.opts;
        let within = header_policy::ARGON2_MEMORY_KIB.contains(&u64::from(o.pbkdf_memory_kib))
            && header_policy::ARGON2_TIME.contains(&u64::from(o.pbkdf_iterations))
            && header_policy::ARGON2_CPUS.contains(&u64::from(o.pbkdf_parallel));
        if !within {
            return Err(DiskError::InvalidState {
                device: self.dev_name(),
                operation: "format",
                reason: format!(
                    "argon2id memory {} KiB, {} passes, {} lanes is outside the header policy \
                     ({:?} KiB, {:?} passes, {:?} lanes)",
                    o.pbkdf_memory_kib,
                    o.pbkdf_iterations,
                    o.pbkdf_parallel,
                    header_policy::ARGON2_MEMORY_KIB,
                    header_policy::ARGON2_TIME,
                    header_policy::ARGON2_CPUS
                ),
            });
        }
        Ok(CryptPbkdfType {
            type_: CryptKdf::Argon2Id,
            hash: Some("sha256".into()),
            time_ms: 0,
            iterations: o.pbkdf_iterations,
            max_memory_kb: o.pbkdf_memory_kib,
            parallel_threads: o.pbkdf_parallel,
            flags: CryptPbkdf::NO_BENCHMARK,
        })
    }

    /// Formats the device and opens it with a new random passphrase; returns the passphrase.
    fn format_and_open(&self) -> Result<DiskKey, DiskError> {
        self.unmount_if_mounted()?;
        self.deactivate()?;
        let passphrase = DiskKey::random(BOOT_PASSPHRASE_BYTES);
        let mut cd = CryptInit::init(&self.device).map_err(self.err("init"))?;
        let params = CryptParamsLuks2 {
            pbkdf: Some(self.pbkdf()?),
            integrity: self.opts.integrity.then(|| "hmac(sha256)".to_string()),
            integrity_params: None,
            data_alignment: 0,
            data_device: None,
            sector_size: SECTOR_SIZE,
            label: None,
            subsystem: None,
        };
        let mut params_ref: libcryptsetup_rs::CryptParamsLuks2Ref<'_> = (&params)
            .try_into()
            .map_err(self.err("format parameters"))?;
        let key_bytes = XTS_KEY_BYTES
            + if self.opts.integrity {
                HMAC_KEY_BYTES
            } else {
                0
            };
        cd.context_handle()
            .format::<libcryptsetup_rs::CryptParamsLuks2Ref<'_>>(
                EncryptionFormat::Luks2,
                ("aes", "xts-plain64"),
                None,
                Either::Right(key_bytes),
                Some(&mut params_ref),
            )
            .map_err(self.err("format"))?;
        cd.keyslot_handle()
            .add_by_key(
                None,
                None,
                passphrase.expose(),
                libcryptsetup_rs::consts::flags::CryptVolumeKey::empty(),
            )
            .map_err(self.err("add boot key slot"))?;
        self.write_token(&mut cd, false)?;

        if self.opts.integrity {
            // dm-integrity tags of never-written sectors do not verify: reads (by mkfs, by the
            // kernel's partition scan) would fail. Write every sector once, through a
            // journal-less private mapping — the journal only guards against crashes, and a
            // crash here leaves the token "not initialised", so the next boot formats again.
            self.activate(
                &mut cd,
                &passphrase,
                CryptActivate::NO_JOURNAL | CryptActivate::PRIVATE,
            )?;
            let wipe = cd.wipe_handle().wipe::<()>(
                &self.mapper_path(),
                CryptWipePattern::Zero,
                0,
                0,
                1024 * 1024,
                CryptWipe::empty(),
                None,
                None,
            );
            let deact = cd
                .activate_handle()
                .deactivate(&self.opts.mapping_name, CryptDeactivate::empty())
                .map_err(self.err("deactivate after wipe"));
            wipe.map_err(self.err("wipe integrity tags"))?;
            deact?;
        }
        self.activate(&mut cd, &passphrase, self.activation_flags())?;
        self.mkfs()?;
        Ok(passphrase)
    }

    fn mkfs(&self) -> Result<(), DiskError> {
        let dev = self.mapper_path();
        let out = std::process::Command::new(&self.opts.mkfs_program)
            // -F: the mapping is a fresh device; nodiscard: dm-integrity rejects discards.
            .args(["-q", "-F", "-E", "nodiscard", "-b", "4096"])
            .arg(&dev)
            .output()
            .map_err(|e| DiskError::Mkfs {
                device: dev.display().to_string(),
                program: self.opts.mkfs_program.display().to_string(),
                message: format!("could not run it: {e} (is e2fsprogs installed?)"),
            })?;
        if !out.status.success() {
            return Err(DiskError::Mkfs {
                device: dev.display().to_string(),
                program: self.opts.mkfs_program.display().to_string(),
                message: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(())
    }

    fn unmount_if_mounted(&self) -> Result<(), DiskError> {
        let mut inner = self.inner();
        if inner.mounted || is_mount_point(&self.opts.mount_point) {
            nix::mount::umount(&self.opts.mount_point).map_err(|e| DiskError::Mount {
                device: self.mapper_path().display().to_string(),
                target: self.opts.mount_point.clone(),
                message: format!("unmount: {e}"),
            })?;
            inner.mounted = false;
        }
        Ok(())
    }

    /// Reads the header facts (cipher, sector size, integrity, key slots, token) from the
    /// LUKS2 JSON metadata. (libcryptsetup-rs' `get_integrity_info` dereferences the NULL
    /// journal fields of a LUKS2 integrity segment, so the JSON is the robust source.)
    pub fn header_info(&self) -> Result<LuksHeaderInfo, DiskError> {
        let mut cd = self.load_required("header_info")?;
        let cipher = cd
            .status_handle()
            .get_cipher()
            .map_err(self.err("get cipher"))?;
        let cipher_mode = cd
            .status_handle()
            .get_cipher_mode()
            .map_err(self.err("get mode"))?;
        let meta = cd
            .status_handle()
            .dump_json()
            .map_err(self.err("dump metadata"))?;
        let bad = |m: &str| DiskError::Token {
            device: self.dev_name(),
            message: format!("LUKS2 metadata: {m}"),
        };
        let segment = meta
            .get("segments")
            .and_then(|s| s.as_object())
            .and_then(|s| s.values().next())
            .ok_or_else(|| bad("no segment"))?;
        let sector_size = segment
            .get("sector_size")
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| bad("segment without sector_size"))?;
        let integrity = segment
            .get("integrity")
            .and_then(|i| i.get("type"))
            .and_then(|t| t.as_str())
            .map(str::to_owned);
        let mut active_keyslots = Vec::new();
        let mut keyslot_kdfs = Vec::new();
        let mut volume_key_bytes = 0;
        if let Some(slots) = meta.get("keyslots").and_then(|k| k.as_object()) {
            let mut sorted: Vec<(u32, &serde_json::Value)> = slots
                .iter()
                .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
                .collect();
            sorted.sort_by_key(|(k, _)| *k);
            for (id, slot) in sorted {
                active_keyslots.push(id);
                keyslot_kdfs.push(
                    slot.get("kdf")
                        .and_then(|k| k.get("type"))
                        .and_then(|t| t.as_str())
                        .unwrap_or("?")
                        .to_string(),
                );
                volume_key_bytes = slot
                    .get("key_size")
                    .and_then(|v| v.as_u64())
                    .and_then(|v| usize::try_from(v).ok())
                    .unwrap_or(0);
            }
        }
        let initialized = self.read_token(&mut cd)?.is_some_and(|(_, i)| i);
        Ok(LuksHeaderInfo {
            cipher,
            cipher_mode,
            sector_size,
            volume_key_bytes,
            integrity,
            active_keyslots,
            keyslot_kdfs,
            initialized,
        })
    }
}

fn libc_einval() -> i32 {
    nix::errno::Errno::EINVAL as i32
}

/// Whether `path` is a mount point, from /proc/self/mountinfo (field 5).
fn is_mount_point(path: &Path) -> bool {
    let Ok(canon) = std::fs::canonicalize(path) else {
        return false;
    };
    let mut s = String::new();
    let Ok(mut f) = std::fs::File::open("/proc/self/mountinfo") else {
        return false;
    };
    if f.read_to_string(&mut s).is_err() {
        return false;
    }
    let target = canon.to_string_lossy();
    s.lines()
        .any(|l| l.split(' ').nth(4) == Some(target.as_ref()))
}

impl StateDisk for LuksStateDisk {
    fn prepare(&self) -> Result<BootState, DiskError> {
        if let Some(mut cd) = self.load()? {
            match self.read_token(&mut cd)? {
                Some((_, true)) => return Ok(BootState::Locked),
                _ if self.inner().boot_passphrase.is_some() && self.is_active() => {
                    return Ok(BootState::Fresh);
                }
                // Not initialised: an earlier boot stopped before re-keying, and its random
                // passphrase died with it. Nothing on the disk can be recovered: format again.
                _ => {}
            }
        }
        let passphrase = self.format_and_open()?;
        self.inner().boot_passphrase = Some(passphrase);
        Ok(BootState::Fresh)
    }

    fn uuid(&self) -> Result<String, DiskError> {
        let mut cd = self.load_required("uuid")?;
        let uuid = cd
            .status_handle()
            .get_uuid()
            .map_err(self.err("get uuid"))?;
        // `Uuid`'s Display is the lower-case hyphenated form upstream derives keys for.
        Ok(uuid.hyphenated().to_string().to_ascii_lowercase())
    }

    fn is_initialized(&self) -> Result<bool, DiskError> {
        match self.load()? {
            Some(mut cd) => Ok(self.read_token(&mut cd)?.is_some_and(|(_, i)| i)),
            None => Ok(false),
        }
    }

    fn rekey(&self, derived_key: &DiskKey) -> Result<(), DiskError> {
        let mut inner = self.inner();
        let Some(boot) = inner.boot_passphrase.as_ref() else {
            return Err(DiskError::InvalidState {
                device: self.dev_name(),
                operation: "rekey",
                reason: "no boot-time passphrase: the disk was not freshly formatted by prepare() \
                         in this boot (an initialised disk is opened with unlock())"
                    .into(),
            });
        };
        // All changes go to a validated private copy of the header, which is then written
        // back whole: whatever the disk held meanwhile, the header written is one the policy
        // accepts, and its keyslot opened with this boot's secret passphrase.
        let Validated { mut cd, copy } = self.load_validated("rekey")?;
        // Find the boot key's slot by testing the passphrase without activating anything.
        let res = cd.activate_handle().activate_by_passphrase(
            None,
            None,
            boot.expose(),
            CryptActivate::empty(),
        );
        let boot_slot = res.map_err(|e| self.map_key_err(&mut cd, "verify boot key", e))?;
        // A fresh context would benchmark its own argon2id cost; the derived slot gets the
        // same fixed cost as the boot slot.
        cd.settings_handle()
            .set_pbkdf_type(&self.pbkdf()?)
            .map_err(self.err("set key slot cost"))?;
        cd.keyslot_handle()
            .add_by_passphrase(None, boot.expose(), derived_key.expose())
            .map_err(self.err("add derived key slot"))?;
        // The header policy allows one keyslot, so the boot slot goes before the disk counts
        // as initialised. A crash before the copy is written back leaves the disk
        // uninitialised: the next boot formats it again, as for any interrupted first boot.
        cd.keyslot_handle()
            .destroy(boot_slot)
            .map_err(self.err("destroy boot key slot"))?;
        self.write_token(&mut cd, true)?;
        drop(cd);
        copy.write_back(&self.device)?;
        inner.boot_passphrase = None;
        Ok(())
    }

    fn unlock(&self, derived_key: &DiskKey) -> Result<(), DiskError> {
        // Checked before any key is tried, and activated from the very copy that was checked.
        let Validated { mut cd, copy } = self.load_validated("unlock")?;
        if !self.read_token(&mut cd)?.is_some_and(|(_, i)| i) {
            return Err(DiskError::InvalidState {
                device: self.dev_name(),
                operation: "unlock",
                reason: "the disk is not initialised; call prepare() (it formats) and rekey()"
                    .into(),
            });
        }
        if self.is_active() {
            // Already open: only check the key, so a wrong key is still reported.
            let res = cd.activate_handle().activate_by_passphrase(
                None,
                None,
                derived_key.expose(),
                CryptActivate::empty(),
            );
            res.map_err(|e| self.map_key_err(&mut cd, "verify key", e))?;
            return Ok(());
        }
        self.activate(&mut cd, derived_key, self.activation_flags())?;
        drop(cd);
        drop(copy);
        Ok(())
    }

    fn mount(&self) -> Result<PathBuf, DiskError> {
        let target = self.opts.mount_point.clone();
        if !self.is_active() {
            return Err(DiskError::InvalidState {
                device: self.dev_name(),
                operation: "mount",
                reason: "the disk is not open; call prepare() or unlock() first".into(),
            });
        }
        let mut inner = self.inner();
        if inner.mounted || is_mount_point(&target) {
            inner.mounted = true;
            return Ok(target);
        }
        std::fs::create_dir_all(&target).map_err(|source| DiskError::Io {
            path: target.clone(),
            source,
        })?;
        let dev = self.mapper_path();
        use nix::mount::MsFlags;
        nix::mount::mount(
            Some(&dev),
            &target,
            Some("ext4"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| DiskError::Mount {
            device: dev.display().to_string(),
            target: target.clone(),
            message: e.to_string(),
        })?;
        inner.mounted = true;
        Ok(target)
    }

    fn close(&self) -> Result<(), DiskError> {
        self.unmount_if_mounted()?;
        self.deactivate()
    }

    fn remember_join_endpoints(&self, endpoints: &[String]) -> Result<(), DiskError> {
        let _guard = self.inner();
        let mut cd = self.load_required("remember join endpoints")?;
        let json = serde_json::json!({
            "type": ENDPOINTS_TOKEN_TYPE,
            "keyslots": [],
            ENDPOINTS_FIELD: endpoints,
        });
        self.set_token(&mut cd, &json, "write endpoints token")
    }

    fn remembered_join_endpoints(&self) -> Result<Vec<String>, DiskError> {
        let _guard = self.inner();
        let Some(mut cd) = self.load()? else {
            return Ok(Vec::new());
        };
        let Some((id, json)) = Self::find_token(&mut cd, ENDPOINTS_TOKEN_TYPE) else {
            return Ok(Vec::new());
        };
        json.get(ENDPOINTS_FIELD)
            .and_then(|v| v.as_array())
            .and_then(|a| a.iter().map(|e| e.as_str().map(str::to_string)).collect())
            .ok_or_else(|| DiskError::Token {
                device: self.dev_name(),
                message: format!(
                    "token {id} ({ENDPOINTS_TOKEN_TYPE}) has no string array {ENDPOINTS_FIELD:?}"
                ),
            })
    }
}
