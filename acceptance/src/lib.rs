//! Acceptance-test harness: builds a provider, runs the real terraform CLI against it.
//!
//! Every acceptance test in this repository goes through this crate:
//!
//! 1. [`ProviderBinary`] builds (once per test process) or locates a provider executable.
//! 2. [`Terraform::from_env`] finds the CLI (`TF_BINARY`, else `terraform` on `PATH`; `tofu`
//!    works the same way). Tests call [`require_terraform!`], which skips the test when it is
//!    absent, or fails it under `CI=true` (`constellation_testkit::skip`).
//! 3. [`Workspace`] is a temporary directory with its own CLI configuration that installs the
//!    provider either through `dev_overrides` or through a local filesystem mirror (so `terraform
//!    init` works without any registry), plus helpers to write `.tf` files, run commands, parse
//!    `-json` output and read the state.
//! 4. Every terraform process runs in its own process group; the group is killed when the run
//!    ends or the handle is dropped, so no terraform or provider process outlives a test, even on
//!    panic. The temporary directory is removed on drop (set `ACCEPTANCE_KEEP=1` to keep it).
//!
//! ```no_run
//! use acceptance::{Install, ProviderBinary, Terraform, Workspace};
//! let tf = Terraform::from_env().expect("terraform on PATH");
//! let provider = ProviderBinary::cargo_example(
//!     "tfplugin", "terraform-provider-tfexample", "example.com/test/tfexample")?;
//! let ws = Workspace::new(&tf, &[&provider], Install::Mirror)?;
//! ws.write("main.tf", r#"resource "tfexample_file" "a" { name = "a" }"#)?;
//! ws.init()?.assert_success();
//! ws.apply()?.assert_success();
//! # Ok::<(), acceptance::HarnessError>(())
//! ```

pub mod bench;
mod error;
pub mod flood;
mod output;
mod process;
mod provider;
mod workspace;

pub use error::HarnessError;
pub use output::TfOutput;
pub use process::{Running, process_group_members};
pub use provider::{ProviderBinary, build_example, workspace_root};
pub use workspace::{Install, Terraform, Workspace};

#[doc(hidden)]
pub use constellation_testkit as testkit;

/// Evaluates to the [`Terraform`] handle; when no terraform CLI is found, skips the calling test
/// (returns early) or, under `CI=true`, fails it (`constellation_testkit::skip`).
#[macro_export]
macro_rules! require_terraform {
    () => {
        match $crate::Terraform::from_env() {
            Some(tf) => tf,
            None => {
                $crate::testkit::skip_current(
                    "no terraform CLI found (TF_BINARY, else terraform on PATH)",
                    "install terraform or set TF_BINARY; scripts/install-deps.sh checks for it",
                );
                return;
            }
        }
    };
}
