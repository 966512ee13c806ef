//! Host tier, protocols: several node agents as PROCESSES on loopback, each with its own swtpm,
//! a metadata directory the test controls (DirectoryMetadata), HostDirectoryDisk (an
//! UNENCRYPTED directory standing in for the state disk) and NoopNetwork. The channels are the
//! real aTLS of the attest crate. Needs `swtpm` on PATH (scripts/install-deps.sh); skipped
//! otherwise, a failure under CI=true (constellation_testkit::skip).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use constellation_attest::atls::{AtlsClient, ServerVerification, connect_channel};
use constellation_attest::measurements::{Measurement, Measurements};
use constellation_attest::testing::Swtpm;
use constellation_attest::tpm::issuer::{TpmIssuer, TpmIssuerConfig};
use constellation_attest::{Validators, Variant, expected_pcr15};
use constellation_node::services::init::hash_init_secret;
use constellation_node_api::v1::init_response::Kind;
use constellation_node_api::v1::init_service_client::InitServiceClient;
use constellation_node_api::v1::key_service_client::KeyServiceClient;
use constellation_node_api::v1::management_service_client::ManagementServiceClient;
use constellation_node_api::v1::recovery_service_client::RecoveryServiceClient;
use constellation_node_api::v1::verification_service_client::VerificationServiceClient;
use constellation_node_api::v1::*;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use tonic::Code;

const INIT_SECRET: &[u8] = b"host-cluster-init-secret";
const MASTER: [u8; 32] = [0x42; 32];
const SALT: [u8; 32] = [0x24; 32];
const MSALT: [u8; 32] = [0x99; 32];
const BOOT_PCRS: [u32; 5] = [0, 4, 9, 11, 12];
const WAIT: Duration = Duration::from_secs(180);

fn have(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

fn hkdf(ikm: &[u8], salt: &[u8], info: &str) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info.as_bytes(), &mut out)
        .unwrap();
    out
}

/// Measurements of a fresh swtpm (nothing measured: zeros) for the boot PCRs.
fn measurements() -> Measurements {
    let mut m = Measurements::default();
    for i in BOOT_PCRS {
        m.0.insert(i, Measurement::enforced(vec![0u8; 32]).unwrap());
    }
    m
}

fn config_json() -> String {
    serde_json::json!({"variant": "qemu-vtpm", "measurements": measurements()}).to_string()
}

fn validators(extra: Option<(u32, Vec<u8>)>) -> Validators {
    let mut m = measurements();
    if let Some((i, v)) = extra {
        m.0.insert(i, Measurement::enforced(v).unwrap());
    }
    Validators::new(vec![Arc::new(constellation_attest::qemu_vtpm::validator(
        m,
    ))])
}

/// A node agent process; killed on drop (also when the test fails).
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Node {
    name: &'static str,
    ip: IpAddr,
    swtpm: Swtpm,
    dir: tempfile::TempDir,
    agent: Option<Agent>,
    starts: u32,
    env: Vec<(String, String)>,
}

impl Node {
    fn new(
        name: &'static str,
        ip: IpAddr,
        role: &str,
        endpoints: &str,
        init_hash: Option<&str>,
    ) -> Self {
        let swtpm = Swtpm::start().expect("starting swtpm");
        let dir = tempfile::Builder::new()
            .prefix("host-cluster-")
            .tempdir()
            .unwrap();
        let meta = dir.path().join("metadata");
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(meta.join("role"), role).unwrap();
        std::fs::write(meta.join("name"), name).unwrap();
        std::fs::write(meta.join("private-ip"), ip.to_string()).unwrap();
        std::fs::write(meta.join("join-endpoints"), endpoints).unwrap();
        if let Some(h) = init_hash {
            std::fs::write(meta.join("init-secret-hash"), h).unwrap();
        }
        Self {
            name,
            ip,
            swtpm,
            dir,
            agent: None,
            starts: 0,
            env: Vec::new(),
        }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join(format!("agent-{}.log", self.starts))
    }

    fn disk(&self) -> PathBuf {
        self.dir.path().join("disk")
    }

    fn start(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log()).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_constellation-node"))
            .arg("--host-metadata-dir")
            .arg(self.dir.path().join("metadata"))
            .arg("--host-state-dir")
            .arg(self.disk())
            .arg("--tpm-tcti")
            .arg(self.swtpm.tcti())
            .arg("--listen-ip")
            .arg(self.ip.to_string())
            .arg("--image-version")
            .arg("host-test")
            .env("RUST_LOG", "info")
            .env("CONSTELLATION_PEER_REFRESH_SECS", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning constellation-node");
        self.agent = Some(Agent(child));
    }

    fn stop(&mut self) {
        self.agent = None;
    }

    fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip, port)
    }

    fn logs(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("agent-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn metrics(&self) -> String {
        http_get(
            self.addr(constellation_node_api::ports::METRICS),
            "/metrics",
        )
        .unwrap_or_default()
    }

    fn bootstrapped(&self) -> bool {
        self.metrics()
            .lines()
            .any(|l| l.trim() == "constellation_node_bootstrapped 1")
    }

    /// Waits until the node's metrics show `line` (e.g. a gauge value).
    fn wait_metric(&self, line: &str) {
        let t0 = Instant::now();
        while !self.metrics().lines().any(|l| l.trim() == line) {
            assert!(
                t0.elapsed() < WAIT,
                "{}: no metric line {line:?}; metrics:\n{}",
                self.name,
                self.metrics()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the current log has a line containing every one of `parts`.
    fn wait_log_line(&self, parts: &[&str]) {
        let t0 = Instant::now();
        while !self
            .logs()
            .lines()
            .any(|l| parts.iter().all(|p| l.contains(p)))
        {
            assert!(
                t0.elapsed() < WAIT,
                "{}: no log line with {parts:?}; log:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_bootstrapped(&self) {
        let t0 = Instant::now();
        while !self.bootstrapped() {
            assert!(
                t0.elapsed() < WAIT,
                "{} did not bootstrap; log:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn wait_port(&self, port: u16) {
        let t0 = Instant::now();
        while TcpStream::connect_timeout(&self.addr(port), Duration::from_secs(1)).is_err() {
            assert!(
                t0.elapsed() < WAIT,
                "{} never listened on {port}; log:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The key the host-tier disk was re-keyed with, as SHA-256 hex (HostDirectoryDisk layout).
    fn disk_key_digest(&self) -> (String, String) {
        let read = |f: &str| {
            std::fs::read_to_string(self.disk().join(f))
                .unwrap_or_else(|e| panic!("{}: {f}: {e}; log:\n{}", self.name, self.logs()))
        };
        let (uuid, digest) = (read("uuid"), read("initialized-key-sha256"));
        (uuid.trim().to_string(), digest.trim().to_string())
    }
}

fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Loopback addresses unique to this test run, so parallel runs do not clash on ports.
fn ips(n: u8) -> Vec<IpAddr> {
    let r: u16 = rand::random::<u16>() % 250;
    let pid = (std::process::id() % 250) as u8;
    (1..=n)
        .map(|i| IpAddr::from([127, 1 + (r % 200) as u8, pid, i]))
        .collect()
}

/// A codec sending raw bytes, for malformed requests.
#[derive(Clone, Default)]
struct Raw;
struct RawEnc;
struct RawDec;
impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEnc;
    type Decoder = RawDec;
    fn encoder(&mut self) -> RawEnc {
        RawEnc
    }
    fn decoder(&mut self) -> RawDec {
        RawDec
    }
}
impl tonic::codec::Encoder for RawEnc {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}
impl tonic::codec::Decoder for RawDec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

fn init_request(secret: &[u8]) -> InitRequest {
    InitRequest {
        master_secret: MASTER.to_vec(),
        master_salt: SALT.to_vec(),
        measurement_salt: MSALT.to_vec(),
        cluster_name: "host-cluster".into(),
        init_secret: secret.to_vec(),
        attestation_config_json: config_json(),
        kubernetes_version: String::new(),
        ..Default::default()
    }
}

async fn init_client(node: &Node) -> InitServiceClient<tonic::transport::Channel> {
    let client = AtlsClient::new(None, ServerVerification::Attested(validators(None))).unwrap();
    let ch = connect_channel(
        &format!("http://{}", node.addr(constellation_node_api::ports::INIT)),
        client,
    )
    .await
    .expect("aTLS to the init server");
    InitServiceClient::new(ch)
}

/// Runs `test` on a two-thread runtime, or skips it with a notice when swtpm is missing.
fn with_swtpm<F: std::future::Future<Output = ()>>(name: &str, test: F) {
    if !have("swtpm") {
        constellation_testkit::skip(
            &format!("host_cluster::{name}"),
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
    rt.block_on(test);
}

#[test]
fn host_cluster() {
    with_swtpm("host_cluster", run());
}

/// A management client with the owner credential from Init.
async fn management(
    node: &Node,
    ok: &InitSuccess,
) -> ManagementServiceClient<tonic::transport::Channel> {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ok.cluster_ca_pem))
        .identity(tonic::transport::Identity::from_pem(
            &ok.owner_certificate_pem,
            &ok.owner_private_key_pem,
        ))
        .domain_name(constellation_node::ca::MANAGEMENT_SERVER_NAME);
    node.wait_port(constellation_node_api::ports::MANAGEMENT);
    let ch = tonic::transport::Endpoint::from_shared(format!(
        "https://{}",
        node.addr(constellation_node_api::ports::MANAGEMENT)
    ))
    .unwrap()
    .tls_config(tls)
    .unwrap()
    .connect()
    .await
    .unwrap();
    ManagementServiceClient::new(ch)
}

/// Polls GetStatus on `node` until its member names equal `want` (replication is async).
async fn wait_members(node: &Node, ok: &InitSuccess, want: &[&str]) -> GetStatusResponse {
    let mut c = management(node, ok).await;
    let t0 = Instant::now();
    loop {
        let st = c
            .get_status(GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        let names: Vec<_> = st.nodes.iter().map(|n| n.name.as_str()).collect();
        if names == want {
            return st;
        }
        assert!(
            t0.elapsed() < WAIT,
            "{} lists {names:?}, want {want:?}; log:\n{}",
            node.name,
            node.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn run() {
    let ip = ips(5);
    let join_ep = format!("{}:{}", ip[0], constellation_node_api::ports::JOIN);
    let hash = hash_init_secret(INIT_SECRET).unwrap();
    let mut cp0 = Node::new("cp-0", ip[0], "control-plane", "", Some(&hash));
    let mut w1 = Node::new("w-1", ip[1], "worker", &join_ep, None);
    let mut cp1 = Node::new("cp-1", ip[2], "control-plane", &join_ep, None);
    let mut bad = Node::new("w-bad", ip[3], "worker", &join_ep, None);
    // w-2 joins through the second control plane.
    let join_ep1 = format!("{}:{}", ip[2], constellation_node_api::ports::JOIN);
    let mut w2 = Node::new("w-2", ip[4], "worker", &join_ep1, None);
    // The bad node boots "another image": PCR 4 differs from the attestation config.
    {
        let tpm =
            TpmIssuer::open(TpmIssuerConfig::new(bad.swtpm.tcti(), Variant::QemuVtpm)).unwrap();
        tpm.pcr_event(4, b"a different boot loader").unwrap();
    }
    cp0.start();
    cp0.wait_port(constellation_node_api::ports::INIT);

    // Wrong init secret: PermissionDenied.
    let mut init = init_client(&cp0).await;
    let e = init.init(init_request(b"wrong")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // Oversized message: refused before the handler (OUT_OF_RANGE from tonic's decoder).
    let mut big = init_request(INIT_SECRET);
    big.cluster_name = "x".repeat(constellation_node_api::limits::MAX_MESSAGE_BYTES + 1);
    let e = init.init(big).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    // Malformed protobuf: refused with INTERNAL (decode error), nothing changes.
    let client = AtlsClient::new(None, ServerVerification::Attested(validators(None))).unwrap();
    let ch = connect_channel(
        &format!("http://{}", cp0.addr(constellation_node_api::ports::INIT)),
        client,
    )
    .await
    .unwrap();
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/constellation.node.v1.InitService/Init");
    let r = grpc
        .server_streaming(tonic::Request::new(vec![0xff; 40]), path, Raw)
        .await;
    let code = match r {
        Err(s) => s.code(),
        Ok(mut s) => s.get_mut().message().await.unwrap_err().code(),
    };
    assert_eq!(code, Code::Internal);

    // Init.
    let mut stream = init
        .init(init_request(INIT_SECRET))
        .await
        .unwrap()
        .into_inner();
    let mut lines = Vec::new();
    let ok = loop {
        match stream
            .message()
            .await
            .unwrap()
            .expect("stream ended without a result")
            .kind
        {
            Some(Kind::LogLine(l)) => lines.push(l),
            Some(Kind::Success(s)) => break s,
            Some(Kind::Failure(f)) => {
                panic!("init failed: {}\n{}", f.error, f.log_lines.join("\n"))
            }
            None => panic!("empty message"),
        }
    };
    assert!(!lines.is_empty());
    let ms = hkdf(&MASTER, &SALT, "key-measurementSecret");
    let cid = hkdf(&ms, &MSALT, "key-clusterID");
    assert_eq!(ok.cluster_id, cid, "cluster ID = independent HKDF");
    assert_eq!(ok.kubernetes_status, "not installed");
    // Second Init.
    let e = init.init(init_request(INIT_SECRET)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // Joins.
    w1.start();
    cp1.start();
    bad.start();
    w1.wait_bootstrapped();
    cp1.wait_bootstrapped();
    w2.start();
    w2.wait_bootstrapped();
    for n in [&cp0, &w1, &cp1, &w2] {
        let (uuid, digest) = n.disk_key_digest();
        let key = hkdf(&MASTER, &SALT, &format!("key-{}", uuid.to_lowercase()));
        assert_eq!(
            digest,
            hex::encode(Sha256::digest(&key)),
            "{}: disk key = HKDF(master, salt, key-<uuid>)",
            n.name
        );
    }

    // The bad node is refused, naming PCR 4.
    let t0 = Instant::now();
    loop {
        let l = cp0.logs();
        if l.contains("aTLS handshake refused") && l.contains("index 4:") {
            break;
        }
        assert!(
            t0.elapsed() < WAIT,
            "no refusal naming PCR 4 in cp-0's log:\n{l}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!bad.bootstrapped());
    assert!(!bad.disk().join("initialized-key-sha256").exists());

    // Verification: the document validates and carries PCR 15 = expected_pcr15(cluster ID).
    let nonce: [u8; 32] = rand::random();
    let ch = tonic::transport::Endpoint::from_shared(format!(
        "http://{}",
        cp0.addr(constellation_node_api::ports::VERIFY_GRPC)
    ))
    .unwrap()
    .connect()
    .await
    .unwrap();
    let doc = VerificationServiceClient::new(ch)
        .get_attestation(GetAttestationRequest {
            nonce: nonce.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .attestation;
    let v = validators(Some((15, expected_pcr15(&cid).to_vec())));
    let claims = v
        .validate_bytes(&doc, &nonce, constellation_node_api::VERIFY_USER_DATA)
        .unwrap();
    assert_eq!(claims.measurements[&15], expected_pcr15(&cid).to_vec());
    // HTTP flavour.
    let n64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(nonce);
    let resp = http_get(
        cp0.addr(constellation_node_api::ports::VERIFY_HTTP),
        &format!("/?nonce={n64}"),
    )
    .unwrap();
    let body = resp.split("\r\n\r\n").nth(1).unwrap();
    let j: serde_json::Value = serde_json::from_str(body).unwrap();
    let doc = base64::engine::general_purpose::STANDARD
        .decode(j["attestation"].as_str().unwrap())
        .unwrap();
    v.validate_bytes(&doc, &nonce, constellation_node_api::VERIFY_USER_DATA)
        .unwrap();
    let resp = http_get(
        cp0.addr(constellation_node_api::ports::VERIFY_HTTP),
        "/?nonce=AA",
    )
    .unwrap();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");

    // KeyService over aTLS with an attested client (its own swtpm), on both control planes.
    // Data keys are for members: a client whose PCR 15 is still zero is refused.
    let client_tpm = Swtpm::start().unwrap();
    let tpm = Arc::new(
        TpmIssuer::open(TpmIssuerConfig::new(client_tpm.tcti(), Variant::QemuVtpm)).unwrap(),
    );
    let issuer: Arc<dyn constellation_attest::Issuer> = tpm.clone();
    let c = AtlsClient::new(Some(issuer.clone()), ServerVerification::Unauthenticated).unwrap();
    let ch = connect_channel(
        &format!("http://{}", cp0.addr(constellation_node_api::ports::JOIN)),
        c,
    )
    .await
    .unwrap();
    let e = KeyServiceClient::new(ch)
        .get_data_key(GetDataKeyRequest {
            data_key_id: "app-volume".into(),
            length: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    tpm.pcr_event(15, &cid).unwrap();
    for cp in [&cp0, &cp1] {
        let c = AtlsClient::new(Some(issuer.clone()), ServerVerification::Unauthenticated).unwrap();
        let ch = connect_channel(
            &format!("http://{}", cp.addr(constellation_node_api::ports::JOIN)),
            c,
        )
        .await
        .unwrap();
        let k = KeyServiceClient::new(ch)
            .get_data_key(GetDataKeyRequest {
                data_key_id: "app-volume".into(),
                length: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            k.data_key,
            hkdf(&MASTER, &SALT, "key-app-volume"),
            "{}",
            cp.name
        );
    }
    // A client that does not attest gets no channel at all.
    let c = AtlsClient::new(None, ServerVerification::Attested(validators(None))).unwrap();
    assert!(
        connect_channel(
            &format!("http://{}", cp0.addr(constellation_node_api::ports::JOIN)),
            c
        )
        .await
        .is_err()
    );

    // Management with the owner credential. The member list is cluster-wide: w-1 and cp-1
    // joined through cp-0, w-2 through cp-1, and both control planes list everyone.
    let all = ["cp-0", "cp-1", "w-1", "w-2"];
    let st = wait_members(&cp0, &ok, &all).await;
    let st1 = wait_members(&cp1, &ok, &all).await;
    assert!(st.nodes.iter().all(|n| !n.joined_at.is_empty()));
    assert_eq!(
        st.nodes, st1.nodes,
        "both control planes hold the same records"
    );
    assert!(
        st.nodes
            .iter()
            .any(|n| n.name == "w-2" && n.attestation_summary.starts_with("variant=qemu-vtpm"))
    );
    // WireGuard peers follow the members everywhere: w-1 joined when cp-0 was the only member
    // and learns cp-1 and w-2 (which joined later, w-2 through cp-1) by polling GetPeers; the
    // control planes update theirs from the (replicated) member list.
    for n in [&w1, &w2, &cp0, &cp1] {
        n.wait_metric("constellation_node_wireguard_peers 3");
    }
    // The tampered node's refusal is reported through the API, naming PCR 4, with the same
    // text as the log line.
    let refusal = st
        .recent_refusals
        .iter()
        .find(|r| r.reason.contains("index 4:"))
        .unwrap_or_else(|| panic!("no refusal naming PCR 4 in GetStatus: {st:?}"));
    assert!(refusal.peer.parse::<SocketAddr>().is_ok(), "{refusal:?}");
    assert!(refusal.time.ends_with('Z'), "{refusal:?}");
    assert!(
        cp0.logs().contains(&refusal.reason),
        "reason differs from the log line: {refusal:?}"
    );
    assert!(st.recent_refusals.len() <= constellation_node::logging::REFUSAL_LINES);

    // Member sync needs a certificate from the cluster CA: a TLS client without one gets no
    // channel (or no answer), so nobody else can inject members.
    let anon = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ok.cluster_ca_pem))
        .domain_name(constellation_node::ca::MANAGEMENT_SERVER_NAME);
    let refused = match tonic::transport::Endpoint::from_shared(format!(
        "https://{}",
        cp1.addr(constellation_node_api::ports::MANAGEMENT)
    ))
    .unwrap()
    .tls_config(anon)
    .unwrap()
    .connect()
    .await
    {
        Err(_) => true,
        Ok(ch) => member_sync_service_client::MemberSyncServiceClient::new(ch)
            .sync_members(SyncMembersRequest {
                from: "intruder".into(),
                members: Some(MemberList::default()),
            })
            .await
            .is_err(),
    };
    assert!(
        refused,
        "member sync without a cluster-CA certificate must fail"
    );

    // A removal on one control plane reaches the other.
    management(&cp0, &ok)
        .await
        .remove_node(RemoveNodeRequest { name: "w-2".into() })
        .await
        .unwrap();
    wait_members(&cp1, &ok, &["cp-0", "cp-1", "w-1"]).await;
    w2.stop();
    // A removed node is nobody's peer any more.
    for n in [&w1, &cp0, &cp1] {
        n.wait_metric("constellation_node_wireguard_peers 2");
    }

    // Rejoin after restart: same swtpm (PCR 15 set), same disk → same key unlocks it. w-1's
    // metadata names only cp-0, which is down now (as after a rolling upgrade): w-1 rejoins
    // through cp-1, learned from its GetPeers polls and remembered in its disk header.
    let cp1_ep = cp1.addr(constellation_node_api::ports::JOIN).to_string();
    w1.wait_log_line(&["remembered the control-plane endpoints", &cp1_ep]);
    cp0.stop();
    w1.stop();
    w1.start();
    w1.wait_bootstrapped();
    w1.wait_log_line(&["rejoined the cluster", &cp1_ep]);
    assert!(
        w1.logs()
            .contains("control-plane endpoints remembered from before the reboot"),
        "{}",
        w1.logs()
    );
    // Its WireGuard peers come back at once (first poll right after the rejoin), not only
    // after the next refresh period.
    w1.wait_metric("constellation_node_wireguard_peers 2");

    // cp-0's metadata names no endpoint (it was the first node); it learned cp-1 from the
    // member list and rejoins through it, with the current member list.
    cp0.start();
    cp0.wait_bootstrapped();
    cp0.wait_log_line(&["rejoined the cluster", &cp1_ep]);
    cp0.wait_metric("constellation_node_wireguard_peers 2");

    // Recovery: every control plane is down and cp-0 is power-cycled (a new TPM process:
    // PCR 15 is zero again); it finds nobody at the endpoint it remembered and waits; the
    // owner pushes the master secret over aTLS (cp-0 attests, without a cluster ID yet).
    cp1.stop();
    cp0.stop();
    cp0.swtpm = Swtpm::start().expect("starting swtpm");
    cp0.start();
    cp0.wait_port(constellation_node_api::ports::RECOVERY);
    let recovery = || async {
        let client = AtlsClient::new(None, ServerVerification::Attested(validators(None))).unwrap();
        let ch = connect_channel(
            &format!(
                "http://{}",
                cp0.addr(constellation_node_api::ports::RECOVERY)
            ),
            client,
        )
        .await
        .expect("aTLS to the recovery server");
        RecoveryServiceClient::new(ch)
    };
    let e = recovery()
        .await
        .recover(RecoverRequest {
            master_secret: vec![1; 32],
            master_salt: SALT.to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(!cp0.bootstrapped());
    let r = recovery()
        .await
        .recover(RecoverRequest {
            master_secret: MASTER.to_vec(),
            master_salt: SALT.to_vec(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.cluster_id, cid);
    cp0.wait_bootstrapped();
    // Recovery locked the power-cycled node to the cluster again: it now attests PCR 15.
    let locked = AtlsClient::new(
        None,
        ServerVerification::Attested(validators(Some((15, expected_pcr15(&cid).to_vec())))),
    )
    .unwrap();
    connect_channel(
        &format!(
            "http://{}",
            cp0.addr(constellation_node_api::ports::RECOVERY)
        ),
        locked,
    )
    .await
    .expect("after recovery, cp-0 attests PCR 15 = the cluster's value");
    let c = AtlsClient::new(Some(issuer.clone()), ServerVerification::Unauthenticated).unwrap();
    let ch = connect_channel(
        &format!("http://{}", cp0.addr(constellation_node_api::ports::JOIN)),
        c,
    )
    .await
    .unwrap();
    let k = KeyServiceClient::new(ch)
        .get_data_key(GetDataKeyRequest {
            data_key_id: "app-volume".into(),
            length: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        k.data_key,
        hkdf(&MASTER, &SALT, "key-app-volume"),
        "keys served again after recovery"
    );

    // No secret in any log or metrics output.
    let mut secrets = vec![
        MASTER.to_vec(),
        ms.clone(),
        hkdf(&MASTER, &SALT, "key-app-volume"),
    ];
    for n in [&cp0, &w1, &cp1, &w2] {
        let (uuid, _) = n.disk_key_digest();
        secrets.push(hkdf(&MASTER, &SALT, &format!("key-{uuid}")));
    }
    for n in [&cp0, &w1, &cp1, &w2, &bad] {
        let text = format!("{}\n{}", n.logs(), n.metrics());
        for s in &secrets {
            assert!(!text.contains(&hex::encode(s)), "{} leaks a secret", n.name);
            assert!(
                !text.contains(&base64::engine::general_purpose::STANDARD.encode(s)),
                "{} leaks a secret",
                n.name
            );
        }
    }
    let _ = Path::new("");
}

/// A STAND-IN for kubeadm, which cannot be obtained on this machine (dl.k8s.io is
/// unreachable). It records the arguments and config files the agent passes and writes the
/// files real kubeadm would leave behind (admin.conf, pki/ca.crt), so the test can check the
/// agent's orchestration. It proves nothing about real kubeadm accepting the configs beyond
/// the field names checked against the v1beta4 API documentation.
const KUBEADM_STAND_IN: &str = r#"#!/bin/sh
set -eu
rec="$KUBEADM_STAND_IN_RECORD"
mkdir -p "$rec"
echo "$*" >> "$rec/calls"
cfg=""
prev=""
for a in "$@"; do
  if [ "$prev" = "--config" ]; then cfg="$a"; fi
  prev="$a"
done
if [ -n "$cfg" ]; then cp "$cfg" "$rec/$1-config.json"; fi
k8s="$CONSTELLATION_KUBERNETES_DIR"
case "$1 ${2:-}" in
  "init --config")
    echo "[init] Using Kubernetes version: stand-in"
    # Real kubeadm may print secrets; the agent must cut them out of what it streams.
    grep '"token"' "$cfg" || true
    echo "[upload-certs] stand-in" >&2
    mkdir -p "$k8s/pki"
    cp "$KUBEADM_STAND_IN_CA" "$k8s/pki/ca.crt"
    printf 'apiVersion: v1\nkind: Config\n# stand-in admin kubeconfig\n' > "$k8s/admin.conf"
    ;;
  "token create") echo "$3" ;;
  "init phase") echo "[upload-certs] Storing the certificates in Secret" ;;
  "join --config")
    if grep -q '"controlPlane"' "$cfg"; then
      mkdir -p "$k8s/pki"
      cp "$KUBEADM_STAND_IN_CA" "$k8s/pki/ca.crt"
      printf 'apiVersion: v1\nkind: Config\n# stand-in admin kubeconfig\n' > "$k8s/admin.conf"
    fi
    echo "This node has joined the cluster (stand-in)"
    ;;
  *) echo "stand-in kubeadm: unexpected arguments: $*" >&2; exit 2 ;;
esac
"#;

fn kube_docs(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.split("\n---\n")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn calls(node: &Node) -> Vec<String> {
    std::fs::read_to_string(node.dir.path().join("kubeadm-calls/calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The argument after `flag` in the first recorded call starting with `prefix`.
fn call_arg(node: &Node, prefix: &str, index: usize) -> String {
    let c = calls(node);
    let call = c
        .iter()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("{}: no `kubeadm {prefix}` call in {c:?}", node.name));
    call.split(' ').nth(index).unwrap().to_string()
}

fn wait_file(node: &Node, path: &Path) {
    let t0 = Instant::now();
    while !path.exists() {
        assert!(
            t0.elapsed() < WAIT,
            "{}: {} never appeared; log:\n{}",
            node.name,
            path.display(),
            node.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn host_kubernetes_with_kubeadm_stand_in() {
    with_swtpm("host_kubernetes", run_kubernetes());
}

async fn run_kubernetes() {
    use std::os::unix::fs::PermissionsExt as _;
    let shared = tempfile::Builder::new()
        .prefix("kubeadm-stand-in-")
        .tempdir()
        .unwrap();
    let bin = shared.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("kubeadm"), KUBEADM_STAND_IN).unwrap();
    std::fs::set_permissions(bin.join("kubeadm"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The cluster CA the stand-in "creates"; its discovery hash is computed independently
    // from the key's SubjectPublicKeyInfo.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertificateParams::new(vec!["kubernetes".into()])
        .unwrap()
        .self_signed(&ca_key)
        .unwrap();
    let ca_path = shared.path().join("ca.crt");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let spki: String = ca_key
        .public_key_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let spki = base64::engine::general_purpose::STANDARD
        .decode(spki)
        .unwrap();
    let ca_hash = format!("sha256:{}", hex::encode(Sha256::digest(&spki)));

    let ip = ips(4);
    let ep0 = format!("{}:{}", ip[0], constellation_node_api::ports::JOIN);
    let ep1 = format!("{}:{}", ip[2], constellation_node_api::ports::JOIN);
    let hash = hash_init_secret(INIT_SECRET).unwrap();
    let mut cp0 = Node::new("cp-0", ip[0], "control-plane", "", Some(&hash));
    let mut w1 = Node::new("w-1", ip[1], "worker", &ep0, None);
    let mut cp1 = Node::new("cp-1", ip[2], "control-plane", &ep0, None);
    let mut w2 = Node::new("w-2", ip[3], "worker", &ep1, None);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for n in [&mut cp0, &mut w1, &mut cp1, &mut w2] {
        let d = n.dir.path().to_path_buf();
        std::fs::create_dir_all(d.join("tmp")).unwrap();
        n.env = vec![
            ("PATH".into(), path.clone()),
            ("TMPDIR".into(), d.join("tmp").display().to_string()),
            (
                "CONSTELLATION_KUBERNETES_DIR".into(),
                d.join("kubernetes").display().to_string(),
            ),
            (
                "KUBEADM_STAND_IN_RECORD".into(),
                d.join("kubeadm-calls").display().to_string(),
            ),
            ("KUBEADM_STAND_IN_CA".into(), ca_path.display().to_string()),
        ];
    }

    cp0.start();
    cp0.wait_port(constellation_node_api::ports::INIT);
    let mut req = init_request(INIT_SECRET);
    req.kubernetes_version = "v1.33.7".into();
    let mut stream = init_client(&cp0)
        .await
        .init(req)
        .await
        .unwrap()
        .into_inner();
    let mut lines = Vec::new();
    let ok = loop {
        match stream.message().await.unwrap().unwrap().kind {
            Some(Kind::LogLine(l)) => lines.push(l),
            Some(Kind::Success(s)) => break s,
            Some(Kind::Failure(f)) => {
                panic!("init failed: {}\n{}", f.error, f.log_lines.join("\n"))
            }
            None => panic!("empty message"),
        }
    };
    assert_eq!(ok.kubernetes_status, "running");
    let admin = std::fs::read(cp0.dir.path().join("kubernetes/admin.conf")).unwrap();
    assert_eq!(
        ok.kubeconfig, admin,
        "kubeconfig = the admin.conf kubeadm wrote"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("kubeadm: [init] Using Kubernetes version")),
        "kubeadm output streamed as progress: {lines:?}"
    );
    // The init call and its config.
    let c0 = calls(&cp0);
    let init_call: Vec<_> = c0[0].split(' ').collect();
    assert_eq!(init_call[0], "init");
    assert_eq!(init_call[1], "--config");
    assert_eq!(
        &init_call[3..],
        [
            "--upload-certs",
            "--skip-token-print",
            "--skip-certificate-key-print"
        ]
    );
    let docs = kube_docs(&cp0.dir.path().join("kubeadm-calls/init-config.json"));
    let (init, cluster) = (&docs[0], &docs[1]);
    assert_eq!(init["kind"], "InitConfiguration");
    assert_eq!(init["apiVersion"], "kubeadm.k8s.io/v1beta4");
    assert_eq!(init["nodeRegistration"]["name"], "cp-0");
    assert_eq!(
        init["localAPIEndpoint"]["advertiseAddress"],
        ip[0].to_string()
    );
    let init_token = init["bootstrapTokens"][0]["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(constellation_node::services::kubernetes::is_token(
        &init_token
    ));
    assert_eq!(cluster["kubernetesVersion"], "v1.33.7");
    assert_eq!(cluster["controlPlaneEndpoint"], format!("{}:6443", ip[0]));
    assert_eq!(cluster["networking"]["podSubnet"], "10.244.0.0/16");
    assert_eq!(cluster["networking"]["serviceSubnet"], "10.96.0.0/12");
    assert!(
        lines.iter().all(|l| !l.contains(&init_token)),
        "the bootstrap token is cut out of the streamed output"
    );

    // Joins: w-1 and cp-1 through cp-0, w-2 through cp-1.
    w1.start();
    cp1.start();
    w1.wait_bootstrapped();
    cp1.wait_bootstrapped();
    let cp1_join = cp1.dir.path().join("kubeadm-calls/join-config.json");
    wait_file(&cp1, &cp1_join);
    // cp-1 serves joins with Kubernetes material once its own kubeadm join has finished.
    wait_file(&cp1, &cp1.dir.path().join("kubernetes/admin.conf"));
    w2.start();
    w2.wait_bootstrapped();
    for (node, issuer, control_plane) in
        [(&w1, &cp0, false), (&cp1, &cp0, true), (&w2, &cp1, false)]
    {
        let f = node.dir.path().join("kubeadm-calls/join-config.json");
        wait_file(node, &f);
        let j = &kube_docs(&f)[0];
        assert_eq!(j["kind"], "JoinConfiguration");
        assert_eq!(j["apiVersion"], "kubeadm.k8s.io/v1beta4");
        assert_eq!(j["nodeRegistration"]["name"], node.name);
        let bt = &j["discovery"]["bootstrapToken"];
        assert_eq!(
            bt["apiServerEndpoint"],
            format!("{}:6443", ip[0]),
            "{}",
            node.name
        );
        assert_eq!(bt["caCertHashes"][0], ca_hash.as_str(), "{}", node.name);
        // The token is one the issuing control plane created for this ticket.
        let token = bt["token"].as_str().unwrap();
        assert!(
            calls(issuer)
                .iter()
                .any(|c| c.starts_with(&format!("token create {token} --ttl 1h0m0s"))),
            "{}: token not created by {}: {:?}",
            node.name,
            issuer.name,
            calls(issuer)
        );
        if control_plane {
            let key = call_arg(issuer, "init phase upload-certs", 5);
            assert_eq!(j["controlPlane"]["certificateKey"], key.as_str());
            assert_eq!(
                j["controlPlane"]["localAPIEndpoint"]["advertiseAddress"],
                node.ip.to_string()
            );
        } else {
            assert!(j.get("controlPlane").is_none(), "{}", node.name);
        }
        assert_eq!(
            calls(node)[0].split(' ').take(2).collect::<Vec<_>>(),
            ["join", "--config"]
        );
    }
    // Both control planes report Kubernetes running and the full member list.
    let st = wait_members(&cp1, &ok, &["cp-0", "cp-1", "w-1", "w-2"]).await;
    assert_eq!(st.kubernetes_status, "running");
    assert_eq!(
        wait_members(&cp0, &ok, &["cp-0", "cp-1", "w-1", "w-2"])
            .await
            .kubernetes_status,
        "running"
    );
    // Config files holding tokens are gone, and no token or key reached a log.
    let mut secrets = vec![init_token];
    for n in [&cp0, &cp1] {
        for c in calls(n) {
            if c.starts_with("token create") || c.starts_with("init phase upload-certs") {
                secrets.push(
                    c.split(' ')
                        .nth(if c.starts_with("token") { 2 } else { 5 })
                        .unwrap()
                        .to_string(),
                );
            }
        }
    }
    assert!(secrets.len() >= 4, "{secrets:?}");
    for n in [&cp0, &w1, &cp1, &w2] {
        let left: Vec<_> = std::fs::read_dir(n.dir.path().join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{}: config files left: {left:?}", n.name);
        let logs = n.logs();
        for s in &secrets {
            assert!(
                !logs.contains(s.as_str()),
                "{} logs a kubeadm secret",
                n.name
            );
        }
    }
}
