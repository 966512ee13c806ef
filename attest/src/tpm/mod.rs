//! Pure-Rust TPM 2.0 structures needed to check a quote: `TPM2B_PUBLIC`, `TPMS_ATTEST`,
//! `TPMT_SIGNATURE`, signature verification and the PCR digest (the TCG event log is
//! [`crate::eventlog`]).
//!
//! Everything here parses untrusted bytes with checked reads only; nothing panics on input.

#[cfg(feature = "tpm")]
pub mod issuer;
mod structures;
mod validator;

pub use structures::{
    AlgId, AttestType, EccCurve, PcrSelection, TpmAttest, TpmKey, TpmPublic, TpmSignature,
    pcr_digest_sha256,
};
pub use validator::{AkTrust, HostTrustedAk, TpmValidator};

/// A TPM structure that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// Input ended inside a field.
    #[error("{structure}: truncated while reading {field}")]
    Truncated {
        /// Structure being parsed.
        structure: &'static str,
        /// Field being read.
        field: &'static str,
    },
    /// Bytes left after the structure.
    #[error("{structure}: {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// Structure being parsed.
        structure: &'static str,
        /// Number of extra bytes.
        extra: usize,
    },
    /// A field holds a value this implementation does not accept.
    #[error("{structure}: unsupported {field} value {value:#x}")]
    Unsupported {
        /// Structure being parsed.
        structure: &'static str,
        /// Field.
        field: &'static str,
        /// Value found.
        value: u32,
    },
    /// `TPMS_ATTEST` does not start with TPM_GENERATED_VALUE.
    #[error(
        "TPMS_ATTEST magic is {0:#010x}, not TPM_GENERATED_VALUE (0xff544347): not produced by a TPM"
    )]
    BadMagic(u32),
    /// Attestation structure of another type than a quote.
    #[error("TPMS_ATTEST type is {0:#06x}, not TPM_ST_ATTEST_QUOTE (0x8018)")]
    NotAQuote(u16),
}

/// Checked big-endian reader over a byte slice.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    structure: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], structure: &'static str) -> Self {
        Self { buf, structure }
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], TpmError> {
        if n > self.buf.len() {
            return Err(TpmError::Truncated {
                structure: self.structure,
                field,
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], TpmError> {
        let b = self.bytes(N, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, TpmError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, TpmError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, TpmError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, TpmError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// A TPM2B: u16 size followed by that many bytes.
    pub(crate) fn tpm2b(&mut self, field: &'static str) -> Result<&'a [u8], TpmError> {
        let n = self.u16(field)?;
        self.bytes(usize::from(n), field)
    }

    pub(crate) fn finish(self) -> Result<(), TpmError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(TpmError::TrailingBytes {
                structure: self.structure,
                extra: self.buf.len(),
            })
        }
    }
}
