//! Host tier: recovery adopts the cluster state stored on the state disk (attestation config,
//! members, removals) only when a control plane of this cluster wrote it, i.e. when its MAC
//! under the key derived from the master secret verifies. Whoever controls the disk must not
//! be able to hand a recovering control plane its security configuration.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::sync::{Arc, Mutex};

use constellation_attest::AttestationDocument;
use constellation_attest::Variant;
use constellation_attest::validator::{IssueError, Issuer, Validators};
use constellation_node::disk::{HostDirectoryDisk, StateDisk};
use constellation_node::lock::{ClusterLock, LockError};
use constellation_node::logging::LogRing;
use constellation_node::metadata::{InstanceInfo, Role};
use constellation_node::metrics::Metrics;
use constellation_node::netcrypt::{NoopNetwork, WgKeyPair};
use constellation_node::services::init::{InitServer, hash_init_secret};
use constellation_node::services::recovery::RecoveryServer;
use constellation_node::services::{NodeContext, Phase};
use constellation_node::state::CLUSTER_STATE_FILE;
use constellation_node_api::v1::init_response::Kind;
use constellation_node_api::v1::init_service_server::InitService;
use constellation_node_api::v1::recovery_service_server::RecoveryService;
use constellation_node_api::v1::{InitRequest, RecoverRequest};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tonic::{Code, Request};

#[derive(Default)]
struct MemoryPcr15(Mutex<[u8; 32]>);

impl ClusterLock for MemoryPcr15 {
    fn read(&self) -> Result<[u8; 32], LockError> {
        Ok(*self.0.lock().unwrap())
    }
    fn extend(&self, id: &[u8; 32]) -> Result<(), LockError> {
        let mut g = self.0.lock().unwrap();
        let d: [u8; 32] = Sha256::digest(id).into();
        *g = constellation_attest::measurements::extend_sha256(&g, &d);
        Ok(())
    }
}

struct NoIssuer;

impl Issuer for NoIssuer {
    fn variant(&self) -> Variant {
        Variant::QemuVtpm
    }
    fn issue(&self, _: &[u8], _: &[u8]) -> Result<AttestationDocument, IssueError> {
        Err(IssueError::Tpm {
            operation: "quote",
            message: "no TPM in this test".into(),
        })
    }
}

const INIT_SECRET: &[u8] = b"init-secret-for-tests";
const MASTER: [u8; 32] = [0x5a; 32];
const SALT: [u8; 32] = [0x17; 32];

/// A control plane on the emulated disk at `dir` (a new one per boot, like a reboot).
fn control_plane(dir: &std::path::Path, phase: Phase) -> Arc<NodeContext> {
    let disk = Arc::new(HostDirectoryDisk::new(dir.join("disk")));
    disk.prepare().unwrap();
    Arc::new(NodeContext {
        info: InstanceInfo {
            role: Role::ControlPlane,
            name: "cp-0".into(),
            private_ip: "127.0.0.1".parse().unwrap(),
            join_endpoints: vec![],
            init_secret_hash: Some(hash_init_secret(INIT_SECRET).unwrap()),
            image_version: None,
            network: Vec::new(),
        },
        image_version: "test".into(),
        metrics: Metrics::new(),
        logs: LogRing::new(),
        issuer: Arc::new(NoIssuer),
        lock: Arc::new(MemoryPcr15::default()),
        disk,
        net: Arc::new(NoopNetwork::new(WgKeyPair::generate())),
        validators: Validators::default(),
        parse_config: Arc::new(constellation_node::attestation::parse_config),
        secrets: Default::default(),
        cluster: Default::default(),
        state_dir: Default::default(),
        bootstrap_lock: Default::default(),
        phase: tokio::sync::watch::channel(phase).0,
        endpoints: Default::default(),
        peers_key: Default::default(),
    })
}

