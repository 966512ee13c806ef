//! Google Cloud: gcp-sev-snp and gcp-sev-es, both vTPM variants over [`TpmValidator`].
//!
//! * gcp-sev-snp: `instance_info` is [`GcpSnpInstanceInfo`]; the SNP report (VCEK-signed,
//!   verified to the pinned AMD root) must carry REPORT_DATA = the document's extra data
//!   (SHA-256(user_data ‖ nonce)) zero-padded to 64 bytes, so the hardware report is fresh for
//!   this handshake. The report does not contain the AK, so the AK is also checked against the
//!   instance's shielded-VM identity from the Compute API, as for gcp-sev-es (required).
//! * gcp-sev-es: SEV-ES has no attestation report; the AK is trusted because Google's Compute
//!   API (`instances.getShieldedInstanceIdentity`) names it as the instance's vTPM signing key.
//!   `instance_info` is [`GceInstance`] (project, zone, name — untrusted, from the metadata
//!   server; the API answer for that name is what is trusted). The quoted event log must show
//!   that the VM runs with AMD SEV memory encryption (GCE's `NonHostInfo` event in PCR 0), so a
//!   plain Shielded VM of the same project is refused.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::certs::fetch::{FetchError, HttpGet, PlainHttp};
use crate::document::TpmEvidence;
use crate::evidence_json::{b64, canonical_spki, leaf_and_chain};
use crate::measurements::Measurements;
use crate::policy::{GcpPolicy, SnpPolicy};
use crate::snp::{self, AmdRoots, ReportDataBinding, SnpError};
use crate::tpm::{AkTrust, TpmPublic, TpmValidator};
use crate::validator::{PlatformClaims, ValidationError};
use crate::variant::Variant;

/// Environment variable with an OAuth2 access token for the Compute API (the same variable the
/// Google Terraform provider reads). Read on every call, never stored in config or logged.
pub const ACCESS_TOKEN_ENV: &str = "GOOGLE_OAUTH_ACCESS_TOKEN";

/// Which GCE instance produced the evidence (from the metadata server; untrusted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GceInstance {
    /// Project ID.
    pub project_id: String,
    /// Zone, e.g. `europe-west3-b`.
    pub zone: String,
    /// Instance name.
    pub instance_name: String,
}

impl GceInstance {
    /// Checks the names are plain GCE identifiers, so they cannot alter the API URL path.
    fn check(&self) -> Result<(), GcpAkError> {
        for (what, v) in [
            ("projectId", &self.project_id),
            ("zone", &self.zone),
            ("instanceName", &self.instance_name),
        ] {
            let ok = !v.is_empty()
                && v.len() <= 100
                && v.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'));
            if !ok {
                return Err(GcpAkError::InstanceInfo(format!(
                    "{what} {v:?} is not a GCE identifier"
                )));
            }
        }
        Ok(())
    }
}

/// What a gcp-sev-snp issuer puts into `instance_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcpSnpInstanceInfo {
    /// Raw SNP report (1184 bytes), standard base64.
    pub report: String,
    /// VCEK (PEM), from the extended report's
    /// certificate table or AMD KDS.
    pub signer_pem: String,
    /// ASK then ARK, PEM; the ARK is ignored (pinned roots are used).
    #[serde(default)]
    pub chain_pem: String,
    /// The instance, for the optional Compute API check of the AK.
    #[serde(default)]
    pub gce: Option<GceInstance>,
}

/// Why a GCP AK is not trusted (boxed into `ValidationError::Platform`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GcpAkError {
    /// instance_info is not the expected JSON.
    #[error("instance_info is not {0}")]
    InstanceInfo(String),
    /// The SNP report failed; every failed check (a REPORT_DATA failure means the report was not
    /// made for this nonce and user data).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Hardware(Vec<SnpError>),
    /// The Compute API could not be asked or answered nonsense.
    #[error("Compute API: {0}")]
    Api(#[from] GceApiError),
    /// The project is not in the policy's allow-list.
    #[error("project {0:?} is not in the policy's allowed GCP projects")]
    ProjectNotAllowed(String),
    /// The Compute API names another key as the instance's vTPM signing key.
    #[error(
        "the attestation key is not the vTPM signing key the Compute API reports for instance {0}"
    )]
    AkMismatch(String),
    /// The variant needs the Compute API but the policy configures none.
    #[error(
        "{0} needs policy.gcp.compute_api_url, e.g. https://compute.googleapis.com (the AK is trusted only through the Compute API)"
    )]
    NoApi(Variant),
    /// The event log does not show an AMD SEV VM.
    #[error("gcp-sev-es: {0}")]
    NotSev(String),
}

/// Why the Compute API call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GceApiError {
    /// HTTP failed (including non-200: 403 = missing permission, 404 = no such instance).
    #[error(transparent)]
    Http(#[from] FetchError),
    /// The body is not a shieldedInstanceIdentity with a signing key.
    #[error("getShieldedInstanceIdentity answer unusable: {0}")]
    Body(String),
}

