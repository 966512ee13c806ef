//! Measurement precalculation for the node image, and TCG event log replay.
//!
//! Boot path: OVMF → `\EFI\BOOT\BOOTX64.EFI` (our UKI, systemd-stub 252) → Linux 6.1 EFI stub
//! (entered through the EFI handover protocol) → `/init`. Predicted registers (all SHA-256 bank):
//!
//! - PCR 4: OVMF measures `EV_EFI_ACTION` "Calling EFI Application from Boot Option" at the
//!   first ReadyToBoot, then `EV_SEPARATOR` (4 zero bytes), then the UKI as
//!   `EV_EFI_BOOT_SERVICES_APPLICATION` with its Authenticode hash; systemd-stub 252 then starts
//!   the kernel from the `.linux` section with LoadImage, so OVMF measures the kernel's own
//!   Authenticode hash as a second `EV_EFI_BOOT_SERVICES_APPLICATION`.
//! - PCR 9: the Linux 6.1 EFI stub measures two `EV_EVENT_TAG` events: "LOADED_IMAGE::
//!   LoadOptions" — the command line systemd-stub passes as load options, UTF-16LE including
//!   the terminating NUL — and "Linux initrd" — the initrd it loads through the
//!   `LINUX_EFI_INITRD_MEDIA` LoadFile2 protocol (which systemd-stub provides).
//! - PCR 11: systemd-stub 252 measures, for each UKI section present in the order `.linux`,
//!   `.osrel`, `.cmdline`, `.initrd`, `.splash`, `.dtb`, `.pcrpkey`: first the section name
//!   including its NUL byte, then the section contents (`VirtualSize` bytes), as `EV_IPL`.
//! - PCR 12: systemd-stub measures load options (a command line passed by a boot loader) and
//!   credentials from the ESP there; the image has neither and OVMF passes no load options for
//!   the removable-media boot path, so PCR 12 stays all zeros.
//!
//! Each claim above is checked against a real OVMF + swtpm boot by `tests/image_boot.rs`.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::pe::{self, PeError};

/// EV_EFI_ACTION string OVMF measures into PCR 4 before the first boot option.
pub const CALLING_EFI_APPLICATION: &str = "Calling EFI Application from Boot Option";

/// The section order systemd-stub 252 measures into PCR 11.
pub const STUB_252_SECTIONS: &[&str] = &[
    ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey",
];

/// One expected PCR value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The value.
    pub value: [u8; 32],
    /// Whether a mismatch only warns.
    pub warn_only: bool,
}

/// Expected PCR values by index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Measurements(pub BTreeMap<u32, Expected>);

impl Measurements {
    /// The attestation config format: `{"<idx>": {"expected": "<hex>", "warnOnly": bool}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (i, e) in &self.0 {
            m.insert(
                i.to_string(),
                serde_json::json!({"expected": hex::encode(e.value), "warnOnly": e.warn_only}),
            );
        }
        serde_json::Value::Object(m)
    }
}

