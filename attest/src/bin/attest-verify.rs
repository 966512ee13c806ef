//! attest-verify: verifies attestation evidence files against a policy and prints the verified
//! claims as JSON. Exit status 0 only if every check holds; 1 with every failed check listed
//! otherwise; 2 when the inputs cannot be read.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use constellation_attest::certs::Cert;
use constellation_attest::config::AttestationConfig;
use constellation_attest::document::{Evidence, TdxCollateral};
use constellation_attest::policy::Policy;
use constellation_attest::qemu_tdx::QemuTdxValidator;
use constellation_attest::snp::{self, AmdRoots, ReportDataBinding};
use constellation_attest::tdx::{self, CollateralFiles, Times};
use constellation_attest::variant::Variant;
use constellation_attest::{azure, document::AttestationDocument, measurements::Measurements};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Parser)]
#[command(
    name = "attest-verify",
    version,
    about = "Verify attestation evidence against a policy"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct Common {
    /// Reference time for certificate validity (RFC 3339), or "skip". Default: now.
    #[arg(long)]
    at: Option<String>,
    /// Policy JSON (docs/attestation-policy.md). Default: the variant-independent base policy.
    #[arg(long)]
    policy: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// A raw 1184-byte SEV-SNP report.
    Snp {
        /// The report.
        #[arg(long)]
        report: PathBuf,
        /// VCEK or VLEK (PEM or DER).
        #[arg(long)]
        signer: PathBuf,
        /// ASK/ASVK then ARK (PEM). The ARK here is never trusted: the pinned or policy ARK is.
        #[arg(long)]
        chain: Option<PathBuf>,
        /// Expected REPORT_DATA (128 hex digits).
        #[arg(long)]
        report_data: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// An Azure HCL report holding an SEV-SNP report.
    AzureSnp {
        /// The HCL report (2600 bytes from vTPM NV index 0x01400001).
        #[arg(long)]
        hcl_report: PathBuf,
        /// VCEK (PEM or DER).
        #[arg(long)]
        signer: PathBuf,
        /// ASK then ARK (PEM).
        #[arg(long)]
        chain: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// A TDX DCAP quote (v4 or v5).
    Tdx {
        /// The quote.
        #[arg(long)]
        quote: PathBuf,
        /// Directory with tcb_info.json, qe_identity.json, tcb_signing_chain.pem and optionally
        /// pck_crl.der|pem, root_ca_crl.der|pem.
        #[arg(long)]
        collateral: Option<PathBuf>,
        /// Reference time for collateral and its chain (RFC 3339 or "skip"). Default: --at.
        #[arg(long)]
        collateral_at: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Our attestation document of any vTPM-based variant (CBOR, or its JSON rendering),
    /// checked by the validator of the variant it names (with --config: of the config's
    /// variant, which the document must have).
    Tpm {
        #[command(flatten)]
        doc: DocArgs,
        /// Policy JSON (docs/attestation-policy.md): hardware policy and the cloud endpoints
        /// some variants need (gcp-sev-es, gcp-sev-snp, azure-trustedlaunch, aws-nitro-tpm, azure-tdx).
        /// Omitted fields: the document's variant's defaults.
        /// Not with --config, whose policy applies.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Our qemu-tdx attestation document (CBOR or JSON): TD quote, collateral, REPORT_DATA
    /// binding and MRTD/RTMR measurements.
    QemuTdx {
        #[command(flatten)]
        doc: DocArgs,
        /// Collateral directory (layout as for `tdx`); replaces any collateral in the document.
        #[arg(long)]
        collateral: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("expected").required(true).args(["measurements", "config"])))]
struct DocArgs {
    /// The document.
    #[arg(long)]
    document: PathBuf,
    /// Expected measurements JSON (or --config).
    #[arg(long)]
    measurements: Option<PathBuf>,
    /// The cluster's attestation config: the `config_json` of a `constellation_attestation`
    /// data source, as is (`terraform output -raw`). Its variant, measurements and policy are
    /// what the document must satisfy, so it excludes --measurements and --policy.
    #[arg(long, conflicts_with = "policy")]
    config: Option<PathBuf>,
    /// Nonce the document must be bound to (hex). Default: empty.
    #[arg(long, default_value = "")]
    nonce: String,
    /// Expected user data (hex). Default: whatever the document carries (reported).
    #[arg(long)]
    user_data: Option<String>,
}

/// A parsed document with what it must be bound to and satisfy.
struct DocInput {
    doc: AttestationDocument,
    /// From --config, or the document's own variant with --measurements and --policy.
    expected: AttestationConfig,
    nonce: Vec<u8>,
    user_data: Vec<u8>,
}

impl DocInput {
    /// The cluster refuses evidence of another variant than its config's; so does this tool.
    fn variant_failure(&self) -> Option<String> {
        (self.doc.variant != self.expected.variant).then(|| {
            format!(
                "the document is {} evidence, the attestation config requires {}",
                self.doc.variant, self.expected.variant
            )
        })
    }
}

/// Reads an attestation config file (`config_json` of the `constellation_attestation` data
/// source).
fn read_config(p: &Path) -> Result<AttestationConfig> {
    let bytes = read(p)?;
    AttestationConfig::from_json(&bytes).map_err(|e| {
        // `terraform output config_json` (without -raw) prints the JSON as a quoted string.
        let quoted = serde_json::from_slice::<String>(&bytes).is_ok();
        let hint = if quoted {
            "; the file holds a JSON string, not the config itself (use `terraform output -raw`)"
        } else {
            ""
        };
        anyhow::anyhow!("--config {}: {e}{hint}", p.display())
    })
}

impl DocArgs {
    /// `policy`: the --policy file, which clap keeps apart from --config.
    fn load(&self, policy_path: Option<&Path>) -> Result<DocInput> {
        let bytes = read(&self.document)?;
        let doc = match AttestationDocument::from_bytes(&bytes) {
            Ok(d) => d,
            Err(cbor) => serde_json::from_slice::<AttestationDocument>(&bytes).map_err(|json| {
                anyhow::anyhow!("document is neither CBOR ({cbor}) nor JSON ({json})")
            })?,
        };
        let expected = match (&self.config, &self.measurements) {
            (Some(c), _) => read_config(c)?,
            (None, Some(m)) => AttestationConfig {
                variant: doc.variant,
                measurements: Measurements::from_json(&String::from_utf8_lossy(&read(m)?))
                    .context("measurements JSON")?,
                policy: match policy_path {
                    // The document's variant decides the defaults of omitted policy fields.
                    None => Policy::for_variant(doc.variant),
                    Some(p) => Policy::from_json_for(doc.variant, &read(p)?)
                        .with_context(|| format!("policy {}", p.display()))?,
                },
            },
            (None, None) => anyhow::bail!("--measurements or --config is required"),
        };
        let nonce = hex::decode(self.nonce.trim()).context("--nonce: hex")?;
        let user_data = match &self.user_data {
            Some(h) => hex::decode(h.trim()).context("--user-data: hex")?,
            None => doc.user_data.clone(),
        };
        Ok(DocInput {
            doc,
            expected,
            nonce,
            user_data,
        })
    }
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
}

fn parse_time(s: Option<&str>) -> Result<Option<OffsetDateTime>> {
    match s {
        None => Ok(Some(OffsetDateTime::now_utc())),
        Some("skip") => Ok(None),
        Some(s) => Ok(Some(
            OffsetDateTime::parse(s, &Rfc3339)
                .with_context(|| format!("--at {s}: not RFC 3339"))?,
        )),
    }
}

fn policy(c: &Common) -> Result<Policy> {
    read_policy(c.policy.as_deref())
}

fn read_policy(path: Option<&Path>) -> Result<Policy> {
    match path {
        None => Ok(Policy::default()),
        Some(p) => Policy::from_json(&read(p)?).with_context(|| format!("policy {}", p.display())),
    }
}

/// Outcome: claims JSON or the list of failures.
type Outcome = std::result::Result<serde_json::Value, Vec<String>>;

fn errs<E: std::fmt::Display>(v: Vec<E>) -> Vec<String> {
    v.iter().map(|e| e.to_string()).collect()
}

fn chain(path: &Option<PathBuf>) -> Result<Vec<Cert>> {
    match path {
        None => Ok(Vec::new()),
        Some(p) => {
            Cert::from_pem_bundle(&read(p)?).with_context(|| format!("chain {}", p.display()))
        }
    }
}

/// The chain file's ARK is ignored for trust; say so loudly if it is not the trusted one.
fn check_chain_ark(chain: &[Cert], roots: &[Cert]) -> Vec<String> {
    match chain.get(1) {
        Some(ark) if !roots.iter().any(|r| r.der() == ark.der()) => vec![format!(
            "the chain's root '{}' is not a trusted ARK (built-in or policy); it was not used",
            ark.subject_cn()
        )],
        _ => Vec::new(),
    }
}

fn trusted_arks(p: &Policy) -> Result<(AmdRoots, Vec<Cert>)> {
    let roots = AmdRoots::from_policy(&p.snp).context("policy ark_pem")?;
    let mut list = Vec::new();
    if p.snp.ark_pem.is_empty() {
        for pem in [
            sev::certs::snp::builtin::milan::ARK,
            sev::certs::snp::builtin::genoa::ARK,
            sev::certs::snp::builtin::turin::ARK,
        ] {
            list.push(Cert::from_pem_or_der(pem)?);
        }
    } else {
        for pem in &p.snp.ark_pem {
            list.extend(Cert::from_pem_bundle(pem.as_bytes())?);
        }
    }
    Ok((roots, list))
}

fn run(cli: Cli) -> Result<Outcome> {
    Ok(match cli.cmd {
        Cmd::Snp {
            report,
            signer,
            chain: chain_path,
            report_data,
            common,
        } => {
            let p = policy(&common)?;
            let at = parse_time(common.at.as_deref())?;
            let leaf = Cert::from_pem_or_der(&read(&signer)?).context("signer certificate")?;
            let chain = chain(&chain_path)?;
            let (roots, list) = trusted_arks(&p)?;
            let binding = match report_data {
                None => ReportDataBinding::None,
                Some(h) => ReportDataBinding::Exact(
                    hex::decode(h.trim())
                        .ok()
                        .and_then(|v| v.try_into().ok())
                        .context("--report-data: 64 hex bytes")?,
                ),
            };
            let mut fails = check_chain_ark(&chain, &list);
            match snp::verify_all(
                &read(&report)?,
                &leaf,
                chain.first(),
                &roots,
                at,
                &p.snp,
                &binding,
            ) {
                Ok(c) if fails.is_empty() => Ok(json!({ "snp": c })),
                Ok(_) => Err(fails),
                Err(e) => {
                    fails.extend(errs(e));
                    Err(fails)
                }
            }
        }
        Cmd::AzureSnp {
            hcl_report,
            signer,
            chain: chain_path,
            common,
        } => {
            let p = policy(&common)?;
            let at = parse_time(common.at.as_deref())?;
            let leaf = Cert::from_pem_or_der(&read(&signer)?).context("signer certificate")?;
            let chain = chain(&chain_path)?;
            let (roots, list) = trusted_arks(&p)?;
            let mut fails = check_chain_ark(&chain, &list);
            match azure::verify_snp(
                &read(&hcl_report)?,
                &leaf,
                chain.first(),
                &roots,
                at,
                &p.snp,
            ) {
                Ok(c) if fails.is_empty() => Ok(json!({ "azure_snp": c })),
                Ok(_) => Err(fails),
                Err(e) => {
                    fails.extend(errs(e));
                    Err(fails)
                }
            }
        }
        Cmd::Tdx {
            quote,
            collateral,
            collateral_at,
            common,
        } => {
            let p = policy(&common)?;
            let at = parse_time(common.at.as_deref())?;
            let collateral_at = match collateral_at {
                None => at,
                Some(s) => parse_time(Some(&s))?,
            };
            let files = collateral.as_deref().map(read_collateral).transpose()?;
            match tdx::verify_quote(
                &read(&quote)?,
                files.as_ref(),
                &p.tdx,
                Times { at, collateral_at },
            ) {
                Ok(c) => Ok(json!({ "tdx": c })),
                Err(e) => Err(errs(e)),
            }
        }
        Cmd::Tpm { doc, policy: pol } => {
            let input = doc.load(pol.as_deref())?;
            let variant = input.doc.variant;
            if !variant.is_vtpm() {
                anyhow::bail!(
                    "{} is a {variant} document, not a vTPM-based one; use the `{variant}` form",
                    doc.document.display()
                );
            }
            if let Some(f) = input.variant_failure() {
                return Ok(Err(vec![f]));
            }
            let validators = input
                .expected
                .validators()
                .with_context(|| format!("building the {variant} validator from the policy"))?;
            match constellation_attest::validator::validate_document(
                &validators,
                &input.doc,
                &input.nonce,
                &input.user_data,
            ) {
                Ok(c) => Ok(json!({ "tpm": c })),
                Err(e) => Err(vec![e.to_string()]),
            }
        }
        Cmd::QemuTdx {
            doc,
            collateral,
            common,
        } => {
            let input = doc.load(common.policy.as_deref())?;
            let wrong_variant = input.variant_failure();
            let Evidence::Tdx(mut ev) = input.doc.evidence else {
                anyhow::bail!(
                    "{} is a {} document, not qemu-tdx; use the `tpm` form",
                    doc.document.display(),
                    input.doc.variant
                );
            };
            if input.doc.variant != Variant::QemuTdx {
                anyhow::bail!(
                    "{} is a {} document, not qemu-tdx",
                    doc.document.display(),
                    input.doc.variant
                );
            }
            if let Some(f) = wrong_variant {
                return Ok(Err(vec![f]));
            }
            if let Some(dir) = &collateral {
                ev.collateral = Some(TdxCollateral::from_files(&read_collateral(dir)?));
            }
            let at = parse_time(common.at.as_deref())?;
            let v = QemuTdxValidator::new(input.expected.measurements, input.expected.policy.tdx)
                .context("policy tdx")?;
            let mut fails = Vec::new();
            if input.doc.user_data != input.user_data {
                fails.push(format!(
                    "the document carries user data {}, expected {}",
                    hex::encode(&input.doc.user_data),
                    hex::encode(&input.user_data)
                ));
            }
            match v.validate_tdx_at(&input.user_data, &ev, &input.nonce, at) {
                Ok(c) if fails.is_empty() => Ok(json!({ "qemu_tdx": c })),
                Ok(_) => Err(fails),
                Err(e) => {
                    fails.push(e.to_string());
                    Err(fails)
                }
            }
        }
    })
}

/// Reads the collateral directory layout documented in docs/attestation-policy.md.
fn read_collateral(dir: &Path) -> Result<CollateralFiles> {
    let opt = |names: &[&str]| -> Result<Option<Vec<u8>>> {
        for n in names {
            let p = dir.join(n);
            if p.exists() {
                return read(&p).map(Some);
            }
        }
        Ok(None)
    };
    Ok(CollateralFiles {
        tcb_info: opt(&["tcb_info.json"])?,
        qe_identity: opt(&["qe_identity.json"])?,
        tcb_signing_chain: opt(&["tcb_signing_chain.pem"])?,
        pck_crl: opt(&["pck_crl.der", "pck_crl.pem"])?,
        root_ca_crl: opt(&["root_ca_crl.der", "root_ca_crl.pem"])?,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(Ok(claims)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "verified": true, "claims": claims }))
                    .unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(Err(failures)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({ "verified": false, "failures": failures }))
                    .unwrap_or_default()
            );
            for f in &failures {
                eprintln!("FAILED: {f}");
            }
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
