//! Expected measurements (PCRs or TDX registers) and their comparison with attested values.
//!
//! The serialised form is upstream Constellation's: a map from register index to
//! `{"expected": "<hex>", "warnOnly": bool}`; the legacy form, a plain hex string, is accepted
//! when reading and means "enforced". Maps are ordered by index.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// PCR index that carries the cluster ID after initialisation.
pub const CLUSTER_ID_PCR: u32 = 15;

/// Length of a SHA-256 PCR value.
pub const PCR_LEN: usize = 32;
/// Length of a TDX measurement register (SHA-384).
pub const TDX_REGISTER_LEN: usize = 48;

/// One expected register value.
#[derive(Clone, PartialEq, Eq)]
pub struct Measurement {
    /// The expected value: 32 bytes (SHA-256 PCR) or 48 bytes (TDX MRTD/RTMR).
    pub expected: Vec<u8>,
    /// A mismatch only produces a warning instead of failing validation.
    pub warn_only: bool,
}

impl fmt::Debug for Measurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Measurement")
            .field("expected", &hex::encode(&self.expected))
            .field("warn_only", &self.warn_only)
            .finish()
    }
}

impl Measurement {
    /// An enforced measurement; errors unless `expected` is 32 or 48 bytes long.
    pub fn enforced(expected: impl Into<Vec<u8>>) -> Result<Self, MeasurementError> {
        Self::new(expected.into(), false)
    }

    /// A warn-only measurement; errors unless `expected` is 32 or 48 bytes long.
    pub fn warn_only(expected: impl Into<Vec<u8>>) -> Result<Self, MeasurementError> {
        Self::new(expected.into(), true)
    }

    /// A SHA-256 PCR value (always the right length, so infallible).
    pub fn pcr(expected: [u8; PCR_LEN], warn_only: bool) -> Self {
        Self {
            expected: expected.to_vec(),
            warn_only,
        }
    }

    fn new(expected: Vec<u8>, warn_only: bool) -> Result<Self, MeasurementError> {
        if expected.len() != PCR_LEN && expected.len() != TDX_REGISTER_LEN {
            return Err(MeasurementError::BadLength(expected.len()));
        }
        Ok(Self {
            expected,
            warn_only,
        })
    }
}

/// A measurement value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeasurementError {
    /// Wrong length.
    #[error("measurement is {0} bytes long; expected 32 (SHA-256 PCR) or 48 (TDX register)")]
    BadLength(usize),
    /// Neither hex nor base64.
    #[error("measurement {0:?} is neither hex nor base64")]
    BadEncoding(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeasurementRepr {
    expected: String,
    #[serde(rename = "warnOnly", default)]
    warn_only: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MeasurementInput {
    Full(MeasurementRepr),
    Legacy(String),
}

fn decode_value(s: &str) -> Result<Vec<u8>, MeasurementError> {
    use base64::Engine as _;
    if let Ok(b) = hex::decode(s) {
        return Ok(b);
    }
    // Old upstream configs stored the raw bytes in Go's default base64 JSON encoding.
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| MeasurementError::BadEncoding(s.to_owned()))
}

impl Serialize for Measurement {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        MeasurementRepr {
            expected: hex::encode(&self.expected),
            warn_only: self.warn_only,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Measurement {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (text, warn_only) = match MeasurementInput::deserialize(d)? {
            MeasurementInput::Full(r) => (r.expected, r.warn_only),
            MeasurementInput::Legacy(s) => (s, false),
        };
        let bytes = decode_value(&text).map_err(serde::de::Error::custom)?;
        Measurement::new(bytes, warn_only).map_err(serde::de::Error::custom)
    }
}

/// Expected measurements by register index, ordered by index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Measurements(pub BTreeMap<u32, Measurement>);

/// One register whose attested value differs from the expected one.
#[derive(Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Register index.
    pub index: u32,
    /// The expected value.
    pub expected: Vec<u8>,
    /// The attested value, `None` when the evidence does not contain the register.
    pub got: Option<Vec<u8>>,
}

impl fmt::Debug for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.got {
            Some(got) => write!(
                f,
                "index {}: expected {}, got {}",
                self.index,
                hex::encode(&self.expected),
                hex::encode(got)
            ),
            None => write!(
                f,
                "index {}: expected {}, got nothing (register not in evidence)",
                self.index,
                hex::encode(&self.expected)
            ),
        }
    }
}

/// Result of comparing attested values with [`Measurements`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Mismatches of enforced measurements; any entry means the evidence is rejected.
    pub errors: Vec<Mismatch>,
    /// Mismatches of warn-only measurements.
    pub warnings: Vec<Mismatch>,
}

impl Measurements {
    /// Empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces one expected value.
    pub fn insert(&mut self, index: u32, m: Measurement) -> &mut Self {
        self.0.insert(index, m);
        self
    }

    /// Compares every expected register with `actual`, collecting all mismatches (never only the
    /// first). Registers in `actual` without an expectation are ignored.
    pub fn compare(&self, actual: &BTreeMap<u32, Vec<u8>>) -> Comparison {
        let mut out = Comparison::default();
        for (&index, m) in &self.0 {
            let got = actual.get(&index);
            if got.map(Vec::as_slice) == Some(m.expected.as_slice()) {
                continue;
            }
            let mismatch = Mismatch {
                index,
                expected: m.expected.clone(),
                got: got.cloned(),
            };
            if m.warn_only {
                out.warnings.push(mismatch);
            } else {
                out.errors.push(mismatch);
            }
        }
        out
    }

