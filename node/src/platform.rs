//! Wiring of the node's platform pieces: metadata, attestation issuer and cluster-ID lock (vTPM
//! + PCR 15, or TDX quote + RTMR3), state disk, network encryption and the aTLS transport.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use constellation_attest::certs::fetch::{DiskCache, PlainHttp};
use constellation_attest::qemu_tdx::QemuTdxIssuer;
use constellation_attest::snp::issuer::SnpReportSource;
use constellation_attest::tsm::ConfigFsTsm;
use constellation_attest::validator::Issuer;
use constellation_attest::variant::Variant;

use crate::bootstrap::Transport;
use crate::disk::StateDisk;
use crate::lock::{ClusterLock, TdxRtmrLock};
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
    /// Devices and services the variant's issuer uses.
    pub endpoints: Endpoints,
}

/// Where a variant's issuer finds its devices and services. Defaults are the clouds' own.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// configfs-tsm report root (SNP reports, TDX quotes).
    pub tsm_root: PathBuf,
    /// The TDX CC event log (attached to qemu-tdx documents when it exists).
    pub ccel: PathBuf,
    /// Instance metadata service base URL (GCE metadata, Azure IMDS, AWS IMDSv2).
    pub imds: String,
    /// Azure THIM base URL (VCEK bundle for azure-sev-snp).
    pub thim: String,
    /// AMD KDS base URL for the VCEK when the host's certificate table has none (GCP), e.g.
    /// `https://kdsintf.amd.com` or an `http://`/`https://` mirror. `None`: no fetch.
    pub kds: Option<String>,
    /// Intel PCS base URL for TDX collateral (e.g. `https://api.trustedservices.intel.com`);
    /// `None`: quotes are sent without collateral and verifiers bring their own.
    pub pcs: Option<String>,
    /// Cache directory of KDS/PCS answers.
    pub cache_dir: PathBuf,
    /// Extra CA certificates (PEM file) trusted for `https://` endpoints besides the built-in
    /// Mozilla roots (a private mirror's CA).
    pub ca_file: Option<PathBuf>,
    /// The TD's measurement registers (sysfs, Linux ≥ 6.16): qemu-tdx's cluster-ID lock.
    pub tdx_measurements: PathBuf,
}

/// Default CC event log of a TDX guest.
pub const DEFAULT_CCEL: &str = "/sys/firmware/acpi/tables/data/CCEL";

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            tsm_root: PathBuf::from(constellation_attest::tsm::DEFAULT_ROOT),
            ccel: PathBuf::from(DEFAULT_CCEL),
            imds: constellation_attest::imds::DEFAULT_BASE.into(),
            thim: constellation_attest::certs::fetch::THIM_DEFAULT_BASE.into(),
            kds: None,
            pcs: None,
            cache_dir: std::env::temp_dir().join("constellation-cert-cache"),
            ca_file: None,
            tdx_measurements: PathBuf::from(
                constellation_attest::tdx::rtmr::DEFAULT_MEASUREMENTS_DIR,
            ),
        }
    }
}

impl Endpoints {
    /// The HTTP client with the extra CA file; an unusable file is an error naming it.
    pub fn http_client(
        &self,
        timeout: std::time::Duration,
    ) -> Result<PlainHttp, constellation_attest::certs::fetch::FetchError> {
        let http = PlainHttp::with_timeout(timeout);
        match &self.ca_file {
            Some(f) => http.with_extra_ca_file(f),
            None => Ok(http),
        }
    }

    /// Fails when the extra CA file is unusable ([`open`] checks it once, so the clients below
    /// can fall back silently).
    pub fn check_ca_file(&self) -> Result<(), PlatformError> {
        self.http_client(std::time::Duration::from_secs(1))
            .map(|_| ())
            .map_err(|e| PlatformError::Unsupported(e.to_string()))
    }

    fn client(&self, timeout: std::time::Duration) -> PlainHttp {
        self.http_client(timeout)
            .unwrap_or_else(|_| PlainHttp::with_timeout(timeout))
    }

    // Startup metadata calls must not hold the agent for the 30 s default.
    fn http(&self) -> PlainHttp {
        self.client(std::time::Duration::from_secs(10))
    }

