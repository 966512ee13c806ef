//! `TPM2B_PUBLIC`, `TPMS_ATTEST` (quote), `TPMT_SIGNATURE` (TPM 2.0 Library, Part 2).

use sha2::{Digest, Sha256, Sha384, Sha512};

use super::{Reader, TpmError};

/// TPM_ALG_ID values used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlgId {
    /// TPM_ALG_RSA
    Rsa,
    /// TPM_ALG_ECC
    Ecc,
    /// TPM_ALG_SHA1
    Sha1,
    /// TPM_ALG_SHA256
    Sha256,
    /// TPM_ALG_SHA384
    Sha384,
    /// TPM_ALG_SHA512
    Sha512,
    /// TPM_ALG_NULL
    Null,
    /// TPM_ALG_RSASSA
    RsaSsa,
    /// TPM_ALG_RSAPSS
    RsaPss,
    /// TPM_ALG_ECDSA
    EcDsa,
    /// Any other algorithm id.
    Other(u16),
}

impl AlgId {
    /// Maps the numeric TPM_ALG_ID.
    pub fn from_u16(v: u16) -> Self {
        match v {
            0x0001 => AlgId::Rsa,
            0x0023 => AlgId::Ecc,
            0x0004 => AlgId::Sha1,
            0x000B => AlgId::Sha256,
            0x000C => AlgId::Sha384,
            0x000D => AlgId::Sha512,
            0x0010 => AlgId::Null,
            0x0014 => AlgId::RsaSsa,
            0x0016 => AlgId::RsaPss,
            0x0018 => AlgId::EcDsa,
            o => AlgId::Other(o),
        }
    }

    /// Readable name for messages.
    pub fn name(self) -> &'static str {
        match self {
            AlgId::Rsa => "RSA",
            AlgId::Ecc => "ECC",
            AlgId::Sha1 => "SHA-1",
            AlgId::Sha256 => "SHA-256",
            AlgId::Sha384 => "SHA-384",
            AlgId::Sha512 => "SHA-512",
            AlgId::Null => "NULL",
            AlgId::RsaSsa => "RSASSA",
            AlgId::RsaPss => "RSA-PSS",
            AlgId::EcDsa => "ECDSA",
            AlgId::Other(_) => "unknown",
        }
    }
}

const ALG_NULL: u16 = 0x0010;
const ALG_ECDAA: u16 = 0x001A;
const ALG_RSAES: u16 = 0x0015;

/// TPM_ECC_CURVE values supported for AKs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EccCurve {
    /// NIST P-256
    NistP256,
    /// NIST P-384
    NistP384,
    /// Any other curve id.
    Other(u16),
}

/// The public key material of a TPM object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TpmKey {
    /// RSA key.
    Rsa {
        /// Modulus, big-endian.
        modulus: Vec<u8>,
        /// Public exponent (TPM's 0 already mapped to 65537).
        exponent: u32,
        /// Signing scheme of the key (NULL = chosen at signing time).
        scheme: AlgId,
        /// Hash of the scheme (NULL when the scheme is NULL).
        scheme_hash: AlgId,
    },
    /// ECC key.
    Ecc {
        /// Curve.
        curve: EccCurve,
        /// X coordinate, big-endian.
        x: Vec<u8>,
        /// Y coordinate, big-endian.
        y: Vec<u8>,
        /// Signing scheme of the key.
        scheme: AlgId,
        /// Hash of the scheme.
        scheme_hash: AlgId,
    },
}

impl TpmKey {
    /// "RSA" or "ECC".
    pub fn type_name(&self) -> &'static str {
        match self {
            TpmKey::Rsa { .. } => "RSA",
            TpmKey::Ecc { .. } => "ECC",
        }
    }
}

/// A parsed `TPM2B_PUBLIC` (RSA or ECC only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmPublic {
    /// Name algorithm.
    pub name_alg: AlgId,
    /// Raw `TPMA_OBJECT` bits.
    pub object_attributes: u32,
    /// The key.
    pub key: TpmKey,
    /// The marshalled `TPMT_PUBLIC` (input of the object's name).
    pub tpmt_bytes: Vec<u8>,
    name_alg_raw: u16,
}

/// TPMA_OBJECT bits.
impl TpmPublic {
    /// fixedTPM
    pub const FIXED_TPM: u32 = 1 << 1;
    /// fixedParent
    pub const FIXED_PARENT: u32 = 1 << 4;
    /// sensitiveDataOrigin
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    /// restricted
    pub const RESTRICTED: u32 = 1 << 16;
    /// decrypt
    pub const DECRYPT: u32 = 1 << 17;
    /// sign / encrypt
    pub const SIGN: u32 = 1 << 18;

    /// Parses a marshalled `TPM2B_PUBLIC`.
    pub fn parse_tpm2b(bytes: &[u8]) -> Result<Self, TpmError> {
        let mut r = Reader::new(bytes, "TPM2B_PUBLIC");
        let inner = r.tpm2b("size")?;
        r.finish()?;
        Self::parse_tpmt(inner)
    }

