//! Key derivation, compatible with upstream Constellation.
//!
//! `HKDF-SHA256(IKM = master secret, salt = master salt, info = "key-" + id)` for data keys,
//! the measurement secret (id `measurementSecret`) and state-disk keys (id = lower-case LUKS
//! UUID); the cluster ID is `HKDF-SHA256(IKM = measurement secret, salt = measurement salt,
//! info = "key-clusterID")`. Output lengths follow upstream: 32 bytes by default.

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
/// Key id of the cluster CA's private key (ours; upstream has no cluster CA).
pub const CLUSTER_CA_ID: &str = "constellationClusterCA";
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

    /// `HKDF(master, salt, "key-" + id)` with `len` bytes; `id` is validated.
    pub fn data_key(&self, id: &str, len: usize) -> Result<Secret, KeyError> {
        validate_id(id)?;
        if !(MIN_DATA_KEY_LEN..=MAX_DATA_KEY_LEN).contains(&len) {
            return Err(KeyError::Length(len));
        }
        let info = format!("{INFO_PREFIX}{id}");
        derive(
            self.secret.expose(),
            self.salt.expose(),
            info.as_bytes(),
            len,
        )
    }

    /// The state-disk key for a LUKS UUID (upper case is folded, as upstream does).
    pub fn disk_key(&self, luks_uuid: &str) -> Result<Secret, KeyError> {
        self.data_key(&luks_uuid.to_ascii_lowercase(), DEFAULT_KEY_LEN)
    }

    /// The measurement secret (`key-measurementSecret`, 32 bytes).
    pub fn measurement_secret(&self) -> Result<Secret, KeyError> {
        self.data_key(MEASUREMENT_SECRET_ID, DEFAULT_KEY_LEN)
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn debug_redacts() {
        let m = MasterSecret::new(&[0x41u8; 32], &[0x42u8; 32]).unwrap();
        let s = format!("{m:?} {:?}", m.secret());
        assert!(!s.contains("65") && !s.contains("AAAA"), "{s}");
    }
}
