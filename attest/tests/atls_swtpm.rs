//! aTLS end to end with swtpm-backed issuers and a real gRPC service (grpc.health.v1).
// Test helpers outside #[test] fns unwrap too; a failure there is a test failure.
#![allow(clippy::unwrap_used)]
#![cfg(all(feature = "tpm", feature = "test-support"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use constellation_attest::atls::{
    AtlsClient, AtlsConnectInfo, AtlsError, AtlsServer, ServerVerification, connect_channel,
    serve_router,
};
use constellation_attest::measurements::{Measurement, Measurements};
use constellation_attest::testing::Swtpm;
use constellation_attest::tpm::issuer::{AkAlgorithm, TpmIssuer, TpmIssuerConfig};
use constellation_attest::validator::{IssueError, Issuer, ValidationError, Validator, Validators};
use constellation_attest::{AttestationDocument, Variant, qemu_vtpm};
use tokio::net::TcpListener;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

// Field order matters: the issuer (TPM connection) drops before swtpm is killed.
struct Node {
    issuer: Arc<TpmIssuer>,
    _tpm: Swtpm,
}

struct NodeOrder(Node);

fn node(pcr16_marker: Option<&[u8]>) -> Node {
    let tpm = Swtpm::start().expect("start swtpm");
    let issuer = TpmIssuer::open(TpmIssuerConfig {
        ak: AkAlgorithm::EccP256,
        ..TpmIssuerConfig::new(tpm.tcti(), Variant::QemuVtpm)
    })
    .expect("open issuer");
    if let Some(m) = pcr16_marker {
        issuer.pcr_event(8, m).unwrap();
    }
    Node {
        issuer: Arc::new(issuer),
        _tpm: tpm,
    }
}

fn validators_for(n: &Node) -> Validators {
    let mut m = Measurements::new();
    for (i, v) in n.issuer.read_pcrs().unwrap() {
        m.insert(i, Measurement::enforced(v.to_vec()).unwrap());
    }
    Validators::new(vec![Arc::new(qemu_vtpm::validator(m)) as Arc<dyn Validator>])
}

struct Served {
    addr: String,
    calls: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<AtlsConnectInfo>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.abort();
    }
}

async fn serve(server: AtlsServer) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, s) = (calls.clone(), seen.clone());
    let (_reporter, health) = tonic_health::server::health_reporter();
    let svc = tonic::service::interceptor::InterceptedService::new(
        health,
        move |req: tonic::Request<()>| {
            c.fetch_add(1, Ordering::SeqCst);
            if let Some(info) = req.extensions().get::<AtlsConnectInfo>() {
                s.lock().unwrap().push(info.clone());
            }
            Ok(req)
        },
    );
    let router = tonic::transport::Server::builder().add_service(svc);
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        serve_router(router, listener, server, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Served {
        addr,
        calls,
        seen,
        stop: Some(stop),
        task,
    }
}

