//! `terraform plan` with the tfplugin example provider vs. the same configuration shape without
//! any provider, in the same run; prints medians and the provider's peak RSS.
//!
//! Run: `cargo bench -p acceptance --bench tfplugin_plan` (or `make bench`).
//! `BENCH_RUNS` sets the number of plans per configuration (default 15); `BENCH_PROVIDER` a
//! prebuilt provider executable to measure instead of the release build of the example.
//! Goals from issue 2: ≤ 50 ms added per plan, provider peak RSS ≤ 20 MiB.

use acceptance::bench::{RssMeter, compare_plans};
use acceptance::{Install, ProviderBinary, Workspace};

const SOURCE: &str = "example.com/tfplugin/tfexample";

fn main() {
    let tf = acceptance::require_terraform!();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15)
        .max(1);
    // BENCH_PROVIDER measures a prebuilt executable instead (e.g. built with other flags).
    let real = match std::env::var_os("BENCH_PROVIDER") {
        Some(path) => ProviderBinary::from_path(path, SOURCE).expect("source address"),
        None => ProviderBinary::cargo_example_profile(
            "tfplugin",
            "terraform-provider-tfexample",
            "release",
            SOURCE,
        )
        .expect("building the example provider (release)"),
    };

    let meter = RssMeter::wrap(&real).expect("RSS meter");
    let with = Workspace::new(&tf, &[&meter.provider], Install::Mirror).expect("workspace");
    let data = with.root().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    with.write(
        "main.tf",
        &format!(
            r#"terraform {{
  required_providers {{
    tfexample = {{ source = "{SOURCE}" }}
  }}
}}

provider "tfexample" {{
  root = "{}"
}}

resource "tfexample_file" "f" {{
  count   = 5
  name    = "f${{count.index}}.txt"
  content = "content ${{count.index}}"
}}

data "tfexample_file" "first" {{
  name = tfexample_file.f[0].name
}}

output "digest" {{
  value = provider::tfexample::sha256(data.tfexample_file.first.content)
}}
"#,
            data.display()
        ),
    )
    .expect("config");

    let without = Workspace::new(&tf, &[], Install::Mirror).expect("workspace");
    without
        .write(
            "main.tf",
            r#"resource "terraform_data" "f" {
  count = 5
  input = "content ${count.index}"
}

output "digest" {
  value = sha256(terraform_data.f[0].output)
}
"#,
        )
        .expect("config");

    for ws in [&with, &without] {
        ws.init().expect("init").assert_success();
        ws.apply().expect("apply").assert_success();
    }
    compare_plans(&tf, "tfexample:", &with, &without, &meter, runs).expect("plans");
}
