//! Decode arbitrary bytes as JSON state, as a JSON type description and (when they are a
//! JSON object of strings) as legacy flatmap state; whatever decodes as JSON state must
//! re-encode and decode to an equal value. Must never panic.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use tfplugin::{Type, json};

fuzz_target!(|data: &[u8]| {
    let _ = Type::from_json(data);
    let ty = Type::object([
        ("id", Type::String),
        ("n", Type::Number),
        ("l", Type::list(Type::object([("b", Type::Bool)]))),
        ("m", Type::map(Type::Number)),
        ("d", Type::Dynamic),
    ]);
    if let Ok(v) = json::decode_with(data, &ty, json::JsonOptions::lenient()) {
        let again = json::encode(&v, &ty).expect("a decoded value re-encodes");
        let back = json::decode(&again, &ty).expect("an encoded value decodes");
        assert_eq!(back, v, "round trip changed the value");
    }
    if let Ok(flat) = serde_json::from_slice::<HashMap<String, String>>(data) {
        let flat_ty = Type::object([
            ("id", Type::String),
            ("n", Type::Number),
            ("on", Type::Bool),
            (
                "l",
                Type::list(Type::object([
                    ("b", Type::Bool),
                    ("s", Type::set(Type::String)),
                ])),
            ),
            ("m", Type::map(Type::Number)),
            ("t", Type::tuple([Type::String, Type::list(Type::Number)])),
        ]);
        if let Ok(v) = json::decode_flatmap(&flat, &flat_ty) {
            // Whatever flatmap yields is a valid value of the type.
            tfplugin::msgpack::encode(&v, &flat_ty).expect("a flatmap value encodes");
        }
    }
});
