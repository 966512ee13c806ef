//! Writes (`--write docs`) or checks (`--check docs`) the provider's registry docs, generated
//! from the schemas and the HCL under examples/ (`make docs`, `make docs-check`).

fn main() -> std::process::ExitCode {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    tfplugin::docs::Docs::new("constellation", examples).main(
        &terraform_provider_constellation::ConstellationProvider,
        std::env::args().skip(1),
    )
}
