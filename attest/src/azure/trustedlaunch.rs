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
/// Extended key usages that mark a certificate as an attestation-key certificate: the TCG AIK
/// purpose (tcg-kp-AIKCertificate) and the one Azure's vTPM AK certificates carry. Any other
/// certificate (a TLS leaf, a CA, a VM's AK certificate re-used as an issuer) is not an AK
/// certificate.
pub const AK_EKUS: [&str; 2] = ["2.23.133.8.3", "1.3.6.1.4.1.567.10.3.12"];

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
    /// The path found by the walk failed rustls-webpki's RFC 5280 path validation.
    #[error("AK certificate '{subject}' failed X.509 path validation: {reason}")]
    PathValidation {
        /// Subject of the AK certificate.
        subject: String,
        /// webpki's verdict.
        reason: String,
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
    /// Walks leaf → intermediates → pinned root and returns the subjects of the chain.
    ///
    /// The leaf must carry the AK profile (an end-entity certificate with an AK extended key
    /// usage), every issuer must be a CA allowed to sign certificates within its path length,
    /// and every certificate must be valid at `at`; the first violation is returned naming the
    /// certificate. The path found is then validated once more by rustls-webpki (signatures,
    /// validity, basicConstraints, pathLen). webpki alone is not enough here: it ignores
    /// keyUsage on CAs, applies one EKU policy to every certificate of the path, does not name
    /// the failing certificate and cannot fetch a missing issuer from the AIA URL.
    pub fn verify_chain(
        &self,
        leaf: &Cert,
        pool: &[Cert],
        at: time::OffsetDateTime,
    ) -> Result<Vec<String>, TrustedLaunchError> {
        leaf.check_end_entity()?;
        leaf.check_eku(&AK_EKUS)?;
        let mut pool = pool.to_vec();
        let mut path = vec![leaf.clone()];
        while path.len() <= MAX_CHAIN {
            let Some(current) = path.last().cloned() else {
                break;
            };
            // Intermediate CAs between the next issuer and the leaf.
            let cas_below = path.len() - 1;
            check_valid_at(&current, at)?;
            if let Some(root) = self.roots.iter().find(|r| current.verify_by(r).is_ok()) {
                check_valid_at(root, at)?;
                root.check_issuer_of(&current, cas_below)?;
                path.push(root.clone());
                webpki_validate(&path, at)?;
                return Ok(path.iter().map(|c| c.name().to_string()).collect());
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
                    subject: current.name().into(),
                    reason: format!(
                        "no certificate of issuer '{}' verifies it",
                        current.issuer_cn()
                    ),
                });
            };
            n.check_issuer_of(&current, cas_below)?;
            path.push(n);
        }
        Err(TrustedLaunchError::Untrusted {
            subject: leaf.name().into(),
            reason: format!("chain longer than {MAX_CHAIN} certificates"),
        })
    }
}

fn check_valid_at(c: &Cert, at: time::OffsetDateTime) -> Result<(), TrustedLaunchError> {
    if c.valid_at(at) {
        return Ok(());
    }
    Err(TrustedLaunchError::Expired {
        subject: c.name().into(),
        not_before: c.not_before(),
        not_after: c.not_after(),
    })
}

/// The leaf's EKU is checked by [`Cert::check_eku`]; webpki hands this validator the EKUs of
/// every certificate in the path, and CAs need not carry the AK purpose.
struct EkuCheckedSeparately;

impl webpki::ExtendedKeyUsageValidator for EkuCheckedSeparately {
    fn validate(&self, _: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// Validates `[leaf, intermediates…, root]` with rustls-webpki, the root as trust anchor.
fn webpki_validate(path: &[Cert], at: time::OffsetDateTime) -> Result<(), TrustedLaunchError> {
    use rustls::pki_types::{CertificateDer, UnixTime};
    let (Some(leaf), Some(root)) = (path.first(), path.last()) else {
        return Err(TrustedLaunchError::Untrusted {
            subject: String::new(),
            reason: "empty certificate path".into(),
        });
    };
    let fail = |e: webpki::Error| TrustedLaunchError::PathValidation {
        subject: leaf.name().into(),
        reason: e.to_string(),
    };
    let leaf_der = CertificateDer::from(leaf.der());
    let root_der = CertificateDer::from(root.der());
    let end_entity = webpki::EndEntityCert::try_from(&leaf_der).map_err(fail)?;
    let anchor = webpki::anchor_from_trusted_cert(&root_der).map_err(fail)?;
    let intermediates: Vec<CertificateDer<'_>> = path
        .get(1..path.len().saturating_sub(1))
        .unwrap_or_default()
        .iter()
        .map(|c| CertificateDer::from(c.der()))
        .collect();
    let secs = u64::try_from(at.unix_timestamp()).unwrap_or(0);
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &intermediates,
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
            EkuCheckedSeparately,
            None,
            None,
        )
        .map_err(fail)?;
    Ok(())
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
