//! Host tier: unauthenticated floods against a node's public services do not stop legitimate
//! work. A flood of GetAttestation calls is refused with RESOURCE_EXHAUSTED beyond the
//! service's limits while an attested handshake on the same TPM completes; concurrent wrong
//! Init calls run a bounded number of Argon2 checks and a correct Init still succeeds; bogus
//! Recover calls do not queue in front of a correct one.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use constellation_attest::atls::{AtlsClient, AtlsServer, ServerVerification, serve_router};
use constellation_attest::validator::{
    IssueError, Issuer, PlatformClaims, ValidationError, Validator, Validators, VerifiedClaims,
};
use constellation_attest::{AttestationDocument, Variant};
use constellation_node::disk::{BootState, DiskError, DiskKey, HostDirectoryDisk, StateDisk};
use constellation_node::lock::{ClusterLock, LockError};
use constellation_node::logging::LogRing;
use constellation_node::metadata::{InstanceInfo, Role};
use constellation_node::metrics::Metrics;
use constellation_node::netcrypt::{NoopNetwork, WgKeyPair};
use constellation_node::services::init::InitServer;
use constellation_node::services::recovery::RecoveryServer;
use constellation_node::services::verify::VerifyServer;
use constellation_node::services::{NodeContext, Phase};
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

/// The host-directory disk, with every unlock attempt taking `slot` (the Argon2 key-slot
/// check of a real LUKS2 disk) and counted.
struct SlowDisk {
    inner: HostDirectoryDisk,
    slot: Duration,
    unlocks: AtomicUsize,
}

impl StateDisk for SlowDisk {
    fn prepare(&self) -> Result<BootState, DiskError> {
        self.inner.prepare()
    }
    fn uuid(&self) -> Result<String, DiskError> {
        self.inner.uuid()
    }
    fn is_initialized(&self) -> Result<bool, DiskError> {
        self.inner.is_initialized()
    }
    fn rekey(&self, k: &DiskKey) -> Result<(), DiskError> {
        self.inner.rekey(k)
    }
    fn unlock(&self, k: &DiskKey) -> Result<(), DiskError> {
        self.unlocks.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(self.slot);
        self.inner.unlock(k)
    }
    fn mount(&self) -> Result<PathBuf, DiskError> {
        self.inner.mount()
    }
    fn close(&self) -> Result<(), DiskError> {
        self.inner.close()
    }
    fn remember_join_endpoints(&self, e: &[String]) -> Result<(), DiskError> {
        self.inner.remember_join_endpoints(e)
    }
    fn remembered_join_endpoints(&self) -> Result<Vec<String>, DiskError> {
        self.inner.remembered_join_endpoints()
    }
}

const INIT_SECRET: &[u8] = b"init-secret-for-tests";
const MASTER: [u8; 32] = [0x5a; 32];
const SALT: [u8; 32] = [0x17; 32];

/// An argon2id hash of the init secret with a small memory cost (the bound is shown by
/// counting concurrent checks, not by their size).
fn cheap_hash(secret: &[u8]) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let params = argon2::Params::new(4096, 1, 1, None).unwrap();
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(secret, &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string()
}

fn control_plane(
    disk: Arc<dyn StateDisk>,
    issuer: Arc<dyn Issuer>,
    lock: Arc<MemoryPcr15>,
    phase: Phase,
) -> Arc<NodeContext> {
    disk.prepare().unwrap();
    Arc::new(NodeContext {
        info: InstanceInfo {
            role: Role::ControlPlane,
            name: "cp-0".into(),
            private_ip: "127.0.0.1".parse().unwrap(),
            join_endpoints: vec![],
            init_secret_hash: Some(cheap_hash(INIT_SECRET)),
            image_version: None,
            network: Vec::new(),
        },
        image_version: "test".into(),
        metrics: Metrics::new(),
        logs: LogRing::new(),
        issuer,
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
    })
}

fn init_request(secret: &[u8]) -> InitRequest {
    InitRequest {
        master_secret: MASTER.to_vec(),
        master_salt: SALT.to_vec(),
        measurement_salt: vec![0x33; 32],
        cluster_name: "test-cluster".into(),
        init_secret: secret.to_vec(),
        ..Default::default()
    }
}

async fn init(server: &InitServer, secret: &[u8]) -> Result<(), tonic::Status> {
    let s = server.init(Request::new(init_request(secret))).await?;
    let msgs: Vec<_> = s.into_inner().map(|r| r.unwrap()).collect().await;
    assert!(
        matches!(
            msgs.last().and_then(|m| m.kind.as_ref()),
            Some(Kind::Success(_))
        ),
        "{msgs:?}"
    );
    Ok(())
}

