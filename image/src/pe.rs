//! Minimal PE32+ handling: add sections to the systemd EFI stub to form a Unified Kernel
//! Image, and compute the Authenticode SHA-256 that UEFI firmware measures into PCR 4.
//!
//! Written by hand instead of calling objcopy because the layout must be deterministic and
//! documented (objcopy's placement depends on the binutils version and needs explicit VMAs),
//! and because measurement precalculation needs the exact same PE parsing anyway. The `object`
//! crate reads PE but does not write it.

use sha2::{Digest, Sha256};

/// Errors from parsing or extending a PE image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeError {
    /// The bytes are not a PE32+ image of the expected shape.
    #[error("not a usable PE32+ image: {0}")]
    Malformed(&'static str),
    /// There is no room for more section headers before the first section's data.
    #[error("no room for {0} more section headers in the stub's header area")]
    NoHeaderRoom(usize),
    /// The stub is Authenticode-signed; adding sections would invalidate the signature.
    #[error("the stub carries an Authenticode signature; use the unsigned stub")]
    Signed,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, PeError> {
    b.get(off..off + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
        .ok_or(PeError::Malformed("truncated header"))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, PeError> {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(PeError::Malformed("truncated header"))
}

fn put_u16(b: &mut [u8], off: usize, v: u16) -> Result<(), PeError> {
    b.get_mut(off..off + 2)
        .ok_or(PeError::Malformed("truncated header"))?
        .copy_from_slice(&v.to_le_bytes());
    Ok(())
}

fn put_u32(b: &mut [u8], off: usize, v: u32) -> Result<(), PeError> {
    b.get_mut(off..off + 4)
        .ok_or(PeError::Malformed("truncated header"))?
        .copy_from_slice(&v.to_le_bytes());
    Ok(())
}

/// A section header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Name (up to 8 bytes, NUL-padded in the file).
    pub name: String,
    /// Size in memory.
    pub virtual_size: u32,
    /// RVA.
    pub virtual_address: u32,
    /// Size in the file.
    pub raw_size: u32,
    /// File offset.
    pub raw_offset: u32,
}

/// Parsed PE32+ headers (offsets into the file).
#[derive(Debug, Clone)]
pub struct Headers {
    /// Offset of the optional header.
    opt: usize,
    /// Offset of the first section header.
    sections_off: usize,
    /// NumberOfSections.
    pub n_sections: usize,
    /// SectionAlignment.
    pub section_alignment: u32,
    /// FileAlignment.
    pub file_alignment: u32,
    /// SizeOfHeaders.
    pub size_of_headers: u32,
    /// The section headers.
    pub sections: Vec<Section>,
    /// Certificate table (offset, size) from data directory 4.
    pub cert_table: (u32, u32),
}

const PE32PLUS_MAGIC: u16 = 0x20b;
const OPT_CHECKSUM: usize = 64;
const OPT_SIZE_OF_IMAGE: usize = 56;
const OPT_NUM_DIRS: usize = 108;
const OPT_DIRS: usize = 112;
const CERT_DIR_INDEX: usize = 4;
const SECTION_HEADER_LEN: usize = 40;
/// Largest zero-filled tail [`section_data`] materialises beyond a section's file data.
const MAX_ZERO_FILL: usize = 1 << 20;

/// Parses the headers of a PE32+ image. Never panics on malformed input.
pub fn parse(b: &[u8]) -> Result<Headers, PeError> {
    if b.get(..2) != Some(b"MZ") {
        return Err(PeError::Malformed("no MZ signature"));
    }
    let pe = u32_at(b, 0x3c)? as usize;
    if b.get(pe..pe + 4) != Some(b"PE\0\0") {
        return Err(PeError::Malformed("no PE signature"));
    }
    let coff = pe + 4;
    let n_sections = u16_at(b, coff + 2)? as usize;
    let opt_size = u16_at(b, coff + 16)? as usize;
    let opt = coff + 20;
    if u16_at(b, opt)? != PE32PLUS_MAGIC {
        return Err(PeError::Malformed("not PE32+"));
    }
    let num_dirs = u32_at(b, opt + OPT_NUM_DIRS)? as usize;
    let cert_table = if num_dirs > CERT_DIR_INDEX {
        let d = opt + OPT_DIRS + CERT_DIR_INDEX * 8;
        (u32_at(b, d)?, u32_at(b, d + 4)?)
    } else {
        (0, 0)
    };
    let sections_off = opt + opt_size;
    let mut sections = Vec::with_capacity(n_sections.min(96));
    for i in 0..n_sections {
        let h = sections_off + i * SECTION_HEADER_LEN;
        let raw_name = b
            .get(h..h + 8)
            .ok_or(PeError::Malformed("truncated section table"))?;
        let name = String::from_utf8_lossy(raw_name)
            .trim_end_matches('\0')
            .to_owned();
        sections.push(Section {
            name,
            virtual_size: u32_at(b, h + 8)?,
            virtual_address: u32_at(b, h + 12)?,
            raw_size: u32_at(b, h + 16)?,
            raw_offset: u32_at(b, h + 20)?,
        });
    }
    Ok(Headers {
        opt,
        sections_off,
        n_sections,
        section_alignment: u32_at(b, opt + 32)?,
        file_alignment: u32_at(b, opt + 36)?,
        size_of_headers: u32_at(b, opt + 60)?,
        sections,
        cert_table,
    })
}

fn align(v: u64, a: u64) -> u64 {
    if a == 0 { v } else { v.div_ceil(a) * a }
}

/// Appends sections (name, contents) to a PE image, laid out after the last existing section
/// at the image's section alignment, in the given order. Returns the new image. The result
/// only depends on the inputs, so it is reproducible.
pub fn add_sections(stub: &[u8], new: &[(&str, &[u8])]) -> Result<Vec<u8>, PeError> {
    let h = parse(stub)?;
    if h.cert_table.1 != 0 {
        return Err(PeError::Signed);
    }
    // The PE format allows FileAlignment 512..=64 KiB and SectionAlignment ≥ FileAlignment,
    // both powers of two; anything else would make the padding below arbitrary (up to 4 GiB).
    let fa_ok = h.file_alignment.is_power_of_two() && (512..=0x1_0000).contains(&h.file_alignment);
    if !fa_ok {
        return Err(PeError::Malformed(
            "FileAlignment is not a power of two between 512 and 64 KiB",
        ));
    }
    if !h.section_alignment.is_power_of_two() || h.section_alignment < h.file_alignment {
        return Err(PeError::Malformed(
            "SectionAlignment is not a power of two at least FileAlignment",
        ));
    }
    let first_raw = h
        .sections
        .iter()
        .filter(|s| s.raw_size > 0)
        .map(|s| s.raw_offset as usize)
        .min()
        .unwrap_or(h.size_of_headers as usize);
    let table_end = h.sections_off + (h.n_sections + new.len()) * SECTION_HEADER_LEN;
    if table_end > first_raw.min(h.size_of_headers as usize) {
        return Err(PeError::NoHeaderRoom(new.len()));
    }
    let mut out = stub.to_vec();
    // Drop anything after the last section's raw data (e.g. a COFF symbol table) is not needed:
    // Debian's stub has none; we keep the bytes so Authenticode covers them as trailing data.
    let mut file_end = align(out.len() as u64, u64::from(h.file_alignment));
    let mut va_end = h
        .sections
        .iter()
        .map(|s| u64::from(s.virtual_address) + u64::from(s.virtual_size.max(s.raw_size)))
        .max()
        .ok_or(PeError::Malformed("no sections"))?;
    let sa = u64::from(h.section_alignment);
    let fa = u64::from(h.file_alignment);
    for (i, (name, data)) in new.iter().enumerate() {
        if name.len() > 8 {
            return Err(PeError::Malformed("section name longer than 8 bytes"));
        }
        let va = align(va_end, sa);
        let raw_size = align(data.len() as u64, fa);
        let too_big = |_| PeError::Malformed("image larger than 4 GiB");
        out.resize(
            usize::try_from(file_end).map_err(|_| PeError::Malformed("too big"))?,
            0,
        );
        out.extend_from_slice(data);
        out.resize(
            usize::try_from(file_end + raw_size).map_err(|_| PeError::Malformed("too big"))?,
            0,
        );
        let hdr = h.sections_off + (h.n_sections + i) * SECTION_HEADER_LEN;
        let mut name8 = [0u8; 8];
        name8
            .get_mut(..name.len())
            .ok_or(PeError::Malformed("section name"))?
            .copy_from_slice(name.as_bytes());
        out.get_mut(hdr..hdr + 8)
            .ok_or(PeError::Malformed("section table"))?
            .copy_from_slice(&name8);
        put_u32(
            &mut out,
            hdr + 8,
            u32::try_from(data.len()).map_err(too_big)?,
        )?;
        put_u32(&mut out, hdr + 12, u32::try_from(va).map_err(too_big)?)?;
        put_u32(
            &mut out,
            hdr + 16,
            u32::try_from(raw_size).map_err(too_big)?,
        )?;
        put_u32(
            &mut out,
            hdr + 20,
            u32::try_from(file_end).map_err(too_big)?,
        )?;
        for off in [24, 28] {
            put_u32(&mut out, hdr + off, 0)?;
        }
        put_u32(&mut out, hdr + 32, 0)?;
        // IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ
        put_u32(&mut out, hdr + 36, 0x4000_0040)?;
        file_end += raw_size;
        va_end = va + data.len() as u64;
    }
    let coff = h.opt - 20;
    put_u16(
        &mut out,
        coff + 2,
        u16::try_from(h.n_sections + new.len())
            .map_err(|_| PeError::Malformed("too many sections"))?,
    )?;
    let size_of_image =
        u32::try_from(align(va_end, sa)).map_err(|_| PeError::Malformed("too big"))?;
    put_u32(&mut out, h.opt + OPT_SIZE_OF_IMAGE, size_of_image)?;
    // The checksum is not checked by UEFI; zero keeps it independent of tooling.
    put_u32(&mut out, h.opt + OPT_CHECKSUM, 0)?;
    Ok(out)
}

/// Returns the contents of a named section (its first `virtual_size` bytes, zero-extended as the
/// loader would map it).
pub fn section_data(image: &[u8], name: &str) -> Result<Option<Vec<u8>>, PeError> {
    let h = parse(image)?;
    let Some(s) = h.sections.iter().find(|s| s.name == name) else {
        return Ok(None);
    };
    let start = s.raw_offset as usize;
    let raw = image
        .get(start..start + s.raw_size as usize)
        .ok_or(PeError::Malformed("section data outside the file"))?;
    let size = s.virtual_size as usize;
    // The header is untrusted: a 4 GiB VirtualSize must not become a 4 GiB allocation. The
    // sections a UKI measures carry their data in the file, so a large zero-filled tail only
    // occurs in crafted images.
    if size.saturating_sub(raw.len()) > MAX_ZERO_FILL {
        return Err(PeError::Malformed(
            "section is larger in memory than in the file by more than 1 MiB",
        ));
    }
    let mut v = raw.get(..size.min(raw.len())).unwrap_or(raw).to_vec();
    v.resize(size, 0);
    Ok(Some(v))
}

/// The Authenticode SHA-256 of a PE image, as EDK2 computes it for PCR 4
/// (`EV_EFI_BOOT_SERVICES_APPLICATION`): headers without the checksum and certificate
/// directory entry, sections in file order, then trailing data before the certificate table.
pub fn authenticode_sha256(image: &[u8]) -> Result<[u8; 32], PeError> {
    let h = parse(image)?;
    let bad = PeError::Malformed("header region outside the file");
    let checksum = h.opt + OPT_CHECKSUM;
    let cert_dir = h.opt + OPT_DIRS + CERT_DIR_INDEX * 8;
    let soh = h.size_of_headers as usize;
    let mut sha = Sha256::new();
    sha.update(
        image
            .get(..checksum)
            .ok_or(PeError::Malformed("checksum"))?,
    );
    if cert_dir + 8 <= soh {
        sha.update(
            image
                .get(checksum + 4..cert_dir)
                .ok_or(PeError::Malformed("dirs"))?,
        );
        sha.update(image.get(cert_dir + 8..soh).ok_or(bad)?);
    } else {
        sha.update(image.get(checksum + 4..soh).ok_or(bad)?);
    }
    let mut sections: Vec<&Section> = h.sections.iter().filter(|s| s.raw_size > 0).collect();
    sections.sort_by_key(|s| s.raw_offset);
    let mut hashed = soh;
    for s in sections {
        let start = s.raw_offset as usize;
        let data = image
            .get(start..start + s.raw_size as usize)
            .ok_or(PeError::Malformed("section data outside the file"))?;
        sha.update(data);
        hashed += data.len();
    }
    let cert_size = h.cert_table.1 as usize;
    let end = image.len().saturating_sub(cert_size);
    if end > hashed {
        sha.update(
            image
                .get(hashed..end)
                .ok_or(PeError::Malformed("trailing data"))?,
        );
    }
    Ok(sha.finalize().into())
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// A tiny synthetic PE32+ with one section.
    pub(crate) fn tiny_pe() -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[0] = b'M';
        b[1] = b'Z';
        b[0x3c] = 0x80;
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        b[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
        b[coff + 2..coff + 4].copy_from_slice(&1u16.to_le_bytes());
        b[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
        let opt = coff + 20;
        b[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        b[opt + 32..opt + 36].copy_from_slice(&0x1000u32.to_le_bytes());
        b[opt + 36..opt + 40].copy_from_slice(&0x200u32.to_le_bytes());
        b[opt + 56..opt + 60].copy_from_slice(&0x2000u32.to_le_bytes());
        b[opt + 60..opt + 64].copy_from_slice(&0x400u32.to_le_bytes());
        b[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        let sh = opt + 240;
        b[sh..sh + 5].copy_from_slice(b".text");
        b[sh + 8..sh + 12].copy_from_slice(&0x10u32.to_le_bytes());
        b[sh + 12..sh + 16].copy_from_slice(&0x1000u32.to_le_bytes());
        b[sh + 16..sh + 20].copy_from_slice(&0x200u32.to_le_bytes());
        b[sh + 20..sh + 24].copy_from_slice(&0x400u32.to_le_bytes());
        b.resize(0x600, 0xcc);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::tiny_pe;
    use super::*;

    #[test]
    fn add_and_read_back_sections() {
        let stub = tiny_pe();
        let out = add_sections(&stub, &[(".osrel", b"ID=x\n"), (".linux", &[7u8; 5000])]).unwrap();
        let h = parse(&out).unwrap();
        assert_eq!(h.sections.len(), 3);
        assert_eq!(h.sections[1].name, ".osrel");
        assert_eq!(h.sections[1].virtual_address, 0x2000);
        assert_eq!(h.sections[2].virtual_address, 0x3000);
        assert_eq!(section_data(&out, ".osrel").unwrap().unwrap(), b"ID=x\n");
        assert_eq!(
            section_data(&out, ".linux").unwrap().unwrap(),
            vec![7u8; 5000]
        );
        assert!(section_data(&out, ".initrd").unwrap().is_none());
        // Deterministic, and the hash covers the new contents.
        let again =
            add_sections(&stub, &[(".osrel", b"ID=x\n"), (".linux", &[7u8; 5000])]).unwrap();
        assert_eq!(out, again);
        let other =
            add_sections(&stub, &[(".osrel", b"ID=y\n"), (".linux", &[7u8; 5000])]).unwrap();
        assert_ne!(
            authenticode_sha256(&out).unwrap(),
            authenticode_sha256(&other).unwrap()
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for b in [&b""[..], b"MZ", &[0u8; 64][..]] {
            assert!(parse(b).is_err());
            assert!(authenticode_sha256(b).is_err());
        }
        let mut t = tiny_pe();
        t.truncate(0x90);
        assert!(parse(&t).is_err());
    }

    #[test]
    fn huge_virtual_size_is_refused_not_allocated() {
        let mut t = tiny_pe();
        let sh = 0x84 + 20 + 240;
        t[sh + 8..sh + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            section_data(&t, ".text"),
            Err(PeError::Malformed(m)) if m.contains("larger in memory")
        ));
        // A small zero-filled tail is still mapped as the loader would.
        t[sh + 8..sh + 12].copy_from_slice(&0x300u32.to_le_bytes());
        let v = section_data(&t, ".text").unwrap().unwrap();
        assert_eq!(v.len(), 0x300);
        assert!(v[0x200..].iter().all(|b| *b == 0));
    }

    #[test]
    fn odd_alignments_are_refused_before_padding() {
        let opt = 0x84 + 20;
        for (off, value, what) in [
            (36, 0x8000_0000u32, "FileAlignment"),
            (36, 0x300, "FileAlignment"),
            (32, 0x100, "SectionAlignment"),
        ] {
            let mut t = tiny_pe();
            t[opt + off..opt + off + 4].copy_from_slice(&value.to_le_bytes());
            let err = add_sections(&t, &[(".osrel", b"ID=x\n")]).unwrap_err();
            assert!(err.to_string().contains(what), "{err}");
        }
    }
}
