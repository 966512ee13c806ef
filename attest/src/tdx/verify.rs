//! TDX quote verification: quote signature, QE report signature and attestation-key binding, PCK
//! chain to the pinned Intel SGX Root CA, collateral signatures/validity/CRLs, TCB status by
//! Intel's matching rules, and the policy.

use std::collections::HashMap;
use std::sync::Mutex;

use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::collateral::{
    CollateralError, IsvLevel, OID_SGX_EXT, PckInfo, QeIdentity, Signed, TcbInfo,
    parse_pck_extension,
};
use super::quote::{Quote, QuoteError};
use crate::certs::x509::{Cert, CertError, Crl};
use crate::policy::TdxPolicy;

/// SHA-256 of the DER of the Intel SGX Root CA (pinned).
pub const INTEL_SGX_ROOT_SHA256: [u8; 32] = [
    0x44, 0xa0, 0x19, 0x6b, 0x2b, 0x99, 0xf8, 0x89, 0xb8, 0xe1, 0x49, 0xe9, 0x5b, 0x80, 0x7a, 0x35,
    0x0e, 0x74, 0x24, 0x96, 0x43, 0x99, 0xe8, 0x85, 0xa7, 0xcb, 0xb8, 0xcc, 0xfa, 0xb6, 0x74, 0xd3,
];

