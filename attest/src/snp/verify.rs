//! SEV-SNP verification: certificate chain (VCEK → ASK → ARK or VLEK → ASVK → ARK), report
//! signature, leaf/report TCB and chip binding, and the policy.
//!
//! Verification collects every failed check instead of stopping at the first one, so that a
//! person (or `attest-verify`) sees the whole picture.

use p384::ecdsa::signature::Verifier;
use serde::Serialize;
use sha2::{Digest, Sha256, Sha512};
use time::OffsetDateTime;

use super::report::{SigningKey, SnpReport, Tcb};
use crate::certs::x509::{Cert, CertError};
use crate::policy::{IdKeyMode, SnpPolicy};

/// AMD product generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Generation {
    /// EPYC 7003.
    Milan,
    /// EPYC 9004/8004.
    Genoa,
    /// EPYC 9005.
    Turin,
}

impl Generation {
    /// Name as it appears in AMD certificate CNs ("Milan").
    pub fn name(self) -> &'static str {
        match self {
            Generation::Milan => "Milan",
            Generation::Genoa => "Genoa",
            Generation::Turin => "Turin",
        }
    }

    fn from_name(n: &str) -> Option<Self> {
        match n {
            "Milan" => Some(Generation::Milan),
            "Genoa" => Some(Generation::Genoa),
            "Turin" => Some(Generation::Turin),
            _ => None,
        }
    }

    /// Generation from the report's CPUID family/model (report version 3+).
    pub fn from_cpuid(family: u8, model: u8) -> Option<Self> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Generation::Milan),
            (0x19, 0x10..=0x1F) | (0x19, 0xA0..=0xAF) => Some(Generation::Genoa),
            (0x1A, _) => Some(Generation::Turin),
            _ => None,
        }
    }

    fn builtin_pem(self) -> (&'static [u8], &'static [u8]) {
        use sev::certs::snp::builtin;
        match self {
            Generation::Milan => (builtin::milan::ARK, builtin::milan::ASK),
            Generation::Genoa => (builtin::genoa::ARK, builtin::genoa::ASK),
            Generation::Turin => (builtin::turin::ARK, builtin::turin::ASK),
        }
    }
}

/// VCEK or VLEK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignerKind {
    /// Chip endorsement key, chain via ASK.
    Vcek,
    /// Cloud-loaded endorsement key, chain via ASVK.
    Vlek,
}

