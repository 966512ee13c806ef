//! `terraform plan` with the tfplugin example provider vs. the same configuration shape without
//! any provider, in the same run; prints medians and the provider's peak RSS.
//!
//! Run: `cargo bench -p acceptance --bench tfplugin_plan` (or `make bench`).
//! `BENCH_RUNS` sets the number of plans per configuration (default 15); `BENCH_PROVIDER` a
//! prebuilt provider executable to measure instead of the release build of the example.
//! Goals from issue 2: ≤ 50 ms added per plan, provider peak RSS ≤ 20 MiB.

use acceptance::{Install, ProviderBinary, Terraform, Workspace};
use std::path::Path;
use std::time::{Duration, Instant};

const SOURCE: &str = "example.com/tfplugin/tfexample";

fn main() {
    let Some(tf) = Terraform::from_env() else {
        eprintln!("SKIPPED: no terraform CLI found (TF_BINARY or PATH)");
        return;
    };
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

    // The provider runs under GNU time, which appends its peak RSS (KiB) to rss.log on exit.
    let meter = tempfile::tempdir().expect("temp dir");
    let log = meter.path().join("rss.log");
    let wrapper = meter.path().join("terraform-provider-tfexample");
    let script = format!(
        "#!/bin/sh\nexec /usr/bin/time -f '%M' -a -o '{}' '{}' \"$@\"\n",
        log.display(),
        real.path.display()
    );
    std::fs::write(&wrapper, script).expect("writing wrapper");
    make_executable(&wrapper);
    let measured = ProviderBinary::from_path(&wrapper, SOURCE).expect("source address");
    if !Path::new("/usr/bin/time").exists() {
        eprintln!("note: /usr/bin/time missing (Debian package `time`); RSS will not be reported");
    }

    let with = Workspace::new(&tf, &[&measured], Install::Mirror).expect("workspace");
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
    let _ = std::fs::remove_file(&log);

    let plan = ["plan", "-input=false", "-no-color", "-lock=false"];
    let mut t_with = Vec::new();
    let mut t_without = Vec::new();
    // Alternate so that background load hits both series alike.
    for _ in 0..runs {
        for (ws, out) in [(&with, &mut t_with), (&without, &mut t_without)] {
            let t0 = Instant::now();
            let r = ws.run(&plan).expect("plan");
            out.push(t0.elapsed());
            r.assert_success();
            assert!(r.stdout.contains("No changes"), "{}", r.combined());
        }
    }
    let m_with = median(&mut t_with);
    let m_without = median(&mut t_without);
    println!("terraform: {}", tf.version().unwrap_or_default());
    println!("plan runs per configuration: {runs}");
    // Figures scale with machine load; record it next to them.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average at end: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("median plan without provider: {:>8.1} ms", ms(m_without));
    println!("median plan with tfexample:   {:>8.1} ms", ms(m_with));
    println!(
        "added by the provider:        {:>8.1} ms (goal <= 50 ms)",
        ms(m_with) - ms(m_without)
    );

    let mut rss: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    rss.sort_unstable();
    if let (Some(max), Some(mid)) = (rss.last(), rss.get(rss.len() / 2)) {
        println!(
            "provider peak RSS: max {:.1} MiB, median {:.1} MiB over {} starts (goal <= 20 MiB)",
            *max as f64 / 1024.0,
            *mid as f64 / 1024.0,
            rss.len()
        );
        println!(
            "provider starts per plan: {:.1}",
            rss.len() as f64 / runs as f64
        );
    } else {
        println!("provider peak RSS: not measured");
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn make_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}
