//! The cluster's attestation config: the variant nodes must attest with, the measurements they
//! must show and the hardware policy for SNP/TDX variants.
//!
//! This is the one document that flows from Terraform (the `constellation_attestation` data
//! source emits it) to the provider's validators and to the JoinService of every control plane
//! (set through the management API). JSON form, documented in docs/attestation-policy.md:
//!
//! ```json
//! {"variant": "qemu-vtpm",
//!  "measurements": {"4": {"expected": "<hex>", "warnOnly": false}},
//!  "policy": {"version": 1, "snp": {...}, "tdx": {...}}}
//! ```
//!
//! `policy` (and any field in it) may be omitted; the variant's defaults
//! ([`Policy::for_variant`]) then apply. [`AttestationConfig::validators`] refuses a config whose
//! hardware binding is incomplete for its variant, naming the setting to configure.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::measurements::Measurements;
use crate::policy::Policy;
use crate::validator::Validator;
use crate::variant::Variant;

/// Largest config accepted from a peer or a user (measurement maps are small).
pub const MAX_CONFIG_LEN: usize = 256 * 1024;

/// Why an attestation config is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Larger than [`MAX_CONFIG_LEN`].
    #[error("attestation config is {0} bytes, more than the {MAX_CONFIG_LEN} allowed")]
    TooLarge(usize),
    /// Not valid JSON for this format (unknown fields are refused).
    #[error("attestation config is not valid: {0}")]
    Json(#[from] serde_json::Error),
    /// The embedded hardware policy has an unsupported version.
    #[error("attestation config policy version {0} is not supported (this build reads version 1)")]
    PolicyVersion(u32),
    /// The hardware roots in the policy are unusable.
    #[error("attestation config policy has unusable roots: {0}")]
    Roots(#[from] crate::certs::CertError),
    /// The variant needs settings the policy lacks.
    #[error("attestation variant {0} needs more policy settings: {1}")]
    Incomplete(Variant, String),
    /// No boot register is enforced, so the config would admit any image.
    #[error(
        "attestation config for {variant} enforces no boot measurement, so it would accept any \
         image: give at least one of {registers} an expected value with \"warnOnly\": false \
         (normally the image's measurements, e.g. `data.constellation_image.this.measurements`)"
    )]
    FailOpen {
        /// The config's variant.
        variant: Variant,
        /// The registers that pin the booted image, for the message.
        registers: &'static str,
    },
    /// This build has no validator for the variant (every known variant has one today; kept
    /// for variants added later).
    #[error(
        "attestation variant {0} cannot be validated by this build yet; \
         supported: {supported}",
        supported = supported_list()
    )]
    Unsupported(Variant),
}

/// The cluster's attestation config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ConfigJson")]
pub struct AttestationConfig {
    /// Attestation variant every node must use.
    pub variant: Variant,
    /// Expected measurements (PCRs, or MRTD/RTMRs on TDX).
    pub measurements: Measurements,
    /// Hardware policy (SNP/TDX, cloud settings); omitted fields take the variant's defaults.
    pub policy: Policy,
}

/// The JSON form before the policy is completed with the variant's defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigJson {
    variant: Variant,
    measurements: Measurements,
    #[serde(default)]
    policy: Option<serde_json::Value>,
}

impl TryFrom<ConfigJson> for AttestationConfig {
    type Error = serde_json::Error;

    fn try_from(c: ConfigJson) -> Result<Self, Self::Error> {
        Ok(Self {
            variant: c.variant,
            measurements: c.measurements,
            policy: Policy::from_value_for(c.variant, c.policy)?,
        })
    }
}

impl AttestationConfig {
    /// A config with the variant's default hardware policy.
    pub fn new(variant: Variant, measurements: Measurements) -> Self {
        Self {
            variant,
            measurements,
            policy: Policy::for_variant(variant),
        }
    }

