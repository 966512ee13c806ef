//! Attestation: evidence formats, issuers (node side), validators (pure Rust), measurements and
//! attested TLS.
//!
//! Default features build only pure-Rust code (plus aws-lc-rs, which rustls uses anyway), so the
//! Terraform provider can validate nodes on a laptop. The `tpm` feature adds the node-side TPM
//! issuer (tss-esapi, libtss2); `test-support` adds a swtpm process helper for tests.

pub mod atls;
pub mod aws;
pub mod azure;
pub mod certs;
pub mod config;
pub mod document;
mod evidence_json;
pub mod gcp;
pub mod imds;
pub mod measurements;
pub mod policy;
pub mod qemu_tdx;
pub mod qemu_vtpm;
pub mod snp;
pub mod tdx;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod tpm;
pub mod tsm;
pub mod validator;
pub mod variant;

pub use document::{AttestationDocument, Evidence, TdxEvidence, TpmEvidence};
pub use measurements::{Measurement, Measurements, Mismatch, expected_pcr15};
pub use validator::{
    InstanceInfoSource, IssueError, Issuer, PlatformClaims, ValidationError, Validator, Validators,
    VerifiedClaims,
};
pub use variant::Variant;
