#![no_main]
//! Attestation document decoding, then full qemu-vtpm validation of whatever decodes.
use constellation_attest::measurements::Measurements;
use constellation_attest::validator::Validator;
use constellation_attest::{AttestationDocument, qemu_vtpm};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = AttestationDocument::from_bytes(data) {
        let _ = qemu_vtpm::validator(Measurements::new()).validate(&doc, b"nonce");
        let _ = AttestationDocument::from_bytes(&doc.to_bytes()).expect("re-encoding decodes");
    }
});
