//! The cluster's attestation config: which variant and measurements joining nodes must show.
//!
//! JSON: `{"variant": "qemu-vtpm", "measurements": {"4": "<hex>", "9": {"expected": "<hex>",
//! "warn_only": true}}}` (measurements in the attest crate's format). Parsed into validators for
//! the join and key services.

use std::sync::Arc;

use constellation_attest::measurements::Measurements;
use constellation_attest::validator::Validator;
use constellation_attest::variant::Variant;
use serde::{Deserialize, Serialize};

/// The config document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    /// Attestation variant, e.g. `qemu-vtpm`.
    pub variant: String,
    /// Expected measurements.
    pub measurements: Measurements,
}

impl AttestationConfig {
    /// Parses and checks a config.
    pub fn from_json(json: &str) -> Result<Self, String> {
        if json.len() > 64 * 1024 {
            return Err("attestation config larger than 64 KiB".into());
        }
        serde_json::from_str(json).map_err(|e| format!("attestation config is not valid: {e}"))
    }

    /// JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The validators this config asks for.
    pub fn validators(&self) -> Result<Vec<Arc<dyn Validator>>, String> {
        let variant: Variant = self
            .variant
            .parse()
            .map_err(|_| format!("unknown attestation variant {:?}", self.variant))?;
        match variant {
            Variant::QemuVtpm => Ok(vec![Arc::new(constellation_attest::qemu_vtpm::validator(
                self.measurements.clone(),
            ))]),
            other => Err(format!(
                "the node agent cannot validate variant {other} yet (only qemu-vtpm)"
            )),
        }
    }
}

/// Parser usable as [`crate::services::ConfigParser`].
pub fn parse_config(json: &str) -> Result<Vec<Arc<dyn Validator>>, String> {
    AttestationConfig::from_json(json)?.validators()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_config_and_rejects_junk() {
        let j = format!(
            r#"{{"variant":"qemu-vtpm","measurements":{{"4":"{}"}}}}"#,
            "aa".repeat(32)
        );
        let v = parse_config(&j).unwrap();
        assert_eq!(v.len(), 1);
        assert!(parse_config("{").is_err());
        assert!(parse_config(r#"{"variant":"nope","measurements":{}}"#).is_err());
        assert!(parse_config(r#"{"variant":"qemu-vtpm","measurements":{},"x":1}"#).is_err());
    }
}
