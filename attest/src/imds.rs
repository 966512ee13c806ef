//! Instance metadata services (node side): who am I, on AWS, Azure and GCP, and the Azure TD
//! quote endpoint. Every client takes a base URL (default: the link-local address each cloud
//! uses; tests: 127.0.0.1). Metadata is untrusted input: validators only use it to ask a trusted
//! source (cloud API, hardware report) or to label claims.
//!
//! The services are plain HTTP on a link-local address, so [`PlainHttp`] is the right client.

use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::certs::fetch::{FetchError, PlainHttp};
use crate::gcp::GceInstance;

/// The link-local metadata address shared by AWS, Azure and GCP.
pub const DEFAULT_BASE: &str = "http://169.254.169.254";

fn json_err(url: &str, e: impl std::fmt::Display) -> FetchError {
    FetchError::Json {
        url: url.into(),
        reason: e.to_string(),
    }
}

fn text(body: Vec<u8>, url: &str) -> Result<String, FetchError> {
    String::from_utf8(body)
        .map(|s| s.trim().to_string())
        .map_err(|e| json_err(url, e))
}

/// GCE metadata server (`Metadata-Flavor: Google`).
#[derive(Debug, Clone)]
pub struct GceMetadata {
    /// Base URL (default [`DEFAULT_BASE`]; `http://metadata.google.internal` works too).
    pub base: String,
    /// HTTP client.
    pub http: PlainHttp,
}

impl GceMetadata {
    fn get(&self, path: &str) -> Result<String, FetchError> {
        let url = format!(
            "{}/computeMetadata/v1/{path}",
            self.base.trim_end_matches('/')
        );
        let r = self
            .http
            .request("GET", &url, &[("Metadata-Flavor", "Google")], &[])?;
        text(r.body, &url)
    }

    /// Project, zone and instance name of this VM.
    pub fn instance(&self) -> Result<GceInstance, FetchError> {
        let zone = self.get("instance/zone")?;
        Ok(GceInstance {
            project_id: self.get("project/project-id")?,
            // The server answers `projects/<number>/zones/<zone>`.
            zone: zone.rsplit('/').next().unwrap_or_default().to_string(),
            instance_name: self.get("instance/name")?,
        })
    }
}

/// Azure IMDS (`Metadata: true`).
#[derive(Debug, Clone)]
pub struct AzureImds {
    /// Base URL (default [`DEFAULT_BASE`]).
    pub base: String,
    /// HTTP client.
    pub http: PlainHttp,
}

/// The parts of Azure's `/metadata/instance/compute` we use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AzureCompute {
    /// VM ID (UUID).
    pub vm_id: String,
    /// VM name.
    pub name: String,
    /// Subscription.
    pub subscription_id: String,
    /// Resource group.
    pub resource_group_name: String,
    /// Region.
    pub location: String,
}

#[derive(Serialize)]
struct TdQuoteRequest<'a> {
    report: &'a str,
}

#[derive(Deserialize)]
struct TdQuoteResponse {
    quote: String,
}

impl AzureImds {
    /// This VM's compute metadata.
    pub fn compute(&self) -> Result<AzureCompute, FetchError> {
        let url = format!(
            "{}/metadata/instance/compute?api-version=2021-02-01",
            self.base.trim_end_matches('/')
        );
        let r = self
            .http
            .request("GET", &url, &[("Metadata", "true")], &[])?;
        serde_json::from_slice(&r.body).map_err(|e| json_err(&url, e))
    }

    /// Turns a TDREPORT (from the HCL report) into a TD quote via the host's quoting enclave
    /// (`POST /acc/tdquote`, base64url in both directions).
    pub fn td_quote(&self, td_report: &[u8]) -> Result<Vec<u8>, FetchError> {
        let url = format!("{}/acc/tdquote", self.base.trim_end_matches('/'));
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let report = b64.encode(td_report);
        let body = serde_json::to_vec(&TdQuoteRequest { report: &report })
            .map_err(|e| json_err(&url, e))?;
        let r = self
            .http
            .request("POST", &url, &[("Content-Type", "application/json")], &body)?;
        let q: TdQuoteResponse = serde_json::from_slice(&r.body).map_err(|e| json_err(&url, e))?;
        b64.decode(q.quote.trim_end_matches('='))
            .map_err(|e| json_err(&url, e))
    }
}

/// AWS IMDSv2 (session token via PUT, then GETs with the token).
#[derive(Debug, Clone)]
pub struct AwsImds {
    /// Base URL (default [`DEFAULT_BASE`]).
    pub base: String,
    /// HTTP client.
    pub http: PlainHttp,
}

/// The parts of the EC2 instance identity document we use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsIdentity {
    /// Instance ID.
    pub instance_id: String,
    /// AMI the instance booted.
    pub image_id: String,
    /// Region.
    pub region: String,
    /// Account.
    pub account_id: String,
}

impl AwsImds {
    /// The instance identity document.
    pub fn identity(&self) -> Result<AwsIdentity, FetchError> {
        let base = self.base.trim_end_matches('/');
        let token_url = format!("{base}/latest/api/token");
        let r = self.http.request(
            "PUT",
            &token_url,
            &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
            &[],
        )?;
        let token = Zeroizing::new(text(r.body, &token_url)?);
        let url = format!("{base}/latest/dynamic/instance-identity/document");
        let r = self.http.request(
            "GET",
            &url,
            &[("X-aws-ec2-metadata-token", token.as_str())],
            &[],
        )?;
        serde_json::from_slice(&r.body).map_err(|e| json_err(&url, e))
    }
}
