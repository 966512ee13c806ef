//! azure-trustedlaunch: a vTPM without CVM hardware evidence. Azure provisions an AK certificate
//! into vTPM NV index 0x01C101D0; the AK is trusted when that certificate carries exactly the AK
//! and chains (through Azure's intermediate CA) to a root pinned in the policy
//! (`policy.azure.trusted_launch_roots_pem`).
//!
//! The intermediate comes from the evidence or, when absent, from the certificate's Authority
//! Information Access caIssuers URL through [`IssuerCertSource`] — with a real HTTP
//! implementation whose base URL the policy configures (a mirror of Azure's CA endpoint; tests
//! use 127.0.0.1). Only scheme and host of the AIA URL are replaced, the path is kept.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::certs::Cert;
use crate::certs::fetch::{FetchError, HttpGet, PlainHttp};
use crate::document::TpmEvidence;
use crate::evidence_json::{b64, canonical_spki};
use crate::measurements::Measurements;
use crate::policy::AzurePolicy;
use crate::tpm::{AkTrust, TpmPublic, TpmValidator};
use crate::validator::{PlatformClaims, ValidationError};
use crate::variant::Variant;

/// OID of the Authority Information Access extension.
const OID_AIA: &str = "1.3.6.1.5.5.7.1.1";
/// DER contents of the caIssuers access-method OID 1.3.6.1.5.5.7.48.2.
const CA_ISSUERS: [u8; 8] = [0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02];
/// Longest chain accepted (leaf, intermediates, root).
const MAX_CHAIN: usize = 5;

/// What an azure-trustedlaunch issuer puts into `instance_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedLaunchInstanceInfo {
    /// The AK certificate (DER from NV 0x01C101D0), standard base64.
    pub ak_cert: String,
    /// Intermediate CA certificates (PEM), if the issuer has them.
    #[serde(default)]
    pub intermediates_pem: String,
}

/// Why an azure-trustedlaunch AK is not trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustedLaunchError {
    /// instance_info is not the expected JSON.
    #[error("instance_info is not azure-trustedlaunch evidence JSON: {0}")]
    InstanceInfo(String),
    /// A certificate cannot be parsed or verified.
    #[error("AK certificate chain: {0}")]
    Cert(#[from] crate::certs::CertError),
    /// The AK certificate's key is not the quoting AK.
    #[error(
        "the AK certificate certifies another key than the attestation key that signed the quote"
    )]
    AkMismatch,
    /// No chain to a pinned root.
    #[error(
        "AK certificate '{subject}' does not chain to a root in policy.azure.trusted_launch_roots_pem ({reason})"
    )]
    Untrusted {
        /// Subject CN of the last certificate reached.
        subject: String,
        /// Why the walk stopped.
        reason: String,
    },
    /// A certificate in the chain is outside its validity.
    #[error("certificate '{subject}' is not valid now (valid {not_before} .. {not_after})")]
    Expired {
        /// Subject CN.
        subject: String,
        /// Start.
        not_before: time::OffsetDateTime,
        /// End.
        not_after: time::OffsetDateTime,
    },
    /// Fetching an issuer certificate failed.
    #[error("fetching the issuer of '{subject}': {source}")]
    Fetch {
        /// Subject CN.
        subject: String,
        /// Cause.
        #[source]
        source: FetchError,
    },
    /// azure-trustedlaunch needs roots in the policy.
    #[error(
        "azure-trustedlaunch needs policy.azure.trusted_launch_roots_pem (no built-in Azure root)"
    )]
    NoRoots,
}

/// Source of a certificate's issuer (the intermediate CA).
pub trait IssuerCertSource: Send + Sync {
    /// The issuer certificate(s) of `cert`, or None when it names no fetchable issuer.
    fn issuer_of(&self, cert: &Cert) -> Result<Option<Vec<Cert>>, TrustedLaunchError>;
}

/// The caIssuers URL of a certificate's AIA extension.
pub fn ca_issuers_url(cert: &Cert) -> Option<String> {
    use crate::tdx::collateral::tlv;
    let ext = cert.extension(OID_AIA)?;
    let (_, mut seq, _) = tlv(ext)?;
    while !seq.is_empty() {
        let (_, desc, rest) = tlv(seq)?;
        seq = rest;
        let (tag, oid, loc) = tlv(desc)?;
        if tag == 0x06 && oid == CA_ISSUERS {
            let (tag, uri, _) = tlv(loc)?;
            if tag == 0x86 {
                return String::from_utf8(uri.to_vec()).ok();
            }
        }
    }
    None
}

/// Fetches issuers from the AIA URL with scheme and host replaced by `base`.
pub struct AiaFetcher {
    /// Base URL replacing the AIA URL's scheme and host.
    pub base: String,
    /// HTTP client.
    pub http: Box<dyn HttpGet>,
}

impl IssuerCertSource for AiaFetcher {
    fn issuer_of(&self, cert: &Cert) -> Result<Option<Vec<Cert>>, TrustedLaunchError> {
        let Some(url) = ca_issuers_url(cert) else {
            return Ok(None);
        };
        let path = url
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').and_then(|i| rest.get(i..)))
            .unwrap_or("/");
        let target = format!("{}{path}", self.base.trim_end_matches('/'));
        let r = self
            .http
            .get(&target)
            .map_err(|source| TrustedLaunchError::Fetch {
                subject: cert.subject_cn().into(),
                source,
            })?;
        // caIssuers serves DER (.crt/.cer) or a PEM bundle.
        let certs = match Cert::from_der(&r.body) {
            Ok(c) => vec![c],
            Err(_) => Cert::from_pem_bundle(&r.body)?,
        };
        Ok(Some(certs))
    }
}

