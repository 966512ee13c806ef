//! Runs the built attest-verify binary against the shared testdata files.
//! Needs `--features cli` (scripts/test.sh runs it so).
#![cfg(feature = "cli")]
#![allow(clippy::unwrap_used, clippy::field_reassign_with_default)]

mod common;
use common::testdata_dir;
use std::process::Command;

fn run(args: &[&str]) -> Option<(i32, serde_json::Value, String)> {
    if !testdata_dir().join("MANIFEST.md").exists() {
        eprintln!("SKIPPED: shared testdata folder absent");
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
    if !testdata_dir().join("MANIFEST.md").exists() {
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
    // Documents recorded from swtpm by helper C (attest/tests/data), bound to nonce 07…07.
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");
    let doc = format!("{data}qemu-vtpm-rsa.cbor");
    let m = format!("{data}qemu-vtpm-rsa.measurements.json");
    if !std::path::Path::new(&doc).exists() {
        eprintln!("SKIPPED: {doc} absent");
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
