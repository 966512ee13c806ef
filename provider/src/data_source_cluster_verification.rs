//! `constellation_cluster_verification`: fetches an attestation document for a fresh nonce
//! from a node's verification service, validates it with the attestation config, and checks
//! that the node belongs to the expected cluster (PCR 15). Pipelines gate on it: a failed
//! verification is an error listing every mismatch, so the run stops.
//!
//! The outputs are stable (no nonce, no timestamp), so plans stay empty while nothing changed.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};

use constellation_attest::Validators;
use constellation_attest::Variant;
use constellation_attest::config::AttestationConfig;
use constellation_attest::measurements::cluster_id_measurement;
use tfplugin::provider::{Context, DataSource, StateResponse};
use tfplugin::{Attribute, AttributePath, Block, Diagnostics, Schema, Type, Value};

use crate::node_client;

/// The data source.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterVerificationDataSource;

fn err_at(path: &str, summary: &str, detail: impl Into<String>) -> Diagnostics {
    let mut d = Diagnostics::new();
    d.error_at(AttributePath::new(path), summary, detail);
    d
}

fn known_str<'a>(config: &'a Value, name: &str) -> Option<&'a str> {
    config.get_attr(name).and_then(Value::as_str)
}

fn parse_endpoint(s: &str) -> Result<SocketAddr, Diagnostics> {
    s.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            err_at(
                "endpoint",
                "Invalid endpoint",
                format!("{s:?} is not `host:port`; use a node's `verification_endpoint` from `constellation_cluster`."),
            )
        })
}

fn parse_cluster_id(s: &str) -> Result<Vec<u8>, Diagnostics> {
    match hex::decode(s.trim()) {
        Ok(b) if b.len() == 32 => Ok(b),
        _ => Err(err_at(
            "cluster_id",
            "Invalid cluster ID",
            "Use the 64 hex digits of `constellation_cluster.<name>.cluster_id`.",
        )),
    }
}

fn parse_config(s: &str) -> Result<Validators, Diagnostics> {
    let cfg = AttestationConfig::from_json(s.as_bytes()).map_err(|e| {
        err_at(
            "attestation_config",
            "Invalid attestation config",
            format!("{e}. Use `data.constellation_attestation.<name>.config_json`."),
        )
    })?;
    cfg.validators().map(Validators::new).map_err(|e| {
        err_at(
            "attestation_config",
            "Unsupported attestation config",
            e.to_string(),
        )
    })
}

#[tfplugin::async_trait]
impl DataSource for ClusterVerificationDataSource {
    fn type_name(&self) -> &str {
        "constellation_cluster_verification"
    }

    fn schema(&self) -> Schema {
        Schema::new(
            Block::new()
                .description(
                    "Verifies a running node by remote attestation: asks its verification \
                     service for a document bound to a fresh nonce, validates it against the \
                     attestation config and, with `cluster_id`, checks that the node belongs to \
                     that cluster (PCR 15). Any failure is an error that lists every mismatch, \
                     so `terraform plan`/`apply` stops — gate pipelines on it.",
                )
                .attribute(Attribute::required("endpoint", Type::String).description(
                    "`host:port` of the node's verification service (gRPC), e.g. \
                     `constellation_cluster.<name>.verification_endpoint`.",
                ))
                .attribute(Attribute::required("attestation_config", Type::String).description(
                    "The attestation config to verify against (`data.constellation_attestation.<name>.config_json`).",
                ))
                .attribute(Attribute::optional("cluster_id", Type::String).description(
                    "Expected cluster ID (hex). When set, PCR 15 must equal the value a member of \
                     that cluster shows.",
                ))
                .attribute(Attribute::computed("verified", Type::Bool).description(
                    "Always true in a successful read (a failed verification is an error).",
                ))
                .attribute(Attribute::computed("variant", Type::String).description("Attestation variant of the node."))
                .attribute(Attribute::computed("measurements", Type::map(Type::String)).description(
                    "Every attested register value (hex) by index.",
                ))
                .attribute(Attribute::computed("warnings", Type::list(Type::String)).description(
                    "Mismatches of warn-only measurements.",
                ))
                .attribute(Attribute::computed("event_log_verified", Type::Bool).description(
                    "True when the node's event log replayed to the quoted values.",
                )),
        )
    }