    /// GCE metadata server client.
    pub fn gce_metadata(&self) -> constellation_attest::imds::GceMetadata {
        constellation_attest::imds::GceMetadata {
            base: self.imds.clone(),
            http: self.http(),
        }
    }

    /// AWS IMDSv2 client.
    pub fn aws_imds(&self) -> constellation_attest::imds::AwsImds {
        constellation_attest::imds::AwsImds {
            base: self.imds.clone(),
            http: self.http(),
        }
    }

    /// Azure IMDS client.
    pub fn azure_imds(&self) -> constellation_attest::imds::AzureImds {
        constellation_attest::imds::AzureImds {
            base: self.imds.clone(),
            http: self.http(),
        }
    }

    /// Azure THIM client.
    pub fn thim(&self) -> constellation_attest::certs::fetch::Thim {
        constellation_attest::certs::fetch::Thim {
            base: self.thim.clone(),
            http: Box::new(self.http()),
        }
    }

    /// AMD KDS client, if configured.
    pub fn kds(&self) -> Option<constellation_attest::certs::fetch::Kds> {
        self.kds
            .as_ref()
            .map(|base| constellation_attest::certs::fetch::Kds {
                base: base.clone(),
                http: Box::new(self.client(std::time::Duration::from_secs(30))),
                cache: DiskCache::new(self.cache_dir.join("kds")),
            })
    }

    /// Intel PCS client, if configured.
    pub fn pcs(&self) -> Option<constellation_attest::certs::fetch::Pcs> {
        self.pcs
            .as_ref()
            .map(|base| constellation_attest::certs::fetch::Pcs {
                base: base.clone(),
                http: Box::new(self.client(std::time::Duration::from_secs(30))),
                cache: DiskCache::new(self.cache_dir.join("pcs")),
            })
    }
}

/// Which issuer (and which `instance_info`) a variant gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IssuerKind {
    /// vTPM quote, empty `instance_info` (qemu-vtpm).
    Tpm,
    /// configfs-tsm TDX quote with the CC event log (qemu-tdx).
    TdxQuote,
    /// vTPM quote plus a configfs-tsm SNP report per document (aws-sev-snp binds the AK,
    /// gcp-sev-snp the document's extra data).
    TpmWithSnpReport,
    /// vTPM quote plus the HCL report from NV 0x01400001 (azure-sev-snp with the THIM VCEK,
    /// azure-tdx with the IMDS TD quote).
    TpmWithHclReport,
    /// vTPM quote plus the AK certificate from NV 0x01C101D0 (azure-trustedlaunch).
    TpmWithAkCert,
    /// vTPM quote plus the instance identity from the metadata service (gcp-sev-es: project,
    /// zone, name; aws-nitro-tpm: instance, AMI, region).
    TpmWithInstanceIdentity,
}

/// The issuer kind of `variant` (`None`: a variant newer than this node agent).
pub fn issuer_kind(variant: Variant) -> Option<IssuerKind> {
    Some(match variant {
        Variant::QemuVtpm => IssuerKind::Tpm,
        Variant::QemuTdx => IssuerKind::TdxQuote,
        Variant::AwsSevSnp | Variant::GcpSevSnp => IssuerKind::TpmWithSnpReport,
        Variant::AzureSevSnp | Variant::AzureTdx => IssuerKind::TpmWithHclReport,
        Variant::AzureTrustedLaunch => IssuerKind::TpmWithAkCert,
        Variant::GcpSevEs | Variant::AwsNitroTpm => IssuerKind::TpmWithInstanceIdentity,
        _ => return None,
    })
}

/// Fails with [`PlatformError::Device`] unless `path` exists.
fn require_device(variant: Variant, path: &Path, what: &str) -> Result<(), PlatformError> {
    match path.try_exists() {
        Ok(true) => Ok(()),
        Ok(false) => Err(PlatformError::Device {
            variant,
            path: path.to_path_buf(),
            message: format!("{what} does not exist"),
        }),
        Err(e) => Err(PlatformError::Device {
            variant,
            path: path.to_path_buf(),
            message: format!("{what} is not accessible: {e}"),
        }),
    }
}