    /// Parses a marshalled `TPMT_PUBLIC`.
    pub fn parse_tpmt(bytes: &[u8]) -> Result<Self, TpmError> {
        const S: &str = "TPMT_PUBLIC";
        let mut r = Reader::new(bytes, S);
        let ty = r.u16("type")?;
        let name_alg_raw = r.u16("nameAlg")?;
        let object_attributes = r.u32("objectAttributes")?;
        let _auth_policy = r.tpm2b("authPolicy")?;
        // symmetric: TPMT_SYM_DEF_OBJECT
        let sym = r.u16("symmetric.algorithm")?;
        if sym != ALG_NULL {
            r.u16("symmetric.keyBits")?;
            r.u16("symmetric.mode")?;
        }
        let key = match AlgId::from_u16(ty) {
            AlgId::Rsa => {
                let scheme_raw = r.u16("scheme")?;
                let scheme_hash = if scheme_raw == ALG_NULL || scheme_raw == ALG_RSAES {
                    AlgId::Null
                } else {
                    AlgId::from_u16(r.u16("scheme.hashAlg")?)
                };
                let _key_bits = r.u16("keyBits")?;
                let exponent = match r.u32("exponent")? {
                    0 => 65537,
                    e => e,
                };
                let modulus = r.tpm2b("unique.rsa")?.to_vec();
                TpmKey::Rsa {
                    modulus,
                    exponent,
                    scheme: AlgId::from_u16(scheme_raw),
                    scheme_hash,
                }
            }
            AlgId::Ecc => {
                let scheme_raw = r.u16("scheme")?;
                let scheme_hash = if scheme_raw == ALG_NULL {
                    AlgId::Null
                } else {
                    let h = AlgId::from_u16(r.u16("scheme.hashAlg")?);
                    if scheme_raw == ALG_ECDAA {
                        r.u16("scheme.count")?;
                    }
                    h
                };
                let curve = match r.u16("curveID")? {
                    0x0003 => EccCurve::NistP256,
                    0x0004 => EccCurve::NistP384,
                    o => EccCurve::Other(o),
                };
                if r.u16("kdf.scheme")? != ALG_NULL {
                    r.u16("kdf.hashAlg")?;
                }
                let x = r.tpm2b("unique.ecc.x")?.to_vec();
                let y = r.tpm2b("unique.ecc.y")?.to_vec();
                TpmKey::Ecc {
                    curve,
                    x,
                    y,
                    scheme: AlgId::from_u16(scheme_raw),
                    scheme_hash,
                }
            }
            _ => {
                return Err(TpmError::Unsupported {
                    structure: S,
                    field: "type (only RSA and ECC keys can attest)",
                    value: u32::from(ty),
                });
            }
        };
        r.finish()?;
        Ok(Self {
            name_alg: AlgId::from_u16(name_alg_raw),
            object_attributes,
            key,
            tpmt_bytes: bytes.to_vec(),
            name_alg_raw,
        })
    }

    /// The TPM name: nameAlg ‖ H_nameAlg(TPMT_PUBLIC). `None` for unsupported name algorithms.
    pub fn name(&self) -> Option<Vec<u8>> {
        let digest: Vec<u8> = match self.name_alg {
            AlgId::Sha256 => Sha256::digest(&self.tpmt_bytes).to_vec(),
            AlgId::Sha384 => Sha384::digest(&self.tpmt_bytes).to_vec(),
            AlgId::Sha512 => Sha512::digest(&self.tpmt_bytes).to_vec(),
            _ => return None,
        };
        let mut out = self.name_alg_raw.to_be_bytes().to_vec();
        out.extend_from_slice(&digest);
        Some(out)
    }

    /// True for a restricted signing key that never leaves the TPM (what an AK must be).
    pub fn is_restricted_signing_key(&self) -> bool {
        let need = Self::SIGN | Self::RESTRICTED | Self::FIXED_TPM | Self::SENSITIVE_DATA_ORIGIN;
        self.object_attributes & need == need && self.object_attributes & Self::DECRYPT == 0
    }
}

/// TPMI_ST_ATTEST values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttestType {
    /// TPM_ST_ATTEST_QUOTE
    Quote,
}

/// One `TPMS_PCR_SELECTION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    /// Bank hash algorithm.
    pub hash: AlgId,
    /// Selected PCR indices, ascending.
    pub pcrs: Vec<u32>,
}

/// A parsed `TPMS_ATTEST` of type quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmAttest {
    /// Always [`AttestType::Quote`].
    pub attest_type: AttestType,
    /// Name of the signing key.
    pub qualified_signer: Vec<u8>,
    /// The qualifying data (`extraData`).
    pub extra_data: Vec<u8>,
    /// TPM clock (ms).
    pub clock: u64,
    /// Reset count.
    pub reset_count: u32,
    /// Restart count.
    pub restart_count: u32,
    /// Clock safe flag.
    pub safe: bool,
    /// Firmware version.
    pub firmware_version: u64,
    /// The quoted PCR selection.
    pub pcr_selection: Vec<PcrSelection>,
    /// Digest of the selected PCR values.
    pub pcr_digest: Vec<u8>,
}