/// AkTrust for azure-trustedlaunch.
#[derive(Clone)]
pub struct TrustedLaunchAkTrust {
    /// Pinned roots.
    pub roots: Vec<Cert>,
    /// Where missing intermediates come from.
    pub issuers: Option<Arc<dyn IssuerCertSource>>,
}

impl std::fmt::Debug for TrustedLaunchAkTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedLaunchAkTrust")
            .field("roots", &self.roots)
            .field("issuers", &self.issuers.is_some())
            .finish()
    }
}

fn platform(e: TrustedLaunchError) -> ValidationError {
    ValidationError::Platform {
        variant: Variant::AzureTrustedLaunch,
        source: Box::new(e),
    }
}

impl TrustedLaunchAkTrust {
    /// Walks leaf → intermediates → pinned root, checking signatures and validity at `at`.
    /// Returns the subjects of the chain.
    pub fn verify_chain(
        &self,
        leaf: &Cert,
        pool: &[Cert],
        at: time::OffsetDateTime,
    ) -> Result<Vec<String>, TrustedLaunchError> {
        let mut pool = pool.to_vec();
        let mut current = leaf.clone();
        let mut subjects = vec![leaf.subject_cn().to_string()];
        for _ in 0..MAX_CHAIN {
            if !current.valid_at(at) {
                return Err(TrustedLaunchError::Expired {
                    subject: current.subject_cn().into(),
                    not_before: current.not_before(),
                    not_after: current.not_after(),
                });
            }
            if let Some(root) = self.roots.iter().find(|r| current.verify_by(r).is_ok()) {
                if !root.valid_at(at) {
                    return Err(TrustedLaunchError::Expired {
                        subject: root.subject_cn().into(),
                        not_before: root.not_before(),
                        not_after: root.not_after(),
                    });
                }
                subjects.push(root.subject_cn().to_string());
                return Ok(subjects);
            }
            let mut next = pool
                .iter()
                .find(|c| c.subject_cn() == current.issuer_cn() && current.verify_by(c).is_ok())
                .cloned();
            if next.is_none()
                && let Some(src) = &self.issuers
                && let Some(fetched) = src.issuer_of(&current)?
            {
                next = fetched
                    .iter()
                    .find(|c| current.verify_by(c).is_ok())
                    .cloned();
                pool.extend(fetched);
            }
            let Some(n) = next else {
                return Err(TrustedLaunchError::Untrusted {
                    subject: current.subject_cn().into(),
                    reason: format!(
                        "no certificate of issuer '{}' verifies it",
                        current.issuer_cn()
                    ),
                });
            };
            subjects.push(n.subject_cn().to_string());
            current = n;
        }
        Err(TrustedLaunchError::Untrusted {
            subject: current.subject_cn().into(),
            reason: format!("chain longer than {MAX_CHAIN} certificates"),
        })
    }
}

impl AkTrust for TrustedLaunchAkTrust {
    fn verify_ak(
        &self,
        _variant: Variant,
        evidence: &TpmEvidence,
        ak: &TpmPublic,
        _extra_data: &[u8; 32],
    ) -> Result<PlatformClaims, ValidationError> {
        let info: TrustedLaunchInstanceInfo = serde_json::from_slice(&evidence.instance_info)
            .map_err(|e| platform(TrustedLaunchError::InstanceInfo(e.to_string())))?;
        let der = b64("ak_cert", &info.ak_cert)
            .map_err(|e| platform(TrustedLaunchError::InstanceInfo(e)))?;
        let leaf = Cert::from_der(&der).map_err(|e| platform(e.into()))?;
        let pool = if info.intermediates_pem.trim().is_empty() {
            Vec::new()
        } else {
            Cert::from_pem_bundle(info.intermediates_pem.as_bytes())
                .map_err(|e| platform(e.into()))?
        };
        let cert_key = canonical_spki(leaf.spki_der()).map_err(|e| {
            platform(TrustedLaunchError::InstanceInfo(format!(
                "AK certificate key: {e}"
            )))
        })?;
        let ak_key = crate::aws::ak_spki_der(ak)
            .map_err(|e| platform(TrustedLaunchError::InstanceInfo(e.to_string())))?;
        if cert_key != ak_key {
            return Err(platform(TrustedLaunchError::AkMismatch));
        }
        let chain = self
            .verify_chain(&leaf, &pool, time::OffsetDateTime::now_utc())
            .map_err(platform)?;
        Ok(PlatformClaims::CloudVouchedAk {
            claims: serde_json::json!({
                "ak_source": "AK certificate (vTPM NV 0x01C101D0)",
                "chain": chain,
            }),
        })
    }
}

/// An azure-trustedlaunch validator from the policy's roots and optional caIssuers mirror.
pub fn validator(
    measurements: Measurements,
    azure: &AzurePolicy,
) -> Result<TpmValidator, TrustedLaunchError> {
    if azure.trusted_launch_roots_pem.is_empty() {
        return Err(TrustedLaunchError::NoRoots);
    }
    let mut roots = Vec::new();
    for pem in &azure.trusted_launch_roots_pem {
        roots.extend(Cert::from_pem_bundle(pem.as_bytes())?);
    }
    let issuers = azure.ca_issuers_base_url.as_ref().map(|base| {
        Arc::new(AiaFetcher {
            base: base.clone(),
            http: Box::new(PlainHttp::default()),
        }) as Arc<dyn IssuerCertSource>
    });
    Ok(TpmValidator::new(
        Variant::AzureTrustedLaunch,
        measurements,
        Arc::new(TrustedLaunchAkTrust { roots, issuers }),
    ))
}
