//! Owned X.509 certificates and CRLs with just the fields the hardware verifiers need.
//!
//! Parsing uses `x509-parser` because it accepts what AMD actually issues (VCEK/VLEK leaves have
//! serial number 0, which strict RFC 5280 parsers reject). Signatures are checked with RustCrypto
//! (RSASSA-PSS/SHA-384 for AMD, ECDSA P-256/SHA-256 for Intel).

use sha2::{Digest, Sha256, Sha384};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

/// OID of RSASSA-PSS (used by every AMD CA signature).
pub const OID_RSASSA_PSS: &str = "1.2.840.113549.1.1.10";
/// OID of sha256WithRSAEncryption (Google's vTPM EK/AK CAs).
pub const OID_RSA_SHA256: &str = "1.2.840.113549.1.1.11";
/// OID of ECDSA with SHA-256 (used by every Intel SGX/TDX certificate and CRL).
pub const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
/// OID of ECDSA with SHA-384.
pub const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";

/// Why a certificate or CRL could not be parsed or verified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The bytes are not a DER X.509 certificate.
    #[error("not a DER X.509 certificate: {0}")]
    Parse(String),
    /// The bytes are not a DER X.509 CRL.
    #[error("not a DER X.509 CRL: {0}")]
    CrlParse(String),
    /// The PEM input holds no certificate.
    #[error("no PEM certificate found in the input")]
    NoPem,
    /// The certificate's signature algorithm is not the one this trust chain uses.
    #[error("'{subject}' is signed with algorithm {found}, expected {expected}")]
    UnexpectedAlgorithm {
        /// Subject CN of the certificate (or CRL issuer).
        subject: String,
        /// Algorithm OID found.
        found: String,
        /// Algorithm OID expected.
        expected: &'static str,
    },
    /// The issuer's public key is not of the type the algorithm needs.
    #[error("issuer key of '{subject}' is unusable: {reason}")]
    IssuerKey {
        /// Subject CN of the certificate being verified.
        subject: String,
        /// What was wrong.
        reason: String,
    },
    /// The signature does not verify with the issuer's key.
    #[error("signature on '{subject}' does not verify with the key of '{issuer}'")]
    BadSignature {
        /// Subject CN of the certificate (or CRL issuer).
        subject: String,
        /// Subject CN of the issuer whose key was used.
        issuer: String,
    },
    /// A certificate that issued another one is not a CA (no basicConstraints cA=TRUE).
    #[error(
        "certificate '{issuer}' issued '{subject}' but is not a CA (basicConstraints cA=TRUE missing)"
    )]
    IssuerNotCa {
        /// Subject of the offending issuer certificate.
        issuer: String,
        /// Subject of the certificate it signed.
        subject: String,
    },
    /// A CA certificate's keyUsage does not allow signing certificates.
    #[error("certificate '{issuer}' issued '{subject}' but its keyUsage lacks keyCertSign")]
    IssuerNoKeyCertSign {
        /// Subject of the offending issuer certificate.
        issuer: String,
        /// Subject of the certificate it signed.
        subject: String,
    },
    /// More intermediate CAs follow a CA than its pathLenConstraint allows.
    #[error(
        "certificate '{issuer}' allows {limit} intermediate CA(s) below it (pathLenConstraint), the chain has {found}"
    )]
    PathLenExceeded {
        /// Subject of the CA whose constraint is violated.
        issuer: String,
        /// Its pathLenConstraint.
        limit: u32,
        /// Intermediate CAs between it and the leaf.
        found: usize,
    },
    /// The leaf certificate is a CA, not an end-entity certificate.
    #[error(
        "certificate '{subject}' is a CA (basicConstraints cA=TRUE), expected an end-entity certificate"
    )]
    LeafIsCa {
        /// Subject of the leaf.
        subject: String,
    },
    /// The leaf does not carry the extended key usage the chain requires.
    #[error("certificate '{subject}' lacks the extended key usage {expected}")]
    MissingEku {
        /// Subject of the leaf.
        subject: String,
        /// The accepted key purpose OIDs.
        expected: String,
    },
    /// The leaf's keyUsage does not allow digital signatures.
    #[error("certificate '{subject}' has a keyUsage without digitalSignature")]
    NoDigitalSignature {
        /// Subject of the leaf.
        subject: String,
    },
    /// basicConstraints, keyUsage or extendedKeyUsage is malformed or duplicated.
    #[error("certificate '{subject}' has unreadable constraint extensions: {reason}")]
    BadConstraints {
        /// Subject of the certificate.
        subject: String,
        /// What was wrong.
        reason: String,
    },
}

