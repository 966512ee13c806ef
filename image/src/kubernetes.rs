//! The optional Kubernetes flavour: pinned upstream release files installed into the initramfs.
//!
//! `image/kubernetes.lock` lists, per Kubernetes version, every file to fetch (kubeadm, kubelet,
//! kubectl, crictl, CNI plugins, containerd, runc) with its URL, SHA-256 and where it goes in the
//! guest (see the comment at the top of that file for the format). Downloads go through `curl`
//! into the shared cache and are checked against the pin before they are kept; a file already in
//! the cache (placed there by hand on a host without access to the download sites) is checked
//! again on every use. Tarballs are unpacked with the host's `tar` into a scratch directory and
//! only their regular files are copied into the archive, so owners, timestamps and order come
//! from our reproducible cpio writer, not from the tarball.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cpio::Archive;
use crate::debian::{Cache, io_err, sha256_file};

/// The pin list compiled into the library.
pub const KUBERNETES_LOCK: &str = include_str!("../kubernetes.lock");

/// Written to `/etc/crictl.yaml` when crictl is installed: containerd's socket, so that crictl
/// works without flags (crictl otherwise probes several runtimes and warns).
pub const CRICTL_CONFIG: &str = "runtime-endpoint: unix:///run/containerd/containerd.sock\n\
                                 image-endpoint: unix:///run/containerd/containerd.sock\n";

/// Errors from the Kubernetes flavour.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubernetesError {
    /// The version has no pins.
    #[error("Kubernetes {0} is not pinned in image/kubernetes.lock (pinned: {1})")]
    NotPinned(String, String),
    /// A line of the lock list is malformed.
    #[error(
        "kubernetes.lock line {line}: {reason}; expected \
         `<set> <name> <version> <file|tgz> <guest path> <url> <sha256>`"
    )]
    LockSyntax {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// A file could not be downloaded.
    #[error(
        "cannot fetch {file} ({name} {component_version}) for Kubernetes {version} from {url}: \
         {detail}. The build host cannot reach the download site; place the file \
         (SHA-256 {sha256}) at {cache_path} and rerun"
    )]
    Unreachable {
        /// The file name (last URL segment).
        file: String,
        /// Component name.
        name: String,
        /// Component version.
        component_version: String,
        /// Kubernetes version.
        version: String,
        /// URL tried.
        url: String,
        /// curl's message.
        detail: String,
        /// Pinned hash.
        sha256: String,
        /// Where the build looks for a pre-placed copy.
        cache_path: PathBuf,
    },
    /// A file has the wrong hash.
    #[error(
        "{file} ({name} for Kubernetes {version}, from {origin}): SHA-256 {actual} does not \
         match the pinned {expected}; the file was not used — check the download site or the pin"
    )]
    HashMismatch {
        /// The file name.
        file: String,
        /// Component name.
        name: String,
        /// Kubernetes version.
        version: String,
        /// The URL it was downloaded from, or the cache path of a pre-placed copy.
        origin: String,
        /// Pinned.
        expected: String,
        /// Obtained.
        actual: String,
    },
    /// A tarball could not be unpacked or holds something we do not install.
    #[error("{file} ({name}): {reason}")]
    Archive {
        /// The tarball's file name.
        file: String,
        /// Component name.
        name: String,
        /// What was wrong.
        reason: String,
    },
    /// Cache I/O.
    #[error(transparent)]
    Cache(#[from] crate::debian::DebianError),
}

/// How a pinned file is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// The download itself, as an executable at the guest path.
    File,
    /// A gzip tarball; its regular files go under the guest path (a directory).
    Tgz,
}

/// One pinned upstream file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KPin {
    /// The Kubernetes version (set) this line belongs to.
    pub set: String,
    /// Component name (`kubelet`, `containerd`, …).
    pub name: String,
    /// The component's own version.
    pub version: String,
    /// How it is installed.
    pub kind: Kind,
    /// Guest path (file) or directory (tarball), relative to `/`.
    pub dest: String,
    /// Upstream URL.
    pub url: String,
    /// Lower-case hex SHA-256 of the download.
    pub sha256: String,
}

