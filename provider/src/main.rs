//! terraform-provider-constellation: started by terraform, never by hand (run by hand it says so).

// Two workers, not one thread: attestation validators may wait for a certificate or collateral
// service during a TLS handshake (handed off with block_in_place), and terraform's other RPCs
// (Stop among them) must still be served meanwhile.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    match tfplugin::serve(terraform_provider_constellation::ConstellationProvider).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