/// Every reason TDX evidence is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TdxError {
    /// Quote malformed.
    #[error("quote: {0}")]
    Quote(#[from] QuoteError),
    /// Collateral malformed.
    #[error("collateral: {0}")]
    Collateral(#[from] CollateralError),
    /// Certificate/CRL problem.
    #[error("certificate: {0}")]
    Cert(#[from] CertError),
    /// A chain does not end in the pinned Intel root.
    #[error(
        "{chain} chain does not end in the pinned Intel SGX Root CA (got root '{subject}' sha256 {sha256})"
    )]
    UntrustedRoot {
        /// Which chain.
        chain: &'static str,
        /// Subject CN of the presented root.
        subject: String,
        /// Its fingerprint.
        sha256: String,
    },
    /// A chain has the wrong number of certificates.
    #[error("{chain} chain must be leaf, intermediate(s), root; got {count} certificates")]
    ChainShape {
        /// Which chain.
        chain: &'static str,
        /// Count.
        count: usize,
    },
    /// Certificate outside its validity at the reference time.
    #[error("certificate '{subject}' is not valid at {at} (valid {not_before} .. {not_after})")]
    CertNotValidAt {
        /// Subject CN.
        subject: String,
        /// Reference time.
        at: OffsetDateTime,
        /// Start.
        not_before: OffsetDateTime,
        /// End.
        not_after: OffsetDateTime,
    },
    /// The attestation key is not a valid P-256 point.
    #[error("attestation key is not a valid P-256 point")]
    AttestationKey,
    /// Quote signature fails.
    #[error("quote signature does not verify with the attestation key (quote altered)")]
    QuoteSignature,
    /// QE report signature fails with the PCK.
    #[error(
        "QE report signature does not verify with the PCK key (wrong PCK or altered QE report)"
    )]
    QeReportSignature,
    /// QE report data does not bind the attestation key.
    #[error("QE REPORT_DATA does not equal SHA-256(attestation key ‖ QE auth data)")]
    AttestationKeyBinding,
    /// Collateral signature fails.
    #[error("{0} signature does not verify with the TCB signing key")]
    CollateralSignature(&'static str),
    /// Collateral outside its issueDate..nextUpdate window.
    #[error("{what} is not valid at {at} (issued {issue}, next update {next})")]
    CollateralNotValidAt {
        /// Which document.
        what: &'static str,
        /// Reference time.
        at: OffsetDateTime,
        /// issueDate.
        issue: OffsetDateTime,
        /// nextUpdate.
        next: OffsetDateTime,
    },
    /// CRL outside its validity.
    #[error("CRL of '{0}' is not valid at the reference time")]
    CrlNotValidAt(String),
    /// CRL issuer does not match.
    #[error("CRL issued by '{crl}' cannot be checked against '{cert}'")]
    CrlIssuer {
        /// CRL issuer CN.
        crl: String,
        /// Certificate CN.
        cert: String,
    },
    /// Certificate revoked.
    #[error("certificate '{0}' is revoked")]
    Revoked(String),
    /// TCB info is for another platform.
    #[error(
        "TCB info is for FMSPC {collateral}/PCE {collateral_pce}, the PCK says {pck}/{pck_pce}"
    )]
    FmspcMismatch {
        /// From collateral.
        collateral: String,
        /// From collateral.
        collateral_pce: String,
        /// From PCK.
        pck: String,
        /// From PCK.
        pck_pce: String,
    },
    /// TCB info is not TDX v3.
    #[error("TCB info id '{id}' version {version} is not TDX v3")]
    TcbInfoKind {
        /// id.
        id: String,
        /// version.
        version: u32,
    },
    /// MRSIGNERSEAM/SEAM attributes do not match the TCB info's TDX module.
    #[error("TDX module signer or attributes do not match the TCB info")]
    TdxModuleMismatch,
    /// No TDX module identity for this module version.
    #[error("no TDX module identity {0} in the TCB info")]
    TdxModuleIdentityNotFound(String),
    /// Module SVN below every level.
    #[error("TDX module {id} SVN {svn} is below every TCB level")]
    TdxModuleTcbNotSupported {
        /// Identity id.
        id: String,
        /// SVN.
        svn: u8,
    },
    /// Platform TCB below every level.
    #[error(
        "platform TCB (PCK SGX SVNs {sgx:?}, PCESVN {pce}, TEE_TCB_SVN {tee}) matches no TCB level: TCB level not supported"
    )]
    TcbLevelNotSupported {
        /// PCK SGX SVNs.
        sgx: [u16; 16],
        /// PCE SVN.
        pce: u16,
        /// TEE_TCB_SVN hex.
        tee: String,
    },
    /// QE identity does not match the QE report.
    #[error("QE report does not match the QE identity ({0})")]
    QeIdentityMismatch(&'static str),
    /// QE SVN below every level.
    #[error("QE ISVSVN {0} is below every QE identity TCB level")]
    QeTcbNotSupported(u16),
    /// Collateral needed for a TCB status is missing (what is missing).
    #[error(
        "the policy requires a TCB status, but the collateral lacks {}: give TCB info, QE identity, PCK CRL and Intel SGX Root CA CRL (or set accepted_tcb_status to [])",
        .0.join(", ")
    )]
    CollateralMissing(Vec<String>),
    /// The collateral's tcbEvaluationDataNumber is below the policy minimum.
    #[error(
        "{what} tcbEvaluationDataNumber {got} is below the policy minimum {min} (policy.tdx.minimum_tcb_evaluation_data_number): the collateral predates the required TCB recovery"
    )]
    TcbEvaluationDataNumber {
        /// "TCB info" or "QE identity".
        what: &'static str,
        /// Number in the collateral (0 when absent).
        got: u32,
        /// Policy minimum.
        min: u32,
    },
    /// TCB status not accepted.
    #[error("TCB status {status} not accepted (accepted: {accepted:?})")]
    TcbStatus {
        /// Status.
        status: String,
        /// Accepted.
        accepted: Vec<String>,
    },
    /// QE vendor ID not accepted.
    #[error("QE vendor ID {0} not accepted")]
    QeVendorId(String),
    /// QE SVN too low.
    #[error("QE SVN {got} below minimum {min}")]
    QeSvn {
        /// Got.
        got: u16,
        /// Min.
        min: u16,
    },
    /// PCE SVN too low.
    #[error("PCE SVN {got} below minimum {min}")]
    PceSvn {
        /// Got.
        got: u16,
        /// Min.
        min: u16,
    },
    /// TEE TCB SVN too low.
    #[error("TEE_TCB_SVN {got} below minimum {min}")]
    TeeTcbSvn {
        /// Got.
        got: String,
        /// Min.
        min: String,
    },
    /// MRSEAM not accepted.
    #[error("MRSEAM {0} not accepted")]
    Mrseam(String),
    /// XFAM differs.
    #[error("XFAM {got} differs from policy {expected}")]
    Xfam {
        /// Expected.
        expected: String,
        /// Got.
        got: String,
    },
    /// MRTD not accepted.
    #[error("MRTD {0} not accepted")]
    Mrtd(String),
    /// TD has debug enabled.
    #[error("TD attributes {0} have DEBUG set")]
    Debug(String),
    /// REPORT_DATA differs.
    #[error("REPORT_DATA {got} differs from expected {expected}")]
    ReportData {
        /// Expected.
        expected: String,
        /// Got.
        got: String,
    },
}

/// Intel TCB statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum TcbStatus {
    /// UpToDate.
    UpToDate,
    /// SWHardeningNeeded.
    SWHardeningNeeded,
    /// ConfigurationNeeded.
    ConfigurationNeeded,
    /// ConfigurationAndSWHardeningNeeded.
    ConfigurationAndSWHardeningNeeded,
    /// OutOfDate.
    OutOfDate,
    /// OutOfDateConfigurationNeeded.
    OutOfDateConfigurationNeeded,
    /// Revoked.
    Revoked,
}