/// A PCR extend.
pub fn extend(pcr: &mut [u8; 32], digest: &[u8]) {
    let mut h = Sha256::new();
    h.update(*pcr);
    h.update(digest);
    *pcr = h.finalize().into();
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// PCR 4 for booting `uki` as the first boot option.
pub fn pcr4(uki: &[u8]) -> Result<[u8; 32], PeError> {
    let mut p = [0u8; 32];
    extend(&mut p, &sha256(CALLING_EFI_APPLICATION.as_bytes()));
    extend(&mut p, &sha256(&[0u8; 4]));
    extend(&mut p, &pe::authenticode_sha256(uki)?);
    if let Some(linux) = pe::section_data(uki, ".linux")? {
        extend(&mut p, &pe::authenticode_sha256(&linux)?);
    }
    Ok(p)
}

/// PCR 11 as systemd-stub 252 computes it.
pub fn pcr11(uki: &[u8]) -> Result<[u8; 32], PeError> {
    let mut p = [0u8; 32];
    for name in STUB_252_SECTIONS {
        if let Some(data) = pe::section_data(uki, name)? {
            let mut n = name.as_bytes().to_vec();
            n.push(0);
            extend(&mut p, &sha256(&n));
            extend(&mut p, &sha256(&data));
        }
    }
    Ok(p)
}

/// PCR 9: the kernel EFI stub's measurements of its load options (the command line the
/// systemd stub passes, UTF-16LE with the terminating NUL) and of the initrd.
pub fn pcr9(uki: &[u8]) -> Result<[u8; 32], PeError> {
    let mut p = [0u8; 32];
    if let Some(cmdline) = pe::section_data(uki, ".cmdline")? {
        let text = String::from_utf8_lossy(&cmdline);
        let utf16: Vec<u8> = text
            .encode_utf16()
            .chain(std::iter::once(0))
            .flat_map(u16::to_le_bytes)
            .collect();
        extend(&mut p, &sha256(&utf16));
    }
    if let Some(initrd) = pe::section_data(uki, ".initrd")? {
        extend(&mut p, &sha256(&initrd));
    }
    Ok(p)
}

/// PCR 5 as OVMF computes it for booting from `disk` (a GPT disk as built by
/// [`crate::disk::build_disk`]): separator, `EV_EFI_GPT_EVENT` (the 92-byte primary GPT header,
/// the number of used partitions as a u64 and those entries), then the two ExitBootServices
/// actions. `None` if the disk has no readable GPT.
pub fn pcr5(disk: &[u8]) -> Option<[u8; 32]> {
    let header = disk.get(512..512 + 92)?;
    if header.get(..8)? != b"EFI PART" {
        return None;
    }
    let u32_at = |o: usize| -> Option<u32> {
        Some(u32::from_le_bytes(header.get(o..o + 4)?.try_into().ok()?))
    };
    let entries_lba = u64::from_le_bytes(header.get(72..80)?.try_into().ok()?);
    let count = u32_at(80)? as usize;
    let size = u32_at(84)? as usize;
    let start = usize::try_from(entries_lba.checked_mul(512)?).ok()?;
    let mut used = Vec::new();
    for i in 0..count.min(1024) {
        // Header fields are untrusted: offsets may overflow, which means "no readable GPT".
        let from = start.checked_add(i.checked_mul(size)?)?;
        let e = disk.get(from..from.checked_add(size)?)?;
        if e.get(..16)?.iter().any(|b| *b != 0) {
            used.push(e);
        }
    }
    let mut data = header.to_vec();
    data.extend_from_slice(&(used.len() as u64).to_le_bytes());
    for e in used {
        data.extend_from_slice(e);
    }
    let mut p = [0u8; 32];
    extend(&mut p, &sha256(&[0u8; 4]));
    extend(&mut p, &sha256(&data));
    extend(&mut p, &sha256(b"Exit Boot Services Invocation"));
    extend(&mut p, &sha256(b"Exit Boot Services Returned with Success"));
    Some(p)
}

/// Reference values of the firmware-owned PCRs (0–3, 6, 7) from a boot of the local QEMU
/// configuration (OVMF 2022.11-6+deb12u2 from Debian 12, q35, swtpm `tpm-crb`), recorded by
/// `tests/image_boot.rs`. Warn-only: they depend on the firmware build and VM configuration,
/// not on the image.
pub const REFERENCE_FIRMWARE_PCRS: &str = include_str!("../reference-pcrs.json");

/// Parses [`REFERENCE_FIRMWARE_PCRS`] into warn-only expectations.
pub fn reference_firmware() -> Measurements {
    let mut m = BTreeMap::new();
    let parsed: BTreeMap<String, String> =
        serde_json::from_str(REFERENCE_FIRMWARE_PCRS).unwrap_or_default();
    for (k, v) in parsed {
        let (Ok(idx), Ok(bytes)) = (k.parse::<u32>(), hex::decode(&v)) else {
            continue;
        };
        if let Ok(value) = <[u8; 32]>::try_from(bytes.as_slice()) {
            m.insert(
                idx,
                Expected {
                    value,
                    warn_only: true,
                },
            );
        }
    }
    Measurements(m)
}

/// Everything `measurements.json` holds for an image: the enforced PCRs 4, 9, 11, 12 from the
/// UKI, PCR 5 predicted from the disk (warn-only: firmware-owned), and the reference firmware
/// PCRs (warn-only).
pub fn predict_image(uki: &[u8], disk: &[u8]) -> Result<Measurements, PeError> {
    let mut m = reference_firmware();
    if let Some(v) = pcr5(disk) {
        m.0.insert(
            5,
            Expected {
                value: v,
                warn_only: true,
            },
        );
    }
    m.0.extend(predict(uki)?.0);
    Ok(m)
}

/// Predicts the enforced PCRs (4, 9, 11, 12) of a UKI.
pub fn predict(uki: &[u8]) -> Result<Measurements, PeError> {
    let mut m = BTreeMap::new();
    let enforced = |value| Expected {
        value,
        warn_only: false,
    };
    m.insert(4, enforced(pcr4(uki)?));
    m.insert(9, enforced(pcr9(uki)?));
    m.insert(11, enforced(pcr11(uki)?));
    m.insert(12, enforced([0u8; 32]));
    Ok(Measurements(m))
}

/// Errors from parsing a TCG event log.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventLogError {
    /// The log ended in the middle of an event.
    #[error("event log truncated at byte {0}")]
    Truncated(usize),
    /// The first event is not a `Spec ID Event03` header.
    #[error("event log does not start with a crypto-agile Spec ID Event03 header")]
    NotCryptoAgile,
    /// An event uses a digest algorithm the header did not announce.
    #[error("event at byte {offset} uses unknown digest algorithm {alg:#06x}")]
    UnknownAlgorithm {
        /// Byte offset of the event.
        offset: usize,
        /// TPM algorithm id.
        alg: u16,
    },
    /// A PCR index out of range.
    #[error("event at byte {offset} names PCR {pcr}")]
    BadPcr {
        /// Byte offset of the event.
        offset: usize,
        /// The index.
        pcr: u32,
    },
}

