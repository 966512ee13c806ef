//! vTPM NV-index reads (Azure HCL report, cloud AK certificates) through the TPM issuer, and a
//! per-document instance_info source, against a real TPM 2.0 (swtpm).
#![allow(clippy::unwrap_used)]
#![cfg(all(feature = "tpm", feature = "test-support"))]

use std::sync::{Arc, Mutex};

use constellation_attest::document::{Evidence, extra_data};
use constellation_attest::testing::Swtpm;
use constellation_attest::tpm::issuer::{AZURE_HCL_REPORT_NV_INDEX, TpmIssuer, TpmIssuerConfig};
use constellation_attest::validator::{InstanceInfoSource, IssueError, Issuer};
use constellation_attest::{Variant, qemu_vtpm};

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<([u8; 32], Vec<u8>)>>);

impl InstanceInfoSource for Recorder {
    fn instance_info(&self, extra: &[u8; 32], ak: &[u8]) -> Result<Vec<u8>, IssueError> {
        self.0.lock().unwrap().push((*extra, ak.to_vec()));
        Ok(extra.to_vec())
    }
}

#[test]
fn nv_read_and_per_document_instance_info() {
    let tpm = Swtpm::start().expect("start swtpm (install swtpm: scripts/install-deps.sh)");
    let hcl: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();
    // As the Azure host does: owner read/write index holding the report.
    tpm.define_nv(AZURE_HCL_REPORT_NV_INDEX, &hcl).unwrap();

    let rec = Arc::new(Recorder::default());
    let mut cfg = TpmIssuerConfig::new(tpm.tcti(), Variant::QemuVtpm);
    cfg.pcrs = vec![0, 1, 2];
    let mut issuer = TpmIssuer::open(cfg).unwrap();
    assert_eq!(issuer.nv_read(AZURE_HCL_REPORT_NV_INDEX).unwrap(), hcl);
    let err = issuer.nv_read(0x0140_0777).unwrap_err();
    assert!(matches!(err, IssueError::Tpm { .. }), "{err}");

    issuer.set_instance_info_source(rec.clone());
    let doc = issuer.issue(b"user", b"nonce").unwrap();
    let Evidence::Tpm(ev) = &doc.evidence else {
        panic!("not TPM evidence")
    };
    assert_eq!(ev.instance_info, extra_data(b"user", b"nonce").to_vec());
    let seen = rec.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1, issuer.ak_public());
    // The quote binds the per-document instance_info: the qemu-vtpm validator accepts it.
    let v = qemu_vtpm::validator(Default::default());
    constellation_attest::Validator::validate(&v, &doc, b"nonce").unwrap();
    drop(issuer);
    drop(tpm);
}