/// The RFC 5280 constraint extensions of a certificate (basicConstraints, keyUsage,
/// extendedKeyUsage), read once at parse time.
#[derive(Clone, Debug, Default)]
struct Constraints {
    /// basicConstraints cA.
    ca: bool,
    /// basicConstraints pathLenConstraint.
    path_len: Option<u32>,
    /// keyUsage: (keyCertSign, digitalSignature), None when the extension is absent.
    key_usage: Option<(bool, bool)>,
    /// extendedKeyUsage OIDs (dotted), None when the extension is absent.
    eku: Option<Vec<String>>,
}

fn constraints(c: &X509Certificate<'_>) -> Result<Constraints, String> {
    let bc = c
        .basic_constraints()
        .map_err(|e| format!("basicConstraints: {e}"))?;
    let ku = c.key_usage().map_err(|e| format!("keyUsage: {e}"))?;
    let eku = c
        .extended_key_usage()
        .map_err(|e| format!("extendedKeyUsage: {e}"))?;
    Ok(Constraints {
        ca: bc.as_ref().is_some_and(|b| b.value.ca),
        path_len: bc.and_then(|b| b.value.path_len_constraint),
        key_usage: ku.map(|k| (k.value.key_cert_sign(), k.value.digital_signature())),
        eku: eku.map(|e| {
            let v = e.value;
            let named = [
                (v.any, "2.5.29.37.0"),
                (v.server_auth, "1.3.6.1.5.5.7.3.1"),
                (v.client_auth, "1.3.6.1.5.5.7.3.2"),
                (v.code_signing, "1.3.6.1.5.5.7.3.3"),
                (v.email_protection, "1.3.6.1.5.5.7.3.4"),
                (v.time_stamping, "1.3.6.1.5.5.7.3.8"),
                (v.ocsp_signing, "1.3.6.1.5.5.7.3.9"),
            ];
            named
                .iter()
                .filter(|(set, _)| *set)
                .map(|(_, o)| (*o).to_string())
                .chain(v.other.iter().map(|o| o.to_id_string()))
                .collect()
        }),
    })
}

/// A parsed certificate: DER plus the fields the verifiers read.
#[derive(Clone)]
pub struct Cert {
    der: Vec<u8>,
    tbs: std::ops::Range<usize>,
    subject_cn: String,
    issuer_cn: String,
    serial: Vec<u8>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    spki_der: Vec<u8>,
    public_key: Vec<u8>,
    sig_alg: String,
    signature: Vec<u8>,
    extensions: Vec<(String, Vec<u8>)>,
    subject_dn: String,
    /// Err: a constraint extension is malformed or duplicated (refused wherever it matters).
    constraints: Result<Constraints, String>,
}

impl std::fmt::Debug for Cert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cert")
            .field("subject", &self.subject_cn)
            .field("issuer", &self.issuer_cn)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn cn(name: &x509_parser::x509::X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn range_of(outer: &[u8], inner: &[u8]) -> Option<std::ops::Range<usize>> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    let end = start.checked_add(inner.len())?;
    (end <= outer.len()).then_some(start..end)
}

