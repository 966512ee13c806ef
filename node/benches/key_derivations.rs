//! KeyService throughput over the authenticated channel: an in-process aTLS server (client
//! attestation required) serving KeyService on loopback, one attested client connection
//! (handshake excluded), GetDataKey requests sequentially and 16 in flight. Figures printed.
//!
//! Run: `cargo bench -p constellation-node --bench key_derivations`

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Instant;

use constellation_attest::atls::{AtlsClient, AtlsServer, ServerVerification};
use constellation_node::services::key::KeyServer;
use constellation_node_api::v1::GetDataKeyRequest;
use constellation_node_api::v1::key_service_client::KeyServiceClient;
use constellation_node_api::v1::key_service_server::KeyServiceServer;

fn main() {
    if !common::have_swtpm() {
        constellation_testkit::skip_current("swtpm is not on PATH", "run scripts/install-deps.sh");
        return;
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let b = common::control_plane();
        // The client shares the control plane's swtpm; data keys are for members, so its
        // PCR 15 holds the cluster ID as a joined node's does.
        let cluster_id = b.ctx.secrets().unwrap().cluster_id;
        b.ctx.lock.extend(&cluster_id).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let routes =
            tonic::service::Routes::new(KeyServiceServer::new(KeyServer::new(b.ctx.clone())));
        let server = AtlsServer::new(None, Some(b.ctx.validators.clone())).unwrap();
        tokio::spawn(constellation_attest::atls::serve_routes(
            routes,
            listener,
            server,
            std::future::pending(),
        ));
        let client =
            AtlsClient::new(Some(b.tpm.clone()), ServerVerification::Unauthenticated).unwrap();
        let t0 = Instant::now();
        let ch = constellation_attest::atls::connect_channel(&format!("http://{addr}"), client)
            .await
            .unwrap();
        println!(
            "aTLS handshake (client quote on swtpm + validation): {:.1} ms",
            t0.elapsed().as_secs_f64() * 1e3
        );
        let c = KeyServiceClient::new(ch);
        let n = 2000;
        let t0 = Instant::now();
        for i in 0..n {
            let mut c = c.clone();
            let k = c
                .get_data_key(GetDataKeyRequest {
                    data_key_id: format!("vol-{i}"),
                    length: 0,
                })
                .await
                .unwrap();
            std::hint::black_box(k);
        }
        common::rate("GetDataKey over aTLS, sequential", n, t0.elapsed());
        let sem = Arc::new(tokio::sync::Semaphore::new(16));
        let t0 = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..n {
            let permit = sem.clone().acquire_owned().await.unwrap();
            let mut c = c.clone();
            set.spawn(async move {
                let k = c
                    .get_data_key(GetDataKeyRequest {
                        data_key_id: format!("vol-{i}"),
                        length: 0,
                    })
                    .await
                    .unwrap();
                drop(permit);
                std::hint::black_box(k);
            });
        }
        while set.join_next().await.is_some() {}
        common::rate("GetDataKey over aTLS, 16 in flight", n, t0.elapsed());
    });
}