/// Source of a GCE instance's vTPM signing key (the AK).
pub trait ShieldedIdentitySource: Send + Sync {
    /// The instance's AK as a canonical DER SubjectPublicKeyInfo.
    fn signing_key(&self, instance: &GceInstance) -> Result<Vec<u8>, GceApiError>;
}

/// `compute.instances.getShieldedInstanceIdentity` over HTTP.
pub struct GceComputeApi {
    /// Base URL, e.g. `https://compute.googleapis.com` (tests: `http://127.0.0.1:port`).
    pub base: String,
    /// HTTP client (plug in a TLS-capable one for https).
    pub http: Box<dyn HttpGet>,
}

impl std::fmt::Debug for GceComputeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GceComputeApi")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShieldedIdentity {
    signing_key: Option<ShieldedKey>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShieldedKey {
    ek_pub: Option<String>,
}

/// Parses a `compute#shieldedInstanceIdentity` body to the signing key's canonical SPKI DER.
pub fn parse_shielded_identity(body: &[u8]) -> Result<Vec<u8>, GceApiError> {
    let id: ShieldedIdentity =
        serde_json::from_slice(body).map_err(|e| GceApiError::Body(e.to_string()))?;
    let pem = id
        .signing_key
        .and_then(|k| k.ek_pub)
        .ok_or_else(|| GceApiError::Body("no signingKey.ekPub".into()))?;
    canonical_spki(pem.as_bytes()).map_err(|e| GceApiError::Body(format!("signingKey.ekPub: {e}")))
}

impl ShieldedIdentitySource for GceComputeApi {
    fn signing_key(&self, i: &GceInstance) -> Result<Vec<u8>, GceApiError> {
        let url = format!(
            "{}/compute/v1/projects/{}/zones/{}/instances/{}/getShieldedInstanceIdentity",
            self.base.trim_end_matches('/'),
            i.project_id,
            i.zone,
            i.instance_name
        );
        let token = std::env::var(ACCESS_TOKEN_ENV).ok().map(Zeroizing::new);
        let auth = token
            .as_ref()
            .map(|t| Zeroizing::new(format!("Bearer {}", t.trim())));
        let headers: Vec<(&str, &str)> = auth
            .as_ref()
            .map(|a| vec![("Authorization", a.as_str())])
            .unwrap_or_default();
        let r = self.http.get_with_headers(&url, &headers)?;
        parse_shielded_identity(&r.body)
    }
}

fn platform(variant: Variant, e: GcpAkError) -> ValidationError {
    ValidationError::Platform {
        variant,
        source: Box::new(e),
    }
}

fn check_ak_via_api(
    variant: Variant,
    api: &dyn ShieldedIdentitySource,
    allowed_projects: &[String],
    inst: &GceInstance,
    ak: &TpmPublic,
) -> Result<(), ValidationError> {
    inst.check().map_err(|e| platform(variant, e))?;
    if !allowed_projects.is_empty() && !allowed_projects.contains(&inst.project_id) {
        return Err(platform(
            variant,
            GcpAkError::ProjectNotAllowed(inst.project_id.clone()),
        ));
    }
    let want = api
        .signing_key(inst)
        .map_err(|e| platform(variant, e.into()))?;
    let got = crate::aws::ak_spki_der(ak)
        .map_err(|e| platform(variant, GcpAkError::InstanceInfo(e.to_string())))?;
    if want != got {
        return Err(platform(
            variant,
            GcpAkError::AkMismatch(format!(
                "{}/{}/{}",
                inst.project_id, inst.zone, inst.instance_name
            )),
        ));
    }
    Ok(())
}

/// AkTrust for gcp-sev-snp.
#[derive(Clone)]
pub struct GcpSnpAkTrust {
    /// Trusted ARKs.
    pub roots: AmdRoots,
    /// SNP policy.
    pub policy: SnpPolicy,
    /// Compute API check of the AK (None: every AK is refused, the binding is incomplete).
    pub api: Option<Arc<dyn ShieldedIdentitySource>>,
    /// Projects accepted by the API check (empty: any).
    pub allowed_projects: Vec<String>,
}

impl std::fmt::Debug for GcpSnpAkTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpSnpAkTrust")
            .field("policy", &self.policy)
            .field("api", &self.api.is_some())
            .finish_non_exhaustive()
    }
}