impl KPin {
    /// The download's file name (last URL segment).
    pub fn file_name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or(&self.url)
    }

    /// The URL to fetch: with a mirror `M`, `https://HOST/PATH` becomes `M/HOST/PATH`, so one
    /// mirror serves files of several sites (dl.k8s.io, github.com).
    pub fn fetch_url(&self, mirror: Option<&str>) -> String {
        match mirror {
            Some(m) => {
                let rest = self
                    .url
                    .split_once("://")
                    .map_or(self.url.as_str(), |(_, r)| r);
                format!("{}/{rest}", m.trim_end_matches('/'))
            }
            None => self.url.clone(),
        }
    }
}

/// A parsed `kubernetes.lock`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesLock {
    pins: Vec<KPin>,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn safe_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

impl KubernetesLock {
    /// Parses the lock format; `#` starts a comment.
    pub fn parse(text: &str) -> Result<Self, KubernetesError> {
        let mut pins = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let err = |reason: String| KubernetesError::LockSyntax {
                line: i + 1,
                reason,
            };
            let f: Vec<&str> = line.split_whitespace().collect();
            let [set, name, version, kind, dest, url, sha] = f.as_slice() else {
                return Err(err(format!("{} fields instead of 7", f.len())));
            };
            let kind = match *kind {
                "file" => Kind::File,
                "tgz" => Kind::Tgz,
                other => return Err(err(format!("unknown kind {other:?}"))),
            };
            if !safe_relative(dest) {
                return Err(err(format!(
                    "guest path {dest:?} must be relative without `.`/`..`"
                )));
            }
            if !url.starts_with("https://") && !url.starts_with("http://") {
                return Err(err(format!("URL {url:?} is not http(s)")));
            }
            if !is_hex64(sha) {
                return Err(err(format!("{sha:?} is not a lower-case hex SHA-256")));
            }
            pins.push(KPin {
                set: (*set).into(),
                name: (*name).into(),
                version: (*version).into(),
                kind,
                dest: (*dest).into(),
                url: (*url).into(),
                sha256: (*sha).into(),
            });
        }
        Ok(Self { pins })
    }

    /// The list compiled into the library ([`KUBERNETES_LOCK`]).
    pub fn default_lock() -> Self {
        // A unit test parses the embedded list, so this cannot fail in a tested build.
        Self::parse(KUBERNETES_LOCK).expect("image/kubernetes.lock is valid (unit-tested)")
    }

    /// Every pin, in file order.
    pub fn pins(&self) -> &[KPin] {
        &self.pins
    }

    /// The pinned Kubernetes versions.
    pub fn versions(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.pins.iter().map(|p| p.set.as_str()).collect();
        v.dedup();
        v
    }
}

/// One installed component, recorded in `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Component {
    /// Component name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// SHA-256 of the download (the pin).
    pub sha256: String,
    /// The pinned upstream URL.
    pub url: String,
    /// Guest paths it installed, sorted.
    pub files: Vec<String>,
}

