//! The Constellation node agent (PID 1 of the node image).
//!
//! Product mode reads metadata from QEMU fw_cfg and uses the TPM at /dev/tpmrm0. Host-tier
//! flags (`--host-metadata-dir`, `--host-state-dir`, `--tpm-tcti`) run it as a plain process
//! for protocol tests: the state "disk" is then an UNENCRYPTED directory and network
//! encryption a no-op, and the agent says so in its log.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use constellation_node::bootstrap::{self, Config, Ports};
use constellation_node::services::{NodeContext, Phase};

#[derive(Debug, Parser)]
#[command(version, about = "Constellation node agent")]
struct Args {
    /// HOST TIER: read metadata from plain files in this directory instead of fw_cfg.
    #[arg(long, env = "CONSTELLATION_HOST_METADATA_DIR")]
    host_metadata_dir: Option<PathBuf>,
    /// HOST TIER: use this directory as an unencrypted state "disk" and no-op network encryption.
    #[arg(long, env = "CONSTELLATION_HOST_STATE_DIR")]
    host_state_dir: Option<PathBuf>,
    /// TSS2 TCTI of the TPM (e.g. `swtpm:host=127.0.0.1,port=2321`).
    #[arg(
        long,
        env = "CONSTELLATION_TPM_TCTI",
        default_value = "device:/dev/tpmrm0"
    )]
    tpm_tcti: String,
    /// State disk block device (product mode).
    #[arg(long, env = "CONSTELLATION_STATE_DISK")]
    state_disk_device: Option<PathBuf>,
    /// Attestation variant of this platform.
    #[arg(long, env = "CONSTELLATION_VARIANT", default_value = "qemu-vtpm")]
    variant: String,
    /// configfs-tsm report root (SNP reports, TDX quotes).
    #[arg(long, env = "CONSTELLATION_TSM_ROOT", default_value = constellation_attest::tsm::DEFAULT_ROOT)]
    tsm_root: PathBuf,
    /// TDX CC event log (qemu-tdx).
    #[arg(long, env = "CONSTELLATION_CCEL", default_value = constellation_node::platform::DEFAULT_CCEL)]
    ccel: PathBuf,
    /// Instance metadata service (GCE metadata, Azure IMDS, AWS IMDSv2).
    #[arg(long, env = "CONSTELLATION_IMDS_URL", default_value = constellation_attest::imds::DEFAULT_BASE)]
    imds_url: String,
    /// Azure THIM (VCEK bundle, azure-sev-snp).
    #[arg(long, env = "CONSTELLATION_THIM_URL", default_value = constellation_attest::certs::fetch::THIM_DEFAULT_BASE)]
    thim_url: String,
    /// AMD KDS (http:// or https://) for the VCEK when the host supplies none (gcp-sev-snp).
    #[arg(long, env = "CONSTELLATION_KDS_URL")]
    kds_url: Option<String>,
    /// Intel PCS (http:// or https://) for TDX collateral (qemu-tdx, azure-tdx).
    #[arg(long, env = "CONSTELLATION_PCS_URL")]
    pcs_url: Option<String>,
    /// Extra CA certificates (PEM) trusted for https:// endpoints besides the built-in Mozilla
    /// roots, e.g. a private KDS/PCS mirror's CA.
    #[arg(long, env = "CONSTELLATION_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Address the public servers bind to.
    #[arg(long, default_value = "0.0.0.0")]
    listen_ip: IpAddr,
    /// Attestation config the node validates joiners with until Init or a ticket sets one (JSON).
    #[arg(long, env = "CONSTELLATION_ATTESTATION_CONFIG")]
    attestation_config: Option<String>,
    /// Image version reported to the cluster.
    #[arg(long, env = "CONSTELLATION_IMAGE_VERSION")]
    image_version: Option<String>,
    /// Seconds after which the join client reports that it has no ticket yet; it keeps
    /// trying every 30 s after that.
    #[arg(long, default_value_t = 600)]
    join_deadline_secs: u64,
    /// Seconds between a worker's requests for the current WireGuard peers.
    #[arg(long, env = "CONSTELLATION_PEER_REFRESH_SECS", default_value_t = 30)]
    peer_refresh_secs: u64,
    /// Init port.
    #[arg(long, default_value_t = constellation_node_api::ports::INIT)]
    port_init: u16,
    /// Join/key port.
    #[arg(long, default_value_t = constellation_node_api::ports::JOIN)]
    port_join: u16,
    /// Verification gRPC port.
    #[arg(long, default_value_t = constellation_node_api::ports::VERIFY_GRPC)]
    port_verify: u16,
    /// Verification HTTP port.
    #[arg(long, default_value_t = constellation_node_api::ports::VERIFY_HTTP)]
    port_verify_http: u16,
    /// Recovery port.
    #[arg(long, default_value_t = constellation_node_api::ports::RECOVERY)]
    port_recovery: u16,
    /// Management port.
    #[arg(long, default_value_t = constellation_node_api::ports::MANAGEMENT)]
    port_management: u16,
    /// Metrics port (bound to the private IP only).
    #[arg(long, default_value_t = constellation_node_api::ports::METRICS)]
    port_metrics: u16,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Both rustls providers may be linked (dependencies differ); pin aws-lc-rs like the attest crate.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let logs = constellation_node::logging::init();
    match constellation_node::rlimit::raise_nofile() {
        Ok(n) => tracing::info!(nofile = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "keeping the open-file limit"),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(run(args, logs));
    // As PID 1 of the image, exiting panics the kernel and loses the console; log the reason
    // and stay up instead, so the host sees why on the serial console.
    if std::process::id() == 1 {
        if let Err(e) = &result {
            tracing::error!(
                error = format!("{e:#}"),
                "node agent failed; halting (PID 1 stays up)"
            );
            eprintln!("constellation-node: fatal: {e:#}");
        }
        loop {
            std::thread::park();
        }
    }
    result
}

