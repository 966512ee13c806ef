//! Node-side TPM issuer (feature `tpm`): obtains the variant's attestation key ([`AkSource`]),
//! quotes the SHA-256 PCR bank, reads PCRs, attaches the event log, and extends PCRs.
//!
//! tss-esapi's `Context` is not `Send`, and swtpm serves one connection at a time, so one worker
//! thread owns the TPM connection and serves requests over a channel.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use serde_bytes::ByteBuf;
use tss_esapi::Context;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PcrHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{
    EccSchemeAlgorithm, HashingAlgorithm, PublicAlgorithm, RsaSchemeAlgorithm,
};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    CapabilityData, Data, Digest, DigestValues, EccPoint, EccScheme, KeyDerivationFunctionScheme,
    PcrSelectionListBuilder, PcrSlot, Public, PublicBuilder, PublicEccParametersBuilder,
    PublicKeyRsa, PublicRsaParametersBuilder, RsaExponent, RsaScheme, SignatureScheme,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};

use crate::document::{
    AttestationDocument, Evidence, TpmEvidence, extra_data, tpm_qualifying_data,
};
use crate::validator::{InstanceInfoSource, IssueError, Issuer};
use crate::variant::Variant;

/// NV index of the Azure CVM HCL report (SNP report or TDREPORT plus runtime claims).
pub const AZURE_HCL_REPORT_NV_INDEX: u32 = 0x0140_0001;
/// NV index of the Azure trusted-launch vTPM AK certificate.
pub const AZURE_AK_CERT_NV_INDEX: u32 = 0x01C1_01D0;
/// NV index of the GCE vTPM RSA AK certificate.
pub const GCE_AK_CERT_RSA_NV_INDEX: u32 = 0x01C1_0000;
/// NV index of the GCE vTPM ECC AK certificate.
pub const GCE_AK_CERT_ECC_NV_INDEX: u32 = 0x01C1_0002;
/// NV index of the GCE vTPM RSA AK template (a `TPMT_PUBLIC`; the AK is the endorsement-hierarchy
/// primary key created from it).
pub const GCE_AK_TEMPLATE_RSA_NV_INDEX: u32 = 0x01C1_0001;
/// NV index of the GCE vTPM ECC AK template.
pub const GCE_AK_TEMPLATE_ECC_NV_INDEX: u32 = 0x01C1_0003;
/// Persistent handle of the attestation key the Azure vTPM provisions (CVMs and trusted launch);
/// its public key is `HCLAkPub` in the HCL report and the subject key of the AK certificate.
pub const AZURE_AK_PERSISTENT_HANDLE: u32 = 0x8100_0003;

/// Where the attestation key comes from. Validators of cloud variants trust only the key the
/// cloud provisioned (named in the HCL report, an AK certificate or the Compute API), so the
/// issuer must quote with exactly that key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AkSource {
    /// A primary key in the owner hierarchy from our own template ([`AkAlgorithm`]), re-derived
    /// on every start (qemu-vtpm, aws-sev-snp, aws-nitro-tpm: their validators bind the key by
    /// other means).
    Created,
    /// A key the cloud made persistent at this handle (Azure: [`AZURE_AK_PERSISTENT_HANDLE`]).
    Persistent {
        /// Persistent handle (0x81xxxxxx).
        handle: u32,
    },
    /// The endorsement-hierarchy primary key created from the `TPMT_PUBLIC` template the cloud
    /// stored in this NV index (GCE: [`GCE_AK_TEMPLATE_RSA_NV_INDEX`]); deterministic, so it is
    /// the key the cloud certified.
    NvTemplate {
        /// NV index holding the template.
        index: u32,
    },
}

impl AkSource {
    /// The AK source of `variant`: the one place that decides it.
    pub fn for_variant(variant: Variant) -> Self {
        match variant {
            Variant::AzureSevSnp | Variant::AzureTdx | Variant::AzureTrustedLaunch => {
                Self::Persistent {
                    handle: AZURE_AK_PERSISTENT_HANDLE,
                }
            }
            // gcp-sev-snp too: its validator may check the AK against the Compute API.
            Variant::GcpSevEs | Variant::GcpSevSnp => Self::NvTemplate {
                index: GCE_AK_TEMPLATE_RSA_NV_INDEX,
            },
            _ => Self::Created,
        }
    }