/// Every reason SNP evidence is rejected. Each is its own variant so that tests and callers can
/// tell them apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnpError {
    /// The report bytes are malformed.
    #[error("report: {0}")]
    Report(#[from] super::report::ReportError),
    /// A certificate is malformed or a signature in the chain fails.
    #[error("certificate chain: {0}")]
    Cert(#[from] CertError),
    /// The leaf issuer is not an AMD ASK/ASVK name.
    #[error("leaf certificate issuer '{0}' is not an AMD SEV-<gen> or SEV-VLEK-<gen> CA")]
    UnknownIssuer(String),
    /// No root is configured for this generation.
    #[error("no ARK configured for generation {0}")]
    NoRoot(&'static str),
    /// The intermediate is not the leaf's issuer (typically a different generation's ASK).
    #[error(
        "intermediate '{intermediate}' is not the issuer '{expected}' of the leaf (generation or key type mixed up)"
    )]
    IntermediateMismatch {
        /// Issuer CN the leaf names.
        expected: String,
        /// Subject CN of the given intermediate.
        intermediate: String,
    },
    /// The VLEK chain needs the ASVK.
    #[error("a VLEK needs its ASVK (SEV-VLEK-<gen>) in the chain; none was given")]
    MissingAsvk,
    /// A certificate is outside its validity window at the reference time.
    #[error(
        "certificate '{subject}' is not valid at {at} (valid {not_before} .. {not_after}); pass a reference time inside the window if verifying old evidence"
    )]
    CertNotValidAt {
        /// Subject CN.
        subject: String,
        /// Reference time.
        at: OffsetDateTime,
        /// Start of validity.
        not_before: OffsetDateTime,
        /// End of validity.
        not_after: OffsetDateTime,
    },
    /// A VCEK/VLEK extension is missing or malformed.
    #[error("leaf certificate extension {oid} missing or malformed")]
    LeafExtension {
        /// Dotted OID.
        oid: &'static str,
    },
    /// The report's CPUID names another generation than the certificate chain.
    #[error("report CPUID says {report}, certificate chain is {chain}")]
    GenerationMismatch {
        /// From CPUID.
        report: &'static str,
        /// From the chain.
        chain: &'static str,
    },
    /// The report's signature R or S does not fit P-384 (non-zero high bytes).
    #[error("report signature is malformed (R or S out of range)")]
    SignatureMalformed,
    /// The report signature does not verify with the leaf's key.
    #[error("report signature does not verify with the {0:?} key (report altered or wrong signer)")]
    SignatureInvalid(SignerKind),
    /// The report names another kind of signing key than the given certificate.
    #[error("report says it was signed by {report:?}, but the certificate is a {cert:?}")]
    SignerKindMismatch {
        /// KEY_INFO.SIGNING_KEY.
        report: SigningKey,
        /// Certificate kind.
        cert: SignerKind,
    },
    /// Policy does not accept this signer kind.
    #[error("signer {0:?} not accepted by policy.snp.signers")]
    SignerNotAllowed(SignerKind),
    /// A leaf TCB extension differs from REPORTED_TCB.
    #[error("leaf certificate {component} SPL {cert} differs from REPORTED_TCB {report}")]
    TcbMismatch {
        /// Component name.
        component: &'static str,
        /// Value in the certificate.
        cert: u8,
        /// Value in the report.
        report: u8,
    },
    /// The VCEK hwID differs from CHIP_ID.
    #[error("VCEK hwID {cert} differs from report CHIP_ID {report}")]
    ChipIdMismatch {
        /// hwID hex.
        cert: String,
        /// CHIP_ID hex.
        report: String,
    },
    /// The policy lists minimum TCBs per generation, but not for this one.
    #[error(
        "the policy has no minimum TCB for {0} processors: add policy.snp.minimum_tcb_by_generation.{lower} (or policy.snp.minimum_tcb)",
        lower = .0.to_ascii_lowercase()
    )]
    NoMinimumTcb(&'static str),
    /// The signing key's CSP id is not accepted (or a VCEK, which has none, signed).
    #[error(
        "signing key CSP id {got:?} is not in policy.snp.allowed_csp_ids {allowed:?} (a VCEK has no CSP id; this variant expects a VLEK of the named cloud)"
    )]
    CspNotAllowed {
        /// The leaf's CSP id (None for a VCEK).
        got: Option<String>,
        /// The accepted ids.
        allowed: Vec<String>,
    },
    /// A TCB is below the policy minimum.
    #[error("{which} TCB component {component} is {got}, policy minimum is {min}")]
    TcbBelowMinimum {
        /// "reported" or "committed".
        which: &'static str,
        /// Component name.
        component: &'static str,
        /// Value in the report.
        got: u8,
        /// Minimum.
        min: u8,
    },
    /// VMPL not accepted.
    #[error("report VMPL {got} not in accepted {allowed:?}")]
    Vmpl {
        /// VMPL in the report.
        got: u32,
        /// Accepted VMPLs.
        allowed: Vec<u32>,
    },
    /// The guest policy allows debugging.
    #[error("guest policy allows debugging (policy 0x{0:x})")]
    DebugAllowed(u64),
    /// The guest policy allows a migration agent.
    #[error("guest policy allows a migration agent (policy 0x{0:x})")]
    MigrationAgentAllowed(u64),
    /// SMT is enabled but policy forbids it.
    #[error("platform has SMT enabled (platform_info 0x{0:x}) but policy forbids SMT")]
    SmtNotAllowed(u64),
    /// Guest SVN below minimum.
    #[error("guest SVN {got} below minimum {min}")]
    GuestSvn {
        /// In the report.
        got: u32,
        /// Minimum.
        min: u32,
    },
    /// Launch measurement not accepted.
    #[error("launch measurement {0} is not among the accepted ones")]
    Measurement(String),
    /// HOST_DATA differs.
    #[error("HOST_DATA {got} differs from expected {expected}")]
    HostData {
        /// Expected hex.
        expected: String,
        /// Got hex.
        got: String,
    },
    /// REPORT_DATA does not bind what it must.
    #[error("REPORT_DATA {got} does not match expected {expected} ({binding})")]
    ReportData {
        /// How the expected value was derived.
        binding: &'static str,
        /// Expected hex.
        expected: String,
        /// Got hex.
        got: String,
    },
    /// ID-key digest not accepted (mode Equal).
    #[error("ID-key digest {0} is not accepted (id_key_mode equal)")]
    IdKeyDigest(String),
    /// MAA fallback requested but not implemented.
    #[error(
        "ID-key digest {0} not in the accepted list and MAA fallback is not supported yet; add the digest or use warn_only"
    )]
    MaaFallbackNotSupported(String),
}

