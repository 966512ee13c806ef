//! The qemu-vtpm AK root end to end against a real TPM 2.0 (swtpm): the TPM provisioned as the
//! provider does (AK template and CA-issued AK certificate in NV), the issuer deriving the AK
//! from the template and carrying the certificate, the certified validator accepting it — and
//! refusing the same TPM's document under another cluster's CA.
#![allow(clippy::unwrap_used)]
#![cfg(all(feature = "tpm", feature = "test-support"))]

use std::sync::Arc;

use constellation_attest::Variant;
use constellation_attest::measurements::{Measurement, Measurements};
use constellation_attest::qemu_vtpm::{self, AK_CERT_NV_INDEX, AK_TEMPLATE_NV_INDEX, AkCa};
use constellation_attest::testing::Swtpm;
use constellation_attest::tpm::issuer::{AkSource, TpmIssuer, TpmIssuerConfig};
use constellation_attest::validator::{Issuer, StaticInstanceInfo, Validator};

#[test]
fn a_provisioned_tpm_passes_the_certified_validator() {
    let ca = AkCa::generate().unwrap();
    let tpm = Swtpm::start_qemu_vtpm(&ca).expect("start swtpm (scripts/install-deps.sh)");
    let mut cfg = TpmIssuerConfig::new(tpm.tcti(), Variant::QemuVtpm);
    cfg.ak_source = AkSource::NvTemplate {
        index: AK_TEMPLATE_NV_INDEX,
    };
    cfg.pcrs = vec![0, 4, 9];
    let mut issuer = TpmIssuer::open(cfg).unwrap();
    let cert = issuer.nv_read(AK_CERT_NV_INDEX).unwrap();
    issuer.set_instance_info_source(Arc::new(StaticInstanceInfo(cert)));
    issuer.extend_sha256(4, [7; 32]).unwrap();
    let pcrs = issuer.read_pcrs().unwrap();
    let m = Measurements(
        pcrs.iter()
            .map(|(i, v)| (*i, Measurement::enforced(v.to_vec()).unwrap()))
            .collect(),
    );
    let doc = issuer.issue(b"user", b"nonce").unwrap();

    let v = qemu_vtpm::certified_validator(m.clone(), ca.cert_pem()).unwrap();
    let claims = v.validate(&doc, b"nonce").unwrap();
    assert_eq!(claims.user_data, b"user");

    // The same genuine TPM is not a member of another cluster.
    let other = AkCa::generate().unwrap();
    let e = qemu_vtpm::certified_validator(m, other.cert_pem())
        .unwrap()
        .validate(&doc, b"nonce")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not issued by the cluster's AK CA"), "{e}");
}

#[test]
fn vmm_and_attest_name_the_same_nv_indices() {
    assert_eq!(
        AK_TEMPLATE_NV_INDEX,
        constellation_vmm::tpm::AK_TEMPLATE_NV_INDEX
    );
    assert_eq!(AK_CERT_NV_INDEX, constellation_vmm::tpm::AK_CERT_NV_INDEX);
}
