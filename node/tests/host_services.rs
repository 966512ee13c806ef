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
use constellation_node::bootstrap::{BoxFut, Transport, fetch_peers, join_loop, rejoin_loop};
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
    node_with(
        dir,
        role,
        with_hash,
        "cp-0",
        vec![],
        Arc::new(MemoryPcr15::default()),
        Phase::Fresh,
    )
}

fn node_with(
    dir: &std::path::Path,
    role: Role,
    with_hash: bool,
    name: &str,
    join_endpoints: Vec<String>,
    lock: Arc<MemoryPcr15>,
    phase: Phase,
) -> Arc<NodeContext> {
    let disk = Arc::new(HostDirectoryDisk::new(dir.join("disk")));
    disk.prepare().unwrap();
    let ctx = NodeContext {
        info: InstanceInfo {
            role,
            name: name.into(),
            private_ip: if role == Role::Worker {
                "127.0.0.2"
            } else {
                "127.0.0.1"
            }
            .parse()
            .unwrap(),
            join_endpoints,
            init_secret_hash: with_hash.then(|| hash_init_secret(INIT_SECRET).unwrap()),
            image_version: None,
            network: Vec::new(),
        },
        image_version: "test".into(),
        metrics: Metrics::new(),
        logs: LogRing::new(),
        issuer: Arc::new(NoIssuer),
        lock,
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

/// Claims of an attested node whose PCR 15 holds `pcr15`.
fn claims(pcr15: [u8; 32]) -> VerifiedClaims {
    VerifiedClaims {
        variant: Variant::QemuVtpm,
        user_data: vec![],
        measurements: BTreeMap::from([(4, vec![0xab; 32]), (15, pcr15.to_vec())]),
        warnings: vec![],
        platform: PlatformClaims::HostTrustedAk,
        event_log_verified: false,
    }
}

/// A request from an attested node that has not joined since it booted (PCR 15 zero).
fn attested<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.extensions_mut().insert(claims([0; 32]));
    r
}

/// A request from an attested member of the cluster `cluster_id` (PCR 15 extended with it).
fn member<T>(msg: T, cluster_id: &[u8]) -> Request<T> {
    let mut r = Request::new(msg);
    r.extensions_mut()
        .insert(claims(constellation_attest::expected_pcr15(cluster_id)));
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
    cp.disk_uuid = "0123abcd-0000-4000-8000-00000000c0de".into();
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
        .get_data_key(member(
            GetDataKeyRequest {
                data_key_id: "my-volume".into(),
                length: 0,
            },
            &cid,
        ))
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
        .get_data_key(member(
            GetDataKeyRequest {
                data_key_id: "a/b".into(),
                length: 0,
            },
            &cid,
        ))
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

fn worker_join(name: &str, uuid: &str, ip: &str) -> IssueJoinTicketRequest {
    IssueJoinTicketRequest {
        node_name: name.into(),
        disk_uuid: uuid.into(),
        is_control_plane: false,
        wireguard_public_key: vec![7; 32],
        private_ip: ip.into(),
        image_version: "test".into(),
    }
}

/// Tickets are bound to the recorded member, the cluster's own keys are out of GetDataKey's
/// reach, and removal revokes the node's disk, not only the name it asked under.
#[tokio::test]
async fn roles_membership_and_removal_are_enforced() {
    let d = tempfile::tempdir().unwrap();
    let ctx = node(d.path(), Role::ControlPlane, true);
    let msgs = run_init(&ctx, INIT_SECRET).await.unwrap();
    let Some(Kind::Success(ok)) = &msgs.last().unwrap().kind else {
        panic!("{msgs:?}")
    };
    let cid = ok.cluster_id.clone();
    let join = JoinServer::new(ctx.clone());
    let w1_disk = "0123abcd-0000-4000-8000-000000000001";
    join.issue_join_ticket(attested(worker_join("w-1", w1_disk, "127.0.0.2")))
        .await
        .unwrap();

    // Rejoin: unknown names are refused; a worker cannot rejoin as a control plane.
    let e = join
        .issue_rejoin_ticket(attested(rejoin(
            "x",
            "0123abcd-0000-4000-8000-0000000000ff",
        )))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let mut as_cp = rejoin("w-1", w1_disk);
    as_cp.is_control_plane = true;
    for req in [attested(as_cp.clone()), member(as_cp, &cid)] {
        let e = join.issue_rejoin_ticket(req).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    }
    // The recorded role decides: a worker's rejoin carries no control-plane material.
    let r = join
        .issue_rejoin_ticket(member(rejoin("w-1", w1_disk), &cid))
        .await
        .unwrap()
        .into_inner();
    assert!(r.control_plane.is_none());

    // A running member cannot join again, as a control plane or under a new name.
    let mut cp_req = worker_join("cp-9", "0123abcd-0000-4000-8000-000000000009", "127.0.0.9");
    cp_req.is_control_plane = true;
    let e = join
        .issue_join_ticket(member(cp_req, &cid))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // A join under an existing member's name does not overwrite that member.
    let e = join
        .issue_join_ticket(attested(worker_join(
            "w-1",
            "0123abcd-0000-4000-8000-0000000000aa",
            "127.0.0.66",
        )))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    {
        let c = ctx.cluster.lock().unwrap();
        assert_eq!(c.members["w-1"].disk_uuid, w1_disk);
        assert_eq!(c.members["w-1"].private_ip, "127.0.0.2");
    }
    join.issue_rejoin_ticket(attested(rejoin("w-1", w1_disk)))
        .await
        .expect("the real w-1 still rejoins");

    // GetDataKey: never the cluster CA's key nor a state-disk key; members only.
    let key = KeyServer::new(ctx.clone());
    let ca_pem = x509_parser::pem::parse_x509_pem(ok.cluster_ca_pem.as_bytes())
        .unwrap()
        .1;
    let ca = ca_pem.parse_x509().unwrap();
    let ca_public = ca.public_key().subject_public_key.data.to_vec();
    for id in ["constellationClusterCA", "clusterCA"] {
        if let Ok(k) = key
            .get_data_key(member(
                GetDataKeyRequest {
                    data_key_id: id.into(),
                    length: 0,
                },
                &cid,
            ))
            .await
        {
            use p256::elliptic_curve::sec1::ToEncodedPoint;
            let k = k.into_inner().data_key;
            if let Ok(sk) = p256::SecretKey::from_slice(&k) {
                let public = sk.public_key().to_encoded_point(false);
                assert_ne!(
                    public.as_bytes(),
                    &ca_public[..],
                    "GetDataKey({id}) returned the cluster CA's private key"
                );
            }
        }
    }
    for id in [w1_disk, "measurementSecret"] {
        let e = key
            .get_data_key(member(
                GetDataKeyRequest {
                    data_key_id: id.into(),
                    length: 0,
                },
                &cid,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{id}: {e:?}");
    }
    let e = key
        .get_data_key(attested(GetDataKeyRequest {
            data_key_id: "my-volume".into(),
            length: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::PermissionDenied,
        "non-members get no data keys"
    );

    // Removal revokes w-1's disk: neither a rejoin nor a fresh join under another name
    // gets a ticket for it.
    let m = ManagementServer::new(ctx.clone());
    m.remove_node(Request::new(RemoveNodeRequest { name: "w-1".into() }))
        .await
        .unwrap();
    for req in [
        attested(rejoin("w-1b", w1_disk)),
        member(rejoin("w-1b", w1_disk), &cid),
    ] {
        let e = join.issue_rejoin_ticket(req).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    }
    let e = join
        .issue_join_ticket(attested(worker_join("w-1b", w1_disk, "127.0.0.2")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
}

/// A transport without channel security for in-process servers: the claims the aTLS layer
/// would put into the requests are inserted by the test's interceptor instead.
struct PlainTransport;

impl Transport for PlainTransport {
    fn serve_node_attested(
        &self,
        _: tonic::service::Routes,
        _: tokio::net::TcpListener,
    ) -> BoxFut<'static, Result<(), String>> {
        Box::pin(async { Err("not used in this test".to_string()) })
    }
    fn serve_client_attested(
        &self,
        _: tonic::service::Routes,
        _: tokio::net::TcpListener,
        _: Validators,
    ) -> BoxFut<'static, Result<(), String>> {
        Box::pin(async { Err("not used in this test".to_string()) })
    }
    fn connect_attesting(
        &self,
        endpoint: String,
    ) -> BoxFut<'static, Result<tonic::transport::Channel, String>> {
        Box::pin(async move {
            tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| e.to_string())
        })
    }
}

async fn spawn_server(routes: tonic::service::Routes) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

/// An impostor at a join endpoint: answers every rejoin with random secrets.
#[derive(Default, Clone)]
struct Impostor(Arc<std::sync::atomic::AtomicUsize>);

#[tonic::async_trait]
impl JoinService for Impostor {
    async fn issue_join_ticket(
        &self,
        _: Request<IssueJoinTicketRequest>,
    ) -> Result<tonic::Response<IssueJoinTicketResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("impostor"))
    }
    async fn issue_rejoin_ticket(
        &self,
        _: Request<IssueRejoinTicketRequest>,
    ) -> Result<tonic::Response<IssueRejoinTicketResponse>, tonic::Status> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(tonic::Response::new(IssueRejoinTicketResponse {
            state_disk_key: rand::random::<[u8; 32]>().to_vec(),
            measurement_secret: rand::random::<[u8; 32]>().to_vec(),
            measurement_salt: rand::random::<[u8; 32]>().to_vec(),
            control_plane: None,
            control_plane_endpoints: vec![],
        }))
    }
    async fn get_peers(
        &self,
        _: Request<GetPeersRequest>,
    ) -> Result<tonic::Response<GetPeersResponse>, tonic::Status> {
        // Its own key for a control plane's mesh address, with a made-up authenticator.
        Ok(tonic::Response::new(GetPeersResponse {
            peers: vec![WireGuardPeer {
                node_name: "cp-0".into(),
                public_key: vec![0x66; 32],
                endpoint: "127.0.0.66:51820".into(),
                allowed_ips: vec!["10.99.0.1/32".into()],
            }],
            control_plane_endpoints: vec![],
            authenticator: rand::random::<[u8; 32]>().to_vec(),
        }))
    }
}

/// A rejoin ticket from whoever answers is proven (its key opens the disk, its cluster ID is
/// the one the disk recorded) before the node locks PCR 15: an impostor's ticket leaves the
/// node unlocked, and the genuine ticket from the next endpoint succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoin_ignores_an_impostor_ticket_and_stays_unlocked() {
    use constellation_node_api::v1::join_service_server::JoinServiceServer;
    let d = tempfile::tempdir().unwrap();
    let cp = node(d.path(), Role::ControlPlane, true);
    run_init(&cp, INIT_SECRET).await.unwrap();
    let cid = cp.secrets().unwrap().cluster_id;

    // The genuine control plane's JoinService; the interceptor adds the worker's claims with
    // its current PCR 15, as the aTLS layer would.
    let w_lock = Arc::new(MemoryPcr15::default());
    let l = w_lock.clone();
    let genuine = spawn_server(tonic::service::Routes::new(
        JoinServiceServer::with_interceptor(
            JoinServer::new(cp.clone()),
            move |mut r: Request<()>| {
                r.extensions_mut().insert(claims(l.read().unwrap()));
                Ok(r)
            },
        ),
    ))
    .await;
    let impostor = Impostor::default();
    let fake = spawn_server(tonic::service::Routes::new(JoinServiceServer::new(
        impostor.clone(),
    )))
    .await;
    let transport: Arc<dyn Transport> = Arc::new(PlainTransport);

    // w-1 joins through the genuine control plane.
    let wd = tempfile::tempdir().unwrap();
    let w = node_with(
        wd.path(),
        Role::Worker,
        false,
        "w-1",
        vec![genuine.clone()],
        w_lock.clone(),
        Phase::Fresh,
    );
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        join_loop(
            w.clone(),
            transport.clone(),
            std::time::Duration::from_secs(60),
        ),
    )
    .await
    .expect("w-1 joins");
    assert_eq!(w.phase(), Phase::Bootstrapped);
    drop(w);

    // Power cycle: PCR 15 reset, the disk locked. The impostor's endpoint comes first.
    *w_lock.0.lock().unwrap() = [0; 32];
    let w = node_with(
        wd.path(),
        Role::Worker,
        false,
        "w-1",
        vec![fake.clone(), genuine.clone()],
        w_lock.clone(),
        Phase::AwaitingRejoin,
    );
    let (fake2, genuine2, transport2) = (fake, genuine, transport.clone());
    let done = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        rejoin_loop(w.clone(), transport, std::time::Duration::from_secs(60)),
    )
    .await;
    assert!(
        impostor.0.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "the impostor was asked first"
    );
    assert!(
        done.is_ok(),
        "no rejoin within 60 s: the impostor's ticket locked the node (PCR 15 = {})",
        hex::encode(w_lock.read().unwrap())
    );
    assert_eq!(w.phase(), Phase::Bootstrapped);
    assert_eq!(
        w_lock.read().unwrap(),
        constellation_attest::expected_pcr15(&cid),
        "locked once, to the genuine cluster"
    );

    // GetPeers answers count only when a control plane authenticated them for this request.
    let (peers, _) = fetch_peers(&w, &transport2, &genuine2)
        .await
        .expect("the genuine answer is accepted");
    assert_eq!(peers.len(), 1, "cp-0 is w-1's peer");
    assert_ne!(peers[0].public_key.0, [0x66; 32]);
    let e = fetch_peers(&w, &transport2, &fake2).await.unwrap_err();
    assert!(e.contains("not authenticated"), "{e}");
}