    /// Parses a JSON config, refusing oversized input, unknown fields and unsupported policy
    /// versions.
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        if json.len() > MAX_CONFIG_LEN {
            return Err(ConfigError::TooLarge(json.len()));
        }
        let config: Self = serde_json::from_slice(json)?;
        if config.policy.version != 1 {
            return Err(ConfigError::PolicyVersion(config.policy.version));
        }
        Ok(config)
    }

    /// Canonical JSON form (keys in a fixed order, measurements sorted by index), so that the
    /// same config always yields the same bytes — Terraform plans stay stable.
    pub fn to_json(&self) -> String {
        // Serialising plain data structures cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The validators for this config. Fails when the policy leaves the hardware binding of the
    /// variant incomplete ([`AttestationConfig::check_binding`]) or enforces no boot register.
    pub fn validators(&self) -> Result<Vec<Arc<dyn Validator>>, ConfigError> {
        self.check_binding()?;
        let m = self.measurements.clone();
        let p = &self.policy;
        let snp = p.snp.clone();
        let tdx = p.tdx.clone();
        let v: Arc<dyn Validator> = match self.variant {
            Variant::QemuVtpm => Arc::new(crate::qemu_vtpm::validator(m)),
            Variant::AzureSevSnp => Arc::new(crate::azure::variant::validator(m, snp)?),
            Variant::AwsSevSnp => Arc::new(crate::aws::validator(m, snp)?),
            Variant::GcpSevSnp => Arc::new(crate::gcp::snp_validator(m, snp, &p.gcp)?),
            Variant::QemuTdx => Arc::new(crate::qemu_tdx::QemuTdxValidator::new(m, tdx)?),
            Variant::AzureTdx => Arc::new(crate::azure::variant::tdx_validator(m, tdx)?),
            Variant::GcpSevEs => Arc::new(
                crate::gcp::sev_es_validator(m, &p.gcp)
                    .map_err(|e| ConfigError::Incomplete(self.variant, e.to_string()))?,
            ),
            Variant::AzureTrustedLaunch => Arc::new(
                crate::azure::trustedlaunch::validator(m, &p.azure)
                    .map_err(|e| ConfigError::Incomplete(self.variant, e.to_string()))?,
            ),
            Variant::AwsNitroTpm => Arc::new(
                crate::aws::nitro::validator(m, &p.aws)
                    .map_err(|e| ConfigError::Incomplete(self.variant, e.to_string()))?,
            ),
        };
        self.check_enforces_boot()?;
        Ok(vec![v])
    }

    /// Refuses a policy under which evidence from a TEE guest the attacker runs would pass: each
    /// variant's AK binding must tie the key to the cloud's own firmware or vTPM, and SEV-SNP
    /// firmware must meet a minimum TCB. The message names the setting to configure.
    pub fn check_binding(&self) -> Result<(), ConfigError> {
        let problems = binding_problems(self.variant, &self.policy);
        if problems.is_empty() {
            return Ok(());
        }
        Err(ConfigError::Incomplete(self.variant, problems.join("; ")))
    }

    /// Refuses a fail-open config: one where no register that pins the booted image (the boot
    /// loader, kernel, initrd and command line; MRTD/RTMR0-2 on qemu-tdx) is enforced. Firmware
    /// PCRs and the cluster-ID register alone say nothing about the image, and warn-only
    /// entries only log. Every consumer (data source, cluster resource, the node's Init and
    /// SetAttestationConfig) builds validators through here, so the rule has one source.
    pub fn check_enforces_boot(&self) -> Result<(), ConfigError> {
        let (indices, registers): (&[u32], &'static str) = match self.variant {
            Variant::QemuTdx => (
                &[
                    crate::qemu_tdx::MRTD_INDEX,
                    crate::qemu_tdx::RTMR0_INDEX,
                    crate::qemu_tdx::RTMR0_INDEX + 1,
                    crate::qemu_tdx::RTMR0_INDEX + 2,
                ],
                "measurements 0 (MRTD), 1, 2, 3 (RTMR0-2)",
            ),
            _ => (&BOOT_PCRS, "PCRs 4, 8, 9, 11, 12"),
        };
        let enforced = self
            .measurements
            .0
            .iter()
            .any(|(i, m)| indices.contains(i) && !m.warn_only);
        if enforced {
            return Ok(());
        }
        Err(ConfigError::FailOpen {
            variant: self.variant,
            registers,
        })
    }
}

