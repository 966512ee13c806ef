//! cty types: the type system of Terraform values.
//!
//! A [`Type`] says how a [`Value`](crate::Value) is laid out on the wire. Terraform
//! describes types in a JSON form (`"string"`, `["list","string"]`,
//! `["object",{"a":"number"},["a"]]`, `"dynamic"`); [`Type::to_json`] and
//! [`Type::from_json`] convert both ways.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value as Json;

/// Deepest type nesting accepted when parsing a JSON type description.
///
/// Real schemas nest a handful of levels; the limit only stops hostile input from
/// exhausting the stack.
pub const MAX_TYPE_DEPTH: usize = 64;

/// A cty type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Type {
    /// `bool`.
    Bool,
    /// `number`: an arbitrary-precision decimal.
    Number,
    /// `string`: UTF-8 text.
    String,
    /// The dynamic pseudo-type (`any` in HCL): the concrete type travels with the value.
    Dynamic,
    /// `list(T)`: an ordered sequence of values of one type.
    List(Box<Type>),
    /// `set(T)`: an unordered collection of distinct values of one type.
    Set(Box<Type>),
    /// `map(T)`: string keys to values of one type.
    Map(Box<Type>),
    /// `tuple([T1, T2, ...])`: a fixed-length sequence with a type per position.
    Tuple(Vec<Type>),
    /// `object({name = T, ...})`: named attributes, each with its own type.
    Object(ObjectType),
}

/// The attributes of an object type, and which of them are optional.
///
/// Optional attributes only appear in type constraints (for example the type of a
/// nested attribute in a schema, or a function parameter); values never carry them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectType {
    /// Attribute names and their types.
    pub attributes: BTreeMap<String, Type>,
    /// Names of attributes that may be omitted (they must also be in `attributes`).
    pub optional: BTreeSet<String>,
}

/// A JSON type description could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TypeError {
    /// The bytes are not JSON.
    #[error("type description is not valid JSON: {0}")]
    Json(String),
    /// The JSON is valid but does not describe a cty type.
    #[error("invalid type description {found}: expected {expected}")]
    Invalid {
        /// What was expected at that point.
        expected: &'static str,
        /// A short rendering of what was found instead.
        found: String,
    },
    /// The type nests deeper than [`MAX_TYPE_DEPTH`].
    #[error("type description nests deeper than {MAX_TYPE_DEPTH} levels")]
    TooDeep,
}

impl Type {
    /// `list(element)`.
    pub fn list(element: Type) -> Type {
        Type::List(Box::new(element))
    }

    /// `set(element)`.
    pub fn set(element: Type) -> Type {
        Type::Set(Box::new(element))
    }

    /// `map(element)`.
    pub fn map(element: Type) -> Type {
        Type::Map(Box::new(element))
    }

    /// `tuple([elements...])`.
    pub fn tuple(elements: impl IntoIterator<Item = Type>) -> Type {
        Type::Tuple(elements.into_iter().collect())
    }

    /// `object({...})` with all attributes required.
    pub fn object<K: Into<String>>(attributes: impl IntoIterator<Item = (K, Type)>) -> Type {
        Type::Object(ObjectType {
            attributes: attributes.into_iter().map(|(k, t)| (k.into(), t)).collect(),
            optional: BTreeSet::new(),
        })
    }

    /// `object({...})` where the attributes named in `optional` may be omitted.
    pub fn object_with_optional<K: Into<String>, O: Into<String>>(
        attributes: impl IntoIterator<Item = (K, Type)>,
        optional: impl IntoIterator<Item = O>,
    ) -> Type {
        Type::Object(ObjectType {
            attributes: attributes.into_iter().map(|(k, t)| (k.into(), t)).collect(),
            optional: optional.into_iter().map(Into::into).collect(),
        })
    }

    /// The element type of a list, set or map; `None` for other types.
    pub fn element_type(&self) -> Option<&Type> {
        match self {
            Type::List(t) | Type::Set(t) | Type::Map(t) => Some(t),
            _ => None,
        }
    }

    /// The attributes of an object type; `None` for other types.
    pub fn object_attributes(&self) -> Option<&BTreeMap<String, Type>> {
        match self {
            Type::Object(o) => Some(&o.attributes),
            _ => None,
        }
    }

    /// True for list, set and map types (the types length refinements apply to).
    pub fn is_collection(&self) -> bool {
        matches!(self, Type::List(_) | Type::Set(_) | Type::Map(_))
    }

    /// True for bool, number and string.
    pub fn is_primitive(&self) -> bool {
        matches!(self, Type::Bool | Type::Number | Type::String)
    }

