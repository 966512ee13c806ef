//! The node's TPM: attestation issuer and the PCR 15 lock, both over the attest crate's
//! `TpmIssuer` (one TPM connection, requests serialised by its worker thread).

use std::sync::Arc;

use constellation_attest::aws::AwsSnpInstanceInfoSource;
use constellation_attest::aws::nitro::NitroInstanceInfo;
use constellation_attest::azure::trustedlaunch::TrustedLaunchInstanceInfo;
use constellation_attest::azure::variant::{azure_snp_instance_info, azure_tdx_instance_info};
use constellation_attest::gcp::GcpSnpInstanceInfoSource;
use constellation_attest::qemu_tdx::CollateralSource;
use constellation_attest::qemu_vtpm;
use constellation_attest::tpm::issuer::{
    AZURE_AK_CERT_NV_INDEX, AZURE_HCL_REPORT_NV_INDEX, AkSource, DEFAULT_EVENT_LOG_PATH, TpmIssuer,
    TpmIssuerConfig,
};
use constellation_attest::validator::{InstanceInfoSource, IssueError, Issuer, StaticInstanceInfo};
use constellation_attest::variant::Variant;

use crate::lock::{ClusterLock, LockError};
use crate::platform::{self, Endpoints, IssuerKind, PlatformError};

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

/// Opens the TPM at `tcti` issuing documents of the vTPM-based `variant`, with the
/// `instance_info` its validator needs (see [`crate::platform::IssuerKind`]).
///
/// The attestation key is the one the variant's validator trusts, chosen by
/// `AkSource::for_variant` in the attest crate: Azure's persistent key at 0x81000003, the GCE
/// key derived from the template in NV 0x01c10001, or (qemu, AWS) a key the issuer creates.
pub fn open(tcti: &str, variant: Variant, endpoints: &Endpoints) -> Result<TpmPair, PlatformError> {
    let mut config = TpmIssuerConfig::new(tcti, variant);
    // The firmware's TCG event log belongs to the TPM device the kernel drives; a swtpm reached
    // over a socket (host tier) has none, and the host's own log would not match it.
    let log = std::path::Path::new(DEFAULT_EVENT_LOG_PATH);
    if tcti.starts_with("device:") && log.exists() {
        config.event_log = Some(log.to_path_buf());
    }
    // Sources that need nothing from the open TPM are set before opening it, so a missing
    // configfs-tsm fails before the TPM is touched.
    match platform::issuer_kind(variant) {
        Some(IssuerKind::TpmWithSnpReport) => {
            config.instance_info_source = Some(snp_instance_info(variant, endpoints)?);
        }
        Some(IssuerKind::TpmWithInstanceIdentity) => {
            config.instance_info_source =
                Some(Arc::new(identity_instance_info(variant, endpoints)?));
        }
        _ => {}
    }
    let open_err = |e: constellation_attest::validator::IssueError| PlatformError::Tpm {
        tcti: tcti.into(),
        variant,
        message: e.to_string(),
    };
    let mut tpm = if variant == Variant::QemuVtpm {
        open_qemu_vtpm(config).map_err(open_err)?
    } else {
        TpmIssuer::open(config).map_err(open_err)?
    };
    if let Some(IssuerKind::TpmWithHclReport | IssuerKind::TpmWithAkCert) =
        platform::issuer_kind(variant)
    {
        let info = nv_instance_info(&tpm, tcti, variant, endpoints)?;
        tpm.set_instance_info_source(Arc::new(StaticInstanceInfo(info)));
    }
    let tpm = Arc::new(tpm);
    Ok((tpm.clone(), Arc::new(TpmLock::new(tpm))))
}

/// qemu-vtpm: the AK the host provisioned (derived from the template in NV, its certificate
/// from the cluster's AK CA carried as instance_info), as cloud vTPMs provide theirs. A TPM
/// without that provisioning gets a created AK and documents without a certificate, which a
/// validator requiring the cluster's AK CA refuses (the warning says why).
fn open_qemu_vtpm(config: TpmIssuerConfig) -> Result<TpmIssuer, IssueError> {
    let mut provisioned = config.clone();
    provisioned.ak_source = AkSource::NvTemplate {
        index: qemu_vtpm::AK_TEMPLATE_NV_INDEX,
    };
    let from_nv = TpmIssuer::open(provisioned).and_then(|mut tpm| {
        let cert = tpm.nv_read(qemu_vtpm::AK_CERT_NV_INDEX)?;
        tpm.set_instance_info_source(Arc::new(StaticInstanceInfo(cert)));
        Ok(tpm)
    });
    match from_nv {
        Ok(tpm) => Ok(tpm),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "the TPM holds no host-provisioned attestation key (AK template NV {:#010x}, AK certificate NV {:#010x}); documents carry no AK certificate, so validators that require the cluster's AK CA refuse them",
                qemu_vtpm::AK_TEMPLATE_NV_INDEX,
                qemu_vtpm::AK_CERT_NV_INDEX
            );
            TpmIssuer::open(config)
        }
    }
}

