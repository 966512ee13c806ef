//! Instance metadata (untrusted host input): the input is split at 0xff bytes into the
//! values of the known keys, which are then cleaned and parsed. Must never panic.
#![no_main]

use constellation_node::metadata::{clean_value, keys, parse_instance};
use constellation_node_api::metadata::parse_network;
use libfuzzer_sys::fuzz_target;

const KEYS: [&str; 7] = keys::ALL;

fuzz_target!(|data: &[u8]| {
    // The network key's own parser (the node API's codec), on the whole input as text.
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_network(s);
    }
    let parts: Vec<&[u8]> = data.split(|b| *b == 0xff).collect();
    let _ = parse_instance(
        |key| {
            let i = KEYS.iter().position(|k| *k == key).unwrap_or(0);
            match parts.get(i) {
                Some(raw) if !raw.is_empty() => clean_value(key, raw.to_vec()).map(Some),
                _ => Ok(None),
            }
        },
        |key| std::path::PathBuf::from(key),
    );
});