/// A control plane that completed the connection and then froze: it never answers.
#[derive(Default, Clone)]
struct Frozen(Arc<std::sync::atomic::AtomicUsize>);

#[tonic::async_trait]
impl JoinService for Frozen {
    async fn issue_join_ticket(
        &self,
        _: Request<IssueJoinTicketRequest>,
    ) -> Result<tonic::Response<IssueJoinTicketResponse>, tonic::Status> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::pending().await
    }
    async fn issue_rejoin_ticket(
        &self,
        _: Request<IssueRejoinTicketRequest>,
    ) -> Result<tonic::Response<IssueRejoinTicketResponse>, tonic::Status> {
        std::future::pending().await
    }
    async fn get_peers(
        &self,
        _: Request<GetPeersRequest>,
    ) -> Result<tonic::Response<GetPeersResponse>, tonic::Status> {
        std::future::pending().await
    }
}

/// The plain transport with a short per-call deadline.
struct ShortDeadline;

impl Transport for ShortDeadline {
    fn serve_node_attested(
        &self,
        r: tonic::service::Routes,
        l: tokio::net::TcpListener,
    ) -> BoxFut<'static, Result<(), String>> {
        PlainTransport.serve_node_attested(r, l)
    }
    fn serve_client_attested(
        &self,
        r: tonic::service::Routes,
        l: tokio::net::TcpListener,
        v: Validators,
    ) -> BoxFut<'static, Result<(), String>> {
        PlainTransport.serve_client_attested(r, l, v)
    }
    fn connect_attesting(
        &self,
        endpoint: String,
    ) -> BoxFut<'static, Result<tonic::transport::Channel, String>> {
        PlainTransport.connect_attesting(endpoint)
    }
    fn rpc_deadline(&self) -> std::time::Duration {
        std::time::Duration::from_secs(3)
    }
}

