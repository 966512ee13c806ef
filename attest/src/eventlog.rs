//! The TCG crypto-agile event log: the one parser for TPM logs (`binary_bios_measurements`),
//! TDX CC event logs (ACPI CCEL) and the image's predicted log, and its replay into any bank.
//!
//! Layout (TCG PC Client Platform Firmware Profile, "crypto agile" format): one legacy
//! `TCG_PCR_EVENT` header (SHA-1-sized digest field) whose data is the "Spec ID Event03" that
//! lists every digest algorithm of the log with its size, then `TCG_PCR_EVENT2` records, each
//! carrying one digest per algorithm. All integers are little-endian. A TDX CC event log has the
//! same layout with MR index 1..=4 standing for RTMR0..3.
//!
//! The log comes from the attested machine, so it is untrusted: every read is checked, every
//! count bounded, nothing panics; a log only means something when its replay reproduces
//! registers that hardware vouched for.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256, Sha384, Sha512};

/// `EV_NO_ACTION`: informational, never extended (the header and StartupLocality use it).
pub const EV_NO_ACTION: u32 = 0x0000_0003;
/// `EV_SEPARATOR`.
pub const EV_SEPARATOR: u32 = 0x0000_0004;
/// `EV_EVENT_TAG` (the Linux EFI stub's load-options and initrd measurements).
pub const EV_EVENT_TAG: u32 = 0x0000_0006;
/// `EV_IPL` (systemd-stub's UKI section measurements).
pub const EV_IPL: u32 = 0x0000_000D;
/// `EV_EFI_BOOT_SERVICES_APPLICATION`.
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
/// `EV_EFI_GPT_EVENT`.
pub const EV_EFI_GPT_EVENT: u32 = 0x8000_0006;
/// `EV_EFI_ACTION`.
pub const EV_EFI_ACTION: u32 = 0x8000_0007;

/// TPM algorithm id of SHA-1.
pub const TPM_ALG_SHA1: u16 = 0x0004;
/// TPM algorithm id of SHA-256.
pub const TPM_ALG_SHA256: u16 = 0x000B;
/// TPM algorithm id of SHA-384 (the TDX bank).
pub const TPM_ALG_SHA384: u16 = 0x000C;
/// TPM algorithm id of SHA-512.
pub const TPM_ALG_SHA512: u16 = 0x000D;
/// TPM algorithm id of SM3-256.
pub const TPM_ALG_SM3_256: u16 = 0x0012;

/// Upper bound on events, far above real logs (a few hundred), so garbage cannot make the
/// parser allocate without bound.
pub const MAX_EVENTS: usize = 100_000;
/// Upper bound on algorithms in the header and digests per event.
const MAX_ALGORITHMS: u32 = 16;
/// Highest PCR index (a CC event log uses 0..=4).
const MAX_PCR: u32 = 23;
const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const STARTUP_LOCALITY: &[u8; 16] = b"StartupLocality\0";

/// An event log that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventLogError {
    /// The log ends inside a structure.
    #[error("event log truncated at byte {offset} while reading {field}")]
    Truncated {
        /// Byte offset where the read started.
        offset: usize,
        /// The field being read.
        field: &'static str,
    },
    /// The header is not a crypto-agile "Spec ID Event03".
    #[error("event log is not in crypto-agile format (no \"Spec ID Event03\" header)")]
    NotCryptoAgile,
    /// The header declares a known algorithm with a digest size it does not have.
    #[error(
        "event log header declares algorithm {alg:#06x} with digest size {size}, expected {expected}"
    )]
    DigestSize {
        /// Algorithm id.
        alg: u16,
        /// Declared size.
        size: u16,
        /// The algorithm's real digest size.
        expected: u16,
    },
    /// An event names an algorithm missing from the header.
    #[error("event {index} uses digest algorithm {alg:#06x} not declared in the header")]
    UnknownAlgorithm {
        /// Event number (0 = first after the header).
        index: usize,
        /// Algorithm id.
        alg: u16,
    },
    /// PCR index out of range.
    #[error("event {index} extends PCR {pcr}, beyond 23")]
    BadPcr {
        /// Event number.
        index: usize,
        /// PCR index.
        pcr: u32,
    },
    /// Too many events, algorithms or digests.
    #[error("event log exceeds limits ({0})")]
    TooLarge(&'static str),
    /// Replay of a bank the log does not carry.
    #[error("event log carries no digests of algorithm {0:#06x} (the bank being checked)")]
    NoBank(u16),
    /// Replay of a bank this implementation cannot hash.
    #[error("replaying digest algorithm {0:#06x} is not supported (SHA-256, SHA-384, SHA-512 are)")]
    UnsupportedBank(u16),
}

