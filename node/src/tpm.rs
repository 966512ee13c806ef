//! The node's TPM: attestation issuer and the PCR 15 lock, both over the attest crate's
//! `TpmIssuer` (one TPM connection, requests serialised by its worker thread).

use std::sync::Arc;

use constellation_attest::tpm::issuer::{DEFAULT_EVENT_LOG_PATH, TpmIssuer, TpmIssuerConfig};
use constellation_attest::validator::Issuer;
use constellation_attest::variant::Variant;

use crate::lock::{ClusterLock, LockError};
use crate::platform::PlatformError;

/// PCR 15 of a [`TpmIssuer`].
#[derive(Debug, Clone)]
pub struct TpmLock(Arc<TpmIssuer>);

impl TpmLock {
    /// Wraps an opened issuer.
    pub fn new(tpm: Arc<TpmIssuer>) -> Self {
        Self(tpm)
    }
}

impl ClusterLock for TpmLock {
    fn read(&self) -> Result<[u8; 32], LockError> {
        let pcrs = self.0.read_pcrs().map_err(|e| LockError::Register {
            operation: "reading PCR 15",
            message: e.to_string(),
        })?;
        pcrs.get(&15).copied().ok_or_else(|| LockError::Register {
            operation: "reading PCR 15",
            message: "PCR 15 is not among the PCRs the TPM reported".into(),
        })
    }

    fn extend(&self, cluster_id: &[u8; 32]) -> Result<(), LockError> {
        self.0
            .extend_cluster_id(cluster_id)
            .map_err(|e| LockError::Register {
                operation: "extending PCR 15 with the cluster ID",
                message: e.to_string(),
            })
    }
}

/// The issuer and the lock over one TPM connection.
pub type TpmPair = (Arc<dyn Issuer>, Arc<dyn ClusterLock>);

/// Opens the TPM at `tcti` issuing documents of `variant`.
pub fn open(tcti: &str, variant: Variant) -> Result<TpmPair, PlatformError> {
    let mut config = TpmIssuerConfig::new(tcti, variant);
    // The firmware's TCG event log belongs to the TPM device the kernel drives; a swtpm reached
    // over a socket (host tier) has none, and the host's own log would not match it.
    let log = std::path::Path::new(DEFAULT_EVENT_LOG_PATH);
    if tcti.starts_with("device:") && log.exists() {
        config.event_log = Some(log.to_path_buf());
    }
    let tpm = TpmIssuer::open(config).map_err(|e| PlatformError::Tpm {
        tcti: tcti.into(),
        message: e.to_string(),
    })?;
    let tpm = Arc::new(tpm);
    Ok((tpm.clone(), Arc::new(TpmLock::new(tpm))))
}
