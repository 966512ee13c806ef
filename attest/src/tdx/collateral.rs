//! Intel PCS collateral: TCB info (TDX, v3) and QE identity (v2) JSON with their signatures, and
//! the SGX extension of PCK certificates.

use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Maximum accepted size of a collateral JSON document.
pub const MAX_COLLATERAL_LEN: usize = 1 << 20;

/// Why collateral is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CollateralError {
    /// Not the expected JSON shape.
    #[error("{what} JSON invalid: {reason}")]
    Json {
        /// Which document.
        what: &'static str,
        /// Parser message.
        reason: String,
    },
    /// A hex or date field is malformed.
    #[error("{what}: field {field} malformed")]
    Field {
        /// Which document.
        what: &'static str,
        /// Field name.
        field: &'static str,
    },
    /// Document too large.
    #[error("{0} larger than {MAX_COLLATERAL_LEN} bytes")]
    TooLarge(&'static str),
    /// The PCK certificate lacks the SGX extension or a field in it.
    #[error("PCK certificate SGX extension: {0} missing or malformed")]
    PckExtension(&'static str),
}

#[derive(Deserialize)]
struct SignedTcbInfo {
    #[serde(rename = "tcbInfo")]
    tcb_info: Box<RawValue>,
    signature: String,
}

#[derive(Deserialize)]
struct SignedQeIdentity {
    #[serde(rename = "enclaveIdentity")]
    identity: Box<RawValue>,
    signature: String,
}

/// One SVN component.
#[derive(Debug, Clone, Deserialize)]
pub struct Component {
    /// SVN.
    pub svn: u16,
}

/// Platform TCB of a level.
#[derive(Debug, Clone, Deserialize)]
pub struct LevelTcb {
    /// 16 SGX components.
    pub sgxtcbcomponents: Vec<Component>,
    /// PCE SVN.
    pub pcesvn: u16,
    /// 16 TDX components.
    #[serde(default)]
    pub tdxtcbcomponents: Vec<Component>,
}

/// A platform TCB level.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcbLevel {
    /// The TCB.
    pub tcb: LevelTcb,
    /// Date.
    pub tcb_date: String,
    /// Status name.
    pub tcb_status: String,
    /// Advisories.
    #[serde(default, rename = "advisoryIDs")]
    pub advisory_ids: Vec<String>,
}

/// `{ "isvsvn": n }`.
#[derive(Debug, Clone, Deserialize)]
pub struct IsvSvn {
    /// ISV SVN.
    pub isvsvn: u16,
}

/// A QE or TDX-module TCB level.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IsvLevel {
    /// The SVN.
    pub tcb: IsvSvn,
    /// Date.
    pub tcb_date: String,
    /// Status name.
    pub tcb_status: String,
    /// Advisories.
    #[serde(default, rename = "advisoryIDs")]
    pub advisory_ids: Vec<String>,
}

/// TDX module signer and attributes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TdxModule {
    /// Identity id ("TDX_01"); absent in `tdxModule`.
    #[serde(default)]
    pub id: String,
    /// MRSIGNERSEAM (hex).
    pub mrsigner: String,
    /// SEAM attributes (hex).
    pub attributes: String,
    /// Mask (hex).
    pub attributes_mask: String,
    /// Levels (identities only).
    #[serde(default)]
    pub tcb_levels: Vec<IsvLevel>,
}

/// The `tcbInfo` object.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcbInfo {
    /// "TDX".
    #[serde(default)]
    pub id: String,
    /// 3.
    pub version: u32,
    /// Issue date (RFC 3339).
    pub issue_date: String,
    /// Next update (RFC 3339).
    pub next_update: String,
    /// FMSPC (hex).
    pub fmspc: String,
    /// PCE ID (hex).
    pub pce_id: String,
    /// Evaluation data number.
    pub tcb_evaluation_data_number: u32,
    /// Module signer.
    pub tdx_module: Option<TdxModule>,
    /// Module identities.
    #[serde(default)]
    pub tdx_module_identities: Vec<TdxModule>,
    /// Levels, newest first.
    pub tcb_levels: Vec<TcbLevel>,
}

