//! Decode arbitrary bytes as a msgpack DynamicValue of one of several types; whatever
//! decodes must re-encode and decode to an equal value. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tfplugin::{Type, msgpack};

fn types() -> Vec<Type> {
    vec![
        Type::Dynamic,
        Type::String,
        Type::Number,
        Type::list(Type::Dynamic),
        Type::object_with_optional(
            [
                ("name", Type::String),
                ("n", Type::Number),
                ("on", Type::Bool),
                ("tags", Type::map(Type::String)),
                ("set", Type::set(Type::object([("k", Type::String)]))),
                ("tuple", Type::tuple([Type::String, Type::Number])),
                ("any", Type::Dynamic),
            ],
            ["any"],
        ),
    ]
}

fuzz_target!(|data: &[u8]| {
    let Some((selector, bytes)) = data.split_first() else {
        return;
    };
    let types = types();
    let ty = &types[usize::from(*selector) % types.len()];
    if let Ok(v) = msgpack::decode(bytes, ty) {
        let again = msgpack::encode(&v, ty).expect("a decoded value re-encodes");
        let back = msgpack::decode(&again, ty).expect("an encoded value decodes");
        assert_eq!(back, v, "round trip changed the value");
    }
});