/// 64 concurrent Init calls with a wrong secret run at most two Argon2 checks at a time
/// (so memory stays at two hashes' worth), are refused, and a correct Init sent among them
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_init_flood_runs_bounded_checks_and_a_correct_init_succeeds() {
    let d = tempfile::tempdir().unwrap();
    let disk = Arc::new(HostDirectoryDisk::new(d.path().join("disk")));
    let ctx = control_plane(disk, Arc::new(NoIssuer), Arc::default(), Phase::Fresh);
    let server = InitServer::new(ctx.clone());
    let flood: Vec<_> = (0..64)
        .map(|i| {
            let s = server.clone();
            tokio::spawn(async move { init(&s, format!("wrong-{i}").as_bytes()).await })
        })
        .collect();
    let t0 = Instant::now();
    init(&server, INIT_SECRET)
        .await
        .expect("the correct Init succeeds during the flood");
    let took = t0.elapsed();
    for f in flood {
        let e = f.await.unwrap().unwrap_err();
        assert!(
            matches!(e.code(), Code::PermissionDenied | Code::FailedPrecondition),
            "{e:?}"
        );
    }
    let peak = server.peak_concurrent_checks();
    assert!(
        (1..=constellation_node::services::init::MAX_CONCURRENT_SECRET_CHECKS).contains(&peak),
        "at most {} Argon2 checks at once, saw {peak}",
        constellation_node::services::init::MAX_CONCURRENT_SECRET_CHECKS
    );
    assert_eq!(ctx.phase(), Phase::Bootstrapped);
    eprintln!("correct Init after {took:?} among 64 wrong ones; peak concurrent checks {peak}");
}

