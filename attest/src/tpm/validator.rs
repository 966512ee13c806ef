//! Validation of TPM quote evidence, shared by every vTPM variant.

use std::sync::Arc;

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};

use super::structures::{
    AlgId, EccCurve, TpmAttest, TpmKey, TpmPublic, TpmSignature, pcr_digest_sha256,
};
use crate::document::{
    AttestationDocument, Evidence, TpmEvidence, extra_data, tpm_qualifying_data,
};
use crate::eventlog::{EventLog, TPM_ALG_SHA256};
use crate::measurements::{Measurements, Mismatch};
use crate::validator::{PlatformClaims, ValidationError, Validator, VerifiedClaims};
use crate::variant::Variant;

const ALG_SHA256: u16 = 0x000B;

/// Decides whether the attestation key in a TPM document is trusted — the part that differs
/// between vTPM variants (hardware report binding the AK, cloud AK certificate, the host).
/// Called only after the quote signature and its binding to the nonce have been verified.
pub trait AkTrust: Send + Sync {
    /// Checks the AK (and `evidence.instance_info`) for `variant`; returns what it established.
    fn verify_ak(
        &self,
        variant: Variant,
        evidence: &TpmEvidence,
        ak: &TpmPublic,
        extra_data: &[u8; 32],
    ) -> Result<PlatformClaims, ValidationError>;
}

/// qemu-vtpm: the AK is trusted as given, because the host that runs swtpm is trusted for this
/// local variant. There is no hardware root of trust.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostTrustedAk;

impl AkTrust for HostTrustedAk {
    fn verify_ak(
        &self,
        _variant: Variant,
        _evidence: &TpmEvidence,
        _ak: &TpmPublic,
        _extra_data: &[u8; 32],
    ) -> Result<PlatformClaims, ValidationError> {
        Ok(PlatformClaims::HostTrustedAk)
    }
}

/// Validates TPM quote documents: structure, AK attributes, signature, nonce/user-data binding,
/// AK trust (per variant), PCR digest, measurements (collecting every mismatch) and, when
/// present, event-log replay.
#[derive(Clone)]
pub struct TpmValidator {
    variant: Variant,
    measurements: Measurements,
    ak_trust: Arc<dyn AkTrust>,
}

impl std::fmt::Debug for TpmValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmValidator")
            .field("variant", &self.variant)
            .field("measurements", &self.measurements)
            .finish_non_exhaustive()
    }
}

impl TpmValidator {
    /// A validator for `variant` expecting `measurements`, with the variant's AK trust.
    pub fn new(variant: Variant, measurements: Measurements, ak_trust: Arc<dyn AkTrust>) -> Self {
        Self {
            variant,
            measurements,
            ak_trust,
        }
    }

    /// The expected measurements.
    pub fn measurements(&self) -> &Measurements {
        &self.measurements
    }

    /// Checks the TPM evidence and returns the verified claims.
    pub fn validate_tpm(
        &self,
        user_data: &[u8],
        ev: &TpmEvidence,
        nonce: &[u8],
    ) -> Result<VerifiedClaims, ValidationError> {
        let ak = TpmPublic::parse_tpm2b(&ev.ak_public)?;
        if !ak.is_restricted_signing_key() {
            return Err(ValidationError::UnsupportedAk(format!(
                "object attributes {:#010x} are not those of a restricted signing key created in the TPM (sign, restricted, fixedTPM, sensitiveDataOrigin, not decrypt)",
                ak.object_attributes
            )));
        }
        let quote = TpmAttest::parse(&ev.quote)?;
        let sig = TpmSignature::parse(&ev.signature)?;
        verify_signature(&ak, &ev.quote, &sig)?;

        // The quote's qualifiedSigner is the AK's *qualified* name, which depends on the key's
        // hierarchy path that the document does not carry; the signature check above is what
        // ties the quote to this AK.
        let extra = extra_data(user_data, nonce);
        let qd = tpm_qualifying_data(&ev.instance_info, &extra);
        if quote.extra_data != qd {
            return Err(ValidationError::NonceOrUserDataMismatch {
                expected: hex::encode(qd),
                got: hex::encode(&quote.extra_data),
            });
        }

        let platform = self.ak_trust.verify_ak(self.variant, ev, &ak, &extra)?;

        // The quote must cover exactly the document's PCRs, all in the SHA-256 bank.
        let mut quoted: Vec<u32> = Vec::new();
        for sel in &quote.pcr_selection {
            if sel.pcrs.is_empty() {
                continue;
            }
            if sel.hash != AlgId::from_u16(ALG_SHA256) || !quoted.is_empty() {
                return Err(ValidationError::PcrSelectionMismatch {
                    quoted: quote
                        .pcr_selection
                        .iter()
                        .flat_map(|s| s.pcrs.iter().copied())
                        .collect(),
                    document: ev.pcrs.keys().copied().collect(),
                });
            }
            quoted.clone_from(&sel.pcrs);
        }
        let document: Vec<u32> = ev.pcrs.keys().copied().collect();
        if quoted != document {
            return Err(ValidationError::PcrSelectionMismatch { quoted, document });
        }
        if let Some((&index, v)) = ev.pcrs.iter().find(|(_, v)| v.len() != 32) {
            return Err(ValidationError::BadPcrValue {
                index,
                len: v.len(),
            });
        }
        let computed = pcr_digest_sha256(ev.pcrs.values().map(|v| v.as_slice()));
        if quote.pcr_digest != computed {
            return Err(ValidationError::PcrDigestMismatch {
                quoted: hex::encode(&quote.pcr_digest),
                computed: hex::encode(computed),
            });
        }

        let pcrs = ev.pcr_map();
        let cmp = self.measurements.compare(&pcrs);
        if !cmp.errors.is_empty() {
            return Err(ValidationError::MeasurementMismatch(cmp.errors));
        }

        let mut event_log_verified = false;
        if let Some(log) = &ev.event_log {
            // The quote covers the SHA-256 bank, so that bank must be in the log.
            let replayed = EventLog::parse(log)?.replay(TPM_ALG_SHA256)?;
            let mut bad = Vec::new();
            for (index, value) in replayed {
                if let Some(quoted) = pcrs.get(&index)
                    && *quoted != value
                {
                    bad.push(Mismatch {
                        index,
                        expected: quoted.clone(),
                        got: Some(value),
                    });
                }
            }
            if !bad.is_empty() {
                return Err(ValidationError::EventLogReplayMismatch(bad));
            }
            event_log_verified = true;
        }

        Ok(VerifiedClaims {
            variant: self.variant,
            user_data: user_data.to_vec(),
            measurements: pcrs,
            warnings: cmp.warnings,
            platform,
            event_log_verified,
        })
    }
}