/// A verified signing key with the values its certificate vouches for.
#[derive(Debug, Clone)]
pub struct VerifiedSigner {
    /// VCEK or VLEK.
    pub kind: SignerKind,
    /// Generation of the chain.
    pub generation: Generation,
    /// The leaf's key.
    pub key: p384::ecdsa::VerifyingKey,
    /// TCB from the leaf extensions.
    pub tcb: Tcb,
    /// hwID (VCEK only).
    pub hwid: Option<[u8; 64]>,
    /// CSP id (VLEK only).
    pub csp_id: Option<String>,
}

/// The trusted AMD roots: the built-in pinned ARKs, optionally replaced by policy.
#[derive(Debug, Clone)]
pub struct AmdRoots {
    arks: Vec<Cert>,
}

impl AmdRoots {
    /// The ARKs pinned in this build (carried by the `sev` crate), for Milan, Genoa and Turin.
    pub fn builtin() -> Self {
        let arks = [Generation::Milan, Generation::Genoa, Generation::Turin]
            .into_iter()
            .filter_map(|g| Cert::from_pem_or_der(g.builtin_pem().0).ok())
            .collect();
        AmdRoots { arks }
    }

    /// Roots from the policy (`ark_pem`), or the built-in ones when the policy names none.
    pub fn from_policy(policy: &SnpPolicy) -> Result<Self, CertError> {
        if policy.ark_pem.is_empty() {
            return Ok(Self::builtin());
        }
        let mut arks = Vec::new();
        for p in &policy.ark_pem {
            arks.extend(Cert::from_pem_bundle(p.as_bytes())?);
        }
        Ok(AmdRoots { arks })
    }

    /// Roots given explicitly.
    pub fn from_certs(arks: Vec<Cert>) -> Self {
        AmdRoots { arks }
    }

    fn ark(&self, g: Generation) -> Option<&Cert> {
        let want = format!("ARK-{}", g.name());
        self.arks.iter().find(|c| c.subject_cn() == want)
    }
}

fn check_time(c: &Cert, at: Option<OffsetDateTime>, errs: &mut Vec<SnpError>) {
    if let Some(at) = at
        && !c.valid_at(at)
    {
        errs.push(SnpError::CertNotValidAt {
            subject: c.subject_cn().to_string(),
            at,
            not_before: c.not_before(),
            not_after: c.not_after(),
        });
    }
}

/// Reads a DER INTEGER extension value that must fit in a byte.
fn ext_u8(leaf: &Cert, oid: &'static str) -> Result<u8, SnpError> {
    let bad = SnpError::LeafExtension { oid };
    let v = leaf.extension(oid).ok_or(bad.clone())?;
    match v {
        [0x02, 1, b] => Ok(*b),
        [0x02, 2, 0x00, b] if *b >= 0x80 => Ok(*b),
        _ => Err(bad),
    }
}

const OID_BL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";
const OID_CSP_ID: &str = "1.3.6.1.4.1.3704.1.5";

/// TCB, hwID (VCEK) and CSP id (VLEK) from a leaf certificate.
pub type LeafExtensions = (Tcb, Option<[u8; 64]>, Option<String>);

