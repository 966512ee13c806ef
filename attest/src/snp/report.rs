//! The SEV-SNP attestation report (AMD SEV-SNP ABI, `ATTESTATION_REPORT`), versions 2, 3 and 5.
//!
//! Parsing never panics: the input must be exactly [`REPORT_LEN`] bytes and every field is read
//! with checked accessors.

use serde::Serialize;

/// Length of an SNP attestation report.
pub const REPORT_LEN: usize = 0x4A0;
/// End of the signed part of the report (the signature starts here).
pub const SIGNED_LEN: usize = 0x2A0;

/// Why bytes are not an SNP report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The input has the wrong length.
    #[error("SNP report must be {REPORT_LEN} bytes, got {0}")]
    Length(usize),
    /// The version is not 2, 3 or 5.
    #[error("unsupported SNP report version {0} (supported: 2, 3, 5)")]
    Version(u32),
    /// The signature algorithm is not ECDSA P-384 with SHA-384 (1).
    #[error("unsupported SNP signature algorithm {0} (expected 1 = ECDSA P-384/SHA-384)")]
    SignatureAlgorithm(u32),
}

/// A TCB version as the raw 64-bit value plus its components.
///
/// Layout depends on the generation: Milan/Genoa `[bl, tee, 0, 0, 0, 0, snp, ucode]`, Turin
/// `[fmc, bl, tee, snp, 0, 0, 0, ucode]` (byte 0 first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tcb {
    /// Boot loader SPL.
    pub bootloader: u8,
    /// PSP OS (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
    /// FMC SPL (Turin and later only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
}

impl Tcb {
    /// Decodes the raw little-endian TCB value for a layout.
    pub fn from_raw(raw: u64, turin_layout: bool) -> Self {
        let b = raw.to_le_bytes();
        if turin_layout {
            Tcb {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            }
        } else {
            Tcb {
                fmc: None,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            }
        }
    }

    /// Whether every component is ≥ the corresponding one of `min`.
    pub fn at_least(&self, min: &Tcb) -> bool {
        self.bootloader >= min.bootloader
            && self.tee >= min.tee
            && self.snp >= min.snp
            && self.microcode >= min.microcode
            && self.fmc.unwrap_or(0) >= min.fmc.unwrap_or(0)
    }
}

/// Guest policy bits (ABI spec, `GUEST_POLICY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GuestPolicy(pub u64);

impl GuestPolicy {
    /// SMT allowed.
    pub fn smt(&self) -> bool {
        self.0 & (1 << 16) != 0
    }
    /// Migration agent allowed.
    pub fn migrate_ma(&self) -> bool {
        self.0 & (1 << 18) != 0
    }
    /// Debugging allowed.
    pub fn debug(&self) -> bool {
        self.0 & (1 << 19) != 0
    }
    /// Single socket only.
    pub fn single_socket(&self) -> bool {
        self.0 & (1 << 20) != 0
    }
}

/// Which key signed the report (`KEY_INFO.SIGNING_KEY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningKey {
    /// Versioned Chip Endorsement Key.
    Vcek,
    /// Versioned Loaded Endorsement Key (cloud provider).
    Vlek,
    /// No signature.
    None,
    /// Reserved value.
    Reserved(u8),
}

/// A parsed SNP attestation report. Field names follow the ABI specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpReport {
    raw: [u8; REPORT_LEN],
}

fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(s) = b.get(off..off + N) {
        out.copy_from_slice(s);
    }
    out
}

impl SnpReport {
    /// Parses and sanity-checks a report (length, version 2/3/5, signature algorithm).
    pub fn parse(bytes: &[u8]) -> Result<Self, ReportError> {
        let raw: [u8; REPORT_LEN] = bytes
            .try_into()
            .map_err(|_| ReportError::Length(bytes.len()))?;
        let r = SnpReport { raw };
        if !matches!(r.version(), 2 | 3 | 5) {
            return Err(ReportError::Version(r.version()));
        }
        if r.signature_algo() != 1 {
            return Err(ReportError::SignatureAlgorithm(r.signature_algo()));
        }
        Ok(r)
    }

    fn u32_at(&self, off: usize) -> u32 {
        u32::from_le_bytes(arr(&self.raw, off))
    }
    fn u64_at(&self, off: usize) -> u64 {
        u64::from_le_bytes(arr(&self.raw, off))
    }

