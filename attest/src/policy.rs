//! The hardware attestation policy file (JSON), shared by `attest-verify` and the Terraform
//! attestation data source. Format: docs/attestation-policy.md.
//!
//! Omitted fields take the defaults of the config's variant ([`Policy::for_variant`]): VMPL 0
//! only, debug and migration agent disallowed, signature and chain required, Intel TCB status
//! UpToDate only with both CRLs, and for the SEV-SNP variants a minimum TCB, Azure's ID-key
//! digests (azure-sev-snp) and VLEK-only signing by AWS (aws-sev-snp). Settings no default can
//! supply (the GCP Compute API, Azure TDX MRTD/MRSEAM) must be given:
//! [`crate::config::AttestationConfig::validators`] refuses a config whose binding is incomplete.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::variant::Variant;

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

/// SEV-SNP processor generations a per-generation minimum TCB may name (SPL numbering differs
/// between generations, so one minimum cannot serve all).
pub const SNP_GENERATIONS: [&str; 3] = ["milan", "genoa", "turin"];

/// SEV-SNP policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnpPolicy {
    /// Minimum TCB applied to REPORTED_TCB and COMMITTED_TCB for generations without an entry in
    /// `minimum_tcb_by_generation`. None: only those entries apply.
    pub minimum_tcb: Option<MinTcb>,
    /// Minimum TCB per processor generation (`milan`, `genoa`, `turin`). When neither this nor
    /// `minimum_tcb` covers a report's generation, the report is refused.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub minimum_tcb_by_generation: BTreeMap<String, MinTcb>,
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
    /// Accepted signing keys (`vcek`, `vlek`; aws-sev-snp default: only `vlek`).
    pub signers: Vec<String>,
    /// Accepted VLEK CSP ids (the certificate's CSP_ID extension, e.g. AWS's
    /// `CN=cc-eu-west-1.amazonaws.com`). An entry `*.example.com` accepts every id ending in
    /// `.example.com`. Non-empty: a VCEK-signed report (no CSP id) is
    /// refused. aws-sev-snp default: `*.amazonaws.com`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_csp_ids: Vec<String>,
    /// PEM ARKs that replace the built-in AMD roots (e.g. for tests or a new generation).
    pub ark_pem: Vec<String>,
}

impl Default for SnpPolicy {
    fn default() -> Self {
        SnpPolicy {
            minimum_tcb: None,
            minimum_tcb_by_generation: BTreeMap::new(),
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
            allowed_csp_ids: Vec::new(),
            ark_pem: Vec::new(),
        }
    }
}

impl SnpPolicy {
    /// The minimum TCB that applies to a generation (`Milan`, `Genoa`, `Turin`, any case).
    pub fn minimum_tcb_for(&self, generation: &str) -> Option<&MinTcb> {
        self.minimum_tcb_by_generation
            .get(&generation.to_ascii_lowercase())
            .or(self.minimum_tcb.as_ref())
    }

    /// Whether a VLEK CSP id is accepted by `allowed_csp_ids` (an empty list accepts any).
    pub fn csp_id_allowed(&self, csp_id: Option<&str>) -> bool {
        if self.allowed_csp_ids.is_empty() {
            return true;
        }
        let Some(id) = csp_id else {
            return false;
        };
        self.allowed_csp_ids
            .iter()
            .any(|a| match a.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') => {
                    id.len() > suffix.len() && id.ends_with(suffix)
                }
                _ => a == id,
            })
    }
}

/// ID-key digests of Azure's SEV-SNP confidential-VM firmware (SHA-384 of the key that signs the
/// ID block Azure's host launches the paravisor with). Only the ID key's holder can launch a
/// guest whose report carries its digest, so a report with one of these comes from a VM Azure
/// launched, not from a guest an attacker launched on other SEV-SNP hardware. The first three
/// are the digests upstream Constellation ships as its default; the fourth is the digest in
/// AMD-signed reports of Azure Milan and Genoa CVMs from 2025 (Azure rotated its ID key).
pub const AZURE_ID_KEY_DIGESTS: [[u8; 48]; 4] = [
    hex48(
        "57486a447ec0f1958002a22a06b7673b9fd27d11e1c6527498056054c5fa92d23c50f9de44072760fe2b6fb89740b696",
    ),
    hex48(
        "0356215882a825279a85b300b0b742931d113bf7e32dde2e50ffde7ec743ca491ecdd7f336dc28a6e0b2bb57af7a44a3",
    ),
    hex48(
        "934f68bd8ba01938eec21475c872e3a942b60c59fafc6df9e9a76ee66bc47f2d09c676f61c0315c578da26085fb13a71",
    ),
    hex48(
        "942fd93ebde6ea7a96efadeafc60f1c6b3d10e703b1dafd7555b92f7f3d32d0e006767648cba5b102af3d65756af4177",
    ),
];

