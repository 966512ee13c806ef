//! Attestation: evidence formats, issuers (node side), validators (pure Rust), measurements and
//! attested TLS.
//!
//! Default features build only pure-Rust code (plus aws-lc-rs, which rustls uses anyway), so the
//! Terraform provider can validate nodes on a laptop. Node-side issuers sit behind features, so
//! the provider does not compile them: `issuer` adds configfs-tsm, the instance metadata
//! clients and the hardware-report sources; `tpm` (implies `issuer`) adds the TPM issuer
//! (tss-esapi, libtss2); `test-support` adds a swtpm process helper for tests.

pub mod atls;
pub mod aws;
pub mod azure;
pub mod certs;
pub mod config;
pub mod document;
pub mod eventlog;
mod evidence_json;
pub mod gcp;
#[cfg(feature = "issuer")]
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
#[cfg(feature = "issuer")]
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