/// Reads the TCB, hwID and CSP id extensions of a VCEK/VLEK.
pub fn leaf_extensions(
    leaf: &Cert,
    kind: SignerKind,
    g: Generation,
) -> Result<LeafExtensions, SnpError> {
    let tcb = Tcb {
        bootloader: ext_u8(leaf, OID_BL)?,
        tee: ext_u8(leaf, OID_TEE)?,
        snp: ext_u8(leaf, OID_SNP)?,
        microcode: ext_u8(leaf, OID_UCODE)?,
        fmc: if g == Generation::Turin {
            Some(ext_u8(leaf, OID_FMC)?)
        } else {
            None
        },
    };
    let hwid = match kind {
        SignerKind::Vlek => None,
        SignerKind::Vcek => {
            let v = leaf
                .extension(OID_HWID)
                .ok_or(SnpError::LeafExtension { oid: OID_HWID })?;
            // Older KDS certificates carry the raw 64 bytes, newer ones an OCTET STRING.
            let raw = match v {
                [0x04, 0x40, rest @ ..] if rest.len() == 64 => rest,
                _ if v.len() == 64 => v,
                // Turin hwIDs are 8 bytes; keep them zero-extended for comparison with CHIP_ID.
                [0x04, n, rest @ ..] if usize::from(*n) == rest.len() && rest.len() < 64 => rest,
                _ if !v.is_empty() && v.len() < 64 => v,
                _ => return Err(SnpError::LeafExtension { oid: OID_HWID }),
            };
            let mut h = [0u8; 64];
            h.get_mut(..raw.len())
                .ok_or(SnpError::LeafExtension { oid: OID_HWID })?
                .copy_from_slice(raw);
            Some(h)
        }
    };
    let csp_id = leaf.extension(OID_CSP_ID).map(|v| {
        // IA5String/UTF8String: skip the two-byte short-form header when present.
        let s = match v {
            [0x16 | 0x0C, n, rest @ ..] if usize::from(*n) == rest.len() => rest,
            _ => v,
        };
        String::from_utf8_lossy(s).into_owned()
    });
    Ok((tcb, hwid, csp_id))
}

/// Verifies VCEK → ASK → ARK or VLEK → ASVK → ARK. `intermediate` may be omitted for a VCEK (the
/// built-in ASK is used). `at`: reference time for validity; None skips validity checks.
pub fn verify_chain(
    leaf: &Cert,
    intermediate: Option<&Cert>,
    roots: &AmdRoots,
    at: Option<OffsetDateTime>,
) -> Result<VerifiedSigner, Vec<SnpError>> {
    let issuer = leaf.issuer_cn();
    let (kind, gen_name) = if let Some(g) = issuer.strip_prefix("SEV-VLEK-") {
        (SignerKind::Vlek, g)
    } else if let Some(g) = issuer.strip_prefix("SEV-") {
        (SignerKind::Vcek, g)
    } else {
        return Err(vec![SnpError::UnknownIssuer(issuer.to_string())]);
    };
    let generation = Generation::from_name(gen_name)
        .ok_or_else(|| vec![SnpError::UnknownIssuer(issuer.to_string())])?;
    let ark = roots
        .ark(generation)
        .ok_or_else(|| vec![SnpError::NoRoot(generation.name())])?;

    let builtin_ask;
    let inter = match (intermediate, kind) {
        (Some(i), _) => i,
        (None, SignerKind::Vcek) => {
            builtin_ask =
                Cert::from_pem_or_der(generation.builtin_pem().1).map_err(|e| vec![e.into()])?;
            &builtin_ask
        }
        (None, SignerKind::Vlek) => return Err(vec![SnpError::MissingAsvk]),
    };
    let mut errs = Vec::new();
    if inter.subject_cn() != issuer {
        errs.push(SnpError::IntermediateMismatch {
            expected: issuer.to_string(),
            intermediate: inter.subject_cn().to_string(),
        });
    }
    if let Err(e) = inter.verify_rsa_pss_sha384_by(ark) {
        errs.push(e.into());
    }
    if let Err(e) = leaf.verify_rsa_pss_sha384_by(inter) {
        errs.push(e.into());
    }
    // AMD's fixed three-certificate chain is walked here rather than by rustls-webpki: AMD's CA
    // signatures carry RSASSA-PSS parameters with an explicitly encoded (DEFAULT) trailer field,
    // which none of webpki's fixed algorithm identifiers match, so webpki cannot verify them.
    // The RFC 5280 role constraints are enforced all the same: the ASK/ASVK must be a CA that
    // may sign the leaf, the ARK one that may sign the ASK/ASVK, and the leaf an end entity.
    errs.extend(
        crate::certs::x509::path_constraint_errors(&[leaf, inter, ark])
            .into_iter()
            .map(SnpError::from),
    );
    for c in [leaf, inter, ark] {
        check_time(c, at, &mut errs);
    }
    let key = leaf.p384_key().map_err(|e| {
        errs.push(e.into());
    });
    let ext = leaf_extensions(leaf, kind, generation).map_err(|e| errs.push(e));
    match (key, ext) {
        (Ok(key), Ok((tcb, hwid, csp_id))) if errs.is_empty() => Ok(VerifiedSigner {
            kind,
            generation,
            key,
            tcb,
            hwid,
            csp_id,
        }),
        _ => Err(errs),
    }
}

