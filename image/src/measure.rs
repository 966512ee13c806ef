//! Measurement precalculation for the node image.
//!
//! The prediction is an event log: the events firmware and stubs will log for this image,
//! written with [`EventLogBuilder`] and replayed by the validators' own parser
//! ([`constellation_attest::eventlog`]), so predicted values and the validators' replay of a
//! node's real log cannot drift apart. Event data is descriptive only (registers take digests).
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

use constellation_attest::eventlog::{
    EV_EFI_ACTION, EV_EFI_BOOT_SERVICES_APPLICATION, EV_EFI_GPT_EVENT, EV_EVENT_TAG, EV_IPL,
    EV_SEPARATOR, EventLog, EventLogBuilder, EventLogError,
};
pub use constellation_attest::measurements::{Measurement, Measurements};
use sha2::{Digest, Sha256};

use crate::pe::{self, PeError};

/// EV_EFI_ACTION string OVMF measures into PCR 4 before the first boot option.
pub const CALLING_EFI_APPLICATION: &str = "Calling EFI Application from Boot Option";

/// The section order systemd-stub 252 measures into PCR 11.
pub const STUB_252_SECTIONS: &[&str] = &[
    ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey",
];

/// Why measurements cannot be predicted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeasureError {
    /// The UKI (or its kernel) is not a usable PE image.
    #[error(transparent)]
    Pe(#[from] PeError),
    /// The predicted event log does not replay (a defect of the prediction, not of the input).
    #[error("predicted event log does not replay: {0}")]
    EventLog(#[from] EventLogError),
}

fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// Appends PCR 4's events for booting `uki` as the first boot option.
pub fn pcr4_events(uki: &[u8], log: &mut EventLogBuilder) -> Result<(), PeError> {
    log.measure(4, EV_EFI_ACTION, CALLING_EFI_APPLICATION.as_bytes());
    log.measure(4, EV_SEPARATOR, &[0u8; 4]);
    log.event(
        4,
        EV_EFI_BOOT_SERVICES_APPLICATION,
        pe::authenticode_sha256(uki)?,
        b"UKI",
    );
    if let Some(linux) = pe::section_data(uki, ".linux")? {
        log.event(
            4,
            EV_EFI_BOOT_SERVICES_APPLICATION,
            pe::authenticode_sha256(&linux)?,
            b".linux",
        );
    }
    Ok(())
}

/// Appends PCR 9's events: the kernel EFI stub's measurements of its load options (the command
/// line the systemd stub passes, UTF-16LE with the terminating NUL) and of the initrd.
pub fn pcr9_events(uki: &[u8], log: &mut EventLogBuilder) -> Result<(), PeError> {
    if let Some(cmdline) = pe::section_data(uki, ".cmdline")? {
        let text = String::from_utf8_lossy(&cmdline);
        let utf16: Vec<u8> = text
            .encode_utf16()
            .chain(std::iter::once(0))
            .flat_map(u16::to_le_bytes)
            .collect();
        log.measure(9, EV_EVENT_TAG, &utf16);
    }
    if let Some(initrd) = pe::section_data(uki, ".initrd")? {
        log.event(9, EV_EVENT_TAG, sha256(&initrd), b"Linux initrd");
    }
    Ok(())
}

/// Appends PCR 11's events as systemd-stub 252 logs them: per present section, its name
/// with NUL, then its contents.
pub fn pcr11_events(uki: &[u8], log: &mut EventLogBuilder) -> Result<(), PeError> {
    for name in STUB_252_SECTIONS {
        if let Some(data) = pe::section_data(uki, name)? {
            let mut n = name.as_bytes().to_vec();
            n.push(0);
            log.measure(11, EV_IPL, &n);
            log.event(11, EV_IPL, sha256(&data), name.as_bytes());
        }
    }
    Ok(())
}

/// Appends PCR 5's events as OVMF logs them for booting from `disk` (a GPT disk as built by
/// [`crate::disk::build_disk`]): separator, `EV_EFI_GPT_EVENT` (the 92-byte primary GPT
/// header, the number of used partitions as a u64 and those entries), then the two
/// ExitBootServices actions. `None` (nothing appended) if the disk has no readable GPT.
pub fn pcr5_events(disk: &[u8], log: &mut EventLogBuilder) -> Option<()> {
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
    log.measure(5, EV_SEPARATOR, &[0u8; 4]);
    log.measure(5, EV_EFI_GPT_EVENT, &data);
    log.measure(5, EV_EFI_ACTION, b"Exit Boot Services Invocation");
    log.measure(
        5,
        EV_EFI_ACTION,
        b"Exit Boot Services Returned with Success",
    );
    Some(())
}

/// The predicted event log of the image-dependent PCRs (4, 5 when `disk` has a GPT, 9, 11):
/// what the firmware and stubs log when booting `uki` from `disk`.
pub fn predicted_event_log(uki: &[u8], disk: Option<&[u8]>) -> Result<Vec<u8>, PeError> {
    let mut log = EventLogBuilder::new();
    pcr4_events(uki, &mut log)?;
    if let Some(d) = disk {
        pcr5_events(d, &mut log);
    }
    pcr9_events(uki, &mut log)?;
    pcr11_events(uki, &mut log)?;
    Ok(log.build())
}

/// Replays `log` with the validators' parser: SHA-256 values of the PCRs it extends.
fn replay(log: &EventLogBuilder) -> Result<BTreeMap<u32, [u8; 32]>, EventLogError> {
    EventLog::parse(&log.build())?.replay_sha256()
}

/// One PCR of a log with events for that PCR only (zero when it has none).
fn replay_one(
    pcr: u32,
    add: impl FnOnce(&mut EventLogBuilder) -> Result<(), PeError>,
) -> Result<[u8; 32], MeasureError> {
    let mut log = EventLogBuilder::new();
    add(&mut log)?;
    Ok(replay(&log)?.get(&pcr).copied().unwrap_or([0u8; 32]))
}

/// PCR 4 for booting `uki` as the first boot option.
pub fn pcr4(uki: &[u8]) -> Result<[u8; 32], MeasureError> {
    replay_one(4, |l| pcr4_events(uki, l))
}

/// PCR 9: the kernel EFI stub's measurements (see [`pcr9_events`]).
pub fn pcr9(uki: &[u8]) -> Result<[u8; 32], MeasureError> {
    replay_one(9, |l| pcr9_events(uki, l))
}

/// PCR 11 as systemd-stub 252 computes it.
pub fn pcr11(uki: &[u8]) -> Result<[u8; 32], MeasureError> {
    replay_one(11, |l| pcr11_events(uki, l))
}

/// PCR 5 as OVMF computes it for booting from `disk` (see [`pcr5_events`]); `None` if the
/// disk has no readable GPT.
pub fn pcr5(disk: &[u8]) -> Result<Option<[u8; 32]>, MeasureError> {
    let mut log = EventLogBuilder::new();
    if pcr5_events(disk, &mut log).is_none() {
        return Ok(None);
    }
    Ok(replay(&log)?.get(&5).copied())
}

/// Reference values of the firmware-owned PCRs (0–3, 6, 7) from a boot of the local QEMU
/// configuration (OVMF 2022.11-6+deb12u2 from Debian 12, q35, swtpm `tpm-crb`), recorded by
/// `tests/image_boot.rs`. Warn-only: they depend on the firmware build and VM configuration,
/// not on the image.
pub const REFERENCE_FIRMWARE_PCRS: &str = include_str!("../reference-pcrs.json");

/// Parses [`REFERENCE_FIRMWARE_PCRS`] into warn-only expectations.
pub fn reference_firmware() -> Measurements {
    let mut m = Measurements::new();
    let parsed: BTreeMap<String, String> =
        serde_json::from_str(REFERENCE_FIRMWARE_PCRS).unwrap_or_default();
    for (k, v) in parsed {
        let (Ok(idx), Ok(bytes)) = (k.parse::<u32>(), hex::decode(&v)) else {
            continue;
        };
        if let Ok(value) = <[u8; 32]>::try_from(bytes.as_slice()) {
            m.insert(idx, Measurement::pcr(value, true));
        }
    }
    m
}

/// Everything `measurements.json` holds for an image: the enforced PCRs 4, 9, 11, 12 from the
/// UKI, PCR 5 predicted from the disk (warn-only: firmware-owned), and the reference firmware
/// PCRs (warn-only).
pub fn predict_image(uki: &[u8], disk: &[u8]) -> Result<Measurements, MeasureError> {
    let mut m = reference_firmware();
    if let Some(v) = pcr5(disk)? {
        m.insert(5, Measurement::pcr(v, true));
    }
    m.0.extend(predict(uki)?.0);
    Ok(m)
}

/// Predicts the enforced PCRs (4, 9, 11, 12) of a UKI by replaying its predicted event log.
pub fn predict(uki: &[u8]) -> Result<Measurements, MeasureError> {
    let mut log = EventLogBuilder::new();
    pcr4_events(uki, &mut log)?;
    pcr9_events(uki, &mut log)?;
    pcr11_events(uki, &mut log)?;
    let replayed = replay(&log)?;
    let mut m = Measurements::new();
    // PCR 12 has no events: systemd-stub measures neither load options nor credentials here.
    for pcr in [4, 9, 11, 12] {
        let value = replayed.get(&pcr).copied().unwrap_or([0u8; 32]);
        m.insert(pcr, Measurement::pcr(value, false));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use constellation_attest::measurements::extend_sha256;

    fn extend(pcr: &mut [u8; 32], digest: &[u8; 32]) {
        *pcr = extend_sha256(pcr, digest);
    }

    fn uki() -> Vec<u8> {
        let stub = crate::pe::tests_support::tiny_pe();
        pe::add_sections(
            &stub,
            &[
                (".osrel", b"ID=test"),
                (".cmdline", b"console=ttyS0"),
                (".initrd", b"initrd bytes"),
            ],
        )
        .unwrap()
    }

    /// The prediction is a log: its bytes parse with the validators' parser and replay to the
    /// predicted values, which equal the hand-computed extends of each documented event.
    #[test]
    fn predicted_log_round_trips_through_the_validators_parser() {
        let uki = uki();
        let (disk, _) = crate::disk::build_disk(&uki).unwrap();
        let bytes = predicted_event_log(&uki, Some(&disk)).unwrap();
        let log = EventLog::parse(&bytes).unwrap();
        let replayed = log.replay_sha256().unwrap();
        let predicted = predict_image(&uki, &disk).unwrap();
        for pcr in [4, 5, 9, 11] {
            assert_eq!(
                predicted.0[&pcr].expected,
                replayed[&pcr].to_vec(),
                "PCR {pcr}"
            );
        }
        assert!(!predicted.0[&4].warn_only && predicted.0[&5].warn_only);
        assert_eq!(predicted.0[&12].expected, vec![0u8; 32]);
        // PCR 9 by hand: UTF-16LE command line with NUL, then the initrd.
        let mut want = [0u8; 32];
        let utf16: Vec<u8> = "console=ttyS0\0"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        extend(&mut want, &sha256(&utf16));
        extend(&mut want, &sha256(b"initrd bytes"));
        assert_eq!(replayed[&9], want);
        // PCR 4 by hand: action, separator, the UKI's Authenticode hash (no .linux section).
        let mut want = [0u8; 32];
        extend(&mut want, &sha256(CALLING_EFI_APPLICATION.as_bytes()));
        extend(&mut want, &sha256(&[0u8; 4]));
        extend(&mut want, &pe::authenticode_sha256(&uki).unwrap());
        assert_eq!(replayed[&4], want);
        // measurements.json is attest's format and reads back as the same measurements.
        let json = serde_json::to_string(&predicted).unwrap();
        assert_eq!(Measurements::from_json(&json).unwrap(), predicted);
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
        assert_eq!(pcr5(&disk).unwrap(), None);
        // The fuzzer's own input, kept as a seed of the `pe` target too.
        let found = include_bytes!("../fuzz/seeds/pe/gpt-offset-overflow");
        assert_eq!(pcr5(found).unwrap(), None);
    }
}