    /// Where the key is, for error messages.
    fn location(self) -> String {
        match self {
            Self::Created => "a created owner-hierarchy primary key".into(),
            Self::Persistent { handle } => format!("persistent handle {handle:#010x}"),
            Self::NvTemplate { index } => format!("AK template NV index {index:#010x}"),
        }
    }

    /// What the cloud should have provisioned there, for error messages.
    fn expectation(self, variant: Variant) -> String {
        match self {
            Self::Created => String::new(),
            Self::Persistent { .. } => format!(
                "on {variant} the Azure vTPM provisions the attestation key there before boot (is this an Azure VM of that type, with its vTPM enabled?)"
            ),
            Self::NvTemplate { .. } => format!(
                "on {variant} the GCE vTPM (Shielded VM with vTPM enabled) stores the AK template there before boot"
            ),
        }
    }
}

/// Where Linux exposes the firmware's TCG event log.
pub const DEFAULT_EVENT_LOG_PATH: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";

/// Algorithm of the attestation key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AkAlgorithm {
    /// RSA-2048, RSASSA-PKCS1-v1_5 with SHA-256 (upstream's default).
    #[default]
    Rsa2048,
    /// RSA-2048, RSA-PSS with SHA-256.
    Rsa2048Pss,
    /// ECC NIST P-256, ECDSA with SHA-256 (fast to create).
    EccP256,
}

/// How to reach the TPM and what to quote.
#[derive(Clone)]
pub struct TpmIssuerConfig {
    /// TCTI string: `device:/dev/tpmrm0` on a node, `swtpm:host=127.0.0.1,port=P` for swtpm.
    pub tcti: String,
    /// Variant written into documents.
    pub variant: Variant,
    /// Where the AK comes from; [`TpmIssuerConfig::new`] sets [`AkSource::for_variant`].
    pub ak_source: AkSource,
    /// AK algorithm (for [`AkSource::Created`]).
    pub ak: AkAlgorithm,
    /// PCR indices quoted (SHA-256 bank).
    pub pcrs: Vec<u32>,
    /// Event log to attach, read at every issue; `None` attaches none.
    pub event_log: Option<PathBuf>,
    /// Variant-specific bytes hashed into the qualifying data (empty for qemu-vtpm).
    pub instance_info: Vec<u8>,
    /// Computes instance_info per document instead (hardware reports binding the nonce or the
    /// AK: gcp-sev-snp, aws-sev-snp). Overrides `instance_info` when set.
    pub instance_info_source: Option<Arc<dyn InstanceInfoSource>>,
}

impl std::fmt::Debug for TpmIssuerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmIssuerConfig")
            .field("tcti", &self.tcti)
            .field("variant", &self.variant)
            .field("ak_source", &self.ak_source)
            .field("ak", &self.ak)
            .field("pcrs", &self.pcrs)
            .field("event_log", &self.event_log)
            .field("instance_info_len", &self.instance_info.len())
            .field("instance_info_source", &self.instance_info_source)
            .finish()
    }
}

impl TpmIssuerConfig {
    /// The variant's AK source (RSA-2048 when created), PCRs 0–23, no event log, empty
    /// instance info.
    pub fn new(tcti: impl Into<String>, variant: Variant) -> Self {
        Self {
            tcti: tcti.into(),
            variant,
            ak_source: AkSource::for_variant(variant),
            ak: AkAlgorithm::default(),
            pcrs: (0..24).collect(),
            event_log: None,
            instance_info: Vec::new(),
            instance_info_source: None,
        }
    }
}

type Reply<T> = mpsc::SyncSender<Result<T, IssueError>>;

/// TPM requests waiting for the worker at most. Quotes beyond it fail at once with
/// [`IssueError::Busy`] instead of piling up behind a flood (each waiting caller holds a
/// thread); PCR extensions and reads wait for room, behind at most this many quotes.
pub const TPM_QUEUE_CAPACITY: usize = 32;

