//! The node lock: PCR 15 (vTPM variants) or RTMR3 (qemu-tdx, [`TdxRtmrLock`]) extended with the
//! cluster ID.
//!
//! A node whose register is non-zero was bootstrapped before (it can only rejoin); extending it
//! a second time would make its attestation carry a value no cluster expects, so a node can
//! never be initialised twice or for two clusters.

use constellation_attest::tdx::rtmr::{
    CLUSTER_ID_RTMR, RTMR_LEN, SysfsRtmrs, cluster_id_extension, expected_cluster_id_rtmr,
};

/// Errors of the lock.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// The TPM (or other measurement register) failed.
    #[error("measurement register access failed while {operation}: {message}")]
    Register {
        /// What was done.
        operation: &'static str,
        /// Cause.
        message: String,
    },
}

/// Access to the register holding the cluster ID (PCR 15 on vTPM variants).
pub trait ClusterLock: Send + Sync {
    /// The current PCR 15 value.
    fn read(&self) -> Result<[u8; 32], LockError>;
    /// Extends PCR 15 with the cluster ID (TPM2_PCR_Event).
    fn extend(&self, cluster_id: &[u8; 32]) -> Result<(), LockError>;
    /// True when PCR 15 is all zero (the node was never bootstrapped).
    fn is_unlocked(&self) -> Result<bool, LockError> {
        Ok(self.read()? == [0u8; 32])
    }
    /// True when the register shows exactly one extension with `cluster_id` (works for every
    /// lock; [`ClusterLock::read`] only for 32-byte PCRs).
    fn holds_cluster_id(&self, cluster_id: &[u8; 32]) -> Result<bool, LockError> {
        Ok(self.read()? == constellation_attest::measurements::expected_pcr15(cluster_id))
    }
}

/// qemu-tdx: the cluster ID in RTMR3 through the kernel's sysfs RTMR files (Linux ≥ 6.16).
/// Extending writes SHA-384(cluster ID), so a locked node's RTMR3 is
/// `constellation_attest::tdx::rtmr::expected_cluster_id_rtmr(cluster_id)` — measurement
/// index 4 of qemu-tdx.
#[derive(Debug, Clone)]
pub struct TdxRtmrLock {
    rtmrs: SysfsRtmrs,
}

impl TdxRtmrLock {
    /// The lock over the RTMR files in `dir`; fails (naming the kernel requirement) when the
    /// cluster-ID RTMR file is missing.
    pub fn open(dir: impl Into<std::path::PathBuf>) -> Result<Self, LockError> {
        let rtmrs = SysfsRtmrs::new(dir);
        rtmrs
            .check(CLUSTER_ID_RTMR)
            .map_err(|e| LockError::Register {
                operation: "opening the cluster-ID RTMR",
                message: e.to_string(),
            })?;
        Ok(Self { rtmrs })
    }

    /// The 48-byte cluster-ID RTMR.
    pub fn read_rtmr(&self) -> Result<[u8; RTMR_LEN], LockError> {
        self.rtmrs
            .read(CLUSTER_ID_RTMR)
            .map_err(|e| LockError::Register {
                operation: "reading RTMR3",
                message: e.to_string(),
            })
    }
}

impl ClusterLock for TdxRtmrLock {
    fn read(&self) -> Result<[u8; 32], LockError> {
        // Why an error and not a truncated value: a 32-byte prefix of RTMR3 would compare
        // unequal to every PCR-15 value and read as "another cluster".
        Err(LockError::Register {
            operation: "reading the cluster ID register",
            message: "qemu-tdx keeps it in the 48-byte RTMR3; use is_unlocked/holds_cluster_id"
                .into(),
        })
    }

    fn is_unlocked(&self) -> Result<bool, LockError> {
        Ok(self.read_rtmr()? == [0u8; RTMR_LEN])
    }

    fn holds_cluster_id(&self, cluster_id: &[u8; 32]) -> Result<bool, LockError> {
        Ok(self.read_rtmr()? == expected_cluster_id_rtmr(cluster_id))
    }

