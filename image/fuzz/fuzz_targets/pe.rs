//! PE parsing, Authenticode hashing, section lookup and PCR prediction on arbitrary bytes.
#![no_main]

use constellation_image::{measure, pe};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pe::parse(data);
    let _ = pe::authenticode_sha256(data);
    let _ = pe::section_data(data, ".linux");
    let _ = measure::predict(data);
    let _ = measure::pcr5(data);
    let _ = pe::add_sections(data, &[(".osrel", b"ID=x\n")]);
});
