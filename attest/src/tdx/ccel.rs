//! The TDX CC event log (ACPI CCEL): the crypto-agile TCG format ([`crate::eventlog`]) with
//! SHA-384 digests, where MR index 1..=4 are RTMR0..3. Replaying it reproduces the RTMRs of a
//! quote, which lets a verifier check individual boot measurements instead of opaque register
//! values.

use crate::eventlog::{EventLog, EventLogError, TPM_ALG_SHA384};

/// Replays the SHA-384 digests of a CC event log into RTMR0..3 (registers without events stay
/// zero). Trailing zero/0xFF padding (the unused part of the ACPI area) ends the log.
pub fn replay_rtmrs(log: &[u8]) -> Result<[[u8; 48]; 4], EventLogError> {
    let replayed = EventLog::parse(log)?.replay(TPM_ALG_SHA384)?;
    let mut rtmr = [[0u8; 48]; 4];
    for (i, reg) in (1u32..).zip(rtmr.iter_mut()) {
        if let Some(v) = replayed.get(&i) {
            // The header fixes SHA-384 digests (and so replayed values) at 48 bytes.
            reg.copy_from_slice(v.get(..48).unwrap_or(&[0; 48]));
        }
    }
    Ok(rtmr)
}
