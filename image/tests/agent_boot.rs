//! The real node image, booted like the provider's QEMU backend boots it (OVMF, swtpm, state
//! disk, two NICs, fw_cfg metadata including `network`), answers a verification request
//! through the node agent, and the attestation document validates against the image's own
//! `measurements.json`: PCRs 4, 9, 11 and 12 equal the predicted values exactly and the TCG
//! event log replays to the quoted PCRs.
//!
//! Needs the release build of the agent: the test uses the image in
//! `CONSTELLATION_TEST_IMAGE_DIR` (scripts/test.sh builds it) or runs `scripts/build-image.sh`
//! (the `make image` path) into a temporary directory. Its cargo target directory is `IMAGE_TARGET_DIR`
//! (default `target/image-build`), shared with `make image`, so the agent is built once and
//! reused. One boot.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use constellation_attest::config::AttestationConfig;
use constellation_attest::measurements::Measurements;
use constellation_attest::validator::Validator as _;
use constellation_attest::variant::Variant;
use constellation_image::nodevm::NodeVmOptions;

/// What the agent logs once every server listens (node `bootstrap::READY_LOG`; the image crate
/// cannot depend on the node crate, whose tests depend on this one).
const READY: &str = "node agent ready: servers listening";
/// User data of verification documents (node-api `VERIFY_USER_DATA`).
const VERIFY_USER_DATA: &[u8] = b"constellation-verify";

fn have(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `GET /?nonce=…` over a plain TCP connection; returns (status line, body).
fn http_get(port: u16, path: &str) -> std::io::Result<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    Ok((
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    ))
}

#[test]
fn agent_in_the_image_serves_a_document_matching_the_predicted_pcrs() {
    if !have("qemu-system-x86_64")
        || !have("swtpm")
        || !Path::new(constellation_image::vm::OVMF_CODE).exists()
    {
        constellation_testkit::skip_current(
            "qemu-system-x86_64, swtpm or OVMF missing",
            "run scripts/install-deps.sh",
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    // scripts/test.sh builds the image once for all VM tests; otherwise build it here.
    let out = match std::env::var_os("CONSTELLATION_TEST_IMAGE_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let out = work.path().join("out");
            let t0 = Instant::now();
            let status = Command::new("bash")
                .arg(repo().join("scripts/build-image.sh"))
                .arg(&out)
                .current_dir(repo())
                .status()
                .expect("running scripts/build-image.sh");
            assert!(status.success(), "scripts/build-image.sh failed");
            eprintln!("image built in {:?}", t0.elapsed());
            out
        }
    };

    let measurements_json = std::fs::read_to_string(out.join("measurements.json")).unwrap();
    let predicted = Measurements::from_json(&measurements_json).unwrap();

    // The vTPM as the provider provisions it: AK template and CA-issued AK certificate in NV.
    let ak_ca = constellation_attest::qemu_vtpm::AkCa::generate().unwrap();
    let tpm_state = work.path().join("tpm");
    std::fs::create_dir_all(&tpm_state).unwrap();
    constellation_vmm::swtpm::manufacture(&tpm_state, Default::default()).unwrap();
    constellation_vmm::swtpm::provision_ak(&tpm_state, |ak: &[u8]| ak_ca.certify(ak)).unwrap();

    let mut attempt = 0;
    let (guest, opts_ports) = loop {
        let mut opts =
            NodeVmOptions::control_plane(out.join("disk.raw"), work.path().join("state.raw"));
        // A private hub of our own so parallel tests never share it.
        let port = constellation_image::nodevm::free_tcp_port().unwrap();
        opts.private_group = format!(
            "239.255.{}.{}:{port}",
            std::process::id() % 250,
            attempt + 1
        );
        opts.timeout = Duration::from_secs(1200);
        let ports = opts.forward_free_ports().unwrap();
        let serial = work.path().join(format!("serial-{attempt}.log"));
        let mut g = opts
            .builder()
            .unwrap()
            .serial_log(&serial)
            .tpm_state(&tpm_state)
            .spawn()
            .expect("guest starts");
        match g.wait_for_serial(READY, Duration::from_secs(900)) {
            Ok(t) => {
                eprintln!("agent ready {t:?} after QEMU start");
                break (g, ports);
            }
            Err(e) => {
                let log = g.serial_so_far();
                // Known host-load flake: the guest's TPM driver times out talking to swtpm.
                let tpm_flake = log.contains("tpm tpm0: Operation Timed out");
                attempt += 1;
                assert!(tpm_flake && attempt < 2, "agent did not become ready: {e}");
                eprintln!("TPM timed out under host load; booting again");
                drop(g);
                let _ = std::fs::remove_file(work.path().join("state.raw"));
            }
        }
    };
    let http = opts_ports
        .iter()
        .find(|(n, _, _)| *n == "verify-http")
        .map(|(_, h, _)| *h)
        .unwrap();

    let nonce: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(7).wrapping_add(3))
        .collect();
    let q = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&nonce);
    let deadline = Instant::now() + Duration::from_secs(300);
    let body = loop {
        match http_get(http, &format!("/?nonce={q}")) {
            Ok((status, body)) if status.contains(" 200 ") => break body,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "verification endpoint: {other:?}\n{}",
                    guest.serial_so_far()
                );
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["variant"], "qemu-vtpm", "{body}");
    let doc = base64::engine::general_purpose::STANDARD
        .decode(v["attestation"].as_str().unwrap())
        .unwrap();

    let config = AttestationConfig::new(Variant::QemuVtpm, predicted.clone());
    let validators = constellation_attest::Validators::new(config.validators().unwrap());
    let claims = validators
        .validate_bytes(&doc, &nonce, VERIFY_USER_DATA)
        .unwrap_or_else(|e| panic!("document does not validate against measurements.json: {e}"));
    for i in [4u32, 9, 11, 12] {
        let want = &predicted.0[&i];
        assert!(!want.warn_only, "PCR {i} must be enforced");
        assert_eq!(
            hex::encode(&claims.measurements[&i]),
            hex::encode(&want.expected),
            "PCR {i}: quoted vs predicted"
        );
    }
    assert!(
        claims.event_log_verified,
        "the event log must be present and replay to the quoted PCRs"
    );
    // The document's AK is the one the host provisioned: it chains to the cluster's AK CA.
    let certified =
        constellation_attest::qemu_vtpm::certified_validator(predicted.clone(), ak_ca.cert_pem())
            .unwrap();
    let parsed = constellation_attest::document::AttestationDocument::from_bytes(&doc).unwrap();
    certified
        .validate(&parsed, &nonce)
        .unwrap_or_else(|e| panic!("document's AK is not certified by the cluster's AK CA: {e}"));
    let other = constellation_attest::qemu_vtpm::AkCa::generate().unwrap();
    assert!(
        constellation_attest::qemu_vtpm::certified_validator(predicted.clone(), other.cert_pem())
            .unwrap()
            .validate(&parsed, &nonce)
            .is_err(),
        "another cluster's CA must not vouch for this node"
    );
    // A fresh node: PCR 15 (the cluster lock) is still zero.
    assert_eq!(claims.measurements[&15], vec![0u8; 32]);
    // A document for one nonce does not validate for another.
    assert!(
        validators
            .validate_bytes(&doc, &[0u8; 32], VERIFY_USER_DATA)
            .is_err()
    );
    drop(guest);
}
