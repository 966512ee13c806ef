//! Building or locating the provider executable under test.

use crate::HarnessError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// A provider executable plus the source address and version terraform knows it by.
#[derive(Debug, Clone)]
pub struct ProviderBinary {
    /// The executable.
    pub path: PathBuf,
    /// Registry host part of the source address (e.g. `example.com`).
    pub hostname: String,
    /// Namespace part of the source address.
    pub namespace: String,
    /// Provider type (the part after `terraform-provider-`, and the resource name prefix).
    pub type_name: String,
    /// Version published in the filesystem mirror (default `0.1.0`).
    pub version: String,
}

/// One cargo build per (package, target, profile) and test process: every test shares it.
static BUILDS: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();

impl ProviderBinary {
    /// Uses an existing executable, known to terraform as `source` (`hostname/namespace/type`).
    pub fn from_path(path: impl Into<PathBuf>, source: &str) -> Result<Self, HarnessError> {
        let mut parts = source.split('/');
        let (Some(h), Some(n), Some(t), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(HarnessError::BadSource(source.to_owned()));
        };
        if [h, n, t].iter().any(|p| p.is_empty()) {
            return Err(HarnessError::BadSource(source.to_owned()));
        }
        Ok(Self {
            path: path.into(),
            hostname: h.to_owned(),
            namespace: n.to_owned(),
            type_name: t.to_owned(),
            version: "0.1.0".to_owned(),
        })
    }

    /// Builds the cargo example `example` of `package` (debug profile, or `ACCEPTANCE_PROFILE`).
    pub fn cargo_example(package: &str, example: &str, source: &str) -> Result<Self, HarnessError> {
        let path = cargo_build(package, "--example", example, &default_profile())?;
        Self::from_path(path, source)
    }

    /// Builds the binary target `bin` of `package` (debug profile, or `ACCEPTANCE_PROFILE`).
    pub fn cargo_bin(package: &str, bin: &str, source: &str) -> Result<Self, HarnessError> {
        let path = cargo_build(package, "--bin", bin, &default_profile())?;
        Self::from_path(path, source)
    }

    /// Like [`ProviderBinary::cargo_example`] with an explicit cargo profile (`dev`, `release`).
    pub fn cargo_example_profile(
        package: &str,
        example: &str,
        profile: &str,
        source: &str,
    ) -> Result<Self, HarnessError> {
        let path = cargo_build(package, "--example", example, profile)?;
        Self::from_path(path, source)
    }

    /// Like [`ProviderBinary::cargo_bin`] with an explicit cargo profile (`dev`, `release`).
    pub fn cargo_bin_profile(
        package: &str,
        bin: &str,
        profile: &str,
        source: &str,
    ) -> Result<Self, HarnessError> {
        let path = cargo_build(package, "--bin", bin, profile)?;
        Self::from_path(path, source)
    }

    /// Replaces the version under which the provider is published in the mirror.
    pub fn with_version(mut self, version: &str) -> Self {
        self.version = version.to_owned();
        self
    }

    /// `hostname/namespace/type`.
    pub fn source(&self) -> String {
        format!("{}/{}/{}", self.hostname, self.namespace, self.type_name)
    }

    /// The file name terraform expects: `terraform-provider-<type>`.
    pub fn executable_name(&self) -> String {
        format!("terraform-provider-{}", self.type_name)
    }
}

/// Builds the cargo example `example` of `package` (any executable, not only providers) with
/// the default profile and returns its path. Built once per test process.
pub fn build_example(package: &str, example: &str) -> Result<PathBuf, HarnessError> {
    cargo_build(package, "--example", example, &default_profile())
}

fn default_profile() -> String {
    std::env::var("ACCEPTANCE_PROFILE").unwrap_or_else(|_| "dev".to_owned())
}

/// The repository's workspace root (this crate lives in `<root>/acceptance`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The target directory the running test binary was built into (`<target>/<profile>/deps/x`),
/// so the nested build reuses its artifacts instead of compiling into a second directory.
fn inherited_target_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    if deps.file_name()? != "deps" {
        return None;
    }
    Some(deps.parent()?.parent()?.to_path_buf())
}

fn cargo_build(
    package: &str,
    kind: &str,
    target: &str,
    profile: &str,
) -> Result<PathBuf, HarnessError> {
    let key = format!("{package} {kind} {target} {profile}");
    let builds = BUILDS.get_or_init(|| Mutex::new(HashMap::new()));
    // A panicking test must not poison the cache for the others.
    let mut builds = builds
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = builds.get(&key) {
        return Ok(path.clone());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace_root())
        .args([
            "build",
            "--locked",
            "--message-format=json-render-diagnostics",
            "-p",
            package,
            kind,
            target,
        ])
        .args(["--profile", profile]);
    if let Some(dir) = inherited_target_dir() {
        cmd.env("CARGO_TARGET_DIR", dir);
    }
    let command = format!("{cargo} build -p {package} {kind} {target} --profile {profile}");
    let out = cmd.output().map_err(|source| HarnessError::Spawn {
        program: cargo.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(HarnessError::Build {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == target)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| HarnessError::NoExecutable {
            target: target.to_owned(),
        })?;
    builds.insert(key, path.clone());
    Ok(path)
}
