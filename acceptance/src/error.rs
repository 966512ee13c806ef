//! The harness's error type.

use std::path::PathBuf;

/// What went wrong while preparing or running terraform.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// A file or directory operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What the harness was doing.
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A process could not be started.
    #[error("cannot start {program}: {source} (is it installed and on PATH?)")]
    Spawn {
        /// The program that failed to start.
        program: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `cargo build` of a provider failed.
    #[error("building the provider with `{command}` failed ({status}); cargo said:\n{stderr}")]
    Build {
        /// The cargo command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its standard error.
        stderr: String,
    },
    /// cargo finished but did not report the expected executable.
    #[error("cargo built `{target}` but reported no executable for it; is the target name right?")]
    NoExecutable {
        /// The requested example or bin target.
        target: String,
    },
    /// A provider source address is not `hostname/namespace/type`.
    #[error("provider source address `{0}` is not of the form hostname/namespace/type")]
    BadSource(String),
    /// A run did not finish within its time limit (its process group was killed).
    #[error(
        "`terraform {args}` did not finish within {secs} s; killed it. Output so far:\n{output}"
    )]
    Timeout {
        /// The terraform arguments.
        args: String,
        /// The limit in seconds.
        secs: u64,
        /// Standard output and error collected until the kill.
        output: String,
    },
    /// Terraform's state or JSON output could not be parsed.
    #[error("cannot parse {what} as JSON: {source}")]
    Json {
        /// What was being parsed.
        what: &'static str,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// Terraform reported that the provider produced an inconsistent result or final plan.
    #[error(
        "`terraform {args}` reported an inconsistent provider result (a provider bug):\n{output}"
    )]
    Inconsistent {
        /// The terraform arguments.
        args: String,
        /// The whole output.
        output: String,
    },
    /// Sending a signal failed.
    #[error("cannot signal process group {pgid}: {source}")]
    Signal {
        /// The process group.
        pgid: i32,
        /// The underlying error.
        source: nix::Error,
    },
}

impl HarnessError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| HarnessError::Io {
            action,
            path,
            source,
        }
    }
}
