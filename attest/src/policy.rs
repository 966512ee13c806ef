//! The hardware attestation policy file (JSON), shared by `attest-verify` and the Terraform
//! attestation data source. Format: docs/attestation-policy.md.
//!
//! Every field has a strict default: omitted means "VMPL 0 only, debug and migration agent
//! disallowed, signature and chain required, no TCB minimum, Intel TCB status UpToDate only".

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a policy file is unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The JSON is malformed or has unknown fields.
    #[error("policy JSON invalid: {0}")]
    Json(#[from] serde_json::Error),
    /// The version field is not supported.
    #[error("policy version {0} not supported (this build reads version 1)")]
    Version(u32),
}

/// Fixed-length bytes written as lowercase hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hex<const N: usize>(pub [u8; N]);

impl<const N: usize> std::fmt::Debug for Hex<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl<const N: usize> Serialize for Hex<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de, const N: usize> Deserialize<'de> for Hex<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(s.trim()).map_err(serde::de::Error::custom)?;
        let a: [u8; N] = v.try_into().map_err(|v: Vec<u8>| {
            serde::de::Error::custom(format!("expected {N} hex bytes, got {}", v.len()))
        })?;
        Ok(Hex(a))
    }
}

/// Minimum SNP TCB (each component compared separately).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MinTcb {
    /// Boot loader SPL.
    pub bootloader: u8,
    /// PSP OS SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
    /// FMC SPL (Turin only; ignored for earlier generations).
    pub fmc: u8,
}

/// How the ID-key digest of an SNP report is judged (Azure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdKeyMode {
    /// The digest must be one of `accepted_id_key_digests`.
    #[default]
    Equal,
    /// Not in the list: ask Microsoft Azure Attestation (not supported yet: fails with a clear error).
    MaaFallback,
    /// Not in the list: a warning only.
    WarnOnly,
}

/// SEV-SNP policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnpPolicy {
    /// Minimum TCB applied to REPORTED_TCB and COMMITTED_TCB. None: no minimum.
    pub minimum_tcb: Option<MinTcb>,
    /// VMPLs accepted (default: only 0).
    pub allowed_vmpls: Vec<u32>,
    /// Accept a report whose guest policy allows debugging.
    pub allow_debug: bool,
    /// Accept a report whose guest policy allows a migration agent.
    pub allow_migration_agent: bool,
    /// Accept a platform with SMT enabled (default true).
    pub allow_smt: bool,
    /// Minimum guest SVN.
    pub minimum_guest_svn: u32,
    /// Accepted launch measurements (empty: any; the measurement is reported as a claim).
    pub measurements: Vec<Hex<48>>,
    /// Expected REPORT_DATA (64 bytes), when the caller does not bind it otherwise.
    pub report_data: Option<Hex<64>>,
    /// Expected HOST_DATA.
    pub host_data: Option<Hex<32>>,
    /// Accepted ID-key digests (SHA-384 of the ID key).
    pub accepted_id_key_digests: Vec<Hex<48>>,
    /// ID-key digest mode. With an empty list and `equal`, the digest is not checked.
    pub id_key_mode: IdKeyMode,
    /// Accepted signing keys (default both `vcek` and `vlek`).
    pub signers: Vec<String>,
    /// PEM ARKs that replace the built-in AMD roots (e.g. for tests or a new generation).
    pub ark_pem: Vec<String>,
}

impl Default for SnpPolicy {
    fn default() -> Self {
        SnpPolicy {
            minimum_tcb: None,
            allowed_vmpls: vec![0],
            allow_debug: false,
            allow_migration_agent: false,
            allow_smt: true,
            minimum_guest_svn: 0,
            measurements: Vec::new(),
            report_data: None,
            host_data: None,
            accepted_id_key_digests: Vec::new(),
            id_key_mode: IdKeyMode::Equal,
            signers: vec!["vcek".into(), "vlek".into()],
            ark_pem: Vec::new(),
        }
    }
}