enum Cmd {
    Quote {
        qualifying: [u8; 32],
        reply: Reply<Quoted>,
    },
    Event {
        pcr: u32,
        data: Vec<u8>,
        reply: Reply<()>,
    },
    ExtendSha256 {
        pcr: u32,
        digest: [u8; 32],
        reply: Reply<()>,
    },
    Read {
        reply: Reply<BTreeMap<u32, [u8; 32]>>,
    },
    NvRead {
        index: u32,
        reply: Reply<Vec<u8>>,
    },
}

struct Quoted {
    ak_public: Vec<u8>,
    quote: Vec<u8>,
    signature: Vec<u8>,
    pcrs: BTreeMap<u32, [u8; 32]>,
}

/// A TPM-backed [`Issuer`]. Cheap to share behind an `Arc`; requests are serialised.
pub struct TpmIssuer {
    tx: Mutex<Option<mpsc::SyncSender<Cmd>>>,
    worker: Option<thread::JoinHandle<()>>,
    config: TpmIssuerConfig,
    ak_public: Vec<u8>,
}

impl Drop for TpmIssuer {
    fn drop(&mut self) {
        // Closing the channel ends the worker; joining lets it flush the AK and close the TPM
        // connection before whoever owns the TPM (e.g. a test's swtpm) goes away.
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl std::fmt::Debug for TpmIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmIssuer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn tpm_err(operation: &'static str) -> impl FnOnce(tss_esapi::Error) -> IssueError {
    move |e| IssueError::Tpm {
        operation,
        message: e.to_string(),
    }
}

impl TpmIssuer {
    /// Connects to the TPM and obtains the AK from the configured [`AkSource`] (created or
    /// re-derived primary keys are flushed again when the issuer is dropped).
    pub fn open(config: TpmIssuerConfig) -> Result<Self, IssueError> {
        let (tx, rx) = mpsc::sync_channel::<Cmd>(TPM_QUEUE_CAPACITY);
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Result<Vec<u8>, IssueError>>(1);
        let worker_cfg = config.clone();
        let worker = thread::Builder::new()
            .name("tpm-issuer".into())
            .spawn(move || worker(worker_cfg, rx, ready_tx))
            .map_err(|source| IssueError::Io {
                what: "spawning the TPM worker thread".into(),
                source,
            })?;
        let ak_public = ready_rx.recv().map_err(|_| IssueError::Closed)??;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            worker: Some(worker),
            config,
            ak_public,
        })
    }

    /// Sends a request to the worker and waits for its answer. `fail_fast` requests (quotes)
    /// are refused with [`IssueError::Busy`] when the queue is full; the others wait for room.
    fn call<T>(
        &self,
        fail_fast: bool,
        make: impl FnOnce(Reply<T>) -> Cmd,
    ) -> Result<T, IssueError> {
        let (reply, rx) = mpsc::sync_channel(1);
        // Clone the sender so a blocking send does not hold the lock (and Drop can close it).
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(IssueError::Closed)?;
        let cmd = make(reply);
        if fail_fast {
            tx.try_send(cmd).map_err(|e| match e {
                mpsc::TrySendError::Full(_) => IssueError::Busy {
                    queued: TPM_QUEUE_CAPACITY,
                },
                mpsc::TrySendError::Disconnected(_) => IssueError::Closed,
            })?;
        } else {
            tx.send(cmd).map_err(|_| IssueError::Closed)?;
        }
        drop(tx);
        rx.recv().map_err(|_| IssueError::Closed)?
    }

    /// Extends `pcr` like `TPM2_PCR_Event(data)`: every allocated bank gets H_bank(data).
    pub fn pcr_event(&self, pcr: u32, data: &[u8]) -> Result<(), IssueError> {
        let data = data.to_vec();
        self.call(false, |reply| Cmd::Event { pcr, data, reply })
    }

    /// Extends PCR 15 with the cluster ID; afterwards PCR 15 (SHA-256) equals
    /// [`crate::expected_pcr15`]`(cluster_id)` if it was zero before.
    pub fn extend_cluster_id(&self, cluster_id: &[u8]) -> Result<(), IssueError> {
        self.pcr_event(crate::measurements::CLUSTER_ID_PCR, cluster_id)
    }

