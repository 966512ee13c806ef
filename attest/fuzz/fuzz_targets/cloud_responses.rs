//! Cloud API / metadata answers and evidence JSON parsed by the cloud variants: Azure THIM
//! bundle, GCE shielded-instance identity, EC2 DescribeImages XML, certificate AIA URLs, and
//! the instance_info JSON of every vTPM variant fed to its AK-trust hook.
#![no_main]
use constellation_attest::aws::nitro::parse_describe_images;
use constellation_attest::azure::trustedlaunch::ca_issuers_url;
use constellation_attest::certs::Cert;
use constellation_attest::certs::fetch::ThimBundle;
use constellation_attest::gcp::parse_shielded_identity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ThimBundle::parse(data).map(|b| b.tcb_raw());
    let _ = parse_shielded_identity(data);
    let _ = parse_describe_images(data, "ami-0abcdef1234567890");
    if let Ok(c) = Cert::from_der(data) {
        let _ = ca_issuers_url(&c);
    }
    let _ = serde_json::from_slice::<constellation_attest::gcp::GcpSnpInstanceInfo>(data);
    let _ =
        serde_json::from_slice::<constellation_attest::azure::variant::AzureTdxInstanceInfo>(data);
});