impl AkTrust for GcpSnpAkTrust {
    fn verify_ak(
        &self,
        _variant: Variant,
        evidence: &TpmEvidence,
        ak: &TpmPublic,
        extra_data: &[u8; 32],
    ) -> Result<PlatformClaims, ValidationError> {
        let v = Variant::GcpSevSnp;
        let info: GcpSnpInstanceInfo =
            serde_json::from_slice(&evidence.instance_info).map_err(|e| {
                platform(
                    v,
                    GcpAkError::InstanceInfo(format!("gcp-sev-snp JSON: {e}")),
                )
            })?;
        let report =
            b64("report", &info.report).map_err(|e| platform(v, GcpAkError::InstanceInfo(e)))?;
        let (leaf, chain) = leaf_and_chain("signer_pem", &info.signer_pem, &info.chain_pem)
            .map_err(|e| platform(v, GcpAkError::InstanceInfo(e)))?;
        let verified = snp::verify_all(
            &report,
            &leaf,
            chain.first(),
            &self.roots,
            Some(time::OffsetDateTime::now_utc()),
            &self.policy,
            &ReportDataBinding::GcpExtraData(extra_data.to_vec()),
        )
        .map_err(|e| platform(v, GcpAkError::Hardware(e)))?;
        let api = self
            .api
            .as_ref()
            .ok_or_else(|| platform(v, GcpAkError::NoApi(v)))?;
        let inst = info.gce.as_ref().ok_or_else(|| {
            platform(
                v,
                GcpAkError::InstanceInfo(
                    "gcp-sev-snp JSON without `gce` (needed for the Compute API check)".into(),
                ),
            )
        })?;
        check_ak_via_api(v, api.as_ref(), &self.allowed_projects, inst, ak)?;
        let claims = serde_json::to_value(&verified).unwrap_or_default();
        Ok(PlatformClaims::HardwareVerified { claims })
    }
}

/// AkTrust for gcp-sev-es: the Compute API vouches for the AK.
#[derive(Clone)]
pub struct GcpSevEsAkTrust {
    /// The Compute API.
    pub api: Arc<dyn ShieldedIdentitySource>,
    /// Projects accepted (empty: any).
    pub allowed_projects: Vec<String>,
}

impl std::fmt::Debug for GcpSevEsAkTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpSevEsAkTrust")
            .field("allowed_projects", &self.allowed_projects)
            .finish_non_exhaustive()
    }
}

impl AkTrust for GcpSevEsAkTrust {
    fn verify_ak(
        &self,
        _variant: Variant,
        evidence: &TpmEvidence,
        ak: &TpmPublic,
        _extra_data: &[u8; 32],
    ) -> Result<PlatformClaims, ValidationError> {
        let v = Variant::GcpSevEs;
        let inst: GceInstance = serde_json::from_slice(&evidence.instance_info)
            .map_err(|e| platform(v, GcpAkError::InstanceInfo(format!("gcp-sev-es JSON: {e}"))))?;
        let technology = sev_technology(evidence).map_err(|e| platform(v, e))?;
        check_ak_via_api(v, self.api.as_ref(), &self.allowed_projects, &inst, ak)?;
        let claims = serde_json::json!({
            "confidential_technology": technology,
            "ak_source": "compute.instances.getShieldedInstanceIdentity",
            "project_id": inst.project_id,
            "zone": inst.zone,
            "instance_name": inst.instance_name,
        });
        Ok(PlatformClaims::CloudVouchedAk { claims })
    }
}

/// TCG event type of GCE's platform event (`EV_NONHOST_INFO`).
const EV_NONHOST_INFO: u32 = 0x11;
/// Prefix of GCE's `EV_NONHOST_INFO` event data; the next byte is the confidential technology.
const GCE_NONHOST_INFO_SIGNATURE: &[u8; 16] = b"GCE NonHostInfo\0";
/// GCE confidential-technology values that mean AMD SEV memory encryption (SEV, SEV-ES).
const GCE_TECH_AMD_SEV: u8 = 1;
const GCE_TECH_AMD_SEV_ES: u8 = 2;

