//! The azure-sev-snp variant on top of the vTPM validator: the AK is trusted because the HCL
//! report's SEV-SNP report (verified to the pinned AMD root) binds runtime claims whose
//! `HCLAkPub` equals the AK.
//!
//! `TpmEvidence::instance_info` carries [`AzureSnpInstanceInfo`] as JSON; it is hashed into the
//! quote's qualifying data by the TPM validator, so it is bound to the nonce.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::document::{TdxCollateral, TpmEvidence};
use crate::evidence_json::{b64, leaf_and_chain, rsa_ak_is};
use crate::measurements::Measurements;
use crate::policy::{SnpPolicy, TdxPolicy};
use crate::snp::AmdRoots;
use crate::tdx::Times;
use crate::tpm::{AkTrust, TpmPublic, TpmValidator};
use crate::validator::{PlatformClaims, ValidationError};
use crate::variant::Variant;

/// What an azure-sev-snp issuer puts into `instance_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzureSnpInstanceInfo {
    /// HCL report (vTPM NV index 0x01400001), standard base64.
    pub hcl_report: String,
    /// VCEK (PEM), from Azure THIM or AMD KDS.
    pub vcek_pem: String,
    /// ASK then ARK (PEM); the ARK is ignored (pinned roots are used).
    #[serde(default)]
    pub chain_pem: String,
}

/// Why the Azure AK binding failed (boxed into `ValidationError::Platform`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AzureAkError {
    /// instance_info is not the expected JSON.
    #[error("instance_info is not the variant's evidence JSON: {0}")]
    InstanceInfo(String),
    /// Hardware evidence rejected; every failed check.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Hardware(Vec<super::AzureError>),
    /// The HCLAkPub is not the AK that signed the quote.
    #[error("HCLAkPub in the runtime claims is not the attestation key that signed the quote")]
    AkMismatch,
}

/// AkTrust for azure-sev-snp.
#[derive(Debug, Clone)]
pub struct AzureSnpAkTrust {
    /// Trusted ARKs.
    pub roots: AmdRoots,
    /// SNP policy.
    pub policy: SnpPolicy,
}

fn platform(e: AzureAkError) -> ValidationError {
    platform_of(Variant::AzureSevSnp, e)
}

fn platform_of(variant: Variant, e: AzureAkError) -> ValidationError {
    ValidationError::Platform {
        variant,
        source: Box::new(e),
    }
}

impl AkTrust for AzureSnpAkTrust {
    fn verify_ak(
        &self,
        _variant: Variant,
        evidence: &TpmEvidence,
        ak: &TpmPublic,
        _extra_data: &[u8; 32],
    ) -> Result<PlatformClaims, ValidationError> {
        let info: AzureSnpInstanceInfo = serde_json::from_slice(&evidence.instance_info)
            .map_err(|e| platform(AzureAkError::InstanceInfo(e.to_string())))?;
        let hcl = b64("hcl_report", &info.hcl_report)
            .map_err(|e| platform(AzureAkError::InstanceInfo(e)))?;
        let (leaf, chain) = leaf_and_chain("vcek_pem", &info.vcek_pem, &info.chain_pem)
            .map_err(|e| platform(AzureAkError::InstanceInfo(e)))?;
        let now = Some(time::OffsetDateTime::now_utc());
        let v = super::verify_snp(&hcl, &leaf, chain.first(), &self.roots, now, &self.policy)
            .map_err(|e| platform(AzureAkError::Hardware(e)))?;
        let matches = hex::decode(&v.ak_modulus)
            .ok()
            .zip(hex::decode(&v.ak_exponent).ok())
            .is_some_and(|(n, e)| rsa_ak_is(ak, &n, &e));
        if !matches {
            return Err(platform(AzureAkError::AkMismatch));
        }
        let claims = serde_json::to_value(&v)
            .map_err(|e| platform(AzureAkError::InstanceInfo(e.to_string())))?;
        Ok(PlatformClaims::HardwareVerified { claims })
    }
}

/// An azure-sev-snp validator: vTPM checks plus the hardware-rooted AK binding.
pub fn validator(
    measurements: Measurements,
    policy: SnpPolicy,
) -> Result<TpmValidator, crate::certs::CertError> {
    let roots = AmdRoots::from_policy(&policy)?;
    Ok(TpmValidator::new(
        Variant::AzureSevSnp,
        measurements,
        Arc::new(AzureSnpAkTrust { roots, policy }),
    ))
}

/// What an azure-tdx issuer puts into `instance_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzureTdxInstanceInfo {
    /// HCL report (vTPM NV index 0x01400001) holding the TDREPORT, standard base64.
    pub hcl_report: String,
    /// The TD quote of that TDREPORT (from the Azure IMDS quote endpoint), standard base64.
    pub td_quote: String,
    /// Intel PCS collateral for the quote's FMSPC, when the issuer could fetch it.
    #[serde(default)]
    pub collateral: Option<TdxCollateral>,
}

