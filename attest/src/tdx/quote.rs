//! Intel TDX DCAP quote parsing, versions 4 and 5 (ECDSA P-256 attestation key).
//!
//! Layout (Intel TDX DCAP Quote Generation Library spec): header (48) ‖ [v5: body type u16 ‖ body
//! size u32] ‖ TD report body (584 for TDX 1.0, 648 for TDX 1.5) ‖ signature data length u32 ‖
//! signature data. Trailing bytes after the signature data are ignored (quotes are often returned
//! in a larger zeroed buffer).

/// Header length.
pub const HEADER_LEN: usize = 48;
/// TDX 1.0 report body length.
pub const BODY10_LEN: usize = 584;
/// TDX 1.5 report body length.
pub const BODY15_LEN: usize = 648;
/// Upper bound on a quote we accept (a real one is ~5 KiB).
pub const MAX_QUOTE_LEN: usize = 1 << 20;

/// Why bytes are not a TDX quote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuoteError {
    /// The input ends inside a field.
    #[error("quote truncated: need {need} bytes at offset {offset} for {field}, have {have}")]
    Truncated {
        /// Field being read.
        field: &'static str,
        /// Offset of the field.
        offset: usize,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Unsupported quote version.
    #[error("quote version {0} not supported (4 or 5)")]
    Version(u16),
    /// Attestation key type is not ECDSA P-256 (2).
    #[error("attestation key type {0} not supported (2 = ECDSA P-256)")]
    KeyType(u16),
    /// TEE type is not TDX (0x81).
    #[error("TEE type 0x{0:x} is not TDX (0x81)")]
    TeeType(u32),
    /// Unknown v5 body type or size.
    #[error("v5 body type {ty} with size {size} not supported (2/584 or 3/648)")]
    BodyType {
        /// Body type.
        ty: u16,
        /// Body size.
        size: u32,
    },
    /// Certification data of an unexpected type.
    #[error("certification data type {found} where {expected} was expected")]
    CertDataType {
        /// Found.
        found: u16,
        /// Expected.
        expected: u16,
    },
    /// Input too large.
    #[error("quote larger than {MAX_QUOTE_LEN} bytes")]
    TooLarge,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], QuoteError> {
        let end = self.pos.checked_add(n).ok_or(QuoteError::TooLarge)?;
        let s = self.b.get(self.pos..end).ok_or(QuoteError::Truncated {
            field,
            offset: self.pos,
            need: n,
            have: self.b.len().saturating_sub(self.pos),
        })?;
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], QuoteError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, QuoteError> {
        Ok(u16::from_le_bytes(self.arr(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, QuoteError> {
        Ok(u32::from_le_bytes(self.arr(field)?))
    }
}

/// The TD report body (TDX 1.0 fields plus the TDX 1.5 additions when present).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdReportBody {
    /// TEE_TCB_SVN.
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM.
    pub mrseam: [u8; 48],
    /// MRSIGNERSEAM.
    pub mrsignerseam: [u8; 48],
    /// SEAMATTRIBUTES.
    pub seam_attributes: [u8; 8],
    /// TDATTRIBUTES.
    pub td_attributes: [u8; 8],
    /// XFAM.
    pub xfam: [u8; 8],
    /// MRTD.
    pub mrtd: [u8; 48],
    /// MRCONFIGID.
    pub mrconfigid: [u8; 48],
    /// MROWNER.
    pub mrowner: [u8; 48],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u8; 48],
    /// RTMR0..3.
    pub rtmr: [[u8; 48]; 4],
    /// REPORTDATA.
    pub report_data: [u8; 64],
    /// TEE_TCB_SVN2 (TDX 1.5).
    pub tee_tcb_svn2: Option<[u8; 16]>,
    /// MRSERVICETD (TDX 1.5).
    pub mrservicetd: Option<[u8; 48]>,
}

impl TdReportBody {
    fn read(r: &mut Reader<'_>, v15: bool) -> Result<Self, QuoteError> {
        Ok(TdReportBody {
            tee_tcb_svn: r.arr("tee_tcb_svn")?,
            mrseam: r.arr("mrseam")?,
            mrsignerseam: r.arr("mrsignerseam")?,
            seam_attributes: r.arr("seam_attributes")?,
            td_attributes: r.arr("td_attributes")?,
            xfam: r.arr("xfam")?,
            mrtd: r.arr("mrtd")?,
            mrconfigid: r.arr("mrconfigid")?,
            mrowner: r.arr("mrowner")?,
            mrownerconfig: r.arr("mrownerconfig")?,
            rtmr: [
                r.arr("rtmr0")?,
                r.arr("rtmr1")?,
                r.arr("rtmr2")?,
                r.arr("rtmr3")?,
            ],
            report_data: r.arr("report_data")?,
            tee_tcb_svn2: if v15 {
                Some(r.arr("tee_tcb_svn2")?)
            } else {
                None
            },
            mrservicetd: if v15 {
                Some(r.arr("mrservicetd")?)
            } else {
                None
            },
        })
    }

    /// Parses a TDX 1.0 body from exactly its 584 bytes (also used for the TDREPORT in Azure HCL).
    pub fn parse_v10(b: &[u8]) -> Result<Self, QuoteError> {
        Self::read(&mut Reader { b, pos: 0 }, false)
    }

    /// Whether TDATTRIBUTES.DEBUG (bit 0) is set.
    pub fn debug(&self) -> bool {
        self.td_attributes[0] & 1 != 0
    }
}

/// The QE's SGX report body (384 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QeReport {
    /// The raw 384 bytes (signed by the PCK).
    pub raw: Vec<u8>,
    /// MISCSELECT.
    pub miscselect: [u8; 4],
    /// ATTRIBUTES.
    pub attributes: [u8; 16],
    /// MRSIGNER.
    pub mrsigner: [u8; 32],
    /// ISVPRODID.
    pub isv_prod_id: u16,
    /// ISVSVN.
    pub isv_svn: u16,
    /// REPORTDATA.
    pub report_data: [u8; 64],
}