    /// The raw report bytes.
    pub fn as_bytes(&self) -> &[u8; REPORT_LEN] {
        &self.raw
    }
    /// The signed part `[0, 0x2A0)`.
    pub fn signed_bytes(&self) -> &[u8] {
        self.raw.get(..SIGNED_LEN).unwrap_or_default()
    }
    /// Report format version.
    pub fn version(&self) -> u32 {
        self.u32_at(0x00)
    }
    /// Guest SVN.
    pub fn guest_svn(&self) -> u32 {
        self.u32_at(0x04)
    }
    /// Guest policy.
    pub fn policy(&self) -> GuestPolicy {
        GuestPolicy(self.u64_at(0x08))
    }
    /// Family ID from the ID block.
    pub fn family_id(&self) -> [u8; 16] {
        arr(&self.raw, 0x10)
    }
    /// Image ID from the ID block.
    pub fn image_id(&self) -> [u8; 16] {
        arr(&self.raw, 0x20)
    }
    /// VMPL that requested the report.
    pub fn vmpl(&self) -> u32 {
        self.u32_at(0x30)
    }
    /// Signature algorithm (1 = ECDSA P-384 with SHA-384).
    pub fn signature_algo(&self) -> u32 {
        self.u32_at(0x34)
    }
    /// Raw current TCB.
    pub fn current_tcb_raw(&self) -> u64 {
        self.u64_at(0x38)
    }
    /// Platform info bits (SMT enabled, TSME enabled, …).
    pub fn platform_info(&self) -> u64 {
        self.u64_at(0x40)
    }
    /// Key info (bit 0 author key enabled, bit 1 MASK_CHIP_KEY, bits 2..4 signing key).
    pub fn key_info(&self) -> u32 {
        self.u32_at(0x48)
    }
    /// The key that signed the report.
    pub fn signing_key(&self) -> SigningKey {
        match (self.key_info() >> 2) & 0x7 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            7 => SigningKey::None,
            v => SigningKey::Reserved(v as u8),
        }
    }
    /// Guest-provided report data.
    pub fn report_data(&self) -> [u8; 64] {
        arr(&self.raw, 0x50)
    }
    /// Launch measurement.
    pub fn measurement(&self) -> [u8; 48] {
        arr(&self.raw, 0x90)
    }
    /// Host-provided data.
    pub fn host_data(&self) -> [u8; 32] {
        arr(&self.raw, 0xC0)
    }
    /// SHA-384 of the ID key that signed the ID block.
    pub fn id_key_digest(&self) -> [u8; 48] {
        arr(&self.raw, 0xE0)
    }
    /// SHA-384 of the author key.
    pub fn author_key_digest(&self) -> [u8; 48] {
        arr(&self.raw, 0x110)
    }
    /// Report ID of the guest.
    pub fn report_id(&self) -> [u8; 32] {
        arr(&self.raw, 0x140)
    }
    /// Raw reported TCB (the TCB the VCEK is derived from).
    pub fn reported_tcb_raw(&self) -> u64 {
        self.u64_at(0x180)
    }
    /// CPUID family/model/stepping (version 3 and later; zero in version 2).
    pub fn cpuid(&self) -> Option<(u8, u8, u8)> {
        (self.version() >= 3).then(|| (self.raw[0x188], self.raw[0x189], self.raw[0x18A]))
    }
    /// Chip ID (zero when MASK_CHIP_ID is set or for VLEK-signed reports on some clouds).
    pub fn chip_id(&self) -> [u8; 64] {
        arr(&self.raw, 0x1A0)
    }
    /// Raw committed TCB.
    pub fn committed_tcb_raw(&self) -> u64 {
        self.u64_at(0x1E0)
    }
    /// Raw launch TCB.
    pub fn launch_tcb_raw(&self) -> u64 {
        self.u64_at(0x1F0)
    }
    /// Current firmware version (major, minor, build).
    pub fn current_version(&self) -> (u8, u8, u8) {
        (self.raw[0x1EA], self.raw[0x1E9], self.raw[0x1E8])
    }
    /// Launch and current mitigation vectors (version 5 and later).
    pub fn mit_vectors(&self) -> Option<(u64, u64)> {
        (self.version() >= 5).then(|| (self.u64_at(0x1F8), self.u64_at(0x200)))
    }
    /// Signature R and S as little-endian 72-byte fields.
    pub fn signature_rs(&self) -> ([u8; 72], [u8; 72]) {
        (arr(&self.raw, 0x2A0), arr(&self.raw, 0x2E8))
    }
    /// Whether the TCB fields use the Turin layout (CPUID family 1Ah, version 3+).
    pub fn turin_layout(&self) -> bool {
        matches!(self.cpuid(), Some((0x1A, _, _)))
    }
}