impl Cert {
    /// Parses one DER certificate (trailing bytes are rejected).
    pub fn from_der(der: &[u8]) -> Result<Self, CertError> {
        let (rest, c) =
            X509Certificate::from_der(der).map_err(|e| CertError::Parse(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CertError::Parse(format!("{} trailing bytes", rest.len())));
        }
        let tbs = range_of(der, c.tbs_certificate.as_ref())
            .ok_or_else(|| CertError::Parse("TBS certificate not found".into()))?;
        Ok(Cert {
            tbs,
            subject_cn: cn(c.subject()),
            issuer_cn: cn(c.issuer()),
            serial: c.raw_serial().to_vec(),
            not_before: c.validity().not_before.to_datetime(),
            not_after: c.validity().not_after.to_datetime(),
            spki_der: c.public_key().raw.to_vec(),
            public_key: c.public_key().subject_public_key.data.to_vec(),
            sig_alg: c.signature_algorithm.algorithm.to_id_string(),
            signature: c.signature_value.data.to_vec(),
            extensions: c
                .iter_extensions()
                .map(|e| (e.oid.to_id_string(), e.value.to_vec()))
                .collect(),
            subject_dn: c.subject().to_string(),
            constraints: constraints(&c),
            der: der.to_vec(),
        })
    }

    /// Parses every certificate of a PEM bundle, in order.
    pub fn from_pem_bundle(pem: &[u8]) -> Result<Vec<Self>, CertError> {
        let mut out = Vec::new();
        for p in x509_parser::pem::Pem::iter_from_buffer(pem) {
            let p = p.map_err(|e| CertError::Parse(format!("PEM: {e}")))?;
            if p.label != "CERTIFICATE" {
                continue;
            }
            out.push(Self::from_der(&p.contents)?);
        }
        if out.is_empty() {
            return Err(CertError::NoPem);
        }
        Ok(out)
    }