impl QeReport {
    fn parse(raw: &[u8]) -> Result<Self, QuoteError> {
        let mut r = Reader { b: raw, pos: 0 };
        r.take(16, "qe cpusvn")?;
        let miscselect = r.arr("qe miscselect")?;
        r.take(28, "qe reserved1")?;
        let attributes = r.arr("qe attributes")?;
        r.take(32 + 32, "qe mrenclave/reserved2")?;
        let mrsigner = r.arr("qe mrsigner")?;
        r.take(96, "qe reserved3")?;
        let isv_prod_id = r.u16("qe isvprodid")?;
        let isv_svn = r.u16("qe isvsvn")?;
        r.take(60, "qe reserved4")?;
        let report_data = r.arr("qe report_data")?;
        Ok(QeReport {
            raw: raw.to_vec(),
            miscselect,
            attributes,
            mrsigner,
            isv_prod_id,
            isv_svn,
            report_data,
        })
    }
}

/// A parsed quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// Quote version (4 or 5).
    pub version: u16,
    /// QE SVN from the header (v4: reserved, often 0).
    pub header_qe_svn: u16,
    /// PCE SVN from the header.
    pub header_pce_svn: u16,
    /// QE vendor ID.
    pub qe_vendor_id: [u8; 16],
    /// The TD report body.
    pub body: TdReportBody,
    /// The bytes covered by the quote signature.
    pub signed: Vec<u8>,
    /// ECDSA signature r ‖ s (big-endian).
    pub signature: [u8; 64],
    /// Attestation public key x ‖ y.
    pub attest_key: [u8; 64],
    /// QE report.
    pub qe_report: QeReport,
    /// QE report signature r ‖ s by the PCK.
    pub qe_report_signature: [u8; 64],
    /// QE authentication data.
    pub qe_auth_data: Vec<u8>,
    /// PCK certificate chain (PEM, leaf first) from certification data type 5.
    pub pck_chain_pem: Vec<u8>,
}

impl Quote {
    /// Parses a v4 or v5 quote. Never panics.
    pub fn parse(b: &[u8]) -> Result<Self, QuoteError> {
        if b.len() > MAX_QUOTE_LEN {
            return Err(QuoteError::TooLarge);
        }
        let mut r = Reader { b, pos: 0 };
        let version = r.u16("version")?;
        if version != 4 && version != 5 {
            return Err(QuoteError::Version(version));
        }
        let key_type = r.u16("attestation key type")?;
        if key_type != 2 {
            return Err(QuoteError::KeyType(key_type));
        }
        let tee = r.u32("tee type")?;
        if tee != 0x81 {
            return Err(QuoteError::TeeType(tee));
        }
        let header_qe_svn = r.u16("qe svn")?;
        let header_pce_svn = r.u16("pce svn")?;
        let qe_vendor_id = r.arr("qe vendor id")?;
        r.take(20, "user data")?;
        let v15 = if version == 5 {
            let ty = r.u16("body type")?;
            let size = r.u32("body size")?;
            match (ty, size) {
                (2, 584) => false,
                (3, 648) => true,
                _ => return Err(QuoteError::BodyType { ty, size }),
            }
        } else {
            false
        };
        let body = TdReportBody::read(&mut r, v15)?;
        let signed = b.get(..r.pos).unwrap_or_default().to_vec();
        let sig_len = r.u32("signature data length")? as usize;
        let sig_data = r.take(sig_len, "signature data")?;
        let mut s = Reader {
            b: sig_data,
            pos: 0,
        };
        let signature = s.arr("quote signature")?;
        let attest_key = s.arr("attestation key")?;
        let ty = s.u16("certification data type")?;
        let len = s.u32("certification data size")? as usize;
        let cd = s.take(len, "certification data")?;
        // v4/v5 wrap the QE report in certification data type 6.
        if ty != 6 {
            return Err(QuoteError::CertDataType {
                found: ty,
                expected: 6,
            });
        }
        let mut q = Reader { b: cd, pos: 0 };
        let qe_report = QeReport::parse(q.take(384, "qe report")?)?;
        let qe_report_signature = q.arr("qe report signature")?;
        let auth_len = q.u16("qe auth data size")? as usize;
        let qe_auth_data = q.take(auth_len, "qe auth data")?.to_vec();
        let inner_ty = q.u16("pck certification data type")?;
        let inner_len = q.u32("pck certification data size")? as usize;
        let pck = q.take(inner_len, "pck certification data")?;
        if inner_ty != 5 {
            return Err(QuoteError::CertDataType {
                found: inner_ty,
                expected: 5,
            });
        }
        Ok(Quote {
            version,
            header_qe_svn,
            header_pce_svn,
            qe_vendor_id,
            body,
            signed,
            signature,
            attest_key,
            qe_report,
            qe_report_signature,
            qe_auth_data,
            // Some quotes end the PEM chain with a NUL.
            pck_chain_pem: pck.iter().copied().take_while(|c| *c != 0).collect(),
        })
    }
}