impl TcbStatus {
    /// Parses Intel's name; unknown names are treated as Revoked (fail closed).
    pub fn from_name(s: &str) -> Self {
        match s {
            "UpToDate" => TcbStatus::UpToDate,
            "SWHardeningNeeded" => TcbStatus::SWHardeningNeeded,
            "ConfigurationNeeded" => TcbStatus::ConfigurationNeeded,
            "ConfigurationAndSWHardeningNeeded" => TcbStatus::ConfigurationAndSWHardeningNeeded,
            "OutOfDate" => TcbStatus::OutOfDate,
            "OutOfDateConfigurationNeeded" => TcbStatus::OutOfDateConfigurationNeeded,
            _ => TcbStatus::Revoked,
        }
    }
    /// Intel's name.
    pub fn name(self) -> &'static str {
        match self {
            TcbStatus::UpToDate => "UpToDate",
            TcbStatus::SWHardeningNeeded => "SWHardeningNeeded",
            TcbStatus::ConfigurationNeeded => "ConfigurationNeeded",
            TcbStatus::ConfigurationAndSWHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            TcbStatus::OutOfDate => "OutOfDate",
            TcbStatus::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            TcbStatus::Revoked => "Revoked",
        }
    }
    /// Combines platform, module and QE statuses (the worst wins; out-of-date plus
    /// configuration-needed gives OutOfDateConfigurationNeeded).
    pub fn combine(self, other: TcbStatus) -> TcbStatus {
        use TcbStatus::*;
        let s = [self, other];
        if s.contains(&Revoked) {
            return Revoked;
        }
        let ood = s
            .iter()
            .any(|x| matches!(x, OutOfDate | OutOfDateConfigurationNeeded));
        let cfg = s.iter().any(|x| {
            matches!(
                x,
                ConfigurationNeeded
                    | ConfigurationAndSWHardeningNeeded
                    | OutOfDateConfigurationNeeded
            )
        });
        let sw = s
            .iter()
            .any(|x| matches!(x, SWHardeningNeeded | ConfigurationAndSWHardeningNeeded));
        match (ood, cfg, sw) {
            (true, true, _) => OutOfDateConfigurationNeeded,
            (true, false, _) => OutOfDate,
            (false, true, true) => ConfigurationAndSWHardeningNeeded,
            (false, true, false) => ConfigurationNeeded,
            (false, false, true) => SWHardeningNeeded,
            _ => UpToDate,
        }
    }
}

/// Raw collateral as fetched from PCS (or read from a directory).
#[derive(Debug, Clone, Default)]
pub struct CollateralFiles {
    /// TCB info response body.
    pub tcb_info: Option<Vec<u8>>,
    /// QE identity response body.
    pub qe_identity: Option<Vec<u8>>,
    /// TCB signing chain (PEM: signing cert, root).
    pub tcb_signing_chain: Option<Vec<u8>>,
    /// PCK CRL (DER or PEM).
    pub pck_crl: Option<Vec<u8>>,
    /// Root CA CRL (DER or PEM).
    pub root_ca_crl: Option<Vec<u8>>,
}

/// Collateral whose signatures were verified once (cache this across quotes).
#[derive(Debug, Clone)]
pub struct VerifiedCollateral {
    tcb_info: Option<Signed<TcbInfo>>,
    qe_identity: Option<Signed<QeIdentity>>,
    pck_crl: Option<Crl>,
    root_crl: Option<Crl>,
}

/// Time references: `at` for the quote's PCK chain, `collateral_at` for collateral, its signing
/// chain and CRLs. None skips that validity check.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    /// Reference time for certificates of the quote.
    pub at: Option<OffsetDateTime>,
    /// Reference time for collateral.
    pub collateral_at: Option<OffsetDateTime>,
}

fn check_time(c: &Cert, at: Option<OffsetDateTime>, errs: &mut Vec<TdxError>) {
    if let Some(at) = at
        && !c.valid_at(at)
    {
        errs.push(TdxError::CertNotValidAt {
            subject: c.subject_cn().into(),
            at,
            not_before: c.not_before(),
            not_after: c.not_after(),
        });
    }
}

/// The trusted Intel root: pinned fingerprint or a root from policy.
#[derive(Debug, Clone)]
pub struct IntelRoot {
    sha256: [u8; 32],
}

impl IntelRoot {
    /// The pinned Intel SGX Root CA.
    pub fn pinned() -> Self {
        IntelRoot {
            sha256: INTEL_SGX_ROOT_SHA256,
        }
    }
    /// A root from PEM (policy override).
    pub fn from_pem(pem: &[u8]) -> Result<Self, CertError> {
        Ok(IntelRoot {
            sha256: Cert::from_pem_or_der(pem)?.sha256(),
        })
    }
    /// From policy.
    pub fn from_policy(p: &TdxPolicy) -> Result<Self, CertError> {
        match &p.root_ca_pem {
            Some(pem) => Self::from_pem(pem.as_bytes()),
            None => Ok(Self::pinned()),
        }
    }

