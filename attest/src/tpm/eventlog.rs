//! TCG PC Client crypto-agile event log (`binary_bios_measurements`): parsing and SHA-256 replay.
//!
//! Layout: one legacy SHA-1-format header event carrying the "Spec ID Event03" (which lists
//! the digest sizes per algorithm), then `TCG_PCR_EVENT2` records. All integers little-endian.

use std::collections::BTreeMap;

use super::{Reader, TpmError};
use crate::measurements::extend_sha256;

/// Upper bound on events, far above real logs (a few hundred), so garbage cannot make us
/// allocate without bound.
const MAX_EVENTS: usize = 100_000;
const MAX_ALGORITHMS: u32 = 16;
const MAX_PCR: u32 = 23;
const EV_NO_ACTION: u32 = 0x0000_0003;
const ALG_SHA256: u16 = 0x000B;
const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const STARTUP_LOCALITY: &[u8; 16] = b"StartupLocality\0";

/// An event log that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventLogError {
    /// Structural error.
    #[error("malformed event log: {0}")]
    Malformed(#[from] TpmError),
    /// The header is not a crypto-agile "Spec ID Event03".
    #[error("event log is not in crypto-agile format (no \"Spec ID Event03\" header)")]
    NotCryptoAgile,
    /// The log has no SHA-256 digests.
    #[error("event log carries no SHA-256 digests")]
    NoSha256,
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
    /// Too many events or algorithms.
    #[error("event log exceeds limits ({0})")]
    TooLarge(&'static str),
}

/// One `TCG_PCR_EVENT2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// PCR index.
    pub pcr: u32,
    /// Event type (EV_*).
    pub event_type: u32,
    /// The SHA-256 digest, if the event carries one.
    pub sha256: Option<[u8; 32]>,
    /// Event data.
    pub data: Vec<u8>,
}

/// A parsed event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// Events after the header, in order.
    pub events: Vec<Event>,
}

impl EventLog {
    /// Parses a crypto-agile TCG event log from untrusted bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, EventLogError> {
        let mut r = Reader::new(bytes, "TCG event log");
        // Legacy-format header event.
        let _pcr = r.u32_le("header.pcrIndex")?;
        let ty = r.u32_le("header.eventType")?;
        let _sha1 = r.bytes(20, "header.digest")?;
        let size = r.u32_le("header.eventSize")?;
        let data = r.bytes(usize_of(size), "header.event")?;
        if ty != EV_NO_ACTION {
            return Err(EventLogError::NotCryptoAgile);
        }
        let sizes = parse_spec_id(data)?;
        if !sizes.iter().any(|(alg, _)| *alg == ALG_SHA256) {
            return Err(EventLogError::NoSha256);
        }
        let mut events = Vec::new();
        while r.remaining() > 0 {
            let index = events.len();
            if index >= MAX_EVENTS {
                return Err(EventLogError::TooLarge("events"));
            }
            let pcr = r.u32_le("event.pcrIndex")?;
            if pcr > MAX_PCR {
                return Err(EventLogError::BadPcr { index, pcr });
            }
            let event_type = r.u32_le("event.eventType")?;
            let count = r.u32_le("event.digests.count")?;
            if count > MAX_ALGORITHMS {
                return Err(EventLogError::TooLarge("digests per event"));
            }
            let mut sha256 = None;
            for _ in 0..count {
                let alg = r.u16_le("event.digest.hashAlg")?;
                let len = sizes
                    .iter()
                    .find(|(a, _)| *a == alg)
                    .map(|(_, l)| *l)
                    .ok_or(EventLogError::UnknownAlgorithm { index, alg })?;
                let d = r.bytes(usize::from(len), "event.digest")?;
                if alg == ALG_SHA256 {
                    let mut a = [0u8; 32];
                    if d.len() != 32 {
                        return Err(EventLogError::Malformed(TpmError::Unsupported {
                            structure: "TCG event log",
                            field: "SHA-256 digest size",
                            value: u32::from(len),
                        }));
                    }
                    a.copy_from_slice(d);
                    sha256 = Some(a);
                }
            }
            let size = r.u32_le("event.eventSize")?;
            let data = r.bytes(usize_of(size), "event.event")?.to_vec();
            events.push(Event {
                pcr,
                event_type,
                sha256,
                data,
            });
        }
        Ok(Self { events })
    }

    /// Replays the SHA-256 bank. Returns the final value of every PCR that the log touches
    /// (PCRs without events are absent: the log says nothing about them).
    pub fn replay_sha256(&self) -> BTreeMap<u32, [u8; 32]> {
        let mut pcrs: BTreeMap<u32, [u8; 32]> = BTreeMap::new();
        for e in &self.events {
            if e.event_type == EV_NO_ACTION {
                // The startup locality sets PCR 0's initial value; other no-action events are
                // informational and never extended.
                if e.pcr == 0 && e.data.len() >= 17 && e.data.starts_with(STARTUP_LOCALITY) {
                    let mut init = [0u8; 32];
                    init[31] = e.data.get(16).copied().unwrap_or(0);
                    pcrs.entry(0).or_insert(init);
                }
                continue;
            }
            if let Some(d) = e.sha256 {
                let cur = pcrs.entry(e.pcr).or_insert([0u8; 32]);
                *cur = extend_sha256(cur, &d);
            }
        }
        pcrs
    }
}

