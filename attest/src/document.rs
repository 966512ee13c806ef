//! The attestation document: our own versioned, typed format, encoded as CBOR.
//!
//! Why CBOR: the document travels inside an X.509 extension of the aTLS certificate, and rustls
//! caps a handshake message at 64 KiB; JSON would have to base64 every blob (quotes, event logs,
//! hardware reports), costing a third of that budget. CBOR keeps bytes as bytes, is
//! self-describing (any CBOR tool can print a document) and maps 1:1 onto the serde types here.
//! The format is specified in `docs/attestation-document.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest, Sha256};

use crate::variant::Variant;

/// Current document format version. Decoders reject every other version.
pub const DOCUMENT_VERSION: u32 = 1;

/// Largest encoded document accepted from the network (1 MiB).
pub const MAX_DOCUMENT_SIZE: usize = 1 << 20;

/// A signed statement of the platform state, bound to user data and a verifier's nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationDocument {
    /// Format version, [`DOCUMENT_VERSION`].
    pub version: u32,
    /// The variant whose validator must check this document.
    pub variant: Variant,
    /// Data the issuer binds into the evidence; in aTLS the SHA-256 of the certificate's
    /// SubjectPublicKeyInfo.
    #[serde(with = "serde_bytes")]
    pub user_data: Vec<u8>,
    /// The evidence proper.
    pub evidence: Evidence,
}

/// Variant-specific evidence. New kinds are added as new enum variants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Evidence {
    /// A TPM 2.0 quote (all vTPM variants; hardware evidence binding the AK goes into
    /// [`TpmEvidence::instance_info`]).
    Tpm(TpmEvidence),
    /// An Intel TDX quote (qemu-tdx): no vTPM, the quote's REPORT_DATA binds user data and nonce.
    Tdx(TdxEvidence),
}

impl Evidence {
    /// Short name of the evidence kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Evidence::Tpm(_) => "tpm",
            Evidence::Tdx(_) => "tdx",
        }
    }
}

/// A TPM 2.0 quote over the SHA-256 PCR bank with everything needed to check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmEvidence {
    /// The attestation key: a marshalled `TPM2B_PUBLIC`.
    #[serde(with = "serde_bytes")]
    pub ak_public: Vec<u8>,
    /// The signed quote: a marshalled `TPMS_ATTEST` (the body of the `TPM2B_ATTEST`).
    #[serde(with = "serde_bytes")]
    pub quote: Vec<u8>,
    /// The quote signature: a marshalled `TPMT_SIGNATURE`.
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
    /// The quoted SHA-256 PCR values by index; their digest must equal the quote's.
    pub pcrs: BTreeMap<u32, ByteBuf>,
    /// The TCG (crypto-agile) event log, when the platform exposes one.
    pub event_log: Option<ByteBuf>,
    /// Variant-defined bytes hashed into the quote's qualifying data (empty for qemu-vtpm;
    /// hardware reports that bind the AK on cloud variants).
    #[serde(with = "serde_bytes")]
    pub instance_info: Vec<u8>,
}

impl TpmEvidence {
    /// The PCR values as a plain map.
    pub fn pcr_map(&self) -> BTreeMap<u32, Vec<u8>> {
        self.pcrs
            .iter()
            .map(|(k, v)| (*k, v.clone().into_vec()))
            .collect()
    }
}

/// A TDX DCAP quote with the optional material to judge it.
///
/// REPORT_DATA = [`extra_data`]`(user_data, nonce)` ‖ 32 zero bytes. Collateral is optional and
/// untrusted (Intel signs it; the validator checks those signatures); without it no TCB status
/// can be computed and a policy that requires one rejects the quote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdxEvidence {
    /// The quote (v4 or v5) as read from configfs-tsm `outblob`.
    #[serde(with = "serde_bytes")]
    pub quote: Vec<u8>,
    /// The CC event log (ACPI CCEL area), when exposed; replayed against RTMR0..3.
    pub event_log: Option<ByteBuf>,
    /// PCS collateral fetched by the issuer (or a caching proxy), when available.
    pub collateral: Option<TdxCollateral>,
}

/// Intel PCS collateral carried in a document (each field the raw PCS response body).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TdxCollateral {
    /// TCB info JSON.
    pub tcb_info: Option<ByteBuf>,
    /// QE identity JSON.
    pub qe_identity: Option<ByteBuf>,
    /// TCB signing chain (PEM).
    pub tcb_signing_chain: Option<ByteBuf>,
    /// PCK CRL (DER or PEM).
    pub pck_crl: Option<ByteBuf>,
    /// Root CA CRL (DER or PEM).
    pub root_ca_crl: Option<ByteBuf>,
}

impl TdxCollateral {
    /// As the files the TDX verifier takes.
    pub fn to_files(&self) -> crate::tdx::CollateralFiles {
        let f = |b: &Option<ByteBuf>| b.as_ref().map(|b| b.to_vec());
        crate::tdx::CollateralFiles {
            tcb_info: f(&self.tcb_info),
            qe_identity: f(&self.qe_identity),
            tcb_signing_chain: f(&self.tcb_signing_chain),
            pck_crl: f(&self.pck_crl),
            root_ca_crl: f(&self.root_ca_crl),
        }
    }

