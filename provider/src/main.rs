//! terraform-provider-constellation: started by terraform, never by hand (run by hand it says so).

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match tfplugin::serve(terraform_provider_constellation::ConstellationProvider).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