/// What REPORT_DATA must bind, per cloud.
#[derive(Debug, Clone)]
pub enum ReportDataBinding {
    /// Not checked here (the policy's `report_data`, if any, still applies).
    None,
    /// Exactly these 64 bytes.
    Exact([u8; 64]),
    /// AWS: SHA-512 of the attestation key's SubjectPublicKeyInfo (DER).
    AwsAkSpki(Vec<u8>),
    /// GCP: the extra data, zero-padded to 64 bytes.
    GcpExtraData(Vec<u8>),
    /// Azure: SHA-256 of the HCL runtime data in the first 32 bytes, zeros after.
    AzureRuntimeData(Vec<u8>),
}

impl ReportDataBinding {
    fn expected(&self) -> Option<([u8; 64], &'static str)> {
        let mut out = [0u8; 64];
        match self {
            ReportDataBinding::None => None,
            ReportDataBinding::Exact(b) => Some((*b, "exact")),
            ReportDataBinding::AwsAkSpki(spki) => {
                out.copy_from_slice(&Sha512::digest(spki));
                Some((out, "SHA-512 of the attestation key SPKI"))
            }
            ReportDataBinding::GcpExtraData(d) => {
                let n = d.len().min(64);
                out.get_mut(..n)?.copy_from_slice(d.get(..n)?);
                if d.len() > 64 {
                    // Longer extra data can never be bound; make the comparison fail visibly.
                    out = [0xFF; 64];
                }
                Some((out, "extra data zero-padded to 64 bytes"))
            }
            ReportDataBinding::AzureRuntimeData(rt) => {
                out.get_mut(..32)?.copy_from_slice(&Sha256::digest(rt));
                Some((out, "SHA-256 of the HCL runtime data"))
            }
        }
    }
}

/// The verified claims of an SNP report.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedSnp {
    /// Report version.
    pub version: u32,
    /// Generation.
    pub generation: Generation,
    /// Signer kind.
    pub signer: SignerKind,
    /// CSP id for VLEKs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csp_id: Option<String>,
    /// VMPL.
    pub vmpl: u32,
    /// Guest policy.
    pub policy: u64,
    /// Guest SVN.
    pub guest_svn: u32,
    /// Launch measurement (hex).
    pub measurement: String,
    /// REPORT_DATA (hex).
    pub report_data: String,
    /// HOST_DATA (hex).
    pub host_data: String,
    /// ID-key digest (hex).
    pub id_key_digest: String,
    /// Author-key digest (hex).
    pub author_key_digest: String,
    /// Family ID (hex).
    pub family_id: String,
    /// Image ID (hex).
    pub image_id: String,
    /// CHIP_ID (hex).
    pub chip_id: String,
    /// Platform info.
    pub platform_info: u64,
    /// REPORTED_TCB.
    pub reported_tcb: Tcb,
    /// COMMITTED_TCB.
    pub committed_tcb: Tcb,
    /// LAUNCH_TCB.
    pub launch_tcb: Tcb,
    /// CURRENT_TCB.
    pub current_tcb: Tcb,
    /// Non-fatal findings (e.g. ID-key digest under warn_only).
    pub warnings: Vec<String>,
}

fn tcb_min_check(
    which: &'static str,
    t: &Tcb,
    min: &crate::policy::MinTcb,
    errs: &mut Vec<SnpError>,
) {
    let mut c = |component, got: u8, min: u8| {
        if got < min {
            errs.push(SnpError::TcbBelowMinimum {
                which,
                component,
                got,
                min,
            });
        }
    };
    c("bootloader", t.bootloader, min.bootloader);
    c("tee", t.tee, min.tee);
    c("snp", t.snp, min.snp);
    c("microcode", t.microcode, min.microcode);
    if let Some(f) = t.fmc {
        c("fmc", f, min.fmc);
    }
}

/// Verifies the report's signature with a verified signer only (the hot path once the chain is
/// cached). Returns the failure reasons.
pub fn verify_signature(report: &SnpReport, signer: &VerifiedSigner) -> Result<(), SnpError> {
    let (r_le, s_le) = report.signature_rs();
    let to_be = |le: &[u8; 72]| -> Option<[u8; 48]> {
        if le.get(48..)?.iter().any(|b| *b != 0) {
            return None;
        }
        let mut be = [0u8; 48];
        for (d, s) in be.iter_mut().zip(le.get(..48)?.iter().rev()) {
            *d = *s;
        }
        Some(be)
    };
    let (Some(r), Some(s)) = (to_be(&r_le), to_be(&s_le)) else {
        return Err(SnpError::SignatureMalformed);
    };
    let sig =
        p384::ecdsa::Signature::from_scalars(r, s).map_err(|_| SnpError::SignatureMalformed)?;
    signer
        .key
        .verify(report.signed_bytes(), &sig)
        .map_err(|_| SnpError::SignatureInvalid(signer.kind))
}