/// The `enclaveIdentity` object.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QeIdentity {
    /// "TD_QE".
    pub id: String,
    /// 2.
    pub version: u32,
    /// Issue date.
    pub issue_date: String,
    /// Next update.
    pub next_update: String,
    /// Evaluation data number (absent in some older documents: then below any minimum).
    #[serde(default)]
    pub tcb_evaluation_data_number: Option<u32>,
    /// MISCSELECT (hex).
    pub miscselect: String,
    /// Mask (hex).
    pub miscselect_mask: String,
    /// ATTRIBUTES (hex).
    pub attributes: String,
    /// Mask (hex).
    pub attributes_mask: String,
    /// MRSIGNER (hex).
    pub mrsigner: String,
    /// ISVPRODID.
    pub isvprodid: u16,
    /// Levels.
    pub tcb_levels: Vec<IsvLevel>,
}

/// A signed collateral document: the parsed body, the exact signed bytes and the signature.
#[derive(Debug, Clone)]
pub struct Signed<T> {
    /// Parsed body.
    pub body: T,
    /// Exact bytes of the signed JSON value.
    pub signed_bytes: Vec<u8>,
    /// r ‖ s.
    pub signature: [u8; 64],
    /// issueDate.
    pub issue_date: OffsetDateTime,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
}

fn date(
    what: &'static str,
    field: &'static str,
    s: &str,
) -> Result<OffsetDateTime, CollateralError> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|_| CollateralError::Field { what, field })
}

fn sig64(what: &'static str, s: &str) -> Result<[u8; 64], CollateralError> {
    hex::decode(s.trim())
        .ok()
        .and_then(|v| <[u8; 64]>::try_from(v).ok())
        .ok_or(CollateralError::Field {
            what,
            field: "signature",
        })
}

/// Parses a PCS TCB info response (`{"tcbInfo": …, "signature": …}`).
pub fn parse_tcb_info(bytes: &[u8]) -> Result<Signed<TcbInfo>, CollateralError> {
    const W: &str = "TCB info";
    if bytes.len() > MAX_COLLATERAL_LEN {
        return Err(CollateralError::TooLarge(W));
    }
    let s: SignedTcbInfo = serde_json::from_slice(bytes).map_err(|e| CollateralError::Json {
        what: W,
        reason: e.to_string(),
    })?;
    let body: TcbInfo =
        serde_json::from_str(s.tcb_info.get()).map_err(|e| CollateralError::Json {
            what: W,
            reason: e.to_string(),
        })?;
    Ok(Signed {
        issue_date: date(W, "issueDate", &body.issue_date)?,
        next_update: date(W, "nextUpdate", &body.next_update)?,
        signature: sig64(W, &s.signature)?,
        signed_bytes: s.tcb_info.get().as_bytes().to_vec(),
        body,
    })
}

/// Parses a PCS QE identity response (`{"enclaveIdentity": …, "signature": …}`).
pub fn parse_qe_identity(bytes: &[u8]) -> Result<Signed<QeIdentity>, CollateralError> {
    const W: &str = "QE identity";
    if bytes.len() > MAX_COLLATERAL_LEN {
        return Err(CollateralError::TooLarge(W));
    }
    let s: SignedQeIdentity = serde_json::from_slice(bytes).map_err(|e| CollateralError::Json {
        what: W,
        reason: e.to_string(),
    })?;
    let body: QeIdentity =
        serde_json::from_str(s.identity.get()).map_err(|e| CollateralError::Json {
            what: W,
            reason: e.to_string(),
        })?;
    Ok(Signed {
        issue_date: date(W, "issueDate", &body.issue_date)?,
        next_update: date(W, "nextUpdate", &body.next_update)?,
        signature: sig64(W, &s.signature)?,
        signed_bytes: s.identity.get().as_bytes().to_vec(),
        body,
    })
}

/// The SGX extension values of a PCK certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PckInfo {
    /// 16 SGX TCB component SVNs.
    pub sgx_svns: [u16; 16],
    /// PCE SVN.
    pub pce_svn: u16,
    /// FMSPC.
    pub fmspc: [u8; 6],
    /// PCE ID.
    pub pce_id: [u8; 2],
}

/// One DER TLV: (tag, contents, rest). Never panics; lengths up to 4 bytes.
pub(crate) fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *b.first()?;
    let l0 = *b.get(1)?;
    let (len, hdr) = if l0 < 0x80 {
        (usize::from(l0), 2)
    } else {
        let n = usize::from(l0 & 0x7F);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*b.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    Some((tag, b.get(hdr..end)?, b.get(end..)?))
}