    /// Verifies a chain `[leaf, intermediates…, root]` (each signed by the next, ECDSA P-256) and
    /// that the root is the trusted one. Returns the certificates.
    fn verify_chain(
        &self,
        chain: &'static str,
        pem: &[u8],
        at: Option<OffsetDateTime>,
        errs: &mut Vec<TdxError>,
    ) -> Result<Vec<Cert>, TdxError> {
        let certs = Cert::from_pem_bundle(pem)?;
        if certs.len() < 2 || certs.len() > 4 {
            return Err(TdxError::ChainShape {
                chain,
                count: certs.len(),
            });
        }
        let root = certs
            .last()
            .ok_or(TdxError::ChainShape { chain, count: 0 })?;
        if root.sha256() != self.sha256 {
            return Err(TdxError::UntrustedRoot {
                chain,
                subject: root.subject_cn().into(),
                sha256: hex::encode(root.sha256()),
            });
        }
        for w in certs.windows(2) {
            if let [c, issuer] = w
                && let Err(e) = c.verify_ecdsa_p256_by(issuer)
            {
                errs.push(e.into());
            }
        }
        if let Err(e) = root.verify_ecdsa_p256_by(root) {
            errs.push(e.into());
        }
        // A fixed-shape chain ending in a root pinned by hash: checked as a list (naming every
        // failing certificate) with the RFC 5280 role constraints, so a PCK or TCB-signing leaf
        // key can never act as an issuer.
        let path: Vec<&Cert> = certs.iter().collect();
        errs.extend(
            crate::certs::x509::path_constraint_errors(&path)
                .into_iter()
                .map(TdxError::from),
        );
        for c in &certs {
            check_time(c, at, errs);
        }
        Ok(certs)
    }
}

fn sig_from_rs(rs: &[u8; 64]) -> Option<Signature> {
    Signature::from_slice(rs).ok()
}

