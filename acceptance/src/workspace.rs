//! A temporary terraform working directory with its own CLI configuration.

use crate::process::Running;
use crate::{HarnessError, ProviderBinary, TfOutput};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The terraform (or OpenTofu) CLI used by the tests.
#[derive(Debug, Clone)]
pub struct Terraform {
    /// The executable.
    pub binary: PathBuf,
}

impl Terraform {
    /// `TF_BINARY` if set (a path or a name on `PATH`, e.g. `tofu`), else `terraform` on `PATH`.
    /// `None` when it cannot be found, so tests can skip.
    pub fn from_env() -> Option<Self> {
        let name = std::env::var_os("TF_BINARY").unwrap_or_else(|| "terraform".into());
        let name = PathBuf::from(name);
        if name.components().count() > 1 {
            return name.is_file().then_some(Self { binary: name });
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join(&name))
            .find(|p| p.is_file())
            .map(|binary| Self { binary })
    }

    /// The first line of `terraform version`.
    pub fn version(&self) -> Result<String, HarnessError> {
        let out = Command::new(&self.binary)
            .arg("version")
            .env("CHECKPOINT_DISABLE", "1")
            .output()
            .map_err(|source| HarnessError::Spawn {
                program: self.binary.display().to_string(),
                source,
            })?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned())
    }
}

/// How the workspace's CLI configuration makes terraform find the providers under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// `dev_overrides`: no `terraform init` needed (terraform warns that overrides are in effect,
    /// and `init` still works because the mirror is configured too).
    DevOverrides,
    /// A local filesystem mirror (unpacked layout) and nothing else: `terraform init` installs
    /// from it and writes a lock file, as for a released provider. No registry is contacted.
    Mirror,
}

/// A temporary working directory: `.tf` files, state, CLI configuration and provider mirror.
///
/// Layout under the temporary root: `work/` (terraform's working directory), `cli.tfrc`,
/// `mirror/<host>/<ns>/<type>/<version>/<os_arch>/terraform-provider-<type>_v<version>`, and
/// `overrides/terraform-provider-<type>` for [`Install::DevOverrides`].
#[derive(Debug)]
pub struct Workspace {
    tf: Terraform,
    root: Option<tempfile::TempDir>,
    root_path: PathBuf,
    work: PathBuf,
    cli_config: PathBuf,
    env: Vec<(String, String)>,
    timeout: Duration,
}

impl Workspace {
    /// Creates the directory and CLI configuration for `providers`.
    pub fn new(
        tf: &Terraform,
        providers: &[&ProviderBinary],
        install: Install,
    ) -> Result<Self, HarnessError> {
        let root = tempfile::Builder::new()
            .prefix("tf-acc-")
            .tempdir()
            .map_err(HarnessError::io(
                "creating a temporary directory in",
                std::env::temp_dir(),
            ))?;
        let root_path = root.path().to_path_buf();
        let work = root_path.join("work");
        mkdir(&work)?;
        let mirror = root_path.join("mirror");
        let overrides = root_path.join("overrides");
        let platform = format!("{}_{}", go_os(), go_arch());
        let mut dev = String::new();
        for p in providers {
            // A source without a host in HCL (`constellation-rs/constellation`, as
            // examples/local writes it) means the CLI's default registry, which is
            // registry.terraform.io for terraform and registry.opentofu.org for tofu: the
            // mirror answers for both, so one configuration works with either CLI.
            let mut hosts = vec![p.hostname.as_str()];
            if p.hostname == "registry.terraform.io" {
                hosts.push("registry.opentofu.org");
            }
            for host in hosts {
                let dir = mirror
                    .join(host)
                    .join(&p.namespace)
                    .join(&p.type_name)
                    .join(&p.version)
                    .join(&platform);
                mkdir(&dir)?;
                link_or_copy(
                    &p.path,
                    &dir.join(format!("{}_v{}", p.executable_name(), p.version)),
                )?;
            }
            mkdir(&overrides)?;
            link_or_copy(&p.path, &overrides.join(p.executable_name()))?;
            dev.push_str(&format!(
                "    {} = {}\n",
                hcl_string(&p.source()),
                hcl_string(&overrides.display().to_string())
            ));
        }
        let mut cfg = String::from("provider_installation {\n");
        if install == Install::DevOverrides {
            cfg.push_str(&format!("  dev_overrides {{\n{dev}  }}\n"));
        }
        // Only the mirror: terraform never reaches for a registry.
        cfg.push_str(&format!(
            "  filesystem_mirror {{\n    path = {}\n  }}\n}}\n",
            hcl_string(&mirror.display().to_string())
        ));
        let cli_config = root_path.join("cli.tfrc");
        write(&cli_config, &cfg)?;
        let keep = std::env::var_os("ACCEPTANCE_KEEP").is_some_and(|v| v == "1");
        let root = if keep {
            eprintln!("ACCEPTANCE_KEEP=1: keeping {}", root_path.display());
            let _ = root.keep();
            None
        } else {
            Some(root)
        };
        Ok(Self {
            tf: tf.clone(),
            root,
            root_path,
            work,
            cli_config,
            env: Vec::new(),
            timeout: Duration::from_secs(600),
        })
    }

