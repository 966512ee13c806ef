//! Key derivation, compatible with upstream Constellation.
//!
//! `HKDF-SHA256(IKM = master secret, salt = master salt, info = "key-" + id)` for data keys,
//! the measurement secret (id `measurementSecret`) and state-disk keys (id = lower-case LUKS
//! UUID); the cluster ID is `HKDF-SHA256(IKM = measurement secret, salt = measurement salt,
//! info = "key-clusterID")`. Output lengths follow upstream: 32 bytes by default.
//!
//! Keys this product uses internally and upstream does not know (the cluster CA) are derived
//! under [`INTERNAL_INFO_PREFIX`], which no `"key-" + id` info can equal, so a caller-chosen
//! data-key id can never reach them. The upstream-compatible internal ids (the measurement
//! secret, state-disk keys) are reserved: [`MasterSecret::data_key`] refuses them.

use std::fmt;

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Prefix of every HKDF info string (upstream `crypto.HKDFInfoPrefix`).
pub const INFO_PREFIX: &str = "key-";
/// Key id of the measurement secret.
pub const MEASUREMENT_SECRET_ID: &str = "measurementSecret";
/// Info context of the cluster ID derivation.
pub const CLUSTER_ID_CONTEXT: &str = "clusterID";
/// Prefix of the HKDF info of keys only this product derives, for itself (never `"key-"`).
pub const INTERNAL_INFO_PREFIX: &str = constellation_node_api::key_info::INTERNAL_PREFIX;
/// Internal key id of the cluster CA's private key (ours; upstream has no cluster CA).
pub const CLUSTER_CA_ID: &str = "clusterCA";
/// Default derived key length in bytes (upstream `DerivedKeyLengthDefault`).
pub const DEFAULT_KEY_LEN: usize = 32;
/// Smallest accepted master secret (upstream `MasterSecretLengthMin`).
pub const MIN_MASTER_SECRET_LEN: usize = 16;
/// Largest accepted master secret or salt; bounds memory on untrusted input.
pub const MAX_SECRET_LEN: usize = 512;
/// Largest data key a caller may request.
pub const MAX_DATA_KEY_LEN: usize = 64;
/// Smallest data key a caller may request.
pub const MIN_DATA_KEY_LEN: usize = 16;
/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 128;

/// Errors of key handling. Never contains key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The master secret has the wrong length.
    #[error(
        "master secret must be {MIN_MASTER_SECRET_LEN}..={MAX_SECRET_LEN} bytes, got {0} bytes"
    )]
    MasterSecretLength(usize),
    /// A salt has the wrong length.
    #[error("{name} must be 1..={MAX_SECRET_LEN} bytes, got {len} bytes")]
    SaltLength {
        /// Which salt.
        name: &'static str,
        /// Its length.
        len: usize,
    },
    /// A key id is not acceptable.
    #[error("key id {id:?} is invalid: use 1..={MAX_KEY_ID_LEN} characters of [A-Za-z0-9._-]")]
    InvalidId {
        /// The offending id (ids are not secret), truncated.
        id: String,
    },
    /// A data-key id names a key the cluster derives for itself (measurement secret, a
    /// state-disk key).
    #[error(
        "key id {id:?} is reserved for the cluster's own keys (the measurement secret and state-disk keys, whose ids are LUKS UUIDs); choose another id"
    )]
    ReservedId {
        /// The offending id (ids are not secret), truncated.
        id: String,
    },
    /// A requested key length is out of range.
    #[error("key length {0} is out of range {MIN_DATA_KEY_LEN}..={MAX_DATA_KEY_LEN}")]
    Length(usize),
}

/// A secret byte string (zeroized on drop, redacted in `Debug`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Copies bytes.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }

    /// The bytes. Do not log them or copy them into non-zeroizing memory.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// HKDF-SHA256 of `ikm` with `salt` and `info`, `len` bytes (upstream `crypto.DeriveKey`).
pub fn derive(ikm: &[u8], salt: &[u8], info: &[u8], len: usize) -> Result<Secret, KeyError> {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut out = Zeroizing::new(vec![0u8; len]);
    hk.expand(info, &mut out)
        .map_err(|_| KeyError::Length(len))?;
    Ok(Secret(out))
}

/// Checks a key id: 1..=128 characters of `[A-Za-z0-9._-]`, so ids cannot smuggle
/// separators or control characters into the HKDF info or into logs.
pub fn validate_id(id: &str) -> Result<(), KeyError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::InvalidId {
            id: id.chars().take(MAX_KEY_ID_LEN).collect(),
        })
    }
}

/// True when `id` is the id of a key the cluster derives for itself under the upstream
/// `"key-"` info: the measurement secret, the cluster-ID context, or a state-disk key (a LUKS
/// UUID, compared case-insensitively because disk ids are folded to lower case).
pub fn is_reserved_id(id: &str) -> bool {
    let lower = id.to_ascii_lowercase();
    lower == MEASUREMENT_SECRET_ID.to_ascii_lowercase()
        || lower == CLUSTER_ID_CONTEXT.to_ascii_lowercase()
        || is_luks_uuid(&lower)
}