/// Verifies collateral signatures, chain and validity once.
pub fn verify_collateral(
    files: &CollateralFiles,
    root: &IntelRoot,
    collateral_at: Option<OffsetDateTime>,
) -> Result<VerifiedCollateral, Vec<TdxError>> {
    let mut errs = Vec::new();
    let tcb_info = match &files.tcb_info {
        Some(b) => Some(super::collateral::parse_tcb_info(b).map_err(|e| vec![e.into()])?),
        None => None,
    };
    let qe_identity = match &files.qe_identity {
        Some(b) => Some(super::collateral::parse_qe_identity(b).map_err(|e| vec![e.into()])?),
        None => None,
    };
    let mut chain = Vec::new();
    if tcb_info.is_some() || qe_identity.is_some() {
        let Some(pem) = &files.tcb_signing_chain else {
            return Err(vec![TdxError::ChainShape {
                chain: "TCB signing",
                count: 0,
            }]);
        };
        chain = root
            .verify_chain("TCB signing", pem, collateral_at, &mut errs)
            .map_err(|e| vec![e])?;
    }
    let signer_key = chain.first().map(|c| c.p256_key());
    let mut check_doc = |what: &'static str, bytes: &[u8], sig: &[u8; 64], issue, next| {
        let ok = match (&signer_key, sig_from_rs(sig)) {
            (Some(Ok(k)), Some(s)) => k.verify(bytes, &s).is_ok(),
            _ => false,
        };
        if !ok {
            errs.push(TdxError::CollateralSignature(what));
        }
        if let Some(at) = collateral_at
            && !(issue <= at && at <= next)
        {
            errs.push(TdxError::CollateralNotValidAt {
                what,
                at,
                issue,
                next,
            });
        }
    };
    if let Some(t) = &tcb_info {
        check_doc(
            "TCB info",
            &t.signed_bytes,
            &t.signature,
            t.issue_date,
            t.next_update,
        );
    }
    if let Some(q) = &qe_identity {
        check_doc(
            "QE identity",
            &q.signed_bytes,
            &q.signature,
            q.issue_date,
            q.next_update,
        );
    }
    let pck_crl = match &files.pck_crl {
        Some(b) => Some(Crl::parse(b).map_err(|e| vec![e.into()])?),
        None => None,
    };
    let root_crl = match &files.root_ca_crl {
        Some(b) => Some(Crl::parse(b).map_err(|e| vec![e.into()])?),
        None => None,
    };
    for c in pck_crl.iter().chain(root_crl.iter()) {
        if let Some(at) = collateral_at
            && !c.valid_at(at)
        {
            errs.push(TdxError::CrlNotValidAt(c.issuer_cn().into()));
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(VerifiedCollateral {
        tcb_info,
        qe_identity,
        pck_crl,
        root_crl,
    })
}

/// What the policy demands of the collateral beyond its signatures: both CRLs when a TCB status
/// is required (without them a revoked PCK would pass), and a minimum tcbEvaluationDataNumber
/// (else an older, still unexpired TCB info from before a TCB recovery would pass).
fn collateral_policy_errors(
    col: &VerifiedCollateral,
    policy: &TdxPolicy,
    errs: &mut Vec<TdxError>,
) {
    if !policy.accepted_tcb_status.is_empty() {
        let mut missing = Vec::new();
        if col.pck_crl.is_none() {
            missing.push("PCK CRL".to_string());
        }
        if col.root_crl.is_none() {
            missing.push("root CA CRL".to_string());
        }
        if !missing.is_empty() {
            errs.push(TdxError::CollateralMissing(missing));
        }
    }
    let min = policy.minimum_tcb_evaluation_data_number;
    if min > 0 {
        let numbers = [
            (
                "TCB info",
                col.tcb_info
                    .as_ref()
                    .map(|t| t.body.tcb_evaluation_data_number),
            ),
            (
                "QE identity",
                col.qe_identity
                    .as_ref()
                    .map(|q| q.body.tcb_evaluation_data_number.unwrap_or(0)),
            ),
        ];
        for (what, n) in numbers {
            match n {
                Some(got) if got < min => {
                    errs.push(TdxError::TcbEvaluationDataNumber { what, got, min })
                }
                Some(_) => {}
                None => errs.push(TdxError::CollateralMissing(vec![what.to_string()])),
            }
        }
    }
}

/// Verified claims of a TDX quote.
#[derive(Debug, Clone, Serialize)]
pub struct VerifiedTdx {
    /// Quote version.
    pub quote_version: u16,
    /// TCB status (None if no collateral was given).
    pub tcb_status: Option<TcbStatus>,
    /// Advisory IDs of the matched levels.
    pub advisory_ids: Vec<String>,
    /// FMSPC (hex).
    pub fmspc: String,
    /// PCE SVN.
    pub pce_svn: u16,
    /// QE SVN.
    pub qe_svn: u16,
    /// TEE_TCB_SVN (hex).
    pub tee_tcb_svn: String,
    /// MRSEAM (hex).
    pub mrseam: String,
    /// TD attributes (hex).
    pub td_attributes: String,
    /// XFAM (hex).
    pub xfam: String,
    /// MRTD (hex).
    pub mrtd: String,
    /// MRCONFIGID (hex).
    pub mrconfigid: String,
    /// MROWNER (hex).
    pub mrowner: String,
    /// MROWNERCONFIG (hex).
    pub mrownerconfig: String,
    /// RTMR0..3 (hex).
    pub rtmr: [String; 4],
    /// REPORT_DATA (hex).
    pub report_data: String,
}

#[derive(Clone)]
struct VerifiedPck {
    key: VerifyingKey,
    info: PckInfo,
    pck: Cert,
    intermediate: Cert,
    root: Cert,
}

/// A TDX verifier holding the root, verified collateral and a cache of verified PCK chains.
pub struct TdxVerifier {
    root: IntelRoot,
    collateral: Option<VerifiedCollateral>,
    times: Times,
    pck_cache: Mutex<HashMap<[u8; 32], VerifiedPck>>,
}

impl std::fmt::Debug for TdxVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TdxVerifier")
            .field("times", &self.times)
            .finish_non_exhaustive()
    }
}

fn hex_eq_masked(
    what: &'static str,
    value: &[u8],
    expected_hex: &str,
    mask_hex: &str,
) -> Result<bool, TdxError> {
    let e = hex::decode(expected_hex).map_err(|_| TdxError::QeIdentityMismatch(what))?;
    let m = hex::decode(mask_hex).map_err(|_| TdxError::QeIdentityMismatch(what))?;
    if e.len() != value.len() || m.len() != value.len() {
        return Ok(false);
    }
    Ok(value
        .iter()
        .zip(m.iter())
        .zip(e.iter())
        .all(|((v, m), e)| v & m == *e))
}

fn isv_level(levels: &[IsvLevel], svn: u16) -> Option<&IsvLevel> {
    levels.iter().find(|l| l.tcb.isvsvn <= svn)
}

impl TdxVerifier {
    /// A verifier; `collateral` None means signatures and chain only (no TCB status).
    pub fn new(root: IntelRoot, collateral: Option<VerifiedCollateral>, times: Times) -> Self {
        TdxVerifier {
            root,
            collateral,
            times,
            pck_cache: Mutex::new(HashMap::new()),
        }
    }

