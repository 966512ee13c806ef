//! Fuzz the parsers of network-encryption config values that arrive from the join service
//! (public keys, CIDRs): they must never panic, and what parses must round-trip.
#![no_main]

use constellation_node::netcrypt::{IpCidr, WgPublicKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(k) = s.parse::<WgPublicKey>() {
        assert_eq!(k.to_string().parse::<WgPublicKey>().ok(), Some(k));
    }
    if let Ok(c) = s.parse::<IpCidr>() {
        assert_eq!(c.to_string().parse::<IpCidr>().ok(), Some(c));
    }
});
