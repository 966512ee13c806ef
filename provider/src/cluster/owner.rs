//! The owner credential from the master secret, so that whoever holds the master secret can
//! manage the cluster without the credential Init returned (after `terraform import`).
//!
//! The cluster CA is derived exactly as every control plane derives it: the P-256 scalar
//! `HKDF-SHA256(master, salt, key_info::CLUSTER_CA)`, its certificate built by the node API's
//! `cluster_ca` (the management servers trust any client certificate that CA signed). The owner's key is
//! `HKDF-SHA256(master, salt, key_info::CLUSTER_OWNER)`, its own info string, so the same
//! secret always gives the same credential. Both infos are internal (outside the data-key
//! namespace), so no node can obtain these keys through `GetDataKey`.

use hkdf::Hkdf;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::node_client::OwnerCredential;

use constellation_node_api::cluster_ca;
use constellation_node_api::key_info::{CLUSTER_CA as CA_INFO, CLUSTER_OWNER as OWNER_INFO};
/// Common name of the owner certificate, as Init issues it.
const OWNER_COMMON_NAME: &str = "constellation-cluster-owner";

/// The P-256 key pair of `HKDF(master, salt, info)`.
fn derived_key(master: &[u8], salt: &[u8], info: &str) -> Result<KeyPair, String> {
    let mut scalar = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(salt), master)
        .expand(info.as_bytes(), scalar.as_mut())
        .map_err(|e| format!("HKDF: {e}"))?;
    cluster_ca::key_pair(scalar.as_ref()).map_err(|e| format!("{e} (info {info:?})"))
}

/// The cluster CA (issuer and PEM certificate), built as every control plane builds it.
fn derived_ca(master: &[u8], salt: &[u8]) -> Result<(Issuer<'static, KeyPair>, String), String> {
    let mut scalar = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(salt), master)
        .expand(CA_INFO.as_bytes(), scalar.as_mut())
        .map_err(|e| format!("HKDF: {e}"))?;
    cluster_ca::build(scalar.as_ref()).map_err(|e| e.to_string())
}

/// The owner credential of the cluster whose master secret and salt these are.
pub(super) fn derive(master: &[u8], salt: &[u8]) -> Result<OwnerCredential, String> {
    let (issuer, ca_pem) = derived_ca(master, salt)?;
    let key = derived_key(master, salt, OWNER_INFO)?;
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, OWNER_COMMON_NAME);
    p.distinguished_name = dn;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    let cert = p.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
    Ok(OwnerCredential {
        ca_pem,
        cert_pem: cert.pem(),
        key_pem: Zeroizing::new(key.serialize_pem()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::pem::parse_x509_pem;

    #[test]
    fn the_same_secret_gives_the_same_ca_and_owner_key_and_the_ca_signs_the_owner() {
        let (master, salt) = ([7u8; 32], [9u8; 32]);
        let a = derive(&master, &salt).unwrap();
        let b = derive(&master, &salt).unwrap();
        assert_eq!(*a.key_pem, *b.key_pem);
        let (_, ca_pem) = parse_x509_pem(a.ca_pem.as_bytes()).unwrap();
        let ca = ca_pem.parse_x509().unwrap();
        let (_, ca_pem_b) = parse_x509_pem(b.ca_pem.as_bytes()).unwrap();
        let ca_b = ca_pem_b.parse_x509().unwrap();
        // Same subject and key on every derivation: a verifier's trust anchor matches.
        assert_eq!(ca.subject(), ca_b.subject());
        assert_eq!(ca.public_key().raw, ca_b.public_key().raw);
        let (_, leaf_pem) = parse_x509_pem(a.cert_pem.as_bytes()).unwrap();
        let leaf = leaf_pem.parse_x509().unwrap();
        assert_eq!(leaf.issuer(), ca.subject());
        use p256::ecdsa::signature::Verifier as _;
        let ca_key =
            p256::ecdsa::VerifyingKey::from_sec1_bytes(&ca.public_key().subject_public_key.data)
                .unwrap();
        let sig = p256::ecdsa::Signature::from_der(&leaf.signature_value.data).unwrap();
        ca_key
            .verify(leaf.tbs_certificate.as_ref(), &sig)
            .expect("the derived CA signed the owner certificate");
        assert!(
            leaf.subject()
                .to_string()
                .contains("constellation-cluster-owner")
        );
        // Another secret, another CA.
        let c = derive(&[8u8; 32], &salt).unwrap();
        let (_, ca_c) = parse_x509_pem(c.ca_pem.as_bytes()).unwrap();
        assert_ne!(
            ca_c.parse_x509().unwrap().public_key().raw,
            ca.public_key().raw
        );
    }

    /// The CA key is the one the nodes derive: HKDF-SHA256 with info
    /// "constellation-internal-clusterCA" (RFC 5869 test case 1 checks the primitive).
    #[test]
    fn the_ca_key_is_hkdf_of_the_ca_info() {
        let (master, salt) = ([1u8; 32], [2u8; 32]);
        let mut scalar = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&salt), &master)
            .expand(b"constellation-internal-clusterCA", &mut scalar)
            .unwrap();
        let sk = p256::SecretKey::from_slice(&scalar).unwrap();
        let want = sk.public_key().to_sec1_bytes();
        let cred = derive(&master, &salt).unwrap();
        let (_, ca_pem) = parse_x509_pem(cred.ca_pem.as_bytes()).unwrap();
        let ca = ca_pem.parse_x509().unwrap();
        assert_eq!(ca.public_key().subject_public_key.data.as_ref(), &want[..]);
    }
}