/// Verifies a report against a verified signer, the policy and the report-data binding. Every
/// failing check is returned.
pub fn verify_report(
    report: &SnpReport,
    signer: &VerifiedSigner,
    policy: &SnpPolicy,
    binding: &ReportDataBinding,
) -> Result<VerifiedSnp, Vec<SnpError>> {
    let mut errs = Vec::new();
    let mut warnings = Vec::new();
    if let Err(e) = verify_signature(report, signer) {
        errs.push(e);
    }
    let expected_key = match signer.kind {
        SignerKind::Vcek => SigningKey::Vcek,
        SignerKind::Vlek => SigningKey::Vlek,
    };
    if report.signing_key() != expected_key {
        errs.push(SnpError::SignerKindMismatch {
            report: report.signing_key(),
            cert: signer.kind,
        });
    }
    let kind_name = match signer.kind {
        SignerKind::Vcek => "vcek",
        SignerKind::Vlek => "vlek",
    };
    if !policy
        .signers
        .iter()
        .any(|s| s.eq_ignore_ascii_case(kind_name))
    {
        errs.push(SnpError::SignerNotAllowed(signer.kind));
    }
    if let Some((fam, model, _)) = report.cpuid()
        && let Some(g) = Generation::from_cpuid(fam, model)
        && g != signer.generation
    {
        errs.push(SnpError::GenerationMismatch {
            report: g.name(),
            chain: signer.generation.name(),
        });
    }
    let turin = signer.generation == Generation::Turin;
    let reported = Tcb::from_raw(report.reported_tcb_raw(), turin);
    let committed = Tcb::from_raw(report.committed_tcb_raw(), turin);
    for (component, cert, rep) in [
        ("bootloader", signer.tcb.bootloader, reported.bootloader),
        ("tee", signer.tcb.tee, reported.tee),
        ("snp", signer.tcb.snp, reported.snp),
        ("microcode", signer.tcb.microcode, reported.microcode),
        (
            "fmc",
            signer.tcb.fmc.unwrap_or(0),
            reported.fmc.unwrap_or(0),
        ),
    ] {
        if cert != rep {
            errs.push(SnpError::TcbMismatch {
                component,
                cert,
                report: rep,
            });
        }
    }
    if let Some(hwid) = signer.hwid {
        let chip = report.chip_id();
        // Turin hwIDs are 8 bytes: compare the prefix the certificate carries.
        let n = if turin { 8 } else { 64 };
        if hwid.get(..n) != chip.get(..n) {
            errs.push(SnpError::ChipIdMismatch {
                cert: hex::encode(hwid),
                report: hex::encode(chip),
            });
        }
    }
    if let Some(min) = policy.minimum_tcb_for(signer.generation.name()) {
        tcb_min_check("reported", &reported, min, &mut errs);
        tcb_min_check("committed", &committed, min, &mut errs);
    } else if !policy.minimum_tcb_by_generation.is_empty() {
        // A per-generation list that omits this generation: the SPL numbers of the listed ones
        // say nothing about it, so refuse rather than accept any firmware.
        errs.push(SnpError::NoMinimumTcb(signer.generation.name()));
    }
    if !policy.csp_id_allowed(signer.csp_id.as_deref()) {
        errs.push(SnpError::CspNotAllowed {
            got: signer.csp_id.clone(),
            allowed: policy.allowed_csp_ids.clone(),
        });
    }
    if !policy.allowed_vmpls.contains(&report.vmpl()) {
        errs.push(SnpError::Vmpl {
            got: report.vmpl(),
            allowed: policy.allowed_vmpls.clone(),
        });
    }
    let gp = report.policy();
    if gp.debug() && !policy.allow_debug {
        errs.push(SnpError::DebugAllowed(gp.0));
    }
    if gp.migrate_ma() && !policy.allow_migration_agent {
        errs.push(SnpError::MigrationAgentAllowed(gp.0));
    }
    if !policy.allow_smt && report.platform_info() & 1 != 0 {
        errs.push(SnpError::SmtNotAllowed(report.platform_info()));
    }
    if report.guest_svn() < policy.minimum_guest_svn {
        errs.push(SnpError::GuestSvn {
            got: report.guest_svn(),
            min: policy.minimum_guest_svn,
        });
    }
    let m = report.measurement();
    if !policy.measurements.is_empty() && !policy.measurements.iter().any(|a| a.0 == m) {
        errs.push(SnpError::Measurement(hex::encode(m)));
    }
    if let Some(h) = &policy.host_data
        && h.0 != report.host_data()
    {
        errs.push(SnpError::HostData {
            expected: hex::encode(h.0),
            got: hex::encode(report.host_data()),
        });
    }
    let rd = report.report_data();
    let mut bindings: Vec<([u8; 64], &'static str)> = binding.expected().into_iter().collect();
    if let Some(p) = &policy.report_data {
        bindings.push((p.0, "policy report_data"));
    }
    for (expected, how) in bindings {
        if expected != rd {
            errs.push(SnpError::ReportData {
                binding: how,
                expected: hex::encode(expected),
                got: hex::encode(rd),
            });
        }
    }
    let idk = report.id_key_digest();
    if !policy.accepted_id_key_digests.is_empty()
        && !policy.accepted_id_key_digests.iter().any(|d| d.0 == idk)
    {
        match policy.id_key_mode {
            IdKeyMode::Equal => errs.push(SnpError::IdKeyDigest(hex::encode(idk))),
            IdKeyMode::MaaFallback => {
                errs.push(SnpError::MaaFallbackNotSupported(hex::encode(idk)))
            }
            IdKeyMode::WarnOnly => warnings.push(format!(
                "ID-key digest {} is not in the accepted list",
                hex::encode(idk)
            )),
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(VerifiedSnp {
        version: report.version(),
        generation: signer.generation,
        signer: signer.kind,
        csp_id: signer.csp_id.clone(),
        vmpl: report.vmpl(),
        policy: gp.0,
        guest_svn: report.guest_svn(),
        measurement: hex::encode(m),
        report_data: hex::encode(rd),
        host_data: hex::encode(report.host_data()),
        id_key_digest: hex::encode(idk),
        author_key_digest: hex::encode(report.author_key_digest()),
        family_id: hex::encode(report.family_id()),
        image_id: hex::encode(report.image_id()),
        chip_id: hex::encode(report.chip_id()),
        platform_info: report.platform_info(),
        reported_tcb: reported,
        committed_tcb: committed,
        launch_tcb: Tcb::from_raw(report.launch_tcb_raw(), turin),
        current_tcb: Tcb::from_raw(report.current_tcb_raw(), turin),
        warnings,
    })
}

/// Convenience: parse the report, verify the chain and the report in one go.
pub fn verify_all(
    report_bytes: &[u8],
    leaf: &Cert,
    intermediate: Option<&Cert>,
    roots: &AmdRoots,
    at: Option<OffsetDateTime>,
    policy: &SnpPolicy,
    binding: &ReportDataBinding,
) -> Result<VerifiedSnp, Vec<SnpError>> {
    let report = SnpReport::parse(report_bytes).map_err(|e| vec![e.into()])?;
    match verify_chain(leaf, intermediate, roots, at) {
        Ok(signer) => verify_report(&report, &signer, policy, binding),
        Err(mut errs) => {
            // Still check the report with the (untrusted) leaf so every failing check is listed.
            if let Some(signer) = unverified_signer(leaf)
                && let Err(more) = verify_report(&report, &signer, policy, binding)
            {
                errs.extend(more);
            }
            Err(errs)
        }
    }
}

/// The leaf's key and extensions without any chain check; only for listing further failures.
fn unverified_signer(leaf: &Cert) -> Option<VerifiedSigner> {
    let issuer = leaf.issuer_cn();
    let (kind, g) = match issuer.strip_prefix("SEV-VLEK-") {
        Some(g) => (SignerKind::Vlek, g),
        None => (SignerKind::Vcek, issuer.strip_prefix("SEV-")?),
    };
    let generation = Generation::from_name(g)?;
    let key = leaf.p384_key().ok()?;
    let (tcb, hwid, csp_id) = leaf_extensions(leaf, kind, generation).ok()?;
    Some(VerifiedSigner {
        kind,
        generation,
        key,
        tcb,
        hwid,
        csp_id,
    })
}