    fn pck(&self, quote: &Quote, errs: &mut Vec<TdxError>) -> Result<VerifiedPck, TdxError> {
        let h: [u8; 32] = Sha256::digest(&quote.pck_chain_pem).into();
        if let Ok(c) = self.pck_cache.lock()
            && let Some(v) = c.get(&h)
        {
            return Ok(v.clone());
        }
        let mut local = Vec::new();
        let certs =
            self.root
                .verify_chain("PCK", &quote.pck_chain_pem, self.times.at, &mut local)?;
        let (Some(pck), Some(intermediate), Some(root)) =
            (certs.first(), certs.get(1), certs.last())
        else {
            return Err(TdxError::ChainShape {
                chain: "PCK",
                count: certs.len(),
            });
        };
        let ext = pck.extension(OID_SGX_EXT).ok_or(TdxError::Collateral(
            CollateralError::PckExtension("SGX extension"),
        ))?;
        let info = parse_pck_extension(ext)?;
        let v = VerifiedPck {
            key: pck.p256_key()?,
            info,
            pck: pck.clone(),
            intermediate: intermediate.clone(),
            root: root.clone(),
        };
        if local.is_empty() {
            if let Ok(mut c) = self.pck_cache.lock() {
                c.insert(h, v.clone());
            }
        } else {
            errs.extend(local);
        }
        Ok(v)
    }

