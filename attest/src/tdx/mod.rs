//! Intel TDX: DCAP quote v4/v5 parsing and verification with PCS collateral.
//!
//! Written here rather than with `dcap-qvl`: we need separate reference times for the quote's
//! certificates and for collateral (real collateral outlives its signing certificate), a typed
//! reason per failed check, all failures listed at once, and a verified-PCK cache for the hot path.

pub mod ccel;
pub mod collateral;
pub mod quote;
pub mod rtmr;
pub mod verify;

pub use collateral::{CollateralError, parse_qe_identity, parse_tcb_info};
pub use quote::{Quote, QuoteError, TdReportBody};
pub use verify::{
    CollateralFiles, INTEL_SGX_ROOT_SHA256, IntelRoot, TcbStatus, TdxError, TdxVerifier, Times,
    VerifiedCollateral, VerifiedTdx, verify_collateral, verify_quote,
};
