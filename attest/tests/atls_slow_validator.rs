//! A validator whose network look-up is slow (collateral from AMD KDS, Intel PCS, Azure THIM,
//! a cloud API) must not stall the runtime the aTLS handshake runs on: rustls calls the
//! verifier synchronously inside the handshake's poll, and the look-up is blocking HTTP.
//!
//! The runtime is the product's multi-thread flavour with a single worker, the harshest case:
//! without handing the worker's tasks off, the one worker would sit in the look-up and every
//! other task — timers included — would stop until it returns.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use constellation_attest::atls::{AtlsClient, AtlsServer, ServerVerification};
use constellation_attest::certs::fetch::{HttpGet, PlainHttp};
use constellation_attest::validator::{
    IssueError, Issuer, PlatformClaims, ValidationError, Validator, Validators, VerifiedClaims,
};
use constellation_attest::{AttestationDocument, Evidence, TdxEvidence, Variant};

/// How long the look-up server waits before answering.
const DELAY: Duration = Duration::from_millis(1500);
/// The concurrent task's period.
const TICK: Duration = Duration::from_millis(10);
/// Ticks the concurrent task must make while one look-up waits (150 expected; generous for a
/// loaded machine, and 0 when the runtime is stalled).
const MIN_TICKS: u64 = 20;
const COLLATERAL: &[u8] = b"collateral";

/// Issues documents whose "quote" is the verifier's nonce (no hardware in this test).
struct NonceIssuer;

impl Issuer for NonceIssuer {
    fn variant(&self) -> Variant {
        Variant::QemuTdx
    }

    fn issue(&self, user_data: &[u8], nonce: &[u8]) -> Result<AttestationDocument, IssueError> {
        Ok(AttestationDocument::new(
            Variant::QemuTdx,
            user_data.to_vec(),
            Evidence::Tdx(TdxEvidence {
                quote: nonce.to_vec(),
                event_log: None,
                collateral: None,
            }),
        ))
    }
}

/// Fetches collateral over HTTP (blocking, as the real validators do), then checks the
/// document is bound to the nonce.
struct SlowLookupValidator {
    url: String,
}

impl Validator for SlowLookupValidator {
    fn variant(&self) -> Variant {
        Variant::QemuTdx
    }

    fn validate(
        &self,
        doc: &AttestationDocument,
        nonce: &[u8],
    ) -> Result<VerifiedClaims, ValidationError> {
        let platform = |e: String| ValidationError::Platform {
            variant: Variant::QemuTdx,
            source: e.into(),
        };
        let collateral = PlainHttp::with_timeout(Duration::from_secs(30))
            .get(&self.url)
            .map_err(|e| platform(e.to_string()))?
            .body;
        if collateral != COLLATERAL {
            return Err(platform(format!("unexpected collateral {collateral:?}")));
        }
        let Evidence::Tdx(ev) = &doc.evidence else {
            return Err(platform("not TDX evidence".into()));
        };
        if ev.quote != nonce {
            return Err(ValidationError::NonceOrUserDataMismatch {
                expected: hex::encode(nonce),
                got: hex::encode(&ev.quote),
            });
        }
        Ok(VerifiedClaims {
            variant: Variant::QemuTdx,
            user_data: doc.user_data.clone(),
            measurements: Default::default(),
            warnings: Vec::new(),
            platform: PlatformClaims::HostTrustedAk,
            event_log_verified: false,
        })
    }
}

/// (ticks when a look-up arrived, ticks when it was answered), one per look-up.
type Windows = Arc<Mutex<Vec<(u64, u64)>>>;

/// A loopback HTTP server that answers `requests` GETs after [`DELAY`] each, recording the
/// tick counter when a request arrives and when it answers.
fn slow_server(ticks: Arc<AtomicU64>, requests: usize) -> (String, Windows) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/collateral", l.local_addr().unwrap());
    let windows = Arc::new(Mutex::new(Vec::new()));
    let w = windows.clone();
    std::thread::spawn(move || {
        for s in l.incoming().take(requests) {
            let mut s = s.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "client closed before sending its request");
                req.extend_from_slice(&buf[..n]);
            }
            let before = ticks.load(Ordering::SeqCst);
            std::thread::sleep(DELAY);
            let after = ticks.load(Ordering::SeqCst);
            w.lock().unwrap().push((before, after));
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                COLLATERAL.len()
            );
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(COLLATERAL).unwrap();
        }
    });
    (url, windows)
}

#[test]
fn slow_validator_lookup_does_not_stall_the_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ticks = Arc::new(AtomicU64::new(0));
    // Two look-ups: the client validating the server, the server validating the client.
    let (url, windows) = slow_server(ticks.clone(), 2);
    let validators = Validators::new(vec![
        Arc::new(SlowLookupValidator { url }) as Arc<dyn Validator>
    ]);
    rt.block_on(async {
        let t = ticks.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(TICK).await;
                t.fetch_add(1, Ordering::SeqCst);
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = AtlsServer::new(
            Some(Arc::new(NonceIssuer) as Arc<dyn Issuer>),
            Some(validators.clone()),
        )
        .unwrap();
        // Handshakes run in spawned tasks, on the worker, as in the node's services.
        let served = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            server.accept(tcp).await.map(|(_, claims)| claims)
        });
        let client = AtlsClient::new(
            Some(Arc::new(NonceIssuer) as Arc<dyn Issuer>),
            ServerVerification::Attested(validators),
        )
        .unwrap();
        let connected = tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            client.connect(tcp).await.map(|(_, claims)| claims)
        });
        let client_claims = served.await.unwrap().unwrap();
        let server_claims = connected.await.unwrap().unwrap();
        assert!(client_claims.is_some() && server_claims.is_some());
        ticker.abort();
    });
    let windows = windows.lock().unwrap().clone();
    assert_eq!(windows.len(), 2, "one look-up per side: {windows:?}");
    for (before, after) in windows {
        assert!(
            after - before >= MIN_TICKS,
            "the concurrent task made {} ticks of {TICK:?} during a {DELAY:?} look-up: the \
             handshake stalled the runtime",
            after - before
        );
    }
}