    /// Parses DER, or the first certificate of PEM input.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, CertError> {
        if bytes.first() == Some(&0x30) {
            return Self::from_der(bytes);
        }
        Self::from_pem_bundle(bytes)?
            .into_iter()
            .next()
            .ok_or(CertError::NoPem)
    }

    /// The DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
    /// SHA-256 of the DER encoding.
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(&self.der).into()
    }
    /// Subject common name.
    pub fn subject_cn(&self) -> &str {
        &self.subject_cn
    }
    /// Issuer common name.
    pub fn issuer_cn(&self) -> &str {
        &self.issuer_cn
    }
    /// The subject for messages: its common name, or the whole DN when it has none (TPM
    /// certificates often have an empty subject).
    pub fn name(&self) -> &str {
        if self.subject_cn.is_empty() {
            &self.subject_dn
        } else {
            &self.subject_cn
        }
    }
    /// Serial number as big-endian bytes (as encoded).
    pub fn serial(&self) -> &[u8] {
        &self.serial
    }
    /// Start of validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }
    /// End of validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
    /// The subject public key bit string contents (SEC1 point for EC keys).
    pub fn public_key_bits(&self) -> &[u8] {
        &self.public_key
    }
    /// Raw value (contents of extnValue) of the extension with this dotted OID.
    pub fn extension(&self, oid: &str) -> Option<&[u8]> {
        self.extensions
            .iter()
            .find(|(o, _)| o == oid)
            .map(|(_, v)| v.as_slice())
    }
    /// Whether `at` lies inside the validity window.
    pub fn valid_at(&self, at: OffsetDateTime) -> bool {
        self.not_before <= at && at <= self.not_after
    }

    fn constraints(&self) -> Result<&Constraints, CertError> {
        self.constraints
            .as_ref()
            .map_err(|reason| CertError::BadConstraints {
                subject: self.name().into(),
                reason: reason.clone(),
            })
    }

    /// Whether basicConstraints says cA=TRUE.
    pub fn is_ca(&self) -> bool {
        self.constraints.as_ref().is_ok_and(|c| c.ca)
    }

    /// Checks that this certificate may have issued `subject` at a place in the path where
    /// `cas_below` intermediate CAs lie between it and the leaf (RFC 5280 §6.1.4 (k), (l), (n)):
    /// basicConstraints cA=TRUE, keyCertSign when keyUsage is present, and its pathLenConstraint.
    pub fn check_issuer_of(&self, subject: &Cert, cas_below: usize) -> Result<(), CertError> {
        let c = self.constraints()?;
        if !c.ca {
            return Err(CertError::IssuerNotCa {
                issuer: self.name().into(),
                subject: subject.name().into(),
            });
        }
        if c.key_usage.is_some_and(|(cert_sign, _)| !cert_sign) {
            return Err(CertError::IssuerNoKeyCertSign {
                issuer: self.name().into(),
                subject: subject.name().into(),
            });
        }
        if let Some(limit) = c.path_len
            && usize::try_from(limit).is_ok_and(|l| cas_below > l)
        {
            return Err(CertError::PathLenExceeded {
                issuer: self.name().into(),
                limit,
                found: cas_below,
            });
        }
        Ok(())
    }

    /// Checks that this certificate is an end-entity (not a CA) whose keyUsage, if present,
    /// allows signatures.
    pub fn check_end_entity(&self) -> Result<(), CertError> {
        let c = self.constraints()?;
        if c.ca {
            return Err(CertError::LeafIsCa {
                subject: self.name().into(),
            });
        }
        if c.key_usage.is_some_and(|(_, sign)| !sign) {
            return Err(CertError::NoDigitalSignature {
                subject: self.name().into(),
            });
        }
        Ok(())
    }

    /// Checks that the extendedKeyUsage extension is present and names one of `oids`.
    pub fn check_eku(&self, oids: &[&str]) -> Result<(), CertError> {
        let c = self.constraints()?;
        if c.eku
            .as_ref()
            .is_some_and(|e| e.iter().any(|o| oids.contains(&o.as_str())))
        {
            return Ok(());
        }
        Err(CertError::MissingEku {
            subject: self.name().into(),
            expected: oids.join(" or "),
        })
    }

    fn tbs_bytes(&self) -> &[u8] {
        self.der.get(self.tbs.clone()).unwrap_or_default()
    }

    /// The signature algorithm OID (dotted).
    pub fn sig_alg(&self) -> &str {
        &self.sig_alg
    }

    /// Verifies this certificate's signature by `issuer`, for the algorithms the supported CAs
    /// use: RSASSA-PKCS1-v1_5/SHA-256, ECDSA P-256/SHA-256, RSASSA-PSS/SHA-384.
    pub fn verify_by(&self, issuer: &Cert) -> Result<(), CertError> {
        match self.sig_alg.as_str() {
            OID_RSA_SHA256 => self.verify_rsa_pkcs1_sha256_by(issuer),
            OID_ECDSA_SHA256 => self.verify_ecdsa_p256_by(issuer),
            _ => self.verify_rsa_pss_sha384_by(issuer),
        }
    }

    /// Verifies this certificate's RSASSA-PSS/SHA-384 signature with `issuer`'s RSA key (AMD CAs).
    pub fn verify_rsa_pss_sha384_by(&self, issuer: &Cert) -> Result<(), CertError> {
        verify_rsa_pss_sha384(
            &self.subject_cn,
            &self.sig_alg,
            &self.signature,
            self.tbs_bytes(),
            issuer,
        )
    }

    /// Verifies this certificate's ECDSA/SHA-256 signature with `issuer`'s P-256 key (Intel CAs).
    pub fn verify_ecdsa_p256_by(&self, issuer: &Cert) -> Result<(), CertError> {
        verify_ecdsa_p256(
            &self.subject_cn,
            &self.sig_alg,
            &self.signature,
            self.tbs_bytes(),
            issuer,
        )
    }

    /// Verifies this certificate's RSASSA-PKCS1-v1_5/SHA-256 signature with `issuer`'s RSA key.
    pub fn verify_rsa_pkcs1_sha256_by(&self, issuer: &Cert) -> Result<(), CertError> {
        use rsa::pkcs8::DecodePublicKey;
        use rsa::signature::Verifier;
        if self.sig_alg != OID_RSA_SHA256 {
            return Err(CertError::UnexpectedAlgorithm {
                subject: self.subject_cn.clone(),
                found: self.sig_alg.clone(),
                expected: OID_RSA_SHA256,
            });
        }
        let key = rsa::RsaPublicKey::from_public_key_der(&issuer.spki_der).map_err(|e| {
            CertError::IssuerKey {
                subject: self.subject_cn.clone(),
                reason: format!("issuer '{}' has no RSA key: {e}", issuer.subject_cn),
            }
        })?;
        let bad = || CertError::BadSignature {
            subject: self.subject_cn.clone(),
            issuer: issuer.subject_cn.clone(),
        };
        let sig =
            rsa::pkcs1v15::Signature::try_from(self.signature.as_slice()).map_err(|_| bad())?;
        rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key)
            .verify(self.tbs_bytes(), &sig)
            .map_err(|_| bad())
    }

    /// The P-384 verifying key of this certificate (VCEK/VLEK).
    pub fn p384_key(&self) -> Result<p384::ecdsa::VerifyingKey, CertError> {
        p384::ecdsa::VerifyingKey::from_sec1_bytes(&self.public_key).map_err(|_| {
            CertError::IssuerKey {
                subject: self.subject_cn.clone(),
                reason: "not a P-384 public key".into(),
            }
        })
    }

    /// The P-256 verifying key of this certificate (PCK, TCB signing).
    pub fn p256_key(&self) -> Result<p256::ecdsa::VerifyingKey, CertError> {
        p256::ecdsa::VerifyingKey::from_sec1_bytes(&self.public_key).map_err(|_| {
            CertError::IssuerKey {
                subject: self.subject_cn.clone(),
                reason: "not a P-256 public key".into(),
            }
        })
    }
}