/// True for the 8-4-4-4-12 hex-digit shape of a LUKS UUID (either case).
pub fn is_luks_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

/// The cluster's master secret and salt; derives every other key.
#[derive(Clone)]
pub struct MasterSecret {
    secret: Secret,
    salt: Secret,
}

impl fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterSecret(<redacted>)")
    }
}

impl MasterSecret {
    /// Validates lengths and wraps the secret and its salt.
    pub fn new(secret: &[u8], salt: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_MASTER_SECRET_LEN || secret.len() > MAX_SECRET_LEN {
            return Err(KeyError::MasterSecretLength(secret.len()));
        }
        check_salt("master salt", salt)?;
        Ok(Self {
            secret: Secret::from_slice(secret),
            salt: Secret::from_slice(salt),
        })
    }

    /// The secret bytes (for handing to control-plane joiners over aTLS only).
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// The salt.
    pub fn salt(&self) -> &Secret {
        &self.salt
    }

    /// A data key for a caller-chosen id: `HKDF(master, salt, "key-" + id)` with `len`
    /// bytes (upstream's data keys). `id` is validated and must not be reserved
    /// ([`is_reserved_id`]): those keys belong to the cluster, not to a caller.
    pub fn data_key(&self, id: &str, len: usize) -> Result<Secret, KeyError> {
        validate_id(id)?;
        if is_reserved_id(id) {
            return Err(KeyError::ReservedId {
                id: id.chars().take(MAX_KEY_ID_LEN).collect(),
            });
        }
        self.derive_with(INFO_PREFIX, id, len)
    }

    fn derive_with(&self, prefix: &str, id: &str, len: usize) -> Result<Secret, KeyError> {
        validate_id(id)?;
        if !(MIN_DATA_KEY_LEN..=MAX_DATA_KEY_LEN).contains(&len) {
            return Err(KeyError::Length(len));
        }
        let info = format!("{prefix}{id}");
        derive(
            self.secret.expose(),
            self.salt.expose(),
            info.as_bytes(),
            len,
        )
    }

    /// A key only this product derives, for itself:
    /// `HKDF(master, salt, "constellation-internal-" + id)`.
    pub fn internal_key(&self, id: &str, len: usize) -> Result<Secret, KeyError> {
        self.derive_with(INTERNAL_INFO_PREFIX, id, len)
    }

    /// The state-disk key for a LUKS UUID (upper case is folded, as upstream does).
    pub fn disk_key(&self, luks_uuid: &str) -> Result<Secret, KeyError> {
        self.derive_with(
            INFO_PREFIX,
            &luks_uuid.to_ascii_lowercase(),
            DEFAULT_KEY_LEN,
        )
    }

    /// The measurement secret (`key-measurementSecret`, 32 bytes).
    pub fn measurement_secret(&self) -> Result<Secret, KeyError> {
        self.derive_with(INFO_PREFIX, MEASUREMENT_SECRET_ID, DEFAULT_KEY_LEN)
    }
}

fn check_salt(name: &'static str, salt: &[u8]) -> Result<(), KeyError> {
    if salt.is_empty() || salt.len() > MAX_SECRET_LEN {
        return Err(KeyError::SaltLength {
            name,
            len: salt.len(),
        });
    }
    Ok(())
}

/// Cluster ID = `HKDF(measurement secret, measurement salt, "key-clusterID")`, 32 bytes.
pub fn cluster_id(
    measurement_secret: &[u8],
    measurement_salt: &[u8],
) -> Result<[u8; 32], KeyError> {
    check_salt("measurement salt", measurement_salt)?;
    let info = format!("{INFO_PREFIX}{CLUSTER_ID_CONTEXT}");
    let k = derive(
        measurement_secret,
        measurement_salt,
        info.as_bytes(),
        DEFAULT_KEY_LEN,
    )?;
    let mut id = [0u8; 32];
    id.copy_from_slice(k.expose());
    Ok(id)
}

/// Info of a member's peers key (see [`peers_key`]).
pub const PEERS_KEY_INFO: &str = "constellation-internal-peers";
/// Smallest accepted GetPeers nonce.
pub const MIN_NONCE_LEN: usize = 16;
/// Largest accepted GetPeers nonce.
pub const MAX_NONCE_LEN: usize = 64;

/// A member's peers key: `HKDF(IKM = its state-disk key, no salt, "constellation-internal-peers")`.
/// Only the member (which holds its disk key while it runs) and master-secret holders (which
/// derive the disk key from the recorded disk UUID) know it; other members do not, as
/// `GetDataKey` refuses disk-key ids.
pub fn peers_key(disk_key: &Secret) -> Result<Secret, KeyError> {
    derive(
        disk_key.expose(),
        &[],
        PEERS_KEY_INFO.as_bytes(),
        DEFAULT_KEY_LEN,
    )
}