    /// Extends only the SHA-256 bank of `pcr` with `digest` (TPM2_PCR_Extend).
    pub fn extend_sha256(&self, pcr: u32, digest: [u8; 32]) -> Result<(), IssueError> {
        self.call(false, |reply| Cmd::ExtendSha256 { pcr, digest, reply })
    }

    /// Reads the configured PCRs of the SHA-256 bank.
    pub fn read_pcrs(&self) -> Result<BTreeMap<u32, [u8; 32]>, IssueError> {
        self.call(false, |reply| Cmd::Read { reply })
    }

    /// Sets (or replaces) the per-document instance_info source, e.g. after reading the Azure
    /// HCL report with [`TpmIssuer::nv_read`] (which needs the open issuer).
    pub fn set_instance_info_source(&mut self, source: Arc<dyn InstanceInfoSource>) {
        self.config.instance_info_source = Some(source);
    }

    /// The AK as a marshalled `TPM2B_PUBLIC`.
    pub fn ak_public(&self) -> &[u8] {
        &self.ak_public
    }

    /// Reads a whole NV index with owner authorisation (empty password), e.g. the Azure HCL
    /// report at [`AZURE_HCL_REPORT_NV_INDEX`] or the GCE AK certificates.
    pub fn nv_read(&self, index: u32) -> Result<Vec<u8>, IssueError> {
        self.call(false, |reply| Cmd::NvRead { index, reply })
    }
}

impl Issuer for TpmIssuer {
    fn variant(&self) -> Variant {
        self.config.variant
    }

    fn issue(&self, user_data: &[u8], nonce: &[u8]) -> Result<AttestationDocument, IssueError> {
        // Read the log before quoting: a later event would then show as a replay mismatch
        // rather than silently be part of an inconsistent document.
        let event_log = match &self.config.event_log {
            Some(p) => Some(ByteBuf::from(std::fs::read(p).map_err(|source| {
                IssueError::Io {
                    what: format!("event log {}", p.display()),
                    source,
                }
            })?)),
            None => None,
        };
        let extra = extra_data(user_data, nonce);
        let instance_info = match &self.config.instance_info_source {
            Some(src) => src.instance_info(&extra, &self.ak_public)?,
            None => self.config.instance_info.clone(),
        };
        let qualifying = tpm_qualifying_data(&instance_info, &extra);
        let q = self.call(true, |reply| Cmd::Quote { qualifying, reply })?;
        Ok(AttestationDocument::new(
            self.config.variant,
            user_data.to_vec(),
            Evidence::Tpm(TpmEvidence {
                ak_public: q.ak_public,
                quote: q.quote,
                signature: q.signature,
                pcrs: q
                    .pcrs
                    .into_iter()
                    .map(|(k, v)| (k, ByteBuf::from(v.to_vec())))
                    .collect(),
                event_log,
                instance_info,
            }),
        ))
    }
}

struct Worker {
    ctx: Context,
    ak: KeyHandle,
    /// Persistent keys belong to the cloud: close our handle, never flush the key.
    ak_persistent: bool,
    ak_public: Vec<u8>,
    pcrs: Vec<u32>,
}

