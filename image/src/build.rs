//! Assembles the node image: initramfs, UKI, GPT disk, manifest and predicted measurements.
//!
//! Every input is either a pinned Debian package (kernel, systemd stub, the shared libraries of
//! the agent, each mapped to its package and verified by hash) or a binary built from this
//! repository (the node agent and `/init`), recorded with its SHA-256 in `manifest.json`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::cpio::Archive;
use crate::debian::{Cache, DebianError, Lock, Pin, io_err};
use crate::disk::{self, DiskInfo};
use crate::initramfs;
use crate::kernel::{DEFAULT_MODULES, Kernel, KernelError};
use crate::kubernetes::{self, KubernetesError};
use crate::measure::{self, Measurements};
use crate::pe::{self, PeError};

/// The default kernel command line of the node image. `no_timer_check`: on a busy host (TCG,
/// overcommitted vCPUs) the kernel's IO-APIC timer check can fail and panic at boot; the check
/// is meaningless for the virtual platforms the image runs on. `cryptomgr.notests`: skips the
/// crypto known-answer self-tests run when algorithms register (~0.6 s of QEMU CPU under TCG,
/// see docs/image.md); they catch broken implementations, not attackers, and a kernel in FIPS
/// mode runs them regardless.
pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 loglevel=4 panic=-1 no_timer_check cryptomgr.notests";

/// zstd level of the initramfs (the kernel decompresses it; `CONFIG_RD_ZSTD`).
pub const INITRD_ZSTD_LEVEL: i32 = 10;

/// Libraries that are opened at run time with dlopen (so ldd cannot see them) and that the
/// agent needs: the TPM device TCTI of tpm2-tss.
pub const DLOPENED_LIBS: &[&str] = &["/usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0"];

