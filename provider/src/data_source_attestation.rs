//! `constellation_attestation`: builds the cluster's attestation config (variant, measurements
//! from the image, hardware policy) in the JSON format the node agent and `attest-verify` read.

use std::collections::BTreeMap;

use constellation_attest::config::{AttestationConfig, ConfigError, supported_variants};
use constellation_attest::policy::Policy;
use constellation_attest::variant::Variant;
use serde::{Deserialize, Serialize};
use tfplugin::provider::{Context, DataSource, StateResponse};
use tfplugin::{Attribute, AttributePath, Block, Diagnostics, Schema, Type, Value};

use crate::measurements_attr::{self, MeasurementModel};

/// `constellation_attestation` data source.
#[derive(Debug, Default, Clone, Copy)]
pub struct AttestationDataSource;

#[derive(Debug, Deserialize)]
struct Config {
    variant: String,
    measurements: BTreeMap<String, MeasurementModel>,
    policy_json: Option<String>,
}

#[derive(Debug, Serialize)]
struct State {
    variant: String,
    measurements: BTreeMap<String, MeasurementModel>,
    policy_json: Option<String>,
    config_json: String,
}

fn variant_list() -> String {
    Variant::ALL
        .iter()
        .map(|v| format!("`{}`", v.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks the configuration; `Ok` carries the config to emit.
fn build(cfg: &Config) -> Result<AttestationConfig, Diagnostics> {
    let mut d = Diagnostics::new();
    let variant = match cfg.variant.parse::<Variant>() {
        Ok(v) if supported_variants().contains(&v) => Some(v),
        Ok(v) => {
            d.error_at(
                AttributePath::new("variant"),
                "Attestation variant not supported yet",
                format!(
                    "`{v}` is a known variant, but this provider cannot validate it yet. Supported: {}.",
                    supported_variants().iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
                ),
            );
            None
        }
        Err(_) => {
            d.error_at(
                AttributePath::new("variant"),
                "Unknown attestation variant",
                format!(
                    "`{}` is not a variant. Use one of: {}.",
                    cfg.variant,
                    variant_list()
                ),
            );
            None
        }
    };
    let measurements =
        measurements_attr::from_model(&cfg.measurements, &AttributePath::new("measurements"))
            .map_err(|e| d.extend(e))
            .ok();
    if measurements.as_ref().is_some_and(|m| m.0.is_empty()) {
        d.error_at(
            AttributePath::new("measurements"),
            "No measurements",
            "An attestation config without measurements would accept any image. Pass the image's \
             measurements, e.g. `data.constellation_image.this.measurements`."
                .to_string(),
        );
    }
    // Omitted policy fields take the variant's defaults (Azure's ID-key digests, VLEK-only on
    // AWS, a minimum SEV-SNP TCB, ...).
    let policy = match &cfg.policy_json {
        None => variant.map(Policy::for_variant),
        // An unknown variant is reported at its attribute; the policy is still checked.
        Some(json) => match variant.map_or_else(
            || Policy::from_json(json.as_bytes()),
            |v| Policy::from_json_for(v, json.as_bytes()),
        ) {
            Ok(p) => Some(p),
            Err(e) => {
                d.error_at(
                    AttributePath::new("policy_json"),
                    "Invalid hardware policy",
                    format!("{e}. The format is described in docs/attestation-policy.md."),
                );
                None
            }
        },
    };
    match (variant, measurements, policy) {
        (Some(variant), Some(measurements), Some(policy)) if !d.has_errors() => {
            let config = AttestationConfig {
                variant,
                measurements,
                policy,
            };
            // Build the validators now, so a config that could never validate anything (a
            // cloud variant without its settings) fails here rather than at cluster creation.
            match config.validators() {
                Ok(_) => Ok(config),
                // The shared fail-open rule (at least one enforced boot register).
                Err(e @ ConfigError::FailOpen { .. }) => {
                    d.error_at(
                        AttributePath::new("measurements"),
                        "Attestation config would accept any image",
                        format!("{e}."),
                    );
                    Err(d)
                }
                Err(e) => {
                    d.error_at(
                        AttributePath::new("policy_json"),
                        "Incomplete attestation policy",
                        format!("{e}. See docs/attestation-policy.md for what `{variant}` needs."),
                    );
                    Err(d)
                }
            }
        }
        _ => Err(d),
    }
}

#[tfplugin::async_trait]
impl DataSource for AttestationDataSource {
    fn type_name(&self) -> &str {
        "constellation_attestation"
    }

    fn schema(&self) -> Schema {
        Schema::new(
            Block::new()
                .description(
                    "Builds a cluster's attestation config: the variant every node attests with, \
                     the measurements it must show (usually those of a `constellation_image`) \
                     and the hardware policy for SEV-SNP/TDX variants. `config_json` is the \
                     document the cluster's JoinService enforces and `attest-verify` reads.",
                )
                .attribute(Attribute::required("variant", Type::String).description(
                    "Attestation variant, e.g. `qemu-vtpm` for the local backend. Known variants: \
                     `qemu-vtpm`, `aws-sev-snp`, `aws-nitro-tpm`, `azure-sev-snp`, `azure-tdx`, \
                     `azure-trustedlaunch`, `gcp-sev-es`, `gcp-sev-snp`, `qemu-tdx`.",
                ))
                .attribute(measurements_attr::attribute(
                    "measurements",
                    false,
                    "Expected measurements by register index, e.g. \
                     `data.constellation_image.this.measurements`.",
                ))
                .attribute(
                    Attribute::optional("policy_json", Type::String).description(
                        "Hardware policy (JSON, docs/attestation-policy.md): minimum TCB, allowed \
                     VMPLs, TDX TCB statuses and so on. Omitted fields take the variant's \
                     defaults: a minimum SEV-SNP TCB (Milan), Azure's ID-key digests for \
                     `azure-sev-snp`, VLEK-only signing by an AWS CSP for `aws-sev-snp`, TDX TCB \
                     status `UpToDate` with both CRLs. Settings no default can supply must be \
                     given: `gcp.compute_api_url` for `gcp-sev-snp` and `gcp-sev-es`, `tdx.mrtd` \
                     and `tdx.mrseam` for `azure-tdx`. A policy that leaves the attestation key's \
                     binding to the cloud incomplete is an error naming the setting.",
                    ),
                )
                .attribute(
                    Attribute::computed("config_json", Type::String).description(
                        "The attestation config as canonical JSON: the same input yields the same \
                     string, so plans stay stable.",
                    ),
                ),
        )
    }

    async fn read(&self, _ctx: &Context, config: Value, _meta: Value) -> StateResponse {
        let result = (|| {
            let cfg: Config = tfplugin::from_value(&config).map_err(crate::binding_diag)?;
            let attestation = build(&cfg)?;
            let state = State {
                variant: cfg.variant,
                measurements: cfg.measurements,
                policy_json: cfg.policy_json,
                config_json: attestation.to_json(),
            };
            tfplugin::to_value(&state, &self.schema().value_type()).map_err(crate::binding_diag)
        })();
        match result {
            Ok(state) => StateResponse::new(state),
            Err(d) => StateResponse::from_diagnostics(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(variant: &str, expected: &str) -> Config {
        let mut measurements = BTreeMap::new();
        measurements.insert(
            "4".to_string(),
            MeasurementModel {
                expected: expected.into(),
                warn_only: false,
            },
        );
        Config {
            variant: variant.into(),
            measurements,
            policy_json: None,
        }
    }

    #[test]
    fn builds_canonical_config() {
        let c = build(&cfg("qemu-vtpm", &"ab".repeat(32))).unwrap();
        let json = c.to_json();
        assert_eq!(AttestationConfig::from_json(json.as_bytes()).unwrap(), c);
        assert!(
            json.starts_with(r#"{"variant":"qemu-vtpm","measurements":{"4":"#),
            "{json}"
        );
    }

    #[test]
    fn variant_defaults_apply_and_incomplete_bindings_name_the_setting() {
        // azure-sev-snp without policy_json: Azure's ID-key digests and a minimum TCB.
        let c = build(&cfg("azure-sev-snp", &"ab".repeat(32))).unwrap();
        assert!(!c.policy.snp.accepted_id_key_digests.is_empty());
        assert!(!c.policy.snp.minimum_tcb_by_generation.is_empty());
        // azure-tdx cannot default MRTD/MRSEAM: refused at policy_json, naming them.
        let d = build(&cfg("azure-tdx", &"ab".repeat(32))).unwrap_err();
        let text = format!("{d:?}");
        assert!(text.contains("policy.tdx.mrtd"), "{text}");
        assert!(
            d.iter().any(|d| d
                .attribute
                .as_ref()
                .is_some_and(|a| a.to_string() == "policy_json")),
            "{text}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_its_attribute() {
        let mut c = cfg("no-such-variant", "zz");
        c.policy_json = Some("{".into());
        let d = build(&c).unwrap_err();
        let paths: Vec<String> = d
            .iter()
            .filter_map(|d| d.attribute.as_ref().map(ToString::to_string))
            .collect();
        assert!(paths.contains(&"variant".to_string()), "{paths:?}");
        assert!(
            paths.contains(&r#"measurements["4"].expected"#.to_string()),
            "{paths:?}"
        );
        assert!(paths.contains(&"policy_json".to_string()), "{paths:?}");
    }

    #[test]
    fn fail_open_measurements_are_refused_at_the_measurements_attribute() {
        let mut c = cfg("qemu-vtpm", &"ab".repeat(32));
        if let Some(m) = c.measurements.get_mut("4") {
            m.warn_only = true;
        }
        let mut firmware_only = cfg("qemu-vtpm", &"ab".repeat(32));
        firmware_only.measurements = BTreeMap::from([(
            "0".to_string(),
            MeasurementModel {
                expected: "ab".repeat(32),
                warn_only: false,
            },
        )]);
        for c in [c, firmware_only] {
            let d = build(&c).unwrap_err();
            let hit = d
                .iter()
                .find(|d| d.summary == "Attestation config would accept any image")
                .unwrap_or_else(|| panic!("{d:?}"));
            assert_eq!(
                hit.attribute.as_ref().map(ToString::to_string).as_deref(),
                Some("measurements")
            );
            assert!(hit.detail.contains("\"warnOnly\": false"), "{}", hit.detail);
        }
    }

    #[test]
    fn known_but_unsupported_variant_says_so() {
        let supported = constellation_attest::config::supported_variants();
        for v in constellation_attest::Variant::ALL {
            let r = build(&cfg(&v.to_string(), &"ab".repeat(32)));
            if supported.contains(&v) {
                continue;
            }
            let d = r.unwrap_err();
            assert!(
                d.iter().any(|d| d.summary.contains("not supported yet")),
                "{v}"
            );
        }
    }
}
