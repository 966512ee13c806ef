//! aws-sev-snp: a NitroTPM quote whose attestation key is bound by an SEV-SNP report
//! (VLEK-signed on EC2): REPORT_DATA = SHA-512 of the AK's SubjectPublicKeyInfo (DER).
//!
//! `TpmEvidence::instance_info` carries [`AwsSnpInstanceInfo`] as JSON; the TPM validator hashes
//! it into the quote's qualifying data, so the report is bound to the nonce too.
//! aws-nitro-tpm (EC2 image TPM support via the EC2 API) is in [`nitro`].

pub mod nitro;

use std::sync::Arc;

use rsa::pkcs8::EncodePublicKey;
use serde::{Deserialize, Serialize};

use crate::document::TpmEvidence;
use crate::evidence_json::{b64, leaf_and_chain};
use crate::measurements::Measurements;
use crate::policy::SnpPolicy;
use crate::snp::{self, AmdRoots, ReportDataBinding, SnpError};
use crate::tpm::{AkTrust, EccCurve, TpmKey, TpmPublic, TpmValidator};
use crate::validator::{PlatformClaims, ValidationError};
use crate::variant::Variant;

/// What an aws-sev-snp issuer puts into `instance_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsSnpInstanceInfo {
    /// Raw SNP report (1184 bytes), standard base64.
    pub report: String,
    /// VLEK (or VCEK) PEM, from the extended report's certificate table.
    pub signer_pem: String,
    /// ASVK (or ASK) then ARK, PEM; the ARK is ignored (pinned roots are used).
    #[serde(default)]
    pub chain_pem: String,
}

/// Why the AWS AK binding failed (boxed into `ValidationError::Platform`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AwsAkError {
    /// instance_info is not the expected JSON.
    #[error("instance_info is not aws-sev-snp evidence JSON: {0}")]
    InstanceInfo(String),
    /// The AK cannot be encoded as SubjectPublicKeyInfo.
    #[error("attestation key type not supported for SPKI binding: {0}")]
    AkType(String),
    /// Hardware evidence rejected; every failed check (a REPORT_DATA failure means the report
    /// does not bind this AK).
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Hardware(Vec<SnpError>),
}

/// DER SubjectPublicKeyInfo of a TPM key (RSA, ECC P-256/P-384).
pub fn ak_spki_der(ak: &TpmPublic) -> Result<Vec<u8>, AwsAkError> {
    match &ak.key {
        TpmKey::Rsa {
            modulus, exponent, ..
        } => {
            let k = rsa::RsaPublicKey::new(
                rsa::BigUint::from_bytes_be(modulus),
                rsa::BigUint::from(*exponent),
            )
            .map_err(|e| AwsAkError::AkType(e.to_string()))?;
            Ok(k.to_public_key_der()
                .map_err(|e| AwsAkError::AkType(e.to_string()))?
                .as_bytes()
                .to_vec())
        }
        TpmKey::Ecc { curve, x, y, .. } => {
            let mut point = vec![4u8];
            point.extend_from_slice(x);
            point.extend_from_slice(y);
            let der = match curve {
                EccCurve::NistP256 => p256::PublicKey::from_sec1_bytes(&point)
                    .map_err(|e| AwsAkError::AkType(e.to_string()))?
                    .to_public_key_der(),
                EccCurve::NistP384 => p384::PublicKey::from_sec1_bytes(&point)
                    .map_err(|e| AwsAkError::AkType(e.to_string()))?
                    .to_public_key_der(),
                other => return Err(AwsAkError::AkType(format!("{other:?}"))),
            };
            Ok(der
                .map_err(|e| AwsAkError::AkType(e.to_string()))?
                .as_bytes()
                .to_vec())
        }
    }
}

/// AkTrust for aws-sev-snp.
#[derive(Debug, Clone)]
pub struct AwsSnpAkTrust {
    /// Trusted ARKs.
    pub roots: AmdRoots,
    /// SNP policy (AWS guests run at VMPL 0 unless a paravisor is used).
    pub policy: SnpPolicy,
}

fn platform(e: AwsAkError) -> ValidationError {
    ValidationError::Platform {
        variant: Variant::AwsSevSnp,
        source: Box::new(e),
    }
}

impl AkTrust for AwsSnpAkTrust {
    fn verify_ak(
        &self,
        _variant: Variant,
        evidence: &TpmEvidence,
        ak: &TpmPublic,
        _extra_data: &[u8; 32],
    ) -> Result<PlatformClaims, ValidationError> {
        let info: AwsSnpInstanceInfo = serde_json::from_slice(&evidence.instance_info)
            .map_err(|e| platform(AwsAkError::InstanceInfo(e.to_string())))?;
        let report =
            b64("report", &info.report).map_err(|e| platform(AwsAkError::InstanceInfo(e)))?;
        let (leaf, chain) = leaf_and_chain("signer_pem", &info.signer_pem, &info.chain_pem)
            .map_err(|e| platform(AwsAkError::InstanceInfo(e)))?;
        let spki = ak_spki_der(ak).map_err(platform)?;
        let now = Some(time::OffsetDateTime::now_utc());
        let v = snp::verify_all(
            &report,
            &leaf,
            chain.first(),
            &self.roots,
            now,
            &self.policy,
            &ReportDataBinding::AwsAkSpki(spki),
        )
        .map_err(|e| platform(AwsAkError::Hardware(e)))?;
        let claims = serde_json::to_value(&v)
            .map_err(|e| platform(AwsAkError::InstanceInfo(e.to_string())))?;
        Ok(PlatformClaims::HardwareVerified { claims })
    }
}

/// An aws-sev-snp validator: vTPM checks plus the SNP-report-rooted AK binding.
pub fn validator(
    measurements: Measurements,
    policy: SnpPolicy,
) -> Result<TpmValidator, crate::certs::CertError> {
    let roots = AmdRoots::from_policy(&policy)?;
    Ok(TpmValidator::new(
        Variant::AwsSevSnp,
        measurements,
        Arc::new(AwsSnpAkTrust { roots, policy }),
    ))
}

#[cfg(feature = "issuer")]
/// Node side of aws-sev-snp: an SNP report whose REPORT_DATA is SHA-512 of the AK's
/// SubjectPublicKeyInfo, with the VLEK chain from the certificate table.
#[derive(Debug)]
pub struct AwsSnpInstanceInfoSource {
    /// Where reports come from.
    pub snp: crate::snp::issuer::SnpReportSource,
}

#[cfg(feature = "issuer")]
impl crate::validator::InstanceInfoSource for AwsSnpInstanceInfoSource {
    fn instance_info(
        &self,
        _extra_data: &[u8; 32],
        ak_public: &[u8],
    ) -> Result<Vec<u8>, crate::validator::IssueError> {
        use sha2::Digest;
        let err = |m: String| crate::validator::IssueError::Platform {
            variant: Variant::AwsSevSnp,
            source: m.into(),
        };
        let ak = TpmPublic::parse_tpm2b(ak_public).map_err(|e| err(format!("AK: {e}")))?;
        let spki = ak_spki_der(&ak).map_err(|e| err(e.to_string()))?;
        let mut rd = [0u8; 64];
        rd.copy_from_slice(&sha2::Sha512::digest(&spki));
        let m = self.snp.get(&rd)?;
        let info = AwsSnpInstanceInfo {
            report: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &m.report),
            signer_pem: m.signer_pem,
            chain_pem: m.chain_pem,
        };
        Ok(serde_json::to_vec(&info).unwrap_or_default())
    }
}