impl Validator for TpmValidator {
    fn variant(&self) -> Variant {
        self.variant
    }

    fn validate(
        &self,
        doc: &AttestationDocument,
        nonce: &[u8],
    ) -> Result<VerifiedClaims, ValidationError> {
        if doc.variant != self.variant {
            return Err(ValidationError::VariantMismatch {
                expected: self.variant,
                got: doc.variant,
            });
        }
        match &doc.evidence {
            Evidence::Tpm(ev) => self.validate_tpm(&doc.user_data, ev, nonce),
            #[allow(unreachable_patterns)]
            other => Err(ValidationError::EvidenceKindMismatch {
                variant: self.variant,
                expected: "tpm",
                got: other.kind(),
            }),
        }
    }
}

/// Verifies a TPM signature over `msg` with the AK; the algorithm must fit the key type.
pub(crate) fn verify_signature(
    ak: &TpmPublic,
    msg: &[u8],
    sig: &TpmSignature,
) -> Result<(), ValidationError> {
    let mismatch = || ValidationError::AkKeyTypeMismatch {
        key: ak.key.type_name(),
        signature: sig.alg_name(),
    };
    let unsupported = |what: String| ValidationError::UnsupportedAk(what);
    match (&ak.key, sig) {
        (
            TpmKey::Rsa {
                modulus, exponent, ..
            },
            TpmSignature::RsaSsa { hash, sig: s },
        )
        | (
            TpmKey::Rsa {
                modulus, exponent, ..
            },
            TpmSignature::RsaPss { hash, sig: s },
        ) => {
            if modulus.len() < 256 {
                return Err(unsupported(format!(
                    "RSA key of {} bits is shorter than 2048",
                    modulus.len() * 8
                )));
            }
            let pss = matches!(sig, TpmSignature::RsaPss { .. });
            let alg: &'static signature::RsaParameters = match (pss, hash) {
                (false, AlgId::Sha256) => &signature::RSA_PKCS1_2048_8192_SHA256,
                (false, AlgId::Sha384) => &signature::RSA_PKCS1_2048_8192_SHA384,
                (false, AlgId::Sha512) => &signature::RSA_PKCS1_2048_8192_SHA512,
                (true, AlgId::Sha256) => &signature::RSA_PSS_2048_8192_SHA256,
                (true, AlgId::Sha384) => &signature::RSA_PSS_2048_8192_SHA384,
                (true, AlgId::Sha512) => &signature::RSA_PSS_2048_8192_SHA512,
                (_, h) => {
                    return Err(unsupported(format!(
                        "signature hash {} is not supported (SHA-256/384/512)",
                        h.name()
                    )));
                }
            };
            let e = exponent.to_be_bytes();
            let start = e.iter().position(|b| *b != 0).unwrap_or(3);
            let key = RsaPublicKeyComponents {
                n: modulus.as_slice(),
                e: e.get(start..).unwrap_or(&e),
            };
            key.verify(alg, msg, s)
                .map_err(|_| ValidationError::BadSignature)
        }
        (TpmKey::Ecc { curve, x, y, .. }, TpmSignature::EcDsa { hash, r, s }) => {
            let (alg, len): (&'static signature::EcdsaVerificationAlgorithm, usize) =
                match (curve, hash) {
                    (EccCurve::NistP256, AlgId::Sha256) => {
                        (&signature::ECDSA_P256_SHA256_FIXED, 32)
                    }
                    (EccCurve::NistP384, AlgId::Sha384) => {
                        (&signature::ECDSA_P384_SHA384_FIXED, 48)
                    }
                    (c, h) => {
                        return Err(unsupported(format!(
                            "ECDSA on curve {c:?} with {} is not supported",
                            h.name()
                        )));
                    }
                };
            let (Some(px), Some(py), Some(pr), Some(ps)) = (
                left_pad(x, len),
                left_pad(y, len),
                left_pad(r, len),
                left_pad(s, len),
            ) else {
                return Err(ValidationError::BadSignature);
            };
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&px);
            point.extend_from_slice(&py);
            let mut rs = pr;
            rs.extend_from_slice(&ps);
            UnparsedPublicKey::new(alg, &point)
                .verify(msg, &rs)
                .map_err(|_| ValidationError::BadSignature)
        }
        _ => Err(mismatch()),
    }
}

/// Big-endian integer left-padded to `len` bytes; `None` if longer (after leading zeros).
fn left_pad(v: &[u8], len: usize) -> Option<Vec<u8>> {
    let start = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    let trimmed = v.get(start..)?;
    if trimmed.len() > len {
        return None;
    }
    let mut out = vec![0u8; len - trimmed.len()];
    out.extend_from_slice(trimmed);
    Some(out)
}