/// Returns the cached, hash-checked download of `pin`, fetching it if needed.
fn fetch(cache: &Cache, pin: &KPin, mirror: Option<&str>) -> Result<PathBuf, KubernetesError> {
    let dir = cache.root().join("kubernetes").join(&pin.sha256);
    let path = dir.join(pin.file_name());
    let mismatch = |origin: String, actual: String| KubernetesError::HashMismatch {
        file: pin.file_name().into(),
        name: pin.name.clone(),
        version: pin.set.clone(),
        origin,
        expected: pin.sha256.clone(),
        actual,
    };
    if path.exists() {
        let actual = sha256_file(&path)?;
        if actual != pin.sha256 {
            return Err(mismatch(path.display().to_string(), actual));
        }
        return Ok(path);
    }
    fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let url = pin.fetch_url(mirror);
    let tmp = tempfile::Builder::new()
        .prefix(".download-")
        .tempfile_in(&dir)
        .map_err(io_err("create temporary file in", &dir))?;
    let res = Command::new("curl")
        .args(["--fail", "--silent", "--show-error", "--location"])
        .args(["--connect-timeout", "10", "--max-time", "600", "-o"])
        .arg(tmp.path())
        .arg(&url)
        .output();
    let detail = match res {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
        Err(e) => Some(format!("cannot run curl: {e}")),
    };
    if let Some(detail) = detail {
        return Err(KubernetesError::Unreachable {
            file: pin.file_name().into(),
            name: pin.name.clone(),
            component_version: pin.version.clone(),
            version: pin.set.clone(),
            url,
            detail,
            sha256: pin.sha256.clone(),
            cache_path: path,
        });
    }
    // Checked before it enters the cache: a wrong download is never kept.
    let actual = sha256_file(tmp.path())?;
    if actual != pin.sha256 {
        return Err(mismatch(url, actual));
    }
    tmp.persist(&path)
        .map_err(|e| io_err("rename download to", &path)(e.error))?;
    Ok(path)
}

/// Regular files under `root` as (relative path, host path), recursively; anything else
/// (symlinks, devices) is refused.
fn regular_files(root: &Path, pin: &KPin) -> Result<Vec<(String, PathBuf)>, KubernetesError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).map_err(io_err("read directory", &dir))? {
            let e = e.map_err(io_err("read directory", &dir))?;
            let p = e.path();
            let ty = e.file_type().map_err(io_err("stat", &p))?;
            let rel = p
                .strip_prefix(root)
                .ok()
                .and_then(Path::to_str)
                .map(str::to_owned)
                .ok_or_else(|| KubernetesError::Archive {
                    file: pin.file_name().into(),
                    name: pin.name.clone(),
                    reason: format!("entry {} has a non-UTF-8 name", p.display()),
                })?;
            if ty.is_dir() {
                stack.push(p);
            } else if ty.is_file() {
                out.push((rel, p));
            } else {
                return Err(KubernetesError::Archive {
                    file: pin.file_name().into(),
                    name: pin.name.clone(),
                    reason: format!("entry {rel} is not a regular file or directory"),
                });
            }
        }
    }
    out.sort();
    Ok(out)
}

fn is_executable(path: &Path) -> Result<bool, KubernetesError> {
    use std::os::unix::fs::PermissionsExt as _;
    let m = fs::metadata(path).map_err(io_err("stat", path))?;
    Ok(m.permissions().mode() & 0o111 != 0)
}

/// Adds a file, refusing to replace anything already in the image (the agent, `/init`, a
/// library, another component's file).
fn add_new(
    archive: &mut Archive,
    pin: &KPin,
    guest: &str,
    data: Vec<u8>,
    exec: bool,
) -> Result<(), KubernetesError> {
    if archive.contains(guest) {
        return Err(KubernetesError::Archive {
            file: pin.file_name().into(),
            name: pin.name.clone(),
            reason: format!("would replace /{guest}, which is already in the image"),
        });
    }
    archive.file(guest, data, exec);
    Ok(())
}