    async fn validate(&self, _ctx: &Context, config: &Value) -> Diagnostics {
        let mut d = Diagnostics::new();
        if let Some(s) = known_str(config, "endpoint")
            && let Err(e) = parse_endpoint(s)
        {
            d.extend(e);
        }
        if let Some(s) = known_str(config, "cluster_id")
            && let Err(e) = parse_cluster_id(s)
        {
            d.extend(e);
        }
        if let Some(s) = known_str(config, "attestation_config")
            && let Err(e) = parse_config(s)
        {
            d.extend(e);
        }
        d
    }

    async fn read(&self, _ctx: &Context, config: Value, _meta: Value) -> StateResponse {
        let result = async {
            let endpoint = known_str(&config, "endpoint").unwrap_or_default();
            let addr = parse_endpoint(endpoint)?;
            let validators = parse_config(known_str(&config, "attestation_config").unwrap_or_default())?;
            let cluster_id = known_str(&config, "cluster_id").map(parse_cluster_id).transpose()?;
            let claims = node_client::verify(addr, &validators).await.map_err(|e| {
                err_at("endpoint", "Verification failed", format!("{e}. The node is not what the attestation config describes; do not trust it."))
            })?;
            if let Some(id) = &cluster_id {
                let (index, want) = cluster_id_measurement(claims.variant, id);
                let got = claims.measurements.get(&index);
                if got != Some(&want) {
                    let register = if claims.variant == Variant::QemuTdx {
                        "RTMR3 (index 4)".to_string()
                    } else {
                        format!("PCR {index}")
                    };
                    return Err(err_at(
                        "cluster_id",
                        "Node is not a member of this cluster",
                        format!(
                            "{register}: expected {} for cluster {}, got {}. The node attested correctly but was not initialised for (or has left) this cluster.",
                            hex::encode(&want),
                            hex::encode(id),
                            got.map_or_else(|| "nothing".into(), hex::encode)
                        ),
                    ));
                }
            }
            let measurements: BTreeMap<String, Value> = claims
                .measurements
                .iter()
                .map(|(i, v)| (i.to_string(), Value::string(hex::encode(v))))
                .collect();
            Ok::<_, Diagnostics>(Value::object([
                ("endpoint", Value::string(endpoint)),
                ("attestation_config", config.get_attr("attestation_config").cloned().unwrap_or(Value::Null)),
                ("cluster_id", config.get_attr("cluster_id").cloned().unwrap_or(Value::Null)),
                ("verified", Value::Bool(true)),
                ("variant", Value::string(claims.variant.to_string())),
                ("measurements", Value::map(measurements)),
                ("warnings", Value::list(claims.warnings.iter().map(|w| Value::string(w.to_string())))),
                ("event_log_verified", Value::Bool(claims.event_log_verified)),
            ]))
        }
        .await;
        match result {
            Ok(v) => StateResponse::new(v),
            Err(d) => StateResponse::from_diagnostics(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_validated_at_their_attribute() {
        let e = parse_endpoint("no port").unwrap_err();
        assert_eq!(
            e.iter()
                .next()
                .unwrap()
                .attribute
                .as_ref()
                .unwrap()
                .to_string(),
            "endpoint"
        );
        assert!(parse_cluster_id("abcd").is_err());
        assert!(parse_cluster_id(&"00".repeat(32)).is_ok());
        let e = parse_config("{").unwrap_err();
        assert_eq!(
            e.iter()
                .next()
                .unwrap()
                .attribute
                .as_ref()
                .unwrap()
                .to_string(),
            "attestation_config"
        );
    }

    #[test]
    fn schema_is_valid() {
        assert!(ClusterVerificationDataSource.schema().validate().is_empty());
    }
}