/// One event (SHA-256 digest only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// PCR index.
    pub pcr: u32,
    /// Event type (e.g. 0x80000003 EV_EFI_BOOT_SERVICES_APPLICATION).
    pub event_type: u32,
    /// SHA-256 digest, if the event carries one.
    pub sha256: Option<[u8; 32]>,
    /// Event data.
    pub data: Vec<u8>,
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], EventLogError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(EventLogError::Truncated(self.pos))?;
        let s = self
            .b
            .get(self.pos..end)
            .ok_or(EventLogError::Truncated(self.pos))?;
        self.pos = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, EventLogError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, EventLogError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
}

const EV_NO_ACTION: u32 = 3;
const TPM_ALG_SHA256: u16 = 0x000b;

/// Parses a crypto-agile (TCG PC Client, `Spec ID Event03`) event log. Never panics.
pub fn parse_event_log(log: &[u8]) -> Result<Vec<Event>, EventLogError> {
    let mut r = Reader { b: log, pos: 0 };
    // TCG_PCR_EVENT (SHA-1 format) header event.
    let _pcr = r.u32()?;
    let _ty = r.u32()?;
    r.take(20)?;
    let size = r.u32()? as usize;
    let spec = r.take(size)?;
    if spec.get(..16) != Some(b"Spec ID Event03\0") {
        return Err(EventLogError::NotCryptoAgile);
    }
    let mut sr = Reader { b: spec, pos: 24 };
    let n_algs = sr.u32().map_err(|_| EventLogError::NotCryptoAgile)?;
    let mut sizes = BTreeMap::new();
    for _ in 0..n_algs.min(64) {
        let alg = sr.u16().map_err(|_| EventLogError::NotCryptoAgile)?;
        let len = sr.u16().map_err(|_| EventLogError::NotCryptoAgile)?;
        sizes.insert(alg, usize::from(len));
    }
    let mut events = Vec::new();
    while r.pos < log.len() {
        let offset = r.pos;
        let pcr = r.u32()?;
        let event_type = r.u32()?;
        // Some firmware pads the log buffer with 0xFF after the last event.
        if pcr == u32::MAX && event_type == u32::MAX {
            break;
        }
        if pcr > 23 {
            return Err(EventLogError::BadPcr { offset, pcr });
        }
        let count = r.u32()?;
        let mut sha = None;
        for _ in 0..count.min(64) {
            let alg = r.u16()?;
            let len = *sizes
                .get(&alg)
                .ok_or(EventLogError::UnknownAlgorithm { offset, alg })?;
            let d = r.take(len)?;
            if alg == TPM_ALG_SHA256 {
                sha = d.try_into().ok();
            }
        }
        let size = r.u32()? as usize;
        let data = r.take(size)?.to_vec();
        events.push(Event {
            pcr,
            event_type,
            sha256: sha,
            data,
        });
    }
    Ok(events)
}