    /// True if the dynamic pseudo-type occurs anywhere in this type.
    pub fn has_dynamic(&self) -> bool {
        match self {
            Type::Dynamic => true,
            Type::Bool | Type::Number | Type::String => false,
            Type::List(t) | Type::Set(t) | Type::Map(t) => t.has_dynamic(),
            Type::Tuple(ts) => ts.iter().any(Type::has_dynamic),
            Type::Object(o) => o.attributes.values().any(Type::has_dynamic),
        }
    }

    /// The same type with every optional-attribute marker removed, recursively.
    ///
    /// This is the type of values that conform to a type constraint with optional
    /// attributes (Terraform fills omitted attributes with null).
    pub fn without_optional_attributes(&self) -> Type {
        match self {
            Type::Bool | Type::Number | Type::String | Type::Dynamic => self.clone(),
            Type::List(t) => Type::list(t.without_optional_attributes()),
            Type::Set(t) => Type::set(t.without_optional_attributes()),
            Type::Map(t) => Type::map(t.without_optional_attributes()),
            Type::Tuple(ts) => {
                Type::Tuple(ts.iter().map(Type::without_optional_attributes).collect())
            }
            Type::Object(o) => Type::Object(ObjectType {
                attributes: o
                    .attributes
                    .iter()
                    .map(|(k, t)| (k.clone(), t.without_optional_attributes()))
                    .collect(),
                optional: BTreeSet::new(),
            }),
        }
    }

    /// The JSON type description Terraform uses on the wire.
    pub fn to_json(&self) -> Json {
        match self {
            Type::Bool => Json::from("bool"),
            Type::Number => Json::from("number"),
            Type::String => Json::from("string"),
            Type::Dynamic => Json::from("dynamic"),
            Type::List(t) => Json::Array(vec![Json::from("list"), t.to_json()]),
            Type::Set(t) => Json::Array(vec![Json::from("set"), t.to_json()]),
            Type::Map(t) => Json::Array(vec![Json::from("map"), t.to_json()]),
            Type::Tuple(ts) => Json::Array(vec![
                Json::from("tuple"),
                Json::Array(ts.iter().map(Type::to_json).collect()),
            ]),
            Type::Object(o) => {
                let attrs: serde_json::Map<String, Json> = o
                    .attributes
                    .iter()
                    .map(|(k, t)| (k.clone(), t.to_json()))
                    .collect();
                let mut parts = vec![Json::from("object"), Json::Object(attrs)];
                if !o.optional.is_empty() {
                    parts.push(Json::Array(
                        o.optional.iter().map(|s| Json::from(s.as_str())).collect(),
                    ));
                }
                Json::Array(parts)
            }
        }
    }

    /// The JSON type description as compact bytes (the form carried in schemas and in
    /// dynamic msgpack values). Object attributes are in sorted order, as Terraform writes them.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Serialising a serde_json::Value into a Vec cannot fail.
        serde_json::to_vec(&self.to_json()).unwrap_or_default()
    }

    /// Parse a JSON type description.
    pub fn from_json(bytes: &[u8]) -> Result<Type, TypeError> {
        let json: Json =
            serde_json::from_slice(bytes).map_err(|e| TypeError::Json(e.to_string()))?;
        Type::from_json_value(&json)
    }

    /// Parse an already-decoded JSON type description.
    pub fn from_json_value(json: &Json) -> Result<Type, TypeError> {
        parse_type(json, 0)
    }
}