/// 50 wrong Recover calls arriving together do not queue: one runs its key-slot attempt, the
/// others are told the node is busy at once, and a correct Recover (retrying while busy)
/// completes within about one slot time, not after fifty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_recover_calls_do_not_queue_before_a_correct_one() {
    let d = tempfile::tempdir().unwrap();
    let lock = Arc::new(MemoryPcr15::default());
    let first = control_plane(
        Arc::new(HostDirectoryDisk::new(d.path().join("disk"))),
        Arc::new(NoIssuer),
        lock.clone(),
        Phase::Fresh,
    );
    init(&InitServer::new(first.clone()), INIT_SECRET)
        .await
        .unwrap();
    drop(first);
    // Power cycle: PCR 15 reset, the disk locked; the node waits for recovery.
    *lock.0.lock().unwrap() = [0; 32];
    let slot = Duration::from_millis(500);
    let disk = Arc::new(SlowDisk {
        inner: HostDirectoryDisk::new(d.path().join("disk")),
        slot,
        unlocks: AtomicUsize::new(0),
    });
    let ctx = control_plane(
        disk.clone(),
        Arc::new(NoIssuer),
        lock,
        Phase::AwaitingRejoin,
    );
    let server = RecoveryServer::new(ctx.clone());
    let wrong: Vec<_> = (0..50u8)
        .map(|i| {
            let s = server.clone();
            tokio::spawn(async move {
                s.recover(Request::new(RecoverRequest {
                    master_secret: vec![i; 32],
                    master_salt: SALT.to_vec(),
                }))
                .await
                .map(|_| ())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = Instant::now();
    let mut busy = 0;
    loop {
        let r = server
            .recover(Request::new(RecoverRequest {
                master_secret: MASTER.to_vec(),
                master_salt: SALT.to_vec(),
            }))
            .await;
        match r {
            Ok(_) => break,
            Err(s) if s.code() == Code::Unavailable => {
                busy += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => panic!("correct Recover refused: {s:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no recovery");
    }
    let took = t0.elapsed();
    let mut refused_busy = 0;
    for w in wrong {
        match w.await.unwrap() {
            Err(s) if s.code() == Code::Unavailable => refused_busy += 1,
            Err(s) => assert!(
                matches!(s.code(), Code::PermissionDenied | Code::FailedPrecondition),
                "{s:?}"
            ),
            Ok(()) => panic!("a wrong master secret recovered the node"),
        }
    }
    assert_eq!(ctx.phase(), Phase::Bootstrapped);
    // One slot for a wrong attempt that held the lock, one for the correct attempt.
    assert!(
        took < slot * 2 + Duration::from_millis(800),
        "the correct Recover took {took:?} (slot {slot:?}); bogus calls queued in front of it"
    );
    assert!(
        refused_busy >= 45,
        "only {refused_busy} of 50 bogus calls were turned away"
    );
    assert!(disk.unlocks.load(Ordering::SeqCst) <= 5);
    eprintln!(
        "correct Recover after {took:?} ({busy} busy answers); {refused_busy} bogus calls turned away"
    );
}

/// Accepts every document (this test is about resources, not about validation).
struct AcceptAll;

impl Validator for AcceptAll {
    fn variant(&self) -> Variant {
        Variant::QemuVtpm
    }
    fn validate(
        &self,
        doc: &AttestationDocument,
        _: &[u8],
    ) -> Result<VerifiedClaims, ValidationError> {
        Ok(VerifiedClaims {
            variant: Variant::QemuVtpm,
            user_data: doc.user_data.clone(),
            measurements: BTreeMap::new(),
            warnings: vec![],
            platform: PlatformClaims::HostTrustedAk,
            event_log_verified: false,
        })
    }
}

/// 500 concurrent GetAttestation calls against a node with a real (swtpm) TPM: the excess is
/// refused with RESOURCE_EXHAUSTED at once, and an attested handshake that needs the same TPM
/// completes within its normal time meanwhile.
#[test]
fn verification_flood_is_refused_fast_and_a_handshake_still_completes() {
    if std::process::Command::new("swtpm")
        .arg("--version")
        .output()
        .is_err()
    {
        constellation_testkit::skip(
            "host_flood::verification_flood",
            "swtpm is not on PATH",
            "run scripts/install-deps.sh",
        );
        return;
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(verification_flood());
}

async fn verification_flood() {
    use constellation_attest::testing::Swtpm;
    use constellation_attest::tpm::issuer::{AkAlgorithm, TpmIssuer, TpmIssuerConfig};
    let tpm = Swtpm::start().unwrap();
    let issuer: Arc<dyn Issuer> = Arc::new(
        TpmIssuer::open(TpmIssuerConfig {
            ak: AkAlgorithm::EccP256,
            ..TpmIssuerConfig::new(tpm.tcti(), Variant::QemuVtpm)
        })
        .unwrap(),
    );
    let d = tempfile::tempdir().unwrap();
    let ctx = control_plane(
        Arc::new(HostDirectoryDisk::new(d.path().join("disk"))),
        issuer.clone(),
        Arc::default(),
        Phase::Fresh,
    );

    // The handshake's normal time, without a flood.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = tonic::transport::Server::builder().add_routes(tonic::service::Routes::default());
    let served = tokio::spawn(serve_router(
        router,
        listener,
        AtlsServer::new(Some(issuer.clone()), None).unwrap(),
        std::future::pending(),
    ));
    let client = AtlsClient::new(
        None,
        ServerVerification::Attested(Validators::new(vec![Arc::new(AcceptAll)])),
    )
    .unwrap();
    let handshake = || {
        let client = client.clone();
        async move {
            let t0 = Instant::now();
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            client.connect(tcp).await.map(|_| t0.elapsed())
        }
    };
    let mut normal = Duration::ZERO;
    for _ in 0..3 {
        normal = normal.max(handshake().await.unwrap());
    }

    let verify = VerifyServer::new(ctx.clone());
    let flood: Vec<_> = (0..500)
        .map(|i| {
            let v = verify.clone();
            tokio::spawn(async move { v.attest(vec![i as u8; 32]).await })
        })
        .collect();
    let during = handshake().await.expect("handshake during the flood");
    let (mut ok, mut exhausted) = (0, 0);
    for f in flood {
        match f.await.unwrap() {
            Ok(_) => ok += 1,
            Err(s) if s.code() == Code::ResourceExhausted => exhausted += 1,
            Err(s) => panic!("unexpected answer to the flood: {s:?}"),
        }
    }
    eprintln!(
        "handshake {during:?} during the flood (normal {normal:?}); {ok} documents, {exhausted} refused"
    );
    assert!(ok >= 1, "the service still serves within its limits");
    assert!(exhausted >= 400, "only {exhausted} of 500 refused");
    assert!(
        during < normal * 4 + Duration::from_secs(2),
        "the handshake took {during:?} during the flood, {normal:?} without"
    );
    // The issuer closes its TPM connection before swtpm goes away.
    served.abort();
    let _ = served.await;
    drop((ctx, verify, client, issuer));
    drop(tpm);
}
