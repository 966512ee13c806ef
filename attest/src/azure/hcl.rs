//! The Azure HCL (paravisor) attestation report: header ‖ hardware report (SNP report or TDREPORT)
//! ‖ IGVM request data ‖ runtime-claims JSON. The hardware report's REPORT_DATA[0:32] is
//! SHA-256(runtime claims), and the claims carry the vTPM attestation key as JWK `HCLAkPub`.

use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Offset of the hardware report.
pub const HW_REPORT_OFFSET: usize = 0x20;
/// Size of the hardware report slot.
pub const HW_REPORT_LEN: usize = 1184;
/// Offset of the IGVM request data header.
pub const IGVM_OFFSET: usize = 0x4C0;
/// Offset of the runtime claims.
pub const CLAIMS_OFFSET: usize = 0x4D4;
/// Upper bound for an HCL report (the vTPM NV index holds 2600 bytes).
pub const MAX_HCL_LEN: usize = 1 << 16;

/// Why an HCL report is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HclError {
    /// Too short or too long.
    #[error(
        "HCL report length {0} invalid (need at least {CLAIMS_OFFSET} and at most {MAX_HCL_LEN} bytes)"
    )]
    Length(usize),
    /// Magic is not "HCLA".
    #[error("HCL report magic {0:02x?} is not \"HCLA\"")]
    Magic([u8; 4]),
    /// Report type unknown.
    #[error("IGVM report type {0} not supported (2 = SNP, 4 = TDX)")]
    ReportType(u32),
    /// Hash type unknown.
    #[error("IGVM hash type {0} not supported (1 = SHA-256)")]
    HashType(u32),
    /// Runtime claims extend past the buffer.
    #[error("runtime claims size {size} exceeds the {avail} bytes after offset 0x4D4")]
    ClaimsSize {
        /// Declared size.
        size: u32,
        /// Available.
        avail: usize,
    },
    /// Claims JSON invalid.
    #[error("runtime claims JSON invalid: {0}")]
    Claims(String),
    /// No HCLAkPub key.
    #[error("runtime claims carry no RSA key with kid HCLAkPub")]
    NoAkPub,
    /// REPORT_DATA does not bind the claims.
    #[error("hardware REPORT_DATA[0:32] {got} is not SHA-256 of the runtime claims {expected}")]
    Binding {
        /// Expected hex.
        expected: String,
        /// Got hex.
        got: String,
    },
}

/// Kind of hardware report inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HwKind {
    /// AMD SEV-SNP report.
    Snp,
    /// Intel TDREPORT.
    Tdx,
}

/// A parsed HCL report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HclReport {
    /// Header version.
    pub version: u32,
    /// Hardware kind.
    pub kind: HwKind,
    /// Hardware report slot (1184 bytes; TDREPORT uses the first 1024).
    pub hw_report: Vec<u8>,
    /// Runtime claims bytes (exactly what is hashed).
    pub runtime_claims: Vec<u8>,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(off..off + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

impl HclReport {
    /// Parses an HCL report. Never panics.
    pub fn parse(b: &[u8]) -> Result<Self, HclError> {
        if b.len() < CLAIMS_OFFSET || b.len() > MAX_HCL_LEN {
            return Err(HclError::Length(b.len()));
        }
        let mut magic = [0u8; 4];
        magic.copy_from_slice(b.get(..4).ok_or(HclError::Length(b.len()))?);
        if &magic != b"HCLA" {
            return Err(HclError::Magic(magic));
        }
        let kind = match u32_at(b, IGVM_OFFSET + 8) {
            2 => HwKind::Snp,
            4 => HwKind::Tdx,
            t => return Err(HclError::ReportType(t)),
        };
        let hash = u32_at(b, IGVM_OFFSET + 12);
        if hash != 1 {
            return Err(HclError::HashType(hash));
        }
        let size = u32_at(b, IGVM_OFFSET + 16);
        let avail = b.len() - CLAIMS_OFFSET;
        let claims = (size as usize)
            .checked_add(CLAIMS_OFFSET)
            .and_then(|end| b.get(CLAIMS_OFFSET..end))
            .ok_or(HclError::ClaimsSize { size, avail })?;
        Ok(HclReport {
            version: u32_at(b, 4),
            kind,
            hw_report: b
                .get(HW_REPORT_OFFSET..HW_REPORT_OFFSET + HW_REPORT_LEN)
                .unwrap_or_default()
                .to_vec(),
            runtime_claims: claims.to_vec(),
        })
    }

    /// Checks REPORT_DATA[0:32] == SHA-256(runtime claims).
    pub fn check_binding(&self, report_data: &[u8; 64]) -> Result<(), HclError> {
        let h = Sha256::digest(&self.runtime_claims);
        if report_data.get(..32) != Some(&h[..]) {
            return Err(HclError::Binding {
                expected: hex::encode(h),
                got: hex::encode(report_data),
            });
        }
        Ok(())
    }

    /// Parses the runtime claims.
    pub fn claims(&self) -> Result<RuntimeClaims, HclError> {
        RuntimeClaims::parse(&self.runtime_claims)
    }
}

#[derive(Deserialize)]
struct Jwk {
    kid: Option<String>,
    kty: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    keys: Vec<Jwk>,
    #[serde(rename = "vm-configuration")]
    vm_configuration: Option<serde_json::Value>,
    #[serde(rename = "user-data")]
    user_data: Option<String>,
}

/// The runtime claims we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeClaims {
    /// HCLAkPub modulus (big-endian).
    pub ak_n: Vec<u8>,
    /// HCLAkPub exponent (big-endian).
    pub ak_e: Vec<u8>,
    /// vmUniqueId from vm-configuration.
    pub vm_unique_id: Option<String>,
    /// `user-data` (hex string, as the guest put it).
    pub user_data: Option<String>,
}

