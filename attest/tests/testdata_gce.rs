//! GCE Shielded VM attestations (go-tpm-tools `attest.Attestation` protobuf) from
//! ../shared/testdata/tpm: quote signatures, PCR digests, SHA-256 event-log replay, AK certificate.
#![allow(clippy::unwrap_used)]

mod common;
use common::td;
use constellation_attest::certs::Cert;
use constellation_attest::eventlog::EventLog;
use constellation_attest::tpm::{TpmAttest, TpmKey, TpmPublic, TpmSignature, pcr_digest_sha256};
use rsa::signature::Verifier;
use std::collections::BTreeMap;

/// Minimal protobuf reader: (field number, wire type, varint or bytes).
fn fields(mut b: &[u8]) -> Vec<(u64, u64, u64, Vec<u8>)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for i in 0..10 {
            let c = b[0];
            *b = &b[1..];
            v |= u64::from(c & 0x7F) << (7 * i);
            if c & 0x80 == 0 {
                break;
            }
        }
        v
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let (f, wt) = (key >> 3, key & 7);
        match wt {
            0 => out.push((f, wt, varint(&mut b), vec![])),
            2 => {
                let n = varint(&mut b) as usize;
                out.push((f, wt, 0, b[..n].to_vec()));
                b = &b[n..];
            }
            5 => b = &b[4..],
            1 => b = &b[8..],
            _ => panic!("wire type {wt}"),
        }
    }
    out
}

struct Quote {
    attest: Vec<u8>,
    sig: Vec<u8>,
    hash: u64,
    pcrs: BTreeMap<u32, Vec<u8>>,
}

fn check(rel: &str, nonce: &[u8]) {
    let Some(pb) = td(rel) else { return };
    let top = fields(&pb);
    let get = |n| top.iter().find(|f| f.0 == n).map(|f| f.3.clone()).unwrap();
    let ak = TpmPublic::parse_tpmt(&get(1)).unwrap();
    let TpmKey::Rsa {
        modulus, exponent, ..
    } = &ak.key
    else {
        panic!("RSA AK expected")
    };
    let key = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(modulus),
        rsa::BigUint::from(*exponent),
    )
    .unwrap();
    let quotes: Vec<Quote> = top
        .iter()
        .filter(|f| f.0 == 2)
        .map(|f| {
            let q = fields(&f.3);
            let pcrs_msg = q.iter().find(|x| x.0 == 3).map(|x| fields(&x.3)).unwrap();
            let mut pcrs = BTreeMap::new();
            for e in pcrs_msg.iter().filter(|x| x.0 == 2) {
                let kv = fields(&e.3);
                let k = kv.iter().find(|x| x.0 == 1).map(|x| x.2).unwrap_or(0) as u32;
                let v = kv.iter().find(|x| x.0 == 2).map(|x| x.3.clone()).unwrap();
                pcrs.insert(k, v);
            }
            Quote {
                attest: q.iter().find(|x| x.0 == 1).unwrap().3.clone(),
                sig: q.iter().find(|x| x.0 == 2).unwrap().3.clone(),
                hash: pcrs_msg.iter().find(|x| x.0 == 1).map(|x| x.2).unwrap(),
                pcrs,
            }
        })
        .collect();
    assert_eq!(quotes.len(), 3, "{rel}");
    let mut banks: Vec<u64> = quotes.iter().map(|q| q.hash).collect();
    banks.sort();
    assert_eq!(banks, vec![4, 11, 12], "SHA-1, SHA-256, SHA-384 banks");
    for q in &quotes {
        let TpmSignature::RsaSsa { sig, .. } = TpmSignature::parse(&q.sig).unwrap() else {
            panic!("RSASSA")
        };
        let s = rsa::pkcs1v15::Signature::try_from(sig.as_slice()).unwrap();
        rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.clone())
            .verify(&q.attest, &s)
            .unwrap();
        let a = TpmAttest::parse(&q.attest).unwrap();
        assert_eq!(a.extra_data, nonce, "{rel}");
        let sel: Vec<&[u8]> = a
            .pcr_selection
            .iter()
            .flat_map(|s| s.pcrs.iter().map(|i| q.pcrs[i].as_slice()))
            .collect();
        assert_eq!(
            pcr_digest_sha256(sel).as_slice(),
            a.pcr_digest.as_slice(),
            "{rel} bank {}",
            q.hash
        );
    }
    // SHA-256 event-log replay matches PCRs 0-9, 11-16 and 23.
    let log = EventLog::parse(&get(3)).unwrap();
    let replay = log.replay_sha256().unwrap();
    let sha256 = quotes.iter().find(|q| q.hash == 11).unwrap();
    for i in (0..=9).chain(11..=16).chain([23]) {
        let got = replay.get(&i).map(|v| v.to_vec()).unwrap_or(vec![0u8; 32]);
        assert_eq!(&got, &sha256.pcrs[&i], "{rel} PCR {i}");
    }
    // The AK certificate carries the AK and chains to intermediate 2 → root 1.
    let (Some(i2), Some(root)) = (
        td("tpm/gce-ca/tpm-ek-intermediate-2.der"),
        td("tpm/gce-ca/tpm-ek-root-1.der"),
    ) else {
        return;
    };
    let cert = Cert::from_der(&get(6)).unwrap();
    let i2 = Cert::from_der(&i2).unwrap();
    cert.verify_rsa_pkcs1_sha256_by(&i2).unwrap();
    i2.verify_rsa_pkcs1_sha256_by(&Cert::from_der(&root).unwrap())
        .unwrap();
    use rsa::pkcs8::EncodePublicKey;
    assert_eq!(cert.spki_der(), key.to_public_key_der().unwrap().as_bytes());
}

#[test]
fn gce_cos85_attestation_nonce9009() {
    check("tpm/gce-cos85-attestation-nonce9009.pb", &[0x90, 0x09]);
}

#[test]
fn gce_cos85_attestation_no_nonce() {
    check("tpm/gce-cos85-attestation-no-nonce.pb", &[]);
}
