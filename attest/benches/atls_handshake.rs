//! aTLS handshake on loopback, server attesting with an RSA-2048 AK on swtpm, client validating:
//! total handshake time and the share of it that is the swtpm quote (measured separately as
//! `issue()` calls in the same run).
//! Run: cargo bench -p constellation-attest --features tpm,test-support --bench atls_handshake

use std::sync::Arc;
use std::time::{Duration, Instant};

use constellation_attest::atls::{AtlsClient, AtlsServer, ServerVerification};
use constellation_attest::measurements::{Measurement, Measurements};
use constellation_attest::testing::Swtpm;
use constellation_attest::tpm::issuer::{TpmIssuer, TpmIssuerConfig};
use constellation_attest::validator::{Issuer, Validator, Validators};
use constellation_attest::{Variant, qemu_vtpm};

const ROUNDS: u32 = 100;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let tpm = Swtpm::start().expect("swtpm on PATH (scripts/install-deps.sh)");
    let issuer = Arc::new(
        TpmIssuer::open(TpmIssuerConfig::new(tpm.tcti(), Variant::QemuVtpm)).expect("issuer"),
    );
    let mut m = Measurements::new();
    for (i, v) in issuer.read_pcrs().expect("pcrs") {
        m.insert(i, Measurement::enforced(v.to_vec()).expect("32 bytes"));
    }
    let validators = Validators::new(vec![Arc::new(qemu_vtpm::validator(m)) as Arc<dyn Validator>]);

    // Quote cost alone (what the handshake spends in the TPM).
    for _ in 0..5 {
        issuer.issue(&[0u8; 32], &[1u8; 32]).expect("issue");
    }
    let t = Instant::now();
    for _ in 0..ROUNDS {
        issuer.issue(&[0u8; 32], &[1u8; 32]).expect("issue");
    }
    let quote = t.elapsed() / ROUNDS;

    let total: Duration = rt.block_on(async {
        let server = Arc::new(AtlsServer::new(Some(issuer.clone()), None).expect("server"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let srv = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    break;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let _ = server.accept(tcp).await;
                });
            }
        });
        let client =
            AtlsClient::new(None, ServerVerification::Attested(validators)).expect("client");
        let mut sum = Duration::ZERO;
        for i in 0..ROUNDS + 5 {
            let t = Instant::now();
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            client.connect(tcp).await.expect("handshake");
            if i >= 5 {
                sum += t.elapsed();
            }
        }
        srv.abort();
        sum / ROUNDS
    });
    let other = total.saturating_sub(quote);
    println!(
        "atls_handshake: total {:.2} ms; swtpm quote {:.2} ms ({:.0}%); everything else {:.2} ms ({:.0}%)",
        total.as_secs_f64() * 1e3,
        quote.as_secs_f64() * 1e3,
        100.0 * quote.as_secs_f64() / total.as_secs_f64(),
        other.as_secs_f64() * 1e3,
        100.0 * other.as_secs_f64() / total.as_secs_f64()
    );
    // Runtime first (its tasks hold issuer clones), then the issuer, then swtpm.
    drop(rt);
    drop(issuer);
}
