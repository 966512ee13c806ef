//! `provider::constellation::expected_pcr15(cluster_id)`: the PCR 15 value a node shows once it
//! belongs to the cluster with that ID, for policies that pin a cluster.

use constellation_attest::measurements::expected_pcr15;
use tfplugin::provider::{Context, Function, FunctionError, Parameter, Signature};
use tfplugin::{Type, Value};

/// The `expected_pcr15` function.
#[derive(Debug, Default, Clone, Copy)]
pub struct ExpectedPcr15;

/// Hex in, hex out; errors name the argument.
fn compute(cluster_id_hex: &str) -> Result<String, FunctionError> {
    let id = hex::decode(cluster_id_hex.trim()).map_err(|e| {
        FunctionError::argument(
            0,
            format!("cluster_id must be hex (as the cluster resource outputs it): {e}"),
        )
    })?;
    if id.len() != 32 {
        return Err(FunctionError::argument(
            0,
            format!(
                "cluster_id must be 32 bytes (64 hex digits), got {} bytes",
                id.len()
            ),
        ));
    }
    Ok(hex::encode(expected_pcr15(&id)))
}

#[tfplugin::async_trait]
impl Function for ExpectedPcr15 {
    fn name(&self) -> &str {
        "expected_pcr15"
    }

    fn signature(&self) -> Signature {
        Signature::new(
            vec![
                Parameter::new("cluster_id", Type::String)
                    .description("The cluster ID, 64 hex digits."),
            ],
            Type::String,
        )
        .summary("PCR 15 of a node that belongs to the cluster")
        .description(
            "Returns SHA256(0^32 ‖ SHA256(cluster_id)) as hex: the value of PCR 15 after a node \
             extended it with the cluster ID, which it does exactly once, when it joins or \
             initialises the cluster.",
        )
    }

    async fn call(&self, _ctx: &Context, args: Vec<Value>) -> Result<Value, FunctionError> {
        let id = args
            .first()
            .and_then(Value::as_str)
            .ok_or_else(|| FunctionError::argument(0, "cluster_id is required"))?;
        compute(id).map(Value::string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition_and_rejects_bad_input() {
        use sha2_check::expected;
        let id = "11".repeat(32);
        assert_eq!(compute(&id).unwrap(), expected(&[0x11; 32]));
        assert!(compute("zz").is_err());
        assert!(compute("abcd").is_err());
    }

    /// Independent computation of the definition, so the test does not just call the same code.
    mod sha2_check {
        pub(super) fn expected(id: &[u8]) -> String {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update([0u8; 32]);
            h.update(Sha256::digest(id));
            hex::encode(h.finalize())
        }
    }
}
