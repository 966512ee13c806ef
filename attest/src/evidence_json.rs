//! Small helpers shared by the cloud AK-trust hooks: decoding the base64/PEM fields of the
//! JSON `instance_info` each variant carries, and comparing an AK with a key from elsewhere.

use base64::Engine;

use crate::certs::Cert;
use crate::tpm::{TpmKey, TpmPublic};

/// Standard base64 (whitespace around it ignored); `field` names the JSON field in errors.
pub(crate) fn b64(field: &str, s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("{field}: {e}"))
}

/// A leaf certificate (PEM or DER) and an optional PEM chain (empty string: no chain).
pub(crate) fn leaf_and_chain(
    leaf_field: &str,
    leaf: &str,
    chain: &str,
) -> Result<(Cert, Vec<Cert>), String> {
    let leaf = Cert::from_pem_or_der(leaf.as_bytes()).map_err(|e| format!("{leaf_field}: {e}"))?;
    let chain = if chain.trim().is_empty() {
        Vec::new()
    } else {
        Cert::from_pem_bundle(chain.as_bytes()).map_err(|e| format!("chain_pem: {e}"))?
    };
    Ok((leaf, chain))
}

/// True when the AK is the RSA key with this big-endian modulus and exponent (leading zero
/// bytes of either ignored).
pub(crate) fn rsa_ak_is(ak: &TpmPublic, n: &[u8], e: &[u8]) -> bool {
    let strip = |v: &[u8]| -> Vec<u8> {
        let start = v.iter().position(|b| *b != 0).unwrap_or(v.len());
        v.get(start..).unwrap_or_default().to_vec()
    };
    match &ak.key {
        TpmKey::Rsa {
            modulus, exponent, ..
        } => strip(modulus) == strip(n) && strip(&exponent.to_be_bytes()) == strip(e),
        TpmKey::Ecc { .. } => false,
    }
}

/// A SubjectPublicKeyInfo (PEM `PUBLIC KEY` or DER) re-encoded canonically, so that two
/// encodings of one key compare equal. RSA, P-256 and P-384 keys.
pub(crate) fn canonical_spki(pem_or_der: &[u8]) -> Result<Vec<u8>, String> {
    use rsa::pkcs8::{DecodePublicKey, EncodePublicKey};
    let der = match std::str::from_utf8(pem_or_der)
        .ok()
        .filter(|s| s.contains("-----BEGIN"))
    {
        Some(s) => {
            let body: String = s
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .flat_map(|l| l.trim().chars())
                .collect();
            b64("public key PEM", &body)?
        }
        None => pem_or_der.to_vec(),
    };
    let enc = |r: Result<rsa::pkcs8::Document, rsa::pkcs8::spki::Error>| {
        r.map(|d| d.as_bytes().to_vec()).map_err(|e| e.to_string())
    };
    if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(&der) {
        return enc(k.to_public_key_der());
    }
    if let Ok(k) = p256::PublicKey::from_public_key_der(&der) {
        return enc(k.to_public_key_der());
    }
    if let Ok(k) = p384::PublicKey::from_public_key_der(&der) {
        return enc(k.to_public_key_der());
    }
    Err("not an RSA, P-256 or P-384 SubjectPublicKeyInfo".into())
}
