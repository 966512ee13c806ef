//! TDX runtime measurement registers through the Linux sysfs ABI (Linux ≥ 6.16,
//! Documentation/ABI/testing/sysfs-devices-virtual-misc-tdx_guest): one binary file per register,
//! `<dir>/rtmr<N>:sha384`. Reading returns the 48-byte value; writing exactly 48 bytes at offset
//! 0 makes the TDX module extend: RTMR ← SHA-384(RTMR ‖ data). Plain file I/O, so no unsafe
//! ioctl is needed.
//!
//! The cluster-ID lock of qemu-tdx lives in RTMR3 ([`CLUSTER_ID_RTMR`], measurement index
//! [`CLUSTER_ID_MEASUREMENT_INDEX`] = 4 in upstream's numbering 0 = MRTD, 1..=4 = RTMR0..3):
//! the node extends it once with SHA-384(cluster ID), so a locked node shows
//! [`expected_cluster_id_rtmr`]. Not RTMR2 as upstream: UEFI maps PCRs 8–15 to RTMR2, so the
//! UKI stub's PCR 11/12 measurements make RTMR2 non-zero at boot; no PCR maps to RTMR3, so it is
//! zero until the node extends it and "non-zero = locked" holds.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha384};

/// Where the kernel exposes the TD's measurement registers.
pub const DEFAULT_MEASUREMENTS_DIR: &str = "/sys/devices/virtual/misc/tdx_guest/measurements";
/// The RTMR holding the cluster ID (RTMR3: zero after boot, extended only at runtime).
pub const CLUSTER_ID_RTMR: u32 = 3;
/// Measurement index of that RTMR (0 = MRTD, 1..=4 = RTMR0..3).
pub const CLUSTER_ID_MEASUREMENT_INDEX: u32 = crate::qemu_tdx::RTMR0_INDEX + CLUSTER_ID_RTMR;
/// Length of an RTMR and of one extension.
pub const RTMR_LEN: usize = 48;

/// SHA-384 extend: SHA-384(old ‖ data).
pub fn extend_sha384(old: &[u8; RTMR_LEN], data: &[u8; RTMR_LEN]) -> [u8; RTMR_LEN] {
    let mut h = Sha384::new();
    h.update(old);
    h.update(data);
    h.finalize().into()
}

/// What the node writes into the cluster-ID RTMR: SHA-384(cluster ID).
pub fn cluster_id_extension(cluster_id: &[u8]) -> [u8; RTMR_LEN] {
    Sha384::digest(cluster_id).into()
}

/// The cluster-ID RTMR of a node locked to `cluster_id` (extended once from zero) — the value
/// the qemu-tdx measurements must expect at [`CLUSTER_ID_MEASUREMENT_INDEX`].
pub fn expected_cluster_id_rtmr(cluster_id: &[u8]) -> [u8; RTMR_LEN] {
    extend_sha384(&[0; RTMR_LEN], &cluster_id_extension(cluster_id))
}

/// Why an RTMR could not be read or extended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtmrError {
    /// The register file is missing: the kernel predates the ABI or this is no TD.
    #[error(
        "{path}: no TDX RTMR file (RTMR extension needs Linux 6.16 or newer with the tdx_guest driver, inside a TDX guest)",
        path = path.display()
    )]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing failed.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The register file did not hold 48 bytes, or took a partial write.
    #[error("{path}: {message}", path = path.display())]
    Abi {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// RTMR index out of range.
    #[error("RTMR index {0} out of range 0..=3")]
    Index(u32),
}

/// The TD's RTMRs under a measurements directory.
#[derive(Debug, Clone)]
pub struct SysfsRtmrs {
    dir: PathBuf,
}

impl SysfsRtmrs {
    /// Registers under `dir` (normally [`DEFAULT_MEASUREMENTS_DIR`]).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The file of RTMR `index`.
    pub fn path(&self, index: u32) -> Result<PathBuf, RtmrError> {
        if index > 3 {
            return Err(RtmrError::Index(index));
        }
        Ok(self.dir.join(format!("rtmr{index}:sha384")))
    }

    /// Fails with [`RtmrError::Missing`] unless RTMR `index` is exposed.
    pub fn check(&self, index: u32) -> Result<(), RtmrError> {
        let p = self.path(index)?;
        if p.exists() {
            Ok(())
        } else {
            Err(RtmrError::Missing { path: p })
        }
    }

    /// Reads RTMR `index`.
    pub fn read(&self, index: u32) -> Result<[u8; RTMR_LEN], RtmrError> {
        let path = self.path(index)?;
        let f = open(&path, false)?;
        let mut buf = Vec::with_capacity(RTMR_LEN);
        f.take(RTMR_LEN as u64 + 1)
            .read_to_end(&mut buf)
            .map_err(|source| RtmrError::Io {
                path: path.clone(),
                source,
            })?;
        buf.as_slice().try_into().map_err(|_| RtmrError::Abi {
            message: format!("read {} bytes, an RTMR has {RTMR_LEN}", buf.len()),
            path,
        })
    }

    /// Extends RTMR `index` with `data`: one 48-byte write at offset 0 (the ABI rejects
    /// anything else with EINVAL).
    pub fn extend(&self, index: u32, data: &[u8; RTMR_LEN]) -> Result<(), RtmrError> {
        let path = self.path(index)?;
        let mut f = open(&path, true)?;
        let n = f.write(data).map_err(|source| RtmrError::Io {
            path: path.clone(),
            source,
        })?;
        if n != RTMR_LEN {
            return Err(RtmrError::Abi {
                path,
                message: format!("partial write of {n} of {RTMR_LEN} bytes"),
            });
        }
        Ok(())
    }
}

fn open(path: &Path, write: bool) -> Result<std::fs::File, RtmrError> {
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                RtmrError::Missing {
                    path: path.to_path_buf(),
                }
            } else {
                RtmrError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_value_is_one_extend_from_zero() {
        let cid = [7u8; 32];
        let mut h = Sha384::new();
        h.update([0u8; 48]);
        h.update(Sha384::digest(cid));
        let want: [u8; 48] = h.finalize().into();
        assert_eq!(expected_cluster_id_rtmr(&cid), want);
        assert_eq!(CLUSTER_ID_MEASUREMENT_INDEX, 4);
    }

    #[test]
    fn index_out_of_range() {
        let r = SysfsRtmrs::new("/nonexistent");
        assert!(matches!(r.read(4), Err(RtmrError::Index(4))));
        let msg = r.read(2).unwrap_err().to_string();
        assert!(
            msg.contains("rtmr2:sha384") && msg.contains("6.16"),
            "{msg}"
        );
    }
}
