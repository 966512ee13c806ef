//! `terraform-provider-tfexample`: the example provider of the tfplugin crate.
//!
//! It keeps files under a configured root directory and exercises every protocol feature the
//! library supports; the acceptance tests in `acceptance/tests/tfplugin_*.rs` drive it with the
//! real terraform CLI. Run by hand it explains that it is a plugin and exits non-zero.

mod provider;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match tfplugin::serve(provider::Example).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