async fn init(ctx: &Arc<NodeContext>) {
    let s = InitServer::new(ctx.clone())
        .init(Request::new(InitRequest {
            master_secret: MASTER.to_vec(),
            master_salt: SALT.to_vec(),
            measurement_salt: vec![0x33; 32],
            cluster_name: "test-cluster".into(),
            init_secret: INIT_SECRET.to_vec(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let msgs: Vec<_> = s.into_inner().map(|r| r.unwrap()).collect().await;
    assert!(
        matches!(
            msgs.last().and_then(|m| m.kind.as_ref()),
            Some(Kind::Success(_))
        ),
        "{msgs:?}"
    );
}

async fn recover(ctx: &Arc<NodeContext>) -> Result<(), tonic::Status> {
    RecoveryServer::new(ctx.clone())
        .recover(Request::new(RecoverRequest {
            master_secret: MASTER.to_vec(),
            master_salt: SALT.to_vec(),
        }))
        .await
        .map(|_| ())
}

/// An attestation config the host would like the recovered control plane to use.
const HOST_CONFIG: &str =
    r#"{"variant":"qemu-vtpm","measurements":{"4":{"expected":"00","warn_only":true}}}"#;

#[tokio::test]
async fn recovery_refuses_cluster_state_not_authenticated_by_the_master_secret() {
    let d = tempfile::tempdir().unwrap();
    let first = control_plane(d.path(), Phase::Fresh);
    init(&first).await;
    let state_dir = first.state_dir.read().unwrap().clone().unwrap();
    let file = state_dir.join(CLUSTER_STATE_FILE);
    let genuine = std::fs::read_to_string(&file).unwrap();
    assert!(genuine.contains("\"mac\""), "{genuine}");
    first.disk.close().unwrap();
    drop(first);

    // Another attestation config with the genuine MAC kept, with the MAC removed, and as an
    // unauthenticated plain file: each is refused, naming why, and nothing is adopted.
    let mut v: serde_json::Value = serde_json::from_str(&genuine).unwrap();
    let inner: serde_json::Value = v["state"].clone();
    let mut forged_state = inner.clone();
    forged_state["attestation_config_json"] = HOST_CONFIG.into();
    forged_state["removed"] = serde_json::json!(["cp-1", "cp-2"]);
    v["state"] = forged_state.clone();
    let kept_mac = serde_json::to_string(&v).unwrap();
    v["mac"] = serde_json::Value::Null;
    let no_mac = serde_json::to_string(&v).unwrap();
    let plain = serde_json::to_string(&forged_state).unwrap();
    for (case, content, why) in [
        (
            "changed config, genuine MAC",
            &kept_mac,
            "MAC does not match",
        ),
        ("MAC removed", &no_mac, "carries no MAC"),
        ("plain file", &plain, "carries no MAC"),
    ] {
        std::fs::write(&file, content).unwrap();
        let ctx = control_plane(d.path(), Phase::AwaitingRejoin);
        let e = recover(&ctx).await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{case}: {e:?}");
        assert!(e.message().contains(why), "{case}: {}", e.message());
        assert!(
            e.message()
                .contains("not authenticated by this cluster's master secret"),
            "{case}: {}",
            e.message()
        );
        assert_eq!(ctx.phase(), Phase::AwaitingRejoin, "{case}");
        assert!(ctx.secrets().is_err(), "{case}: secrets set");
        let c = ctx.cluster.lock().unwrap().clone();
        assert!(
            c.attestation_config_json.is_empty() && c.removed.is_empty(),
            "{case}: adopted {c:?}"
        );
        ctx.disk.close().unwrap();
    }

    // The genuine file: recovery succeeds and adopts it.
    std::fs::write(&file, &genuine).unwrap();
    let ctx = control_plane(d.path(), Phase::AwaitingRejoin);
    recover(&ctx).await.unwrap();
    assert_eq!(ctx.phase(), Phase::Bootstrapped);
    assert!(ctx.cluster.lock().unwrap().members.contains_key("cp-0"));
}
