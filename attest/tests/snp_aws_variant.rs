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

/// A VLEK chain on the synthetic Milan ARK: ASVK `SEV-VLEK-Milan` and a VLEK with a CSP id.
fn vlek(m: &synth::AmdPki, csp_id: &str) -> (synth::Leaf, Vec<u8>) {
    use common::synth::{Signer, Y2020, Y2040, ca_exts, der_int, make_cert};
    let asvk_key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let asvk = make_cert(
        "SEV-VLEK-Milan",
        "ARK-Milan",
        asvk_key
            .to_public_key()
            .to_public_key_der()
            .unwrap()
            .as_bytes(),
        3,
        (Y2020, Y2040),
        &ca_exts(Some(0)),
        Signer::RsaPss(&m.ark_key),
    );
    let key = p384::ecdsa::SigningKey::random(&mut rand::thread_rng());
    let spki = p384::PublicKey::from(key.verifying_key())
        .to_public_key_der()
        .unwrap();
    let mut csp = vec![0x16, csp_id.len() as u8];
    csp.extend_from_slice(csp_id.as_bytes());
    let der = make_cert(
        "SEV-VLEK",
        "SEV-VLEK-Milan",
        spki.as_bytes(),
        0,
        (Y2020, Y2040),
        &[
            ("1.3.6.1.4.1.3704.1.3.1", der_int(TCB.0)),
            ("1.3.6.1.4.1.3704.1.3.2", der_int(TCB.1)),
            ("1.3.6.1.4.1.3704.1.3.3", der_int(TCB.2)),
            ("1.3.6.1.4.1.3704.1.3.8", der_int(TCB.3)),
            ("1.3.6.1.4.1.3704.1.5", csp),
        ],
        Signer::RsaPss(&asvk_key),
    );
    (synth::Leaf { key, der }, asvk)
}

#[test]
fn default_aws_policy_accepts_only_aws_vleks() {
    use constellation_attest::policy::Policy;
    let ak_key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let n = ak_key.to_public_key();
    let spki = n.to_public_key_der().unwrap();
    let ak = TpmPublic::parse_tpm2b(&tpm2b_rsa(
        &rsa::traits::PublicKeyParts::n(&n).to_bytes_be(),
    ))
    .unwrap();
    let mut rd = [0u8; 64];
    rd.copy_from_slice(&sha2::Sha512::digest(spki.as_bytes()));
    let m = synth::milan();
    // The variant's default policy, with the synthetic ARK in place of AMD's (roots only).
    let mut policy = Policy::for_variant(Variant::AwsSevSnp).snp;
    policy.ark_pem = vec![pem(&m.ark)];
    let trust = AwsSnpAkTrust {
        roots: AmdRoots::from_policy(&policy).unwrap(),
        policy,
    };
    let evidence = |leaf: &synth::Leaf, chain: &[u8], key_info: u32| {
        let report = Rep {
            report_data: rd,
            key_info,
            chip_id: if key_info == 0 { HWID } else { [0; 64] },
            ..Default::default()
        }
        .sign(&leaf.key);
        let info = AwsSnpInstanceInfo {
            report: base64::engine::general_purpose::STANDARD.encode(&report),
            signer_pem: pem(&leaf.der),
            chain_pem: pem(chain),
        };
        serde_json::from_value::<TpmEvidence>(serde_json::json!({
            "ak_public": [], "quote": [], "signature": [], "pcrs": {}, "event_log": null,
            "instance_info": serde_json::to_vec(&info).unwrap(),
        }))
        .unwrap()
    };
    // A VCEK-signed report from any SEV-SNP machine whose REPORT_DATA binds a software AK.
    let err = trust
        .verify_ak(
            Variant::AwsSevSnp,
            &evidence(&vcek(m, TCB, HWID), &m.ask, 0),
            &ak,
            &[0; 32],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("vcek") || err.contains("VCEK"), "{err}");
    assert!(err.contains("allowed_csp_ids"), "{err}");
    // An AWS VLEK passes; a VLEK of another cloud does not.
    let (leaf, asvk) = vlek(m, "CN=cc-eu-west-1.amazonaws.com");
    trust
        .verify_ak(
            Variant::AwsSevSnp,
            &evidence(&leaf, &asvk, 1 << 2),
            &ak,
            &[0; 32],
        )
        .unwrap();
    let (leaf, asvk) = vlek(m, "CN=cc-west.cloud.example");
    let err = trust
        .verify_ak(
            Variant::AwsSevSnp,
            &evidence(&leaf, &asvk, 1 << 2),
            &ak,
            &[0; 32],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("cc-west.cloud.example"), "{err}");
}
