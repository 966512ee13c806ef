//! Benchmarks of the constellation provider (issue 7):
//!
//! 1. `terraform plan` with only the image and attestation data sources vs. the same shape
//!    without a provider, in the same run; provider peak RSS (goals: ≤ 50 ms added, ≤ 20 MiB).
//! 2. With an image (`CONSTELLATION_BENCH_IMAGE_DIR`, default `image/out` when it exists):
//!    wall time of `terraform apply` of a 1 control plane + `BENCH_WORKERS` (default 2) cluster
//!    to verified, split into VM start, boot to first attestation, Init and joins (from the
//!    provider's log), then destroy.
//!
//! Run: `cargo bench -p acceptance --bench cluster` (or `make bench`). `BENCH_RUNS` sets the
//! plans per configuration (default 15).

use std::path::PathBuf;
use std::time::Instant;

use acceptance::bench::{RssMeter, compare_plans};
use acceptance::{Install, ProviderBinary, Workspace, workspace_root};

const SOURCE: &str = "registry.terraform.io/constellation-rs/constellation";

fn main() {
    let tf = acceptance::require_terraform!();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15)
        .max(1);
    let real = ProviderBinary::cargo_bin_profile(
        "terraform-provider-constellation",
        "terraform-provider-constellation",
        "release",
        SOURCE,
    )
    .expect("building the provider (release)");
    let meter = RssMeter::wrap(&real).expect("RSS meter");

    // 1. Plan overhead with the data sources on a synthetic image directory.
    let with = Workspace::new(&tf, &[&meter.provider], Install::Mirror).expect("workspace");
    let image = with.root().join("image");
    std::fs::create_dir_all(&image).expect("image dir");
    std::fs::write(image.join("disk.raw"), b"disk").expect("disk");
    std::fs::write(
        image.join("manifest.json"),
        r#"{"version":"0.1.0","diskSha256":"00","kubernetes":null}"#,
    )
    .expect("manifest");
    let pcrs: Vec<String> = [4, 9, 11, 12]
        .iter()
        .map(|i| {
            format!(
                r#""{i}":{{"expected":"{}","warnOnly":false}}"#,
                "ab".repeat(32)
            )
        })
        .collect();
    std::fs::write(
        image.join("measurements.json"),
        format!("{{{}}}", pcrs.join(",")),
    )
    .expect("measurements");
    with.write(
        "main.tf",
        &format!(
            r#"terraform {{
  required_providers {{
    constellation = {{ source = "{SOURCE}" }}
  }}
}}

data "constellation_image" "local" {{
  path = "{}"
}}

data "constellation_attestation" "local" {{
  variant      = "qemu-vtpm"
  measurements = data.constellation_image.local.measurements
}}

output "config" {{
  value = data.constellation_attestation.local.config_json
}}
"#,
            image.display()
        ),
    )
    .expect("config");
    let without = Workspace::new(&tf, &[], Install::Mirror).expect("workspace");
    without
        .write(
            "main.tf",
            r#"output "config" {
  value = sha256(jsonencode({ variant = "qemu-vtpm" }))
}
"#,
        )
        .expect("config");
    for ws in [&with, &without] {
        ws.init().expect("init").assert_success();
        ws.apply().expect("apply").assert_success();
    }
    compare_plans(&tf, "constellation:", &with, &without, &meter, runs).expect("plans");

    // 2. A real cluster, if an image is at hand.
    let image_dir = std::env::var_os("CONSTELLATION_BENCH_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("image/out"));
    if !image_dir.join("disk.raw").is_file() {
        acceptance::testkit::skip(
            "cluster (cluster apply)",
            &format!("no node image at {}", image_dir.display()),
            "run `make image` or set CONSTELLATION_BENCH_IMAGE_DIR",
        );
        return;
    }
    let workers: u32 = std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut ws = Workspace::new(&tf, &[&real], Install::Mirror).expect("workspace");
    ws.set_timeout(std::time::Duration::from_secs(3600));
    let log = ws.root().join("provider.log");
    ws.write(
        "main.tf",
        &format!(
            r#"terraform {{
  required_providers {{
    constellation = {{ source = "{SOURCE}" }}
  }}
}}

data "constellation_image" "local" {{
  path = "{image}"
}}

data "constellation_attestation" "local" {{
  variant      = "qemu-vtpm"
  measurements = data.constellation_image.local.measurements
}}

resource "constellation_cluster" "local" {{
  name               = "bench"
  image_reference    = data.constellation_image.local.reference
  attestation_config = data.constellation_attestation.local.config_json
  worker_count       = {workers}
  cloud {{
    qemu {{
      vcpus          = 1
      memory_mib     = 1024
      state_disk_mib = 256
    }}
  }}
}}

data "constellation_cluster_verification" "cp" {{
  endpoint           = constellation_cluster.local.verification_endpoint
  attestation_config = data.constellation_attestation.local.config_json
  cluster_id         = constellation_cluster.local.cluster_id
}}

output "verified" {{
  value = data.constellation_cluster_verification.cp.verified
}}
"#,
            image = image_dir.display()
        ),
    )
    .expect("config");
    ws.init().expect("init").assert_success();
    ws.set_env("TF_LOG_PROVIDER", "info");
    ws.set_env("TF_LOG_PATH", &log.display().to_string());
    let t0 = Instant::now();
    let apply = ws.apply().expect("apply");
    let wall = t0.elapsed();
    let ok = apply.success();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let at = |needle: &str, key: &str| -> Option<f64> {
        let line = text.lines().find(|l| l.contains(needle))?;
        let v = line.split(&format!("{key}=")).nth(1)?;
        v.split_whitespace().next()?.trim_matches('"').parse().ok()
    };
    println!(
        "cluster apply (1 control plane + {workers} workers) to verified: {:.1} s{}",
        wall.as_secs_f64(),
        if ok { "" } else { " (FAILED)" }
    );
    let started = at("VMs started", "secs");
    let attested = at("first control plane attested", "after_s");
    let init = at("cluster initialised:", "secs");
    let joined = at("all nodes joined", "secs");
    if let (Some(s), Some(a), Some(i), Some(j)) = (started, attested, init, joined) {
        println!("  VMs started:                     {s:>6.1} s");
        println!("  boot to first attestation:       {a:>6.1} s");
        println!("  Init (attested → initialised):   {:>6.1} s", i - s - a);
        println!("  joins (initialised → all joined): {:>5.1} s", j - i);
        println!("  goal: <= 30 s in all");
    } else {
        println!(
            "  split not found in the provider log ({} lines at {}): started={started:?} attested={attested:?} init={init:?} joined={joined:?}",
            text.lines().count(),
            log.display()
        );
        if !ok {
            println!("{}", apply.combined());
        }
    }
    ws.set_env("TF_LOG_PROVIDER", "");
    let d = ws.destroy().expect("destroy");
    d.assert_success();
}