    fn extend(&self, cluster_id: &[u8; 32]) -> Result<(), LockError> {
        // RTMR3 is zero after boot (no PCR maps to it); a non-zero value means a lock (or something
        // unexpected) is already there, and a second extension would make the value
        // unverifiable.
        if !self.is_unlocked()? {
            return Err(LockError::Register {
                operation: "extending RTMR3 with the cluster ID",
                message: "RTMR3 is not zero: this node is already locked to a cluster".into(),
            });
        }
        self.rtmrs
            .extend(CLUSTER_ID_RTMR, &cluster_id_extension(cluster_id))
            .map_err(|e| LockError::Register {
                operation: "extending RTMR3 with the cluster ID",
                message: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use constellation_attest::tdx::rtmr::extend_sha384;

    use super::*;

    /// A directory laid out like /sys/devices/virtual/misc/tdx_guest/measurements.
    fn fake_sysfs(dir: &Path) {
        for i in 0..4 {
            std::fs::write(dir.join(format!("rtmr{i}:sha384")), [0u8; 48]).expect("rtmr file");
        }
        std::fs::write(dir.join("mrtd:sha384"), [0x11u8; 48]).expect("mrtd file");
    }

    /// What the kernel does on a write: RTMR ← SHA-384(RTMR ‖ written). A regular file only
    /// stores the written bytes, so the test applies the extend to check the value that
    /// results from the lock's write.
    fn kernel_extend(path: &Path, before: [u8; 48]) -> [u8; 48] {
        let written: [u8; 48] = std::fs::read(path)
            .expect("read")
            .try_into()
            .expect("48 bytes written");
        let after = extend_sha384(&before, &written);
        std::fs::write(path, after).expect("write");
        after
    }

    #[test]
    fn tdx_lock_extends_rtmr3_once_and_agrees_with_the_validator() {
        let dir = tempfile::tempdir().expect("tempdir");
        fake_sysfs(dir.path());
        let lock = TdxRtmrLock::open(dir.path()).expect("open");
        assert!(lock.is_unlocked().expect("read"));
        let cid = [0x42u8; 32];
        lock.extend(&cid).expect("extend");
        let rtmr3 = dir.path().join("rtmr3:sha384");
        assert_eq!(
            std::fs::read(&rtmr3).expect("read"),
            cluster_id_extension(&cid),
            "exactly one 48-byte write of SHA-384(cluster ID)"
        );
        let after = kernel_extend(&rtmr3, [0; 48]);
        // The value the qemu-tdx measurements expect at index 4.
        assert_eq!(after, expected_cluster_id_rtmr(&cid));
        assert!(!lock.is_unlocked().expect("read"));
        assert!(lock.holds_cluster_id(&cid).expect("read"));
        assert!(!lock.holds_cluster_id(&[0x43; 32]).expect("read"));
        // Other registers untouched.
        assert_eq!(
            std::fs::read(dir.path().join("rtmr2:sha384")).expect("read"),
            [0u8; 48]
        );
        // A second lock is refused, and nothing is written.
        let e = lock.extend(&[0x43; 32]).expect_err("already locked");
        assert!(e.to_string().contains("already locked"), "{e}");
        assert_eq!(std::fs::read(&rtmr3).expect("read"), after);
        assert!(lock.read().is_err());
    }

    #[test]
    fn tdx_lock_without_the_sysfs_abi_names_the_kernel_requirement() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = TdxRtmrLock::open(dir.path()).expect_err("no RTMR files");
        let msg = e.to_string();
        assert!(
            msg.contains("rtmr3:sha384") && msg.contains("Linux 6.16"),
            "{msg}"
        );
    }

    #[test]
    fn tdx_lock_rejects_a_register_of_the_wrong_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        fake_sysfs(dir.path());
        std::fs::write(dir.path().join("rtmr3:sha384"), [0u8; 32]).expect("write");
        let lock = TdxRtmrLock::open(dir.path()).expect("open");
        let msg = lock.is_unlocked().expect_err("32 bytes").to_string();
        assert!(msg.contains("48"), "{msg}");
    }
}
