//! aws-nitro-tpm: a NitroTPM quote whose AK is accepted when the EC2 API says the instance's
//! AMI boots with NitroTPM (`DescribeImages` → `tpmSupport` = `v2.0`) — upstream
//! Constellation's trust model for this variant.
//!
//! Caveat, stated plainly: the image ID comes from the instance identity document in
//! `instance_info`, which this implementation does not verify cryptographically, and the AK is
//! not bound to the instance by any signature. The check therefore proves only that *some* image
//! with NitroTPM support is named; the measurements carry the weight. Prefer aws-sev-snp,
//! where the SNP report binds the AK.
//!
//! The EC2 call is a SigV4-signed Query API request through [`HttpGet`] against a configurable
//! endpoint (`policy.aws.ec2_api_url`); credentials come from the standard environment variables
//! at call time and are kept in zeroizing memory.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::certs::fetch::{FetchError, HttpGet, PlainHttp};
use crate::document::TpmEvidence;
use crate::measurements::Measurements;
use crate::policy::AwsPolicy;
use crate::tpm::{AkTrust, TpmPublic, TpmValidator};
use crate::validator::{PlatformClaims, ValidationError};
use crate::variant::Variant;

/// What an aws-nitro-tpm issuer puts into `instance_info` (from the IMDS identity document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NitroInstanceInfo {
    /// Instance ID.
    pub instance_id: String,
    /// AMI ID.
    pub image_id: String,
    /// Region.
    pub region: String,
}

/// Why an aws-nitro-tpm AK is not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NitroError {
    /// instance_info is not the expected JSON.
    #[error("instance_info is not aws-nitro-tpm evidence JSON: {0}")]
    InstanceInfo(String),
    /// The AMI is not in the policy's allow-list.
    #[error("AMI {0} is not in policy.aws.allowed_amis")]
    AmiNotAllowed(String),
    /// The EC2 API call failed.
    #[error("EC2 DescribeImages: {0}")]
    Api(#[from] FetchError),
    /// The API answer is not a DescribeImagesResponse for this image.
    #[error("EC2 DescribeImages answer unusable: {0}")]
    Body(String),
    /// The image does not boot with NitroTPM.
    #[error("AMI {image} has tpmSupport {found:?}, not \"v2.0\": its instances have no NitroTPM")]
    NoTpmSupport {
        /// AMI.
        image: String,
        /// What the API said (None: not set).
        found: Option<String>,
    },
    /// No credentials in the environment.
    #[error("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")]
    NoCredentials,
    /// aws-nitro-tpm needs the EC2 endpoint in the policy.
    #[error("aws-nitro-tpm needs policy.aws.ec2_api_url and policy.aws.region")]
    NoApi,
}

/// AWS credentials (secret parts zeroized on drop, never printed).
pub struct AwsCredentials {
    /// Access key ID.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Zeroizing<String>,
    /// Session token (temporary credentials).
    pub session_token: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl AwsCredentials {
    /// From `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optional `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Option<Self> {
        Some(AwsCredentials {
            access_key_id: std::env::var("AWS_ACCESS_KEY_ID").ok()?,
            secret_access_key: Zeroizing::new(std::env::var("AWS_SECRET_ACCESS_KEY").ok()?),
            session_token: std::env::var("AWS_SESSION_TOKEN").ok().map(Zeroizing::new),
        })
    }
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> Zeroizing<Vec<u8>> {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut m = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Zeroizing::new(Vec::new()),
    };
    m.update(data);
    Zeroizing::new(m.finalize().into_bytes().to_vec())
}