async fn check(addr: &str, client: AtlsClient) -> Result<(), String> {
    let ch = connect_channel(addr, client)
        .await
        .map_err(|e| e.to_string())?;
    HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_attests_client_validates() {
    let n = NodeOrder(node(None));
    let good = validators_for(&n.0);
    let s = serve(AtlsServer::new(Some(n.0.issuer.clone()), None).unwrap()).await;

    let client = AtlsClient::new(None, ServerVerification::Attested(good)).unwrap();
    check(&s.addr, client)
        .await
        .expect("attested server accepted");
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);

    // Client expecting other measurements: refused during the handshake, no request sent.
    let other = NodeOrder(node(Some(b"other image")));
    let wrong = validators_for(&other.0);
    let client = AtlsClient::new(None, ServerVerification::Attested(wrong)).unwrap();
    let err = check(&s.addr, client).await.unwrap_err();
    assert!(err.contains("index 8"), "{err}");
    assert_eq!(
        s.calls.load(Ordering::SeqCst),
        1,
        "no request after refusal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_attestation_and_claims_in_handlers() {
    let server_node = NodeOrder(node(None));
    let client_node = NodeOrder(node(Some(b"joining node")));
    let s = serve(
        AtlsServer::new(
            Some(server_node.0.issuer.clone()),
            Some(validators_for(&client_node.0)),
        )
        .unwrap(),
    )
    .await;
    let client = AtlsClient::new(
        Some(client_node.0.issuer.clone()),
        ServerVerification::Attested(validators_for(&server_node.0)),
    )
    .unwrap();
    check(&s.addr, client).await.expect("mutual aTLS");
    let seen = s.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let claims = seen[0]
        .peer_claims
        .as_ref()
        .expect("client claims in request");
    assert_eq!(
        claims.measurements[&8],
        client_node.0.issuer.read_pcrs().unwrap()[&8].to_vec()
    );

    // A client whose attestation the server does not accept never reaches the handler.
    let stranger = NodeOrder(node(Some(b"stranger")));
    let client = AtlsClient::new(
        Some(stranger.0.issuer.clone()),
        ServerVerification::Attested(validators_for(&server_node.0)),
    )
    .unwrap();
    assert!(check(&s.addr, client).await.is_err());
    // A client without any certificate is refused too.
    let client = AtlsClient::new(
        None,
        ServerVerification::Attested(validators_for(&server_node.0)),
    )
    .unwrap();
    assert!(check(&s.addr, client).await.is_err());
    assert_eq!(s.calls.load(Ordering::SeqCst), 1);

    // The server's validator set is replaceable at run time (shared `Validators` handle).
    let shared = validators_for(&client_node.0);
    let s2 =
        serve(AtlsServer::new(Some(server_node.0.issuer.clone()), Some(shared.clone())).unwrap())
            .await;
    let stranger_client = || {
        AtlsClient::new(
            Some(stranger.0.issuer.clone()),
            ServerVerification::Attested(validators_for(&server_node.0)),
        )
        .unwrap()
    };
    assert!(check(&s2.addr, stranger_client()).await.is_err());
    shared.replace(vec![Arc::new(qemu_vtpm::validator(measurements_of(
        &stranger,
    )))]);
    check(&s2.addr, stranger_client())
        .await
        .expect("accepted after replace");
}

fn measurements_of(n: &NodeOrder) -> Measurements {
    let mut m = Measurements::new();
    for (i, v) in n.0.issuer.read_pcrs().unwrap() {
        m.insert(i, Measurement::enforced(v.to_vec()).unwrap());
    }
    m
}

/// An issuer that ignores the verifier's nonce: its documents are stale.
struct StaleIssuer(Arc<TpmIssuer>);

impl Issuer for StaleIssuer {
    fn variant(&self) -> Variant {
        self.0.variant()
    }
    fn issue(&self, user_data: &[u8], _nonce: &[u8]) -> Result<AttestationDocument, IssueError> {
        self.0.issue(user_data, &[0u8; 32])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_nonce_and_missing_extension_are_refused_before_requests() {
    let n = NodeOrder(node(None));
    let good = validators_for(&n.0);

    // Stale nonce.
    let s = serve(AtlsServer::new(Some(Arc::new(StaleIssuer(n.0.issuer.clone()))), None).unwrap())
        .await;
    let client = AtlsClient::new(None, ServerVerification::Attested(good.clone())).unwrap();
    let tcp = tokio::net::TcpStream::connect(s.addr.trim_start_matches("http://"))
        .await
        .unwrap();
    match client.connect(tcp).await {
        Err(AtlsError::Rejected(ValidationError::NonceOrUserDataMismatch { .. })) => {}
        other => panic!(
            "expected stale-nonce rejection, got {:?}",
            other.map(|_| ())
        ),
    }
    assert!(check(&s.addr, client).await.is_err());
    assert_eq!(s.calls.load(Ordering::SeqCst), 0);

    // Certificate without the attestation extension (server that does not attest but
    // validates clients — the client still insists on an attested server).
    let other = NodeOrder(node(None));
    let s = serve(AtlsServer::new(None, Some(validators_for(&other.0))).unwrap()).await;
    let client = AtlsClient::new(
        Some(other.0.issuer.clone()),
        ServerVerification::Attested(good.clone()),
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(s.addr.trim_start_matches("http://"))
        .await
        .unwrap();
    match client.connect(tcp).await {
        Err(AtlsError::NoAttestationExtension) => {}
        other => panic!(
            "expected missing-extension rejection, got {:?}",
            other.map(|_| ())
        ),
    }
    assert!(check(&s.addr, client).await.is_err());
    assert_eq!(s.calls.load(Ordering::SeqCst), 0);

    // Nothing attested at all is not a configuration.
    assert!(matches!(
        AtlsClient::new(None, ServerVerification::Unauthenticated),
        Err(AtlsError::NothingAttested)
    ));
    assert!(matches!(
        AtlsServer::new(None, None),
        Err(AtlsError::NothingAttested)
    ));
}

/// Idle TCP connections (no ClientHello) hold nothing a real handshake needs: with more of
/// them open than the listener once had handshake slots, an attested call completes at once,
/// and the server closes each idle connection after the ClientHello timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_block_handshakes() {
    use constellation_attest::atls::limits::{CLIENT_HELLO_TIMEOUT, MAX_CONNECTIONS_PER_PEER};
    use tokio::io::AsyncReadExt;
    let n = NodeOrder(node(None));
    let s = serve(AtlsServer::new(Some(n.0.issuer.clone()), None).unwrap()).await;
    let target = s.addr.trim_start_matches("http://").to_owned();
    let idle_count = 48.min(MAX_CONNECTIONS_PER_PEER - 4);
    let mut idle = Vec::new();
    for _ in 0..idle_count {
        idle.push(tokio::net::TcpStream::connect(&target).await.unwrap());
    }
    let t0 = std::time::Instant::now();
    let client = AtlsClient::new(None, ServerVerification::Attested(validators_for(&n.0))).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), check(&s.addr, client))
        .await
        .expect("a real handshake completes within 10 s next to idle connections")
        .expect("attested call");
    eprintln!(
        "attested call with {idle_count} idle connections open: {:?}",
        t0.elapsed()
    );

    // The server drops every idle connection once the ClientHello timeout passed.
    let mut buf = [0u8; 1];
    for c in &mut idle {
        let r = tokio::time::timeout(
            CLIENT_HELLO_TIMEOUT + std::time::Duration::from_secs(5),
            c.read(&mut buf),
        )
        .await
        .expect("the server closes an idle connection");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
}

/// Connections beyond the per-peer cap are closed at once; a slot freed by a closed
/// connection is usable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_peer_connection_cap_is_enforced() {
    use constellation_attest::atls::limits::ConnectionCaps;
    use constellation_attest::atls::serve_router_with_caps;
    use tokio::io::AsyncReadExt;
    let n = NodeOrder(node(None));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let router = tonic::transport::Server::builder().add_service(health);
    let server = AtlsServer::new(Some(n.0.issuer.clone()), None).unwrap();
    let caps = ConnectionCaps {
        total: 16,
        per_peer: 4,
    };
    let task = tokio::spawn(serve_router_with_caps(
        router,
        listener,
        server,
        caps,
        std::future::pending(),
    ));
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(target).await.unwrap());
    }
    let mut extra = tokio::net::TcpStream::connect(target).await.unwrap();
    let mut buf = [0u8; 1];
    let r = tokio::time::timeout(std::time::Duration::from_secs(3), extra.read(&mut buf))
        .await
        .expect("a connection over the cap is closed at once");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    drop(held.pop());
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let client = AtlsClient::new(None, ServerVerification::Attested(validators_for(&n.0))).unwrap();
    check(&format!("http://{target}"), client)
        .await
        .expect("a freed slot admits a real client");
    task.abort();
    let _ = task.await;
}
