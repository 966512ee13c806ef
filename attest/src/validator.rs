//! Issuer and Validator traits, verified claims and the errors of validation.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

use crate::document::{AttestationDocument, DocumentError};
use crate::eventlog::EventLogError;
use crate::measurements::Mismatch;
use crate::tpm::TpmError;
use crate::variant::Variant;

/// Produces attestation documents (node side).
pub trait Issuer: Send + Sync {
    /// The variant of the documents this issuer produces.
    fn variant(&self) -> Variant;

    /// Issues a document binding `user_data` and the verifier's `nonce`
    /// (extra data = SHA-256(user_data ‖ nonce)). May block (TPM/hardware I/O).
    fn issue(&self, user_data: &[u8], nonce: &[u8]) -> Result<AttestationDocument, IssueError>;
}

/// Computes a vTPM document's `instance_info` for one issue (node side): a hardware report
/// whose REPORT_DATA binds the document's extra data or the AK, plus what a validator needs to
/// check it (certificates, instance names).
pub trait InstanceInfoSource: Send + Sync + std::fmt::Debug {
    /// `extra_data` = SHA-256(user_data ‖ nonce); `ak_public` = the AK's `TPM2B_PUBLIC`.
    fn instance_info(&self, extra_data: &[u8; 32], ak_public: &[u8])
    -> Result<Vec<u8>, IssueError>;
}

/// Fixed instance_info (read once at start: Azure HCL report and VCEK, GCE instance names).
#[derive(Debug, Clone)]
pub struct StaticInstanceInfo(pub Vec<u8>);

impl InstanceInfoSource for StaticInstanceInfo {
    fn instance_info(&self, _: &[u8; 32], _: &[u8]) -> Result<Vec<u8>, IssueError> {
        Ok(self.0.clone())
    }
}

/// Checks attestation documents of one variant against a policy (pure Rust).
pub trait Validator: Send + Sync {
    /// The variant this validator accepts.
    fn variant(&self) -> Variant;

    /// Validates `doc` for the verifier's `nonce`. On success the claims carry the document's
    /// user data, which the caller must compare with what it expects (see
    /// [`validate_document`]).
    fn validate(
        &self,
        doc: &AttestationDocument,
        nonce: &[u8],
    ) -> Result<VerifiedClaims, ValidationError>;
}

/// What a validator established about the attesting platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedClaims {
    /// Variant of the validated document.
    pub variant: Variant,
    /// The user data bound into the evidence (hex in JSON).
    #[serde(serialize_with = "ser_hex")]
    pub user_data: Vec<u8>,
    /// Every attested register value (PCRs, TDX registers) by index, hex in JSON.
    #[serde(serialize_with = "ser_hex_map")]
    pub measurements: BTreeMap<u32, Vec<u8>>,
    /// Mismatches of warn-only measurements.
    #[serde(serialize_with = "ser_display_vec")]
    pub warnings: Vec<Mismatch>,
    /// How the attestation key / report is anchored in hardware or the host.
    pub platform: PlatformClaims,
    /// True when an event log was present and replaying it reproduced the quoted PCRs.
    pub event_log_verified: bool,
}

/// The root of trust behind the evidence, per variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
#[non_exhaustive]
pub enum PlatformClaims {
    /// qemu-vtpm: the attestation key is trusted because the host (which runs swtpm) supplied
    /// it — as the document carries it, or certified by the cluster's AK CA
    /// (`qemu_vtpm::certified_validator`). There is no hardware root; the TPM checks still all
    /// apply.
    HostTrustedAk,
    /// Cloud variants: hardware evidence (SEV-SNP report, TDX quote, Azure HCL
    /// report) verified and binding the AK; `claims` is the verifier's JSON claims.
    HardwareVerified {
        /// The verified hardware claims (see docs/attestation-policy.md).
        claims: serde_json::Value,
    },
    /// Cloud vTPM variants without a hardware report (gcp-sev-es, azure-trustedlaunch,
    /// aws-nitro-tpm): the cloud vouches for the AK (API answer or AK certificate chain);
    /// `claims` says how.
    CloudVouchedAk {
        /// What vouched for the AK (see docs/attestation-policy.md).
        claims: serde_json::Value,
    },
}

fn ser_hex<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

fn ser_hex_map<S: serde::Serializer>(m: &BTreeMap<u32, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(m.len()))?;
    for (k, v) in m {
        map.serialize_entry(&k.to_string(), &hex::encode(v))?;
    }
    map.end()
}

