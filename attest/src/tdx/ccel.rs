//! The TDX CC event log (ACPI CCEL): TCG2 crypto-agile format with SHA-384 digests, where MR
//! index 1..=4 are RTMR0..3. Replaying it reproduces the RTMRs of a quote, which lets a verifier
//! check individual boot measurements instead of opaque register values.

use sha2::{Digest, Sha384};

/// Upper bound on the number of events (a real log has tens to hundreds).
const MAX_EVENTS: usize = 100_000;
const TPM_ALG_SHA384: u16 = 0x000C;
const EV_NO_ACTION: u32 = 0x0000_0003;

/// Why a CC event log cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CcelError {
    /// The log ends inside a structure.
    #[error("CC event log truncated at offset {0}")]
    Truncated(usize),
    /// The header is not a TCG2 Spec ID event.
    #[error("CC event log header is not a TCG2 \"Spec ID Event03\"")]
    Header,
    /// An algorithm size is unknown.
    #[error("CC event log uses digest algorithm 0x{0:04x} not declared in the header")]
    UnknownAlgorithm(u16),
    /// Too many events.
    #[error("CC event log has more than {MAX_EVENTS} events")]
    TooManyEvents,
}

struct R<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CcelError> {
        let end = self.p.checked_add(n).ok_or(CcelError::Truncated(self.p))?;
        let s = self
            .b
            .get(self.p..end)
            .ok_or(CcelError::Truncated(self.p))?;
        self.p = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, CcelError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, CcelError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
}

/// Replays the SHA-384 digests of a CC event log into RTMR0..3. Trailing zero/0xFF padding (the
/// unused part of the ACPI area) ends the log.
pub fn replay_rtmrs(log: &[u8]) -> Result<[[u8; 48]; 4], CcelError> {
    let mut r = R { b: log, p: 0 };
    // Header: legacy TCG_PCR_EVENT with a SHA-1 digest and the Spec ID event as data.
    r.take(8)?;
    r.take(20)?;
    let size = r.u32()? as usize;
    let spec = r.take(size)?;
    if spec.get(..16) != Some(b"Spec ID Event03\0".as_slice()) {
        return Err(CcelError::Header);
    }
    let mut s = R { b: spec, p: 24 };
    let n = s.u32()?;
    let mut sizes = Vec::new();
    for _ in 0..n.min(16) {
        let alg = s.u16()?;
        let sz = s.u16()?;
        sizes.push((alg, usize::from(sz)));
    }
    let mut rtmr = [[0u8; 48]; 4];
    for _ in 0..MAX_EVENTS {
        let Some(head) = log.get(r.p..r.p + 8) else {
            return Ok(rtmr);
        };
        if head.iter().all(|b| *b == 0) || head.iter().all(|b| *b == 0xFF) {
            return Ok(rtmr);
        }
        let mr = r.u32()?;
        let ty = r.u32()?;
        let count = r.u32()?;
        let mut sha384 = None;
        for _ in 0..count.min(16) {
            let alg = r.u16()?;
            let sz = sizes
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, s)| *s)
                .ok_or(CcelError::UnknownAlgorithm(alg))?;
            let d = r.take(sz)?;
            if alg == TPM_ALG_SHA384 {
                sha384 = <[u8; 48]>::try_from(d).ok();
            }
        }
        let data_len = r.u32()? as usize;
        r.take(data_len)?;
        if ty == EV_NO_ACTION {
            continue;
        }
        if let (Some(d), Some(reg)) = (
            sha384,
            (mr as usize).checked_sub(1).and_then(|i| rtmr.get_mut(i)),
        ) {
            let mut h = Sha384::new();
            h.update(*reg);
            h.update(d);
            reg.copy_from_slice(&h.finalize());
        }
    }
    Err(CcelError::TooManyEvents)
}
