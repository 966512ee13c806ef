//! In-process tests of the service logic (init, join, key, management) on the host tier:
//! HostDirectoryDisk (unencrypted directory) and NoopNetwork. Channel security is not
//! exercised here (host_cluster.rs runs processes over aTLS); attested peers are simulated
//! by putting verified claims into the request extensions, exactly where the aTLS layer
//! puts them.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use constellation_attest::validator::{
    IssueError, Issuer, PlatformClaims, Validators, VerifiedClaims,
};
use constellation_attest::{AttestationDocument, Variant};
use constellation_node::disk::{HostDirectoryDisk, StateDisk};
use constellation_node::lock::{ClusterLock, LockError};
use constellation_node::logging::LogRing;
use constellation_node::metadata::{InstanceInfo, Role};
use constellation_node::metrics::Metrics;
use constellation_node::netcrypt::{NoopNetwork, WgKeyPair};
use constellation_node::services::init::{InitServer, hash_init_secret};
use constellation_node::services::join::JoinServer;
use constellation_node::services::key::KeyServer;
use constellation_node::services::management::ManagementServer;
use constellation_node::services::{NodeContext, Phase};
use constellation_node_api::v1::init_response::Kind;
use constellation_node_api::v1::init_service_server::InitService;
use constellation_node_api::v1::join_service_server::JoinService;
use constellation_node_api::v1::key_service_server::KeyService;
use constellation_node_api::v1::management_service_server::ManagementService;
use constellation_node_api::v1::*;
use futures::StreamExt;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use tonic::{Code, Request};

/// Test double of PCR 15 with TPM extend semantics (SHA-256(old ‖ SHA-256(data))).
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

/// Issuer double: these tests never issue documents (verification runs in host_cluster.rs).
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
const MSALT: [u8; 32] = [0x33; 32];

fn node(dir: &std::path::Path, role: Role, with_hash: bool) -> Arc<NodeContext> {
    let disk = Arc::new(HostDirectoryDisk::new(dir.join("disk")));
    disk.prepare().unwrap();
    let ctx = NodeContext {
        info: InstanceInfo {
            role,
            name: "cp-0".into(),
            private_ip: "127.0.0.1".parse().unwrap(),
            join_endpoints: vec![],
            init_secret_hash: with_hash.then(|| hash_init_secret(INIT_SECRET).unwrap()),
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
        phase: tokio::sync::watch::channel(Phase::Fresh).0,
        endpoints: Default::default(),
    };
    Arc::new(ctx)
}

fn init_request(secret: &[u8]) -> InitRequest {
    InitRequest {
        master_secret: MASTER.to_vec(),
        master_salt: SALT.to_vec(),
        measurement_salt: MSALT.to_vec(),
        cluster_name: "test-cluster".into(),
        init_secret: secret.to_vec(),
        attestation_config_json: String::new(),
        kubernetes_version: String::new(),
        ..Default::default()
    }
}

fn hkdf(ikm: &[u8], salt: &[u8], info: &str) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info.as_bytes(), &mut out)
        .unwrap();
    out
}

fn attested<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.extensions_mut().insert(VerifiedClaims {
        variant: Variant::QemuVtpm,
        user_data: vec![],
        measurements: BTreeMap::from([(4, vec![0xab; 32])]),
        warnings: vec![],
        platform: PlatformClaims::HostTrustedAk,
        event_log_verified: false,
    });
    r
}

async fn run_init(
    ctx: &Arc<NodeContext>,
    secret: &[u8],
) -> Result<Vec<InitResponse>, tonic::Status> {
    let s = InitServer::new(ctx.clone())
        .init(Request::new(init_request(secret)))
        .await?;
    Ok(s.into_inner().map(|r| r.unwrap()).collect().await)
}

fn rejoin(name: &str, uuid: &str) -> IssueRejoinTicketRequest {
    IssueRejoinTicketRequest {
        node_name: name.into(),
        disk_uuid: uuid.into(),
        is_control_plane: false,
    }
}

