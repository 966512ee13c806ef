//! A reproducible GPT disk with one EFI system partition (FAT) holding the UKI at the default
//! removable-media boot path `\EFI\BOOT\BOOTX64.EFI`.
//!
//! GUIDs are derived from the UKI's hash, FAT timestamps are the FAT epoch (fatfs without its
//! clock feature), and the volume id is derived from the content, so equal inputs give equal bytes.

use std::io::{Cursor, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

const SECTOR: u64 = 512;
const MIB: u64 = 1024 * 1024;
/// GPT partition type of an EFI system partition (C12A7328-F81F-11D2-BA4B-00A0C93EC93B).
const ESP_TYPE: [u8; 16] = guid_bytes(
    0xC12A_7328,
    0xF81F,
    0x11D2,
    [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
);

/// Errors from building the disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    /// Formatting or writing the FAT file system failed.
    #[error("writing the EFI system partition: {0}")]
    Fat(#[from] std::io::Error),
}

const fn guid_bytes(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let a = d1.to_le_bytes();
    let b = d2.to_le_bytes();
    let c = d3.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4], d4[5],
        d4[6], d4[7],
    ]
}

/// A GUID (in on-disk mixed-endian byte order) derived from a hash and a label, with the
/// RFC 4122 variant bits and version 4 set so tools treat it as a normal random-looking GUID.
pub fn derived_guid(seed: &[u8], label: &str) -> [u8; 16] {
    let d = Sha256::new()
        .chain_update(seed)
        .chain_update(label.as_bytes())
        .finalize();
    let mut g = [0u8; 16];
    g.copy_from_slice(d.get(..16).unwrap_or(&[0u8; 16]));
    g[7] = (g[7] & 0x0f) | 0x40; // version 4 (in the little-endian time_hi field)
    g[8] = (g[8] & 0x3f) | 0x80; // RFC 4122 variant
    g
}

/// Formats a GUID in on-disk byte order as the usual string.
pub fn guid_string(g: &[u8; 16]) -> String {
    format!(
        "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        g[3],
        g[2],
        g[1],
        g[0],
        g[5],
        g[4],
        g[7],
        g[6],
        g[8],
        g[9],
        g[10],
        g[11],
        g[12],
        g[13],
        g[14],
        g[15]
    )
}

fn fat_image(uki: &[u8], size: u64, volume_id: u32) -> Result<Vec<u8>, DiskError> {
    let mut buf = Cursor::new(vec![0u8; usize::try_from(size).unwrap_or(usize::MAX)]);
    fatfs::format_volume(
        &mut buf,
        fatfs::FormatVolumeOptions::new()
            .volume_id(volume_id)
            .volume_label(*b"CONSTELLATI")
            .fat_type(fatfs::FatType::Fat32),
    )?;
    buf.seek(SeekFrom::Start(0))?;
    {
        let fs = fatfs::FileSystem::new(&mut buf, fatfs::FsOptions::new())?;
        {
            let root = fs.root_dir();
            let efi = root.create_dir("EFI")?;
            let boot = efi.create_dir("BOOT")?;
            let mut f = boot.create_file("BOOTX64.EFI")?;
            f.truncate()?;
            f.write_all(uki)?;
            f.flush()?;
        }
        fs.unmount()?;
    }
    Ok(buf.into_inner())
}

/// The disk layout that was produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DiskInfo {
    /// Disk GUID.
    pub disk_guid: String,
    /// ESP partition GUID.
    pub esp_guid: String,
    /// ESP size in bytes.
    pub esp_size: u64,
    /// Disk size in bytes.
    pub disk_size: u64,
}