fn worker(
    cfg: TpmIssuerConfig,
    rx: mpsc::Receiver<Cmd>,
    ready: mpsc::SyncSender<Result<Vec<u8>, IssueError>>,
) {
    let mut w = match Worker::start(&cfg) {
        Ok(w) => {
            let _ = ready.send(Ok(w.ak_public.clone()));
            w
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    for cmd in rx {
        match cmd {
            Cmd::Quote { qualifying, reply } => {
                let _ = reply.send(w.quote(qualifying));
            }
            Cmd::Event { pcr, data, reply } => {
                let _ = reply.send(w.event(pcr, &data));
            }
            Cmd::ExtendSha256 { pcr, digest, reply } => {
                let _ = reply.send(w.extend(pcr, &[(HashingAlgorithm::Sha256, digest.to_vec())]));
            }
            Cmd::Read { reply } => {
                let _ = reply.send(w.read());
            }
            Cmd::NvRead { index, reply } => {
                let _ = reply.send(w.nv_read(index));
            }
        }
    }
    if w.ak_persistent {
        let mut h = ObjectHandle::from(w.ak);
        let _ = w.ctx.tr_close(&mut h);
    } else {
        let _ = w.ctx.flush_context(w.ak.into());
    }
}

fn ak_template(alg: AkAlgorithm) -> Result<Public, tss_esapi::Error> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_sign_encrypt(true)
        .build()?;
    let b = PublicBuilder::new()
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs);
    match alg {
        AkAlgorithm::Rsa2048 | AkAlgorithm::Rsa2048Pss => {
            let scheme = if alg == AkAlgorithm::Rsa2048 {
                RsaSchemeAlgorithm::RsaSsa
            } else {
                RsaSchemeAlgorithm::RsaPss
            };
            b.with_public_algorithm(PublicAlgorithm::Rsa)
                .with_rsa_parameters(
                    PublicRsaParametersBuilder::new()
                        .with_scheme(RsaScheme::create(scheme, Some(HashingAlgorithm::Sha256))?)
                        .with_key_bits(RsaKeyBits::Rsa2048)
                        .with_exponent(RsaExponent::default())
                        .with_is_signing_key(true)
                        .with_restricted(true)
                        .build()?,
                )
                .with_rsa_unique_identifier(PublicKeyRsa::default())
                .build()
        }
        AkAlgorithm::EccP256 => b
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_ecc_parameters(
                PublicEccParametersBuilder::new()
                    .with_ecc_scheme(EccScheme::create(
                        EccSchemeAlgorithm::EcDsa,
                        Some(HashingAlgorithm::Sha256),
                        None,
                    )?)
                    .with_curve(EccCurve::NistP256)
                    .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                    .with_is_signing_key(true)
                    .with_restricted(true)
                    .build()?,
            )
            .with_ecc_unique_identifier(EccPoint::default())
            .build(),
    }
}

fn create_primary(
    ctx: &mut Context,
    hierarchy: Hierarchy,
    template: Public,
) -> Result<(KeyHandle, Public), IssueError> {
    // A password session with empty auth costs no round trips, unlike an HMAC session.
    let created = ctx
        .execute_with_session(Some(AuthSession::Password), |c| {
            c.create_primary(hierarchy, template, None, None, None, None)
        })
        .map_err(tpm_err("CreatePrimary (AK)"))?;
    Ok((created.key_handle, created.out_public))
}

/// Reads a whole NV index with owner authorisation (empty password).
fn nv_read_full(ctx: &mut Context, index: u32) -> Result<Vec<u8>, IssueError> {
    let handle =
        tss_esapi::handles::NvIndexTpmHandle::new(index).map_err(tpm_err("NV index handle"))?;
    ctx.execute_with_session(Some(AuthSession::Password), |c| {
        tss_esapi::abstraction::nv::read_full(
            c,
            tss_esapi::interface_types::resource_handles::NvAuth::Owner,
            handle,
        )
    })
    .map_err(|e| IssueError::Tpm {
        operation: "NV_Read",
        message: format!("NV index {index:#010x}: {e}"),
    })
}

/// An AK template as stored in NV: a `TPMT_PUBLIC` (what GCE writes), or a `TPM2B_PUBLIC`.
fn parse_template(data: &[u8]) -> Result<Public, String> {
    let tpmt = match data {
        [hi, lo, rest @ ..] if usize::from(u16::from_be_bytes([*hi, *lo])) == rest.len() => {
            // A TPMT_PUBLIC starts with its algorithm (RSA 0x0001, ECC 0x0023), never with its
            // own length, so a matching length prefix means TPM2B_PUBLIC.
            rest
        }
        _ => data,
    };
    Public::unmarshall(tpmt)
        .map_err(|e| format!("the NV data is not a TPMT_PUBLIC key template ({e})"))
}

/// A key without the sign attribute cannot quote; saying so here beats a TPM error code later.
/// (Whether the key must be restricted is the validator's call.)
fn check_signing_key(public: &Public) -> Result<(), String> {
    let a = public.object_attributes();
    if a.sign_encrypt() && !a.decrypt() {
        Ok(())
    } else {
        Err("the key is not a signing key, so it cannot be the attestation key".into())
    }
}

