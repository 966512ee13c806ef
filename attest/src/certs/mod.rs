//! Certificates: owned X.509/CRL parsing and signature checks, the SNP extended-report certificate
//! table, and fetchers for AMD KDS / Intel PCS / Azure THIM with an on-disk cache.

pub mod fetch;
pub mod table;
pub mod x509;

pub use x509::{Cert, CertError, Crl};