/// Errors from building the image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A pinned package problem (download, hash mismatch, not pinned).
    #[error(transparent)]
    Debian(#[from] DebianError),
    /// The kernel package or its modules.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Collecting executables.
    #[error(transparent)]
    Initramfs(#[from] initramfs::InitramfsError),
    /// PE assembly.
    #[error("assembling the UKI from the systemd stub: {0}")]
    Pe(#[from] PeError),
    /// The measurement prediction.
    #[error(transparent)]
    Measure(#[from] measure::MeasureError),
    /// The disk.
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
    /// Kubernetes binaries.
    #[error(transparent)]
    Kubernetes(#[from] KubernetesError),
    /// A shared library comes from a package that is not pinned.
    #[error(
        "{lib} (needed by {binary}) belongs to Debian package {package} {version}, which is not \
         pinned in image/debian.lock; run `constellation-image pin {package}` and add the line"
    )]
    UnpinnedLibrary {
        /// The library path.
        lib: String,
        /// The binary needing it.
        binary: String,
        /// Its package.
        package: String,
        /// The installed version.
        version: String,
    },
    /// A host query failed.
    #[error("{0}")]
    Host(String),
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildConfig {
    /// The node agent binary (release build).
    pub agent: PathBuf,
    /// The `/init` binary (`constellation-init`).
    pub init: PathBuf,
    /// Output directory (created).
    pub out_dir: PathBuf,
    /// Timestamp for every archive entry (SOURCE_DATE_EPOCH).
    pub source_date_epoch: u32,
    /// Kernel command line.
    pub cmdline: String,
    /// Kubernetes version to include, if any.
    pub kubernetes: Option<String>,
    /// A mirror for the Kubernetes downloads: `https://HOST/PATH` is fetched from
    /// `<mirror>/HOST/PATH` (see [`kubernetes::KPin::fetch_url`]).
    pub kubernetes_mirror: Option<String>,
    /// The Kubernetes pins (default: the embedded `image/kubernetes.lock`).
    pub kubernetes_lock: kubernetes::KubernetesLock,
    /// Extra files for the initramfs (path, contents) — used by tests to vary the initramfs.
    pub extra_files: Vec<(String, Vec<u8>)>,
    /// Package cache.
    pub cache: Cache,
    /// Package pins.
    pub lock: Lock,
}

impl BuildConfig {
    /// A configuration with the defaults (cache from the environment, embedded lock list,
    /// [`DEFAULT_CMDLINE`], no Kubernetes).
    pub fn new(agent: PathBuf, init: PathBuf, out_dir: PathBuf) -> Self {
        Self {
            agent,
            init,
            out_dir,
            source_date_epoch: 0,
            cmdline: DEFAULT_CMDLINE.to_owned(),
            kubernetes: None,
            kubernetes_mirror: None,
            kubernetes_lock: kubernetes::KubernetesLock::default_lock(),
            extra_files: Vec::new(),
            cache: Cache::from_env(),
            lock: Lock::default_lock(),
        }
    }
}

/// One input of the image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Input {
    /// What it is (`debian`, `agent`, `init`, `kubernetes`).
    pub kind: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// SHA-256.
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Image version (the os-release IMAGE_VERSION); the provider's image data source shows it.
    pub version: String,
    /// SHA-256 of constellation.efi.
    pub uki_sha256: String,
    /// SHA-256 of disk.raw.
    pub disk_sha256: String,
    /// SHA-256 of the initramfs inside the UKI (zstd-compressed cpio, as measured).
    pub initramfs_sha256: String,
    /// Sizes in bytes.
    pub uki_size: u64,
    /// Disk layout.
    pub disk: DiskInfo,
    /// Kernel release.
    pub kernel_release: String,
    /// Kernel command line in the UKI.
    pub cmdline: String,
    /// Kernel modules in load order.
    pub modules: Vec<String>,
    /// SOURCE_DATE_EPOCH used.
    pub source_date_epoch: u32,
    /// Kubernetes version, or `null`.
    pub kubernetes: Option<String>,
    /// Human-readable note on Kubernetes.
    pub kubernetes_note: String,
    /// The Kubernetes components installed (name, version, pinned SHA-256, URL, guest files);
    /// empty without Kubernetes.
    pub kubernetes_components: Vec<kubernetes::Component>,
    /// Every input.
    pub inputs: Vec<Input>,
}

/// Paths of the results.
#[derive(Debug, Clone)]
pub struct BuildOutput {
    /// constellation.efi.
    pub uki: PathBuf,
    /// disk.raw.
    pub disk: PathBuf,
    /// measurements.json.
    pub measurements_json: PathBuf,
    /// manifest.json.
    pub manifest_json: PathBuf,
    /// The manifest.
    pub manifest: Manifest,
    /// The predicted measurements.
    pub measurements: Measurements,
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn host(cmd: &mut Command) -> Result<String, BuildError> {
    let out = cmd
        .output()
        .map_err(|e| BuildError::Host(format!("running {cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(BuildError::Host(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The Debian package (without architecture) that owns a host file.
fn owning_package(path: &str) -> Result<String, BuildError> {
    let mut candidates = vec![path.to_owned()];
    if let Some(rest) = path.strip_prefix("/usr") {
        candidates.push(rest.to_owned());
    } else {
        candidates.push(format!("/usr{path}"));
    }
    for c in &candidates {
        if let Ok(out) = host(Command::new("dpkg").args(["-S", c]))
            && let Some((pkg, _)) = out.lines().next().and_then(|l| l.split_once(':'))
        {
            return Ok(pkg.to_owned());
        }
    }
    Err(BuildError::Host(format!(
        "no Debian package owns {path}; only files from pinned packages go into the image"
    )))
}

/// Finds `path` inside an extracted package, following symlinks inside that tree.
fn file_in_package(root: &Path, path: &str) -> Option<PathBuf> {
    let mut candidates = vec![path.to_owned()];
    if let Some(rest) = path.strip_prefix("/usr") {
        candidates.push(rest.to_owned());
    } else {
        candidates.push(format!("/usr{path}"));
    }
    for c in candidates {
        let mut p = root.join(c.trim_start_matches('/'));
        for _ in 0..8 {
            match fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {
                    let target = fs::read_link(&p).ok()?;
                    p = if target.is_absolute() {
                        root.join(target.strip_prefix("/").ok()?)
                    } else {
                        p.parent()?.join(target)
                    };
                }
                Ok(m) if m.is_file() => return Some(p),
                _ => break,
            }
        }
    }
    None
}

/// Adds `binary` and its libraries (taken from the pinned packages) to the archive.
fn add_binary_from_pins(
    cfg: &BuildConfig,
    archive: &mut Archive,
    binary: &Path,
    guest_path: &str,
    extra_libs: &[&str],
    used: &mut Vec<Pin>,
) -> Result<(), BuildError> {
    archive.file(
        guest_path,
        fs::read(binary).map_err(io_err("read", binary))?,
        true,
    );
    let mut libs: Vec<String> = initramfs::shared_libraries(binary)?
        .into_iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    libs.extend(extra_libs.iter().map(|s| (*s).to_owned()));
    for lib in libs {
        if archive.contains(&lib) {
            continue;
        }
        let package = owning_package(&lib)?;
        let pin = match cfg.lock.get(&package) {
            Ok(p) => p.clone(),
            Err(_) => {
                let version =
                    host(Command::new("dpkg-query").args(["-W", "-f=${Version}", &package]))
                        .unwrap_or_default();
                return Err(BuildError::UnpinnedLibrary {
                    lib,
                    binary: binary.display().to_string(),
                    package,
                    version,
                });
            }
        };
        let root = cfg.cache.extracted(&pin)?;
        let file = file_in_package(&root, &lib).ok_or_else(|| {
            BuildError::Host(format!(
                "{lib} is not in pinned package {} {}; the host's library comes from a different \
                 version — update image/debian.lock",
                pin.name, pin.version
            ))
        })?;
        archive.file(&lib, fs::read(&file).map_err(io_err("read", &file))?, true);
        if !used.contains(&pin) {
            used.push(pin);
        }
    }
    Ok(())
}

fn os_release() -> String {
    let v = env!("CARGO_PKG_VERSION");
    format!(
        "NAME=\"Constellation\"\nID=constellation\nPRETTY_NAME=\"Constellation node image {v}\"\n\
         VERSION_ID={v}\nIMAGE_ID=constellation-node\nIMAGE_VERSION={v}\n"
    )
}

/// Builds the initramfs bytes and returns them with the pins used and the module list.
fn initramfs_bytes(
    cfg: &BuildConfig,
    kernel: &Kernel,
    inputs: &mut Vec<Input>,
    components: &mut Vec<kubernetes::Component>,
) -> Result<(Vec<u8>, Vec<String>), BuildError> {
    let mut a = Archive::new();
    for d in ["dev", "proc", "sys", "run", "tmp", "etc", "var", "root"] {
        a.dir(d);
    }
    let mut used = Vec::new();
    add_binary_from_pins(cfg, &mut a, &cfg.init, "init", &[], &mut used)?;
    add_binary_from_pins(
        cfg,
        &mut a,
        &cfg.agent,
        "usr/bin/constellation-node",
        DLOPENED_LIBS,
        &mut used,
    )?;
    // mkfs.ext4 for the state disk, taken from the pinned package (not the host).
    let e2fs = cfg.lock.get("e2fsprogs")?.clone();
    let mke2fs = cfg.cache.extracted(&e2fs)?.join("sbin/mke2fs");
    add_binary_from_pins(cfg, &mut a, &mke2fs, "usr/sbin/mke2fs", &[], &mut used)?;
    a.symlink("usr/sbin/mkfs.ext4", "mke2fs");
    if !used.contains(&e2fs) {
        used.push(e2fs);
    }
    let modules = kernel.resolve(DEFAULT_MODULES)?;
    initramfs::add_modules(&mut a, &kernel.release, &modules)?;
    a.file("usr/lib/os-release", os_release().into_bytes(), false);
    a.symlink("etc/os-release", "../usr/lib/os-release");
    if let Some(version) = &cfg.kubernetes {
        for c in kubernetes::install(
            &mut a,
            &cfg.cache,
            &cfg.kubernetes_lock,
            version,
            cfg.kubernetes_mirror.as_deref(),
        )? {
            inputs.push(Input {
                kind: "kubernetes".into(),
                name: c.name.clone(),
                version: c.version.clone(),
                sha256: c.sha256.clone(),
            });
            components.push(c);
        }
    }
    for (p, d) in &cfg.extra_files {
        a.file(p, d.clone(), false);
    }
    for pin in used {
        inputs.push(Input {
            kind: "debian".into(),
            name: pin.name,
            version: pin.version,
            sha256: pin.sha256,
        });
    }
    let names = modules.iter().map(|m| m.name.clone()).collect();
    let cpio = a.to_bytes(cfg.source_date_epoch);
    // Level 10: most of level 19's ratio at a tenth of the build time. Single-threaded
    // compression is deterministic for a given libzstd version.
    let compressed = zstd::bulk::compress(&cpio, INITRD_ZSTD_LEVEL)
        .map_err(|e| BuildError::Host(format!("zstd-compressing the initramfs: {e}")))?;
    Ok((compressed, names))
}

/// Runs the whole build.
pub fn build(cfg: &BuildConfig) -> Result<BuildOutput, BuildError> {
    fs::create_dir_all(&cfg.out_dir).map_err(io_err("create", &cfg.out_dir))?;
    let mut inputs = Vec::new();
    // Verify every pinned package up front so a tampered .deb stops the build by name, even if
    // the build would not have needed it.
    for pin in cfg.lock.pins() {
        cfg.cache.deb(pin)?;
    }
    let kernel = Kernel::pinned(&cfg.cache, &cfg.lock)?;
    let stub_pin = cfg.lock.get("systemd-boot-efi")?.clone();
    let stub_path = cfg
        .cache
        .extracted(&stub_pin)?
        .join("usr/lib/systemd/boot/efi/linuxx64.efi.stub");
    let stub = fs::read(&stub_path).map_err(io_err("read", &stub_path))?;
    for (kind, pin) in [("debian", &kernel.pin), ("debian", &stub_pin)] {
        inputs.push(Input {
            kind: kind.into(),
            name: pin.name.clone(),
            version: pin.version.clone(),
            sha256: pin.sha256.clone(),
        });
    }
    for (kind, path) in [("agent", &cfg.agent), ("init", &cfg.init)] {
        let data = fs::read(path).map_err(io_err("read", path))?;
        inputs.push(Input {
            kind: kind.into(),
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").into(),
            sha256: sha256_hex(&data),
        });
    }
    let mut components = Vec::new();
    let (initrd, modules) = initramfs_bytes(cfg, &kernel, &mut inputs, &mut components)?;
    let linux = fs::read(&kernel.vmlinuz).map_err(io_err("read", &kernel.vmlinuz))?;
    let osrel = os_release();
    let uki = pe::add_sections(
        &stub,
        &[
            (".osrel", osrel.as_bytes()),
            (".cmdline", cfg.cmdline.as_bytes()),
            (".linux", &linux),
            (".initrd", &initrd),
        ],
    )?;
    let (disk_bytes, disk_info) = disk::build_disk(&uki)?;
    let measurements = measure::predict_image(&uki, &disk_bytes)?;

    let out = |n: &str| cfg.out_dir.join(n);
    let write = |n: &str, d: &[u8]| -> Result<PathBuf, BuildError> {
        let p = out(n);
        fs::write(&p, d).map_err(io_err("write", &p))?;
        Ok(p)
    };
    let manifest = Manifest {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uki_sha256: sha256_hex(&uki),
        disk_sha256: sha256_hex(&disk_bytes),
        initramfs_sha256: sha256_hex(&initrd),
        uki_size: uki.len() as u64,
        disk: disk_info,
        kernel_release: kernel.release.clone(),
        cmdline: cfg.cmdline.clone(),
        modules,
        source_date_epoch: cfg.source_date_epoch,
        kubernetes: cfg.kubernetes.clone(),
        kubernetes_note: match &cfg.kubernetes {
            Some(v) => format!(
                "Kubernetes {v} included: {}",
                components
                    .iter()
                    .map(|c| format!("{} {}", c.name, c.version))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => "no Kubernetes: this image boots a cluster without Kubernetes \
                     (build with --kubernetes VERSION to include it)"
                .into(),
        },
        kubernetes_components: components,
        inputs,
    };
    let uki_path = write("constellation.efi", &uki)?;
    let disk_path = write("disk.raw", &disk_bytes)?;
    let mj = serde_json::to_vec_pretty(&measurements)
        .map_err(|e| BuildError::Host(format!("serialising measurements: {e}")))?;
    let measurements_json = write("measurements.json", &mj)?;
    let mf = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| BuildError::Host(format!("serialising manifest: {e}")))?;
    let manifest_json = write("manifest.json", &mf)?;
    Ok(BuildOutput {
        uki: uki_path,
        disk: disk_path,
        measurements_json,
        manifest_json,
        manifest,
        measurements,
    })
}

/// Prints a `debian.lock` line for an installed package: downloads the installed version with
/// apt and hashes it.
pub fn pin_line(package: &str) -> Result<String, BuildError> {
    let version = host(Command::new("dpkg-query").args(["-W", "-f=${Version}", package]))?;
    let dir = tempfile::tempdir().map_err(|e| BuildError::Host(format!("tempdir: {e}")))?;
    host(
        Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root"])
            .arg(format!("{package}={version}"))
            .current_dir(dir.path()),
    )?;
    let deb = fs::read_dir(dir.path())
        .map_err(io_err("read", dir.path()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| BuildError::Host(format!("apt-get produced no .deb for {package}")))?;
    let sha = crate::debian::sha256_file(&deb)?;
    Ok(format!("{package} {version} {sha}"))
}