/// Builds the whole disk image in memory.
pub fn build_disk(uki: &[u8]) -> Result<(Vec<u8>, DiskInfo), DiskError> {
    let seed: [u8; 32] = Sha256::digest(uki).into();
    // Room for the UKI plus FAT overhead; FAT32 needs at least ~33 MiB of clusters.
    let esp_size = (uki.len() as u64 + 16 * MIB).div_ceil(MIB).max(64) * MIB;
    let first_lba = MIB / SECTOR;
    let esp_lbas = esp_size / SECTOR;
    let disk_size = MIB + esp_size + MIB;
    let total_lbas = disk_size / SECTOR;
    let last_usable = total_lbas - 34;
    let volume_id = u32::from_le_bytes([seed[0], seed[1], seed[2], seed[3]]);
    let fat = fat_image(uki, esp_size, volume_id)?;

    let disk_guid = derived_guid(&seed, "disk");
    let esp_guid = derived_guid(&seed, "esp");

    let mut disk = vec![0u8; usize::try_from(disk_size).unwrap_or(usize::MAX)];
    // Protective MBR.
    let mbr = &mut disk[..512];
    mbr[446 + 4] = 0xEE;
    mbr[446 + 1..446 + 4].copy_from_slice(&[0, 2, 0]);
    mbr[446 + 5..446 + 8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    mbr[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    let mbr_len = u32::try_from(total_lbas - 1).unwrap_or(u32::MAX);
    mbr[446 + 12..446 + 16].copy_from_slice(&mbr_len.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;

    // Partition entry array: 128 entries of 128 bytes; only the first is used.
    let mut entries = vec![0u8; 128 * 128];
    entries[..16].copy_from_slice(&ESP_TYPE);
    entries[16..32].copy_from_slice(&esp_guid);
    entries[32..40].copy_from_slice(&first_lba.to_le_bytes());
    entries[40..48].copy_from_slice(&(first_lba + esp_lbas - 1).to_le_bytes());
    for (i, c) in "EFI System Partition".encode_utf16().enumerate() {
        entries[56 + 2 * i..58 + 2 * i].copy_from_slice(&c.to_le_bytes());
    }
    let entries_crc = crc32fast::hash(&entries);

    let header = |my_lba: u64, alt_lba: u64, entries_lba: u64| {
        let mut h = vec![0u8; 92];
        h[..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alt_lba.to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let at = |lba: u64| usize::try_from(lba * SECTOR).unwrap_or(usize::MAX);
    let primary = header(1, total_lbas - 1, 2);
    let backup = header(total_lbas - 1, 1, total_lbas - 33);
    disk[at(1)..at(1) + 92].copy_from_slice(&primary);
    disk[at(2)..at(2) + entries.len()].copy_from_slice(&entries);
    disk[at(total_lbas - 33)..at(total_lbas - 33) + entries.len()].copy_from_slice(&entries);
    disk[at(total_lbas - 1)..at(total_lbas - 1) + 92].copy_from_slice(&backup);
    disk[at(first_lba)..at(first_lba) + fat.len()].copy_from_slice(&fat);

    Ok((
        disk,
        DiskInfo {
            disk_guid: guid_string(&disk_guid),
            esp_guid: guid_string(&esp_guid),
            esp_size,
            disk_size,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esp_type_guid_string() {
        assert_eq!(
            guid_string(&ESP_TYPE),
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
        );
    }

    #[test]
    fn disk_is_deterministic_and_holds_the_uki() {
        let uki = vec![0x5a; 300_000];
        let (a, info) = build_disk(&uki).unwrap();
        let (b, _) = build_disk(&uki).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len() as u64, info.disk_size);
        assert_eq!(&a[512..520], b"EFI PART");
        // Read the file back through fatfs.
        let start = usize::try_from(MIB).unwrap();
        let mut part = Cursor::new(a[start..start + info.esp_size as usize].to_vec());
        let fs = fatfs::FileSystem::new(&mut part, fatfs::FsOptions::new()).unwrap();
        let mut f = fs.root_dir().open_file("EFI/BOOT/BOOTX64.EFI").unwrap();
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut back).unwrap();
        assert_eq!(back, uki);
        let (c, _) = build_disk(&[1u8; 10]).unwrap();
        assert_ne!(&a[512..1024], &c[512..1024], "GUIDs depend on content");
    }
}