/// The SigV4 signing key for `date` (YYYYMMDD), region and service.
pub fn sigv4_signing_key(
    secret: &str,
    date: &str,
    region: &str,
    service: &str,
) -> Zeroizing<Vec<u8>> {
    let k = Zeroizing::new(format!("AWS4{secret}"));
    let k_date = hmac(k.as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// Headers (name, value) of a SigV4-signed GET of `host` `/` with `query` (already canonical:
/// sorted, URI-encoded) at `amz_date` (YYYYMMDD'T'HHMMSS'Z').
pub fn sigv4_get_headers(
    creds: &AwsCredentials,
    region: &str,
    service: &str,
    host: &str,
    query: &str,
    amz_date: &str,
) -> Vec<(String, Zeroizing<String>)> {
    let date = amz_date.get(..8).unwrap_or_default();
    let mut headers: Vec<(&str, String)> =
        vec![("host", host.into()), ("x-amz-date", amz_date.into())];
    if let Some(t) = &creds.session_token {
        headers.push(("x-amz-security-token", t.to_string()));
    }
    let signed: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
    let signed = signed.join(";");
    let canonical_headers: String = headers
        .iter()
        .map(|(n, v)| format!("{n}:{}\n", v.trim()))
        .collect();
    let canonical = format!(
        "GET\n/\n{query}\n{canonical_headers}\n{signed}\n{}",
        hex::encode(Sha256::digest(b""))
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let key = sigv4_signing_key(&creds.secret_access_key, date, region, service);
    let sig = hex::encode(hmac(&key, to_sign.as_bytes()).as_slice());
    let mut out: Vec<(String, Zeroizing<String>)> = vec![
        ("X-Amz-Date".into(), Zeroizing::new(amz_date.into())),
        (
            "Authorization".into(),
            Zeroizing::new(format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={sig}",
                creds.access_key_id
            )),
        ),
    ];
    if let Some(t) = &creds.session_token {
        out.push(("X-Amz-Security-Token".into(), Zeroizing::new(t.to_string())));
    }
    out
}

/// Source of an AMI's NitroTPM support.
pub trait ImageTpmSupport: Send + Sync {
    /// `tpmSupport` of the image (None: not set, i.e. no NitroTPM).
    fn tpm_support(&self, image_id: &str) -> Result<Option<String>, NitroError>;
}

/// EC2 `DescribeImages` (Query API, version 2016-11-15), SigV4-signed.
pub struct Ec2Api {
    /// Endpoint, e.g. `https://ec2.eu-central-1.amazonaws.com` (tests: 127.0.0.1).
    pub base: String,
    /// Signing region.
    pub region: String,
    /// Credentials; None reads the environment on every call.
    pub credentials: Option<AwsCredentials>,
    /// HTTP client (plug in a TLS-capable one for https).
    pub http: Box<dyn HttpGet>,
}

impl std::fmt::Debug for Ec2Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ec2Api")
            .field("base", &self.base)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// The text of the first `<tag>…</tag>` in `xml`.
fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml.get(start..)?.find(&close)?;
    xml.get(start..start + len)
}

/// Parses a DescribeImagesResponse for `image_id`: its `tpmSupport`.
pub fn parse_describe_images(body: &[u8], image_id: &str) -> Result<Option<String>, NitroError> {
    let xml = std::str::from_utf8(body).map_err(|e| NitroError::Body(e.to_string()))?;
    if !xml.contains("<DescribeImagesResponse") {
        return Err(NitroError::Body("not a DescribeImagesResponse".into()));
    }
    let set = xml_text(xml, "imagesSet").ok_or_else(|| NitroError::Body("no imagesSet".into()))?;
    let item = xml_text(set, "item")
        .ok_or_else(|| NitroError::Body(format!("image {image_id} not found")))?;
    if xml_text(item, "imageId") != Some(image_id) {
        return Err(NitroError::Body(format!(
            "answer is for image {:?}, not {image_id}",
            xml_text(item, "imageId")
        )));
    }
    Ok(xml_text(item, "tpmSupport").map(str::to_string))
}

fn valid_ami(id: &str) -> bool {
    id.strip_prefix("ami-")
        .is_some_and(|h| !h.is_empty() && h.len() <= 32 && h.bytes().all(|c| c.is_ascii_hexdigit()))
}

impl ImageTpmSupport for Ec2Api {
    fn tpm_support(&self, image_id: &str) -> Result<Option<String>, NitroError> {
        let env_creds;
        let creds = match &self.credentials {
            Some(c) => c,
            None => {
                env_creds = AwsCredentials::from_env().ok_or(NitroError::NoCredentials)?;
                &env_creds
            }
        };
        // Canonical query: keys sorted; an AMI ID needs no URI encoding (checked by the caller).
        let query = format!("Action=DescribeImages&ImageId.1={image_id}&Version=2016-11-15");
        let base = self.base.trim_end_matches('/');
        let host = base.split_once("://").map_or(base, |(_, h)| h);
        let now = time::OffsetDateTime::now_utc();
        let amz_date = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let headers = sigv4_get_headers(creds, &self.region, "ec2", host, &query, &amz_date);
        let h: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let r = self
            .http
            .get_with_headers(&format!("{base}/?{query}"), &h)?;
        parse_describe_images(&r.body, image_id)
    }
}

/// AkTrust for aws-nitro-tpm.
#[derive(Clone)]
pub struct NitroAkTrust {
    /// The EC2 API.
    pub api: Arc<dyn ImageTpmSupport>,
    /// Accepted AMIs (empty: any with NitroTPM).
    pub allowed_amis: Vec<String>,
}

impl std::fmt::Debug for NitroAkTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NitroAkTrust")
            .field("allowed_amis", &self.allowed_amis)
            .finish_non_exhaustive()
    }
}