    /// Verifies a quote against the policy; lists every failing check.
    pub fn verify(
        &self,
        quote_bytes: &[u8],
        policy: &TdxPolicy,
    ) -> Result<VerifiedTdx, Vec<TdxError>> {
        let quote = Quote::parse(quote_bytes).map_err(|e| vec![e.into()])?;
        let mut errs = Vec::new();
        // Quote signature by the attestation key.
        let mut point = [0u8; 65];
        point[0] = 4;
        point[1..].copy_from_slice(&quote.attest_key);
        match VerifyingKey::from_sec1_bytes(&point) {
            Ok(ak) => {
                if sig_from_rs(&quote.signature)
                    .is_none_or(|s| ak.verify(&quote.signed, &s).is_err())
                {
                    errs.push(TdxError::QuoteSignature);
                }
            }
            Err(_) => errs.push(TdxError::AttestationKey),
        }
        // AK binding in the QE report.
        let mut h = Sha256::new();
        h.update(quote.attest_key);
        h.update(&quote.qe_auth_data);
        let bind: [u8; 32] = h.finalize().into();
        let rd = &quote.qe_report.report_data;
        if rd.get(..32) != Some(&bind[..]) || rd.get(32..).is_none_or(|r| r.iter().any(|b| *b != 0))
        {
            errs.push(TdxError::AttestationKeyBinding);
        }
        let pck = match self.pck(&quote, &mut errs) {
            Ok(p) => Some(p),
            Err(e) => {
                errs.push(e);
                None
            }
        };
        if let Some(p) = &pck
            && sig_from_rs(&quote.qe_report_signature)
                .is_none_or(|s| p.key.verify(&quote.qe_report.raw, &s).is_err())
        {
            errs.push(TdxError::QeReportSignature);
        }
        let body = &quote.body;
        let mut status = None;
        let mut advisories = Vec::new();
        match (&self.collateral, &pck) {
            (Some(col), Some(p)) => match self.tcb_status(col, p, &quote, &mut advisories) {
                Ok(s) => status = Some(s),
                Err(e) => errs.extend(e),
            },
            (None, _) if !policy.accepted_tcb_status.is_empty() => {
                errs.push(TdxError::CollateralMissing(
                    ["TCB info", "QE identity", "PCK CRL", "root CA CRL"]
                        .map(String::from)
                        .to_vec(),
                ));
            }
            _ => {}
        }
        if let Some(col) = &self.collateral {
            collateral_policy_errors(col, policy, &mut errs);
        } else if policy.minimum_tcb_evaluation_data_number > 0
            && policy.accepted_tcb_status.is_empty()
        {
            errs.push(TdxError::CollateralMissing(vec![
                "TCB info and QE identity (policy.tdx.minimum_tcb_evaluation_data_number is set)"
                    .into(),
            ]));
        }
        if let Some(s) = status
            && !policy.accepted_tcb_status.is_empty()
            && !policy.accepted_tcb_status.iter().any(|a| a == s.name())
        {
            errs.push(TdxError::TcbStatus {
                status: s.name().into(),
                accepted: policy.accepted_tcb_status.clone(),
            });
        }
        if quote.qe_vendor_id != policy.qe_vendor_id.0 {
            errs.push(TdxError::QeVendorId(hex::encode(quote.qe_vendor_id)));
        }
        if quote.qe_report.isv_svn < policy.minimum_qe_svn {
            errs.push(TdxError::QeSvn {
                got: quote.qe_report.isv_svn,
                min: policy.minimum_qe_svn,
            });
        }
        let pce_svn = pck.as_ref().map(|p| p.info.pce_svn).unwrap_or(0);
        if pce_svn < policy.minimum_pce_svn {
            errs.push(TdxError::PceSvn {
                got: pce_svn,
                min: policy.minimum_pce_svn,
            });
        }
        if let Some(min) = &policy.minimum_tee_tcb_svn
            && body
                .tee_tcb_svn
                .iter()
                .zip(min.0.iter())
                .any(|(g, m)| g < m)
        {
            errs.push(TdxError::TeeTcbSvn {
                got: hex::encode(body.tee_tcb_svn),
                min: hex::encode(min.0),
            });
        }
        if !policy.mrseam.is_empty() && !policy.mrseam.iter().any(|m| m.0 == body.mrseam) {
            errs.push(TdxError::Mrseam(hex::encode(body.mrseam)));
        }
        if let Some(x) = &policy.xfam
            && x.0 != body.xfam
        {
            errs.push(TdxError::Xfam {
                expected: hex::encode(x.0),
                got: hex::encode(body.xfam),
            });
        }
        if !policy.mrtd.is_empty() && !policy.mrtd.iter().any(|m| m.0 == body.mrtd) {
            errs.push(TdxError::Mrtd(hex::encode(body.mrtd)));
        }
        if policy.reject_debug && body.debug() {
            errs.push(TdxError::Debug(hex::encode(body.td_attributes)));
        }
        if let Some(r) = &policy.report_data
            && r.0 != body.report_data
        {
            errs.push(TdxError::ReportData {
                expected: hex::encode(r.0),
                got: hex::encode(body.report_data),
            });
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(VerifiedTdx {
            quote_version: quote.version,
            tcb_status: status,
            advisory_ids: advisories,
            fmspc: pck
                .as_ref()
                .map(|p| hex::encode(p.info.fmspc))
                .unwrap_or_default(),
            pce_svn,
            qe_svn: quote.qe_report.isv_svn,
            tee_tcb_svn: hex::encode(body.tee_tcb_svn),
            mrseam: hex::encode(body.mrseam),
            td_attributes: hex::encode(body.td_attributes),
            xfam: hex::encode(body.xfam),
            mrtd: hex::encode(body.mrtd),
            mrconfigid: hex::encode(body.mrconfigid),
            mrowner: hex::encode(body.mrowner),
            mrownerconfig: hex::encode(body.mrownerconfig),
            rtmr: body.rtmr.map(hex::encode),
            report_data: hex::encode(body.report_data),
        })
    }

    fn tcb_status(
        &self,
        col: &VerifiedCollateral,
        p: &VerifiedPck,
        quote: &Quote,
        advisories: &mut Vec<String>,
    ) -> Result<TcbStatus, Vec<TdxError>> {
        let mut errs = Vec::new();
        // Revocation.
        if let Some(crl) = &col.pck_crl {
            if crl.issuer_cn() != p.intermediate.subject_cn() {
                errs.push(TdxError::CrlIssuer {
                    crl: crl.issuer_cn().into(),
                    cert: p.pck.subject_cn().into(),
                });
            } else if let Err(e) = crl.verify_ecdsa_p256_by(&p.intermediate) {
                errs.push(e.into());
            } else if crl.is_revoked(&p.pck) {
                errs.push(TdxError::Revoked(p.pck.subject_cn().into()));
            }
        }
        if let Some(crl) = &col.root_crl {
            // The root CRL lists revoked intermediates and is signed by the (pinned) root.
            if let Err(e) = crl.verify_ecdsa_p256_by(&p.root) {
                errs.push(e.into());
            } else if crl.is_revoked(&p.intermediate) {
                errs.push(TdxError::Revoked(p.intermediate.subject_cn().into()));
            }
        }
        let (Some(ti), Some(qi)) = (&col.tcb_info, &col.qe_identity) else {
            errs.push(TdxError::CollateralMissing(vec![
                "TCB info and QE identity".into(),
            ]));
            return Err(errs);
        };
        let ti = &ti.body;
        if ti.version != 3 || (!ti.id.is_empty() && ti.id != "TDX") {
            errs.push(TdxError::TcbInfoKind {
                id: ti.id.clone(),
                version: ti.version,
            });
        }
        if !ti.fmspc.eq_ignore_ascii_case(&hex::encode(p.info.fmspc))
            || !ti.pce_id.eq_ignore_ascii_case(&hex::encode(p.info.pce_id))
        {
            errs.push(TdxError::FmspcMismatch {
                collateral: ti.fmspc.clone(),
                collateral_pce: ti.pce_id.clone(),
                pck: hex::encode(p.info.fmspc),
                pck_pce: hex::encode(p.info.pce_id),
            });
        }
        let body = &quote.body;
        if let Some(m) = &ti.tdx_module {
            let signer_ok = hex::decode(&m.mrsigner).is_ok_and(|s| s == body.mrsignerseam);
            let attr_ok = hex_eq_masked(
                "seam attributes",
                &body.seam_attributes,
                &m.attributes,
                &m.attributes_mask,
            )
            .unwrap_or(false);
            if !signer_ok || !attr_ok {
                errs.push(TdxError::TdxModuleMismatch);
            }
        }
        let tee = body.tee_tcb_svn;
        let module_version = tee[1];
        let tee_start = if module_version > 0 && !ti.tdx_module_identities.is_empty() {
            2
        } else {
            0
        };
        let level = ti.tcb_levels.iter().find(|l| {
            l.tcb.sgxtcbcomponents.len() == 16
                && l.tcb
                    .sgxtcbcomponents
                    .iter()
                    .zip(p.info.sgx_svns.iter())
                    .all(|(c, s)| c.svn <= *s)
                && l.tcb.pcesvn <= p.info.pce_svn
                && l.tcb.tdxtcbcomponents.len() == 16
                && l.tcb
                    .tdxtcbcomponents
                    .iter()
                    .zip(tee.iter())
                    .skip(tee_start)
                    .all(|(c, t)| c.svn <= u16::from(*t))
        });
        let mut status = match level {
            Some(l) => {
                advisories.extend(l.advisory_ids.iter().cloned());
                TcbStatus::from_name(&l.tcb_status)
            }
            None => {
                errs.push(TdxError::TcbLevelNotSupported {
                    sgx: p.info.sgx_svns,
                    pce: p.info.pce_svn,
                    tee: hex::encode(tee),
                });
                TcbStatus::Revoked
            }
        };
        if module_version > 0 && !ti.tdx_module_identities.is_empty() {
            let id = format!("TDX_{module_version:02X}");
            match ti.tdx_module_identities.iter().find(|m| m.id == id) {
                None => errs.push(TdxError::TdxModuleIdentityNotFound(id)),
                Some(m) => {
                    let signer_ok = hex::decode(&m.mrsigner).is_ok_and(|s| s == body.mrsignerseam);
                    let attr_ok = hex_eq_masked(
                        "seam attributes",
                        &body.seam_attributes,
                        &m.attributes,
                        &m.attributes_mask,
                    )
                    .unwrap_or(false);
                    if !signer_ok || !attr_ok {
                        errs.push(TdxError::TdxModuleMismatch);
                    }
                    match isv_level(&m.tcb_levels, u16::from(tee[0])) {
                        Some(l) => {
                            advisories.extend(l.advisory_ids.iter().cloned());
                            status = status.combine(TcbStatus::from_name(&l.tcb_status));
                        }
                        None => errs.push(TdxError::TdxModuleTcbNotSupported { id, svn: tee[0] }),
                    }
                }
            }
        }
        // QE identity.
        let qi = &qi.body;
        let qe = &quote.qe_report;
        if qi.id != "TD_QE" {
            errs.push(TdxError::QeIdentityMismatch("id is not TD_QE"));
        }
        if !hex::decode(&qi.mrsigner).is_ok_and(|m| m == qe.mrsigner) {
            errs.push(TdxError::QeIdentityMismatch("MRSIGNER"));
        }
        if qi.isvprodid != qe.isv_prod_id {
            errs.push(TdxError::QeIdentityMismatch("ISVPRODID"));
        }
        if !hex_eq_masked(
            "miscselect",
            &qe.miscselect,
            &qi.miscselect,
            &qi.miscselect_mask,
        )
        .unwrap_or(false)
        {
            errs.push(TdxError::QeIdentityMismatch("MISCSELECT"));
        }
        if !hex_eq_masked(
            "attributes",
            &qe.attributes,
            &qi.attributes,
            &qi.attributes_mask,
        )
        .unwrap_or(false)
        {
            errs.push(TdxError::QeIdentityMismatch("ATTRIBUTES"));
        }
        match isv_level(&qi.tcb_levels, qe.isv_svn) {
            Some(l) => {
                advisories.extend(l.advisory_ids.iter().cloned());
                status = status.combine(TcbStatus::from_name(&l.tcb_status));
            }
            None => errs.push(TdxError::QeTcbNotSupported(qe.isv_svn)),
        }
        if errs.is_empty() {
            Ok(status)
        } else {
            Err(errs)
        }
    }
}

/// One-shot helper: verify collateral then the quote.
pub fn verify_quote(
    quote: &[u8],
    collateral: Option<&CollateralFiles>,
    policy: &TdxPolicy,
    times: Times,
) -> Result<VerifiedTdx, Vec<TdxError>> {
    let root = IntelRoot::from_policy(policy).map_err(|e| vec![e.into()])?;
    let col = match collateral {
        Some(c) => Some(verify_collateral(c, &root, times.collateral_at)?),
        None => None,
    };
    TdxVerifier::new(root, col, times).verify(quote, policy)
}