async fn run(args: Args, logs: constellation_node::logging::LogRing) -> anyhow::Result<()> {
    let platform = constellation_node::platform::open(&constellation_node::platform::Options {
        host_metadata_dir: args.host_metadata_dir.clone(),
        host_state_dir: args.host_state_dir.clone(),
        tpm_tcti: args.tpm_tcti.clone(),
        state_disk_device: args.state_disk_device.clone(),
        variant: args
            .variant
            .parse()
            .map_err(|_| anyhow::anyhow!("unknown --variant {:?}", args.variant))?,
        endpoints: constellation_node::platform::Endpoints {
            tsm_root: args.tsm_root.clone(),
            ccel: args.ccel.clone(),
            imds: args.imds_url.clone(),
            thim: args.thim_url.clone(),
            kds: args.kds_url.clone(),
            pcs: args.pcs_url.clone(),
            ca_file: args.ca_file.clone(),
            ..Default::default()
        },
    })?;
    let info = platform
        .metadata
        .instance()
        .context("reading instance metadata")?;
    tracing::info!(name = %info.name, role = %info.role, ip = %info.private_ip, "node agent starting");
    // Product mode: the host's `network` key says how to address the NICs (the image has no
    // DHCP client). Host tier: the test's loopback setup is left alone.
    #[cfg(target_os = "linux")]
    if args.host_metadata_dir.is_none() && !info.network.is_empty() {
        let net = info.network.clone();
        tokio::task::spawn_blocking(move || {
            constellation_node::netconf::apply(&net, constellation_node::netconf::DEFAULT_WAIT)
        })
        .await
        .context("network configuration task")?
        .context("configuring network interfaces from the metadata key \"network\"")?;
    }
    let ctx = Arc::new(NodeContext {
        image_version: args
            .image_version
            .clone()
            .or_else(|| info.image_version.clone())
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
        info,
        metrics: constellation_node::metrics::Metrics::new(),
        logs,
        issuer: platform.issuer.clone(),
        lock: platform.lock.clone(),
        disk: platform.disk.clone(),
        net: platform.net.clone(),
        validators: constellation_attest::Validators::default(),
        parse_config: Arc::new(constellation_node::attestation::parse_config),
        secrets: Default::default(),
        cluster: Default::default(),
        state_dir: Default::default(),
        bootstrap_lock: Default::default(),
        phase: tokio::sync::watch::channel(Phase::Fresh).0,
        endpoints: constellation_node::services::endpoints::KnownEndpoints::new(args.port_join),
        peers_key: Default::default(),
    });
    if let Some(cfg) = &args.attestation_config {
        ctx.apply_attestation_config(cfg)
            .map_err(|s| anyhow::anyhow!("--attestation-config: {}", s.message()))?;
    }
    let cfg = Config {
        listen_ip: args.listen_ip,
        ports: Ports {
            init: args.port_init,
            join: args.port_join,
            verify_grpc: args.port_verify,
            verify_http: args.port_verify_http,
            recovery: args.port_recovery,
            management: args.port_management,
            metrics: args.port_metrics,
        },
        join_deadline: Duration::from_secs(args.join_deadline_secs),
        peer_refresh: Duration::from_secs(args.peer_refresh_secs.max(1)),
    };
    bootstrap::run(ctx, cfg, platform.transport.clone()).await?;
    Ok(())
}