fn platform(e: NitroError) -> ValidationError {
    ValidationError::Platform {
        variant: Variant::AwsNitroTpm,
        source: Box::new(e),
    }
}

impl AkTrust for NitroAkTrust {
    fn verify_ak(
        &self,
        _variant: Variant,
        evidence: &TpmEvidence,
        _ak: &TpmPublic,
        _extra_data: &[u8; 32],
    ) -> Result<PlatformClaims, ValidationError> {
        let info: NitroInstanceInfo = serde_json::from_slice(&evidence.instance_info)
            .map_err(|e| platform(NitroError::InstanceInfo(e.to_string())))?;
        if !valid_ami(&info.image_id) {
            return Err(platform(NitroError::InstanceInfo(format!(
                "imageId {:?} is not an AMI ID",
                info.image_id
            ))));
        }
        if !self.allowed_amis.is_empty() && !self.allowed_amis.contains(&info.image_id) {
            return Err(platform(NitroError::AmiNotAllowed(info.image_id)));
        }
        let found = self.api.tpm_support(&info.image_id).map_err(platform)?;
        if found.as_deref() != Some("v2.0") {
            return Err(platform(NitroError::NoTpmSupport {
                image: info.image_id,
                found,
            }));
        }
        Ok(PlatformClaims::CloudVouchedAk {
            claims: serde_json::json!({
                "ak_source": "EC2 DescribeImages tpmSupport v2.0 (AK not bound to the instance)",
                "image_id": info.image_id,
                "instance_id": info.instance_id,
                "region": info.region,
            }),
        })
    }
}

/// An aws-nitro-tpm validator from the policy's EC2 endpoint.
pub fn validator(measurements: Measurements, aws: &AwsPolicy) -> Result<TpmValidator, NitroError> {
    let (Some(base), Some(region)) = (&aws.ec2_api_url, &aws.region) else {
        return Err(NitroError::NoApi);
    };
    let api = Ec2Api {
        base: base.clone(),
        region: region.clone(),
        credentials: None,
        http: Box::new(PlainHttp::default()),
    };
    Ok(validator_with(
        measurements,
        Arc::new(api),
        aws.allowed_amis.clone(),
    ))
}

/// An aws-nitro-tpm validator with an explicit image-support source.
pub fn validator_with(
    measurements: Measurements,
    api: Arc<dyn ImageTpmSupport>,
    allowed_amis: Vec<String>,
) -> TpmValidator {
    TpmValidator::new(
        Variant::AwsNitroTpm,
        measurements,
        Arc::new(NitroAkTrust { api, allowed_amis }),
    )
}