/// One `TCG_PCR_EVENT2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// PCR index (CC event log: MR index, 1..=4 = RTMR0..3).
    pub pcr: u32,
    /// Event type (`EV_*`).
    pub event_type: u32,
    /// (algorithm, digest) pairs in log order; each digest has its header-declared size.
    pub digests: Vec<(u16, Vec<u8>)>,
    /// Event data.
    pub data: Vec<u8>,
}

impl Event {
    /// The digest of algorithm `alg`, if the event carries one.
    pub fn digest(&self, alg: u16) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, d)| d.as_slice())
    }

    /// The SHA-256 digest, if the event carries one.
    pub fn sha256(&self) -> Option<[u8; 32]> {
        self.digest(TPM_ALG_SHA256)
            .and_then(|d| <[u8; 32]>::try_from(d).ok())
    }
}

/// A parsed event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// (algorithm, digest size) pairs the header declares.
    pub algorithms: Vec<(u16, u16)>,
    /// Events after the header, in order.
    pub events: Vec<Event>,
}

/// Checked little-endian reader; errors name the offset and field.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], EventLogError> {
        let offset = self.pos;
        let s = offset
            .checked_add(n)
            .and_then(|end| self.b.get(offset..end))
            .ok_or(EventLogError::Truncated { offset, field })?;
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, EventLogError> {
        Ok(self.take(1, field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, EventLogError> {
        let s = self.take(2, field)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, EventLogError> {
        let s = self.take(4, field)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn rest(&self) -> &'a [u8] {
        self.b.get(self.pos..).unwrap_or_default()
    }
}

fn usize_of(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// The digest size of algorithms this module knows; `None` for others (which may still appear
/// in a log with their declared size, but cannot be replayed).
fn known_size(alg: u16) -> Option<u16> {
    match alg {
        TPM_ALG_SHA1 => Some(20),
        TPM_ALG_SHA256 | TPM_ALG_SM3_256 => Some(32),
        TPM_ALG_SHA384 => Some(48),
        TPM_ALG_SHA512 => Some(64),
        _ => None,
    }
}

/// A fixed-size log buffer (the ACPI CCEL area, some firmware's TPM log) is padded after the
/// last event with 0x00 or 0xFF. Only a tail that is padding throughout ends the log, so bytes
/// cannot hide behind a fake end marker.
fn is_padding(rest: &[u8]) -> bool {
    match rest.first() {
        Some(&p @ (0x00 | 0xFF)) => rest.iter().all(|b| *b == p),
        _ => false,
    }
}

impl EventLog {
    /// Parses a crypto-agile TCG event log from untrusted bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, EventLogError> {
        let mut r = Reader { b: bytes, pos: 0 };
        // Legacy-format header event.
        let _pcr = r.u32("header.pcrIndex")?;
        let ty = r.u32("header.eventType")?;
        r.take(20, "header.digest")?;
        let size = r.u32("header.eventSize")?;
        let spec = r.take(usize_of(size), "header.event")?;
        if ty != EV_NO_ACTION {
            return Err(EventLogError::NotCryptoAgile);
        }
        let algorithms = parse_spec_id(spec)?;
        let mut events = Vec::new();
        while !r.rest().is_empty() && !is_padding(r.rest()) {
            let index = events.len();
            if index >= MAX_EVENTS {
                return Err(EventLogError::TooLarge("events"));
            }
            let pcr = r.u32("event.pcrIndex")?;
            if pcr > MAX_PCR {
                return Err(EventLogError::BadPcr { index, pcr });
            }
            let event_type = r.u32("event.eventType")?;
            let count = r.u32("event.digests.count")?;
            if count > MAX_ALGORITHMS {
                return Err(EventLogError::TooLarge("digests per event"));
            }
            let mut digests = Vec::new();
            for _ in 0..count {
                let alg = r.u16("event.digest.hashAlg")?;
                let len = algorithms
                    .iter()
                    .find(|(a, _)| *a == alg)
                    .map(|(_, l)| *l)
                    .ok_or(EventLogError::UnknownAlgorithm { index, alg })?;
                let d = r.take(usize::from(len), "event.digest")?;
                digests.push((alg, d.to_vec()));
            }
            let size = r.u32("event.eventSize")?;
            let data = r.take(usize_of(size), "event.event")?.to_vec();
            events.push(Event {
                pcr,
                event_type,
                digests,
                data,
            });
        }
        Ok(Self { algorithms, events })
    }

    /// Replays the bank of algorithm `alg`: the final value of every register the log
    /// extends (registers without events are absent, the log says nothing about them). A
    /// StartupLocality event sets PCR 0's initial value; other `EV_NO_ACTION` events are never
    /// extended. Events without a digest of `alg` do not extend.
    pub fn replay(&self, alg: u16) -> Result<BTreeMap<u32, Vec<u8>>, EventLogError> {
        let Some(&(_, size)) = self.algorithms.iter().find(|(a, _)| *a == alg) else {
            return Err(EventLogError::NoBank(alg));
        };
        let size = usize::from(size);
        // Fail on an unsupported bank even for a log without events.
        extend(alg, &vec![0; size], &vec![0; size])?;
        let mut regs: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for e in &self.events {
            if e.event_type == EV_NO_ACTION {
                if e.pcr == 0
                    && e.data.starts_with(STARTUP_LOCALITY)
                    && let Some(&locality) = e.data.get(16)
                {
                    let mut init = vec![0u8; size];
                    if let Some(last) = init.last_mut() {
                        *last = locality;
                    }
                    regs.entry(0).or_insert(init);
                }
                continue;
            }
            if let Some(d) = e.digest(alg) {
                let cur = regs.entry(e.pcr).or_insert_with(|| vec![0u8; size]);
                *cur = extend(alg, cur, d)?;
            }
        }
        Ok(regs)
    }

    /// [`Self::replay`] of the SHA-256 bank, as fixed-size values.
    pub fn replay_sha256(&self) -> Result<BTreeMap<u32, [u8; 32]>, EventLogError> {
        Ok(self
            .replay(TPM_ALG_SHA256)?
            .into_iter()
            .filter_map(|(i, v)| Some((i, <[u8; 32]>::try_from(v.as_slice()).ok()?)))
            .collect())
    }
}

/// One register extend in bank `alg`: H(old ‖ digest).
fn extend(alg: u16, old: &[u8], digest: &[u8]) -> Result<Vec<u8>, EventLogError> {
    fn h<D: sha2::Digest>(old: &[u8], d: &[u8]) -> Vec<u8> {
        let mut h = D::new();
        h.update(old);
        h.update(d);
        h.finalize().to_vec()
    }
    match alg {
        TPM_ALG_SHA256 => Ok(h::<Sha256>(old, digest)),
        TPM_ALG_SHA384 => Ok(h::<Sha384>(old, digest)),
        TPM_ALG_SHA512 => Ok(h::<Sha512>(old, digest)),
        other => Err(EventLogError::UnsupportedBank(other)),
    }
}

/// Parses the Spec ID Event03 body; returns (algorithm, digest size) pairs.
fn parse_spec_id(data: &[u8]) -> Result<Vec<(u16, u16)>, EventLogError> {
    if data.get(..16) != Some(SPEC_ID_SIGNATURE.as_slice()) {
        return Err(EventLogError::NotCryptoAgile);
    }
    let mut r = Reader { b: data, pos: 16 };
    let _platform_class = r.u32("specId.platformClass")?;
    let _minor = r.u8("specId.specVersionMinor")?;
    let _major = r.u8("specId.specVersionMajor")?;
    let _errata = r.u8("specId.specErrata")?;
    let _uintn = r.u8("specId.uintnSize")?;
    let n = r.u32("specId.numberOfAlgorithms")?;
    if n > MAX_ALGORITHMS {
        return Err(EventLogError::TooLarge("algorithms"));
    }
    let mut out: Vec<(u16, u16)> = Vec::new();
    for _ in 0..n {
        let alg = r.u16("specId.digestSizes.algorithmId")?;
        let size = r.u16("specId.digestSizes.digestSize")?;
        if let Some(expected) = known_size(alg)
            && expected != size
        {
            return Err(EventLogError::DigestSize {
                alg,
                size,
                expected,
            });
        }
        if !out.iter().any(|(a, _)| *a == alg) {
            out.push((alg, size));
        }
    }
    Ok(out)
}

/// Writes crypto-agile event logs with SHA-256 digests only: the image's predicted log, tests
/// and fuzz seeds.
#[derive(Debug, Clone, Default)]
pub struct EventLogBuilder {
    events: Vec<(u32, u32, [u8; 32], Vec<u8>)>,
}

impl EventLogBuilder {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an event measuring `data` (digest = SHA-256(data)) into `pcr`.
    pub fn measure(&mut self, pcr: u32, event_type: u32, data: &[u8]) -> [u8; 32] {
        let digest: [u8; 32] = Sha256::digest(data).into();
        self.events.push((pcr, event_type, digest, data.to_vec()));
        digest
    }

    /// Appends an event whose digest is not the hash of its data (e.g. an Authenticode hash
    /// with a device path as data).
    pub fn event(&mut self, pcr: u32, event_type: u32, digest: [u8; 32], data: &[u8]) {
        self.events.push((pcr, event_type, digest, data.to_vec()));
    }

    /// Encodes the log.
    pub fn build(&self) -> Vec<u8> {
        let mut spec = SPEC_ID_SIGNATURE.to_vec();
        spec.extend_from_slice(&0u32.to_le_bytes()); // platform class: client
        spec.extend_from_slice(&[0, 2, 0, 2]); // version 2.0, errata 0, uintn 8 bytes
        spec.extend_from_slice(&1u32.to_le_bytes());
        spec.extend_from_slice(&TPM_ALG_SHA256.to_le_bytes());
        spec.extend_from_slice(&32u16.to_le_bytes());
        spec.push(0); // no vendor info
        let mut out = Vec::new();
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        out.extend_from_slice(&[0u8; 20]);
        out.extend_from_slice(&len_u32(spec.len()).to_le_bytes());
        out.extend_from_slice(&spec);
        for (pcr, ty, digest, data) in &self.events {
            out.extend_from_slice(&pcr.to_le_bytes());
            out.extend_from_slice(&ty.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
            out.extend_from_slice(&TPM_ALG_SHA256.to_le_bytes());
            out.extend_from_slice(digest);
            out.extend_from_slice(&len_u32(data.len()).to_le_bytes());
            out.extend_from_slice(data);
        }
        out
    }
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measurements::extend_sha256;

    #[test]
    fn build_parse_replay() {
        let mut b = EventLogBuilder::new();
        let d1 = b.measure(4, EV_EFI_BOOT_SERVICES_APPLICATION, b"kernel");
        let d2 = b.measure(4, EV_EFI_BOOT_SERVICES_APPLICATION, b"initrd");
        let d3 = b.measure(9, EV_IPL, b"cmdline");
        let log = EventLog::parse(&b.build()).unwrap();
        assert_eq!(log.algorithms, vec![(TPM_ALG_SHA256, 32)]);
        assert_eq!(log.events.len(), 3);
        let r = log.replay_sha256().unwrap();
        assert_eq!(r[&4], extend_sha256(&extend_sha256(&[0; 32], &d1), &d2));
        assert_eq!(r[&9], extend_sha256(&[0; 32], &d3));
        assert!(!r.contains_key(&0));
        assert_eq!(
            log.replay(TPM_ALG_SHA384),
            Err(EventLogError::NoBank(0x000C))
        );
    }

    /// A two-bank log (SHA-1 and SHA-384, as a TDX CC event log) in any bank, with the
    /// StartupLocality and separator semantics.
    #[test]
    fn multi_bank_log_replays_each_bank() {
        let mut spec = SPEC_ID_SIGNATURE.to_vec();
        spec.extend_from_slice(&[0; 8]);
        spec.extend_from_slice(&2u32.to_le_bytes());
        for (alg, size) in [(TPM_ALG_SHA1, 20u16), (TPM_ALG_SHA384, 48)] {
            spec.extend_from_slice(&alg.to_le_bytes());
            spec.extend_from_slice(&size.to_le_bytes());
        }
        spec.push(0);
        let mut log = vec![0u8; 4];
        log.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        log.extend_from_slice(&[0; 20]);
        log.extend_from_slice(&len_u32(spec.len()).to_le_bytes());
        log.extend_from_slice(&spec);
        let mut event = |pcr: u32, ty: u32, fill: u8, data: &[u8]| {
            log.extend_from_slice(&pcr.to_le_bytes());
            log.extend_from_slice(&ty.to_le_bytes());
            log.extend_from_slice(&2u32.to_le_bytes());
            log.extend_from_slice(&TPM_ALG_SHA1.to_le_bytes());
            log.extend_from_slice(&[fill; 20]);
            log.extend_from_slice(&TPM_ALG_SHA384.to_le_bytes());
            log.extend_from_slice(&[fill; 48]);
            log.extend_from_slice(&len_u32(data.len()).to_le_bytes());
            log.extend_from_slice(data);
        };
        event(0, EV_NO_ACTION, 0, b"StartupLocality\0\x03");
        event(0, EV_SEPARATOR, 7, &[0; 4]);
        event(2, EV_IPL, 9, b"x");
        log.extend_from_slice(&[0xFF; 64]); // padding of a fixed-size buffer
        let parsed = EventLog::parse(&log).unwrap();
        assert_eq!(parsed.events.len(), 3);
        let r = parsed.replay(TPM_ALG_SHA384).unwrap();
        let mut init = [0u8; 48];
        init[47] = 3;
        let ext = |old: &[u8], d: &[u8]| extend(TPM_ALG_SHA384, old, d).unwrap();
        assert_eq!(r[&0], ext(&init, &[7; 48]));
        assert_eq!(r[&2], ext(&[0; 48], &[9; 48]));
        assert_eq!(
            parsed.replay(TPM_ALG_SHA1),
            Err(EventLogError::UnsupportedBank(TPM_ALG_SHA1))
        );
        // Bytes behind a padding-looking event header are not padding.
        let mut hidden = log.clone();
        let n = hidden.len();
        hidden[n - 1] = 0x42;
        assert!(EventLog::parse(&hidden).is_err());
    }

    #[test]
    fn header_errors() {
        let mut b = EventLogBuilder::new();
        b.measure(1, 1, b"x");
        let good = b.build();
        // Wrong SHA-256 digest size in the header.
        let mut bad = good.clone();
        let pos = 32 + 16 + 8 + 4 + 2;
        bad[pos] = 31;
        assert!(matches!(
            EventLog::parse(&bad),
            Err(EventLogError::DigestSize {
                alg: TPM_ALG_SHA256,
                size: 31,
                expected: 32
            })
        ));
        // PCR out of range.
        let mut b = EventLogBuilder::new();
        b.measure(24, 1, b"x");
        assert!(matches!(
            EventLog::parse(&b.build()),
            Err(EventLogError::BadPcr { index: 0, pcr: 24 })
        ));
        assert_eq!(
            EventLog::parse(&[0u8; 40]),
            Err(EventLogError::NotCryptoAgile)
        );
    }

    #[test]
    fn truncations_error_without_panic() {
        let mut b = EventLogBuilder::new();
        b.measure(1, 1, b"x");
        let bytes = b.build();
        for n in 0..bytes.len() {
            let _ = EventLog::parse(&bytes[..n]);
        }
        assert!(matches!(
            EventLog::parse(&bytes[..bytes.len() - 1]),
            Err(EventLogError::Truncated {
                field: "event.event",
                ..
            })
        ));
        assert!(EventLog::parse(b"garbage garbage garbage garbage garbage").is_err());
    }
}
