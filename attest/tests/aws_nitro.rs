//! aws-nitro-tpm: the EC2 DescribeImages answer (real XML shape, served on 127.0.0.1) decides
//! whether the instance's AMI has NitroTPM; the request is SigV4-signed (signing-key derivation
//! checked against AWS's published example).
#![allow(clippy::unwrap_used)]

mod common;
use std::sync::Arc;

use common::http::{Routes, Server};
use common::synth_tpm;
use constellation_attest::aws::nitro::{
    AwsCredentials, Ec2Api, ImageTpmSupport, NitroError, NitroInstanceInfo, parse_describe_images,
    sigv4_signing_key, validator_with,
};
use constellation_attest::certs::fetch::PlainHttp;
use constellation_attest::config::AttestationConfig;
use constellation_attest::document::{AttestationDocument, Evidence};
use constellation_attest::measurements::Measurements;
use constellation_attest::validator::{PlatformClaims, ValidationError, Validators};
use constellation_attest::variant::Variant;
use zeroize::Zeroizing;

const NONCE: &[u8] = b"nitro-nonce";
const USER: &[u8] = &[0x77; 32];
const AMI: &str = "ami-0abcdef1234567890";

fn describe(ami: &str, tpm: Option<&str>) -> Vec<u8> {
    let tpm = tpm
        .map(|t| format!("<tpmSupport>{t}</tpmSupport>"))
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeImagesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
    <requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId>
    <imagesSet>
        <item>
            <imageId>{ami}</imageId>
            <imageLocation>123456789012/constellation-node</imageLocation>
            <imageState>available</imageState>
            <architecture>x86_64</architecture>
            <imageType>machine</imageType>
            <bootMode>uefi</bootMode>
            {tpm}
        </item>
    </imagesSet>
</DescribeImagesResponse>"#
    )
    .into_bytes()
}

fn creds() -> AwsCredentials {
    AwsCredentials {
        access_key_id: "AKIDEXAMPLE".into(),
        secret_access_key: Zeroizing::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
        session_token: None,
    }
}

fn server(tpm: Option<&str>) -> Server {
    let mut r = Routes::new();
    r.insert(
        (
            "GET".into(),
            format!("/?Action=DescribeImages&ImageId.1={AMI}&Version=2016-11-15"),
        ),
        (200, describe(AMI, tpm)),
    );
    Server::start(r)
}

fn api(s: &Server) -> Arc<dyn ImageTpmSupport> {
    Arc::new(Ec2Api {
        base: s.base(),
        region: "eu-central-1".into(),
        credentials: Some(creds()),
        http: Box::new(PlainHttp::default()),
    })
}

fn doc(image: &str) -> Vec<u8> {
    let info = NitroInstanceInfo {
        instance_id: "i-1234567890abcdef0".into(),
        image_id: image.into(),
        region: "eu-central-1".into(),
    };
    let ev = synth_tpm::evidence(
        synth_tpm::ak(),
        &synth_tpm::pcrs(),
        serde_json::to_vec(&info).unwrap(),
        USER,
        NONCE,
    );
    AttestationDocument::new(Variant::AwsNitroTpm, USER.to_vec(), Evidence::Tpm(ev)).to_bytes()
}

fn measurements() -> Measurements {
    Measurements::from_json(&synth_tpm::measurements_json(&synth_tpm::pcrs()).to_string()).unwrap()
}

fn nitro_err(e: ValidationError) -> NitroError {
    match e {
        ValidationError::Platform { source, .. } => *source.downcast::<NitroError>().unwrap(),
        other => panic!("expected a platform error, got {other}"),
    }
}

#[test]
fn sigv4_signing_key_matches_the_aws_example() {
    // From AWS's "Examples of how to derive a signing key for Signature Version 4".
    let k = sigv4_signing_key(
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "20120215",
        "us-east-1",
        "iam",
    );
    assert_eq!(
        hex::encode(k.as_slice()),
        "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
    );
}

#[test]
fn nitro_tpm_image_accepted_and_request_signed() {
    let s = server(Some("v2.0"));
    let v = Validators::new(vec![Arc::new(validator_with(
        measurements(),
        api(&s),
        vec![],
    ))]);
    let c = v.validate_bytes(&doc(AMI), NONCE, USER).unwrap();
    assert!(matches!(c.platform, PlatformClaims::CloudVouchedAk { .. }));
    let req = s.requests.lock().unwrap()[0].clone();
    let auth = req.header("Authorization").unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
            && auth.contains("/eu-central-1/ec2/aws4_request")
            && auth.contains("SignedHeaders=host;x-amz-date"),
        "{auth}"
    );
    assert!(req.header("X-Amz-Date").unwrap().ends_with('Z'));
}

#[test]
fn neg_image_without_nitro_tpm() {
    let s = server(None);
    let v = Validators::new(vec![Arc::new(validator_with(
        measurements(),
        api(&s),
        vec![],
    ))]);
    let e = nitro_err(v.validate_bytes(&doc(AMI), NONCE, USER).unwrap_err());
    assert!(
        matches!(e, NitroError::NoTpmSupport { found: None, .. }),
        "{e}"
    );
}

#[test]
fn neg_ami_not_allowed_and_not_an_ami() {
    let s = server(Some("v2.0"));
    let v = Validators::new(vec![Arc::new(validator_with(
        measurements(),
        api(&s),
        vec!["ami-0000000000000000a".into()],
    ))]);
    let e = nitro_err(v.validate_bytes(&doc(AMI), NONCE, USER).unwrap_err());
    assert!(matches!(e, NitroError::AmiNotAllowed(_)), "{e}");
    let e = nitro_err(
        v.validate_bytes(&doc("ami-x&Action=Other"), NONCE, USER)
            .unwrap_err(),
    );
    assert!(matches!(e, NitroError::InstanceInfo(_)), "{e}");
    assert!(s.requests.lock().unwrap().is_empty());
}

#[test]
fn neg_api_errors_are_typed() {
    // Unknown image: the server answers 404 for any other query.
    let s = server(Some("v2.0"));
    let v = Validators::new(vec![Arc::new(validator_with(
        measurements(),
        api(&s),
        vec![],
    ))]);
    let e = nitro_err(
        v.validate_bytes(&doc("ami-0ffffffffffffffff"), NONCE, USER)
            .unwrap_err(),
    );
    assert!(matches!(e, NitroError::Api(_)), "{e}");
    assert!(parse_describe_images(b"<Response><Errors/></Response>", AMI).is_err());
    assert!(parse_describe_images(&describe("ami-0000000000000000b", Some("v2.0")), AMI).is_err());
}

#[test]
fn config_needs_the_ec2_endpoint() {
    let json = serde_json::json!({"variant": "aws-nitro-tpm", "measurements": {}});
    let c = AttestationConfig::from_json(json.to_string().as_bytes()).unwrap();
    assert!(
        c.validators()
            .err()
            .unwrap()
            .to_string()
            .contains("ec2_api_url")
    );
    let pcr4 = serde_json::json!({"4": {"expected": "ab".repeat(32), "warnOnly": false}});
    let json = serde_json::json!({"variant": "aws-nitro-tpm", "measurements": pcr4,
        "policy": {"version": 1, "aws": {"ec2_api_url": "http://127.0.0.1:1", "region": "eu-central-1"}}});
    let c = AttestationConfig::from_json(json.to_string().as_bytes()).unwrap();
    assert_eq!(c.validators().unwrap().len(), 1);
}