/// RFC 5280 role constraints of a signature-verified path `[leaf, intermediates…, root]`: the
/// leaf is an end entity, and every certificate above it a CA that may sign certificates, within
/// its pathLenConstraint. Returns every violation (empty when the path is sound). Signatures and
/// validity are the caller's.
pub fn path_constraint_errors(path: &[&Cert]) -> Vec<CertError> {
    let mut errs = Vec::new();
    if let Some(leaf) = path.first()
        && let Err(e) = leaf.check_end_entity()
    {
        errs.push(e);
    }
    for (cas_below, w) in path.windows(2).enumerate() {
        if let [subject, issuer] = w
            && let Err(e) = issuer.check_issuer_of(subject, cas_below)
        {
            errs.push(e);
        }
    }
    errs
}

fn verify_rsa_pss_sha384(
    subject: &str,
    alg: &str,
    sig: &[u8],
    tbs: &[u8],
    issuer: &Cert,
) -> Result<(), CertError> {
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;
    if alg != OID_RSASSA_PSS {
        return Err(CertError::UnexpectedAlgorithm {
            subject: subject.into(),
            found: alg.into(),
            expected: OID_RSASSA_PSS,
        });
    }
    let key = rsa::RsaPublicKey::from_public_key_der(&issuer.spki_der).map_err(|e| {
        CertError::IssuerKey {
            subject: subject.into(),
            reason: format!("issuer '{}' has no RSA key: {e}", issuer.subject_cn),
        }
    })?;
    let bad = || CertError::BadSignature {
        subject: subject.into(),
        issuer: issuer.subject_cn.clone(),
    };
    let sig = rsa::pss::Signature::try_from(sig).map_err(|_| bad())?;
    rsa::pss::VerifyingKey::<Sha384>::new(key)
        .verify(tbs, &sig)
        .map_err(|_| bad())
}

