//! Generates (`--write <dir>`) or checks (`--check <dir>`) the example provider's
//! registry-style docs from its schemas and the HCL under `hcl/`.

mod provider;

fn main() -> std::process::ExitCode {
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/tfexample/hcl");
    tfplugin::docs::Docs::new("tfexample", examples)
        .main(&provider::Example, std::env::args().skip(1))
}
