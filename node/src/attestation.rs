//! The cluster's attestation config as the node agent uses it: the shared
//! [`constellation_attest::config::AttestationConfig`] (variant, measurements, hardware policy),
//! the same JSON document the provider's `constellation_attestation` data source emits and
//! `attest-verify` reads (docs/attestation-policy.md). Parsed into validators for the join and
//! key services.

use std::sync::Arc;

pub use constellation_attest::config::AttestationConfig;
use constellation_attest::validator::Validator;

/// Parser usable as [`crate::services::ConfigParser`]: JSON text → validators, or a message
/// that says what is wrong with the config.
pub fn parse_config(json: &str) -> Result<Vec<Arc<dyn Validator>>, String> {
    AttestationConfig::from_json(json.as_bytes())
        .and_then(|c| c.validators())
        .map_err(|e| e.to_string())
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
        // Fail-open configs (nothing that pins the boot enforced) are refused, for Init and
        // SetAttestationConfig alike, saying what to configure.
        let warn_only = format!(
            r#"{{"variant":"qemu-vtpm","measurements":{{"4":{{"expected":"{}","warnOnly":true}}}}}}"#,
            "aa".repeat(32)
        );
        for fail_open in [
            warn_only.as_str(),
            r#"{"variant":"qemu-vtpm","measurements":{}}"#,
        ] {
            let e = parse_config(fail_open).err().unwrap();
            assert!(e.contains("enforces no boot measurement"), "{e}");
        }
        // The provider's form, with an explicit hardware policy, is accepted too.
        let with_policy = j.replace("}}}", r#"}},"policy":{"version":1}}"#);
        assert_eq!(parse_config(&with_policy).unwrap().len(), 1);
    }
}