fn verify_ecdsa_p256(
    subject: &str,
    alg: &str,
    sig: &[u8],
    tbs: &[u8],
    issuer: &Cert,
) -> Result<(), CertError> {
    use p256::ecdsa::signature::Verifier;
    if alg != OID_ECDSA_SHA256 {
        return Err(CertError::UnexpectedAlgorithm {
            subject: subject.into(),
            found: alg.into(),
            expected: OID_ECDSA_SHA256,
        });
    }
    let key = issuer.p256_key()?;
    let bad = || CertError::BadSignature {
        subject: subject.into(),
        issuer: issuer.subject_cn.clone(),
    };
    let sig = p256::ecdsa::Signature::from_der(sig).map_err(|_| bad())?;
    key.verify(tbs, &sig).map_err(|_| bad())
}

/// A parsed CRL.
#[derive(Clone)]
pub struct Crl {
    der: Vec<u8>,
    tbs: std::ops::Range<usize>,
    issuer_cn: String,
    this_update: OffsetDateTime,
    next_update: Option<OffsetDateTime>,
    sig_alg: String,
    signature: Vec<u8>,
    revoked: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Crl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crl")
            .field("issuer", &self.issuer_cn)
            .field("this_update", &self.this_update)
            .field("revoked", &self.revoked.len())
            .finish_non_exhaustive()
    }
}

impl Crl {
    /// Parses a DER CRL, or a PEM one (`X509 CRL`).
    pub fn parse(bytes: &[u8]) -> Result<Self, CertError> {
        if bytes.first() != Some(&0x30) {
            let p = x509_parser::pem::Pem::iter_from_buffer(bytes)
                .next()
                .ok_or_else(|| CertError::CrlParse("no PEM block".into()))?
                .map_err(|e| CertError::CrlParse(e.to_string()))?;
            return Self::parse_der(&p.contents);
        }
        Self::parse_der(bytes)
    }

    fn parse_der(der_in: &[u8]) -> Result<Self, CertError> {
        let (_, c) = CertificateRevocationList::from_der(der_in)
            .map_err(|e| CertError::CrlParse(e.to_string()))?;
        let tbs_raw: &[u8] = c.tbs_cert_list.as_ref();
        let tbs =
            range_of(der_in, tbs_raw).ok_or_else(|| CertError::CrlParse("TBS not found".into()))?;
        Ok(Crl {
            tbs,
            issuer_cn: cn(c.issuer()),
            this_update: c.last_update().to_datetime(),
            next_update: c.next_update().map(|t| t.to_datetime()),
            sig_alg: c.signature_algorithm.algorithm.to_id_string(),
            signature: c.signature_value.data.to_vec(),
            revoked: c
                .iter_revoked_certificates()
                .map(|r| r.raw_serial().to_vec())
                .collect(),
            der: der_in.to_vec(),
        })
    }

    /// Issuer common name.
    pub fn issuer_cn(&self) -> &str {
        &self.issuer_cn
    }
    /// Whether `at` lies in `[thisUpdate, nextUpdate]`.
    pub fn valid_at(&self, at: OffsetDateTime) -> bool {
        self.this_update <= at && self.next_update.is_none_or(|n| at <= n)
    }
    /// Whether a certificate with this serial is listed.
    pub fn is_revoked(&self, cert: &Cert) -> bool {
        self.revoked.iter().any(|s| s.as_slice() == cert.serial())
    }
    /// Verifies the CRL's ECDSA P-256 signature by `issuer`.
    pub fn verify_ecdsa_p256_by(&self, issuer: &Cert) -> Result<(), CertError> {
        let tbs = self.der.get(self.tbs.clone()).unwrap_or_default();
        verify_ecdsa_p256(&self.issuer_cn, &self.sig_alg, &self.signature, tbs, issuer)
    }
}