const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
/// More banks than any TPM implements; bounds allocation on garbage.
const MAX_PCR_SELECTIONS: u32 = 16;

impl TpmAttest {
    /// Parses a marshalled `TPMS_ATTEST` that must be a quote.
    pub fn parse(bytes: &[u8]) -> Result<Self, TpmError> {
        const S: &str = "TPMS_ATTEST";
        let mut r = Reader::new(bytes, S);
        let magic = r.u32("magic")?;
        if magic != TPM_GENERATED_VALUE {
            return Err(TpmError::BadMagic(magic));
        }
        let ty = r.u16("type")?;
        if ty != TPM_ST_ATTEST_QUOTE {
            return Err(TpmError::NotAQuote(ty));
        }
        let qualified_signer = r.tpm2b("qualifiedSigner")?.to_vec();
        let extra_data = r.tpm2b("extraData")?.to_vec();
        let clock = r.u64("clockInfo.clock")?;
        let reset_count = r.u32("clockInfo.resetCount")?;
        let restart_count = r.u32("clockInfo.restartCount")?;
        let safe = r.u8("clockInfo.safe")? != 0;
        let firmware_version = r.u64("firmwareVersion")?;
        let count = r.u32("pcrSelect.count")?;
        if count > MAX_PCR_SELECTIONS {
            return Err(TpmError::Unsupported {
                structure: S,
                field: "pcrSelect.count",
                value: count,
            });
        }
        let mut pcr_selection = Vec::new();
        for _ in 0..count {
            let hash = AlgId::from_u16(r.u16("pcrSelections.hash")?);
            let size = r.u8("pcrSelections.sizeofSelect")?;
            let bits = r.bytes(usize::from(size), "pcrSelections.pcrSelect")?;
            let mut pcrs = Vec::new();
            for (byte_idx, b) in (0u32..).zip(bits) {
                for bit in 0..8u32 {
                    if b & (1 << bit) != 0 {
                        pcrs.push(byte_idx * 8 + bit);
                    }
                }
            }
            pcr_selection.push(PcrSelection { hash, pcrs });
        }
        let pcr_digest = r.tpm2b("pcrDigest")?.to_vec();
        r.finish()?;
        Ok(Self {
            attest_type: AttestType::Quote,
            qualified_signer,
            extra_data,
            clock,
            reset_count,
            restart_count,
            safe,
            firmware_version,
            pcr_selection,
            pcr_digest,
        })
    }
}

/// A parsed `TPMT_SIGNATURE`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TpmSignature {
    /// RSASSA-PKCS1-v1_5.
    RsaSsa {
        /// Hash algorithm.
        hash: AlgId,
        /// Signature bytes.
        sig: Vec<u8>,
    },
    /// RSASSA-PSS.
    RsaPss {
        /// Hash algorithm.
        hash: AlgId,
        /// Signature bytes.
        sig: Vec<u8>,
    },
    /// ECDSA.
    EcDsa {
        /// Hash algorithm.
        hash: AlgId,
        /// r, big-endian.
        r: Vec<u8>,
        /// s, big-endian.
        s: Vec<u8>,
    },
}

impl TpmSignature {
    /// Parses a marshalled `TPMT_SIGNATURE` (RSASSA, RSAPSS or ECDSA).
    pub fn parse(bytes: &[u8]) -> Result<Self, TpmError> {
        const S: &str = "TPMT_SIGNATURE";
        let mut rd = Reader::new(bytes, S);
        let alg = rd.u16("sigAlg")?;
        let sig = match AlgId::from_u16(alg) {
            AlgId::RsaSsa | AlgId::RsaPss => {
                let hash = AlgId::from_u16(rd.u16("hash")?);
                let sig = rd.tpm2b("sig")?.to_vec();
                if alg == 0x0014 {
                    TpmSignature::RsaSsa { hash, sig }
                } else {
                    TpmSignature::RsaPss { hash, sig }
                }
            }
            AlgId::EcDsa => {
                let hash = AlgId::from_u16(rd.u16("hash")?);
                let r = rd.tpm2b("signatureR")?.to_vec();
                let s = rd.tpm2b("signatureS")?.to_vec();
                TpmSignature::EcDsa { hash, r, s }
            }
            _ => {
                return Err(TpmError::Unsupported {
                    structure: S,
                    field: "sigAlg",
                    value: u32::from(alg),
                });
            }
        };
        rd.finish()?;
        Ok(sig)
    }

    /// The algorithm name, e.g. "RSASSA".
    pub fn alg_name(&self) -> &'static str {
        match self {
            TpmSignature::RsaSsa { .. } => "RSASSA",
            TpmSignature::RsaPss { .. } => "RSA-PSS",
            TpmSignature::EcDsa { .. } => "ECDSA",
        }
    }
}

/// Digest a TPM computes over a SHA-256 PCR selection: SHA-256 of the values concatenated in
/// ascending index order.
pub fn pcr_digest_sha256<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    let mut h = Sha256::new();
    for v in values {
        h.update(v);
    }
    h.finalize().into()
}