#[tokio::test]
async fn init_join_key_management_flow() {
    let d = tempfile::tempdir().unwrap();
    let ctx = node(d.path(), Role::ControlPlane, true);
    let listing = |p: &std::path::Path| {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let before = listing(&d.path().join("disk"));

    // Wrong secret: PermissionDenied and nothing changed.
    let e = run_init(&ctx, b"wrong").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(ctx.lock.read().unwrap(), [0u8; 32]);
    assert_eq!(ctx.phase(), Phase::Fresh);
    assert_eq!(listing(&d.path().join("disk")), before);
    assert!(!ctx.disk.is_initialized().unwrap());

    let msgs = run_init(&ctx, INIT_SECRET).await.unwrap();
    assert!(
        msgs.iter()
            .any(|m| matches!(&m.kind, Some(Kind::LogLine(_))))
    );
    let Some(Kind::Success(ok)) = &msgs.last().unwrap().kind else {
        panic!("{msgs:?}")
    };
    // Independent HKDF computation.
    let ms = hkdf(&MASTER, &SALT, "key-measurementSecret");
    let cid = hkdf(&ms, &MSALT, "key-clusterID");
    assert_eq!(ok.cluster_id, cid);
    assert_eq!(ok.kubernetes_status, "not installed");
    assert!(ok.kubeconfig.is_empty());
    assert!(ok.owner_certificate_pem.contains("BEGIN CERTIFICATE"));
    assert_eq!(
        ctx.lock.read().unwrap(),
        constellation_attest::expected_pcr15(&cid)
    );
    assert!(ctx.disk.is_initialized().unwrap());

    // Second Init: FailedPrecondition.
    assert_eq!(
        run_init(&ctx, INIT_SECRET).await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    // Join: unauthenticated refused; attested gets the derived keys.
    let join = JoinServer::new(ctx.clone());
    let uuid = "0123ABCD-0000-4000-8000-00000000CAFE";
    let disk_key = hkdf(&MASTER, &SALT, &format!("key-{}", uuid.to_lowercase()));
    let req = IssueJoinTicketRequest {
        node_name: "w-1".into(),
        disk_uuid: uuid.into(),
        is_control_plane: false,
        wireguard_public_key: vec![7; 32],
        private_ip: "127.0.0.2".into(),
        image_version: "test".into(),
    };
    let e = join
        .issue_join_ticket(Request::new(req.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let t = join
        .issue_join_ticket(attested(req.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.state_disk_key, disk_key);
    assert_eq!(t.measurement_secret, ms);
    assert_eq!(t.cluster_id, cid);
    assert!(
        t.control_plane.is_none(),
        "workers never get the master secret"
    );
    assert_eq!(t.peers.len(), 1, "the control plane is the worker's peer");
    let mut bad = req.clone();
    bad.disk_uuid = "../../etc".into();
    assert_eq!(
        join.issue_join_ticket(attested(bad))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let mut cp = req.clone();
    cp.node_name = "cp-1".into();
    cp.is_control_plane = true;
    let t = join
        .issue_join_ticket(attested(cp))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.control_plane.unwrap().master_secret, MASTER);

    // Rejoin gives the same disk key; another disk for a known name is refused.
    let r = join
        .issue_rejoin_ticket(attested(rejoin("w-1", uuid)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state_disk_key, disk_key);
    let e = join
        .issue_rejoin_ticket(attested(rejoin(
            "w-1",
            "0123abcd-0000-4000-8000-000000000000",
        )))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // KeyService.
    let key = KeyServer::new(ctx.clone());
    let k = key
        .get_data_key(attested(GetDataKeyRequest {
            data_key_id: "my-volume".into(),
            length: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(k.data_key, hkdf(&MASTER, &SALT, "key-my-volume"));
    let e = key
        .get_data_key(Request::new(GetDataKeyRequest {
            data_key_id: "x".into(),
            length: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = key
        .get_data_key(attested(GetDataKeyRequest {
            data_key_id: "a/b".into(),
            length: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Management: status lists members; removal blocks rejoin; configs are validated.
    let m = ManagementServer::new(ctx.clone());
    let st = m
        .get_status(Request::new(GetStatusRequest {}))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = st.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["cp-0", "cp-1", "w-1"]);
    assert!(
        st.nodes
            .iter()
            .any(|n| n.attestation_summary.contains("pcr[4]=abab"))
    );
    m.remove_node(Request::new(RemoveNodeRequest { name: "w-1".into() }))
        .await
        .unwrap();
    let e = join
        .issue_rejoin_ticket(attested(rejoin("w-1", uuid)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = m
        .set_attestation_config(Request::new(SetAttestationConfigRequest {
            attestation_config_json: "{".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let cfg = format!(
        r#"{{"variant":"qemu-vtpm","measurements":{{"4":"{}"}}}}"#,
        "ab".repeat(32)
    );
    m.set_attestation_config(Request::new(SetAttestationConfigRequest {
        attestation_config_json: cfg.clone(),
    }))
    .await
    .unwrap();
    assert_eq!(ctx.validators.variants(), [Variant::QemuVtpm]);

    // Secrets never in logs or metrics.
    let text = format!(
        "{}\n{}",
        ctx.logs.recent(1000).join("\n"),
        ctx.metrics.encode()
    );
    for secret in [&MASTER[..], &ms[..], &k.data_key[..], &disk_key[..]] {
        assert!(!text.contains(&hex::encode(secret)));
    }
    assert!(
        ctx.metrics
            .encode()
            .contains("constellation_node_joins_total")
    );
}

#[tokio::test]
async fn init_refused_on_workers_without_hash_and_on_bad_input() {
    let d = tempfile::tempdir().unwrap();
    let w = node(d.path(), Role::Worker, true);
    assert_eq!(
        run_init(&w, INIT_SECRET).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    let d2 = tempfile::tempdir().unwrap();
    let c = node(d2.path(), Role::ControlPlane, false);
    assert_eq!(
        run_init(&c, INIT_SECRET).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    // Bad input after a right secret: InvalidArgument, nothing changed.
    let d3 = tempfile::tempdir().unwrap();
    let c = node(d3.path(), Role::ControlPlane, true);
    let mut req = init_request(INIT_SECRET);
    req.master_secret = vec![1; 8];
    let e = InitServer::new(c.clone())
        .init(Request::new(req))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::InvalidArgument);
    let mut req = init_request(INIT_SECRET);
    req.attestation_config_json = "{not json".into();
    let e = InitServer::new(c.clone())
        .init(Request::new(req))
        .await
        .err()
        .unwrap();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(c.lock.read().unwrap(), [0u8; 32]);
    assert!(!c.disk.is_initialized().unwrap());
}
