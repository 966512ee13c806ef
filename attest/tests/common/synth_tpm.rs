//! Synthetic vTPM evidence: an RSA AK, a TPMS_ATTEST quote over chosen SHA-256 PCRs bound to
//! instance_info, user data and nonce, signed RSASSA-PKCS1-v1_5/SHA-256 — what a TPM would emit.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use constellation_attest::document::{TpmEvidence, extra_data, tpm_qualifying_data};
use constellation_attest::tpm::pcr_digest_sha256;
use rsa::pkcs8::EncodePublicKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde_bytes::ByteBuf;

pub struct Ak {
    pub key: rsa::RsaPrivateKey,
    pub tpm2b: Vec<u8>,
    pub modulus: Vec<u8>,
    pub spki_der: Vec<u8>,
}

pub fn tpm2b_rsa(n: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend(0x0001u16.to_be_bytes()); // TPM_ALG_RSA
    t.extend(0x000Bu16.to_be_bytes()); // name alg SHA-256
    t.extend(0x0005_0072u32.to_be_bytes()); // restricted signing key made in the TPM
    t.extend(0u16.to_be_bytes()); // authPolicy
    t.extend(0x0010u16.to_be_bytes()); // symmetric NULL
    t.extend(0x0014u16.to_be_bytes()); // RSASSA
    t.extend(0x000Bu16.to_be_bytes()); // SHA-256
    t.extend(((n.len() * 8) as u16).to_be_bytes());
    t.extend(0u32.to_be_bytes()); // default exponent 65537
    t.extend((n.len() as u16).to_be_bytes());
    t.extend(n);
    let mut out = (t.len() as u16).to_be_bytes().to_vec();
    out.extend(t);
    out
}

pub fn new_ak() -> Ak {
    let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let modulus = key.n().to_bytes_be();
    let spki_der = key
        .to_public_key()
        .to_public_key_der()
        .unwrap()
        .as_bytes()
        .to_vec();
    Ak {
        tpm2b: tpm2b_rsa(&modulus),
        key,
        modulus,
        spki_der,
    }
}

/// One AK per test binary (RSA key generation is slow).
pub fn ak() -> &'static Ak {
    static A: OnceLock<Ak> = OnceLock::new();
    A.get_or_init(new_ak)
}

/// A second, unrelated AK.
pub fn other_ak() -> &'static Ak {
    static A: OnceLock<Ak> = OnceLock::new();
    A.get_or_init(new_ak)
}

pub fn pcrs() -> BTreeMap<u32, [u8; 32]> {
    (0u32..8).map(|i| (i, [i as u8; 32])).collect()
}

/// Evidence quoting `pcrs` with `ak`, binding instance_info, user data and nonce.
pub fn evidence(
    ak: &Ak,
    pcrs: &BTreeMap<u32, [u8; 32]>,
    instance_info: Vec<u8>,
    user_data: &[u8],
    nonce: &[u8],
) -> TpmEvidence {
    let qd = tpm_qualifying_data(&instance_info, &extra_data(user_data, nonce));
    let mut q = Vec::new();
    q.extend(0xff54_4347u32.to_be_bytes());
    q.extend(0x8018u16.to_be_bytes());
    q.extend(34u16.to_be_bytes());
    q.extend([0u8; 34]); // qualifiedSigner (not checked)
    q.extend(32u16.to_be_bytes());
    q.extend(qd);
    q.extend(1234u64.to_be_bytes()); // clock
    q.extend(1u32.to_be_bytes()); // resetCount
    q.extend(0u32.to_be_bytes()); // restartCount
    q.push(1); // safe
    q.extend(0u64.to_be_bytes()); // firmwareVersion
    q.extend(1u32.to_be_bytes());
    q.extend(0x000Bu16.to_be_bytes());
    q.push(3);
    let mut sel = [0u8; 3];
    for i in pcrs.keys() {
        sel[(*i / 8) as usize] |= 1 << (i % 8);
    }
    q.extend(sel);
    let digest = pcr_digest_sha256(pcrs.values().map(|v| v.as_slice()));
    q.extend((digest.len() as u16).to_be_bytes());
    q.extend(digest);
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(ak.key.clone());
    let sig = signer.sign(&q).to_vec();
    let mut s = Vec::new();
    s.extend(0x0014u16.to_be_bytes());
    s.extend(0x000Bu16.to_be_bytes());
    s.extend((sig.len() as u16).to_be_bytes());
    s.extend(sig);
    TpmEvidence {
        ak_public: ak.tpm2b.clone(),
        quote: q,
        signature: s,
        pcrs: pcrs
            .iter()
            .map(|(k, v)| (*k, ByteBuf::from(v.to_vec())))
            .collect(),
        event_log: None,
        instance_info,
    }
}

/// Measurements JSON expecting `pcrs` (all enforced).
pub fn measurements_json(pcrs: &BTreeMap<u32, [u8; 32]>) -> serde_json::Value {
    let m: serde_json::Map<String, serde_json::Value> = pcrs
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                serde_json::json!({"expected": hex::encode(v), "warnOnly": false}),
            )
        })
        .collect();
    serde_json::Value::Object(m)
}
