//! The certificate table of an SNP extended report (`SNP_GET_EXT_REPORT`, GHCB spec): entries of
//! GUID (16 bytes) ‖ offset (u32 LE) ‖ length (u32 LE), ended by an all-zero entry; offsets are
//! relative to the start of the table.

/// What a table entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertKind {
    /// VCEK (63da758d-e664-4564-adc5-f4b93be8accd).
    Vcek,
    /// VLEK (a8074bc2-a25a-483e-aae6-39c045a0b8a1).
    Vlek,
    /// ASK (4ab7b379-bbac-4fe4-a02f-05aef327c782).
    Ask,
    /// ARK (c0b406a4-a803-4952-9743-3fb6014cd0ae). Never trusted: the ARK comes from the policy.
    Ark,
    /// Any other GUID.
    Other([u8; 16]),
}

/// Why a certificate table is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// The table ends before its terminating zero entry.
    #[error("certificate table is not terminated by an all-zero entry")]
    Unterminated,
    /// An entry points outside the buffer.
    #[error(
        "certificate table entry {index} (offset {offset}, length {length}) points outside the {size}-byte buffer"
    )]
    OutOfBounds {
        /// Entry index.
        index: usize,
        /// Offset.
        offset: u32,
        /// Length.
        length: u32,
        /// Buffer size.
        size: usize,
    },
    /// Too many entries.
    #[error("certificate table has more than {0} entries")]
    TooManyEntries(usize),
}

const MAX_ENTRIES: usize = 64;

fn guid(s: &str) -> [u8; 16] {
    let h: String = s.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    if let Ok(v) = hex::decode(h)
        && v.len() == 16
    {
        out.copy_from_slice(&v);
    }
    out
}

/// GUID in the mixed-endian (UEFI) byte order the firmware writes.
fn guid_le(be: [u8; 16]) -> [u8; 16] {
    let mut o = be;
    o[..4].reverse();
    o[4..6].reverse();
    o[6..8].reverse();
    o
}

fn kind(g: [u8; 16]) -> CertKind {
    for (s, k) in [
        ("63da758d-e664-4564-adc5-f4b93be8accd", CertKind::Vcek),
        ("a8074bc2-a25a-483e-aae6-39c045a0b8a1", CertKind::Vlek),
        ("4ab7b379-bbac-4fe4-a02f-05aef327c782", CertKind::Ask),
        ("c0b406a4-a803-4952-9743-3fb6014cd0ae", CertKind::Ark),
    ] {
        let be = guid(s);
        if g == be || g == guid_le(be) {
            return k;
        }
    }
    CertKind::Other(g)
}

/// Encodes a GUID string in table (UEFI) byte order; used by issuers and tests.
pub fn encode_guid(kind: CertKind) -> [u8; 16] {
    let s = match kind {
        CertKind::Vcek => "63da758d-e664-4564-adc5-f4b93be8accd",
        CertKind::Vlek => "a8074bc2-a25a-483e-aae6-39c045a0b8a1",
        CertKind::Ask => "4ab7b379-bbac-4fe4-a02f-05aef327c782",
        CertKind::Ark => "c0b406a4-a803-4952-9743-3fb6014cd0ae",
        CertKind::Other(g) => return g,
    };
    guid_le(guid(s))
}

/// Parses a certificate table into (kind, DER bytes) pairs. Never panics.
pub fn parse(buf: &[u8]) -> Result<Vec<(CertKind, Vec<u8>)>, TableError> {
    let mut out = Vec::new();
    for index in 0..=MAX_ENTRIES {
        let start = index * 24;
        let e = buf.get(start..start + 24).ok_or(TableError::Unterminated)?;
        if e.iter().all(|b| *b == 0) {
            return Ok(out);
        }
        if index == MAX_ENTRIES {
            break;
        }
        let mut g = [0u8; 16];
        g.copy_from_slice(e.get(..16).ok_or(TableError::Unterminated)?);
        let rd = |o: usize| -> u32 {
            let mut b = [0u8; 4];
            if let Some(s) = e.get(o..o + 4) {
                b.copy_from_slice(s);
            }
            u32::from_le_bytes(b)
        };
        let (offset, length) = (rd(16), rd(20));
        let data = (offset as usize)
            .checked_add(length as usize)
            .and_then(|end| buf.get(offset as usize..end))
            .ok_or(TableError::OutOfBounds {
                index,
                offset,
                length,
                size: buf.len(),
            })?;
        out.push((kind(g), data.to_vec()));
    }
    Err(TableError::TooManyEntries(MAX_ENTRIES))
}

/// Builds a table (for issuers and tests).
pub fn build(entries: &[(CertKind, &[u8])]) -> Vec<u8> {
    let header = (entries.len() + 1) * 24;
    let mut table = Vec::new();
    let mut data = Vec::new();
    for (k, der) in entries {
        table.extend_from_slice(&encode_guid(*k));
        let off = u32::try_from(header + data.len()).unwrap_or(u32::MAX);
        table.extend_from_slice(&off.to_le_bytes());
        table.extend_from_slice(&u32::try_from(der.len()).unwrap_or(u32::MAX).to_le_bytes());
        data.extend_from_slice(der);
    }
    table.extend_from_slice(&[0u8; 24]);
    table.extend_from_slice(&data);
    table
}