    /// From the files the PCS client returns.
    pub fn from_files(c: &crate::tdx::CollateralFiles) -> Self {
        let f = |b: &Option<Vec<u8>>| b.clone().map(ByteBuf::from);
        TdxCollateral {
            tcb_info: f(&c.tcb_info),
            qe_identity: f(&c.qe_identity),
            tcb_signing_chain: f(&c.tcb_signing_chain),
            pck_crl: f(&c.pck_crl),
            root_ca_crl: f(&c.root_ca_crl),
        }
    }
}

/// The TDX REPORT_DATA for user data and nonce: SHA-256(user_data ‖ nonce) ‖ 32 zero bytes.
pub fn tdx_report_data(user_data: &[u8], nonce: &[u8]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&extra_data(user_data, nonce));
    out
}

/// A document that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentError {
    /// Larger than [`MAX_DOCUMENT_SIZE`].
    #[error("attestation document is {0} bytes, more than the 1 MiB limit; refusing to decode")]
    TooLarge(usize),
    /// Empty input.
    #[error("attestation document is empty")]
    Empty,
    /// Not valid CBOR for the document schema.
    #[error("attestation document is not valid CBOR of the expected schema: {0}")]
    Malformed(String),
    /// Valid document followed by more bytes.
    #[error("attestation document has {0} trailing bytes after its end")]
    TrailingBytes(usize),
    /// Version this build does not understand.
    #[error(
        "attestation document version {got} is not supported (this build reads version {DOCUMENT_VERSION})"
    )]
    UnsupportedVersion {
        /// The version found.
        got: u32,
    },
}

impl AttestationDocument {
    /// A version-1 document.
    pub fn new(variant: Variant, user_data: Vec<u8>, evidence: Evidence) -> Self {
        Self {
            version: DOCUMENT_VERSION,
            variant,
            user_data,
            evidence,
        }
    }

    /// Encodes as CBOR.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(self, &mut out)
            .expect("serialising plain structs into a Vec cannot fail");
        out
    }

    /// Decodes untrusted bytes: size-limited, never panics, rejects trailing bytes and unknown
    /// versions.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DocumentError> {
        if bytes.is_empty() {
            return Err(DocumentError::Empty);
        }
        if bytes.len() > MAX_DOCUMENT_SIZE {
            return Err(DocumentError::TooLarge(bytes.len()));
        }
        let mut rest = bytes;
        let doc: AttestationDocument = ciborium::from_reader(&mut rest)
            .map_err(|e| DocumentError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(DocumentError::TrailingBytes(rest.len()));
        }
        if doc.version != DOCUMENT_VERSION {
            return Err(DocumentError::UnsupportedVersion { got: doc.version });
        }
        Ok(doc)
    }
}

/// The binding of user data and nonce: SHA-256(user_data ‖ nonce).
pub fn extra_data(user_data: &[u8], nonce: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(user_data);
    h.update(nonce);
    h.finalize().into()
}

/// The TPM qualifying data of vTPM variants: SHA-256(instance_info ‖ extra_data), so that
/// cloud/TEE evidence in `instance_info` is bound into the quote too.
pub fn tpm_qualifying_data(instance_info: &[u8], extra_data: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(instance_info);
    h.update(extra_data);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AttestationDocument {
        AttestationDocument::new(
            Variant::QemuVtpm,
            vec![1; 32],
            Evidence::Tpm(TpmEvidence {
                ak_public: vec![2; 10],
                quote: vec![3; 10],
                signature: vec![4; 10],
                pcrs: BTreeMap::from([(0, ByteBuf::from(vec![0; 32]))]),
                event_log: None,
                instance_info: vec![],
            }),
        )
    }

    #[test]
    fn round_trip() {
        let d = sample();
        assert_eq!(AttestationDocument::from_bytes(&d.to_bytes()).unwrap(), d);
    }

    #[test]
    fn rejects_garbage_truncation_trailing_and_versions() {
        let bytes = sample().to_bytes();
        for n in 0..bytes.len() {
            assert!(
                AttestationDocument::from_bytes(&bytes[..n]).is_err(),
                "prefix {n}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            AttestationDocument::from_bytes(&long),
            Err(DocumentError::TrailingBytes(1))
        ));
        let mut d = sample();
        d.version = 2;
        assert!(matches!(
            AttestationDocument::from_bytes(&d.to_bytes()),
            Err(DocumentError::UnsupportedVersion { got: 2 })
        ));
        assert!(AttestationDocument::from_bytes(b"garbage").is_err());
        assert!(matches!(
            AttestationDocument::from_bytes(&vec![0u8; MAX_DOCUMENT_SIZE + 1]),
            Err(DocumentError::TooLarge(_))
        ));
    }
}