/// What the variant's binding lacks under `p` (empty: complete). A pure function of the policy,
/// so every rule has a table test.
fn binding_problems(variant: Variant, p: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    let snp_variant = matches!(
        variant,
        Variant::AzureSevSnp | Variant::AwsSevSnp | Variant::GcpSevSnp
    );
    if snp_variant {
        let snp = &p.snp;
        if snp.minimum_tcb.is_none() && snp.minimum_tcb_by_generation.is_empty() {
            out.push(
                "policy.snp.minimum_tcb_by_generation (or policy.snp.minimum_tcb) is empty, so \
                 firmware with known SEV-SNP vulnerabilities would be accepted: set a minimum TCB \
                 (the default for Milan is in docs/attestation-policy.md)"
                    .to_string(),
            );
        }
        if let Some(bad) = snp
            .minimum_tcb_by_generation
            .keys()
            .find(|k| !crate::policy::SNP_GENERATIONS.contains(&k.as_str()))
        {
            out.push(format!(
                "policy.snp.minimum_tcb_by_generation has unknown generation {bad:?} (known: {})",
                crate::policy::SNP_GENERATIONS.join(", ")
            ));
        }
    }
    match variant {
        Variant::GcpSevSnp if p.gcp.compute_api_url.is_none() => {
            out.push(
                "policy.gcp.compute_api_url is unset: the SNP report on GCP does not contain \
                 the vTPM's attestation key, so only the Compute API ties the key to Google's \
                 vTPM; set it to https://compute.googleapis.com"
                    .to_string(),
            );
        }
        Variant::AzureSevSnp => {
            let digests = !p.snp.accepted_id_key_digests.is_empty()
                && p.snp.id_key_mode != crate::policy::IdKeyMode::WarnOnly;
            if !digests && p.snp.measurements.is_empty() {
                out.push(
                    "policy.snp.accepted_id_key_digests is empty (or id_key_mode is warn_only) \
                     and policy.snp.measurements is empty, so a report from any SEV-SNP guest \
                     would be accepted: keep Azure's ID-key digests (the default) or pin the \
                     launch measurements"
                        .to_string(),
                );
            }
        }
        Variant::AwsSevSnp => {
            if p.snp
                .signers
                .iter()
                .any(|s| !s.eq_ignore_ascii_case("vlek"))
                || p.snp.signers.is_empty()
            {
                out.push(format!(
                    "policy.snp.signers is {:?}: a VCEK signs reports of any SEV-SNP machine, not \
                     only AWS's; set it to [\"vlek\"] (the default)",
                    p.snp.signers
                ));
            }
            if p.snp.allowed_csp_ids.is_empty() {
                out.push(
                    "policy.snp.allowed_csp_ids is empty, so a VLEK of any cloud would be \
                     accepted: set it to [\"*.amazonaws.com\"] (the default)"
                        .to_string(),
                );
            }
        }
        Variant::AzureTdx => {
            for (field, empty) in [
                ("mrtd", p.tdx.mrtd.is_empty()),
                ("mrseam", p.tdx.mrseam.is_empty()),
            ] {
                if empty {
                    out.push(format!(
                        "policy.tdx.{field} is empty, so a quote from any TD would be accepted: \
                         set the {} value(s) of Azure's TDX paravisor and TDX module",
                        field.to_ascii_uppercase()
                    ));
                }
            }
        }
        _ => {}
    }
    out
}

/// vTPM PCRs that pin the booted image: 4 (boot loader / UKI), 8 and 9 (kernel command line,
/// kernel and initrd), 11 (UKI sections), 12 (kernel command line and credentials).
const BOOT_PCRS: [u32; 5] = [4, 8, 9, 11, 12];