    /// Serialises as upstream-format JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a map of strings and bools always serialises")
    }

    /// Parses upstream-format JSON (new or legacy form).
    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }
}

/// The value a SHA-256 PCR holds after one `TPM2_PCR_Event(data)` from the reset value:
/// SHA256(0^32 ‖ SHA256(data)).
pub fn pcr_after_event(data: &[u8]) -> [u8; 32] {
    extend_sha256(&[0u8; 32], &Sha256::digest(data).into())
}

/// Expected PCR 15 after the node extended it with the cluster ID (the provider checks this).
pub fn expected_pcr15(cluster_id: &[u8]) -> [u8; 32] {
    pcr_after_event(cluster_id)
}

/// Where and what a member of the cluster with `cluster_id` shows: (measurement index,
/// expected value). vTPM variants: PCR 15 ([`expected_pcr15`]); qemu-tdx: RTMR3 at index 4
/// ([`crate::tdx::rtmr::expected_cluster_id_rtmr`]).
pub fn cluster_id_measurement(variant: crate::Variant, cluster_id: &[u8]) -> (u32, Vec<u8>) {
    match variant {
        crate::Variant::QemuTdx => (
            crate::tdx::rtmr::CLUSTER_ID_MEASUREMENT_INDEX,
            crate::tdx::rtmr::expected_cluster_id_rtmr(cluster_id).to_vec(),
        ),
        _ => (15, expected_pcr15(cluster_id).to_vec()),
    }
}

/// SHA-256 PCR extend: SHA256(old ‖ digest).
pub fn extend_sha256(old: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(old);
    h.update(digest);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(b: u8) -> Vec<u8> {
        vec![b; 32]
    }

    #[test]
    fn json_round_trip_sorted_and_legacy() {
        let mut m = Measurements::new();
        m.insert(11, Measurement::enforced(v(0xbb)).unwrap());
        m.insert(4, Measurement::warn_only(v(0xaa)).unwrap());
        let json = m.to_json();
        assert!(json.find("\"4\"").unwrap() < json.find("\"11\"").unwrap());
        assert_eq!(json, serde_json::to_string(&m).unwrap());
        let back: Measurements = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);

        let legacy = format!(r#"{{"4": "{}"}}"#, hex::encode(v(1)));
        let l: Measurements = serde_json::from_str(&legacy).unwrap();
        assert_eq!(l.0[&4], Measurement::enforced(v(1)).unwrap());

        let no_warn = format!(
            r#"{{"4": {{"expected": "{}"}}}}"#,
            hex::encode(vec![2u8; 48])
        );
        let l: Measurements = serde_json::from_str(&no_warn).unwrap();
        assert!(!l.0[&4].warn_only);
        assert_eq!(l.0[&4].expected.len(), 48);
    }

    #[test]
    fn yaml_round_trip() {
        let mut m = Measurements::new();
        m.insert(15, Measurement::enforced(v(3)).unwrap());
        m.insert(9, Measurement::warn_only(v(4)).unwrap());
        let y = serde_yaml::to_string(&m).unwrap();
        assert!(y.contains("warnOnly: true"), "{y}");
        assert_eq!(serde_yaml::from_str::<Measurements>(&y).unwrap(), m);
        let legacy = format!("4: {}\n", hex::encode(v(5)));
        assert_eq!(
            serde_yaml::from_str::<Measurements>(&legacy).unwrap().0[&4].expected,
            v(5)
        );
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(serde_json::from_str::<Measurements>(r#"{"4": "abcd"}"#).is_err());
        assert!(serde_json::from_str::<Measurements>(r#"{"4": "zz!"}"#).is_err());
        assert!(
            serde_json::from_str::<Measurements>(r#"{"x": {"expected": "00", "warnOnly": 1}}"#)
                .is_err()
        );
    }

    #[test]
    fn compare_collects_every_mismatch() {
        let mut m = Measurements::new();
        m.insert(1, Measurement::enforced(v(1)).unwrap());
        m.insert(2, Measurement::enforced(v(2)).unwrap());
        m.insert(3, Measurement::warn_only(v(3)).unwrap());
        m.insert(4, Measurement::enforced(v(4)).unwrap());
        let actual = BTreeMap::from([(1, v(1)), (2, v(9)), (3, v(9))]);
        let c = m.compare(&actual);
        assert_eq!(c.errors.len(), 2);
        assert_eq!(c.errors[0].index, 2);
        assert_eq!(c.errors[0].got, Some(v(9)));
        assert_eq!(c.errors[1].index, 4);
        assert_eq!(c.errors[1].got, None);
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.warnings[0].index, 3);
    }

    #[test]
    fn pcr15_value() {
        let id = b"cluster";
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update(Sha256::digest(id));
        let want: [u8; 32] = h.finalize().into();
        assert_eq!(expected_pcr15(id), want);
    }
}
