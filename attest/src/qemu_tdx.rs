//! qemu-tdx: a TD on QEMU/KVM attests with a bare Intel TDX quote (no vTPM).
//!
//! Evidence is [`TdxEvidence`]: the quote, optionally the CC event log and Intel PCS collateral.
//! The quote's REPORT_DATA must be SHA-256(user_data ‖ nonce) ‖ 32 zero bytes
//! ([`tdx_report_data`]). Measurements are indexed like upstream Constellation: 0 = MRTD,
//! 1..=4 = RTMR0..3, each 48 bytes. RTMR3 (index 4) is where the node extends the cluster ID
//! ([`crate::tdx::rtmr`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::document::{AttestationDocument, Evidence, TdxEvidence, tdx_report_data};
use crate::eventlog::EventLogError;
use crate::measurements::{Measurements, Mismatch};
use crate::policy::TdxPolicy;
use crate::tdx::{self, IntelRoot, TdxError, TdxVerifier, Times, VerifiedTdx};
use crate::validator::{PlatformClaims, ValidationError, Validator, VerifiedClaims};
use crate::variant::Variant;

/// Measurement index of MRTD.
pub const MRTD_INDEX: u32 = 0;
/// Measurement index of RTMR0 (RTMR n is at `RTMR0_INDEX + n`).
pub const RTMR0_INDEX: u32 = 1;

/// Why qemu-tdx hardware evidence is rejected (inside `ValidationError::Platform`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QemuTdxError {
    /// The quote or its collateral failed verification; every failed check is listed.
    #[error("TDX quote rejected: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Quote(Vec<TdxError>),
    /// The CC event log cannot be parsed.
    #[error("CC event log: {0}")]
    EventLog(#[from] EventLogError),
}

fn platform(e: QemuTdxError) -> ValidationError {
    ValidationError::Platform {
        variant: Variant::QemuTdx,
        source: Box::new(e),
    }
}

/// The measurements of a verified quote: MRTD at 0, RTMR0..3 at 1..=4.
pub fn measurements_of(v: &VerifiedTdx) -> BTreeMap<u32, Vec<u8>> {
    let mut m = BTreeMap::new();
    m.insert(MRTD_INDEX, hex::decode(&v.mrtd).unwrap_or_default());
    for (i, r) in (0u32..).zip(v.rtmr.iter()) {
        m.insert(RTMR0_INDEX + i, hex::decode(r).unwrap_or_default());
    }
    m
}

/// Checks qemu-tdx documents: quote signature, QE report, PCK chain to the Intel root (pinned or
/// from policy), collateral and TCB status when the policy asks for one, the TDX policy, the
/// nonce/user-data binding in REPORT_DATA, the measurements and, when present, the event log.
#[derive(Debug, Clone)]
pub struct QemuTdxValidator {
    measurements: Measurements,
    policy: TdxPolicy,
    root: IntelRoot,
    cache: Arc<Mutex<Option<CachedVerifier>>>,
}

/// How long a verifier with checked collateral and PCK chains is reused. Validity windows are
/// then judged up to this much late — negligible against collateral lifetimes of weeks.
pub const VERIFIER_TTL: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct CachedVerifier {
    collateral_sha256: [u8; 32],
    built: Instant,
    verifier: Arc<TdxVerifier>,
}

fn collateral_key(c: Option<&crate::document::TdxCollateral>) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    if let Some(c) = c {
        for part in [
            &c.tcb_info,
            &c.qe_identity,
            &c.tcb_signing_chain,
            &c.pck_crl,
            &c.root_ca_crl,
        ] {
            match part {
                Some(b) => {
                    h.update([1]);
                    h.update((b.len() as u64).to_le_bytes());
                    h.update(b);
                }
                None => h.update([0]),
            }
        }
    }
    h.finalize().into()
}

impl QemuTdxValidator {
    /// A validator expecting `measurements` under `policy`.
    pub fn new(
        measurements: Measurements,
        policy: TdxPolicy,
    ) -> Result<Self, crate::certs::CertError> {
        let root = IntelRoot::from_policy(&policy)?;
        Ok(Self {
            measurements,
            policy,
            root,
            cache: Arc::new(Mutex::new(None)),
        })
    }

    fn build_verifier(
        &self,
        ev: &TdxEvidence,
        at: Option<time::OffsetDateTime>,
    ) -> Result<TdxVerifier, ValidationError> {
        let collateral = match &ev.collateral {
            Some(c) => Some(
                tdx::verify_collateral(&c.to_files(), &self.root, at)
                    .map_err(|e| platform(QemuTdxError::Quote(e)))?,
            ),
            None => None,
        };
        Ok(TdxVerifier::new(
            self.root.clone(),
            collateral,
            Times {
                at,
                collateral_at: at,
            },
        ))
    }