/// The confidential technology GCE's firmware recorded in PCR 0, which must be AMD SEV or SEV-ES.
/// Only PCR 0 events are read, and only when the log replays to the document's PCR 0 value; the
/// TPM validator then checks that value against the quote, so the event is as trusted as the
/// quote.
pub fn sev_technology(evidence: &TpmEvidence) -> Result<&'static str, GcpAkError> {
    use crate::eventlog::{EventLog, TPM_ALG_SHA256};
    use sha2::Digest;
    let not_sev = |m: String| GcpAkError::NotSev(m);
    let log = evidence.event_log.as_ref().ok_or_else(|| {
        not_sev("the evidence has no event log, so it cannot show that the VM runs AMD SEV".into())
    })?;
    let pcr0 = evidence.pcrs.get(&0).ok_or_else(|| {
        not_sev("PCR 0 is not quoted, so the GCE platform event is not covered".into())
    })?;
    let log = EventLog::parse(log).map_err(|e| not_sev(format!("event log: {e}")))?;
    let replayed = log
        .replay(TPM_ALG_SHA256)
        .map_err(|e| not_sev(format!("event log: {e}")))?;
    if replayed.get(&0).map(Vec::as_slice) != Some(pcr0.as_slice()) {
        return Err(not_sev(
            "the event log does not replay to the quoted PCR 0".into(),
        ));
    }
    let mut found = None;
    for e in log
        .events
        .iter()
        .filter(|e| e.pcr == 0 && e.event_type == EV_NONHOST_INFO)
    {
        if let Some(rest) = e.data.strip_prefix(GCE_NONHOST_INFO_SIGNATURE.as_slice())
            && let Some(&tech) = rest.first()
        {
            // The replay covers the digest, not the data: the data counts only when it is what
            // was measured.
            let measured: [u8; 32] = sha2::Sha256::digest(&e.data).into();
            if e.sha256() != Some(measured) {
                return Err(not_sev(
                    "the GCE NonHostInfo event's data is not what its PCR 0 digest measured".into(),
                ));
            }
            if found.is_some() {
                return Err(not_sev(
                    "the event log has more than one GCE NonHostInfo event".into(),
                ));
            }
            found = Some(tech);
        }
    }
    match found {
        Some(GCE_TECH_AMD_SEV) => Ok("AMD_SEV"),
        Some(GCE_TECH_AMD_SEV_ES) => Ok("AMD_SEV_ES"),
        Some(t) => Err(not_sev(format!(
            "GCE reports confidential technology {t} in PCR 0, not AMD SEV (1) or SEV-ES (2): the VM does not run with SEV memory encryption"
        ))),
        None => Err(not_sev(
            "the event log has no GCE NonHostInfo event in PCR 0, so it does not show that the VM runs AMD SEV".into(),
        )),
    }
}

fn api_from_policy(gcp: &GcpPolicy) -> Option<Arc<dyn ShieldedIdentitySource>> {
    gcp.compute_api_url.as_ref().map(|base| {
        Arc::new(GceComputeApi {
            base: base.clone(),
            http: Box::new(PlainHttp::default()),
        }) as Arc<dyn ShieldedIdentitySource>
    })
}

/// A gcp-sev-snp validator.
pub fn snp_validator(
    measurements: Measurements,
    policy: SnpPolicy,
    gcp: &GcpPolicy,
) -> Result<TpmValidator, crate::certs::CertError> {
    let roots = AmdRoots::from_policy(&policy)?;
    Ok(TpmValidator::new(
        Variant::GcpSevSnp,
        measurements,
        Arc::new(GcpSnpAkTrust {
            roots,
            policy,
            api: api_from_policy(gcp),
            allowed_projects: gcp.allowed_projects.clone(),
        }),
    ))
}

/// A gcp-sev-es validator; fails without a Compute API endpoint in the policy.
pub fn sev_es_validator(
    measurements: Measurements,
    gcp: &GcpPolicy,
) -> Result<TpmValidator, GcpAkError> {
    let api = api_from_policy(gcp).ok_or(GcpAkError::NoApi(Variant::GcpSevEs))?;
    Ok(sev_es_validator_with(
        measurements,
        api,
        gcp.allowed_projects.clone(),
    ))
}

/// A gcp-sev-es validator with an explicit identity source.
pub fn sev_es_validator_with(
    measurements: Measurements,
    api: Arc<dyn ShieldedIdentitySource>,
    allowed_projects: Vec<String>,
) -> TpmValidator {
    TpmValidator::new(
        Variant::GcpSevEs,
        measurements,
        Arc::new(GcpSevEsAkTrust {
            api,
            allowed_projects,
        }),
    )
}

#[cfg(feature = "issuer")]
/// Node side of gcp-sev-snp: an SNP report whose REPORT_DATA is the document's extra data
/// zero-padded to 64 bytes, with its VCEK (certificate table or AMD KDS).
#[derive(Debug)]
pub struct GcpSnpInstanceInfoSource {
    /// Where reports come from.
    pub snp: crate::snp::issuer::SnpReportSource,
    /// This instance (from the metadata server), for the validator's optional API check.
    pub gce: Option<GceInstance>,
}

#[cfg(feature = "issuer")]
impl crate::validator::InstanceInfoSource for GcpSnpInstanceInfoSource {
    fn instance_info(
        &self,
        extra_data: &[u8; 32],
        _ak_public: &[u8],
    ) -> Result<Vec<u8>, crate::validator::IssueError> {
        let mut rd = [0u8; 64];
        rd[..32].copy_from_slice(extra_data);
        let m = self.snp.get(&rd)?;
        let info = GcpSnpInstanceInfo {
            report: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &m.report),
            signer_pem: m.signer_pem,
            chain_pem: m.chain_pem,
            gce: self.gce.clone(),
        };
        Ok(serde_json::to_vec(&info).unwrap_or_default())
    }
}
