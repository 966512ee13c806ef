//! Node side: SEV-SNP extended reports through configfs-tsm (see [`crate::tsm`] for why not
//! `/dev/sev-guest`), with the signing certificate from the report's certificate table or, when
//! the host supplies none (GCP), from AMD KDS.

use base64::Engine;

use crate::certs::fetch::Kds;
use crate::certs::table::{self, CertKind};
use crate::snp::{Generation, SnpReport, Tcb};
use crate::tsm::ConfigFsTsm;
use crate::validator::IssueError;
use crate::variant::Variant;

/// A report with what a validator needs to check its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpMaterial {
    /// The raw 1184-byte report.
    pub report: Vec<u8>,
    /// VCEK or VLEK, PEM.
    pub signer_pem: String,
    /// ASK/ASVK then ARK, PEM (may be empty: validators use the pinned chain then).
    pub chain_pem: String,
}

/// Gets SNP reports from configfs-tsm.
pub struct SnpReportSource {
    /// The configfs-tsm interface.
    pub tsm: ConfigFsTsm,
    /// Where to fetch the VCEK when the certificate table has none.
    pub kds: Option<Kds>,
    /// VMPL to request (None: the kernel's default).
    pub privlevel: Option<u32>,
    /// Variant, for error messages.
    pub variant: Variant,
}

impl std::fmt::Debug for SnpReportSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnpReportSource")
            .field("tsm", &self.tsm)
            .field("kds", &self.kds.as_ref().map(|k| &k.base))
            .field("privlevel", &self.privlevel)
            .finish()
    }
}

/// PEM of one DER certificate.
pub fn pem(der: &[u8]) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

impl SnpReportSource {
    fn err(&self, msg: String) -> IssueError {
        IssueError::Platform {
            variant: self.variant,
            source: msg.into(),
        }
    }

    /// A report for `report_data` with its signing certificate and chain.
    pub fn get(&self, report_data: &[u8; 64]) -> Result<SnpMaterial, IssueError> {
        let out = self.tsm.report(report_data, self.privlevel)?;
        if out.provider != "sev_guest" {
            return Err(self.err(format!(
                "configfs-tsm provider is {:?}, not sev_guest: this is not an SEV-SNP guest",
                out.provider
            )));
        }
        let parsed =
            SnpReport::parse(&out.outblob).map_err(|e| self.err(format!("SNP report: {e}")))?;
        let mut signer = None;
        let mut chain = String::new();
        if let Some(aux) = &out.auxblob {
            let entries =
                table::parse(aux).map_err(|e| self.err(format!("certificate table: {e}")))?;
            for (kind, der) in &entries {
                match kind {
                    CertKind::Vcek | CertKind::Vlek => signer = Some(pem(der)),
                    _ => {}
                }
            }
            // Intermediate first, then the ARK (which validators ignore in favour of theirs).
            for want in [CertKind::Ask, CertKind::Ark] {
                for (kind, der) in &entries {
                    if *kind == want {
                        chain.push_str(&pem(der));
                    }
                }
            }
        }
        let signer = match (signer, &self.kds) {
            (Some(s), _) => s,
            (None, Some(kds)) => {
                let (family, model, _) = parsed.cpuid().ok_or_else(|| {
                    self.err(
                        "report version 2 carries no CPUID; cannot pick the KDS product".into(),
                    )
                })?;
                let g = Generation::from_cpuid(family, model).ok_or_else(|| {
                    self.err(format!("unknown CPU family {family:#x} model {model:#x}"))
                })?;
                let tcb = Tcb::from_raw(parsed.reported_tcb_raw(), parsed.turin_layout());
                let fetch = |e: crate::certs::fetch::FetchError| self.err(format!("AMD KDS: {e}"));
                let vcek = kds.vcek(g.name(), &parsed.chip_id(), &tcb).map_err(fetch)?;
                if chain.is_empty() {
                    chain =
                        String::from_utf8_lossy(&kds.cert_chain(g.name(), "vcek").map_err(fetch)?)
                            .into_owned();
                }
                pem(&vcek)
            }
            (None, None) => {
                return Err(self.err(
                    "the host supplied no VCEK/VLEK in the certificate table and no KDS is configured"
                        .into(),
                ));
            }
        };
        Ok(SnpMaterial {
            report: out.outblob,
            signer_pem: signer,
            chain_pem: chain,
        })
    }
}