const TSM_WHAT: &str =
    "the configfs-tsm report directory (needs Linux 6.7+, configfs mounted and a TEE guest driver)";

/// The SNP report source of aws-sev-snp / gcp-sev-snp; fails if configfs-tsm is missing.
pub fn snp_report_source(
    variant: Variant,
    endpoints: &Endpoints,
) -> Result<SnpReportSource, PlatformError> {
    require_device(variant, &endpoints.tsm_root, TSM_WHAT)?;
    Ok(SnpReportSource {
        tsm: ConfigFsTsm::new(&endpoints.tsm_root),
        kds: endpoints.kds(),
        privlevel: None,
        variant,
    })
}

/// The qemu-tdx issuer; fails if configfs-tsm is missing. The CC event log is attached when
/// the guest exposes it.
pub fn tdx_issuer(endpoints: &Endpoints) -> Result<QemuTdxIssuer, PlatformError> {
    require_device(Variant::QemuTdx, &endpoints.tsm_root, TSM_WHAT)?;
    let event_log = endpoints.ccel.exists().then(|| endpoints.ccel.clone());
    if event_log.is_none() {
        tracing::warn!(path = %endpoints.ccel.display(), "no CC event log; qemu-tdx documents carry none");
    }
    Ok(QemuTdxIssuer {
        tsm: ConfigFsTsm::new(&endpoints.tsm_root),
        event_log,
        collateral: endpoints
            .pcs()
            .map(|p| Box::new(p) as Box<dyn constellation_attest::qemu_tdx::CollateralSource>),
    })
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
    /// The TPM could not be opened or read.
    #[error("{variant}: TPM at {tcti:?}: {message}")]
    Tpm {
        /// TCTI.
        tcti: String,
        /// Variant being set up.
        variant: Variant,
        /// Cause.
        message: String,
    },
    /// A device the variant's issuer needs is missing.
    #[error(
        "{variant}: {path}: {message}; is this node really a {variant} machine? (check --variant)",
        path = path.display()
    )]
    Device {
        /// Variant being set up.
        variant: Variant,
        /// The missing path.
        path: PathBuf,
        /// What it is and what is wrong.
        message: String,
    },
    /// A metadata or certificate service the variant's issuer needs failed.
    #[error("{variant}: {url}: {message} (set the endpoint with the node agent's flags)")]
    Endpoint {
        /// Variant being set up.
        variant: Variant,
        /// Service base URL.
        url: String,
        /// Cause.
        message: String,
    },
    /// A piece is missing in this build or configuration.
    #[error("{0}")]
    Unsupported(String),
}