/// VLEK CSP ids accepted for aws-sev-snp by default: AWS's VLEKs carry a CSP id per region such
/// as `CN=cc-eu-west-1.amazonaws.com`.
pub const AWS_CSP_IDS: [&str; 1] = ["*.amazonaws.com"];

/// Default minimum SNP TCB for Milan, the generation AWS, Azure (DCasv5/ECasv5) and GCP (N2D)
/// run SEV-SNP guests on: the firmware level upstream Constellation required (boot loader 3,
/// TEE 0, SNP 8, microcode 115), which excludes the firmware AMD fixed in its 2023 SEV-SNP
/// bulletins. Other generations need an explicit `minimum_tcb_by_generation` entry.
pub const DEFAULT_MILAN_MINIMUM_TCB: MinTcb = MinTcb {
    bootloader: 3,
    tee: 0,
    snp: 8,
    microcode: 115,
    fmc: 0,
};

const fn hex48(s: &str) -> [u8; 48] {
    let b = s.as_bytes();
    let mut out = [0u8; 48];
    let mut i = 0;
    while i < 48 {
        out[i] = (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("not a lowercase hex digit"),
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
    /// Minimum `tcbEvaluationDataNumber` of the TCB info and QE identity (0: any). Refuses
    /// collateral older than the TCB recovery the number names.
    pub minimum_tcb_evaluation_data_number: u32,
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
            minimum_tcb_evaluation_data_number: 0,
        }
    }
}

/// Google Cloud settings (gcp-sev-es, gcp-sev-snp). Omitted from JSON when unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcpPolicy {
    /// Compute API base URL (e.g. `https://compute.googleapis.com`) for
    /// `getShieldedInstanceIdentity`. Required by gcp-sev-es and gcp-sev-snp: the SNP report does
    /// not contain the AK, so only the API ties the AK to a Google-run vTPM.
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
    /// Parses a policy file; omitted fields take the variant-independent defaults.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PolicyError> {
        let p: Policy = serde_json::from_slice(bytes)?;
        if p.version != 1 {
            return Err(PolicyError::Version(p.version));
        }
        Ok(p)
    }

    /// Parses a policy file for a variant: every omitted field (also inside a given section)
    /// takes [`Policy::for_variant`]'s value.
    pub fn from_json_for(variant: Variant, bytes: &[u8]) -> Result<Self, PolicyError> {
        let user: serde_json::Value = serde_json::from_slice(bytes)?;
        let p = Self::from_value_for(variant, Some(user))?;
        if p.version != 1 {
            return Err(PolicyError::Version(p.version));
        }
        Ok(p)
    }

    /// [`Policy::from_json_for`] on a parsed value (None: the variant's defaults).
    pub fn from_value_for(
        variant: Variant,
        user: Option<serde_json::Value>,
    ) -> Result<Self, serde_json::Error> {
        let Some(user) = user else {
            return Ok(Self::for_variant(variant));
        };
        let serde_json::Value::Object(user) = user else {
            return serde_json::from_value(user);
        };
        let mut merged = serde_json::to_value(Self::for_variant(variant))?;
        if let serde_json::Value::Object(base) = &mut merged {
            for (k, v) in user {
                match (base.get_mut(&k), v) {
                    (Some(serde_json::Value::Object(b)), serde_json::Value::Object(u)) => {
                        b.extend(u);
                    }
                    (_, v) => {
                        base.insert(k, v);
                    }
                }
            }
        }
        serde_json::from_value(merged)
    }

    /// The default policy for a variant. The SEV-SNP variants get a minimum TCB, azure-sev-snp
    /// Azure's ID-key digests, aws-sev-snp VLEK-only signing by an AWS CSP.
    pub fn for_variant(variant: Variant) -> Self {
        let mut p = Policy::default();
        let snp_minimum = || BTreeMap::from([("milan".to_string(), DEFAULT_MILAN_MINIMUM_TCB)]);
        match variant {
            Variant::AzureSevSnp => {
                p.snp.minimum_tcb_by_generation = snp_minimum();
                p.snp.accepted_id_key_digests =
                    AZURE_ID_KEY_DIGESTS.iter().map(|d| Hex(*d)).collect();
                p.snp.id_key_mode = IdKeyMode::Equal;
            }
            Variant::AwsSevSnp => {
                p.snp.minimum_tcb_by_generation = snp_minimum();
                p.snp.signers = vec!["vlek".into()];
                p.snp.allowed_csp_ids = AWS_CSP_IDS.iter().map(|s| s.to_string()).collect();
            }
            Variant::GcpSevSnp => {
                p.snp.minimum_tcb_by_generation = snp_minimum();
            }
            _ => {}
        }
        p
    }

    /// Serialises the policy (pretty JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
