//! The tpm/ vectors of ../shared/testdata/MANIFEST.md that are pure parsing/signature checks
//! (Google vTPM CA chains, trustee's generic TPM evidence, parse-only event logs and quotes).
#![allow(clippy::unwrap_used)]

mod common;
use base64::Engine;
use common::td;
use constellation_attest::certs::Cert;
use constellation_attest::eventlog::EventLog;
use constellation_attest::tpm::{TpmAttest, TpmSignature, pcr_digest_sha256};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;

#[test]
fn google_vtpm_ca_chains() {
    let (Some(root), Some(i2), Some(i3), Some(groot), Some(gi3)) = (
        td("tpm/gce-ca/tpm-ek-root-1.der"),
        td("tpm/gce-ca/tpm-ek-intermediate-2.der"),
        td("tpm/gce-ca/tpm-ek-intermediate-3.der"),
        td("tpm/gce-ca/gcp-ek-ak-ca-root.der"),
        td("tpm/gce-ca/gcp-ek-ak-ca-intermediate-v3.der"),
    ) else {
        return;
    };
    let root = Cert::from_der(&root).unwrap();
    root.verify_rsa_pkcs1_sha256_by(&root).unwrap();
    for i in [i2, i3] {
        Cert::from_der(&i)
            .unwrap()
            .verify_rsa_pkcs1_sha256_by(&root)
            .unwrap();
    }
    let groot = Cert::from_der(&groot).unwrap();
    Cert::from_der(&gi3)
        .unwrap()
        .verify_rsa_pkcs1_sha256_by(&groot)
        .unwrap();
    // Crossed: the legacy intermediate does not verify under the new root.
    assert!(
        Cert::from_der(&td("tpm/gce-ca/tpm-ek-intermediate-2.der").unwrap())
            .unwrap()
            .verify_rsa_pkcs1_sha256_by(&groot)
            .is_err()
    );
}

#[test]
fn trustee_generic_tpm_evidence() {
    let Some(j) = td("tpm/trustee-tpm-evidence.json") else {
        return;
    };
    let j: serde_json::Value = serde_json::from_slice(&j).unwrap();
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let ak = rsa::RsaPublicKey::from_public_key_der(&b64(&j["ak_public"])).unwrap();
    let msg = b64(&j["tpm_quote"]["message"]);
    let sig = TpmSignature::parse(&b64(&j["tpm_quote"]["signature"])).unwrap();
    let TpmSignature::RsaSsa { sig, .. } = sig else {
        panic!("not RSASSA")
    };
    let s = rsa::pkcs1v15::Signature::try_from(sig.as_slice()).unwrap();
    rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(ak.clone())
        .verify(&msg, &s)
        .unwrap();
    let a = TpmAttest::parse(&msg).unwrap();
    assert_eq!(a.extra_data.len(), 64);
    assert!(hex::encode(&a.extra_data).starts_with("a04182b5"));
    let pcrs: Vec<Vec<u8>> = j["tpm_quote"]["pcrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| hex::decode(p.as_str().unwrap()).unwrap())
        .collect();
    let selected: Vec<&[u8]> = a
        .pcr_selection
        .iter()
        .flat_map(|s| s.pcrs.iter().map(|i| pcrs[*i as usize].as_slice()))
        .collect();
    assert_eq!(
        pcr_digest_sha256(selected).as_slice(),
        a.pcr_digest.as_slice()
    );
    let mut bad = msg.clone();
    bad[20] ^= 1;
    assert!(
        rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(ak)
            .verify(&bad, &s)
            .is_err()
    );
}

#[test]
fn unpaired_azure_quote_parses() {
    let (Some(m), Some(s)) = (
        td("azure-snp/trustee-tpm-quote-unpaired.msg"),
        td("azure-snp/trustee-tpm-quote-unpaired.sig"),
    ) else {
        return;
    };
    let a = TpmAttest::parse(&m).unwrap();
    assert_eq!(a.extra_data, b"challenge");
    let pcrs: Vec<u32> = a
        .pcr_selection
        .iter()
        .flat_map(|s| s.pcrs.clone())
        .collect();
    assert_eq!(pcrs, vec![0, 1, 2, 3, 4, 5, 6, 7, 14]);
    assert_eq!(s.len(), 256);
}

#[test]
fn vtpm_event_logs_parse() {
    for f in [
        "tpm/eventlog-ubuntu-2404-amd-sevsnp.bin",
        "tpm/eventlog-cos-101-amd-sev.bin",
        "tpm/eventlog-rhel8-uefi.bin",
    ] {
        let Some(b) = td(f) else { return };
        let log = EventLog::parse(&b).unwrap();
        assert!(!log.events.is_empty(), "{f}");
        assert!(log.events.iter().all(|e| e.sha256().is_some()), "{f}");
    }
}

#[test]
fn ccel_acpi_table_parses() {
    let Some(t) = td("tdx/gce-cos113-ccel-acpi-table.bin") else {
        return;
    };
    assert_eq!(&t[..4], b"CCEL");
    assert_eq!(
        u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize,
        t.len()
    );
}