    /// A verifier for the evidence's collateral at the current time, reused for
    /// [`VERIFIER_TTL`] while the collateral stays the same (one chain and collateral check
    /// per node and period instead of per document).
    fn current_verifier(&self, ev: &TdxEvidence) -> Result<Arc<TdxVerifier>, ValidationError> {
        let key = collateral_key(ev.collateral.as_ref());
        if let Ok(c) = self.cache.lock()
            && let Some(c) = c.as_ref()
            && c.collateral_sha256 == key
            && c.built.elapsed() < VERIFIER_TTL
        {
            return Ok(c.verifier.clone());
        }
        let v = Arc::new(self.build_verifier(ev, Some(time::OffsetDateTime::now_utc()))?);
        if let Ok(mut c) = self.cache.lock() {
            *c = Some(CachedVerifier {
                collateral_sha256: key,
                built: Instant::now(),
                verifier: v.clone(),
            });
        }
        Ok(v)
    }

    /// Validates TDX evidence at the reference time `at` (certificates and collateral).
    pub fn validate_tdx_at(
        &self,
        user_data: &[u8],
        ev: &TdxEvidence,
        nonce: &[u8],
        at: Option<time::OffsetDateTime>,
    ) -> Result<VerifiedClaims, ValidationError> {
        let verifier = self.build_verifier(ev, at)?;
        self.check(&verifier, user_data, ev, nonce)
    }

    fn check(
        &self,
        verifier: &TdxVerifier,
        user_data: &[u8],
        ev: &TdxEvidence,
        nonce: &[u8],
    ) -> Result<VerifiedClaims, ValidationError> {
        let verified = verifier
            .verify(&ev.quote, &self.policy)
            .map_err(|e| platform(QemuTdxError::Quote(e)))?;

        let expected = tdx_report_data(user_data, nonce);
        if verified.report_data != hex::encode(expected) {
            return Err(ValidationError::NonceOrUserDataMismatch {
                expected: hex::encode(expected),
                got: verified.report_data.clone(),
            });
        }

        let registers = measurements_of(&verified);
        let cmp = self.measurements.compare(&registers);
        if !cmp.errors.is_empty() {
            return Err(ValidationError::MeasurementMismatch(cmp.errors));
        }

        let mut event_log_verified = false;
        if let Some(log) = &ev.event_log {
            let replayed =
                tdx::ccel::replay_rtmrs(log).map_err(|e| platform(QemuTdxError::EventLog(e)))?;
            let bad: Vec<Mismatch> = (0u32..)
                .zip(replayed.iter())
                // The firmware log does not record the node's runtime cluster-ID extension. When
                // the log has no event for that RTMR, the register holds only runtime
                // extensions, which the measurements (index 4) check instead.
                .filter(|(i, value)| {
                    !(*i == tdx::rtmr::CLUSTER_ID_RTMR && **value == [0u8; tdx::rtmr::RTMR_LEN])
                })
                .filter_map(|(i, value)| {
                    let quoted = registers.get(&(RTMR0_INDEX + i))?;
                    (quoted.as_slice() != value).then(|| Mismatch {
                        index: RTMR0_INDEX + i,
                        expected: quoted.clone(),
                        got: Some(value.to_vec()),
                    })
                })
                .collect();
            if !bad.is_empty() {
                return Err(ValidationError::EventLogReplayMismatch(bad));
            }
            event_log_verified = true;
        }

        let claims = serde_json::to_value(&verified).unwrap_or_default();
        Ok(VerifiedClaims {
            variant: Variant::QemuTdx,
            user_data: user_data.to_vec(),
            measurements: registers,
            warnings: cmp.warnings,
            platform: PlatformClaims::HardwareVerified { claims },
            event_log_verified,
        })
    }
}

impl Validator for QemuTdxValidator {
    fn variant(&self) -> Variant {
        Variant::QemuTdx
    }

    fn validate(
        &self,
        doc: &AttestationDocument,
        nonce: &[u8],
    ) -> Result<VerifiedClaims, ValidationError> {
        if doc.variant != Variant::QemuTdx {
            return Err(ValidationError::VariantMismatch {
                expected: Variant::QemuTdx,
                got: doc.variant,
            });
        }
        match &doc.evidence {
            Evidence::Tdx(ev) => {
                let verifier = self.current_verifier(ev)?;
                self.check(&verifier, &doc.user_data, ev, nonce)
            }
            other => Err(ValidationError::EvidenceKindMismatch {
                variant: Variant::QemuTdx,
                expected: "tdx",
                got: other.kind(),
            }),
        }
    }
}

