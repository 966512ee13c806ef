//! The optional Kubernetes flavour: pinned upstream release binaries.
//!
//! `image/kubernetes.lock` lists `version name url sha256` per binary. Downloads go through
//! `curl` into the shared cache; a file already in the cache (placed there by hand on a host
//! without access to the download site) is used after its hash is checked.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::debian::{Cache, sha256_file};

/// The pin list compiled into the library.
pub const KUBERNETES_LOCK: &str = include_str!("../kubernetes.lock");

/// Errors from the Kubernetes flavour.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KubernetesError {
    /// The version has no pins.
    #[error("Kubernetes {0} is not pinned in image/kubernetes.lock (pinned: {1})")]
    NotPinned(String, String),
    /// A binary could not be downloaded.
    #[error(
        "cannot fetch {name} for Kubernetes {version} from {url}: {detail}. The build host cannot \
         reach the download site; place the file (SHA-256 {sha256}) at {cache_path} and rerun"
    )]
    Unreachable {
        /// Binary name.
        name: String,
        /// Version.
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
    /// A binary has the wrong hash.
    #[error(
        "{name} for Kubernetes {version}: SHA-256 {actual} does not match the pinned {expected}"
    )]
    HashMismatch {
        /// Binary name.
        name: String,
        /// Version.
        version: String,
        /// Pinned.
        expected: String,
        /// Obtained.
        actual: String,
    },
    /// Cache I/O.
    #[error(transparent)]
    Cache(#[from] crate::debian::DebianError),
}

struct KPin {
    version: String,
    name: String,
    url: String,
    sha256: String,
}

fn pins() -> Vec<KPin> {
    KUBERNETES_LOCK
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [v, n, u, s] => Some(KPin {
                    version: (*v).into(),
                    name: (*n).into(),
                    url: (*u).into(),
                    sha256: (*s).into(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// Fetches the pinned binaries of `version`; returns `(name, bytes, sha256)`.
/// `mirror`, when set, replaces `https://dl.k8s.io` in the URLs (tests use a local endpoint).
pub fn fetch(
    cache: &Cache,
    version: &str,
    mirror: Option<&str>,
) -> Result<Vec<(String, Vec<u8>, String)>, KubernetesError> {
    let all = pins();
    let wanted: Vec<&KPin> = all.iter().filter(|p| p.version == version).collect();
    if wanted.is_empty() {
        let mut vs: Vec<&str> = all.iter().map(|p| p.version.as_str()).collect();
        vs.dedup();
        return Err(KubernetesError::NotPinned(version.into(), vs.join(", ")));
    }
    let mut out = Vec::new();
    for p in wanted {
        let dir = cache.root().join("kubernetes").join(&p.sha256);
        let path = dir.join(&p.name);
        if !path.exists() {
            fs::create_dir_all(&dir).map_err(crate::debian::io_err("create", &dir))?;
            let url = match mirror {
                Some(m) => p.url.replace("https://dl.k8s.io", m.trim_end_matches('/')),
                None => p.url.clone(),
            };
            let tmp = dir.join(format!(".{}.part", p.name));
            let res = Command::new("curl")
                .args(["--fail", "--silent", "--show-error", "--location"])
                .args(["--connect-timeout", "10", "--max-time", "300", "-o"])
                .arg(&tmp)
                .arg(&url)
                .output();
            let detail = match res {
                Ok(o) if o.status.success() => None,
                Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
                Err(e) => Some(format!("cannot run curl: {e}")),
            };
            if let Some(detail) = detail {
                let _ = fs::remove_file(&tmp);
                return Err(KubernetesError::Unreachable {
                    name: p.name.clone(),
                    version: version.into(),
                    url,
                    detail,
                    sha256: p.sha256.clone(),
                    cache_path: path,
                });
            }
            fs::rename(&tmp, &path).map_err(crate::debian::io_err("rename", &path))?;
        }
        let actual = sha256_file(&path)?;
        if actual != p.sha256 {
            return Err(KubernetesError::HashMismatch {
                name: p.name.clone(),
                version: version.into(),
                expected: p.sha256.clone(),
                actual,
            });
        }
        let data = fs::read(&path).map_err(crate::debian::io_err("read", &path))?;
        out.push((p.name.clone(), data, p.sha256.clone()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_site_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        let version = pins().first().map(|p| p.version.clone()).unwrap();
        // Port 9 (discard) on loopback is closed here: a stand-in for the unreachable site.
        let err = fetch(&cache, &version, Some("http://127.0.0.1:9")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cannot fetch kubeadm"), "{msg}");
        assert!(msg.contains("place the file"), "{msg}");
    }

    #[test]
    fn unknown_version_is_reported() {
        let cache = Cache::at(std::env::temp_dir());
        assert!(matches!(
            fetch(&cache, "0.0.1", None),
            Err(KubernetesError::NotPinned(..))
        ));
    }
}