/// Fetches, verifies and installs every pinned file of Kubernetes `version` into `archive`,
/// plus `/etc/crictl.yaml` when crictl is among them. `mirror`: see [`KPin::fetch_url`].
pub fn install(
    archive: &mut Archive,
    cache: &Cache,
    lock: &KubernetesLock,
    version: &str,
    mirror: Option<&str>,
) -> Result<Vec<Component>, KubernetesError> {
    let wanted: Vec<&KPin> = lock.pins().iter().filter(|p| p.set == version).collect();
    if wanted.is_empty() {
        return Err(KubernetesError::NotPinned(
            version.into(),
            lock.versions().join(", "),
        ));
    }
    // Everything is downloaded and verified before anything is installed.
    let mut downloads = Vec::new();
    for pin in &wanted {
        downloads.push(fetch(cache, pin, mirror)?);
    }
    let mut out = Vec::new();
    for (pin, path) in wanted.into_iter().zip(downloads) {
        let mut files = Vec::new();
        match pin.kind {
            Kind::File => {
                let data = fs::read(&path).map_err(io_err("read", &path))?;
                add_new(archive, pin, &pin.dest, data, true)?;
                files.push(format!("/{}", pin.dest));
            }
            Kind::Tgz => {
                let scratch = cache.scratch()?;
                let o = Command::new("tar")
                    .args(["--extract", "--gzip", "--no-same-owner", "--file"])
                    .arg(&path)
                    .arg("--directory")
                    .arg(scratch.path())
                    .output();
                let failed = match o {
                    Ok(o) if o.status.success() => None,
                    Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
                    Err(e) => Some(format!("cannot run tar: {e}")),
                };
                if let Some(detail) = failed {
                    return Err(KubernetesError::Archive {
                        file: pin.file_name().into(),
                        name: pin.name.clone(),
                        reason: format!("unpacking with tar failed: {detail}"),
                    });
                }
                for (rel, host) in regular_files(scratch.path(), pin)? {
                    let guest = format!("{}/{rel}", pin.dest);
                    let exec = is_executable(&host)?;
                    let data = fs::read(&host).map_err(io_err("read", &host))?;
                    add_new(archive, pin, &guest, data, exec)?;
                    files.push(format!("/{guest}"));
                }
                if files.is_empty() {
                    return Err(KubernetesError::Archive {
                        file: pin.file_name().into(),
                        name: pin.name.clone(),
                        reason: "the tarball holds no files".into(),
                    });
                }
            }
        }
        if pin.name == "crictl" {
            archive.file("etc/crictl.yaml", CRICTL_CONFIG.as_bytes().to_vec(), false);
            files.push("/etc/crictl.yaml".into());
        }
        files.sort();
        out.push(Component {
            name: pin.name.clone(),
            version: pin.version.clone(),
            sha256: pin.sha256.clone(),
            url: pin.url.clone(),
            files,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::net::TcpListener;
    use std::sync::Arc;

    use sha2::{Digest as _, Sha256};

    use super::*;
    use crate::cpio::Entry;

    /// A minimal HTTP/1.0 file server on 127.0.0.1 (one thread per connection); it stops
    /// when the test process ends.
    fn serve(files: BTreeMap<String, Vec<u8>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let files = Arc::new(files);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let files = Arc::clone(&files);
                std::thread::spawn(move || {
                    let mut line = String::new();
                    let mut r = BufReader::new(conn.try_clone().unwrap());
                    let _ = r.read_line(&mut line);
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                            break;
                        }
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let _ = match files.get(&path) {
                        Some(body) => conn
                            .write_all(
                                format!(
                                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .and_then(|()| conn.write_all(body)),
                        None => {
                            conn.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                        }
                    };
                });
            }
        });
        format!("http://{addr}")
    }

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    /// A gzip tarball (made with the host's tar) of `files` (relative path, contents, mode).
    fn tgz(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        for (p, data, mode) in files {
            let f = src.join(p);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(&f, data).unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(*mode)).unwrap();
        }
        let out = dir.path().join("x.tgz");
        let st = Command::new("tar")
            .arg("-czf")
            .arg(&out)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        fs::read(out).unwrap()
    }

    fn file_entry<'a>(a: &'a Archive, path: &str) -> Option<(&'a [u8], bool)> {
        a.entries().find_map(|(p, e)| match e {
            Entry::File { data, executable } if p == path => Some((data.as_slice(), *executable)),
            _ => None,
        })
    }

    #[test]
    fn embedded_lock_parses_and_pins_the_whole_set() {
        let lock = KubernetesLock::default_lock();
        let names: Vec<&str> = lock
            .pins()
            .iter()
            .filter(|p| p.set == "1.33.7")
            .map(|p| p.name.as_str())
            .collect();
        for n in [
            "kubeadm",
            "kubelet",
            "kubectl",
            "crictl",
            "cni-plugins",
            "containerd",
            "runc",
        ] {
            assert!(names.contains(&n), "{n} missing from kubernetes.lock");
        }
    }

    #[test]
    fn lock_rejects_bad_lines() {
        let good_sha = "a".repeat(64);
        for bad in [
            "1.0 kubelet 1.0 file usr/bin/kubelet https://x/kubelet".to_owned(),
            format!("1.0 kubelet 1.0 zip usr/bin/kubelet https://x/kubelet {good_sha}"),
            format!("1.0 kubelet 1.0 file ../etc/passwd https://x/kubelet {good_sha}"),
            format!("1.0 kubelet 1.0 file /usr/bin/kubelet https://x/kubelet {good_sha}"),
            format!("1.0 kubelet 1.0 file usr/bin/kubelet ftp://x/kubelet {good_sha}"),
            "1.0 kubelet 1.0 file usr/bin/kubelet https://x/kubelet ABC".to_owned(),
        ] {
            assert!(
                matches!(
                    KubernetesLock::parse(&bad),
                    Err(KubernetesError::LockSyntax { line: 1, .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn mirror_url_keeps_host_and_path() {
        let lock = KubernetesLock::default_lock();
        let p = lock.pins().iter().find(|p| p.name == "kubeadm").unwrap();
        assert_eq!(
            p.fetch_url(Some("http://127.0.0.1:1/m/")),
            "http://127.0.0.1:1/m/dl.k8s.io/release/v1.33.7/bin/linux/amd64/kubeadm"
        );
        assert_eq!(p.fetch_url(None), p.url);
    }

    #[test]
    fn unreachable_site_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        let lock = KubernetesLock::default_lock();
        let version = lock.pins().first().map(|p| p.set.clone()).unwrap();
        // Port 9 (discard) on loopback is closed here: a stand-in for the unreachable site.
        let err = install(
            &mut Archive::new(),
            &cache,
            &lock,
            &version,
            Some("http://127.0.0.1:9"),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cannot fetch kubeadm ("), "{msg}");
        assert!(
            msg.contains("http://127.0.0.1:9/dl.k8s.io/release/"),
            "{msg}"
        );
        assert!(msg.contains("place the file"), "{msg}");
    }

    #[test]
    fn unknown_version_is_reported() {
        let cache = Cache::at(std::env::temp_dir());
        assert!(matches!(
            install(
                &mut Archive::new(),
                &cache,
                &KubernetesLock::default_lock(),
                "0.0.1",
                None
            ),
            Err(KubernetesError::NotPinned(..))
        ));
    }

    /// A test-generated release set served from 127.0.0.1 (the real upstream files are not
    /// reachable here): files and tarballs are verified and installed at their guest paths.
    #[test]
    fn test_lock_installs_at_guest_paths_and_wrong_hash_is_refused() {
        let kubelet = b"\x7fELF fake kubelet".to_vec();
        let runc = b"\x7fELF fake runc".to_vec();
        let cni = tgz(&[
            ("bridge", b"bridge plugin", 0o755),
            ("host-local", b"host-local plugin", 0o755),
            ("LICENSE", b"license", 0o644),
        ]);
        let containerd = tgz(&[
            ("bin/containerd", b"containerd", 0o755),
            ("bin/containerd-shim-runc-v2", b"shim", 0o755),
            ("bin/ctr", b"ctr", 0o755),
        ]);
        let crictl = tgz(&[("crictl", b"crictl", 0o755)]);
        let mut served = BTreeMap::new();
        for (p, d) in [
            ("/dl.example/v9/kubelet", &kubelet),
            ("/gh.example/runc.amd64", &runc),
            ("/gh.example/cni.tgz", &cni),
            ("/gh.example/containerd.tar.gz", &containerd),
            ("/gh.example/crictl.tar.gz", &crictl),
        ] {
            served.insert(p.to_owned(), d.clone());
        }
        let base = serve(served);
        let text = format!(
            "9.9.9 kubelet 9.9.9 file usr/bin/kubelet https://dl.example/v9/kubelet {}\n\
             9.9.9 runc 1.0 file usr/bin/runc https://gh.example/runc.amd64 {}\n\
             9.9.9 cni-plugins 1.0 tgz opt/cni/bin https://gh.example/cni.tgz {}\n\
             9.9.9 containerd 2.0 tgz usr https://gh.example/containerd.tar.gz {}\n\
             9.9.9 crictl 1.0 tgz usr/bin https://gh.example/crictl.tar.gz {} # comment\n",
            sha(&kubelet),
            sha(&runc),
            sha(&cni),
            sha(&containerd),
            sha(&crictl)
        );
        let lock = KubernetesLock::parse(&text).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        let mut a = Archive::new();
        let comps = install(&mut a, &cache, &lock, "9.9.9", Some(&base)).unwrap();
        for (path, data, exec) in [
            ("usr/bin/kubelet", &kubelet[..], true),
            ("usr/bin/runc", &runc[..], true),
            ("opt/cni/bin/bridge", b"bridge plugin", true),
            ("opt/cni/bin/host-local", b"host-local plugin", true),
            ("opt/cni/bin/LICENSE", b"license", false),
            ("usr/bin/containerd", b"containerd", true),
            ("usr/bin/containerd-shim-runc-v2", b"shim", true),
            ("usr/bin/ctr", b"ctr", true),
            ("usr/bin/crictl", b"crictl", true),
            ("etc/crictl.yaml", CRICTL_CONFIG.as_bytes(), false),
        ] {
            assert_eq!(file_entry(&a, path), Some((data, exec)), "{path}");
        }
        let c = comps.iter().find(|c| c.name == "containerd").unwrap();
        assert_eq!(c.version, "2.0");
        assert_eq!(c.sha256, sha(&containerd));
        assert_eq!(
            c.files,
            [
                "/usr/bin/containerd",
                "/usr/bin/containerd-shim-runc-v2",
                "/usr/bin/ctr"
            ]
        );
        // Cached now: a second install works without the server's help and is identical.
        let mut b = Archive::new();
        install(&mut b, &cache, &lock, "9.9.9", Some("http://127.0.0.1:9")).unwrap();
        assert_eq!(a.to_bytes(0), b.to_bytes(0));

        // The same files against a pin that does not match: refused, naming file and hashes,
        // and nothing is kept in the cache or installed.
        let wrong = "0".repeat(64);
        let bad = KubernetesLock::parse(&format!(
            "9.9.9 runc 1.0 file usr/bin/runc https://gh.example/runc.amd64 {wrong}\n"
        ))
        .unwrap();
        let mut c = Archive::new();
        let err = install(&mut c, &cache, &bad, "9.9.9", Some(&base)).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, KubernetesError::HashMismatch { file, expected, actual, .. }
                if file == "runc.amd64" && *expected == wrong && *actual == sha(&runc)),
            "{msg}"
        );
        assert!(msg.contains("runc.amd64") && msg.contains(&wrong), "{msg}");
        assert!(
            !cache
                .root()
                .join("kubernetes")
                .join(&wrong)
                .join("runc.amd64")
                .exists()
        );
        assert!(!c.contains("usr/bin/runc"));
    }

    #[test]
    fn tarball_may_not_replace_image_files() {
        let t = tgz(&[("bin/containerd", b"x", 0o755)]);
        let mut served = BTreeMap::new();
        served.insert("/gh.example/c.tgz".to_owned(), t.clone());
        let base = serve(served);
        let lock = KubernetesLock::parse(&format!(
            "1 containerd 2 tgz usr https://gh.example/c.tgz {}\n",
            sha(&t)
        ))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut a = Archive::new();
        a.file("usr/bin/containerd", b"agent".to_vec(), true);
        let err = install(&mut a, &Cache::at(dir.path()), &lock, "1", Some(&base)).unwrap_err();
        assert!(
            err.to_string()
                .contains("would replace /usr/bin/containerd"),
            "{err}"
        );
    }
}
