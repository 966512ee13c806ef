//! `constellation_image`: resolves a node image for a cloud and exposes its version, reference
//! and the measurements precalculated by the image build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use constellation_attest::measurements::Measurements;
use serde::{Deserialize, Serialize};
use tfplugin::provider::{Context, DataSource, StateResponse};
use tfplugin::{Attribute, AttributePath, Block, Diagnostics, Schema, Type, Value};

use crate::measurements_attr::{self, MeasurementModel};

/// `constellation_image` data source.
#[derive(Debug, Default, Clone, Copy)]
pub struct ImageDataSource;

const CLOUDS: &[&str] = &["qemu"];

#[derive(Debug, Deserialize)]
struct Config {
    cloud: Option<String>,
    path: Option<String>,
}

#[derive(Debug, Serialize)]
struct State {
    cloud: String,
    path: String,
    version: String,
    reference: String,
    sha256: String,
    kubernetes_version: Option<String>,
    measurements: BTreeMap<String, MeasurementModel>,
}

/// The parts of `manifest.json` (written by `make image`) the provider reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    version: String,
    disk_sha256: String,
    kubernetes: Option<String>,
}

fn error_at(path: &str, summary: &str, detail: String) -> Diagnostics {
    let mut d = Diagnostics::new();
    d.error_at(AttributePath::new(path), summary, detail);
    d
}

/// Reads and checks an image directory produced by `make image`.
fn load_qemu_image(dir: &Path) -> Result<(Manifest, Measurements, PathBuf), Diagnostics> {
    let hint = "Build it with `make image` and point `path` at its output directory (image/out).";
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| {
            error_at(
                "path",
                "Image not found",
                format!("Cannot read {}: {e}. {hint}", dir.join(name).display()),
            )
        })
    };
    let manifest: Manifest = serde_json::from_slice(&read("manifest.json")?).map_err(|e| {
        error_at(
            "path",
            "Invalid image manifest",
            format!("{}: {e}. {hint}", dir.join("manifest.json").display()),
        )
    })?;
    let measurements = Measurements::from_json(&String::from_utf8_lossy(&read(
        "measurements.json",
    )?))
    .map_err(|e| {
        error_at(
            "path",
            "Invalid image measurements",
            format!("{}: {e}. {hint}", dir.join("measurements.json").display()),
        )
    })?;
    let disk = dir.join("disk.raw");
    if !disk.is_file() {
        return Err(error_at(
            "path",
            "Image disk missing",
            format!("{} does not exist. {hint}", disk.display()),
        ));
    }
    let disk = disk.canonicalize().unwrap_or(disk);
    Ok((manifest, measurements, disk))
}

#[tfplugin::async_trait]
impl DataSource for ImageDataSource {
    fn type_name(&self) -> &str {
        "constellation_image"
    }

    fn schema(&self) -> Schema {
        Schema::new(
            Block::new()
                .description(
                    "Resolves the node image for a cloud and exposes its version, the reference \
                     a cluster boots from, and the measurements precalculated by the image build \
                     (`make image`). Feed `measurements` to `constellation_attestation`.",
                )
                .attribute(Attribute::optional("cloud", Type::String).description(
                    "Cloud the image is for. Only `qemu` (the local backend) is supported so far; \
                     defaults to `qemu`.",
                ))
                .attribute(Attribute::optional("path", Type::String).description(
                    "For `qemu`: the directory `make image` wrote (`image/out`), holding \
                     `disk.raw`, `manifest.json` and `measurements.json`. Required for `qemu`.",
                ))
                .attribute(Attribute::computed("version", Type::String).description("Image version from its manifest."))
                .attribute(Attribute::computed("reference", Type::String).description(
                    "What a cluster boots: for `qemu` the absolute path of `disk.raw`.",
                ))
                .attribute(Attribute::computed("sha256", Type::String).description("SHA-256 of the image disk, from the manifest."))
                .attribute(Attribute::computed("kubernetes_version", Type::String).description(
                    "Kubernetes version the image carries; null for an image without Kubernetes.",
                ))
                .attribute(measurements_attr::attribute(
                    "measurements",
                    true,
                    "Expected measurements of the image, by register index.",
                )),
        )
    }

    async fn validate(&self, _ctx: &Context, config: &Value) -> Diagnostics {
        let mut d = Diagnostics::new();
        if let Some(cloud) = config.get_attr("cloud").and_then(Value::as_str)
            && !CLOUDS.contains(&cloud)
        {
            d.error_at(
                AttributePath::new("cloud"),
                "Unsupported cloud",
                format!(
                    "`{cloud}` is not supported yet; use one of: {}.",
                    CLOUDS.join(", ")
                ),
            );
        }
        d
    }

    async fn read(&self, _ctx: &Context, config: Value, _meta: Value) -> StateResponse {
        let result = (|| {
            let cfg: Config = tfplugin::from_value(&config).map_err(crate::binding_diag)?;
            let cloud = cfg.cloud.unwrap_or_else(|| "qemu".to_owned());
            let Some(path) = cfg.path else {
                return Err(error_at(
                    "path",
                    "Missing image path",
                    "The `qemu` image is a local directory: set `path` to the output of `make image` (image/out).".into(),
                ));
            };
            let (manifest, measurements, disk) = load_qemu_image(Path::new(&path))?;
            let state = State {
                cloud,
                path,
                version: manifest.version,
                reference: disk.display().to_string(),
                sha256: manifest.disk_sha256,
                kubernetes_version: manifest.kubernetes,
                measurements: measurements_attr::to_model(&measurements),
            };
            tfplugin::to_value(&state, &self.schema().value_type()).map_err(crate::binding_diag)
        })();
        match result {
            Ok(state) => StateResponse::new(state),
            Err(d) => StateResponse::from_diagnostics(d),
        }
    }
}