/// Variants [`AttestationConfig::validators`] supports (some need cloud settings in the policy:
/// gcp-sev-es needs `policy.gcp.compute_api_url`, azure-trustedlaunch
/// `policy.azure.trusted_launch_roots_pem`, aws-nitro-tpm `policy.aws.ec2_api_url` and
/// `policy.aws.region`).
pub fn supported_variants() -> &'static [Variant] {
    &[
        Variant::QemuVtpm,
        Variant::QemuTdx,
        Variant::AwsSevSnp,
        Variant::AwsNitroTpm,
        Variant::AzureSevSnp,
        Variant::AzureTdx,
        Variant::AzureTrustedLaunch,
        Variant::GcpSevEs,
        Variant::GcpSevSnp,
    ]
}

fn supported_list() -> String {
    supported_variants()
        .iter()
        .map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(variant: &str) -> String {
        format!(
            r#"{{"variant":"{variant}","measurements":{{"4":{{"expected":"{}","warnOnly":false}}}}}}"#,
            "ab".repeat(32)
        )
    }

    #[test]
    fn round_trips_and_builds_validators() {
        let c = AttestationConfig::from_json(json("qemu-vtpm").as_bytes()).unwrap();
        assert_eq!(c.variant, Variant::QemuVtpm);
        assert_eq!(
            AttestationConfig::from_json(c.to_json().as_bytes()).unwrap(),
            c
        );
        assert_eq!(c.validators().unwrap().len(), 1);
    }

    #[test]
    fn every_variant_builds_with_its_required_settings() {
        let root = String::from_utf8(sev::certs::snp::builtin::milan::ARK.to_vec()).unwrap();
        let policy = serde_json::json!({
            "version": 1,
            "tdx": {"mrtd": ["ab".repeat(48)], "mrseam": ["cd".repeat(48)]},
            "gcp": {"compute_api_url": "http://127.0.0.1:1"},
            "azure": {"trusted_launch_roots_pem": [root]},
            "aws": {"ec2_api_url": "http://127.0.0.1:1", "region": "eu-central-1"},
        });
        assert_eq!(supported_variants().len(), Variant::ALL.len());
        for v in Variant::ALL {
            assert!(supported_variants().contains(&v), "{v}");
            let m = if v == Variant::QemuTdx { "1" } else { "4" };
            let expected = if v == Variant::QemuTdx {
                "ab".repeat(48)
            } else {
                "ab".repeat(32)
            };
            let json = serde_json::json!({"variant": v, "measurements": {m: {"expected": expected, "warnOnly": false}}, "policy": policy});
            let c = AttestationConfig::from_json(json.to_string().as_bytes()).unwrap();
            let vals = c.validators().unwrap();
            assert_eq!(vals.len(), 1);
            assert_eq!(vals[0].variant(), v);
            // Settings survive the round trip; unset cloud sections are not emitted.
            assert_eq!(
                AttestationConfig::from_json(c.to_json().as_bytes()).unwrap(),
                c
            );
        }
        let plain = AttestationConfig::from_json(json("qemu-vtpm").as_bytes()).unwrap();
        assert!(!plain.to_json().contains("\"gcp\""));
        // Variants needing cloud settings say which one is missing.
        for (v, missing) in [
            ("gcp-sev-es", "compute_api_url"),
            ("gcp-sev-snp", "policy.gcp.compute_api_url"),
            ("azure-tdx", "policy.tdx.mrtd"),
            ("azure-trustedlaunch", "trusted_launch_roots_pem"),
            ("aws-nitro-tpm", "ec2_api_url"),
        ] {
            let c = AttestationConfig::from_json(json(v).as_bytes()).unwrap();
            let e = c.validators().err().unwrap();
            assert!(
                matches!(e, ConfigError::Incomplete(..)) && e.to_string().contains(missing),
                "{e}"
            );
        }
    }

    fn with_policy(variant: &str, policy: serde_json::Value) -> AttestationConfig {
        let measurements =
            serde_json::json!({"4": {"expected": "ab".repeat(32), "warnOnly": false}});
        let json =
            serde_json::json!({"variant": variant, "measurements": measurements, "policy": policy});
        AttestationConfig::from_json(json.to_string().as_bytes()).unwrap()
    }

    fn incomplete(c: &AttestationConfig, setting: &str) {
        let e = c
            .validators()
            .err()
            .expect("incomplete binding must be refused");
        assert!(
            matches!(e, ConfigError::Incomplete(..)) && e.to_string().contains(setting),
            "{}: {e}",
            c.variant
        );
    }

    #[test]
    fn default_policies_bind_the_ak_to_the_cloud() {
        // Omitted policy: the variant's defaults, which are complete for the SNP variants.
        for v in ["azure-sev-snp", "aws-sev-snp"] {
            let c = AttestationConfig::from_json(json(v).as_bytes()).unwrap();
            assert_eq!(c.policy, Policy::for_variant(c.variant));
            c.validators().unwrap();
            assert!(!c.policy.snp.minimum_tcb_by_generation.is_empty());
        }
        let azure = Policy::for_variant(Variant::AzureSevSnp);
        assert_eq!(azure.snp.accepted_id_key_digests.len(), 4);
        assert_eq!(azure.snp.id_key_mode, crate::policy::IdKeyMode::Equal);
        let aws = Policy::for_variant(Variant::AwsSevSnp);
        assert_eq!(aws.snp.signers, vec!["vlek".to_string()]);
        assert_eq!(aws.snp.allowed_csp_ids, vec!["*.amazonaws.com".to_string()]);
        // A partial policy keeps the variant's defaults for every field it omits.
        let c = with_policy(
            "azure-sev-snp",
            serde_json::json!({"version": 1, "snp": {"allow_smt": false}}),
        );
        assert!(!c.policy.snp.allow_smt);
        assert_eq!(
            c.policy.snp.accepted_id_key_digests,
            azure.snp.accepted_id_key_digests
        );
        // Unknown fields are still refused after the merge.
        let bad = serde_json::json!({"variant": "aws-sev-snp", "measurements": {}, "policy": {"version": 1, "snp": {"nope": 1}}});
        assert!(AttestationConfig::from_json(bad.to_string().as_bytes()).is_err());
        // The defaults survive a round trip unchanged.
        let c = AttestationConfig::from_json(json("aws-sev-snp").as_bytes()).unwrap();
        assert_eq!(
            AttestationConfig::from_json(c.to_json().as_bytes()).unwrap(),
            c
        );
    }

    #[test]
    fn incomplete_bindings_are_refused_naming_the_setting() {
        // gcp-sev-snp: the AK is not in the report; only the Compute API binds it.
        incomplete(
            &AttestationConfig::from_json(json("gcp-sev-snp").as_bytes()).unwrap(),
            "policy.gcp.compute_api_url",
        );
        // azure-sev-snp without Azure's ID-key digests (or with them warn-only).
        incomplete(
            &with_policy(
                "azure-sev-snp",
                serde_json::json!({"version": 1, "snp": {"accepted_id_key_digests": []}}),
            ),
            "policy.snp.accepted_id_key_digests",
        );
        incomplete(
            &with_policy(
                "azure-sev-snp",
                serde_json::json!({"version": 1, "snp": {"id_key_mode": "warn_only"}}),
            ),
            "policy.snp.accepted_id_key_digests",
        );
        // ...unless the launch measurements are pinned instead.
        with_policy(
            "azure-sev-snp",
            serde_json::json!({"version": 1, "snp": {"accepted_id_key_digests": [], "measurements": ["ab".repeat(48)]}}),
        )
        .validators()
        .unwrap();
        // aws-sev-snp accepting VCEKs or any CSP.
        incomplete(
            &with_policy(
                "aws-sev-snp",
                serde_json::json!({"version": 1, "snp": {"signers": ["vcek", "vlek"]}}),
            ),
            "policy.snp.signers",
        );
        incomplete(
            &with_policy(
                "aws-sev-snp",
                serde_json::json!({"version": 1, "snp": {"allowed_csp_ids": []}}),
            ),
            "policy.snp.allowed_csp_ids",
        );
        // azure-tdx without MRTD / MRSEAM.
        let c = AttestationConfig::from_json(json("azure-tdx").as_bytes()).unwrap();
        incomplete(&c, "policy.tdx.mrtd");
        incomplete(&c, "policy.tdx.mrseam");
        incomplete(
            &with_policy(
                "azure-tdx",
                serde_json::json!({"version": 1, "tdx": {"mrtd": ["ab".repeat(48)]}}),
            ),
            "policy.tdx.mrseam",
        );
        // No minimum TCB for an SNP variant, or one for an unknown generation.
        for v in ["azure-sev-snp", "aws-sev-snp", "gcp-sev-snp"] {
            incomplete(
                &with_policy(
                    v,
                    serde_json::json!({"version": 1, "snp": {"minimum_tcb_by_generation": {}}, "gcp": {"compute_api_url": "http://127.0.0.1:1"}}),
                ),
                "policy.snp.minimum_tcb_by_generation",
            );
        }
        incomplete(
            &with_policy(
                "aws-sev-snp",
                serde_json::json!({"version": 1, "snp": {"minimum_tcb_by_generation": {"milano": {}}}}),
            ),
            "unknown generation",
        );
        // A single minimum for every generation also satisfies the rule.
        with_policy(
            "aws-sev-snp",
            serde_json::json!({"version": 1, "snp": {"minimum_tcb_by_generation": {}, "minimum_tcb": {"snp": 8}}}),
        )
        .validators()
        .unwrap();
    }

    #[test]
    fn refuses_fail_open_configs() {
        let pcr = |warn: bool| serde_json::json!({"expected": "ab".repeat(32), "warnOnly": warn});
        let mr = |warn: bool| serde_json::json!({"expected": "ab".repeat(48), "warnOnly": warn});
        for (variant, measurements) in [
            ("qemu-vtpm", serde_json::json!({})),
            ("qemu-vtpm", serde_json::json!({"4": pcr(true)})),
            (
                "qemu-vtpm",
                serde_json::json!({"4": pcr(true), "9": pcr(true), "11": pcr(true)}),
            ),
            // Firmware and cluster-ID registers alone do not pin the image.
            (
                "qemu-vtpm",
                serde_json::json!({"0": pcr(false), "7": pcr(false), "15": pcr(false)}),
            ),
            ("aws-sev-snp", serde_json::json!({"9": pcr(true)})),
            (
                "qemu-tdx",
                serde_json::json!({"4": mr(false), "1": mr(true)}),
            ),
        ] {
            let json = serde_json::json!({"variant": variant, "measurements": measurements});
            let c = AttestationConfig::from_json(json.to_string().as_bytes()).unwrap();
            let e = c.validators().err().unwrap();
            assert!(
                matches!(e, ConfigError::FailOpen { .. }),
                "{variant} {json}: {e}"
            );
            assert!(e.to_string().contains("\"warnOnly\": false"), "{e}");
        }
        // One enforced boot register is enough, warn-only entries beside it are fine.
        for (variant, measurements) in [
            (
                "qemu-vtpm",
                serde_json::json!({"4": pcr(false), "0": pcr(true)}),
            ),
            ("qemu-vtpm", serde_json::json!({"12": pcr(false)})),
            (
                "qemu-tdx",
                serde_json::json!({"0": mr(false), "4": mr(true)}),
            ),
        ] {
            let json = serde_json::json!({"variant": variant, "measurements": measurements});
            let c = AttestationConfig::from_json(json.to_string().as_bytes()).unwrap();
            c.validators().unwrap();
        }
    }

    #[test]
    fn refuses_junk_unknown_fields_and_oversize() {
        assert!(AttestationConfig::from_json(b"{").is_err());
        assert!(AttestationConfig::from_json(json("nope").as_bytes()).is_err());
        let extra = json("qemu-vtpm").replace("}}}", "}},\"x\":1}");
        assert!(AttestationConfig::from_json(extra.as_bytes()).is_err());
        let big = vec![b' '; MAX_CONFIG_LEN + 1];
        assert!(matches!(
            AttestationConfig::from_json(&big),
            Err(ConfigError::TooLarge(_))
        ));
    }
}