/// AkTrust for azure-tdx: the TD quote verifies to the Intel root, its body equals the TDREPORT
/// in the HCL report, whose REPORT_DATA binds the runtime claims, whose HCLAkPub is the AK.
#[derive(Debug, Clone)]
pub struct AzureTdxAkTrust {
    /// TDX policy.
    pub policy: TdxPolicy,
}

impl AkTrust for AzureTdxAkTrust {
    fn verify_ak(
        &self,
        _variant: Variant,
        evidence: &TpmEvidence,
        ak: &TpmPublic,
        _extra_data: &[u8; 32],
    ) -> Result<PlatformClaims, ValidationError> {
        let p = |e| platform_of(Variant::AzureTdx, e);
        let info: AzureTdxInstanceInfo = serde_json::from_slice(&evidence.instance_info)
            .map_err(|e| p(AzureAkError::InstanceInfo(format!("azure-tdx JSON: {e}"))))?;
        let hcl =
            b64("hcl_report", &info.hcl_report).map_err(|e| p(AzureAkError::InstanceInfo(e)))?;
        let quote =
            b64("td_quote", &info.td_quote).map_err(|e| p(AzureAkError::InstanceInfo(e)))?;
        let now = Some(time::OffsetDateTime::now_utc());
        let files = info.collateral.as_ref().map(TdxCollateral::to_files);
        let v = super::verify_tdx(
            &hcl,
            &quote,
            files.as_ref(),
            &self.policy,
            Times {
                at: now,
                collateral_at: now,
            },
        )
        .map_err(|e| p(AzureAkError::Hardware(e)))?;
        let matches = hex::decode(&v.ak_modulus)
            .ok()
            .zip(hex::decode(&v.ak_exponent).ok())
            .is_some_and(|(n, e)| rsa_ak_is(ak, &n, &e));
        if !matches {
            return Err(p(AzureAkError::AkMismatch));
        }
        let claims = serde_json::to_value(&v).unwrap_or_default();
        Ok(PlatformClaims::HardwareVerified { claims })
    }
}

/// An azure-tdx validator: vTPM checks plus the TD-quote-rooted AK binding.
pub fn tdx_validator(
    measurements: Measurements,
    policy: TdxPolicy,
) -> Result<TpmValidator, crate::certs::CertError> {
    // Fail early on an unusable root in the policy rather than on the first document.
    crate::tdx::IntelRoot::from_policy(&policy)?;
    Ok(TpmValidator::new(
        Variant::AzureTdx,
        measurements,
        Arc::new(AzureTdxAkTrust { policy }),
    ))
}

#[cfg(feature = "issuer")]
/// Node side, azure-sev-snp: `instance_info` from the HCL report (vTPM NV index 0x01400001)
/// and the VCEK bundle from THIM.
pub fn azure_snp_instance_info(
    hcl_report: &[u8],
    thim: &crate::certs::fetch::Thim,
) -> Result<Vec<u8>, crate::certs::fetch::FetchError> {
    let bundle = thim.vcek_bundle()?;
    let info = AzureSnpInstanceInfo {
        hcl_report: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, hcl_report),
        vcek_pem: bundle.vcek_cert,
        chain_pem: bundle.certificate_chain,
    };
    Ok(serde_json::to_vec(&info).unwrap_or_default())
}

#[cfg(feature = "issuer")]
/// Node side, azure-tdx: `instance_info` from the HCL report, the TD quote the host makes of its
/// TDREPORT (IMDS `/acc/tdquote`) and, when a source is given, PCS collateral for the quote.
pub fn azure_tdx_instance_info(
    hcl_report: &[u8],
    imds: &crate::imds::AzureImds,
    collateral: Option<&dyn crate::qemu_tdx::CollateralSource>,
) -> Result<Vec<u8>, crate::validator::IssueError> {
    let err = |m: String| crate::validator::IssueError::Platform {
        variant: Variant::AzureTdx,
        source: m.into(),
    };
    let hcl = super::HclReport::parse(hcl_report).map_err(|e| err(format!("HCL report: {e}")))?;
    let td_report = hcl
        .hw_report
        .get(..1024)
        .ok_or_else(|| err("HCL report holds no TDREPORT".into()))?;
    let quote = imds
        .td_quote(td_report)
        .map_err(|e| err(format!("TD quote from IMDS: {e}")))?;
    let collateral = collateral.and_then(|src| {
        let fmspc = crate::qemu_tdx::quote_fmspc(&quote)?;
        src.collateral(&fmspc)
            .map_err(|e| tracing::warn!(error = %e, "TDX collateral unavailable"))
            .ok()
            .map(|c| TdxCollateral::from_files(&c))
    });
    let enc = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
    let info = AzureTdxInstanceInfo {
        hcl_report: enc(hcl_report),
        td_quote: enc(&quote),
        collateral,
    };
    Ok(serde_json::to_vec(&info).unwrap_or_default())
}
