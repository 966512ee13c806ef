//! The node lock: PCR 15 extended with the cluster ID.
//!
//! A node whose PCR 15 is non-zero was bootstrapped before (it can only rejoin); extending it
//! a second time would make its attestation carry a value no cluster expects, so a node can
//! never be initialised twice or for two clusters.

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
}
