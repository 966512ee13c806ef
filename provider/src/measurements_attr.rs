//! The Terraform form of expected measurements, shared by the image and attestation data
//! sources: a map from register index (as a string, HCL map keys are strings) to
//! `{ expected = "<hex>", warn_only = bool }`.

use std::collections::BTreeMap;

use constellation_attest::measurements::{Measurement, Measurements};
use serde::{Deserialize, Serialize};
#[cfg(test)]
use tfplugin::Value;
use tfplugin::{Attribute, AttributePath, Diagnostics, NestedAttributes, Type};

/// One measurement as Terraform sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MeasurementModel {
    pub(crate) expected: String,
    pub(crate) warn_only: bool,
}

fn nested(computed: bool) -> NestedAttributes {
    let (expected, warn_only) = if computed {
        (
            Attribute::computed("expected", Type::String),
            Attribute::computed("warn_only", Type::Bool),
        )
    } else {
        (
            Attribute::required("expected", Type::String),
            Attribute::required("warn_only", Type::Bool),
        )
    };
    NestedAttributes::map([
        expected.description(
            "Expected register value, lower-case hex (32 bytes for a PCR, 48 for a TDX register).",
        ),
        warn_only.description("A mismatch only warns instead of failing attestation."),
    ])
}

/// The schema attribute `name`, read-only when `computed`, else required.
pub(crate) fn attribute(name: &str, computed: bool, description: &str) -> Attribute {
    let a = if computed {
        Attribute::computed(name, nested(true))
    } else {
        Attribute::required(name, nested(false))
    };
    a.description(description)
}

/// Converts to the Terraform model.
pub(crate) fn to_model(m: &Measurements) -> BTreeMap<String, MeasurementModel> {
    m.0.iter()
        .map(|(i, m)| {
            (
                i.to_string(),
                MeasurementModel {
                    expected: hex::encode(&m.expected),
                    warn_only: m.warn_only,
                },
            )
        })
        .collect()
}

/// Parses the Terraform model; every bad entry becomes a diagnostic at its own path under `at`.
pub(crate) fn from_model(
    model: &BTreeMap<String, MeasurementModel>,
    at: &AttributePath,
) -> Result<Measurements, Diagnostics> {
    let mut out = Measurements::new();
    let mut diags = Diagnostics::new();
    for (key, m) in model {
        let path = at.clone().key(key.clone());
        let Ok(index) = key.parse::<u32>() else {
            diags.error_at(
                path,
                "Invalid measurement index",
                format!("`{key}` is not a register index; use the PCR number, e.g. \"4\"."),
            );
            continue;
        };
        let parsed = hex::decode(m.expected.trim())
            .map_err(|e| format!("not hex: {e}"))
            .and_then(|bytes| {
                if m.warn_only {
                    Measurement::warn_only(bytes)
                } else {
                    Measurement::enforced(bytes)
                }
                .map_err(|e| e.to_string())
            });
        match parsed {
            Ok(v) => {
                out.insert(index, v);
            }
            Err(e) => diags.error_at(
                path.attr("expected"),
                "Invalid expected measurement",
                format!(
                    "Measurement {index}: {e}. Expected 64 hex digits (PCR) or 96 (TDX register)."
                ),
            ),
        }
    }
    if diags.has_errors() {
        Err(diags)
    } else {
        Ok(out)
    }
}

/// The Terraform value of the model (for building state by hand where needed).
#[cfg(test)]
pub(crate) fn to_value(m: &Measurements) -> Value {
    let ty = nested(true);
    let ty = Type::map(ty_object(&ty));
    tfplugin::to_value(&to_model(m), &ty).expect("measurement model matches its type")
}

#[cfg(test)]
fn ty_object(n: &NestedAttributes) -> Type {
    Type::object(
        n.attributes
            .iter()
            .map(|a| (a.name.clone(), a.value_type())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_round_trip_and_errors_point_at_entries() {
        let mut m = Measurements::new();
        m.insert(4, Measurement::enforced(vec![1; 32]).unwrap());
        m.insert(9, Measurement::warn_only(vec![2; 32]).unwrap());
        let model = to_model(&m);
        assert_eq!(
            from_model(&model, &AttributePath::new("measurements")).unwrap(),
            m
        );
        let v = to_value(&m);
        assert!(v.is_fully_known());

        let mut bad = model.clone();
        bad.insert(
            "x".into(),
            MeasurementModel {
                expected: "00".into(),
                warn_only: false,
            },
        );
        bad.insert(
            "7".into(),
            MeasurementModel {
                expected: "zz".into(),
                warn_only: false,
            },
        );
        let d = from_model(&bad, &AttributePath::new("measurements")).unwrap_err();
        let paths: Vec<String> = d
            .iter()
            .filter_map(|d| d.attribute.as_ref().map(|p| p.to_string()))
            .collect();
        assert_eq!(
            paths,
            vec![
                r#"measurements["7"].expected"#.to_string(),
                r#"measurements["x"]"#.to_string()
            ]
        );
    }
}
