//! The azure-sev-snp variant on top of the vTPM validator: the AK is trusted because the HCL
//! report's SEV-SNP report (verified to the pinned AMD root) binds runtime claims whose
//! `HCLAkPub` equals the AK.
//!
//! `TpmEvidence::instance_info` carries [`AzureSnpInstanceInfo`] as JSON; it is hashed into the
//! quote's qualifying data by the TPM validator, so it is bound to the nonce.

use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::certs::Cert;
use crate::document::TpmEvidence;
use crate::measurements::Measurements;
use crate::policy::SnpPolicy;
use crate::snp::AmdRoots;
use crate::tpm::{AkTrust, TpmKey, TpmPublic, TpmValidator};
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
    #[error("instance_info is not azure-sev-snp evidence JSON: {0}")]
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
    ValidationError::Platform {
        variant: Variant::AzureSevSnp,
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
        let hcl = base64::engine::general_purpose::STANDARD
            .decode(info.hcl_report.trim())
            .map_err(|e| platform(AzureAkError::InstanceInfo(format!("hcl_report: {e}"))))?;
        let leaf = Cert::from_pem_or_der(info.vcek_pem.as_bytes())
            .map_err(|e| platform(AzureAkError::InstanceInfo(format!("vcek_pem: {e}"))))?;
        let chain = if info.chain_pem.trim().is_empty() {
            Vec::new()
        } else {
            Cert::from_pem_bundle(info.chain_pem.as_bytes())
                .map_err(|e| platform(AzureAkError::InstanceInfo(format!("chain_pem: {e}"))))?
        };
        let now = Some(time::OffsetDateTime::now_utc());
        let v = super::verify_snp(&hcl, &leaf, chain.first(), &self.roots, now, &self.policy)
            .map_err(|e| platform(AzureAkError::Hardware(e)))?;
        let matches = match &ak.key {
            TpmKey::Rsa {
                modulus, exponent, ..
            } => {
                let e_claim = v.ak_exponent.trim_start_matches('0');
                let e_ak = format!("{exponent:x}");
                hex::decode(&v.ak_modulus).is_ok_and(|n| &n == modulus) && e_claim == e_ak
            }
            _ => false,
        };
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