/// gcp-sev-snp / aws-sev-snp: SNP reports from configfs-tsm per document.
fn snp_instance_info(
    variant: Variant,
    endpoints: &Endpoints,
) -> Result<Arc<dyn InstanceInfoSource>, PlatformError> {
    let snp = platform::snp_report_source(variant, endpoints)?;
    Ok(match variant {
        Variant::AwsSevSnp => Arc::new(AwsSnpInstanceInfoSource { snp }),
        _ => {
            // The instance name only serves the validator's optional Compute API check, so an
            // unreachable metadata server is not fatal.
            let gce = match endpoints.gce_metadata().instance() {
                Ok(i) => Some(i),
                Err(e) => {
                    tracing::warn!(%variant, error = %e, url = %endpoints.imds, "GCE metadata unavailable; documents carry no instance name");
                    None
                }
            };
            Arc::new(GcpSnpInstanceInfoSource { snp, gce })
        }
    })
}

/// gcp-sev-es / aws-nitro-tpm: the instance identity from the metadata service, read once.
fn identity_instance_info(
    variant: Variant,
    endpoints: &Endpoints,
) -> Result<StaticInstanceInfo, PlatformError> {
    let err = |e: &dyn std::fmt::Display| PlatformError::Endpoint {
        variant,
        url: endpoints.imds.clone(),
        message: e.to_string(),
    };
    let json = if variant == Variant::AwsNitroTpm {
        let id = endpoints.aws_imds().identity().map_err(|e| err(&e))?;
        serde_json::to_vec(&NitroInstanceInfo {
            instance_id: id.instance_id,
            image_id: id.image_id,
            region: id.region,
        })
    } else {
        let inst = endpoints.gce_metadata().instance().map_err(|e| err(&e))?;
        serde_json::to_vec(&inst)
    };
    json.map(StaticInstanceInfo)
        .map_err(|e| PlatformError::Unsupported(format!("{variant}: encoding instance_info: {e}")))
}

/// azure-sev-snp / azure-tdx / azure-trustedlaunch: what the vTPM's NV indices hold.
fn nv_instance_info(
    tpm: &TpmIssuer,
    tcti: &str,
    variant: Variant,
    endpoints: &Endpoints,
) -> Result<Vec<u8>, PlatformError> {
    let index = if variant == Variant::AzureTrustedLaunch {
        AZURE_AK_CERT_NV_INDEX
    } else {
        AZURE_HCL_REPORT_NV_INDEX
    };
    let nv = tpm.nv_read(index).map_err(|e| PlatformError::Tpm {
        tcti: tcti.into(),
        variant,
        message: format!(
            "reading NV index {index:#010x} (the {} the Azure vTPM provides): {e}",
            if variant == Variant::AzureTrustedLaunch {
                "AK certificate"
            } else {
                "HCL report"
            }
        ),
    })?;
    let endpoint = |url: &str, e: &dyn std::fmt::Display| PlatformError::Endpoint {
        variant,
        url: url.into(),
        message: e.to_string(),
    };
    match variant {
        Variant::AzureSevSnp => azure_snp_instance_info(&nv, &endpoints.thim())
            .map_err(|e| endpoint(&endpoints.thim, &e)),
        Variant::AzureTdx => {
            let pcs = endpoints.pcs();
            azure_tdx_instance_info(
                &nv,
                &endpoints.azure_imds(),
                pcs.as_ref().map(|p| p as &dyn CollateralSource),
            )
            .map_err(|e| endpoint(&endpoints.imds, &e))
        }
        _ => serde_json::to_vec(&TrustedLaunchInstanceInfo {
            ak_cert: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &nv),
            intermediates_pem: String::new(),
        })
        .map_err(|e| PlatformError::Unsupported(format!("{variant}: encoding instance_info: {e}"))),
    }
}