impl RuntimeClaims {
    /// Parses the claims JSON (trailing NULs tolerated).
    pub fn parse(b: &[u8]) -> Result<Self, HclError> {
        let end = b.iter().rposition(|c| *c != 0).map_or(0, |p| p + 1);
        let raw: RawClaims = serde_json::from_slice(b.get(..end).unwrap_or_default())
            .map_err(|e| HclError::Claims(e.to_string()))?;
        let k = raw
            .keys
            .iter()
            .find(|k| k.kid.as_deref() == Some("HCLAkPub") && k.kty.as_deref() == Some("RSA"))
            .ok_or(HclError::NoAkPub)?;
        let dec = |s: &Option<String>| -> Result<Vec<u8>, HclError> {
            let s = s.as_deref().ok_or(HclError::NoAkPub)?.trim_end_matches('=');
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .map_err(|e| HclError::Claims(e.to_string()))
        };
        Ok(RuntimeClaims {
            ak_n: dec(&k.n)?,
            ak_e: dec(&k.e)?,
            vm_unique_id: raw
                .vm_configuration
                .as_ref()
                .and_then(|v| v.get("vmUniqueId"))
                .and_then(|v| v.as_str())
                .map(str::to_string),
            user_data: raw.user_data,
        })
    }

    /// The AK as an RSA public key.
    pub fn ak_public_key(&self) -> Result<rsa::RsaPublicKey, HclError> {
        rsa::RsaPublicKey::new(
            rsa::BigUint::from_bytes_be(&self.ak_n),
            rsa::BigUint::from_bytes_be(&self.ak_e),
        )
        .map_err(|e| HclError::Claims(format!("HCLAkPub: {e}")))
    }
}

/// The parts of a TDREPORT (1024 bytes) used here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdReport {
    /// REPORTDATA.
    pub report_data: [u8; 64],
    /// TEE_TCB_SVN.
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM.
    pub mrseam: [u8; 48],
    /// TD attributes.
    pub td_attributes: [u8; 8],
    /// XFAM.
    pub xfam: [u8; 8],
    /// MRTD.
    pub mrtd: [u8; 48],
    /// RTMR0..3.
    pub rtmr: [[u8; 48]; 4],
}

fn arr<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off + N)?.try_into().ok()
}

impl TdReport {
    /// Parses a TDREPORT (REPORTMACSTRUCT 256 ‖ TEE_TCB_INFO 239 ‖ reserved 17 ‖ TDINFO 512).
    pub fn parse(b: &[u8]) -> Result<Self, HclError> {
        let e = || HclError::Length(b.len());
        if b.len() < 1024 || b.first() != Some(&0x81) {
            return Err(e());
        }
        let td = 512;
        Ok(TdReport {
            report_data: arr(b, 128).ok_or_else(e)?,
            tee_tcb_svn: arr(b, 256 + 8).ok_or_else(e)?,
            mrseam: arr(b, 256 + 24).ok_or_else(e)?,
            td_attributes: arr(b, td).ok_or_else(e)?,
            xfam: arr(b, td + 8).ok_or_else(e)?,
            mrtd: arr(b, td + 16).ok_or_else(e)?,
            rtmr: [
                arr(b, td + 208).ok_or_else(e)?,
                arr(b, td + 256).ok_or_else(e)?,
                arr(b, td + 304).ok_or_else(e)?,
                arr(b, td + 352).ok_or_else(e)?,
            ],
        })
    }
}