fn short(json: &Json) -> String {
    let mut s = json.to_string();
    if s.len() > 60 {
        let mut cut = 57;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

fn parse_type(json: &Json, depth: usize) -> Result<Type, TypeError> {
    if depth > MAX_TYPE_DEPTH {
        return Err(TypeError::TooDeep);
    }
    let invalid = |expected| TypeError::Invalid {
        expected,
        found: short(json),
    };
    match json {
        Json::String(s) => match s.as_str() {
            "bool" => Ok(Type::Bool),
            "number" => Ok(Type::Number),
            "string" => Ok(Type::String),
            "dynamic" => Ok(Type::Dynamic),
            _ => Err(invalid("\"bool\", \"number\", \"string\" or \"dynamic\"")),
        },
        Json::Array(parts) => {
            let kind = parts
                .first()
                .and_then(Json::as_str)
                .ok_or_else(|| invalid("a type kind string"))?;
            match (kind, parts.as_slice()) {
                ("list", [_, e]) => Ok(Type::list(parse_type(e, depth + 1)?)),
                ("set", [_, e]) => Ok(Type::set(parse_type(e, depth + 1)?)),
                ("map", [_, e]) => Ok(Type::map(parse_type(e, depth + 1)?)),
                ("tuple", [_, Json::Array(es)]) => Ok(Type::Tuple(
                    es.iter()
                        .map(|e| parse_type(e, depth + 1))
                        .collect::<Result<_, _>>()?,
                )),
                ("object", [_, Json::Object(attrs)]) => parse_object(attrs, None, depth),
                ("object", [_, Json::Object(attrs), Json::Array(opt)]) => {
                    parse_object(attrs, Some(opt), depth)
                }
                _ => Err(invalid(
                    "[\"list\"|\"set\"|\"map\", T], [\"tuple\", [...]] or [\"object\", {...}(, [...])]",
                )),
            }
        }
        _ => Err(invalid("a string or an array")),
    }
}

fn parse_object(
    attrs: &serde_json::Map<String, Json>,
    optional: Option<&Vec<Json>>,
    depth: usize,
) -> Result<Type, TypeError> {
    let mut o = ObjectType::default();
    for (k, t) in attrs {
        o.attributes.insert(k.clone(), parse_type(t, depth + 1)?);
    }
    for name in optional.into_iter().flatten() {
        let name = name.as_str().ok_or_else(|| TypeError::Invalid {
            expected: "optional attribute names as strings",
            found: short(name),
        })?;
        if !o.attributes.contains_key(name) {
            return Err(TypeError::Invalid {
                expected: "optional attributes that are object attributes",
                found: name.to_owned(),
            });
        }
        o.optional.insert(name.to_owned());
    }
    Ok(Type::Object(o))
}

impl fmt::Display for Type {
    /// HCL-style rendering, e.g. `list(object({name=string}))`, for error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Bool => f.write_str("bool"),
            Type::Number => f.write_str("number"),
            Type::String => f.write_str("string"),
            Type::Dynamic => f.write_str("dynamic"),
            Type::List(t) => write!(f, "list({t})"),
            Type::Set(t) => write!(f, "set({t})"),
            Type::Map(t) => write!(f, "map({t})"),
            Type::Tuple(ts) => {
                f.write_str("tuple([")?;
                for (i, t) in ts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{t}")?;
                }
                f.write_str("])")
            }
            Type::Object(o) => {
                f.write_str("object({")?;
                for (i, (k, t)) in o.attributes.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    if o.optional.contains(k) {
                        write!(f, "{k}=optional({t})")?;
                    } else {
                        write!(f, "{k}={t}")?;
                    }
                }
                f.write_str("})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let cases: &[(&str, Type)] = &[
            (r#""string""#, Type::String),
            (r#""number""#, Type::Number),
            (r#""bool""#, Type::Bool),
            (r#""dynamic""#, Type::Dynamic),
            (r#"["list","string"]"#, Type::list(Type::String)),
            (
                r#"["set",["map","number"]]"#,
                Type::set(Type::map(Type::Number)),
            ),
            (
                r#"["tuple",["string","bool"]]"#,
                Type::tuple([Type::String, Type::Bool]),
            ),
            (
                r#"["object",{"a":"string","b":["list","number"]}]"#,
                Type::object([("a", Type::String), ("b", Type::list(Type::Number))]),
            ),
            (
                r#"["object",{"a":"string","b":"number"},["b"]]"#,
                Type::object_with_optional([("a", Type::String), ("b", Type::Number)], ["b"]),
            ),
            (r#"["object",{}]"#, Type::object::<&str>([])),
        ];
        for (json, ty) in cases {
            assert_eq!(&Type::from_json(json.as_bytes()).unwrap(), ty, "{json}");
            assert_eq!(String::from_utf8(ty.to_json_bytes()).unwrap(), *json);
        }
    }

    #[test]
    fn invalid_types_are_rejected() {
        for bad in [
            "",
            "1",
            "\"str\"",
            "[]",
            "[\"list\"]",
            "[\"list\",\"string\",1]",
            "[\"tuple\",\"string\"]",
            "[\"object\",{\"a\":\"string\"},[\"b\"]]",
            "[\"object\",{\"a\":\"string\"},[1]]",
            "{}",
        ] {
            assert!(Type::from_json(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let mut s = String::new();
        for _ in 0..100 {
            s.push_str("[\"list\",");
        }
        s.push_str("\"string\"");
        for _ in 0..100 {
            s.push(']');
        }
        assert_eq!(Type::from_json(s.as_bytes()), Err(TypeError::TooDeep));
    }

    #[test]
    fn display_is_hcl_like() {
        let t = Type::list(Type::object_with_optional(
            [("a", Type::String), ("b", Type::Number)],
            ["b"],
        ));
        assert_eq!(
            t.to_string(),
            "list(object({a=string, b=optional(number)}))"
        );
    }
}