/// Where the qemu-tdx issuer gets collateral for its quotes (e.g. [`crate::certs::fetch::Pcs`]).
pub trait CollateralSource: Send + Sync {
    /// Collateral for the platform with this FMSPC.
    fn collateral(
        &self,
        fmspc: &[u8; 6],
    ) -> Result<crate::tdx::CollateralFiles, crate::certs::fetch::FetchError>;
}

impl CollateralSource for crate::certs::fetch::Pcs {
    fn collateral(
        &self,
        fmspc: &[u8; 6],
    ) -> Result<crate::tdx::CollateralFiles, crate::certs::fetch::FetchError> {
        self.tdx_collateral(fmspc)
    }
}

#[cfg(feature = "issuer")]
pub use issuer::QemuTdxIssuer;

/// Node side: the issuer (configfs-tsm), compiled only with the `issuer` feature.
#[cfg(feature = "issuer")]
mod issuer {
    use serde::Serialize;

    use super::{CollateralSource, quote_fmspc};
    use crate::document::{AttestationDocument, Evidence, TdxEvidence, tdx_report_data};
    use crate::validator::{IssueError, Issuer};
    use crate::variant::Variant;

    /// The qemu-tdx issuer: a quote from configfs-tsm with REPORT_DATA binding user data and nonce,
    /// plus the CC event log and collateral when configured.
    pub struct QemuTdxIssuer {
        /// The configfs-tsm report interface.
        pub tsm: crate::tsm::ConfigFsTsm,
        /// The CC event log (e.g. `/sys/firmware/acpi/tables/data/CCEL`), if the guest exposes it.
        pub event_log: Option<std::path::PathBuf>,
        /// Collateral to attach; a failure to fetch it is logged and the quote sent without it.
        pub collateral: Option<Box<dyn CollateralSource>>,
    }

    impl std::fmt::Debug for QemuTdxIssuer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("QemuTdxIssuer")
                .field("tsm", &self.tsm)
                .field("event_log", &self.event_log)
                .finish_non_exhaustive()
        }
    }

    /// What the issuer attaches, for logs.
    #[derive(Debug, Serialize)]
    struct IssuedTdx<'a> {
        quote_len: usize,
        event_log: bool,
        collateral: bool,
        provider: &'a str,
    }

    impl Issuer for QemuTdxIssuer {
        fn variant(&self) -> Variant {
            Variant::QemuTdx
        }

        fn issue(&self, user_data: &[u8], nonce: &[u8]) -> Result<AttestationDocument, IssueError> {
            let report_data = tdx_report_data(user_data, nonce);
            let out = self.tsm.report(&report_data, None)?;
            if out.provider != "tdx_guest" {
                return Err(IssueError::Platform {
                    variant: Variant::QemuTdx,
                    source: format!(
                        "configfs-tsm provider is {:?}, not tdx_guest: this is not a TDX guest",
                        out.provider
                    )
                    .into(),
                });
            }
            let event_log = match &self.event_log {
                Some(p) => Some(serde_bytes::ByteBuf::from(std::fs::read(p).map_err(
                    |source| IssueError::Io {
                        what: p.display().to_string(),
                        source,
                    },
                )?)),
                None => None,
            };
            let collateral = self.collateral.as_ref().and_then(|src| {
                let fmspc = quote_fmspc(&out.outblob)?;
                match src.collateral(&fmspc) {
                    Ok(c) => Some(crate::document::TdxCollateral::from_files(&c)),
                    Err(e) => {
                        tracing::warn!(error = %e, "TDX collateral unavailable; sending the quote without it");
                        None
                    }
                }
            });
            tracing::debug!(issued = ?IssuedTdx {
                quote_len: out.outblob.len(),
                event_log: event_log.is_some(),
                collateral: collateral.is_some(),
                provider: &out.provider,
            });
            Ok(AttestationDocument::new(
                Variant::QemuTdx,
                user_data.to_vec(),
                Evidence::Tdx(TdxEvidence {
                    quote: out.outblob,
                    event_log,
                    collateral,
                }),
            ))
        }
    }
}

/// The FMSPC from the PCK certificate in a quote's certification data (to fetch collateral).
pub fn quote_fmspc(quote: &[u8]) -> Option<[u8; 6]> {
    let q = crate::tdx::Quote::parse(quote).ok()?;
    let certs = crate::certs::Cert::from_pem_bundle(&q.pck_chain_pem).ok()?;
    let ext = certs
        .first()?
        .extension(crate::tdx::collateral::OID_SGX_EXT)?;
    crate::tdx::collateral::parse_pck_extension(ext)
        .ok()
        .map(|i| i.fmspc)
}
