//! Kernel module `.modinfo` parsing.
#![no_main]

use constellation_image::kernel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kernel::parse_modinfo_depends(data);
});