fn usize_of(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Parses the Spec ID Event03 body; returns (algorithm, digest size) pairs.
fn parse_spec_id(data: &[u8]) -> Result<Vec<(u16, u16)>, EventLogError> {
    let mut r = Reader::new(data, "Spec ID Event03");
    let sig = r
        .bytes(16, "signature")
        .map_err(|_| EventLogError::NotCryptoAgile)?;
    if sig != SPEC_ID_SIGNATURE {
        return Err(EventLogError::NotCryptoAgile);
    }
    let _platform_class = r.u32_le("platformClass")?;
    let _minor = r.u8("specVersionMinor")?;
    let _major = r.u8("specVersionMajor")?;
    let _errata = r.u8("specErrata")?;
    let _uintn = r.u8("uintnSize")?;
    let n = r.u32_le("numberOfAlgorithms")?;
    if n > MAX_ALGORITHMS {
        return Err(EventLogError::TooLarge("algorithms"));
    }
    let mut out = Vec::new();
    for _ in 0..n {
        let alg = r.u16_le("digestSizes.algorithmId")?;
        let size = r.u16_le("digestSizes.digestSize")?;
        out.push((alg, size));
    }
    let vendor = r.u8("vendorInfoSize")?;
    r.bytes(usize::from(vendor), "vendorInfo")?;
    Ok(out)
}

/// Writes crypto-agile event logs with SHA-256 digests only (tests, tooling, fuzz seeds).
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
        use sha2::Digest as _;
        let digest: [u8; 32] = sha2::Sha256::digest(data).into();
        self.events.push((pcr, event_type, digest, data.to_vec()));
        digest
    }

    /// Encodes the log.
    pub fn build(&self) -> Vec<u8> {
        let mut spec = SPEC_ID_SIGNATURE.to_vec();
        spec.extend_from_slice(&0u32.to_le_bytes()); // platform class: client
        spec.extend_from_slice(&[0, 2, 0, 2]); // version 2.0, errata 0, uintn 8 bytes
        spec.extend_from_slice(&1u32.to_le_bytes());
        spec.extend_from_slice(&ALG_SHA256.to_le_bytes());
        spec.extend_from_slice(&32u16.to_le_bytes());
        spec.push(0);
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
            out.extend_from_slice(&ALG_SHA256.to_le_bytes());
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

    #[test]
    fn build_parse_replay() {
        let mut b = EventLogBuilder::new();
        let d1 = b.measure(4, 0x8000_0003, b"kernel");
        let d2 = b.measure(4, 0x8000_0003, b"initrd");
        let d3 = b.measure(9, 0x0000_000d, b"cmdline");
        let log = EventLog::parse(&b.build()).unwrap();
        assert_eq!(log.events.len(), 3);
        let r = log.replay_sha256();
        assert_eq!(r[&4], extend_sha256(&extend_sha256(&[0; 32], &d1), &d2));
        assert_eq!(r[&9], extend_sha256(&[0; 32], &d3));
        assert!(!r.contains_key(&0));
    }

    #[test]
    fn truncations_error_without_panic() {
        let mut b = EventLogBuilder::new();
        b.measure(1, 1, b"x");
        let bytes = b.build();
        for n in 0..bytes.len() {
            let _ = EventLog::parse(&bytes[..n]);
        }
        assert!(EventLog::parse(&bytes[..bytes.len() - 1]).is_err());
        assert!(EventLog::parse(b"garbage garbage garbage garbage garbage").is_err());
    }
}
