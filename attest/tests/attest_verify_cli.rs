//! Runs the built attest-verify binary against the shared testdata files.
//! Needs `--features cli` (scripts/test.sh runs it so).
#![cfg(feature = "cli")]
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod common;
use common::testdata_dir;
use std::process::Command;

fn run(args: &[&str]) -> Option<(i32, serde_json::Value, String)> {
    if !common::have_testdata() {
        return None;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_attest-verify"))
        .args(args)
        .current_dir(testdata_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    Some((
        out.status.code().unwrap(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn snp_report_verifies() {
    let Some((code, j, err)) = run(&[
        "snp",
        "--report",
        "snp/milan-vcek-report-trustee.bin",
        "--signer",
        "snp/milan-vcek-trustee.der",
        "--chain",
        "amd-roots/milan-ask-ark-chain.pem",
    ]) else {
        return;
    };
    assert_eq!(code, 0, "{err}");
    assert_eq!(j["verified"], true);
    assert_eq!(j["claims"]["snp"]["policy"], 0x3001f);
    assert_eq!(j["claims"]["snp"]["reported_tcb"]["microcode"], 115);
}

#[test]
fn snp_expired_vlek_fails_now_and_passes_in_window() {
    let args = [
        "snp",
        "--report",
        "aws-snp/constellation-report-vlek-2024.bin",
        "--signer",
        "aws-snp/constellation-vlek-2024.pem",
        "--chain",
        "amd-roots/milan-asvk-ark-chain.pem",
    ];
    let Some((code, j, err)) = run(&args) else {
        return;
    };
    assert_eq!(code, 1);
    assert_eq!(j["verified"], false);
    assert!(
        err.contains("SEV-VLEK") && err.contains("not valid at"),
        "{err}"
    );
    let mut a = args.to_vec();
    a.extend(["--at", "2025-06-01T00:00:00Z"]);
    let (code, _, err) = run(&a).unwrap();
    assert_eq!(code, 0, "{err}");
}

#[test]
fn snp_lists_every_failed_check() {
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("p.json");
    std::fs::write(
        &pol,
        r#"{"version":1,"snp":{"minimum_tcb":{"bootloader":9,"tee":0,"snp":0,"microcode":0}}}"#,
    )
    .unwrap();
    let Some((code, j, err)) = run(&[
        "snp",
        "--report",
        "aws-snp/trustee-report-vlek-2024.bin",
        "--signer",
        "aws-snp/trustee-vlek-2024.der",
        "--chain",
        "amd-roots/milan-asvk-ark-chain.pem",
        "--policy",
        pol.to_str().unwrap(),
    ]) else {
        return;
    };
    assert_eq!(code, 1);
    let f: Vec<String> = j["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(f.iter().any(|s| s.contains("not valid at")), "{f:?}");
    assert!(f.iter().any(|s| s.contains("VMPL 1")), "{f:?}");
    assert!(f.iter().any(|s| s.contains("bootloader")), "{f:?}");
    assert!(
        err.lines().filter(|l| l.starts_with("FAILED")).count() >= 4,
        "{err}"
    );
}

#[test]
fn snp_wrong_generation_chain_is_reported() {
    let Some((code, _, err)) = run(&[
        "snp",
        "--report",
        "snp/milan-vcek-report-trustee.bin",
        "--signer",
        "snp/milan-vcek-trustee.der",
        "--chain",
        "amd-roots/turin-ask-ark-chain.pem",
    ]) else {
        return;
    };
    assert_eq!(code, 1);
    assert!(err.contains("SEV-Turin"), "{err}");
}

#[test]
fn azure_snp_hcl_report_verifies() {
    let Some((code, j, err)) = run(&[
        "azure-snp",
        "--hcl-report",
        "azure-snp/trustee-hcl-report-milan.bin",
        "--signer",
        "azure-snp/trustee-vcek-ask-ark-milan.pem",
        "--chain",
        "amd-roots/milan-ask-ark-chain.pem",
    ]) else {
        return;
    };
    assert_eq!(code, 0, "{err}");
    assert!(
        j["claims"]["azure_snp"]["ak_modulus"]
            .as_str()
            .unwrap()
            .len()
            > 500
    );
}

fn collateral_dir(tcb: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let td = testdata_dir();
    for (src, dst) in [
        (tcb, "tcb_info.json"),
        (
            "tdx/go-tdx-guest-qe-identity-2023-06.json",
            "qe_identity.json",
        ),
        (
            "intel-roots/intel-tcb-signing-chain.pem",
            "tcb_signing_chain.pem",
        ),
        (
            "tdx/go-tdx-guest-pck-platform-ca-2023-06.crl.der",
            "pck_crl.der",
        ),
        (
            "tdx/go-tdx-guest-intel-root-ca-2023-04.crl.der",
            "root_ca_crl.der",
        ),
    ] {
        std::fs::copy(td.join(src), d.path().join(dst)).unwrap();
    }
    d
}

#[test]
fn tdx_quote_up_to_date_with_collateral() {
    if !common::have_testdata() {
        return;
    }
    let d = collateral_dir("tdx/go-tdx-guest-tcbinfo-fmspc90c06f-2026-02.json");
    let (code, j, err) = run(&[
        "tdx",
        "--quote",
        "tdx/go-tdx-guest-quote-v5-fmspc90c06f.dat",
        "--collateral",
        d.path().to_str().unwrap(),
        "--collateral-at",
        "skip",
    ])
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(j["claims"]["tdx"]["tcb_status"], "UpToDate");
    let (code, _, err) = run(&[
        "tdx",
        "--quote",
        "tdx/trustee-quote-v5-fmspc90c06f.dat",
        "--collateral",
        d.path().to_str().unwrap(),
        "--collateral-at",
        "skip",
    ])
    .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("TCB level not supported"), "{err}");
    // Collateral checked at the current date is stale.
    let (code, _, err) = run(&[
        "tdx",
        "--quote",
        "tdx/go-tdx-guest-quote-v5-fmspc90c06f.dat",
        "--collateral",
        d.path().to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("TCB info is not valid at"), "{err}");
}

#[test]
fn tdx_quote_without_collateral_needs_a_policy_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("p.json");
    std::fs::write(&pol, r#"{"version":1,"tdx":{"accepted_tcb_status":[]}}"#).unwrap();
    let Some((code, _, err)) = run(&["tdx", "--quote", "tdx/gce-cos113-quote-v4-padded.dat"])
    else {
        return;
    };
    assert_eq!(code, 1, "{err}");
    let (code, j, err) = run(&[
        "tdx",
        "--quote",
        "tdx/gce-cos113-quote-v4-padded.dat",
        "--policy",
        pol.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(j["claims"]["tdx"]["report_data"], "0".repeat(128));
}

#[test]
fn unreadable_inputs_exit_2() {
    let Some((code, _, err)) = run(&[
        "snp",
        "--report",
        "does-not-exist.bin",
        "--signer",
        "snp/milan-vcek-trustee.der",
    ]) else {
        return;
    };
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = run(&[
        "tpm",
        "--document",
        "snp/milan-vcek-report-trustee.bin",
        "--measurements",
        "snp/milan-vcek-report-trustee.bin",
    ])
    .unwrap();
    assert_eq!(code, 2);
}

#[test]
fn tpm_document_form_uses_the_vtpm_validator() {
    // Documents recorded from swtpm (attest/tests/data), bound to nonce 07…07.
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");
    let doc = format!("{data}qemu-vtpm-rsa.cbor");
    let m = format!("{data}qemu-vtpm-rsa.measurements.json");
    if !std::path::Path::new(&doc).exists() {
        constellation_testkit::skip_current(&format!("{doc} is absent"), "restore it from git");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_attest-verify");
    let nonce = "07".repeat(32);
    let out = Command::new(bin)
        .args([
            "tpm",
            "--document",
            &doc,
            "--measurements",
            &m,
            "--nonce",
            &nonce,
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["claims"]["tpm"]["variant"], "qemu-vtpm");
    let out = Command::new(bin)
        .args([
            "tpm",
            "--document",
            &doc,
            "--measurements",
            &m,
            "--nonce",
            &"08".repeat(32),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("FAILED"));
}

fn run_bin_owned(args: &[String]) -> (i32, serde_json::Value, String) {
    run_bin(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn run_bin(args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_attest-verify"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn qemu_tdx_document_form_checks_quote_collateral_binding_and_measurements() {
    use common::synth_tdx::{QuoteSpec, pki, quote};
    use constellation_attest::document::{
        AttestationDocument, Evidence, TdxEvidence, tdx_report_data,
    };
    let nonce = [0x42u8; 16];
    let user = [0x24u8; 32];
    let p = pki();
    let spec = QuoteSpec {
        report_data: tdx_report_data(&user, &nonce),
        ..Default::default()
    };
    let d = tempfile::tempdir().unwrap();
    let path = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    let doc = AttestationDocument::new(
        constellation_attest::Variant::QemuTdx,
        user.to_vec(),
        Evidence::Tdx(TdxEvidence {
            quote: quote(&spec, &p, &p.pck_key),
            event_log: None,
            collateral: None,
        }),
    );
    std::fs::write(path("doc.cbor"), doc.to_bytes()).unwrap();
    let col = d.path().join("collateral");
    std::fs::create_dir(&col).unwrap();
    let c = p.collateral();
    for (name, bytes) in [
        ("tcb_info.json", &c.tcb_info),
        ("qe_identity.json", &c.qe_identity),
        ("tcb_signing_chain.pem", &c.tcb_signing_chain),
        ("pck_crl.der", &c.pck_crl),
        ("root_ca_crl.der", &c.root_ca_crl),
    ] {
        if let Some(b) = bytes {
            std::fs::write(col.join(name), b).unwrap();
        }
    }
    std::fs::write(
        path("policy.json"),
        serde_json::json!({"version": 1, "tdx": {"root_ca_pem": p.root_pem()}}).to_string(),
    )
    .unwrap();
    let m = |mrtd: [u8; 48]| {
        let mut m = serde_json::Map::new();
        m.insert(
            "0".into(),
            serde_json::json!({"expected": hex::encode(mrtd), "warnOnly": false}),
        );
        for (i, r) in spec.rtmr.iter().enumerate() {
            m.insert(
                (i + 1).to_string(),
                serde_json::json!({"expected": hex::encode(r), "warnOnly": false}),
            );
        }
        serde_json::Value::Object(m).to_string()
    };
    std::fs::write(path("m.json"), m(spec.mrtd)).unwrap();
    std::fs::write(path("m-bad.json"), m([0x45; 48])).unwrap();
    let (doc_p, m_p, m_bad, pol, col_p) = (
        path("doc.cbor"),
        path("m.json"),
        path("m-bad.json"),
        path("policy.json"),
        col.to_str().unwrap().to_string(),
    );
    let nonce_hex = hex::encode(nonce);
    let base = |m: &str, nonce: &str| {
        vec![
            "qemu-tdx".to_string(),
            "--document".into(),
            doc_p.clone(),
            "--measurements".into(),
            m.into(),
            "--nonce".into(),
            nonce.into(),
            "--policy".into(),
            pol.clone(),
            "--at".into(),
            "skip".into(),
        ]
    };
    let with_col = |mut a: Vec<String>| {
        a.extend(["--collateral".to_string(), col_p.clone()]);
        a
    };

    let ok = with_col(base(&m_p, &nonce_hex));
    let (code, j, err) = run_bin_owned(&ok);
    assert_eq!(code, 0, "{err}");
    assert_eq!(j["claims"]["qemu_tdx"]["variant"], "qemu-tdx");

    // Wrong nonce, wrong MRTD, wrong user data: exit 1 with the reason.
    let (code, _, err) = run_bin_owned(&with_col(base(&m_p, "00")));
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = run_bin_owned(&with_col(base(&m_bad, &nonce_hex)));
    assert_eq!(code, 1, "{err}");
    let mut ud = ok.clone();
    ud.extend(["--user-data".to_string(), "00".into()]);
    let (code, j, _) = run_bin_owned(&ud);
    assert_eq!(code, 1);
    assert!(
        j["failures"][0].as_str().unwrap().contains("user data"),
        "{j}"
    );

    // A vTPM document is refused by this form (exit 2), and this document by `tpm`.
    let (code, _, err) = run_bin(&["tpm", "--document", &doc_p, "--measurements", &m_p]);
    assert_eq!(code, 2);
    assert!(err.contains("qemu-tdx"), "{err}");

    // --config: measurements and policy from the data source's config_json.
    let config = |name: &str, m: &str, policy: serde_json::Value| {
        let c = constellation_attest::config::AttestationConfig {
            variant: constellation_attest::Variant::QemuTdx,
            measurements: constellation_attest::Measurements::from_json(
                &std::fs::read_to_string(m).unwrap(),
            )
            .unwrap(),
            policy: serde_json::from_value(policy).unwrap(),
        };
        let p = path(name);
        std::fs::write(&p, c.to_json()).unwrap();
        p
    };
    let policy = serde_json::json!({"version": 1, "tdx": {"root_ca_pem": p.root_pem()}});
    let with_config = |c: &str| {
        with_col(vec![
            "qemu-tdx".to_string(),
            "--document".into(),
            doc_p.clone(),
            "--config".into(),
            c.into(),
            "--nonce".into(),
            nonce_hex.clone(),
            "--at".into(),
            "skip".into(),
        ])
    };
    let good = config("config.json", &m_p, policy.clone());
    let (code, j, err) = run_bin_owned(&with_config(&good));
    assert_eq!(code, 0, "{err}");
    assert_eq!(j["claims"]["qemu_tdx"]["variant"], "qemu-tdx");
    // Wrong MRTD in the config: exit 1 naming the mismatch.
    let (code, j, err) = run_bin_owned(&with_config(&config("config-bad.json", &m_bad, policy)));
    assert_eq!(code, 1, "{err}");
    assert!(j["failures"][0].as_str().unwrap().contains("differ"), "{j}");
    // The config's policy applies: without its test root CA the quote's chain is untrusted.
    let strict = config(
        "config-strict.json",
        &m_p,
        serde_json::json!({"version": 1}),
    );
    let (code, _, err) = run_bin_owned(&with_config(&strict));
    assert_eq!(code, 1, "{err}");
    // --config excludes --policy (usage error, exit 2).
    let mut both = with_config(&good);
    both.extend(["--policy".to_string(), pol.clone()]);
    let (code, _, err) = run_bin_owned(&both);
    assert_eq!(code, 2);
    assert!(
        err.contains("--policy") && err.contains("--config"),
        "{err}"
    );
}

#[test]
fn config_form_checks_the_data_source_config() {
    use constellation_attest::{Measurements, Variant, config::AttestationConfig};
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");
    let doc = format!("{data}qemu-vtpm-rsa.cbor");
    let m = format!("{data}qemu-vtpm-rsa.measurements.json");
    if !std::path::Path::new(&doc).exists() {
        constellation_testkit::skip_current(&format!("{doc} is absent"), "restore it from git");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let nonce = "07".repeat(32);
    // What `terraform output -raw` gives for `data.constellation_attestation.x.config_json`.
    let write = |name: &str, variant: Variant, measurements: &serde_json::Value| {
        let m = Measurements::from_json(&measurements.to_string()).unwrap();
        let p = d.path().join(name);
        std::fs::write(&p, AttestationConfig::new(variant, m).to_json()).unwrap();
        p.to_str().unwrap().to_string()
    };
    let mut good: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&m).unwrap()).unwrap();
    let config = write("good.json", Variant::QemuVtpm, &good);
    let verify = |config: &str| {
        run_bin(&[
            "tpm",
            "--document",
            &doc,
            "--config",
            config,
            "--nonce",
            &nonce,
        ])
    };

    let (code, j, err) = verify(&config);
    assert_eq!(code, 0, "{err}");
    assert_eq!(j["claims"]["tpm"]["variant"], "qemu-vtpm");

    // PCR 4 differs from the document's: exit 1 naming it.
    good["4"]["expected"] = serde_json::json!("00".repeat(32));
    let bad = write("bad.json", Variant::QemuVtpm, &good);
    let (code, j, err) = verify(&bad);
    assert_eq!(code, 1, "{err}");
    let failure = j["failures"][0].as_str().unwrap();
    assert!(failure.contains("index 4:"), "{j}");

    // A config for another variant refuses the document.
    let other = write("azure.json", Variant::AzureSevSnp, &good);
    let (code, j, err) = verify(&other);
    assert_eq!(code, 1, "{err}");
    assert!(
        j["failures"][0]
            .as_str()
            .unwrap()
            .contains("requires azure-sev-snp"),
        "{j}"
    );

    // Unreadable, invalid or quoted (`terraform output` without -raw) configs: exit 2.
    let (code, _, err) = verify(d.path().join("absent.json").to_str().unwrap());
    assert_eq!(code, 2);
    assert!(err.contains("cannot read"), "{err}");
    let invalid = d.path().join("invalid.json");
    std::fs::write(&invalid, r#"{"variant":"qemu-vtpm"}"#).unwrap();
    let (code, _, err) = verify(invalid.to_str().unwrap());
    assert_eq!(code, 2);
    assert!(
        err.contains("--config") && err.contains("measurements"),
        "{err}"
    );
    let quoted = d.path().join("quoted.json");
    let raw = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&quoted, serde_json::to_string(&raw).unwrap()).unwrap();
    let (code, _, err) = verify(quoted.to_str().unwrap());
    assert_eq!(code, 2);
    assert!(err.contains("terraform output -raw"), "{err}");

    // --config excludes --measurements and --policy; one of --config, --measurements is needed.
    for extra in [["--measurements", m.as_str()], ["--policy", m.as_str()]] {
        let (code, _, err) = run_bin(&[
            "tpm",
            "--document",
            &doc,
            "--config",
            &config,
            extra[0],
            extra[1],
        ]);
        assert_eq!(code, 2);
        assert!(err.contains("cannot be used with"), "{err}");
    }
    let (code, _, err) = run_bin(&["tpm", "--document", &doc]);
    assert_eq!(code, 2);
    assert!(err.contains("--measurements"), "{err}");
}

#[test]
fn tpm_form_uses_the_validator_of_the_documents_variant() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");
    let src = format!("{data}qemu-vtpm-rsa.cbor");
    let m = format!("{data}qemu-vtpm-rsa.measurements.json");
    if !std::path::Path::new(&src).exists() {
        constellation_testkit::skip_current(&format!("{src} is absent"), "restore it from git");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let nonce = "07".repeat(32);
    let as_variant = |v: constellation_attest::Variant| {
        let mut doc =
            constellation_attest::AttestationDocument::from_bytes(&std::fs::read(&src).unwrap())
                .unwrap();
        doc.variant = v;
        let p = d.path().join(format!("{v}.cbor"));
        std::fs::write(&p, doc.to_bytes()).unwrap();
        p.to_str().unwrap().to_string()
    };
    // aws-sev-snp's validator wants an SNP report in instance_info, which a swtpm document lacks.
    let aws = as_variant(constellation_attest::Variant::AwsSevSnp);
    let (code, j, err) = run_bin(&[
        "tpm",
        "--document",
        &aws,
        "--measurements",
        &m,
        "--nonce",
        &nonce,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        j["failures"][0].as_str().unwrap().contains("instance_info"),
        "{j}"
    );
    // gcp-sev-es needs the Compute API endpoint in the policy: exit 2 naming it.
    let gcp = as_variant(constellation_attest::Variant::GcpSevEs);
    let (code, _, err) = run_bin(&[
        "tpm",
        "--document",
        &gcp,
        "--measurements",
        &m,
        "--nonce",
        &nonce,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("compute_api_url"), "{err}");
    // The qemu-tdx form refuses vTPM documents.
    let (code, _, err) = run_bin(&["qemu-tdx", "--document", &src, "--measurements", &m]);
    assert_eq!(code, 2);
    assert!(err.contains("qemu-vtpm"), "{err}");
}