    /// Sets an extra environment variable for every terraform run (e.g. `TF_VAR_x`, `TF_LOG`).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Changes the per-run time limit (default 600 s; runs are killed after it).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Terraform's working directory (where `.tf` files and `terraform.tfstate` live).
    pub fn dir(&self) -> &Path {
        &self.work
    }

    /// The temporary root (parent of [`Workspace::dir`]); a handy place for provider data.
    pub fn root(&self) -> &Path {
        &self.root_path
    }

    /// The CLI configuration file (`TF_CLI_CONFIG_FILE`).
    pub fn cli_config(&self) -> &Path {
        &self.cli_config
    }

    /// Writes `contents` to `name` relative to the working directory (replacing it).
    pub fn write(&self, name: &str, contents: &str) -> Result<(), HarnessError> {
        let path = self.work.join(name);
        if let Some(parent) = path.parent() {
            mkdir(parent)?;
        }
        write(&path, contents)
    }

    /// Removes `name` from the working directory.
    pub fn remove(&self, name: &str) -> Result<(), HarnessError> {
        let path = self.work.join(name);
        std::fs::remove_file(&path).map_err(HarnessError::io("removing", path))
    }

    /// The raw text of `terraform.tfstate` (for greps: what must never be in state).
    pub fn state_raw(&self) -> Result<String, HarnessError> {
        let path = self.work.join("terraform.tfstate");
        std::fs::read_to_string(&path).map_err(HarnessError::io("reading", path))
    }

    /// `terraform.tfstate` parsed as JSON (the state file format, not `show -json`).
    pub fn state_file(&self) -> Result<Value, HarnessError> {
        serde_json::from_str(&self.state_raw()?).map_err(|source| HarnessError::Json {
            what: "terraform.tfstate",
            source,
        })
    }

    /// Writes a state file (e.g. one made by an older provider version).
    pub fn write_state(&self, state: &Value) -> Result<(), HarnessError> {
        self.write("terraform.tfstate", &state.to_string())
    }

    /// The command for `terraform <args>` with the workspace's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.tf.binary);
        cmd.args(args).current_dir(&self.work);
        // The caller's terraform settings must not leak in (CLI config, data dir, extra args).
        for (k, _) in std::env::vars_os() {
            if let Some(k) = k.to_str()
                && (k.starts_with("TF_CLI_ARGS")
                    || matches!(k, "TF_DATA_DIR" | "TF_WORKSPACE" | "TF_PLUGIN_CACHE_DIR"))
            {
                cmd.env_remove(k);
            }
        }
        cmd.env("TF_CLI_CONFIG_FILE", &self.cli_config)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts `terraform <args>` without waiting (e.g. to interrupt it).
    pub fn spawn(&self, args: &[&str]) -> Result<Running, HarnessError> {
        Running::spawn(
            self.command(args),
            args.iter().map(|a| (*a).to_owned()).collect(),
        )
    }

    /// Runs `terraform <args>` to completion (within the time limit).
    ///
    /// Fails with [`HarnessError::Inconsistent`] if terraform reports "Provider produced
    /// inconsistent result" (or "inconsistent final plan") anywhere: never acceptable.
    pub fn run(&self, args: &[&str]) -> Result<TfOutput, HarnessError> {
        let out = self.spawn(args)?.wait(self.timeout)?;
        check_consistent(&out)?;
        Ok(out)
    }

    /// `terraform init`.
    pub fn init(&self) -> Result<TfOutput, HarnessError> {
        self.run(&["init", "-input=false", "-no-color"])
    }

    /// `terraform validate -json` (a single JSON document; see [`TfOutput::diagnostics`]).
    pub fn validate(&self) -> Result<TfOutput, HarnessError> {
        self.run(&["validate", "-json", "-no-color"])
    }

    /// `terraform plan -json`.
    pub fn plan(&self) -> Result<TfOutput, HarnessError> {
        self.run(&["plan", "-json", "-input=false", "-no-color"])
    }

    /// `terraform apply -auto-approve -json`.
    pub fn apply(&self) -> Result<TfOutput, HarnessError> {
        self.run(&[
            "apply",
            "-auto-approve",
            "-json",
            "-input=false",
            "-no-color",
        ])
    }