/// The authenticator of a GetPeers answer: `HKDF(IKM = peers key, salt = nonce,
/// "constellation-peers-answer-v1" ‖ SHA-256(answer))`, 32 bytes, where `answer` is the
/// canonical encoding of what the member applies.
pub fn peers_authenticator(
    peers_key: &Secret,
    nonce: &[u8],
    answer: &[u8],
) -> Result<Secret, KeyError> {
    if !(MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce.len()) {
        return Err(KeyError::SaltLength {
            name: "GetPeers nonce",
            len: nonce.len(),
        });
    }
    let mut info = b"constellation-peers-answer-v1".to_vec();
    info.extend_from_slice(&<Sha256 as sha2::Digest>::digest(answer));
    derive(peers_key.expose(), nonce, &info, DEFAULT_KEY_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The owner (provider) derives the cluster CA from the shared info string; the control
    /// planes from prefix and id. Both must name the same key.
    #[test]
    fn the_cluster_ca_info_is_the_shared_contract() {
        assert_eq!(
            format!("{INTERNAL_INFO_PREFIX}{CLUSTER_CA_ID}"),
            constellation_node_api::key_info::CLUSTER_CA
        );
    }

    // RFC 5869 test case 1 pins the HKDF primitive itself.
    #[test]
    fn rfc5869_case1() {
        let ikm = [0x0bu8; 22];
        let salt = hex::decode("000102030405060708090a0b0c").unwrap();
        let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let okm = derive(&ikm, &salt, &info, 42).unwrap();
        assert_eq!(
            hex::encode(okm.expose()),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn info_strings_follow_upstream() {
        let m = MasterSecret::new(&[7u8; 32], &[9u8; 32]).unwrap();
        let direct = derive(&[7u8; 32], &[9u8; 32], b"key-measurementSecret", 32).unwrap();
        assert_eq!(m.measurement_secret().unwrap(), direct);
        let uuid = "ABCDEF01-2345-6789-abcd-ef0123456789";
        let disk = derive(
            &[7u8; 32],
            &[9u8; 32],
            b"key-abcdef01-2345-6789-abcd-ef0123456789",
            32,
        )
        .unwrap();
        assert_eq!(m.disk_key(uuid).unwrap(), disk);
        let cid = cluster_id(direct.expose(), &[3u8; 32]).unwrap();
        let want = derive(direct.expose(), &[3u8; 32], b"key-clusterID", 32).unwrap();
        assert_eq!(&cid[..], want.expose());
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            MasterSecret::new(&[1u8; 15], &[1]).unwrap_err(),
            KeyError::MasterSecretLength(15)
        );
        assert!(MasterSecret::new(&[1u8; 16], &[]).is_err());
        let m = MasterSecret::new(&[1u8; 16], &[1]).unwrap();
        for id in ["", "a/b", "key\n", "ä", &"x".repeat(129)] {
            assert!(m.data_key(id, 32).is_err(), "{id:?} accepted");
        }
        assert_eq!(m.data_key("ok", 8).unwrap_err(), KeyError::Length(8));
        assert_eq!(m.data_key("ok", 65).unwrap_err(), KeyError::Length(65));
    }

    #[test]
    fn data_keys_never_reach_the_cluster_keys() {
        let m = MasterSecret::new(&[7u8; 32], &[9u8; 32]).unwrap();
        let uuid = "abcdef01-2345-6789-abcd-ef0123456789";
        for id in [
            MEASUREMENT_SECRET_ID,
            "MEASUREMENTSECRET",
            CLUSTER_ID_CONTEXT,
            uuid,
            &uuid.to_ascii_uppercase(),
        ] {
            assert!(
                matches!(m.data_key(id, 32), Err(KeyError::ReservedId { .. })),
                "{id:?} served as a data key"
            );
        }
        // The CA key lives under its own info prefix: no data-key id derives it.
        let ca = m.internal_key(CLUSTER_CA_ID, 32).unwrap();
        let want = derive(
            &[7u8; 32],
            &[9u8; 32],
            b"constellation-internal-clusterCA",
            32,
        )
        .unwrap();
        assert_eq!(ca, want);
        assert!(!INTERNAL_INFO_PREFIX.starts_with(INFO_PREFIX));
        for id in [
            "clusterCA",
            "constellationClusterCA",
            "constellation-internal-clusterCA",
        ] {
            assert_ne!(m.data_key(id, 32).unwrap(), ca, "{id}");
        }
        assert!(m.data_key("app-volume", 32).is_ok());
    }

    #[test]
    fn debug_redacts() {
        let m = MasterSecret::new(&[0x41u8; 32], &[0x42u8; 32]).unwrap();
        let s = format!("{m:?} {:?}", m.secret());
        assert!(!s.contains("65") && !s.contains("AAAA"), "{s}");
    }
}