/// Replays events into SHA-256 PCR values (PCR 0 honours a StartupLocality event).
pub fn replay(events: &[Event]) -> [[u8; 32]; 24] {
    let mut pcrs = [[0u8; 32]; 24];
    for e in events {
        let Some(slot) = pcrs.get_mut(e.pcr as usize) else {
            continue;
        };
        if e.event_type == EV_NO_ACTION {
            if e.pcr == 0
                && e.data.starts_with(b"StartupLocality\0")
                && let Some(&loc) = e.data.get(16)
            {
                slot[31] = loc;
            }
            continue;
        }
        if let Some(d) = e.sha256 {
            extend(slot, &d);
        }
    }
    pcrs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_header() -> Vec<u8> {
        let mut spec = b"Spec ID Event03\0".to_vec();
        spec.extend_from_slice(&[0u8; 8]); // platform class, versions, uintn size
        spec.extend_from_slice(&1u32.to_le_bytes());
        spec.extend_from_slice(&TPM_ALG_SHA256.to_le_bytes());
        spec.extend_from_slice(&32u16.to_le_bytes());
        spec.push(0);
        let mut log = Vec::new();
        log.extend_from_slice(&0u32.to_le_bytes());
        log.extend_from_slice(&EV_NO_ACTION.to_le_bytes());
        log.extend_from_slice(&[0u8; 20]);
        log.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        log.extend_from_slice(&spec);
        log
    }

    fn event(pcr: u32, ty: u32, digest: [u8; 32], data: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&pcr.to_le_bytes());
        e.extend_from_slice(&ty.to_le_bytes());
        e.extend_from_slice(&1u32.to_le_bytes());
        e.extend_from_slice(&TPM_ALG_SHA256.to_le_bytes());
        e.extend_from_slice(&digest);
        e.extend_from_slice(&(data.len() as u32).to_le_bytes());
        e.extend_from_slice(data);
        e
    }

    #[test]
    fn replay_matches_manual_extend() {
        let mut log = spec_header();
        let d1 = sha256(b"one");
        let d2 = sha256(b"two");
        log.extend(event(4, 0x8000_0007, d1, b"x"));
        log.extend(event(4, 4, d2, &[0; 4]));
        let events = parse_event_log(&log).unwrap();
        assert_eq!(events.len(), 2);
        let pcrs = replay(&events);
        let mut want = [0u8; 32];
        extend(&mut want, &d1);
        extend(&mut want, &d2);
        assert_eq!(pcrs[4], want);
        assert_eq!(pcrs[5], [0u8; 32]);
    }

    #[test]
    fn malformed_logs_are_errors() {
        assert!(parse_event_log(&[]).is_err());
        assert_eq!(
            parse_event_log(&[0u8; 40]),
            Err(EventLogError::NotCryptoAgile)
        );
        assert_eq!(
            parse_event_log(&[0u8; 30]),
            Err(EventLogError::Truncated(28))
        );
        let mut log = spec_header();
        log.extend(event(4, 1, [0; 32], b"abc"));
        log.truncate(log.len() - 1);
        assert!(matches!(
            parse_event_log(&log),
            Err(EventLogError::Truncated(_))
        ));
        let mut log = spec_header();
        log.extend(event(99, 1, [0; 32], b""));
        assert!(matches!(
            parse_event_log(&log),
            Err(EventLogError::BadPcr { pcr: 99, .. })
        ));
    }

    #[test]
    fn pcr11_changes_with_one_cmdline_byte() {
        let stub = crate::pe::tests_support::tiny_pe();
        let a = pe::add_sections(&stub, &[(".cmdline", b"console=ttyS0")]).unwrap();
        let b = pe::add_sections(&stub, &[(".cmdline", b"console=ttyS1")]).unwrap();
        assert_ne!(pcr11(&a).unwrap(), pcr11(&b).unwrap());
        // Expected value by hand: name with NUL, then contents.
        let mut want = [0u8; 32];
        extend(&mut want, &sha256(b".cmdline\0"));
        extend(&mut want, &sha256(b"console=ttyS0"));
        assert_eq!(pcr11(&a).unwrap(), want);
    }

    /// Fuzzer find (seed fuzz/seeds/pe/gpt-offset-overflow): GPT header fields whose entry offsets overflow `usize`.
    #[test]
    fn pcr5_with_overflowing_gpt_fields_is_none() {
        let mut disk = vec![0u8; 2048];
        disk[512..520].copy_from_slice(b"EFI PART");
        let hdr = 512;
        disk[hdr + 72..hdr + 80].copy_from_slice(&(u64::MAX / 512).to_le_bytes());
        disk[hdr + 80..hdr + 84].copy_from_slice(&4u32.to_le_bytes());
        disk[hdr + 84..hdr + 88].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(pcr5(&disk), None);
        // The fuzzer's own input, kept as a seed of the `pe` target too.
        let found = include_bytes!("../fuzz/seeds/pe/gpt-offset-overflow");
        assert_eq!(pcr5(found), None);
    }
}
