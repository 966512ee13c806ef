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
//! `policy` may be omitted; the strict default policy then applies.

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
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    /// Attestation variant every node must use.
    pub variant: Variant,
    /// Expected measurements (PCRs, or MRTD/RTMRs on TDX).
    pub measurements: Measurements,
    /// Hardware policy (SNP/TDX); strict defaults when omitted.
    #[serde(default)]
    pub policy: Policy,
}

impl AttestationConfig {
    /// A config with the strict default hardware policy.
    pub fn new(variant: Variant, measurements: Measurements) -> Self {
        Self {
            variant,
            measurements,
            policy: Policy::default(),
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

    /// The validators for this config.
    pub fn validators(&self) -> Result<Vec<Arc<dyn Validator>>, ConfigError> {
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
