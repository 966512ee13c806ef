//! Azure confidential VMs: the HCL report and the azure-sev-snp / azure-tdx hardware checks that
//! vouch for the vTPM attestation key (`HCLAkPub`).

pub mod hcl;
pub mod trustedlaunch;
pub mod variant;

use serde::Serialize;
use time::OffsetDateTime;

use crate::certs::Cert;
use crate::policy::{SnpPolicy, TdxPolicy};
use crate::snp::{self, AmdRoots, ReportDataBinding, SnpError, VerifiedSnp};
use crate::tdx::{self, CollateralFiles, TdxError, Times, VerifiedTdx};
pub use hcl::{HclError, HclReport, HwKind, RuntimeClaims, TdReport};

/// Why Azure CVM evidence is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AzureError {
    /// HCL report malformed or not binding its claims.
    #[error("HCL report: {0}")]
    Hcl(#[from] HclError),
    /// SNP check failed.
    #[error("SEV-SNP: {0}")]
    Snp(#[from] SnpError),
    /// TDX check failed.
    #[error("TDX: {0}")]
    Tdx(#[from] TdxError),
    /// The HCL report holds the other hardware kind.
    #[error("HCL report holds a {got:?} report, expected {expected:?}")]
    Kind {
        /// Expected.
        expected: HwKind,
        /// Got.
        got: HwKind,
    },
    /// The vTPM quote is malformed.
    #[error("vTPM quote: {0}")]
    TpmQuote(String),
    /// The vTPM quote signature does not verify with HCLAkPub.
    #[error("vTPM quote signature does not verify with the HCLAkPub attestation key")]
    TpmQuoteSignature,
    /// The PCR values do not hash to the quoted digest.
    #[error("PCR values do not match the quoted PCR digest")]
    PcrDigest,
    /// The TD quote is not for the TDREPORT in the HCL report.
    #[error("TD quote field {0} differs from the TDREPORT in the HCL report")]
    QuoteReportMismatch(&'static str),
}

/// Verified Azure claims: the hardware claims plus the vTPM AK they vouch for.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedAzure<T> {
    /// Hardware claims.
    pub hardware: T,
    /// HCLAkPub modulus (hex).
    pub ak_modulus: String,
    /// HCLAkPub exponent (hex).
    pub ak_exponent: String,
    /// vmUniqueId.
    pub vm_unique_id: Option<String>,
    /// user-data from the runtime claims.
    pub user_data: Option<String>,
}

fn wrap<T>(hardware: T, c: RuntimeClaims) -> VerifiedAzure<T> {
    VerifiedAzure {
        hardware,
        ak_modulus: hex::encode(&c.ak_n),
        ak_exponent: hex::encode(&c.ak_e),
        vm_unique_id: c.vm_unique_id,
        user_data: c.user_data,
    }
}

/// azure-sev-snp: HCL report → SNP report (chain, signature, policy) → REPORT_DATA binds the
/// runtime claims → HCLAkPub.
pub fn verify_snp(
    hcl_bytes: &[u8],
    leaf: &Cert,
    intermediate: Option<&Cert>,
    roots: &AmdRoots,
    at: Option<OffsetDateTime>,
    policy: &SnpPolicy,
) -> Result<VerifiedAzure<VerifiedSnp>, Vec<AzureError>> {
    let hcl = HclReport::parse(hcl_bytes).map_err(|e| vec![e.into()])?;
    if hcl.kind != HwKind::Snp {
        return Err(vec![AzureError::Kind {
            expected: HwKind::Snp,
            got: hcl.kind,
        }]);
    }
    let mut errs: Vec<AzureError> = Vec::new();
    let claims = hcl.claims().map_err(|e| errs.push(e.into())).ok();
    let binding = ReportDataBinding::AzureRuntimeData(hcl.runtime_claims.clone());
    let snp = snp::verify_all(
        &hcl.hw_report,
        leaf,
        intermediate,
        roots,
        at,
        policy,
        &binding,
    )
    .map_err(|e| errs.extend(e.into_iter().map(AzureError::from)))
    .ok();
    match (snp, claims) {
        (Some(s), Some(c)) if errs.is_empty() => Ok(wrap(s, c)),
        _ => Err(errs),
    }
}

/// azure-tdx: HCL report (TDREPORT) + TD quote: the quote verifies, its body equals the TDREPORT
/// (REPORT_DATA, MRTD, RTMRs, attributes, XFAM) and REPORT_DATA binds the runtime claims.
pub fn verify_tdx(
    hcl_bytes: &[u8],
    quote: &[u8],
    collateral: Option<&CollateralFiles>,
    policy: &TdxPolicy,
    times: Times,
) -> Result<VerifiedAzure<VerifiedTdx>, Vec<AzureError>> {
    let hcl = HclReport::parse(hcl_bytes).map_err(|e| vec![e.into()])?;
    if hcl.kind != HwKind::Tdx {
        return Err(vec![AzureError::Kind {
            expected: HwKind::Tdx,
            got: hcl.kind,
        }]);
    }
    let mut errs: Vec<AzureError> = Vec::new();
    let td = TdReport::parse(&hcl.hw_report).map_err(|e| vec![e.into()])?;
    if let Err(e) = hcl.check_binding(&td.report_data) {
        errs.push(e.into());
    }
    let claims = hcl.claims().map_err(|e| errs.push(e.into())).ok();
    let q = tdx::Quote::parse(quote).map_err(|e| vec![AzureError::Tdx(e.into())])?;
    for (name, same) in [
        ("REPORT_DATA", q.body.report_data == td.report_data),
        ("MRTD", q.body.mrtd == td.mrtd),
        ("RTMR", q.body.rtmr == td.rtmr),
        ("TD attributes", q.body.td_attributes == td.td_attributes),
        ("XFAM", q.body.xfam == td.xfam),
        ("TEE_TCB_SVN", q.body.tee_tcb_svn == td.tee_tcb_svn),
        ("MRSEAM", q.body.mrseam == td.mrseam),
    ] {
        if !same {
            errs.push(AzureError::QuoteReportMismatch(name));
        }
    }
    let v = tdx::verify_quote(quote, collateral, policy, times)
        .map_err(|e| errs.extend(e.into_iter().map(AzureError::from)))
        .ok();
    match (v, claims) {
        (Some(v), Some(c)) if errs.is_empty() => Ok(wrap(v, c)),
        _ => Err(errs),
    }
}

/// Verifies a vTPM quote (TPMS_ATTEST signed RSASSA-PKCS1-v1_5/SHA-256) with the HCLAkPub of
/// verified runtime claims, and that `pcrs` (index-aligned, SHA-256 bank) hash to the quoted
/// digest. Returns the parsed quote (its `extra_data` is the nonce).
pub fn verify_vtpm_quote(
    claims: &RuntimeClaims,
    message: &[u8],
    signature: &[u8],
    pcrs: &[Vec<u8>],
) -> Result<crate::tpm::TpmAttest, AzureError> {
    use rsa::signature::Verifier;
    let key = claims.ak_public_key()?;
    let sig =
        rsa::pkcs1v15::Signature::try_from(signature).map_err(|_| AzureError::TpmQuoteSignature)?;
    rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key)
        .verify(message, &sig)
        .map_err(|_| AzureError::TpmQuoteSignature)?;
    let attest =
        crate::tpm::TpmAttest::parse(message).map_err(|e| AzureError::TpmQuote(e.to_string()))?;
    let mut selected = Vec::new();
    for sel in &attest.pcr_selection {
        for i in &sel.pcrs {
            selected.push(
                pcrs.get(*i as usize)
                    .ok_or(AzureError::PcrDigest)?
                    .as_slice(),
            );
        }
    }
    if crate::tpm::pcr_digest_sha256(selected) != attest.pcr_digest.as_slice() {
        return Err(AzureError::PcrDigest);
    }
    Ok(attest)
}