/// A join endpoint that accepts the call and never answers costs the joiner one per-call
/// deadline; it then joins through the next endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_moves_past_a_frozen_control_plane_within_the_deadline() {
    use constellation_node_api::v1::join_service_server::JoinServiceServer;
    let d = tempfile::tempdir().unwrap();
    let cp = node(d.path(), Role::ControlPlane, true);
    run_init(&cp, INIT_SECRET).await.unwrap();
    let genuine = spawn_server(tonic::service::Routes::new(
        JoinServiceServer::with_interceptor(JoinServer::new(cp.clone()), |mut r: Request<()>| {
            r.extensions_mut().insert(claims([0; 32]));
            Ok(r)
        }),
    ))
    .await;
    let frozen = Frozen::default();
    let stuck = spawn_server(tonic::service::Routes::new(JoinServiceServer::new(
        frozen.clone(),
    )))
    .await;
    let transport: Arc<dyn Transport> = Arc::new(ShortDeadline);
    let deadline = transport.rpc_deadline();
    let wd = tempfile::tempdir().unwrap();
    let w = node_with(
        wd.path(),
        Role::Worker,
        false,
        "w-1",
        vec![stuck, genuine],
        Arc::new(MemoryPcr15::default()),
        Phase::Fresh,
    );
    let t0 = std::time::Instant::now();
    tokio::time::timeout(
        deadline * 5,
        join_loop(w.clone(), transport, std::time::Duration::from_secs(60)),
    )
    .await
    .expect("the joiner gave up on the frozen control plane and joined through the next one");
    let took = t0.elapsed();
    assert_eq!(w.phase(), Phase::Bootstrapped);
    assert_eq!(frozen.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(took >= deadline, "{took:?}");
    eprintln!("joined after {took:?} (per-call deadline {deadline:?})");
}
