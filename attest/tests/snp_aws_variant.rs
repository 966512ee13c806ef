//! aws-sev-snp AK trust on a synthetic AMD PKI: the SNP report must bind SHA-512(SPKI(AK)).
#![allow(clippy::unwrap_used)]

mod common;
use base64::Engine;
use common::synth::{self, HWID, Rep, TCB, vcek};
use constellation_attest::aws::{AwsSnpAkTrust, AwsSnpInstanceInfo, ak_spki_der};
use constellation_attest::certs::Cert;
use constellation_attest::document::TpmEvidence;
use constellation_attest::policy::SnpPolicy;
use constellation_attest::snp::AmdRoots;
use constellation_attest::tpm::{AkTrust, TpmPublic};
use constellation_attest::validator::PlatformClaims;
use constellation_attest::variant::Variant;
use rsa::pkcs8::EncodePublicKey;
use sha2::Digest;

fn tpm2b_rsa(n: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    for v in [0x0001u16, 0x000B] {
        t.extend(v.to_be_bytes());
    }
    t.extend(0x0005_0072u32.to_be_bytes());
    for v in [0u16, 0x0010, 0x0014, 0x000B, (n.len() * 8) as u16] {
        t.extend(v.to_be_bytes());
    }
    t.extend(0u32.to_be_bytes());
    t.extend((n.len() as u16).to_be_bytes());
    t.extend(n);
    let mut out = (t.len() as u16).to_be_bytes().to_vec();
    out.extend(t);
    out
}

fn pem(der: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN CERTIFICATE-----\n{b}\n-----END CERTIFICATE-----\n")
}

#[test]
fn report_binds_exactly_the_ak_spki() {
    let ak_key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let n = ak_key.to_public_key();
    let spki = n.to_public_key_der().unwrap();
    let modulus = rsa::traits::PublicKeyParts::n(&n).to_bytes_be();
    let ak = TpmPublic::parse_tpm2b(&tpm2b_rsa(&modulus)).unwrap();
    assert_eq!(ak_spki_der(&ak).unwrap(), spki.as_bytes());

    let m = synth::milan();
    let leaf = vcek(m, TCB, HWID);
    let mut rd = [0u8; 64];
    rd.copy_from_slice(&sha2::Sha512::digest(spki.as_bytes()));
    let report = Rep {
        report_data: rd,
        ..Default::default()
    }
    .sign(&leaf.key);
    let info = AwsSnpInstanceInfo {
        report: base64::engine::general_purpose::STANDARD.encode(&report),
        signer_pem: pem(&leaf.der),
        chain_pem: pem(&m.ask),
    };
    let ev: TpmEvidence = serde_json::from_value(serde_json::json!({
        "ak_public": [], "quote": [], "signature": [], "pcrs": {}, "event_log": null,
        "instance_info": serde_json::to_vec(&info).unwrap(),
    }))
    .unwrap();
    let trust = AwsSnpAkTrust {
        roots: AmdRoots::from_certs(vec![Cert::from_der(&m.ark).unwrap()]),
        policy: SnpPolicy::default(),
    };
    assert!(matches!(
        trust
            .verify_ak(Variant::AwsSevSnp, &ev, &ak, &[0; 32])
            .unwrap(),
        PlatformClaims::HardwareVerified { .. }
    ));
    // Another AK is not bound by this report.
    let other = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048)
        .unwrap()
        .to_public_key();
    let other_ak = TpmPublic::parse_tpm2b(&tpm2b_rsa(
        &rsa::traits::PublicKeyParts::n(&other).to_bytes_be(),
    ))
    .unwrap();
    let err = trust
        .verify_ak(Variant::AwsSevSnp, &ev, &other_ak, &[0; 32])
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("SHA-512 of the attestation key SPKI"),
        "{err}"
    );
    // The pinned AMD roots refuse the synthetic chain.
    let pinned = AwsSnpAkTrust {
        roots: AmdRoots::builtin(),
        policy: SnpPolicy::default(),
    };
    assert!(
        pinned
            .verify_ak(Variant::AwsSevSnp, &ev, &ak, &[0; 32])
            .is_err()
    );
}
