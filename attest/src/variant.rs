//! Attestation variants: which kind of confidential VM produced a document.
//!
//! Names and certificate-extension OIDs are the ones upstream Constellation uses, so that
//! configuration files and aTLS certificates stay recognisable across both implementations.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An attestation variant (cloud + TEE + evidence kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Variant {
    /// Local QEMU VM with a swtpm vTPM; the attestation key is trusted because the host says so.
    #[serde(rename = "qemu-vtpm")]
    QemuVtpm,
    /// AWS EC2 with SEV-SNP.
    #[serde(rename = "aws-sev-snp")]
    AwsSevSnp,
    /// AWS EC2 Nitro vTPM.
    #[serde(rename = "aws-nitro-tpm")]
    AwsNitroTpm,
    /// Azure confidential VM with SEV-SNP (HCL report binds the vTPM AK).
    #[serde(rename = "azure-sev-snp")]
    AzureSevSnp,
    /// Azure confidential VM with TDX.
    #[serde(rename = "azure-tdx")]
    AzureTdx,
    /// Azure trusted launch (vTPM only).
    #[serde(rename = "azure-trustedlaunch")]
    AzureTrustedLaunch,
    /// GCP confidential VM with SEV-ES (vTPM).
    #[serde(rename = "gcp-sev-es")]
    GcpSevEs,
    /// GCP confidential VM with SEV-SNP.
    #[serde(rename = "gcp-sev-snp")]
    GcpSevSnp,
    /// QEMU with Intel TDX.
    #[serde(rename = "qemu-tdx")]
    QemuTdx,
}

impl Variant {
    /// Every known variant, in a stable order.
    pub const ALL: [Variant; 9] = [
        Variant::QemuVtpm,
        Variant::AwsSevSnp,
        Variant::AwsNitroTpm,
        Variant::AzureSevSnp,
        Variant::AzureTdx,
        Variant::AzureTrustedLaunch,
        Variant::GcpSevEs,
        Variant::GcpSevSnp,
        Variant::QemuTdx,
    ];

    /// The upstream name, e.g. `qemu-vtpm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::QemuVtpm => "qemu-vtpm",
            Variant::AwsSevSnp => "aws-sev-snp",
            Variant::AwsNitroTpm => "aws-nitro-tpm",
            Variant::AzureSevSnp => "azure-sev-snp",
            Variant::AzureTdx => "azure-tdx",
            Variant::AzureTrustedLaunch => "azure-trustedlaunch",
            Variant::GcpSevEs => "gcp-sev-es",
            Variant::GcpSevSnp => "gcp-sev-snp",
            Variant::QemuTdx => "qemu-tdx",
        }
    }

    /// The aTLS certificate-extension OID as arcs (upstream's 1.3.9900.x.y).
    pub fn oid(self) -> &'static [u64] {
        match self {
            Variant::AwsNitroTpm => &[1, 3, 9900, 2, 1],
            Variant::AwsSevSnp => &[1, 3, 9900, 2, 2],
            Variant::GcpSevEs => &[1, 3, 9900, 3, 1],
            Variant::GcpSevSnp => &[1, 3, 9900, 3, 2],
            Variant::AzureSevSnp => &[1, 3, 9900, 4, 1],
            Variant::AzureTrustedLaunch => &[1, 3, 9900, 4, 2],
            Variant::AzureTdx => &[1, 3, 9900, 4, 3],
            Variant::QemuVtpm => &[1, 3, 9900, 5, 1],
            Variant::QemuTdx => &[1, 3, 9900, 5, 99],
        }
    }

    /// The OID in dotted form, e.g. `1.3.9900.5.1`.
    pub fn oid_string(self) -> String {
        self.oid()
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The variant whose extension OID has these arcs, if any.
    pub fn from_oid(arcs: &[u64]) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.oid() == arcs)
    }

    /// True when evidence of this variant is a TPM quote (possibly bound to hardware evidence).
    /// Only qemu-tdx attests with a bare TDX quote; azure-tdx quotes its vTPM, whose AK the TD
    /// quote vouches for.
    pub fn is_vtpm(self) -> bool {
        !matches!(self, Variant::QemuTdx)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A variant name that is not known to this build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown attestation variant {0:?}; known variants: qemu-vtpm, aws-sev-snp, aws-nitro-tpm, azure-sev-snp, azure-tdx, azure-trustedlaunch, gcp-sev-es, gcp-sev-snp, qemu-tdx"
)]
pub struct UnknownVariant(pub String);

impl FromStr for Variant {
    type Err = UnknownVariant;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Variant::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownVariant(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_oids_round_trip() {
        for v in Variant::ALL {
            assert_eq!(v.as_str().parse::<Variant>(), Ok(v));
            assert_eq!(Variant::from_oid(v.oid()), Some(v));
            let json = format!("\"{}\"", v.as_str());
            assert_eq!(serde_json::from_str::<Variant>(&json).unwrap(), v);
        }
        assert_eq!(Variant::QemuVtpm.oid_string(), "1.3.9900.5.1");
        assert!("dummy".parse::<Variant>().is_err());
        assert_eq!(Variant::from_oid(&[1, 3, 9900, 1, 1]), None);
    }
}