/// Assembles the platform from options.
pub fn open(opts: &Options) -> Result<Platform, PlatformError> {
    opts.endpoints.check_ca_file()?;
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
    let (issuer, lock) = issuer_and_lock(opts)?;
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

/// The variant's issuer and the cluster-ID lock.
fn issuer_and_lock(opts: &Options) -> Result<crate::tpm::TpmPair, PlatformError> {
    let kind = issuer_kind(opts.variant).ok_or_else(|| {
        PlatformError::Unsupported(format!(
            "{}: this node agent has no issuer for the variant",
            opts.variant
        ))
    })?;
    tracing::info!(variant = %opts.variant, issuer = ?kind, "attestation issuer");
    match kind {
        IssuerKind::TdxQuote => {
            // Checked first so a non-TDX machine gets the device error, not the kernel one.
            let issuer = tdx_issuer(&opts.endpoints)?;
            let lock = TdxRtmrLock::open(&opts.endpoints.tdx_measurements).map_err(|e| {
                PlatformError::Unsupported(format!(
                    "{}: the cluster-ID lock needs the kernel's TDX RTMR files: {e}",
                    Variant::QemuTdx
                ))
            })?;
            Ok((Arc::new(issuer), Arc::new(lock)))
        }
        _ => crate::tpm::open(&opts.tpm_tcti, opts.variant, &opts.endpoints),
    }
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

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    use constellation_attest::Evidence;
    use constellation_attest::testing::Swtpm;

    use super::*;

    fn endpoints_with_tsm(root: &Path) -> Endpoints {
        Endpoints {
            tsm_root: root.to_path_buf(),
            ccel: root.join("no-ccel"),
            ..Default::default()
        }
    }

    #[test]
    fn every_variant_gets_its_issuer_kind() {
        let want = [
            (Variant::QemuVtpm, IssuerKind::Tpm),
            (Variant::QemuTdx, IssuerKind::TdxQuote),
            (Variant::AwsSevSnp, IssuerKind::TpmWithSnpReport),
            (Variant::GcpSevSnp, IssuerKind::TpmWithSnpReport),
            (Variant::AzureSevSnp, IssuerKind::TpmWithHclReport),
            (Variant::AzureTdx, IssuerKind::TpmWithHclReport),
            (Variant::AzureTrustedLaunch, IssuerKind::TpmWithAkCert),
            (Variant::GcpSevEs, IssuerKind::TpmWithInstanceIdentity),
            (Variant::AwsNitroTpm, IssuerKind::TpmWithInstanceIdentity),
        ];
        assert_eq!(want.len(), Variant::ALL.len());
        for (v, k) in want {
            assert_eq!(issuer_kind(v), Some(k), "{v}");
        }
    }

    #[test]
    fn missing_configfs_tsm_names_path_and_variant() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("tsm/report");
        let ep = endpoints_with_tsm(&missing);
        let e = tdx_issuer(&ep).expect_err("no configfs-tsm");
        let msg = e.to_string();
        assert!(matches!(
            e,
            PlatformError::Device {
                variant: Variant::QemuTdx,
                ..
            }
        ));
        assert!(
            msg.contains("qemu-tdx") && msg.contains(&missing.display().to_string()),
            "{msg}"
        );
        for v in [Variant::AwsSevSnp, Variant::GcpSevSnp] {
            let msg = snp_report_source(v, &ep)
                .expect_err("no configfs-tsm")
                .to_string();
            assert!(
                msg.contains(v.as_str()) && msg.contains("configfs-tsm"),
                "{msg}"
            );
            // The TPM path checks the device before touching the TPM (none is running here).
            let msg = crate::tpm::open("swtpm:host=127.0.0.1,port=1", v, &ep)
                .err()
                .expect("no configfs-tsm")
                .to_string();
            assert!(msg.contains(&missing.display().to_string()), "{msg}");
        }
    }

    #[test]
    fn qemu_tdx_issuer_over_present_configfs_tsm() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ccel"), b"log").expect("ccel");
        let ep = Endpoints {
            ccel: dir.path().join("ccel"),
            ..endpoints_with_tsm(dir.path())
        };
        let issuer = tdx_issuer(&ep).expect("configfs-tsm present");
        assert_eq!(issuer.variant(), Variant::QemuTdx);
        assert_eq!(
            issuer.event_log.as_deref(),
            Some(dir.path().join("ccel").as_path())
        );
        // Without the kernel's RTMR files the node refuses qemu-tdx, naming the requirement.
        let mut opts = Options {
            host_metadata_dir: None,
            host_state_dir: None,
            tpm_tcti: "device:/dev/tpmrm0".into(),
            state_disk_device: None,
            variant: Variant::QemuTdx,
            endpoints: Endpoints {
                tdx_measurements: dir.path().join("no-measurements"),
                ..ep
            },
        };
        let msg = issuer_and_lock(&opts)
            .err()
            .expect("no RTMR files")
            .to_string();
        assert!(
            msg.contains("qemu-tdx") && msg.contains("RTMR") && msg.contains("Linux 6.16"),
            "{msg}"
        );
        // With them (a directory laid out like sysfs), issuer and RTMR3 lock are wired.
        let m = dir.path().join("measurements");
        std::fs::create_dir(&m).expect("mkdir");
        for i in 0..4 {
            std::fs::write(m.join(format!("rtmr{i}:sha384")), [0u8; 48]).expect("rtmr");
        }
        opts.endpoints.tdx_measurements = m;
        let (issuer, lock) = issuer_and_lock(&opts).expect("qemu-tdx platform");
        assert_eq!(issuer.variant(), Variant::QemuTdx);
        assert!(lock.is_unlocked().expect("RTMR3"));
    }

    #[test]
    fn unusable_ca_file_is_refused_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, b"garbage").expect("write");
        let ep = Endpoints {
            ca_file: Some(f.clone()),
            ..Default::default()
        };
        let msg = ep.check_ca_file().expect_err("bad CA file").to_string();
        assert!(msg.contains(&f.display().to_string()), "{msg}");
    }

    #[test]
    fn qemu_vtpm_stays_the_plain_tpm_issuer() {
        let tpm = Swtpm::start().expect("swtpm on PATH");
        let (issuer, lock) =
            crate::tpm::open(&tpm.tcti(), Variant::QemuVtpm, &Endpoints::default()).expect("open");
        assert_eq!(issuer.variant(), Variant::QemuVtpm);
        assert!(lock.is_unlocked().expect("PCR 15"));
        let doc = issuer.issue(b"user", b"nonce").expect("issue");
        let Evidence::Tpm(ev) = &doc.evidence else {
            panic!("not TPM evidence")
        };
        assert!(ev.instance_info.is_empty());
    }

    #[test]
    fn qemu_vtpm_carries_the_host_provisioned_ak_certificate() {
        use constellation_attest::measurements::{Measurement, Measurements};
        use constellation_attest::qemu_vtpm::{self, AkCa};
        use constellation_attest::validator::Validator;
        let ca = AkCa::generate().expect("CA");
        let tpm = Swtpm::start_qemu_vtpm(&ca).expect("swtpm on PATH");
        let (issuer, _) =
            crate::tpm::open(&tpm.tcti(), Variant::QemuVtpm, &Endpoints::default()).expect("open");
        let doc = issuer.issue(b"user", b"nonce").expect("issue");
        let Evidence::Tpm(ev) = &doc.evidence else {
            panic!("not TPM evidence")
        };
        assert!(!ev.instance_info.is_empty());
        let m = Measurements(
            [(
                4,
                Measurement::enforced(ev.pcrs[&4].to_vec()).expect("PCR 4"),
            )]
            .into(),
        );
        qemu_vtpm::certified_validator(m, ca.cert_pem())
            .expect("validator")
            .validate(&doc, b"nonce")
            .expect("a provisioned TPM's document passes");
    }

    #[test]
    fn azure_variants_without_their_ak_or_nv_index_fail_clearly() {
        let tpm = Swtpm::start().expect("swtpm on PATH");
        let all = [
            (Variant::AzureSevSnp, "0x01400001"),
            (Variant::AzureTdx, "0x01400001"),
            (Variant::AzureTrustedLaunch, "0x01c101d0"),
        ];
        // No cloud-provisioned AK: the error names the persistent handle.
        for (v, _) in all {
            let e = crate::tpm::open(&tpm.tcti(), v, &Endpoints::default())
                .err()
                .expect("swtpm has no Azure AK");
            let msg = e.to_string();
            assert!(matches!(e, PlatformError::Tpm { .. }), "{msg}");
            assert!(
                msg.contains(v.as_str()) && msg.contains("persistent handle 0x81000003"),
                "{msg}"
            );
        }
        // AK present, NV index missing: the error names the index.
        tpm.persist_rsa_ak(
            constellation_attest::tpm::issuer::AZURE_AK_PERSISTENT_HANDLE,
            b"node-test",
        )
        .expect("persist AK");
        for (v, index) in all {
            let e = crate::tpm::open(&tpm.tcti(), v, &Endpoints::default())
                .err()
                .expect("swtpm has no Azure NV index");
            let msg = e.to_string();
            assert!(matches!(e, PlatformError::Tpm { .. }), "{msg}");
            assert!(msg.contains(v.as_str()) && msg.contains(index), "{msg}");
        }
    }

    #[test]
    fn gcp_variants_without_the_ak_template_fail_clearly() {
        let tpm = Swtpm::start().expect("swtpm on PATH");
        let server = imds(vec![
            (
                "/computeMetadata/v1/instance/zone",
                "projects/123/zones/europe-west3-b".into(),
            ),
            ("/computeMetadata/v1/project/project-id", "proj".into()),
            ("/computeMetadata/v1/instance/name", "node-0".into()),
        ]);
        let ep = Endpoints {
            imds: server.url.clone(),
            ..Default::default()
        };
        let e = crate::tpm::open(&tpm.tcti(), Variant::GcpSevEs, &ep)
            .err()
            .expect("swtpm has no GCE AK template");
        let msg = e.to_string();
        assert!(
            msg.contains("gcp-sev-es") && msg.contains("0x01c10001") && msg.contains("GCE"),
            "{msg}"
        );
    }

    /// A metadata server on 127.0.0.1 answering `routes` (path → body), until dropped.
    struct Imds {
        url: String,
        _thread: std::thread::JoinHandle<()>,
    }

    fn imds(routes: Vec<(&'static str, String)>) -> Imds {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        let thread = std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { return };
                let mut r = BufReader::new(c.try_clone().expect("clone"));
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let (status, body) = match routes.iter().find(|(p, _)| *p == path) {
                    Some((_, b)) => ("200 OK", b.clone()),
                    None => ("404 Not Found", String::new()),
                };
                let _ = write!(
                    c,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Imds {
            url,
            _thread: thread,
        }
    }

    #[test]
    fn identity_variants_carry_the_metadata_identity() {
        let server = imds(vec![
            ("/computeMetadata/v1/instance/zone", "projects/123/zones/europe-west3-b".into()),
            ("/computeMetadata/v1/project/project-id", "proj".into()),
            ("/computeMetadata/v1/instance/name", "node-0".into()),
            ("/latest/api/token", "tok".into()),
            (
                "/latest/dynamic/instance-identity/document",
                r#"{"instanceId":"i-0abc","imageId":"ami-0123456789abcdef0","region":"eu-central-1","accountId":"1"}"#.into(),
            ),
        ]);
        let ep = Endpoints {
            imds: server.url.clone(),
            ..Default::default()
        };
        let tpm = Swtpm::start().expect("swtpm on PATH");
        // gcp-sev-es quotes with the GCE AK: provision its template like the hypervisor does.
        let template = constellation_attest::testing::rsa_ak_template_bytes(&[]).expect("template");
        tpm.define_nv(
            constellation_attest::tpm::issuer::GCE_AK_TEMPLATE_RSA_NV_INDEX,
            &template,
        )
        .expect("provision GCE AK template");
        for (v, want) in [
            (
                Variant::GcpSevEs,
                serde_json::json!({"projectId": "proj", "zone": "europe-west3-b", "instanceName": "node-0"}),
            ),
            (
                Variant::AwsNitroTpm,
                serde_json::json!({"instanceId": "i-0abc", "imageId": "ami-0123456789abcdef0", "region": "eu-central-1"}),
            ),
        ] {
            let (issuer, _lock) = crate::tpm::open(&tpm.tcti(), v, &ep).expect("open");
            assert_eq!(issuer.variant(), v);
            let doc = issuer.issue(b"user", b"nonce").expect("issue");
            assert_eq!(doc.variant, v);
            let Evidence::Tpm(ev) = &doc.evidence else {
                panic!("not TPM evidence")
            };
            let got: serde_json::Value = serde_json::from_slice(&ev.instance_info).expect("json");
            assert_eq!(got, want, "{v}");
        }
    }

    #[test]
    fn unreachable_metadata_service_names_url_and_variant() {
        // A bound-then-closed port refuses connections.
        let url = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            format!("http://{}", l.local_addr().expect("addr"))
        };
        let ep = Endpoints {
            imds: url.clone(),
            ..Default::default()
        };
        for v in [Variant::GcpSevEs, Variant::AwsNitroTpm] {
            let e = crate::tpm::open("swtpm:host=127.0.0.1,port=1", v, &ep)
                .err()
                .expect("no metadata service");
            let msg = e.to_string();
            assert!(matches!(e, PlatformError::Endpoint { .. }), "{msg}");
            assert!(msg.contains(v.as_str()) && msg.contains(&url), "{msg}");
        }
    }
}