fn ser_display_vec<S: serde::Serializer>(v: &[Mismatch], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(ToString::to_string))
}

/// Why a document was rejected. Every variant names its cause; measurement mismatches list
/// every differing index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The bytes are not a document.
    #[error("cannot decode attestation document: {0}")]
    Decode(#[from] DocumentError),
    /// No configured validator accepts this variant.
    #[error("no validator configured for attestation variant {got} (configured: {configured:?})")]
    NoValidator {
        /// Variant of the document.
        got: Variant,
        /// Variants with a validator.
        configured: Vec<Variant>,
    },
    /// The document is of a different variant than this validator.
    #[error("document is for variant {got}, this validator checks {expected}")]
    VariantMismatch {
        /// The validator's variant.
        expected: Variant,
        /// The document's variant.
        got: Variant,
    },
    /// The evidence kind does not fit the variant.
    #[error("variant {variant} expects {expected} evidence, document carries {got} evidence")]
    EvidenceKindMismatch {
        /// The variant.
        variant: Variant,
        /// Expected evidence kind.
        expected: &'static str,
        /// Evidence kind found.
        got: &'static str,
    },
    /// A TPM structure in the evidence is malformed.
    #[error("malformed TPM evidence: {0}")]
    Tpm(#[from] TpmError),
    /// The attestation key is not usable as an AK (not a restricted signing key, unsupported
    /// algorithm, ...).
    #[error("attestation key rejected: {0}")]
    UnsupportedAk(String),
    /// The signature algorithm does not fit the attestation key's type.
    #[error("signature algorithm {signature} does not match the attestation key type {key}")]
    AkKeyTypeMismatch {
        /// Key type of the AK.
        key: &'static str,
        /// Algorithm of the signature.
        signature: &'static str,
    },
    /// The quote signature does not verify with the attestation key.
    #[error(
        "quote signature does not verify with the attestation key (evidence altered or signed by another key)"
    )]
    BadSignature,
    /// The quote's qualifying data is not SHA-256(instance_info ‖ SHA-256(user_data ‖ nonce)).
    #[error(
        "quote is not bound to this nonce and user data (expected qualifying data {expected}, got {got}): replayed or altered document"
    )]
    NonceOrUserDataMismatch {
        /// Expected qualifying data (hex).
        expected: String,
        /// Qualifying data in the quote (hex).
        got: String,
    },
    /// The user data is not what the caller expected (in aTLS: not the certificate's key).
    #[error(
        "document user data {got} does not match the expected {expected} (document not issued for this certificate key)"
    )]
    UserDataMismatch {
        /// Expected user data (hex).
        expected: String,
        /// User data in the document (hex).
        got: String,
    },
    /// The quote does not select exactly the PCRs of the document in the SHA-256 bank.
    #[error(
        "quote PCR selection {quoted:?} (SHA-256 bank) differs from the PCRs in the document {document:?}"
    )]
    PcrSelectionMismatch {
        /// PCR indices selected by the quote.
        quoted: Vec<u32>,
        /// PCR indices in the document.
        document: Vec<u32>,
    },
    /// A PCR value in the document is not 32 bytes long.
    #[error("PCR {index} in the document is {len} bytes long, a SHA-256 PCR is 32")]
    BadPcrValue {
        /// PCR index.
        index: u32,
        /// Its length.
        len: usize,
    },
    /// The PCR values in the document do not hash to the quoted digest.
    #[error(
        "PCR values in the document do not match the quoted PCR digest (quoted {quoted}, computed {computed})"
    )]
    PcrDigestMismatch {
        /// Digest in the quote (hex).
        quoted: String,
        /// Digest over the document's values (hex).
        computed: String,
    },
    /// One or more enforced measurements differ; every mismatch is listed.
    #[error("{} measurement(s) differ: {}", .0.len(), join(.0))]
    MeasurementMismatch(Vec<Mismatch>),
    /// The event log cannot be parsed.
    #[error("event log: {0}")]
    EventLog(#[from] EventLogError),
    /// Replaying the event log does not reproduce the quoted PCRs (expected = quoted,
    /// got = replayed).
    #[error("event log replay does not reproduce the quoted PCRs: {}", join(.0))]
    EventLogReplayMismatch(Vec<Mismatch>),
    /// The variant's platform evidence (hardware report, AK certificate) is not acceptable.
    #[error("platform evidence of {variant} rejected: {source}")]
    Platform {
        /// The variant.
        variant: Variant,
        /// The variant-specific typed error (downcast to inspect).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ValidationError {
    /// The variant-specific error of a [`ValidationError::Platform`] when it is a `T` (e.g.
    /// `gcp::GcpAkError`), so callers can match on the typed reason; otherwise the error back.
    pub fn into_platform_error<T: std::error::Error + 'static>(self) -> Result<T, Self> {
        match self {
            Self::Platform { variant, source } => match source.downcast::<T>() {
                Ok(t) => Ok(*t),
                Err(source) => Err(Self::Platform { variant, source }),
            },
            other => Err(other),
        }
    }
}

