//! AMD SEV-SNP: report parsing (versions 2, 3, 5) and verification against AMD's pinned roots.

#[cfg(feature = "issuer")]
pub mod issuer;
pub mod report;
pub mod verify;

pub use report::{GuestPolicy, REPORT_LEN, ReportError, SigningKey, SnpReport, Tcb};
pub use verify::{
    AmdRoots, Generation, ReportDataBinding, SignerKind, SnpError, VerifiedSigner, VerifiedSnp,
    verify_all, verify_chain, verify_report, verify_signature,
};