/// Decodes OID contents to dotted form.
pub(crate) fn oid_string(c: &[u8]) -> Option<String> {
    let (first, rest) = c.split_first()?;
    let mut parts = vec![u64::from(first / 40), u64::from(first % 40)];
    let mut acc: u64 = 0;
    for b in rest {
        acc = acc.checked_mul(128)? | u64::from(b & 0x7F);
        if b & 0x80 == 0 {
            parts.push(acc);
            acc = 0;
        }
    }
    Some(
        parts
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("."),
    )
}

fn der_uint(c: &[u8]) -> Option<u16> {
    if c.is_empty() || c.len() > 3 {
        return None;
    }
    let mut v: u32 = 0;
    for b in c {
        v = (v << 8) | u32::from(*b);
    }
    u16::try_from(v).ok()
}

/// OID of the SGX extension in PCK certificates.
pub const OID_SGX_EXT: &str = "1.2.840.113741.1.13.1";

/// Reads TCB, FMSPC and PCE ID from the PCK certificate's SGX extension value.
pub fn parse_pck_extension(value: &[u8]) -> Result<PckInfo, CollateralError> {
    let (tag, mut seq, _) = tlv(value).ok_or(CollateralError::PckExtension("outer SEQUENCE"))?;
    if tag != 0x30 {
        return Err(CollateralError::PckExtension("outer SEQUENCE"));
    }
    let mut sgx_svns = [0u16; 16];
    let (mut pce_svn, mut fmspc, mut pce_id, mut have_tcb) = (None, None, None, false);
    while !seq.is_empty() {
        let (_, item, rest) = tlv(seq).ok_or(CollateralError::PckExtension("entry"))?;
        seq = rest;
        let (_, oid, val) = tlv(item).ok_or(CollateralError::PckExtension("entry OID"))?;
        let oid = oid_string(oid).ok_or(CollateralError::PckExtension("entry OID"))?;
        let (vtag, vc, _) = tlv(val).ok_or(CollateralError::PckExtension("entry value"))?;
        match oid.strip_prefix(OID_SGX_EXT).unwrap_or("") {
            ".2" if vtag == 0x30 => {
                have_tcb = true;
                let mut t = vc;
                while !t.is_empty() {
                    let (_, comp, rest) =
                        tlv(t).ok_or(CollateralError::PckExtension("TCB entry"))?;
                    t = rest;
                    let (_, coid, cval) =
                        tlv(comp).ok_or(CollateralError::PckExtension("TCB entry"))?;
                    let coid = oid_string(coid).ok_or(CollateralError::PckExtension("TCB OID"))?;
                    let (ctag, cc, _) =
                        tlv(cval).ok_or(CollateralError::PckExtension("TCB value"))?;
                    let idx: Option<usize> = coid
                        .strip_prefix(&format!("{OID_SGX_EXT}.2."))
                        .and_then(|s| s.parse().ok());
                    match idx {
                        Some(i @ 1..=16) if ctag == 0x02 => {
                            if let Some(slot) = sgx_svns.get_mut(i - 1) {
                                *slot = der_uint(cc)
                                    .ok_or(CollateralError::PckExtension("SGX TCB SVN"))?;
                            }
                        }
                        Some(17) if ctag == 0x02 => {
                            pce_svn =
                                Some(der_uint(cc).ok_or(CollateralError::PckExtension("PCESVN"))?)
                        }
                        _ => {}
                    }
                }
            }
            ".3" if vtag == 0x04 => pce_id = <[u8; 2]>::try_from(vc).ok(),
            ".4" if vtag == 0x04 => fmspc = <[u8; 6]>::try_from(vc).ok(),
            _ => {}
        }
    }
    if !have_tcb {
        return Err(CollateralError::PckExtension("TCB"));
    }
    Ok(PckInfo {
        sgx_svns,
        pce_svn: pce_svn.ok_or(CollateralError::PckExtension("PCESVN"))?,
        fmspc: fmspc.ok_or(CollateralError::PckExtension("FMSPC"))?,
        pce_id: pce_id.ok_or(CollateralError::PckExtension("PCE-ID"))?,
    })
}