fn pcr_handle(i: u32) -> Result<PcrHandle, IssueError> {
    use PcrHandle as P;
    Ok(match i {
        0 => P::Pcr0,
        1 => P::Pcr1,
        2 => P::Pcr2,
        3 => P::Pcr3,
        4 => P::Pcr4,
        5 => P::Pcr5,
        6 => P::Pcr6,
        7 => P::Pcr7,
        8 => P::Pcr8,
        9 => P::Pcr9,
        10 => P::Pcr10,
        11 => P::Pcr11,
        12 => P::Pcr12,
        13 => P::Pcr13,
        14 => P::Pcr14,
        15 => P::Pcr15,
        16 => P::Pcr16,
        17 => P::Pcr17,
        18 => P::Pcr18,
        19 => P::Pcr19,
        20 => P::Pcr20,
        21 => P::Pcr21,
        22 => P::Pcr22,
        23 => P::Pcr23,
        _ => {
            return Err(IssueError::Tpm {
                operation: "PCR extend",
                message: format!("PCR index {i} is out of range 0..=23"),
            });
        }
    })
}

fn slots(pcrs: &[u32]) -> Result<Vec<PcrSlot>, IssueError> {
    pcrs.iter()
        .map(|&i| {
            1u32.checked_shl(i)
                .and_then(|bit| PcrSlot::try_from(bit).ok())
                .ok_or_else(|| IssueError::Tpm {
                    operation: "PCR selection",
                    message: format!("PCR index {i} is out of range 0..=31"),
                })
        })
        .collect()
}

impl Worker {
    fn start(cfg: &TpmIssuerConfig) -> Result<Self, IssueError> {
        let tcti: TctiNameConf = cfg.tcti.parse().map_err(tpm_err("parse TCTI"))?;
        let mut ctx = Context::new(tcti).map_err(tpm_err("connect"))?;
        let ak_err = |message: String| IssueError::AttestationKey {
            variant: cfg.variant,
            location: cfg.ak_source.location(),
            message,
            expected: cfg.ak_source.expectation(cfg.variant),
        };
        let (ak, public, ak_persistent) = match cfg.ak_source {
            AkSource::Created => {
                let template = ak_template(cfg.ak).map_err(tpm_err("build AK template"))?;
                let (k, p) = create_primary(&mut ctx, Hierarchy::Owner, template)?;
                (k, p, false)
            }
            AkSource::Persistent { handle } => {
                let h = PersistentTpmHandle::new(handle)
                    .map_err(|e| ak_err(format!("not a persistent handle: {e}")))?;
                let obj = ctx
                    .tr_from_tpm_public(TpmHandle::Persistent(h))
                    .map_err(|e| ak_err(format!("no key there ({e})")))?;
                let key = KeyHandle::from(obj);
                let (public, _, _) = ctx
                    .read_public(key)
                    .map_err(|e| ak_err(format!("ReadPublic failed ({e})")))?;
                check_signing_key(&public).map_err(ak_err)?;
                (key, public, true)
            }
            AkSource::NvTemplate { index } => {
                let data =
                    nv_read_full(&mut ctx, index).map_err(|e| ak_err(format!("NV_Read: {e}")))?;
                let template = parse_template(&data).map_err(ak_err)?;
                check_signing_key(&template).map_err(ak_err)?;
                let (k, p) = create_primary(&mut ctx, Hierarchy::Endorsement, template)
                    .map_err(|e| ak_err(format!("CreatePrimary from the template: {e}")))?;
                (k, p, false)
            }
        };
        let tpmt = public.marshall().map_err(tpm_err("marshal AK public"))?;
        let len = u16::try_from(tpmt.len()).map_err(|_| IssueError::Tpm {
            operation: "marshal AK public",
            message: "TPMT_PUBLIC longer than 65535 bytes".into(),
        })?;
        let mut ak_public = len.to_be_bytes().to_vec();
        ak_public.extend_from_slice(&tpmt);
        Ok(Self {
            ctx,
            ak,
            ak_persistent,
            ak_public,
            pcrs: cfg.pcrs.clone(),
        })
    }