fn join(v: &[Mismatch]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a document could not be issued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The TPM (or its connection) failed.
    #[error("TPM operation {operation} failed: {message}")]
    Tpm {
        /// Which operation.
        operation: &'static str,
        /// What the TPM stack said.
        message: String,
    },
    /// Reading platform data (event log, device) failed.
    #[error("reading {what} failed: {source}")]
    Io {
        /// What was read.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The attestation key the variant's cloud provisions is missing or unusable.
    #[error("{variant}: attestation key at {location}: {message}; {expected}")]
    AttestationKey {
        /// The variant.
        variant: Variant,
        /// Where the key (or its template) should be, e.g. `persistent handle 0x81000003`.
        location: String,
        /// What is wrong.
        message: String,
        /// What the cloud should have provisioned there.
        expected: String,
    },
    /// The issuer's worker is gone (e.g. it panicked or was shut down).
    #[error("attestation issuer is shut down")]
    Closed,
    /// Too many requests are waiting for the issuer; try again shortly.
    #[error("attestation issuer is busy ({queued} requests waiting); try again shortly")]
    Busy {
        /// How many requests were waiting.
        queued: usize,
    },
    /// Variant-specific failure.
    #[error("{variant} issuer: {source}")]
    Platform {
        /// The variant.
        variant: Variant,
        /// The variant-specific error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A shared, replaceable set of validators (e.g. the join service swaps it when the cluster's
/// attestation config changes). Clones share the same set.
#[derive(Clone, Default)]
pub struct Validators(Arc<RwLock<Vec<Arc<dyn Validator>>>>);

impl std::fmt::Debug for Validators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Validators").field(&self.variants()).finish()
    }
}

impl Validators {
    /// A set with these validators.
    pub fn new(v: Vec<Arc<dyn Validator>>) -> Self {
        Self(Arc::new(RwLock::new(v)))
    }

    /// Replaces the set; later validations use the new one.
    pub fn replace(&self, v: Vec<Arc<dyn Validator>>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = v;
    }

    /// The variants currently accepted.
    pub fn variants(&self) -> Vec<Variant> {
        self.snapshot().iter().map(|v| v.variant()).collect()
    }

    /// True when no validator is configured.
    pub fn is_empty(&self) -> bool {
        self.snapshot().is_empty()
    }

    fn snapshot(&self) -> Vec<Arc<dyn Validator>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Decodes, picks the validator for the document's variant, validates for `nonce` and
    /// checks the user data equals `expected_user_data`.
    pub fn validate_bytes(
        &self,
        bytes: &[u8],
        nonce: &[u8],
        expected_user_data: &[u8],
    ) -> Result<VerifiedClaims, ValidationError> {
        let doc = AttestationDocument::from_bytes(bytes)?;
        validate_document(&self.snapshot(), &doc, nonce, expected_user_data)
    }
}

/// Validates `doc` with the validator of its variant among `validators`, then checks its user
/// data equals `expected_user_data`.
pub fn validate_document(
    validators: &[Arc<dyn Validator>],
    doc: &AttestationDocument,
    nonce: &[u8],
    expected_user_data: &[u8],
) -> Result<VerifiedClaims, ValidationError> {
    let v = validators
        .iter()
        .find(|v| v.variant() == doc.variant)
        .ok_or_else(|| ValidationError::NoValidator {
            got: doc.variant,
            configured: validators.iter().map(|v| v.variant()).collect(),
        })?;
    let claims = v.validate(doc, nonce)?;
    if claims.user_data != expected_user_data {
        return Err(ValidationError::UserDataMismatch {
            expected: hex::encode(expected_user_data),
            got: hex::encode(&claims.user_data),
        });
    }
    Ok(claims)
}