    /// `terraform apply -refresh-only -auto-approve -json` (the successor of `terraform refresh`).
    pub fn refresh(&self) -> Result<TfOutput, HarnessError> {
        self.run(&[
            "apply",
            "-refresh-only",
            "-auto-approve",
            "-json",
            "-input=false",
            "-no-color",
        ])
    }

    /// `terraform destroy -auto-approve -json`.
    pub fn destroy(&self) -> Result<TfOutput, HarnessError> {
        self.run(&[
            "destroy",
            "-auto-approve",
            "-json",
            "-input=false",
            "-no-color",
        ])
    }

    /// `terraform import <address> <id>` (the CLI command; `import` blocks work through plan).
    pub fn import(&self, address: &str, id: &str) -> Result<TfOutput, HarnessError> {
        self.run(&["import", "-input=false", "-no-color", address, id])
    }

    /// `terraform show -json`, parsed (state as terraform presents it: `values.root_module`).
    pub fn show(&self) -> Result<Value, HarnessError> {
        let out = self.run(&["show", "-json", "-no-color"])?;
        out.assert_success();
        out.json()
    }

    /// `terraform output -json`, parsed (`{name: {value, type, sensitive}}`).
    pub fn outputs(&self) -> Result<Value, HarnessError> {
        let out = self.run(&["output", "-json", "-no-color"])?;
        out.assert_success();
        out.json()
    }

    /// The `values` of the resource at `address` in `terraform show -json` (root module only).
    pub fn resource_values(&self, address: &str) -> Result<Option<Value>, HarnessError> {
        let show = self.show()?;
        Ok(show["values"]["root_module"]["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["address"] == address))
            .map(|r| r["values"].clone()))
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Some(root) = self.root.take() {
            let _ = root.close();
        }
    }
}

fn check_consistent(out: &TfOutput) -> Result<(), HarnessError> {
    for needle in ["Provider produced inconsistent", "inconsistent final plan"] {
        if out.contains(needle) {
            return Err(HarnessError::Inconsistent {
                args: out.args.join(" "),
                output: out.combined(),
            });
        }
    }
    Ok(())
}

fn mkdir(path: &Path) -> Result<(), HarnessError> {
    std::fs::create_dir_all(path).map_err(HarnessError::io("creating directory", path))
}

fn write(path: &Path, contents: &str) -> Result<(), HarnessError> {
    std::fs::write(path, contents).map_err(HarnessError::io("writing", path))
}

/// A symlink keeps set-up cheap; terraform hashes the target. Copy when linking is impossible.
fn link_or_copy(from: &Path, to: &Path) -> Result<(), HarnessError> {
    let from = std::fs::canonicalize(from)
        .map_err(HarnessError::io("resolving provider executable", from))?;
    if to.exists() {
        return Ok(());
    }
    if std::os::unix::fs::symlink(&from, to).is_ok() {
        return Ok(());
    }
    std::fs::copy(&from, to)
        .map(|_| ())
        .map_err(HarnessError::io("copying provider executable to", to))
}

/// A double-quoted HCL string literal (paths may contain `\` or `"`).
fn hcl_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '$' => out.push_str("$$"),
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn go_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        os => os,
    }
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        arch => arch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcl_strings_are_escaped() {
        assert_eq!(
            hcl_string(r#"/a "b"\c${x}%{y}"#),
            r#""/a \"b\"\\c$${x}%%{y}""#
        );
    }

    #[test]
    fn workspace_layout_and_cleanup() {
        let tf = Terraform {
            binary: PathBuf::from("/bin/true"),
        };
        let exe = tempfile::NamedTempFile::new().unwrap();
        let p = ProviderBinary::from_path(exe.path(), "example.com/test/demo")
            .unwrap()
            .with_version("1.2.3");
        let ws = Workspace::new(&tf, &[&p], Install::DevOverrides).unwrap();
        let root = ws.root().to_path_buf();
        let platform = format!("{}_{}", go_os(), go_arch());
        assert!(
            root.join(format!(
                "mirror/example.com/test/demo/1.2.3/{platform}/terraform-provider-demo_v1.2.3"
            ))
            .exists()
        );
        assert!(root.join("overrides/terraform-provider-demo").exists());
        let cfg = std::fs::read_to_string(ws.cli_config()).unwrap();
        assert!(
            cfg.contains("dev_overrides") && cfg.contains("\"example.com/test/demo\""),
            "{cfg}"
        );
        ws.write("sub/main.tf", "x").unwrap();
        assert!(ws.dir().join("sub/main.tf").exists());
        drop(ws);
        assert!(!root.exists());
    }

    #[test]
    fn bad_source_is_rejected() {
        assert!(matches!(
            ProviderBinary::from_path("/x", "a/b"),
            Err(HarnessError::BadSource(_))
        ));
        assert!(matches!(
            ProviderBinary::from_path("/x", "a//c"),
            Err(HarnessError::BadSource(_))
        ));
    }
}
