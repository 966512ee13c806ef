//! The constellation provider's data sources and function through the real terraform CLI.
//!
//! The image directory is written by the test in the layout `make image` produces (manifest,
//! measurements, disk); booting that image is the image crate's and the cluster resource's job.

#![allow(clippy::unwrap_used)] // Test set-up: a failed step should stop the test loudly.

use acceptance::{Install, ProviderBinary, Workspace, require_terraform};
use serde_json::Value;

const SOURCE: &str = "registry.terraform.io/constellation-rs/constellation";

fn provider() -> ProviderBinary {
    ProviderBinary::cargo_bin(
        "terraform-provider-constellation",
        "terraform-provider-constellation",
        SOURCE,
    )
    .expect("building terraform-provider-constellation")
}

/// Writes an image directory like `make image` does; returns its path.
fn write_image(dir: &std::path::Path, pcr4: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("disk.raw"), b"disk").unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        r#"{"version":"0.1.0","diskSha256":"d1sk","kubernetes":null,"inputs":[]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("measurements.json"),
        format!(
            r#"{{"4":{{"expected":"{pcr4}","warnOnly":false}},"0":{{"expected":"{}","warnOnly":true}}}}"#,
            "00".repeat(32)
        ),
    )
    .unwrap();
}

fn config(image: &std::path::Path, variant: &str) -> String {
    format!(
        r#"
terraform {{
  required_providers {{
    constellation = {{ source = "{SOURCE}" }}
  }}
}}

data "constellation_image" "this" {{
  path = "{image}"
}}

data "constellation_attestation" "this" {{
  variant      = "{variant}"
  measurements = data.constellation_image.this.measurements
}}

output "config" {{
  value = data.constellation_attestation.this.config_json
}}

output "image" {{
  value = data.constellation_image.this.reference
}}

output "pcr15" {{
  value = provider::constellation::expected_pcr15("{id}")
}}
"#,
        image = image.display(),
        id = "11".repeat(32),
    )
}

#[test]
fn image_attestation_and_function_reach_outputs_and_plans_are_stable() {
    let tf = require_terraform!();
    let p = provider();
    let ws = Workspace::new(&tf, &[&p], Install::Mirror).unwrap();
    let image = ws.root().join("image");
    let pcr4 = "ab".repeat(32);
    write_image(&image, &pcr4);
    ws.write("main.tf", &config(&image, "qemu-vtpm")).unwrap();
    ws.init().unwrap().assert_success();
    ws.apply().unwrap().assert_success();

    let outputs = ws.outputs().unwrap();
    let cfg: Value = serde_json::from_str(outputs["config"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(cfg["variant"], "qemu-vtpm");
    assert_eq!(cfg["measurements"]["4"]["expected"], pcr4);
    assert_eq!(cfg["measurements"]["0"]["warnOnly"], true);
    assert!(
        outputs["image"]["value"]
            .as_str()
            .unwrap()
            .ends_with("/image/disk.raw")
    );
    // SHA256(0^32 || SHA256(0x11 * 32)), computed independently.
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update([0u8; 32]);
    h.update(sha2::Sha256::digest([0x11u8; 32]));
    assert_eq!(outputs["pcr15"]["value"], hex::encode(h.finalize()));

    let plan = ws.plan().unwrap();
    plan.assert_success();
    assert!(
        plan.no_changes(),
        "second plan must show no changes:\n{}",
        plan.stdout
    );

    // The image changes → the attestation config follows.
    write_image(&image, &"cd".repeat(32));
    ws.apply().unwrap().assert_success();
    let cfg: Value =
        serde_json::from_str(ws.outputs().unwrap()["config"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(cfg["measurements"]["4"]["expected"], "cd".repeat(32));
}

#[test]
fn bad_input_is_reported_at_the_attribute() {
    let tf = require_terraform!();
    let p = provider();
    let ws = Workspace::new(&tf, &[&p], Install::Mirror).unwrap();
    let image = ws.root().join("image");
    write_image(&image, &"ab".repeat(32));
    ws.write("main.tf", &config(&image, "no-such-variant"))
        .unwrap();
    ws.init().unwrap().assert_success();
    let plan = ws.plan().unwrap();
    plan.assert_failure();
    assert!(
        plan.contains("Unknown attestation variant"),
        "{}",
        plan.combined()
    );
    assert!(
        plan.contains("qemu-vtpm"),
        "the error lists the valid variants: {}",
        plan.combined()
    );

    ws.write("main.tf", &config(&ws.root().join("missing"), "qemu-vtpm"))
        .unwrap();
    let plan = ws.plan().unwrap();
    plan.assert_failure();
    assert!(plan.contains("Image not found"), "{}", plan.combined());
    assert!(
        plan.contains("make image"),
        "the error says what to do: {}",
        plan.combined()
    );
}