    fn quote(&mut self, qualifying: [u8; 32]) -> Result<Quoted, IssueError> {
        let sel = PcrSelectionListBuilder::new()
            .with_selection(HashingAlgorithm::Sha256, &slots(&self.pcrs)?)
            .build()
            .map_err(tpm_err("PCR selection"))?;
        let data = Data::try_from(qualifying.to_vec()).map_err(tpm_err("qualifying data"))?;
        let (attest, sig) = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.quote(self.ak, data, SignatureScheme::Null, sel)
            })
            .map_err(tpm_err("Quote"))?;
        let quote = attest.marshall().map_err(tpm_err("marshal TPMS_ATTEST"))?;
        let signature = sig.marshall().map_err(tpm_err("marshal TPMT_SIGNATURE"))?;
        let pcrs = self.read()?;
        Ok(Quoted {
            ak_public: self.ak_public.clone(),
            quote,
            signature,
            pcrs,
        })
    }

    fn nv_read(&mut self, index: u32) -> Result<Vec<u8>, IssueError> {
        nv_read_full(&mut self.ctx, index)
    }

    fn read(&mut self) -> Result<BTreeMap<u32, [u8; 32]>, IssueError> {
        let sel = PcrSelectionListBuilder::new()
            .with_selection(HashingAlgorithm::Sha256, &slots(&self.pcrs)?)
            .build()
            .map_err(tpm_err("PCR selection"))?;
        let data = tss_esapi::abstraction::pcr::read_all(&mut self.ctx, sel)
            .map_err(tpm_err("PCR_Read"))?;
        let bank = data
            .pcr_bank(HashingAlgorithm::Sha256)
            .ok_or_else(|| IssueError::Tpm {
                operation: "PCR_Read",
                message: "TPM returned no SHA-256 bank (is it allocated?)".into(),
            })?;
        let mut out = BTreeMap::new();
        for (slot, digest) in bank {
            let idx = u32::from(*slot).trailing_zeros();
            let v: [u8; 32] = digest.value().try_into().map_err(|_| IssueError::Tpm {
                operation: "PCR_Read",
                message: format!("SHA-256 PCR {idx} is not 32 bytes"),
            })?;
            out.insert(idx, v);
        }
        Ok(out)
    }

    fn event(&mut self, pcr: u32, data: &[u8]) -> Result<(), IssueError> {
        // tss-esapi 7.7 does not wrap TPM2_PCR_Event (and this crate forbids unsafe FFI), so we
        // hash the data for every allocated bank and use TPM2_PCR_Extend: same PCR values.
        let (caps, _) = self
            .ctx
            .get_capability(CapabilityType::AssignedPcr, 0, 1)
            .map_err(tpm_err("GetCapability(PCRS)"))?;
        let CapabilityData::AssignedPcr(list) = caps else {
            return Err(IssueError::Tpm {
                operation: "GetCapability(PCRS)",
                message: "unexpected capability data".into(),
            });
        };
        let mut digests = Vec::new();
        for s in list.get_selections() {
            if s.is_empty() {
                continue;
            }
            let alg = s.hashing_algorithm();
            let d = match alg {
                HashingAlgorithm::Sha1 => {
                    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
                }
                HashingAlgorithm::Sha256 => {
                    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
                }
                HashingAlgorithm::Sha384 => {
                    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, data)
                }
                HashingAlgorithm::Sha512 => {
                    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, data)
                }
                other => {
                    return Err(IssueError::Tpm {
                        operation: "PCR event",
                        message: format!("PCR bank {other:?} is allocated but not supported"),
                    });
                }
            };
            digests.push((alg, d.as_ref().to_vec()));
        }
        self.extend(pcr, &digests)
    }

    fn extend(
        &mut self,
        pcr: u32,
        digests: &[(HashingAlgorithm, Vec<u8>)],
    ) -> Result<(), IssueError> {
        let mut values = DigestValues::new();
        for (alg, d) in digests {
            values.set(
                *alg,
                Digest::try_from(d.clone()).map_err(tpm_err("digest"))?,
            );
        }
        let handle = pcr_handle(pcr)?;
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.pcr_extend(handle, values)
            })
            .map_err(tpm_err("PCR_Extend"))
    }
}
