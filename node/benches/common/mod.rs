//! Shared setup of the node benchmarks: a bootstrapped control-plane context on swtpm.

#![allow(dead_code)]

use std::sync::Arc;

use constellation_attest::testing::Swtpm;
use constellation_attest::tpm::issuer::{TpmIssuer, TpmIssuerConfig};
use constellation_attest::{Validators, Variant};
use constellation_node::disk::HostDirectoryDisk;
use constellation_node::keys::{self, MasterSecret};
use constellation_node::logging::LogRing;
use constellation_node::metadata::{InstanceInfo, Role};
use constellation_node::metrics::Metrics;
use constellation_node::netcrypt::{NoopNetwork, WgKeyPair};
use constellation_node::services::{NodeContext, Phase};
use constellation_node::state::ClusterSecrets;
use constellation_node::tpm::TpmLock;

/// A control plane that holds the master secret, with its swtpm.
pub struct Bench {
    pub ctx: Arc<NodeContext>,
    pub tpm: Arc<TpmIssuer>,
    pub _swtpm: Swtpm,
    pub _dir: tempfile::TempDir,
}

pub fn have_swtpm() -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("swtpm").is_file()))
        .unwrap_or(false)
}

pub fn control_plane() -> Bench {
    let swtpm = Swtpm::start().expect("swtpm");
    let tpm = Arc::new(
        TpmIssuer::open(TpmIssuerConfig::new(swtpm.tcti(), Variant::QemuVtpm)).expect("TPM"),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let master = MasterSecret::new(&[7u8; 32], &[8u8; 32]).expect("master");
    let ms = master.measurement_secret().expect("ms");
    let cluster_id = keys::cluster_id(ms.expose(), &[9u8; 32]).expect("cluster id");
    let ctx = NodeContext {
        info: InstanceInfo {
            role: Role::ControlPlane,
            name: "cp-0".into(),
            private_ip: "127.0.0.1".parse().expect("ip"),
            join_endpoints: vec![],
            init_secret_hash: None,
            image_version: None,
            network: Vec::new(),
        },
        image_version: "bench".into(),
        metrics: Metrics::new(),
        logs: LogRing::new(),
        issuer: tpm.clone(),
        lock: Arc::new(TpmLock::new(tpm.clone())),
        disk: Arc::new(HostDirectoryDisk::new(dir.path().join("disk"))),
        net: Arc::new(NoopNetwork::new(WgKeyPair::generate())),
        validators: Validators::default(),
        parse_config: Arc::new(constellation_node::attestation::parse_config),
        secrets: std::sync::RwLock::new(Some(ClusterSecrets {
            master: Some(master),
            measurement_secret: ms,
            measurement_salt: vec![9u8; 32],
            cluster_id,
            cluster_name: "bench".into(),
        })),
        cluster: Default::default(),
        state_dir: Default::default(),
        bootstrap_lock: Default::default(),
        phase: tokio::sync::watch::channel(Phase::Bootstrapped).0,
        endpoints: Default::default(),
        peers_key: Default::default(),
    };
    let cfg = serde_json::json!({"variant": "qemu-vtpm", "measurements": {
        "0": "00".repeat(32), "4": "00".repeat(32), "9": "00".repeat(32),
        "11": "00".repeat(32), "12": "00".repeat(32)}})
    .to_string();
    ctx.apply_attestation_config(&cfg).expect("config");
    Bench {
        ctx: Arc::new(ctx),
        tpm,
        _swtpm: swtpm,
        _dir: dir,
    }
}

pub fn rate(label: &str, n: usize, elapsed: std::time::Duration) {
    println!(
        "{label}: {n} in {:.3} s = {:.0}/s ({:.1} µs each)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / n as f64
    );
}