/// Intel TDX policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TdxPolicy {
    /// Accepted TCB statuses (Intel names, e.g. "UpToDate", "SWHardeningNeeded").
    pub accepted_tcb_status: Vec<String>,
    /// Minimum QE SVN (QE report ISVSVN).
    pub minimum_qe_svn: u16,
    /// Minimum PCE SVN (from the PCK certificate).
    pub minimum_pce_svn: u16,
    /// Minimum TEE_TCB_SVN, compared byte by byte.
    pub minimum_tee_tcb_svn: Option<Hex<16>>,
    /// Accepted MRSEAM values (empty: any).
    pub mrseam: Vec<Hex<48>>,
    /// Exact XFAM (empty: any).
    pub xfam: Option<Hex<8>>,
    /// Accepted QE vendor ID (default: Intel's 939a7233f79c4ca9940a0db3957f0607).
    pub qe_vendor_id: Hex<16>,
    /// Accepted MRTD values (empty: any).
    pub mrtd: Vec<Hex<48>>,
    /// Reject TDs with the DEBUG attribute (default true).
    pub reject_debug: bool,
    /// Expected REPORT_DATA.
    pub report_data: Option<Hex<64>>,
    /// PEM Intel SGX Root CA replacing the pinned fingerprint.
    pub root_ca_pem: Option<String>,
}

/// Intel's QE vendor ID.
pub const INTEL_QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07,
];

impl Default for TdxPolicy {
    fn default() -> Self {
        TdxPolicy {
            accepted_tcb_status: vec!["UpToDate".into()],
            minimum_qe_svn: 0,
            minimum_pce_svn: 0,
            minimum_tee_tcb_svn: None,
            mrseam: Vec::new(),
            xfam: None,
            qe_vendor_id: Hex(INTEL_QE_VENDOR_ID),
            mrtd: Vec::new(),
            reject_debug: true,
            report_data: None,
            root_ca_pem: None,
        }
    }
}

/// Google Cloud settings (gcp-sev-es, gcp-sev-snp). Omitted from JSON when unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcpPolicy {
    /// Compute API base URL (e.g. `https://compute.googleapis.com`) for
    /// `getShieldedInstanceIdentity`. Required by gcp-sev-es; optional extra AK check for
    /// gcp-sev-snp.
    pub compute_api_url: Option<String>,
    /// Projects whose instances are accepted (empty: any).
    pub allowed_projects: Vec<String>,
}

/// Azure settings (azure-trustedlaunch). Omitted from JSON when unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AzurePolicy {
    /// PEM roots the vTPM AK certificate must chain to (Azure's "Azure Virtual TPM Root
    /// Certificate Authority 2023" or whatever the operator pins). Required by
    /// azure-trustedlaunch.
    pub trusted_launch_roots_pem: Vec<String>,
    /// Base URL replacing scheme and host of the AK certificate's caIssuers (AIA) URL when the
    /// intermediate is not in the evidence (a mirror; tests point it at 127.0.0.1). Unset: the
    /// intermediate must be in the evidence.
    pub ca_issuers_base_url: Option<String>,
}

/// AWS settings (aws-nitro-tpm). Omitted from JSON when unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsPolicy {
    /// EC2 API base URL (e.g. `https://ec2.eu-central-1.amazonaws.com`). Required by
    /// aws-nitro-tpm.
    pub ec2_api_url: Option<String>,
    /// Region for SigV4 signing (e.g. `eu-central-1`).
    pub region: Option<String>,
    /// AMI IDs accepted (empty: any AMI with TPM 2.0 support).
    pub allowed_amis: Vec<String>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The whole policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Format version, currently 1.
    pub version: u32,
    /// SEV-SNP rules.
    #[serde(default)]
    pub snp: SnpPolicy,
    /// TDX rules.
    #[serde(default)]
    pub tdx: TdxPolicy,
    /// Google Cloud settings.
    #[serde(default, skip_serializing_if = "is_default")]
    pub gcp: GcpPolicy,
    /// Azure settings.
    #[serde(default, skip_serializing_if = "is_default")]
    pub azure: AzurePolicy,
    /// AWS settings.
    #[serde(default, skip_serializing_if = "is_default")]
    pub aws: AwsPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            version: 1,
            snp: SnpPolicy::default(),
            tdx: TdxPolicy::default(),
            gcp: GcpPolicy::default(),
            azure: AzurePolicy::default(),
            aws: AwsPolicy::default(),
        }
    }
}

impl Policy {
    /// Parses a policy file.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PolicyError> {
        let p: Policy = serde_json::from_slice(bytes)?;
        if p.version != 1 {
            return Err(PolicyError::Version(p.version));
        }
        Ok(p)
    }

    /// Serialises the policy (pretty JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
