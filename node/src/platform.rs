//! Wiring of the node's platform pieces: metadata, TPM (issuer + PCR 15 lock), state disk,
//! network encryption and the aTLS transport.

use std::path::PathBuf;
use std::sync::Arc;

use constellation_attest::validator::Issuer;

use crate::bootstrap::Transport;
use crate::disk::StateDisk;
use crate::lock::ClusterLock;
use crate::metadata::{DirectoryMetadata, FwCfgMetadata, Metadata};
use crate::netcrypt::NetworkEncryption;

/// How to assemble the platform.
#[derive(Debug, Clone)]
pub struct Options {
    /// HOST TIER: metadata files directory instead of fw_cfg.
    pub host_metadata_dir: Option<PathBuf>,
    /// HOST TIER: unencrypted directory as state disk and no-op network encryption.
    pub host_state_dir: Option<PathBuf>,
    /// TCTI of the TPM.
    pub tpm_tcti: String,
    /// State disk block device (product).
    pub state_disk_device: Option<PathBuf>,
    /// Attestation variant of this platform.
    pub variant: constellation_attest::Variant,
}

/// The assembled platform.
pub struct Platform {
    /// Metadata source.
    pub metadata: Arc<dyn Metadata>,
    /// Attestation issuer.
    pub issuer: Arc<dyn Issuer>,
    /// PCR 15 lock.
    pub lock: Arc<dyn ClusterLock>,
    /// State disk.
    pub disk: Arc<dyn StateDisk>,
    /// Network encryption.
    pub net: Arc<dyn NetworkEncryption>,
    /// Channel security.
    pub transport: Arc<dyn Transport>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Platform")
    }
}

/// Errors assembling the platform.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// The TPM could not be opened.
    #[error("opening the TPM at {tcti:?} failed: {message}")]
    Tpm {
        /// TCTI.
        tcti: String,
        /// Cause.
        message: String,
    },
    /// A piece is missing in this build or configuration.
    #[error("{0}")]
    Unsupported(String),
}

/// Assembles the platform from options.
pub fn open(opts: &Options) -> Result<Platform, PlatformError> {
    let metadata: Arc<dyn Metadata> = match &opts.host_metadata_dir {
        Some(d) => {
            tracing::warn!(dir = %d.display(), "HOST TIER: metadata from a directory, not fw_cfg");
            Arc::new(DirectoryMetadata::new(d))
        }
        None => Arc::new(FwCfgMetadata::new()),
    };
    let (disk, net): DiskAndNet = match &opts.host_state_dir {
        Some(d) => {
            tracing::warn!(
                dir = %d.display(),
                "HOST TIER: state disk is an UNENCRYPTED directory (HostDirectoryDisk) and network encryption is a no-op (NoopNetwork)"
            );
            let keys = crate::netcrypt::WgKeyPair::generate();
            (
                Arc::new(crate::disk::HostDirectoryDisk::new(d)),
                Arc::new(crate::netcrypt::NoopNetwork::new(keys)),
            )
        }
        None => product_disk_and_net(opts)?,
    };
    let (issuer, lock) = crate::tpm::open(&opts.tpm_tcti, opts.variant)?;
    let transport = crate::transport::atls(issuer.clone());
    Ok(Platform {
        metadata,
        issuer,
        lock,
        disk,
        net,
        transport,
    })
}

type DiskAndNet = (Arc<dyn StateDisk>, Arc<dyn NetworkEncryption>);

#[cfg(target_os = "linux")]
fn product_disk_and_net(opts: &Options) -> Result<DiskAndNet, PlatformError> {
    let device = opts
        .state_disk_device
        .clone()
        .unwrap_or_else(|| PathBuf::from("/dev/vdb"));
    let name = device.display().to_string();
    let disk = crate::disk::LuksStateDisk::new(device, crate::disk::LuksOptions::default());
    // Formatting a blank disk must not delay the servers (see BackgroundPrepare).
    let disk = crate::disk::BackgroundPrepare::new(Arc::new(disk), name);
    let keys = crate::netcrypt::WgKeyPair::generate();
    let net = product_net(keys)?;
    Ok((Arc::new(disk), net))
}

#[cfg(target_os = "linux")]
fn product_net(
    keys: crate::netcrypt::WgKeyPair,
) -> Result<Arc<dyn NetworkEncryption>, PlatformError> {
    Ok(Arc::new(crate::netcrypt::WireGuardNetwork::new(keys)))
}

#[cfg(not(target_os = "linux"))]
fn product_disk_and_net(_opts: &Options) -> Result<DiskAndNet, PlatformError> {
    Err(PlatformError::Unsupported(
        "the node agent's product mode needs Linux".into(),
    ))
}
